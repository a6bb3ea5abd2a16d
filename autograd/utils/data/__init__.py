"""``autograd.utils.data``, as ``torch.utils.data`` (minimal: the distributed branch adds only
``DistributedSampler``; the data pipeline's own __init__ replaces this file)."""

from .distributed import DistributedSampler
