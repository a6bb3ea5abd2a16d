"""``nn.utils.parametrizations``: ready-made parametrizations (PyTorch's ``weight_norm``)."""

from ..module import Module
from . import parametrize


def _norm_except_dim(v, dim):
    """‖v‖ over every axis but ``dim``, kept as size-1 axes (the whole norm when dim is -1)."""
    if dim == -1:
        return (v * v).sum().sqrt()
    axes = tuple(a for a in range(v.ndim) if a != dim % v.ndim)
    return (v * v).sum(dim=axes, keepdim=True).sqrt() if axes else v.abs()


def _weight_norm(v, g, dim):
    """w = g · v / ‖v‖ (the norm over every axis but ``dim``; all of them for -1)."""
    return v * (g / _norm_except_dim(v, dim))


class _WeightNorm(Module):
    """w = g · v / ‖v‖, the norm taken over every axis but ``dim`` (Salimans & Kingma, 2016)."""

    def __init__(self, dim=0):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g, weight_v):
        return _weight_norm(weight_v, weight_g, self.dim)

    def right_inverse(self, weight):
        return _norm_except_dim(weight, self.dim), weight


def weight_norm(module, name="weight", dim=0):
    """Reparametrize ``module.<name>`` as g · v/‖v‖: the trained parameters become
    ``parametrizations.<name>.original0`` (g, the norms) and ``original1`` (v, the directions),
    so gradient descent moves a weight's length and direction separately."""
    return parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)
