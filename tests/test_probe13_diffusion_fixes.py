"""Fixes found by tests/test_programs_probe13_diffusion.py, each checked on chainrule and PyTorch (`T`)."""

import numpy as np
import pytest


@pytest.mark.parametrize("count", [16, 48])
@pytest.mark.parametrize("loc, scale", [(0.0, 1.0), (1.5, 2.0)])
def test_float16_normals_are_float32_normals_rounded(T, count, loc, scale):
    """PyTorch draws float16 normals (16 or more) from float32 uniforms in float32 and rounds only the normals:
    a whole number of blocks gives float32's normals, rounded (rounding the uniforms first moved about half of
    them by an ulp)."""
    half = T.empty(count, dtype=T.float16).normal_(loc, scale, generator=T.Generator().manual_seed(3))
    single = T.empty(count, dtype=T.float32).normal_(loc, scale, generator=T.Generator().manual_seed(3))
    np.testing.assert_array_equal(half.numpy(), single.numpy().astype(np.float16))
    drawn = T.randn(count, dtype=T.float16, generator=T.Generator().manual_seed(5)).numpy()
    expected = T.randn(count, generator=T.Generator().manual_seed(5)).numpy().astype(np.float16)
    np.testing.assert_array_equal(drawn, expected)


@pytest.mark.torch
def test_float16_normals_with_a_partial_block_are_pytorchs():
    import torch

    import autograd

    for count in (17, 40, 1000):
        ours = autograd.randn(count, dtype=autograd.float16, generator=autograd.Generator().manual_seed(3))
        theirs = torch.randn(count, dtype=torch.float16, generator=torch.Generator().manual_seed(3))
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
