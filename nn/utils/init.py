"""``nn.utils.skip_init``: a module whose parameters and buffers are left uninitialised."""

import inspect


def skip_init(module_cls, *args, **kwargs):
    """``module_cls(*args, **kwargs)`` with its parameters and buffers left uninitialised, for code that will
    load or initialise them itself, as PyTorch's: built on the meta device (no memory, no initialisation: no
    numbers drawn) and given memory by ``to_empty`` on ``device`` (the CPU by default). The class must take a
    ``device`` argument, as PyTorch requires."""
    from ..module import Module  # (nn.utils is imported by nn's package before the layers)

    if not (isinstance(module_cls, type) and issubclass(module_cls, Module)):
        raise RuntimeError(f"Expected a Module; got {module_cls}")
    if "device" not in inspect.signature(module_cls).parameters:
        raise RuntimeError("Module must support a 'device' arg to skip initialization")
    final_device = kwargs.pop("device", "cpu")
    kwargs["device"] = "meta"
    return module_cls(*args, **kwargs).to_empty(device=final_device)
