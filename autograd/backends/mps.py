"""``autograd.backends.mps``: PyTorch's ``torch.backends.mps``; there is no Metal device here."""


def is_available():
    return False


def is_built():
    return False
