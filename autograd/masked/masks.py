"""How a mask meets its input: PyTorch's ``torch.masked`` helpers.

A mask is a boolean tensor broadcastable to the input (never of more dims than it); True marks an element
that takes part. A masked operation is the plain one applied to the input with every masked-out element
replaced by the operation's *identity*, the value that changes nothing when included:

    masked_op(x, mask) = op(where(mask, x, identity_op))

(0 for sum, 1 for prod, -inf for amax, +inf for amin, NaN for median, which reads through nanmedian.)
``where`` sends no gradient to the branch it did not choose, so masked-out elements get a zero gradient.
"""

import autograd

# what a masked reduction reduces (output mask: any over dim) and what a masked normalization keeps
# (output mask: the input mask), by name
REDUCTIONS = frozenset({"sum", "prod", "amax", "amin", "argmax", "argmin", "mean", "median", "norm", "var", "std",
                        "logsumexp"})
NORMALIZATIONS = frozenset({"softmax", "log_softmax", "softmin", "normalize", "cumsum", "cumprod"})


def _canonical_dim(dim, ndim):
    """``dim`` as a sorted tuple of non-negative dims: None (and ``()``, as PyTorch still reads it) is every dim."""
    if dim == ():
        dim = None
    if dim is None:
        return tuple(range(ndim))
    ndim = max(ndim, 1)  # a 0-d input takes dim 0 and -1, as PyTorch's reductions do
    dims = []
    for d in (dim,) if isinstance(dim, int) else dim:
        # (a repeat only as written: 0 and -2 of a 2-d input pass here and are refused by the reduction itself)
        if d in dims:
            raise RuntimeError(f"dim={d} appears multiple times in the list of dims")
        if d >= ndim or d < -ndim:
            raise IndexError(f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], but got {d})")
        dims.append(d % ndim)
    return tuple(sorted(dims))


def _reduction_identity(op_name, input, *args):
    """The identity of the reduction ``op_name`` as a 0-d tensor of ``input``'s dtype, or None where it has
    none (mean, var, std: the mean of nothing is undefined). ``args``: norm's ``ord``."""
    dtype = input.dtype
    op_name = op_name.rsplit(".", 1)[-1]
    floating, complex_ = dtype.is_floating_point, dtype.is_complex
    integral = not floating and not complex_ and (dtype.is_signed or dtype == autograd.uint8)
    if op_name in {"sum", "cumsum"}:
        return input.new_full([], 0)
    if op_name in {"prod", "cumprod"}:
        return input.new_full([], 1)
    if op_name in {"amax", "argmax", "logaddexp", "logsumexp"}:
        if floating or (complex_ and op_name == "logsumexp"):
            return input.new_full([], -float("inf"))
        if integral:
            return input.new_full([], autograd.iinfo(dtype).min)
    elif op_name in {"amin", "argmin"}:
        if floating:
            return input.new_full([], float("inf"))
        if integral:
            return input.new_full([], autograd.iinfo(dtype).max)
    elif op_name in {"mean", "var", "std"}:
        return None
    elif op_name == "norm":
        ord = args[0] if args else 2
        if ord == -float("inf"):  # the min of |x|: +inf changes nothing
            if not floating:
                raise AssertionError(f"input must be floating point, got {dtype}")
            return input.new_full([], float("inf"))
        return input.new_full([], 0)
    elif op_name == "median":  # NaN: nanmedian skips it (an integer input is read as float32 first)
        return autograd.tensor(float("nan"), dtype=dtype if floating else autograd.float32)
    raise NotImplementedError(f"identity of {op_name} on {dtype} input")


def _input_mask(input, *args, **kwargs):
    """The keyword ``mask`` as a boolean tensor of ``input``'s shape (broadcast, never narrowed)."""
    mask = kwargs.get("mask")
    if mask is None:
        raise ValueError("_input_mask requires explicit mask")
    if mask.shape != input.shape:
        if mask.ndim > input.ndim:
            raise IndexError("_input_mask expected broadcastable mask (got mask dimensionality higher than of the "
                             "input)")
        mask = autograd.broadcast_to(mask.clone(), input.shape)
    return mask.to(dtype=autograd.bool)


def _any(mask, dims, keepdim):
    """any over each of ``dims`` in turn, last first (so the earlier dims keep their places)."""
    for d in reversed(dims):
        mask = mask.any(dim=d, keepdim=keepdim)
    return mask


def _output_mask(op, input, *args, **kwargs):
    """Which elements of ``op(input, *args, **kwargs)`` saw at least one masked-in element: for a reduction,
    any of the input mask over the reduced dims; for a normalization, the input mask itself."""
    if not callable(op):
        raise ValueError(f"_output_mask expected masked operation (got {type(op).__name__} object)")
    if op.__name__ in REDUCTIONS:
        if op.__name__ == "norm" and args:
            args = args[1:]  # (norm's ord comes before dim)
        dim = args[0] if args else kwargs.get("dim")
        mask = _input_mask(input, *args, **kwargs)
        return _any(mask, _canonical_dim(dim, input.ndim), bool(kwargs.get("keepdim", False)))
    if op.__name__ in NORMALIZATIONS:
        return _input_mask(input, *args, **kwargs)
    raise ValueError(f"_output_mask expected masked operation (got callable {op.__module__}.{op.__name__})")


def _where(mask, input, fill_value):
    """``where(mask, input, fill_value)``: the masked-out elements replaced (PyTorch's also serves sparse
    layouts; ours are strided)."""
    return autograd.where(mask, input, fill_value)


def _combine_input_and_mask(op, input, mask, *args):
    """``input`` with its masked-out elements set to ``op``'s identity (``input`` itself without a mask)."""
    if mask is None:
        return input
    if not callable(op):
        raise ValueError(f"_combine_input_and_mask expected masked operation (got {type(op).__name__} object)")
    return _where(_input_mask(input, mask=mask), input, _reduction_identity(op.__name__, input, *args))
