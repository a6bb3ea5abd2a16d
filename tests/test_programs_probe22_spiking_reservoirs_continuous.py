# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Spiking and other dynamical, biologically inspired networks as snnTorch, SpikingJelly, Norse, BindsNET and papers'
reference code write them, run as tests/probe22_spiking_common.py says. Reservoirs and continuous time: an echo state
network (``linalg.eigvals`` spectral radius, ridge readouts by ``linalg.solve``, ``inv``, ``lstsq`` and ``pinv``;
gradients through ``eigvals`` and ``solve``), a sparse reservoir, LTC and CfC cells (default, pure, no-gate), event
streams binned into frames and voxel grids."""

import numpy as np
import pytest

from .probe22_spiking_common import dtype_name
from .pytorch_programs import run_both

pytestmark = [pytest.mark.filterwarnings(r"ignore:.*jit\.script.* is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")]


# ----------------------------------------------------------------------------------------------
# reservoirs: an echo state network
# ----------------------------------------------------------------------------------------------


def echo_state_network(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(42)
    N, n_in = 40, 2
    W = torch.rand(N, N, dtype=torch.float64) - 0.5
    mask = torch.rand(N, N) > 0.2
    W[mask] = 0
    eigs = torch.linalg.eigvals(W)
    rho = torch.max(torch.abs(eigs))
    W *= 0.9 / rho
    W_in = (torch.rand(N, 1 + n_in, dtype=torch.float64) - 0.5) * 1.0
    t = torch.arange(0, 300, dtype=torch.float64)
    u = torch.stack([torch.sin(t / 5), torch.cos(t / 7)], 1)
    target = torch.sin((t + 1) / 5).unsqueeze(1)
    a = 0.3  # leaking rate
    x = torch.zeros(N, dtype=torch.float64)
    X = torch.zeros(1 + n_in + N, 300, dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    for k in range(300):
        x = (1 - a) * x + a * torch.tanh(W_in @ torch.cat([one, u[k]]) + W @ x)
        X[:, k] = torch.cat([one, u[k], x])
    washout = 50
    Xw, Yw = X[:, washout:], target[washout:].t()
    reg = 1e-6
    eye = torch.eye(1 + n_in + N, dtype=torch.float64)
    W_out = torch.linalg.solve(Xw @ Xw.T + reg * eye, Xw @ Yw.T).T
    W_out_inv = Yw @ Xw.T @ torch.linalg.inv(Xw @ Xw.T + reg * eye)
    fit = torch.linalg.lstsq(Xw.T, Yw.T)
    pinv = torch.linalg.pinv(Xw.T) @ Yw.T
    return dict(W=W, rho=rho, eig_dtype=dtype_name(eigs.dtype), rho_dtype=dtype_name(rho.dtype),
                radius_after=torch.linalg.eigvals(W).abs().max(), X=Xw, Y=Yw, W_out=W_out, W_out_inv=W_out_inv,
                mse=F.mse_loss(W_out @ Xw, Yw), lstsq_pred=Xw.T @ fit.solution, pinv_pred=Xw.T @ pinv,
                rank=fit.rank, spectral_norm=torch.linalg.matrix_norm(W, ord=2), svdvals=torch.linalg.svdvals(W))


def test_echo_state_network_spectral_radius_and_ridge_readout():
    ours, _ = run_both(echo_state_network, rtol=1e-6, atol=1e-8)
    assert ours["eig_dtype"] == "complex128" and ours["rho_dtype"] == "float64"
    np.testing.assert_allclose(ours["radius_after"], 0.9, rtol=1e-10)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(ours["W"])).max(), 0.9, rtol=1e-10)
    X, Y = ours["X"], ours["Y"]
    W_out = ours["W_out"]
    # the ridge readout solves its normal equations
    np.testing.assert_allclose((X @ X.T + 1e-6 * np.eye(len(X))) @ W_out.T, X @ Y.T, atol=1e-8)
    np.testing.assert_allclose(ours["W_out_inv"], W_out, rtol=1e-4, atol=1e-6)
    assert ours["mse"] < 1e-3
    np.testing.assert_allclose(ours["lstsq_pred"], ours["pinv_pred"], atol=1e-6)
    np.testing.assert_allclose(ours["spectral_norm"], ours["svdvals"][0], rtol=1e-12)
    np.testing.assert_allclose(ours["svdvals"], np.linalg.svd(ours["W"], compute_uv=False), rtol=1e-10)


def differentiable_reservoir(m):
    torch = m.torch
    torch.manual_seed(1)
    W = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    radius = torch.linalg.eigvals(W).abs().max()
    radius.backward()
    X = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)
    Y = torch.randn(30, 2, dtype=torch.float64)
    lam = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    W_out = torch.linalg.solve(X.T @ X + lam * torch.eye(5, dtype=torch.float64), X.T @ Y)
    (W_out ** 2).sum().backward()
    solution = torch.linalg.lstsq(X, Y).solution
    (g_lstsq,) = torch.autograd.grad(solution.sum(), X)
    return dict(W=W, radius=radius, g_radius=W.grad, X=X, Y=Y, lam=lam, g_X=X.grad, g_lam=lam.grad, g_lstsq=g_lstsq)


def test_gradients_through_eigvals_and_ridge_solve_against_finite_differences():
    ours, _ = run_both(differentiable_reservoir, rtol=1e-6, atol=1e-8)
    W, X, Y, lam = ours["W"], ours["X"], ours["Y"], float(ours["lam"])

    def numeric(f, a, eps=1e-6):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            d = np.zeros_like(a)
            d[i] = eps
            g[i] = (f(a + d) - f(a - d)) / (2 * eps)
        return g

    np.testing.assert_allclose(ours["g_radius"], numeric(lambda w: np.abs(np.linalg.eigvals(w)).max(), W),
                               rtol=1e-5, atol=1e-7)

    def ridge(x, lam=lam):
        return (np.linalg.solve(x.T @ x + lam * np.eye(5), x.T @ Y) ** 2).sum()

    np.testing.assert_allclose(ours["g_X"], numeric(ridge, X), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours["g_lam"], numeric(lambda v: ridge(X, v), np.array(lam)), rtol=1e-5)
    np.testing.assert_allclose(ours["g_lstsq"], numeric(lambda x: np.linalg.lstsq(x, Y, rcond=None)[0].sum(), X),
                               rtol=1e-5, atol=1e-7)


def sparse_reservoir(m):
    torch = m.torch
    torch.manual_seed(0)
    N = 12
    idx = torch.randint(0, N, (2, 30))
    vals = torch.randn(30)
    W = torch.sparse_coo_tensor(idx, vals, (N, N)).coalesce()
    dense = W.to_dense()
    x = torch.randn(N, 1)
    rho = torch.linalg.eigvals(dense).abs().max()
    W2 = W * (0.9 / rho)
    h = torch.zeros(N)
    for t in range(5):
        h = torch.tanh(torch.mv(W2.to_dense(), h) + 0.1 * t)
    return dict(idx=idx, vals=vals, dense=dense, x=x, sparse_mm=torch.sparse.mm(W, x), matmul=W @ x, rho=rho, h=h,
                nnz=W._nnz(), scaled=W2.to_dense())


def test_sparse_reservoir():
    ours, _ = run_both(sparse_reservoir, rtol=1e-5, atol=1e-6)
    dense = np.zeros((12, 12), np.float32)
    np.add.at(dense, tuple(ours["idx"]), ours["vals"])
    np.testing.assert_allclose(ours["dense"], dense, rtol=1e-6)
    np.testing.assert_allclose(ours["sparse_mm"], dense @ ours["x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["matmul"], ours["sparse_mm"], rtol=1e-6)
    assert ours["nnz"] == len({tuple(c) for c in ours["idx"].T})
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(ours["scaled"])).max(), 0.9, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# continuous time: LTC and CfC cells
# ----------------------------------------------------------------------------------------------
def ltc(m):
    torch, nn, F = m.torch, m.nn, m.F

    class LTCCell(nn.Module):
        def __init__(self, in_features, units, ode_unfolds=6, epsilon=1e-8):
            super().__init__()
            self._init_ranges = {"gleak": (0.001, 1.0), "vleak": (-0.2, 0.2), "cm": (0.4, 0.6), "w": (0.001, 1.0),
                                 "sigma": (3, 8), "mu": (0.3, 0.8), "sensory_w": (0.001, 1.0),
                                 "sensory_sigma": (3, 8), "sensory_mu": (0.3, 0.8)}
            self.in_features, self.units = in_features, units
            self._ode_unfolds = ode_unfolds
            self._epsilon = epsilon
            self.softplus = nn.Softplus()
            self.make_positive_fn = nn.Softplus()
            rs = np.random.RandomState(0)
            adj = rs.choice([-1, 1, 0], size=(units, units))
            sadj = rs.choice([-1, 1, 0], size=(in_features, units))
            self._params = {}

            def add_weight(name, init_value, requires_grad=True):
                param = torch.nn.Parameter(init_value, requires_grad=requires_grad)
                self.register_parameter(name, param)
                self._params[name] = param
                return param

            def get_init_value(shape, param_name):
                minval, maxval = self._init_ranges[param_name]
                if minval == maxval:
                    return torch.ones(shape) * minval
                return torch.rand(*shape) * (maxval - minval) + minval
            add_weight("gleak", get_init_value((units,), "gleak"))
            add_weight("vleak", get_init_value((units,), "vleak"))
            add_weight("cm", get_init_value((units,), "cm"))
            add_weight("sigma", get_init_value((units, units), "sigma"))
            add_weight("mu", get_init_value((units, units), "mu"))
            add_weight("w", get_init_value((units, units), "w"))
            add_weight("erev", torch.Tensor(adj))
            add_weight("sensory_sigma", get_init_value((in_features, units), "sensory_sigma"))
            add_weight("sensory_mu", get_init_value((in_features, units), "sensory_mu"))
            add_weight("sensory_w", get_init_value((in_features, units), "sensory_w"))
            add_weight("sensory_erev", torch.Tensor(sadj))
            add_weight("sparsity_mask", torch.Tensor(np.abs(adj)), requires_grad=False)
            add_weight("sensory_sparsity_mask", torch.Tensor(np.abs(sadj)), requires_grad=False)
            add_weight("input_w", torch.ones((in_features,)))
            add_weight("input_b", torch.zeros((in_features,)))
            add_weight("output_w", torch.ones((units,)))
            add_weight("output_b", torch.zeros((units,)))

        def _sigmoid(self, v_pre, mu, sigma):
            v_pre = torch.unsqueeze(v_pre, -1)
            mues = v_pre - mu
            x = sigma * mues
            return torch.sigmoid(x)

        def _ode_solver(self, inputs, state, elapsed_time):
            v_pre = state
            sensory_w_activation = self.make_positive_fn(self._params["sensory_w"]) * self._sigmoid(
                inputs, self._params["sensory_mu"], self._params["sensory_sigma"])
            sensory_w_activation = sensory_w_activation * self._params["sensory_sparsity_mask"]
            sensory_rev_activation = sensory_w_activation * self._params["sensory_erev"]
            w_numerator_sensory = torch.sum(sensory_rev_activation, dim=1)
            w_denominator_sensory = torch.sum(sensory_w_activation, dim=1)
            cm_t = self.make_positive_fn(self._params["cm"]) / (elapsed_time / self._ode_unfolds)
            w_param = self.make_positive_fn(self._params["w"])
            for t in range(self._ode_unfolds):
                w_activation = w_param * self._sigmoid(v_pre, self._params["mu"], self._params["sigma"])
                w_activation = w_activation * self._params["sparsity_mask"]
                rev_activation = w_activation * self._params["erev"]
                w_numerator = torch.sum(rev_activation, dim=1) + w_numerator_sensory
                w_denominator = torch.sum(w_activation, dim=1) + w_denominator_sensory
                gleak = self.make_positive_fn(self._params["gleak"])
                numerator = cm_t * v_pre + gleak * self._params["vleak"] + w_numerator
                denominator = cm_t + gleak + w_denominator
                v_pre = numerator / (denominator + self._epsilon)
            return v_pre

        def forward(self, inputs, states, elapsed_time=1.0):
            inputs = inputs * self._params["input_w"] + self._params["input_b"]
            next_state = self._ode_solver(inputs, states, elapsed_time)
            outputs = next_state * self._params["output_w"] + self._params["output_b"]
            return outputs, next_state

        def apply_weight_constraints(self):
            self._params["w"].data = torch.nn.ReLU()(self._params["w"].data)
            self._params["sensory_w"].data = torch.nn.ReLU()(self._params["sensory_w"].data)
            self._params["cm"].data = torch.nn.ReLU()(self._params["cm"].data)
            self._params["gleak"].data = torch.nn.ReLU()(self._params["gleak"].data)
    torch.manual_seed(0)
    cell = LTCCell(3, 7)
    opt = torch.optim.Adam(cell.parameters(), lr=0.05)
    xs = torch.randn(2, 12, 3)
    ys = torch.randn(2, 12, 7)
    ts = torch.rand(2, 12) + 0.5
    losses = []
    for it in range(3):
        h = torch.zeros(2, 7)
        outs = []
        for t in range(12):
            o, h = cell(xs[:, t], h, ts[:, t].view(-1, 1))
            outs.append(o)
        out = torch.stack(outs, dim=1)
        loss = F.mse_loss(out, ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        cell.apply_weight_constraints()
        losses.append(loss)
    return dict(losses=losses, grads={k: p.grad for k, p in cell.named_parameters()},
                params={k: p for k, p in cell.named_parameters()},
                rg={k: p.requires_grad for k, p in cell.named_parameters()}, n=len(list(cell.parameters())))


def test_ltc_cell_ode_unfolds():
    ours, _ = run_both(ltc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([float(x) for x in ours["losses"]], LTC_LOSSES, rtol=1e-5)
    assert ours["n"] == 17 and not ours["rg"]["sparsity_mask"] and not ours["rg"]["sensory_sparsity_mask"]
    assert ours["grads"]["sparsity_mask"] is None and ours["grads"]["erev"] is not None
    for name in ("w", "sensory_w", "cm", "gleak"):  # the constraints keep them non-negative
        assert ours["params"][name].min() >= 0


LTC_LOSSES = [1.3197563, 1.2318158, 1.1948144]


def cfc(m, mode):
    torch, nn, F = m.torch, m.nn, m.F

    class LeCun(nn.Module):
        def __init__(self):
            super().__init__()
            self.tanh = nn.Tanh()

        def forward(self, x):
            return 1.7159 * self.tanh(0.666 * x)

    class CfCCell(nn.Module):
        def __init__(self, input_size, hidden_size, mode="default", backbone_activation="lecun_tanh",
                     backbone_units=16, backbone_layers=1, backbone_dropout=0.0, sparsity_mask=None):
            super().__init__()
            self.input_size, self.hidden_size = input_size, hidden_size
            self.mode = mode
            self.sparsity_mask = None if sparsity_mask is None else nn.Parameter(
                data=torch.from_numpy(np.abs(sparsity_mask.T).astype(np.float32)), requires_grad=False)
            act = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU,
                   "lecun_tanh": LeCun}[backbone_activation]
            layer_list = [nn.Linear(input_size + hidden_size, backbone_units), act()]
            for i in range(1, backbone_layers):
                layer_list.append(nn.Linear(backbone_units, backbone_units))
                layer_list.append(act())
                if backbone_dropout > 0.0:
                    layer_list.append(torch.nn.Dropout(backbone_dropout))
            self.backbone = nn.Sequential(*layer_list)
            self.tanh = nn.Tanh()
            self.sigmoid = nn.Sigmoid()
            cat_shape = int(backbone_units)
            self.ff1 = nn.Linear(cat_shape, hidden_size)
            if self.mode == "pure":
                self.w_tau = torch.nn.Parameter(data=torch.zeros(1, self.hidden_size), requires_grad=True)
                self.A = torch.nn.Parameter(data=torch.ones(1, self.hidden_size), requires_grad=True)
            else:
                self.ff2 = nn.Linear(cat_shape, hidden_size)
                self.time_a = nn.Linear(cat_shape, hidden_size)
                self.time_b = nn.Linear(cat_shape, hidden_size)
            self.init_weights()

        def init_weights(self):
            for w in self.parameters():
                if w.dim() == 2 and w.requires_grad:
                    torch.nn.init.xavier_uniform_(w)

        def forward(self, input, hx, ts):
            x = torch.cat([input, hx], 1)
            x = self.backbone(x)
            if self.sparsity_mask is not None:
                ff1 = F.linear(x, self.ff1.weight * self.sparsity_mask, self.ff1.bias)
            else:
                ff1 = self.ff1(x)
            if self.mode == "pure":
                new_hidden = (-self.A * torch.exp(-ts * (torch.abs(self.w_tau) + torch.abs(ff1))) * ff1 + self.A)
            else:
                if self.sparsity_mask is not None:
                    ff2 = F.linear(x, self.ff2.weight * self.sparsity_mask, self.ff2.bias)
                else:
                    ff2 = self.ff2(x)
                ff1 = self.tanh(ff1)
                ff2 = self.tanh(ff2)
                t_a = self.time_a(x)
                t_b = self.time_b(x)
                t_interp = self.sigmoid(t_a * ts + t_b)
                if self.mode == "no_gate":
                    new_hidden = ff1 + t_interp * ff2
                else:
                    new_hidden = ff1 * (1.0 - t_interp) + t_interp * ff2
            return new_hidden, new_hidden

    class CfC(nn.Module):
        def __init__(self, input_size, units, proj_size=None, return_sequences=True, batch_first=True,
                     mixed_memory=False, mode="default"):
            super().__init__()
            self.state_size = units
            self.rnn_cell = CfCCell(input_size, units, mode, backbone_layers=2,
                                    sparsity_mask=(np.random.RandomState(0).rand(16, units) > 0.3).astype(np.float64))
            self.use_mixed = mixed_memory
            if self.use_mixed:
                self.lstm = nn.LSTMCell(input_size, units)
            self.fc = nn.Linear(units, proj_size)
            self.batch_first = batch_first
            self.return_sequences = return_sequences

        def forward(self, input, hx=None, timespans=None):
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            seq_dim = 1 if self.batch_first else 0
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                if timespans is not None:
                    timespans = timespans.unsqueeze(batch_dim)
            batch_size, seq_len = input.size(batch_dim), input.size(seq_dim)
            h_state = torch.zeros((batch_size, self.state_size), device=input.device)
            c_state = torch.zeros((batch_size, self.state_size), device=input.device) if self.use_mixed else None
            output_sequence = []
            for t in range(seq_len):
                inputs = input[:, t]
                ts = 1.0 if timespans is None else timespans[:, t].squeeze()
                if self.use_mixed:
                    h_state, c_state = self.lstm(inputs, (h_state, c_state))
                h_out, h_state = self.rnn_cell.forward(inputs, h_state,
                                                       ts.view(batch_size, 1) if timespans is not None else ts)
                if self.return_sequences:
                    output_sequence.append(self.fc(h_out))
            if self.return_sequences:
                readout = torch.stack(output_sequence, dim=seq_dim)
            else:
                readout = self.fc(h_out)
            hx = (h_state, c_state) if self.use_mixed else h_state
            return readout, hx
    torch.manual_seed(0)
    model = CfC(3, 8, proj_size=2, mixed_memory=(mode == "default"), mode=mode)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    x = torch.randn(4, 10, 3)
    ts = torch.rand(4, 10, 1) + 0.2
    y = torch.randn(4, 10, 2)
    losses = []
    for it in range(3):
        out, hx = model(x, timespans=ts)
        loss = F.mse_loss(out, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss)
    return dict(losses=losses, grads={k: p.grad for k, p in model.named_parameters()}, out=out,
                names=sorted(k for k, _ in model.named_parameters()))


@pytest.mark.parametrize("mode", ["default", "pure", "no_gate"])
def test_cfc_closed_form_continuous_time(mode):
    ours, _ = run_both(cfc, mode, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([float(x) for x in ours["losses"]], CFC_LOSSES[mode], rtol=1e-5)
    assert ours["out"].shape == (4, 10, 2)
    assert ("lstm.weight_ih" in ours["names"]) == (mode == "default")
    assert ("rnn_cell.w_tau" in ours["names"]) == (mode == "pure")


CFC_LOSSES = {
    'default': [0.9358034, 0.8683041, 0.8325508],
    'pure': [1.0467277, 0.9949591, 0.9562405],
    'no_gate': [1.0184536, 0.8719811, 0.8067036],
}


def events_to_frames(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(0)
    n = 200
    ev = np.zeros(n, dtype=[("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
    ev["x"] = rng.integers(0, 8, n)
    ev["y"] = rng.integers(0, 6, n)
    ev["t"] = np.sort(rng.integers(0, 10000, n))
    ev["p"] = rng.integers(0, 2, n)
    T, H, W = 5, 6, 8
    t = torch.from_numpy(ev["t"].copy())
    x = torch.from_numpy(ev["x"].astype(np.int64))
    y = torch.from_numpy(ev["y"].astype(np.int64))
    p = torch.from_numpy(ev["p"].astype(np.int64))
    t_idx = torch.div(t - t.min(), (t.max() - t.min() + 1) / T, rounding_mode="floor").long().clamp(max=T - 1)
    frames = torch.zeros(T, 2, H, W)
    frames.index_put_((t_idx, p, y, x), torch.ones(n), accumulate=True)
    flat = ((t_idx * 2 + p) * H + y) * W + x
    frames2 = torch.bincount(flat, minlength=T * 2 * H * W).reshape(T, 2, H, W)
    frames3 = torch.zeros(T * 2 * H * W, dtype=torch.long).scatter_add_(0, flat, torch.ones_like(flat))
    hist = torch.histc(t.float(), bins=T, min=float(t.min()), max=float(t.max()))
    edges = torch.linspace(float(t.min()), float(t.max()) + 1, T + 1)
    bidx = torch.bucketize(t.float(), edges, right=True) - 1
    ss = torch.searchsorted(edges, t.float(), right=True) - 1
    # voxel grid with bilinear in time
    tn = (t - t[0]).float() / (t[-1] - t[0]).float() * (T - 1)
    t0 = tn.floor().long()
    vox = torch.zeros(T, H, W)
    pol = p.float() * 2 - 1
    for dt_ in (0, 1):
        ti = t0 + dt_
        wgt = pol * (1 - (tn - ti.float()).abs()).clamp(min=0)
        valid = ti < T
        vox.index_put_((ti[valid], y[valid], x[valid]), wgt[valid], accumulate=True)
    u, c = torch.unique(t_idx, return_counts=True)
    ds = F.avg_pool2d(frames, 2) * 4
    return dict(frames=frames, eq=bool((frames2 == frames).all()), f3=frames3.view(T, 2, H, W), hist=hist,
                bidx=bidx, ss=ss, vox=vox, u=u, c=c, ds=ds, tdt=str(t_idx.dtype).split('.')[-1])


def test_events_binned_into_frames_and_voxel_grids():
    ours, _ = run_both(events_to_frames)
    frames = ours["frames"]
    assert frames.sum() == 200 and ours["eq"] and ours["tdt"] == "int64"
    np.testing.assert_array_equal(ours["f3"], frames)
    np.testing.assert_array_equal(ours["c"], frames.sum((1, 2, 3)))
    np.testing.assert_array_equal(ours["bidx"], ours["ss"])
    np.testing.assert_allclose(ours["ds"], frames.reshape(5, 2, 3, 2, 4, 2).sum((3, 5)), rtol=1e-6)
