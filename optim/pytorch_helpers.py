"""What optimizers copied from PyTorch's sources import from ``torch.optim.optimizer``.

A custom AdamW variant starts from PyTorch's adamw.py, and timm's optimizers from its own: these
private names come with them. ``optim.optimizer`` re-exports each, where those imports look for it;
they are here so the Optimizer's own bookkeeping reads in one file. Where a name is about PyTorch's
other implementations (foreach, fused, torch.compile), it says what PyTorch would choose or does
nothing, as there is one implementation here.
"""

import functools

from autograd import Tensor, _lazy, set_grad_enabled
from autograd.backend import float64, get_default_dtype

Args = tuple  # the types PyTorch's annotations name
Kwargs = StateDict = DeviceDict = DeviceDtypeDict = dict
_foreach_supported_types = [Tensor]  # (nn.Parameter is a Tensor subclass here: PyTorch lists both)
# torch.utils._foreach_utils' helpers, which PyTorch's optimizer module has too: on first use (`import optim`
# need not load autograd.utils)
FOREACH_UTILS = ("_get_foreach_kernels_supported_devices", "_get_fused_kernels_supported_devices",
                 "_group_tensors_by_device_and_dtype")
__getattr__, __dir__, _ = _lazy.on_first_use(globals(), {name: f"autograd.utils._foreach_utils:{name}"
                                                         for name in FOREACH_UTILS})
_params_doc = """params (iterable): iterable of parameters or named_parameters to optimize, or iterable of dicts
            defining parameter groups"""
_foreach_doc = """foreach (bool, optional): whether the foreach implementation is used (accepted: one
            implementation here) (default: None)"""
_fused_doc = """fused (bool, optional): whether the fused implementation is used (default: None)"""
_capturable_doc = """capturable (bool, optional): whether this instance is safe to capture in a graph
            (accepted: nothing is captured here) (default: False)"""
_differentiable_doc = """differentiable (bool, optional): whether autograd should occur through the optimizer
            step in training; otherwise step() runs under no_grad (default: False)"""
_maximize_doc = """maximize (bool, optional): maximize the objective with respect to the params, instead of
            minimizing (default: False)"""


def _use_grad_for_differentiable(func):
    """PyTorch's decorator of an optimizer's ``step``: grad mode on only with ``differentiable`` (the
    defaults' flag), restored afterwards."""

    @functools.wraps(func)
    def _use_grad(self, *args, **kwargs):
        with set_grad_enabled(bool(self.defaults["differentiable"])):
            return func(self, *args, **kwargs)

    return _use_grad


def _get_value(x):
    """A 0-d Tensor's number (``step`` kept as a Tensor), anything else as it is."""
    return x.item() if isinstance(x, Tensor) else x


def _stack_if_compiling(x):
    """(PyTorch stacks a list of Tensors under torch.compile; there is no compiling here.)"""
    return x


def _disable_dynamo_if_unsupported(single_tensor_fn=None):
    """(PyTorch's decorator that keeps torch.compile off a functional step; there is nothing to keep off.)"""
    return lambda func: func


def _get_capturable_supported_devices(supports_xla=True):
    return ["cuda", "xpu", "hpu", "privateuseone"] + (["xla"] if supports_xla else [])


def _default_to_fused_or_foreach(params, differentiable, use_fused=False):
    """(fused, foreach) as PyTorch picks them for an optimizer whose user left both None: fused where asked
    for and every parameter is a floating-point Tensor, foreach where every parameter is on an accelerator
    (never on the CPU); neither for ``differentiable``."""
    if differentiable:
        return False, False
    from autograd.utils._foreach_utils import (  # (here: `import optim` need not load nn nor autograd.utils)
        _get_foreach_kernels_supported_devices,
        _get_fused_kernels_supported_devices,
    )
    from nn.parameter import Parameter

    def plain(p):  # a Tensor or a Parameter, not a subclass of its own (PyTorch's _foreach_supported_types)
        return type(p) in (*_foreach_supported_types, Parameter)

    fused = use_fused and all(p is None or plain(p) and p.device.type in _get_fused_kernels_supported_devices()
                              and p.is_floating_point() for p in params)
    foreach = not fused and all(p is None or plain(p) and p.device.type in _get_foreach_kernels_supported_devices()
                                for p in params)
    return fused, foreach


def _device_dtype_check_for_fused(p, cuda_unsupported=False):
    from autograd.utils._foreach_utils import _get_fused_kernels_supported_devices

    devices = [d for d in _get_fused_kernels_supported_devices() if not (cuda_unsupported and d == "cuda")]
    if not (p.device.type in devices and p.is_floating_point()):
        raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of "
                           f"supported devices: {devices} but torch.{p.dtype} and {p.device.type}")  # (PyTorch's dtype)


def _view_as_real(params, *state_and_grads):
    """Each complex tensor of ``params`` (and the same entry of each list in ``state_and_grads``) replaced,
    in the lists, by its (real, imaginary) pairs: a view, so steps on them change the originals."""
    from autograd import view_as_real

    for i, p in enumerate(params):
        if p.is_complex():
            params[i] = view_as_real(params[i])
            for values in state_and_grads:
                values[i] = view_as_real(values[i])


def _get_scalar_dtype(is_fused=None):
    """The dtype of ``step`` and other scalar state: float32, or float64 under a float64 default dtype
    (float32 always for the fused kernels)."""
    import autograd

    if is_fused:
        return autograd.float32
    return autograd.float64 if get_default_dtype() == float64 else autograd.float32


def _to_scalar(x):
    """A 1-element Tensor hyperparameter as a 0-d Tensor; anything else as it is."""
    return x.squeeze() if isinstance(x, Tensor) and x.dim() != 0 else x
