"""Ops whose complex definition conjugates: the inner product ``linalg.vecdot`` (Σ conj(x) y), the
covariance ``cov`` ((X - μ)(X - μ)ᴴ) and ``corrcoef``, the Cholesky solves (A = L Lᴴ), a wide QR's
R₂ = Qᴴ Y, ``eigh``'s real eigenvalues of a Hermitian matrix, the norm inside ``F.normalize`` (of
moduli, not of z·z), and ``float_power`` (complex128 for a complex input). Each computed the real
formula on complex numbers before: a silent wrong answer. Known values without PyTorch, finite
differences where the op differentiates complex inputs, and PyTorch's values where it is installed."""

import numpy as np
import pytest

import autograd
import nn.functional as F
from autograd import Tensor

RNG = np.random.default_rng(0)
Z = RNG.standard_normal((3, 4)) + 1j * RNG.standard_normal((3, 4))
L_FACTOR = np.tril(RNG.standard_normal((3, 3)) + 1j * RNG.standard_normal((3, 3)), -1) + np.diag([2.0, 3.0, 1.5])
B = RNG.standard_normal((3, 2)) + 1j * RNG.standard_normal((3, 2))

CASES = {
    "vecdot": lambda m, z: m.linalg.vecdot(z[0], z[1]),
    "vecdot_dim0": lambda m, z: m.linalg.vecdot(z, z * 2j, dim=0),
    "cov": lambda m, z: m.cov(z),
    "corrcoef": lambda m, z: m.corrcoef(z),
    "cholesky_solve": lambda m, z: m.cholesky_solve(m.tensor(B), m.tensor(L_FACTOR)),
    "cholesky_solve_upper": lambda m, z: m.cholesky_solve(m.tensor(B), m.tensor(L_FACTOR.conj().T.copy()), upper=True),
    "cholesky_inverse": lambda m, z: m.cholesky_inverse(m.tensor(L_FACTOR)),
    "qr_wide_r": lambda m, z: m.linalg.qr(z[:2])[1],
    "eigvalsh": lambda m, z: m.linalg.eigvalsh(z[:, :3] @ z[:, :3].mH),
    "float_power": lambda m, z: m.float_power(z, 0.5),
}


def _expected(name):
    """The definitions, in NumPy."""
    A = L_FACTOR @ L_FACTOR.conj().T
    centred = Z - Z.mean(1, keepdims=True)
    cov = centred @ centred.conj().T / (Z.shape[1] - 1)
    d = np.sqrt(np.diag(cov).real)
    r = cov / d[:, None] / d[None, :]
    return {
        "vecdot": np.vdot(Z[0], Z[1]),
        "vecdot_dim0": (Z.conj() * Z * 2j).sum(0),
        "cov": cov,
        "corrcoef": np.clip(r.real, -1, 1) + 1j * np.clip(r.imag, -1, 1),
        "cholesky_solve": np.linalg.solve(A, B),
        "cholesky_solve_upper": np.linalg.solve(A, B),
        "cholesky_inverse": np.linalg.inv(A),
        "qr_wide_r": np.linalg.qr(Z[:2])[1],
        "eigvalsh": np.linalg.eigvalsh(Z[:, :3] @ Z[:, :3].conj().T),
        "float_power": Z.astype(np.complex128) ** 0.5,
    }[name]


@pytest.mark.parametrize("name", sorted(CASES))
def test_known_values(name):
    result = CASES[name](autograd, Tensor(Z))
    expected = _expected(name)
    if name == "qr_wide_r":  # R is unique up to a phase per row: compare |R| and R's Gram matrix
        result, expected = np.abs(result.numpy()), np.abs(expected)
    else:
        result = result.numpy()
    # (cov scales by the Python number 1 / (N - 1), which a complex128 tensor keeps in double precision:
    # test_a_python_float_keeps_a_complex128_tensors_precision)
    rtol = 1e-6 if name in ("cov", "corrcoef") else 1e-10
    np.testing.assert_allclose(result, expected, rtol=rtol, atol=1e-12)
    if name == "eigvalsh":
        assert result.dtype == np.float64  # a Hermitian matrix's eigenvalues are real


@pytest.mark.parametrize("name", sorted(CASES))
def test_against_pytorch(name):
    torch = pytest.importorskip("torch")
    ours = CASES[name](autograd, Tensor(Z))
    theirs = CASES[name](torch, torch.tensor(Z)).resolve_conj()
    assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
    rtol = 1e-6 if name in ("cov", "corrcoef") else 1e-10  # (see test_known_values)
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=rtol, atol=1e-12)


def test_a_python_float_keeps_a_complex128_tensors_precision():
    z = Tensor(np.array([1 / 3 + 1j / 3]))
    assert (z * (1.0 / 3)).numpy()[0] == (1 / 3 + 1j / 3) * (1.0 / 3)  # PyTorch: exact in double


def test_normalize_divides_by_the_norm_of_the_moduli():
    z = Tensor(Z)
    expected = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    np.testing.assert_allclose(F.normalize(z, dim=1).numpy(), expected, rtol=1e-12)
    np.testing.assert_allclose(F.pairwise_distance(z, z * 0).numpy(), np.linalg.norm(Z + 1e-6, axis=1), rtol=1e-6)


@pytest.mark.parametrize("fn", [lambda x, y: autograd.linalg.vecdot(x, y), lambda x, y: autograd.cov(x + y),
                                lambda x, y: F.normalize(x * y, dim=1)])
def test_complex_gradients_by_finite_differences(fn):
    x = Tensor(Z[:2], requires_grad=True)
    y = Tensor(Z[1:], requires_grad=True)
    assert autograd.gradcheck(fn, (x, y))


def test_linear_differentiates_complex_inputs():
    """F.linear (one fused node) conjugates as MatMul does: dL/dx = dL/dy W̄, dL/dW = (dL/dy)ᵀ x̄, so
    nn.Linear(..., dtype=torch.cfloat) trains (it refused complex inputs before)."""
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((2, 4)) + 1j * rng.standard_normal((2, 4)), requires_grad=True)
    w = Tensor(rng.standard_normal((3, 4)) - 0.5j, requires_grad=True)
    b = Tensor(np.ones(3) * 1j, requires_grad=True)
    assert autograd.gradcheck(F.linear, (x, w, b)) and autograd.gradgradcheck(F.linear, (x, w, b))
    assert autograd.gradcheck(F.linear, (x[0].detach().requires_grad_(), w))  # a single vector
    y = F.linear(x, w, b)
    (y.abs() ** 2).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), 2 * y.detach().numpy().T @ x.detach().numpy().conj(), rtol=1e-12)


def test_linear_complex_against_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    xs, ws = rng.standard_normal((2, 3, 4)) + 1j, rng.standard_normal((3, 4)) * 1j + 0.3
    results = []
    for m, f in ((autograd, F), (torch, torch.nn.functional)):
        x, w = m.tensor(xs, requires_grad=True), m.tensor(ws, requires_grad=True)
        y = f.linear(x, w)
        (y.real * 2 - y.imag + y.abs()).sum().backward()
        results.append([t.detach().resolve_conj().numpy() for t in (y, x.grad, w.grad)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


@pytest.mark.parametrize("call, error, message", [
    (lambda z: F.mse_loss(z, z * 2), NotImplementedError, "\"mse_cpu\" not implemented for 'ComplexDouble'"),
    (lambda z: F.cosine_similarity(z, z * 1j), RuntimeError, "common dtype is ComplexDouble"),
    (lambda z: F.mse_loss(z.to(autograd.complex64), z.real.float()), NotImplementedError, "ComplexFloat"),
])
def test_losses_without_a_complex_definition_refuse_it_as_pytorch(call, error, message):
    """mse_loss computed d·d (not |d|²) and cosine_similarity an unconjugated product of complex
    numbers; PyTorch refuses both. (l1_loss's |d| is defined, and stays.)"""
    with pytest.raises(error, match=message.replace("(", r"\(")):
        call(Tensor(Z))
    np.testing.assert_allclose(F.l1_loss(Tensor(Z), Tensor(Z * 2)).numpy(), np.abs(Z).mean())
