# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Architectures from papers' reference code (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights, comparing outputs, losses, gradients and parameters. Activation checkpointing as Hugging Face
models write it (``create_custom_forward``, ``None`` arguments, dropout inside, replaying the same mask, and the
reentrant variant on an input that does not require grad)."""

import warnings

import numpy as np

from .pytorch_programs import OURS, load, pytorch, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Activation checkpointing, Hugging Face style
# ----------------------------------------------------------------------------------------------


def deep_mlp(m, p_drop=0.0):
    nn = m.nn

    class Layer(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dense = nn.Linear(dim, dim)
            self.norm = nn.LayerNorm(dim)
            self.dropout = nn.Dropout(p_drop)

        def forward(self, hidden_states, attention_mask=None, scale=None):
            out = self.dropout(m.F.gelu(self.dense(self.norm(hidden_states))))
            if attention_mask is not None:
                out = out * attention_mask
            if scale is not None:
                out = out * scale
            return hidden_states + out

    class Encoder(nn.Module):
        def __init__(self, dim=8, depth=6):
            super().__init__()
            self.embed = nn.Linear(4, dim)
            self.layer = nn.ModuleList([Layer(dim) for _ in range(depth)])
            self.head = nn.Linear(dim, 1)
            self.gradient_checkpointing = False

        def forward(self, x, attention_mask=None, use_reentrant=False):
            hidden_states = self.embed(x)
            for i, layer_module in enumerate(self.layer):
                if self.gradient_checkpointing and self.training:
                    def create_custom_forward(module):
                        def custom_forward(*inputs):
                            return module(*inputs)
                        return custom_forward

                    hidden_states = m.torch.utils.checkpoint.checkpoint(
                        create_custom_forward(layer_module), hidden_states, attention_mask, None,
                        use_reentrant=use_reentrant)
                else:
                    hidden_states = layer_module(hidden_states, attention_mask)
            return self.head(hidden_states).squeeze(-1)

    return Encoder()


def checkpointing(m, weights, use_reentrant=False, steps=3):
    torch, F = m.torch, m.F
    model = load(m, deep_mlp(m), weights)
    rng = np.random.default_rng(13)
    x = torch.tensor(rng.standard_normal((6, 4)).astype(np.float32))
    mask = torch.tensor((rng.random((6, 8)) > 0.2).astype(np.float32))
    y = torch.tensor(rng.standard_normal(6).astype(np.float32))
    optimizer = m.optim.SGD(model.parameters(), lr=0.05)
    log = []
    for step in range(steps):
        for flag in (False, True):
            model.gradient_checkpointing = flag
            model.zero_grad()
            loss = F.mse_loss(model(x, mask, use_reentrant=use_reentrant), y)
            loss.backward()
            log.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
        optimizer.step()
    return log


def test_gradient_checkpointing_hugging_face_style():
    weights = weights_of(deep_mlp)
    for use_reentrant in (False, True):
        log, _ = run_both(checkpointing, weights, use_reentrant, rtol=1e-5, atol=1e-6)
        for (plain_loss, plain), (ckpt_loss, ckpt) in zip(log[::2], log[1::2]):
            assert plain_loss == ckpt_loss
            for a, b in zip(plain, ckpt):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def reentrant_without_a_grad_input(m, weights):
    model = load(m, deep_mlp(m), weights)
    x = m.torch.ones(6, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = m.torch.utils.checkpoint.checkpoint(model.layer[0], x, use_reentrant=True)
        (h.sum() + model.head(h).sum()).backward()
    warned = any("None of the inputs have requires_grad=True" in str(w.message) for w in caught)
    return model.layer[0].dense.weight.grad, model.head.weight.grad, warned


def test_reentrant_checkpoint_on_an_input_without_grad_still_gives_the_parameters_gradients():
    """A deliberate difference (autograd/utils/checkpoint.py's docstring): PyTorch's reentrant variant
    leaves the parameters inside without gradients (and warns) when no argument requires grad; ours
    gives them the gradients of the plain call."""
    weights = weights_of(deep_mlp)
    inner, head, warned = reentrant_without_a_grad_input(OURS, weights)
    model = load(OURS, deep_mlp(OURS), weights)
    (lambda h: h.sum() + model.head(h).sum())(model.layer[0](OURS.torch.ones(6, 8))).backward()
    np.testing.assert_allclose(inner.numpy(), model.layer[0].dense.weight.grad.numpy(), rtol=1e-6)
    assert not warned
    m = pytorch()
    if m is not None:
        inner, head, warned = reentrant_without_a_grad_input(m, weights)
        assert inner is None and head is not None and warned


def test_checkpointing_with_dropout_replays_the_same_mask():
    """Without torch: with dropout inside, the recomputation draws the mask the forward drew, so the
    checkpointed gradients are those of the plain run from the same seed."""
    weights = weights_of(deep_mlp)
    torch = OURS.torch
    model = load(OURS, deep_mlp(OURS, p_drop=0.3), weights)
    x = torch.tensor(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    grads = []
    for flag in (False, True):
        model.gradient_checkpointing = flag
        model.zero_grad()
        torch.manual_seed(7)
        model(x).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)
