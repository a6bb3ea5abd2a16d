"""``autograd.utils.data._utils``: PyTorch's private package path of the collate functions, which older
training code imports them from (``from torch.utils.data._utils.collate import default_collate``)."""

from . import collate  # noqa: F401
