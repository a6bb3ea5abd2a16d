"""The programs of PyTorch's "Extending PyTorch" notes (docs/source/notes/extending.rst) and of
torch.autograd.Function's docstrings, run as written on chainrule and on PyTorch: custom Functions in
the setup_context style and the ctx style, save_for_backward, mark_dirty, mark_non_differentiable,
set_materialize_grads, needs_input_grad, once_differentiable, double backward, gradcheck and
gradgradcheck, and the checks on what backward returns."""

import numpy as np
import pytest

from tests.program_errors import raises_alike
from tests.pytorch_programs import run_both


def _same(program, *args, **kwargs):
    return run_both(program, *args, **kwargs)[0]


def functions(m):
    """The notes' Functions, defined against ``m.torch`` (ours or PyTorch's)."""
    t = m.torch
    Function = t.autograd.Function

    class LinearFunction(Function):
        @staticmethod
        def forward(input, weight, bias):
            output = input.mm(weight.t())
            if bias is not None:
                output += bias.unsqueeze(0).expand_as(output)
            return output

        @staticmethod
        def setup_context(ctx, inputs, output):
            input, weight, bias = inputs
            ctx.save_for_backward(input, weight, bias)

        @staticmethod
        def backward(ctx, grad_output):
            input, weight, bias = ctx.saved_tensors
            grad_input = grad_weight = grad_bias = None
            if ctx.needs_input_grad[0]:
                grad_input = grad_output.mm(weight)
            if ctx.needs_input_grad[1]:
                grad_weight = grad_output.t().mm(input)
            if bias is not None and ctx.needs_input_grad[2]:
                grad_bias = grad_output.sum(0)
            return grad_input, grad_weight, grad_bias

    class MulConstant(Function):
        @staticmethod
        def forward(tensor, constant):
            return tensor * constant

        @staticmethod
        def setup_context(ctx, inputs, output):
            tensor, constant = inputs
            ctx.constant = constant

        @staticmethod
        def backward(ctx, grad_output):
            return grad_output * ctx.constant, None

    class MyCube(Function):
        @staticmethod
        def forward(x):
            result = x ** 3
            dx = 3 * x ** 2       # returned, so that double backward can use it
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

    class Exp(Function):
        @staticmethod
        def forward(ctx, i):
            result = i.exp()
            ctx.save_for_backward(result)
            return result

        @staticmethod
        def backward(ctx, grad_output):
            result, = ctx.saved_tensors
            return grad_output * result

    class Sort(Function):
        @staticmethod
        def forward(ctx, x):
            values, indices = x.sort()
            ctx.mark_non_differentiable(indices)
            ctx.save_for_backward(x, indices)
            return values, indices

        @staticmethod
        def backward(ctx, grad_values, grad_indices):
            x, indices = ctx.saved_tensors
            grad_input = t.zeros_like(x)
            grad_input.index_add_(0, indices, grad_values)
            return grad_input

    class SimpleFunc(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.set_materialize_grads(False)
            return x.clone(), x.clone()

        @staticmethod
        def backward(ctx, g1, g2):
            seen.append((g1 is None, g2 is None))
            return g1 if g2 is None else g2 if g1 is None else g1 + g2

    seen = []

    class Double(Function):
        @staticmethod
        def forward(ctx, x):
            x.mul_(2)
            ctx.mark_dirty(x)
            return x

        @staticmethod
        def backward(ctx, grad):
            return grad * 2

    class OnceSquare(Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x ** 2

        @staticmethod
        @t.autograd.function.once_differentiable
        def backward(ctx, grad):
            x, = ctx.saved_tensors
            return grad * 2 * x

    return dict(LinearFunction=LinearFunction, MulConstant=MulConstant, MyCube=MyCube, Exp=Exp, Sort=Sort,
                SimpleFunc=SimpleFunc, seen=seen, Double=Double, OnceSquare=OnceSquare)


def _linear_inputs(t):
    return (t.arange(6, dtype=t.double).reshape(2, 3).sin().requires_grad_(),
            t.arange(12, dtype=t.double).reshape(4, 3).cos().requires_grad_(),
            t.arange(4, dtype=t.double).requires_grad_())


def test_linear_function_in_the_setup_context_style():
    def program(m):
        t = m.torch
        linear = functions(m)["LinearFunction"].apply
        inputs = _linear_inputs(t)
        passed = t.autograd.gradcheck(linear, inputs, eps=1e-6, atol=1e-4)
        y = linear(*inputs)
        y.sum().backward()
        no_bias = linear(inputs[0], inputs[1], None)
        return [passed, y, [x.grad for x in inputs], y.grad_fn.name(), str(y.dtype).split(".")[-1], no_bias]

    passed, y, grads, name, dtype, no_bias = _same(program)
    x, w = np.sin(np.arange(6.0)).reshape(2, 3), np.cos(np.arange(12.0)).reshape(4, 3)
    np.testing.assert_allclose(y, x @ w.T + np.arange(4.0))
    np.testing.assert_allclose(grads[0], np.ones((2, 4)) @ w)
    assert (passed, name, dtype) == (True, "LinearFunctionBackward", "float64")


def test_linear_function_as_a_module():
    def program(m):
        t = m.torch
        linear = functions(m)["LinearFunction"]

        class Linear(m.nn.Module):
            def __init__(self, input_features, output_features, bias=True):
                super().__init__()
                self.weight = m.nn.Parameter(t.empty(output_features, input_features))
                self.bias = m.nn.Parameter(t.empty(output_features)) if bias else None
                with t.no_grad():
                    self.weight.copy_(t.linspace(-1, 1, output_features * input_features).reshape(
                        output_features, input_features))
                    if bias:
                        self.bias.fill_(0.25)

            def forward(self, input):
                return linear.apply(input, self.weight, self.bias)

        layer = Linear(3, 2)
        out = layer(t.ones(4, 3))
        out.pow(2).mean().backward()
        return [out, layer.weight.grad, layer.bias.grad]

    _same(program)


def test_a_non_tensor_argument_gets_none():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        y = functions(m)["MulConstant"].apply(x, 5.0)
        y.sum().backward()
        return [y, x.grad]

    y, grad = _same(program)
    np.testing.assert_array_equal(grad, [5.0, 5.0])


def test_double_backward_through_an_output_saved_for_it():
    def program(m):
        t = m.torch
        cube = functions(m)["MyCube"].apply
        x = t.tensor([1.0, 2.0], requires_grad=True, dtype=t.double)
        result, dx = cube(x)
        (g,) = t.autograd.grad(result.sum(), x, create_graph=True)
        (gg,) = t.autograd.grad(g.sum(), x)
        checks = [t.autograd.gradcheck(lambda x: cube(x)[0], (x,)),
                  t.autograd.gradgradcheck(lambda x: cube(x)[0], (x,))]
        return [result, dx, g, gg, checks]

    result, dx, g, gg, checks = _same(program)
    np.testing.assert_allclose(g, [3.0, 12.0])
    np.testing.assert_allclose(gg, [6.0, 12.0])
    assert checks == [True, True]


def test_exp_in_the_ctx_style_twice_differentiable():
    def program(m):
        t = m.torch
        exp = functions(m)["Exp"].apply
        x = t.tensor([0.5, 1.0], requires_grad=True, dtype=t.double)
        y = exp(x)
        (g,) = t.autograd.grad(y.sum(), x, create_graph=True)
        g.sum().backward()
        return [y, g, x.grad, t.autograd.gradgradcheck(exp, (x,))]

    y, g, grad, check = _same(program)
    np.testing.assert_allclose(grad, np.exp([0.5, 1.0]))
    assert check is True


def test_mark_non_differentiable_output():
    def program(m):
        t = m.torch
        x = t.tensor([3.0, 1.0, 2.0], requires_grad=True)
        values, indices = functions(m)["Sort"].apply(x)
        (values * t.tensor([1.0, 2.0, 3.0])).sum().backward()
        return [values, indices, indices.requires_grad, values.requires_grad, x.grad, str(indices.dtype)[-5:]]

    values, indices, indices_requires, values_requires, grad, dtype = _same(program)
    np.testing.assert_array_equal(grad, [3.0, 1.0, 2.0])
    assert (indices_requires, values_requires, dtype) == (False, True, "int64")


@pytest.mark.parametrize("use", ["first", "both"])
def test_set_materialize_grads_false_passes_none(use):
    def program(m):
        made = functions(m)
        x = m.torch.tensor([3.0, 1.0], requires_grad=True)
        a, b = made["SimpleFunc"].apply(x)
        (a.sum() if use == "first" else a.sum() + 2 * b.sum()).backward()
        return [x.grad, made["seen"]]

    grad, seen = _same(program)
    assert seen == ([(False, True)] if use == "first" else [(False, False)])


def test_materialized_grads_are_zeros_by_default():
    def program(m):
        t = m.torch
        seen = []

        class Two(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2, x * 3

            @staticmethod
            def backward(ctx, g1, g2):
                seen.append(g2)
                return g1 * 2 + g2 * 3

        x = t.tensor([1.0, 2.0], requires_grad=True)
        a, b = Two.apply(x)
        a.sum().backward()
        return [x.grad, seen, a.grad_fn.name()]

    grad, seen, name = _same(program)
    np.testing.assert_array_equal(seen[0], [0.0, 0.0])
    assert name == "TwoBackward"


def test_once_differentiable_backward_cannot_be_differentiated_again():
    def first(m):
        t = m.torch
        x = t.tensor([3.0, 1.0], requires_grad=True, dtype=t.double)
        (g,) = t.autograd.grad(functions(m)["OnceSquare"].apply(x).sum(), x, create_graph=True)
        return [g, g.requires_grad]

    g, requires = _same(first)
    np.testing.assert_array_equal(g, [6.0, 2.0])
    assert requires is False  # the incoming gradient (ones) has no graph: nothing is recorded

    def again(m):
        t = m.torch
        x = t.tensor([3.0, 1.0], requires_grad=True, dtype=t.double)
        v = t.ones(2, dtype=t.double, requires_grad=True)
        (g,) = t.autograd.grad(functions(m)["OnceSquare"].apply(x), x, v, create_graph=True)
        g.sum().backward()

    raises_alike(again, "once_differentiable", kind=RuntimeError)


def test_the_node_is_the_ctx():
    def program(m):
        t = m.torch
        x = t.tensor([3.0, 1.0], requires_grad=True, dtype=t.double)
        w = t.tensor([1.0, 1.0], dtype=t.double)
        y = functions(m)["Exp"].apply(x)
        z = functions(m)["LinearFunction"].apply(x.reshape(1, 2), w.reshape(1, 2), None)
        return [y.grad_fn.saved_tensors, y.grad_fn.needs_input_grad, z.grad_fn.needs_input_grad,
                y.grad_fn.next_functions[0][0].variable is x]

    saved, needs, needs_linear, is_x = _same(program)
    assert needs == (True,) and needs_linear == (True, False, False) and is_x is True


@pytest.mark.parametrize("mode", ["no input requires grad", "no_grad"])
def test_a_function_records_nothing_when_nothing_needs_a_gradient(mode):
    def program(m):
        t = m.torch
        x = t.tensor([3.0, 1.0], requires_grad=mode == "no_grad")
        with t.set_grad_enabled(mode != "no_grad"):
            y = functions(m)["Exp"].apply(x)
        return [y.requires_grad, y.grad_fn is None]

    assert _same(program) == [False, True]


def test_an_input_returned_unchanged_gets_a_new_output():
    def program(m):
        t = m.torch

        class Identity(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x

            @staticmethod
            def backward(ctx, grad):
                return grad * 3

        x = t.ones(2, requires_grad=True)
        y = Identity.apply(x)
        result = [y is x, y.grad_fn is not None]
        y.sum().backward()
        return result + [x.grad]

    is_x, recorded, grad = _same(program)
    assert (is_x, recorded) == (False, True)
    np.testing.assert_array_equal(grad, [3.0, 3.0])


def test_a_saved_tensor_changed_in_place_is_refused():
    def program(m):
        t = m.torch

        class Square(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x * x

            @staticmethod
            def backward(ctx, grad):
                x, = ctx.saved_tensors
                return 2 * x * grad

        x = t.ones(2, requires_grad=True).clone()
        y = Square.apply(x)
        x.add_(1)
        y.sum().backward()

    raises_alike(program, "modified by an inplace operation", kind=RuntimeError)


def test_backward_returning_too_few_gradients_is_refused():
    def program(m):
        t = m.torch

        class Bad(t.autograd.Function):
            @staticmethod
            def forward(ctx, x, y):
                return x * y

            @staticmethod
            def backward(ctx, grad):
                return grad

        x = t.ones(2, requires_grad=True)
        Bad.apply(x, x).sum().backward()

    raises_alike(program, "incorrect number of gradients", kind=RuntimeError)


def test_backward_returning_a_wrong_shape_is_refused():
    def program(m):
        t = m.torch

        class Bad(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, grad):
                return t.ones(3)

        Bad.apply(t.ones(2, requires_grad=True)).sum().backward()

    raises_alike(program, r"invalid gradient at index 0.*\[3\].*\[2\]", kind=RuntimeError)


def test_a_broadcastable_gradient_of_another_dtype_is_fitted_to_the_input():
    def program(m):
        t = m.torch

        class Loose(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, grad):
                return t.ones(1, 2, dtype=t.double)

        x = t.ones(2, requires_grad=True)
        Loose.apply(x).sum().backward()
        return [x.grad, str(x.grad.dtype)[-7:]]

    grad, dtype = _same(program)
    assert grad.shape == (2,) and dtype == "float32"


def test_a_gradient_for_a_non_tensor_input_is_refused():
    def program(m):
        t = m.torch

        class Bad(t.autograd.Function):
            @staticmethod
            def forward(ctx, x, k):
                return x * k

            @staticmethod
            def backward(ctx, grad):
                return grad, grad

        Bad.apply(t.ones(2, requires_grad=True), 2.0).sum().backward()

    raises_alike(program, "not a Variable", kind=RuntimeError)


def test_save_for_backward_takes_only_tensors_or_none():
    def program(m):
        t = m.torch

        class Bad(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.save_for_backward(x, None, 3)
                return x * 2

            @staticmethod
            def backward(ctx, grad):
                return grad

        Bad.apply(t.ones(2, requires_grad=True))

    raises_alike(program, "save_for_backward can only save tensors", kind=TypeError)


def test_a_function_without_backward_says_so():
    def program(m):
        t = m.torch

        class NoBackward(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

        NoBackward.apply(t.ones(2, requires_grad=True)).sum().backward()

    raises_alike(program, "backward", kind=NotImplementedError)


def test_an_integer_output_needs_no_gradient():
    def program(m):
        t = m.torch

        class ToInt(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x.int()

            @staticmethod
            def backward(ctx, grad):
                return grad

        y = ToInt.apply(t.ones(2, requires_grad=True))
        return [y.requires_grad, str(y.dtype)[-5:]]

    assert _same(program) == [False, "int32"]


def test_a_function_inside_grad_and_vmap():
    def program(m):
        t = m.torch
        exp = functions(m)["Exp"]

        class ExpSetup(t.autograd.Function):  # torch.func needs the setup_context style
            generate_vmap_rule = True

            @staticmethod
            def forward(x):
                return x.exp()

            @staticmethod
            def setup_context(ctx, inputs, output):
                ctx.save_for_backward(output)

            @staticmethod
            def backward(ctx, grad):
                result, = ctx.saved_tensors
                return grad * result

        x = t.tensor([[0.5, 1.0], [1.5, 2.0]], dtype=t.double)
        grads = t.func.vmap(t.func.grad(lambda row: ExpSetup.apply(row).sum()))(x)
        return [grads, exp.apply(x)]

    grads, values = _same(program)
    np.testing.assert_allclose(grads, values)


def test_the_base_class_defaults_for_forward_mode_and_vmap():
    def program(m):
        Function = m.torch.autograd.Function
        said = []
        for call in (lambda: Function.jvp(None), lambda: Function.vmap(None, (0,))):
            try:
                call()
            except NotImplementedError as error:
                said.append(str(error).split(" ")[0:3])
        return [Function.generate_vmap_rule, said]

    assert _same(program) == [False, [["You", "must", "implement"], ["To", "use", "autograd.Function"]]]


def test_the_ctx_behind_every_output_and_what_backward_may_return():
    def program(m):
        t = m.torch

        class F(t.autograd.Function):
            @staticmethod
            def forward(ctx, x, n, lst):
                ctx.save_for_backward(x)
                return x * n, n, lst[0] * 2  # a number, and a tensor from a list (not tracked)

            @staticmethod
            def backward(ctx, g, gn, gl):
                return g * 3, None, None

        class Plain(t.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                return x * 2

            @staticmethod
            def backward(ctx, g):
                return 3  # not a tensor

        x, w = t.tensor([1.0, 2.0], requires_grad=True), t.tensor([1.0, 2.0], requires_grad=True)
        y, n, z = F.apply(x, 3, [w])
        seen = [n, z.requires_grad, y.grad_fn.needs_input_grad, len(y.grad_fn.saved_tensors),
                Plain.apply(x).grad_fn.saved_tensors]
        y.sum().backward()
        try:
            Plain.apply(x).sum().backward()
        except RuntimeError:
            seen.append("refused")
        return seen + [x.grad]

    n, z_requires, needs, saved, nothing, refused, grad = _same(program)
    assert (n, z_requires, needs, saved, nothing, refused) == (3, True, (True, False, False), 1, (), "refused")
    np.testing.assert_array_equal(grad, [3.0, 3.0])
