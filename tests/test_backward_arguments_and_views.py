"""Two refusals PyTorch makes that chainrule used to answer silently:

- ``backward``'s ``gradient`` and ``grad``'s ``grad_outputs`` are tensors (or None): a number, a list of
  numbers or a NumPy array is a TypeError, as PyTorch's, never a gradient made of it; too few of them is
  PyTorch's RuntimeError; extra ones are not read.
- ``view`` of a transpose or a strided slice of a row-major tensor, where the strides allow no view, is
  refused as PyTorch refuses it (a copy would silently take later writes away from the base).

Each case runs on chainrule and, where installed, PyTorch; the error class and the values must agree."""

import numpy as np
import pytest

from .pytorch_programs import OURS, pytorch


def libraries():
    theirs = pytorch()
    return [OURS] + ([theirs] if theirs is not None else [])


def outcome(program, m):
    """("ok", values) or ("raise", the error's class name, its message) of program(m)."""
    try:
        result = program(m)
    except Exception as e:  # noqa: BLE001  (the error itself is what is compared)
        return "raise", type(e).__name__, str(e)
    return "ok", [np.asarray(r.detach().numpy() if hasattr(r, "detach") else r).tolist() for r in result]


def agree(program):
    """The outcome on every library installed; chainrule's is returned. Errors must agree in class."""
    results = [outcome(program, m) for m in libraries()]
    for other in results[1:]:
        assert other[0] == results[0][0], (results[0], other)
        if other[0] == "raise":
            assert other[1] == results[0][1], (results[0], other)
        else:
            for theirs, ours in zip(other[1], results[0][1], strict=True):
                np.testing.assert_allclose(theirs, ours, rtol=1e-6)
    return results[0]


def twice(m):
    x = m.torch.ones(2, requires_grad=True)
    return x, x * 2


@pytest.mark.parametrize("gradient, words", [
    (2.0, None),  # PyTorch reads it as a sequence: 'float' object is not iterable
    ([1.0, 1.0], "but got float"),
    (np.ones(2), "but got float64"),
])
def test_a_gradient_that_is_no_tensor_is_refused(gradient, words):
    def program(m):
        x, y = twice(m)
        y.backward(gradient)
        return (x.grad,)

    result = agree(program)
    assert result[:2] == ("raise", "TypeError")
    if words is not None:
        assert words in result[2]


@pytest.mark.parametrize("call", ["grad number", "grad list", "backward list"])
def test_grad_outputs_that_are_no_tensors_are_refused(call):
    def program(m):
        x, y = twice(m)
        if call == "grad number":
            return m.torch.autograd.grad(y.sum(), x, grad_outputs=2.0)
        if call == "grad list":
            return m.torch.autograd.grad(y.sum(), x, grad_outputs=[2.0])
        m.torch.autograd.backward([y.sum()], [2.0])
        return (x.grad,)

    assert agree(program)[:2] == ("raise", "TypeError")


def test_gradients_given_as_a_tuple_or_list_of_tensors_are_read():
    def program(m):
        x, y = twice(m)
        y.backward((m.torch.tensor([1.0, 3.0]),))
        (x * 5).backward([m.torch.ones(2)])
        z = (x * 4).sum()
        z.backward(m.torch.tensor(0.5))
        return (x.grad,)

    assert agree(program) == ("ok", [[2.0 + 5.0 + 2.0, 6.0 + 5.0 + 2.0]])


def test_too_few_gradients_are_refused_and_extra_ones_not_read():
    def too_few_backward(m):
        x, y = twice(m)
        y.sum().backward([])
        return (x.grad,)

    def too_few_grad(m):
        x, y = twice(m)
        return m.torch.autograd.grad([y.sum(), x.sum()], x, grad_outputs=[None])

    def extra(m):
        x, y = twice(m)
        return m.torch.autograd.grad([y.sum(), x.sum()], x, grad_outputs=[None, None, None])

    assert agree(too_few_backward)[:3] == ("raise", "RuntimeError", "got 1 tensors and 0 gradients")
    assert agree(too_few_grad)[:3] == ("raise", "RuntimeError", "got 2 tensors and 1 gradients")
    assert agree(extra) == ("ok", [[3.0, 3.0]])


@pytest.mark.parametrize("make_view, shape", [
    (lambda x: x.t(), (-1,)),
    (lambda x: x.t(), (2, 6)),
    (lambda x: x[:, :2], (-1,)),
    (lambda x: x.unsqueeze(0).expand(2, 3, 4), (6, 4)),
    (lambda x: x.permute(1, 0), (12,)),
])
def test_a_view_the_strides_allow_not_is_refused(make_view, shape):
    def program(m):
        x = m.torch.arange(12.0).reshape(3, 4)
        return (make_view(x).view(*shape),)

    result = agree(program)
    assert result[:2] == ("raise", "RuntimeError")
    assert "view size is not compatible with input tensor's size and stride" in result[2]
    assert "Use .reshape(...) instead" in result[2]


def test_view_as_is_refused_too_and_reshape_copies():
    def refused(m):
        x = m.torch.arange(6.0).reshape(2, 3)
        return (x.t().view_as(m.torch.zeros(6)),)

    def copied(m):
        x = m.torch.arange(6.0).reshape(2, 3)
        flat = x.t().reshape(-1)
        flat[0] = 100.0  # a copy: x keeps its values
        return flat, x, x.t().reshape_as(m.torch.zeros(6))

    assert agree(refused)[:2] == ("raise", "RuntimeError")
    assert agree(copied) == ("ok", [[100.0, 3.0, 1.0, 4.0, 2.0, 5.0], [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
                                    [0.0, 3.0, 1.0, 4.0, 2.0, 5.0]])


def test_a_view_the_strides_allow_shares_memory():
    def program(m):
        x = m.torch.arange(24.0).reshape(2, 3, 4)
        v = x.transpose(0, 1).view(3, 2, 2, 2)  # (the last dim split: no chunk crossed)
        v[0, 1, 0, 1] = -1.0
        w = x[:, 1:].view(2, 2, 4)  # (rows of a slice stay one run each)
        w[1, 0, 0] = -2.0
        return x, v.shape

    assert agree(program) == ("ok", [[[[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0], [8.0, 9.0, 10.0, 11.0]],
                                      [[12.0, -1.0, 14.0, 15.0], [-2.0, 17.0, 18.0, 19.0],
                                       [20.0, 21.0, 22.0, 23.0]]], [3, 2, 2, 2]])


def test_a_convolutions_output_views_as_pytorchs_contiguous_one():
    """chainrule's convolution output is laid out batch-innermost (not a view of anything the user made): its
    view still works, as it does on PyTorch's contiguous output, and gives the same values."""
    def program(m):
        m.torch.manual_seed(0)
        conv = m.nn.Conv2d(2, 3, 3)
        for p in conv.parameters():
            m.torch.nn.init.constant_(p, 0.25)
        x = m.torch.arange(2 * 2 * 5 * 5, dtype=m.torch.float32).reshape(2, 2, 5, 5) / 50
        return (conv(x).view(2, -1),)

    result = agree(program)
    assert result[0] == "ok" and np.asarray(result[1][0]).shape == (2, 27)


def test_a_view_made_under_no_grad_of_a_view_is_a_view():
    """A view of a (recorded) view taken under no_grad, where the strides allow it, shares the memory."""
    def program(m):
        x = m.torch.arange(12.0).reshape(3, 4)
        row = x[1]
        with m.torch.no_grad():
            v = row.view(1, 4)
            w = x.t()[0].view(1, 3)  # (a column: one step of 4, still one dim)
        v[0, 2] = -1.0
        w[0, 2] = -2.0
        return x, v.shape

    assert agree(program) == ("ok", [[[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, -1.0, 7.0], [-2.0, 9.0, 10.0, 11.0]], [1, 4]])
