"""Random generators, as ``torch.Generator``: seeded streams that every random op draws from.

``autograd.default_generator`` is the global one; ``manual_seed(s)`` resets it,
so initialisation, dropout, shuffling and ``rand``/``randn`` repeat. Ops that
take ``generator=`` draw from that one instead. Each Generator is PyTorch's
Mersenne twister seeded as PyTorch seeds it, and its draws turn the twister's words
into numbers as PyTorch's CPU kernels do (mersenne.py; the samplers in ops/sampling.py
and ops/standard_gamma.py): the same seed gives PyTorch's numbers. Dropout masks on
Intel processors (MKL's there) are not PyTorch's.
"""

import contextlib
import functools
import os
import struct
import warnings

import numpy

from .device import device as _device
from .device import resolve
from .errors import DtypeError
from .graph import modes, program_stacklevel

DEFAULT_SEED = 67280421310721  # PyTorch's initial seed for a new Generator
_STATE_BYTES = 5056  # sizeof(CPUGeneratorImplState), PyTorch's layout of a CPU generator's state


class Generator:
    """A stream of random numbers: ``Generator().manual_seed(0)``.

    ``get_state()`` is a uint8 Tensor of 5056 bytes laid out as PyTorch's (so a state
    PyTorch saved restores here, and one saved here restores in PyTorch), which
    ``set_state`` takes back.
    """

    def __init__(self, device="cpu"):
        # A CPU generator is valid on every device, as PyTorch's: its numbers are drawn on the host
        # (NumPy) and copied to where the tensor lives. Another device must be the one served.
        wanted = device if isinstance(device, _device) else _device(device)
        self.device = wanted if wanted.type == "cpu" and wanted.index in (None, 0) else resolve(wanted)
        self.manual_seed(DEFAULT_SEED)

    def manual_seed(self, seed):
        """Restart from ``seed`` (an int; negative seeds wrap to 64 bits, as PyTorch's); returns self."""
        self._seed = _integer_seed(seed)
        self._numpy = None  # made from the seed on the first draw (numpy.random loads then)
        return self

    @property
    def numpy(self):
        """The stream this generator draws from (``mersenne.TorchStream``: a NumPy ``Generator`` whose
        uniform, normal and integer draws are PyTorch's). Made on the first draw, not at ``import autograd``:
        importing numpy.random costs about half as much as all of autograd's own modules."""
        if self._numpy is None:
            from .mersenne import TorchStream

            self._numpy = TorchStream(self._seed)
        return self._numpy

    def seed(self):
        """Restart from a fresh non-deterministic seed; returns it."""
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        self.manual_seed(seed)
        return seed

    def initial_seed(self):
        return self._seed

    def get_state(self):
        """PyTorch's CPUGeneratorImplState, byte for byte (so that a state PyTorch saved restores here): the
        seed, the twister's ``left`` and ``seeded``, its ``next`` word, its 624 words (each in 64 bits), the
        legacy normal_x/normal_y/normal_rho doubles with normal_is_valid (normal_y: the kept normal), then
        the kept float normal (never kept here) and its flag, padded to 5056 bytes."""
        stream = self.numpy
        state = stream.bit_generator.state["state"]
        position = int(state["pos"])
        if position == 624 and numpy.array_equal(state["key"], _seeded_words(self._seed)):
            position = 0  # freshly seeded: PyTorch's next is 0 (and left 1) until its first draw
        kept = stream.next_normal
        buffer = bytearray(_STATE_BYTES)
        struct.pack_into("<QiiQ", buffer, 0, self._seed, 625 - position if position else 1, 1, position)
        buffer[24:24 + 624 * 8] = state["key"].astype("<u8").tobytes()
        struct.pack_into("<dddi", buffer, 24 + 624 * 8, 0.0, kept or 0.0, 0.0, kept is not None)
        from .tensor import tensor_from
        return tensor_from(numpy.frombuffer(bytes(buffer), dtype=numpy.uint8).copy())

    def set_state(self, new_state):
        from .tensor import Tensor
        if not isinstance(new_state, Tensor) or new_state.dtype != numpy.uint8 or new_state.shape != (_STATE_BYTES,):
            described = (f"a {new_state.dtype} tensor of shape {tuple(new_state.shape)}"
                         if isinstance(new_state, Tensor) else type(new_state).__name__)
            if isinstance(new_state, Tensor) and new_state.dtype == numpy.uint8:  # (PyTorch: a RuntimeError for
                raise RuntimeError(f"set_state expects a uint8 tensor of {_STATE_BYTES} bytes from get_state(), "
                                   f"got {described}")  # the size, a TypeError for anything else: DtypeError is both)
            raise DtypeError(f"RNG state must be a torch.ByteTensor: set_state expects a uint8 tensor of "
                             f"{_STATE_BYTES} bytes from get_state(), got {described}")
        raw = new_state.numpy().tobytes()
        from .mersenne import TorchStream

        self._seed, left, _, _ = struct.unpack_from("<QiiQ", raw, 0)
        _, kept, _, kept_is_valid = struct.unpack_from("<dddi", raw, 24 + 624 * 8)
        stream = TorchStream(self._seed)
        stream.bit_generator.state = {"bit_generator": "MT19937", "state": {
            "key": numpy.frombuffer(raw[24:24 + 624 * 8], dtype="<u8").astype(numpy.uint32),
            "pos": 625 - left}}  # (left counts down to 1, where PyTorch's twister regenerates, as NumPy's at 624)
        stream.next_normal = kept if kept_is_valid else None
        self._numpy = stream
        return self

    def clone_state(self):
        """A new generator in this one's state (PyTorch's Generator.clone_state): the same draws from here on."""
        return Generator(self.device).set_state(self.get_state())

    def __repr__(self):
        return f"<autograd.Generator on {self.device}, initial seed {self._seed}>"


@functools.lru_cache(maxsize=4)
def _seeded_words(seed):
    """The twister's words just after seeding with ``seed``, before its first draw."""
    from .mersenne import TorchStream

    return TorchStream(seed).bit_generator.state["state"]["key"]


def _integer_seed(seed):
    """A Generator's seed as PyTorch's ``Generator.manual_seed`` reads it: an integer from -2^63 to 2^64 - 1,
    negative ones wrapped to 64 bits; a bool, a float or a string is refused (``torch.manual_seed`` converts with
    ``int()`` first, Generator.manual_seed does not), and so is an integer past 64 bits (which wrapped would be
    another seed)."""
    if isinstance(seed, (bool, numpy.bool_, float, numpy.floating, str, bytes)):  # (PyTorch's RuntimeError; a
        # TypeError to Python's eye: DtypeError is both)
        raise DtypeError(f"manual_seed expected a long, but got {type(seed).__name__}")
    if not isinstance(seed, (int, numpy.integer)):
        try:
            seed = int(seed)  # a one-element integer tensor
        except (TypeError, ValueError):
            raise TypeError(f"manual_seed expected an int seed, got {seed!r}") from None
    seed = int(seed)
    if not -2**63 <= seed < 2**64:
        raise ValueError("Overflow when unpacking long long")
    return seed % 2**64


default_generator = Generator()


def manual_seed(seed):
    """Reset the default generator to ``int(seed)``; returns it (as ``torch.manual_seed``, which takes what
    ``int()`` takes: 1.5 is seed 1, "7" seed 7)."""
    return default_generator.manual_seed(int(seed))


def seed():
    """Reseed the default generator non-deterministically; returns the seed."""
    return default_generator.seed()


def initial_seed():
    return default_generator.initial_seed()


def swap_default_stream(stream):
    """Make ``stream`` (a seed, and the stream drawn from it so far or None) the default generator's, and
    return the one it had: a DataLoader worker played in this process draws from its own (data/workers.py)."""
    outgoing = default_generator._seed, default_generator._numpy
    default_generator._seed, default_generator._numpy = stream
    return outgoing


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(new_state):
    default_generator.set_state(new_state)


@contextlib.contextmanager
def fork_rng(devices=None, enabled=True, device_type="cuda"):
    """Draws inside the block do not advance the default generator: its state is restored after."""
    if not enabled:
        yield
        return
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def draws(sample, shape, dtype, part_scale=1.0):
    """sample(shape, dtype), a stream's method with its parameters, drawing numbers of ``dtype``; for a complex
    dtype two draws per number, its real and imaginary parts, each times ``part_scale`` (PyTorch draws a
    complex tensor as the real tensor of its parts)."""
    dtype = numpy.dtype(dtype)
    if dtype.kind != "c":
        return sample(shape, dtype)
    parts = sample(tuple(shape) + (2,), numpy.finfo(dtype).dtype) * part_scale
    return parts[..., 0] + 1j * parts[..., 1]


def drawn_seed(source=None):
    """A seed drawn from ``source`` (an ``autograd.Generator``; the default one when None), as PyTorch's data
    utilities draw one: ``torch.empty((), dtype=torch.int64).random_(generator=source)``, the next 64-bit
    number mod 2^63."""
    return int(generator(source).words64(1)[0]) % 2**63


@contextlib.contextmanager
def refusing_draws():
    """Every random op raises inside, in this thread (vmap's randomness='error', which refuses a draw from any
    generator)."""
    modes.draws_refused += 1
    try:
        yield
    finally:
        modes.draws_refused -= 1


def generator(source=None):
    """The NumPy ``Generator`` a random op draws from: ``source``'s (an ``autograd.Generator``)
    or, when None, the default generator's. Anything else is a TypeError."""
    if modes.draws_refused:
        raise RuntimeError("vmap: called random operation while in randomness error mode. Please either use the "
                           "'same' or 'different' randomness flags on vmap or perform the randomness operation out "
                           "of vmap")
    if source is None:
        return default_generator.numpy
    if not isinstance(source, Generator):
        raise TypeError(f"generator must be an autograd.Generator, got {type(source).__name__} ({source!r})")
    return source.numpy


# -- the bounds of draws of integers (random_, randint), as PyTorch's random_ takes them -------------------

_LARGEST_EXACT_INTEGER = {"float16": 2**11, "float32": 2**24, "float64": 2**53}  # 2^(mantissa bits + 1)


def random_bounds_checked(low, high, dtype):
    """[low, high) for draws of integers into ``dtype`` (randint, random_), as PyTorch's random_ takes them: a
    floating dtype's bounds rounded into it (rounded_up, rounded_down), then check_from_to_in_range: an error
    where ``dtype`` cannot hold a bound (its range, or [0, 1] for bool), and a warning where a floating dtype holds
    it but not every integer up to it (past ±2^(mantissa bits + 1))."""
    from .ops.conversion import c_name  # (the ops import this module: imported when needed)

    if dtype.kind == "f":
        low, high = rounded_up(low, dtype), rounded_down(high, dtype)
        if low >= high:
            raise RuntimeError("random_ expects 'from' casted to dtype to be less than 'to' casted to dtype, but got "
                               f"from={low} >= to={high}")
    if dtype.kind == "b":
        smallest, largest = 0, 1
    elif dtype.kind in "iu":
        smallest, largest = numpy.iinfo(dtype).min, numpy.iinfo(dtype).max
    else:
        smallest, largest = -numpy.finfo(dtype).max, numpy.finfo(dtype).max
    bounds = (("from", low), ("to - 1", high - 1))
    for name, bound in bounds:
        if not smallest <= bound <= largest:
            raise RuntimeError(f"{name} is out of bounds for {c_name(dtype)}")
    exact = _LARGEST_EXACT_INTEGER.get(dtype.name)
    for name, bound in bounds if exact else ():
        if not -exact <= bound <= exact:
            digits = exact.bit_length() - 1
            warnings.warn(f"{name} is out of bounds [-(2^{digits}), 2^{digits}]. Due to precision limitations "
                          f"{c_name(dtype)} can support discrete uniform distribution only within this range. This "
                          "warning will become an error in version 1.7 release, please fix the code in advance",
                          UserWarning, stacklevel=program_stacklevel())
    return low, high


def _held(bound, dtype):
    """The integer ``bound`` rounded to the nearest number of the floating ``dtype``, back as an int64 as PyTorch's
    casts give it: -2^63 for one past int64's range (x86's answer to a cast it cannot make), and ``bound`` itself
    where the dtype cannot hold it (the bounds check names it then)."""
    with numpy.errstate(over="ignore"):
        held = dtype.type(bound)
    if not numpy.isfinite(held):
        return bound
    return int(held) if -2**63 <= int(held) < 2**63 else -2**63


def rounded_up(low, dtype):
    """PyTorch's update_from: a ``from`` past the integers a floating dtype holds exactly moves up to one
    it holds (from + 1 rounded, raised by one step of the dtype where that rounding went below from)."""
    below = _held(low + 1, dtype)
    if below < low:
        low = below + 2 ** (abs(low + 1).bit_length() - 1 - numpy.finfo(dtype).nmant)
    return low


def rounded_down(high, dtype):
    """PyTorch's update_to: a ``to`` past the integers a floating dtype holds exactly moves down to one it holds."""
    above = _held(high - 1, dtype)
    if above >= high:
        high = above - 2 ** (abs(high - 1).bit_length() - 1 - numpy.finfo(dtype).nmant)
    return high
