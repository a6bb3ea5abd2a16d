# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Continual, federated and private learning programs, run as tests/probe21_continual_common.py says. Federated
learning's communication, secrecy and robustness: top-k with error feedback, QSGD and signSGD compression; secure
aggregation with pairwise masks in the field of 2^31 - 1; Byzantine-robust rules (median, trimmed mean, Krum,
Weiszfeld, FLTrust, centered clipping)."""

import numpy as np
import pytest

from .probe21_continual_common import MLP3_WEIGHTS, client_data, mlp
from .pytorch_programs import OURS, load, run_both

# ----------------------------------------------------------------------------------------------
# Secure aggregation: pairwise masks from seeds shared by each pair of clients, in the field of the
# Mersenne prime 2^31 - 1; the masks cancel in the server's sum
# ----------------------------------------------------------------------------------------------

PRIME = 2**31 - 1


def secure_aggregation(m):
    torch = m.torch
    updates = [torch.from_numpy(np.random.default_rng(c).standard_normal(10).astype(np.float32)) for c in range(3)]
    scale = 2**16

    def quantize(update):
        return torch.round(update * scale).long() % PRIME

    def pairwise_mask(i, j, shape):
        g = torch.Generator().manual_seed(1000 * min(i, j) + max(i, j))
        mask = torch.randint(0, PRIME, shape, generator=g)
        return mask if i < j else (PRIME - mask) % PRIME

    masked = []
    for i, u in enumerate(updates):
        y = quantize(u)
        for j in range(len(updates)):
            if j != i:
                y = (y + pairwise_mask(i, j, u.shape)) % PRIME
        masked.append(y)
    total = torch.stack(masked).sum(0) % PRIME
    signed = torch.where(total > PRIME // 2, total - PRIME, total)
    return {"masked": masked, "sum": signed.double() / scale, "mask_01": pairwise_mask(0, 1, (4,))}


# PyTorch 2.13's torch.randint(0, 2**31 - 1, (4,), generator=torch.Generator().manual_seed(1)): its CPU kernel
# (uniform_int_from_to_distribution) draws a 64-bit word for each number once the range is 2^28 or more
TORCH_MASK_01 = [1422616888, 1602909028, 551272839, 445412382]


def test_secure_aggregation_masks_cancel():
    ours = secure_aggregation(OURS)
    updates = [np.random.default_rng(c).standard_normal(10).astype(np.float32) for c in range(3)]
    expected = sum(np.round(u.astype(np.float64) * 2**16) for u in updates) / 2**16
    np.testing.assert_allclose(ours["sum"], expected, atol=1e-12)
    assert all(int(v.min()) >= 0 and int(v.max()) < PRIME for v in ours["masked"])


def test_secure_aggregation_masks_are_pytorchs():
    assert secure_aggregation(OURS)["mask_01"].tolist() == TORCH_MASK_01
    run_both(secure_aggregation, rtol=0, atol=0)


@pytest.mark.parametrize("library", ["autograd", pytest.param("torch", marks=pytest.mark.torch)])
def test_randint_takes_a_64_bit_word_from_a_range_of_2_to_the_28(library):
    T = pytest.importorskip(library)

    def seeded():
        return T.Generator().manual_seed(7)

    assert T.randint(0, 2**28 - 1, (3,), generator=seeded()).tolist() == [59306160, 171107527, 128500261]
    assert T.empty(3, dtype=T.int64).random_(0, 2**28, generator=seeded()).tolist() == [171107524, 27798006,
                                                                                           174903507]
    assert T.randint(-2**30, 2**30, (3,), generator=seeded(), dtype=T.int32).tolist() == [-97327932, 296233462,
                                                                                          980209875]


def test_unbounded_random_takes_its_word_by_dtype(T):
    """random_() with no bound: a 64-bit word for int64 and float64, a 32-bit one for int32 (whose range,
    2^31, is past the 2^28 from which a bounded draw takes 64 bits)."""
    def seeded():
        return T.Generator().manual_seed(7)

    assert T.empty(4, dtype=T.int32).random_(generator=seeded()).tolist() == [327741615, 976413892, 1202242073,
                                                                              1369975286]
    assert T.empty(2, dtype=T.float64).random_(generator=seeded()).tolist() == [2516435200042024.0,
                                                                                2465213813629881.0]


# ----------------------------------------------------------------------------------------------
# Communication-efficient FL: top-k sparsification with error feedback, QSGD's stochastic quantization from a
# seeded Generator, signSGD with a majority vote
# ----------------------------------------------------------------------------------------------


def compressed_fl(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, Y = client_data()
    Y = Y + (X[:, 3] > 1)  # three classes: a two-class head's gradient rows tie in magnitude for topk
    model = load(m, mlp(m, classes=3), MLP3_WEIGHTS)  # (no BatchNorm: the bias before one has a zero gradient,
    params = list(model.parameters())  # whose signs would be rounding's)
    shapes = [p.shape for p in params]
    residuals = [torch.zeros(sum(p.numel() for p in params)) for _ in range(3)]
    g = torch.Generator().manual_seed(17)
    history, sent = [], []

    def flat_grad():
        return torch.cat([p.grad.view(-1) for p in params])

    def topk_compress(v, ratio=0.1):
        k = max(1, int(v.numel() * ratio))
        _, idx = v.abs().topk(k)
        sparse = torch.zeros_like(v)
        sparse.scatter_(0, idx, v.gather(0, idx))
        return sparse, idx

    def qsgd(v, s=4):
        norm = v.norm()
        level = v.abs() / norm * s
        lower = level.floor()
        prob = level - lower
        q = lower + (torch.rand(v.shape, generator=g) < prob).float()
        return norm * torch.sign(v) * q / s

    for rnd, scheme in enumerate(["topk", "topk", "qsgd", "qsgd", "sign", "sign"]):
        updates = []
        for c in range(3):
            model.zero_grad()
            x, y = torch.from_numpy(X[c * 30:(c + 1) * 30]), torch.from_numpy(Y[c * 30:(c + 1) * 30])
            F.cross_entropy(model(x), y).backward()
            grad = flat_grad()
            if scheme == "topk":
                corrected = grad + residuals[c]
                sparse, idx = topk_compress(corrected)
                residuals[c] = corrected - sparse
                updates.append(sparse)
                sent.append(idx.sort().values)
            elif scheme == "qsgd":
                updates.append(qsgd(grad))
            else:
                updates.append(torch.sign(grad))
        if scheme == "sign":
            agg = torch.sign(torch.stack(updates).sum(0)) * 0.01
        else:
            agg = torch.stack(updates).mean(0)
        offset = 0
        with torch.no_grad():
            for p, shape in zip(params, shapes):
                n = p.numel()
                p.sub_(0.5 * agg[offset:offset + n].view(shape))
                offset += n
        history.append(agg)
    return {"history": history, "sent": sent, "residuals": residuals,
            "vector": nn.utils.parameters_to_vector(model.parameters())}


def test_compressed_federated_updates():
    ours, _ = run_both(compressed_fl, rtol=1e-4, atol=1e-6)
    assert all(len(s) == 43 for s in ours["sent"])  # 10% of 435 parameters
    assert set(np.unique(ours["history"][4]).tolist()) <= {np.float32(v).item() for v in (-0.01, 0.0, 0.01)}


# ----------------------------------------------------------------------------------------------
# Byzantine-robust aggregation: coordinate-wise median (the lower middle of an even count), trimmed mean,
# Krum / Multi-Krum by cdist, the geometric median by Weiszfeld, FLTrust's cosine trust scores, centered clipping
# ----------------------------------------------------------------------------------------------


def robust_aggregation(m, rule):
    torch, nn, F = m.torch, m.nn, m.F
    X, Y = client_data()
    model = load(m, mlp(m, classes=3), MLP3_WEIGHTS)
    Y = Y + (X[:, 3] > 1)
    n_clients, n_byzantine = 6, 2
    history = []
    for rnd in range(3):
        updates = []
        for c in range(n_clients):
            model.zero_grad()
            x = torch.from_numpy(X[c * 15:(c + 1) * 15])
            y = torch.from_numpy(Y[c * 15:(c + 1) * 15])
            F.cross_entropy(model(x), y).backward()
            g = torch.cat([p.grad.view(-1) for p in model.parameters()])
            if c == 0:  # a sign-flipping attacker
                g = -4 * g
            elif c == 1:  # a large constant
                g = torch.full_like(g, 3.0)
            updates.append(g)
        S = torch.stack(updates)
        if rule == "median":
            agg = torch.median(S, dim=0).values
        elif rule == "trimmed_mean":
            agg = torch.sort(S, dim=0).values[n_byzantine:-n_byzantine].mean(0)
        elif rule in ("krum", "multi_krum"):
            d = torch.cdist(S, S) ** 2
            scores = torch.stack([d[i][torch.arange(n_clients) != i].topk(n_clients - n_byzantine - 2,
                                                                           largest=False).values.sum()
                                  for i in range(n_clients)])
            chosen = scores.topk(1 if rule == "krum" else 3, largest=False).indices
            agg = S[chosen].mean(0)
            history.append(chosen.sort().values)
        elif rule == "geomed":
            z = S.mean(0)
            for _ in range(30):
                w = 1 / torch.clamp(torch.norm(S - z, dim=1), min=1e-6)
                z = (w[:, None] * S).sum(0) / w.sum()
            agg = z
        elif rule == "fltrust":
            model.zero_grad()
            F.cross_entropy(model(torch.from_numpy(X[-10:])), torch.from_numpy(Y[-10:])).backward()
            g0 = torch.cat([p.grad.view(-1) for p in model.parameters()])
            trust = F.relu(F.cosine_similarity(S, g0.unsqueeze(0), dim=1))
            normed = S / S.norm(dim=1, keepdim=True) * g0.norm()
            agg = (trust[:, None] * normed).sum(0) / trust.sum()
            history.append(trust)
        else:  # centered clipping around the previous aggregate
            v = torch.zeros_like(S[0]) if rnd == 0 else agg
            for _ in range(3):
                diff = S - v
                scale = torch.clamp(1.0 / diff.norm(dim=1, keepdim=True), max=1.0)
                v = v + (diff * scale).mean(0)
            agg = v
        with torch.no_grad():
            nn.utils.vector_to_parameters(nn.utils.parameters_to_vector(model.parameters()) - 0.5 * agg,
                                          model.parameters())
        history.append(agg)
    with torch.no_grad():
        loss = F.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(Y))
    return {"history": history, "loss": loss}


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum", "multi_krum", "geomed", "fltrust", "cclip"])
def test_robust_aggregation(rule):
    ours, _ = run_both(robust_aggregation, rule=rule, rtol=1e-4, atol=1e-5)
    if rule in ("krum", "multi_krum"):  # the attackers are never chosen
        assert all(0 not in c and 1 not in c for c in ours["history"][0::2])
    if rule == "fltrust":
        assert ours["history"][0][0] == 0  # the sign-flipped update has no trust
