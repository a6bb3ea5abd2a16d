# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is
a function of the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``), run on
chainrule and, where PyTorch is installed, on PyTorch, comparing the numbers.

Common training patterns: a CIFAR-style ResNet (BasicBlock, BatchNorm, ``out += shortcut``) with
SGD(nesterov) and MultiStepLR, knowledge distillation (``F.kl_div(..., reduction='batchmean')`` at a
temperature), SimCLR's NT-Xent loss written two ways, a small U-Net (ConvTranspose2d, skips by
``torch.cat``), a char-RNN over ``pack_padded_sequence``, magnitude pruning with ``nn.utils.prune``
then fine-tuning, and ``torch.gradient``, ``torch.special`` and the torch-level ``embedding``/
``layer_norm``/``dropout`` inside a model."""

import numpy as np

from .pytorch_programs import OURS, load, quickstart_data, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A CIFAR-style ResNet (kuangliu/pytorch-cifar's BasicBlock) with SGD(nesterov) and MultiStepLR
# ----------------------------------------------------------------------------------------------


def resnet(m, weights, steps=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inp, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(inp, planes, 3, stride=stride, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.shortcut = nn.Sequential()
            if stride != 1 or inp != planes:
                self.shortcut = nn.Sequential(
                    nn.Conv2d(inp, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
                )

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            out += self.shortcut(x)
            return F.relu(out)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(4)
            self.layer1 = BasicBlock(4, 4)
            self.layer2 = BasicBlock(4, 8, stride=2)
            self.linear = nn.Linear(8, 4)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.layer2(self.layer1(out))
            out = F.adaptive_avg_pool2d(out, (1, 1))
            return self.linear(torch.flatten(out, 1))

    net = Net()
    if weights is None:
        return net
    load(m, net, weights)
    opt = optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.1)
    X, y = quickstart_data(64)
    X, y = torch.tensor(X), torch.tensor(y)
    crit = nn.CrossEntropyLoss()
    losses, lrs = [], []
    for epoch in range(steps):
        net.train()
        for i in range(0, 64, 32):
            opt.zero_grad()
            loss = crit(net(X[i : i + 32]), y[i : i + 32])
            loss.backward()
            opt.step()
            losses.append(loss.item())
        lrs.append(sched.get_last_lr()[0])
        sched.step()
    net.eval()
    with torch.no_grad():
        acc = (net(X).argmax(1) == y).float().mean()
    return losses, lrs, acc, net.layer2.shortcut[1].running_var, net.layer1.bn2.num_batches_tracked


def test_resnet_block_nesterov_multisteplr():
    weights = weights_of(lambda m: resnet(m, None))
    (losses, lrs, acc, running_var, tracked), _ = run_both(resnet, weights, rtol=1e-3, atol=1e-4)
    assert losses[-1] < losses[0] - 0.5  # 1.48 -> 0.83 on PyTorch
    np.testing.assert_allclose(lrs, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    assert acc > 0.5 and running_var.shape == (8,) and int(tracked) == 12


# ----------------------------------------------------------------------------------------------
# Knowledge distillation (Hinton et al.): a temperature-softened KL term plus cross-entropy
# ----------------------------------------------------------------------------------------------


def distill(m, tw, sw, steps=20, T=4.0, alpha=0.7):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    teacher = nn.Sequential(nn.Linear(10, 32), nn.ReLU(), nn.Linear(32, 5))
    student = nn.Sequential(nn.Linear(10, 8), nn.ReLU(), nn.Linear(8, 5))
    if tw is None:
        return teacher
    if sw is None:
        return student
    load(m, teacher, tw)
    load(m, student, sw)
    g = np.random.default_rng(0)
    x = torch.tensor(g.standard_normal((48, 10)).astype(np.float32))
    y = torch.tensor(g.integers(0, 5, 48))
    opt = optim.Adam(student.parameters(), lr=1e-2)
    teacher.eval()
    losses = []
    for _ in range(steps):
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = student(x)
        soft = (
            F.kl_div(F.log_softmax(s_logits / T, dim=1), F.softmax(t_logits / T, dim=1), reduction="batchmean") * T * T
        )
        hard = F.cross_entropy(s_logits, y)
        loss = alpha * soft + (1 - alpha) * hard
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(soft.item())
    kl_log = F.kl_div(F.log_softmax(s_logits, 1), F.log_softmax(t_logits, 1), reduction="batchmean", log_target=True)
    kl_mod = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(s_logits, 1), F.softmax(t_logits, 1))
    return losses, kl_log, kl_mod


def test_knowledge_distillation_kl_div_batchmean():
    teacher = weights_of(lambda m: distill(m, None, 1))
    student = weights_of(lambda m: distill(m, 1, None), seed=1)
    (losses, kl_log, kl_module), _ = run_both(distill, teacher, student, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] / 2  # 0.079 -> 0.036 on PyTorch
    np.testing.assert_allclose(kl_log, kl_module, rtol=1e-5)  # log_target=True is the same divergence
    assert kl_log > 0


# ----------------------------------------------------------------------------------------------
# SimCLR's NT-Xent loss, as a masked cross-entropy and as cosine similarities with logsumexp
# ----------------------------------------------------------------------------------------------


def ntxent(m, weights, x, steps=10, tau=0.5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    enc = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16))
    proj = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    model = nn.Sequential(enc, proj)
    if weights is None:
        return model
    load(m, model, weights)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    x = torch.tensor(x)

    def nt_xent(z1, z2):
        N = z1.shape[0]
        z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
        sim = z @ z.T / tau
        sim.fill_diagonal_(-1e9)
        targets = torch.cat([torch.arange(N, 2 * N), torch.arange(0, N)])
        return F.cross_entropy(sim, targets)

    def nt_xent2(z1, z2):
        z = torch.cat([z1, z2])
        sim = F.cosine_similarity(z.unsqueeze(1), z.unsqueeze(0), dim=2) / tau
        mask = torch.eye(z.shape[0], dtype=torch.bool)
        sim = sim.masked_fill(mask, float("-inf"))
        N = z1.shape[0]
        pos = torch.cat([torch.diag(sim, N), torch.diag(sim, -N)])
        return (-pos + torch.logsumexp(sim, dim=1)).mean()

    losses = []
    for step in range(steps):
        g = np.random.default_rng(step)
        a = x + torch.tensor(0.1 * g.standard_normal(x.shape).astype(np.float32))
        b = x * torch.tensor((g.random(x.shape) > 0.2).astype(np.float32))
        l1 = nt_xent(model(a), model(b))
        l2 = nt_xent2(model(a), model(b))
        opt.zero_grad()
        l1.backward()
        opt.step()
        losses.append((l1.item(), l2.item()))
    return losses


def test_simclr_nt_xent():
    x = np.random.default_rng(3).standard_normal((16, 8)).astype(np.float32)
    weights = weights_of(lambda m: ntxent(m, None, x))
    losses, _ = run_both(ntxent, weights, x, rtol=1e-4, atol=1e-5)
    losses = np.array(losses)
    np.testing.assert_allclose(losses[:, 0], losses[:, 1], rtol=1e-5)  # the two spellings agree
    assert losses[-1, 0] < losses[0, 0] - 0.3  # 3.40 -> 2.94 on PyTorch
    assert losses[0, 0] < np.log(31) + 0.1  # near chance: log(2N - 1)


# ----------------------------------------------------------------------------------------------
# A small U-Net: down by MaxPool2d, up by ConvTranspose2d, skips joined by torch.cat
# ----------------------------------------------------------------------------------------------


def unet(m, weights, steps=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def block(i, o):
        return nn.Sequential(
            nn.Conv2d(i, o, 3, padding=1),
            nn.BatchNorm2d(o),
            nn.ReLU(inplace=True),
            nn.Conv2d(o, o, 3, padding=1),
            nn.ReLU(inplace=True),
        )

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.d1, self.d2 = block(1, 4), block(4, 8)
            self.pool = nn.MaxPool2d(2)
            self.mid = block(8, 16)
            self.up2 = nn.ConvTranspose2d(16, 8, 2, stride=2)
            self.u2 = block(16, 8)
            self.up1 = nn.ConvTranspose2d(8, 4, 2, stride=2)
            self.u1 = block(8, 4)
            self.out = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            c1 = self.d1(x)
            c2 = self.d2(self.pool(c1))
            c3 = self.mid(self.pool(c2))
            u2 = self.u2(torch.cat([self.up2(c3), c2], dim=1))
            u1 = self.u1(torch.cat([self.up1(u2), c1], dim=1))
            return self.out(u1)

    net = UNet()
    if weights is None:
        return net
    load(m, net, weights)
    g = np.random.default_rng(0)
    x = torch.tensor(g.standard_normal((4, 1, 16, 16)).astype(np.float32))
    mask = (x > 0.3).long().squeeze(1)
    opt = optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        out = net(x)
        loss = F.cross_entropy(out, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, list(out.shape), net.up1.weight.grad


names = ["emma", "olivia", "ava", "isabella", "mia", "zoe", "leah", "luna"]


def test_unet_segmentation():
    weights = weights_of(lambda m: unet(m, None))
    (losses, shape, grad), _ = run_both(unet, weights, rtol=1e-3, atol=1e-4)
    assert losses[-1] < losses[0] - 0.05  # 0.67 -> 0.57 on PyTorch
    assert shape == [4, 2, 16, 16] and grad.shape == (8, 4, 2, 2)


# ----------------------------------------------------------------------------------------------
# A char-RNN over padded names: pad_sequence, pack_padded_sequence(enforce_sorted=False)
# ----------------------------------------------------------------------------------------------


NAMES = ["emma", "olivia", "ava", "isabella", "mia", "zoe", "leah", "luna"]


def charrnn(m, weights, steps=15):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_ = m.nn.utils.rnn
    chars = sorted(set("".join(NAMES)))
    stoi = {c: i + 1 for i, c in enumerate(chars)}
    V = len(chars) + 1

    class CharRNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(V, 8, padding_idx=0)
            self.rnn = nn.LSTM(8, 16, batch_first=True)
            self.fc = nn.Linear(16, V)

        def forward(self, x, lengths):
            packed = from_.pack_padded_sequence(self.emb(x), lengths, batch_first=True, enforce_sorted=False)
            out, (h, c) = self.rnn(packed)
            out, lens = from_.pad_packed_sequence(out, batch_first=True)
            return self.fc(out), h, lens

    model = CharRNN()
    if weights is None:
        return model
    load(m, model, weights)
    seqs = [torch.tensor([stoi[c] for c in w]) for w in NAMES]
    lengths = torch.tensor([len(s) - 1 for s in seqs])
    padded = from_.pad_sequence(seqs, batch_first=True, padding_value=0)
    inp, tgt = padded[:, :-1], padded[:, 1:]
    opt = optim.Adam(model.parameters(), lr=2e-2)
    losses = []
    for _ in range(steps):
        logits, h, lens = model(inp, lengths)
        T = logits.shape[1]
        loss = F.cross_entropy(logits.reshape(-1, V), tgt[:, :T].reshape(-1), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses, h, lens, list(logits.shape), model.emb.weight.grad


def test_char_rnn_packed_sequences():
    weights = weights_of(lambda m: charrnn(m, None))
    (losses, h, lens, shape, emb_grad), _ = run_both(charrnn, weights, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0] - 1.0  # 2.67 -> 1.48 on PyTorch
    np.testing.assert_array_equal(lens, [len(w) - 1 for w in NAMES])
    assert shape == [8, 7, 14] and h.shape == (1, 8, 16)
    assert (emb_grad[0] == 0).all()  # padding_idx


# ----------------------------------------------------------------------------------------------
# Pruning (PyTorch's pruning tutorial): l1_unstructured, ln_structured, global_unstructured
# ----------------------------------------------------------------------------------------------


def pruning(m, weights, steps=10):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    prune = __import__("importlib").import_module(nn.__name__ + ".utils.prune")
    net = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 3))
    if weights is None:
        return net
    load(m, net, weights)
    prune.l1_unstructured(net[0], name="weight", amount=0.5)
    prune.ln_structured(net[2], name="weight", amount=0.34, n=2, dim=0)
    prune.global_unstructured([(net[0], "bias"), (net[2], "bias")], pruning_method=prune.L1Unstructured, amount=2)
    g = np.random.default_rng(0)
    x = torch.tensor(g.standard_normal((32, 10)).astype(np.float32))
    y = torch.tensor(g.integers(0, 3, 32))
    opt = optim.SGD(net.parameters(), lr=0.1)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    sparsity = float((net[0].weight == 0).sum()) / net[0].weight.numel()
    keys = sorted(net.state_dict().keys())
    w_orig_grad = net[0].weight_orig.grad
    prune.remove(net[0], "weight")
    keys2 = sorted(k for k, _ in net.named_parameters())
    return losses, sparsity, keys, keys2, w_orig_grad, net[0].weight, prune.is_pruned(net), net[2].weight_mask


def test_pruning_then_fine_tuning():
    weights = weights_of(lambda m: pruning(m, None))
    (losses, sparsity, keys, params_after, orig_grad, weight, pruned, mask2), _ = run_both(
        pruning, weights, rtol=1e-4, atol=1e-5
    )
    assert losses[-1] < losses[0] - 0.03 and sparsity == 0.5
    assert keys == [
        "0.bias_mask",
        "0.bias_orig",
        "0.weight_mask",
        "0.weight_orig",
        "2.bias_mask",
        "2.bias_orig",
        "2.weight_mask",
        "2.weight_orig",
    ]
    assert params_after == ["0.bias_orig", "0.weight", "2.bias_orig", "2.weight_orig"]
    assert (orig_grad[weight == 0] == 0).all()  # masked weights get no gradient
    assert pruned and (mask2.sum(1) == 0).sum() == 1  # one of the 3 output rows pruned whole


# ----------------------------------------------------------------------------------------------
# torch.gradient, torch.special and torch.embedding/layer_norm/dropout inside a model
# ----------------------------------------------------------------------------------------------


def misc(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Parameter(torch.randn(10, 6))
            self.w = nn.Parameter(torch.randn(6))
            self.b = nn.Parameter(torch.zeros(6))

        def forward(self, idx):
            e = torch.embedding(self.emb, idx)
            h = torch.layer_norm(e, (6,), self.w, self.b, 1e-5)
            h = torch.dropout(h, 0.0, self.training)
            return (
                torch.special.expit(h).sum(-1)
                + torch.special.erf(h).mean(-1)
                + torch.special.xlogy(h.abs(), h.abs() + 1).sum(-1)
            )

    net = Tiny()
    if weights is None:
        return net
    load(m, net, weights)
    idx = torch.tensor([[1, 2, 3], [4, 5, 9]])
    out = net(idx)
    out.sum().backward()
    t = torch.linspace(0, 1, 7, dtype=torch.float64, requires_grad=True)
    f = torch.sin(3 * t) * t
    (g,) = torch.gradient(f, spacing=(t.detach(),))
    (g2,) = torch.gradient(f, spacing=0.5, edge_order=2)
    gg = torch.autograd.grad((g * g2).sum(), t)[0]
    z = torch.linspace(0.1, 3, 6, dtype=torch.float64, requires_grad=True)
    sp = [
        torch.special.gammaln(z),
        torch.special.digamma(z),
        torch.special.i0(z),
        torch.special.i1e(z),
        torch.special.log_ndtr(z - 2),
        torch.special.ndtri(z / 4),
        torch.special.erfcx(z),
        torch.special.sinc(z),
        torch.special.entr(z),
        torch.special.logit(z / 4, eps=1e-6),
        torch.special.multigammaln(z + 1, 2),
        torch.special.polygamma(1, z),
        torch.special.xlog1py(z, z),
        torch.special.log_softmax(z, 0),
        torch.special.zeta(z + 1, torch.tensor(2.0, dtype=torch.float64)),
        torch.special.bessel_j0(z),
        torch.special.logsumexp(z, 0),
    ]
    spg = torch.autograd.grad(sum(s.sum() for s in sp[:-3] + sp[-1:]), z)[0]
    net.train()
    d = torch.dropout(torch.ones(1000), 0.5, True)
    return out, net.emb.grad, net.w.grad, g, g2, gg, sp, spg, float(d.sum()) > 0, sorted(set(d.tolist()))


def test_torch_level_spellings_gradient_and_special():
    weights = weights_of(lambda m: misc(m, None))
    (out, emb_grad, w_grad, g, g2, gg, special, special_grad, kept, values), _ = run_both(
        misc, weights, rtol=1e-4, atol=1e-5
    )
    assert out.shape == (2, 3) and (emb_grad[[0, 6, 7, 8]] == 0).all() and w_grad.shape == (6,)
    t = OURS.torch.linspace(0, 1, 7, dtype=OURS.torch.float64).numpy()  # PyTorch's points (np.linspace's differ
    f = np.sin(3 * t) * t  # in the last bit, which moves the finite differences by 1e-11)
    np.testing.assert_allclose(g, np.gradient(f, t), rtol=1e-12)
    np.testing.assert_allclose(g2, np.gradient(f, 0.5, edge_order=2), rtol=1e-12)
    assert kept and values == [0.0, 2.0]  # dropout(p=0.5) scales the kept by 2
