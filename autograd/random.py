"""Random generators, as ``torch.Generator``: seeded streams that every random op draws from.

``autograd.default_generator`` is the global one; ``manual_seed(s)`` resets it,
so initialisation, dropout, shuffling and ``rand``/``randn`` repeat. Ops that
take ``generator=`` draw from that one instead. Each Generator is NumPy's
PCG64 seeded with its seed, so the same seed gives the same numbers on every
run and machine (not PyTorch's numbers: PyTorch uses a Mersenne twister).
"""

import contextlib
import os

import numpy

from .device import device as _device
from .device import resolve

DEFAULT_SEED = 67280421310721  # PyTorch's initial seed for a new Generator
_STATE_BYTES = 16 + 16 + 1 + 4 + 8  # PCG64 state and increment, the cached half-word, the seed


class Generator:
    """A stream of random numbers: ``Generator().manual_seed(0)``.

    ``get_state()`` is a uint8 Tensor of 45 bytes (little-endian: PCG64's
    128-bit state and increment, whether a 32-bit half is cached, that half,
    the 64-bit seed), which ``set_state`` takes back.
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
        """The NumPy ``Generator`` this stream draws from (PCG64 seeded with the seed, until
        ``set_state``). Made on the first draw, not at ``import autograd``: importing
        numpy.random costs about half as much as all of autograd's own modules."""
        if self._numpy is None:
            self._numpy = numpy.random.Generator(numpy.random.PCG64(self._seed))
        return self._numpy

    def seed(self):
        """Restart from a fresh non-deterministic seed; returns it."""
        seed = int.from_bytes(os.urandom(8), "little") >> 1
        self.manual_seed(seed)
        return seed

    def initial_seed(self):
        return self._seed

    def get_state(self):
        state = self.numpy.bit_generator.state
        parts = (state["state"]["state"].to_bytes(16, "little") + state["state"]["inc"].to_bytes(16, "little")
                 + bytes([state["has_uint32"]]) + state["uinteger"].to_bytes(4, "little")
                 + self._seed.to_bytes(8, "little"))
        from .tensor import tensor_from
        return tensor_from(numpy.frombuffer(parts, dtype=numpy.uint8).copy())

    def set_state(self, new_state):
        from .tensor import Tensor
        if not isinstance(new_state, Tensor) or new_state.dtype != numpy.uint8 or new_state.shape != (_STATE_BYTES,):
            described = (f"a {new_state.dtype} tensor of shape {tuple(new_state.shape)}"
                         if isinstance(new_state, Tensor) else type(new_state).__name__)
            raise RuntimeError(f"set_state expects a uint8 tensor of {_STATE_BYTES} bytes from get_state(), "
                               f"got {described}")
        raw = new_state.numpy().tobytes()
        bit_generator = numpy.random.PCG64()
        bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int.from_bytes(raw[0:16], "little"), "inc": int.from_bytes(raw[16:32], "little")},
            "has_uint32": raw[32], "uinteger": int.from_bytes(raw[33:37], "little"),
        }
        self._seed = int.from_bytes(raw[37:45], "little")
        self._numpy = numpy.random.Generator(bit_generator)
        return self

    def __repr__(self):
        return f"<autograd.Generator on {self.device}, initial seed {self._seed}>"


def _integer_seed(seed):
    if isinstance(seed, bool) or not isinstance(seed, (int, numpy.integer)):
        try:
            seed = int(seed)  # a one-element integer tensor, a numpy integer
        except (TypeError, ValueError):
            raise TypeError(f"manual_seed expected an int seed, got {seed!r}") from None
    return int(seed) % 2**64


default_generator = Generator()


def manual_seed(seed):
    """Reset the default generator to ``seed``; returns it (as ``torch.manual_seed``)."""
    return default_generator.manual_seed(seed)


def seed():
    """Reseed the default generator non-deterministically; returns the seed."""
    return default_generator.seed()


def initial_seed():
    return default_generator.initial_seed()


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


def draws(sample, shape, dtype=None, part_scale=1.0):
    """sample(shape), a generator's method with its parameters; for a complex dtype two draws per number,
    its real and imaginary parts (as PyTorch draws complex numbers), each times ``part_scale``."""
    if dtype is None or numpy.dtype(dtype).kind != "c":
        return sample(shape)
    parts = sample(tuple(shape) + (2,)) * part_scale
    return parts[..., 0] + 1j * parts[..., 1]


def generator(source=None):
    """The NumPy ``Generator`` a random op draws from: ``source``'s (an ``autograd.Generator``)
    or, when None, the default generator's. Anything else is a TypeError."""
    if source is None:
        return default_generator.numpy
    if not isinstance(source, Generator):
        raise TypeError(f"generator must be an autograd.Generator, got {type(source).__name__} ({source!r})")
    return source.numpy
