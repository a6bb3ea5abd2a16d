# ruff: noqa: N801, UP006, UP007, UP008, UP035, UP045  (the programs are kept as their authors wrote them; typing forms tested)
"""Fixes found by the sequence probe (tests/test_programs_probe27_sequence_*.py), each checked against literals and
NumPy always and against PyTorch where it is installed."""

import warnings

import numpy as np
import pytest

import autograd
import nn
from autograd import jit

from .pytorch_programs import run_both


def _quiet(program):
    """``program(m)`` with the warnings of TorchScript's API (deprecation, PyTorch's tracer) silenced."""
    def run(m):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return program(m)
    return run


# ----------------------------------------------------------------------------------------------
# TorchScript's legacy module API: a class written on torch.jit.ScriptModule is an nn.Module
# ----------------------------------------------------------------------------------------------


def custom_lstm(m):
    """PyTorch's benchmarks/fastrnns/custom_lstms.py: an LSTM cell and layer written on ScriptModule with
    ``@script_method``, checked against nn.LSTM given the same weights."""
    torch, nn = m.torch, m.nn
    from typing import List, Tuple

    Tensor = torch.Tensor
    torch.manual_seed(0)

    class LSTMCell(torch.jit.ScriptModule):
        def __init__(self, input_size, hidden_size):
            super(LSTMCell, self).__init__()
            self.input_size = input_size
            self.hidden_size = hidden_size
            self.weight_ih = nn.Parameter(torch.randn(4 * hidden_size, input_size))
            self.weight_hh = nn.Parameter(torch.randn(4 * hidden_size, hidden_size))
            self.bias_ih = nn.Parameter(torch.randn(4 * hidden_size))
            self.bias_hh = nn.Parameter(torch.randn(4 * hidden_size))

        @torch.jit.script_method
        def forward(self, input: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
            hx, cx = state
            gates = (torch.mm(input, self.weight_ih.t()) + self.bias_ih +
                     torch.mm(hx, self.weight_hh.t()) + self.bias_hh)
            ingate, forgetgate, cellgate, outgate = gates.chunk(4, 1)
            ingate = torch.sigmoid(ingate)
            forgetgate = torch.sigmoid(forgetgate)
            cellgate = torch.tanh(cellgate)
            outgate = torch.sigmoid(outgate)
            cy = (forgetgate * cx) + (ingate * cellgate)
            hy = outgate * torch.tanh(cy)
            return hy, (hy, cy)

    class LSTMLayer(torch.jit.ScriptModule):
        def __init__(self, cell, *cell_args):
            super(LSTMLayer, self).__init__()
            self.cell = cell(*cell_args)

        @torch.jit.script_method
        def forward(self, input: Tensor, state: Tuple[Tensor, Tensor]) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
            inputs = input.unbind(0)
            outputs = torch.jit.annotate(List[Tensor], [])
            for i in range(len(inputs)):
                out, state = self.cell(inputs[i], state)
                outputs += [out]
            return torch.stack(outputs), state

    inp = torch.randn(5, 2, 3)
    state = (torch.randn(2, 4), torch.randn(2, 4))
    rnn = LSTMLayer(LSTMCell, 3, 4)
    out, (h, c) = rnn(inp, state)
    lstm = nn.LSTM(3, 4, 1)
    for lstm_param, custom_param in zip(lstm.all_weights[0], rnn.parameters()):
        assert lstm_param.shape == custom_param.shape
        with torch.no_grad():
            lstm_param.copy_(custom_param)
    lstm_out, (lstm_h, lstm_c) = lstm(inp, (state[0].unsqueeze(0), state[1].unsqueeze(0)))
    out.pow(2).sum().backward()
    kinds = (isinstance(rnn, torch.jit.ScriptModule), isinstance(rnn, nn.Module),
             isinstance(rnn.cell, torch.jit.ScriptModule), isinstance(lstm, torch.jit.ScriptModule),
             issubclass(LSTMCell, torch.jit.ScriptModule), issubclass(nn.LSTM, torch.jit.ScriptModule))
    names = [name for name, _ in rnn.named_parameters()]
    return out, h, c, lstm_out, lstm_h, lstm_c, [p.grad for p in rnn.parameters()], kinds, names


def test_script_module_subclass_is_an_nn_module():
    (out, h, c, lstm_out, lstm_h, lstm_c, grads, kinds, names), _ = run_both(_quiet(custom_lstm), rtol=1e-5,
                                                                            atol=1e-6)
    np.testing.assert_allclose(out, lstm_out, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, lstm_h[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c, lstm_c[0], rtol=1e-5, atol=1e-6)
    assert kinds == (True, True, True, False, True, False)
    assert names == ["cell.weight_ih", "cell.weight_hh", "cell.bias_ih", "cell.bias_hh"]
    assert all(np.isfinite(g).all() and g.any() for g in grads)


def greedy_search_decoder(m):
    """The chatbot tutorial's (its TorchScript version's) GreedySearchDecoder, written on ScriptModule with
    ``__constants__``, decoding a GRU encoder-decoder."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)
    SOS_token, hidden_size, voc = 1, 6, 9

    class EncoderRNN(nn.Module):
        def __init__(self, hidden_size, embedding, n_layers=1):
            super(EncoderRNN, self).__init__()
            self.n_layers = n_layers
            self.hidden_size = hidden_size
            self.embedding = embedding
            self.gru = nn.GRU(hidden_size, hidden_size, n_layers, bidirectional=True)

        def forward(self, input_seq, input_lengths, hidden=None):
            embedded = self.embedding(input_seq)
            packed = nn.utils.rnn.pack_padded_sequence(embedded, input_lengths)
            outputs, hidden = self.gru(packed, hidden)
            outputs, _ = nn.utils.rnn.pad_packed_sequence(outputs)
            outputs = outputs[:, :, :self.hidden_size] + outputs[:, :, self.hidden_size:]
            return outputs, hidden

    class LuongAttnDecoderRNN(nn.Module):
        def __init__(self, embedding, hidden_size, output_size, n_layers=1):
            super(LuongAttnDecoderRNN, self).__init__()
            self.n_layers = n_layers
            self.embedding = embedding
            self.gru = nn.GRU(hidden_size, hidden_size, n_layers)
            self.concat = nn.Linear(hidden_size * 2, hidden_size)
            self.out = nn.Linear(hidden_size, output_size)

        def forward(self, input_step, last_hidden, encoder_outputs):
            embedded = self.embedding(input_step)
            rnn_output, hidden = self.gru(embedded, last_hidden)
            attn_energies = torch.sum(rnn_output * encoder_outputs, dim=2).t()
            attn_weights = F.softmax(attn_energies, dim=1).unsqueeze(1)
            context = attn_weights.bmm(encoder_outputs.transpose(0, 1))
            concat_input = torch.cat((rnn_output.squeeze(0), context.squeeze(1)), 1)
            concat_output = torch.tanh(self.concat(concat_input))
            output = F.softmax(self.out(concat_output), dim=1)
            return output, hidden

    class GreedySearchDecoder(torch.jit.ScriptModule):
        def __init__(self, encoder, decoder, decoder_n_layers):
            super(GreedySearchDecoder, self).__init__()
            self.encoder = encoder
            self.decoder = decoder
            self._device = "cpu"
            self._SOS_token = SOS_token
            self._decoder_n_layers = decoder_n_layers

        __constants__ = ['_device', '_SOS_token', '_decoder_n_layers']

        @torch.jit.script_method
        def forward(self, input_seq: torch.Tensor, input_length: torch.Tensor, max_length: int):
            encoder_outputs, encoder_hidden = self.encoder(input_seq, input_length)
            decoder_hidden = encoder_hidden[:self._decoder_n_layers]
            decoder_input = torch.ones(1, 1, device=self._device, dtype=torch.long) * self._SOS_token
            all_tokens = torch.zeros([0], device=self._device, dtype=torch.long)
            all_scores = torch.zeros([0], device=self._device)
            for _ in range(max_length):
                decoder_output, decoder_hidden = self.decoder(decoder_input, decoder_hidden, encoder_outputs)
                decoder_scores, decoder_input = torch.max(decoder_output, dim=1)
                all_tokens = torch.cat((all_tokens, decoder_input), dim=0)
                all_scores = torch.cat((all_scores, decoder_scores), dim=0)
                decoder_input = torch.unsqueeze(decoder_input, 0)
            return all_tokens, all_scores

    embedding = nn.Embedding(voc, hidden_size)
    encoder = EncoderRNN(hidden_size, embedding, 2)
    decoder = LuongAttnDecoderRNN(embedding, hidden_size, voc, 2)
    encoder.eval()
    decoder.eval()
    input_seq, lengths = torch.tensor([[3], [5], [7], [2]]), torch.tensor([4])
    traced_encoder = torch.jit.trace(encoder, (input_seq, lengths))  # as the tutorial: trace the layers
    encoder_outputs, encoder_hidden = encoder(input_seq, lengths)
    traced_decoder = torch.jit.trace(decoder, (torch.ones(1, 1, dtype=torch.long), encoder_hidden[:2],
                                               encoder_outputs))
    searcher = GreedySearchDecoder(traced_encoder, traced_decoder, 2)
    with torch.no_grad():
        tokens, scores = searcher(input_seq, lengths, 5)
    return tokens, scores, searcher._SOS_token, isinstance(searcher, torch.jit.ScriptModule)


def test_greedy_search_decoder_written_on_script_module():
    (tokens, scores, sos, scripted), _ = run_both(_quiet(greedy_search_decoder))
    assert tokens.shape == (5,) and str(tokens.dtype) == "int64" and sos == 1 and scripted
    assert ((scores > 0) & (scores <= 1)).all()  # each step's largest softmax probability
    assert (scores >= 1 / 9).all()


def test_script_module_is_not_constructed_nor_an_ordinary_module():
    assert not isinstance(nn.Linear(2, 2), jit.ScriptModule)
    assert not issubclass(nn.Module, jit.ScriptModule) and issubclass(jit.ScriptModule, jit.ScriptModule)
    with pytest.raises(TypeError, match="no TorchScript here"):
        jit.ScriptModule()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)

        class Scaled(jit.ScriptModule):
            def __init__(self):
                super().__init__()
                self.scale = nn.Parameter(autograd.tensor([2.0]))

            @jit.script_method
            def forward(self, x):
                return x * self.scale

    class Shifted(Scaled):  # a subclass of one is one too
        def forward(self, x):
            return super().forward(x) + 1

    model = Shifted()
    y = model(autograd.tensor([1.0, 3.0]))
    y.sum().backward()
    np.testing.assert_array_equal(y.detach().numpy(), [3.0, 7.0])
    np.testing.assert_array_equal(model.scale.grad.numpy(), [4.0])
    assert isinstance(model, jit.ScriptModule) and isinstance(model, nn.Module)
    assert list(model.state_dict()) == ["scale"] and "Shifted()" == repr(model)


# ----------------------------------------------------------------------------------------------
# nn.Transformer._reset_parameters: PyTorch's re-initialisation, which programs call
# ----------------------------------------------------------------------------------------------


def transformer_reset(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    model = nn.Transformer(d_model=8, nhead=2, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=16)
    first = [p.detach().clone() for p in model.parameters()]
    torch.manual_seed(0)
    model._reset_parameters()
    again = [p.detach().clone() for p in model.parameters()]
    model._reset_parameters()
    return first, again, [p.detach() for p in model.parameters()]


def test_transformer_reset_parameters():
    (first, again, third), _ = run_both(_quiet(transformer_reset))
    matrices = [i for i, p in enumerate(first) if p.ndim > 1]
    assert len(matrices) == 10  # 4 in the encoder layer, 6 in the decoder layer
    for i, (a, b, c) in enumerate(zip(first, again, third)):
        if i in matrices:  # drawn anew: a Glorot-uniform bound, and the second draw differs from the first
            bound = np.sqrt(6 / (a.shape[0] + a.shape[1])) if a.ndim == 2 else None
            assert bound is None or np.abs(b).max() <= bound
            assert not np.array_equal(b, c)
        else:  # vectors (biases, norms) are left alone
            np.testing.assert_array_equal(b, a)
            np.testing.assert_array_equal(c, a)


# ----------------------------------------------------------------------------------------------
# unpad_sequence / unpack_sequence give copies, as PyTorch's (boolean-mask indexing), not views of the batch
# ----------------------------------------------------------------------------------------------


def unpadded_pieces(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    x = torch.randn(4, 3, 2, requires_grad=True)
    padded = x * 1
    pieces = nn.utils.rnn.unpad_sequence(padded, torch.tensor([4, 1, 3]))  # (leaves padded batch-first)
    (pieces[0].sum() + 2 * pieces[1].sum() + 3 * pieces[2].pow(2).sum()).backward()
    with torch.no_grad():
        before = padded.clone()
        for piece in pieces:
            piece.fill_(7.0)
    packed = nn.utils.rnn.pack_sequence([torch.arange(3.0), torch.arange(1.0)], enforce_sorted=False)
    unpacked = nn.utils.rnn.unpack_sequence(packed)
    unpacked[0].fill_(-1.0)
    return x, x.grad, before, padded, pieces, packed.data, unpacked, tuple(padded.shape)


def test_unpad_sequence_gives_copies():
    (x, grad, before, padded, pieces, packed_data, unpacked, shape), _ = run_both(unpadded_pieces)
    np.testing.assert_array_equal(padded, before)  # writing to the pieces left the batch alone
    assert shape == (3, 4, 2)  # transposed in place to batch-first, as PyTorch's
    assert [p.shape for p in pieces] == [(4, 2), (1, 2), (3, 2)] and all((p == 7).all() for p in pieces)
    expected = np.zeros_like(x)
    expected[:, 0] = 1
    expected[0, 1] = 2
    expected[:3, 2] = 6 * x[:3, 2]
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    np.testing.assert_array_equal(packed_data, [0.0, 0.0, 1.0, 2.0])
    assert unpacked[0].tolist() == [-1.0] * 3 and unpacked[1].tolist() == [0.0]


# ----------------------------------------------------------------------------------------------
# pad_sequence gives the first sequence's dtype (PyTorch copies each into a tensor made like the first)
# ----------------------------------------------------------------------------------------------


def mixed_dtype_padding(m):
    torch, nn = m.torch, m.nn
    ints = nn.utils.rnn.pad_sequence([torch.tensor([1, 2]), torch.tensor([3.7])], padding_value=-1)
    a = torch.tensor([1.5, 2.0], requires_grad=True)
    b = torch.tensor([0.25], dtype=torch.float64, requires_grad=True)
    floats = nn.utils.rnn.pad_sequence([a, b], batch_first=True, padding_side="left")
    (floats * torch.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    wide = nn.utils.rnn.pad_sequence([b.detach(), a.detach()])
    names = [str(t.dtype).rpartition(".")[2] for t in (ints, floats, wide, a.grad, b.grad)]
    return ints, floats, wide, a.grad, b.grad, names


def test_pad_sequence_keeps_the_first_dtype():
    (ints, floats, wide, grad_a, grad_b, names), _ = run_both(mixed_dtype_padding)
    assert names == ["int64", "float32", "float64", "float32", "float64"]
    np.testing.assert_array_equal(ints, [[1, 3], [2, -1]])  # 3.7 cast to the first's int64, as PyTorch
    np.testing.assert_array_equal(floats, [[1.5, 2.0], [0.0, 0.25]])
    np.testing.assert_array_equal(wide, [[0.25, 1.5], [0.0, 2.0]])
    np.testing.assert_array_equal(grad_a, [1.0, 2.0])
    np.testing.assert_array_equal(grad_b, [4.0])


# ----------------------------------------------------------------------------------------------
# jit.isinstance: TorchScript's container type refinement, as PyTorch checks it in eager mode
# ----------------------------------------------------------------------------------------------


def _refinements(torch):
    from typing import Dict, List, Optional, Tuple, Union

    T = torch.Tensor
    cases = [([1, 2], List[int]), ([1, "a"], List[int]), ({"a": torch.ones(1)}, Dict[str, T]),
             ({"a": 1}, Dict[str, T]), ((1, 2.0), Tuple[int, float]), ((1, 2.0, 3), Tuple[int, float]),
             (None, Optional[int]), ([[1], [2, 3]], List[List[int]]), ([[1], ["x"]], List[List[int]]),
             ({"k": [torch.ones(1)]}, Dict[str, List[T]]), ((1, "s"), Optional[Tuple[int, str]]),
             (3, Optional[Tuple[int, str]]), (torch.ones(1), T), (3, (str, int)), (3.0, Union[int, str]),
             ([1], list[int]), (None, int | None), ([], List[int])]
    results = []
    for obj, target_type in cases:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            results.append((torch.jit.isinstance(obj, target_type), len(caught)))
    errors = []
    for target_type in (List, Dict, [int]):
        with pytest.raises(RuntimeError) as error:
            torch.jit.isinstance(1, target_type)
        errors.append(str(error.value))
    return results, errors


def test_jit_isinstance_refines_containers():
    results, errors = _refinements(autograd)
    assert results == [(True, 0), (False, 0), (True, 0), (False, 0), (True, 0), (False, 0), (True, 0), (True, 0),
                       (False, 0), (True, 0), (True, 0), (False, 0), (True, 0), (True, 0), (False, 0), (True, 0),
                       (True, 0), (True, 1)]  # an empty list matches List[int], with a warning
    assert errors == ["Attempted to use List without a contained type. Please add a contained type, e.g. List[int]",
                      "Attempted to use Dict without contained types. Please add contained type, e.g. Dict[int, int]",
                      "The second argument to `torch.jit.isinstance` must be a type or a tuple of types"]
    assert jit.isinstance is autograd.jit.isinstance and "isinstance" in jit.__all__
    try:
        import torch
    except ModuleNotFoundError:
        return
    assert _refinements(torch) == (results, errors)
