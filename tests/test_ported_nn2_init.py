"""nn.init, ported from PyTorch's test/nn/test_init.py (TestNNInit and TestNNInitDeviceType on CPU) where
tests/test_ported_nn_init.py (test_nn.py's TestNNInit) does not reach: calculate_gain's argument checks,
the generator= argument (the same draws as the global generator seeded alike, and repeatable), trunc_normal_
in float16/float32/float64 (bounds, a narrow interval far in the tail, no values rounded onto the bounds, enough
distinct values, its mean), dirac_ as the identity convolution with groups, and the rank errors. Scipy's KS
tests become moment checks on seeded draws. Each test runs on chainrule's `nn` and, where it is installed, on
PyTorch's."""

import math

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def truncated_normal_mean(mean, std, a, b):
    phi = lambda z: math.exp(-z * z / 2) / math.sqrt(2 * math.pi)   # noqa: E731
    Phi = lambda z: (1 + math.erf(z / math.sqrt(2))) / 2            # noqa: E731
    alpha, beta = (a - mean) / std, (b - mean) / std
    return mean + std * (phi(alpha) - phi(beta)) / (Phi(beta) - Phi(alpha))


def test_calculate_gain(T, nn):
    for param in [True, [1], {"a": "b"}]:
        raises(ValueError, f"negative_slope {param!r} (is )?not a valid number".replace("[", "\\[").replace("]", "\\]"),
               nn.init.calculate_gain, "leaky_relu", param)
    for name in ["ab", "zzzzz", "notanonlinearitynamea"]:
        raises(ValueError, f"Unsupported nonlinearity {name}", nn.init.calculate_gain, name)
    assert nn.init.calculate_gain("selu") == 0.75
    assert nn.init.calculate_gain("leaky_relu", 10) == 0.14071950894605836


def test_trunc_normal_generator(T, nn):
    gen = T.Generator()
    gen.manual_seed(42)
    drawn = nn.init.trunc_normal_(T.empty(5), generator=gen)
    T.manual_seed(42)
    ref = nn.init.trunc_normal_(T.empty(5))
    same(drawn, values(ref))
    assert ((values(drawn) >= -2) & (values(drawn) <= 2)).all()


@pytest.mark.parametrize("name", ["uniform_", "normal_", "trunc_normal_", "xavier_uniform_", "xavier_normal_",
                                  "kaiming_uniform_", "kaiming_normal_", "orthogonal_"])
def test_init_generator_repeats_and_leaves_the_global_one(T, nn, name):
    def draw(seed):
        gen = T.Generator()
        gen.manual_seed(seed)
        return values(getattr(nn.init, name)(T.empty(6, 5), generator=gen))

    T.manual_seed(0)
    first = draw(3)
    global_after = values(T.rand(3))
    T.manual_seed(0)
    same(draw(3), first)                            # the same generator state: the same values
    same(T.rand(3), global_after)                   # and the global generator untouched
    assert not np.array_equal(draw(4), first)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_trunc_normal_dtypes(T, nn, dtype):
    T.manual_seed(5)
    rng = np.random.default_rng(5)
    for dims in [1, 2, 4]:
        size = [int(rng.integers(5 if dims == 4 else 30, 9 if dims == 4 else 50)) for _ in range(dims)]
        mean, std = rng.uniform(-3, 3), rng.uniform(0.01, 1)
        a, b = rng.uniform(mean - 2 * std, mean), rng.uniform(mean, mean + 2 * std)
        t = nn.init.trunc_normal_(T.zeros(*size, dtype=getattr(T, dtype)), mean=mean, std=std, a=a, b=b)
        assert str(t.dtype).endswith(dtype)
        v = values(t).astype(np.float64)
        lo, hi = float(np.array(a, dtype)), float(np.array(b, dtype))     # the bounds at the tensor's precision
        assert v.min() >= lo and v.max() <= hi


@pytest.mark.parametrize("dtype, min_unique", [("float16", 3000), ("float32", 5000), ("float64", 5000)])
def test_trunc_normal_values(T, nn, dtype, min_unique):
    T.manual_seed(6)
    # a sample of the value space: many distinct values, none infinite or NaN, the truncated mean
    v = values(nn.init.trunc_normal_(T.empty(10000, dtype=getattr(T, dtype)), mean=0.0, std=1.0, a=-2.0, b=2.0))
    v = v.astype(np.float64)
    assert v.min() >= -2 and v.max() <= 2 and np.isfinite(v).all()
    assert len(np.unique(v)) > min_unique
    assert abs(v.mean()) < 0.03 and abs(v.std() - 0.8796) < 0.03     # (N(0,1) cut at ±2 has std 0.8796)
    # a narrow interval far in the tail
    v = values(nn.init.trunc_normal_(T.empty(10000, dtype=getattr(T, dtype)), mean=0.0, std=1.0, a=2.0, b=3.0))
    v = v.astype(np.float64)
    assert v.min() >= 2 and v.max() <= 3
    assert abs(v.mean() - truncated_normal_mean(0.0, 1.0, 2.0, 3.0)) < 0.02
    # a small std: nothing rounded onto the bounds
    v = values(nn.init.trunc_normal_(T.empty(10000, dtype=getattr(T, dtype)), mean=0.0, std=0.1, a=-2.0, b=2.0))
    assert (v == -2.0).sum() == 0 and (v == 2.0).sum() == 0
    assert abs(v.astype(np.float64).std() - 0.1) < 0.005


def test_constant_ones_zeros_any_rank(T, nn):
    for dims in [1, 2, 4]:
        shape = (2, 3, 1, 4)[:dims]
        same(nn.init.constant_(T.empty(*shape), 7.25), np.full(shape, 7.25, np.float32))
        same(nn.init.ones_(T.empty(*shape)), np.ones(shape, np.float32))
        same(nn.init.zeros_(T.full(shape, 3.0)), np.zeros(shape, np.float32))


@pytest.mark.parametrize("dims", [3, 4, 5])
@pytest.mark.parametrize("groups", [1, 2, 3])
def test_dirac_properties(T, nn, dims, groups):
    for a, b in [(1, 1), (3, 2), (2, 5 * groups)]:
        t = nn.init.dirac_(T.randn(*(a * groups, b, 2, 3, 2)[:dims]), groups)
        min_d = min(a, b)
        v = values(t)
        assert np.count_nonzero(v) == min_d * groups
        assert v.sum() == min_d * groups


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_dirac_identity(T, nn, F, groups, spatial):
    batch, in_c, out_c, size, kernel_size = 4, 3, 9, 5, 3
    eff_out_c = out_c // groups
    x = T.randn(*(batch, in_c) + (size,) * spatial)
    weight = T.cat([T.zeros(*(eff_out_c, in_c) + (kernel_size,) * spatial)] * groups)
    nn.init.dirac_(weight, groups)
    out = values(getattr(F, f"conv{spatial}d")(x, weight))
    inner = values(x)[(slice(None), slice(None)) + (slice(1, -1),) * spatial]
    for g in range(groups):
        # each group passes the input channels through and leaves its extra outputs zero
        same(out[:, eff_out_c * g:eff_out_c * g + in_c], inner)
        assert not out[:, eff_out_c * g + in_c:eff_out_c * (g + 1)].any()


def test_rank_errors(T, nn):
    for dims in [1, 2, 6]:
        raises(ValueError, "Only tensors with 3, 4, or 5 dimensions are supported", nn.init.dirac_,
               T.zeros(*([2] * dims)))
    for dims in [1, 3]:
        raises(ValueError, "Only tensors with 2 dimensions are supported", nn.init.eye_, T.zeros(*([2] * dims)))
        raises(ValueError, "Only tensors with 2 dimensions are supported", nn.init.sparse_, T.zeros(*([2] * dims)),
               0.5)
    for name in ["xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_"]:
        for t in [T.tensor(0.0), T.zeros(1)]:
            raises(ValueError, "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions",
                   getattr(nn.init, name), t)


def test_kaiming_uniform_warning_on_0element_tensor(T, nn):
    t = T.empty(0, 1)
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        out = nn.init.kaiming_uniform_(t)
    assert out is t and tuple(t.shape) == (0, 1)


@pytest.mark.parametrize("use_gain", [True, False])
@pytest.mark.parametrize("shape", [(3, 4), (4, 3), (20, 2, 3, 4), (2, 3, 4, 5)])
def test_orthogonal_gain(T, nn, use_gain, shape):
    T.manual_seed(7)
    gain = 1.7 if use_gain else 1.0
    t = nn.init.orthogonal_(T.zeros(*shape), gain=gain) if use_gain else nn.init.orthogonal_(T.zeros(*shape))
    flat = values(t).reshape(shape[0], -1).astype(np.float64)
    rows, cols = flat.shape
    gram = flat.T @ flat if rows > cols else flat @ flat.T
    close(gram, np.eye(min(rows, cols)) * gain ** 2, rtol=0, atol=1e-5)
