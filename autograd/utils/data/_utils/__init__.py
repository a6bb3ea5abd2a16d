"""``autograd.utils.data._utils``: PyTorch's private package path of the collate functions and of
``get_worker_info``, which older training code imports them from (``from torch.utils.data._utils.collate import
default_collate``)."""

from . import collate, worker  # noqa: F401
