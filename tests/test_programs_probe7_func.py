"""The programs of torch.func's docstrings and tutorials (grad, grad_and_value, vjp, jvp, jacrev,
jacfwd, hessian, vmap with in_dims and out_dims, functional_call, stack_module_state), run as
written on chainrule (``autograd.func``) and on PyTorch."""

import numpy as np
import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def _x(t):
    return t.arange(6, dtype=t.double).reshape(2, 3).sin()


def test_grad_and_its_options():
    def program(m):
        t = m.torch
        f = t.func
        x = _x(t)
        return [f.grad(lambda x: x.sin().sum())(x),
                f.grad(f.grad(lambda x: x.sin()))(t.tensor(1.0, dtype=t.double)),
                f.grad(lambda x, y: (x * y).sum(), argnums=(0, 1))(x, x * 2),
                f.grad(lambda x: ((x ** 2).sum(), x.mean()), has_aux=True)(x),
                f.grad(lambda d: (d["a"] * d["b"]).sum())({"a": x, "b": x + 1}),
                f.grad(lambda x: t.ones(2).sum())(t.ones(2))]

    plain, second, pair, (with_aux, aux), tree, unused = _same(program)
    x = np.sin(np.arange(6.0)).reshape(2, 3)
    np.testing.assert_allclose(plain, np.cos(x))
    np.testing.assert_allclose(second, -np.sin(1.0))
    np.testing.assert_allclose(tree["a"], x + 1)
    np.testing.assert_array_equal(unused, [0.0, 0.0])


def test_grad_and_value():
    def program(m):
        f = m.torch.func
        x = _x(m.torch)
        return [f.grad_and_value(lambda x: (x ** 2).sum())(x),
                f.grad_and_value(lambda x: ((x ** 2).sum(), {"m": x.mean()}), has_aux=True)(x)]

    (g, value), (g_aux, (value_aux, aux)) = _same(program)
    x = np.sin(np.arange(6.0)).reshape(2, 3)
    np.testing.assert_allclose(g, 2 * x)
    np.testing.assert_allclose(aux["m"], x.mean())


def test_grad_refuses_a_non_scalar_function():
    def program(m):
        m.torch.func.grad(lambda x: x ** 2)(_x(m.torch))

    raises_alike(program, "scalar|single element|one element", kind=RuntimeError)


def test_grad_refuses_argnums_out_of_range():
    def program(m):
        m.torch.func.grad(lambda x: x.sin().sum(), argnums=1)(m.torch.ones(2))

    raises_alike(program, "argnums", kind=RuntimeError)


def test_grad_of_a_tensor_that_requires_grad_composes_with_backward():
    def program(m):
        t = m.torch
        x = t.tensor([1.0, 2.0], requires_grad=True)
        g = t.func.grad(lambda x: (x ** 3).sum())(x)
        g.sum().backward()
        return [g, x.grad]

    g, grad = _same(program)
    np.testing.assert_allclose(g, [3.0, 12.0])
    np.testing.assert_allclose(grad, [6.0, 12.0])


def test_vjp():
    def program(m):
        t = m.torch
        f = t.func
        x = _x(t)
        out, vjp_fn = f.vjp(t.sin, x)
        pair_out, pair_fn = f.vjp(lambda x, y: (x * y, x + y), x, x)
        aux_out, aux_fn, aux = f.vjp(lambda x: (x.sin(), x.cos()), x, has_aux=True)
        ones = t.ones(2, 3, dtype=t.double)
        return [out, vjp_fn(ones), pair_fn((ones, ones)), aux, aux_fn(ones)]

    out, (g,), pair, aux, (g_aux,) = _same(program)
    x = np.sin(np.arange(6.0)).reshape(2, 3)
    np.testing.assert_allclose(g, np.cos(x))
    np.testing.assert_allclose(pair[0], x + 1)


def test_jvp():
    def program(m):
        t = m.torch
        f = t.func
        x, ones = _x(t), t.ones(2, 3, dtype=t.double)
        return [f.jvp(t.sin, (x,), (ones,)),
                f.jvp(lambda x, y: x * y, (x, x + 1), (ones, t.zeros(2, 3, dtype=t.double))),
                f.linearize(t.sin, t.tensor([1.0, 2.0]))[1](t.ones(2))]

    (value, tangent), (_, product), linear = _same(program)
    x = np.sin(np.arange(6.0)).reshape(2, 3)
    np.testing.assert_allclose(tangent, np.cos(x))
    np.testing.assert_allclose(product, x + 1)


def test_jvp_wants_tuples():
    def program(m):
        t = m.torch
        t.func.jvp(t.sin, _x(t), t.ones(2, 3, dtype=t.double))

    raises_alike(program, "tuple", kind=RuntimeError)


def test_jacobians_and_hessians():
    def program(m):
        t = m.torch
        f = t.func
        x = t.arange(3, dtype=t.double)
        return [f.jacrev(t.sin)(x), f.jacfwd(t.sin)(x),
                f.jacrev(lambda x, y: x * y.sum(), argnums=(0, 1))(x, t.arange(2, dtype=t.double)),
                f.jacrev(lambda x: (x.sin(), x.cos()), has_aux=True)(x),
                f.jacfwd(lambda x: {"a": x.sin(), "b": x[:2] * 2})(x),
                f.hessian(lambda x: x.sin().sum())(x),
                f.jacrev(f.jacrev(lambda x: x.sin().sum()))(x),
                f.jacfwd(f.jacrev(lambda x: x.sin().sum()))(x)]

    rev, fwd, pair, (with_aux, aux), tree, hess, revrev, fwdrev = _same(program)
    x = np.arange(3.0)
    np.testing.assert_allclose(rev, np.diag(np.cos(x)))
    np.testing.assert_allclose(fwd, rev)
    np.testing.assert_allclose(hess, np.diag(-np.sin(x)))
    np.testing.assert_allclose(revrev, hess)
    np.testing.assert_allclose(tree["b"], [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0]])


def test_vmap_in_dims_and_out_dims():
    def program(m):
        t = m.torch
        v = t.func.vmap
        grid = t.arange(12.0).reshape(3, 4)
        return [v(t.dot)(t.ones(4, 3), t.arange(12.0).reshape(4, 3)),
                v(lambda x, y: x * y, in_dims=(0, None))(t.ones(4, 3), t.arange(3.0)),
                v(lambda x: x.sum(0), in_dims=1)(grid),
                v(lambda x: x * 2, out_dims=1)(grid),
                v(v(t.dot))(t.ones(2, 4, 3), t.ones(2, 4, 3)),
                v(lambda x: (x * 2, t.ones(2)), out_dims=(0, None))(grid),
                v(lambda x: x.sum(), chunk_size=2)(t.arange(12.0).reshape(6, 2))]

    dots, scaled, sums, doubled, nested, (batched, shared), chunked = _same(program)
    np.testing.assert_allclose(dots, np.arange(12.0).reshape(4, 3).sum(1))
    np.testing.assert_allclose(sums, np.arange(12.0).reshape(3, 4).sum(0))
    assert doubled.shape == (4, 3) and nested.shape == (2, 4) and shared.shape == (2,)


def test_vmap_in_dims_shaped_like_the_inputs():
    def program(m):
        t = m.torch
        v = t.func.vmap
        tree = {"a": t.arange(6.0).reshape(3, 2), "b": t.ones(2)}
        pair = (t.arange(6.0).reshape(2, 3), t.ones(2))
        return [v(lambda d: d["a"] + d["b"], in_dims=({"a": 0, "b": None},))(tree),
                v(lambda p, k: p[0] * p[1] + k, in_dims=((1, None), None))(pair, 2.0),
                v(lambda d: d["a"] * 2)(tree | {"b": t.ones(3)})]

    shifted, mixed, doubled = _same(program)
    np.testing.assert_allclose(shifted, np.arange(6.0).reshape(3, 2) + 1)
    np.testing.assert_allclose(mixed, np.arange(6.0).reshape(2, 3).T + 2)


def test_vmap_refuses_in_dims_that_do_not_fit_the_input():
    def program(m):
        t = m.torch
        t.func.vmap(lambda d: d["a"], in_dims=((0, 0),))({"a": t.ones(3)})

    raises_alike(program, "in_dims is not compatible with the structure of `inputs`", kind=ValueError)


def test_vmap_refuses_a_batched_output_for_out_dims_none():
    def program(m):
        t = m.torch
        t.func.vmap(lambda x: (x, x.sum()), out_dims=(0, None))(t.arange(12.0).reshape(3, 4))

    raises_alike(program, "can not return a BatchedTensor when out_dim is None", kind=ValueError)


@pytest.mark.parametrize("case", ["extra argument", "sizes differ", "in_dim out of range", "nothing batched"])
def test_vmap_refuses_inputs_it_cannot_map(case):
    def program(m):
        t = m.torch
        v = t.func.vmap
        if case == "extra argument":
            v(lambda x: x * 2)(t.ones(3), t.ones(4))
        elif case == "sizes differ":
            v(lambda x, y: x * y)(t.ones(3), t.ones(4))
        elif case == "in_dim out of range":
            v(lambda x: x * 2, in_dims=2)(t.ones(3))
        else:
            v(lambda x: x, in_dims=None)(t.ones(3))

    raises_alike(program, "vmap", kind=ValueError)


def test_vmap_randomness():
    def refused(m):
        t = m.torch
        t.func.vmap(lambda x: x + t.rand(1))(t.ones(3))

    raises_alike(refused, "randomness error mode", kind=RuntimeError)

    def program(m):
        t = m.torch
        x = t.zeros(4, 2)
        same = t.func.vmap(lambda x: x + t.rand(2), randomness="same")(x)
        different = t.func.vmap(lambda x: x + t.rand(2), randomness="different")(x)
        return [bool((same == same[0]).all()), bool((different == different[0]).all())]

    assert _same(program) == [True, False]


def test_vmap_of_grad_gives_per_sample_gradients():
    def program(m):
        t = m.torch
        f = t.func
        w = t.tensor([0.3, -0.2, 0.5], dtype=t.double)
        x = t.arange(6, dtype=t.double).reshape(2, 3) / 6
        loss = lambda w, x: (x @ w).tanh().sum()  # noqa: E731
        return [f.vmap(f.grad(lambda x: x.sin().sum()))(x), f.vmap(f.grad(loss), in_dims=(None, 0))(w, x)]

    per_row, per_sample = _same(program)
    x = np.arange(6.0).reshape(2, 3) / 6
    np.testing.assert_allclose(per_sample, (1 - np.tanh(x @ [0.3, -0.2, 0.5]) ** 2)[:, None] * x)


def _linear(m):
    layer = m.nn.Linear(3, 2)
    with m.torch.no_grad():
        layer.weight.copy_(m.torch.arange(6.0).reshape(2, 3))
        layer.bias.fill_(0.5)
    return layer


def test_functional_call_and_grad_of_the_parameters():
    def program(m):
        t, f = m.torch, m.torch.func
        layer = _linear(m)
        params = {k: v.detach() for k, v in layer.named_parameters()}
        doubled = {k: v * 2 for k, v in params.items()}
        x = t.ones(1, 3)
        loss = lambda p, x: f.functional_call(layer, p, (x,)).pow(2).sum()  # noqa: E731
        return [f.functional_call(layer, doubled, (x,)), layer(x), f.grad(loss)(params, x)]

    swapped, own, grads = _same(program)
    np.testing.assert_allclose(swapped, [[7.0, 25.0]])
    np.testing.assert_allclose(own, [[3.5, 12.5]])
    np.testing.assert_allclose(grads["weight"], [[7.0] * 3, [25.0] * 3])


def test_functional_call_refuses_a_name_in_two_dicts():
    def program(m):
        layer = _linear(m)
        params = dict(layer.named_parameters())
        m.torch.func.functional_call(layer, (params, params), (m.torch.ones(1, 3),))

    raises_alike(program, "appeared in multiple dictionaries", kind=ValueError)


def test_an_ensemble_with_stack_module_state_and_vmap():
    def program(m):
        t, f = m.torch, m.torch.func
        models = []
        for i in range(3):
            layer = m.nn.Linear(3, 2)
            with t.no_grad():
                layer.weight.fill_(i)
                layer.bias.fill_(-i)
            models.append(layer)
        params, buffers = f.stack_module_state(models)

        def call(p, b, x):
            return f.functional_call(models[0], (p, b), (x,))

        out = f.vmap(call, in_dims=(0, 0, None))(params, buffers, t.ones(1, 3))
        return [list(params["weight"].shape), out, params["weight"].requires_grad, params["weight"].is_leaf]

    shape, out, requires, leaf = _same(program)
    assert shape == [3, 2, 3] and requires is True and leaf is True
    np.testing.assert_allclose(out, [[[0.0, 0.0]], [[2.0, 2.0]], [[4.0, 4.0]]])


def test_vmap_over_an_empty_batch_runs_f_once_for_the_shapes():
    def program(m):
        t = m.torch
        v = t.func.vmap
        x = t.ones(0, 3, requires_grad=True)
        pair = v(lambda r: (r * 2, r.sum()))(x)
        pair[0].sum().backward()
        return [pair, v(lambda r: r.sum(), out_dims=-1)(x), v(lambda r: r * 2, out_dims=-1)(x),
                v(lambda r, w: (r * w, w), in_dims=(0, None), out_dims=(0, None))(x, t.ones(3)), x.grad]

    (doubled, sums), last, moved, (product, shared), grad = _same(program)
    assert doubled.shape == (0, 3) and sums.shape == (0,) and moved.shape == (3, 0) and grad.shape == (0, 3)
    np.testing.assert_array_equal(shared, [1.0, 1.0, 1.0])


def test_vmap_in_dims_must_be_an_int_or_a_tuple():
    def program(m):
        t = m.torch
        t.func.vmap(lambda x: x.sum(), in_dims=[0])(t.ones(2, 3))

    raises_alike(program, "expected `in_dims` to be int or a .*tuple", kind=ValueError)


def test_grad_refuses_repeated_argnums():
    def program(m):
        t = m.torch
        t.func.grad(lambda x, y: (x * y).sum(), argnums=(0, -2))(t.ones(2), t.ones(2))

    raises_alike(program, "argnums elements must be unique", kind=RuntimeError)


def test_the_jacobians_and_hessians_tutorial():
    """PyTorch's tutorial "Jacobians, Hessians, hvp, vhp, and more: composing function transforms"."""

    def program(m):
        t, F, f = m.torch, m.F, m.torch.func
        weight = t.linspace(-1, 1, 16, dtype=t.double).reshape(4, 4)
        bias = t.linspace(0, 0.5, 4, dtype=t.double)
        x = t.linspace(-0.5, 0.8, 4, dtype=t.double)
        xb = t.linspace(-1, 1, 12, dtype=t.double).reshape(3, 4)

        def predict(weight, bias, x):
            return F.linear(x, weight, bias).tanh()

        def predict_with_output_summed(weight, bias, x):
            return predict(weight, bias, x).sum(0)

        def hvp(fn, primals, tangents):
            return f.jvp(f.grad(fn), primals, tangents)[1]

        return [f.jacrev(predict, argnums=2)(weight, bias, x),
                f.jacrev(predict, argnums=(0, 1))(weight, bias, x),
                f.jacfwd(predict, argnums=2)(weight, bias, x),
                f.vmap(f.jacrev(predict, argnums=2), in_dims=(None, None, 0))(weight, bias, xb),
                f.jacrev(predict_with_output_summed, argnums=2)(weight, bias, xb).movedim(1, 0),
                hvp(lambda x: x.sin().sum(), (t.linspace(0, 1, 5, dtype=t.double),),
                    (t.linspace(1, 2, 5, dtype=t.double),)),
                f.hessian(predict, argnums=2)(weight, bias, x),
                f.jacfwd(f.jacfwd(predict, argnums=2), argnums=2)(weight, bias, x),
                f.vmap(f.hessian(predict, argnums=2), in_dims=(None, None, 0))(weight, bias, xb)]

    (jac, (jac_weight, jac_bias), jac_forward, batch_jac, summed_jac, hvp_value, hess, hess_forward,
     batch_hess) = _same(program)
    np.testing.assert_allclose(jac_forward, jac)
    np.testing.assert_allclose(summed_jac, batch_jac)
    np.testing.assert_allclose(hess_forward, hess)
    assert jac_weight.shape == (4, 4, 4) and batch_hess.shape == (3, 4, 4, 4)
    xs, tangent = np.linspace(0, 1, 5), np.linspace(1, 2, 5)
    np.testing.assert_allclose(hvp_value, -np.sin(xs) * tangent)
