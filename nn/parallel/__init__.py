"""``nn.parallel``, as ``torch.nn.parallel``: ``DistributedDataParallel`` over autograd.distributed, and
``DataParallel`` (which, without GPUs, runs the module as it is)."""

from .data_parallel import DataParallel
from .distributed import DistributedDataParallel, consume_prefix_in_state_dict_if_present
