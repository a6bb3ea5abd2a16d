"""``autograd.backends.mkldnn``: PyTorch's ``torch.backends.mkldnn`` switch, kept and changing nothing (chainrule
computes with NumPy: no oneDNN here)."""

enabled = True  # (the switch, as PyTorch reports it)


def is_available():
    return False
