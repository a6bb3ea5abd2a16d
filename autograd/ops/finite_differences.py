"""``autograd.gradient``: the derivative of sampled values, by finite differences (``torch.gradient``,
``numpy.gradient``).

Inside, the second-order central difference; for samples at x_{i-1}, x_i, x_{i+1} with gaps
h₋ = x_i - x_{i-1} and h₊ = x_{i+1} - x_i,

    f'(x_i) ≈ (h₋² f_{i+1} - h₊² f_{i-1} + (h₊² - h₋²) f_i) / (h₋ h₊ (h₋ + h₊)),

which is (f_{i+1} - f_{i-1}) / 2h for even spacing. At the two ends, one-sided differences:
(f_1 - f_0) / h₀ with ``edge_order=1``, or the second-order three-point formula
(-3 f_0 + 4 f_1 - f_2) / 2h (its uneven-gap form) with ``edge_order=2``.

Composed of slicing and arithmetic, so it is differentiable in the samples (and in the
coordinates, when they are tensors that require grad).
"""

import numbers

import numpy

from ..errors import refuse_bool_subtraction
from ..tensor import Tensor
from .axes import dim_index, normalize_dims
from .elementwise import floating
from .joins import cat
from .names import names


def _along(x, dim, start, stop):
    """x[..., start:stop, ...] with the slice on ``dim``."""
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, stop)
    return x[tuple(index)]


def _on_axis(values, dim, ndim):
    """A 1-d tensor of gaps shaped to broadcast along ``dim`` of an ndim-d tensor."""
    shape = [1] * ndim
    shape[dim] = -1
    return values.reshape(shape)


def _uniform(f, dim, h, edge_order):
    """∂f along ``dim`` for samples h apart."""
    first, second, before, last = (_along(f, dim, a, b) for a, b in ((0, 1), (1, 2), (-2, -1), (-1, None)))
    inside = (_along(f, dim, 2, None) - _along(f, dim, 0, -2)) / (2 * h)
    if edge_order == 1:
        start, end = (second - first) / h, (last - before) / h
    else:
        third, third_last = _along(f, dim, 2, 3), _along(f, dim, -3, -2)
        start = (first * -1.5 + second * 2.0 - third * 0.5) / h
        end = (third_last * 0.5 - before * 2.0 + last * 1.5) / h
    return cat([start, inside, end], dim)


def _coordinates(f, dim, x, edge_order):
    """∂f along ``dim`` for samples at the coordinates x (a 1-d tensor)."""
    gaps = x[1:] - x[:-1]
    left, right = (_on_axis(g, dim, f.ndim) for g in (gaps[:-1], gaps[1:]))
    inside = (_along(f, dim, 0, -2) * (-right / (left * (left + right)))
              + _along(f, dim, 1, -1) * ((right - left) / (left * right))
              + _along(f, dim, 2, None) * (left / (right * (left + right))))
    f0, f1, last, before = (_along(f, dim, 0, 1), _along(f, dim, 1, 2), _along(f, dim, -1, None),
                            _along(f, dim, -2, -1))
    if edge_order == 1:
        start, end = (f1 - f0) / gaps[0], (last - before) / gaps[-1]
    else:
        h1, h2 = gaps[0], gaps[1]
        start = (f0 * (-(h1 * 2.0 + h2) / (h1 * (h1 + h2))) + f1 * ((h1 + h2) / (h1 * h2))
                 + _along(f, dim, 2, 3) * (-h1 / (h2 * (h1 + h2))))
        h1, h2 = gaps[-2], gaps[-1]
        end = (_along(f, dim, -3, -2) * (h2 / (h1 * (h1 + h2))) + before * (-(h2 + h1) / (h1 * h2))
               + last * ((h2 * 2.0 + h1) / (h2 * (h1 + h2))))
    return cat([start, inside, end], dim)


def _is_scalar(value):
    return isinstance(value, numbers.Number) or (isinstance(value, Tensor) and value.ndim == 0)


@names("gradient", method=False)
def gradient(input, *, spacing=None, dim=None, edge_order=1):
    """∂input/∂x_d for each dim d (every dim, or ``dim``: an int or a list), by central differences
    inside and one-sided ones (first or second order, ``edge_order``) at the ends; a tuple of
    tensors shaped as ``input``. ``spacing``: one number for every dim, a list of numbers (one
    per dim), or a list of 1-d tensors: the coordinates of the samples along each dim; 1 when left
    out (None)."""
    if spacing is None:
        spacing = 1
    if edge_order not in (1, 2):
        raise RuntimeError("torch.gradient only supports edge_order=1 and edge_order=2.")
    if input.dtype == numpy.uint8:  # (PyTorch's differences are taken in the input's dtype: uint8's would wrap)
        raise RuntimeError("torch.gradient does not support uint8 input.")
    is_bool = input.dtype == numpy.bool_
    refuse_bool_subtraction(is_bool, is_bool)  # (its differences are subtractions)
    f = floating(input)
    if dim is None:
        dims = list(range(f.ndim))
    else:
        dims = [dim] if isinstance(dim, int) else list(dim)
        normalize_dims(tuple(dims), f.ndim)  # (PyTorch's errors for a repeated or out-of-range dim)
        dims = [dim_index(d, f.ndim) for d in dims]
    if _is_scalar(spacing):
        spacing = [spacing.item() if isinstance(spacing, Tensor) else spacing] * len(dims)
    else:
        spacing = list(spacing)
        if len(spacing) != len(dims):
            if dim is None:
                raise RuntimeError(f"torch.gradient expected spacing to be unspecified, a scalar, or a list of length "
                                   f"equal to 'self.dim() = {f.ndim}', since dim argument was not given, but got a "
                                   f"list of length {len(spacing)}")
            raise RuntimeError(f"torch.gradient expected spacing to be unspecified, a scalar or it's spacing and dim "
                               f"arguments to have the same length, but got a spacing argument of length "
                               f"{len(spacing)} and a dim argument of length {len(dims)}.")
    for d in dims:
        if f.shape[d] < edge_order + 1:
            raise RuntimeError("torch.gradient expected each dimension size to be at least edge_order+1")
    results = []
    for d, step in zip(dims, spacing):
        if isinstance(step, Tensor):  # (in a list: the coordinates along d)
            if step.ndim != 1:
                raise RuntimeError(f"torch.gradient expected each element of spacing to have one dimension, but "
                                   f"got an element with {step.ndim} dimensions!")
            if step.shape[0] != f.shape[d]:
                raise RuntimeError(f"torch.gradient expected {f.shape[d]} coordinates along dim {d} (its size), "
                                   f"but got {step.shape[0]}")
            results.append(_coordinates(f, d, floating(step).to(f.dtype), edge_order))
        else:
            results.append(_uniform(f, d, step, edge_order))
    return tuple(results)
