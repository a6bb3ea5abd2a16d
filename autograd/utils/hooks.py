"""``autograd.utils.hooks``, as ``torch.utils.hooks``: the hook handles (they live in autograd.hooks,
which ``import autograd, nn, optim`` loads without the rest of autograd.utils)."""

from ..hooks import RemovableHandle, add_hook  # noqa: F401
