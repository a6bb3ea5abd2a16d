"""Binds ``autograd.linalg`` (torch.linalg's namespace) when the ops are imported, so that
``import autograd`` alone gives ``autograd.linalg.norm`` as ``import torch`` gives torch.linalg."""

from .. import linalg  # noqa: F401  (importing a submodule sets it on the package)
