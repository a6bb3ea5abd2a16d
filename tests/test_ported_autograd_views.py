"""Views, custom Functions that write in place, the graph's Node API and reentrant backward, ported from
PyTorch's test/test_autograd.py (TestAutograd).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import close, raises, same, values, xfail_ours
from tests.ported_autograd import randn


def check_views_codegen(T, grad_mode, requires_grad, errors):
    """view_as and unbind outputs made in grad_mode, then written in place: which writes are refused."""
    def check(fn, error):
        if error is None:
            fn()
        else:
            raises(RuntimeError, error, fn)

    inp = T.rand(2, requires_grad=requires_grad).clone()
    with T.set_grad_enabled(grad_mode):
        out = inp.view_as(inp)
    assert out._is_view()
    check(lambda: out.add_(1), errors[0])
    inp = T.rand(2, requires_grad=requires_grad).clone()
    with T.set_grad_enabled(grad_mode):
        outs = inp.unbind()
    assert outs[0]._is_view() and outs[1]._is_view()
    check(lambda: outs[0].add_(1), errors[1])
    check(lambda: outs[1].add_(1), errors[2])


def test_autograd_views_codegen(T):
    check_views_codegen(T, True, False, (None, None, None))


def test_autograd_views_codegen_multiple_views(T):
    # (PyTorch 2.13 names the node "Unbind"; its newer test says "UnbindBackward0")
    check_views_codegen(T, True, True, (None, "Output 0 of Unbind(Backward0)? is a view and is being modified inplace.",
                                        "Output 1 of Unbind(Backward0)? is a view and is being modified inplace."))


@pytest.mark.parametrize("requires_grad", [True, False])
def test_autograd_views_codegen_no_grad(T, requires_grad):
    error = "A view was created in no_grad mode and is being modified inplace" if requires_grad else None
    check_views_codegen(T, False, requires_grad, (error,) * 3)


def test_inplace_on_unbind_output_gradient(T):
    """An output of unbind refuses a recorded write (above); one under no_grad goes through to the base, and the
    gradient then reads the values written."""
    x = T.ones(2, requires_grad=True)
    inp = x.clone()
    outs = inp.unbind()
    raises(RuntimeError, "is a view and is being modified inplace", outs[0].mul_, 3)
    with T.no_grad():
        outs[0].mul_(3)
    same(inp, [3.0, 1.0])
    (inp * inp).sum().backward()
    same(x.grad, [6.0, 2.0])


def test_inplace_on_a_view_of_a_base_without_grad(T):
    a = T.rand(1, 2)
    b = T.rand(1, requires_grad=True)
    a.select(1, 0).copy_(b)  # works: a now has b's history
    assert a.requires_grad
    a.sum().backward()
    same(b.grad, [1.0])


def test_autograd_print_tensor(T):
    a = T.ones(1, requires_grad=True)
    assert repr(a) == "tensor([1.], requires_grad=True)"
    assert repr(a.clone()) == "tensor([1.], grad_fn=<CloneBackward0>)"

    class Func(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, x):
            return x

    assert repr(Func.apply(a)) == "tensor([1.], grad_fn=<FuncBackward>)"


def test_autograd_node_isinstance(T):
    Node = T.autograd.graph.Node
    a = T.rand(3, 3, requires_grad=True)
    b = a.exp()
    assert isinstance(b.grad_fn, Node)
    assert issubclass(type(b.grad_fn), Node)
    assert Node not in type(b.grad_fn).mro()
    assert isinstance(b.grad_fn.next_functions[0][0], Node)
    assert not isinstance(None, Node) and not isinstance(1, Node) and not isinstance(Node, Node)
    assert issubclass(Node, Node)
    seen = []

    class Func(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            seen.append(isinstance(ctx, Node))
            return x

        @staticmethod
        def backward(ctx, x):
            seen.append(isinstance(ctx, Node))
            return x

    out = Func.apply(a)
    assert isinstance(out.grad_fn, Node) and issubclass(type(out.grad_fn), Node)
    out.sum().backward()
    assert seen == [True, True]


def test_custom_function_saved_tensors_on_grad_fn(T):
    def make(save):
        class MyFn(T.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                if save:
                    ctx.save_for_backward(x, None)
                return x

            @staticmethod
            def backward(ctx, g):
                return g

        return MyFn

    a = randn(T, 5)
    y = make(True).apply(a)
    saved = y.grad_fn.saved_tensors
    assert saved[0] is a and saved[1] is None
    y.sum().backward()
    raises(RuntimeError, r"Trying to backward through the graph a second time \(or directly access saved tensors",
           lambda: y.grad_fn.saved_tensors)
    assert make(False).apply(a).grad_fn.saved_tensors == ()


def test_custom_function_inplace(T):
    called = [0]

    class MyAdder(T.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            a.add_(b)
            ctx.mark_dirty(a)
            return a

        @staticmethod
        def backward(ctx, grad):
            called[0] += 1
            return grad, grad

    a, b = T.ones(2, requires_grad=True), T.ones(2, requires_grad=True)
    c = MyAdder.apply(a.clone(), b)
    same(c, [2.0, 2.0])
    c.sum().backward()
    assert called[0] == 1
    same(a.grad, [1.0, 1.0])
    same(b.grad, [1.0, 1.0])
    called[0] = 0
    c = MyAdder.apply(a.clone(), b)
    c += 2
    c.sum().backward()
    assert called[0] == 1
    same(b.grad, [2.0, 2.0])
    called[0] = 0
    c = MyAdder.apply(a.clone().view_as(a), b)
    c.sum().backward()
    assert called[0] == 1
    same(a.grad, [3.0, 3.0])


def test_custom_function_inplace_on_view_of_leaf(T):
    class Func(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            inp.add_(1)
            ctx.mark_dirty(inp)
            return inp

        @staticmethod
        def backward(ctx, gO):
            return gO

    a = T.tensor([1.0, 2.0], requires_grad=True)
    raises(RuntimeError, "a view of a leaf Variable that requires grad", Func.apply, a.view_as(a))


def test_custom_function_mark_dirty_leaf(T):
    class Func(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            inp.add_(1)
            ctx.mark_dirty(inp)
            return inp

        @staticmethod
        def backward(ctx, gO):
            return gO

    a = T.tensor([1.0, 2.0], requires_grad=True)
    raises(RuntimeError, "a leaf Variable that requires grad", Func.apply, a)


def test_reentrant_with_non_leaf_variable_hook(T):
    param = T.tensor(np.linspace(0.5, 1.5, 10), requires_grad=True)
    handle = None

    def manual_increase_gradient(grad):
        handle.remove()
        with T.enable_grad():
            g = grad.detach().requires_grad_()
            out = ((g * 2) + 5).sum()
            out.backward()
        return g.grad + grad

    tmp = param * param
    handle = tmp.register_hook(manual_increase_gradient)
    tmp.sum().backward()
    close(param.grad, 6 * values(param))


def test_reentrant_with_leaf_variable_hook(T):
    param = T.tensor(np.linspace(0.5, 1.5, 10), requires_grad=True)
    handle = None

    def add_gradient_penalty_to_grad(grad):
        handle.remove()
        old_param_grad = grad
        param.grad = None
        with T.enable_grad():
            g = grad.detach().requires_grad_()
            new_param = param.detach().requires_grad_()
            out = ((g * 2) + new_param).sum()
            out.backward()
        res = g.grad + grad
        param.grad = old_param_grad
        return res

    handle = param.register_hook(add_gradient_penalty_to_grad)
    (param * param).sum().backward()
    # the hook set .grad to 2 p itself, then returned 2 + 2 p, which is added to it
    close(param.grad, 4 * values(param) + 2)


def test_reentrant_child_error(T):
    class SimulateBackwardError(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            return inp.clone()

        @staticmethod
        def backward(ctx, g):
            raise Exception("Simulate error on backward pass")

    a = T.rand(3, 3, requires_grad=True)
    c = a * a
    b = T.rand(3, 3, requires_grad=True)
    reentrant_root = SimulateBackwardError.apply(b * b).sum()

    class ReentrantFunc(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            return inp.clone()

        @staticmethod
        def backward(ctx, grad):
            reentrant_root.backward()
            return grad

    d = ReentrantFunc.apply(c)
    raises(Exception, "Simulate error", d.sum().backward)


def test_reentrant_priority(T):
    order = []

    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, x):
            order.append("MyFunction")
            return x

    class Reentrant(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            with T.enable_grad():
                ctx.x = x.detach().requires_grad_(True) - 1
            return ctx.x.detach()

        @staticmethod
        def backward(ctx, x):
            order.append("Reentrant")
            if ctx.x < 0:
                return x
            with T.enable_grad():
                Reentrant.apply(ctx.x).backward()
            return x

    a = MyFunction.apply(T.tensor(6.0, requires_grad=True))
    b = Reentrant.apply(T.tensor(9.0, requires_grad=True))
    (a * b).backward()
    assert len(order) == 11 and order.count("Reentrant") == 10 and order[-1] == "MyFunction"


def test_deep_reentrant(T):
    class DeepReentrant(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            with T.enable_grad():
                ctx.x = x.detach().requires_grad_(True) - 1
            return ctx.x.detach()

        @staticmethod
        def backward(ctx, x):
            if ctx.x < 0:
                return x
            with T.enable_grad():
                DeepReentrant.apply(ctx.x).sum().backward()
            return x

    # (PyTorch's test goes 2000 deep, for its escape from stack overflow to worker threads; chainrule runs reentrant
    # passes on the calling thread, within Python's recursion limit)
    v = T.tensor(40.0, requires_grad=True)
    DeepReentrant.apply(v).sum().backward()
    same(v.grad, 1.0)


def test_var_mean_differentiable(T):
    rng = np.random.default_rng(2)
    data = rng.standard_normal((3, 4, 5, 6, 2, 3))
    input1 = T.tensor(data, requires_grad=True)
    input2 = T.tensor(data, requires_grad=True)
    var1, mean1 = T.var_mean(input1, dim=[2, 4], keepdim=False)
    var2, mean2 = input2.var(dim=[2, 4], keepdim=False), input2.mean(dim=[2, 4], keepdim=False)
    grad = T.tensor(rng.standard_normal((3, 4, 6, 3)))
    r1, r2 = var1 * var1 * mean1 * mean1, var2 * var2 * mean2 * mean2
    close(r1, values(r2), rtol=1e-12)
    T.autograd.backward(r1, grad)
    T.autograd.backward(r2, grad)
    close(input1.grad, values(input2.grad), rtol=1e-12)


def test_pow_zero_tensor_gradient(T):
    for size, exponent in (((10,), T.zeros(10)), ((10, 10), T.zeros(10, 10)), ((10,), 0)):
        inp = T.zeros(*size, requires_grad=True)
        inp.pow(exponent).sum().backward()
        same(inp.grad.abs().sum(), 0.0)


def test_variable_traverse_and_grad_fn_after_gc(T):
    import gc

    def get_out():
        inp = randn(T, 10)
        tmp = inp.view(10, 1)
        out = tmp.view(10)
        cycle = [tmp]
        cycle.append(cycle)
        return out, inp

    out, inp = get_out()
    gc.collect()
    out.backward(T.ones(10, dtype=T.float64))
    same(inp.grad, np.ones(10))


@xfail_ours("no error for an in-place write on a view made by a custom Function (PyTorch: 'This view was created "
            "inside a custom Function'); chainrule's Function outputs are not views")
def test_inplace_not_requires_grad(T):
    class MyFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            return inp.view_as(inp)

        @staticmethod
        def backward(ctx, grad):
            return grad

    view_a = MyFn.apply(T.rand(1, 2))
    b = T.rand(1, requires_grad=True)
    raises(RuntimeError, "This view was created inside a custom Function", lambda: view_a.add_(b))
