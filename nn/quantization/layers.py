"""``torch.ao.nn``'s layers, which ``autograd.ao.nn`` reads from here: ``qat`` (the layers quantization-aware
training swaps in) and ``intrinsic`` (layers fused for quantization, and their qat forms)."""

from .. import intrinsic, qat  # noqa: F401  (the names autograd.ao.nn gives)
