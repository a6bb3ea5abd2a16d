"""Custom autograd.Function, ported from PyTorch's test/test_autograd.py (TestAutograd): ctx.save_for_backward,
mark_dirty, mark_non_differentiable, set_materialize_grads, needs_input_grad, once_differentiable,
setup_context-style forward, non-tensor inputs and outputs.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import close, raises, same, values
from tests.ported_autograd import randn


def my_function(T, once):
    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, tensor1, pyscalar, tensor2):
            ctx.pyscalar = pyscalar
            ctx.save_for_backward(tensor1, tensor2)
            return tensor1 + pyscalar * tensor2 + tensor1 * tensor2

        @staticmethod
        def backward(ctx, grad_output):
            if once:
                assert not T.is_grad_enabled()
            var1, var2 = ctx.saved_tensors
            assert isinstance(var1, T.Tensor) and isinstance(var2, T.Tensor)
            assert isinstance(grad_output, T.Tensor)
            return grad_output + grad_output * var2, None, grad_output * ctx.pyscalar + grad_output * var1

    if once:
        MyFunction.backward = staticmethod(T.autograd.function.once_differentiable(MyFunction.backward))
    return MyFunction


@pytest.mark.parametrize("once", [False, True])
def test_function(T, once):
    x, y = randn(T, 5, 5, seed=1), randn(T, 5, 5, seed=2)
    result = my_function(T, once).apply(x, 2, y)
    close(result, values(x) + 2 * values(y) + values(x) * values(y))
    go = T.ones((), dtype=T.float64, requires_grad=True)
    result.sum().backward(go, create_graph=True)
    close(x.grad, values(y) + 1)
    close(y.grad, values(x) + 2)
    assert x.grad.grad_fn is not None and y.grad.grad_fn is not None
    if not once:  # the grads can be differentiated again, by go too
        (gg,) = T.autograd.grad(x.grad.sum(), go)
        close(gg, (values(y) + 1).sum())


def test_once_differentiable_refuses_double_backward(T):
    x, y = randn(T, 3, seed=1), randn(T, 3, seed=2)
    result = my_function(T, True).apply(x, 2, y)
    go = T.ones((), dtype=T.float64, requires_grad=True)
    result.sum().backward(go, create_graph=True)
    raises(RuntimeError, "trying to differentiate twice a function that was marked with @once_differentiable",
           x.grad.sum().backward)


def test_function_returns_input(T):
    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    for shape in [(1,), ()]:
        v = T.ones(shape, requires_grad=True)
        MyFunction.apply(v).backward()
        same(v.grad, np.full(shape, 2.0))
        with T.no_grad():
            v.grad.zero_()
        MyFunction.apply(v.clone()).backward()
        same(v.grad, np.full(shape, 2.0))


def test_function_returns_undefined_tensor(T):
    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return None

    x = T.ones(1, requires_grad=True)
    MyFunction.apply(x).backward()
    assert x.grad is None
    MyFunction.apply(x ** 2).backward()
    assert x.grad is None
    MyFunction.apply(x).sum().backward()
    assert x.grad is None
    assert T.autograd.grad(MyFunction.apply(x), x, allow_unused=True)[0] is None


@pytest.mark.parametrize("materialize", [True, False])
def test_set_materialize_grads(T, materialize):
    """An output that gets no gradient reaches backward as zeros, or as None after set_materialize_grads(False)."""
    seen = []

    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(materialize)
            return x.clone(), x.clone()

        @staticmethod
        def backward(ctx, g1, g2):
            seen.append(g2)
            return g1

    x = T.ones(2, requires_grad=True)
    a, _ = MyFunction.apply(x)
    a.sum().backward()
    if materialize:
        same(seen[0], [0.0, 0.0])
    else:
        assert seen[0] is None
    same(x.grad, [1.0, 1.0])


def test_unrelated_inputs_gradcheck(T):
    def f(x, y):
        return x * x

    x = T.tensor(np.linspace(0.1, 1, 10), requires_grad=True)
    y = T.tensor(np.linspace(1, 2, 10), requires_grad=True)
    assert T.autograd.gradcheck(f, (x, y))
    assert T.autograd.gradgradcheck(f, (x, y))


def test_custom_function_exception(T):
    class SimulateBackwardError(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            return inp.clone()

        @staticmethod
        @T.autograd.function.once_differentiable
        def backward(ctx, inp):
            raise Exception("Simulate error on backward pass")

    t1 = T.rand((3, 3), requires_grad=True)
    t2 = T.rand((3, 3), requires_grad=True)
    t3 = SimulateBackwardError.apply((t1 + t2) * (t1 + t2))
    raises(Exception, "Simulate error on backward pass", t3.sum().backward)


def test_custom_function_non_tensor_inputs_outputs(T):
    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, t1, t2, scale, t3):
            t4 = t1 + t2 * t3
            t5 = t1 * t2 + t3
            t4 *= scale
            t5 *= scale
            ctx.scale = scale
            ctx.save_for_backward(t1, t2, t3)
            return scale, t4, None, True, t5, "bar", t1

        @staticmethod
        @T.autograd.function.once_differentiable
        def backward(ctx, *grads):
            assert len(grads) == 7
            assert grads[0] is None and grads[2] is None and grads[3] is None and grads[5] is None
            scale = ctx.scale
            var1, var2, var3 = ctx.saved_tensors
            return (grads[1] * scale + grads[4] * var2 * scale + grads[6],
                    grads[1] * var3 * scale + grads[4] * var1 * scale,
                    None,
                    grads[1] * var2 * scale + grads[4] * scale)

    rng = np.random.default_rng(3)
    a1, a2, a3 = rng.random(10), rng.random(10), rng.random(10)
    t1, t2 = T.tensor(a1, requires_grad=True), T.tensor(a2, requires_grad=True)
    t3 = T.tensor(a3)
    scale = 7
    res = MyFunction.apply(t1, t2, scale, t3)
    assert res[0] == scale and res[2] is None and res[3] is True and res[5] == "bar"
    close(res[1], (a1 + a2 * a3) * scale)
    close(res[4], (a1 * a2 + a3) * scale)
    same(res[6], a1)
    T.autograd.backward([res[1].sum(), res[4].sum(), res[6].sum()])
    close(t1.grad, scale + a2 * scale + 1)
    close(t2.grad, a3 * scale + a1 * scale)
    assert t3.grad is None

    def foo(t1, t2, t3):
        res = MyFunction.apply(t1, t2, scale, t3)
        return res[1], res[4], res[6]

    assert T.autograd.gradcheck(foo, (t1, t2, t3))


def test_custom_function_no_tensors(T):
    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, t1, t2, scale, t3):
            t4 = t1 + t2 * t3
            t5 = t1 * t2 + t3
            t4 *= scale
            t5 *= scale
            return scale, t4, None, True, t5, "bar", t1

        @staticmethod
        @T.autograd.function.once_differentiable
        def backward(ctx, *args):
            return (args[0], args[1], None, args[2])

    t1, t2, t3, scale = 0.25, 0.5, 0.75, 3
    res = MyFunction.apply(t1, t2, scale, t3)
    assert res == (scale, (t1 + t2 * t3) * scale, None, True, (t1 * t2 + t3) * scale, "bar", t1)


def test_invalid_gradients(T):
    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad_output):
            return T.randn(10, dtype=T.float32)

    inp = T.randn(5, 5, dtype=T.float32, requires_grad=True)
    raises(RuntimeError, "expected shape", MyFunction.apply(inp).sum().backward)


def test_custom_function_setup_context_simple(T):
    class MySquare(T.autograd.Function):
        @staticmethod
        def forward(x):
            return x ** 2

        @staticmethod
        def setup_context(ctx, inputs, output):
            (x,) = inputs
            ctx.save_for_backward(x)

        @staticmethod
        def backward(ctx, gO):
            (x,) = ctx.saved_tensors
            return gO * 2 * x

    x = T.tensor(1.5, requires_grad=True)
    y = MySquare.apply(x)
    same(y, 2.25)
    (gx,) = T.autograd.grad(y, x)
    same(gx, 3.0)
    assert not MySquare.generate_vmap_rule
    assert hasattr(MySquare, "vmap")


def test_custom_function_setup_context_multi_output(T):
    class MySquare(T.autograd.Function):
        @staticmethod
        def forward(x):
            two_x = x.item() * 2
            return x ** 2, two_x

        @staticmethod
        def setup_context(ctx, inputs, output):
            _, two_x = output
            ctx.two_x = two_x

        @staticmethod
        @T.autograd.function.once_differentiable
        def backward(ctx, gO, _):
            return gO * ctx.two_x

    x = T.tensor(-0.75, requires_grad=True)
    y, two_x = MySquare.apply(x)
    assert two_x == -1.5
    (gx,) = T.autograd.grad(y, x)
    same(gx, -1.5)


def test_custom_function_setup_context_multi_input(T):
    class MyReshape(T.autograd.Function):
        @staticmethod
        def forward(x, shape, scale_forward, scale_backward):
            return x.reshape(shape) * scale_forward

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, shape, scale_forward, scale_backward = inputs
            ctx.scale_backward = scale_backward
            ctx.x_shape = x.shape

        @staticmethod
        def backward(ctx, gO):
            return gO.reshape(ctx.x_shape) * ctx.scale_backward, None, None, None

    for shape, new_shape, fwd, bwd in (((24,), (3, 8), 7, 11), ((2, 3, 4), (6, 4), -1, 2)):
        x = randn(T, *shape)
        y = MyReshape.apply(x, new_shape, fwd, bwd)
        same(y, values(x).reshape(new_shape) * fwd)
        (gx,) = T.autograd.grad(y.sum(), x)
        same(gx, np.full(shape, float(bwd)))


def test_mark_non_differentiable(T):
    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            output = inp > 0
            ctx.mark_non_differentiable(output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            return (grad_output * 0).to(T.float64)

    x = randn(T, 5, 5)
    mask = MyFunction.apply(x)
    assert not mask.requires_grad
    y = x.masked_fill(mask, 0)
    y.sum().backward()
    same(x.grad, (values(x) <= 0).astype(float))


def test_mark_non_differentiable_mixed(T):
    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            a = inp + 1
            b = inp + 2
            ctx.mark_non_differentiable(a)
            return a, b

        @staticmethod
        def backward(ctx, grad_a, grad_b):
            assert (grad_a == 0).all() and (grad_b == 1).all()
            return grad_b

    x = randn(T, 5, 5)
    a, b = MyFunction.apply(x)
    assert not a.requires_grad and b.requires_grad
    b.sum().backward()
    same(x.grad, np.ones((5, 5)))


def test_mark_non_differentiable_none(T):
    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            output = inp.clone()
            ctx.mark_non_differentiable(output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            return None

    x = randn(T, 5, 5)
    r = MyFunction.apply(x * x)
    (r * x).sum().backward()
    close(x.grad, values(x) ** 2)  # (no gradient through r)


def test_set_materialize_non_diff_grads(T):
    class Func(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            out0, out1 = x.clone(), x.clone()
            ctx.mark_non_differentiable(out1)
            ctx._materialize_non_diff_grads = False
            return out0, out1

        @staticmethod
        def backward(ctx, g0, g1):
            assert g1 is None
            return g0

    a = T.tensor(1.0, requires_grad=True)
    Func.apply(a)[0].backward()
    same(a.grad, 1.0)


def test_return_duplicate(T):
    class DoubleDuplicate(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            output = x * 2
            return output, output

        @staticmethod
        def backward(ctx, grad1, grad2):
            return grad1 * 2 + grad2 * 2

    def fn(x):
        a, b = DoubleDuplicate.apply(x)
        assert a is b
        return a + b

    x = randn(T, 5, 5)
    assert T.autograd.gradcheck(fn, [x])
    assert T.autograd.gradgradcheck(fn, [x])


def test_return_duplicate_inplace(T):
    class DoubleInplace(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.mul_(2)
            ctx.mark_dirty(x)
            return x, x

        @staticmethod
        def backward(ctx, grad1, grad2):
            return grad1 * 2 + grad2 * 2

    def inplace_fn(x):
        a, b = DoubleInplace.apply(x.clone())
        assert a is b
        return a + b

    x = randn(T, 5, 5)
    assert T.autograd.gradcheck(inplace_fn, [x])
    assert T.autograd.gradgradcheck(inplace_fn, [x])
    raises(RuntimeError, "", DoubleInplace.apply, x)  # a leaf that requires grad cannot be changed in place


def test_save_output_nr(T):
    x = randn(T, 10)

    class MultiOutputFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x[:5], x[5:]

        @staticmethod
        def backward(ctx, *grad):
            return T.cat(grad)

    a, b = MultiOutputFn.apply(x)
    assert b.output_nr == 1

    class TestFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, b):
            ctx.save_for_backward(b)
            return b * 2

        @staticmethod
        def backward(ctx, grad_b):
            (b,) = ctx.saved_tensors
            assert b.output_nr == 1
            return grad_b * 2

    TestFn.apply(b).sum().backward()
    same(x.grad, [0.0] * 5 + [2.0] * 5)


def test_no_grad_python_function(T):
    class MyOp(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x + 1

        @staticmethod
        def backward(ctx, dy):
            return dy

    x = T.ones(5, 5, requires_grad=True)
    with T.no_grad():
        y = MyOp.apply(x)
    assert not y.requires_grad and y.grad_fn is None
    assert x.requires_grad


def test_needs_input_grad(T):
    seen = []

    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, y, k):
            seen.append(ctx.needs_input_grad)
            return x * y * k

        @staticmethod
        def backward(ctx, g):
            seen.append(ctx.needs_input_grad)
            return g, None, None

    x, y = randn(T, 2), randn(T, 2, seed=1, requires_grad=False)
    MyFunction.apply(x, y, 3).sum().backward()
    assert seen == [(True, False, False), (True, False, False)]


def test_legacy_function_deprecation_exception(T):
    class MyFunction(T.autograd.Function):
        def forward(self, x):
            return x

        def backward(self, grad_output):
            return grad_output

    raises(RuntimeError, "Legacy autograd function with non-static forward method is deprecated",
           lambda: MyFunction()(T.randn(3, 4)))


def test_naughty_autograd_function_attribute_access(T):
    class Id(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, grad_x):
            return grad_x

    with pytest.warns(DeprecationWarning, match="should not be instantiated"):
        f = Id()
    assert isinstance(f, Id)
    x = T.zeros(1, requires_grad=True)
    raises(RuntimeError, "non-static forward method is deprecated", f, x)
    assert Id.apply(x).grad_fn.name() == "IdBackward"


def test_naughty_autograd_function_stashing_ctx(T):
    saved_ctx = []

    class Id(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x

        @staticmethod
        def backward(ctx, grad_x):
            saved_ctx.append(ctx)
            return ctx.saved_tensors

    p = T.zeros(1, requires_grad=True)
    loss = Id.apply(p)
    loss.backward(retain_graph=True)
    del loss
    # (PyTorch's test once expected an error here; with retain_graph the saved tensors stay readable)
    (saved,) = saved_ctx[0].saved_tensors
    assert saved is p


def test_custom_autograd_repeated_grad_grad(T):
    def mult1(x):
        return x.prod(dim=-1).prod(dim=-1)

    class Mult(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = mult1(x)
            ctx.save_for_backward(x, y)
            return y

        @staticmethod
        def backward(ctx, grad_output):
            x, y = ctx.saved_tensors
            return (grad_output * y)[:, None, None] / x

    x = T.ones(2, 4, 4, dtype=T.float64).requires_grad_()
    for y in (mult1(x), Mult.apply(x)):
        (gy,) = T.autograd.grad(y[0], x, create_graph=True)
        (ggy_1,) = T.autograd.grad(gy[0, 0, 0], x, retain_graph=True)
        (gy,) = T.autograd.grad(y[0], x, create_graph=True)
        (ggy_2,) = T.autograd.grad(gy[0, 0, 0], x, retain_graph=True)
        assert ggy_1[0, 0, 1].item() == ggy_2[0, 0, 1].item() == 1.0


def test_custom_autograd_no_early_free(T):
    class Double(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            y = x ** 2
            ctx.save_for_backward(x, y)
            return y

        @staticmethod
        def backward(ctx, grad_output):
            x, _ = ctx.saved_tensors
            return grad_output * 2 * x

    class Double2(Double):
        @staticmethod
        def backward(ctx, grad_output):
            x, y = ctx.saved_tensors
            return grad_output * 2 * y / x

    x = T.tensor(2.0, dtype=T.float64).requires_grad_()
    for f in (Double.apply, Double2.apply):
        assert T.autograd.gradcheck(f, x)
        assert T.autograd.gradgradcheck(f, x)
        y = f(x)
        (g1,) = T.autograd.grad(y, x, create_graph=True)
        (g2,) = T.autograd.grad(y, x)  # must not raise
        same(g1, 4.0)
        same(g2, 4.0)


def test_return_leaf(T):
    class Identity(T.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a, a + b

        @staticmethod
        def backward(ctx, grad_a, grad_b):
            return grad_a + grad_b, grad_b

    seen = []
    x, y = randn(T, 5, 5), randn(T, 5, 5, seed=1)
    q, p = Identity.apply(x, y)
    q.register_hook(lambda g: seen.append(values(g)))  # only the gradient from q's use, not x's
    (q + p + x).sum().backward()
    same(x.grad, np.full((5, 5), 3.0))
    same(y.grad, np.ones((5, 5)))
    same(seen[0], np.ones((5, 5)))


def test_return_leaf_inplace(T):
    class Inplace(T.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            ctx.mark_dirty(a)
            return a.add_(b), b + 2

        @staticmethod
        def backward(ctx, grad_a, grad_b):
            return grad_a, grad_a + grad_b

    x = randn(T, 5, 5, requires_grad=False)
    y = randn(T, 5, 5, seed=1)
    q, p = Inplace.apply(x, y)
    assert q is x
    assert q.requires_grad and q.grad_fn is not None
    q.sum().backward()
    same(y.grad, np.ones((5, 5)))


def test_save_none_for_backward(T):
    class MyFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            ctx.save_for_backward(None, inp, None)
            return inp * inp

        @staticmethod
        def backward(ctx, grad_output):
            n1, inp, n2 = ctx.saved_tensors
            assert n1 is None and n2 is None
            return 2 * inp * grad_output

    x = randn(T, 5, 5)
    MyFn.apply(x).sum().backward()
    same(x.grad, 2 * values(x))


def test_too_many_grads(T):
    class MyFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            return inp

        @staticmethod
        def backward(ctx, grad_output):
            return grad_output, None, None

    x = randn(T, 5, 5)
    MyFn.apply(x).sum().backward()
    same(x.grad, np.ones((5, 5)))


def test_dep_nograd(T):
    class F1(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            out = T.randn(inp.size())
            ctx.mark_non_differentiable(out)
            return inp, out

        @staticmethod
        def backward(ctx, grad_output, ignored):
            return grad_output

    class F2(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp, ignored):
            return inp

        @staticmethod
        def backward(ctx, grad_output):
            return grad_output, None

    x = randn(T, 5)
    a, b = F1.apply(x)
    b = b + 1
    assert a.requires_grad and not b.requires_grad
    c = F2.apply(a, b)
    c.backward(T.ones(c.size(), dtype=T.float64))
    same(x.grad, np.ones(5))


def test_simple_reentrant(T):
    y_data = randn(T, 2, 2, seed=7, requires_grad=False)

    class Reenter(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            with T.enable_grad():
                ctx.x = x.detach().requires_grad_(True)
                ctx.y = y_data.detach().requires_grad_(True)
                ctx.output_var = ctx.x * ctx.y
            return ctx.output_var.detach()

        @staticmethod
        def backward(ctx, grad_output):
            with T.enable_grad():
                ctx.output_var.sum().backward()
            return ctx.x.grad * grad_output

    x = randn(T, 2, 2)
    Reenter.apply(x).sum().backward()
    same(x.grad, values(y_data))
