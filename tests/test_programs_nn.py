"""Tutorial-style programs, written as their PyTorch originals with only the imports changed
(``autograd`` for ``torch``, ``nn`` for ``torch.nn``): Karpathy's makemore bigram and MLP
language models (``C[X]`` embeddings), an Embedding + Sequential model with an optimizer,
activation statistics collected with forward hooks, and a small CTC recogniser. Each
asserts a result; where PyTorch is installed the same program is run in it too and the
numbers must agree."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
import optim

WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn",
         "abigail", "emily", "elizabeth", "mila", "ella", "avery", "sofia", "camila", "aria", "scarlett",
         "victoria", "madison", "luna", "grace", "chloe", "penelope", "layla", "riley", "zoey", "nora"]
CHARS = sorted(set("".join(WORDS)))
STOI = {s: i + 1 for i, s in enumerate(CHARS)}
STOI["."] = 0
VOCAB = len(STOI)


def bigrams():
    xs, ys = [], []
    for w in WORDS:
        chs = ["."] + list(w) + ["."]
        for ch1, ch2 in zip(chs, chs[1:]):
            xs.append(STOI[ch1])
            ys.append(STOI[ch2])
    return xs, ys


def contexts(block_size=3):
    X, Y = [], []
    for w in WORDS:
        context = [0] * block_size
        for ch in w + ".":
            ix = STOI[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    return X, Y


def train_bigram(torch, F, W_init, steps=30):
    """makemore part 1: one-hot inputs, a single linear layer, softmax by hand."""
    xs, ys = bigrams()
    xs, ys = torch.tensor(xs), torch.tensor(ys)
    num = xs.numel()
    W = torch.tensor(W_init, requires_grad=True)
    losses = []
    for _ in range(steps):
        xenc = F.one_hot(xs, num_classes=VOCAB).double()
        logits = xenc @ W
        counts = logits.exp()
        probs = counts / counts.sum(1, keepdims=True)
        loss = -probs[torch.arange(num), ys].log().mean() + 0.01 * (W**2).mean()
        W.grad = None
        loss.backward()
        W.data += -10 * W.grad
        losses.append(loss.item())
    return losses


def test_makemore_bigram_network_learns_towards_the_counting_model():
    W_init = np.random.default_rng(0).standard_normal((VOCAB, VOCAB))
    losses = train_bigram(autograd, F, W_init, steps=200)
    xs, ys = bigrams()
    counts = np.ones((VOCAB, VOCAB))  # the counting model, smoothed
    np.add.at(counts, (xs, ys), 1)
    probs = counts / counts.sum(1, keepdims=True)
    counting_nll = -np.log(probs[xs, ys]).mean()
    assert losses[-1] < losses[0] - 1.0 and losses[-1] < counting_nll + 0.3


@pytest.mark.torch
def test_makemore_bigram_network_matches_pytorch_step_by_step():
    import torch
    import torch.nn.functional as torch_F

    W_init = np.random.default_rng(0).standard_normal((VOCAB, VOCAB))
    np.testing.assert_allclose(train_bigram(autograd, F, W_init), train_bigram(torch, torch_F, W_init), rtol=1e-12)


def train_mlp(torch, F, parameters_init, steps, batch_indices):
    """makemore part 2 (Bengio et al. 2003): C = randn((27, 2)); emb = C[X]; a tanh layer."""
    X, Y = contexts()
    X, Y = torch.tensor(X), torch.tensor(Y)
    C, W1, b1, W2, b2 = [torch.tensor(p, requires_grad=True) for p in parameters_init]
    parameters = [C, W1, b1, W2, b2]
    losses = []
    for i in range(steps):
        ix = torch.tensor(batch_indices[i])
        emb = C[X[ix]]  # (32, 3, 2)
        h = torch.tanh(emb.view(-1, 6) @ W1 + b1)
        logits = h @ W2 + b2
        loss = F.cross_entropy(logits, Y[ix])
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < steps // 2 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
        losses.append(loss.item())
    emb = C[X]
    full = F.cross_entropy(torch.tanh(emb.view(-1, 6) @ W1 + b1) @ W2 + b2, Y).item()
    return losses, full


def mlp_setup(steps):
    rng = np.random.default_rng(1)
    shapes = [(VOCAB, 2), (6, 100), (100,), (100, VOCAB), (VOCAB,)]
    parameters = [rng.standard_normal(s) for s in shapes]
    parameters[3] *= 0.1  # small output weights: a sensible first loss
    examples = len(contexts()[0])
    return parameters, rng.integers(0, examples, (steps, 32))


def test_makemore_mlp_with_embedding_lookup_learns():
    parameters, batches = mlp_setup(400)
    initial = train_mlp(autograd, F, parameters, 0, batches)[1]
    losses, final = train_mlp(autograd, F, parameters, 400, batches)
    assert initial > 3.0 and final < 2.4 and final < initial - 0.9


@pytest.mark.torch
def test_makemore_mlp_matches_pytorch_step_by_step():
    import torch
    import torch.nn.functional as torch_F

    parameters, batches = mlp_setup(20)
    ours, theirs = train_mlp(autograd, F, parameters, 20, batches), train_mlp(torch, torch_F, parameters, 20, batches)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-10)
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-10)


def test_embedding_sequential_model_with_an_optimizer_and_activation_hooks():
    """makemore part 3's layer-by-layer model, with nn layers: the saturation of each tanh
    layer is read by forward hooks (the lecture's activation histograms)."""
    autograd.manual_seed(0)
    X, Y = contexts()
    X, Y = autograd.tensor(X), autograd.tensor(Y)
    model = nn.Sequential(nn.Embedding(VOCAB, 10), nn.Flatten(), nn.Linear(30, 64), nn.Tanh(),
                          nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, VOCAB))
    saturation = {}

    def record(module, args, output):
        saturation[module] = (output.abs() > 0.97).float().mean().item()

    handles = [m.register_forward_hook(record) for m in model if isinstance(m, nn.Tanh)]
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    first = None
    for _ in range(150):
        loss = F.cross_entropy(model(X), Y)
        first = loss.item() if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert len(saturation) == 2 and all(0 <= s <= 1 for s in saturation.values())
    for handle in handles:
        handle.remove()
    saturation.clear()
    final = F.cross_entropy(model(X), Y).item()
    assert not saturation and final < first - 1.0
    assert model[0].weight.grad is not None and model[0].weight.grad.shape == (VOCAB, 10)


def test_a_small_ctc_recogniser_learns_to_spell_its_targets():
    """A per-frame linear classifier trained with CTC: each of 3 sequences of 8 frames must
    read as its target label sequence once repeats and blanks are dropped (greedy decoding)."""
    autograd.manual_seed(0)
    frames, batch, features, classes = 8, 3, 6, 4
    inputs = autograd.randn(frames, batch, features)
    targets = autograd.tensor([[1, 2, 3], [3, 3, 0], [2, 1, 0]])
    target_lengths = autograd.tensor([3, 2, 2])
    input_lengths = autograd.tensor([8, 8, 6])
    model = nn.Sequential(nn.Linear(features, 32), nn.ReLU(), nn.Linear(32, classes))
    criterion = nn.CTCLoss(blank=0)
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        loss = criterion(model(inputs).log_softmax(2), targets, input_lengths, target_lengths)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.1
    best = model(inputs).argmax(2).numpy()
    for n in range(batch):
        path = best[:int(input_lengths[n]), n]
        decoded = [c for i, c in enumerate(path) if c != 0 and (i == 0 or path[i - 1] != c)]
        assert decoded == targets.numpy()[n, :int(target_lengths[n])].tolist()
