"""The softmaxes' arrays in cache-sized blocks of slices: a kernel run over the slices along one axis a few at a
time, each output block written in place, so that a slice's passes (its shift, e^x, the sum, the division) read
and write memory the CPU's cache holds, where whole-array passes would each go out to memory and back, into a
new array whose pages the system maps afresh (a (4096, 1000) float32 softmax: five passes over 16 MB).

A block is every slice of a range of the dims before the axis: the dims from the axis on are the array's own,
so each slice's reductions run over the same elements in the same order as over the whole array, and every
element's arithmetic is the same ufunc's: the values are those of the whole-array passes bit for bit."""

import numpy

from ..backend import xp

_BLOCK = 65536  # elements: a block's output and its scratch stay in the CPU's cache through the kernel's passes
# elements: smaller arrays stay in the cache through whole-array passes, which then cost less than a block's calls
# ((16, 4, 64, 64) float32: 0.81 ms whole, 0.91 ms in blocks; (4096, 1000): 16.8 ms whole, 14.3 ms in blocks)
LARGE = 1 << 21


def blockable(axis, *arrays):
    """Whether ``arrays`` (of one shape, over LARGE elements: the caller asks) can go through ``by_row_blocks``
    along ``axis``: NumPy arrays (a GPU's kernels have no cache to keep to), row-major, of one floating dtype
    (float32, float64), with more than one slice before the axis to split them by."""
    x = arrays[0]
    if axis is None or type(x) is not numpy.ndarray or x.dtype.kind != "f" or x.itemsize < 4:
        return False
    if x.shape[:axis].count(1) == axis:  # (one slice: nothing to split)
        return False
    return all(type(a) is numpy.ndarray and a.flags.c_contiguous and a.dtype is x.dtype and a.shape == x.shape
               for a in arrays)


def by_row_blocks(kernel, inputs, axis, scratch=0):
    """kernel(*input_blocks, output_block, *scratch_blocks) over blocks of the slices along ``axis`` of
    ``inputs`` (``blockable``), the reduction axis 1 of every block: the output, a new row-major array of the
    inputs' shape and dtype; ``scratch`` buffers of a block's size allocated once."""
    x = inputs[0]
    tail = x.shape[axis:]
    inputs = [a.reshape((-1,) + tail) for a in inputs]  # (views: row-major)
    out = xp.empty(x.shape, x.dtype)
    blocks = out.reshape((-1,) + tail)
    rows = max(1, _BLOCK // max(1, blocks[0].size))
    buffers = [xp.empty((rows,) + tail, x.dtype) for _ in range(scratch)]
    for start in range(0, len(blocks), rows):
        stop = min(start + rows, len(blocks))
        kernel(*(a[start:stop] for a in inputs), blocks[start:stop], *(b[:stop - start] for b in buffers))
    return out
