"""Backward passes from several threads, ported from PyTorch's TestMultithreadAutograd (run with
test/test_autograd.py): grad modes are per thread, and passes in different threads accumulate into the same .grad.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import sys
import threading
import traceback

import numpy as np

from tests.ported import same, values


def run_in_threads(fn, args=(), num_threads=10):
    """Run fn(*args) in num_threads threads; the first exception a thread raised is raised here."""
    errors = []

    def target():
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 (handed to the main thread)
            errors.append(e)

    threads = [threading.Thread(target=target) for _ in range(num_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


def test_multithreaded_exception_propagation(T):
    def fn():
        raise AssertionError("from a thread")

    try:
        run_in_threads(fn)
    except AssertionError as e:
        assert "from a thread" in str(e)
    else:
        raise AssertionError("expected the thread's error")


def test_simple_backward(T):
    def train_fn():
        x = T.ones(5, 5, requires_grad=True)
        y = (x + 3) * (x + 4) * 0.5
        y.sum().backward()
        same(x.grad, np.full((5, 5), 4.5))

    run_in_threads(train_fn)


def test_simple_backward_same_input(T):
    def train_fn_backward(x):
        y = (x + 3) * (x + 4) * 0.5
        y.sum().backward()

    x = T.ones(5, 5, requires_grad=True)
    run_in_threads(train_fn_backward, (x,))
    same(x.grad, np.full((5, 5), 45.0))  # every thread's pass accumulates into the same .grad

    def train_fn_grad(x):
        (g,) = T.autograd.grad(((x + 3) * (x + 4) * 0.5).sum(), x)
        same(g, np.full((5, 5), 4.5))

    run_in_threads(train_fn_grad, (x,))


def test_python_thread_in_middle(T):
    outcomes = []

    def train_fn_no_retain_graph(y):
        z = y + y ** 2
        try:
            z.sum().backward()
            outcomes.append("ok")
        except RuntimeError as error:
            assert "retain_graph=True" in str(error)
            outcomes.append("raised")

    x = T.ones(5, 5, requires_grad=True)
    run_in_threads(train_fn_no_retain_graph, (x + x ** 2,), num_threads=5)
    assert outcomes.count("ok") >= 1 and len(outcomes) == 5

    def train_fn_retain_graph(y):
        (y + y ** 2).sum().backward(retain_graph=True)

    x = T.ones(5, 5, requires_grad=True)
    run_in_threads(train_fn_retain_graph, (x + x ** 2,), num_threads=5)
    xv = values(x)
    same(x.grad, 5 * (4 * xv ** 3 + 6 * xv ** 2 + 4 * xv + 1))


def test_grad_mode_is_per_thread(T):
    seen = []

    def fn():
        seen.append(T.is_grad_enabled())
        x = T.ones(2, requires_grad=True)
        seen.append((x * 2).requires_grad)

    with T.no_grad():
        run_in_threads(fn, num_threads=2)
        assert not T.is_grad_enabled()
    assert seen == [True, True, True, True]


def test_preserve_backtrace(T):
    class Foo(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            return inp

        @staticmethod
        def backward(ctx, *grad):
            raise ValueError("something")

    t = T.rand(10, requires_grad=True)
    try:
        Foo.apply(t).sum().backward()
    except ValueError:
        tb_str = "\n".join(traceback.format_tb(sys.exc_info()[2]))
        assert 'raise ValueError("something")' in tb_str
    else:
        raise AssertionError("expected the backward's error")


def test_cat_real_to_complex(T):
    inp_c = T.tensor(np.random.default_rng(0).random((3, 2)) + 0.5j, requires_grad=True)
    inp_r = T.tensor(np.random.default_rng(1).standard_normal((3, 2)), requires_grad=True)
    assert T.autograd.gradcheck(lambda a, b: T.cat((a, b), dim=-1), [inp_r, inp_c])
    assert T.autograd.gradcheck(lambda a, b: T.cat((a, b), dim=-1), [inp_c, inp_r])
