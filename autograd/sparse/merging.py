"""The order of sparse entries: each position as one row-major number (``linear_positions``, what coalescing,
grouping and merging compare), and PyTorch's order for the entries of a sum of two sparse tensors (its
add_out_sparse_contiguous): which positions the sum has and where each entry of either operand goes."""

import numpy

from ..tensor import tensor_from


def linear_positions(positions, sizes):
    """Each entry's position (a column of the (len(sizes), nnz) ``positions``) as one number, row-major over
    ``sizes``: what sorting, grouping and merging entries compare."""
    if not sizes or not positions.size:
        return numpy.zeros(positions.shape[-1], dtype=numpy.int64)
    return numpy.ravel_multi_index(tuple(positions), sizes)


def _merge_walk(a, b):
    """PyTorch's sparse add (add_out_sparse_contiguous): walk a's and b's entries side by side, taking the smaller
    position (row-major) first and one entry of each where they are equal (then summed). Sorted lists merge into
    their union; unsorted ones give the entries PyTorch's does, equal neighbours met on the way merged. Returns
    the positions walked and, for each entry of a and of b, the one it is added into."""
    sparse_sizes = tuple(a._size[:a.sparse_dim()])
    own = linear_positions(a._indices_tensor._data, sparse_sizes).tolist()
    other = linear_positions(b._indices_tensor._data, sparse_sizes).tolist()
    walked, own_slots, other_slots = [], [], []
    i = j = 0
    while i < len(own) or j < len(other):
        take_own = j >= len(other) or (i < len(own) and own[i] <= other[j])
        take_other = i >= len(own) or (j < len(other) and other[j] <= own[i])
        walked.append(own[i] if take_own else other[j])
        if take_own:
            own_slots.append(len(walked) - 1)
            i += 1
        if take_other:
            other_slots.append(len(walked) - 1)
            j += 1
    indices = numpy.stack(numpy.unravel_index(numpy.asarray(walked, dtype=numpy.int64), sparse_sizes))
    return (tensor_from(indices.astype(numpy.int64).reshape(len(sparse_sizes), -1)),
            tensor_from(numpy.asarray(own_slots, dtype=numpy.int64)),
            tensor_from(numpy.asarray(other_slots, dtype=numpy.int64)))
