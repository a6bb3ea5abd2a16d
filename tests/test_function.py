"""autograd.Function: custom differentiable functions with PyTorch's protocol."""

import numpy as np
import pytest

import autograd
from autograd import Function
from autograd.function import FunctionCtx, once_differentiable


def _x(*values, requires_grad=True):
    return autograd.tensor(np.array(values, dtype=np.float64), requires_grad=requires_grad)


class Exp(Function):
    @staticmethod
    def forward(ctx, x):
        y = x.exp()
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return grad * y


def legendre3(base):
    """P3(x) = (5x^3 - 3x) / 2, PyTorch's tutorial example, as a subclass of ``base`` (our Function or
    torch.autograd.Function: the same code for both)."""

    class Legendre3(base):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return 0.5 * (5 * x**3 - 3 * x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * 1.5 * (5 * x**2 - 1)

    return Legendre3


Legendre3 = legendre3(Function)


class ScaledProductAndSum(Function):
    """Two outputs, a non-tensor argument and an attribute on ctx."""

    @staticmethod
    def forward(ctx, a, b, k):
        ctx.k = k
        ctx.save_for_backward(a, b)
        return a * b, a + k * b

    @staticmethod
    def backward(ctx, grad_product, grad_sum):
        a, b = ctx.saved_tensors
        return grad_product * b + grad_sum, grad_product * a + ctx.k * grad_sum, None


def test_exp_value_and_gradient():
    x = _x(0.5, -1.0, 2.0)
    y = Exp.apply(x)
    assert np.allclose(y.numpy(), np.exp([0.5, -1.0, 2.0]))
    assert type(y.grad_fn).__name__ == "ExpBackward" and y.grad_fn.name() == "ExpBackward"
    y.sum().backward()
    assert np.allclose(x.grad.numpy(), np.exp([0.5, -1.0, 2.0]))


def test_gradcheck_and_gradgradcheck():
    x = _x(0.3, -0.7, 1.2)
    assert autograd.gradcheck(Exp.apply, (x,))
    assert autograd.gradgradcheck(Exp.apply, (x,))
    assert autograd.gradcheck(Legendre3.apply, (x,))
    assert autograd.gradgradcheck(Legendre3.apply, (x,))
    a, b = _x(0.5, 2.0), _x(-1.0, 3.0)
    assert autograd.gradcheck(lambda a, b: ScaledProductAndSum.apply(a, b, 2.5), (a, b))
    assert autograd.gradgradcheck(lambda a, b: ScaledProductAndSum.apply(a, b, 2.5), (a, b))


def test_higher_derivatives_with_create_graph():
    x = _x(0.5, 2.0)
    y = Legendre3.apply(x).sum()
    (dy,) = autograd.grad(y, x, create_graph=True)
    (d2y,) = autograd.grad(dy.sum(), x)
    assert np.allclose(dy.numpy(), 1.5 * (5 * np.array([0.5, 2.0]) ** 2 - 1))
    assert np.allclose(d2y.numpy(), 15 * np.array([0.5, 2.0]))


def test_backward_runs_with_grad_mode_only_under_create_graph():
    seen = []

    class Spy(Function):
        @staticmethod
        def forward(ctx, x):
            seen.append(("forward", autograd.is_grad_enabled()))
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            seen.append(("backward", autograd.is_grad_enabled()))
            return grad * 2

    x = _x(1.0)
    Spy.apply(x).sum().backward()
    autograd.grad(Spy.apply(x).sum(), x, create_graph=True)
    assert seen == [("forward", False), ("backward", False), ("forward", False), ("backward", True)]


def test_forward_is_not_recorded():
    class Inner(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.inner = x * 3
            return ctx.inner + 1

        @staticmethod
        def backward(ctx, grad):
            return grad * 3

    x = _x(1.0, 2.0)
    y = Inner.apply(x)
    assert y.grad_fn.inner.requires_grad is False
    assert y.grad_fn.inner.grad_fn is None and type(y.grad_fn).__name__ == "InnerBackward"


def test_two_outputs_and_a_non_tensor_argument():
    a, b = _x(1.0, 2.0), _x(3.0, 4.0)
    product, total = ScaledProductAndSum.apply(a, b, 10.0)
    assert product.grad_fn is not None and total.grad_fn is not None
    (product.sum() * 2 + total.sum()).backward()
    assert np.allclose(a.grad.numpy(), 2 * np.array([3.0, 4.0]) + 1)
    assert np.allclose(b.grad.numpy(), 2 * np.array([1.0, 2.0]) + 10)


def test_only_one_of_two_outputs_used_gets_zeros_for_the_other():
    received = []

    class Pair(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            received.append((g1, g2))
            return g1 * 2 + g2 * 3

    x = _x(1.0, 2.0)
    first, _ = Pair.apply(x)
    first.sum().backward()
    g1, g2 = received[0]
    assert np.array_equal(g2.numpy(), [0.0, 0.0]) and np.array_equal(x.grad.numpy(), [2.0, 2.0])


def test_set_materialize_grads_false_gives_none():
    received = []

    class Pair(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(False)
            return x * 2, x * 3

        @staticmethod
        def backward(ctx, g1, g2):
            received.append(g2)
            return g1 * 2

    x = _x(1.0)
    Pair.apply(x)[0].sum().backward()
    assert received == [None] and np.array_equal(x.grad.numpy(), [2.0])


def test_needs_input_grad():
    flags = []

    class Mul(Function):
        @staticmethod
        def forward(ctx, a, b, scale):
            flags.append(ctx.needs_input_grad)
            return a * b * scale

        @staticmethod
        def backward(ctx, grad):
            return None, None, None

    Mul.apply(_x(1.0), _x(2.0, requires_grad=False), 3)
    with autograd.no_grad():
        Mul.apply(_x(1.0), _x(2.0), 3)
    assert flags == [(True, False, False), (True, True, False)]  # grad mode aside, as PyTorch's


def test_wrong_number_of_gradients_raises_as_pytorch():
    class Missing(Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, grad):
            return grad

    with pytest.raises(RuntimeError, match=r"function MissingBackward returned an incorrect number of gradients "
                                           r"\(expected 2, got 1\)"):
        Missing.apply(_x(1.0), _x(2.0)).sum().backward()


def test_extra_trailing_none_gradients_are_allowed():
    class Extra(Function):
        @staticmethod
        def forward(ctx, a):
            return a * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * 2, None, None

    x = _x(1.0)
    Extra.apply(x).sum().backward()
    assert np.array_equal(x.grad.numpy(), [2.0])


def test_gradient_of_the_wrong_shape_raises_naming_shapes():
    class BadShape(Function):
        @staticmethod
        def forward(ctx, a):
            return a.sum()

        @staticmethod
        def backward(ctx, grad):
            return autograd.ones(2, 2, dtype=autograd.float64)

    with pytest.raises(RuntimeError, match=r"BadShapeBackward returned an invalid gradient at index 0 - "
                                           r"got \[2, 2\] but expected shape compatible with \[3\]"):
        BadShape.apply(_x(1.0, 2.0, 3.0)).backward()


def test_broadcast_gradient_is_summed_to_the_input_shape():
    class Broadcasting(Function):
        @staticmethod
        def forward(ctx, a):
            return a.sum()

        @staticmethod
        def backward(ctx, grad):
            return autograd.ones(4, 3, dtype=autograd.float32)

    x = _x(1.0, 2.0, 3.0)
    Broadcasting.apply(x).backward()
    assert x.grad.dtype == np.float64 and np.array_equal(x.grad.numpy(), [4.0, 4.0, 4.0])


def test_gradient_for_a_non_tensor_input_raises():
    class Scaled(Function):
        @staticmethod
        def forward(ctx, a, k):
            return a * k

        @staticmethod
        def backward(ctx, grad):
            return grad * 2, grad

    with pytest.raises(RuntimeError, match="returned a gradient different than None at position 2"):
        Scaled.apply(_x(1.0), 2.0).sum().backward()


def test_saved_tensor_changed_in_place_raises_naming_its_shape():
    x = _x(1.0, 2.0, 3.0)
    h = x * 1  # not a leaf: it may be changed in place
    y = Legendre3.apply(h)
    with autograd.no_grad():
        h.mul_(2)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation: \[torch\.DoubleTensor \[3\]\], which is "
                                           r"output 0 of Mul, is at version 1; expected version 0 instead"):
        y.sum().backward()


def test_saved_tensors_freed_after_backward():
    x = _x(1.0)
    y = Exp.apply(x)
    y.backward(retain_graph=True)
    y.backward()
    assert np.allclose(x.grad.numpy(), 2 * np.exp(1.0))
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_mark_non_differentiable():
    received = []

    class SortWithIndices(Function):
        @staticmethod
        def forward(ctx, x):
            order = np.argsort(x.numpy())
            idx = autograd.tensor(order)
            values = x[idx]
            ctx.mark_non_differentiable(idx)
            ctx.save_for_backward(idx)
            ctx.n = x.shape[0]
            return values, idx

        @staticmethod
        def backward(ctx, grad_values, grad_idx):
            received.append(grad_idx)
            (idx,) = ctx.saved_tensors
            grad = autograd.zeros(ctx.n, dtype=grad_values.dtype)
            grad[idx] = grad_values
            return grad

    x = _x(3.0, 1.0, 2.0)
    values, idx = SortWithIndices.apply(x)
    assert not idx.requires_grad and values.requires_grad
    (values * autograd.tensor([1.0, 10.0, 100.0], dtype=autograd.float64)).sum().backward()
    assert np.array_equal(values.numpy(), [1.0, 2.0, 3.0])
    assert np.array_equal(x.grad.numpy(), [100.0, 1.0, 10.0])


def test_float_output_marked_non_differentiable_does_not_require_grad():
    class Halves(Function):
        @staticmethod
        def forward(ctx, x):
            mask = (x > 0).double()
            ctx.mark_non_differentiable(mask)
            return x * 2, mask

        @staticmethod
        def backward(ctx, grad, grad_mask):
            assert np.array_equal(grad_mask.numpy(), [0.0, 0.0])
            return grad * 2

    x = _x(1.0, -1.0)
    y, mask = Halves.apply(x)
    assert not mask.requires_grad and mask.grad_fn is None
    y.sum().backward()
    assert np.array_equal(x.grad.numpy(), [2.0, 2.0])


def test_setup_context_style():
    class Cube(Function):
        @staticmethod
        def forward(x, power=3):
            return x**power

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, power = inputs
            ctx.power = power
            ctx.save_for_backward(x)

        @staticmethod
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            return grad * ctx.power * x ** (ctx.power - 1), None

    x = _x(2.0, -1.0)
    Cube.apply(x).sum().backward()
    assert np.allclose(x.grad.numpy(), [12.0, 3.0])
    assert autograd.gradcheck(lambda x: Cube.apply(x, 2), (x,))


def test_once_differentiable():
    class NumpyExp(Function):
        @staticmethod
        def forward(ctx, x):
            y = autograd.tensor(np.exp(x.numpy()))
            ctx.save_for_backward(y)
            return y

        @staticmethod
        @once_differentiable
        def backward(ctx, grad):
            (y,) = ctx.saved_tensors
            return autograd.tensor(grad.numpy() * y.numpy())

    x = _x(0.0, 1.0)
    (g,) = autograd.grad(NumpyExp.apply(x).sum(), x)
    assert np.allclose(g.numpy(), np.exp([0.0, 1.0]))
    (g,) = autograd.grad((NumpyExp.apply(x) ** 2).sum(), x, create_graph=True)  # dL/dy = 2y needs grad
    assert np.allclose(g.numpy(), 2 * np.exp([0.0, 2.0]))
    with pytest.raises(RuntimeError, match="trying to differentiate twice a function that was marked with "
                                           "@once_differentiable"):
        autograd.grad(g.sum(), x)


def test_input_returned_unchanged_is_a_new_tensor_on_the_same_memory():
    class Identity(Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, grad):
            return grad

    x = _x(1.0, 2.0)
    y = Identity.apply(x)
    assert y is not x and y.grad_fn is not None and np.shares_memory(y.numpy(), x.numpy())
    y.sum().backward()
    assert np.array_equal(x.grad.numpy(), [1.0, 1.0])


def test_mark_dirty_rebases_the_changed_input():
    class AddOneInPlace(Function):
        @staticmethod
        def forward(ctx, x):
            x.add_(1)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, grad):
            return grad

    leaf = _x(1.0, 2.0)
    h = leaf * 2
    out = AddOneInPlace.apply(h)
    assert out is h and type(h.grad_fn).__name__ == "AddOneInPlaceBackward"
    (out * out).sum().backward()
    assert np.array_equal(h.numpy(), [3.0, 5.0]) and np.array_equal(leaf.grad.numpy(), [12.0, 20.0])
    with pytest.raises(RuntimeError, match="leaf"):
        AddOneInPlace.apply(_x(1.0))


def _dirty_through_data_program(torch):
    """A forward that writes its input through .data (no version counter sees that) and marks it
    dirty: what an earlier op saved of the input is stale, so its backward must refuse."""

    class TripleThroughData(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            x.data.mul_(3)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, grad):
            return grad * 3

    class Untouched(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, grad):
            return grad

    a = torch.tensor([1.0, 2.0], requires_grad=True)
    b = a.clone()
    y = b * b  # saves b
    c = TripleThroughData.apply(b)
    try:
        (y.sum() + c.sum()).backward()
        refused = False
    except RuntimeError as e:
        refused = "modified by an inplace operation" in str(e)
    d = a.clone()
    Untouched.apply(d)
    return refused, b._version, d._version


def test_mark_dirty_counts_as_a_write_even_when_forward_went_around_the_counter():
    # without the bump, y's backward read the tripled b: a.grad [9, 15] instead of an error
    ours = _dirty_through_data_program(autograd)
    assert ours == (True, 1, 1)
    torch = pytest.importorskip("torch")
    assert _dirty_through_data_program(torch) == ours


def test_no_graph_without_grad():
    x = _x(1.0, requires_grad=False)
    y = Exp.apply(x)
    assert y.grad_fn is None and not y.requires_grad
    with autograd.no_grad():
        y = Exp.apply(_x(1.0))
    assert y.grad_fn is None and not y.requires_grad


def test_hooks_and_retain_grad_on_outputs():
    x = _x(1.0, 2.0)
    a, b = ScaledProductAndSum.apply(x, x * 1, 1.0)
    seen = []
    a.register_hook(lambda g: seen.append(g.numpy().copy()))
    b.retain_grad()
    (a.sum() * 3 + b.sum()).backward()
    assert np.array_equal(seen[0], [3.0, 3.0]) and np.array_equal(b.grad.numpy(), [1.0, 1.0])


def test_legacy_instance_call_and_missing_backward_raise():
    class NoBackward(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

    with pytest.raises(NotImplementedError, match="backward or vjp"):
        NoBackward.apply(_x(1.0)).sum().backward()
    with pytest.raises(RuntimeError, match="Legacy autograd function"):
        NoBackward()(_x(1.0))


def test_save_for_backward_rejects_non_tensors():
    class SavesNumber(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x, 3)
            return x

    with pytest.raises(TypeError, match="argument 1 is of type int"):
        SavesNumber.apply(_x(1.0))


def test_names_exported():
    assert autograd.Function is Function and autograd.autograd.Function is Function
    assert autograd.autograd.function.once_differentiable is once_differentiable
    assert issubclass(type(Exp.apply(_x(1.0)).grad_fn), FunctionCtx)


@pytest.mark.torch
def test_against_pytorch_values_gradients_and_second_derivatives():
    torch = pytest.importorskip("torch")

    TorchLegendre3 = legendre3(torch.autograd.Function)

    values = np.array([0.3, -1.2, 2.0])
    theirs = torch.tensor(values, requires_grad=True)
    ours = autograd.tensor(values, requires_grad=True)
    ty = TorchLegendre3.apply(theirs)
    oy = Legendre3.apply(ours)
    assert np.allclose(ty.detach().numpy(), oy.numpy())
    (tg,) = torch.autograd.grad(ty.sum(), theirs, create_graph=True)
    (og,) = autograd.grad(oy.sum(), ours, create_graph=True)
    assert np.allclose(tg.detach().numpy(), og.numpy())
    (tg2,) = torch.autograd.grad((tg**2).sum(), theirs)
    (og2,) = autograd.grad((og**2).sum(), ours)
    assert np.allclose(tg2.numpy(), og2.numpy())


@pytest.mark.torch
def test_wrong_gradient_count_message_matches_pytorch():
    torch = pytest.importorskip("torch")

    class Missing(torch.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            return a * b

        @staticmethod
        def backward(ctx, grad):
            return grad

    a = torch.ones(1, requires_grad=True)
    with pytest.raises(RuntimeError) as theirs:
        Missing.apply(a, a).sum().backward()
    assert "returned an incorrect number of gradients (expected 2, got 1)" in str(theirs.value)


def test_ctx_may_carry_attributes_named_like_the_node_s_own():
    class Named(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.name, ctx.inputs = "mine", (x,)
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            assert ctx.name == "mine" and len(ctx.inputs) == 1
            return grad * 2

    x = _x(1.0)
    y = Named.apply(x)
    assert repr(y.grad_fn) == "<NamedBackward>"
    y.sum().backward()
    assert np.array_equal(x.grad.numpy(), [2.0])


def test_anomaly_mode_names_the_function_that_made_a_nan():
    class NanGrad(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1

        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    with autograd.detect_anomaly():
        y = NanGrad.apply(_x(1.0))
        with pytest.raises(RuntimeError, match="Function 'NanGradBackward' returned nan values in its 0th output"):
            y.sum().backward()
