"""Whether operations are recorded: the switches live in ``autograd.graph`` (one owner, per
thread); this module keeps their old import path."""

from .graph import enable_grad, inference_mode, is_grad_enabled, no_grad, set_grad_enabled  # noqa: F401
