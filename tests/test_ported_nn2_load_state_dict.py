"""load_state_dict, ported from PyTorch's test/nn/test_load_state_dict.py (TestLoadStateDict; the cases that
test_nn.py shares are in tests/test_ported_nn_state_dict.py): values that are not tensors, a DDP checkpoint
with its "module." prefix consumed, strict=False loading what matches and leaving the rest, BatchNorm's
num_batches_tracked from an old version, load pre-hooks on deep copies, a pickled module without its hook
registries, no reference cycle, assign=True (the checkpoint's tensors become the module's, requires_grad,
order, outputs, an optimizer built afterwards, strides and size mismatches) and unexpected keys under a
valid prefix. The meta-device and tensor-subclass (swap) cases have no counterpart here. Each test runs on
chainrule's `nn` and, where it is installed, on PyTorch's."""

import copy
import gc
import pickle
from collections import OrderedDict

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values, xfail_ours

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def optim_of(T):
    if T.__name__ == "autograd":
        import optim

        return optim
    return T.optim


def consume_prefix(nn):
    return nn.modules.utils.consume_prefix_in_state_dict_if_present


@xfail_ours("chainrule's load_state_dict deliberately reads NumPy arrays and nested sequences as tensors "
            "(ModuleState.load_state_dict; tests/test_parametrize.py relies on it); PyTorch refuses them")
def test_load_state_dict_invalid(T, nn):
    m = nn.Linear(2, 2, bias=False)
    for value in [np.random.default_rng(0).standard_normal((2, 2)), ((1.0, 1.0), (2.0, 2.0))]:
        raises(RuntimeError, 'While copying the parameter named "weight", expected torch.Tensor or Tensor-like '
               "object from checkpoint but received", m.load_state_dict, {"weight": value})


def test_load_state_dict_not_tensor_like(T, nn):
    # what neither library reads as numbers is refused, naming the key
    m = nn.Linear(2, 2, bias=False)
    raises(RuntimeError, 'While copying the parameter named "weight", expected torch.Tensor or Tensor-like '
           "object from checkpoint but received <class 'str'>", m.load_state_dict, {"weight": "abc"})


def test_load_state_dict_type(T, nn):
    m = nn.Module()
    raises(TypeError, "Expected state_dict to be dict-like, got <class 'str'>", m.load_state_dict, "")
    raises(TypeError, "Expected state_dict to be dict-like, got <class 'int'>", m.load_state_dict, 2)


def make_net(nn):
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
    return net


def test_load_state_dict_from_ddp(T, nn):
    net = make_net(nn)
    running_mean = T.randn(2)
    ddp_state_dict = net.state_dict()
    ddp_state_dict.update({"module.linear1.weight": T.ones(5, 5), "module.block.conv1.bias": T.arange(1.0, 4.0),
                           "module.bn.running_mean": running_mean})
    consume_prefix(nn)(ddp_state_dict, "module.")
    # the prefixed entries replaced the plain ones of the same names
    assert sorted(ddp_state_dict) == sorted(net.state_dict())
    incompatible_keys = net.load_state_dict(ddp_state_dict)
    assert incompatible_keys.missing_keys == [] and incompatible_keys.unexpected_keys == []
    assert "Incompatible" not in str(incompatible_keys)
    same(net.linear1.weight, np.ones((5, 5), np.float32))
    same(net.linear2.weight, np.ones((5, 5), np.float32))       # the same module under two names
    same(net.block.conv1.bias, [1.0, 2.0, 3.0])
    same(net.bn.running_mean, values(running_mean))


def test_consume_prefix_renames_metadata(T, nn):
    state_dict = OrderedDict([("module.a.weight", T.ones(1)), ("module.b", T.zeros(1)), ("c", T.ones(1))])
    state_dict._metadata = OrderedDict([("", {}), ("module", {"version": 1}), ("module.a", {"version": 2})])
    consume_prefix(nn)(state_dict, "module.")
    assert list(state_dict) == ["c", "a.weight", "b"]
    assert dict(state_dict._metadata) == {"": {"version": 1}, "a": {"version": 2}}


def test_load_state_dict_non_strict_loads_what_matches(T, nn):
    net = make_net(nn)
    old_state_dict = {k: values(v).copy() for k, v in net.state_dict().items()}
    running_mean = T.randn(2)
    state_dict = {"linear1.weight": T.ones(5, 5), "block.conv1.bias": T.arange(1.0, 4.0),
                  "bn.running_mean": running_mean, "nonexistent_key": T.rand(3)}
    incompatible_keys = net.load_state_dict(state_dict, strict=False)
    assert incompatible_keys.unexpected_keys == ["nonexistent_key"]
    # (a plain dict has no version metadata: BatchNorm reads it as version 1 and fills num_batches_tracked in)
    assert sorted(incompatible_keys.missing_keys) == sorted(set(old_state_dict) - set(state_dict)
                                                            - {"bn.num_batches_tracked"})
    same(net.linear1.weight, np.ones((5, 5), np.float32))
    same(net.block.conv1.bias, [1.0, 2.0, 3.0])
    same(net.bn.running_mean, values(running_mean))
    new_state_dict = net.state_dict()
    same(new_state_dict["linear2.weight"], np.ones((5, 5), np.float32))     # linear2 is linear1
    for key in set(old_state_dict) - set(state_dict) - {"linear2.weight"}:
        same(new_state_dict[key], old_state_dict[key])
    # strict: one missing key and one unexpected key together
    state_dict = net.state_dict()
    del state_dict["linear1.weight"]
    state_dict["extra.param"] = T.ones(5)
    raises(RuntimeError, 'Missing key\\(s\\) in state_dict: "linear1.weight"', net.load_state_dict, state_dict)
    incompatible_keys = net.load_state_dict(state_dict, strict=False)
    assert incompatible_keys.missing_keys == ["linear1.weight"]
    assert incompatible_keys.unexpected_keys == ["extra.param"]


def test_load_state_dict_BC(T, nn):
    # BatchNorm's num_batches_tracked came with version 2: an older (or unversioned) state_dict without it loads,
    # the buffer keeping its value
    bn = nn.BatchNorm2d(3)
    state_dict = bn.state_dict()
    del state_dict["num_batches_tracked"]
    state_dict._metadata[""]["version"] = 1
    bn.load_state_dict(state_dict)
    assert str(bn.num_batches_tracked.dtype).endswith("int64")
    assert bn.num_batches_tracked.item() == 0
    del state_dict._metadata[""]["version"]
    bn.load_state_dict(state_dict)
    assert str(bn.num_batches_tracked.dtype).endswith("int64")
    assert bn.num_batches_tracked.item() == 0
    bn(T.randn(4, 3, 2, 2))
    bn.load_state_dict(state_dict)
    assert bn.num_batches_tracked.item() == 1
    # at version 2 it is missing
    state_dict._metadata[""]["version"] = 2
    raises(RuntimeError, 'Missing key\\(s\\) in state_dict: "num_batches_tracked"', bn.load_state_dict, state_dict)


def test_load_state_dict_child(T, nn):
    model = nn.Linear(1, 1)
    for _ in range(3):
        model = nn.Sequential(*[copy.deepcopy(model) for _ in range(10)])
    calls = []

    def hook_fn(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        calls.append((prefix, len(module.state_dict()), len(state_dict)))

    model[0][0].register_load_state_dict_pre_hook(hook_fn)
    model.load_state_dict(model.state_dict(), strict=True)
    # the hook sees only its module's part of the state_dict: 10 Linears' weight and bias
    assert calls == [("0.0.", 20, 20)]


def test_register_state_dict_pre_hook_backward_compat(T, nn):
    called = []
    m = nn.Linear(1, 1)
    if hasattr(m, "_state_dict_pre_hooks"):      # (a module saved before the registry existed)
        delattr(m, "_state_dict_pre_hooks")
    m = pickle.loads(pickle.dumps(m))
    m.state_dict()
    assert not called
    m.register_state_dict_pre_hook(lambda *args, **kwargs: called.append(args[1:]))
    m.state_dict()
    assert called == [("", False)]


def test_load_state_dict_ref_cycle(T, nn):
    # load_state_dict leaves no reference cycle behind (tensors freed at once, not at the next collection)
    m = nn.LSTM(16, 16, bidirectional=True)
    while gc.collect():  # (until nothing is left of earlier tests: what a cycle holds through a NumPy object array,
        pass  # which the collector cannot see into, is freed only at the next collection)
    m.load_state_dict(copy.deepcopy(m).state_dict())
    assert gc.collect() == 0


class Net:
    """fc1 -> bn, plus a parameter x that does not require grad."""

    @staticmethod
    def make(T, nn):
        class MyModule(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = nn.Linear(3, 5)
                self.bn = nn.BatchNorm1d(5)
                self.x = nn.Parameter(T.rand(5), requires_grad=False)

            def forward(self, input):
                return self.x + self.bn(self.fc1(input))

        return MyModule


@pytest.mark.parametrize("keep_vars", [True, False])
def test_load_state_dict_assign(T, nn, keep_vars):
    MyModule = Net.make(T, nn)
    net = MyModule()
    state_dict = net.state_dict(keep_vars=keep_vars)
    for v in state_dict.values():
        v.requires_grad_(False)
    target = MyModule()
    old = target.state_dict(keep_vars=True)
    target.load_state_dict(state_dict, assign=True)
    new = target.state_dict(keep_vars=True)
    for key in state_dict:
        same(new[key], values(state_dict[key]))
        if key in ("fc1.weight", "fc1.bias", "bn.weight", "bn.bias", "x"):
            assert isinstance(new[key], nn.Parameter)
            if keep_vars:
                assert new[key] is state_dict[key]       # the Parameter itself
            else:
                assert new[key] is not old[key]
            # requires_grad is the module's, not the checkpoint's
            assert new[key].requires_grad == old[key].requires_grad
        else:
            assert new[key] is state_dict[key]           # buffers: the checkpoint's tensor itself
    assert [n for n, _ in target.named_parameters()] == [n for n, _ in net.named_parameters()]
    assert [n for n, _ in target.named_buffers()] == [n for n, _ in net.named_buffers()]
    t = T.randn(4, 3)
    same(target(t.clone()), values(net(t)))


def test_load_state_dict_assign_with_optimizer(T, nn):
    optim = optim_of(T)

    class MyModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(3, 5)
            self.bn = nn.BatchNorm1d(5)

        def forward(self, input):
            return self.bn(self.fc1(input))

    T.manual_seed(0)
    net = MyModule()
    opt = optim.Adam(net.parameters(), lr=1000)
    x = T.randn(4, 3)
    for _ in range(3):
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
    opt_state_dict = copy.deepcopy(opt.state_dict())
    net_state_dict = copy.deepcopy(net.state_dict())
    net2 = MyModule()
    net2.load_state_dict(net_state_dict, assign=True)
    opt2 = optim.Adam(net2.parameters(), lr=1000)        # built after the assignment
    opt2.load_state_dict(opt_state_dict)
    y = x.clone()
    for _ in range(3):
        opt.zero_grad()
        net(x).sum().backward()
        opt.step()
        opt2.zero_grad()
        net2(y).sum().backward()
        opt2.step()
    for (k1, v1), (k2, v2) in zip(net.state_dict().items(), net2.state_dict().items()):
        assert k1 == k2
        close(v2, values(v1), rtol=1e-6, atol=1e-6)
    state1, state2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert sorted(state1) == sorted(state2)
    for index in state1:
        for name in state1[index]:
            close(state2[index][name], values(state1[index][name]))


def test_load_state_dict_assign_shape_stride(T, nn):
    MyModule = Net.make(T, nn)
    net = MyModule()
    state_dict = net.state_dict()
    transposed = T.randn(3, 5).transpose(0, 1)     # another stride: loads
    state_dict["fc1.weight"] = transposed
    net2 = MyModule()
    net2.load_state_dict(state_dict, strict=False, assign=True)
    same(net2.fc1.weight, values(transposed))
    assert isinstance(net2.fc1.weight, nn.Parameter) and net2.fc1.weight.requires_grad
    state_dict["fc1.weight"] = T.randn(2, 4)
    raises(RuntimeError, r"size mismatch for fc1.weight: copying a param with shape (torch.)?Size\(\[2, 4\]\) from "
           r"checkpoint, the shape in current model is (torch.)?Size\(\[5, 3\]\)", net2.load_state_dict, state_dict,
           strict=False, assign=True)
    same(net2.fc1.weight, values(transposed))       # left as it was


def test_load_state_dict_with_unexpected_key(T, nn):
    class MyModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(5, 10)

    m = MyModule()
    for bad in ["fc1.bad_suffix", "fc1.weight.bad_suffix"]:      # (the second's prefix is a valid key)
        state_dict = m.state_dict()
        state_dict[bad] = T.randn(5, 10)
        raises(RuntimeError, f'Unexpected key\\(s\\) in state_dict: "{bad}"', m.load_state_dict, state_dict)
        result = m.load_state_dict(state_dict, strict=False)
        assert result.unexpected_keys == [bad] and result.missing_keys == []
