"""The Transformer (Vaswani et al., 2017): encoder and decoder layers and stacks, PyTorch's layout and names."""

import copy
import warnings

import autograd
from autograd.graph import program_stacklevel

from . import functional as F
from . import init
from .activation import GELU, ReLU
from .attention import MultiheadAttention, _canonical_mask, _wants_no_gradient
from .container import ModuleList
from .dropout import Dropout
from .linear import Linear
from .module import Module
from .normalization import LayerNorm


def _activation(activation):
    """"relu" / "gelu" name F.relu / F.gelu; any callable is used as it is. F.relu and F.gelu themselves are read
    from nn.functional now: the default argument was taken at import, and once a mode or a subclass has made them
    dispatching wrappers (overrides.py), the plain function it holds no longer pickles by its name."""
    if activation == "relu" or (callable(activation) and activation == F.relu):
        return F.relu
    if activation == "gelu" or (callable(activation) and activation == F.gelu):
        return F.gelu
    if callable(activation):
        return activation
    raise RuntimeError(f"activation should be relu/gelu, not {activation}")


_get_activation_fn = _activation  # PyTorch's private name, which third-party layers import (timm's MLDecoder)


def _relu_or_gelu(activation):
    """PyTorch's ``activation_relu_or_gelu`` flag: 1 for ReLU, 2 for GELU, 0 for anything else."""
    if activation == F.relu or isinstance(activation, ReLU):  # (==: F.relu may be a dispatching wrapper, overrides.py)
        return 1
    if activation == F.gelu or isinstance(activation, GELU):
        return 2
    return 0


def _why_not_nested(layer, nested=True):
    """PyTorch runs an encoder in inference over "nested" (unpadded) sequences only for layers like these; its
    fused layer kernel (``nested`` False) takes norm_first layers too."""
    name = "encoder_layer"
    if not isinstance(layer, TransformerEncoderLayer):
        return f"{name} was not TransformerEncoderLayer"
    if layer.norm_first and nested:
        return f"{name}.norm_first was True"
    if not layer.self_attn.batch_first:
        return (f"{name}.self_attn.batch_first was not True"
                "(use batch_first for better inference performance)")
    if not layer.self_attn._qkv_same_embed_dim:
        return f"{name}.self_attn._qkv_same_embed_dim was not True"
    if layer.self_attn.in_proj_bias is None:
        return f"{name}.self_attn was passed bias=False"
    if not layer.activation_relu_or_gelu:
        return f"{name}.activation_relu_or_gelu was not True"
    if layer.norm1.eps != layer.norm2.eps:
        return f"{name}.norm1.eps was not equal to {name}.norm2.eps"
    if layer.self_attn.num_heads % 2 == 1:
        return f"{name}.self_attn.num_heads is odd"
    return ""


def _left_aligned(padding):
    """Whether every row of the (N, S) boolean ``padding`` is some unpadded positions, then only padding."""
    return bool((padding.int().diff(dim=-1) >= 0).all()) if padding.shape[-1] > 1 else True


def _as_left_aligned(padding):
    """The (N, S) padding (True = padded) that keeps each sequence's first n tokens, n its count of unpadded
    ones: how PyTorch's nested-tensor path reads a padding mask it does not check (``mask_check`` off)."""
    return autograd.arange(padding.shape[-1]) >= (~padding).sum(-1, keepdim=True)


def _clones(module, n):
    """n independent deep copies of a layer (so each has its own parameters), as PyTorch."""
    return ModuleList([copy.deepcopy(module) for _ in range(n)])


_get_clones = _clones  # PyTorch's private name, which DETR-style layers import


def generate_square_subsequent_mask(sz, device=None, dtype=None):
    """The (sz, sz) float mask with -inf above the diagonal and 0 elsewhere: position i sees positions ≤ i."""
    return autograd.full((sz, sz), float("-inf"), dtype=dtype, device=device).triu(diagonal=1)


_generate_square_subsequent_mask = generate_square_subsequent_mask  # (PyTorch's private name, which programs import)


def _detect_is_causal_mask(mask, is_causal, size):
    """is_causal when given; otherwise whether ``mask`` equals the square subsequent mask (PyTorch's rule)."""
    make_causal = is_causal is True
    if is_causal is None and mask is not None:
        sz = size if size is not None else mask.shape[-2]
        causal = generate_square_subsequent_mask(sz, dtype=mask.dtype)
        make_causal = tuple(mask.shape) == tuple(causal.shape) and bool((mask == causal).all())
    return make_causal


def _seq_len(src, batch_first):
    if src.ndim == 2:
        return src.shape[0]
    return src.shape[1 if batch_first else 0]


_get_seq_len = _seq_len  # (PyTorch's private name)


def _canonical_masks(x, mask, key_padding_mask, mask_name):
    """Both masks as float masks of x's dtype (``mask_name``, the attention mask's argument name, in the warning
    about mismatched mask types: "mask" in the encoder, "src_mask" in its layer)."""
    key_padding_mask = _canonical_mask(key_padding_mask, "src_key_padding_mask",
                                       None if mask is None else mask.dtype, mask_name, x.dtype)
    return _canonical_mask(mask, mask_name, None, "src_key_padding_mask", x.dtype), key_padding_mask


class TransformerEncoderLayer(Module):
    """x ← LN(x + SelfAttn(x)), x ← LN(x + FF(x)), FF(x) = W₂ act(W₁ x + b₁) + b₂ (post-norm);
    with ``norm_first``: x ← x + SelfAttn(LN(x)), x ← x + FF(LN(x))."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu, layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, device=None, dtype=None):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.activation = _activation(activation)
        self.activation_relu_or_gelu = _relu_or_gelu(self.activation)
        if dtype is not None:
            self.to(dtype)

    def forward(self, src, src_mask=None, src_key_padding_mask=None, is_causal=False):
        src_mask, src_key_padding_mask = _canonical_masks(src, src_mask, src_key_padding_mask, "src_mask")
        sa_block = self._fused_sa_block if self._takes_fast_path(src) else self._sa_block
        x = src
        if self.norm_first:
            x = x + sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
            x = x + self._ff_block(self.norm2(x))
        else:
            x = self.norm1(x + sa_block(x, src_mask, src_key_padding_mask, is_causal))
            x = self.norm2(x + self._ff_block(x))
        return x

    def _takes_fast_path(self, src):
        """Whether PyTorch runs its fused kernel (``torch._transformer_encoder_layer_fwd``): a batched
        batch-first layer in eval mode with no gradient wanted, no hooks on it or its parts, and
        ``backends.mha`` not switched off (and the kernel's conditions on the layer, ``_why_not_nested``)."""
        return (autograd.backends.mha.get_fastpath_enabled() and src.ndim == 3 and not self.training
                and not _why_not_nested(self, nested=False) and not autograd.is_autocast_enabled()
                and not any(m._forward_hooks or m._forward_pre_hooks for m in self.modules())
                and _wants_no_gradient((src, *self._fused_kernel_parameters())))

    def _fused_kernel_parameters(self):
        attn = self.self_attn
        return (attn.in_proj_weight, attn.in_proj_bias, attn.out_proj.weight, attn.out_proj.bias, self.norm1.weight,
                self.norm1.bias, self.norm2.weight, self.norm2.bias, self.linear1.weight, self.linear1.bias,
                self.linear2.weight, self.linear2.bias)

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(x)

    def _fused_sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
        """The fused kernel's attention: the mask as given (the is_causal hint ignored) through an ordinary
        softmax, as the weights path computes it, so a query whose every key is masked gives NaN (the SDPA path
        gives it zero weights); eval mode, so no dropout. The kernel reads the masks in x's dtype."""
        attn_mask, key_padding_mask = (None if m is None else m.to(x.dtype) for m in (attn_mask, key_padding_mask))
        return self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=True)[0]

    def _ff_block(self, x):
        return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerDecoderLayer(Module):
    """Post-norm: x ← LN(x + SelfAttn(x)), x ← LN(x + CrossAttn(x, memory)), x ← LN(x + FF(x));
    with ``norm_first`` each sub-block reads LN(x) and adds to x."""

    def __init__(self, d_model, nhead, dim_feedforward=2048, dropout=0.1, activation=F.relu, layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, device=None, dtype=None):
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=batch_first, bias=bias,
                                            dtype=dtype)
        self.multihead_attn = MultiheadAttention(d_model, nhead, dropout=dropout, batch_first=batch_first,
                                                 bias=bias, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.norm3 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        self.dropout3 = Dropout(dropout)
        self.activation = _activation(activation)
        if dtype is not None:
            self.to(dtype)

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=False, memory_is_causal=False):
        x = tgt
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), tgt_mask, tgt_key_padding_mask, tgt_is_causal)
            x = x + self._mha_block(self.norm2(x), memory, memory_mask, memory_key_padding_mask, memory_is_causal)
            x = x + self._ff_block(self.norm3(x))
        else:
            x = self.norm1(x + self._sa_block(x, tgt_mask, tgt_key_padding_mask, tgt_is_causal))
            x = self.norm2(x + self._mha_block(x, memory, memory_mask, memory_key_padding_mask, memory_is_causal))
            x = self.norm3(x + self._ff_block(x))
        return x

    def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, is_causal=is_causal,
                           need_weights=False)[0]
        return self.dropout1(x)

    def _mha_block(self, x, mem, attn_mask, key_padding_mask, is_causal=False):
        x = self.multihead_attn(x, mem, mem, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                is_causal=is_causal, need_weights=False)[0]
        return self.dropout2(x)

    def _ff_block(self, x):
        return self.dropout3(self.linear2(self.dropout(self.activation(self.linear1(x)))))


class TransformerEncoder(Module):
    """``num_layers`` deep copies of ``encoder_layer`` applied in turn, then the optional ``norm``.

    As PyTorch, in inference (eval mode, no gradient wanted) with a right-padded ``src_key_padding_mask``
    and no ``mask``, the padded positions come out as zeros before ``norm`` (PyTorch computes only the
    unpadded tokens there, as nested tensors, and pads the result with 0; a mask it is told not to check,
    ``mask_check=False``, it reads as left-aligned).
    """

    def __init__(self, encoder_layer, num_layers, norm=None, enable_nested_tensor=True, mask_check=True):
        super().__init__()
        self.layers = _clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = self.use_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check
        why_not = _why_not_nested(encoder_layer)
        if enable_nested_tensor and why_not:
            warnings.warn(f"enable_nested_tensor is True, but self.use_nested_tensor is False because {why_not}",
                          UserWarning, stacklevel=program_stacklevel())
            self.use_nested_tensor = False

    def _takes_nested_path(self, src, mask, src_key_padding_mask):
        """Whether PyTorch would run the layers over nested (unpadded) sequences: in inference, with a padding
        mask and no attention mask, left-aligned unless ``mask_check`` is off."""
        if (not self.use_nested_tensor or src_key_padding_mask is None or mask is not None or src.ndim != 3
                or not autograd.backends.mha.get_fastpath_enabled() or autograd.is_autocast_enabled()):
            return False
        first = self.layers[0]
        if first.training or (self.mask_check and not _left_aligned(src_key_padding_mask != 0)):
            return False
        return _wants_no_gradient((src, *first._fused_kernel_parameters()))

    def forward(self, src, mask=None, src_key_padding_mask=None, is_causal=None):
        mask, src_key_padding_mask = _canonical_masks(src, mask, src_key_padding_mask, "mask")
        first = self.layers[0] if len(self.layers) else None
        batch_first = first.self_attn.batch_first if first is not None else False
        is_causal = _detect_is_causal_mask(mask, is_causal, _seq_len(src, batch_first))
        padded = None
        if self._takes_nested_path(src, mask, src_key_padding_mask):
            # PyTorch runs the layers over each sequence's unpadded tokens alone and pads the results with 0
            padded = _as_left_aligned(src_key_padding_mask != 0)
            src_key_padding_mask = autograd.zeros(padded.shape, dtype=src.dtype).masked_fill(padded, float("-inf"))
        output = src
        for mod in self.layers:
            output = mod(output, src_mask=mask, is_causal=is_causal, src_key_padding_mask=src_key_padding_mask)
        if padded is not None:
            output = output.masked_fill(padded.unsqueeze(-1), 0.0)
        if self.norm is not None:
            output = self.norm(output)
        return output


class TransformerDecoder(Module):
    """``num_layers`` deep copies of ``decoder_layer``, each attending to ``memory``, then the optional ``norm``."""

    def __init__(self, decoder_layer, num_layers, norm=None):
        super().__init__()
        self.layers = _clones(decoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm

    def forward(self, tgt, memory, tgt_mask=None, memory_mask=None, tgt_key_padding_mask=None,
                memory_key_padding_mask=None, tgt_is_causal=None, memory_is_causal=False):
        first = self.layers[0] if len(self.layers) else None
        batch_first = first.self_attn.batch_first if first is not None else False
        tgt_is_causal = _detect_is_causal_mask(tgt_mask, tgt_is_causal, _seq_len(tgt, batch_first))
        output = tgt
        for mod in self.layers:
            output = mod(output, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                         tgt_key_padding_mask=tgt_key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                         tgt_is_causal=tgt_is_causal, memory_is_causal=memory_is_causal)
        if self.norm is not None:
            output = self.norm(output)
        return output


class Transformer(Module):
    """Encoder–decoder Transformer: memory = Encoder(src), output = Decoder(tgt, memory); every weight matrix
    Glorot-uniform initialised, as PyTorch."""

    def __init__(self, d_model=512, nhead=8, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=2048,
                 dropout=0.1, activation=F.relu, custom_encoder=None, custom_decoder=None, layer_norm_eps=1e-5,
                 batch_first=False, norm_first=False, bias=True, device=None, dtype=None):
        super().__init__()
        if custom_encoder is not None:
            self.encoder = custom_encoder
        else:
            layer = TransformerEncoderLayer(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                                            batch_first, norm_first, bias, dtype=dtype)
            self.encoder = TransformerEncoder(layer, num_encoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        if custom_decoder is not None:
            self.decoder = custom_decoder
        else:
            layer = TransformerDecoderLayer(d_model, nhead, dim_feedforward, dropout, activation, layer_norm_eps,
                                            batch_first, norm_first, bias, dtype=dtype)
            self.decoder = TransformerDecoder(layer, num_decoder_layers,
                                              LayerNorm(d_model, eps=layer_norm_eps, bias=bias))
        self._reset_parameters()
        self.d_model, self.nhead, self.batch_first = d_model, nhead, batch_first
        if dtype is not None:
            self.to(dtype)

    def _reset_parameters(self):
        """Every weight matrix drawn anew, Glorot-uniform (PyTorch's name: programs call it to re-initialise)."""
        for p in self.parameters():
            if p.ndim > 1:
                init.xavier_uniform_(p)

    def forward(self, src, tgt, src_mask=None, tgt_mask=None, memory_mask=None, src_key_padding_mask=None,
                tgt_key_padding_mask=None, memory_key_padding_mask=None, src_is_causal=None, tgt_is_causal=None,
                memory_is_causal=False):
        batched = src.ndim == 3
        if not self.batch_first and src.shape[1] != tgt.shape[1] and batched:
            raise RuntimeError("the batch number of src and tgt must be equal")
        if self.batch_first and src.shape[0] != tgt.shape[0] and batched:
            raise RuntimeError("the batch number of src and tgt must be equal")
        if src.shape[-1] != self.d_model or tgt.shape[-1] != self.d_model:
            raise RuntimeError("the feature number of src and tgt must be equal to d_model")
        memory = self.encoder(src, mask=src_mask, src_key_padding_mask=src_key_padding_mask, is_causal=src_is_causal)
        return self.decoder(tgt, memory, tgt_mask=tgt_mask, memory_mask=memory_mask,
                            tgt_key_padding_mask=tgt_key_padding_mask,
                            memory_key_padding_mask=memory_key_padding_mask, tgt_is_causal=tgt_is_causal,
                            memory_is_causal=memory_is_causal)

    generate_square_subsequent_mask = staticmethod(generate_square_subsequent_mask)
