# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is a function of
the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``, ``data``), run on chainrule and, where
PyTorch is installed, on PyTorch, comparing the numbers. Karpathy's makemore lectures, parts 1 to 3: bigram counts,
the neural bigram, the MLP, batch normalisation by hand, and the torchified layers."""

import random

import numpy as np

from .makemore_common import build_dataset
from .pytorch_programs import WORDS, run_both

# ----------------------------------------------------------------------------------------------
# makemore: bigram counts, the neural bigram, the MLP, batch normalisation by hand
# ----------------------------------------------------------------------------------------------



def makemore_bigram_counts(m, words):
    torch = m.torch
    N = torch.zeros((27, 27), dtype=torch.int32)
    chars = sorted(list(set(''.join(words))))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi['.'] = 0
    itos = {i: s for s, i in stoi.items()}
    for w in words:
        chs = ['.'] + list(w) + ['.']
        for ch1, ch2 in zip(chs, chs[1:]):
            ix1 = stoi[ch1]
            ix2 = stoi[ch2]
            N[ix1, ix2] += 1
    p = N[0].float()
    p = p / p.sum()
    g = torch.Generator().manual_seed(2147483647)
    first = torch.multinomial(p, num_samples=1, replacement=True, generator=g).item()
    P = (N + 1).float()
    P /= P.sum(1, keepdim=True)
    names = []
    for i in range(5):
        out = []
        ix = 0
        while True:
            p = P[ix]
            ix = torch.multinomial(p, num_samples=1, replacement=True, generator=g).item()
            out.append(itos[ix])
            if ix == 0:
                break
        names.append(''.join(out))
    log_likelihood = 0.0
    n = 0
    for w in words:
        chs = ['.'] + list(w) + ['.']
        for ch1, ch2 in zip(chs, chs[1:]):
            ix1 = stoi[ch1]
            ix2 = stoi[ch2]
            prob = P[ix1, ix2]
            logprob = torch.log(prob)
            log_likelihood += logprob
            n += 1
    nll = -log_likelihood
    return {"N": N, "N.dtype": str(N.dtype).split(".")[-1], "row_sums": P.sum(1), "nll": nll / n,
            "first": itos[first] in stoi, "names": all(name.endswith(".") for name in names), "n": n}


def test_makemore_bigram_counts():
    ours, _ = run_both(makemore_bigram_counts, WORDS)
    assert ours["N.dtype"] == "int32" and ours["N"].sum() == ours["n"]
    np.testing.assert_allclose(ours["row_sums"], 1, rtol=1e-6)
    assert 2.0 < ours["nll"] < 3.0 and ours["first"] and ours["names"]


def makemore_neural_bigram(m, words, W_init):
    torch, F = m.torch, m.F
    chars = sorted(list(set(''.join(words))))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi['.'] = 0
    xs, ys = [], []
    for w in words:
        chs = ['.'] + list(w) + ['.']
        for ch1, ch2 in zip(chs, chs[1:]):
            xs.append(stoi[ch1])
            ys.append(stoi[ch2])
    xs = torch.tensor(xs)
    ys = torch.tensor(ys)
    num = xs.nelement()
    W = torch.tensor(W_init, requires_grad=True)
    losses = []
    for k in range(40):
        xenc = F.one_hot(xs, num_classes=27).float()
        logits = xenc @ W
        counts = logits.exp()
        probs = counts / counts.sum(1, keepdims=True)
        loss = -probs[torch.arange(num), ys].log().mean() + 0.01 * (W**2).mean()
        losses.append(loss.item())
        W.grad = None
        loss.backward()
        W.data += -50 * W.grad
    g = torch.Generator().manual_seed(2147483647)
    ix = 0
    out = []
    for _ in range(30):
        xenc = F.one_hot(torch.tensor([ix]), num_classes=27).float()
        logits = xenc @ W
        counts = logits.exp()
        p = counts / counts.sum(1, keepdims=True)
        ix = torch.multinomial(p, num_samples=1, replacement=True, generator=g).item()
        out.append(ix)
        if ix == 0:
            break
    return {"losses": losses, "sampled": all(0 <= i < 27 for i in out)}


def test_makemore_neural_bigram():
    W = np.random.default_rng(2147483647).standard_normal((27, 27)).astype(np.float32)
    ours, _ = run_both(makemore_neural_bigram, WORDS, W, rtol=1e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0] - 0.5 and ours["sampled"]


def makemore_mlp(m, words):
    torch, F = m.torch, m.F
    random.seed(42)
    words = list(words)
    random.shuffle(words)
    n1 = int(0.8 * len(words))
    Xtr, Ytr = build_dataset(m, words[:n1])
    Xdev, Ydev = build_dataset(m, words[n1:])
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((27, 10), generator=g)
    W1 = torch.randn((30, 200), generator=g)
    b1 = torch.randn(200, generator=g)
    W2 = torch.randn((200, 27), generator=g)
    b2 = torch.randn(27, generator=g)
    parameters = [C, W1, b1, W2, b2]
    count = sum(p.nelement() for p in parameters)
    for p in parameters:
        p.requires_grad = True
    lri, lossi, stepi = [], [], []
    for i in range(300):
        ix = torch.randint(0, Xtr.shape[0], (32,))
        emb = C[Xtr[ix]]  # (32, 3, 10)
        h = torch.tanh(emb.view(-1, 30) @ W1 + b1)  # (32, 200)
        logits = h @ W2 + b2  # (32, 27)
        loss = F.cross_entropy(logits, Ytr[ix])
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < 200 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
        stepi.append(i)
        lossi.append(loss.log10().item())
    emb = C[Xtr]
    h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
    logits = h @ W2 + b2
    train_loss = F.cross_entropy(logits, Ytr)
    emb = C[Xdev]
    h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
    dev_loss = F.cross_entropy(h @ W2 + b2, Ydev)
    return {"count": count, "train": train_loss.item(), "dev": dev_loss.item(), "lossi": lossi}


def test_makemore_mlp():
    ours, theirs = run_both(makemore_mlp, WORDS, compare=False)
    assert ours["count"] == 27 * 10 + 30 * 200 + 200 + 200 * 27 + 27
    assert ours["train"] < 2.6 and np.mean(ours["lossi"][-20:]) < np.mean(ours["lossi"][:20])


def makemore_batchnorm(m, words):
    """makemore part 3: Kaiming-scaled init, batch normalisation by hand, running statistics."""
    torch, F = m.torch, m.F
    Xtr, Ytr = build_dataset(m, words)
    n_embd, n_hidden, block_size, vocab_size = 10, 64, 3, 27
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((vocab_size, n_embd), generator=g)
    W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (5/3)/((n_embd * block_size)**0.5)
    W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.01
    b2 = torch.randn(vocab_size, generator=g) * 0
    bngain = torch.ones((1, n_hidden))
    bnbias = torch.zeros((1, n_hidden))
    bnmean_running = torch.zeros((1, n_hidden))
    bnstd_running = torch.ones((1, n_hidden))
    parameters = [C, W1, W2, b2, bngain, bnbias]
    for p in parameters:
        p.requires_grad = True
    lossi = []
    for i in range(200):
        ix = torch.randint(0, Xtr.shape[0], (32,), generator=g)
        Xb, Yb = Xtr[ix], Ytr[ix]
        emb = C[Xb]
        embcat = emb.view(emb.shape[0], -1)
        hpreact = embcat @ W1
        bnmeani = hpreact.mean(0, keepdim=True)
        bnstdi = hpreact.std(0, keepdim=True)
        hpreact = bngain * (hpreact - bnmeani) / bnstdi + bnbias
        with torch.no_grad():
            bnmean_running = 0.999 * bnmean_running + 0.001 * bnmeani
            bnstd_running = 0.999 * bnstd_running + 0.001 * bnstdi
        h = torch.tanh(hpreact)
        logits = h @ W2 + b2
        loss = F.cross_entropy(logits, Yb)
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < 150 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
        lossi.append(loss.item())

    @torch.no_grad()
    def split_loss():
        emb = C[Xtr]
        embcat = emb.view(emb.shape[0], -1)
        hpreact = embcat @ W1
        hpreact = bngain * (hpreact - bnmean_running) / bnstd_running + bnbias
        h = torch.tanh(hpreact)
        logits = h @ W2 + b2
        return F.cross_entropy(logits, Ytr)

    loss = split_loss()
    with torch.no_grad():
        emb = C[Xtr]
        embcat = emb.view(emb.shape[0], -1)
        hpreact = embcat @ W1
        bnmean = hpreact.mean(0, keepdim=True)
        bnstd = hpreact.std(0, keepdim=True)
    return {"loss": loss.item(), "requires_grad": loss.requires_grad, "lossi": lossi,
            "running_mean_moved": (bnmean_running - bnmean).abs().mean().item() < bnmean.abs().mean().item(),
            "bnstd_positive": bool((bnstd > 0).all())}


def test_makemore_batchnorm():
    ours, _ = run_both(makemore_batchnorm, WORDS, compare=False)
    assert ours["requires_grad"] is False and ours["bnstd_positive"]
    assert np.mean(ours["lossi"][-20:]) < np.mean(ours["lossi"][:20]) - 0.5


def makemore_layers(m, words):
    """makemore part 3, 'PyTorch-ified': hand-written Linear / BatchNorm1d / Tanh layer classes."""
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(2147483647)

    class Linear:
        def __init__(self, fan_in, fan_out, bias=True):
            self.weight = torch.randn((fan_in, fan_out), generator=g) / fan_in**0.5
            self.bias = torch.zeros(fan_out) if bias else None

        def __call__(self, x):
            self.out = x @ self.weight
            if self.bias is not None:
                self.out += self.bias
            return self.out

        def parameters(self):
            return [self.weight] + ([] if self.bias is None else [self.bias])

    class BatchNorm1d:
        def __init__(self, dim, eps=1e-5, momentum=0.1):
            self.eps = eps
            self.momentum = momentum
            self.training = True
            self.gamma = torch.ones(dim)
            self.beta = torch.zeros(dim)
            self.running_mean = torch.zeros(dim)
            self.running_var = torch.ones(dim)

        def __call__(self, x):
            if self.training:
                xmean = x.mean(0, keepdim=True)
                xvar = x.var(0, keepdim=True)
            else:
                xmean = self.running_mean
                xvar = self.running_var
            xhat = (x - xmean) / torch.sqrt(xvar + self.eps)
            self.out = self.gamma * xhat + self.beta
            if self.training:
                with torch.no_grad():
                    self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean
                    self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar
            return self.out

        def parameters(self):
            return [self.gamma, self.beta]

    class Tanh:
        def __call__(self, x):
            self.out = torch.tanh(x)
            return self.out

        def parameters(self):
            return []

    n_embd, n_hidden, vocab_size, block_size = 10, 32, 27, 3
    C = torch.randn((vocab_size, n_embd), generator=g)
    layers = [
        Linear(n_embd * block_size, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
        Linear(n_hidden, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
        Linear(n_hidden, vocab_size, bias=False), BatchNorm1d(vocab_size),
    ]
    with torch.no_grad():
        layers[-1].gamma *= 0.1
        for layer in layers[:-1]:
            if isinstance(layer, Linear):
                layer.weight *= 5/3
    parameters = [C] + [p for layer in layers for p in layer.parameters()]
    for p in parameters:
        p.requires_grad = True
    Xtr, Ytr = build_dataset(m, words)
    lossi, ud = [], []
    for i in range(100):
        ix = torch.randint(0, Xtr.shape[0], (32,), generator=g)
        Xb, Yb = Xtr[ix], Ytr[ix]
        emb = C[Xb]
        x = emb.view(emb.shape[0], -1)
        for layer in layers:
            x = layer(x)
        loss = F.cross_entropy(x, Yb)
        for layer in layers:
            layer.out.retain_grad()
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1
        for p in parameters:
            p.data += -lr * p.grad
        lossi.append(loss.item())
        with torch.no_grad():
            ud.append([((lr*p.grad).std() / p.data.std()).item() for p in parameters])
    saturated = [(layer.out.abs() > 0.97).float().mean().item() for layer in layers if isinstance(layer, Tanh)]
    grads = [layer.out.grad.std().item() for layer in layers if isinstance(layer, Tanh)]
    for layer in layers:
        layer.training = False
    return {"lossi": lossi, "saturated": saturated, "grads": grads, "ud": ud[-1],
            "count": sum(p.nelement() for p in parameters)}


def test_makemore_layers():
    ours, _ = run_both(makemore_layers, WORDS, compare=False)
    assert np.mean(ours["lossi"][-10:]) < np.mean(ours["lossi"][:10])
    assert all(s < 0.5 for s in ours["saturated"]) and all(gr > 0 for gr in ours["grads"])
    assert ours["count"] == 270 + 300 * 32 // 10 + 32 * 2 + 32 * 32 + 64 + 32 * 27 + 54
