"""Gradients, accumulation into .grad, backward(inputs=...) and autograd.grad's options, ported from
PyTorch's test/test_autograd.py (TestAutograd).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`); the
expectations are literal or computed with NumPy, so the same test checks both.
"""

import warnings

import numpy as np

from tests.ported import close, raises, same, values
from tests.ported_autograd import nn, optim, randn


def test_accumulate_grad_in_place_unless_create_graph(T):
    for create_graph in (False, True):
        x = randn(T, 5, 5)
        y = x + 2
        y.backward(T.ones(5, 5, dtype=T.float64), retain_graph=True)
        first, first_values = x.grad, values(x.grad).copy()
        y.backward(T.ones(5, 5, dtype=T.float64), create_graph=create_graph)
        # without create_graph the second backward adds into the same tensor; with it .grad is a new one
        same(first, first_values if create_graph else first_values * 2)
        same(x.grad, np.full((5, 5), 2.0))
        assert (x.grad is first) == (not create_graph)


def test_accumulate_grad_keeps_the_grad_tensor(T):
    for create_graph in (False, True):
        p = T.tensor([1.5, 1.5]).requires_grad_()
        p.grad = T.tensor([1.5, 1.5])
        saved = p.grad
        p.backward(T.tensor([1.5, 1.5]), create_graph=create_graph)
        assert (p.grad is saved) == (not create_graph)
        same(p.grad, [3.0, 3.0])


def test_accumulate_grad_with_zero_numel_grad(T):
    a = T.rand(4, 0, requires_grad=True)
    b = T.rand(4, 1, requires_grad=True)
    c = a + b
    assert tuple(c.shape) == (4, 0)
    c.sum().backward()
    same(b.grad, np.zeros((4, 1)))
    same(a.grad, np.zeros((4, 0)))


def test_hessian_vector(T):
    x, y = randn(T, 2, 2, seed=1), randn(T, 2, 2, seed=2)
    xv, yv = values(x), values(y)
    z = x ** 2 + y * x + y ** 2
    z.backward(T.ones(2, 2, dtype=T.float64), create_graph=True)
    close(x.grad, 2 * xv + yv)
    close(y.grad, xv + 2 * yv)
    assert x.grad.grad_fn is not None
    grad_sum = 2 * x.grad + y.grad
    grad_sum.backward(T.ones(2, 2, dtype=T.float64))
    close(x.grad, 2 * xv + yv + 5)
    close(y.grad, xv + 2 * yv + 4)


def test_grad_with_create_graph_leaves_grad_alone(T):
    x, y = randn(T, 2, 2, seed=1), randn(T, 2, 2, seed=2)
    xv, yv = values(x), values(y)
    z = x ** 2 + y * x + y ** 2
    z.backward(T.ones(2, 2, dtype=T.float64), create_graph=True)
    grad_sum = 2 * x.grad + y.grad
    (x_hv,) = T.autograd.grad(outputs=[grad_sum], grad_outputs=[T.ones(2, 2, dtype=T.float64)], inputs=[x],
                              create_graph=True)
    close(x_hv, np.full((2, 2), 5.0))
    close(x.grad, 2 * xv + yv)
    close(y.grad, xv + 2 * yv)
    err = raises(RuntimeError, "Mismatch in shape", T.autograd.grad, outputs=[grad_sum],
                 grad_outputs=[T.ones(2)], inputs=[x], create_graph=True)
    assert str(err) == ("Mismatch in shape: grad_output[0] has a shape of " + str(T.ones(2).shape)
                        + " and output[0] has a shape of " + str(grad_sum.shape) + ".")


def test_grad_nonleaf(T):
    x_init = randn(T, 2, 2, seed=3)
    y = randn(T, 2, 2, seed=4)
    x = x_init
    yv = values(y)

    def fn(x):
        return x ** 2 + y * x + y ** 2

    for _ in range(5):
        (grad_x,) = T.autograd.grad(fn(x), x, grad_outputs=T.ones(2, 2, dtype=T.float64), create_graph=True)
        close(grad_x, 2 * values(x) + yv)
        assert y.grad is None and x.grad is None
        x = x + 0.05 * grad_x
    assert fn(x).sum().item() > fn(x_init).sum().item()
    x.backward(T.ones(2, 2, dtype=T.float64))
    assert y.grad is not None and x_init.grad is not None


def test_grad_nonleaf_many_outputs(T):
    x = randn(T, 4, 2)
    a, b = x.chunk(2)
    called = []
    x.register_hook(lambda g: called.append(1))
    go = randn(T, 2, 2, seed=5, requires_grad=False)
    grad_a, grad_b = T.autograd.grad(a + 2 * b, [a, b], grad_outputs=go, create_graph=True)
    same(grad_a, values(go))
    same(grad_b, values(go) * 2)
    assert not called
    assert x.grad is None


def test_grad_nonleaf_register_hook(T):
    x = randn(T, 5)
    x_list = x.unbind()
    seen = [None]

    def hook(grad):
        seen[0] = grad

    x_list[0].register_hook(hook)
    x_list[0].backward()
    same(seen[0], 1.0)
    expected = np.array([1.0, 0, 0, 0, 0])
    same(x.grad, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert x_list[0].grad is None
    for i in range(1, 5):
        seen[0] = None
        x_list[i].backward()
        assert seen[0] is None
        expected[i] = 1.0
        same(x.grad, expected)


def test_grad_materialize_grads(T):
    x = T.tensor(0.5, requires_grad=True)
    a = T.tensor(1.0, requires_grad=True)
    y = x * a
    dydx = T.autograd.grad(y, x, create_graph=True)
    same(dydx[0], 1.0)
    d2_none = T.autograd.grad(dydx, x, create_graph=True, allow_unused=True)
    d2 = T.autograd.grad(dydx, x, create_graph=True, allow_unused=True, materialize_grads=True)
    d3 = T.autograd.grad(d2, x, materialize_grads=True)
    assert d2_none[0] is None
    assert d2[0].item() == 0 and d3[0].item() == 0
    raises(ValueError, "Expected allow_unused to be True or not passed when", T.autograd.grad, y, x,
           allow_unused=False, materialize_grads=True)


def test_unused_grad_does_not_require_grad_with_materialize(T):
    x = T.ones(10, requires_grad=True)
    y = T.ones(10, requires_grad=True)
    z = (x ** 2).sum()
    g = T.autograd.grad(z, (x, y), allow_unused=True, materialize_grads=True, create_graph=False)
    same(g[0], np.full(10, 2.0))
    same(g[1], np.zeros(10))
    assert not g[0].requires_grad and not g[1].requires_grad


def test_sharded_grad(T):
    leaves = [T.zeros(5, 5, requires_grad=True) for _ in range(10)]
    inter = [leaf * i + leaf * leaf for i, leaf in enumerate(leaves)]
    loss = sum(v * i for i, v in enumerate(inter)).sum()
    d_inter = [d for k in range(0, 10, 2) for d in T.autograd.grad(loss, inter[k:k + 2], retain_graph=True)]
    T.autograd.backward(inter, d_inter)
    for i, leaf in enumerate(leaves):
        same(leaf.grad, np.full((5, 5), float(i * i)))


def test_backward_badcalls(T):
    raises(RuntimeError, "does not require grad", T.ones(1).backward)


def test_grad_badcalls(T):
    x = T.ones(1)
    y = x ** 2
    raises(RuntimeError, "does not require grad", T.autograd.grad, x, y)
    raises(RuntimeError, "does not require grad", T.autograd.grad, y, x)
    x = T.ones(1, requires_grad=True)
    same(T.autograd.grad(x ** 2, x)[0], [2.0])


def test_grad_empty_inputs(T):
    x = T.tensor([1.0], requires_grad=True)
    raises(RuntimeError, "^`inputs` argument to `grad\\(\\)` cannot be empty.$", T.autograd.grad, 2 * x, [],
           grad_outputs=T.tensor([1.0]))
    raises(RuntimeError, "^`inputs` argument to `backward\\(\\)` cannot be empty.$", T.autograd.backward, 2 * x,
           T.tensor([1.0]), inputs=[])


def test_grad_fn_badcalls(T):
    x = T.ones(1, requires_grad=True)
    y = x ** 2
    raises(TypeError, "expected .* arguments, got .* instead", y.grad_fn, x.detach(), x.detach())
    raises(TypeError, "expected .* arguments, got .* instead", y.grad_fn)
    same(y.grad_fn(x.detach()), [2.0])


def test_grad_unreachable(T):
    x = T.ones(1, requires_grad=True)
    y = T.ones(1, requires_grad=True)
    x * 2, y * 2
    gx, gy = T.autograd.grad(x * 2, [x, y], allow_unused=True)
    same(gx, [2.0])
    assert gy is None
    z = T.ones(1, requires_grad=True)
    gx, gz = T.autograd.grad(x * 2, [x, z], allow_unused=True)
    same(gx, [2.0])
    assert gz is None
    raises(RuntimeError, "Set allow_unused=True", T.autograd.grad, x * 2, [x, y], allow_unused=False)


def test_grad_unreachable_discovery(T):
    ran = []

    class MyFunc(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x

        @staticmethod
        def backward(ctx, g):
            ran.append(1)
            return g

    x = MyFunc.apply(T.randn(1, requires_grad=True) * 2)
    y = T.randn(1, requires_grad=True)
    assert T.autograd.grad(x, (y,), allow_unused=True) == (None,)
    x = MyFunc.apply(T.randn(1, requires_grad=True) * 2)
    z = T.randn(1, requires_grad=True)
    gy, gz = T.autograd.grad(x + z, (y, z), allow_unused=True)
    assert gy is None
    same(gz, [1.0])
    x = MyFunc.apply(T.randn(1, requires_grad=True) * 2)
    T.autograd.backward(x, inputs=(y,))  # allow_unused is implicitly True
    assert y.grad is None
    assert not ran


def test_grad_batched_grad(T):
    x = randn(T, 2, 2)
    out = x.clone()
    batched = T.arange(3).expand(2, 2, 3).transpose(0, 2)
    expected = np.broadcast_to(np.arange(3.0)[:, None, None], (3, 2, 2))
    (g,) = T.autograd.grad(out, (x,), (batched,), is_grads_batched=True)
    same(g, expected)
    raises(RuntimeError, "If `is_grads_batched=True`, we interpret the first", T.autograd.grad, outputs=out,
           grad_outputs=(T.ones(2, 2),), inputs=(x,), is_grads_batched=True)
    out = x.sum()
    (g,) = T.autograd.grad(out, (x,), (T.arange(3),), is_grads_batched=True)
    same(g, expected)
    raises(RuntimeError, "If `is_grads_batched=True`, we interpret the first", T.autograd.grad, outputs=out,
           grad_outputs=(T.ones(2).unsqueeze(1),), inputs=(x,), is_grads_batched=True)


def test_backward(T):
    v, x, z = randn(T, 5, 5, seed=1), randn(T, 5, 5, seed=2), randn(T, 5, 5, seed=3)
    y = T.tensor(np.random.default_rng(4).random((5, 5)) + 0.1, requires_grad=True)
    go = randn(T, 5, 5, seed=5, requires_grad=False)
    v.backward(go)
    same(v.grad, values(go))
    a = x + (y * z) + 4 * z ** 2 * x / y
    a.backward(go)
    xv, yv, zv, g = values(x), values(y), values(z), values(go)
    close(x.grad, (4 * zv ** 2 / yv + 1) * g, rtol=1e-10)
    close(y.grad, (zv - 4 * xv * zv ** 2 / yv ** 2) * g, rtol=1e-10)
    close(z.grad, (8 * xv * zv / yv + yv) * g, rtol=1e-10)


def test_multi_backward(T):
    x, y, q, a, b = (randn(T, 5, 5, seed=s) for s in range(5))
    q2 = q * 2
    z = x + y + q2
    c = a * b + q2
    gz, gc = randn(T, 5, 5, seed=5, requires_grad=False), randn(T, 5, 5, seed=6, requires_grad=False)
    T.autograd.backward([z, c], [gz, gc])
    same(x.grad, values(gz))
    same(y.grad, values(gz))
    close(a.grad, values(gc) * values(b))
    close(b.grad, values(gc) * values(a))
    close(q.grad, (values(gc) + values(gz)) * 2)


def test_multi_backward_no_grad(T):
    x = randn(T, 5, 5)
    y = randn(T, 5, 5, seed=1, requires_grad=False)
    z, q = x + y, y * 2
    raises(RuntimeError, "", T.autograd.backward, [z, q], [T.ones(5, 5), T.ones(5, 5)])


def test_backward_with_inputs(T):
    x, y = randn(T, 2, 2, seed=1), randn(T, 2, 2, seed=2)
    xv, yv = values(x), values(y)

    def fn():
        return x ** 2 + y * x + y ** 2

    gradient = T.ones(2, 2, dtype=T.float64)

    def reset_grad():
        with T.no_grad():
            x.grad.zero_()
            y.grad.zero_()

    T.autograd.backward(fn(), gradient, inputs=[x, y])
    close(x.grad, 2 * xv + yv)
    close(y.grad, xv + 2 * yv)
    reset_grad()
    T.autograd.backward(fn(), gradient, inputs=[x])
    close(x.grad, 2 * xv + yv)
    same(y.grad, np.zeros((2, 2)))
    reset_grad()
    T.autograd.backward(fn(), gradient, inputs=[y])
    close(y.grad, xv + 2 * yv)
    same(x.grad, np.zeros((2, 2)))
    reset_grad()
    T.autograd.backward(fn(), gradient, inputs=y)
    close(y.grad, xv + 2 * yv)
    same(x.grad, np.zeros((2, 2)))
    reset_grad()
    raises(RuntimeError, "cannot be empty", T.autograd.backward, fn(), gradient, inputs=[])


def test_backward_with_scalar_input(T):
    x = T.tensor(-1.25, dtype=T.float64, requires_grad=True)
    (x ** 2).backward(inputs=x)
    same(x.grad, -2.5)


def test_backward_with_nonleaf_inputs(T):
    x = randn(T, 2, 2, seed=1)
    x_nonleaf = x * 1
    y, z = randn(T, 2, 2, seed=2), randn(T, 2, 2, seed=3)
    out = x_nonleaf ** 2 + y * x_nonleaf + y ** 2
    out.backward(T.ones(2, 2, dtype=T.float64), create_graph=True, inputs=[x, y, x_nonleaf])
    xv, yv = values(x), values(y)
    close(y.grad, xv + 2 * yv)
    close(x.grad, 2 * xv + yv)
    close(x_nonleaf.grad, 2 * xv + yv)
    # backward has no allow_unused: an input off the graph gets no .grad
    out.backward(T.ones(2, 2, dtype=T.float64), create_graph=True, inputs=[z])
    assert z.grad is None


def test_dependent_backward(T):
    x = randn(T, 10)
    y = x ** 2
    z = y ** 3
    go_y, go_z = randn(T, 10, seed=1, requires_grad=False), randn(T, 10, seed=2, requires_grad=False)
    T.autograd.backward([y, z], [go_y, go_z])
    xv = values(x)
    close(x.grad, 2 * xv * values(go_y) + 6 * xv ** 5 * values(go_z), rtol=1e-10)


def test_duplicate_backward_root(T):
    a, b = randn(T, 5, 5, seed=1), randn(T, 5, 5, seed=2)
    x = a * b
    go = randn(T, 5, 5, seed=3, requires_grad=False)
    T.autograd.backward([x, x], [go, go])
    close(a.grad, values(b) * values(go) * 2)
    close(b.grad, values(a) * values(go) * 2)


def test_backward_no_grad(T):
    a = randn(T, 5, 5)
    b = a + 2
    raises(RuntimeError, "", T.autograd.backward, [b], [None])


def test_backward_twice_with_saved_values(T):
    b = randn(T, 3)
    c = T.zeros(3, dtype=T.float64)
    c[[1, 2]] = b[[1, 1]]
    c.backward(T.tensor([1.0, 1, 1], dtype=T.float64))
    same(b.grad, [0.0, 2.0, 0.0])
    raises(RuntimeError, "Trying to backward through the graph a second time.*Specify retain_graph=True", c.backward,
           T.tensor([1.0, 1, 1], dtype=T.float64))


def test_backward_twice_retained_graph(T):
    b = randn(T, 3)
    c = T.zeros(3, dtype=T.float64)
    c[[1, 2]] = b[[1, 1]]
    c.backward(T.tensor([1.0, 1, 1], dtype=T.float64), retain_graph=True)
    c.backward(T.tensor([1.0, 1, 1], dtype=T.float64))
    same(b.grad, [0.0, 4.0, 0.0])


def test_backward_twice_without_saved_values(T):
    b = randn(T, 3)
    c = b + 1
    c.backward(T.tensor([1.0, 1, 1], dtype=T.float64))
    c.backward(T.tensor([1.0, 1, 1], dtype=T.float64))
    same(b.grad, [2.0, 2.0, 2.0])


def test_backward_through_freed_graph_message(T):
    x = randn(T, 3)
    y = (x * x).sum()
    y.backward()
    raises(RuntimeError, "Trying to backward through the graph a second time", y.backward)
    y = (x.exp()).sum()
    T.autograd.grad(y, x)
    raises(RuntimeError, "Trying to backward through the graph a second time", T.autograd.grad, y, x)


def test_next_functions(T):
    x, y = randn(T, 5, 5), randn(T, 5, 5, seed=1)
    a = x + y
    nf = a.grad_fn.next_functions
    assert len(nf) == 2
    assert type(nf[0][0]).__name__ == "AccumulateGrad" and nf[0][1] == 0
    assert type(nf[1][0]).__name__ == "AccumulateGrad" and nf[1][1] == 0
    assert nf[0][0].variable is x and nf[1][0].variable is y


def test_next_functions_of_a_scalar_operand(T):
    a = randn(T, 5, 5) + randn(T, 5, 5, seed=1)
    for b in (a + 5, a - 0.5, a * 2, 3 * a):
        nf = b.grad_fn.next_functions
        assert len(nf) == 2
        assert nf[0][0] is a.grad_fn
        assert nf[1][0] is None


def test_grad_fn_names(T):
    x = randn(T, 2)
    assert (x * 2).grad_fn.name() == "MulBackward0"
    assert (x + x).grad_fn.name() == "AddBackward0"
    assert x.sum().grad_fn.name() == "SumBackward0"
    assert x.clone().grad_fn.name() == "CloneBackward0"
    assert x.clone().grad_fn.next_functions[0][0].name() == "torch::autograd::AccumulateGrad"
    assert isinstance(x.exp().grad_fn, T.autograd.graph.Node)


def test_diagonal_expanded_v(T):
    value = 0.375
    v_expanded = T.tensor(value, dtype=T.float64).expand(10)
    a = T.rand(10, 10, dtype=T.float64, requires_grad=True)
    (result,) = T.autograd.grad(a.diagonal(), a, v_expanded)
    same(result, np.eye(10) * value)


def test_select_and_slice_expanded_v(T):
    v = np.random.default_rng(1).random(10)
    v_expanded = T.tensor(v).expand(10, 10)
    a = T.rand(10, 10, 10, dtype=T.float64, requires_grad=True)
    (result,) = T.autograd.grad(a[0], a, v_expanded)
    expected = np.zeros((10, 10, 10))
    expected[0] = np.broadcast_to(v, (10, 10))
    same(result, expected)
    v_expanded = T.tensor(v[:, None]).expand(2, 10, 10)
    (result,) = T.autograd.grad(a[3:5], a, v_expanded)
    expected = np.zeros((10, 10, 10))
    expected[3:5] = np.broadcast_to(v[:, None], (2, 10, 10))
    same(result, expected)


def test_unused_output(T):
    x = randn(T, 10, 10)
    o = x.chunk(5)[2] * 4 + 2
    o.sum().backward()
    expected = np.zeros((10, 10))
    expected[4:6] = 4
    same(x.grad, expected)
    with T.no_grad():
        x.grad.zero_()
    go = randn(T, 2, 10, seed=3, requires_grad=False)
    x.chunk(5)[0].backward(go)
    expected = np.zeros((10, 10))
    expected[:2] = values(go)
    same(x.grad, expected)


def test_backward_copy(T):
    """A gradient buffered in three places is summed right in each (no in-place sum leaks into another)."""
    x = T.ones(5, 5, requires_grad=True)
    y = T.ones(5, 5, requires_grad=True)
    a, b, c = x + 2, y + 2, x + 2
    add2 = a + b + c
    for _ in range(4):
        a, b, c = a * 2, b * 2, c * 2
    out = add2 + (a + b + c)
    out.backward(T.ones(5, 5))
    same(x.grad, np.full((5, 5), 34.0))
    same(y.grad, np.full((5, 5), 17.0))


def test_isolated_node(T):
    x, y = randn(T, 5, 5), randn(T, 5, 5, seed=1)
    a = x + y
    b = T.max(a, 1, True)[1].repeat(1, 5).double()
    (b + a).sum().backward()
    same(x.grad, np.ones((5, 5)))


def test_indexing_gradients(T):
    x = np.arange(1.0, 17).reshape(4, 4)
    for idx in (1, (1, 1), slice(1, None), (slice(None, 2), 2), (1, slice(2, None)), (Ellipsis, slice(2, None)),
                ([0], [0]), ([1, 2, 3], [0]), ([1, 2], [2, 1]), ([[1, 2], [3, 0]], [[0, 1], [2, 3]]),
                (slice(None), [2, 3]), ([2, 3], slice(None)), [0], ([0],)):
        y = T.tensor(x, requires_grad=True)
        np_idx = np.array(idx) if isinstance(idx, list) else idx  # (a list is one index tensor)
        out = y[T.tensor(idx) if isinstance(idx, list) else idx]
        same(out, x[np_idx])
        out.sum().backward()
        expected = np.zeros((4, 4))
        np.add.at(expected, np_idx, 1)
        same(y.grad, expected)


def test_indexing_duplicates(T):
    y = T.tensor(np.arange(1.0, 17).reshape(4, 4), requires_grad=True)
    idx = [1, 1, 3, 2, 1, 2]
    y[T.tensor(idx)].sum().backward()
    expected = np.zeros((4, 4))
    np.add.at(expected, np.array(idx), 1)
    same(y.grad, expected)
    y = T.tensor(np.arange(1.0, 17).reshape(4, 4), requires_grad=True)
    y[[[1, 2], [0, 0]], [[0, 1], [1, 1]]].sum().backward()
    same(y.grad, [[0.0, 2, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    y = T.tensor(np.arange(1.0, 65).reshape(4, 4, 4), requires_grad=True)
    y[[1, 1, 1], :, :].sum().backward()
    expected = np.zeros((4, 4, 4))
    expected[1] = 3
    same(y.grad, expected)


def test_tensor_grad_warnings(T):
    dummy = T.empty(1)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        dummy.requires_grad_()
        assert dummy.grad is None  # a leaf: no warning
        assert len(w) == 0
        dummy = dummy.clone()
        assert dummy.grad is None  # a non-leaf: warns
        assert len(w) == 1 and "is not a leaf Tensor is being accessed" in str(w[0].message)
        dummy.retain_grad()
        assert dummy.grad is None  # retains grad: no more warnings
        assert len(w) == 1


def test_zero_grad_set_to_none_and_identity(T):
    N, O = nn(T), optim(T)
    T.manual_seed(0)
    lin = N.Linear(3, 2)
    lin(T.ones(4, 3)).sum().backward()
    w_grad = lin.weight.grad
    same(lin.bias.grad, [4.0, 4.0])
    opt = O.SGD(lin.parameters(), lr=0.1)
    opt.zero_grad(set_to_none=False)
    assert lin.weight.grad is w_grad  # zeroed in place
    same(lin.weight.grad, np.zeros((2, 3)))
    lin(T.ones(4, 3)).sum().backward()
    assert lin.weight.grad is w_grad  # accumulated in place
    same(lin.weight.grad, np.full((2, 3), 4.0))
    opt.zero_grad()  # set_to_none=True by default
    assert lin.weight.grad is None and lin.bias.grad is None
    lin(T.ones(4, 3)).sum().backward()
    lin.zero_grad(set_to_none=False)
    same(lin.bias.grad, [0.0, 0.0])
    lin.zero_grad()
    assert lin.bias.grad is None


def test_grad_setter_checks(T):
    x = T.ones(2, 3, requires_grad=True)
    raises(RuntimeError, "attempting to assign a gradient of size '?\\[3, 2\\]'? to a tensor of size '?\\[2, 3\\]'?. "
           "Please ensure that the gradient and the tensor are the same size", setattr, x, "grad", T.ones(3, 2))
    raises(RuntimeError, "attempting to assign a gradient with dtype .*int.* to a tensor with .*", setattr, x, "grad",
           T.ones(2, 3, dtype=T.int64))
    raises(RuntimeError, "attempting to assign a gradient with dtype 'double' to a tensor", setattr, x, "grad",
           T.ones(3, 2, dtype=T.float64))  # (both wrong: the dtype is named first)
    x.grad = T.full((2, 3), 2.0)
    (x * 3).sum().backward()
    same(x.grad, np.full((2, 3), 5.0))
    x.grad = None
    assert x.grad is None
