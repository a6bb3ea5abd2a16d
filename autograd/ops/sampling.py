"""Drawing random numbers into tensors: ``normal``, ``bernoulli``, ``multinomial``, ``poisson``,
``binomial`` and the in-place initialisers (``uniform_``, ``normal_``, ``bernoulli_``, ``random_``,
``exponential_``, ...).

Every one takes ``generator=`` (an ``autograd.Generator``; the default one when
left out). Draws are not reparameterised: as PyTorch, a draw from parameters that require grad is recorded with
gradient 0 for each of them (``Draw``), or, where PyTorch has no derivative for it, as such (``WithoutDerivative``);
an in-place draw is recorded so for the tensor it fills.
"""

import math

import numpy

from .. import backend, random
from ..backend import xp
from ..device import resolve
from ..errors import refuse_unbroadcastable
from ..factories import out_dtype, written
from ..memory_order import fills_in_memory_order
from ..primitive import Primitive
from ..random import random_bounds_checked, rounded_up
from ..tensor import Tensor
from .axes import int_argument
from .conversion import refuse_kinds, type_name
from .layouts import laid_out
from .names import names
from .outputs import write_out
from .predicates import WithoutDerivative
from .selection import zero_gradient


def _tensor(values, dtype):
    return Tensor._make(xp.asarray(numpy.asarray(values).astype(dtype, copy=False)))


def _host(x):
    """A tensor's values as a NumPy array, or a number as itself."""
    return backend.to_numpy(x._data) if isinstance(x, Tensor) else x


def _floating(x):
    return x.dtype if x.dtype.kind == "f" else backend.get_default_dtype()


class Draw(Primitive):
    """y = draws the caller made (``values``) from a distribution whose parameters are the inputs;
    dL/dparameter = 0 (PyTorch's derivative of a draw: it is not reparameterised). Named by the caller
    (``pytorch_name``), as PyTorch names each sampler's node."""

    saves_inputs = False  # backward needs no input's values

    def forward(self, *parameters):
        return self.values

    def backward(self, grad, y, *parameters):
        return tuple(zero_gradient(p, grad) if p.requires_grad else None for p in parameters)


def _recorded(draws, parameters, pytorch_name, kernel=None):
    """The tensor ``draws`` recorded as drawn from the tensors among ``parameters``: as a ``Draw`` named
    ``pytorch_name``, or, where that is None, without derivative (PyTorch's ``kernel`` has none). Nothing is
    recorded where no parameter requires grad, or outside grad mode (as any op)."""
    tensors = [p for p in parameters if isinstance(p, Tensor)]
    if not tensors:
        return draws
    if pytorch_name is None:
        return WithoutDerivative.apply(*tensors, values=draws._data, kernel=kernel)
    return Draw.apply(*tensors, values=draws._data, pytorch_name=pytorch_name)


def normal(mean=0.0, std=1.0, size=None, *, generator=None, out=None, dtype=None, layout=None, device=None,
           requires_grad=False, pin_memory=False):
    """Draws of N(mean, std²), elementwise: ``normal(mean_tensor, std_tensor)``, ``normal(mean_tensor,
    std=1.0)``, ``normal(mean, std_tensor)``, or ``normal(mean, std, size)`` for two numbers."""
    rng = random.generator(generator)
    mean_is, std_is = isinstance(mean, Tensor), isinstance(std, Tensor)
    if not std_is and not std >= 0:  # (a NaN std too, as PyTorch's checks: here and below)
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std:g}")
    if not (mean_is or std_is):
        if size is None:
            raise TypeError("normal(mean, std, size): with a number for both mean and std, size is required")
        resolve(device)
        shape = tuple(size) if not isinstance(size, int) else (size,)
        dtype = out_dtype(dtype, out) or backend.get_default_dtype()
        result = _tensor(rng.normal(mean, std, shape, dtype=numpy.dtype(dtype)), dtype)
        return written(result.requires_grad_(True) if requires_grad else result, out)
    if size is not None:
        raise TypeError("normal(): size is given only when mean and std are both numbers")
    std_values = _host(std)
    if not numpy.all(numpy.asarray(std_values) >= 0):
        raise RuntimeError(f"normal expects all elements of std >= 0.0, got std {std_values}")
    like = mean if mean_is else std
    shapes = numpy.shape(_host(mean)), numpy.shape(std_values)
    refuse_unbroadcastable(*shapes)
    shape = numpy.broadcast_shapes(*shapes)
    if std_is and std.dtype.kind == "c":
        raise RuntimeError("normal expects standard deviation to be non-complex")
    if mean_is and mean.dtype.kind == "c":  # PyTorch's normal_(0, std) of a complex tensor (each part N(0, std²/2)),
        part = numpy.asarray(std_values) / math.sqrt(2)  # then plus the mean
        values = random.draws(lambda shape, dtype: rng.normal(0.0, part[..., None], shape, dtype=dtype),
                              shape, mean.dtype) + _host(mean)
        draws = _tensor(values.astype(mean.dtype), mean.dtype)
    else:
        draws = _tensor(rng.normal(_host(mean), std_values, shape, dtype=numpy.dtype(_floating(like))),
                        _floating(like))
    name = "NormalBackward3" if mean_is and std_is else "NormalBackward1" if mean_is else "NormalBackward2"
    return written(_recorded(draws, (mean, std), name), out)


def bernoulli(input, p=None, *, generator=None, out=None):  # noqa: A002  (torch's argument name)
    """1 with probability ``input`` (or ``p``, a number or a tensor broadcast to input's shape), elementwise,
    in input's dtype (row-major, whatever input's layout: PyTorch's draws into a contiguous tensor)."""
    draws = _tensor(_bernoulli_draws(input, p, generator), input.dtype)
    if p is None:
        return write_out(_recorded(draws, (input,), "BernoulliBackward0"), out)
    return write_out(_recorded(draws, (input, p), None, kernel="bernoulli"), out)


def _bernoulli_draws(input, p, generator):  # noqa: A002
    """Bernoulli draws of input's shape, as NumPy bools in the order drawn (row-major)."""
    probabilities = input if p is None else p
    if isinstance(probabilities, Tensor):  # (PyTorch's kernel reads probabilities of a floating dtype only: a
        refuse_kinds(probabilities, "bernoulli_tensor_cpu_p_", "biu")  # uint8 image or a bool mask is refused)
    probability = _host(probabilities)
    if not numpy.all((numpy.asarray(probability) >= 0) & (numpy.asarray(probability) <= 1)):  # (NaN fails too)
        raise RuntimeError(f"bernoulli expects 0 <= p <= 1, got p = {probability}")
    # PyTorch's kernels: a float64 uniform below a number p or each probability of a float64 tensor, a float32
    # one below each probability of a tensor of another dtype
    wide = not isinstance(probabilities, Tensor) or probabilities.dtype == numpy.float64
    uniform = numpy.float64 if wide else numpy.float32
    if wide and numpy.ndim(probability) == 0:  # (one probability: compared on the uniforms' integers)
        return random.generator(generator).bernoulli(input.shape, probability)
    return random.generator(generator).random(input.shape, dtype=uniform) < numpy.asarray(probability, dtype=uniform)


def multinomial(input, num_samples, replacement=False, *, generator=None, out=None):  # noqa: A002
    """``num_samples`` category indices per row of the weights ``input`` (1-D or 2-D), drawn with
    probability proportional to the weights; without replacement each index at most once.

    With replacement: inverse-CDF lookups of float64 uniform draws u, the first index whose cumulative
    weight C_j / C_last reaches u. Without, or for a single sample: the indices of the ``num_samples``
    largest w / E, E ~ Exp(1) (PyTorch's exponential race, which its kernel takes for one sample with
    replacement too, so Categorical's single draws are PyTorch's).
    """
    if input.ndim not in (1, 2):
        raise RuntimeError(f"prob_dist must be 1 or 2 dim, got shape {tuple(input.shape)}")
    if input.dtype.kind != "f":
        raise RuntimeError(f"multinomial only supports floating-point dtypes for input, got: {type_name(input.dtype)}")
    num_samples = int_argument(num_samples, "multinomial", "num_samples", 2)
    if num_samples <= 0:
        raise RuntimeError("cannot sample n_sample <= 0 samples")
    native = numpy.atleast_2d(backend.to_numpy(input._data))
    weights = native.astype(numpy.float64)
    categories = weights.shape[1]
    if not replacement and num_samples > categories:
        raise RuntimeError(f"cannot sample n_sample > prob_dist.size(-1) samples without replacement "
                           f"(n_sample={num_samples}, prob_dist.size(-1)={categories})")
    if replacement and num_samples > 1:
        _check_rows_as_replacement_kernel(weights)
    elif not numpy.isfinite(weights).all() or (weights < 0).any():  # (PyTorch's check of the whole tensor at once)
        raise RuntimeError("probability tensor contains either `inf`, `nan` or element < 0")
    totals = weights.sum(axis=1, keepdims=True)
    if (totals <= 0).any():
        raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")
    rng = random.generator(generator)
    if replacement and num_samples > 1:
        # PyTorch's kernel: a running sum in the input's dtype (float32 for float16), divided by its last value,
        # that last value then set to 1; a draw u of a boundary's rounding would pick a neighbour otherwise
        running = numpy.cumsum(native.astype(numpy.promote_types(native.dtype, numpy.float32)), axis=1)
        cumulative = running / running[:, -1:]
        cumulative[:, -1] = 1
        cumulative = cumulative.astype(numpy.float64)  # (compared with u in float64, as PyTorch's search)
        draws = rng.random((weights.shape[0], num_samples))
        samples = numpy.array([numpy.searchsorted(row, u, side="left") for row, u in zip(cumulative, draws)],
                              dtype=numpy.int64).reshape(draws.shape)  # (no rows: an empty (0, n) result)
    else:
        # PyTorch's race runs in the input's dtype: w / E with E drawn in float64 and rounded to it; its topk
        # picks among equal keys (the weights of 0, when as many samples as categories are asked for). E fills
        # empty_like(input): through the input's memory where it is a transpose (probs.T), row-major otherwise
        races = laid_out(rng.exponential(1.0, input.shape), input, fresh=True)
        keys = native / numpy.atleast_2d(races).astype(native.dtype)
        if num_samples == 1:
            samples = keys.argmax(axis=1)[:, None]
        else:
            from .sorting import topk  # (here: sorting loads on first use, ops/deferred.py)

            samples = backend.to_numpy(topk(Tensor._make(xp.asarray(keys)), num_samples, dim=1).indices._data)
    samples = samples if input.ndim == 2 else samples[0]
    return write_out(_tensor(samples, backend.int64), out)


def _check_rows_as_replacement_kernel(weights):
    """PyTorch's kernel for several draws with replacement checks each row's entries in turn (a negative or NaN
    one first, then an infinite one), then the row's sum, before the next row: its first fault names the error."""
    for row in weights:
        faults = numpy.flatnonzero(~(row >= 0) | ~numpy.isfinite(row))
        if faults.size and not row[faults[0]] >= 0:  # (NaN fails ``>= 0`` too)
            raise RuntimeError("invalid multinomial distribution (encountering probability entry < 0)")
        if faults.size:
            raise RuntimeError("invalid multinomial distribution (encountering probability entry = infinity or NaN)")
        if not row.sum() > 0:
            raise RuntimeError("invalid multinomial distribution (sum of probabilities <= 0)")


def poisson(input, generator=None):  # noqa: A002
    """Draws of Poisson(rate), elementwise, in input's dtype."""
    rates = _host(input)
    if not (numpy.asarray(rates) >= 0).all():  # (a NaN rate too)
        raise RuntimeError("invalid Poisson rate, expected rate to be non-negative")
    stream = random.generator(generator)
    rates = numpy.asarray(rates, dtype=numpy.float64)
    draws = [_poisson_draw(rate, stream) for rate in rates.reshape(-1).tolist()]  # (in order: each draws its own)
    return _recorded(_tensor(numpy.array(draws, dtype=numpy.float64).reshape(rates.shape), input.dtype), (input,),
                     "PoissonBackward0")


def _poisson_draw(rate, stream):
    """One Poisson(rate) draw as PyTorch's CPU kernel makes it from float64 uniforms u: below rate 10, the count of
    uniforms whose running product stays above e^-rate; from 10, Hörmann's transformed rejection (PTRS, 1993)."""
    uniform = stream.one_uniform
    if rate == 0:
        return 0
    if rate < 10:
        floor, product, count = math.exp(-rate), 1.0, 0
        while True:
            product *= uniform()
            if product <= floor:
                return count
            count += 1
    slam, log_rate = math.sqrt(rate), math.log(rate)
    b = 0.931 + 2.53 * slam
    a = -0.059 + 0.02483 * b
    inverse_alpha = 1.1239 + 1.1328 / (b - 3.4)
    vr = 0.9277 - 3.6224 / (b - 2)
    while True:
        u = uniform() - 0.5
        v = uniform()
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + rate + 0.43)
        if us >= 0.07 and v <= vr:
            return k
        if k < 0 or (us < 0.013 and v > us):
            continue
        if (math.log(v) + math.log(inverse_alpha) - math.log(a / (us * us) + b)
                <= -rate + k * log_rate - math.lgamma(k + 1)):
            return k


def binomial(count, prob, generator=None):
    """Draws of Binomial(count, prob), elementwise (count and prob broadcast), in prob's dtype."""
    counts, probs = _host(count), _host(prob)  # (unchecked, as PyTorch's: prob <= 0 draws 0, prob >= 1 the count)
    dtype = numpy.dtype(_floating(prob))
    counts, probs = (numpy.asarray(v, dtype=dtype) for v in numpy.broadcast_arrays(counts, probs))
    stream = random.generator(generator)
    draws = [_binomial_draw(dtype.type(n), dtype.type(p), stream) for n, p in zip(counts.reshape(-1).tolist(),
                                                                                   probs.reshape(-1).tolist())]
    return _recorded(_tensor(numpy.array(draws, dtype=numpy.float64).reshape(counts.shape), dtype), (count, prob),
                     None, kernel="binomial")


def _binomial_draw(count, prob, stream):
    """One Binomial(count, prob) draw as PyTorch's CPU kernel makes it (count and prob in the tensor's dtype, the
    rest in float64, on float64 uniforms): for the smaller of p and q = 1 - p, Hörmann's transformed rejection
    (BTRS) where count · p >= 10, else inversion by geometric waiting times; counted from the other end for q."""
    if math.isnan(count) or math.isnan(prob):  # (NaN, as PyTorch's for a NaN prob; its NaN count never returns)
        return math.nan
    if count <= 0 or prob <= 0:
        return 0.0
    if prob >= 1:
        return float(count)
    smaller = prob if prob <= 0.5 else type(prob)(1.0) - prob
    draw = _btrs if count * smaller >= 10 else _binomial_inversion
    k = draw(float(count), float(smaller), stream.one_uniform)
    return k if prob <= 0.5 else float(count) - k


def _binomial_inversion(count, prob, uniform):
    """The number of geometric waiting times ⌈ln u / ln(1 - p)⌉ that fit within count trials."""
    total, successes, log_q = 0.0, 0, math.log1p(-prob)
    while True:
        total += math.ceil(math.log(uniform()) / log_q)
        if total > count:
            return successes
        successes += 1


# the Stirling series' tails ln k! - (k + 1/2) ln(k + 1) + (k + 1) - ln √(2π) for k = 0..9, as PyTorch's table
_STIRLING_TAILS = (0.0810614667953272, 0.0413406959554092, 0.0276779256849983, 0.02079067210376509,
                   0.0166446911898211, 0.0138761288230707, 0.0118967099458917, 0.0104112652619720,
                   0.00925546218271273, 0.00833056343336287)


def _stirling_tail(k):
    if k <= 9:
        return _STIRLING_TAILS[int(k)]
    square = (k + 1) * (k + 1)
    return (1.0 / 12 - (1.0 / 360 - 1.0 / 1260 / square) / square) / (k + 1)


def _btrs(count, prob, uniform):
    """Hörmann's BTRS (1993) as PyTorch writes it: a candidate from a transformed uniform pair, kept in the
    squeeze or by the ratio of the Stirling-approximated binomial to the hat."""
    spread = math.sqrt(count * prob * (1 - prob))
    b = 1.15 + 2.53 * spread
    a = -0.0873 + 0.0248 * b + 0.01 * prob
    c = count * prob + 0.5
    v_r = 0.92 - 4.2 / b
    r = prob / (1 - prob)
    alpha = (2.83 + 5.1 / b) * spread
    m = math.floor((count + 1) * prob)
    while True:
        u = uniform() - 0.5
        v = uniform()
        us = 0.5 - abs(u)
        k = math.floor((2 * a / us + b) * u + c)
        if k < 0 or k > count:
            continue
        if us >= 0.07 and v <= v_r:
            return float(k)
        v = math.log(v * alpha / (a / (us * us) + b))
        bound = ((m + 0.5) * math.log((m + 1) / (r * (count - m + 1)))
                 + (count + 1) * math.log((count - m + 1) / (count - k + 1))
                 + (k + 0.5) * math.log(r * (count - k + 1) / (k + 1))
                 + _stirling_tail(m) + _stirling_tail(count - m) - _stirling_tail(k) - _stirling_tail(count - k))
        if v <= bound:
            return float(k)


names(function=True, method=False, functions=("normal",))(normal)
names(method=False, functions=("binomial",))(binomial)
names("bernoulli")(bernoulli)
names("multinomial")(multinomial)
names(method=False, functions=("poisson",))(poisson)


# -- in-place initialisers: each returns draws of x's shape, which x.<name>_() writes into x ----------

# PyTorch's names of a floating dtype in its checks: C++'s, and that of its numeric_limits
_C_FLOAT_NAMES = {"float16": ("c10::Half", "Half"), "float32": ("float", "Float"), "float64": ("double", "Double")}


def _floating_only(x, kernel):
    """PyTorch's refusal of a continuous draw into a tensor of integers or bools (named by its kernel)."""
    if x.dtype.kind not in "fc":
        raise NotImplementedError(f'"{kernel}" not implemented for \'{type_name(x.dtype)}\'')


@names(function=False, inplace="uniform_")
def _uniform(x, a=0.0, b=1.0, *, generator=None):
    """U(a, b) (a complex x: each part); the arguments are PyTorch's ``from`` and ``to``."""
    _floating_only(x, "check_uniform_bounds")
    part = numpy.finfo(x.dtype).dtype  # (a complex dtype's parts: complex64's are float32)
    largest = float(numpy.finfo(part).max)
    c_name, limits_name = _C_FLOAT_NAMES[part.name]
    for name, bound in (("from", a), ("to", b)):
        if not -largest <= bound <= largest:  # (±inf and NaN too, as PyTorch's check)
            raise RuntimeError(f"{name} is out of bounds for {c_name}")
    if a > b:
        raise RuntimeError(f"uniform_ expects to return a [from, to) range, but found from={a:g} > to={b:g}")
    if b - a > largest:  # (the width would overflow the draws)
        raise RuntimeError(f"uniform_ expects to-from <= std::numeric_limits<{limits_name}>::max(), but found "
                           f"to={b:g} and from={a:g} which result in to-from to exceed the limit")
    uniform = random.generator(generator).uniform
    # a float64 draw just below b can round up to b in a narrower dtype: each part is kept below b
    below = numpy.nextafter(part.type(b), part.type(a)) if a < b else part.type(b)
    draws = laid_out(random.draws(lambda shape, part: numpy.minimum(uniform(a, b, shape, dtype=part), below),
                                  x.shape, x.dtype), x)
    return _recorded(_tensor(draws, x.dtype), (x,), "UniformBackward0")


@names(function=False, inplace="normal_")
def _normal(x, mean=0.0, std=1.0, *, generator=None):
    _floating_only(x, "normal_kernel_cpu")
    if not std >= 0:
        raise RuntimeError(f"normal expects std >= 0.0, but found std {std:g}")  # (PyTorch's words, no _)
    part = std / math.sqrt(2) if x.dtype.kind == "c" else std  # (a complex x: each part, so that E|z - mean|² = std²)
    normal = random.generator(generator).normal
    if not fills_in_memory_order(x):  # (16 or more values: PyTorch's blocks of 16)
        draw = lambda shape, dtype: normal(mean, part, shape, dtype=dtype)  # noqa: E731
    else:  # PyTorch's one-at-a-time kernel, whatever the count (init.normal_ of a slice, of a transpose)
        draw = lambda shape, dtype: numpy.array(  # noqa: E731
            [normal(mean, part, (1,), dtype=dtype)[0] for _ in range(math.prod(shape))], dtype).reshape(shape)
    return _recorded(_tensor(laid_out(random.draws(draw, x.shape, x.dtype), x), x.dtype), (x,), "NormalBackward0")


@names(function=False, inplace="bernoulli_")
def _bernoulli(x, p=0.5, *, generator=None):
    draws = _tensor(laid_out(_bernoulli_draws(x, p, generator), x), x.dtype)
    if isinstance(p, Tensor):
        return _recorded(draws, (x, p), "BernoulliBackward1")
    return _recorded(draws, (x,), "BernoulliBackward2")


@names(function=False, inplace="exponential_")
def _exponential(x, lambd=1.0, *, generator=None):
    """Exp(λ): density λ e^(-λx)."""
    if x.dtype.kind != "f":
        raise RuntimeError(f"Exponential distribution is a continuous probability distribution. dtype must be a "
                           f"floating point but you specified {type_name(x.dtype)}")
    if not lambd > 0:
        raise RuntimeError(f"exponential_ expects lambda > 0.0, but found lambda={lambd}")
    draws = _tensor(laid_out(random.generator(generator).exponential(1.0 / lambd, x.shape), x), x.dtype)
    return _recorded(draws, (x,), "ExponentialBackward0")


@names(function=False, inplace="log_normal_")
def _log_normal(x, mean=1.0, std=2.0, *, generator=None):
    if not std > 0:
        raise RuntimeError(f"log_normal_ expects std > 0.0, but found std={std}")
    # PyTorch's serial kernel: exp of one normal at a time (Box-Muller on two float64 uniforms, the sine kept)
    stream = random.generator(generator)
    normals = numpy.array([stream.one_normal() for _ in range(x.numel())], dtype=numpy.float64)
    draws = _tensor(laid_out(numpy.exp(normals * std + mean).reshape(x.shape), x), x.dtype)
    return _recorded(draws, (x,), "LogNormalBackward0")


@names(function=False, inplace="cauchy_")
def _cauchy(x, median=0.0, sigma=1.0, *, generator=None):
    if not sigma > 0:
        raise RuntimeError(f"cauchy_ expects sigma > 0.0, but found sigma={sigma}")
    # PyTorch's kernel: median + sigma tan(π (u - 1/2)) for a float64 uniform u each
    u = laid_out(random.generator(generator).units(x.numel(), numpy.float64).reshape(x.shape), x)
    return _recorded(_tensor(median + sigma * numpy.tan(numpy.pi * (u - 0.5)), x.dtype), (x,), "CauchyBackward0")


@names(function=False, inplace="geometric_")
def _geometric(x, p, *, generator=None):
    """Trials up to the first success, success probability p: 1, 2, 3, ..."""
    if not 0 < p < 1:
        raise RuntimeError(f"geometric_ expects p to be in (0, 1), but got p={p}")
    # PyTorch's kernel: ⌈ln u / ln(1 - p)⌉ for a float64 uniform u each
    u = laid_out(random.generator(generator).units(x.numel(), numpy.float64).reshape(x.shape), x)
    with numpy.errstate(divide="ignore"):  # (u = 0: an infinite count, as PyTorch's)
        draws = _tensor(numpy.ceil(numpy.log(u) / numpy.log1p(-p)), x.dtype)
    return _recorded(draws, (x,), "GeometricBackward0")


_TO_UNSAID = object()  # random_(to) and random_(): no second bound given (random_(from, None) gives None)


@names(function=False, inplace="random_")
def _random(x, low=_TO_UNSAID, high=_TO_UNSAID, *, generator=None):
    """Integers in [from, to): ``random_(to)``, ``random_(from, to)``; ``random_(from, None)`` from ``from`` to the
    largest integer x's dtype holds (2^digits for a floating one), every int64 for from = -2^63; with no bound,
    [0, 2^digits] for a floating x (every integer it holds exactly) or [0, max] for an integer one."""
    # (PyTorch's nodes: RandomBackward2 for random_(), RandomBackward1 for random_(to), RandomBackward0 for both)
    to_given, any_given = high is not _TO_UNSAID, low is not _TO_UNSAID
    for bound in (low, high) if to_given else (low,) if any_given else ():
        if bound is not None and not -2**63 <= bound < 2**63:  # (PyTorch's int64 arguments)
            raise ValueError("Overflow when unpacking long long")
    name = "RandomBackward0" if to_given else "RandomBackward1" if any_given else "RandomBackward2"
    stream = random.generator(generator)
    if not to_given and any_given:  # random_(to)
        low, high = 0, low
    elif not to_given:
        if x.dtype.kind == "f":
            high = 2 ** (numpy.finfo(x.dtype).nmant + 1) + 1
        elif x.dtype.kind == "b":
            high = 2
        else:
            high = int(numpy.iinfo(x.dtype).max) + 1
        # PyTorch's uniform_int_distribution: a 64-bit word for int64 and float64, a 32-bit one for the rest,
        # whatever the range (a bounded draw picks its word by the range instead)
        words = stream.words64(x.numel()) if x.dtype in (numpy.int64, numpy.float64) else stream.words(x.numel())
        return _recorded(_tensor(laid_out((words % numpy.uint64(high)).reshape(x.shape), x), x.dtype), (x,), name)
    if x.dtype.kind not in "biuf":
        raise RuntimeError("random_from_to_impl handles only integral, floating-point and boolean types")
    if high is None and low == -2**63:  # every int64 (PyTorch's random_full_64_bits_range_kernel)
        if x.dtype.kind == "b" or x.dtype == numpy.float16:
            raise NotImplementedError('"random_full_64_bits_range_kernel_cpu" not implemented for '
                                      f"'{type_name(x.dtype)}'")
        if x.dtype not in (numpy.int64, numpy.float64, numpy.float32):
            raise RuntimeError("random_full_64_bits_range_kernel_cpu handles only int64, double, float and bfloat16")
        values = stream.words64(x.numel()).view(numpy.int64).reshape(x.shape)
        return _recorded(_tensor(laid_out(values, x), x.dtype), (x,), name)
    if high is None:  # [from, the largest integer of x's dtype]
        if x.dtype.kind == "f":
            largest = 2 ** (numpy.finfo(x.dtype).nmant + 1)
            low = rounded_up(low, x.dtype)
            if low >= largest:
                raise RuntimeError("random_ expects 'from' casted to dtype to be less than or equal to 'to_inc' "
                                   f"casted to dtype, but got from={low} > to_inc={largest}")
        else:
            largest = 1 if x.dtype.kind == "b" else int(numpy.iinfo(x.dtype).max)
        high = largest + 1
    elif low >= high:
        raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    low, high = random_bounds_checked(low, high, x.dtype)
    if high - low > 2**63:  # a range past int64's: PyTorch's (w mod range) + from, in uint64's wrapping arithmetic
        words = stream.words64(x.numel()) % numpy.uint64(high - low) + numpy.uint64(low % 2**64)
        values = words.view(numpy.int64).reshape(x.shape)
    else:
        values = stream.integers(low, high, x.shape, dtype=numpy.int64, endpoint=False)
    return _recorded(_tensor(laid_out(values, x), x.dtype), (x,), name)

