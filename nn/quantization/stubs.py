"""``QuantStub`` and ``DeQuantStub``: where a model's quantized region begins and ends. Before conversion
they pass tensors through; ``prepare_qat`` gives a QuantStub an observer (a fake quantizer) like any other
quantizable module, so the model's input is fake-quantized too."""

import nn


class _RegionEdge(nn.Module):
    """An edge of the quantized region: the identity, holding the qconfig it was given."""

    def __init__(self, qconfig=None):
        super().__init__()
        if qconfig:
            self.qconfig = qconfig

    def forward(self, x):
        return x


class QuantStub(_RegionEdge):
    """The start of the quantized region: the identity, observed after ``prepare``/``prepare_qat``."""


class DeQuantStub(_RegionEdge):
    """The end of the quantized region: the identity (never observed)."""


class QuantWrapper(nn.Module):
    """``module`` between a QuantStub and a DeQuantStub (taking the module's qconfig)."""

    def __init__(self, module):
        super().__init__()
        qconfig = getattr(module, "qconfig", None)
        self.add_module("quant", QuantStub(qconfig))
        self.add_module("dequant", DeQuantStub(qconfig))
        self.add_module("module", module)
        self.train(module.training)

    def forward(self, X):
        return self.dequant(self.module(self.quant(X)))
