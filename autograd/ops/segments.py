"""``autograd.segment_reduce(data, reduce, *, lengths=None, offsets=None, axis=0, initial=None)``:
one reduction per run of consecutive elements along ``axis`` (PyTorch's, for ragged batches
packed end to end). ``lengths`` [2, 0, 3] makes the segments data[0:2], data[2:2] and data[2:5];
``offsets`` [0, 2, 2, 5] says the same by their bounds. With batch dims before ``axis``,
``lengths`` (or ``offsets``) has them too: one row of segments per batch element.

For segment s with elements x_1..x_n (and ``initial`` c when given):

    sum:  y = c + Σ x_i              dL/dx_i = dL/dy
    mean: y = (c + Σ x_i) / n        dL/dx_i = dL/dy / n
    prod: y = c · Π x_i              dL/dx_i = dL/dy · Π_{j≠i} x_j · c
    max:  y = max(c, x_1..x_n)       dL/dx_i = dL/dy / k for each of the k x_i equal to y
                                     (none when c alone is the max; y NaN: the k NaNs)
    min:  as max

An empty segment gives c, or, without it, 0 (sum), 1 (prod), NaN (mean), -inf (max), inf (min).

Built from differentiable ops: the segments are gathered into a padded (segments × longest)
block, the padding holding the reduction's neutral element (or c), and reduced along it; so
the gradient is the gather's (each element gets back the gradient of its own slot).

PyTorch's max/min split dL/dy among tied elements only when dL/dy > 0 (a negative one reaches
every tied element whole, which is no subgradient); here it is split evenly whatever its sign.
"""

import math

from ..backend import xp
from ..tensor import Tensor
from .axes import dim_index
from .names import names
from .outputs import write_out

_NEUTRAL = {"sum": 0.0, "mean": 0.0, "prod": 1.0, "max": -math.inf, "min": math.inf}
_REDUCTIONS = {"sum": "sum", "mean": "mean", "prod": "prod", "max": "max", "min": "min", "amax": "max",
               "amin": "min"}


def _bounds(data, axis, lengths, offsets, unsafe):
    """(starts, ends) of every segment: integer arrays of shape data.shape[:axis] + (segments,)."""
    given = offsets if offsets is not None else lengths
    if given is None:
        raise RuntimeError("segment_reduce(): Either lengths or offsets must be defined.")
    array = given._data if isinstance(given, Tensor) else xp.asarray(given)
    if array.dtype.kind not in "iu":
        kind = {"f": "Float" if array.dtype.itemsize == 4 else "Double", "b": "Bool"}.get(array.dtype.kind, "that type")
        raise NotImplementedError(f"\"_segment_reduce_lengths_cpu_kernel1\" not implemented for '{kind}'")
    if array.ndim - 1 != axis:
        raise RuntimeError(f"segment_reduce(): Expected axis to be the last dimension of lengths but got {axis}.")
    if array.shape[:-1] != data.shape[:axis]:
        raise RuntimeError(f"segment_reduce(): lengths of shape {list(array.shape)} do not match the dims of data "
                           f"{list(data.shape)} before axis {axis}")
    size = data.shape[axis]
    if offsets is not None:
        starts, ends = array[..., :-1], array[..., 1:]
        if (ends < starts).any() or (array < 0).any() or (array > size).any():
            raise RuntimeError(f"segment_reduce(): offsets must rise from 0 to at most {size} (data's size along "
                               f"axis {axis}), got {array.tolist()}")
        return starts, ends
    if (array < 0).any():
        raise RuntimeError("lengths contains negative value!")
    ends = xp.cumsum(array, axis=-1)
    totals = array.sum(axis=-1)
    if not unsafe and (totals != size).any():
        raise RuntimeError("segment_reduce(): Expected all rows of lengths along axis to sum to "
                           "data.size(lengths.dim()-1) when !unsafe.")
    if (totals > size).any():
        raise RuntimeError(f"segment_reduce(): lengths sum to more than {size}, data's size along axis {axis}")
    return ends - array, ends


@names("segment_reduce", method=False)
def segment_reduce(data, reduce, *, lengths=None, indices=None, offsets=None, axis=0, unsafe=False, initial=None,
                   out=None):
    """One ``reduce`` ('sum', 'mean', 'prod', 'max', 'min') per segment along ``axis``; see the
    module's docstring. Output shape: data's, with ``axis`` of length the number of segments."""
    if reduce not in _REDUCTIONS:
        raise RuntimeError(f"reduce argument must be either sum, prod, mean, amax or amin, got {reduce}")
    if indices is not None:
        raise RuntimeError("segment_reduce(): indices based reduction is not supported yet.")
    if data.dtype.kind != "f":
        from .conversion import _TYPE_NAMES

        raise NotImplementedError(f"\"_segment_reduce_cpu\" not implemented for '{_TYPE_NAMES.get(data.dtype.name)}'")
    reduce = _REDUCTIONS[reduce]
    axis = dim_index(axis, data.ndim)
    starts, ends = _bounds(data, axis, lengths, offsets, unsafe)
    counts = ends - starts
    longest = max(int(counts.max()) if counts.size else 0, 1)
    # slot j of segment s holds element starts[s] + j, when j < its length (else padding)
    slots = xp.arange(longest)
    positions = starts[..., None] + slots  # batch + (segments, longest)
    filled = slots < counts[..., None]
    positions = xp.where(filled, positions, 0)
    batch = tuple(xp.arange(n).reshape((-1,) + (1,) * (axis + 1 - d)) for d, n in enumerate(data.shape[:axis]))
    if data.shape[axis] == 0:  # nothing to gather: every slot is padding
        gathered = Tensor._make(xp.zeros(positions.shape + data.shape[axis + 1:], dtype=data.dtype))
    else:
        gathered = data[batch + (Tensor._make(positions),)]
    mask = Tensor._make(filled.reshape(filled.shape + (1,) * (data.ndim - axis - 1)))
    block = gathered.where(mask, Tensor._make(xp.asarray(_NEUTRAL[reduce], dtype=data.dtype)))
    result = _reduced(block, reduce, axis + 1, counts, data, initial)
    return write_out(result, out)


def _extremum(block, reduce, dim):
    """The padded block's max (or min) along ``dim``, its ties sharing dL/dy. A segment holding NaN reduces
    to NaN and, as PyTorch's, shares dL/dy among its NaNs alone: amax would send NaN to every element (it
    shares dL/dy among the elements equal to y, and nothing equals NaN), so it sees the block without NaN,
    and a segment with NaN is the mean of its NaNs (NaN, whose gradient is 1/count at each)."""
    nan = xp.isnan(block._data)
    if not nan.any():
        return block.amax(dim=dim) if reduce == "max" else block.amin(dim=dim)
    zero = Tensor._make(xp.zeros((), dtype=block.dtype))
    no_nan = block.where(Tensor._make(~nan), Tensor._make(xp.asarray(_NEUTRAL[reduce], dtype=block.dtype)))
    tied = no_nan.amax(dim=dim) if reduce == "max" else no_nan.amin(dim=dim)
    nans = nan.sum(axis=dim)
    mean_of_nans = block.where(Tensor._make(nan), zero).sum(dim=dim) / Tensor._make(
        xp.maximum(nans, 1).astype(block.dtype))
    return mean_of_nans.where(Tensor._make(nans > 0), tied)


def _reduced(block, reduce, dim, counts, data, initial):
    """The padded block reduced along ``dim``, with ``initial`` folded in as the module's docstring says."""
    if reduce in ("max", "min"):
        extremum = _extremum(block, reduce, dim)
        if initial is None:
            return extremum
        # c where it wins outright; a tie with c leaves dL/dy to the tied elements, as PyTorch's
        wins = extremum < initial if reduce == "max" else extremum > initial
        return Tensor._make(xp.asarray(initial, dtype=data.dtype)).where(wins, extremum)
    if reduce == "prod":
        product = block.prod(dim=dim)
        return product if initial is None else product * initial
    total = block.sum(dim=dim)
    if initial is not None:
        total = total + initial
    if reduce == "sum":
        return total
    n = counts.reshape(counts.shape + (1,) * (data.ndim - dim))
    n_tensor = Tensor._make(xp.maximum(n, 1).astype(data.dtype))
    empty = float("nan") if initial is None else initial
    return (total / n_tensor).where(Tensor._make(n > 0), Tensor._make(xp.asarray(empty, dtype=data.dtype)))
