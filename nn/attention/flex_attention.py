"""``nn.attention.flex_attention``: attention whose scores a Python function rewrites (``score_mod``) and whose
pattern another function masks (``mask_mod``), as PyTorch's FlexAttention (gpt-fast, torchtitan, attention-gym,
Hugging Face's ``flex_attention`` models write their masks and biases this way).

PyTorch runs the two functions under ``vmap`` over (batch, head, q_idx, kv_idx), each call seeing 0-d index
tensors, and without a compiled kernel it materializes the whole score matrix (its eager "math" path). Here
each function is called once, on index tensors shaped to broadcast against one another: b (B, 1, 1, 1),
h (1, H, 1, 1), q_idx (1, 1, L, 1), kv_idx (1, 1, 1, S). For any function vmap accepts (elementwise ops,
``torch.where``, a captured tensor indexed by the indices: ``document_id[q_idx]``) that gives the same values,
and gradients reach the query, key, value and whatever ``score_mod`` captures (a learnt bias table). PyTorch's
CPU kernel refuses backward; here every device is this one, so a program written for a GPU trains.

A ``BlockMask`` holds the ``mask_mod`` (flex_attention evaluates it per element, as PyTorch's eager path) and
PyTorch's block summary of it: which BLOCK_SIZE x BLOCK_SIZE blocks are partly or fully unmasked.
"""

import inspect
import math
import warnings
from typing import NamedTuple

import autograd
from autograd import Tensor
from autograd.device import resolve as resolve_device
from autograd.graph import program_stacklevel

from . import _safe_softmax

__all__ = ["BlockMask", "flex_attention", "AuxOutput", "AuxRequest", "create_block_mask", "create_mask", "or_masks",
           "and_masks", "noop_mask"]

_DEFAULT_SPARSE_BLOCK_SIZE = 128


class AuxRequest(NamedTuple):
    """Which auxiliary outputs ``flex_attention(..., return_aux=AuxRequest(...))`` computes."""

    lse: bool = False
    max_scores: bool = False


class AuxOutput(NamedTuple):
    """The auxiliary outputs asked for (None where not asked)."""

    lse: Tensor | None = None
    max_scores: Tensor | None = None


def _identity(score, batch, head, token_q, token_kv):
    return score


def noop_mask(batch, head, token_q, token_kv):
    """A mask_mod that masks nothing."""
    return batch.new_ones(size=(), dtype=autograd.bool)


def or_masks(*mask_mods):
    """A mask_mod that keeps what any of ``mask_mods`` keeps."""
    if not all(callable(arg) for arg in mask_mods):
        raise RuntimeError(f"All inputs should be callable mask_mods: {mask_mods}")

    def or_mask(b, h, q_idx, kv_idx):
        result = b.new_zeros((), dtype=autograd.bool)
        for mask in mask_mods:
            result = result | mask(b, h, q_idx, kv_idx)
        return result

    return or_mask


def and_masks(*mask_mods):
    """A mask_mod that keeps what all of ``mask_mods`` keep."""
    if not all(callable(arg) for arg in mask_mods):
        raise RuntimeError(f"All inputs should be callable mask_mods: {mask_mods}")

    def and_mask(b, h, q_idx, kv_idx):
        result = b.new_ones((), dtype=autograd.bool)
        for mask in mask_mods:
            result = result & mask(b, h, q_idx, kv_idx)
        return result

    return and_mask


def _is_score_mod(fn):
    """Whether ``fn`` is a score_mod (5 positional parameters without defaults) or a mask_mod (4), as PyTorch
    tells them apart."""
    code = getattr(fn, "__code__", None)
    if code is not None:
        count = code.co_argcount - len(getattr(fn, "__defaults__", None) or ())
    else:
        count = sum(1 for p in inspect.signature(fn).parameters.values() if p.default is inspect.Parameter.empty)
    if count not in (4, 5):
        raise AssertionError(f"Expected 4 or 5 positional args, got {count}")
    return count == 5


def _grid(B, H, L, S):
    """The (batch, head, q_idx, kv_idx) index tensors, each along its own axis of a 4-d broadcast."""
    return (autograd.arange(B).view(B, 1, 1, 1), autograd.arange(H).view(1, H, 1, 1),
            autograd.arange(L).view(1, 1, L, 1), autograd.arange(S).view(1, 1, 1, S))


def _mask_of(mask_mod, B, H, L, S):
    """``mask_mod`` over the whole (B, H, L, S) grid, as a boolean tensor of that shape."""
    return mask_mod(*_grid(B, H, L, S)).expand(B, H, L, S)


def create_mask(mod_fn, B, H, Q_LEN, KV_LEN, device=None):
    """The (B, H, Q_LEN, KV_LEN) boolean mask of a mask_mod, or of a score_mod (False where it gives -inf to a
    zero score). B or H None: 1."""
    B, H = 1 if B is None else B, 1 if H is None else H
    if _is_score_mod(mod_fn):
        scores = mod_fn(autograd.zeros(B, H, Q_LEN, KV_LEN), *_grid(B, H, Q_LEN, KV_LEN))
        return ~scores.expand(B, H, Q_LEN, KV_LEN).isneginf()
    return _mask_of(mod_fn, B, H, Q_LEN, KV_LEN)


def _blocks(mask, q_block, kv_block):
    """PyTorch's block summary of a (B, H, L, S) mask: (partial, full) int8 tensors of (B, H, L/q_block,
    S/kv_block) blocks (the lengths padded up with masked entries): partly unmasked, and wholly unmasked."""
    B, H, L, S = mask.shape
    pad_l, pad_s = -L % q_block, -S % kv_block
    data = autograd.constant_pad_nd(mask.int(), (0, pad_s, 0, pad_l))
    counts = data.view(B, H, (L + pad_l) // q_block, q_block, (S + pad_s) // kv_block, kv_block).sum(dim=(3, 5))
    whole = q_block * kv_block
    return ((counts > 0) & (counts < whole)).to(autograd.int8), (counts == whole).to(autograd.int8)


def _ordered(dense):
    """(number of blocks per row, their column indices first) of a dense block mask, as PyTorch's int32."""
    dense = dense.to(autograd.int32)
    return dense.sum(dim=-1).to(autograd.int32), dense.argsort(dim=-1, descending=True, stable=True).to(autograd.int32)


def _dense(num_blocks, indices):
    """The dense (..., rows, columns) int32 block mask of its ordered form: row r has 1 at the columns
    indices[..., r, :num_blocks[..., r]]."""
    columns = indices.shape[-1]
    real = autograd.arange(columns) < num_blocks.unsqueeze(-1)
    dense = autograd.zeros(*indices.shape[:-1], columns + 1, dtype=autograd.int32)
    dense.scatter_(-1, autograd.where(real, indices.long(), columns), 1)  # (the unused entries to a spare column)
    return dense[..., :columns].contiguous()


def _sliced_mask_mod_error(batch, head, token_q, token_kv):
    raise RuntimeError("Cannot use mask_mod from a sliced BlockMask. When you slice a BlockMask using [], the "
                       "mask_mod attribute is reset. You must set it from the original BlockMask's mask_mod.")


class BlockMask:
    """A mask_mod with its block summary, made by ``create_block_mask`` (or ``from_kv_blocks``): ``kv_num_blocks``/
    ``kv_indices`` (the partly unmasked blocks of each row of query blocks), ``full_kv_num_blocks``/
    ``full_kv_indices`` (the wholly unmasked ones), ``BLOCK_SIZE``, ``seq_lengths``, ``mask_mod``; ``shape`` is
    (B, H, Q_LEN, KV_LEN). flex_attention masks by ``mask_mod`` alone, entry by entry, as PyTorch's eager path."""

    def __init__(self, seq_lengths, kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices, BLOCK_SIZE,
                 mask_mod):
        self.seq_lengths = tuple(seq_lengths)
        self.kv_num_blocks, self.kv_indices = kv_num_blocks, kv_indices
        self.full_kv_num_blocks, self.full_kv_indices = full_kv_num_blocks, full_kv_indices
        self.BLOCK_SIZE = tuple(BLOCK_SIZE)
        self.mask_mod = mask_mod

    @classmethod
    def from_kv_blocks(cls, kv_num_blocks, kv_indices, full_kv_num_blocks=None, full_kv_indices=None,
                       BLOCK_SIZE=_DEFAULT_SPARSE_BLOCK_SIZE, mask_mod=None, seq_lengths=None, compute_q_blocks=True):
        """A BlockMask from the ordered block form (a mask_mod of None masks nothing; seq_lengths of None: the
        blocks' whole extent)."""
        if kv_indices.dim() < 2:
            raise RuntimeError("BlockMask must have at least 2 dimensions")
        if (full_kv_num_blocks is None) != (full_kv_indices is None):
            raise RuntimeError("full_kv_num_blocks and full_kv_indices must be both provided or omitted")
        BLOCK_SIZE = (BLOCK_SIZE, BLOCK_SIZE) if isinstance(BLOCK_SIZE, int) else BLOCK_SIZE
        if seq_lengths is None:
            seq_lengths = (kv_indices.shape[-2] * BLOCK_SIZE[0], kv_indices.shape[-1] * BLOCK_SIZE[1])
        return cls(seq_lengths, kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices, BLOCK_SIZE,
                   noop_mask if mask_mod is None else mask_mod)

    def __getitem__(self, index):
        """The BlockMask of some batches / heads / rows of query blocks (an int keeps its dimension, as PyTorch's);
        its mask_mod must be set again from the original (gpt-fast offsets it for one decoding position)."""
        index = index if isinstance(index, tuple) else (index,)
        sizes = self.kv_num_blocks.shape
        index = tuple(slice(i % n, i % n + 1) if isinstance(i, int) else i
                      for i, n in zip((*index, slice(None), slice(None), slice(None))[:3], sizes))
        full = (None, None) if self.full_kv_num_blocks is None else (self.full_kv_num_blocks[index],
                                                                    self.full_kv_indices[index])
        return type(self)(self.seq_lengths, self.kv_num_blocks[index], self.kv_indices[index], *full, self.BLOCK_SIZE,
                          _sliced_mask_mod_error)

    @property
    def shape(self):
        return tuple(self.kv_indices.shape[:-2]) + self.seq_lengths

    def numel(self):
        """The number of entries of the mask (not counting sparsity)."""
        return math.prod(self.shape)

    def sparsity(self):
        """The percentage of the mask's blocks that are skipped, as PyTorch counts it (against the unpadded
        lengths, so lengths short of a block give a negative percentage)."""
        computed = self.kv_num_blocks.sum().item()
        if self.full_kv_num_blocks is not None:
            computed += self.full_kv_num_blocks.sum().item()
        return 100 * (1 - computed * self.BLOCK_SIZE[0] * self.BLOCK_SIZE[1] / self.numel())

    def to_dense(self):
        """The (B, H, query blocks, key blocks) int32 tensor: 1 where a block is computed."""
        dense = _dense(self.kv_num_blocks, self.kv_indices)
        if self.full_kv_num_blocks is not None:
            dense = dense | _dense(self.full_kv_num_blocks, self.full_kv_indices)
        return dense

    def to(self, device):
        resolve_device(device)  # (every served device is this one: only a check)
        return self

    def __str__(self):
        return f"BlockMask(shape={tuple(self.shape)}, sparsity={self.sparsity():.2f}%)"

    def __repr__(self):
        def shape_or_none(x):
            return None if x is None else x.shape

        name = getattr(self.mask_mod, "__name__", self.mask_mod)
        return (f"BlockMask(\n    kv_num_blocks={tuple(self.kv_num_blocks.shape)},\n"
                f"    kv_indices={tuple(self.kv_indices.shape)},\n"
                f"    full_kv_num_blocks={shape_or_none(self.full_kv_num_blocks)},\n"
                f"    full_kv_indices={shape_or_none(self.full_kv_indices)},\n    BLOCK_SIZE={self.BLOCK_SIZE},\n"
                f"    shape={tuple(self.shape)},\n    sparsity={self.sparsity():.2f}%,\n    mask_mod={name}\n)")


def create_block_mask(mask_mod, B, H, Q_LEN, KV_LEN, device=None, BLOCK_SIZE=_DEFAULT_SPARSE_BLOCK_SIZE,
                      _compile=False, separate_full_blocks=True, compute_dq_write_order=False, dq_kv_order=True):
    """A ``BlockMask`` of ``mask_mod`` for (B, H, Q_LEN, KV_LEN) (B or H None: 1, broadcast over the batch or
    the heads). ``BLOCK_SIZE``: an int, or (query, key) sizes. The kernel-scheduling options are accepted and
    change nothing here."""
    if _is_score_mod(mask_mod):
        raise AssertionError(f"create-block_mask requires a mask_mod function! Got {mask_mod}")
    if device is not None:
        resolve_device(device)
    B, H = 1 if B is None else B, 1 if H is None else H
    q_block, kv_block = (BLOCK_SIZE, BLOCK_SIZE) if isinstance(BLOCK_SIZE, int) else BLOCK_SIZE
    with autograd.no_grad():
        partial, full = _blocks(_mask_of(mask_mod, B, H, Q_LEN, KV_LEN), q_block, kv_block)
    if separate_full_blocks:
        return BlockMask((Q_LEN, KV_LEN), *_ordered(partial), *_ordered(full), (q_block, kv_block), mask_mod)
    return BlockMask((Q_LEN, KV_LEN), *_ordered(partial | full), None, None, (q_block, kv_block), mask_mod)


_warned = set()


def flex_attention(query, key, value, score_mod=None, block_mask=None, scale=None, enable_gqa=False,
                   return_lse=False, kernel_options=None, *, return_aux=None):
    """softmax(score_mod(Q Kᵀ · scale), masked by block_mask's mask_mod) V, for (B, Hq, L, E) queries and
    (B, Hkv, S, E) keys / (B, Hkv, S, Ev) values, in float32 (float64 for float64 queries) and returned in the
    query's dtype. A query that may attend nowhere gets 0 (and logsumexp -inf). ``enable_gqa``: Hq a multiple of
    Hkv, each key/value head serving Hq/Hkv query heads. ``return_aux=AuxRequest(lse=True, max_scores=True)``:
    also (B, Hq, L) logsumexp and maxima of the modified scores (``return_lse``: the older spelling)."""
    if query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        raise NotImplementedError("NYI: query, key, and value must be 4D tensors")
    if query.size(-1) != key.size(-1):
        raise ValueError(f"Expect query and key/value to have the same embedding dimension but got "
                         f"E={query.size(-1)} and E={key.size(-1)}.")
    Hq, Hkv = query.size(1), key.size(1)
    if not enable_gqa and Hq != Hkv:
        raise ValueError(f"Expect query and key/value to have the same number of heads but got Hq={Hq} and "
                         f"Hkv={Hkv}. Try setting enable_gqa=True for GQA.")
    if enable_gqa and Hq % Hkv != 0:
        raise ValueError(f"Expect number of query heads to be a multiple of kv heads for GQA but got Hq={Hq} and "
                         f"Hkv={Hkv}.")
    B, L, S = query.size(0), query.size(-2), key.size(-2)
    if B != key.size(0):
        if block_mask is None:
            raise ValueError(f"Expect query and key/value to have the same batch size, or non-none block_mask, "
                             f"but got block_mask=None, Bq={B}, and Bkv={key.size(0)}.")
        if block_mask.shape[0] != B:
            raise ValueError(f"Expect query and key/value to have the same batch size, or block_mask and query to "
                             f"have the same batch size, but got Bq={B}, Bkv={key.size(0)}, "
                             f"B_block_mask={block_mask.shape[0]}.")
    if block_mask is not None:
        mask_l, mask_s = block_mask.shape[-2:]
        if L > mask_l or S > mask_s:
            raise ValueError(f"block_mask was created for block_mask.shape={tuple(block_mask.shape)} but got "
                             f"q_len={L} and "
                             f"kv_len={S}. As the block mask was created for a smaller length than you're using it "
                             f"for, you likely need to create a new block mask.")
        if L < mask_l or S < mask_s:
            raise ValueError(f"block_mask was created for block_mask.shape={tuple(block_mask.shape)} but got "
                             f"q_len={L} and "
                             f"kv_len={S}. As the block mask was created for a larger length than you're using it "
                             f"for, you can either 1. create a new block mask with the correct length, or 2. "
                             f"'adjust' the existing block mask to the correct length by calling "
                             f"block_mask._adjust(q_len, kv_len). This essentially 'crops' the block mask to the "
                             f"upper left corner, which does not work for all mask_mods!")
    if return_lse and return_aux is not None:
        raise ValueError("Cannot specify both return_lse and return_aux. return_lse is deprecated, please use "
                         "return_aux=AuxRequest(lse=True) instead.")
    if return_lse and "return_lse" not in _warned:
        _warned.add("return_lse")
        warnings.warn("return_lse is deprecated and will be removed in v2.10. Please use "
                      "return_aux=AuxRequest(lse=True) instead.", FutureWarning, stacklevel=program_stacklevel())
    scale = 1.0 / math.sqrt(query.size(-1)) if scale is None else scale
    score_mod = _identity if score_mod is None else score_mod
    working = autograd.float64 if query.dtype == autograd.float64 else autograd.float32
    if Hq != Hkv:  # each key/value head serves Hq/Hkv consecutive query heads
        key, value = key.repeat_interleave(Hq // Hkv, dim=1), value.repeat_interleave(Hq // Hkv, dim=1)
    key, value = key.expand(B, *key.shape[1:]), value.expand(B, *value.shape[1:])
    scores = (query.to(working) @ key.to(working).transpose(-2, -1)) * scale
    grid = _grid(B, Hq, L, S)
    modified = score_mod(scores, *grid).expand(B, Hq, L, S).to(working)
    if block_mask is not None:
        modified = modified.masked_fill(~block_mask.mask_mod(*grid).expand(B, Hq, L, S), float("-inf"))
    out = _safe_softmax(modified).to(query.dtype) @ value.to(query.dtype)
    want_lse = return_lse or (return_aux is not None and return_aux.lse)
    lse = modified.logsumexp(dim=-1) if want_lse else None  # (-inf where every key is masked)
    if return_aux is not None:
        maxima = modified.max(dim=-1).values if return_aux.max_scores else None
        return out, AuxOutput(lse=lse, max_scores=maxima)
    return (out, lse) if return_lse else out
