"""``autograd.fx``, as much of ``torch.fx`` as programs touch outside symbolic tracing: ``Proxy`` (to ask whether a
value is one: it never is here) and ``wrap``, which
marks a function (or names one, as a string) to stay a leaf call when a module is traced. chainrule traces
nothing, so the mark changes nothing: the function (or name) comes back as it was, as PyTorch's does for
code that is only run. Libraries (timm's attention and positional embeddings) apply it at import time."""


def wrap(fn_or_name):
    """``@torch.fx.wrap`` or ``torch.fx.wrap("len")``: the function or the name itself."""
    return fn_or_name


class Proxy:
    """``torch.fx.Proxy``, the value a symbolic trace passes through a module in place of a tensor. chainrule traces
    nothing, so nothing is ever one: ``isinstance(x, torch.fx.Proxy)`` (transformers' ``is_torch_fx_proxy``, which
    T5's ``_shift_right`` calls) is False, as for any tensor run eagerly under PyTorch."""
