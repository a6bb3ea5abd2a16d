# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Spiking and other dynamical, biologically inspired networks as snnTorch, SpikingJelly, Norse, BindsNET and papers'
reference code write them, run as tests/probe22_spiking_common.py says. Plasticity under ``no_grad``: STDP with
traces (SpikingJelly's and BindsNET's), Oja's rule, a Hopfield memory (``addmm_``, ``fill_diagonal_``), Diehl & Cook
2015 (adaptive thresholds, ``masked_fill_``, ``bmm`` updates, column normalisation), e-prop with eligibility traces
written into ``.grad``; and the neuroscience around them: Izhikevich neurons, a Poisson GLM with a spike-history
filter fitted by L-BFGS, decoding spike counts with ties, spike-train statistics (ISIs, PSPs by FFT and by conv1d)."""

import math

import numpy as np
import pytest

from .probe22_spiking_common import dtype_name
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# plasticity under no_grad: STDP, BindsNET traces, Oja, Hopfield, Diehl & Cook
# ----------------------------------------------------------------------------------------------


def plasticity_rules(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    N_pre, N_post, B, T = 8, 5, 3, 20
    fc = nn.Linear(N_pre, N_post, bias=False)
    nn.init.uniform_(fc.weight, 0.0, 0.5)
    tau_pre, tau_post = 2.0, 4.0
    trace_pre = trace_post = None
    pre_spikes = (torch.rand(T, B, N_pre) < 0.3).float()
    v = torch.zeros(B, N_post)
    w_hist = []
    with torch.no_grad():  # SpikingJelly's STDPLearner on a Linear layer
        for t in range(T):
            x = pre_spikes[t]
            v = v * 0.8 + fc(x)
            s = (v >= 0.6).float()
            v = v * (1 - s)
            if trace_pre is None:
                trace_pre = 0.
                trace_post = 0.
            trace_pre = trace_pre - trace_pre / tau_pre + x
            trace_post = trace_post - trace_post / tau_post + s
            delta_w_pre = -0.01 * (trace_post.unsqueeze(2) * x.unsqueeze(1)).sum(0)
            delta_w_post = 0.012 * (trace_pre.unsqueeze(1) * s.unsqueeze(2)).sum(0)
            fc.weight.data += delta_w_pre + delta_w_post
            fc.weight.data.clamp_(0, 1)
            w_hist.append(fc.weight.detach().clone())
    # BindsNET's traces: decayed in place, set to 1 where a spike is, outer products into the weights
    w = torch.rand(N_pre, N_post)
    x_tr = torch.zeros(N_pre)
    y_tr = torch.zeros(N_post)
    decay = torch.exp(torch.tensor(-1.0 / 20.0))
    for t in range(T):
        pre = pre_spikes[t, 0].bool()
        post = (pre.float() @ w) > 0.9
        x_tr.mul_(decay)
        x_tr.masked_fill_(pre, 1.0)
        y_tr *= decay
        y_tr[post] += 1
        w += 1e-2 * torch.ger(x_tr, post.float()) - 1e-2 * torch.outer(pre.float(), y_tr)
        w.addr_(x_tr, y_tr, alpha=-1e-3)
        w.clamp_(0.0, 1.0)
        w *= 2.0 / w.sum(0).unsqueeze(0)
    # Oja's rule on a Parameter, written in place under no_grad
    p = nn.Parameter(torch.randn(1, 6) * 0.1)
    xs = torch.randn(400, 6) * torch.tensor([3.0, 1.0, 0.5, 0.5, 0.2, 0.1])
    for xi in xs:
        with torch.no_grad():
            y_ = p @ xi
            p += 0.01 * (torch.outer(y_, xi) - (y_ ** 2).unsqueeze(1) * p)
    # a Hopfield memory: Hebbian outer products, no self-connections, recall from a corrupted pattern
    W = torch.zeros(12, 12)
    patterns = torch.sign(torch.randn(2, 12))
    W.addmm_(patterns.t(), patterns, beta=1.0, alpha=1.0 / 12)
    W.fill_diagonal_(0)
    state = patterns[0].clone()
    state[:2] *= -1
    for _ in range(5):
        state = torch.sign(W @ state)
    return dict(w_hist=w_hist, w=w, x_tr=x_tr, y_tr=y_tr, p=p, p_grad=p.grad is None, p_requires_grad=p.requires_grad,
                W=W, state=state, patterns=patterns, w_dtype=dtype_name(w.dtype),
                fc_requires_grad=fc.weight.requires_grad)


def test_stdp_oja_and_hopfield_under_no_grad():
    ours, _ = run_both(plasticity_rules)
    w_hist = np.stack(ours["w_hist"])
    assert w_hist.min() >= 0 and w_hist.max() <= 1 and not np.allclose(w_hist[0], w_hist[-1])
    np.testing.assert_allclose(ours["w"].sum(0), 2.0, rtol=1e-5)  # columns normalised
    assert ours["x_tr"].max() <= 1 and ours["w_dtype"] == "float32"
    # Oja's rule: the weight vector turns to the first principal direction, with unit norm
    p = ours["p"][0]
    np.testing.assert_allclose(np.linalg.norm(p), 1.0, atol=0.05)
    assert abs(p[0]) > 0.95
    assert ours["p_grad"] and ours["p_requires_grad"] and ours["fc_requires_grad"]
    P = ours["patterns"]
    W = P.T @ P / 12
    np.fill_diagonal(W, 0)
    np.testing.assert_allclose(ours["W"], W, rtol=1e-6)
    np.testing.assert_array_equal(ours["state"], P[0])  # recalled


def diehl_cook(m):
    torch = m.torch
    torch.manual_seed(0)
    n_in, n_exc, B = 16, 6, 2
    dt = 1.0

    class Nodes:
        def __init__(self, n, thresh, rest, reset, refrac, tc_decay, theta_plus=0.0, tc_theta_decay=1e7,
                     tc_trace=20.0):
            self.thresh = torch.tensor(thresh)
            self.rest = torch.tensor(rest)
            self.reset = torch.tensor(reset)
            self.refrac = torch.tensor(refrac)
            self.decay = torch.exp(-dt / torch.tensor(tc_decay))
            self.theta_plus = torch.tensor(theta_plus)
            self.theta_decay = torch.exp(-dt / torch.tensor(tc_theta_decay))
            self.trace_decay = torch.exp(-dt / torch.tensor(tc_trace))
            self.v = self.rest * torch.ones(B, n)
            self.theta = torch.zeros(n)
            self.refrac_count = torch.zeros(B, n)
            self.s = torch.zeros(B, n, dtype=torch.bool)
            self.x = torch.zeros(B, n)

        def forward(self, x):
            self.v = self.decay * (self.v - self.rest) + self.rest
            self.v += (self.refrac_count <= 0).float() * x
            self.refrac_count -= dt
            self.s = self.v >= self.thresh + self.theta
            self.refrac_count.masked_fill_(self.s, self.refrac)
            self.v.masked_fill_(self.s, self.reset)
            self.theta *= self.theta_decay
            self.theta += self.theta_plus * self.s.float().sum(0)
            self.x *= self.trace_decay
            self.x.masked_fill_(self.s, 1)

    inp = Nodes(n_in, 1e9, 0., 0., 0., 1e9)
    exc = Nodes(n_exc, -52.0, -65.0, -60.0, 5.0, 100.0, theta_plus=0.05, tc_theta_decay=1e4)
    w = 0.3 * torch.rand(n_in, n_exc)
    w_inh = -10.0 * (torch.ones(n_exc, n_exc) - torch.diag(torch.ones(n_exc)))
    nu = (1e-4, 1e-2)
    norm = 78.0 * n_in / 784
    image = torch.rand(B, n_in)
    spikes = []
    for t in range(60):
        inp.s = torch.bernoulli(image * 0.5).bool()
        inp.x *= inp.trace_decay
        inp.x.masked_fill_(inp.s, 1)
        exc.forward(inp.s.float() @ w * 10 + exc.s.float() @ w_inh)
        source_s = inp.s.view(B, -1).float().unsqueeze(2)
        target_x = exc.x.view(B, -1).unsqueeze(1)
        w -= nu[0] * torch.bmm(source_s, target_x).sum(0)
        source_x = inp.x.view(B, -1).unsqueeze(2)
        target_s = exc.s.view(B, -1).float().unsqueeze(1)
        w += nu[1] * torch.bmm(source_x, target_s).sum(0)
        w.clamp_(0, 1)
        w_abs_sum = w.abs().sum(0).unsqueeze(0)
        w_abs_sum[w_abs_sum == 0] = 1.0
        w *= norm / w_abs_sum
        spikes.append(exc.s.clone())
    S = torch.stack(spikes)
    return dict(w=w, theta=exc.theta, counts=S.sum(0), v=exc.v, spike_dtype=dtype_name(S.dtype),
                refrac_count=exc.refrac_count, count_dtype=dtype_name(S.sum(0).dtype))


def test_diehl_cook_adaptive_thresholds_and_normalised_stdp():
    ours, _ = run_both(diehl_cook, rtol=1e-4, atol=1e-5)
    assert ours["spike_dtype"] == "bool" and ours["count_dtype"] == "int64"
    counts = ours["counts"]
    np.testing.assert_allclose(ours["theta"], 0.05 * counts.sum(0), rtol=0.01)  # (a slow decay: 1e4 steps)
    np.testing.assert_allclose(ours["w"].sum(0), 78.0 * 16 / 784, rtol=1e-5)
    assert counts.tolist() == DIEHL_COOK_COUNTS


DIEHL_COOK_COUNTS = [[5, 4, 5, 0, 0, 5], [4, 1, 1, 3, 5, 6]]


def eprop(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    n_in, n_rec, n_out, T, B = 5, 8, 2, 25, 3
    thr, dt, tau_m, tau_o = 0.6, 1.0, 20.0, 20.0
    alpha = math.exp(-dt / tau_m)
    kappa = math.exp(-dt / tau_o)
    w_in = nn.Parameter(torch.randn(n_rec, n_in) / math.sqrt(n_in))
    w_rec = nn.Parameter(torch.randn(n_rec, n_rec) / math.sqrt(n_rec))
    w_out = nn.Parameter(torch.randn(n_out, n_rec) / math.sqrt(n_rec))
    with torch.no_grad():
        w_rec.fill_diagonal_(0)
    B_fb = torch.randn(n_rec, n_out)  # random feedback weights
    opt = torch.optim.Adam([w_in, w_rec, w_out], lr=1e-2)
    x = (torch.rand(T, B, n_in) < 0.3).float()
    y_target = torch.stack([torch.sin(torch.arange(T) / 4.0), torch.cos(torch.arange(T) / 4.0)], 1)
    y_target = y_target.unsqueeze(1).expand(T, B, n_out)
    losses = []
    for it in range(3):
        v = torch.zeros(B, n_rec)
        z = torch.zeros(B, n_rec)
        y = torch.zeros(B, n_out)
        trace_in = torch.zeros(B, n_in)
        trace_rec = torch.zeros(B, n_rec)
        trace_out = torch.zeros(B, n_rec)
        e_in_f = torch.zeros(B, n_rec, n_in)
        e_rec_f = torch.zeros(B, n_rec, n_rec)
        g_in = torch.zeros_like(w_in)
        g_rec = torch.zeros_like(w_rec)
        g_out = torch.zeros_like(w_out)
        loss = 0.0
        with torch.no_grad():
            for t in range(T):
                trace_in = alpha * trace_in + x[t]
                trace_rec = alpha * trace_rec + z
                v = alpha * v + x[t] @ w_in.t() + z @ w_rec.t() - z * thr
                z = (v > thr).float()
                psi = 0.3 / thr * torch.clamp(1 - torch.abs((v - thr) / thr), min=0)  # pseudo-derivative
                e_in_f = kappa * e_in_f + psi[:, :, None] * trace_in[:, None, :]
                e_rec_f = kappa * e_rec_f + psi[:, :, None] * trace_rec[:, None, :]
                trace_out = kappa * trace_out + z
                y = kappa * y + z @ w_out.t()
                err = y - y_target[t]
                L = torch.einsum('bo,ro->br', err, B_fb)  # learning signals
                g_in += torch.einsum('br,bri->ri', L, e_in_f)
                g_rec += (L.unsqueeze(2) * e_rec_f).sum(0)
                g_out += torch.einsum('bo,br->or', err, trace_out)
                loss += 0.5 * (err ** 2).sum().item()
        w_in.grad = g_in / B
        w_rec.grad = g_rec / B
        w_out.grad = g_out.clone() / B
        w_rec.grad.fill_diagonal_(0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss)
    return dict(losses=losses, w_in=w_in, w_rec=w_rec, w_out=w_out, grads_cleared=w_in.grad is None)


def test_eprop_eligibility_traces_into_grad():
    ours, _ = run_both(eprop, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["losses"], EPROP_LOSSES, rtol=1e-5)
    assert np.all(np.diag(ours["w_rec"]) == 0) and ours["grads_cleared"]


EPROP_LOSSES = [79.33761, 68.92993, 66.67768]


def izhikevich(m):
    torch = m.torch
    torch.manual_seed(0)
    Ne, Ni = 16, 4
    re, ri = torch.rand(Ne), torch.rand(Ni)
    a = torch.cat([0.02 * torch.ones(Ne), 0.02 + 0.08 * ri])
    b = torch.cat([0.2 * torch.ones(Ne), 0.25 - 0.05 * ri])
    c = torch.cat([-65 + 15 * re ** 2, -65 * torch.ones(Ni)])
    d = torch.cat([8 - 6 * re ** 2, 2 * torch.ones(Ni)])
    S = torch.cat([0.5 * torch.rand(Ne + Ni, Ne), -torch.rand(Ne + Ni, Ni)], dim=1)
    v = -65 * torch.ones(Ne + Ni)
    u = b * v
    firings = []
    for t in range(60):
        I = torch.cat([5 * torch.randn(Ne), 2 * torch.randn(Ni)])
        fired = torch.where(v >= 30)[0]
        firings.append(fired.numel())
        v[fired] = c[fired]
        u[fired] = u[fired] + d[fired]
        I = I + S[:, fired].sum(1)
        v = v + 0.5 * (0.04 * v ** 2 + 5 * v + 140 - u + I)
        v = v + 0.5 * (0.04 * v ** 2 + 5 * v + 140 - u + I)
        u = u + a * (b * v - u)
        v.clamp_(max=30)
    return dict(v=v, u=u, firings=firings)


def test_izhikevich_network_with_in_place_resets():
    ours, _ = run_both(izhikevich, rtol=1e-4, atol=1e-3)
    assert ours["v"].max() <= 30 and sum(ours["firings"]) == IZHIKEVICH_FIRINGS


IZHIKEVICH_FIRINGS = 5


def poisson_glm(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    T, D, H = 400, 6, 5
    stim = torch.randn(T, D, dtype=torch.float64)
    k_true = torch.tensor([0.5, -0.3, 0.2, 0.0, 0.1, -0.2], dtype=torch.float64)
    rate = torch.exp(stim @ k_true - 1.0)
    counts = torch.poisson(rate)
    k = torch.zeros(D, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    h = torch.zeros(H, dtype=torch.float64, requires_grad=True)  # spike-history filter
    past = F.pad(counts, (H, 0))[:-1].unfold(0, H, 1)  # (T, H): the H counts before each bin
    opt = torch.optim.LBFGS([k, b, h], lr=1, max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        log_rate = stim @ k + b + past @ h
        loss = F.poisson_nll_loss(log_rate, counts, log_input=True, full=False) + 1e-3 * (h ** 2).sum()
        loss.backward()
        return loss
    loss = opt.step(closure)
    log_rate = stim @ k + b + past @ h
    ll = torch.distributions.Poisson(log_rate.exp()).log_prob(counts).sum()
    ll2 = (counts * log_rate - log_rate.exp() - torch.special.gammaln(counts + 1)).sum()
    return dict(k=k, b=b, h=h, loss=loss, ll=ll, ll2=ll2, counts=counts.sum(), past=past[:8])


def ties(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    spk = (torch.rand(6, 5, 10) > 0.7).float()
    counts = spk.sum(0)
    out = {}
    out["argmax"] = counts.argmax(1)
    out["max_dim"] = counts.max(1)
    out["min_dim"] = counts.min(1)
    out["topk"] = counts.topk(3, dim=1)
    out["topk_small"] = counts.topk(3, dim=1, largest=False)
    out["sort"] = counts.sort(1, descending=True)
    out["sort_stable"] = counts.sort(dim=1, descending=True, stable=True)
    out["argsort"] = counts.argsort(1)
    out["median"] = counts.median(1)
    out["mode"] = counts.mode(1)
    out["kth"] = counts.kthvalue(2, 1)
    c = counts.clone().requires_grad_()
    (c.max() + c.min() + c.amax(1).sum() + c.max(1).values.sum() + c.median() + c.median(1).values.sum()
     + c.topk(2, 1).values.sum() + c.mode(1).values.sum() + c.kthvalue(3, 1).values.sum()).backward()
    out["grad"] = c.grad
    lc = counts.long()
    out["lmax"] = lc.max(1)
    out["ce_ls"] = F.cross_entropy(counts, torch.tensor([0, 1, 2, 3, 4]), label_smoothing=0.1)
    try:
        F.softmax(lc, 1)
        out["sm_long"] = "ok"
    except RuntimeError:
        out["sm_long"] = "RuntimeError"
    out["unique"] = torch.unique(counts, sorted=True, return_counts=True, return_inverse=True)
    out["ucons"] = torch.unique_consecutive(counts.flatten(), return_counts=True)
    out["counts"] = counts
    return out


def spike_train_stats(m):
    torch, nn, F = m.torch, m.nn, m.F
    g = torch.Generator().manual_seed(11)
    spk = (torch.rand(50, 3, generator=g) < 0.2)
    out = {}
    out["cumsum_bool"] = spk.cumsum(0)
    out["cumsum_dt"] = dtype_name(spk.cumsum(0).dtype)
    out["diff"] = torch.diff(spk.float(), dim=0, prepend=torch.zeros(1, 3))
    out["diff_bool"] = torch.diff(spk, dim=0)
    nz = torch.nonzero(spk.t(), as_tuple=True)
    out["nz"] = nz
    counts = spk.sum(0)
    per_neuron = torch.split(nz[1], counts.tolist())
    out["isi"] = [torch.diff(t) for t in per_neuron]
    padded = nn.utils.rnn.pad_sequence(list(per_neuron), batch_first=True, padding_value=-1)
    out["padded"] = padded
    win = spk.float().t().unfold(1, 10, 5)
    out["win"] = win.sum(-1)
    out["isi_hist"] = torch.histc(torch.cat(out["isi"]).float(), bins=5, min=0, max=25)
    t = torch.arange(50.0)
    kernel = torch.exp(-t / 5.0)
    sp = spk.float().t()
    n = 128
    conv_fft = torch.fft.irfft(torch.fft.rfft(sp, n=n) * torch.fft.rfft(kernel, n=n), n=n)[:, :50]
    conv_direct = F.conv1d(F.pad(sp.unsqueeze(1), (49, 0)), kernel.flip(0).view(1, 1, -1)).squeeze(1)
    out["psp_fft"] = conv_fft
    out["psp"] = conv_direct
    depth = F.conv1d(F.pad(sp.unsqueeze(0), (4, 0)), torch.rand(3, 1, 5, generator=g), groups=3)
    out["depth"] = depth
    power = torch.fft.rfft(sp - sp.mean(1, keepdim=True)).abs().pow(2)
    out["power"] = power
    st = torch.tensor([-7, -3, 0, 5, 9])
    out["floor"] = (torch.div(st, 4, rounding_mode="floor"), st % 4, torch.div(st, 4, rounding_mode="trunc"),
                    torch.fmod(st, 4), st // 4)
    out["cumprod"] = (1 - spk.float()).cumprod(0)[-1]
    out["strided"] = sp.contiguous().as_strided((3, 9, 10), (50, 5, 1)).sum(-1)
    return out


def test_poisson_glm_with_a_history_filter_fitted_by_lbfgs():
    ours, _ = run_both(poisson_glm, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["ll"], ours["ll2"], rtol=1e-10)
    np.testing.assert_allclose(ours["k"], [0.5, -0.3, 0.2, 0.0, 0.1, -0.2], atol=0.2)
    assert ours["counts"] == GLM_SPIKES


GLM_SPIKES = 188.0


def test_spike_count_decoding_with_ties():
    ours, _ = run_both(ties)
    counts = ours["counts"]
    np.testing.assert_array_equal(ours["argmax"], np.argmax(counts, 1))  # the first of equal counts
    np.testing.assert_array_equal(ours["max_dim"][1], np.argmax(counts, 1))
    np.testing.assert_array_equal(ours["min_dim"][1], np.argmin(counts, 1))
    np.testing.assert_array_equal(ours["sort_stable"][1], np.argsort(-counts, axis=1, kind="stable"))
    np.testing.assert_array_equal(ours["topk"][0], -np.sort(-counts, axis=1)[:, :3])
    # each reduction passes a total gradient of 1 per value it returns, split among ties or not
    assert ours["grad"].sum() == pytest.approx(1 + 1 + 5 + 5 + 1 + 5 + 10 + 5 + 5)
    assert ours["sm_long"] == "RuntimeError"


def test_spike_train_statistics():
    ours, _ = run_both(spike_train_stats, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["psp_fft"], ours["psp"], atol=1e-4)  # convolution by FFT and by conv1d
    assert ours["cumsum_dt"] == "int64"
    times = [np.flatnonzero(row) for row in ours["cumsum_bool"].T.astype(bool) & np.diff(
        np.concatenate([np.zeros((1, 3), np.int64), ours["cumsum_bool"]]), axis=0).T.astype(bool)]
    for isi, t in zip(ours["isi"], times):
        np.testing.assert_array_equal(isi, np.diff(t))
    st = np.array([-7, -3, 0, 5, 9])
    floor, mod, trunc, fmod, floordiv = ours["floor"]
    np.testing.assert_array_equal(floor, st // 4)
    np.testing.assert_array_equal(mod, st % 4)
    np.testing.assert_array_equal(trunc, np.trunc(st / 4))
    np.testing.assert_array_equal(fmod, np.fmod(st, 4))
    np.testing.assert_array_equal(floordiv, st // 4)
