"""``DataParallel``: PyTorch's single-process, multi-GPU wrapper, on a machine without GPUs.

PyTorch's DataParallel splits each batch across the visible GPUs; with none (as here: every tensor
lives on the CPU) it keeps no devices and its forward is the module's own, as PyTorch's is on a
CPU-only machine. State dicts carry the ``module.`` prefix, as PyTorch's do.
For several processes, use ``DistributedDataParallel``.
"""

from ..module import Module


class DataParallel(Module):
    def __init__(self, module, device_ids=None, output_device=None, dim=0):
        super().__init__()
        if not isinstance(module, Module):
            raise TypeError(f"DataParallel wraps an nn.Module, got {type(module).__name__}")
        self.module = module
        self.device_ids = []  # no GPU: PyTorch's DataParallel keeps none, and runs the module as it is

    def forward(self, *inputs, **kwargs):
        return self.module(*inputs, **kwargs)
