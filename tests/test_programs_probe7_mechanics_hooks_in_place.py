"""The programs of PyTorch's "Autograd mechanics" notes (docs/source/notes/autograd.rst) and of torch.autograd's
docstrings, run as written on chainrule and on PyTorch. Each program returns its values; both libraries must agree,
and the values are asserted without PyTorch too. Hooks on tensors and nodes (a tensor hook changing the gradient
passed on, ``retain_grad``, the refusals for tensors that need no grad) and in-place correctness checks (a saved
output or input changed in place, version counters shared with ``detach``, in-place on a leaf under ``no_grad``,
writes through views)."""

import numpy as np

from tests.program_errors import raises_alike

from .probe7_mechanics_common import _same

# -- hooks on tensors and nodes ----------------------------------------------------------------------


def test_a_tensor_hook_changes_the_gradient_passed_on_and_can_be_removed():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        handle = x.register_hook(lambda g: g * 2)
        (x * 1).sum().backward()
        first = x.grad.clone()
        handle.remove()
        (x * 1).sum().backward()
        return [first, x.grad]

    first, second = _same(program)
    np.testing.assert_array_equal(first, [2.0, 2.0])
    np.testing.assert_array_equal(second, [3.0, 3.0])


def test_retain_grad_on_a_non_leaf_stores_the_gradient_after_every_tensor_hook():
    def program(m):
        x = m.torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = x * 2
        y.register_hook(lambda g: g * 10)
        y.retain_grad()
        z = x * 3
        z.retain_grad()
        z.register_hook(lambda g: g * 10)  # registered after retain_grad, and still run before it
        (y + z).sum().backward()
        return [y.grad, z.grad, x.grad, y.retains_grad, x.retains_grad]

    y_grad, z_grad, x_grad, y_retains, x_retains = _same(program)
    np.testing.assert_array_equal(y_grad, [10.0] * 3)
    np.testing.assert_array_equal(z_grad, [10.0] * 3)
    np.testing.assert_array_equal(x_grad, [50.0] * 3)
    assert (y_retains, x_retains) == (True, False)


def test_reading_grad_of_a_non_leaf_warns():
    import warnings

    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        y.sum().backward()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            g = y.grad
        return [g is None, [type(w.message).__name__ for w in caught]]

    assert _same(program) == [True, ["UserWarning"]]


def test_a_hook_on_a_tensor_that_needs_no_grad_is_refused():
    def program(m):
        m.torch.tensor([1.0, 2.0]).register_hook(lambda g: g)

    raises_alike(program, "requires_grad|require grad|does not require", kind=RuntimeError)


def test_retain_grad_on_a_tensor_that_needs_no_grad_is_refused():
    def program(m):
        m.torch.tensor([1.0, 2.0]).retain_grad()

    raises_alike(program, "requires_grad|require grad|does not require", kind=RuntimeError)


def test_post_accumulate_grad_hook_sees_the_stored_gradient_each_pass():
    def program(m):
        x = m.torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        seen = []
        x.register_post_accumulate_grad_hook(lambda p: seen.append(p.grad.clone()))
        (x * 2).sum().backward()
        (x * 3).sum().backward()
        return [seen, x.grad]

    seen, grad = _same(program)
    np.testing.assert_array_equal(seen[0], [2.0] * 3)
    np.testing.assert_array_equal(seen[1], [5.0] * 3)


def test_post_accumulate_grad_hook_as_an_optimizer_in_backward():
    def program(m):
        t = m.torch
        t.manual_seed(0)
        model = m.nn.Linear(3, 2)
        with t.no_grad():
            model.weight.copy_(t.arange(6.0).reshape(2, 3) / 10)
            model.bias.fill_(0.1)
        optimizers = {p: m.optim.SGD([p], lr=0.1) for p in model.parameters()}

        def step(p):
            optimizers[p].step()
            optimizers[p].zero_grad()

        for p in model.parameters():
            p.register_post_accumulate_grad_hook(step)
        for _ in range(2):
            model(t.ones(4, 3)).pow(2).mean().backward()
        return [model.weight.detach(), model.bias.detach(), model.weight.grad]

    weight, bias, grad = _same(program)
    assert grad is None


def test_post_accumulate_grad_hook_on_a_non_leaf_is_refused():
    def program(m):
        y = m.torch.tensor([1.0, 2.0], requires_grad=True) * 2
        y.register_post_accumulate_grad_hook(lambda p: None)

    raises_alike(program, "leaf|non-leaf", kind=RuntimeError)


def test_node_hooks_see_and_replace_gradients():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        y = x * 2
        y.grad_fn.register_prehook(lambda grad_outputs: (grad_outputs[0] * 5,))
        z = (x * 3).sum()
        z.grad_fn.register_hook(lambda grad_inputs, grad_outputs: (grad_inputs[0] * 7,))
        (y.sum() + z).backward()
        return x.grad

    np.testing.assert_array_equal(_same(program), [10.0 + 21.0] * 2)


def test_a_prehook_on_accumulate_grad_changes_what_is_stored():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        accumulate = (x * 1).grad_fn.next_functions[0][0]
        accumulate.register_prehook(lambda grad_outputs: (grad_outputs[0] * 7,))
        (x * 1).sum().backward()
        return [accumulate.name(), x.grad]

    name, grad = _same(program)
    assert name == "torch::autograd::AccumulateGrad"
    np.testing.assert_array_equal(grad, [7.0, 7.0])


# -- in-place correctness checks ---------------------------------------------------------------------


def test_changing_a_saved_output_in_place_is_refused_at_backward():
    def program(m):
        x = m.torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = x.sigmoid()
        y.mul_(2)
        y.sum().backward()

    raises_alike(program, "modified by an inplace operation", kind=RuntimeError)


def test_changing_a_saved_input_through_a_view_is_refused():
    def program(m):
        a = m.torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        b = a.exp()
        c = b.sin()              # saves b
        b[1:].zero_()
        c.sum().backward()

    raises_alike(program, "modified by an inplace operation", kind=RuntimeError)


def test_version_counter_counts_in_place_writes_shared_with_detach():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        y = x.exp()
        before = y._version
        y.add_(1)
        y.detach().mul_(2)
        return [before, y._version]

    assert _same(program) == [0, 2]


def test_in_place_on_a_leaf_that_requires_grad_is_refused_but_allowed_under_no_grad():
    def refused(m):
        m.torch.tensor([1.0, 2.0], requires_grad=True).mul_(2)

    raises_alike(refused, "leaf Variable that requires grad", kind=RuntimeError)

    def allowed(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        with m.torch.no_grad():
            x.mul_(2)
        return [x, x._version, x.requires_grad, x.is_leaf]

    values, version, requires, leaf = _same(allowed)
    np.testing.assert_array_equal(values, [2.0, 4.0])
    assert (version, requires, leaf) == (1, True, True)


def test_in_place_through_a_view_rebases_the_history():
    def program(m):
        a = m.torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        b = a * 1
        b[1:].mul_(2)
        b.sum().backward()
        return a.grad

    np.testing.assert_array_equal(_same(program), [1.0, 2.0, 2.0])


def test_data_writes_are_not_tracked():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        y = x.exp()
        y.data.zero_()
        y.sum().backward()
        return x.grad

    np.testing.assert_array_equal(_same(program), [0.0, 0.0])  # exp's backward reads the zeroed output


def test_backward_twice_through_a_freed_graph_is_refused():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        y = (x * x).sum()
        y.backward()
        y.backward()

    raises_alike(program, "second time", kind=RuntimeError)


def test_backward_of_a_non_scalar_needs_a_gradient():
    def program(m):
        (m.torch.tensor([1.0, 2.0], requires_grad=True) * 2).backward()

    raises_alike(program, "scalar", kind=RuntimeError)


def test_an_integer_tensor_cannot_require_grad():
    def program(m):
        m.torch.tensor([1, 2]).requires_grad_()

    raises_alike(program, "floating", kind=RuntimeError)
