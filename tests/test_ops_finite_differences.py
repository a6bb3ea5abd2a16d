"""autograd.gradient (torch.gradient): values against numpy.gradient, exactness on polynomials,
gradients through it against finite differences, and values, gradients, dtypes and errors
against PyTorch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from tests.ops_reference import compare
from tests.test_ops import arrays, leaf

rng = np.random.default_rng(0)
F = rng.standard_normal((5, 6, 4))
X0, X1 = np.sort(rng.uniform(0, 5, 5)), np.sort(rng.uniform(0, 5, 6))

OPTIONS = {
    "default": ({}, {}),
    "scalar": ({"spacing": 2.0}, {"varargs": (2.0,)}),
    "dim": ({"dim": 1}, {"axis": 1}),
    "dims_edge_2": ({"dim": [2, 0], "edge_order": 2}, {"axis": (2, 0), "edge_order": 2}),
    "spacings": ({"spacing": [1.0, 2.0, 0.5], "edge_order": 2}, {"varargs": (1.0, 2.0, 0.5), "edge_order": 2}),
    "coordinates": ({"dim": (0, 1), "spacing": [X0, X1]}, {"axis": (0, 1), "varargs": (X0, X1)}),
    "coordinates_edge_2": ({"dim": (0, 1), "spacing": [X0, X1], "edge_order": 2},
                           {"axis": (0, 1), "varargs": (X0, X1), "edge_order": 2}),
}


def _ours(options, module=autograd):
    options = dict(options)
    if isinstance(options.get("spacing"), list) and isinstance(options["spacing"][0], np.ndarray):
        options["spacing"] = [module.tensor(x) for x in options["spacing"]]
    return options


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_matches_numpy_gradient(name):
    ours, theirs = OPTIONS[name]
    expected = np.gradient(F, *theirs.get("varargs", ()), **{k: v for k, v in theirs.items() if k != "varargs"})
    expected = expected if isinstance(expected, (list, tuple)) else [expected]
    result = autograd.gradient(autograd.tensor(F), **_ours(ours))
    assert isinstance(result, tuple) and len(result) == len(expected)
    for mine, reference in zip(result, expected):
        np.testing.assert_allclose(mine.numpy(), reference, rtol=1e-13, atol=1e-13)


def test_second_order_is_exact_on_quadratics():
    x = np.sort(rng.uniform(-2, 2, 7))
    (slope,) = autograd.gradient(autograd.tensor(3 * x**2 - x + 1), spacing=[autograd.tensor(x)], edge_order=2)
    np.testing.assert_allclose(slope.numpy(), 6 * x - 1, rtol=1e-12)


def test_integers_become_the_default_dtype_and_a_scalar_has_no_dims():
    (slope,) = autograd.gradient(autograd.tensor([1, 2, 4, 8, 10]))
    assert slope.dtype == autograd.float32
    np.testing.assert_allclose(slope.numpy(), [1.0, 1.5, 3.0, 3.0, 2.0])
    assert autograd.gradient(autograd.tensor(3.0)) == ()


def test_errors():
    x = autograd.tensor(F)
    with pytest.raises(RuntimeError, match="only supports edge_order=1 and edge_order=2"):
        autograd.gradient(x, edge_order=3)
    with pytest.raises(RuntimeError, match="a list of length equal to 'self.dim\\(\\) = 3'"):
        autograd.gradient(x, spacing=[1.0, 2.0])
    with pytest.raises(RuntimeError, match="a spacing argument of length 2 and a dim argument of length 1"):
        autograd.gradient(x, dim=[0], spacing=[1.0, 2.0])
    with pytest.raises(RuntimeError, match="dim 0 appears multiple times"):
        autograd.gradient(x, dim=(0, 0))
    with pytest.raises(IndexError, match="Dimension out of range"):
        autograd.gradient(x, dim=3)
    with pytest.raises(RuntimeError, match="at least edge_order\\+1"):
        autograd.gradient(autograd.tensor([1.0, 2.0]), edge_order=2)
    with pytest.raises(RuntimeError, match="to have one dimension, but got an element with 0 dimensions"):
        autograd.gradient(x, dim=0, spacing=[autograd.tensor(2.0)])


@st.composite
def samples(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=3, max_side=4))
    f = leaf(draw(arrays(shape)))
    dim = draw(st.integers(0, len(shape) - 1))
    gaps = draw(arrays((shape[dim] - 1,), 0.3, 2.0))
    return f, leaf(np.concatenate([[0.0], np.cumsum(gaps)])), dim, draw(st.sampled_from([1, 2]))


@given(drawn=samples())
def test_gradient_through_it_matches_finite_differences(drawn):
    f, x, dim, edge_order = drawn
    assert autograd.gradcheck(lambda f, x: autograd.gradient(f, spacing=[x], dim=dim, edge_order=edge_order), (f, x))
    assert autograd.gradcheck(lambda f: autograd.gradient(f, spacing=0.7, edge_order=edge_order), (f,))


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_matches_torch(name):
    ours, _ = OPTIONS[name]
    compare(lambda m, f: m.gradient(f, **_ours(ours, m)), F)


@pytest.mark.torch
def test_coordinates_that_require_grad_match_torch():
    compare(lambda m, f, x: m.gradient(f, spacing=[x], dim=1, edge_order=2), F, X1)
