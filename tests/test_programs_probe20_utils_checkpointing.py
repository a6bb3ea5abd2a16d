# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""torch.utils as training code uses it (see tests/pytorch_programs.py), each program run on chainrule and on PyTorch
from the same weights and data, comparing values, gradients, drawn index orders and errors. Activation checkpointing
(``torch.utils.checkpoint``): an MLP with dropout trained through checkpointed blocks (both ``use_reentrant``
variants, ``preserve_rng_state`` on and off), ``checkpoint_sequential`` in 1..n segments over a BatchNorm network
(the rerun updates the running statistics a second time, as PyTorch's does), keyword arguments and dict / string
outputs, nested checkpoints, a WGAN-GP gradient penalty through checkpointed critic blocks
(``autograd.grad(create_graph=True)``), ``determinism_check`` (the ``CheckpointError`` and ``'none'``), selective
checkpointing (``create_selective_checkpoint_contexts`` with a list of ops and with a policy function), forward hooks
inside a checkpoint (the non-reentrant rerun stops early, ``set_checkpoint_early_stop``), ``checkpoint_sequential``'s
refusal of unknown keywords, an argument written in place before backward (refused), and forces by ``autograd.grad``
inside a checkpointed function (a force-matching loss)."""

import functools
import importlib

import numpy as np
import pytest

from .probe20_utils_common import randn, set_weights
from .pytorch_programs import OURS, pytorch, run_both, same_dropout_masks


def checkpoint_module(m):
    return importlib.import_module(m.torch.__name__ + ".utils.checkpoint")


# ----------------------------------------------------------------------------------------------
# Activation checkpointing
# ----------------------------------------------------------------------------------------------


def checkpointed_mlp(m, use_reentrant, preserve_rng_state=True, checkpointed=True):
    torch, nn, F = m.torch, m.nn, m.F
    cp = checkpoint_module(m)

    class Block(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.fc1, self.fc2, self.drop = nn.Linear(width, 2 * width), nn.Linear(2 * width, width), nn.Dropout(0.25)

        def forward(self, x):
            return x + self.fc2(self.drop(F.gelu(self.fc1(x))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = nn.Linear(5, 8)
            self.blocks = nn.ModuleList(Block(8) for _ in range(3))
            self.out = nn.Linear(8, 3)

        def forward(self, x):
            h = self.inp(x)
            for block in self.blocks:
                if checkpointed:
                    h = cp.checkpoint(block, h, use_reentrant=use_reentrant, preserve_rng_state=preserve_rng_state)
                else:
                    h = block(h)
            return self.out(h)

    net = set_weights(m, Net())
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x, y = randn(m, (16, 5), 100), torch.tensor(np.arange(16) % 3)
    torch.manual_seed(0)
    losses = []
    for step in range(3):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, net.blocks[0].fc1.weight, net.out.bias


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_checkpointed_mlp_with_dropout_trains_as_the_plain_one(use_reentrant):
    ours, _ = run_both(checkpointed_mlp, use_reentrant, compare=same_dropout_masks(), rtol=1e-4, atol=1e-5)
    plain = checkpointed_mlp(OURS, use_reentrant, checkpointed=False)
    np.testing.assert_allclose(ours[0], plain[0], rtol=1e-5)  # the rerun drew the first run's dropout masks
    for a, b in zip(ours[1:], plain[1:]):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_checkpoint_without_preserved_rng_state_redraws_the_masks(use_reentrant):
    # the rerun draws fresh masks from where the stream stands, in both libraries: gradients of other masks
    ours, _ = run_both(checkpointed_mlp, use_reentrant, False, compare=same_dropout_masks(), rtol=1e-4, atol=1e-5)
    kept = checkpointed_mlp(OURS, use_reentrant, True)
    assert ours[0][0] == pytest.approx(kept[0][0])  # the first loss is the forward's: the same
    assert ours[0][1] != pytest.approx(kept[0][1])


def sequential_segments(m, segments, use_reentrant):
    torch, nn = m.torch, m.nn
    cp = checkpoint_module(m)
    net = set_weights(m, nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 6), nn.ReLU(),
                                       nn.Linear(6, 2)))
    x = randn(m, (7, 4), 3).requires_grad_()
    out = cp.checkpoint_sequential(net, segments, x, use_reentrant=use_reentrant)
    out.pow(2).mean().backward()
    bn = net[1]
    return out, x.grad, net[0].weight.grad, net[5].bias.grad, bn.running_mean, bn.running_var, bn.num_batches_tracked


@pytest.mark.parametrize("use_reentrant", [True, False])
@pytest.mark.parametrize("segments", [1, 2, 3, 6])
def test_checkpoint_sequential_segments(segments, use_reentrant):
    ours, _ = run_both(sequential_segments, segments, use_reentrant, rtol=1e-5, atol=1e-6)
    # a segment holding the BatchNorm is rerun in backward, updating its running statistics once more
    assert int(ours[6]) == (1 if segments == 1 else 2)


def kwargs_and_non_tensor_outputs(m):
    torch = m.torch
    cp = checkpoint_module(m)

    def attention_scores(q, k, mask=None, temperature=1.0):
        scores = q @ k.transpose(-1, -2) / temperature
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return {"probs": scores.softmax(-1), "note": "masked" if mask is not None else "full", "n": scores.shape[-1]}

    q, k = randn(m, (2, 3, 4), 1).requires_grad_(), randn(m, (2, 5, 4), 2).requires_grad_()
    mask = torch.tensor(np.tril(np.ones((3, 5), dtype=bool)))
    out = cp.checkpoint(attention_scores, q, k, mask=mask, temperature=2.0, use_reentrant=False)
    (out["probs"] * torch.arange(5.0)).sum().backward()
    return out["probs"], out["note"], out["n"], q.grad, k.grad


def test_checkpoint_with_keyword_arguments_and_dict_output():
    ours, _ = run_both(kwargs_and_non_tensor_outputs)
    assert ours[1] == "masked" and ours[2] == 5


def test_keyword_arguments_need_the_non_reentrant_variant():
    for m in filter(None, (OURS, pytorch())):
        with pytest.raises(ValueError, match="Unexpected keyword arguments: mask"):
            checkpoint_module(m).checkpoint(lambda x, mask: x, randn(m, (2,), 0).requires_grad_(), mask=None,
                                            use_reentrant=True)


def nested_checkpoints_and_gradient_penalty(m, use_reentrant_inner):
    torch, nn = m.torch, m.nn
    cp = checkpoint_module(m)

    class Critic(nn.Module):  # WGAN-GP's critic, its blocks checkpointed (the inner one twice over)
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = nn.Linear(3, 8), nn.Linear(8, 8), nn.Linear(8, 1)

        def inner(self, h):
            return torch.tanh(self.b(h))

        def outer(self, x):
            h = torch.nn.functional.softplus(self.a(x))
            return cp.checkpoint(self.inner, h, use_reentrant=use_reentrant_inner) + h

        def forward(self, x):
            return self.c(cp.checkpoint(self.outer, x, use_reentrant=False))

    critic = set_weights(m, Critic())
    real, fake = randn(m, (6, 3), 10), randn(m, (6, 3), 11)
    alpha = torch.tensor(np.linspace(0, 1, 6, dtype=np.float32)).unsqueeze(1)
    interp = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
    score = critic(interp)
    grad, = torch.autograd.grad(score.sum(), interp, create_graph=True)
    penalty = ((grad.norm(2, dim=1) - 1) ** 2).mean()
    loss = critic(fake).mean() - critic(real).mean() + 10 * penalty
    loss.backward()
    return score, grad, penalty, critic.a.weight.grad, critic.b.weight.grad, critic.c.bias.grad


def test_gradient_penalty_through_nested_checkpoints():
    ours, _ = run_both(nested_checkpoints_and_gradient_penalty, False, rtol=1e-4, atol=1e-6)
    assert float(ours[2]) > 0


def determinism(m, check):
    cp = checkpoint_module(m)
    calls = []

    def crop_then_exp(x):  # a function that (wrongly) computes something else the second time
        calls.append(1)
        return x[:3 if len(calls) == 1 else 2].exp().sum()

    x = randn(m, (4,), 0).requires_grad_()
    cp.checkpoint(crop_then_exp, x, use_reentrant=False, determinism_check=check).backward()
    return x.grad


def test_determinism_check_raises_checkpoint_error():
    for m in filter(None, (OURS, pytorch())):
        cp = checkpoint_module(m)
        assert issubclass(cp.CheckpointError, RuntimeError)
        differs = r"(?s)different metadata than during the forward pass.\ntensor at position 0:\nsaved metadata: .*3"
        with pytest.raises(cp.CheckpointError, match=differs + r".*\nrecomputed metadata: .*2"):
            determinism(m, "default")
        with pytest.raises(ValueError, match="determinism_check should be one of"):
            determinism(m, "strict")


def selective_checkpointing(m, by_list):
    torch = m.torch
    cp = checkpoint_module(m)
    save = [torch.ops.aten.mm.default, torch.ops.aten.addmm.default]

    def policy(ctx, op, *args, **kwargs):
        return cp.CheckpointPolicy.MUST_SAVE if op in save else cp.CheckpointPolicy.PREFER_RECOMPUTE

    context_fn = functools.partial(cp.create_selective_checkpoint_contexts, save if by_list else policy)
    w1, w2 = randn(m, (4, 6), 1).requires_grad_(), randn(m, (6, 2), 2).requires_grad_()
    x = randn(m, (5, 4), 3)

    def mlp(x):
        return torch.sigmoid(torch.mm(torch.relu(torch.mm(x, w1)), w2))

    out = cp.checkpoint(mlp, x, use_reentrant=False, context_fn=context_fn)
    out.sum().backward()
    return out, w1.grad, w2.grad


@pytest.mark.parametrize("by_list", [True, False])
def test_selective_checkpointing(by_list):
    run_both(selective_checkpointing, by_list)


def test_selective_checkpointing_refuses_what_is_not_an_op():
    for m in filter(None, (OURS, pytorch())):
        cp = checkpoint_module(m)
        with pytest.raises(ValueError, match="Expected op in `op_list` to be an OpOverload"):
            cp.create_selective_checkpoint_contexts(["mm"])
        with pytest.raises(TypeError, match="policy_fn_or_list must be either a function or a list of ops"):
            cp.create_selective_checkpoint_contexts(3)


def hooked_checkpoint(m, use_reentrant, early_stop):
    torch, nn = m.torch, m.nn
    cp = checkpoint_module(m)
    block = set_weights(m, nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)))
    events = []
    block[0].register_forward_pre_hook(lambda module, inputs: events.append("fc1 in"))
    block[2].register_forward_hook(lambda module, inputs, output: events.append(("fc2 out", tuple(output.shape))))
    block.register_forward_hook(lambda module, inputs, output: events.append("block out"))
    x = randn(m, (5, 3), 0).requires_grad_()
    with cp.set_checkpoint_early_stop(early_stop):
        out = cp.checkpoint(block, x, use_reentrant=use_reentrant)
        events.append("backward")
        out.pow(2).sum().backward()
    return events, x.grad, block[0].weight.grad


@pytest.mark.parametrize("use_reentrant,early_stop", [(False, True), (False, False), (True, True)])
def test_forward_hooks_inside_a_checkpoint(use_reentrant, early_stop):
    ours, _ = run_both(hooked_checkpoint, use_reentrant, early_stop)
    rerun = ours[0][ours[0].index("backward") + 1:]
    # the non-reentrant rerun stops once fc2 has saved its input: fc2's and the block's hooks stay quiet
    assert rerun == (["fc1 in"] if early_stop and not use_reentrant else ["fc1 in", ("fc2 out", (5, 2)), "block out"])


def test_checkpoint_sequential_refuses_unknown_keywords():
    for m in filter(None, (OURS, pytorch())):
        net = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.Linear(2, 2))
        with pytest.raises(ValueError, match="Unexpected keyword arguments: foo"):
            checkpoint_module(m).checkpoint_sequential(net, 1, randn(m, (1, 2), 0), use_reentrant=False, foo=1)


def input_written_after_checkpoint(m, use_reentrant):
    torch, nn = m.torch, m.nn
    cp = checkpoint_module(m)
    block = set_weights(m, nn.Sequential(nn.Linear(3, 3), nn.Tanh()))
    x = randn(m, (4, 3), 0).requires_grad_()
    h = x * 1.0
    out = cp.checkpoint(block, h, use_reentrant=use_reentrant)
    h.mul_(2)  # a residual stream updated in place after the block read it
    out.sum().backward()
    return x.grad


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_an_argument_written_in_place_after_the_checkpoint_is_refused(use_reentrant):
    # the rerun would read the doubled values: gradients of another input, silently (chainrule did)
    for m in filter(None, (OURS, pytorch())):
        with pytest.raises(RuntimeError, match="modified by an inplace operation.*is at version 1; expected version 0"):
            input_written_after_checkpoint(m, use_reentrant)


def input_gradient_inside_checkpoint(m):
    torch, nn = m.torch, m.nn
    cp = checkpoint_module(m)
    energy = set_weights(m, nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)))

    def force_field(positions):  # forces as minus the energy gradient, computed inside the checkpointed block
        with torch.enable_grad():
            positions = positions.requires_grad_() if not positions.requires_grad else positions
            e = energy(positions).sum()
            force, = torch.autograd.grad(e, positions, create_graph=True)
        return -force

    x = randn(m, (5, 2), 1).requires_grad_()
    forces = cp.checkpoint(force_field, x, use_reentrant=False)
    loss = (forces - randn(m, (5, 2), 2)).pow(2).mean()
    loss.backward()
    return forces, loss, x.grad, energy[0].weight.grad, energy[2].weight.grad


def test_autograd_grad_inside_a_checkpointed_function():
    run_both(input_gradient_inside_checkpoint, rtol=1e-4, atol=1e-6)
