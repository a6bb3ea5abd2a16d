"""``autograd.utils.weak``, as ``torch.utils.weak``: a dictionary that holds its keys weakly and tells them apart by
identity (``WeakIdKeyDictionary``, alias ``WeakTensorKeyDictionary``).

The standard library's ``weakref.WeakKeyDictionary`` finds a key by ``hash`` and ``==``, and ``==`` of two tensors
is a tensor of elementwise answers, not a bool. Here each key is kept as a ``WeakIdRef``: a weak reference hashed
by the id of what it refers to and equal to another only when both refer to the very same object. An entry goes
away when its key is collected (the reference's callback removes it); a key collected while the dictionary is being
iterated is removed when the last iteration ends, so that the underlying dict never changes size under a loop.
"""

import weakref
from collections.abc import Mapping, MutableMapping

__all__ = ["TensorWeakRef", "WeakIdRef", "WeakIdKeyDictionary", "WeakTensorKeyDictionary"]

WeakRef = weakref.ref


class WeakIdRef(weakref.ref):
    """A weak reference hashed by the id of its referent and equal to another reference only when both refer to
    the same live object (two dead references only when they are the same reference: a new object may reuse a
    dead one's id)."""

    __slots__ = ("_id",)

    def __init__(self, key, callback=None):
        self._id = id(key)  # (kept: the hash must not change when the referent dies)
        super().__init__(key, callback)

    def __hash__(self):
        return self._id

    def __eq__(self, other):
        mine, theirs = self(), other()
        if mine is not None and theirs is not None:
            return mine is theirs
        return self is other


class WeakIdKeyDictionary(MutableMapping):
    """A mapping from objects (tensors, most often) to values that does not keep its keys alive and compares keys
    by identity. ``data`` is the plain dict underneath, keyed by ``WeakIdRef``."""

    def __init__(self, dict=None):  # noqa: A002  (PyTorch's name for the argument)
        self.data = {}
        self._iterations = 0  # loops over self.data now running (removals wait for the last to end)
        self._pending_removals = []  # references whose referents died during a loop

        dictionary_ref = weakref.ref(self)  # (the callback must not keep the dictionary alive)

        def forget(reference):
            dictionary = dictionary_ref()  # (the dictionary may have gone before its keys)
            if dictionary is None:
                return
            if dictionary._iterations:
                dictionary._pending_removals.append(reference)
            else:
                dictionary.data.pop(reference, None)

        self._forget = forget
        if dict is not None:
            self.update(dict)

    def _live_items(self):
        """(key, value) for each entry whose key is alive, with removals held back until the loop ends."""
        self._iterations += 1
        try:
            for reference, value in self.data.items():
                key = reference()
                if key is not None:
                    yield key, value
        finally:
            self._iterations -= 1
            if not self._iterations:
                while self._pending_removals:
                    self.data.pop(self._pending_removals.pop(), None)

    # -- the mapping ----------------------------------------------------------------

    def __getitem__(self, key):
        return self.data[WeakIdRef(key)]

    def __setitem__(self, key, value):
        self.data[WeakIdRef(key, self._forget)] = value

    def __delitem__(self, key):
        del self.data[WeakIdRef(key)]

    def __contains__(self, key):
        try:
            reference = WeakIdRef(key)
        except TypeError:  # (no weak reference to it can exist, so it is no key)
            return False
        return reference in self.data

    def __len__(self):
        return len(self.data) - len({reference for reference in self._pending_removals if reference in self.data})

    def get(self, key, default=None):
        return self.data.get(WeakIdRef(key), default)

    def setdefault(self, key, default=None):
        return self.data.setdefault(WeakIdRef(key, self._forget), default)

    def pop(self, key, *default):
        return self.data.pop(WeakIdRef(key), *default)

    def popitem(self):
        """The last entry inserted whose key is alive, removed (KeyError when there is none)."""
        while True:
            reference, value = self.data.popitem()
            key = reference()
            if key is not None:
                return key, value

    def items(self):
        return self._live_items()

    def keys(self):
        return (key for key, _ in self._live_items())

    __iter__ = keys

    def values(self):
        return (value for _, value in self._live_items())

    def keyrefs(self):
        """The weak references to the keys (each may be dead by the time it is called)."""
        return list(self.data)

    # -- copies, unions, comparison --------------------------------------------------

    def copy(self):
        """A new dictionary holding the same keys (weakly) and the same values."""
        new = WeakIdKeyDictionary()
        for key, value in self._live_items():
            new[key] = value
        return new

    __copy__ = copy

    def __deepcopy__(self, memo):
        """The same keys (keys are not copied: they are identities), the values deep-copied."""
        from copy import deepcopy

        new = type(self)()
        for key, value in self._live_items():
            new[key] = deepcopy(value, memo)
        return new

    def __or__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        union = self.copy()
        union.update(other)
        return union

    def __ror__(self, other):
        if not isinstance(other, Mapping):
            return NotImplemented
        union = type(self)()
        union.update(other)
        union.update(self)
        return union

    def __ior__(self, other):
        self.update(other)
        return self

    def __eq__(self, other):
        """Equal to a mapping with the same keys (by identity) and equal values."""
        if not isinstance(other, Mapping):
            return NotImplemented
        return {id(key): value for key, value in self.items()} == {id(key): value for key, value in other.items()}

    __hash__ = None

    def __repr__(self):
        return f"<{type(self).__name__} at {id(self):#x}>"


WeakTensorKeyDictionary = WeakIdKeyDictionary


class TensorWeakRef:
    """A weak reference to a tensor: calling it gives the tensor, or None once it is gone."""

    def __init__(self, tensor):
        from autograd import Tensor

        assert isinstance(tensor, Tensor)
        self.ref = weakref.ref(tensor)

    def __call__(self):
        return self.ref()
