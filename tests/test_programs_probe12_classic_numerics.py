# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Classical machine learning and Bayesian numerics as GPyTorch / Pyro / scikit-learn-in-torch users write them, run
as tests/probe12_classic_common.py says. Fitting and numerics: logistic regression by
``LBFGS(line_search_fn="strong_wolfe")`` (binary and multinomial); matrix calculus in training loops (``slogdet`` of
a negative determinant, ``inv``, ``pinv`` rank-deficient and hermitian, ``matrix_exp``, eigh-based matrix log /
square root, nuclear norm); the Gaussian's quantile in its tails (copula scores, truncated-normal draws by the
inverse CDF, probit regression with ``special.log_ndtr``)."""

import math

import numpy as np

from .probe12_classic_common import classification_data
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Logistic regression fitted by L-BFGS with a strong-Wolfe line search (sklearn's lbfgs solver in torch):
# binary with an L2 penalty on the weights only, and multinomial with cross_entropy
# ----------------------------------------------------------------------------------------------


def logistic_lbfgs(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Xn, labels = classification_data()
    X = torch.from_numpy(Xn)
    yb = torch.from_numpy((labels == 0).astype(np.float64))
    yc = torch.from_numpy(labels)

    C = 1.0
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = optim.LBFGS([w, b], lr=1, max_iter=100, tolerance_grad=1e-10, tolerance_change=1e-12,
                      history_size=10, line_search_fn="strong_wolfe")
    evals = []

    def closure():
        opt.zero_grad()
        logits = X @ w + b
        loss = F.binary_cross_entropy_with_logits(logits, yb, reduction="sum") + 0.5 / C * w.dot(w)
        loss.backward()
        evals.append(loss.item())
        return loss

    first = opt.step(closure)
    state = opt.state[opt._params[0]]
    binary = dict(w=w.detach().clone(), b=b.detach().clone(), first=first.detach(), n_iter=state["n_iter"],
                  func_evals=state["func_evals"], evals=evals)

    linear = nn.Linear(3, 3).double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor([[0.1, -0.2, 0.3], [0.0, 0.1, -0.1], [0.2, 0.2, 0.2]]))
        linear.bias.zero_()
    opt = optim.LBFGS(linear.parameters(), lr=0.5, max_iter=30, line_search_fn="strong_wolfe")
    losses = []
    for epoch in range(2):
        def closure():
            opt.zero_grad()
            loss = F.cross_entropy(linear(X), yc) + 1e-2 * linear.weight.pow(2).sum()
            loss.backward()
            return loss
        losses.append(opt.step(closure).item())
    with torch.no_grad():
        proba = F.softmax(linear(X), dim=1)
        acc = (proba.argmax(1) == yc).double().mean()
    return dict(binary=binary, losses=losses, weight=linear.weight.detach(), bias=linear.bias.detach(),
                proba=proba, acc=acc)


def test_logistic_regression_lbfgs():
    ours, _ = run_both(logistic_lbfgs, rtol=1e-7, atol=1e-8)
    Xn, labels = classification_data()
    w, b = ours["binary"]["w"], ours["binary"]["b"]
    p = 1 / (1 + np.exp(-(Xn @ w + b)))
    grad = Xn.T @ (p - (labels == 0)) + w  # the penalised objective is stationary at the optimum
    np.testing.assert_allclose(grad, 0, atol=1e-4)
    assert ours["acc"] > 0.8


# ----------------------------------------------------------------------------------------------
# Matrix calculus inside training loops: fit through slogdet (a negative determinant), inv, pinv of a
# rank-deficient rectangular matrix, matrix_exp of a non-normal generator, eigh-based matrix square root
# and logarithm (the log-Euclidean mean of SPD matrices), svdvals / nuclear norm, and the Hessian of a GP
# marginal likelihood (second derivatives of cholesky, cholesky_solve and solve_triangular)
# ----------------------------------------------------------------------------------------------


def matrix_calculus(m):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(10)
    dt = torch.float64
    out = {}

    # slogdet / inv: maximum-likelihood Gaussian precision by gradient (det of the start matrix is negative)
    S = torch.from_numpy(np.cov(rng.standard_normal((4, 30))))
    P = torch.tensor([[1.0, 2.0, 0, 0], [2.0, 1.0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1.0]], dtype=dt, requires_grad=True)
    sign, logabs = torch.linalg.slogdet(P)
    out["slogdet0"] = torch.stack([sign, logabs])
    gl = torch.autograd.grad(logabs, P)[0]
    out["slogdet_grad"] = gl
    out["inv_T"] = torch.linalg.inv(P).T.detach()
    B = torch.from_numpy(rng.standard_normal((4, 4))).requires_grad_(True)
    opt = optim.SGD([B], lr=0.01)
    for step in range(10):
        opt.zero_grad()
        Prec = B @ B.T + 0.1 * torch.eye(4, dtype=dt)
        loss = torch.trace(S @ Prec) - torch.logdet(Prec) + 0.1 * torch.linalg.inv(Prec).diagonal().sum()
        loss.backward()
        opt.step()
    out["B"] = B.detach()

    # pinv of a rank-deficient tall matrix (hermitian=False) and of a PSD one (hermitian=True)
    A = torch.from_numpy(rng.standard_normal((6, 2)) @ rng.standard_normal((2, 4))).requires_grad_(True)
    b = torch.from_numpy(rng.standard_normal(6))
    x = torch.linalg.pinv(A, rtol=1e-10) @ b
    x.pow(2).sum().backward()
    out["pinv_x"], out["pinv_grad"] = x.detach(), A.grad.clone()
    Q = torch.from_numpy(rng.standard_normal((4, 4))).requires_grad_(True)
    Ppsd = Q @ Q.T
    Pi = torch.linalg.pinv(Ppsd, hermitian=True)
    (Pi * torch.arange(16, dtype=dt).reshape(4, 4)).sum().backward()
    out["pinv_h"], out["pinv_h_grad"] = Pi.detach(), Q.grad.clone()

    # matrix_exp: learn a generator whose exponential matches a target rotation-and-shear
    target = torch.linalg.matrix_exp(torch.tensor([[0.0, -1.2, 0.3], [1.2, 0.0, 0.5], [0.0, 0.0, -0.4]], dtype=dt))
    G = torch.zeros(3, 3, dtype=dt, requires_grad=True)
    opt = optim.Adam([G], lr=0.05)
    exp_losses = []
    for step in range(15):
        opt.zero_grad()
        loss = (torch.linalg.matrix_exp(G) - target).pow(2).sum()
        loss.backward()
        opt.step()
        exp_losses.append(loss.item())
    big = (3.0 * torch.from_numpy(rng.standard_normal((3, 3)))).requires_grad_(True)  # scaling and squaring
    E = torch.matrix_exp(big)
    E.sum().backward()
    out.update(exp_losses=exp_losses, G=G.detach(), big_exp=E.detach(), big_grad=big.grad.clone())

    # eigh-based matrix functions: log-Euclidean mean of SPD matrices and a matrix square root
    def spd_fn(M, fn):
        evals, evecs = torch.linalg.eigh(M)
        return evecs @ torch.diag_embed(fn(evals)) @ evecs.mT

    mats = [torch.from_numpy(a @ a.T + 0.5 * np.eye(3)) for a in rng.standard_normal((4, 3, 3))]
    M = (sum(mats) / len(mats)).requires_grad_(True)  # the arithmetic mean to start (eye has a repeated eigenvalue)
    opt = optim.SGD([M], lr=0.1)
    le_losses = []
    for step in range(10):
        opt.zero_grad()
        Msym = 0.5 * (M + M.T)
        logM = spd_fn(Msym, torch.log)
        loss = sum((logM - spd_fn(Si, torch.log)).pow(2).sum() for Si in mats)
        loss.backward()
        opt.step()
        le_losses.append(loss.item())
    Msqrt = spd_fn(mats[0].clone().requires_grad_(True), torch.sqrt)
    out.update(le_losses=le_losses, M=M.detach(), sqrt_sq=(Msqrt @ Msqrt).detach())

    # svdvals and the nuclear norm as a low-rank regulariser (matrix completion)
    W = torch.from_numpy(rng.standard_normal((5, 4))).requires_grad_(True)
    mask = torch.from_numpy(rng.uniform(size=(5, 4)) < 0.6)
    Y = torch.from_numpy(rng.standard_normal((5, 2)) @ rng.standard_normal((2, 4)))
    opt = optim.SGD([W], lr=0.05)
    for step in range(10):
        opt.zero_grad()
        loss = ((W - Y)[mask]).pow(2).sum() + 0.1 * torch.linalg.matrix_norm(W, ord="nuc")
        loss.backward()
        opt.step()
    out.update(W=W.detach(), svdvals=torch.linalg.svdvals(W.detach()), cond=torch.linalg.cond(W.detach()))
    return out


def test_matrix_calculus_in_training_loops():
    ours, _ = run_both(matrix_calculus, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(ours["slogdet0"], [-1.0, math.log(3.0)], rtol=1e-12)
    np.testing.assert_allclose(ours["slogdet_grad"], ours["inv_T"], rtol=1e-12)
    assert ours["exp_losses"][-1] < ours["exp_losses"][0]
    assert ours["le_losses"][-1] < ours["le_losses"][0]


# ----------------------------------------------------------------------------------------------
# The Gaussian's quantile in its tails: a Gaussian copula's normal scores of ranks (Normal.icdf near 0 and 1),
# truncated-normal draws by the inverse CDF (a BoTorch/EI idiom), and a probit regression whose likelihood is
# special.log_ndtr, fitted by L-BFGS
# ----------------------------------------------------------------------------------------------


def gaussian_tails(m):
    torch, optim = m.torch, m.optim
    D = torch.distributions
    f64 = dict(dtype=torch.float64)
    std = D.Normal(torch.tensor(0.0, **f64), torch.tensor(1.0, **f64))
    rng = np.random.default_rng(17)
    data = torch.from_numpy(rng.lognormal(size=(200, 2)))
    ranks = data.argsort(0).argsort(0).to(torch.float64) + 1
    u = ranks / (data.shape[0] + 1)
    scores = std.icdf(u)  # normal scores
    corr = torch.corrcoef(scores.T)
    # extreme quantiles, as a tail-risk program asks for them
    tail_p = torch.tensor([1e-12, 1e-9, 1e-6, 1 - 1e-6, 1 - 1e-9], **f64)
    tail_z = std.icdf(tail_p)

    # truncated N(mu, sigma) on [a, b] by the inverse CDF, differentiable in mu and sigma
    mu = torch.tensor(0.3, **f64, requires_grad=True)
    sigma = torch.tensor(0.8, **f64, requires_grad=True)
    a, b = 2.5, 6.0
    torch.manual_seed(0)
    uu = torch.rand(50, **f64)
    alpha, beta = (a - mu) / sigma, (b - mu) / sigma
    cdf_a, cdf_b = std.cdf(alpha), std.cdf(beta)
    draws = mu + sigma * std.icdf(cdf_a + uu * (cdf_b - cdf_a))
    draws.mean().backward()

    # probit regression by L-BFGS on -Σ log Φ(±x·w)
    Xn, labels = classification_data(n=80, d=3, classes=2, seed=18)
    X, s = torch.from_numpy(Xn), torch.from_numpy(2.0 * labels - 1)
    w = torch.zeros(3, **f64, requires_grad=True)
    opt = optim.LBFGS([w], line_search_fn="strong_wolfe", max_iter=50)

    def closure():
        opt.zero_grad()
        loss = -torch.special.log_ndtr(s * (X @ w)).sum() + 0.5 * w.dot(w)
        loss.backward()
        return loss

    opt.step(closure)
    return dict(scores=scores, corr=corr, tail_z=tail_z, draws=draws.detach(), grads=torch.stack([mu.grad, sigma.grad]),
                w=w.detach(), ndtri=torch.special.ndtri(tail_p), erfinv=torch.erfinv(2 * tail_p - 1))


def test_gaussian_tails():
    ours, _ = run_both(gaussian_tails, rtol=1e-11, atol=1e-12)
    assert np.all((ours["draws"] >= 2.5) & (ours["draws"] <= 6.0))
    np.testing.assert_allclose(ours["tail_z"][:3], [-7.034484, -5.997807, -4.753424], rtol=1e-6)
    np.testing.assert_allclose(ours["scores"].mean(0), 0, atol=1e-12)  # ranks' scores are symmetric
