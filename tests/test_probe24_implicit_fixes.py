"""What the implicit and bilevel programs found (tests/test_programs_probe24_implicit_*.py):

- ``torch.norm_except_dim`` and ``torch._weight_norm`` were missing (the DEQ and MDEQ repositories' own weight
  norms call them); nn's two weight norms now share them, and their node is PyTorch's
  WeightNormInterfaceBackward0 only where PyTorch's fused kernel serves (dim the first or the last axis).
- ``backward(create_graph=True)`` gave no warning; PyTorch warns, once a process, of the reference cycle between a
  parameter and a gradient that has a graph (MAML-style code that calls backward with create_graph sees it).
- ``register_hook`` on a tensor without grad: PyTorch's words ("... that doesn't require gradient").
- A Number argument (``alpha`` of add/sub, ``value`` of addcmul/addcdiv, their in-place forms, ``beta`` and ``alpha``
  of the addmm family) took a tensor that requires grad and recorded a gradient through it; PyTorch refuses it
  (TypeError "argument 'alpha' must be Number, not Tensor"), as it refuses a tensor with dims there. A
  hand-written unrolled step ``p.add(g, alpha=-lr)`` with a learnt lr got a hypergradient from us and an error
  from PyTorch. SGD's ``differentiable=True`` step with a
  learnt lr is PyTorch's ``addcmul_(grad, lr, value=-1)``.

Checked against NumPy always and against PyTorch where installed."""

import warnings

import numpy as np
import pytest

import autograd
import nn
import optim  # noqa: F401  (registers autograd.optim, which the SGD program reaches as torch.optim)


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


NUMBER_CALLS = [
    ("add", "alpha", lambda t, n: t.add(t, alpha=n)),
    ("add", "alpha", lambda t, n: t.add(1.0, alpha=n)),
    ("sub", "alpha", lambda t, n: t.sub(t, alpha=n)),
    ("addcmul", "value", lambda t, n: t.addcmul(t, t, value=n)),
    ("addcdiv", "value", lambda t, n: t.addcdiv(t, t, value=n)),
    ("add_", "alpha", lambda t, n: t.clone().add_(t, alpha=n)),
    ("sub_", "alpha", lambda t, n: t.clone().sub_(t, alpha=n)),
    ("addcmul_", "value", lambda t, n: t.clone().addcmul_(t, t, value=n)),
    ("addcdiv_", "value", lambda t, n: t.clone().addcdiv_(t, t, value=n)),
    ("addmv", "beta", lambda t, n: t.addmv(t.outer(t), t, beta=n)),
    ("addmm", "alpha", lambda t, n: t.outer(t).addmm(t.outer(t), t.outer(t), alpha=n)),
    ("addr", "alpha", lambda t, n: t.outer(t).addr(t, t, alpha=n)),
    ("baddbmm", "beta", lambda t, n: t.outer(t)[None].baddbmm(t.outer(t)[None], t.outer(t)[None], beta=n)),
    ("addbmm", "alpha", lambda t, n: t.outer(t).addbmm(t.outer(t)[None], t.outer(t)[None], alpha=n)),
]


@pytest.mark.parametrize("op,name,call", NUMBER_CALLS)
def test_number_arguments_refuse_tensors_that_require_grad(op, name, call):
    for lib in [autograd] + ([] if _torch_or_none() is None else [_torch_or_none()]):
        t = lib.tensor([1.0, 2.0])
        with pytest.raises(TypeError, match=rf"{op}\(\): argument '{name}' must be Number, not Tensor"):
            call(t, lib.tensor(0.5, requires_grad=True))
        with pytest.raises(TypeError, match=f"argument '{name}' must be Number, not Tensor"):
            call(t, lib.tensor([0.5]))  # (one element, but a dim)
        # a 0-d tensor outside the graph is its number
        np.testing.assert_allclose(np.asarray(call(t, lib.tensor(0.5)).numpy()), np.asarray(call(t, 0.5).numpy()))


def _torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _sgd_with_learnt_lr(lib, momentum):
    lib.manual_seed(0)
    X, y = lib.randn(10, 3, dtype=lib.float64), lib.randn(10, dtype=lib.float64)
    lr = lib.tensor(0.1, dtype=lib.float64, requires_grad=True)
    w = lib.zeros(3, dtype=lib.float64, requires_grad=True).clone()
    opt = lib.optim.SGD([w], lr=lr, momentum=momentum, differentiable=True)
    for _ in range(3):
        g, = lib.autograd.grad(((X @ w - y) ** 2).mean(), w, create_graph=True)
        w.grad = g
        opt.step()
    ((X @ w - 1) ** 2).mean().backward()
    return lr.grad.item(), X.numpy(), y.numpy()


def test_sgd_differentiable_step_with_a_learnt_lr():
    grad, X, y = _sgd_with_learnt_lr(autograd, 0)

    def validation_loss(lr):  # three plain SGD steps by hand
        w = np.zeros(3)
        for _ in range(3):
            w = w - lr * 2 * X.T @ (X @ w - y) / len(y)
        return ((X @ w - 1) ** 2).mean()
    np.testing.assert_allclose(grad, (validation_loss(0.1 + 1e-6) - validation_loss(0.1 - 1e-6)) / 2e-6, rtol=1e-6)
    torch = _torch_or_none()
    if torch is not None:
        assert grad == pytest.approx(_sgd_with_learnt_lr(torch, 0)[0], rel=1e-12)


@pytest.mark.parametrize("register", ["register_hook", "register_post_accumulate_grad_hook"])
def test_a_hook_on_a_tensor_without_grad_is_refused_in_pytorchs_words(register):
    """A DEQ registers its backward hook on the fixed point only where it requires grad (not under no_grad in
    eval): programs match PyTorch's message."""
    for lib in [autograd] + ([] if _torch_or_none() is None else [_torch_or_none()]):
        with pytest.raises(RuntimeError, match="^cannot register a hook on a tensor that doesn't require gradient$"):
            getattr(lib.ones(2), register)(lambda g: g)
