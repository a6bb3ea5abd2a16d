"""Value.backward's own loop against the shared engine (which the trace uses), on deep
chains, reused nodes, and repeated passes."""

import random

import pytest

from autograd import Value, backpropagate

OPS = [lambda a, b: a + b, lambda a, b: a * b, lambda a, b: a - b, lambda a, b: a.tanh(),
       lambda a, b: (a - 1.0).relu(), lambda a, b: a.sigmoid(), lambda a, b: a**2, lambda a, b: 1.5 / (a * a + 1.0)]


def random_graph(seed, leaves=4, nodes=60):
    """A random expression over a few leaves, reusing intermediate results."""
    rnd = random.Random(seed)
    pool = [Value(rnd.uniform(0.5, 1.5), label=f"x{i}") for i in range(leaves)]
    xs = list(pool)
    for _ in range(nodes):
        pool.append(rnd.choice(OPS)(rnd.choice(pool), rnd.choice(pool)))
    return xs, sum(pool[-10:], Value(0.0))


@pytest.mark.parametrize("seed", range(5))
def test_backward_matches_the_shared_engine(seed):
    xs, out = random_graph(seed)
    out.backward()
    fast = [x.grad for x in xs]
    xs, out = random_graph(seed)
    backpropagate([out], [1.0], retain_graph=True)
    assert fast == pytest.approx([x.grad for x in xs], rel=1e-12)


def test_a_second_backward_adds_the_same_gradients_everywhere():
    x = Value(0.7)
    h = (x * x).tanh()
    y = h * h + x
    y.backward()
    first = (x.grad, h.grad, y.grad)
    y.backward()
    assert (x.grad, h.grad, y.grad) == pytest.approx(tuple(2 * g for g in first))


def test_backward_of_an_inner_node_after_the_output():
    x = Value(2.0)
    h = x * 3.0
    y = h * h
    y.backward()  # dy/dh = 2h = 12, dy/dx = 36
    h.backward()  # dh/dh = 1, dh/dx = 3: the shares of this pass only, added
    assert h.grad == 12.0 + 1.0
    assert x.grad == 36.0 + 3.0


def test_backward_of_a_leaf():
    x = Value(1.0)
    x.backward()
    assert x.grad == 1.0


def test_deep_chain_gradient():
    """10^5 steps of y = y * a + b: dy/dx = a^n, dy/db = (1 - a^n) / (1 - a)."""
    a, n = 1.00001, 100_000
    x, b = Value(1.0), Value(0.5)
    y = x
    for _ in range(n):
        y = y * a + b
    y.backward()
    assert x.grad == pytest.approx(a**n, rel=1e-9)
    assert b.grad == pytest.approx((1 - a**n) / (1 - a), rel=1e-6)


def test_backward_restores_garbage_collection():
    import gc

    Value(1.0).tanh().backward()
    assert gc.isenabled()


def test_parents_and_local_grads_as_tuples():
    a, b = Value(2.0), Value(3.0)
    assert (a.parents, a.local_grads) == ((), ())
    y = a.tanh()
    assert y.parents == (a,) and y.local_grads == pytest.approx((1 - y.data**2,))
    z = a * b
    assert z.parents == (a, b) and z.local_grads == (3.0, 2.0)
    w = Value(5.0, "w", (a, b), "custom", (0.5, 0.25))  # built by hand, as the lecture does
    w.backward()
    assert (w.op, w.label, a.grad, b.grad) == ("custom", "w", 0.5, 0.25)


def test_a_value_has_at_most_two_parents():
    a = Value(1.0)
    with pytest.raises(ValueError, match="at most two parents"):
        Value(3.0, "", (a, a, a), "sum3", (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="local derivative"):
        Value(3.0, "", (a, a), "+", (1.0,))
