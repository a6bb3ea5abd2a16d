"""The program's own classes and functions that a loaded file may name: PyTorch's ``add_safe_globals``.

``load`` never runs code a file chooses. A checkpoint that holds an object of the program's own class
(a config dataclass, an enum, a named tuple) names that class; ``load`` rebuilds the object only when
the program has allowed the class here, as ``torch.load(weights_only=True)`` does:

    autograd.serialization.add_safe_globals([TrainConfig])
    checkpoint = autograd.load("run.pt")            # checkpoint["config"] is a TrainConfig again

A name is the class's ``module.qualname`` (``__main__.TrainConfig``), or the one given with it as
``(TrainConfig, "name")``. The allowed objects themselves are what ``load`` uses: it never imports a
module a file names.
"""

import pickle

_ALLOWED = {}  # name -> the class or function the program allowed


def global_name(obj):
    return f"{obj.__module__}.{obj.__qualname__}"


def add_safe_globals(safe_globals):
    """Allow each class or function (or ``(object, name)`` pair) of the list to be named by loaded files."""
    for entry in safe_globals:
        obj, name = entry if isinstance(entry, tuple) else (entry, global_name(entry))
        _ALLOWED[name] = obj


def get_safe_globals():
    return [obj if global_name(obj) == name else (obj, name) for name, obj in _ALLOWED.items()]


def clear_safe_globals():
    _ALLOWED.clear()


class safe_globals:  # noqa: N801  (PyTorch's name: a context manager)
    """``with safe_globals([TrainConfig]): load(...)``: the objects are allowed inside the block only."""

    def __init__(self, safe_globals):
        self.safe_globals = safe_globals

    def __enter__(self):
        self._before = dict(_ALLOWED)
        add_safe_globals(self.safe_globals)

    def __exit__(self, *exc_info):
        _ALLOWED.clear()
        _ALLOWED.update(self._before)


def allowed(name):
    """The object allowed under ``name``, or PyTorch's refusal naming what to allow."""
    if name in _ALLOWED:
        return _ALLOWED[name]
    short = name.rpartition(".")[2]
    raise pickle.UnpicklingError(
        f"Weights only load failed. Unsupported global: GLOBAL {name} was not an allowed global by default. Please "
        f"use `autograd.serialization.add_safe_globals([{short}])` or the "
        f"`autograd.serialization.safe_globals([{short}])` context manager to allowlist this global if you trust "
        "this class/function. (chainrule's load never imports or runs what a file names by itself, with "
        "weights_only=False too.)")


def is_allowed(name):
    return name in _ALLOWED
