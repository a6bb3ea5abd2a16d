"""``autograd.compiler`` (and ``autograd.compile``): PyTorch 2's ``torch.compiler``, accepted so that
programs run unchanged.

There is no compiler here: ``compile`` gives a function back as it is and a module wrapped as
PyTorch wraps it, calling it unchanged (what torch.compile's "eager" backend does), so results are
the same as without it and nothing runs faster. The rest of ``torch.compiler`` that models and
training loops call follows from that: code is never being compiled or exported
(``is_compiling()`` is False), and the decorators that steer the compiler (``disable``,
``allow_in_graph``, ``assume_constant_result``) return what they decorate."""

__all__ = ["allow_in_graph", "assume_constant_result", "compile", "cudagraph_mark_step_begin", "disable",
           "is_compiling", "is_dynamo_compiling", "is_exporting", "reset"]


def compile(model=None, *, fullgraph=False, dynamic=None, backend="inductor", mode=None, options=None,
            disable=False):
    """A module wrapped as PyTorch's ``OptimizedModule`` (nn's, through the module's own ``_compiled``: its
    child ``_orig_mod`` is the module, and calling it calls the module); a function itself; without ``model``,
    a decorator that returns what it decorates."""
    if model is None:
        return lambda function: function
    wrap = getattr(type(model), "_compiled", None)
    return model if wrap is None else wrap(model)


def is_compiling():
    """False: no code is ever being compiled here."""
    return False


def is_dynamo_compiling():
    """False: no code is ever being traced by a compiler here."""
    return False


def is_exporting():
    """False: no code is ever being exported here."""
    return False


def disable(fn=None, recursive=True, *, reason=None):
    """``fn`` itself (it is never compiled); without ``fn``, a decorator that returns what it decorates."""
    if fn is None:
        return lambda function: function
    return fn


def allow_in_graph(fn):
    """``fn`` itself (a compiler would put it in its graph as one call)."""
    return fn


def assume_constant_result(fn):
    """``fn`` itself (a compiler would call it once and keep its result)."""
    return fn


def reset():
    """Nothing to clear: no compiled code is cached."""


def cudagraph_mark_step_begin():
    """Nothing to mark: no CUDA graphs are recorded."""
