"""``autograd.utils``, as ``torch.utils``: the data pipeline lives in ``autograd.utils.data``."""

from . import data, hooks  # noqa: F401  (autograd.utils.data after import autograd, as torch.utils.data)
