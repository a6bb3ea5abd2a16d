"""``Tensor``: an n-dimensional array that records the operations made with it.

A Tensor wraps an array of the array module (``._data``). When it requires
grad, every operation on it creates a ``Primitive`` node (``.grad_fn``) that
remembers its inputs, so ``backward()`` can run the chain rule through them.
Leaves (tensors made by the user) collect dL/dleaf in ``.grad``.

The arithmetic lives in ``autograd.ops``: each op declares the Tensor methods,
Python operators and ``autograd`` functions it provides (``autograd.ops.names``),
so this file holds only what a tensor is: its array, its place in the graph,
its conversions, and the one door through which its memory is written.
"""

import math
import numbers
import operator
import warnings
import weakref

import numpy

from . import backend
from .backend import xp
from .errors import DtypeError, ShapeError, refuse_unordered
from .graph import accumulate_grad, bump_version, modes, no_grad, run_hooks
from .hooks import add_hook
from .size import Size


def as_array(data, dtype=None):
    """An array of the array module for ``data``, with the contract's dtype rules:
    Python floats become the default dtype; arrays keep a floating dtype."""
    if isinstance(data, Tensor):
        data = data._data
    if isinstance(data, (str, bytes, dict, set)) or data is None:
        raise TypeError(f"cannot make a tensor from {type(data).__name__} {data!r:.40}: expected a number, "
                        "a (nested) list of numbers or an array")
    if dtype is not None:
        return xp.asarray(data, dtype=dtype)
    is_array = isinstance(data, (xp.ndarray, numpy.ndarray, numpy.generic))
    try:
        array = xp.asarray(data)
    except ValueError as error:  # ragged lists
        raise ValueError(f"cannot make a tensor from {data!r:.60}: {error}") from None
    if array.dtype.kind not in "biufc":
        raise TypeError(f"cannot make a tensor of {array.dtype} values from {data!r:.60}: "
                        "expected numbers or booleans")
    if not is_array and array.dtype == backend.float64:
        array = array.astype(backend.get_default_dtype())
    elif not is_array and array.dtype == numpy.complex128:
        array = array.astype(backend.get_default_complex_dtype())
    return array


_ndarray = xp.ndarray  # what the ops return: wrapped as it is
_host_ndarray = numpy.ndarray  # the same under NumPy; under CuPy, what x.cpu() holds

NON_LEAF_GRAD = (
    "The .grad attribute of a Tensor that is not a leaf Tensor is being accessed. Its .grad attribute won't be "
    "populated during autograd.backward(). If you indeed want the .grad field to be populated for a non-leaf "
    "Tensor, use .retain_grad() on the non-leaf Tensor. If you access the non-leaf Tensor by mistake, make sure "
    "you access the leaf Tensor instead."
)


def tensor_from(data, dtype=None, requires_grad=False):
    """A Tensor holding ``data`` (a number, a nested list, an array or a Tensor) with ``autograd.tensor``'s
    dtypes (integers stay int64, bools bool) and an array's memory shared: what the package itself
    makes tensors with, since ``Tensor(...)`` is PyTorch's legacy constructor (lists become floats)."""
    return Tensor(as_array(data, dtype), requires_grad=requires_grad)


class Tensor:
    # every tensor sets these five; the rest keep their class-level default until set (an
    # instance dict is made only then), so wrapping a computed array costs five stores
    __slots__ = ("_data", "_requires_grad", "grad_fn", "_version_cell", "_shared", "__dict__", "__weakref__")
    _grad = None  # dL/dself for a leaf (or a tensor that retains its grad), after backward: .grad
    _hooks = None  # hooks run on dL/dself (a leaf's; a computed tensor's live on its grad_fn)
    _post_hooks = None  # hooks run after dL/dself is added to .grad
    _accumulate_pre_hooks = None  # a leaf's AccumulateGrad pre-hooks: after _hooks, before .grad is written
    _base = None  # for a view: the tensor whose memory it shows
    _view_chain = None  # for a view: the ops that make it from its base
    _views = None  # for a base: its live views (a weak set), re-derived after a recorded write
    _inference = False  # made in inference_mode: never part of a graph (see _refuse_inference_write)
    __hash__ = object.__hash__  # identity: == is elementwise, but tensors key dicts in the engine
    __array_priority__ = 1000  # ndarray * Tensor calls Tensor.__rmul__
    parents = ()  # a leaf is where the graph ends

    def __init__(self, data=(), requires_grad=False, dtype=None, *more_sizes):
        """``Tensor(data)``: an array keeps its dtype (a floating one, float64, too) and a Tensor is
        shared; Python data (lists, numbers) becomes the default floating dtype, as PyTorch's
        ``torch.Tensor`` makes it (``autograd.tensor`` is the one that infers int64 and bool).
        PyTorch's legacy sizes: ``Tensor(3)``, ``Tensor(2, 3)`` and ``Tensor(Size)`` make zeros of
        those sizes (PyTorch leaves them unset), ``Tensor()`` an empty one; with a ``dtype`` a number
        is a value (``Tensor(3, dtype=float64)`` holds 3.0). As PyTorch's, any other number is refused
        (``Tensor(2.5)``: a float is no size, and data must be a sequence), and so are complex values."""
        if type(data) is not _ndarray:  # (the package's own calls pass an array: one test for them)
            data, requires_grad, dtype = _legacy_arguments(data, requires_grad, dtype, more_sizes)
        self._data = as_array(data, dtype)
        self.grad_fn = None
        self._version_cell = [0, 0]  # [clock time of the last write, writes so far]: shared by views
        self._shared = False  # the buffer may be held elsewhere (a hook saw it, a .grad stores it)
        self._requires_grad = False
        if modes.inference:  # (a factory or a constructor inside inference_mode)
            self._inference = True
        if requires_grad:
            self.requires_grad_(True)

    def __getstate__(self):
        """Pickling and copy.deepcopy keep a tensor's values, flags and graph attributes but not the weak
        set of its live views (a weak set cannot be pickled, and those views are not the copy's)."""
        attributes, slots = object.__getstate__(self)
        if attributes and "_views" in attributes:
            attributes = {name: value for name, value in attributes.items() if name != "_views"}
        return attributes, slots

    @staticmethod
    def _make(data):
        """Wrap an array the library just computed (no copying, no checks)."""
        tensor = object.__new__(Tensor)
        tensor._data = data if type(data) is _ndarray or type(data) is _host_ndarray else xp.asarray(data)  # (a
        # NumPy scalar, a subclass; under CuPy a NumPy array stays one: a tensor moved to the CPU, ops/devices.py)
        tensor._requires_grad = False
        tensor.grad_fn = None
        tensor._version_cell = [0, 0]
        tensor._shared = False
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
    def _version(self):
        """How many in-place writes this tensor's memory has had (PyTorch's ``x._version``)."""
        return self._version_cell[1]

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
    def grad(self):
        """dL/dself, stored by backward for a leaf (or a tensor that retains its grad); None before.
        Reading it on a computed tensor that does not retain it warns, as PyTorch's: it stays None."""
        if self._grad is None and self.grad_fn is not None and self.grad_fn.retained is None:
            warnings.warn(NON_LEAF_GRAD, UserWarning, stacklevel=2)
        return self._grad

    @grad.setter
    def grad(self, value):
        """As PyTorch's: None, or a Tensor of this tensor's shape and dtype (an optimizer would
        otherwise apply a gradient that belongs to some other tensor)."""
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of type "
                                f"{type(value).__name__}")
            if value._data.shape != self._data.shape:
                raise ShapeError(f"attempting to assign a gradient of size {list(value.shape)} to a tensor of "
                                 f"size {list(self.shape)}. Please ensure that the gradient and the tensor are "
                                 "the same size")
            if value._data.dtype != self._data.dtype:
                raise DtypeError(f"attempting to assign a gradient with dtype {value.dtype} to a tensor with "
                                 f"dtype {self.dtype}: they must match")
        self._grad = value

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def size(self, dim=None):
        """The shape as a ``Size`` (PyTorch's), or its length along ``dim``."""
        return Size(self._data.shape) if dim is None else self._data.shape[dim]

    def dim(self):
        return self.ndim

    def numel(self):
        return self._data.size

    @property
    def itemsize(self):
        """Bytes per element."""
        return self._data.itemsize

    @property
    def nbytes(self):
        """Bytes of its elements (numel() · itemsize)."""
        return self._data.nbytes

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __repr__(self):
        from .printing import tensor_repr  # PyTorch's layout, in its own module

        return tensor_repr(self)

    # -- conversion -----------------------------------------------------------------------

    def numpy(self, *, force=False):
        """The data as a NumPy array (shared with the tensor, not copied; under CuPy a GPU tensor's
        is a copy in host memory). ``force=True``, PyTorch's way past its refusals (a tensor that
        requires grad, one on a GPU), changes nothing here: neither is refused."""
        return backend.to_numpy(self._data)

    def item(self):
        if self._data.size != 1:
            raise ShapeError(f"a Tensor with {self._data.size} elements cannot be converted to Scalar: item() needs "
                             f"one element, got shape {self.shape}")
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
        tensor._version_cell = self._version_cell
        if self._inference:
            tensor._inference = True
        return tensor

    def is_contiguous(self, memory_format=None):
        """True when the elements lie in memory in row-major order (a transpose's, or a
        convolution's batch-innermost output's, do not); with ``memory_format`` channels_last
        (channels_last_3d), in the order N, H, W, C (N, D, H, W, C)."""
        order = {"channels_last": (0, 2, 3, 1), "channels_last_3d": (0, 2, 3, 4, 1)}.get(
            getattr(memory_format, "name", None))
        if order is None:
            return bool(self._data.flags.c_contiguous)
        return self._data.ndim == len(order) and bool(self._data.transpose(order).flags.c_contiguous)

    def contiguous(self, memory_format=None):
        """Itself when contiguous, else a row-major copy (recorded, as PyTorch's)."""
        return self if self._data.flags.c_contiguous else self.clone()

    # -- autograd -----------------------------------------------------------------------

    def detach_(self):
        """Cut this tensor from the graph in place: it becomes a leaf that does not require grad."""
        if self._base is not None and self.grad_fn is not None:
            raise RuntimeError("detach_() on a view of a tensor with a graph: use detach() (out of place)")
        self.grad_fn = None
        self._requires_grad = False
        return self

    def _set_requires_grad(self, requires_grad):
        """``x.requires_grad = flag``, with PyTorch's refusals: a flag that is not a bool, a tensor that is not
        floating-point asked to require grad (its gradient would be rounded to integers), and any change on a
        computed tensor (its flag says that a graph leads to it)."""
        if not isinstance(requires_grad, (bool, numpy.bool_)):
            raise RuntimeError(f"requires_grad must be a bool, got {type(requires_grad).__name__} {requires_grad!r}")
        if self.grad_fn is not None:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables (this tensor of shape "
                f"{tuple(self.shape)} was computed by {self.grad_fn.name()})."
                + ("" if requires_grad else " If you want to use a computed variable in a subgraph that doesn't "
                   "require differentiation use var_no_grad = var.detach().")
            )
        self.requires_grad_(bool(requires_grad))

    # The flag is a slot read directly where it is hot (the engine, Primitive.apply); the public attribute
    # reads it through a C-level getter and checks what is written.
    requires_grad = property(operator.attrgetter("_requires_grad"), _set_requires_grad,
                             doc="Whether operations on this tensor are recorded, so that backward() reaches it.")

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self._data.dtype.kind not in "fc":
            raise DtypeError(
                f"only floating-point tensors can require gradients, got a {self._data.dtype} "
                f"tensor of shape {self.shape}; convert it first with .float() or .double()"
            )
        if requires_grad and self._inference and not modes.inference:
            raise RuntimeError("Setting requires_grad=True on inference tensor outside InferenceMode is not allowed "
                               f"(a tensor of shape {tuple(self.shape)} made in inference_mode): clone() it first.")
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError(
                "requires_grad_(False) works on leaves only; use .detach() to cut a "
                "computed tensor from the graph"
            )
        self._requires_grad = bool(requires_grad)
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
                self.grad_fn.hooks = {}
            hooks = self.grad_fn.hooks
        else:
            if self._hooks is None:
                self._hooks = {}
            hooks = self._hooks
        return add_hook(hooks, hook)

    def _register_accumulate_prehook(self, hook):
        if self._accumulate_pre_hooks is None:
            self._accumulate_pre_hooks = {}
        return add_hook(self._accumulate_pre_hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(self)`` after dL/dself has been added to ``self.grad`` (leaves only),
        as PyTorch's: data-parallel training starts averaging a gradient from here."""
        if self.grad_fn is not None:
            raise RuntimeError("post-accumulate-grad hooks can only be registered on leaf tensors")
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that does not require grad")
        if self._post_hooks is None:
            self._post_hooks = {}
        return add_hook(self._post_hooks, hook)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Compute dL/dleaf for every leaf that requires grad, with L = self.

        ``gradient`` is dL/dself; it may be left out only when self holds one
        element. The graph is freed afterwards unless ``retain_graph`` is set;
        with ``create_graph`` the backward pass is recorded for higher-order
        derivatives. With ``inputs`` (tensors), only their ``.grad`` is filled.
        """
        differentiate.backward([self], None if gradient is None else [gradient],
                               retain_graph=bool(retain_graph) or create_graph,
                               create_graph=create_graph, inputs=inputs)

    # the engine's interface, for a leaf (see autograd.engine)

    def receive(self, grad):
        if self._hooks:
            grad = run_hooks(self._hooks, grad)
        if self._accumulate_pre_hooks:
            grad = run_hooks(self._accumulate_pre_hooks, grad)
        accumulate_grad(self, grad)
        if self._post_hooks:
            for hook in list(self._post_hooks.values()):
                hook(self)
        return grad

    def run_hooks(self, grad):
        return run_hooks(self._hooks, grad) if self._hooks else grad  # (no AccumulateGrad with autograd.grad)

    def _accumulate(self, grad):
        """self.grad += grad, then the post-accumulate hooks: receive without the hooks."""
        hooks, self._hooks = self._hooks, None
        try:
            self.receive(grad)
        finally:
            self._hooks = hooks

    def chain(self, grad, wanted=None):
        return ()

    def release(self):
        pass

    # -- the write door: every change to this tensor's memory passes here -------------------
    #
    # (The in-place methods that write through it, add_, mul_, fill_, copy_, +=, ..., are declared
    # by ops/in_place_arithmetic.py; every other op_ writes op's result back with _write_back.)
    # A write bumps the version (views share their base's), so a node that saved this tensor
    # can tell. When grad mode is on and the tensor or the value written requires grad, the
    # write is recorded as PyTorch records it: the new value is computed out of place from a
    # snapshot of the old one, written into this memory, and becomes this tensor's history
    # (and, for a view, its base's). A leaf that requires grad refuses in-place writes.

    def _write(self, operands, out_of_place, in_place=None, reads_old=True):
        """Change this tensor in place: ``out_of_place(old)`` gives the new value as a Tensor;
        ``in_place(array)``, where given, makes the same change on the array directly (the
        fast path, taken when nothing needs recording). A write whose new value does not read
        the old one (copy_) says ``reads_old=False``: a recorded write then copies nothing first."""
        if self._inference and not modes.inference:
            self._refuse_inference_write()
        if modes.grad_enabled and (self._requires_grad or _requires_grad(operands)):
            self._refuse_leaf_write()
            self._take(out_of_place(self._snapshot() if reads_old else None))
            return self
        if in_place is None:
            with no_grad():
                new = out_of_place(self)
            self._store(new)
        else:
            try:
                in_place(self._data)
            except (TypeError, OverflowError, ValueError):  # NumPy refused (uint8 += int64: same_kind casting;
                # -1 · uint8; an output that does not broadcast): PyTorch's result dtype, then its casting rule
                # (uint8 += int64 wraps) and its errors
                with no_grad():
                    new = out_of_place(self)
                self._store(new)
        bump_version(self)
        return self

    def _refuse_inference_write(self):
        raise RuntimeError(
            "Inplace update to inference tensor outside InferenceMode is not allowed: this tensor of shape "
            f"{tuple(self.shape)} was made in inference_mode, where nothing records what changes it. You can "
            "make a clone to get a normal tensor before doing inplace update."
        )

    def _refuse_leaf_write(self):
        if self.grad_fn is None and self.requires_grad:
            raise RuntimeError(
                f"a leaf Variable that requires grad is being used in an in-place operation "
                f"(a tensor of shape {tuple(self.shape)}): its gradient would belong to a value that "
                "no longer exists. Write it under autograd.no_grad() (a parameter update), or out of "
                "place (x = x + y)."
            )
        base = self._base
        if base is not None and base.grad_fn is None and base.requires_grad:
            raise RuntimeError(
                f"a view of a leaf Variable that requires grad is being used in an in-place operation "
                f"(a view of shape {tuple(self.shape)} of a leaf of shape {tuple(base.shape)})"
            )

    def _snapshot(self):
        """The current value, copied, at this tensor's place in the graph: the input of a
        recorded in-place op, which must not change when the result is written here."""
        old = Tensor._make(self._data.copy())
        old._requires_grad = self.requires_grad
        old.grad_fn = self.grad_fn
        return old

    def _store(self, new):
        """Copy a computed value into this memory (PyTorch's casting and broadcasting rules: a result of
        its dtype's category or a lower one is cast, so uint8 += int64 wraps; a higher one is refused)."""
        if new.dtype != self.dtype:
            _refuse_cast(new.dtype, self.dtype, self.shape)
        if new.shape != self.shape and xp.broadcast_shapes(new.shape, self.shape) != self.shape:
            raise RuntimeError(f"output with shape {tuple(self.shape)} doesn't match the broadcast "
                               f"shape {tuple(xp.broadcast_shapes(new.shape, self.shape))}")
        self._data[...] = new._data

    def _take(self, new):
        """Write a recorded value here and make it this tensor's history."""
        self._store(new)
        bump_version(self)
        old_node = self.grad_fn
        if new.dtype != self.dtype:
            new = new.to(self.dtype)
        if self._base is not None:
            self._rebase_view(new)
        else:
            if new.shape != self.shape:
                new = new.expand(self.shape)
            self.grad_fn = new.grad_fn
            self._requires_grad = new.requires_grad
        _move_retained_grad(self, old_node)
        _rederive_views(self._base if self._base is not None else self, self)

    def _rebase_view(self, new):
        """A write through a view changes its base: the base's new history replaces the viewed
        region by ``new``; the view is then re-derived from the new base."""
        base, chain = self._base, self._view_chain
        if not (new.requires_grad or base.requires_grad):
            return
        written = base._written_through_view(new, chain)
        old_base_node, base.grad_fn = base.grad_fn, written.grad_fn
        _move_retained_grad(base, old_base_node)
        base._requires_grad = True
        view = base._replay_view(chain)
        self.grad_fn = view.grad_fn
        self._requires_grad = True

    def _adopt_view_of(self, source, op, params):
        """Mark this tensor, just computed by ``op`` from ``source``, as a view of its memory."""
        if source._inference:  # (a view of an inference tensor is one, in any mode)
            self._inference = True
        if self._data.base is None:  # NumPy had to copy (a reshape of a strided array)
            return
        self._version_cell = source._version_cell  # a view and its base change together
        if not modes.grad_enabled:  # (a backward pass's own views): no write through it is recorded
            return
        if source._base is None:
            self._base, self._view_chain = source, ((op, params),)
        else:
            self._base, self._view_chain = source._base, source._view_chain + ((op, params),)
        views = self._base._views
        if views is None:
            views = self._base._views = weakref.WeakSet()
        views.add(self)  # so a recorded write to the base (or a sibling view) re-derives this one

    def _write_back(self, function, args, kwargs):
        """x.op_(...): write x.op(...) into x (the in-place twins declared by the ops)."""
        return self._write(args, lambda old: function(old, *args, **kwargs))

    def _become(self, view):
        """x.t_(), x.unsqueeze_(0), x.resize_(...): x takes the shape and strides of ``view`` (computed
        from x, with grad mode on so that a view of a view keeps its chain to the base) and, when
        the change is recorded, its history. As in PyTorch a leaf that requires grad refuses, and
        the version moves on (a node that saved x would see another shape). A base whose live
        views are replayed from its shape by recorded writes refuses too: their steps would no
        longer fit it."""
        if self._inference and not modes.inference:
            self._refuse_inference_write()
        recorded = modes.grad_enabled and self.requires_grad
        if recorded:
            self._refuse_leaf_write()
        if self._base is None and self._views and any(other is not view for other in self._views):
            raise RuntimeError(f"an in-place shape change of a tensor of shape {tuple(self.shape)} that has live "
                               "views: those views are defined on its current shape. Use the out-of-place op "
                               "(x = x.t()) or drop the views first")
        old_node = self.grad_fn
        self._data = view._data
        if recorded:
            self.grad_fn = view.grad_fn
            _move_retained_grad(self, old_node)
        if self._base is not None:
            if view._base is self._base:
                self._view_chain = view._view_chain
            else:  # resize_: no view op leads there from the base, so it stops being a view
                if not xp.may_share_memory(view._data, self._base._data):  # (grown: new memory)
                    self._version_cell = [0, self._version_cell[1]]
                self._base = self._view_chain = None
        bump_version(self)
        return self

    def _write_at(self, index, value):
        """``self[index] = value`` once the index reads as PyTorch reads it (ops/shape.py's ``__setitem__``)."""
        if type(value) is float and (self._data.dtype.kind != "f" or not -3.4e38 <= value <= 3.4e38):
            _refuse_overflow(value, self._data.dtype)  # (a float into integers, or past float32's range: may overflow)
        index = _index(index)
        if self._inference and not modes.inference:
            self._refuse_inference_write()
        if modes.grad_enabled and (self.requires_grad or (isinstance(value, Tensor) and value.requires_grad)):
            self._refuse_leaf_write()
            self._take(self._index_put(index, _operand(value, self)))
            return
        try:
            self._data[index] = _data(value)
        except (ValueError, TypeError, OverflowError) as error:  # what NumPy refuses, PyTorch's way
            self._data[index] = _written_value(self._data, index, value, error)
        bump_version(self)

    # comparisons give bool tensors, outside the graph

    def __lt__(self, other):
        return Tensor._make(xp.less(*ordered("lt", self._data, _data(other))))

    def __le__(self, other):
        return Tensor._make(xp.less_equal(*ordered("le", self._data, _data(other))))

    def __gt__(self, other):
        return Tensor._make(xp.greater(*ordered("gt", self._data, _data(other))))

    def __ge__(self, other):
        return Tensor._make(xp.greater_equal(*ordered("ge", self._data, _data(other))))

    def __eq__(self, other):
        if other is None:  # (x == None is False, as PyTorch answers it: nothing to compare elementwise)
            return False
        return Tensor._make(self._data == _data(other))

    def __ne__(self, other):
        if other is None:
            return True
        return Tensor._make(self._data != _data(other))

    def __invert__(self):
        return Tensor._make(~self._data)


def _legacy_arguments(data, requires_grad, dtype, more_sizes):
    """(data, requires_grad, dtype) of ``Tensor(data, ...)`` read as PyTorch's legacy constructor reads
    them: sizes (an int, a NumPy integer, a Size, or every argument an int) make zeros of those sizes;
    Python data becomes the default floating dtype."""
    if ((type(data) is int or isinstance(data, numpy.integer)) and (dtype is None or type(dtype) is int)) \
            or isinstance(data, Size):
        sizes = tuple(data) if isinstance(data, Size) else (int(data),)
        if type(requires_grad) is int:  # Tensor(2, 3, ...): every argument a size
            sizes += (requires_grad,) + (() if dtype is None else (dtype,)) + more_sizes
            requires_grad, dtype = False, None
        return xp.zeros(sizes, dtype=backend.get_default_dtype() if dtype is None else dtype), requires_grad, dtype
    if dtype is None and isinstance(data, (numbers.Number, numpy.bool_)):  # (an int is a size, above)
        kind = type(data).__name__ if type(data).__module__ == "builtins" else \
            f"{type(data).__module__.split('.')[0]}.{type(data).__name__}"
        raise TypeError(f"new(): data must be a sequence (got {kind})")
    if isinstance(data, (list, tuple)) and dtype is None:
        data = as_array(data)
        if data.dtype.kind == "c":
            raise TypeError("must be real number, not complex")
        if data.dtype.kind in "biu":
            data = data.astype(backend.get_default_dtype())
    return data, requires_grad, dtype


def ordered(name, x, y):
    """(x, y), two arrays or numbers to compare by order: complex numbers have none, so they are
    refused, as PyTorch refuses them (NumPy would compare them part by part)."""
    refuse_unordered(x, name)
    refuse_unordered(y, name)
    return x, y


def _refuse_cast(result, output, shape):
    """PyTorch's refusal to write a result of dtype ``result`` into a tensor of dtype ``output`` and
    ``shape`` in place: a float into integers, an integer into bools, a complex number into reals."""
    from .ops.conversion import type_name  # (the ops' table of PyTorch's dtype names; a rare path)
    from .ops.promotion import can_cast

    if not can_cast(result, output):
        raise DtypeError(f"result type {type_name(result)} can't be cast to the desired output type "
                         f"{type_name(output)} (in-place on a tensor of shape {tuple(shape)})")


def _refuse_overflow(value, dtype):
    """PyTorch's refusal of a Python number that ``dtype`` cannot hold (fill_): NaN, an infinity or a value out
    of range for integers (an unsigned dtype takes negative ints down to -max, wrapped), a finite value past the
    largest float of a floating dtype, a complex number with an imaginary part for a real dtype."""
    kind = dtype.kind
    if kind == "b":
        return
    parts = (value.real, value.imag) if type(value) is complex else (value,)
    if type(value) is complex and kind != "c" and value.imag:
        fits = False
    elif kind in "iu":
        info = numpy.iinfo(dtype)
        low = -int(info.max) if kind == "u" and type(value) is int else int(info.min)
        fits = math.isfinite(parts[0]) and low <= parts[0] <= int(info.max)
    else:
        largest = float(numpy.finfo(dtype).max)
        fits = all(not math.isfinite(part) or abs(part) <= largest for part in parts)
    if not fits:
        raise RuntimeError(f"value cannot be converted to type {dtype} without overflow")


def _written_value(array, index, value, error):
    """What ``array[index] = value`` writes where NumPy refused it with ``error``, as PyTorch writes it: a
    Python integer out of the dtype's range is cast (-1 into uint8 is 255) or refused; a number the dtype
    cannot hold (NaN or inf into integers, a complex number into reals) and a value that does not broadcast
    to the region are RuntimeErrors, not NumPy's TypeError or ValueError."""
    if isinstance(error, OverflowError) and type(value) is int:
        from .factories import _integers_cast

        return _integers_cast(value, array.dtype)
    if isinstance(value, complex) and value.imag == 0:  # (a complex number without imaginary part is its real one)
        return value.real
    if isinstance(value, numbers.Number):
        raise RuntimeError(f"value cannot be converted to type {array.dtype} without overflow") from None
    if isinstance(error, ValueError):
        raise ShapeError(f"shape mismatch: value tensor of shape {list(numpy.shape(_data(value)))} cannot be "
                         f"broadcast to indexing result of shape {list(array[index].shape)}") from None
    raise error


def _is_bool(value):
    """A bool tensor, or Python's True or False (what PyTorch will not subtract)."""
    return type(value) is bool or (isinstance(value, Tensor) and value._data.dtype.kind == "b")


def _rederive_views(base, written):
    """After a recorded write to ``base`` (or through its view ``written``), every other live view
    of it shows the new values, so its history must be the new base's: it is replayed from the
    base (PyTorch regenerates a view's grad_fn likewise when its base's version moves on)."""
    views = base._views
    if not views or base.grad_fn is None:
        return
    for view in list(views):
        if view is not written:
            old_node = view.grad_fn
            view.grad_fn = base._replay_view(view._view_chain).grad_fn
            view._requires_grad = True
            _move_retained_grad(view, old_node)


def _move_retained_grad(tensor, old_node):
    """retain_grad() follows a tensor to the value an in-place write gave it, as in PyTorch."""
    if old_node is not None and old_node.retained is not None and tensor.grad_fn is not None:
        tensor.grad_fn.retained, old_node.retained = old_node.retained, None


def _requires_grad(operands):
    for value in operands:
        if isinstance(value, Tensor) and value.requires_grad:
            return True
    return False


def _operand(value, like):
    """A Tensor for the other operand of ``like`` op ``value``. A Python number never raises
    the dtype of a tensor of its own category or above (PyTorch's rule): float32 stays
    float32, an int32 tensor plus 1 stays int32; a number of a higher category takes that
    category's default (an integer tensor times 0.5 gives the default float dtype)."""
    return value if isinstance(value, Tensor) else Tensor._make(_operand_array(value, like))


def _operand_array(value, like):
    """The array of ``_operand(value, like)``: the in-place fast paths need no Tensor around a number."""
    if isinstance(value, Tensor):
        return value._data
    array = _number_array(value, like._data.dtype)
    return as_array(value) if array is None else array


def _number_array(value, dtype):
    """A Python number as a 0-d array by ``_operand``'s rule, beside a tensor of ``dtype``;
    None for anything else (lists, arrays). (Plain ints and floats are tested
    by type first: the ABC checks cost more than the conversion.)"""
    kind = dtype.kind
    if isinstance(value, bool):
        pass  # a bool keeps the tensor's dtype
    elif type(value) is int or type(value) is not float and isinstance(value, numbers.Integral):
        dtype = dtype if kind in "iuf" else backend.int64
    elif type(value) is float or isinstance(value, numbers.Real):
        dtype = dtype if kind == "f" or kind == "c" else backend.get_default_dtype()  # (complex: its precision)
    elif isinstance(value, numbers.Complex):  # the tensor's precision, made complex (PyTorch's rule)
        dtype = dtype if kind == "c" else backend.complex_counterpart(dtype) if kind == "f" else \
            backend.get_default_complex_dtype()
    else:
        return None
    try:
        return xp.asarray(value, dtype=dtype)
    except OverflowError:  # an integer out of an integer dtype's range (uint8 and -3): cast as PyTorch casts it
        return xp.asarray(value, dtype=backend.int64).astype(dtype)


def _data(value):
    return value._data if isinstance(value, Tensor) else value


def _index(index):
    """An index with the Tensors in it replaced by their arrays."""
    if isinstance(index, tuple):
        return tuple(_data(i) for i in index)
    return _data(index)


# backward() starts the engine, which works on Tensors: imported once Tensor exists
from . import differentiate  # noqa: E402

