"""``autograd.backends.cudnn``: PyTorch's ``torch.backends.cudnn`` switches, kept and changing nothing (no cuDNN)."""

enabled = True  # (the switch, as a CPU build of PyTorch reports it: is_available() says there is no cuDNN)
deterministic = False
benchmark = False
allow_tf32 = True


def is_available():
    return False


def version():
    return None
