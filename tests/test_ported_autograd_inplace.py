"""Version counters and in-place writes, ported from PyTorch's test/test_autograd.py (TestAutograd): a tensor
saved for backward and then changed in place is refused ("modified by an inplace operation"), in-place writes on
views and leaves, x[i] = v, x.data, and anomaly mode.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import math
import re
import warnings

import numpy as np

from tests.ported import close, raises, same, values
from tests.ported_autograd import nn, randn

MODIFIED = "one of the variables needed for gradient computation has been modified by an inplace operation"


def test_inplace(T):
    x = T.ones(5, 5, requires_grad=True)
    y = (T.ones(5, 5) * 4).requires_grad_()
    z = x * y
    q = z + y
    w = z * y
    z.add_(2)
    q.backward(T.ones(5, 5), retain_graph=True)  # Add does not need its inputs
    raises(RuntimeError, MODIFIED, w.backward, T.ones(5, 5))  # Mul saved z

    z = x * y
    q = z * y
    r = z + y
    w = z.add_(y)
    w.backward(T.ones(5, 5), retain_graph=True)
    r.backward(T.ones(5, 5), retain_graph=True)
    raises(RuntimeError, MODIFIED, q.backward, T.ones(5, 5))

    with T.no_grad():
        x.grad.zero_()
    m = x / 2
    z = m + y / 8
    q = z * y
    r = z + y
    prev_version = z._version
    w = z.exp_()
    assert z._version != prev_version
    r.backward(T.ones(5, 5), retain_graph=True)
    same(x.grad, np.full((5, 5), 0.5))
    w.backward(T.ones(5, 5), retain_graph=True)
    close(x.grad, np.full((5, 5), (1 + math.e) / 2))
    raises(RuntimeError, MODIFIED, q.backward, T.ones(5, 5))

    leaf = T.ones(5, 5, requires_grad=True)
    x = leaf.clone()
    x.add_(10)
    same(x, np.full((5, 5), 11.0))
    y = x + 2
    y.backward(T.ones(5, 5))
    same(leaf.grad, np.ones((5, 5)))
    z = x * y
    x.add_(2)
    raises(RuntimeError, MODIFIED, z.backward, T.ones(5, 5))


def test_modified_message_names_the_versions(T):
    a = T.ones(3, requires_grad=True)
    b = a * 1
    c = b * b
    b.mul_(2)
    raises(RuntimeError, "one of the variables needed for gradient computation has been modified by an inplace "
           r"operation: \[torch.FloatTensor \[3\]\], which is output 0 of Mul, is at version 1; expected version 0 "
           "instead", c.sum().backward)


def test_no_grad_modifies_version(T):
    x, y = randn(T, 5), randn(T, 5, seed=1)
    z = (x * y).sum()
    with T.no_grad():
        x *= 2
    raises(RuntimeError, "modified by an inplace operation", z.backward)


def test_detach_then_inplace_raises_in_autograd(T):
    x = T.tensor(1.5, requires_grad=True)
    y = x ** 2  # saves x
    z = x.detach()
    z.zero_()
    raises(RuntimeError, "has been modified by an inplace", y.backward)


def test_no_unnecessary_save(T):
    """x * constant saves only the constant for x's gradient: changing x afterwards is fine."""
    mu = T.ones(1, requires_grad=True)
    x = T.empty(1)
    loss = 0
    for i in range(3):
        x.detach_()
        x.copy_(mu + i)
        loss += (x * T.tensor([float(i)])).sum()
    loss.backward()
    same(mu.grad, [3.0])


def test_version_counter(T):
    x = T.randn(1, 2)
    v = x._version
    x.add_(1).add_(1)
    assert x._version > v
    xz = x[:]
    assert x._version == xz._version
    xz.add_(1)
    assert x._version == xz._version
    v = x._version
    x.data = T.randn(1, 2)  # keeps x's counter
    assert x._version == v
    x.add_(1)
    assert x._version > v
    assert x._version == xz._version  # (still the counter it shares with xz)
    xz.add_(1)
    assert x._version == xz._version


def test_set_data_changes_shape_and_dtype(T):
    x = T.randn(1, 2)
    x.data = T.randn(2, 3, dtype=T.float64)
    assert tuple(x.shape) == (2, 3) and x.dtype == T.float64


def test_set_data_for_model_surgery(T):
    """A layer's weight cut to its first rows through .data: the same Parameter, trained at its new shape."""
    layer = nn(T).Linear(3, 4)
    weight = layer.weight
    layer.weight.data = layer.weight.data[:2].clone()
    layer.bias.data = layer.bias.data[:2].clone()
    assert layer.weight is weight and tuple(weight.shape) == (2, 3) and weight.requires_grad and weight.is_leaf
    layer(T.ones(5, 3)).sum().backward()
    same(weight.grad, np.full((2, 3), 5.0), dtype="float32")
    raises(RuntimeError, "data set to a tensor that requires gradients must be floating point", setattr, weight,
           "data", T.zeros(2, dtype=T.int64))
    raises(TypeError, "", setattr, weight, "data", None)
    base = T.zeros(4)
    view = base[:2]
    base.data = T.ones(3)
    base.add_(1)
    same(base, [2.0, 2.0, 2.0])
    same(view, [0.0, 0.0])  # (the view keeps the memory it showed)


def test_increment_version(T):
    a = T.rand(5, requires_grad=True)
    v = a._version
    T.autograd.graph.increment_version(a)
    assert a._version == v + 1
    a = T.zeros(5, dtype=T.int32)
    v = a._version
    T.autograd.graph.increment_version(a)
    assert a._version == v + 1
    with T.inference_mode():
        a = T.rand(5, requires_grad=True)
        T.autograd.graph.increment_version(a)  # does not raise
    T.autograd.graph.increment_version(a)


def test_increment_version_invalidates_saved(T):
    a = T.ones(3, requires_grad=True)
    b = a * 1
    c = b * b
    T.autograd.graph.increment_version(b)
    raises(RuntimeError, MODIFIED, c.sum().backward)


def test_set_data_self_requires_grad(T):
    a = T.tensor(1.0, requires_grad=True)
    a.data = T.tensor(2.0)
    same(a, 2.0)
    assert a.requires_grad
    # (PyTorch: RuntimeError "data set to a tensor that requires gradients must be floating point or complex
    # dtype"; chainrule: ValueError, it refuses any other dtype: tensor.py)
    raises((RuntimeError, ValueError), "dtype", setattr, a, "data", T.tensor(3, dtype=T.int64))


def test_set_data_preserves_identity(T):
    a, b = T.randn(1, 2), T.randn(1, 2)
    b_id = id(b)
    b.data = a
    assert id(b) == b_id
    same(b, values(a))


def setitem_case(T, size, index):
    x = T.ones(*size, requires_grad=True)
    y = x + 2
    v = y._version
    y[index] = 2
    assert y._version != v
    y.backward(T.ones(*size))
    expected = np.ones(size)
    expected[index] = 0
    same(x.grad, expected)


def setitem_tensor_case(T, size, index):
    x = T.ones(*size, requires_grad=True)
    y = x + 2
    v = y._version
    value = T.full(tuple(x[index].size()), 7.0, requires_grad=True)
    y[index] = value
    assert y._version != v
    y.backward(T.ones(*size))
    expected = np.ones(size)
    expected[index] = 0
    same(x.grad, expected)
    same(value.grad, np.ones(tuple(value.shape)))


def test_setitem(T):
    for size, index in (((5, 5), 1), ((5,), 1), ((1,), 0), ((10,), [0, 4, 2]), ((5, 5), ([0, 4], [2, 2])),
                        ((5, 5, 5), (slice(None), slice(None), [1, 3])),
                        ((5, 5, 5), (slice(None), [1, 3], slice(None))),
                        ((5, 5, 5), ([1, 3], slice(None), slice(None))), ((5, 5, 5), (slice(None), [2, 4], [1, 3])),
                        ((5, 5, 5), ([1, 3], [2, 4], slice(None)))):
        setitem_case(T, size, index)
    for size, index in (((5, 5), 3), ((5, 5), ([0, 1], [1, 0])), ((5,), 3), ((5,), [[0, 1, 2, 3]]),
                        ((5, 5, 5), (slice(None), slice(None), [1, 3])), ((5, 5, 5), ([1, 3], [2, 4], slice(None)))):
        setitem_tensor_case(T, size, index)


def test_setitem_mask(T):
    mask = np.random.default_rng(5).random((5, 5)) > 0.5
    setitem_case(T, (5, 5), T.tensor(mask))
    setitem_case(T, (5,), T.tensor(mask[0]))
    setitem_tensor_case(T, (5, 5), T.tensor(mask))


def test_setitem_broadcast_value(T):
    x = randn(T, 4)
    y = T.zeros(2, 3, 4, dtype=T.float64)
    y[1] = x
    go = randn(T, 2, 3, 4, seed=1, requires_grad=False)
    y.backward(go)
    close(x.grad, values(go)[1].sum(0))


def test_leaf_assignment(T):
    x = T.randn(5, 5)
    y, z = T.randn(5, requires_grad=True), T.randn(5, requires_grad=True)
    x[0] = y
    x[1] = 2 * z
    assert x.requires_grad and x.grad_fn is not None
    x.sum().backward()
    same(y.grad, np.ones(5))
    same(z.grad, np.full(5, 2.0))


def test_no_grad_assignment(T):
    x = T.randn(5, 5, requires_grad=True)
    y = T.randn(5)
    with T.no_grad():
        x[0] = y
    assert x.requires_grad and x.grad_fn is None
    same(x[0], values(y))


def test_index_backward_does_not_save_tensor(T):
    a = T.tensor([1.0, 0, 0])
    b = T.zeros(3, requires_grad=True)
    tensor = b + 0
    tensor[a != 0] = tensor[a != 0]
    tensor.backward(T.zeros_like(tensor))
    same(b.grad, np.zeros(3))


def test_inplace_on_view_leaf_errors(T):
    x = T.zeros(1, requires_grad=True)
    y = x.view_as(x)
    raises(RuntimeError, "a view of a leaf Variable that requires grad is being used in an in-place operation.",
           y.add_, 1)


def test_inplace_on_view_weak_grad_fn(T):
    a = T.arange(10.0, requires_grad=True)
    b = a.narrow(0, 0, 2).clone().view(-1)
    b.relu_()
    c = b.clone()
    del b
    s = c.sum()
    s.backward()
    same(s, 1.0)
    same(a.grad, [0.0, 1.0] + [0.0] * 8)
    a = T.rand(10, requires_grad=True).narrow(0, 0, 10)
    raises(RuntimeError, "", a.relu_)


def test_inplace_on_view_backward(T):
    F = nn(T).functional
    inputs = T.ones((1, 3, 4, 4), requires_grad=True)
    tmp1 = (inputs + 1).view_as(inputs)
    tmp2 = F.threshold(tmp1, 0.0, 0.0, True)
    prob = T.sigmoid(tmp2)
    (gradients,) = T.autograd.grad(outputs=prob, inputs=inputs, grad_outputs=T.ones(prob.size()),
                                   create_graph=True, retain_graph=True)
    s = 1 / (1 + np.exp(-2.0))
    close(gradients, np.full((1, 3, 4, 4), s * (1 - s)))
    penalty = gradients.sum()
    penalty.backward()
    close(inputs.grad, np.full((1, 3, 4, 4), s * (1 - s) * (1 - 2 * s)))


def test_inplace_on_view_of_non_leaf_gradients(T):
    """An in-place write through a view becomes its base's history: the base's gradient sees it."""
    a = randn(T, 4, 4)
    b = a * 1
    v = b[1:3, 1:3]
    v.mul_(3)
    b.sum().backward()
    expected = np.ones((4, 4))
    expected[1:3, 1:3] = 3
    same(a.grad, expected)
    # a view of a base that did not require grad, written with a value that does
    x = T.zeros(4, 4, dtype=T.float64)
    w = randn(T, 2, 2, seed=1)
    x[1:3, 1:3].add_(w * 2)
    assert x.requires_grad
    x.sum().backward()
    same(w.grad, np.full((2, 2), 2.0))


def test_out_variant_raises_when_inputs_require_grad(T):
    a, b = T.randn(2, 2, requires_grad=True), T.randn(2, 2, requires_grad=True)
    x = T.zeros_like(a)
    raises(RuntimeError, "out=", lambda: T.mul(a, b, out=x))
    with T.no_grad():
        T.mul(a, b, out=x)
        same(x, values(a) * values(b))
    x = T.zeros(2, 2, requires_grad=True)
    raises(RuntimeError, "out=", lambda: T.mul(T.randn(2, 2), T.randn(2, 2), out=x))


def anomaly_function(T, size=10):
    class MyFunc(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp1, inp2, fail_0th):
            ctx.fail_0th = fail_0th
            return inp1.sum(0, keepdim=True)

        @staticmethod
        def backward(ctx, gO):
            gI = gO.clone().expand(size).clone()
            gI[0] = 0
            gI[0] /= 0  # a NaN
            return (gI, None, None) if ctx.fail_0th else (None, gI, None)

    return MyFunc


def test_anomaly_detect_nan(T):
    MyFunc = anomaly_function(T)
    inp = T.rand(10, requires_grad=True)
    MyFunc.apply(inp, inp, True).backward()  # not in anomaly mode: no check
    assert np.isnan(values(inp.grad)[0])
    inp = T.rand(10, requires_grad=True)
    out = MyFunc.apply(inp, inp, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with T.autograd.detect_anomaly():
            raises(RuntimeError, "Function 'MyFuncBackward' returned nan values in its 0th output.", out.backward)
        inp = T.rand(10, requires_grad=True)
        with T.autograd.detect_anomaly():
            out = MyFunc.apply(inp, inp, False)
            raises(RuntimeError, "Function 'MyFuncBackward' returned nan values in its 1th output.", out.backward)
    assert not T.is_anomaly_enabled()


def test_anomaly_mode_no_check_nan(T):
    class MyFunc(T.autograd.Function):
        @staticmethod
        def forward(ctx, inp):
            return inp.clone()

        @staticmethod
        def backward(ctx, gO):
            return T.tensor(float("nan")).expand(10, 10)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with T.autograd.detect_anomaly(check_nan=False):
            inp = T.rand(10, 10, requires_grad=True)
            out = MyFunc.apply(inp).sum()
            out.backward(retain_graph=True)
            with T.autograd.detect_anomaly(check_nan=True):
                raises(RuntimeError, "Function 'MyFuncBackward' returned nan values in its 0th output.",
                       out.backward, retain_graph=True)
            out.backward()
    assert np.isnan(values(inp.grad)).all()


def test_set_detect_anomaly(T):
    assert not T.is_anomaly_enabled()
    with T.autograd.set_detect_anomaly(True):
        assert T.is_anomaly_enabled()
        with T.autograd.set_detect_anomaly(False):
            assert not T.is_anomaly_enabled()
        assert T.is_anomaly_enabled()
    assert not T.is_anomaly_enabled()


def test_anomaly_inplace_error_still_raised(T):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with T.autograd.detect_anomaly():
            a = T.randn(5, requires_grad=True)
            d1 = a + 1
            d2 = d1 ** 2
            d1 += 1
            raises(RuntimeError, MODIFIED, T.autograd.grad, d2.sum(), a)


def test_anomaly_grad_warnings(T):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        with T.autograd.detect_anomaly():
            a = T.randn(5, requires_grad=True)
            d1 = a + 1
            d2 = d1 ** 2
            d1 += 1
            raises(RuntimeError, MODIFIED, T.autograd.grad, d2.sum(), a)
    # (only anomaly mode's own: with "always", a warning another module raises in the block is recorded too)
    messages = [str(x.message) for x in w if "Anomaly Detection" in str(x.message) or "Error detected" in
                str(x.message)]
    assert len(messages) == 2
    assert "Anomaly Detection has been enabled" in messages[0]
    assert re.search(r"Error detected in PowBackward0", messages[1]) and "d2 = d1 ** 2" in messages[1]
