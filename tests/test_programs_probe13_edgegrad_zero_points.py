# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Programs whose gradients pass through the points where PyTorch has a convention of its own (see
tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and data, comparing values,
gradients and parameters, and checked against values known by hand. Functions at zero: a SincNet band-pass filter
through t = 0 (``torch.sinc``); siamese distances between equal points (``pairwise_distance``, ``cdist``, ``pdist``,
triplet and contrastive margins); WGAN-GP's penalty where a dead critic's input gradient is 0 (double backward
through a norm at 0); group statistics of single members and constant features (``std`` with its correction,
``LayerNorm`` of constants); polar features at the origin (``atan2(0, 0)``, ``hypot``)."""

import math
import warnings

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A SincNet band-pass filter: torch.sinc through t = 0, the cut-off frequencies learnt
# ----------------------------------------------------------------------------------------------


def make_sinc_conv(m):
    nn, torch = m.nn, m.torch

    class SincConv(nn.Module):
        def __init__(self, out_channels=3, kernel_size=9, sample_rate=16.0):
            super().__init__()
            self.low_hz = nn.Parameter(torch.tensor([[0.5], [1.5], [3.0]]))
            self.band_hz = nn.Parameter(torch.tensor([[1.0], [2.0], [1.5]]))
            self.register_buffer("t", (torch.arange(kernel_size) - kernel_size // 2).float() / sample_rate)
            self.register_buffer("window", torch.hamming_window(kernel_size))

        def filters(self):
            low = torch.abs(self.low_hz)
            high = low + torch.abs(self.band_hz)
            band_pass = 2 * high * torch.sinc(2 * high * self.t) - 2 * low * torch.sinc(2 * low * self.t)
            # SincNet's own form: sin(x) / x with the centre tap written by hand
            x_low, x_high = 2 * math.pi * low * self.t, 2 * math.pi * high * self.t
            by_hand = torch.where(self.t == 0, 2 * (high - low), (torch.sin(x_high) - torch.sin(x_low)) / (math.pi * self.t))
            return band_pass * self.window, by_hand * self.window

        def forward(self, x):
            filters, _ = self.filters()
            return m.F.conv1d(x, filters.unsqueeze(1), padding=filters.shape[-1] // 2)

    return SincConv()


def sinc_filter(m, weights):
    torch = m.torch
    rng = np.random.default_rng(9)
    x = torch.tensor(rng.standard_normal((2, 1, 32)).astype(np.float32))
    model = load(m, make_sinc_conv(m), weights)
    y = model(x)
    loss = y.pow(2).mean()
    loss.backward()
    filters, by_hand = model.filters()
    g_low, g_band = torch.autograd.grad(by_hand.sum(), [model.low_hz, model.band_hz])
    return {"loss": loss, "low_grad": model.low_hz.grad, "band_grad": model.band_hz.grad, "filters": filters,
            "by_hand": by_hand, "by_hand_grads": [g_low, g_band]}


def test_sinc_filter_through_the_centre_tap():
    weights = weights_of(make_sinc_conv)
    ours, _ = run_both(sinc_filter, weights, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(ours["filters"], ours["by_hand"], rtol=1e-4, atol=1e-5)
    centre = 0.54 - 0.46 * np.cos(2 * np.pi * 4 / 9)  # the periodic Hamming window's middle tap
    np.testing.assert_allclose(ours["filters"][:, 4], 2 * np.array([1.0, 2.0, 1.5]) * centre, rtol=1e-6)  # 2 (f2 - f1)
    assert np.isfinite(ours["low_grad"]).all()
    # the hand-written centre tap: where() does not stop the unused branch's 0 / 0, as in PyTorch (torch.sinc does)
    assert np.isnan(ours["by_hand_grads"][0]).all() and np.isnan(ours["by_hand_grads"][1]).all()


# ----------------------------------------------------------------------------------------------
# Siamese distances between equal points: pairwise_distance, cdist, pdist, triplet and contrastive margins
# ----------------------------------------------------------------------------------------------


def make_embedder(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3))


def siamese(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(10)
    x = torch.tensor(rng.standard_normal((5, 4)))
    x = torch.cat([x, x[:2]])  # rows 5, 6 repeat rows 0, 1: equal embeddings
    model = load(m, make_embedder(m), weights).double()
    z = model(x)
    d_pair = F.pairwise_distance(z[:2], z[5:])  # eps keeps the equal pairs' gradient finite
    d_pair_l1 = F.pairwise_distance(z[:2], z[5:], p=1)
    d = torch.cdist(z, z)  # zero diagonal and zero off-diagonal pairs
    d_mm = torch.cdist(z, z, compute_mode="use_mm_for_euclid_dist")
    d_inf = torch.cdist(z, z, p=float("inf"))
    pd = F.pdist(z)
    labels = torch.tensor([0, 1, 0, 1, 2, 0, 1])
    same = (labels[:, None] == labels[None, :]).to(z.dtype)
    margin = 1.0
    contrastive = (same * d.pow(2) + (1 - same) * F.relu(margin - d).pow(2)).mean()
    triplet = F.triplet_margin_loss(z[:2], z[5:], z[2:4], margin=0.5)
    # a ranking of two equal distances with margin 0: exactly at the hinge (clamp_min lets the gradient through)
    triplet_at_margin = F.margin_ranking_loss(F.pairwise_distance(z[:2], z[2:4]), F.pairwise_distance(z[:2], z[2:4]),
                                              torch.ones(2, dtype=z.dtype), margin=0.0)
    triplet_by_distance = nn.TripletMarginWithDistanceLoss(distance_function=nn.PairwiseDistance(), margin=1e-3)(z[:2], z[5:], z[2:4])
    cos = nn.CosineEmbeddingLoss(margin=0.0)(z[:2], z[5:], torch.tensor([1.0, -1.0]))
    loss = (d_pair.sum() + d_pair_l1.sum() + contrastive + d_inf.sum() + pd.sum() + triplet + triplet_at_margin
            + triplet_by_distance + cos + d_mm.sum())
    loss.backward()
    return {"d_pair": d_pair, "d": d, "d_mm": d_mm, "pd": pd, "triplet": triplet, "at_margin": triplet_at_margin,
            "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_siamese_distances_between_equal_points():
    weights = weights_of(make_embedder)
    ours, _ = run_both(siamese, weights, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["d_pair"], 1e-6 * np.sqrt(3), rtol=1e-9)  # ‖z - z + eps‖ = eps √3
    assert ours["d"][0, 5] == 0 and ours["d"][1, 6] == 0 and (np.diag(ours["d"]) == 0).all()
    assert all(np.isfinite(g).all() for g in ours["grads"].values())


# ----------------------------------------------------------------------------------------------
# WGAN-GP: the gradient penalty where a dead critic's input gradient is 0 (double backward through a norm at 0)
# ----------------------------------------------------------------------------------------------


def make_critic(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))


def wgan_gp(m, weights):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(11)
    real = torch.tensor(rng.standard_normal((6, 3)))
    fake = torch.tensor(rng.standard_normal((6, 3)))
    fake[4:] = -20.0  # far out: every hidden unit of the critic is dead there
    real[4:] = -20.0
    critic = load(m, make_critic(m), weights).double()
    with torch.no_grad():
        critic[0].weight.abs_()
        critic[0].bias.fill_(0.1)
    optimizer = optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
    history = []
    for step in range(2):
        alpha = torch.tensor(rng.uniform(size=(6, 1)))
        interpolates = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        scores = critic(interpolates)
        gradients = torch.autograd.grad(outputs=scores, inputs=interpolates, grad_outputs=torch.ones_like(scores),
                                        create_graph=True, retain_graph=True, only_inputs=True)[0]
        gradient_penalty = ((gradients.norm(2, dim=1) - 1) ** 2).mean()
        loss = critic(fake).mean() - critic(real).mean() + 10 * gradient_penalty
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append([loss.item(), gradient_penalty.item(), gradients.norm(2, dim=1).min().item()])
    return {"history": history, "weights": dict(critic.state_dict())}


def test_wgan_gp_with_dead_critic_regions():
    weights = weights_of(make_critic)
    ours, _ = run_both(wgan_gp, weights, rtol=1e-9, atol=1e-11)
    history = np.array(ours["history"])
    assert history[0, 2] == 0.0  # a sample whose input gradient is the zero vector
    assert np.isfinite(history).all() and all(np.isfinite(w).all() for w in ours["weights"].values())


# ----------------------------------------------------------------------------------------------
# Group statistics of single members and constant features: std's correction, LayerNorm of constants
# ----------------------------------------------------------------------------------------------


def group_statistics(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(12)
    x = torch.tensor(rng.standard_normal((7, 4)), requires_grad=True)
    groups = [[0, 1, 2], [3], [4, 5, 6]]  # group 1 has a single member: its unbiased std is NaN (0 / 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (std of one element warns, in both libraries)
        stds = torch.stack([x[g].std(dim=0) for g in groups])
        stds_biased = torch.stack([x[g].std(dim=0, correction=0) for g in groups])
        var_mean = [torch.var_mean(x[g], dim=0, unbiased=True) for g in groups]
    safe = torch.nan_to_num(stds, nan=0.0)
    whitened = torch.cat([(x[g] - x[g].mean(0)) / (stds_biased[i] + 1e-5) for i, g in enumerate(groups)])
    constant = torch.cat([x[:, :2], torch.full((7, 2), 3.0, dtype=x.dtype)], 1)  # two constant features
    ln = nn.LayerNorm(4).double()
    normed_rows = ln(torch.full((2, 4), 2.5, dtype=x.dtype) + 0 * x[:2])  # constant rows: var 0, rsqrt(eps)
    bn = nn.BatchNorm1d(4).double()
    normed_cols = bn(constant)  # constant columns over the batch
    loss = safe.sum() + stds_biased.sum() + whitened.pow(2).sum() + normed_rows.sum() + (normed_cols * torch.arange(4.0, dtype=x.dtype)).sum()
    loss.backward()
    return {"stds": stds, "biased": stds_biased, "var_mean": var_mean, "normed_rows": normed_rows, "normed_cols": normed_cols,
            "x_grad": x.grad, "ln_grads": [ln.weight.grad, ln.bias.grad], "bn_grads": [bn.weight.grad, bn.bias.grad],
            "running": [bn.running_mean, bn.running_var]}


def test_group_statistics_of_single_members_and_constants():
    ours, _ = run_both(group_statistics, rtol=1e-9, atol=1e-11)
    assert np.isnan(ours["stds"][1]).all() and (ours["biased"][1] == 0).all()
    assert np.isnan(ours["var_mean"][1][0]).all()
    assert (ours["normed_rows"] == 0).all() and (ours["normed_cols"][:, 2:] == 0).all()
    # the single member's unbiased std is 0 / 0 and its gradient NaN, which nan_to_num's backward passes on
    assert np.isnan(ours["x_grad"][3]).any() and np.isfinite(np.delete(ours["x_grad"], 3, 0)).all()
    np.testing.assert_allclose(ours["running"][1][2:], 0.9)  # the unbiased running variance of constants: 0.9 · 1 + 0


# ----------------------------------------------------------------------------------------------
# Polar features at the origin: atan2(0, 0), hypot(0, 0), a norm of the zero vector
# ----------------------------------------------------------------------------------------------


def make_polar_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))


def polar(m, weights):
    torch = m.torch
    xy = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, -1.0], [-1.0, -0.0], [3.0, 4.0], [-0.0, 0.0]], requires_grad=True)
    x, y = xy[:, 0], xy[:, 1]
    theta = torch.atan2(y, x)
    r = torch.hypot(x, y)
    r_norm = xy.norm(dim=1)
    r_sqrt = (x * x + y * y).sqrt()  # sqrt at 0: an infinite derivative times 0 is NaN (PyTorch's too)
    features = torch.stack([r, torch.cos(theta), torch.sin(theta), r_norm], 1)
    model = load(m, make_polar_net(m), weights)
    out = model(features).sum()
    out.backward(retain_graph=True)
    (g_sqrt,) = torch.autograd.grad(r_sqrt.sum(), xy)
    return {"theta": theta, "r": r, "out": out, "xy_grad": xy.grad, "g_sqrt": g_sqrt,
            "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_polar_features_at_the_origin():
    weights = weights_of(make_polar_net)
    ours, _ = run_both(polar, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["theta"], [0, 0, -np.pi / 2, -np.pi, np.arctan2(4, 3), np.pi], rtol=1e-6)
    # atan2 and the norm give the origin a gradient of 0; hypot's is PyTorch's x / r = 0 / 0 there
    assert np.isnan(ours["xy_grad"][[0, 5]]).all() and np.isfinite(ours["xy_grad"][1:5]).all()
    assert np.isnan(ours["g_sqrt"][0]).all() and np.isfinite(ours["g_sqrt"][1:5]).all()
