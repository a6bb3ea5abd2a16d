"""chainrule's nn: PyTorch-shaped modules, layers and losses (``nn`` plays ``torch.nn``)."""

from autograd import _check_ours

_check_ours.check("nn")
