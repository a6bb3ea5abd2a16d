"""The activations PyTorch offers on tensors and at the top level (``x.hardshrink()``,
``x.prelu(w)``, ``autograd.threshold``), composed of ``where``: the gradient goes to the
branch each element takes. ``nn.functional`` uses these (arrows point down)."""

from .elementwise import where
from .names import names


@names("hardshrink")
def hardshrink(input, lambd=0.5):
    """y = x where |x| > λ, else 0."""
    return where((input > lambd) | (input < -lambd), input, 0.0)


@names("threshold", method=False)
def threshold(input, threshold, value):
    """y = x where x > threshold, else value."""
    return where(input > threshold, input, value)


@names("threshold_", method=False)
def threshold_(input, threshold_value, value):
    """threshold written into input (recorded, as every in-place write)."""
    return input._write_back(threshold, (threshold_value, value), {})


@names("prelu")
def prelu(input, weight):
    """y = x for x > 0, a·x otherwise, with a learned ``weight`` a: one slope, or one per
    channel (dim 1 of the input)."""
    if weight.ndim != 1 and weight.numel() != 1:
        raise RuntimeError(f"prelu: weight must be 1-dimensional, got shape {weight.shape}")
    slopes = weight
    if weight.numel() != 1:
        channels = input.shape[1] if input.ndim >= 2 else input.shape[0] if input.ndim == 1 else 1
        if weight.numel() != channels:
            raise RuntimeError(f"Mismatch of parameter numbers and input channel size. Found parameter "
                               f"numbers = {weight.numel()} and channel size = {channels}.")
        if input.ndim >= 2:
            slopes = weight.reshape((1, channels) + (1,) * (input.ndim - 2))
    return where(input > 0, input, input * slopes)
