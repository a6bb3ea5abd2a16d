"""PyTorch's CPU random numbers: the same Mersenne twister (mt19937, seeded as PyTorch seeds it) and the
same ways PyTorch's kernels turn its 32-bit words into numbers, so that ``manual_seed(s)`` followed by
``rand``, ``randn``, ``randint``, ``randperm``, ``uniform_``, ``normal_`` (and so the layers' initial
weights) gives PyTorch's numbers.

Each kernel, as PyTorch's CPU kernels compute it (w: the next word, w64: two words, the first the high half):

- uniform in [a, b), float32: (w mod 2^24) · 2^-24 · (b - a) + a in float32; float64: (w64 mod 2^53) ·
  2^-53 · (b - a) + a; float16 as float32, rounded. The last product and sum are one fused
  multiply-add, rounded once, as the compiler makes them (``_fused``).
- normal, 16 or more contiguous values: the uniforms u, then Box-Muller on each block of 16: for j < 8,
  r = √(-2 ln(1 - u_j)), θ = 2π u_(j+8), z_j = r cos θ, z_(j+8) = r sin θ (a last partial block is redrawn
  as the last 16 values); float32's in float32, with the log, sin and cos of PyTorch's AVX2 loop
  (``avx_mathfun``: NumPy's put one value in seven an ulp off). Fewer values: one pair of float64 uniforms
  (u1, u2) per two values,
  r = √(-2 ln(1 - u2)), θ = 2π u1, r cos θ now and r sin θ kept by the generator for the next value.
- integers in [low, high): (w mod (high - low)) + low (w64 when high - low ≥ 2^28).
- a permutation of n: Fisher-Yates from the front, position i swapped with i + (w mod (n - i)).
- exponential of rate λ: -(1/λ) ln(1 - u), u a float64 uniform; Bernoulli(p): u < p, u a float64 uniform
  for a number p, a float32 one for a tensor of them (the callers compare).

Dropout's masks are Bernoulli draws, PyTorch's where its kernel is its own (on AMD processors: on Intel ones
PyTorch draws them through MKL's generator). Cauchy, geometric, log-normal, multinomial, poisson, binomial and
gamma draws are PyTorch's too (ops/sampling.py, ops/standard_gamma.py, on these words); a NumPy method called
on the stream that none of these defines draws by NumPy's algorithm on the same twister.
"""

import math

import numpy

_TWO_PI_FLOAT32 = numpy.float32(2.0 * math.pi)  # (PyTorch's 2.0f * M_PI, as the float its vector loop holds)


class TorchStream:
    """A NumPy ``Generator`` on PyTorch's Mersenne twister whose ``random``, ``uniform``, ``standard_normal``,
    ``normal``, ``integers`` and ``permutation`` are PyTorch's; its other methods are NumPy's, drawing from
    the same twister."""

    def __init__(self, seed):
        self.bit_generator = numpy.random.MT19937()
        self.bit_generator._legacy_seeding(seed & 0xFFFFFFFF)  # (mt19937's init_genrand, as PyTorch's)
        self.numpy = numpy.random.Generator(self.bit_generator)
        self.next_normal = None  # Box-Muller's second value, kept for the next single draw (PyTorch's cache)

    def __getattr__(self, name):
        if name == "numpy":  # (not set yet: an instance being copied or unpickled, which has no stream to ask)
            raise AttributeError(name)
        return getattr(self.numpy, name)

    def position(self):
        """Where the stream stands, as a value that compares (the twister's words and place, the kept normal)."""
        state = self.bit_generator.state["state"]
        return state["key"].tobytes(), int(state["pos"]), self.next_normal

    def words(self, count):
        """The next ``count`` 32-bit words (as uint64)."""
        return self.bit_generator.random_raw(count)

    def words64(self, count):
        """The next ``count`` 64-bit numbers, each two words, the first the high half."""
        words = self.words(2 * count)
        return (words[0::2] << numpy.uint64(32)) | words[1::2]

    def units(self, count, dtype):
        """``count`` uniforms in [0, 1) as PyTorch's uniform_real_distribution makes them, in dtype's
        accumulating type: float64 from 53 bits of two words, float32 from 24 bits of one (float16 too: PyTorch
        draws its uniforms as float32s)."""
        if numpy.dtype(dtype) == numpy.float64:
            return (self.words64(count) & numpy.uint64(2**53 - 1)).astype(numpy.float64) * 2.0**-53
        return (self.words(count) & numpy.uint64(2**24 - 1)).astype(numpy.float32) * numpy.float32(2.0**-24)

    def one_uniform(self):
        """One float64 uniform in [0, 1), a Python float: what PyTorch's serial samplers (poisson, binomial,
        gamma) draw at each step."""
        return float(self.units(1, numpy.float64)[0])

    def uniform(self, low=0.0, high=1.0, size=None, dtype=numpy.float64):
        """Uniform numbers in [low, high): x · (high - low) + low, the bounds first cast to dtype."""
        dtype = numpy.dtype(dtype)
        if dtype.kind != "f" or not (numpy.ndim(low) == 0 and numpy.ndim(high) == 0):
            return self.numpy.uniform(low, high, size)
        shape = _shape(size)
        x = self.units(math.prod(shape), dtype)
        low, high = x.dtype.type(dtype.type(low)), x.dtype.type(dtype.type(high))
        if low == 0 and high == 1:  # (x · 1 + 0 is x, for x in [0, 1): rand's, without float64's long double pass)
            return x.astype(dtype, copy=False).reshape(shape)
        return _fused(x, high - low, low, dtype).reshape(shape)

    def bernoulli(self, size, probability):
        """Bernoulli(probability) draws, u < probability for a float64 uniform u each: PyTorch's bernoulli_(p) for
        a number p, and so dropout's masks. With u = k · 2^-53 (k: 53 bits of two words, ``units``) and p · 2^53
        exact, u < p is k < ⌈p · 2^53⌉, compared on the integers: the draws of ``random(size) < probability``
        without the uniforms' float64 array (dropout over 524,288 values: 17 -> 5 ms)."""
        shape = _shape(size)
        bound = numpy.uint64(math.ceil(float(probability) * 2.0**53))  # (the caller checks 0 <= p <= 1)
        return ((self.words64(math.prod(shape)) & numpy.uint64(2**53 - 1)) < bound).reshape(shape)

    def random(self, size=None, dtype=numpy.float64):
        return self.uniform(0.0, 1.0, size, dtype)

    def normal(self, loc=0.0, scale=1.0, size=None, dtype=numpy.float64):
        """Normal numbers by PyTorch's two algorithms: blocks of 16 for 16 or more, else one at a time."""
        dtype = numpy.dtype(dtype)
        if dtype.kind != "f":
            return self.numpy.normal(loc, scale, size)
        if numpy.ndim(loc) or numpy.ndim(scale):  # normal(mean_tensor, std_tensor): N(0, 1), times std, plus mean
            shape = _shape(size) if size is not None else numpy.broadcast_shapes(numpy.shape(loc), numpy.shape(scale))
            z = self.normal(0.0, 1.0, shape, dtype)
            return (z * numpy.asarray(scale, dtype)).astype(dtype) + numpy.asarray(loc, dtype)
        shape = _shape(size)
        count = math.prod(shape)
        if count >= 16:
            return self._blocks_of_16(count, dtype, loc, scale).reshape(shape)
        values = numpy.array([self.one_normal() for _ in range(count)], dtype=numpy.float64)
        return _fused(values, numpy.float64(scale), numpy.float64(loc), numpy.float64).astype(dtype).reshape(shape)

    def standard_normal(self, size=None, dtype=numpy.float64):
        return self.normal(0.0, 1.0, size, dtype)

    def _blocks_of_16(self, count, dtype, loc, scale):
        wide = numpy.float64 if dtype == numpy.float64 else numpy.float32
        whole = count - count % 16
        drawn = whole if dtype == numpy.float16 else count  # (float16: PyTorch draws the whole blocks' only)
        values = numpy.empty(count, wide)
        values[:drawn] = self.units(drawn, dtype)  # (float16: the uniforms kept in float32, as PyTorch's kernel)
        values[:whole] = _box_muller_16(values[:whole], wide, loc, scale)
        if count % 16:  # the last 16 values drawn again and transformed as one block, as PyTorch's
            values[-16:] = _box_muller_16(self.units(16, dtype), wide, loc, scale)
        return values.astype(dtype)

    def one_normal(self):
        """One standard normal by the one-at-a-time path: Box-Muller on two float64 uniforms, the second value
        kept for the next call (PyTorch's next_double_normal_sample)."""
        if self.next_normal is not None:
            value, self.next_normal = self.next_normal, None
            return value
        u1, u2 = self.units(2, numpy.float64)
        radius = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        self.next_normal = radius * math.sin(theta)
        return radius * math.cos(theta)

    def integers(self, low, high=None, size=None, dtype=numpy.int64, endpoint=False):
        """Integers in [low, high) (endpoint: [low, high]) as PyTorch's random_(from, to): (w mod range) + low."""
        if high is None:
            low, high = 0, low
        if endpoint:
            high = high + 1
        span = int(high) - int(low) if numpy.ndim(low) == 0 and numpy.ndim(high) == 0 else None
        if span is None or span > 2**63:  # (arrays of bounds; ranges past int64's, which PyTorch draws otherwise)
            return self.numpy.integers(low, high, size, dtype=dtype)
        shape = _shape(size)
        count = math.prod(shape)
        # PyTorch's uniform_int_from_to_distribution takes a 64-bit word from a range of 2^28 on (its modulo's skew
        # kept small), a 32-bit one below (DistributionsHelper.h)
        words = self.words64(count) if span >= 2**28 else self.words(count)
        return ((words % numpy.uint64(span)).astype(numpy.int64) + int(low)).astype(dtype).reshape(shape)

    def exponential(self, scale=1.0, size=None):
        """Exponential numbers of mean ``scale`` (rate λ = 1 / scale) as PyTorch's CPU kernel draws them:
        -(1/λ) ln(1 - u) for a float64 uniform u each, in float64 (the caller rounds to its dtype)."""
        if numpy.ndim(scale):
            return self.numpy.exponential(scale, size)
        shape = _shape(size)
        return -float(scale) * numpy.log(1.0 - self.units(math.prod(shape), numpy.float64)).reshape(shape)

    def permutation(self, n):
        """A permutation of range(n) (an int) as PyTorch's randperm: position i swapped with i + (w mod (n - i))."""
        if not isinstance(n, (int, numpy.integer)):
            return self.numpy.permutation(n)
        n = int(n)
        order = numpy.arange(n, dtype=numpy.int64)
        if n < 2:
            return order
        offsets = (self.words(n - 1) % numpy.arange(n, 1, -1, dtype=numpy.uint64)).astype(numpy.int64).tolist()
        items = order.tolist()
        for i, offset in enumerate(offsets):
            j = i + offset
            items[i], items[j] = items[j], items[i]
        return numpy.array(items, dtype=numpy.int64)


def _box_muller_16(values, wide, loc, scale):
    """Blocks of 16 uniforms to 16 normals each: for j < 8, r = √(-2 ln(1 - u_j)), θ = 2π u_(j+8), then
    r cos θ at j and r sin θ at j + 8, times scale plus loc, in ``wide``."""
    blocks = values.reshape(-1, 16)
    u1, u2 = wide(1) - blocks[:, :8], blocks[:, 8:]
    theta = (_TWO_PI_FLOAT32 if wide == numpy.float32 else 2.0 * math.pi) * u2
    if wide == numpy.float32:  # (PyTorch's AVX2 kernel's own log, sin and cos: NumPy's put one value in seven an
        from . import avx_mathfun  # ulp off; loaded with the first such draw)

        radius = numpy.sqrt(wide(-2) * avx_mathfun.log(u1))
        sin, cos = avx_mathfun.sincos(theta)
    else:
        with numpy.errstate(divide="ignore"):
            radius = numpy.sqrt(wide(-2) * numpy.log(u1))
        sin, cos = numpy.sin(theta), numpy.cos(theta)
    z = numpy.concatenate([radius * cos, radius * sin], axis=1)
    return _fused(z, wide(scale), wide(loc), wide).reshape(-1)


def _fused(x, scale, shift, dtype):
    """x · scale + shift rounded once into ``dtype``, as the fused multiply-add PyTorch's compiled kernels
    use (float32 through float64, which holds the product exactly; float64 through the long double, which
    agrees with a true fused multiply-add in about 999 of 1000 cases, the rest an ulp apart)."""
    wide = numpy.float64 if numpy.dtype(dtype).itemsize <= 4 else numpy.longdouble
    return (x.astype(wide) * wide(scale) + wide(shift)).astype(dtype)


def _shape(size):
    if size is None:
        return ()
    return tuple(size) if isinstance(size, (tuple, list)) else (int(size),)
