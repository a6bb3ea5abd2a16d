"""``nn.modules``: PyTorch's ``torch.nn.modules`` spelling of the layers, for code that names it,
as much code does in ``isinstance`` checks and base classes::

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):   # freeze every batch norm
            m.eval()
    class FocalLoss(nn.modules.loss._WeightedLoss): ...
    nn.modules.module.register_module_forward_hook(hook)

Each of PyTorch's submodule names is the chainrule module that holds those classes (``batchnorm``
is ``nn.normalization``, ``upsampling`` is ``nn.interpolation``, ...), registered under its
PyTorch name, so that ``from nn.modules.batchnorm import _BatchNorm`` imports too. Nothing here
is new code but ``nn.modules.utils`` (PyTorch's ``_pair``/``_single``/``_triple`` helpers, which
third-party layers import); ``nn`` loads this only when it is asked for. ``nn.modules.Linear`` and the
other layer names are ``nn``'s."""

import importlib
import sys

import nn

from . import utils  # noqa: F401  (a real submodule: nn.modules.utils._pair)

# PyTorch's name -> the chainrule module with those classes
_WHERE = {
    "activation": "activation", "adaptive": "adaptive", "batchnorm": "normalization",
    "channelshuffle": "pixel_shuffle", "container": "container", "conv": "conv", "distance": "distance",
    "dropout": "dropout", "flatten": "linear", "fold": "conv", "instancenorm": "instance_norm", "lazy": "lazy",
    "linear": "linear", "loss": "loss", "module": "module", "normalization": "normalization",
    "padding": "padding", "pixelshuffle": "pixel_shuffle", "pooling": "pooling", "rnn": "rnn",
    "sparse": "sparse", "transformer": "transformer", "upsampling": "interpolation",
}

for _name, _source in _WHERE.items():
    _module = importlib.import_module(f"nn.{_source}")
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module


def __getattr__(name):
    if name in nn.__all__ and name != "modules":
        return getattr(nn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
