"""``nn.parallel``, as ``torch.nn.parallel``: ``DistributedDataParallel`` over autograd.distributed."""

from .distributed import DistributedDataParallel, consume_prefix_in_state_dict_if_present
