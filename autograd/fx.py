"""``autograd.fx``, as much of ``torch.fx`` as programs touch outside symbolic tracing: ``wrap``, which
marks a function (or names one, as a string) to stay a leaf call when a module is traced. chainrule traces
nothing, so the mark changes nothing: the function (or name) comes back as it was, as PyTorch's does for
code that is only run. Libraries (timm's attention and positional embeddings) apply it at import time."""


def wrap(fn_or_name):
    """``@torch.fx.wrap`` or ``torch.fx.wrap("len")``: the function or the name itself."""
    return fn_or_name
