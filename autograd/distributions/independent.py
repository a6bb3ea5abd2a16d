"""Independent(base, n): the rightmost ``n`` batch dims of ``base`` read as one event.

A diagonal Gaussian policy over a d-dim action is ``Independent(Normal(μ, σ), 1)``: one
distribution per batch row whose density is the product of the d coordinates', so

    log p(x) = Σ_{event dims} log p_base(x),     entropy = Σ_{event dims} entropy_base,

and ``sample``/``rsample``, ``mean``, ``variance`` and ``mode`` are the base's. The batch shape
loses its last ``n`` dims; the event shape gains them.
"""

from .distribution import Distribution


def sum_rightmost(value, dims):
    """Sum over the last ``dims`` dims (none for 0)."""
    return value.sum(tuple(range(-dims, 0))) if dims > 0 else value


class Independent(Distribution):
    def __init__(self, base_distribution, reinterpreted_batch_ndims, validate_args=None):
        base_batch = base_distribution.batch_shape
        if reinterpreted_batch_ndims > len(base_batch):
            raise ValueError(f"Expected reinterpreted_batch_ndims <= len(base_distribution.batch_shape), "
                             f"actual {reinterpreted_batch_ndims} vs {len(base_batch)}")
        self.base_dist = base_distribution
        self.reinterpreted_batch_ndims = reinterpreted_batch_ndims
        split = len(base_batch) - reinterpreted_batch_ndims
        super().__init__(base_batch[:split], base_batch[split:] + base_distribution.event_shape,
                         validate_args=validate_args)

    @property
    def has_rsample(self):
        return self.base_dist.has_rsample

    @property
    def mean(self):
        return self.base_dist.mean

    @property
    def mode(self):
        return self.base_dist.mode

    @property
    def variance(self):
        return self.base_dist.variance

    def sample(self, sample_shape=()):
        return self.base_dist.sample(sample_shape)

    def rsample(self, sample_shape=()):
        return self.base_dist.rsample(sample_shape)

    def log_prob(self, value):
        return sum_rightmost(self.base_dist.log_prob(value), self.reinterpreted_batch_ndims)

    def entropy(self):
        return sum_rightmost(self.base_dist.entropy(), self.reinterpreted_batch_ndims)

    def __repr__(self):
        return f"Independent({self.base_dist!r}, {self.reinterpreted_batch_ndims})"
