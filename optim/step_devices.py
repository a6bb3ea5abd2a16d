"""PyTorch's checks at the step of a ``fused`` or ``capturable`` parameter group (``Optimizer.step`` and the
functional forms run them; there is one implementation here, on the CPU, so they only refuse)."""

from .pytorch_helpers import _device_dtype_check_for_fused, _get_capturable_supported_devices


def check_step_devices(optimizer, group, params):
    """The checks over the parameters the step takes (those with a gradient; the functional forms' all). A fused
    kernel takes floating-point tensors on its devices (the CPU among them): RuntimeError for a complex or integer
    one. ``capturable`` (a step safe to capture in a CUDA graph) asks for tensors on an accelerator, which PyTorch
    asserts: on the CPU, its AssertionError (not with ``fused`` too, whose path checks only its own devices). Which
    of PyTorch's messages: the optimizer's ``capturable_tensors`` and ``capturable_xla``."""
    if group.get("fused"):
        for p in params:
            _device_dtype_check_for_fused(p)
        return
    devices = _get_capturable_supported_devices(optimizer.capturable_xla[bool(group.get("foreach"))])
    for p in params:
        if p.device.type not in devices:
            raise AssertionError(f"If capturable=True, {optimizer.capturable_tensors} must be on supported devices: "
                                 f"{devices}. (A parameter of shape {tuple(p.shape)} is on {p.device}: leave "
                                 "capturable False on the CPU.)")
