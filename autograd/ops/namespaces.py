"""Binds ``autograd.linalg`` and ``autograd.special`` (torch.linalg's and torch.special's
namespaces) when the ops are imported, so that ``import autograd`` alone gives
``autograd.linalg.norm`` as ``import torch`` gives torch.linalg.norm."""

from .. import linalg, special  # noqa: F401  (importing a submodule sets it on the package)
