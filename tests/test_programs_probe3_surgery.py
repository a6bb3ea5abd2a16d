# ruff: noqa: B007, B023, E741, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs (see tests/pytorch_programs.py): module introspection and surgery. Walking
``named_modules``/``named_children``, replacing a layer by assignment, ``apply(init_fn)``, forward,
forward-pre and full-backward hooks for features and gradient logging, freezing, ``deepcopy`` of a
model and of its state dict for early stopping, ``load_state_dict(strict=False)``, BatchNorm buffers
in the state dict, dtype casts, ``ModuleDict``/``ParameterList``/``ParameterDict`` and
parametrizations."""

import copy

import numpy as np

from .pytorch_programs import load, run_both, weights_of


def small_cnn(m):
    nn = m.nn
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                          nn.MaxPool2d(2))
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 4 * 4, 8), nn.ReLU())
            self.fc = nn.Linear(8, 3)
        def forward(self, x):
            return self.fc(self.head(self.features(x)))
    return Net()


def introspection(m, weights):
    torch, nn = m.torch, m.nn
    model = load(m, small_cnn(m), weights)
    names = [name for name, _ in model.named_modules()]
    children = [name for name, _ in model.named_children()]
    kinds = [type(mod).__name__ for mod in model.modules()]
    n_linear = sum(isinstance(mod, nn.Linear) for mod in model.modules())
    # transfer learning: replace the classifier, freeze everything else
    for p in model.parameters():
        p.requires_grad_(False)
    model.fc = nn.Linear(model.fc.in_features, 5)
    with torch.no_grad():
        model.fc.weight.copy_(torch.arange(40, dtype=torch.float32).reshape(5, 8) / 40 - 0.5)
        model.fc.bias.zero_()
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    # re-initialise every conv with apply
    def init_fn(mod):
        if isinstance(mod, nn.Conv2d):
            nn.init.constant_(mod.weight, 0.1)
            nn.init.zeros_(mod.bias)
    model.apply(init_fn)
    x = torch.linspace(-1, 1, 2 * 64).reshape(2, 1, 8, 8)
    model.eval()
    out = model(x)
    out.sum().backward()
    grads_none = [n for n, p in model.named_parameters() if p.grad is None]
    return names, children, kinds, n_linear, trainable, out, model.fc.weight.grad, grads_none


def test_named_modules_surgery_and_apply():
    weights = weights_of(small_cnn)
    (names, children, kinds, n_linear, trainable, out, g, none), _ = run_both(introspection, weights)
    assert names == ["", "features", "features.0", "features.1", "features.2", "features.3", "head",
                     "head.0", "head.1", "head.2", "fc"]
    assert children == ["features", "head", "fc"]
    assert kinds[0] == "Net" and kinds.count("ReLU") == 2
    assert n_linear == 2
    assert trainable == ["fc.weight", "fc.bias"]
    assert out.shape == (2, 5) and g.shape == (5, 8)
    assert none == [n for n in names_of_params() if not n.startswith("fc.")]


def names_of_params():
    return [k for k in weights_of(small_cnn) if "running" not in k and "num_batches" not in k]


def hooks_program(m, weights):
    torch, nn = m.torch, m.nn
    model = load(m, small_cnn(m), weights)
    features, pre_shapes, grad_log = {}, [], []
    def save_output(name):
        def hook(module, inp, out):
            features[name] = out.detach()
        return hook
    h1 = model.features.register_forward_hook(save_output("features"))
    h2 = model.head[1].register_forward_hook(save_output("hidden"))
    def pre(module, args):
        pre_shapes.append(tuple(args[0].shape))
        return (args[0] * 2,)  # a pre-hook may replace the input
    h3 = model.fc.register_forward_pre_hook(pre)
    def backward_hook(module, grad_input, grad_output):
        grad_log.append((type(module).__name__, grad_output[0].norm().item(),
                         None if grad_input[0] is None else grad_input[0].norm().item()))
    h4 = model.fc.register_full_backward_hook(backward_hook)
    h5 = model.head[1].register_full_backward_hook(backward_hook)
    x = torch.linspace(-1, 1, 2 * 64).reshape(2, 1, 8, 8)
    out = model(x)
    out.pow(2).sum().backward()
    for h in (h1, h2, h3, h4, h5):
        h.remove()
    out2 = model(x)  # no hooks any more: the pre-hook's doubling is gone
    return features["features"], features["hidden"], pre_shapes, grad_log, out, out2, len(features)


def test_forward_pre_and_full_backward_hooks():
    weights = weights_of(small_cnn)
    (feat, hid, pre, log, out, out2, n), _ = run_both(hooks_program, weights, rtol=1e-4, atol=1e-5)
    assert feat.shape == (2, 4, 4, 4) and hid.shape == (2, 8)
    assert pre == [(2, 8)]
    assert [name for name, _, _ in log] == ["Linear", "Linear"]  # fc first, then head[1]
    assert not np.allclose(out, out2)


def early_stopping(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 1))
    load(m, model, weights)
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.standard_normal((32, 4)), dtype=torch.float32)
    y = X[:, :1] * 2 - X[:, 1:2]
    Xv = torch.tensor(rng.standard_normal((16, 4)), dtype=torch.float32)
    yv = Xv[:, :1] * 2 - Xv[:, 1:2]
    opt = optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    best, best_state, best_model, history = float("inf"), None, None, []
    for epoch in range(12):
        model.train()
        opt.zero_grad()
        F.mse_loss(model(X), y).backward()
        opt.step()
        model.eval()
        with torch.no_grad():
            val = F.mse_loss(model(Xv), yv).item()
        history.append(val)
        if val < best:
            best = val
            best_state = copy.deepcopy(model.state_dict())
            best_model = copy.deepcopy(model)
    sd = model.state_dict()
    keys = list(sd.keys())
    nbt = sd["1.num_batches_tracked"]
    model.load_state_dict(best_state)
    with torch.no_grad():
        restored = F.mse_loss(model(Xv), yv).item()
        copied = F.mse_loss(best_model(Xv), yv).item()
    same_storage = best_model[0].weight.data_ptr() == model[0].weight.data_ptr()
    return (history, best, restored, copied, keys, nbt, str(nbt.dtype).split(".")[-1],
            best_state["1.running_var"], same_storage)


def test_deepcopy_state_dict_for_early_stopping():
    make = lambda m: m.nn.Sequential(m.nn.Linear(4, 16), m.nn.BatchNorm1d(16), m.nn.ReLU(), m.nn.Linear(16, 1))
    weights = weights_of(make)
    (hist, best, restored, copied, keys, nbt, dt, rv, same), _ = run_both(early_stopping, weights,
                                                                         rtol=1e-4, atol=1e-5)
    assert keys == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                    "1.num_batches_tracked", "3.weight", "3.bias"]
    # state_dict() shares storage: loading the best state rewinds the counter read before it
    assert int(nbt) == hist.index(best) + 1 and dt == "int64"
    assert best == min(hist) and restored == best and copied == best
    assert not same and rv.shape == (16,)


def strict_false(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    old = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    new = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 1))
    sd = {k: torch.ones_like(v) for k, v in old.state_dict().items()}
    sd["extra.weight"] = torch.zeros(1)
    result = new.load_state_dict(sd, strict=False)
    missing, unexpected = result.missing_keys, result.unexpected_keys
    try:
        new.load_state_dict(sd)
        err = None
    except RuntimeError as e:
        err = "Missing key(s)" in str(e) and "Unexpected key(s)" in str(e)
    mismatch = {"0.weight": torch.ones(5, 3)}
    try:
        new.load_state_dict(mismatch, strict=False)
        size_err = None
    except RuntimeError as e:
        size_err = "size mismatch" in str(e)
    return list(missing), list(unexpected), err, size_err, new[0].weight, new[2].bias


def test_load_state_dict_strict_false_reports_keys():
    (missing, unexpected, err, size_err, w, b), _ = run_both(strict_false)
    assert missing == ["4.weight", "4.bias"] and unexpected == ["extra.weight"]
    assert err is True and size_err is True
    assert (w == 1).all() and (b == 1).all()


def dtype_casts(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.linspace(-1, 1, p.numel()).reshape(p.shape) * (i + 1) / 3)
    x = torch.linspace(-2, 2, 15).reshape(5, 3)
    model.eval()
    d = model.double()
    out64 = d(x.double())
    dtypes64 = sorted({str(v.dtype).split(".")[-1] for v in model.state_dict().values()})
    h = model.half()
    dtypes16 = sorted({str(v.dtype).split(".")[-1] for v in model.state_dict().values()})
    w16 = model[0].weight
    wdt = str(w16.dtype).split(".")[-1]  # read now: .to() below casts this same Parameter back
    back = model.to(torch.float32)
    out32 = back(x)
    return out64, str(out64.dtype).split(".")[-1], dtypes64, dtypes16, w16, wdt, out32, model is back


def test_half_double_and_to_dtype_keep_integer_buffers():
    (o64, dt, d64, d16, w16, wdt, o32, same), _ = run_both(dtype_casts, rtol=1e-3, atol=1e-3)
    assert dt == "float64" and d64 == ["float64", "int64"] and d16 == ["float16", "int64"] and wdt == "float16"
    assert same is True and o32.shape == (5, 2)
    np.testing.assert_allclose(o32, o64, rtol=1e-2, atol=1e-2)  # went through half precision


def containers(m):
    torch, nn, F = m.torch, m.nn, m.F
    class MultiHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = nn.ModuleDict({"cls": nn.Linear(4, 3), "reg": nn.Linear(4, 1)})
            self.scales = nn.ParameterList([nn.Parameter(torch.full((4,), float(i + 1))) for i in range(2)])
            self.biases = nn.ParameterDict({"cls": nn.Parameter(torch.zeros(3)), "reg": nn.Parameter(torch.ones(1))})
        def forward(self, x):
            for s in self.scales:
                x = x * s
            return {k: head(x) + self.biases[k] for k, head in self.heads.items()}
    model = MultiHead()
    with torch.no_grad():
        for i, p in enumerate(model.heads.parameters()):
            p.copy_(torch.linspace(-0.5, 0.5, p.numel()).reshape(p.shape) * (i + 1))
    model.heads["aux"] = nn.Linear(4, 2)
    del model.heads["aux"]
    model.scales.append(nn.Parameter(torch.ones(4) * 0.5))
    model.biases.update({"extra": nn.Parameter(torch.zeros(2))})
    x = torch.linspace(-1, 1, 8).reshape(2, 4)
    out = model(x)
    loss = out["cls"].sum() + out["reg"].pow(2).sum()
    loss.backward()
    names = [n for n, _ in model.named_parameters()]
    return (names, out["cls"], out["reg"], model.scales[2].grad, model.biases["reg"].grad,
            list(model.heads.keys()), len(model.scales), "extra" in model.biases)


def test_module_dict_parameter_list_and_dict():
    (names, cls, reg, g_scale, g_bias, keys, n, extra), _ = run_both(containers)
    assert names == ["heads.cls.weight", "heads.cls.bias", "heads.reg.weight", "heads.reg.bias",
                     "scales.0", "scales.1", "scales.2", "biases.cls", "biases.reg", "biases.extra"]
    assert keys == ["cls", "reg"] and n == 3 and extra is True
    np.testing.assert_allclose(g_bias, 2 * reg.sum(0))


def parametrized(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    P = nn.utils.parametrize
    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)
    class Positive(nn.Module):
        def forward(self, X):
            return torch.nn.functional.softplus(X) if hasattr(torch, "nn") else m.F.softplus(X)
    layer = nn.Linear(3, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(9, dtype=torch.float32).reshape(3, 3) / 9 - 0.3)
        layer.bias.zero_()
    P.register_parametrization(layer, "weight", Symmetric())
    is_p = P.is_parametrized(layer), P.is_parametrized(layer, "bias")
    names = [n for n, _ in layer.named_parameters()]
    sym = layer.weight
    opt = optim.SGD(layer.parameters(), lr=0.1)
    x = torch.linspace(-1, 1, 6).reshape(2, 3)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = (layer(x) - 1).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    orig = layer.parametrizations.weight.original
    P.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return is_p, names, sym, losses, orig, layer.weight, [n for n, _ in layer.named_parameters()]


def test_register_parametrization_symmetric_weight_trains():
    (is_p, names, sym, losses, orig, w, names_after), _ = run_both(parametrized)
    assert is_p == (True, False)
    assert names == ["bias", "parametrizations.weight.original"]
    np.testing.assert_array_equal(sym, sym.T)
    np.testing.assert_array_equal(w, w.T)
    assert losses[-1] < losses[0]
    assert names_after == ["bias", "weight"]


def parametrize_keeps_the_original_object(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    P = nn.utils.parametrize
    class Symmetric(nn.Module):
        def forward(self, X):
            return X.triu() + X.triu(1).transpose(-1, -2)
    layer = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    weight = layer.weight
    opt = optim.SGD(layer.parameters(), lr=0.5)  # built before the parametrization, as people do
    P.register_parametrization(layer, "weight", Symmetric())
    kept = layer.parametrizations.weight.original is weight
    opt.zero_grad()
    layer(torch.ones(1, 2)).sum().backward()
    opt.step()
    P.remove_parametrizations(layer, "weight")
    back = layer.weight is weight
    layer.register_buffer("scale", torch.tensor([2.0, 3.0]))
    P.register_parametrization(layer, "scale", nn.Identity())
    buffer_kept = [n for n, _ in layer.named_buffers()]
    P.remove_parametrizations(layer, "scale", leave_parametrized=False)
    return kept, back, weight, layer.weight, buffer_kept, [n for n, _ in layer.named_buffers()]


def test_parametrization_trains_and_returns_the_original_parameter():
    # chainrule used to make a new Parameter on register and on remove: an optimizer built before
    # (or kept after) trained a tensor the module no longer used
    (kept, back, weight, w, bufs, bufs_after), _ = run_both(parametrize_keeps_the_original_object)
    assert kept is True and back is True
    # d sum(sym(W)) / dW = [[1, 2], [0, 1]] (the upper corner is read twice, the lower one never);
    # W - 0.5 * that = [[0.5, 1], [3, 3.5]], and removal leaves its symmetric version
    np.testing.assert_allclose(w, [[0.5, 1.0], [1.0, 3.5]])
    assert bufs == ["parametrizations.scale.original"] and bufs_after == ["scale"]


def test_module_dict_delete_pop_update_and_contains():
    import nn
    d = nn.ModuleDict([("a", nn.Linear(1, 1)), ("b", nn.ReLU())])  # pairs, as PyTorch accepts
    d.update({"c": nn.Tanh()})
    del d["a"]
    assert list(d.keys()) == ["b", "c"] and "b" in d and "a" not in d
    assert isinstance(d.pop("b"), nn.ReLU) and len(d) == 1
    d.clear()
    assert len(d) == 0 and list(d.parameters()) == []


def module_bookkeeping(m):
    torch, nn = m.torch, m.nn
    out = {}
    torch.manual_seed(0)
    shared = nn.Linear(2, 2)
    model = nn.Sequential(shared, nn.ReLU(inplace=True), shared)  # one layer used twice (weight tying)
    out["names"] = [n for n, _ in model.named_modules()]
    out["names_all"] = [n for n, _ in model.named_modules(remove_duplicate=False)]
    out["n_params"] = len(list(model.parameters()))
    out["children"] = [type(c).__name__ for c in model.children()]
    model[1] = nn.Tanh()
    out["repr"] = repr(model)
    out["submodule"] = type(model.get_submodule("1")).__name__
    twin = copy.deepcopy(model)
    out["tied_after_deepcopy"] = twin[0] is twin[2] and twin[0] is not model[0]
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.register_buffer("mask", torch.ones(2), persistent=False)
            self.register_buffer("scale", torch.ones(2))
        def forward(self, x):
            return self.fc(x) * self.mask * self.scale
    net = Net()
    out["state_keys"] = list(net.state_dict().keys())
    out["buffer_names"] = [n for n, _ in net.named_buffers()]
    out["prefixed"] = list(net.state_dict(prefix="model.").keys())
    out["keep_vars"] = net.state_dict(keep_vars=True)["fc.weight"] is net.fc.weight
    out["detached"] = net.state_dict()["fc.weight"].requires_grad
    del net.fc
    net.fc = nn.Linear(2, 3)
    out["replaced"] = [(n, tuple(p.shape)) for n, p in net.named_parameters()]
    calls = []
    lin = nn.Linear(2, 2)
    lin.register_forward_hook(lambda mod, a, o: calls.append("a"))
    lin.register_forward_hook(lambda mod, a, o: calls.append("b"), prepend=True)
    lin.register_forward_hook(lambda mod, a, kw, o: calls.append(("kw", sorted(kw))), with_kwargs=True)
    lin.register_forward_pre_hook(lambda mod, a, kw: calls.append(("pre", sorted(kw))), with_kwargs=True)
    lin(torch.ones(1, 2))
    out["forward_calls"] = calls
    bcalls = []
    lin2 = nn.Linear(2, 2)
    lin2.register_full_backward_pre_hook(lambda mod, go: bcalls.append(("pre", tuple(go[0].shape))))
    lin2.register_full_backward_hook(lambda mod, gi, go: bcalls.append(("post", gi[0] is None)))
    lin2(torch.ones(3, 2, requires_grad=True)).sum().backward()
    out["backward_calls"] = bcalls
    bn = nn.BatchNorm1d(2)
    bn.requires_grad_(False)  # frozen affine parameters: running statistics still move in train mode
    bn(torch.tensor([[1.0, 2.0], [3.0, 5.0]]))
    out["frozen_bn"] = (bn.running_mean.clone(), bn.num_batches_tracked.item())
    fresh = Net()
    res = fresh.load_state_dict({"fc.weight": torch.zeros(2, 2), "fc.bias": torch.zeros(2),
                                 "scale": torch.zeros(2)}, assign=True)
    out["assign"] = (res.missing_keys, fresh.scale.sum().item())
    out["eval_flags"] = [mod.training for mod in model.eval().modules()]
    out["reprs"] = [str(mod) for mod in (nn.LayerNorm(4), nn.GroupNorm(2, 4), nn.BatchNorm2d(3),
                                         nn.Conv2d(1, 2, 3, stride=2, padding=1), nn.LSTM(2, 3, batch_first=True),
                                         nn.Embedding(3, 4, padding_idx=0), nn.MaxPool2d(2))]
    return out


def test_module_bookkeeping_with_shared_layers_buffers_and_hooks():
    out, _ = run_both(module_bookkeeping)
    assert out["names"] == ["", "0", "1"] and out["names_all"] == ["", "0", "1", "2"]
    assert out["children"] == ["Linear", "ReLU"]  # a shared child comes once, as in PyTorch
    assert out["n_params"] == 2 and out["tied_after_deepcopy"] is True
    assert out["state_keys"] == ["scale", "fc.weight", "fc.bias"] and out["buffer_names"] == ["mask", "scale"]
    assert out["replaced"] == [("fc.weight", (3, 2)), ("fc.bias", (3,))]
    assert out["forward_calls"] == [("pre", []), "b", "a", ("kw", [])]
    assert out["backward_calls"] == [("pre", (3, 2)), ("post", False)]
    assert out["frozen_bn"][1] == 1 and out["assign"] == ([], 0.0)
    assert out["reprs"][0] == "LayerNorm((4,), eps=1e-05, elementwise_affine=True, bias=True)"
    assert out["reprs"][1] == "GroupNorm(2, 4, eps=1e-05, affine=True, bias=True)"


def frozen_batchnorm_and_a_focal_loss(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, small_cnn(m), weights)
    def freeze_bn(module):
        for mod in module.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                mod.eval()
                mod.weight.requires_grad = False
                mod.bias.requires_grad = False
    class FocalLoss(nn.modules.loss._WeightedLoss):
        def __init__(self, weight=None, gamma=2.0, reduction="mean"):
            super().__init__(weight, reduction=reduction)
            self.gamma = gamma
        def forward(self, input, target):
            logp = F.log_softmax(input, dim=1)
            ce = F.nll_loss(logp, target, weight=self.weight, reduction="none")
            p = logp.gather(1, target.unsqueeze(1)).squeeze(1).exp()
            loss = (1 - p) ** self.gamma * ce
            return loss.mean() if self.reduction == "mean" else loss.sum()
    criterion = FocalLoss(weight=torch.tensor([1.0, 2.0, 0.5])).double()  # losses cast their buffers too
    shapes = []
    handle = nn.modules.module.register_module_forward_hook(
        lambda mod, inp, out: shapes.append(type(mod).__name__) if isinstance(mod, nn.Conv2d) else None)
    rng = np.random.default_rng(7)
    x = torch.tensor(rng.standard_normal((4, 1, 8, 8)).astype(np.float32))
    y = torch.tensor([0, 1, 2, 1])
    model.train()
    freeze_bn(model)
    opt = optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    losses = []
    for _ in range(3):
        opt.zero_grad()
        loss = criterion(model(x).double(), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    handle.remove()
    model(x)
    bn = model.features[1]
    return (losses, shapes, bn.running_mean, int(bn.num_batches_tracked), bn.weight.grad,
            str(criterion.weight.dtype).split(".")[-1], [n for n, _ in criterion.named_buffers()])


def test_frozen_batchnorm_focal_loss_and_a_global_hook():
    # nn.modules (PyTorch's torch.nn.modules spelling), _WeightedLoss, the global module hooks and a
    # loss's .double() (its `buffers` class attribute hid Module.buffers()) were missing
    weights = weights_of(small_cnn)
    (losses, shapes, rm, nbt, g, dt, bufs), _ = run_both(frozen_batchnorm_and_a_focal_loss, weights,
                                                         rtol=1e-4, atol=1e-6)
    assert losses[-1] < losses[0] and shapes == ["Conv2d"] * 3
    assert nbt == 0 and (rm == 0).all() and g is None  # eval mode: the statistics never moved
    assert dt == "float64" and bufs == ["weight"]


def test_nn_modules_names_pytorchs_submodules():
    from nn.modules.batchnorm import _BatchNorm
    from nn.modules.loss import _Loss, _WeightedLoss

    import nn

    assert isinstance(nn.BatchNorm1d(2), _BatchNorm) and issubclass(_WeightedLoss, _Loss)
    assert nn.modules.Linear is nn.Linear and nn.modules.conv._ConvNd is type(nn.Conv2d(1, 1, 1)).__mro__[1]
    calls = []
    handles = [nn.modules.module.register_module_forward_pre_hook(lambda mod, args: calls.append("pre")),
               nn.modules.module.register_module_full_backward_hook(lambda mod, gi, go: calls.append("back"))]
    layer = nn.Linear(2, 1)
    layer.register_forward_pre_hook(lambda mod, args: calls.append("own"))
    import autograd
    layer(autograd.ones(1, 2, requires_grad=True)).sum().backward()
    for h in handles:
        h.remove()
    layer(autograd.ones(1, 2))
    assert calls == ["pre", "own", "back", "own"]  # the global hooks first, and gone once removed


def convert_and_fuse(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                        nn.Sequential(nn.Conv2d(3, 2, 3), nn.BatchNorm2d(2), nn.ReLU()), nn.Flatten())
    with torch.no_grad():
        for i, t in enumerate(net.state_dict().values()):
            if t.is_floating_point():
                t.copy_(torch.linspace(0.1, 1, t.numel()).reshape(t.shape) * (1 + i % 3) - 0.3 * (i % 2))
    def convert(module):  # swap every ReLU for a GELU, at any depth
        for name, child in module.named_children():
            if isinstance(child, nn.ReLU):
                setattr(module, name, nn.GELU(approximate="tanh"))
            else:
                convert(child)
    convert(net)
    net.eval()
    x = torch.linspace(-1, 1, 2 * 36).reshape(2, 1, 6, 6)
    fused = nn.utils.fusion.fuse_conv_bn_eval(net[0], net[1])
    body, head = net[:3], nn.Sequential(*list(net.children())[3:])
    return (net(x), [type(mod).__name__ for mod in net.modules()], net[1](net[0](x)), fused(x),
            type(body).__name__, head(body(x)))


def test_recursive_layer_swap_conv_bn_fusion_and_slicing():
    (y, kinds, unfused, fused, body, y2), _ = run_both(convert_and_fuse, rtol=1e-5, atol=1e-5)
    assert kinds.count("GELU") == 2 and "ReLU" not in kinds
    np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-5)
    assert body == "Sequential" and np.array_equal(y, y2) and y.shape == (2, 32)
