"""``torch.ao.quantization`` for quantization-aware training in eager mode: observers, fake-quantize modules,
qconfigs, QuantStub/DeQuantStub and ``prepare_qat`` (see each module). Converting to int8 modules is not
built (chainrule has no quantized tensors).

They are nn.Modules and work on modules, so they live in nn: autograd does not import nn. ``import nn``
registers this package as the home of ``autograd.ao.quantization`` (and ``autograd.quantization``), where
PyTorch programs find them (``torch.ao.quantization.QuantStub``)."""

from autograd import _lazy

from .fake_quantize import (
    FakeQuantize,
    FakeQuantizeBase,
    FusedMovingAvgObsFakeQuantize,
    default_dynamic_fake_quant,
    default_embedding_fake_quant,
    default_fake_quant,
    default_fused_act_fake_quant,
    default_fused_per_channel_wt_fake_quant,
    default_fused_wt_fake_quant,
    default_per_channel_weight_fake_quant,
    default_weight_fake_quant,
    disable_fake_quant,
    disable_observer,
    enable_fake_quant,
    enable_observer,
)
from .observer import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    NoopObserver,
    ObserverBase,
    PerChannelMinMaxObserver,
    PlaceholderObserver,
    UniformQuantizationObserverBase,
    default_float_qparams_observer,
    default_observer,
    default_per_channel_weight_observer,
    default_placeholder_observer,
    default_weight_observer,
)
from .qconfig import (
    QConfig,
    default_activation_only_qconfig,
    default_per_channel_qconfig,
    default_qat_qconfig,
    default_qat_qconfig_v2,
    default_qconfig,
    default_weight_only_qconfig,
    get_default_qat_qconfig,
    get_default_qconfig,
)
from .stubs import DeQuantStub, QuantStub, QuantWrapper

# what swaps modules (prepare_qat, fusion) brings the qat and intrinsic layers, and with them nn's convolutions:
# loaded on first use (fusing.py: a module named fuse_modules would shadow the function once imported)
__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {
    **_lazy.from_module(".quantize", "convert", "get_default_qat_module_mappings",
                        "get_default_qconfig_propagation_list", "prepare", "prepare_qat", "propagate_qconfig_",
                        "swap_module"),
    **_lazy.from_module(".fusing", "fuse_known_modules", "fuse_modules", "fuse_modules_qat", "get_fuser_method"),
})
