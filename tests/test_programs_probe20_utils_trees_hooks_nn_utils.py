# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""torch.utils as training code uses it (see tests/pytorch_programs.py), each program run on chainrule and on PyTorch
from the same weights and data, comparing values, gradients, drawn index orders and errors. Trees, hooks and
nn.utils: ``torch.utils._pytree`` over an optimizer-state-like structure and a registered class; forward hooks and
their ``RemovableHandle``; ``clip_grad_norm_`` (every norm type, ``foreach``) and ``clip_grad_value_`` in a training
loop; left-padded ``pad_sequence`` and packed sequences through a GRU (``pack_padded_sequence`` wants one-dimensional
lengths); a MAML inner step by ``functional_call`` on a model with tied weights (strict and conflicting tied values);
torch.utils' submodules read as attributes."""

import collections
import importlib

import numpy as np
import pytest

from .probe20_utils_common import randn, set_weights
from .pytorch_programs import OURS, pytorch, run_both

# ----------------------------------------------------------------------------------------------
# Trees, hooks and nn.utils
# ----------------------------------------------------------------------------------------------


Stats = collections.namedtuple("Stats", "mean var count")


def pytree_state(m):
    torch = m.torch
    pytree = importlib.import_module(m.torch.__name__ + ".utils._pytree")

    class Moments:  # a container of the program's own, registered as a node
        def __init__(self, first, second, step):
            self.first, self.second, self.step = first, second, step

    pytree.register_pytree_node(
        Moments, lambda s: ([s.first, s.second], s.step), lambda children, step: Moments(*children, step),
        flatten_with_keys_fn=lambda s: ([(pytree.GetAttrKey(name), getattr(s, name)) for name in ("first", "second")],
                                        s.step))
    state = {
        "layers": [Moments(randn(m, (2,), i), randn(m, (2,), i + 10).abs(), i) for i in range(2)],
        "stats": Stats(torch.zeros(3), torch.ones(3), 4),
        "order": collections.OrderedDict([("z", torch.tensor(1.0)), ("a", torch.tensor(2.0))]),
        "counts": collections.defaultdict(int, {"seen": 7}),
        "note": None,
    }
    leaves, spec = pytree.tree_flatten(state)
    scaled = pytree.tree_map(lambda v: v * 2 if isinstance(v, torch.Tensor) else v, state)
    only_tensors = pytree.tree_map_only(torch.Tensor, lambda t: t.sum(), state)
    rebuilt = pytree.tree_unflatten([v + 1 if isinstance(v, torch.Tensor) else v for v in leaves], spec)
    paths = [pytree.keystr(path) for path, _ in pytree.tree_flatten_with_path(state)[0]]
    return (len(leaves), spec.num_leaves, scaled["layers"][1].second, scaled["layers"][1].step, scaled["stats"].count,
            only_tensors["stats"].var, list(rebuilt["order"]), rebuilt["order"]["a"], type(rebuilt["counts"]).__name__,
            rebuilt["counts"].default_factory is int, rebuilt["layers"][0].first, paths)


def test_pytree_over_optimizer_like_state():
    ours, _ = run_both(pytree_state)  # leaves: 4 moments, 3 stats, 2 ordered, 1 count, and None (a leaf)
    assert ours[0] == 11 and ours[-1][:2] == ["['layers'][0].first", "['layers'][0].second"]


def feature_extractor_hooks(m):
    torch, nn = m.torch, m.nn
    net = set_weights(m, nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3)))
    features, calls = {}, []

    def save(name):
        def hook(module, inputs, output):
            features[name] = output.detach()
            calls.append(name)
        return hook

    handles = [net[i].register_forward_hook(save(f"layer{i}")) for i in (0, 3)]
    first = net[3].register_forward_hook(lambda module, inputs, output: calls.append("prepended"), prepend=True)
    x = randn(m, (2, 1, 4, 4), 0)
    net(x)
    for handle in handles:
        handle.remove()
    handles[0].remove()  # a second remove does nothing
    net(x)
    with first:
        net(x)
    net(x)
    grads = []
    h = net[0].weight.register_hook(lambda g: grads.append(g.clone()) or g * 0.5)
    net(x).sum().backward()
    h.remove()
    return calls, features["layer0"], features["layer3"], grads[0], net[0].weight.grad


def test_forward_hooks_and_removable_handles():
    ours, _ = run_both(feature_extractor_hooks)
    assert ours[0] == ["layer0", "prepended", "layer3", "prepended", "prepended"]


def clipped_training(m, norm_type, foreach):
    torch, nn, F = m.torch, m.nn, m.F
    net = set_weights(m, nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 2)), seed=3)
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    x, y = randn(m, (12, 4), 1) * 4, randn(m, (12, 2), 2)
    norms = []
    for step in range(4):
        opt.zero_grad()
        F.mse_loss(net(x), y).backward()
        norms.append(nn.utils.clip_grad_norm_(net.parameters(), max_norm=0.5, norm_type=norm_type, foreach=foreach))
        nn.utils.clip_grad_value_(net[0].parameters(), clip_value=0.05, foreach=foreach)
        opt.step()
    vector = nn.utils.parameters_to_vector(net.parameters())
    nn.utils.vector_to_parameters(vector * 0.5, net.parameters())
    return norms, vector, net[2].bias, net[0].weight.grad


@pytest.mark.parametrize("foreach", [None, True, False])
@pytest.mark.parametrize("norm_type", [2.0, 1, float("inf"), 3.0])
def test_clip_grad_norm_in_a_training_loop(norm_type, foreach):
    run_both(clipped_training, norm_type, foreach, rtol=1e-4, atol=1e-6)


def padded_sequences_through_gru(m, padding_side):
    torch, nn = m.torch, m.nn
    rnn_utils = nn.utils.rnn
    seqs = [randn(m, (n, 3), n).requires_grad_() for n in (4, 1, 6, 3)]
    padded = rnn_utils.pad_sequence(seqs, batch_first=True, padding_value=0.0, padding_side=padding_side)
    lengths = torch.tensor([len(s) for s in seqs])
    gru = set_weights(m, nn.GRU(3, 5, batch_first=True))
    if padding_side == "left":  # a left-padded batch (as for decoder-only models) read by a plain GRU
        out, h = gru(padded)
        last = out[:, -1]
    else:
        packed = rnn_utils.pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
        out_packed, h = gru(packed)
        out, out_lengths = rnn_utils.pad_packed_sequence(out_packed, batch_first=True, total_length=7)
        last = h[0]
        unpacked = rnn_utils.unpack_sequence(out_packed)
        unpadded = rnn_utils.unpad_sequence(out, out_lengths, batch_first=True)
        assert all(np.allclose(a.detach().numpy(), b.detach().numpy()) for a, b in zip(unpacked, unpadded))
    (last.pow(2).sum() + out.sum()).backward()
    return padded, out, last, seqs[1].grad, seqs[2].grad, gru.weight_hh_l0.grad


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_padded_sequences_through_a_gru(padding_side):
    ours, _ = run_both(padded_sequences_through_gru, padding_side, rtol=1e-4, atol=1e-6)
    assert ours[0].shape == (4, 6, 3)


def maml_step_with_tied_weights(m):
    torch, nn, F = m.torch, m.nn, m.F

    class TiedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(6, 4)
            self.proj = nn.Linear(4, 4)
            self.head = nn.Linear(4, 6, bias=False)
            self.head.weight = self.embed.weight  # weight tying

        def forward(self, tokens):
            return self.head(torch.tanh(self.proj(self.embed(tokens))))

    model = set_weights(m, TiedLM())
    params = dict(model.named_parameters())
    support, target = torch.tensor([0, 2, 4, 1]), torch.tensor([2, 4, 1, 3])
    loss = F.cross_entropy(torch.func.functional_call(model, params, (support,)), target)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
    fast = {name: p - 0.4 * g for (name, p), g in zip(params.items(), grads)}
    query_loss = F.cross_entropy(torch.func.functional_call(model, fast, (target,)), support)
    query_loss.backward()
    untied = torch.func.functional_call(model, {"head.weight": torch.zeros(6, 4)}, (support,), tie_weights=False)
    return sorted(params), loss, query_loss, model.embed.weight.grad, model.proj.bias.grad, untied


def test_maml_inner_step_by_functional_call_with_tied_weights():
    ours, _ = run_both(maml_step_with_tied_weights, rtol=1e-4, atol=1e-6)
    assert "head.weight" not in ours[0]  # named_parameters lists a tied weight once


def test_functional_call_strict_and_conflicting_tied_values():
    for m in filter(None, (OURS, pytorch())):
        linear = m.nn.Linear(2, 2)
        with pytest.raises(RuntimeError, match="Missing key"):
            m.torch.func.functional_call(linear, {"weight": m.torch.zeros(2, 2)}, (m.torch.zeros(1, 2),), strict=True)
        tied = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.Linear(2, 2))
        tied[1].weight = tied[0].weight
        with pytest.raises(ValueError, match="0.weight.*1.weight|1.weight.*0.weight"):
            m.torch.func.functional_call(tied, {"0.weight": m.torch.zeros(2, 2), "1.weight": m.torch.ones(2, 2)},
                                         (m.torch.zeros(1, 2),))


def test_pack_padded_sequence_wants_one_dimensional_lengths():
    for m in filter(None, (OURS, pytorch())):
        padded = randn(m, (3, 4, 2), 0)
        with pytest.raises(RuntimeError, match="'lengths' argument should be a 1D CPU int64 tensor, but got 2D"):
            m.nn.utils.rnn.pack_padded_sequence(padded, m.torch.tensor([[4, 2, 1]]), batch_first=True)
        packed = m.nn.utils.rnn.pack_padded_sequence(padded, m.torch.tensor([4, 2, 1]), batch_first=True)
        assert packed.batch_sizes.tolist() == [3, 2, 1, 1]


def test_torch_utils_submodules_read_as_attributes():
    for m in filter(None, (OURS, pytorch())):  # (code reads torch.utils.dlpack.to_dlpack after a plain import torch)
        for name in ("data", "hooks", "checkpoint", "dlpack"):
            assert hasattr(m.torch.utils, name), name
        assert callable(m.torch.utils.dlpack.from_dlpack)
