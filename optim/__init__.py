"""chainrule's optim: PyTorch's optimizers and schedulers (``optim`` plays ``torch.optim``)."""

from autograd import _check_ours

_check_ours.check("optim")
