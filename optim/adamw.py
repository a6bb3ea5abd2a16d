"""``optim.adamw``, as ``torch.optim.adamw``: AdamW is Adam with decoupled weight decay (optim/adam.py)."""

from .adam import AdamW

__all__ = ["AdamW"]
