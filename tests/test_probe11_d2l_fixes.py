"""Fixes found by the d2l programs (tests/test_programs_probe11_d2l_*.py) and the draws they led to, checked on
chainrule and PyTorch.

A single multinomial draw with replacement is PyTorch's exponential race (its kernel takes that path for
one sample whatever ``replacement`` says), so ``Categorical(p).sample()`` draws PyTorch's classes; and
``Multinomial(n, p).sample()`` counts n Categorical draws, as PyTorch's, instead of NumPy's own algorithm."""

import numpy as np


def test_one_sample_with_replacement_is_the_exponential_race(T):
    p = T.tensor([0.1, 0.2, 0.3, 0.4])
    rows = T.stack([p, p.flip(0), T.tensor([0.7, 0.1, 0.1, 0.1])])
    for weights in (p, rows):
        T.manual_seed(3)
        with_replacement = T.multinomial(weights, 1, replacement=True)
        T.manual_seed(3)
        race = T.multinomial(weights, 1, replacement=False)
        assert with_replacement.tolist() == race.tolist()
    # the race by hand: argmax of p / E over PyTorch's exponential draws
    T.manual_seed(5)
    drawn = T.multinomial(p, 1, replacement=True)
    T.manual_seed(5)
    E = T.empty(4).exponential_()
    assert drawn.tolist() == [int((p / E).argmax())]


def test_categorical_and_multinomial_samples_are_pytorchs(T):
    p = T.tensor([0.1, 0.2, 0.3, 0.4])
    T.manual_seed(0)
    assert T.multinomial(p, 1, True).tolist() == [2]  # PyTorch 2.x's value
    T.manual_seed(0)
    assert int(T.distributions.Categorical(probs=p).sample()) == 2
    T.manual_seed(0)
    counts = T.distributions.Multinomial(10, p).sample((2,))
    np.testing.assert_array_equal(counts.numpy(), [[0, 1, 6, 3], [0, 3, 2, 5]])
    assert counts.dtype == p.dtype
    # total_count Categorical draws, counted: the same stream read either way
    T.manual_seed(1)
    rows = T.stack([p, p.flip(0)])
    counts = T.distributions.Multinomial(7, rows).sample((3,))
    T.manual_seed(1)
    classes = T.distributions.Categorical(probs=rows).sample((7, 3))
    by_hand = (classes.numpy()[..., None] == np.arange(4)).sum(0)
    assert counts.shape == (3, 2, 4)
    np.testing.assert_array_equal(counts.numpy(), by_hand)
    np.testing.assert_array_equal(counts.numpy().sum(-1), 7)


def test_cauchy_geometric_log_normal_draw_pytorchs_numbers(T):
    """cauchy_, geometric_ and log_normal_ turn the twister's float64 uniforms into numbers as PyTorch's
    serial CPU kernels do (they were NumPy's own algorithms on the same twister: other numbers)."""
    T.manual_seed(1)
    c = T.empty(4).cauchy_(1.0, 2.0)
    T.manual_seed(1)
    u = T.rand(4, dtype=T.float64)
    np.testing.assert_allclose(c.numpy(), 1.0 + 2.0 * np.tan(np.pi * (u.numpy() - 0.5)), rtol=1e-6)
    T.manual_seed(1)
    g = T.empty(4).geometric_(0.3)
    np.testing.assert_array_equal(g.numpy(), np.ceil(np.log(u.numpy()) / np.log1p(-0.3)))
    # log-normal: exp of Box-Muller on two float64 uniforms, the sine kept for the next number
    T.manual_seed(1)
    ln = T.empty(3, dtype=T.float64).log_normal_(0.5, 0.7)
    T.manual_seed(1)
    u = T.rand(4, dtype=T.float64).numpy()
    radius, theta = np.sqrt(-2 * np.log1p(-u[1::2])), 2 * np.pi * u[0::2]
    z = [radius[0] * np.cos(theta[0]), radius[0] * np.sin(theta[0]), radius[1] * np.cos(theta[1])]
    np.testing.assert_allclose(ln.numpy(), np.exp(np.array(z) * 0.7 + 0.5), rtol=1e-12)
    T.manual_seed(0)
    assert T.empty(3).geometric_(0.3).tolist() == [1.0, 1.0, 3.0]  # PyTorch 2.x's value


def test_gamma_family_draws_are_pytorchs(T):
    """_standard_gamma is PyTorch's sample_gamma (Marsaglia-Tsang on its float64 uniforms and one-at-a-time
    normals, the shape's arithmetic in its dtype), so Gamma, Beta, Dirichlet, Chi2 and StudentT draw PyTorch's
    numbers after the same seed (they were NumPy's gamma algorithm on the same twister)."""
    T.manual_seed(1)
    g = T._standard_gamma(T.tensor([0.3, 1.0, 2.5, 7.0, 0.05]))
    np.testing.assert_allclose(g[:3].numpy(), [0.8799756, 1.4460559, 3.6930075], rtol=1e-6)  # PyTorch 2.x's
    assert (g > 0).all()
    # the boost of a shape below 1 and the squeeze test, by hand for one float64 draw of shape 2.5
    T.manual_seed(4)
    drawn = float(T._standard_gamma(T.tensor([2.5], dtype=T.float64)))
    T.manual_seed(4)
    u = T.rand(3, dtype=T.float64).numpy()
    x = np.sqrt(-2 * np.log1p(-u[1])) * np.cos(2 * np.pi * u[0])  # the first one-at-a-time normal
    d = 2.5 - float(np.float32(1) / np.float32(3))
    v = (1 + x / np.sqrt(9 * d)) ** 3
    squeeze = 1 - u[2] < 1 - float(np.float32(0.0331)) * x ** 4
    accepted = squeeze or np.log(1 - u[2]) < 0.5 * x * x + d * (1 - v + np.log(v))
    assert accepted  # (this seed's first candidate is accepted, by the log test)
    np.testing.assert_allclose(drawn, d * v, rtol=1e-12)
    for make in (lambda D: D.Gamma(T.tensor([1.0, 2.0]), T.tensor([1.0, 2.0])),
                 lambda D: D.Beta(T.tensor([0.2, 2.0]), T.tensor([0.5, 2.0])),
                 lambda D: D.Dirichlet(T.tensor([1.0, 2.0, 0.3]))):
        T.manual_seed(2)
        first = make(T.distributions).sample((4,))
        T.manual_seed(2)
        assert (make(T.distributions).sample((4,)) == first).all()
