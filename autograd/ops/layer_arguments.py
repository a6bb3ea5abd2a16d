"""The arguments of the image and sequence layers (convolution, pooling), read as PyTorch reads them.

An int or a tuple becomes one int per spatial dim (PyTorch's ``_pair``/``_single``); an unbatched
input (C, *spatial) gets a batch dim of 1; 1-d inputs get a height of 1, so that the 2-d primitives
(``autograd.ops.convolution``, ``autograd.ops.pooling``) compute every 1-d and 2-d layer.
"""

from ..errors import ShapeError, not_a_tensor


def _tuple(value, n, name):
    """An int or a sequence of n ints, as a tuple of n ints (PyTorch's _pair / _single). A sequence of one
    int stands for that int in every dim, as PyTorch's kernels read it (``avg_pool2d(x, 2, padding=[1])``).
    A sequence of another length is PyTorch's RuntimeError (which it raises at the forward call), also a
    ValueError. A string (``padding='same'`` where no string is taken) is PyTorch's TypeError."""
    if isinstance(value, str):
        raise TypeError(f"argument '{name}' must be tuple of ints, not str")
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            return (int(value[0]),) * n
        if len(value) != n:
            raise ShapeError(f"{name} must be an int or a tuple of {n} ints, got {value!r}")
        return tuple(int(v) for v in value)
    return (int(value),) * n


def check_convolution_window(kernel, stride, dilation, padding):
    """A convolution's sizes as PyTorch checks them (RuntimeError): a kernel, stride and dilation of at
    least 1, a padding of at least 0 (a zero would divide by zero, or compute nothing sensible)."""
    if any(s <= 0 for s in stride):
        raise RuntimeError("non-positive stride is not supported")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"dilation should be greater than zero, but got {list(dilation)}")
    if any(p < 0 for p in padding):
        raise RuntimeError("negative padding is not supported")
    if any(k <= 0 for k in kernel):
        raise RuntimeError(f"kernel size should be greater than zero, but got {list(kernel)}")


def check_pooling_window(kernel, stride, dilation, padding):
    """A pooling window's sizes as PyTorch checks them (RuntimeError), before any size is divided by."""
    if any(s == 0 for s in stride):
        raise RuntimeError("stride should not be zero")
    if any(s < 0 for s in stride):
        raise RuntimeError(f"stride should be greater than zero, but got {list(stride)}")
    if any(k <= 0 for k in kernel):
        raise RuntimeError(f"kernel_size must be greater than zero, but got {list(kernel)}")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"dilation should be greater than zero, but got {list(dilation)}")
    if any(p < 0 for p in padding):
        raise RuntimeError(f"pad must be non-negative, but got pad: {list(padding)}")


def _dims(value, ndim):
    return "[" + ", ".join(str(s) for s in value) + "]" if ndim else str(value)


# PyTorch's words where a pooling layer is given an input of another number of dims: each kernel words its own
# check (the convolutions say what the other layers here say). {shape}: the input's sizes, {ndim}: their number.
_TAKES_DIMS = "Expected {low} to {high} dimensions, but got {ndim}-dimensional tensor for argument #1 'self' " \
              "(while checking arguments for {name})"
_BATCH_MODE = "non-empty {low}D or {high}D (batch mode) tensor expected for input"
_WRONG_DIMS = {
    "max_pool1d": "max_pool1d: Expected 2D or 3D (batch mode) tensor with optional 0 dim batch size for input, "
                  "but got:{shape}",
    "max_pool2d": _BATCH_MODE, "max_pool3d": _BATCH_MODE, "avg_pool3d": _BATCH_MODE,
    "avg_pool1d": _TAKES_DIMS, "adaptive_avg_pool1d": _TAKES_DIMS, "adaptive_max_pool1d": _TAKES_DIMS,
    "avg_pool2d": "Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, but got:{shape}",
    "adaptive_avg_pool2d": "adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got {shape}",
    "adaptive_avg_pool3d": "adaptive_avg_pool3d(): Expected 4D or 5D tensor, but got {shape}",
    "adaptive_max_pool2d": "adaptive_max_pool2d(): Expected 3D or 4D tensor, but got: {shape}",
    "adaptive_max_pool3d": "adaptive_max_pool3d(): Expected 4D or 5D tensor, but got: {shape}",
    "fractional_max_pool2d": "fractional_max_pool2d(): Expected 3D or 4D tensor, but got: {shape}",
    "fractional_max_pool3d": "fractional_max_pool3d_out(): Expected 4D or 5D tensor, but got: {shape}",
}


def _batched(input, spatial, name):
    """input as (N, C, *spatial) and whether a batch dim was added (PyTorch accepts unbatched input)."""
    if not hasattr(input, "ndim"):  # (None, a number: PyTorch's TypeError, not an AttributeError from here)
        raise not_a_tensor(name, 0, input)
    if input.ndim == spatial + 2:
        return input, False
    if input.ndim == spatial + 1:
        return input.unsqueeze(0), True
    ours = (f"Expected {spatial + 1}D (unbatched) or {spatial + 2}D (batched) input to {name}, "
            f"but got input of size: {_dims(input.shape, 1)}")
    if name in _WRONG_DIMS:
        theirs = _WRONG_DIMS[name].format(low=spatial + 1, high=spatial + 2, ndim=input.ndim, name=name,
                                          shape=_dims(input.shape, 1))
        ours = f"{theirs} ({ours})"
    raise ShapeError(ours)


def _as_2d(input, spatial, name):
    """(N, C, *spatial) → (N, C, H, W): 1-d inputs get H = 1. Returns the tensor and how to undo it."""
    input, unbatched = _batched(input, spatial, name)
    if spatial == 1:
        input = input.unsqueeze(2)

    def undo(y):
        if spatial == 1:
            y = y.squeeze(2)
        return y.squeeze(0) if unbatched else y

    return input, undo
