"""``autograd.return_types``: PyTorch's ``torch.return_types``, the named tuples an op returns where it gives
several tensors: ``x.max(1)`` is ``return_types.max(values, indices)``, ``linalg.svd(A)`` is
``return_types.linalg_svd(U, S, Vh)``. Each is a tuple (index it, unpack it) with named fields, printed as
PyTorch prints it:

    autograd.return_types.max(
    values=tensor([5., 3.]),
    indices=tensor([1, 0]))

An op declares its type where it is defined (``return_type("max", ["values", "indices"])``); the type lives
here, under its name, so that ``isinstance`` and pickling find it. An op given ``out=`` tensors returns them in
the type's twin ``<name>_out`` (``max_out``), as PyTorch's.
"""

import collections


def return_type(name, fields, *, has_out=True):
    """The named tuple type ``autograd.return_types.<name>`` with ``fields``, and (``has_out``) its twin
    ``<name>_out``, the type of what the op returns with ``out=``, reached as the first's ``_out_type``."""
    made = _named_tuple(name, fields)
    made._out_type = _named_tuple(f"{name}_out", fields) if has_out else made
    return made


def _named_tuple(name, fields):
    def __repr__(self):
        body = ",\n".join(f"{field}={value!r}" for field, value in zip(self._fields, self))
        return f"autograd.return_types.{name}(\n{body})"

    base = _tuple_with_fields(tuple(fields))

    def __new__(cls, *items):
        # PyTorch's are structseqs, made from one sequence (``return_types.max((values, indices))``)
        return base.__new__(cls, *(items[0] if len(items) == 1 else items))

    made = type(name, (base,), {"__slots__": (), "__repr__": __repr__, "__new__": __new__, "__module__": __name__,
                                "__qualname__": name, "n_fields": len(fields), "n_sequence_fields": len(fields),
                                "n_unnamed_fields": 0})
    globals()[name] = made
    return made


_TUPLES_WITH_FIELDS = {}  # (fields) -> its namedtuple


def _tuple_with_fields(fields):
    """The namedtuple with ``fields``, one for every return type with those fields (ten have (values, indices)):
    ``collections.namedtuple`` compiles code for each type it makes, most of what declaring the types cost at
    ``import autograd``. Each return type is its own subclass, so names, ``isinstance`` and pickling are its own."""
    if fields not in _TUPLES_WITH_FIELDS:
        _TUPLES_WITH_FIELDS[fields] = collections.namedtuple("_".join(fields), fields)
    return _TUPLES_WITH_FIELDS[fields]


def __getattr__(name):
    """A return type of an op module autograd.ops leaves out (``return_types.linalg_svd``), declared when its module
    is imported now (ops/deferred.py): found by name as the others, by ``isinstance`` and by pickle."""
    from .ops.deferred import RETURN_TYPES

    if name not in RETURN_TYPES:  # (__path__ and the like, which the import system asks for)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from .ops import load_deferred

    load_deferred(RETURN_TYPES[name])
    return globals()[name]


def __dir__():
    from .ops.deferred import RETURN_TYPES

    return sorted(set(globals()) | set(RETURN_TYPES))
