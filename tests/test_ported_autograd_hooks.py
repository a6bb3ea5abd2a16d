"""Hooks, ported from PyTorch's test/test_autograd.py (TestAutograd): tensor hooks, retain_grad,
post-accumulate-grad hooks, grad_fn hooks and pre-hooks, and the order they run in.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import close, raises, same, values, xfail_ours
from tests.ported_autograd import nn, optim, randn


def test_hooks(T):
    x = T.ones(5, 5, requires_grad=True)
    y = (T.ones(5, 5) * 4).requires_grad_(True)
    counter = [0]

    def bw_hook(inc, grad):
        assert isinstance(grad, T.Tensor)
        counter[0] += inc

    z = x ** 2 + x * 2 + x * y + y
    x.register_hook(lambda *args: bw_hook(0, *args))
    test = z.register_hook(lambda *args: bw_hook(1, *args))
    z.backward(T.ones(5, 5), retain_graph=True)
    assert counter[0] == 1
    test2 = z.register_hook(lambda *args: bw_hook(2, *args))
    z.backward(T.ones(5, 5), retain_graph=True)
    assert counter[0] == 4
    test2.remove()
    z.backward(T.ones(5, 5), retain_graph=True)
    assert counter[0] == 5

    def bw_hook_modify(grad):
        return grad.mul(2)

    test.remove()
    z.register_hook(bw_hook_modify)
    with T.no_grad():
        y.grad.zero_()
    z.backward(T.ones(5, 5), retain_graph=True)
    same(y.grad, np.full((5, 5), 4.0))  # (x + 1) * 2
    y.register_hook(bw_hook_modify)
    with T.no_grad():
        y.grad.zero_()
    z.backward(T.ones(5, 5))
    same(y.grad, np.full((5, 5), 8.0))


def mul2(T, use_custom_function):
    if not use_custom_function:
        return lambda x: x * 2

    class Mul2(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    return Mul2.apply


@pytest.mark.parametrize("custom", [True, False])
def test_grad_fn_prehooks(T, custom):
    f = mul2(T, custom)
    a = T.tensor([1.0], requires_grad=True)
    b = f(a)
    post_counter, pre_counter = [0], [0]

    def posthook(grad_input, grad_output):
        assert pre_counter[0] == 3
        same(grad_output[0], [8.0])
        same(grad_input[0], [16.0])
        post_counter[0] += 1
        return grad_input

    def prehook(grad_output):
        pre_counter[0] += 1
        return (grad_output[0] * 2,)

    b.grad_fn.register_hook(posthook)
    b.grad_fn.register_hook(posthook)
    b.grad_fn.register_prehook(prehook)
    b.grad_fn.register_prehook(lambda x: None)
    b.grad_fn.register_prehook(prehook)
    b.grad_fn.register_prehook(prehook)
    b.grad_fn.register_prehook(lambda x: x)
    b.grad_fn.register_prehook(lambda x: None)
    b.sum().backward()
    assert post_counter[0] == 2 and pre_counter[0] == 3
    same(a.grad, [16.0])

    a = T.rand(3, 3, requires_grad=True)
    b = f(a)

    def prehook_none(grad_output):
        pre_counter[0] += 1
        return None

    b.grad_fn.register_prehook(prehook_none)
    b.sum().backward()
    assert pre_counter[0] == 4
    same(a.grad, np.full((3, 3), 2.0))


def test_grad_fn_prehooks_multiple_outputs(T):
    class DoubleMul2(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, a, y):
            ctx.a = a
            return a * x * 2, a, a * y * 2

        @staticmethod
        def backward(ctx, g1, _a, g2):
            return ctx.a * g1 * 2, None, ctx.a * g2 * 2

    counter = [0]

    def prehook3(grad_output):
        g1, ga, g2 = grad_output
        assert ga is None
        counter[0] += 1
        return (g1 * 2, None, g2 * 2)

    a, b = randn(T, 3, 3, seed=1), randn(T, 3, 3, seed=2)
    c, _, d = DoubleMul2.apply(a, 3, b)
    c.grad_fn.register_prehook(prehook3)
    (c + d).sum().backward()
    assert counter[0] == 1
    same(a.grad, np.full((3, 3), 12.0))
    same(b.grad, np.full((3, 3), 12.0))


@xfail_ours("var_mean is two nodes in chainrule (var's and mean's), one with two outputs in PyTorch")
def test_grad_fn_prehooks_multiple_outputs_var_mean(T):
    b = T.rand(3, 3, requires_grad=True)
    var, mean = T.var_mean(b, dim=0)
    (var + mean).sum().backward()
    a = b.detach().requires_grad_()
    counter = [0]

    def prehook(grad_output):
        gvar, gmean = grad_output
        counter[0] += 1
        return (gvar * 2, gmean * 2)

    var, mean = T.var_mean(a, dim=0)
    mean.grad_fn.register_prehook(prehook)
    (var + mean).sum().backward()
    assert counter[0] == 1
    close(a.grad, values(b.grad) * 2)



@pytest.mark.parametrize("custom", [True, False])
def test_grad_fn_prehooks_remove_hooks(T, custom):
    f = mul2(T, custom)
    a = T.rand(3, 3, requires_grad=True)
    b = f(a)
    counter = [0]

    def prehook(grad_output):
        counter[0] += 1

    handle = b.grad_fn.register_prehook(prehook)
    b.grad_fn.register_prehook(prehook)
    handle.remove()
    b.sum().backward()
    same(a.grad, np.full((3, 3), 2.0))
    assert counter[0] == 1

    a = T.rand(3, 3, requires_grad=True)
    b = f(a)
    counter = [0]

    def prehook1(grad_output):
        handle2.remove()
        handle3.remove()  # removing a removed hook is fine

    def prehook2(grad_output):
        counter[0] += 1

    b.grad_fn.register_prehook(prehook1)
    handle2 = b.grad_fn.register_prehook(prehook2)
    handle3 = b.grad_fn.register_prehook(prehook2)
    handle3.remove()
    b.sum().backward()
    same(a.grad, np.full((3, 3), 2.0))
    assert counter[0] == 1


def test_hook_none(T):
    class NoneGradientFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            assert ctx.needs_input_grad[0] and not ctx.needs_input_grad[1]
            return x, y

        @staticmethod
        def backward(ctx, grad_x, grad_y):
            return grad_x, None

    called = []

    def hook(grad):
        assert grad is not None
        called.append(1)

    x, y = randn(T, 5, 5), randn(T, 5, 5, seed=1, requires_grad=False)
    rx, ry = NoneGradientFunction.apply(x, y)
    rx.register_hook(hook)
    ry.register_hook(hook)
    sum(rx, ry).sum().backward()
    assert called
    same(x.grad, np.full((5, 5), 5.0))  # (sum(rx, ry) adds each row of rx to ry)


def test_hook_with_no_name(T):
    class MyHookClass:
        def __call__(self, grad):
            return grad.clone() * 3

    x = randn(T, 5)
    y = x.clone()
    y.register_hook(MyHookClass())
    y.sum().backward()
    same(x.grad, np.full(5, 3.0))


def test_retain_grad(T):
    inp = T.tensor([[0.5, -1.0, 2.0]], requires_grad=True)
    h1 = inp * 3
    out = (h1 * h1).sum()
    h1.retain_grad()
    h1.retain_grad()  # more than once is fine
    out.backward(retain_graph=True)
    same(h1.grad, values(h1) * 2)
    out.backward(retain_graph=True)
    same(h1.grad, values(h1) * 4)  # accumulated
    with T.no_grad():
        inp.grad.zero_()
    inp.retain_grad()  # a no-op on a leaf
    inp.retain_grad()
    out.backward()
    same(inp.grad, values(inp) * 18)


def test_retain_grad_inplace(T):
    a = T.tensor([1.0], requires_grad=True).clone()
    a.retain_grad()
    a.mul_(2)
    a.sum().backward()
    same(a.grad, [1.0])
    a = T.tensor([1.0], requires_grad=True).clone()
    a.retain_grad()
    a.mul_(2)
    a.mul_(2)
    a.sum().backward()
    same(a.grad, [1.0])
    # in place over a view: the retained grad follows the base's new grad_fn
    x = T.tensor([1.0], requires_grad=True).clone()
    x.retain_grad()
    x_view = x[:]
    x_view *= 2
    x *= 2
    x.sum().backward()
    same(x.grad, [1.0])
    # the base did not require grad: no hook to move
    x = T.zeros(4)
    y = x.view(2, 2)
    y.add_(T.randn(2, 2, requires_grad=True))
    assert x.requires_grad


def double_mul(T):
    class DoubleMul(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            return g1 * 2 + g2 * 3

    return DoubleMul.apply


@pytest.mark.parametrize("fn", ["custom", "var_mean"])
def test_retains_grad_inplace_multiple_outputs(T, fn):
    f = double_mul(T) if fn == "custom" else (lambda b: T.var_mean(b, dim=0))
    b = T.rand(3, 3, requires_grad=True)
    var, mean = f(b)
    var.retain_grad()
    mean.retain_grad()
    var.mul_(2)
    (var + mean).sum().backward()
    gvar, gmean = var.grad, mean.grad
    a = b.detach().requires_grad_(True)
    var, mean = f(a)
    var.mul_(2)
    expected = T.autograd.grad((var + mean).sum(), inputs=(var, mean))
    same(gvar, values(expected[0]))
    same(gmean, values(expected[1]))
    same(gvar, np.ones(gvar.shape))


def test_retain_grad_inplace_over_view(T):
    base = T.tensor([1.0], requires_grad=True).clone()
    view = base[:]
    view2 = base[:]
    view.retain_grad()
    view2.retain_grad()
    view.mul_(2)
    (view + view2).sum().backward()
    same(view.grad, [1.0])
    same(view2.grad, [1.0])


def test_tensor_hooks_inplace(T):
    count1, count2 = [0], [0]

    def fn1(grad):
        count1[0] += 1
        same(grad, [4.0])  # x2 from mul, x2 from fn2
        return grad * 2

    def fn2(grad):
        count2[0] += 1
        same(grad, [1.0])
        return grad * 2

    a = T.tensor([1.0], requires_grad=True)
    b = a.clone()
    b.register_hook(fn1)
    b.mul_(2)
    b.register_hook(fn2)
    b.sum().backward()
    assert count1[0] == 1 and count2[0] == 1
    same(a.grad, [8.0])

    count3 = [0]

    def fn3(grad):
        count3[0] += 1
        same(grad, [4.0])
        return grad * 2

    a = T.tensor([1.0], requires_grad=True)
    b = a.clone()
    b.register_hook(fn3)
    b.mul_(2)
    b.mul_(2)
    b.sum().backward()
    assert count3[0] == 1
    same(a.grad, [8.0])


@pytest.mark.parametrize("fn", ["custom", "var_mean"])
def test_tensor_hooks_inplace_multiple_outputs(T, fn):
    f = double_mul(T) if fn == "custom" else (lambda b: T.var_mean(b, dim=0))
    counts = [0, 0, 0]
    b = T.rand(3, 3, requires_grad=True)
    out1, out2 = f(b)

    def fn0(grad):
        counts[0] += 1
        same(grad, np.full(out1.shape, 2.0))

    def fn1(grad):
        counts[1] += 1
        same(grad, np.full(out1.shape, 3.0))

    def fn2(grad):
        counts[2] += 1
        same(grad, np.ones(out1.shape))

    out1.register_hook(fn0)
    out2.register_hook(fn1)
    out1.mul_(2)
    out1.register_hook(fn2)
    (out1 + out2 * 3).sum().backward()
    assert counts == [1, 1, 1]


def test_tensor_hooks_inplace_over_view(T):
    count = [0]

    def fail(grad):
        raise AssertionError("this hook must not run")

    def fn2(grad):
        count[0] += 1
        same(grad, [1.0])

    base = T.tensor([1.0], requires_grad=True).clone()
    view = base[:]
    view2 = base[:]
    view.register_hook(fail)
    view2.register_hook(fail)
    view.mul_(2)
    assert view2.grad_fn is not None  # an explicit update of view2's grad_fn
    view2.register_hook(fn2)
    (view + view2).sum().backward()
    assert count[0] == 1


def test_post_accumulate_grad_hook_on_non_leaf(T):
    leaf = T.rand(3, requires_grad=True)
    # (PyTorch: "post accumulate grad hooks cannot be registered on non-leaf tensors"; chainrule's words differ:
    # the report has the tensor.py diff)
    raises(RuntimeError, "post.accumulate.grad hooks can.*leaf tensors",
           (2.0 * leaf).register_post_accumulate_grad_hook, lambda t: None)


def test_post_accumulate_grad_hook_multiple_hooks(T):
    def hook1(tensor):
        tensor.sub_(tensor.grad)

    def hook2(tensor):
        tensor.mul_(4.0)

    tensor = T.tensor([0.25, 0.5, 0.75], requires_grad=True)
    tensor.register_post_accumulate_grad_hook(hook1)
    tensor.register_post_accumulate_grad_hook(hook2)
    tensor.sum().backward()
    same(tensor, 4.0 * (np.array([0.25, 0.5, 0.75]) - 1.0))  # both ran, in order


def test_post_accumulate_grad_hook_multiple_tensors(T):
    def hook(tensor):
        tensor.sub_(tensor.grad)

    t1 = T.tensor([0.5, 1.5, 2.5], requires_grad=True)
    t2 = T.tensor([1.0, 2.0, 3.0, 4.0, 5.0], requires_grad=True)
    t1.register_post_accumulate_grad_hook(hook)
    t2.register_post_accumulate_grad_hook(hook)
    t1.sum().backward()
    t2.sum().backward()
    same(t1, [-0.5, 0.5, 1.5])
    same(t2, [0.0, 1.0, 2.0, 3.0, 4.0])


def test_post_accumulate_grad_hook_returns_not_none(T):
    tensor = T.rand(2, 3, requires_grad=True)
    tensor.register_post_accumulate_grad_hook(lambda t: t.grad)
    raises(RuntimeError, "hooks should return None.", tensor.sum().backward)
    other = T.rand(2, 3, requires_grad=True)
    other.register_post_accumulate_grad_hook(lambda t: 5)
    raises(TypeError, "expected Variable, but hook returned 'int'", other.sum().backward)
    v = T.zeros(3, requires_grad=True)  # (the docstring's SGD step returns p.add_(...), the tensor itself: allowed)
    v.register_post_accumulate_grad_hook(lambda p: p.add_(p.grad, alpha=-0.01))
    v.backward(T.tensor([1.0, 2.0, 3.0]))
    close(v.detach(), [-0.01, -0.02, -0.03])


def test_post_accumulate_grad_hook_e2e(T):
    """An optimizer step run by each parameter's post-accumulate-grad hook gives the usual training loop's
    parameters; removing the hooks stops the updates."""
    T.manual_seed(0)
    model = nn(T).Linear(3, 2)
    inp = T.tensor(np.random.default_rng(0).random((2, 3)), dtype=T.float32)
    optims = {p: optim(T).Adam([p]) for p in model.parameters()}

    def step(param):
        optims[param].step()
        optims[param].zero_grad()

    handles = [p.register_post_accumulate_grad_hook(step) for p in model.parameters()]
    copy = nn(T).Linear(3, 2)
    with T.no_grad():
        for p, q in zip(copy.parameters(), model.parameters()):
            p.copy_(q)
    optim_copy = optim(T).Adam(copy.parameters())
    for _ in range(5):
        model(inp).sum().backward()
        copy(inp).sum().backward()
        optim_copy.step()
        optim_copy.zero_grad()
    frozen = [values(p).copy() for p in model.parameters()]
    for p, q in zip(copy.parameters(), model.parameters()):
        close(q, values(p), rtol=1e-6, atol=1e-7)
    for h in handles:
        h.remove()
    for _ in range(5):
        model(inp).sum().backward()
        copy(inp).sum().backward()
        optim_copy.step()
        optim_copy.zero_grad()
    for static, p, q in zip(frozen, copy.parameters(), model.parameters()):
        same(q, static)
        assert not np.allclose(values(p), static)


def test_post_accumulate_grad_hook_ordering(T):
    tensor = T.rand(3, requires_grad=True)

    def pre_hook(grad):
        return grad.sub(2.0)

    def acc_grad_node_pre_hook(grad_out):
        return (grad_out[0].div(5.0),)

    def post_acc_grad_hook(tensor):
        tensor.grad.add_(0.5)

    def acc_grad_node_post_hook(grad_in, grad_out):
        tensor.grad = grad_out[0].mul(10)

    acc_grad = tensor.view_as(tensor).grad_fn.next_functions[0][0]
    tensor.register_hook(pre_hook)
    acc_grad.register_prehook(acc_grad_node_pre_hook)
    tensor.register_post_accumulate_grad_hook(post_acc_grad_hook)
    acc_grad.register_hook(acc_grad_node_post_hook)
    tensor.sum().backward()
    # tensor hook, AccumulateGrad's pre-hook, post-accumulate hook, AccumulateGrad's hook:
    # ((1 - 2) / 5 + 0.5) * 10 = 3
    close(tensor.grad, [3.0, 3.0, 3.0])


def test_prehook_ordering(T):
    """A tensor's hooks run before its grad_fn's pre-hooks."""
    log = []

    def hook1(g):
        log.append(1)
        return g * 3

    def hook2(gs):
        log.append(2)
        return tuple(g * 2 for g in gs)

    a = T.tensor(1.0, requires_grad=True)
    b = a.clone()
    b.grad_fn.register_prehook(hook2)
    b.register_hook(hook1)
    b.grad_fn.register_prehook(hook2)
    acc = b.grad_fn.next_functions[0][0]
    a.register_hook(hook1)
    acc.register_prehook(hook2)
    a.register_hook(hook1)
    b.sum().backward(retain_graph=True)
    assert log == [1, 2, 2, 1, 1, 2]
    same(a.grad, 3 * 2 * 2 * 3 * 3 * 2.0)
    # grad runs the hooks of AccumulateGrad nodes too, though they do not run
    log.clear()
    T.autograd.grad(b.sum(), inputs=(a,), retain_graph=True)
    assert log == [1, 2, 2, 1, 1]
    log.clear()
    b.sum().backward(inputs=(b,))
    # a retained grad sees the tensor hooks, not the grad_fn's pre-hooks, which run after
    assert b.grad.item() == 3
    assert log[0] == 1


@xfail_ours("backward(inputs=non_leaf) runs the non-leaf's node in PyTorch (pre- and post-hooks), though no "
            "gradient goes past it; chainrule stops at the input, as autograd.grad does")
def test_backward_inputs_nonleaf_runs_its_node(T):
    a = T.tensor(1.0, requires_grad=True)
    b = a * 2
    c = b * 2
    log = []
    b.grad_fn.register_prehook(lambda g: log.append("pre"))
    b.grad_fn.register_hook(lambda gi, go: log.append("post"))
    b.register_hook(lambda g: log.append("tensor"))
    c.backward(inputs=(b,), retain_graph=True)
    assert log == ["tensor", "pre", "post"]
    assert a.grad is None
    same(b.grad, 2.0)
    log.clear()
    T.autograd.grad(c, (b,), retain_graph=True)
    assert log == ["tensor"]


def test_retains_grad_can_always_observe_tensor_prehook(T):
    def tensor_prehook(g):
        return g * 2

    a = T.tensor(1.0, requires_grad=True)
    b = a.clone()
    b.register_hook(tensor_prehook)
    b.retain_grad()
    b.register_hook(tensor_prehook)
    b.clone().backward()
    assert b.grad.item() == 4
    a = T.tensor(1.0, requires_grad=True)
    b = a.clone()
    b.retain_grad()
    b.register_hook(tensor_prehook)
    b.clone().backward()
    assert b.grad.item() == 2


def test_accumulate_grad_posthooks_can_observe_tensor_prehook(T):
    a = T.tensor(1.0, requires_grad=True)
    seen = []

    def posthook(g_out, g_in):
        seen.append(("post", g_in[0].item(), len(g_out)))

    def prehook(g_in):
        seen.append(("pre", g_in[0].item(), len(g_in)))

    b = a.clone()
    acc = b.grad_fn.next_functions[0][0]
    acc.register_hook(posthook)
    acc.register_prehook(prehook)
    a.register_hook(lambda g: g * 2)
    b.backward()
    assert seen == [("pre", 2.0, 1), ("post", 2.0, 0)]


def test_accumulate_grad_posthooks_should_not_execute(T):
    def fail(*args):
        raise RuntimeError("must not run")

    a = T.tensor(1.0, requires_grad=True)
    a.register_hook(fail)
    b = T.tensor(1.0, requires_grad=True)
    c = a.clone()
    c.grad_fn.next_functions[0][0].register_hook(fail)
    (a + b + c).sum().backward(inputs=[b])
    same(b.grad, 1.0)
    assert a.grad is None


def test_hook_edge_case_when_called_with_grad(T):
    """grad runs the tensor hooks of the nodes it reaches, but not the pre- or post-hooks of a node it
    stops at."""
    a = T.tensor(1.0, requires_grad=True)
    b = a * 2
    c = b * 2
    counts = {"tensor": 0, "pre": 0, "post": 0}

    def count(kind):
        def hook(*args):
            counts[kind] += 1
        return hook

    a.register_hook(count("tensor"))
    b.register_hook(count("tensor"))
    acc = b.grad_fn.next_functions[0][0]
    acc.register_hook(count("post"))
    acc.register_prehook(count("pre"))
    b.grad_fn.register_hook(count("post"))
    b.grad_fn.register_prehook(count("pre"))
    for run, expected in ((lambda: T.autograd.grad(c, inputs=(b,), retain_graph=True), (1, 0, 0)),
                          (lambda: T.autograd.grad(c, inputs=(a, b), retain_graph=True), (2, 1, 1)),
                          (lambda: c.backward(retain_graph=True), (2, 2, 2)),
                          (lambda: c.backward(inputs=(a, b), retain_graph=True), (2, 2, 2))):
        counts.update(tensor=0, pre=0, post=0)
        run()
        assert (counts["tensor"], counts["pre"], counts["post"]) == expected


def test_hook_edge_case_when_called_with_grad_no_accumulate_grad_posthook(T):
    """grad runs the tensor hooks of the nodes it reaches, but not the pre- or post-hooks of a node it
    stops at."""
    a = T.tensor(1.0, requires_grad=True)
    b = a * 2
    c = b * 2
    counts = {"tensor": 0, "pre": 0, "post": 0}

    def count(kind):
        def hook(*args):
            counts[kind] += 1
        return hook

    a.register_hook(count("tensor"))
    b.register_hook(count("tensor"))
    acc = b.grad_fn.next_functions[0][0]
    acc.register_prehook(count("pre"))
    b.grad_fn.register_hook(count("post"))
    b.grad_fn.register_prehook(count("pre"))
    for run, expected in ((lambda: T.autograd.grad(c, inputs=(b,), retain_graph=True), (1, 0, 0)),
                          (lambda: T.autograd.grad(c, inputs=(a, b), retain_graph=True), (2, 1, 1)),
                          (lambda: c.backward(retain_graph=True), (2, 2, 1)),
                          (lambda: c.backward(inputs=(a, b), retain_graph=True), (2, 2, 1))):
        counts.update(tensor=0, pre=0, post=0)
        run()
        assert (counts["tensor"], counts["pre"], counts["post"]) == expected


def test_hook_registration_errors(T):
    x = T.ones(2)
    # (PyTorch: "... that doesn't require gradient"; chainrule: "... that does not require grad": tensor.py)
    raises(RuntimeError, "cannot register a hook on a tensor that (doesn't|does not) require grad", x.register_hook,
           lambda g: g)
    # (PyTorch: "can't retain_grad on Tensor that has requires_grad=False"; chainrule: "retain_grad() on a tensor that
    # does not require grad": tensor.py)
    raises(RuntimeError, "retain_grad", x.retain_grad)


def test_hook_handle_as_context_manager_and_remove_twice(T):
    x = T.ones(2, requires_grad=True)
    y = x * 2
    calls = []
    with y.register_hook(lambda g: calls.append(1)) as handle:
        y.sum().backward(retain_graph=True)
    handle.remove()  # removing again is fine
    y.sum().backward()
    assert calls == [1]
    same(x.grad, [4.0, 4.0])


def test_hook_on_leaf_changes_its_grad_only(T):
    x = T.tensor([1.0, 2.0], requires_grad=True)
    x.register_hook(lambda g: g * 10)
    y = x * x
    (gx,) = T.autograd.grad(y.sum(), x, retain_graph=True)
    same(gx, [20.0, 40.0])  # grad runs the leaf's tensor hooks too
    y.sum().backward()
    same(x.grad, [20.0, 40.0])


def test_register_hook_returns_wrong_shape(T):
    x = T.ones(2, 3, requires_grad=True)
    y = x * 2
    y.register_hook(lambda g: T.ones(3))
    raises(RuntimeError, "hook '<lambda>' has changed the size of value", y.sum().backward)
