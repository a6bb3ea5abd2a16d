"""``optim.adamw``, as ``torch.optim.adamw``: AdamW is Adam with decoupled weight decay (optim/adam.py);
``adamw`` its functional step."""

from ._functional import adamw
from .adam import AdamW

__all__ = ["AdamW", "adamw"]
