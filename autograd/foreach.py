"""PyTorch's ``torch._foreach_*`` functions: one operation applied to each tensor of a list.

PyTorch fuses these into few kernel launches for its optimizers; programs call them too, most often
to keep an exponential moving average of a model's weights (timm's ``ModelEmaV3``, diffusers'
``EMAModel``)::

    torch._foreach_lerp_(ema_params, model_params, weight=1 - decay)
    torch._foreach_mul_(ema_params, decay); torch._foreach_add_(ema_params, model_params, alpha=1 - decay)

Here each is a loop over the list calling the tensor method of the same name, so the values, dtypes,
broadcasting and gradients are that method's: ``_foreach_add(xs, ys, alpha=a)[i]`` is
``xs[i].add(ys[i], alpha=a)``, and ``_foreach_add_`` is ``add_`` on each (it returns the list, as
PyTorch's does). The out-of-place forms return a tuple and are differentiable, being compositions.

The second operand of a binary function is, as in PyTorch, a list of tensors (one per tensor), a
list of numbers (one per tensor), or one number or one tensor for all of them; ``addcmul``/``addcdiv``
take their ``value`` as a number, a list of numbers or a 1-D tensor of them.
"""

import math
from numbers import Number

from .backend import float16
from .tensor import Tensor, tensor_from

# x -> f(x), each with its in-place twin (`_foreach_exp` and `_foreach_exp_`)
UNARY = ("abs", "acos", "asin", "atan", "ceil", "cos", "cosh", "erf", "erfc", "exp", "expm1", "floor", "frac",
         "lgamma", "log", "log10", "log1p", "log2", "neg", "reciprocal", "round", "rsqrt", "sigmoid", "sign", "sin",
         "sinh", "sqrt", "tan", "tanh", "trunc")
# (x, other) -> x.op(other), each with its in-place twin; add and sub also take alpha
BINARY = ("add", "sub", "mul", "div", "pow", "clamp_min", "clamp_max", "maximum", "minimum")


def _tensors(name, tensors):
    tensors = list(tensors)
    if not tensors:
        raise RuntimeError(f"{name}: Tensor list must have at least one tensor.")
    if not all(isinstance(t, Tensor) for t in tensors):
        kinds = sorted({type(t).__name__ for t in tensors if not isinstance(t, Tensor)})
        raise TypeError(f"{name}: expected a list of tensors, got {', '.join(kinds)} in it")
    return tensors


def _per_tensor(name, tensors, other):
    """``other`` spread over ``tensors``: a list gives one entry each (of the same length), anything
    else (a number, one tensor) is used for every tensor."""
    if isinstance(other, (list, tuple)):
        if len(other) != len(tensors):
            if other and all(isinstance(o, Tensor) for o in other):  # (an empty list reads as PyTorch's scalars)
                raise RuntimeError(f"{name}: Tensor lists must have the same number of tensors, got "
                                   f"{len(tensors)} and {len(other)}")
            raise RuntimeError(f"{name}: Tensor list must have same number of elements as scalar list. "
                               f"({len(tensors)} tensors, {len(other)} scalars)")
        return list(other)
    if isinstance(other, Tensor) and other.dim() != 0:  # one tensor for all: a number, which broadcasts nowhere
        raise RuntimeError(f"{name}: scalar tensor expected to be 0 dim but it has {other.dim()} dimensions and "
                           f"{other.numel()} elements.")
    return [other] * len(tensors)


def _call(tensor, op, other):
    """``tensor.op(other)``. PyTorch's foreach maximum/minimum also take a number and have in-place forms,
    which tensors lack: the number becomes a 0-d tensor (of the dtype clamp_min/clamp_max would give), so
    that a tie shares the gradient as maximum's does (clamp_min would give all of it to the tensor)."""
    base = op.rstrip("_")
    if op == "mul_" and tensor.dtype == float16 and isinstance(other, (int, float)):
        other = tensor_from(other, dtype=float16)  # (PyTorch 2.13's _foreach_mul_ rounds the number to float16 first)
    if base not in ("maximum", "minimum"):
        return getattr(tensor, op)(other)
    if op.endswith("_"):
        return tensor._write_back(_with_number, (base, other), {})
    return _with_number(tensor, base, other)


def _with_number(tensor, base, other):
    """``tensor.maximum(other)`` (or minimum), ``other`` a tensor or a number."""
    if not isinstance(other, Tensor):
        from .ops.promotion import result_type  # (promotion builds on the ops: imported when needed)

        other = tensor_from(other, dtype=result_type(tensor, other))
    return getattr(tensor, base)(other)


def _unary(op):
    name = f"_foreach_{op}"

    def apply(self):
        results = tuple(getattr(t, op)() for t in _tensors(name, self))
        return self if op.endswith("_") else results

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"``x.{op}()`` for each tensor x of the list" + (" (returns the list)." if op.endswith("_")
                                                                       else ", as a tuple.")
    return apply


def _binary(op):
    name = f"_foreach_{op}"
    base = op.rstrip("_")

    def apply(self, other=None, *, alpha=None, scalar=None, scalars=None, exponent=None):
        # the second operand positionally, or by PyTorch's keyword for its kind (timm's _foreach_mul_(p, scalar=d))
        given = [v for v in (other, scalar, scalars, exponent) if v is not None]
        if len(given) != 1:
            raise TypeError(f"{name}() takes one second operand: other, scalar=, scalars= or exponent= "
                            f"(got {len(given)})")
        other = given[0]
        if base == "pow" and isinstance(self, Number):  # _foreach_pow(2.0, exponents): a number's powers
            return tuple(self ** t for t in _tensors(name, other))
        tensors = _tensors(name, self)
        if alpha is not None and base not in ("add", "sub"):
            raise TypeError(f"{name}() got an unexpected keyword argument 'alpha'")
        others = _per_tensor(name, tensors, other)
        if alpha is None:
            results = tuple(_call(t, op, o) for t, o in zip(tensors, others))
        else:
            results = tuple(getattr(t, op)(o, alpha=alpha) for t, o in zip(tensors, others))
        return self if op.endswith("_") else results

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = (f"``x.{op}(other)`` for each tensor x of the list, ``other`` one per tensor (a list of "
                     "tensors or of numbers) or one for all" + (" (returns the list)." if op.endswith("_")
                                                                 else "; a tuple."))
    return apply


def _values(name, tensors, value):
    """addcmul/addcdiv's ``value`` per tensor: a number, a list of numbers, or a 1-D tensor of them."""
    if isinstance(value, Tensor):
        if value.dim() != 1:
            raise RuntimeError(f"Expected packed scalar Tensor to be of dimension 1. Got {value.dim()} instead.")
        if value.shape[0] != len(tensors):
            raise RuntimeError(f"Expected length of scalars to match input of length {len(tensors)} but got "
                               f"{value.shape[0]} instead.")
        if not value.is_contiguous():  # (PyTorch reads the scalars from the tensor's memory as one run)
            raise RuntimeError("Expected scalars to be contiguous.")
        value = value.tolist()
    return _per_tensor(name, tensors, value)


def _pointwise(op):
    name = f"_foreach_{op}"

    def apply(self, tensor1, tensor2, value=1):
        tensors = _tensors(name, self)
        firsts, seconds = _per_tensor(name, tensors, list(tensor1)), _per_tensor(name, tensors, list(tensor2))
        results = tuple(getattr(t, op)(a, b, value=v)
                        for t, a, b, v in zip(tensors, firsts, seconds, _values(name, tensors, value)))
        return self if op.endswith("_") else results

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = f"``x.{op}(t1, t2, value=v)`` for each x of the list, with t1, t2 (and v) one per tensor."
    return apply


def _lerp(op):
    name = f"_foreach_{op}"

    def apply(self, tensors1, weight):
        tensors = _tensors(name, self)
        ends = _per_tensor(name, tensors, list(tensors1))
        results = tuple(getattr(t, op)(e, w) for t, e, w in zip(tensors, ends, _per_tensor(name, tensors, weight)))
        return self if op.endswith("_") else results

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = (f"``x.{op}(end, weight)``, ``x + weight * (end - x)``, for each x of the list; the weight is "
                     "a number, or one number or tensor per x.")
    return apply


def _foreach_norm(self, ord=2, dtype=None):  # noqa: A002  (PyTorch's argument name)
    """``linalg.vector_norm(x, ord, dtype=dtype)`` of each tensor x of the list, as a tuple."""
    from .linalg import vector_norm  # (autograd.linalg loads on first use)

    tensors = _tensors("_foreach_norm", self)
    if ord in (math.inf, -math.inf) and any(t.numel() == 0 for t in tensors):
        raise RuntimeError("_foreach_norm cannot compute the infinity norm on an empty tensor because the operation "
                           "does not have an identity")
    return tuple(vector_norm(t, ord, dtype=dtype) for t in tensors)


def _foreach_powsum(self, ord=2, dtype=None):  # noqa: A002
    """``sum(|x| ** ord)`` of each tensor x of the list (its norm before the root), as a tuple."""
    tensors = _tensors("_foreach_powsum", self)
    for t in tensors:
        if t.dtype.kind not in "fc":  # (PyTorch's kernel takes floats and complex numbers only)
            from .ops.conversion import type_name

            raise NotImplementedError(f'"powsum_cpu" not implemented for \'{type_name(t.dtype)}\'')
    return tuple((t if dtype is None else t.to(dtype)).abs().pow(ord).sum() for t in tensors)


def _foreach_max(self):
    """The largest element of each tensor of the list, as a tuple."""
    tensors = _tensors("_foreach_max", self)
    for t in tensors:
        if t.numel() == 0:
            raise RuntimeError("_foreach_max cannot compute the maximum of an empty tensor; max over zero "
                               "elements is undefined.")
    return tuple(t.max() for t in tensors)


def _foreach_mm(self, mat2):
    """``a.mm(b)`` for each pair of the two lists, as a tuple."""
    tensors = _tensors("_foreach_mm", self)
    return tuple(a.mm(b) for a, b in zip(tensors, _per_tensor("_foreach_mm", tensors, list(mat2))))


def _foreach_copy_(self, src, non_blocking=False):
    """``x.copy_(s)`` for each pair of the two lists (returns the first)."""
    tensors = _tensors("_foreach_copy_", self)
    for t, s in zip(tensors, _per_tensor("_foreach_copy_", tensors, list(src))):
        t.copy_(s)
    return self


def _foreach_clone(self, *, memory_format=None):
    """A copy of each tensor of the list, as a tuple."""
    return tuple(t.clone() for t in _tensors("_foreach_clone", self))


def _foreach_zero_(self):
    """Zero every tensor of the list in place (returns the list)."""
    for t in _tensors("_foreach_zero_", self):
        t.zero_()
    return self


FUNCTIONS = {
    **{f"_foreach_{op}{tail}": _unary(op + tail) for op in UNARY for tail in ("", "_")},
    **{f"_foreach_{op}{tail}": _binary(op + tail) for op in BINARY for tail in ("", "_")},
    **{f"_foreach_{op}{tail}": _pointwise(op + tail) for op in ("addcmul", "addcdiv") for tail in ("", "_")},
    "_foreach_lerp": _lerp("lerp"),
    "_foreach_lerp_": _lerp("lerp_"),
    **{f.__name__: f for f in (_foreach_norm, _foreach_powsum, _foreach_max, _foreach_mm, _foreach_copy_,
                               _foreach_clone, _foreach_zero_)},
}
