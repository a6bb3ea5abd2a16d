"""Complex convolutions differentiated (PyTorch has them; chainrule refused: "its derivative is written for real
numbers"): conv2d, conv1d, conv_transpose2d, unfold/fold and scatter, the gradient dL/dRe + i dL/dIm of a real
loss by central differences (each operand of the bilinear convolution takes the other's conjugate)."""

import numpy as np
import pytest

import nn


def _check_by_finite_differences(T, loss, arrays, samples):
    leaves = [T.tensor(a, requires_grad=True) for a in arrays]
    grads = [g.resolve_conj().numpy() for g in T.autograd.grad(loss(*leaves), leaves)]
    h = 1e-6
    for i, idx in samples:
        for unit, part in ((1.0, "real"), (1j, "imag")):
            plus = [a.copy() for a in arrays]
            minus = [a.copy() for a in arrays]
            plus[i][idx] += h * unit
            minus[i][idx] -= h * unit
            fd = (loss(*map(T.tensor, plus)).item() - loss(*map(T.tensor, minus)).item()) / (2 * h)
            assert getattr(grads[i][idx], part) == pytest.approx(fd, rel=1e-6, abs=1e-8), (i, idx, part)


@pytest.mark.parametrize("op", ["conv2d", "conv1d", "conv_transpose2d", "unfold_fold", "scatter"])
def test_complex_convolution_gradient(T, op):
    F = nn.functional if T.__name__ == "autograd" else T.nn.functional
    rng = np.random.default_rng(4)

    def c(*shape):
        return rng.standard_normal(shape) + 1j * rng.standard_normal(shape)

    x, w, v = c(1, 2, 5, 4), c(4, 1, 3, 2), c(1, 4, 3, 3)
    f = {"conv2d": lambda x, w: F.conv2d(x, w, stride=(2, 1), padding=1, groups=2),
         "conv1d": lambda x, w: F.conv1d(x.flatten(2), w[:, :, :, 0], groups=2),
         "conv_transpose2d": lambda x, w: F.conv_transpose2d(x, w.reshape(2, 2, 3, 2), stride=2, padding=1),
         "unfold_fold": lambda x, w: F.fold(F.unfold(x * w[0, 0, 0, 0], (2, 3), padding=1), (5, 4), (2, 3), padding=1),
         "scatter": lambda x, w: x.flatten(2).scatter(2, T.tensor([[[3, 0, 1]] * 2]), w[:2, 0, :, 0][None])}[op]

    def loss(x, w):
        y = f(x, w)
        weights = T.tensor(np.resize(v.reshape(-1), y.numel()).reshape(y.shape))
        return (y * weights).sum().real

    _check_by_finite_differences(T, loss, [x, w], [(0, (0, 1, 2, 3)), (0, (0, 0, 0, 0)), (1, (2, 0, 1, 1)),
                                                     (1, (0, 0, 0, 0))])


def test_complex_as_strided_gradient(T):
    """as_strided windows that overlap: each element's gradient sums its windows' (complex, unconjugated:
    a rearrangement multiplies by nothing)."""
    z = T.tensor(np.arange(6) + 1j * np.arange(6)[::-1], requires_grad=True)
    windows = z.as_strided((3, 2), (2, 1))  # [z0 z1], [z2 z3], [z4 z5]; then overlapping ones
    overlapping = z.as_strided((2, 3), (2, 1))  # [z0 z1 z2], [z2 z3 z4]
    w = T.tensor([[1 + 1j, 2], [3j, -1], [0.5, 1 - 1j]])
    loss = (windows * w).sum().real + overlapping.sum().real
    (g,) = T.autograd.grad(loss, z)
    # d Re(w z)/dz = conj(w) (PyTorch's convention), plus 1 per overlapping window that shows the element
    expected = np.conj(w.numpy().reshape(-1)) + np.array([1, 1, 2, 1, 1, 0])
    np.testing.assert_allclose(g.resolve_conj().numpy(), expected)
