"""``autograd.backends``: PyTorch's ``torch.backends``, the switches of the accelerated libraries a program may set
or ask about (``import torch.backends.cudnn as cudnn; cudnn.benchmark = True``). chainrule computes with NumPy (or
CuPy, for "cuda"): there is no cuDNN or MPS here, so each ``is_available()`` is False and the switches are kept,
changing nothing, as on a CPU build of PyTorch."""

from . import cuda, cudnn, mha, mkldnn, mps  # noqa: F401
