"""Dropout, ported from PyTorch's test/nn/test_dropout.py (TestDropoutNN and TestDropoutNNDeviceType on
CPU): Dropout, Dropout1d/2d/3d, AlphaDropout and FeatureAlphaDropout. PyTorch's random streams are not
chainrule's, so each test fixes the generator (`manual_seed`) and checks what holds for any stream: zeros
where dropped and x/(1-p) elsewhere (the gradient the same mask), the fraction dropped near p, whole
channels dropped together (and the no-batch form drawing as the batched one), alpha dropout's affine map
(a·x + b kept, a·α' + b dropped), eval mode and p=0 as the identity, p=1, in-place writes, dtypes, the
deprecated ranks' warnings and the errors. Each test runs on chainrule's `nn` and, where it is installed,
on PyTorch's. (Basic Dropout checks of test_nn.py are in tests/test_ported_nn_layers.py.)"""

import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F

SELU_SATURATION = -1.0507009873554804934193349852946 * 1.6732632423543772848170429916717  # α' = -λα


def alpha_affine(p):
    """Alpha dropout's output map y -> a·y + b (Klambauer et al., 2017), from p alone."""
    a = ((1 - p) * (1 + p * SELU_SATURATION ** 2)) ** -0.5
    return a, -a * SELU_SATURATION * p


def channel_layers(nn):
    return {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}


def test_invalid_dropout_p(T, nn, F):
    v = T.ones(1)
    for cls in [nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout]:
        for p in [-0.1, 1.1]:
            raises(ValueError, f"dropout probability has to be between 0 and 1, but got {p}", cls, p)
    for fn in [F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout]:
        raises(ValueError, "dropout probability has to be between 0 and 1, but got 1.1", fn, T.ones(2, 3, 4, 5), 1.1)
    raises(ValueError, "between 0 and 1, but got -0.1", F.dropout, v, -0.1)
    # the top-level spellings raise RuntimeError
    raises(RuntimeError, "dropout probability has to be between 0 and 1, but got 1.5", T.dropout, v, 1.5, True)


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_zeros_and_scales(T, nn, p):
    T.manual_seed(0)
    x = T.randn(10000, dtype=T.float64, requires_grad=True)
    out = nn.Dropout(p)(x)
    x_np, out_np = values(x), values(out)
    dropped = out_np == 0
    close(out[~T.tensor(dropped)], x_np[~dropped] / (1 - p), rtol=1e-12, atol=0)
    assert abs(dropped.mean() - p) < 0.03
    # the gradient is the same mask, scaled
    out.backward(T.ones(10000, dtype=T.float64))
    close(x.grad, np.where(dropped, 0.0, 1 / (1 - p)), rtol=1e-12, atol=0)


def test_dropout_mean_is_kept(T, nn):
    # PyTorch's _test_dropout: an input filled with 1 - p keeps its mean, forward and backward, in-place too
    p = 0.2
    T.manual_seed(1)
    for inplace in [False, True]:
        x = T.full((1000,), 1 - p).requires_grad_()
        out = nn.Dropout(p, inplace)(x + 0)
        assert abs(values(out).mean() - (1 - p)) < 0.05
        out.backward(T.full((1000,), 1 - p))
        assert abs(values(x.grad).mean() - (1 - p)) < 0.05
        same(values(x.grad) == 0, values(out) == 0)


def test_dropout_fixed_seed_repeats(T, F):
    x = T.ones(1000)
    T.manual_seed(7)
    first = values(F.dropout(x, 0.5))
    second = values(F.dropout(x, 0.5))     # the generator moved on: another mask
    T.manual_seed(7)
    same(F.dropout(x, 0.5), first)
    assert not np.array_equal(first, second)
    same(F.dropout(x, 0.5), second)


def test_dropout_p_zero_one_and_eval(T, nn, F):
    x = T.tensor([1.0, -2.0, 3.5, float("inf")])
    assert F.dropout(x, 0.0, training=True) is x
    assert F.dropout(x, 0.5, training=False) is x
    for cls in [nn.Dropout, nn.AlphaDropout]:
        for inplace in [False, True]:
            module = cls(0.5, inplace).eval()
            same(module(x), [1.0, -2.0, 3.5, np.inf])
    for inplace in [False, True]:
        same(channel_layers(nn)[2](0.5, inplace).eval()(T.ones(2, 3, 4, 4)), np.ones((2, 3, 4, 4), np.float32))
        same(nn.FeatureAlphaDropout(0.5, inplace).eval()(T.ones(2, 3, 4)), np.ones((2, 3, 4), np.float32))
    same(F.alpha_dropout(x), values(x))      # training=False is alpha dropout's default
    # p = 1 drops everything, finite or not (0 · inf is NaN, as a product)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        same(F.dropout(x, 1.0), [0.0, -0.0, 0.0, np.nan])
    y = T.ones(5, requires_grad=True)
    F.dropout(y, 1.0).sum().backward()
    same(y.grad, np.zeros(5, np.float32))
    same(F.dropout(T.ones(2, 3), 1.0, inplace=True), np.zeros((2, 3), np.float32))


def test_empty_dropout(T, F):
    x = T.tensor([])
    assert tuple(F.dropout(x).shape) == (0,)
    assert tuple(F.dropout2d(T.ones(0, 3, 2, 2)).shape) == (0, 3, 2, 2)


def test_dropout_inplace(T, F, nn):
    T.manual_seed(2)
    x = T.ones(200)
    r = F.dropout(x, 0.5, inplace=True)
    assert r is x
    assert set(np.unique(values(x))) == {0.0, 2.0}
    # recorded: the gradient of the in-place result reaches the leaf through the mask
    leaf = T.ones(200, requires_grad=True)
    y = leaf * 3
    z = nn.Dropout(0.5, inplace=True)(y)
    assert z is y
    z.sum().backward()
    same(leaf.grad, np.where(values(z) == 0, 0.0, 6.0).astype(np.float32))
    raises(RuntimeError, "a leaf Variable that requires grad is being used in an in-place operation",
           F.dropout, T.ones(3, requires_grad=True), 0.5, True, True)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_dropout_keeps_dtype(T, F, dtype):
    T.manual_seed(3)
    for p in [0.2, 0.5]:
        out = F.dropout(T.ones(500, dtype=getattr(T, dtype)), p)
        assert str(out.dtype).endswith(dtype)
        assert set(np.unique(values(out)).tolist()) == {0.0, 1 / (1 - p)}    # 1.25 and 2 are exact in float16


@pytest.mark.parametrize("dtype, error, words", [
    ("int64", RuntimeError, "result type Float can't be cast to the desired output type Long"),
    ("int32", RuntimeError, "result type Float can't be cast to the desired output type Int"),
    ("uint8", RuntimeError, "result type Float can't be cast to the desired output type Byte"),
    ("bool", RuntimeError, "result type Float can't be cast to the desired output type Bool"),
    ("complex64", NotImplementedError, "not implemented for 'ComplexFloat'")])
def test_dropout_refuses_integers_and_complex(T, F, dtype, error, words):
    # a scale of 1/(1 - p) has no integer value: refused, not rounded
    x = T.ones(2, 3, 4, dtype=getattr(T, dtype))
    raises(error, words, F.dropout, x, 0.3)
    raises(error, words, F.dropout1d, x, 0.3)
    raises(error, words.split(" type ")[0], F.alpha_dropout, x, 0.3, True)   # (PyTorch names bool Long here)
    raises(error, words, T.dropout, x, 0.3, True)
    # nothing drawn, nothing refused: eval mode and p = 0 give the input back
    assert F.dropout(x, 0.3, training=False) is x
    assert F.dropout(x, 0.0) is x


def assert_whole_channels(out, batch_dims, scale):
    """Each channel of `out` (the trailing dims after `batch_dims`) is all zeros or all `scale`; some of each."""
    v = values(out)
    per_channel = v.reshape(v.shape[:batch_dims] + (-1,))
    zero, kept = (per_channel == 0).all(-1), (per_channel == np.float32(scale)).all(-1)
    assert np.all(zero | kept)
    assert zero.any() and kept.any()
    return zero


@pytest.mark.parametrize("spatial", [1, 2, 3])
@pytest.mark.parametrize("inplace", [False, True])
def test_channel_dropout_zeroes_whole_channels(T, nn, spatial, inplace):
    T.manual_seed(4)
    shape = (10, 40) + (3,) * spatial
    layer = channel_layers(nn)[spatial](0.5, inplace)
    x = T.ones(*shape)
    out = layer(x)
    assert (out is x) == inplace
    zero = assert_whole_channels(out, 2, 2.0)
    assert abs(zero.mean() - 0.5) < 0.1


@pytest.mark.parametrize("spatial", [1, 3])     # (a 3-D input to Dropout2d is read as batched (N, C, L))
def test_channel_dropout_without_batch_dim(T, nn, spatial):
    layer = channel_layers(nn)[spatial](0.5)
    x = T.rand(*(50,) + (2,) * spatial)
    T.manual_seed(5)
    unbatched = layer(x)
    T.manual_seed(5)
    batched = layer(x.unsqueeze(0)).squeeze(0)
    same(unbatched, values(batched))
    per_channel = values(unbatched).reshape(50, -1)
    dropped = (per_channel == 0).all(-1)
    assert np.all(dropped | (per_channel != 0).all(-1)) and dropped.any() and not dropped.all()


def test_channel_dropout_gradient_is_the_channel_mask(T, nn):
    T.manual_seed(6)
    x = T.randn(4, 30, 2, 2, dtype=T.float64, requires_grad=True)
    out = nn.Dropout2d(0.25)(x)
    kept = (values(out).reshape(4, 30, 4) != 0).all(-1)
    close(out, values(x) * kept[:, :, None, None] / 0.75, rtol=1e-12, atol=0)
    out.sum().backward()
    close(x.grad, np.broadcast_to(kept[:, :, None, None] / 0.75, (4, 30, 2, 2)), rtol=1e-12, atol=0)


def test_channel_dropout_ranks(T, nn):
    raises(RuntimeError, "dropout1d: Expected 2D or 3D input, but received a 4D input", nn.Dropout1d(p=0.5),
           T.rand(1, 2, 2, 2))
    raises(RuntimeError, "dropout1d: Expected 2D or 3D input, but received a 1D input", nn.Dropout1d(p=0.5),
           T.rand(2))
    with pytest.warns(UserWarning, match="Received a 5-D input to dropout2d"):
        nn.Dropout2d(p=0.5)(T.rand(1, 2, 2, 2, 2))
    with pytest.warns(UserWarning, match="Received a 2-D input to dropout2d"):
        nn.Dropout2d(p=0.5)(T.rand(1, 2))
    with pytest.warns(UserWarning, match="assuming that channel-wise 1D dropout behavior is desired"):
        nn.Dropout2d(p=0.5)(T.rand(1, 2, 2))
    with pytest.warns(UserWarning, match="Received a 6-D input to dropout3d"):
        nn.Dropout3d(p=0.5)(T.rand(1, 2, 2, 2, 2, 2))
    with pytest.warns(UserWarning, match="Received a 3-D input to dropout3d"):
        nn.Dropout3d(p=0.5)(T.rand(1, 2, 2))


def test_channel_dropout_deprecated_ranks_drop_what_pytorch_drops(T, nn):
    T.manual_seed(8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        # Dropout2d of a 5-D input: one draw per (sample, channel)
        assert_whole_channels(nn.Dropout2d(0.5)(T.ones(6, 20, 2, 2, 2)), 2, 2.0)
        # Dropout2d of a 2-D input (N, C): one draw per element
        v = values(nn.Dropout2d(0.5)(T.ones(40, 50)))
        assert set(np.unique(v)) == {0.0, 2.0}
        # Dropout3d of a 3-D input is read as unbatched (C, D, H): one draw per entry of the first dim
        assert_whole_channels(nn.Dropout3d(0.5)(T.ones(60, 2, 3)), 1, 2.0)
        # ... and of a 6-D one as an unbatched 5-D: the same
        assert_whole_channels(nn.Dropout3d(0.5)(T.ones(60, 2, 1, 1, 2, 1)), 1, 2.0)


def test_dropout_discontiguous_input(T, nn):
    for cls in [nn.Dropout, nn.Dropout2d, nn.Dropout3d]:
        for p in [0, 1e-10]:
            inp = T.empty(2, 3, 3, 6)[..., ::2]
            inp.copy_(T.ones(2, 3, 3, 3))
            out = cls(p=p)(inp)
            same(out, np.ones((2, 3, 3, 3), np.float32))


def test_dropout_permuted_inputs_keep_the_mean(T, nn):
    T.manual_seed(9)
    inp = T.ones(2, 3, 4, 5)
    for perm in [(0, 1, 2, 3), (3, 2, 1, 0), (1, 3, 0, 2)]:
        inverse = tuple(int(i) for i in np.argsort(perm))
        for shift in [(0, 0), (1, 1)]:
            permuted = inp.permute(perm).contiguous().permute(inverse)[shift[0]:, shift[1]:, :, :]
            for p in [1e-10, 0.3, 0.5, 0.7]:
                out = nn.Dropout(p=p)(permuted)
                assert abs(values(out).mean() - 1) <= 0.5 + 0.5 * abs(values(out).mean())   # (PyTorch's tolerance)
                v = values(out)
                if p == 1e-10:
                    same(out, values(permuted))
                else:
                    assert set(np.unique(v).tolist()) <= {0.0, float(np.float32(1 / (1 - p)))}
                    assert (v == 0).any()


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_alpha_dropout_map_and_statistics(T, nn, p):
    T.manual_seed(10)
    x = T.randn(5000, dtype=T.float64, requires_grad=True)
    out = nn.AlphaDropout(p)(x)
    a, b = alpha_affine(p)
    x_np, out_np = values(x), values(out)
    dropped = np.isclose(out_np, a * SELU_SATURATION + b, rtol=0, atol=1e-12)
    close(out_np[~dropped], a * x_np[~dropped] + b, rtol=1e-10, atol=1e-12)
    assert abs(dropped.mean() - p) < 0.03
    # PyTorch's test: zero mean and unit deviation kept
    assert abs(out_np.mean() - x_np.mean()) < 0.1
    assert abs(out_np.std(ddof=1) - x_np.std(ddof=1)) < 0.1
    out.backward(T.ones(5000, dtype=T.float64))
    close(x.grad, np.where(dropped, 0.0, a), rtol=1e-12, atol=0)


def test_alpha_dropout_p_one_and_inplace(T, F):
    same(F.alpha_dropout(T.tensor([1.0, -2.0, 0.5]), 1.0, True), [0.0, -0.0, 0.0])
    T.manual_seed(11)
    x = T.randn(100, dtype=T.float64)
    expected_kept = values(x) * alpha_affine(0.5)[0] + alpha_affine(0.5)[1]
    r = F.alpha_dropout(x, 0.5, True, True)
    assert r is x
    v = values(x)
    dropped = np.isclose(v, sum(c * w for c, w in zip(alpha_affine(0.5), (SELU_SATURATION, 1))), atol=1e-12)
    close(v[~dropped], expected_kept[~dropped], rtol=1e-12, atol=1e-12)
    assert dropped.any() and not dropped.all()


@pytest.mark.parametrize("shape", [(1000, 2, 1, 2, 3), (50, 20, 8, 8)])
def test_feature_alpha_dropout(T, nn, shape):
    T.manual_seed(12)
    x = T.randn(*shape, dtype=T.float64)
    p = 0.5
    a, b = alpha_affine(p)
    out = nn.FeatureAlphaDropout(p)(x)
    x_np, out_np = values(x), values(out)
    per_channel = out_np.reshape(shape[:2] + (-1,))
    dropped = np.isclose(per_channel, a * SELU_SATURATION + b, rtol=0, atol=1e-12).all(-1)
    kept = np.isclose(per_channel, a * x_np.reshape(shape[:2] + (-1,)) + b, rtol=1e-10, atol=1e-12).all(-1)
    assert np.all(dropped | kept)      # whole channels, each dropped to the one value or mapped
    assert abs(dropped.mean() - p) < 0.1
    # PyTorch's test, with the channels it drops
    assert abs(out_np.mean() - x_np.mean()) < 0.1
    assert abs(out_np.std(ddof=1) - x_np.std(ddof=1)) < 0.1
    raises(RuntimeError, "Feature dropout requires at least 2 dimensions in the input",
           nn.FeatureAlphaDropout(p), T.randn(4))


def test_top_level_dropouts(T):
    T.manual_seed(13)
    x = T.ones(20, 30, 2)
    assert T.dropout(x, 0.5, False) is x
    same(T.dropout(x, 1.0, True), np.zeros((20, 30, 2), np.float32))
    v = values(T.feature_dropout(x, 0.5, True))
    assert np.all((v == v[..., :1]).all(-1)) and set(np.unique(v)) == {0.0, 2.0}
    a, b = alpha_affine(0.5)
    v = values(T.feature_alpha_dropout(x, 0.5, True))
    assert np.all((v == v[..., :1]).all(-1))
    np.testing.assert_allclose(np.unique(v), sorted([a * SELU_SATURATION + b, a + b]), rtol=1e-6)
    y = T.ones(100)
    assert T.dropout_(y, 0.5, True) is y
    assert set(np.unique(values(y))) == {0.0, 2.0}


def test_dropout_repr(T, nn):
    assert repr(nn.Dropout()) == "Dropout(p=0.5, inplace=False)"
    assert repr(nn.Dropout2d(0.3, True)) == "Dropout2d(p=0.3, inplace=True)"
    assert repr(nn.AlphaDropout(0.1)) == "AlphaDropout(p=0.1, inplace=False)"
    assert repr(nn.FeatureAlphaDropout(0.2)) == "FeatureAlphaDropout(p=0.2, inplace=False)"
    assert str(nn.Dropout3d(0.25)) == "Dropout3d(p=0.25, inplace=False)"
