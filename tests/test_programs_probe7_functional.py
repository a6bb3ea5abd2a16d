"""The programs of torch.autograd.functional's docstrings (jacobian, hessian, vjp, jvp, hvp, vhp), run
as written on chainrule and on PyTorch, with create_graph, strict, vectorize and the strategies."""

import numpy as np
import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def _inputs(t):
    return t.arange(8, dtype=t.double).reshape(4, 2).sin()


def exp_reducer(x):
    return x.exp().sum(dim=1)


def pow_reducer(x):
    return x.pow(3).sum()


def exp_adder(x, y):
    return 2 * x.exp() + 3 * y


def adder(x, y):
    return 2 * x + 3 * y


@pytest.mark.parametrize("options", [{}, {"vectorize": True}, {"vectorize": True, "strategy": "forward-mode"},
                                     {"create_graph": True}])
def test_jacobian(options):
    def program(m):
        f = m.torch.autograd.functional
        jac = f.jacobian(exp_reducer, _inputs(m.torch), **options)
        return [jac, jac.requires_grad]

    jac, requires = _same(program)
    x = np.sin(np.arange(8.0)).reshape(4, 2)
    expected = np.zeros((4, 4, 2))
    for i in range(4):
        expected[i, i] = np.exp(x[i])
    np.testing.assert_allclose(jac, expected)
    assert requires is bool(options.get("create_graph"))


def test_jacobian_of_several_inputs_and_outputs():
    def program(m):
        t = m.torch
        f = t.autograd.functional
        x, y = t.tensor([0.3, 0.9], dtype=t.double), t.tensor([0.1, 0.7], dtype=t.double)
        return [f.jacobian(exp_adder, (x, y)), f.jacobian(lambda x: (x * 2, x.sum()), x),
                f.jacobian(lambda x: t.ones(2), x)]

    _same(program)


def test_jacobian_strict_refuses_an_output_independent_of_the_input():
    def program(m):
        m.torch.autograd.functional.jacobian(lambda x: m.torch.ones(2), m.torch.ones(2), strict=True)

    raises_alike(program, "does not require gradients", kind=RuntimeError)


def test_jacobian_strict_is_not_for_vectorize():
    def program(m):
        m.torch.autograd.functional.jacobian(exp_reducer, _inputs(m.torch), strict=True, vectorize=True)

    raises_alike(program, "strict=True.*vectorize=True|vectorize.*strict", kind=RuntimeError)


def test_jacobian_forward_mode_needs_vectorize():
    def program(m):
        m.torch.autograd.functional.jacobian(exp_reducer, _inputs(m.torch), strategy="forward-mode")

    raises_alike(program, "vectorize", kind=NotImplementedError)


def test_jacobian_refuses_an_unknown_strategy():
    def program(m):
        m.torch.autograd.functional.jacobian(exp_reducer, _inputs(m.torch), strategy="bogus")

    raises_alike(program, "strategy", kind=AssertionError)  # (PyTorch's class)


@pytest.mark.parametrize("options", [{}, {"create_graph": True}, {"vectorize": True},
                                     {"vectorize": True, "outer_jacobian_strategy": "forward-mode"}])
def test_hessian(options):
    forward = "outer_jacobian_strategy" in options  # (forward mode's result stays in the graph, as PyTorch's)
    requires = run_both(lambda m: m.torch.autograd.functional.hessian(
        pow_reducer, _inputs(m.torch).requires_grad_(), **options).requires_grad)[0]
    assert requires is (bool(options.get("create_graph")) or forward)

    def program(m):
        return m.torch.autograd.functional.hessian(pow_reducer, _inputs(m.torch), **options)

    hess = _same(program)
    x = np.sin(np.arange(8.0)).reshape(4, 2)
    np.testing.assert_allclose(hess.reshape(8, 8), np.diag(6 * x.ravel()), atol=1e-12)


def test_hessian_of_two_inputs():
    def program(m):
        t = m.torch
        return t.autograd.functional.hessian(lambda x, y: (x * y).pow(2).sum(),
                                             (t.ones(2, dtype=t.double), t.arange(2.0, dtype=t.double)))

    hess = _same(program)
    np.testing.assert_allclose(hess[0][1], [[0.0, 0.0], [0.0, 4.0]])


def test_hessian_of_a_linear_function():
    def zeros(m):
        return m.torch.autograd.functional.hessian(lambda x: x.sum(), m.torch.ones(2))

    np.testing.assert_array_equal(_same(zeros), np.zeros((2, 2)))

    def strict(m):
        m.torch.autograd.functional.hessian(lambda x: x.sum(), m.torch.ones(2), strict=True)

    raises_alike(strict, "input 0 is independent of the input", kind=RuntimeError)


def test_hessian_needs_a_scalar_function():
    def program(m):
        m.torch.autograd.functional.hessian(lambda x: x * 2, m.torch.ones(2))

    raises_alike(program, "should contain a single element", kind=RuntimeError)


def test_vjp():
    def program(m):
        t = m.torch
        f = t.autograd.functional
        x = _inputs(t)
        return [f.vjp(exp_reducer, x, t.ones(4, dtype=t.double)),
                f.vjp(lambda x: x.exp().sum(), x),
                f.vjp(adder, (t.ones(2), t.zeros(2)), t.ones(2))[1]]

    (out, grad), scalar, pair = _same(program)
    np.testing.assert_allclose(grad, np.exp(np.sin(np.arange(8.0)).reshape(4, 2)))
    np.testing.assert_allclose(pair, [[2.0, 2.0], [3.0, 3.0]])


def test_vjp_of_a_non_scalar_needs_v():
    def program(m):
        m.torch.autograd.functional.vjp(exp_reducer, _inputs(m.torch))

    raises_alike(program, "v.*None|single element", kind=RuntimeError)


def test_vjp_strict_refuses_an_output_independent_of_the_input():
    def program(m):
        m.torch.autograd.functional.vjp(lambda x: x.detach() * 2, m.torch.ones(2), m.torch.ones(2), strict=True)

    raises_alike(program, "does not require gradients|independent", kind=RuntimeError)


def test_vjp_refuses_a_function_that_returns_no_tensor():
    def program(m):
        m.torch.autograd.functional.vjp(lambda x: 3, m.torch.ones(2), m.torch.ones(2))

    raises_alike(program, "Tensor", kind=TypeError)


def test_jvp():
    def program(m):
        t = m.torch
        f = t.autograd.functional
        return [f.jvp(exp_reducer, _inputs(t), t.ones(4, 2, dtype=t.double)),
                f.jvp(adder, (t.ones(2), t.zeros(2)), (t.ones(2), t.ones(2)))[1]]

    (out, tangent), pair = _same(program)
    np.testing.assert_allclose(tangent, np.exp(np.sin(np.arange(8.0)).reshape(4, 2)).sum(1))
    np.testing.assert_allclose(pair, [5.0, 5.0])


def test_jvp_refuses_v_of_the_wrong_shape():
    def program(m):
        t = m.torch
        t.autograd.functional.jvp(exp_reducer, _inputs(t), t.ones(4, dtype=t.double))

    raises_alike(program, r"v has invalid size: should be .*4, 2.* but got .*4", kind=RuntimeError)


def test_vhp_and_hvp():
    def program(m):
        t = m.torch
        f = t.autograd.functional
        x, v = _inputs(t), t.ones(4, 2, dtype=t.double)
        pair = (t.tensor([1.0, 2.0]), t.tensor([0.5, -1.0]))
        both = lambda x, y: x.pow(3).sum() + y.pow(2).sum() * x.sum()  # noqa: E731
        return [f.vhp(pow_reducer, x, v), f.hvp(pow_reducer, x, v),
                f.hvp(both, pair, (t.ones(2), t.ones(2)))]

    vhp, hvp, pair = _same(program)
    np.testing.assert_allclose(vhp[1], 6 * np.sin(np.arange(8.0)).reshape(4, 2))
    np.testing.assert_allclose(hvp[1], vhp[1])


def test_hvp_with_create_graph_is_differentiable():
    def program(m):
        t = m.torch
        x = _inputs(t).requires_grad_()
        value, hvp = t.autograd.functional.hvp(pow_reducer, x, t.ones(4, 2, dtype=t.double), create_graph=True)
        hvp.sum().backward()
        return [value.requires_grad, hvp.requires_grad, x.grad]

    value_requires, hvp_requires, grad = _same(program)
    assert (value_requires, hvp_requires) == (True, True)
    np.testing.assert_allclose(grad, np.full((4, 2), 6.0))


def test_hvp_needs_a_scalar_function():
    def program(m):
        m.torch.autograd.functional.hvp(lambda x: x * 2, m.torch.ones(2), m.torch.ones(2))

    raises_alike(program, "should contain a single element", kind=RuntimeError)
