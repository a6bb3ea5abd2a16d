"""The programs of PyTorch's "Autograd mechanics" notes (docs/source/notes/autograd.rst) and of torch.autograd's
docstrings, run as written on chainrule and on PyTorch. Each program returns its values; both libraries must agree,
and the values are asserted without PyTorch too. Grad modes (``no_grad``, ``enable_grad``, ``set_grad_enabled`` and
``inference_mode`` as blocks, decorators and calls, a decorated generator); training in threads as the notes show
them; complex gradients (the conjugate Wirtinger derivative, cross-domain functions, the refused backward of a
complex scalar, SGD on a complex parameter)."""

import threading

import numpy as np

from tests.program_errors import raises_alike

from .probe7_mechanics_common import _same

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
