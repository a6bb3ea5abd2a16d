"""``save`` and ``load``: tensors, arrays and nested state dicts, without pickle.

The file is a NumPy ``.npz`` archive: one entry per array, plus ``__structure__``,
a JSON description of the nesting (dicts, lists, numbers, strings, None) in
which every array is named by its entry. Tensors that share an array (tied
weights) are written once and share it again when loaded, as PyTorch's do;
a view is written as the values it shows. Loading reads arrays with
``allow_pickle=False`` and parses JSON, so opening a file never runs code.

A path ending in ``.safetensors`` is written and read in that format instead
(the one Hugging Face and PyTorch users share weights in): a flat dict of
named tensors, through the optional ``safetensors`` package
(``pip install 'chainrule[safetensors]'``). Loading gives a dict of Tensors,
which ``Module.load_state_dict`` accepts, so weights exported from PyTorch
with ``safetensors.torch.save_file(model.state_dict(), path)`` load as they are.
"""

import os
import secrets

import numpy

from .backend import to_numpy, xp
from .tensor import Tensor, tensor_from

STRUCTURE = "__structure__"


class _Written:
    """What one ``save`` has written so far: the arrays, each once (two tensors that share an
    array, as tied weights in a state_dict do, share one entry), and the tensors, each once
    (the same tensor twice loads as one tensor twice, as PyTorch's pickle memo gives)."""

    def __init__(self):
        self.arrays, self.array_index, self.tensor_index = [], {}, {}
        self.kept = []  # what the indexes name stays alive, so no id is reused during the save

    def array(self, array):
        if id(array) not in self.array_index:
            self.array_index[id(array)] = len(self.arrays)
            self.arrays.append(to_numpy(array))
            self.kept.append(array)
        return self.array_index[id(array)]

    def tensor(self, tensor):
        if id(tensor) not in self.tensor_index:
            self.tensor_index[id(tensor)] = len(self.tensor_index)
            self.kept.append(tensor)
        return self.tensor_index[id(tensor)]


def _encode(obj, written):
    if isinstance(obj, Tensor):
        return {"tensor": written.array(obj._data), "object": written.tensor(obj),
                "requires_grad": obj.requires_grad}
    if isinstance(obj, (numpy.ndarray, xp.ndarray)):
        return {"array": written.array(obj)}
    if isinstance(obj, dict):
        if not all(isinstance(key, (str, int)) for key in obj):
            raise TypeError("save: dict keys must be strings or ints")
        return {"dict": [[key, _encode(value, written)] for key, value in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"tuple" if isinstance(obj, tuple) else "list": [_encode(v, written) for v in obj]}
    if isinstance(obj, numpy.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"save: cannot store an object of type {type(obj).__name__}; "
                    "tensors, arrays, dicts, lists, numbers and strings can be saved")


class _Read:
    """What one ``load`` has made so far: each stored array once (the tensors that shared it
    when saved share it again) and each stored tensor once."""

    def __init__(self, archive):
        self.archive, self.arrays, self.tensors = archive, {}, {}

    def array(self, index):
        if index not in self.arrays:
            self.arrays[index] = xp.asarray(self.archive[f"a{index}"])
        return self.arrays[index]


def _decode(node, read):
    if "tensor" in node:
        key = node.get("object")  # (files written before objects were numbered have none)
        if key is None or key not in read.tensors:
            tensor = tensor_from(read.array(node["tensor"]), requires_grad=node["requires_grad"])
            if key is None:
                return tensor
            read.tensors[key] = tensor
        return read.tensors[key]
    if "array" in node:
        return read.array(node["array"])
    if "dict" in node:
        return {key: _decode(value, read) for key, value in node["dict"]}
    if "list" in node:
        return [_decode(value, read) for value in node["list"]]
    if "tuple" in node:
        return tuple(_decode(value, read) for value in node["tuple"])
    return node["value"]


def _is_safetensors(path):
    return isinstance(path, (str, os.PathLike)) and os.fspath(path).endswith(".safetensors")


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        raise ModuleNotFoundError(
            "reading or writing a .safetensors file needs the safetensors package, an optional extra: "
            "pip install 'chainrule[safetensors]' (or pip install safetensors)"
        ) from None
    return safetensors.numpy


def _save_safetensors(obj, path):
    if not isinstance(obj, dict) or not all(isinstance(key, str) for key in obj):
        raise TypeError(f"save: a .safetensors file holds a dict of named tensors (a state_dict), "
                        f"got {type(obj).__name__}")
    arrays = {}
    for key, value in obj.items():
        if not isinstance(value, (Tensor, numpy.ndarray, xp.ndarray)):
            raise TypeError(f"save: a .safetensors file holds only tensors, but {key!r} is a "
                            f"{type(value).__name__}")
        array = to_numpy(value._data if isinstance(value, Tensor) else value)
        arrays[key] = numpy.ascontiguousarray(array)  # the format stores C-ordered bytes
    _replace_atomically(path, lambda temporary: _safetensors_numpy().save_file(arrays, temporary))


def _load_safetensors(path):
    arrays = _safetensors_numpy().load_file(os.fspath(path))
    return {key: tensor_from(xp.asarray(array)) for key, array in arrays.items()}


def save(obj, path):
    """Write ``obj`` (a tensor, an array, or a dict/list nesting of them) to ``path`` (a file
    name, or a binary file object such as ``io.BytesIO``); a path ending in ``.safetensors``
    takes a flat dict of named tensors (a state_dict)."""
    if _is_safetensors(path):
        return _save_safetensors(obj, path)
    written = _Written()
    structure = _encode(obj, written)
    entries = {f"a{i}": array for i, array in enumerate(written.arrays)}
    import json  # here, not at import: `import autograd` stays quick

    entries[STRUCTURE] = numpy.frombuffer(json.dumps(structure).encode(), dtype=numpy.uint8)
    if hasattr(path, "write"):  # a file object, as PyTorch's torch.save(obj, buffer)
        numpy.savez(path, **entries)
        return

    def write(temporary):
        with open(temporary, "xb") as file:  # (a new file: the umask gives its permissions, as open's)
            numpy.savez(file, **entries)

    _replace_atomically(path, write)


def _replace_atomically(path, write):
    """``write(temporary)`` writes a new file beside ``path``; once it is complete it replaces ``path``
    in one rename (atomic on POSIX and Windows), and a failure removes it, so ``path`` is either the
    old file or the whole new one. A symbolic link is kept: the file it points to is replaced."""
    target = os.path.realpath(os.fspath(path))
    temporary = f"{target}.{secrets.token_hex(4)}.tmp"
    try:
        write(temporary)
        os.replace(temporary, target)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def load(path, map_location=None, weights_only=True):
    """Read what ``save`` wrote, from a file name or a binary file object (a ``.safetensors``
    file: a dict of Tensors). No code in the file is ever executed; ``map_location`` and
    ``weights_only`` are accepted for PyTorch's sake (tensors load where every tensor lives: the
    CPU, or the GPU under CuPy; a file holds data only)."""
    if _is_safetensors(path):
        return _load_safetensors(path)
    with numpy.load(path, allow_pickle=False) as archive:
        if STRUCTURE not in archive.files:
            raise ValueError(f"{path} is not a file written by autograd.save")
        import json

        structure = json.loads(archive[STRUCTURE].tobytes().decode())
        return _decode(structure, _Read(archive))
