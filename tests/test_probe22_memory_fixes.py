"""Focused tests of the library fixes found by probe 22 (memory-augmented and set-structured models), each checked
against PyTorch where it is installed and against values that hold without it."""

import warnings

import numpy as np
import pytest

import autograd
import nn

from .pytorch_programs import OURS, assert_same, pytorch, run_both

# ----------------------------------------------------------------------------------------------
# The fused inference path of MultiheadAttention and TransformerEncoderLayer: a query whose every key is masked
# gets NaN there (a plain softmax), 0 on the unfused route (SDPA's safe softmax)
# ----------------------------------------------------------------------------------------------


def masked_attention(m, *, training=False, grad=False, cross=False, float_mask=False, odd_heads=False):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    E, H = (9, 3) if odd_heads else (8, 2)
    mha = nn.MultiheadAttention(E, H, batch_first=True).train(training)
    x = torch.randn(2, 3, E)
    kpm = torch.tensor([[False, False, True], [True, True, True]])  # the second set is empty
    if float_mask:
        kpm = torch.zeros(2, 3).masked_fill(kpm, float("-inf"))
    with torch.set_grad_enabled(grad):
        out, weights = mha(x, x, x.clone() if cross else x, key_padding_mask=kpm, need_weights=False)
    return {"out": out.detach(), "weights": weights is None}


@pytest.mark.parametrize("route", ["fused", "training", "grad", "cross", "float_mask", "odd_heads"])
def test_multihead_attention_with_an_empty_set(route):
    kwargs = {} if route == "fused" else {route: True}
    ours, _ = run_both(masked_attention, **kwargs, rtol=1e-5, atol=1e-6)
    assert ours["weights"]
    assert np.isfinite(ours["out"][0]).all()
    if route == "fused":
        assert np.isnan(ours["out"][1]).all()
    else:
        np.testing.assert_array_equal(ours["out"][1], 0.0)


def encoder_layer_with_an_empty_set(m, *, norm_first=False, hooked=False, float_mask=False):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True, norm_first=norm_first).eval()
    if hooked:
        layer.linear2.register_forward_hook(lambda module, args, out: None)
    x = torch.randn(2, 3, 8)
    kpm = torch.tensor([[False, False, True], [True, True, True]])
    if float_mask:  # (the fused layer takes float masks, the fused attention does not)
        kpm = torch.zeros(2, 3).masked_fill(kpm, float("-inf"))
    with torch.no_grad():
        return layer(x, src_key_padding_mask=kpm)


@pytest.mark.parametrize("kind", ["post_norm", "norm_first", "float_mask", "hooked"])
def test_encoder_layer_with_an_empty_set(kind):
    kwargs = {} if kind == "post_norm" else {kind: True}
    ours, _ = run_both(encoder_layer_with_an_empty_set, **kwargs, rtol=1e-5, atol=1e-5)
    assert np.isfinite(ours[0]).all()
    if kind == "hooked":  # a hook keeps PyTorch off its fused kernel: the empty set's attention is 0
        assert np.isfinite(ours[1]).all()
    else:
        assert np.isnan(ours[1]).all()


def test_fused_layer_ignores_a_subclass_block():
    """PyTorch's fused kernel computes the layer's own blocks: a subclass's ``_sa_block`` runs only off it."""

    def program(m):
        torch, nn = m.torch, m.nn

        class Doubled(nn.TransformerEncoderLayer):
            calls = 0

            def _sa_block(self, x, attn_mask, key_padding_mask, is_causal=False):
                Doubled.calls += 1
                return 2 * super()._sa_block(x, attn_mask, key_padding_mask, is_causal)

        torch.manual_seed(0)
        layer = Doubled(8, 2, 16, batch_first=True).eval()
        x = torch.randn(2, 3, 8)
        with torch.no_grad():
            fused = layer(x)
        unfused = layer(x)
        plain = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).eval()
        plain.load_state_dict(layer.state_dict())
        with torch.no_grad():
            same = torch.allclose(plain(x), fused)
        return {"calls": Doubled.calls, "same": same, "differ": not torch.allclose(fused, unfused.detach())}

    ours, _ = run_both(program)
    assert ours == {"calls": 1, "same": True, "differ": True}


def test_fastpath_switch():
    """``torch.backends.mha.set_fastpath_enabled(False)``: attention and encoders take the unfused route (0 for an
    empty set, padded positions not zeroed by the encoder)."""

    def program(m):
        torch, nn = m.torch, m.nn
        torch.manual_seed(0)
        layer = nn.TransformerEncoderLayer(8, 2, 16, batch_first=True).eval()
        encoder = nn.TransformerEncoder(layer, 1).eval()
        x = torch.randn(2, 3, 8)
        kpm = torch.tensor([[False, False, True], [True, True, True]])
        ragged = torch.tensor([[False, False, True], [False, True, True]])
        results = {}
        for enabled in (False, True):
            torch.backends.mha.set_fastpath_enabled(enabled)
            try:
                with torch.no_grad():
                    results[enabled] = (layer(x, src_key_padding_mask=kpm), encoder(x, src_key_padding_mask=ragged),
                                        torch.backends.mha.get_fastpath_enabled())
            finally:
                torch.backends.mha.set_fastpath_enabled(True)
        return results

    ours, _ = run_both(program, rtol=1e-5, atol=1e-5)
    off, on = ours[False], ours[True]
    assert off[2] is False and on[2] is True
    assert np.isfinite(off[0]).all() and np.isnan(on[0][1]).all()
    assert (off[1][1, 1:] != 0).all() and (on[1][1, 1:] == 0).all()  # the nested path pads with zeros
    np.testing.assert_allclose(off[1][:, 0], on[1][:, 0], rtol=1e-5)


def test_fused_attention_matches_unfused_where_a_key_is_left():
    autograd.manual_seed(0)
    mha = nn.MultiheadAttention(8, 2, batch_first=True).eval()
    x = autograd.randn(3, 4, 8)
    kpm = autograd.tensor([[False, True, True, True], [False] * 4, [True, False, True, False]])
    with autograd.no_grad():
        fused = mha(x, x, x, key_padding_mask=kpm, need_weights=False)[0]
        unfused = mha(x, x, x.clone(), key_padding_mask=kpm, need_weights=False)[0]
    np.testing.assert_allclose(fused.numpy(), unfused.numpy(), rtol=1e-5, atol=1e-6)
    assert OURS.torch.backends.mha.get_fastpath_enabled()
    if pytorch() is not None:
        import torch

        assert torch.backends.mha.get_fastpath_enabled()


# ----------------------------------------------------------------------------------------------
# scatter with reduce= : PyTorch has no derivative for it (a backward pass raises), and deprecates it for a tensor
# src with one warning in a process
# ----------------------------------------------------------------------------------------------


def scatter_with_reduce(m, reduce, value):
    torch = m.torch
    x = torch.ones(2, 4, requires_grad=True)
    index = torch.tensor([[0, 1, 0, 1], [3, 3, 3, 3]])
    src = 2.0 if value else torch.arange(2.0, 10.0).reshape(2, 4).requires_grad_()
    y = x.scatter(1, index, src, reduce=reduce)
    try:
        y.sum().backward()
        raised = None
    except RuntimeError as error:
        raised = str(error)
    in_place = torch.ones(2, 4, requires_grad=True).clone().scatter_(1, index, src, reduce=reduce)
    with torch.no_grad():
        quiet = x.scatter(1, index, src, reduce=reduce)
    return {"y": y.detach(), "requires_grad": y.requires_grad, "raised": raised, "in_place": in_place.detach(),
            "in_place_requires_grad": in_place.requires_grad, "quiet": quiet.requires_grad}


@pytest.mark.parametrize("value", [False, True], ids=["tensor_src", "value"])
@pytest.mark.parametrize("reduce", ["add", "multiply"])
def test_scatter_with_reduce_has_no_derivative(reduce, value):
    ours, _ = run_both(scatter_with_reduce, reduce, value)
    assert ours["raised"] == "derivative for aten::scatter is not implemented"
    assert ours["requires_grad"] and ours["in_place_requires_grad"] and not ours["quiet"]
    src = np.full((2, 4), 2.0) if value else np.arange(2.0, 10.0).reshape(2, 4)
    expect = np.ones((2, 4))
    for i in range(2):
        for j, k in enumerate([[0, 1, 0, 1], [3, 3, 3, 3]][i]):
            expect[i, k] = expect[i, k] + src[i, j] if reduce == "add" else expect[i, k] * src[i, j]
    np.testing.assert_array_equal(ours["y"], expect)
    np.testing.assert_array_equal(ours["in_place"], expect)


def test_scatter_with_reduce_warns_once_for_a_tensor_src(monkeypatch):
    import autograd.warn_once as once

    monkeypatch.setattr(once, "_warned_once", set())
    x, index = autograd.ones(2, 3), autograd.tensor([[0, 0, 1], [2, 2, 2]])
    with pytest.warns(UserWarning, match="The reduce argument of torch.scatter with Tensor src is deprecated"):
        x.scatter(1, index, autograd.ones(2, 3), reduce="add")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x.scatter(1, index, autograd.ones(2, 3), reduce="multiply")  # once only
        x.scatter(1, index, 3.0, reduce="add")  # a number: not deprecated
    with pytest.raises(RuntimeError, match="reduce argument must be either add or multiply"):
        x.scatter(1, index, 3.0, reduce="mean")


# ----------------------------------------------------------------------------------------------
# Recurrent cells (NTM/DNC controllers): an unbatched input takes unbatched states only; an LSTM cell two states
# ----------------------------------------------------------------------------------------------


def cell_misuse(m, case):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    lstm, gru, rnn = nn.LSTMCell(3, 4), nn.GRUCell(3, 4), nn.RNNCell(3, 4)
    calls = {
        "lstm_one_state": lambda: lstm(torch.randn(2, 3), (torch.randn(2, 4),)),
        "lstm_three_states": lambda: lstm(torch.randn(2, 3), (torch.randn(2, 4),) * 3),
        "gru_unbatched_input_2d_state": lambda: gru(torch.randn(3), torch.randn(1, 4)),
        "rnn_unbatched_input_2d_state": lambda: rnn(torch.randn(3), torch.randn(2, 4)),
        "lstm_unbatched_input_mixed_states": lambda: lstm(torch.randn(3), (torch.randn(4), torch.randn(1, 4))),
        "lstm_list_of_states": lambda: lstm(torch.randn(2, 3), [torch.randn(2, 4), torch.randn(2, 4)]),
        "gru_unbatched": lambda: gru(torch.randn(3), torch.randn(4)),
        "lstm_unbatched_no_state": lambda: lstm(torch.randn(3)),
    }
    try:
        out = calls[case]()
    except RuntimeError as error:
        return str(error)
    return [o.detach() for o in out] if isinstance(out, tuple) else out.detach()


@pytest.mark.parametrize("case, message", [
    ("lstm_one_state", "lstm_cell expects two hidden states"),
    ("lstm_three_states", "lstm_cell expects two hidden states"),
    ("gru_unbatched_input_2d_state", "hidden0 has inconsistent hidden_size: got 1, expected 4"),
    ("rnn_unbatched_input_2d_state", "hidden0 has inconsistent hidden_size: got 2, expected 4"),
    ("lstm_unbatched_input_mixed_states", "hidden1 has inconsistent hidden_size: got 1, expected 4"),
    ("lstm_list_of_states", None),
    ("gru_unbatched", None),
    ("lstm_unbatched_no_state", None),
])
def test_recurrent_cell_states(case, message):
    ours, _ = run_both(cell_misuse, case)
    if message is None:
        assert not isinstance(ours, str)
        shapes = [o.shape for o in ours] if isinstance(ours, list) else [ours.shape]
        assert all(s[-1] == 4 for s in shapes)
    else:
        assert ours == message


# ----------------------------------------------------------------------------------------------
# heaviside and floor_divide (//) have no derivative in PyTorch: their results require grad, and a backward pass
# through them raises (rather than a gradient of 0 silently joining the others); div(rounding_mode="floor") keeps 0
# ----------------------------------------------------------------------------------------------


def without_derivative(m, op):
    torch = m.torch
    x = torch.tensor([0.5, -1.2, 0.0, 2.0], requires_grad=True)
    half = torch.tensor(0.5)
    make = {
        "heaviside": lambda: torch.heaviside(x, half),
        "heaviside_values": lambda: torch.heaviside(torch.tensor([1.0, 0.0, -1.0, 0.0]), x),
        "heaviside_": lambda: x.clone().heaviside_(half),
        "floor_divide": lambda: torch.floor_divide(x, 0.75),
        "floordiv": lambda: x // 0.75,
        "rfloordiv": lambda: 3.0 // (x + 2),
        "ifloordiv": lambda: x.clone().__ifloordiv__(0.75),
        "div_floor": lambda: torch.div(x, 0.75, rounding_mode="floor"),
    }
    y = make[op]()
    try:
        (y.sum() + x.sum()).backward()
        raised = None
    except RuntimeError as error:
        raised = str(error)
    return {"y": y.detach(), "requires_grad": y.requires_grad, "node": y.grad_fn.name(), "raised": raised,
            "grad": x.grad}


@pytest.mark.parametrize("op, kernel, expect", [
    ("heaviside", "heaviside", [1.0, 0.0, 0.5, 1.0]),
    ("heaviside_values", "heaviside", [1.0, -1.2, 0.0, 2.0]),
    ("floor_divide", "floor_divide", [0.0, -2.0, 0.0, 2.0]),
    ("floordiv", "floor_divide", [0.0, -2.0, 0.0, 2.0]),
    ("rfloordiv", "floor_divide", [1.0, 3.0, 1.0, 0.0]),
])
def test_no_derivative(op, kernel, expect):
    ours, theirs = run_both(without_derivative, op)
    np.testing.assert_allclose(ours["y"], expect, rtol=1e-7)
    assert ours["requires_grad"]
    assert ours["node"] == "torch::autograd::NotImplemented"
    assert ours["raised"] == f"derivative for aten::{kernel} is not implemented"
    assert ours["grad"] is None


@pytest.mark.parametrize("op", ["heaviside_", "ifloordiv"])
def test_in_place_ops_without_derivative(op):
    # (PyTorch's message names the in-place kernel, heaviside_; ours the out-of-place one it writes back)
    ours, theirs = run_both(without_derivative, op, compare=False)
    assert ours["requires_grad"] and ours["node"] == "torch::autograd::NotImplemented"
    kernel = "heaviside" if op == "heaviside_" else "floor_divide"
    assert ours["raised"] == f"derivative for aten::{kernel} is not implemented"
    if theirs is not None:
        assert theirs["raised"] == f"derivative for aten::{kernel}_ is not implemented"
        np.testing.assert_array_equal(ours["y"], theirs["y"])


def test_div_with_floor_rounding_keeps_its_zero_gradient():
    ours, _ = run_both(without_derivative, "div_floor")
    assert ours["node"] == "DivBackward2" and ours["raised"] is None
    np.testing.assert_array_equal(ours["grad"], 1.0)  # the sum's 1, plus 0 through the division


def test_floor_divide_of_integers_and_numbers():
    def program(m):
        torch = m.torch
        a, b = torch.tensor([7, -7, 5]), torch.tensor([2, 2, -3])
        return {"ints": a // b, "int_number": a // 2, "number_int": 9 // b, "fn": torch.floor_divide(a, b),
                "float": torch.tensor([7.5, -7.5]) // 2, "dtype": str(torch.floor_divide(a, 2.5).dtype).split(".")[-1]}

    ours, _ = run_both(program)
    np.testing.assert_array_equal(ours["ints"], [3, -4, -2])
    np.testing.assert_array_equal(ours["int_number"], [3, -4, 2])
    np.testing.assert_array_equal(ours["number_int"], [4, 4, -3])
    np.testing.assert_array_equal(ours["float"], [3.0, -4.0])
    assert ours["dtype"] == "float32"


# ----------------------------------------------------------------------------------------------
# Draws from parameters that require grad: recorded with gradient 0 (PyTorch does not reparameterise them), or
# without derivative where PyTorch has none; in-place draws are recorded for the tensor they fill
# ----------------------------------------------------------------------------------------------


def draw_from_parameters(m, case):
    torch = m.torch
    torch.manual_seed(0)
    mu = torch.tensor([0.5, 1.2, 0.3], requires_grad=True)
    sigma = torch.tensor([1.0, 2.0, 0.5], requires_grad=True)
    probs = mu.sigmoid()
    make = {
        "normal_mean": lambda: torch.normal(mu, 1.0),
        "normal_std": lambda: torch.normal(0.0, sigma),
        "normal_both": lambda: torch.normal(mu, sigma),
        "bernoulli": lambda: torch.bernoulli(probs),
        "bernoulli_method": lambda: probs.bernoulli(),
        "poisson": lambda: torch.poisson(mu),
        "bernoulli_p": lambda: torch.bernoulli(mu, p=0.5),
        "binomial": lambda: torch.binomial(torch.full((3,), 5.0), probs),
        "sample_dirichlet": lambda: torch._sample_dirichlet(mu),
        "normal_": lambda: (mu * 1).normal_(),
        "uniform_": lambda: (mu * 1).uniform_(-1, 1),
        "bernoulli_": lambda: (mu * 1).bernoulli_(0.3),
        "bernoulli_tensor_": lambda: (mu * 1).bernoulli_(probs),
        "exponential_": lambda: (mu * 1).exponential_(),
        "log_normal_": lambda: (mu * 1).log_normal_(),
        "cauchy_": lambda: (mu * 1).cauchy_(),
        "geometric_": lambda: (mu * 1).geometric_(0.4),
        "random_": lambda: (mu * 1).random_(),
        "random_to": lambda: (mu * 1).random_(5),
        "random_from_to": lambda: (mu * 1).random_(2, 5),
    }
    y = make[case]()
    try:
        grads = torch.autograd.grad((y * 2).sum(), [mu, sigma], allow_unused=True)
        raised = None
    except RuntimeError as error:
        grads, raised = None, str(error)
    return {"y": y.detach(), "requires_grad": y.requires_grad, "node": y.grad_fn.name(), "raised": raised,
            "grads": None if grads is None else list(grads)}


@pytest.mark.parametrize("case, node", [
    ("normal_mean", "NormalBackward1"), ("normal_std", "NormalBackward2"), ("normal_both", "NormalBackward3"),
    ("bernoulli", "BernoulliBackward0"), ("bernoulli_method", "BernoulliBackward0"), ("poisson", "PoissonBackward0"),
    ("normal_", "NormalBackward0"), ("uniform_", "UniformBackward0"), ("bernoulli_", "BernoulliBackward2"),
    ("bernoulli_tensor_", "BernoulliBackward1"), ("exponential_", "ExponentialBackward0"),
    ("log_normal_", "LogNormalBackward0"), ("cauchy_", "CauchyBackward0"), ("geometric_", "GeometricBackward0"),
    ("random_", "RandomBackward2"), ("random_to", "RandomBackward1"), ("random_from_to", "RandomBackward0"),
])
def test_draws_have_gradient_zero(case, node):
    ours, _ = run_both(draw_from_parameters, case, rtol=1e-6, atol=1e-7)
    assert ours["requires_grad"] and ours["node"] == node and ours["raised"] is None
    for grad, used in zip(ours["grads"], ("std" not in case, "std" in case or "both" in case)):
        if used:
            np.testing.assert_array_equal(grad, 0.0)
        else:
            assert grad is None


@pytest.mark.parametrize("case, kernel", [
    ("bernoulli_p", "bernoulli"), ("binomial", "binomial"), ("sample_dirichlet", "_sample_dirichlet"),
])
def test_draws_without_derivative(case, kernel):
    ours, _ = run_both(draw_from_parameters, case, rtol=1e-6, atol=1e-7)
    assert ours["requires_grad"] and ours["node"] == "torch::autograd::NotImplemented"
    assert ours["raised"] == f"derivative for aten::{kernel} is not implemented"


def test_reinforce_with_a_drawn_action():
    """A REINFORCE step whose loss reaches the policy only through a Bernoulli draw: PyTorch runs it (gradient 0;
    the action requires grad), where an unrecorded draw would refuse the backward pass."""

    def program(m):
        torch, nn = m.torch, m.nn
        torch.manual_seed(0)
        policy = nn.Linear(3, 2)
        probs = policy(torch.randn(4, 3)).sigmoid()
        action = torch.bernoulli(probs)
        (action * 1.5).sum().backward()
        with torch.no_grad():
            quiet = torch.bernoulli(probs)
        return {"grad": policy.weight.grad, "requires_grad": action.requires_grad, "quiet": quiet.requires_grad,
                "action": action.detach()}

    ours, _ = run_both(program)
    np.testing.assert_array_equal(ours["grad"], 0.0)
    assert ours["requires_grad"] and not ours["quiet"]
    assert set(np.unique(ours["action"])) <= {0.0, 1.0}


# ----------------------------------------------------------------------------------------------
# Histograms of data (or weights) that require grad: recorded without derivative, as PyTorch's
# ----------------------------------------------------------------------------------------------


def histograms(m, case):
    torch = m.torch
    x = torch.tensor([[0.5, -1.2], [2.0, 0.1], [0.3, -0.7]], requires_grad=True)
    w = torch.ones(3, requires_grad=True)
    make = {
        "histogram": lambda: torch.histogram(x[:, 0], 3),
        "histogram_edges": lambda: torch.histogram(x[:, 0], torch.tensor([-2.0, 0.0, 3.0])),
        "histogram_weight": lambda: torch.histogram(x.detach()[:, 0], 3, weight=w),
        "histogramdd": lambda: torch.histogramdd(x, bins=2),
        "histogramdd_edges": lambda: torch.histogramdd(x, bins=[torch.tensor([-2.0, 0.0, 3.0])] * 2),
        "plain": lambda: torch.histogram(x.detach()[:, 0], 3),
    }
    h = make[case]()
    edges = list(h.bin_edges) if isinstance(h.bin_edges, (tuple, list)) else [h.bin_edges]
    raised = []
    for t in [h.hist] + edges:
        if t.requires_grad:
            try:
                t.sum().backward()
                raised.append(None)
            except RuntimeError as error:
                raised.append(str(error))
    return {"hist": h.hist.detach(), "requires_grad": [h.hist.requires_grad] + [e.requires_grad for e in edges],
            "raised": raised}


@pytest.mark.parametrize("case, requires_grad, kernels", [
    ("histogram", [True, True], ["histogram", "histogram"]),
    ("histogram_edges", [True, True], ["histogram", "histogram"]),
    ("histogram_weight", [True, True], ["histogram", "histogram"]),
    ("histogramdd", [True, True, True], ["_histogramdd_from_bin_cts"] + ["_histogramdd_bin_edges"] * 2),
    ("histogramdd_edges", [True, False, False], ["_histogramdd_from_bin_tensors"]),
    ("plain", [False, False], []),
])
def test_histograms_have_no_derivative(case, requires_grad, kernels):
    ours, _ = run_both(histograms, case)
    assert ours["requires_grad"] == requires_grad
    assert ours["raised"] == [f"derivative for aten::{k} is not implemented" for k in kernels]
    assert ours["hist"].sum() == 3


# ----------------------------------------------------------------------------------------------
# QR's backward for a rank-deficient input (pca_lowrank of a centred set with fewer points than features): R's
# zero pivot gives inf/NaN by back substitution, as PyTorch's, not a "singular" refusal
# ----------------------------------------------------------------------------------------------


def rank_deficient_qr(m):
    torch = m.torch
    A = torch.tensor([[1.0, 2.0], [2.0, 4.0], [0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    Q, R = torch.linalg.qr(A)
    full_rank = torch.autograd.grad((Q * torch.arange(6.0, dtype=torch.float64).reshape(3, 2)).sum() + R.sum(), A)[0]
    x = torch.tensor([[0.5, -1.2, 0.3], [2.0, 0.1, -0.7]], requires_grad=True)
    torch.manual_seed(0)
    U, S, V = torch.pca_lowrank(x)
    return {"full_rank": full_rank, "pca_grad": torch.autograd.grad(U.sum(), x)[0], "S": S.detach()}


def test_rank_deficient_qr_backward():
    ours, theirs = run_both(rank_deficient_qr, compare=False)
    assert np.isfinite(ours["full_rank"]).all()
    # the centred pair spans one direction: S = (s, 0), where the gradient is NaN; LAPACK's float32 SVD may instead
    # give a second singular value of 1e-24 (OpenBLAS's AVX-512 kernels), and a finite gradient of the order of
    # float32's rounding
    assert ours["S"][1] == pytest.approx(0.0, abs=1e-6)
    if ours["S"][1] == 0:
        assert np.isnan(ours["pca_grad"]).all()
    else:
        assert np.abs(ours["pca_grad"]).max() < 1e-6, ours["pca_grad"]
    if theirs is not None:
        assert_same({k: ours[k] for k in ("full_rank", "S")}, {k: theirs[k] for k in ("full_rank", "S")}, 1e-5, 1e-6)


# ----------------------------------------------------------------------------------------------
# A sparse tensor made by to_sparse from one that requires grad, used by two backward passes: PyTorch's
# ToSparseBackward saves no tensor, so the second pass works
# ----------------------------------------------------------------------------------------------


def to_sparse_used_twice(m):
    torch = m.torch
    x = torch.tensor([[0.5, -1.2, 0.0], [2.0, 0.1, -0.7]], requires_grad=True)
    z = x.to_sparse()
    first = torch.autograd.grad(torch.sparse.sum(z), x)[0]
    second = torch.autograd.grad((z * 2).to_dense().sum(), x)[0]
    third = torch.autograd.grad(z.to_dense().pow(2).sum(), x)[0]
    return {"first": first, "second": second, "third": third, "node": z.grad_fn.name(),
            "node_dim": x.to_sparse(1).grad_fn.name()}


def test_to_sparse_used_by_two_backward_passes():
    ours, _ = run_both(to_sparse_used_twice)
    kept = np.array([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])  # the gradient of the stored (nonzero) entries
    np.testing.assert_array_equal(ours["first"], kept)
    np.testing.assert_array_equal(ours["second"], 2 * kept)
    np.testing.assert_allclose(ours["third"], 2 * np.array([[0.5, -1.2, 0.0], [2.0, 0.1, -0.7]]), rtol=1e-6)
    assert (ours["node"], ours["node_dim"]) == ("ToSparseBackward1", "ToSparseBackward0")


def test_legacy_constructor_of_a_tensor_keeps_its_history():
    def program(m):
        torch = m.torch
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        y = torch.Tensor(x)
        return {"requires_grad": y.requires_grad, "grad": torch.autograd.grad((y * 3).sum(), x)[0]}

    ours, _ = run_both(program)
    assert ours["requires_grad"]
    np.testing.assert_array_equal(ours["grad"], [3.0, 3.0])


# ----------------------------------------------------------------------------------------------
# Gaps left open
# ----------------------------------------------------------------------------------------------


def test_dense_gradient_through_to_sparse_reaches_the_zeros():
    def program(m):
        torch = m.torch
        x = torch.tensor([[0.5, -1.2, 0.0], [2.0, 0.1, -0.7]], requires_grad=True)
        return torch.autograd.grad(x.to_sparse().sum(), x)[0]

    ours, _ = run_both(program)
    np.testing.assert_array_equal(ours, np.ones((2, 3)))
