# ruff: noqa: B007, B023, E741, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs (see tests/pytorch_programs.py): the tensor idioms of training code. Masked
assignment, ``scatter_``/``index_add_``, ``torch.where`` with broadcasting, ``gather`` to pick the
label's log-probability, einsum attention with a causal ``tril`` mask, a ``no_grad`` evaluation loop
with ``argmax``/``topk`` accuracy, lists stacked in loops, ``unfold`` windows, ``cumsum`` masks,
``repeat_interleave``, ``bucketize``, ``one_hot`` and seeded ``Categorical`` sampling."""

import numpy as np

from .pytorch_programs import run_both


def masked_training(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.standard_normal((6, 5)), dtype=torch.float32)
    labels = torch.tensor([0, 2, 1, 2, 0, 1])
    w = torch.zeros(5, 3, requires_grad=True)
    opt = optim.SGD([w], lr=0.5)
    losses = []
    for _ in range(5):
        xm = x.clone()
        xm[xm.abs() > 1.5] = 0  # clip outliers by masked assignment
        logits = xm @ w
        logp = logits.log_softmax(-1)
        picked = logp.gather(1, labels.unsqueeze(1)).squeeze(1)  # log p(label)
        loss = -picked.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    # per-class sums and counts
    counts = torch.zeros(3).scatter_add_(0, labels, torch.ones(6))
    sums = torch.zeros(3, 5).index_add_(0, labels, x)
    means = sums / counts.unsqueeze(1)
    onehot = torch.zeros(6, 3).scatter_(1, labels.unsqueeze(1), 1.0)
    # broadcasting where: keep positive entries, else a per-column fallback
    fallback = torch.tensor([10.0, 20.0, 30.0, 40.0, 50.0])
    filled = torch.where(x > 0, x, fallback)
    return losses, w, counts, means, onehot, filled, F.one_hot(labels, num_classes=4)


def test_masked_assignment_gather_scatter_and_where():
    (losses, w, counts, means, onehot, filled, oh), _ = run_both(masked_training, rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0] and abs(losses[0] - np.log(3)) < 1e-6
    np.testing.assert_array_equal(counts, [2, 2, 2])
    np.testing.assert_array_equal(onehot, oh[:, :3])
    assert oh.dtype == np.int64 and (filled > 0).all()


def causal_attention(m):
    torch, nn, F = m.torch, m.nn, m.F
    B, T, H, D = 2, 5, 2, 4
    g = torch.Generator().manual_seed(0)
    x = torch.tensor(np.random.default_rng(2).standard_normal((B, T, H * D)), dtype=torch.float32,
                     requires_grad=True)
    q, k, v = x, x * 0.5, x.flip(1)
    q, k, v = (t.view(B, T, H, D) for t in (q, k, v))
    att = torch.einsum("bthd,bshd->bhts", q, k) / D ** 0.5
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    att = att.masked_fill(~mask, float("-inf")).softmax(-1)
    y = torch.einsum("bhts,bshd->bthd", att, v).reshape(B, T, H * D)
    y.pow(2).sum().backward()
    # padding by lengths, a cumsum mask
    lengths = torch.tensor([3, 5])
    pad = torch.arange(T).expand(B, T) >= lengths.unsqueeze(1)
    tokens = torch.ones(B, T, dtype=torch.long).masked_fill(pad, 0)
    positions = tokens.cumsum(1) * tokens
    return att, y, x.grad, pad, positions


def test_einsum_attention_with_a_causal_mask():
    (att, y, g, pad, positions), _ = run_both(causal_attention, rtol=1e-5, atol=1e-5)
    assert (np.triu(att[0, 0], 1) == 0).all()
    np.testing.assert_allclose(att.sum(-1), 1, rtol=1e-6)
    np.testing.assert_array_equal(positions, [[1, 2, 3, 0, 0], [1, 2, 3, 4, 5]])


def evaluation_loop(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    model = nn.Linear(4, 5)
    with torch.no_grad():
        model.weight.copy_(torch.linspace(-1, 1, 20).reshape(5, 4))
        model.bias.copy_(torch.linspace(0, 0.4, 5))
    rng = np.random.default_rng(3)
    X = torch.tensor(rng.standard_normal((20, 4)), dtype=torch.float32)
    Y = torch.tensor(rng.integers(0, 5, 20))
    ds = m.data.TensorDataset(X, Y)
    loader = m.data.DataLoader(ds, batch_size=6)
    model.eval()
    correct = top3 = total = 0
    all_preds, all_probs, losses = [], [], []
    with torch.no_grad():
        for xb, yb in loader:
            out = model(xb)
            losses.append(F.cross_entropy(out, yb, reduction="sum").item())
            pred = out.argmax(dim=1)
            correct += (pred == yb).sum().item()
            _, idx = out.topk(3, dim=1, largest=True, sorted=True)
            top3 += (idx == yb.view(-1, 1)).any(dim=1).sum().item()
            total += yb.size(0)
            all_preds.append(pred)
            all_probs.append(out.softmax(1))
    preds = torch.cat(all_preds)
    probs = torch.stack([p.max(1).values.mean() for p in all_probs])
    return correct / total, top3 / total, sum(losses) / total, preds, probs, out.requires_grad


def test_no_grad_evaluation_loop_with_topk_accuracy():
    (acc, top3, loss, preds, probs, rg), _ = run_both(evaluation_loop)
    assert 0 <= acc <= top3 <= 1 and preds.shape == (20,) and probs.shape == (4,) and rg is False


def sequence_tools(m):
    torch, F = m.torch, m.F
    signal = torch.arange(10, dtype=torch.float32)
    windows = signal.unfold(0, 4, 2)  # length-4 windows, stride 2
    moving_avg = windows.mean(-1)
    img = torch.arange(2 * 4 * 4, dtype=torch.float32).reshape(1, 2, 4, 4)
    patches = img.unfold(2, 2, 2).unfold(3, 2, 2)  # ViT-style 2x2 patches
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(1, 4, 2 * 2 * 2)
    cols = F.unfold(img, kernel_size=2, stride=2)
    counts = torch.tensor([2, 0, 3])
    ids = torch.repeat_interleave(torch.arange(3), counts)
    reps = torch.tensor([[1, 2], [3, 4]]).repeat_interleave(2, dim=0)
    boundaries = torch.tensor([0.0, 1.0, 2.5])
    vals = torch.tensor([-1.0, 0.0, 0.5, 1.0, 3.0])
    buckets = torch.bucketize(vals, boundaries), torch.bucketize(vals, boundaries, right=True)
    return windows, moving_avg, patches, cols, ids, reps, buckets


def test_unfold_repeat_interleave_and_bucketize():
    (win, avg, patches, cols, ids, reps, (b, br)), _ = run_both(sequence_tools)
    assert win.shape == (4, 4) and avg.tolist() == [1.5, 3.5, 5.5, 7.5]
    np.testing.assert_array_equal(patches[0], cols[0].T)
    assert ids.tolist() == [0, 0, 2, 2, 2] and reps.tolist() == [[1, 2], [1, 2], [3, 4], [3, 4]]
    assert b.tolist() == [0, 0, 1, 1, 3] and br.tolist() == [0, 1, 1, 2, 3]


def categorical_policy(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Categorical = torch.distributions.Categorical
    logits = torch.zeros(4, requires_grad=True)
    opt = optim.Adam([logits], lr=0.1)
    reward = torch.tensor([0.0, 0.0, 1.0, 0.0])
    g = torch.Generator().manual_seed(0)
    for step in range(30):
        dist = Categorical(logits=logits)
        a = torch.multinomial(dist.probs.detach(), 8, replacement=True, generator=g)
        loss = -(dist.log_prob(a) * reward[a]).mean() - 0.01 * dist.entropy()
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.manual_seed(1)
    samples = Categorical(probs=torch.tensor([0.1, 0.2, 0.7])).sample((1000,))
    freq = torch.bincount(samples, minlength=3).float() / 1000
    return F.softmax(logits, 0), freq, samples.shape


def test_categorical_policy_with_seeded_sampling():
    (probs, freq, shape), _ = run_both(categorical_policy, compare=False)
    assert probs.argmax() == 2 and probs[2] > 0.5
    assert tuple(shape) == (1000,) and abs(freq[2] - 0.7) < 0.06


def in_graph_writes(m):
    torch = m.torch
    x = torch.linspace(-2, 2, 12).reshape(3, 4).requires_grad_()
    h = x * 3
    h[h < -3] = 0  # masked write into a non-leaf: the gradient there is cut
    h[:, 0] = h[:, 0] * 2  # a column rewritten from itself
    rows, cols = torch.where(h > 2)
    idx = torch.tensor([0, 2, 0])
    gathered = h.index_select(0, idx)  # duplicated rows: their gradients add
    picked = h[rows, cols]
    buf = torch.zeros(3, 4)
    buf.index_put_((torch.tensor([0, 0, 1]), torch.tensor([1, 1, 2])), torch.tensor([1.0, 2.0, 3.0]),
                   accumulate=True)
    red = torch.zeros(3).scatter_reduce(0, torch.tensor([0, 0, 2, 2]), torch.tensor([1.0, 5.0, 2.0, 3.0]),
                                        reduce="amax", include_self=False)
    loss = gathered.sum() + picked.pow(2).sum() + (h * buf).sum()
    loss.backward()
    nz = (h > 0).nonzero(as_tuple=True)
    return h, x.grad, rows, cols, buf, red, nz, x.grad.nonzero()


def test_masked_writes_inside_the_graph():
    (h, g, rows, cols, buf, red, nz, nzi), _ = run_both(in_graph_writes)
    assert (h[h.shape[0] - 3] != 0).any() and buf[0, 1] == 3.0 and buf[1, 2] == 3.0
    assert red.tolist() == [5.0, 0.0, 3.0]
    assert (g[0, :2] == 0).all()  # x*3 < -3 there: masked to 0, so no gradient


def named_tuple_results(m):
    torch = m.torch
    x = torch.tensor([[1.0, 3.0, 3.0], [2.0, 2.0, 1.0]])
    return x.topk(2, dim=1), x.max(1), x.sort(dim=1, descending=True, stable=True), x.cummax(1)


def test_a_program_may_return_named_tuples():
    # the harness used to rebuild a (values, indices) named tuple from one generator and fail
    (topk, mx, srt, cm), _ = run_both(named_tuple_results)
    assert topk.values.tolist() == [[3.0, 3.0], [2.0, 2.0]] and mx.indices.tolist() == [1, 0]
    assert srt.indices.tolist() == [[1, 2, 0], [0, 1, 2]] and cm.indices.tolist() == [[0, 1, 2], [0, 1, 1]]
