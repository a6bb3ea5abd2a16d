# ruff: noqa: B023, E731, F841  (the programs are kept as their authors wrote them)
"""Kernel methods and Gaussian processes written by hand in PyTorch (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same data and initial values, comparing values, gradients, dtypes and training
trajectories, and checked against NumPy by hand where the formula is short (so that each still asserts something
where PyTorch is not installed). Exact GPs: a periodic x RBF + Matérn-5/2 kernel under softplus-constrained raw
parameters, trained by Adam and by ``LBFGS(line_search_fn="strong_wolfe")`` in float32 and float64; a program under
``torch.set_default_dtype(torch.float64)`` (restored after) checking the dtype of every factory, layer and promotion
it touches; a batch of independent GPs ((b, n, n) Choleskys, ``cholesky_solve``/``solve_triangular`` with broadcast
right-hand sides, ``left=False``, upper factors); a parametrized GP's L-BFGS saved and resumed; a GP with derivative
observations (kernel derivatives by ``jacrev``/``jacfwd`` under ``vmap``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, assert_same, pytorch, run_both

# ----------------------------------------------------------------------------------------------
# Exact GP regression: a periodic-times-RBF plus Matérn-5/2 kernel, softplus-constrained raw
# hyperparameters (GPyTorch's Positive constraint), in float32 as written without set_default_dtype
# ----------------------------------------------------------------------------------------------


def periodic_data(n=30, dtype=np.float32):
    rng = np.random.default_rng(1)
    X = np.sort(rng.uniform(0, 6, (n, 1)), 0)
    y = np.sin(2 * np.pi * X[:, 0] / 1.5) + 0.3 * X[:, 0] + 0.1 * rng.standard_normal(n)
    Xs = np.linspace(-0.5, 6.5, 9)[:, None]
    return X.astype(dtype), y.astype(dtype), Xs.astype(dtype)


def composite_gp(m, optimizer="lbfgs", dtype="float32"):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    np_dtype = np.float32 if dtype == "float32" else np.float64
    X, y, Xs = (torch.from_numpy(a) for a in periodic_data(dtype=np_dtype))

    def inv_softplus(x):
        return math.log(math.expm1(x))

    class CompositeKernelGP(nn.Module):
        def __init__(self):
            super().__init__()
            self.raw_period = nn.Parameter(torch.tensor(inv_softplus(1.4), dtype=X.dtype))
            self.raw_per_ls = nn.Parameter(torch.tensor(inv_softplus(1.0), dtype=X.dtype))
            self.raw_rbf_ls = nn.Parameter(torch.tensor(inv_softplus(3.0), dtype=X.dtype))
            self.raw_matern_ls = nn.Parameter(torch.tensor(inv_softplus(2.0), dtype=X.dtype))
            self.raw_outputscale = nn.Parameter(torch.zeros(2, dtype=X.dtype))
            self.raw_noise = nn.Parameter(torch.tensor(-2.0, dtype=X.dtype))
            self.register_buffer("jitter", torch.tensor(1e-5, dtype=X.dtype))

        @property
        def noise(self):
            return F.softplus(self.raw_noise) + 1e-4

        def periodic_rbf(self, x1, x2):
            period, per_ls, rbf_ls = (F.softplus(p) for p in (self.raw_period, self.raw_per_ls, self.raw_rbf_ls))
            diff = x1.unsqueeze(-2) - x2.unsqueeze(-3)  # (n, m, d)
            per = torch.sin(math.pi * diff.abs() / period).pow(2).sum(-1)
            periodic = torch.exp(-2.0 * per / per_ls.pow(2))
            rbf = torch.exp(-0.5 * torch.cdist(x1, x2).pow(2) / rbf_ls.pow(2))
            return periodic * rbf

        def matern52(self, x1, x2):
            ls = F.softplus(self.raw_matern_ls)
            mean = x1.mean(0, keepdim=True)  # GPyTorch centres the inputs before the distance
            r = torch.cdist((x1 - mean) / ls, (x2 - mean) / ls).clamp_min(1e-15)
            s5 = math.sqrt(5) * r
            return (1 + s5 + 5.0 / 3.0 * r ** 2) * torch.exp(-s5)

        def forward(self, x1, x2):
            scales = F.softplus(self.raw_outputscale)
            return scales[0] * self.periodic_rbf(x1, x2) + scales[1] * self.matern52(x1, x2)

        def mll(self, X, y):
            n = X.size(0)
            K = self(X, X)
            K = K + (self.noise + self.jitter) * torch.eye(n, dtype=X.dtype)
            L = torch.linalg.cholesky(K)
            alpha = torch.cholesky_solve(y.unsqueeze(-1), L).squeeze(-1)
            logdet = 2 * torch.log(torch.diagonal(L)).sum()
            return -0.5 * (y @ alpha) - 0.5 * logdet - 0.5 * n * math.log(2 * math.pi)

        def predict(self, X, y, Xs):
            K = self(X, X) + (self.noise + self.jitter) * torch.eye(X.size(0), dtype=X.dtype)
            L = torch.linalg.cholesky(K)
            Kxs = self(X, Xs)
            alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
            mean = (Kxs.transpose(-1, -2) @ alpha).squeeze(-1)
            v = torch.linalg.solve_triangular(L, Kxs, upper=False)
            var = torch.diagonal(self(Xs, Xs)) - v.pow(2).sum(-2)
            return mean, var.clamp_min(1e-10) + self.noise

    model = CompositeKernelGP()
    grads0 = torch.autograd.grad(-model.mll(X, y), list(model.parameters()))
    losses = []
    if optimizer == "lbfgs":
        opt = optim.LBFGS(model.parameters(), lr=0.5, max_iter=15, history_size=10, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = -model.mll(X, y) / X.size(0)
            loss.backward()
            losses.append(loss.item())
            return loss

        for _ in range(2):
            opt.step(closure)
    else:
        opt = optim.Adam(model.parameters(), lr=0.05)
        for _ in range(25):
            opt.zero_grad()
            loss = -model.mll(X, y) / X.size(0)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        mean, var = model.predict(X, y, Xs)
    grads = torch.autograd.grad(-model.mll(X, y), [model.raw_period, model.raw_outputscale])
    return {"grads0": grads0, "losses": losses, "params": {k: v.detach() for k, v in model.named_parameters()},
            "mean": mean, "var": var, "grads": grads,
            "dtypes": [str(t.dtype).split(".")[-1] for t in (mean, var, *grads)],
            "period": F.softplus(model.raw_period).item()}


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_composite_kernel_gp_float32(optimizer):
    ours, theirs = run_both(composite_gp, optimizer=optimizer, compare=False)
    assert all(d == "float32" for d in ours["dtypes"])
    assert ours["losses"][-1] < ours["losses"][0]
    if theirs is None:
        return
    assert ours["dtypes"] == theirs["dtypes"]
    # float32: the losses differ in the sixth digit from the second step (the Cholesky rounds differently), the
    # line search's far trial point amplifies that, and L-BFGS walks the RBF lengthscale along a flat valley
    # (softplus^-1 of it near 16) so the parameters are compared loosely, and the final gradient in the period
    # moves 3% for a 1e-5 change of it (four periods in the data: a steep curvature)
    assert_same(ours["grads0"], theirs["grads0"], rtol=1e-5, atol=1e-5)
    # (with NumPy 2.4.6 on a Haswell machine the far trial point's loss moved 5% and the search took two more
    # evaluations at the end: the best loss so far is compared, over the evaluations both made, and the posterior,
    # which follows the parameters, as loosely as they are)
    steps = min(len(ours["losses"]), len(theirs["losses"]))
    assert abs(len(ours["losses"]) - len(theirs["losses"])) <= 2
    assert_same(np.minimum.accumulate(ours["losses"][:steps]), np.minimum.accumulate(theirs["losses"][:steps]),
                rtol=2e-3, atol=1e-3)
    assert_same({k: ours[k] for k in ("mean", "var")}, {k: theirs[k] for k in ("mean", "var")}, rtol=1e-2, atol=1e-3)
    # (the periodic lengthscale moved 2.3% on that machine; on an AVX-512 one, whose BLAS and LAPACK kernels round
    # otherwise, the raw outputscale moved 5.7%)
    assert_same(ours["params"], theirs["params"], rtol=1e-1, atol=1e-3)
    if len(ours["losses"]) == len(theirs["losses"]):  # (the last gradient is of the last evaluation: another
        assert_same(ours["grads"], theirs["grads"], rtol=5e-2, atol=1e-3)  # point where the search ran longer)


def test_composite_kernel_gp_float64_lbfgs():
    ours, _ = run_both(composite_gp, optimizer="lbfgs", dtype="float64", rtol=1e-7, atol=1e-9)
    assert all(d.endswith("float64") for d in ours["dtypes"])
    assert abs(ours["period"] - 1.5) < 0.1  # the period of the data is recovered


def test_lbfgs_evaluates_the_loss_as_a_number_without_the_requires_grad_warning(T, monkeypatch):
    """L-BFGS turns each closure's loss into a float under no_grad, as PyTorch's does: float() of a tensor that
    requires grad warns only while grad mode is on (chainrule's line search did it inside enable_grad)."""
    import sys
    import warnings

    if T.__name__ == "autograd":
        # the warning is given once a process
        monkeypatch.setattr(sys.modules["autograd.warn_once"], "_warned_once", set())
    w = T.tensor([1.0, -2.0], requires_grad=True)
    opt = (OURS.optim if T.__name__ == "autograd" else pytorch().optim).LBFGS([w], max_iter=50,
                                                                              line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ((w - 3) ** 4).sum()
        loss.backward()
        return loss

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = opt.step(closure)
    assert first.item() == 16 + 625
    assert ((w.detach() - 3) ** 4).sum().item() < 1e-3


# ----------------------------------------------------------------------------------------------
# A program in float64 by torch.set_default_dtype (restored after): factories, layers, Python
# scalars and NumPy float32 data all follow it or not as in PyTorch
# ----------------------------------------------------------------------------------------------


def default_float64_gp(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rng = np.random.default_rng(2)
        X_np = rng.uniform(-2, 2, (20, 2)).astype(np.float32)  # float32 data stays float32 through from_numpy
        y_np = np.tanh(X_np[:, 0]) * np.cos(X_np[:, 1])
        X32 = torch.from_numpy(X_np)
        X = torch.tensor(X_np.astype(np.float64))
        y = torch.tensor(y_np.tolist())  # a Python list of floats takes the default dtype
        dtypes = {
            "from_numpy": X32.dtype, "tensor_list": y.dtype, "zeros": torch.zeros(2).dtype,
            "arange_float": torch.arange(5.0).dtype, "arange_int": torch.arange(5).dtype,
            "linspace": torch.linspace(0, 1, 3).dtype, "randn": torch.randn(2).dtype, "rand": torch.rand(1).dtype,
            "eye": torch.eye(2).dtype, "full": torch.full((2,), 1.5).dtype, "scalar": torch.tensor(0.5).dtype,
            "linear": nn.Linear(2, 2).weight.dtype, "param": nn.Parameter(torch.ones(1)).dtype,
            "int_times_float": (torch.arange(3) * 0.5).dtype, "f32_times_py": (X32 * 2.0).dtype,
            "f32_plus_f64_0d": (X32 + torch.tensor(1.0)).dtype, "empty": torch.empty(0).dtype,
            "mean_int": torch.tensor([1, 2]).float().dtype, "ones_like": torch.ones_like(X32).dtype,
            "from_float": torch.as_tensor(2.5).dtype, "sigmoid_int_default": torch.sigmoid(torch.tensor([1, 2])).dtype,
        }

        class ARDRBF(nn.Module):
            def __init__(self, d):
                super().__init__()
                self.raw_lengthscale = nn.Parameter(torch.zeros(d))
                self.raw_outputscale = nn.Parameter(torch.tensor(0.0))
                self.raw_noise = nn.Parameter(torch.tensor(-3.0))

            def forward(self, a, b):
                ls = F.softplus(self.raw_lengthscale)
                d2 = torch.cdist(a / ls, b / ls, compute_mode="use_mm_for_euclid_dist") ** 2
                return F.softplus(self.raw_outputscale) * torch.exp(-0.5 * d2)

        k = ARDRBF(2)
        opt = optim.LBFGS(k.parameters(), lr=1.0, max_iter=30, line_search_fn="strong_wolfe")

        def nmll():
            K = k(X, X) + (F.softplus(k.raw_noise) + 1e-6) * torch.eye(len(X))
            L = torch.linalg.cholesky(K)
            a = torch.linalg.solve_triangular(L, y[:, None], upper=False)
            return 0.5 * a.pow(2).sum() + L.diagonal().log().sum() + 0.5 * len(X) * math.log(2 * math.pi)

        def closure():
            opt.zero_grad()
            loss = nmll()
            loss.backward()
            return loss

        start = nmll().item()
        opt.step(closure)
        final = nmll()
        hyper = [p.detach().clone() for p in k.parameters()]
        dtypes["final"] = final.dtype
        dtypes["hyper"] = hyper[0].dtype
    finally:
        torch.set_default_dtype(previous)
    after = torch.zeros(1).dtype
    return {"dtypes": {k: str(v).split(".")[-1] for k, v in dtypes.items()}, "after": str(after).split(".")[-1],
            "start": start, "final": final, "hyper": hyper}


def test_set_default_dtype_float64_program():
    ours, _ = run_both(default_float64_gp, rtol=1e-7, atol=1e-9)
    d = ours["dtypes"]
    assert d["from_numpy"] == "float32" and d["f32_times_py"] == "float32" and d["f32_plus_f64_0d"] == "float32"
    assert d["arange_int"] == "int64" and d["mean_int"] == "float32"
    for name in ("tensor_list", "zeros", "arange_float", "linspace", "randn", "rand", "eye", "full", "scalar",
                 "linear", "param", "int_times_float", "empty", "ones_like", "from_float", "sigmoid_int_default",
                 "final", "hyper"):
        assert d[name] == ("float32" if name == "ones_like" else "float64"), name
    assert ours["after"] == "float32"
    assert ours["final"] < ours["start"]


# ----------------------------------------------------------------------------------------------
# A batch of independent GPs (one per output, GPyTorch's batch_shape): (b, n, n) Choleskys,
# cholesky_solve / solve_triangular with batch and broadcast shapes, gradients per batch member
# ----------------------------------------------------------------------------------------------


def batch_gp_data(b=3, n=18, dtype=np.float64):
    rng = np.random.default_rng(3)
    X = rng.uniform(-2, 2, (n, 1))
    Y = np.stack([np.sin((k + 1) * X[:, 0]) + 0.05 * rng.standard_normal(n) for k in range(b)])  # (b, n)
    Xs = np.linspace(-2.5, 2.5, 6)[:, None]
    return X.astype(dtype), Y.astype(dtype), Xs.astype(dtype)


def batch_gp(m, dtype="float64"):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, Y, Xs = (torch.from_numpy(a) for a in batch_gp_data(dtype=np.float64 if dtype == "float64" else np.float32))
    b, n = Y.shape

    class BatchRBF(nn.Module):
        def __init__(self, batch_shape):
            super().__init__()
            self.raw_lengthscale = nn.Parameter(torch.zeros(*batch_shape, 1, 1, dtype=X.dtype))
            self.raw_outputscale = nn.Parameter(torch.zeros(*batch_shape, dtype=X.dtype))
            self.raw_noise = nn.Parameter(torch.full((*batch_shape, 1), -2.0, dtype=X.dtype))

        def forward(self, x1, x2):  # x1 (n, d) broadcast against the batch of lengthscales
            ls = self.raw_lengthscale.exp()
            x1_, x2_ = x1.expand(b, *x1.shape) / ls, x2.expand(b, *x2.shape) / ls
            sq = (x1_.pow(2).sum(-1, keepdim=True) - 2 * x1_ @ x2_.transpose(-2, -1)
                  + x2_.pow(2).sum(-1, keepdim=True).transpose(-2, -1)).clamp_min_(0)
            return self.raw_outputscale.exp()[..., None, None] * torch.exp(-0.5 * sq)

    kern = BatchRBF(torch.Size([b]))
    opt = optim.Adam(kern.parameters(), lr=0.05)

    def neg_mll():
        K = kern(X, X)
        K = K + torch.diag_embed(kern.raw_noise.exp().expand(b, n)) + 1e-6 * torch.eye(n, dtype=X.dtype)
        L = torch.linalg.cholesky(K)  # (b, n, n)
        alpha = torch.cholesky_solve(Y.unsqueeze(-1), L)  # (b, n, 1)
        quad = (Y.unsqueeze(-1) * alpha).sum((-1, -2))
        logdet = 2 * L.diagonal(dim1=-2, dim2=-1).log().sum(-1)
        return 0.5 * (quad + logdet + n * math.log(2 * math.pi))  # (b,)

    history = []
    for _ in range(15):
        opt.zero_grad()
        per_output = neg_mll()
        per_output.sum().backward()
        opt.step()
        history.append(per_output.detach().clone())

    K = kern(X, X) + torch.diag_embed(kern.raw_noise.exp().expand(b, n)) + 1e-6 * torch.eye(n, dtype=X.dtype)
    L = torch.linalg.cholesky(K)
    Ksx = kern(Xs, X)  # (b, s, n)
    # one right-hand side shared by every batch member (broadcast), and the cross-covariance batched
    shared = torch.cholesky_solve(torch.ones(n, 2, dtype=X.dtype), L)
    A = torch.linalg.solve_triangular(L, Ksx.transpose(-1, -2), upper=False)  # (b, n, s)
    At = torch.linalg.solve_triangular(L.transpose(-1, -2), Ksx, upper=True, left=False)  # (b, s, n): X U = B
    mean = (Ksx @ torch.cholesky_solve(Y.unsqueeze(-1), L)).squeeze(-1)
    var = kern.raw_outputscale.exp()[:, None] - A.pow(2).sum(-2)
    upper = torch.linalg.cholesky(K, upper=True)
    alpha_u = torch.cholesky_solve(Y.unsqueeze(-1), upper, upper=True)
    # gradients through every solve, from a loss of the predictive mean and variance
    loss = mean.pow(2).sum() + var.sum() + shared.sum() + At.pow(2).mean() + alpha_u.abs().sum()
    grads = torch.autograd.grad(loss, list(kern.parameters()))
    return {"history": history, "mean": mean, "var": var, "shared": shared, "At": At, "alpha_u": alpha_u,
            "grads": grads, "shapes": [tuple(t.shape) for t in (shared, A, At)],
            "dtype": str(mean.dtype).split(".")[-1], "hyper": [p.detach() for p in kern.parameters()]}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_batch_of_gps(dtype):
    tol = dict(rtol=1e-8, atol=1e-10) if dtype == "float64" else dict(rtol=2e-4, atol=2e-4)
    ours, _ = run_both(batch_gp, dtype=dtype, **tol)
    assert ours["dtype"] == dtype
    assert ours["shapes"] == [(3, 18, 2), (3, 18, 6), (3, 6, 18)]
    assert (ours["history"][-1] < ours["history"][0]).all()
    if dtype == "float64":
        X, Y, Xs = batch_gp_data()
        ls, sf2, sn2 = (np.exp(h) for h in ours["hyper"])
        for j in range(3):
            k = lambda a, c: sf2[j] * np.exp(-0.5 * (a - c.T) ** 2 / ls[j, 0, 0] ** 2)
            K = k(X, X) + (sn2[j, 0] + 1e-6) * np.eye(18)
            np.testing.assert_allclose(ours["mean"][j], k(Xs, X) @ np.linalg.solve(K, Y[j]), rtol=1e-7, atol=1e-9)
            np.testing.assert_allclose(ours["alpha_u"][j, :, 0], np.linalg.solve(K, Y[j]), rtol=1e-7, atol=1e-9)
            np.testing.assert_allclose(ours["At"][j], k(Xs, X) @ np.linalg.inv(np.linalg.cholesky(K)).T, rtol=1e-7,
                                       atol=1e-9)
            np.testing.assert_allclose(ours["var"][j], sf2[j] - np.einsum("sn,ns->s", k(Xs, X),
                                       np.linalg.solve(K, k(X, Xs))), rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------------------------
# GPyTorch-style constraints by torch.nn.utils.parametrize (a Softplus with right_inverse on each
# hyperparameter, the closure under parametrize.cached()), L-BFGS stopped after three steps, its
# state_dict and the model's saved with torch.save and loaded into fresh objects, then resumed
# ----------------------------------------------------------------------------------------------


def parametrized_gp_lbfgs_resume(m, resume=True):
    import io

    torch, nn, optim = m.torch, m.nn, m.optim
    P = nn.utils.parametrize
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.uniform(-3, 3, (30, 1)))
    y = torch.sin(X[:, 0]) + 0.1 * torch.from_numpy(rng.standard_normal(30))

    class Softplus(nn.Module):
        def forward(self, x):
            return nn.functional.softplus(x)

        def right_inverse(self, v):
            return torch.log(torch.expm1(v))

    class GP(nn.Module):
        def __init__(self):
            super().__init__()
            self.lengthscale = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
            self.noise = nn.Parameter(torch.tensor(0.1, dtype=torch.float64))
            self.outputscale = nn.Parameter(torch.tensor(1.0, dtype=torch.float64))
            for name in ("lengthscale", "noise", "outputscale"):
                P.register_parametrization(self, name, Softplus())

        def nll(self):
            K = self.outputscale * torch.exp(-0.5 * torch.cdist(X, X) ** 2 / self.lengthscale ** 2) \
                + self.noise * torch.eye(30, dtype=torch.float64)
            L = torch.linalg.cholesky(K)
            return 0.5 * (y[:, None] * torch.cholesky_solve(y[:, None], L)).sum() + L.diagonal().log().sum()

    gp = GP()
    opt = optim.LBFGS(gp.parameters(), lr=0.3, max_iter=4, history_size=5, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        with P.cached():
            loss = gp.nll()
        loss.backward()
        return loss

    losses = [opt.step(closure).item() for _ in range(3)]
    if resume:
        buf = io.BytesIO()
        torch.save({"model": gp.state_dict(), "opt": opt.state_dict()}, buf)
        buf.seek(0)
        checkpoint = torch.load(buf, weights_only=False)
        gp = GP()
        gp.load_state_dict(checkpoint["model"])
        opt = optim.LBFGS(gp.parameters(), lr=0.3, max_iter=4, history_size=5, line_search_fn="strong_wolfe")
        opt.load_state_dict(checkpoint["opt"])
    losses += [opt.step(closure).item() for _ in range(3)]
    state = opt.state_dict()["state"][0]
    return {"losses": losses, "params": [gp.lengthscale.detach(), gp.noise.detach(), gp.outputscale.detach()],
            "keys": sorted(state), "n_iter": state["n_iter"], "func_evals": state["func_evals"],
            "history": len(state["old_dirs"]), "state_keys": sorted(gp.state_dict())}


def test_parametrized_gp_lbfgs_resumes_from_a_checkpoint():
    ours, _ = run_both(parametrized_gp_lbfgs_resume, rtol=1e-8, atol=1e-10)
    straight = parametrized_gp_lbfgs_resume(OURS, resume=False)
    np.testing.assert_allclose(ours["losses"], straight["losses"], rtol=1e-12)
    assert ours["state_keys"] == ["parametrizations.lengthscale.original", "parametrizations.noise.original",
                                  "parametrizations.outputscale.original"]


# ----------------------------------------------------------------------------------------------
# A GP with derivative observations (Solak et al.): the joint covariance of values and gradients
# from the kernel's derivatives by torch.func (jacrev, jacfwd(jacrev), vmapped over pairs) against
# the closed form, conditioning on gradients, the hyperparameter's gradient through it all
# ----------------------------------------------------------------------------------------------


def derivative_gp(m):
    torch = m.torch
    func = torch.func
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        rng = np.random.default_rng(14)
        X = torch.tensor(rng.uniform(-2, 2, (6, 2)))
        f = lambda x: torch.sin(x[..., 0]) * torch.cos(x[..., 1])
        df = lambda x: torch.stack([torch.cos(x[..., 0]) * torch.cos(x[..., 1]),
                                    -torch.sin(x[..., 0]) * torch.sin(x[..., 1])], -1)
        log_ls = torch.tensor(0.0, requires_grad=True)

        def k(a, b, log_ls):
            return torch.exp(-0.5 * ((a - b) ** 2).sum() / torch.exp(2 * log_ls))

        def blocks(log_ls):
            pair = lambda fn: func.vmap(func.vmap(fn, (None, 0)), (0, None))(X, X)
            K = pair(lambda a, b: k(a, b, log_ls))  # (n, n)
            K_fd = pair(lambda a, b: func.jacrev(k, argnums=1)(a, b, log_ls))  # (n, n, 2): cov(f(a), df(b))
            K_dd = pair(lambda a, b: func.jacfwd(func.jacrev(k, argnums=0), argnums=1)(a, b, log_ls))  # (n, n, 2, 2)
            n = X.shape[0]
            top = torch.cat([K, K_fd.reshape(n, 2 * n)], 1)
            bottom = torch.cat([K_fd.permute(1, 2, 0).reshape(2 * n, n),
                                K_dd.permute(0, 2, 1, 3).reshape(2 * n, 2 * n)], 1)
            return torch.cat([top, bottom], 0), K_fd, K_dd

        Kjoint, K_fd, K_dd = blocks(log_ls)
        # the closed forms for the RBF
        ell2 = torch.exp(2 * log_ls)
        diff = X[:, None, :] - X[None, :, :]
        K = torch.exp(-0.5 * (diff ** 2).sum(-1) / ell2)
        K_fd_closed = K[..., None] * diff / ell2
        K_dd_closed = K[..., None, None] * (torch.eye(2) / ell2 - diff[..., :, None] * diff[..., None, :] / ell2 ** 2)
        obs = torch.cat([f(X), df(X).reshape(-1)])
        A = Kjoint + 1e-6 * torch.eye(Kjoint.shape[0])
        L = torch.linalg.cholesky(A)
        alpha = torch.cholesky_solve(obs[:, None], L)[:, 0]
        nll = 0.5 * obs @ alpha + L.diagonal().log().sum()
        grad = torch.autograd.grad(nll, log_ls)[0]
        Xs = torch.tensor([[0.3, -0.4], [1.1, 0.7]])
        ks = torch.cat([torch.stack([torch.stack([k(a, b, log_ls) for b in X]) for a in Xs]),
                        func.vmap(func.vmap(lambda a, b: func.jacrev(k, argnums=1)(a, b, log_ls), (None, 0)),
                                  (0, None))(Xs, X).reshape(2, -1)], 1)
        mean = ks @ alpha
    finally:
        torch.set_default_dtype(previous)
    return {"K_fd": K_fd, "K_dd": K_dd, "K_fd_closed": K_fd_closed, "K_dd_closed": K_dd_closed, "nll": nll,
            "grad": grad, "mean": mean, "truth": f(Xs), "dtype": str(mean.dtype).split(".")[-1]}


def test_gp_with_derivative_observations():
    ours, _ = run_both(derivative_gp, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["K_fd"], ours["K_fd_closed"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["K_dd"], ours["K_dd_closed"], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours["mean"], ours["truth"], atol=0.15)
    assert ours["dtype"] == "float64"
