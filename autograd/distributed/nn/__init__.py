"""``autograd.distributed.nn``, as ``torch.distributed.nn``: collectives that autograd differentiates."""

from .functional import all_gather, all_reduce, broadcast
