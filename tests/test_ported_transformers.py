"""nn.Transformer's layers and scaled_dot_product_attention, ported from PyTorch's test/test_transformers.py
(TestTransformers, TestSDPA and TestSDPAFailureModes on the CPU, the math path), with the MultiheadAttention
cases of test/nn/test_multihead_attention.py that tests/test_ported_nn2_multihead_attention.py leaves out:
the deterministic encoder (constant cos weights) against PyTorch's reference outputs, with padding masks,
1, 2 and 6 layers, a final norm, batch_first, training or not, enable_nested_tensor or not; a batch as long
as its sequences; src_mask and is_causal; mask dtypes refused; a training step with is_causal; subclasses;
bias=False; hooks; scaled_dot_product_attention against a reference by hand over 3-D and 4-D inputs, 2-D to
4-D bool masks, causal, dropout under one seed, gradcheck, a negative scale, broadcast masks and the errors.
The kernels' choice (flash, mem-efficient, nested tensors, mocks of the fused calls) has no counterpart here;
what the fused CPU path does that a user sees is ported: in eval mode with no gradient, MultiheadAttention and
TransformerEncoderLayer give the slow path's values, except that a query whose keys are all masked comes out
NaN (where the slow path's attention gives it zero weights), and ``backends.mha.set_fastpath_enabled(False)``
turns that off. Each test runs on chainrule's libraries and, where it is installed, on PyTorch's."""

import contextlib
import importlib
import math
import warnings
from unittest import mock

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values, xfail_ours

nn = ported_nn.nn  # the fixture
F = ported_nn.F

pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning",
                                        "ignore:The PyTorch API of nested tensors is in prototype stage:UserWarning")


@pytest.fixture
def double_default(T):
    """PyTorch's test runs the deterministic encoder with float64 as the default dtype."""
    before = T.get_default_dtype()
    T.set_default_dtype(T.float64)
    yield
    T.set_default_dtype(before)


def cos_weights_(T, module):
    """Every parameter set to cos(0), cos(1), ... in its own order (computed in float32, as PyTorch's test)."""
    with T.no_grad():
        for p in module.parameters():
            p.copy_(T.cos(T.arange(0, p.numel()).float().view(p.shape)))


ENCODER_INPUT = [[[0.7462, 0.6653, 0.5679, 0.4891], [0.5387, 0.1655, 0.3565, 0.0471]],
                 [[0.8335, 0.2799, 0.5031, 0.2947], [0.1402, 0.0318, 0.7636, 0.1346]],
                 [[0.6333, 0.9344, 0.1376, 0.9938], [0.8924, 0.2872, 0.6692, 0.2944]],
                 [[0.9897, 0.6915, 0.3154, 0.1733], [0.8645, 0.3513, 0.3064, 0.0767]],
                 [[0.8117, 0.2366, 0.4838, 0.7881], [0.3718, 0.4945, 0.9511, 0.0864]]]

# PyTorch's reference outputs of the deterministic encoder (sequence first, (5, 2, 4))
ONE_LAYER = [[[2.428589, 0.020835, -0.602055, -0.085249], [2.427987, 0.021213, -0.602496, -0.084103]],
             [[2.424689, 0.019155, -0.604793, -0.085672], [2.413863, 0.022211, -0.612486, -0.072490]],
             [[2.433774, 0.021598, -0.598343, -0.087548], [2.425104, 0.019748, -0.604515, -0.084839]],
             [[2.436185, 0.022682, -0.596625, -0.087261], [2.433556, 0.021891, -0.598509, -0.086832]],
             [[2.416246, 0.017512, -0.610712, -0.082961], [2.422901, 0.024187, -0.606178, -0.074929]]]
ONE_LAYER_PADDED = [[[2.429026, 0.020793, -0.601741, -0.085642], [2.428811, 0.021445, -0.601912, -0.084252]],
                    [[2.425009, 0.019155, -0.604566, -0.085899], [2.415408, 0.02249, -0.611415, -0.073]],
                    [[2.434199, 0.021682, -0.598039, -0.087699], [2.42598, 0.019941, -0.603896, -0.085091]],
                    [[2.436457, 0.022736, -0.59643, -0.08736], [2.434021, 0.022093, -0.598179, -0.08679]],
                    [[2.416531, 0.017498, -0.610513, -0.083181], [2.4242, 0.024653, -0.605266, -0.074959]]]
TWO_LAYERS_PADDED = [[[2.419051, 0.017446, -0.608738, -0.085003], [2.419102, 0.017452, -0.608703, -0.085026]],
                     [[2.419043, 0.017445, -0.608744, -0.084999], [2.419052, 0.017446, -0.608738, -0.085004]],
                     [[2.419067, 0.017448, -0.608727, -0.085010], [2.419098, 0.017452, -0.608706, -0.085024]],
                     [[2.419072, 0.017449, -0.608724, -0.085012], [2.419119, 0.017455, -0.608691, -0.085034]],
                     [[2.419019, 0.017442, -0.608761, -0.084989], [2.419075, 0.017449, -0.608722, -0.085014]]]
SIX_LAYERS_PADDED = [[[2.419101, 0.017453, -0.608703, -0.085025], [2.419101, 0.017453, -0.608704, -0.085025]]] * 5
TWO_LAYERS_NORM_PADDED = [
    [[1.695949, -0.357635, -0.893077, -0.445238], [1.695955, -0.357639, -0.893050, -0.445266]],
    [[1.695948, -0.357634, -0.893082, -0.445233], [1.695950, -0.357635, -0.893077, -0.445238]],
    [[1.695951, -0.357636, -0.893069, -0.445246], [1.695955, -0.357639, -0.893052, -0.445264]],
    [[1.695952, -0.357636, -0.893066, -0.445249], [1.695957, -0.357641, -0.893041, -0.445276]],
    [[1.695946, -0.357632, -0.893095, -0.445220], [1.695952, -0.357637, -0.893065, -0.445251]]]
SIX_LAYERS_NORM_PADDED = [[[1.695955, -0.357639, -0.893051, -0.445265]] * 2] * 5


@pytest.mark.parametrize("enable_nested_tensor", [True, False])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transformerencoder(T, nn, F, double_default, batch_first, training, enable_nested_tensor):
    def perm(x):
        return np.asarray(x).transpose(1, 0, 2) if batch_first else np.asarray(x)

    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=16, dropout=0.0, activation=F.relu,
                                       batch_first=batch_first)
    cos_weights_(T, layer)

    def encoder(num_layers, norm=None):
        model = nn.TransformerEncoder(layer, num_layers, norm=norm, enable_nested_tensor=enable_nested_tensor)
        return model if training else model.eval()

    x = T.tensor(perm(ENCODER_INPUT))
    context = contextlib.nullcontext() if training else T.no_grad()   # (PyTorch's fast path wants no grad)
    with context:
        model = encoder(1)
        close(model(x), perm(ONE_LAYER), rtol=1e-7, atol=1e-5)
        close(model(x, mask=T.zeros(5, 5) == 1), perm(ONE_LAYER), rtol=1e-7, atol=1e-5)      # all-False src_mask
        padding = T.zeros(2, 5) == 1
        close(model(x, src_key_padding_mask=padding), perm(ONE_LAYER), rtol=1e-7, atol=1e-5)
        padding[0, 1] = True
        padding[1, 3] = True
        padding[1, 4] = True
        close(model(x, src_key_padding_mask=padding), perm(ONE_LAYER_PADDED), rtol=1e-7, atol=1e-5)
        close(encoder(2)(x, src_key_padding_mask=padding), perm(TWO_LAYERS_PADDED), rtol=1e-7, atol=1e-5)
        close(encoder(6)(x, src_key_padding_mask=padding), perm(SIX_LAYERS_PADDED), rtol=1e-7, atol=1e-5)
        norm = nn.LayerNorm(4)
        close(encoder(2, norm)(x, src_key_padding_mask=padding), perm(TWO_LAYERS_NORM_PADDED), rtol=1e-7, atol=1e-5)
        close(encoder(6, norm)(x, src_key_padding_mask=padding), perm(SIX_LAYERS_NORM_PADDED), rtol=1e-7, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("with_no_grad", [True, False])
def test_transformerencoder_square_input(T, nn, with_no_grad, training):
    # batch size == sequence length: the layouts must not be confused
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(4, 2, dim_feedforward=16, dropout=0.0, batch_first=True),
                                  num_layers=2, enable_nested_tensor=False)
    cos_weights_(T, model)
    model.train(training)
    x = T.arange(0, 16).reshape(2, 2, 4).to(T.get_default_dtype())
    src_mask = T.tensor([[0, 1], [0, 0]]).to(T.bool)
    with T.no_grad() if with_no_grad else contextlib.nullcontext():
        result = model(x, mask=src_mask)
    first = [2.420306205749512, 0.017629241570830, -0.607857942581177, -0.085519507527351]
    second = [2.419836044311523, 0.017548924311996, -0.608187675476074, -0.085347734391689]
    close(result, [[first, first], [second, second]], rtol=1.3e-6, atol=1e-5)


@pytest.mark.parametrize("nhead", [1, 4, 8])
def test_transformerencoderlayer_src_mask(T, nn, nhead):
    T.manual_seed(0)
    model = nn.TransformerEncoderLayer(d_model=8, nhead=nhead, dim_feedforward=32, dropout=0.0, batch_first=True)
    src = T.rand(2, 4, 8)
    nothing_masked = T.zeros(4, 4).to(T.bool)
    expected = values(model(src))
    close(model(src, src_mask=nothing_masked), expected, rtol=1e-5, atol=1e-6)
    model.eval()
    with T.no_grad():
        close(model(src, src_mask=nothing_masked), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("nhead", [3, 4])
def test_transformerencoderlayer_no_fastpath_with_hooks(T, nn, nhead):
    model = nn.TransformerEncoderLayer(d_model=12, nhead=nhead, dim_feedforward=12, batch_first=True).eval()
    src = T.rand(2, 4, 12)
    cache = []
    handle = model.self_attn.register_forward_hook(lambda module, inputs, output: cache.append(output[0].detach()))
    with T.inference_mode():
        out = model(src)
    assert len(cache) == 1 and tuple(cache[0].shape) == (2, 4, 12) and tuple(out.shape) == (2, 4, 12)
    handle.remove()


def _mask_keeping_a_key(rng, shape, dtype):
    """A random mask (bool: True = barred; float: a bias in [-9, 9)) that leaves each query some key."""
    if dtype == "bool":
        mask = rng.random(shape) < 0.5
        mask[..., 0] = False
        return mask
    return rng.uniform(-9, 9, shape).astype(np.float32)


@pytest.mark.parametrize("mask_dtype", ["bool", "float32"])
@pytest.mark.parametrize("key_padding_mask_dim", [2, None])
@pytest.mark.parametrize("attn_mask_dim", [2, 3, None])
def test_multiheadattention_fastpath_attn_mask(T, nn, attn_mask_dim, key_padding_mask_dim, mask_dtype):
    B, L, D, H = 2, 4, 8, 4
    rng = np.random.default_rng(attn_mask_dim or 0)
    attn_mask = key_padding_mask = None
    if attn_mask_dim is not None:
        shape = (L, L) if attn_mask_dim == 2 else (B * H, L, L)
        attn_mask = T.tensor(_mask_keeping_a_key(rng, shape, mask_dtype))
    if key_padding_mask_dim is not None:
        key_padding_mask = T.tensor(_mask_keeping_a_key(rng, (B, L), mask_dtype))
    T.manual_seed(1)
    mha = nn.MultiheadAttention(D, H, batch_first=True)
    X = T.randn(B, L, D)
    with warnings.catch_warnings(), T.no_grad():
        warnings.simplefilter("ignore")          # (a float key padding mask with a bool attn_mask: deprecated)
        out, _ = mha.train()(X, X, X, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False)
        out_fp, _ = mha.eval()(X, X, X, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False)
    close(out_fp, values(out), rtol=1e-5, atol=1e-6)
    assert np.isfinite(values(out)).all()


def _fully_masked_cases(T):
    # row 0 and row 3 of the attention mask bar every key; the key padding mask pads all of batch entry 0
    attn_mask = T.tensor([[True] * 4, [False, True, False, True], [False] * 4, [True] * 4])
    all_padded = T.tensor([[True] * 4, [False, False, True, True]])
    return attn_mask, all_padded


def test_fast_path_gives_nan_where_every_key_is_masked(T, nn):
    """PyTorch's fused CPU kernels use an ordinary softmax: in eval mode without gradients a query with no key
    to attend gets NaN (as the attention weights always do), where the training path gives zero weights."""
    T.manual_seed(0)
    mha = nn.MultiheadAttention(8, 4, batch_first=True)
    X = T.randn(2, 4, 8)
    attn_mask, all_padded = _fully_masked_cases(T)
    with T.no_grad():
        slow, _ = mha(X, X, X, attn_mask=attn_mask, need_weights=False)
        fast, _ = mha.eval()(X, X, X, attn_mask=attn_mask, need_weights=False)
        fast_padded, weights = mha(X, X, X, key_padding_mask=all_padded, need_weights=False)
        float_mask = T.zeros(4, 4).masked_fill(attn_mask, float("-inf"))
        float_masked, _ = mha(X, X, X, attn_mask=float_mask, need_weights=False)    # float masks: no fast path
    assert weights is None
    slow, fast = values(slow), values(fast)
    same(slow[:, [0, 3]], np.zeros((2, 2, 8)))                      # zero weights, zero out_proj bias
    assert np.isnan(fast[:, [0, 3]]).all()
    close(fast[:, [1, 2]], slow[:, [1, 2]], rtol=1e-5, atol=1e-6)
    assert np.isnan(values(fast_padded)[0]).all() and np.isfinite(values(fast_padded)[1]).all()
    same(values(float_masked)[:, [0, 3]], np.zeros((2, 2, 8)))
    # outside the fast path: with gradients, sequence first, or not self-attention
    mha(X, X, X, attn_mask=attn_mask, need_weights=False)[0].sum().backward()
    out, _ = mha(X, X, X, attn_mask=attn_mask, need_weights=False)
    same(values(out)[:, [0, 3]], np.zeros((2, 2, 8)))
    with T.no_grad():
        out, _ = mha(X, X.clone(), X.clone(), attn_mask=attn_mask, need_weights=False)
    same(values(out)[:, [0, 3]], np.zeros((2, 2, 8)))

    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    with T.no_grad():
        trained = values(layer(X, src_mask=attn_mask))
        evaluated = values(layer.eval()(X, src_mask=attn_mask))
        padded = values(layer(X, src_key_padding_mask=all_padded))
        stacked = values(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()(X, mask=attn_mask))
    assert np.isfinite(trained).all()
    assert np.isnan(evaluated[:, [0, 3]]).all()
    close(evaluated[:, [1, 2]], trained[:, [1, 2]], rtol=1e-5, atol=1e-6)
    assert np.isnan(padded[0]).all() and np.isfinite(padded[1]).all()
    assert np.isnan(stacked).all()          # the second layer's queries all see a NaN key


def test_disable_fastpath(T, nn):
    T.manual_seed(0)
    mha = nn.MultiheadAttention(8, 4, batch_first=True).eval()
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True).eval()
    X = T.randn(2, 4, 8)
    attn_mask, _ = _fully_masked_cases(T)
    assert T.backends.mha.get_fastpath_enabled()
    T.backends.mha.set_fastpath_enabled(False)
    try:
        assert not T.backends.mha.get_fastpath_enabled()
        with T.no_grad():
            out = values(mha(X, X, X, attn_mask=attn_mask, need_weights=False)[0])
            layer_out = values(layer(X, src_mask=attn_mask))
    finally:
        T.backends.mha.set_fastpath_enabled(True)
    same(out[:, [0, 3]], np.zeros((2, 2, 8)))
    assert np.isfinite(layer_out).all()
    with T.no_grad():
        assert np.isnan(values(mha(X, X, X, attn_mask=attn_mask, need_weights=False)[0])[:, 0]).all()


@pytest.mark.parametrize("padding", [[[False, False, False, True], [False, False, True, True]],
                                     [[False, True, False, True], [False, False, False, False]]])
def test_encoder_fast_path_padded_positions(T, nn, padding):
    """In inference, with a right-aligned padding mask, PyTorch runs the encoder over the unpadded tokens only
    (nested tensors) and its padded positions come out 0; otherwise they are the slow path's values."""
    T.manual_seed(3)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    X = T.randn(2, 4, 8)
    pad = T.tensor(padding)
    right_aligned = padding[0] == [False, False, False, True]
    with T.no_grad():
        slow = values(nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)(X, src_key_padding_mask=pad))
        for nested in (True, False):
            encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=nested).eval()
            fast = values(encoder(X, src_key_padding_mask=pad))
            kept = ~np.asarray(padding)
            close(fast[kept], slow[kept], rtol=1e-5, atol=1e-5)
            if nested and right_aligned:
                same(fast[~kept], np.zeros(((~kept).sum(), 8)))
            else:
                close(fast[~kept], slow[~kept], rtol=1e-5, atol=1e-5)


def test_encoder_padding_and_src_mask_bool(T, nn):
    # a bool src_mask with a bool padding mask: no warning about mismatched mask types
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, activation="relu",
                                                               batch_first=True), 2, nn.LayerNorm(16))
    inputs = T.randn(2, 3, 16)
    src_mask = T.ones(3, 3, dtype=T.bool).triu_(diagonal=1)
    padding_mask = T.arange(3)[None, :] >= T.tensor([3, 2])[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = encoder(inputs, mask=src_mask, src_key_padding_mask=padding_mask)
    assert tuple(out.shape) == (2, 3, 16) and np.isfinite(values(out)).all()


def test_decoder_padding_and_src_mask_bool(T, nn):
    decoder = nn.TransformerDecoder(nn.TransformerDecoderLayer(16, 2, 32, dropout=0.1, activation="relu",
                                                               batch_first=True), 2, nn.LayerNorm(16))
    inputs, memory = T.randn(2, 3, 16), T.randn(2, 3, 16)
    tgt_mask = T.ones(3, 3, dtype=T.bool).triu_(diagonal=1)
    padding_mask = T.arange(3)[None, :] >= T.tensor([3, 2])[:, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = decoder(inputs, memory, tgt_mask=tgt_mask, tgt_key_padding_mask=padding_mask,
                      memory_key_padding_mask=padding_mask)
    assert tuple(out.shape) == (2, 3, 16) and np.isfinite(values(out)).all()


def test_encoder_is_causal(T, nn):
    T.manual_seed(4)
    layer = nn.TransformerEncoderLayer(3, 1, 6, batch_first=True).eval()
    x = T.randn(1, 5, 3)
    unmasked = values(layer(x))
    mask = nn.Transformer.generate_square_subsequent_mask(x.size(1))
    masked = values(layer(x, src_mask=mask))
    close(layer(x, src_mask=mask, is_causal=True), masked, rtol=1e-6, atol=1e-7)
    close(masked[0, -1], unmasked[0, -1], rtol=1e-5, atol=1e-6)     # the last position sees everything anyway
    assert not np.allclose(masked[0, 0], unmasked[0, 0])


def _custom_layer_class(nn):
    class MyCustomLayer(nn.TransformerEncoderLayer):
        pass
    return MyCustomLayer


# PyTorch's outputs of the subclassed layer and encoder below, the second element of batch entry 0
SUBCLASS_LAYER_TRAINING = [-0.26969835, -0.9925036, 0.45528078, -1.398728, 1.2022448, -0.7093476, 1.6819313,
                           0.03082045]
SUBCLASS_LAYER_EVAL = [-0.29664972, -0.8859324, 0.53775597, -1.36908, 1.1483352, -0.79333913, 1.7348379, -0.07592779]
SUBCLASS_ENCODER_TRAINING = [0.04522032, -0.6156256, 0.76466656, -0.36205518, 0.57124454, -2.1226218, 1.404321,
                             0.31485024]
SUBCLASS_ENCODER_EVAL = [-0.14948182, -0.61770624, 0.18095769, -0.576103, 1.1757903, -1.7477584, 1.6703758,
                         0.06392533]


def test_transformerencoderlayer_subclass(T, nn):
    """A subclass runs as the layer does; with one seed the weights, the input and the dropout draws are
    PyTorch's, so the outputs are too."""
    T.manual_seed(0)
    model = _custom_layer_class(nn)(d_model=8, nhead=4, dim_feedforward=32, batch_first=True)
    src = T.rand(2, 4, 8)
    src_mask = T.zeros(4, 4).to(T.bool)
    T.manual_seed(42)
    result = model(src, src_mask=src_mask)
    T.manual_seed(42)
    again = model(src, src_mask=src_mask)
    same(result, values(again))
    close(result[0, 1], SUBCLASS_LAYER_TRAINING, rtol=1e-5, atol=1e-5)
    model.eval()
    with T.no_grad():
        close(model(src, src_mask=src_mask)[0, 1], SUBCLASS_LAYER_EVAL, rtol=1e-5, atol=1e-5)


def test_transformerencoderlayer_subclass_model(T, nn):
    T.manual_seed(0)
    model = nn.TransformerEncoder(_custom_layer_class(nn)(d_model=8, nhead=4, dim_feedforward=32, batch_first=True),
                                  num_layers=6)
    src = T.rand(2, 4, 8)
    src_mask = T.zeros(4, 4).to(T.bool)
    T.manual_seed(42)
    result = model(src, mask=src_mask)
    T.manual_seed(42)
    same(result, values(model(src, mask=src_mask)))
    close(result[0, 1], SUBCLASS_ENCODER_TRAINING, rtol=1e-5, atol=1e-5)
    model.eval()
    with T.no_grad():
        close(model(src, mask=src_mask)[0, 1], SUBCLASS_ENCODER_EVAL, rtol=1e-5, atol=1e-5)


def test_bias_is_none(T, nn):
    x = T.rand(1, 5, 10)
    model = nn.MultiheadAttention(10, 1, bias=False, batch_first=True).eval()
    out, weights = model(x, x, x)
    assert tuple(out.shape) == (1, 5, 10)
    close(weights.sum(-1), np.ones((1, 5)), rtol=1e-6)


def test_transformer_bias_is_none(T, nn):
    encoder_layer = nn.TransformerEncoderLayer(8, 4, bias=False, batch_first=True).eval()
    assert encoder_layer.linear1.bias is None and encoder_layer.norm1.bias is None
    x = T.randn(2, 3, 8)
    assert tuple(encoder_layer(x).shape) == (2, 3, 8)
    with pytest.warns(UserWarning, match="encoder_layer.self_attn was passed bias=False"):
        encoder = nn.TransformerEncoder(encoder_layer, num_layers=1).eval()
    assert tuple(encoder(x).shape) == (2, 3, 8)
    with pytest.warns(UserWarning, match="self_attn was passed bias=False"):
        transformer = nn.Transformer(d_model=8, nhead=4, bias=False, batch_first=True).eval()
    assert tuple(transformer(x, x).shape) == (2, 3, 8)


def test_train_with_is_causal(T, nn):
    S, L, E, H = 1, 2, 2, 1
    T.manual_seed(5)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model=2, dim_feedforward=4, nhead=H,
                                                               batch_first=True, activation="gelu", dropout=0), 2)
    optimizer = (__import__("optim") if T.__name__ == "autograd" else T.optim).SGD(encoder.parameters(), lr=0.1,
                                                                                 momentum=0.9)
    encoder.train()
    optimizer.zero_grad()
    inputs = T.randn(S, L, E)
    mask = nn.Transformer.generate_square_subsequent_mask(inputs.size(1))
    outputs = encoder(inputs, mask=mask, is_causal=True)
    close(outputs, values(encoder(inputs, mask=mask)), rtol=1e-6, atol=1e-7)
    loss = nn.MSELoss()(outputs[:, 0:2, :], inputs[:, 0:2, :])
    loss.backward()
    before = [values(p).copy() for p in encoder.parameters()]
    optimizer.step()
    assert all(p.grad is not None for p in encoder.parameters())
    assert any(not np.array_equal(b, values(p)) for b, p in zip(before, encoder.parameters()))

    t_qkv = T.randn(S, L, E)
    mha = nn.MultiheadAttention(E, H)
    attn_out, _ = mha(t_qkv, t_qkv, t_qkv, attn_mask=nn.Transformer.generate_square_subsequent_mask(S),
                      is_causal=True)
    assert tuple(attn_out.shape) == (S, L, E)
    raises(RuntimeError, "Need attn_mask if specifying the is_causal hint", mha, t_qkv, t_qkv, t_qkv, is_causal=True)

    # a bool mask equal to the causal one makes the encoder pass is_causal=True to its layers
    causal_mask = T.triu(T.ones(L, L) * float("-inf"), diagonal=1).to(T.bool)
    mock_layer = mock.MagicMock(nn.MultiheadAttention(E, H), return_value=inputs)
    encoder.layers[1] = mock_layer
    encoder(inputs, mask=causal_mask)
    mock_layer.assert_called_with(mock.ANY, src_mask=mock.ANY, is_causal=True, src_key_padding_mask=mock.ANY)

    # ones everywhere: each value is 4, each output 4·4 = 16, causal or not
    qkv = T.ones(S, L, 4)
    mha = nn.MultiheadAttention(4, H)
    mha.in_proj_weight = nn.Parameter(T.ones(12, 4))
    mha.out_proj.weight = nn.Parameter(T.ones(4, 4))
    mask = nn.Transformer.generate_square_subsequent_mask(qkv.size(1))
    actual, _ = mha(qkv, qkv, qkv, attn_mask=mask, need_weights=False, is_causal=True)
    same(actual, np.full((S, L, 4), 16.0))


def test_train_with_pad_and_catch_error(T, nn):
    pad_mask = T.tensor([[1, 1, 0, 0]], dtype=T.bool)
    T.manual_seed(6)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model=2, dim_feedforward=4, nhead=2, batch_first=True,
                                                               activation="gelu", dropout=0), 2)
    optimizer = (__import__("optim") if T.__name__ == "autograd" else T.optim).SGD(encoder.parameters(), lr=0.1,
                                                                                 momentum=0.9)
    for _ in range(5):
        encoder.train()
        optimizer.zero_grad()
        inputs = T.cat([T.randn(1, 2, 2), T.zeros(1, 2, 2)], dim=1)
        outputs = encoder(inputs, src_key_padding_mask=pad_mask)
        loss = nn.MSELoss()(outputs[:, 0:2, :], inputs[:, 0:2, :])
        loss.backward()
        optimizer.step()
        with T.no_grad():
            test = T.cat([T.randn(1, 2, 2), T.zeros(1, 2, 2)], dim=1)
            for dtype in (T.uint8, T.int64):
                raises(AssertionError, "only bool and floating types of src_key_padding_mask are supported",
                       encoder, test, src_key_padding_mask=pad_mask.to(dtype))
            trained = encoder(test, src_key_padding_mask=pad_mask)
            encoder.eval()
            raises(AssertionError, "only bool and floating types of src_key_padding_mask are supported",
                   encoder, test, src_key_padding_mask=pad_mask.to(T.int64))
            evaluated = encoder(test, src_key_padding_mask=pad_mask)
            # (the padded positions differ: the eval path leaves them 0; those attended are the same)
            assert nn.L1Loss()(trained[:, 2:], evaluated[:, 2:]).item() < 1e-4


def _sdp_reference(T, F, q, k, v, attn_mask=None, dropout_p=0.0):
    """PyTorch's test's reference: (B, L, E) inputs, a float mask added by baddbmm, softmax, dropout, bmm."""
    q = q / math.sqrt(q.size(-1))
    attn = T.baddbmm(attn_mask, q, k.transpose(-2, -1)) if attn_mask is not None else T.bmm(q, k.transpose(-2, -1))
    attn = F.softmax(attn, dim=-1)
    if dropout_p > 0.0:
        attn = F.dropout(attn, p=dropout_p)
    return T.bmm(attn, v)


def _attention(T):
    """nn.attention of the library under test (sdpa_kernel, SDPBackend, bias)."""
    return importlib.import_module("nn.attention" if T.__name__ == "autograd" else "torch.nn.attention")


@contextlib.contextmanager
def frozen_rng(T):
    state = T.get_rng_state()
    try:
        yield
    finally:
        T.set_rng_state(state)


@pytest.mark.parametrize("dropout_p", [0.0, 0.2, 0.5])
@pytest.mark.parametrize("input_dim,attn_mask_dim,is_causal",
                         [(3, None, False), (3, 2, False), (3, 2, True), (3, 3, False), (3, 3, True),
                          (4, None, False), (4, 2, False), (4, 2, True), (4, 4, False), (4, 4, True)])
def test_scaled_dot_product_attention(T, F, input_dim, attn_mask_dim, is_causal, dropout_p):
    attention = _attention(T)
    N, N_prime, L, S, E = 5, 2, 4, 3, 6
    T.manual_seed(7)
    for dtype in (T.float64, T.float32):
        batch = (N,) if input_dim == 3 else (N, N_prime)
        query, key, value = T.randn(*batch, L, E, dtype=dtype), T.randn(*batch, S, E, dtype=dtype), \
            T.randn(*batch, S, E, dtype=dtype)
        attn_mask = None
        if attn_mask_dim is not None:
            mask_size = (L, S) if attn_mask_dim == 2 else batch + (L, S)
            if is_causal:
                attn_mask = T.ones(mask_size, dtype=T.bool).tril()
            else:
                # (PyTorch's draws 0/1 at random; each query keeps key 0 here, so no row is masked whole)
                attn_mask = T.randint(0, 2, mask_size).to(T.bool)
                attn_mask[..., 0] = True
        with frozen_rng(T):
            mask_float = None
            if attn_mask is not None:
                mask_float = T.zeros_like(attn_mask, dtype=dtype).masked_fill_(attn_mask.logical_not(),
                                                                               float("-inf"))
                if attn_mask_dim > 3:
                    mask_float = mask_float.view(-1, L, S)
            expected = _sdp_reference(T, F, query.view(-1, L, E), key.view(-1, S, E), value.view(-1, S, E),
                                      mask_float, dropout_p)
            expected = expected.view(*batch, L, E)
        with frozen_rng(T), attention.sdpa_kernel([attention.SDPBackend.MATH]):
            if is_causal:
                actual = F.scaled_dot_product_attention(query, key, value, None, dropout_p, is_causal)
                raises(RuntimeError, "Explicit attn_mask should not be set when is_causal=True",
                       F.scaled_dot_product_attention, query, key, value, attn_mask, dropout_p, is_causal)
            else:
                actual = F.scaled_dot_product_attention(query, key, value, attn_mask, dropout_p, is_causal)
        tol = 1e-12 if dtype == T.float64 else 1e-5
        close(actual, values(expected), rtol=tol, atol=tol)
        if dropout_p == 0.0:
            # and by hand in NumPy
            scores = values(query) @ np.swapaxes(values(key), -1, -2) / math.sqrt(E)
            if attn_mask is not None:
                scores = np.where(values(attn_mask), scores, -np.inf)
            weights = np.exp(scores - scores.max(-1, keepdims=True))
            close(actual, weights / weights.sum(-1, keepdims=True) @ values(value), rtol=tol, atol=tol)
    if attn_mask_dim is None and input_dim == 3:
        # (the 4-D case is viewed as this one; one batch entry: gradcheck's cost grows with every input element)
        q, k, v = (t.view(-1, t.size(-2), E)[:1].double().clone().requires_grad_() for t in (query, key, value))

        def with_seed(fn):
            def run(*args):
                T.manual_seed(11)
                return fn(*args)
            return run
        assert T.autograd.gradcheck(with_seed(lambda *a: _sdp_reference(T, F, *a, dropout_p=dropout_p)),
                                    (q, k, v, None))
        assert T.autograd.gradcheck(with_seed(lambda *a: F.scaled_dot_product_attention(*a, dropout_p=dropout_p)),
                                    (q, k, v, None))


def test_incompatible_mask(T, nn):
    # a float key padding mask with a bool attention mask: deprecated, warned; a 2-D mask of the wrong size raises
    S, L, E, H = 1, 2, 4, 1
    qkv = T.ones(S, L, E).to(T.float64)
    mha = nn.MultiheadAttention(E, H, dtype=T.float64)
    kpm = T.ones(S, L) * float("-inf")
    with pytest.warns(UserWarning, match="Support for mismatched key_padding_mask and attn_mask is deprecated"):
        raises(RuntimeError, r"The shape of the 2D attn_mask is .*2, 2.*, but should be \(1, 1\)\.", mha, qkv, qkv,
               qkv, need_weights=False, key_padding_mask=kpm, attn_mask=T.ones(L, L).to(T.bool))


@pytest.mark.parametrize("contiguous_inputs", [True, False])
def test_sdp_math_gradcheck(T, F, contiguous_inputs):
    batch_size, seq_len, num_heads, head_dim = 2, 4, 2, 4        # (PyTorch's: 4, 4, 2, 16)
    T.manual_seed(8)
    qkv = T.randn(batch_size, seq_len, 3 * num_heads * head_dim, dtype=T.float64, requires_grad=True)
    query, key, value = (t.view(batch_size, -1, num_heads, head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    if contiguous_inputs:
        query, key, value = query.contiguous(), key.contiguous(), value.contiguous()
    assert T.autograd.gradcheck(lambda *a: F.scaled_dot_product_attention(*a), (query, key, value, None, 0.0, False))


def test_scaled_dot_product_attention_math_with_negative_scale(T, F):
    def ref(x):
        v1 = T.matmul(x, x.transpose(-1, -2))
        v2 = v1 / -0.0001
        return T.matmul(v2.softmax(dim=-1), x)

    T.manual_seed(9)
    x = T.randn(1, 3, 16, 16)
    sdp = F.scaled_dot_product_attention(x, x, x, scale=-1.0 / 0.0001)
    close(sdp, values(ref(x)), rtol=1.3e-6, atol=1e-5)
    # a negative scale: each query's weight goes to the key least like it
    xs = values(x).astype(np.float64)
    scores = -(xs @ xs.swapaxes(-1, -2)) / 0.0001
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    close(sdp, weights / weights.sum(-1, keepdims=True) @ xs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bool_mask", [False, True])
@pytest.mark.parametrize("mask_dim", [2, 4])
def test_scaled_dot_product_attention_broadcast_masks(T, F, mask_dim, bool_mask):
    """test_scaled_dot_product_fused_attention_mask_vs_math_cpu's masks, any size-1 dims broadcast, against
    NumPy, with gradients against the same composition written with the libraries' ops."""
    batch_size, q_seq_len, kv_seq_len, n_head, head_dim = 2, 5, 7, 3, 8
    rng = np.random.default_rng(mask_dim + 2 * bool_mask)
    shapes = ([(a, b) for a in (q_seq_len, 1) for b in (kv_seq_len, 1)] if mask_dim == 2 else
              [(a, b, c, d) for a in (batch_size, 1) for b in (n_head, 1) for c in (q_seq_len, 1)
               for d in (kv_seq_len, 1)])
    for mask_shape in shapes:
        q = rng.standard_normal((batch_size, n_head, q_seq_len, head_dim))
        k = rng.standard_normal((batch_size, n_head, kv_seq_len, head_dim))
        v = rng.standard_normal((batch_size, n_head, kv_seq_len, head_dim))
        if bool_mask:
            mask = rng.integers(0, 2, mask_shape).astype(bool)
            mask[..., 0] = True
            bias = np.where(mask, 0.0, -np.inf)
        else:
            mask = bias = rng.standard_normal(mask_shape)
        tq, tk, tv = (T.tensor(a, requires_grad=True) for a in (q, k, v))
        out = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=T.tensor(mask))
        scores = q @ k.swapaxes(-1, -2) / math.sqrt(head_dim) + bias
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        close(out, weights / weights.sum(-1, keepdims=True) @ v, rtol=1e-10, atol=1e-12)
        grad_out = T.tensor(rng.standard_normal(out.shape))
        out.backward(grad_out)
        rq, rk, rv = (T.tensor(a, requires_grad=True) for a in (q, k, v))
        composed = T.softmax(rq @ rk.transpose(-1, -2) / math.sqrt(head_dim) + T.tensor(bias), -1) @ rv
        composed.backward(grad_out)
        for ours, reference in ((tq, rq), (tk, rk), (tv, rv)):
            close(ours.grad, values(reference.grad), rtol=1e-9, atol=1e-11)


def test_scaled_dot_product_attention_with_inf_bands(T, F):
    # a float mask of -inf above the diagonal and more than 9 below: each query sees a band of 10 keys
    n = 40
    full = T.full((n, n), float("-inf"))
    mask = T.triu(full, diagonal=1) + T.tril(full, diagonal=-10)
    T.manual_seed(10)
    q, k, v = (T.randn(1, n, 2, 8).transpose(1, 2) for _ in range(3))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    qn, kn, vn = (values(t).astype(np.float64) for t in (q, k, v))
    scores = qn @ kn.swapaxes(-1, -2) / math.sqrt(8) + values(mask)
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    close(out, weights / weights.sum(-1, keepdims=True) @ vn, rtol=1e-5, atol=1e-6)


def test_invalid_inputs(T, F):
    # different dtypes; a 1-D query
    shape = (1, 4, 8, 16)
    raises(RuntimeError, "Expected query, key, and value to have the same dtype", F.scaled_dot_product_attention,
           T.randn(shape), T.randn(shape, dtype=T.float16), T.randn(shape, dtype=T.float16))
    raises(RuntimeError, "Expected query, key, and value to all be  at least 2 dimensional, but got query.dim: 1 "
           "key.dim: 2 and value.dim: 2 instead.", F.scaled_dot_product_attention, T.randn(4, dtype=T.float16),
           T.randn(1, 4, dtype=T.float16), T.randn(1, 4, dtype=T.float16))


@pytest.mark.parametrize("shape", [(2, 2, 8, 8, 4), (2, 2, 8, 12, 4), (2, 2, 12, 8, 4), (1, 1, 7, 11, 5)])
def test_is_causal_equals_upper_left(T, F, shape):
    bias = importlib.import_module(_attention(T).__name__ + ".bias")
    bsz, num_heads, seq_len_q, seq_len_kv, head_dim = shape
    T.manual_seed(12)
    query = T.rand(bsz, num_heads, seq_len_q, head_dim, dtype=T.float64)
    key, value = (T.rand(bsz, num_heads, seq_len_kv, head_dim, dtype=T.float64) for _ in range(2))
    upper_left = F.scaled_dot_product_attention(query, key, value, attn_mask=bias.causal_upper_left(seq_len_q,
                                                                                                    seq_len_kv))
    close(upper_left, values(F.scaled_dot_product_attention(query, key, value, is_causal=True)), rtol=1e-12)
    materialised = bias.causal_upper_left(seq_len_q, seq_len_kv)._materialize()
    same(materialised, np.tril(np.ones((seq_len_q, seq_len_kv), bool)))
    close(upper_left, values(F.scaled_dot_product_attention(query, key, value, attn_mask=materialised)), rtol=1e-12)
    if seq_len_q <= seq_len_kv:
        lower_right = bias.causal_lower_right(seq_len_q, seq_len_kv)
        close(F.scaled_dot_product_attention(query, key, value, attn_mask=lower_right),
              values(F.scaled_dot_product_attention(query, key, value, attn_mask=lower_right._materialize())),
              rtol=1e-12)
        same(lower_right._materialize(), np.tril(np.ones((seq_len_q, seq_len_kv), bool), seq_len_kv - seq_len_q))
    with pytest.raises(ValueError, match="CausalBias should not be used with causal=True"):
        F.scaled_dot_product_attention(query, key, value, attn_mask=bias.causal_upper_left(seq_len_q, seq_len_kv),
                                       is_causal=True)


# test_nn.py's deterministic layer tests (the same cos weights): one token, two, and the five of ENCODER_INPUT
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
def test_transformerencoderlayer(T, nn, batch_first, training):
    def perm(x):
        x = np.asarray(x, np.float32)
        return x.transpose(1, 0, 2) if batch_first else x

    model = nn.TransformerEncoderLayer(4, 2, 16, 0.0, batch_first=batch_first)
    cos_weights_(T, model)
    model.train(training)
    with contextlib.nullcontext() if training else T.no_grad():
        x = T.tensor([[[20.0, 30.0, 40.0, 50.0]]])
        close(model(x), [[[2.258703, 0.127985, -0.697881, 0.170862]]], rtol=1e-7, atol=1e-5)
        close(model(x, src_key_padding_mask=T.tensor([[0]]) == 1), [[[2.258703, 0.127985, -0.697881, 0.170862]]],
              rtol=1e-7, atol=1e-5)
        # the one key padded: the slow path gives the query zero weights (the output is the residual's), the
        # fused inference path (eval, batch_first) NaN
        padded = values(model(x, src_key_padding_mask=T.tensor([[1]]) == 1))
        if batch_first and not training:
            assert np.isnan(padded).all()
        else:
            close(padded, [[[2.212938, 0.134127, -0.721213, 0.192312]]], rtol=1e-7, atol=1e-5)
        x = T.tensor(perm([[[1.0, 2.0, 3.0, 4.0]], [[5.0, 6.0, 7.0, 8.0]]]))
        two = perm([[[2.272644, 0.119035, -0.691669, 0.153486]]] * 2)
        close(model(x), two, rtol=1e-7, atol=1e-5)
        close(model(x, src_key_padding_mask=T.tensor([[0, 0]]) == 1), two, rtol=1e-7, atol=1e-5)
        close(model(x, src_key_padding_mask=T.tensor([[1, 0]]) == 1),
              perm([[[2.301516, 0.092249, -0.679101, 0.103088]]] * 2), rtol=1e-7, atol=1e-5)
        x = T.tensor(perm(ENCODER_INPUT))
        close(model(x), perm(ONE_LAYER), rtol=1e-7, atol=1e-5)
        padding = T.zeros(2, 5) == 1
        close(model(x, src_key_padding_mask=padding), perm(ONE_LAYER), rtol=1e-7, atol=1e-5)
        padding[0, 1] = True
        padding[1, 3] = True
        padding[1, 4] = True
        close(model(x, src_key_padding_mask=padding), perm(ONE_LAYER_PADDED), rtol=1e-7, atol=1e-5)


DECODER_INPUT = [[[0.4517, 0.6793, 0.5313, 0.0034], [0.2678, 0.3677, 0.4459, 0.7166]],
                 [[0.81, 0.3716, 0.4096, 0.1976], [0.6958, 0.8844, 0.6081, 0.8315]],
                 [[0.0494, 0.9343, 0.5955, 0.383], [0.5404, 0.3464, 0.9378, 0.62]]]
DECODER_OUTPUT = [[[2.430065, 0.027862, -0.601136, -0.073096], [2.431935, 0.028907, -0.599809, -0.072488]],
                  [[2.428457, 0.027053, -0.602275, -0.073462], [2.43197, 0.029387, -0.599789, -0.071621]],
                  [[2.431934, 0.028196, -0.599802, -0.073809], [2.432306, 0.028858, -0.599542, -0.072846]]]


@pytest.mark.parametrize("batch_first", [False, True])
def test_transformerdecoderlayer(T, nn, batch_first):
    def perm(x):
        x = np.asarray(x, np.float32)
        return x.transpose(1, 0, 2) if batch_first else x

    model = nn.TransformerDecoderLayer(4, 2, 16, 0.0, batch_first=batch_first)
    cos_weights_(T, model)
    close(model(T.tensor([[[20.0, 30.0, 40.0, 50.0]]]), T.tensor([[[60.0, 70.0, 80.0, 90.0]]])),
          [[[2.314351, 0.094805, -0.671322, 0.101977]]], rtol=1e-7, atol=1e-5)
    close(model(T.tensor(perm([[[9.0, 10.0, 11.0, 12.0]], [[11.0, 12.0, 13.0, 14.0]]])),
                T.tensor([[[1.0, 2.0, 3.0, 4.0]]])),
          perm([[[2.422245, 0.051716, -0.606338, -0.024756]]] * 2), rtol=1e-7, atol=1e-5)
    close(model(T.tensor(perm([[[1.0, 2.0, 3.0, 4.0]], [[5.0, 6.0, 7.0, 8.0]]])),
                T.tensor(perm([[[9.0, 10.0, 11.0, 12.0]], [[11.0, 12.0, 13.0, 14.0]]]))),
          perm([[[2.343536, 0.085561, -0.654954, 0.074991]]] * 2), rtol=1e-7, atol=1e-5)
    tgt, memory = T.tensor(perm(DECODER_INPUT)), T.tensor(perm(ENCODER_INPUT))
    close(model(tgt, memory), perm(DECODER_OUTPUT), rtol=1e-7, atol=1e-5)
    close(model(tgt, memory, tgt_key_padding_mask=T.zeros(2, 3) == 1), perm(DECODER_OUTPUT), rtol=1e-7, atol=1e-5)


# PyTorch's outputs (batch entry 0) of the cos-weighted layers with a causal tgt_mask and a memory padding mask
# (decoder), or the padding mask alone (encoder), per activation and norm_first
LAYER_OUTPUTS = {
    ("gelu", False): ([[2.418146, 0.034365, -0.609576, -0.052907], [2.417283, 0.033654, -0.610181, -0.053624],
                       [2.419873, 0.035146, -0.608366, -0.052645]],
                      [[2.421553, 0.031887, -0.607198, -0.059733], [2.418860, 0.029056, -0.609077, -0.063113],
                       [2.423851, 0.031816, -0.605580, -0.061436], [2.424760, 0.032738, -0.604939, -0.060370],
                       [2.413282, 0.026245, -0.612945, -0.064584]]),
    ("gelu", True): ([[8.165217, -5.177644, 7.209325, -8.409269], [8.339129, -5.430571, 7.224429, -8.467031],
                      [7.368762, -4.692446, 7.293641, -8.228851]],
                     [[7.315102, -4.897098, 6.717826, -6.531852], [7.520554, -5.416572, 6.762929, -6.776646],
                      [7.150719, -4.552553, 6.231072, -6.022473], [7.564700, -4.871304, 6.470541, -6.865614],
                      [7.574550, -5.517099, 6.783488, -6.307380]]),
    ("tanh", False): ([[2.437947, 0.120607, -0.588646, 0.074928], [2.439280, 0.119275, -0.587914, 0.072064],
                       [2.436833, 0.121011, -0.589365, 0.076274]],
                      [[2.441650, 0.068576, -0.591770, -0.009313], [2.450938, 0.073477, -0.584734, -0.007876],
                       [2.441764, 0.076030, -0.591160, 0.003007], [2.439142, 0.075812, -0.593046, 0.004499],
                       [2.461629, 0.078620, -0.576503, -0.007451]]),
    ("tanh", True): ([[7.489753, -4.614130, 6.805481, -8.199293], [7.551239, -4.761691, 6.731203, -8.191225],
                      [7.077745, -4.476541, 7.171131, -8.210112]],
                     [[6.659564, -4.318042, 6.264285, -6.242235], [6.630758, -4.616931, 6.121158, -6.347090],
                      [6.537203, -4.017410, 5.819620, -5.769553], [6.844607, -4.253128, 6.006629, -6.595251],
                      [6.515565, -4.548242, 5.986803, -5.750330]]),
    ("relu", False): ([[2.427340, 0.028048, -0.603084, -0.070823], [2.426404, 0.027302, -0.603741, -0.071554],
                       [2.429274, 0.028793, -0.601713, -0.070803]],
                      [[2.428579, 0.020620, -0.602057, -0.085650], [2.424434, 0.018826, -0.604966, -0.086120],
                       [2.433930, 0.021496, -0.598228, -0.087856], [2.435683, 0.022320, -0.596981, -0.087578],
                       [2.416163, 0.017297, -0.610765, -0.083314]]),
    ("relu", True): ([[8.498583, -5.410729, 7.322393, -8.392745], [8.667405, -5.661618, 7.338684, -8.454818],
                      [7.738145, -4.959636, 7.436012, -8.234348]],
                     [[7.715986, -5.217566, 6.930740, -6.619184], [7.903033, -5.725047, 6.971278, -6.867227],
                      [7.544750, -4.861939, 6.429615, -6.093361], [7.918449, -5.132451, 6.616972, -6.884930],
                      [7.944046, -5.815581, 6.985681, -6.396160]]),
}


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["gelu", "tanh", "relu"])
def test_transformer_layers_activations_and_norm_first(T, nn, F, activation, norm_first):
    # an activation by name, as a function of the library, as a module or as a lambda: the same layer
    forms = {"gelu": ["gelu", F.gelu, nn.GELU(), lambda x: F.gelu(x)], "tanh": [T.tanh, nn.Tanh(), lambda x: x.tanh()],
             "relu": ["relu", F.relu, nn.ReLU(), lambda x: x.clamp(min=0)]}[activation]
    expected_decoder, expected_encoder = LAYER_OUTPUTS[activation, norm_first]
    tgt_mask = nn.Transformer.generate_square_subsequent_mask(3)
    memory_padding = T.tensor([[False, False, False, True, True], [False] * 5])
    for form in forms:
        decoder = nn.TransformerDecoderLayer(4, 2, 16, 0.0, activation=form, norm_first=norm_first)
        cos_weights_(T, decoder)
        out = decoder(T.tensor(DECODER_INPUT, dtype=T.float32), T.tensor(ENCODER_INPUT, dtype=T.float32),
                      tgt_mask=tgt_mask,
                      memory_key_padding_mask=memory_padding)
        close(out[:, 0], expected_decoder, rtol=1e-6, atol=2e-5)
        encoder = nn.TransformerEncoderLayer(4, 2, 16, 0.0, activation=form, norm_first=norm_first)
        cos_weights_(T, encoder)
        close(encoder(T.tensor(ENCODER_INPUT, dtype=T.float32), src_key_padding_mask=memory_padding)[:, 0],
              expected_encoder,
              rtol=1e-6, atol=2e-5)
        # the fused path's flag: 1 for ReLU, 2 for GELU (by name, function or module), 0 for anything else
        flag = {"relu": 1, "gelu": 2}.get(activation, 0) if not callable(form) or form in (F.relu, F.gelu) or \
            isinstance(form, (nn.ReLU, nn.GELU)) else 0
        assert encoder.activation_relu_or_gelu == flag
    raises(RuntimeError, "activation should be relu/gelu, not tanh", nn.TransformerDecoderLayer, 4, 2,
           activation="tanh")


def test_multihead_attn_fast_path_invalid_shape(T, nn):
    # a batch-first module in eval mode without gradients (where PyTorch's fused path would run) checks the
    # ranks as the slow path does, with the same messages
    mha = nn.MultiheadAttention(4, 4, batch_first=True).eval()
    query, key, value = T.randn(4, 4, 4), T.randn(4, 4, 4), T.randn(4, 4, 4)   # (three tensors: the slow path)
    with T.no_grad():
        raises(AssertionError, "expected `key` and `value` to be 3-D but found 2-D and 3-D tensors respectively",
               mha, query, T.randn(3, 3), value, need_weights=False)
        raises(AssertionError, "expected `key` and `value` to be 3-D but found 3-D and 2-D tensors respectively",
               mha, query, key, T.randn(3, 3), need_weights=False)
        raises(AssertionError, "expected `key_padding_mask` to be `None` or 2-D but found 1-D tensor instead",
               mha, query, key, value, key_padding_mask=T.tensor([False, True, True]), need_weights=False)
        raises(AssertionError, "expected `attn_mask` to be `None`, 2-D or 3-D but found 1-D tensor instead",
               mha, query, key, value, attn_mask=T.tensor([False, True, True]), need_weights=False)
        query, key, value = T.randn(4, 4), T.randn(4, 4), T.randn(4, 4)
        raises(AssertionError, "expected `key` and `value` to be 2-D but found 3-D and 2-D tensors respectively",
               mha, query, T.randn(4, 4, 4), value)
        raises(AssertionError, "expected `key_padding_mask` to be `None` or 1-D but found 2-D tensor instead",
               mha, query, key, value, key_padding_mask=T.tensor([[False, False, True, True] * 2]))
        raises(AssertionError, r"Expected `attn_mask` shape to be \(4, 4, 4\)", mha, query, key, value,
               attn_mask=T.zeros(5, 4, 4, dtype=T.bool))


@xfail_ours("PyTorch's F.linear promotes a bias of another dtype when the input is a non-contiguous 3-D tensor "
            "(it takes matmul + add there, addmm elsewhere); a batch-first module transposes its query to one. "
            "chainrule's linear refuses every mismatched bias")
def test_multihead_attn_fast_path_query_and_bias_have_different_dtypes(T, nn):
    mha = nn.MultiheadAttention(4, 4, batch_first=True, dtype=T.float64).eval()
    mha.in_proj_bias = nn.Parameter(mha.in_proj_bias.to(T.half))
    query = T.randn(4, 4, 4, dtype=T.float64)
    with T.no_grad():
        out, weights = mha(query, query, query)
    assert out.dtype == T.float64 and tuple(out.shape) == (4, 4, 4)
    close(weights.sum(-1), np.ones((4, 4)), rtol=1e-6)


def test_multihead_attn_fast_path_small_test(T, nn):
    T.manual_seed(13)
    mha = nn.MultiheadAttention(4, 4, batch_first=True, dtype=T.float64).eval()
    query = T.randn(4, 4, 4, dtype=T.float64)
    with T.no_grad():
        out, weights = mha(query, query, query)
        slow, slow_weights = mha.train()(query, query, query)
    close(out, values(slow), rtol=1e-12, atol=1e-12)
    close(weights, values(slow_weights), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("d_model", [12, 16])
@pytest.mark.parametrize("enable_nested_tensor", [True, False])
def test_transformerencoder_fastpath(T, nn, enable_nested_tensor, d_model):
    """Inference without gradients (PyTorch's fast path, nested or not) equals the path with gradients, except at
    padded positions (PyTorch guarantees nothing there; they are set to 0 on both sides, as its test does)."""
    T.manual_seed(1234)
    model = nn.TransformerEncoder(nn.TransformerEncoderLayer(d_model, 4, d_model, batch_first=True), num_layers=2,
                                  enable_nested_tensor=enable_nested_tensor).eval()
    pairs = [((3, 2), [[0, 1], [0, 1], [1, 1]]),
             ((2, 20), [[0] * 18 + [1] * 2, [0] * 10 + [1] * 10]),
             ((2, 24), [[0] * 20 + [1] * 4, [0] * 24]),
             ((1, 26), [[0] * 24 + [1] * 2]),
             ((4, 30), [[0] * 24 + [1] * 6, [0] * 25 + [1] * 5, [0] * 29 + [1], [0] * 30])]
    for (batch, length), mask in pairs:
        x = T.rand(batch, length, d_model)
        padding = T.tensor(mask, dtype=T.bool)
        with T.no_grad():
            fast = model(x, src_key_padding_mask=padding)
        slow = model(x, src_key_padding_mask=padding)
        assert tuple(fast.shape) == (batch, length, d_model)
        close(fast.masked_fill(padding.unsqueeze(-1), 0), values(slow.masked_fill(padding.unsqueeze(-1), 0)),
              rtol=1.3e-6, atol=1e-5)
        if enable_nested_tensor:            # (the nested path pads with zeros itself)
            same(values(fast)[np.asarray(mask, bool)], np.zeros((int(np.sum(mask)), d_model)))


def test_kpm_mask_trailing_column_with_nested_tensor(T, nn):
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, activation="gelu", batch_first=False),
                                    num_layers=3, enable_nested_tensor=True)
    x = T.randn(10, 6, 16)
    mask = T.ones(6, 10)
    mask[0, :] = 0                   # the first sequence unpadded, every other padded whole
    out = encoder(src=x, src_key_padding_mask=mask.bool())
    assert out.shape[1] == 6
    assert np.isfinite(values(out)[:, 0]).all()
