"""``autograd.jit``: the parts of ``torch.jit`` that ordinary model code reads while it runs eagerly.

Model files written to be scriptable mark things for TorchScript and ask whether they are being
compiled (timm's attention layers, for one)::

    from torch.jit import Final
    class Attention(nn.Module):
        fused_attn: Final[bool]
        ...
        @torch.jit.ignore
        def no_weight_decay(self): ...
        def forward(self, x):
            if torch.jit.is_scripting(): ...

Those markers change nothing when the code runs eagerly, in PyTorch too, so here they are the
identity (``is_scripting`` and ``is_tracing`` are False). There is no TorchScript compiler, so
``script``, ``trace`` and ``load`` raise and say so (``autograd.compile``, which PyTorch 2 programs
use, returns the model unchanged).
"""

from typing import Final  # noqa: F401  (torch.jit.Final, a class attribute's annotation)


def is_scripting():
    """False: code here always runs eagerly, never inside TorchScript."""
    return False


def is_tracing():
    """False: nothing here is being traced."""
    return False


def ignore(drop=False, **kwargs):
    """``@ignore`` or ``@ignore(drop=True)``: leave a function to Python (it always is here)."""
    if callable(drop):  # used bare: @torch.jit.ignore
        return drop
    return lambda fn: fn


def unused(fn):
    """``@unused``: the method is not compiled (nothing is); it is returned as it is."""
    return fn


def export(fn):
    """``@export``: compile this method too (nothing is compiled); it is returned as it is."""
    return fn


def annotate(the_type, the_value):
    """The value itself (TorchScript reads the type; Python needs none)."""
    return the_value


def _no_compiler(name):
    def refuse(*args, **kwargs):
        raise NotImplementedError(f"torch.jit.{name}: chainrule has no TorchScript compiler; run the model or "
                                  "function itself (autograd.compile returns it unchanged)")

    refuse.__name__ = refuse.__qualname__ = name
    refuse.__doc__ = "Not available: there is no TorchScript compiler here (raises NotImplementedError)."
    return refuse


script = _no_compiler("script")
trace = _no_compiler("trace")
trace_module = _no_compiler("trace_module")
load = _no_compiler("load")
save = _no_compiler("save")
freeze = _no_compiler("freeze")
optimize_for_inference = _no_compiler("optimize_for_inference")
