"""``save`` and ``load``: tensors, arrays and nested state dicts, without pickle.

The file is a NumPy ``.npz`` archive: one entry per array, plus ``__structure__``,
a JSON description of the nesting (dicts, lists, numbers, strings, None) in
which every array is named by its entry. Loading reads arrays with
``allow_pickle=False`` and parses JSON, so opening a file never runs code.
"""

import json

import numpy

from .backend import to_numpy, xp
from .tensor import Tensor

STRUCTURE = "__structure__"


def _encode(obj, arrays):
    if isinstance(obj, Tensor):
        arrays.append(to_numpy(obj._data))
        return {"tensor": len(arrays) - 1, "requires_grad": obj.requires_grad}
    if isinstance(obj, (numpy.ndarray, xp.ndarray)):
        arrays.append(to_numpy(obj))
        return {"array": len(arrays) - 1}
    if isinstance(obj, dict):
        if not all(isinstance(key, (str, int)) for key in obj):
            raise TypeError("save: dict keys must be strings or ints")
        return {"dict": [[key, _encode(value, arrays)] for key, value in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"tuple" if isinstance(obj, tuple) else "list": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, numpy.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"save: cannot store an object of type {type(obj).__name__}; "
                    "tensors, arrays, dicts, lists, numbers and strings can be saved")


def _decode(node, archive):
    if "tensor" in node:
        return Tensor(xp.asarray(archive[f"a{node['tensor']}"]), requires_grad=node["requires_grad"])
    if "array" in node:
        return xp.asarray(archive[f"a{node['array']}"])
    if "dict" in node:
        return {key: _decode(value, archive) for key, value in node["dict"]}
    if "list" in node:
        return [_decode(value, archive) for value in node["list"]]
    if "tuple" in node:
        return tuple(_decode(value, archive) for value in node["tuple"])
    return node["value"]


def save(obj, path):
    """Write ``obj`` (a tensor, an array, or a dict/list nesting of them) to ``path``."""
    arrays = []
    structure = _encode(obj, arrays)
    entries = {f"a{i}": array for i, array in enumerate(arrays)}
    entries[STRUCTURE] = numpy.frombuffer(json.dumps(structure).encode(), dtype=numpy.uint8)
    with open(path, "wb") as file:
        numpy.savez(file, **entries)


def load(path):
    """Read what ``save`` wrote. No code in the file is ever executed."""
    with numpy.load(path, allow_pickle=False) as archive:
        if STRUCTURE not in archive.files:
            raise ValueError(f"{path} is not a file written by autograd.save")
        structure = json.loads(archive[STRUCTURE].tobytes().decode())
        return _decode(structure, archive)
