# ruff: noqa: E501, E702, F841  (the programs are kept as their authors wrote them)
"""Continuous-control and model-based RL programs, run as tests/probe14_control_common.py says. Planning and learnt
models: an ensemble by torch.func (stack_module_state, functional_call, vmap) as PyTorch's model-ensembling tutorial;
MBPO's ensemble layer by bmm with soft-bounded log-variances; TD-MPC's MPPI/CEM update; REDQ's min over a random
subset; iLQR linearisation by autograd.functional, a vmapped ensemble of GRUCells; TD-MPC2's pieces; MPO with a
full-covariance Gaussian; meta-gradients through recurrent models, per-parameter gradient hooks and a non-finite
clip."""

import copy
import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# Model-based planning: an ensemble by torch.func (stack_module_state, functional_call, vmap) as PyTorch's
# model-ensembling tutorial; MBPO's ensemble layer by bmm with soft-bounded log-variances; TD-MPC's MPPI/CEM
# update with topk, fmod-truncated noise and a score-weighted std; REDQ's min over a random subset
# ----------------------------------------------------------------------------------------------


def func_ensemble(m):
    torch=m.torch; nn=m.nn
    from_func = torch.func
    torch.manual_seed(0)
    models = [nn.Sequential(nn.Linear(3,8), nn.SiLU(), nn.Linear(8,2)) for _ in range(4)]
    params, buffers = from_func.stack_module_state(models)
    base = copy.deepcopy(models[0])
    def fmodel(params, buffers, x):
        return from_func.functional_call(base, (params, buffers), (x,))
    x = torch.randn(5,3)
    out = torch.vmap(fmodel, in_dims=(0, 0, None))(params, buffers, x)
    out.pow(2).sum().backward()
    return out, {k: v.grad for k, v in params.items()}


def test_func_ensemble():
    (out, grads), _ = run_both(func_ensemble)
    assert out.shape == (4, 5, 2) and grads["0.weight"].shape == (4, 8, 3)
    assert not np.allclose(out[0], out[1])  # four different models


def mbpo_ensemble(m):
    torch=m.torch; nn=m.nn; F=m.F
    torch.manual_seed(0)
    w = torch.randn(4, 3, 6, requires_grad=True); b = torch.zeros(4, 6, requires_grad=True)
    x = torch.randn(4, 5, 3)
    h = torch.bmm(x, w) + b[:, None, :]
    mean, logvar = h.chunk(2, -1)
    max_logvar = torch.ones(1, 3) / 2; min_logvar = -torch.ones(1, 3) * 10
    logvar = max_logvar - F.softplus(max_logvar - logvar)
    logvar = min_logvar + F.softplus(logvar - min_logvar)
    inv_var = torch.exp(-logvar)
    labels = torch.randn(4,5,3)
    mse_loss = torch.mean(torch.mean(torch.pow(mean - labels, 2) * inv_var, dim=-1), dim=-1)
    var_loss = torch.mean(torch.mean(logvar, dim=-1), dim=-1)
    total = torch.sum(mse_loss) + torch.sum(var_loss) + 0.01 * torch.sum(torch.square(w)) / 2.
    total.backward()
    q = torch.randn(6, 10)
    idx = np.random.default_rng(0).choice(10, 2, replace=False)
    mn = torch.min(q[:, idx], dim=1, keepdim=True)[0]
    return mse_loss, w.grad, b.grad, mn, torch.baddbmm(b[:, None, :], x, w)


def test_mbpo_ensemble():
    run_both(mbpo_ensemble)


def mppi_planning(m):
    torch=m.torch
    torch.manual_seed(0)
    mean = torch.zeros(5, 2); std = torch.ones(5, 2)
    actions = mean.unsqueeze(1) + std.unsqueeze(1) * torch.fmod(torch.randn(5, 30, 2), 2)
    returns = -(actions ** 2).sum((0, 2))
    elite_idxs = torch.topk(returns, 6, dim=0).indices
    elite = actions[:, elite_idxs]
    max_value = returns[elite_idxs].max(0)[0]
    score = torch.exp(0.5 * (returns[elite_idxs] - max_value))
    score /= score.sum(0)
    _mean = torch.sum(score.unsqueeze(0).unsqueeze(-1) * elite, dim=1) / (score.sum(0) + 1e-9)
    _std = torch.sqrt(torch.sum(score.unsqueeze(0).unsqueeze(-1) * (elite - _mean.unsqueeze(1)) ** 2, dim=1) / (score.sum(0) + 1e-9))
    _std = _std.clamp_(0.05, 2)
    score_np = score.squeeze(0).cpu().numpy()
    pick = elite[:, np.random.default_rng(1).choice(np.arange(score_np.shape[0]), p=score_np/score_np.sum())]
    return elite_idxs, _mean, _std, pick, elite.std(dim=1)


def test_mppi_planning():
    (elite_idxs, mean, std, pick, elite_std), _ = run_both(mppi_planning)
    assert len(set(elite_idxs.tolist())) == 6 and np.all((std >= 0.05) & (std <= 2))


def test_func_ensemble_meta_skeleton():
    torch, nn = OURS.torch, OURS.nn
    models = [nn.Linear(3, 2) for _ in range(2)]
    params, buffers = torch.func.stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    out = torch.vmap(lambda p, b, x: torch.func.functional_call(base, (p, b), (x,)), in_dims=(0, 0, None))(
        params, buffers, torch.ones(4, 3))
    assert out.shape == (2, 4, 2)


def soft_q_target_by_deepcopy(m):
    """A target network deep-copied from a critic that already holds gradients (its copy holds none, so an
    optimiser or clip_grad_norm_ over it sees no gradient), then a clipped update of the critic."""
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = optim.Adam(critic.parameters(), lr=1e-2)
    x = torch.randn(6, 3)
    critic(x).pow(2).mean().backward()
    target = copy.deepcopy(critic)
    grads = [p.grad for p in target.parameters()]
    opt.step()
    norm = nn.utils.clip_grad_norm_(target.parameters(), 1.0)
    return grads, norm, [p.detach() for p in target.parameters()]


def test_soft_q_target_by_deepcopy():
    ours, _ = run_both(soft_q_target_by_deepcopy)
    assert ours[0] == [None] * 4 and ours[1] == 0


def test_first_layer_weight_changed_in_place_before_backward():
    torch, nn = OURS.torch, OURS.nn
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    x = torch.randn(4, 3)
    y = net(x)
    with torch.no_grad():
        net.weight.mul_(0.5)
    y.sum().backward()
    np.testing.assert_allclose(net.bias.grad.numpy(), [4.0, 4.0])
    np.testing.assert_allclose(net.weight.grad.numpy(), np.tile(x.numpy().sum(0), (2, 1)), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Second-order: meta-gradients through recurrent models; per-parameter gradient hooks, a non-finite clip
# ----------------------------------------------------------------------------------------------


def meta_gradient_through_recurrent_model(m):
    """A MAML-style meta-gradient through a recurrent model (GRUCell stepped over time, an LSTM, LayerNorm, a
    Normal head): the inner gradients with create_graph, a functional_call of the GRUCell on the fast weights,
    and the outer gradient through both."""
    torch=m.torch; nn=m.nn; F=m.F; D=torch.distributions
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 4); lstm = nn.LSTM(3, 4, batch_first=True); ln = nn.LayerNorm(4)
    head = nn.Linear(4, 2)
    params = dict(cell.named_parameters())
    x = torch.randn(2, 5, 3)
    h = torch.zeros(2, 4)
    for t in range(5):
        h = cell(x[:, t], h)
    o, _ = lstm(x)
    z = ln(F.elu(h) + F.softplus(o[:, -1]))
    mu, log_std = head(torch.tanh(z)).chunk(2, -1)
    d = D.Normal(mu, log_std.exp())
    loss = -d.log_prob(torch.ones(2, 1)).mean() + d.entropy().mean()
    allp = list(cell.parameters()) + list(lstm.parameters()) + list(ln.parameters()) + list(head.parameters())
    grads = torch.autograd.grad(loss, allp, create_graph=True)
    fast = [w - 0.1 * g for w, g in zip(allp[:4], grads[:4])]
    names = [n for n, _ in cell.named_parameters()]
    h2 = torch.zeros(2, 4)
    for t in range(5):
        h2 = torch.func.functional_call(cell, dict(zip(names, fast)), (x[:, t], h2))
    outer = h2.pow(2).sum() + sum(g.pow(2).sum() for g in grads)
    outer.backward()
    return loss, [p.grad for p in allp]


def test_meta_gradient_through_recurrent_model():
    run_both(meta_gradient_through_recurrent_model, rtol=2e-5, atol=1e-6)


def gradient_hooks_and_nonfinite_clip(m):
    torch=m.torch; nn=m.nn
    torch.manual_seed(0)
    net = nn.Linear(3, 1)
    for p in net.parameters():
        p.register_hook(lambda g: torch.clamp(g, -0.1, 0.1))
    x = torch.randn(4, 3)
    net(x).sum().backward()
    gs = [p.grad.clone() for p in net.parameters()]
    net.weight.grad[0, 0] = float("inf")
    n = nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    a, b = torch.autograd.grad(net(x).sum(), [net.weight, torch.zeros(1, requires_grad=True)], allow_unused=True, materialize_grads=True)
    return gs, n, [p.grad for p in net.parameters()], a, b


def test_gradient_hooks_and_nonfinite_clip():
    ours, _ = run_both(gradient_hooks_and_nonfinite_clip)
    assert np.isinf(ours[1])


# ----------------------------------------------------------------------------------------------
# Planning with learnt models: iLQR linearisation by autograd.functional, a vmapped ensemble of GRUCells
# ----------------------------------------------------------------------------------------------


def ilqr_linearisation(m):
    """iLQR/MPC linearisation of a learnt dynamics model: jacobian, jacrev, hessian, vjp and jvp; the
    Jacobian of a GRUCell in its state."""
    torch=m.torch; nn=m.nn; F=m.F
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 4)
    dyn = nn.Sequential(nn.Linear(4 + 2, 8), nn.Tanh(), nn.Linear(8, 4))
    def f(x, u):
        return x + 0.1 * dyn(torch.cat([x, u], -1))
    x0 = torch.randn(4); u0 = torch.randn(2)
    A, B = torch.autograd.functional.jacobian(f, (x0, u0))
    Jx = torch.func.jacrev(f, argnums=(0, 1))(x0, u0)
    H = torch.autograd.functional.hessian(lambda u: f(x0, u).pow(2).sum(), u0)
    hx = torch.zeros(5, 4); xs = torch.randn(5, 3)
    Jh = torch.autograd.functional.jacobian(lambda h: cell(xs, h), hx, create_graph=False)
    vj = torch.autograd.functional.vjp(lambda u: f(x0, u), u0, torch.ones(4))
    jv = torch.autograd.functional.jvp(lambda u: f(x0, u), u0, torch.ones(2))
    return A, B, Jx, H, Jh, vj, jv


def test_ilqr_linearisation():
    (A, B, Jx, H, Jh, vj, jv), _ = run_both(ilqr_linearisation, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(Jx[0], A, rtol=1e-6) and np.testing.assert_allclose(Jx[1], B, rtol=1e-6)
    np.testing.assert_allclose(H, H.T, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(vj[1], B.sum(0), rtol=1e-5) and np.testing.assert_allclose(jv[1], B.sum(1), rtol=1e-5)


def vmapped_rssm_ensemble(m):
    """An ensemble of GRUCells stepped twice under vmap (stack_module_state, functional_call), and
    per-sample gradients by vmap(grad)."""
    torch=m.torch; nn=m.nn; F=m.F
    torch.manual_seed(0)
    cells = [nn.GRUCell(3, 4) for _ in range(3)]
    params, bufs = torch.func.stack_module_state(cells)
    def step(p, b, x, h):
        return torch.func.functional_call(cells[0], (p, b), (x, h))
    x = torch.randn(5, 3); h = torch.randn(3, 5, 4)
    out = torch.vmap(step, in_dims=(0, 0, None, 0))(params, bufs, x, h)
    out = torch.vmap(step, in_dims=(0, 0, None, 0))(params, bufs, x, out)
    out.pow(2).sum().backward()
    def loss(p, x, y):
        return (torch.func.functional_call(nn.Linear(3, 1), p, (x,)) - y).pow(2).mean()
    lin = nn.Linear(3, 1)
    p = {k: v.detach() for k, v in lin.named_parameters()}
    ps = torch.vmap(torch.func.grad(lambda p, x, y: (torch.func.functional_call(lin, p, (x.unsqueeze(0),)) - y).pow(2).mean()), in_dims=(None, 0, 0))(p, torch.randn(6, 3), torch.randn(6, 1))
    return out, {k: v.grad for k, v in params.items()}, ps


@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_vmapped_rssm_ensemble():
    (out, grads, per_sample), _ = run_both(vmapped_rssm_ensemble, rtol=2e-5, atol=1e-6)
    assert out.shape == (3, 5, 4) and grads["weight_ih"].shape == (3, 12, 3) and per_sample["weight"].shape == (6, 1, 3)


def gradient_penalty_through_packed_gru(m):
    """A gradient penalty (create_graph) through a packed, bidirectional two-layer GRU whose initial state is
    computed from its own input (a recurrent discriminator / encoder, as in GAIL on trajectories)."""
    torch=m.torch; nn=m.nn
    torch.manual_seed(0)
    gru = nn.GRU(3, 4, num_layers=2, batch_first=True, bidirectional=True)
    x = torch.randn(3, 5, 3, requires_grad=True)
    enc = nn.Linear(3, 4)
    h0 = enc(x[:, 0]).tanh().unsqueeze(0).repeat(4, 1, 1)
    packed = nn.utils.rnn.pack_padded_sequence(x, torch.tensor([5, 3, 2]), batch_first=True, enforce_sorted=True)
    out, hn = gru(packed, h0)
    y, lens = nn.utils.rnn.pad_packed_sequence(out, batch_first=True)
    loss = y.pow(2).sum() + hn.sin().sum()
    gs = torch.autograd.grad(loss, [x] + list(gru.parameters()) + list(enc.parameters()), create_graph=True)
    pen = sum(g.pow(2).sum() for g in gs)
    pen.backward()
    return y, hn, [g.detach() for g in gs], x.grad, [q.grad for q in gru.parameters()], [q.grad for q in enc.parameters()]


def test_gradient_penalty_through_packed_gru():
    run_both(gradient_penalty_through_packed_gru, rtol=5e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# TD-MPC2 (nicklashansen/tdmpc2) pieces
# ----------------------------------------------------------------------------------------------


def tdmpc2_optimisers(m):
    """TD-MPC2's encoder and heads (LayerNorm, Mish(inplace), SimNorm by view and softmax) under Adam with
    per-group learning rates, a tensor lr, foreach, fused and amsgrad, after clip_grad_norm_."""
    torch=m.torch; nn=m.nn; F=m.F; optim=m.optim
    torch.manual_seed(0)
    enc = nn.Sequential(nn.Linear(3, 8), nn.LayerNorm(8), nn.Mish(inplace=True))
    head = nn.Sequential(nn.Linear(8, 8), nn.Mish())
    out = []
    for kw in [dict(), dict(foreach=True), dict(fused=True), dict(foreach=False, amsgrad=True)]:
        opt = optim.Adam([{"params": enc.parameters(), "lr": 3e-4 * 0.3}, {"params": head.parameters()}], lr=torch.tensor(3e-4) if not kw else 3e-4, **kw)
        for _ in range(2):
            z = head(enc(torch.randn(4, 3)))
            shp = z.shape
            z = z.view(*shp[:-1], -1, 4)
            z = F.softmax(z, dim=-1)  # SimNorm
            z = z.view(*shp)
            loss = z.pow(2).sum() + F.mish(z).mean()
            opt.zero_grad(set_to_none=True); loss.backward()
            gn = nn.utils.clip_grad_norm_(list(enc.parameters()) + list(head.parameters()), 20.0)
            opt.step()
        out.append(([p.detach().clone() for p in enc.parameters()], float(gn)))
    return out


def test_tdmpc2_optimisers():
    run_both(tdmpc2_optimisers, rtol=2e-5, atol=1e-6)


def tdmpc2_math(m):
    """TD-MPC2's math: symlog two-hot targets by scatter_, soft cross-entropy, two_hot_inv, its Gaussian
    log-prob with the squash correction (relu-guarded), RunningScale by quantile and lerp_ on .data."""
    torch=m.torch; F=m.F
    def symlog(x): return torch.sign(x) * torch.log(1 + torch.abs(x))
    def symexp(x): return torch.sign(x) * (torch.exp(torch.abs(x)) - 1)
    num_bins, vmin, vmax = 11, -10.0, 10.0
    bin_size = (vmax - vmin) / (num_bins - 1)
    def two_hot(x):
        x = torch.clamp(symlog(x), vmin, vmax).squeeze(1)
        bin_idx = torch.floor((x - vmin) / bin_size).long()
        bin_offset = ((x - vmin) / bin_size - bin_idx.float()).unsqueeze(-1)
        soft_two_hot = torch.zeros(x.size(0), num_bins)
        soft_two_hot.scatter_(1, bin_idx.unsqueeze(1), 1 - bin_offset)
        soft_two_hot.scatter_(1, (bin_idx.unsqueeze(1) + 1) % num_bins, bin_offset)
        return soft_two_hot
    DREG_BINS = torch.linspace(vmin, vmax, num_bins)
    def two_hot_inv(x):
        x = F.softmax(x, dim=-1)
        x = torch.sum(x * DREG_BINS, dim=-1, keepdim=True)
        return symexp(x)
    def soft_ce(pred, target):
        pred = F.log_softmax(pred, dim=-1)
        target = two_hot(target)
        return -(target * pred).sum(-1, keepdim=True)
    torch.manual_seed(0)
    logits = torch.randn(4, num_bins, requires_grad=True)
    tgt = torch.tensor([[0.3], [-2.0], [50.0], [0.0]])
    l = soft_ce(logits, tgt).mean()
    l.backward()
    x = torch.randn(4, 2, requires_grad=True)
    log_std = torch.randn(4, 2)
    log_std = -10 + 0.5 * (2 - -10) * (torch.tanh(log_std) + 1)
    eps = torch.randn_like(x)
    residual = (-0.5 * eps.pow(2) - log_std).sum(-1, keepdim=True)
    log_prob = residual - 0.5 * math.log(2 * math.pi) * eps.size(-1)
    mu = torch.tanh(x); pi = torch.tanh(x + eps * log_std.exp())
    log_pi = log_prob - torch.log(F.relu(1 - pi.pow(2)) + 1e-6).sum(-1, keepdim=True)
    scale = torch.ones(1)
    v = torch.quantile(torch.randn(20), torch.tensor([0.05, 0.95]))
    scale.data.lerp_(v[1] - v[0], 0.01)
    log_pi.sum().backward()
    return l, logits.grad, two_hot(tgt), two_hot_inv(logits.detach()), log_pi, x.grad, scale


def test_tdmpc2_math():
    l, grad, target, value, log_pi, xgrad, scale = run_both(tdmpc2_math, rtol=2e-5, atol=1e-6)[0]
    np.testing.assert_allclose(target.sum(-1), 1, rtol=1e-6)
    np.testing.assert_allclose(grad.sum(-1), 0, atol=1e-6)  # a softmax cross-entropy's gradient sums to 0


# ----------------------------------------------------------------------------------------------
# MPO: maximum a-posteriori policy optimisation with a full-covariance Gaussian
# ----------------------------------------------------------------------------------------------


def mpo_policy_improvement(m):
    """MPO's policy step (daisatojp/mpo): a Cholesky factor written into a zero tensor by tril_indices (and
    softplus on its diagonal through index assignment), MultivariateNormal(scale_tril) sampled with a sample
    shape and expanded, the decoupled mean/covariance KL by det and inverse, and kl_divergence of two MVNs."""
    torch=m.torch; nn=m.nn; F=m.F; D=torch.distributions
    torch.manual_seed(0)
    B, A, N = 4, 2, 6
    net = nn.Linear(3, A + A * (A + 1) // 2)
    target = nn.Linear(3, A + A * (A + 1) // 2)
    target.load_state_dict(net.state_dict())
    with torch.no_grad():
        target.weight.add_(0.05)
    def policy(layer, s):
        out = layer(s)
        mean = torch.tanh(out[:, :A])
        cholesky_vector = out[:, A:]
        cholesky_diag_index = torch.arange(A, dtype=torch.long) + 1
        cholesky_diag_index = (cholesky_diag_index * (cholesky_diag_index + 1)) // 2 - 1
        cholesky_vector[:, cholesky_diag_index] = F.softplus(cholesky_vector[:, cholesky_diag_index])
        tril_indices = torch.tril_indices(row=A, col=A, offset=0)
        cholesky = torch.zeros(size=(s.size(0), A, A), dtype=torch.float32)
        cholesky[:, tril_indices[0], tril_indices[1]] = cholesky_vector
        return mean, cholesky
    state = torch.randn(B, 3)
    with torch.no_grad():
        b_mu, b_A = policy(target, state)
        b = D.MultivariateNormal(b_mu, scale_tril=b_A)
        sampled_actions = b.sample((N,))
        target_q = -(sampled_actions ** 2).sum(-1)
    eta = torch.tensor(1.0)
    baseline = F.softmax(target_q / eta, dim=0)
    mu, Achol = policy(net, state)
    pi_1 = D.MultivariateNormal(loc=mu, scale_tril=b_A)
    pi_2 = D.MultivariateNormal(loc=b_mu, scale_tril=Achol)
    loss_p = torch.mean(baseline * (pi_1.expand((N, B)).log_prob(sampled_actions) + pi_2.expand((N, B)).log_prob(sampled_actions)))
    def gaussian_kl(mu_i, mu, Ai, A):
        n = A.size(-1)
        mu_i = mu_i.unsqueeze(-1); mu = mu.unsqueeze(-1)
        sigma_i = Ai @ Ai.transpose(-2, -1); sigma = A @ A.transpose(-2, -1)
        sigma_i_det = sigma_i.det(); sigma_det = sigma.det()
        sigma_i_det = torch.clamp_min(sigma_i_det, 1e-6); sigma_det = torch.clamp_min(sigma_det, 1e-6)
        sigma_i_inv = sigma_i.inverse(); sigma_inv = sigma.inverse()
        inner_mu = ((mu - mu_i).transpose(-2, -1) @ sigma_i_inv @ (mu - mu_i)).squeeze()
        inner_sigma = torch.log(sigma_det / sigma_i_det) - n + (sigma_inv @ sigma_i).diagonal(dim1=-2, dim2=-1).sum(-1)
        return 0.5 * torch.mean(inner_mu), 0.5 * torch.mean(inner_sigma)
    kl_mu, kl_sigma = gaussian_kl(b_mu, mu, b_A, Achol)
    kl_ref = D.kl_divergence(b, D.MultivariateNormal(mu, scale_tril=Achol)).mean()
    total = -loss_p + kl_mu + kl_sigma + kl_ref
    total.backward()
    return loss_p, kl_mu, kl_sigma, kl_ref, [p.grad for p in net.parameters()], sampled_actions


def test_mpo_policy_improvement():
    ours, _ = run_both(mpo_policy_improvement, rtol=5e-5, atol=1e-6)
    assert ours[3] > 0 and ours[5].shape == (6, 4, 2)


def checkpointed_recurrent_rollout(m, reentrant, create):
    """A recurrent rollout whose steps are activation-checkpointed (torch.utils.checkpoint, both variants), each
    step a GRUCell and a Linear also used for the initial state; with create_graph, a gradient penalty too."""
    torch, nn = m.torch, m.nn
    import importlib
    cp = importlib.import_module("torch.utils.checkpoint" if torch.__name__ == "torch" else "autograd.utils.checkpoint")
    torch.manual_seed(0)
    cell = nn.GRUCell(3, 4); lin = nn.Linear(4, 4)
    x = torch.randn(5, 2, 3, requires_grad=True)
    h = lin(x[0].sum(-1, keepdim=True).expand(2, 4)).tanh()

    def step(xt, h):
        return torch.tanh(lin(cell(xt, h))) + h * xt.sum(-1, keepdim=True)

    for t in range(5):
        h = cp.checkpoint(step, x[t], h, use_reentrant=reentrant)
    loss = h.pow(2).sum()
    ps = [x] + list(cell.parameters()) + list(lin.parameters())
    if create:
        gs = torch.autograd.grad(loss, ps, create_graph=True)
        sum(g.pow(2).sum() for g in gs).backward()
        return [g.detach() for g in gs], [p.grad for p in ps]
    loss.backward()
    return [p.grad for p in ps]


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("reentrant, create", [(True, False), (False, False), (False, True)])
def test_checkpointed_recurrent_rollout(reentrant, create):
    run_both(checkpointed_recurrent_rollout, reentrant, create, rtol=5e-5, atol=1e-6)


@pytest.mark.xfail(strict=True, reason="the contract (README, autograd/tensor.py) keeps a floating array's dtype in "
                   "Tensor(array): cleanRL's `torch.Tensor(next_obs)` of gym's float64 NormalizeObservation output "
                   "stays float64 and the float32 policy refuses it, where PyTorch's legacy constructor makes float32")
def test_legacy_constructor_of_float64_observations():
    torch, nn = OURS.torch, OURS.nn
    actor_mean = nn.Linear(3, 1)
    next_obs = torch.Tensor(np.zeros((2, 3)))  # float64, as NormalizeObservation returns
    assert actor_mean(next_obs).dtype == torch.float32
