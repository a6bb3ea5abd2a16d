# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Computational-biology programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the
same weights and data, and checked against NumPy by hand where PyTorch is missing.

Basset/DeepSEA on one-hot DNA (``F.one_hot(...).permute(0, 2, 1).float()``, ``one_hot`` with the number of classes
inferred, Conv1d + BatchNorm1d + ``MaxPool1d(ceil_mode=True)`` + ``LazyLinear``, reverse-complement averaging by
``torch.flip`` of both axes, gradient-times-input saliency); BPNet (a dilated residual Conv1d tower with
``padding="same"`` under every ``padding_mode``, a ConvTranspose1d profile head trained with the multinomial NLL of
``log_softmax`` and ``lgamma`` terms, a counts head with ``F.poisson_nll_loss(log_input=True, full=True)``, and
Enformer's attention pooling by ``unflatten`` and a masked softmax), checked against NumPy by hand; an ESM-style
masked protein LM (``Embedding(padding_idx)``, token-dropout rescaling, ``MultiheadAttention`` with a key padding
mask and per-head weights, ``cross_entropy(ignore_index=-100)``, APC-corrected contacts); an Evoformer block on an
MSA in float32 and float64 (tied row attention with pair bias and column attention by ``einsum`` over 5-D tensors
with ``...``, outer-product mean, outgoing and incoming triangle multiplicative updates, a distogram head trained on
``cdist`` + ``bucketize(right=True)`` bins checked against ``np.digitize``); structure maths (frames by Gram-Schmidt
with ``F.normalize`` and ``torch.linalg.cross``, quaternions, FAPE, Kabsch RMSD through ``linalg.svd`` with the
determinant's sign, dihedrals by ``atan2``) in a toy structure module trained by Adam, against known rotations,
reflections and cis/trans angles, and ``gradcheck``-ed in float64; scVI (a VAE over counts with library size, the
negative binomial and zero-inflated NB log-likelihoods written with ``lgamma``/``softplus``, KL terms from
``torch.distributions``), the NB likelihood against ``NegativeBinomial.log_prob`` and ``lgamma``/``digamma`` at
large arguments; ``F.poisson_nll_loss(full=True)``'s target gradient (NaN at a zero count, as PyTorch's); DanQ
(Conv1d, a packed bidirectional LSTM, BatchNorm1d of the transposed LSTM output flattened by ``view`` and rectified
in place through it); and triangle attention that adds its pair bias and mask in place through a view of einsum's
logits. The last two depend on results laid out as PyTorch's (batch norm's, einsum's), so that a view shares memory.

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
# ESM-style protein masked language model: Embedding(padding_idx), token dropout rescaling, attention with a
# key padding mask, the masked-LM loss with ignore_index
# ----------------------------------------------------------------------------------------------

AMINO = "ACDEFGHIKLMNPQRSTVWY"
PAD, CLS, EOS, MASK = 0, 1, 2, 3  # then the 20 amino acids from 4


def protein_batch(seed=0, n=5, max_len=14):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(6, max_len - 1, n)
    tokens = np.full((n, max_len), PAD)
    for i, L in enumerate(lengths):
        tokens[i, 0] = CLS
        tokens[i, 1:L + 1] = 4 + rng.integers(0, 20, L)
        tokens[i, L + 1] = EOS
    return tokens


def esm_net(m, vocab=24, dim=16, heads=4):
    torch, nn, F = m.torch, m.nn, m.F

    class ESMLayer(nn.Module):
        def __init__(self):
            super().__init__()
            self.self_attn_layer_norm = nn.LayerNorm(dim)
            self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            self.final_layer_norm = nn.LayerNorm(dim)
            self.fc1 = nn.Linear(dim, 2 * dim)
            self.fc2 = nn.Linear(2 * dim, dim)

        def forward(self, x, padding_mask):
            h = self.self_attn_layer_norm(x)
            h, attn = self.self_attn(h, h, h, key_padding_mask=padding_mask, need_weights=True,
                                     average_attn_weights=False)
            x = x + h
            h = self.fc2(F.gelu(self.fc1(self.final_layer_norm(x))))
            return x + h, attn

    class ESM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_tokens = nn.Embedding(vocab, dim, padding_idx=PAD)
            self.embed_positions = nn.Embedding(32, dim)
            self.layers = nn.ModuleList([ESMLayer() for _ in range(2)])
            self.emb_layer_norm_after = nn.LayerNorm(dim)
            self.lm_head = nn.Linear(dim, vocab)

        def forward(self, tokens, token_dropout=True):
            padding_mask = tokens.eq(PAD)
            x = self.embed_tokens(tokens)
            if token_dropout:
                x.masked_fill_((tokens == MASK).unsqueeze(-1), 0.0)
                mask_ratio_train = 0.15 * 0.8
                src_lengths = (~padding_mask).sum(-1)
                mask_ratio_observed = (tokens == MASK).sum(-1).to(x.dtype) / src_lengths
                x = x * (1 - mask_ratio_train) / (1 - mask_ratio_observed)[:, None, None]
            positions = torch.cumsum(~padding_mask, dim=1) * (~padding_mask)
            x = x + self.embed_positions(positions)
            x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
            attentions = []
            for layer in self.layers:
                x, attn = layer(x, padding_mask)
                attentions.append(attn)
            x = self.emb_layer_norm_after(x)
            return self.lm_head(x), torch.stack(attentions, 1)

    return ESM()


def esm_mlm(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    tokens = torch.from_numpy(protein_batch())
    rng = np.random.default_rng(1)
    choose = torch.from_numpy(rng.random(tokens.shape) < 0.2) & (tokens >= 4)
    masked = tokens.masked_fill(choose, MASK)
    targets = tokens.masked_fill(~choose, -100)
    model = load(m, esm_net(m), weights)
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        logits, attn = model(masked)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    pad_grad = model.embed_tokens.weight.grad[PAD]
    # contact prediction from attention maps (APC-corrected, symmetrised), as ESM's ContactPredictionHead
    a = attn.detach().flatten(1, 2)
    a = a + a.transpose(-1, -2)
    a1, a2 = a.sum(-1, keepdims=True), a.sum(-2, keepdims=True)
    apc = a - a1 * a2 / a.sum((-1, -2), keepdims=True)
    perplexity = torch.exp(torch.tensor(losses[-1]))
    return losses, logits, attn, pad_grad, apc, perplexity, [p.grad for p in model.parameters()]


def test_esm_masked_lm_token_dropout():
    weights = weights_of(esm_net)
    ours, _ = run_both(esm_mlm, weights, rtol=1e-4, atol=1e-5)
    losses, logits, attn, pad_grad = ours[:4]
    assert losses[-1] < losses[0]
    assert np.all(pad_grad == 0)  # padding_idx's row takes no gradient
    tokens = protein_batch()
    # no attention lands on a padded key
    keys_padded = np.broadcast_to((tokens == PAD)[:, None, None, None, :], attn.shape)
    assert np.all(attn[keys_padded] == 0)


# ----------------------------------------------------------------------------------------------
# An Evoformer-like block on an MSA: tied row attention and column attention by einsum over 5-D tensors,
# outer-product-mean into the pair representation, triangle multiplicative updates, pair masks, and a distogram
# head trained with cross_entropy over distance bins from cdist + bucketize
# ----------------------------------------------------------------------------------------------


def evoformer_net(m, c_m=8, c_z=8, heads=2, c_hidden=4, bins=6):
    torch, nn, F = m.torch, m.nn, m.F

    class MSARowAttentionWithPairBias(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_norm_m = nn.LayerNorm(c_m)
            self.layer_norm_z = nn.LayerNorm(c_z)
            self.linear_z = nn.Linear(c_z, heads, bias=False)
            self.to_qkv = nn.Linear(c_m, 3 * heads * c_hidden, bias=False)
            self.to_gate = nn.Linear(c_m, heads * c_hidden)
            self.to_out = nn.Linear(heads * c_hidden, c_m)

        def forward(self, msa, pair, msa_mask):
            s, r = msa.shape[-3:-1]
            msa = self.layer_norm_m(msa)
            q, k, v = self.to_qkv(msa).chunk(3, dim=-1)
            q, k, v = (t.unflatten(-1, (heads, c_hidden)) for t in (q, k, v))  # b s i h d
            q = q / math.sqrt(c_hidden) / math.sqrt(s)  # tied attention: logits summed over sequences
            logits = torch.einsum("...sihd,...sjhd->...hij", q, k)
            logits = logits + self.linear_z(self.layer_norm_z(pair)).permute(0, 3, 1, 2)
            col_mask = msa_mask[:, 0]  # b j
            logits = logits.masked_fill(~col_mask[:, None, None, :].bool(), -1e9)
            attn = logits.softmax(-1)
            out = torch.einsum("bhij,bsjhd->bsihd", attn, v)
            gate = torch.sigmoid(self.to_gate(msa)).unflatten(-1, (heads, c_hidden))
            return self.to_out((out * gate).flatten(-2))

    class MSAColumnAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_norm = nn.LayerNorm(c_m)
            self.to_qkv = nn.Linear(c_m, 3 * heads * c_hidden, bias=False)
            self.to_out = nn.Linear(heads * c_hidden, c_m)

        def forward(self, msa, msa_mask):
            msa = self.layer_norm(msa).transpose(-2, -3)  # b i s c
            q, k, v = (t.unflatten(-1, (heads, c_hidden)) for t in self.to_qkv(msa).chunk(3, -1))
            logits = torch.einsum("bishd,bithd->bhist", q, k) / math.sqrt(c_hidden)
            mask = msa_mask.transpose(-1, -2)  # b i s
            logits = logits + (1e9 * (mask[:, None, :, None, :] - 1))
            out = torch.einsum("bhist,bithd->bishd", logits.softmax(-1), v)
            return self.to_out(out.flatten(-2)).transpose(-2, -3)

    class OuterProductMean(nn.Module):
        def __init__(self, c=4):
            super().__init__()
            self.layer_norm = nn.LayerNorm(c_m)
            self.linear_1 = nn.Linear(c_m, c)
            self.linear_2 = nn.Linear(c_m, c)
            self.linear_out = nn.Linear(c * c, c_z)

        def forward(self, msa, msa_mask):
            msa = self.layer_norm(msa)
            mask = msa_mask.unsqueeze(-1)
            a = self.linear_1(msa) * mask
            b = self.linear_2(msa) * mask
            outer = torch.einsum("bsic,bsjd->bijcd", a, b)
            norm = torch.einsum("...sia,...sjb->...ijab", mask, mask)
            return self.linear_out(outer.flatten(-2)) / (1e-3 + norm.squeeze(-1))

    class TriangleMultiplication(nn.Module):
        def __init__(self, outgoing=True):
            super().__init__()
            self.outgoing = outgoing
            self.norm = nn.LayerNorm(c_z)
            self.left_proj = nn.Linear(c_z, c_z)
            self.right_proj = nn.Linear(c_z, c_z)
            self.left_gate = nn.Linear(c_z, c_z)
            self.right_gate = nn.Linear(c_z, c_z)
            self.out_gate = nn.Linear(c_z, c_z)
            self.to_out_norm = nn.LayerNorm(c_z)
            self.to_out = nn.Linear(c_z, c_z)

        def forward(self, z, pair_mask):
            mask = pair_mask.unsqueeze(-1)
            z = self.norm(z)
            left = self.left_proj(z) * mask * self.left_gate(z).sigmoid()
            right = self.right_proj(z) * mask * self.right_gate(z).sigmoid()
            if self.outgoing:
                out = torch.einsum("bikc,bjkc->bijc", left, right)
            else:
                out = torch.einsum("bkic,bkjc->bijc", left, right)
            return self.to_out(self.to_out_norm(out)) * self.out_gate(z).sigmoid()

    class Evoformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed_msa = nn.Embedding(22, c_m, padding_idx=21)
            self.relpos = nn.Embedding(2 * 4 + 1, c_z)
            self.row = MSARowAttentionWithPairBias()
            self.col = MSAColumnAttention()
            self.opm = OuterProductMean()
            self.tri_out = TriangleMultiplication(True)
            self.tri_in = TriangleMultiplication(False)
            self.distogram = nn.Linear(c_z, bins)

        def forward(self, msa_tokens, msa_mask):
            L = msa_tokens.shape[-1]
            m = self.embed_msa(msa_tokens)
            idx = torch.arange(L)
            rel = torch.clamp(idx[None, :] - idx[:, None], -4, 4) + 4
            z = self.relpos(rel).unsqueeze(0).expand(msa_tokens.shape[0], -1, -1, -1)
            pair_mask = msa_mask[:, 0, :, None] * msa_mask[:, 0, None, :]
            m = m + self.row(m, z, msa_mask)
            m = m + self.col(m, msa_mask)
            z = z + self.opm(m, msa_mask)
            z = z + self.tri_out(z, pair_mask)
            z = z + self.tri_in(z, pair_mask)
            logits = self.distogram(z)
            return logits + logits.transpose(-2, -3), pair_mask

    return Evoformer()


def protein_coords(seed=0, b=2, L=7):
    """C-beta-like coordinates along a random walk of 3.8 A steps."""
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((b, L, 3))
    steps = 3.8 * steps / np.linalg.norm(steps, axis=-1, keepdims=True)
    return np.cumsum(steps, axis=1)


def evoformer(m, weights, steps=3, dtype="float32"):
    torch, F, optim = m.torch, m.F, m.optim
    dtype = getattr(torch, dtype)
    rng = np.random.default_rng(4)
    b, s, L = 2, 3, 7
    msa_tokens = torch.from_numpy(rng.integers(0, 21, (b, s, L)))
    msa_mask = torch.ones(b, s, L, dtype=dtype)
    msa_mask[1, :, 5:] = 0  # the second protein is 5 residues long
    msa_tokens = msa_tokens.masked_fill(msa_mask == 0, 21)
    coords = torch.tensor(protein_coords(), dtype=dtype)
    dist = torch.cdist(coords, coords)
    boundaries = torch.linspace(2.0, 12.0, 5, dtype=dtype)
    bins = torch.bucketize(dist, boundaries, right=True)  # a distance on a boundary goes to the upper bin
    model = load(m, evoformer_net(m), weights).to(dtype)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        logits, pair_mask = model(msa_tokens, msa_mask)
        errors = F.cross_entropy(logits.permute(0, 3, 1, 2), bins, reduction="none")
        loss = (errors * pair_mask).sum() / pair_mask.sum()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    probs = logits.detach().softmax(-1)
    centres = torch.cat([boundaries[:1] - 1, (boundaries[1:] + boundaries[:-1]) / 2, boundaries[-1:] + 1])
    expected_distance = torch.einsum("bijk,k->bij", probs, centres)
    return losses, bins, logits, expected_distance, [p.grad for p in model.parameters()]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_evoformer_distogram(dtype):
    weights = weights_of(evoformer_net)
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == "float32" else dict(rtol=1e-9, atol=1e-11)
    ours, _ = run_both(evoformer, weights, dtype=dtype, **tol)
    losses, bins = ours[:2]
    assert losses[-1] < losses[0]
    coords = protein_coords()
    dist = np.linalg.norm(coords[:, :, None] - coords[:, None], axis=-1)
    np.testing.assert_array_equal(bins, np.digitize(dist, np.linspace(2.0, 12.0, 5), right=False))


# ----------------------------------------------------------------------------------------------
# Structure maths: rigid frames from backbone atoms (Gram-Schmidt), quaternions, FAPE, Kabsch RMSD, dihedrals
# ----------------------------------------------------------------------------------------------


def backbone(seed=0, L=6):
    """N, CA, C atoms of a chain: (L, 3, 3), jittered around an ideal-ish geometry."""
    rng = np.random.default_rng(seed)
    ca = np.cumsum(3.8 * rng.standard_normal((L, 3)) / math.sqrt(3), axis=0)
    n = ca + rng.normal(0, 1.0, (L, 3)) + np.array([-1.2, 0.3, 0.1])
    c = ca + rng.normal(0, 1.0, (L, 3)) + np.array([1.3, 0.4, -0.2])
    return np.stack([n, ca, c], axis=1)


def structure_utils(m):
    torch, F = m.torch, m.F

    def rigid_from_3_points(x1, x2, x3, eps=1e-8):
        """AlphaFold2 supplementary algorithm 21: a frame at x2 with e1 along x3 - x2, e2 in the plane of x1."""
        v1 = x3 - x2
        v2 = x1 - x2
        e1 = F.normalize(v1, dim=-1, eps=eps)
        u2 = v2 - e1 * (e1 * v2).sum(-1, keepdim=True)
        e2 = F.normalize(u2, dim=-1, eps=eps)
        e3 = torch.linalg.cross(e1, e2, dim=-1)
        R = torch.stack([e1, e2, e3], dim=-1)
        return R, x2

    def quaternion_to_rotation(q):
        q = q / q.norm(dim=-1, keepdim=True)
        w, x, y, z = q.unbind(-1)
        return torch.stack([
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ], dim=-1).reshape(q.shape[:-1] + (3, 3))

    def invert_apply(R, t, x):
        """Points x (..., P, 3) in the local frame of each rigid (..., F): (..., F, P, 3)."""
        d = x[..., None, :, :] - t[..., :, None, :]
        return torch.einsum("...fji,...fpj->...fpi", R, d)

    def fape(pred_R, pred_t, pred_x, true_R, true_t, true_x, clamp=10.0, scale=10.0, eps=1e-4):
        local_pred = invert_apply(pred_R, pred_t, pred_x)
        local_true = invert_apply(true_R, true_t, true_x)
        err = torch.sqrt(((local_pred - local_true) ** 2).sum(-1) + eps)
        return torch.clamp(err, max=clamp).mean() / scale

    def kabsch_rmsd(P, Q):
        P_c = P - P.mean(dim=-2, keepdim=True)
        Q_c = Q - Q.mean(dim=-2, keepdim=True)
        H = P_c.transpose(-1, -2) @ Q_c
        U, S, Vh = torch.linalg.svd(H)
        d = torch.sign(torch.linalg.det(Vh.transpose(-1, -2) @ U.transpose(-1, -2)))
        D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
        R = Vh.transpose(-1, -2) @ D @ U.transpose(-1, -2)
        P_rot = P_c @ R.transpose(-1, -2)
        return torch.sqrt(((P_rot - Q_c) ** 2).sum(-1).mean(-1)), R

    def dihedral(p0, p1, p2, p3):
        b0 = p0 - p1
        b1 = p2 - p1
        b2 = p3 - p2
        b1n = b1 / torch.linalg.norm(b1, dim=-1, keepdim=True)
        v = b0 - (b0 * b1n).sum(-1, keepdim=True) * b1n
        w = b2 - (b2 * b1n).sum(-1, keepdim=True) * b1n
        x = (v * w).sum(-1)
        y = (torch.cross(b1n, v, dim=-1) * w).sum(-1)
        return torch.atan2(y, x)

    return dict(rigid_from_3_points=rigid_from_3_points, quaternion_to_rotation=quaternion_to_rotation,
                invert_apply=invert_apply, fape=fape, kabsch_rmsd=kabsch_rmsd, dihedral=dihedral)


def structure_module(m, steps=4):
    """A toy structure module: per-residue quaternion + translation updates learnt by FAPE and Kabsch RMSD."""
    torch, nn, optim = m.torch, m.nn, m.optim
    u = structure_utils(m)
    true = torch.tensor(backbone(0), dtype=torch.float64)
    L = true.shape[0]
    true_R, true_t = u["rigid_from_3_points"](true[:, 0], true[:, 1], true[:, 2])
    torch.manual_seed(0)
    quat = nn.Parameter(torch.tensor(np.tile([1.0, 0.1, -0.2, 0.05], (L, 1))))
    trans = nn.Parameter(torch.tensor(np.random.default_rng(1).standard_normal((L, 3)) * 3))
    local_atoms = torch.tensor([[-0.5, 1.4, 0.0], [0.0, 0.0, 0.0], [1.5, 0.0, 0.0]], dtype=torch.float64)
    opt = optim.Adam([quat, trans], lr=0.1)
    history = []
    for step in range(steps):
        opt.zero_grad()
        R = u["quaternion_to_rotation"](quat)
        atoms = torch.einsum("lij,aj->lai", R, local_atoms) + trans[:, None, :]
        pred_R, pred_t = u["rigid_from_3_points"](atoms[:, 0], atoms[:, 1], atoms[:, 2])
        fape = u["fape"](pred_R, pred_t, atoms.reshape(-1, 3), true_R, true_t, true.reshape(-1, 3))
        rmsd, _ = u["kabsch_rmsd"](atoms[:, 1], true[:, 1])
        phi = u["dihedral"](atoms[:-1, 2], atoms[1:, 0], atoms[1:, 1], atoms[1:, 2])
        psi = u["dihedral"](atoms[:-1, 0], atoms[:-1, 1], atoms[:-1, 2], atoms[1:, 0])
        true_phi = u["dihedral"](true[:-1, 2], true[1:, 0], true[1:, 1], true[1:, 2])
        torsion = (1 - torch.cos(phi - true_phi)).mean()
        loss = fape + 0.1 * rmsd + 0.1 * torsion
        loss.backward()
        opt.step()
        history.append((fape.item(), rmsd.item(), torsion.item()))
    return history, quat.grad, trans.grad, phi, psi, pred_R, torch.linalg.det(pred_R)


def test_structure_module_fape_kabsch():
    ours, _ = run_both(structure_module, rtol=1e-8, atol=1e-10)
    history, *_, det = ours
    assert sum(history[-1]) < sum(history[0])
    np.testing.assert_allclose(det, 1.0, rtol=1e-12)


def structure_numpy_checks(m):
    torch = m.torch
    u = structure_utils(m)
    rng = np.random.default_rng(5)
    P = rng.standard_normal((10, 3))
    angle = 0.7
    Rz = np.array([[math.cos(angle), -math.sin(angle), 0], [math.sin(angle), math.cos(angle), 0], [0, 0, 1]])
    Q = P @ Rz.T + np.array([1.0, -2.0, 0.5])
    rmsd, R = u["kabsch_rmsd"](torch.tensor(P), torch.tensor(Q))
    mirror = u["kabsch_rmsd"](torch.tensor(P), torch.tensor(Q * np.array([1, 1, -1])))  # a reflection: no rotation fits
    # an ideal trans dihedral (180 degrees) and a cis one (0)
    pts = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [-1.0, -1.0, 1.0]], dtype=torch.float64)
    cis = pts.clone()
    cis[3] = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    gauche = u["dihedral"](*pts), u["dihedral"](*cis)
    q = torch.tensor([math.cos(angle / 2), 0.0, 0.0, math.sin(angle / 2)], dtype=torch.float64)
    return rmsd, R, mirror[0], torch.linalg.det(mirror[1]), gauche, u["quaternion_to_rotation"](q), torch.tensor(Rz)


def test_structure_maths_against_known_values():
    ours, _ = run_both(structure_numpy_checks, rtol=1e-10, atol=1e-12)
    rmsd, R, mirror_rmsd, mirror_det, (trans, cis), R_q, Rz = ours
    assert rmsd < 1e-10 and mirror_rmsd > 0.1 and abs(mirror_det - 1) < 1e-12
    np.testing.assert_allclose(R, Rz, atol=1e-10)
    np.testing.assert_allclose(R_q, Rz, atol=1e-12)
    np.testing.assert_allclose([abs(trans), cis], [math.pi, 0.0], atol=1e-12)


def structure_gradchecks(m):
    torch = m.torch
    u = structure_utils(m)
    gradcheck = torch.autograd.gradcheck
    rng = np.random.default_rng(6)
    P = torch.tensor(rng.standard_normal((8, 3)), requires_grad=True)
    Q = torch.tensor(rng.standard_normal((8, 3)), requires_grad=True)
    atoms = torch.tensor(backbone(2, L=3), requires_grad=True)
    quat = torch.tensor(rng.standard_normal((3, 4)), requires_grad=True)
    four = torch.tensor(rng.standard_normal((4, 5, 3)), requires_grad=True)
    return (
        gradcheck(lambda P, Q: u["kabsch_rmsd"](P, Q)[0], (P, Q)),
        gradcheck(lambda P, Q: u["kabsch_rmsd"](P, Q)[1], (P, Q)),
        gradcheck(lambda a: u["rigid_from_3_points"](a[:, 0], a[:, 1], a[:, 2])[0], (atoms,)),
        gradcheck(u["quaternion_to_rotation"], (quat,)),
        gradcheck(lambda x: u["dihedral"](*x.unbind(0)), (four,)),
        gradcheck(lambda a: u["fape"](*u["rigid_from_3_points"](a[:, 0], a[:, 1], a[:, 2]), a.reshape(-1, 3),
                                      *u["rigid_from_3_points"](a[:, 2], a[:, 1], a[:, 0]), a.reshape(-1, 3) * 1.1,
                                      clamp=3.0), (atoms,)),
    )


def test_structure_gradchecks_float64():
    ours, _ = run_both(structure_gradchecks)
    assert all(ours)


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


# ----------------------------------------------------------------------------------------------
# Triangle attention around the starting node (AlphaFold2's algorithm 13) in the style that adds the pair bias and
# the mask in place, through a (B·I, H, J·K) view of the einsum's logits
# ----------------------------------------------------------------------------------------------


def triangle_attention_net(m, c_z=8, heads=2, c=4):
    torch, nn = m.torch, m.nn

    class TriangleAttentionStartingNode(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer_norm = nn.LayerNorm(c_z)
            self.linear_q = nn.Linear(c_z, heads * c, bias=False)
            self.linear_k = nn.Linear(c_z, heads * c, bias=False)
            self.linear_v = nn.Linear(c_z, heads * c, bias=False)
            self.linear_b = nn.Linear(c_z, heads, bias=False)
            self.linear_g = nn.Linear(c_z, heads * c)
            self.linear_o = nn.Linear(heads * c, c_z)

        def forward(self, z, pair_mask):
            B, I, J, _ = z.shape
            z = self.layer_norm(z)
            q = self.linear_q(z).view(B, I, J, heads, c) * c ** -0.5
            k = self.linear_k(z).view(B, I, J, heads, c)
            v = self.linear_v(z).view(B, I, J, heads, c)
            logits = torch.einsum("bijhc,bikhc->bihjk", q, k)  # (B, I, H, J, K)
            flat = logits.view(B * I, heads, J * J)  # the (j, k) pairs flattened, as the bias is
            bias = self.linear_b(z).permute(0, 3, 1, 2).reshape(B, heads, J * J)  # b_jk per head
            flat += bias.repeat_interleave(I, dim=0)
            key_mask = pair_mask.bool()[:, None, :].expand(B, J, J).reshape(B, 1, J * J)
            flat.masked_fill_(~key_mask.repeat_interleave(I, dim=0), -1e9)
            attn = logits.softmax(-1)  # (the writes above went through the view into logits)
            o = torch.einsum("bihjk,bikhc->bijhc", attn, v)
            g = torch.sigmoid(self.linear_g(z)).view(B, I, J, heads, c)
            return self.linear_o((g * o).reshape(B, I, J, heads * c)), attn

    return TriangleAttentionStartingNode()


def triangle_attention(m, weights, steps=3):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(8)
    z = torch.tensor(rng.standard_normal((2, 5, 5, 8)), dtype=torch.float32)
    target = torch.tensor(rng.standard_normal((2, 5, 5, 8)), dtype=torch.float32)
    pair_mask = torch.ones(2, 5)
    pair_mask[1, 4:] = 0
    model = load(m, triangle_attention_net(m), weights)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(steps):
        opt.zero_grad()
        out, attn = model(z, pair_mask)
        loss = ((out - target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, out, attn, [p.grad for p in model.parameters()]


def test_triangle_attention_bias_through_a_view_of_einsum_logits():
    weights = weights_of(triangle_attention_net)
    ours, _ = run_both(triangle_attention, weights, rtol=1e-4, atol=1e-5)
    losses, out, attn = ours[:3]
    assert losses[-1] < losses[0]
    assert np.all(attn[1, :, :, :, 4] == 0)  # the masked key (written through the view) takes no attention
