"""``autograd.utils``, as ``torch.utils``: the data pipeline lives in ``autograd.utils.data``."""
