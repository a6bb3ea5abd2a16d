# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Memory-augmented and set-structured models as their reference PyTorch code writes them, each run as a program on
chainrule and on PyTorch from the same seed (tests/pytorch_programs.py), comparing losses, outputs and gradients
after a few Adam/AdamW steps, with invariants and NumPy checks that hold without PyTorch. Set functions: the Set
Transformer (MAB/SAB/ISAB/PMA by ``nn.MultiheadAttention(batch_first=True)`` with ``key_padding_mask``, and its
authors' own head split by ``torch.cat(Q.split(d, 2), 0)``), Deep Sets with masked sums, and a set encoder
(``nn.TransformerEncoder`` over a padded batch) evaluated in inference on a batch holding an empty set."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Set Transformer
# ----------------------------------------------------------------------------------------------


def set_transformer_authors(m):
    """The Set Transformer (Lee et al. 2019) as its authors' modules.py writes it: heads split by
    ``torch.cat(Q.split(dim_split, 2), 0)``, attention by ``torch.softmax(Q_.bmm(K_.transpose(1, 2)) /
    math.sqrt(dim_V), 2)``, ISAB's inducing points and PMA's seeds as parameters initialised by xavier_uniform_;
    trained on the max-of-a-set regression with Adam."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

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
        def __init__(self, dim_input, num_outputs, dim_output, num_inds=4, dim_hidden=16, num_heads=4, ln=True):
            super(SetTransformer, self).__init__()
            self.enc = nn.Sequential(
                ISAB(dim_input, dim_hidden, num_heads, num_inds, ln=ln),
                ISAB(dim_hidden, dim_hidden, num_heads, num_inds, ln=ln))
            self.dec = nn.Sequential(
                PMA(dim_hidden, num_heads, num_outputs, ln=ln),
                SAB(dim_hidden, dim_hidden, num_heads, ln=ln),
                nn.Linear(dim_hidden, dim_output))

        def forward(self, X):
            return self.dec(self.enc(X))

    torch.manual_seed(5)
    model = SetTransformer(1, 1, 1)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.L1Loss()
    losses = []
    for step in range(4):
        X = torch.rand(6, 10, 1) * 10
        y = X.max(dim=1)[0]
        pred = model(X).squeeze(-1)
        loss = criterion(pred, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    perm = torch.randperm(10)
    with torch.no_grad():
        a, b = model(X), model(X[:, perm])
    return {"losses": losses, "pred": a, "perm_diff": (a - b).abs().max(), "I_grad": model.enc[0].I.grad,
            "S_grad": model.dec[0].S.grad}


def test_set_transformer_authors():
    ours, _ = run_both(set_transformer_authors, rtol=2e-4, atol=1e-5)
    assert ours["perm_diff"] < 1e-4  # a permutation-invariant function of the set


def set_transformer_padded(m):
    """Set Transformer blocks on nn.MultiheadAttention(batch_first=True) for sets of different sizes in one padded
    batch: ``key_padding_mask`` in SAB/ISAB/PMA, masked positions zeroed before pooling, a classification head;
    the result for a padded set equals that of the set alone."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class MAB(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.ln0, self.ln1 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

        def forward(self, Q, K, key_padding_mask=None):
            H = self.ln0(Q + self.attn(Q, K, K, key_padding_mask=key_padding_mask, need_weights=False)[0])
            return self.ln1(H + self.ff(H))

    class ISAB(nn.Module):
        def __init__(self, d, heads, m_ind):
            super().__init__()
            self.inducing = nn.Parameter(torch.randn(1, m_ind, d) / math.sqrt(d))
            self.mab0, self.mab1 = MAB(d, heads), MAB(d, heads)

        def forward(self, X, mask=None):
            H = self.mab0(self.inducing.expand(X.size(0), -1, -1), X, key_padding_mask=mask)
            return self.mab1(X, H)

    class PMA(nn.Module):
        def __init__(self, d, heads, k):
            super().__init__()
            self.seeds = nn.Parameter(torch.randn(1, k, d) / math.sqrt(d))
            self.mab = MAB(d, heads)

        def forward(self, X, mask=None):
            return self.mab(self.seeds.expand(X.size(0), -1, -1), X, key_padding_mask=mask)

    class Net(nn.Module):
        def __init__(self, d_in=3, d=16, classes=3):
            super().__init__()
            self.embed = nn.Linear(d_in, d)
            self.isab = ISAB(d, 4, 3)
            self.sab = MAB(d, 4)
            self.pma = PMA(d, 4, 2)
            self.head = nn.Linear(2 * d, classes)

        def forward(self, X, mask):
            H = self.embed(X)
            H = self.isab(H, mask)
            H = self.sab(H, H, key_padding_mask=mask)
            H = H.masked_fill(mask.unsqueeze(-1), 0.0)
            return self.head(self.pma(H, mask).flatten(1))

    torch.manual_seed(6)
    net = Net()
    sizes = [7, 3, 5, 1, 6]
    X = torch.randn(len(sizes), 7, 3)
    mask = torch.arange(7).unsqueeze(0) >= torch.tensor(sizes).unsqueeze(1)
    X = X.masked_fill(mask.unsqueeze(-1), 0.0)
    labels = torch.tensor([0, 1, 2, 1, 0])
    opt = optim.AdamW(net.parameters(), lr=3e-3, betas=(0.9, 0.98), weight_decay=1e-2)
    sched = optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    losses = []
    for step in range(5):
        logits = net(X, mask)
        loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        batched = net(X, mask)
        alone = net(X[1:2, :3], mask[1:2, :3])
        float_mask = torch.zeros(mask.shape).masked_fill(mask, float("-inf"))
        by_float = net.sab.attn(X[:, :, :1].expand(-1, -1, 16).contiguous(), net.embed(X), net.embed(X),
                                key_padding_mask=float_mask)[0]
        by_bool = net.sab.attn(X[:, :, :1].expand(-1, -1, 16).contiguous(), net.embed(X), net.embed(X),
                               key_padding_mask=mask)[0]
    return {"losses": losses, "logits": batched, "alone": alone, "by_float": by_float, "by_bool": by_bool,
            "seed_grad": net.pma.seeds.grad, "in_proj_grad": net.isab.mab0.attn.in_proj_weight.grad}


def test_set_transformer_padded():
    ours, _ = run_both(set_transformer_padded, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(ours["logits"][1:2], ours["alone"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["by_float"], ours["by_bool"], rtol=1e-5, atol=1e-6)


def deep_sets(m):
    """Deep Sets (Zaheer et al. 2017): phi on each element, a masked sum (and a masked mean and max for the
    variants), rho on the pooled vector; permutation-equivariant layers x W - max(x) Gamma as in the point-cloud
    classifier; trained on the sum-of-digits task with Adam and an exponential LR decay."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class PermEqui2_max(nn.Module):
        def __init__(self, in_dim, out_dim):
            super().__init__()
            self.Gamma = nn.Linear(in_dim, out_dim)
            self.Lambda = nn.Linear(in_dim, out_dim, bias=False)

        def forward(self, x, mask):
            xm, _ = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1, keepdim=True)
            xm = self.Lambda(xm)
            x = self.Gamma(x)
            return x - xm

    class DeepSets(nn.Module):
        def __init__(self, vocab=10, d=16, pool="sum"):
            super().__init__()
            self.embed = nn.Embedding(vocab, d, padding_idx=0)
            self.phi = nn.Sequential(nn.Linear(d, d), nn.ELU(inplace=True), nn.Linear(d, d), nn.Tanh())
            self.equi = PermEqui2_max(d, d)
            self.rho = nn.Sequential(nn.Linear(3 * d, d), nn.ELU(inplace=True), nn.Linear(d, 1))

        def forward(self, digits):
            mask = digits != 0
            x = self.phi(self.embed(digits))
            x = F.elu(self.equi(x, mask))
            m_f = mask.unsqueeze(-1).to(x.dtype)
            s = (x * m_f).sum(dim=1)
            mean = s / m_f.sum(dim=1).clamp(min=1)
            mx = x.masked_fill(~mask.unsqueeze(-1), -1e9).amax(dim=1)
            return self.rho(torch.cat([s, mean, mx], dim=-1)).squeeze(-1)

    torch.manual_seed(9)
    model = DeepSets()
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-5)
    sched = optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    digits = torch.randint(1, 10, (16, 6))
    lengths = torch.randint(1, 7, (16,))
    digits[torch.arange(6)[None] >= lengths[:, None]] = 0
    target = digits.sum(1).float()
    losses = []
    for epoch in range(5):
        pred = model(digits)
        loss = F.l1_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    shuffled = digits[:, torch.randperm(6)]
    with torch.no_grad():
        diff = (model(digits) - model(shuffled)).abs().max()
    return {"losses": losses, "diff": diff, "emb_grad": model.embed.weight.grad, "lr": sched.get_last_lr()[0]}


def test_deep_sets():
    ours, _ = run_both(deep_sets, rtol=1e-4, atol=1e-5)
    assert ours["diff"] < 1e-4
    assert np.all(ours["emb_grad"][0] == 0)  # padding_idx gets no gradient
    assert ours["lr"] == pytest.approx(1e-3 * 0.9 ** 5)


def empty_set_inference(m):
    """A set encoder (nn.TransformerEncoder over a padded batch) evaluated on a batch holding an empty set: in
    inference PyTorch runs its fused kernels, so the empty set's attention is a softmax over nothing (NaN), unlike
    training mode's SDPA route (0); a pooled readout guards with ``nan_to_num`` as set-prediction code does."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(12)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    sab = nn.MultiheadAttention(8, 2, batch_first=True)
    X = torch.randn(3, 4, 8)
    mask = torch.tensor([[False, False, True, True], [True, True, True, True], [False, False, False, False]])
    train_out = encoder(X, src_key_padding_mask=mask)
    encoder.eval()
    sab.eval()
    with torch.no_grad():
        eval_out = encoder(X, src_key_padding_mask=mask)
        attended, _ = sab(X, X, X, key_padding_mask=mask, need_weights=False)
        keep = (~mask).unsqueeze(-1).float()
        pooled = (attended.nan_to_num(0.0) * keep).sum(1) / keep.sum(1).clamp(min=1)
    return {"train": train_out.detach(), "eval": eval_out, "attended": attended, "pooled": pooled}


def test_empty_set_inference():
    ours, _ = run_both(empty_set_inference, rtol=1e-4, atol=1e-5)
    assert np.isfinite(ours["train"]).all()
    assert np.isnan(ours["eval"][1]).all() and np.isfinite(ours["eval"][[0, 2]]).all()
    np.testing.assert_allclose(ours["eval"][[0, 2]], ours["train"][[0, 2]], rtol=1e-4, atol=1e-5)
    assert np.isnan(ours["attended"][1]).all()
    np.testing.assert_array_equal(ours["pooled"][1], 0.0)
