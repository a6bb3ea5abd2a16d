"""autograd.autograd (torch.autograd's namespace) and autograd.autograd.functional against PyTorch."""

import numpy as np
import pytest

import autograd
from autograd.autograd import functional

RNG = np.random.default_rng(0)
A = RNG.standard_normal(3)
B = RNG.standard_normal(3)
M = RNG.standard_normal((2, 3))

# functions written with methods both libraries share
VECTOR_FUNCTIONS = {
    "one_to_one": (lambda a: a.exp() * a.sin(), (A,)),
    "matrix_one_to_one": (lambda m: (m * m).sum(1), (M,)),
    "two_to_one": (lambda a, b: a * b.exp() + b, (A, B)),
    "one_to_two": (lambda a: (a.sin(), (a * a).sum()), (A,)),
    "two_to_two": (lambda a, b: (a * b, (a + b).exp().sum()), (A, B)),
    "independent": (lambda a, b: a * 2.0, (A, B)),
}
SCALAR_FUNCTIONS = {
    "one": (lambda a: (a**3).sum() + (a[0] * a[1]), (A,)),
    "two": (lambda a, b: (a * a * b).sum(), (A, B)),
    "matrix": (lambda m: (m.exp() * m).sum(), (M,)),
}


def _structure(value, torch):
    """The nesting of tuples with each tensor as a NumPy array, comparable across libraries."""
    if isinstance(value, tuple):
        return tuple(_structure(v, torch) for v in value)
    if isinstance(value, torch.Tensor):
        return ("tensor", value.detach().numpy())
    assert isinstance(value, autograd.Tensor), type(value)
    return ("tensor", value.detach().numpy())


def _assert_same(ours, theirs, torch):
    ours, theirs = _structure(ours, torch), _structure(theirs, torch)
    _assert_close(ours, theirs)


def _assert_close(ours, theirs):
    assert type(ours) is type(theirs) and len(ours) == len(theirs)
    if ours[0] == "tensor" and theirs[0] == "tensor":
        assert ours[1].shape == theirs[1].shape
        np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-10, atol=1e-12)
        return
    for o, t in zip(ours, theirs):
        _assert_close(o, t)


def _args(arrays, module, as_tuple):
    tensors = tuple(module.tensor(a) for a in arrays)
    return tensors if as_tuple or len(tensors) > 1 else tensors[0]


def _v(like, module):
    """A seed shaped like ``like`` (a tensor or a tuple), fixed values."""
    if isinstance(like, tuple):
        return tuple(_v(x, module) for x in like)
    return module.tensor(np.linspace(0.5, 1.5, like.numel()).reshape(tuple(like.shape)))


@pytest.fixture
def torch():
    return pytest.importorskip("torch")



@pytest.mark.torch
@pytest.mark.parametrize("as_tuple", [False, True])
@pytest.mark.parametrize("name", sorted(VECTOR_FUNCTIONS))
def test_jacobian_vjp_jvp(torch, name, as_tuple):
    fn, arrays = VECTOR_FUNCTIONS[name]
    ours, theirs = _args(arrays, autograd, as_tuple), _args(arrays, torch, as_tuple)
    _assert_same(functional.jacobian(fn, ours), torch.autograd.functional.jacobian(fn, theirs), torch)
    _assert_same(functional.jacobian(fn, ours, vectorize=True),
                 torch.autograd.functional.jacobian(fn, theirs, vectorize=True), torch)
    outputs = fn(*(ours if isinstance(ours, tuple) else (ours,)))
    v_out_ours, v_out_theirs = _v(outputs, autograd), _v(outputs, torch)
    _assert_same(functional.vjp(fn, ours, v_out_ours), torch.autograd.functional.vjp(fn, theirs, v_out_theirs),
                 torch)
    _assert_same(functional.jvp(fn, ours, _v(ours, autograd)),
                 torch.autograd.functional.jvp(fn, theirs, _v(theirs, torch)), torch)


@pytest.mark.torch
@pytest.mark.parametrize("as_tuple", [False, True])
@pytest.mark.parametrize("name", sorted(SCALAR_FUNCTIONS))
def test_hessian_hvp_vhp(torch, name, as_tuple):
    fn, arrays = SCALAR_FUNCTIONS[name]
    ours, theirs = _args(arrays, autograd, as_tuple), _args(arrays, torch, as_tuple)
    _assert_same(functional.hessian(fn, ours), torch.autograd.functional.hessian(fn, theirs), torch)
    for ours_fn, theirs_fn in ((functional.hvp, torch.autograd.functional.hvp),
                               (functional.vhp, torch.autograd.functional.vhp)):
        _assert_same(ours_fn(fn, ours, _v(ours, autograd)), theirs_fn(fn, theirs, _v(theirs, torch)), torch)


@pytest.mark.torch
def test_create_graph_results_can_be_differentiated(torch):
    def fn(x):
        return x.sin() * x

    ours, theirs = autograd.tensor(A, requires_grad=True), torch.tensor(A, requires_grad=True)
    ours_jac = functional.jacobian(fn, ours, create_graph=True)
    theirs_jac = torch.autograd.functional.jacobian(fn, theirs, create_graph=True)
    assert ours_jac.requires_grad
    (ours_jac**2).sum().backward()
    (theirs_jac**2).sum().backward()
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10)
    _, ours_hvp = functional.hvp(lambda x: (x**4).sum(), ours, autograd.tensor(B), create_graph=True)
    _, theirs_hvp = torch.autograd.functional.hvp(lambda x: (x**4).sum(), theirs, torch.tensor(B),
                                                  create_graph=True)
    (g_ours,) = autograd.grad(ours_hvp.sum(), ours)
    (g_theirs,) = torch.autograd.grad(theirs_hvp.sum(), theirs)
    np.testing.assert_allclose(g_ours.numpy(), g_theirs.numpy(), rtol=1e-10)


def test_results_are_detached_and_inputs_collect_no_grad():
    x = autograd.tensor(A, requires_grad=True)
    out, vjp = functional.vjp(lambda t: t * 2, x, autograd.ones(3, dtype=autograd.float64))
    jac = functional.jacobian(lambda t: t * 2, x)
    assert not out.requires_grad and not vjp.requires_grad and not jac.requires_grad and x.grad is None
    np.testing.assert_array_equal(jac.numpy(), 2 * np.eye(3))


def _messages(call_ours, call_theirs):
    with pytest.raises(Exception) as ours:
        call_ours()
    with pytest.raises(Exception) as theirs:
        call_theirs()
    assert type(ours.value) is type(theirs.value)
    return str(ours.value), str(theirs.value)


@pytest.mark.torch
@pytest.mark.parametrize("fn_name", ["vjp", "jvp", "jacobian", "hvp", "vhp", "hessian"])
def test_strict_mode_errors_match_pytorch(torch, fn_name):
    def ours_fn(a, b):
        return (a * a).sum() + b.detach().sum()

    def theirs_fn(a, b):
        return (a * a).sum() + b.detach().sum()

    ours_args = (autograd.tensor(A), autograd.tensor(B))
    theirs_args = (torch.tensor(A), torch.tensor(B))
    extra_ours, extra_theirs = {}, {}
    if fn_name in ("jvp", "hvp", "vhp"):
        extra_ours["v"], extra_theirs["v"] = _v(ours_args, autograd), _v(theirs_args, torch)
    ours, theirs = _messages(
        lambda: getattr(functional, fn_name)(ours_fn, ours_args, strict=True, **extra_ours),
        lambda: getattr(torch.autograd.functional, fn_name)(theirs_fn, theirs_args, strict=True, **extra_theirs))
    assert ours == theirs


@pytest.mark.torch
def test_strict_output_without_grad_and_linear_hessian(torch):
    ours, theirs = _messages(lambda: functional.vjp(lambda a: autograd.ones(3), autograd.tensor(A), strict=True),
                             lambda: torch.autograd.functional.vjp(lambda a: torch.ones(3), torch.tensor(A),
                                                                   strict=True))
    assert ours == theirs and "Output 0 of the user-provided function does not require gradients" in ours
    ours, theirs = _messages(lambda: functional.hessian(lambda a: (a * 2).sum(), autograd.tensor(A), strict=True),
                             lambda: torch.autograd.functional.hessian(lambda a: (a * 2).sum(), torch.tensor(A),
                                                                       strict=True))
    assert ours == theirs


def test_non_strict_independence_gives_zeros():
    jac = functional.jacobian(lambda a, b: a * 2.0, (autograd.tensor(A), autograd.tensor(B)))
    np.testing.assert_array_equal(jac[1].numpy(), np.zeros((3, 3)))


@pytest.mark.torch
def test_argument_errors_match_pytorch(torch):
    cases = [
        (lambda m, t: m.vjp(lambda a: a * 2, t(A)), "The vector v can only be None"),
        (lambda m, t: m.vjp(lambda a: a * 2, t(A), t(B[:2])), "v has invalid size"),
        (lambda m, t: m.jvp(lambda a, b: a * b, (t(A), t(B)), (t(A),)),
         "v is a tuple of invalid length: should be 2 but got 1."),
        (lambda m, t: m.jacobian(lambda a: a * 2, [1.0, 2.0]), "must be either a Tensor or a tuple of Tensors"),
        (lambda m, t: m.jacobian(lambda a: a * 2, (t(A), 3.0)), "the value at index 1 has type"),
        (lambda m, t: m.hessian(lambda a: a * 2, t(A)), "should contain a single element"),
        (lambda m, t: m.hvp(lambda a: (a, a), t(A), t(A)), "should return a single Tensor"),
        (lambda m, t: m.jacobian(lambda a: a * 2, t(A), strategy="forward-mode"), "vectorize=True"),
        (lambda m, t: m.jacobian(lambda a: a * 2, t(A), strategy="sideways"), "reverse-mode"),
    ]
    for call, fragment in cases:
        ours, theirs = _messages(lambda call=call: call(functional, autograd.tensor),
                                 lambda call=call: call(torch.autograd.functional, torch.tensor))
        assert fragment in ours and fragment in theirs


def test_forward_mode_jacobian_with_vectorize_gives_the_reverse_mode_values():
    x = autograd.tensor(A)
    forward = functional.jacobian(lambda a: a.exp(), x, vectorize=True, strategy="forward-mode")
    np.testing.assert_allclose(forward.numpy(), np.diag(np.exp(A)))


def test_forward_mode_jacobian_stays_in_the_graph_of_what_requires_grad():
    """PyTorch's forward-mode Jacobian is a tangent computed by recorded ops: under grad mode a backward through it
    reaches the weights the function closed over (a Jacobian penalty trains them), and the inputs that require grad;
    it is detached where it depends on neither, and under no_grad. Values by hand: J = diag(1 - tanh(Wx)^2) W,
    so d sum(J) / dW[i, k] = -2 t_i (1 - t_i^2) x_k sum_j W[i, j] + (1 - t_i^2), t = tanh(Wx)."""
    w_array = RNG.standard_normal((3, 3))
    w = autograd.tensor(w_array, requires_grad=True)
    x = autograd.tensor(A)
    jac = functional.jacobian(lambda v: (w @ v).tanh(), x, strategy="forward-mode", vectorize=True)
    assert jac.requires_grad
    jac.sum().backward()
    t = np.tanh(w_array @ A)
    expected = (-2 * t * (1 - t**2) * w_array.sum(1))[:, None] * A[None, :] + (1 - t**2)[:, None]
    np.testing.assert_allclose(w.grad.numpy(), expected, rtol=1e-12)

    x_grad = autograd.tensor(A, requires_grad=True)
    jac = functional.jacobian(lambda v: v.exp(), x_grad, strategy="forward-mode", vectorize=True)
    jac.sum().backward()  # d/dx sum(diag(e^x)) = e^x
    np.testing.assert_allclose(x_grad.grad.numpy(), np.exp(A), rtol=1e-12)
    assert x_grad.is_leaf and not x.requires_grad

    c = autograd.tensor(B, requires_grad=True)
    scaled, shifted, own = (functional.jacobian(g, x, strategy="forward-mode", vectorize=True)
                            for g in (lambda v: v * c, lambda v: v.tanh() + c, lambda v: v.tanh()))
    assert scaled.requires_grad and not shifted.requires_grad and not own.requires_grad
    np.testing.assert_allclose(scaled.detach().numpy(), np.diag(B))
    with autograd.no_grad():
        assert not functional.jacobian(lambda v: (w @ v).tanh(), x, strategy="forward-mode",
                                       vectorize=True).requires_grad
    assert not functional.jacobian(lambda v: (w @ v).tanh(), x, vectorize=True).requires_grad  # (reverse mode)


@pytest.mark.torch
def test_forward_mode_jacobian_and_hessian_in_the_graph_as_pytorch(torch):
    w_array = RNG.standard_normal((3, 3))
    results = []
    for module in (autograd, torch):
        w = module.tensor(w_array, requires_grad=True)
        c = module.tensor(B, requires_grad=True)
        x = module.tensor(A)
        f = module.autograd.functional

        def fn(v, w=w):
            return (w @ v).tanh()

        jac = f.jacobian(fn, x, strategy="forward-mode", vectorize=True)
        hess = f.hessian(lambda v, fn=fn: (fn(v) ** 3).sum(), x, outer_jacobian_strategy="forward-mode",
                         vectorize=True)
        pair = f.jacobian(lambda v, c=c: (v * c, v.exp()), x, strategy="forward-mode", vectorize=True)
        flags = [jac.requires_grad, hess.requires_grad, [j.requires_grad for j in pair]]
        (jac.sum() + hess.sum() + pair[0].sum()).backward()
        results.append((flags, w.grad.numpy().copy(), c.grad.numpy().copy()))
    assert results[0][0] == results[1][0] == [True, True, [True, False]]
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-10)
    np.testing.assert_allclose(results[0][2], results[1][2], rtol=1e-10)


# -- grad and backward with PyTorch's full signatures -----------------------------------------------


@pytest.mark.torch
def test_grad_materialize_and_batched(torch):
    x = autograd.tensor(A, requires_grad=True)
    unused = autograd.tensor(B, requires_grad=True)
    g_x, g_unused = autograd.autograd.grad((x * x).sum(), (x, unused), materialize_grads=True)
    np.testing.assert_allclose(g_x.numpy(), 2 * A)
    np.testing.assert_array_equal(g_unused.numpy(), np.zeros(3))
    y = x.exp()
    seeds = autograd.tensor(np.eye(3))
    (rows,) = autograd.autograd.grad(y, x, seeds, is_grads_batched=True)
    tx = torch.tensor(A, requires_grad=True)
    (trows,) = torch.autograd.grad(tx.exp(), tx, torch.eye(3, dtype=torch.float64), is_grads_batched=True)
    np.testing.assert_allclose(rows.numpy(), trows.numpy())
    with pytest.raises(ValueError, match="allow_unused"):
        autograd.autograd.grad((x * x).sum(), x, allow_unused=False, materialize_grads=True)


@pytest.mark.torch
def test_backward_with_inputs_accumulates_only_there(torch):
    x = autograd.tensor(A, requires_grad=True)
    w = autograd.tensor(B, requires_grad=True)
    h = x * w
    h.retain_grad()
    autograd.autograd.backward((h * h).sum(), inputs=[w, h])
    assert x.grad is None
    tx, tw = torch.tensor(A, requires_grad=True), torch.tensor(B, requires_grad=True)
    th = tx * tw
    torch.autograd.backward((th * th).sum(), inputs=[tw, th])
    np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy())
    np.testing.assert_allclose(h.grad.numpy(), th.grad.numpy())
    with pytest.raises(RuntimeError, match="cannot be empty"):
        autograd.autograd.backward((x * 2).sum(), inputs=[])


def test_backward_with_grad_tensors():
    x = autograd.tensor(A, requires_grad=True)
    autograd.autograd.backward([x * 2, x * 3], [autograd.ones(3, dtype=autograd.float64),
                                                autograd.tensor(np.full(3, 2.0))])
    np.testing.assert_allclose(x.grad.numpy(), np.full(3, 8.0))


def test_namespace_mirrors_torch_autograd():
    ns = autograd.autograd
    for name in ("grad", "backward", "Function", "functional", "gradcheck", "gradgradcheck", "no_grad",
                 "enable_grad", "set_grad_enabled", "detect_anomaly", "function"):
        assert hasattr(ns, name), name
    for name in functional.__all__:
        assert callable(getattr(functional, name))


def test_values_and_structures_by_hand():
    a, b = autograd.tensor(A), autograd.tensor(B)
    u, w = autograd.tensor(np.full(3, 2.0)), autograd.tensor(np.arange(3.0))

    def f(a, b):
        return a * b, (a + b).sum()

    (product, total), (jv_product, jv_total) = functional.jvp(f, (a, b), (u, w))
    np.testing.assert_allclose(jv_product.numpy(), 2.0 * B + A * np.arange(3.0))
    assert jv_total.shape == () and np.isclose(jv_total.item(), 6.0 + 3.0)
    _, (vj_a, vj_b) = functional.vjp(f, (a, b), (u, autograd.tensor(1.0, dtype=autograd.float64)))
    np.testing.assert_allclose(vj_a.numpy(), 2.0 * B + 1.0)
    np.testing.assert_allclose(vj_b.numpy(), 2.0 * A + 1.0)
    value, vh = functional.vhp(lambda x: (x**3).sum(), a, u)
    np.testing.assert_allclose(vh.numpy(), 6 * A * 2.0)
    assert isinstance(value, autograd.Tensor) and isinstance(vh, autograd.Tensor)
    jac = functional.jacobian(f, (a, b))
    assert isinstance(jac, tuple) and len(jac) == 2 and jac[1][0].shape == (3,)
    hess = functional.hessian(lambda x, y: (x * y).sum(), (a, b))
    np.testing.assert_array_equal(hess[0][1].numpy(), np.eye(3))
    np.testing.assert_array_equal(hess[0][0].numpy(), np.zeros((3, 3)))
