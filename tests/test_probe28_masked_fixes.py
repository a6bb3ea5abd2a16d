"""Library fixes found while porting PyTorch's test_masked.py (session 28)."""

import pytest


def nan_beside(T, x):
    """A differentiable output and a NaN one (PyTorch's masked var of an empty slice, a var of one element)."""
    return T.stack([x.sum(), x.sum() * 0 + float("nan")])


@pytest.mark.filterwarnings(r"ignore:var\(\)")  # (degrees of freedom <= 0: the point)
@pytest.mark.parametrize("function", [nan_beside, lambda T, x: T.var(x[:1])])
def test_gradcheck_reads_a_nan_jacobian_entry_as_a_mismatch(T, function):
    """PyTorch compares the Jacobians with allclose (equal_nan=False): a NaN on either side fails. Ours measured
    |a - n| - tolerance > 0, which a NaN never is, so a function with NaN derivatives passed."""
    x = T.tensor([1.0, 2.0], dtype=T.float64, requires_grad=True)
    assert T.autograd.gradcheck(lambda x: function(T, x), (x,), raise_exception=False) is False
    with pytest.raises(RuntimeError, match="Jacobian mismatch for output 0 with respect to input 0"):
        T.autograd.gradcheck(lambda x: function(T, x), (x,))
    # finite and equal: still passes
    assert T.autograd.gradcheck(lambda x: (x * x).sum(), (x,))
