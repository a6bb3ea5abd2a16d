"""Moving and converting tensors: ``x.device``, ``x.to(...)``, ``x.cpu()``, ``x.float()``, ...

``to`` takes PyTorch's forms: ``to(dtype)``, ``to(device)``, ``to(other)``,
``to(device, dtype)`` and the keywords ``device``, ``dtype``, ``non_blocking``,
``copy``. When nothing changes it returns the tensor itself (as PyTorch); a
dtype change is the differentiable ``Cast`` (dL/dx = dL/dy in x's dtype).

Under CuPy every tensor lives on the GPU, except one moved to the CPU (``x.cpu()``,
``x.to("cpu")``): a differentiable ``Move`` to host memory, there to be read (``numpy()``,
``tolist()``, printing, saving) and moved back. An op that meets both devices raises, as
PyTorch's does.
"""

import numpy

from .. import backend
from ..constants import strided
from ..device import META, legacy_device_checked, resolve, served
from ..device import device as Device
from ..graph import bump_version
from ..meta import MetaArray, meta_array
from ..primitive import Primitive
from ..size import Size, refuse_negative_sizes
from ..tensor import Tensor, tensor_from
from .elementwise import Cast, Clone
from .layouts import stored_channels_last
from .names import names

# x.type() names, as PyTorch's (programs compare them with strings such as 'torch.FloatTensor')
_TYPE_NAMES = {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long", "int32": "Int",
               "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool", "complex64": "ComplexFloat",
               "complex128": "ComplexDouble"}


# the C names some PyTorch messages give a dtype ("expected dtype float for `end`")
_C_NAMES = {"float32": "float", "float64": "double", "float16": "c10::Half", "int64": "long int", "int32": "int",
            "bool": "bool", "uint8": "unsigned char", "int8": "signed char", "int16": "short int",
            "complex64": "c10::complex<float>", "complex128": "c10::complex<double>"}


def c_name(dtype):
    """PyTorch's C name of a dtype, as its lerp, heaviside and out= messages say it: float, long int, ..."""
    return _C_NAMES.get(dtype.name, dtype.name)


def type_name(dtype):
    """PyTorch's C++ name of a dtype, as its messages and x.type() say it: Float, Long, Int, ..."""
    return _TYPE_NAMES.get(dtype.name, dtype.name)


def legacy_type_name(dtype):
    """The name PyTorch's argument checks (checkScalarTypes) give a CPU tensor's type: its legacy class
    (torch.LongTensor) where it has one, CPUBoolType, CPUComplexFloatType, ... otherwise."""
    name = type_name(dtype)
    return f"torch.{name}Tensor" if name in ("Byte", "Char", "Short", "Int", "Long", "Half", "Float", "Double") \
        else f"CPU{name}Type"


def tensors_only(op, input, other, other_name="other"):
    """PyTorch's TypeError where an op's schema takes only tensors (``maximum(Tensor input, Tensor other)``, no
    Scalar overload) and a Python number or anything else came: "maximum(): argument 'other' (position 2) must be
    Tensor, not float". (Its method's message counts other as position 1; the function's is given.)"""
    tensor_input(op, input)
    if not isinstance(other, Tensor):
        raise TypeError(f"{op}(): argument '{other_name}' (position 2) must be Tensor, not {type(other).__name__}")


def tensor_input(op, input):
    """PyTorch's TypeError for a number (or anything else) as the input of an op whose every overload takes a
    tensor there, though one takes a number as other (``copysign(x, -1)`` but not ``copysign(-1, x)``)."""
    if not isinstance(input, Tensor):
        raise TypeError(f"{op}(): argument 'input' (position 1) must be Tensor, not {type(input).__name__}")


def require_same_dtype(first, second, names, op=""):
    """PyTorch's RuntimeError where a solver's two operands differ in dtype (it promotes neither):
    "{op}: Expected A and B to have the same dtype, but found A of type Double and B of type Float"."""
    if first.dtype != second.dtype:
        a, b = names
        # (PyTorch's linalg.* messages end without a full stop, its older solvers' with one)
        prefix, stop = (f"{op}: ", "") if op else ("", ".")
        raise RuntimeError(f"{prefix}Expected {a} and {b} to have the same dtype, but found {a} of type "
                           f"{type_name(first.dtype)} and {b} of type {type_name(second.dtype)} instead{stop}")


def refuse_kinds(x, kernel, kinds):
    """PyTorch's NotImplementedError (a RuntimeError) where ``x`` (a Tensor or array) has a dtype
    whose kind is in ``kinds`` ('b' bool, 'iu' integers, 'f' floating, 'c' complex): its kernel
    (named as PyTorch's message names it: "fmod_cpu") has no such dtype, where NumPy would compute
    something or raise a TypeError."""
    if x.dtype.kind in kinds:
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{type_name(x.dtype)}'")


def refuse_half_and_complex(x, kernel):
    """PyTorch's NotImplementedError where its kernel has float32 and float64 loops only (the Bessel and
    Airy functions, the normal tails, the orthogonal polynomials): float16 and complex ``x`` (after the
    integers became the default dtype)."""
    if x.dtype.kind == "c" or x.dtype.kind == "f" and x.dtype.itemsize == 2:
        raise NotImplementedError(f"\"{kernel}\" not implemented for '{type_name(x.dtype)}'")


def _device(x):
    """The device the tensor's memory is on (meta: none, meta.py)."""
    if type(x._data) is MetaArray:
        return META
    return _HOST if backend.on_host(x._data) else served()


_HOST = Device("cpu")
names("device", function=False)(property(_device))
names("is_cuda", function=False)(property(lambda x: _device(x).type == "cuda"))
names("is_cpu", function=False)(property(lambda x: _device(x).type == "cpu"))


@names("get_device", function=False)
def get_device(x):
    """The GPU index, or -1 on the CPU (as PyTorch)."""
    where = _device(x)
    return -1 if where.type == "cpu" else where.index


class Move(Primitive):
    """y = x in another device's memory (to_host: the CPU's, else the GPU's; under CuPy only);
    dL/dx = dL/dy moved back."""

    saves_inputs = False  # backward needs no input's values
    handles_complex = True

    def forward(self, x):
        return backend.to_numpy(x).copy() if self.to_host else backend.xp.asarray(x)

    def backward(self, grad, y, x):
        return (Move.apply(grad, to_host=not self.to_host),)


def _destination(requested):
    """The device ``requested`` names, when tensors can be there: the served one, or the CPU
    under CuPy (resolve raises for any other)."""
    wanted = requested if isinstance(requested, Device) else Device(requested)
    if wanted.type == "cpu" and wanted.index in (None, 0) and backend.xp is not numpy:
        return _HOST
    return resolve(wanted)


def _is_device(value):
    return isinstance(value, (str, Device)) or (isinstance(value, int) and not isinstance(value, bool))


def parse_to(args, kwargs):
    """(device, dtype, copy) from to()'s positional and keyword forms."""
    device = kwargs.pop("device", None)
    dtype = kwargs.pop("dtype", None)
    copy = kwargs.pop("copy", False)
    kwargs.pop("non_blocking", None)  # there is no asynchronous copy to wait for
    kwargs.pop("memory_format", None)  # (Module.to's: each parameter laid out by Tensor.to, see nn.Module)
    if kwargs:
        raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
    args = list(args)
    if args and isinstance(args[0], Tensor):
        other = args.pop(0)
        device, dtype = other.device, other.dtype
    elif args and _is_device(args[0]):
        device = args.pop(0)
    if args and not isinstance(args[0], bool):
        dtype = args.pop(0)
    if args:  # non_blocking, copy
        args.pop(0)
        if args:
            copy = args.pop(0)
    if args:
        raise TypeError(f"to() got too many positional arguments: {args}")
    return device, dtype, copy


@names("to", function=False)
def to(x, *args, **kwargs):
    """x on ``device`` with ``dtype``, laid out as ``memory_format`` asks (channels_last: N, H, W, C): x itself when
    it already is (unless ``copy``). PyTorch's test of "already" is its suggested memory format, which reads the
    strides of size-1 dims too: a row-major (N, C, 1, 1) is copied into channels-last strides, (C, 1, C, C)."""
    memory_format = kwargs.pop("memory_format", None)
    order = getattr(memory_format, "order", None)
    if order is not None:
        x = to(x, *args, **kwargs)
        if x.ndim == len(order) and stored_channels_last(x._data):
            return x
        return Clone.apply(x, order=order) if x.ndim == len(order) else x.contiguous(memory_format=memory_format)
    device, dtype, copy = parse_to(args, kwargs)
    if device is not None:
        where = _destination(device)
        if where is META or type(x._data) is MetaArray:
            x, copy = _to_or_from_meta(x, where), False
        elif where != _device(x):  # (only under CuPy: under NumPy the one device is every tensor's)
            x, copy = Move.apply(x, to_host=where == _HOST), False
    if dtype is not None and numpy.dtype(dtype) != x.dtype:
        return Cast.apply(x, dtype=numpy.dtype(dtype))
    return Clone.apply(x) if copy else x


def _to_or_from_meta(x, where):
    """x on the meta device: its shape and dtype (and requires_grad) only; a meta tensor stays one, and moving it
    anywhere else refuses, as PyTorch's: it has no values to copy."""
    if where is not META:
        raise NotImplementedError("Cannot copy out of meta tensor; no data! Please use torch.nn.Module.to_empty() "
                                  "instead of torch.nn.Module.to() when moving module from meta to a different "
                                  "device.")
    if type(x._data) is MetaArray:
        return x
    return tensor_from(meta_array(x.shape, x.dtype), requires_grad=x.requires_grad)


@names("cpu", function=False)
def cpu(x, *, memory_format=None):
    return to(x, "cpu")


@names("cuda", function=False)
def cuda(x, device=None, non_blocking=False, memory_format=None):
    return to(x, "cuda" if device is None else device)


@names("type", function=False)
def type_(x, dtype=None, non_blocking=False):
    """With no dtype, PyTorch's type name ('torch.FloatTensor'); otherwise x.to(dtype). A name such
    as 'torch.DoubleTensor', or the legacy type itself (``autograd.DoubleTensor``), is accepted as the dtype."""
    from ..constants import tensortype  # (constants builds on the factories, which build on the ops)

    if isinstance(dtype, tensortype):
        dtype = dtype.dtype
    if dtype is None:
        kind = type_name(x.dtype)
        return f"torch.{'cuda.' if _device(x).type == 'cuda' else ''}{kind}Tensor"
    if isinstance(dtype, str):
        by_name = {f"torch.{kind}Tensor": name for name, kind in _TYPE_NAMES.items()}
        by_name.update({f"torch.cuda.{kind}Tensor": name for name, kind in _TYPE_NAMES.items()})
        if dtype not in by_name:
            raise ValueError(f"invalid type: '{dtype}'")
        if dtype.startswith("torch.cuda."):
            resolve("cuda")
        dtype = by_name[dtype]
    return to(x, dtype=dtype)


def _converter(name, dtype):
    def convert(x, memory_format=None):
        return to(x, dtype)

    convert.__name__ = name
    convert.__doc__ = f"x.{name}() is x.to({dtype.name})."
    names(name, function=False)(convert)


for _name, _dtype in (("float", backend.float32), ("double", backend.float64), ("half", backend.float16),
                      ("bfloat16", backend.bfloat16),  # (refused: autograd.bfloat16 names a dtype NumPy lacks)
                      ("long", backend.int64), ("int", backend.int32), ("short", numpy.dtype("int16")),
                      ("char", numpy.dtype("int8")), ("byte", numpy.dtype("uint8")), ("bool", backend.bool_),
                      ("cfloat", numpy.dtype("complex64")), ("cdouble", numpy.dtype("complex128"))):
    _converter(_name, _dtype)

# -- what kind of memory this is: dense, strided, unquantised; shared with other processes or not ---------

names("layout", function=False)(property(lambda x: strided))


@names("to_sparse", "to_sparse_coo", function=False)
def to_sparse(x, sparse_dim=None, *, layout=None, blocksize=None, dense_dim=None):
    """The nonzeros of ``x`` as a sparse COO tensor (autograd.sparse: loaded on first use)."""
    from ..sparse.making import to_sparse

    return to_sparse(x, sparse_dim, layout=layout, blocksize=blocksize, dense_dim=dense_dim)


@names("to_sparse_csr", function=False)
def to_sparse_csr(x, dense_dim=None):
    """The nonzeros of the matrix ``x`` as a sparse CSR matrix (autograd.sparse.csr: loaded on first use)."""
    from ..sparse.csr import to_sparse_csr

    return to_sparse_csr(x, dense_dim)


names("is_meta", function=False)(property(lambda x: type(x._data) is MetaArray))
for _kind in ("is_sparse", "is_sparse_csr", "is_quantized", "is_nested", "is_mkldnn", "is_xla", "is_xpu",
              "is_mps", "is_ipu", "is_vulkan", "is_maia", "is_mtia"):  # (every tensor here is a dense NumPy array)
    names(_kind, function=False)(property(lambda x: False))


@names("is_shared", function=False)
def is_shared(x):
    from ..shared_memory import is_shared  # (loaded on first use: most programs never share memory)

    return is_shared(x)


@names("share_memory_", function=False)
def share_memory_(x):
    from ..shared_memory import share_memory_

    return share_memory_(x)


@names("new", function=False)
def new(x, *args, device=None):
    """The legacy constructor: x.new(2, 3) and x.new(x.size()) are uninitialised of x's dtype, x.new([1, 2])
    holds the data in x's dtype, x.new(tensor) is an alias of it, x.new() is empty."""
    legacy_device_checked(device, args[0] if len(args) == 1 else None, form="tensor.new(tensor, device=device)")
    resolve(device)
    if len(args) == 1 and isinstance(args[0], Size):  # x.new(x.size()): a Size is a shape (a tuple or list is data)
        args = tuple(args[0])
    if len(args) == 1 and not isinstance(args[0], int):
        data = args[0]
        if isinstance(data, Tensor):
            if data.dtype != x.dtype:
                raise TypeError(f"expected a tensor of dtype {x.dtype} (got {data.dtype})")
            return data.as_subclass(Tensor)  # an alias of a tensor it is given, in the graph (PyTorch's AliasBackward0)
        return tensor_from(backend.xp.array(data, dtype=x.dtype))
    refuse_negative_sizes(args)
    return Tensor._make(backend.xp.empty(args if args else (0,), dtype=x.dtype))


@names("apply_", function=False)
def apply_(x, callable):
    """Each element replaced by callable(element), in place, as Python numbers (slow: for small tensors)."""
    _refuse_grad(x, "apply_")
    flat = x._data.reshape(-1)
    for i, value in enumerate(flat.tolist()):
        flat[i] = callable(value)
    bump_version(x)
    return x


@names("map_", function=False)
def map_(x, tensor, callable):
    """Each element replaced by callable(element, the other's element), tensor broadcast to x's shape."""
    _refuse_grad(x, "map_")
    other = numpy.broadcast_to(tensor._data, x.shape).reshape(-1).tolist()
    flat = x._data.reshape(-1)
    for i, (a, b) in enumerate(zip(flat.tolist(), other)):
        flat[i] = callable(a, b)
    bump_version(x)
    return x


def _refuse_grad(x, op):
    if x.requires_grad:
        raise RuntimeError(f"Can't call {op}() on Variable that requires grad. Use var.detach().{op}() instead.")


@names("pin_memory", function=False)
def pin_memory(x, device=None):
    """x itself: there is no page-locked host memory to copy into (the array module owns the memory)."""
    return x


names("is_pinned", function=False)(lambda x, device=None: False)


def require_scalar_type(operands):
    """PyTorch's cdist and linalg.cross promote nothing (nor einsum where it contracts, _pairwise_dtype): every
    operand must have the first's dtype (a float64 batch against float32 weights is refused, as by its layers)."""
    first = operands[0].dtype
    for x in operands[1:]:
        if x.dtype != first:
            raise RuntimeError(f"expected scalar type {type_name(first)} but found {type_name(x.dtype)}")
