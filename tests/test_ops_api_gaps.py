"""Ops that filled gaps with PyTorch's API: integer and float-format ops (gcd, lcm, ldexp, frexp,
nextafter), erfc and the Bessel functions, the region scatters, sum_to_size, renorm, type
promotion queries, the trapezoidal rule, vander, combinations, range, windows and the
activations PyTorch has at the top level. Values without PyTorch, finite differences for
the differentiable ones, and PyTorch's values, dtypes and errors where it is installed."""

import math
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from autograd import Tensor
from tests.test_ops import _run, arrays, leaf, unary

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
RNG = np.random.default_rng(7)


def _leaf(*shape, low=-1.0, high=1.0):
    return Tensor(RNG.uniform(low, high, size=shape), requires_grad=True)


@st.composite
def _windowed(draw):
    """A tensor of at least two elements (for sliding windows over its memory)."""
    return [leaf(draw(arrays(draw(hnp.array_shapes(min_dims=1, max_dims=2, min_side=2, max_side=4)))))]


CASES = {  # the primitives defined for these ops, with hypothesis-drawn inputs (tests/test_ops.py checks the list)
    "Erfc": (unary(-4.0, 4.0), lambda x: x.erfc()),
    "I0": (unary(-5.0, 5.0), lambda x: x.i0()),
    "I1": (unary(-5.0, 5.0), lambda x: autograd.special.i1(x)),
    "NextAfter": (unary(-4.0, 4.0), lambda x: autograd.nextafter(x, x + 1.0)),  # (PyTorch's: input's gradient)
    "Ldexp": (unary(-4.0, 4.0), lambda x: autograd.ldexp(x, autograd.tensor(-3))),  # (an integer exponent: exact)
    "AsStrided": (_windowed(), lambda x: (x * 1.0).as_strided((x.numel() - 1, 2), (1, 1))),
}


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run(CASES[name], data)
    assert autograd.gradcheck(fn, tensors)


def _same(ours, theirs, **tolerance):
    assert tuple(ours.shape) == tuple(theirs.shape)
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), **(tolerance or {"rtol": 1e-6, "atol": 1e-7}))


# -- integers and the bits of floats --------------------------------------------------------------

def test_gcd_lcm_values_and_errors():
    a, b = autograd.tensor([-4, 0, 9, 12]), autograd.tensor([6, 0, -3, 18])
    np.testing.assert_array_equal(autograd.gcd(a, b).numpy(), [2, 0, 3, 6])
    np.testing.assert_array_equal(a.lcm(b).numpy(), [12, 0, 9, 36])
    a.gcd_(b)
    np.testing.assert_array_equal(a.numpy(), [2, 0, 3, 6])
    with pytest.raises(NotImplementedError, match="gcd_cpu"):
        autograd.gcd(autograd.tensor([1.0]), autograd.tensor([2.0]))


def test_ldexp_frexp_nextafter_values():
    np.testing.assert_array_equal(autograd.ldexp(autograd.tensor([1.0, 3.0]), autograd.tensor([3, -1])).numpy(),
                                  [8.0, 1.5])
    assert autograd.ldexp(autograd.tensor([1, 2]), autograd.tensor([1, 1])).dtype == autograd.float32
    mantissa, exponent = autograd.frexp(autograd.tensor([8.0, 0.3, 0.0, -5.0]))
    np.testing.assert_allclose(mantissa.numpy(), [0.5, 0.6, 0.0, -0.625], rtol=1e-6)
    assert exponent.dtype == autograd.int32 and exponent.tolist() == [4, -1, 0, 3]
    with pytest.raises(RuntimeError, match="floating-point"):
        autograd.frexp(autograd.tensor([1]))
    up = autograd.nextafter(autograd.tensor([1.0], dtype=autograd.float64), autograd.tensor([2.0],
                                                                                          dtype=autograd.float64))
    assert up.item() == np.nextafter(1.0, 2.0)
    with pytest.raises(NotImplementedError, match="nextafter_cpu"):
        autograd.nextafter(autograd.tensor([1]), autograd.tensor([2]))


def test_ldexp_and_frexp_gradients():
    assert autograd.gradcheck(lambda x, e: autograd.ldexp(x, e), (_leaf(3), _leaf(3)))
    assert autograd.gradcheck(lambda x: autograd.frexp(x).mantissa, (_leaf(4, low=0.1, high=9.0),))


def test_erfc_is_exact_in_the_tail():
    x = autograd.tensor([-1.0, 0.0, 0.5, 6.0, 10.0, 26.0], dtype=autograd.float64)
    np.testing.assert_allclose(x.erfc().numpy(), [math.erfc(v) for v in x.tolist()], rtol=1e-15)
    assert autograd.erfc(autograd.tensor([1, 2])).dtype == autograd.float32
    assert autograd.special.erfc(x).shape == x.shape
    assert autograd.gradcheck(autograd.erfc, (_leaf(5, low=-3, high=3),))
    assert autograd.gradgradcheck(autograd.erfc, (_leaf(3, low=-2, high=2),))


def test_bessel_i0_i1():
    x = autograd.tensor([0.0, 1.0, -2.0, 30.0], dtype=autograd.float64)
    expected_i1 = [0.0, 0.5651591039924851, -1.5906368546373295, 768532038938.9569]
    np.testing.assert_allclose(autograd.special.i1(x).numpy(), expected_i1, rtol=1e-13)
    np.testing.assert_allclose(x.i0().numpy(), np.i0(x.numpy()), rtol=1e-15)
    points = Tensor(np.array([0.0, 0.5, -2.0, 7.0]), requires_grad=True)
    assert autograd.gradcheck(autograd.i0, (points,)) and autograd.gradgradcheck(autograd.i0, (points,))
    assert autograd.gradcheck(autograd.special.i1, (points,))


@needs_torch
def test_numbers_against_pytorch():
    x = np.array([-3.0, -0.4, 0.0, 0.7, 5.5, 12.0])
    _same(autograd.erfc(Tensor(x)), torch.erfc(torch.tensor(x)), rtol=1e-13)
    _same(autograd.i0(Tensor(x)), torch.i0(torch.tensor(x)), rtol=1e-13)
    _same(autograd.special.i1(Tensor(x)), torch.special.i1(torch.tensor(x)), rtol=1e-13)
    ints = np.array([-4, 0, 9, 12, 7, 3])
    other = np.array([6, 0, -3, 18, 7, -5])
    ours_ints, theirs_ints = (autograd.tensor(ints), autograd.tensor(other)), (torch.tensor(ints), torch.tensor(other))
    _same(autograd.gcd(*ours_ints), torch.gcd(*theirs_ints))
    _same(autograd.lcm(*ours_ints), torch.lcm(*theirs_ints))
    ours, theirs = autograd.frexp(Tensor(x)), torch.frexp(torch.tensor(x))
    _same(ours.mantissa, theirs.mantissa)
    _same(ours.exponent, theirs.exponent)
    _same(autograd.ldexp(Tensor(x), autograd.tensor(ints)), torch.ldexp(torch.tensor(x), torch.tensor(ints)))
    _same(autograd.nextafter(Tensor(x), Tensor(x[::-1].copy())),
          torch.nextafter(torch.tensor(x), torch.tensor(x[::-1].copy())), rtol=0)
    t = torch.tensor(x, requires_grad=True)
    torch.i0(t).sum().backward()
    ours = Tensor(x, requires_grad=True)
    autograd.i0(ours).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), t.grad.numpy(), rtol=1e-12)


# -- regions --------------------------------------------------------------------------------------

def test_scatters_values():
    x = autograd.zeros(3, 4)
    y = autograd.slice_scatter(x, autograd.ones(3, 2), dim=1, start=0, step=2)
    np.testing.assert_array_equal(y.numpy(), np.tile([1.0, 0.0, 1.0, 0.0], (3, 1)))
    y = autograd.select_scatter(x, autograd.full((4,), 2.0), 0, -1)
    np.testing.assert_array_equal(y.numpy()[2], [2.0] * 4)
    y = autograd.diagonal_scatter(x, autograd.ones(3), 1)
    np.testing.assert_array_equal(y.numpy(), np.eye(3, 4, 1))
    assert x.sum().item() == 0.0  # the input is not changed
    with pytest.raises(RuntimeError, match=r"src size = \[3, 3\], slice size = \[3, 2\]"):
        autograd.slice_scatter(x, autograd.ones(3, 3), 1, 0, 2)
    with pytest.raises(RuntimeError, match=r"src size = \[4\], slice size = \[3\]"):
        autograd.diagonal_scatter(x, autograd.ones(4))
    copy = x.narrow_copy(1, 1, 2)
    assert copy.shape == (3, 2) and copy.data_ptr() != x.data_ptr()


@pytest.mark.parametrize("scatter, src_shape", [
    (lambda x, s: autograd.slice_scatter(x * x, s * s, 1, 1, 4, 2), (3, 2)),
    (lambda x, s: autograd.select_scatter(x * x, s * s, 1, -1), (3,)),
    (lambda x, s: autograd.diagonal_scatter(x * x, s * s, -1), (2,)),
    (lambda x, s: autograd.diagonal_scatter(x, s), (3,)),
])
def test_scatter_gradients(scatter, src_shape):
    assert autograd.gradcheck(scatter, (_leaf(3, 4), _leaf(*src_shape)))


def test_sum_to_size_and_renorm():
    x = autograd.ones(2, 3)
    np.testing.assert_array_equal(x.sum_to_size(1, 3).numpy(), [[2.0] * 3])
    np.testing.assert_array_equal(x.sum_to_size((2, 1)).numpy(), [[3.0], [3.0]])
    np.testing.assert_array_equal(x.sum_to_size(3).numpy(), [2.0] * 3)
    with pytest.raises(RuntimeError, match=r"size \{\[2\]\} is not expandable to size \{\[2, 3\]\}"):
        x.sum_to_size(2)
    rows = autograd.tensor([[3.0, 4.0], [0.3, 0.4]], dtype=autograd.float64)
    np.testing.assert_allclose(rows.renorm(2, 0, 1.0).numpy(), [[0.6, 0.8], [0.3, 0.4]], rtol=1e-6)
    rows.renorm_(1, 1, 2.0)
    np.testing.assert_allclose(rows.numpy(), [[3 * 2 / 3.3, 4 * 2 / 4.4], [0.3 * 2 / 3.3, 0.4 * 2 / 4.4]], rtol=1e-6)
    with pytest.raises(RuntimeError, match="non-positive-norm"):
        rows.renorm(0, 0, 1.0)
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        autograd.ones(3).renorm(2, 0, 1.0)
    assert autograd.gradcheck(lambda x: x.sum_to_size(1, 4), (_leaf(3, 4),))
    assert autograd.gradcheck(lambda x: x.renorm(2, 1, 1.0), (_leaf(3, 4, low=0.2, high=2.0),))
    assert autograd.gradcheck(lambda x: x.renorm(3, 0, 1.5), (_leaf(3, 4, low=-2.0, high=2.0),))


@needs_torch
def test_regions_and_renorm_against_pytorch():
    x, src = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 2))
    _same(autograd.slice_scatter(Tensor(x), Tensor(src), 1, 1, None, 2),
          torch.slice_scatter(torch.tensor(x), torch.tensor(src), 1, 1, None, 2))
    _same(autograd.diagonal_scatter(Tensor(x), Tensor(src[:2, 0]), -1),
          torch.diagonal_scatter(torch.tensor(x), torch.tensor(src[:2, 0]), -1))
    _same(autograd.select_scatter(Tensor(x), Tensor(src[:, 0]), 1, 2),
          torch.select_scatter(torch.tensor(x), torch.tensor(src[:, 0]), 1, 2))
    ours, theirs = Tensor(x * 3, requires_grad=True), torch.tensor(x * 3, requires_grad=True)
    weights = RNG.normal(size=(3, 4))
    (ours.renorm(2, 0, 2.0) * Tensor(weights)).sum().backward()
    (theirs.renorm(2, 0, 2.0) * torch.tensor(weights)).sum().backward()
    _same(ours.grad, theirs.grad, rtol=1e-10)
    _same(Tensor(x).sum_to_size(1, 4), torch.tensor(x).sum_to_size(1, 4))


# -- type promotion queries -----------------------------------------------------------------------

PROMOTIONS = [
    ("tensor int64, 1.0", lambda m: m.result_type(m.tensor([1]), 1.0), "float32"),
    ("2, 3.0", lambda m: m.result_type(2, 3.0), "float32"),
    ("2, 3", lambda m: m.result_type(2, 3), "int64"),
    ("True, False", lambda m: m.result_type(True, False), "bool"),
    ("int8 tensor, 1000", lambda m: m.result_type(m.tensor([1], dtype=m.int8), 1000), "int8"),
    ("0-d int8, uint8 vector", lambda m: m.result_type(m.tensor(1, dtype=m.int8), m.tensor([1], dtype=m.uint8)),
     "uint8"),
    ("bool tensor, 2", lambda m: m.result_type(m.tensor([True]), 2), "int64"),
    ("float16 vector, 0-d float64", lambda m: m.result_type(m.tensor([1.0], dtype=m.float16),
                                                            m.tensor(1.0, dtype=m.float64)), "float16"),
    ("promote int32 float16", lambda m: m.promote_types(m.int32, m.float16), "float16"),
    ("promote uint8 int8", lambda m: m.promote_types(m.uint8, m.int8), "int16"),
    ("promote bool int32", lambda m: m.promote_types(m.bool, m.int32), "int32"),
]


@pytest.mark.parametrize("case, query, expected", PROMOTIONS, ids=[case[0] for case in PROMOTIONS])
def test_result_type_and_promote_types(case, query, expected):
    assert str(query(autograd)) == expected
    if torch is not None:
        assert str(query(torch)) == f"torch.{expected}"


def test_can_cast():
    for from_, to, expected in [("float32", "int32", False), ("int32", "float32", True), ("float64", "float16", True),
                                ("int64", "int8", True), ("int8", "bool", False), ("bool", "uint8", True)]:
        assert autograd.can_cast(getattr(autograd, from_), getattr(autograd, to)) is expected
        if torch is not None:
            assert torch.can_cast(getattr(torch, from_), getattr(torch, to)) is expected


# -- series: trapezoid, vander, combinations, range -----------------------------------------------

def test_trapezoid_values():
    y = autograd.tensor([[1.0, 2.0, 4.0], [0.0, 1.0, 1.0]])
    np.testing.assert_allclose(autograd.trapezoid(y).numpy(), [4.5, 1.5])
    np.testing.assert_allclose(autograd.trapezoid(y, autograd.tensor([0.0, 1.0, 3.0])).numpy(), [7.5, 2.5])
    np.testing.assert_allclose(autograd.trapz(y, dx=2).numpy(), [9.0, 3.0])
    np.testing.assert_allclose(autograd.trapezoid(y, dx=0.5, dim=0).numpy(), [0.25, 0.75, 1.25])
    np.testing.assert_allclose(autograd.cumulative_trapezoid(y).numpy(), [[1.5, 4.5], [0.5, 1.5]])
    assert autograd.trapezoid(autograd.tensor([1, 2, 4])).dtype == autograd.float32
    assert autograd.trapezoid(autograd.zeros(3, 1)).tolist() == [0.0] * 3
    assert autograd.cumulative_trapezoid(autograd.zeros(3, 1)).shape == (3, 0)
    with pytest.raises(RuntimeError, match="one `x` value for each sample point"):
        autograd.trapezoid(y, autograd.tensor([0.0, 1.0]))
    assert autograd.gradcheck(lambda y, x: autograd.trapezoid(y, x), (_leaf(2, 4), _leaf(4)))
    assert autograd.gradcheck(lambda y, x: autograd.cumulative_trapezoid(y, x, dim=0), (_leaf(4, 2), _leaf(4, 2)))


def test_vander_and_combinations_values():
    np.testing.assert_array_equal(autograd.vander(autograd.tensor([1, 2, 3])).numpy(),
                                  [[1, 1, 1], [4, 2, 1], [9, 3, 1]])
    np.testing.assert_array_equal(autograd.vander(autograd.tensor([1.0, 2.0]), N=3, increasing=True).numpy(),
                                  [[1, 1, 1], [1, 2, 4]])
    assert autograd.vander(autograd.tensor([True, False])).dtype == autograd.int64
    assert autograd.vander(autograd.tensor([1, 2]), N=0).shape == (2, 0)
    with pytest.raises(RuntimeError, match="one-dimensional"):
        autograd.vander(autograd.ones(2, 2))
    with_zero = Tensor(np.array([0.0, 1.5, -2.0]), requires_grad=True)  # (no x^-1 at 0)
    assert autograd.gradcheck(lambda x: autograd.vander(x, 4), (with_zero,))
    pairs = autograd.combinations(autograd.tensor([1, 2, 3]))
    assert pairs.tolist() == [[1, 2], [1, 3], [2, 3]]
    assert autograd.combinations(autograd.tensor([1, 2, 3]), r=3, with_replacement=True).shape == (10, 3)
    assert autograd.combinations(autograd.tensor([1]), r=2).shape == (0, 2)
    assert autograd.combinations(autograd.tensor([1, 2]), r=0).shape == (0,)
    assert autograd.gradcheck(lambda x: autograd.combinations(x, 2, True), (_leaf(4),))


def test_range_is_inclusive_and_deprecated():
    with pytest.warns(UserWarning, match="deprecated"):
        values = autograd.range(1, 4)
    assert values.tolist() == [1.0, 2.0, 3.0, 4.0] and values.dtype == autograd.float32
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        np.testing.assert_allclose(autograd.range(0, 1, 0.3).numpy(), [0.0, 0.3, 0.6, 0.9], rtol=1e-6)
        assert autograd.range(4, 1, -1).tolist() == [4.0, 3.0, 2.0, 1.0]


@needs_torch
def test_series_against_pytorch():
    y, x = RNG.normal(size=(3, 5)), np.sort(RNG.normal(size=5))
    _same(autograd.trapezoid(Tensor(y), Tensor(x)), torch.trapezoid(torch.tensor(y), torch.tensor(x)), rtol=1e-12)
    _same(autograd.cumulative_trapezoid(Tensor(y), dx=0.3, dim=0),
          torch.cumulative_trapezoid(torch.tensor(y), dx=0.3, dim=0), rtol=1e-12)
    _same(autograd.trapezoid(autograd.zeros(3, 0)), torch.trapezoid(torch.zeros(3, 0)))
    _same(autograd.vander(Tensor(x), 4), torch.vander(torch.tensor(x), 4), rtol=1e-12)
    _same(autograd.combinations(Tensor(x), 3), torch.combinations(torch.tensor(x), 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _same(autograd.range(-1, 2, 0.5), torch.range(-1, 2, 0.5))


# -- windows --------------------------------------------------------------------------------------

WINDOWS = ["hann_window", "hamming_window", "blackman_window", "bartlett_window", "kaiser_window"]


def test_window_values():
    np.testing.assert_allclose(autograd.hann_window(4).numpy(), [0.0, 0.5, 1.0, 0.5], atol=1e-7)
    np.testing.assert_allclose(autograd.hann_window(5, periodic=False).numpy(), [0.0, 0.5, 1.0, 0.5, 0.0], atol=1e-7)
    np.testing.assert_allclose(autograd.bartlett_window(5, False).numpy(), [0.0, 0.5, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(autograd.hamming_window(3, False, dtype=autograd.float64).numpy(), [0.08, 1.0, 0.08])
    np.testing.assert_allclose(autograd.blackman_window(3, False, dtype=autograd.float64).numpy(), [0.0, 1.0, 0.0],
                               atol=1e-15)
    np.testing.assert_allclose(autograd.kaiser_window(6, False, 5.0, dtype=autograd.float64).numpy(),
                               np.kaiser(6, 5.0), rtol=1e-12)
    for name in WINDOWS:
        window = getattr(autograd, name)
        assert window(1).tolist() == [1.0] and window(0).shape == (0,) and window(3).dtype == autograd.float32
        with pytest.raises(RuntimeError, match="floating point"):
            window(3, dtype=autograd.int64)


@needs_torch
@pytest.mark.parametrize("name", WINDOWS)
def test_windows_against_pytorch(name):
    for length in (0, 1, 2, 5, 8):
        for periodic in (True, False):
            _same(getattr(autograd, name)(length, periodic, dtype=autograd.float64),
                  getattr(torch, name)(length, periodic, dtype=torch.float64), rtol=1e-12, atol=1e-15)


# -- activations at the top level -----------------------------------------------------------------

def test_top_level_activations():
    x = autograd.tensor([-1.0, 0.2, 0.7])
    np.testing.assert_allclose(x.hardshrink().numpy(), [-1.0, 0.0, 0.7])
    np.testing.assert_allclose(autograd.hardshrink(x, 0.1).numpy(), [-1.0, 0.2, 0.7])
    np.testing.assert_allclose(autograd.threshold(x, 0.1, 20.0).numpy(), [20.0, 0.2, 0.7])
    np.testing.assert_allclose(x.prelu(autograd.tensor([0.25])).numpy(), [-0.25, 0.2, 0.7])
    autograd.threshold_(x, 0.5, 0.0)
    np.testing.assert_allclose(x.numpy(), [0.0, 0.0, 0.7])
    with pytest.raises(RuntimeError, match="Mismatch of parameter numbers"):
        autograd.ones(2, 3).prelu(autograd.ones(2))
    assert autograd.gradcheck(lambda x, w: x.prelu(w), (_leaf(2, 3, 2), _leaf(3)))
    assert autograd.gradcheck(lambda x: x.hardshrink(0.3), (_leaf(6),))
    values = np.linspace(-3.0, 3.0, 7)
    alpha, scale = 1.6732632423543772, 1.0507009873554805
    selu = scale * np.where(values > 0, values, alpha * np.expm1(values))
    np.testing.assert_allclose(autograd.selu(Tensor(values)).numpy(), selu, rtol=1e-14)
    np.testing.assert_allclose(autograd.celu(Tensor(values), 0.5).numpy(),
                               np.where(values > 0, values, 0.5 * np.expm1(values / 0.5)), rtol=1e-14)
    in_place = Tensor(values.copy())
    assert autograd.selu_(in_place) is in_place and np.allclose(in_place.numpy(), selu, rtol=1e-14)
    autograd.celu_(in_place, 2.0)
    with pytest.raises(RuntimeError, match="alpha cannot be 0"):
        autograd.celu(Tensor(values), 0.0)
    assert autograd.gradcheck(autograd.selu, (_leaf(6),)) and autograd.gradcheck(lambda x: autograd.celu(x, 2.0),
                                                                                  (_leaf(6),))
    if torch is not None:
        _same(autograd.selu(Tensor(values)), torch.selu(torch.tensor(values)), rtol=1e-14)
        _same(autograd.celu(Tensor(values), 0.5), torch.celu(torch.tensor(values), 0.5), rtol=1e-14)


# -- index_reduce, put, as_strided ----------------------------------------------------------------

INDEX_REDUCED = {  # reduce: (include_self=True, include_self=False), for the case below
    "prod": ([[500.0, 2400.0], [3.0, 4.0], [150.0, 240.0]], [[500.0, 1200.0], [3.0, 4.0], [30.0, 40.0]]),
    "mean": ([[61 / 3, 82 / 3], [3.0, 4.0], [17.5, 23.0]], [[30.0, 40.0], [3.0, 4.0], [30.0, 40.0]]),
    "amax": ([[50.0, 60.0], [3.0, 4.0], [30.0, 40.0]], [[50.0, 60.0], [3.0, 4.0], [30.0, 40.0]]),
    "amin": ([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], [[10.0, 20.0], [3.0, 4.0], [30.0, 40.0]]),
}


@pytest.mark.parametrize("reduce", sorted(INDEX_REDUCED))
def test_index_reduce(reduce):
    x = autograd.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    source, index = autograd.tensor([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]]), autograd.tensor([0, 2, 0])
    with_self, without_self = INDEX_REDUCED[reduce]
    np.testing.assert_allclose(x.index_reduce(0, index, source, reduce).numpy(), with_self, rtol=1e-6)
    np.testing.assert_allclose(autograd.index_reduce(x, 0, index, source, reduce, include_self=False).numpy(),
                               without_self, rtol=1e-6)
    x.index_reduce_(0, index, source, reduce)
    np.testing.assert_allclose(x.numpy(), with_self, rtol=1e-6)
    positions = autograd.tensor([0, 2, 0, 1])
    for include_self in (True, False):
        assert autograd.gradcheck(
            lambda x, s, keep=include_self: x.index_reduce(1, positions, s, reduce, include_self=keep),
            (_leaf(2, 3, low=0.5, high=2.0), _leaf(2, 4, low=0.5, high=2.0)))
    if torch is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # PyTorch's "index_reduce() is in beta"
            theirs = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]).index_reduce(
                0, torch.tensor([0, 2, 0]), torch.tensor([[10.0, 20.0], [30.0, 40.0], [50.0, 60.0]]), reduce)
        np.testing.assert_allclose(theirs.numpy(), with_self, rtol=1e-6)


def test_index_reduce_errors():
    x = autograd.zeros(3, 2)
    with pytest.raises(RuntimeError, match="Expected reduce to be one of prod, mean, amax or amin but got sum"):
        x.index_reduce(0, autograd.tensor([0]), autograd.ones(1, 2), "sum")
    with pytest.raises(RuntimeError, match="source has shape"):
        x.index_reduce(0, autograd.tensor([0]), autograd.ones(2, 2), "prod")
    integers = autograd.tensor([[1, 2], [3, 4]]).index_reduce(0, autograd.tensor([0, 0]),
                                                              autograd.tensor([[2, 3], [4, 4]]), "mean")
    assert integers.tolist() == [[2, 3], [3, 4]] and integers.dtype == autograd.int64


def test_put():
    x = autograd.zeros(2, 3)
    np.testing.assert_array_equal(x.put(autograd.tensor([[0, -1]]), autograd.tensor([1.0, 2.0])).numpy(),
                                  [[1, 0, 0], [0, 0, 2]])
    np.testing.assert_array_equal(x.put(autograd.tensor([1, 1]), autograd.tensor([1.0, 2.0]), accumulate=True).numpy(),
                                  [[0, 3, 0], [0, 0, 0]])
    np.testing.assert_array_equal(x.t().put(autograd.tensor([1]), autograd.tensor([7.0])).numpy(),
                                  [[0, 7], [0, 0], [0, 0]])  # positions count in the row-major order of x.t()
    assert x.sum().item() == 0.0
    assert x.put_(autograd.tensor([0]), autograd.tensor([4.0])) is x and x[0, 0].item() == 4.0
    with pytest.raises(IndexError, match="tried to access index 6 on a tensor of 6 elements"):
        x.put(autograd.tensor([6]), autograd.tensor([1.0]))
    with pytest.raises(IndexError, match="same number of elements"):
        x.put(autograd.tensor([1, 2]), autograd.tensor([1.0]))
    with pytest.raises(RuntimeError, match="same dtype"):
        x.put(autograd.tensor([1]), autograd.tensor([1]))
    assert autograd.gradcheck(lambda x, s: x.put(autograd.tensor([0, 4, -1]), s), (_leaf(2, 3), _leaf(3)))
    assert autograd.gradcheck(lambda x, s: x.put(autograd.tensor([0, 4, 0]), s, True), (_leaf(2, 3), _leaf(3)))


def test_as_strided_values_and_views():
    x = autograd.arange(6.0)
    windows = x.as_strided((3, 2), (1, 1))
    np.testing.assert_array_equal(windows.numpy(), [[0, 1], [1, 2], [2, 3]])
    np.testing.assert_array_equal(x[1:].as_strided((2,), (1,), 0).numpy(), [0, 1])  # from the memory's start
    np.testing.assert_array_equal(x.view(2, 3).t().as_strided((2,), (1,)).numpy(), [0, 1])  # memory order
    assert x.as_strided((2, 2), (2, 1), 1).stride() == (2, 1)
    view = x.as_strided((2,), (2,))
    view.fill_(9.0)
    np.testing.assert_array_equal(x.numpy(), [9, 1, 9, 3, 4, 5])
    with pytest.raises(RuntimeError, match="out of bounds for storage of size 24"):
        autograd.arange(6.0).float().as_strided((4, 2), (2, 1))
    with pytest.raises(RuntimeError, match="mismatch in length"):
        x.as_strided((2, 2), (1,))


def test_as_strided_gradients():
    w = Tensor(RNG.normal(size=6), requires_grad=True)
    assert autograd.gradcheck(lambda w: (w * 1.0).as_strided((3, 2), (1, 1)), (w,))  # overlapping windows add up
    assert autograd.gradcheck(lambda w: w.reshape(2, 3).t().as_strided((3, 2), (1, 1)), (w,))
    assert autograd.gradgradcheck(lambda w: (w * w).as_strided((2, 2), (2, 1), 1), (w,))
    x = Tensor(np.arange(6.0), requires_grad=True)
    (x * 1.0)[2:].as_strided((2,), (1,), 0).sum().backward()  # positions outside the input: no gradient, as PyTorch
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros(6))
    b = x * 1.0
    b.as_strided((2,), (3,)).mul_(2.0)  # a recorded write through the view reaches b
    b.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2, 1, 1, 2, 1, 1])


@needs_torch
def test_as_strided_against_pytorch():
    data = RNG.normal(size=(4, 5))
    ours, theirs = Tensor(data, requires_grad=True), torch.tensor(data, requires_grad=True)
    weights = RNG.normal(size=(3, 2, 4))
    (ours.as_strided((3, 2, 4), (5, 3, 1), 2) * Tensor(weights)).sum().backward()
    (theirs.as_strided((3, 2, 4), (5, 3, 1), 2) * torch.tensor(weights)).sum().backward()
    _same(ours.grad, theirs.grad, rtol=1e-12)
    _same(Tensor(data).t().as_strided((2, 3), (1, 2)), torch.tensor(data).t().as_strided((2, 3), (1, 2)))


def test_distances_at_the_top_level():
    a, b = RNG.normal(size=(3, 4)), RNG.normal(size=(3, 4))
    np.testing.assert_allclose(autograd.pairwise_distance(Tensor(a), Tensor(b)).numpy(),
                               np.linalg.norm(a - b + 1e-6, axis=-1), rtol=1e-12)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    np.testing.assert_allclose(autograd.cosine_similarity(Tensor(a), Tensor(b)).numpy(), cosine, rtol=1e-12)
    np.testing.assert_allclose(autograd.pdist(Tensor(a)).numpy(),
                               [np.linalg.norm(a[i] - a[j]) for i in range(3) for j in range(i + 1, 3)], rtol=1e-12)
    assert autograd.gradcheck(autograd.cosine_similarity, (_leaf(3, 4), _leaf(3, 4)))
    assert autograd.gradcheck(lambda x: autograd.pdist(x, 3.0), (_leaf(3, 4),))
    with pytest.raises(RuntimeError, match="pdist only supports 2D tensors"):
        autograd.pdist(autograd.ones(3))
    if torch is not None:
        _same(autograd.cosine_similarity(Tensor(a), Tensor(b), 0), torch.cosine_similarity(torch.tensor(a),
                                                                                           torch.tensor(b), 0))
        _same(autograd.pdist(Tensor(a), 1.0), torch.pdist(torch.tensor(a), 1.0))
        _same(autograd.pairwise_distance(Tensor(a), Tensor(b), 3.0), torch.pairwise_distance(torch.tensor(a),
                                                                                             torch.tensor(b), 3.0))
