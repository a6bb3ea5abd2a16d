"""``autograd.utils.data._utils.collate``: the collate functions under PyTorch's private path."""

from ..collate import default_collate, default_convert

__all__ = ["default_collate", "default_convert"]
