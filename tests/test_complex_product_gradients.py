"""Gradients of prod and cumprod of complex tensors (chainrule refused them: "its derivative is written for real
numbers"): PyTorch's convention dL/dRe z + i dL/dIm z for a real L, checked by central differences, with a zero
among the factors (where the product of the others is formed without dividing)."""

import numpy as np
import pytest


@pytest.mark.parametrize("op", ["prod", "prod_dim", "cumprod"])
def test_complex_product_gradient_by_finite_differences(T, op):
    rng = np.random.default_rng(0)
    z0 = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    z0[1, 2] = 0
    w = rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))
    f = {"prod": lambda z: z.prod() * T.tensor(w[0, 0]), "prod_dim": lambda z: z.prod(1) * T.tensor(w[:, 0]),
         "cumprod": lambda z: z.cumprod(1) * T.tensor(w)}[op]

    def loss(z):
        return f(z).sum().real

    z = T.tensor(z0, requires_grad=True)
    (grad,) = T.autograd.grad(loss(z), z)
    grad = grad.resolve_conj().numpy()
    h = 1e-6
    for idx in [(0, 0), (1, 2), (2, 3)]:
        for unit, part in ((1.0, "real"), (1j, "imag")):
            plus, minus = z0.copy(), z0.copy()
            plus[idx] += h * unit
            minus[idx] -= h * unit
            fd = (loss(T.tensor(plus)).item() - loss(T.tensor(minus)).item()) / (2 * h)
            assert getattr(grad[idx], part) == pytest.approx(fd, rel=1e-6, abs=1e-9)
