"""grad, grad_and_value and vjp, ported from PyTorch's test/functorch/test_eager_transforms.py (TestSliceArgnums
through grad's argnums, TestGradTransform): argnums, has_aux, pytrees of inputs and outputs, unrelated inputs,
grad modes around and inside the transforms, and the errors for bad arguments (compositions:
test_ported_func_compose.py).

Each test runs on chainrule's `autograd` (transforms in `autograd.func`) and, where it is installed, on PyTorch
(`torch.func`) (fixture `T`).
"""

import importlib

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values
from tests.ported_func import randn, t

nn = ported_nn.nn  # the fixture


@pytest.fixture
def fn(T):
    """The library's torch.func."""
    return importlib.import_module(T.__name__ + ".func")


# -- argnums (TestSliceArgnums, TestGradTransform.test_*argnums*) -------------------------------------------

def test_argnums_select_and_order_the_gradients(T, fn):
    x, y = t(T, 0.5), t(T, -2.0)
    same(fn.grad(T.mul, argnums=0)(x, y), -2.0)
    same(fn.grad(T.mul, argnums=1)(x, y), 0.5)
    (gx,) = fn.grad(T.mul, argnums=(0,))(x, y)
    same(gx, -2.0)
    gx, gy = fn.grad(T.mul, argnums=(0, 1))(x, y)
    same(gx, -2.0)
    same(gy, 0.5)
    gy, gx = fn.grad(T.mul, argnums=(1, 0))(x, y)  # out of order: the gradients follow argnums
    same(gx, -2.0)
    same(gy, 0.5)


def test_negative_argnums_count_from_the_end(T, fn):
    x, y = t(T, 0.5), t(T, -2.0)
    same(fn.grad(T.mul, argnums=-2)(x, y), -2.0)
    same(fn.grad(T.mul, argnums=-1)(x, y), 0.5)
    (gx,) = fn.grad(T.mul, argnums=(-2,))(x, y)
    same(gx, -2.0)
    gx, gy = fn.grad(T.mul, argnums=(-2, -1))(x, y)
    same(gx, -2.0)
    same(gy, 0.5)


def test_argnums_reach_past_non_tensor_arguments(T, fn):
    x = t(T, [1.0, 2.0])

    def f(scale, x, name, y):
        assert scale == 3 and name == "abc"
        return (scale * x * y).sum()

    gx, gy = fn.grad(f, argnums=(1, 3))(3, x, "abc", x * 2)
    same(gx, [6.0, 12.0])
    same(gy, [3.0, 6.0])


@pytest.mark.parametrize("argnums, message", [
    (-3, "but only"), (2, "but only"), ([0], "int or Tuple"), (0.0, "int or Tuple"), (("0",), "must be int"),
    ((1, 0.0), "must be int"), ((0, 0), "must be unique"), ((0, -2), "must be unique"), ((), "must be non-empty"),
])
def test_invalid_argnums(T, fn, argnums, message):
    x, y = t(T, 0.5), t(T, 2.0)
    raises(RuntimeError, message, fn.grad(T.mul, argnums=argnums), x, y)


def test_out_of_bounds_argnums_name_the_count(T, fn):
    raises(RuntimeError, "only 1 positional inputs", fn.grad(T.sum, argnums=1), t(T, [1.0]))
    raises(RuntimeError, "only 1 positional inputs", fn.grad(T.sum, argnums=(-2,)), t(T, [1.0]))


# -- TestGradTransform ---------------------------------------------------------------------------------------

def test_primitive_and_composite(T, fn):
    x = randn(T, 2, 3, 4)
    same(fn.grad(lambda x: T.flatten(x).sum())(x), np.ones((2, 3, 4)))
    s = t(T, 0.3)
    close(fn.grad(T.sin)(s), np.cos(0.3), rtol=1e-12)
    close(fn.grad(fn.grad(T.sin))(s), -np.sin(0.3), rtol=1e-12)


def test_matches_autograd_grad(T, fn):
    x, y = randn(T, 3, seed=1), randn(T, 3, 5, seed=2)

    def foo(x, y):
        return (x @ y).sum()

    result = fn.grad(foo)(x, y)
    x_ = x.clone().requires_grad_()
    (expected,) = T.autograd.grad(foo(x_, y), x_)
    close(result, values(expected), rtol=1e-12)
    close(result, values(y).sum(1), rtol=1e-12)
    assert not x.requires_grad and x.grad is None


def test_cross_entropy_with_integer_targets(T, fn, nn):
    logits = randn(T, 2, 5, seed=3)
    result = fn.grad(lambda y, target: nn.functional.cross_entropy(y, target))(logits, T.tensor([1, 4]))
    z = values(logits)
    softmax = np.exp(z - z.max(1, keepdims=True))
    softmax /= softmax.sum(1, keepdims=True)
    close(result, (softmax - np.eye(5)[[1, 4]]) / 2, rtol=1e-10)


def test_keyword_arguments_are_passed_through(T, fn):
    x, y = randn(T, 3, seed=1), randn(T, 3, seed=2)

    def foo(x, y):
        return (x * y).sum()

    same(fn.grad(foo)(x, y=y), values(y))
    same(fn.grad(foo)(x, y=y), values(fn.grad(foo)(x, y)))


def test_attributes_seen_inside_grad(T, fn):
    x = randn(T, 2, 3, 5)
    seen = []

    def foo(x):
        seen.append((tuple(x.shape), x.dtype, x.numel(), x.dim()))
        return x.sum()

    fn.grad(foo)(x)
    assert seen == [((2, 3, 5), T.float64, 30, 3)]


def test_in_place_ops_inside(T, fn):
    s = t(T, 0.7)
    close(fn.grad(lambda x: x.clone().sin_())(s), np.cos(0.7), rtol=1e-12)
    x = t(T, [0.2, -0.4, 1.5])

    def on_view(x):
        y = x.clone()
        y[0].sin_()
        return y.sum()

    close(fn.grad(on_view)(x), [np.cos(0.2), 1.0, 1.0], rtol=1e-12)

    def base_changed_under_view(x):
        y = x.clone()
        y0 = y[0]
        y.sin_()
        return y0

    close(fn.grad(base_changed_under_view)(x), [np.cos(0.2), 0.0, 0.0], rtol=1e-12)

    def view_in_place(x):
        x = x.clone()
        x.view([]).sin_()
        return x

    close(fn.grad(view_in_place)(s), np.cos(0.7), rtol=1e-12)


def test_masked_assignment_inside(T, fn):
    x = randn(T, 20, seed=4)

    def f(value):
        value = value.clone()
        value[value > 0] = 0
        return value.sum()

    same(fn.grad(f)(x), (values(x) <= 0).astype(np.float64))


def test_pytree_inputs(T, fn):
    x = t(T, 0.5)

    def f(a, b):
        first, second = a
        return 1 * first + 2 * second + 3 * b["foo"]

    args = ((x, x), {"foo": x})
    gx, gy = fn.grad(f)(*args)
    same(gx, 1.0)
    same(gy, 2.0)
    ((gx, gy),) = fn.grad(f, argnums=(0,))(*args)
    same(gx, 1.0)
    same(gy, 2.0)
    (gx, gy), gz = fn.grad(f, argnums=(0, 1))(*args)
    assert isinstance(gz, dict) and list(gz) == ["foo"]
    same(gx, 1.0)
    same(gy, 2.0)
    same(gz["foo"], 3.0)


def test_gradient_keeps_the_argument_container_types(T, fn):
    x = t(T, [1.0, 2.0])
    g = fn.grad(lambda p: (p[0] * p[1][0] * p[1][1]).sum())([x, [x * 2, x * 3]])
    assert isinstance(g, list) and isinstance(g[1], list)
    same(g[0], values(x) ** 2 * 6)
    same(g[1][0], values(x) ** 2 * 3)
    same(g[1][1], values(x) ** 2 * 2)


def test_has_aux(T, fn):
    x = randn(T, 3)
    raises(RuntimeError, r"grad_and_value\(f.*\)\(\*args\): output of function f should be a tuple",
           fn.grad(lambda a: [a, a], has_aux=True), x)
    raises(RuntimeError, r"grad_and_value\(f.*\)\(\*args\): output of function f should be a tuple",
           fn.grad(lambda a: (a, a + 2, a + 3), has_aux=True), x)
    out, aux = fn.grad(lambda a: (a.sin().sum(), a.cos()), has_aux=True)(x)
    close(out, np.cos(values(x)), rtol=1e-12)
    close(aux, np.cos(values(x)), rtol=1e-12)
    assert not aux.requires_grad


def test_has_aux_pytree(T, fn):
    x = randn(T, 3)
    out, aux = fn.grad(lambda a: (a.sin().sum(), {"a": a.cos(), "b": [a.tan()]}), has_aux=True)(x)
    close(out, np.cos(values(x)), rtol=1e-12)
    assert list(aux) == ["a", "b"] and isinstance(aux["b"], list)
    close(aux["a"], np.cos(values(x)), rtol=1e-12)
    close(aux["b"][0], np.tan(values(x)), rtol=1e-12)


@pytest.mark.parametrize("aux", [1, 1.0, "abc"])
def test_aux_must_hold_only_tensors(T, fn, aux):
    x = randn(T, 3)
    raises(RuntimeError, "Expected tensors, got unsupported type", fn.grad(lambda a: (a.sum(), aux), has_aux=True), x)
    raises(RuntimeError, "Expected tensors, got unsupported type",
           fn.grad(lambda a: (a.sum(), [a, aux]), has_aux=True), x)
    raises(RuntimeError, "Expected tensors, got unsupported type", fn.vjp, lambda a: (a, aux), x, has_aux=True)
    raises(RuntimeError, "Expected tensors, got unsupported type", fn.vjp, lambda a: (a, [a, aux]), x, has_aux=True)


def test_grad_and_value(T, fn):
    x = t(T, [0.5, -1.0])
    g, value = fn.grad_and_value(lambda a: (a ** 3).sum())(x)
    same(g, 3 * values(x) ** 2)
    same(value, -0.875)
    assert not value.requires_grad
    g, (value, aux) = fn.grad_and_value(lambda a: ((a ** 2).sum(), a * 10), has_aux=True)(x)
    same(g, [1.0, -2.0])
    same(value, 1.25)
    same(aux, [5.0, -10.0])


def test_output_must_be_a_scalar_tensor(T, fn):
    raises(RuntimeError, r"Expected f\(\*args\) to return a scalar Tensor, got tensor with 1 dims",
           fn.grad(lambda a: a), t(T, [1.0]))
    raises(RuntimeError, r"Expected f\(\*args\) to return a Tensor, got <class 'float'>",
           fn.grad(lambda a: 1.0), t(T, [1.0]))


def test_only_floating_point_inputs_are_differentiated(T, fn):
    raises(RuntimeError, "only Tensors of floating point dtype can require gradients",
           fn.grad(lambda a: a.sum()), T.tensor([1, 2]))


def test_unrelated_and_partly_used_inputs_get_zeros(T, fn):
    inputs = {"a": randn(T, 10, seed=5) + 3, "b": randn(T, 10, seed=6)}
    grads = fn.grad(lambda d: (d["a"] ** 2.0).sum())(inputs)
    same(grads["a"], 2 * values(inputs["a"]))
    same(grads["b"], np.zeros(10))
    y = t(T, 2.0)
    same(fn.grad(lambda x: y)(t(T, 1.0)), 0.0)


def test_vjp_of_unrelated_outputs(T, fn):
    y, v = t(T, 2.0), t(T, 1.0)
    out, vjp_fn = fn.vjp(lambda x: y, t(T, 1.0))
    same(out, 2.0)
    (gx,) = vjp_fn(v)
    same(gx, 0.0)
    _, vjp_fn = fn.vjp(lambda w, x: (y, y, x), t(T, 3.0), t(T, 4.0))
    gw, gx = vjp_fn((v, v, v))
    same(gw, 0.0)
    same(gx, 1.0)


def test_vjp_of_sin(T, fn):
    x, v = t(T, 0.4), t(T, -1.5)
    out, vjp_fn = fn.vjp(T.sin, x)
    close(out, np.sin(0.4), rtol=1e-12)
    (result,) = vjp_fn(v)
    close(result, -1.5 * np.cos(0.4), rtol=1e-12)
    out, vjp_fn = fn.vjp(lambda a: (a, a), t(T, 1.0))  # two outputs, fed back as their own cotangents
    (result,) = vjp_fn(out)
    same(result, 2.0)


def test_vjp_pytree_inputs_and_outputs(T, fn):
    x, v = t(T, 1.5), t(T, 2.0)
    out, vjp_fn = fn.vjp(lambda p: p[0] * p[1][0], (x, (x, x)))
    same(out, 2.25)
    ((gx, (gy, gz)),) = vjp_fn(v)
    same(gx, 3.0)
    same(gy, 3.0)
    same(gz, 0.0)
    _, vjp_fn = fn.vjp(lambda a: (a, (a, a)), x)
    (result,) = vjp_fn((t(T, 1.0), (t(T, 2.0), t(T, 3.0))))
    same(result, 6.0)


def test_vjp_outputs_can_be_any_pytree(T, fn):
    x = randn(T, 2, 3)
    v = randn(T, 2, 3, seed=1)
    out, vjp_fn = fn.vjp(lambda a: [a, a.sum()], x)
    assert isinstance(out, list) and len(out) == 2
    (g,) = vjp_fn([v, v.sum()])
    close(g, values(v) + values(v).sum(), rtol=1e-12)
    out, vjp_fn = fn.vjp(lambda a: {"x": a, "xsum": a.sum()}, x)
    assert isinstance(out, dict) and set(out) == {"x", "xsum"}
    (g,) = vjp_fn({"x": v, "xsum": v.sum()})
    close(g, values(v) + values(v).sum(), rtol=1e-12)

    def composite(a):
        s = a.sum()
        return [(s, {"a": a, "out": [a, s]})]

    out, vjp_fn = fn.vjp(composite, x)
    assert isinstance(out, list) and isinstance(out[0], tuple) and isinstance(out[0][1], dict)
    (g,) = vjp_fn([(v.sum(), {"a": v, "out": [v, v.sum()]})])
    close(g, 2 * values(v) + 2 * values(v).sum(), rtol=1e-12)


@pytest.mark.parametrize("output", [None, ()])
def test_vjp_refuses_an_empty_output(T, fn, output):
    raises(RuntimeError, r"vjp\(f, \*primals\): Expected f to be a function that has non-empty output",
           fn.vjp, lambda _: output, randn(T, 2, 3))


@pytest.mark.parametrize("output", [1, True, 12.2, "abc"])
def test_vjp_refuses_a_non_tensor_output(T, fn, output):
    raises(RuntimeError, r"vjp\(f, \*primals\): expected f\(\*primals\) to return only tensors",
           fn.vjp, lambda _: output, randn(T, 2, 3))


def test_vjp_cotangents_must_have_the_outputs_structure(T, fn):
    x = t(T, 1.0)
    _, vjp_fn = fn.vjp(lambda a: (a, (a, a)), x)
    raises(RuntimeError, "Expected pytree structure", vjp_fn, ((x, (x, x)),))
    raises(RuntimeError, "Expected pytree structure", vjp_fn, (x, x, x))  # same count of tensors, other nesting
    raises(RuntimeError, "Expected pytree structure", vjp_fn, [x, (x, x)])  # a list for the output's tuple
    _, vjp_fn = fn.vjp(lambda a: {"a": a, "b": a * 2}, x)
    raises(RuntimeError, "Expected pytree structure", vjp_fn, {"a": x, "c": x})


def test_vjp_has_aux(T, fn):
    x = randn(T, 3)
    raises(RuntimeError, r"vjp\(f, \*primals\): output of function f should be a tuple",
           fn.vjp, lambda a: [a, a], x, has_aux=True)
    raises(RuntimeError, r"vjp\(f, \*primals\): output of function f should be a tuple",
           fn.vjp, lambda a: (a, a + 2, a + 3), x, has_aux=True)
    out, vjp_fn, aux = fn.vjp(lambda a: (a.sin(), {"a": a.cos(), "b": [a.tan()]}), x, has_aux=True)
    close(out, np.sin(values(x)), rtol=1e-12)
    close(aux["a"], np.cos(values(x)), rtol=1e-12)
    close(aux["b"][0], np.tan(values(x)), rtol=1e-12)
    v = randn(T, 3, seed=1)
    (gx,) = vjp_fn(v)
    close(gx, values(v) * np.cos(values(x)), rtol=1e-12)


# -- grad modes around and inside the transforms ----------------------------------------------------------

def test_no_grad_outside(T, fn):
    x = t(T, 0.3).requires_grad_()
    with T.no_grad():
        y = fn.grad(T.sin)(x)
    close(y, np.cos(0.3), rtol=1e-12)
    assert not y.requires_grad


def no_grad_shift(T):
    def f(x):
        with T.no_grad():
            shift = x ** 2
        return x ** 2 - shift

    return f


def test_no_grad_inside(T, fn):
    f = no_grad_shift(T)
    x = t(T, 0.8)
    close(fn.grad(f)(x), 1.6, rtol=1e-12)
    close(fn.grad(fn.grad(f))(x), 2.0, rtol=1e-12)
    x = t(T, 0.8).requires_grad_()
    y = fn.grad(f)(x)
    (z,) = T.autograd.grad(y, x)
    close(z, 2.0, rtol=1e-12)


def test_no_grad_mixed(T, fn):
    x = t(T, 0.8).requires_grad_()
    with T.no_grad():
        y = fn.grad(no_grad_shift(T))(x)
    close(y, 1.6, rtol=1e-12)
    assert not y.requires_grad


def test_no_grad_nested(T, fn):
    def h(x):
        with T.no_grad():
            shift = fn.grad(lambda a: 0.25 * a ** 4)(x)
        return x ** 3 - shift

    x = t(T, 1.5).requires_grad_()
    y = fn.grad(h)(x)
    close(y, 3 * 1.5 ** 2, rtol=1e-12)
    (z,) = T.autograd.grad(y, x)
    close(z, 6 * 1.5, rtol=1e-12)

    def f(a):
        with T.no_grad():
            shift = a ** 3
        return a ** 3 - shift

    def g(a):
        r1 = fn.grad(f)(a)
        with T.no_grad():
            shift = fn.grad(f)(a)
        return r1 - shift

    x = t(T, -0.7).requires_grad_()
    y = fn.grad(g)(x)  # the only differentiable part of g is a ** 3
    close(y, 6 * -0.7, rtol=1e-12)
    (z,) = T.autograd.grad(y, x)
    close(z, 6.0, rtol=1e-12)


def test_no_grad_value(T, fn):
    def h(x):
        with T.no_grad():
            _, value = fn.grad_and_value(lambda a: a ** 3)(x)
        return x ** 3 - value

    x = t(T, 1.6).requires_grad_()
    y = fn.grad(h)(x)
    close(y, 3 * 1.6 ** 2, rtol=1e-12)
    (z,) = T.autograd.grad(y, x)
    close(z, 6 * 1.6, rtol=1e-12)


def test_no_grad_around_vjp(T, fn):
    x = t(T, 2.0).requires_grad_()
    with T.no_grad():
        out, vjp_fn = fn.vjp(lambda a: a ** 2, x)
        (y,) = vjp_fn(t(T, 1.0))
    same(y, 4.0)
    assert not y.requires_grad and not out.requires_grad


def test_no_grad_around_vjp_fn_only(T, fn):
    x = t(T, 3.0).requires_grad_()
    out, vjp_fn = fn.vjp(lambda a: a ** 2, x)
    with T.no_grad():
        (y,) = vjp_fn(t(T, 1.0))
    same(y, 6.0)
    assert not y.requires_grad and out.requires_grad
    (z,) = T.autograd.grad(out, x)
    same(z, 6.0)


def test_no_grad_around_vjp_but_not_vjp_fn(T, fn):
    x = t(T, 3.0).requires_grad_()
    with T.no_grad():
        out, vjp_fn = fn.vjp(lambda a: a ** 2, x)
    (y,) = vjp_fn(t(T, 1.0))
    same(y, 6.0)
    assert not out.requires_grad
    assert y.requires_grad  # PyTorch: "a little weird", but the cotangent pass records
    (z,) = T.autograd.grad(y, x)
    same(z, 2.0)


def test_inference_mode_outside(T, fn):
    x = randn(T, 3)
    with T.inference_mode():
        y = fn.grad(lambda a: (a ** 2).sum())(x)
        out, vjp_fn = fn.vjp(lambda a: (a ** 2).sum(), x)
        (v,) = vjp_fn(t(T, 1.0))
        _, tangent = fn.jvp(lambda a: (a ** 2).sum(), (x,), (T.ones_like(x),))
        jac = fn.jacrev(lambda a: a ** 2)(x)
        per_row = fn.vmap(fn.grad(lambda a: (a ** 2).sum()))(randn(T, 5, 3, seed=1))
        second = fn.grad(fn.grad(lambda a: a ** 3))(t(T, 0.5))
        hessian = fn.jacrev(fn.grad(lambda a: (a ** 3).sum()))(x)
        assert T.is_inference_mode_enabled()
    assert not T.is_inference_mode_enabled()
    close(y, 2 * values(x), rtol=1e-12)
    close(v, 2 * values(x), rtol=1e-12)
    close(tangent, 2 * values(x).sum(), rtol=1e-12)
    close(jac, np.diag(2 * values(x)), rtol=1e-12)
    close(per_row, 2 * values(randn(T, 5, 3, seed=1)), rtol=1e-12)
    close(second, 3.0, rtol=1e-12)
    close(hessian, np.diag(6 * values(x)), rtol=1e-12)


def test_inference_mode_inside(T, fn):
    def f(x):
        with T.inference_mode():
            c = x ** 2
        return x - c

    x = randn(T, 3)
    same(fn.grad(lambda a: f(a).sum())(x), np.ones(3))


def test_manual_seed_inside_grad(T, fn):
    x = t(T, 0.5)

    def f(a):
        T.manual_seed(0)
        return a * T.randn_like(a)

    result = fn.grad(f)(x)
    T.manual_seed(0)
    same(result, values(T.randn_like(x)))
