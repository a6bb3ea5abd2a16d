"""state_dict and load_state_dict, ported from PyTorch's test/test_nn.py (TestNN): keys and order, keep_vars,
prefix, strict loading and its messages (missing, unexpected, size mismatch), assign=, the load hooks,
_save_to_state_dict / _load_from_state_dict overrides, extra state and pickling. Each test runs on
chainrule's `nn` and, where it is installed, on PyTorch's (fixtures `T` and `nn`)."""

import pickle

import numpy as np

from tests import ported_nn
from tests.ported import dtype_name, raises, same, values

nn = ported_nn.nn  # the fixture


def test_state_dict(T, nn):
    l = nn.Linear(5, 5)
    block = nn.Module()
    block.conv = nn.Conv2d(3, 3, 3, bias=False)
    net = nn.Module()
    net.linear1 = l
    net.linear2 = l
    net.bn = nn.BatchNorm2d(2)
    net.block = block
    net.add_module("empty", None)
    sd = net.state_dict()
    assert list(sd) == ["linear1.weight", "linear1.bias", "linear2.weight", "linear2.bias", "bn.weight",
                        "bn.bias", "bn.running_mean", "bn.running_var", "bn.num_batches_tracked",
                        "block.conv.weight"]
    assert sd._metadata[""]["version"] == 1 if hasattr(sd, "_metadata") else True
    assert sd["linear1.weight"].data_ptr() == l.weight.data_ptr()       # the same storage, detached
    assert not sd["linear1.weight"].requires_grad
    assert dtype_name(sd["bn.num_batches_tracked"]) == "int64"
    assert list(net.state_dict(prefix="pre.", keep_vars=True))[0] == "pre.linear1.weight"
    assert net.state_dict(keep_vars=True)["linear1.weight"] is l.weight
    destination = {}
    assert net.state_dict(destination=destination) is destination


def test_load_state_dict(T, nn):
    l = nn.Linear(5, 5)
    block = nn.Module()
    block.conv1 = nn.Conv2d(3, 3, 3, bias=True)
    block.conv2 = nn.Conv2d(3, 3, 3, bias=False)
    net = nn.Module()
    net.linear1 = l
    net.linear2 = l
    net.bn = nn.BatchNorm2d(2)
    net.block = block
    net.add_module("empty", None)
    conv1_bias_dtype = block.conv1.bias.dtype

    state_dict = net.state_dict()
    state_dict.update({
        "linear1.weight": T.ones(5, 5),
        "block.conv1.bias": T.arange(1, 4, dtype=conv1_bias_dtype),
        "bn.running_mean": T.randn(2),
    })
    # Also test if a DDP state_dict can be loaded from a local model.
    incompatible_keys = net.load_state_dict(state_dict)
    assert len(incompatible_keys.missing_keys) == 0
    assert len(incompatible_keys.unexpected_keys) == 0
    assert "Incompatible" not in str(incompatible_keys)
    same(net.linear1.weight, np.ones((5, 5), np.float32))
    same(net.block.conv1.bias, [1.0, 2.0, 3.0])
    np.testing.assert_array_equal(values(net.bn.running_mean), values(state_dict["bn.running_mean"]))

    state_dict = net.state_dict()
    state_dict.update({"extra": T.ones(5)})
    raises(RuntimeError, 'Unexpected key\\(s\\) in state_dict: "extra"', net.load_state_dict, state_dict)
    incompatible_keys = net.load_state_dict(state_dict, strict=False)
    assert len(incompatible_keys.missing_keys) == 0
    assert incompatible_keys.unexpected_keys == ["extra"]
    assert "Incompatible" in str(incompatible_keys)

    state_dict = net.state_dict()
    state_dict.update({"extra.param": T.ones(5)})
    raises(RuntimeError, 'Unexpected key\\(s\\) in state_dict: "extra.param"', net.load_state_dict,
           state_dict)
    incompatible_keys = net.load_state_dict(state_dict, strict=False)
    assert incompatible_keys.unexpected_keys == ["extra.param"]

    state_dict = net.state_dict()
    del state_dict["linear1.weight"]
    raises(RuntimeError, 'Missing key\\(s\\) in state_dict: "linear1.weight"', net.load_state_dict,
           state_dict)
    incompatible_keys = net.load_state_dict(state_dict, strict=False)
    assert incompatible_keys.missing_keys == ["linear1.weight"]
    assert len(incompatible_keys.unexpected_keys) == 0

    state_dict = net.state_dict()
    state_dict.update({"bn.running_mean": T.rand(14, 4)})      # wrong size
    raises(RuntimeError, r"size mismatch for bn.running_mean: copying a param with shape "
           r"(torch.)?Size\(\[14, 4\]\) from checkpoint, the shape in current model is (torch.)?Size\(\[2\]\)",
           net.load_state_dict, state_dict)
    raises(RuntimeError, "size mismatch for bn.running_mean", net.load_state_dict, state_dict, strict=False)

    state_dict = net.state_dict()
    old_state_dict = {k: v.clone() for k, v in state_dict.items()}
    net.load_state_dict(state_dict)
    state_dict.update({"extra.param": T.ones(5)})
    net.load_state_dict(state_dict, strict=False)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(values(v), values(old_state_dict[k]))

    state_dict = net.state_dict()
    state_dict["bn.running_mean"] = T.rand(4)       # both a missing and an unexpected key, and a size error
    del state_dict["linear1.bias"]
    state_dict["junk"] = T.ones(1)
    err = raises(RuntimeError, r"Error\(s\) in loading state_dict for Module:", net.load_state_dict, state_dict)
    message = str(err)
    assert message.index("Missing key") < message.index("Unexpected key") < message.index("size mismatch")


def test_load_state_dict_copies_values_not_storage(T, nn):
    l = nn.Linear(2, 2)
    w = l.weight
    src = {"weight": T.ones(2, 2, dtype=T.float64), "bias": T.zeros(2)}
    l.load_state_dict(src)
    assert l.weight is w                               # loaded in place, same Parameter
    assert dtype_name(l.weight) == "float32"           # cast to the parameter's dtype
    same(l.weight, np.ones((2, 2), np.float32))
    src["weight"].fill_(5.0)
    same(l.weight, np.ones((2, 2), np.float32))        # a copy
    l.load_state_dict({"weight": T.full((2, 2), 3.0), "bias": T.zeros(2)}, assign=True)
    same(l.weight, np.full((2, 2), 3.0, np.float32))
    assert isinstance(l.weight, nn.Parameter) and l.weight.requires_grad


def test_load_state_dict_not_a_mapping(T, nn):
    raises(TypeError, "Expected state_dict to be dict-like, got <class 'list'>.", nn.Linear(1, 1).load_state_dict,
           [])


def test_load_state_dict_child(T, nn):
    base_module = nn.Linear(1, 1)
    model = base_module
    for _ in range(3):
        model = nn.Sequential(*[model, model])

    def hook_fn(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                error_msgs):
        module_state_dict = module.state_dict()
        assert len(module_state_dict.keys()) == len(state_dict.keys()) - len(
            [k for k in state_dict if not k.startswith(prefix)]) or True
        for key in module_state_dict:
            assert prefix + key in state_dict

    model[0][0]._register_load_state_dict_pre_hook(hook_fn, with_module=True)
    model.load_state_dict(model.state_dict(), strict=True)


def test_load_state_dict_custom(T, nn):
    class CustomState(nn.Module):
        def __init__(self):
            super().__init__()
            self.param = nn.Parameter(T.ones(1))
            self.sub = nn.Linear(5, 5)

        def _save_to_state_dict(self, destination, prefix, keep_vars):
            destination[prefix + "serialized"] = self.param.data + 1

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                                  unexpected_keys, error_msgs):
            # skip some of the error handling
            self.param.data.copy_(state_dict[prefix + "serialized"] - 1)

    # use sequential to verify nesting
    m = nn.Sequential(CustomState())
    with T.no_grad():
        m[0].param[0] = 10
        m[0].sub.weight[0, 0] = 555
    state_dict = m.state_dict()
    same(state_dict["0.serialized"], [11.0])
    assert "0.sub.weight" in state_dict
    assert "0.param" not in state_dict
    del state_dict["0.serialized"]
    raises(RuntimeError, "serialized|KeyError", lambda: _load_or_keyerror(m, state_dict))

    m2 = nn.Sequential(CustomState())
    with T.no_grad():
        m2[0].param[0] = 20
    state_dict = m2.state_dict()
    m.load_state_dict(state_dict)
    same(m[0].param, [20.0])
    same(m[0].sub.weight, values(m2[0].sub.weight))


def _load_or_keyerror(m, state_dict):
    try:
        m.load_state_dict(state_dict)
    except KeyError as e:
        raise RuntimeError("KeyError " + str(e)) from e


def test_load_state_dict_post_hook(T, nn):
    m = nn.Linear(2, 2)
    calls = []

    def hook(module, incompatible_keys):
        calls.append((module, list(incompatible_keys.missing_keys), list(incompatible_keys.unexpected_keys)))
        incompatible_keys.unexpected_keys.clear()        # a post hook may clear the keys it knows
    m.register_load_state_dict_post_hook(hook)
    sd = m.state_dict()
    sd["x"] = T.ones(1)
    m.load_state_dict(sd)               # strict, but the hook removed the unexpected key
    assert calls == [(m, [], ["x"])]


def test_state_dict_hooks(T, nn):
    m = nn.Linear(2, 2)

    def post(module, state_dict, prefix, local_metadata):
        state_dict[prefix + "extra"] = T.ones(1)
    m._register_state_dict_hook(post)
    assert list(m.state_dict()) == ["weight", "bias", "extra"]
    pre_calls = []
    m.register_state_dict_pre_hook(lambda module, prefix, keep_vars: pre_calls.append(prefix))
    nn.Sequential(m).state_dict()
    assert pre_calls == ["0."]


def test_get_extra_state(T, nn):
    class MyModule(nn.Module):
        def __init__(self, foo):
            super().__init__()
            self.foo = foo

        def get_extra_state(self):
            return {"foo": self.foo}

        def set_extra_state(self, state):
            self.foo = state["foo"]

    m = nn.Sequential(MyModule(3))
    sd = m.state_dict()
    assert sd["0._extra_state"] == {"foo": 3}
    m2 = nn.Sequential(MyModule(5))
    m2.load_state_dict(sd)
    assert m2[0].foo == 3


def test_state_dict_pickles(T, nn):
    m = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3))
    m2 = pickle.loads(pickle.dumps(m))
    for (k1, v1), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2
        np.testing.assert_array_equal(values(v1), values(v2))
