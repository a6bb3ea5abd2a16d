"""Custom Functions that change tensors in place (``ctx.mark_dirty``) and save them, as PyTorch's
extending notes write them, run on chainrule and on PyTorch: what forward saves is checked against
changes made after forward returns, so forward's own in-place work on a saved tensor is no change."""

import numpy as np
import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def doubling(m, save):
    """x.mul_(2) in place, marked dirty; ``save``: when forward saves x ('before' or 'after' the write,
    or 'setup_context' in the separate style), and backward reads it."""
    t = m.torch

    if save == "setup_context":
        class Double(t.autograd.Function):
            @staticmethod
            def forward(x):
                x.mul_(2)
                return x

            @staticmethod
            def setup_context(ctx, inputs, output):
                ctx.mark_dirty(inputs[0])
                ctx.save_for_backward(output)

            @staticmethod
            def backward(ctx, grad):
                x, = ctx.saved_tensors
                return grad * x

        return Double.apply

    class Double(t.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            if save == "before":
                ctx.save_for_backward(x)
            x.mul_(2)
            ctx.mark_dirty(x)
            if save == "after":
                ctx.save_for_backward(x)
            return x

        @staticmethod
        def backward(ctx, grad):
            x, = ctx.saved_tensors
            return grad * x

    return Double.apply


@pytest.mark.parametrize("save", ["before", "after", "setup_context"])
def test_a_dirty_tensor_saved_by_forward_is_what_backward_reads(save):
    def program(m):
        a = m.torch.tensor([1.0, 3.0], requires_grad=True)
        b = a.clone()
        y = doubling(m, save)(b)
        y.sum().backward()
        return [y is b, b._version, a.grad]

    same_object, version, grad = _same(program)
    assert same_object is True and version == 2  # the write, and mark_dirty's own count
    np.testing.assert_array_equal(grad, [2.0, 6.0])  # the saved value is the doubled one


def test_a_dirty_tensor_changed_again_after_forward_is_refused():
    def program(m):
        b = m.torch.tensor([1.0, 3.0], requires_grad=True).clone()
        y = doubling(m, "after")(b)
        b.add_(1)
        y.sum().backward()

    raises_alike(program, "modified by an inplace operation", kind=RuntimeError)


def test_mark_dirty_on_a_leaf_that_requires_grad_is_refused():
    def program(m):
        doubling(m, "after")(m.torch.tensor([3.0, 1.0], requires_grad=True))

    raises_alike(program, "leaf Variable that requires grad", kind=RuntimeError)


def test_under_no_grad_a_dirty_input_comes_back_as_a_new_tensor_without_its_history():
    def program(m):
        b = m.torch.tensor([1.0, 3.0], requires_grad=True).clone()
        with m.torch.no_grad():
            y = doubling(m, "before")(b)
        before = b._version
        y.add_(1)  # the same memory and version counter
        c = m.torch.tensor([1.0, 3.0])
        return [y, y is b, y.requires_grad, y.grad_fn is None, b, b._version - before,
                doubling(m, "after")(c) is c]

    values, is_b, requires, no_history, b, writes, same_plain = _same(program)
    np.testing.assert_array_equal(values, [3.0, 7.0])
    np.testing.assert_array_equal(b, [3.0, 7.0])
    assert (is_b, requires, no_history, writes, same_plain) == (False, False, True, 1, True)
