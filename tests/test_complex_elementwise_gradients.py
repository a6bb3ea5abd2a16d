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


@pytest.mark.parametrize("name", ["pow", "lerp"])
def test_complex_binary_gradients_by_finite_differences(T, name):
    """z^y (both complex tensors: PowBackward1) and lerp(a, b, w) with complex w: each operand's gradient."""
    rng = np.random.default_rng(2)
    operands = [rng.uniform(0.3, 1.5, 3) + 1j * rng.uniform(-1, 1, 3) for _ in range(3)]
    w = rng.standard_normal(3) + 1j * rng.standard_normal(3)
    f = {"pow": lambda a, b, c: a ** b + c, "lerp": lambda a, b, c: T.lerp(a, b, c)}[name]

    def loss(*values):
        return (f(*values) * T.tensor(w)).sum().real

    leaves = [T.tensor(v, requires_grad=True) for v in operands]
    grads = [g.resolve_conj().numpy() for g in T.autograd.grad(loss(*leaves), leaves)]
    h = 1e-6
    for i, grad in enumerate(grads):
        for k in range(3):
            for unit, part in ((1.0, "real"), (1j, "imag")):
                plus = [v.copy() for v in operands]
                minus = [v.copy() for v in operands]
                plus[i][k] += h * unit
                minus[i][k] -= h * unit
                fd = (loss(*map(T.tensor, plus)).item() - loss(*map(T.tensor, minus)).item()) / (2 * h)
                assert getattr(grad[k], part) == pytest.approx(fd, rel=1e-6, abs=1e-8), (i, k, part)


def test_complex_power_of_zero_has_a_zero_exponent_gradient(T):
    """d(0^y)/dy = 0^y ln 0 → 0 for Re y > 0: 0 (PyTorch gives NaN for complex y, 0 for real)."""
    x = T.tensor([0j, 1 + 1j], requires_grad=True)
    y = T.tensor([2 + 1j, 0.5 - 0.5j], requires_grad=True)
    (gy,) = T.autograd.grad((x ** y).real.sum(), y)
    if T.__name__ == "autograd":
        assert gy.numpy()[0] == 0
    assert np.isfinite(gy.resolve_conj().numpy()[1])
