# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Computational-biology programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights and data, and checked against NumPy by hand where PyTorch is missing. scVI (a VAE over counts with library
size, the negative binomial and zero-inflated NB log-likelihoods written with ``lgamma``/``softplus``, KL terms from
``torch.distributions``), the NB likelihood against ``NegativeBinomial.log_prob`` and ``lgamma``/``digamma`` at large
arguments; ``F.poisson_nll_loss(full=True)``'s target gradient (NaN at a zero count, as PyTorch's)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# scVI: a VAE over single-cell counts with library-size normalisation, the negative binomial and the
# zero-inflated negative binomial log-likelihoods written with lgamma / softplus / log-sum-exp tricks
# ----------------------------------------------------------------------------------------------


def cell_counts(n=24, genes=12, seed=0):
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 2, n)
    means = np.where(types[:, None] == 0, rng.gamma(2.0, 2.0, genes), rng.gamma(2.0, 0.5, genes))
    library = rng.lognormal(0.0, 0.5, (n, 1))
    counts = rng.poisson(means * library)
    counts[rng.random(counts.shape) < 0.2] = 0  # dropouts
    return counts.astype(np.float32), types


def log_nb_positive(m, x, mu, theta, eps=1e-8, log_fn=None, lgamma_fn=None):
    """scvi-tools' ``log_nb_positive``: NB(x; mean mu, inverse dispersion theta)."""
    torch = m.torch
    log_fn = torch.log if log_fn is None else log_fn
    lgamma_fn = torch.lgamma if lgamma_fn is None else lgamma_fn
    log_theta_mu_eps = log_fn(theta + mu + eps)
    return (theta * (log_fn(theta + eps) - log_theta_mu_eps) + x * (log_fn(mu + eps) - log_theta_mu_eps)
            + lgamma_fn(x + theta) - lgamma_fn(theta) - lgamma_fn(x + 1))


def log_zinb_positive(m, x, mu, theta, pi, eps=1e-8):
    """scvi-tools' ``log_zinb_positive``: pi are the logits of the dropout probability."""
    torch, F = m.torch, m.F
    if theta.ndimension() == 1:
        theta = theta.view(1, theta.size(0))
    softplus_pi = F.softplus(-pi)
    log_theta_eps = torch.log(theta + eps)
    log_theta_mu_eps = torch.log(theta + mu + eps)
    pi_theta_log = -pi + theta * (log_theta_eps - log_theta_mu_eps)
    case_zero = F.softplus(pi_theta_log) - softplus_pi
    mul_case_zero = torch.mul((x < eps).type(torch.float32), case_zero)
    case_non_zero = (-softplus_pi + pi_theta_log + x * (torch.log(mu + eps) - log_theta_mu_eps)
                     + torch.lgamma(x + theta) - torch.lgamma(theta) - torch.lgamma(x + 1))
    mul_case_non_zero = torch.mul((x > eps).type(torch.float32), case_non_zero)
    return mul_case_zero + mul_case_non_zero


def scvi_net(m, genes=12, hidden=16, latent=3):
    torch, nn, F = m.torch, m.nn, m.F

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(genes, hidden), nn.BatchNorm1d(hidden, momentum=0.01, eps=1e-3),
                                         nn.ReLU(), nn.Dropout(p=0.0))
            self.mean_encoder = nn.Linear(hidden, latent)
            self.var_encoder = nn.Linear(hidden, latent)
            self.l_encoder = nn.Linear(hidden, 1)

        def forward(self, x):
            q = self.encoder(x)
            return self.mean_encoder(q), torch.exp(self.var_encoder(q)) + 1e-4, self.l_encoder(q)

    class Decoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.px_decoder = nn.Sequential(nn.Linear(latent, hidden), nn.LayerNorm(hidden, elementwise_affine=False),
                                            nn.ReLU())
            self.px_scale_decoder = nn.Sequential(nn.Linear(hidden, genes), nn.Softmax(dim=-1))
            self.px_dropout_decoder = nn.Linear(hidden, genes)

        def forward(self, z, library):
            px = self.px_decoder(z)
            px_scale = self.px_scale_decoder(px)
            px_rate = torch.exp(library) * px_scale
            return px_scale, px_rate, self.px_dropout_decoder(px)

    class VAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.px_r = nn.Parameter(torch.randn(genes))
            self.z_encoder = Encoder()
            self.decoder = Decoder()

    return VAE()


def scvi(m, weights, likelihood="zinb", steps=4):
    torch, F, optim = m.torch, m.F, m.optim
    D = torch.distributions
    counts, types = cell_counts()
    x = torch.from_numpy(counts)
    model = load(m, scvi_net(m), weights)
    library_log = torch.log(x.sum(1, keepdim=True))
    local_l_mean, local_l_var = library_log.mean(), library_log.var()
    opt = optim.Adam(model.parameters(), lr=1e-2, eps=0.01, weight_decay=1e-6)
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(steps, *x.shape[:1], 3, generator=generator)
    history = []
    for step in range(steps):
        opt.zero_grad()
        x_ = torch.log1p(x)
        qz_m, qz_v, ql = model.z_encoder(x_)
        z = qz_m + qz_v.sqrt() * noise[step]  # rsample with the noise drawn up front
        px_scale, px_rate, px_dropout = model.decoder(z, ql)
        theta = torch.exp(model.px_r)
        if likelihood == "zinb":
            rec = -log_zinb_positive(m, x, px_rate, theta, px_dropout).sum(dim=-1)
        else:
            rec = -log_nb_positive(m, x, px_rate, theta).sum(dim=-1)
        prior = D.Normal(torch.zeros_like(qz_m), torch.ones_like(qz_v))
        kl_z = D.kl_divergence(D.Normal(qz_m, qz_v.sqrt()), prior).sum(1)
        kl_l = D.kl_divergence(D.Normal(ql, torch.ones_like(ql)), D.Normal(local_l_mean, local_l_var.sqrt())).sum(1)
        loss = torch.mean(rec + kl_z + kl_l)
        loss.backward()
        opt.step()
        history.append((rec.mean().item(), kl_z.mean().item()))
    model.eval()
    with torch.no_grad():
        qz_m, _, ql = model.z_encoder(torch.log1p(x))
        normalized = model.decoder(qz_m, torch.zeros_like(ql))[0] * 1e4
    bn = model.z_encoder.encoder[1]
    return history, qz_m, normalized, bn.running_mean, bn.running_var, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("likelihood", ["zinb", "nb"])
def test_scvi_zinb_vae(likelihood):
    weights = weights_of(scvi_net)
    ours, _ = run_both(scvi, weights, likelihood=likelihood, rtol=1e-4, atol=1e-5)
    history = ours[0]
    assert sum(history[-1]) < sum(history[0])


def nb_checks(m):
    """The hand-written likelihoods against torch.distributions and large-count lgamma."""
    torch, F = m.torch, m.F
    D = torch.distributions
    x = torch.tensor([0.0, 1.0, 3.0, 50.0, 1e4, 1e6], dtype=torch.float64)
    mu = torch.tensor([0.5, 2.0, 3.0, 40.0, 9e3, 1.2e6], dtype=torch.float64, requires_grad=True)
    theta = torch.tensor([0.1, 1.0, 10.0, 5.0, 100.0, 3e5], dtype=torch.float64, requires_grad=True)
    ours = log_nb_positive(m, x, mu, theta, eps=0.0)
    # NegativeBinomial(total_count=theta, logits=log mu - log theta) is the same law
    reference = D.NegativeBinomial(total_count=theta, logits=torch.log(mu) - torch.log(theta)).log_prob(x)
    gmu, gtheta = torch.autograd.grad(ours.sum(), (mu, theta))
    pi = torch.tensor([-2.0, 0.0, 1.0, 3.0, -1.0, 0.5], dtype=torch.float64)
    zinb = log_zinb_positive(m, x.float(), mu.detach().float(), theta.detach().float(), pi.float())
    # the zero case by hand: log(sigmoid(pi) + sigmoid(-pi) * NB(0))
    nb_zero = (theta * (torch.log(theta) - torch.log(theta + mu))).detach()
    by_hand = torch.logaddexp(F.logsigmoid(pi), F.logsigmoid(-pi) + nb_zero)
    big = torch.tensor([1e5, 1e7, 1e10, 1e15], dtype=torch.float32)
    return (ours, reference, gmu, gtheta, zinb, by_hand, torch.lgamma(big), torch.lgamma(big.double()),
            torch.digamma(big))


def test_negative_binomial_likelihoods():
    ours, _ = run_both(nb_checks, rtol=1e-9, atol=1e-8)
    nb, reference, gmu, gtheta, zinb, by_hand, lg32, lg64, dg32 = ours
    np.testing.assert_allclose(nb, reference, rtol=1e-9)
    np.testing.assert_allclose(zinb[0, 0], by_hand[0], rtol=1e-6)  # (theta made a row: zinb is (1, 6))
    np.testing.assert_allclose(lg64, [math.lgamma(v) for v in np.float32([1e5, 1e7, 1e10, 1e15])], rtol=1e-15)
    np.testing.assert_allclose(lg32, lg64, rtol=1e-6)
    np.testing.assert_allclose(dg32, np.log([1e5, 1e7, 1e10, 1e15]), rtol=1e-5)


@pytest.mark.parametrize("log_input", [True, False])
def test_poisson_nll_full_target_gradient(T, log_input):
    """full=True adds Stirling's term computed everywhere and masked where the target is at most 1, as PyTorch's:
    a target that requires grad gets NaN at 0 (0 · ln 0 in the masked term's backward), finite values elsewhere."""
    F = T.nn.functional
    x = T.tensor([0.3, -0.2, 0.1, 0.4, 0.5], dtype=T.float64, requires_grad=True)
    y = T.tensor([0.0, 0.5, 1.0, 2.0, 7.0], dtype=T.float64, requires_grad=True)
    rate = x if log_input else x.abs() + 0.1
    loss = F.poisson_nll_loss(rate, y, log_input=log_input, full=True, reduction="sum")
    loss.backward()
    x_, y_ = x.detach().numpy(), y.detach().numpy()
    stirling = np.where(y_ > 1, y_ * np.log(np.maximum(y_, 1)) - y_ + 0.5 * np.log(2 * np.pi * np.maximum(y_, 1)), 0)
    if log_input:
        value, dy = np.exp(x_) - y_ * x_, -x_
    else:
        value, dy = (np.abs(x_) + 0.1) - y_ * np.log(np.abs(x_) + 0.1 + 1e-8), -np.log(np.abs(x_) + 0.1 + 1e-8)
    assert abs(loss.item() - (value + stirling).sum()) < 1e-12
    dstirling = np.where(y_ > 1, np.log(np.maximum(y_, 1)) + 0.5 / np.maximum(y_, 1), 0)
    want = dy + dstirling
    want[0] = np.nan
    np.testing.assert_allclose(y.grad.numpy(), want, rtol=1e-12)
