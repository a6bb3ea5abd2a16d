"""``load_state_dict`` into a module made on the meta device: copying is a no-op, which PyTorch warns about (naming
``assign=True``), and ``assign=True`` makes the checkpoint's tensors the module's."""

import importlib
import warnings

import numpy as np


def nn_of(T):
    return importlib.import_module("nn") if T.__name__ == "autograd" else T.nn


def test_copying_into_meta_parameters_warns_once_per_tensor(T):
    nn = nn_of(T)
    state_dict = nn.Linear(2, 3).state_dict()
    with T.device("meta"):
        skeleton = nn.Linear(2, 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = skeleton.load_state_dict(state_dict)
    messages = [str(w.message) for w in caught]
    assert result.missing_keys == [] and skeleton.weight.is_meta
    assert len(messages) == 2 and messages[0].startswith(
        "for weight: copying from a non-meta parameter in the checkpoint to a meta parameter in the current model, "
        "which is a no-op. (Did you mean to pass `assign=True`")
    assert messages[1].startswith("for bias: ")


def test_assign_or_meta_checkpoints_do_not_warn(T):
    nn = nn_of(T)
    state_dict = nn.Linear(2, 3).state_dict()
    with T.device("meta"):
        skeleton, meta_state = nn.Linear(2, 3), nn.Linear(2, 3).state_dict()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        skeleton.load_state_dict(meta_state)  # meta into meta: nothing is lost
        skeleton.load_state_dict(state_dict, assign=True)
        nn.Linear(2, 3).load_state_dict(state_dict)
    assert not skeleton.weight.is_meta
    np.testing.assert_array_equal(skeleton.bias.detach().numpy(), state_dict["bias"].numpy())
