"""``torch.autograd.graph.register_multi_grad_hook``, as its docstring and the notes use it, run on
chainrule and on PyTorch: once per backward pass, with every gradient of the pass ("all") or the first
("any")."""

import numpy as np

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def test_the_docstring_program():
    def program(m):
        t = m.torch
        a = t.linspace(0.1, 0.6, 6).reshape(2, 3).requires_grad_()
        b = t.linspace(1.0, 2.0, 6).reshape(2, 3).requires_grad_()
        c = a * b
        d = a * b
        calls = []
        t.autograd.graph.register_multi_grad_hook((a, b, c, d), lambda grads: calls.append(
            [g is not None for g in grads]))
        c.sum().backward(retain_graph=True)
        c.sum().backward(inputs=(a,), retain_graph=True)
        return calls

    assert _same(program) == [[True, True, True, False], [True, False, True, False]]


def test_all_mode_sees_the_gradients_once_per_pass():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        a, b = x * 2, x * 3
        seen = []
        handle = t.autograd.graph.register_multi_grad_hook((a, b), lambda grads: seen.append(
            [g.clone() for g in grads]))
        (a * b).sum().backward(retain_graph=True)
        t.autograd.grad((a + b).sum(), x, retain_graph=True)
        handle.remove()
        (a * b).sum().backward()
        return seen

    seen = _same(program)
    assert len(seen) == 2
    np.testing.assert_array_equal(seen[0][0], [3.0, 6.0])
    np.testing.assert_array_equal(seen[1][1], [1.0, 1.0])


def test_any_mode_sees_the_first_gradient_once_per_pass():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        a = x * 2
        b = a * 3
        seen = []
        t.autograd.graph.register_multi_grad_hook((a, b), lambda grad: seen.append(grad.clone()), mode="any")
        b.sum().backward(retain_graph=True)
        (a * 5).sum().backward()
        return seen

    first, second = _same(program)
    np.testing.assert_array_equal(first, [1.0, 1.0])   # b's, computed before a's
    np.testing.assert_array_equal(second, [5.0, 5.0])


def test_an_unknown_mode_is_refused():
    def program(m):
        x = m.torch.ones(2, requires_grad=True)
        m.torch.autograd.graph.register_multi_grad_hook((x,), print, mode="some")

    raises_alike(program, "Expects mode to be one of", kind=ValueError)


def test_the_handle_is_a_removable_handle():
    import autograd
    from autograd.hooks import RemovableHandle

    a, b = autograd.ones(2, requires_grad=True), autograd.ones(2, requires_grad=True)
    seen = []
    handle = autograd.autograd.graph.register_multi_grad_hook((a, b), lambda grads: seen.append(len(grads)))
    assert isinstance(handle, RemovableHandle)
    with handle:
        (a * b).sum().backward()
    (a * b).sum().backward()  # removed on leaving the block
    assert seen == [2]
