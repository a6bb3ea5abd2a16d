"""Reading the files ``torch.save`` writes, as ``torch.load(weights_only=True)`` reads them (``load`` in
serialization.py sends them here): a zip holding ``<name>/data.pkl``, the pickled object, whose tensors name their
storages by key, and ``<name>/data/<key>``, each storage's raw bytes. The pickle is read by an unpickler that knows
only the few names a file of tensors uses (tensors, sparse COO ones with their indices checked, storages,
``OrderedDict``, ``torch.Size``, dtypes, devices, sets, complex numbers, bytes, nn's Parameter and the tensor
classes of tensor_classes.py; with ``weights_only=False`` a ``deque`` and a ``defaultdict`` too) and refuses any
other, so nothing but those constructors ever runs."""

import codecs
import collections
import io
import pickle
import struct
import zipfile

import numpy

from . import tensor_classes
from .backend import xp
from .dtype_objects import DTYPE_TYPES, dtype
from .safe_globals import allowed, is_allowed
from .size import Size
from .tensor import Tensor, tensor_from


def zip_here(f):
    """The zip archive that starts at the stream's position (both formats are zips), as a BytesIO, leaving
    the stream just after it, as torch.load does: a stream may hold several saved objects one after
    another, and other data between them. The archive ends with its end record, the first one found
    whose central directory ends just before it."""
    if not (hasattr(f, "seek") and hasattr(f, "tell")):
        raise AttributeError("You can only torch.load from a file that is seekable. Please pre-load the data into "
                             "a buffer like io.BytesIO and try to load from it instead.")
    start = f.tell()
    rest = f.read()
    at = rest.find(b"PK\x05\x06")
    while 0 <= at <= len(rest) - 22:
        cd_size, cd_offset, comment = struct.unpack("<IIH", rest[at + 12:at + 22])
        # (offsets count from the archive's start, torch's, or from the stream's, Python's zipfile's; a zip64
        # archive's end record follows its locator)
        if cd_offset + cd_size in (at, start + at) or rest[at - 20:at - 16] == b"PK\x06\x07":
            end = at + 22 + comment
            f.seek(start + end)
            return io.BytesIO(rest[:end])
        at = rest.find(b"PK\x05\x06", at + 4)
    f.seek(start)
    return f  # not a zip: torch_pickle_name says what it is not


def torch_pickle_name(f):
    """The name of the pickle in a file ``torch.save`` wrote, None for a file autograd.save wrote (an
    UnpicklingError for any other file; a stream is left where it was)."""
    start = f.tell() if hasattr(f, "read") else None
    try:
        with zipfile.ZipFile(f) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile:
        if start is not None:
            f.seek(start)
            head = f.read(2)
        else:
            with open(f, "rb") as file:
                head = file.read(2)
        if head == b"\x80\x02":
            raise RuntimeError("load: this file was written by torch.save in its legacy format "
                               "(_use_new_zipfile_serialization=False), which only a full unpickler reads; "
                               "save it again with torch.save's default format") from None
        raise pickle.UnpicklingError(f"load: {f} is neither a file written by autograd.save nor one written "
                                     f"by torch.save (not a zip archive)") from None
    finally:
        if start is not None:
            f.seek(start)
    return next((name for name in names if name.endswith("data.pkl") and name.count("/") <= 1), None)


_TORCH_DTYPES = {name: dtype(kind) for kind, names in {
    "float32": ("float32", "float"), "float64": ("float64", "double"), "float16": ("float16", "half"),
    "int64": ("int64", "long"), "int32": ("int32", "int"), "int16": ("int16", "short"), "int8": ("int8",),
    "uint8": ("uint8",), "bool": ("bool",), "complex64": ("complex64", "cfloat"),
    "complex128": ("complex128", "cdouble")}.items() for name in names}
_TORCH_STORAGES = {"FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
                   "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16", "CharStorage": "int8",
                   "ByteStorage": "uint8", "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
                   "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8"}


class _StorageKind:
    """What the pickle names a storage's class by (torch.FloatStorage, ...): the dtype of its elements."""

    def __init__(self, dtype):
        self.dtype = numpy.dtype(dtype)


# a defaultdict's factory that a load with weights_only=False makes without its being allowed: a builtin container
# or number, which runs no code of the file's choosing (another is loaded as any global is: only where allowed)
BUILTIN_FACTORIES = {f"builtins.{factory.__name__}": factory for factory in (list, dict, set, int, float, str, tuple)}


class TorchUnpickler(pickle.Unpickler):
    """Reads the pickle of a ``torch.save`` file knowing only the names such a file of tensors uses;
    any other name is refused, so nothing but these few constructors ever runs."""

    weights_only = True  # (False: a Tensor subclass the program defines may be named)

    def __init__(self, archive, pickle_name, pickled, weights_only=True):
        self.archive, self.prefix = archive, pickle_name[:-len("data.pkl")]
        self.weights_only = weights_only
        self.big_endian = archive.read(self.prefix + "byteorder") == b"big" \
            if self.prefix + "byteorder" in archive.namelist() else False
        self.storages = {}
        super().__init__(pickled)

    @classmethod
    def knows(cls, name):
        """Whether ``find_class`` gives something for the global named module.name."""
        module, _, short = name.rpartition(".")
        try:
            cls.__new__(cls).find_class(module, short)
        except pickle.UnpicklingError:
            return False
        return True

    def find_class(self, module, name):
        if module == "torch._utils" and name in ("_rebuild_tensor_v2", "_rebuild_tensor_v3"):
            return _rebuild_tensor
        if module == "torch._utils" and name in ("_rebuild_parameter", "_rebuild_parameter_with_state"):
            return _rebuild_parameter
        if (module, name) == ("torch._tensor", "_rebuild_from_type_v2"):
            return _rebuild_from_type
        if (module, name) in (("torch._tensor", "Tensor"), ("torch", "Tensor")):
            return Tensor
        if module in ("torch", "torch.storage") and name in _TORCH_STORAGES:
            return _StorageKind(_TORCH_STORAGES[name])
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        if module == "torch" and name in ("Size", "device"):
            from . import device

            return Size if name == "Size" else device
        if module == "collections" and name in ("OrderedDict", "Counter"):  # (a MultiStepLR's milestones: Counter)
            return getattr(collections, name)
        if not self.weights_only:  # (refused by PyTorch's weights-only load as by ours, unless allowed: below)
            if module == "collections" and name in ("deque", "defaultdict"):  # a replay buffer, a run's histories
                return getattr(collections, name)
            if module in ("builtins", "__builtin__") and f"builtins.{name}" in BUILTIN_FACTORIES:  # (a defaultdict's
                return BUILTIN_FACTORIES[f"builtins.{name}"]  # factory; pickle protocol 2 names builtins __builtin__)
        if module in ("builtins", "__builtin__") and name in ("set", "frozenset", "complex"):
            return {"set": set, "frozenset": frozenset, "complex": complex}[name]
        if module == "_codecs" and name == "encode":
            return _encode_text
        if (module, name) == ("torch._utils", "_rebuild_sparse_tensor"):
            return rebuild_sparse_tensor
        if (module, name) == ("torch.serialization", "_get_layout"):
            return _layout_named
        if tensor_classes.registered(f"{module}.{name}") is not None:
            return tensor_classes.registered(f"{module}.{name}")
        if is_allowed(f"{module}.{name}"):
            return allowed(f"{module}.{name}")
        defined = None if self.weights_only else tensor_classes.defined(f"{module}.{name}")
        if defined is not None:  # a Tensor subclass the program defines, weights_only=False (tensor_classes.py)
            return defined
        raise pickle.UnpicklingError(
            f"Weights only load failed: the file names {module}.{name}, which is not a tensor, a storage, a "
            f"dtype, a device or a plain container; chainrule's load never runs code from a file, so it reads "
            f"only those")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageKind)):
            raise pickle.UnpicklingError(f"load: unexpected persistent id {pid!r} in a torch.save file")
        _, kind, key, _location, _numel = pid
        if key not in self.storages:
            raw = bytearray(self.archive.read(f"{self.prefix}data/{key}"))  # (writable memory)
            dtype = kind.dtype.newbyteorder(">") if self.big_endian else kind.dtype
            self.storages[key] = numpy.frombuffer(raw, dtype).astype(kind.dtype, copy=False)
        return self.storages[key]


def number_dtype(name):
    """The dtype a file names, a tensor's only: no object dtype comes out of a file."""
    found = dtype(name)
    if found.kind not in "biufc":
        raise pickle.UnpicklingError(f"load: a dtype {name!r} that no tensor has")
    return found


def _encode_text(text, encoding="utf-8"):
    """_codecs.encode, as protocol 2 pickles bytes: only the text encodings it uses."""
    if encoding not in ("latin1", "latin-1", "utf-8", "utf8"):
        raise pickle.UnpicklingError(f"load: bytes encoded as {encoding!r} in a torch.save file")
    return codecs.encode(text, encoding)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad, backward_hooks, *rest):
    """torch._utils._rebuild_tensor_v2 (and _v3, whose storage is bytes and which names the dtype): a
    tensor showing the storage's elements from storage_offset on, with strides in elements."""
    if rest and isinstance(rest[0], DTYPE_TYPES):  # _v3
        storage = storage.view(rest[0])
    itemsize = storage.dtype.itemsize
    size, stride = tuple(size), tuple(stride)
    last = storage_offset + sum((n - 1) * step for n, step in zip(size, stride))
    if (len(size) != len(stride) or storage_offset < 0 or any(step < 0 for step in stride)
            or (0 not in size and last >= len(storage))):
        raise RuntimeError(f"load: a tensor of size {list(size)}, stride {list(stride)} and offset {storage_offset} "
                           f"lies outside its storage of {len(storage)} elements")
    array = numpy.lib.stride_tricks.as_strided(storage[storage_offset:], size,
                                               tuple(step * itemsize for step in stride))
    return tensor_from(xp.asarray(array), requires_grad=requires_grad)


def _rebuild_parameter(data, requires_grad, backward_hooks, *state):
    """torch._utils._rebuild_parameter (and _with_state): an nn.Parameter of the tensor, requiring grad as it did,
    with its attributes (a plain tensor where nn is not imported: it lives above autograd)."""
    attributes = state[0] if state and isinstance(state[0], dict) else {}
    return tensor_classes.rebuilt(data.requires_grad_(requires_grad), tensor_classes.registered(_TORCH_PARAMETER),
                                  attributes)


def _rebuild_from_type(func, cls, args, attributes):
    """torch._tensor._rebuild_from_type_v2: the tensor ``func(*args)`` rebuilds, as an instance of ``cls`` (a
    class ``find_class`` gave) with the attributes the program had set on it."""
    return tensor_classes.rebuilt(func(*args), None if cls is Tensor else cls,
                                  attributes if isinstance(attributes, dict) else {})


_TORCH_PARAMETER = "torch.nn.parameter.Parameter"  # (the name nn registers its Parameter under too)
SPARSE_COO = "torch.sparse_coo"  # (the layouts as torch.save names them: torch.serialization._get_layout's text)


def _layout_named(name):
    """torch.serialization._get_layout: a layout by its name; only the sparse COO layout is read."""
    if name != SPARSE_COO:
        raise pickle.UnpicklingError(f"load: a tensor of layout {name!r}; chainrule reads strided and sparse COO "
                                     "tensors only")
    return name


def rebuild_sparse_tensor(layout, data):
    """torch._utils._rebuild_sparse_tensor: a sparse COO tensor from (indices, values, size[, is_coalesced]), its
    indices checked against the size (sparse_coo_tensor always checks them), so a file cannot make one that
    reads outside its memory."""
    from .sparse import sparse_coo_tensor  # (sparse tensors are built on Tensor: loaded where a file holds one)

    if layout != SPARSE_COO or not isinstance(data, tuple) or len(data) not in (3, 4):
        raise pickle.UnpicklingError(f"load: a sparse tensor of layout {layout!r} with {type(data).__name__} data")
    indices, values, size = data[:3]
    coalesced = data[3] if len(data) == 4 else None
    return sparse_coo_tensor(indices, values, tuple(size), is_coalesced=coalesced or None)
