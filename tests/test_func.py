"""autograd.func (torch.func): grad, grad_and_value, vjp, jacrev, jacfwd, hessian, vmap,
functional_call, stack_module_state; nesting; by hand, by finite differences, and against PyTorch.
Also autograd.autograd's Variable, grad_mode, set_detect_anomaly."""

import importlib
import types

import numpy as np
import pytest

import autograd
import nn
from autograd import func

F64 = autograd.float64


def t(values):
    return autograd.tensor(np.asarray(values, dtype=np.float64))


def f_scalar(x, y):
    return (x.sin() * y).sum() + (x**2).sum() * y[0]


def test_grad_by_hand():
    x, y = t([0.5, -1.0]), t([2.0, 3.0])
    gx = func.grad(f_scalar)(x, y)
    np.testing.assert_allclose(gx.numpy(), np.cos([0.5, -1.0]) * [2, 3] + 2 * np.array([0.5, -1.0]) * 2)
    assert not gx.requires_grad and not x.requires_grad and x.grad is None
    gx2, gy = func.grad(f_scalar, argnums=(0, 1))(x, y)
    np.testing.assert_allclose(gx2.numpy(), gx.numpy())
    np.testing.assert_allclose(gy.numpy(), np.sin([0.5, -1.0]) + [1.25, 0])
    (g, value), = [func.grad_and_value(f_scalar)(x, y)]
    assert value.item() == pytest.approx(f_scalar(x, y).item())
    g, aux = func.grad(lambda x: ((x**2).sum(), x * 3), has_aux=True)(x)
    np.testing.assert_allclose(g.numpy(), [1.0, -2.0])
    np.testing.assert_allclose(aux.numpy(), [1.5, -3.0])
    zero = func.grad(lambda x, y: (y**2).sum())(x, y)  # f does not depend on x: zeros
    np.testing.assert_array_equal(zero.numpy(), [0.0, 0.0])


def test_grad_of_a_dict_of_parameters_through_functional_call():
    model = nn.Linear(3, 2).double()
    params = {k: v.detach() for k, v in model.named_parameters()}
    x = t([[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]])

    def loss(p, x):
        return func.functional_call(model, p, (x,)).pow(2).sum()

    grads = func.grad(loss)(params, x)
    assert set(grads) == {"weight", "bias"} and grads["weight"].shape == (2, 3)
    model(x).pow(2).sum().backward()
    np.testing.assert_allclose(grads["weight"].numpy(), model.weight.grad.numpy(), rtol=1e-12)
    np.testing.assert_allclose(grads["bias"].numpy(), model.bias.grad.numpy(), rtol=1e-12)
    per_sample = func.vmap(func.grad(lambda p, xi: loss(p, xi.unsqueeze(0))), in_dims=(None, 0))(params, x)
    np.testing.assert_allclose(per_sample["weight"].sum(0).numpy(), model.weight.grad.numpy(), rtol=1e-12)
    with pytest.raises(ValueError, match="appeared in multiple dictionaries"):
        func.functional_call(model, ({"weight": params["weight"]}, {"weight": params["weight"]}), (x,))


def test_grad_errors():
    x = t([1.0, 2.0])
    with pytest.raises(RuntimeError, match="Expected f\\(\\*args\\) to return a scalar Tensor, got tensor with 1 dims"):
        func.grad(lambda x: x * 2)(x)
    with pytest.raises(RuntimeError, match="only Tensors of floating point dtype can require gradients"):
        func.grad(lambda x: x.sum())(autograd.tensor([1, 2]))
    with pytest.raises(RuntimeError, match="Got argnums=2, but only 1 positional inputs"):
        func.grad(lambda x: x.sum(), argnums=2)(x)
    with pytest.raises(RuntimeError, match="should be a tuple: \\(output, aux\\)"):
        func.grad(lambda x: x.sum(), has_aux=True)(x)


def test_vjp_and_jacrev_by_hand():
    x = t([1.0, 2.0, 3.0])
    out, vjp_fn = func.vjp(lambda x: x**2, x)
    np.testing.assert_allclose(out.numpy(), [1, 4, 9])
    (g,) = vjp_fn(t([1.0, 0.0, 2.0]))
    np.testing.assert_allclose(g.numpy(), [2.0, 0.0, 12.0])
    (g,) = vjp_fn(t([1.0, 1.0, 1.0]))  # again: the graph is kept
    np.testing.assert_allclose(g.numpy(), [2.0, 4.0, 6.0])
    jacobian = func.jacrev(lambda x: x[:2] * x[1:])(x)
    np.testing.assert_allclose(jacobian.numpy(), [[2, 1, 0], [0, 3, 2]])
    assert func.jacrev(lambda x, y: (x * y).sum(), argnums=(0, 1))(x, x)[1].shape == (3,)
    matrix_jacobian = func.jacrev(lambda m: m @ m)(t(np.eye(2)))
    assert matrix_jacobian.shape == (2, 2, 2, 2)
    np.testing.assert_allclose(func.jacfwd(lambda x: x**2)(x).numpy(), np.diag([2.0, 4.0, 6.0]))


def finite_difference_hessian(f, x, eps=1e-5):
    x = x.numpy()
    n = x.size
    hessian = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            def value(di, dj, i=i, j=j):
                shifted = x.copy().ravel()
                shifted[i] += di
                shifted[j] += dj
                return f(t(shifted.reshape(x.shape))).item()
            hessian[i, j] = (value(eps, eps) - value(eps, -eps) - value(-eps, eps) + value(-eps, -eps)) / (4 * eps**2)
    return hessian


def test_hessian_by_finite_differences():
    def f(x):
        return (x.tanh() * x.roll(1)).sum() + (x**3).prod()

    x = t([0.3, -0.7, 1.1])
    np.testing.assert_allclose(func.hessian(f)(x).numpy(), finite_difference_hessian(f, x), rtol=1e-5, atol=1e-6)


def test_nesting_through_a_closure():
    """d/dx of ∂/∂y (x y²) at y = 1 is 2: the inner grad closes over the outer root x."""
    x, y = t([3.0]), t([1.0])
    outer = func.grad(lambda x: func.grad(lambda y: (x * y**2).sum())(y).sum())(x)
    np.testing.assert_allclose(outer.numpy(), [2.0])
    assert not outer.requires_grad  # the inner level's own root is private to it
    w = autograd.tensor([2.0], requires_grad=True)  # a closed-over tensor that requires grad: kept
    through_w = func.grad(lambda x: ((x * w) ** 2).sum())(t([3.0]))
    assert through_w.requires_grad
    through_w.sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), [4 * 3 * 2.0])  # d/dw of 2 x w² at x = 3, w = 2
    mixed = func.jacrev(lambda x: func.grad(lambda y: (x.sin() * y**2).sum())(t([0.5, 2.0])))(t([0.1, 0.2]))
    np.testing.assert_allclose(mixed.numpy(), np.diag(np.cos([0.1, 0.2]) * 2 * np.array([0.5, 2.0])), rtol=1e-12)


def test_vmap_by_hand():
    xs, w = t(np.arange(6.0).reshape(3, 2)), t([1.0, -1.0])
    np.testing.assert_allclose(func.vmap(lambda x, w: (x * w).sum(), in_dims=(0, None))(xs, w).numpy(), [-1, -1, -1])
    np.testing.assert_allclose(func.vmap(lambda x: x * 2, in_dims=1, out_dims=1)(xs).numpy(), xs.numpy() * 2)
    pair = func.vmap(lambda x: (x.sum(), x * 0), out_dims=(0, 1))(xs)
    assert pair[0].shape == (3,) and pair[1].shape == (2, 3)
    assert func.vmap(func.vmap(lambda a: a * a))(xs).shape == (3, 2)
    with pytest.raises(ValueError, match="Expected all tensors to have the same size in the mapped dimension"):
        func.vmap(lambda a, b: a + b)(xs, t([1.0, 2.0]))
    with pytest.raises(ValueError, match="expected `in_dims` to be int or a"):
        func.vmap(lambda a: a, in_dims=None)(xs)
    autograd.manual_seed(0)
    same = func.vmap(lambda x: autograd.rand(2) + x * 0, randomness="same")(xs)
    np.testing.assert_array_equal(same[0].numpy(), same[2].numpy())
    different = func.vmap(lambda x: autograd.rand(2) + x * 0, randomness="different")(xs)
    assert not np.array_equal(different[0].numpy(), different[1].numpy())
    assert autograd.vmap is func.vmap


def test_linearize_output_stays_in_the_callers_graph():
    """PyTorch's linearize returns func(*primals) itself: a loss on the output trains the weights func closed over
    and reaches primals that require grad. d sum(tanh(W x)) / dW = (1 - tanh(W x)^2) x^T."""
    w_array, x_array = np.array([[0.3, -0.2], [0.5, 0.1]]), np.array([1.5, -0.5])
    w = autograd.tensor(w_array, requires_grad=True)
    x = autograd.tensor(x_array, requires_grad=True)
    output, jvp_fn = func.linearize(lambda v: (w @ v).tanh(), x)
    assert output.requires_grad
    output.sum().backward()
    h = np.tanh(w_array @ x_array)
    np.testing.assert_allclose(w.grad.numpy(), (1 - h**2)[:, None] * x_array[None, :], rtol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), (1 - h**2) @ w_array, rtol=1e-12)
    np.testing.assert_allclose(jvp_fn(t([1.0, 0.0])).detach().numpy(), (1 - h**2) * w_array[:, 0], rtol=1e-12)
    with autograd.no_grad():
        assert not func.linearize(lambda v: (w @ v).tanh(), x)[0].requires_grad


def test_jvp_linearize_and_batch_norm_replacement():
    x, v = t([0.5, 2.0]), t([1.0, -1.0])
    output, tangent = func.jvp(lambda x: x**3, (x,), (v,))
    np.testing.assert_allclose(output.numpy(), [0.125, 8.0])
    np.testing.assert_allclose(tangent.numpy(), 3 * x.numpy() ** 2 * v.numpy())
    _, jvp_fn = func.linearize(lambda x: x.sin(), x)
    np.testing.assert_allclose(jvp_fn(v).numpy(), np.cos(x.numpy()) * v.numpy())
    with pytest.raises(RuntimeError, match="Expected primals and tangents to be tuples"):
        func.jvp(lambda x: x, x, v)
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert func.replace_all_batch_norm_modules_(net) is net
    assert net[1].running_mean is None and not net[1].track_running_stats
    net.eval()
    batch = autograd.randn(4, 2)
    np.testing.assert_allclose(net(batch).detach().numpy().mean(0), [0.0, 0.0], atol=1e-5)  # batch statistics


def test_stack_module_state():
    models = [nn.Linear(2, 1) for _ in range(3)]
    params, buffers = func.stack_module_state(models)
    assert params["weight"].shape == (3, 1, 2) and params["weight"].is_leaf and params["weight"].requires_grad
    assert buffers == {}
    x = autograd.randn(4, 2)
    base = models[0]
    outs = func.vmap(lambda p, x: func.functional_call(base, p, (x,)), in_dims=(0, None))(params, x)
    for i, model in enumerate(models):
        np.testing.assert_allclose(outs[i].detach().numpy(), model(x).detach().numpy(), rtol=1e-6)


def test_variable_grad_mode_and_anomaly():
    from autograd.autograd import Variable, grad_mode, set_detect_anomaly

    x = autograd.ones(2, requires_grad=True)
    v = Variable(x * 2)
    assert isinstance(v, autograd.Tensor) and not v.requires_grad and v.grad_fn is None
    assert isinstance(x, Variable) and Variable(x, requires_grad=True).is_leaf
    with pytest.raises(TypeError, match="Variable data has to be a tensor, but got list"):
        Variable([1, 2])
    with pytest.warns(UserWarning, match="volatile was removed"):
        Variable(x, volatile=True)
    assert Variable().shape == (0,)
    assert grad_mode.no_grad is autograd.no_grad
    with set_detect_anomaly(True):
        assert autograd.is_anomaly_enabled()
    assert not autograd.is_anomaly_enabled()


# -- against PyTorch -------------------------------------------------------------------------------

def libs(name):
    if name == "ours":
        return types.SimpleNamespace(lib=autograd, func=func, nn=nn)
    torch = pytest.importorskip("torch")
    return types.SimpleNamespace(lib=torch, func=importlib.import_module("torch.func"), nn=torch.nn)


def program(L):
    """Every transform on small functions; the results as NumPy arrays."""
    x = L.lib.tensor(np.array([0.3, -0.7, 1.1]))
    y = L.lib.tensor(np.array([[1.0, 2.0, -1.0], [0.5, 0.0, 2.0]]))

    def f(x, y):
        return ((y @ x).tanh() ** 2).sum() + (x.exp() * x).sum()

    def g(x, y):
        return (y * x).sin(), (x**2).sum()

    out = {}
    out["grad"] = L.func.grad(f)(x, y)
    out["grad_y"] = L.func.grad(f, argnums=1)(x, y)
    gradient, value = L.func.grad_and_value(f, argnums=(0, 1))(x, y)
    out["gv0"], out["gv1"], out["value"] = gradient[0], gradient[1], value
    primal, vjp_fn = L.func.vjp(g, x, y)
    out["vjp0"], out["vjp1"] = vjp_fn((L.lib.ones_like(primal[0]), L.lib.tensor(2.0, dtype=L.lib.float64)))
    jac = L.func.jacrev(g, argnums=(0, 1))(x, y)
    out["jac00"], out["jac01"], out["jac10"], out["jac11"] = jac[0][0], jac[0][1], jac[1][0], jac[1][1]
    out["jacfwd"] = L.func.jacfwd(lambda x: (y @ x).sin())(x)
    out["hessian"] = L.func.hessian(f)(x, y)
    out["hessian_xy"] = L.func.hessian(f, argnums=(0, 1))(x, y)[0][1]
    out["vmap_grad"] = L.func.vmap(L.func.grad(lambda row, x: ((row * x).sin()).sum()), in_dims=(0, None))(y, x)
    out["vmap_out1"] = L.func.vmap(lambda row: row.cumsum(0), out_dims=1)(y)
    primal, tangent = L.func.jvp(g, (x, y), (x * 2, y.cos()))
    out["jvp_primal"], out["jvp0"], out["jvp1"] = primal[0], tangent[0], tangent[1]
    _, jvp_fn = L.func.linearize(lambda x: (y @ x).exp(), x)
    out["linearize"] = jvp_fn(x.flip(0))
    model = L.nn.Sequential(L.nn.Linear(3, 4), L.nn.Tanh(), L.nn.Linear(4, 1)).double()
    rng = np.random.default_rng(0)
    params = {k: L.lib.tensor(rng.standard_normal(tuple(v.shape))) for k, v in model.named_parameters()}

    def loss(p, xi, yi):
        return ((L.func.functional_call(model, p, (xi.unsqueeze(0),)) - yi) ** 2).sum()

    per_sample = L.func.vmap(L.func.grad(loss), in_dims=(None, 0, 0))(params, y, L.lib.tensor(np.array([0.5, -1.0])))
    out.update({f"per_sample.{k}": v for k, v in per_sample.items()})
    return {k: v.detach().numpy() for k, v in out.items()}


@pytest.mark.torch
def test_transforms_match_torch():
    ours, theirs = program(libs("ours")), program(libs("torch"))
    assert set(ours) == set(theirs)
    for key in ours:
        assert ours[key].shape == theirs[key].shape, key
        np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-10, atol=1e-12, err_msg=key)


def test_save_on_cpu_changes_nothing_on_the_cpu():
    from autograd.autograd.graph import save_on_cpu

    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    with save_on_cpu(pin_memory=True):
        y = (x.exp() * x).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0])), rtol=1e-6)
    assert autograd.autograd.graph.save_on_cpu is save_on_cpu
