# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Programs whose gradients pass through the points where PyTorch has a convention of its own (see
tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and data, comparing values,
gradients and parameters, and checked against values known by hand. Ties and kinks: a CNN on sparse images (ReLU
zeros tie in ``max_pool2d``, ``adaptive_max_pool2d`` and ``amax``); robust statistics with ties (median,
``kthvalue``, ``topk``, ``quantile``, ``mode``); sparse regularisation of weights that start at 0 (``abs``, group
norms of zero groups); margin losses exactly at their margins; hard activations fed exact boundary values
(``hardswish``, ``hardsigmoid``, ``relu6``, ``hardtanh``, ``threshold``, ``clamp`` by tensors whose bounds meet or
cross); spectral regularisation of orthogonally initialised layers (every singular value tied: ``matrix_norm`` of
orders 2, -2, 1, inf and 'nuc', ``eigvalsh`` of an identity Gram matrix)."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A CNN on sparse images: ReLU zeros tie inside max-pooling windows
# ----------------------------------------------------------------------------------------------


def make_sparse_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveMaxPool2d(2), nn.Flatten(), nn.Linear(16, 3))


def sparse_images(n=6, seed=2):
    rng = np.random.default_rng(seed)
    X = np.zeros((n, 1, 8, 8), dtype=np.float32)
    X[:, :, 2:5, 2:6] = rng.integers(0, 2, (n, 1, 3, 4))  # blocks of exactly 0 and 1: ties everywhere
    y = rng.integers(0, 3, n)
    return X, y


def sparse_cnn(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    X, y = sparse_images()
    X, y = torch.tensor(X), torch.tensor(y)
    model = load(m, make_sparse_cnn(m), weights)
    with torch.no_grad():
        model[0].bias.fill_(-0.1)  # most of the first layer's outputs are dead: many exact zeros to tie
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    x = X.clone().requires_grad_()
    features = model[:3](x)
    global_max = features.amax(dim=(2, 3))  # ties share the gradient
    first_max = features.flatten(2).max(dim=2).values  # ties: one index takes it
    (global_max.sum() + 2 * first_max.sum()).backward()
    return {"losses": losses, "weights": {k: v for k, v in model.state_dict().items()}, "x_grad": x.grad,
            "global_max": global_max}


def test_sparse_cnn_max_pool_ties():
    weights = weights_of(make_sparse_cnn)
    ours, _ = run_both(sparse_cnn, weights, rtol=2e-5, atol=2e-6)
    assert np.isfinite(ours["losses"]).all() and (ours["global_max"] >= 0).all()


# ----------------------------------------------------------------------------------------------
# Robust statistics with ties: median, kthvalue, topk, quantile, mode
# ----------------------------------------------------------------------------------------------


def robust(m):
    torch, F = m.torch, m.F
    pred = torch.tensor([[1.0, 2.0, 2.0, 2.0, 5.0, 5.0], [0.0, 0.0, 1.0, 1.0, 1.0, 3.0]], dtype=torch.float32,
                        requires_grad=True)
    target = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    residual = (pred - target).abs()
    mad = residual.median(dim=1).values  # ties: which index gets the gradient is PyTorch's
    med_all = residual.median()
    nanmed = torch.where(residual > 3, torch.tensor(float("nan")), residual).nanmedian(dim=1).values
    trimmed = residual.kthvalue(4, dim=1).values
    top = residual.topk(3, dim=1).values.sum(1)  # top-3 with ties at the cut
    bottom = residual.topk(2, dim=1, largest=False).values.sum(1)
    q = torch.quantile(residual, torch.tensor([0.25, 0.5, 0.75]), dim=1)
    q_lower = torch.quantile(residual, 0.5, dim=1, interpolation="lower")
    q_nearest = torch.quantile(residual, 0.4, dim=1, interpolation="nearest")
    mode = residual.mode(dim=1).values
    sorted_, _ = residual.sort(dim=1, descending=True, stable=True)
    cummax = residual.cummax(dim=1).values
    loss = (mad.sum() + 0.5 * med_all + nanmed.sum() + trimmed.sum() + top.sum() + bottom.sum() + q.sum()
            + q_lower.sum() + q_nearest.sum() + mode.sum() + (sorted_ * torch.arange(6.0)).sum() + cummax.sum())
    loss.backward()
    return {"values": [mad, med_all, nanmed, trimmed, top, bottom, q, q_lower, q_nearest, mode, sorted_, cummax],
            "grad": pred.grad}


def test_robust_statistics_with_ties():
    ours, _ = run_both(robust, rtol=1e-6, atol=1e-6)
    mad, med_all, nanmed, trimmed, top, bottom, q, q_lower, q_nearest, mode, sorted_, cummax = ours["values"]
    np.testing.assert_array_equal(mad, [1, 1])  # the lower median of an even count, as PyTorch's
    assert med_all == 1 and (mode == [1, 1]).all() and (trimmed == [1, 1]).all()
    np.testing.assert_allclose(top, [9, 5])


# ----------------------------------------------------------------------------------------------
# Sparse regularisation of weights that start at 0: |w| at 0, group norms of zero groups
# ----------------------------------------------------------------------------------------------


def sparse_regularisation(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(8)
    X = torch.tensor(rng.standard_normal((30, 6)).astype(np.float32))
    y = X[:, 0] * 2.0 - X[:, 1] + 0.1 * torch.tensor(rng.standard_normal(30).astype(np.float32))
    model = nn.Sequential(nn.Linear(6, 4), nn.Linear(4, 1))
    nn.init.zeros_(model[0].weight)  # every weight starts at the kink of |w|
    nn.init.zeros_(model[0].bias)
    with torch.no_grad():
        model[0].weight[:2, :2] = torch.tensor([[1.0, 0.0], [0.0, -1.0]])
        model[1].weight.fill_(0.5)
        model[1].bias.zero_()
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    history, grads = [], []
    for step in range(3):
        optimizer.zero_grad()
        mse = F.mse_loss(model(X).squeeze(1), y)
        l1 = model[0].weight.abs().sum()
        group = model[0].weight.norm(dim=0).sum()  # group lasso over input features: zero columns
        group_inf = torch.linalg.vector_norm(model[0].weight, float("inf"), dim=1).sum()
        sign_term = (model[0].weight.sign() * model[0].weight).sum()
        loss = mse + 1e-2 * l1 + 1e-2 * group + 1e-3 * group_inf + 1e-3 * sign_term
        loss.backward()
        grads.append(model[0].weight.grad.clone())
        optimizer.step()
        history.append([mse.item(), l1.item(), group.item()])
    return {"history": history, "grads": grads, "weights": dict(model.state_dict())}


def test_sparse_regularisation_at_zero_weights():
    ours, _ = run_both(sparse_regularisation, rtol=2e-5, atol=2e-6)
    first = ours["grads"][0]
    # the zero columns 2..5: |w| and the column norms give 0 at w = 0, so only the data term moves them
    assert np.isfinite(first).all()
    assert np.isfinite(np.array(ours["history"])).all()


# ----------------------------------------------------------------------------------------------
# Margin losses exactly at their margins (the subgradient PyTorch takes at the hinge)
# ----------------------------------------------------------------------------------------------


def margins(m):
    torch, nn, F = m.torch, m.nn, m.F
    scores = torch.tensor([[0.5, 1.5, 0.5], [1.0, 0.0, 1.0], [2.0, 2.0, 2.0], [0.2, 0.1, 1.2]], requires_grad=True)
    target = torch.tensor([1, 0, 2, 2])  # row 0: the others are exactly margin 1 below; row 2: all tie
    multi = nn.MultiMarginLoss()(scores, target)
    multi_sq = nn.MultiMarginLoss(p=2, margin=0.5, weight=torch.tensor([1.0, 2.0, 0.5]))(scores, target)
    multilabel = nn.MultiLabelMarginLoss()(scores, torch.tensor([[1, -1, 0], [0, 2, -1], [2, -1, 0], [2, 0, -1]]))
    x1 = torch.tensor([1.0, 2.0, 0.5, 3.0], requires_grad=True)
    x2 = torch.tensor([1.0, 1.0, 1.5, 3.0], requires_grad=True)
    y = torch.tensor([1.0, 1.0, 1.0, -1.0])
    ranking = nn.MarginRankingLoss(margin=0.0)(x1, x2, y)  # x1 == x2 ties at the hinge
    ranking_m = nn.MarginRankingLoss(margin=1.0)(x1, x2, y)  # x1 - x2 == 1: at the hinge
    hinge = nn.HingeEmbeddingLoss(margin=1.0)(x1 - x2, torch.tensor([-1.0, -1.0, 1.0, -1.0]))  # margin - d = 0 for row 1
    soft = nn.SoftMarginLoss()(x1 - x2, y)
    svm = torch.clamp(1 - y * (x1 - x2), min=0).sum()  # a hand-written hinge: clamp passes the tie's gradient
    relu_svm = torch.relu(1 - y * (x1 - x2)).sum()  # relu does not
    loss = multi + multi_sq + multilabel + ranking + ranking_m + hinge + soft + svm + 2 * relu_svm
    loss.backward()
    return {"losses": [multi, multi_sq, multilabel, ranking, ranking_m, hinge, soft, svm, relu_svm],
            "scores_grad": scores.grad, "x1_grad": x1.grad, "x2_grad": x2.grad}


def test_margin_losses_at_their_margins():
    ours, _ = run_both(margins, rtol=1e-6, atol=1e-7)
    multi, multi_sq, multilabel, ranking, ranking_m, hinge, soft, svm, relu_svm = ours["losses"]
    # Σ_{i≠y} max(0, 1 - x_y + x_i) / C per row: 0 (both at the hinge), 1/3, 2/3 (ties), 0 (one at the hinge)
    assert multi == pytest.approx((0 + 1 / 3 + 2 / 3 + 0) / 4, abs=1e-6)
    assert ranking == pytest.approx(1 / 4, rel=1e-6)  # only x1 < x2 (row 2) is past the hinge
    np.testing.assert_allclose(ours["x1_grad"] + ours["x2_grad"], 0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Hard activations fed exact boundary values (quantised inputs), and a clamp by per-channel tensor bounds
# ----------------------------------------------------------------------------------------------


def make_mobile_block(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(8, 8), nn.Hardswish(), nn.Linear(8, 8), nn.Hardsigmoid(), nn.Linear(8, 2))


def hard_activations(m, weights):
    torch, nn, F = m.torch, m.nn, m.F
    levels = torch.tensor([-4.0, -3.0, -1.0, 0.0, 1.0, 3.0, 6.0, 7.0])  # the kinks of every hard activation
    x = torch.stack([levels, levels.flip(0), levels.roll(3)]).requires_grad_()
    acts = [F.hardswish(x), F.hardsigmoid(x), F.relu6(x), F.hardtanh(x), F.hardtanh(x, -3.0, 3.0),
            F.threshold(x, 1.0, -1.0), F.hardshrink(x, 1.0), F.softshrink(x, 1.0), F.relu(x), F.leaky_relu(x, 0.1),
            F.elu(x), F.celu(x, 2.0), F.selu(x), F.softplus(x, beta=1.0, threshold=3.0), F.gelu(x), F.silu(x),
            torch.heaviside(x.detach(), torch.tensor(0.5)) * x]  # (PyTorch has no derivative of heaviside)
    low = torch.tensor([-3.0, -1.0, 0.0, 1.0, 1.0, -4.0, 6.0, 0.0], requires_grad=True)  # per-feature bounds
    high = torch.tensor([3.0, 1.0, 0.0, 3.0, 0.5, -3.0, 6.0, 7.0], requires_grad=True)  # (some meet, one crosses)
    clamped = torch.clamp(x, low, high)
    total = sum((a * torch.arange(1.0, 9.0)).sum() for a in acts) + (clamped * torch.arange(1.0, 9.0)).sum()
    model = load(m, make_mobile_block(m), weights)
    out = model(levels.expand(3, 8) + 0 * x)
    total = total + out.sum()
    total.backward()
    return {"acts": acts, "clamped": clamped, "x_grad": x.grad, "low_grad": low.grad, "high_grad": high.grad,
            "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_hard_activations_at_their_boundaries():
    weights = weights_of(make_mobile_block)
    ours, _ = run_both(hard_activations, weights, rtol=1e-5, atol=1e-6)
    hardswish, hardsigmoid, relu6 = ours["acts"][:3]
    np.testing.assert_allclose(hardswish[0], [0, 0, -1 / 3, 0, 2 / 3, 3, 6, 7])
    np.testing.assert_allclose(hardsigmoid[0], [0, 0, 1 / 3, 0.5, 2 / 3, 1, 1, 1])
    np.testing.assert_allclose(relu6[0], [0, 0, 0, 0, 1, 3, 6, 6])
    # clamp by tensors: x on a bound keeps its gradient; bounds that meet (feature 2: x = 0 there on row 0) pass
    # it only to an x lying on them; crossed bounds (feature 4: 1 > 0.5) give it all to high
    assert (ours["low_grad"][4] == 0) and ours["high_grad"][4] > 0


# ----------------------------------------------------------------------------------------------
# Spectral regularisation of orthogonally initialised layers: every singular value ties at 1
# ----------------------------------------------------------------------------------------------


def make_orthogonal_mlp(m):
    nn = m.nn
    model = nn.Sequential(nn.Linear(4, 4, bias=False), nn.Tanh(), nn.Linear(4, 4, bias=False), nn.Tanh(),
                          nn.Linear(4, 2))
    nn.init.eye_(model[0].weight)  # (orthogonal_ draws from the generator: eye_ and a permutation instead)
    with m.torch.no_grad():
        model[2].weight.copy_(m.torch.eye(4)[[2, 0, 3, 1]])
    return model


def spectral_regularisation(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(13)
    X = torch.tensor(rng.standard_normal((16, 4)))
    y = torch.tensor(rng.integers(0, 2, 16))
    model = load(m, make_orthogonal_mlp(m), weights).double()
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    history, first = [], None
    for step in range(3):
        optimizer.zero_grad()
        task = F.cross_entropy(model(X), y)
        penalty = 0.0
        for layer in (model[0], model[2]):
            W = layer.weight
            penalty = penalty + torch.linalg.matrix_norm(W, 2) ** 2  # spectral norm: tied at init
            penalty = penalty + 0.1 * torch.linalg.matrix_norm(W, "nuc")
            penalty = penalty + 0.1 * torch.linalg.matrix_norm(W, 1) + 0.1 * torch.linalg.matrix_norm(W, float("inf"))
            gram = W.T @ W
            penalty = penalty + ((torch.linalg.eigvalsh(gram) - 1) ** 2).sum()  # an orthogonality penalty
            penalty = penalty + 0.01 * torch.linalg.matrix_norm(W, -2)
        loss = task + 0.1 * penalty
        loss.backward()
        if step == 0:
            first = {k: p.grad.clone() for k, p in model.named_parameters()}
        optimizer.step()
        history.append([task.item(), penalty.item()])
    return {"history": history, "first": first, "weights": dict(model.state_dict())}


def test_spectral_regularisation_of_orthogonal_layers():
    weights = weights_of(make_orthogonal_mlp)
    ours, _ = run_both(spectral_regularisation, weights, rtol=1e-8, atol=1e-10)
    history = np.array(ours["history"])
    # at init every layer is a permutation: σ = 1 (four times), column and row sums 1, Gram = I
    assert history[0, 1] == pytest.approx(2 * (1 + 0.1 * 4 + 0.1 + 0.1 + 0 + 0.01), rel=1e-12)
    assert all(np.isfinite(g).all() for g in ours["first"].values())
