"""``QConfig``: how to observe (and fake-quantize) a module's activations and its weight, as two constructors
(``Observer.with_args(...)``), and PyTorch's default ones."""

from collections import namedtuple

import nn

from .fake_quantize import (
    FakeQuantize,
    FusedMovingAvgObsFakeQuantize,
    default_fake_quant,
    default_fused_act_fake_quant,
    default_fused_per_channel_wt_fake_quant,
    default_fused_wt_fake_quant,
    default_per_channel_weight_fake_quant,
    default_weight_fake_quant,
)
from .observer import (
    MovingAverageMinMaxObserver,
    default_observer,
    default_per_channel_weight_observer,
    default_weight_observer,
)


class QConfig(namedtuple("QConfig", ["activation", "weight"])):
    """The constructors of a module's activation and weight observers (each called once per module, so
    that every module has its own): classes, or ``Observer.with_args(...)``, never instances."""

    __slots__ = ()

    def __new__(cls, activation, weight):
        if isinstance(activation, nn.Module) or isinstance(weight, nn.Module):  # a common mistake, caught early
            raise ValueError("QConfig received observer instance, please pass observer class instead. Use "
                             "MyObserver.with_args(x=1) to override arguments to constructor if needed")
        return super().__new__(cls, activation, weight)


default_qconfig = QConfig(activation=default_observer, weight=default_weight_observer)
default_per_channel_qconfig = QConfig(activation=default_observer, weight=default_per_channel_weight_observer)
default_qat_qconfig = QConfig(activation=default_fake_quant, weight=default_weight_fake_quant)
default_weight_only_qconfig = QConfig(activation=nn.Identity, weight=default_weight_fake_quant)
default_activation_only_qconfig = QConfig(activation=default_fake_quant, weight=nn.Identity)
default_qat_qconfig_v2 = QConfig(activation=default_fused_act_fake_quant, weight=default_fused_wt_fake_quant)

_BACKENDS = ["fbgemm", "x86", "qnnpack", "onednn"]


def _check_backend(backend):
    if backend not in _BACKENDS:
        raise AssertionError(f"backend: {backend} not supported. backend must be one of {_BACKENDS}")


def get_default_qat_qconfig(backend="x86", version=1):
    """The QAT qconfig PyTorch suggests for ``backend``: moving-average fake quantization of the activations
    (range halved for x86 and fbgemm), per-channel symmetric int8 weights (per tensor for qnnpack).
    ``version=1`` (the default) observes and fake-quantizes in one fused step (FusedMovingAvgObsFakeQuantize,
    fbgemm's scales); ``version=0`` with FakeQuantize modules (the observers' scales)."""
    _check_backend(backend)
    if version not in (0, 1):
        raise AssertionError(f"version {version} of the default QAT qconfig does not exist (0 or 1)")
    module = FakeQuantize if version == 0 else FusedMovingAvgObsFakeQuantize
    reduce_range = {} if backend == "onednn" else {"reduce_range": backend in ("fbgemm", "x86")}
    activation = module.with_args(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255, **reduce_range)
    if backend == "qnnpack":
        weight = default_weight_fake_quant if version == 0 else default_fused_wt_fake_quant
    else:
        weight = default_per_channel_weight_fake_quant if version == 0 else default_fused_per_channel_wt_fake_quant
    return QConfig(activation=activation, weight=weight)


def get_default_qconfig(backend="x86", version=0):
    """The post-training qconfig for ``backend``: PyTorch's watches activations with a HistogramObserver, which
    is not built here (saying so, rather than calibrating with another observer)."""
    _check_backend(backend)
    raise NotImplementedError(f"get_default_qconfig({backend!r}) observes activations with a HistogramObserver, "
                              "which chainrule does not have: use default_qconfig or a QConfig of MinMaxObservers")


__all__ = ["QConfig", "default_activation_only_qconfig", "default_per_channel_qconfig", "default_qat_qconfig",
           "default_qat_qconfig_v2", "default_qconfig", "default_weight_only_qconfig", "get_default_qat_qconfig",
           "get_default_qconfig"]
