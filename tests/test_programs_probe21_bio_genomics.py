# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Computational-biology programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights and data, and checked against NumPy by hand where PyTorch is missing. Basset/DeepSEA on one-hot DNA
(``F.one_hot(...).permute(0, 2, 1).float()``, ``one_hot`` with the number of classes inferred, Conv1d + BatchNorm1d +
``MaxPool1d(ceil_mode=True)`` + ``LazyLinear``, reverse-complement averaging by ``torch.flip`` of both axes,
gradient-times-input saliency); BPNet (a dilated residual Conv1d tower with ``padding="same"`` under every
``padding_mode``, a ConvTranspose1d profile head trained with the multinomial NLL of ``log_softmax`` and ``lgamma``
terms, a counts head with ``F.poisson_nll_loss(log_input=True, full=True)``, and Enformer's attention pooling by
``unflatten`` and a masked softmax), checked against NumPy by hand; DanQ (Conv1d, a packed bidirectional LSTM,
BatchNorm1d of the transposed LSTM output flattened by ``view`` and rectified in place through it), which depends on
batch norm's result laid out as PyTorch's, so that a view shares memory.

``gradgradcheck`` of inputs none of which requires grad raises gradcheck's ValueError, as PyTorch's (it raised
autograd.grad's RuntimeError: mended with the probe's proposed diff)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

BASES = "ACGT"


def dna_data(n=16, length=40, seed=0):
    """Integer-coded DNA (A=0, C=1, G=2, T=3) with a planted motif whose presence is the label."""
    rng = np.random.default_rng(seed)
    seqs = rng.integers(0, 4, (n, length))
    motif = np.array([2, 0, 3, 0, 1, 2])  # GATACG
    labels = rng.integers(0, 2, (n, 2)).astype(np.float32)
    for i in range(n):
        if labels[i, 0]:
            start = rng.integers(0, length - len(motif))
            seqs[i, start:start + len(motif)] = motif
    return seqs, labels


# ----------------------------------------------------------------------------------------------
# DeepSEA / Basset: one-hot DNA, Conv1d + BatchNorm1d + MaxPool1d, reverse-complement averaging
# ----------------------------------------------------------------------------------------------


def basset_net(m, n_targets=2):
    torch, nn = m.torch, m.nn

    class Basset(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv1d(4, 12, kernel_size=7, padding=3)
            self.bn1 = nn.BatchNorm1d(12)
            self.pool1 = nn.MaxPool1d(3, ceil_mode=True)
            self.conv2 = nn.Conv1d(12, 16, kernel_size=5)
            self.bn2 = nn.BatchNorm1d(16)
            self.pool2 = nn.MaxPool1d(kernel_size=2, stride=2)
            self.fc = nn.Sequential(nn.Flatten(), nn.LazyLinear(20), nn.ReLU(), nn.Dropout(0.0),
                                    nn.Linear(20, n_targets))

        def forward(self, x):
            x = self.pool1(torch.relu(self.bn1(self.conv1(x))))
            x = self.pool2(torch.relu(self.bn2(self.conv2(x))))
            return self.fc(x)

    model = Basset()
    model(torch.zeros(1, 4, 40))  # materialise the lazy layer
    return model


def basset(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    seqs, labels = dna_data()
    x_int = torch.from_numpy(seqs)
    x = F.one_hot(x_int, num_classes=4).permute(0, 2, 1).float()
    inferred = F.one_hot(x_int)  # num_classes=-1: inferred from the largest code
    y = torch.from_numpy(labels)
    model = load(m, basset_net(m), weights)
    optimizer = optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-6)
    criterion = nn.BCEWithLogitsLoss()
    losses = []
    for step in range(steps):
        model.train()
        optimizer.zero_grad()
        rc = torch.flip(x, dims=[1, 2])  # complement (ACGT reversed) and reverse
        logits = 0.5 * (model(x) + model(rc))
        loss = criterion(logits, y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        fwd = torch.sigmoid(model(x))
        rev = torch.sigmoid(model(x.flip(1).flip(2)))
    # saliency: gradient times input on the one-hot
    xg = x.clone().requires_grad_(True)
    model(xg)[:, 0].sum().backward()
    saliency = (xg.grad * xg).sum(1)
    return (losses, fwd, rev, inferred.shape, inferred.dtype == torch.int64, saliency,
            model.bn1.running_mean, model.bn2.running_var, model.bn1.num_batches_tracked)


def test_basset_reverse_complement():
    weights = weights_of(basset_net)
    ours, _ = run_both(basset, weights, rtol=1e-4, atol=1e-5)
    losses = ours[0]
    assert losses[-1] < losses[0]
    assert tuple(ours[3]) == (16, 40, 4) and ours[4]


# ----------------------------------------------------------------------------------------------
# BPNet: a dilated residual Conv1d tower ("same" padding), profile head with the multinomial NLL
# (log_softmax over positions, lgamma terms), counts head with the Poisson loss; Enformer's attention pooling
# ----------------------------------------------------------------------------------------------


def bpnet_net(m, channels=8, layers=4, strands=2, padding_mode="zeros"):
    torch, nn, F = m.torch, m.nn, m.F

    class AttentionPool(nn.Module):
        """Enformer: softmax-weighted pooling over non-overlapping windows of the length axis."""

        def __init__(self, dim, pool_size=2):
            super().__init__()
            self.pool_size = pool_size
            self.to_attn_logits = nn.Conv2d(dim, dim, 1, bias=False)
            nn.init.dirac_(self.to_attn_logits.weight)
            with torch.no_grad():
                self.to_attn_logits.weight.mul_(2)

        def forward(self, x):
            b, d, n = x.shape
            remainder = n % self.pool_size
            if remainder > 0:
                x = F.pad(x, (0, self.pool_size - remainder), value=0)
                mask = torch.zeros((b, 1, n), dtype=torch.bool, device=x.device)
                mask = F.pad(mask, (0, self.pool_size - remainder), value=True)
            x = x.unflatten(-1, (-1, self.pool_size))  # b d (n p)
            logits = self.to_attn_logits(x)
            if remainder > 0:
                mask_value = -torch.finfo(logits.dtype).max
                logits = logits.masked_fill(mask.unflatten(-1, (-1, self.pool_size)), mask_value)
            attn = logits.softmax(dim=-1)
            return (x * attn).sum(dim=-1)

    class BPNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.iconv = nn.Conv1d(4, channels, kernel_size=9, padding="same")
            self.rconvs = nn.ModuleList([
                nn.Conv1d(channels, channels, kernel_size=3, padding="same", dilation=2 ** i, padding_mode=padding_mode)
                for i in range(1, layers + 1)])
            self.fconv = nn.ConvTranspose1d(channels, strands, kernel_size=7, padding=3)
            self.linear = nn.Linear(channels, strands)
            self.pool = AttentionPool(channels, pool_size=3)

        def forward(self, X):
            X = torch.relu(self.iconv(X))
            for rconv in self.rconvs:
                X = X + torch.relu(rconv(X))
            y_profile = self.fconv(X)
            pooled = self.pool(X)
            y_counts = self.linear(pooled.mean(dim=-1))
            return y_profile, y_counts

    return BPNet()


def multinomial_nll(m, logits, true_counts):
    """BPNet's profile loss: the negative log-likelihood of counts under a multinomial over positions."""
    torch = m.torch
    log_probs = torch.log_softmax(logits, dim=-1)
    total = true_counts.sum(dim=-1)
    log_fact_sum = torch.lgamma(total + 1)
    log_prod_fact = torch.sum(torch.lgamma(true_counts + 1), dim=-1)
    log_prod_exp = torch.sum(true_counts * log_probs, dim=-1)
    return -(log_fact_sum - log_prod_fact + log_prod_exp)


def bpnet(m, weights, padding_mode="zeros", steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    seqs, _ = dna_data(n=6, length=32, seed=1)
    rng = np.random.default_rng(2)
    counts = torch.tensor(rng.poisson(3.0, (6, 2, 32)).astype(np.float32))
    X = F.one_hot(torch.from_numpy(seqs), 4).transpose(1, 2).to(torch.float32)
    model = load(m, bpnet_net(m, padding_mode=padding_mode), weights)
    opt = optim.Adam(model.parameters(), lr=4e-3)
    history = []
    for step in range(steps):
        opt.zero_grad()
        y_profile, y_counts = model(X)
        profile_loss = multinomial_nll(m, y_profile, counts).mean()
        total = counts.sum(dim=-1)
        count_loss = F.poisson_nll_loss(y_counts, total, log_input=True, full=True)
        count_mse = F.mse_loss(y_counts, torch.log1p(total))
        loss = profile_loss + 10 * count_loss + count_mse
        loss.backward()
        opt.step()
        history.append((profile_loss.item(), count_loss.item()))
    # the profile head's bias gets a gradient of exactly zero in exact arithmetic (log_softmax over positions does
    # not see a shift), so Adam amplifies rounding noise there: compare the profile as the probabilities it stands for
    return history, torch.log_softmax(y_profile, -1), y_counts, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
def test_bpnet_dilated_same_padding(padding_mode):
    weights = weights_of(lambda m: bpnet_net(m, padding_mode=padding_mode))
    ours, _ = run_both(bpnet, weights, padding_mode=padding_mode, rtol=1e-4, atol=1e-4)
    history = ours[0]
    assert sum(history[-1]) < sum(history[0])
    assert ours[1].shape == (6, 2, 32) and ours[2].shape == (6, 2)


def test_multinomial_nll_against_numpy():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((3, 10))
    counts = rng.poisson(50.0, (3, 10)).astype(np.float64)
    got = multinomial_nll(OURS, OURS.torch.tensor(logits), OURS.torch.tensor(counts)).numpy()
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -np.array([math.lgamma(c.sum() + 1) - sum(math.lgamma(k + 1) for k in c) + (c * lp).sum()
                      for c, lp in zip(counts, log_p)])
    np.testing.assert_allclose(got, want, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# DanQ: Conv1d + MaxPool1d, a bidirectional LSTM over variable-length (packed) sequences, BatchNorm1d of the
# LSTM's output transposed to (N, C, L), flattened by view and rectified in place (the pooled summary read from
# the normalised map after that write sees it, as in PyTorch, where the view shares the map's memory)
# ----------------------------------------------------------------------------------------------


def danq_net(m, hidden=6, length=24):
    torch, nn, F = m.torch, m.nn, m.F

    class DanQ(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(4, 8, kernel_size=5, padding=2)
            self.pool = nn.MaxPool1d(kernel_size=2, stride=2)
            self.drop = nn.Dropout(0.0)
            self.lstm = nn.LSTM(8, hidden, batch_first=True, bidirectional=True)
            self.bn = nn.BatchNorm1d(2 * hidden)
            self.relu = nn.ReLU(inplace=True)
            self.fc = nn.Linear(2 * hidden * length // 2, 2)
            self.aux = nn.Linear(2 * hidden, 2)

        def forward(self, x, lengths):
            x = self.drop(self.pool(F.relu(self.conv(x))))
            x = x.transpose(1, 2)  # (N, L, C) for the LSTM
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths // 2, batch_first=True, enforce_sorted=False)
            out, _ = self.lstm(packed)
            out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
            h = self.bn(out.transpose(1, 2))  # (N, 2H, L)
            flat = h.view(h.size(0), -1)
            flat = self.relu(flat)  # in place: h is rectified too
            return self.fc(flat) + self.aux(h.mean(-1)), h

    return DanQ()


def danq(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    seqs, labels = dna_data(n=6, length=24, seed=3)
    lengths = torch.tensor([24, 20, 16, 24, 12, 22])
    x = F.one_hot(torch.from_numpy(seqs), 4).float().transpose(1, 2)
    x = x * (torch.arange(24)[None, None, :] < lengths[:, None, None])  # padding positions zeroed
    y = torch.from_numpy(labels)
    model = load(m, danq_net(m), weights)
    opt = optim.RMSprop(model.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        logits, h = model(x, lengths)
        loss = F.binary_cross_entropy_with_logits(logits, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, logits, h.detach().clamp(max=0).abs().sum(), [p.grad for p in model.parameters()]


def test_danq_packed_lstm_batchnorm_view():
    weights = weights_of(danq_net)
    ours, _ = run_both(danq, weights, rtol=1e-4, atol=1e-5)
    losses, logits, negative_mass = ours[:3]
    assert losses[-1] < losses[0]
    assert negative_mass == 0  # the in-place ReLU through the view rectified the normalised map itself


def test_gradgradcheck_refuses_inputs_that_do_not_require_grad_as_gradcheck():
    x = OURS.torch.randn(3, dtype=OURS.torch.float64)
    with pytest.raises(ValueError, match="gradcheck expects at least one input tensor to require gradient"):
        OURS.torch.autograd.gradgradcheck(lambda x: x * 2, (x,))
