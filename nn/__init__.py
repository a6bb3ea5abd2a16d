"""chainrule's nn: PyTorch-shaped modules, layers and losses (``nn`` plays ``torch.nn``)."""

from autograd import _check_ours

_check_ours.check("nn")

from . import functional, init, utils  # noqa: E402
from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh  # noqa: E402
from .container import Ensemble, ModuleDict, ModuleList, Sequential  # noqa: E402
from .conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, Fold, Unfold  # noqa: E402
from .dropout import DropConnect, Dropout  # noqa: E402
from .lecture import MLP, Neuron, Perceptron  # noqa: E402
from .linear import Flatten, Identity, Linear  # noqa: E402
from .loss import (  # noqa: E402
    BCELoss,
    BCEWithLogitsLoss,
    ContrastiveLoss,
    CosineEmbeddingLoss,
    CrossEntropyLoss,
    HingeLoss,
    HuberLoss,
    L1Loss,
    MarginRankingLoss,
    MSELoss,
    MultiMarginLoss,
    NLLLoss,
    TripletMarginLoss,
)
from .module import Module  # noqa: E402
from .normalization import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm  # noqa: E402
from .parameter import Parameter  # noqa: E402
from .pooling import (  # noqa: E402
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveMaxPool1d,
    AdaptiveMaxPool2d,
    AvgPool1d,
    AvgPool2d,
    Dropout1d,
    Dropout2d,
    MaxPool1d,
    MaxPool2d,
    Upsample,
)
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase  # noqa: E402
