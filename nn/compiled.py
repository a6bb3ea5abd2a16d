"""What ``torch.compile(module)`` returns: ``OptimizedModule``, the module wrapped.

There is no compiler here (``autograd/compiler.py``), so calling the wrapper calls the module (its hooks
included), with the same values and the same speed. The wrapper is PyTorch's in what programs see of
it: the module is its child ``_orig_mod`` (``getattr(model, "_orig_mod", model)`` unwraps it, and its
``state_dict`` keys begin with ``_orig_mod.``, which checkpoint loaders strip), and any other attribute is
read from the module (``compiled.config``, ``compiled.generate``).
"""

from .module import Module


class OptimizedModule(Module):
    """A module as ``autograd.compile`` gives it back (PyTorch's ``torch._dynamo.eval_frame.OptimizedModule``)."""

    def __init__(self, module):
        super().__init__()
        self._orig_mod = module
        self.training = module.training

    def forward(self, *args, **kwargs):
        return self._orig_mod(*args, **kwargs)

    def __getattr__(self, name):  # (only for names the wrapper itself does not have)
        original = self.__dict__.get("_orig_mod")
        if original is None:
            raise AttributeError(f"'OptimizedModule' object has no attribute '{name}'")
        return getattr(original, name)
