"""Fixes found by the probe23 statistics programs, each checked against literals or NumPy (and PyTorch where
installed)."""

import math

import numpy as np
import pytest

import autograd

from .pytorch_programs import pytorch


def both(program):
    """program(torch) on chainrule, and on PyTorch where installed: (ours, theirs or None)."""
    ours = program(autograd)
    modules = pytorch()
    return ours, (None if modules is None else program(modules.torch))


# ----------------------------------------------------------------------------------------------
# A pass walks through a node whose graph was freed; only running its backward raises
# ----------------------------------------------------------------------------------------------


def grads_past_a_freed_graph(torch):
    """A copula's scores: u's graph (through rho) is freed by the first grad; the second asks only about theta,
    which does not lie below u's nodes, so PyTorch never runs them (it keeps their edges)."""
    rho = torch.tensor([0.2, 0.7], dtype=torch.float64, requires_grad=True)
    theta = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    u = torch.special.ndtr(rho * 2.0).exp()
    g_rho, = torch.autograd.grad(u.sum(), rho)  # frees u's graph
    g_theta, = torch.autograd.grad((u * theta ** 2).sum(), theta)
    (u * theta).sum().backward(inputs=[theta])
    try:
        torch.autograd.grad((u * theta).sum(), (rho, theta))
        refused = None
    except RuntimeError as error:
        refused = str(error)
    return g_rho.numpy(), g_theta.item(), theta.grad.item(), refused


def test_a_pass_walks_past_a_freed_graph_to_the_inputs_it_wants():
    ours, theirs = both(grads_past_a_freed_graph)
    rho = np.array([0.2, 0.7])
    ndtr = 0.5 * (1 + np.vectorize(math.erf)(2 * rho / math.sqrt(2)))
    u = np.exp(ndtr)
    np.testing.assert_allclose(ours[0], u * 2 * np.exp(-2 * rho ** 2) / math.sqrt(2 * math.pi), rtol=1e-12)
    assert ours[1] == pytest.approx(2 * 1.5 * u.sum(), rel=1e-12)
    assert ours[2] == pytest.approx(u.sum(), rel=1e-12)
    assert ours[3] is not None and "backward through the graph a second time" in ours[3]  # rho lies below
    if theirs is not None:
        np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12)
        assert ours[1:3] == pytest.approx(theirs[1:3], rel=1e-12)
        assert theirs[3] is not None and "backward through the graph a second time" in theirs[3]


def test_a_freed_graph_still_has_its_edges_for_a_later_walk():
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    y = (x * 3.0).exp()
    z = y.sum()
    z.backward()
    order = autograd.topological_order([z.grad_fn])  # walks the freed Exp and Mul nodes
    assert order[0] is z.grad_fn and x in order and len(order) == 4
