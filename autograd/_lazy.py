"""Names a module loads on first use (PEP 562), so that ``import autograd, nn, optim`` stays quick.

A module lists, last thing, what it keeps out of its own import and where each name lives
(relative to its package):

    __getattr__, __dir__, __all__ = on_first_use(globals(), {
        "viz": ".viz",            # the submodule autograd.viz
        "Value": ".value:Value",  # the class Value of autograd.value
        **from_module(".serialization", "load", "save"),  # several names of one module
    })

``autograd.viz`` and ``from autograd import load`` then import that module the first time
they are asked for and keep the value in the module (later lookups are plain ones).
``dir()`` lists the names before they are loaded, and ``__all__`` (what ``import *``
takes) is every public name: the module's own and the listed ones. What is loaded, and
when, changes nothing else: every public name stays where it was.
"""

import importlib
import sys

after_load = None  # set once subclasses take part in calls (overrides.install): a function loaded then dispatches


def on_first_use(namespace, names, finished_by_caller=False):
    """The ``__getattr__``, ``__dir__`` and ``__all__`` of the module whose globals are
    ``namespace``, for ``names``: {name: ".module" or ".module:attribute"}. ``finished_by_caller``: the
    module's own ``__getattr__`` wraps what is loaded (autograd's), after_load included."""
    module_name, package = namespace["__name__"], namespace["__package__"]

    def __getattr__(name):
        where = names.get(name)
        if where is None:
            home = _homes.get(f"{module_name}.{name}")  # a package built on this one, registered by it
            if home is None:
                raise AttributeError(f"module {module_name!r} has no attribute {name!r}{_ABOVE.get(name, '')}")
            value = namespace[name] = importlib.import_module(home)
            return value
        source, _, attribute = where.partition(":")
        module = importlib.import_module(source, package)
        value = getattr(module, attribute) if attribute else module
        namespace[name] = value
        if after_load is not None and not finished_by_caller:
            value = namespace[name] = after_load(module_name, name, value)
        return value

    def __dir__():
        return sorted(set(namespace) | set(names))

    public = sorted(name for name in set(namespace) | set(names) if not name.startswith("_"))
    return __getattr__, __dir__, public


def from_module(source, *names):
    """{name: "source:name"} for each name: several names that one module gives."""
    return {name: f"{source}:{name}" for name in names}


_homes = {}  # {a module of autograd: the module of a layer built on autograd that holds its names}
# what an attribute a layer above registers says before that layer is imported (autograd.nn, as torch.nn)
_ABOVE = {name: f": {name} is built on autograd and registers itself as autograd.{name} when imported; import "
                f"{name} first (autograd does not import it)" for name in ("nn", "optim")}


def register_home(module_name, home):
    """Called by a layer built on autograd as it is imported: ``home`` (a module's name) holds the names of
    autograd's module ``module_name`` (see provided_from_above), or is that module itself where the name is an
    attribute of a package of autograd's that on_first_use serves (``autograd.nn`` is ``nn``, as ``torch.nn``).
    Nothing is imported."""
    _homes[module_name] = home


def provided_from_above(namespace, what):
    """The ``__getattr__`` and ``__dir__`` of a module of autograd whose names a layer built on autograd holds
    (``torch.ao.quantization``'s observers are nn.Modules, so nn holds them: autograd does not import nn), as
    that layer registered them (register_home). A name asked for before says which layer to import (``what``)."""
    module_name = namespace["__name__"]

    def __getattr__(name):
        home = _homes.get(module_name)
        if home is None:
            raise AttributeError(f"{module_name}.{name}: {what}")
        try:
            value = getattr(importlib.import_module(home), name)
        except AttributeError:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}") from None
        namespace[name] = value
        return value

    def __dir__():
        home = _homes.get(module_name)
        return sorted(set(namespace) | (set(dir(importlib.import_module(home))) if home else set()))

    return __getattr__, __dir__


DISPATCHING = []  # (namespace, which of its functions) that dispatch once a class takes part: dispatching.py's list


def dispatch_namespace(namespace, wraps=None):
    """``overrides.dispatch_namespace`` (nn.functional, the loss layers) without importing the dispatching machinery
    (overrides.py, dispatching.py), which a program whose classes never take part in calls does not need: the
    namespace waits in DISPATCHING, which dispatching.py takes as its list."""
    dispatching = sys.modules.get(f"{__package__}.dispatching")
    if dispatching is None:
        DISPATCHING.append((namespace, wraps))
    else:
        dispatching.dispatch_namespace(namespace, wraps)


def dispatch_layer_functions(namespace):
    """Each layer class among ``namespace``'s values (a module's globals) that calls the function its class holds
    (``function = staticmethod(F.elu)``, captured before dispatching is installed): that call asks a subclass of
    Tensor or an entered mode as the function does when called itself, and a symbolic trace records it."""
    for layer in [value for value in list(namespace.values()) if isinstance(value, type) and "function" in vars(value)]:
        dispatch_namespace(layer, _is_the_layer_function)


def _is_the_layer_function(name, function):
    return name == "function"
