"""``torch._check`` and its kin: a condition a program asserts (a fake function checking its inputs' shapes, as
the custom-operator tutorial's do), raising PyTorch's error of the kind each names when it is False. ``message``
is a function giving the text, called only then."""

from ..tensor import Tensor
from .names import names

_DEFAULT = ("Expected cond to be True, but got False. (Could this error message be improved? If so, please report an "
            "enhancement request to PyTorch.)")


def _check_with(error_type, cond, message=None):
    if isinstance(cond, Tensor):
        raise TypeError("cond must be a bool, but got a Tensor. For tensor conditions, use torch._check_tensor_all() "
                        "to assert that all elements are true.")
    if not isinstance(cond, bool) and type(cond).__name__ != "bool_":  # (a NumPy bool is a condition too)
        raise TypeError(f"cond must be a bool, but got {type(cond)}")
    if not cond:
        raise error_type(_DEFAULT if message is None else str(message()))


@names(function=False, method=False, functions=("_check",))
def _check(cond, message=None):
    _check_with(RuntimeError, cond, message)


@names(function=False, method=False, functions=("_check_index",))
def _check_index(cond, message=None):
    _check_with(IndexError, cond, message)


@names(function=False, method=False, functions=("_check_value",))
def _check_value(cond, message=None):
    _check_with(ValueError, cond, message)


@names(function=False, method=False, functions=("_check_type",))
def _check_type(cond, message=None):
    _check_with(TypeError, cond, message)


@names(function=False, method=False, functions=("_check_not_implemented",))
def _check_not_implemented(cond, message=None):
    _check_with(NotImplementedError, cond, message)


@names(function=False, method=False, functions=("_check_is_size",))
def _check_is_size(i, message=None, *, max=None):  # noqa: A002  (PyTorch's keyword)
    """``i`` may be a size: at least 0 (and at most ``max``)."""
    _check(i >= 0, message)
    if max is not None:
        _check(i <= max, message)


@names(function=False, method=False, functions=("_check_tensor_all",))
def _check_tensor_all(cond, message=None):
    """Every element of the bool tensor ``cond`` is True."""
    if not isinstance(cond, Tensor) or cond.dtype.kind != "b":
        raise TypeError(f"cond must be a tensor with dtype torch.bool, but got {type(cond)}")
    _check(bool(cond.all()), message)


@names(function=False, method=False, functions=("_assert_async",))
def _assert_async(tensor, assert_msg=None):
    """The one-element ``tensor`` is nonzero (kornia checks its factors with it; on a CPU PyTorch's check is
    synchronous, as this one): PyTorch's RuntimeError, with ``assert_msg`` where given, when it is zero."""
    if not bool(tensor):  # (more than one element, or none: bool's own 'ambiguous' error, as PyTorch's)
        raise RuntimeError("Expected Tensor with single nonzero value, but got zero" if assert_msg is None
                           else assert_msg)


@names(function=False, method=False, functions=("_assert",))
def _assert(condition, message):
    """A Python assert that FX can trace (torch._assert): an AssertionError with ``message`` when False."""
    assert condition, message
