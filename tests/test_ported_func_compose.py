"""Composed transforms, ported from PyTorch's test/functorch/test_eager_transforms.py (TestGradTransform's
composition tests, TestComposability, TestVmapOfGrad, TestAutogradFunction's tests that run a custom Function
under grad, TestLinearize's argument errors): grad with autograd, grad of vjp and vjp of grad, vmap with
both, per-sample gradients, and what a transform refuses or leaves alone inside it.

Each test runs on chainrule's `autograd` (transforms in `autograd.func`) and, where it is installed, on PyTorch
(`torch.func`) (fixture `T`).
"""

import importlib
from functools import partial

import numpy as np
import pytest

from tests.ported import close, raises, same, values, xfail_on_chainrule
from tests.ported_func import randn, t


@pytest.fixture
def fn(T):
    """The library's torch.func."""
    return importlib.import_module(T.__name__ + ".func")


# -- composition (TestGradTransform, TestComposability, TestVmapOfGrad) ------------------------------------

def test_composed_with_autograd(T, fn):
    x = t(T, 0.4).requires_grad_()
    y = fn.grad(T.sin)(x)
    (result,) = T.autograd.grad(y, x)
    close(result, -np.sin(0.4), rtol=1e-12)


def test_grad_through_a_view_composed_with_autograd(T, fn):
    x, y = t(T, 0.4).requires_grad_(), t(T, -1.1).requires_grad_()
    result = fn.grad(lambda a: a.view([]).sin())(x) + T.cos(y)
    gx, gy = T.autograd.grad(result, [x, y])
    close(gx, -np.sin(0.4), rtol=1e-12)
    close(gy, -np.sin(-1.1), rtol=1e-12)


def test_grad_of_vjp_and_vjp_of_grad(T, fn):
    x, y = t(T, 0.4), t(T, -1.3)

    def grad_of_vjp(x, y):
        _, vjp_fn = fn.vjp(T.sin, x)
        return fn.grad(lambda v: vjp_fn(v)[0])(y)

    close(grad_of_vjp(x, y), np.cos(0.4), rtol=1e-12)
    _, vjp_fn = fn.vjp(fn.grad(T.sin), x)
    close(vjp_fn(y)[0], 1.3 * np.sin(0.4), rtol=1e-12)

    def grad_of_vjp_of_grad(x, y):
        _, vjp_fn = fn.vjp(fn.grad(lambda a: -T.cos(a)), x)
        return fn.grad(lambda v: vjp_fn(v)[0])(y)

    close(grad_of_vjp_of_grad(x, y), np.cos(0.4), rtol=1e-12)


def test_grad_vmap_and_vmap_grad(T, fn):
    x = randn(T, 3)
    close(fn.grad(lambda a: fn.vmap(T.sin)(a).sum())(x), np.cos(values(x)), rtol=1e-12)
    close(fn.vmap(fn.grad(T.sin))(x), np.cos(values(x)), rtol=1e-12)
    close(fn.vmap(fn.vmap(T.sin))(randn(T, 2, 3)), np.sin(values(randn(T, 2, 3))), rtol=1e-12)
    close(fn.grad(lambda a: fn.vmap(lambda r: (r ** 2).sum())(a).sum())(x), 2 * values(x), rtol=1e-12)


def test_grad_of_vjp(T, fn):
    x = randn(T, 3)

    def foo(a):
        _, vjp_fn = fn.vjp(T.sin, a)
        return vjp_fn(a)[0].sum()

    # d/dx of sum(x cos x) is cos x - x sin x
    close(fn.grad(foo)(x), np.cos(values(x)) - values(x) * np.sin(values(x)), rtol=1e-12)


def test_vmap_of_vjp(T, fn):
    x = randn(T, 3)
    _, vjp_fn = fn.vjp(T.sin, x)
    (expected,) = vjp_fn(x)

    def foo(a):
        _, inner = fn.vjp(T.sin, a)
        return inner(a)

    (result,) = fn.vmap(foo)(x)
    close(result, values(expected), rtol=1e-12)
    xs = randn(T, 5, 3, seed=1)
    close(fn.vmap(lambda v: vjp_fn(v)[0])(xs), values(xs) * np.cos(values(x)), rtol=1e-12)


def test_vjp_of_grad_and_of_vmap(T, fn):
    x = t(T, 0.6)
    y, vjp_fn = fn.vjp(fn.grad(T.sin), x)
    close(y, np.cos(0.6), rtol=1e-12)
    close(vjp_fn(t(T, 2.0))[0], -2 * np.sin(0.6), rtol=1e-12)
    xs = randn(T, 3)
    y, vjp_fn = fn.vjp(fn.vmap(T.sin), xs)
    close(y, np.sin(values(xs)), rtol=1e-12)
    v = randn(T, 3, seed=1)
    close(vjp_fn(v)[0], np.cos(values(xs)) * values(v), rtol=1e-12)


def test_vjp_of_vjp(T, fn):
    x = randn(T, 3)
    _, vjp_fn = fn.vjp(T.sin, x)
    y, vjp_fn2 = fn.vjp(lambda a: vjp_fn(a)[0], x)
    close(y, values(x) * np.cos(values(x)), rtol=1e-12)
    (g,) = vjp_fn2(T.ones_like(x))  # the map a -> a cos(x0) is linear in a: its vjp is cos(x0)
    close(g, np.cos(values(x)), rtol=1e-12)


def test_vmap_of_vjp_of_log_softmax(T, fn):
    x, v = randn(T, 3, 5), randn(T, 5, seed=1)

    def foo(a, v):
        _, vjp_fn = fn.vjp(partial(T.log_softmax, dim=-1), a)
        return vjp_fn(v)[0]

    result = fn.vmap(foo, (0, None))(x, v)
    z = values(x)
    softmax = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    close(result, values(v) - softmax * values(v).sum(), rtol=1e-10)


def test_per_sample_grads(T, fn):
    weight, x, target = randn(T, 16, 2, seed=1), randn(T, 8, 16, seed=2), randn(T, 8, 2, seed=3)

    def compute_loss(weight, x, t):
        return ((x @ weight - t) ** 2).sum()

    result = fn.vmap(partial(fn.grad(compute_loss), weight))(x, target)
    w, xs, ts = values(weight), values(x), values(target)
    expected = np.stack([2 * np.outer(xs[i], xs[i] @ w - ts[i]) for i in range(8)])
    close(result, expected, rtol=1e-10)


def test_per_sample_grads_through_an_in_place_squeeze(T, fn):
    weight, x, target = randn(T, 16, 2, seed=1), randn(T, 8, 1, 16, seed=2), randn(T, 8, 2, seed=3)

    def compute_loss(weight, x, t):
        y = x.mm(weight).squeeze_(0)
        return (y - t).sum()

    result = fn.vmap(partial(fn.grad(compute_loss), weight))(x, target)
    close(result, np.stack([np.outer(row[0], np.ones(2)) for row in values(x)]), rtol=1e-12)


def test_new_zeros_filled_by_copy_inside_vmap_of_grad(T, fn):
    x, y = randn(T, 3), randn(T, 3, 5, seed=1)

    def foo(y, x):
        result = x.new_zeros((5,))
        result.copy_(y)
        return result.sum()

    same(fn.vmap(fn.grad(foo))(y, x), np.ones((3, 5)))


def test_tensor_made_inside_grad(T, fn):
    same(fn.grad(lambda a: a * T.tensor(2.0, dtype=T.float64))(t(T, 3.14)), 2.0)


def test_escaped_intermediates_hold_plain_values(T, fn):
    x = t(T, 0.3)
    escaped = []

    def foo(a):
        y = a.sin()
        escaped.append(y)
        return y

    fn.grad(foo)(x)
    close(escaped[0].sum(), np.sin(0.3), rtol=1e-12)


def test_grad_of_a_complex_input_through_conj(T, fn):
    x = T.tensor(1 + 1j)

    def foo(a):
        return a.conj().abs()

    close(fn.grad(foo)(x), (1 + 1j) / np.sqrt(2), rtol=1e-6)


def test_masked_write_of_an_unrelated_tensor(T, fn):
    def f(value):
        log_prob = T.ones((), dtype=T.float64)
        log_prob[T.zeros(()) > 0] = 0
        return value

    same(fn.grad(f)(t(T, 0.7)), 1.0)


def test_custom_function_under_grad(T, fn):
    seen = {}

    class A(T.autograd.Function):
        @staticmethod
        def forward(x, y):
            return x, y

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.set_materialize_grads(False)

        @staticmethod
        def backward(ctx, gx, gy):
            seen.setdefault("gy", []).append(gy)
            seen.setdefault("needs", []).append(tuple(ctx.needs_input_grad))
            return gx, gy

    def f(y, x):
        x, y = A.apply(x, y)
        return x ** 2

    x, y = t(T, 2.0), t(T, 3.0)
    same(fn.grad(f, argnums=1)(y, x), 4.0)
    same(fn.grad(fn.grad(f, argnums=1), argnums=1)(y, x), 2.0)
    assert all(gy is None for gy in seen["gy"])  # (y's output is unused: not materialized)
    assert seen["needs"][0] == (True, False)


def test_once_differentiable_backward_of_a_vjp(T, fn):
    class Cube(T.autograd.Function):
        @staticmethod
        def forward(x):
            return x ** 3

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.save_for_backward(inputs[0])

        @staticmethod
        @T.autograd.function.once_differentiable
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            return grad_output * 3 * x ** 2

    x = t(T, 0.5).requires_grad_()
    grad_y = t(T, 2.0).requires_grad_()
    _, vjp_fn = fn.vjp(Cube.apply, x)
    (gx,) = vjp_fn(grad_y)
    close(gx, 1.5, rtol=1e-12)
    raises(RuntimeError, "marked with @once_differentiable", gx.backward)


def test_mutating_a_captured_tensor_is_refused(T, fn, request):
    xfail_on_chainrule(T, request, "chainrule's grad does not see writes into tensors f closes over: "
                       "captured.copy_(x) runs, and leaves the captured tensor requiring grad after the transform")
    captured = randn(T, 3)

    def foo(x):
        captured.copy_(x)
        return (x * captured).sum()

    raises(RuntimeError, "mutate a captured Tensor", fn.grad(foo), t(T, [1.0, 2.0, 3.0]))


@pytest.mark.parametrize("transform", ["vmap", "grad"])
def test_requires_grad_inside_a_transform_is_refused(T, fn, transform, request):
    xfail_on_chainrule(T, request, "chainrule's transforms let f call requires_grad_() on its argument (a no-op on a "
                       "grad root; under vmap it makes the example a leaf of its own)")

    def f(x):
        x.requires_grad_()
        return x.sin().sum()

    raises(RuntimeError, r"Tensor.requires_grad_\(\)", getattr(fn, transform)(f), randn(T, 3))


def test_linearize_refuses_tangents_unlike_the_primals(T, fn):
    x_p = randn(T, 3, 1).float()
    _, jvp_fn = fn.linearize(T.sin, x_p)
    raises(RuntimeError, "to have the same argspec as the primals", jvp_fn, (x_p, x_p))
    raises(RuntimeError, "in flattened pytree doesn't match the shape", jvp_fn, x_p.unsqueeze(0))
    raises(RuntimeError, "in flattened pytree doesn't match the dtype", jvp_fn, x_p.double())
    close(jvp_fn(T.ones_like(x_p)), np.cos(values(x_p)), rtol=1e-6)


def test_jvp_composes_with_autograd_grad_and_itself(T, fn):
    x, v = t(T, [0.3, -0.7, 1.1]), t(T, [1.0, 2.0, -1.0])
    a, w = values(x), values(v)
    xr = x.clone().requires_grad_()
    _, tangent = fn.jvp(T.sin, (xr,), (v,))
    close(T.autograd.grad(tangent.sum(), xr)[0], -np.sin(a) * w, rtol=1e-12)  # d/dx of sum(cos(x) v)
    # forward over reverse: the Hessian of sum(x sin x) times v
    close(fn.jvp(fn.grad(lambda y: (y.sin() * y).sum()), (x,), (v,))[1], (2 * np.cos(a) - a * np.sin(a)) * w,
          rtol=1e-12)
    close(fn.jvp(lambda y: fn.jvp(lambda z: z ** 3, (y,), (v,))[1], (x,), (v,))[1], 6 * a * w ** 2, rtol=1e-12)
    close(fn.linearize(lambda y: fn.grad(lambda z: (z ** 3).sum())(y), x)[1](v), 6 * a * w, rtol=1e-12)


def test_hessian_of_a_tensor_that_requires_grad_is_differentiable(T, fn):
    x = t(T, [0.3, -0.7, 1.1]).requires_grad_()
    h = fn.hessian(lambda y: (y ** 3).sum())(x)
    close(h, np.diag(6 * values(x)), rtol=1e-12)
    close(T.autograd.grad(h.sum(), x)[0], np.full(3, 6.0), rtol=1e-12)
