"""jacrev, jacfwd, hessian, jvp and linearize, ported from PyTorch's test/functorch/test_eager_transforms.py
(TestJac, TestHessian, TestJvp, TestLinearize): argnums and its errors, pytrees of inputs and outputs, has_aux,
unrelated inputs and outputs, nesting, and agreement with torch.autograd.functional's jacobian and hessian.

Each test runs on chainrule's `autograd` (transforms in `autograd.func`) and, where it is installed, on PyTorch
(`torch.func`) (fixture `T`). PyTorch's jacfwd is forward mode; chainrule computes the same Jacobian in
reverse mode, so every jacobian test runs on both.
"""

import importlib

import numpy as np
import pytest

from tests.ported import close, raises, same, values
from tests.ported_func import randn, t


@pytest.fixture
def fn(T):
    """The library's torch.func."""
    return importlib.import_module(T.__name__ + ".func")


@pytest.fixture(params=["jacrev", "jacfwd"])
def jac(request, fn):
    return getattr(fn, request.param)


def same_tree(got, expected, rtol=1e-12):
    """A pytree of tensors equal to one of arrays: same containers, same keys, close values."""
    if isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), (type(got), expected)
        for key in expected:
            same_tree(got[key], expected[key], rtol)
    elif isinstance(expected, (tuple, list)):
        assert type(got) is type(expected) and len(got) == len(expected), (type(got), expected)
        for g, e in zip(got, expected):
            same_tree(g, e, rtol)
    else:
        close(got, expected, rtol=rtol, atol=1e-12)


def arrays(tree):
    """A pytree of tensors as the same pytree of NumPy arrays."""
    if isinstance(tree, (tuple, list)):
        return type(tree)(arrays(item) for item in tree)
    if isinstance(tree, dict):
        return {key: arrays(item) for key, item in tree.items()}
    return values(tree)


# -- TestJac -----------------------------------------------------------------------------------------------

def test_jacobian_of_sin(T, fn, jac):
    x = randn(T, 3)
    close(jac(T.sin)(x), np.diag(np.cos(values(x))), rtol=1e-12)
    x = randn(T, 2, 3)
    close(jac(T.sin)(x), np.diag(np.cos(values(x)).ravel()).reshape(2, 3, 2, 3), rtol=1e-12)


def test_jacobian_of_take_with_a_long_index(T, fn, jac):
    x = randn(T, 5)
    expected = np.zeros((3, 5))
    expected[:, 1] = 1
    same(jac(lambda a: T.take(a, T.ones(3, dtype=T.long)))(x), expected)


def test_output_of_another_size(T, fn, jac):
    y = jac(lambda a: a[0, 1:].unsqueeze(-1))(randn(T, 2, 4))
    expected = np.zeros((3, 1, 2, 4))
    expected[0, 0, 0, 1] = expected[1, 0, 0, 2] = expected[2, 0, 0, 3] = 1
    same(y, expected)


def test_vmap_of_jacobian_and_jacobian_of_jacobian(T, fn, jac):
    x = randn(T, 2, 3)
    close(fn.vmap(jac(T.sin))(x), np.stack([np.diag(np.cos(row)) for row in values(x)]), rtol=1e-12)
    x = randn(T, 3)
    close(jac(jac(lambda a: a.sin().sum()))(x), np.diag(-np.sin(values(x))), rtol=1e-12)


def test_argnums_pick_the_inputs(T, fn, jac):
    x, y = randn(T, 3), randn(T, 3, seed=1)
    close(jac(T.multiply, argnums=1)(x, y), np.diag(values(x)), rtol=1e-12)
    z = jac(T.multiply, argnums=(0, 1))(x, y)
    assert isinstance(z, tuple) and len(z) == 2
    close(z[0], np.diag(values(y)), rtol=1e-12)
    close(z[1], np.diag(values(x)), rtol=1e-12)
    z = jac(T.multiply, argnums=(0,))(x, y)  # a tuple argnums gives a tuple, even of one
    assert isinstance(z, tuple) and len(z) == 1
    close(z[0], np.diag(values(y)), rtol=1e-12)
    z = jac(T.multiply, argnums=0)(x, y)
    assert not isinstance(z, tuple)
    close(z, np.diag(values(y)), rtol=1e-12)
    close(jac(lambda a, b: a * 2 + b * 3)(x, y), 2 * np.eye(3), rtol=1e-12)  # argnums defaults to 0


def test_multiple_outputs_and_argnums(T, fn, jac):
    def f(x, y):
        return 2 * x + 3 * y, 4 * x + 5 * y

    x, y = randn(T, 3), randn(T, 3, seed=1)
    eye = np.eye(3)
    same_tree(jac(f, argnums=(0, 1))(x, y), ((2 * eye, 3 * eye), (4 * eye, 5 * eye)))
    same_tree(jac(f, argnums=0)(x, y), (2 * eye, 4 * eye))
    same_tree(jac(f, argnums=(0,))(x, y), ((2 * eye,), (4 * eye,)))


def test_pytree_outputs(T, fn, jac):
    x, y = randn(T, 3), randn(T, 3, seed=1)
    eye = np.eye(3)
    z = jac(lambda a, b: {"left": 2 * a + 3 * b, "right": 4 * a + 5 * b}, argnums=(0, 1))(x, y)
    same_tree(z, {"left": (2 * eye, 3 * eye), "right": (4 * eye, 5 * eye)})


def test_pytree_inputs(T, fn, jac):
    def f(a, b, c):
        a0, a1 = a
        return a0 + a1 * 2 + b * 3 + c * 4

    x = t(T, 0.7)
    args = ((x, x), x, x)
    same_tree(jac(f, argnums=(0, 1, 2))(*args), ((1.0, 2.0), 3.0, 4.0))
    same_tree(jac(f, argnums=(0,))(*args), ((1.0, 2.0),))
    same_tree(jac(f)(*args), (1.0, 2.0))


def test_pytree_inputs_and_outputs(T, fn, jac):
    def f(a, b, c):
        a0, a1 = a
        return a0 + a1 * 2, {"foo": b * 3 + c * 4}

    x = t(T, 0.7)
    args = ((x, x), x, x)
    same_tree(jac(f)(*args), ((1.0, 2.0), {"foo": (0.0, 0.0)}))
    same_tree(jac(f, argnums=(0,))(*args), (((1.0, 2.0),), {"foo": ((0.0, 0.0),)}))
    same_tree(jac(f, argnums=(0, 1))(*args), (((1.0, 2.0), 0.0), {"foo": ((0.0, 0.0), 3.0)}))


def test_pytree_inputs_and_outputs_of_several_dims(T, fn, jac):
    x = randn(T, 3)
    result = jac(lambda d: {"c": d["a"].sin(), "d": d["b"].cos()})({"a": x, "b": x})
    zero = np.zeros((3, 3))
    same_tree(result, {"c": {"a": np.diag(np.cos(values(x))), "b": zero},
                       "d": {"a": zero, "b": np.diag(-np.sin(values(x)))}})


def test_dimensionality(T, fn, jac):
    result = jac(lambda a: a)(t(T, 0.3))
    assert result.dim() == 0
    same(result, 1.0)
    result = jac(lambda a: a)(t(T, [0.3]))
    assert result.dim() == 2
    same(result, [[1.0]])


def test_has_aux(T, fn, jac):
    x = randn(T, 3)
    result, aux = jac(lambda a: (a.clone(), a.cos()), has_aux=True)(x)
    same(result, np.eye(3))
    close(aux, np.cos(values(x)), rtol=1e-12)
    result, aux = jac(lambda a: (a.clone(), {"a": a.cos(), "b": [a.tan()]}), has_aux=True)(x)
    same(result, np.eye(3))
    same_tree(aux, {"a": np.cos(values(x)), "b": [np.tan(values(x))]})
    for bad in (1, 1.0, "abc"):
        message = "Expected tensors, got unsupported type"
        raises(RuntimeError, message, jac(lambda a, bad=bad: (a, bad), has_aux=True), x)
        raises(RuntimeError, message, jac(lambda a, bad=bad: (a, [a, bad]), has_aux=True), x)


def test_outputs_can_be_any_pytree(T, fn, jac):
    x = randn(T, 2, 3)
    for output in (None, ()):
        raises(RuntimeError, r"(vjp|jvp).+: Expected f to be a function that has non-empty output",
               jac(lambda _, output=output: output), x)
    for output in (1, True, 12.2, "abc"):
        raises(RuntimeError, r"(vjp|jvp).+: expected f\(\*primals\) to return only tensors",
               jac(lambda _, output=output: output), x)
    out = jac(lambda a: [a, a.sum()])(x)
    assert isinstance(out, list) and len(out) == 2
    same(out[1], np.ones((2, 3)))
    out = jac(lambda a: {"x": a, "xsum": a.sum()})(x)
    assert isinstance(out, dict) and set(out) == {"x", "xsum"}
    same(out["x"], np.eye(6).reshape(2, 3, 2, 3))
    out = jac(lambda a: [(a.sum(), {"a": a, "out": [a, a.sum()]})])(x)
    assert isinstance(out, list) and isinstance(out[0], tuple) and isinstance(out[0][1], dict)
    same(out[0][1]["out"][1], np.ones((2, 3)))


def test_unrelated_inputs_and_outputs(T, fn, jac):
    x, y = randn(T, 2, 3), randn(T, 2, 3, seed=1)
    result = jac(lambda a, b: a, argnums=(0, 1))(x, y)
    assert isinstance(result, tuple)
    same_tree(result, (np.eye(6).reshape(2, 3, 2, 3), np.zeros((2, 3, 2, 3))))
    same(jac(lambda a: y)(x), np.zeros((2, 3, 2, 3)))
    raises(RuntimeError, "xpected", jac(lambda a, b: ()), x, y)


@pytest.mark.parametrize("argnums, message", [
    ((), "must be non-empty"), (2, "only 1 positional inputs"), (-2, "only 1 positional inputs"),
    ((0, 0), "must be unique"), (0.0, "must be int or Tuple"),
])
def test_invalid_argnums(T, fn, jac, argnums, message):
    raises(RuntimeError, message, jac(T.sin, argnums=argnums), randn(T, 3))


def test_argnums_of_a_float_in_a_tuple(T, fn, jac):
    x = randn(T, 3)
    raises(RuntimeError, "must be int", jac(T.multiply, argnums=(1, 0.0)), x, x)


def test_non_tensor_arguments_pass_through(T, fn, jac):
    same(jac(lambda a, k: a + k)(randn(T, 3, 3), 3), np.eye(9).reshape(3, 3, 3, 3))


def test_in_place_copy_into_an_argument(T, fn, jac, request):

    def f(x, y):
        y.copy_(x)
        return y

    x, y = randn(T, 2), randn(T, 2, seed=1)
    same(jac(f, argnums=0)(x, y), np.eye(2))


def test_in_place_write_into_an_argument(T, fn, jac):
    def g(x, y, z):
        x[:2] = y
        return T.vstack([(x ** 2).sum(), (z ** 3).sum()])

    x, y, z = randn(T, 3), randn(T, 2, seed=1), randn(T, 2, seed=2)
    expected_y, expected_z = np.zeros((2, 1, 2)), np.zeros((2, 1, 2))
    expected_y[0, 0] = 2 * values(y)
    expected_z[1, 0] = 3 * values(z) ** 2
    same_tree(jac(g, argnums=(1, 2))(x, y, z), (expected_y, expected_z))


@pytest.mark.parametrize("case", ["simple", "multi_input", "multi_output", "unrelated", "zero_dim", "default"])
def test_against_autograd_functional_jacobian(T, fn, jac, case):
    x53, y35 = randn(T, 5, 3), randn(T, 3, 5, seed=1)
    f, inputs = {
        "simple": (lambda x: 3 * x ** 2, (randn(T, 2, 3, 5),)),
        "multi_input": (lambda x, y: (x.cos() * x) @ y.sin(), (randn(T, 2, 3), randn(T, 3, 5, seed=1))),
        "multi_output": (lambda x, y: ((x * x) @ y, x @ (x.sum(1) * y), y.sum()), (x53, y35)),
        "unrelated": (lambda x, y: (x, y, x, y), (randn(T, 2), randn(T, 3, seed=1))),
        "zero_dim": (lambda x, y: (y.sum(), x * y), (t(T, 0.4), randn(T, 1, seed=1))),
        "default": (lambda x, y, z=3.0: x * y * z, (randn(T, 3), randn(T, 3, seed=1))),
    }[case]
    expected = T.autograd.functional.jacobian(f, inputs)
    same_tree(jac(lambda packed: f(*packed))(inputs), arrays(expected))


def test_jacobian_of_a_stack_of_a_zero_dim_input(T, fn, jac):
    same(jac(lambda a: T.stack([a, a, a]))(t(T, 0.4)), [1.0, 1.0, 1.0])


def test_chunk_size_changes_nothing_but_must_be_positive(T, fn):
    x, y = randn(T, 10, 2), randn(T, 1, 2, seed=1)

    def f(x, y):
        return (x.sin(), x + y), (x + 2, x.sum())

    expected = fn.jacrev(f, argnums=(0, 1))(x, y)
    for chunk_size in (1, 3, 1000):
        actual = fn.jacrev(f, argnums=(0, 1), chunk_size=chunk_size)(x, y)
        for a, e in zip(_leaves(actual), _leaves(expected)):
            same(a, values(e))
    for chunk_size in (0, -2):
        raises(ValueError, "jacrev: `chunk_size` should be greater than 0.", fn.jacrev, f, argnums=(0,),
               chunk_size=chunk_size)


def _leaves(tree):
    if isinstance(tree, (tuple, list)):
        return [leaf for item in tree for leaf in _leaves(item)]
    return [tree]


def test_complex_inputs_and_outputs_are_refused(T, fn):
    x = T.randn(1, dtype=T.complex64)
    raises(RuntimeError, "jacrev: Expected all inputs", fn.jacrev(lambda a: a.conj()), x)
    raises(RuntimeError, "jacfwd: Expected all inputs", fn.jacfwd(lambda a: a.conj()), x)
    x = T.randn(1)
    raises(RuntimeError, "jacrev: Expected all outputs", fn.jacrev(lambda a: T.conj(a * 0.5j)), x)
    raises(RuntimeError, "jacfwd: Expected all outputs", fn.jacfwd(lambda a: T.conj(a * 0.5j)), x)


# -- TestHessian ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["simple", "multi_input", "unrelated_input", "unrelated_to_all"])
def test_hessian_against_autograd_functional(T, fn, case):
    f, inputs = {
        "simple": (lambda x: (3 * x ** 2).sum(), (randn(T, 2, 3, 5),)),
        "multi_input": (lambda x, y, z: ((x.relu() * x) @ y.sin() @ z).sum(),
                        (randn(T, 2, 3), randn(T, 3, 5, seed=1), randn(T, 5, 5, seed=2))),
        "unrelated_input": (lambda x, y: (x ** 2).sum(), (randn(T, 2), randn(T, 3, seed=1))),
        "unrelated_to_all": (lambda x, y: T.ones([], dtype=T.float64), (randn(T, 2), randn(T, 3, seed=1))),
    }[case]
    expected = T.autograd.functional.hessian(f, inputs)
    result = fn.hessian(lambda packed: f(*packed))(inputs)
    assert isinstance(result, tuple) and len(result) == len(inputs)
    for i, row in enumerate(result):
        assert isinstance(row, tuple) and len(row) == len(inputs)
        for j, block in enumerate(row):
            close(block, values(expected[i][j]), rtol=1e-12)


def test_hessian_of_a_vector_function_is_per_output(T, fn):
    x = randn(T, 3)
    h = fn.hessian(lambda a: a.sin())(x)
    expected = np.zeros((3, 3, 3))
    for i in range(3):
        expected[i, i, i] = -np.sin(values(x)[i])
    close(h, expected, rtol=1e-12)


def test_unrelated_hessian(T, fn):
    w = randn(T, 5, 3)
    same(fn.jacrev(fn.jacrev(lambda x: w @ x))(randn(T, 3, seed=1)), np.zeros((5, 3, 3)))


def test_vmap_of_hessian_is_vmap_of_jacrev_of_jacrev(T, fn):
    a, x1 = 0.1 * randn(T, 4, 2, 2), randn(T, 4, 6, 2, seed=1)

    def loss(a, x1, x2):
        residual = x2 - (a @ x1.T).T
        return (residual ** 2).sum()

    h1 = fn.vmap(fn.jacrev(fn.jacrev(loss)))(a, x1, x1)
    h2 = fn.vmap(fn.hessian(loss))(a, x1, x1)
    close(h2, values(h1), rtol=1e-12)
    xs = values(x1)
    expected = np.stack([2 * np.einsum("ij,kl->ikjl", np.eye(2), xs[b].T @ xs[b]) for b in range(4)])
    close(h1, expected, rtol=1e-10)


# -- TestJvp ----------------------------------------------------------------------------------------------

def test_jvp(T, fn):
    x, v = randn(T, 2, 3), randn(T, 2, 3, seed=1)
    result = fn.jvp(T.sin, (x,), (v,))
    assert isinstance(result, tuple) and len(result) == 2
    close(result[0], np.sin(values(x)), rtol=1e-12)
    close(result[1], np.cos(values(x)) * values(v), rtol=1e-12)


def test_jvp_of_several_inputs_and_outputs(T, fn):
    x, y = randn(T, 2, 3), randn(T, 2, 3, seed=1)
    tx, ty = randn(T, 2, 3, seed=2), randn(T, 2, 3, seed=3)
    primal, tangent = fn.jvp(lambda a, b: a * b, (x, y), (tx, ty))
    close(primal, values(x) * values(y), rtol=1e-12)
    close(tangent, values(y) * values(tx) + values(x) * values(ty), rtol=1e-12)
    primal, tangent = fn.jvp(lambda a, b: (2 * a + 3 * b, 4 * a + 5 * b), (x, y), (tx, ty))
    same_tree(tangent, (2 * values(tx) + 3 * values(ty), 4 * values(tx) + 5 * values(ty)))
    primal, tangent = fn.jvp(lambda a: (a.sin(), a.cos()), (x,), (tx,))
    same_tree(primal, (np.sin(values(x)), np.cos(values(x))))
    same_tree(tangent, (np.cos(values(x)) * values(tx), -np.sin(values(x)) * values(tx)))


def test_jvp_pytree_inputs(T, fn):
    one = t(T, 1.0)
    primal, tangent = fn.jvp(lambda a, y, z: a[0] + 2 * a[1] + 3 * y + 4 * z, ((one, one), one, one),
                             ((one, one), one, one))
    same(primal, 10.0)
    same(tangent, 10.0)


def test_jvp_argument_errors(T, fn):
    one = t(T, 1.0)
    x, v = randn(T, 2, 3), randn(T, 2, 3, seed=1)
    raises(RuntimeError, "be a tuple", fn.jvp, lambda a: a, one, one)
    raises(RuntimeError, "same python structure", fn.jvp, lambda a: a, ((one, one), one), (one, one))
    raises(RuntimeError, "only contain Tensors", fn.jvp, lambda a, b: a, ((one, one), 1), ((one, one), one))
    raises(RuntimeError, "only contain Tensors", fn.jvp, lambda a, b: a, ((one, one), 1), ((1, one), one))
    raises(RuntimeError, "at least one Tensor", fn.jvp, lambda a: a, ((),), ((),))
    raises(RuntimeError, "at least one Tensor", fn.jvp, T.sin, (), ())
    raises(RuntimeError, "same python structure", fn.jvp, T.sin, (x,), (v, v))
    raises(RuntimeError, "same python structure", fn.jvp, T.sin, (x, x), (v, v, v))
    raises(RuntimeError, "be a tuple", fn.jvp, T.sin, x, (v,))
    raises(RuntimeError, "same python structure", fn.jvp, T.sin, (x,), v)
    raises(RuntimeError, "same python structure", fn.jvp, T.sin, (x,), [v])
    raises(RuntimeError, "only contain Tensors", fn.jvp, T.sin, (1.0,), (v,))
    raises(RuntimeError, "only contain Tensors", fn.jvp, T.sin, (x,), (1.0,))


def test_jvp_unrelated_inputs_and_outputs(T, fn):
    x, y = randn(T, 2, 3), randn(T, 2, 3, seed=1)
    tx, ty = randn(T, 2, 3, seed=2), randn(T, 2, 3, seed=3)
    primal, tangent = fn.jvp(lambda a, b: a, (x, y), (tx, ty))
    same(primal, values(x))
    same(tangent, values(tx))
    primal, tangent = fn.jvp(lambda a: y, (x,), (tx,))
    same(primal, values(y))
    same(tangent, np.zeros((2, 3)))
    raises(RuntimeError, "strict", fn.jvp, lambda a: (a, y), (x,), (tx,), strict=True)
    primal, tangent = fn.jvp(lambda a: (a, y), (x,), (tx,))  # (not strict: the unrelated output's tangent is 0)
    same(tangent[1], np.zeros((2, 3)))


def test_jvp_of_new_tensor_is_zero_tangent(T, fn):
    x = randn(T, 4, 4)
    primal, tangent = fn.jvp(lambda a: a + a.new_tensor(0.5), (x,), (T.zeros_like(x),))
    same(primal, values(x) + 0.5)
    same(tangent, np.zeros((4, 4)))


def test_jvp_outputs_can_be_any_pytree(T, fn):
    x, v = randn(T, 2, 3), randn(T, 2, 3, seed=1)
    for output in (None, ()):
        raises(RuntimeError, r"jvp\(f, primals, tangents\): Expected f to be a function that has non-empty output",
               fn.jvp, lambda _, output=output: output, (x,), (v,))
    for output in (1, True, 12.2, "abc"):
        raises(RuntimeError, r"jvp\(f, primals, tangents\): expected f\(\*primals\) to return only tensors",
               fn.jvp, lambda _, output=output: output, (x,), (v,))
    out = fn.jvp(lambda a: [a, a.sum()], (x,), (v,))
    assert all(isinstance(o, list) and len(o) == 2 for o in out)
    close(out[1][1], values(v).sum(), rtol=1e-12)
    out = fn.jvp(lambda a: {"x": a, "xsum": a.sum()}, (x,), (v,))
    assert all(isinstance(o, dict) and set(o) == {"x", "xsum"} for o in out)
    out = fn.jvp(lambda a: [(a.sum(), {"a": a, "out": [a, a.sum()]})], (x,), (v,))
    assert all(isinstance(o, list) and isinstance(o[0], tuple) and isinstance(o[0][1], dict) for o in out)
    close(out[1][0][1]["out"][0], values(v), rtol=1e-12)


def test_jvp_has_aux(T, fn):
    x, v = randn(T, 3), randn(T, 3, seed=1)
    raises(RuntimeError, r"jvp\(f, primals, tangents\): output of function f should be a tuple",
           fn.jvp, lambda a: [a, a], (x,), (v,), has_aux=True)
    raises(RuntimeError, r"jvp\(f, primals, tangents\): output of function f should be a tuple",
           fn.jvp, lambda a: (a, a + 2, a + 3), (x,), (v,), has_aux=True)
    out, jvp_out, aux = fn.jvp(lambda a: (a.sin(), {"a": a.cos(), "b": [a.tan()]}), (x,), (v,), has_aux=True)
    close(out, np.sin(values(x)), rtol=1e-12)
    same_tree(aux, {"a": np.cos(values(x)), "b": [np.tan(values(x))]})
    close(jvp_out, values(v) * np.cos(values(x)), rtol=1e-12)
    for bad in (1, 1.0, "abc"):
        message = "Expected tensors, got unsupported type"
        raises(RuntimeError, message, fn.jvp, lambda a, bad=bad: (a, bad), (x,), (v,), has_aux=True)
        raises(RuntimeError, message, fn.jvp, lambda a, bad=bad: (a, [a, bad]), (x,), (v,), has_aux=True)


def test_jvp_nested_in_itself_and_inside_a_custom_function(T, fn):
    x, one = t(T, 0.9), t(T, 1.0)
    _, y = fn.jvp(lambda a: fn.jvp(lambda b: b ** 3, (a,), (one,))[1], (x,), (one,))
    close(y, 6 * 0.9, rtol=1e-12)

    class MySin(T.autograd.Function):
        @staticmethod
        def forward(ctx, a):
            _, neg_sin = fn.jvp(T.cos, (a,), (T.ones_like(a),))
            ctx.save_for_backward(a)
            return -neg_sin

        @staticmethod
        def backward(ctx, gy):
            (a,) = ctx.saved_tensors
            _, cos = fn.jvp(T.sin, (a,), (T.ones_like(a),))
            return gy * cos

    x = t(T, 0.9).requires_grad_()
    y = MySin.apply(x)
    close(y, np.sin(0.9), rtol=1e-12)
    (gx,) = T.autograd.grad(y, x)
    close(gx, np.cos(0.9), rtol=1e-12)


def test_grad_of_jvp_with_respect_to_the_tangent(T, fn):
    x, v = randn(T, 3), randn(T, 3, seed=1)
    # d/dv sum(J v) with J = diag(cos x) is cos x
    g = fn.grad(lambda tangent: fn.jvp(T.sin, (x,), (tangent,))[1].sum())(v)
    close(g, np.cos(values(x)), rtol=1e-12)


# -- TestLinearize ----------------------------------------------------------------------------------------

def test_linearize_matches_jvp(T, fn):
    x_p, x_t = randn(T, 3, 1), randn(T, 3, 1, seed=1)
    for f in (lambda a: a.cos(), lambda a: (a.cos(), a.sum())):
        output, jvp_fn = fn.linearize(f, x_p)
        expected_output, expected_jvp = fn.jvp(f, (x_p,), (x_t,))
        for got, want in zip(_leaves(output), _leaves(expected_output)):
            same(got, values(want))
        for got, want in zip(_leaves(jvp_fn(x_t)), _leaves(expected_jvp)):
            close(got, values(want), rtol=1e-12)
        for got, want in zip(_leaves(jvp_fn(x_t * 2)), _leaves(expected_jvp)):  # a linear map: call it again
            close(got, 2 * values(want), rtol=1e-12)


def test_linearize_under_vmap_and_of_grad(T, fn):
    x_p, x_t = randn(T, 3, 1), randn(T, 3, 3, 1, seed=1)
    _, jvp_fn = fn.linearize(lambda a: (a.cos(), a.sum()), x_p)
    cos_t, sum_t = fn.vmap(jvp_fn)(x_t)
    close(cos_t, -np.sin(values(x_p)) * values(x_t), rtol=1e-12)
    close(sum_t, values(x_t).sum((1, 2)), rtol=1e-12)
    z = T.ones(3, dtype=T.float64)
    _, jvp_fn = fn.linearize(lambda a: fn.grad(lambda b: z @ b)(a), randn(T, 3))
    same(jvp_fn(randn(T, 3, seed=2)), np.zeros(3))


def test_linearize_nested_input_and_output(T, fn):
    r = [randn(T, 3, 1, seed=s) for s in range(6)]

    def f(arg):
        x, (y, z) = arg["x"], arg["yz"]
        return {"a": x.sum(), "b": {"c": y + z, "d": (x * z, y.exp())}}

    primal = {"x": r[0], "yz": (r[1], r[2])}
    tangent = {"x": r[3], "yz": (r[4], r[5])}
    output, jvp_fn = fn.linearize(f, primal)
    expected_output, expected_jvp = fn.jvp(f, (primal,), (tangent,))
    actual_jvp = jvp_fn(tangent)
    assert set(actual_jvp) == {"a", "b"} and isinstance(actual_jvp["b"]["d"], tuple)
    close(actual_jvp["b"]["d"][0], values(r[3] * r[2] + r[0] * r[5]), rtol=1e-12)
    close(actual_jvp["b"]["d"][1], values(r[1].exp() * r[4]), rtol=1e-12)
    close(actual_jvp["a"], values(expected_jvp["a"]), rtol=1e-12)
    close(output["b"]["c"], values(expected_output["b"]["c"]), rtol=1e-12)


def test_integer_inputs_are_refused(T, fn):
    raises(RuntimeError, "only Tensors of floating point dtype can require gradients", fn.jacrev(T.sin),
           T.ones(2, dtype=T.long))
    raises(ValueError, "Expected primal to be floating point or complex, but got", fn.jacfwd(T.sin),
           T.ones(2, dtype=T.long))
    raises(ValueError, "Expected primal to be floating point or complex, but got", fn.jvp, T.sin,
           (T.ones(2, dtype=T.long),), (T.ones(2, dtype=T.long),))
