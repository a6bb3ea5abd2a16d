"""logcumsumexp differentiated to higher orders: its derivative is a primitive of its own (a running sum of dL/dy
weighted by e^(x_k - y_i), computed in log space), whose derivatives are sums of the same kind. Before, with
create_graph and a constant dL/dy (a weighted sum), ln 0 = -inf reached the graph and the second derivative came
out NaN; and the form recorded for a dL/dy that requires grad overflowed where y spans more than e^709. Complex
input, refused by NumPy's real-only logaddexp before, is computed as PyTorch computes it."""

import numpy as np


def _derivatives(T, f, x0, w, v, u):
    x = T.tensor(x0, requires_grad=True)
    (g,) = T.autograd.grad((f(x) * w).sum(), x, create_graph=True)
    (g2,) = T.autograd.grad((g * v).sum(), x, create_graph=True)
    (g3,) = T.autograd.grad((g2 * u).sum(), x)
    return g.detach().numpy(), g2.detach().numpy(), g3.numpy()


def test_derivatives_of_logcumsumexp_match_log_cumsum_exp(T):
    rng = np.random.default_rng(0)
    x0 = np.abs(rng.standard_normal((6, 3))) + 0.3
    w, v, u = (T.tensor(rng.standard_normal((6, 3))) for _ in range(3))  # dL/dy of both signs, partly 0 each
    ours = _derivatives(T, lambda x: T.logcumsumexp(x, 0), x0, w, v, u)
    composite = _derivatives(T, lambda x: T.log(T.cumsum(T.exp(x), 0)), x0, w, v, u)
    np.testing.assert_allclose(ours[0], composite[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours[1], composite[1], rtol=1e-10, atol=1e-12)
    if T.__name__ == "autograd":  # (PyTorch's third derivative is NaN in the rows after the first sign change)
        np.testing.assert_allclose(ours[2], composite[2], rtol=1e-9, atol=1e-11)


def test_recorded_derivative_over_a_wide_range(T):
    """y from -1000 to 1000: e^(x_k - y_i) is formed in log space, never as e^(x_k - c) · e^(c - y_i)."""
    x = T.tensor([[-1000.0, 0.0], [-1000.0, -1e300], [1000.0, 3.0]], dtype=T.float64, requires_grad=True)
    weights = T.tensor([[1.0, -1.0], [2.0, 0.5], [-1.0, 1.0]], dtype=T.float64)
    (g,) = T.autograd.grad((T.logcumsumexp(x, 0) * weights).sum(), x, create_graph=True)
    # column 0: y = (-1000, -1000 + ln 2, 1000): dL/dx = (1 + 2/2, 2/2, -1) (the last row's e^-2000 is 0);
    # column 1: y = (0, 0, ln(1 + e^3)): dL/dx = (-1 + 0.5 + s, 0, e^3 s) with s = 1 / (1 + e^3)
    s = 1 / (1 + np.exp(3.0))
    expected = [[2.0, -0.5 + s], [1.0, 0.0], [-1.0, np.exp(3.0) * s]]
    np.testing.assert_allclose(g.detach().numpy(), expected, rtol=1e-12, atol=1e-300)


def test_complex_logcumsumexp_and_its_derivatives(T):
    """Complex input (PyTorch has it): the running log-add-exp as PyTorch's kernel takes it, the gradient with the
    conjugate (holomorphic) convention, both checked against log(cumsum(exp(z)))."""
    rng = np.random.default_rng(1)
    z0 = rng.standard_normal((6, 3)) + 1j * rng.standard_normal((6, 3))
    w = T.tensor(rng.standard_normal((6, 3)) + 1j * rng.standard_normal((6, 3)))
    results = []
    for f in (lambda z: T.logcumsumexp(z, 0), lambda z: T.log(T.cumsum(T.exp(z), 0))):
        z = T.tensor(z0, requires_grad=True)
        y = f(z)
        (g,) = T.autograd.grad((y * w).sum().real, z, create_graph=True)
        (g2,) = T.autograd.grad((g * w).sum().abs(), z)
        results.append([r.detach().resolve_conj().numpy() for r in (T.exp(y), g, g2)])
    for ours, composite in zip(*results):
        np.testing.assert_allclose(ours, composite, rtol=1e-10, atol=1e-12)


def test_complex_logcumsumexp_at_infinities(T):
    z = T.tensor([complex(-np.inf, 0), 1 + 1j, complex(-np.inf, 2), 1000 + 1j, -1000 + 3j], dtype=T.complex128)
    y = T.logcumsumexp(z, 0).numpy()
    assert y[0].real == -np.inf
    np.testing.assert_allclose(y[1:3], [1 + 1j, 1 + 1j], rtol=1e-15)
    np.testing.assert_allclose(y[3:], [1000 + 1j, 1000 + 1j], rtol=1e-15)
