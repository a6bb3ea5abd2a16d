"""Grad modes, ported from PyTorch's test/test_autograd.py (TestAutograd, TestAutogradInferenceMode): no_grad,
enable_grad, set_grad_enabled and inference_mode as context managers and decorators (on functions,
generators, coroutines and classes), requires_grad_ and detach.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import warnings

import numpy as np
import pytest

from tests.ported import raises, same, xfail_ours
from tests.ported_autograd import randn


def test_no_grad(T):
    x = T.ones(5, 5, requires_grad=True)
    y = T.ones(5, 5) * 4
    with T.no_grad():
        w = x + y

    def adder(x, y):
        return x + y

    for decorated in (T.no_grad()(adder), T.no_grad(adder)):
        z = decorated(x, y)
        assert not w.requires_grad and w.grad_fn is None
        raises(RuntimeError, "", w.backward, T.ones(5, 5))
        assert not z.requires_grad and z.grad_fn is None
        raises(RuntimeError, "", z.backward, T.ones(5, 5))
        same(z, np.full((5, 5), 5.0))
    with T.no_grad():
        assert not T.is_grad_enabled()
        T.no_grad()(adder)(x, y)
        assert not T.is_grad_enabled()
    assert T.is_grad_enabled()


def test_enable_grad_decorator_no_paren(T):
    x = T.ones(1, requires_grad=True)

    @T.enable_grad
    def doubler(x):
        return x * 2

    with T.no_grad():
        z = doubler(x)
    assert z.requires_grad


def test_grad_mode_class_decoration(T):
    with pytest.warns(FutureWarning, match="Decorating classes is deprecated"):
        @T.no_grad()
        class Foo:
            def __init__(self):
                assert not T.is_grad_enabled()

            def foo(self):
                assert T.is_grad_enabled()  # not applied to methods

        Foo().foo()

    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")

        @T.no_grad()
        def foo():
            assert not T.is_grad_enabled()

        foo()

        class Foo2:
            @T.no_grad()
            def __init__(self):
                assert not T.is_grad_enabled()

            @T.no_grad()
            def foo(self):
                assert not T.is_grad_enabled()

        Foo2().foo()
    assert not [x for x in w if "Decorating" in str(x.message)]


def test_set_grad_generator_functions(T):
    @T.no_grad()
    def gen_no_grad():
        for i in range(10):
            assert not T.is_grad_enabled()
            yield i

    with T.enable_grad():
        for _ in gen_no_grad():
            assert T.is_grad_enabled()

    @T.enable_grad()
    def gen_enable_grad():
        for i in range(10):
            assert T.is_grad_enabled()
            yield i

    with T.no_grad():
        assert list(gen_enable_grad()) == list(range(10))
        for _ in gen_enable_grad():
            assert not T.is_grad_enabled()


def test_set_grad_generator_functions_recursive(T):
    @T.enable_grad()
    def enable_rec(depth):
        assert T.is_grad_enabled()
        if depth > 0:
            no_grad_rec(depth - 1)
            assert T.is_grad_enabled()

    @T.no_grad()
    def no_grad_rec(depth):
        assert not T.is_grad_enabled()
        if depth > 0:
            enable_rec(depth - 1)
            assert not T.is_grad_enabled()

    def enable_cm(depth):
        with T.enable_grad():
            assert T.is_grad_enabled()
            if depth > 0:
                no_grad_cm(depth - 1)
                assert T.is_grad_enabled()

    def no_grad_cm(depth):
        with T.no_grad():
            assert not T.is_grad_enabled()
            if depth > 0:
                enable_cm(depth - 1)
                assert not T.is_grad_enabled()

    for outer in (T.enable_grad, T.no_grad):
        with outer():
            mode = T.is_grad_enabled()
            enable_rec(10)
            assert T.is_grad_enabled() == mode
            enable_cm(10)
            assert T.is_grad_enabled() == mode


def test_set_grad_coroutines(T):
    def coroutine(expected):
        def coro(n=10):
            assert T.is_grad_enabled() == expected
            for i in range(n):
                assert T.is_grad_enabled() == expected
                r = yield i
                assert T.is_grad_enabled() == expected
                assert r == i
            assert T.is_grad_enabled() == expected
        return coro

    for mode, outer in ((T.no_grad, T.enable_grad), (T.enable_grad, T.no_grad)):
        coro = mode()(coroutine(mode is T.enable_grad))
        with outer():
            outer_mode = T.is_grad_enabled()
            c, r, got = coro(), None, []
            with pytest.raises(StopIteration):
                while True:
                    assert T.is_grad_enabled() == outer_mode
                    r = c.send(r)
                    got.append(r)
                    assert T.is_grad_enabled() == outer_mode
            assert got == list(range(10))


def modes_of(T, mode_name):
    """The decorator under test, the opposite mode for the caller, and whether grad is on inside."""
    return getattr(T, mode_name), (T.no_grad if mode_name == "enable_grad" else T.enable_grad), \
        mode_name == "enable_grad"


class RecoverableException(Exception):
    pass


class UnrecoverableException(Exception):
    pass


class SecondaryException(Exception):
    pass


@pytest.mark.parametrize("mode_name", ["no_grad", "enable_grad"])
def test_set_grad_coroutines_benign_exceptions(T, mode_name):
    mode, outer, expected = modes_of(T, mode_name)

    @mode()
    def coro(n=10):
        has_raised = False
        for i in range(n):
            try:
                assert T.is_grad_enabled() == expected
                yield (-i if has_raised else i)
            except RecoverableException:
                assert T.is_grad_enabled() == expected
                has_raised = True

    with outer():
        c = coro()
        assert next(c) == 0
        got = []
        with pytest.raises(StopIteration):
            while True:
                got.append(c.throw(RecoverableException))
        assert got == [-i for i in range(1, 10)]


@pytest.mark.parametrize("mode_name", ["no_grad", "enable_grad"])
def test_set_grad_coroutines_critical_exceptions(T, mode_name):
    mode, outer, expected = modes_of(T, mode_name)

    @mode()
    def coro(n=10):
        for i in range(n):
            try:
                assert T.is_grad_enabled() == expected
                yield i
            except UnrecoverableException:
                assert T.is_grad_enabled() == expected
                raise SecondaryException from None

    with outer():
        c = coro()
        assert next(c) == 0
        with pytest.raises(SecondaryException):
            c.throw(UnrecoverableException)


@pytest.mark.parametrize("mode_name", ["no_grad", "enable_grad"])
def test_set_grad_coroutines_exit(T, mode_name):
    mode, outer, expected = modes_of(T, mode_name)
    state = set()

    @mode()
    def coro(state):
        for i in range(10):
            try:
                assert T.is_grad_enabled() == expected
                yield i
            except GeneratorExit:
                assert T.is_grad_enabled() == expected
                state.add("GeneratorExit")
                raise

    with outer():
        c = coro(state)
        for _ in range(5):
            next(c)
        c.close()
    assert "GeneratorExit" in state


def test_set_grad_enabled(T):
    x = T.tensor([1.0], requires_grad=True)
    with T.set_grad_enabled(False):
        y = x * 2
    assert not y.requires_grad
    with T.set_grad_enabled(True):
        y = x * 2
    assert y.requires_grad
    with T.set_grad_enabled(False):
        T.set_grad_enabled(True)
        y = x * 2
    assert y.requires_grad
    assert T.is_grad_enabled()


def test_set_grad_enabled_wraps(T):
    for decorator in (True, False):
        with T.enable_grad():
            if decorator:
                @T.set_grad_enabled(False)  # must not change the mode outside the function
                def inner_func(x):
                    return x.sin()
            else:
                def inner_func(x):
                    return x.sin()

                obj = T.set_grad_enabled(False)
                assert not T.is_grad_enabled()
                inner_func = obj(inner_func)  # consumes the switch made by the call
                assert T.is_grad_enabled()
            assert T.is_grad_enabled()
            x = T.zeros(1, requires_grad=True)
            assert not inner_func(x).requires_grad


def test_inference_mode_context_manager_and_decorator(T):
    x = T.ones(2, requires_grad=True)
    with T.inference_mode():
        assert T.is_inference_mode_enabled() and not T.is_grad_enabled()
        y = x * 2
        with T.inference_mode(False):
            assert not T.is_inference_mode_enabled() and T.is_grad_enabled()
    assert not T.is_inference_mode_enabled() and T.is_grad_enabled()
    assert y.is_inference() and not y.requires_grad

    @T.inference_mode()
    def f(x):
        assert T.is_inference_mode_enabled()
        return x * 2

    @T.inference_mode
    def g(x):
        return x * 3

    assert f(x).is_inference() and g(x).is_inference()

    @T.inference_mode()
    def gen():
        for i in range(3):
            assert T.is_inference_mode_enabled()
            yield i

    for _ in gen():
        assert not T.is_inference_mode_enabled()


def test_inference_mode_tensor_rules(T):
    """Inference tensors are never saved for backward, nor changed in place outside the mode."""
    with T.inference_mode():
        c = T.ones(1, 2, 3)
    assert c.is_inference() and not c.requires_grad
    assert not T.ones(1).is_inference()
    same(c + 1, np.full((1, 2, 3), 2.0))  # (out of place is fine)
    assert not (c + 1).is_inference()
    raises(RuntimeError, "Inplace update to inference tensor outside InferenceMode is not allowed", c.add_, 1)
    x = T.ones(1, 2, 3, requires_grad=True)
    raises(RuntimeError, "Inference tensors cannot be saved for backward", lambda: x * c)
    raises(RuntimeError, "Setting requires_grad=True on inference tensor outside InferenceMode is not allowed",
           c.requires_grad_)


def test_inference_mode_inside_no_grad_and_nested(T):
    with T.no_grad():
        with T.inference_mode():
            assert not T.is_grad_enabled()
        assert not T.is_grad_enabled() and not T.is_inference_mode_enabled()
    with T.inference_mode():
        with T.enable_grad():
            x = T.ones(2, requires_grad=True)
            y = x * 2
        assert not y.requires_grad  # nothing is recorded in inference mode, enable_grad or not


def test_requires_grad(T):
    x, y = randn(T, 5, 5, requires_grad=False), randn(T, 5, 5, seed=1, requires_grad=False)
    z = randn(T, 5, 5, seed=2)
    a = x + y
    assert not a.requires_grad
    b = a + z
    assert b.requires_grad
    b.backward(T.ones(5, 5, dtype=T.float64))
    same(z.grad, np.ones((5, 5)))
    assert a.grad is None and x.grad is None


def test_requires_grad_(T):
    x = randn(T, 5, 5, requires_grad=False)
    y = randn(T, 5, 5, seed=1)
    assert x.requires_grad_() is x and x.requires_grad
    assert y.requires_grad_() is y and y.requires_grad
    assert x.requires_grad_(True) is x and x.requires_grad
    z = x * y
    raises(RuntimeError, "", z.requires_grad_, False)
    assert z.requires_grad_() is z and z.requires_grad
    assert z.requires_grad_(True) is z and z.requires_grad
    assert x.requires_grad_(False) is x and not x.requires_grad
    assert y.requires_grad_(False) is y and not y.requires_grad


def test_requires_grad_of_integers(T):
    # (requires_grad_ and the flag say one thing, the factories another)
    words, factory_words = ("only Tensors of floating point dtype can require gradients",
                            "Only Tensors of floating point and complex dtype can require gradients")
    raises(RuntimeError, words, T.ones(2, dtype=T.int64).requires_grad_)
    raises(RuntimeError, factory_words, lambda: T.ones(2, dtype=T.int64, requires_grad=True))
    x = T.ones(2, dtype=T.int64)
    raises(RuntimeError, "only Tensors of floating point and complex dtype can require gradients",
           lambda: setattr(x, "requires_grad", True))
    raises(RuntimeError, factory_words, lambda: T.tensor([1, 2], requires_grad=True))


def test_requires_grad_on_non_leaf_error_message(T):
    z = T.ones(2, requires_grad=True) * 2
    raises(RuntimeError, "you can only change requires_grad flags of leaf variables. If you want to use a "
           "computed variable in a subgraph that doesn't require differentiation use var_no_grad = var.detach",
           z.requires_grad_, False)


def test_requires_grad_inplace(T):
    a = randn(T, 5, 5, requires_grad=False)
    b = randn(T, 5, 5, seed=1)
    a += b
    assert a.requires_grad
    a = randn(T, 5, 5, requires_grad=False) + 0
    a += b
    assert a.requires_grad


def test_no_requires_grad_inplace(T):
    a = T.randn(2, 3)
    a.add_(5)
    a.requires_grad = True
    a.sum().backward()
    same(a.grad, np.ones((2, 3)))
    a = T.randn(2, 3)
    b = a[:]
    b.add_(5)
    a.requires_grad = True
    a.sum().backward()
    same(a.grad, np.ones((2, 3)))
    a = T.randn(2, 3)
    b = a[:]
    a.requires_grad = True
    raises(RuntimeError, "a leaf Variable that requires grad", a.add_, 5)


def test_view_of_leaf_that_later_requires_grad(T):
    a = T.randn(2, 3)
    b = a[:]
    a.requires_grad = True
    assert b.requires_grad
    raises(RuntimeError, "a view of a leaf Variable that requires grad", b.add_, 5)


def test_detach(T):
    x = randn(T, 10, 10)
    y = (x + 2).detach()
    z = y * 4 + 2
    assert not y.requires_grad and not z.requires_grad
    x = randn(T, 10, 10)
    y = (x * 2).detach()
    assert not y.requires_grad and y.grad_fn is None
    (x + y).sum().backward()
    same(x.grad, np.ones((10, 10)))
    # in-place detach
    x, y = randn(T, 10, 10), randn(T, 10, 10, seed=1)
    a = x * 2
    (y + a).sum().backward(retain_graph=True)
    a.detach_()
    assert not a.requires_grad
    (y + a).sum().backward()  # does not reach x
    same(x.grad, np.full((10, 10), 2.0))
    same(y.grad, np.full((10, 10), 2.0))
    view = x.narrow(0, 1, 4)
    raises(RuntimeError, "view", view.detach_)


def test_detach_base(T):
    x = randn(T, 10, 10)
    view = x.narrow(0, 1, 4)
    x.detach_()
    assert not x.requires_grad
    assert view.requires_grad and view.grad_fn is not None
    assert view._base is x


def test_detach_shares_memory_and_version(T):
    x = randn(T, 3)
    d = x.detach()
    with T.no_grad():
        d.mul_(2)
    same(x, d.numpy())
    assert x._version == d._version == 1


@xfail_ours("chainrule's numpy() deliberately does not refuse a tensor that requires grad (Tensor.numpy's docstring)")
def test_numpy_requires_grad(T):
    x = T.randn(2, 2, requires_grad=True)
    raises(RuntimeError, r"Can't call numpy\(\) on Tensor that requires grad. Use tensor.detach\(\).numpy\(\) "
           r"instead.", x.numpy)
    with T.no_grad():
        x.numpy()
    T.randn(2, 2).numpy()


def test_attribute_deletion(T):
    x = T.randn(5, 5, requires_grad=True)
    del x.grad
    assert x.grad is None
    raises(RuntimeError, "", lambda: delattr(x, "data"))
    raises(TypeError, "", lambda: setattr(x, "data", None))
    raises(RuntimeError, "", lambda: delattr(x, "requires_grad"))
