"""Attention and Transformer layers against PyTorch: the same weights in both, outputs, attention weights and
every gradient compared in float64; gradcheck on tiny sizes; a language-model program in the style of
PyTorch's "Language Modeling with nn.Transformer" tutorial run on both libraries."""

import copy
import math
from types import SimpleNamespace

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
import optim

pytestmark = pytest.mark.filterwarnings("ignore:enable_nested_tensor is True:UserWarning",
                                        "ignore:Support for mismatched:UserWarning")

TOL = 1e-10
OURS = SimpleNamespace(torch=autograd, nn=nn, F=F, optim=optim)


def _rng(seed=0):
    return np.random.default_rng(seed)


def _assert_close(ours, theirs, what):
    a = ours.detach().numpy() if hasattr(ours, "detach") else np.asarray(ours)
    b = theirs.detach().numpy()
    assert a.shape == b.shape, f"{what}: shapes {a.shape} vs {b.shape}"
    np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL, err_msg=what)


def _pair(make):
    """``make(lib)`` built in both libraries, float64, eval mode, ours holding PyTorch's weights."""
    import torch
    torch.manual_seed(0)
    theirs = make(SimpleNamespace(torch=torch, nn=torch.nn)).double().eval()
    ours = make(OURS).double().eval()
    state = theirs.state_dict()
    assert list(ours.state_dict()) == list(state)
    ours.load_state_dict({k: autograd.tensor(v.numpy()) for k, v in state.items()})
    return ours, theirs


def _inputs(arrays, grad=True):
    """The same arrays as leaves of both libraries (bool arrays as masks, without gradients)."""
    import torch
    ours, theirs = [], []
    for a in arrays:
        if a is None:
            ours.append(None)
            theirs.append(None)
            continue
        g = grad and a.dtype == np.float64
        ours.append(autograd.tensor(a, requires_grad=g))
        theirs.append(torch.tensor(a, requires_grad=g))
    return ours, theirs


def _compare_backward(ours_out, theirs_out, ours_leaves, theirs_leaves, ours_mod=None, theirs_mod=None):
    """Backpropagate Σ out · R (R fixed, random) through both, then compare every gradient."""
    import torch
    r = _rng(7).standard_normal(tuple(theirs_out.shape))
    (ours_out * autograd.tensor(r)).sum().backward()
    (theirs_out * torch.tensor(r)).sum().backward()
    for i, (a, b) in enumerate(zip(ours_leaves, theirs_leaves)):
        if b is not None and b.requires_grad:
            _assert_close(a.grad, b.grad, f"grad of input {i}")
    if ours_mod is not None:
        ours_params = dict(ours_mod.named_parameters())
        for name, p in theirs_mod.named_parameters():
            if p.grad is None:
                assert ours_params[name].grad is None or not ours_params[name].grad.numpy().any(), name
            else:
                _assert_close(ours_params[name].grad, p.grad, f"grad of {name}")


# ---------------------------------------------------------------------------------------------------------------
# F.scaled_dot_product_attention
# ---------------------------------------------------------------------------------------------------------------

SDPA_CASES = {
    "plain": {},
    "bool mask": {"mask": "bool"},
    "float mask": {"mask": "float"},
    "broadcast bool mask": {"mask": "bool2d"},
    "causal": {"is_causal": True},
    "causal rectangular": {"is_causal": True, "S": 7},
    "scale": {"scale": 0.3},
    "gqa": {"enable_gqa": True, "kv_heads": 1},
    "value dim": {"Ev": 5},
    "fully masked rows": {"mask": "rows"},
}


@pytest.mark.torch
@pytest.mark.parametrize("case", SDPA_CASES)
def test_scaled_dot_product_attention_matches_pytorch(case):
    import torch
    c = SDPA_CASES[case]
    rng = _rng(1)
    N, H, L, S, E = 2, 2, 4, c.get("S", 5), 3
    kvh, Ev = c.get("kv_heads", H), c.get("Ev", E)
    q, k = rng.standard_normal((N, H, L, E)), rng.standard_normal((N, kvh, S, E))
    v = rng.standard_normal((N, kvh, S, Ev))
    mask = None
    if c.get("mask") == "bool":
        mask = rng.random((N, H, L, S)) > 0.3
        mask[..., 0] = True                                   # every query attends somewhere
    elif c.get("mask") == "bool2d":
        mask = rng.random((L, S)) > 0.3
        mask[:, 0] = True
    elif c.get("mask") == "float":
        mask = rng.standard_normal((N, 1, L, S))
    elif c.get("mask") == "rows":
        mask = rng.random((N, H, L, S)) > 0.3
        mask[0, 1, 2] = mask[1, 0, 0] = False             # these queries may attend nowhere: output 0, not NaN
    (oq, ok, ov, om), (tq, tk, tv, tm) = _inputs([q, k, v, mask])
    kw = {k_: c[k_] for k_ in ("is_causal", "scale", "enable_gqa") if k_ in c}
    ours = F.scaled_dot_product_attention(oq, ok, ov, attn_mask=om, **kw)
    theirs = torch.nn.functional.scaled_dot_product_attention(tq, tk, tv, attn_mask=tm, **kw)
    _assert_close(ours, theirs, "output")
    _compare_backward(ours, theirs, [oq, ok, ov, om], [tq, tk, tv, tm])


def test_scaled_dot_product_attention_is_softmax_of_scores():
    """Without masks it is softmax(QKᵀ/√E) V, written out."""
    rng = _rng(2)
    q, k, v = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((5, 2))
    s = q @ k.T / 2.0
    w = np.exp(s - s.max(-1, keepdims=True))
    w /= w.sum(-1, keepdims=True)
    out = F.scaled_dot_product_attention(autograd.tensor(q), autograd.tensor(k), autograd.tensor(v))
    np.testing.assert_allclose(out.numpy(), w @ v, rtol=1e-12, atol=1e-12)


def test_scaled_dot_product_attention_rejects_mask_with_causal():
    x = autograd.zeros(1, 2, 3)
    with pytest.raises(RuntimeError, match="is_causal"):
        F.scaled_dot_product_attention(x, x, x, attn_mask=autograd.ones(2, 2, dtype=autograd.bool), is_causal=True)


def test_scaled_dot_product_attention_gradcheck():
    rng = _rng(3)
    q, k, v = (autograd.tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 3, 2), (2, 4, 2), (2, 4, 3)])
    bias = autograd.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    assert autograd.gradcheck(lambda q, k, v, b: F.scaled_dot_product_attention(q, k, v, attn_mask=b), (q, k, v, bias))
    assert autograd.gradcheck(lambda q, k, v: F.scaled_dot_product_attention(q, k, v[:, :3], is_causal=True),
                              (q, k[:, :3], v))


# ---------------------------------------------------------------------------------------------------------------
# nn.MultiheadAttention
# ---------------------------------------------------------------------------------------------------------------

MHA_CASES = {
    "default": {},
    "batch_first": {"module": {"batch_first": True}},
    "no bias": {"module": {"bias": False}},
    "kdim vdim": {"module": {"kdim": 3, "vdim": 5}},
    "bias_kv zero_attn": {"module": {"add_bias_kv": True, "add_zero_attn": True}, "kpm": True, "mask": "bool"},
    "key_padding_mask": {"kpm": True},
    "float key_padding_mask": {"kpm": "float"},
    "bool attn_mask": {"mask": "bool"},
    "float attn_mask": {"mask": "float"},
    "3d attn_mask": {"mask": "3d"},
    "causal": {"mask": "causal", "is_causal": True},
    "causal without weights": {"mask": "causal", "is_causal": True, "need_weights": False},
    "per-head weights": {"average_attn_weights": False, "kpm": True},
    "no weights": {"need_weights": False, "kpm": True, "mask": "float"},
    "no weights batch_first": {"module": {"batch_first": True}, "need_weights": False, "mask": "bool"},
    "self attention": {"self": True, "module": {"batch_first": True}, "kpm": True},
    "unbatched": {"unbatched": True, "kpm": True},
    "all keys padded, no weights": {"kpm": "all", "need_weights": False},
}


def _mha_arrays(c, E=8, H=2, L=4, S=5, N=3):
    rng = _rng(4)
    m = c.get("module", {})
    if c.get("self"):
        S = L
    shape = (lambda T, D: (T, D)) if c.get("unbatched") else (
        (lambda T, D: (N, T, D)) if m.get("batch_first") else (lambda T, D: (T, N, D)))
    q = rng.standard_normal(shape(L, E))
    k = q if c.get("self") else rng.standard_normal(shape(S, m.get("kdim", E)))
    v = q if c.get("self") else rng.standard_normal(shape(S, m.get("vdim", E)))
    kpm = None
    if c.get("kpm") is not None:
        kpm = np.zeros((N, S), bool)
        kpm[0, -2:] = True
        kpm[1, 0] = True
        if c["kpm"] == "all":
            kpm[2] = True
        if c["kpm"] == "float":
            kpm = np.where(kpm, -1e9, rng.standard_normal((N, S)))
        if c.get("unbatched"):
            kpm = kpm[0]
    mask = None
    if c.get("mask") == "bool":
        mask = rng.random((L, S)) > 0.7
        mask[:, 1] = False
    elif c.get("mask") == "float":
        mask = rng.standard_normal((L, S))
    elif c.get("mask") == "3d":
        mask = rng.standard_normal((N * H, L, S))
    elif c.get("mask") == "causal":
        mask = np.triu(np.full((L, S), -np.inf), 1)
    return q, k, v, kpm, mask


@pytest.mark.torch
@pytest.mark.parametrize("case", MHA_CASES)
def test_multihead_attention_matches_pytorch(case):
    c = MHA_CASES[case]
    E, H = 8, 2
    ours_mod, theirs_mod = _pair(lambda lib: lib.nn.MultiheadAttention(E, H, **c.get("module", {})))
    q, k, v, kpm, mask = _mha_arrays(c, E, H)
    if c.get("self"):
        (oq, okpm, om), (tq, tkpm, tm) = _inputs([q, kpm, mask])
        ok = ov = oq
        tk = tv = tq
    else:
        (oq, ok, ov, okpm, om), (tq, tk, tv, tkpm, tm) = _inputs([q, k, v, kpm, mask])
    for t in (okpm, om, tkpm, tm):
        if t is not None:
            t.requires_grad_(False)
    kw = {k_: c[k_] for k_ in ("need_weights", "average_attn_weights", "is_causal") if k_ in c}
    ours = ours_mod(oq, ok, ov, key_padding_mask=okpm, attn_mask=om, **kw)
    theirs = theirs_mod(tq, tk, tv, key_padding_mask=tkpm, attn_mask=tm, **kw)
    _assert_close(ours[0], theirs[0], "output")
    if theirs[1] is None:
        assert ours[1] is None
        loss_ours, loss_theirs = ours[0], theirs[0]
    else:
        _assert_close(ours[1], theirs[1], "attention weights")
        loss_ours = autograd.cat([ours[0].flatten(), ours[1].flatten()])
        import torch
        loss_theirs = torch.cat([theirs[0].flatten(), theirs[1].flatten()])
    _compare_backward(loss_ours, loss_theirs, [oq, ok, ov], [tq, tk, tv], ours_mod, theirs_mod)


def test_multihead_attention_parameters_and_init():
    autograd.manual_seed(0)
    mha = nn.MultiheadAttention(12, 3)
    assert [(n, tuple(p.shape)) for n, p in mha.named_parameters()] == [
        ("in_proj_weight", (36, 12)), ("in_proj_bias", (36,)), ("out_proj.weight", (12, 12)), ("out_proj.bias", (12,))]
    assert type(mha.out_proj).__name__ == "NonDynamicallyQuantizableLinear" and isinstance(mha.out_proj, nn.Linear)
    assert not mha.in_proj_bias.numpy().any() and not mha.out_proj.bias.numpy().any()
    bound = math.sqrt(6 / (36 + 12))                          # xavier_uniform_ on the packed (3E, E) weight
    w = mha.in_proj_weight.numpy()
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.8 * bound
    assert mha.q_proj_weight is None and mha.bias_k is None
    sep = nn.MultiheadAttention(12, 3, kdim=4, vdim=6, add_bias_kv=True, bias=False)
    assert [(n, tuple(p.shape)) for n, p in sep.named_parameters()] == [
        ("q_proj_weight", (12, 12)), ("k_proj_weight", (12, 4)), ("v_proj_weight", (12, 6)), ("bias_k", (1, 1, 12)),
        ("bias_v", (1, 1, 12)), ("out_proj.weight", (12, 12))]
    assert sep.in_proj_weight is None and sep.in_proj_bias is None and sep.out_proj.bias is None
    with pytest.raises(AssertionError, match="divisible"):
        nn.MultiheadAttention(10, 3)


def test_mismatched_mask_types_warn_as_pytorch():
    mha = nn.MultiheadAttention(4, 2)
    x = autograd.randn(3, 1, 4)
    with pytest.warns(UserWarning, match="mismatched key_padding_mask and attn_mask"):
        mha(x, x, x, key_padding_mask=autograd.zeros(1, 3, dtype=autograd.bool), attn_mask=autograd.zeros(3, 3))
    with pytest.raises(AssertionError, match=r"Expected key_padded_mask.shape\[1\] to be 3, but got 2"):
        mha(x, x, x, key_padding_mask=autograd.zeros(1, 2, dtype=autograd.bool))
    with pytest.raises(RuntimeError, match="The shape of the 2D attn_mask"):
        mha(x, x, x, attn_mask=autograd.zeros(2, 3))
    with pytest.raises(AssertionError, match="only bool and floating types of key_padding_mask"):
        mha(x, x, x, key_padding_mask=autograd.zeros(1, 3, dtype=autograd.int64))


def test_multihead_attention_gradcheck():
    autograd.manual_seed(0)
    mha = nn.MultiheadAttention(4, 2, kdim=3, add_bias_kv=True).double()
    rng = _rng(5)
    q, k, v = (autograd.tensor(rng.standard_normal(s), requires_grad=True) for s in [(2, 1, 4), (3, 1, 3), (3, 1, 4)])
    kpm = autograd.tensor(np.array([[False, True, False]]))
    assert autograd.gradcheck(lambda q, k, v: mha(q, k, v, key_padding_mask=kpm)[0], (q, k, v))
    assert autograd.gradcheck(lambda q, k, v: mha(q, k, v, need_weights=False)[0], (q, k, v))


# ---------------------------------------------------------------------------------------------------------------
# Transformer layers
# ---------------------------------------------------------------------------------------------------------------

ENCODER_CASES = {
    "post-norm relu": {},
    "norm_first gelu batch_first": {"layer": {"norm_first": True, "activation": "gelu", "batch_first": True}},
    "callable activation, no bias": {"layer": {"activation": "tanh", "bias": False}},
    "masks": {"mask": True, "kpm": True},
    "causal mask": {"causal": True},
    "causal mask and padding": {"causal": True, "kpm": True, "layer": {"batch_first": True}},
    "final norm": {"norm": True, "kpm": True},
}


def _encoder(lib, c, d_model=8, nhead=2):
    kw = dict(c.get("layer", {}))
    if kw.get("activation") == "tanh":
        kw["activation"] = lib.torch.tanh
    layer = lib.nn.TransformerEncoderLayer(d_model, nhead, dim_feedforward=12, dropout=0.1, **kw)
    norm = lib.nn.LayerNorm(d_model) if c.get("norm") else None
    return lib.nn.TransformerEncoder(layer, num_layers=2, norm=norm)


@pytest.mark.torch
@pytest.mark.parametrize("case", ENCODER_CASES)
def test_transformer_encoder_matches_pytorch(case):
    import torch
    c = ENCODER_CASES[case]
    N, L, d = 3, 5, 8
    ours_mod, theirs_mod = _pair(lambda lib: _encoder(lib, c, d))
    rng = _rng(6)
    batch_first = c.get("layer", {}).get("batch_first", False)
    x = rng.standard_normal((N, L, d) if batch_first else (L, N, d))
    kpm = mask = None
    if c.get("kpm"):
        kpm = np.zeros((N, L), bool)
        kpm[0, -2:] = True
    if c.get("mask"):
        mask = rng.random((L, L)) > 0.7
        mask[:, 0] = False
    (ox, okpm, om), (tx, tkpm, tm) = _inputs([x, kpm, mask])
    if c.get("causal"):
        om, tm = nn.Transformer.generate_square_subsequent_mask(L).double(), \
            torch.nn.Transformer.generate_square_subsequent_mask(L).double()
    ours = ours_mod(ox, mask=om, src_key_padding_mask=okpm)
    theirs = theirs_mod(tx, mask=tm, src_key_padding_mask=tkpm)
    _assert_close(ours, theirs, "output")
    _compare_backward(ours, theirs, [ox], [tx], ours_mod, theirs_mod)


@pytest.mark.torch
@pytest.mark.parametrize("layer", [{}, {"norm_first": True, "activation": "gelu", "batch_first": True}])
def test_transformer_matches_pytorch(layer):
    import torch
    N, S, T, d = 2, 5, 4, 8

    def make(lib):
        return lib.nn.Transformer(d_model=d, nhead=2, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=12,
                                  **layer)

    ours_mod, theirs_mod = _pair(make)
    rng = _rng(8)
    bf = layer.get("batch_first", False)
    src = rng.standard_normal((N, S, d) if bf else (S, N, d))
    tgt = rng.standard_normal((N, T, d) if bf else (T, N, d))
    kpm = np.zeros((N, S), bool)
    kpm[1, -1] = True
    (osrc, otgt, okpm), (tsrc, ttgt, tkpm) = _inputs([src, tgt, kpm])
    ours_mask = nn.Transformer.generate_square_subsequent_mask(T, dtype=autograd.float64)
    theirs_mask = torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64)
    ours = ours_mod(osrc, otgt, tgt_mask=ours_mask, src_key_padding_mask=okpm, memory_key_padding_mask=okpm)
    theirs = theirs_mod(tsrc, ttgt, tgt_mask=theirs_mask, src_key_padding_mask=tkpm, memory_key_padding_mask=tkpm)
    _assert_close(ours, theirs, "output")
    _compare_backward(ours, theirs, [osrc, otgt], [tsrc, ttgt], ours_mod, theirs_mod)


DECODER_CASES = {
    "post-norm": {},
    "norm_first gelu batch_first, final norm": {"layer": {"norm_first": True, "activation": "gelu",
                                                          "batch_first": True}, "norm": True},
    "masks": {"masks": True},
}


@pytest.mark.torch
@pytest.mark.parametrize("case", DECODER_CASES)
def test_transformer_decoder_matches_pytorch(case):
    import torch
    c = DECODER_CASES[case]
    N, S, T, d = 2, 5, 4, 8

    def make(lib):
        layer = lib.nn.TransformerDecoderLayer(d, 2, dim_feedforward=12, **c.get("layer", {}))
        return lib.nn.TransformerDecoder(layer, 2, norm=lib.nn.LayerNorm(d) if c.get("norm") else None)

    ours_mod, theirs_mod = _pair(make)
    rng = _rng(11)
    bf = c.get("layer", {}).get("batch_first", False)
    tgt = rng.standard_normal((N, T, d) if bf else (T, N, d))
    memory = rng.standard_normal((N, S, d) if bf else (S, N, d))
    arrays = [tgt, memory, None, None, None, None]
    if c.get("masks"):
        tgt_kpm, mem_kpm = np.zeros((N, T), bool), np.zeros((N, S), bool)
        tgt_kpm[0, -1] = mem_kpm[1, -2:] = True
        arrays[2:] = [np.triu(np.ones((T, T), bool), 1), rng.standard_normal((T, S)), tgt_kpm, mem_kpm]
    (ot, om, otm, omm, otk, omk), (tt, tm, ttm, tmm, ttk, tmk) = _inputs(arrays)
    for t in (omm, tmm):
        if t is not None:
            t.requires_grad_(False)
    ours = ours_mod(ot, om, tgt_mask=otm, memory_mask=omm, tgt_key_padding_mask=otk, memory_key_padding_mask=omk)
    theirs = theirs_mod(tt, tm, tgt_mask=ttm, memory_mask=tmm, tgt_key_padding_mask=ttk,
                        memory_key_padding_mask=tmk)
    assert isinstance(theirs, torch.Tensor)
    _assert_close(ours, theirs, "output")
    _compare_backward(ours, theirs, [ot, om], [tt, tm], ours_mod, theirs_mod)


@pytest.mark.torch
def test_generate_square_subsequent_mask_matches_pytorch():
    import torch
    ours = nn.Transformer.generate_square_subsequent_mask(4)
    theirs = torch.nn.Transformer.generate_square_subsequent_mask(4)
    assert ours.dtype == autograd.float32
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.torch
@pytest.mark.parametrize("padding", ["right", "left"])
def test_transformer_encoder_inference_with_padding_matches_pytorch(padding):
    """In inference PyTorch runs a batch_first encoder over the unpadded tokens only and pads with zeros."""
    import torch
    c = {"layer": {"batch_first": True}, "norm": True}
    ours_mod, theirs_mod = _pair(lambda lib: _encoder(lib, c))
    x = _rng(10).standard_normal((3, 5, 8))
    kpm = np.zeros((3, 5), bool)
    kpm[0, -2:] = True
    kpm[2, -1 if padding == "right" else 0] = True
    with torch.no_grad(), autograd.no_grad():
        theirs = theirs_mod(torch.tensor(x), src_key_padding_mask=torch.tensor(kpm))
        ours = ours_mod(autograd.tensor(x), src_key_padding_mask=autograd.tensor(kpm))
    _assert_close(ours, theirs, "output")
    bias = theirs_mod.norm.bias.detach().numpy()
    assert np.allclose(theirs[0, -1].numpy(), bias) == (padding == "right")     # norm(0) = its bias


def test_nested_tensor_warning_as_pytorch():
    with pytest.warns(UserWarning, match="use_nested_tensor is False because encoder_layer.norm_first was True"):
        nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16, norm_first=True, batch_first=True), 1)


def test_encoder_layers_are_independent_copies():
    layer = nn.TransformerEncoderLayer(8, 2, dim_feedforward=16)
    enc = nn.TransformerEncoder(layer, 3)
    assert len(enc.layers) == 3 and enc.layers[0] is not layer
    w = [m.self_attn.in_proj_weight for m in enc.layers]
    assert w[0] is not w[1] and np.array_equal(w[0].numpy(), w[1].numpy())
    assert len(list(enc.parameters())) == 3 * len(list(layer.parameters()))
    with pytest.raises(RuntimeError, match="relu/gelu"):
        nn.TransformerEncoderLayer(8, 2, activation="swish")
    copy.deepcopy(enc)


def test_encoder_layer_gradcheck():
    autograd.manual_seed(0)
    layer = nn.TransformerEncoderLayer(4, 2, dim_feedforward=6, dropout=0.0, norm_first=True).double()
    x = autograd.tensor(_rng(9).standard_normal((3, 1, 4)), requires_grad=True)
    mask = nn.Transformer.generate_square_subsequent_mask(3, dtype=autograd.float64)
    assert autograd.gradcheck(lambda x: layer(x, src_mask=mask), (x,))


# ---------------------------------------------------------------------------------------------------------------
# A program in the style of "Language Modeling with nn.Transformer" (PyTorch tutorials)
# ---------------------------------------------------------------------------------------------------------------

def language_model(m, weights=None, steps=6):
    torch, nn_ = m.torch, m.nn

    class PositionalEncoding(nn_.Module):
        def __init__(self, d_model, dropout=0.1, max_len=5000):
            super().__init__()
            self.dropout = nn_.Dropout(p=dropout)
            position = torch.arange(max_len).unsqueeze(1)
            div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
            pe = torch.zeros(max_len, 1, d_model)
            pe[:, 0, 0::2] = torch.sin(position * div_term)
            pe[:, 0, 1::2] = torch.cos(position * div_term)
            self.register_buffer("pe", pe)

        def forward(self, x):
            x = x + self.pe[:x.size(0)]
            return self.dropout(x)

    class TransformerModel(nn_.Module):
        def __init__(self, ntoken, d_model, nhead, d_hid, nlayers, dropout=0.5):
            super().__init__()
            self.model_type = "Transformer"
            self.pos_encoder = PositionalEncoding(d_model, dropout)
            encoder_layers = nn_.TransformerEncoderLayer(d_model, nhead, d_hid, dropout)
            self.transformer_encoder = nn_.TransformerEncoder(encoder_layers, nlayers)
            self.embedding = nn_.Embedding(ntoken, d_model)
            self.d_model = d_model
            self.linear = nn_.Linear(d_model, ntoken)
            self.init_weights()

        def init_weights(self):
            initrange = 0.1
            self.embedding.weight.data.uniform_(-initrange, initrange)
            self.linear.bias.data.zero_()
            self.linear.weight.data.uniform_(-initrange, initrange)

        def forward(self, src, src_mask=None):
            src = self.embedding(src) * math.sqrt(self.d_model)
            src = self.pos_encoder(src)
            if src_mask is None:
                src_mask = nn_.Transformer.generate_square_subsequent_mask(len(src))
            output = self.transformer_encoder(src, src_mask)
            return self.linear(output)

    ntokens, bptt = 11, 6
    model = TransformerModel(ntokens, d_model=16, nhead=2, d_hid=24, nlayers=2, dropout=0.0)
    if weights is not None:
        model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()})
    data = torch.tensor([(3 * i + i // 5) % ntokens for i in range(4 * bptt + 1)]).view(-1, 1).repeat(1, 2)

    def get_batch(source, i):
        seq_len = min(bptt, len(source) - 1 - i)
        return source[i:i + seq_len], source[i + 1:i + 1 + seq_len].reshape(-1)

    criterion = nn_.CrossEntropyLoss()
    optimizer = m.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    model.train()
    for _ in range(steps):
        for i in range(0, data.size(0) - 1, bptt):
            x, targets = get_batch(data, i)
            output = model(x)
            loss = criterion(output.view(-1, ntokens), targets)
            optimizer.zero_grad()
            loss.backward()
            nn_.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
        losses.append(loss.item())
    return losses, model


def test_language_model_loss_falls():
    autograd.manual_seed(0)
    losses, _ = language_model(OURS)
    assert losses[-1] < 0.7 * losses[0]


@pytest.mark.torch
def test_language_model_equals_pytorch():
    import torch
    autograd.manual_seed(0)
    _, model = language_model(OURS, steps=0)
    weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    ours, _ = language_model(OURS, weights)
    torch.set_default_dtype(torch.float32)
    theirs, _ = language_model(SimpleNamespace(torch=torch, nn=torch.nn, optim=torch.optim), weights)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert theirs[-1] < 0.7 * theirs[0]
