# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Programs whose gradients pass through the points where PyTorch has a convention of its own (see
tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and data, comparing values,
gradients and parameters, and checked against values known by hand. Saturation, zero probabilities and NaN: logistic
regression whose sigmoid saturates to exactly 0 and 1 in float32 (``BCELoss``'s logs floored at -100); Poisson
regression with ReLU rates that are exactly 0 (``PoissonNLLLoss(log_input=False)``); entropies of distributions with
zero probabilities (``special.entr``, ``xlogy``, ``kl_div`` with zero targets); and regression with missing (NaN)
labels, the loss masked after it is computed (NaN reaches the backward of huber, smooth L1 and MSE) and before."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Logistic regression whose sigmoid saturates to exactly 0 and 1 in float32
# ----------------------------------------------------------------------------------------------


def saturated_logistic(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(3)
    X = torch.tensor(rng.standard_normal((16, 2)).astype(np.float32))
    y = (X[:, 0] > 0).float()
    y[0] = 1 - y[0]  # one mislabelled point: its probability is exactly the wrong 0 or 1
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[60.0, 0.0]]))
        model.bias.zero_()
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    criterion = nn.BCELoss()
    history = []
    for step in range(3):
        optimizer.zero_grad()
        p = torch.sigmoid(model(X)).squeeze(1)
        loss = criterion(p, y)
        loss.backward()
        optimizer.step()
        history.append([loss.item(), model.weight.grad.abs().max().item(), (p == 1).sum().item(), (p == 0).sum().item()])
    logits = model(X).squeeze(1)
    with_logits = F.binary_cross_entropy_with_logits(logits, y, reduction="none")
    p = torch.sigmoid(logits).detach().requires_grad_()
    soft = torch.full_like(y, 0.5).requires_grad_()  # a learnt soft label: its gradient is -logit(p)
    F.binary_cross_entropy(p, soft, reduction="sum").backward()
    return {"history": history, "weight": model.weight, "with_logits": with_logits, "p_grad": p.grad,
            "soft_grad": soft.grad, "p": p}


def test_saturated_logistic_regression_bce():
    ours, _ = run_both(saturated_logistic, rtol=1e-5, atol=1e-6)
    history = np.array(ours["history"])
    assert history[0, 2] > 0 and history[0, 3] > 0  # probabilities exactly 1 and 0
    X = np.random.default_rng(3).standard_normal((16, 2)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.float64)
    y[0] = 1 - y[0]
    p = 1 / (1 + np.exp(-60.0 * X[:, 0].astype(np.float64)))
    with np.errstate(divide="ignore"):
        bce = -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))
    assert bce[0] == 100  # the mislabelled point: its log floored at -100
    assert history[0, 0] == pytest.approx(bce.mean(), rel=1e-4)
    saturated = (ours["p"] == 0) | (ours["p"] == 1)
    assert np.isinf(ours["soft_grad"][saturated]).all()
    np.testing.assert_allclose(ours["p_grad"][ours["p"] == 1], 0.5 / float(np.float32(1e-12)), rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# Poisson regression with ReLU rates that are exactly 0: PoissonNLLLoss(log_input=False)
# ----------------------------------------------------------------------------------------------


def poisson_regression(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    rng = np.random.default_rng(7)
    X = torch.tensor(rng.standard_normal((20, 3)))
    counts = torch.tensor(rng.poisson(2.0, 20).astype(np.float64))
    counts[:3] = 0.0
    model = nn.Linear(3, 1).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -1.0, 0.5]]))
        model.bias.fill_(-0.5)
    history = []
    for full in (False, True):
        criterion = nn.PoissonNLLLoss(log_input=False, full=full)
        optimizer = optim.SGD(model.parameters(), lr=0.01)
        for step in range(3):
            optimizer.zero_grad()
            rate = torch.relu(model(X).squeeze(1))  # exactly 0 where the linear part is negative
            loss = criterion(rate, counts)
            loss.backward()
            optimizer.step()
            history.append([loss.item(), (rate == 0).sum().item(), model.weight.grad.abs().max().item()])
    rate = torch.relu(model(X).squeeze(1)).detach().requires_grad_()
    nn.PoissonNLLLoss(log_input=False, reduction="sum")(rate, counts).backward()
    return {"history": history, "weight": model.weight, "rate": rate, "rate_grad": rate.grad}


def test_poisson_regression_with_zero_rates():
    ours, _ = run_both(poisson_regression, rtol=1e-9, atol=1e-11)
    history = np.array(ours["history"])
    assert (history[:, 1] > 0).all() and np.isfinite(history).all()
    rng = np.random.default_rng(7)
    rng.standard_normal((20, 3))
    counts = rng.poisson(2.0, 20).astype(np.float64)
    counts[:3] = 0.0
    rate = ours["rate"]
    # d/dλ (λ - y log(λ + eps)) = 1 - y / (λ + eps): at a rate of exactly 0, 1 - y / 1e-8
    np.testing.assert_allclose(ours["rate_grad"], 1 - counts / (rate + 1e-8), rtol=1e-12)
    assert (rate == 0).any()


# ----------------------------------------------------------------------------------------------
# Entropies of distributions with zero probabilities: special.entr, xlogy, kl_div with zero targets
# ----------------------------------------------------------------------------------------------


def entropies(m):
    torch, F = m.torch, m.F
    logits = torch.tensor([[2.0, 0.0, -1.0, 0.5], [1.0, 1.0, 1.0, 1.0], [0.0, 3.0, -2.0, 1.0]], dtype=torch.float64,
                          requires_grad=True)
    keep = torch.tensor([[True, True, False, True], [True, False, False, False], [True, True, True, True]])
    probs = logits.masked_fill(~keep, float("-inf")).softmax(-1)  # exact zeros
    entr = torch.special.entr(probs).sum(-1)
    by_xlogy = -torch.xlogy(probs, probs).sum(-1)
    categorical = torch.distributions.Categorical(probs=probs).entropy()
    by_logits = torch.distributions.Categorical(logits=logits.masked_fill(~keep, float("-inf"))).entropy()
    teacher = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]], dtype=torch.float64)
    student_log = F.log_softmax(logits, -1)
    kl = F.kl_div(student_log, teacher, reduction="batchmean")
    kl_log_target = F.kl_div(student_log, torch.log(teacher), reduction="batchmean", log_target=True)
    kl_by_xlogy = (torch.xlogy(teacher, teacher) - teacher * student_log).sum() / 3
    kl_dist = torch.distributions.kl_divergence(torch.distributions.Categorical(probs=teacher),
                                                torch.distributions.Categorical(logits=logits))
    xlog1py = torch.special.xlog1py(probs, -probs).sum()
    # (log_target with log 0 = -inf: PyTorch's exp(t) (t - x) is 0 · -inf = NaN, so that one stays out of the loss)
    terms = {"entr": entr.sum(), "xlogy": by_xlogy.sum(), "categorical": categorical.sum(), "by_logits": by_logits.sum(),
             "kl": kl, "kl_by_xlogy": kl_by_xlogy, "kl_dist": kl_dist.sum(), "xlog1py": xlog1py}
    grads = {k: torch.autograd.grad(v, logits, retain_graph=True)[0] for k, v in terms.items()}
    return {"entr": entr, "xlogy": by_xlogy, "categorical": categorical, "by_logits": by_logits, "kl": [kl, kl_log_target, kl_by_xlogy],
            "kl_dist": kl_dist, "xlog1py": xlog1py, "grads": grads}


def test_entropies_with_zero_probabilities():
    ours, _ = run_both(entropies, rtol=1e-10, atol=1e-12)
    assert ours["entr"][1] == 0 and abs(ours["categorical"][1]) < 1e-15 and abs(ours["by_logits"][1]) < 1e-15
    np.testing.assert_allclose(ours["entr"], ours["xlogy"], rtol=1e-14)
    np.testing.assert_allclose(ours["entr"], ours["categorical"], rtol=1e-14, atol=1e-15)
    kl, kl_log_target, kl_by_xlogy = ours["kl"]
    assert np.isnan(kl_log_target) and kl == pytest.approx(kl_by_xlogy, rel=1e-12)
    grads = ours["grads"]
    for name in ("categorical", "by_logits", "kl", "kl_by_xlogy", "kl_dist"):
        assert np.isfinite(grads[name]).all(), name
    # entr and xlogy at p = 0: d/dp is infinite (or 0/0) and softmax's backward multiplies it by p = 0: NaN across
    # the rows with a zero probability, as PyTorch gives (Categorical clamps its logits to stay finite)
    for name in ("entr", "xlogy"):
        assert np.isnan(grads[name][:2]).any() and np.isfinite(grads[name][2]).all(), name


# ----------------------------------------------------------------------------------------------
# Regression with missing labels (NaN targets): the loss masked after it is computed, and before
# ----------------------------------------------------------------------------------------------


def make_regressor(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))


def missing_labels(m, weights):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(14)
    X = torch.tensor(rng.standard_normal((10, 3)).astype(np.float32))
    Y = torch.tensor(rng.standard_normal((10, 2)).astype(np.float32))
    Y[2, 0] = float("nan")  # missing labels
    Y[7, 1] = float("nan")
    observed = ~torch.isnan(Y)
    grads = {}
    for name, loss_fn in (("huber", lambda p, t, r: F.huber_loss(p, t, reduction=r, delta=0.5)),
                          ("smooth_l1", lambda p, t, r: F.smooth_l1_loss(p, t, reduction=r, beta=0.5)),
                          ("mse", lambda p, t, r: F.mse_loss(p, t, reduction=r)),
                          ("l1", lambda p, t, r: F.l1_loss(p, t, reduction=r))):
        model = load(m, make_regressor(m), weights)
        pred = model(X)
        after = loss_fn(pred, Y, "none")[observed].mean()  # masked after: NaN reaches the backward
        after.backward()
        grads[name + "_after"] = {k: p.grad for k, p in model.named_parameters()}
        model.zero_grad()
        before = loss_fn(model(X)[observed], Y[observed], "mean")  # masked before: the usual fix
        before.backward()
        grads[name + "_before"] = {k: p.grad for k, p in model.named_parameters()}
        grads[name + "_values"] = [after, before]
    return grads


def test_regression_with_missing_labels():
    weights = weights_of(make_regressor)
    ours, _ = run_both(missing_labels, weights, rtol=2e-5, atol=2e-6)
    for name in ("huber", "smooth_l1", "mse", "l1"):
        after, before = ours[name + "_values"]
        assert after == pytest.approx(before, rel=1e-6)  # the same loss either way
        assert all(np.isfinite(g).all() for g in ours[name + "_before"].values())
    # masked after: the fused losses' backward multiplies the 0 from the mask by a NaN slope (huber, smooth L1,
    # mse: NaN weights, as in PyTorch); l1's sign(NaN) is 0, so its gradient stays finite
    for name in ("huber", "smooth_l1", "mse"):
        assert np.isnan(ours[name + "_after"]["2.weight"]).any(), name
    assert all(np.isfinite(g).all() for g in ours["l1_after"].values())
