"""autograd/ops/quasirandom.py: PyTorch's ``torch.quasirandom.SobolEngine``, drawing the same points bit for bit
(the Joe-Kuo direction numbers, Owen's scrambling from ``randint`` on the seeded generator, the first point divided
in the default dtype of construction), checked against PyTorch where installed and against Sobol's definition by
hand (the first points of the first dimensions, each dimension's 2^m points stratifying [0, 1)).

PyTorch's name for it, ``torch.quasirandom``, is not registered in autograd/__init__.py (outside the files this
change may touch): ``autograd.quasirandom`` is proposed as a one-line module re-exporting this engine."""

import numpy as np
import pytest

import autograd
from autograd.ops.quasirandom import TABLE_DIMENSIONS, SobolEngine, direction_numbers

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="compared with PyTorch")


def test_first_points_by_hand():
    """Unscrambled: 0, then 1/2, then 3/4 and 1/4 ... (van der Corput in the first dimension; the second's
    polynomial x + 1 gives 0, 1/2, 1/4, 3/4, 3/8, 7/8, 1/8, 5/8)."""
    points = SobolEngine(2).draw(8, dtype=autograd.float64).numpy()
    np.testing.assert_array_equal(points[:, 0], [0, 0.5, 0.75, 0.25, 0.375, 0.875, 0.625, 0.125])
    np.testing.assert_array_equal(points[:, 1], [0, 0.5, 0.25, 0.75, 0.375, 0.875, 0.125, 0.625])


@pytest.mark.parametrize("scramble", [False, True])
def test_each_dimension_of_2_to_the_m_points_has_one_in_each_interval(scramble):
    points = SobolEngine(50, scramble=scramble, seed=7).draw_base2(6, dtype=autograd.float64).numpy()
    cells = np.sort(np.floor(points * 64).astype(int), axis=0)
    np.testing.assert_array_equal(cells, np.tile(np.arange(64)[:, None], (1, 50)))


def test_draws_continue_the_sequence_and_reset_restarts_it():
    engine = SobolEngine(6, scramble=True, seed=1)
    whole = engine.draw(20, dtype=autograd.float64)
    engine.reset()
    parts = [engine.draw(1, dtype=autograd.float64), engine.draw(4, dtype=autograd.float64)]
    engine.fast_forward(5)
    parts.append(engine.draw(10, dtype=autograd.float64))
    np.testing.assert_array_equal(autograd.cat(parts[:2]).numpy(), whole[:5].numpy())
    np.testing.assert_array_equal(parts[2].numpy(), whole[10:].numpy())
    assert engine.num_generated == 20


def test_errors_as_pytorch():
    with pytest.raises(ValueError, match=r"Supported range of dimensionality for SobolEngine is \[1, 21201\]"):
        SobolEngine(0)
    with pytest.raises(ValueError, match="first 1111 dimensions"):
        SobolEngine(TABLE_DIMENSIONS + 1)
    engine = SobolEngine(2)
    engine.draw(3)
    with pytest.raises(ValueError, match=r"n=3\+2\*\*2=7"):
        engine.draw_base2(2)
    with pytest.raises(NotImplementedError, match="not implemented for 'Half'"):
        engine.draw(2, dtype=autograd.float16)
    with pytest.raises(NotImplementedError, match="not implemented for 'Long'"):
        engine.draw(2, dtype=autograd.int64)
    with pytest.raises(RuntimeError, match=r"negative dimension -1: \[-1, 2\]"):
        SobolEngine(2).draw(0)
    assert tuple(engine.draw(0).shape) == (0, 2)


@needs_torch
def test_direction_numbers_are_pytorchs():
    state = torch.zeros(TABLE_DIMENSIONS, 30, dtype=torch.long)
    torch._sobol_engine_initialize_state_(state, TABLE_DIMENSIONS)
    np.testing.assert_array_equal(direction_numbers(TABLE_DIMENSIONS), state.numpy())


@needs_torch
@pytest.mark.parametrize("dimension, scramble, seed", [(1, False, None), (5, False, None), (7, True, 0),
                                                       (40, True, 123), (TABLE_DIMENSIONS, True, 3)])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_points_are_pytorchs(dimension, scramble, seed, dtype):
    def session(T, engine):
        dt = getattr(T, dtype)
        return [engine.draw(1, dtype=dt), engine.draw(6, dtype=dt), engine.fast_forward(3).draw(4, dtype=dt),
                engine.reset().draw(9, dtype=dt), engine.reset().draw_base2(4, dtype=dt), engine.sobolstate,
                engine.shift, engine.quasi, repr(engine)]

    ours = session(autograd, SobolEngine(dimension, scramble=scramble, seed=seed))
    theirs = session(torch, torch.quasirandom.SobolEngine(dimension, scramble=scramble, seed=seed))
    assert ours[-1] == theirs[-1]
    for a, b in zip(ours[:-1], theirs[:-1]):
        assert str(b.dtype) == f"torch.{a.dtype}"
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@needs_torch
def test_unseeded_scrambling_draws_from_the_default_generator_and_first_point_keeps_the_default_dtype():
    previous = autograd.get_default_dtype(), torch.get_default_dtype()
    try:
        autograd.manual_seed(5)
        torch.manual_seed(5)
        autograd.set_default_dtype(autograd.float32)  # the first point is divided now, in float32 ...
        torch.set_default_dtype(torch.float32)
        ours, theirs = SobolEngine(3, scramble=True), torch.quasirandom.SobolEngine(3, scramble=True)
        autograd.set_default_dtype(autograd.float64)  # ... and drawn later in float64
        torch.set_default_dtype(torch.float64)
        a, b = ours.draw(5), theirs.draw(5)
    finally:
        autograd.set_default_dtype(previous[0])
        torch.set_default_dtype(previous[1])
    assert a.dtype == autograd.float64 and b.dtype == torch.float64
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    first = a[0].numpy()
    np.testing.assert_array_equal(first, first.astype(np.float32))  # rounded to float32 at construction


def test_out_is_resized_and_written():
    out = autograd.empty(0)
    result = SobolEngine(3).draw(4, out=out)
    assert result is out and tuple(out.shape) == (4, 3)
