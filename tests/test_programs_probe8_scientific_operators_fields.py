# ruff: noqa: B007, UP004, UP008  (the programs are kept as their authors wrote them)
"""Scientific programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch in float64, comparing
values, hyperparameters and gradients to about 1e-10, and checked against NumPy by hand. Fourier neural operators
(neuraloperator's fourier_1d.py / fourier_2d.py: complex weights on rfft modes, the relative Lp loss), the spectral
convolution's gradient by hand; SIREN (Sitzmann et al.: sine layers with their initialisation) fit through the
Laplacian, the Laplacian by hand."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Fourier neural operators (neuraloperator's fourier_1d.py / fourier_2d.py): complex weights in rfft modes
# ----------------------------------------------------------------------------------------------


def make_fno(m, two_d=False):
    torch, nn, F = m.torch, m.nn, m.F

    class SpectralConv1d(nn.Module):
        def __init__(self, in_channels, out_channels, modes1):
            super(SpectralConv1d, self).__init__()
            self.in_channels = in_channels
            self.out_channels = out_channels
            self.modes1 = modes1
            self.scale = (1 / (in_channels * out_channels))
            self.weights1 = nn.Parameter(self.scale * torch.rand(in_channels, out_channels, self.modes1,
                                                                 dtype=torch.cfloat))

        def compl_mul1d(self, input, weights):
            return torch.einsum("bix,iox->box", input, weights)

        def forward(self, x):
            batchsize = x.shape[0]
            x_ft = torch.fft.rfft(x)
            out_ft = torch.zeros(batchsize, self.out_channels, x.size(-1) // 2 + 1, device=x.device, dtype=torch.cfloat)
            out_ft[:, :, :self.modes1] = self.compl_mul1d(x_ft[:, :, :self.modes1], self.weights1)
            x = torch.fft.irfft(out_ft, n=x.size(-1))
            return x

    class SpectralConv2d(nn.Module):
        def __init__(self, in_channels, out_channels, modes1, modes2):
            super(SpectralConv2d, self).__init__()
            self.in_channels, self.out_channels, self.modes1, self.modes2 = in_channels, out_channels, modes1, modes2
            self.scale = (1 / (in_channels * out_channels))
            self.weights1 = nn.Parameter(
                self.scale * torch.rand(in_channels, out_channels, self.modes1, self.modes2, dtype=torch.cfloat))
            self.weights2 = nn.Parameter(
                self.scale * torch.rand(in_channels, out_channels, self.modes1, self.modes2, dtype=torch.cfloat))

        def compl_mul2d(self, input, weights):
            return torch.einsum("bixy,ioxy->boxy", input, weights)

        def forward(self, x):
            batchsize = x.shape[0]
            x_ft = torch.fft.rfft2(x)
            out_ft = torch.zeros(batchsize, self.out_channels, x.size(-2), x.size(-1) // 2 + 1, dtype=torch.cfloat,
                                 device=x.device)
            out_ft[:, :, :self.modes1, :self.modes2] = \
                self.compl_mul2d(x_ft[:, :, :self.modes1, :self.modes2], self.weights1)
            out_ft[:, :, -self.modes1:, :self.modes2] = \
                self.compl_mul2d(x_ft[:, :, -self.modes1:, :self.modes2], self.weights2)
            x = torch.fft.irfft2(out_ft, s=(x.size(-2), x.size(-1)))
            return x

    class FNO1d(nn.Module):
        def __init__(self, modes, width):
            super(FNO1d, self).__init__()
            self.modes1 = modes
            self.width = width
            self.padding = 2
            self.fc0 = nn.Linear(2, self.width)
            self.conv0 = SpectralConv1d(self.width, self.width, self.modes1)
            self.conv1 = SpectralConv1d(self.width, self.width, self.modes1)
            self.w0 = nn.Conv1d(self.width, self.width, 1)
            self.w1 = nn.Conv1d(self.width, self.width, 1)
            self.fc1 = nn.Linear(self.width, 16)
            self.fc2 = nn.Linear(16, 1)

        def forward(self, x):
            grid = self.get_grid(x.shape, x.device)
            x = torch.cat((x, grid), dim=-1)
            x = self.fc0(x)
            x = x.permute(0, 2, 1)
            x = F.pad(x, [0, self.padding])  # pad the domain if input is non-periodic
            x1 = self.conv0(x)
            x2 = self.w0(x)
            x = x1 + x2
            x = F.gelu(x)
            x1 = self.conv1(x)
            x2 = self.w1(x)
            x = x1 + x2
            x = x[..., :-self.padding]
            x = x.permute(0, 2, 1)
            x = self.fc1(x)
            x = F.gelu(x)
            x = self.fc2(x)
            return x

        def get_grid(self, shape, device):
            batchsize, size_x = shape[0], shape[1]
            gridx = torch.tensor(np.linspace(0, 1, size_x), dtype=torch.float)
            gridx = gridx.reshape(1, size_x, 1).repeat([batchsize, 1, 1])
            return gridx.to(device)

    class FNO2d(nn.Module):
        def __init__(self, modes1, modes2, width):
            super(FNO2d, self).__init__()
            self.width = width
            self.fc0 = nn.Linear(3, self.width)
            self.conv0 = SpectralConv2d(self.width, self.width, modes1, modes2)
            self.w0 = nn.Conv2d(self.width, self.width, 1)
            self.fc1 = nn.Linear(self.width, 8)
            self.fc2 = nn.Linear(8, 1)

        def forward(self, x):
            grid = self.get_grid(x.shape, x.device)
            x = torch.cat((x, grid), dim=-1)
            x = self.fc0(x)
            x = x.permute(0, 3, 1, 2)
            x = F.gelu(self.conv0(x) + self.w0(x))
            x = x.permute(0, 2, 3, 1)
            x = self.fc2(F.gelu(self.fc1(x)))
            return x

        def get_grid(self, shape, device):
            batchsize, size_x, size_y = shape[0], shape[1], shape[2]
            gridx = torch.tensor(np.linspace(0, 1, size_x), dtype=torch.float)
            gridx = gridx.reshape(1, size_x, 1, 1).repeat([batchsize, 1, size_y, 1])
            gridy = torch.tensor(np.linspace(0, 1, size_y), dtype=torch.float)
            gridy = gridy.reshape(1, 1, size_y, 1).repeat([batchsize, size_x, 1, 1])
            return torch.cat((gridx, gridy), dim=-1).to(device)

    return FNO2d(3, 3, 4) if two_d else FNO1d(4, 8)


class LpLoss(object):
    def __init__(self, d=2, p=2, size_average=True, reduction=True):
        super(LpLoss, self).__init__()
        self.d, self.p, self.reduction, self.size_average = d, p, reduction, size_average

    def rel(self, x, y):
        num_examples = x.size()[0]
        diff_norms = (x.reshape(num_examples, -1) - y.reshape(num_examples, -1)).norm(self.p, 1)
        y_norms = y.reshape(num_examples, -1).norm(self.p, 1)
        if self.reduction:
            if self.size_average:
                return (diff_norms / y_norms).mean()
            else:
                return (diff_norms / y_norms).sum()
        return diff_norms / y_norms

    def __call__(self, x, y):
        return self.rel(x, y)


def fno(m, weights, two_d=False, epochs=3):
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(17)
    shape = (4, 8, 8, 1) if two_d else (4, 16, 1)
    x = torch.tensor(rng.standard_normal(shape).astype(np.float32))
    y = torch.tensor(rng.standard_normal(shape).astype(np.float32))
    model = load(m, make_fno(m, two_d), weights)
    optimizer = optim.Adam(model.parameters(), lr=0.001, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    myloss = LpLoss(size_average=False)
    history = []
    for ep in range(epochs):
        model.train()
        optimizer.zero_grad()
        out = model(x)
        l2 = myloss(out.view(4, -1), y.view(4, -1))
        l2.backward()
        optimizer.step()
        scheduler.step()
        history.append(l2.item())
    spectral = [p for n, p in model.named_parameters() if "weights" in n]
    return {"history": history, "out": out, "spectral": [p.detach() for p in spectral],
            "spectral_grads": [p.grad for p in spectral], "dtypes": sorted({str(p.dtype)[-9:] for p in spectral}),
            "grads": [p.grad for n, p in model.named_parameters() if "weights" not in n]}


@pytest.mark.parametrize("two_d", [False, True])
def test_fourier_neural_operator(two_d):
    weights = weights_of(lambda m: make_fno(m, two_d))
    ours, _ = run_both(fno, weights, two_d=two_d, rtol=5e-5, atol=5e-6)
    assert all(g.dtype == np.complex64 for g in ours["spectral_grads"])
    assert ours["history"][-1] < ours["history"][0]


def test_spectral_convolution_gradient_by_hand():
    """d/dW of sum(c * irfft(pad(W * rfft(x)))) for one mode, float64: the conjugate-convention gradient
    PyTorch gives (dL/dRe W + i dL/dIm W), checked by finite differences on the real and imaginary parts."""
    torch = OURS.torch
    rng = np.random.default_rng(18)
    x = torch.tensor(rng.standard_normal((1, 1, 8)))
    c = torch.tensor(rng.standard_normal((1, 1, 8)))
    w0 = rng.standard_normal(2) + 1j * rng.standard_normal(2)

    def loss(w):
        x_ft = torch.fft.rfft(x)
        out_ft = torch.zeros(1, 1, 5, dtype=torch.complex128)
        out_ft[:, :, :2] = x_ft[:, :, :2] * w
        return (torch.fft.irfft(out_ft, n=8) * c).sum()

    w = torch.tensor(w0, requires_grad=True)
    loss(w).backward()
    h = 1e-6
    for k in range(2):
        for part, unit in ((0, 1.0), (1, 1j)):
            plus, minus = w0.copy(), w0.copy()
            plus[k] += h * unit
            minus[k] -= h * unit
            fd = (loss(torch.tensor(plus)).item() - loss(torch.tensor(minus)).item()) / (2 * h)
            got = w.grad[k].item().real if part == 0 else w.grad[k].item().imag
            assert got == pytest.approx(fd, rel=1e-6, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# SIREN (Sitzmann et al.): sine layers with their initialisation, fit through the Laplacian
# (diff_operators.py's gradient / divergence / laplace: third derivatives reach the weights)
# ----------------------------------------------------------------------------------------------


def make_siren(m):
    torch, nn = m.torch, m.nn

    class SineLayer(nn.Module):
        def __init__(self, in_features, out_features, bias=True, is_first=False, omega_0=30):
            super().__init__()
            self.omega_0 = omega_0
            self.is_first = is_first
            self.in_features = in_features
            self.linear = nn.Linear(in_features, out_features, bias=bias)
            self.init_weights()

        def init_weights(self):
            with torch.no_grad():
                if self.is_first:
                    self.linear.weight.uniform_(-1 / self.in_features, 1 / self.in_features)
                else:
                    self.linear.weight.uniform_(-np.sqrt(6 / self.in_features) / self.omega_0,
                                                np.sqrt(6 / self.in_features) / self.omega_0)

        def forward(self, input):
            return torch.sin(self.omega_0 * self.linear(input))

    class Siren(nn.Module):
        def __init__(self, in_features, hidden_features, hidden_layers, out_features, outermost_linear=False,
                     first_omega_0=30, hidden_omega_0=30.):
            super().__init__()
            self.net = []
            self.net.append(SineLayer(in_features, hidden_features, is_first=True, omega_0=first_omega_0))
            for i in range(hidden_layers):
                self.net.append(SineLayer(hidden_features, hidden_features, is_first=False, omega_0=hidden_omega_0))
            if outermost_linear:
                final_linear = nn.Linear(hidden_features, out_features)
                with torch.no_grad():
                    final_linear.weight.uniform_(-np.sqrt(6 / hidden_features) / hidden_omega_0,
                                                 np.sqrt(6 / hidden_features) / hidden_omega_0)
                self.net.append(final_linear)
            else:
                self.net.append(SineLayer(hidden_features, out_features, is_first=False, omega_0=hidden_omega_0))
            self.net = nn.Sequential(*self.net)

        def forward(self, coords):
            coords = coords.clone().detach().requires_grad_(True)  # allows to take derivative w.r.t. input
            output = self.net(coords)
            return output, coords

    return Siren(in_features=2, out_features=1, hidden_features=16, hidden_layers=2, outermost_linear=True)


def siren(m, weights, steps=4):
    torch, optim = m.torch, m.optim

    def gradient(y, x, grad_outputs=None):
        if grad_outputs is None:
            grad_outputs = torch.ones_like(y)
        grad = torch.autograd.grad(y, [x], grad_outputs=grad_outputs, create_graph=True)[0]
        return grad

    def divergence(y, x):
        div = 0.
        for i in range(y.shape[-1]):
            div += torch.autograd.grad(y[..., i], x, torch.ones_like(y[..., i]), create_graph=True)[0][..., i:i + 1]
        return div

    def laplace(y, x):
        grad = gradient(y, x)
        return divergence(grad, x)

    def get_mgrid(sidelen, dim=2):
        tensors = tuple(dim * [torch.linspace(-1, 1, steps=sidelen)])
        mgrid = torch.stack(torch.meshgrid(*tensors, indexing='ij'), dim=-1)
        mgrid = mgrid.reshape(-1, dim)
        return mgrid

    model = load(m, make_siren(m), weights).double()
    coords = get_mgrid(6).double().unsqueeze(0)
    target_lap = torch.sin(3 * coords[..., :1]) * torch.cos(2 * coords[..., 1:])
    optim_ = optim.Adam(lr=1e-4, params=model.parameters())
    history = []
    for step in range(steps):
        model_output, coords_ = model(coords)
        lap = laplace(model_output, coords_)
        loss = ((lap - target_lap) ** 2).mean()
        optim_.zero_grad()
        loss.backward()
        optim_.step()
        history.append(loss.item())
    model_output, coords_ = model(coords)
    grad = gradient(model_output, coords_)
    return {"history": history, "grad": grad, "lap": laplace(model_output, coords_),
            "grads": [p.grad for p in model.parameters()]}


def test_siren_fit_through_the_laplacian():
    weights = weights_of(make_siren)
    ours, _ = run_both(siren, weights, rtol=1e-8, atol=1e-10)
    assert ours["grad"].shape == (1, 36, 2) and ours["lap"].shape == (1, 36, 1)
    assert ours["history"][-1] < ours["history"][0]


def test_siren_laplacian_by_hand():
    """A one-unit SIREN u = w2 sin(w0 (a x + b y + c)) + d: its Laplacian is -w2 w0^2 (a^2 + b^2) sin(.)."""
    torch = OURS.torch
    model = make_siren(OURS)
    model.net = OURS.nn.Sequential(model.net[0])
    layer = model.net[0]
    with torch.no_grad():
        layer.linear = OURS.nn.Linear(2, 1)
        layer.linear.weight.copy_(torch.tensor([[0.3, -0.2]]))
        layer.linear.bias.fill_(0.1)
    coords = torch.tensor([[0.5, -0.25], [0.0, 1.0]])
    out, x = model(coords)
    (g,) = torch.autograd.grad(out.sum(), x, create_graph=True)
    lap = sum(torch.autograd.grad(g[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
    arg = 30 * (0.3 * coords[:, 0].numpy() - 0.2 * coords[:, 1].numpy() + 0.1)
    np.testing.assert_allclose(lap.numpy(), -900 * 0.13 * np.sin(arg), rtol=1e-4)
