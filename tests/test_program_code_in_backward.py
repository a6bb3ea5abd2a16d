"""The program's own code that a backward pass calls (a custom Function's backward, a tensor hook, a node hook)
asks ``__torch_function__`` as the program did, while the pass's own formulas ask nothing, as PyTorch's C++ ones:
a saved subclass tensor multiplied in a custom backward or a hook is asked, a mode opened there is asked, a mode the
program entered around ``backward()`` is not (backward went through it, and it is off its stack while it answers),
nor is anything inside ``DisableTorchFunction``; an autocast block in a custom backward (``custom_bwd``) casts."""

import pytest

from .pytorch_programs import OURS, pytorch


@pytest.fixture(params=["autograd", "torch"])
def T(request):
    if request.param == "autograd":
        return OURS.torch
    theirs = pytorch()
    if theirs is None:
        pytest.skip("PyTorch is not installed")
    return theirs.torch


def _machinery(T):
    if T is OURS.torch:
        from autograd._C import DisableTorchFunction
        from autograd.overrides import TorchFunctionMode
    else:
        from torch._C import DisableTorchFunction
        from torch.overrides import TorchFunctionMode
    seen = []

    class Logged(T.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            seen.append("subclass " + func.__name__)
            return super().__torch_function__(func, types, args, kwargs or {})

    class Logging(TorchFunctionMode):
        def __init__(self, label):
            super().__init__()
            self.label = label

        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(f"{self.label} {func.__name__}")
            return func(*args, **(kwargs or {}))

    return seen, Logged, Logging, DisableTorchFunction


def _scaling(T, Logging=None):
    class Scaling(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, w):
            ctx.save_for_backward(w)
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            (w,) = ctx.saved_tensors
            if Logging is None:
                return grad.mul(3) * w, None
            with Logging("inner"):
                return grad.mul(3), None

    return Scaling


def test_a_custom_backward_asks_the_saved_subclass_and_no_outer_mode(T):
    seen, Logged, Logging, _ = _machinery(T)
    x, w = T.ones(2, requires_grad=True), T.full((2,), 0.5).as_subclass(Logged)
    y = _scaling(T).apply(x, w)
    seen.clear()
    with Logging("outer"):
        y.sum().backward()
    assert seen == ["outer sum", "outer backward", "subclass mul"]
    assert x.grad.tolist() == [1.5, 1.5]


def test_a_mode_opened_in_a_custom_backward_is_asked(T):
    seen, _, Logging, _ = _machinery(T)
    x = T.ones(2, requires_grad=True)
    y = _scaling(T, Logging).apply(x, T.ones(2))
    seen.clear()
    y.sum().backward()
    assert seen == ["inner mul"] and x.grad.tolist() == [3.0, 3.0]


def test_tensor_and_node_hooks_ask_the_subclass(T):
    seen, Logged, _, _ = _machinery(T)
    w = T.full((2,), 2.0).as_subclass(Logged)
    x = T.ones(2, requires_grad=True)
    x.register_hook(lambda grad: grad * w)
    y = x * 3
    y.grad_fn.register_hook(lambda grad_inputs, grad_outputs: (grad_inputs[0] + w, *grad_inputs[1:]))
    seen.clear()
    y.sum().backward()
    assert seen == ["subclass add", "subclass mul"]
    assert x.grad.tolist() == [10.0, 10.0]  # (3 + 2) * 2


def test_nothing_is_asked_in_a_backward_inside_disable_torch_function(T):
    seen, Logged, _, DisableTorchFunction = _machinery(T)
    x, w = T.ones(2, requires_grad=True), T.full((2,), 0.5).as_subclass(Logged)
    y = _scaling(T).apply(x, w)
    seen.clear()
    with DisableTorchFunction():
        y.sum().backward()
    assert seen == [] and x.grad.tolist() == [1.5, 1.5]


def test_custom_bwd_casts_in_the_forwards_autocast_state(T):
    dtypes = []

    class Product(T.autograd.Function):
        @staticmethod
        @T.amp.custom_fwd(device_type="cpu")
        def forward(ctx, a, b):
            ctx.save_for_backward(a, b)
            return a.mm(b)

        @staticmethod
        @T.amp.custom_bwd(device_type="cpu")
        def backward(ctx, grad):
            a, b = ctx.saved_tensors
            grad_a, grad_b = grad.mm(b.t()), a.t().mm(grad)
            dtypes.append((grad_a.dtype, grad_b.dtype))
            return grad_a, grad_b

    a = T.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    b = T.tensor([[0.5, -1.0], [2.0, 0.25]], requires_grad=True)
    with T.autocast(device_type="cpu", dtype=T.float16):
        out = Product.apply(a, b)
    assert out.dtype == T.float16
    out.float().sum().backward()
    assert dtypes == [(T.float16, T.float16)]  # mm lowered in the backward too
    assert a.grad.dtype == T.float32 and a.grad.tolist() == [[-0.5, 2.25], [-0.5, 2.25]]
    assert b.grad.tolist() == [[4.0, 4.0], [6.0, 6.0]]
