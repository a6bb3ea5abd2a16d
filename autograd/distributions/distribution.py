"""``Distribution``: the shapes and argument checks every distribution shares.

batch_shape is the shape of the parameters (one distribution per element); ``sample(shape)``
draws ``shape + batch_shape`` values; ``log_prob(x)`` broadcasts x against the batch."""

from ..backend import xp
from ..grad_mode import no_grad
from ..tensor import Tensor


class Distribution:
    has_rsample = False

    def __init__(self, batch_shape=(), event_shape=(), validate_args=None):
        self.batch_shape, self.event_shape = tuple(batch_shape), tuple(event_shape)
        self._validate_args = True if validate_args is None else validate_args

    def _extended_shape(self, sample_shape=()):
        return tuple(sample_shape) + self.batch_shape + self.event_shape

    def sample(self, sample_shape=()):
        """A draw of shape ``sample_shape + batch_shape``, outside the graph."""
        with no_grad():
            return self.rsample(sample_shape)

    def rsample(self, sample_shape=()):
        raise NotImplementedError(f"{type(self).__name__} has no reparameterised sample (rsample)")

    def log_prob(self, value):
        raise NotImplementedError

    def entropy(self):
        raise NotImplementedError

    @property
    def stddev(self):
        return self.variance.sqrt()

    def _check(self, name, value, condition, constraint):
        """PyTorch's ValueError for a parameter outside its support (validate_args)."""
        if self._validate_args and not bool(condition.all()):
            raise ValueError(f"Expected parameter {name} ({type(value).__name__} of shape {tuple(value.shape)}) of "
                             f"distribution {self!r} to satisfy the constraint {constraint}, but found invalid "
                             f"values:\n{value}")

    def __repr__(self):
        return f"{type(self).__name__}()"


def probs_or_logits(probs, logits):
    """PyTorch's check that a distribution is given one of its two parametrisations."""
    if (probs is None) == (logits is None):
        raise ValueError("Either `probs` or `logits` must be specified, but not both.")


def probs_to_logits(probs, is_binary=False):
    """log p (log p / (1 - p) for a binary event), as PyTorch's: p clamped to [eps, 1 - eps]
    first, so a probability of 0 has a finite logit."""
    eps = float(xp.finfo(probs.dtype).eps)
    clamped = probs.clamp(eps, 1 - eps)
    return clamped.log() - (1 - clamped).log() if is_binary else clamped.log()


def broadcast_all(*values):
    """The parameters as floating Tensors of one shape: numbers take the dtype of the tensors
    among them (the default dtype when there are none), as PyTorch's broadcast_all."""
    tensors = [v for v in values if isinstance(v, Tensor)]
    dtype = tensors[0].dtype if tensors and tensors[0].dtype.kind == "f" else None
    made = [v if isinstance(v, Tensor) else Tensor(v, dtype=dtype) for v in values]
    made = [t if t.dtype.kind == "f" else t.float() for t in made]
    shape = xp.broadcast_shapes(*(t.shape for t in made))
    return [t if t.shape == shape else t.expand(shape) for t in made]
