# ruff: noqa: B007, E702, F841  (the programs are kept as their authors wrote them)
"""Autoregressive generative models and classic architectures from papers (see tests/pytorch_programs.py), as PyTorch
users write them, each run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against
invariants that can fail (receptive fields, normalisation, reconstructions, ranges). Autoregressive densities and
sequences: MADE (Karpathy's, numpy masks copied into ``register_buffer`` masks, connectivity checked by gradients and
``autograd.functional.jacobian``, order-agnostic training) and a MAF layer (``randperm`` orders, ``randint`` degrees,
a triangular Jacobian, ``slogdet``, ``func.jacrev``, inversion by D passes); a WaveNet (causal dilated ``Conv1d`` by
``F.pad``, gated residual and skip connections, mu-law coding, ``cross_entropy`` over 256 classes, causality by
gradients, sampling with a temperature, fast generation by queues); a char-RNN (``LSTM`` and ``GRU``, truncated BPTT
by ``detach``, ``clip_grad_norm_``, temperature sampling); a NADE (exact normalisation over all 256 binary vectors,
``bernoulli`` sampling); temperature, top-k, nucleus and beam decoding."""

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# MADE (Germain et al., 2015) as Karpathy's pytorch-made writes it, and a MAF layer on top
# ----------------------------------------------------------------------------------------------


def made(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MaskedLinear(nn.Linear):
        def __init__(self, in_features, out_features, bias=True):
            super().__init__(in_features, out_features, bias)
            self.register_buffer('mask', torch.ones(out_features, in_features))

        def set_mask(self, mask):
            self.mask.data.copy_(torch.from_numpy(mask.astype(np.uint8).T))

        def forward(self, input):
            return F.linear(input, self.mask * self.weight, self.bias)

    class MADE(nn.Module):
        def __init__(self, nin, hidden_sizes, nout, num_masks=1, natural_ordering=False):
            super().__init__()
            self.nin, self.nout, self.hidden_sizes = nin, nout, hidden_sizes
            self.net = []
            hs = [nin] + hidden_sizes + [nout]
            for h0, h1 in zip(hs, hs[1:]):
                self.net.extend([MaskedLinear(h0, h1), nn.ReLU()])
            self.net.pop()
            self.net = nn.Sequential(*self.net)
            self.natural_ordering = natural_ordering
            self.num_masks = num_masks
            self.seed = 0
            self.m = {}
            self.update_masks()

        def update_masks(self):
            if self.m and self.num_masks == 1:
                return
            L = len(self.hidden_sizes)
            rng = np.random.RandomState(self.seed)
            self.seed = (self.seed + 1) % self.num_masks
            self.m[-1] = np.arange(self.nin) if self.natural_ordering else rng.permutation(self.nin)
            for l in range(L):
                self.m[l] = rng.randint(self.m[l - 1].min(), self.nin - 1, size=self.hidden_sizes[l])
            masks = [self.m[l - 1][:, None] <= self.m[l][None, :] for l in range(L)]
            masks.append(self.m[L - 1][:, None] < self.m[-1][None, :])
            if self.nout > self.nin:
                k = int(self.nout / self.nin)
                masks[-1] = np.concatenate([masks[-1]] * k, axis=1)
            layers = [l for l in self.net.modules() if isinstance(l, MaskedLinear)]
            for l, mm in zip(layers, masks):
                l.set_mask(mm)

        def forward(self, x):
            return self.net(x)

    torch.manual_seed(0)
    D = 6
    model = MADE(D, [20, 20], D * 2, num_masks=2)
    order = model.m[-1].copy()
    res = []
    for k in range(D * 2):
        x = (torch.rand(1, D) > 0.5).float().requires_grad_(True)
        xtr = model(x)
        loss = xtr[0, k]
        loss.backward()
        depends = (x.grad[0] != 0).numpy().astype(np.uint8)
        res.append(depends)
    x = torch.rand(3, D)
    jac = torch.autograd.functional.jacobian(lambda v: model(v), x[0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    data = (torch.rand(32, D) > 0.5).float()
    losses = []
    for step in range(4):
        model.update_masks()
        logits = model(data)[:, :D]
        loss = F.binary_cross_entropy_with_logits(logits, data, reduction='sum') / data.size(0)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss)
    return {"dep": np.array(res), "order": order, "jac": jac, "losses": torch.stack(losses),
            "m1": model.net[2].mask, "g": model.net[0].weight.grad}


def test_made():
    ours, _ = run_both(made, rtol=1e-4, atol=1e-5)
    order, dep = ours["order"], ours["dep"]
    # output k (and its twin k + D) depends exactly on inputs earlier in the ordering: never on itself or later
    for k in range(12):
        allowed = order < order[k % 6]
        assert not np.any(dep[k] & ~allowed)
    assert not np.any(ours["jac"][np.arange(6), np.arange(6)])  # no output sees its own input
    assert set(np.unique(ours["m1"])) <= {0.0, 1.0}
    assert np.isfinite(ours["losses"]).all()


def maf_layer(m):
    torch, nn, F = m.torch, m.nn, m.F
    D = m.torch.distributions
    torch.manual_seed(3)

    class MaskedLinear(nn.Linear):
        def __init__(self, i, o, mask):
            super().__init__(i, o)
            self.register_buffer("mask", mask.float())

        def forward(self, x):
            return F.linear(x, self.weight * self.mask, self.bias)

    d, h = 5, 12
    order = torch.randperm(d)
    hid = torch.randint(order.min().item(), d - 1, (h,))
    m1 = hid.unsqueeze(-1) >= order.unsqueeze(0)
    m2 = order.unsqueeze(-1) > hid.unsqueeze(0)
    net = nn.Sequential(MaskedLinear(d, h, m1), nn.ELU(), MaskedLinear(h, 2 * d, m2.repeat(2, 1)))
    x = torch.randn(7, d)

    def forward(x):
        mu, alpha = net(x).chunk(2, dim=1)
        u = (x - mu) * torch.exp(-alpha)
        logdet = -alpha.sum(1)
        return u, logdet

    u, logdet = forward(x)
    base = D.Normal(torch.zeros(d), torch.ones(d))
    lp = base.log_prob(u).sum(1) + logdet
    lp.mean().backward()
    J = torch.autograd.functional.jacobian(lambda v: forward(v.unsqueeze(0))[0].squeeze(0), x[0])
    Jp = J[torch.argsort(order)][:, torch.argsort(order)]
    x_rec = torch.zeros_like(u)
    with torch.no_grad():
        for i in range(d):
            mu, alpha = net(x_rec).chunk(2, dim=1)
            idx = (order == i).nonzero().squeeze()
            x_rec[:, idx] = u[:, idx] * torch.exp(alpha[:, idx]) + mu[:, idx]
    JF = torch.func.jacrev(lambda v: forward(v.unsqueeze(0))[0].squeeze(0))(x[0])
    return {"lp": lp, "J": J, "Jp": Jp, "rec": (x_rec - x).abs().max(), "logdet": logdet[0],
            "slogdet": torch.linalg.slogdet(J)[1], "g": net[0].weight.grad, "JF": JF, "order": order, "hid": hid}


def test_maf_layer():
    ours, _ = run_both(maf_layer, rtol=1e-4, atol=1e-5)
    assert sorted(ours["order"].tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(np.triu(ours["Jp"], 1), 0)  # triangular in the permuted order
    np.testing.assert_allclose(ours["slogdet"], ours["logdet"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["JF"], ours["J"], rtol=1e-6, atol=1e-7)
    assert ours["rec"] < 1e-5


# ----------------------------------------------------------------------------------------------
# WaveNet (van den Oord et al., 2016): dilated causal convolutions, gated units, mu-law over 256 classes
# ----------------------------------------------------------------------------------------------


def mu_law_encode(torch, x, mu=255):
    x = torch.clamp(x, -1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / np.log1p(mu)
    return ((y + 1) / 2 * mu + 0.5).long()


def mu_law_decode(torch, q, mu=255):
    y = 2 * (q.float() / mu) - 1
    return torch.sign(y) * (1.0 / mu) * ((1 + mu) ** torch.abs(y) - 1)


def wavenet(m):
    torch, nn, F = m.torch, m.nn, m.F

    class CausalConv1d(nn.Conv1d):
        def __init__(self, cin, cout, k, dilation=1):
            super().__init__(cin, cout, k, dilation=dilation)
            self.left = (k - 1) * dilation

        def forward(self, x):
            return super().forward(F.pad(x, (self.left, 0)))

    class ResidualBlock(nn.Module):
        def __init__(self, rc, sc, dilation):
            super().__init__()
            self.filter = CausalConv1d(rc, rc, 2, dilation)
            self.gate = CausalConv1d(rc, rc, 2, dilation)
            self.res = nn.Conv1d(rc, rc, 1)
            self.skip = nn.Conv1d(rc, sc, 1)

        def forward(self, x):
            z = torch.tanh(self.filter(x)) * torch.sigmoid(self.gate(x))
            return x + self.res(z), self.skip(z)

    class WaveNet(nn.Module):
        def __init__(self, layers=5, stacks=2, rc=8, sc=16, classes=256):
            super().__init__()
            self.embed = nn.Embedding(classes, rc)
            self.start = CausalConv1d(rc, rc, 2)
            self.blocks = nn.ModuleList([ResidualBlock(rc, sc, 2 ** i) for _ in range(stacks) for i in range(layers)])
            self.out1 = nn.Conv1d(sc, sc, 1)
            self.out2 = nn.Conv1d(sc, classes, 1)

        def forward(self, q):
            x = self.embed(q).transpose(1, 2)
            x = self.start(x)
            skips = 0
            for b in self.blocks:
                x, s = b(x)
                skips = skips + s
            return self.out2(F.relu(self.out1(F.relu(skips))))

    torch.manual_seed(0)
    t = torch.linspace(0, 1, 120)
    audio = 0.8 * torch.sin(2 * np.pi * 5 * t) * torch.exp(-t)
    q = mu_law_encode(torch, audio).unsqueeze(0).repeat(2, 1)
    rec = mu_law_decode(torch, q)
    net = WaveNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for step in range(3):
        logits = net(q[:, :-1])
        loss = F.cross_entropy(logits, q[:, 1:])
        opt.zero_grad(); loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    x = net.embed(q[:1]).detach().requires_grad_()
    h = net.start(x.transpose(1, 2))
    skips = 0
    for b in net.blocks:
        h, s = b(h); skips = skips + s
    skips[0, :, 100].sum().backward()
    dep = (x.grad[0].abs().sum(1) > 0)
    net.eval()
    gen = q[:1, :20]
    with torch.no_grad():
        for i in range(8):
            logits = net(gen)[:, :, -1]
            p = F.softmax(logits / 0.9, dim=-1)
            nxt = torch.multinomial(p, num_samples=1)
            gen = torch.cat([gen, nxt], dim=1)
        many = torch.multinomial(F.softmax(net(gen)[0].T, -1), 4, replacement=True)
    return {"q": q, "rec": rec, "losses": losses, "dep": dep, "gen": gen, "many": many,
            "err": (rec[0] - audio).abs().max(), "g": net.blocks[3].filter.weight.grad}


def test_wavenet():
    ours, _ = run_both(wavenet, rtol=1e-4, atol=1e-5)
    dep = np.nonzero(ours["dep"])[0]
    # receptive field of two stacks of dilations 1..16 after the start conv: 2 * 31 + 1 steps back, never ahead
    assert dep.max() == 100 and dep.min() == 100 - 63
    assert ours["err"] < 0.02  # mu-law quantisation error at this amplitude
    assert 0 <= ours["q"].min() and ours["q"].max() <= 255
    assert ours["losses"][-1] < ours["losses"][0] and abs(ours["losses"][0] - np.log(256)) < 0.5
    assert ours["gen"].shape == (1, 28) and ours["many"].shape == (28, 4)


# ----------------------------------------------------------------------------------------------
# char-RNN (Karpathy): LSTM / GRU, truncated backpropagation through time, temperature sampling
# ----------------------------------------------------------------------------------------------

TEXT = "the quick brown fox jumps over the lazy dog. " * 8


def char_rnn(m, cell):
    torch, nn, F = m.torch, m.nn, m.F
    chars = sorted(set(TEXT))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in TEXT], dtype=torch.long)

    class CharRNN(nn.Module):
        def __init__(self, vocab, hidden=32, layers=2):
            super().__init__()
            self.encoder = nn.Embedding(vocab, hidden)
            self.rnn = getattr(nn, cell)(hidden, hidden, layers, dropout=0.0, batch_first=True)
            self.decoder = nn.Linear(hidden, vocab)
            self.hidden, self.layers = hidden, layers

        def forward(self, x, h):
            out, h = self.rnn(self.encoder(x), h)
            return self.decoder(out.reshape(-1, out.size(2))), h

        def init_hidden(self, bsz):
            w = next(self.parameters())
            if cell == "LSTM":
                return (w.new_zeros(self.layers, bsz, self.hidden), w.new_zeros(self.layers, bsz, self.hidden))
            return w.new_zeros(self.layers, bsz, self.hidden)

    def repackage(h):
        if isinstance(h, torch.Tensor):
            return h.detach()
        return tuple(repackage(v) for v in h)

    torch.manual_seed(0)
    V = len(chars)
    model = CharRNN(V)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    bsz, bptt = 4, 10
    nb = data.size(0) // bsz
    batched = data[: nb * bsz].view(bsz, -1)
    h = model.init_hidden(bsz)
    losses = []
    for i in range(0, min(batched.size(1) - 1, 60), bptt):
        seq = min(bptt, batched.size(1) - 1 - i)
        x, y = batched[:, i:i + seq], batched[:, i + 1:i + 1 + seq]
        h = repackage(h)
        model.zero_grad()
        out, h = model(x, h)
        loss = F.cross_entropy(out, y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        losses.append(loss.item())
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    leaf = all(v.grad_fn is None for v in (h if isinstance(h, tuple) else (h,)))
    model.eval()
    with torch.no_grad():
        h = model.init_hidden(1)
        inp = torch.tensor([[stoi['t']]])
        out_chars = []
        for T in [0.5, 1.0, 1.5]:
            for _ in range(8):
                logits, h = model(inp, h)
                word_weights = logits.squeeze().div(T).exp()
                idx = torch.multinomial(word_weights, 1)[0]
                inp.fill_(idx)
                out_chars.append(chars[idx])
    return {"losses": losses, "grads": grads, "text": "".join(out_chars), "leaf": leaf}


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_char_rnn(cell):
    ours, _ = run_both(char_rnn, cell, rtol=1e-4, atol=1e-5)
    assert len(ours["text"]) == 24 and set(ours["text"]) <= set(TEXT)
    assert ours["leaf"] is False  # the last chunk's state still has its history until detached
    assert ours["losses"][-1] < ours["losses"][0]
    total = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in ours["grads"].values()))
    assert total > 0


# ----------------------------------------------------------------------------------------------
# NADE (Larochelle and Murray, 2011): exact normalisation over every binary vector
# ----------------------------------------------------------------------------------------------


def nade(m):
    torch, nn, F = m.torch, m.nn, m.F

    class NADE(nn.Module):
        def __init__(self, D, H):
            super().__init__()
            self.D, self.H = D, H
            self.W = nn.Parameter(torch.zeros(H, D))
            self.c = nn.Parameter(torch.zeros(1, H))
            self.V = nn.Parameter(torch.zeros(D, H))
            self.b = nn.Parameter(torch.zeros(1, D))
            nn.init.kaiming_normal_(self.W)
            nn.init.xavier_uniform_(self.V)

        def forward(self, x):
            a = self.c.expand(x.shape[0], -1)
            p_hat = []
            for d in range(self.D):
                h = torch.sigmoid(a)
                p = torch.sigmoid(h @ self.V[d:d + 1, :].t() + self.b[:, d:d + 1])
                p_hat.append(p)
                a = a + x[:, d:d + 1] @ self.W[:, d:d + 1].t()
            return torch.cat(p_hat, 1)

        def sample(self, n):
            x = torch.zeros(n, self.D)
            a = self.c.expand(n, -1)
            for d in range(self.D):
                h = torch.sigmoid(a)
                p = torch.sigmoid(h @ self.V[d:d + 1, :].t() + self.b[:, d:d + 1])
                x[:, d:d + 1] = torch.bernoulli(p)
                a = a + x[:, d:d + 1] @ self.W[:, d:d + 1].t()
            return x

    torch.manual_seed(0)
    model = NADE(8, 16)
    x = torch.bernoulli(torch.full((10, 8), 0.3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ll = []
    for i in range(3):
        p = model(x)
        nll = F.binary_cross_entropy(p, x, reduction='none').sum(1).mean()
        opt.zero_grad(); nll.backward(); opt.step()
        ll.append(nll.detach())
    with torch.no_grad():
        s = model.sample(5)
    grid = torch.tensor([[int(b) for b in format(i, '08b')] for i in range(256)], dtype=torch.float32)
    with torch.no_grad():
        p = model(grid)
        logp = (grid * p.log() + (1 - grid) * (1 - p).log()).sum(1)
        bern = torch.distributions.Bernoulli(probs=p).log_prob(grid).sum(1)
    return {"ll": torch.stack(ll), "s": s, "Z": logp.exp().sum(), "bern": bern, "logp": logp, "gW": model.W.grad}


def test_nade():
    ours, _ = run_both(nade, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["Z"], 1.0, rtol=1e-5)  # the 256 probabilities sum to 1
    np.testing.assert_allclose(ours["bern"], ours["logp"], rtol=1e-5, atol=1e-5)
    assert set(np.unique(ours["s"])) <= {0.0, 1.0}
    assert ours["ll"][-1] < ours["ll"][0]


# ----------------------------------------------------------------------------------------------
# Decoding: temperature, top-k, nucleus (top-p), beam search pieces, many 256-way draws
# ----------------------------------------------------------------------------------------------


def decoding(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    out = {}
    logits = torch.randn(4, 12)
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    sorted_indices_to_remove = cumulative_probs > 0.7
    sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
    sorted_indices_to_remove[..., 0] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
    top_p = logits.clone()
    top_p[indices_to_remove] = -float('Inf')
    out["top_p"] = top_p
    out["top_p_draws"] = torch.multinomial(F.softmax(top_p, -1), 6, replacement=True)
    v, _ = torch.topk(logits, 3)
    top_k = logits.clone()
    top_k[top_k < v[:, [-1]]] = -float('Inf')
    out["top_k_draws"] = torch.multinomial(F.softmax(top_k / 0.8, -1), 2)
    V, beam = 6, 3
    scores = torch.log_softmax(torch.randn(beam, V), -1) + torch.tensor([[0.0], [-1.0], [-2.0]])
    top, idx = scores.view(-1).topk(beam)
    out["beam"] = (top, torch.div(idx, V, rounding_mode='floor'), idx % V)
    wide = F.softmax(torch.randn(600, 256) * 3, -1)
    out["wide"] = torch.multinomial(wide, 16, replacement=True)
    out["cat"] = torch.distributions.Categorical(logits=torch.randn(300, 256)).sample((8,))
    return out


def test_decoding():
    ours, _ = run_both(decoding, rtol=1e-6, atol=1e-7)
    top_p, draws = ours["top_p"], ours["top_p_draws"]
    assert np.all(np.isfinite(np.take_along_axis(top_p, draws, 1)))  # never a removed token
    assert np.all(np.isfinite(top_p).sum(1) >= 1)
    k_draws = ours["top_k_draws"]
    assert np.all(k_draws[:, 0] != k_draws[:, 1])  # without replacement
    assert ours["wide"].min() >= 0 and ours["wide"].max() <= 255 and ours["cat"].shape == (8, 300)


def fast_wavenet(m):
    """Fast WaveNet generation (Paine et al., 2016): each dilated layer keeps a queue of its past inputs, so a step
    costs two matrix products per layer; the incremental outputs must be the full causal convolution's."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    C, L = 4, 12
    dil = [1, 2, 4]
    convs = nn.ModuleList([nn.Conv1d(C, C, 2, dilation=d) for d in dil])
    x = torch.randn(1, C, L)
    h = x
    for c, d in zip(convs, dil):
        h = torch.tanh(c(F.pad(h, (d, 0)))) + h
    full = h
    queues = [torch.zeros(1, C, d) for d in dil]
    outs = []
    with torch.no_grad():
        for t in range(L):
            cur = x[:, :, t]
            for i, (c, d) in enumerate(zip(convs, dil)):
                prev = queues[i][:, :, 0]
                queues[i] = torch.cat([queues[i][:, :, 1:], cur.unsqueeze(-1)], dim=2)
                y = F.linear(prev, c.weight[:, :, 0]) + F.linear(cur, c.weight[:, :, 1], c.bias)
                cur = torch.tanh(y) + cur
            outs.append(cur)
    return {"full": full, "incremental": torch.stack(outs, -1)}


def test_fast_wavenet():
    ours, _ = run_both(fast_wavenet, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["incremental"], ours["full"], rtol=1e-5, atol=2e-6)
