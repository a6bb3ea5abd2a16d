"""``nn.attention.bias``: causal masks that ``scaled_dot_product_attention`` takes as its ``attn_mask`` without
materialising them (PyTorch's ``torch.nn.attention.bias``).

When a query block is shorter than its keys (decoding a few tokens against a KV cache), the two ways to align
the causal triangle differ: ``causal_upper_left`` is ``is_causal=True`` (query i sees keys j ≤ i), and
``causal_lower_right`` aligns the last query with the last key (query i sees keys j ≤ i + S - L), which is what
decoding after a cache needs.
"""

import warnings
from enum import IntEnum, auto

import autograd
from autograd.graph import program_stacklevel

__all__ = ["causal_upper_left", "causal_lower_right", "CausalVariant", "CausalBias"]


class CausalVariant(IntEnum):
    """Where the causal triangle is anchored: ``UPPER_LEFT`` (``tril(ones(L, S))``) or ``LOWER_RIGHT``
    (``tril(ones(L, S), diagonal=S - L)``)."""

    UPPER_LEFT = auto()
    LOWER_RIGHT = auto()


class CausalBias:
    """A causal attention pattern for ``scaled_dot_product_attention(q, k, v, attn_mask=bias)``, made by
    :func:`causal_upper_left` or :func:`causal_lower_right`; ``_materialize()`` gives its boolean mask."""

    def __init__(self, variant, seq_len_q, seq_len_kv):
        if not isinstance(variant, CausalVariant):
            raise AssertionError(f"variant must be a CausalVariant, got {type(variant).__name__}")
        self.variant = variant
        self.seq_len_q = seq_len_q
        self.seq_len_kv = seq_len_kv
        if seq_len_q > seq_len_kv and variant == CausalVariant.LOWER_RIGHT:
            warnings.warn("Lower right causal bias will produce NaNs in the output when seq_len_q > seq_len_kv!",
                          stacklevel=program_stacklevel())

    def _upper_left(self, device=None):
        return autograd.tril(autograd.ones(self.seq_len_q, self.seq_len_kv, device=device, dtype=autograd.bool))

    def _lower_right(self, device=None):
        diagonal_offset = self.seq_len_kv - self.seq_len_q
        return autograd.tril(autograd.ones(self.seq_len_q, self.seq_len_kv, device=device, dtype=autograd.bool),
                             diagonal=diagonal_offset)

    def _materialize(self, device=None):
        """The (seq_len_q, seq_len_kv) boolean mask, True where a query may attend."""
        if self.variant == CausalVariant.UPPER_LEFT:
            return self._upper_left(device)
        return self._lower_right(device)

    @staticmethod
    def _dispatch(query, key, value, attn_mask, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
        """scaled_dot_product_attention with this bias: ``is_causal`` where the two alignments agree (upper left,
        or square), else the materialised lower-right mask."""
        from . import scaled_dot_product_attention

        if is_causal:
            raise ValueError("CausalBias should not be used with causal=True")
        if attn_mask.seq_len_q == attn_mask.seq_len_kv or attn_mask.variant == CausalVariant.UPPER_LEFT:
            return scaled_dot_product_attention(query, key, value, attn_mask=None, dropout_p=dropout_p,
                                                is_causal=True, scale=scale, enable_gqa=enable_gqa)
        return scaled_dot_product_attention(query, key, value, attn_mask=attn_mask._materialize(query.device),
                                            dropout_p=dropout_p, is_causal=False, scale=scale, enable_gqa=enable_gqa)

    def __repr__(self):
        return repr(self._materialize())


def causal_upper_left(*size):
    """The causal bias anchored at the upper left: ``is_causal=True``'s ``tril(ones(L, S))``."""
    if len(size) != 2:
        raise AssertionError("causal_upper_left only supports 2D tensors")
    seq_len_q, seq_len_kv = size
    return CausalBias(CausalVariant.UPPER_LEFT, seq_len_q, seq_len_kv)


def causal_lower_right(*size):
    """The causal bias anchored at the lower right: ``tril(ones(L, S), diagonal=S - L)``, the last query seeing
    every key (decoding L new tokens after S - L cached ones)."""
    if len(size) != 2:
        raise AssertionError("causal_lower_right only supports 2D tensors")
    seq_len_q, seq_len_kv = size
    return CausalBias(CausalVariant.LOWER_RIGHT, seq_len_q, seq_len_kv)
