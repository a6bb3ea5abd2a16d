"""``autograd.backends.cudnn``: PyTorch's ``torch.backends.cudnn`` switches, kept and changing nothing (no cuDNN)."""

enabled = False
deterministic = False
benchmark = False
allow_tf32 = True


def is_available():
    return False


def version():
    return None
