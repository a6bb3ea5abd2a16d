"""Focused checks of the fixes that the classic NLP programs (tests/test_programs_probe16_nlp2_*.py) found: a
PackedSequence built from its sorted indices derives the inverse, dropout between the layers of a packed RNN draws
over the packed rows, a legacy ``new`` of a tensor is an alias, writes into a module's registries are what it
computes with, copying a tensor by a constructor warns in PyTorch's words."""

import copy
import pickle

import numpy as np
import pytest

from .pytorch_programs import OURS

# ----------------------------------------------------------------------------------------------
# focused checks of the fixes the programs above found
# ----------------------------------------------------------------------------------------------


def nn_of(T):
    return OURS.nn if T.__name__ == "autograd" else T.nn


def test_packed_sequence_built_from_its_sorted_indices_derives_the_inverse(T):
    # PackedSequence(embedding(packed.data), packed.batch_sizes, packed.sorted_indices): padding it back must
    # restore the caller's order (it came back sorted by length when the inverse stayed None)
    rnn_utils = nn_of(T).utils.rnn
    packed = rnn_utils.pack_sequence([T.tensor([3, 1, 2]), T.tensor([4]), T.tensor([5, 6])], enforce_sorted=False)
    rebuilt = rnn_utils.PackedSequence(packed.data * 10, packed.batch_sizes, packed.sorted_indices)
    assert rebuilt.unsorted_indices.tolist() == [0, 2, 1]
    padded, lengths = rnn_utils.pad_packed_sequence(rebuilt, batch_first=True)
    assert padded.tolist() == [[30, 10, 20], [40, 0, 0], [50, 60, 0]] and lengths.tolist() == [3, 1, 2]
    # the older form, a (data, batch_sizes) pair, and no permutation at all
    pair = rnn_utils.PackedSequence((packed.data, packed.batch_sizes), sorted_indices=packed.sorted_indices)
    assert pair.batch_sizes.tolist() == [3, 2, 1] and pair.unsorted_indices.tolist() == [0, 2, 1]
    bare = rnn_utils.PackedSequence(packed.data, packed.batch_sizes)
    assert bare.sorted_indices is None and bare.unsorted_indices is None
    assert type(bare._replace(data=bare.data + 1)) is rnn_utils.PackedSequence


@pytest.mark.parametrize("mode", ["GRU", "LSTM"])
def test_dropout_between_layers_of_a_packed_rnn_draws_over_the_packed_rows(T, mode):
    # PyTorch drops the packed data (one draw per real step, in packed order), not a padded (T, B, H) layout:
    # the same seed gives the same masks as dropping the first layer's packed output by hand
    nn = nn_of(T)
    T.manual_seed(0)
    two = getattr(nn, mode)(3, 4, num_layers=2, dropout=0.5)
    first, second = getattr(nn, mode)(3, 4), getattr(nn, mode)(4, 4)
    with T.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(first, name + "_l0").copy_(getattr(two, name + "_l0"))
            getattr(second, name + "_l0").copy_(getattr(two, name + "_l1"))
    x = T.tensor(np.random.default_rng(0).standard_normal((5, 3, 3)).astype(np.float32))
    packed = nn.utils.rnn.pack_padded_sequence(x, [2, 5, 3], enforce_sorted=False)
    T.manual_seed(7)
    output = two(packed)[0]
    hidden = first(packed)[0]
    T.manual_seed(7)
    dropped = hidden._replace(data=nn.functional.dropout(hidden.data, 0.5))
    np.testing.assert_allclose(output.data.detach().numpy(), second(dropped)[0].data.detach().numpy(), rtol=1e-6,
                               atol=1e-6)


def test_legacy_new_of_a_tensor_is_an_alias(T):
    # fairseq's GradMultiply returns ``x.new(x)``: PyTorch's legacy constructor given a tensor aliases it (the
    # same storage, and in the graph as an alias), it does not copy
    x = T.ones(2, 3, requires_grad=True) * 2
    y = x.new(x)
    y.detach()[0, 0] = 5.0
    assert x[0, 0].item() == 5.0
    assert y.requires_grad and y.grad_fn is not None


def test_writes_into_a_modules_registries_are_what_it_computes_with(T):
    # learn2learn and higher write module._parameters directly; AWD-LSTM deletes from it; ModuleDict's del
    nn = nn_of(T)
    linear = nn.Linear(2, 1)
    with T.no_grad():
        linear.weight.fill_(1.0)
        linear.bias.fill_(0.0)
    linear._parameters["weight"] = linear.weight * 3
    assert linear(T.ones(1, 2)).item() == 6.0 and linear.weight.grad_fn is not None
    lstm = nn.LSTM(2, 3)
    del lstm._parameters["weight_hh_l0"]
    assert not hasattr(lstm, "weight_hh_l0")
    modules = nn.ModuleDict({"a": nn.ReLU(), "b": nn.Tanh()})
    del modules["a"]
    assert not hasattr(modules, "a")
    norm = nn.BatchNorm1d(2)
    norm._buffers["extra"] = T.ones(1)
    assert "extra" in norm.state_dict() and norm.extra.tolist() == [1.0]
    norm._buffers.pop("extra")
    assert "extra" not in norm.state_dict() and not hasattr(norm, "extra")
    # a registry replaced by a copy (learn2learn's clone_module) still decides what the module computes with
    clone = linear.__new__(type(linear))
    clone.__dict__ = linear.__dict__.copy()
    clone._parameters = clone._parameters.copy()
    clone._parameters["bias"] = T.full((1,), 10.0)
    assert clone(T.ones(1, 2)).item() == 16.0 and linear(T.ones(1, 2)).item() == 6.0
    # and so does one that came through pickling and deepcopy
    again = copy.deepcopy(nn.Linear(2, 1))
    again._parameters["weight"] = nn.Parameter(T.ones(1, 2))
    again._parameters["bias"] = nn.Parameter(T.full((1,), -2.0))
    assert again(T.ones(1, 2)).item() == 0.0
    restored = pickle.loads(pickle.dumps(nn.Linear(2, 1)))
    restored._parameters["weight"] = nn.Parameter(T.zeros(1, 2))
    restored._parameters["bias"] = nn.Parameter(T.ones(1))
    assert restored(T.ones(1, 2)).item() == 1.0


def test_copying_a_tensor_by_a_constructor_warns_in_pytorchs_words(T):
    """torch.tensor(t) and t.new_tensor(t) each name themselves in the advice to use detach().clone()."""
    import warnings

    for make, call in ((lambda t: T.tensor(t), "torch.tensor(sourceTensor)"),
                       (lambda t: t.new_tensor(t), "tensor.new_tensor(sourceTensor)")):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            copy = make(T.ones(2))
        assert [str(w.message).endswith(f"rather than {call}.") for w in caught] == [True]
        assert copy.tolist() == [1.0, 1.0]
