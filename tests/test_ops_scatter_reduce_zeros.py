"""scatter_reduce / index_reduce with reduce='prod' differentiate exactly where terms are 0: each term's
gradient is the product of the other terms at its position (y / term is 0 / 0 there), and the ties
of 'amax' with include_self=False share the gradient among src's terms only."""

import numpy as np
import pytest

import autograd


def products_of_others(base, index, src, include_self):
    """NumPy by hand: y and, for every term, the product of the other terms at its position."""
    y = base.copy()
    grad_base = np.where(np.isin(np.arange(len(base)), index), 0.0, 1.0)
    grad_src = np.zeros(len(src))
    for p in range(len(base)):
        terms = ([base[p]] if include_self else []) + [src[j] for j in range(len(src)) if index[j] == p]
        if not any(index == p):
            continue
        y[p] = np.prod(terms)
        if include_self:
            grad_base[p] = np.prod(terms[1:])
        offset = 1 if include_self else 0
        members = [j for j in range(len(src)) if index[j] == p]
        for k, j in enumerate(members):
            grad_src[j] = np.prod(terms[:offset + k] + terms[offset + k + 1:])
    return y, grad_base, grad_src


@pytest.mark.parametrize("include_self", [True, False])
def test_prod_gradient_with_zero_terms_is_the_product_of_the_others(include_self):
    base = np.array([1.5, 0.0, 2.0, -1.0, 3.0])
    index = np.array([0, 0, 0, 1, 1, 2, 2, 2, 3])
    src = np.array([0.0, 2.0, 3.0, 4.0, 0.5, 0.0, 0.0, 5.0, -2.0])  # a lone zero (0), two zeros (2)
    x = autograd.tensor(base, requires_grad=True)
    s = autograd.tensor(src, requires_grad=True)
    out = x.scatter_reduce(0, autograd.tensor(index), s, "prod", include_self=include_self)
    out.sum().backward()
    y, grad_base, grad_src = products_of_others(base, index, src, include_self)
    np.testing.assert_array_equal(out.detach().numpy(), y)
    np.testing.assert_array_equal(x.grad.numpy(), grad_base)
    np.testing.assert_array_equal(s.grad.numpy(), grad_src)
    assert s.grad[0].item() == (9.0 if include_self else 6.0)  # the lone zero: 1.5 (self) · 2 · 3
    assert s.grad[5].item() == 0.0  # one of two zeros


def test_prod_gradients_and_second_derivatives_by_finite_differences():
    """float64 gradcheck and gradgradcheck where one term per position is 0, along dim 1 of a 2-D input,
    with a src larger than the index (its unused corner gets no gradient)."""
    index = autograd.tensor([[0, 0, 1], [2, 2, 2]])
    base = autograd.tensor([[0.0, 1.3, -0.7], [1.1, 0.9, 0.0]], dtype=autograd.float64, requires_grad=True)
    src = autograd.tensor([[0.0, 2.0, 0.5, 9.0], [1.5, 0.0, -1.2, 9.0], [3.0, 3.0, 3.0, 3.0]],
                          dtype=autograd.float64, requires_grad=True)
    for include_self in (True, False):
        def f(b, s, include_self=include_self):
            return b.scatter_reduce(1, index, s, "prod", include_self=include_self)

        assert autograd.gradcheck(f, (base, src))
        assert autograd.gradgradcheck(f, (base, src))


def test_index_reduce_prod_with_a_zero():
    src = autograd.tensor([0.0, 2.0, 3.0, 4.0], dtype=autograd.float64, requires_grad=True)
    out = autograd.ones(2, dtype=autograd.float64).index_reduce(0, autograd.tensor([0, 0, 0, 1]), src, "prod")
    out.sum().backward()
    assert src.grad.tolist() == [6.0, 0.0, 0.0, 1.0]


def test_amax_ties_with_include_self_false_leave_self_out():
    src = autograd.tensor([1.0, 1.0, 0.5, 3.0], dtype=autograd.float64, requires_grad=True)
    base = autograd.tensor([1.0, 3.0], dtype=autograd.float64, requires_grad=True)
    index = autograd.tensor([0, 0, 0, 1])
    out = base.scatter_reduce(0, index, src, "amax", include_self=False)
    out.backward(autograd.tensor([10.0, 30.0], dtype=autograd.float64))
    assert src.grad.tolist() == [5.0, 5.0, 0.0, 30.0] and base.grad.tolist() == [0.0, 0.0]
    src.grad = base.grad = None
    out = base.scatter_reduce(0, index, src, "amax", include_self=True)
    out.backward(autograd.tensor([10.0, 30.0], dtype=autograd.float64))
    np.testing.assert_allclose(src.grad.numpy(), [10 / 3, 10 / 3, 0.0, 15.0])
    np.testing.assert_allclose(base.grad.numpy(), [10 / 3, 15.0])


@pytest.mark.parametrize("include_self", [True, False])
def test_prod_with_zeros_against_torch(include_self):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    index = rng.integers(0, 4, (3, 6))
    src = rng.standard_normal((3, 6)) * (rng.random((3, 6)) > 0.3)  # about a third of the terms are 0
    base = rng.standard_normal((5, 6)) * (rng.random((5, 6)) > 0.5)
    grad = rng.standard_normal((5, 6))
    results = []
    for lib in (autograd, torch):
        x = lib.tensor(base, requires_grad=True)
        s = lib.tensor(src, requires_grad=True)
        out = x.scatter_reduce(0, lib.tensor(index), s, "prod", include_self=include_self)
        out.backward(lib.tensor(grad))
        results.append([out.detach().numpy(), x.grad.numpy(), s.grad.numpy()])
    for ours, theirs in zip(*results):
        assert not np.isnan(ours).any()
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-14)
