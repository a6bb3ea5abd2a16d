# ruff: noqa: B007, B008, B023, E501, E731, E741, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Privacy programs as their reference PyTorch code writes them, each run on chainrule and on PyTorch from the same
seed (tests/pytorch_programs.py), comparing values and gradients, with invariants and NumPy checks that hold
without PyTorch.

- DP-SGD's per-sample gradients three ways: Opacus-style forward/full-backward hooks and einsum for Linear, Conv2d
  (``F.unfold``, groups, stride, dilation), Embedding, LayerNorm and GroupNorm; ``torch.func`` (``vmap(grad)`` over
  ``functional_call`` with parameters and buffers, ``has_aux``, ``grad_and_value``); micro-batch loops with
  ``clip_grad_norm_``; ``autograd.grad(is_grads_batched=True)``; ``nn.utils._per_sample_grad.call_for_per_sample_grads``
  under an Opacus-style DPOptimizer; a MultiheadAttention model under vmap (dropout's draws in both randomness
  modes); what full backward hooks see around view-returning modules; ghost clipping's norms; per-sample clipping, Gaussian
  noise from a ``Generator``, RDP and GDP accounting (``lgamma``, ``logsumexp``, ``special.ndtr``/``log_ndtr``);
- federated learning: FedAvg by ``state_dict`` arithmetic over ``copy.deepcopy`` clients (BatchNorm buffers and
  ``num_batches_tracked``), FedProx's proximal term, FedAdam on a pseudo-gradient with
  ``parameters_to_vector``/``vector_to_parameters``, SCAFFOLD's control variates, ``stack_module_state``, checkpoints
  through ``torch.save``/``load(weights_only=True)``, ``load_state_dict(strict=False, assign=True)`` and its errors,
  robust aggregation (median, trimmed mean, Krum, geometric median, signSGD, top-k with error feedback), pairwise
  secure-aggregation masks from seeded generators (float and modular integer) and the generators' draws; what
  shares memory in a round (state_dict, vector_to_parameters, assign=True, .data); a top-k delta as a COO tensor;
- attacks and audits: Deep Leakage from Gradients with LBFGS (second order through a CNN), membership inference
  (ROC AUC by ``argsort``/``cumsum``/``trapezoid``), PATE's noisy argmax, randomised response;
- influence functions and unlearning: Hessian-vector products by double ``autograd.grad``, ``func.jvp(grad)``,
  ``func.vjp``, ``func.hvp``, ``autograd.functional.hvp/vhp/hessian``, conjugate gradients, LiSSA, a Newton step
  removing a sample, Hutchinson's trace through a CNN with smooth activations.
"""

import copy
import importlib
import io
import math

import numpy as np
import pytest

from .pytorch_programs import run_both


def _func(m):
    return m.torch.func


def _nn_utils(m):
    return m.nn.utils


# ----------------------------------------------------------------------------------------------
# DP-SGD: per-sample gradients
# ----------------------------------------------------------------------------------------------


def opacus_hooks(m):
    """Opacus's GradSampleModule in small: forward hooks keep each layer's input, full backward hooks its grad_output,
    and einsum forms the per-sample gradients of Linear, Conv2d (through unfold), Embedding (one-hot and index_add_)
    and LayerNorm; then per-sample clipping over all parameters and Gaussian noise from a generator."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 4)
            self.conv = nn.Conv2d(1, 3, 3, padding=1)
            self.ln = nn.LayerNorm(4)
            self.fc = nn.Linear(3 * 4 * 4 + 4, 2)

        def forward(self, img, tok):
            e = self.ln(self.emb(tok)).mean(1)
            c = F.relu(self.conv(img)).flatten(1)
            return self.fc(torch.cat([c, e], 1))

    net = Net()
    acts, grads = {}, {}

    def fwd(mod, inp, out):
        acts[mod] = inp[0].detach()

    def bwd(mod, gin, gout):
        grads[mod] = gout[0].detach()

    handles = []
    for mod in [net.emb, net.conv, net.ln, net.fc]:
        handles.append(mod.register_forward_hook(fwd))
        handles.append(mod.register_full_backward_hook(bwd))
    img = torch.randn(5, 1, 4, 4)
    tok = torch.randint(0, 10, (5, 3))
    y = torch.randint(0, 2, (5,))
    with pytest.warns(UserWarning, match="no inputs require gradients"):
        loss = F.cross_entropy(net(img, tok), y, reduction="sum")
        loss.backward()
    ps = {}
    A, B = acts[net.fc], grads[net.fc]
    ps["fc.weight"] = torch.einsum("ni,nj->nij", B, A)
    ps["fc.bias"] = B
    A, B = acts[net.conv], grads[net.conv]
    U = F.unfold(A, kernel_size=3, padding=1)
    Bf = B.reshape(B.shape[0], B.shape[1], -1)
    ps["conv.weight"] = torch.einsum("noq,nkq->nok", Bf, U).reshape(5, *net.conv.weight.shape)
    ps["conv.bias"] = Bf.sum(2)
    A, B = acts[net.emb], grads[net.emb]
    ps["emb.weight"] = torch.einsum("nti,ntd->nid", F.one_hot(A, num_classes=10).to(B.dtype), B)
    by_index_add = torch.zeros(5, 10, 4)
    for i in range(5):
        by_index_add[i].index_add_(0, A[i], B[i])
    A, B = acts[net.ln], grads[net.ln]
    normed = F.layer_norm(A, net.ln.normalized_shape, eps=net.ln.eps)
    ps["ln.weight"] = (normed * B).sum(1)
    ps["ln.bias"] = B.sum(1)
    for h in handles:
        h.remove()
    out = {"per_sample": ps, "by_index_add": by_index_add,
           "grads": {n: p.grad.clone() for n, p in net.named_parameters()}}
    norms = torch.stack([ps[n].flatten(1).norm(2, dim=1) for n, _ in net.named_parameters()], 1).norm(2, dim=1)
    factor = (1.0 / (norms + 1e-6)).clamp(max=1.0)
    g = torch.Generator().manual_seed(42)
    noisy = {}
    for n, p in net.named_parameters():
        clipped = torch.einsum("n,n...->...", factor, ps[n])
        noisy[n] = (clipped + torch.normal(0.0, 1.1, size=p.shape, generator=g)) / 5
    out.update(norms=norms, factor=factor, noisy=noisy)
    return out


def test_opacus_style_hooks_and_einsum():
    ours, _ = run_both(opacus_hooks, rtol=1e-4, atol=1e-5)
    for name, grad in ours["grads"].items():  # the per-sample gradients add up to the batch's
        np.testing.assert_allclose(ours["per_sample"][name].sum(0), grad, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["by_index_add"], ours["per_sample"]["emb.weight"], rtol=1e-5, atol=1e-6)
    assert (ours["factor"] <= 1).all() and ours["per_sample"]["conv.weight"].shape == (5, 3, 1, 3, 3)


def micro_batches(m):
    """DP-SGD by a loop of micro-batches of one sample: backward, clip_grad_norm_, add up; then noise and SGD."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = optim.SGD(model.parameters(), lr=0.1)
    X = torch.randn(6, 4)
    y = torch.randint(0, 3, (6,))
    g = torch.Generator()
    g.manual_seed(7)
    totals, clipped_norms = [], []
    for step in range(2):
        opt.zero_grad()
        summed = [torch.zeros_like(p) for p in model.parameters()]
        for xi, yi in zip(X, y):
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(xi.unsqueeze(0)), yi.unsqueeze(0)).backward()
            totals.append(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5))
            clipped_norms.append(torch.norm(torch.stack([p.grad.norm() for p in model.parameters()])))
            for s, p in zip(summed, model.parameters()):
                s.add_(p.grad)
        for s, p in zip(summed, model.parameters()):
            p.grad = (s + torch.randn(p.shape, generator=g) * 0.5) / len(X)
        opt.step()
    return {"params": [p.detach().clone() for p in model.parameters()], "totals": torch.stack(totals),
            "clipped": torch.stack(clipped_norms)}


def test_dp_sgd_by_micro_batches():
    ours, _ = run_both(micro_batches, rtol=1e-5, atol=1e-6)
    expected = np.minimum(ours["totals"], 0.5)
    np.testing.assert_allclose(ours["clipped"], expected, rtol=1e-5)


def func_per_sample(m):
    """torch.func's DP-SGD: vmap(grad(loss, has_aux=True)) over functional_call with (params, buffers), a GroupNorm
    (no batch statistics), per-sample clipping and noise, the update written back under no_grad."""
    torch, nn, F = m.torch, m.nn, m.F
    tf = _func(m)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.GroupNorm(2, 6), nn.ReLU(), nn.Linear(6, 2))
    model.register_buffer("scale", torch.tensor(2.0))
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_fn(params, buffers, x, t):
        out = tf.functional_call(model, (params, buffers), (x.unsqueeze(0),))
        return F.cross_entropy(out * buffers["scale"], t.unsqueeze(0)), out.squeeze(0)

    X, T = torch.randn(7, 4), torch.randint(0, 2, (7,))
    g, outs = tf.vmap(tf.grad(loss_fn, has_aux=True), in_dims=(None, None, 0, 0))(params, buffers, X, T)
    loop = []
    for i in range(7):
        model.zero_grad()
        F.cross_entropy(model(X[i:i + 1]) * 2.0, T[i:i + 1]).backward()
        loop.append({k: p.grad.clone() for k, p in model.named_parameters()})
    flat = torch.cat([v.reshape(7, -1) for v in g.values()], 1)
    norms = torch.linalg.vector_norm(flat, dim=1)
    clip = torch.clamp(1.0 / norms, max=1.0)
    gen = torch.Generator().manual_seed(3)
    new = {}
    for k, v in g.items():
        c = (v * clip.view(-1, *[1] * (v.dim() - 1))).sum(0)
        c += torch.randn(c.shape, generator=gen)
        new[k] = params[k] - 0.1 * c / 7
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(new[k])
    return {"g": g, "loop": {k: torch.stack([d[k] for d in loop]) for k in g}, "outs": outs, "norms": norms,
            "after": {k: p.detach().clone() for k, p in model.named_parameters()}}


def test_per_sample_gradients_by_vmap_over_functional_call():
    ours, _ = run_both(func_per_sample, rtol=1e-4, atol=1e-5)
    for k in ours["g"]:
        np.testing.assert_allclose(ours["g"][k], ours["loop"][k], rtol=1e-4, atol=1e-6)
    assert ours["outs"].shape == (7, 2)


def text_grad_and_value(m):
    """vmap(grad_and_value) over an embedding model (padding_idx), against a loop of one-sample backward passes."""
    torch, nn, F = m.torch, m.nn, m.F
    tf = _func(m)
    torch.manual_seed(2)

    class TextModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(12, 6, padding_idx=0)
            self.proj = nn.Linear(6, 5)
            self.ln = nn.LayerNorm(5)
            self.out = nn.Linear(5, 2)

        def forward(self, tok):
            return self.out(self.ln(torch.tanh(self.proj(self.emb(tok))).mean(1)))

    model = TextModel()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def loss_fn(p, tok, y):
        return F.cross_entropy(tf.functional_call(model, p, (tok.unsqueeze(0),)), y.unsqueeze(0))

    tok, y = torch.randint(0, 12, (4, 5)), torch.randint(0, 2, (4,))
    gv, lv = tf.vmap(tf.grad_and_value(loss_fn), in_dims=(None, 0, 0))(params, tok, y)
    loop = []
    for i in range(4):
        model.zero_grad()
        F.cross_entropy(model(tok[i:i + 1]), y[i:i + 1]).backward()
        loop.append({k: p.grad.clone() for k, p in model.named_parameters()})
    return {"g": gv, "loss": lv, "loop": {k: torch.stack([d[k] for d in loop]) for k in gv}, "tok": tok}


def test_per_sample_gradients_of_an_embedding_model():
    ours, _ = run_both(text_grad_and_value, rtol=1e-4, atol=1e-6)
    for k in ours["g"]:
        np.testing.assert_allclose(ours["g"][k], ours["loop"][k], rtol=1e-4, atol=1e-6)
    assert not ours["g"]["emb.weight"][:, 0].any()  # the padding row never gets a gradient


def grouped_conv_and_group_norm(m):
    """Per-sample gradients of a grouped, strided, dilated Conv2d (unfold, split by group) and of a GroupNorm's
    weight, from hooks that keep the input (forward pre-hook) and grad_output (full backward pre-hook)."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=2).double()
    gn = nn.GroupNorm(3, 6).double()
    x = torch.randn(3, 4, 7, 6, dtype=torch.float64)
    saved = {}
    conv.register_forward_hook(lambda mod, i, o: saved.__setitem__("a", i[0].detach()))
    conv.register_full_backward_hook(lambda mod, gi, go: saved.__setitem__("b", go[0].detach()))
    gn.register_forward_pre_hook(lambda mod, args: saved.__setitem__("gn_in", args[0].detach()))
    gn.register_full_backward_pre_hook(lambda mod, go: saved.__setitem__("gn_go", go[0].detach()))
    with pytest.warns(UserWarning, match="no inputs require gradients"):
        (gn(conv(x)) ** 2).sum().backward()
    A, B = saved["a"], saved["b"]
    n, G = A.shape[0], conv.groups
    U = F.unfold(A, conv.kernel_size, dilation=conv.dilation, padding=conv.padding, stride=conv.stride)
    Bf = B.reshape(n, -1, U.shape[-1])
    U, Bf = U.view(n, G, -1, U.shape[-1]), Bf.view(n, G, -1, Bf.shape[-1])
    gs = torch.einsum("ngrq,ngpq->ngrp", Bf, U).reshape(n, *conv.weight.shape)
    z = saved["gn_in"].view(n, 3, -1)
    xn = ((z - z.mean(-1, keepdim=True)) / torch.sqrt(z.var(-1, unbiased=False, keepdim=True) + gn.eps))
    xn = xn.view_as(saved["gn_in"])
    gn_w = (xn * saved["gn_go"]).sum((2, 3))
    return {"conv_ps": gs, "conv_grad": conv.weight.grad, "gn_ps": gn_w, "gn_grad": gn.weight.grad,
            "group_norm": F.group_norm(saved["gn_in"], 3, eps=gn.eps), "xn": xn}


def test_per_sample_gradients_of_a_grouped_dilated_conv():
    ours, _ = run_both(grouped_conv_and_group_norm, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["conv_ps"].sum(0), ours["conv_grad"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["gn_ps"].sum(0), ours["gn_grad"], rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(ours["group_norm"], ours["xn"], atol=1e-12)


def ghost_clipping(m):
    """Ghost clipping's per-sample gradient norms of a Linear on sequences, ||B_i^T A_i||^2 = <A_i A_i^T, B_i B_i^T>,
    without the per-sample gradients; post-accumulate-grad hooks; a full backward hook replacing grad_input;
    per-sample gradients by autograd.grad(is_grads_batched=True)."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)
    lin = nn.Linear(5, 3)
    x = torch.randn(4, 7, 5)
    acts = {}
    lin.register_forward_hook(lambda mod, i, o: acts.__setitem__("a", i[0]))
    lin.register_full_backward_hook(lambda mod, gin, gout: acts.__setitem__("b", gout[0]))
    with pytest.warns(UserWarning, match="no inputs require gradients"):
        lin(x).pow(2).sum().backward()
    A, B = acts["a"].detach(), acts["b"].detach()
    ghost = (torch.einsum("bik,bjk->bij", A, A) * torch.einsum("bik,bjk->bij", B, B)).sum((1, 2))
    true = torch.einsum("bto,bti->boi", B, A).flatten(1).pow(2).sum(1)
    got = []
    lin.zero_grad()
    for p in lin.parameters():
        p.register_post_accumulate_grad_hook(lambda p: got.append(p.grad.clone()))
    with pytest.warns(UserWarning, match="no inputs require gradients"):
        lin(x).sum().backward()
    lin2 = nn.Linear(5, 5)
    lin2.register_full_backward_hook(lambda mod, gi, go: (gi[0] * 0.5,))
    xx = torch.randn(2, 5, requires_grad=True)
    lin2(xx).sum().backward()
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    X, y = torch.randn(6, 3), torch.randint(0, 2, (6,))
    losses = F.cross_entropy(model(X), y, reduction="none")
    batched = torch.autograd.grad(losses, list(model.parameters()), grad_outputs=(torch.eye(6),),
                                  is_grads_batched=True, retain_graph=True)
    full = torch.autograd.grad(losses.sum(), list(model.parameters()))  # (after: the batched call retains)
    return {"ghost": ghost, "true": true, "got": got, "xx_grad": xx.grad, "lin2_w": lin2.weight.detach(),
            "batched": batched, "full": full}


def test_ghost_clipping_norms_and_batched_grads():
    ours, _ = run_both(ghost_clipping, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["ghost"], ours["true"], rtol=1e-4)
    np.testing.assert_allclose(ours["xx_grad"], 0.5 * np.broadcast_to(ours["lin2_w"].sum(0), (2, 5)), rtol=1e-6)
    for b, f in zip(ours["batched"], ours["full"]):
        assert b.shape[0] == 6
        np.testing.assert_allclose(b.sum(0), f, rtol=1e-5, atol=1e-6)
    assert len(ours["got"]) == 2  # one call per parameter; the bias's gradient of lin(x).sum() counts the 4 * 7 rows
    np.testing.assert_allclose([g for g in ours["got"] if g.shape == (3,)][0], np.full(3, 28.0))


def rdp_accounting(m):
    """The subsampled Gaussian mechanism's RDP at integer orders (Mironov et al.), as float64 tensors: a
    binomial expansion by lgamma and logsumexp; epsilon by the classic and the improved conversion; the GDP
    central-limit approximation's delta(eps) by special.ndtr and by Normal.cdf; log_ndtr far in the tail."""
    torch = m.torch
    q, sigma, steps = 0.01, 1.1, 1000
    orders = torch.arange(2, 33, dtype=torch.float64)

    def log_a_int(alpha):
        alpha = int(alpha)
        i = torch.arange(alpha + 1, dtype=torch.float64)
        log_coef = (torch.lgamma(torch.tensor(alpha + 1.0, dtype=torch.float64)) - torch.lgamma(i + 1)
                    - torch.lgamma(alpha - i + 1))
        s = log_coef + i * math.log(q) + (alpha - i) * math.log(1 - q) + (i * i - i) / (2 * sigma ** 2)
        return torch.logsumexp(s, dim=0)

    rdp = torch.stack([log_a_int(a) / (a - 1) for a in orders]) * steps
    delta = 1e-5
    eps = rdp + math.log(1 / delta) / (orders - 1)
    eps2 = (rdp - (torch.log(torch.tensor(delta, dtype=torch.float64)) + torch.log(orders)) / (orders - 1)
            + torch.log((orders - 1) / orders))
    mu = torch.tensor(q * math.sqrt(steps) * math.sqrt(math.exp(sigma ** -2) - 1), dtype=torch.float64)
    e = torch.tensor(1.0, dtype=torch.float64)
    delta_gdp = torch.special.ndtr(-e / mu + mu / 2) - torch.exp(e) * torch.special.ndtr(-e / mu - mu / 2)
    normal = torch.distributions.Normal(0.0, 1.0)
    delta_gdp2 = normal.cdf(-e / mu + mu / 2) - torch.exp(e) * normal.cdf(-e / mu - mu / 2)
    x = torch.tensor([0.5, 1.5], dtype=torch.float64, requires_grad=True)
    (torch.special.log_ndtr(x).sum() + torch.special.xlogy(x, x + 1).sum() + torch.special.erfc(x).sum()).backward()
    return {"rdp": rdp, "eps": eps, "best": torch.argmin(eps), "eps2": eps2, "delta_gdp": delta_gdp,
            "delta_gdp2": delta_gdp2,
            "log_ndtr": torch.special.log_ndtr(torch.tensor([-40.0, -5.0, 0.0, 3.0], dtype=torch.float64)),
            "erfcx": torch.special.erfcx(torch.tensor([0.5, 10.0, 30.0], dtype=torch.float64)), "x_grad": x.grad}


def test_rdp_and_gdp_accounting():
    ours, _ = run_both(rdp_accounting, rtol=1e-10, atol=1e-12)
    q, sigma = 0.01, 1.1
    for k, alpha in ((0, 2), (6, 8)):  # the expansion by hand in Python floats
        terms = [math.comb(alpha, i) * q ** i * (1 - q) ** (alpha - i) * math.exp((i * i - i) / (2 * sigma ** 2))
                 for i in range(alpha + 1)]
        assert ours["rdp"][k] == pytest.approx(1000 * math.log(sum(terms)) / (alpha - 1), rel=1e-12)
    assert ours["eps"][ours["best"]] == ours["eps"].min() and (ours["eps2"] < ours["eps"]).all()
    assert ours["delta_gdp"] == pytest.approx(ours["delta_gdp2"], rel=1e-6)
    assert ours["log_ndtr"][0] == pytest.approx(-804.6084420137538, rel=1e-12)
    phi = np.exp(-0.5 * np.array([0.5, 1.5]) ** 2) / math.sqrt(2 * math.pi)
    ndtr = np.array([0.5 * math.erfc(-v / math.sqrt(2)) for v in (0.5, 1.5)])
    by_hand = phi / ndtr + np.log(np.array([1.5, 2.5])) + np.array([0.5, 1.5]) / np.array([1.5, 2.5]) - 2 / math.sqrt(math.pi) * np.exp(-np.array([0.5, 1.5]) ** 2)
    np.testing.assert_allclose(ours["x_grad"], by_hand, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Federated learning
# ----------------------------------------------------------------------------------------------


def fedavg(m):
    """FedAvg over deep-copied clients of a CNN with BatchNorm: local SGD with momentum, then the weighted average
    of their state_dicts (num_batches_tracked, an integer buffer, by floor division), loaded strictly; a partial
    load with strict=False reports its missing keys."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.bn = nn.BatchNorm2d(2)
            self.fc = nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))

    global_model = CNN()
    clients = [(torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))) for _ in range(3)]
    sizes = [8, 8, 8]
    for rnd in range(2):
        local_states = []
        for X, y in clients:
            local = copy.deepcopy(global_model)
            local.train()
            opt = optim.SGD(local.parameters(), lr=0.05, momentum=0.9)
            for e in range(2):
                opt.zero_grad()
                F.cross_entropy(local(X), y).backward()
                opt.step()
            local_states.append(copy.deepcopy(local.state_dict()))
        avg = copy.deepcopy(local_states[0])
        for k in avg.keys():
            if avg[k].dtype == torch.long:
                avg[k] = local_states[0][k].clone()
                for s in local_states[1:]:
                    avg[k] += s[k]
                avg[k] = torch.div(avg[k], len(local_states), rounding_mode="floor")
                continue
            avg[k] = avg[k] * sizes[0]
            for i in range(1, len(local_states)):
                avg[k] += local_states[i][k] * sizes[i]
            avg[k] = torch.div(avg[k], sum(sizes))
        global_model.load_state_dict(avg, strict=True)
    result = global_model.load_state_dict({k: v for k, v in avg.items() if "bn" not in k}, strict=False)
    return {"state": dict(global_model.state_dict()), "last_clients": local_states, "missing": list(result.missing_keys),
            "unexpected": list(result.unexpected_keys), "long": global_model.bn.num_batches_tracked.dtype == torch.long}


def test_fedavg_by_state_dict_arithmetic():
    ours, _ = run_both(fedavg, rtol=1e-5, atol=1e-6)
    for k, v in ours["state"].items():
        if k != "bn.num_batches_tracked":
            np.testing.assert_allclose(v, np.mean([s[k] for s in ours["last_clients"]], 0), rtol=1e-5, atol=1e-6)
    assert ours["state"]["bn.num_batches_tracked"] == 4 and ours["long"]
    # (BatchNorm's own loading fills a missing num_batches_tracked with its current count, as PyTorch's)
    assert ours["missing"] == ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
    assert ours["unexpected"] == []


def fedprox_fedadam(m):
    """FedProx clients (the proximal term mu/2 ||w - w_global||^2) under a FedAdam server: the pseudo-gradient is
    minus the mean client delta, cut from a flat vector (parameters_to_vector) into each parameter's .grad; then
    vector_to_parameters into a copy."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    nnu = _nn_utils(m)
    torch.manual_seed(1)
    server = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))
    server_opt = optim.Adam(server.parameters(), lr=0.05, betas=(0.9, 0.99), eps=1e-3)
    data = [(torch.randn(10, 5), torch.randn(10, 1)) for _ in range(3)]
    mu, history = 0.1, []
    for rnd in range(3):
        gvec = nnu.parameters_to_vector(server.parameters()).detach()
        deltas = []
        for X, y in data:
            client = copy.deepcopy(server)
            global_params = [p.detach().clone() for p in server.parameters()]
            opt = optim.SGD(client.parameters(), lr=0.1)
            for _ in range(3):
                opt.zero_grad()
                loss = F.mse_loss(client(X), y)
                prox = 0.0
                for w, w0 in zip(client.parameters(), global_params):
                    prox = prox + (w - w0).norm(2) ** 2
                loss = loss + mu / 2 * prox
                loss.backward()
                opt.step()
            deltas.append(nnu.parameters_to_vector(client.parameters()).detach() - gvec)
        mean_delta = torch.stack(deltas).mean(0)
        server_opt.zero_grad()
        offset = 0
        for p in server.parameters():
            n = p.numel()
            p.grad = -mean_delta[offset:offset + n].view_as(p).clone()
            offset += n
        server_opt.step()
        history.append(loss.detach())
    vec = nnu.parameters_to_vector(server.parameters())
    other = copy.deepcopy(server)
    nnu.vector_to_parameters(vec * 0.5, other.parameters())
    state = server_opt.state_dict()
    return {"vec": vec, "other": list(other.parameters()), "history": history, "exp_avg": state["state"][0]["exp_avg"],
            "step": state["state"][0]["step"], "vec_requires_grad": vec.requires_grad,
            "other_leaf": [p.is_leaf for p in other.parameters()]}


def test_fedprox_clients_under_a_fedadam_server():
    ours, _ = run_both(fedprox_fedadam, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([p.ravel() for p in ours["other"]]), 0.5 * ours["vec"], rtol=1e-6)
    assert ours["step"] == 3 and ours["vec_requires_grad"] and all(ours["other_leaf"])


def scaffold(m):
    """SCAFFOLD: local SGD corrected by the control variates (p.grad.data.add_(c - c_i)), the variates' update, the
    server's step; then state_dict(keep_vars=True) and load_state_dict(assign=True)."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(5)
    server = nn.Linear(4, 2)
    c_global = [torch.zeros_like(p) for p in server.parameters()]
    data = [(torch.randn(8, 4), torch.randn(8, 2)) for _ in range(2)]
    c_local = [[torch.zeros_like(p) for p in server.parameters()] for _ in data]
    lr, K = 0.1, 3
    for rnd in range(2):
        dys, dcs = [], []
        for ci, (X, y) in enumerate(data):
            client = copy.deepcopy(server)
            opt = optim.SGD(client.parameters(), lr=lr)
            for _ in range(K):
                opt.zero_grad()
                F.mse_loss(client(X), y).backward()
                for p, c, cl in zip(client.parameters(), c_global, c_local[ci]):
                    p.grad.data.add_(c - cl)
                opt.step()
            new_c = [cl - c + (p0.data - p.data) / (K * lr)
                     for p, p0, c, cl in zip(client.parameters(), server.parameters(), c_global, c_local[ci])]
            dys.append([p.data - p0.data for p, p0 in zip(client.parameters(), server.parameters())])
            dcs.append([n - o for n, o in zip(new_c, c_local[ci])])
            c_local[ci] = new_c
        with torch.no_grad():
            for j, p in enumerate(server.parameters()):
                p.add_(torch.stack([d[j] for d in dys]).mean(0))
                c_global[j] += torch.stack([d[j] for d in dcs]).mean(0)
    sd = server.state_dict(keep_vars=True)
    server2 = nn.Linear(4, 2)
    server2.load_state_dict({k: v.detach() * 2 for k, v in sd.items()}, assign=True)
    return {"params": list(server.parameters()), "c": c_global, "c_local": c_local,
            "keep_vars": [v.requires_grad for v in sd.values()], "assigned": list(server2.parameters()),
            "assigned_requires_grad": [p.requires_grad for p in server2.parameters()]}


def test_scaffold_control_variates():
    ours, _ = run_both(scaffold, rtol=1e-5, atol=1e-6)
    for j in range(2):  # the server's variate is the mean of the clients'
        np.testing.assert_allclose(ours["c"][j], (ours["c_local"][0][j] + ours["c_local"][1][j]) / 2, atol=1e-6)
        np.testing.assert_allclose(ours["assigned"][j], 2 * ours["params"][j], rtol=1e-6)
    assert ours["keep_vars"] == [True, True] and ours["assigned_requires_grad"] == [True, True]


def stacked_clients_and_checkpoints(m):
    """Clients stacked by func.stack_module_state and averaged; the global model through torch.save / torch.load
    (weights_only=True) as a message; FedPer's partial load; load_state_dict's size and key errors; functional_call
    with the averaged (params, buffers) and the deprecated stateless.functional_call."""
    torch, nn = m.torch, m.nn
    tf = _func(m)
    torch.manual_seed(3)
    clients = [nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)) for _ in range(3)]
    params, buffers = tf.stack_module_state(clients)
    avg_p = {k: v.mean(0) for k, v in params.items()}
    avg_b = {k: (v.float().mean(0) if v.is_floating_point() else v[0]) for k, v in buffers.items()}
    glob = copy.deepcopy(clients[0])
    glob.load_state_dict({**avg_p, **avg_b})
    buf = io.BytesIO()
    torch.save(glob.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    personal = clients[1]
    result = personal.load_state_dict({k: v for k, v in sd.items() if not k.startswith("2.")}, strict=False)
    x = torch.randn(5, 3)
    out = tf.functional_call(glob, (avg_p, avg_b), (x,))
    bad = copy.deepcopy(sd)
    bad["0.weight"] = torch.zeros(4, 4)
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
        personal.load_state_dict(bad)
    extra = copy.deepcopy(sd)
    extra["extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "extra"'):
        personal.load_state_dict(extra, strict=True)
    with pytest.warns(FutureWarning, match="stateless.functional_call"):
        out2 = nn.utils.stateless.functional_call(glob, avg_p, (x,))
    return {"sd": dict(sd), "missing": list(result.missing_keys), "out": out, "out2": out2,
            "stacked": {k: v for k, v in params.items()}, "stacked_requires_grad": [v.requires_grad for v in params.values()]}


def test_stacked_clients_and_checkpoints():
    ours, _ = run_both(stacked_clients_and_checkpoints, rtol=1e-5, atol=1e-6)
    assert ours["missing"] == ["2.weight", "2.bias"] and all(ours["stacked_requires_grad"])
    np.testing.assert_allclose(ours["sd"]["0.weight"], ours["stacked"]["0.weight"].mean(0), rtol=1e-6)
    np.testing.assert_allclose(ours["out"], ours["out2"], rtol=1e-6)  # (eval-free: batch statistics both times)


def robust_aggregation(m):
    """Byzantine-robust aggregators over client updates with one outlier: coordinate-wise median, trimmed mean,
    Krum (cdist, topk), Weiszfeld's geometric median, signSGD's majority vote; top-k sparsification with error
    feedback (scatter_), stochastic rounding, norm clipping (DP-FedAvg)."""
    torch = m.torch
    torch.manual_seed(0)
    ups = torch.randn(7, 10)
    ups[0] += 50.0
    med = torch.median(ups, dim=0)
    s, _ = torch.sort(ups, dim=0)
    trimmed = s[1:-1].mean(0)
    d = torch.cdist(ups, ups) ** 2
    scores = torch.stack([torch.topk(d[i], 7 - 1 - 1, largest=False).values.sum() for i in range(7)])
    krum = ups[torch.argmin(scores)]
    z = ups.mean(0)
    for _ in range(10):
        w = 1.0 / torch.clamp(torch.norm(ups - z, dim=1), min=1e-8)
        z = (w[:, None] * ups).sum(0) / w.sum()
    flat = ups[1]
    vals, idx = torch.topk(flat.abs(), 3)
    sparse = torch.zeros_like(flat).scatter_(0, idx, flat[idx])
    g = torch.Generator().manual_seed(1)
    rounded = torch.floor(flat * 4 + torch.rand(flat.shape, generator=g)) / 4
    clipped = ups * torch.clamp(2.0 / ups.norm(dim=1, keepdim=True), max=1.0)
    return {"ups": ups, "median": med.values, "median_at": med.indices, "nanmedian": torch.nanmedian(ups, 0).values,
            "trimmed": trimmed, "scores": scores, "krum": krum, "geomedian": z,
            "sign": torch.sign(torch.sign(ups).sum(0)), "sparse": sparse, "residual": flat - sparse,
            "rounded": rounded, "kth": torch.kthvalue(ups, 3, dim=0).values,
            "quartiles": torch.quantile(ups, torch.tensor([0.25, 0.75]), dim=0), "clipped": clipped}


def test_robust_aggregation():
    ours, _ = run_both(robust_aggregation, rtol=1e-5, atol=1e-6)
    ups = ours["ups"]
    np.testing.assert_allclose(ours["median"], np.median(ups, 0))  # (7 rows: the middle one, as PyTorch's lower median)
    np.testing.assert_array_equal(np.take_along_axis(ups, ours["median_at"][None], 0)[0], ours["median"])
    np.testing.assert_allclose(ours["trimmed"], np.sort(ups, 0)[1:-1].mean(0), rtol=1e-6)
    np.testing.assert_allclose(ours["quartiles"], np.quantile(ups, [0.25, 0.75], axis=0), rtol=1e-5)
    np.testing.assert_allclose(ours["kth"], np.sort(ups, 0)[2])
    assert np.abs(ours["krum"]).max() < 10 and np.abs(ours["geomedian"]).max() < 5  # the outlier left out
    np.testing.assert_allclose(np.linalg.norm(ours["clipped"], axis=1), np.minimum(np.linalg.norm(ups, axis=1), 2.0),
                               rtol=1e-5)
    assert (ours["sparse"] != 0).sum() == 3 and np.allclose(ours["sparse"] + ours["residual"], ups[1])


def secure_aggregation(m):
    """Pairwise masks that cancel in the sum (a generator seeded per pair; mask added by the lower id, subtracted by
    the higher), self masks removed by the server, a modular integer version; generator state round trip."""
    torch = m.torch
    n_clients, dim = 4, 6
    torch.manual_seed(0)
    updates = [torch.randn(dim) for _ in range(n_clients)]
    masked = []
    for i in range(n_clients):
        y = updates[i].clone()
        for j in range(n_clients):
            if i == j:
                continue
            g = torch.Generator().manual_seed(min(i, j) * 1000 + max(i, j))
            mask = torch.randn(dim, generator=g)
            y = y + mask if i < j else y - mask
        g = torch.Generator()
        g.manual_seed(i + 77)
        masked.append(y + torch.rand(dim, generator=g))
    agg = torch.stack(masked).sum(0)
    for i in range(n_clients):
        g = torch.Generator()
        g.manual_seed(i + 77)
        agg = agg - torch.rand(dim, generator=g)
    q = [torch.round(u * 2 ** 10).to(torch.int64) for u in updates]
    g = torch.Generator().manual_seed(5)
    masks = [torch.randint(0, 2 ** 31, (dim,), generator=g, dtype=torch.int64) for _ in range(n_clients - 1)]
    masks.append((-torch.stack(masks).sum(0)) % 2 ** 31)
    qs = torch.stack([(qi + mk) % 2 ** 31 for qi, mk in zip(q, masks)]).sum(0) % 2 ** 31
    qs = torch.where(qs >= 2 ** 30, qs - 2 ** 31, qs)
    g2 = torch.Generator()
    g2.set_state(g.get_state())
    a, b = torch.randn(3, generator=g), torch.randn(3, generator=g2)
    return {"agg": agg, "true": torch.stack(updates).sum(0), "qs": qs, "q_true": torch.stack(q).sum(0), "a": a, "b": b,
            "seed": g.initial_seed(), "perm": torch.randperm(7, generator=g2),
            "multinomial": torch.multinomial(torch.tensor([0.1, 0.5, 0.4]), 5, replacement=True, generator=g2)}


def test_secure_aggregation_masks_cancel():
    ours, _ = run_both(secure_aggregation, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["agg"], ours["true"], atol=1e-5)
    np.testing.assert_array_equal(ours["qs"], ours["q_true"])
    np.testing.assert_array_equal(ours["a"], ours["b"])
    np.testing.assert_allclose(ours["a"], [0.0570927, -1.1893746, -0.5658849], rtol=1e-6)  # PyTorch's draws
    np.testing.assert_array_equal(ours["perm"], [2, 5, 6, 1, 3, 4, 0])
    np.testing.assert_array_equal(ours["multinomial"], [1, 1, 1, 1, 2])
    assert ours["seed"] == 5


# ----------------------------------------------------------------------------------------------
# Attacks and audits
# ----------------------------------------------------------------------------------------------


def deep_leakage_from_gradients(m):
    """Deep Leakage from Gradients (Zhu et al.): dummy data and a dummy soft label optimised by LBFGS so that their
    gradients match the shared ones (a double backward through a sigmoid CNN); iDLG's label from the last layer."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, stride=2), nn.Sigmoid(),
                                      nn.Conv2d(4, 4, 3, padding=1, stride=1), nn.Sigmoid())
            self.fc = nn.Linear(4 * 4 * 4, 5)

        def forward(self, x):
            out = self.body(x)
            return self.fc(out.view(out.size(0), -1))

    net = LeNet().double()
    for mod in net.modules():
        if hasattr(mod, "weight"):
            mod.weight.data.uniform_(-0.5, 0.5)
        if hasattr(mod, "bias") and mod.bias is not None:
            mod.bias.data.uniform_(-0.5, 0.5)
    gt = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    onehot = F.one_hot(torch.tensor([3]), 5).double()

    def cross_entropy_for_onehot(pred, target):
        return torch.mean(torch.sum(-target * F.log_softmax(pred, dim=-1), 1))

    dy_dx = torch.autograd.grad(cross_entropy_for_onehot(net(gt), onehot), net.parameters())
    original = [g.detach().clone() for g in dy_dx]
    dummy = torch.randn(gt.size(), dtype=torch.float64).requires_grad_(True)
    dummy_label = torch.randn(onehot.size(), dtype=torch.float64).requires_grad_(True)
    opt = optim.LBFGS([dummy, dummy_label], lr=0.5, max_iter=4)
    history = []
    for it in range(3):
        def closure():
            opt.zero_grad()
            dummy_loss = cross_entropy_for_onehot(net(dummy), F.softmax(dummy_label, dim=-1))
            dummy_grads = torch.autograd.grad(dummy_loss, net.parameters(), create_graph=True)
            diff = 0
            for gx, gy in zip(dummy_grads, original):
                diff += ((gx - gy) ** 2).sum()
            diff.backward()
            return diff

        history.append(opt.step(closure).detach())
    return {"history": torch.stack(history), "dummy": dummy.detach(), "dummy_label": dummy_label.detach(),
            "inferred": torch.argmin(torch.sum(original[-2], dim=-1), dim=-1)}


def test_deep_leakage_from_gradients():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (LBFGS's float() of the closure's loss says nothing, as PyTorch's)
        ours, _ = run_both(deep_leakage_from_gradients, rtol=1e-6, atol=1e-9)
    assert ours["history"][-1] < ours["history"][0] and ours["inferred"] == 3


def pate_and_randomised_response(m):
    """PATE's noisy-argmax aggregation of teacher votes (bincount, one_hot counts, Laplace and Gaussian noise),
    randomised response on labels, the exponential mechanism by multinomial."""
    torch, F = m.torch, m.F
    D = torch.distributions
    torch.manual_seed(3)
    n_teachers, n_classes, n_q = 10, 4, 6
    votes = torch.randint(0, n_classes, (n_teachers, n_q))
    counts = torch.stack([torch.bincount(votes[:, i], minlength=n_classes) for i in range(n_q)])
    lap = D.Laplace(torch.tensor(0.0), torch.tensor(1.0 / 0.5))
    labels = (counts.float() + lap.sample((n_q, n_classes))).argmax(1)
    g = torch.Generator().manual_seed(9)
    labels2 = torch.argmax(counts + torch.normal(0.0, 2.0, (n_q, n_classes), generator=g), dim=1)
    eps = 1.0
    keep = torch.bernoulli(torch.full((n_q,), math.exp(eps) / (math.exp(eps) + n_classes - 1))).bool()
    other = torch.randint(0, n_classes - 1, (n_q,))
    other = other + (other >= labels).long()
    probs = torch.softmax(eps * torch.tensor([1.0, 2.0, 0.5]) / 2, 0)
    return {"votes": votes, "counts": counts, "counts2": F.one_hot(votes, n_classes).sum(0), "labels": labels,
            "labels2": labels2, "rr": torch.where(keep, labels, other), "keep": keep, "other": other,
            "log_prob": lap.log_prob(torch.tensor([0.5, -1.0])),
            "laplace": D.laplace.Laplace(0.0, 2.0 / eps).sample((5,)),
            "choice": torch.multinomial(probs, 4, replacement=True),
            "geometric": D.Geometric(probs=torch.tensor(0.3)).sample((5,))}


def test_pate_and_randomised_response():
    ours, _ = run_both(pate_and_randomised_response)
    np.testing.assert_array_equal(ours["counts"], ours["counts2"])
    assert (ours["counts"].sum(1) == 10).all()
    np.testing.assert_array_equal(ours["rr"] == ours["labels"], ours["keep"])
    np.testing.assert_allclose(ours["log_prob"], np.log(0.25) - 0.5 * np.abs([0.5, -1.0]), rtol=1e-6)


def membership_inference(m):
    """A loss-threshold membership inference audit of an overfitted classifier: ROC AUC by sorting scores and
    cumulative sums (trapezoid and trapz), a threshold at a quantile, a LiRA-like Gaussian fit."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(4)
    target = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    Xin, yin = torch.randn(30, 5), torch.randint(0, 3, (30,))
    Xout, yout = torch.randn(30, 5), torch.randint(0, 3, (30,))
    opt = optim.Adam(target.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(target(Xin), yin).backward()
        opt.step()
    with torch.no_grad():
        li = F.cross_entropy(target(Xin), yin, reduction="none")
        lo = F.cross_entropy(target(Xout), yout, reduction="none")
    scores = torch.cat([-li, -lo])
    labels = torch.cat([torch.ones(30), torch.zeros(30)])
    order = torch.argsort(scores, descending=True)
    tps, fps = torch.cumsum(labels[order], 0), torch.cumsum(1 - labels[order], 0)
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    thr = torch.quantile(lo, 0.1)
    return {"scores": scores, "auc": torch.trapezoid(tpr, fpr),
            "auc2": torch.trapz(torch.cat([torch.zeros(1), tpr]), torch.cat([torch.zeros(1), fpr])), "thr": thr,
            "advantage": (li < thr).float().mean() - (lo < thr).float().mean(),
            "lira": torch.distributions.Normal(lo.mean(), lo.std(unbiased=True)).cdf(li)}


def test_membership_inference_audit():
    ours, _ = run_both(membership_inference, rtol=1e-4, atol=1e-6)
    s = ours["scores"]
    by_pairs = np.mean([[1.0 if a > b else 0.5 if a == b else 0.0 for b in s[30:]] for a in s[:30]])
    assert ours["auc2"] == pytest.approx(by_pairs, abs=1e-6) and 0.5 < ours["auc2"] <= 1


# ----------------------------------------------------------------------------------------------
# Influence functions and unlearning
# ----------------------------------------------------------------------------------------------


def influence_and_unlearning(m):
    """Koh & Liang's influence of training points on a test loss for L2-regularised logistic regression: H^{-1} g
    by conjugate gradients over Hessian-vector products (autograd.grad twice); the same HVP by func.jvp(grad) (and
    vmapped), func.vjp(grad), autograd.functional.hvp/vhp, Hessians by func.hessian and autograd.functional.hessian;
    unlearning one sample by a Newton step from the optimum (linalg.solve, cholesky_solve)."""
    torch, nn, F = m.torch, m.nn, m.F
    tf = _func(m)
    AF = torch.autograd.functional
    torch.manual_seed(0)
    X = torch.randn(20, 3, dtype=torch.float64)
    y = (torch.rand(20, dtype=torch.float64) > 0.5).double()
    model = nn.Linear(3, 1).double()
    params = list(model.parameters())

    def loss_at(idx=None):
        xs, ys = (X, y) if idx is None else (X[idx:idx + 1], y[idx:idx + 1])
        return (F.binary_cross_entropy_with_logits(model(xs).squeeze(-1), ys)
                + 0.01 * sum((p ** 2).sum() for p in params))

    def hvp(v):
        g = torch.autograd.grad(loss_at(), params, create_graph=True)
        return torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, v)), params)

    test_g = torch.autograd.grad(loss_at(0), params)
    x = [torch.zeros_like(p) for p in params]
    r = [t.clone() for t in test_g]
    p_ = [t.clone() for t in r]
    rs = sum((ri * ri).sum() for ri in r)
    for it in range(10):
        Ap = hvp(p_)
        alpha = rs / sum((pi * ai).sum() for pi, ai in zip(p_, Ap))
        x = [xi + alpha * pi for xi, pi in zip(x, p_)]
        r = [ri - alpha * ai for ri, ai in zip(r, Ap)]
        rs_new = sum((ri * ri).sum() for ri in r)
        if rs_new.sqrt() < 1e-10:
            break
        p_ = [ri + (rs_new / rs) * pi for ri, pi in zip(r, p_)]
        rs = rs_new
    influence = torch.stack([-sum((a * b).sum() for a, b in zip(torch.autograd.grad(loss_at(i), params), x))
                             for i in range(5)])
    pd = {k: v.detach() for k, v in model.named_parameters()}

    def floss(p):
        out = tf.functional_call(model, p, (X,)).squeeze(-1)
        return F.binary_cross_entropy_with_logits(out, y) + 0.01 * sum((q ** 2).sum() for q in p.values())

    v = {k: torch.ones_like(t) for k, t in pd.items()}
    _, hv_jvp = tf.jvp(tf.grad(floss), (pd,), (v,))
    hv_func = tf.vmap(lambda t: tf.jvp(tf.grad(floss), (pd,), (t,))[1])({k: t.expand(2, *t.shape) for k, t in v.items()})
    hv_func = {k: t[1] for k, t in hv_func.items()}
    _, vjp_fn = tf.vjp(tf.grad(floss), pd)
    hv_vjp = vjp_fn(v)[0]
    H = tf.hessian(floss)(pd)

    def flat_loss(w, b):
        return (F.binary_cross_entropy_with_logits((X @ w.t() + b).squeeze(-1), y)
                + 0.01 * ((w ** 2).sum() + (b ** 2).sum()))

    w, b = model.weight.detach(), model.bias.detach()
    _, hv_af = AF.hvp(flat_loss, (w, b), (torch.ones_like(w), torch.ones_like(b)))
    _, vh_af = AF.vhp(flat_loss, (w, b), (torch.ones_like(w), torch.ones_like(b)))
    H_af = AF.hessian(flat_loss, (w, b))
    theta = torch.cat([w.flatten(), b])

    def full_loss(theta, X, y):
        return (F.binary_cross_entropy_with_logits(X @ theta[:3] + theta[3], y, reduction="sum")
                + 0.05 * theta.dot(theta))

    for _ in range(5):
        theta = theta - torch.linalg.solve(AF.hessian(lambda t: full_loss(t, X, y), theta),
                                           AF.jacobian(lambda t: full_loss(t, X, y), theta))
    keep = torch.arange(20) != 0
    Hk = AF.hessian(lambda t: full_loss(t, X[keep], y[keep]), theta)
    gk = tf.grad(lambda t: full_loss(t, X[keep], y[keep]))(theta)
    unlearned = theta - torch.linalg.solve(Hk, gk)
    retrained = unlearned
    for _ in range(5):
        retrained = retrained - torch.linalg.solve(AF.hessian(lambda t: full_loss(t, X[keep], y[keep]), retrained),
                                                   tf.grad(lambda t: full_loss(t, X[keep], y[keep]))(retrained))
    by_cholesky = torch.cholesky_solve(gk.unsqueeze(1), torch.linalg.cholesky(Hk)).squeeze(1)
    return {"cg": x, "hvp_cg": hvp(x), "test_g": test_g, "influence": influence, "hv_jvp": hv_jvp, "hv_func": hv_func,
            "hv_vjp": hv_vjp, "H": H, "hv_af": hv_af, "vh_af": vh_af, "H_af": H_af, "theta": theta,
            "unlearned": unlearned, "retrained": retrained, "newton_step": theta - unlearned, "by_cholesky": by_cholesky}


def test_influence_functions_and_newton_unlearning():
    ours, _ = run_both(influence_and_unlearning, rtol=1e-8, atol=1e-10)
    for a, b in zip(ours["hvp_cg"], ours["test_g"]):  # CG solved H x = g
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
    for k in ("weight", "bias"):
        np.testing.assert_allclose(ours["hv_jvp"][k], ours["hv_func"][k], rtol=1e-10)
        np.testing.assert_allclose(ours["hv_vjp"][k], ours["hv_func"][k], rtol=1e-10)
    np.testing.assert_allclose(ours["hv_af"][0], ours["hv_func"]["weight"], rtol=1e-10)
    np.testing.assert_allclose(ours["vh_af"][1], ours["hv_func"]["bias"], rtol=1e-10)
    H = np.block([[ours["H_af"][0][0].reshape(3, 3), ours["H_af"][0][1].reshape(3, 1)],
                  [ours["H_af"][1][0].reshape(1, 3), ours["H_af"][1][1].reshape(1, 1)]])
    np.testing.assert_allclose(H, H.T, rtol=1e-12)
    np.testing.assert_allclose(H.sum(1), np.concatenate([ours["hv_func"]["weight"].ravel(), ours["hv_func"]["bias"]]),
                               rtol=1e-10)
    np.testing.assert_allclose(ours["by_cholesky"], ours["newton_step"], rtol=1e-9)
    # one Newton step goes most of the way from the optimum with the sample to the one without it
    assert np.linalg.norm(ours["unlearned"] - ours["retrained"]) < 0.2 * np.linalg.norm(ours["theta"] - ours["retrained"])


def hessian_through_a_cnn(m, act):
    """Hessian-vector products and Hutchinson's trace estimate (Rademacher probes from a generator) of a small CNN's
    label-smoothed loss with respect to its parameters, and the input Hessian applied to the input gradient."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    make = {"gelu": lambda: nn.GELU(approximate="tanh"), "silu": nn.SiLU, "elu": nn.ELU, "mish": nn.Mish,
            "softplus": lambda: nn.Softplus(beta=2)}[act]
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.GroupNorm(1, 3), make(), nn.MaxPool2d(2),
                          nn.Conv2d(3, 4, 2), make(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(4),
                          nn.Linear(4, 3)).double()
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))
    params = list(model.parameters())
    g = torch.autograd.grad(F.cross_entropy(model(x), y, label_smoothing=0.1), params, create_graph=True)
    gen = torch.Generator().manual_seed(1)
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    w = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    hv = torch.autograd.grad(g, params, grad_outputs=v, retain_graph=True, allow_unused=True, materialize_grads=True)
    hw = torch.autograd.grad(g, params, grad_outputs=w, retain_graph=True)
    z = [torch.randint(0, 2, p.shape, generator=gen).double() * 2 - 1 for p in params]
    hz = torch.autograd.grad(g, params, grad_outputs=z)
    xi = x.clone().requires_grad_()
    gx, = torch.autograd.grad(F.cross_entropy(model(xi), y), xi, create_graph=True)
    hx, = torch.autograd.grad((gx * gx).sum(), xi)
    return {"hv": hv, "w_hv": sum((a * b).sum() for a, b in zip(w, hv)), "v_hw": sum((a * b).sum() for a, b in zip(v, hw)),
            "trace": sum((a * b).sum() for a, b in zip(hz, z)), "hx": hx}


@pytest.mark.parametrize("act", ["gelu", "silu", "elu", "mish", "softplus"])
def test_hessian_vector_products_through_a_cnn(act):
    ours, _ = run_both(hessian_through_a_cnn, act, rtol=1e-7, atol=1e-9)
    assert ours["w_hv"] == pytest.approx(ours["v_hw"], rel=1e-9)  # the Hessian is symmetric


# ----------------------------------------------------------------------------------------------
# More of the same, added with the fixes
# ----------------------------------------------------------------------------------------------


def dp_optimizer(m):
    """Opacus's DPOptimizer in small, over per-sample gradients from call_for_per_sample_grads (its "ew" mode): a
    subclass of optim.Optimizer that never calls its __init__ and hands param_groups, state and defaults through to
    the wrapped SGD (so a StepLR on that SGD sets its rate); per-sample clipping, noise and the expected batch size."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    cfp = importlib.import_module(f"{nn.__name__}.utils._per_sample_grad").call_for_per_sample_grads
    torch.manual_seed(0)

    class DPOptimizer(optim.Optimizer):
        def __init__(self, original, noise_multiplier, max_grad_norm, expected_batch_size, generator=None):
            self.original_optimizer = original
            self.noise_multiplier, self.max_grad_norm = noise_multiplier, max_grad_norm
            self.expected_batch_size, self.generator = expected_batch_size, generator

        @property
        def param_groups(self):
            return self.original_optimizer.param_groups

        @property
        def state(self):
            return self.original_optimizer.state

        @property
        def defaults(self):
            return self.original_optimizer.defaults

        @property
        def params(self):
            return [p for g in self.param_groups for p in g["params"] if p.requires_grad]

        def clip_and_accumulate(self):
            per_param_norms = [p.grad_sample.reshape(len(p.grad_sample), -1).norm(2, dim=-1) for p in self.params]
            per_sample_norms = torch.stack(per_param_norms, dim=1).norm(2, dim=1)
            factor = (self.max_grad_norm / (per_sample_norms + 1e-6)).clamp(max=1.0)
            for p in self.params:
                grad = torch.einsum("i,i...", factor, p.grad_sample)
                if getattr(p, "summed_grad", None) is not None:
                    p.summed_grad += grad
                else:
                    p.summed_grad = grad
            return per_sample_norms

        def add_noise(self):
            for p in self.params:
                noise = torch.normal(mean=0, std=self.noise_multiplier * self.max_grad_norm, size=p.summed_grad.shape,
                                     device=p.summed_grad.device, generator=self.generator)
                p.grad = (p.summed_grad + noise).view_as(p)

        def zero_grad(self, set_to_none=True):
            for p in self.params:
                p.grad_sample = None
                p.summed_grad = None
            self.original_optimizer.zero_grad(set_to_none)

        def step(self, closure=None):
            norms = self.clip_and_accumulate()
            self.add_noise()
            for p in self.params:
                p.grad /= self.expected_batch_size
            self.original_optimizer.step(closure)
            return norms

    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    base = optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    dpo = DPOptimizer(base, 1.0, 0.7, 6, generator=torch.Generator().manual_seed(11))
    sched = optim.lr_scheduler.StepLR(base, step_size=1, gamma=0.5)
    X, y = torch.randn(12, 4), torch.randint(0, 2, (12,))
    hist = []
    for step in range(2):
        xb, yb = X[step * 6:(step + 1) * 6], y[step * 6:(step + 1) * 6]
        dpo.zero_grad()
        loss = F.cross_entropy(cfp(model, loss_reduction="mean")(xb), yb)
        loss.backward()
        hist.append(dpo.step())
        sched.step()
    return {"norms": hist, "params": [p.detach().clone() for p in model.parameters()], "lr": dpo.param_groups[0]["lr"],
            "mom": [dpo.state[p]["momentum_buffer"] for p in model.parameters()], "repr_ok": "SGD" in repr(base)}


def test_an_opacus_style_dp_optimizer_over_expanded_weights():
    ours, _ = run_both(dp_optimizer, rtol=1e-5, atol=1e-6)
    assert ours["lr"] == 0.125 and ours["repr_ok"]
    assert all(n.shape == (6,) and (n > 0).all() for n in ours["norms"])


def shared_memory(m):
    """What shares memory in a federated round, as PyTorch: a module's state_dict with its parameters,
    vector_to_parameters's parameters with the vector, load_state_dict(assign=True) with the dict (a plain
    load_state_dict copies), .data assignment; tied weights through deepcopy; an optimizer's deep-copied state
    dict loaded."""
    torch, nn = m.torch, m.nn
    nnu = nn.utils
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    r = {}
    sd = model.state_dict()
    sd["0.weight"].mul_(0)
    r["sd_shares"] = model[0].weight.detach().clone()
    r["sd_rg"] = sd["0.bias"].requires_grad
    vec = nnu.parameters_to_vector(model.parameters())
    vec2 = torch.arange(vec.numel(), dtype=torch.float32)
    nnu.vector_to_parameters(vec2, model.parameters())
    vec2.add_(100)
    r["v2p_shares"] = [p.detach().clone() for p in model.parameters()]
    r["is_leaf"] = [p.is_leaf for p in model.parameters()]
    r["rg"] = [p.requires_grad for p in model.parameters()]
    model2 = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    src = {k: v.clone() * 2 for k, v in model.state_dict().items()}
    model2.load_state_dict(src)
    src["0.bias"].add_(1000)
    r["load_copies"] = model2[0].bias.detach().clone()
    model3 = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    src3 = {k: v.clone() for k, v in model.state_dict().items()}
    model3.load_state_dict(src3, assign=True)
    src3["0.bias"].add_(1000)
    r["assign_shares"] = model3[0].bias.detach().clone()
    r["assign_type"] = type(model3[0].bias).__name__
    # tied weights deepcopy
    emb, head = nn.Embedding(4, 3), nn.Linear(3, 4, bias=False)
    head.weight = emb.weight
    tied = nn.ModuleDict({"emb": emb, "head": head})
    c = copy.deepcopy(tied)
    r["tied_kept"] = c["emb"].weight is c["head"].weight
    sdt = tied.state_dict()
    r["sd_keys"] = list(sdt.keys())
    sdc = copy.deepcopy(sdt)
    sdc["emb.weight"].add_(1)
    r["sdc_shared"] = bool((sdc["emb.weight"] == sdc["head.weight"]).all())
    r["params_count"] = len(list(tied.parameters()))
    r["named"] = [n for n, _ in tied.named_parameters(remove_duplicate=False)]
    # .data assignment in FedAvg
    g = nn.Linear(2, 2)
    newv = torch.ones(2, 2)
    g.weight.data = newv
    newv.add_(1)
    r["data_assign_shares"] = g.weight.detach().clone()
    with torch.no_grad():
        for p, q in zip(model.parameters(), model2.parameters()):
            p.copy_(0.5 * p + 0.5 * q)
    r["avg"] = [p.detach().clone() for p in model.parameters()]
    # optimizer state dict averaging
    opt = m.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 2)).sum().backward()
    opt.step()
    st = opt.state_dict()
    st2 = copy.deepcopy(st)
    st2["state"][0]["exp_avg"].mul_(2)
    r["opt_state_shared"] = opt.state[model[0].weight]["exp_avg"].clone()
    opt.load_state_dict(st2)  # (a change to st2 after this reaches the optimizer in PyTorch 2.13, not in later
    # PyTorch nor here: see tests/test_ported_optim.py's test_load_state_dict_clones_tensor_state)
    r["opt_loaded"] = opt.state[model[0].weight]["exp_avg"].clone()
    return r


def test_what_shares_memory_in_a_federated_round():
    ours, _ = run_both(shared_memory, rtol=1e-5, atol=1e-6)
    assert not ours["sd_shares"].any() and not ours["sd_rg"]
    np.testing.assert_allclose(np.concatenate([p.ravel() for p in ours["v2p_shares"]]), np.arange(13) + 100)
    assert ours["tied_kept"] and ours["sdc_shared"] and ours["params_count"] == 1
    assert ours["named"] == ["emb.weight", "head.weight"] and ours["assign_type"] == "Parameter"
    np.testing.assert_allclose(ours["data_assign_shares"], np.full((2, 2), 2.0))
    np.testing.assert_allclose(ours["opt_loaded"], 2 * ours["opt_state_shared"], rtol=1e-6)


def sparse_deltas(m):
    """A top-k model delta sent as a sparse COO tensor: to_sparse, indices/values, sparse_coo_tensor, coalesce,
    sparse.sum, sparse.mm."""
    torch = m.torch
    torch.manual_seed(1)
    delta = torch.randn(4, 5)
    k = 4
    thresh = delta.abs().flatten().kthvalue(delta.numel() - k + 1).values
    mask = delta.abs() >= thresh
    sp = (delta * mask).to_sparse()
    idx, vals = sp.indices(), sp.values()
    s2 = torch.sparse_coo_tensor(idx, vals, delta.shape)
    s3 = (s2 + s2).coalesce()
    dense = s3.to_dense()
    ssum = torch.sparse.sum(s3, dim=1).to_dense()
    mm = torch.sparse.mm(s2, torch.ones(5, 2))
    return {"idx": idx, "vals": vals, "dense": dense, "ssum": ssum, "mm": mm, "nnz": s3._nnz(), "thresh": thresh}


def test_a_top_k_delta_as_a_sparse_tensor():
    ours, _ = run_both(sparse_deltas, rtol=1e-6, atol=1e-7)
    assert ours["nnz"] == 4 and (ours["dense"] != 0).sum() == 4
    np.testing.assert_allclose(ours["ssum"], ours["dense"].sum(1), rtol=1e-6)


def hook_semantics(m):
    """What Opacus-like code reads in full backward (pre-)hooks of modules that return views or as-is inputs (Identity,
    Flatten, eval Dropout, Unflatten) and of a module with a detached and a non-tensor output: grad_output holds
    None for an output that needs no gradient."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    rec = []
    def h(mod, gi, go):
        rec.append((type(mod).__name__, [None if g is None else g.clone() for g in gi],
                    [None if g is None else g.clone() for g in go]))
    def pre(mod, go):
        rec.append(("pre:" + type(mod).__name__, [None if g is None else g.clone() for g in go]))
    class Split(nn.Module):
        def forward(self, x, k):
            return x[:, :k] * 2, x[:, k:].detach(), k
    mods = [nn.Identity(), nn.Flatten(), nn.Dropout(0.5).eval(), nn.Unflatten(1, (2, 3)), Split()]
    for md in mods:
        md.register_full_backward_hook(h)
        md.register_full_backward_pre_hook(pre)
    x = torch.randn(2, 6, requires_grad=True)
    outs = []
    for md in mods[:4]:
        y = md(x * 1)
        (y * torch.arange(y.numel()).view_as(y)).sum().backward()
        outs.append(x.grad.clone())
        x.grad = None
    a, b, k = mods[4](x * 1, 2)
    (a.sum() * 3).backward()
    outs.append(x.grad.clone())
    # identity returning input: is output the same object?
    ident = nn.Identity()
    ident.register_full_backward_hook(h)
    z = x * 1
    zz = ident(z)
    same = zz is z
    return {"rec": rec, "outs": outs, "same": same, "b_rg": b.requires_grad}


def test_full_backward_hooks_on_view_returning_modules():
    ours, _ = run_both(hook_semantics)
    split_pre, split_full = ours["rec"][-2:]
    assert split_pre[1][1] is None and split_full[2][1] is None and split_full[2][2] is None
    np.testing.assert_allclose(ours["outs"][-1][:, :2], np.full((2, 2), 6.0))
    assert not ours["same"] and not ours["b_rg"]


def per_sample_attention_model(m):
    """Per-sample gradients by vmap(grad) of a MultiheadAttention (key_padding_mask per sample), Conv1d and
    ConvTranspose1d model, against a loop; and in training with dropout, randomness "different" and "same" (the
    draws PyTorch's)."""
    torch, nn, F = m.torch, m.nn, m.F
    tf = _func(m)
    torch.manual_seed(0)
    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(6, 2, batch_first=True)
            self.conv = nn.Conv1d(6, 4, 3, padding=1)
            self.tconv = nn.ConvTranspose1d(4, 2, 2, stride=2)
            self.drop = nn.Dropout(0.3)
            self.out = nn.Linear(2 * 10, 3)
        def forward(self, x, mask=None):
            a, _ = self.attn(x, x, x, key_padding_mask=mask)
            h = self.conv(self.drop(a).transpose(1, 2))
            h = self.tconv(torch.relu(h))
            return self.out(h.flatten(1))
    model = M()
    params = {k: v.detach() for k, v in model.named_parameters()}
    def loss(p, x, y, mask):
        logits = tf.functional_call(model, p, (x.unsqueeze(0),), {"mask": mask.unsqueeze(0)})
        return F.cross_entropy(logits, y.unsqueeze(0))
    x, y = torch.randn(4, 5, 6), torch.randint(0, 3, (4,))
    mask = torch.zeros(4, 5, dtype=torch.bool)
    mask[1, 3:] = True
    model.eval()
    g = tf.vmap(tf.grad(loss), in_dims=(None, 0, 0, 0))(params, x, y, mask)
    loop = []
    for i in range(4):
        model.zero_grad()
        F.cross_entropy(model(x[i:i + 1], mask=mask[i:i + 1]), y[i:i + 1]).backward()
        loop.append({k: p.grad.clone() for k, p in model.named_parameters()})
    model.train()
    torch.manual_seed(5)
    gd = tf.vmap(tf.grad(loss), in_dims=(None, 0, 0, 0), randomness="different")(params, x, y, mask)
    torch.manual_seed(5)
    gs = tf.vmap(tf.grad(loss), in_dims=(None, 0, 0, 0), randomness="same")(params, x, y, mask)
    return {"g": g, "loop": {k: torch.stack([l[k] for l in loop]) for k in g}, "gd": gd, "gs": gs}


def test_per_sample_gradients_of_an_attention_model():
    ours, _ = run_both(per_sample_attention_model, rtol=1e-4, atol=1e-5)
    for k in ours["g"]:
        np.testing.assert_allclose(ours["g"][k], ours["loop"][k], rtol=1e-4, atol=1e-5)


def generator_draws(m):
    """The draws secure aggregation and noise addition take from seeded generators: randint over wide and narrow
    ranges and dtypes, random_, rand/randn in float64 and float16, a negative and a 63-bit seed, the default
    generator, get_state/set_state replay, randperm, normal, bernoulli_ with a tensor of probabilities."""
    torch = m.torch
    g = torch.Generator().manual_seed(2**63 - 1)
    r = {}
    r["a"] = torch.randint(-2**40, 2**40, (3,), generator=g)
    r["b"] = torch.randint(0, 2**62, (3,), generator=g)
    r["c"] = torch.randint(0, 100, (3,), generator=g, dtype=torch.int32)
    r["d"] = torch.empty(3, dtype=torch.int64).random_(generator=g)
    r["e"] = torch.empty(3, dtype=torch.int32).random_(generator=g)
    r["f"] = torch.empty(3).random_(generator=g)
    r["h"] = torch.rand(3, generator=g, dtype=torch.float64)
    r["i"] = torch.randn(5, generator=g, dtype=torch.float16)
    r["j"] = torch.randint(0, 2, (6,), generator=g, dtype=torch.bool)
    r["k"] = torch.randint(0, 256, (4,), generator=g, dtype=torch.uint8)
    gen2 = torch.random.manual_seed(3)
    r["gen_type"] = type(gen2).__name__
    r["l"] = torch.randn(2)
    r["dg"] = torch.default_generator.initial_seed()
    r["m"] = torch.randn(2, generator=torch.default_generator)
    g3 = torch.Generator().manual_seed(-5)
    r["neg"] = torch.randn(2, generator=g3)
    r["neg_seed"] = g3.initial_seed()
    g4 = torch.Generator()
    g4.manual_seed(7)
    st = g4.get_state()
    x1 = torch.randn(3, generator=g4)
    g4.set_state(st)
    x2 = torch.randn(3, generator=g4)
    r["eq"] = bool((x1 == x2).all())
    g5 = torch.Generator().manual_seed(7)
    r["perm64"] = torch.randperm(5, generator=g5, dtype=torch.int32)
    r["normal_scalar"] = torch.normal(2.0, 3.0, size=(3,), generator=g5, dtype=torch.float64)
    r["bern_p"] = torch.empty(5).bernoulli_(torch.full((5,), 0.7), generator=g5)
    return r


def test_generator_draws():
    ours, _ = run_both(generator_draws)
    assert ours["eq"] and ours["gen_type"] == "Generator" and ours["neg_seed"] == 2 ** 64 - 5
    assert ours["i"].dtype == np.float16 and ours["c"].dtype == np.int32 and ours["k"].dtype == np.uint8
    assert sorted(ours["perm64"]) == [0, 1, 2, 3, 4]


def federated_lora(m):
    """Federated LoRA: low-rank adapters registered by parametrize.register_parametrization on frozen Linear weights,
    clients deep-copied and trained with Adam on the adapters only, the adapters averaged and loaded
    with strict=False; then merged by remove_parametrizations(leave_parametrized=True). (On a deep copy the merge
    would change the original too: the copy shares the parametrized class, in PyTorch as here.)"""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    P = nn.utils.parametrize
    torch.manual_seed(0)
    class LoRA(nn.Module):
        def __init__(self, out_f, in_f, r=2, alpha=4.0):
            super().__init__()
            self.A = nn.Parameter(torch.randn(r, in_f) * 0.1)
            self.B = nn.Parameter(torch.zeros(out_f, r))
            self.scale = alpha / r
        def forward(self, W):
            return W + self.scale * self.B @ self.A
    base = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    for lin in (base[0], base[2]):
        P.register_parametrization(lin, "weight", LoRA(*lin.weight.shape))
        lin.parametrizations.weight.original.requires_grad_(False)
    wn = nn.utils.parametrizations.weight_norm(nn.Linear(2, 2))
    keys = list(base.state_dict().keys())
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(2)]
    for rnd in range(2):
        states = []
        for X, y in data:
            c = copy.deepcopy(base)
            opt = optim.Adam([p for p in c.parameters() if p.requires_grad], lr=0.05)
            for _ in range(2):
                opt.zero_grad()
                F.cross_entropy(c(X), y).backward()
                opt.step()
            states.append({k: v for k, v in c.state_dict().items() if ".0.A" in k or ".0.B" in k})
        avg = {k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]}
        res = base.load_state_dict(avg, strict=False)
    x = torch.randn(3, 4)
    out = base(x).detach()
    w = base[0].weight.detach()
    is_param = P.is_parametrized(base[0])
    merged = base
    for lin in (merged[0], merged[2]):
        P.remove_parametrizations(lin, "weight", leave_parametrized=True)
    return {"keys": keys, "missing": list(res.missing_keys), "out": out, "merged": merged(x).detach(),
            "merged_keys": list(merged.state_dict().keys()), "wn_keys": list(wn.state_dict().keys()),
            "n_trainable": sum(p.numel() for p in base.parameters() if p.requires_grad),
            "is_param": is_param, "w": w, "cls": type(merged[0]).__name__}


def test_federated_lora_adapters():
    ours, _ = run_both(federated_lora, rtol=1e-5, atol=1e-6)
    # (the adapters of both layers are averaged: "parametrizations.weight.0.A" is in both names)
    assert ours["missing"] == ["0.bias", "0.parametrizations.weight.original", "2.bias",
                               "2.parametrizations.weight.original"]
    assert ours["n_trainable"] == 6 + 2 and ours["is_param"]  # (merged: the weights keep the frozen original's flag)
    np.testing.assert_allclose(ours["merged"], ours["out"], rtol=1e-6)
    assert ours["merged_keys"] == ["0.bias", "0.weight", "2.bias", "2.weight"] and ours["cls"] == "Linear"
    assert ours["wn_keys"] == ["bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
