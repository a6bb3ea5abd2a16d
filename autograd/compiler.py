"""``autograd.compile``: PyTorch 2's ``torch.compile``, accepted so that programs run unchanged.

There is no compiler here: the function or module comes back as it is (what torch.compile's
"eager" backend does), so results are the same as without it and nothing runs faster."""


def compile(model=None, *, fullgraph=False, dynamic=None, backend="inductor", mode=None, options=None,
            disable=False):
    """``model`` itself; without it, a decorator that returns what it decorates."""
    if model is None:
        return lambda function: function
    return model


def is_compiling():
    """False: nothing here is ever being compiled (``torch.compiler.is_compiling``)."""
    return False


is_dynamo_compiling = is_compiling


def disable(fn=None, recursive=True, *, reason=None):
    """``@torch.compiler.disable``: keep a function out of compilation; with no compiler it is returned
    as it is (used bare or called with options)."""
    if fn is None:
        return lambda function: function
    return fn
