"""Scaled dot-product attention and ``MultiheadAttention`` (Vaswani et al., 2017), PyTorch's semantics.

Everything here is composed from differentiable Tensor ops (matmul, softmax, masked_fill, dropout,
linear), so gradients, and gradients of gradients, come from those ops.
"""

import math
import warnings

import autograd
from autograd.graph import program_stacklevel
from autograd.ops.conversion import c_name

from .. import functional as F
from .. import init
from ..attention_backends import (  # noqa: F401  (nn.attention's names)
    SDPBackend,
    check_a_kernel_runs,
    flash_attention_takes,
    sdpa_kernel,
)
from ..linear import Linear
from ..module import Module
from ..parameter import Parameter
from .bias import CausalBias


def _causal_keep(L, S):
    """The (L, S) boolean mask that keeps key j for query i when j ≤ i (top-left aligned, as PyTorch)."""
    return autograd.ones(L, S, dtype=autograd.bool).tril(0)


def _refuse_a_mask_that_widens(scores, attn_mask):
    """PyTorch adds the mask into the scores in place, so a mask that broadcasts them to a larger shape
    (a (batch, L, S) mask whose batch lines up with the heads) is refused, not broadcast into more outputs."""
    try:
        shape = autograd.broadcast_shapes(scores.shape, attn_mask.shape)
    except RuntimeError:
        return  # shapes that do not broadcast: masking raises PyTorch's message for that
    if tuple(shape) != tuple(scores.shape):
        raise RuntimeError(f"output with shape {list(scores.shape)} doesn't match the broadcast shape {list(shape)}")


def _safe_softmax(scores):
    """softmax over the last dim, but a row whose scores are all -inf (a query that may attend nowhere) gets
    weights 0 rather than 0/0 = NaN, and no gradient (PyTorch's ``_safe_softmax``, used by attention).

    The softmax is taken first: a row of only -inf is NaN throughout, so where no row's first weight is NaN
    (the usual case) no row is all -inf, which one element a row tells, where comparing every score with -inf
    was a pass over them all. Otherwise (a NaN or +inf score makes a row NaN too) the scores are asked."""
    weights = scores.softmax(-1)
    first = weights._data[..., :1]
    if not (first != first).any():  # (NaN is the one value unequal to itself; CuPy's arrays too)
        return weights
    nowhere = (scores == float("-inf")).all(dim=-1, keepdim=True)
    if not nowhere._data.any():  # (every query attends somewhere: the weights are the plain softmax's)
        return weights
    weights = scores.masked_fill(nowhere, 0.0).softmax(-1)
    return weights.masked_fill(nowhere, 0.0)


def scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *, scale=None,
                                 enable_gqa=False):
    """softmax(Q Kᵀ · scale + B) V over the last two dims, scale = 1/√E by default.

    ``attn_mask`` is boolean (True = may attend, so False entries get B = -inf) or a float bias B added to
    the scores; ``is_causal`` masks keys after each query; a query with every key masked gets output 0.
    With ``enable_gqa`` the key/value heads (dim -3) are repeated to match the query heads (grouped-query
    attention).
    """
    if isinstance(attn_mask, CausalBias):  # (PyTorch routes it through CausalBias.__torch_function__)
        return CausalBias._dispatch(query, key, value, attn_mask, dropout_p, is_causal, scale, enable_gqa)
    check_a_kernel_runs()
    if key.dtype != query.dtype or value.dtype != query.dtype:
        raise RuntimeError(f"Expected query, key, and value to have the same dtype, but got query.dtype: "
                           f"{c_name(query.dtype)} key.dtype: {c_name(key.dtype)} and value.dtype: "
                           f"{c_name(value.dtype)} instead.")
    if min(query.ndim, key.ndim, value.ndim) < 2:
        raise RuntimeError(f"Expected query, key, and value to all be  at least 2 dimensional, but got query.dim: "
                           f"{query.ndim} key.dim: {key.ndim} and value.dim: {value.ndim} instead.")
    if attn_mask is not None and attn_mask.dtype not in (autograd.bool, autograd.float32, query.dtype):
        # (an integer 0/1 mask would be added to the scores, not select them)
        raise RuntimeError(f"Expected attn_mask dtype to be bool or float or to match query dtype, but got "
                           f"attn_mask.dtype: {c_name(attn_mask.dtype)} and  query.dtype: {c_name(query.dtype)} "
                           "instead.")
    if is_causal and attn_mask is not None and not flash_attention_takes(query, key, value, attn_mask, dropout_p):
        # (the math kernel refuses both; PyTorch's CPU flash kernel, where it runs, keeps what both allow)
        raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True")
    if query.dtype == autograd.float16:
        # PyTorch's math kernel computes float16 attention in float32 and rounds the output once
        if attn_mask is not None and attn_mask.dtype == autograd.float16:
            attn_mask = attn_mask.float()
        return scaled_dot_product_attention(query.float(), key.float(), value.float(), attn_mask, dropout_p,
                                            is_causal, scale=scale, enable_gqa=enable_gqa).half()
    if dropout_p > 1:  # (a negative probability drops nothing, as PyTorch's)
        raise RuntimeError(f"dropout probability has to be between 0 and 1, but got {dropout_p}")
    L, S, E = query.shape[-2], key.shape[-2], query.shape[-1]
    # (no features: every score is an empty sum, 0; PyTorch scales query and key by √scale before their
    # product, so the infinite 1/√0 never meets it)
    scale_factor = (1 / math.sqrt(E) if E else 1.0) if scale is None else scale
    if enable_gqa:
        heads = query.shape[-3]
        if heads % key.shape[-3] or heads % value.shape[-3]:
            raise RuntimeError("Number of heads in key and value must divide the number of heads in ")  # (sic)
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], -3)
        value = value.repeat_interleave(query.shape[-3] // value.shape[-3], -3)
    scores = query.matmul(key.transpose(-2, -1)) * scale_factor
    if is_causal:
        scores = scores.masked_fill(~_causal_keep(L, S), float("-inf"))
    if attn_mask is not None:
        _refuse_a_mask_that_widens(scores, attn_mask)
        if attn_mask.dtype == autograd.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    weights = _safe_softmax(scores)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p, training=True)
    return weights.matmul(value)


def _canonical_mask(mask, mask_name, other_type, other_name, target_type, check_other=True):
    """A boolean mask (True = masked out) becomes a float mask of ``target_type`` with -inf there; a float
    mask is returned as it is (PyTorch's ``F._canonical_mask``, which, ``check_other``, warns when the two
    masks' types differ; attention modules copied from PyTorch's call it as ``F._canonical_mask``)."""
    if mask is None:
        return None
    if mask.dtype != autograd.bool and not mask.is_floating_point():
        raise AssertionError(f"only bool and floating types of {mask_name} are supported")
    if check_other and other_type is not None and mask.dtype != other_type:
        warnings.warn(f"Support for mismatched {mask_name} and {other_name} is deprecated. Use same type for both "
                      "instead.", UserWarning, stacklevel=program_stacklevel())
    if mask.dtype == autograd.bool:
        return autograd.zeros(mask.shape, dtype=target_type).masked_fill(mask, float("-inf"))
    return mask


def _none_or_dtype(input):
    """PyTorch's ``F._none_or_dtype``: the other mask's dtype for ``_canonical_mask``, or None."""
    if input is None:
        return None
    if isinstance(input, autograd.Tensor):
        return input.dtype
    raise RuntimeError("input to _none_or_dtype() must be None or torch.Tensor")


def _wants_no_gradient(tensors):
    """True when no gradient can flow to any of ``tensors`` (grad mode off, or none of them requires grad): the
    condition of PyTorch's fused inference paths."""
    return not (autograd.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors))


def _pad_last(mask):
    """Append one unmasked (zero) column to a float mask, for the extra bias_k / zero-attention key."""
    if mask is None:
        return None
    return autograd.cat([mask, autograd.zeros(*mask.shape[:-1], 1, dtype=mask.dtype)], dim=-1)


def _mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads):
    """Whether ``query`` is batched (3-D) or not (2-D), after PyTorch's checks (and AssertionErrors) that key,
    value and the masks have the ranks that go with it."""
    if query.ndim not in (2, 3):
        raise AssertionError(f"query should be unbatched 2D or batched 3D tensor but received {query.ndim}-D query "
                             "tensor")
    batched = query.ndim == 3
    kind, rank = ("batched (3-D)", 3) if batched else ("unbatched (2-D)", 2)
    if key.ndim != rank or value.ndim != rank:
        raise AssertionError(f"For {kind} `query`, expected `key` and `value` to be {rank}-D but found {key.ndim}-D "
                             f"and {value.ndim}-D tensors respectively")
    if key_padding_mask is not None and key_padding_mask.ndim != rank - 1:
        raise AssertionError(f"For {kind} `query`, expected `key_padding_mask` to be `None` or {rank - 1}-D but "
                             f"found {key_padding_mask.ndim}-D tensor instead")
    if attn_mask is not None:
        if attn_mask.ndim not in (2, 3):
            raise AssertionError(f"For {kind} `query`, expected `attn_mask` to be `None`, 2-D or 3-D but found "
                                 f"{attn_mask.ndim}-D tensor instead")
        expected = (num_heads, query.shape[0], key.shape[0])
        if not batched and attn_mask.ndim == 3 and tuple(attn_mask.shape) != expected:
            raise AssertionError(f"Expected `attn_mask` shape to be {expected} but got "
                                 f"{autograd.Size(attn_mask.shape)!r}")
    return batched


def _split_packed(projection, parts, E):
    """The (..., parts·E) projection as ``parts`` tensors of (..., E), made contiguous as PyTorch's."""
    projection = projection.unflatten(-1, (parts, E)).unsqueeze(0).transpose(0, -2).squeeze(-2).contiguous()
    return tuple(projection[i] for i in range(parts))


def _in_projection_packed(q, k, v, w, b=None):
    """Query, key and value projected by the packed (3E, E) weight ``w`` = [W_q; W_k; W_v] (and bias ``b``), as
    PyTorch's helper: self-attention (q is k is v) in one product split in three, encoder-decoder attention
    (k is v) in two, else three."""
    E = q.shape[-1]
    if k is v:
        if q is k:
            return _split_packed(F.linear(q, w, b), 3, E)
        w_q, w_kv = w.split([E, E * 2])
        b_q, b_kv = (None, None) if b is None else b.split([E, E * 2])
        return (F.linear(q, w_q, b_q), *_split_packed(F.linear(k, w_kv, b_kv), 2, E))
    w_q, w_k, w_v = w.chunk(3)
    b_q, b_k, b_v = (None, None, None) if b is None else b.chunk(3)
    return F.linear(q, w_q, b_q), F.linear(k, w_k, b_k), F.linear(v, w_v, b_v)


def _in_projection(q, k, v, w_q, w_k, w_v, b_q=None, b_k=None, b_v=None):
    """Query, key and value projected by their own weights (W_q (E, E), W_k (E, kdim), W_v (E, vdim)), with
    PyTorch's checks of the shapes."""
    Eq, Ek, Ev = q.shape[-1], k.shape[-1], v.shape[-1]
    for name, weight, shape in (("query", w_q, (Eq, Eq)), ("key", w_k, (Eq, Ek)), ("value", w_v, (Eq, Ev))):
        if tuple(weight.shape) != shape:
            raise AssertionError(f"expecting {name} weights shape of {shape}, but got {autograd.Size(weight.shape)!r}")
    for name, bias in (("query", b_q), ("key", b_k), ("value", b_v)):
        if bias is not None and tuple(bias.shape) != (Eq,):
            raise AssertionError(f"expecting {name} bias shape of {(Eq,)}, but got {autograd.Size(bias.shape)!r}")
    return F.linear(q, w_q, b_q), F.linear(k, w_k, b_k), F.linear(v, w_v, b_v)


def multi_head_attention_forward(query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
                                 bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias,
                                 training=True, key_padding_mask=None, need_weights=True, attn_mask=None,
                                 use_separate_proj_weight=False, q_proj_weight=None, k_proj_weight=None,
                                 v_proj_weight=None, static_k=None, static_v=None, average_attn_weights=True,
                                 is_causal=False):
    """PyTorch's ``F.multi_head_attention_forward`` on sequence-first (L, N, E) inputs (or unbatched (L, E))."""
    batched = _mha_shape_check(query, key, value, key_padding_mask, attn_mask, num_heads)
    if not batched:
        query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
        if key_padding_mask is not None:
            key_padding_mask = key_padding_mask.unsqueeze(0)
    tgt_len, bsz, E = query.shape
    if E != embed_dim_to_check:
        raise AssertionError(f"was expecting embedding dimension of {embed_dim_to_check}, but got {E}")
    if use_separate_proj_weight:  # key and value may have their own widths (kdim, vdim), not their own lengths
        if key.shape[:2] != value.shape[:2]:
            raise AssertionError(f"key's sequence and batch dims {key.shape[:2]} do not match value's "
                                 f"{value.shape[:2]}")
    elif key.shape != value.shape:
        raise AssertionError(f"key shape {tuple(key.shape)} does not match value shape {tuple(value.shape)}")
    H = num_heads
    head_dim = E // H
    if is_causal and attn_mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer module "
                           "method `generate_square_subsequent_mask` to create this mask.")
    key_padding_mask = _canonical_mask(key_padding_mask, "key_padding_mask",
                                       None if attn_mask is None else attn_mask.dtype, "attn_mask", query.dtype)
    if is_causal and key_padding_mask is None and not need_weights:
        attn_mask = None                      # the hint alone says "causal": attention applies it itself
    else:
        attn_mask = _canonical_mask(attn_mask, "attn_mask", None, "key_padding_mask", query.dtype)
        if key_padding_mask is not None:
            is_causal = False
    if attn_mask is not None:
        src_len = key.shape[0]
        if attn_mask.ndim == 2:
            if tuple(attn_mask.shape) != (tgt_len, src_len):
                raise RuntimeError(f"The shape of the 2D attn_mask is {tuple(attn_mask.shape)}, but should be "
                                   f"{(tgt_len, src_len)}.")
            attn_mask = attn_mask.unsqueeze(0)
        elif attn_mask.ndim == 3:
            if tuple(attn_mask.shape) != (bsz * H, tgt_len, src_len):
                raise RuntimeError(f"The shape of the 3D attn_mask is {tuple(attn_mask.shape)}, but should be "
                                   f"{(bsz * H, tgt_len, src_len)}.")
        else:
            raise RuntimeError(f"attn_mask's dimension {attn_mask.ndim} is not supported")

    if not use_separate_proj_weight:
        q, k, v = _in_projection_packed(query, key, value, in_proj_weight, in_proj_bias)
    else:
        b_q, b_k, b_v = (None, None, None) if in_proj_bias is None else in_proj_bias.chunk(3)
        q, k, v = _in_projection(query, key, value, q_proj_weight, k_proj_weight, v_proj_weight, b_q, b_k, b_v)
    if bias_k is not None and bias_v is not None:
        if static_k is not None:
            raise AssertionError("bias cannot be added to static key.")
        if static_v is not None:
            raise AssertionError("bias cannot be added to static value.")
        k = autograd.cat([k, bias_k.repeat(1, bsz, 1)])
        v = autograd.cat([v, bias_v.repeat(1, bsz, 1)])
        attn_mask, key_padding_mask = _pad_last(attn_mask), _pad_last(key_padding_mask)

    # (L, N, E) -> (N·H, L, head_dim): each head of each sample is one batch entry
    q = q.reshape(tgt_len, bsz * H, head_dim).transpose(0, 1)
    for name, static in (("static_k", static_k), ("static_v", static_v)):
        if static is not None and static.shape[0] != bsz * H:
            raise AssertionError(f"expecting {name}.size(0) of {bsz * H}, but got {static.shape[0]}")
        if static is not None and static.shape[2] != head_dim:
            raise AssertionError(f"expecting {name}.size(2) of {head_dim}, but got {static.shape[2]}")
    k = k.reshape(k.shape[0], bsz * H, head_dim).transpose(0, 1) if static_k is None else static_k
    v = v.reshape(v.shape[0], bsz * H, head_dim).transpose(0, 1) if static_v is None else static_v
    if add_zero_attn:
        k = autograd.cat([k, autograd.zeros(bsz * H, 1, head_dim, dtype=k.dtype)], dim=1)
        v = autograd.cat([v, autograd.zeros(bsz * H, 1, head_dim, dtype=v.dtype)], dim=1)
        attn_mask, key_padding_mask = _pad_last(attn_mask), _pad_last(key_padding_mask)
    src_len = k.shape[1]

    if key_padding_mask is not None:
        for dim, expected in enumerate((bsz, src_len)):
            if key_padding_mask.shape[dim] != expected:
                raise AssertionError(f"Expected key_padded_mask.shape[{dim}] to be {expected}, but got "
                                     f"{key_padding_mask.shape[dim]}")
        padding = key_padding_mask.reshape(bsz, 1, 1, src_len).expand(-1, H, -1, -1).reshape(bsz * H, 1, src_len)
        attn_mask = padding if attn_mask is None else attn_mask + padding

    if not training:
        dropout_p = 0.0
    if need_weights:
        scores = (q * math.sqrt(1.0 / head_dim)).matmul(k.transpose(-2, -1))
        if attn_mask is not None:
            scores = scores + attn_mask
        weights = scores.softmax(-1)
        if dropout_p > 0.0:
            weights = F.dropout(weights, dropout_p)
        out = weights.matmul(v).transpose(0, 1).reshape(tgt_len * bsz, E)
        out = F.linear(out, out_proj_weight, out_proj_bias).reshape(tgt_len, bsz, E)
        weights = weights.reshape(bsz, H, tgt_len, src_len)
        if average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            return out.squeeze(1), weights.squeeze(0)
        return out, weights
    # (lengths spelt out, not -1: ambiguous in an empty batch)
    if attn_mask is not None:
        attn_mask = (attn_mask.unsqueeze(0) if attn_mask.shape[0] == 1
                     else attn_mask.reshape(bsz, H, attn_mask.shape[1], src_len))
    q = q.reshape(bsz, H, tgt_len, head_dim)
    k, v = (t.reshape(bsz, H, src_len, head_dim) for t in (k, v))
    out = scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
    out = out.permute(2, 0, 1, 3).reshape(bsz * tgt_len, E)
    out = F.linear(out, out_proj_weight, out_proj_bias).reshape(tgt_len, bsz, E)
    return (out if batched else out.squeeze(1)), None


class NonDynamicallyQuantizableLinear(Linear):
    """A Linear under another name, as PyTorch's ``out_proj`` (the name only matters to quantisation)."""


class MultiheadAttention(Module):
    """MultiHead(Q, K, V) = Concat(head_1, …, head_h) W_O,  head_i = Attention(Q W_Qi, K W_Ki, V W_Vi).

    Parameters as PyTorch: ``in_proj_weight`` (3E, E) packing W_Q, W_K, W_V (or ``q_proj_weight``,
    ``k_proj_weight`` (E, kdim), ``v_proj_weight`` (E, vdim) when kdim/vdim differ from E), ``in_proj_bias``
    (3E), optional ``bias_k``/``bias_v`` (1, 1, E) appended to the keys/values, and ``out_proj``.
    """

    def __init__(self, embed_dim, num_heads, dropout=0.0, bias=True, add_bias_kv=False, add_zero_attn=False,
                 kdim=None, vdim=None, batch_first=False, device=None, dtype=None):
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and "
                             f"num_heads={num_heads} instead")
        super().__init__()
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads, self.dropout, self.batch_first = num_heads, dropout, batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != embed_dim:
            raise AssertionError("embed_dim must be divisible by num_heads")

        def empty(*shape):
            return Parameter(autograd.empty(shape, dtype=dtype))

        if self._qkv_same_embed_dim:
            self.in_proj_weight = empty(3 * embed_dim, embed_dim)
            self.register_parameter("q_proj_weight", None)
            self.register_parameter("k_proj_weight", None)
            self.register_parameter("v_proj_weight", None)
        else:
            self.q_proj_weight = empty(embed_dim, embed_dim)
            self.k_proj_weight = empty(embed_dim, self.kdim)
            self.v_proj_weight = empty(embed_dim, self.vdim)
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = empty(3 * embed_dim)
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        if add_bias_kv:
            self.bias_k, self.bias_v = empty(1, 1, embed_dim), empty(1, 1, embed_dim)
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self):
        """PyTorch's: Glorot-uniform projections, zero biases, Glorot-normal bias_k/bias_v."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            init.xavier_uniform_(self.q_proj_weight)
            init.xavier_uniform_(self.k_proj_weight)
            init.xavier_uniform_(self.v_proj_weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        """Inputs (L, N, E) (or (N, L, E) with batch_first, or unbatched (L, E)); returns the output in the
        same layout and, where need_weights, the attention weights (N, L, S) averaged over heads (or
        (N, H, L, S)); ``key_padding_mask`` (N, S) and bool ``attn_mask`` are True where attention is barred."""
        # PyTorch's fused inference kernel computes attention with an ordinary softmax, as the weights path
        # does: a query whose every key is masked gets NaN there, where the SDPA path gives it zero weights.
        # It takes the mask as given and ignores the is_causal hint.
        fused = self._takes_fast_path(query, key, value, attn_mask, key_padding_mask)
        batch_first = self.batch_first and query.ndim == 3
        if batch_first:  # (one tensor passed twice stays one: self-attention is projected in one product)
            transposed = {}
            query, key, value = (transposed.setdefault(id(t), t.transpose(1, 0)) for t in (query, key, value))
        out, weights = multi_head_attention_forward(
            query, key, value, self.embed_dim, self.num_heads, self.in_proj_weight, self.in_proj_bias, self.bias_k,
            self.bias_v, self.add_zero_attn, self.dropout, self.out_proj.weight, self.out_proj.bias,
            training=self.training, key_padding_mask=key_padding_mask, need_weights=need_weights or fused,
            attn_mask=attn_mask, use_separate_proj_weight=not self._qkv_same_embed_dim,
            q_proj_weight=self.q_proj_weight, k_proj_weight=self.k_proj_weight, v_proj_weight=self.v_proj_weight,
            average_attn_weights=average_attn_weights, is_causal=is_causal and not fused)
        return (out.transpose(1, 0) if batch_first else out), (weights if need_weights else None)

    def _takes_fast_path(self, query, key, value, attn_mask, key_padding_mask):
        """Whether PyTorch runs its fused kernel (``torch._native_multi_head_attention``): batch-first
        self-attention (query, key and value one tensor) in eval mode with no gradient wanted, boolean masks or
        none, an even number of heads, packed projections with biases of the query's dtype, no bias_k or zero
        attention, and ``backends.mha`` not switched off."""
        if any(mask is not None and mask.is_floating_point() for mask in (attn_mask, key_padding_mask)):
            return False
        projections = (self.in_proj_weight, self.in_proj_bias)
        return (autograd.backends.mha.get_fastpath_enabled() and query.ndim == 3 and query is key is value
                and all(p is not None and p.dtype == query.dtype for p in projections)
                and not self.training and self.num_heads % 2 == 0 and self.batch_first and self.bias_k is None
                and not self.add_zero_attn and self._qkv_same_embed_dim and not autograd.is_autocast_enabled()
                and _wants_no_gradient((query, *projections, self.out_proj.weight, self.out_proj.bias)))

    def merge_masks(self, attn_mask, key_padding_mask, query):
        """(merged mask, mask type), as PyTorch's: the key padding mask (N, S) alone is type 1; an attention
        mask, (L, S) or (N·H, L, S), is expanded to (N, H, L, S), type 2, and a key padding mask with it is
        added (logical or for bool masks); neither gives (None, None). ``query`` is (N, L, E)."""
        mask_type, merged = None, None
        if key_padding_mask is not None:
            mask_type, merged = 1, key_padding_mask
        if attn_mask is not None:
            batch, length, _ = query.shape
            mask_type = 2
            if attn_mask.ndim == 3:
                merged = attn_mask.view(batch, -1, length, length)
            else:
                merged = attn_mask.view(1, 1, length, length).expand(batch, self.num_heads, -1, -1)
            if key_padding_mask is not None:
                merged = merged + key_padding_mask.view(batch, 1, 1, length).expand(-1, self.num_heads, -1, -1)
        return merged, mask_type
