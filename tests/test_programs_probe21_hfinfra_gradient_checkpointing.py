# ruff: noqa: E702, F841  (the programs are kept as their authors wrote them)
"""The model infrastructure of Hugging Face transformers-style code, written in plain PyTorch (see
tests/pytorch_programs.py): each program runs on chainrule and on PyTorch and the results must agree; what can be is
also checked by hand, so that the tests assert something where PyTorch is not installed. Gradient checkpointing of
Hugging Face layers returning tuples with ``None``, under both variants, with dropout, frozen embeddings and
``enable_input_require_grads``' forward hook, against the unchecked model."""

import functools
import importlib
import warnings

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Gradient checkpointing
# ----------------------------------------------------------------------------------------------


def checkpointed_stack(m):
    torch, nn = m.torch, m.nn
    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(4, 8); self.fc2 = nn.Linear(8, 4); self.drop = nn.Dropout(0.3)
        def forward(self, x, mask=None, output_attentions=False):
            h = self.drop(torch.relu(self.fc1(x)))
            if mask is not None:
                h = h * mask
            out = x + self.fc2(h)
            return (out, None, h.sum()) if output_attentions else (out,)
    torch.manual_seed(0)
    emb = nn.Embedding(5, 4)
    layers = nn.ModuleList([Layer() for _ in range(3)])
    return emb, layers

def hf_gradient_checkpointing(m, reentrant, freeze_emb, input_grads):
    torch, nn = m.torch, m.nn
    checkpoint = importlib.import_module(m.torch.__name__ + ".utils.checkpoint").checkpoint
    emb, layers = checkpointed_stack(m)
    if freeze_emb:
        emb.weight.requires_grad_(False)
    if input_grads:
        def make_inputs_require_grads(module, input, output):
            output.requires_grad_(True)
        emb.register_forward_hook(make_inputs_require_grads)
    ids = torch.tensor([[1, 2, 3], [4, 0, 1]])
    mask = torch.ones(2, 3, 8)
    res = {}
    for use_ckpt in (False, True):
        torch.manual_seed(5)
        for p in list(emb.parameters()) + list(layers.parameters()):
            p.grad = None
        h = emb(ids)
        extras = []
        for layer in layers:
            if use_ckpt:
                fn = functools.partial(checkpoint, use_reentrant=reentrant)
                outs = fn(layer.__call__, h, mask, True)
            else:
                outs = layer(h, mask, True)
            h = outs[0]
            extras.append(outs[2])
        loss = h.pow(2).mean() + sum(extras) * 0.01
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            loss.backward()
        res[use_ckpt] = (loss, [p.grad for p in list(emb.parameters()) + list(layers.parameters())])
    return res

def ckpt_tuple(m):
    torch, nn = m.torch, m.nn
    cp = importlib.import_module(torch.__name__ + ".utils.checkpoint")
    torch.manual_seed(0)
    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)
            self.drop = nn.Dropout(0.5)
        def forward(self, hidden_states, attention_mask=None, past_key_value=None, output_attentions=False,
                    use_cache=False):
            h = self.drop(self.fc(hidden_states)).tanh()
            if attention_mask is not None:
                h = h * attention_mask
            present = (h.detach()[:, :1], 3) if use_cache else None
            attn = h.softmax(-1) if output_attentions else None
            return (h + hidden_states, attn, present)
    layers = nn.ModuleList([Layer() for _ in range(2)])
    x = torch.randn(2, 4, 3, requires_grad=True)
    mask = torch.ones(2, 4, 1)
    res = {}
    for mode in ("plain", "reent", "nonreent"):
        torch.manual_seed(7)
        layers.zero_grad(); x.grad = None
        h = x
        attns = []
        for layer in layers:
            if mode == "plain":
                outs = layer(h, mask, None, True, False)
            else:
                fn = functools.partial(cp.checkpoint, use_reentrant=(mode == "reent"))
                outs = fn(functools.partial(layer.__call__, use_cache=False), h, mask, None, True)
            h = outs[0]
            attns.append(outs[1])
        loss = h.sum() + sum(a[..., 0].sum() for a in attns)
        loss.backward()
        res[mode] = (loss, x.grad, [p.grad for p in layers.parameters()], outs[2] is None)
    return res



@pytest.mark.parametrize("reentrant, freeze_emb, input_grads", [
    (False, False, False), (False, True, False), (False, True, True), (True, False, False), (True, True, True)])
def test_gradient_checkpointing_as_transformers_enables_it(reentrant, freeze_emb, input_grads):
    """``gradient_checkpointing_enable``: ``functools.partial(checkpoint, use_reentrant=...)`` around each layer's
    ``__call__``; with frozen embeddings the reentrant variant needs ``enable_input_require_grads``' hook (without
    it PyTorch's gives the layers no gradients: autograd/utils/checkpoint.py's deliberate difference)."""
    ours, _ = run_both(hf_gradient_checkpointing, reentrant, freeze_emb, input_grads)
    (plain_loss, plain_grads), (ckpt_loss, ckpt_grads) = ours[False], ours[True]
    assert plain_loss == ckpt_loss  # dropout drew the same masks
    for a, b in zip(plain_grads, ckpt_grads):
        if freeze_emb and a is None:
            assert b is None
        else:
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert (plain_grads[0] is None) == freeze_emb


def test_checkpointed_layers_returning_tuples_with_none():
    ours, _ = run_both(ckpt_tuple)
    for mode in ("reent", "nonreent"):
        assert ours[mode][0] == pytest.approx(ours["plain"][0], rel=1e-6)
        for a, b in zip([ours["plain"][1]] + ours["plain"][2], [ours[mode][1]] + ours[mode][2]):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        assert ours[mode][3]
