"""``autograd.graph.allow_mutation_on_saved_tensors``: inside the block a tensor saved for backward may be
changed in place, and backward uses the value it had when it was saved (PyTorch's semantics)."""

import numpy as np
import pytest

import autograd
import nn
import optim
from autograd.autograd.graph import allow_mutation_on_saved_tensors

OUTSIDE = "Trying to backward outside of the 'allow_mutation_on_saved_tensors' context"


def test_a_saved_input_changed_in_place_and_through_a_view():
    with allow_mutation_on_saved_tensors() as block:
        a = autograd.ones(2, 3, requires_grad=True)
        b = a.clone()
        out = (b**2).sum()
        b.sin_()
        b[0].mul_(5)
        out.backward()
    assert isinstance(block, allow_mutation_on_saved_tensors)
    np.testing.assert_array_equal(a.grad.numpy(), 2 * np.ones((2, 3)))  # d(b²)/db at b = 1, not at sin(1)
    np.testing.assert_allclose(b.numpy()[1], np.sin(1.0) * np.ones(3), rtol=1e-6)  # the writes happened


def test_a_saved_output_changed_in_place():
    with allow_mutation_on_saved_tensors():
        a = autograd.ones(3, requires_grad=True)
        y = a.exp()  # exp saves its output
        z = (y * 3).sum()
        y.mul_(2)
        z.backward()
    np.testing.assert_allclose(a.grad.numpy(), 3 * np.e * np.ones(3), rtol=1e-6)


def test_without_the_block_the_change_is_refused():
    a = autograd.ones(3, requires_grad=True)
    b = a.clone()
    out = (b * b).sum()
    b.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.backward()


def test_a_parameter_stepped_between_forward_and_backward():
    layer = nn.Linear(2, 1, bias=False)
    with autograd.no_grad():
        layer.weight.copy_(autograd.tensor([[1.0, 2.0]]))
    x = autograd.tensor([[3.0, 4.0]], requires_grad=True)
    with allow_mutation_on_saved_tensors():
        loss = layer(x).sum()
        with autograd.no_grad():
            layer.weight.mul_(10)  # the weight the matmul saved changes before backward
        loss.backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 2.0]])  # dL/dx is the weight as it was


def test_backward_after_the_block_and_nesting_are_refused():
    with allow_mutation_on_saved_tensors():
        a = autograd.ones(2, requires_grad=True)
        out = (a.clone() ** 2).sum()
    with pytest.raises(AssertionError, match=OUTSIDE):
        out.backward()
    with pytest.raises(RuntimeError, match="cannot be nested"):
        with allow_mutation_on_saved_tensors():
            with allow_mutation_on_saved_tensors():
                pass
    with allow_mutation_on_saved_tensors():  # a leaf that requires grad still refuses in-place writes
        leaf = autograd.ones(3, requires_grad=True)
        with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
            leaf.add_(1)


def test_a_training_loop_inside_one_block_keeps_nothing_of_past_steps():
    model = nn.Linear(4, 4)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    with allow_mutation_on_saved_tensors() as block:
        for _ in range(300):
            loss = model(autograd.randn(8, 4)).relu().sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        assert len(block.saved_in) < 200  # a few entries per step at most, purged as their graphs go


def test_against_torch():
    torch = pytest.importorskip("torch")
    results = []
    for library in (autograd, torch):
        with library.autograd.graph.allow_mutation_on_saved_tensors():
            a = library.tensor([0.5, -1.0, 2.0], requires_grad=True)
            b = a * 2
            c = b.tanh()  # saves its output
            d = (b * c).sum()  # saves b and c
            b.add_(1)
            c.mul_(-3)
            d.backward()
        results.append(a.grad.numpy())
    np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_a_custom_function_s_saved_tensor():
    class Square(autograd.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return 2 * x * grad

    with allow_mutation_on_saved_tensors():
        a = autograd.tensor([1.0, 2.0], requires_grad=True)
        b = a * 1
        y = Square.apply(b).sum()
        b.mul_(10)
        y.backward()
    np.testing.assert_array_equal(a.grad.numpy(), [2.0, 4.0])
