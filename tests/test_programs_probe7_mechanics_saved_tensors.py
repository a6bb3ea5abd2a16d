"""The programs of PyTorch's "Autograd mechanics" notes (docs/source/notes/autograd.rst) and of torch.autograd's
docstrings, run as written on chainrule and on PyTorch. Each program returns its values; both libraries must agree,
and the values are asserted without PyTorch too. requires_grad flowing from any input and a frozen model training
only its new layer; saved tensors (an input saved is the same object, an output saved comes back as a new tensor
object, freed by backward) and saved-tensor hooks (pack and unpack, ``save_on_cpu``,
``disable_saved_tensors_hooks``)."""

import numpy as np

from tests.program_errors import raises_alike

from .probe7_mechanics_common import _same

# -- requires_grad and what is recorded ---------------------------------------------------------------


def test_requires_grad_flows_from_any_input():
    def program(m):
        t = m.torch
        x, y = t.randn(5, 5), t.randn(5, 5)
        z = t.randn((5, 5), requires_grad=True)
        a = x + y
        b = a + z
        return [a.requires_grad, b.requires_grad, z.is_leaf, b.is_leaf, b.grad_fn is None]

    assert _same(program) == [False, True, True, False, False]


def test_freezing_a_model_trains_only_the_new_layer():
    def program(m):
        m.torch.manual_seed(0)
        model = m.nn.Sequential(m.nn.Linear(3, 4), m.nn.ReLU(), m.nn.Linear(4, 2))
        for param in model.parameters():
            param.requires_grad = False
        model[2] = m.nn.Linear(4, 2)
        with m.torch.no_grad():
            for p in model.parameters():
                p.copy_(m.torch.linspace(-1, 1, p.numel()).reshape(p.shape))
        optimizer = m.optim.SGD(model[2].parameters(), lr=1e-2, momentum=0.9)
        out = model(m.torch.ones(2, 3)).pow(2).sum()
        out.backward()
        optimizer.step()
        return [model[0].weight.grad is None, model[2].weight.grad, model[2].bias.detach()]

    frozen, weight_grad, bias = _same(program)
    assert frozen is True and weight_grad.shape == (2, 4)


# -- saved tensors ----------------------------------------------------------------------------------


def test_saved_self_is_the_input_and_saved_result_equals_the_output():
    def program(m):
        x = m.torch.randn(5, requires_grad=True)
        y = x.pow(2)
        z = x.exp()
        return [y.grad_fn._saved_self is x, m.torch.equal(x, y.grad_fn._saved_self),
                m.torch.equal(z, z.grad_fn._saved_result), z.grad_fn._saved_result is z]

    # PyTorch: an input saved is the same object; an output saved comes back as a new tensor object
    assert _same(program) == [True, True, True, False]


def test_saved_tensors_are_freed_by_backward():
    def program(m):
        x = m.torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = x.pow(2)
        y.sum().backward()
        return y.grad_fn._saved_self

    raises_alike(program, "backward through the graph a second time|freed", kind=RuntimeError)


def test_saved_tensors_of_a_product_and_the_next_functions():
    def program(m):
        a = m.torch.tensor([1.0, 2.0], requires_grad=True)
        b = m.torch.tensor([3.0, 4.0], requires_grad=True)
        y = a * b
        nodes = y.grad_fn.next_functions
        return [y.grad_fn._saved_self, y.grad_fn._saved_other, y.grad_fn.name(),
                [type(node).__name__ for node, _ in nodes], [index for _, index in nodes],
                nodes[0][0].variable is a, nodes[1][0].variable is b]

    saved_self, saved_other, name, kinds, indices, is_a, is_b = _same(program)
    np.testing.assert_array_equal(saved_self, [1.0, 2.0])
    np.testing.assert_array_equal(saved_other, [3.0, 4.0])
    assert (name, kinds, indices, is_a, is_b) == ("MulBackward0", ["AccumulateGrad"] * 2, [0, 0], True, True)


# -- saved-tensor hooks ------------------------------------------------------------------------------


def test_saved_tensors_hooks_pack_and_unpack():
    def program(m):
        t = m.torch
        packed = []

        def pack(x):
            packed.append(tuple(x.shape))
            return x * 4

        def unpack(x):
            return x / 4

        x = t.tensor([1.0, 2.0, 3.0], requires_grad=True)
        with t.autograd.graph.saved_tensors_hooks(pack, unpack):
            y = x.pow(2)
        seen = y.grad_fn._saved_self
        y.sum().backward()
        return [packed, seen, x.grad]

    packed, seen, grad = _same(program)
    assert packed == [(3,)]
    np.testing.assert_allclose(seen, [1.0, 2.0, 3.0])
    np.testing.assert_allclose(grad, [2.0, 4.0, 6.0])


def test_saved_tensors_hooks_see_every_tensor_saved_in_the_block_and_none_outside():
    def program(m):
        t = m.torch
        count = [0]

        def pack(x):
            count[0] += 1
            return x

        a = t.tensor([0.5, 1.5], requires_grad=True)
        with t.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
            b = a.sin()          # saves a
            c = b * b            # saves b twice
        d = c.exp()              # outside: no hook
        d.sum().backward()
        return [count[0], a.grad]

    count, grad = _same(program)
    assert count == 3


def test_save_on_cpu_gives_the_same_gradients():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0, 3.0], requires_grad=True)
        with t.autograd.graph.save_on_cpu():
            z = (x * 3).sin().sum()
        z.backward()
        return x.grad

    np.testing.assert_allclose(_same(program), 3 * np.cos(3 * np.array([1.0, 2.0, 3.0])), rtol=1e-6)


def test_disable_saved_tensors_hooks_refuses_a_block():
    def program(m):
        t = m.torch
        with t.autograd.graph.disable_saved_tensors_hooks("no hooks in this region"):
            with t.autograd.graph.saved_tensors_hooks(lambda x: x, lambda x: x):
                pass

    raises_alike(program, "no hooks in this region", kind=RuntimeError)
