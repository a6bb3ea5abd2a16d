"""``Tensor``: an n-dimensional array that records the operations made with it.

A Tensor wraps an array of the array module (``._data``). When it requires
grad, every operation on it creates a ``Primitive`` node (``.grad_fn``) that
remembers its inputs, so ``backward()`` can run the chain rule through them.
Leaves (tensors made by the user) collect dL/dleaf in ``.grad``.

The arithmetic lives in ``autograd.ops``; this file only connects Python's
operators and PyTorch's method names to it.
"""

import numbers
import weakref

import numpy

from . import backend
from .backend import xp


class _VersionClock:
    """Counts in-place changes. A node remembers the time it was created; a saved
    tensor whose version is newer was changed after it was saved."""

    now = 0


def as_array(data, dtype=None):
    """An array of the array module for ``data``, with the contract's dtype rules:
    Python floats become the default dtype; arrays keep a floating dtype."""
    if isinstance(data, Tensor):
        data = data._data
    if dtype is not None:
        return xp.asarray(data, dtype=dtype)
    is_array = isinstance(data, (xp.ndarray, numpy.ndarray, numpy.generic))
    array = xp.asarray(data)
    if not is_array and array.dtype == backend.float64:
        array = array.astype(backend.get_default_dtype())
    return array


class Tensor:
    __slots__ = ("_data", "requires_grad", "grad", "grad_fn", "_version", "_hooks", "_post_hooks", "_stored",
                 "__weakref__")
    __hash__ = object.__hash__  # identity: == is elementwise, but tensors key dicts in the engine
    __array_priority__ = 1000  # ndarray * Tensor calls Tensor.__rmul__
    parents = ()  # a leaf is where the graph ends

    def __init__(self, data, requires_grad=False, dtype=None):
        self._data = as_array(data, dtype)
        self.grad = None
        self.grad_fn = None
        self._version = [0]
        self._hooks = None
        self._post_hooks = None
        self._stored = False
        self.requires_grad = False
        if requires_grad:
            self.requires_grad_(True)

    @staticmethod
    def _make(data):
        """Wrap an array the library just computed (no copying, no checks)."""
        tensor = object.__new__(Tensor)
        tensor._data = data if isinstance(data, xp.ndarray) else xp.asarray(data)
        tensor.requires_grad = False
        tensor.grad = None
        tensor.grad_fn = None
        tensor._version = [0]
        tensor._hooks = None
        tensor._post_hooks = None
        tensor._stored = False
        return tensor

    # -- what it is -----------------------------------------------------------------

    @property
    def data(self):
        """The same memory as a Tensor cut from the graph, as PyTorch's ``.data``: changes
        made through it are not recorded (it has its own version counter)."""
        return Tensor._make(self._data)

    @data.setter
    def data(self, value):
        if not isinstance(value, Tensor):
            raise TypeError(f"x.data = value needs a Tensor, got {type(value).__name__}")
        if value.shape != self.shape or value.dtype != self.dtype:
            raise ValueError(
                f"x.data = value: value has shape {tuple(value.shape)} and dtype {value.dtype}, "
                f"but x has shape {tuple(self.shape)} and dtype {self.dtype}; they must match"
            )
        self._data = value._data

    @property
    def shape(self):
        return self._data.shape

    @property
    def ndim(self):
        return self._data.ndim

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    @property
    def mT(self):
        """The last two dims swapped (a batch of matrices transposed): every matmul's backward."""
        if self.ndim < 2:
            raise ValueError(f"mT needs at least 2 dimensions, got shape {self.shape}")
        dims = (*range(self.ndim - 2), self.ndim - 1, self.ndim - 2)
        return shape_ops.Permute.apply(self, dims=dims)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return self._data.size

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        body = numpy.array2string(backend.to_numpy(self._data), separator=", ", precision=4,
                                  prefix="tensor(")
        extra = ""
        if self._data.dtype not in (backend.get_default_dtype(), backend.int64, backend.bool_):
            extra += f", dtype={self._data.dtype}"
        if self.grad_fn is not None:
            extra += f", grad_fn={self.grad_fn!r}"
        elif self.requires_grad:
            extra += ", requires_grad=True"
        return f"tensor({body}{extra})"

    # -- conversion -----------------------------------------------------------------------

    def numpy(self):
        """The data as a NumPy array (shared with the tensor, not copied)."""
        return backend.to_numpy(self._data)

    def item(self):
        if self._data.size != 1:
            raise ValueError(f"item() needs a tensor with one element, got shape {self.shape}")
        return self._data.item()

    def tolist(self):
        return self._data.tolist()

    def __array__(self, dtype=None, copy=None):
        return self.numpy() if dtype is None else self.numpy().astype(dtype)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iu":
            raise TypeError("only integer tensors of one element can be used as an index")
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(
                f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                "use .any() or .all()"
            )
        return bool(self._data)

    def detach(self):
        """The same data, cut from the graph (shares memory, like PyTorch's)."""
        tensor = Tensor._make(self._data)
        tensor._version = self._version
        return tensor

    def clone(self):
        return elementwise.Clone.apply(self)

    def contiguous(self):
        return self

    # -- autograd -----------------------------------------------------------------------

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self._data.dtype.kind not in "fc":
            raise TypeError(
                f"only floating-point tensors can require gradients, got a {self._data.dtype} "
                f"tensor of shape {self.shape}; convert it first with .float() or .double()"
            )
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError(
                "requires_grad_(False) works on leaves only; use .detach() to cut a "
                "computed tensor from the graph"
            )
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        """Keep dL/dself in ``.grad`` after backward, for a tensor that is not a leaf."""
        if not self.requires_grad:
            raise RuntimeError("retain_grad() on a tensor that does not require grad")
        if self.grad_fn is not None:
            self.grad_fn.retained = weakref.ref(self)

    @property
    def retains_grad(self):
        return self.grad_fn is not None and self.grad_fn.retained is not None

    def register_hook(self, hook):
        """Call ``hook(grad)`` with dL/dself during backward; a returned tensor replaces grad.
        Returns a handle whose ``remove()`` unregisters it."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self.grad_fn is not None:
            if self.grad_fn.hooks is None:
                self.grad_fn.hooks = []
            hooks = self.grad_fn.hooks
        else:
            if self._hooks is None:
                self._hooks = []
            hooks = self._hooks
        hooks.append(hook)
        return _HookHandle(hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(self)`` after dL/dself has been added to ``self.grad`` (leaves only),
        as PyTorch's: data-parallel training starts averaging a gradient from here."""
        if self.grad_fn is not None:
            raise RuntimeError("post-accumulate-grad hooks can only be registered on leaf tensors")
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self._post_hooks is None:
            self._post_hooks = []
        self._post_hooks.append(hook)
        return _HookHandle(self._post_hooks, hook)

    def backward(self, gradient=None, retain_graph=False, create_graph=False):
        """Compute dL/dleaf for every leaf that requires grad, with L = self.

        ``gradient`` is dL/dself; it may be left out only when self holds one
        element. The graph is freed afterwards unless ``retain_graph`` is set;
        with ``create_graph`` the backward pass is recorded for higher-order
        derivatives.
        """
        differentiate.backward([self], None if gradient is None else [gradient],
                               retain_graph=retain_graph or create_graph,
                               create_graph=create_graph)

    # the engine's interface, for a leaf (see autograd.engine)

    def receive(self, grad):
        if self._hooks:
            grad = run_hooks(self._hooks, grad)
        if grad.requires_grad:  # create_graph: .grad keeps its own graph
            self.grad = grad if self.grad is None else self.grad + grad
        elif self.grad is None or self.grad.requires_grad or self.grad.shape != grad.shape:
            self.grad = _owned(grad)
        else:
            self.grad._data += grad._data
        if self._post_hooks:
            for hook in self._post_hooks:
                hook(self)
        return grad

    def chain(self, grad):
        return ()

    def release(self):
        pass

    # -- in-place changes (initialisers, optimisers, masks) ---------------------------------

    def _check_inplace(self):
        if self.requires_grad and is_grad_enabled():
            kind = "a leaf" if self.grad_fn is None else "a tensor"
            raise RuntimeError(
                f"in-place change of {kind} of shape {self.shape} that requires grad; the "
                "graph cannot record it. Do it under autograd.no_grad(), or write x = x + y."
            )
        _VersionClock.now += 1
        self._version[0] = _VersionClock.now

    def _assign(self, array):
        self._check_inplace()
        self._data[...] = array
        return self

    def _write_back(self, function, args, kwargs):
        """x.op_(...): compute x.op(...) and write it into x's memory."""
        with no_grad():
            result = function(self, *args, **kwargs)
        return self._assign(result._data)

    def zero_(self):
        return self._assign(0)

    def fill_(self, value):
        return self._assign(value)

    def copy_(self, source):
        source = as_array(source)
        if xp.broadcast_shapes(source.shape, self.shape) != self.shape:
            raise ValueError(f"copy_: cannot copy a tensor of shape {source.shape} into shape "
                             f"{self.shape}")
        return self._assign(source)

    def add_(self, other, alpha=1):
        return self._assign(self._data + alpha * _data(other))

    def sub_(self, other, alpha=1):
        return self._assign(self._data - alpha * _data(other))

    def mul_(self, other):
        return self._assign(self._data * _data(other))

    def div_(self, other):
        return self._assign(self._data / _data(other))

    def clamp_(self, min=None, max=None):
        return self._assign(xp.clip(self._data, _data(min), _data(max)))

    def addcmul_(self, tensor1, tensor2, value=1):
        """x += value · tensor1 · tensor2"""
        return self._assign(self._data + value * (_data(tensor1) * _data(tensor2)))

    def addcdiv_(self, tensor1, tensor2, value=1):
        """x += value · tensor1 / tensor2"""
        return self._assign(self._data + value * (_data(tensor1) / _data(tensor2)))

    def lerp_(self, end, weight):
        """x += weight · (end - x)"""
        return self._assign(self._data + _data(weight) * (_data(end) - self._data))

    def sqrt_(self):
        return self._assign(xp.sqrt(self._data))

    def neg_(self):
        return self._assign(-self._data)

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    def __setitem__(self, index, value):
        self._check_inplace()
        self._data[_index(index)] = _data(value)

    # -- arithmetic: Python operators -----------------------------------------------------

    def __add__(self, other):
        return elementwise.Add.apply(self, _operand(other, self))

    def __radd__(self, other):
        return elementwise.Add.apply(_operand(other, self), self)

    def __sub__(self, other):
        return elementwise.Sub.apply(self, _operand(other, self))

    def __rsub__(self, other):
        return elementwise.Sub.apply(_operand(other, self), self)

    def __mul__(self, other):
        return elementwise.Mul.apply(self, _operand(other, self))

    def __rmul__(self, other):
        return elementwise.Mul.apply(_operand(other, self), self)

    def __truediv__(self, other):
        return elementwise.Div.apply(self, _operand(other, self))

    def __rtruediv__(self, other):
        return elementwise.Div.apply(_operand(other, self), self)

    def __pow__(self, exponent):
        if isinstance(exponent, numbers.Number):
            return elementwise.PowConstant.apply(self, exponent=exponent)
        return elementwise.Pow.apply(self, _operand(exponent, self))

    def __rpow__(self, base):
        return elementwise.Pow.apply(_operand(base, self), self)

    def __matmul__(self, other):
        return linalg.matmul(self, _operand(other, self))

    def __rmatmul__(self, other):
        return linalg.matmul(_operand(other, self), self)

    def __neg__(self):
        return elementwise.Neg.apply(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return elementwise.Abs.apply(self)

    def __getitem__(self, index):
        return shape_ops.GetItem.apply(self, index=_index(index))

    # comparisons give bool tensors, outside the graph

    def __lt__(self, other):
        return Tensor._make(self._data < _data(other))

    def __le__(self, other):
        return Tensor._make(self._data <= _data(other))

    def __gt__(self, other):
        return Tensor._make(self._data > _data(other))

    def __ge__(self, other):
        return Tensor._make(self._data >= _data(other))

    def __eq__(self, other):
        return Tensor._make(self._data == _data(other))

    def __ne__(self, other):
        return Tensor._make(self._data != _data(other))

    def __and__(self, other):
        return Tensor._make(self._data & _data(other))

    def __or__(self, other):
        return Tensor._make(self._data | _data(other))

    def __xor__(self, other):
        return Tensor._make(self._data ^ _data(other))

    def __invert__(self):
        return Tensor._make(~self._data)

    # -- methods with PyTorch's names --------------------------------------------------------

    def add(self, other):
        return self + other

    def sub(self, other):
        return self - other

    def mul(self, other):
        return self * other

    def div(self, other):
        return self / other

    def pow(self, exponent):
        return self**exponent

    def neg(self):
        return -self

    def abs(self):
        return abs(self)

    def square(self):
        return self * self

    def matmul(self, other):
        return self @ other

    def mm(self, other):
        return self @ other

    def exp(self):
        return elementwise.Exp.apply(self)

    def log(self):
        return elementwise.Log.apply(self)

    def sqrt(self):
        return elementwise.Sqrt.apply(self)

    def sin(self):
        return elementwise.Sin.apply(self)

    def cos(self):
        return elementwise.Cos.apply(self)

    def tanh(self):
        return elementwise.Tanh.apply(self)

    def sigmoid(self):
        return elementwise.Sigmoid.apply(self)

    def relu(self):
        return elementwise.Relu.apply(self)

    def erf(self):
        return special.Erf.apply(self)

    def softplus(self):
        return special.Softplus.apply(self)

    def log1p(self):
        return (self + 1.0).log()

    def sign(self):
        return Tensor._make(xp.sign(self._data))

    def clamp(self, min=None, max=None):
        return elementwise.clamp(self, min, max)

    clip = clamp

    def maximum(self, other):
        return elementwise.Maximum.apply(self, _operand(other, self))

    def minimum(self, other):
        return elementwise.Minimum.apply(self, _operand(other, self))

    def where(self, condition, other):
        return elementwise.where(condition, self, other)

    def sum(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return reductions.sum(self, _dim(dim, axis), _keep(keepdim, keepdims))

    def mean(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return reductions.mean(self, _dim(dim, axis), _keep(keepdim, keepdims))

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return reductions.var(self, dim, unbiased, keepdim, correction)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return reductions.std(self, dim, unbiased, keepdim, correction)

    def max(self, dim=None, keepdim=False):
        return reductions.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return reductions.min(self, dim, keepdim)

    def logsumexp(self, dim, keepdim=False):
        return reductions.logsumexp(self, dim, keepdim)

    def softmax(self, dim):
        return reductions.Softmax.apply(self, dim=dim)

    def log_softmax(self, dim):
        return reductions.LogSoftmax.apply(self, dim=dim)

    def argmax(self, dim=None, keepdim=False):
        return reductions.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return reductions.argmin(self, dim, keepdim)

    def all(self):
        return Tensor._make(self._data.all())

    def any(self):
        return Tensor._make(self._data.any())

    def reshape(self, *shape):
        return shape_ops.reshape(self, shape)

    def view(self, *shape):
        return shape_ops.reshape(self, shape)

    def view_as(self, other):
        return shape_ops.reshape(self, other.shape)

    def flatten(self, start_dim=0, end_dim=-1):
        return shape_ops.flatten(self, start_dim, end_dim)

    def transpose(self, dim0, dim1):
        return shape_ops.transpose(self, dim0, dim1)

    def t(self):
        if self.ndim > 2:
            raise ValueError(f"t() expects a tensor of at most 2 dimensions, got shape {self.shape}")
        return self.T

    def permute(self, *dims):
        return shape_ops.permute(self, dims)

    def unsqueeze(self, dim):
        return shape_ops.unsqueeze(self, dim)

    def squeeze(self, dim=None):
        return shape_ops.squeeze(self, dim)

    def expand(self, *sizes):
        return shape_ops.expand(self, sizes)

    def expand_as(self, other):
        return shape_ops.expand(self, other.shape)


class _HookHandle:
    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def run_hooks(hooks, grad):
    """Call each hook on the gradient in turn; a hook that returns a tensor replaces it."""
    for hook in hooks:
        replaced = hook(grad)
        if replaced is not None:
            grad = replaced
    return grad


def _owned(grad):
    """``grad``, or a copy where it may be shared: a view of another array, or a
    tensor already stored as some other tensor's ``.grad`` (x + y sends the same
    gradient to both). Stored gradients may then be changed in place safely."""
    data = grad._data
    if grad._stored or data.base is not None or not data.flags.writeable:
        grad = Tensor._make(data.copy())
    grad._stored = True
    return grad


def _operand(value, like):
    """A Tensor for the other operand of ``like`` op ``value``. A Python number
    takes like's dtype when like is floating, as PyTorch's scalars do (float32
    stays float32). An integer tensor with a float follows NumPy (float64)."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, numbers.Number) and not isinstance(value, bool):
        kind = like._data.dtype.kind
        if kind == "f":
            return Tensor._make(xp.asarray(value, dtype=like._data.dtype))
        if isinstance(value, float):
            return Tensor._make(xp.asarray(value, dtype=backend.get_default_dtype()))
    return Tensor(value)


def _data(value):
    return value._data if isinstance(value, Tensor) else value


def _index(index):
    """An index with the Tensors in it replaced by their arrays."""
    if isinstance(index, tuple):
        return tuple(_data(i) for i in index)
    return _data(index)


def _dim(dim, axis):
    return axis if dim is None else dim


def _keep(keepdim, keepdims):
    return keepdim if keepdims is None else keepdims


# The ops create Tensors, so they are imported once Tensor exists.
from . import differentiate  # noqa: E402
from .grad_mode import is_grad_enabled, no_grad  # noqa: E402
from .ops import elementwise, linalg, reductions, special  # noqa: E402
from .ops import shape as shape_ops  # noqa: E402

