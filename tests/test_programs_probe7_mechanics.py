"""The programs of PyTorch's "Autograd mechanics" notes (docs/source/notes/autograd.rst) and of
torch.autograd's docstrings, run as written on chainrule and on PyTorch: saved tensors, hooks on
tensors and nodes, in-place correctness checks, grad modes, threads, complex gradients, saved-tensor
hooks and the Node API. Each program returns its values; both libraries must agree, and the values
are asserted without PyTorch too."""

import threading

import numpy as np

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


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


# -- grad modes ----------------------------------------------------------------------------------


def test_no_grad_enable_grad_and_set_grad_enabled_as_blocks_decorators_and_calls():
    def program(m):
        t = m.torch
        x = t.tensor([1.0], requires_grad=True)
        flags = []
        with t.no_grad():
            flags.append((x * 2).requires_grad)
            with t.enable_grad():
                flags.append((x * 2).requires_grad)

        @t.no_grad()
        def doubler(x):
            return x * 2

        @t.no_grad
        def tripler(x):
            return x * 3

        @t.enable_grad()
        def quadrupler(x):
            return x * 4

        flags += [doubler(x).requires_grad, tripler(x).requires_grad]
        with t.no_grad():
            flags.append(quadrupler(x).requires_grad)
        with t.set_grad_enabled(False):
            flags.append((x * 2).requires_grad)
        flags.append(t.is_grad_enabled())
        t.set_grad_enabled(False)
        flags.append((x * 2).requires_grad)
        t.set_grad_enabled(True)
        flags.append((x * 2).requires_grad)

        @t.set_grad_enabled(False)
        def off(x):
            return x * 2

        flags += [off(x).requires_grad, t.is_grad_enabled()]
        return flags

    assert _same(program) == [False, True, False, False, True, False, True, False, True, False, True]


def test_inference_mode_as_block_decorator_and_switched_off():
    def program(m):
        t = m.torch
        x = t.tensor([1.0], requires_grad=True)
        flags = []
        with t.inference_mode():
            flags += [(x * x).requires_grad, t.is_inference_mode_enabled(), t.is_grad_enabled()]
            with t.inference_mode(False):
                flags += [t.is_inference_mode_enabled(), (x * x).requires_grad]

        @t.inference_mode()
        def f(x):
            return x * x

        @t.inference_mode
        def g(x):
            return x * x

        flags += [f(x).requires_grad, g(x).requires_grad, t.is_inference_mode_enabled()]
        return flags

    assert _same(program) == [False, True, False, False, True, False, False, False]


def test_a_no_grad_decorated_generator_runs_each_step_without_recording():
    def program(m):
        t = m.torch
        x = t.tensor([1.0], requires_grad=True)

        @t.no_grad()
        def steps():
            for k in range(3):
                yield (x * k).requires_grad, t.is_grad_enabled()

        outside = []
        for inside in steps():
            outside.append((inside, t.is_grad_enabled()))
        return outside

    assert _same(program) == [((False, False), True)] * 3


# -- threads -------------------------------------------------------------------------------------


def test_training_in_threads_as_the_notes_show():
    def program(m):
        t = m.torch
        grads = [None] * 6

        def train_fn(i):
            x = t.ones(5, 5, requires_grad=True)
            y = (x + 3) * (x + 4) * 0.5
            y.sum().backward()
            grads[i] = x.grad

        threads = [threading.Thread(target=train_fn, args=(i,)) for i in range(6)]
        for p in threads:
            p.start()
        for p in threads:
            p.join()
        return grads

    for grad in _same(program):
        np.testing.assert_array_equal(grad, np.full((5, 5), 4.5))


def test_threads_share_a_retained_graph_and_keep_their_own_grad_mode():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0, 3.0], requires_grad=True)
        y = (x * x).sum()
        results, modes = [None] * 4, []

        def work(i):
            results[i] = t.autograd.grad(y, x, retain_graph=True)[0]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        with t.no_grad():  # this thread's mode only: the workers record as usual
            for p in threads:
                p.start()
            for p in threads:
                p.join()
            other = threading.Thread(target=lambda: modes.append(t.is_grad_enabled()))
            other.start()
            other.join()
            modes.append(t.is_grad_enabled())
        return [results, modes]

    results, modes = _same(program)
    for grad in results:
        np.testing.assert_array_equal(grad, [2.0, 4.0, 6.0])
    assert modes == [True, False]


# -- complex numbers: the gradient is dL/dz* ----------------------------------------------------------


def test_complex_gradients_are_the_conjugate_wirtinger_derivative():
    def program(m):
        t = m.torch
        z = t.tensor([1 + 2j, 3 - 1j], requires_grad=True)
        (z * z.conj()).real.sum().backward()          # |z|^2: dL/dz* = 2z... as PyTorch, 2z
        squared = z.grad.clone()
        z.grad = None
        z.abs().sum().backward()                      # |z|: z/|z|
        modulus = z.grad.clone()
        z.grad = None
        y = 3.0 * z                                   # c z with real c: dL/dz* = c for grad_output 1
        y.backward(t.ones_like(y))
        return [squared, modulus, z.grad]

    z = np.array([1 + 2j, 3 - 1j])
    squared, modulus, scaled = _same(program)
    np.testing.assert_allclose(squared, 2 * z)
    np.testing.assert_allclose(modulus, z / abs(z), rtol=1e-6)
    np.testing.assert_allclose(scaled, [3.0, 3.0])


def test_complex_cross_domain_functions():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        y = t.complex(x, x * 2)                       # R -> C
        (y * y.conj()).real.sum().backward()
        z = t.tensor([1 + 1j, 2 - 1j], requires_grad=True)
        w = t.tensor([0.5 - 1j, 1j])
        loss = (z * w).abs().sum() + z.angle().sum()  # C -> R
        (g,) = t.autograd.grad(loss, z)
        return [x.grad, g]

    x_grad, _ = _same(program)
    np.testing.assert_allclose(x_grad, [10.0, 20.0])


def test_backward_of_a_complex_scalar_is_refused():
    def program(m):
        z = m.torch.tensor([1 + 2j, 3 - 1j], requires_grad=True)
        (z * z).sum().backward()

    raises_alike(program, "real|complex", kind=RuntimeError)


def test_sgd_on_a_complex_parameter():
    def program(m):
        z = m.torch.tensor([1 + 1j], requires_grad=True)
        optimizer = m.optim.SGD([z], lr=0.1)
        for _ in range(3):
            optimizer.zero_grad()
            (z.abs() ** 2).sum().backward()
            optimizer.step()
        return [z.detach(), z.grad]

    z, _ = _same(program)
    np.testing.assert_allclose(z, [0.512 + 0.512j], rtol=1e-6)
