"""``autograd.ops.<namespace>`` (PyTorch's ``torch.ops``): the operators of a namespace, and ``aten``'s: the library's
functions and tensor methods by their ATen names."""


from ..tensor import Tensor
from .operators import _OPS, OpOverloadPacket

# -- torch.ops ------------------------------------------------------------------------------------------------


class _AtenPacket:
    """``autograd.ops.aten.add`` (and each overload: ``.Tensor``, ``.Scalar``, ``.default``, ...): the library's
    function of that name (an in-place name, ``add_``, the tensor method)."""

    def __init__(self, name, function):
        self._name, self._function = name, function

    def __call__(self, *args, **kwargs):
        return self._function(*args, **kwargs)

    def __getattr__(self, overload):
        if overload.startswith("__"):
            raise AttributeError(overload)
        return self

    def __repr__(self):
        return f"aten.{self._name}"


class _OpNamespace:
    def __init__(self, name):
        self._name = name

    def __getattr__(self, op_name):
        if op_name.startswith("__"):
            raise AttributeError(op_name)
        if self._name == "aten":
            return _aten(op_name)
        qualname = f"{self._name}::{op_name}"
        overloads = {key.partition(".")[2] or "default": op for key, op in _OPS.items()
                     if key.partition(".")[0] == qualname}
        if not overloads:
            raise AttributeError(f"'_OpNamespace' '{self._name}' object has no attribute '{op_name}'")
        first = next(iter(overloads.values()))
        if first._packet is None or first._packet._overloads != overloads:  # (one packet per operator, as
            first._packet = OpOverloadPacket(first, overloads)  # PyTorch's, until an overload is added)
        return first._packet

    def __repr__(self):
        return f"<module 'torch.ops.{self._name}'>"


def _softmax(name):
    """aten's _softmax / _log_softmax: (input, dim, half_to_float), the last ignored (nothing here computes in
    half)."""
    def function(input, dim, half_to_float=False):  # noqa: A002  (ATen's name)
        import autograd

        return getattr(autograd, name)(input, dim)

    return function


_ATEN_ONLY = {"_softmax": _softmax("softmax"), "_log_softmax": _softmax("log_softmax")}


def _aten(name):
    import autograd

    function = getattr(autograd, name, None) or _ATEN_ONLY.get(name)
    if function is None and hasattr(Tensor, name):  # (a method only: view, expand, add_, ...)
        def function(self, *args, **kwargs):
            return getattr(self, name)(*args, **kwargs)
    if function is None or not callable(function):
        raise AttributeError(f"'_OpNamespace' 'aten' object has no attribute '{name}'")
    return _AtenPacket(name, function)


def op_namespace(name):
    """``autograd.ops.<name>``: the operators of namespace ``name`` (AttributeError if it has none)."""
    if name == "aten" or any(qualname.startswith(name + "::") for qualname in _OPS):
        return _OpNamespace(name)
    raise AttributeError(f"module 'autograd.ops' has no attribute '{name}'")
