"""VonMises(loc, concentration): the circular normal on angles, density e^(κ cos(x - μ)) / (2π I0(κ)).

    mean = mode = μ,   variance (circular) = 1 - I1(κ)/I0(κ)
    sample: Best and Fisher's rejection scheme (1979), as PyTorch's: a wrapped-Cauchy proposal of
    parameter r = (1 + ρ²)/(2ρ), ρ = (τ - √(2τ))/(2κ), τ = 1 + √(1 + 4κ²); no reparameterised sample

ln I0 and ln I1 are exact here, as ln(e^-κ I_ν(κ)) + κ from the scaled special.i0e and special.i1e (which
do not overflow, in float32 as in float64). PyTorch uses a seven-digit polynomial fit (Abramowitz and
Stegun 9.8.1-4), so the two agree to about 1e-7.
"""

import math

import numpy

from .. import random
from ..ops.sampling import _tensor
from ..special import i0e, i1e
from . import constraints
from .distribution import Distribution, broadcast_all


def log_bessel(x, order):
    """ln I_order(x) for order 0 or 1 and x ≥ 0, differentiable: ln(e^-x I_order(x)) + x, from the
    exponentially scaled functions, which stay finite where I0 itself overflows (float32 past x ≈ 88)."""
    return (i0e(x) if order == 0 else i1e(x)).log() + x


class VonMises(Distribution):
    arg_constraints = {"loc": constraints.real, "concentration": constraints.positive}
    support = constraints.real
    has_rsample = False

    def __init__(self, loc, concentration, validate_args=None):
        self.loc, self.concentration = broadcast_all(loc, concentration)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.loc

    @property
    def mode(self):
        return self.loc

    @property
    def variance(self):
        return 1 - (log_bessel(self.concentration, 1) - log_bessel(self.concentration, 0)).exp()

    def log_prob(self, value):
        value = self._value(value, self.loc)
        return (self.concentration * (value - self.loc).cos() - math.log(2 * math.pi)
                - log_bessel(self.concentration, 0))

    def sample(self, sample_shape=()):
        """Best and Fisher: z = cos(π u1), f = (1 + r z)/(r + z), c = κ (r - f); accept when
        c (2 - c) > u2 or ln(c/u2) + 1 - c ≥ 0; then x = ±arccos f (sign from u3), shifted by μ and
        wrapped to [-π, π); rounds of three uniforms for every angle until each has been accepted, the
        angle of its last acceptance kept. Drawn on the host, from the stream PyTorch's would draw."""
        shape = self._extended_shape(sample_shape)
        loc = numpy.broadcast_to(self.loc.detach().numpy().astype(numpy.float64), shape)
        kappa = numpy.broadcast_to(self.concentration.detach().numpy().astype(numpy.float64), shape)
        tau = 1 + numpy.sqrt(1 + 4 * kappa**2)
        rho = (tau - numpy.sqrt(2 * tau)) / (2 * kappa)
        with numpy.errstate(divide="ignore", invalid="ignore"):
            r = numpy.where(kappa < 1e-5, 1 / kappa + kappa, (1 + rho**2) / (2 * rho))  # (ρ → 0: its Taylor form)
        rng = random.generator(None)
        x = numpy.zeros(shape)
        done = numpy.zeros(shape, dtype=bool)
        while not done.all():
            u1, u2, u3 = rng.random((3,) + tuple(shape))
            z = numpy.cos(math.pi * u1)
            f = (1 + r * z) / (r + z)
            c = kappa * (r - f)
            with numpy.errstate(divide="ignore", invalid="ignore"):
                accept = ((c * (2 - c) - u2) > 0) | (numpy.log(c / u2) + 1 - c >= 0)
            # every acceptance is kept, an angle accepted before included (PyTorch's loop: the draws are its)
            x = numpy.where(accept, numpy.sign(u3 - 0.5) * numpy.arccos(numpy.clip(f, -1, 1)), x)
            done |= accept
        return _tensor((x + math.pi + loc) % (2 * math.pi) - math.pi, self.loc.dtype)
