"""``autograd.distributions.utils``: PyTorch's ``torch.distributions.utils``, the helpers a distribution
written outside the library imports (``from torch.distributions.utils import broadcast_all``). They are
the ones this package's own distributions use, defined where those need them."""

from .. import factories
from ..tensor import Tensor
from .distribution import broadcast_all, clamp_probs, lazy_property, logits_to_probs, probs_to_logits
from .independent import sum_rightmost as _sum_rightmost  # noqa: F401  (PyTorch's private name, which Pyro imports)
from .matrix_transforms import tril_matrix_to_vec, vec_to_tril_matrix

euler_constant = 0.57721566490153286060  # Euler-Mascheroni constant, as PyTorch's


def is_tensor_like(obj):
    """Whether ``obj`` is a Tensor (PyTorch also counts objects with ``__torch_function__``)."""
    return isinstance(obj, Tensor) or hasattr(type(obj), "__torch_function__")


def _standard_normal(shape, dtype, device):
    """N(0, 1) draws of ``shape`` (PyTorch's private helper, which Pyro imports): ``empty(shape).normal_()``."""
    return factories.empty(shape, dtype=dtype, device=device).normal_()


__all__ = ["broadcast_all", "clamp_probs", "euler_constant", "is_tensor_like", "lazy_property", "logits_to_probs",
           "probs_to_logits", "tril_matrix_to_vec", "vec_to_tril_matrix"]
