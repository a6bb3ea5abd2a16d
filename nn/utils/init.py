"""``nn.utils.skip_init``: a module whose parameters and buffers are left uninitialised."""


def skip_init(module_cls, *args, **kwargs):
    """``module_cls(*args, **kwargs)`` with its parameters and buffers replaced by uninitialised
    memory, for code that will load or initialise them itself. PyTorch builds the module on its
    meta device (no memory, no initialisation) and then allocates it with ``to_empty``; there is
    no meta device here, so the module's own initialisation runs and its values are thrown away:
    the same result, at the cost of that initialisation. ``device=`` is passed to the class only
    when given (PyTorch requires the class to accept it)."""
    device = kwargs.get("device", None)
    return module_cls(*args, **kwargs).to_empty(device=device)
