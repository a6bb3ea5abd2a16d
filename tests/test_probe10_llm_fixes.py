"""Fixes found by the language-model programs (tests/test_programs_probe10_llm.py), each checked on
chainrule and on PyTorch (the ``T`` fixture)."""

import warnings

import numpy as np


def test_softmax_of_rows_masked_with_finfo_min_is_uniform_and_silent(T):
    """Hugging Face masks with finfo(dtype).min: a row masked throughout is uniform, and the maxima that
    sum past the float range must not make NumPy warn of an overflow."""
    for dtype in (T.float32, T.float64):
        x = T.full((4, 3), T.finfo(dtype).min, dtype=dtype)
        x[0, 1] = 2.0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = T.softmax(x, dim=-1)
            lse = T.logsumexp(x, dim=-1)
        np.testing.assert_allclose(y.numpy(), [[0, 1, 0]] + [[1 / 3] * 3] * 3, rtol=1e-6)
        np.testing.assert_allclose(lse.numpy(), [2.0] + [float(T.finfo(dtype).min)] * 3, rtol=1e-6)
