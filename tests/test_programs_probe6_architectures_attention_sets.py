# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Architectures from papers' reference code (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights, comparing outputs, losses, gradients and parameters. The Set Transformer (juho-lee: MAB by
``split`` and ``cat`` of heads, ISAB, PMA) and a padded-set variant on
``nn.MultiheadAttention(key_padding_mask=...)`` with Deep Sets' masked pooling; fully masked rows (left-padded
sequences under a causal mask leave pad queries with no key at all: NaN, then zero, and no warning); a training step
with anomaly detection on, where a causal mask of -inf is not an anomaly."""

import math
import warnings

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of  # noqa: F401  (OURS: the subprocess below imports it from here)

# ----------------------------------------------------------------------------------------------
# Sets: the Set Transformer, and padded sets through nn.MultiheadAttention with Deep Sets' pooling
# ----------------------------------------------------------------------------------------------


def set_models(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MAB(nn.Module):
        def __init__(self, dim_Q, dim_K, dim_V, num_heads, ln=False):
            super(MAB, self).__init__()
            self.dim_V = dim_V
            self.num_heads = num_heads
            self.fc_q = nn.Linear(dim_Q, dim_V)
            self.fc_k = nn.Linear(dim_K, dim_V)
            self.fc_v = nn.Linear(dim_K, dim_V)
            if ln:
                self.ln0 = nn.LayerNorm(dim_V)
                self.ln1 = nn.LayerNorm(dim_V)
            self.fc_o = nn.Linear(dim_V, dim_V)

        def forward(self, Q, K):
            Q = self.fc_q(Q)
            K, V = self.fc_k(K), self.fc_v(K)
            dim_split = self.dim_V // self.num_heads
            Q_ = torch.cat(Q.split(dim_split, 2), 0)
            K_ = torch.cat(K.split(dim_split, 2), 0)
            V_ = torch.cat(V.split(dim_split, 2), 0)
            A = torch.softmax(Q_.bmm(K_.transpose(1, 2)) / math.sqrt(self.dim_V), 2)
            O = torch.cat((Q_ + A.bmm(V_)).split(Q.size(0), 0), 2)
            O = O if getattr(self, 'ln0', None) is None else self.ln0(O)
            O = O + F.relu(self.fc_o(O))
            O = O if getattr(self, 'ln1', None) is None else self.ln1(O)
            return O

    class SAB(nn.Module):
        def __init__(self, dim_in, dim_out, num_heads, ln=False):
            super(SAB, self).__init__()
            self.mab = MAB(dim_in, dim_in, dim_out, num_heads, ln=ln)

        def forward(self, X):
            return self.mab(X, X)

    class ISAB(nn.Module):
        def __init__(self, dim_in, dim_out, num_heads, num_inds, ln=False):
            super(ISAB, self).__init__()
            self.I = nn.Parameter(torch.Tensor(1, num_inds, dim_out))
            nn.init.xavier_uniform_(self.I)
            self.mab0 = MAB(dim_out, dim_in, dim_out, num_heads, ln=ln)
            self.mab1 = MAB(dim_in, dim_out, dim_out, num_heads, ln=ln)

        def forward(self, X):
            H = self.mab0(self.I.repeat(X.size(0), 1, 1), X)
            return self.mab1(X, H)

    class PMA(nn.Module):
        def __init__(self, dim, num_heads, num_seeds, ln=False):
            super(PMA, self).__init__()
            self.S = nn.Parameter(torch.Tensor(1, num_seeds, dim))
            nn.init.xavier_uniform_(self.S)
            self.mab = MAB(dim, dim, dim, num_heads, ln=ln)

        def forward(self, X):
            return self.mab(self.S.repeat(X.size(0), 1, 1), X)

    class SetTransformer(nn.Module):
        def __init__(self, dim_input, num_outputs, dim_output, num_inds=4, dim_hidden=8, num_heads=2, ln=True):
            super(SetTransformer, self).__init__()
            self.enc = nn.Sequential(ISAB(dim_input, dim_hidden, num_heads, num_inds, ln=ln),
                                     SAB(dim_hidden, dim_hidden, num_heads, ln=ln))
            self.dec = nn.Sequential(PMA(dim_hidden, num_heads, num_outputs, ln=ln),
                                     nn.Linear(dim_hidden, dim_output))

        def forward(self, X):
            return self.dec(self.enc(X))

    class PaddedSetPool(nn.Module):
        """Padded sets: self-attention that ignores the padding, then a seed vector attending to the
        set (PMA) and Deep Sets' masked sum of phi(x), side by side."""

        def __init__(self, dim_input=2, dim=8):
            super().__init__()
            self.embed = nn.Linear(dim_input, dim)
            self.sab = nn.MultiheadAttention(dim, num_heads=2, batch_first=True)
            self.seed = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
            self.pma = nn.MultiheadAttention(dim, num_heads=2, batch_first=True)
            self.phi = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
            self.rho = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))

        def forward(self, x, key_padding_mask):
            h = self.embed(x)
            h = h + self.sab(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
            pooled, weights = self.pma(self.seed.expand(x.size(0), -1, -1), h, h, key_padding_mask=key_padding_mask)
            keep = (~key_padding_mask).unsqueeze(-1).float()
            deep_sets = (self.phi(h) * keep).sum(1) / keep.sum(1)
            return self.rho(torch.cat([pooled.squeeze(1), deep_sets], -1)).squeeze(-1), weights

    return nn.ModuleDict({"set_transformer": SetTransformer(2, 1, 1), "padded": PaddedSetPool()})


def set_programs(m, weights, steps=3):
    torch, nn, F = m.torch, m.nn, m.F
    models = load(m, set_models(m), weights)
    st, padded = models["set_transformer"], models["padded"]
    rng = np.random.default_rng(9)
    # the max of a set of numbers, by the Set Transformer; sets of 6 two-d points
    X = torch.tensor(rng.standard_normal((4, 6, 2)).astype(np.float32))
    y = X[..., 0].max(1).values.unsqueeze(-1)
    lengths = [6, 3, 5, 2]
    key_padding_mask = torch.arange(6)[None, :] >= torch.tensor(lengths)[:, None]
    X_padded = X.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
    optimizer = m.optim.Adam(models.parameters(), lr=5e-3)
    log = []
    for step in range(steps):
        out = st(X).squeeze(-1)
        pred, attn_weights = padded(X_padded, key_padding_mask)
        loss = F.l1_loss(out, y) + F.mse_loss(pred, y.squeeze(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append(loss.item())
    models.eval()
    with torch.no_grad():
        perm = torch.tensor([3, 0, 5, 1, 4, 2])
        invariant = (st(X), st(X[:, perm]))
        junk = X_padded.clone()
        junk[key_padding_mask] = 9.0  # whatever sits in the padding is ignored
        padding = (padded(X_padded, key_padding_mask)[0], padded(junk, key_padding_mask)[0])
    return {"log": log, "grads": [p.grad for p in models.parameters()], "attn": attn_weights,
            "invariant": invariant, "padding": padding}


def test_set_transformer_and_padded_sets():
    weights = weights_of(set_models)
    ours, _ = run_both(set_programs, weights, rtol=1e-4, atol=1e-5)
    assert ours["log"][-1] < ours["log"][0]
    np.testing.assert_allclose(*ours["invariant"], rtol=1e-5, atol=1e-6)  # permutation invariant
    np.testing.assert_allclose(*ours["padding"], rtol=1e-5, atol=1e-6)
    attn = ours["attn"]
    assert attn.shape == (4, 1, 6) and (attn[1, 0, 3:] == 0).all() and (attn[3, 0, 2:] == 0).all()


# ----------------------------------------------------------------------------------------------
# Fully masked rows: left-padded sequences under a causal mask leave pad queries with no key at all
# ----------------------------------------------------------------------------------------------


def fully_masked_rows(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(14)
    q = torch.tensor(rng.standard_normal((2, 4, 6)), requires_grad=True)
    k = torch.tensor(rng.standard_normal((2, 4, 6)))
    pad = torch.tensor([[True, True, False, False], [False, False, False, False]])  # left padding
    causal = torch.ones(4, 4, dtype=torch.bool).triu(1)
    mask = causal[None] | pad[:, None, :]
    scores = (q @ k.transpose(-2, -1)).masked_fill(mask, float("-inf"))
    attn = scores.softmax(-1)  # the pad queries' rows: all -inf, so NaN
    normaliser = torch.logsumexp(scores, dim=-1)  # -inf there
    log_attn = scores.log_softmax(-1)  # NaN there
    attn = torch.nan_to_num(attn)
    (attn * torch.tensor(rng.standard_normal((2, 4, 4)))).sum().backward()
    return attn, normaliser, q.grad, torch.isnan(log_attn)


def test_fully_masked_rows_give_nan_then_zero():
    ours, _ = run_both(fully_masked_rows, rtol=1e-10, atol=1e-12)
    attn, normaliser, q_grad, log_nan = ours
    assert (attn[0, :2] == 0).all() and np.isneginf(normaliser[0, 0]) and np.isfinite(q_grad).all()
    assert log_nan[0, :2].all() and not log_nan[0, 2:].any() and not log_nan[1].any()


def test_fully_masked_rows_warn_nothing():
    # in a fresh interpreter with Python's default warning filters (pytest installs its own): NumPy's
    # RuntimeWarnings from inside chainrule are filtered, as PyTorch computes these NaN silently
    import subprocess
    import sys

    program = ("from tests.test_programs_probe6_architectures_attention_sets import OURS, fully_masked_rows\n"
               "fully_masked_rows(OURS)\n")
    done = subprocess.run([sys.executable, "-W", "default", "-c", program], capture_output=True, text=True,
                          check=True, cwd=__file__.rsplit("/tests/", 1)[0])
    assert "Warning" not in done.stderr, done.stderr


# ----------------------------------------------------------------------------------------------
# Debugging with anomaly detection on: a causal mask of -inf is not an anomaly
# ----------------------------------------------------------------------------------------------


def causal_attention_net(m):
    nn = m.nn
    return nn.ModuleDict({"qkv": nn.Linear(6, 18), "out": nn.Linear(6, 6)})


def anomaly_detection_on(m, weights, steps=2):
    torch, F = m.torch, m.F
    net = load(m, causal_attention_net(m), weights)
    optimizer = m.optim.SGD(net.parameters(), lr=0.1)
    rng = np.random.default_rng(15)
    x = torch.tensor(rng.standard_normal((2, 5, 6)).astype(np.float32))
    target = torch.tensor(rng.standard_normal((2, 5, 6)).astype(np.float32))
    mask = torch.triu(torch.ones(5, 5), diagonal=1).bool()
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's "Anomaly Detection has been enabled" warning
        with torch.autograd.detect_anomaly():
            for step in range(steps):
                q, k, v = net["qkv"](x).chunk(3, dim=-1)
                scores = (q @ k.transpose(-2, -1)) / 6 ** 0.5
                scores = scores.masked_fill(mask, float("-inf"))  # -inf in a forward output: no anomaly
                y = net["out"](scores.softmax(-1) @ v)
                loss = F.mse_loss(y, target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
    return losses, [p.detach() for p in net.parameters()]


def test_a_training_step_with_anomaly_detection_on_and_a_causal_mask():
    weights = weights_of(causal_attention_net)
    (losses, params), _ = run_both(anomaly_detection_on, weights, rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0]
