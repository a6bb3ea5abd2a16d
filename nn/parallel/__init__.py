"""``nn.parallel``, as ``torch.nn.parallel``: ``DistributedDataParallel`` over autograd.distributed, and
``DataParallel`` (which, without GPUs, runs the module as it is)."""

from .data_parallel import DataParallel
from .distributed import DistributedDataParallel


def __getattr__(name):
    # nn.modules.utils' function under this name too, imported on first use (nn.modules loads every layer)
    if name == "consume_prefix_in_state_dict_if_present":
        from ..modules.utils import consume_prefix_in_state_dict_if_present

        return consume_prefix_in_state_dict_if_present
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
