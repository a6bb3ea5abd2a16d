"""``autograd.quasirandom.SobolEngine``, PyTorch's Sobol sequence: its points, scrambling, state and errors.

Every test runs on chainrule and on PyTorch (``T``). The expected values are literals or properties that hold
for any Sobol sequence, so they assert something real on CI, where torch is missing. The scrambled sequences are
also compared with PyTorch's, point for point, where it is installed."""

import numpy as np
import pytest

import autograd
from autograd.quasirandom import _direction_numbers, _scrambled


def test_the_first_points_are_sobols(T):
    engine = T.quasirandom.SobolEngine(dimension=3)
    points = engine.draw(8)
    assert points.dtype == T.float32 and tuple(points.shape) == (8, 3)
    expected = [[0, 0, 0], [0.5, 0.5, 0.5], [0.75, 0.25, 0.25], [0.25, 0.75, 0.75],
                [0.375, 0.375, 0.625], [0.875, 0.875, 0.125], [0.625, 0.125, 0.875], [0.125, 0.625, 0.375]]
    assert np.array_equal(points.numpy(), np.array(expected, np.float32))


@pytest.mark.parametrize("dimension", [1, 7, 300, 21201])
def test_every_coordinate_of_the_first_2_to_the_m_points_hits_each_interval_once(T, dimension):
    # the balance that makes it a (t, s)-sequence: in every coordinate the first 2^m points (unscrambled:
    # k / 2^m) fall one in each interval [k/2^m, (k+1)/2^m)
    points = T.quasirandom.SobolEngine(dimension).draw_base2(5, dtype=T.float64).numpy()
    cells = np.sort(np.floor(points * 32).astype(int), axis=0)
    assert np.array_equal(cells, np.broadcast_to(np.arange(32)[:, None], points.shape))
    assert np.array_equal(points * 32, np.floor(points * 32))  # exactly k/32


def test_the_two_dimensional_projections_are_balanced_too(T):
    # Joe and Kuo's direction numbers are chosen for this: in coordinates 0 and 1 the first 16 points put one in
    # each cell of the 4 x 4 grid
    points = T.quasirandom.SobolEngine(2).draw(16, dtype=T.float64).numpy()
    cells = {(int(x * 4), int(y * 4)) for x, y in points}
    assert len(cells) == 16


@pytest.mark.parametrize("seed", [0, 7])
def test_scrambled_points_keep_the_balance_and_the_seed_repeats_them(T, seed):
    engine = T.quasirandom.SobolEngine(4, scramble=True, seed=seed)
    points = engine.draw(16, dtype=T.float64).numpy()
    assert np.array_equal(np.sort(np.floor(points * 16), axis=0), np.broadcast_to(np.arange(16.0)[:, None], (16, 4)))
    assert not np.array_equal(points[0], np.zeros(4))  # starts at the random shift, not 0
    again = T.quasirandom.SobolEngine(4, scramble=True, seed=seed).draw(16, dtype=T.float64).numpy()
    assert np.array_equal(points, again)
    assert engine.shift.dtype == T.int64 and tuple(engine.sobolstate.shape) == (4, 30)
    assert repr(engine) == f"SobolEngine(dimension=4, scramble=True, seed={seed})"


def test_unseeded_scrambling_draws_from_the_global_generator(T):
    T.manual_seed(5)
    first = T.quasirandom.SobolEngine(3, scramble=True).draw(4)
    T.manual_seed(5)
    assert T.equal(first, T.quasirandom.SobolEngine(3, scramble=True).draw(4))


def test_state_draws_fast_forward_and_reset(T):
    everything = T.quasirandom.SobolEngine(5, scramble=True, seed=1).draw(12, dtype=T.float64)
    engine = T.quasirandom.SobolEngine(5, scramble=True, seed=1)
    parts = [engine.draw(1, dtype=T.float64), engine.draw(4, dtype=T.float64)]
    engine.fast_forward(3)
    parts.append(engine.draw(4, dtype=T.float64))
    assert T.equal(T.cat(parts[:2]), everything[:5]) and T.equal(parts[2], everything[8:12])
    assert engine.num_generated == 12
    assert T.equal(engine.reset().draw(3, dtype=T.float64), everything[:3])
    out = T.empty(0)
    assert engine.reset().draw(2, out=out) is out and T.equal(out, everything[:2].float())


def test_the_first_point_of_a_float64_draw_is_rounded_as_pytorchs(T):
    # the shift is divided by 2^30 once, in the default dtype of the engine's making (float32), so a float64 draw's
    # first point has float32's precision and the others float64's
    engine = T.quasirandom.SobolEngine(3, scramble=True, seed=11)
    points = engine.draw(2, dtype=T.float64).numpy()
    shift = engine.shift.numpy()
    assert np.array_equal(points[0], (shift / 2**30).astype(np.float32).astype(np.float64))
    assert np.array_equal(points[0], points[0].astype(np.float32))


def test_draws_follow_the_default_dtype(T):
    previous = T.get_default_dtype()
    T.set_default_dtype(T.float64)
    try:
        assert T.quasirandom.SobolEngine(2).draw(3).dtype == T.float64
    finally:
        T.set_default_dtype(previous)


def test_errors_say_what_is_wrong(T):
    for dimension in (0, 21202):
        with pytest.raises(ValueError, match=r"Supported range of dimensionality for SobolEngine is \[1, 21201\]"):
            T.quasirandom.SobolEngine(dimension)
    with pytest.raises(NotImplementedError, match="\"_sobol_engine_draw\" not implemented for 'Long'"):
        T.quasirandom.SobolEngine(2).draw(2, dtype=T.int64)
    with pytest.raises(NotImplementedError, match="not implemented for 'Half'"):
        T.quasirandom.SobolEngine(2).draw(2, dtype=T.float16)
    with pytest.raises(RuntimeError, match="negative dimension -1"):
        T.quasirandom.SobolEngine(2).draw(0)
    engine = T.quasirandom.SobolEngine(2)
    engine.draw(3)
    with pytest.raises(ValueError, match=r"require n to be a power of 2\. 3 points have been previously generated, "
                                         r"then: n=3\+2\*\*1=5"):
        engine.draw_base2(1)


def test_quasi_monte_carlo_beats_monte_carlo_on_a_smooth_integral(T):
    # ∫ over [0,1]^4 of Π cos(x_i) = sin(1)^4: scrambled Sobol points' error is far below uniform draws'
    exact = np.sin(1.0) ** 4
    points = T.quasirandom.SobolEngine(4, scramble=True, seed=2).draw(1024, dtype=T.float64)
    quasi = T.cos(points).prod(dim=1).mean().item()
    T.manual_seed(2)
    plain = T.cos(T.rand(1024, 4, dtype=T.float64)).prod(dim=1).mean().item()
    assert abs(quasi - exact) < 1e-4 and abs(quasi - exact) < abs(plain - exact) / 10


def test_normal_base_samples_through_the_inverse_cdf(T):
    # a BoTorch-style sampler: quasi-random standard normals for reparameterised Monte Carlo
    uniform = T.quasirandom.SobolEngine(2, scramble=True, seed=0).draw(256, dtype=T.float64)
    normals = T.distributions.Normal(0.0, 1.0).icdf(uniform.clamp(1e-10, 1 - 1e-10))
    mean, std = normals.mean(0).numpy(), normals.std(0).numpy()
    assert np.all(np.abs(mean) < 0.01) and np.all(np.abs(std - 1) < 0.05)


@pytest.mark.torch
@pytest.mark.parametrize("dimension", [1, 3, 40, 1111])
def test_scrambled_points_are_pytorchs(dimension):
    torch = pytest.importorskip("torch")
    for seed in (0, 12345):
        ours = autograd.quasirandom.SobolEngine(dimension, scramble=True, seed=seed)
        theirs = torch.quasirandom.SobolEngine(dimension, scramble=True, seed=seed)
        assert np.array_equal(ours.sobolstate.numpy(), theirs.sobolstate.numpy())
        assert np.array_equal(ours.draw(9).numpy(), theirs.draw(9).numpy())
        ours.fast_forward(7)
        theirs.fast_forward(7)
        assert np.array_equal(ours.draw(5, dtype=autograd.float64).numpy(), theirs.draw(5, dtype=torch.float64).numpy())


def test_the_scramble_is_a_matrix_product_over_gf2():
    # L v over GF(2), written out bit by bit, for a few random matrices
    rng = np.random.default_rng(0)
    directions = _direction_numbers(3, 30)
    lower = np.tril(rng.integers(0, 2, (3, 30, 30)))
    scrambled = _scrambled(directions, lower)
    for d in range(3):
        matrix = lower[d].copy()
        np.fill_diagonal(matrix, 1)
        for j in (0, 5, 29):
            bits = np.array([(directions[d, j] >> (29 - k)) & 1 for k in range(30)])  # most significant first
            product = matrix @ bits % 2
            assert scrambled[d, j] == int("".join(map(str, product)), 2)
