"""gradcheck and gradgradcheck as PyTorch's docs use them on custom Functions, run on chainrule and
on PyTorch: the options (fast_mode, raise_exception, check_undefined_grad, check_batched_grad), a
wrong backward caught, and which outputs are checked (only those that require grad, when some do)."""

import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def squares(m, factor):
    """x², with a backward that is right for factor 2 and wrong otherwise."""
    t = m.torch

    class Square(t.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            x, = ctx.saved_tensors
            return factor * x * grad

    return Square.apply


def _x(t):
    return t.tensor([1.0, 2.0], dtype=t.double, requires_grad=True)


def test_gradcheck_passes_a_right_backward_with_every_option():
    def program(m):
        t = m.torch
        square, x = squares(m, 2), _x(t)
        check = t.autograd.gradcheck
        return [check(square, (x,)), check(square, (x,), fast_mode=True), check(square, x),
                check(square, (x,), check_undefined_grad=True), check(square, (x,), check_batched_grad=True),
                t.autograd.gradgradcheck(square, (x,))]

    assert _same(program) == [True] * 6


def test_gradcheck_catches_a_wrong_backward():
    def quiet(m):
        t = m.torch
        square, x = squares(m, 3), _x(t)
        return [t.autograd.gradcheck(square, (x,), raise_exception=False),
                t.autograd.gradcheck(square, (x,), raise_exception=False, fast_mode=True),
                t.autograd.gradgradcheck(square, (x,), raise_exception=False)]

    # gradgradcheck compares the second derivative of the backward as written (3x: 3), so it passes
    assert _same(quiet) == [False, False, True]

    def loud(m):
        m.torch.autograd.gradcheck(squares(m, 3), (_x(m.torch),))

    raises_alike(loud, "mismatch", kind=RuntimeError)


@pytest.mark.parametrize("check", ["gradcheck", "gradgradcheck"])
def test_an_output_that_needs_no_gradient_is_not_checked(check):
    def program(m):
        t = m.torch
        x = _x(t)
        return getattr(t.autograd, check)(lambda x: (x.detach(), x ** 3), (x,))

    assert _same(program) is True


def test_a_non_differentiable_output_of_a_function_is_not_checked():
    def program(m):
        t = m.torch

        class SortWithMask(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                values, indices = x.sort()
                mask = (x > 1.5).double()
                ctx.mark_non_differentiable(indices, mask)
                ctx.save_for_backward(indices, x)
                return values, indices, mask

            @staticmethod
            def backward(ctx, grad_values, grad_indices, grad_mask):
                indices, x = ctx.saved_tensors
                grad = t.zeros_like(x)
                grad.index_add_(0, indices, grad_values)
                return grad

        x = t.tensor([3.0, 1.0, 2.0], dtype=t.double, requires_grad=True)
        return t.autograd.gradcheck(SortWithMask.apply, (x,))

    assert _same(program) is True


def test_outputs_cut_from_the_graph_must_have_zero_finite_differences():
    def program(m):
        t = m.torch
        t.autograd.gradcheck(lambda x: x.detach() * 2, (_x(t),))

    raises_alike(program, "mismatch|zero", kind=RuntimeError)


def test_gradcheck_needs_an_input_that_requires_grad():
    def program(m):
        t = m.torch
        t.autograd.gradcheck(lambda x: x * 2, (t.tensor([1.0, 2.0], dtype=t.double),))

    raises_alike(program, "requires.grad|require grad", kind=ValueError)
