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

import inspect
import sys
import types

import numpy

from ..errors import not_a_tensor

METHODS = {}  # Tensor method name -> function(tensor, *args, **kwargs)
FUNCTIONS = {}  # autograd.<name> -> function(*args, **kwargs)
INPLACE = {}  # Tensor in-place method name (exp_) -> the out-of-place function it writes back
CLASHES = []  # names two ops both declared (a test keeps this empty)


def _declare(table, name, call):
    if name in table and table[name] is not call:
        CLASHES.append(name)
    table[name] = call


def names(*method_names, function=True, method=True, inplace=None, functions=()):
    """Register the decorated op under ``method_names``: as Tensor methods (``method``),
    as ``autograd`` functions (``function``; ``functions`` adds function-only names),
    and, with ``inplace``, as an in-place Tensor method that writes the result back."""

    def register(op):
        call = _numpy_aliases(_applying(op) if isinstance(op, type) else op)
        for name in method_names:
            if method:
                _declare(METHODS, name, call)
            if function and not name.startswith("_"):  # operators and private helpers are methods only
                _declare(FUNCTIONS, name, call)
        for name in functions:
            _declare(FUNCTIONS, name, call)
        for name in (inplace,) if isinstance(inplace, str) else (inplace or ()):
            _declare(INPLACE, name, call)
        return op

    return register


_ALIASED = {}  # op -> its wrapper taking NumPy's keywords (one per op, so a name declared twice is one call)


def _numpy_aliases(op):
    """PyTorch accepts NumPy's ``axis`` for ``dim`` and ``keepdims`` for ``keepdim`` wherever an
    op takes them (``y_hat.argmax(axis=1)``); an op whose signature has ``dim`` but no ``axis``
    gets a wrapper that renames them."""
    if op in _ALIASED:
        return _ALIASED[op]
    parameters = parameter_names(op)
    renames = {alias: name for alias, name in (("axis", "dim"), ("keepdims", "keepdim"))
               if name in parameters and alias not in parameters}
    if not renames:
        return op

    def call(*args, **kwargs):
        if kwargs:
            for alias, name in renames.items():
                if alias in kwargs:
                    if name in kwargs:
                        raise TypeError(f"{op.__name__}() got both '{name}' and its alias '{alias}'")
                    kwargs[name] = kwargs.pop(alias)
        return op(*args, **kwargs)

    _ALIASED[op] = _standing_for(call, op)
    return _ALIASED[op]


def taking_numpy_keywords(namespace, public):
    """Every function among ``public`` in the module namespace ``namespace`` (its ``globals()``) replaced by one
    taking NumPy's ``axis``/``keepdims`` as well, as PyTorch's argument parser gives them to torch.linalg, torch.fft
    and torch.special as to torch's own functions (``torch.linalg.norm(c, axis=0)``); each stays findable by pickle
    under its name there."""
    for name in public:
        aliased = _numpy_aliases(namespace[name])
        if aliased is not namespace[name]:
            namespace[name] = pickled_by_name(aliased, namespace["__name__"], name)


def refusing_arrays(function):
    """``function`` as ``autograd.<name>``: when its first parameter is PyTorch's ``input`` (a Tensor), a NumPy
    array given there is refused with a TypeError naming it and the fix, as PyTorch refuses it ("must be
    Tensor, not numpy.ndarray"), rather than failing deep inside or being computed by NumPy alone; a tuple,
    list or number there that fails as a tensor (an LSTM's (output, state)) is that TypeError too."""
    parameters = parameter_names(inspect.unwrap(function))  # (unwrapped: read off its code, quickly)
    if not parameters or next(iter(parameters)) != "input":
        return function

    def call(*args, **kwargs):
        first = args[0] if args else kwargs.get("input")
        if isinstance(first, numpy.ndarray):
            raise not_a_tensor(f"autograd.{function.__name__}", 0, first)
        try:
            return function(*args, **kwargs)
        except AttributeError as error:  # a tuple, list or number read as the input tensor: PyTorch's TypeError
            if isinstance(first, (tuple, list, int, float)) and str(error).startswith(
                    f"'{type(first).__name__}' object has no attribute"):
                raise not_a_tensor(f"autograd.{function.__name__}", 0, first) from error
            raise

    return _standing_for(call, function)


def keyword_overload(keyword):
    """For an op PyTorch overloads with a form taking ``keyword`` and every other argument after the tensor by
    keyword (``sort(input, *, stable, dim=-1, descending=False)`` beside ``sort(input, dim=-1, descending=False)``):
    ``keyword`` beside an argument given by position is refused with PyTorch's TypeError, as its parser matches
    neither form. The op keeps the signature PyTorch documents."""

    def wrap(op):
        def call(input, *args, **kwargs):
            if args and keyword in kwargs:
                raise TypeError(f"{op.__name__}() received an invalid combination of arguments - got {len(args)} "
                                f"positional argument(s) after the tensor and {keyword}=: PyTorch's "
                                f"{op.__name__}(input, *, {keyword}, ...) takes every other argument by keyword")
            return op(input, *args, **kwargs)

        return _standing_for(call, op)

    return wrap


def refusing_none(parameter):
    """For an op whose default ``parameter=None`` stands for PyTorch's overload without it (``median(input)`` beside
    ``median(input, int dim, bool keepdim=False)``): a None given for it, by position or keyword, is refused with
    PyTorch's TypeError, as its parser matches neither overload, rather than read as the one without."""

    def wrap(op):
        position = parameter_names(op).index(parameter)

        def call(*args, **kwargs):
            if (args[position] if len(args) > position else kwargs.get(parameter, 0)) is None:
                raise TypeError(f"{op.__name__}(): argument '{parameter}' must be int, not NoneType (leave it out "
                                f"for {op.__name__}(input) over every element)")
            return op(*args, **kwargs)

        return _standing_for(call, op)

    return wrap


def pickled_by_name(function, module_name, name):
    """``function``, findable by pickle (which stores a function as its module and qualified name) under
    ``module_name.name`` where its own names lead elsewhere: a wrapper here claims its op's names, and a function
    made in a factory has names pickle cannot follow. So an augmentation holding ``autograd.flip`` goes to a
    spawned worker, as PyTorch's does."""
    found = sys.modules.get(getattr(function, "__module__", None) or "")
    for part in (getattr(function, "__qualname__", None) or "<none>").split("."):
        found = getattr(found, part, None)
    if found is not function:
        function.__module__, function.__qualname__ = module_name, name
    return function


def _standing_for(call, function):
    """``call``, a wrapper of ``function``, named and documented as it is (functools.wraps, without its
    cost: every declared op's function passes here at import)."""
    call.__name__, call.__qualname__, call.__doc__ = function.__name__, function.__qualname__, function.__doc__
    call.__module__, call.__wrapped__ = function.__module__, function
    return call


def parameter_names(op):
    """The names of ``op``'s parameters, in ``inspect.signature``'s order. A plain function's, or a wrapper's
    (``functools.wraps``) of one, are read off its code object: every declared op and every layer class passes
    here at import, and ``inspect.signature`` would cost milliseconds in all."""
    function = inspect.unwrap(op, stop=_has_signature) if hasattr(op, "__wrapped__") else op
    code = getattr(function, "__code__", None)
    if type(function) is types.FunctionType and code is not None and not _has_signature(function):
        positional, keyword_only = code.co_argcount, code.co_kwonlyargcount
        names = code.co_varnames[:positional]  # then *args, the keyword-only ones and **kwargs, as signature lists them
        rest = positional + keyword_only
        if code.co_flags & inspect.CO_VARARGS:
            names += (code.co_varnames[rest],)
            rest += 1
        names += code.co_varnames[positional:positional + keyword_only]
        if code.co_flags & inspect.CO_VARKEYWORDS:
            names += (code.co_varnames[rest],)
        return names
    try:
        return tuple(inspect.signature(op).parameters)
    except (TypeError, ValueError):  # a property, a builtin without a signature
        return ()


def _has_signature(function):
    return hasattr(function, "__signature__")


def _applying(primitive):
    """A plain function running ``primitive.apply`` (a bound classmethod would not bind as a method)."""

    def apply(*args, **kwargs):
        return primitive.apply(*args, **kwargs)

    apply.__name__ = primitive.__name__.lower()
    apply.__doc__ = primitive.__doc__
    return apply
