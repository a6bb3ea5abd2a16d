# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Programs built on complex numbers (see tests/pytorch_programs.py), each run on chainrule and on PyTorch, comparing
values and gradients (PyTorch's conjugate convention: z.grad = ∂L/∂Re z + i ∂L/∂Im z), and where PyTorch is absent
checked against NumPy by hand or finite differences. Operators and quantum circuits: a Fourier neural operator
(``torch.rand(dtype=torch.cfloat)`` weights, ``einsum`` over ``rfft``/``rfft2`` modes); MoDL's unrolled conjugate
gradient; dynamic mode decomposition (``eig`` of a real matrix, ``lstsq`` of complex modes, ``λ ** steps``); a
variational quantum circuit (unitaries by ``linalg.matrix_exp`` of Hermitian generators, ``kron``, ``vdot``) and a
unitary learnt through a Hermitian parameter."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# Quantum circuits: unitaries by matrix_exp of Hermitian generators
# ----------------------------------------------------------------------------------------------


def pauli(np_or_torch, dtype):
    X = np_or_torch.tensor([[0, 1], [1, 0]], dtype=dtype)
    Y = np_or_torch.tensor([[0, -1j], [1j, 0]], dtype=dtype)
    Z = np_or_torch.tensor([[1, 0], [0, -1]], dtype=dtype)
    return X, Y, Z


def variational_circuit(m, angles=(0.3, -0.7, 1.1, 0.5, 0.2, -0.4)):
    torch = m.torch
    X, Y, Z = pauli(torch, torch.cdouble)
    I = torch.eye(2, dtype=torch.cdouble)

    def kron(*ops):
        out = ops[0]
        for o in ops[1:]:
            out = torch.kron(out, o)
        return out

    theta = torch.tensor(angles, dtype=torch.float64, requires_grad=True)
    n = 3

    def rotation(P, angle, qubit):
        H = kron(*[P if i == qubit else I for i in range(n)])
        return torch.linalg.matrix_exp(-0.5j * angle * H)

    psi = torch.zeros(2 ** n, dtype=torch.cdouble)
    psi[0] = 1
    for q in range(n):
        psi = rotation(X, theta[q], q) @ psi
        psi = rotation(Y, theta[n + q], q) @ psi
    U = torch.linalg.matrix_exp(-1j * 0.3 * (kron(Z, Z, I) + kron(I, Z, Z)))
    psi = U @ psi
    H_obs = kron(Z, I, I) + 0.5 * kron(X, X, I) + 0.3 * kron(I, Y, Y)
    energy = (psi.conj() @ H_obs @ psi).real
    energy.backward()
    unitary_error = (U.conj().T @ U - torch.eye(8, dtype=torch.cdouble)).abs().max()
    return {"energy": energy.item(), "grad": theta.grad, "probs": (psi.abs() ** 2).detach(),
            "unitary": bool(unitary_error < 1e-12), "norm": torch.vdot(psi, psi).real.item()}


def test_variational_quantum_circuit():
    ours, _ = run_both(variational_circuit, rtol=1e-9, atol=1e-11)
    assert ours["unitary"] and ours["norm"] == pytest.approx(1.0, abs=1e-12)
    angles = np.array([0.3, -0.7, 1.1, 0.5, 0.2, -0.4])
    for k in range(6):  # the parameter-shift rule: exact for these rotations, e^{-iθP/2}
        shift = np.zeros(6)
        shift[k] = math.pi / 2
        up = variational_circuit(OURS, tuple(angles + shift))["energy"]
        down = variational_circuit(OURS, tuple(angles - shift))["energy"]
        assert ours["grad"][k] == pytest.approx((up - down) / 2, abs=1e-10)


def learnt_unitary(m):
    torch = m.torch
    rng = np.random.default_rng(5)
    A = torch.tensor(rng.standard_normal((4, 4)) + 1j * rng.standard_normal((4, 4)), requires_grad=True)
    psi0 = torch.tensor(rng.standard_normal(4) + 1j * rng.standard_normal(4))
    psi0 = psi0 / torch.linalg.vector_norm(psi0)
    target = torch.tensor(np.eye(4)[2], dtype=torch.cdouble)
    opt = m.optim.Adam([A], lr=0.05)
    history = []
    for i in range(10):
        opt.zero_grad()
        H = (A + A.mH) / 2
        psi = torch.linalg.matrix_exp(-1j * H) @ psi0
        loss = 1 - torch.abs(torch.vdot(target, psi)) ** 2
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"history": history, "A": A.detach()}


def test_unitary_learnt_through_a_hermitian_parameter():
    ours, _ = run_both(learnt_unitary, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]


# ----------------------------------------------------------------------------------------------
# Operator learning and model-based reconstruction: a Fourier neural operator, MoDL's conjugate
# gradient, dynamic mode decomposition
# ----------------------------------------------------------------------------------------------


def fourier_neural_operator(m):
    """Li et al.'s FNO as its reference code writes it: complex weights by torch.rand(dtype=torch.cfloat),
    einsum over the kept modes of rfft/rfft2, written into a zero spectrum by slices, irfft back."""
    torch, nn, F = m.torch, m.nn, m.F

    class SpectralConv1d(nn.Module):
        def __init__(self, in_channels, out_channels, modes1):
            super().__init__()
            self.in_channels, self.out_channels, self.modes1 = in_channels, out_channels, modes1
            self.scale = 1 / (in_channels * out_channels)
            self.weights1 = nn.Parameter(self.scale * torch.rand(in_channels, out_channels, self.modes1,
                                                                 dtype=torch.cfloat))

        def compl_mul1d(self, input, weights):
            return torch.einsum("bix,iox->box", input, weights)

        def forward(self, x):
            batchsize = x.shape[0]
            x_ft = torch.fft.rfft(x)
            out_ft = torch.zeros(batchsize, self.out_channels, x.size(-1) // 2 + 1, device=x.device,
                                 dtype=torch.cfloat)
            out_ft[:, :, :self.modes1] = self.compl_mul1d(x_ft[:, :, :self.modes1], self.weights1)
            return torch.fft.irfft(out_ft, n=x.size(-1))

    class SpectralConv2d(nn.Module):
        def __init__(self, in_channels, out_channels, modes1, modes2):
            super().__init__()
            self.out_channels, self.modes1, self.modes2 = out_channels, modes1, modes2
            scale = 1 / (in_channels * out_channels)
            self.weights1 = nn.Parameter(scale * torch.rand(in_channels, out_channels, modes1, modes2,
                                                            dtype=torch.cfloat))
            self.weights2 = nn.Parameter(scale * torch.rand(in_channels, out_channels, modes1, modes2,
                                                            dtype=torch.cfloat))

        def forward(self, x):
            b = x.shape[0]
            x_ft = torch.fft.rfft2(x)
            out_ft = torch.zeros(b, self.out_channels, x.size(-2), x.size(-1) // 2 + 1, dtype=torch.cfloat,
                                 device=x.device)
            out_ft[:, :, :self.modes1, :self.modes2] = torch.einsum(
                "bixy,ioxy->boxy", x_ft[:, :, :self.modes1, :self.modes2], self.weights1)
            out_ft[:, :, -self.modes1:, :self.modes2] = torch.einsum(
                "bixy,ioxy->boxy", x_ft[:, :, -self.modes1:, :self.modes2], self.weights2)
            return torch.fft.irfft2(out_ft, s=(x.size(-2), x.size(-1)))

    class FNO1d(nn.Module):
        def __init__(self, modes, width):
            super().__init__()
            self.fc0 = nn.Linear(2, width)
            self.conv0 = SpectralConv1d(width, width, modes)
            self.conv1 = SpectralConv1d(width, width, modes)
            self.w0 = nn.Conv1d(width, width, 1)
            self.w1 = nn.Conv1d(width, width, 1)
            self.fc1 = nn.Linear(width, 16)
            self.fc2 = nn.Linear(16, 1)

        def forward(self, x):
            grid = torch.linspace(0, 1, x.shape[1]).reshape(1, -1, 1).repeat(x.shape[0], 1, 1)
            x = torch.cat((x, grid), dim=-1)
            x = self.fc0(x).permute(0, 2, 1)
            x = F.gelu(self.conv0(x) + self.w0(x))
            x = self.conv1(x) + self.w1(x)
            x = x.permute(0, 2, 1)
            return self.fc2(F.gelu(self.fc1(x)))

    torch.manual_seed(0)  # (chainrule's generator draws PyTorch's numbers, complex ones included)
    model = FNO1d(modes=6, width=8)
    spectral2d = SpectralConv2d(3, 2, 3, 2)
    rng = np.random.default_rng(0)
    a = torch.tensor(rng.standard_normal((4, 32, 1)).astype(np.float32))
    u = torch.tensor(np.cumsum(rng.standard_normal((4, 32, 1)), 1).astype(np.float32) * 0.1)
    x2 = torch.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    opt = m.optim.Adam(list(model.parameters()) + list(spectral2d.parameters()), lr=1e-2, weight_decay=1e-4)
    scheduler = m.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.5)
    history = []
    for ep in range(6):
        opt.zero_grad()
        out = model(a)
        loss = F.mse_loss(out.view(4, -1), u.view(4, -1), reduction="sum") / 4 + spectral2d(x2).pow(2).mean()
        loss.backward()
        opt.step()
        scheduler.step()
        history.append(loss.item())
    return {"history": history, "weights": model.conv0.weights1.detach(), "grad": model.conv1.weights1.grad,
            "grad2d": spectral2d.weights2.grad, "cfloat": model.conv0.weights1.dtype == torch.cfloat}


def test_fourier_neural_operator():
    ours, _ = run_both(fourier_neural_operator, rtol=1e-4, atol=1e-5)
    assert ours["cfloat"]
    assert min(ours["history"]) < ours["history"][0]


def modl_conjugate_gradient(m, lam0=0.05):
    """MoDL's data-consistency step: conjugate gradient on (AᴴA + λI) x = Aᴴy + λz, unrolled and differentiated
    with respect to λ and a (stand-in) denoiser's weight."""
    torch = m.torch
    rng = np.random.default_rng(1)
    n = 12
    img = rng.standard_normal((2, n, n)) + 1j * rng.standard_normal((2, n, n))
    mask = torch.tensor(rng.uniform(size=(n, n)) < 0.5)
    A = lambda x: torch.fft.fft2(x, norm="ortho") * mask
    AH = lambda k: torch.fft.ifft2(k * mask, norm="ortho")
    y = A(torch.tensor(img))
    lam = torch.tensor(lam0, dtype=torch.float64, requires_grad=True)
    denoiser_w = torch.tensor(0.9 + 0.1j, requires_grad=True)

    def cg(rhs, x0, iters=6):
        x = x0
        r = rhs - (AH(A(x)) + lam * x)
        p = r.clone()
        rsold = torch.sum(r.conj() * r).real
        for i in range(iters):
            Ap = AH(A(p)) + lam * p
            alpha = rsold / torch.sum(p.conj() * Ap)
            x = x + alpha * p
            r = r - alpha * Ap
            rsnew = torch.sum(r.conj() * r).real
            p = r + (rsnew / rsold) * p
            rsold = rsnew
        return x

    x = AH(y)
    for k in range(3):
        z = denoiser_w * x
        x = cg(AH(y) + lam * z, x)
    loss = (x - torch.tensor(img)).abs().pow(2).mean()
    loss.backward()
    return {"x": x.detach(), "loss": loss.item(), "lam_grad": lam.grad, "w_grad": denoiser_w.grad}


def test_modl_conjugate_gradient():
    ours, _ = run_both(modl_conjugate_gradient, rtol=1e-8, atol=1e-10)
    up, down = (modl_conjugate_gradient(OURS, 0.05 + s)["loss"] for s in (1e-6, -1e-6))
    assert float(ours["lam_grad"]) == pytest.approx((up - down) / 2e-6, rel=1e-5)


def dynamic_mode_decomposition(m):
    """Exact DMD of a damped oscillation: SVD, the reduced operator's eig (complex eigenvalues of a real
    matrix), modes, amplitudes by lstsq, the reconstruction λᵏ, and the gradient of its error."""
    torch = m.torch
    rng = np.random.default_rng(2)
    t = np.arange(20) * 0.1
    modes = rng.standard_normal((6, 2))
    data = modes @ np.stack([np.cos(2 * t) * np.exp(-0.1 * t), np.sin(2 * t) * np.exp(-0.1 * t)])
    X = torch.tensor(data + 0.01 * rng.standard_normal((6, 20)), requires_grad=True)
    X1, X2 = X[:, :-1], X[:, 1:]
    U, S, Vh = torch.linalg.svd(X1, full_matrices=False)
    r = 2
    U, S, V = U[:, :r], S[:r], Vh[:r].mH
    Atilde = U.mH @ X2 @ V / S
    lam, W = torch.linalg.eig(Atilde)
    Phi = X2.to(torch.cdouble) @ (V / S).to(torch.cdouble) @ W
    b = torch.linalg.lstsq(Phi, X[:, 0].to(torch.cdouble).unsqueeze(-1)).solution.squeeze(-1)
    steps = torch.arange(20, dtype=torch.float64)
    recon = (Phi @ (b[:, None] * lam[:, None] ** steps)).real
    omega = torch.log(lam) / 0.1
    loss = (recon - X).pow(2).mean() + omega.imag.abs().sum() * 0.01
    loss.backward()
    order = torch.argsort(lam.imag)
    return {"recon": recon.detach(), "omega": omega[order].detach(), "grad": X.grad}


def test_dynamic_mode_decomposition():
    ours, _ = run_both(dynamic_mode_decomposition, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["omega"], [-0.1 - 2j, -0.1 + 2j], atol=0.01)  # the damping and frequency
