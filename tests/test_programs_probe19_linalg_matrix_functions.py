# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Numerical linear algebra as real programs use it (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same data, comparing values, gradients, dtypes and errors; all in float64 and, where programs run
so, float32. Matrix functions and solvers inside programs: ``matrix_exp`` for Lie groups (expRNN's orthogonal
recurrence, SE(3) poses fitted by gradient descent, second derivatives); a Markov chain by ``matrix_power`` and
``eig`` (complex results); Newton's method and an implicit layer's gradient (``torch.func.jacrev``,
``linalg.solve``); a quantum evolution by complex ``matrix_exp`` and ``eigh``; Shampoo (inverse fourth roots by
eigh), K-FAC (Kronecker factors inverted by cholesky_inverse) and conjugate gradients against solve."""

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# matrix_exp for Lie groups: an orthogonal RNN (expRNN), SE(3) poses; matrix_power for Markov chains
# ----------------------------------------------------------------------------------------------


def exp_rnn(m):
    """expRNN (Lezcano-Casado & Martínez-Rubio): the recurrent weight is exp(A − Aᵀ), orthogonal for any A."""
    torch, nn = m.torch, m.nn

    class ExpRNN(nn.Module):
        def __init__(self, n_in, hidden, n_out):
            super().__init__()
            self.A = nn.Parameter(torch.zeros(hidden, hidden))
            self.inp = nn.Linear(n_in, hidden)
            self.out = nn.Linear(hidden, n_out)

        def recurrent(self):
            skew = self.A.triu(1) - self.A.triu(1).T
            return torch.matrix_exp(skew)

        def forward(self, x):
            W = self.recurrent()
            h = torch.zeros(x.shape[0], W.shape[0])
            for t in range(x.shape[1]):
                h = torch.tanh(h @ W.T + self.inp(x[:, t]))
            return self.out(h)

    rng = np.random.default_rng(7)
    torch.manual_seed(0)
    model = ExpRNN(2, 6, 1)
    with torch.no_grad():
        model.A.copy_(torch.tensor(rng.standard_normal((6, 6)) * 0.5, dtype=torch.float32))
        model.inp.weight.copy_(torch.tensor(rng.standard_normal((6, 2)) * 0.5, dtype=torch.float32))
        model.inp.bias.zero_()
        model.out.weight.copy_(torch.tensor(rng.standard_normal((1, 6)) * 0.5, dtype=torch.float32))
        model.out.bias.zero_()
    x = torch.tensor(rng.standard_normal((8, 7, 2)), dtype=torch.float32)
    y = x.sum((1, 2)).unsqueeze(-1).tanh()
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    losses = []
    for step in range(6):
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    W = model.recurrent().detach()
    return losses, model.A.grad, W, W @ W.T, torch.linalg.det(W)


def test_exp_rnn_orthogonal_recurrence_by_matrix_exp():
    ours, _ = run_both(exp_rnn, rtol=1e-4, atol=1e-5)
    losses, grad_A, W, WWt, det = ours
    np.testing.assert_allclose(WWt, np.eye(6), atol=1e-5)
    np.testing.assert_allclose(det, 1.0, rtol=1e-5)
    np.testing.assert_allclose(np.triu(grad_A, 0) == 0, np.tri(6, dtype=bool))  # only A's strict upper triangle


def se3_poses(m):
    """SE(3) poses: exp of the 4x4 twist matrix (rotation by Rodrigues' closed form beside it), batched, float64,
    a pose fitted by gradient descent; matrix_exp's second derivative; matrix_power of the pose."""
    torch = m.torch

    def hat(w):
        z = torch.zeros_like(w[..., 0])
        return torch.stack([torch.stack([z, -w[..., 2], w[..., 1]], -1),
                            torch.stack([w[..., 2], z, -w[..., 0]], -1),
                            torch.stack([-w[..., 1], w[..., 0], z], -1)], -2)

    def se3_exp(xi):
        omega, v = xi[..., :3], xi[..., 3:]
        top = torch.cat([hat(omega), v.unsqueeze(-1)], -1)
        bottom = torch.zeros(*xi.shape[:-1], 1, 4, dtype=xi.dtype)
        return torch.linalg.matrix_exp(torch.cat([top, bottom], -2))

    def rodrigues(omega):
        theta = torch.linalg.vector_norm(omega, dim=-1, keepdim=True).unsqueeze(-1)
        K = hat(omega / theta.squeeze(-1))
        eye = torch.eye(3, dtype=omega.dtype)
        return eye + torch.sin(theta) * K + (1 - torch.cos(theta)) * K @ K

    rng = np.random.default_rng(8)
    xi = torch.tensor(rng.standard_normal((5, 6)), requires_grad=True)
    T = se3_exp(xi)
    R_closed = rodrigues(xi[:, :3])
    points = torch.tensor(rng.standard_normal((10, 3)))
    target = se3_exp(torch.tensor([[0.3, -0.2, 0.5, 1.0, 0.0, -1.0]], dtype=torch.float64))[0]
    homogeneous = torch.cat([points, torch.ones(10, 1, dtype=points.dtype)], -1)
    goal = homogeneous @ target.T
    pose = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.SGD([pose], lr=0.05)
    for step in range(30):
        opt.zero_grad()
        loss = ((homogeneous @ se3_exp(pose).T - goal) ** 2).sum(-1).mean()
        loss.backward()
        opt.step()
    (g,) = torch.autograd.grad(T[..., :3, 3].sum() + T[..., :3, :3].diagonal(0, -2, -1).sum(), xi, create_graph=True)
    (gg,) = torch.autograd.grad(g.pow(2).sum(), xi)
    P3 = torch.linalg.matrix_power(T.detach(), 3)
    return T, R_closed, pose.detach(), loss.item(), g, gg, P3, se3_exp(3 * xi.detach())


def test_se3_poses_by_matrix_exp():
    ours, _ = run_both(se3_poses, rtol=1e-8, atol=1e-9)
    T, R_closed, pose, loss, g, gg, P3, T3 = ours
    np.testing.assert_allclose(T[:, :3, :3], R_closed, atol=1e-10)
    np.testing.assert_allclose(P3, T3, atol=1e-9)
    assert loss < 1e-2


def markov_chain(m):
    """A Markov chain's n-step transitions by matrix_power (positive, zero and negative powers), its stationary
    distribution by eig of Pᵀ (the eigenvalue 1, complex results) and by solve with the normalisation row."""
    torch = m.torch
    rng = np.random.default_rng(9)
    logits = torch.tensor(rng.standard_normal((5, 5)), requires_grad=True)
    P = torch.softmax(logits, -1)
    P50 = torch.linalg.matrix_power(P, 50)
    P0 = torch.linalg.matrix_power(P, 0)
    Pinv2 = torch.linalg.matrix_power(P, -2)
    evals, evecs = torch.linalg.eig(P.T)
    k = torch.argmin((evals - 1).abs())
    pi_eig = evecs[:, k].real
    pi_eig = pi_eig / pi_eig.sum()
    A = torch.cat([(P.T - torch.eye(5, dtype=P.dtype))[:-1], torch.ones(1, 5, dtype=P.dtype)])
    b = torch.zeros(5, dtype=P.dtype)
    b[-1] = 1
    pi_solve = torch.linalg.solve(A, b)
    (g,) = torch.autograd.grad(pi_solve[0] + P50[1, 2], logits)
    spectral_gap = 1 - torch.sort(evals.abs(), descending=True).values[1]
    batched = torch.linalg.matrix_power(P.detach().expand(3, 5, 5), 4)
    return P50, P0, Pinv2, pi_eig, pi_solve, g, spectral_gap, evals.dtype == torch.complex128, batched


def test_markov_chain_by_matrix_power_and_eig():
    ours, _ = run_both(markov_chain, rtol=1e-8, atol=1e-10)
    P50, P0, Pinv2, pi_eig, pi_solve, g, gap, complex_, batched = ours
    np.testing.assert_allclose(pi_eig, pi_solve, rtol=1e-8)
    np.testing.assert_allclose(P50, np.broadcast_to(pi_solve, (5, 5)), atol=1e-8)
    np.testing.assert_allclose(P0, np.eye(5))
    assert complex_ and 0 < gap < 1


def newton_and_implicit_layer(m):
    """Newton's method for a nonlinear system (the Jacobian by torch.func.jacrev, the step by linalg.solve),
    then an implicit layer's gradient by the implicit function theorem (a solve with the transposed Jacobian)
    against unrolled differentiation."""
    torch = m.torch
    rng = np.random.default_rng(16)
    W = torch.tensor(rng.standard_normal((5, 5)) * 0.3, requires_grad=True)
    b = torch.tensor(rng.standard_normal(5), requires_grad=True)

    def g(z, W, b):
        return z - torch.tanh(W @ z + b)

    z = torch.zeros(5, dtype=torch.float64)
    with torch.no_grad():
        for it in range(8):
            J = torch.func.jacrev(g)(z, W, b)
            z = z - torch.linalg.solve(J, g(z, W, b))
    residual = torch.linalg.vector_norm(g(z, W, b))
    # implicit gradient of L(z*) = Σ z*: dL/dθ = -(∂g/∂θ)ᵀ (∂g/∂z)⁻ᵀ 1
    J = torch.func.jacrev(g)(z, W.detach(), b.detach())
    u = torch.linalg.solve(J.T, torch.ones(5, dtype=torch.float64))
    _, vjp = torch.func.vjp(lambda W, b: g(z, W, b), W, b)
    gW_implicit, gb_implicit = (-x for x in vjp(u))
    # unrolled fixed-point iteration, differentiated through
    zz = torch.zeros(5, dtype=torch.float64)
    for it in range(60):
        zz = torch.tanh(W @ zz + b)
    gW_unrolled, gb_unrolled = torch.autograd.grad(zz.sum(), (W, b))
    return z, residual, gW_implicit, gb_implicit, gW_unrolled, gb_unrolled


def test_newton_and_implicit_layer_gradients():
    ours, _ = run_both(newton_and_implicit_layer, rtol=1e-8, atol=1e-10)
    z, residual, gW_i, gb_i, gW_u, gb_u = ours
    assert residual < 1e-12
    np.testing.assert_allclose(gW_i, gW_u, atol=1e-8)
    np.testing.assert_allclose(gb_i, gb_u, atol=1e-8)


def quantum_evolution(m):
    """A two-qubit Hamiltonian H(θ) (complex Hermitian), evolved by U = exp(-iHt) (complex matrix_exp) and by its
    eigendecomposition (complex eigh), an expectation value's gradient with respect to θ; a fidelity through
    svdvals and a state's purity; the unitary's determinant's phase by slogdet."""
    torch = m.torch
    X = torch.tensor([[0, 1], [1, 0]], dtype=torch.complex128)
    Y = torch.tensor([[0, -1j], [1j, 0]], dtype=torch.complex128)
    Z = torch.tensor([[1, 0], [0, -1]], dtype=torch.complex128)
    I2 = torch.eye(2, dtype=torch.complex128)
    theta = torch.tensor([0.7, -0.3, 0.5, 0.2], dtype=torch.float64, requires_grad=True)
    H = (theta[0] * torch.kron(Z, Z) + theta[1] * torch.kron(X, I2) + theta[2] * torch.kron(I2, Y)
         + theta[3] * torch.kron(X, X))
    t = 0.8
    U = torch.linalg.matrix_exp(-1j * t * H)
    evals, evecs = torch.linalg.eigh(H)
    U2 = evecs @ torch.diag_embed(torch.exp(-1j * t * evals)) @ evecs.mH
    psi0 = torch.zeros(4, dtype=torch.complex128)
    psi0[0] = 1
    psi = U @ psi0
    obs = torch.kron(Z, I2)
    expectation = (psi.conj() @ obs @ psi).real
    (g,) = torch.autograd.grad(expectation, theta, retain_graph=True)
    rho = torch.outer(psi, psi.conj())
    purity = torch.trace(rho @ rho).real
    fidelity = torch.linalg.svdvals(U @ U2.mH).sum() / 4
    sign, logabsdet = torch.linalg.slogdet(U)
    (g_evals,) = torch.autograd.grad(evals.sum() + evals[-1] * 2, theta)
    return U, U2, expectation, g, purity, fidelity, sign, logabsdet, g_evals, U.dtype == torch.complex128


def test_quantum_evolution_by_complex_matrix_exp_and_eigh():
    ours, _ = run_both(quantum_evolution, rtol=1e-9, atol=1e-10)
    U, U2, expectation, g, purity, fidelity, sign, logabsdet, g_evals, complex_ = ours
    np.testing.assert_allclose(U, U2, atol=1e-10)
    np.testing.assert_allclose(U @ U.conj().T, np.eye(4), atol=1e-10)
    np.testing.assert_allclose([purity, fidelity, abs(sign)], [1, 1, 1], atol=1e-10)
    np.testing.assert_allclose(logabsdet, 0, atol=1e-10)
    assert complex_


# ----------------------------------------------------------------------------------------------
# Second-order optimisers built on linalg: Shampoo (inverse fourth roots by eigh), K-FAC (damped Kronecker
# factors by cholesky_inverse), conjugate gradients against solve
# ----------------------------------------------------------------------------------------------


def shampoo_and_kfac(m, dtype_name):
    torch, nn, F = m.torch, m.nn, m.F
    dtype = getattr(torch, dtype_name)
    rng = np.random.default_rng(21)
    x = torch.tensor(rng.standard_normal((32, 6)), dtype=dtype)
    y = torch.tensor(rng.integers(0, 3, 32))

    def matrix_power_eigh(M, p, eps=1e-6):
        lam, Q = torch.linalg.eigh(M)
        return Q @ torch.diag(lam.clamp_min(eps) ** p) @ Q.T

    def make():
        net = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(dtype)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.tensor(np.random.default_rng(p.numel()).standard_normal(p.shape) * 0.5, dtype=dtype))
        return net

    # Shampoo: L ← L + G Gᵀ, R ← R + Gᵀ G, W ← W − lr L^(-1/4) G R^(-1/4)
    net = make()
    stats = {id(p): (1e-4 * torch.eye(p.shape[0], dtype=dtype), 1e-4 * torch.eye(p.shape[1], dtype=dtype))
             for p in net.parameters() if p.ndim == 2}
    shampoo_losses = []
    for step in range(5):
        net.zero_grad()
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        shampoo_losses.append(loss.item())
        with torch.no_grad():
            for p in net.parameters():
                if p.ndim == 2:
                    L, Rm = stats[id(p)]
                    L += p.grad @ p.grad.T
                    Rm += p.grad.T @ p.grad
                    p -= 0.3 * matrix_power_eigh(L, -0.25) @ p.grad @ matrix_power_eigh(Rm, -0.25)
                else:
                    p -= 0.3 * p.grad
    # K-FAC for the first layer: A = E[a aᵀ], G = E[g gᵀ], update G⁻¹ ∇W A⁻¹ with damping, by cholesky_inverse
    net2 = make()
    acts, grads_out = {}, {}
    net2[0].register_forward_hook(lambda mod, inp, out: acts.__setitem__("a", inp[0].detach()))
    net2[0].register_full_backward_hook(lambda mod, gin, gout: grads_out.__setitem__("g", gout[0].detach()))
    kfac_losses = []
    for step in range(5):
        net2.zero_grad()
        loss = F.cross_entropy(net2(x), y)
        loss.backward()
        kfac_losses.append(loss.item())
        a, g = acts["a"], grads_out["g"] * x.shape[0]
        A = a.T @ a / a.shape[0] + 0.1 * torch.eye(6, dtype=dtype)
        G = g.T @ g / g.shape[0] + 0.1 * torch.eye(5, dtype=dtype)
        A_inv = torch.cholesky_inverse(torch.linalg.cholesky(A))
        G_inv = torch.cholesky_inverse(torch.linalg.cholesky(G))
        with torch.no_grad():
            net2[0].weight -= 0.2 * G_inv @ net2[0].weight.grad @ A_inv
            for p in list(net2.parameters())[1:]:
                p -= 0.2 * p.grad
    # conjugate gradients on a damped Gauss–Newton system against solve
    M = A @ A + torch.eye(6, dtype=dtype)
    rhs = x[0]
    z, r = torch.zeros(6, dtype=dtype), rhs.clone()
    d = r.clone()
    for it in range(6):
        Md = M @ d
        alpha = (r @ r) / (d @ Md)
        z = z + alpha * d
        r_new = r - alpha * Md
        d = r_new + (r_new @ r_new) / (r @ r) * d
        r = r_new
    return (shampoo_losses, [p.detach() for p in net.parameters()], kfac_losses,
            [p.detach() for p in net2.parameters()], z, torch.linalg.solve(M, rhs), A_inv @ A)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # (the input x needs no grad: both libraries warn)
@pytest.mark.parametrize("dtype_name, rtol, atol", [("float64", 1e-8, 1e-10), ("float32", 2e-4, 2e-5)])
def test_shampoo_kfac_and_conjugate_gradients(dtype_name, rtol, atol):
    ours, _ = run_both(shampoo_and_kfac, dtype_name, rtol=rtol, atol=atol)
    shampoo_losses, shampoo_params, kfac_losses, kfac_params, z_cg, z_solve, identity = ours
    assert shampoo_losses[-1] < shampoo_losses[0] and kfac_losses[-1] < kfac_losses[0]
    np.testing.assert_allclose(z_cg, z_solve, rtol=rtol * 100, atol=atol * 100)
    np.testing.assert_allclose(identity, np.eye(6), atol=atol * 10)
