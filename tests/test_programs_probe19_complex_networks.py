# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Programs built on complex numbers (see tests/pytorch_programs.py), each run on chainrule and on PyTorch, comparing
values and gradients (PyTorch's conjugate convention: z.grad = ∂L/∂Re z + i ∂L/∂Im z), and where PyTorch is absent
checked against NumPy by hand or finite differences. Networks: a complex-valued network
(``nn.Linear(dtype=torch.cfloat)``, modReLU, CReLU through ``torch.complex``, Adam with amsgrad on complex weights)
and a deep complex CNN (complex batch norm by whitening, cardioid, pooling by magnitude); complex recurrent layers
(RNN/GRU/LSTM, cells, double backward), full backward hooks and custom ``autograd.Function``s on complex tensors; a
unitary RNN (``parametrizations.orthogonal`` of a complex weight, ``spectral_norm``, modReLU by ``polar``); every
optimiser on complex parameters."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# A complex-valued network: complex linear layers, modReLU, CReLU, a real classifier head
# ----------------------------------------------------------------------------------------------


def complex_net_data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 6)) + 1j * rng.standard_normal((32, 6))
    W0 = rng.standard_normal((6, 6)) + 1j * rng.standard_normal((6, 6))
    y = (np.abs(X @ W0.T) > 2).astype(np.int64)[:, :3].sum(1)
    return X.astype(np.complex64), y


def complex_net(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y = complex_net_data()

    class ModReLU(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.b = nn.Parameter(torch.full((n,), -0.1))

        def forward(self, z):
            mag = z.abs()
            return F.relu(mag + self.b) * z / (mag + 1e-6)

    def crelu(z):
        return torch.complex(F.relu(z.real), F.relu(z.imag))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(6, 8, dtype=torch.cfloat)
            self.act = ModReLU(8)
            self.l2 = nn.Linear(8, 8, dtype=torch.cfloat)
            self.out = nn.Linear(8, 4)

        def forward(self, z):
            h = self.act(self.l1(z))
            h = crelu(self.l2(h))
            return self.out(h.abs())

    net = Net()
    r = np.random.default_rng(1)
    weights = {}
    for k, v in net.state_dict().items():
        a = r.standard_normal(tuple(v.shape)) * 0.3
        if v.is_complex():
            weights[k] = torch.tensor((a + 0.3j * r.standard_normal(tuple(v.shape))).astype(np.complex64))
        else:
            weights[k] = torch.tensor(a.astype(np.float32))
    net.load_state_dict(weights)
    opt = optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-3, amsgrad=True)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    history = []
    for i in range(15):
        opt.zero_grad()
        loss = F.cross_entropy(net(Xt), yt)
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"history": history, "w1": net.l1.weight.detach(), "b1_grad": net.l1.bias.grad,
            "complex64": net.l1.weight.dtype == torch.complex64 and net.l1.bias.grad.dtype == torch.complex64}


def test_complex_valued_network():
    ours, _ = run_both(complex_net, rtol=1e-4, atol=1e-5)
    assert ours["complex64"]
    assert ours["history"][-1] < ours["history"][0]


def complex_cnn(m):
    """Trabelsi et al.'s deep complex network pieces: complex batch norm by 2×2 whitening of (Re, Im), the
    cardioid activation, max pooling by magnitude (indices from max_pool2d, values by gather) and average
    pooling through view_as_real."""
    torch, nn, F = m.torch, m.nn, m.F

    def complex_max_pool(z, k):
        _, idx = F.max_pool2d(z.abs(), k, return_indices=True)
        return z.flatten(2).gather(2, idx.flatten(2)).view(idx.shape)

    def complex_avg_pool(z, k):
        r = torch.view_as_real(z).permute(0, 1, 4, 2, 3).flatten(1, 2)
        p = F.avg_pool2d(r, k)
        p = p.view(z.shape[0], z.shape[1], 2, p.shape[-2], p.shape[-1]).permute(0, 1, 3, 4, 2).contiguous()
        return torch.view_as_complex(p)

    class ComplexBN(nn.Module):
        def __init__(self, c, eps=1e-5, momentum=0.1):
            super().__init__()
            self.eps, self.momentum = eps, momentum
            self.weight = nn.Parameter(torch.stack([torch.full((c,), 1 / math.sqrt(2)),
                                                    torch.full((c,), 1 / math.sqrt(2)), torch.zeros(c)], 0))
            self.bias = nn.Parameter(torch.zeros(c, dtype=torch.cfloat))
            self.register_buffer("running_mean", torch.zeros(c, dtype=torch.cfloat))

        def forward(self, z):
            mean = z.mean((0, 2, 3))
            if self.training:
                with torch.no_grad():
                    self.running_mean.mul_(1 - self.momentum).add_(mean * self.momentum)
            zc = z - mean[None, :, None, None]
            xr, xi = zc.real, zc.imag
            Vrr = (xr * xr).mean((0, 2, 3)) + self.eps
            Vii = (xi * xi).mean((0, 2, 3)) + self.eps
            Vri = (xr * xi).mean((0, 2, 3))
            tau, delta = Vrr + Vii, Vrr * Vii - Vri ** 2
            s = torch.sqrt(delta)
            t = torch.sqrt(tau + 2 * s)
            inv = 1.0 / (s * t)
            Wrr, Wii, Wri = (Vii + s) * inv, (Vrr + s) * inv, -Vri * inv
            v = lambda a: a[None, :, None, None]
            yr = v(Wrr) * xr + v(Wri) * xi
            yi = v(Wri) * xr + v(Wii) * xi
            gr, gi, gri = self.weight
            return torch.complex(v(gr) * yr + v(gri) * yi, v(gri) * yr + v(gi) * yi) + v(self.bias)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 4, 3, padding=1, dtype=torch.cfloat)
            self.bn = ComplexBN(4)
            self.c2 = nn.Conv2d(4, 4, 3, padding=1, dtype=torch.cfloat)
            self.fc = nn.Linear(16, 3)

        def forward(self, z):
            h = self.bn(self.c1(z))
            h = 0.5 * (1 + torch.cos(h.angle())) * h  # cardioid
            h = complex_max_pool(h, 2)
            h = complex_avg_pool(self.c2(h), 2)
            return self.fc(h.abs().flatten(1))

    net = Net()
    rng = np.random.default_rng(0)
    weights = {}
    for k, v in net.state_dict().items():
        a = 0.3 * rng.standard_normal(tuple(v.shape))
        weights[k] = torch.tensor((a + 0.3j * rng.standard_normal(tuple(v.shape))).astype(np.complex64)) \
            if v.is_complex() else torch.tensor(a.astype(np.float32))
    net.load_state_dict(weights)
    x = torch.tensor((rng.standard_normal((6, 1, 8, 8)) + 1j * rng.standard_normal((6, 1, 8, 8))).astype(np.complex64))
    y = torch.tensor(rng.integers(0, 3, 6))
    opt = m.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    history = []
    for _ in range(5):
        opt.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"history": history, "running_mean": net.bn.running_mean, "conv_grad": net.c1.weight.grad,
            "bn_grad": net.bn.weight.grad}


def test_deep_complex_network():
    ours, _ = run_both(complex_cnn, rtol=1e-4, atol=1e-5)
    assert min(ours["history"]) < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Complex recurrent layers (RNN, GRU, LSTM, their cells), a full backward hook, a custom Function
# ----------------------------------------------------------------------------------------------

RECURRENT = ["RNN", "GRU", "LSTM", "RNNCell", "GRUCell", "LSTMCell"]


def complex_recurrent(m, kind, **options):
    torch, nn = m.torch, m.nn
    rng = np.random.default_rng(0)
    layer = getattr(nn, kind)(3, 4, dtype=torch.cdouble, **options)
    layer.load_state_dict({k: torch.tensor(0.4 * (rng.standard_normal(tuple(v.shape)) + 1j * rng.standard_normal(
        tuple(v.shape)))) for k, v in layer.state_dict().items()})
    x = torch.tensor(rng.standard_normal((5, 2, 3)) + 1j * rng.standard_normal((5, 2, 3)), requires_grad=True)
    if kind.endswith("Cell"):
        h, outputs = None, []
        for t in range(5):
            h = layer(x[t], h)
            outputs.append(h[0] if isinstance(h, tuple) else h)
        y = torch.stack(outputs)
    else:
        y = layer(x)[0]
    loss = (y.abs() ** 2).sum() + (y * (0.3 - 0.7j)).real.sum()
    grads = torch.autograd.grad(loss, [x] + list(layer.parameters()), create_graph=True)
    second, = torch.autograd.grad((grads[0].abs() ** 2).sum(), x)
    return {"y": y.detach(), "grads": [g.detach() for g in grads], "second": second}


@pytest.mark.parametrize("kind", RECURRENT)
def test_complex_recurrent_layer(kind):
    ours, _ = run_both(complex_recurrent, kind, rtol=1e-9, atol=1e-11)
    if kind == "RNN":  # against the recurrence written out in NumPy (tanh(W_ih x + b_ih + W_hh h + b_hh))
        rng = np.random.default_rng(0)
        shapes = [(4, 3), (4, 4), (4,), (4,)]
        w_ih, w_hh, b_ih, b_hh = (0.4 * (rng.standard_normal(s) + 1j * rng.standard_normal(s)) for s in shapes)
        x = rng.standard_normal((5, 2, 3)) + 1j * rng.standard_normal((5, 2, 3))
        h = np.zeros((2, 4), complex)
        for t in range(5):
            h = np.tanh(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
            np.testing.assert_allclose(ours["y"][t], h, rtol=1e-12)


def test_complex_lstm_with_projections_and_layers():
    run_both(complex_recurrent, "LSTM", proj_size=2, num_layers=2, bias=False, rtol=1e-9, atol=1e-11)


def hooks_and_functions(m):
    torch, nn = m.torch, m.nn
    rng = np.random.default_rng(4)
    layer = nn.Linear(3, 2, dtype=torch.cdouble)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))))
        layer.bias.copy_(torch.tensor(rng.standard_normal(2) + 1j * rng.standard_normal(2)))
    seen = []
    layer.register_full_backward_hook(lambda mod, grad_in, grad_out: seen.append((grad_in[0].clone(),
                                                                                   grad_out[0].clone())))
    layer.register_forward_hook(lambda mod, inputs, output: output * 1j)

    class CMul(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a * b

        @staticmethod
        def backward(ctx, g):
            a, b = ctx.saved_tensors
            return g * b.conj(), g * a.conj()

    x = torch.tensor(rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3)), requires_grad=True)
    y = CMul.apply(layer(x), x[:, :2])
    (y.real ** 2 + y.imag).sum().backward()
    checked = torch.autograd.gradcheck(CMul.apply, (x.detach()[0].requires_grad_(), x.detach()[1].requires_grad_()))
    return {"y": y.detach(), "grad_input": seen[0][0], "grad_output": seen[0][1], "weight_grad": layer.weight.grad,
            "x_grad": x.grad, "gradcheck": checked}


def test_full_backward_hook_and_custom_function_on_complex_tensors():
    ours, _ = run_both(hooks_and_functions, rtol=1e-10, atol=1e-12)
    assert ours["gradcheck"]


# ----------------------------------------------------------------------------------------------
# A unitary RNN: the recurrent matrix kept unitary by orthogonal(), a spectrally normalised input map
# ----------------------------------------------------------------------------------------------


def unitary_rnn(m, orthogonal_map):
    torch, nn, F = m.torch, m.nn, m.F
    orthogonal = nn.utils.parametrizations.orthogonal
    spectral_norm = nn.utils.parametrizations.spectral_norm

    class ModReLU(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.b = nn.Parameter(torch.full((n,), -0.05, dtype=torch.float64))

        def forward(self, z):
            return torch.polar(F.relu(z.abs() + self.b), z.angle())

    class URNN(nn.Module):
        def __init__(self, hidden=6):
            super().__init__()
            self.inp = nn.Linear(2, hidden, dtype=torch.cdouble)
            self.rec = nn.Linear(hidden, hidden, bias=False, dtype=torch.cdouble)
            self.act = ModReLU(hidden)
            self.out = nn.Linear(2 * hidden, 3, dtype=torch.float64)

        def forward(self, x):
            h = torch.zeros(x.shape[0], self.rec.in_features, dtype=torch.cdouble)
            for t in range(x.shape[1]):
                h = self.act(self.rec(h) + self.inp(x[:, t]))
            return self.out(torch.cat([h.real, h.imag], -1))

    rng = np.random.default_rng(7)
    model = URNN()
    model.load_state_dict({k: torch.tensor(0.4 * (rng.standard_normal(tuple(v.shape)) + (
        1j * rng.standard_normal(tuple(v.shape)) if v.is_complex() else 0))) for k, v in model.state_dict().items()})
    torch.manual_seed(0)  # spectral_norm's first u, v
    orthogonal(model.rec, orthogonal_map=orthogonal_map)
    spectral_norm(model.inp)
    x = torch.tensor(rng.standard_normal((8, 5, 2)) + 1j * rng.standard_normal((8, 5, 2)))
    y = torch.tensor(rng.integers(0, 3, 8))
    opt = m.optim.RMSprop(model.parameters(), lr=0.01)
    history = []
    for step in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        history.append(loss.item())
    W = model.rec.weight.detach()
    return {"history": history, "W": W, "unitarity": (W.mH @ W - torch.eye(6)).abs().max().item(),
            "sigma": torch.linalg.matrix_norm(model.inp.weight.detach(), 2).item(),
            "grad": model.rec.parametrizations.weight.original.grad}


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley"])
def test_unitary_rnn(orthogonal_map):
    ours, _ = run_both(unitary_rnn, orthogonal_map, rtol=1e-8, atol=1e-10)
    assert ours["unitarity"] < 1e-12
    assert ours["sigma"] == pytest.approx(1.0, abs=0.05)  # one power iteration a step: σ(W / σ̂) ≈ 1


# ----------------------------------------------------------------------------------------------
# Every optimiser on complex parameters: each is optimised as its (real, imaginary) pairs
# ----------------------------------------------------------------------------------------------

OPTIMISERS = [("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)), ("Adam", dict(lr=0.05)),
              ("AdamW", dict(lr=0.05, amsgrad=True)), ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
              ("Adagrad", dict(lr=0.1, weight_decay=0.1)), ("Adamax", dict(lr=0.05)),
              ("NAdam", dict(lr=0.05, decoupled_weight_decay=True, weight_decay=0.1)), ("RAdam", dict(lr=0.05)),
              ("ASGD", dict(lr=0.05)), ("Rprop", dict(lr=0.05)), ("Adadelta", dict(lr=1.0)),
              ("Adam", dict(lr=0.05, foreach=True, maximize=True)),
              ("LBFGS", dict(lr=0.5, history_size=3, max_iter=4, line_search_fn="strong_wolfe"))]


def complex_parameters(m, name, options, as_pairs=False):
    torch = m.torch
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal((3, 2)) + 1j * rng.standard_normal((3, 2))
    w = torch.tensor(np.stack([w0.real, w0.imag], -1) if as_pairs else w0, requires_grad=True)
    b = torch.tensor(rng.standard_normal(2), requires_grad=True)
    x = torch.tensor(rng.standard_normal((5, 3)) + 1j * rng.standard_normal((5, 3)))
    opt = getattr(m.optim, name)([w, b], **options)
    history = []
    for i in range(8):
        def closure():
            opt.zero_grad()
            y = x @ (torch.view_as_complex(w) if as_pairs else w)
            loss = ((y.abs() - 1) ** 2).mean() + (y.real * b).sum() * 0.1 + (b ** 2).sum()
            loss.backward()
            return loss
        history.append(opt.step(closure).item())
    return {"history": history, "w": torch.view_as_complex(w.detach()) if as_pairs else w.detach(), "b": b.detach()}


@pytest.mark.parametrize("name, options", OPTIMISERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(OPTIMISERS)])
def test_optimiser_on_complex_parameters(name, options):
    ours, _ = run_both(complex_parameters, name, options, rtol=1e-9, atol=1e-11)
    as_pairs = complex_parameters(OURS, name, options, as_pairs=True)
    np.testing.assert_allclose(ours["w"], as_pairs["w"], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["history"], as_pairs["history"], rtol=1e-9, atol=1e-11)
