"""Fixes found by tests/test_programs_probe12_classic.py, each checked on chainrule and on PyTorch (the ``T``
fixture) against the same expectation."""

import numpy as np
import pytest


@pytest.mark.parametrize("dtype", ["float64", "float32", "float16"])
def test_bernoulli_of_a_tensor_draws_a_uniform_of_its_dtype(T, dtype):
    """PyTorch's kernel compares each probability of a float64 tensor with a float64 uniform (53 bits of the
    stream), of any other dtype with a float32 one: the draws are those of rand in that dtype."""
    p = T.tensor(np.linspace(0.05, 0.95, 12), dtype=getattr(T, dtype))
    uniform = T.float64 if dtype == "float64" else T.float32
    for draw in (lambda: T.bernoulli(p), lambda: T.empty(12, dtype=T.float64).bernoulli_(p),
                 lambda: T.distributions.Bernoulli(probs=p).sample()):
        T.manual_seed(0)
        drawn = draw()
        after = T.rand(3)
        T.manual_seed(0)
        expected = (T.rand(12, dtype=uniform) < p.to(uniform)).to(drawn.dtype)
        assert T.equal(drawn, expected)
        assert T.equal(after, T.rand(3))  # the stream moved on by as much

