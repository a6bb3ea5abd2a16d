"""Saved-tensor hooks, multi-grad hooks, gradcheck and assorted backward behaviour, ported from PyTorch's
test/test_autograd.py (TestAutograd, TestAutogradDeviceType on the CPU).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import functools
import warnings

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values
from tests.ported_autograd import nn, randn


def test_saved_tensors_hooks_count_pack_and_unpack(T):
    counts = {"pack": 0, "unpack": 0}

    def pack(x):
        counts["pack"] += 1
        return x

    def unpack(x):
        counts["unpack"] += 1
        return x

    x = T.ones(4, requires_grad=True)
    y = T.ones(4)
    with T.autograd.graph.saved_tensors_hooks(pack, unpack):
        out = x * y  # saves y only (x's gradient needs y)
        assert counts == {"pack": 1, "unpack": 0}
        out.sum().backward()
        assert counts == {"pack": 1, "unpack": 1}
    same(x.grad, np.ones(4))


def test_saved_tensors_hooks_replace_the_saved_value(T):
    a = T.tensor([1.0, 2.0, 3.0], requires_grad=True)
    with T.autograd.graph.saved_tensors_hooks(lambda x: x * 2, lambda x: x):
        y = a * a
    y.sum().backward()
    same(a.grad, [4.0, 8.0, 12.0])  # both saved copies of a doubled: 2a + 2a
    a.grad = None
    with T.autograd.graph.saved_tensors_hooks(lambda x: x.detach().numpy().copy(), lambda x: T.tensor(x) / 2):
        y = a * a
    y.sum().backward()
    same(a.grad, [1.0, 2.0, 3.0])


def test_saved_tensors_hook_version_counter_not_shared(T):
    a = T.tensor(1.0, requires_grad=True)
    a_replacement = a.clone()
    seen = []

    class Test(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx, grad_output):
            (x,) = ctx.saved_tensors
            before = a._version
            x.add_(1)
            seen.append(a._version == before)
            return grad_output

    with T.autograd.graph.saved_tensors_hooks(lambda x: a_replacement, lambda x: x):
        b = Test.apply(a)
    b.backward()
    assert seen == [True]
    same(a.grad, 1.0)


def test_default_saved_tensors_hooks_double_backward(T):
    data = np.array([0.5, -1.0, 2.0])
    with T.autograd.graph.saved_tensors_hooks(lambda x: x, lambda x: x):
        a = T.tensor(data, requires_grad=True)
        (g,) = T.autograd.grad((a ** 3).sum(), (a,), create_graph=True)
        g.sum().backward()
        close(a.grad, 6 * data)
    with T.autograd.graph.saved_tensors_hooks(lambda x: 2 * x, lambda x: x):
        a = T.tensor(data, requires_grad=True)
        s = (a ** 3).sum()
    (g,) = T.autograd.grad(s, (a,), create_graph=True)
    g.sum().backward()
    close(a.grad, 6 * 2 * data)  # a is saved once, doubled


def test_pack_hook_with_inplace_modification_should_fail(T):
    a = T.randn(5, requires_grad=True)

    def inc(x):
        x += 1
        return x

    with T.autograd.graph.saved_tensors_hooks(inc, lambda x: x):
        raises(RuntimeError, "A saved tensor pack hook is modifying its input in place.", T.exp, a)


def test_wrapped_number_saved_tensors_hooks(T):
    def err_hook(x):
        raise RuntimeError("this hook should not be called")

    with T.autograd.graph.saved_tensors_hooks(err_hook, err_hook):
        a = T.randn(5, requires_grad=True)
        out = (a * 3).sum()
        (g,) = T.autograd.grad(out, (a,))
    same(g, np.full(5, 3.0))


def test_disable_saved_tensors_hooks(T):
    with T.autograd.graph.disable_saved_tensors_hooks("saved tensors hooks are off here"):
        raises(RuntimeError, "saved tensors hooks are off here",
               lambda: T.autograd.graph.saved_tensors_hooks(lambda x: x, lambda x: x).__enter__())
    with T.autograd.graph.saved_tensors_hooks(lambda x: x, lambda x: x):
        pass


def test_save_on_cpu(T):
    with T.autograd.graph.save_on_cpu(pin_memory=False):
        a = randn(T, 5)
        y = a * a
    y.sum().backward()
    same(a.grad, 2 * values(a))


def test_saved_tensors_hooks_on_custom_function(T):
    packed = []

    class Square(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    def pack(x):
        packed.append(tuple(x.shape))
        return x * 3

    with T.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        x = T.tensor([1.0, -2.0], requires_grad=True)
        y = Square.apply(x)
    assert packed == [(2,)]
    y.sum().backward()
    same(x.grad, [6.0, -12.0])  # backward sees the packed 3x


def mul2(T):
    class Foo(T.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            return a.clone()

        @staticmethod
        def backward(ctx, gO):
            return gO

    return Foo.apply


def test_multi_grad_all_hooks(T):
    t1, t2, t3, t4 = (T.rand(2, requires_grad=True) for _ in range(4))
    t1 = t1.mul(2)
    t2 = mul2(T)(t2)
    t4 = t4.clone()
    res, count = [None] * 4, [0]

    def hook(grads):
        count[0] += 1
        res[:] = [g is not None for g in grads]

    handle = T.autograd.graph.register_multi_grad_hook((t1, t2, t3, t4), hook)
    out = t2 * t3
    out.sum().backward(inputs=(t2, t3), retain_graph=True)
    assert count[0] == 1 and res == [False, True, True, False]
    out.sum().backward(inputs=(t1, t4), retain_graph=True)
    assert count[0] == 1
    out.sum().backward(inputs=(t1, t3), retain_graph=True)
    assert count[0] == 2 and res == [False, False, True, False]

    class Func(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, gO):
            raise RuntimeError("error message")

    out = Func.apply(t2) * t3
    raises(RuntimeError, "error message", out.sum().backward, inputs=(t2, t3), retain_graph=True)
    assert count[0] == 2
    handle.remove()
    out.sum().backward(inputs=(t1, t3), retain_graph=True)
    assert count[0] == 2


def test_multi_grad_all_hooks_values(T):
    a, b = T.tensor([1.0, 2.0], requires_grad=True), T.tensor([3.0], requires_grad=True)
    seen = []
    T.autograd.graph.register_multi_grad_hook((a, b), lambda grads: seen.append([values(g) for g in grads]))
    (a.sum() * b * 2).sum().backward()
    assert len(seen) == 1
    same(seen[0][0], [6.0, 6.0])
    same(seen[0][1], [6.0])


def test_multi_grad_any_hooks(T):
    N = nn(T)
    hook_id = 0
    any_hook_handles = []
    hook_order = []

    def hook(i, *unused):
        hook_order.append(i)

    class MultiOutputModule(N.Module):
        def __init__(self):
            super().__init__()
            self.lin = N.Linear(3, 3)

        def forward(self, x):
            nonlocal hook_id
            z = self.lin(x)
            out = T.sin(z), T.cos(z)
            z.register_hook(functools.partial(hook, hook_id))
            hook_id += 1
            any_hook_handles.append(T.autograd.graph.register_multi_grad_hook(out, functools.partial(hook, hook_id),
                                                                               mode="any"))
            hook_id += 1
            return out

    class Model(N.Module):
        def __init__(self):
            super().__init__()
            self.mod1 = MultiOutputModule()
            self.mod2 = MultiOutputModule()

        def forward(self, x):
            y = self.mod1(x)
            return self.mod2(y[0] + y[1])

    model = Model()
    inp = T.randn((2, 3))
    out = model(inp)
    (out[0] + out[1]).sum().backward()
    assert len(any_hook_handles) == 2
    assert hook_order == [3, 2, 1, 0]  # each any-hook once, before the module's tensor hook
    hook_id = 0
    hook_order.clear()
    any_hook_handles.clear()
    out = model(inp)
    for handle in any_hook_handles:
        handle.remove()
    (out[0] + out[1]).sum().backward()
    assert hook_order == [2, 0]


def test_multi_grad_hooks_invalid_mode(T):
    t1, t2 = T.rand(2, requires_grad=True), T.rand(2, requires_grad=True)
    raises(ValueError, r"Expects mode to be one of \('all', 'any'\) but got foo",
           T.autograd.graph.register_multi_grad_hook, (t1, t2), lambda _: None, mode="foo")


def test_gradcheck_single_input(T):
    for fast_mode in (True, False):
        x = T.tensor(np.linspace(0.1, 1.0, 10), requires_grad=True)
        assert T.autograd.gradcheck(lambda inp: inp.mul(5), x, fast_mode=fast_mode)
        assert T.autograd.gradgradcheck(lambda inp: inp.mul(5), x, fast_mode=fast_mode)


def grad_plus_offset(T):
    def fn(x):
        y = x.clone()
        y.register_hook(lambda g: g + 1e-2)
        return y
    return fn


@pytest.mark.parametrize("fast_mode", [True, False])
def test_gradcheck_failures(T, fast_mode):
    """What each gradcheck failure raises (a GradcheckError, a RuntimeError) and returns with raise_exception=False."""
    x = T.ones(2, 2, dtype=T.float64, requires_grad=True)
    fn = grad_plus_offset(T)
    err = raises(RuntimeError, "", T.autograd.gradcheck, fn, (x,), fast_mode=fast_mode)
    assert type(err).__name__ == "GradcheckError"
    assert not T.autograd.gradcheck(fn, (x,), raise_exception=False, fast_mode=fast_mode)

    def fn2(x):
        raise RuntimeError("Not a GradcheckError!")

    raises(RuntimeError, "Not a GradcheckError!", T.autograd.gradcheck, fn2, (x,), fast_mode=fast_mode,
           raise_exception=False)
    # no input requires grad: raises even with raise_exception=False
    raises(ValueError, "", T.autograd.gradcheck, lambda x: x, (T.rand(10),), raise_exception=False,
           fast_mode=fast_mode)
    # a float32 input: a loose check passes
    x32 = T.ones(1, dtype=T.float32, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert T.autograd.gradcheck(lambda x: x, (x32,), atol=1e-1, fast_mode=fast_mode)
    # no differentiable output, but the numerical gradient is not zero
    x1 = T.ones((1,), dtype=T.float64, requires_grad=True)
    raises(RuntimeError, "", T.autograd.gradcheck, lambda x: T.tensor([x]), x1, fast_mode=fast_mode)
    assert not T.autograd.gradcheck(lambda x: T.tensor([x]), x1, raise_exception=False, fast_mode=fast_mode)
    assert T.autograd.gradcheck(lambda x: (), (x1,), fast_mode=fast_mode)
    # a backward that adds a constant instead of scaling grad_output
    raises(RuntimeError, "", T.autograd.gradcheck, fn, (x1,), atol=1e-1, fast_mode=fast_mode)
    assert not T.autograd.gradcheck(fn, (x1,), atol=1e-1, raise_exception=False, fast_mode=fast_mode)


@pytest.mark.parametrize("fast_mode", [True, False])
def test_gradcheck_failure_words(T, fast_mode):
    x = T.ones(2, 2, dtype=T.float64, requires_grad=True)
    fn = grad_plus_offset(T)
    raises(RuntimeError, "Jacobian mismatch for output 0 with respect to input 0", T.autograd.gradcheck, fn, (x,),
           fast_mode=fast_mode)
    raises(ValueError, "at least one input tensor to require gradient", T.autograd.gradcheck, lambda x: x,
           (T.rand(10),), raise_exception=False, fast_mode=fast_mode)
    x1 = T.ones((1,), dtype=T.float64, requires_grad=True)
    raises(RuntimeError, "Numerical gradient for function expected to be zero", T.autograd.gradcheck,
           lambda x: T.tensor([x]), x1, fast_mode=fast_mode)
    raises(RuntimeError, "backward not multiplied by grad_output", T.autograd.gradcheck, fn, (x1,), atol=1e-1,
           fast_mode=fast_mode)


def test_gradcheck_warns_of_float32_inputs(T):
    # (chainrule's gradcheck copies its inputs to float64 all the same, so the check does not fail for this reason)
    with pytest.warns(UserWarning, match="Input #0 requires gradient and is not a double precision"):
        T.autograd.gradcheck(lambda x: x, (T.ones(1, dtype=T.float32, requires_grad=True),), atol=1e-1)


def test_gradcheck_refuses_stride_0_inputs(T):
    raises(RuntimeError, "The 0th input has a dimension with stride 0", T.autograd.gradcheck, lambda x: x,
           (T.ones(1, dtype=T.float64, requires_grad=True).expand((2, 2)),), raise_exception=False)


@pytest.mark.parametrize("fast_mode", [True, False])
def test_gradcheck_output_shape_or_dtype_depend_on_values(T, fast_mode):
    a = T.ones(1, dtype=T.float64, requires_grad=True)

    def fn(x):
        return T.cat([x, x]) if T.all(x >= 1) else x

    raises(AssertionError, "return outputs with the same shape when inputs are perturbed", T.autograd.gradcheck,
           fn, (a,), fast_mode=fast_mode)

    def fn2(x):
        return x.to(T.float32) if T.all(x >= 1) else x

    raises(AssertionError, "return outputs with the same dtype when inputs are perturbed", T.autograd.gradcheck,
           fn2, (a,), fast_mode=fast_mode)


def test_gradcheck_nondeterministic(T):
    class NonDetFunc(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, jitter=0.0):
            ctx._jitter = jitter
            return x

        @staticmethod
        def backward(ctx, grad_out):
            return NonDetFunc.apply(grad_out, ctx._jitter) * (1 + T.rand_like(grad_out) * ctx._jitter), None

    inp = randn(T, 5, 5)
    for fast_mode in (True, False):
        T.autograd.gradcheck(lambda x: NonDetFunc.apply(x, 0.0), inp, check_batched_grad=False, fast_mode=fast_mode)
        raises(RuntimeError, "Backward is not reentrant", T.autograd.gradcheck, lambda x: NonDetFunc.apply(x, 1e-6),
               inp, check_batched_grad=False, fast_mode=fast_mode)
        T.autograd.gradcheck(lambda x: NonDetFunc.apply(x, 1e-6), inp, nondet_tol=1e-5, check_batched_grad=False,
                             fast_mode=fast_mode)


def test_gradcheck_complex_non_complex_outputs(T):
    a = T.ones(2, 2, dtype=T.float64, requires_grad=True)
    b = T.ones(2, 2, dtype=T.float64, requires_grad=True)
    assert T.autograd.gradcheck(lambda x, y: (T.complex(x, y), x + 1), (a, b))
    c = T.ones(2, 2, dtype=T.complex128, requires_grad=True)
    assert T.autograd.gradcheck(lambda z: (z, T.real(z)), (c,))


def test_grad_mode_restored_reentrant(T):
    modes = []

    class MyFunction(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            return inp.clone()

        @staticmethod
        def backward(ctx, go):
            original = T.is_grad_enabled()
            with T.enable_grad():
                foo = T.rand(go.size(), dtype=T.float64, requires_grad=True)
                (grad,) = T.autograd.grad(foo ** 3, foo, grad_outputs=go)
                modes.append(T.is_grad_enabled())
            modes.append(T.is_grad_enabled() == original)
            return grad

    inp = T.rand(3, dtype=T.float64, requires_grad=True)
    MyFunction.apply(inp).sum().backward()
    MyFunction.apply(inp).sum().backward(create_graph=True)
    assert modes == [True, True, True, True]


def test_power_function(T):
    a = T.tensor([0.0, 0.0, 0.0])
    b = T.tensor([-1.0, 0.0, 1.0], requires_grad=True)
    T.sum(a ** b).backward()
    same(b.grad, [-np.inf, 0.0, 0.0])
    b = T.tensor([-1.0, 0.0, 1.0], requires_grad=True)
    T.sum(0 ** b).backward()
    same(b.grad, [-np.inf, 0.0, 0.0])


def test_custom_function_error(T):
    class BadFw(T.autograd.Function):
        @staticmethod
        def backward(ctx, foo):
            return foo

    class BadBw(T.autograd.Function):
        @staticmethod
        def forward(ctx, foo):
            return foo.clone()

    class BadBw2(T.autograd.Function):
        @staticmethod
        def forward(ctx, foo):
            return foo.clone()

        @staticmethod
        def backward(ctx, foo):
            return foo

        @staticmethod
        def vjp(ctx, foo):
            return foo

    inp = T.rand(1, requires_grad=True)
    raises(NotImplementedError, "must implement the forward", BadFw.apply, inp)
    raises(RuntimeError, "must implement either the backward", BadBw.apply(inp).sum().backward)
    raises(RuntimeError, "Implementing both 'backward' and 'vjp'", BadBw2.apply(inp).sum().backward)


def test_custom_function_local_inplace(T):
    class MyFn(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp, inplace):
            view = inp.clone()[:3]
            if inplace:
                view += 2
            return view

        @staticmethod
        def backward(ctx, grad):
            return grad, None

    base = T.rand(10, requires_grad=True)
    assert type(MyFn.apply(base, False).grad_fn).__name__ == "MyFnBackward"
    foo = MyFn.apply(base, True)
    assert type(foo.grad_fn).__name__ == "MyFnBackward"
    same(foo, values(base)[:3] + 2)


def test_setup_context_when_forward_has_default_args(T):
    class PowFunction(T.autograd.Function):
        @staticmethod
        def forward(x, y=3):
            return T.pow(x, y)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, y = inputs
            ctx.save_for_backward(x)
            ctx.y = y

        @staticmethod
        def backward(ctx, gO):
            (x,) = ctx.saved_tensors
            return gO * ctx.y * T.pow(x, ctx.y - 1), None

    x = T.tensor(2.0, requires_grad=True)
    y = PowFunction.apply(x)
    same(y, 8.0)
    same(T.autograd.grad(y, x)[0], 12.0)


def test_integer_outputs(T):
    inp = T.rand(4, requires_grad=True)
    for out in (inp.argmax(), inp.argmin(), inp.argsort(),
                T.searchsorted(inp.sort()[0], T.rand((), requires_grad=True)),
                T.bucketize(T.rand(5, 5, requires_grad=True), T.linspace(0, 1.0, steps=100, requires_grad=True)),
                T.empty(5).requires_grad_().count_nonzero()):
        # (PyTorch's test reads out.dtype.is_floating_point; chainrule's tensor dtypes are NumPy's, without it)
        assert not dtype_name(out).startswith(("float", "complex")) and not out.requires_grad


def test_unique_outputs_requires_grad(T):
    inp = T.rand(4, requires_grad=True)
    for res in (T.unique(inp, return_inverse=True, return_counts=True), T.unique(inp, sorted=True),
                T.unique_consecutive(inp, return_inverse=True, return_counts=True)):
        res = res if isinstance(res, tuple) else (res,)
        assert res[0].requires_grad
        assert not any(r.requires_grad for r in res[1:])


def test_input_buffer_accum(T):
    """A gradient the user passed in is never changed in place by the engine's sums."""
    leaf = T.rand(2, 2, requires_grad=True)
    out1, out2 = leaf.clone(), leaf * 1
    g1 = T.rand(2, 2)
    g1_original = values(g1).copy()
    g2 = T.rand(2, 2)
    T.autograd.backward((out1, out2), (g1, g2))
    same(g1, g1_original)
    close(leaf.grad, g1_original + values(g2))


@pytest.mark.parametrize("name", ["min", "max", "median", "nanmedian"])
def test_min_max_median_backprops_to_all_values(T, name):
    x = T.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0], requires_grad=True)
    getattr(T, name)(x).backward()
    same(x.grad.sum(), 1.0)
    assert (x.grad == 1 / 3).sum().item() == 3


@pytest.mark.parametrize("name", ["min", "max", "nanmedian"])
def test_min_max_backprop_to_all_nans(T, name):
    x = T.tensor([float("nan")] * 3, requires_grad=True)
    getattr(T, name)(x).backward()
    same(x.grad, np.full(3, 1 / 3, dtype=np.float32))


def test_median_backprops_to_all_nans(T):
    x = T.tensor([float("nan")] * 3, requires_grad=True)
    T.median(x).backward()
    same(x.grad, np.full(3, 1 / 3, dtype=np.float32))
    x = T.tensor([1.0, float("nan"), 2.0, float("nan")], requires_grad=True)
    T.median(x).backward()
    same(x.grad, np.array([0, 0.5, 0, 0.5], dtype=np.float32))
    assert T.isnan(T.median(T.tensor([1.0, float("nan"), 2.0])))


def test_full_backward_hook_double_backward(T):
    x = T.rand(1, dtype=T.float64, requires_grad=True)
    y = T.rand_like(x)
    func = nn(T).MSELoss()
    counter = [0]
    func.register_full_backward_hook(lambda module, grad_input, grad_output: counter.__setitem__(0, counter[0] + 1))
    f = func(x, y)
    (gradx_f,) = T.autograd.grad(f, x, create_graph=True)
    assert counter[0] == 1
    close(gradx_f, 2 * (values(x) - values(y)))
    (gg,) = T.autograd.grad(gradx_f, x)
    assert counter[0] == 1
    same(gg, [2.0])


def test_create_graph_backward_warns_nothing_in_grad(T):
    with warnings.catch_warnings(record=True) as ws:
        warnings.simplefilter("always")
        b = T.randn(3, dtype=T.float64, requires_grad=True)
        T.autograd.grad(b * b, b, T.ones(3, dtype=T.float64), create_graph=True)
    assert not any("create_graph=True" in str(w.message) for w in ws)


def test_no_unnecessary_unwrapping(T):
    a = randn(T, 5)
    a_orig = values(a).copy()
    b = a * a
    c = a * b
    d = T.exp(a)
    assert b.grad_fn._saved_self is a and b.grad_fn._saved_other is a and c.grad_fn._saved_self is a
    assert c.grad_fn._saved_other is b  # (b is not the node's output)
    same(d.grad_fn._saved_result, values(d))
    assert d.grad_fn._saved_result is not d  # (an output comes back as a new tensor)
    c.sum().backward()
    raises(RuntimeError, "after they have already been freed|after it was freed", lambda: c.grad_fn._saved_self)
    same(a, a_orig)


def test_saved_variable_shares_memory(T):
    a = T.rand(2, requires_grad=True)
    b = T.exp(a)
    b_unpacked = b.grad_fn._saved_result
    same(b_unpacked, values(b))
    with T.no_grad():
        b += 1
    same(b_unpacked, values(b))


def test_saved_variable_version_counter(T):
    a = T.rand(2, requires_grad=True)
    b = T.exp(a)
    b_unpacked = b.grad_fn._saved_result
    assert b._version == b_unpacked._version
    with T.no_grad():
        b += 1
    assert b._version == b_unpacked._version
