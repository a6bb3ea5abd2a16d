# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Privacy programs as their reference PyTorch code writes them, each run on chainrule and on PyTorch from the same
seed (tests/pytorch_programs.py), comparing values and gradients, with invariants and NumPy checks that hold without
PyTorch. Attacks and audits: Deep Leakage from Gradients with LBFGS (second order through a CNN), membership
inference (ROC AUC by ``argsort``/``cumsum``/``trapezoid``), PATE's noisy argmax, randomised response. Influence
functions and unlearning: Hessian-vector products by double ``autograd.grad``, ``func.jvp(grad)``, ``func.vjp``,
``func.hvp``, ``autograd.functional.hvp/vhp/hessian``, conjugate gradients, LiSSA, a Newton step removing a sample,
Hutchinson's trace through a CNN with smooth activations."""

import math

import numpy as np
import pytest

from .probe23_privacy_common import _func
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Attacks and audits
# ----------------------------------------------------------------------------------------------


def deep_leakage_from_gradients(m):
    """Deep Leakage from Gradients (Zhu et al.): dummy data and a dummy soft label optimised by LBFGS so that their
    gradients match the shared ones (a double backward through a sigmoid CNN); iDLG's label from the last layer."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, stride=2), nn.Sigmoid(),
                                      nn.Conv2d(4, 4, 3, padding=1, stride=1), nn.Sigmoid())
            self.fc = nn.Linear(4 * 4 * 4, 5)

        def forward(self, x):
            out = self.body(x)
            return self.fc(out.view(out.size(0), -1))

    net = LeNet().double()
    for mod in net.modules():
        if hasattr(mod, "weight"):
            mod.weight.data.uniform_(-0.5, 0.5)
        if hasattr(mod, "bias") and mod.bias is not None:
            mod.bias.data.uniform_(-0.5, 0.5)
    gt = torch.rand(1, 1, 8, 8, dtype=torch.float64)
    onehot = F.one_hot(torch.tensor([3]), 5).double()

    def cross_entropy_for_onehot(pred, target):
        return torch.mean(torch.sum(-target * F.log_softmax(pred, dim=-1), 1))

    dy_dx = torch.autograd.grad(cross_entropy_for_onehot(net(gt), onehot), net.parameters())
    original = [g.detach().clone() for g in dy_dx]
    dummy = torch.randn(gt.size(), dtype=torch.float64).requires_grad_(True)
    dummy_label = torch.randn(onehot.size(), dtype=torch.float64).requires_grad_(True)
    opt = optim.LBFGS([dummy, dummy_label], lr=0.5, max_iter=4)
    history = []
    for it in range(3):
        def closure():
            opt.zero_grad()
            dummy_loss = cross_entropy_for_onehot(net(dummy), F.softmax(dummy_label, dim=-1))
            dummy_grads = torch.autograd.grad(dummy_loss, net.parameters(), create_graph=True)
            diff = 0
            for gx, gy in zip(dummy_grads, original):
                diff += ((gx - gy) ** 2).sum()
            diff.backward()
            return diff

        history.append(opt.step(closure).detach())
    return {"history": torch.stack(history), "dummy": dummy.detach(), "dummy_label": dummy_label.detach(),
            "inferred": torch.argmin(torch.sum(original[-2], dim=-1), dim=-1)}


def test_deep_leakage_from_gradients():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (LBFGS's float() of the closure's loss says nothing, as PyTorch's)
        ours, _ = run_both(deep_leakage_from_gradients, rtol=1e-6, atol=1e-9)
    assert ours["history"][-1] < ours["history"][0] and ours["inferred"] == 3


def pate_and_randomised_response(m):
    """PATE's noisy-argmax aggregation of teacher votes (bincount, one_hot counts, Laplace and Gaussian noise),
    randomised response on labels, the exponential mechanism by multinomial."""
    torch, F = m.torch, m.F
    D = torch.distributions
    torch.manual_seed(3)
    n_teachers, n_classes, n_q = 10, 4, 6
    votes = torch.randint(0, n_classes, (n_teachers, n_q))
    counts = torch.stack([torch.bincount(votes[:, i], minlength=n_classes) for i in range(n_q)])
    lap = D.Laplace(torch.tensor(0.0), torch.tensor(1.0 / 0.5))
    labels = (counts.float() + lap.sample((n_q, n_classes))).argmax(1)
    g = torch.Generator().manual_seed(9)
    labels2 = torch.argmax(counts + torch.normal(0.0, 2.0, (n_q, n_classes), generator=g), dim=1)
    eps = 1.0
    keep = torch.bernoulli(torch.full((n_q,), math.exp(eps) / (math.exp(eps) + n_classes - 1))).bool()
    other = torch.randint(0, n_classes - 1, (n_q,))
    other = other + (other >= labels).long()
    probs = torch.softmax(eps * torch.tensor([1.0, 2.0, 0.5]) / 2, 0)
    return {"votes": votes, "counts": counts, "counts2": F.one_hot(votes, n_classes).sum(0), "labels": labels,
            "labels2": labels2, "rr": torch.where(keep, labels, other), "keep": keep, "other": other,
            "log_prob": lap.log_prob(torch.tensor([0.5, -1.0])),
            "laplace": D.laplace.Laplace(0.0, 2.0 / eps).sample((5,)),
            "choice": torch.multinomial(probs, 4, replacement=True),
            "geometric": D.Geometric(probs=torch.tensor(0.3)).sample((5,))}


def test_pate_and_randomised_response():
    ours, _ = run_both(pate_and_randomised_response)
    np.testing.assert_array_equal(ours["counts"], ours["counts2"])
    assert (ours["counts"].sum(1) == 10).all()
    np.testing.assert_array_equal(ours["rr"] == ours["labels"], ours["keep"])
    np.testing.assert_allclose(ours["log_prob"], np.log(0.25) - 0.5 * np.abs([0.5, -1.0]), rtol=1e-6)


def membership_inference(m):
    """A loss-threshold membership inference audit of an overfitted classifier: ROC AUC by sorting scores and
    cumulative sums (trapezoid and trapz), a threshold at a quantile, a LiRA-like Gaussian fit."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(4)
    target = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 3))
    Xin, yin = torch.randn(30, 5), torch.randint(0, 3, (30,))
    Xout, yout = torch.randn(30, 5), torch.randint(0, 3, (30,))
    opt = optim.Adam(target.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        F.cross_entropy(target(Xin), yin).backward()
        opt.step()
    with torch.no_grad():
        li = F.cross_entropy(target(Xin), yin, reduction="none")
        lo = F.cross_entropy(target(Xout), yout, reduction="none")
    scores = torch.cat([-li, -lo])
    labels = torch.cat([torch.ones(30), torch.zeros(30)])
    order = torch.argsort(scores, descending=True)
    tps, fps = torch.cumsum(labels[order], 0), torch.cumsum(1 - labels[order], 0)
    tpr, fpr = tps / tps[-1], fps / fps[-1]
    thr = torch.quantile(lo, 0.1)
    return {"scores": scores, "auc": torch.trapezoid(tpr, fpr),
            "auc2": torch.trapz(torch.cat([torch.zeros(1), tpr]), torch.cat([torch.zeros(1), fpr])), "thr": thr,
            "advantage": (li < thr).float().mean() - (lo < thr).float().mean(),
            "lira": torch.distributions.Normal(lo.mean(), lo.std(unbiased=True)).cdf(li)}


def test_membership_inference_audit():
    ours, _ = run_both(membership_inference, rtol=1e-4, atol=1e-6)
    s = ours["scores"]
    by_pairs = np.mean([[1.0 if a > b else 0.5 if a == b else 0.0 for b in s[30:]] for a in s[:30]])
    assert ours["auc2"] == pytest.approx(by_pairs, abs=1e-6) and 0.5 < ours["auc2"] <= 1


# ----------------------------------------------------------------------------------------------
# Influence functions and unlearning
# ----------------------------------------------------------------------------------------------


def influence_and_unlearning(m):
    """Koh & Liang's influence of training points on a test loss for L2-regularised logistic regression: H^{-1} g
    by conjugate gradients over Hessian-vector products (autograd.grad twice); the same HVP by func.jvp(grad) (and
    vmapped), func.vjp(grad), autograd.functional.hvp/vhp, Hessians by func.hessian and autograd.functional.hessian;
    unlearning one sample by a Newton step from the optimum (linalg.solve, cholesky_solve)."""
    torch, nn, F = m.torch, m.nn, m.F
    tf = _func(m)
    AF = torch.autograd.functional
    torch.manual_seed(0)
    X = torch.randn(20, 3, dtype=torch.float64)
    y = (torch.rand(20, dtype=torch.float64) > 0.5).double()
    model = nn.Linear(3, 1).double()
    params = list(model.parameters())

    def loss_at(idx=None):
        xs, ys = (X, y) if idx is None else (X[idx:idx + 1], y[idx:idx + 1])
        return (F.binary_cross_entropy_with_logits(model(xs).squeeze(-1), ys)
                + 0.01 * sum((p ** 2).sum() for p in params))

    def hvp(v):
        g = torch.autograd.grad(loss_at(), params, create_graph=True)
        return torch.autograd.grad(sum((gi * vi).sum() for gi, vi in zip(g, v)), params)

    test_g = torch.autograd.grad(loss_at(0), params)
    x = [torch.zeros_like(p) for p in params]
    r = [t.clone() for t in test_g]
    p_ = [t.clone() for t in r]
    rs = sum((ri * ri).sum() for ri in r)
    for it in range(10):
        Ap = hvp(p_)
        alpha = rs / sum((pi * ai).sum() for pi, ai in zip(p_, Ap))
        x = [xi + alpha * pi for xi, pi in zip(x, p_)]
        r = [ri - alpha * ai for ri, ai in zip(r, Ap)]
        rs_new = sum((ri * ri).sum() for ri in r)
        if rs_new.sqrt() < 1e-10:
            break
        p_ = [ri + (rs_new / rs) * pi for ri, pi in zip(r, p_)]
        rs = rs_new
    influence = torch.stack([-sum((a * b).sum() for a, b in zip(torch.autograd.grad(loss_at(i), params), x))
                             for i in range(5)])
    pd = {k: v.detach() for k, v in model.named_parameters()}

    def floss(p):
        out = tf.functional_call(model, p, (X,)).squeeze(-1)
        return F.binary_cross_entropy_with_logits(out, y) + 0.01 * sum((q ** 2).sum() for q in p.values())

    v = {k: torch.ones_like(t) for k, t in pd.items()}
    _, hv_jvp = tf.jvp(tf.grad(floss), (pd,), (v,))
    hv_func = tf.vmap(lambda t: tf.jvp(tf.grad(floss), (pd,), (t,))[1])({k: t.expand(2, *t.shape) for k, t in v.items()})
    hv_func = {k: t[1] for k, t in hv_func.items()}
    _, vjp_fn = tf.vjp(tf.grad(floss), pd)
    hv_vjp = vjp_fn(v)[0]
    H = tf.hessian(floss)(pd)

    def flat_loss(w, b):
        return (F.binary_cross_entropy_with_logits((X @ w.t() + b).squeeze(-1), y)
                + 0.01 * ((w ** 2).sum() + (b ** 2).sum()))

    w, b = model.weight.detach(), model.bias.detach()
    _, hv_af = AF.hvp(flat_loss, (w, b), (torch.ones_like(w), torch.ones_like(b)))
    _, vh_af = AF.vhp(flat_loss, (w, b), (torch.ones_like(w), torch.ones_like(b)))
    H_af = AF.hessian(flat_loss, (w, b))
    theta = torch.cat([w.flatten(), b])

    def full_loss(theta, X, y):
        return (F.binary_cross_entropy_with_logits(X @ theta[:3] + theta[3], y, reduction="sum")
                + 0.05 * theta.dot(theta))

    for _ in range(5):
        theta = theta - torch.linalg.solve(AF.hessian(lambda t: full_loss(t, X, y), theta),
                                           AF.jacobian(lambda t: full_loss(t, X, y), theta))
    keep = torch.arange(20) != 0
    Hk = AF.hessian(lambda t: full_loss(t, X[keep], y[keep]), theta)
    gk = tf.grad(lambda t: full_loss(t, X[keep], y[keep]))(theta)
    unlearned = theta - torch.linalg.solve(Hk, gk)
    retrained = unlearned
    for _ in range(5):
        retrained = retrained - torch.linalg.solve(AF.hessian(lambda t: full_loss(t, X[keep], y[keep]), retrained),
                                                   tf.grad(lambda t: full_loss(t, X[keep], y[keep]))(retrained))
    by_cholesky = torch.cholesky_solve(gk.unsqueeze(1), torch.linalg.cholesky(Hk)).squeeze(1)
    return {"cg": x, "hvp_cg": hvp(x), "test_g": test_g, "influence": influence, "hv_jvp": hv_jvp, "hv_func": hv_func,
            "hv_vjp": hv_vjp, "H": H, "hv_af": hv_af, "vh_af": vh_af, "H_af": H_af, "theta": theta,
            "unlearned": unlearned, "retrained": retrained, "newton_step": theta - unlearned, "by_cholesky": by_cholesky}


def test_influence_functions_and_newton_unlearning():
    ours, _ = run_both(influence_and_unlearning, rtol=1e-8, atol=1e-10)
    for a, b in zip(ours["hvp_cg"], ours["test_g"]):  # CG solved H x = g
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-10)
    for k in ("weight", "bias"):
        np.testing.assert_allclose(ours["hv_jvp"][k], ours["hv_func"][k], rtol=1e-10)
        np.testing.assert_allclose(ours["hv_vjp"][k], ours["hv_func"][k], rtol=1e-10)
    np.testing.assert_allclose(ours["hv_af"][0], ours["hv_func"]["weight"], rtol=1e-10)
    np.testing.assert_allclose(ours["vh_af"][1], ours["hv_func"]["bias"], rtol=1e-10)
    H = np.block([[ours["H_af"][0][0].reshape(3, 3), ours["H_af"][0][1].reshape(3, 1)],
                  [ours["H_af"][1][0].reshape(1, 3), ours["H_af"][1][1].reshape(1, 1)]])
    np.testing.assert_allclose(H, H.T, rtol=1e-12)
    np.testing.assert_allclose(H.sum(1), np.concatenate([ours["hv_func"]["weight"].ravel(), ours["hv_func"]["bias"]]),
                               rtol=1e-10)
    np.testing.assert_allclose(ours["by_cholesky"], ours["newton_step"], rtol=1e-9)
    # one Newton step goes most of the way from the optimum with the sample to the one without it
    assert np.linalg.norm(ours["unlearned"] - ours["retrained"]) < 0.2 * np.linalg.norm(ours["theta"] - ours["retrained"])


def hessian_through_a_cnn(m, act):
    """Hessian-vector products and Hutchinson's trace estimate (Rademacher probes from a generator) of a small CNN's
    label-smoothed loss with respect to its parameters, and the input Hessian applied to the input gradient."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    make = {"gelu": lambda: nn.GELU(approximate="tanh"), "silu": nn.SiLU, "elu": nn.ELU, "mish": nn.Mish,
            "softplus": lambda: nn.Softplus(beta=2)}[act]
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.GroupNorm(1, 3), make(), nn.MaxPool2d(2),
                          nn.Conv2d(3, 4, 2), make(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(4),
                          nn.Linear(4, 3)).double()
    x = torch.randn(4, 2, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (4,))
    params = list(model.parameters())
    g = torch.autograd.grad(F.cross_entropy(model(x), y, label_smoothing=0.1), params, create_graph=True)
    gen = torch.Generator().manual_seed(1)
    v = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    w = [torch.randn(p.shape, generator=gen, dtype=torch.float64) for p in params]
    hv = torch.autograd.grad(g, params, grad_outputs=v, retain_graph=True, allow_unused=True, materialize_grads=True)
    hw = torch.autograd.grad(g, params, grad_outputs=w, retain_graph=True)
    z = [torch.randint(0, 2, p.shape, generator=gen).double() * 2 - 1 for p in params]
    hz = torch.autograd.grad(g, params, grad_outputs=z)
    xi = x.clone().requires_grad_()
    gx, = torch.autograd.grad(F.cross_entropy(model(xi), y), xi, create_graph=True)
    hx, = torch.autograd.grad((gx * gx).sum(), xi)
    return {"hv": hv, "w_hv": sum((a * b).sum() for a, b in zip(w, hv)), "v_hw": sum((a * b).sum() for a, b in zip(v, hw)),
            "trace": sum((a * b).sum() for a, b in zip(hz, z)), "hx": hx}


@pytest.mark.parametrize("act", ["gelu", "silu", "elu", "mish", "softplus"])
def test_hessian_vector_products_through_a_cnn(act):
    ours, _ = run_both(hessian_through_a_cnn, act, rtol=1e-7, atol=1e-9)
    assert ours["w_hv"] == pytest.approx(ours["v_hw"], rel=1e-9)  # the Hessian is symmetric
