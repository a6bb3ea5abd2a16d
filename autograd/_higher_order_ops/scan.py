"""``torch._higher_order_ops.scan``: ``scan`` (``autograd.control_flow.scan``)."""

from ..control_flow import scan

__all__ = ["scan"]
