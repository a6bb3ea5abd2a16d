"""What ``torch.compile(module)`` returns: ``OptimizedModule``, the module wrapped.

There is no compiler here (``autograd/compiler.py``), so calling the wrapper calls the module (its hooks
included), with the same values and the same speed. The wrapper is PyTorch's in what programs see of
it: the module is its child ``_orig_mod`` (``getattr(model, "_orig_mod", model)`` unwraps it, and its
``state_dict`` keys begin with ``_orig_mod.``, which checkpoint loaders strip), any other attribute is
read from the module (``compiled.config``, ``compiled.generate``) and written to it (``compiled.flag = True``
sets the module's), and ``training`` is the module's.
"""

from .module import Module

# the wrapper's own attributes (PyTorch's OptimizedModule._opt_mod_attributes, less its compiler's); the
# class's attributes (forward, training, the methods) are its own too
_OWN_ATTRIBUTES = frozenset({"_orig_mod", "__dict__"})


def _on_the_wrapper(register):
    """Module's register_buffer / register_parameter / add_module, registering on the wrapper itself as
    PyTorch's do (they set the attribute, which would otherwise go to the module)."""

    def on_the_wrapper(self, *args, **kwargs):
        object.__setattr__(self, "_registering", True)
        try:
            return register(self, *args, **kwargs)
        finally:
            object.__setattr__(self, "_registering", False)

    on_the_wrapper.__name__, on_the_wrapper.__doc__ = register.__name__, register.__doc__
    return on_the_wrapper


class OptimizedModule(Module):
    """A module as ``autograd.compile`` gives it back (PyTorch's ``torch._dynamo.eval_frame.OptimizedModule``)."""

    def __init__(self, module):
        # first: reads and writes of self's attributes go to the module (Module.__init__ sets training)
        object.__setattr__(self, "_orig_mod", module)
        object.__setattr__(self, "_wrapper_initialized", False)
        super().__init__()
        object.__setattr__(self, "_wrapper_initialized", True)
        self._orig_mod = module  # registered as the child

    def forward(self, *args, **kwargs):
        return self._orig_mod(*args, **kwargs)

    @property
    def training(self):
        return self._orig_mod.training

    @training.setter
    def training(self, mode):
        if self.__dict__.get("_wrapper_initialized"):  # (not Module.__init__'s default: the module's own stays)
            self._orig_mod.training = mode

    def __getattr__(self, name):  # (only for names the wrapper itself does not have)
        original = self.__dict__.get("_orig_mod")
        if original is None:
            raise AttributeError(f"'OptimizedModule' object has no attribute '{name}'")
        return getattr(original, name)

    register_buffer = _on_the_wrapper(Module.register_buffer)
    register_parameter = _on_the_wrapper(Module.register_parameter)
    add_module = register_module = _on_the_wrapper(Module.add_module)

    def __setattr__(self, name, value):
        if name in _OWN_ATTRIBUTES or hasattr(type(self), name) or self.__dict__.get("_registering"):
            super().__setattr__(name, value)
        else:
            setattr(self._orig_mod, name, value)

    def __delattr__(self, name):
        if name in _OWN_ATTRIBUTES or hasattr(type(self), name):
            super().__delattr__(name)
        else:
            delattr(self._orig_mod, name)
