"""``nn.utils.weight_norm``, PyTorch's older hook-based weight normalisation (Salimans & Kingma, 2016):

    w = g · v / ‖v‖      (the norm over every axis but ``dim``; the whole tensor for dim=None)

The module's ``<name>`` parameter is replaced by ``<name>_g`` (the norms, shaped to broadcast)
and ``<name>_v`` (the directions), and a forward pre-hook recomputes ``<name>`` from them
before each call, so gradient descent moves a weight's length and direction separately.
PyTorch deprecates it for ``nn.utils.parametrizations.weight_norm``; both are here, and a
state dict of this one (``weight_g``, ``weight_v``) loads into a PyTorch model that uses it.
"""

import warnings

import autograd
from autograd.graph import program_stacklevel

from ..parameter import Parameter


class WeightNorm:
    """The forward pre-hook: ``module.<name>`` = g · v / ‖v‖ from ``<name>_g`` and ``<name>_v``."""

    def __init__(self, name, dim):
        self.name, self.dim = name, -1 if dim is None else dim

    def compute_weight(self, module):
        g, v = getattr(module, self.name + "_g"), getattr(module, self.name + "_v")
        return autograd._weight_norm(v, g, self.dim)

    @staticmethod
    def apply(module, name, dim):
        warnings.warn("`torch.nn.utils.weight_norm` is deprecated in favor of "
                      "`torch.nn.utils.parametrizations.weight_norm`.", FutureWarning, stacklevel=program_stacklevel())
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, WeightNorm) and hook.name == name:
                raise RuntimeError(f"Cannot register two weight_norm hooks on the same parameter {name}")
        fn = WeightNorm(name, dim)
        weight = getattr(module, name)
        from ..lazy import is_lazy  # (imported on use: nn.lazy loads the layers, which `import nn` defers)

        if is_lazy(weight):
            raise ValueError("The module passed to `WeightNorm` can't have uninitialized parameters. Make sure to "
                             "run the dummy forward before applying weight normalization")
        delattr(module, name)
        module.register_parameter(name + "_g", Parameter(autograd.norm_except_dim(weight.detach(), 2, fn.dim)))
        module.register_parameter(name + "_v", Parameter(weight.detach()))
        setattr(module, name, fn.compute_weight(module))
        module.register_forward_pre_hook(fn)
        return fn

    def remove(self, module):
        weight = self.compute_weight(module)
        delattr(module, self.name)
        delattr(module, self.name + "_g")
        delattr(module, self.name + "_v")
        setattr(module, self.name, Parameter(weight.detach()))

    def __call__(self, module, inputs):
        setattr(module, self.name, self.compute_weight(module))


def weight_norm(module, name="weight", dim=0):
    """Reparametrize ``module.<name>`` as g · v / ‖v‖ with parameters ``<name>_g`` and ``<name>_v``
    (see the module's docstring); returns the module. Warns, as PyTorch does, that it is deprecated."""
    WeightNorm.apply(module, name, dim)
    return module


def remove_weight_norm(module, name="weight"):
    """Undo weight_norm: ``<name>`` becomes one parameter again, holding g · v / ‖v‖."""
    remove_reparametrization_hook(module, name, WeightNorm, "weight_norm")
    return module


def remove_reparametrization_hook(module, name, kind, function_name):
    """Take off ``module``'s forward pre-hook of class ``kind`` that computes ``<name>`` (the hook-based
    weight_norm and spectral_norm), putting ``<name>`` back as a parameter."""
    for key, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, kind) and hook.name == name:
            hook.remove(module)
            del module._forward_pre_hooks[key]
            return
    raise ValueError(f"{function_name} of '{name}' not found in {module}")
