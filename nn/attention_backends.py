"""``nn.attention.SDPBackend`` and ``sdpa_kernel``: which of PyTorch's attention kernels
``scaled_dot_product_attention`` may use. chainrule has one computation, the math kernel's; PyTorch
on a CPU runs MATH or FLASH_ATTENTION, and so does chainrule (both as MATH), refusing, as PyTorch
does there, when neither is enabled."""

import contextlib
import enum

from autograd.backends import cuda as kernel_switches


class SDPBackend(enum.Enum):
    """PyTorch's attention kernels, for ``sdpa_kernel``."""

    ERROR = -1
    MATH = 0
    FLASH_ATTENTION = 1
    EFFICIENT_ATTENTION = 2
    CUDNN_ATTENTION = 3
    OVERRIDEABLE = 4


# each kernel's switch in autograd.backends.cuda (PyTorch's global flags, which sdpa_kernel sets)
_SWITCH = {SDPBackend.MATH: "math", SDPBackend.FLASH_ATTENTION: "flash",
           SDPBackend.EFFICIENT_ATTENTION: "mem_efficient", SDPBackend.CUDNN_ATTENTION: "cudnn",
           SDPBackend.OVERRIDEABLE: "overrideable"}
_RUNNABLE = {SDPBackend.MATH, SDPBackend.FLASH_ATTENTION}  # the kernels PyTorch has on a CPU


def _enabled_backends():
    return {backend for backend, switch in _SWITCH.items() if kernel_switches._sdp_enabled[switch]}


@contextlib.contextmanager
def sdpa_kernel(backends, set_priority=False):
    """Within the block, scaled_dot_product_attention may use only ``backends`` (one or a list);
    without MATH or FLASH_ATTENTION among them it raises, as PyTorch's does on a CPU."""
    if not isinstance(backends, (list, SDPBackend)):
        raise AssertionError("Backend must be an instance of SDPBackend or a list of SDPBackend instances, "
                             f"got {type(backends).__name__}")
    chosen = {backends} if isinstance(backends, SDPBackend) else set(backends)
    previous = dict(kernel_switches._sdp_enabled)
    kernel_switches._sdp_enabled.update({switch: backend in chosen for backend, switch in _SWITCH.items()})
    try:
        yield {}
    finally:
        kernel_switches._sdp_enabled.update(previous)


def flash_attention_takes(query, key, value, attn_mask, dropout_p):
    """Whether PyTorch's CPU flash-attention kernel would take this call (sdp_utils_cpp's
    use_flash_attention_cpp); unlike the math kernel it applies an attn_mask together with is_causal.
    Its conditions: enabled, 4-D query, key and value with one head size and unit last stride, no
    dropout, and no mask, or a 2-D or 4-D one that broadcasts to (batch, heads, L, S) without grad."""
    if not kernel_switches.flash_sdp_enabled() or dropout_p > 0.0:
        return False
    if not query.ndim == key.ndim == value.ndim == 4 or not query.shape[-1] == key.shape[-1] == value.shape[-1]:
        return False
    if any(t.stride(-1) != 1 for t in (query, key, value)) or 0 in (query.shape[-2], key.shape[-2]):
        return False
    if attn_mask is None:
        return True
    (batch, heads, L, _), S = query.shape, key.shape[-2]
    shape = attn_mask.shape
    if attn_mask.requires_grad or attn_mask.ndim not in (2, 4) or shape[-2] not in (L, 1) or shape[-1] not in (S, 1):
        return False
    return attn_mask.ndim == 2 or (shape[0] in (1, batch) and shape[1] in (1, heads))


def check_a_kernel_runs():
    """Raise, as PyTorch on a CPU, where sdpa_kernel enabled neither MATH nor FLASH_ATTENTION."""
    if not _enabled_backends() & _RUNNABLE:
        raise RuntimeError("No viable backend for scaled_dot_product_attention was found. This is likely due to "
                           "turning off both the math kernel and the fused kernels.")
