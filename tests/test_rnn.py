"""nn.RNN, nn.LSTM, nn.GRU and their cells; nn.utils.rnn's padding and packing.

Gradients are checked against finite differences (float64, tiny sizes) and,
where PyTorch is installed, everything against PyTorch with the same weights:
outputs, final states and the gradient of every input and parameter.
"""

import numpy as np
import pytest

import autograd
import nn
from autograd import Tensor
from nn.utils.rnn import pack_padded_sequence, pack_sequence, pad_packed_sequence, pad_sequence

INPUT, HIDDEN, STEPS, BATCH = 2, 3, 3, 2

# (class name, constructor keywords, pass initial states, lengths for a packed batch or None)
CONFIGS = {
    "rnn_tanh": ("RNN", {}, False, None),
    "rnn_relu_2layers_states": ("RNN", {"num_layers": 2, "nonlinearity": "relu"}, True, None),
    "rnn_bidirectional_no_bias": ("RNN", {"bidirectional": True, "bias": False}, True, None),
    "lstm": ("LSTM", {}, False, None),
    "lstm_2layers_bidirectional_states": ("LSTM", {"num_layers": 2, "bidirectional": True}, True, None),
    "lstm_batch_first_proj": ("LSTM", {"batch_first": True, "proj_size": 2}, True, None),
    "lstm_bidirectional_proj": ("LSTM", {"bidirectional": True, "proj_size": 2, "num_layers": 2}, False, None),
    "gru": ("GRU", {}, True, None),
    "gru_2layers_bidirectional_batch_first": ("GRU", {"num_layers": 2, "bidirectional": True,
                                                      "batch_first": True}, True, None),
    "rnn_packed": ("RNN", {"bidirectional": True}, True, [2, 3]),
    "lstm_packed_proj": ("LSTM", {"bidirectional": True, "proj_size": 2}, True, [1, 3]),
    "gru_packed_batch_first": ("GRU", {"num_layers": 2, "batch_first": True}, False, [3, 2]),
}


def _shapes(name, options):
    layers = options.get("num_layers", 1) * (2 if options.get("bidirectional") else 1)
    out = options.get("proj_size") or HIDDEN
    return [(layers, BATCH, out)] + ([(layers, BATCH, HIDDEN)] if name == "LSTM" else [])


def _example(config, seed=0):
    """The module (float64), its input and states as arrays."""
    name, options, with_states, lengths = config
    autograd.manual_seed(seed)
    module = getattr(nn, name)(INPUT, HIDDEN, **options).double()
    rng = np.random.default_rng(seed)
    shape = (BATCH, STEPS, INPUT) if options.get("batch_first") else (STEPS, BATCH, INPUT)
    states = [rng.standard_normal(s) for s in _shapes(name, options)] if with_states else []
    return module, rng.standard_normal(shape), states


def _call(module, config, x, states):
    """Run the module on x (packing it first for a packed config); outputs as a flat list of Tensors."""
    name, options, _, lengths = config
    if lengths is not None:
        x = pack_padded_sequence(x, lengths, batch_first=options.get("batch_first", False), enforce_sorted=False)
    hx = None if not states else (tuple(states) if name == "LSTM" else states[0])
    output, final = module(x, hx)
    if lengths is not None:
        output = pad_packed_sequence(output, batch_first=options.get("batch_first", False))[0]
    return [output] + (list(final) if isinstance(final, tuple) else [final])


def _functional(module, config, n_states):
    """fn(x, *states, *parameters): the module with its parameters replaced by the given tensors."""
    names = [n for n, _ in module.named_parameters()]

    def fn(x, *rest):
        states, params = rest[:n_states], rest[n_states:]
        saved = dict(module._parameters)
        module._parameters.update(zip(names, params))
        try:
            return tuple(_call(module, config, x, list(states)))
        finally:
            module._parameters.update(saved)

    return fn


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_gradients_of_input_states_and_every_parameter_match_finite_differences(key):
    config = CONFIGS[key]
    module, x, states = _example(config)
    inputs = [Tensor(x, requires_grad=True)] + [Tensor(s, requires_grad=True) for s in states]
    inputs += [Tensor(p._data.copy(), requires_grad=True) for p in module.parameters()]
    assert autograd.gradcheck(_functional(module, config, len(states)), inputs, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("key", ["rnn_relu_2layers_states", "lstm_batch_first_proj", "gru", "lstm_packed_proj"])
def test_second_derivatives_through_the_fused_layers(key):
    config = CONFIGS[key]
    module, x, states = _example(config)
    inputs = [Tensor(x, requires_grad=True)] + [Tensor(s, requires_grad=True) for s in states]
    weight = next(iter(module.parameters()))
    inputs.append(Tensor(weight._data.copy(), requires_grad=True))
    fn = _functional(module, config, len(states))

    def partial(x, *rest):  # the other parameters held fixed, to keep the check small
        others = [p for p in list(module.parameters())[1:]]
        return fn(x, *rest, *others)

    assert autograd.gradgradcheck(partial, inputs, atol=1e-6, rtol=1e-4)


def test_create_graph_gives_the_same_first_derivatives():
    module, x, states = _example(CONFIGS["lstm_2layers_bidirectional_states"])
    inputs = [Tensor(x, requires_grad=True)] + [Tensor(s, requires_grad=True) for s in states]
    outputs = _call(module, CONFIGS["lstm_2layers_bidirectional_states"], inputs[0], inputs[1:])
    loss = sum((o * o).sum() for o in outputs)
    wrt = inputs + list(module.parameters())
    plain = autograd.grad(loss, wrt, retain_graph=True)
    recorded = autograd.grad(loss, wrt, create_graph=True)
    for a, b in zip(plain, recorded):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-12)
        assert b.requires_grad


def test_parameter_names_shapes_and_initial_range():
    lstm = nn.LSTM(4, 6, num_layers=2, bidirectional=True, proj_size=3)
    shapes = {name: tuple(p.shape) for name, p in lstm.named_parameters()}
    assert shapes["weight_ih_l0"] == (24, 4) and shapes["weight_hh_l0"] == (24, 3)
    assert shapes["weight_ih_l1_reverse"] == (24, 6) and shapes["weight_hr_l1_reverse"] == (3, 6)
    assert list(shapes)[:5] == ["weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0", "weight_hr_l0"]
    for p in lstm.parameters():
        assert np.abs(p.numpy()).max() <= 1 / np.sqrt(6) and p.dtype == np.float32
    gru = nn.GRU(4, 5, bias=False)
    assert [n for n, _ in gru.named_parameters()] == ["weight_ih_l0", "weight_hh_l0"]
    assert tuple(gru.weight_ih_l0.shape) == (15, 4)
    assert tuple(nn.LSTMCell(4, 5).weight_hh.shape) == (20, 5)


def test_unbatched_input_and_batch_first():
    lstm = nn.LSTM(INPUT, HIDDEN, batch_first=True).double()
    x = autograd.tensor(np.random.default_rng(0).standard_normal((STEPS, INPUT)))
    output, (h, c) = lstm(x)
    batched, (hb, cb) = lstm(x.unsqueeze(0))
    assert tuple(output.shape) == (STEPS, HIDDEN) and tuple(h.shape) == (1, HIDDEN)
    np.testing.assert_allclose(output.numpy(), batched.numpy()[0])
    np.testing.assert_allclose(c.numpy(), cb.numpy()[:, 0])


def test_dropout_between_layers_only_when_training():
    autograd.manual_seed(0)
    dropped = nn.GRU(INPUT, HIDDEN, num_layers=2, dropout=0.5).double()
    plain = nn.GRU(INPUT, HIDDEN, num_layers=2).double()
    plain.load_state_dict(dropped.state_dict())
    x = autograd.tensor(np.random.default_rng(0).standard_normal((STEPS, BATCH, INPUT)))
    dropped.eval()
    np.testing.assert_allclose(dropped(x)[0].numpy(), plain(x)[0].numpy())
    dropped.train()
    assert not np.allclose(dropped(x)[0].numpy(), plain(x)[0].numpy())
    with pytest.warns(UserWarning, match="num_layers greater than 1"):
        nn.LSTM(2, 3, dropout=0.2)


def test_errors_name_the_shapes():
    lstm = nn.LSTM(INPUT, HIDDEN)
    with pytest.raises(ValueError, match="LSTM: Expected input to be 2D or 3D, got 4D instead"):
        lstm(autograd.zeros(1, 2, 3, INPUT))
    with pytest.raises(RuntimeError, match="input.size\\(-1\\) must be equal to input_size. Expected 2, got 5"):
        lstm(autograd.zeros(STEPS, BATCH, 5))
    with pytest.raises(RuntimeError, match=r"Expected hidden\[0\] size \(1, 2, 3\), got \[2, 2, 3\]"):
        lstm(autograd.zeros(STEPS, BATCH, INPUT), (autograd.zeros(2, BATCH, HIDDEN), autograd.zeros(1, BATCH, HIDDEN)))
    with pytest.raises(RuntimeError, match=r"hx and cx should also be 3-D but got \(2-D, 3-D\)"):
        lstm(autograd.zeros(STEPS, BATCH, INPUT), (autograd.zeros(BATCH, HIDDEN), autograd.zeros(1, BATCH, HIDDEN)))
    gru = nn.GRU(INPUT, 20, batch_first=True)
    with pytest.raises(RuntimeError, match=r"Expected hidden size \(1, 3, 20\), got \[2, 3, 20\]"):
        gru(autograd.zeros(3, STEPS, INPUT), autograd.zeros(2, 3, 20))
    with pytest.raises(RuntimeError, match="For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"):
        gru(autograd.zeros(STEPS, INPUT), autograd.zeros(1, 1, 20))
    with pytest.raises(ValueError, match="does not match weight dtype"):
        gru(autograd.zeros(3, STEPS, INPUT, dtype=autograd.float64))
    with pytest.raises(ValueError, match="proj_size has to be smaller than hidden_size"):
        nn.LSTM(2, 3, proj_size=3)
    with pytest.raises(ValueError, match="GRUCell: Expected input to be 1D or 2D, got 3D instead"):
        nn.GRUCell(2, 3)(autograd.zeros(1, 1, 2))
    with pytest.raises(RuntimeError, match="hidden0 has inconsistent hidden_size: got 4, expected 3"):
        nn.RNNCell(2, 3)(autograd.zeros(1, 2), autograd.zeros(1, 4))


@pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
def test_cell_gradients_match_finite_differences(name):
    autograd.manual_seed(0)
    cell = getattr(nn, name)(INPUT, HIDDEN).double()
    rng = np.random.default_rng(1)
    n_states = 2 if name == "LSTMCell" else 1
    inputs = [Tensor(rng.standard_normal((BATCH, INPUT)), requires_grad=True)]
    inputs += [Tensor(rng.standard_normal((BATCH, HIDDEN)), requires_grad=True) for _ in range(n_states)]
    inputs += [Tensor(p._data.copy(), requires_grad=True) for p in cell.parameters()]
    names = [n for n, _ in cell.named_parameters()]

    def fn(x, *rest):
        saved = dict(cell._parameters)
        cell._parameters.update(zip(names, rest[n_states:]))
        try:
            states = rest[:n_states]
            return cell(x, tuple(states) if n_states == 2 else states[0])
        finally:
            cell._parameters.update(saved)

    assert autograd.gradcheck(fn, inputs, atol=1e-7, rtol=1e-5)


def test_pad_sequence_and_packing_round_trip():
    sequences = [autograd.tensor(np.arange(n * 2, dtype=np.float64).reshape(n, 2) + 1) for n in (2, 4, 1)]
    padded = pad_sequence(sequences, padding_value=-1.0)
    assert tuple(padded.shape) == (4, 3, 2) and padded.numpy()[3, 0, 0] == -1
    packed = pack_sequence(sequences, enforce_sorted=False)
    assert packed.batch_sizes.tolist() == [3, 2, 1, 1] and packed.sorted_indices.tolist() == [1, 0, 2]
    back, lengths = pad_packed_sequence(packed, batch_first=True, padding_value=-1.0)
    assert lengths.tolist() == [2, 4, 1] and lengths.dtype == np.int64
    np.testing.assert_array_equal(back.numpy(), padded.numpy().transpose(1, 0, 2))
    with pytest.raises(RuntimeError, match="must be sorted in decreasing order"):
        pack_sequence(sequences)


@pytest.mark.torch
class TestAgainstPyTorch:
    @pytest.mark.parametrize("key", sorted(CONFIGS))
    def test_outputs_final_states_and_gradients(self, key):
        import torch

        config = CONFIGS[key]
        name, options, with_states, lengths = config
        _, x, states = _example(config)
        torch.manual_seed(0)
        theirs = getattr(torch.nn, name)(INPUT, HIDDEN, **options).double()
        ours = getattr(nn, name)(INPUT, HIDDEN, **options).double()
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
        assert list(ours.state_dict()) == list(theirs.state_dict())

        ours_in = [autograd.tensor(a, requires_grad=True) for a in [x] + states]
        theirs_in = [torch.tensor(a, requires_grad=True) for a in [x] + states]
        ours_out = _call(ours, config, ours_in[0], ours_in[1:])
        bf = options.get("batch_first", False)
        t_x = theirs_in[0]
        if lengths is not None:
            t_x = torch.nn.utils.rnn.pack_padded_sequence(t_x, lengths, batch_first=bf, enforce_sorted=False)
        t_hx = None if not states else (tuple(theirs_in[1:]) if name == "LSTM" else theirs_in[1])
        t_output, t_final = theirs(t_x, t_hx)
        if lengths is not None:
            t_output = torch.nn.utils.rnn.pad_packed_sequence(t_output, batch_first=bf)[0]
        theirs_out = [t_output] + (list(t_final) if isinstance(t_final, tuple) else [t_final])

        weights = [np.random.default_rng(k).standard_normal(o.shape) for k, o in enumerate(ours_out)]
        for a, b in zip(ours_out, theirs_out):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=0, atol=1e-10)
        sum((o * autograd.tensor(w)).sum() for o, w in zip(ours_out, weights)).backward()
        sum((o * torch.tensor(w)).sum() for o, w in zip(theirs_out, weights)).backward()
        for a, b in zip(ours_in, theirs_in):
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=0, atol=1e-10)
        their_params = dict(theirs.named_parameters())
        for param_name, p in ours.named_parameters():
            np.testing.assert_allclose(p.grad.numpy(), their_params[param_name].grad.numpy(), rtol=0, atol=1e-10)

    @pytest.mark.parametrize("name", ["RNNCell", "LSTMCell", "GRUCell"])
    @pytest.mark.parametrize("batched", [True, False])
    def test_cells(self, name, batched):
        import torch

        theirs = getattr(torch.nn, name)(INPUT, HIDDEN).double()
        ours = getattr(nn, name)(INPUT, HIDDEN).double()
        ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
        rng = np.random.default_rng(0)
        lead = (BATCH,) if batched else ()
        x = rng.standard_normal(lead + (INPUT,))
        states = [rng.standard_normal(lead + (HIDDEN,)) for _ in range(2 if name == "LSTMCell" else 1)]
        o_in = [autograd.tensor(a, requires_grad=True) for a in [x] + states]
        t_in = [torch.tensor(a, requires_grad=True) for a in [x] + states]
        o_out = ours(o_in[0], tuple(o_in[1:]) if name == "LSTMCell" else o_in[1])
        t_out = theirs(t_in[0], tuple(t_in[1:]) if name == "LSTMCell" else t_in[1])
        o_out = list(o_out) if isinstance(o_out, tuple) else [o_out]
        t_out = list(t_out) if isinstance(t_out, tuple) else [t_out]
        for a, b in zip(o_out, t_out):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=0, atol=1e-10)
        sum((o * o).sum() for o in o_out).backward()
        sum((o * o).sum() for o in t_out).backward()
        for a, b in zip(o_in, t_in):
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=0, atol=1e-10)
        their_params = dict(theirs.named_parameters())
        for param_name, p in ours.named_parameters():
            np.testing.assert_allclose(p.grad.numpy(), their_params[param_name].grad.numpy(), rtol=0, atol=1e-10)
        # no state given: zeros
        np.testing.assert_allclose(np.asarray(ours(o_in[0].detach())[0].detach().numpy() if name == "LSTMCell"
                                              else ours(o_in[0].detach()).numpy()),
                                   (theirs(t_in[0].detach())[0] if name == "LSTMCell"
                                    else theirs(t_in[0].detach())).detach().numpy(), atol=1e-12)

    @pytest.mark.parametrize("batch_first", [False, True])
    @pytest.mark.parametrize("padding_side", ["right", "left"])
    def test_pad_sequence(self, batch_first, padding_side):
        import torch

        arrays = [np.random.default_rng(n).standard_normal((n, 2)) for n in (3, 1, 4)]
        ours_in = [autograd.tensor(a, requires_grad=True) for a in arrays]
        theirs_in = [torch.tensor(a, requires_grad=True) for a in arrays]
        ours = pad_sequence(ours_in, batch_first=batch_first, padding_value=0.5, padding_side=padding_side)
        theirs = torch.nn.utils.rnn.pad_sequence(theirs_in, batch_first=batch_first, padding_value=0.5,
                                                 padding_side=padding_side)
        np.testing.assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())
        weights = np.random.default_rng(9).standard_normal(ours.shape)
        (ours * autograd.tensor(weights)).sum().backward()
        (theirs * torch.tensor(weights)).sum().backward()
        for a, b in zip(ours_in, theirs_in):
            np.testing.assert_array_equal(a.grad.numpy(), b.grad.numpy())

    @pytest.mark.parametrize("enforce_sorted", [True, False])
    def test_pack_and_unpack(self, enforce_sorted):
        import torch

        lengths = [4, 2, 2, 1] if enforce_sorted else [2, 4, 1, 3]
        x = np.random.default_rng(0).standard_normal((len(lengths), 4, 3))
        ours = pack_padded_sequence(autograd.tensor(x), lengths, batch_first=True, enforce_sorted=enforce_sorted)
        theirs = torch.nn.utils.rnn.pack_padded_sequence(torch.tensor(x), lengths, batch_first=True,
                                                         enforce_sorted=enforce_sorted)
        np.testing.assert_array_equal(ours.data.numpy(), theirs.data.numpy())
        np.testing.assert_array_equal(ours.batch_sizes.numpy(), theirs.batch_sizes.numpy())
        for a, b in ((ours.sorted_indices, theirs.sorted_indices), (ours.unsorted_indices, theirs.unsorted_indices)):
            assert (a is None and b is None) or a.tolist() == b.tolist()
        o_pad, o_len = pad_packed_sequence(ours, batch_first=True, padding_value=-2.0, total_length=5)
        t_pad, t_len = torch.nn.utils.rnn.pad_packed_sequence(theirs, batch_first=True, padding_value=-2.0,
                                                              total_length=5)
        np.testing.assert_array_equal(o_pad.numpy(), t_pad.numpy())
        assert o_len.tolist() == t_len.tolist()


@pytest.mark.torch
def test_clip_grad_norm_matches_pytorch_and_keeps_the_dtype():
    import torch

    grads = [np.array([3.0, -4.0], dtype=np.float32), np.array([[12.0]], dtype=np.float32)]
    ours = [autograd.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    for p, q, g in zip(ours, theirs, grads):
        p.grad, q.grad = autograd.tensor(g), torch.tensor(g)
    total = nn.utils.clip_grad_norm_(ours, 2.0, foreach=True)
    expected = torch.nn.utils.clip_grad_norm_(theirs, 2.0, foreach=True)
    assert total.dtype == np.float32 and total.item() == pytest.approx(expected.item())
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-6)
    ours[0].grad = autograd.tensor([np.nan, 1.0])
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(ours, 1.0, error_if_nonfinite=True)


def test_flatten_parameters_and_flat_weights_as_in_pytorch():
    gru = nn.GRU(INPUT, HIDDEN, bidirectional=True)
    gru.flatten_parameters()  # PyTorch code calls it before forward; nothing to do here
    assert [tuple(w.shape) for w in gru._flat_weights][:2] == [(9, INPUT), (9, HIDDEN)]
    assert len(gru.all_weights) == 2 and gru.all_weights[1][0] is gru.weight_ih_l0_reverse


@pytest.mark.torch
def test_unpad_and_unpack_sequence_match_pytorch():
    import torch

    arrays = [np.random.default_rng(n).standard_normal((n, 2)) for n in (2, 5, 3)]
    packed = pack_sequence([autograd.tensor(a) for a in arrays], enforce_sorted=False)
    theirs = torch.nn.utils.rnn.pack_sequence([torch.tensor(a) for a in arrays], enforce_sorted=False)
    for ours, expected in zip(nn.utils.rnn.unpack_sequence(packed), torch.nn.utils.rnn.unpack_sequence(theirs)):
        np.testing.assert_array_equal(ours.numpy(), expected.numpy())
    padded = pad_sequence([autograd.tensor(a) for a in arrays], batch_first=True)
    pieces = nn.utils.rnn.unpad_sequence(padded, autograd.tensor([2, 5, 3]), batch_first=True)
    assert [tuple(p.shape) for p in pieces] == [(2, 2), (5, 2), (3, 2)]
    np.testing.assert_array_equal(pieces[2].numpy(), arrays[2])
