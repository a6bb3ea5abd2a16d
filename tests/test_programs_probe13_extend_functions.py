"""Extending PyTorch as tutorials and libraries do (see tests/pytorch_programs.py), each program run on chainrule and
on PyTorch and compared: values, gradients, printed text and errors. ``autograd.Function`` as tutorials combine it:
``mark_non_differentiable`` with ``once_differentiable``; ``set_materialize_grads(False)`` with ``setup_context``,
``save_for_forward`` and ``jvp``; a custom operator's context marking outputs non-differentiable."""

import numpy as np

from .probe13_extend_common import NS, sub
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# autograd.Function as tutorials combine it
# ----------------------------------------------------------------------------------------------


def functions(m):
    torch = m.torch
    forward_ad = sub(m, "autograd.forward_ad")

    class Sort(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            values, indices = x.sort()
            ctx.mark_non_differentiable(indices)
            ctx.save_for_backward(indices)
            return values, indices

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad_values, grad_indices):
            (indices,) = ctx.saved_tensors
            grad = torch.zeros_like(grad_values)
            grad.scatter_(0, indices, grad_values)
            return grad

    class ScaleAndCopy(torch.autograd.Function):
        @staticmethod
        def forward(x, k):
            return x * k, x.clone()

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, k = inputs
            ctx.k = k
            ctx.set_materialize_grads(False)
            ctx.save_for_forward(x)

        @staticmethod
        def backward(ctx, grad_scaled, grad_copy):
            grad = None
            if grad_scaled is not None:
                grad = grad_scaled * ctx.k
            if grad_copy is not None:
                grad = grad_copy if grad is None else grad + grad_copy
            return grad, None

        @staticmethod
        def jvp(ctx, tangent_x, tangent_k):
            return tangent_x * ctx.k, tangent_x

    x = torch.tensor([3.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    values, indices = Sort.apply(x)
    (values * torch.tensor([1.0, 10.0, 100.0], dtype=torch.float64)).sum().backward()
    out = [values, indices, indices.requires_grad, x.grad.clone()]
    x.grad = None
    scaled, copy = ScaleAndCopy.apply(x, 2.5)
    scaled.sum().backward()  # (copy's gradient is None, not zeros: set_materialize_grads(False))
    out.append(x.grad.clone())
    with forward_ad.dual_level():
        dual = forward_ad.make_dual(x.detach(), torch.ones(3, dtype=torch.float64))
        scaled, copy = ScaleAndCopy.apply(dual, 2.5)
        out += [forward_ad.unpack_dual(scaled).tangent, forward_ad.unpack_dual(copy).tangent]
    g, = torch.autograd.grad(Sort.apply(x)[0].sum(), x, create_graph=True)
    out.append(g.requires_grad)
    out.append(torch.autograd.gradcheck(lambda t: ScaleAndCopy.apply(t, 1.5), (x,), check_forward_ad=True))
    return out


def test_functions_with_non_differentiable_outputs_and_forward_mode():
    ours, _ = run_both(functions)
    assert ours[3].tolist() == [100.0, 1.0, 10.0] and ours[4].tolist() == [2.5] * 3


def operator_with_function_context(m):
    """register_autograd's ctx is an autograd.Function's: mark_non_differentiable, set_materialize_grads."""
    torch = m.torch

    @torch.library.custom_op(f"{NS}::numpy_sort", mutates_args=())
    def numpy_sort(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a = x.numpy()
        order = np.argsort(a, kind="stable")
        return torch.from_numpy(a[order].copy()), torch.from_numpy(order.astype(np.float32))

    seen = []

    def setup_context(ctx, inputs, output):
        values, order = output
        ctx.mark_non_differentiable(order)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(order)

    def backward(ctx, grad_values, grad_order):
        seen.append(grad_order is None)
        (order,) = ctx.saved_tensors
        grad = torch.zeros_like(grad_values)
        grad[order.long()] = grad_values
        return grad

    numpy_sort.register_autograd(backward, setup_context=setup_context)
    x = torch.tensor([3.0, 1.0, 2.0, 1.5], requires_grad=True)
    values, order = numpy_sort(x)
    (values * torch.tensor([1.0, 10.0, 100.0, 1000.0])).sum().backward()
    return values, order, order.requires_grad, x.grad, seen


def test_an_operators_context_marks_outputs_non_differentiable():
    ours, _ = run_both(operator_with_function_context)
    assert ours[2] is False and ours[3].tolist() == [1000.0, 1.0, 100.0, 10.0] and ours[4] == [True]
