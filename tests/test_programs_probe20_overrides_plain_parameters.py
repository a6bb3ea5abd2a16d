"""Programs with Tensor subclasses and the ``__torch_function__`` protocol (see tests/pytorch_programs.py), each run
on chainrule and on PyTorch, comparing the classes of results, their values, gradients and call logs. Subclasses are
defined inside the programs: the protocol installs its wrappers with the first one (tests/conftest.py uninstalls them
after each test). A plain subclass through functions, methods, operators, indexing, in-place ops, named-tuple
reductions, ``cat``/``stack``/``where``, ``F.*`` and nn layers (PyTorch's test_overrides' TestGradCheckOverride-style
checks of classes), layers calling their functions directly, recurrent layers and cells; a library's own overridable
function (``has_torch_function``/``handle_torch_function``), ``DisableTorchFunctionSubclass`` and
``_disabled_torch_function_impl``; ``nn.Parameter`` subclasses that train and keep their class and tag."""

import copy

import numpy as np

from .probe20_overrides_common import name
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# A plain subclass keeps its class everywhere
# ----------------------------------------------------------------------------------------------


def plain_subclass(m):
    torch, F, nn = m.torch, m.F, m.nn
    torch.manual_seed(0)

    class Mine(torch.Tensor):
        pass

    a = torch.tensor([[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]).as_subclass(Mine)
    b = torch.ones(2, 3)
    results = {
        "bool index": a[a > 2], "tensor index": a[torch.tensor([1, 0])], "slice": a[:, 1:], "mean": a.mean(1),
        "sort": a.sort(1, descending=True).values, "topk": torch.topk(a, 2).indices, "sum kw": torch.sum(a, dim=0),
        "softmax": F.softmax(a, -1), "view": a.view(3, 2), "split": a.split(1)[1], "chunk": torch.chunk(a, 3, 1)[0],
        "new_zeros": a.new_zeros(3), "float": a.double(), "rsub": 1 - a, "rdiv": 1 / (a + 1), "floordiv": a // 2,
        "mod": a % 2, "rpow": 2 ** a, "and": (a > 1) & (a < 4), "invert": ~(a > 1),
        "einsum": torch.einsum("ij,kj->ik", a, b),
        "cat": torch.cat([b, a]), "stack": torch.stack([b, a]), "where": torch.where(a > 2, a, b), "matmul r": b.T @ a,
        "masked_fill": a.masked_fill(a > 2, 0), "expand": a[0:1].expand(3, 3), "permute": a.permute(1, 0),
        "unique": torch.unique(a), "nonzero": a.nonzero(), "contiguous": a.contiguous(), "neg": -a, "abs": abs(a),
        "iter": next(iter(a)), "argmax": a.argmax(), "clamp": a.clamp(1, 4), "cumsum": a.cumsum(1),
        "linear": nn.Linear(3, 2)(a), "mlp": nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.LayerNorm(4))(a),
        "conv2d": nn.Conv2d(1, 1, 1)(a.reshape(1, 1, 2, 3)), "batchnorm": nn.BatchNorm1d(3)(a),
    }
    c = a.clone()
    c += 1
    c.mul_(2)
    c[0, 0] = -1.0
    results["in place"] = c
    named = a.max(1)
    out = {k: name(v) for k, v in results.items()}
    out.update(named=name(named), named_values=name(named.values), named_indices=name(named.indices),
               item=name(a.sum().item()), shape=name(a.shape), tolist=a.tolist())
    values = {k: v for k, v in results.items() if k not in ("linear", "mlp", "conv2d", "batchnorm")}
    return out, values


def test_a_plain_subclass_keeps_its_class_through_ops_methods_operators_and_layers():
    ours, theirs = run_both(plain_subclass)
    assert all(v == "Mine" for k, v in ours[0].items() if k not in ("named", "item", "shape", "tolist")), ours[0]
    assert ours[0]["named"] == "max" and ours[0]["item"] == "float"
    np.testing.assert_allclose(ours[1]["in place"], [[-1.0, 4.0, 6.0], [8.0, 10.0, 12.0]])


def layers_on_a_subclass(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)

    class Mine(torch.Tensor):
        pass

    x2 = torch.randn(2, 3).as_subclass(Mine)
    x4 = torch.randn(2, 3, 4, 4).as_subclass(Mine)
    idx = torch.tensor([[1, 2]]).as_subclass(Mine)
    return {
        "Embedding": name(nn.Embedding(5, 2)(idx)), "EmbeddingBag": name(nn.EmbeddingBag(5, 2)(idx)),
        "ZeroPad2d": name(nn.ZeroPad2d(1)(x4)), "LPPool2d": name(nn.LPPool2d(2, 2)(x4)),
        "MSELoss": name(nn.MSELoss()(x2, torch.zeros(2, 3))),
        "CrossEntropyLoss": name(nn.CrossEntropyLoss()(x2, torch.tensor([0, 1]))),
    }


def test_layers_calling_their_functions_directly_keep_the_class():
    ours, _ = run_both(layers_on_a_subclass)
    assert set(ours.values()) == {"Mine"}, ours


def recurrent_layers_on_a_subclass(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    log = []

    class Mine(torch.Tensor):
        pass

    class Logging(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            log.append(func.__name__)
            return super().__torch_function__(func, types, args, kwargs)

    x = torch.randn(2, 3, 5)
    lstm, gru, rnn = nn.LSTM(5, 4, batch_first=True), nn.GRU(5, 4, num_layers=2), nn.RNN(5, 4, nonlinearity="relu")
    out, (h, c) = lstm(x.as_subclass(Mine))
    g, gh = gru(x.as_subclass(Mine), torch.zeros(2, 3, 4))
    r, rh = rnn(x.as_subclass(Logging))
    cell = nn.LSTMCell(5, 4)
    hc, cc = cell(x[0], (torch.zeros(3, 4).as_subclass(Mine), torch.zeros(3, 4)))
    types = [name(t) for t in (out, h, c, g, gh, hc, cc, r, rh)]
    return types, log[-1:], out, h, c, g, r, hc, cc


def test_recurrent_layers_keep_the_class():
    ours, theirs = run_both(recurrent_layers_on_a_subclass)
    assert ours[0] == ["Mine"] * 7 + ["Logging"] * 2 and ours[1] == ["rnn_relu"]


# ----------------------------------------------------------------------------------------------
# A library's own overridable functions, switching the protocol off, parameters
# ----------------------------------------------------------------------------------------------


def own_overridable_function(m):
    torch = m.torch
    from_overrides = m.torch.overrides
    calls = []

    def squared_distance(x, y, *, scale=1.0):
        """A library function subclasses may answer for, written as torch.nn.functional's are."""
        if from_overrides.has_torch_function_variadic(x, y):
            return from_overrides.handle_torch_function(squared_distance, (x, y), x, y, scale=scale)
        return ((x - y) ** 2).sum(-1) * scale

    class Units(torch.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            calls.append((func.__name__, sorted(kwargs or {})))
            if func is squared_distance:
                x, y = (a.as_subclass(torch.Tensor) if isinstance(a, Units) else a for a in args)
                return squared_distance(x, y, **kwargs) * 1000  # (metres to millimetres, say)
            return super().__torch_function__(func, types, args, kwargs)

    x = torch.tensor([[1.0, 2.0], [0.0, 1.0]])
    y = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    out = {"plain": squared_distance(x, y), "units": squared_distance(x.as_subclass(Units), y, scale=0.5),
           "has": from_overrides.has_torch_function((x, [y, x.as_subclass(Units)])),
           "has plain": from_overrides.has_torch_function((x, y)),
           "unary": from_overrides.has_torch_function_unary(x.as_subclass(Units)),
           "is_tensor_like": from_overrides.is_tensor_like(x.as_subclass(Units))}
    with torch._C.DisableTorchFunctionSubclass():
        out["disabled has"] = from_overrides.has_torch_function_unary(x.as_subclass(Units))
        out["disabled type"] = name(x.as_subclass(Units) + 1)
    out["type after"] = name(x.as_subclass(Units) + 1)
    out["enabled"] = torch._C._is_torch_function_enabled() if hasattr(torch._C, "_is_torch_function_enabled") else True
    return out, calls


def test_a_library_function_of_its_own_takes_part_through_handle_torch_function():
    ours, theirs = run_both(own_overridable_function)
    out, calls = ours
    np.testing.assert_allclose(out["plain"], [5.0, 1.0])
    np.testing.assert_allclose(out["units"], [2500.0, 500.0])
    assert calls == [("squared_distance", ["scale"]), ("add", [])]
    assert not out["has"] and out["unary"] and not out["has plain"]  # (relevant_args taken as they are)
    assert not out["disabled has"] and out["disabled type"] == "Tensor"


def parameter_subclasses(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)

    class TaggedParameter(nn.Parameter):
        """A parameter carrying a tag the optimiser groups by (a common pattern: no weight decay on some)."""

        def __new__(cls, data=None, requires_grad=True, tag="decay"):
            p = super().__new__(cls, data, requires_grad)
            p.tag = tag
            return p

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 2)
            self.scale = TaggedParameter(torch.ones(2), tag="no_decay")

        def forward(self, x):
            return self.fc(x) * self.scale

    net = Net()
    groups = {"decay": [], "no_decay": []}
    for n, p in net.named_parameters():
        groups[getattr(p, "tag", "decay")].append(n)
    opt = torch.optim.SGD([{"params": [p for n, p in net.named_parameters() if n in groups["decay"]],
                            "weight_decay": 0.1},
                           {"params": [net.scale], "weight_decay": 0.0}], lr=0.1)
    x = torch.randn(4, 3)
    for _ in range(3):
        opt.zero_grad()
        loss = net(x).pow(2).mean()
        loss.backward()
        opt.step()
    out = {"groups": groups, "type": name(net.scale), "is param": isinstance(net.scale, nn.Parameter),
           "op type": name(net.scale * 2), "tag": net.scale.tag, "grad type": name(net.scale.grad),
           "state keys": sorted(net.state_dict()),
           "copy": name(copy.deepcopy(net).scale), "copy tag": copy.deepcopy(net).scale.tag}
    return out, net.scale, net.fc.weight, loss


def test_an_nn_parameter_subclass_trains_and_keeps_its_class_and_tag():
    ours, theirs = run_both(parameter_subclasses)
    out = ours[0]
    assert out["groups"] == {"decay": ["fc.weight", "fc.bias"], "no_decay": ["scale"]}
    # (PyTorch's deepcopy makes type(p)(data, requires_grad): the tag is the default's)
    assert out["type"] == "TaggedParameter" and out["op type"] == "Tensor" and out["copy tag"] == "decay"
