"""``Distribution``: the shapes and argument checks every distribution shares.

batch_shape is the shape of the parameters (one distribution per element); event_shape the shape
of one draw (() for a scalar law, (k,) for a k-vector); ``sample(shape)`` draws
``shape + batch_shape + event_shape`` values; ``log_prob(x)`` broadcasts x against the batch.

With ``validate_args`` (on unless turned off, as PyTorch's under ``__debug__``) the parameters
named in ``arg_constraints`` are checked at construction and the values given to ``log_prob``,
``cdf`` and the like against ``support``, with PyTorch's ValueErrors.
"""

import warnings

from ..backend import get_default_dtype, xp
from ..errors import ShapeError, broadcast_mismatch
from ..grad_mode import enable_grad, no_grad
from ..graph import program_stacklevel
from ..operands import python_number
from ..size import Size
from ..tensor import Tensor, as_array, tensor_from
from . import constraints


class lazy_property:  # noqa: N801  (PyTorch's name)
    """A parameter computed from another on first use and then kept in the instance (Σ from its
    Cholesky factor, probs from logits). Given at construction, the value is simply stored, and
    only a stored value is checked against ``arg_constraints``. The value is computed with grad on, as
    PyTorch's: a first use under no_grad() must not keep a detached value for later uses that backpropagate."""

    def __init__(self, fn):
        self.fn, self.__doc__, self.name = fn, fn.__doc__, fn.__name__

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        with enable_grad():
            value = self.fn(instance)
        instance.__dict__[self.name] = value
        return value


class Distribution:
    has_rsample = False
    has_enumerate_support = False
    _validate_args = True  # the default for validate_args=None (PyTorch's: on unless python -O)

    @staticmethod
    def set_default_validate_args(value):
        """Turn argument and sample validation on or off for every distribution made afterwards."""
        if value not in (True, False):
            raise ValueError
        Distribution._validate_args = value

    def __init__(self, batch_shape=(), event_shape=(), validate_args=None):
        self.batch_shape, self.event_shape = Size(batch_shape), Size(event_shape)
        if validate_args is not None:
            self._validate_args = validate_args
        if self._validate_args:
            try:
                arg_constraints = self.arg_constraints
            except NotImplementedError:
                arg_constraints = {}
                warnings.warn(f"{self.__class__} does not define `arg_constraints`. Please set "
                              "`arg_constraints = {}` or initialize the distribution with `validate_args=False` "
                              "to turn off validation.", stacklevel=program_stacklevel())
            for name, constraint in arg_constraints.items():
                computed = isinstance(getattr(type(self), name, None), property)  # Chi2's df from its shape
                if constraints.is_dependent(constraint) or not (name in self.__dict__ or computed):
                    continue  # set later or computed from another parametrisation (probs from logits)
                value = getattr(self, name)
                self._check(name, value, constraint.check(value), repr(constraint))

    def _extended_shape(self, sample_shape=()):
        return Size(tuple(sample_shape) + self.batch_shape + self.event_shape)

    @property
    def arg_constraints(self):
        """{parameter name: Constraint}: what validation checks at construction. A family must say
        (``{}`` when there is nothing to check), as PyTorch's: a subclass without it is warned about."""
        raise NotImplementedError

    @property
    def support(self):
        raise NotImplementedError

    @property
    def mean(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement mean")

    @property
    def mode(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement mode")

    @property
    def variance(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement variance")

    @property
    def stddev(self):
        return self.variance.sqrt()

    def sample(self, sample_shape=()):
        """A draw of shape ``sample_shape + batch_shape + event_shape``, outside the graph."""
        with no_grad():
            return self.rsample(sample_shape)

    def sample_n(self, n):
        return self.sample((n,))

    def rsample(self, sample_shape=()):
        raise NotImplementedError(f"{type(self).__name__} has no reparameterised sample (rsample)")

    def log_prob(self, value):
        raise NotImplementedError

    def cdf(self, value):
        raise NotImplementedError

    def icdf(self, value):
        raise NotImplementedError

    def entropy(self):
        raise NotImplementedError

    def perplexity(self):
        return self.entropy().exp()

    def enumerate_support(self, expand=True):
        raise NotImplementedError

    def expand(self, batch_shape, _instance=None):
        """The same distribution over a larger batch: every parameter tensor (whose leading dims are
        the batch shape) expanded to ``batch_shape``, without copying and without a new check."""
        batch_shape = Size(batch_shape)
        new = _instance if _instance is not None else object.__new__(type(self))
        for name, value in self.__dict__.items():
            new.__dict__.setdefault(name, self._expanded_field(value, batch_shape))
        new.batch_shape = batch_shape
        return new

    def _expanded_field(self, value, batch_shape):
        """One field as ``expand`` carries it: a parameter tensor (its leading dims the batch shape) expanded
        to ``batch_shape``, a base law of the same batch expanded with it, anything else as it is."""
        old = len(self.batch_shape)
        if isinstance(value, Tensor) and tuple(value.shape[:old]) == tuple(self.batch_shape):
            return value.expand(*batch_shape, *value.shape[old:])
        if isinstance(value, Distribution) and value.batch_shape == self.batch_shape:  # a base law
            return value.expand(batch_shape)
        return value

    def _get_checked_instance(self, cls, _instance=None):
        """The empty instance an ``expand`` of ``cls`` fills in (``_instance`` where a subclass's expand passed
        one down), as PyTorch's: custom distributions write their expand with it. A subclass with its own
        __init__ cannot be made by cls's expand, whose fields it may not have."""
        if _instance is None and type(self).__init__ != cls.__init__:
            raise NotImplementedError(f"Subclass {type(self).__name__} of {cls.__name__} that defines a custom "
                                      "__init__ method must also define a custom .expand() method.")
        return self.__new__(type(self)) if _instance is None else _instance

    def _check(self, name, value, condition, constraint):
        """PyTorch's ValueError for a parameter outside its support (validate_args)."""
        if self._validate_args and not bool(condition.all()):
            raise ValueError(f"Expected parameter {name} ({type(value).__name__} of shape {tuple(value.shape)}) of "
                             f"distribution {self!r} to satisfy the constraint {constraint}, but found invalid "
                             f"values:\n{value}")

    def _validate_sample(self, value):
        """PyTorch's checks of a value given to log_prob (cdf, icdf): a Tensor whose trailing dims
        are the event shape, broadcastable with the batch, inside the support."""
        if not isinstance(value, Tensor):
            raise ValueError("The value argument to log_prob must be a Tensor")
        event = len(self.event_shape)
        if tuple(value.shape[value.ndim - event:]) != tuple(self.event_shape):
            raise ValueError(f"The right-most size of value must match event_shape: {Size(value.shape)} vs "
                             f"{self.event_shape}.")
        expected = self.batch_shape + self.event_shape
        for i, j in zip(reversed(value.shape), reversed(expected)):
            if i != 1 and j != 1 and i != j:
                raise ValueError(f"Value is not broadcastable with batch_shape+event_shape: {Size(value.shape)} vs "
                                 f"{Size(expected)}.")
        try:
            support = self.support
        except NotImplementedError:
            warnings.warn(f"{self.__class__} does not define `support` to enable sample validation. Please "
                          "initialize the distribution with `validate_args=False` to turn off validation.",
                          stacklevel=program_stacklevel())
            return
        if not bool(support.check(value).all()):
            raise ValueError(f"Expected value argument ({type(value).__name__} of shape {tuple(value.shape)}) to be "
                             f"within the support ({support!r}) of the distribution {self!r}, but found invalid "
                             f"values:\n{value}")

    def _value(self, value, like):
        """log_prob's argument: validated when asked, a number made a tensor of the parameters' dtype."""
        if self._validate_args:
            self._validate_sample(value)
        return value if isinstance(value, Tensor) else tensor_from(value, dtype=like.dtype)

    def __repr__(self):
        """``Normal(loc: Size([3]), scale: 2.0)``-like: each parameter held, by value when it is one number (probs
        or logits derived from the other once it has been used, as PyTorch's lazy property)."""
        try:
            names = self.arg_constraints
        except NotImplementedError:
            names = {}
        shown = {name: self.__dict__[name] for name in names
                 if isinstance(self.__dict__.get(name), Tensor)}
        args = ", ".join(f"{name}: {value if value.numel() == 1 else Size(value.shape)}"
                         for name, value in shown.items())
        return f"{type(self).__name__}({args})"


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


class BinaryParameters:
    """probs and logits of one binary event, each computed from the other on first use, and the shape of
    the one given (``_param``): what NegativeBinomial and LogitRelaxedBernoulli share."""

    @lazy_property
    def logits(self):
        return probs_to_logits(self.probs, is_binary=True)

    @lazy_property
    def probs(self):
        return self.logits.sigmoid()

    @property
    def param_shape(self):
        return self._param.shape


def logits_to_probs(logits, is_binary=False):
    """σ(l) for a binary event, softmax over the last dim otherwise."""
    return logits.sigmoid() if is_binary else logits.softmax(-1)


def clamp_probs(probs):
    """p inside [eps, 1 - eps], so its logarithms stay finite (PyTorch's clamp_probs)."""
    eps = float(xp.finfo(probs.dtype).eps)
    return probs.clamp(eps, 1 - eps)


def broadcast_all(*values):
    """The parameters as floating Tensors of one shape: numbers take the dtype of the tensors
    among them (the default dtype when there are none), as PyTorch's broadcast_all. Shapes that do not
    broadcast raise PyTorch's RuntimeError (a ShapeError) naming the sizes."""
    tensors = [v for v in values if isinstance(v, Tensor)]
    if not tensors:  # (Python ints too: Normal(0, 1) is of the default dtype, float64 under BoTorch's setting)
        dtype = get_default_dtype()
    else:
        dtype = tensors[0].dtype if tensors[0].dtype.kind == "f" else None
    # (a NumPy scalar is the Python number it holds: np.float64(0.5) takes the default dtype, not float64)
    made = [v if isinstance(v, Tensor) else tensor_from(as_array(python_number(v), dtype)) for v in values]
    made = [t if t.dtype.kind == "f" else t.float() for t in made]
    try:
        shape = xp.broadcast_shapes(*(t.shape for t in made))
    except ValueError:
        raise ShapeError(broadcast_mismatch(*(t.shape for t in made))) from None
    return [t if t.shape == shape else t.expand(shape) for t in made]
