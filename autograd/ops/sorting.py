"""Sorting and order statistics: sort, argsort, topk, kthvalue, median, mode, unique; and
searching sorted sequences (searchsorted, bucketize; integer results without gradient).

Each picks elements; which ones it picks is not differentiable, but the picked values are: they are
``gather(x, dim, indices)``, so dL/dx is dL/dvalues scattered back to where each value came from (Gather's
derivative). NaN counts as larger than every number, as in PyTorch.

Among equal values, sort and argsort (stable=False, the default), kthvalue, topk and mode name the
element PyTorch's CPU algorithms do (replayed by tie_orders.py where there are ties).
"""

import math
import operator

from ..backend import accumulate, int64, xp
from ..index_watching import watch_returned_indices
from ..primitive import Primitive, named_node, node_named
from ..return_types import return_type
from ..tensor import Tensor
from . import shape, tie_orders
from .axes import dim_index
from .conjugation import refuse_unordered
from .conversion import legacy_type_name, refuse_kinds, type_name
from .indexing import Gather
from .names import keyword_overload, names, refusing_none
from .outputs import check_pair_out_dtypes, refuse_out_overlap, write_out
from .promotion import promoted_dtype
from .reductions import Extremum

SortResult = return_type("sort", ["values", "indices"])
TopKResult = return_type("topk", ["values", "indices"])
KthValueResult = return_type("kthvalue", ["values", "indices"])
MedianResult = return_type("median", ["values", "indices"])
NanMedianResult = return_type("nanmedian", ["values", "indices"])
ModeResult = return_type("mode", ["values", "indices"])


def _key(data, descending):
    """An array whose ascending order is the wanted order: NaN sorts last ascending, first descending (PyTorch's)."""
    refuse_unordered(data, "sorting")
    if data.dtype == bool:
        data = data.astype(xp.int8)
    if not descending:
        return data
    if data.dtype.kind == "u":
        return xp.iinfo(data.dtype).max - data
    if data.dtype.kind == "f":
        if not xp.isnan(data).any():
            return -data
        # NaN must come before +inf, whose negation already takes -inf: order by dense ranks instead
        # (equal values, -0.0 and 0.0, and every NaN share a rank, so ties stay ties)
        _, rank = xp.unique(data, return_inverse=True, equal_nan=True)
        return -rank.reshape(data.shape)
    return xp.invert(data)  # ~x = -x - 1 reverses the order without overflowing at the minimum (-x would)


def _order(data, axis, descending):
    """Stable argsort along axis, in PyTorch's order."""
    if data.ndim == 0:
        return xp.zeros((), dtype=int64)
    return xp.argsort(_key(data, descending), axis=axis, kind="stable").astype(int64, copy=False)


def _pick(x, axis, indices):
    """x gathered at ``indices`` along axis (differentiable in x)."""
    if x.ndim == 0:
        return Gather.apply(x, dim=0, index=indices.reshape(()))
    return Gather.apply(x, dim=axis, index=indices)


_REPLAYED_SORT_LIMIT = 1 << 20  # elements in tied slices: a Python std::sort of more would take seconds


def _sort_order(input, axis, descending, stable):
    """The indices that sort input along axis as PyTorch's CPU sort does. stable=True keeps equal values in
    input order; otherwise PyTorch runs libstdc++'s std::sort, which keeps them in order only up to 16
    elements (its insertion sort), and fbgemm's radix sort (stable) for a 1-d integer input of 32768 or
    more in ascending order. Slices with ties are replayed (tie_orders.py), up to _REPLAYED_SORT_LIMIT
    elements in all; beyond that equal values keep input order."""
    data = input._data
    indices = _order(data, axis, descending)
    if stable or data.ndim == 0 or data.shape[axis] <= 16 or input.stride(axis) == 0:
        return indices  # (a stride of 0: PyTorch sorts nothing, the indices stay 0, 1, 2, ...)
    size = data.shape[axis]
    if data.ndim == 1 and data.dtype.kind in "iu" and not descending and size >= 32768:
        return indices
    ordered = xp.take_along_axis(xp.moveaxis(_key(data, descending), axis, -1), xp.moveaxis(indices, axis, -1), -1)
    needed = _same(ordered[..., 1:], ordered[..., :-1]).any(axis=-1)
    if int(needed.sum()) * size > _REPLAYED_SORT_LIMIT:
        return indices
    return _replayed(data, axis, indices, needed, lambda row: tie_orders.sort_indices(row, descending))


@names("sort")
@keyword_overload("stable")
def sort(input, dim=-1, descending=False, *, stable=None, out=None):
    """(values, indices): input sorted along dim, and where each value came from (equal values in
    PyTorch's order: see _sort_order). ``stable`` given (True or False) is PyTorch's other overload, whose node is
    SortBackward1."""
    axis = dim_index(dim, input.ndim)
    _refuse_complex(input, "Sort")
    indices = _sort_order(input, axis, descending, bool(stable))
    values = named_node(_pick(input, axis, indices), None, "SortBackward0" if stable is None else "SortBackward1",
                        (input,))
    return write_out(SortResult(*watch_returned_indices(values, Tensor._make(indices))), out, same_dtype=True)


@names("argsort")
@keyword_overload("stable")
def argsort(input, dim=-1, descending=False, *, stable=False):
    """The indices that sort input along dim (int64), as sort's."""
    _refuse_complex(input, "Sort")
    return Tensor._make(_sort_order(input, dim_index(dim, input.ndim), descending, stable))


@names("msort")
def msort(input, *, out=None):
    """input sorted along its first dim."""
    return write_out(sort(input, dim=0).values, out, dtype=input.dtype)


@names("topk")
def topk(input, k, dim=-1, largest=True, sorted=True, *, out=None):
    """(values, indices): the k largest (or smallest) elements along dim, largest first."""
    if isinstance(dim, bool):  # (x.topk(4, True) means largest=True: PyTorch refuses a bool dim)
        raise TypeError("topk(): argument 'dim' (position 2) must be int, not bool")
    if isinstance(k, float):
        raise TypeError("topk(): argument 'k' (position 1) must be int, not float")
    axis = dim_index(dim, input.ndim)
    if input.dtype.kind == "b":
        raise RuntimeError("topk does not support bool dtypes on CPU")  # (PyTorch's refusal, after the dim's)
    _refuse_complex(input, "topk")
    refuse_out_overlap(input, out)
    size = input.shape[axis] if input.ndim else 1
    if not 0 <= k <= size:
        raise RuntimeError(f"selected index k out of range: k={k} for dimension {axis} of size {size}")
    if input.ndim == 0:
        indices = xp.zeros((), dtype=int64)
    elif 0 < k < size // 8:  # a few of many: partition in O(n), then sort only those k
        key = _key(input._data, descending=largest)
        chosen = xp.take(xp.argpartition(key, k - 1, axis=axis), xp.arange(k), axis=axis)
        ranked = xp.argsort(xp.take_along_axis(key, chosen, axis=axis), axis=axis, kind="stable")
        indices = xp.take_along_axis(chosen, ranked, axis=axis).astype(int64)
    else:
        indices = xp.take(_order(input._data, axis, descending=largest), xp.arange(k), axis=axis)
    if input.ndim and k:
        indices = _topk_ties(input._data, axis, indices, k, largest, sorted)
    values = named_node(_pick(input, axis, indices), None, "TopkBackward0", (input,))
    return write_out(TopKResult(*watch_returned_indices(values, Tensor._make(indices))), out, same_dtype=True)


def _refuse_complex(input, op):
    """PyTorch's sort and topk have no complex kernel (complex numbers have no order; NumPy would order them
    part by part): its RuntimeError."""
    if input.dtype.kind == "c":
        raise RuntimeError(f"{op} does not support complex dtypes on CPU")


def _topk_ties(data, axis, indices, k, largest, sorted):
    """PyTorch's topk indices: which of equal values it takes, and their order, are its libstdc++
    algorithms' (partial_sort where k · 64 <= n, else nth_element then a sort of the first k - 1, or no
    sort when ``sorted=False``, which leaves the order to nth_element even without ties): replayed on the
    slices where they decide."""
    size = data.shape[axis]
    moved = xp.moveaxis(data, axis, -1)
    if not sorted and k * 64 > size and k > 1:
        needed = xp.ones(moved.shape[:-1], dtype=bool)
    else:  # equal values among the k chosen (in order), or the k-th one's equal left out
        key = xp.moveaxis(_key(data, descending=largest), axis, -1)
        chosen = xp.take_along_axis(key, xp.moveaxis(indices, axis, -1), axis=-1)
        last = chosen[..., -1:]
        needed = _same(chosen[..., 1:], chosen[..., :-1]).any(axis=-1)
        needed |= _same(key, last).sum(axis=-1) > _same(chosen, last).sum(axis=-1)
    return _replayed(data, axis, indices, needed, lambda row: tie_orders.topk_indices(row, k, largest, sorted))


def _nonempty(name, input, axis):
    """PyTorch's IndexError where a selection (kthvalue, median, mode) runs along an empty dim."""
    if input.ndim and input.shape[axis] == 0:
        raise IndexError(f"{name}(): Expected reduction dim {axis} to have non-zero size.")


def _select_along(input, axis, position, keepdim, result, ties=None):
    """(values, indices) of the element at ``position`` (a number, or an array with keepdim's shape)
    of the ascending order along axis. ``ties(data, axis, indices)``, where given, picks among equal
    elements instead of the first in the input's order."""
    order = _order(input._data, axis, descending=False)
    if input.ndim == 0:
        indices = order
    elif isinstance(position, int):
        indices = xp.take(order, [position], axis=axis)
    else:
        indices = xp.take_along_axis(order, position, axis=axis)
    if ties is not None and input.ndim:
        indices = ties(input._data, axis, indices)
    values = _pick(input, axis, indices)
    if not keepdim and input.ndim:
        values, indices = shape.squeeze(values, axis), xp.squeeze(indices, axis)
    return result(*watch_returned_indices(values, Tensor._make(indices)))


def _replayed(data, axis, indices, needed, replay):
    """``indices`` (along axis) where, on the slices ``needed`` marks (a bool per slice, in the order of
    the other dims), ``replay(the slice's values as a list)`` gives them instead (see tie_orders.py)."""
    moved = xp.moveaxis(indices, axis, -1)
    if not needed.any():
        return indices
    rows = xp.moveaxis(data, axis, -1).reshape(-1, data.shape[axis])
    chosen = moved.reshape(len(rows), -1).copy()
    for r in xp.nonzero(needed.reshape(-1))[0].tolist():
        chosen[r] = xp.asarray(replay(rows[r].tolist()), dtype=chosen.dtype)
    return xp.moveaxis(chosen.reshape(moved.shape), -1, axis)


def _same(a, b):
    """a == b, NaN equal to NaN."""
    equal = a == b
    return equal | (xp.isnan(a) & xp.isnan(b)) if a.dtype.kind in "fc" else equal


def _kthvalue_ties(k):
    """Where the k-th smallest value occurs more than once in its slice, PyTorch's quickselect decides which
    of them kthvalue names: replay it there."""
    def choose(data, axis, indices):
        kth = xp.take_along_axis(data, indices, axis=axis)
        needed = xp.moveaxis(_same(data, kth).sum(axis=axis, keepdims=True) > 1, axis, -1)[..., 0]
        return _replayed(data, axis, indices, needed, lambda row: [tie_orders.quick_select_index(row, k)])
    return choose


def _kthvalue_out_complaint(which, expected, got):
    return "output values must be of same type as input" if which == "values" else \
        "output indices must be of scalar type Long"


@names("kthvalue")
@node_named("KthvalueBackward0")
def kthvalue(input, k, dim=-1, keepdim=False, *, out=None):
    """(values, indices): the k-th smallest element along dim (k counts from 1)."""
    k = operator.index(k)  # (a NumPy integer or a 0-d integer tensor is an int; a float is refused, as PyTorch)
    axis = dim_index(dim, input.ndim)
    if input.ndim:  # (a 0-d tensor is its own answer: no kernel runs)
        refuse_kinds(input, "kthvalue_cpu", "bc")
    if out is not None:  # (PyTorch casts into no other dtype, and writes into no part of the input)
        check_pair_out_dtypes(input, out, _kthvalue_out_complaint)
        refuse_out_overlap(input, out, partial_only=False)
    _nonempty("kthvalue", input, axis)
    size = input.shape[axis] if input.ndim else 1
    if not 1 <= k <= size:
        raise RuntimeError(f"kthvalue(): selected number k out of range for dimension {axis}: k={k}, size {size}")
    return write_out(_select_along(input, axis, k - 1, keepdim, KthValueResult, ties=_kthvalue_ties(k - 1)), out)


def _median_position(data, axis, skip_nan):
    """Per slice along axis, the position in ascending order of the (lower) median. NaN sorts last:
    median takes the first NaN where there is one (the median is NaN); nanmedian skips them."""
    size = data.shape[axis] if data.ndim else 1
    if data.dtype.kind != "f" or data.ndim == 0:
        return (size - 1) // 2
    numbers = (~xp.isnan(data)).sum(axis=axis, keepdims=True)
    if skip_nan:
        return xp.maximum(numbers - 1, 0) // 2
    return xp.where(numbers < size, numbers, (size - 1) // 2)


def _median_value(data, skip_nan):
    """The (lower) median of all elements of an array, as a 0-d array."""
    flat = data.reshape(-1)
    position = _median_position(flat, 0, skip_nan)
    return xp.sort(flat)[int(position)] if isinstance(position, int) else xp.sort(flat)[int(position.reshape(()))]


def _nan_only_slices(data, axis, indices):
    """nanmedian's index in a slice of NaN only: where PyTorch's nth_element, to which no NaN is less than
    another, leaves one (the third of four: its partitioning swaps equal elements), not the first NaN."""
    if data.dtype.kind != "f":
        return indices
    return _replayed(data, axis, indices, xp.isnan(data).all(axis=axis),
                     lambda row: [tie_orders.unordered_nth_index(len(row))])


def _median(input, dim, keepdim, skip_nan):
    result = NanMedianResult if skip_nan else MedianResult
    if input.dtype.kind in "bc":  # (PyTorch has no median of bools or complex numbers: its kernel names in the message)
        refuse_kinds(input, "median_cpu" if dim is None else "median_out", "bc")
    if dim is None:
        if input.numel() == 0:
            return Tensor._make(xp.asarray(xp.nan, dtype=input.dtype))
        if input.dtype.kind not in "fc":
            flat = shape.reshape(input, (-1,))
            return _select_along(flat, 0, _median_position(flat._data, 0, skip_nan), False, result).values
        # over all elements the gradient is shared between ties, as PyTorch's (the max's rule: a NaN median
        # shares it between the NaNs)
        return Extremum.apply(input, axis=None, find=lambda a: _median_value(a, skip_nan), arg=None,
                              pytorch_name="NanmedianBackward0" if skip_nan else "MedianBackward0")
    axis = dim_index(dim, input.ndim)
    _nonempty("median", input, axis)  # (nanmedian's message says median too, as PyTorch's)
    values, indices = _select_along(input, axis, _median_position(input._data, axis, skip_nan), keepdim, result,
                                    ties=_nan_only_slices if skip_nan else None)
    return result(named_node(values, None, "NanmedianBackward1" if skip_nan else "MedianBackward1", (input,)), indices)


@names("median")
@refusing_none("dim")
def median(input, dim=None, keepdim=False, *, out=None):
    """The median: the lower of the two middle elements for an even count (as PyTorch), over all
    elements or, with dim, (values, indices) along it. A NaN makes its slice's median NaN."""
    _check_median_out(input, out)
    return write_out(_median(input, dim, keepdim, skip_nan=False), out)


def _check_median_out(input, out):
    """PyTorch's median(dim) and nanmedian(dim) write into out tensors of the input's dtype and int64 only, and
    into no part of the input."""
    if out is None or isinstance(out, Tensor):
        return
    check_pair_out_dtypes(input, out, _median_out_complaint)
    refuse_out_overlap(input, out)


def _median_out_complaint(which, expected, got):
    if which == "values":
        return (f"Expected tensor for 'values' to have the same type as tensor for argument #2 'self'; but type "
                f"{legacy_type_name(got)} does not equal {legacy_type_name(expected)} (while checking arguments for "
                "median)")
    return (f"Expected tensor for argument #1 'indices' to have scalar type Long; but got {legacy_type_name(got)} "
            "instead (while checking arguments for median)")


@names("nanmedian")
@refusing_none("dim")
def nanmedian(input, dim=None, keepdim=False, *, out=None):
    """median ignoring NaN (NaN only where a slice holds nothing else)."""
    _check_median_out(input, out)
    return write_out(_median(input, dim, keepdim, skip_nan=True), out)


@names("mode")
def mode(input, dim=-1, keepdim=False, *, out=None):
    """(values, indices): the most frequent value along dim (the smallest among equally frequent
    ones) and the position PyTorch names: the last where it occurs in a slice of up to 16, else the
    one std::sort leaves last among them (see tie_orders.py). Where a slice holds NaN, which PyTorch's
    comparisons leave unordered and count as a run of one each, its answer is replayed likewise."""
    axis = dim_index(dim, input.ndim)
    refuse_kinds(input, "mode_cpu", "c")
    refuse_out_overlap(input, out)
    check_pair_out_dtypes(input, out, lambda which, expected, got: f"expected scalar type '{type_name(expected)}' "
                                                                    f"but got '{type_name(got)}' for {which} output")
    data = input._data
    _nonempty("mode", input, axis)
    if data.ndim == 0:
        return write_out(ModeResult(*watch_returned_indices(input.clone(), Tensor._make(xp.zeros((), dtype=int64)))),
                         out)
    order = _order(data, axis, descending=False)
    ordered = xp.take_along_axis(data, order, axis=axis)
    moved = xp.moveaxis(ordered, axis, -1)
    moved_order = xp.moveaxis(order, axis, -1)
    n = moved.shape[-1]
    starts = xp.ones(moved.shape, dtype=bool)
    starts[..., 1:] = moved[..., 1:] != moved[..., :-1]
    run_id = xp.cumsum(starts, axis=-1) - 1
    run_start = accumulate(xp.maximum, xp.where(starts, xp.arange(n), 0), -1)
    run_length = xp.arange(n) - run_start + 1  # length of the run so far at each sorted position
    # the first position reaching the longest run length: the smallest value among the most frequent
    best_end = xp.argmax(run_length, axis=-1)[..., None]
    best_run = xp.take_along_axis(run_id, best_end, axis=-1)
    in_best = run_id == best_run
    last_position = xp.max(xp.where(in_best, moved_order, -1), axis=-1, keepdims=True)
    indices = xp.moveaxis(last_position, -1, axis).astype(int64)
    has_nan = xp.isnan(moved).any(axis=-1) if data.dtype.kind == "f" else xp.zeros(moved.shape[:-1], dtype=bool)
    # Replayed: a slice with NaN (std::sort's `<` orders no NaN, and `!=` makes each NaN a run of its own), and
    # one of more than 16 with ties (up to 16, std::sort's insertion sort keeps equal values in order: the last)
    needed = has_nan | (run_length.max(axis=-1) > 1) if n > 16 else has_nan
    indices = _replayed(data, axis, indices, needed, lambda row: [tie_orders.mode_index(row)])
    values = _pick(input, axis, indices)
    if not keepdim:
        values, indices = shape.squeeze(values, axis), xp.squeeze(indices, axis)
    return write_out(ModeResult(*watch_returned_indices(values, Tensor._make(indices))), out)


class UniqueValues(Primitive):
    """y = the distinct values of x (worked out by the caller: ``values``), as PyTorch's unique: a result that
    is part of the graph but has no derivative (which distinct values there are jumps with x), so a backward
    pass through it raises, naming PyTorch's kernel, where one that skipped it would leave x's gradient out.
    (geqrf's factors, which PyTorch gives no derivative either, are such results too, and so are cdist's and
    pdist's gradients, of the incoming gradient and the differences: CdistBackwardBackward0.)"""

    saves_inputs = False

    def forward(self, *inputs):
        return self.values

    def backward(self, grad, y, *inputs):
        raise NotImplementedError(f"the derivative for '{self.kernel}' is not implemented.")

    def name(self):  # (_unique2 is Unique2Backward0, unique_consecutive UniqueConsecutiveBackward0, ...)
        return "".join(part.capitalize() for part in self.kernel.split("_")) + "Backward0"


def _unique_results(input, kernel, values, inverse, counts, return_inverse, return_counts, inverse_shape):
    results = [UniqueValues.apply(input, values=values, kernel=kernel)]
    if return_inverse:
        results.append(Tensor._make(inverse.reshape(inverse_shape).astype(int64)))
    if return_counts:
        results.append(Tensor._make(counts.astype(int64)))
    return results[0] if len(results) == 1 else tuple(results)


def _ordered_only(data, kernel):
    """PyTorch's unique kernels have no complex version (complex numbers have no order to sort by)."""
    if data.dtype.kind == "c":
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{type_name(data.dtype)}'")


def _unique_slices_exist(shape, axis):
    """PyTorch's refusals of unique(dim=) where the slices along dim are empty (an empty dim other than
    the one chosen); an empty chosen dim leaves an empty result."""
    empty = [d for d, n in enumerate(shape) if n == 0]
    if len(empty) > 1:
        raise RuntimeError("Number of zero sized dimensions is more than one, so unique cannot be applied ")
    if empty and empty[0] != axis:
        raise RuntimeError("There are 0 sized dimensions, and they aren't selected, so unique cannot be applied")


@names("unique")
def unique(input, sorted=True, return_inverse=False, return_counts=False, dim=None):
    """The distinct values, sorted (part of the graph without a derivative, as PyTorch's); with return_inverse
    where each element of input went, with return_counts how often each occurs. With dim, the
    distinct slices along dim."""
    data = input._data
    _ordered_only(data, "unique" if dim is None else "unique_dim")
    if dim is None:
        # NaN != NaN: each NaN is its own value, as in PyTorch (NumPy merges them by default)
        values, inverse, counts = xp.unique(data.reshape(-1), return_inverse=True, return_counts=True,
                                            equal_nan=False)
        return _unique_results(input, "_unique2", values, inverse, counts, return_inverse, return_counts, data.shape)
    axis = dim_index(dim, data.ndim)
    _unique_slices_exist(data.shape, axis)
    # (bool slices compared as bytes: CuPy's unique(axis=) subtracts its keys, which bools refuse)
    if data.dtype.kind == "f" and xp.isnan(data).any():
        values, inverse, counts = _unique_slices_with_nan(data, axis)
    else:
        keys = data.view(xp.uint8) if data.dtype == bool else data
        values, inverse, counts = xp.unique(keys, return_inverse=True, return_counts=True, axis=axis, equal_nan=False)
        values = values.view(bool) if data.dtype == bool else values
    return _unique_results(input, "unique_dim", values, inverse, counts, return_inverse, return_counts,
                           (data.shape[axis],))


def _unique_slices_with_nan(data, axis):
    """(values, inverse, counts) of unique(dim=) as PyTorch's finds them where slices hold NaN: std::sort of the
    slices by a lexicographic `<` that passes over a NaN (neither less nor greater than anything), then runs of
    equal slices in that order (a slice with NaN is equal to none, itself included)."""
    moved = xp.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
    rows = moved.tolist()

    def less(a, b):
        for x, y in zip(rows[a], rows[b]):
            if x < y:
                return True
            if x > y:
                return False
        return False

    order = list(range(len(rows)))
    tie_orders.std_sort(order, len(order), less)
    ordered = moved[order]
    starts = xp.concatenate([xp.ones(1, dtype=bool), (ordered[1:] != ordered[:-1]).any(axis=1)])
    inverse = xp.empty(len(order), dtype=int64)
    inverse[order] = xp.cumsum(starts) - 1
    counts = xp.diff(xp.append(xp.flatnonzero(starts), len(starts)))
    return xp.take(data, xp.asarray(order)[starts], axis=axis), inverse, counts


@names("unique_consecutive")
def unique_consecutive(input, return_inverse=False, return_counts=False, dim=None):
    """Each run of equal consecutive values (or slices along dim) once."""
    data = input._data
    _ordered_only(data, "unique")
    if dim is None:
        flat = data.reshape(-1)
        if flat.size == 0:
            return _unique_results(input, "unique_consecutive", flat, flat.astype(int64), flat.astype(int64),
                                   return_inverse, return_counts, data.shape)
        starts = xp.concatenate([xp.ones(1, dtype=bool), flat[1:] != flat[:-1]])
        values = flat[starts]
        inverse = xp.cumsum(starts) - 1
        counts = xp.diff(xp.append(xp.flatnonzero(starts), flat.size))
        return _unique_results(input, "unique_consecutive", values, inverse, counts, return_inverse, return_counts,
                               data.shape)
    axis = dim_index(dim, data.ndim)
    _unique_slices_exist(data.shape, axis)
    if data.shape[axis] == 0:  # no slices: no runs
        nothing = xp.zeros(0, dtype=int64)
        return _unique_results(input, "unique_consecutive", data, nothing, nothing, return_inverse,
                               return_counts, (0,))
    moved = xp.moveaxis(data, axis, 0).reshape(data.shape[axis], -1)
    starts = xp.concatenate([xp.ones(1, dtype=bool), (moved[1:] != moved[:-1]).any(axis=1)])
    values = xp.compress(starts, data, axis=axis)
    inverse = xp.cumsum(starts) - 1
    counts = xp.diff(xp.append(xp.flatnonzero(starts), len(starts)))
    return _unique_results(input, "unique_consecutive", values, inverse, counts, return_inverse, return_counts,
                           (data.shape[axis],))


def _check_search_out(out, out_int32):
    """An out= tensor of searchsorted or bucketize must have the dtype out_int32 asks for: PyTorch casts not."""
    if out is not None and out.dtype != (xp.int32 if out_int32 else int64):
        raise RuntimeError("torch.searchsorted(): output tensor's dtype is wrong, it can only be Int(int32) or "
                           "Long(int64) depending on whether out_int32 flag is True, but we got output tensor's "
                           f"dtype {type_name(out.dtype)} and out_int32 flag is {out_int32}")


def _refuse_unordered_kinds(sequence, values):
    """PyTorch's refusal of a search in the dtype the sequence and the values promote to where its kernel has
    none: bool and complex (values may be a number)."""
    common = promoted_dtype(sequence, values) if isinstance(values, Tensor) else sequence.dtype
    if common.kind in "bc":
        raise NotImplementedError(f"\"searchsorted_out_cpu\" not implemented for '{type_name(common)}'")


@names("searchsorted", method=False)
def searchsorted(sorted_sequence, input, *, out_int32=False, right=False, side=None, sorter=None, out=None):
    """Where each value would be inserted to keep the (last dim of) sorted_sequence sorted: the first
    such place, or the last with right=True / side='right'. A batch of sequences takes a batch of values."""
    if side not in (None, "left", "right"):
        raise RuntimeError(f"torch.searchsorted(): side can only be 'left' or 'right' but got {side}")
    if right and side == "left":
        raise RuntimeError("torch.searchsorted(): side and right can't be set to opposites, got side of left while "
                           "right was True")
    side = side or ("right" if right else "left")
    _check_search_out(out, out_int32)
    _refuse_unordered_kinds(sorted_sequence, input)
    sequence = sorted_sequence._data
    values = input._data if isinstance(input, Tensor) else xp.asarray(input)
    if values.ndim == 0 and sequence.ndim != 1:
        raise RuntimeError("torch.searchsorted(): input value can be a scalar only when boundaries tensor dimension "
                           f"is 1, but we got boundaries tensor dim({sequence.ndim}) and input value's dim(0) numel(1)")
    if sorter is not None:
        order = sorter._data if isinstance(sorter, Tensor) else xp.asarray(sorter)
        if order.dtype != int64:
            raise RuntimeError(f"torch.searchsorted(): sorter must be a tensor of long dtype but got dtype "
                               f"{type_name(order.dtype)}")
        if order.shape != sequence.shape:
            raise RuntimeError(f"torch.searchsorted(): boundary and sorter must have the same size, but got boundary "
                               f"tensor {list(sequence.shape)}and got sorter tensor {list(order.shape)}")
        if order.size and (order.min() < 0 or order.max() >= sequence.shape[-1]):
            raise RuntimeError("torch.searchsorted(): sorter index out of range")
        sequence = xp.take_along_axis(sequence, order, axis=-1)
    if sequence.ndim <= 1:
        result = _search(sequence, values, side)
    else:
        if sequence.shape[:-1] != values.shape[:-1]:
            raise RuntimeError(f"torch.searchsorted(): boundaries tensor should be 1 dimension or the first N-1 "
                               f"dimensions of boundaries tensor and input value tensor must match, but we got "
                               f"boundaries tensor {list(sequence.shape)} and input value tensor {list(values.shape)}")
        batch = math.prod(sequence.shape[:-1])  # (not -1: a batch of empty sequences, or no sequences at all)
        rows = sequence.reshape(batch, sequence.shape[-1])
        wanted = values.reshape(batch, values.shape[-1])
        result = xp.empty(wanted.shape, dtype=int64)
        for row, (sequence_row, values_row) in enumerate(zip(rows, wanted)):
            result[row] = _search(sequence_row, values_row, side)
        result = result.reshape(values.shape)
    return write_out(Tensor._make(result.astype(xp.int32 if out_int32 else int64)), out)


def _search(sequence, values, side):
    """Where values go in the sorted 1-D sequence. NumPy's search orders NaN after every number, as a sort puts
    it; PyTorch's binary search only asks whether sequence[mid] >= value (> for side='right'), False for NaN, so
    a NaN in the sequence sends the search right of it, whatever the value ([0, 1, NaN, 2] places 0.5 at 3, not
    1). With a NaN in the sequence its search is replayed, every value at once."""
    if sequence.dtype.kind != "f" or not xp.isnan(sequence).any():
        return xp.searchsorted(sequence, values, side=side)
    values = xp.asarray(values)
    low = xp.zeros(values.shape, dtype=int64)
    high = xp.full(values.shape, len(sequence), dtype=int64)
    while True:
        searching = low < high
        if not searching.any():
            return low
        middle = low + (high - low) // 2
        at_middle = sequence[xp.minimum(middle, len(sequence) - 1)]
        past = at_middle > values if side == "right" else at_middle >= values
        low = xp.where(searching & ~past, middle + 1, low)
        high = xp.where(searching & past, middle, high)


@names("bucketize", method=False)
def bucketize(input, boundaries, *, out_int32=False, right=False, out=None):
    """The index of the bucket of each element between the (sorted, 1-D) boundaries: i with
    boundaries[i-1] < x <= boundaries[i] (or boundaries[i-1] <= x < boundaries[i] with right=True)."""
    if boundaries.ndim != 1:
        raise RuntimeError(f"boundaries tensor must be 1 dimension, but got dim({boundaries.ndim})")
    side = "right" if right else "left"
    _check_search_out(out, out_int32)
    _refuse_unordered_kinds(boundaries, input)
    values = input._data if isinstance(input, Tensor) else xp.asarray(input)
    result = _search(boundaries._data, values, side)
    return write_out(Tensor._make(xp.asarray(result).astype(xp.int32 if out_int32 else int64)), out)

