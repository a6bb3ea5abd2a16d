"""Running sums and products, prod, and the sorting family: gradients against finite
differences (float64, drawn shapes, zeros included for products), and values, gradients,
dtypes and errors against PyTorch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from tests.ops_reference import compare, raises_like
from tests.test_ops import _run, arrays, distinct_values, leaf, with_dim


@st.composite
def with_zeros(draw, min_dims=1, bound=2.0):
    """x holding some exact zeros (where products need their exact gradient), and a dim."""
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=4))
    x = draw(arrays(shape, -bound, bound))
    zeros = draw(hnp.arrays(bool, shape, elements=st.booleans()))
    dim = draw(st.integers(-len(shape), len(shape) - 1)) if shape else 0
    x = np.where(np.abs(x) < 1e-100, 0.0, x)  # products of subnormals underflow (in PyTorch too)
    return [leaf(np.where(zeros, 0.0, x))], dim


@st.composite
def distinct_with_dim(draw):
    [x] = draw(distinct_values())
    return [x], draw(st.integers(-x.ndim, x.ndim - 1))


CASES = {
    "CumSum": (with_dim(), lambda x, dim: x.cumsum(dim) * x),
    "CumProd": (with_zeros(), lambda x, dim: x.cumprod(dim)),
    "Prod": (with_zeros(min_dims=0), lambda x, dim: x.prod() + x.prod(dim if x.ndim else 0).sum()
             + x.prod(dim if x.ndim else -1, keepdim=True).sum()),  # (a 0-d tensor's dims: 0 and -1, as PyTorch's)
    "LogCumSumExp": (with_dim(), lambda x, dim: x.logcumsumexp(dim) * x),
    # logcumsumexp's derivative, its dL/dy (here cos x) differentiated too, so every input of it is
    "ExpWeightedRunningSum": (with_dim(), lambda x, dim: autograd.autograd.grad(
        (x.logcumsumexp(dim) * x.cos()).sum(), x, create_graph=True)[0]),
}

COMPOSITES = {
    "cummax": (distinct_with_dim(), lambda x, dim: x.cummax(dim).values * x),
    "cummin": (distinct_with_dim(), lambda x, dim: autograd.cummin(x, dim).values),
    "sort": (distinct_with_dim(), lambda x, dim: x.sort(dim, descending=True).values.cumsum(dim)),
    "topk": (distinct_with_dim(), lambda x, dim: x.topk(min(2, x.shape[dim]), dim).values.exp()),
    "kthvalue": (distinct_with_dim(), lambda x, dim: x.kthvalue(1, dim).values),
    "median": (distinct_with_dim(), lambda x, dim: x.median(dim, keepdim=True).values * 3 + x.median()),
    "msort": (distinct_values(), lambda x: x.msort()),
}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(COMPOSITES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run({**CASES, **COMPOSITES}[name], data)
    assert autograd.gradcheck(fn, tensors)


# zeros included: a gradient that is 0 after a zero still changes with that zero
SECOND_ORDER = {**CASES, "CumProd": (with_zeros(bound=1.2), CASES["CumProd"][1]),
                # (a product of 48 factors up to 2 reaches 1e14: finite differences of its gradient are
                # then rounding noise; factors up to 1.2 keep it near 1e4)
                "Prod": (with_zeros(min_dims=0, bound=1.2), CASES["Prod"][1])}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
@given(data=st.data())
def test_second_derivatives_match_finite_differences(name, data):
    tensors, fn, *_ = _run(SECOND_ORDER[name], data)
    assert autograd.gradgradcheck(fn, tensors)


@pytest.mark.parametrize("values", [[6.1735e-19], [6.1735e-19, 0.5], [1e-9, 2.0, -3.0]])
def test_prod_second_derivative_is_exact_for_small_factors(values):
    """y / x_k's second derivative cancels two terms of size 1/x_k: small factors take the
    running products instead (found by hypothesis: the engine said -64 where the answer is 0)."""
    x = autograd.tensor(np.array(values), requires_grad=True)
    assert autograd.gradgradcheck(lambda x: x.prod(0), [x])


@pytest.mark.parametrize("small", [1.2521e-92, 1e-9])
def test_cumprod_second_derivative_is_exact_for_small_factors(small):
    """As prod's (found by hypothesis: the engine said 3.6e75 where the answer is 0). For x = (a, b),
    Σ cumprod(x) = a + ab has gradient (1 + b, a), so d/dx of 0.9 · Σ 1.7 · gradient is 1.53 · (1, 1);
    y / x_k at a tiny a cancelled two terms of size 1/a."""
    x = autograd.tensor([small, 0.5], dtype=autograd.float64, requires_grad=True)
    g = autograd.autograd.grad(1.7 * x.cumprod(0).sum(), x, create_graph=True)[0]
    np.testing.assert_allclose(g.detach().numpy(), [1.7 * 1.5, 1.7 * small], rtol=1e-12)
    h = autograd.autograd.grad(0.9 * g.sum(), x)[0]
    np.testing.assert_allclose(h.numpy(), [1.53, 1.53], rtol=1e-12)


def _derivatives(f, x, order):
    """f(x), f'(x), ... f⁽ᵒʳᵈᵉʳ⁾(x) elementwise, by repeated autograd.grad of sums."""
    out = [f(x)]
    for _ in range(order):
        out.append(autograd.autograd.grad(out[-1].sum(), x, create_graph=True)[0])
    return [o.detach().numpy() for o in out]


def test_higher_derivatives_of_products_through_zeros_are_exact():
    """x·(x+1)·x² = x⁴ + x³ at x = 0 (two zero factors): its fourth derivative is 24 there as
    everywhere; and the Hessian of Σ cumprod(x) at a point holding zeros is symmetric (it once lost
    the rows after the first zero)."""
    x = autograd.tensor(np.linspace(-1.0, 1.0, 5), requires_grad=True)  # 0 in the middle
    d = _derivatives(lambda x: autograd.stack([x, x + 1, x * x], 1).prod(1), x, 4)
    np.testing.assert_allclose(d[4], 24.0)
    np.testing.assert_allclose(d[3], 24 * x.detach().numpy() + 6)
    z = autograd.tensor([2.0, 0.0, 3.0, 0.0, 5.0], dtype=autograd.float64, requires_grad=True)
    g = autograd.autograd.grad(z.cumprod(0).sum(), z, create_graph=True)[0]
    hessian = np.stack([autograd.autograd.grad(g[k], z, retain_graph=True)[0].numpy() for k in range(5)])
    # Σ_i Π_{j≤i} z_j = z0 + z0 z1 + z0 z1 z2 + z0 z1 z2 z3 + z0 z1 z2 z3 z4, at (2, 0, 3, 0, 5)
    expected = np.zeros((5, 5))
    expected[0, 1] = expected[1, 0] = 1 + 3  # 1 + z2 (+ z2 z3 + ...: 0)
    expected[1, 2] = expected[2, 1] = 2  # z0 (+ z0 z3 ...: 0)
    expected[1, 3] = expected[3, 1] = 2 * 3 * (1 + 5)  # z0 z2 (1 + z4)
    np.testing.assert_allclose(hessian, expected)


def test_higher_derivatives_of_products_against_pytorch():
    torch = pytest.importorskip("torch")
    values = np.array([[2.0, 0.0, 3.0, 0.0, 5.0], [0.0, 0.0, 1.5, -2.0, 0.5]])
    ours = autograd.tensor(values, requires_grad=True)
    theirs = torch.tensor(values, requires_grad=True)
    for f in (lambda m, x: m.cumprod(x, 1), lambda m, x: m.cumprod(x, 0) * x, lambda m, x: x.prod(1),
              lambda m, x: (x * x).prod(0)):
        expected = [f(torch, theirs)]
        for _ in range(3):
            expected.append(torch.autograd.grad(expected[-1].sum(), theirs, create_graph=True)[0])
        for a, b in zip(_derivatives(lambda x, f=f: f(autograd, x), ours, 3), expected):
            np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-12, atol=1e-12)


def test_log1p_style_precision_of_cumprod_gradient_with_several_zeros():
    x = autograd.tensor([2.0, 0.0, 3.0, 0.0, 5.0], dtype=np.float64, requires_grad=True)
    x.cumprod(0).sum().backward()
    # d/dx_1 of Σ_i Π_{j≤i} x_j: terms i ≥ 1 without x_1, stopping at the next zero: 2 + 2·3 = 8
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 8.0, 0.0, 0.0, 0.0])
    y = autograd.tensor([2.0, 0.0, 3.0], dtype=np.float64, requires_grad=True)
    y.prod().backward()
    np.testing.assert_array_equal(y.grad.numpy(), [0.0, 6.0, 0.0])


rng = np.random.default_rng(0)
X = rng.permutation(24).reshape(2, 3, 4) * 0.5 - 5.0  # distinct values: no ties to break
Z = np.where(rng.random((3, 4)) < 0.3, 0.0, rng.standard_normal((3, 4)))
INTS = rng.integers(0, 3, (3, 5))
NANS = np.array([[3.0, np.nan, 1.0, 2.0], [1.0, 2.0, 3.0, 4.0]])
SORTED = np.sort(rng.standard_normal((3, 5)), -1)
WIDE = rng.standard_normal((4, 50))  # topk of a few among many takes the partition path

TORCH_CASES = {
    "cumsum": (lambda m, x: x.cumsum(1), X),
    "cumsum_function_dtype": (lambda m, x: m.cumsum(x, dim=-1, dtype=m.float64), INTS),
    "cumsum_ints": (lambda m, x: m.cumsum(x, 0), INTS),
    "cumsum_bools": (lambda m, x: (x > 1).cumsum(1), INTS),
    "cumprod_zeros": (lambda m, x: x.cumprod(1), Z),
    "cumprod_dim0": (lambda m, x: m.cumprod(x, 0), Z),
    "prod": (lambda m, x: x.prod(), Z),
    "prod_dim": (lambda m, x: x.prod(1), Z),
    "prod_keepdim": (lambda m, x: m.prod(x, 0, keepdim=True), Z),
    "prod_ints": (lambda m, x: x.prod(1), INTS),
    "prod_bools": (lambda m, x: (x > 0).prod(), INTS),
    "cummax": (lambda m, x: x.cummax(2), X),
    "cummin": (lambda m, x: m.cummin(x, 0), X),
    "cummax_ties": (lambda m, x: m.cummax(x, 1), INTS),
    "logcumsumexp": (lambda m, x: x.logcumsumexp(1), X),
    "logcumsumexp_extremes": (lambda m, x: m.logcumsumexp(x * 300, 0), X),
    "sort": (lambda m, x: x.sort(), X),
    "sort_dim_descending": (lambda m, x: m.sort(x, 1, descending=True), X),
    "sort_stable_ties": (lambda m, x: m.sort(x, dim=1, stable=True), INTS),
    "sort_stable_ties_descending": (lambda m, x: x.sort(dim=1, descending=True, stable=True), INTS),
    "sort_nan": (lambda m, x: x.sort(1), NANS),
    "sort_nan_descending": (lambda m, x: x.sort(1, descending=True), NANS),
    "argsort": (lambda m, x: x.argsort(0), X),
    "argsort_descending": (lambda m, x: m.argsort(x, dim=-1, descending=True), X),
    "msort": (lambda m, x: m.msort(x), X),
    "topk": (lambda m, x: x.topk(2), X),
    "topk_smallest": (lambda m, x: m.topk(x, 2, dim=1, largest=False), X),
    "topk_zero": (lambda m, x: x.topk(0), X),
    "kthvalue": (lambda m, x: x.kthvalue(2, 1), X),
    "kthvalue_keepdim": (lambda m, x: m.kthvalue(x, 2, 0, keepdim=True), X),
    "median": (lambda m, x: x.median(), X),
    "median_dim": (lambda m, x: x.median(2), X),
    "median_keepdim": (lambda m, x: m.median(x, 1, keepdim=True), X),
    "median_nan": (lambda m, x: x.median(1).values, NANS),
    "median_nan_all": (lambda m, x: x.median(), NANS),
    "nanmedian": (lambda m, x: x.nanmedian(1), NANS),
    "nanmedian_all": (lambda m, x: m.nanmedian(x), NANS),
    "mode": (lambda m, x: x.mode(1), INTS),
    "mode_dim0": (lambda m, x: m.mode(x, 0), INTS),
    "unique": (lambda m, x: x.unique(), INTS),
    "unique_inverse_counts": (lambda m, x: m.unique(x, return_inverse=True, return_counts=True), INTS),
    "unique_dim": (lambda m, x: m.unique(x, dim=1, return_inverse=True, return_counts=True), INTS),
    "unique_floats": (lambda m, x: m.unique(x.detach().round()), X),
    "unique_consecutive": (lambda m, x: m.unique_consecutive(x, return_inverse=True, return_counts=True), INTS),
    "unique_consecutive_dim": (lambda m, x: m.unique_consecutive(x, return_counts=True, dim=0),
                               np.array([[1, 2], [1, 2], [3, 4], [1, 2]])),
    "diff": (lambda m, x: x.diff(), X),
    "diff_n_dim": (lambda m, x: m.diff(x, n=2, dim=1), X),
    "diff_prepend_append": (lambda m, x: m.diff(x, dim=0, prepend=x[:1], append=x), X),
    "diff_ints": (lambda m, x: m.diff(x), INTS),
    "diff_bools": (lambda m, x: (x > 0).diff(), INTS),
    "searchsorted": (lambda m, s, x: m.searchsorted(s[0], x), SORTED, X),
    "searchsorted_batched_right": (lambda m, s, x: m.searchsorted(s, x[0, :, :2].contiguous(), right=True),
                                   SORTED, X),
    "searchsorted_side_int32": (lambda m, s, x: m.searchsorted(s[0], x, side="right", out_int32=True), SORTED, X),
    "bucketize": (lambda m, s, x: m.bucketize(x, s[0]), SORTED, X),
    "bucketize_right": (lambda m, s, x: m.bucketize(x, s[1], right=True), SORTED, X),
    "topk_few_of_many": (lambda m, x: x.topk(3, dim=-1), WIDE),
    "topk_few_of_many_smallest_dim0": (lambda m, x: m.topk(x.T, 2, dim=0, largest=False), WIDE),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name):
    fn, *inputs = TORCH_CASES[name]
    compare(fn, *inputs)


ERRORS = {
    "cumsum_dim": (lambda m, x: x.cumsum(3), "Dimension out of range"),
    "topk_too_many": (lambda m, x: x.topk(5), "k out of range"),
    "kthvalue_too_large": (lambda m, x: x.kthvalue(5), "k out of range"),
    "sort_dim": (lambda m, x: x.sort(-4), "Dimension out of range"),
    "prod_dim": (lambda m, x: x.prod(3), "Dimension out of range"),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_match_torch(name):
    fn, message = ERRORS[name]
    assert message in str(raises_like(fn, X))
