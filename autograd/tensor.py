"""``Tensor``: an n-dimensional array that records the operations made with it.

A Tensor wraps an array of the array module (``._data``). When it requires grad, every operation on it creates a
``Primitive`` node (``.grad_fn``) that remembers its inputs, so ``backward()`` can run the chain rule through them.
Leaves (tensors made by the user) collect dL/dleaf in ``.grad``.

The arithmetic lives in ``autograd.ops``: each op declares the Tensor methods, Python operators and ``autograd``
functions it provides (``autograd.ops.names``), so this file holds only what a tensor is: its array, its place in
the graph, the one door through which its memory is written is a base class (``write_door.py``), how it is pickled
and deep-copied another (``tensor_copying.py``), and its conversions to numbers, lists and NumPy arrays a third
(``tensor_conversions.py``).
"""

import numbers
import operator
import warnings
import weakref

import numpy

from . import backend
from .backend import xp
from .device import legacy_device_checked
from .dtype_objects import _MADE, torch_dtype
from .errors import DtypeError, ShapeError, refuse_ragged
from .graph import accumulate_grad, as_program_code, modes, program_stacklevel, run_hooks, run_hooks_on_leaf_gradient
from .hooks import add_hook
from .meta import MetaArray
from .size import Size, refuse_negative_sizes
from .tensor_conversions import Conversions
from .tensor_copying import Copying
from .write_door import WriteDoor

_ALL_NUMBERS = object()  # (what _first_leaf_not_a_number finds where every leaf is a number: None may be a leaf)


def _first_leaf_not_a_number(data):
    """The first element of a (nested) list or tuple that is neither a number nor an array."""
    if isinstance(data, (list, tuple)):
        for item in data:
            leaf = _first_leaf_not_a_number(item)
            if leaf is not _ALL_NUMBERS:
                return leaf
        return _ALL_NUMBERS
    return _ALL_NUMBERS if isinstance(data, (numbers.Number, Tensor, xp.ndarray, numpy.ndarray, numpy.generic)) \
        else data


def _could_not_infer(leaf):
    """PyTorch's words for a value of no dtype (None, a dict, an object), before ours; none for a string."""
    return "" if isinstance(leaf, (str, bytes)) else f"Could not infer dtype of {type(leaf).__name__}: "


def as_array(data, dtype=None):
    """An array of the array module for ``data``, with the contract's dtype rules:
    Python floats become the default dtype; arrays keep a floating dtype."""
    if isinstance(data, Tensor):
        data = data._data
    if type(data) is MetaArray:  # (no values to convert: a meta tensor's array stays one)
        return data if dtype is None or data.dtype == dtype else data.astype(dtype)
    if isinstance(data, (str, bytes, dict, set)) or data is None:
        # (PyTorch: a TypeError for a string, "Could not infer dtype" (a RuntimeError) for the others)
        error = TypeError if isinstance(data, (str, bytes)) else DtypeError
        raise error(f"{_could_not_infer(data)}cannot make a tensor from {type(data).__name__} {data!r:.40}: "
                    "expected a number, a (nested) list of numbers or an array")
    if dtype is not None:
        return xp.asarray(data, dtype=dtype)
    is_array = isinstance(data, (xp.ndarray, numpy.ndarray, numpy.generic))
    try:
        array = xp.asarray(data)
    except ValueError as error:  # ragged lists
        refuse_ragged(data)
        raise ValueError(f"cannot make a tensor from {data!r:.60}: {error}") from None
    if array.dtype.kind not in "biufc":
        leaf = _ALL_NUMBERS if is_array else _first_leaf_not_a_number(data)
        known = leaf is not _ALL_NUMBERS
        error = DtypeError if known and not isinstance(leaf, (str, bytes)) else TypeError
        raise error(f"{_could_not_infer(leaf) if known else ''}cannot make a tensor of {array.dtype} values "
                    f"from {data!r:.60}: expected numbers or booleans")
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
    array = as_array(data, dtype)
    if requires_grad and array.dtype.kind not in "fc":  # (a factory's words, as PyTorch's)
        raise DtypeError(f"Only Tensors of floating point and complex dtype can require gradients (got {array.dtype} "
                         f"of shape {tuple(array.shape)})")
    return Tensor(array, requires_grad, array.dtype)  # (a dtype given: no legacy conversion of integers)


SUBCLASS_WATCHERS = []  # called with each subclass of Tensor once it is defined (see __init_subclass__)


_NO_GRAD_TO_HOOK = "cannot register a hook on a tensor that doesn't require gradient"


class Tensor(Conversions, Copying, WriteDoor):
    # every tensor sets these five; the rest keep their class-level default until set (an
    # instance dict is made only then), so wrapping a computed array costs five stores
    __slots__ = ("_data", "_requires_grad", "grad_fn", "_version_cell", "_shared", "__dict__", "__weakref__")
    _grad = None  # dL/dself for a leaf (or a tensor that retains its grad), after backward: .grad
    _sparse_gradient = None  # a gradient's sparse form, stored as a leaf's .grad (Embedding's sparse=True)
    _hooks = None  # hooks run on dL/dself (a leaf's; a computed tensor's live on its grad_fn)
    _post_hooks = None  # hooks run after dL/dself is added to .grad
    _accumulate_post_hooks = None  # its AccumulateGrad node's hooks (register_hook), run after those
    _accumulate_pre_hooks = None  # a leaf's AccumulateGrad pre-hooks: after _hooks, before .grad is written
    _base = None  # for a view: the tensor whose memory it shows
    _view_chain = None  # for a view: the ops that make it from its base
    _views = None  # for a base: its live views (a weak set), re-derived after a recorded write
    _inference = False  # made in inference_mode: never part of a graph (see _refuse_inference_write)
    _made_in_no_grad = False  # a view made under no_grad ("no_grad") or in inference_mode ("inference"), or a view
    # of one: its recorded writes are refused (_refuse_write_into_no_grad_view), and so is a backward through it
    # after a recorded write into its base (write_door._rederive_views)
    _no_gradient_edge = False  # such a view requires grad through its base but has no AccumulateGrad: a pass stores
    # nothing there (receive), until requires_grad_(True) gives it one of its own, as PyTorch's
    _made_by_function = None  # an output of a custom Function that shows one of its inputs' memory (returned as it
    # is, or a view), or a view of one: (output index, Function name, whether it had several tensor outputs); its
    # recorded writes are refused (see _refuse_write_into_function_output). A view of it keeps the mark.
    __hash__ = object.__hash__  # identity: == is elementwise, but tensors key dicts in the engine
    __array_priority__ = 1000  # ndarray * Tensor calls Tensor.__rmul__
    parents = ()  # a leaf is where the graph ends

    def __new__(cls, *args, **kwargs):
        """A subclass's own ``__new__`` that calls ``super().__new__(cls, data, ...)`` gets a tensor made from
        those arguments, as PyTorch's (where ``__new__`` makes every tensor and ``__init__`` does nothing);
        ``Tensor(data)`` itself, and a subclass without a ``__new__`` of its own, are made by ``__init__``.
        ``Tensor(t)`` of a tensor is PyTorch's alias of it: a view of all of it, in its graph (AliasBackward0)."""
        if cls is Tensor and len(args) == 1 and not kwargs and isinstance(args[0], Tensor):
            return args[0].as_subclass(Tensor)
        made = object.__new__(cls)
        if (args or kwargs) and cls.__new__ is not Tensor.__new__:
            Tensor.__init__(made, *args, **kwargs)
        return made

    def __init__(self, data=(), requires_grad=False, dtype=None, *more_sizes, device=None):
        """``Tensor(data)``: an array keeps its dtype (a floating one, float64, too) and a Tensor is
        aliased (``__new__``); Python data (lists, numbers) becomes the default floating dtype, as PyTorch's
        ``torch.Tensor`` makes it (``autograd.tensor`` is the one that infers int64 and bool).
        PyTorch's legacy sizes: ``Tensor(3)``, ``Tensor(2, 3)`` and ``Tensor(Size)`` make zeros of
        those sizes (PyTorch leaves them unset), ``Tensor()`` an empty one; with a ``dtype`` a number
        is a value (``Tensor(3, dtype=float64)`` holds 3.0). As PyTorch's, any other number is refused
        (``Tensor(2.5)``: a float is no size, and data must be a sequence), and so are complex values."""
        if type(self) is not Tensor and hasattr(self, "_data"):  # made by __new__ already: a subclass's
            return  # ``super().__init__()`` after ``super().__new__(cls, data)`` keeps it, as PyTorch's
        legacy_device_checked(device, data)
        if type(data) is not _ndarray or dtype is None and data.dtype.kind in "biu":  # (the package's own
            # calls pass a floating array, or a dtype: two tests for them)
            if isinstance(data, Tensor) and hasattr(self, "_data"):
                return  # Tensor(t): the alias __new__ made
            data, requires_grad, dtype = _legacy_arguments(data, requires_grad, dtype, more_sizes)
        self._data = as_array(data, dtype)
        self.grad_fn = None
        self._version_cell = [0, 0, 0]  # [last write's clock time, writes, the one before's]: graph.bump_version
        self._shared = False  # the buffer may be held elsewhere (a hook saw it, a .grad stores it)
        self._requires_grad = False
        if modes.inference:  # (a factory or a constructor inside inference_mode)
            self._inference = True
        if requires_grad:
            self.requires_grad_(True)

    def __init_subclass__(cls, **kwargs):
        """Each class of tensor (nn.Parameter, a program's own) is made known to what keeps a table by exact
        class: autograd.multiprocessing's pickler, which must send every one of them by its segment. The first
        class that takes part in calls (``__torch_function__``, not switched off as nn.Parameter's is) has every
        public function and method dispatch from then on (overrides.py: until then none pays for it)."""
        super().__init_subclass__(**kwargs)
        for watcher in SUBCLASS_WATCHERS:
            watcher(cls)
        from . import overrides

        if overrides._takes_part(cls):
            overrides.install()

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """The default: ``func`` run with the protocol off, its Tensor results given back as ``cls`` (a subclass
        keeps its class through every op); NotImplemented where another class taking part is not one of cls's
        bases (it answers instead). A subclass may override it (see overrides.py)."""
        from .overrides import DisableTorchFunctionSubclass, convert

        if not all(issubclass(cls, other) for other in types):
            return NotImplemented
        with DisableTorchFunctionSubclass():
            return convert(func(*args, **(kwargs or {})), cls)

    @staticmethod
    def _make_subclass(cls, data, require_grad=False, dispatch_sizes_strides_policy=None, dispatch_device=False,
                       dispatch_layout=False):
        """PyTorch's: a tensor of class ``cls`` on ``data``'s memory, cut from its graph, requiring grad as asked
        (what a subclass's ``__new__`` calls)."""
        made = Tensor._make(data._data)  # (not a view of data: its __dict__ holds the subclass's own attributes
        made._version_cell = data._version_cell  # only, which accelerate rebuilds a parameter from)
        made.__class__ = cls
        made.requires_grad_(require_grad)
        return made

    @staticmethod
    def _make(data):
        """Wrap an array the library just computed (no copying, no checks)."""
        tensor = object.__new__(Tensor)
        tensor._data = data if type(data) is _ndarray or type(data) is _host_ndarray else \
            data if type(data) is MetaArray else xp.asarray(data)  # (a NumPy scalar, a subclass as an array; a meta
        # tensor's view as itself: it has no values to convert; under CuPy a NumPy array stays one: a tensor moved
        # to the CPU, ops/devices.py)
        tensor._requires_grad = False
        tensor.grad_fn = None
        tensor._version_cell = [0, 0, 0]
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
        """``x.data = value``: x now holds value's memory, of any shape and dtype (model surgery:
        ``layer.weight.data = layer.weight.data[:k]``), as PyTorch's; it stays the same tensor for the graph
        and the optimizers that hold it. Views of x made before keep the memory they showed."""
        if not isinstance(value, Tensor):
            raise TypeError(f"Variable data has to be a tensor, but got {type(value).__name__}")
        if self._requires_grad and value._data.dtype.kind not in "fc":
            raise RuntimeError("data set to a tensor that requires gradients must be floating point or complex "
                               f"dtype (got {value.dtype} for a tensor of shape {tuple(self.shape)})")
        self._data = value._data
        self._views = None

    @data.deleter
    def data(self):
        raise RuntimeError("Deleting tensor data is not allowed. Delete tensor instead!")

    @property
    def _version(self):
        """How many in-place writes this tensor's memory has had (PyTorch's ``x._version``); an inference
        tensor has no count to show, as PyTorch's."""
        if self._inference:
            raise RuntimeError("Inference tensors do not track version counter.")
        return self._version_cell[1]

    @property
    def shape(self):
        """The sizes of the dims, a Size (PyTorch's torch.Size: a tuple with ``numel()``)."""
        return tuple.__new__(Size, self._data.shape)  # (NumPy's shape is a tuple of ints: nothing to check)

    @property
    def ndim(self):
        return self._data.ndim

    @property
    def dtype(self):
        """PyTorch's dtype object for the array's NumPy dtype (dtype_objects.py)."""
        return _MADE.get(self._data.dtype) or torch_dtype(self._data.dtype)

    @property
    def grad(self):
        """dL/dself, stored by backward for a leaf (or a tensor that retains its grad); None before.
        Reading it on a computed tensor that does not retain it warns, as PyTorch's: it stays None."""
        if self._grad is None and self.grad_fn is not None and self.grad_fn.retained is None:
            warnings.warn(NON_LEAF_GRAD, UserWarning, stacklevel=program_stacklevel())
        return self._grad

    @grad.setter
    def grad(self, value):
        """As PyTorch's: None, or a Tensor of this tensor's shape and dtype (an optimizer would
        otherwise apply a gradient that belongs to some other tensor)."""
        if value is not None:
            if not isinstance(value, Tensor):
                raise TypeError(f"assigned grad expected to be a Tensor or None but got grad of type "
                                f"{type(value).__name__}")
            if value is self:  # (its values would change under it with every step that uses it)
                raise RuntimeError("can't assign Variable as its own grad")
            if value._data.dtype != self._data.dtype:  # (checked first, as PyTorch's)
                from .ops.conversion import c_name, type_name  # (an error's words: conversion imports this module)

                # (PyTorch's first two sentences; its grad_dtype, which would allow another dtype, is not built)
                raise DtypeError(f"attempting to assign a gradient with dtype '{c_name(value.dtype)}' to a tensor "
                                 f"with grad_dtype '{type_name(self.dtype)}'. The gradient must match the tensor's "
                                 f"grad_dtype (defaults to the tensor's dtype). (a gradient of {value.dtype} for a "
                                 f"tensor of {self.dtype}: convert it with .to({self.dtype}))")
            if value._data.shape != self._data.shape:
                raise ShapeError(f"attempting to assign a gradient of size {list(value.shape)} to a tensor of "
                                 f"size {list(self.shape)}. Please ensure that the gradient and the tensor are "
                                 "the same size")
        self._grad = value

    @grad.deleter
    def grad(self):
        self._grad = None

    @property
    def output_nr(self):
        """Which output of its grad_fn this tensor is (PyTorch's): 0 for a leaf and a one-output op."""
        return getattr(self.grad_fn, "output_nr", 0)

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def size(self, dim=None, *, axis=None):
        """The shape as a ``Size`` (PyTorch's), or its length along ``dim`` (NumPy's ``axis`` too, as PyTorch's)."""
        dim, shape = axis if dim is None else dim, self._data.shape
        if dim is None:
            return self.shape
        if type(dim) is not int or not -len(shape) <= dim < len(shape):  # (PyTorch's errors: ops/axes.py)
            from .ops.axes import size_dim

            dim = size_dim(dim, len(shape))
        return shape[dim]

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
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return iter(self.unbind(0))  # (PyTorch's: the rows are UnbindBackward0's views, refused in-place writes)

    def __contains__(self, element):
        """``element in x``: whether any element of x equals it (a number or a tensor that broadcasts), as
        PyTorch's."""
        if not isinstance(element, (Tensor, numbers.Number)):
            raise RuntimeError(f"Tensor.__contains__ only supports Tensor or scalar, but you passed in a "
                               f"{type(element)}.")
        return bool((self == element).any())

    def __repr__(self):
        from .printing import tensor_repr  # PyTorch's layout, in its own module

        return tensor_repr(self)

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
        order = getattr(memory_format, "order", None)
        if order is None:
            return bool(self._data.flags.c_contiguous)
        return self._data.ndim == len(order) and bool(self._data.transpose(order).flags.c_contiguous)

    def contiguous(self, *, memory_format=None):
        """Itself when laid out so (row-major, or N, H, W, C for channels_last), else such a copy (recorded, as
        PyTorch's)."""
        if self.is_contiguous(memory_format):
            return self
        from .constants import contiguous_format  # (constants builds on this module)

        return self.clone(memory_format=memory_format or contiguous_format)

    # -- autograd -----------------------------------------------------------------------

    def detach_(self):
        """Cut this tensor from the graph in place: it becomes a leaf that does not require grad. A view refuses, with
        or without a graph, as PyTorch's (its base would go on recording what is written through it)."""
        if self._base is not None:
            raise RuntimeError("Can't detach views in-place. Use detach() instead. If you are using "
                               "DistributedDataParallel (DDP) for training, and gradient_as_bucket_view is set as "
                               "True, gradients are views of DDP buckets, and hence detach_() cannot be called on "
                               "these gradients. To fix this error, please refer to the Optimizer.zero_grad() "
                               "function in torch/optim/optimizer.py as the solution.")
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
        if requires_grad and self._data.dtype.kind not in "fc":  # (the flag's words, as PyTorch's)
            raise DtypeError(f"only Tensors of floating point and complex dtype can require gradients (got a "
                             f"{self._data.dtype} tensor of shape {tuple(self.shape)})")
        self.requires_grad_(bool(requires_grad))

    # The flag is a slot read directly where it is hot (the engine, Primitive.apply); the public attribute
    # reads it through a C-level getter and checks what is written.
    def _refuse_deleting_requires_grad(self):
        raise RuntimeError("requires_grad must be a bool: it cannot be deleted")

    requires_grad = property(operator.attrgetter("_requires_grad"), _set_requires_grad, _refuse_deleting_requires_grad,
                             doc="Whether operations on this tensor are recorded, so that backward() reaches it.")

    def requires_grad_(self, requires_grad=True):
        if requires_grad and self._data.dtype.kind not in "fc":
            raise DtypeError(
                f"only Tensors of floating point dtype can require gradients (got a {self._data.dtype} "
                f"tensor of shape {tuple(self.shape)}; convert it first with .float() or .double())"
            )
        if requires_grad and self._inference and not modes.inference:
            raise RuntimeError("Setting requires_grad=True on inference tensor outside InferenceMode is not allowed "
                               f"(a tensor of shape {tuple(self.shape)} made in inference_mode): clone() it first.")
        if not requires_grad and self.grad_fn is not None:
            raise RuntimeError(
                "you can only change requires_grad flags of leaf variables. If you want to use a computed "
                "variable in a subgraph that doesn't require differentiation use var_no_grad = var.detach()."
            )
        if (self._made_in_no_grad or self._no_gradient_edge) and self._requires_grad:  # a view that requires grad
            if not requires_grad:  # through its base (made under no_grad, or before the base was asked to):
                return self  # it does whatever its own flag says (PyTorch's)
            self._no_gradient_edge = False  # asked for: now a leaf of its own, whose .grad a pass fills
        self._requires_grad = bool(requires_grad)
        if self._views and self.grad_fn is None:
            self._pass_flag_to_views()
        return self

    def retain_grad(self):
        """Keep dL/dself in ``.grad`` after backward, for a tensor that is not a leaf."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.grad_fn is not None:
            self.grad_fn.retained = weakref.ref(self)

    @property
    def retains_grad(self):
        return self.grad_fn is not None and self.grad_fn.retained is not None

    # (PyTorch's words, which programs match: a DEQ's hook on its fixed point is registered only where it has grad)
    def register_hook(self, hook):
        """Call ``hook(grad)`` with dL/dself during backward; a returned tensor replaces grad.
        Returns a handle whose ``remove()`` unregisters it."""
        if not self.requires_grad:
            raise RuntimeError(_NO_GRAD_TO_HOOK)
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

    def _register_accumulate_posthook(self, hook):
        if self._accumulate_post_hooks is None:
            self._accumulate_post_hooks = {}
        return add_hook(self._accumulate_post_hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """Call ``hook(self)`` after dL/dself has been added to ``self.grad`` (leaves only),
        as PyTorch's: data-parallel training starts averaging a gradient from here."""
        if self.grad_fn is not None:
            raise RuntimeError("post accumulate grad hooks cannot be registered on non-leaf tensors")
        if not self.requires_grad:
            raise RuntimeError(_NO_GRAD_TO_HOOK)
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
        differentiate.backward([self], None if gradient is None else differentiate.as_tuple(gradient),
                               retain_graph=bool(retain_graph) or create_graph,
                               create_graph=create_graph, inputs=inputs)

    # the engine's interface, for a leaf (see autograd.engine)

    def receive(self, grad):
        if self._no_gradient_edge:  # a view made under no_grad: it has no AccumulateGrad, so, as in PyTorch, its
            return None  # hooks do not run and its .grad stays as it was
        if self._hooks:
            grad = run_hooks_on_leaf_gradient(self._hooks, grad)
        if self._accumulate_pre_hooks:
            grad = run_hooks(self._accumulate_pre_hooks, grad)
        accumulate_grad(self, grad)
        if self._post_hooks:
            for hook in list(self._post_hooks.values()):
                returned = as_program_code(hook, self)  # None, or self (p.add_(...)'s result), as PyTorch's
                if returned is not None and returned is not self:
                    if not isinstance(returned, Tensor):
                        raise TypeError(f"expected Variable, but hook returned '{type(returned).__name__}'")
                    raise RuntimeError("Tensor post accumulate grad hooks should return None.")
        if self._accumulate_post_hooks:  # (AccumulateGrad.register_hook: after the tensor's own, as PyTorch's)
            grad_outputs = (grad,)
            for hook in list(self._accumulate_post_hooks.values()):
                as_program_code(hook, (), grad_outputs)
        return grad

    def run_hooks(self, grad):
        if self._no_gradient_edge:  # (autograd.grad of a view made under no_grad: no edge leads to it, as above)
            return None
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

    # comparisons give bool tensors, outside the graph

    def __invert__(self):
        if self._data.dtype.kind not in "biu":
            raise TypeError("~ (operator.invert) is only implemented on integer and Boolean-type tensors")
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
        refuse_negative_sizes(sizes)
        return xp.zeros(sizes, dtype=backend.get_default_dtype() if dtype is None else dtype), requires_grad, dtype
    if dtype is None and isinstance(data, (numbers.Number, numpy.bool_)):  # (an int is a size, above)
        kind = type(data).__name__ if type(data).__module__ == "builtins" else \
            f"{type(data).__module__.split('.')[0]}.{type(data).__name__}"
        raise TypeError(f"new(): data must be a sequence (got {kind})")
    if dtype is None and isinstance(data, (list, tuple, range, _ndarray, _host_ndarray)):
        from_python = isinstance(data, (list, tuple, range))
        data = as_array(data)
        if from_python and data.dtype.kind == "c":  # (a complex array keeps its values: nothing is lost)
            raise TypeError("must be real number, not complex")
        if data.dtype.kind in "biu":  # integers and bools become the default float, as PyTorch's
            data = data.astype(backend.get_default_dtype())
    return data, requires_grad, dtype


# backward() starts the engine, which works on Tensors: imported once Tensor exists
from . import differentiate  # noqa: E402

