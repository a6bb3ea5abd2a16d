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

    # one operator, however it was reached (aten.mm, aten.mm.default): equal, and one key of a dict (the FLOP
    # counter's counts are keyed by it, as PyTorch's by the OpOverloadPacket)
    def __eq__(self, other):
        return type(other) is _AtenPacket and other._name == self._name

    def __hash__(self):
        return hash(("aten", self._name))


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


def _index(input, indices):  # noqa: A002  (ATen's name)
    """aten's index: ``input[indices]`` for a list of index tensors, None standing for a whole dim (``:``)."""
    if not indices:
        raise IndexError("at least one index must be provided")
    if len(indices) > input.ndim:
        raise IndexError(f"too many indices for tensor of dimension {input.ndim} (got {len(indices)})")
    return input[tuple(slice(None) if i is None else i for i in indices)]


def _index_put(input, indices, values, accumulate=False):  # noqa: A002
    from ..ops.index_vectors import optional_index_put

    return optional_index_put(input, indices, values, accumulate)


def _index_put_(input, indices, values, accumulate=False):  # noqa: A002
    from ..ops.index_vectors import optional_index_put

    return input._write_back(optional_index_put, (indices, values, accumulate), {}, "index_put_")


def _convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,  # noqa: A002
                          output_padding, groups, output_mask):
    """aten's convolution_backward: (dL/dinput, dL/dweight, dL/dbias) of ``convolution`` for dL/doutput, each None
    where ``output_mask`` asks none (the bias's only its sizes: None, no bias)."""
    import autograd

    with autograd.enable_grad():
        x, w = (t.detach().requires_grad_(wanted) for t, wanted in zip((input, weight), output_mask))
        bias = None if bias_sizes is None else autograd.zeros(bias_sizes, dtype=weight.dtype).requires_grad_(
            output_mask[2])
        y = autograd.convolution(x, w, bias, stride, padding, dilation, transposed, output_padding, groups)
        wanted = [t for t, asked in zip((x, w, bias), output_mask) if asked]
        grads = iter(autograd.autograd.grad(y, wanted, grad_output))
    return tuple(next(grads) if asked else None for asked in output_mask)


# aten's own ops, and those whose ATen form takes more than the library's function of the name: index_put's
# indices may hold None there, where torch.index_put (and so the library's) refuses it
_ATEN_ONLY = {"_softmax": _softmax("softmax"), "_log_softmax": _softmax("log_softmax"), "index": _index,
              "index_put": _index_put, "index_put_": _index_put_, "convolution_backward": _convolution_backward}


def _aten(name):
    import autograd

    function = _ATEN_ONLY.get(name) or getattr(autograd, name, None)
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
