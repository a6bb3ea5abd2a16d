"""``out=``: PyTorch's way of writing an op's result into an existing tensor."""

import warnings

from .. import dual
from ..backend import int64, xp
from ..graph import bump_version, is_grad_enabled, program_stacklevel
from ..tensor import Tensor


def write_out(result, out, same_dtype=False, dtype=None, warn_resize=True):
    """``result``, or, given ``out``, result written into out (resized when its shape differs, as
    PyTorch does) and out returned. As in PyTorch, out= is not recorded: it refuses inputs that
    require grad while grad mode is on. With ``same_dtype`` out must have the result's dtype: PyTorch's
    ops that keep their input's dtype (neg, abs, floor, sign, ...) cast into no other, where the
    promoting ones (add, sin, ...) write into any dtype the result can be cast to (for a (values, indices)
    result, each out tensor must have its part's dtype: max(dim), sort, ...). ``dtype``, a
    reduction's dtype= argument, is the only dtype out may have (sum(x, dtype=..., out=...)). ``warn_resize``:
    PyTorch's warning that an out of elements was resized (its factories resize out without it)."""
    if out is None:
        return result
    if dual.LEVEL is not None and any(dual.tangent_of(t) is not None for t in _tensors(result) + _tensors(out)):
        raise NotImplementedError("Trying to use forward AD with a function that does not support it because it is "
                                  "an out= function")  # (as PyTorch's out= functions: no tangent goes into out)
    if isinstance(result, Tensor) and is_grad_enabled() and (result.requires_grad or getattr(out, "requires_grad",
                                                                                             False)):
        raise RuntimeError("functions with out=... arguments don't support automatic differentiation, "
                           "but one of the arguments requires grad.")  # (before any check of out: PyTorch's order)
    if dtype is not None and isinstance(out, Tensor) and out.dtype != dtype:
        from .conversion import c_name  # (conversion imports this module's users: imported when needed)

        raise RuntimeError(f"Expected out tensor to have dtype {c_name(xp.dtype(dtype))}, but got "
                           f"{c_name(out.dtype)} instead")
    if isinstance(result, tuple) and not isinstance(out, (tuple, list)):  # (PyTorch's words, where zip(out) failed)
        raise TypeError(f"argument 'out' must be tuple of Tensors, not {type(out).__name__}")
    if same_dtype and isinstance(out, Tensor) and out.dtype != result.dtype:
        from .conversion import type_name  # (conversion imports this module's users: imported when needed)

        raise RuntimeError(f"Found dtype {type_name(out.dtype)} but expected {type_name(result.dtype)}")
    if isinstance(result, tuple):  # (values, indices) ops take a pair of out tensors
        for target, value in zip(out, result):
            if same_dtype and isinstance(target, Tensor) and target.dtype != value.dtype:
                from .conversion import c_name  # (conversion imports this module's users: imported when needed)

                raise RuntimeError(f"Expected out tensor to have dtype {c_name(value.dtype)}, but got "
                                   f"{c_name(target.dtype)} instead")
            write_out(value, target)
        return type(result)._out_type(*out) if hasattr(type(result), "_out_type") else tuple(out)
    if not isinstance(out, Tensor):
        raise TypeError(f"out= must be a Tensor, got {type(out).__name__}")
    if result.dtype != out.dtype and not _can_cast(result.dtype, out.dtype):  # (a float into integers, ...)
        from .conversion import type_name  # (conversion imports this module's users: imported when needed)

        raise RuntimeError(f"result type {type_name(result.dtype)} can't be cast to the desired output type "
                           f"{type_name(out.dtype)}")
    if out.shape == result.shape:
        return out.copy_(result)  # through the write door
    if out._data.size and warn_resize:
        warnings.warn(f"An output with one or more elements was resized since it had shape {list(out.shape)}, which "
                      f"does not match the required output shape {list(result.shape)}. This behavior is deprecated, "
                      "and in a future PyTorch release outputs will not be resized unless they have zero elements. "
                      "You can explicitly reuse an out tensor t by resizing it, inplace, to zero elements with "
                      "t.resize_(0).", UserWarning, stacklevel=program_stacklevel())
    out._data = result._data.astype(out.dtype, copy=True)  # resized, as PyTorch: new memory
    bump_version(out)
    return out


def accumulate_dtype(dtype, out):
    """The dtype a sum-like reduction (sum, prod, cumsum, cumprod) computes in: its dtype= argument, else, given
    out=, out's dtype (PyTorch's get_dtype_from_result: the input is cast to it first, so a float input summed into
    an integer out adds truncated values, and a complex one into a real out drops its imaginary parts)."""
    if dtype is None and isinstance(out, Tensor):
        return out.dtype
    return dtype


def check_pair_out_dtypes(input, out, complaint):
    """A (values, indices) op's out= pair must hold the input's dtype and int64: PyTorch casts into neither. Each
    op words the refusal its own way: ``complaint(which, expected, got)`` ("values" or "indices", and the two
    dtypes) says it."""
    pair = out if isinstance(out, (tuple, list)) else ()  # (a lone tensor is write_out's to refuse)
    for target, dtype, which in zip(pair, (input.dtype, int64), ("values", "indices")):
        if target.dtype != dtype:
            raise RuntimeError(complaint(which, dtype, target.dtype))


def refuse_out_overlap(input, out, partial_only=True):
    """PyTorch's refusal of a (values, indices) op's out= values tensor sharing the input's memory: only part of
    it (topk, median, mode, max(dim): the input itself as out is taken), or any of it (kthvalue)."""
    if not isinstance(out, (tuple, list)) or not isinstance(out[0], Tensor):
        return
    from ..write_door import refuse_partial_overlap  # (the write door builds on the ops: imported when needed)

    written, read = out[0]._data, input._data
    if partial_only:
        refuse_partial_overlap(written, read)
    elif xp.may_share_memory(written, read):
        raise RuntimeError("unsupported operation: some elements of the input tensor and the written-to tensor refer "
                           "to a single memory location. Please clone() the tensor before performing the operation.")


def _tensors(result_or_out):
    return list(result_or_out) if isinstance(result_or_out, (tuple, list)) else [result_or_out]


def _can_cast(result, out):
    from .promotion import can_cast  # (promotion builds on the ops that import this module: imported when needed)

    return can_cast(result, out)
