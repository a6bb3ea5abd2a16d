"""``nn.modules``: PyTorch's ``torch.nn.modules`` spelling of the layers, for code that names it,
as much code does in ``isinstance`` checks and base classes::

    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):   # freeze every batch norm
            m.eval()
    class FocalLoss(nn.modules.loss._WeightedLoss): ...
    nn.modules.module.register_module_forward_hook(hook)

Each of PyTorch's submodule names is the chainrule module that holds those classes (``batchnorm``
is ``nn.normalization``, ``upsampling`` is ``nn.interpolation``, ...), registered under its
PyTorch name, so that ``from nn.modules.batchnorm import _BatchNorm`` imports too; where PyTorch
keeps more there (``batchnorm.SyncBatchNorm``, ``activation.MultiheadAttention``, the lazy layers,
...), the name is a stand-in module that adds those to the chainrule module's. Nothing here
is new code but ``nn.modules.utils`` (PyTorch's ``_pair``/``_single``/``_triple`` helpers, which
third-party layers import); ``nn`` loads this only when it is asked for. ``nn.modules.Linear`` and the
other layer names are ``nn``'s."""

import importlib
import sys
import types

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

# the classes PyTorch also keeps in one of those submodules that chainrule keeps in another: code
# imports them from there (``from torch.nn.modules.activation import MultiheadAttention``) and checks
# them there (timm: ``isinstance(m, torch.nn.modules.batchnorm.SyncBatchNorm)``)
_ALSO = {
    "activation": ("MultiheadAttention",),
    "batchnorm": ("SyncBatchNorm", "LazyBatchNorm1d", "LazyBatchNorm2d", "LazyBatchNorm3d",
                  "nn.lazy:_LazyNormMixin as _LazyNormBase"),  # (the lazy norms' base, as PyTorch's)
    "conv": ("LazyConv1d", "LazyConv2d", "LazyConv3d", "LazyConvTranspose1d", "LazyConvTranspose2d",
             "LazyConvTranspose3d"),
    "instancenorm": ("LazyInstanceNorm1d", "LazyInstanceNorm2d", "LazyInstanceNorm3d"),
    "dropout": ("nn.dropout:_DropoutNd",),  # the base of every dropout class, as PyTorch's
    "linear": ("LazyLinear", "nn.attention:NonDynamicallyQuantizableLinear"),  # (MultiheadAttention's out_proj)
    "loss": ("CTCLoss", "LinearCrossEntropyLoss"),
    "normalization": ("CrossMapLRN2d",),
    "pooling": ("FractionalMaxPool2d", "FractionalMaxPool3d", "LPPool1d", "LPPool2d", "LPPool3d", "MaxUnpool1d",
                "MaxUnpool2d", "MaxUnpool3d", "nn.unpool:_MaxUnpoolNd", "nn.lp_pool:_LPPoolNd"),
}


def _where(entry):
    """An ``_ALSO`` entry as (PyTorch's name, chainrule module, chainrule's name): "Name" is nn.Name,
    "module:Name" that module's, "module:Name as Alias" under PyTorch's other name."""
    module, _, name = entry.rpartition(":")
    name, _, alias = name.partition(" as ")
    return alias or name, module or "nn", name


class _Spelling(types.ModuleType):
    """PyTorch's submodule that holds more names than the chainrule module behind it: that module's
    names (read and written through to it), and those of ``_ALSO``."""

    def __init__(self, name, source, also):
        super().__init__(name, source.__doc__)
        self.__dict__.update(_source=source, _also={alias: (module, attr) for alias, module, attr in map(_where, also)})

    def __getattr__(self, attr):
        if attr in self._also:
            module, name = self._also[attr]
            return getattr(importlib.import_module(module), name)
        return getattr(self._source, attr)

    def __setattr__(self, attr, value):
        setattr(self._source, attr, value)

    def __dir__(self):
        return sorted(set(dir(self._source)) | set(self._also))


for _name, _source in _WHERE.items():
    _module = importlib.import_module(f"nn.{_source}")
    if _name in _ALSO:
        _module = _Spelling(f"{__name__}.{_name}", _module, _ALSO[_name])
    sys.modules[f"{__name__}.{_name}"] = _module
    globals()[_name] = _module


def __getattr__(name):
    if name in nn.__all__ and name != "modules":
        return getattr(nn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
