"""A module's registries (``_parameters``, ``_buffers``, ``_modules``): dicts that keep the module's attributes
in step with what is written into them, as PyTorch's module computes with what its registries hold."""

import weakref


class Registry(dict):
    """A module's ``_parameters``, ``_buffers`` or ``_modules``. The module reads its members as plain
    attributes (kept in its ``__dict__``: reading them is the hot path), and programs written for PyTorch
    also write these dicts directly (learn2learn's ``module._parameters[name] = updated`` in MAML, AWD-LSTM's
    ``del rnn._parameters['weight_hh_l0']``, ModuleDict's ``del``): each write here keeps that attribute in
    step, so the module computes with what its registry holds, as PyTorch's."""

    __slots__ = ("_owner",)

    def __init__(self, owner=None, entries=None, set_attributes=True):
        """owner's registry, holding ``entries`` (a dict a program assigned in its place, whose members then
        become the module's attributes; an older pickle's, whose attributes are there already)."""
        super().__init__()
        self.tie(owner)
        if entries:
            dict.update(self, entries)
            if set_attributes:
                for name, value in entries.items():
                    self._attribute_set(name, value)

    def tie(self, owner):
        # (weakly: a strong reference would make every module a reference cycle, freed only by the collector)
        self._owner = None if owner is None else weakref.ref(owner)

    def __reduce__(self):
        # a copy or a pickle holds the entries only; Module.__setstate__ ties it to its new module (tie)
        return type(self), (), None, None, iter(self.items())

    def _module(self):
        return None if self._owner is None else self._owner()

    def _attribute_set(self, name, value):
        owner = self._module()
        if owner is not None and isinstance(name, str):
            object.__setattr__(owner, name, value)
            if owner.__dict__.get("_buffers") is self:
                owner._buffer_names_set().add(name)

    def _attribute_dropped(self, name):
        owner = self._module()
        if owner is not None and isinstance(name, str):
            owner.__dict__.pop(name, None)
            if owner.__dict__.get("_buffers") is self:
                owner._buffer_names_set().discard(name)
                owner._non_persistent.discard(name)

    def __setitem__(self, name, value):
        super().__setitem__(name, value)
        self._attribute_set(name, value)

    def __delitem__(self, name):
        super().__delitem__(name)
        self._attribute_dropped(name)

    def pop(self, name, *default):
        had = name in self
        value = super().pop(name, *default)
        if had:
            self._attribute_dropped(name)
        return value

    def popitem(self):
        name, value = super().popitem()
        self._attribute_dropped(name)
        return name, value

    def setdefault(self, name, default=None):
        if name not in self:
            self[name] = default
        return self[name]

    def update(self, *args, **kwargs):
        for name, value in dict(*args, **kwargs).items():
            self[name] = value

    def clear(self):
        for name in list(self):
            del self[name]


REGISTRY_NAMES = ("_parameters", "_buffers", "_modules")
