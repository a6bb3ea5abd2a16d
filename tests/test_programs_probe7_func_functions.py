"""The programs of PyTorch's "Extending torch.func with autograd.Function" notes
(docs/source/notes/extending.func), run on chainrule and on PyTorch: Functions that call into NumPy, a
custom gradient rule differentiated twice with func.grad, and Functions under vmap (a generated rule,
and a vmap staticmethod, which chainrule's looping vmap does not need)."""

import numpy as np

from tests.pytorch_programs import run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def numpy_functions(m):
    t = m.torch

    def to_numpy(tensor):
        return tensor.cpu().numpy()

    class NumpySort(t.autograd.Function):
        @staticmethod
        def forward(x, dim):
            device = x.device
            x = to_numpy(x)
            ind = np.argsort(x, axis=dim)
            ind_inv = np.argsort(ind, axis=dim)
            result = np.take_along_axis(x, ind, axis=dim)
            return t.tensor(result, device=device), t.tensor(ind, device=device), t.tensor(ind_inv, device=device)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, dim = inputs
            _, ind, ind_inv = output
            ctx.mark_non_differentiable(ind, ind_inv)
            ctx.save_for_backward(ind, ind_inv)
            ctx.dim = dim

        @staticmethod
        def backward(ctx, grad_output, _0, _1):
            ind, ind_inv = ctx.saved_tensors
            return NumpyTake.apply(grad_output, ind_inv, ind, ctx.dim), None

        @staticmethod
        def vmap(info, in_dims, x, dim):
            x_bdim, _ = in_dims
            x = x.movedim(x_bdim, 0)
            dim = dim if dim >= 0 else dim + x.dim() - 1
            return NumpySort.apply(x, dim + 1), (0, 0, 0)

    class NumpyTake(t.autograd.Function):
        @staticmethod
        def forward(x, ind, ind_inv, dim):
            device = x.device
            x = to_numpy(x)
            ind = to_numpy(ind)
            return t.tensor(np.take_along_axis(x, ind, dim), device=device)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, ind, ind_inv, dim = inputs
            ctx.save_for_backward(ind, ind_inv)
            ctx.dim = dim

        @staticmethod
        def backward(ctx, grad_output):
            ind, ind_inv = ctx.saved_tensors
            result = NumpyTake.apply(grad_output, ind_inv, ind, ctx.dim)
            return result, None, None, None

        @staticmethod
        def vmap(info, in_dims, x, ind, ind_inv, dim):
            x_bdim, ind_bdim, ind_inv_bdim, _ = in_dims
            logical_dim = x.dim() if x_bdim is None else x_bdim - 1
            dim = dim if dim >= 0 else dim + logical_dim

            def maybe_expand_bdim_at_front(x, x_bdim):
                if x_bdim is None:
                    return x.expand(info.batch_size, *x.shape)
                return x.movedim(x_bdim, 0)

            x = maybe_expand_bdim_at_front(x, x_bdim)
            ind = maybe_expand_bdim_at_front(ind, ind_bdim)
            ind_inv = maybe_expand_bdim_at_front(ind_inv, ind_inv_bdim)
            return NumpyTake.apply(x, ind, ind_inv, dim + 1), 0

    def numpy_sort(x, dim=-1):
        result, _, _ = NumpySort.apply(x, dim)
        return result

    return numpy_sort


def cube(m):
    t = m.torch

    class MyCube(t.autograd.Function):
        generate_vmap_rule = True

        @staticmethod
        def forward(x):
            result = x ** 3
            dx = 3 * x ** 2
            return result, dx

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, = inputs
            result, dx = output
            ctx.save_for_backward(x, dx)

        @staticmethod
        def backward(ctx, grad_output, grad_dx):
            x, dx = ctx.saved_tensors
            return grad_output * dx + grad_dx * 6 * x

    def my_cube(x):
        result, _ = MyCube.apply(x)
        return result

    return my_cube


def _x(t):
    return t.tensor([[0.3, -1.2, 0.8], [2.0, 0.1, -0.4]], dtype=t.double)


def test_a_function_that_calls_numpy_under_grad_and_twice_differentiated():
    def program(m):
        t = m.torch
        numpy_sort = numpy_functions(m)
        x = _x(t)
        grad_x = t.func.grad(lambda x: numpy_sort(x).sum())(x)
        weights = t.tensor([1.0, 2.0, 3.0], dtype=t.double)
        weighted = t.func.grad(lambda x: (numpy_sort(x) * weights).sum())(x)
        xr = x.clone().requires_grad_()
        (g,) = t.autograd.grad((numpy_sort(xr) ** 2).sum(), xr, create_graph=True)
        g.sum().backward()
        return [numpy_sort(x), grad_x, weighted, g, xr.grad]

    result, grad_x, weighted, g, second = _same(program)
    x = np.array([[0.3, -1.2, 0.8], [2.0, 0.1, -0.4]])
    np.testing.assert_array_equal(result, np.sort(x, -1))
    np.testing.assert_array_equal(grad_x, np.ones((2, 3)))
    np.testing.assert_array_equal(weighted, [[2.0, 1.0, 3.0], [3.0, 2.0, 1.0]])
    np.testing.assert_allclose(g, 2 * x)
    np.testing.assert_array_equal(second, np.full((2, 3), 2.0))


def test_a_custom_gradient_rule_differentiated_twice():
    def program(m):
        t = m.torch
        my_cube = cube(m)
        x = t.tensor(0.7, dtype=t.double)
        return [t.func.grad(my_cube)(x), t.func.grad(t.func.grad(my_cube))(x),
                # (PyTorch's hessian is forward over reverse, which needs a jvp staticmethod)
                t.func.jacrev(t.func.jacrev(lambda v: my_cube(v).sum()))(t.tensor([0.5, -1.0], dtype=t.double))]

    g, gg, hess = _same(program)
    np.testing.assert_allclose([g, gg], [3 * 0.49, 6 * 0.7])
    np.testing.assert_allclose(hess, np.diag([3.0, -6.0]))


def test_functions_under_vmap():
    def program(m):
        t = m.torch
        numpy_sort, my_cube = numpy_functions(m), cube(m)
        x = _x(t)
        result = t.func.vmap(numpy_sort)(x)
        return [result, numpy_sort(result, 1), t.func.vmap(my_cube)(x[0]),
                t.func.vmap(t.func.grad(lambda row: numpy_sort(row).pow(2).sum()))(x)]

    result, again, cubes, grads = _same(program)
    x = np.array([[0.3, -1.2, 0.8], [2.0, 0.1, -0.4]])
    np.testing.assert_array_equal(result, again)
    np.testing.assert_allclose(cubes, x[0] ** 3)
    np.testing.assert_allclose(grads, 2 * x)
