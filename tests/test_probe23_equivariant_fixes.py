"""The library bugs the equivariant and geometric graph programs found (tests/test_programs_probe23_equivariant_*.py),
each checked against literals or NumPy, and against PyTorch where it is installed.

- a norm's second derivative at a zero vector is NaN, as PyTorch's (its gradient there is 0 / 0 replaced by 0 after
  it is taken); F.normalize, cosine_similarity and pairwise_distance take their norm from linalg.vector_norm;
- atan2's gradient at (0, 0) is 0 (-0 for x), its second derivative there NaN, as PyTorch's;
- cdist (off its matrix-product path) and pdist give gradients PyTorch cannot differentiate again;
- scatter_reduce takes 'max' and 'min' (amax and amin, without a derivative), as PyTorch's kernel does.
"""

import math

import numpy as np
import pytest

import autograd
import nn.functional as F_ours


def torch_or_skip():
    return pytest.importorskip("torch")


def libraries():
    """chainrule's modules, and PyTorch's where installed."""
    found = [(autograd, F_ours)]
    try:
        import torch
        import torch.nn.functional as F_torch
    except ImportError:
        return found
    return [*found, (torch, F_torch)]


def second_derivative(lib, fn, values):
    x = lib.tensor(values, dtype=lib.float64, requires_grad=True)
    g = lib.autograd.grad(fn(x).sum(), x, create_graph=True)[0]
    weights = lib.arange(g.numel(), dtype=lib.float64).reshape(g.shape)
    gg = lib.autograd.grad((g * weights).sum(), x, allow_unused=True)[0]
    return g.detach().numpy(), gg.detach().numpy()


# ----------------------------------------------------------------------------------------------
# norms at a zero vector
# ----------------------------------------------------------------------------------------------

ROWS = [[0.0, 0.0, 0.0], [1.0, 0.0, 2.0]]


@pytest.mark.parametrize("p", [2, 0.5, -1.0, 1.5, 3])
def test_norm_second_derivative_at_a_zero_vector(p):
    results = [second_derivative(lib, lambda x, lib=lib: lib.linalg.vector_norm(x, ord=p, dim=-1), ROWS)
               for lib, _ in libraries()]
    g, gg = results[0]
    np.testing.assert_array_equal(g[0], 0.0)  # the gradient at the zero row is 0
    row = np.array(ROWS[1])
    with np.errstate(divide="ignore"):  # (p = -1: the zero element's |0|^-1 = inf makes the norm 0)
        norm = (np.abs(row) ** p).sum() ** (1 / p)
    if p > 0:  # the nonzero row's gradient, by hand: sgn(x) |x|^(p-1) / ‖x‖^(p-1) (0 where x = 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            expected = np.where(row != 0, np.sign(row) * np.abs(row) ** (p - 1) / norm ** (p - 1), 0.0)
        np.testing.assert_allclose(g[1], expected, rtol=1e-12)
    if p < 2.5:  # the zero row's second derivative is NaN, as PyTorch's (0 · inf)
        assert np.isnan(gg[0]).all()
    else:  # (p = 3: |x|^(p-1)'s derivative is finite at 0, and the gradient's 0 · finite: 0, as PyTorch's)
        assert np.isfinite(gg[0]).all()
    if p == 2:  # away from 0: the Hessian (I - u uᵀ) / ‖x‖ applied to the weights [3, 4, 5]
        u, w = row / norm, np.array([3.0, 4.0, 5.0])
        np.testing.assert_allclose(gg[1], (w - u * (u @ w)) / norm, rtol=1e-12)
    for theirs in results[1:]:
        for a, b in zip(results[0], theirs):
            np.testing.assert_allclose(a, b, rtol=1e-12, equal_nan=True)


@pytest.mark.parametrize("name", ["normalize", "cosine_similarity", "norm_method", "dense_pairs"])
def test_functions_of_a_norm_have_a_nan_second_derivative_at_zero(name):
    def fn(lib, F, x):
        if name == "normalize":
            return F.normalize(x, dim=-1) * lib.tensor([1.0, 2.0, 3.0], dtype=lib.float64)
        if name == "cosine_similarity":
            return F.cosine_similarity(x, lib.tensor([[1.0, 2, 3], [0, 0, 1]], dtype=lib.float64), dim=-1)
        if name == "norm_method":
            return x.norm(dim=-1)
        pairs = x[:, None] - x[None]  # every pair, i = j too: the zero distances on the diagonal
        return lib.exp(-pairs.norm(dim=-1)) * (1 - lib.eye(2, dtype=lib.float64))

    results = [second_derivative(lib, lambda x, lib=lib, F=F: fn(lib, F, x), ROWS) for lib, F in libraries()]
    g, gg = results[0]
    assert np.isfinite(g).all()
    assert np.isnan(gg[0]).all() if name != "dense_pairs" else np.isnan(gg).all()
    if name in ("normalize", "cosine_similarity", "norm_method"):
        assert np.isfinite(gg[1]).all()  # the nonzero row is untouched
    for theirs in results[1:]:
        for a, b in zip(results[0], theirs):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, equal_nan=True)


def test_normalize_values_and_gradients_are_unchanged():
    x = autograd.tensor([[3.0, 4.0], [0.0, 0.0]], requires_grad=True)
    y = F_ours.normalize(x, dim=1)
    y.backward(autograd.tensor([[1.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(y.detach().numpy(), [[0.6, 0.8], [0.0, 0.0]], rtol=1e-7)
    # (I - u uᵀ) / ‖x‖ [1, 0] = ([1, 0] - 0.6 [0.6, 0.8]) / 5; at the zero row 1 / eps
    np.testing.assert_allclose(x.grad.numpy(), [[0.128, -0.096], [1e12, 1e12]], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# atan2 at the origin
# ----------------------------------------------------------------------------------------------


def test_atan2_at_the_origin():
    for lib, _ in libraries():
        x = lib.tensor([0.0, 1.0, 0.0, 0.0], dtype=lib.float64, requires_grad=True)
        z = lib.atan2(x[:2], x[2:])  # (0, 0) and the point (0, 1)
        g = lib.autograd.grad(z.sum(), x, create_graph=True)[0]
        np.testing.assert_array_equal(g.detach().numpy(), [0.0, 0.0, 0.0, -1.0])
        gg = lib.autograd.grad(g.sum(), x)[0].numpy()
        assert np.isnan(gg[[0, 2]]).all()
        np.testing.assert_allclose(gg[[1, 3]], [1.0, 1.0])  # d/dy (x / (x² + y²)) + d/dy (-y / (x² + y²)) at (0, 1)
        # x's gradient -g y / (x² + y²) is -0 at the origin, as PyTorch's (-0 · 0)
        y = lib.zeros(2, requires_grad=True)
        other = lib.tensor([[0.0, 1.0], [2.0, 0.0]], requires_grad=True)
        lib.atan2(y, other).backward(lib.ones(2, 2))
        np.testing.assert_array_equal(y.grad.numpy(), [0.5, 1.0])
        assert np.signbit(other.grad.numpy()).all() and (other.grad.numpy() == 0).all()


def test_atan2_gradient_away_from_the_origin():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(5), rng.standard_normal(5)
    y, x = autograd.tensor(a, requires_grad=True), autograd.tensor(b, requires_grad=True)
    autograd.atan2(y, x).sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), b / (a * a + b * b), rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), -a / (a * a + b * b), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# cdist and pdist: gradients without a derivative of their own
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [2.0, 1.0, 0.0, 3.0, math.inf])
def test_cdist_and_pdist_gradients_have_no_derivative(p):
    points = np.array([[0.0, 1, 2], [1, 1, 1], [3, 0, 1]])
    others = np.array([[1.0, 0, 0], [2, 2, 2]])
    for lib, F in libraries():
        x = lib.tensor(points, requires_grad=True)
        y = lib.tensor(others, requires_grad=True)
        gx, gy = lib.autograd.grad(lib.cdist(x, y, p=p).sum(), (x, y), create_graph=True)
        assert gx.requires_grad
        np.testing.assert_allclose(gx.detach().numpy().sum(0), -gy.detach().numpy().sum(0), atol=1e-12)
        if p == 2.0:  # Σ_j (x_i - y_j) / ‖x_i - y_j‖, by NumPy
            diff = points[:, None] - others[None]
            expected = (diff / np.linalg.norm(diff, axis=-1, keepdims=True)).sum(1)
            np.testing.assert_allclose(gx.detach().numpy(), expected, rtol=1e-12)
        with pytest.raises(NotImplementedError, match="the derivative for '_cdist_backward' is not implemented."):
            lib.autograd.grad(gx.sum(), x)
        g = lib.autograd.grad(F.pdist(x, p=p).sum(), x, create_graph=True)[0]
        with pytest.raises(NotImplementedError, match="the derivative for '_pdist_backward' is not implemented."):
            lib.autograd.grad(g.sum(), x)


def test_cdist_gradient_once_is_unchanged_and_the_matrix_product_path_twice_differentiable():
    rng = np.random.default_rng(0)
    points = rng.standard_normal((30, 3))
    results = []
    for lib, _ in libraries():
        x = lib.tensor(points, requires_grad=True)
        y = lib.tensor(points[:5] + 0.1, requires_grad=True)
        gx = lib.autograd.grad(lib.cdist(x, y).pow(3).sum(), x, create_graph=True)[0]  # 30 rows: products
        hx, hy = lib.autograd.grad(gx.pow(2).sum(), (x, y))
        x2 = lib.tensor(points[:4], requires_grad=True)  # once through the differences' path: no graph kept
        lib.cdist(x2, y.detach()).sum().backward()
        results.append([hx.numpy(), hy.numpy(), x2.grad.numpy()])
    diff = points[:4, None] - (points[None, :5] + 0.1)
    expected = (diff / np.linalg.norm(diff, axis=-1, keepdims=True)).sum(1)
    np.testing.assert_allclose(results[0][2], expected, rtol=1e-12)
    assert np.isfinite(results[0][0]).all()
    for theirs in results[1:]:
        for a, b in zip(results[0], theirs):
            np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-9)


def test_cdist_gradient_without_create_graph_needs_no_derivative():
    x = autograd.tensor([[0.0, 0.0], [3.0, 4.0]], requires_grad=True)
    autograd.cdist(x, x).sum().backward()  # (the zero distances on the diagonal give 0)
    np.testing.assert_allclose(x.grad.numpy(), [[-1.2, -1.6], [1.2, 1.6]], rtol=1e-7)


# ----------------------------------------------------------------------------------------------
# scatter_reduce's 'max' and 'min'
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce_takes_max_and_min(include_self):
    base, src, index = [5.0, -1.0, 0.0], [1.0, 2.0, -3.0, 4.0], [0, 1, 1, 2]
    expected = {("max", True): [5.0, 2.0, 4.0], ("max", False): [1.0, 2.0, 4.0],
                ("min", True): [1.0, -3.0, 0.0], ("min", False): [1.0, -3.0, 4.0]}
    for lib, _ in libraries():
        for reduce in ("max", "min"):
            x, s, i = lib.tensor(base), lib.tensor(src), lib.tensor(index)
            y = x.scatter_reduce(0, i, s, reduce, include_self=include_self)
            np.testing.assert_array_equal(y.numpy(), expected[reduce, include_self])
            amax = x.scatter_reduce(0, i, s, "a" + reduce, include_self=include_self)
            np.testing.assert_array_equal(y.numpy(), amax.numpy())
            x.scatter_reduce_(0, i, s, reduce, include_self=include_self)
            np.testing.assert_array_equal(x.numpy(), expected[reduce, include_self])


def test_scatter_reduce_max_has_no_derivative_and_index_reduce_refuses_it():
    for lib, _ in libraries():
        x = lib.tensor([5.0, -1.0, 0.0], requires_grad=True)
        y = x.scatter_reduce(0, lib.tensor([0, 1, 1, 2]), lib.tensor([1.0, 2.0, -3.0, 4.0]), "max")
        assert y.requires_grad
        with pytest.raises(RuntimeError, match=r"Expected 'reduce' to be one of 'sum', 'prod', 'mean', 'amax', "
                                               r"'amin' but got max\."):
            y.sum().backward()
        with pytest.raises(RuntimeError, match="reduce argument must be either sum, prod, mean, amax or amin, got "
                                               "maximum"):
            x.detach().scatter_reduce(0, lib.tensor([0]), lib.tensor([1.0]), "maximum")
        with pytest.raises(RuntimeError, match="index_reduce.*Expected reduce to be one of prod, mean, amax or amin"):
            lib.zeros(3).index_reduce(0, lib.tensor([0]), lib.tensor([1.0]), "max")


# ----------------------------------------------------------------------------------------------
# index_add's alpha as a one-element tensor
# ----------------------------------------------------------------------------------------------


def test_index_add_takes_a_tensor_alpha_as_its_number():
    for lib, _ in libraries():
        x = lib.zeros(3, requires_grad=True)
        source = lib.ones(2, requires_grad=True)
        y = x.index_add(0, lib.tensor([0, 1]), source, alpha=lib.tensor(-3.0))
        y.sum().backward()
        np.testing.assert_array_equal(y.detach().numpy(), [-3.0, -3.0, 0.0])
        np.testing.assert_array_equal(source.grad.numpy(), [-3.0, -3.0])
        assert y.dtype == lib.float32
        counts = lib.zeros(3, dtype=lib.long).index_add_(0, lib.tensor([0, 0]), lib.ones(2, dtype=lib.long),
                                                         alpha=lib.tensor(2))
        np.testing.assert_array_equal(counts.numpy(), [4, 0, 0])
        assert counts.dtype == lib.long


def test_scatter_refuses_a_zero_dim_src_for_an_index_of_two():
    for lib, _ in libraries():
        for op in ("scatter", "scatter_add"):
            with pytest.raises(RuntimeError, match=r"Expected index \[2\] to be no larger than self \[3\] apart from "
                                                   r"dimension 0 and to be no larger size than src \[\]"):
                getattr(lib.zeros(3), op)(0, lib.tensor([0, 2]), lib.tensor(2.0))
        # a 0-d src fills an index of one element, 0-d or not
        np.testing.assert_array_equal(lib.zeros(3).scatter(0, lib.tensor([1]), lib.tensor(5.0)).numpy(), [0, 5, 0])
        np.testing.assert_array_equal(lib.zeros(3).scatter(0, lib.tensor(2), lib.tensor(5.0)).numpy(), [0, 0, 5])


@pytest.mark.parametrize("reduce", ["scatter", "scatter_add", "prod", "amax"])
def test_a_zero_dim_src_scattered_at_one_position_gets_a_zero_dim_gradient(reduce):
    for lib, _ in libraries():
        x = lib.zeros(3, requires_grad=True)
        src = lib.tensor(5.0, requires_grad=True)
        index = lib.tensor([1])
        if reduce in ("scatter", "scatter_add"):
            y = getattr(x, reduce)(0, index, src)
        else:
            y = x.scatter_reduce(0, index, src, reduce, include_self=reduce == "prod")
        y.backward(lib.tensor([1.0, 2.0, 3.0]))
        assert src.grad.shape == ()
        expected = {"scatter": ([0, 5, 0], [1, 0, 3], 2), "scatter_add": ([0, 5, 0], [1, 2, 3], 2),
                    "prod": ([0, 0, 0], [1, 10, 3], 0), "amax": ([0, 5, 0], [1, 0, 3], 2)}[reduce]
        np.testing.assert_array_equal(y.detach().numpy(), expected[0])
        np.testing.assert_array_equal(x.grad.numpy(), expected[1])
        assert src.grad.item() == expected[2]
