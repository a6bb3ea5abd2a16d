"""The second half of tests/test_ported_autograd_rest.py (PyTorch's test/test_autograd.py, what the other
tests/test_ported_autograd_*.py files left): callbacks queued in reentrant backward passes, checkpointing, custom
Functions that modify their inputs in place, nansum, torch.autograd.functional's argument and strict-mode checks, and
TestAutogradDeviceType's tests on the CPU (cdist at zero distance, in-place leaky ReLUs, movedim, ctc_loss).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`), against literals or
NumPy's numbers.
"""

import numpy as np
import pytest

from tests.ported import close, raises, same, values
from tests.ported_autograd import nn, randn

# -- reentrant backward with callbacks, checkpointing -----------------------------------------------------------------

@pytest.mark.parametrize("depths, outer, inner", [([0], 1, 0), ([1], 0, 1), ([0, 1], 1, 1)])
def test_reentrant_with_callbacks(T, depths, outer, inner):
    counter = {"inner": 0, "outer": 0}
    engine = T.autograd.Variable._execution_engine

    class MyFunc(T.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            return input

        @staticmethod
        @T.autograd.function.once_differentiable
        def backward(ctx, input):
            if 1 in depths:
                engine.queue_callback(lambda: counter.__setitem__("inner", counter["inner"] + 1))
            return input

    class MyReentrantFunc(T.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            return input

        @staticmethod
        @T.autograd.function.once_differentiable
        def backward(ctx, input):
            if 0 in depths:
                engine.queue_callback(lambda: counter.__setitem__("outer", counter["outer"] + 1))
            tmp_inp = input.detach().requires_grad_()
            with T.enable_grad():
                tmp_out = MyFunc.apply(tmp_inp).sum()
            tmp_out.backward()
            return input

    t1 = T.rand((3, 3), requires_grad=True)
    T.autograd.backward([MyReentrantFunc.apply(t1).sum()])
    assert counter == {"outer": outer, "inner": inner}
    same(t1.grad, np.ones((3, 3), np.float32))


def test_checkpointing_many_inputs(T):
    checkpoint = __import__("torch.utils.checkpoint" if T.__name__ == "torch" else "autograd.utils.checkpoint",
                            fromlist=["checkpoint"]).checkpoint
    T.manual_seed(0)
    module = nn(T).Sequential(nn(T).Linear(10, 50), nn(T).ReLU(), nn(T).Linear(50, 10))
    inputs = [T.rand(1, 10, requires_grad=True) for _ in range(20)]
    feats = [checkpoint(module, x, use_reentrant=False) for x in inputs]
    T.stack(feats).mean().backward()
    grads_checkpointed = [values(x.grad).copy() for x in inputs]
    weight_grad = values(module[0].weight.grad).copy()
    module.zero_grad()
    for x in inputs:
        x.grad = None
    T.stack([module(x) for x in inputs]).mean().backward()
    for x, g in zip(inputs, grads_checkpointed):
        close(x.grad, g, atol=1e-7)
    close(module[0].weight.grad, weight_grad, atol=1e-7)


# -- custom Functions that modify their inputs or return views --------------------------------------------------------

def test_autograd_inplace_views_python(T):
    bw_called = [0]

    class MyAdder(T.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            a.add_(b)
            ctx.mark_dirty(a)
            return a

        @staticmethod
        def backward(ctx, grad):
            bw_called[0] += 1
            return grad, grad

    a = T.ones(2, requires_grad=True)
    b = T.ones(2, requires_grad=True)
    c = MyAdder.apply(a.clone(), b)
    c.sum().backward()
    assert bw_called[0] == 1
    same(a.grad, [1.0, 1.0])
    bw_called[0] = 0
    c = MyAdder.apply(a.clone(), b)
    c += 2
    c.sum().backward()
    assert bw_called[0] == 1
    same(c, [4.0, 4.0])
    bw_called[0] = 0
    c = MyAdder.apply(a.clone().view_as(a), b)
    c.sum().backward()
    assert bw_called[0] == 1
    same(b.grad, [3.0, 3.0])

    class MyBadAdder(T.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            a.add_(b)
            ctx.mark_dirty(a)
            return a, a + b

        @staticmethod
        def backward(ctx, ga, gab):
            bw_called[0] += 1
            return ga + gab, ga + gab

    bw_called[0] = 0
    c, d = MyBadAdder.apply(a.clone(), b)
    (c * d).sum().backward()
    assert bw_called[0] == 1
    bw_called[0] = 0
    c, d = MyBadAdder.apply(a.clone(), b)
    c += 2
    (c * d).sum().backward()
    assert bw_called[0] == 1
    raises(RuntimeError, "your Function modifies inplace an input that is a view of another Tensor",
           MyBadAdder.apply, a.clone().view_as(a), b)

    class MyOutPlaceAdder(T.autograd.Function):
        @staticmethod
        def forward(ctx, a, b):
            a.add_(b)
            ctx.mark_dirty(a)
            return a.clone(), a + b

        @staticmethod
        def backward(ctx, ga, gab):
            return ga + gab, ga + 2 * gab

    raises(RuntimeError, "Some elements marked as dirty during the forward method were not returned as output",
           MyOutPlaceAdder.apply, a.clone().view_as(a), b)


def test_custom_function_return_view_in_nograd(T):
    class Alias(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x[:]

        @staticmethod
        def backward(ctx, gx):
            return gx

    inp = T.rand(2, requires_grad=True)
    with T.no_grad():
        output = Alias.apply(inp)
        expected_output = inp[:]
    assert output.requires_grad == expected_output.requires_grad
    raises(RuntimeError, "A view was created in no_grad mode and is being modified inplace", output.zero_)


# -- nansum -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dims", [(), (0,), (0, 2), (0, -1)])
def test_nansum_with_nans(T, dims):
    a = np.random.default_rng(5).standard_normal((2, 2, 2, 2))
    a[a < 0.2] = np.nan
    x = T.tensor(a, requires_grad=True)
    fn = (lambda t: t.nansum()) if not dims else (lambda t: t.nansum(dims))
    assert T.autograd.gradcheck(fn, x)
    assert T.autograd.gradgradcheck(fn, x)
    fn(x).sum().backward()
    same(x.grad, np.where(np.isnan(a), 0.0, 1.0))
    if dims:
        x.grad = None
        y = x.nansum(dims, True)
        same(y, np.nansum(a, axis=dims, keepdims=True))


@pytest.mark.parametrize("inp_dtype, out_dtype", [("float", "double"), ("double", "float")])
def test_sum_dtype_gradient_keeps_the_input_dtype(T, inp_dtype, out_dtype):
    a = np.random.default_rng(6).standard_normal((2, 2, 2, 2))
    a[a < 0.2] = np.nan
    x = T.tensor(a).to(getattr(T, inp_dtype)).requires_grad_()
    T.sum(x, dtype=getattr(T, out_dtype)).backward()
    assert x.grad.dtype == x.dtype
    same(x.grad, np.ones((2, 2, 2, 2), x.grad.detach().numpy().dtype))


# -- torch.autograd.functional: argument checks, strict mode, agreement of the products -------------------------------

def functional(T):
    return T.autograd.functional


@pytest.mark.parametrize("name", ["hessian", "vhp", "hvp"])
def test_second_order_functional_err_check(T, name):
    fn = getattr(functional(T), name)
    v = (T.rand(4),) if name != "hessian" else ()

    def foo(a):
        return 3 * a.narrow(0, 0, 3).exp().sum()

    inp = T.rand(4, dtype=T.double)
    raises(TypeError, f"The inputs given to {name} must be either a Tensor", fn, foo, (inp, 2), *v)
    raises(TypeError, f"The outputs of the user-provided function given to {name} must", fn,
           lambda a: (3 * a.narrow(0, 0, 3), "bar"), inp, *v)
    if name != "hessian":
        raises(RuntimeError, "v has invalid size:", fn, foo, inp, T.rand(5))
        raises(TypeError, f"The v given to {name} must be either a Tensor or a tuple of Tensors", fn, foo, inp,
               (v[0], 2))
    res = fn(foo, inp, *(t.double() for t in v))
    second = res if name == "hessian" else res[1]
    assert tuple(second.shape) == ((4, 4) if name == "hessian" else (4,))

    def foo2(a, b):
        return (3 * b.narrow(0, 0, 3) * a.narrow(0, 0, 3)).sum()

    inp2 = (T.rand(4, dtype=T.double), T.rand(5, dtype=T.double))
    res = fn(foo2, inp2, *([(T.rand(4, dtype=T.double), T.rand(5, dtype=T.double))] if v else []))
    if name == "hessian":
        assert [[tuple(h.shape) for h in row] for row in res] == [[(4, 4), (4, 5)], [(5, 4), (5, 5)]]
        same(res[0][1], np.pad(3 * np.eye(3), ((0, 1), (0, 2))))
    else:
        assert [tuple(r.shape) for r in res[1]] == [(4,), (5,)]


@pytest.mark.parametrize("name", ["hessian", "vhp", "hvp"])
def test_second_order_functional_err_check_strict(T, name):
    fn = getattr(functional(T), name)
    inp = T.rand(4)
    v = (T.rand(4),) if name != "hessian" else ()

    def second(res):
        return res if name == "hessian" else res[1]

    detached = lambda a: a.detach().sum()  # noqa: E731
    unconnected = lambda a: a.long().float().requires_grad_().clone().sum()  # noqa: E731
    linear = lambda a: (3 * a).sum()  # noqa: E731
    raises(RuntimeError, "Output 0 of the user-provided function does not require gradients.", fn, detached, inp, *v,
           strict=True)
    same(second(fn(detached, inp, *v, strict=False)), np.zeros((4, 4) if name == "hessian" else 4, np.float32))
    words = ("jacobian of the user-provided function with respect to input 0" if name == "hessian" else
             "The output of the user-provided function is independent of input 0")
    raises(RuntimeError, words, fn, unconnected, inp, *v, strict=True)
    same(second(fn(unconnected, inp, *v, strict=False)), np.zeros((4, 4) if name == "hessian" else 4, np.float32))
    raises(RuntimeError, "jacobian of the user-provided function with respect to input 0 is", fn, linear, inp, *v,
           strict=True)
    same(second(fn(linear, inp, *v, strict=False)), np.zeros((4, 4) if name == "hessian" else 4, np.float32))


def test_jacobian_matches_vjp_and_jvp(T):
    def foo(x):
        return x ** 3 + x.sum()

    inputs = T.rand(4, dtype=T.double)
    v = T.rand(4, dtype=T.double)
    jac = functional(T).jacobian(foo, inputs)
    close(jac, 3 * np.diag(values(inputs) ** 2) + 1, atol=1e-12)
    close(functional(T).jvp(foo, inputs, v)[1], values(jac) @ values(v), atol=1e-12)
    close(functional(T).vjp(foo, inputs, v)[1], values(v) @ values(jac), atol=1e-12)


def test_hessian_matches_vhp_and_hvp(T):
    def foo(a):
        return 3 * a.narrow(0, 0, 3).exp().sum()

    inputs = T.rand(4, dtype=T.double)
    v = T.rand(4, dtype=T.double)
    hes = functional(T).hessian(foo, inputs)
    close(hes, np.diag(np.r_[3 * np.exp(values(inputs)[:3]), 0.0]), atol=1e-12)
    close(functional(T).hvp(foo, inputs, v)[1], values(hes) @ values(v), atol=1e-12)
    close(functional(T).vhp(foo, inputs, v)[1], values(v) @ values(hes), atol=1e-12)


# -- cdist at zero distance -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("p", [0, 1, 2, 3, 1.5, 2.5, float("inf")])
def test_cdist_same_inputs_has_finite_gradients(T, p):
    x = randn(T, 1, 27, 32).float()
    dist_grad = randn(T, 1, 27, 27, seed=1, requires_grad=False).float()
    y = x.detach().clone()
    x = x.detach().requires_grad_()
    T.cdist(x, y, p=p).backward(dist_grad)
    assert np.isfinite(values(x.grad)).all()


# -- TestAutogradDeviceType on the CPU --------------------------------------------------------------------------------

def test_leaky_relu_inplace_with_negative_slope(T):
    # PyTorch's in-place backward reads the output, which a negative slope does not determine: it refuses it.
    # chainrule differentiates the in-place form from a copy of its input, and gives the gradient (a documented
    # difference, as tests/test_ported_nn_layers.py's test_inplace_activation_with_negative_slope)
    F = nn(T).functional
    for fn, args, slope in [(F.leaky_relu_, (-2,), -2.0), (F.rrelu_, (-5.0, 1.0), -2.0)]:
        a = T.tensor([-1.0, 1.0], requires_grad=True)
        b = fn(a.clone(), *args)
        if T.__name__ == "torch":
            raises(RuntimeError, "call out-of-place version", b.backward, T.ones(2))
        else:
            b.backward(T.ones(2))
            same(a.grad, np.array([slope, 1.0], np.float32))


def test_leaky_relu_inplace_with_zero_slope(T):
    a = T.tensor([-2.0, 0.0, 2.0], requires_grad=True)
    b = nn(T).functional.leaky_relu_(a.clone(), 0.0)
    b.backward(T.ones(3))
    same(a.grad, np.array([0.0, 0.0, 1.0], np.float32))


def test_movedim_grad(T):
    x = randn(T, 4, 3, 2, 1)
    for source, destination in [((0, 1, 2, 3), (3, 2, 1, 0)), ((0, -1, -2, -3), (-3, -2, -1, -0))]:
        assert T.autograd.gradcheck(lambda x, s=source, d=destination: T.movedim(x, s, d), x)
        assert T.autograd.gradgradcheck(lambda x, s=source, d=destination: T.movedim(x, s, d), x)
    y = T.movedim(x, (0, 1, 2, 3), (3, 2, 1, 0))
    assert tuple(y.shape) == (1, 2, 3, 4)
    w = np.arange(24.0).reshape(1, 2, 3, 4)
    y.backward(T.tensor(w))
    same(x.grad, w.transpose(3, 2, 1, 0))


@pytest.mark.parametrize("zero_targets", [False, True])
def test_ctc_loss_gradcheck(T, zero_targets):
    rng = np.random.default_rng(8)
    input_length, batch_size, num_labels, target_length = 12, 3, 5, 4
    targets = T.tensor(rng.integers(1, num_labels, (batch_size, target_length)))
    input_lengths = [12, 9, 10]
    target_lengths = [0, 0, 0] if zero_targets else [4, 2, 3]
    x = randn(T, 6, seed=9)
    tile = T.tensor(rng.standard_normal(input_length * batch_size * num_labels // 6 + 1))

    def ctc_after_softmax(x):
        full = (x[:, None] * tile[None, :]).view(-1)[:input_length * batch_size * num_labels]
        log_probs = T.log_softmax(full.view(input_length, batch_size, num_labels), 2)
        return nn(T).functional.ctc_loss(log_probs, targets, input_lengths, target_lengths)

    assert T.autograd.gradcheck(ctc_after_softmax, [x])
    if zero_targets:  # only blanks: the loss is the mean over the batch of -sum_t log p_t(blank) / 1
        full = (values(x)[:, None] * values(tile)[None, :]).reshape(-1)[:input_length * batch_size * num_labels]
        lp = full.reshape(input_length, batch_size, num_labels)
        lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
        expected = np.mean([-lp[:n, b, 0].sum() for b, n in enumerate(input_lengths)])
        close(ctc_after_softmax(x), expected, atol=1e-10)


@pytest.mark.parametrize("name", ["vjp", "jvp"])
def test_first_order_functional_err_check_strict(T, name):
    fn = getattr(functional(T), name)
    inp = T.rand(4)
    v = T.rand(4)
    detached = lambda a: a.detach()  # noqa: E731
    unconnected = lambda a: a.long().float().requires_grad_().clone()  # noqa: E731
    raises(RuntimeError, "Output 0 of the user-provided function does not require gradients.", fn, detached, inp, v,
           strict=True)
    same(fn(detached, inp, v, strict=False)[1], np.zeros(4, np.float32))
    raises(RuntimeError, "The output of the user-provided function is independent of input 0", fn, unconnected, inp,
           v, strict=True)
    same(fn(unconnected, inp, v, strict=False)[1], np.zeros(4, np.float32))
    # a Jacobian that does not depend on the input: refused in strict mode when the graph is wanted
    inp.requires_grad_()
    raises(RuntimeError, "jacobian of the user-provided function is independent of input 0", fn,
           lambda a: a.clone(), inp, v, create_graph=True, strict=True)
    same(fn(lambda a: a.clone(), inp, v, create_graph=True, strict=False)[1], values(v))
