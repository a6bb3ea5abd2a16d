"""``save`` and ``load``: tensors, arrays and nested state dicts, without pickle.

The file is a NumPy ``.npz`` archive: one entry per array, plus ``__structure__``,
a JSON description of the nesting (dicts, lists, numbers, strings, None) in
which every array is named by its entry. Memory is saved as PyTorch saves
storages: the array that owns a tensor's memory is written once, whole, and a
tensor that shows part of it (a view, or tied weights) is written as where its
elements lie in it, so tensors that shared memory when saved share it again
when loaded (writing into one shows in the others). Loading reads arrays
with ``allow_pickle=False`` and parses JSON, so opening a file never runs code. An
``argparse.Namespace`` (a training script's arguments, saved beside its weights) is kept as its names
and values and comes back as one.

A tensor keeps its class (``nn.Parameter``, a program's subclass) and the attributes the program set on it,
as PyTorch's pickle keeps them; which classes a file may name is tensor_classes.py's rule.

``load`` also reads the files ``torch.save`` writes (a zip of a pickle and raw
storages), the way ``torch.load(weights_only=True)`` does (torch_pickle.py): the pickle is read
by an unpickler that knows only the few names a file of tensors uses and refuses
any other name in the file (``pickle.UnpicklingError``), so no code from the
file runs. Tensors that shared a storage share memory again.

A path ending in ``.safetensors`` is written and read in that format instead
(the one Hugging Face and PyTorch users share weights in): a flat dict of
named tensors, through the optional ``safetensors`` package
(``pip install 'chainrule[safetensors]'``). Loading gives a dict of Tensors,
which ``Module.load_state_dict`` accepts, so weights exported from PyTorch
with ``safetensors.torch.save_file(model.state_dict(), path)`` load as they are.
"""

import argparse
import collections
import enum
import io
import os
import secrets
import types
import zipfile

import numpy

from . import tensor_classes
from .backend import to_numpy, xp
from .device import device as _device
from .dtype_objects import DTYPE_TYPES
from .safe_globals import (  # noqa: F401  (torch.serialization's names for them: add_safe_globals, ...)
    add_safe_globals,
    allowed,
    clear_safe_globals,
    get_safe_globals,
    global_name,
    is_allowed,
    safe_globals,
)
from .size import Size
from .sparse_layout import is_sparse
from .tensor import Tensor, tensor_from
from .torch_pickle import (
    BUILTIN_FACTORIES,
    SPARSE_COO,
    TorchUnpickler,
    number_dtype,
    rebuild_sparse_tensor,
    torch_pickle_name,
    zip_here,
)

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

    def memory(self, data):
        """(entry, view) for a tensor's array: the array that owns its memory, written once however many
        tensors show part of it, and where this one's elements lie in it ([byte offset, shape, byte strides,
        dtype]; None when the tensor's array is that whole array)."""
        root = data
        while isinstance(root, numpy.ndarray) and isinstance(root.base, numpy.ndarray):
            root = root.base
        if root is data or not (root.flags.c_contiguous or root.flags.f_contiguous):
            return self.array(data), None
        offset = data.__array_interface__["data"][0] - root.__array_interface__["data"][0]
        return self.array(root), [offset, list(data.shape), list(data.strides), data.dtype.str]

    def tensor(self, tensor):
        if id(tensor) not in self.tensor_index:
            self.tensor_index[id(tensor)] = len(self.tensor_index)
            self.kept.append(tensor)
        return self.tensor_index[id(tensor)]


_NOT_RECORDS = (types.FunctionType, types.MethodType, types.ModuleType, types.BuiltinFunctionType)


def _encode(obj, written):
    if isinstance(obj, Tensor):
        entry, view = written.memory(obj._data)
        node = {"tensor": entry, "object": written.tensor(obj), "requires_grad": obj.requires_grad,
                **tensor_classes.class_record(obj)}
        if view is not None:
            node["view"] = view
        attributes = tensor_classes.saved_attributes(obj)
        if attributes:
            node["attributes"] = _encode(attributes, written)["dict"]
        return node
    if isinstance(obj, (numpy.ndarray, xp.ndarray)):
        return {"array": written.array(obj)}
    if is_sparse(obj):  # a COO tensor (autograd.sparse): its indices, values and size
        return {"sparse_coo": [_encode(obj._indices(), written), _encode(obj._values(), written), list(obj.shape),
                               obj.is_coalesced()]}
    if isinstance(obj, collections.OrderedDict):  # (a state_dict) comes back as one
        return {"odict": _encode(dict(obj), written)["dict"]}
    if isinstance(obj, collections.Counter):  # (a vocabulary's counts) comes back as one, as from PyTorch's pickle
        return {"counter": _encode(dict(obj), written)["dict"]}
    if isinstance(obj, collections.deque):  # a replay buffer: its items and its maxlen
        return {"deque": [_encode(v, written) for v in obj], "maxlen": obj.maxlen}
    if isinstance(obj, collections.defaultdict):  # (a run's histories) its items and its factory
        return {"defaultdict": _encode(dict(obj), written)["dict"], "factory": _encode(obj.default_factory, written)}
    if isinstance(obj, Size):
        return {"size": list(obj)}
    if isinstance(obj, DTYPE_TYPES) and obj.kind in "biufc":  # a dtype a checkpoint records (torch.float32)
        return {"dtype": obj.name}
    if isinstance(obj, bytes):
        return {"bytes": obj.hex()}
    if isinstance(obj, complex):
        return {"complex": [obj.real, obj.imag]}
    if isinstance(obj, _device):  # (a checkpoint's record of where it trained: torch.load gives it back too)
        return {"device": str(obj)}
    if isinstance(obj, argparse.Namespace):  # a run's arguments, which training scripts save beside the weights
        return {"namespace": _encode(vars(obj), written)["dict"]}
    if isinstance(obj, dict):
        if not all(isinstance(key, (str, int)) for key in obj):
            raise TypeError("save: dict keys must be strings or ints")
        return {"dict": [[key, _encode(value, written)] for key, value in obj.items()]}
    if isinstance(obj, enum.Enum):  # (before numbers: an IntEnum is an int)
        return {"enum": [global_name(type(obj)), _encode(obj.value, written)]}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # a named tuple: its class and its fields
        return {"instance": global_name(type(obj)), "fields": [_encode(v, written) for v in obj]}
    if isinstance(obj, (list, tuple)):
        return {"tuple" if isinstance(obj, tuple) else "list": [_encode(v, written) for v in obj]}
    if isinstance(obj, (set, frozenset)):
        return {"set" if isinstance(obj, set) else "frozenset": [_encode(v, written) for v in obj]}
    if isinstance(obj, numpy.generic) and obj.dtype.kind in "biufc":  # (a NumPy number comes back as one, as
        return {"numpy_scalar": [obj.dtype.name, _encode(obj.item(), written)]}  # from PyTorch's pickle)
    if isinstance(obj, numpy.generic):
        obj = obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    wrapped = getattr(obj, "__wrapped__", None)
    if isinstance(wrapped, types.FunctionType) and not isinstance(obj, types.FunctionType):
        obj = wrapped  # a dispatching wrapper (overrides.Dispatching, while installed): the function it stands for
    if isinstance(obj, (type, types.FunctionType, types.BuiltinFunctionType)) and "<" not in obj.__qualname__:
        return {"global": global_name(obj)}  # a class or function, by its name (rebuilt only where allowed)
    if hasattr(obj, "__dict__") and not isinstance(obj, _NOT_RECORDS) and type(obj).__module__ != "builtins":
        # the program's own object: its state (what its __getstate__ gives, as pickle takes it: a transform
        # leaves out the inverse that refers back to it)
        state = obj.__getstate__() if type(obj).__getstate__ is not object.__getstate__ else None
        state = state if isinstance(state, dict) else vars(obj)
        return {"instance": global_name(type(obj)), "state": _encode(state, written)["dict"]}
    raise TypeError(f"save: cannot store an object of type {type(obj).__name__}; "
                    "tensors, arrays, dicts, lists, numbers, strings and objects with a __dict__ can be saved")


class _Read:
    """What one ``load`` has made so far: each stored array once (the tensors that shared it
    when saved share it again) and each stored tensor once."""

    def __init__(self, archive, weights_only):
        self.archive, self.arrays, self.tensors, self.host = archive, {}, {}, {}
        self.weights_only = weights_only  # (False: a tensor's class may be one the program defines, unallowed)

    def numpy_array(self, index):
        if index not in self.host:
            self.host[index] = self.archive[f"a{index}"]
        return self.host[index]

    def array(self, index):
        if index not in self.arrays:
            self.arrays[index] = xp.asarray(self.numpy_array(index))
        return self.arrays[index]

    def view(self, index, view):
        """The elements a view showed, in the memory of its owner as loaded (shared with it on the CPU)."""
        offset, shape, strides, dtype = view
        owner = self.numpy_array(index)
        memory = owner.reshape(-1, order="A").view(numpy.uint8)  # its bytes in memory order, not a copy
        return xp.asarray(numpy.ndarray(shape, numpy.dtype(dtype), memory, offset, strides))


def _decode(node, read):
    if "tensor" in node:
        key = node.get("object")  # (files written before objects were numbered have none)
        if key is None or key not in read.tensors:
            array = read.view(node["tensor"], node["view"]) if "view" in node else read.array(node["tensor"])
            tensor = tensor_from(array, requires_grad=node["requires_grad"])
            if "class" in node or "attributes" in node:
                cls = tensor_classes.saved_class(node["class"], node.get("registered", False), read.weights_only) \
                    if "class" in node else None
                attributes = {key: _decode(value, read) for key, value in node.get("attributes", ())}
                tensor = tensor_classes.rebuilt(tensor, cls, attributes)
            if key is None:
                return tensor
            read.tensors[key] = tensor
        return read.tensors[key]
    if "array" in node:  # a NumPy array saved comes back as one (under CuPy too: it is no tensor)
        return read.numpy_array(node["array"])
    if "sparse_coo" in node:
        indices, values, size, coalesced = node["sparse_coo"]
        return rebuild_sparse_tensor(SPARSE_COO, (_decode(indices, read), _decode(values, read), size, coalesced))
    if "dict" in node:
        return {key: _decode(value, read) for key, value in node["dict"]}
    if "odict" in node:
        return collections.OrderedDict((key, _decode(value, read)) for key, value in node["odict"])
    if "counter" in node:
        return collections.Counter({key: _decode(value, read) for key, value in node["counter"]})
    if "deque" in node:
        if read.weights_only and not is_allowed("collections.deque"):
            allowed("collections.deque")  # PyTorch's weights-only load refuses a deque too, unless allowed
        return collections.deque((_decode(value, read) for value in node["deque"]), maxlen=node["maxlen"])
    if "defaultdict" in node:
        if read.weights_only and not is_allowed("collections.defaultdict"):
            allowed("collections.defaultdict")  # refused by PyTorch's weights-only load too, unless allowed
        factory = node["factory"]
        factory = BUILTIN_FACTORIES[factory["global"]] if factory.get("global") in BUILTIN_FACTORIES \
            else _decode(factory, read)
        return collections.defaultdict(factory, ((key, _decode(value, read)) for key, value in node["defaultdict"]))
    if "size" in node:
        return Size(node["size"])
    if "dtype" in node:
        return number_dtype(node["dtype"])
    if "numpy_scalar" in node:
        name, value = node["numpy_scalar"]
        return number_dtype(name).type(_decode(value, read))
    if "bytes" in node:
        return bytes.fromhex(node["bytes"])
    if "complex" in node:
        return complex(*node["complex"])
    if "device" in node:
        return _device(node["device"])
    if "namespace" in node:  # (argparse's plain record of names: making one runs no code from the file)
        return argparse.Namespace(**{key: _decode(value, read) for key, value in node["namespace"]})
    if "enum" in node:
        name, value = node["enum"]
        return allowed(name)(_decode(value, read))
    if "instance" in node:
        cls = allowed(node["instance"])
        if "fields" in node:
            return cls(*(_decode(value, read) for value in node["fields"]))
        state = {key: _decode(value, read) for key, value in node["state"]}
        obj = cls.__new__(cls)
        if getattr(cls, "__setstate__", None) is not None:
            obj.__setstate__(state)  # (the allowed class's own, which pickle would call)
        else:
            obj.__dict__.update(state)
        return obj
    if "global" in node:
        return allowed(node["global"])
    if "list" in node:
        return [_decode(value, read) for value in node["list"]]
    if "tuple" in node:
        return tuple(_decode(value, read) for value in node["tuple"])
    if "set" in node or "frozenset" in node:
        values = (_decode(value, read) for value in node.get("set", node.get("frozenset")))
        return set(values) if "set" in node else frozenset(values)
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


def save(obj, f, pickle_module=None, pickle_protocol=2, _use_new_zipfile_serialization=True,
         _disable_byteorder_record=False):
    """Write ``obj`` (a tensor, an array, or a dict/list/tuple nesting of them with numbers, strings and
    bytes) to ``f`` (a file name, a path, or a binary file object such as ``io.BytesIO``); a path ending
    in ``.safetensors`` takes a flat dict of named tensors (a state_dict). ``pickle_module`` and
    ``pickle_protocol`` (and the format switches ``_use_new_zipfile_serialization``,
    ``_disable_byteorder_record``) are accepted for PyTorch's sake: the file holds no pickle."""
    path = _checked_file(f, "write")
    if _is_safetensors(path):
        return _save_safetensors(obj, path)
    written = _Written()
    structure = _encode(obj, written)
    entries = {f"a{i}": array for i, array in enumerate(written.arrays)}
    import json  # here, not at import: `import autograd` stays quick

    entries[STRUCTURE] = numpy.frombuffer(json.dumps(structure).encode(), dtype=numpy.uint8)
    if hasattr(path, "write"):  # a file object, as PyTorch's torch.save(obj, buffer)
        archive = io.BytesIO()  # (made whole first: the object is only written to, from where it is)
        numpy.savez(archive, **entries)
        path.write(archive.getvalue())
        return

    def write(temporary):
        with open(temporary, "xb") as file:  # (a new file: the umask gives its permissions, as open's)
            numpy.savez(file, **entries)

    _replace_atomically(path, write)


def _checked_file(f, method):
    """``f`` if it is a file name, a path, or an object with ``method`` (read or write), as PyTorch's."""
    if not isinstance(f, (str, os.PathLike)) and not hasattr(f, method):
        raise AttributeError(f"Expected 'f' to be string, path, or a file-like object with a '{method}' attribute")
    return f


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


def load(f, map_location=None, pickle_module=None, *, weights_only=True, mmap=None, **pickle_load_args):
    """Read what ``save`` wrote, or what ``torch.save`` wrote (see the module's docstring), from a file
    name, a path or a binary file object (a ``.safetensors`` file: a dict of Tensors). No code in the
    file is ever executed, whatever ``weights_only`` says. ``map_location``, ``pickle_module``, ``mmap``
    and ``encoding`` are accepted for PyTorch's sake: tensors load where every tensor lives (the CPU,
    or the GPU under CuPy), and the files are read whole."""
    if _is_safetensors(_checked_file(f, "read")):
        return _load_safetensors(f)
    if hasattr(f, "read"):
        f = zip_here(f)
    torch_pickle = torch_pickle_name(f)
    if torch_pickle is not None:
        with zipfile.ZipFile(f) as archive, archive.open(torch_pickle) as pickled:
            return TorchUnpickler(archive, torch_pickle, pickled, weights_only).load()
    with numpy.load(f, allow_pickle=False) as archive:
        if STRUCTURE not in archive.files:
            raise ValueError(f"{f} is not a file written by autograd.save")
        import json

        structure = json.loads(archive[STRUCTURE].tobytes().decode())
        return _decode(structure, _Read(archive, weights_only))


def get_unsafe_globals_in_checkpoint(f):
    """The names of the classes and functions a checkpoint names that the program has not allowed
    (``add_safe_globals``): what ``load`` would refuse. Reading them runs nothing."""
    if hasattr(f, "read"):
        f = zip_here(f)
    torch_pickle = torch_pickle_name(f)
    if torch_pickle is not None:
        import pickletools

        with zipfile.ZipFile(f) as archive:
            names = _pickled_globals(pickletools.genops(archive.read(torch_pickle)))
        return sorted(name for name in names if not TorchUnpickler.knows(name))
    with numpy.load(f, allow_pickle=False) as archive:
        import json

        structure = json.loads(archive[STRUCTURE].tobytes().decode())
    found = set()

    def walk(node):
        if isinstance(node, dict):
            for kind in ("instance", "global", "class"):  # (a tensor's class: tensor_classes.py)
                if isinstance(node.get(kind), str) and tensor_classes.registered(node[kind]) is None:
                    found.add(node[kind])
            if isinstance(node.get("enum"), list):
                found.add(node["enum"][0])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(structure)
    return sorted(name for name in found if not is_allowed(name))


def _pickled_globals(opcodes):
    """module.name of each GLOBAL and STACK_GLOBAL in a pickle's opcodes (the strings pushed just before)."""
    names, strings = set(), []
    for opcode, argument, _ in opcodes:
        if opcode.name == "GLOBAL":
            names.add(argument.replace(" ", "."))
        elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
            names.add(f"{strings[-2]}.{strings[-1]}")
        if isinstance(argument, str):
            strings.append(argument)
    return names
