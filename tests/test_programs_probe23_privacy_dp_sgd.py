# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Privacy programs as their reference PyTorch code writes them, each run on chainrule and on PyTorch from the same
seed (tests/pytorch_programs.py), comparing values and gradients, with invariants and NumPy checks that hold without
PyTorch. DP-SGD's per-sample gradients three ways: Opacus-style forward/full-backward hooks and einsum for Linear,
Conv2d (``F.unfold``, groups, stride, dilation), Embedding, LayerNorm and GroupNorm; ``torch.func`` (``vmap(grad)``
over ``functional_call`` with parameters and buffers, ``has_aux``, ``grad_and_value``); micro-batch loops with
``clip_grad_norm_``; ``autograd.grad(is_grads_batched=True)``;
``nn.utils._per_sample_grad.call_for_per_sample_grads`` under an Opacus-style DPOptimizer; a MultiheadAttention model
under vmap (dropout's draws in both randomness modes); what full backward hooks see around view-returning modules;
ghost clipping's norms; per-sample clipping, Gaussian noise from a ``Generator``, RDP and GDP accounting (``lgamma``,
``logsumexp``, ``special.ndtr``/``log_ndtr``)."""

import importlib
import math

import numpy as np
import pytest

from .probe23_privacy_common import _func
from .pytorch_programs import run_both

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
