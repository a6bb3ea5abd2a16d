"""Which Tensor methods and ``autograd`` functions each op provides.

An op declares its public names where it is defined, so adding an op is one
edit in one file and ``tensor.py`` keeps no list of forwarders:

    @names("exp", inplace="exp_")
    def exp(x):
        return Exp.apply(x)

gives ``x.exp()``, ``autograd.exp(x)`` and the in-place ``x.exp_()``. A
``Primitive`` subclass may be decorated directly; its ``apply`` is bound.
``autograd.ops`` binds every declared name once all op modules are imported.
"""

METHODS = {}  # Tensor method name -> function(tensor, *args, **kwargs)
FUNCTIONS = {}  # autograd.<name> -> function(*args, **kwargs)
INPLACE = {}  # Tensor in-place method name (exp_) -> the out-of-place function it writes back


def names(*method_names, function=True, method=True, inplace=None, functions=()):
    """Register the decorated op under ``method_names``: as Tensor methods (``method``),
    as ``autograd`` functions (``function``; ``functions`` adds function-only names),
    and, with ``inplace``, as an in-place Tensor method that writes the result back."""

    def register(op):
        call = op.apply if isinstance(op, type) else op
        for name in method_names:
            if method:
                METHODS[name] = call
            if function:
                FUNCTIONS[name] = call
        for name in functions:
            FUNCTIONS[name] = call
        for name in (inplace,) if isinstance(inplace, str) else (inplace or ()):
            INPLACE[name] = call
        return op

    return register
