"""``autograd.backends.cuda``: PyTorch's ``torch.backends.cuda`` precision switches, kept and changing nothing
(``torch.backends.cuda.matmul.allow_tf32 = True``, from training scripts), as on a CPU build of PyTorch; and the
switches of scaled_dot_product_attention's kernels, which PyTorch keeps globally and its CPU kernels obey too
(``enable_flash_sdp(False)``): nn.attention.sdpa_kernel sets them for a block, and with neither the math kernel
nor flash attention enabled the attention raises, as PyTorch's on a CPU."""

import contextlib
import types
import warnings

matmul = types.SimpleNamespace(allow_tf32=False, allow_fp16_reduced_precision_reduction=True,
                               allow_bf16_reduced_precision_reduction=True)


def is_built():
    return False


# each kernel of scaled_dot_product_attention: whether it may run (PyTorch's global flags, all on at the start)
_sdp_enabled = {"flash": True, "mem_efficient": True, "math": True, "cudnn": True, "overrideable": True}
_math_sdp_reduction = {"fp16_bf16": False}


def enable_flash_sdp(enabled):
    _sdp_enabled["flash"] = bool(enabled)


def flash_sdp_enabled():
    return _sdp_enabled["flash"]


def enable_mem_efficient_sdp(enabled):
    _sdp_enabled["mem_efficient"] = bool(enabled)


def mem_efficient_sdp_enabled():
    return _sdp_enabled["mem_efficient"]


def enable_math_sdp(enabled):
    _sdp_enabled["math"] = bool(enabled)


def math_sdp_enabled():
    return _sdp_enabled["math"]


def enable_cudnn_sdp(enabled):
    _sdp_enabled["cudnn"] = bool(enabled)


def cudnn_sdp_enabled():
    return _sdp_enabled["cudnn"]


def allow_fp16_bf16_reduction_math_sdp(enabled):
    _math_sdp_reduction["fp16_bf16"] = bool(enabled)


def fp16_bf16_reduction_math_sdp_allowed():
    return _math_sdp_reduction["fp16_bf16"]


@contextlib.contextmanager
def sdp_kernel(enable_flash=True, enable_math=True, enable_mem_efficient=True, enable_cudnn=True):
    """The older form of ``nn.attention.sdpa_kernel``: within the block only the kernels enabled here may run
    (deprecated, with PyTorch's FutureWarning)."""
    warnings.warn("`torch.backends.cuda.sdp_kernel()` is deprecated. In the future, this context manager will be "
                  "removed. Please see `torch.nn.attention.sdpa_kernel()` for the new context manager, with updated "
                  "signature.", FutureWarning, stacklevel=3)
    previous = dict(_sdp_enabled)
    _sdp_enabled.update(flash=bool(enable_flash), math=bool(enable_math), mem_efficient=bool(enable_mem_efficient),
                        cudnn=bool(enable_cudnn), overrideable=False)
    try:
        yield {}
    finally:
        _sdp_enabled.update(previous)
