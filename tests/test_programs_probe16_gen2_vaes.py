# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Generative models not covered elsewhere, run as tests/probe16_gen2_common.py says: VAEs: a categorical VAE with
the Gumbel-softmax (hand-written straight-through and ``F.gumbel_softmax(hard=True)``, temperature annealed by NumPy,
``size_average=False``), ``RelaxedOneHotCategorical``; beta-TCVAE's minibatch-stratified estimator and FactorVAE's
permuted-latent discriminator (disentangling-vae)."""

import math

import numpy as np
import pytest

from .probe16_gen2_common import categorical_dim, latent_dim
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A categorical VAE with the Gumbel-softmax (YongfeiYan/Gumbel_Softmax_VAE): hard straight-through samples,
# temperature annealing by NumPy, the KL to a uniform prior; F.gumbel_softmax and RelaxedOneHotCategorical
# ----------------------------------------------------------------------------------------------


def make_gumbel_vae(m):
    torch, nn, F = m.torch, m.nn, m.F

    def sample_gumbel(shape, eps=1e-20):
        U = torch.rand(shape)
        return -torch.log(-torch.log(U + eps) + eps)

    def gumbel_softmax_sample(logits, temperature):
        y = logits + sample_gumbel(logits.size())
        return F.softmax(y / temperature, dim=-1)

    def gumbel_softmax(logits, temperature, hard=False):
        """
        ST-gumple-softmax
        input: [*, n_class]
        return: flatten --> [*, n_class] an one-hot vector
        """
        y = gumbel_softmax_sample(logits, temperature)

        if not hard:
            return y.view(-1, latent_dim * categorical_dim)

        shape = y.size()
        _, ind = y.max(dim=-1)
        y_hard = torch.zeros_like(y).view(-1, shape[-1])
        y_hard.scatter_(1, ind.view(-1, 1), 1)
        y_hard = y_hard.view(*shape)
        # Set gradients w.r.t. y_hard gradients w.r.t. y
        y_hard = (y_hard - y).detach() + y
        return y_hard.view(-1, latent_dim * categorical_dim)

    class VAE_gumbel(nn.Module):
        def __init__(self, temp, builtin=False):
            super(VAE_gumbel, self).__init__()
            self.fc1 = nn.Linear(64, 32)
            self.fc2 = nn.Linear(32, 16)
            self.fc3 = nn.Linear(16, latent_dim * categorical_dim)
            self.fc4 = nn.Linear(latent_dim * categorical_dim, 16)
            self.fc5 = nn.Linear(16, 32)
            self.fc6 = nn.Linear(32, 64)
            self.relu = nn.ReLU()
            self.sigmoid = nn.Sigmoid()
            self.builtin = builtin

        def encode(self, x):
            h1 = self.relu(self.fc1(x))
            h2 = self.relu(self.fc2(h1))
            return self.relu(self.fc3(h2))

        def decode(self, z):
            h4 = self.relu(self.fc4(z))
            h5 = self.relu(self.fc5(h4))
            return self.sigmoid(self.fc6(h5))

        def forward(self, x, temp, hard):
            q = self.encode(x.view(-1, 64))
            q_y = q.view(q.size(0), latent_dim, categorical_dim)
            if self.builtin:
                z = F.gumbel_softmax(q_y, tau=temp, hard=hard).view(-1, latent_dim * categorical_dim)
            else:
                z = gumbel_softmax(q_y, temp, hard)
            return self.decode(z), F.softmax(q_y, dim=-1).reshape(*q.size())

    return VAE_gumbel(1.0)


def gumbel_vae(m, weights, hard=True, builtin=False, epochs=2):
    torch, F = m.torch, m.F
    model = load(m, make_gumbel_vae(m), weights)
    model.builtin = builtin

    def loss_function(recon_x, x, qy):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, 64), size_average=False) / x.shape[0]
        log_ratio = torch.log(qy * categorical_dim + 1e-20)
        KLD = torch.sum(qy * log_ratio, dim=-1).mean()
        return BCE + KLD

    rng = np.random.default_rng(5)
    images = (rng.random((24, 1, 8, 8)) > 0.6).astype(np.float32)
    dataset = m.data.TensorDataset(torch.from_numpy(images), torch.zeros(24))
    train_loader = m.data.DataLoader(dataset, batch_size=6, shuffle=True,
                                     generator=torch.Generator().manual_seed(0))
    optimizer = m.optim.Adam(model.parameters(), lr=1e-3)
    temp, temp_min, ANNEAL_RATE = 1.0, 0.5, 0.03
    torch.manual_seed(7)
    history = []
    for epoch in range(epochs):
        model.train()
        train_loss = 0
        for batch_idx, (data, _) in enumerate(train_loader):
            optimizer.zero_grad()
            recon_batch, qy = model(data, temp, hard)
            loss = loss_function(recon_batch, data, qy)
            loss.backward()
            train_loss += loss.item() * len(data)
            optimizer.step()
            if batch_idx % 2 == 1:
                temp = np.maximum(temp * np.exp(-ANNEAL_RATE * batch_idx), temp_min)
        history.append([train_loss / len(train_loader.dataset), float(temp)])
    grads = {n: p.grad for n, p in model.named_parameters()}
    # samples from the prior: one category per latent chosen by NumPy
    M = 5 * latent_dim
    np_y = np.zeros((M, categorical_dim), dtype=np.float32)
    np_y[range(M), np.random.default_rng(1).choice(categorical_dim, M)] = 1
    np_y = np.reshape(np_y, [M // latent_dim, latent_dim, categorical_dim])
    sample = torch.from_numpy(np_y).view(M // latent_dim, latent_dim * categorical_dim)
    model.eval()
    with torch.no_grad():
        sample = model.decode(sample)
    # a relaxed one-hot posterior, reparameterised, and its log density
    logits = model.fc3.bias.detach().view(latent_dim, categorical_dim)
    posterior = torch.distributions.RelaxedOneHotCategorical(torch.tensor(0.5), logits=logits)
    torch.manual_seed(2)
    z = posterior.rsample((2,))
    return {"history": history, "grads": grads, "state": model.state_dict(), "sample": sample,
            "z": z, "log_prob": posterior.log_prob(z)}


@pytest.mark.parametrize("hard,builtin", [(True, False), (False, False), (True, True)])
def test_gumbel_softmax_vae(hard, builtin):
    weights = weights_of(make_gumbel_vae)
    ours, _ = run_both(gumbel_vae, weights, hard=hard, builtin=builtin, rtol=1e-4, atol=1e-5)
    assert ours["history"][-1][1] == pytest.approx(max(np.exp(-0.03) ** 2 * np.exp(-0.03 * 3) ** 2, 0.5))
    np.testing.assert_allclose(ours["z"].sum(-1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Disentangling VAEs as YannDubs/disentangling-vae writes them: beta-TCVAE's minibatch-stratified estimator
# (a log importance-weight matrix written through strided views of W.view(-1), logsumexp over a (B, B, D)
# density matrix), linear annealing; FactorVAE's discriminator on latents permuted per dimension by randperm,
# two backward passes over one graph (retain_graph) before either optimiser steps
# ----------------------------------------------------------------------------------------------


def make_disentangling_vae(m, latent_dim=3):
    torch, nn, F = m.torch, m.nn, m.F

    class EncoderBurgess(nn.Module):
        def __init__(self, img_size, latent_dim=10):
            super(EncoderBurgess, self).__init__()
            hid_channels = 4
            kernel_size = 4
            hidden_dim = 16
            self.latent_dim = latent_dim
            self.img_size = img_size
            self.reshape = (hid_channels, kernel_size // 2, kernel_size // 2)
            n_chan = self.img_size[0]
            cnn_kwargs = dict(stride=2, padding=1)
            self.conv1 = nn.Conv2d(n_chan, hid_channels, kernel_size, **cnn_kwargs)
            self.conv2 = nn.Conv2d(hid_channels, hid_channels, kernel_size, **cnn_kwargs)
            self.lin1 = nn.Linear(np.prod(self.reshape), hidden_dim)
            self.mu_logvar_gen = nn.Linear(hidden_dim, self.latent_dim * 2)

        def forward(self, x):
            batch_size = x.size(0)
            x = torch.relu(self.conv1(x))
            x = torch.relu(self.conv2(x))
            x = x.view((batch_size, -1))
            x = torch.relu(self.lin1(x))
            mu_logvar = self.mu_logvar_gen(x)
            mu, logvar = mu_logvar.view(-1, self.latent_dim, 2).unbind(-1)
            return mu, logvar

    class DecoderBurgess(nn.Module):
        def __init__(self, img_size, latent_dim=10):
            super(DecoderBurgess, self).__init__()
            hid_channels = 4
            kernel_size = 4
            hidden_dim = 16
            self.img_size = img_size
            self.reshape = (hid_channels, kernel_size // 2, kernel_size // 2)
            n_chan = self.img_size[0]
            self.lin1 = nn.Linear(latent_dim, hidden_dim)
            self.lin2 = nn.Linear(hidden_dim, np.prod(self.reshape))
            cnn_kwargs = dict(stride=2, padding=1)
            self.convT1 = nn.ConvTranspose2d(hid_channels, hid_channels, kernel_size, **cnn_kwargs)
            self.convT2 = nn.ConvTranspose2d(hid_channels, n_chan, kernel_size, **cnn_kwargs)

        def forward(self, z):
            batch_size = z.size(0)
            x = torch.relu(self.lin1(z))
            x = torch.relu(self.lin2(x))
            x = x.view(batch_size, *self.reshape)
            x = torch.relu(self.convT1(x))
            x = torch.sigmoid(self.convT2(x))
            return x

    class VAE(nn.Module):
        def __init__(self, img_size, encoder, decoder, latent_dim):
            super(VAE, self).__init__()
            self.latent_dim = latent_dim
            self.img_size = img_size
            self.num_pixels = self.img_size[1] * self.img_size[2]
            self.encoder = encoder(img_size, self.latent_dim)
            self.decoder = decoder(img_size, self.latent_dim)

        def reparameterize(self, mean, logvar):
            if self.training:
                std = torch.exp(0.5 * logvar)
                eps = torch.randn_like(std)
                return mean + std * eps
            else:
                # Reconstruction mode
                return mean

        def forward(self, x):
            latent_dist = self.encoder(x)
            latent_sample = self.reparameterize(*latent_dist)
            reconstruct = self.decoder(latent_sample)
            return reconstruct, latent_dist, latent_sample

        def sample_latent(self, x):
            latent_dist = self.encoder(x)
            latent_sample = self.reparameterize(*latent_dist)
            return latent_sample

    class Discriminator(nn.Module):
        def __init__(self, neg_slope=0.2, latent_dim=10, hidden_units=16):
            super(Discriminator, self).__init__()
            self.neg_slope = neg_slope
            self.leaky_relu = nn.LeakyReLU(self.neg_slope, True)
            self.z_dim = latent_dim
            self.hidden_units = hidden_units
            out_units = 2
            self.lin1 = nn.Linear(self.z_dim, hidden_units)
            self.lin2 = nn.Linear(hidden_units, hidden_units)
            self.lin3 = nn.Linear(hidden_units, out_units)

        def forward(self, z):
            z = self.leaky_relu(self.lin1(z))
            z = self.leaky_relu(self.lin2(z))
            z = self.lin3(z)
            return z

    return nn.ModuleDict({"vae": VAE((1, 8, 8), EncoderBurgess, DecoderBurgess, latent_dim),
                          "discriminator": Discriminator(latent_dim=latent_dim)})


def disentangling_losses(m):
    torch, F = m.torch, m.F

    def linear_annealing(init, fin, step, annealing_steps):
        """Linear annealing of a parameter."""
        if annealing_steps == 0:
            return fin
        assert fin > init
        delta = fin - init
        annealed = min(init + delta * step / annealing_steps, fin)
        return annealed

    def _reconstruction_loss(data, recon_data, distribution="bernoulli"):
        batch_size, n_chan, height, width = recon_data.size()
        if distribution == "bernoulli":
            loss = F.binary_cross_entropy(recon_data, data, reduction="sum")
        elif distribution == "gaussian":
            # loss in [0,255] space but normalized by 255 to not be too big
            loss = F.mse_loss(recon_data * 255, data * 255, reduction="sum") / 255
        elif distribution == "laplace":
            loss = F.l1_loss(recon_data, data, reduction="sum")
            loss = loss * 3  # emperical value to give similar values than bernoulli => use same hyperparam
            loss = loss * (loss != 0)  # masking to avoid nan
        loss = loss / batch_size
        return loss

    def _kl_normal_loss(mean, logvar):
        latent_kl = 0.5 * (-1 - logvar + mean.pow(2) + logvar.exp()).mean(dim=0)
        total_kl = latent_kl.sum()
        return total_kl

    def _permute_dims(latent_sample):
        perm = torch.zeros_like(latent_sample)
        batch_size, dim_z = perm.size()
        for z in range(dim_z):
            pi = torch.randperm(batch_size).to(latent_sample.device)
            perm[:, z] = latent_sample[pi, z]
        return perm

    def log_density_gaussian(x, mu, logvar):
        normalization = - 0.5 * (math.log(2 * math.pi) + logvar)
        inv_var = torch.exp(-logvar)
        log_density = normalization - 0.5 * ((x - mu)**2 * inv_var)
        return log_density

    def matrix_log_density_gaussian(x, mu, logvar):
        batch_size, dim = x.shape
        x = x.view(batch_size, 1, dim)
        mu = mu.view(1, batch_size, dim)
        logvar = logvar.view(1, batch_size, dim)
        return log_density_gaussian(x, mu, logvar)

    def log_importance_weight_matrix(batch_size, dataset_size):
        N = dataset_size
        M = batch_size - 1
        strat_weight = (N - M) / (N * M)
        W = torch.Tensor(batch_size, batch_size).fill_(1 / M)
        W.view(-1)[::M + 1] = 1 / N
        W.view(-1)[1::M + 1] = strat_weight
        W[M - 1, 0] = strat_weight
        return W.log()

    def _get_log_pz_qz_prodzi_qzCx(latent_sample, latent_dist, n_data, is_mss=True):
        batch_size, hidden_dim = latent_sample.shape
        # calculate log q(z|x)
        log_q_zCx = log_density_gaussian(latent_sample, *latent_dist).sum(dim=1)
        # calculate log p(z)
        # mean and log var is 0
        zeros = torch.zeros_like(latent_sample)
        log_pz = log_density_gaussian(latent_sample, zeros, zeros).sum(1)
        mat_log_qz = matrix_log_density_gaussian(latent_sample, *latent_dist)
        if is_mss:
            # use stratification
            log_iw_mat = log_importance_weight_matrix(batch_size, n_data).to(latent_sample.device)
            mat_log_qz = mat_log_qz + log_iw_mat.view(batch_size, batch_size, 1)
        log_qz = torch.logsumexp(mat_log_qz.sum(2), dim=1, keepdim=False)
        log_prod_qzi = torch.logsumexp(mat_log_qz, dim=1, keepdim=False).sum(1)
        return log_pz, log_qz, log_prod_qzi, log_q_zCx

    return (linear_annealing, _reconstruction_loss, _kl_normal_loss, _permute_dims,
            _get_log_pz_qz_prodzi_qzCx, log_importance_weight_matrix)


def disentangling_vae(m, weights, steps=3, rec_dist="bernoulli", is_mss=True):
    torch, F = m.torch, m.F
    (linear_annealing, _reconstruction_loss, _kl_normal_loss, _permute_dims, _get_log_pz_qz_prodzi_qzCx,
     log_importance_weight_matrix) = disentangling_losses(m)
    both = load(m, make_disentangling_vae(m), weights)
    model, discriminator = both["vae"], both["discriminator"]
    rng = np.random.default_rng(4)
    images = (rng.random((3, 8, 1, 8, 8)) > 0.5).astype(np.float32)
    n_data, steps_anneal = 64, 2
    alpha, beta, gamma = 1., 6., 1.

    # beta-TCVAE
    optimizer = m.optim.Adam(model.parameters(), lr=5e-3)
    torch.manual_seed(1)
    model.train()
    tc_history = []
    for n_train_steps in range(steps):
        data = torch.from_numpy(images[n_train_steps])
        recon_batch, latent_dist, latent_sample = model(data)
        batch_size, latent_dim = latent_sample.shape
        rec_loss = _reconstruction_loss(data, recon_batch, distribution=rec_dist)
        log_pz, log_qz, log_prod_qzi, log_q_zCx = _get_log_pz_qz_prodzi_qzCx(latent_sample, latent_dist, n_data,
                                                                              is_mss=is_mss)
        # I[z;x] = KL[q(z,x)||q(x)q(z)] = E_x[KL[q(z|x)||q(z)]]
        mi_loss = (log_q_zCx - log_qz).mean()
        # TC[z] = KL[q(z)||\prod_i z_i]
        tc_loss = (log_qz - log_prod_qzi).mean()
        # dw_kl_loss is KL[q(z)||p(z)] instead of usual KL[q(z|x)||p(z))]
        dw_kl_loss = (log_prod_qzi - log_pz).mean()
        anneal_reg = (linear_annealing(0, 1, n_train_steps, steps_anneal) if model.training else 1)
        # total loss
        loss = rec_loss + (alpha * mi_loss + beta * tc_loss + anneal_reg * gamma * dw_kl_loss)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        tc_history.append([loss.item(), mi_loss.item(), tc_loss.item(), dw_kl_loss.item(), anneal_reg])
    tc_grads = {n: p.grad for n, p in model.named_parameters()}

    # FactorVAE
    optimizer = m.optim.Adam(model.parameters(), lr=5e-3)
    optimizer_d = m.optim.Adam(discriminator.parameters(), lr=5e-4, betas=(0.5, 0.9))
    factor_history = []
    for n_train_steps in range(steps):
        data = torch.from_numpy(images[n_train_steps])
        # factor-vae split data into two batches. In the paper they sample 2 batches
        batch_size = data.size(dim=0)
        half_batch_size = batch_size // 2
        data = data.split(half_batch_size)
        data1 = data[0]
        data2 = data[1]

        # Factor VAE Loss
        recon_batch, latent_dist, latent_sample1 = model(data1)
        rec_loss = _reconstruction_loss(data1, recon_batch, distribution=rec_dist)
        kl_loss = _kl_normal_loss(*latent_dist)
        d_z = discriminator(latent_sample1)
        # We want log(p_true/p_false). If not using logisitc regression but softmax
        # then p_true = exp(logit_true) / Z; p_false = exp(logit_false) / Z
        # so log(p_true/p_false) = logit_true - logit_false
        tc_loss = (d_z[:, 0] - d_z[:, 1]).mean()
        anneal_reg = (linear_annealing(0, 1, n_train_steps, steps_anneal) if model.training else 1)
        vae_loss = rec_loss + kl_loss + anneal_reg * gamma * tc_loss

        # Compute VAE gradients
        optimizer.zero_grad()
        vae_loss.backward(retain_graph=True)

        # Discriminator Loss
        # Get second sample of latent distribution
        latent_sample2 = model.sample_latent(data2)
        z_perm = _permute_dims(latent_sample2).detach()
        d_z_perm = discriminator(z_perm)

        # Calculate total correlation loss
        # for cross entropy the target is the index => need to be long and says
        # that it's first output for d_z and second for perm
        ones = torch.ones(half_batch_size, dtype=torch.long, device=data1.device)
        zeros = torch.zeros_like(ones)
        d_tc_loss = 0.5 * (F.cross_entropy(d_z, zeros) + F.cross_entropy(d_z_perm, ones))

        # Compute discriminator gradients
        optimizer_d.zero_grad()
        d_tc_loss.backward()

        # Update at the end (since pytorch 1.5. complains if update before)
        optimizer.step()
        optimizer_d.step()
        factor_history.append([vae_loss.item(), d_tc_loss.item()])
    factor_grads = {n: p.grad for n, p in both.named_parameters()}
    model.eval()
    with torch.no_grad():
        recon, (mu, logvar), sample = model(torch.from_numpy(images[0]))
    return {"tc_history": tc_history, "tc_grads": tc_grads, "factor_history": factor_history,
            "factor_grads": factor_grads, "state": both.state_dict(), "recon": recon, "mu": mu,
            "log_w": log_importance_weight_matrix(5, 10)}


@pytest.mark.parametrize("rec_dist", ["bernoulli", "laplace"])
def test_beta_tcvae_and_factor_vae(rec_dist):
    weights = weights_of(make_disentangling_vae)
    ours, _ = run_both(disentangling_vae, weights, rec_dist=rec_dist, rtol=2e-4, atol=2e-5)
    # the repository's matrix as written: a stride of M + 1 = batch_size through W.view(-1) walks down the
    # first column (and the second), not the diagonal the paper's stratification means
    N, M = 10, 4
    expected = np.full((5, 5), 1 / M)
    expected.reshape(-1)[::M + 1] = 1 / N
    expected.reshape(-1)[1::M + 1] = (N - M) / (N * M)
    expected[M - 1, 0] = (N - M) / (N * M)
    assert (expected[:, 0] == 1 / N).sum() == 4
    np.testing.assert_allclose(ours["log_w"], np.log(expected), rtol=1e-6)
