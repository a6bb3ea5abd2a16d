"""What was left of PyTorch's test/test_autograd.py: anomaly mode (NaN named by its node, the forward trace and its
parents in a second backward, warnings made errors, the metadata dict), TestAutogradDeviceType on the CPU, and the
complex-autograd tests (TestAutogradComplex and test/autograd/test_complex.py's reductions to a complex dtype).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`), against literals or
NumPy's numbers.
"""

import contextlib
import gc
import io
import math
import sys
import warnings
import weakref

import numpy as np
import pytest

from tests.ported import close, raises, same, values
from tests.ported_autograd import nn, randn

NAN_OUTPUT = "Function '{}' returned nan values in its {}th output"


@contextlib.contextmanager
def recorded_warnings():
    """The warnings raised in the block, each one (PyTorch's test reads them by position)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def anomaly_messages(caught):
    """Anomaly mode's own warnings among those caught (NumPy's or a deprecation's are not counted)."""
    words = ("Anomaly Detection", "Error detected", "Previous calculation")
    return [str(w.message) for w in caught if any(word in str(w.message) for word in words)]


# -- anomaly mode -----------------------------------------------------------------------------------------------------

def nan_function(T, size=10):
    class MyFunc(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp1, inp2, fail_0th):
            ctx.fail_0th = fail_0th
            return inp1.sum(0, keepdim=True)

        @staticmethod
        def backward(ctx, gO):
            gI = gO.clone().expand(size).clone()
            gI[0] = 0
            gI[0] /= 0  # 0/0: a NaN
            return (gI, None, None) if ctx.fail_0th else (None, gI, None)

    return MyFunc


def test_anomaly_detect_nan_warns_of_the_forward_call(T):
    MyFunc = nan_function(T)
    inp = T.rand(10, requires_grad=True)
    out = MyFunc.apply(inp, inp, True)  # made outside anomaly mode: no forward trace
    with recorded_warnings() as caught:
        with T.autograd.detect_anomaly():
            raises(RuntimeError, NAN_OUTPUT.format("MyFuncBackward", 0), out.backward)
    messages = anomaly_messages(caught)
    assert "Anomaly Detection has been enabled" in messages[0]
    assert "Error detected in MyFuncBackward" in messages[1] and "No forward pass information" in messages[1]

    inp = T.rand(10, requires_grad=True)
    with recorded_warnings() as caught:
        with T.autograd.detect_anomaly():
            out = MyFunc.apply(inp, inp, False)
            raises(RuntimeError, NAN_OUTPUT.format("MyFuncBackward", 1), out.backward)
    messages = anomaly_messages(caught)
    assert "Traceback of forward call that caused the error" in messages[1] and "MyFunc.apply" in messages[1]
    assert inp.grad is None  # (the pass stopped at the error)


def nested_nan_functions(T, size=10):
    class MyFunc(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp1, fail_0th):
            ctx.fail_0th = fail_0th
            ctx.save_for_backward(inp1)
            return inp1.sum(0, keepdim=True)

        @staticmethod
        def backward(ctx, gO):
            (inp,) = ctx.saved_tensors
            g = gO.clone().expand(size)
            return MyFunc2.apply(g * inp, g + inp, ctx.fail_0th), None

    class MyFunc2(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp1, inp2, fail_0th):
            ctx.fail_0th = fail_0th
            return inp1 * 2.0 + inp2

        @staticmethod
        def backward(ctx, gO):
            g1, g2 = gO.clone(), gO.clone()
            g1[0] = 0
            g2[0] = 0
            if ctx.fail_0th:
                g1[0] /= 0
            else:
                g2[0] /= 0
            return g1, g2, None

    return MyFunc


def test_nested_anomaly_detect_nan(T):
    MyFunc = nested_nan_functions(T)
    inp = T.rand(10, requires_grad=True)
    (ginp,) = T.autograd.grad(MyFunc.apply(inp, True), (inp,), create_graph=True)
    ginp.sum().backward()  # not in anomaly mode: the NaN goes through
    assert np.isnan(values(inp.grad)[0]) and not np.isnan(values(inp.grad)[1:]).any()

    inp = T.rand(10, requires_grad=True)
    (ginp,) = T.autograd.grad(MyFunc.apply(inp, True), (inp,), create_graph=True)
    gsum = ginp.sum()
    with recorded_warnings() as caught:
        with T.autograd.detect_anomaly():
            raises(RuntimeError, NAN_OUTPUT.format("MyFunc2Backward", 0), gsum.backward)
    messages = anomaly_messages(caught)
    assert "No forward pass information" in messages[1]

    inp = T.rand(10, requires_grad=True)
    with recorded_warnings() as caught:
        with T.autograd.detect_anomaly():
            out = MyFunc.apply(inp, False)
            (ginp,) = T.autograd.grad(out, (inp,), create_graph=True)
            gsum = ginp.sum()
            raises(RuntimeError, NAN_OUTPUT.format("MyFunc2Backward", 1), gsum.backward)
    messages = anomaly_messages(caught)
    assert len(messages) == 3
    assert "Error detected in MyFunc2Backward" in messages[1] and "MyFunc2.apply" in messages[1]
    assert "Previous calculation was induced by MyFuncBackward" in messages[2] and "MyFunc.apply" in messages[2]


def test_anomaly_grad_warnings_printed_where_warnings_are_errors(T):
    """A warnings filter that makes warnings errors does not hide the pass's own error: the note goes to stderr."""
    stderr, captured = sys.stderr, io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        with T.autograd.detect_anomaly():
            warnings.simplefilter("error")
            sys.stderr = captured
            try:
                a = T.randn(5, requires_grad=True)
                d1 = a + 1
                d2 = d1 ** 2
                d1 += 1
                raises(RuntimeError, "modified by an inplace operation", T.autograd.grad, d2.sum(), a)
            finally:
                sys.stderr = stderr
    assert len(caught) == 1 and "Anomaly Detection has been enabled" in str(caught[0].message)
    assert "Error detected in PowBackward0" in captured.getvalue()


def test_anomaly_assign_parent_cleanup(T):
    def get_ref():
        x = T.randn(2, 2, requires_grad=True)
        t = x.exp()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with T.autograd.detect_anomaly():
                T.autograd.grad(t, x, T.ones_like(t), create_graph=True)

        class Foo:
            pass

        my_obj = Foo()
        t.grad_fn.metadata[0] = my_obj  # the node's metadata dict keeps what is put there, as long as the node lives
        return t, weakref.ref(my_obj)

    t, ref = get_ref()
    assert ref() is not None
    del t
    gc.collect()
    assert ref() is None


def test_nested_anomaly_printstack_cleanup(T):
    def get_ref():
        class MyFunc(T.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x

            @staticmethod
            def backward(ctx, gO):
                (x,) = ctx.saved_tensors
                return MyFunc2.apply(x)

        class MyFunc2(T.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x

            @staticmethod
            def backward(ctx, gO):
                return gO + float("NaN")

        inp = T.rand(1, requires_grad=True)
        out = MyFunc.apply(inp)
        (ginp,) = T.autograd.grad(out, (inp,), create_graph=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with T.autograd.detect_anomaly():
                raises(RuntimeError, NAN_OUTPUT.format("MyFunc2Backward", 0), ginp.backward)

        class Foo:
            pass

        my_obj = Foo()
        out.grad_fn.metadata[0] = my_obj
        return out, weakref.ref(my_obj)

    t, ref = get_ref()
    assert ref() is not None
    del t
    gc.collect()
    assert ref() is None


@pytest.mark.parametrize("case", ["log", "div", "sqrt", "pow", "acos"])
def test_anomaly_names_builtin_ops_and_lets_infinity_through(T, case):
    """NaN from a built-in op's backward is refused, naming the node; an infinite gradient is an answer."""
    ops = {"log": (lambda x: T.log(x) * 0, "LogBackward0", 0), "div": (lambda x: x / x, "DivBackward0", 1),
           "sqrt": (T.sqrt, None, [np.inf, np.inf]), "pow": (lambda x: x ** 0.5, None, [np.inf, np.inf]),
           "acos": (lambda x: T.acos(x + 1), None, [-np.inf, -np.inf])}
    fn, node, outcome = ops[case]
    x = T.tensor([0.0, 0.0], requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with T.autograd.detect_anomaly():
            if node is not None:
                raises(RuntimeError, NAN_OUTPUT.format(node, outcome), fn(x).sum().backward)
                return
            fn(x).sum().backward()
    same(x.grad, np.array(outcome, np.float32))


def test_detect_anomaly_check_nan_flag(T):
    assert not T.is_anomaly_enabled()
    with T.autograd.detect_anomaly(check_nan=False):
        assert T.is_anomaly_enabled() and not T.is_anomaly_check_nan_enabled()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with T.autograd.set_detect_anomaly(True, check_nan=False):
            assert T.is_anomaly_enabled() and not T.is_anomaly_check_nan_enabled()
    assert not T.is_anomaly_enabled() and T.is_anomaly_check_nan_enabled()


# -- TestAutogradDeviceType on the CPU ---------------------------------------------------------------------------------

def test_scatter_index_reduce_amin_amax_backprops_to_all_values(T):
    gradcheck = T.autograd.gradcheck
    for fn in (T.scatter_reduce, T.index_reduce):
        for reduction in ("amin", "amax"):
            inp = randn(T, 2, 3, seed=1)
            src = inp.clone().detach_().requires_grad_(True)  # ties everywhere: the gradient is shared evenly
            idx = T.arange(2)
            if fn is T.scatter_reduce:
                idx = idx.unsqueeze(-1).expand((2, 3))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # (PyTorch's "index_reduce() is in beta")
                assert gradcheck(fn, (inp, 0, idx, src, reduction), check_batched_grad=False)
                out = fn(inp, 0, idx, src, reduction)
            out.sum().backward()
            same(inp.grad, np.full((2, 3), 0.5))
            same(src.grad, np.full((2, 3), 0.5))


def prod_with_two_zeros(T):
    inp = T.tensor([1.0], dtype=T.float64, requires_grad=True)
    src = T.tensor([0.0, 0.0], dtype=T.float64, requires_grad=True)
    return inp, src, T.tensor([0, 0])


def test_scatter_index_reduce_prod_with_two_zeros_gradcheck(T):
    inp, src, idx = prod_with_two_zeros(T)
    for fn in (T.scatter_reduce, T.index_reduce):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert T.autograd.gradcheck(fn, (inp, 0, idx, src, "prod"), check_batched_grad=False)


def test_scatter_index_reduce_prod_gradgrad_error(T):
    inp, src, idx = prod_with_two_zeros(T)
    for fn in (T.scatter_reduce, T.index_reduce):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            raises(RuntimeError, "Double backward is unsupported for", T.autograd.gradgradcheck, fn,
                   (inp, 0, idx, src, "prod"))


def test_parameter_resize(T):
    asd = nn(T).Parameter(T.ones(16, dtype=T.double))
    for _ in range(2):
        with T.no_grad():
            asd.set_(asd[1:])
            asd.grad = None
        T.cat((asd, asd)).sum().backward()
    same(asd.grad, np.full(14, 2.0))


def test_sparse_mask_autograd(T):
    tensor = T.tensor([0.5, -1.0, 2.0], requires_grad=True)
    mask = T.ones(3)
    mask[1] = 0
    mask = mask.to_sparse()
    tensor.sparse_mask(mask).to_dense().sum().backward()
    same(tensor.grad, [1.0, 0.0, 1.0])


def test_pyscalar_conversions(T):
    long = T.zeros(1, 1, 1, dtype=T.long)
    long[0] = -12345
    assert int(long) == -12345
    f = T.randn(1, 1, dtype=T.double)
    f[0] = -12345.1
    assert float(f) == -12345.1
    f[0] = math.nan
    assert math.isnan(float(f))
    for infinite in (math.inf, -math.inf):
        f[0] = infinite
        assert float(f) == infinite
    big = 1234567890123456789
    assert big != int(float(big))
    long[0] = big
    assert float(long) == float(big)
    for value, error in ((math.nan, ValueError), (math.inf, OverflowError), (-math.inf, OverflowError)):
        f[0] = value
        raises(error, None, int, f[0])
    f[0] = sys.float_info.max
    assert int(f) == sys.float_info.max
    for tensor, value, expected in ((long, 0, False), (long, -2, True), (f, 0.0, False), (f, sys.float_info.min, True),
                                    (f, math.nan, True), (f, math.inf, True), (f, -math.inf, True)):
        tensor[0] = value
        assert bool(tensor) is expected


@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "int16", "int32", "int64"])
def test_set_requires_grad_only_for_floats(T, dtype):
    dt = getattr(T, dtype)
    a = T.ones(1, dtype=dt)
    a.requires_grad = False  # always allowed
    a.requires_grad_(False)

    def f2():
        T.ones(1, dtype=dt).requires_grad = True

    for f in (lambda: T.ones(1, dtype=dt).requires_grad_(), f2, lambda: T.ones(1, dtype=dt, requires_grad=True)):
        if dtype.startswith("float"):
            f()
        else:
            raises(RuntimeError, "floating point", f)


def test_advanced_indexing_backwards_memory_format(T):
    shape = (2, 8, 1, 2)
    i = T.randint(1, shape).contiguous(memory_format=T.channels_last)  # all zeros
    x = T.randn(shape, requires_grad=True)
    x[i].sum().backward()
    expected = np.zeros(shape, np.float32)
    expected[0] = i.numel()  # every index picks row 0 of dim 0
    same(x.grad, expected)


def test_where_functional_and_scalar(T, rng):
    gradcheck, gradgradcheck = T.autograd.gradcheck, T.autograd.gradgradcheck
    cond = T.tensor(rng.random((5, 5)) > 0.5)

    def where(cond, x, y):
        return T.where(cond, x, y)

    x, y = randn(T, 5, 5, seed=1), randn(T, 5, 5, seed=2)
    assert gradcheck(where, [cond, x, y]) and gradgradcheck(where, [cond, x, y], [randn(T, 5, 5, seed=3)])
    x, y = randn(T, 5, 1, 5, seed=4), randn(T, 5, 5, 1, seed=5)
    assert gradcheck(where, [cond, x, y]) and gradgradcheck(where, [cond, x, y], [randn(T, 5, 5, 5, seed=6)])
    x = randn(T, 5, 5, seed=7)
    for fn in (lambda c, x: T.where(c, 4.0, x), lambda c, x: T.where(c, x, 4.0)):
        assert gradcheck(fn, (cond, x)) and gradgradcheck(fn, (cond, x))
    T.where(cond, x, 4.0).sum().backward()
    same(x.grad, values(cond).astype(np.float64))


def test_copy_into_a_floating_tensor_requires_grad(T):
    x = T.randn(10, requires_grad=True)
    for dtype in ("float16", "float32", "float64"):
        y = T.empty(10, dtype=getattr(T, dtype))
        y.copy_(x)
        assert y.requires_grad


def test_inplace_on_view_backprop(T):
    root = T.randn(2, 2, requires_grad=True)
    x = root.clone()
    x.narrow(0, 0, 1).mul_(2)
    x.sum().backward()
    same(root.grad, [[2.0, 2.0], [1.0, 1.0]])

    root = T.randn(2, 2, requires_grad=True)  # backprop through another view of the same region
    x = root.clone()
    v1, v2 = x.narrow(0, 0, 1), x.narrow(0, 0, 1)
    v1.mul_(2)
    v2.sum().backward()
    same(root.grad, [[2.0, 2.0], [0.0, 0.0]])

    root = T.randn(2, 2, requires_grad=True)  # a view of a view
    x = root.clone()
    x.narrow(0, 0, 1).narrow(1, 1, 1).mul_(2)
    x.sum().backward()
    same(root.grad, [[1.0, 2.0], [1.0, 1.0]])

    root = T.ones(2, 3, 2).select(2, 1).t().requires_grad_(True)  # a non-contiguous root
    x = root.clone()
    x.narrow(0, 0, 1).narrow(1, 1, 1).mul_(2)
    x.sum().backward()
    same(root.grad, [[1.0, 2.0], [1.0, 1.0], [1.0, 1.0]])

    a = T.tensor([2.0, 5.0])  # through the view itself, its base not requiring grad
    b = T.tensor([3.0], requires_grad=True)
    a.narrow(0, 1, 1).mul_(b).sum().backward()
    same(b.grad, [5.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (a now has history: reading its .grad warns, in both libraries)
        assert a.grad is None


def test_inplace_on_view_then_no_grad(T):
    a = T.ones(3, 1, dtype=T.double, requires_grad=True)
    b = a * 2
    c = b.view_as(b)
    c[0][0] = 3
    with T.no_grad():
        assert c.grad_fn is not None  # (the graph brought up to date with grad disabled)
    c.sum().backward()
    same(a.grad, [[0.0], [2.0], [2.0]])


def test_inplace_on_view_gradcheck_and_base_requiring_grad(T):
    gradcheck, gradgradcheck = T.autograd.gradcheck, T.autograd.gradgradcheck
    a, b = randn(T, 4, 4, seed=1), randn(T, 2, 2, seed=2)
    go = randn(T, 4, 4, seed=3)

    def func(root, b):
        x = root.clone()
        x.narrow(1, 2, 2).narrow(0, 1, 2).mul_(b)
        x.narrow(1, 0, 2).narrow(0, 1, 2).mul_(b)
        return x

    assert gradcheck(func, [a, b]) and gradgradcheck(func, (a, b), (go,))
    a2, b2 = randn(T, 4, 4, seed=4, requires_grad=False), randn(T, 4, 2, seed=5)

    def func2(root, b):
        x = root.clone()
        assert not x.requires_grad
        x.narrow(1, 2, 2).mul_(b)
        assert x.requires_grad  # the in-place write through the view made the base require grad
        return x

    assert gradcheck(func2, [a2, b2]) and gradgradcheck(func2, (a2, b2), (go,))
    func2(a2, b2).backward(go)
    same(b2.grad, values(go)[:, 2:] * values(a2)[:, 2:])


def test_inplace_on_view_modify_base(T):
    r = T.ones(1, dtype=T.double, requires_grad=True)

    def fn(r):
        x = T.ones(5, dtype=T.double)
        v = x.select(0, 1)
        assert not v.requires_grad and v.grad_fn is None
        x.add_(r)  # v now depends on r, through its base
        assert v.requires_grad
        return v

    assert T.autograd.gradcheck(fn, [r]) and T.autograd.gradgradcheck(fn, [r])
    fn(r).backward()
    same(r.grad, [1.0])


def py_add(T):
    class PyAdd(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            ctx.mark_dirty(x)
            x.add_(y)
            return x

        @staticmethod
        def backward(ctx, grad):
            return grad, grad

    return PyAdd


def test_inplace_on_view_python(T):
    """A custom Function that writes a view in place (mark_dirty): the base's gradient reaches its other input."""
    PyAdd = py_add(T)
    a, b = randn(T, 4, 4, seed=1), randn(T, 2, 2, seed=2)

    def func(root, b):
        x = root.clone()
        PyAdd.apply(x.narrow(1, 2, 2).narrow(0, 1, 2), b)
        PyAdd.apply(x.narrow(1, 0, 2).narrow(0, 1, 2), b)
        return x

    assert T.autograd.gradcheck(func, [a, b])
    assert T.autograd.gradgradcheck(func, (a, b), (randn(T, 4, 4, seed=3),))
    go = np.arange(16.0).reshape(4, 4)
    grads = T.autograd.grad(func(a, b), (a, b), T.tensor(go))
    same(grads[0], go)
    same(grads[1], go[1:3, 2:4] + go[1:3, 0:2])


def test_inplace_on_view_undefined_grad_output(T):
    a = T.tensor([1.0], requires_grad=True)
    v = a.clone()[:]
    b = T.tensor(1.0, requires_grad=True)

    class InplaceFunc(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, other):
            ctx.mark_dirty(x)
            return x.mul_(2)

        @staticmethod
        def backward(ctx, grad):
            return grad * 2, None

    InplaceFunc.apply(v, b).backward()
    assert b.grad is None
    assert a.grad.item() == 2


def test_inplace_on_view_multi_output_safe(T):
    for f in (lambda t: t.split(1), lambda t: t.split_with_sizes((1, 1, 1)), lambda t: t.chunk(3),
              lambda t: t.unbind()):
        b = T.randn(3, 3, requires_grad=True) * 2
        s1, s2, s3 = f(b)
        raises(RuntimeError, "This view is the output of a function that returns multiple views", s1.mul_, s2)


def test_inplace_on_view_multi_output_unsafe(T):
    for f in (lambda t: t.unsafe_split(1), lambda t: t.unsafe_split_with_sizes((1, 1, 1)),
              lambda t: t.unsafe_chunk(3)):
        a = T.tensor(np.arange(9.0).reshape(3, 3), requires_grad=True)
        s1, s2, _ = f(a + a)
        s1.mul_(s2)
        s1.sum().backward()
        same(a.grad, [[12.0, 16.0, 20.0], [0.0, 4.0, 8.0], [0.0, 0.0, 0.0]])


def test_mv_grad_stride_0(T):
    mat = T.tensor([[1.0, 2.0], [3.0, -4.0]], dtype=T.double)
    vec = T.tensor([0.5], dtype=T.double, requires_grad=True)

    def fn(vec):
        return (mat @ vec.expand(2)).sum()  # (expanded inside: gradcheck's input has no overlapping memory)

    assert T.autograd.gradcheck(fn, (vec,)) and T.autograd.gradgradcheck(fn, (vec,))
    fn(vec).backward()
    same(vec.grad, [2.0])  # the sum of mat's entries


def test_strided_leaf_grad_layout(T):
    a = T.rand((2, 3, 4, 5)).requires_grad_()
    b = T.rand((2, 3, 4, 5))
    a.sum().backward()
    assert a.grad.stride() == a.stride() == (60, 20, 5, 1)
    a.grad = None
    (a * b).sum().backward()
    assert a.grad.stride() == (60, 20, 5, 1)
    same(a.grad, values(b))
    c = T.empty_strided((2, 2), (4, 2)).copy_(T.rand((2, 2)))  # a leaf that is not dense: a row-major grad
    c.requires_grad_()
    c.sum().backward()
    assert c.grad.stride() == (2, 1)
    c.grad = None
    (c * T.rand((2, 2))).sum().backward()
    assert c.grad.stride() == (2, 1)


def test_strided_leaf_grad_layout_channels_last(T):
    for fmt_a in (T.contiguous_format, T.channels_last):
        for fmt_b in (T.contiguous_format, T.channels_last):
            a = T.rand((2, 3, 4, 5)).to(memory_format=fmt_a).requires_grad_()
            b = T.rand((2, 3, 4, 5)).to(memory_format=fmt_b).requires_grad_()
            a.sum().backward()
            assert a.grad.stride() == a.stride()
            b.sum().backward()
            assert b.grad.stride() == b.stride()
            a.grad = b.grad = None
            (a * b).sum().backward()
            assert a.grad.stride() == a.stride() and b.grad.stride() == b.stride()
            same(a.grad, values(b))
            same(b.grad, values(a))


def test_leaf_grad_layout_with_dims_of_one(T):
    """A gradient the user holds (an add hands it on as it is) is copied into the leaf's layout, as PyTorch's
    AccumulateGrad clones it: a channels-last weight of 1x1 kernels keeps even its size-1 dims' strides, a
    row-major leaf with no dim of one element gets a plain copy."""
    a = T.rand((4, 3, 1, 1)).to(memory_format=T.channels_last).requires_grad_()
    d = T.rand((4, 3, 1, 1)).requires_grad_()
    assert a.stride() == (3, 1, 3, 3)
    g4 = T.rand((4, 3, 1, 1))
    (a + d).backward(g4)
    assert a.grad.stride() == (3, 1, 3, 3) and d.grad.stride() == (3, 1, 1, 1)
    same(a.grad, values(g4))
    same(d.grad, values(g4))
    b, c = T.rand((5, 6)).requires_grad_(), T.rand((5, 6)).requires_grad_()
    g = T.rand((5, 6))
    (b + c).backward(g)
    assert b.grad.stride() == c.grad.stride() == (6, 1)
    same(b.grad, values(g))
    same(c.grad, values(g))
    assert b.grad.data_ptr() not in (c.grad.data_ptr(), g.data_ptr())  # each its own copy: nothing shared


def test_copy_and_to_real_to_complex(T):
    """A real tensor copied into a complex one: its gradient is the real part, without a warning."""
    for via_copy in (True, False):
        inp = randn(T, 3, 2, seed=1)
        with recorded_warnings() as caught:
            if via_copy:
                out = T.empty(3, 2, dtype=T.cdouble)
                out.copy_(inp)
            else:
                out = inp.to(T.complex128)
            total = out.sum()
            total.abs().backward()
        assert not caught
        s = values(inp).sum()
        same(inp.grad, np.full((3, 2), np.sign(s)))  # sgn of a real total: ±1


def test_non_differentiable_ops(T):
    x = T.tensor([[1, 2], [3, 4.0]], requires_grad=True)
    out = T.isin(x, T.tensor([2, 3]))
    assert not out.requires_grad
    same(out, [[False, True], [True, False]])
    assert not T.signbit(T.randn(3, 3, requires_grad=True)).requires_grad


def test_complex_scalar_backward(T):
    a = T.zeros(1, requires_grad=True)
    b = a * 0.5j
    raises(RuntimeError, "grad can be implicitly created only for real scalar outputs", b.backward)
    raises(RuntimeError, "grad can be implicitly created only for real scalar outputs", T.autograd.grad, b, a)


def test_pow_real_negative_base_complex_exponent(T):
    base = -T.ones(2, dtype=T.double)
    exponent = T.tensor([0.5 + 0.25j, -1.5 + 1.0j], dtype=T.cdouble, requires_grad=True)
    assert T.autograd.gradcheck(lambda e: T.pow(base, e), (exponent,))
    assert T.autograd.gradcheck(lambda e: T.pow(-1, e), (exponent,))
    e = values(exponent)
    close(T.pow(-1, exponent).detach(), np.exp(1j * np.pi * e), rtol=1e-12, atol=1e-12)  # (-1)^e = e^{iπe}


def test_resize_version_bump(T):
    x = T.rand((1,))
    y = T.randn((3,))
    x.resize_((1, 2))
    assert x._version == 1
    x.resize_as_(y)
    assert x._version == 2
    x.resize_((3,))  # no change of size: no version bump
    assert x._version == 2
    x.resize_as_(y)
    assert x._version == 2


def test_grad_assignment(T):
    x = T.randn(5, 5)
    raises(TypeError, "expected to be a Tensor or None", setattr, x, "grad", 0)
    raises(RuntimeError, None, setattr, x, "grad", T.randn(2, 2))
    raises(RuntimeError, None, setattr, x, "grad", T.randn(5, 5).long())
    raises(RuntimeError, "can't assign Variable as its own grad", setattr, x, "grad", x)
    x.grad = T.ones(5, 5)
    same(x.grad, np.ones((5, 5), np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_requires_grad_factory(T, dtype):
    x = T.randn(2, 3, dtype=getattr(T, dtype))
    for fn in (T.ones_like, T.randn_like):
        for requires_grad in (True, False):
            output = fn(x, dtype=getattr(T, dtype), device="cpu", requires_grad=requires_grad)
            assert output.requires_grad == requires_grad and output.dtype is getattr(T, dtype)
            assert str(x.device) == "cpu"


def test_copysign_subgradient(T):
    for x, y, x_grad in (([0.0] * 3, [-1.0, 0.0, 1.0], [0.0] * 3), ([-0.0] * 3, [-1.0, 0.0, 1.0], [0.0] * 3),
                         ([-1.0, 0.0, 1.0], [0.0] * 3, [-1.0, 0.0, 1.0]),
                         ([-1.0, 0.0, 1.0], [-0.0] * 3, [1.0, 0.0, -1.0])):
        x, y = T.tensor(x, requires_grad=True), T.tensor(y, requires_grad=True)
        T.copysign(x, y).sum().backward()
        same(x.grad, x_grad)
        same(y.grad, [0.0] * 3)


@pytest.mark.parametrize("layer", ["LSTM", "GRU"])
def test_rnn_grad_and_gradgrad(T, layer):
    T.manual_seed(0)
    inp = T.rand(1, 3, 4, dtype=T.float64, requires_grad=True)
    for bias in (True, False):
        mod = getattr(nn(T), layer)(4, 4, bias=bias).to(T.float64)

        def flatten_out(x, mod=mod):
            out = mod(x)
            return tuple(t if isinstance(t, T.Tensor) else tt for t in out for tt in t)

        assert T.autograd.gradcheck(flatten_out, inp, check_batched_grad=False)
        assert T.autograd.gradgradcheck(flatten_out, inp, check_batched_grad=False)


def test_logcumsumexp_large_value(T):
    a = T.rand(4, 4, 4, dtype=T.double, requires_grad=True)
    with T.no_grad():
        a[0] = 10000
    for dim in range(3):
        assert T.autograd.gradcheck(lambda x, dim=dim: x.logcumsumexp(dim), a)
        assert T.autograd.gradgradcheck(lambda x, dim=dim: x.logcumsumexp(dim), a)
    a.logcumsumexp(0).sum().backward()
    column = values(a)[:, 0, 0]  # d/dx_j of Σ_i logΣ_{k≤i} e^{x_k} = Σ_{i≥j} softmax_{≤i}(x)_j
    expected = [sum(np.exp(column[j] - np.logaddexp.reduce(column[:i + 1])) for i in range(j, 4)) for j in range(4)]
    close(a.grad[:, 0, 0], expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["atleast_1d", "atleast_2d", "atleast_3d"])
def test_atleast(T, name):
    fn = getattr(T, name)
    s = T.tensor(0.5, dtype=T.double, requires_grad=True)
    a = T.rand(4, dtype=T.double, requires_grad=True)
    b, c, d = (T.rand(*shape, dtype=T.double, requires_grad=True) for shape in ((4, 3), (4, 3, 2), (4, 3, 2, 1)))
    for inputs in ((s,), (a,), (s, a, b, c, d)):
        assert T.autograd.gradcheck(lambda *t: fn(*t), inputs) and T.autograd.gradgradcheck(lambda *t: fn(*t), inputs)
    assert tuple(fn(s).shape) == {"atleast_1d": (1,), "atleast_2d": (1, 1), "atleast_3d": (1, 1, 1)}[name]


def test_xlogy(T):
    gradcheck, gradgradcheck = T.autograd.gradcheck, T.autograd.gradgradcheck
    x = T.rand(2, 3, 4, 5, dtype=T.double, requires_grad=True)
    y = T.rand(4, 5, dtype=T.double, requires_grad=True)
    for u, v in ((x, y), (y, x), (x, x), (y, y)):
        assert gradcheck(T.xlogy, (u, v)) and gradgradcheck(T.xlogy, (u, v))
    with T.no_grad():
        zeroed = x.clone()
        zeroed[T.rand_like(x) > 0.5] = 0
    assert gradcheck(lambda y: T.xlogy(zeroed, y), (y,)) and gradgradcheck(lambda y: T.xlogy(zeroed, y), (y,))
    for fn in (lambda y: T.xlogy(0, y), lambda y: T.xlogy(2, y), lambda y: T.xlogy(y, 2)):
        assert gradcheck(fn, (y,)) and gradgradcheck(fn, (y,))
    T.xlogy(y, 2).sum().backward()
    close(y.grad, np.full((4, 5), np.log(2.0)), rtol=1e-12)


def test_pdist_large_and_cdist_without_nan(T):
    x = T.randn(1000, 1).requires_grad_()
    T.pdist(x, p=2).sum().backward()
    assert x.grad.shape == (1000, 1) and bool(T.isfinite(x.grad).all())
    for p in (0.99, 0.7, 0.5, 0.1, 0.01):  # p < 1 at a zero coordinate difference: no NaN
        x = T.tensor([[0.3, -0.2]])
        y = (x.clone() + T.tensor([[1.0, 0.0]])).requires_grad_()
        x.requires_grad_()
        result = T.cdist(x, y, p=p)
        result.backward(T.ones_like(result))
        close(x.grad, [[-1.0, 0.0]], rtol=1e-6)  # (float32: |d|^(p-1) rounds a unit off in PyTorch's)
        close(y.grad, [[1.0, 0.0]], rtol=1e-6)
    for p in (0, 1, 2, 3, 1.5, 2.5, math.inf):  # distances of zero: finite gradients
        x = T.randn(1, 27, 32)
        y = x.clone()
        x.requires_grad_()
        T.cdist(x, y, p=p).backward(T.randn(1, 27, 27))
        assert bool(T.isfinite(x.grad).all())


# -- complex autograd: TestAutogradComplex, and reductions of a real input to a complex dtype --------------------------

def test_view_func_for_complex_views(T):
    # case 1: both parent and child are views that change the dtype
    x = randn(T, 2, 2, 2, seed=1)
    y = x.detach().requires_grad_(True)
    x2 = T.view_as_real(T.view_as_complex(x.clone()))
    x2.mul_(2)
    x2.sum().abs().backward()
    y0 = y.clone()
    y0.mul_(2)
    y0.sum().abs().backward()
    same(x.grad, values(y.grad))
    same(x.grad, np.full((2, 2, 2), 2.0 * np.sign(values(x).sum())))

    # case 2: the parent changes the dtype, the child does not
    x = randn(T, 2, 2, 2, seed=2)
    y = x.detach().requires_grad_(True)

    def fn(a):
        b1 = T.view_as_complex(a.clone())
        return b1.reshape(b1.numel())

    x0 = fn(x)
    x0.mul_(2)
    x0.sum().abs().backward()
    fn(y).mul(2).sum().abs().backward()
    close(x.grad, values(y.grad), rtol=1e-12, atol=1e-12)
    pairs = values(x).reshape(-1, 2)
    total = pairs[:, 0].sum() + 1j * pairs[:, 1].sum()
    direction = 2 * total / abs(total)  # d|2 Σz| : 2 · sgn(total) on each real and imaginary part
    close(x.grad, np.tile([direction.real, direction.imag], 4).reshape(2, 2, 2), rtol=1e-12, atol=1e-12)

    # case 3: the parent keeps the dtype, the child changes it
    x = T.tensor(np.arange(10) - 4.5 + 1j * np.linspace(-1, 2, 10), requires_grad=True)
    y = x.detach().requires_grad_(True)

    def fn3(a):
        return T.view_as_real(a.clone().reshape(5, 2))

    x0 = fn3(x)
    x0.mul_(2)
    x0.sum().abs().backward()
    fn3(y).mul(2).sum().abs().backward()
    same(x.grad, values(y.grad))
    s = values(x).real.sum() + values(x).imag.sum()
    close(x.grad, np.full(10, 2 * np.sign(s) * (1 + 1j)), rtol=1e-12, atol=1e-12)


def test_view_with_multi_output(T):
    x = randn(T, 2, 2, 2, seed=1, requires_grad=False)
    res = T.view_as_complex(x).unbind(0)
    with pytest.raises(RuntimeError, match="output of a function that returns multiple views"):
        res[0] += T.rand(2, requires_grad=True)
    x.requires_grad_(True)
    res = T.view_as_complex(x).unbind(0)
    with pytest.raises(RuntimeError, match="output of a function that returns multiple views"):
        res[0] += T.rand(2, requires_grad=True)


def test_view_as_real_and_complex_act_as_identity(T):
    def func(z):
        z_ = T.view_as_complex(z)
        z_select = T.select(z_, z_.dim() - 1, 0)
        return T.view_as_real(z_select).sum()

    z = randn(T, 10, 2, 2, seed=3)
    assert T.autograd.gradcheck(func, [z])
    func(z).backward()
    z1 = z.detach().clone().requires_grad_(True)
    T.select(z1, z1.dim() - 2, 0).sum().backward()
    same(z.grad, values(z1.grad))
    expected = np.zeros((10, 2, 2))
    expected[:, 0, :] = 1.0
    same(z.grad, expected)


@pytest.mark.parametrize("op", ["sum", "mean", "prod"])
@pytest.mark.parametrize("dim", [None, 0])
def test_real_input_complex_dtype_grad(T, op, dim):
    """A real input reduced with dtype=<complex> gets the real part of the complex gradient (PyTorch #192719)."""
    x = randn(T, 2, 3, seed=1)
    args = () if dim is None else (dim,)
    y = getattr(T, op)(x, *args, dtype=T.complex128)
    try:
        y.backward(T.full_like(y, 1 + 2j))
    except RuntimeError as error:
        if T.__name__ == "torch":
            pytest.skip(f"this PyTorch predates the fix (#192719): {str(error)[:60]}")
        raise
    assert str(x.grad.dtype).endswith("float64")
    data = values(x)
    n = data.size if dim is None else data.shape[dim]
    if op == "prod":
        total = data.prod() if dim is None else data.prod(axis=dim)
        expected = total / data
    else:
        expected = np.full((2, 3), 1.0 / n if op == "mean" else 1.0)
    close(x.grad, expected, rtol=1e-12, atol=1e-12)


def test_real_and_imag_views_of_a_complex_tensor(T):
    """hasattr(x, 'imag') of a real tensor raises (PyTorch's attribute check); writes through .real and .imag
    views are recorded: |z|² of the written values differentiates to 2·re + 2i·im of them, by the chain rule."""
    with pytest.raises(RuntimeError, match="imag is not implemented for tensors with non-complex dtypes"):
        hasattr(T.randn(2), "imag")
    assert hasattr(T.randn(2, dtype=T.cfloat), "imag")
    a = T.tensor([1.0 + 2.0j, -0.5 + 0.25j, 3.0 - 1.0j], requires_grad=True)
    (a.real * 2 + a.imag * 3).sum().backward()
    same(a.grad, np.full(3, 2 + 3j))
    a.grad = None
    b = a.clone()
    b.imag.mul_(2)
    b.real.add_(1)
    (b.abs() ** 2).sum().backward()
    z = values(a)
    close(a.grad, 2 * (z.real + 1) + 8j * z.imag, rtol=1e-6)
