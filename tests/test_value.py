"""The scalar engine: each operation's value and derivative, against closed forms and
finite differences, and the lecture's neuron."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autograd import Value

FINITE = st.floats(-3, 3, allow_nan=False)

UNARY = {
    "exp": (lambda v: v.exp(), math.exp, math.exp),
    "tanh": (lambda v: v.tanh(), math.tanh, lambda x: 1 - math.tanh(x) ** 2),
    "sigmoid": (lambda v: v.sigmoid(), lambda x: 1 / (1 + math.exp(-x)),
                lambda x: math.exp(-x) / (1 + math.exp(-x)) ** 2),
    "relu": (lambda v: v.relu(), lambda x: max(0.0, x), lambda x: float(x > 0)),
    "neg": (lambda v: -v, lambda x: -x, lambda x: -1.0),
    "square": (lambda v: v**2, lambda x: x * x, lambda x: 2 * x),
    "cube_minus_const": (lambda v: v**3 - 1, lambda x: x**3 - 1, lambda x: 3 * x * x),
    "rsub": (lambda v: 2 - v, lambda x: 2 - x, lambda x: -1.0),
    "radd_rmul": (lambda v: 1 + 3 * v, lambda x: 1 + 3 * x, lambda x: 3.0),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(x=FINITE.filter(lambda x: abs(x) > 1e-3))
def test_unary_value_and_derivative(name, x):
    op, f, df = UNARY[name]
    v = Value(x)
    y = op(v)
    y.backward()
    assert y.data == pytest.approx(f(x), rel=1e-12, abs=1e-12)
    assert v.grad == pytest.approx(df(x), rel=1e-9, abs=1e-12)


@given(x=st.floats(0.1, 5), y=st.floats(0.1, 5))
def test_binary_ops_against_finite_differences(x, y):
    def f(a, b):
        return (a * b + a / b - b**0.5 * a.log() + (b - a).tanh()) / (1 + a)

    a, b = Value(x), Value(y)
    out = f(a, b)
    out.backward()
    eps = 1e-6
    da = (f(Value(x + eps), Value(y)).data - f(Value(x - eps), Value(y)).data) / (2 * eps)
    db = (f(Value(x), Value(y + eps)).data - f(Value(x), Value(y - eps)).data) / (2 * eps)
    assert a.grad == pytest.approx(da, rel=1e-5, abs=1e-7)
    assert b.grad == pytest.approx(db, rel=1e-5, abs=1e-7)


def test_lecture_neuron_gradients():
    # y = σ(w1 x1 + w2 x2 + b), L = (y - t)²
    x1, x2, w1, w2, b = Value(2.0), Value(-1.0), Value(0.5), Value(-0.25), Value(0.1)
    z = w1 * x1 + w2 * x2 + b
    y = z.sigmoid()
    loss = (y - 1.0) ** 2
    loss.backward()
    s = 1 / (1 + math.exp(-1.35))
    dz = 2 * (s - 1) * s * (1 - s)
    assert z.grad == pytest.approx(dz)
    assert w1.grad == pytest.approx(dz * 2.0)
    assert w2.grad == pytest.approx(dz * -1.0)
    assert b.grad == pytest.approx(dz)
    assert x1.grad == pytest.approx(dz * 0.5)


def test_every_node_of_a_reused_graph_gets_its_total_gradient():
    a = Value(3.0)
    b = a * a  # a reused
    c = b + a
    c.backward()
    assert a.grad == pytest.approx(2 * 3.0 + 1)
    assert b.grad == 1.0


def test_sigmoid_is_finite_at_large_inputs():
    assert Value(-1000.0).sigmoid().data == 0.0
    assert Value(1000.0).sigmoid().data == 1.0


def test_million_node_chain():
    x = Value(1.0)
    y = x
    for _ in range(1_000_000):
        y = y * 1.0
    y.backward()
    assert x.grad == 1.0


def test_power_needs_a_number():
    with pytest.raises(TypeError, match="number exponent"):
        Value(2.0) ** Value(3.0)


def test_repr_shows_label_data_and_grad():
    assert repr(Value(1.5, label="w")) == "Value(label='w', data=1.5, grad=0)"
