# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Recent and unusual architectures (see tests/pytorch_programs.py) as their reference implementations write them,
each run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against NumPy and invariants.
Differentiable sorting: NeuralSort's relaxed permutation and soft ranks; Gumbel-Sinkhorn permutation learning."""

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Differentiable sorting: NeuralSort's relaxed permutation, soft ranks; Gumbel-Sinkhorn permutation learning
# ----------------------------------------------------------------------------------------------


def neuralsort_sinkhorn(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def neural_sort(s, tau):
        n = s.size()[1]
        one = torch.ones((n, 1), dtype=s.dtype)
        A_s = torch.abs(s - s.permute(0, 2, 1))
        B = torch.matmul(A_s, torch.matmul(one, torch.transpose(one, 0, 1)))
        scaling = (n + 1 - 2 * (torch.arange(n) + 1)).type(s.dtype)
        C = torch.matmul(s, scaling.unsqueeze(0))
        P_max = (C - B).permute(0, 2, 1)
        sm = torch.nn.Softmax(-1)
        P_hat = sm(P_max / tau)
        return P_hat

    def soft_rank(x, tau):
        diff = x.unsqueeze(-1) - x.unsqueeze(-2)
        return 1 + torch.sigmoid(diff / tau).sum(-1) - 0.5

    def sample_gumbel(shape, eps=1e-20):
        U = torch.rand(shape).float()
        return -torch.log(eps - torch.log(U + eps))

    def log_sinkhorn(log_alpha, n_iter=20):
        for _ in range(n_iter):
            log_alpha = log_alpha - torch.logsumexp(log_alpha, -1, keepdim=True)
            log_alpha = log_alpha - torch.logsumexp(log_alpha, -2, keepdim=True)
        return log_alpha.exp()

    def gumbel_sinkhorn(log_alpha, tau=1.0, n_iter=20, noise=True):
        if noise:
            log_alpha = log_alpha + sample_gumbel(log_alpha.shape)
        return log_sinkhorn(log_alpha / tau, n_iter)

    scores = torch.randn(2, 5, 1, requires_grad=True)
    P = neural_sort(scores, tau=0.1)
    sorted_soft = torch.bmm(P, scores)
    ranks = soft_rank(scores.squeeze(-1), tau=0.05)
    hard_perm = torch.argsort(scores.squeeze(-1), dim=-1, descending=True)
    (sorted_soft.sum() + (ranks * torch.arange(5.)).sum()).backward()

    # learning to unscramble: a network produces log_alpha for a shuffled sequence
    n = 5
    x = torch.rand(8, n)
    perm = torch.stack([torch.randperm(n) for _ in range(8)])
    shuffled = torch.gather(x, 1, perm)
    net = nn.Sequential(nn.Linear(1, 16), nn.ReLU(), nn.Linear(16, n))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    ordered = torch.sort(x, dim=1).values
    losses = []
    for step in range(3):
        log_alpha = net(shuffled.unsqueeze(-1))
        soft_perm = gumbel_sinkhorn(log_alpha, tau=0.5, n_iter=10)
        recon = torch.matmul(soft_perm.transpose(1, 2), shuffled.unsqueeze(-1)).squeeze(-1)
        loss = F.mse_loss(recon, ordered)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    ds = gumbel_sinkhorn(log_alpha.detach(), noise=False, n_iter=50)
    return {"P": P, "sorted": sorted_soft, "ranks": ranks, "hard": hard_perm, "g_scores": scores.grad,
            "losses": losses, "ds": ds, "w": net[2].weight}


def test_neuralsort_and_gumbel_sinkhorn():
    ours, _ = run_both(neuralsort_sinkhorn, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ours["P"].sum(-1), 1.0, rtol=1e-5)
    # at a small temperature the relaxed sort orders descending
    s = ours["sorted"][..., 0]
    assert np.all(np.diff(s, axis=-1) <= 1e-3)
    np.testing.assert_allclose(ours["ds"].sum(-2), 1.0, rtol=1e-4)
    np.testing.assert_allclose(ours["ds"].sum(-1), 1.0, rtol=1e-2)
