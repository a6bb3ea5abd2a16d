"""``torch.utils._foreach_utils``: the helpers optimizers written against PyTorch import to batch their
foreach calls (``_group_tensors_by_device_and_dtype``, ``_has_foreach_support``, ...). There is one
implementation of each ``_foreach_*`` op here, on the CPU; these say what PyTorch's would choose."""

from typing import TypeAlias

from autograd import Tensor

TensorListList: TypeAlias = list[list[Tensor | None]]
Indices: TypeAlias = list[int]
_foreach_supported_types = [Tensor]  # (nn.Parameter is a Tensor subclass here: PyTorch lists both)


def _get_foreach_kernels_supported_devices():
    """The device types with foreach kernels in PyTorch (the CPU runs its loop over single tensors)."""
    return ["cuda", "xpu", "mtia", "privateuseone"]


def _get_fused_kernels_supported_devices():
    return ["mps", "cuda", "xpu", "hpu", "cpu", "mtia", "privateuseone"]


def _group_tensors_by_device_and_dtype(tensorlistlist, with_indices=False):
    """{(device, dtype): (the lists restricted to the tensors of the first list on that device with that dtype,
    their indices where ``with_indices``, else [])}, as PyTorch's foreach paths group tensors before each batched
    call (an empty list, such as max_exp_avg_sqs without amsgrad, stays empty in every group)."""
    groups = {}
    for i, first in enumerate(tensorlistlist[0]):
        key = (first.device, first.dtype)
        lists, indices = groups.setdefault(key, ([[] for _ in tensorlistlist], []))
        for values, group_values in zip(tensorlistlist, lists):
            if values:
                group_values.append(values[i])
        if with_indices:
            indices.append(i)
    return groups


def _device_has_foreach_support(device):
    """Whether PyTorch runs ``_foreach_*`` ops batched on ``device`` (a ``torch.device``): the CPU too."""
    return device.type in _get_foreach_kernels_supported_devices() + ["cpu"]


def _has_foreach_support(tensors, device):
    """Whether every tensor (None allowed) is a plain Tensor, on a device that supports foreach ops."""
    return _device_has_foreach_support(device) and all(
        t is None or type(t) in _foreach_supported_types for t in tensors)
