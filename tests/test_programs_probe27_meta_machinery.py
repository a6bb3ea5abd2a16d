# ruff: noqa: E501, E702, F841  (the programs are kept as their authors would write them)
"""Meta-learning and differentiating through optimisation, run as tests/probe27_meta_common.py says. The machinery
underneath: torch.func transforms (vmap of grad, hessian, jacfwd of jacrev, jvp, stack_module_state) over
functional_call, with tied weights and grad options; ``autograd.functional``'s hvp / vhp / hessian and batched grads;
custom Functions with double backward and ``once_differentiable``; higher-order gradients and Hessians of LayerNorm,
GRU and LSTM, attention and convolutions, and LayerNorm's third derivative against its composition; forward mode
through layers, adjoint to reverse mode; ``backward(create_graph=True)`` then a penalty; in-place parameter writes
and their versions; hooks on fast weights, checkpointing and saved-tensor hooks, a multi-grad hook in a create_graph
backward."""

import copy
import warnings

import numpy as np
import pytest

from .probe27_meta_common import TIGHT, arr
from .pytorch_programs import OURS, run_both


def func_transforms(m):
    """torch.func over functional_call: per-example gradients (vmap of grad), the Hessian, jacfwd of jacrev,
    grad_and_value, vjp, and vmap of an input Hessian."""
    torch, nn, F = m.torch, m.nn, m.F
    tf = torch.func
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    params = {k: v.detach() for k, v in net.named_parameters()}
    x, y = torch.tensor(arr(9, 4, 3)), torch.tensor(arr(10, 4, 2))

    def loss(p, x, y):
        return F.mse_loss(tf.functional_call(net, p, (x,)), y)

    per_ex = tf.vmap(tf.grad(loss), in_dims=(None, 0, 0))(params, x, y)
    H = tf.hessian(loss)(params, x, y)
    jf = tf.jacfwd(tf.jacrev(loss), argnums=0)(params, x, y)
    gv, val = tf.grad_and_value(loss)(params, x, y)
    out, fn = tf.vjp(lambda xx: tf.functional_call(net, params, (xx,)), x)
    (xg,) = fn(torch.ones_like(out))
    Hx = tf.vmap(tf.hessian(lambda xi: tf.functional_call(net, params, (xi,)).sum()))(x)
    return {"per_ex": per_ex, "H_w2": H["2.weight"]["2.weight"], "H_b0_w2": H["0.bias"]["2.weight"],
            "jf_b0": jf["0.bias"]["0.bias"], "H_b0": H["0.bias"]["0.bias"], "gv": gv, "val": val, "xg": xg, "Hx": Hx}


def layer_higher(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(4)
    res = {}
    ln = nn.LayerNorm(5).double()
    x = torch.tensor(arr(13, 3, 5), requires_grad=True)
    y = ln(x).pow(3).sum()
    g, = torch.autograd.grad(y, x, create_graph=True)
    gg = torch.autograd.grad(g.pow(2).sum(), [x, ln.weight, ln.bias], create_graph=True)
    ggg = torch.autograd.grad(gg[0].sum(), x)
    res["ln"] = list(gg)
    gru = nn.GRUCell(3, 4).double()
    xi = torch.tensor(arr(14, 2, 3), requires_grad=True); h = torch.tensor(arr(15, 2, 4))
    for _ in range(2):
        h = gru(xi, h)
    g, = torch.autograd.grad(h.sum(), xi, create_graph=True)
    res["gru"] = torch.autograd.grad(g.pow(2).sum(), list(gru.parameters()) + [xi])
    mha = nn.MultiheadAttention(6, 2, batch_first=True).double()
    q = torch.tensor(arr(16, 2, 3, 6), requires_grad=True)
    o, w = mha(q, q, q)
    g, = torch.autograd.grad(o.pow(2).sum() + w.sum(), q, create_graph=True)
    res["mha"] = torch.autograd.grad(g.norm(), list(mha.parameters()) + [q])
    conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, dilation=1).double()
    xc = torch.tensor(arr(17, 1, 2, 6, 6), requires_grad=True)
    oc = F.gelu(conv(xc))
    g, = torch.autograd.grad(oc.sum(), xc, create_graph=True)
    res["conv"] = torch.autograd.grad((g ** 2).sum(), [conv.weight, conv.bias, xc])
    sd = torch.tensor(arr(18, 2, 2, 4, 3), requires_grad=True)
    o = F.scaled_dot_product_attention(sd, sd * 0.5, sd, is_causal=True)
    res["sdpa"] = torch.autograd.grad(o.pow(2).sum(), sd)
    lstm = nn.LSTM(3, 4, batch_first=True).double()
    xl = torch.tensor(arr(19, 2, 5, 3), requires_grad=True)
    ol, _ = lstm(xl)
    g, = torch.autograd.grad(ol.sum(), xl, create_graph=True)
    res["lstm"] = torch.autograd.grad(g.pow(2).sum(), list(lstm.parameters()))
    return res


def ensemble(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(6)
    models = [nn.Sequential(nn.Linear(3, 6), nn.GELU(), nn.Linear(6, 2)).double() for _ in range(4)]
    params, buffers = torch.func.stack_module_state(models)
    base = copy.deepcopy(models[0]).to('meta')
    def fmodel(p, b, x):
        return torch.func.functional_call(base, (p, b), (x,))
    x = torch.tensor(arr(21, 5, 3))
    out = torch.func.vmap(fmodel, in_dims=(0, 0, None))(params, buffers, x)
    loss = out.pow(2).mean()
    g = torch.autograd.grad(loss, list(params.values()))
    ref = torch.stack([mm(x) for mm in models])
    return {"out": out, "ref": ref, "g": list(g), "rg": [v.requires_grad for v in params.values()], "shapes": [tuple(v.shape) for v in params.values()]}


def afunctional(m):
    torch, nn, F = m.torch, m.nn, m.F
    AF = torch.autograd.functional
    w = torch.tensor(arr(22, 4), requires_grad=True)
    X = torch.tensor(arr(23, 6, 4)); y = torch.tensor(arr(24, 6))
    def f(w):
        return F.softplus(X @ w - y).pow(2).mean()
    v = torch.tensor(arr(25, 4))
    _, hv = AF.hvp(f, w, v, create_graph=True)
    _, vh = AF.vhp(f, w, v, create_graph=True)
    H = AF.hessian(f, w, create_graph=True)
    J = AF.jacobian(lambda w: torch.tanh(X @ w), w, create_graph=True, vectorize=True)
    s = hv.sum() + vh.pow(2).sum() + H.trace() + J.sum()
    gw, = torch.autograd.grad(s, w)
    # batched grads: Jacobian via is_grads_batched
    out = torch.sin(X @ w)
    eye = torch.eye(6, dtype=torch.float64)
    Jb, = torch.autograd.grad(out, w, grad_outputs=eye, is_grads_batched=True)
    g2 = torch.autograd.grad(f(w), [w, X.requires_grad_()], allow_unused=True, materialize_grads=True)
    return {"hv": hv, "vh": vh, "H": H, "J": J, "gw": gw, "Jb": Jb, "g2": list(g2)}


def version_error(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(9)
    lin = nn.Linear(3, 3).double()
    start = lin.weight._version  # (counted from the cast on, as in wd_hyper)
    x = torch.tensor(arr(32, 2, 3))
    loss = torch.tanh(lin(x)).pow(2).sum()
    g = torch.autograd.grad(loss, lin.parameters(), create_graph=True)
    with torch.no_grad():
        lin.weight.sub_(0.1 * g[0])
    out = {}
    try:
        sum(gi.sum() for gi in g).backward()
        out["err"] = None
    except RuntimeError as e:
        out["err"] = "modified by an inplace operation" in str(e)
    out["v"] = lin.weight._version - start
    # .data writes do not bump the version
    lin2 = nn.Linear(3, 3).double()
    loss = torch.tanh(lin2(x)).pow(2).sum()
    v0 = lin2.weight._version
    lin2.weight.data.mul_(0.5)
    loss.backward()
    out["v2"] = lin2.weight._version - v0
    out["g2"] = lin2.weight.grad
    return out


def func_misc(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(10)
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(5, 4)
            self.out = nn.Linear(4, 5, bias=False)
            self.out.weight = self.emb.weight
        def forward(self, idx):
            return self.out(self.emb(idx))
    net = Tied().double()
    idx = torch.tensor([0, 3, 4, 1])
    new_w = torch.tensor(arr(39, 5, 4), requires_grad=True)
    out1 = torch.func.functional_call(net, {"emb.weight": new_w}, (idx,))
    out2 = torch.func.functional_call(net, {"emb.weight": new_w}, (idx,), tie_weights=False)
    g1, = torch.autograd.grad(out1.sum(), new_w)
    res = {"o1": out1, "o2": out2, "g1": g1, "names": [n for n, _ in net.named_parameters()],
           "names_all": [n for n, _ in net.named_parameters(remove_duplicate=False)]}
    try:
        torch.func.functional_call(net, {"emb.weight": new_w}, (idx,), strict=True)
        res["strict"] = "ok"
    except RuntimeError as e:
        res["strict"] = "err"
    def f(a, b):
        y = (a * b).sin().sum()
        return y, {"y": y.detach() * 2}
    ga, aux = torch.func.grad(f, argnums=(0, 1), has_aux=True)(torch.tensor(arr(40, 3)), torch.tensor(arr(41, 3)))
    res["ga"] = list(ga); res["aux"] = aux["y"]
    J = torch.func.jacrev(lambda x: torch.nn.functional.log_softmax(x, -1), chunk_size=2)(torch.tensor(arr(42, 5)))
    res["J"] = J
    J2 = torch.func.jacfwd(lambda x: torch.nn.functional.layer_norm(x, (5,)), randomness="error")(torch.tensor(arr(43, 5)))
    res["J2"] = J2
    return res


def custom_fn(m):
    torch, nn, F = m.torch, m.nn, m.F
    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x
        @staticmethod
        def backward(ctx, go):
            x, = ctx.saved_tensors
            return 2 * x * go
    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 3
        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, go):
            x, = ctx.saved_tensors
            return 3 * x ** 2 * go
    x = torch.tensor(arr(44, 4), requires_grad=True)
    y = Square.apply(x).sum()
    g, = torch.autograd.grad(y, x, create_graph=True)
    gg, = torch.autograd.grad(g.sum(), x)
    z = Cube.apply(x).sum()
    g3, = torch.autograd.grad(z, x, create_graph=True)
    res = {"g": g, "gg": gg, "g3": g3, "g3rg": g3.requires_grad}
    try:
        torch.autograd.grad(g3.sum(), x)
        res["err"] = None
    except RuntimeError as e:
        res["err"] = "once_differentiable" in str(e) or "double backward" in str(e) or "does not require grad" in str(e)
    return res


def create_graph_backward(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(12)
    net = nn.Sequential(nn.Linear(3, 4), nn.ELU(), nn.Linear(4, 1)).double()
    x = torch.tensor(arr(47, 5, 3))
    always = torch.is_warn_always_enabled()
    torch.set_warn_always(True)  # (the warning comes once per process: an earlier test may have had it)
    try:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            loss = net(x).pow(2).mean()
            loss.backward(create_graph=True)
    finally:
        torch.set_warn_always(always)
    res = {"warned": any("create_graph=True" in str(i.message) for i in w)}
    res["has_fn"] = [p.grad.grad_fn is not None for p in net.parameters()]
    pen = sum(p.grad.pow(2).sum() for p in net.parameters())
    grads = torch.autograd.grad(pen, list(net.parameters()))
    res["pen_g"] = list(grads)
    for p in net.parameters():
        p.grad = None
    return res


def fwd_layers(m):
    torch, nn, F = m.torch, m.nn, m.F
    tf = torch.func
    torch.manual_seed(13)
    res = {}
    layers = {
        "gru": (nn.GRUCell(3, 4), (2, 3)),
        "lstmcell": (nn.LSTMCell(3, 4), (2, 3)),
        "gru_seq": (nn.GRU(3, 4, batch_first=True), (2, 5, 3)),
        "lstm_seq": (nn.LSTM(3, 4, num_layers=2), (5, 2, 3)),
        "conv": (nn.Conv2d(2, 3, 3, padding=1, stride=2), (1, 2, 5, 5)),
        "convT": (nn.ConvTranspose1d(2, 3, 3, stride=2), (1, 2, 5)),
        "gn": (nn.GroupNorm(2, 4), (2, 4, 3)),
        "ln": (nn.LayerNorm(4), (3, 4)),
        "bn_eval": (nn.BatchNorm1d(4).eval(), (3, 4)),
        "mha": (nn.MultiheadAttention(4, 2, batch_first=True), (2, 3, 4)),
        "pool": (nn.Sequential(nn.MaxPool1d(2), nn.AvgPool1d(2)), (1, 2, 8)),
        "acts": (nn.Sequential(nn.Linear(4, 4), nn.Mish(), nn.Hardswish(), nn.PReLU()), (3, 4)),
    }
    for i, (name, (mod, shape)) in enumerate(layers.items()):
        mod = mod.double()
        x = torch.tensor(arr(50 + i, *shape)); v = torch.tensor(arr(80 + i, *shape))
        def f(x, mod=mod, name=name):
            out = mod(x, x, x)[0] if name == "mha" else mod(x)
            if isinstance(out, tuple):
                out = out[0]
            return out
        try:
            y, jv = tf.jvp(f, (x,), (v,))
            # reverse-of-forward check: vjp
            _, fn = tf.vjp(f, x)
            vj, = fn(torch.ones_like(y))
            res[name] = [jv, vj]
        except Exception as e:
            res[name] = f"{type(e).__name__}: {str(e)[:150]}"
    return res


def hessians_layers(m):
    torch, nn, F = m.torch, m.nn, m.F
    tf = torch.func
    torch.manual_seed(14)
    res = {}
    mods = {"gru": (nn.GRUCell(2, 3), (2,)), "ln": (nn.LayerNorm(3), (3,)), "conv": (nn.Conv1d(1, 2, 3), (1, 1, 4)),
            "mha": (nn.MultiheadAttention(2, 1), (3, 1, 2)), "elu": (nn.Sequential(nn.Linear(2, 2), nn.ELU(), nn.Linear(2, 1)), (2,))}
    for i, (name, (mod, shape)) in enumerate(mods.items()):
        mod = mod.double()
        x = torch.tensor(arr(60 + i, *shape))
        def f(x, mod=mod, name=name):
            out = mod(x, x, x)[0] if name == "mha" else mod(x)
            return out.tanh().sum()
        try:
            res[name] = [tf.hessian(f)(x), tf.jacrev(tf.jacrev(f))(x)]
        except Exception as e:
            res[name] = f"{type(e).__name__}: {str(e)[:150]}"
    return res


def hooks_ckpt(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(22)
    net = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 6), nn.Tanh(), nn.Linear(6, 1)).double()
    x = torch.tensor(arr(110, 5, 3)); y = torch.tensor(arr(111, 5, 1))
    res = {}
    seen = []
    names = [n for n, _ in net.named_parameters()]
    params = list(net.parameters())
    h = params[0].register_hook(lambda g: seen.append(float(g.norm())) or g * 0.5)
    loss = F.mse_loss(net(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    h.remove()
    fast = [p - 0.1 * g for p, g in zip(params, grads)]
    for f in fast:
        f.retain_grad()
    fast[2].register_hook(lambda g: g.clamp(-0.01, 0.01))
    ql = F.mse_loss(torch.func.functional_call(net, dict(zip(names, fast)), (x * 2,)), y)
    ql.backward()
    res["seen"] = seen
    res["fast_grads"] = [f.grad for f in fast]
    res["pgrads"] = [p.grad for p in params]
    # non-reentrant checkpoint with double backward
    cp = torch.utils.checkpoint.checkpoint
    xx = x.clone().requires_grad_()
    out = cp(net[:3], xx, use_reentrant=False)
    out = net[3:](out)
    gx, = torch.autograd.grad(out.sum(), xx, create_graph=True)
    res["ck"] = torch.autograd.grad(gx.pow(2).sum(), list(net.parameters())[:4])
    # saved tensor hooks during second order
    packs = []
    def pack(t):
        packs.append(tuple(t.shape)); return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        l2 = F.mse_loss(net(x), y)
        g2 = torch.autograd.grad(l2, params[0], create_graph=True)[0]
    res["npacks"] = len(packs) > 0
    res["g2g"] = torch.autograd.grad(g2.sum(), params[2])[0]
    # full backward hook on a module during a create_graph backward
    calls = []
    hk = net[2].register_full_backward_hook(lambda mod, gin, gout: calls.append([None if g is None else g.shape for g in gin]))
    l3 = F.mse_loss(net(x), y)
    g3 = torch.autograd.grad(l3, params[0], create_graph=True)[0]
    torch.autograd.grad(g3.sum(), params[4])
    hk.remove()
    res["calls"] = [[tuple(s) if s is not None else None for s in c] for c in calls]
    return res


def multi_grad_hook(m):
    torch, nn, F = m.torch, m.nn, m.F
    a = torch.tensor(arr(112, 3), requires_grad=True); b = torch.tensor(arr(113, 3), requires_grad=True)
    got = []
    torch.autograd.graph.register_multi_grad_hook((a, b), lambda gs: got.append([None if g is None else g.sum() for g in gs]))
    y = (a * b).sin().sum()
    y.backward(create_graph=True)
    ga = a.grad
    a.grad = None; b.grad = None
    ga.sum().backward()
    return {"got": [[float(x) if x is not None else None for x in g] for g in got], "gb": [a.grad, b.grad]}


def test_func_transforms_over_functional_call():
    ours, _ = run_both(func_transforms, **TIGHT)
    for name, per in ours["per_ex"].items():  # the batch loss is the mean of the per-example losses
        np.testing.assert_allclose(per.mean(0), ours["gv"][name], rtol=1e-10, atol=1e-13)
    h = ours["H_w2"].reshape(10, 10)
    np.testing.assert_allclose(h, h.T, atol=1e-13)
    np.testing.assert_allclose(ours["jf_b0"], ours["H_b0"], rtol=1e-10, atol=1e-13)  # forward over reverse
    np.testing.assert_allclose(ours["Hx"], np.swapaxes(ours["Hx"], 1, 2), atol=1e-13)


def test_higher_order_gradients_of_layers():
    ours, _ = run_both(layer_higher, **TIGHT)
    # LayerNorm's output does not move when x moves along the ones: every derivative in x sums to 0 along features
    assert np.abs(ours["ln"][0].sum(-1)).max() < 1e-9
    assert all(np.isfinite(g).all() for g in ours["gru"] + ours["mha"] + ours["conv"] + ours["lstm"])


def test_layer_norm_third_derivative_is_that_of_its_composition():
    """The third derivative of a LayerNorm'd cubic equals that of LayerNorm written out (mean, var, rsqrt), which
    is 0 along the ones (LayerNorm ignores a shift). PyTorch's native layer_norm gives c·ones there instead (its
    double backward's own backward is not the derivative of its double backward), so this is not compared."""
    torch, nn = OURS.torch, OURS.nn
    torch.manual_seed(4)
    ln = nn.LayerNorm(5).double()
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([1.0, 2, 3, 0.5, -1]))
        ln.bias.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5]))

    def composed(x):
        mu = x.mean(-1, keepdim=True)
        var = ((x - mu) ** 2).mean(-1, keepdim=True)
        return (x - mu) / torch.sqrt(var + 1e-5) * ln.weight + ln.bias

    third = []
    for layer in (ln, composed):
        x = torch.tensor(arr(13, 3, 5), requires_grad=True)
        (g,) = torch.autograd.grad(layer(x).pow(3).sum(), x, create_graph=True)
        (gg,) = torch.autograd.grad(g.pow(2).sum(), x, create_graph=True)
        third.append(torch.autograd.grad((gg * torch.tensor(arr(14, 3, 5))).sum(), x)[0].numpy())
    np.testing.assert_allclose(third[0], third[1], rtol=1e-7, atol=1e-7)
    assert np.abs(third[0].sum(-1)).max() < 1e-6


def test_ensemble_with_stack_module_state():
    ours, _ = run_both(ensemble, **TIGHT)
    np.testing.assert_allclose(ours["out"], ours["ref"], rtol=1e-12)
    assert ours["shapes"][0] == (4, 6, 3) and all(ours["rg"])


def test_autograd_functional_hvp_vhp_hessian_batched_grads():
    ours, _ = run_both(afunctional, **TIGHT)
    np.testing.assert_allclose(ours["hv"], ours["vh"], rtol=1e-10)  # a symmetric Hessian
    np.testing.assert_allclose(ours["H"] @ arr(25, 4), ours["hv"], rtol=1e-10)
    X, w = arr(23, 6, 4), arr(22, 4)
    np.testing.assert_allclose(ours["Jb"], np.cos(X @ w)[:, None] * X, rtol=1e-12)
    assert ours["g2"][1].shape == (6, 4)


def test_in_place_parameter_writes_and_versions():
    ours, _ = run_both(version_error, **TIGHT)
    assert ours["err"] is None and ours["v"] == 1 and ours["v2"] == 0


def test_functional_call_tied_weights_and_grad_options():
    ours, _ = run_both(func_misc, **TIGHT)
    assert ours["names"] == ["emb.weight"] and ours["names_all"] == ["emb.weight", "out.weight"]
    assert ours["strict"] == "ok"
    assert not np.allclose(ours["o1"], ours["o2"])  # tie_weights=False leaves out.weight as it was


def test_custom_function_double_backward_and_once_differentiable():
    ours, _ = run_both(custom_fn, **TIGHT)
    np.testing.assert_allclose(ours["gg"], [2.0] * 4)
    assert ours["err"] is True and ours["g3rg"] is False


def test_backward_with_create_graph_then_penalty():
    ours, _ = run_both(create_graph_backward, **TIGHT)
    assert ours["warned"] and ours["has_fn"] == [True] * 4


def test_forward_mode_through_layers_is_adjoint_to_reverse():
    ours, _ = run_both(fwd_layers, **TIGHT)
    for i, (name, (jv, vj)) in enumerate(ours.items()):
        v = arr(80 + i, *vj.shape)
        assert jv.sum() == pytest.approx((vj * v).sum(), rel=1e-9, abs=1e-12), name  # <Jv, 1> = <v, Jᵀ1>


def test_hessians_of_layers():
    ours, _ = run_both(hessians_layers, **TIGHT)
    for name, (h, jj) in ours.items():
        np.testing.assert_allclose(h, jj, rtol=1e-10, atol=1e-13, err_msg=name)
        n = int(np.prod(h.shape[:h.ndim // 2]))
        np.testing.assert_allclose(h.reshape(n, n), h.reshape(n, n).T, atol=1e-12, err_msg=name)


def test_hooks_on_fast_weights_checkpoint_and_saved_tensor_hooks():
    ours, _ = run_both(hooks_ckpt, **TIGHT)
    assert len(ours["seen"]) == 1 and ours["npacks"]
    assert np.abs(ours["fast_grads"][2]).max() <= 0.01  # the clamping hook on a fast weight
    assert ours["calls"] == [[(5, 6)]]  # the full backward hook, once, in the create_graph backward


def test_multi_grad_hook_in_a_create_graph_backward():
    ours, _ = run_both(multi_grad_hook, **TIGHT)
    assert len(ours["got"]) == 2 and ours["got"][0][0] is not None
