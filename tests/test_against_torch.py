"""Forward values and gradients against PyTorch, where it is installed (marked `torch`)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd

pytestmark = pytest.mark.torch

# ordinary magnitudes: at 1e-175 a variance underflows to 0 and std's derivative is inf in any engine
ELEMENTS = st.floats(-3, 3, allow_nan=False, width=64).filter(lambda v: v == 0 or abs(v) > 1e-3)

# name: (ours, torch's), each a function of two tensors x, y of broadcastable shapes
PAIRS = {
    "arith": (lambda m, x, y: (x * y - x / (y.abs() + 1) + (x - y) ** 2).sum()),
    "max_min": (lambda m, x, y: (m.maximum(x, y) + m.minimum(x, y * 2)).sum()),
    "where": (lambda m, x, y: m.where(x > y, x * 2, y.exp()).sum()),
    "unary": (lambda m, x, y: (x.tanh() + x.sigmoid() + x.relu() + x.sin() * x.cos() + x.exp()).sum()
              + (y.abs() + 1).log().sum() + (y * y + 1).sqrt().sum()),
    "clamp": (lambda m, x, y: (x.clamp(-1, 1) * y).sum()),
    "softmax": (lambda m, x, y: (x.softmax(-1) * y).sum() + (x.log_softmax(0) * y).sum()),
    "reductions": (lambda m, x, y: x.mean() + x.sum(0).sum() + (x * y).logsumexp(-1).sum()
                   + x.max() + x.var() + x.std(-1, keepdim=True).sum()),
}


def _both(fn, x, y):
    import torch

    ours = [autograd.Tensor(x, requires_grad=True), autograd.Tensor(y, requires_grad=True)]
    theirs = [torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)]
    out_ours = fn(autograd, *ours)
    out_theirs = fn(torch, *theirs)
    out_ours.backward()
    out_theirs.backward()
    np.testing.assert_allclose(out_ours.item(), out_theirs.item(), rtol=1e-10, atol=1e-10)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", sorted(PAIRS))
@given(data=st.data())
def test_values_and_gradients_match_torch(name, data):
    shapes = data.draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=1, max_dims=3,
                                                         min_side=2, max_side=4))
    x = data.draw(hnp.arrays(np.float64, shapes.input_shapes[0], elements=ELEMENTS, unique=True))
    if x.size > 1 and np.ptp(x, axis=-1).min() < 1e-2:  # std (of a row, too) of nearly equal values:
        x = x + np.arange(x.size).reshape(x.shape) * 0.1  # derivative 1/(2·0), ill-conditioned in any engine
    y = data.draw(hnp.arrays(np.float64, shapes.input_shapes[1], elements=ELEMENTS))
    y = np.where(np.abs(x - y) < 1e-3, y + 0.5, y) if y.shape == x.shape else y
    _both(PAIRS[name], x, y)


@given(data=st.data())
def test_matmul_and_indexing_match_torch(data):
    import torch

    rng = np.random.default_rng(data.draw(st.integers(0, 10_000)))
    a, b = rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))
    index = rng.integers(0, 3, size=5)
    ours = [autograd.Tensor(a, requires_grad=True), autograd.Tensor(b, requires_grad=True)]
    theirs = [torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)]
    for module, (p, q) in ((autograd, ours), (torch, theirs)):
        out = (p @ q)[:, index, 1:].tanh().sum() + module.cat([p, p * 2], 1).permute(2, 0, 1)[0].sum()
        out.backward()
    for mine, reference in zip(ours, theirs):
        np.testing.assert_allclose(mine.grad.numpy(), reference.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_double_backward_matches_torch():
    import torch

    x = np.array([0.3, -0.7, 1.1])

    def second_derivative(grad, t):
        y = (t.tanh() * t.sigmoid()).softmax(0)
        (g,) = grad(y[0], t, create_graph=True)
        (h,) = grad((g * g).sum(), t)
        return h.detach().numpy()

    np.testing.assert_allclose(second_derivative(autograd.grad, autograd.Tensor(x, requires_grad=True)),
                               second_derivative(torch.autograd.grad, torch.tensor(x, requires_grad=True)),
                               rtol=1e-10)
