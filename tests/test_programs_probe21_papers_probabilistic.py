# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: losses over distributions: evidential losses (``digamma``/``lgamma``),
sketch-RNN (bidirectional LSTM VAE, bivariate Gaussian mixture), PonderNet."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/uncertainty/evidence: evidential deep learning's losses
# ----------------------------------------------------------------------------------------------


def evidence_program(m):
    torch, nn = m.torch, m.nn

    class MaximumLikelihoodLoss(nn.Module):
        def forward(self, evidence, target):
            alpha = evidence + 1.
            strength = alpha.sum(dim=-1)
            loss = (target * (strength.log()[:, None] - alpha.log())).sum(dim=-1)
            return loss.mean()

    class CrossEntropyBayesRisk(nn.Module):
        def forward(self, evidence, target):
            alpha = evidence + 1.
            strength = alpha.sum(dim=-1)
            loss = (target * (torch.digamma(strength)[:, None] - torch.digamma(alpha))).sum(dim=-1)
            return loss.mean()

    class SquaredErrorBayesRisk(nn.Module):
        def forward(self, evidence, target):
            alpha = evidence + 1.
            strength = alpha.sum(dim=-1)
            p = alpha / strength[:, None]
            err = (target - p) ** 2
            var = p * (1 - p) / (strength[:, None] + 1)
            loss = (err + var).sum(dim=-1)
            return loss.mean()

    class KLDivergenceLoss(nn.Module):
        def forward(self, evidence, target):
            alpha = evidence + 1.
            n_classes = evidence.shape[-1]
            alpha_tilde = target + (1 - target) * alpha
            strength_tilde = alpha_tilde.sum(dim=-1)
            first = (torch.lgamma(alpha_tilde.sum(dim=-1))
                     - torch.lgamma(alpha_tilde.new_tensor(float(n_classes)))
                     - (torch.lgamma(alpha_tilde)).sum(dim=-1))
            second = (
                (alpha_tilde - 1) *
                (torch.digamma(alpha_tilde) - torch.digamma(strength_tilde)[:, None])
            ).sum(dim=-1)
            loss = first + second
            return loss.mean()

    def statistics(evidence, target):
        n_classes = evidence.shape[-1]
        match = evidence.argmax(dim=-1).eq(target.argmax(dim=-1))
        accuracy = match.sum() / match.shape[0]
        alpha = evidence + 1.
        strength = alpha.sum(dim=-1)
        expected_probability = alpha / strength[:, None]
        expected_probability, _ = expected_probability.max(dim=-1)
        uncertainty_mass = n_classes / strength
        return {"accuracy": accuracy, "u.succ": uncertainty_mass.masked_select(match),
                "u.fail": uncertainty_mass.masked_select(~match),
                "prob.succ": expected_probability.masked_select(match),
                "prob.fail": expected_probability.masked_select(~match)}

    class Model(nn.Module):
        def __init__(self, dropout=0.0):
            super().__init__()
            self.fc1 = nn.Linear(6, 24)
            self.act = nn.ReLU()
            self.dropout = nn.Dropout(dropout)
            self.fc2 = nn.Linear(24, 4)

        def forward(self, x):
            return self.fc2(self.dropout(self.act(self.fc1(x))))

    rng = np.random.default_rng(6)
    x = torch.tensor(rng.standard_normal((40, 6)))
    y = torch.tensor(rng.integers(0, 4, 40))
    target = torch.eye(4, dtype=torch.float64)[y]
    out = {}
    for name, loss_func in (("mll", MaximumLikelihoodLoss()), ("ce", CrossEntropyBayesRisk()),
                            ("sq", SquaredErrorBayesRisk())):
        torch.manual_seed(0)
        model = Model().double()
        optimizer = m.optim.Adam(model.parameters(), lr=5e-3)
        kl_div_loss = KLDivergenceLoss()
        losses = []
        for step in range(8):
            optimizer.zero_grad()
            outputs = model(x)
            evidence = m.F.softplus(outputs)
            annealing_coef = min(1., step / 4)
            loss = loss_func(evidence, target) + annealing_coef * kl_div_loss(evidence, target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        out[name] = {"losses": losses, "stats": statistics(m.F.softplus(model(x)).detach(), target)}
    e = torch.tensor(rng.uniform(0, 3, (5, 4)), requires_grad=True)
    t5 = torch.eye(4, dtype=torch.float64)[torch.tensor([0, 1, 2, 3, 0])]
    values = [f()(e, t5) for f in (MaximumLikelihoodLoss, CrossEntropyBayesRisk, SquaredErrorBayesRisk, KLDivergenceLoss)]
    out["values"] = values
    out["grads"] = [torch.autograd.grad(v, e)[0] for v in values]
    out["e"] = e
    return out


def test_evidential_losses():
    ours, _ = run_both(evidence_program, rtol=1e-8, atol=1e-10)
    for name in ("mll", "ce", "sq"):
        assert ours[name]["losses"][-1] < ours[name]["losses"][4], name  # once the KL weight is 1
        s = ours[name]["stats"]
        assert len(s["u.succ"]) + len(s["u.fail"]) == 40
    # by hand: the Dirichlet KL to the uniform Dirichlet, and the ML loss
    from scipy.special import digamma, gammaln
    e = ours["e"]
    t = np.eye(4)[[0, 1, 2, 3, 0]]
    alpha = e + 1
    S = alpha.sum(-1)
    assert ours["values"][0] == pytest.approx(np.mean((t * (np.log(S)[:, None] - np.log(alpha))).sum(-1)), rel=1e-12)
    assert ours["values"][1] == pytest.approx(np.mean((t * (digamma(S)[:, None] - digamma(alpha))).sum(-1)), rel=1e-12)
    at = t + (1 - t) * alpha
    St = at.sum(-1)
    kl = gammaln(St) - gammaln(4.0) - gammaln(at).sum(-1) + ((at - 1) * (digamma(at) - digamma(St)[:, None])).sum(-1)
    assert ours["values"][3] == pytest.approx(kl.mean(), rel=1e-10)


# ----------------------------------------------------------------------------------------------
# labml_nn/sketch_rnn: a bidirectional-LSTM VAE with a bivariate Gaussian mixture decoder
# ----------------------------------------------------------------------------------------------


def make_sketch_rnn(m):
    torch, nn = m.torch, m.nn

    class EncoderRNN(nn.Module):
        def __init__(self, d_z, enc_hidden_size):
            super().__init__()
            self.lstm = nn.LSTM(5, enc_hidden_size, bidirectional=True)
            self.mu_head = nn.Linear(2 * enc_hidden_size, d_z)
            self.sigma_head = nn.Linear(2 * enc_hidden_size, d_z)

        def forward(self, inputs, state=None):
            _, (hidden, cell) = self.lstm(inputs.float(), state)
            hidden = hidden.permute(1, 0, 2).reshape(hidden.shape[1], -1)  # einops' 'fb b h -> b (fb h)'
            mu = self.mu_head(hidden)
            sigma_hat = self.sigma_head(hidden)
            sigma = torch.exp(sigma_hat / 2.)
            z = mu + sigma * torch.normal(mu.new_zeros(mu.shape), mu.new_ones(mu.shape))
            return z, mu, sigma_hat

    class DecoderRNN(nn.Module):
        def __init__(self, d_z, dec_hidden_size, n_distributions):
            super().__init__()
            self.lstm = nn.LSTM(d_z + 5, dec_hidden_size)
            self.init_state = nn.Linear(d_z, 2 * dec_hidden_size)
            self.mixtures = nn.Linear(dec_hidden_size, 6 * n_distributions)
            self.q_head = nn.Linear(dec_hidden_size, 3)
            self.q_log_softmax = nn.LogSoftmax(-1)
            self.n_distributions = n_distributions
            self.dec_hidden_size = dec_hidden_size

        def forward(self, x, z, state):
            if state is None:
                h, c = torch.split(torch.tanh(self.init_state(z)), self.dec_hidden_size, 1)
                state = (h.unsqueeze(0).contiguous(), c.unsqueeze(0).contiguous())
            outputs, state = self.lstm(x, state)
            q_logits = self.q_log_softmax(self.q_head(outputs))
            pi_logits, mu_x, mu_y, sigma_x, sigma_y, rho_xy = \
                torch.split(self.mixtures(outputs), self.n_distributions, 2)
            dist = BivariateGaussianMixture(pi_logits, mu_x, mu_y,
                                            torch.exp(sigma_x), torch.exp(sigma_y), torch.tanh(rho_xy))
            return dist, q_logits, state

    class BivariateGaussianMixture:
        def __init__(self, pi_logits, mu_x, mu_y, sigma_x, sigma_y, rho_xy):
            self.pi_logits = pi_logits
            self.mu_x = mu_x
            self.mu_y = mu_y
            self.sigma_x = sigma_x
            self.sigma_y = sigma_y
            self.rho_xy = rho_xy

        @property
        def n_distributions(self):
            return self.pi_logits.shape[-1]

        def set_temperature(self, temperature):
            self.pi_logits /= temperature
            self.sigma_x *= math.sqrt(temperature)
            self.sigma_y *= math.sqrt(temperature)

        def get_distribution(self):
            sigma_x = torch.clamp_min(self.sigma_x, 1e-5)
            sigma_y = torch.clamp_min(self.sigma_y, 1e-5)
            rho_xy = torch.clamp(self.rho_xy, -1 + 1e-5, 1 - 1e-5)
            mean = torch.stack([self.mu_x, self.mu_y], -1)
            cov = torch.stack([
                sigma_x * sigma_x, rho_xy * sigma_x * sigma_y,
                rho_xy * sigma_x * sigma_y, sigma_y * sigma_y
            ], -1)
            cov = cov.view(*sigma_y.shape, 2, 2)
            multi_dist = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
            cat_dist = torch.distributions.Categorical(logits=self.pi_logits)
            return cat_dist, multi_dist

    class SketchRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = EncoderRNN(6, 8)
            self.decoder = DecoderRNN(6, 10, 3)

    return SketchRNN()


def sketch_rnn_program(m, weights):
    torch, nn = m.torch, m.nn

    class ReconstructionLoss(nn.Module):
        def forward(self, mask, target, dist, q_logits):
            pi, mix = dist.get_distribution()
            xy = target[:, :, 0:2].unsqueeze(-2).expand(-1, -1, dist.n_distributions, -1)
            probs = torch.sum(pi.probs * torch.exp(mix.log_prob(xy)), 2)
            loss_stroke = -torch.mean(mask * torch.log(1e-5 + probs))
            loss_pen = -torch.mean(target[:, :, 2:] * q_logits)
            return loss_stroke + loss_pen

    class KLDivLoss(nn.Module):
        def forward(self, sigma_hat, mu):
            return -0.5 * torch.mean(1 + sigma_hat - mu ** 2 - torch.exp(sigma_hat))

    class StrokesDataset(m.data.Dataset):
        def __init__(self, dataset, max_seq_length, scale=None):
            data = []
            for seq in dataset:
                if 10 < len(seq) <= max_seq_length:
                    seq = np.minimum(seq, 1000)
                    seq = np.maximum(seq, -1000)
                    seq = np.array(seq, dtype=np.float32)
                    data.append(seq)
            if scale is None:
                scale = np.std(np.concatenate([np.ravel(s[:, 0:2]) for s in data]))
            self.scale = scale
            longest_seq_len = max([len(seq) for seq in data])
            self.data = torch.zeros(len(data), longest_seq_len + 2, 5, dtype=torch.float)
            self.mask = torch.zeros(len(data), longest_seq_len + 1)
            for i, seq in enumerate(data):
                seq = torch.from_numpy(seq)
                len_seq = len(seq)
                self.data[i, 1:len_seq + 1, :2] = seq[:, :2] / scale
                self.data[i, 1:len_seq + 1, 2] = 1 - seq[:, 2]
                self.data[i, 1:len_seq + 1, 3] = seq[:, 2]
                self.data[i, len_seq + 1:, 4] = 1
                self.mask[i, :len_seq + 1] = 1
            self.data[:, 0, 2] = 1

        def __len__(self):
            return len(self.data)

        def __getitem__(self, idx):
            return self.data[idx], self.mask[idx]

    rng = np.random.default_rng(11)
    strokes = []
    for length in (12, 15, 9, 14, 20, 13, 30):
        seq = np.zeros((length, 3), dtype=np.int64)
        seq[:, :2] = rng.integers(-40, 40, (length, 2))
        seq[rng.integers(0, length, 2), 2] = 1
        seq[-1, 2] = 1
        strokes.append(seq)
    dataset = StrokesDataset(strokes, 25)
    loader = m.data.DataLoader(dataset, 3)
    model = load(m, make_sketch_rnn(m), weights)
    encoder, decoder = model.encoder, model.decoder
    optimizer = torch.optim.Adam(list(encoder.parameters()) + list(decoder.parameters()), lr=1e-2)
    kl_div_loss, reconstruction_loss = KLDivLoss(), ReconstructionLoss()
    torch.manual_seed(0)
    losses = []
    for epoch in range(4):
        for batch in loader:
            data = batch[0].transpose(0, 1)
            mask = batch[1].transpose(0, 1)
            z, mu, sigma_hat = encoder(data)
            z_stack = z.unsqueeze(0).expand(data.shape[0] - 1, -1, -1)
            inputs = torch.cat([data[:-1], z_stack], 2)
            dist, q_logits, _ = decoder(inputs, z, None)
            kl_loss = kl_div_loss(sigma_hat, mu)
            loss = reconstruction_loss(mask, data[1:], dist, q_logits) + 0.5 * kl_loss
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(encoder.parameters(), 1.)
            nn.utils.clip_grad_norm_(decoder.parameters(), 1.)
            optimizer.step()
            losses.append(loss.item())
    # one sampling step at a temperature, as their Sampler._sample_step does
    with torch.no_grad():
        data = dataset[0][0].unsqueeze(1)
        z, _, _ = encoder(data)
        s = data.new_tensor([0, 0, 1, 0, 0])
        inp = torch.cat([s.view(1, 1, -1), z.unsqueeze(0)], 2)
        dist, q_logits, state = decoder(inp, z, None)
        dist.set_temperature(0.4)
        pi, mix = dist.get_distribution()
        idx = pi.sample()[0, 0]
        q = torch.distributions.Categorical(logits=q_logits / 0.4)
        q_idx = q.sample()[0, 0]
        xy = mix.sample()[0, 0, idx]
        stroke = q_logits.new_zeros(5)
        stroke[:2] = xy
        stroke[q_idx + 2] = 1
    return {"losses": losses, "scale": dataset.scale, "n": len(dataset), "data": dataset.data, "mask": dataset.mask,
            "stroke": stroke, "sigma_x": dist.sigma_x, "pi_logits": dist.pi_logits, "cov": mix.covariance_matrix}


def test_sketch_rnn():
    weights = weights_of(make_sketch_rnn)
    ours, _ = run_both(sketch_rnn_program, weights, rtol=1e-5, atol=1e-6)
    assert ours["n"] == 5 and ours["data"].shape == (5, 22, 5)  # lengths 9 and 30 are left out
    assert sum(ours["losses"][-2:]) < sum(ours["losses"][:2])  # the last epoch against the first
    assert ours["stroke"][2:].sum() == 1


# ----------------------------------------------------------------------------------------------
# labml_nn/adaptive_computation/ponder_net: PonderNet on the parity task (halting drawn by bernoulli)
# ----------------------------------------------------------------------------------------------


def make_ponder_net(m):
    torch, nn = m.torch, m.nn

    class ParityPonderGRU(nn.Module):
        def __init__(self, n_elems, n_hidden, max_steps):
            super().__init__()
            self.max_steps = max_steps
            self.n_hidden = n_hidden
            self.gru = nn.GRUCell(n_elems, n_hidden)
            self.output_layer = nn.Linear(n_hidden, 1)
            self.lambda_layer = nn.Linear(n_hidden, 1)
            self.lambda_prob = nn.Sigmoid()
            self.is_halt = False

        def forward(self, x):
            batch_size = x.shape[0]
            h = x.new_zeros((x.shape[0], self.n_hidden))
            h = self.gru(x, h)
            p = []
            y = []
            un_halted_prob = h.new_ones((batch_size,))
            halted = h.new_zeros((batch_size,))
            p_m = h.new_zeros((batch_size,))
            y_m = h.new_zeros((batch_size,))
            for n in range(1, self.max_steps + 1):
                if n == self.max_steps:
                    lambda_n = h.new_ones(h.shape[0])
                else:
                    lambda_n = self.lambda_prob(self.lambda_layer(h))[:, 0]
                y_n = self.output_layer(h)[:, 0]
                p_n = un_halted_prob * lambda_n
                un_halted_prob = un_halted_prob * (1 - lambda_n)
                halt = torch.bernoulli(lambda_n) * (1 - halted)
                p.append(p_n)
                y.append(y_n)
                p_m = p_m * (1 - halt) + p_n * halt
                y_m = y_m * (1 - halt) + y_n * halt
                halted = halted + halt
                h = self.gru(x, h)
                if self.is_halt and halted.sum() == batch_size:
                    break
            return torch.stack(p), torch.stack(y), p_m, y_m

    return ParityPonderGRU(8, 16, 6)


def ponder_program(m, weights):
    torch, nn = m.torch, m.nn

    class ReconstructionLoss(nn.Module):
        def __init__(self, loss_func):
            super().__init__()
            self.loss_func = loss_func

        def forward(self, p, y_hat, y):
            total_loss = p.new_tensor(0.)
            for n in range(p.shape[0]):
                loss = (p[n] * self.loss_func(y_hat[n], y)).mean()
                total_loss = total_loss + loss
            return total_loss

    class RegularizationLoss(nn.Module):
        def __init__(self, lambda_p, max_steps=1_000):
            super().__init__()
            p_g = torch.zeros((max_steps,))
            not_halted = 1.
            for k in range(max_steps):
                p_g[k] = not_halted * lambda_p
                not_halted = not_halted * (1 - lambda_p)
            self.p_g = nn.Parameter(p_g, requires_grad=False)
            self.kl_div = nn.KLDivLoss(reduction='batchmean')

        def forward(self, p):
            p = p.transpose(0, 1)
            p_g = self.p_g[None, :p.shape[1]].expand_as(p)
            return self.kl_div(p.log(), p_g)

    class ParityDataset(m.data.Dataset):
        def __init__(self, n_samples, n_elems=64):
            self.n_samples = n_samples
            self.n_elems = n_elems

        def __len__(self):
            return self.n_samples

        def __getitem__(self, idx):
            x = torch.zeros((self.n_elems,))
            n_non_zero = torch.randint(1, self.n_elems + 1, (1,)).item()
            x[:n_non_zero] = torch.randint(0, 2, (n_non_zero,)) * 2 - 1
            x = x[torch.randperm(self.n_elems)]
            y = (x == 1.).sum() % 2
            return x, y

    torch.manual_seed(0)
    model = load(m, make_ponder_net(m), weights)
    loader = m.data.DataLoader(ParityDataset(48, 8), batch_size=16)
    loss_rec = ReconstructionLoss(nn.BCEWithLogitsLoss(reduction='none'))
    loss_reg = RegularizationLoss(0.2, 6)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    out = {"losses": [], "steps": [], "batches": []}
    for x, y in loader:
        p, y_hat, p_sampled, y_hat_sampled = model(x)
        loss = loss_rec(p, y_hat, y.to(torch.float)) + 0.01 * loss_reg(p)
        steps = torch.arange(1, p.shape[0] + 1, device=p.device)
        expected_steps = (p * steps[:, None]).sum(dim=0)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        out["losses"].append(loss.item())
        out["steps"].append(expected_steps.mean().item())
        out["batches"].append((x, y, p_sampled, y_hat_sampled))
    out["p_g"] = loss_reg.p_g
    return out


def test_ponder_net():
    weights = weights_of(make_ponder_net)
    ours, _ = run_both(ponder_program, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["p_g"], 0.2 * 0.8 ** np.arange(6), rtol=1e-6)
    for x, y, p_sampled, _ in ours["batches"]:
        np.testing.assert_array_equal(y, (x == 1).sum(1) % 2)
        assert np.all(p_sampled > 0)  # every sample halted somewhere, at the latest at max_steps
    assert all(1 <= s <= 6 for s in ours["steps"])
