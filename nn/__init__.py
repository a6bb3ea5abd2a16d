"""chainrule's nn: PyTorch-shaped modules, layers and losses (``nn`` plays ``torch.nn``)."""

from autograd import _check_ours, _lazy

_check_ours.check("nn")

from . import functional, init  # noqa: E402
from .activation import (  # noqa: E402
    CELU,
    ELU,
    GELU,
    GLU,
    SELU,
    Hardshrink,
    Hardsigmoid,
    Hardswish,
    Hardtanh,
    LeakyReLU,
    LogSigmoid,
    LogSoftmax,
    Mish,
    PReLU,
    ReLU,
    ReLU6,
    RReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softmax2d,
    Softmin,
    Softplus,
    Softshrink,
    Softsign,
    Tanh,
    Tanhshrink,
    Threshold,
)
from .container import (  # noqa: E402
    Container,
    Ensemble,
    ModuleDict,
    ModuleList,
    ParameterDict,
    ParameterList,
    Sequential,
)
from .linear import Bilinear, Flatten, Identity, Linear, Unflatten  # noqa: E402
from .loss import (  # noqa: E402
    BCELoss,
    BCEWithLogitsLoss,
    ContrastiveLoss,
    CosineEmbeddingLoss,
    CrossEntropyLoss,
    GaussianNLLLoss,
    HingeEmbeddingLoss,
    HingeLoss,
    HuberLoss,
    KLDivLoss,
    L1Loss,
    MarginRankingLoss,
    MSELoss,
    MultiLabelMarginLoss,
    MultiLabelSoftMarginLoss,
    MultiMarginLoss,
    NLLLoss,
    NLLLoss2d,
    PoissonNLLLoss,
    SmoothL1Loss,
    SoftMarginLoss,
    TripletMarginLoss,
    TripletMarginWithDistanceLoss,
)
from .module import Module  # noqa: E402
from .parameter import Buffer, Parameter  # noqa: E402

# What a program may never touch loads on first use (PEP 562), so that `import nn` stays quick:
# the layers beyond the MLP's (convolution, pooling, padding, recurrent, attention, embeddings,
# normalization, dropout, ...), nn.utils, the lecture's networks, and data-parallel training (it brings
# autograd.distributed). `nn.Conv2d`, `from nn import LSTM`, dir(nn) and `from nn import *` work
# as before.
__getattr__, __dir__, __all__ = _lazy.on_first_use(globals(), {
    "attention": ".attention",  # torch.nn.attention: sdpa_kernel, SDPBackend, flex_attention
    "grad": ".grad",  # torch.nn.grad: convolution gradients
    "modules": ".modules",
    "parallel": ".parallel",
    "intrinsic": ".intrinsic",  # torch.nn.intrinsic: layers fused for quantization (and their .qat forms)
    "qat": ".qat",  # torch.nn.qat: the layers quantization-aware training swaps in
    "utils": ".utils",
    "SyncBatchNorm": ".sync_batchnorm:SyncBatchNorm",
    "DataParallel": ".parallel.data_parallel:DataParallel",
    **_lazy.from_module(".adaptive", "AdaptiveLogSoftmaxWithLoss"),
    **_lazy.from_module(".attention", "MultiheadAttention"),
    **_lazy.from_module(".conv", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
                        "ConvTranspose3d", "Fold", "Unfold"),
    **_lazy.from_module(".ctc", "CTCLoss"),
    "CrossMapLRN2d": ".cross_map_lrn:CrossMapLRN2d",
    **_lazy.from_module(".distance", "CosineSimilarity", "PairwiseDistance"),
    **_lazy.from_module(".dropout", "AlphaDropout", "DropConnect", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d",
                        "FeatureAlphaDropout"),
    **_lazy.from_module(".fractional_max_pool", "FractionalMaxPool2d", "FractionalMaxPool3d"),
    **_lazy.from_module(".instance_norm", "InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"),
    **_lazy.from_module(".interpolation", "Upsample", "UpsamplingBilinear2d", "UpsamplingNearest2d"),
    **_lazy.from_module(".lazy", "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d", "LazyConv1d", "LazyConv2d",
                        "LazyConv3d", "LazyConvTranspose1d", "LazyConvTranspose2d", "LazyConvTranspose3d",
                        "LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d", "LazyLinear",
                        "UninitializedBuffer", "UninitializedParameter"),
    **_lazy.from_module(".lecture", "MLP", "Neuron", "Perceptron"),
    **_lazy.from_module(".linear_cross_entropy", "LinearCrossEntropyLoss"),
    **_lazy.from_module(".lp_pool", "LPPool1d", "LPPool2d", "LPPool3d"),
    **_lazy.from_module(".normalization", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "GroupNorm", "LayerNorm",
                        "LocalResponseNorm", "RMSNorm"),
    **_lazy.from_module(".padding", "CircularPad1d", "CircularPad2d", "CircularPad3d", "ConstantPad1d",
                        "ConstantPad2d", "ConstantPad3d", "ReflectionPad1d", "ReflectionPad2d", "ReflectionPad3d",
                        "ReplicationPad1d", "ReplicationPad2d", "ReplicationPad3d", "ZeroPad1d", "ZeroPad2d",
                        "ZeroPad3d"),
    **_lazy.from_module(".pixel_shuffle", "ChannelShuffle", "PixelShuffle", "PixelUnshuffle"),
    **_lazy.from_module(".pooling", "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d",
                        "AdaptiveMaxPool1d", "AdaptiveMaxPool2d", "AdaptiveMaxPool3d", "AvgPool1d", "AvgPool2d",
                        "AvgPool3d", "MaxPool1d", "MaxPool2d", "MaxPool3d"),
    **_lazy.from_module(".rnn", "GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNBase", "RNNCell", "RNNCellBase"),
    **_lazy.from_module(".sparse", "Embedding", "EmbeddingBag"),
    **_lazy.from_module(".unpool", "MaxUnpool1d", "MaxUnpool2d", "MaxUnpool3d"),
    **_lazy.from_module(".transformer", "Transformer", "TransformerDecoder", "TransformerDecoderLayer",
                        "TransformerEncoder", "TransformerEncoderLayer"),
})

# torch.ao.quantization's modules and torch.ao.nn's layers live in nn (nn/quantization), and nn itself is torch.nn:
# autograd, which does not import nn, learns here where they are (loading nothing), so autograd.nn.Linear and
# autograd.ao.quantization.QuantStub read as PyTorch's
_lazy.register_home("autograd.ao.quantization", "nn.quantization")
_lazy.register_home("autograd.ao.nn", "nn.quantization.layers")
_lazy.register_home("autograd.nn", "nn")  # torch.nn.Linear in a program that imports torch alone
