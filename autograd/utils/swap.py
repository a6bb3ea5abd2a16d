"""``torch.utils.swap_tensors``: two tensor objects exchange everything they are, so that whatever holds either
(an optimizer's param_groups, a module's attribute) sees the other's class, attributes and values from then on."""

import copyreg


def _slot_descriptors(cls):
    """The member descriptors of every slot a tensor of ``cls`` has (its class's and its bases'), by name; the
    instance dict and weak-reference slots are not values and stay with the object."""
    descriptors = {}
    for klass in reversed(cls.__mro__):
        for name in klass.__dict__.get("__slots__", ()):
            if name not in ("__dict__", "__weakref__"):
                descriptors[name] = klass.__dict__[name]
    return descriptors


def swap_tensors(t1, t2):
    """Swap the Python ``__class__``, ``__dict__`` and slots of ``t1`` and ``t2`` (as PyTorch's, which swaps their
    ``at::Tensor`` too: here a tensor's array, grad_fn, version counter and flags are its slots). PyTorch refuses
    tensors with weak references or other holders of their C++ tensor; chainrule keeps weak references of its own
    (a base's live views), so it checks neither."""
    from ..tensor import Tensor

    if not isinstance(t1, Tensor) or not isinstance(t2, Tensor):
        raise TypeError(f"swap_tensors(): expected two Tensors, but got {type(t1).__name__} and {type(t2).__name__}")
    if set(copyreg._slotnames(type(t1))) != set(copyreg._slotnames(type(t2))):
        raise RuntimeError("Cannot swap t1 and t2 if they have different slots")
    descriptors = _slot_descriptors(type(t1))
    values1 = {name: d.__get__(t1) for name, d in descriptors.items() if _has_slot(d, t1)}
    values2 = {name: d.__get__(t2) for name, d in descriptors.items() if _has_slot(d, t2)}
    class1, class2 = type(t1), type(t2)
    dict1, dict2 = t1.__dict__, t2.__dict__
    t1.__class__, t2.__class__ = class2, class1
    object.__setattr__(t1, "__dict__", dict2)
    object.__setattr__(t2, "__dict__", dict1)
    for target, values in ((t1, values2), (t2, values1)):
        for name, descriptor in descriptors.items():
            if name in values:
                descriptor.__set__(target, values[name])
            elif _has_slot(descriptor, target):
                descriptor.__delete__(target)


def _has_slot(descriptor, obj):
    try:
        descriptor.__get__(obj)
    except AttributeError:
        return False
    return True
