# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Optimal-transport programs, run as tests/probe17_ot_common.py says. Transport inside models: DeepJDOT's joint cost
(features and labels) with a plan held fixed; the auction algorithm in tensor ops (``topk``, ``scatter_reduce``),
checked against every permutation; SuperGlue's log-domain OT with a learnt dustbin and mutual matches; W2 by
input-convex networks (Makkuva et al.: the map as ``autograd.grad(create_graph=True)``, weights kept non-negative); a
Sinkhorn layer differentiated implicitly (``once_differentiable``, ``linalg.solve``, ``gradcheck``); Sinkhorn on a
sparse kNN graph by a segment logsumexp (``scatter_reduce`` amax, ``scatter_add``)."""

import itertools
import math

import numpy as np

from .probe17_ot_common import clouds, sqdist_np
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# DeepJDOT (Damodaran et al.): a joint feature/label cost, the plan fixed, then the network trained through it
# ----------------------------------------------------------------------------------------------


def jdot_nets(m):
    nn = m.nn
    return nn.ModuleDict({"g": nn.Sequential(nn.Linear(4, 12), nn.ReLU(), nn.Linear(12, 6)),
                          "f": nn.Linear(6, 3)})


jdot_weights = weights_of(jdot_nets, seed=3)


def deepjdot(m, alpha=0.01, lambda_t=1.0, steps=4, reg=0.1):
    torch, F = m.torch, m.F
    nets = load(m, jdot_nets(m), jdot_weights)
    g, f = nets["g"], nets["f"]
    rng = np.random.default_rng(13)
    ys_np = rng.integers(0, 3, 16)
    xs = torch.tensor(rng.standard_normal((16, 4)) + ys_np[:, None], dtype=torch.float32)
    xt = torch.tensor(rng.standard_normal((12, 4)) + rng.integers(0, 3, 12)[:, None] + 0.5, dtype=torch.float32)
    ys = torch.tensor(ys_np)
    optimizer = m.optim.Adam(nets.parameters(), lr=1e-2)
    a = torch.ones(16) / 16
    b = torch.ones(12) / 12
    plans, losses = [], []
    for step in range(steps):
        gs, gt = g(xs), g(xt)
        ys_pred, yt_pred = f(gs), f(gt)
        ys_onehot = F.one_hot(ys, 3).float()
        # the label cost: cross-entropy of every source label against every target prediction
        log_pt = F.log_softmax(yt_pred, dim=1)
        label_cost = -torch.mm(ys_onehot, log_pt.t())
        feature_cost = torch.cdist(gs, gt, p=2).pow(2)
        C = alpha * feature_cost + lambda_t * label_cost
        with torch.no_grad():
            K = torch.exp(-C / (reg * C.max()))
            u = torch.ones_like(a)
            for _ in range(50):
                v = b / (K.t() @ u)
                u = a / (K @ v)
            gamma = u[:, None] * K * v[None, :]
        loss = F.cross_entropy(ys_pred, ys) + torch.sum(gamma * C)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        plans.append(gamma)
        losses.append(loss.item())
    return {"plans": plans, "losses": losses, "state": dict(nets.state_dict())}


def test_deepjdot():
    ours, _ = run_both(deepjdot, rtol=1e-4, atol=1e-6)
    for gamma in ours["plans"]:
        np.testing.assert_allclose(gamma.sum(1), np.ones(16) / 16, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# The auction algorithm (Bertsekas) for the assignment problem, in tensor ops
# ----------------------------------------------------------------------------------------------


def auction(m, n=6, eps=1e-3):
    torch = m.torch
    rng = np.random.default_rng(14)
    benefits = torch.tensor(rng.random((n, n)))
    prices = torch.zeros(n, dtype=torch.float64)
    owner = torch.full((n,), -1, dtype=torch.long)  # which person holds each object
    assigned = torch.full((n,), -1, dtype=torch.long)  # which object each person holds
    rounds = 0
    while (assigned == -1).any():
        rounds += 1
        unassigned = torch.nonzero(assigned == -1, as_tuple=True)[0]
        values = benefits[unassigned] - prices[None, :]
        top2, top_idx = values.topk(2, dim=1)
        best_obj = top_idx[:, 0]
        bids = top2[:, 0] - top2[:, 1] + eps
        # every object takes its highest bid
        bid_matrix = torch.zeros(unassigned.numel(), n, dtype=torch.float64)
        bid_matrix[torch.arange(unassigned.numel()), best_obj] = bids
        highest = torch.zeros(n, dtype=torch.float64).scatter_reduce(0, best_obj, bids, reduce="amax",
                                                                    include_self=False)
        has_bid = torch.zeros(n, dtype=torch.bool).index_fill_(0, best_obj, True)
        winner_row = torch.argmax(bid_matrix, dim=0)
        for obj in torch.nonzero(has_bid).flatten().tolist():
            person = unassigned[winner_row[obj]].item()
            if owner[obj] >= 0:
                assigned[owner[obj]] = -1
            owner[obj] = person
            assigned[person] = obj
        prices = prices + torch.where(has_bid, highest, torch.zeros_like(highest))
    total = benefits.gather(1, assigned[:, None]).sum()
    return {"assigned": assigned, "prices": prices, "total": total, "rounds": rounds}


def test_auction_assignment():
    ours, _ = run_both(auction, rtol=1e-12, atol=1e-12)
    benefits = np.random.default_rng(14).random((6, 6))
    best = max(sum(benefits[i, p[i]] for i in range(6)) for p in itertools.permutations(range(6)))
    assert ours["total"] >= best - 6 * 1e-3  # optimal within n * eps
    assert sorted(ours["assigned"].tolist()) == list(range(6))


# ----------------------------------------------------------------------------------------------
# SuperGlue (Sarlin et al.): log-domain optimal transport with a learnt dustbin score, mutual matches
# ----------------------------------------------------------------------------------------------


def superglue_matching(m, iters=20, steps=3, match_threshold=0.2):
    torch, nn = m.torch, m.nn
    rng = np.random.default_rng(16)
    desc0 = torch.tensor(rng.standard_normal((2, 8, 6)), dtype=torch.float32)
    perm = rng.permutation(6)
    d1 = np.concatenate([desc0.numpy()[:, :, perm[:4]] + 0.1 * rng.standard_normal((2, 8, 4)),
                         rng.standard_normal((2, 8, 2))], 2)
    desc1 = torch.tensor(d1, dtype=torch.float32)
    gt = torch.tensor(perm[:4])  # desc1's first four keypoints are desc0's perm[:4]; the rest unmatched
    bin_score = nn.Parameter(torch.tensor(1.0))
    proj = nn.Conv1d(8, 8, kernel_size=1, bias=True)
    load(m, proj, superglue_weights)

    def log_sinkhorn_iterations(Z, log_mu, log_nu, iters: int):
        u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
        for _ in range(iters):
            u = log_mu - torch.logsumexp(Z + v.unsqueeze(1), dim=2)
            v = log_nu - torch.logsumexp(Z + u.unsqueeze(2), dim=1)
        return Z + u.unsqueeze(2) + v.unsqueeze(1)

    def log_optimal_transport(scores, alpha, iters: int):
        b, m, n = scores.shape
        one = scores.new_tensor(1)
        ms, ns = (m * one).to(scores), (n * one).to(scores)
        bins0 = alpha.expand(b, m, 1)
        bins1 = alpha.expand(b, 1, n)
        alpha = alpha.expand(b, 1, 1)
        couplings = torch.cat([torch.cat([scores, bins0], -1), torch.cat([bins1, alpha], -1)], 1)
        norm = -(ms + ns).log()
        log_mu = torch.cat([norm.expand(m), ns.log()[None] + norm])
        log_nu = torch.cat([norm.expand(n), ms.log()[None] + norm])
        log_mu, log_nu = log_mu[None].expand(b, -1), log_nu[None].expand(b, -1)
        Z = log_sinkhorn_iterations(couplings, log_mu, log_nu, iters)
        Z = Z - norm
        return Z

    def arange_like(x, dim: int):
        return x.new_ones(x.shape[dim]).cumsum(0) - 1

    optimizer = m.optim.Adam(list(proj.parameters()) + [bin_score], lr=0.05)
    losses = []
    for step in range(steps):
        mdesc0, mdesc1 = proj(desc0), proj(desc1)
        scores = torch.einsum("bdn,bdm->bnm", mdesc0, mdesc1)
        scores = scores / 8 ** 0.5
        scores = log_optimal_transport(scores, bin_score, iters=iters)
        # the negative log-likelihood of the true matches, and of the unmatched going to the dustbins
        matched = -scores[:, gt, torch.arange(4)].mean()
        unmatched0 = -scores[:, [i for i in range(6) if i not in perm[:4].tolist()], -1].mean()
        unmatched1 = -scores[:, -1, 4:6].mean()
        loss = matched + unmatched0 + unmatched1
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    with torch.no_grad():
        scores = log_optimal_transport(torch.einsum("bdn,bdm->bnm", proj(desc0), proj(desc1)) / 8 ** 0.5,
                                       bin_score, iters=iters)
    max0, max1 = scores[:, :-1, :-1].max(2), scores[:, :-1, :-1].max(1)
    indices0, indices1 = max0.indices, max1.indices
    mutual0 = arange_like(indices0, 1)[None] == indices1.gather(1, indices0)
    mutual1 = arange_like(indices1, 1)[None] == indices0.gather(1, indices1)
    zero = scores.new_tensor(0)
    mscores0 = torch.where(mutual0, max0.values.exp(), zero)
    mscores1 = torch.where(mutual1, mscores0.gather(1, indices1), zero)
    valid0 = mutual0 & (mscores0 > match_threshold)
    valid1 = mutual1 & valid0.gather(1, indices1)
    indices0 = torch.where(valid0, indices0, indices0.new_tensor(-1))
    indices1 = torch.where(valid1, indices1, indices1.new_tensor(-1))
    return {"losses": losses, "bin_score": bin_score, "scores": scores, "matches0": indices0,
            "matches1": indices1, "matching_scores0": mscores0, "matching_scores1": mscores1}


superglue_weights = weights_of(lambda m: m.nn.Conv1d(8, 8, kernel_size=1, bias=True), seed=16)


def test_superglue_log_optimal_transport():
    ours, _ = run_both(superglue_matching, rtol=1e-4, atol=1e-5)
    P = np.exp(ours["scores"])  # the coupling times (M + N): its rows sum to 1 but the dustbin's, to N
    np.testing.assert_allclose(P.sum(2)[:, :-1], np.ones((2, 6)), rtol=2e-3)  # the last update fits columns
    np.testing.assert_allclose(P.sum(1)[:, :-1], np.ones((2, 6)), rtol=1e-4)
    assert ours["matches0"].dtype == np.int64
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# W2 by input-convex networks (Makkuva et al.): the transport map as the gradient of a convex potential
# ----------------------------------------------------------------------------------------------


def icnn_nets(m, input_dim=2, hidden_dim=16):
    nn, F = m.nn, m.F

    class ICNN_LastInp_Quadratic(nn.Module):
        def __init__(self, input_dim, hidden_dim):
            super().__init__()
            self.fc1_normal = nn.Linear(input_dim, hidden_dim, bias=True)
            self.fc2_normal = nn.Linear(input_dim, hidden_dim, bias=True)
            self.fc2_convex = nn.Linear(hidden_dim, hidden_dim, bias=False)
            self.last_convex = nn.Linear(hidden_dim, 1, bias=False)
            self.last_linear = nn.Linear(input_dim, 1, bias=False)

        def forward(self, input):
            x = F.leaky_relu(self.fc1_normal(input), negative_slope=0.2).pow(2)
            x = F.leaky_relu(self.fc2_convex(x).add(self.fc2_normal(input)), negative_slope=0.2)
            x = self.last_convex(x).add(self.last_linear(input).pow(2))
            return x

        def convexify(self):
            for layer in [self.fc2_convex, self.last_convex]:
                layer.weight.data.copy_(m.torch.relu(layer.weight.data))

    return nn.ModuleDict({"f": ICNN_LastInp_Quadratic(input_dim, hidden_dim),
                          "g": ICNN_LastInp_Quadratic(input_dim, hidden_dim)})


icnn_weights = weights_of(icnn_nets, seed=17)


def icnn_w2(m, steps=3, g_iters=2, lambda_cvx=0.5):
    torch = m.torch
    nets = load(m, icnn_nets(m), icnn_weights)
    convex_f, convex_g = nets["f"], nets["g"]
    x_np, y_np, _, _ = clouds(n=12, m=12, seed=18)
    real_data = torch.tensor(x_np, dtype=torch.float32)
    optimizer_f = m.optim.Adam(convex_f.parameters(), lr=1e-3, betas=(0.5, 0.99))
    optimizer_g = m.optim.Adam(convex_g.parameters(), lr=1e-3, betas=(0.5, 0.99))
    convex_f.convexify()
    log = []
    for step in range(steps):
        for _ in range(g_iters):
            y = torch.tensor(y_np, dtype=torch.float32, requires_grad=True)
            optimizer_g.zero_grad()
            g_of_y = convex_g(y).sum()
            grad_g_of_y = torch.autograd.grad(g_of_y, y, create_graph=True)[0]
            f_grad_g_y = convex_f(grad_g_of_y).mean()
            loss_g = f_grad_g_y - torch.dot(grad_g_of_y.reshape(-1), y.reshape(-1)) / y.size(0)
            # the convexity penalty on g's weights (negative parts, squared)
            g_positive_constraint_loss = lambda_cvx * sum(torch.relu(-p).pow(2).sum()
                                                          for n, p in convex_g.named_parameters() if "convex" in n)
            (loss_g + g_positive_constraint_loss).backward()
            optimizer_g.step()
        optimizer_f.zero_grad()
        loss_f = convex_f(real_data).mean() - f_grad_g_y.item() * 0 - convex_f(grad_g_of_y.detach()).mean()
        loss_f.backward()
        optimizer_f.step()
        convex_f.convexify()
        w2 = (0.5 * (real_data ** 2).sum(1).mean() + 0.5 * (y.detach() ** 2).sum(1).mean() - loss_g.detach()
              - convex_f(real_data).mean().detach())
        log.append((loss_g.item(), loss_f.item(), w2.item()))
    return {"log": log, "state": dict(nets.state_dict()), "map": grad_g_of_y}


def test_icnn_w2():
    ours, _ = run_both(icnn_w2, rtol=1e-4, atol=1e-6)
    assert (ours["state"]["f.fc2_convex.weight"] >= 0).all() and (ours["state"]["f.last_convex.weight"] >= 0).all()


# ----------------------------------------------------------------------------------------------
# A Sinkhorn layer differentiated implicitly (a custom Function whose backward solves the KKT system),
# checked by gradcheck and against the unrolled iterations
# ----------------------------------------------------------------------------------------------


def implicit_sinkhorn(m, eps=0.5, iters=300):
    torch = m.torch
    from_numpy = torch.from_numpy

    def log_sinkhorn(C, a, b, eps, iters):
        f = torch.zeros_like(a)
        g = torch.zeros_like(b)
        for _ in range(iters):
            f = eps * torch.log(a) - eps * torch.logsumexp((g[None, :] - C) / eps, dim=1)
            g = eps * torch.log(b) - eps * torch.logsumexp((f[:, None] - C) / eps, dim=0)
        return torch.exp((f[:, None] + g[None, :] - C) / eps)

    class SinkhornImplicit(torch.autograd.Function):
        @staticmethod
        def forward(ctx, C, a, b, eps):
            with torch.no_grad():
                P = log_sinkhorn(C, a, b, eps, iters)
            ctx.eps = eps
            ctx.save_for_backward(P, a, b)
            return P

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad_P):
            P, a, b = ctx.saved_tensors
            n, k = P.shape
            GP = grad_P * P
            # the marginal constraints' Jacobian, the last column's constraint dropped (it is implied)
            H = torch.cat([torch.cat([torch.diag(a), P[:, :-1]], 1),
                           torch.cat([P[:, :-1].T, torch.diag(b[:-1])], 1)], 0)
            rhs = torch.cat([GP.sum(1), GP.sum(0)[:-1]])
            xy = torch.linalg.solve(H, rhs)
            x, y = xy[:n], torch.cat([xy[n:], xy.new_zeros(1)])
            grad_C = (P * (x[:, None] + y[None, :]) - GP) / ctx.eps
            return grad_C if ctx.needs_input_grad[0] else None, None, None, None

    rng = np.random.default_rng(23)
    C = from_numpy(rng.random((5, 4))).requires_grad_()
    a = from_numpy(rng.random(5) + 0.5)
    a = a / a.sum()
    b = from_numpy(np.full(4, 0.25))
    target = from_numpy(rng.random((5, 4)))
    P = SinkhornImplicit.apply(C, a, b, eps)
    loss = ((P - target / 20) ** 2).sum()
    (g_implicit,) = torch.autograd.grad(loss, C)
    P_unrolled = log_sinkhorn(C, a, b, eps, iters)
    (g_unrolled,) = torch.autograd.grad(((P_unrolled - target / 20) ** 2).sum(), C)
    ok = torch.autograd.gradcheck(lambda C: SinkhornImplicit.apply(C, a, b, eps), (C,), eps=1e-6, atol=1e-6)
    return {"P": P, "g_implicit": g_implicit, "g_unrolled": g_unrolled, "gradcheck": ok,
            "grad_fn": type(P.grad_fn).__name__}


def test_implicit_sinkhorn_layer():
    ours, _ = run_both(implicit_sinkhorn, rtol=1e-8, atol=1e-11)
    np.testing.assert_allclose(ours["g_implicit"], ours["g_unrolled"], rtol=1e-7, atol=1e-10)
    assert ours["gradcheck"] is True
    assert ours["grad_fn"] == "SinkhornImplicitBackward"


# ----------------------------------------------------------------------------------------------
# Sinkhorn on a sparse k-nearest-neighbour graph: the softmin over each point's edges by a segment logsumexp
# (scatter_reduce's amax for the shift, scatter_add for the sum), the costs' gradient through both
# ----------------------------------------------------------------------------------------------


def sparse_knn_sinkhorn(m, k=4, eps=0.2, iters=40):
    torch = m.torch
    x, y, a, b = (torch.tensor(v) for v in clouds(n=9, m=8, seed=25))
    y.requires_grad_(True)
    n, mm = x.shape[0], y.shape[0]
    with torch.no_grad():
        knn = torch.cdist(x, y).topk(k, dim=1, largest=False).indices  # each source's k nearest targets
        back = torch.cdist(y, x).topk(2, dim=1, largest=False).indices  # and each target's 2 nearest sources
    rows = torch.cat([torch.arange(n).repeat_interleave(k), back.flatten()])
    cols = torch.cat([knn.flatten(), torch.arange(mm).repeat_interleave(2)])
    edges = torch.unique(rows * mm + cols)  # (an edge found from both sides counted once)
    rows, cols = edges // mm, edges % mm
    C = ((x[rows] - y[cols]) ** 2).sum(-1)

    def segment_logsumexp(src, index, size):
        shift = torch.full((size,), -math.inf, dtype=src.dtype).scatter_reduce(0, index, src, reduce="amax",
                                                                               include_self=True)
        total = torch.zeros(size, dtype=src.dtype).scatter_add(0, index, torch.exp(src - shift[index]))
        return torch.log(total) + shift

    f = torch.zeros(n, dtype=C.dtype)
    g = torch.zeros(mm, dtype=C.dtype)
    for _ in range(iters):
        f = eps * torch.log(a) - eps * segment_logsumexp((g[cols] - C) / eps, rows, n)
        g = eps * torch.log(b) - eps * segment_logsumexp((f[rows] - C) / eps, cols, mm)
    P = torch.exp((f[rows] + g[cols] - C) / eps)
    cost = (P * C).sum()
    (gy,) = torch.autograd.grad(cost, y)
    dense = torch.zeros(n, mm, dtype=C.dtype).index_put((rows, cols), P.detach())
    return {"edges": edges, "P": dense, "cost": cost, "gy": gy}


def test_sparse_knn_sinkhorn():
    ours, _ = run_both(sparse_knn_sinkhorn, rtol=1e-8, atol=1e-11)
    x, y, a, b = clouds(n=9, m=8, seed=25)
    P = ours["P"]
    np.testing.assert_allclose(P.sum(0), b, rtol=1e-10)  # the last update fits the targets exactly
    np.testing.assert_allclose(P.sum(1), a, rtol=1e-2)
    support = P > 0
    assert support.sum() == len(ours["edges"]) and support.sum(1).min() >= 4
    # on its support the plan is a Gibbs kernel: log P + C / eps is a sum f_i + g_j
    C = sqdist_np(x, y)
    L = np.where(support, np.log(np.where(support, P, 1.0)) + C / 0.2, 0.0)
    i, j = np.nonzero(support)
    A = np.zeros((len(i), 9 + 8))
    A[np.arange(len(i)), i] = 1
    A[np.arange(len(i)), 9 + j] = 1
    fg = np.linalg.lstsq(A, L[i, j], rcond=None)[0]
    np.testing.assert_allclose(A @ fg, L[i, j], atol=1e-8)
