"""The library fixes found porting the rest of PyTorch's test/test_autograd.py (tests/test_ported_autograd_rest.py):
cat's legacy 1-d empty input gets an empty gradient; gather/scatter take a 0-d index on a 1-d input; a custom
Function's dirty input must be returned, and a dirty view refuses several outputs; Variable._execution_engine's
queue_callback.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`), against literals.
"""

import numpy as np

from tests.ported import raises, same


def test_cat_gives_a_legacy_empty_input_an_empty_gradient(T):
    # PyTorch leaves a 1-d empty tensor out of a cat of 2-d tensors, yet its gradient is a (0,) tensor, not None
    empty = T.zeros(0, dtype=T.double, requires_grad=True)
    full = T.ones(2, 2, dtype=T.double, requires_grad=True)
    y = T.cat([full, empty], 1)
    same(y, np.ones((2, 2)))
    (y * T.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=T.double)).sum().backward()
    same(empty.grad, np.zeros(0), dtype="float64")
    same(full.grad, [[1.0, 2.0], [3.0, 4.0]])


def test_cat_of_1d_tensors_still_joins_an_empty_one(T):
    empty = T.zeros(0, requires_grad=True)
    x = T.tensor([1.0, 2.0], requires_grad=True)
    y = T.cat([empty, x, empty])
    (y * T.tensor([5.0, 7.0])).sum().backward()
    same(empty.grad, np.zeros(0, np.float32))
    same(x.grad, np.array([5.0, 7.0], np.float32))


def test_gather_and_scatter_take_a_0d_index_on_a_1d_input(T):
    x = T.arange(5.0, requires_grad=True)
    i = T.tensor(2)
    y = T.gather(x, 0, i)
    same(y, np.float32(2.0))
    (y * 3).backward()
    same(x.grad, np.array([0, 0, 3, 0, 0], np.float32))
    base = T.arange(5.0)
    same(T.scatter(base, 0, i, T.tensor(9.0)), np.array([0, 1, 9, 3, 4], np.float32))
    same(T.scatter_add(base, 0, i, T.tensor(9.0)), np.array([0, 1, 11, 3, 4], np.float32))
    same(base.scatter(0, i, 7.0), np.array([0, 1, 7, 3, 4], np.float32))
    # a 0-d index on a 2-d input is still refused
    raises(RuntimeError, "Index tensor must have the same number of dimensions", T.gather, T.ones(2, 3), 0, i)


def test_a_dirty_input_must_be_returned_in_any_grad_mode(T):
    class CloneOfDirty(T.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            a.add_(b)
            ctx.mark_dirty(a)
            return a.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad, grad

    words = "Some elements marked as dirty during the forward method were not returned as output"
    raises(RuntimeError, words, CloneOfDirty.apply, T.ones(2, requires_grad=True).clone(), T.ones(2))
    with T.no_grad():
        raises(RuntimeError, words, CloneOfDirty.apply, T.ones(2), T.ones(2))


def test_a_dirty_view_refuses_several_outputs_only_when_recording(T):
    class Both(T.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            a.add_(b)
            ctx.mark_dirty(a)
            return a, a + b

        @staticmethod
        def backward(ctx, ga, gab):
            return ga + gab, gab

    a = T.ones(2, requires_grad=True)
    raises(RuntimeError, "If your Function modifies inplace an input that is a view of another Tensor, your "
           "Function cannot return more than one Tensor", Both.apply, a.clone().view_as(a), T.ones(2))
    with T.no_grad():
        c, d = Both.apply(a.clone().view_as(a), T.ones(2))
    same(c, np.array([2.0, 2.0], np.float32))
    same(d, np.array([3.0, 3.0], np.float32))


def test_queue_callback_runs_at_the_end_of_the_backward_pass(T):
    engine = T.autograd.Variable._execution_engine
    raises(RuntimeError, "Final callbacks can only be installed during backward pass", engine.queue_callback, print)
    events = []
    x = T.ones(3, requires_grad=True)
    y = x * 2

    def hook(grad):
        events.append("hook")
        engine.queue_callback(lambda: events.append(("callback", x.grad is not None)))
        engine.queue_callback(lambda: engine.queue_callback(lambda: events.append("queued by a callback")))
        return grad

    y.register_hook(hook)
    y.sum().backward()
    assert events == ["hook", ("callback", True), "queued by a callback"]
    same(x.grad, np.full(3, 2.0, np.float32))

