"""``nn.utils.spectral_norm``: a weight divided by its largest singular value, estimated by power
iteration before every forward (Miyato et al., 2018), with PyTorch's hook-based layout.

    W_SN = W / σ(W),   σ(W) = max_h ‖W h‖ / ‖h‖ ≈ uᵀ W v

where W is the weight seen as a matrix (its ``dim`` axis first, the rest flattened) and the
vectors u, v are refined by ``n_power_iterations`` steps of

    v ← Wᵀu / max(‖Wᵀu‖, ε),   u ← W v / max(‖W v‖, ε)

in training mode (the buffers ``<name>_u`` and ``<name>_v`` keep them between calls; eval
reuses them as they are). The trained parameter is ``<name>_orig``; ``<name>`` is a plain
attribute recomputed by a forward pre-hook, so a PyTorch state dict (``weight_orig``,
``weight_u``, ``weight_v``) loads as it is. Gradients flow through σ to ``<name>_orig``
(u and v are constants of the graph, as in PyTorch).
"""

import math

import autograd

from .. import functional as F
from ..parameter import Parameter
from .weight_norm import remove_reparametrization_hook


def weight_as_matrix(weight, dim):
    """The weight as a (size along dim) × (everything else) matrix."""
    if dim != 0:
        weight = weight.permute(dim, *[d for d in range(weight.ndim) if d != dim])
    return weight.reshape(weight.shape[0], math.prod(weight.shape[1:]))  # (not -1: ambiguous with no rows)


def default_dim(module):
    """0, or 1 for a transposed convolution (its weight holds the output channels second)."""
    from ..conv import _ConvTransposeNd

    return 1 if isinstance(module, _ConvTransposeNd) else 0


class SpectralNorm:
    """The forward pre-hook: recompute ``module.<name>`` from ``<name>_orig``, u and v."""

    _version = 1

    def __init__(self, name="weight", n_power_iterations=1, dim=0, eps=1e-12):
        if n_power_iterations <= 0:
            raise ValueError("Expected n_power_iterations to be positive, but got "
                             f"n_power_iterations={n_power_iterations}")
        self.name, self.dim, self.n_power_iterations, self.eps = name, dim, n_power_iterations, eps

    def reshape_weight_to_matrix(self, weight):
        return weight_as_matrix(weight, self.dim)

    def compute_weight(self, module, do_power_iteration):
        weight = getattr(module, self.name + "_orig")
        u, v = getattr(module, self.name + "_u"), getattr(module, self.name + "_v")
        matrix = self.reshape_weight_to_matrix(weight)
        if do_power_iteration:
            with autograd.no_grad():
                for _ in range(self.n_power_iterations):
                    F.normalize(matrix.t().mv(u), dim=0, eps=self.eps, out=v)
                    F.normalize(matrix.mv(v), dim=0, eps=self.eps, out=u)
                u, v = u.clone(), v.clone()  # the graph keeps these; the buffers move on next time
        sigma = u.dot(matrix.mv(v))
        return weight / sigma

    def remove(self, module):
        with autograd.no_grad():
            weight = self.compute_weight(module, do_power_iteration=False)
        for suffix in ("", "_u", "_v", "_orig"):
            delattr(module, self.name + suffix)
        module.register_parameter(self.name, Parameter(weight.detach()))

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module, do_power_iteration=module.training))

    def _solve_v_and_rescale(self, matrix, u, target_sigma):
        """The v with u = W v / ‖W v‖ and uᵀ W v = σ, for a state dict saved without v:
        v = (WᵀW)⁺ Wᵀ u, rescaled."""
        import numpy

        m = matrix.numpy()
        v = autograd.tensor(numpy.linalg.pinv(m.T @ m) @ m.T @ u.numpy())
        return v.mul_(target_sigma / u.dot(matrix.mv(v)))

    @staticmethod
    def apply(module, name, n_power_iterations, dim, eps):
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, SpectralNorm) and hook.name == name:
                raise RuntimeError(f"Cannot register two spectral_norm hooks on the same parameter {name}")
        fn = SpectralNorm(name, n_power_iterations, dim, eps)
        weight = module._parameters.get(name)
        if weight is None:
            raise ValueError(f"`SpectralNorm` cannot be applied as parameter `{name}` is None")
        from ..lazy import is_lazy  # (imported on use: nn.lazy loads the layers, which `import nn` defers)

        if is_lazy(weight):
            raise ValueError("The module passed to `SpectralNorm` can't have uninitialized parameters. Make sure "
                             "to run the dummy forward before applying spectral normalization")
        with autograd.no_grad():
            height, width = fn.reshape_weight_to_matrix(weight).shape
            u = F.normalize(weight.new_empty(height).normal_(0, 1), dim=0, eps=fn.eps)
            v = F.normalize(weight.new_empty(width).normal_(0, 1), dim=0, eps=fn.eps)
        delattr(module, fn.name)
        module.register_parameter(fn.name + "_orig", weight)
        setattr(module, fn.name, weight.detach())  # a plain attribute until the first forward
        module.register_buffer(fn.name + "_u", u)
        module.register_buffer(fn.name + "_v", v)
        module.register_forward_pre_hook(fn)
        module._register_state_dict_hook(SpectralNormStateDictHook(fn))
        module._register_load_state_dict_pre_hook(SpectralNormLoadStateDictPreHook(fn))
        return fn


class SpectralNormLoadStateDictPreHook:
    """Loads a state dict saved before v was kept (PyTorch < 1.0: ``weight`` and no ``weight_v``)."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        fn = self.fn
        version = local_metadata.get("spectral_norm", {}).get(fn.name + ".version", None)
        if version is not None and version >= 1:
            return
        key = prefix + fn.name
        if version is None and all(key + s in state_dict for s in ("_orig", "_u", "_v")) and key not in state_dict:
            return
        missing = [key + suffix for suffix in ("_orig", "", "_u") if key + suffix not in state_dict]
        if missing:
            if strict:
                missing_keys.extend(missing)
            return
        with autograd.no_grad():
            weight_orig = autograd.as_tensor(state_dict[key + "_orig"])
            sigma = (weight_orig / autograd.as_tensor(state_dict.pop(key))).mean()
            matrix = fn.reshape_weight_to_matrix(weight_orig)
            state_dict[key + "_v"] = fn._solve_v_and_rescale(matrix, autograd.as_tensor(state_dict[key + "_u"]), sigma)


class SpectralNormStateDictHook:
    """Records the layout version in the state dict's metadata, as PyTorch does."""

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, module, state_dict, prefix, local_metadata):
        versions = local_metadata.setdefault("spectral_norm", {})
        key = self.fn.name + ".version"
        if key in versions:
            raise RuntimeError(f"Unexpected key in metadata['spectral_norm']: {key}")
        versions[key] = self.fn._version


def spectral_norm(module, name="weight", n_power_iterations=1, eps=1e-12, dim=None):
    """Apply spectral normalisation to ``module.<name>`` (see the module's docstring); returns the
    module. ``dim`` defaults to 0, or 1 for a transposed convolution (its output channels)."""
    if dim is None:
        dim = default_dim(module)
    SpectralNorm.apply(module, name, n_power_iterations, dim, eps)
    return module


def remove_spectral_norm(module, name="weight"):
    """Undo spectral_norm: ``<name>`` becomes a parameter again, holding W / σ with the current u, v."""
    remove_reparametrization_hook(module, name, SpectralNorm, "spectral_norm")
    for registry, kind in (("_state_dict_hooks", SpectralNormStateDictHook),
                           ("_load_state_dict_pre_hooks", SpectralNormLoadStateDictPreHook)):
        hooks = module.__dict__.get(registry, {})
        for key, hook in list(hooks.items()):
            if isinstance(hook, kind) and hook.fn.name == name:
                del hooks[key]
                break
    return module
