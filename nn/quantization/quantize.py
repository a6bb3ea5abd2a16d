"""Eager-mode QAT's model preparation (``torch.ao.quantization.quantize``), as PyTorch's:

    model.qconfig = get_default_qat_qconfig("x86", version=0)   # or any QConfig
    model = prepare_qat(model.train())

``propagate_qconfig_`` hands each submodule its parent's qconfig (unless it has its own);
``prepare_qat`` then swaps the layers QAT knows (nn.Linear, nn.Conv2d, nn.Conv3d) for their ``nn.qat`` forms,
whose weights are fake-quantized, and gives every quantizable leaf (a QuantStub, a qat layer, a BatchNorm2d,
...) an ``activation_post_process`` fake quantizer run by a forward hook on its output. DeQuantStub and
Dropout are never observed.

``convert`` to real int8 modules needs quantized tensors and kernels, which chainrule does not have: it
raises, unless given a ``mapping`` of one's own (then it only swaps modules, as PyTorch's does)."""

import copy
import functools
import warnings

import nn
import nn.intrinsic as nni
import nn.intrinsic.qat as nniqat
import nn.qat as nnqat
from autograd.graph import program_stacklevel

from .fake_quantize import FakeQuantizeBase
from .observer import ObserverBase
from .stubs import DeQuantStub, QuantStub

DEPRECATION_WARNING = (
    "torch.ao.quantization is deprecated and will be removed in 2.10. \n"
    "For migrations of users: \n"
    "1. Eager mode quantization (torch.ao.quantization.quantize, torch.ao.quantization.quantize_dynamic), please "
    "migrate to use torchao eager mode quantize_ API instead \n"
    "see https://github.com/pytorch/ao/issues/2259 for more details")


def _deprecated(function):
    """PyTorch's eager-mode entry points warn, on every call, that they are deprecated (so do these)."""

    @functools.wraps(function)
    def warning(*args, **kwargs):
        warnings.warn(DEPRECATION_WARNING, DeprecationWarning, stacklevel=program_stacklevel())
        return function(*args, **kwargs)

    return warning


def get_default_qat_module_mappings():
    """The float layers prepare_qat swaps, and what for."""
    return {nn.Linear: nnqat.Linear, nn.Conv2d: nnqat.Conv2d, nn.Conv3d: nnqat.Conv3d, nni.ConvBn2d: nniqat.ConvBn2d,
            nni.ConvBnReLU2d: nniqat.ConvBnReLU2d, nni.ConvReLU2d: nniqat.ConvReLU2d,
            nni.LinearReLU: nniqat.LinearReLU}


def get_default_qconfig_propagation_list():
    """The module types that get an observer on their output when they are leaves (PyTorch's list, of the
    modules chainrule has)."""
    return {QuantStub, DeQuantStub, nn.BatchNorm2d, nn.BatchNorm3d, nn.Conv1d, nn.Conv2d, nn.Conv3d,
            nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Dropout, nn.ELU, nn.Embedding,
            nn.EmbeddingBag, nn.GroupNorm, nn.Hardswish, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d,
            nn.LayerNorm, nn.LeakyReLU, nn.Linear, nn.PReLU, nn.ReLU6, nn.Sequential, nn.GRU, nn.GRUCell, nn.LSTM,
            nn.LSTMCell, nn.RNNCell, *get_default_qat_module_mappings()}


def _propagate_qconfig_helper(module, qconfig_dict, qconfig_parent=None, prefix=""):
    module_qconfig = qconfig_dict.get(type(module), qconfig_parent)
    module_qconfig = qconfig_dict.get(prefix, module_qconfig)
    module.qconfig = getattr(module, "qconfig", module_qconfig)
    for name, child in module.named_children():
        _propagate_qconfig_helper(child, qconfig_dict, module.qconfig, f"{prefix}.{name}" if prefix else name)


def propagate_qconfig_(module, qconfig_dict=None, prepare_custom_config_dict=None):
    """Give every submodule a ``qconfig``: its own, else one named for it (by type or by qualified name) in
    ``qconfig_dict``, else its parent's."""
    _propagate_qconfig_helper(module, qconfig_dict or {})


def _observer_forward_hook(self, input, output):
    """Forward hook that calls the observer on the output."""
    return self.activation_post_process(output)


def _observer_forward_pre_hook(self, input):
    """Forward pre-hook that calls the observer on the input (a memoryless observer's)."""
    return self.activation_post_process(input[0])


def _is_activation_post_process(module):
    return isinstance(module, (ObserverBase, FakeQuantizeBase))


def _activation_is_memoryless(qconfig):
    """Whether the activation observer keeps nothing between calls (a moving average with constant 1):
    such an observer watches the module's input instead, as PyTorch's."""
    activation = qconfig.activation()
    observer = getattr(activation, "activation_post_process", activation) if isinstance(
        activation, FakeQuantizeBase) else activation
    return getattr(observer, "averaging_constant", None) == 1


def _needs_observation(module):
    return getattr(module, "qconfig", None) is not None


def _insert_activation_post_process(module):
    if _needs_observation(module) and not isinstance(module, DeQuantStub):
        module.add_module("activation_post_process", module.qconfig.activation())
        if _activation_is_memoryless(module.qconfig):
            module.register_forward_pre_hook(_observer_forward_pre_hook, prepend=True)
        else:
            module.register_forward_hook(_observer_forward_hook, prepend=True)


def _add_observer_(module, qconfig_propagation_list=None, non_leaf_module_list=None):
    """Attach an activation observer to each quantizable leaf below ``module`` that has a qconfig."""
    if qconfig_propagation_list is None:
        qconfig_propagation_list = get_default_qconfig_propagation_list()
    for child in module.children():
        if type(child) is nn.Dropout:
            continue
        if isinstance(child, nni._FusedModule) or (non_leaf_module_list is not None and
                                                    type(child) in non_leaf_module_list):
            _insert_activation_post_process(child)  # (observed as one: its output, not its parts')
        else:
            _add_observer_(child, qconfig_propagation_list, non_leaf_module_list)
    leaf = not any(True for _ in module.children())
    if leaf and not isinstance(module, nn.Sequential) and type(module) in qconfig_propagation_list:
        _insert_activation_post_process(module)


@_deprecated
def prepare(model, inplace=False, allow_list=None, observer_non_leaf_module_list=None,
            prepare_custom_config_dict=None):
    """Propagate qconfigs and attach the activation observers (on a copy unless ``inplace``)."""
    if not inplace:
        model = copy.deepcopy(model)
    propagate_qconfig_(model)
    if not any(getattr(m, "qconfig", None) for m in model.modules()):
        warnings.warn("None of the submodule got qconfig applied. Make sure you passed correct configuration "
                      "through `qconfig_dict` or by assigning the `.qconfig` attribute directly on submodules",
                      stacklevel=program_stacklevel())
    _add_observer_(model, allow_list, observer_non_leaf_module_list)
    return model


@_deprecated
def prepare_qat(model, mapping=None, inplace=False):
    """Swap in the QAT layers and attach the activation fake quantizers (on a copy unless ``inplace``)."""
    if not model.training:
        raise AssertionError("prepare_qat only works on models in training mode")
    if mapping is None:
        mapping = get_default_qat_module_mappings()
    if not inplace:
        model = copy.deepcopy(model)
    propagate_qconfig_(model)
    convert(model, mapping=mapping, inplace=True, remove_qconfig=False)
    prepare(model, observer_non_leaf_module_list=set(mapping.values()), inplace=True)
    return model


def swap_module(mod, mapping):
    """``mapping[type(mod)].from_float(mod)`` where mod has a qconfig and its type is mapped (keeping its hooks
    but the observer's), else mod."""
    if not _needs_observation(mod) or type(mod) not in mapping:
        return mod
    new_mod = mapping[type(mod)].from_float(mod)
    for hook in mod._forward_pre_hooks.values():
        new_mod.register_forward_pre_hook(hook)
    for hook in mod._forward_hooks.values():
        if hook is not _observer_forward_hook:
            new_mod.register_forward_hook(hook)
    return new_mod


def _convert(module, mapping):
    for name, child in list(module.named_children()):
        if not isinstance(child, nni._FusedModule):  # (a fused module is swapped whole)
            _convert(child, mapping)
        setattr(module, name, swap_module(child, mapping))
    return module


def _remove_qconfig(module):
    for child in module.children():
        _remove_qconfig(child)
    if hasattr(module, "qconfig"):
        del module.qconfig


@_deprecated
def convert(module, mapping=None, inplace=False, remove_qconfig=True, is_reference=False,
            convert_custom_config_dict=None, use_precomputed_fake_quant=False):
    """Swap each submodule whose type ``mapping`` names for its mapped form. Without a mapping PyTorch swaps in
    int8 modules, which need quantized tensors: chainrule has none, and says so."""
    if mapping is None:
        raise NotImplementedError(
            "convert() without a mapping makes quantized (int8) modules, which chainrule does not have: the model "
            "prepared for QAT trains and evaluates with fake quantization as it is; give a mapping of your own to "
            "swap modules")
    if not inplace:
        module = copy.deepcopy(module)
    _convert(module, mapping)
    if remove_qconfig:
        _remove_qconfig(module)
    return module


__all__ = ["convert", "get_default_qat_module_mappings", "get_default_qconfig_propagation_list", "prepare",
           "prepare_qat", "propagate_qconfig_", "swap_module"]
