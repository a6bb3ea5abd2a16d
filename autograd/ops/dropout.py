"""Dropout: the maths behind ``nn.functional``'s dropouts and PyTorch's top-level spellings
``autograd.dropout(input, p, train)``, ``alpha_dropout``, ``feature_dropout`` and
``feature_alpha_dropout`` (``train`` positional and required, as in PyTorch), and their in-place
twins ``dropout_``, ... .

Inverted dropout zeroes each unit with probability p and scales the rest by 1/(1 - p), so that
E[y] = x; feature dropout draws once per (sample, channel) and zeroes whole channels. Alpha
dropout keeps SELU's zero mean and unit variance (Klambauer et al., 2017): a dropped unit is
set to α' = -λα (SELU's negative saturation), then the output is mapped by a·y + b with
a = ((1 - p)(1 + p α'²))^(-1/2), b = -a α' p.
"""

import math

from .. import random
from ..backend import xp
from ..tensor import tensor_from
from .conversion import type_name
from .layouts import laid_out
from .names import names


def check_dropout_probability(p, error=ValueError):
    """The check (and message) of every dropout, function and layer: p in [0, 1] (nn's raise
    ValueError, PyTorch's top-level functions RuntimeError). A NaN passes nn's check (p < 0 or p > 1) to meet the
    kernel's (0 <= p <= 1), whose error is a RuntimeError."""
    if math.isnan(p):
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not 0 <= p <= 1:
        raise error(f"dropout probability has to be between 0 and 1, but got {p}")


def check_real_floating(dtype):
    """A draw scaled by 1/(1 - p) (or alpha dropout's affine map) has no integer or complex result: PyTorch
    refuses them rather than rounding the scale (1/0.7 would become 1 in an int64 tensor)."""
    if dtype.kind == "c":
        raise NotImplementedError(f'"bernoulli_scalar_cpu_" not implemented for \'{type_name(dtype)}\'')
    if dtype.kind != "f":
        raise RuntimeError(f"result type Float can't be cast to the desired output type {type_name(dtype)}")


def keep_mask(shape, p, dtype, like=None):
    """Bernoulli(1 - p) mask scaled by 1/(1 - p): inverted dropout keeps E[y] = x (p checked by the caller).
    ``like``: the input the mask is made like, as ``_keeps``."""
    if p == 1:
        return tensor_from(xp.zeros(shape, dtype=dtype))
    check_real_floating(dtype)
    # PyTorch's: noise.bernoulli_(1 - p), then noise.div_(1 - p) in the dtype: each kept unit 1 / (1 - p) rounded
    # once, as this scalar division rounds it, then written in one pass (bool to dtype, times the scale)
    dtype = xp.dtype(dtype)
    scale = dtype.type(1) / dtype.type(1 - p)
    return tensor_from(xp.multiply(_keeps(shape, p, like), scale, dtype=dtype))


def _keeps(shape, p, like):
    """Which units stay: PyTorch's ``noise.bernoulli_(1 - p)``, a float64 uniform below 1 - p each, into a
    noise tensor made by ``empty_like(like)`` where ``like`` (the input) is given (so in its layout: a
    transposed input's draws go down its columns), else (one draw per channel) a row-major one."""
    keep = random.generator().bernoulli(shape, 1 - p)
    return keep if like is None else laid_out(keep, like, fresh=True)


def _like(input, shape):
    """The input a mask of ``shape`` is made like: the input itself, for one draw per element."""
    return input if tuple(shape) == tuple(input.shape) else None


def drop(input, p, shape):
    """Inverted dropout with one draw per element of ``shape`` (broadcast over the rest of the input)."""
    return input * keep_mask(shape, p, input.dtype, like=_like(input, shape))


def alpha_drop(input, p, shape):
    """Alpha dropout with one draw per element of ``shape`` (broadcast over the rest of the input)."""
    if p == 1:
        return input * 0.0
    check_real_floating(input.dtype)
    from .activations import SELU_ALPHA, SELU_SCALE  # (deferred: ops/deferred.py)

    saturation = SELU_ALPHA * SELU_SCALE
    keep = tensor_from(_keeps(shape, p, _like(input, shape)).astype(input.dtype))
    a = 1.0 / math.sqrt((saturation * saturation * p + 1) * (1 - p))
    shift = (keep - 1.0) * (saturation * a) + saturation * a * p
    return input * (keep * a) + shift


def feature_shape(input):
    """One draw per (sample, channel) of an (N, C, *) input: (N, C, 1, ...)."""
    if input.ndim < 2:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    return input.shape[:2] + (1,) * (input.ndim - 2)


def _by_position(name, apply, shape_of):
    def dropout(input, p, train):
        check_dropout_probability(p, RuntimeError)
        if not train or p == 0:
            return input  # (the input itself, as PyTorch's)
        return apply(input, p, shape_of(input))

    def dropout_(input, p, train):
        return input._write_back(dropout, (p, train), {})

    dropout.__name__ = dropout.__qualname__ = name
    dropout.__doc__ = (f"PyTorch's top-level ``{name}(input, p, train)`` (``train`` required; "
                       f"``nn.functional.{name if name != 'feature_dropout' else 'dropout2d'}`` has the defaults).")
    dropout_.__name__ = dropout_.__qualname__ = name + "_"
    dropout_.__doc__ = f"``{name}`` written into input (recorded, as every in-place write)."
    names(name + "_", method=False)(dropout_)
    return names(name, method=False)(dropout)


dropout = _by_position("dropout", drop, lambda input: input.shape)
alpha_dropout = _by_position("alpha_dropout", alpha_drop, lambda input: input.shape)
feature_dropout = _by_position("feature_dropout", drop, feature_shape)
feature_alpha_dropout = _by_position("feature_alpha_dropout", alpha_drop, feature_shape)
