"""nn.PixelShuffle / PixelUnshuffle and their functions: the block layout by hand, the inverse,
gradients by finite differences, and PyTorch's values, gradients and errors."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from tests.ops_reference import compare, raises_like


def test_channels_become_blocks_of_pixels():
    x = autograd.tensor(np.arange(8.0).reshape(1, 8, 1, 1))  # two output channels of 2 × 2 blocks
    y = nn.PixelShuffle(2)(x)
    assert y.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(y.numpy()[0], [[[0, 1], [2, 3]], [[4, 5], [6, 7]]])
    np.testing.assert_array_equal(nn.PixelUnshuffle(2)(y).numpy(), x.numpy())
    assert repr(nn.PixelShuffle(3)) == "PixelShuffle(upscale_factor=3)"


def test_gradients_and_errors():
    x = autograd.tensor(np.random.default_rng(0).standard_normal((2, 9, 2, 3)), requires_grad=True)
    assert autograd.gradcheck(lambda t: F.pixel_shuffle(t, 3), (x,))
    ones = autograd.tensor(np.ones((1, 4, 2)), requires_grad=True)
    assert autograd.gradcheck(lambda t: F.pixel_unshuffle(t, 2), (ones,))
    with pytest.raises(RuntimeError, match="divisible by the square"):
        F.pixel_shuffle(autograd.zeros(1, 5, 2, 2), 2)
    with pytest.raises(RuntimeError, match="at least 3 dimensions"):
        F.pixel_unshuffle(autograd.zeros(4, 4), 2)


@pytest.mark.torch
@pytest.mark.parametrize("shape, factor", [((1, 8, 3, 2), 2), ((2, 3, 9, 2, 4), 3), ((18, 2, 2), 3)])
def test_matches_pytorch(shape, factor):
    values = np.random.default_rng(1).standard_normal(shape)
    compare(lambda m, x: m.nn.functional.pixel_shuffle(x, factor) if m is not autograd else F.pixel_shuffle(x, factor),
            values)
    shuffled = values.reshape(*shape[:-3], shape[-3] // factor**2, shape[-2] * factor, shape[-1] * factor)
    compare(lambda m, x: m.nn.functional.pixel_unshuffle(x, factor) if m is not autograd
            else F.pixel_unshuffle(x, factor), shuffled)
    raises_like(lambda m, x: m.nn.functional.pixel_shuffle(x, 2) if m is not autograd else F.pixel_shuffle(x, 2),
                np.zeros((1, 5, 2, 2)))
