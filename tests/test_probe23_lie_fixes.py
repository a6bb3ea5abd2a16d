"""What the robotics and Lie-group programs found (tests/test_programs_probe23_lie_*.py): PyTorch's matrix_exp of a
lone matrix whose 1-norm lies in its degree-8 band, (0.0512, 0.580] in single precision and (3.40e-4, 0.0499] in
double, is Bader, Blanes and Casas' degree-8 approximant, 1e-5 from e^A at a rotation generator in float32 and
5e-11 in float64; ours was e^A to rounding. Checked against that approximant written out in NumPy, against
PyTorch where installed, and that batches (PyTorch's scaled degree-18 approximant) stay e^A."""

import numpy as np
import pytest
import scipy.linalg

import autograd

SKEW = np.array([[0.0, -0.3, 0.2], [0.3, 0.0, -0.1], [-0.2, 0.1, 0.0]])  # 1-norm 0.5


def degree_8(a):
    """Bader, Blanes and Casas' degree-8 approximant of e^A, with the constants rounded to A's precision."""
    real = np.float32 if a.dtype in (np.float32, np.complex64) else np.float64
    r = 177 ** 0.5
    x3 = 2 / 3
    x1, x2 = real(x3 * (1 + r) / 88), real(x3 * (1 + r) / 352)
    x4, x5 = real((-271 + 29 * r) / (315 * x3)), real((-11 + 11 * r) / (1260 * x3))
    x6, x7, y2 = real((-99 + 11 * r) / (5040 * x3)), real((89 - r) / (5040 * x3)), real((857 - 58 * r) / 630)
    eye = np.eye(a.shape[-1], dtype=a.dtype)
    a2 = a @ a
    a4 = a2 @ (x1 * a + x2 * a2)
    a8 = (real(x3) * a2 + a4) @ (x4 * eye + x5 * a + x6 * a2 + x7 * a4)
    return eye + a + y2 * a2 + a8


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


@pytest.mark.parametrize("dtype, scale", [("float32", 1.0), ("float32", 0.2), ("float64", 0.09), ("float64", 0.002),
                                          ("complex64", 0.9), ("complex128", 0.05)])
def test_a_lone_matrix_in_the_degree_8_band_gets_pytorchs_approximant(dtype, scale):
    a = (SKEW * scale).astype(dtype)
    if dtype.startswith("complex"):
        a = a + (0.1j * scale * SKEW.T).astype(dtype)
    ours = autograd.linalg.matrix_exp(autograd.tensor(a)).numpy()
    eps = np.finfo(a.dtype).eps
    np.testing.assert_allclose(ours, degree_8(a), rtol=0, atol=8 * eps)
    for batch_of_one in (a[None], a[None, None]):
        batched = autograd.linalg.matrix_exp(autograd.tensor(batch_of_one)).numpy()
        np.testing.assert_array_equal(batched.reshape(a.shape), ours)
    torch = torch_or_none()
    if torch is not None:
        np.testing.assert_allclose(ours, torch.linalg.matrix_exp(torch.from_numpy(a)).numpy(), rtol=0, atol=8 * eps)


def test_the_approximants_error_is_pytorchs():
    float32 = autograd.linalg.matrix_exp(autograd.tensor(SKEW.astype(np.float32))).numpy()
    assert 4e-6 < np.abs(float32 - scipy.linalg.expm(SKEW)).max() < 6e-6
    float64 = autograd.linalg.matrix_exp(autograd.tensor(SKEW * 0.09)).numpy()
    assert 2e-11 < np.abs(float64 - scipy.linalg.expm(SKEW * 0.09)).max() < 6e-11


@pytest.mark.parametrize("dtype, scale", [("float32", 0.1), ("float32", 2.0), ("float64", 0.09), ("float64", 0.5)])
def test_a_batch_and_norms_outside_the_band_stay_e_to_the_a(dtype, scale):
    a = (SKEW * scale).astype(dtype)
    batch = np.stack([a, 0.5 * a])
    exact = np.stack([scipy.linalg.expm(m.astype(np.float64)) for m in batch])
    ours = autograd.linalg.matrix_exp(autograd.tensor(batch)).numpy()
    np.testing.assert_allclose(ours, exact, rtol=0, atol=4 * np.finfo(a.dtype).eps)
    outside = (SKEW * 1.3).astype(dtype)  # 1-norm 0.65: past both bands
    np.testing.assert_allclose(autograd.linalg.matrix_exp(autograd.tensor(outside)).numpy(),
                               scipy.linalg.expm(outside.astype(np.float64)), rtol=0, atol=4 * np.finfo(a.dtype).eps)
    torch = torch_or_none()
    if torch is not None:
        np.testing.assert_allclose(ours, torch.linalg.matrix_exp(torch.from_numpy(batch)).numpy(), rtol=0,
                                   atol=8 * np.finfo(a.dtype).eps)


def test_the_gradient_in_the_band_is_pytorchs():
    a = autograd.tensor(SKEW * 0.09, requires_grad=True)
    weights = np.arange(9.0).reshape(3, 3) * 1e-3  # the backward's block matrix stays a lone one in the band
    (autograd.linalg.matrix_exp(a) * autograd.tensor(weights)).sum().backward()
    torch = torch_or_none()
    if torch is not None:
        t = torch.tensor(SKEW * 0.09, requires_grad=True)
        (torch.linalg.matrix_exp(t) * torch.tensor(weights)).sum().backward()
        np.testing.assert_allclose(a.grad.numpy(), t.grad.numpy(), rtol=1e-12, atol=1e-16)
    step = 1e-6  # and it is the adjoint of e^A's derivative, to the approximant's error
    fd = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            d = np.zeros((3, 3))
            d[i, j] = step
            difference = scipy.linalg.expm(SKEW * 0.09 + d) - scipy.linalg.expm(SKEW * 0.09 - d)
            fd[i, j] = (difference * weights).sum() / (2 * step)
    np.testing.assert_allclose(a.grad.numpy(), fd, atol=1e-9)
