"""``autograd.quasirandom``: PyTorch's ``torch.quasirandom``, the Sobol sequence.

A Sobol sequence fills the unit cube [0, 1)^D more evenly than independent uniform draws, so an
average over its first n points estimates an integral with error close to 1/n rather than 1/√n
(quasi-Monte Carlo: Bayesian optimisation's acquisition functions, option pricing).

Each coordinate d is a stream of 30-bit fractions. Its direction numbers v_{d,0..29} are fixed
(Joe and Kuo's table, below), and point i is the XOR of the v_{d,j} picked by the bits of i's Gray
code. In Gray-code order, consecutive points differ in one bit, so each point is the previous one
XOR one direction number: x_{i+1} = x_i ⊕ v_{d,c(i)}, where c(i) is the position of i's lowest 0 bit.

Scrambling (Owen's linear matrix scramble plus a digital shift) multiplies each v_{d,j}, read as a
vector of bits, by a random lower-triangular 0/1 matrix over GF(2). It then starts the sequence at
a random shift rather than 0. The points stay as evenly spread, and repeated scramblings give
independent estimates. The random bits come from ``randint`` with the engine's generator, drawn in
PyTorch's order, so a seed gives PyTorch's points.

The direction numbers are S. Joe and F. Y. Kuo's, "Constructing Sobol sequences with better
two-dimensional projections", SIAM J. Sci. Comput. 30, 2635-2654 (2008): the D(6) set, 21201
dimensions (https://web.maths.unsw.edu.au/~fkuo/sobol/, their BSD-style notice is in LICENSE). For
each dimension, ``sobol_direction_numbers.npz`` holds the primitive polynomial (its bits, leading
and trailing 1 included) and the first m direction integers m_1..m_s. It is read with
``allow_pickle=False``: loading it runs no code.
"""

import os

import numpy

from .backend import float32, float64, get_default_dtype, int64, to_numpy, xp
from .ops.conversion import type_name
from .tensor import Tensor

_DIRECTION_NUMBERS = os.path.join(os.path.dirname(__file__), "sobol_direction_numbers.npz")


def _direction_numbers(dimension, bits):
    """v_{d,j} for d < dimension and j < bits, as integers of ``bits`` bits: v_{d,j} = m_{d,j} · 2^(bits-1-j).

    The first s of m_{d,·} are the table's, for dimension d whose primitive polynomial is
    x^s + a_1 x^(s-1) + ... + a_(s-1) x + 1. The rest follow Bratley and Fox's recurrence,
        m_j = 2 a_1 m_(j-1) ⊕ 2² a_2 m_(j-2) ⊕ ... ⊕ 2^s m_(j-s) ⊕ m_(j-s),
    run for every dimension of the same degree s at once. Dimension 0 is all ones: the van der Corput sequence."""
    with numpy.load(_DIRECTION_NUMBERS, allow_pickle=False) as table:
        polynomials = table["poly"][:dimension].astype(int64)
        initial = table["vinit"][:dimension].astype(int64)
    degrees = numpy.array([int(p).bit_length() - 1 for p in polynomials])
    m = numpy.ones((dimension, bits), int64)
    for s in numpy.unique(degrees[1:]):
        rows = numpy.flatnonzero(degrees == s)
        rows = rows[rows > 0]
        poly = polynomials[rows]
        m[rows, :s] = initial[rows, :s]
        for j in range(s, bits):
            following = m[rows, j - s].copy()
            for k in range(s):  # the term 2^(k+1) m_(j-k-1), where the polynomial's bit for it is set
                taken = (poly >> (s - 1 - k)) & 1
                following ^= taken * (m[rows, j - k - 1] << (k + 1))
            m[rows, j] = following
    return m << numpy.arange(bits - 1, -1, -1, dtype=int64)


_bit_count = getattr(numpy, "bitwise_count", None)  # (NumPy 2)


def _parity(x):
    """1 where x (integers below 2^32) has an odd number of bits set, else 0."""
    if _bit_count is not None:
        return _bit_count(x) & 1
    for shift in (16, 8, 4, 2, 1):  # (NumPy 1: the bits folded onto the lowest, XOR keeping their parity)
        x = x ^ (x >> shift)
    return x & 1


def _scrambled(directions, lower_triangular):
    """Each v_{d,j}, as a column of bits (its most significant bit first), multiplied over GF(2) by
    dimension d's lower-triangular matrix L_d with ones on its diagonal: bit p of the result (counted from
    the top) is the parity of row p of L_d AND v_{d,j}."""
    bits = directions.shape[1]
    lower_triangular = lower_triangular.copy()
    lower_triangular[:, numpy.arange(bits), numpy.arange(bits)] = 1
    rows = lower_triangular @ (1 << numpy.arange(bits - 1, -1, -1, dtype=int64))  # row p as an integer
    parities = _parity(directions[:, :, None] & rows[:, None, :])  # (dimension, j, p)
    return parities @ (1 << numpy.arange(bits - 1, -1, -1, dtype=int64))


def _lowest_zero_bits(first, count):
    """c(i) for i = first, ..., first + count - 1: the position of i's lowest 0 bit."""
    i = numpy.arange(first, first + count, dtype=int64)
    lowest_zero = ~i & (i + 1)  # that bit alone, a power of two
    return numpy.frexp(lowest_zero.astype(float64))[1] - 1


def _tensor(array):
    """A tensor of a NumPy array the engine computed (the bit arithmetic runs in host memory, on NumPy's
    ``bitwise_xor.accumulate``), on the array module's device."""
    return Tensor._make(xp.asarray(array))


def _array(tensor):
    """A tensor's values as a NumPy array, for the bit arithmetic."""
    return to_numpy(tensor._data)


class SobolEngine:
    """A (scrambled) Sobol sequence in ``dimension`` dimensions, as PyTorch's
    ``torch.quasirandom.SobolEngine``: ``draw(n)`` gives the next n points as an (n, dimension) tensor,
    the first of them 0 (or the random shift, scrambled).

    dimension: 1 to 21201.  scramble: Owen's linear matrix scramble and a digital shift (default False).
    seed: the seed of the scrambling's generator; None draws from the global generator (``manual_seed``)."""

    MAXBIT = 30
    MAXDIM = 21201

    def __init__(self, dimension, scramble=False, seed=None):
        if dimension > self.MAXDIM or dimension < 1:
            raise ValueError(f"Supported range of dimensionality for SobolEngine is [1, {self.MAXDIM}]")
        self.seed = seed
        self.scramble = scramble
        self.dimension = dimension
        directions = _direction_numbers(dimension, self.MAXBIT)
        if scramble:
            directions, shift = self._scramble(directions)
        else:
            shift = numpy.zeros(dimension, int64)
        self.sobolstate = _tensor(directions)
        self.shift = _tensor(shift)
        self.quasi = self.shift.clone()
        # (divided in the default dtype of the engine's making, as PyTorch's long / int: a 30-bit shift
        # rounds to float32's 24 bits there, then a float64 draw widens it)
        self._first_point = (self.quasi / 2**self.MAXBIT).reshape(1, -1)
        self.num_generated = 0

    def _scramble(self, directions):
        """The scrambled direction numbers and the shift, from random bits drawn as PyTorch draws them."""
        from . import Generator, randint  # (the package's factories: this module loads on first use)

        generator = None
        if self.seed is not None:
            generator = Generator()
            generator.manual_seed(self.seed)
        bits = self.MAXBIT
        shift_bits = _array(randint(2, (self.dimension, bits), generator=generator))
        shift = shift_bits @ (1 << numpy.arange(bits, dtype=int64))  # (bit j of the shift is its j-th draw)
        lower = numpy.tril(_array(randint(2, (self.dimension, bits, bits), generator=generator)))
        return _scrambled(directions, lower), shift

    def _states(self, count, first_index):
        """The ``count`` states after the current one, as integers (count, dimension): the first of them
        follows point ``first_index``."""
        if count < 0:
            raise RuntimeError(f"Trying to create tensor with negative dimension {count}: [{count}, "
                               f"{self.dimension}]")
        steps = _array(self.sobolstate)[:, _lowest_zero_bits(first_index, count)].T  # (count, dimension)
        return numpy.bitwise_xor.accumulate(numpy.concatenate([_array(self.quasi)[None], steps]), axis=0)

    def _advance(self, count, first_index):
        """The next ``count`` states (count, dimension); the engine's state is then the last (a new tensor,
        as PyTorch's draw returns one)."""
        states = self._states(count, first_index)
        self.quasi = _tensor(states[-1].copy())
        return states[1:]

    def draw(self, n=1, out=None, dtype=None):
        """The next n points of the sequence, an (n, dimension) tensor of ``dtype`` (default: the default
        dtype; float32 or float64). Each point depends on those drawn before."""
        if dtype is None:
            dtype = get_default_dtype()
        if dtype not in (float32, float64):
            raise NotImplementedError(f"\"_sobol_engine_draw\" not implemented for '{type_name(dtype)}'")
        if self.num_generated == 0:
            first = _array(self._first_point).astype(dtype)
            rest = self._advance(n - 1, 0) if n != 1 else numpy.zeros((0, self.dimension), int64)
            points = numpy.concatenate([first, self._fractions(rest, dtype)])
        else:
            points = self._fractions(self._advance(n, self.num_generated - 1), dtype)
        self.num_generated += n
        result = _tensor(points)
        if out is not None:
            out.resize_as_(result).copy_(result)
            return out
        return result

    def _fractions(self, states, dtype):
        """x = state / 2^30 in ``dtype`` (the integer rounded to dtype first, as PyTorch's)."""
        return states.astype(dtype) * dtype.type(1.0 / 2**self.MAXBIT)

    def draw_base2(self, m, out=None, dtype=None):
        """The next 2^m points; the total drawn must stay a power of two (the sequence's balance)."""
        n = 2**m
        total_n = self.num_generated + n
        if total_n & (total_n - 1) != 0:
            raise ValueError(f"The balance properties of Sobol' points require n to be a power of 2. "
                             f"{self.num_generated} points have been previously generated, then: "
                             f"n={self.num_generated}+2**{m}={total_n}. If you still want to do this, please use "
                             "'SobolEngine.draw()' instead.")
        return self.draw(n=n, out=out, dtype=dtype)

    def reset(self):
        """Back to the first point."""
        self.quasi.copy_(self.shift)
        self.num_generated = 0
        return self

    def fast_forward(self, n):
        """Skip n points: the same state as drawing them."""
        if self.num_generated == 0:
            last = self._states(max(n - 1, 0), 0)[-1]
        else:
            last = self._states(n, self.num_generated - 1)[-1]
        self.quasi.copy_(_tensor(last))  # (in place, as PyTorch's _sobol_engine_ff_)
        self.num_generated += n
        return self

    def __repr__(self):
        settings = [f"dimension={self.dimension}"]
        if self.scramble:
            settings.append("scramble=True")
        if self.seed is not None:
            settings.append(f"seed={self.seed}")
        return f"{type(self).__name__}({', '.join(settings)})"
