"""nn.init, ported from PyTorch's test/test_nn.py (TestNNInit): calculate_gain, the uniform / normal /
truncated normal / constant / eye / dirac / orthogonal / sparse initialisers, Xavier and Kaiming (their
bounds and standard deviations from fan in and fan out), the zero-element warning, the deprecated
spellings and the errors. Each test runs on chainrule's `nn` and, where it is installed, on PyTorch's."""

import math
import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture


def test_calculate_gain_linear(T, nn):
    for fn in ["linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
               "sigmoid"]:
        assert nn.init.calculate_gain(fn) == 1


def test_calculate_gain_nonlinear(T, nn):
    gains = {"tanh": 5.0 / 3, "relu": math.sqrt(2), "leaky_relu": math.sqrt(2 / (1 + 0.01 ** 2)), "selu": 0.75}
    for fn, gain in gains.items():
        assert abs(nn.init.calculate_gain(fn) - gain) < 1e-12


def test_calculate_gain_leaky_relu(T, nn):
    for param in [None, 0, 0.01, 10]:
        gain = nn.init.calculate_gain("leaky_relu", param)
        expected = math.sqrt(2.0 / (1 + (0.01 if param is None else param) ** 2))
        assert abs(gain - expected) < 1e-12
    raises(ValueError, "negative_slope True (is )?not a valid number", nn.init.calculate_gain, "leaky_relu", True)
    raises(ValueError, "negative_slope x (is )?not a valid number", nn.init.calculate_gain, "leaky_relu", "x")
    raises(ValueError, "Unsupported nonlinearity garbage", nn.init.calculate_gain, "garbage")


def test_uniform_normal_trunc_normal(T, nn):
    T.manual_seed(0)
    t = nn.init.uniform_(T.empty(100000, dtype=T.float64), a=-2.0, b=3.0)
    v = values(t)
    assert v.min() >= -2 and v.max() <= 3
    assert abs(v.mean() - 0.5) < 0.02 and abs(v.std() - 5 / math.sqrt(12)) < 0.02
    v = values(nn.init.normal_(T.empty(100000, dtype=T.float64), mean=1.0, std=2.0))
    assert abs(v.mean() - 1.0) < 0.03 and abs(v.std() - 2.0) < 0.03
    v = values(nn.init.trunc_normal_(T.empty(100000, dtype=T.float64), mean=0.5, std=1.0, a=-1.0, b=1.5))
    assert v.min() >= -1.0 and v.max() <= 1.5
    # the mean of N(0.5, 1) truncated to [-1, 1.5]: mu + sigma (phi(alpha) - phi(beta)) / (Phi(beta) - Phi(alpha))
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)   # noqa: E731
    Phi = lambda z: (1 + math.erf(z / math.sqrt(2))) / 2            # noqa: E731
    expected = 0.5 + (phi(-1.5) - phi(1.0)) / (Phi(1.0) - Phi(-1.5))
    assert abs(v.mean() - expected) < 0.02


def test_constant_zeros_ones(T, nn):
    t = T.empty(3, 4)
    out = nn.init.constant_(t, 2.5)
    assert out is t
    same(t, np.full((3, 4), 2.5, np.float32))
    same(nn.init.zeros_(t), np.zeros((3, 4), np.float32))
    same(nn.init.ones_(t), np.ones((3, 4), np.float32))


def test_eye(T, nn):
    same(nn.init.eye_(T.empty(2, 3)), np.eye(2, 3, dtype=np.float32))
    same(nn.init.eye_(T.empty(4, 2)), np.eye(4, 2, dtype=np.float32))
    raises(ValueError, "Only tensors with 2 dimensions are supported", nn.init.eye_, T.empty(2, 2, 2))


def test_dirac(T, nn):
    t = nn.init.dirac_(T.empty(4, 3, 3, 3))
    v = values(t)
    expected = np.zeros((4, 3, 3, 3), np.float32)
    for i in range(3):
        expected[i, i, 1, 1] = 1                    # identity on the first min(out, in) channels
    same(v, expected)
    t = nn.init.dirac_(T.empty(4, 2, 3), groups=2)
    v = values(t)
    assert v[0, 0, 1] == 1 and v[1, 1, 1] == 1 and v[2, 0, 1] == 1 and v[3, 1, 1] == 1 and v.sum() == 4
    raises(ValueError, "Only tensors with 3, 4, or 5 dimensions are supported", nn.init.dirac_, T.empty(2, 2))
    raises(ValueError, "dim 0 must be divisible by groups", nn.init.dirac_, T.empty(3, 2, 3), groups=2)
    # a convolution with a dirac kernel keeps its input
    conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)
    nn.init.dirac_(conv.weight)
    x = T.randn(1, 3, 4, 4)
    close(conv(x), values(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 2, 3)])
def test_orthogonal(T, nn, shape):
    T.manual_seed(1)
    t = nn.init.orthogonal_(T.empty(*shape, dtype=T.float64), gain=2.0)
    m = values(t).reshape(shape[0], -1)
    if m.shape[0] <= m.shape[1]:
        close(m @ m.T, 4 * np.eye(m.shape[0]), rtol=1e-10, atol=1e-10)
    else:
        close(m.T @ m, 4 * np.eye(m.shape[1]), rtol=1e-10, atol=1e-10)
    raises(ValueError, "Only tensors with 2 or more dimensions are supported", nn.init.orthogonal_, T.empty(3))


def test_sparse(T, nn):
    T.manual_seed(2)
    t = nn.init.sparse_(T.empty(10, 6), sparsity=0.3, std=0.5)
    v = values(t)
    assert ((v == 0).sum(0) == math.ceil(0.3 * 10)).all()      # each column: that many zeros
    raises(ValueError, "Only tensors with 2 dimensions are supported", nn.init.sparse_, T.empty(2, 2, 2), 0.5)


@pytest.mark.parametrize("dist", ["uniform", "normal"])
def test_xavier(T, nn, dist):
    T.manual_seed(3)
    shape = (200, 300, 3)                         # fan_in = 300 · 3, fan_out = 200 · 3
    gain = 1.5
    std = gain * math.sqrt(2.0 / (900 + 600))
    t = getattr(nn.init, f"xavier_{dist}_")(T.empty(*shape, dtype=T.float64), gain=gain)
    v = values(t)
    if dist == "uniform":
        assert np.abs(v).max() <= std * math.sqrt(3) + 1e-12
    assert abs(v.std() - std) < 0.02 * std
    raises(ValueError, "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions",
           getattr(nn.init, f"xavier_{dist}_"), T.empty(3))


@pytest.mark.parametrize("dist", ["uniform", "normal"])
@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_kaiming(T, nn, dist, mode):
    T.manual_seed(4)
    shape = (300, 200, 2)
    fan = 400 if mode == "fan_in" else 600
    a = 0.2
    std = math.sqrt(2.0 / (1 + a * a)) / math.sqrt(fan)
    t = getattr(nn.init, f"kaiming_{dist}_")(T.empty(*shape, dtype=T.float64), a=a, mode=mode)
    v = values(t)
    if dist == "uniform":
        assert np.abs(v).max() <= std * math.sqrt(3) + 1e-12
    assert abs(v.std() - std) < 0.02 * std
    t = getattr(nn.init, f"kaiming_{dist}_")(T.empty(*shape, dtype=T.float64), mode=mode, nonlinearity="linear")
    assert abs(values(t).std() - 1 / math.sqrt(fan)) < 0.02 / math.sqrt(fan)
    raises(ValueError, r"Mode garbage not supported, please use one of \['fan_in', 'fan_out'\]",
           getattr(nn.init, f"kaiming_{dist}_"), T.empty(2, 3), mode="garbage")


def test_kaiming_normal_warning_on_0element_tensor(T, nn):
    tensor = T.empty(0, 1)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        _ = nn.init.kaiming_normal_(tensor)
    assert any("Initializing zero-element tensors is a no-op" in str(x.message) for x in w)


def test_deprecation(T, nn):
    x = T.randn(3, 3)

    def fn():
        nn.init.normal(x)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        fn()
    assert any("nn.init.normal` is now deprecated in favor of `nn.init.normal_`" in str(m.message) for m in w)


def test_init_under_no_grad_on_parameters(T, nn):
    p = nn.Parameter(T.empty(3, 4))
    out = nn.init.xavier_uniform_(p)
    assert out is p and p.requires_grad and p.grad_fn is None and p.is_leaf
    nn.init.constant_(p, 1.0)
    (p * 2).sum().backward()
    same(p.grad, np.full((3, 4), 2.0, np.float32))
