# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Differentiable numerical solvers written as torchdiffeq, torchsde, torchcde, DeepXDE and papers' code write them,
run as tests/probe18_odes_common.py says. PDE solvers: a biharmonic PINN (fourth derivatives by nested grads against
``jacfwd(jacrev(hessian))``, Adam then L-BFGS); a 1-D Poisson PINN with a hard boundary constraint and residual-based
refinement (``topk``), its L-BFGS training resumed from a ``torch.save``/``torch.load`` checkpoint; a periodic
spectral Poisson solver (``rfftn``/``irfftn``, spectral gradient) in an L-BFGS source recovery; ``fft.fftfreq``'s
float32 rounding (PyTorch's opmath); P1 finite elements assembled by ``index_add_`` and by
``sparse_coo_tensor``/``sparse.mm``, CG with an implicit backward, a conductivity inverse problem, a shape derivative
and an implicit Hessian-vector product by double backward (checked by finite differences only: PyTorch's
``sparse.mm`` drops those terms)."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Finite elements: P1 assembly by index_add_ and by a sparse COO matrix, a conjugate-gradient solve whose
# backward is implicit (a second CG solve), an inverse conductivity problem and a shape derivative
# ----------------------------------------------------------------------------------------------


def fem_mesh(n=6):
    """An n x n grid of nodes on the unit square, each cell cut into two triangles."""
    xs = np.linspace(0, 1, n)
    X, Y = np.meshgrid(xs, xs, indexing="ij")
    nodes = np.stack([X.ravel(), Y.ravel()], 1)
    triangles = []
    for i in range(n - 1):
        for j in range(n - 1):
            a, b, c, d = i * n + j, (i + 1) * n + j, (i + 1) * n + j + 1, i * n + j + 1
            triangles += [[a, b, c], [a, c, d]]
    boundary = (np.isclose(nodes, 0) | np.isclose(nodes, 1)).any(1)
    return nodes, np.array(triangles), boundary


def make_fem(m):
    torch = m.torch

    def element_matrices(coords, triangles):
        x = coords[triangles]  # (E, 3, 2)
        B = torch.stack([x[:, 1] - x[:, 0], x[:, 2] - x[:, 0]], dim=1)  # (E, 2, 2)
        area = 0.5 * torch.linalg.det(B).abs()
        # gradients of the barycentric coordinates: rows of [-1 -1; 1 0; 0 1] B^{-T}
        D = torch.tensor([[-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]], dtype=coords.dtype)
        grads = D @ torch.linalg.inv(B).transpose(1, 2)  # (E, 3, 2)
        stiffness = area[:, None, None] * torch.einsum("eid,ejd->eij", grads, grads)
        return stiffness, area

    def assemble(coords, triangles, kappa, n_nodes, sparse):
        Ke, area = element_matrices(coords, triangles)
        Ke = kappa[:, None, None] * Ke
        rows = triangles[:, :, None].expand(-1, 3, 3).reshape(-1)
        cols = triangles[:, None, :].expand(-1, 3, 3).reshape(-1)
        load = torch.zeros(n_nodes, dtype=coords.dtype).index_add_(0, triangles.reshape(-1),
                                                                    (area / 3).repeat_interleave(3))
        if sparse:
            K = torch.sparse_coo_tensor(torch.stack([rows, cols]), Ke.reshape(-1), (n_nodes, n_nodes)).coalesce()
        else:
            K = torch.zeros(n_nodes * n_nodes, dtype=coords.dtype)
            K.index_add_(0, rows * n_nodes + cols, Ke.reshape(-1))
            K = K.view(n_nodes, n_nodes)
        return K, load

    def cg(matvec, b, tol=1e-13, maxiter=200):
        x = torch.zeros_like(b)
        r = b - matvec(x)
        p = r.clone()
        rs_old = torch.dot(r, r)
        for i in range(maxiter):
            Ap = matvec(p)
            alpha = rs_old / torch.dot(p, Ap)
            x = x + alpha * p
            r = r - alpha * Ap
            rs_new = torch.dot(r, r)
            if torch.sqrt(rs_new) < tol:
                break
            p = r + (rs_new / rs_old) * p
            rs_old = rs_new
        cg.iterations.append(i + 1)
        return x

    cg.iterations = []

    def dirichlet(K, free, sparse):
        """x -> P K P x + (1 - P) x: the boundary rows and columns replaced by the identity's."""
        mm = (lambda x: torch.sparse.mm(K, x.unsqueeze(1)).squeeze(1)) if sparse else (lambda x: K @ x)
        return lambda x: free * mm(free * x) + (1 - free) * x

    class CGSolve(torch.autograd.Function):
        """u = A(values)^{-1} b by CG; the backward solves A lambda = grad (A is symmetric) by CG again and
        gives dL/dvalues_e = -lambda[row_e] u[col_e] (on free rows and columns), dL/db = lambda."""

        @staticmethod
        def forward(ctx, values, b, indices, free, n):
            A = torch.sparse_coo_tensor(indices, values, (n, n))
            u = cg(dirichlet(A, free, True), b)
            ctx.save_for_backward(values, u, indices, free)
            ctx.n = n
            return u

        @staticmethod
        def backward(ctx, grad_u):
            values, u, indices, free = ctx.saved_tensors
            A = torch.sparse_coo_tensor(indices, values, (ctx.n, ctx.n))
            lam = cg(dirichlet(A, free, True), grad_u)
            rows, cols = indices
            grad_values = -(free * lam)[rows] * (free * u)[cols]
            return grad_values, lam, None, None, None

    return assemble, cg, dirichlet, CGSolve


def fem(m, steps=4):
    torch, optim = m.torch, m.optim
    assemble, cg, dirichlet, CGSolve = make_fem(m)
    nodes_np, triangles_np, boundary_np = fem_mesh()
    nodes, triangles = torch.from_numpy(nodes_np), torch.from_numpy(triangles_np)
    free = torch.from_numpy((~boundary_np).astype(np.float64))
    n = len(nodes_np)
    centroids = nodes[triangles].mean(1)
    true_kappa = 1 + 0.5 * torch.sin(3 * centroids[:, 0]) * torch.cos(2 * centroids[:, 1])

    with torch.no_grad():
        K, load = assemble(nodes, triangles, true_kappa, n, sparse=False)
        u_obs = cg(dirichlet(K, free, False), free * load)

    log_kappa = torch.zeros(len(triangles_np), dtype=torch.float64, requires_grad=True)
    # (not Adam: the corner elements touch no free node, their gradients are rounding noise that Adam scales up)
    optimizer = optim.SGD([log_kappa], lr=0.02, momentum=0.9)
    losses, grads, solutions = [], [], {}
    for step in range(steps):
        optimizer.zero_grad()
        K, load = assemble(nodes, triangles, log_kappa.exp(), n, sparse=True)
        u = CGSolve.apply(K.values(), free * load, K.indices(), free, n)
        loss = 1e4 * ((u - u_obs) ** 2).sum() + 1e-3 * (log_kappa ** 2).sum()
        loss.backward()
        grads.append(log_kappa.grad.clone())
        optimizer.step()
        losses.append(loss.item())

    # the same gradient by backprop through CG unrolled on the dense matrix
    kappa = log_kappa.detach().exp().requires_grad_(True)
    K, load = assemble(nodes, triangles, kappa, n, sparse=False)
    u_unrolled = cg(dirichlet(K, free, False), free * load)
    d_unrolled, = torch.autograd.grad(((u_unrolled - u_obs) ** 2).sum(), kappa)
    K, load = assemble(nodes, triangles, kappa, n, sparse=True)
    u_implicit = CGSolve.apply(K.values(), free * load, K.indices(), free, n)
    d_implicit, = torch.autograd.grad(((u_implicit - u_obs) ** 2).sum(), kappa)

    # a shape derivative: the compliance b.u with respect to the interior nodes' positions
    coords = nodes.clone().requires_grad_(True)
    K, load = assemble(coords, triangles, torch.ones(len(triangles_np), dtype=torch.float64), n, sparse=True)
    u = CGSolve.apply(K.values(), free * load, K.indices(), free, n)
    compliance = torch.dot(free * load, u)
    d_coords, = torch.autograd.grad(compliance, coords)
    return {"losses": losses, "grads": grads, "u_obs": u_obs, "u": u_implicit, "d_unrolled": d_unrolled,
            "d_implicit": d_implicit, "compliance": compliance, "d_coords": d_coords * free[:, None],
            "cg_iterations": cg.iterations}


@pytest.mark.filterwarnings("ignore:Sparse invariant checks are implicitly disabled")  # (PyTorch's)
def test_finite_elements_with_an_implicit_cg():
    ours, _ = run_both(fem, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(ours["d_implicit"], ours["d_unrolled"], rtol=1e-6, atol=1e-12)
    assert ours["losses"][-1] < ours["losses"][0]
    nodes, _, boundary = fem_mesh()
    assert ours["u_obs"].min() >= 0 and (ours["u_obs"][boundary] == 0).all()  # the maximum principle
    assert ours["cg_iterations"][0] <= 16  # CG in at most as many steps as free nodes


def test_p1_assembly_by_hand():
    """Without torch: on the grid, the assembled P1 Laplacian's interior rows are the 5-point stencil
    [4, -1, -1, -1, -1] (right triangles), by index_add_ and by the sparse matrix alike; CG solves the system as
    NumPy's dense solve."""
    torch = OURS.torch
    assemble, cg, dirichlet, _ = make_fem(OURS)
    nodes, triangles, boundary = fem_mesh(5)
    ones = torch.ones(len(triangles), dtype=torch.float64)
    dense, load = assemble(torch.tensor(nodes), torch.tensor(triangles), ones, 25, sparse=False)
    sparse, _ = assemble(torch.tensor(nodes), torch.tensor(triangles), ones, 25, sparse=True)
    np.testing.assert_allclose(sparse.to_dense().numpy(), dense.numpy(), atol=1e-14)
    centre = 2 * 5 + 2
    row = dense[centre].numpy()
    np.testing.assert_allclose(row[[centre, centre - 1, centre + 1, centre - 5, centre + 5]], [4, -1, -1, -1, -1])
    np.testing.assert_allclose(np.delete(row, [centre, centre - 1, centre + 1, centre - 5, centre + 5]), 0, atol=1e-14)
    np.testing.assert_allclose(load.sum().item(), 1.0)  # the integral of 1
    free = ~boundary
    u = cg(dirichlet(dense, torch.tensor(free.astype(np.float64)), False), torch.tensor(free * load.numpy()))
    expected = np.linalg.solve(dense.numpy()[np.ix_(free, free)], load.numpy()[free])
    np.testing.assert_allclose(u.numpy()[free], expected, rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# A spectral Poisson solver (rfftn on a periodic 3-D box) inside a source-recovery problem
# ----------------------------------------------------------------------------------------------


def spectral_poisson(m, n=8, steps=2):
    torch, optim = m.torch, m.optim
    L = 2 * math.pi

    def poisson_solve(f):
        """-Laplace(u) = f - mean(f) on the periodic box, u with zero mean."""
        k = torch.fft.fftfreq(n, d=L / n, dtype=torch.float64) * 2 * math.pi
        kz = torch.fft.rfftfreq(n, d=L / n, dtype=torch.float64) * 2 * math.pi
        KX, KY, KZ = torch.meshgrid(k, k, kz, indexing="ij")
        k2 = KX ** 2 + KY ** 2 + KZ ** 2
        k2[0, 0, 0] = 1.0  # the mean mode: solved as zero below
        f_hat = torch.fft.rfftn(f, dim=(-3, -2, -1))
        u_hat = f_hat / k2
        u_hat[..., 0, 0, 0] = 0
        u = torch.fft.irfftn(u_hat, s=(n, n, n), dim=(-3, -2, -1))
        # the field's gradient by spectral differentiation: i k u_hat
        grad_u = torch.stack([torch.fft.irfftn(1j * K * u_hat, s=(n, n, n), dim=(-3, -2, -1))
                              for K in (KX, KY, KZ)], dim=-1)
        return u, grad_u

    x = torch.arange(n, dtype=torch.float64) * L / n
    X, Y, Z = torch.meshgrid(x, x, x, indexing="ij")
    true_f = torch.sin(X) * torch.cos(2 * Y) + 0.5 * torch.cos(Z) + 0.3 * torch.sin(X + Y - Z)
    with torch.no_grad():
        u_obs, _ = poisson_solve(true_f)
    rng = np.random.default_rng(2)
    f = torch.tensor(0.1 * rng.standard_normal((n, n, n)), requires_grad=True)
    optimizer = optim.LBFGS([f], lr=1, max_iter=6, history_size=4, line_search_fn="strong_wolfe")
    losses = []

    def closure():
        optimizer.zero_grad()
        u, grad_u = poisson_solve(f)
        # the mismatch of u, plus the field energy |grad u|^2 as a smoothing term
        loss = ((u - u_obs) ** 2).mean() + 1e-4 * (grad_u ** 2).sum(-1).mean()
        loss.backward()
        losses.append(loss.item())
        return loss

    for step in range(steps):
        optimizer.step(closure)
    u, grad_u = poisson_solve(true_f.clone().requires_grad_(True))
    return {"losses": losses, "f": f, "u_obs": u_obs, "grad_u": grad_u}


def test_spectral_poisson_source_recovery():
    ours, _ = run_both(spectral_poisson, rtol=1e-8, atol=1e-10)
    n = 8
    x = np.arange(n) * 2 * np.pi / n
    X, Y, Z = np.meshgrid(x, x, x, indexing="ij")
    # -Laplace u = f: each Fourier mode divided by |k|^2
    expected = np.sin(X) * np.cos(2 * Y) / 5 + 0.5 * np.cos(Z) + 0.3 * np.sin(X + Y - Z) / 3
    np.testing.assert_allclose(ours["u_obs"], expected, atol=1e-12)
    np.testing.assert_allclose(ours["grad_u"][..., 2], -0.5 * np.sin(Z) - 0.3 * np.cos(X + Y - Z) / 3, atol=1e-12)
    assert ours["losses"][-1] < 1e-2 * ours["losses"][0]


def fftfreq_in_float32():
    """PyTorch's fftfreq: out = arange(n) in float32, then out.mul_(1.0 / (n * d)), the double scalar taken in
    float32 (its opmath), so each product rounds in float32."""
    d = 2 * math.pi / 8
    counts = np.array([0, 1, 2, 3, -4, -3, -2, -1], dtype=np.float32)
    expected = counts * np.float32(1.0 / (8 * d))
    assert expected[3] == np.float32(0.4774648)  # not float32(3 / (8 d)) = 0.47746482
    return d, expected


def test_fftfreq_in_float32_is_pytorchs():
    torch = pytest.importorskip("torch")
    d, expected = fftfreq_in_float32()
    np.testing.assert_array_equal(torch.fft.fftfreq(8, d=d).numpy(), expected)
    np.testing.assert_array_equal(torch.fft.rfftfreq(8, d=d).numpy(), np.abs(expected[[0, 1, 2, 3, 4]]))


def test_fftfreq_in_float32_rounds_as_pytorch():
    d, expected = fftfreq_in_float32()
    np.testing.assert_array_equal(OURS.torch.fft.fftfreq(8, d=d).numpy(), expected)
    np.testing.assert_array_equal(OURS.torch.fft.rfftfreq(8, d=d).numpy(), np.abs(expected[[0, 1, 2, 3, 4]]))


# ----------------------------------------------------------------------------------------------
# A PINN for the biharmonic equation (a clamped-free plate: fourth derivatives), Adam then L-BFGS
# ----------------------------------------------------------------------------------------------


def make_plate_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).double()


def biharmonic_pinn(m, weights, adam_steps=3, lbfgs_iter=5):
    torch, optim = m.torch, m.optim
    net = load(m, make_plate_net(m), weights)
    rng = np.random.default_rng(9)
    xy = torch.tensor(rng.uniform(0, 1, (24, 2)), requires_grad=True)
    s = rng.uniform(0, 1, 8)
    edges = np.concatenate([np.stack([s, 0 * s], 1), np.stack([s, 0 * s + 1], 1),
                            np.stack([0 * s, s], 1), np.stack([0 * s + 1, s], 1)])
    xy_b = torch.tensor(edges, requires_grad=True)
    pi = math.pi

    def derivative(y, x, order):
        for _ in range(order):
            y = torch.autograd.grad(y, x, grad_outputs=torch.ones_like(y), create_graph=True)[0]
        return y

    def laplacian(u, xy):
        du = torch.autograd.grad(u, xy, torch.ones_like(u), create_graph=True)[0]
        u_xx = torch.autograd.grad(du[:, 0:1], xy, torch.ones_like(du[:, 0:1]), create_graph=True)[0][:, 0:1]
        u_yy = torch.autograd.grad(du[:, 1:2], xy, torch.ones_like(du[:, 1:2]), create_graph=True)[0][:, 1:2]
        return u_xx + u_yy

    def pde_loss():
        # simply supported plate: Laplace^2 u = 4 pi^4 sin(pi x) sin(pi y), u = Laplace u = 0 on the edges
        u = net(xy)
        bilaplacian = laplacian(laplacian(u, xy), xy)
        q = 4 * pi ** 4 * torch.sin(pi * xy[:, 0:1]) * torch.sin(pi * xy[:, 1:2])
        u_b = net(xy_b)
        return ((bilaplacian - q) ** 2).mean() / pi ** 8 + (u_b ** 2).mean() \
            + (laplacian(u_b, xy_b) ** 2).mean() / pi ** 4

    losses = []
    optimizer = optim.Adam(net.parameters(), lr=1e-3)
    for step in range(adam_steps):
        optimizer.zero_grad()
        loss = pde_loss()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    optimizer = optim.LBFGS(net.parameters(), lr=1.0, max_iter=lbfgs_iter, tolerance_grad=1e-12,
                            tolerance_change=1e-15, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = pde_loss()
        loss.backward()
        losses.append(loss.item())
        return loss

    optimizer.step(closure)
    # the fourth mixed derivative u_xxyy at a point, by repeated grads, against torch.func's nested jacobians
    p = torch.tensor([[0.3, 0.6]], dtype=torch.float64, requires_grad=True)
    u_x = derivative(net(p), p, 1)[:, 0:1]
    u_xx = torch.autograd.grad(u_x, p, torch.ones_like(u_x), create_graph=True)[0][:, 0:1]
    u_xxy = torch.autograd.grad(u_xx, p, torch.ones_like(u_xx), create_graph=True)[0][:, 1:2]
    u_xxyy = torch.autograd.grad(u_xxy, p, torch.ones_like(u_xxy), create_graph=True)[0][:, 1:2]
    scalar = lambda q: net(q.unsqueeze(0)).squeeze()
    fourth = torch.func.jacfwd(torch.func.jacrev(torch.func.hessian(scalar)))(p[0].detach())
    return {"losses": losses, "u_xxyy": u_xxyy, "fourth": fourth,
            "params": [q.detach() for q in net.parameters()]}


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")  # (PyTorch's torch.func, inside)
def test_biharmonic_pinn():
    weights = weights_of(make_plate_net)
    ours, _ = run_both(biharmonic_pinn, weights, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["fourth"][0, 0, 1, 1], ours["u_xxyy"][0, 0], rtol=1e-10)
    fourth = ours["fourth"]  # symmetric in its four indices
    np.testing.assert_allclose(fourth, fourth.transpose(1, 0, 2, 3), atol=1e-10)
    np.testing.assert_allclose(fourth, fourth.transpose(2, 3, 0, 1), atol=1e-10)
    assert min(ours["losses"]) < ours["losses"][0]  # (the last is a line search's trial)


def test_fem_implicit_hessian_vector_product_by_finite_differences():
    """Without torch's comparison (its sparse.mm gradient with respect to the values is not differentiable again,
    so its double backward through CGSolve silently drops those terms): the Hessian-vector product of the squared
    solution by double backward through the CG Function (create_graph), against central differences of its
    gradient."""
    torch = OURS.torch
    assemble, cg, dirichlet, CGSolve = make_fem(OURS)
    nodes_np, triangles_np, boundary = fem_mesh(5)
    nodes, triangles = torch.from_numpy(nodes_np), torch.from_numpy(triangles_np)
    free = torch.from_numpy((~boundary).astype(np.float64))
    base = np.random.default_rng(0).uniform(-0.3, 0.3, len(triangles_np))
    v = np.random.default_rng(1).standard_normal(len(triangles_np))

    def gradient(x, create_graph=False):
        log_kappa = torch.tensor(x, requires_grad=True)
        K, load = assemble(nodes, triangles, log_kappa.exp(), 25, sparse=True)
        u = CGSolve.apply(K.values(), free * load, K.indices(), free, 25)
        return log_kappa, torch.autograd.grad((u ** 2).sum(), log_kappa, create_graph=create_graph)[0]

    log_kappa, g = gradient(base, create_graph=True)
    hv, = torch.autograd.grad((g * torch.tensor(v)).sum(), log_kappa)
    eps = 1e-6
    fd = (gradient(base + eps * v)[1] - gradient(base - eps * v)[1]) / (2 * eps)
    np.testing.assert_allclose(hv.numpy(), fd.numpy(), rtol=1e-6, atol=1e-10)


# ----------------------------------------------------------------------------------------------
# PINN training resumed from a checkpoint (torch.save / torch.load of the model's and L-BFGS's state_dicts
# through a BytesIO) for a 1-D Poisson problem with a hard boundary constraint (output transform) and
# residual-based adaptive refinement (the worst residuals by topk join the collocation set)
# ----------------------------------------------------------------------------------------------


def make_poisson_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)).double()


def pinn_checkpoint(m, weights, resume, rounds=2, iters=4):
    import io
    torch, optim = m.torch, m.optim
    net = load(m, make_poisson_net(m), weights)

    def u(x):  # u(0) = u(1) = 0 built in (DeepXDE's output transform)
        return x * (1 - x) * net(x)

    def residual(x):
        x = x.requires_grad_(True) if not x.requires_grad else x
        ux = u(x)
        u_x = torch.autograd.grad(ux, x, torch.ones_like(ux), create_graph=True)[0]
        u_xx = torch.autograd.grad(u_x, x, torch.ones_like(u_x), create_graph=True)[0]
        return u_xx + math.pi ** 2 * torch.sin(math.pi * x)  # u = sin(pi x)

    x = torch.linspace(0, 1, 12, dtype=torch.float64).view(-1, 1)
    candidates = torch.linspace(0, 1, 101, dtype=torch.float64).view(-1, 1)
    optimizer = optim.LBFGS(net.parameters(), lr=1, max_iter=iters, history_size=6, line_search_fn="strong_wolfe")
    losses = []

    def closure():
        optimizer.zero_grad()
        loss = (residual(x.clone()) ** 2).mean() / math.pi ** 4
        loss.backward()
        losses.append(loss.item())
        return loss

    for r in range(rounds):
        optimizer.step(closure)
        if resume and r == 0:
            buffer = io.BytesIO()
            torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict()}, buffer)
            buffer.seek(0)
            checkpoint = torch.load(buffer)
            net = load(m, make_poisson_net(m), {k: v.numpy() for k, v in checkpoint["model"].items()})
            optimizer = optim.LBFGS(net.parameters(), lr=1, max_iter=iters, history_size=6,
                                    line_search_fn="strong_wolfe")
            optimizer.load_state_dict(checkpoint["optimizer"])
        # residual-based adaptive refinement: the three worst candidates join the collocation points
        worst = residual(candidates.clone()).detach().abs().squeeze(1).topk(3).indices
        x = torch.cat([x, candidates[worst]]).detach()
    return {"losses": losses, "x": x, "params": [p.detach() for p in net.parameters()],
            "n_iter": optimizer.state_dict()["state"][0]["n_iter"]}


@pytest.mark.parametrize("resume", [False, True])
def test_pinn_resumed_from_a_checkpoint(resume):
    weights = weights_of(make_poisson_net)
    ours, _ = run_both(pinn_checkpoint, weights, resume, rtol=1e-9, atol=1e-11)
    if resume:  # resuming from the checkpoint changes nothing
        straight, _ = run_both(pinn_checkpoint, weights, False, compare=False)
        np.testing.assert_allclose(ours["losses"], straight["losses"], rtol=1e-12)
        for a, b in zip(ours["params"], straight["params"]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert ours["x"].shape == (18, 1) and ours["n_iter"] > 4 and min(ours["losses"]) < ours["losses"][0]
