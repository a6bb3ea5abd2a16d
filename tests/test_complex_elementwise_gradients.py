"""Complex gradients of log2, log10, log1p, exp2, expm1, asin, acos, atan, asinh, acosh, atanh and rsqrt
(chainrule refused them: "its derivative is written for real numbers"; PyTorch has them): dL/dRe z + i dL/dIm z
for a real L, by central differences, at points off the branch cuts, and acosh's on the branch of acosh
(1 / (√(z - 1) √(z + 1)), not 1 / √(z² - 1), which has the opposite sign in the left half-plane)."""

import numpy as np
import pytest

OPS = ["log2", "log10", "log1p", "exp2", "expm1", "asin", "acos", "atan", "asinh", "acosh", "atanh", "rsqrt"]


@pytest.mark.parametrize("name", OPS)
def test_complex_gradient_by_finite_differences(T, name):
    z0 = np.array([0.3 + 0.4j, -0.7 + 0.2j, 1.5 - 0.8j, -2.0 - 1.1j])
    w = np.array([1.0 - 0.5j, 0.3 + 2.0j, -1.2 + 0.1j, 0.4 - 0.9j])
    op = getattr(T, name)

    def loss(z):
        return (op(z) * T.tensor(w)).sum().real

    z = T.tensor(z0, requires_grad=True)
    (grad,) = T.autograd.grad(loss(z), z)
    grad = grad.resolve_conj().numpy()
    h = 1e-6
    for k in range(len(z0)):
        for unit, part in ((1.0, "real"), (1j, "imag")):
            plus, minus = z0.copy(), z0.copy()
            plus[k] += h * unit
            minus[k] -= h * unit
            fd = (loss(T.tensor(plus)).item() - loss(T.tensor(minus)).item()) / (2 * h)
            assert getattr(grad[k], part) == pytest.approx(fd, rel=1e-6, abs=1e-8), (k, part)
