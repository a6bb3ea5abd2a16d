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
import os

import numpy

from .device import device as _device
from .device import resolve

DEFAULT_SEED = 67280421310721  # PyTorch's initial seed for a new Generator
_STATE_BYTES = 624 * 4 + 4 + 8 + 1 + 8  # the twister's words and position, the seed, Box-Muller's kept value


class Generator:
    """A stream of random numbers: ``Generator().manual_seed(0)``.

    ``get_state()`` is a uint8 Tensor of 2517 bytes (little-endian: the twister's
    624 32-bit words and its position, the 64-bit seed, whether a normal number
    is kept for the next draw, that float64), which ``set_state`` takes back.
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
        stream = self.numpy
        state = stream.bit_generator.state["state"]
        kept = stream.next_normal
        parts = (state["key"].astype("<u4").tobytes() + int(state["pos"]).to_bytes(4, "little")
                 + self._seed.to_bytes(8, "little") + bytes([kept is not None])
                 + numpy.float64(kept or 0.0).astype("<f8").tobytes())
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
        from .mersenne import TorchStream

        words = 624 * 4
        self._seed = int.from_bytes(raw[words + 4:words + 12], "little")
        stream = TorchStream(self._seed)
        stream.bit_generator.state = {"bit_generator": "MT19937", "state": {
            "key": numpy.frombuffer(raw[:words], dtype="<u4").astype(numpy.uint32),
            "pos": int.from_bytes(raw[words:words + 4], "little")}}
        stream.next_normal = float(numpy.frombuffer(raw[words + 13:], dtype="<f8")[0]) if raw[words + 12] else None
        self._numpy = stream
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


def generator(source=None):
    """The NumPy ``Generator`` a random op draws from: ``source``'s (an ``autograd.Generator``)
    or, when None, the default generator's. Anything else is a TypeError."""
    if source is None:
        return default_generator.numpy
    if not isinstance(source, Generator):
        raise TypeError(f"generator must be an autograd.Generator, got {type(source).__name__} ({source!r})")
    return source.numpy
