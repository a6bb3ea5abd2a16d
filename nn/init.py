"""Weight initialisation, with ``torch.nn.init``'s names, arguments and formulas.

Every initialiser fills its tensor in place (under ``no_grad``), returns it,
and draws from ``generator=`` (an ``autograd.Generator``) or the default
generator, so ``autograd.manual_seed`` repeats it.
The lecture's point: all-zero weights make every neuron of a layer the same
(symmetry that gradient descent never breaks); too small or too large a
spread makes signals and gradients vanish or explode with depth. Xavier and
Kaiming choose the spread that keeps the variance steady from layer to layer.
"""

import math
import warnings

import numpy

from autograd import Tensor, empty_like, no_grad, where
from autograd.graph import program_stacklevel
from autograd.random import generator as rng
from autograd.tensor import tensor_from


def calculate_gain(nonlinearity, param=None):
    """The gain g that keeps activations' variance through a nonlinearity:

    linear, conv, sigmoid: 1;  tanh: 5/3;  relu: √2;  selu: 3/4;
    leaky_relu with negative slope a (default 0.01): √(2 / (1 + a²)).
    """
    linear = {"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
              "conv_transpose3d", "sigmoid"}
    if nonlinearity in linear:
        return 1  # (an int, as PyTorch's)
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "selu":
        return 3.0 / 4
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} is not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor):
    """fan_in = in-features x receptive field, fan_out = out-features x receptive field.

    A weight of shape (out, in, *kernel) (Linear's (out, in), a convolution's
    (out, in, kh, kw)) has receptive field prod(kernel).
    """
    if tensor.ndim < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 "
                         f"dimensions (got shape {tuple(tensor.shape)})")
    receptive_field = math.prod(tensor.shape[2:])
    return tensor.shape[1] * receptive_field, tensor.shape[0] * receptive_field


def _calculate_correct_fan(tensor, mode):
    """The fan ``mode`` names ('fan_in' or 'fan_out'); PyTorch's private name, which custom
    initialisers call."""
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of ['fan_in', 'fan_out']")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def _empty(tensor):
    """A tensor with no elements has no fan to scale by: PyTorch's kaiming initialisers warn and
    leave it (a Linear with 0 in_features, as AdaptiveLogSoftmaxWithLoss builds for a small tail)."""
    if 0 in tensor.shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=program_stacklevel())
        return True
    return False


def _fill(tensor, values):
    with no_grad():  # initialising a parameter is not part of any graph
        return tensor.copy_(values if isinstance(values, Tensor) else tensor_from(values, dtype=tensor.dtype))


def uniform_(tensor, a=0.0, b=1.0, generator=None):
    """w ~ U(a, b) (a complex w: each part)."""
    with no_grad():  # initialising a parameter is not part of any graph
        return tensor.uniform_(a, b, generator=generator)


def normal_(tensor, mean=0.0, std=1.0, generator=None):
    """w ~ N(mean, std²) (a complex w: E|w - mean|² = std²)."""
    with no_grad():
        return tensor.normal_(mean, std, generator=generator)


def constant_(tensor, val):
    return _fill(tensor, val)


def zeros_(tensor):
    """All zeros: fine for biases; for weights it is the lecture's symmetry trap."""
    return _fill(tensor, 0.0)


def ones_(tensor):
    return _fill(tensor, 1.0)


def eye_(tensor):
    """The identity matrix, for a 2-D tensor (keeps inputs in Linear layers)."""
    if tensor.ndim != 2:
        raise ValueError(f"Only tensors with 2 dimensions are supported, got shape {tuple(tensor.shape)}")
    return _fill(tensor, numpy.eye(*tensor.shape))


def dirac_(tensor, groups=1):
    """The Dirac delta for a 3-, 4- or 5-D convolution weight: each output channel of a group copies
    the input channel of the same index (a 1 at the kernel's centre, zeros elsewhere), so the
    convolution starts as the identity on as many channels as both sides have (Zagoruyko &
    Komodakis, 2017, DiracNets)."""
    if tensor.ndim not in (3, 4, 5):
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    if tensor.shape[0] % groups != 0:
        raise ValueError("dim 0 must be divisible by groups")
    per_group = tensor.shape[0] // groups
    values = numpy.zeros(tensor.shape)
    centre = tuple(k // 2 for k in tensor.shape[2:])
    for g in range(groups):
        for d in range(min(per_group, tensor.shape[1])):
            values[(g * per_group + d, d, *centre)] = 1.0
    return _fill(tensor, values)


def sparse_(tensor, sparsity, std=0.01, generator=None):
    """Martens (2010): w ~ N(0, std²), then in each column a random ⌈sparsity · rows⌉ entries set to 0."""
    if tensor.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    rows, cols = tensor.shape
    zeros_per_column = math.ceil(sparsity * rows)
    values = rng(generator).normal(0.0, std, (rows, cols), dtype=tensor._data.dtype)
    for col in range(cols):  # (each column's rows by the default generator, as PyTorch's randperm(rows) there)
        values[rng(None).permutation(rows)[:zeros_per_column], col] = 0.0
    return _fill(tensor, values)


def xavier_uniform_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio (2010): w ~ U(-a, a),  a = gain · √(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    std = gain * math.sqrt(2.0 / float(fan_in + fan_out))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor, gain=1.0, generator=None):
    """Glorot & Bengio (2010): w ~ N(0, σ²),  σ = gain · √(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. (2015): w ~ U(-b, b),  b = gain · √(3 / fan),  gain = calculate_gain(nonlinearity, a).

    mode 'fan_in' keeps the forward pass's variance, 'fan_out' the backward's.
    """
    if _empty(tensor):
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_calculate_correct_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu", generator=None):
    """He et al. (2015): w ~ N(0, σ²),  σ = gain / √fan."""
    if _empty(tensor):
        return tensor
    std = calculate_gain(nonlinearity, a) / math.sqrt(_calculate_correct_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)


def trunc_normal_(tensor, mean=0.0, std=1.0, a=-2.0, b=2.0, generator=None):
    """w ~ N(mean, std²) conditioned on a <= w <= b, drawn as PyTorch 2.13 draws it. Where [a, b] holds more
    than 0.3 of the normal's mass: normal draws, those outside drawn again until none is. Otherwise
    rejection from U(a, b): a candidate x is kept when ln u < -((x - mean) / std)² / 2 - ln peak, u ~ U(0, 1)
    (peak: the density's largest value on [a, b]), the pending ones drawn again, all of them each round."""
    if a > b:  # (PyTorch's RuntimeError, from the uniform_ it draws with; a = b gives a, as there)
        raise RuntimeError(f"uniform_ expects to return a [from, to) range, but found from={a} > to={b} "
                           f"(trunc_normal_: the bound a={a} must not exceed b={b})")
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn("mean is more than 2 std from [a, b] in nn.init.trunc_normal_. The distribution of values "
                      "may be incorrect.", stacklevel=program_stacklevel())

    def cdf(x):  # Φ
        return (1.0 + math.erf(x / math.sqrt(2.0))) / 2.0

    with no_grad():
        if cdf((b - mean) / std) - cdf((a - mean) / std) > 0.3:
            low, high = (tensor._data.dtype.type(bound).item() for bound in (a, b))  # (the bounds in its dtype)
            result = tensor.normal_(mean, std, generator=generator)
            while True:
                outside = (result < low) | (result > high)
                if not outside.any():
                    break
                result = where(outside, empty_like(result).normal_(mean, std, generator=generator), result)
            if result is not tensor:
                tensor.copy_(result)
            return tensor
        mode = max(a, min(mean, b))
        log_peak = -0.5 * ((mode - mean) / std) ** 2
        candidates, accept = empty_like(tensor), empty_like(tensor)
        tensor.uniform_(a, b, generator=generator)
        candidates.copy_(tensor)
        candidates.sub_(mean).div_(std).pow_(2).mul_(-0.5).sub_(log_peak)  # ln of the density over its peak
        pending = accept.uniform_(generator=generator).log_().gt(candidates)
        result = tensor
        while pending.any():
            candidates.uniform_(a, b, generator=generator)
            result = where(pending, candidates, result)
            candidates.sub_(mean).div_(std).pow_(2).mul_(-0.5).sub_(log_peak)
            pending = where(pending, accept.uniform_(generator=generator).log_().gt(candidates), pending)
        if result is not tensor:
            tensor.copy_(result)
    return tensor


def _no_grad_trunc_normal_(tensor, mean, std, a, b, generator=None):
    """PyTorch's private name for trunc_normal_'s body, which older layer code (timm's) imports."""
    return trunc_normal_(tensor, mean, std, a, b, generator=generator)


def orthogonal_(tensor, gain=1.0, generator=None):
    """Saxe et al. (2013): a (semi-)orthogonal matrix, from the QR decomposition of a
    Gaussian matrix with the signs of R's diagonal folded in; trailing dims flattened."""
    if tensor.ndim < 2:
        raise ValueError(f"Only tensors with 2 or more dimensions are supported, got {tuple(tensor.shape)}")
    if tensor.numel() == 0:  # nothing to fill (a zero-size layer), as PyTorch's no-op
        return tensor
    rows = tensor.shape[0]
    cols = tensor._data.size // rows
    flat = rng(generator).normal(0.0, 1.0, (rows, cols), dtype=tensor._data.dtype)  # (in its dtype, as PyTorch's)
    if rows < cols:
        flat = flat.T
    q, r = numpy.linalg.qr(flat)
    q = q * numpy.sign(numpy.diag(r))
    if rows < cols:
        q = q.T
    return _fill(tensor, (gain * q).reshape(tensor.shape))


def _deprecated(method):
    """The name without the trailing underscore, which PyTorch's 0.4 renamed (it still warns and works)."""
    old = method.__name__[:-1]

    def deprecated(*args, **kwargs):
        warnings.warn(f"`nn.init.{old}` is now deprecated in favor of `nn.init.{method.__name__}`.",
                      FutureWarning, stacklevel=program_stacklevel())
        return method(*args, **kwargs)

    deprecated.__name__ = deprecated.__qualname__ = old
    deprecated.__doc__ = f"{old}(...) is {method.__name__}(...), with a FutureWarning (PyTorch's deprecated name)."
    return deprecated


uniform = _deprecated(uniform_)
normal = _deprecated(normal_)
constant = _deprecated(constant_)
eye = _deprecated(eye_)
dirac = _deprecated(dirac_)
xavier_uniform = _deprecated(xavier_uniform_)
xavier_normal = _deprecated(xavier_normal_)
kaiming_uniform = _deprecated(kaiming_uniform_)
kaiming_normal = _deprecated(kaiming_normal_)
orthogonal = _deprecated(orthogonal_)
sparse = _deprecated(sparse_)
