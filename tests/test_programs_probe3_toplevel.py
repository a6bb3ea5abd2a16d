# ruff: noqa: B007, B023, E741, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs (see tests/pytorch_programs.py): models written with the torch-level layer
functions that some code calls directly (``torch.conv2d``, ``torch.max_pool2d``,
``torch.batch_norm``, ``torch.layer_norm``, ``torch.group_norm``, ``torch.dropout``,
``torch.lstm_cell``, ``torch.gru_cell``, ``torch.embedding_bag``, ``torch.ctc_loss`` with its integer
reduction) and old code's losses with ``size_average=False``/``reduce=False`` and ``weight=``."""

import numpy as np

from .pytorch_programs import run_both


def params(m, shapes, seed=0):
    rng = np.random.default_rng(seed)
    return [m.torch.tensor((rng.standard_normal(s) * 0.3).astype(np.float32), requires_grad=True) for s in shapes]


def functional_cnn(m):
    torch, F, optim = m.torch, m.F, m.optim
    conv_w, conv_b, bn_w, bn_b, gn_w, gn_b, ln_w, ln_b, fc_w, fc_b = params(
        m, [(4, 1, 3, 3), (4,), (4,), (4,), (4,), (4,), (16,), (16,), (3, 16), (3,)])
    running_mean, running_var = torch.zeros(4), torch.ones(4)
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.standard_normal((6, 1, 8, 8)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 3, 6))
    opt = optim.SGD([conv_w, conv_b, bn_w, bn_b, gn_w, gn_b, ln_w, ln_b, fc_w, fc_b], lr=0.1)
    def forward(x, training):
        h = torch.conv2d(x, conv_w, conv_b, 1, "same")
        h = torch.batch_norm(h, bn_w, bn_b, running_mean, running_var, training, 0.1, 1e-5, False)
        h = torch.relu(h)
        h = torch.max_pool2d(h, 2, 2)
        h = torch.group_norm(h, 2, gn_w, gn_b, 1e-5, False)
        h = torch.max_pool2d(h, kernel_size=[2, 2], stride=[2, 2], padding=0, dilation=1, ceil_mode=False)
        h = h.flatten(1)
        h = torch.layer_norm(h, [16], ln_w, ln_b, 1e-5, False)
        h = torch.dropout(h, 0.5, False)
        return F.linear(h, fc_w, fc_b)
    losses = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(forward(x, True), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        ev = forward(x, False)
    return losses, running_mean, running_var, ev, conv_w.grad


def test_torch_level_cnn_trains_and_tracks_running_stats():
    (losses, rm, rv, ev, g), _ = run_both(functional_cnn, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    assert (rm != 0).any() and (rv != 1).any() and ev.shape == (6, 3) and g.shape == (4, 1, 3, 3)


def functional_rnns(m):
    torch, F, optim = m.torch, m.F, m.optim
    V, E, H = 7, 4, 5
    emb, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_bih, g_bhh, out_w = params(
        m, [(V, E), (4 * H, E), (4 * H, H), (4 * H,), (4 * H,), (3 * H, H), (3 * H, H), (3 * H,), (3 * H,), (2, H)])
    tokens = torch.tensor([1, 2, 3, 4, 5, 6, 1, 3])
    offsets = torch.tensor([0, 3, 5])
    opt = optim.Adam([emb, w_ih, w_hh, b_ih, b_hh, g_ih, g_hh, g_bih, g_bhh, out_w], lr=0.05)
    target = torch.tensor([0, 1, 1])
    losses = []
    for _ in range(6):
        # a bag of tokens per sequence (mode 1 = mean), then three LSTM steps over the same input
        bag, offset2bag, bag_size, max_idx = torch.embedding_bag(emb, tokens, offsets, False, 1)
        h, c = torch.zeros(3, H), torch.zeros(3, H)
        for t in range(3):
            h, c = torch.lstm_cell(bag, (h, c), w_ih, w_hh, b_ih, b_hh)
            h = torch.gru_cell(h, h, g_ih, g_hh, g_bih, g_bhh)
        logits = h @ out_w.t()
        loss = F.cross_entropy(logits, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    bag_sum = torch.embedding_bag(emb, tokens, offsets, False, 0)[0]
    ref = torch.stack([emb[tokens[0:3]].sum(0), emb[tokens[3:5]].sum(0), emb[tokens[5:]].sum(0)])
    return losses, bag_sum, ref, offset2bag, bag_size, emb.grad


def test_torch_level_lstm_gru_cells_and_embedding_bag():
    (losses, bag_sum, ref, o2b, size, g), _ = run_both(functional_rnns, rtol=1e-4, atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(bag_sum, ref, rtol=1e-6)
    assert (g[0] == 0).all()  # token 0 appears in no bag


def ctc_program(m):
    torch, F, optim = m.torch, m.F, m.optim
    T, N, C = 8, 2, 5
    (w,) = params(m, [(T, N, C)], seed=3)
    targets = torch.tensor([[1, 2, 2], [3, 4, 0]])
    input_lengths = torch.tensor([8, 6])
    target_lengths = torch.tensor([3, 2])
    opt = optim.Adam([w], lr=0.2)
    out = []
    for _ in range(8):
        lp = w.log_softmax(2)
        loss = torch.ctc_loss(lp, targets, input_lengths, target_lengths, 0, 1, False)  # 1 = 'mean'
        opt.zero_grad()
        loss.backward()
        opt.step()
        out.append(loss.item())
    lp = w.log_softmax(2)
    per = torch.ctc_loss(lp, targets, input_lengths, target_lengths, 0, 0, True)  # 0 = 'none'
    total = torch.ctc_loss(lp, targets, input_lengths, target_lengths, 0, 2, True)  # 2 = 'sum'
    functional = F.ctc_loss(lp, targets, input_lengths, target_lengths, reduction="sum")
    return out, per, total, functional


def test_torch_level_ctc_loss_with_integer_reductions():
    (losses, per, total, functional), _ = run_both(ctc_program, rtol=1e-4, atol=1e-4)
    assert losses[-1] < losses[0] / 2
    np.testing.assert_allclose(total, per.sum(), rtol=1e-5)
    np.testing.assert_allclose(functional, total, rtol=1e-6)


def legacy_vae_losses(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(4)
    recon = torch.tensor(rng.uniform(0.05, 0.95, (4, 6)).astype(np.float32), requires_grad=True)
    x = torch.tensor((rng.uniform(size=(4, 6)) > 0.5).astype(np.float32))
    mu = torch.tensor(rng.standard_normal((4, 2)).astype(np.float32), requires_grad=True)
    logvar = torch.tensor(rng.standard_normal((4, 2)).astype(np.float32) * 0.1, requires_grad=True)
    # the old pytorch/examples VAE, verbatim but for the sizes
    BCE = F.binary_cross_entropy(recon, x, size_average=False)
    KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    (BCE + KLD).backward()
    mse_sum = F.mse_loss(recon, x, size_average=False)
    l1_none = F.l1_loss(recon, x, reduce=False)
    logits = torch.tensor(rng.standard_normal((5, 3)).astype(np.float32), requires_grad=True)
    y = torch.tensor([0, 1, 2, 2, 1])
    w = torch.tensor([1.0, 2.0, 0.5])
    ce_w = F.cross_entropy(logits, y, weight=w)  # a weighted mean: divided by the sum of the weights
    ce_w_ign = F.cross_entropy(logits, y, weight=w, ignore_index=2)
    nll_old = F.nll_loss(F.log_softmax(logits, 1), y, weight=w, size_average=False)
    nll_none = F.nll_loss(F.log_softmax(logits, 1), y, weight=w, reduce=False)
    bce_w = F.binary_cross_entropy(recon, x, weight=torch.linspace(0.5, 1.5, 6))
    bcel = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([2.0] * 6))(recon, x)
    (ce_w + ce_w_ign).backward()
    return BCE, KLD, recon.grad, mu.grad, mse_sum, l1_none, ce_w, ce_w_ign, nll_old, nll_none, bce_w, bcel, logits.grad


def test_legacy_size_average_and_class_weights():
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # size_average and reduce are deprecated, and say so
        out, _ = run_both(legacy_vae_losses, rtol=1e-5, atol=1e-6)
    BCE, KLD, rg, mg, mse_sum, l1_none, ce_w, ce_w_ign, nll_old, nll_none, bce_w, bcel, lg = out
    assert l1_none.shape == (4, 6) and nll_none.shape == (5,)
    np.testing.assert_allclose(nll_old, nll_none.sum(), rtol=1e-6)
    np.testing.assert_allclose(ce_w, nll_none.sum() / 1.0 / (1 + 2 + 0.5 + 0.5 + 2), rtol=1e-5)


def test_embedding_bag_scale_grad_by_freq_divides_by_each_index_count():
    # PyTorch 2.13's CPU kernel divides by another index's count here (pytorch/pytorch#190063, fixed
    # upstream by #190264): chainrule gives the documented 1/count, the same as F.embedding's
    import autograd
    weight = autograd.ones(4, 3, requires_grad=True)
    autograd.embedding_bag(weight, autograd.tensor([1, 1, 3]), autograd.tensor([0]), True, 0)[0].sum().backward()
    assert weight.grad[:, 0].tolist() == [0.0, 1.0, 0.0, 1.0]
