"""The random samplers' ranges and argument checks, ported from PyTorch's test/test_torch.py
(TestTorchDeviceType on CPU: test_bernoulli*, test_multinomial*, test_normal*, test_uniform*,
test_random*, test_exponential, test_geometric, test_cauchy, test_log_normal).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`),
against literal or NumPy-computed expectations (the draws' ranges, never their exact values).
"""

import numpy as np
import pytest

from tests.ported import dtype_name, raises, same, values


@pytest.fixture(autouse=True)
def seeded(T):
    T.manual_seed(2024)


def test_bernoulli_edge_cases(T):
    """test_bernoulli_edge_cases: p = 0 never draws 1, p = 1 always does, in the input's dtype."""
    same(T.zeros(10).bernoulli_(0.0), np.zeros(10, np.float32))
    same(T.zeros(10).bernoulli_(1.0), np.ones(10, np.float32))
    same(T.bernoulli(T.zeros(3, dtype=T.float64)), [0, 0, 0], "float64")
    same(T.bernoulli(T.ones(3)), [1, 1, 1], "float32")
    same(T.bernoulli(T.ones(3), p=0.0), [0, 0, 0])
    same(T.zeros(3).bernoulli_(T.tensor([0.0, 1.0, 0.0])), [0, 1, 0])
    same(T.zeros(3, dtype=T.int64).bernoulli_(1.0), [1, 1, 1], "int64")
    same(T.zeros(3, dtype=T.bool).bernoulli_(1.0), [True, True, True], "bool")


def test_bernoulli_self_mean(T):
    """test_bernoulli_self: the draws are 0 or 1, with mean p."""
    x = values(T.empty(4000).bernoulli_(0.3))
    assert set(np.unique(x)) <= {0.0, 1.0}
    assert abs(x.mean() - 0.3) < 0.05
    y = values(T.bernoulli(T.full((4000,), 0.8)))
    assert abs(y.mean() - 0.8) < 0.05


def test_bernoulli_errors(T):
    raises(RuntimeError, r"p", T.empty(3).bernoulli_, 1.5)
    raises(RuntimeError, r"p", T.empty(3).bernoulli_, -0.1)
    raises(RuntimeError, None, T.bernoulli, T.tensor([1.5]))


def test_multinomial(T):
    """test_multinomial: with replacement any index repeats, never one of weight 0; without, each at most
    once; a 2-D input draws per row."""
    probs = T.tensor([0.0, 2.0, 0.0, 1.0])
    s = values(T.multinomial(probs, 200, replacement=True))
    assert set(np.unique(s)) == {1, 3}
    assert abs((s == 1).mean() - 2 / 3) < 0.12
    s = values(T.multinomial(probs, 2))
    assert sorted(s.tolist()) == [1, 3]
    rows = values(T.multinomial(T.tensor([[0.0, 1.0], [1.0, 0.0]]), 1))
    np.testing.assert_array_equal(rows, [[1], [0]])
    assert sorted(values(T.multinomial(T.ones(3), 3)).tolist()) == [0, 1, 2]
    out = T.empty(2, dtype=T.int64)
    T.multinomial(T.tensor([0.0, 1.0]), 2, replacement=True, out=out)
    same(out, [1, 1], "int64")
    assert tuple(T.multinomial(T.zeros(0, 3), 1).shape) == (0, 1)


def test_multinomial_invalid_distributions(T):
    """test_multinomial_invalid_probs / test_multinomial_invalid_distribution."""
    for bad in ([1.0, -1.0], [1.0, float("nan")], [1.0, float("inf")]):
        raises(RuntimeError, r"probability tensor contains either `inf`, `nan` or element < 0", T.multinomial,
               T.tensor(bad), 1)
    raises(RuntimeError, r"invalid multinomial distribution \(sum of probabilities <= 0\)", T.multinomial,
           T.zeros(2), 1)
    raises(RuntimeError, r"cannot sample n_sample > prob_dist.size\(-1\) samples without replacement",
           T.multinomial, T.ones(2), 3)
    raises(RuntimeError, r"prob_dist must be 1 or 2 dim", T.multinomial, T.ones(2, 2, 2), 1)
    raises(RuntimeError, r"cannot sample n_sample <= 0 samples", T.multinomial, T.ones(3), 0)
    raises(RuntimeError, r"multinomial only supports floating-point dtypes for input, got: Long", T.multinomial,
           T.ones(3, dtype=T.int64), 1)


def test_normal_overloads(T):
    """test_normal: tensor/number means and stds broadcast; two numbers need a size."""
    assert tuple(T.normal(T.zeros(2, 3), 1.0).shape) == (2, 3)
    assert tuple(T.normal(0.0, T.ones(4)).shape) == (4,)
    assert tuple(T.normal(T.zeros(2, 1), T.ones(3)).shape) == (2, 3)
    same(T.normal(2.0, 0.0, size=(3,)), np.full(3, 2.0, np.float32))
    same(T.normal(2.0, 0.0, (3,), dtype=T.float64), [2, 2, 2], "float64")
    same(T.normal(T.tensor([1.0, 5.0], dtype=T.float64), 0.0), [1, 5], "float64")
    out = T.empty(3)
    T.normal(T.tensor([1.0, 2.0, 3.0]), 0.0, out=out)
    same(out, [1, 2, 3])
    x = values(T.normal(3.0, 2.0, (5000,)))
    assert abs(x.mean() - 3) < 0.15 and abs(x.std() - 2) < 0.15
    x = values(T.empty(5000).normal_(-1.0, 0.5))
    assert abs(x.mean() + 1) < 0.05 and abs(x.std() - 0.5) < 0.05
    raises(RuntimeError, r"The size of tensor a \(2\) must match the size of tensor b \(3\) at non-singleton "
           r"dimension 0", T.normal, T.zeros(2), T.ones(3))
    raises(RuntimeError, r"normal expects all elements of std >= 0.0", T.normal, T.zeros(2), T.tensor([-1.0, 1.0]))
    raises(RuntimeError, r"normal_? expects std >= 0.0, but found std -1", T.empty(3).normal_, 0, -1)
    raises(NotImplementedError, r"\"normal_kernel_cpu\" not implemented for 'Long'", T.tensor([1, 2]).normal_)


def test_uniform(T):
    """test_uniform_from_to: draws in [from, to); from > to is refused; from == to gives from."""
    x = values(T.empty(2000).uniform_(2, 3))
    assert x.min() >= 2 and x.max() < 3 and abs(x.mean() - 2.5) < 0.05
    x = values(T.empty(2000, dtype=T.float64).uniform_(-5, -4))
    assert x.min() >= -5 and x.max() < -4
    same(T.empty(3).uniform_(1, 1), np.ones(3, np.float32))
    raises(RuntimeError, r"uniform_ expects to return a \[from, to\) range, but found from=2 > to=1",
           T.empty(3).uniform_, 2, 1)
    raises(NotImplementedError, r"\"check_uniform_bounds\" not implemented for 'Long'", T.tensor([1, 2]).uniform_)
    raises(NotImplementedError, r"\"check_uniform_bounds\" not implemented for 'Bool'", T.tensor([True]).uniform_)


def test_random_from_to(T):
    """test_random_from_to / test_random_to / test_random_default: integers in [from, to) in x's dtype."""
    x = values(T.empty(500).random_(3, 7))
    assert set(np.unique(x)) == {3, 4, 5, 6}
    x = values(T.empty(500, dtype=T.int8).random_(-3, 0))
    assert set(np.unique(x)) == {-3, -2, -1}
    x = values(T.empty(500, dtype=T.int64).random_(5))
    assert x.min() >= 0 and x.max() < 5
    x = T.empty(500, dtype=T.uint8).random_()
    assert dtype_name(x) == "uint8" and values(x).max() > 200
    x = values(T.empty(500, dtype=T.bool).random_())
    assert set(np.unique(x)) == {False, True}
    raises(RuntimeError, r"random_ expects 'from' to be less than 'to', but got from=3 >= to=3", T.empty(2).random_,
           3, 3)
    raises(RuntimeError, r"from is out of bounds for unsigned char", T.empty(2, dtype=T.uint8).random_, -1, 3)
    raises(RuntimeError, r"to - 1 is out of bounds for signed char", T.empty(2, dtype=T.int8).random_, 0, 200)


def test_other_distributions(T):
    """test_exponential / test_geometric / test_cauchy / test_log_normal: supports and argument checks."""
    e = values(T.empty(4000).exponential_(2.0))
    assert e.min() >= 0 and abs(e.mean() - 0.5) < 0.05
    g = values(T.empty(4000).geometric_(0.25))
    assert g.min() >= 1 and np.all(g == np.round(g)) and abs(g.mean() - 4) < 0.3
    ln = values(T.empty(1000).log_normal_(0.0, 0.5))
    assert ln.min() > 0
    c = values(T.empty(1000).cauchy_(1.0, 0.1))
    assert abs(np.median(c) - 1) < 0.05
    raises(RuntimeError, r"exponential_ expects lambda > 0.0, but found lambda=-1", T.empty(2).exponential_, -1.0)
    raises(RuntimeError, r"Exponential distribution is a continuous probability distribution. dtype must be a "
           r"floating point but you specified Long", T.empty(3, dtype=T.int64).exponential_)
    raises(RuntimeError, r"geometric_ expects p to be in \(0, 1\), but got p=0", T.empty(3).geometric_, 0)
    raises(RuntimeError, r"geometric_ expects p to be in \(0, 1\), but got p=1", T.empty(3).geometric_, 1)
    raises(RuntimeError, r"log_normal_ expects std > 0.0, but found std=-1", T.empty(3).log_normal_, 0, -1)
    raises(RuntimeError, r"cauchy_ expects sigma > 0.0, but found sigma=-1", T.empty(3).cauchy_, 0, -1)


def test_randperm_and_randint(T):
    for n in (0, 1, 5, 100):
        p = values(T.randperm(n))
        assert sorted(p.tolist()) == list(range(n))
    assert dtype_name(T.randperm(5)) == "int64" and dtype_name(T.randperm(5, dtype=T.float32)) == "float32"
    r = T.randint(5, (200,))
    assert dtype_name(r) == "int64" and set(np.unique(values(r))) == set(range(5))
    assert dtype_name(T.randint(0, 2, (3,), dtype=T.int32)) == "int32"
    raises(RuntimeError, r"random_ expects 'from' to be less than 'to', but got from=3 >= to=3", T.randint, 3, 3,
           (2,))


def test_factories_refuse_what_they_cannot_draw(T):
    raises(NotImplementedError, r"\"check_uniform_bounds\" not implemented for 'Long'", T.rand, 2, dtype=T.int64)
    raises(NotImplementedError, r"\"normal_kernel_cpu\" not implemented for 'Long'", T.randn, 2, dtype=T.int64)
    raises(RuntimeError, r"Trying to create tensor with negative dimension -1: \[-1\]", T.randperm, -1)


def test_generator_state(T):
    """test_generator_cpu / test_RNG_after_pickle: a generator's state replays its draws."""
    g = T.Generator()
    g.manual_seed(7)
    assert g.initial_seed() == 7
    state = g.get_state()
    a = values(T.rand(4, generator=g))
    g.set_state(state)
    np.testing.assert_array_equal(values(T.rand(4, generator=g)), a)
    b = values(T.randn(4, generator=g))
    assert not np.array_equal(a, b)
    seed = T.seed()
    assert isinstance(seed, int) and T.initial_seed() == seed
