"""The class and attributes of a saved tensor: a Tensor subclass (``nn.Parameter``, a program's own) and the
attributes a program set on a tensor come back from ``load`` as they were saved, as PyTorch's pickle gives
them, without ``load`` running code a file chooses.

- The tensor classes of the packages built on autograd (nn registers ``Parameter``: ``register``; the core
  never imports them) are always known. Where such a package is not imported, its tensors load as plain ones,
  requiring grad as they did.
- A program's own subclass is rebuilt where the program allowed it (``add_safe_globals``, as PyTorch asks under
  ``weights_only=True``), or, with ``weights_only=False``, where it is defined in a module the program has
  already imported (found by its name; nothing is imported). Otherwise ``load`` refuses the file in PyTorch's
  words.
- The object is made as PyTorch's ``as_subclass`` makes it, on the loaded memory, without calling the class's
  ``__new__`` or ``__init__``; its attributes are set as they were saved (by its own ``__setstate__`` where it
  has one, as pickle would call it).
"""

import pickle
import sys

from .safe_globals import allowed, global_name, is_allowed
from .tensor import Tensor

_REGISTERED = {}  # a name a file may use -> a Tensor subclass of a package built on autograd


def register(cls, *other_names):
    """Let files name ``cls``, a Tensor subclass of a package built on autograd, by its own name and by
    ``other_names`` (PyTorch's for it: ``torch.nn.parameter.Parameter``). ``clear_safe_globals`` keeps it."""
    for name in (global_name(cls),) + other_names:
        _REGISTERED[name] = cls


def registered(name):
    """The registered class ``name`` stands for, or None (its package is not imported, or it is no such name)."""
    return _REGISTERED.get(name)


def class_record(tensor):
    """What a save records of ``tensor``'s class: {} for a plain Tensor; else its name, and whether a package
    registered it (a file read where that package is not imported then gives a plain tensor)."""
    cls = type(tensor)
    if cls is Tensor:
        return {}
    name = global_name(cls)
    return {"class": name, "registered": True} if _REGISTERED.get(name) is cls else {"class": name}


def saved_attributes(tensor):
    """The attributes the program set on ``tensor`` (its public names: the engine keeps its own state on a tensor
    under underscored ones), which a save records as PyTorch's pickle records a tensor's ``__dict__``; and PyTorch's
    ``_is_param``, the mark of a parameter of another class (``nn.Parameter(MyTensor(...))``: nn/parameter.py)."""
    return {key: value for key, value in vars(tensor).items() if not key.startswith("_") or key == "_is_param"}


def saved_class(name, is_registered, weights_only):
    """The Tensor subclass a file names for a tensor, or None for a plain tensor (a registered class whose
    package is not imported). Refuses (pickle.UnpicklingError) a name the program did not allow."""
    if name in _REGISTERED:
        return _REGISTERED[name]
    if is_registered and not is_allowed(name):
        return None
    cls = defined(name) if not weights_only and not is_allowed(name) else None
    if cls is None:
        cls = allowed(name)  # (refuses in PyTorch's words, naming the class to allow)
    if not (isinstance(cls, type) and issubclass(cls, Tensor)):
        raise pickle.UnpicklingError(f"load: the file names {name} as a tensor's class, which is no Tensor subclass")
    return cls


def defined(name):
    """The Tensor subclass defined as ``name`` (module.qualname) in a module already imported, or None. Read from
    the modules' and classes' own namespaces: nothing is imported and no attribute hook runs."""
    parts = name.split(".")
    for split in range(len(parts) - 1, 0, -1):
        found = sys.modules.get(".".join(parts[:split]))
        if found is None:
            continue
        for part in parts[split:]:
            found = vars(found).get(part) if hasattr(found, "__dict__") else None
        return found if isinstance(found, type) and issubclass(found, Tensor) else None
    return None


def rebuilt(tensor, cls, attributes):
    """``tensor`` (as loaded) as an instance of ``cls`` (None: as it is), on its memory and requiring grad as it
    does, with ``attributes`` set."""
    if cls is not None and cls is not type(tensor):
        tensor = Tensor._make_subclass(cls, tensor, tensor.requires_grad)
    if attributes:
        if getattr(type(tensor), "__setstate__", None) is not None:
            tensor.__setstate__(attributes)
        else:
            tensor.__dict__.update(attributes)
    return tensor
