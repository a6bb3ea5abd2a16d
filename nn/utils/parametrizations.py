"""``nn.utils.parametrizations``: ready-made parametrizations (PyTorch's ``orthogonal``,
``weight_norm`` and ``spectral_norm``)."""

import autograd

from .. import functional as F
from ..module import Module
from . import parametrize
from .orthogonal import _OrthMaps, _Orthogonal

__all__ = ["orthogonal", "spectral_norm", "weight_norm"]


class _WeightNorm(Module):
    """w = g · v / ‖v‖, the norm taken over every axis but ``dim`` (Salimans & Kingma, 2016)."""

    def __init__(self, dim=0):
        super().__init__()
        self.dim = -1 if dim is None else dim

    def forward(self, weight_g, weight_v):
        return autograd._weight_norm(weight_v, weight_g, self.dim)

    def right_inverse(self, weight):
        return autograd.norm_except_dim(weight, 2, self.dim), weight


def weight_norm(module, name="weight", dim=0):
    """Reparametrize ``module.<name>`` as g · v/‖v‖: the trained parameters become
    ``parametrizations.<name>.original0`` (g, the norms) and ``original1`` (v, the directions),
    so gradient descent moves a weight's length and direction separately. A state dict saved under
    nn.utils.weight_norm's names (``<name>_g``, ``<name>_v``) loads into it, as in PyTorch."""
    parametrize.register_parametrization(module, name, _WeightNorm(dim), unsafe=True)

    def from_weight_norm_hook_names(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                    error_msgs):
        g_key, v_key = f"{prefix}{name}_g", f"{prefix}{name}_v"
        if g_key in state_dict and v_key in state_dict:
            state_dict[f"{prefix}parametrizations.{name}.original0"] = state_dict.pop(g_key)
            state_dict[f"{prefix}parametrizations.{name}.original1"] = state_dict.pop(v_key)

    module._register_load_state_dict_pre_hook(from_weight_norm_hook_names)
    return module


class _SpectralNorm(Module):
    """W / σ(W), σ the largest singular value of W seen as a matrix (its ``dim`` axis first),
    estimated by power iteration (Miyato et al., 2018):

        u ← W v / max(‖W v‖, ε),   v ← Wᵀ u / max(‖Wᵀ u‖, ε),   σ ≈ uᵀ W v

    u and v are the buffers ``_u`` and ``_v``: drawn at random and refined by 15 steps when made,
    by ``n_power_iterations`` steps before each forward in training mode (none in eval), and
    constants of the graph (the gradient flows through σ's W only). A 1-D weight is normalised.
    The nn.utils.spectral_norm hook does the same with the other order of the two steps."""

    def __init__(self, weight, n_power_iterations=1, dim=0, eps=1e-12):
        super().__init__()
        ndim = weight.ndim
        if dim >= ndim or dim < -ndim:
            raise IndexError(f"Dimension out of range (expected to be in range of [-{ndim}, {ndim - 1}] "
                             f"but got {dim})")
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.dim = dim % ndim
        self.eps = eps
        if ndim > 1:
            from .spectral_norm import weight_as_matrix  # here: spectral_norm -> weight_norm imports this module
            self.n_power_iterations = n_power_iterations
            matrix = weight_as_matrix(weight, self.dim)
            height, width = matrix.shape
            with autograd.no_grad():
                self.register_buffer("_u", F.normalize(weight.new_empty(height).normal_(0, 1), dim=0, eps=eps))
                self.register_buffer("_v", F.normalize(weight.new_empty(width).normal_(0, 1), dim=0, eps=eps))
            self._power_method(matrix, 15)

    def _power_method(self, matrix, steps):
        with autograd.no_grad():
            matrix = matrix.detach()
            for _ in range(steps):
                F.normalize(matrix.mv(self._v), dim=0, eps=self.eps, out=self._u)
                F.normalize(matrix.mH.mv(self._u), dim=0, eps=self.eps, out=self._v)  # (Wᴴ: a complex W's too)

    def forward(self, weight):
        if weight.ndim == 1:
            return F.normalize(weight, dim=0, eps=self.eps)
        from .spectral_norm import weight_as_matrix

        matrix = weight_as_matrix(weight, self.dim)
        if self.training:
            self._power_method(matrix, self.n_power_iterations)
        u, v = self._u.clone(), self._v.clone()  # the graph keeps these; the buffers move on next time
        return weight / autograd.vdot(u, matrix.mv(v))  # σ = uᴴ W v, real for a complex W too

    def right_inverse(self, value):
        return value


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Reparametrize ``module.<name>`` as W / σ(W) (see ``_SpectralNorm``): the trained parameter
    becomes ``parametrizations.<name>.original``, the vectors ``parametrizations.<name>.0._u``
    and ``._v``, as PyTorch names them. ``dim`` defaults to 0, or 1 for a transposed convolution."""
    weight = getattr(module, name, None)
    if not isinstance(weight, autograd.Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if dim is None:
        from .spectral_norm import default_dim

        dim = default_dim(module)
    return parametrize.register_parametrization(module, name, _SpectralNorm(weight, n_power_iterations, dim, eps))


def orthogonal(module, name="weight", orthogonal_map=None, *, use_trivialization=True):
    """Reparametrize ``module.<name>`` (a matrix or a batch of matrices, m × n) as an orthogonal
    one: orthonormal columns when m ≥ n, orthonormal rows otherwise (see ``nn/utils/orthogonal.py``
    for the maps). ``orthogonal_map`` is "matrix_exp" (the default for a square matrix), "cayley"
    or "householder" (the default otherwise). The trained tensor is
    ``parametrizations.<name>.original``; with ``use_trivialization`` the fixed orthogonal factor
    is the buffer ``parametrizations.<name>[0].base``. The weight starts as the original one when
    that is orthogonal, as the Q of its QR factorisation otherwise (except for matrix_exp and
    cayley without trivialization, which start from the map of the original tensor)."""
    weight = getattr(module, name, None)
    if not isinstance(weight, autograd.Tensor):
        raise ValueError(f"Module '{module}' has no parameter or buffer with name '{name}'")
    if weight.ndim < 2:  # (a map onto the sphere would fit a vector, but PyTorch refuses it)
        raise ValueError(f"Expected a matrix or batch of matrices. Got a tensor of {weight.ndim} dimensions.")
    if orthogonal_map is None:
        square = weight.shape[-2] == weight.shape[-1]
        orthogonal_map = "matrix_exp" if square or weight.is_complex() else "householder"
    orth_enum = getattr(_OrthMaps, orthogonal_map, None)
    if orth_enum is None:
        raise ValueError('orthogonal_map has to be one of "matrix_exp", "cayley", "householder". '
                         f"Got: {orthogonal_map}")
    orth = _Orthogonal(weight, orth_enum, use_trivialization=use_trivialization)
    return parametrize.register_parametrization(module, name, orth, unsafe=True)
