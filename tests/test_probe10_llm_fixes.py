"""Fixes found by the language-model programs (tests/test_programs_probe10_llm_*.py), each checked on
chainrule and on PyTorch (the ``T`` fixture)."""

import importlib
import warnings

import numpy as np
import pytest

from tests import ported_nn

nn = ported_nn.nn  # the fixture


def test_softmax_of_rows_masked_with_finfo_min_is_uniform_and_silent(T):
    """Hugging Face masks with finfo(dtype).min: a row masked throughout is uniform, and the maxima that
    sum past the float range must not make NumPy warn of an overflow."""
    for dtype in (T.float32, T.float64):
        x = T.full((4, 3), T.finfo(dtype).min, dtype=dtype)
        x[0, 1] = 2.0
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = T.softmax(x, dim=-1)
            lse = T.logsumexp(x, dim=-1)
        np.testing.assert_allclose(y.numpy(), [[0, 1, 0]] + [[1 / 3] * 3] * 3, rtol=1e-6)
        np.testing.assert_allclose(lse.numpy(), [2.0] + [float(T.finfo(dtype).min)] * 3, rtol=1e-6)


def test_train_and_eval_call_each_childs_own_train(T, nn):
    """Module.train(mode) sets its flag and calls train(mode) on each child, as PyTorch's: a subclass's
    override runs (loralib merges its low-rank update there; frozen-BatchNorm models stay in eval)."""
    calls = []

    class Merging(nn.Linear):
        def train(self, mode=True):
            calls.append(mode)
            nn.Linear.train(self, mode)
            if not mode:
                self.weight.data += 1.0
            return self

    class FrozenNorm(nn.BatchNorm1d):
        def train(self, mode=True):
            return super().train(False)  # always in eval: running statistics never update

    model = nn.Sequential(nn.Sequential(Merging(2, 2)), FrozenNorm(2))
    model.weight_before = model[0][0].weight.detach().clone()
    model.eval()
    assert calls == [False] and not model.training and not model[0][0].training
    assert T.equal(model[0][0].weight.detach(), model.weight_before + 1.0)
    model.train()
    assert calls == [False, True] and model.training and model[0][0].training and not model[1].training
    model(T.ones(3, 2) * 5)
    assert model[1].running_mean.tolist() == [0.0, 0.0]


def test_half_float_double_to_and_type_go_through_apply(T, nn):
    """PyTorch's Module.half()/float()/double()/to()/type() all run through _apply, so a subclass that
    overrides it (to keep a rotary cache in float32 while the weights go to float16) is honoured."""

    class RotaryKeptInFloat32(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("inv_freq", 1.0 / (10000 ** (T.arange(0, 4, 2).float() / 4)), persistent=False)
            self.proj = nn.Linear(2, 2)
            self.calls = 0

        def _apply(self, fn, *args, **kwargs):
            self.calls += 1
            inv_freq = self.inv_freq
            super()._apply(fn, *args, **kwargs)
            self.inv_freq = inv_freq
            return self

    model = nn.Sequential(RotaryKeptInFloat32())
    weight = model[0].proj.weight
    for cast, expected in ((lambda: model.half(), T.float16), (lambda: model.double(), T.float64),
                           (lambda: model.float(), T.float32), (lambda: model.to(T.float64), T.float64),
                           (lambda: model.type(T.float16), T.float16)):
        assert cast() is model
        assert model[0].proj.weight.dtype == expected and model[0].inv_freq.dtype == T.float32
    assert model[0].calls == 5 and model[0].proj.weight is weight  # a parameter keeps its object


def flex_of(T):
    """nn.attention.flex_attention of the library under test."""
    return importlib.import_module("nn.attention.flex_attention" if T.__name__ == "autograd"
                                   else "torch.nn.attention.flex_attention")


def qkv(T, heads_kv=2, seed=0):
    rng = np.random.default_rng(seed)
    return (T.tensor(rng.standard_normal((2, 4, 6, 4)).astype(np.float32)),
            T.tensor(rng.standard_normal((2, heads_kv, 6, 4)).astype(np.float32)),
            T.tensor(rng.standard_normal((2, heads_kv, 6, 3)).astype(np.float32)))


def test_flex_attention_is_sdpa_with_the_mask_and_bias_it_describes(T, nn):
    """Document masking and ALiBi written as mask_mod / score_mod give SDPA's output with the same mask and bias
    spelt out as a tensor; grouped-query heads by enable_gqa; a row masked throughout gives 0 and lse -inf."""
    flex = flex_of(T)
    q, k, v = qkv(T)
    document = T.tensor([0, 0, 1, 1, 1, 2])
    slopes = T.tensor([0.5, 0.25, 0.125, 0.0625])

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    def same_document(b, h, q_idx, kv_idx):
        return document[q_idx] == document[kv_idx]

    def alibi(score, b, h, q_idx, kv_idx):
        return score - slopes[h] * (q_idx - kv_idx)

    block_mask = flex.create_block_mask(flex.and_masks(causal, same_document), None, None, 6, 6, BLOCK_SIZE=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's note that it runs uncompiled
        out, aux = flex.flex_attention(q, k, v, score_mod=alibi, block_mask=block_mask, enable_gqa=True,
                                       return_aux=flex.AuxRequest(lse=True))
    i = T.arange(6)
    keep = (i[:, None] >= i[None, :]) & (document[:, None] == document[None, :])
    bias = -slopes[:, None, None] * (i[:, None] - i[None, :])
    bias = bias.masked_fill(~keep, float("-inf"))
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    expected = nn.functional.scaled_dot_product_attention(q, kk, vv, attn_mask=bias)
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    scores = (q @ kk.transpose(-2, -1)) / 2 + bias
    np.testing.assert_allclose(aux.lse.numpy(), T.logsumexp(scores, dim=-1).numpy(), rtol=1e-5)
    # blocks of 2: those on the diagonal are partly masked by causality; the last query block reaches two
    assert block_mask.shape == (1, 1, 6, 6) and block_mask.kv_num_blocks.tolist() == [[[1, 1, 2]]]
    assert block_mask.full_kv_num_blocks.tolist() == [[[0, 0, 0]]] and block_mask.to_dense().tolist() == [
        [[[1, 0, 0], [0, 1, 0], [0, 1, 1]]]]

    def nowhere_for_late_queries(b, h, q_idx, kv_idx):
        return q_idx < 3

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out, aux = flex.flex_attention(q, k, v, block_mask=flex.create_block_mask(
            nowhere_for_late_queries, 2, 4, 6, 6, BLOCK_SIZE=3), enable_gqa=True, return_aux=flex.AuxRequest(lse=True))
    assert (out[:, :, 3:] == 0).all() and aux.lse[:, :, 3:].isneginf().all() and aux.lse[:, :, :3].isfinite().all()
    mask = flex.create_mask(flex.or_masks(causal, lambda b, h, q_idx, kv_idx: kv_idx == 0), 2, None, 6, 6)
    assert mask.shape == (2, 1, 6, 6) and mask[0, 0, 0].tolist() == [True] + [False] * 5


def test_flex_attention_refuses_what_pytorch_refuses(T):
    flex = flex_of(T)
    q, k, v = qkv(T)
    with pytest.raises(ValueError, match="Try setting enable_gqa=True for GQA"):
        flex.flex_attention(q, k, v)
    with pytest.raises(ValueError, match="created for a larger length"):
        flex.flex_attention(q, k, v, block_mask=flex.create_block_mask(flex.noop_mask, None, None, 8, 8),
                            enable_gqa=True)
    with pytest.raises(AssertionError, match="requires a mask_mod"):
        flex.create_block_mask(lambda score, b, h, q_idx, kv_idx: score, None, None, 6, 6)


def test_flex_attention_gradients_are_sdpas():
    """PyTorch's CPU kernel has no backward; here the gradients (a learnt bias table captured by score_mod
    among them) are those of SDPA with the bias spelt out: chainrule's, and PyTorch's where installed."""
    import autograd
    import nn as ours_nn

    flex = flex_of(autograd)
    q, k, v = (x.requires_grad_() for x in qkv(autograd, heads_kv=4))
    table = autograd.tensor(np.linspace(-1, 1, 11).astype(np.float32), requires_grad=True)

    def relative_bias(score, b, h, q_idx, kv_idx):
        return score + table[q_idx - kv_idx + 5]

    block_mask = flex.create_block_mask(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, None, None, 6, 6)
    out = flex.flex_attention(q, k, v, score_mod=relative_bias, block_mask=block_mask)
    grads = autograd.autograd.grad((out * out).sum(), [q, k, v, table])

    def by_sdpa(T, F, q, k, v, table):
        i = T.arange(6)
        bias = table[i[:, None] - i[None, :] + 5].masked_fill(i[:, None] < i[None, :], float("-inf"))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return out, T.autograd.grad((out * out).sum(), [q, k, v, table])

    inputs = [x.detach().requires_grad_() for x in (q, k, v, table)]
    expected, expected_grads = by_sdpa(autograd, ours_nn.functional, *inputs)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    for ours_grad, theirs in zip(grads, expected_grads):
        np.testing.assert_allclose(ours_grad.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-5)
    torch = pytest.importorskip("torch")
    inputs = [torch.tensor(x.detach().numpy(), requires_grad=True) for x in (q, k, v, table)]
    expected, expected_grads = by_sdpa(torch, torch.nn.functional, *inputs)
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), rtol=1e-5, atol=1e-6)
    for ours_grad, theirs in zip(grads, expected_grads):
        np.testing.assert_allclose(ours_grad.numpy(), theirs.numpy(), rtol=1e-4, atol=1e-5)


def test_block_mask_slicing_and_from_kv_blocks(T):
    """gpt-fast cuts a decoding row out of a BlockMask by block_mask[:, :, index] (its mask_mod reset, to be set
    again); BlockMask.from_kv_blocks builds one from the ordered block form, to_dense reads it back."""
    flex = flex_of(T)
    block_mask = flex.create_block_mask(lambda b, h, q_idx, kv_idx: q_idx >= kv_idx, 1, 1, 8, 8, BLOCK_SIZE=2)
    row = block_mask[:, :, T.tensor([2])]
    assert row.kv_num_blocks.tolist() == [[[1]]] and row.full_kv_num_blocks.tolist() == [[[2]]]
    assert row.to_dense().tolist() == [[[[1, 1, 1, 0]]]] and row.shape == (1, 1, 8, 8)
    assert block_mask[0].kv_num_blocks.shape == (1, 1, 4)
    with pytest.raises(RuntimeError, match="Cannot use mask_mod from a sliced BlockMask"):
        row.mask_mod(T.tensor(0), T.tensor(0), T.tensor(0), T.tensor(0))
    kv_num_blocks, kv_indices = T.tensor([[[1, 2]]], dtype=T.int32), T.tensor([[[[1, 0], [0, 1]]]], dtype=T.int32)
    built = flex.BlockMask.from_kv_blocks(kv_num_blocks, kv_indices, BLOCK_SIZE=3)
    assert built.shape == (1, 1, 6, 6) and built.to_dense().tolist() == [[[[0, 1], [1, 1]]]]
    assert built.sparsity() == 25.0
