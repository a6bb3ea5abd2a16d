"""What the implicit and bilevel programs found (tests/test_programs_probe24_implicit.py):

- ``torch.norm_except_dim`` and ``torch._weight_norm`` were missing (the DEQ and MDEQ repositories' own weight
  norms call them); nn's two weight norms now share them, and their node is PyTorch's
  WeightNormInterfaceBackward0 only where PyTorch's fused kernel serves (dim the first or the last axis).
- ``backward(create_graph=True)`` gave no warning; PyTorch warns, once a process, of the reference cycle between a
  parameter and a gradient that has a graph (MAML-style code that calls backward with create_graph sees it).

Checked against NumPy always and against PyTorch where installed."""

import warnings

import numpy as np
import pytest

import autograd
import nn


def _torch():
    return pytest.importorskip("torch")


V = np.random.default_rng(0).standard_normal((4, 3, 2))


def _norm_except(v, dim):
    axes = tuple(a for a in range(v.ndim) if a != dim % v.ndim)
    return np.sqrt((v * v).sum(axis=axes, keepdims=True))


@pytest.mark.parametrize("dim", [0, 1, 2, -2])
def test_norm_except_dim_against_numpy(dim):
    got = autograd.norm_except_dim(autograd.tensor(V), 2, dim)
    np.testing.assert_allclose(got.numpy(), _norm_except(V, dim), rtol=1e-14)
    assert got.shape == _norm_except(V, dim).shape


def test_norm_except_dim_minus_one_is_the_whole_norm_and_p_is_honoured():
    np.testing.assert_allclose(autograd.norm_except_dim(autograd.tensor(V), 2, -1).numpy(), np.linalg.norm(V))
    assert autograd.norm_except_dim(autograd.tensor(V), 2, -1).shape == ()
    np.testing.assert_allclose(autograd.norm_except_dim(autograd.tensor(V), 1, 0).numpy(),
                               np.abs(V).sum(axis=(1, 2), keepdims=True), rtol=1e-14)
    np.testing.assert_allclose(autograd.norm_except_dim(autograd.tensor([3.0, -4.0])).numpy(), [3.0, 4.0])


@pytest.mark.parametrize("dim,node", [(0, "WeightNormInterfaceBackward0"), (2, "WeightNormInterfaceBackward0"),
                                      (1, "MulBackward0"), (-1, "MulBackward0")])
def test_weight_norm_function_values_gradients_and_node(dim, node):
    g_shape = () if dim == -1 else tuple(V.shape[a] if a == dim else 1 for a in range(3))
    g0 = np.linspace(0.5, 2.0, int(np.prod(g_shape))).reshape(g_shape)
    v = autograd.tensor(V, requires_grad=True)
    g = autograd.tensor(g0, requires_grad=True)
    w = autograd._weight_norm(v, g, dim)
    assert w.grad_fn.name() == node
    norm = np.linalg.norm(V) if dim == -1 else _norm_except(V, dim)
    np.testing.assert_allclose(w.detach().numpy(), g0 * V / norm, rtol=1e-14)
    weights = np.cos(np.arange(V.size)).reshape(V.shape)
    (w * autograd.tensor(weights)).sum().backward()
    # dL/dg = Σ (dL/dw · v / ‖v‖) over the normed axes
    axes = tuple(range(3)) if dim == -1 else tuple(a for a in range(3) if a != dim)
    np.testing.assert_allclose(g.grad.numpy(), (weights * V / norm).sum(axis=axes).reshape(g_shape), rtol=1e-12)
    torch = pytest.importorskip("torch")
    tv, tg = torch.tensor(V, requires_grad=True), torch.tensor(g0, requires_grad=True)
    tw = torch._weight_norm(tv, tg, dim)
    assert tw.grad_fn.name() == node
    (tw * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(w.detach().numpy(), tw.detach().numpy(), rtol=1e-14)
    np.testing.assert_allclose(v.grad.numpy(), tv.grad.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g.grad.numpy(), tg.grad.numpy(), rtol=1e-12)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_both_weight_norms_use_norm_except_dim():
    conv = nn.Conv2d(3, 4, 3).double()
    weight = conv.weight.detach().clone()
    old = nn.utils.weight_norm(nn.Conv2d(3, 4, 3).double(), dim=1)
    old.weight_v.data.copy_(weight)
    new = nn.utils.parametrizations.weight_norm(conv, dim=1)
    np.testing.assert_allclose(new.parametrizations.weight.original0.detach().numpy(),
                               _norm_except(weight.numpy(), 1), rtol=1e-14)
    assert old(autograd.ones(1, 3, 5, 5, dtype=autograd.float64)).grad_fn is not None
    assert new.weight.grad_fn.name() == "MulBackward0"  # dim 1 of four: PyTorch's unfused product


def _warnings_of(lib, call):
    lib.set_warn_always(True)  # (the warning is given once a process; always, for the test)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
    finally:
        lib.set_warn_always(False)
    return [str(w.message) for w in caught if "reference cycle" in str(w.message)]


def _backward_with_graph(lib):
    a = lib.tensor([1.0, 2.0], requires_grad=True)
    (a ** 3).sum().backward(create_graph=True)
    assert a.grad.requires_grad
    a.grad = None


def _grad_with_graph(lib):
    a = lib.tensor([1.0, 2.0], requires_grad=True)
    lib.autograd.grad((a ** 3).sum(), a, create_graph=True)


@pytest.mark.parametrize("program,warns", [(_backward_with_graph, True), (_grad_with_graph, False)])
def test_backward_with_create_graph_warns_of_the_reference_cycle(program, warns):
    ours = _warnings_of(autograd, lambda: program(autograd))
    assert bool(ours) == warns
    if warns:
        assert ours[0].startswith("Using backward() with create_graph=True will create a reference cycle")
    torch = pytest.importorskip("torch")
    theirs = _warnings_of(torch, lambda: program(torch))
    assert [m.split(" (Triggered internally")[0] for m in theirs] == ours


def test_the_reference_cycle_warning_is_given_once():
    a = autograd.tensor([1.0, 2.0], requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            (a ** 3).sum().backward(create_graph=True)
    assert sum("reference cycle" in str(w.message) for w in caught) <= 1
