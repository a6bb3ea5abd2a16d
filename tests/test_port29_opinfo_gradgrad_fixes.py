"""Second derivatives without PyTorch: gradgradcheck (autograd.autograd.gradgradcheck, PyTorch's check: our
Hessian-vector products against finite differences of our own first derivatives) on common ops with small float64
inputs away from their kinks, and Hessian-vector products pinned against NumPy by hand. The comparison with
PyTorch's second derivatives is tests/test_opinfo_gradgrad.py (needs torch)."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from autograd.autograd import gradgradcheck


def _inputs(*shapes, low=-2.0, high=2.0, seed=0):
    """float64 leaves drawn uniformly from [low, high], kept at least 0.1 from 0 (the kinks of abs, relu, ...)."""
    rng = np.random.default_rng(seed)
    leaves = []
    for shape in shapes:
        values = rng.uniform(low, high, shape)
        values = np.where(np.abs(values) < 0.1, values + np.sign(values + 1e-3) * 0.2, values)
        leaves.append(autograd.tensor(values, requires_grad=True))
    return leaves


def _module(make):
    """A float64 module made once, with the same weights every run (a fresh one per call would change them)."""
    autograd.manual_seed(0)
    return make().double()


POSITIVE = {"low": 0.3, "high": 2.0}
UNIT = {"low": -0.9, "high": 0.9}

CASES = {  # name: (function, shapes, input range)
    "exp": (autograd.exp, [(3, 4)], {}),
    "log": (autograd.log, [(3, 4)], POSITIVE),
    "sqrt": (autograd.sqrt, [(3, 4)], POSITIVE),
    "rsqrt": (autograd.rsqrt, [(3, 4)], POSITIVE),
    "sin": (autograd.sin, [(3, 4)], {}),
    "cos": (autograd.cos, [(3, 4)], {}),
    "tan": (autograd.tan, [(3, 4)], UNIT),
    "tanh": (autograd.tanh, [(3, 4)], {}),
    "sigmoid": (autograd.sigmoid, [(3, 4)], {}),
    "asin": (autograd.asin, [(3, 4)], UNIT),
    "atan": (autograd.atan, [(3, 4)], {}),
    "erf": (autograd.erf, [(3, 4)], {}),
    "lgamma": (autograd.lgamma, [(3, 4)], POSITIVE),
    "digamma": (autograd.digamma, [(3, 4)], POSITIVE),
    "abs": (autograd.abs, [(3, 4)], {}),
    "reciprocal": (autograd.reciprocal, [(3, 4)], POSITIVE),
    "pow": (autograd.pow, [(3, 4), (3, 4)], POSITIVE),
    "pow_scalar": (lambda x: x ** 3, [(3, 4)], {}),
    "mul": (autograd.mul, [(3, 4), (4,)], {}),
    "div": (autograd.div, [(3, 4), (3, 4)], POSITIVE),
    "atan2": (autograd.atan2, [(3, 4), (3, 4)], POSITIVE),
    "hypot": (autograd.hypot, [(3, 4), (3, 4)], {}),
    "maximum": (autograd.maximum, [(3, 4), (3, 4)], {}),
    "matmul": (autograd.matmul, [(3, 4), (4, 2)], {}),
    "bmm": (autograd.bmm, [(2, 3, 4), (2, 4, 2)], {}),
    "sum_dim": (lambda x: x.sum(1), [(3, 4)], {}),
    "prod": (lambda x: x.prod(1), [(3, 4)], {}),
    "norm": (lambda x: x.norm(dim=1), [(3, 4)], {}),
    "var": (lambda x: x.var(1), [(3, 4)], {}),
    "logsumexp": (lambda x: x.logsumexp(1), [(3, 4)], {}),
    "cumsum": (lambda x: x.cumsum(1), [(3, 4)], {}),
    "cumprod": (lambda x: x.cumprod(1), [(3, 4)], {}),
    "softmax": (lambda x: F.softmax(x, dim=1), [(3, 4)], {}),
    "log_softmax": (lambda x: F.log_softmax(x, dim=1), [(3, 4)], {}),
    "gelu": (F.gelu, [(3, 4)], {}),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), [(3, 4)], {}),
    "silu": (F.silu, [(3, 4)], {}),
    "softplus": (F.softplus, [(3, 4)], {}),
    "elu": (F.elu, [(3, 4)], {}),
    "leaky_relu": (F.leaky_relu, [(3, 4)], {}),
    "mish": (F.mish, [(3, 4)], {}),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (4,), w, b), [(3, 4), (4,), (4,)], {}),
    "linear": (F.linear, [(3, 4), (2, 4), (2,)], {}),
    "mse_loss": (F.mse_loss, [(3, 4), (3, 4)], {}),
    "cross_entropy": (lambda x: F.cross_entropy(x, autograd.tensor([0, 3, 1])), [(3, 4)], {}),
    "binary_cross_entropy_with_logits": (F.binary_cross_entropy_with_logits, [(3, 4), (3, 4)], UNIT),
    "cosine_similarity": (F.cosine_similarity, [(3, 4), (3, 4)], {}),
    "conv1d": (F.conv1d, [(2, 2, 5), (3, 2, 3)], {}),
    "det": (autograd.linalg.det, [(3, 3)], {}),
    "inv": (autograd.linalg.inv, [(3, 3)], {}),
    "group_norm": (lambda x, w, b: F.group_norm(x, 2, w, b), [(2, 4, 3), (4,), (4,)], {}),
    "batch_norm_training": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [(4, 3), (3,), (3,)],
                            {}),
    "grid_sample": (lambda x, g: F.grid_sample(x, g * 0.4, align_corners=False), [(1, 1, 3, 3), (1, 2, 2, 2)], UNIT),
    "scaled_dot_product_attention": (F.scaled_dot_product_attention, [(1, 2, 3, 4)] * 3, {}),
    "rnn": (_module(lambda: nn.RNN(3, 2, batch_first=True)), [(1, 2, 3)], {}),
    "lstm": (_module(lambda: nn.LSTM(3, 2)), [(2, 1, 3)], {}),
    "gru": (_module(lambda: nn.GRU(3, 2)), [(2, 1, 3)], {}),
    "multi_head_attention": ((lambda m: lambda x: m(x, x, x)[0])(_module(lambda: nn.MultiheadAttention(4, 2))),
                             [(2, 1, 4)], {}),
    "where": (lambda x, y: autograd.where(x > 0, x * x, y.exp()), [(3, 4), (3, 4)], {}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_gradgradcheck(name):
    fn, shapes, value_range = CASES[name]
    assert gradgradcheck(fn, _inputs(*shapes, **value_range))


def test_gradgradcheck_through_a_sparse_product():
    assert gradgradcheck(lambda x, w: (x.to_sparse() * w).sum() * (x ** 2).sum(), _inputs((2, 3), (2, 3)))


def test_hessian_vector_product_of_a_sum_of_cubes():
    # L = sum(x³ · w): g = 3x² · w, and the gradient of sum(g · v) is 6x · w · v
    x, = _inputs((3,))
    w, v = np.array([1.0, -2.0, 0.5]), np.array([0.5, 3.0, -1.0])
    (g,) = autograd.autograd.grad((x ** 3 * autograd.tensor(w)).sum(), x, create_graph=True)
    (h,) = autograd.autograd.grad((g * autograd.tensor(v)).sum(), x)
    np.testing.assert_allclose(h.numpy(), 6 * x.detach().numpy() * w * v, rtol=1e-12)


def test_sparse_times_dense_passes_the_whole_gradient_to_the_dense_source():
    # PyTorch: (W.to_sparse() * D).sum() differentiates the sparse factor as the dense W (mul's backward with the
    # dense gradient sum gives): dL/dW = D, at W's zeros too; through to_dense or torch.sparse.sum, at W's nonzeros
    D = autograd.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=autograd.float64)
    W = autograd.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=autograd.float64, requires_grad=True)
    (dW,) = autograd.autograd.grad((W.to_sparse() * D).sum(), W)
    np.testing.assert_array_equal(dW.numpy(), [[1.0, 2.0], [3.0, 4.0]])
    (dW,) = autograd.autograd.grad((D * W.to_sparse()).sum() * 2, W)
    np.testing.assert_array_equal(dW.numpy(), [[2.0, 4.0], [6.0, 8.0]])
    (dW,) = autograd.autograd.grad((W.to_sparse() * D).to_dense().sum(), W)
    np.testing.assert_array_equal(dW.numpy(), [[1.0, 0.0], [0.0, 4.0]])
    (dW,) = autograd.autograd.grad(autograd.sparse.sum(W.to_sparse() * D), W)
    np.testing.assert_array_equal(dW.numpy(), [[1.0, 0.0], [0.0, 4.0]])


def test_a_sparse_leaf_times_dense_gets_a_dense_gradient_from_sum():
    S = autograd.sparse_coo_tensor(autograd.tensor([[0, 1], [0, 1]]), autograd.tensor([1.0, 2.0]), (2, 2))
    S.requires_grad_()
    D = autograd.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    (S * D).sum().backward()
    np.testing.assert_array_equal(S.grad.numpy(), [[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_array_equal(D.grad.to_dense().numpy() if D.grad.is_sparse else D.grad.numpy(),
                                  [[1.0, 0.0], [0.0, 2.0]])
