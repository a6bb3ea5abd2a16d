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


# ----------------------------------------------------------------------------------------------
# linalg.solve_triangular answers in A's dtype (B is copied into it), and so do the Gaussian distributions
# ----------------------------------------------------------------------------------------------


def solves_in_mixed_dtypes(torch):
    A = torch.tensor([[2.0, 0.0], [1.0, 4.0]])
    B = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.float64)
    results = {}
    for name, (a, b) in {"f32_f64": (A, B), "f64_f32": (A.double(), B.float()), "f32_i64": (A, B.long())}.items():
        x = torch.linalg.solve_triangular(a, b, upper=False)
        results[name] = (str(x.dtype).replace("torch.", ""), x.double().numpy())
    a, b = A.clone().requires_grad_(), B.clone().requires_grad_()
    torch.linalg.solve_triangular(a, b, upper=False, left=False).sum().backward()
    results["grads"] = (str(a.grad.dtype).replace("torch.", ""), str(b.grad.dtype).replace("torch.", ""))
    D = torch.distributions
    mvn32 = D.MultivariateNormal(torch.zeros(2), torch.tensor([[2.0, 0.5], [0.5, 1.0]]))
    value = torch.tensor([0.3, -0.4], dtype=torch.float64)
    results["mvn32_lp64"] = mvn32.log_prob(value)
    mvn64 = D.MultivariateNormal(torch.zeros(2), torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64))
    results["mvn64_lp32"] = mvn64.log_prob(value.float())
    return results


def test_solve_triangular_answers_in_the_dtype_of_A():
    ours, theirs = both(solves_in_mixed_dtypes)
    expected = np.linalg.solve(np.array([[2.0, 0.0], [1.0, 4.0]]), np.array([[1.0, 2.0], [3.0, 4.0]]))
    assert [ours[k][0] for k in ("f32_f64", "f64_f32", "f32_i64")] == ["float32", "float64", "float32"]
    for k in ("f32_f64", "f64_f32", "f32_i64"):
        np.testing.assert_allclose(ours[k][1], expected, rtol=1e-6)
    assert ours["grads"] == ("float32", "float64")  # each gradient in its input's dtype
    cov = np.array([[2.0, 0.5], [0.5, 1.0]])
    v = np.array([0.3, -0.4])
    lp = -0.5 * (v @ np.linalg.solve(cov, v) + np.log(np.linalg.det(cov)) + 2 * np.log(2 * np.pi))
    assert ours["mvn32_lp64"].dtype == autograd.float32 and ours["mvn64_lp32"].dtype == autograd.float64
    assert ours["mvn32_lp64"].item() == pytest.approx(lp, rel=1e-6)
    assert ours["mvn64_lp32"].item() == pytest.approx(lp, rel=1e-6)
    if theirs is not None:
        for k in ("f32_f64", "f64_f32", "f32_i64"):
            assert ours[k][0] == theirs[k][0]
            np.testing.assert_allclose(ours[k][1], theirs[k][1], rtol=1e-6)
        assert ours["grads"] == theirs["grads"]
        for k in ("mvn32_lp64", "mvn64_lp32"):
            assert str(ours[k].dtype) == str(theirs[k].dtype).replace("torch.", "")
            assert ours[k].item() == pytest.approx(theirs[k].item(), rel=1e-6)


# ----------------------------------------------------------------------------------------------
# Gamma (and Chi2) and HalfCauchy make log_prob's value a tensor of their parameters' dtype, as PyTorch's
# ----------------------------------------------------------------------------------------------


def densities_of_a_wider_value(torch):
    D = torch.distributions
    value = torch.tensor([0.3, 1.6], dtype=torch.float64, requires_grad=True)
    params = torch.tensor([1.4, 1.7])
    results = {}
    for name, dist in {"gamma": D.Gamma(params, params + 1), "chi2": D.Chi2(params + 1),
                       "half_cauchy": D.HalfCauchy(params), "half_normal": D.HalfNormal(params)}.items():
        lp = dist.log_prob(value)
        g, = torch.autograd.grad(lp.sum(), value)
        results[name] = (str(lp.dtype).replace("torch.", ""), lp.detach().double().numpy(),
                         str(g.dtype).replace("torch.", ""))
    results["number"] = D.Gamma(params, params + 1).log_prob(2).detach().double().numpy()
    return results


def test_gamma_and_half_cauchy_take_the_value_in_their_dtype():
    ours, theirs = both(densities_of_a_wider_value)
    lg = np.vectorize(math.lgamma)
    x, a = np.array([0.3, 1.6]), np.array([1.4, 1.7])
    gamma = a * np.log(a + 1) + (a - 1) * np.log(x) - (a + 1) * x - lg(a)
    chi2 = (a + 1) / 2 * np.log(0.5) + ((a + 1) / 2 - 1) * np.log(x) - 0.5 * x - lg((a + 1) / 2)
    half_cauchy = np.log(2 / (np.pi * a * (1 + (x / a) ** 2)))
    half_normal = np.log(2) - 0.5 * np.log(2 * np.pi * a ** 2) - x ** 2 / (2 * a ** 2)
    for name, expected, dtype in (("gamma", gamma, "float32"), ("chi2", chi2, "float32"),
                                  ("half_cauchy", half_cauchy, "float32"), ("half_normal", half_normal, "float64")):
        assert ours[name][0] == dtype and ours[name][2] == "float64"  # the gradient in the value's own dtype
        np.testing.assert_allclose(ours[name][1], expected, rtol=1e-6)
    np.testing.assert_allclose(ours["number"], a * np.log(a + 1) + (a - 1) * np.log(2) - 2 * (a + 1) - lg(a),
                               rtol=1e-6)
    if theirs is not None:
        for name in ("gamma", "chi2", "half_cauchy", "half_normal"):
            assert ours[name][0] == theirs[name][0] and ours[name][2] == theirs[name][2]
            np.testing.assert_allclose(ours[name][1], theirs[name][1], rtol=1e-6)
        np.testing.assert_allclose(ours["number"], theirs["number"], rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# polygamma(n ≥ 2) at ±inf: PyTorch's (-1)ⁿ⁺¹ n! ζ(n+1, x) (NaN at +inf, a signed pole at -inf)
# ----------------------------------------------------------------------------------------------


def test_polygamma_of_order_two_and_more_at_the_infinities():
    x = autograd.tensor([float("inf"), float("-inf"), 1e300, -3.0, 2.5], dtype=autograd.float64)
    got = {n: autograd.polygamma(n, x).numpy() for n in range(5)}
    np.testing.assert_array_equal(got[0][:2], [np.inf, np.nan])
    np.testing.assert_array_equal(got[1][:4], [0.0, np.nan, 1e-300, np.inf])
    for n in (2, 3, 4):
        sign = 1.0 if n % 2 else -1.0
        np.testing.assert_array_equal(got[n][:4], [np.nan, sign * np.inf, 0.0, sign * np.inf])
        # ψ⁽ⁿ⁾(2.5) = (-1)ⁿ⁺¹ n! Σ_k 1/(2.5 + k)ⁿ⁺¹
        series = sign * math.factorial(n) * sum((2.5 + k) ** -(n + 1) for k in range(200000))
        assert got[n][4] == pytest.approx(series, rel=1e-9)
    modules = pytorch()
    if modules is not None:
        torch = modules.torch
        theirs = torch.tensor([float("inf"), float("-inf"), 1e300, -3.0, 2.5], dtype=torch.float64)
        for n in (0, 2, 3, 4):
            np.testing.assert_allclose(got[n], torch.polygamma(n, theirs).numpy(), rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# Uniform's arg_constraints: each bound constrained by the other, as PyTorch's (and its error's words)
# ----------------------------------------------------------------------------------------------


def uniform_constraints(torch):
    D = torch.distributions
    shown = {k: repr(c) for k, c in D.Uniform(torch.tensor(0.0), torch.tensor(2.0)).arg_constraints.items()}
    try:
        D.Uniform(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 1.0]))
        message = None
    except ValueError as error:
        message = str(error)
    checks = D.Uniform(torch.tensor(0.0), torch.tensor(2.0)).arg_constraints["low"].check(torch.tensor([1.0, 3.0]))
    return shown, message, checks.tolist()


def test_uniform_bounds_constrain_each_other():
    ours, theirs = both(uniform_constraints)
    assert ours[0] == {"low": "LessThan(upper_bound=2.0)", "high": "GreaterThan(lower_bound=0.0)"}
    assert "to satisfy the constraint LessThan(upper_bound=tensor([0.5000, 1.0000])), but found" in ours[1]
    assert ours[2] == [True, False]
    if theirs is not None:
        assert ours[0] == theirs[0] and ours[2] == theirs[2]
        assert ours[1].replace("Size(", "torch.Size(") == theirs[1]


# ----------------------------------------------------------------------------------------------
# A distribution's repr shows probs and logits both once the derived one has been used (PyTorch's lazy property)
# ----------------------------------------------------------------------------------------------


def reprs_before_and_after_use(torch):
    D = torch.distributions
    shown = []
    for dist in (D.Categorical(probs=torch.tensor([0.3, 0.7])), D.Bernoulli(logits=torch.tensor([0.3, 0.7])),
                 D.Geometric(logits=torch.tensor([0.3, 0.7]))):
        before = repr(dist)
        dist.entropy()
        shown.append((before, repr(dist)))
    mixture = D.MixtureSameFamily(D.Categorical(torch.tensor([0.4, 0.6])), D.Normal(torch.zeros(2), torch.ones(2)))
    shown.append(repr(mixture))
    shown.append(repr(D.Beta(torch.tensor([2.0, 1.0]), 3.0)))  # its parameters are properties: PyTorch shows none
    return [tuple(s.replace("torch.Size", "Size") for s in pair) if isinstance(pair, tuple)
            else pair.replace("torch.Size", "Size") for pair in shown]


def test_repr_shows_a_derived_parameter_once_it_was_used():
    ours, theirs = both(reprs_before_and_after_use)
    assert ours[0] == ("Categorical(probs: Size([2]))", "Categorical(probs: Size([2]), logits: Size([2]))")
    assert ours[1] == ("Bernoulli(logits: Size([2]))", "Bernoulli(probs: Size([2]), logits: Size([2]))")
    assert ours[2] == ("Geometric(logits: Size([2]))", "Geometric(probs: Size([2]), logits: Size([2]))")
    assert "Categorical(probs: Size([2]), logits: Size([2]))" in ours[3]  # the mixture read its logits
    assert ours[4] == "Beta()"
    if theirs is not None:
        assert ours == theirs
