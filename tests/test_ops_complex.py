"""Complex gradients (ops/conjugation.py): z.grad = ∂L/∂Re z + i ∂L/∂Im z, as PyTorch's.

Finite differences move the real and imaginary parts separately (gradcheck checks a complex
input or output as its real pair), over hypothesis-drawn shapes and values, second derivatives
too; known values without PyTorch; PyTorch's values, gradients and dtypes where it is installed;
and the ops whose derivative is written for real numbers refuse complex inputs that require grad.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from autograd import Tensor
from tests.test_ops import SHAPES, _run

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
pytestmark = pytest.mark.filterwarnings("ignore:Casting complex values to real")  # the "cast" case's, as PyTorch's


def _functional(lib):
    if lib is autograd:
        import nn.functional

        return nn.functional
    return lib.nn.functional


def complex_leaf(values):
    return Tensor(np.asarray(values, dtype=np.complex128), requires_grad=True)


def _parts(shape, low, high):
    return hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False, width=64))


@st.composite
def complex_arrays(draw, count=1, low=-2.0, high=2.0, away_from_zero=0.0, off_cut=False):
    """``count`` complex leaves of one drawn shape (|z| at least ``away_from_zero``; with ``off_cut``, away
    from the negative real axis, where angle jumps from π to -π)."""
    shape = draw(SHAPES)
    leaves = []
    for _ in range(count):
        z = draw(_parts(shape, low, high)) + 1j * draw(_parts(shape, low, high))
        small = np.abs(z) < away_from_zero
        z = np.where(small, away_from_zero + 0.5 + 0.5j, z)
        if off_cut:
            z = np.where((z.real < 0) & (np.abs(z.imag) < 0.2), z + 0.5j, z)
        leaves.append(complex_leaf(z))
    return leaves


@st.composite
def real_arrays(draw, count=2):
    shape = draw(SHAPES)
    return [Tensor(draw(_parts(shape, -2.0, 2.0)), requires_grad=True) for _ in range(count)]


@st.composite
def complex_matmul_pair(draw):
    m, k, n = (draw(st.integers(1, 3)) for _ in range(3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return [complex_leaf(rng.standard_normal((m, k)) + 1j * rng.standard_normal((m, k))),
            complex_leaf(rng.standard_normal((k, n)) + 1j * rng.standard_normal((k, n)))]


CASES = {  # the complex primitives (tests/test_ops.py checks that every primitive has one)
    "Conj": (complex_arrays(2), lambda z, w: z.conj() * w),
    "RealPart": (complex_arrays(2), lambda z, w: (z * w).real),
    "ImagPart": (complex_arrays(2), lambda z, w: (z * w).imag),
    "Angle": (complex_arrays(away_from_zero=0.2, off_cut=True), lambda z: z.angle()),
    "ViewAsReal": (complex_arrays(2), lambda z, w, lib=autograd: lib.view_as_real(z * w)),
    "ViewAsComplex": (real_arrays(2), lambda a, b, lib=autograd: lib.view_as_complex(lib.stack([a, b], -1)) ** 2),
    "PolarMagnitude": (real_arrays(2), lambda a, b, lib=autograd: lib.polar(a.exp(), b) ** 2),  # (a positive size)
}

# the real ops that take complex numbers too, each with its conjugations checked
COMPLEX_USES = {
    "add, sub, neg": (complex_arrays(2), lambda z, w: z + w - (-w) * 0.5 - 1.5),
    "mul": (complex_arrays(2), lambda z, w: z * w * z),
    "div": (complex_arrays(2, away_from_zero=0.3), lambda z, w: z / w),
    "reciprocal, pow": (complex_arrays(away_from_zero=0.3), lambda z: z.reciprocal() + z**3 + z**2),
    "exp, log, sqrt": (complex_arrays(away_from_zero=0.3, off_cut=True), lambda z: z.exp() + z.log() * z.sqrt()),
    "abs, sgn": (complex_arrays(away_from_zero=0.2), lambda z: z.abs() * 2.0 + z.sgn()),
    "sin, cos, tanh": (complex_arrays(low=-1.0, high=1.0), lambda z: z.sin() * z.cos() + z.tanh()),
    "sinh, cosh, tan": (complex_arrays(low=-1.0, high=1.0), lambda z: z.sinh() + z.cosh() * z.tan()),
    "logsumexp": (complex_arrays(low=-1.0, high=1.0), lambda z: z.reshape(-1).logsumexp(0)),
    "sigmoid, var": (complex_arrays(low=-1.0, high=1.0),  # (std is √var: a kink where the values are equal)
                     lambda z: z.sigmoid() * (z.var(correction=int(z.numel() > 1)) + z.var(dim=0, correction=0))),
    "matmul": (complex_matmul_pair(), lambda a, b: a @ b),
    "linear": (complex_matmul_pair(), lambda a, b, lib=autograd: _functional(lib).linear(a, b.T, b[0] * 2.0)),
    "einsum": (complex_matmul_pair(),
               lambda a, b, lib=autograd: lib.einsum("ij,jk->ik", a, b) * lib.einsum("ij->i", a).unsqueeze(1)),
    "sum, mean, shape ops": (complex_arrays(),
                             lambda z: (z.reshape(-1).flip(0).cumsum(0) * 1j).sum() + z.mean()),
    "real and complex mixed": (real_arrays(2),
                               lambda a, b, lib=autograd: lib.polar(a * a + 0.5, b) * lib.complex(a, b)),
    "cast": (real_arrays(1), lambda a, lib=autograd: (a.to(lib.complex128) * (1 + 2j)).to(lib.float64)),
}
# (lib: the functions' library, autograd here; the comparison with PyTorch passes torch)


@pytest.mark.parametrize("name", sorted(CASES) + sorted(COMPLEX_USES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run({**CASES, **COMPLEX_USES}[name], data)
    assert autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("name", ["Conj", "RealPart", "ImagPart", "Angle", "mul", "div", "exp, log, sqrt", "abs, sgn",
                                  "matmul", "sin, cos, tanh", "sinh, cosh, tan", "sigmoid, var"])
@given(data=st.data())
def test_second_derivatives_match_finite_differences(name, data):
    tensors, fn, *_ = _run({**CASES, **COMPLEX_USES}[name], data)
    assert autograd.gradgradcheck(fn, tensors)


def test_known_gradients():
    z = complex_leaf([3 + 4j, 1 - 1j])
    (z.abs() ** 2).sum().backward()  # |z|² = a² + b²: gradient 2a + 2bi = 2z
    np.testing.assert_allclose(z.grad.numpy(), [6 + 8j, 2 - 2j])
    z.grad = None
    z.real.sum().backward()  # ∂/∂a = 1, ∂/∂b = 0
    np.testing.assert_allclose(z.grad.numpy(), [1, 1])
    z.grad = None
    z.imag.sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), [1j, 1j])
    z.grad = None
    (z * (2 - 1j)).real.sum().backward()  # Re(z w) = a Re w - b Im w: gradient conj(w)
    np.testing.assert_allclose(z.grad.numpy(), [2 + 1j, 2 + 1j])
    # a real leaf in a complex computation gets a real gradient: d Re(x (1 + 2i))/dx = 1
    x = Tensor([0.5, -2.0], dtype=np.float64, requires_grad=True)
    (x * (1 + 2j)).real.sum().backward()
    assert x.grad.dtype == np.float64
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 1.0])


def test_at_zero_abs_sgn_and_angle_have_zero_gradients():
    """|z|, z/|z| and arg z have no derivative at 0: PyTorch's gradient there is 0, and so is ours."""
    z = complex_leaf([0j, 3 - 4j])
    (z.abs() + z.angle() + z.sgn().real + 2 * z.sgn().imag).sum().backward()
    assert z.grad.numpy()[0] == 0
    # away from 0: d|z| = z/|z|; d arg z = i z/|z|²; d Re(z/|z|) + 2 d Im(z/|z|) by the chain rule
    w = 3 - 4j
    expected = w / 5 + 1j * w / 25 + (1 - (w / 5).real * (w / 5)) / 5 + 2 * (1j - (w / 5).imag * (w / 5)) / 5
    np.testing.assert_allclose(z.grad.numpy()[1], expected)


def test_gradient_descent_with_complex_gradients_finds_a_root():
    """z -= lr · z.grad minimises |z² - (3 + 4i)|²: z reaches ±(2 + i)."""
    z = complex_leaf([1.0 + 0.5j])
    for _ in range(300):
        loss = ((z * z - (3 + 4j)).abs() ** 2).sum()
        z.grad = None
        loss.backward()
        with autograd.no_grad():
            z -= 0.01 * z.grad
    np.testing.assert_allclose(z.detach().numpy(), [2 + 1j], atol=1e-6)


def test_real_only_ops_refuse_complex_inputs_that_require_grad():
    # (nan_to_num's derivative is written for real numbers, and PyTorch refuses complex ones there too)
    z = complex_leaf([1 + 1j, 2 - 1j])
    with pytest.raises(NotImplementedError, match=r"NanToNum does not support automatic differentiation of complex"):
        z.nan_to_num()
    with pytest.raises(NotImplementedError, match=r"complex128 \(2,\)"):
        autograd.nan_to_num(z, posinf=1.0)
    with autograd.no_grad():  # values are still computed
        np.testing.assert_allclose(z.nan_to_num().numpy(), z.detach().numpy())
    assert not z.detach().nan_to_num().requires_grad


def test_what_pytorch_refuses_for_complex_numbers_is_refused():
    z = autograd.tensor([1 + 1j, 2 - 1j])
    with pytest.raises(NotImplementedError, match="torch.sign is not intended to support complex numbers"):
        z.sign()
    for rounding in ("floor", "ceil", "trunc", "round"):
        with pytest.raises(NotImplementedError, match=f"{rounding} is not supported for complex inputs"):
            getattr(z, rounding)()
    with pytest.raises(NotImplementedError, match="erf is not implemented for complex inputs"):
        z.erf()
    for unordered in (lambda: z.max(), lambda: z.argmax(), lambda: z.relu(), lambda: z.clamp(0, 1),
                      lambda: z.softmax(0), lambda: z.log_softmax(0), lambda: z.amax(), lambda: z.maximum(z)):
        with pytest.raises(NotImplementedError, match="complex numbers have no order"):
            unordered()
    with pytest.raises(RuntimeError, match="Sort does not support complex dtypes on CPU"):
        z.sort()
    with pytest.raises(RuntimeError, match="topk does not support complex dtypes on CPU"):
        z.topk(1)
    with pytest.raises(NotImplementedError, match="\"median_cpu\" not implemented for 'ComplexFloat'"):
        z.median()


def test_complex_sigmoid_and_variance_values():
    z = np.array([1 + 1j, 2 - 1j, 0j])
    np.testing.assert_allclose(autograd.tensor(z).sigmoid().numpy(), 1 / (1 + np.exp(-z)), rtol=1e-6)
    variance = autograd.tensor(z, dtype=autograd.complex128).var()
    assert variance.dtype == autograd.float64  # |z - mean|² summed: real, as PyTorch's
    np.testing.assert_allclose(variance.item(), np.sum(np.abs(z - z.mean()) ** 2) / 2)
    np.testing.assert_allclose(autograd.tensor(z, dtype=autograd.complex128).std().item(), np.std(z, ddof=1))


def test_complex_loss_needs_a_gradient():
    z = complex_leaf([1 + 1j])
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for real scalar outputs"):
        (z * 2).sum().backward()
    (z * 2).sum().backward(autograd.tensor(1 + 0j, dtype=autograd.complex128))
    np.testing.assert_allclose(z.grad.numpy(), [2])


def test_casting_complex_to_real_keeps_the_real_part_and_warns():
    z = complex_leaf([1.5 + 2j])
    with pytest.warns(UserWarning, match="discards the imaginary part"):
        x = z.to(autograd.float32)
    assert x.dtype == autograd.float32 and x.tolist() == [1.5]
    x.sum().backward()
    np.testing.assert_allclose(z.grad.numpy(), [1 + 0j])


def test_views_parts_and_errors():
    z = complex_leaf([[1 + 2j, 3 - 4j]])
    np.testing.assert_array_equal(autograd.view_as_real(z).detach().numpy(), [[[1, 2], [3, -4]]])
    r = autograd.tensor([[1.0, 2.0]])
    c = autograd.view_as_complex(r)
    assert c.dtype == autograd.complex64 and c.tolist() == [1 + 2j]
    assert autograd.complex(r[:, 0], r[:, 1]).dtype == autograd.complex64
    with pytest.raises(RuntimeError, match="last dimension of size 2"):
        autograd.view_as_complex(autograd.zeros(2, 3))
    with pytest.raises(RuntimeError, match="only supported for complex tensors"):
        autograd.view_as_real(r)
    assert z.resolve_conj() is z and z.resolve_neg() is z  # no lazy bits here: nothing to resolve
    assert z.conj().tolist() == [[1 - 2j, 3 + 4j]] and z.conj_physical().tolist() == [[1 - 2j, 3 + 4j]]
    np.testing.assert_allclose(autograd.polar(autograd.tensor([2.0]), autograd.tensor([np.pi / 2])).numpy(), [2j],
                               atol=1e-6)


@needs_torch
@pytest.mark.parametrize("name", sorted(CASES) + sorted(COMPLEX_USES))
@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_against_pytorch(name, data):
    strategy, fn = {**CASES, **COMPLEX_USES}[name][:2]
    example = data.draw(strategy)
    ours = [Tensor(x.detach().numpy(), requires_grad=True) for x in example]
    theirs = [torch.tensor(x.detach().numpy(), requires_grad=True) for x in example]
    results = []
    for library, inputs in ((autograd, ours), (torch, theirs)):
        y = fn(*inputs) if library is autograd else _with_torch(fn)(*inputs)
        weights = np.random.default_rng(0).standard_normal(tuple(y.shape) + (2,))
        w = weights[..., 0] + 1j * weights[..., 1] if _is_complex(y) else weights[..., 0]
        loss = (y * library.tensor(w)).real.sum() if _is_complex(y) else (y * library.tensor(w)).sum()
        loss.backward()
        results.append((_numpy(y.detach()), [_numpy(x.grad) for x in inputs], str(y.dtype).replace("torch.", "")))
    (y_ours, g_ours, dtype_ours), (y_theirs, g_theirs, dtype_theirs) = results
    assert dtype_ours == dtype_theirs
    np.testing.assert_allclose(y_ours, y_theirs, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_ours, g_theirs):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def _numpy(x):
    return x.resolve_conj().numpy()


def _is_complex(y):
    return y.dtype.is_complex if isinstance(y, torch.Tensor) else y.dtype.kind == "c"


def _with_torch(fn):
    import inspect

    return (lambda *xs: fn(*xs, lib=torch)) if "lib" in inspect.signature(fn).parameters else fn


def test_complex_numbers_take_pytorchs_dtypes():
    """A Python complex number becomes the default dtype's complex counterpart, and a floating tensor
    meeting one keeps its precision."""
    assert autograd.tensor([1 + 1j]).dtype == autograd.complex64 and autograd.tensor(1j).dtype == autograd.complex64
    assert (autograd.arange(3) * 1j).dtype == autograd.complex64
    assert (autograd.ones(2) * 1j).dtype == autograd.complex64
    assert (autograd.ones(2, dtype=autograd.float64) * 1j).dtype == autograd.complex128
    assert (autograd.ones(2, dtype=autograd.complex128) + 1j).dtype == autograd.complex128
    full = autograd.full((2,), 1 + 2j)
    assert full.dtype == autograd.complex64 and full.tolist() == [1 + 2j, 1 + 2j]
    autograd.set_default_dtype(autograd.float64)
    try:
        assert autograd.tensor([1j]).dtype == autograd.complex128
    finally:
        autograd.set_default_dtype(autograd.float32)


def test_complex_random_factories_draw_both_parts():
    autograd.manual_seed(0)
    z = autograd.randn(200_000, dtype=autograd.complex64)
    assert z.dtype == autograd.complex64
    np.testing.assert_allclose([z.real.var().item(), z.imag.var().item()], [0.5, 0.5], rtol=0.02)  # E|z|² = 1
    u = autograd.rand(200_000, dtype=autograd.complex128).numpy()
    assert 0 <= u.real.min() and u.real.max() < 1 and 0 <= u.imag.min() and u.imag.max() < 1
    np.testing.assert_allclose([u.real.mean(), u.imag.mean()], [0.5, 0.5], atol=0.01)
    assert autograd.randn_like(z[:3]).dtype == autograd.complex64


def test_in_place_initialisers_draw_both_parts_of_complex_tensors():
    """As PyTorch: uniform_ draws each part from U(a, b); normal_ each part from N(mean, std²/2);
    nn.init and a complex nn.Linear go through them."""
    import nn

    autograd.manual_seed(0)
    x = autograd.empty(100_000, dtype=autograd.complex64).uniform_(2.0, 3.0).numpy()
    assert 2 <= x.real.min() and x.real.max() < 3 and 2 <= x.imag.min() and x.imag.max() < 3
    y = autograd.empty(100_000, dtype=autograd.complex128).normal_(5.0, 2.0).numpy()
    np.testing.assert_allclose([y.real.mean(), y.imag.mean()], [5, 5], atol=0.02)
    np.testing.assert_allclose([y.real.std(), y.imag.std()], [2 * 0.5**0.5] * 2, rtol=0.01)
    weight = nn.Linear(100, 100, dtype=autograd.complex64).weight.detach().numpy()
    assert np.abs(weight.imag).max() > 0.09 and np.abs(weight.real).max() <= 0.1 and np.abs(weight.imag).max() <= 0.1


def test_a_python_float_beside_a_complex_tensor_keeps_its_precision():
    z = autograd.tensor(np.array([1 + 1j]), dtype=autograd.complex128)
    assert (z * 0.1).numpy()[0] == (1 + 1j) * 0.1  # not 0.1 rounded to float32 first
    assert (autograd.tensor([1 + 1j]) * 0.1).dtype == autograd.complex64


def test_powers_and_vdot_of_complex_tensors():
    z = autograd.tensor([1 + 2j, -1 + 0.5j])
    w = autograd.tensor([0.5 - 1j, 2 + 1j])
    root = z ** 0.5
    assert root.dtype == autograd.complex64  # (it was float32, the imaginary part dropped)
    np.testing.assert_allclose(root.numpy(), np.sqrt(z.numpy()), rtol=1e-6)
    np.testing.assert_allclose((z ** -1.0).numpy(), 1 / z.numpy(), rtol=1e-6)
    np.testing.assert_allclose(autograd.vdot(z, w).item(), np.vdot(z.numpy(), w.numpy()), rtol=1e-6)  # Σ conj(z) w
    np.testing.assert_allclose(autograd.dot(z, w).item(), np.dot(z.numpy(), w.numpy()), rtol=1e-6)


def test_adjoint_is_the_conjugate_transpose():
    z = np.array([[1 + 2j, 3 - 1j], [0.5j, 2]])
    np.testing.assert_array_equal(autograd.tensor(z).adjoint().numpy(), z.conj().T)
    assert autograd.tensor(z).mH.tolist() == autograd.tensor(z).adjoint().tolist()


def test_polar_gradient_of_its_magnitude_is_pytorchs_at_zero_and_below(T):
    # PyTorch's Re(conj(g) sgn(z)): e^(iθ) for r > 0, 0 at r = 0 (a masked bin gets none), -e^(iθ) for r < 0
    size = T.tensor([-1.0, 0.0, 2.0], dtype=T.float64, requires_grad=True)
    angle = T.tensor([0.3, 0.3, 0.3], dtype=T.float64, requires_grad=True)
    z = T.polar(size, angle)
    (z.real * 2 + z.imag * 3).sum().backward()
    along = 2 * np.cos(0.3) + 3 * np.sin(0.3)
    np.testing.assert_allclose(size.grad.numpy(), [-along, 0.0, along], rtol=1e-12)
    across = -2 * np.sin(0.3) + 3 * np.cos(0.3)
    np.testing.assert_allclose(angle.grad.numpy(), [-across, 0.0, 2 * across], rtol=1e-12)
