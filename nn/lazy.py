"""Lazy layers: ``LazyLinear``, ``LazyConv*``, ``LazyConvTranspose*``, ``LazyBatchNorm*``, ``LazyInstanceNorm*``,
which learn their input size (in_features, in_channels, num_features) from the first input they see.

Until then their parameters and buffers are ``UninitializedParameter`` / ``UninitializedBuffer``: tensors
with no values and no shape yet. The first forward (a forward pre-hook) reads the size from the input,
``materialize``s each of them in place (so an optimizer given ``parameters()`` before keeps the same
objects), initialises them as the eager layer would, and turns the module into that layer (LazyLinear
becomes a Linear). Loading a state_dict before the first forward materializes them to the saved shapes.
"""

import numpy

import autograd
from autograd import Tensor
from autograd.backend import xp
from autograd.factories import _shape  # (its negative-size RuntimeError, as autograd.empty)
from autograd.overrides import _disabled_torch_function_impl
from autograd.tensor import tensor_from

from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .instance_norm import InstanceNorm1d, InstanceNorm2d, InstanceNorm3d
from .linear import Linear
from .normalization import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .parameter import Parameter

_NO_SHAPE = ("Can't access the shape of an uninitialized parameter or buffer. This error usually happens in "
             "`load_state_dict` when trying to load an uninitialized parameter into an initialized one. Call "
             "`forward` to initialize the parameters before accessing their attributes.")


class _NoValues(numpy.ndarray):
    """The memory of a tensor to be (empty): any NumPy computation on it refuses, as PyTorch's
    ``__torch_function__`` refuses an op on an uninitialized parameter; its dtype and methods still serve
    the module (a cast by module.half(), a copy)."""

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        raise ValueError(_USED.format(what=ufunc.__name__))

    def __array_function__(self, func, types, args, kwargs):
        raise ValueError(_USED.format(what=func.__name__))


_USED = ("Attempted to use an uninitialized parameter in {what}. This error happens when you are using a "
         "`LazyModule` or explicitly manipulating `torch.nn.parameter.UninitializedParameter` objects. When "
         "using LazyModules Call `forward` with a dummy batch to initialize the parameters before calling "
         "torch functions")


class _UsedUninitialized(RuntimeError, ValueError):
    """Reading an uninitialized tensor's shape: PyTorch's RuntimeError for .shape, and the ValueError its
    functions raise for an uninitialized parameter (autograd.empty_like(p) reads the shape first)."""


def _no_values(dtype):
    empty = xp.empty(0, dtype=dtype)
    return empty.view(_NoValues) if isinstance(empty, numpy.ndarray) else empty  # (NumPy's only: not CuPy's)


class _Uninitialized:
    """A tensor whose shape is not known yet; ``materialize(shape)`` gives it one (values unset) and makes it
    the class it stands for (``cls_to_become``). Until then an op on it refuses (``_NoValues``)."""

    cls_to_become = None
    # (ops on it refuse by its missing values, not through the __torch_function__ protocol: a lazy module does not
    # switch every function to dispatching wrappers, autograd/overrides.py)
    __torch_function__ = _disabled_torch_function_impl

    @property
    def shape(self):
        raise _UsedUninitialized(_NO_SHAPE)

    def materialize(self, shape, device=None, dtype=None):
        """Storage of ``shape`` (an int or a sequence; uninitialised values) in place of none: this tensor has
        never had values, so no graph and no view can hold the old storage. The dtype is the one it was made
        with, or cast to since (module.half() before the first forward)."""
        shape = (shape,) if isinstance(shape, int) else shape
        self._data = xp.empty(_shape(shape), dtype=self._data.dtype if dtype is None else dtype)
        self.__class__ = self.cls_to_become

    def share_memory_(self):
        raise RuntimeError("Can't share memory on an uninitialized parameter or buffer. Call `forward` to "
                           "initialize the parameters before calling `module.share_memory()`.")

    def __repr__(self):
        return f"<{type(self).__name__}>"

    def __deepcopy__(self, memo):
        """Another tensor to be, of the same class, requires_grad and dtype, as PyTorch's (Parameter's copy would
        pass values this class's constructor does not take)."""
        if id(self) in memo:
            return memo[id(self)]
        result = type(self)(self.requires_grad, dtype=self._data.dtype)
        memo[id(self)] = result
        return result

    def detach(self):
        """Still a tensor with no shape (state_dict saves one: loading it into a layer that has a shape is
        then PyTorch's RuntimeError, not a size mismatch against an empty tensor)."""
        return type(self)(requires_grad=False, dtype=self._data.dtype)


class UninitializedParameter(_Uninitialized, Parameter):
    cls_to_become = Parameter

    def __new__(cls, requires_grad=True, device=None, dtype=None):
        parameter = Tensor.__new__(cls)
        parameter._fill(xp.empty(0, dtype=_dtype(dtype)), requires_grad)
        parameter._data = _no_values(parameter._data.dtype)  # (after: the constructor takes plain arrays)
        return parameter


class UninitializedBuffer(_Uninitialized, Tensor):
    """A buffer to be: ``module.name = UninitializedBuffer()`` registers it, as ``nn.Buffer(t)`` does."""

    cls_to_become = Tensor

    def __init__(self, requires_grad=False, device=None, dtype=None, persistent=True):
        super().__init__(xp.empty(0, dtype=_dtype(dtype)), requires_grad=requires_grad)
        self._data = _no_values(self._data.dtype)  # (after: the constructor takes plain arrays)
        self._is_buffer, self.persistent = True, persistent


def _dtype(dtype):
    return autograd.get_default_dtype() if dtype is None else dtype


def is_lazy(tensor):
    return isinstance(tensor, _Uninitialized)


class LazyModuleMixin:
    """Put first among the bases of a layer: its parameters start uninitialized, and the first call runs
    ``initialize_parameters(*inputs)``, then becomes ``cls_to_become``."""

    cls_to_become = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._load_hook = self._register_load_state_dict_pre_hook(self._lazy_load_hook)
        self._initialize_hook = self.register_forward_pre_hook(self._infer_parameters, with_kwargs=True)

    def has_uninitialized_params(self):
        tensors = list(self._parameters.values()) + list(self._buffers.values())
        return any(is_lazy(tensor) for tensor in tensors)

    def _infer_parameters(self, module, args, kwargs):
        self.initialize_parameters(*args, **kwargs)
        if self.has_uninitialized_params():
            raise RuntimeError(f"module {self._get_name()} has not been fully initialized")
        self._initialize_hook.remove()
        self._load_hook.remove()
        # the handles go with their hooks, as PyTorch's do: the module becomes its plain class whole (a checkpoint
        # of it names no RemovableHandle, which load would refuse)
        del self._initialize_hook, self._load_hook
        if self.cls_to_become is not None:
            self.__class__ = self.cls_to_become

    def _lazy_load_hook(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                        error_msgs):
        """Before this module loads (a load_state_dict pre-hook): each uninitialized tensor takes the shape of
        its entry in ``state_dict``, whose values are then copied in."""
        for name, tensor in list(self._parameters.items()) + list(self._buffers.items()):
            if is_lazy(tensor) and prefix + name in state_dict and not is_lazy(state_dict[prefix + name]):
                tensor.materialize(xp.shape(_values(state_dict[prefix + name])))

    def reset_parameters(self):
        if not self.has_uninitialized_params() and self._input_size() != 0:
            super().reset_parameters()


def _values(value):
    return value._data if isinstance(value, Tensor) else value


# -- linear ----------------------------------------------------------------------------------------------


class LazyLinear(LazyModuleMixin, Linear):
    """Linear whose in_features is the last dim of its first input."""

    cls_to_become = Linear

    def __init__(self, out_features, bias=True, device=None, dtype=None):
        super().__init__(0, 0, False)
        self.weight = UninitializedParameter(dtype=dtype)
        self.out_features = out_features
        if bias:
            self.bias = UninitializedParameter(dtype=dtype)

    def _input_size(self):
        return self.in_features

    def initialize_parameters(self, input, *args, **kwargs):
        self.in_features = input.shape[-1]  # also when a state_dict gave the shapes
        if self.has_uninitialized_params():
            self.weight.materialize((self.out_features, self.in_features))
            if self.bias is not None:
                self.bias.materialize((self.out_features,))
            self.reset_parameters()


# -- convolution -----------------------------------------------------------------------------------------


class _LazyConvMixin(LazyModuleMixin):
    """The convolution's in_channels is dim 1 of a batched input (dim 0 of an unbatched one)."""

    def __init__(self, out_channels, kernel_size, *args, bias=True, dtype=None, **kwargs):
        super().__init__(0, 0, kernel_size, *args, bias=False, dtype=dtype, **kwargs)
        self.weight = UninitializedParameter(dtype=dtype)
        self.out_channels = out_channels
        if bias:
            self.bias = UninitializedParameter(dtype=dtype)

    def _input_size(self):
        return self.in_channels

    def initialize_parameters(self, input, *args, **kwargs):
        spatial = len(self.kernel_size)
        if input.ndim not in (spatial + 1, spatial + 2):
            raise RuntimeError(f"Expected {spatial + 1}D (unbatched) or {spatial + 2}D (batched) input to "
                               f"{self._get_name()}, but got input of size: {list(input.shape)}")
        self.in_channels = input.shape[input.ndim - spatial - 1]  # also when a state_dict gave the shapes
        if not self.has_uninitialized_params():
            return
        if self.in_channels % self.groups:
            raise ValueError("in_channels must be divisible by groups")
        self.weight.materialize(((self.in_channels, self.out_channels // self.groups) if self.transposed else
                                 (self.out_channels, self.in_channels // self.groups)) + self.kernel_size)
        if self.bias is not None:
            self.bias.materialize((self.out_channels,))
        self.reset_parameters()


def _lazy_conv(eager, transposed):
    """The lazy twin of a convolution layer: eager's signature without in_channels."""
    if transposed:
        def __init__(self, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1, bias=True,
                     dilation=1, padding_mode="zeros", device=None, dtype=None):
            _LazyConvMixin.__init__(self, out_channels, kernel_size, stride, padding, output_padding, groups,
                                    bias=bias, dilation=dilation, padding_mode=padding_mode, dtype=dtype)
    else:
        def __init__(self, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1, bias=True,
                     padding_mode="zeros", device=None, dtype=None):
            _LazyConvMixin.__init__(self, out_channels, kernel_size, stride, padding, dilation, groups, bias=bias,
                                    padding_mode=padding_mode, dtype=dtype)
    return type("Lazy" + eager.__name__, (_LazyConvMixin, eager),
                dict(__init__=__init__, cls_to_become=eager, __module__=__name__,
                     __doc__=f"{eager.__name__} whose in_channels is that of its first input."))


LazyConv1d, LazyConv2d, LazyConv3d = (_lazy_conv(eager, False) for eager in (Conv1d, Conv2d, Conv3d))
LazyConvTranspose1d, LazyConvTranspose2d, LazyConvTranspose3d = (
    _lazy_conv(eager, True) for eager in (ConvTranspose1d, ConvTranspose2d, ConvTranspose3d))


# -- normalisation ---------------------------------------------------------------------------------------


class _LazyNormMixin(LazyModuleMixin):
    """The norm's num_features is the channel dim of the first input; γ = 1, β = 0, running mean 0, var 1."""

    def __init__(self, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None, dtype=None, *,
                 bias=True):
        super().__init__(0, eps, momentum, False, False)
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = UninitializedParameter(dtype=dtype)
            if bias:
                self.bias = UninitializedParameter(dtype=dtype)
        if track_running_stats:
            del self.running_mean, self.running_var, self.num_batches_tracked  # plain Nones until now
            self.register_buffer("running_mean", UninitializedBuffer(dtype=dtype))
            self.register_buffer("running_var", UninitializedBuffer(dtype=dtype))
            self.register_buffer("num_batches_tracked", tensor_from(xp.zeros((), dtype=xp.int64)))

    def reset_parameters(self):
        pass  # the values are set where the tensors are materialized

    def initialize_parameters(self, input, *args, **kwargs):
        channel_dim = 0 if input.ndim == getattr(self, "spatial", -1) + 1 else 1  # unbatched instance norm: 0
        self.num_features = input.shape[channel_dim]  # also when a state_dict gave the shapes
        for name, fill in (("weight", 1.0), ("bias", 0.0), ("running_mean", 0.0), ("running_var", 1.0)):
            tensor = getattr(self, name, None)
            if is_lazy(tensor):
                tensor.materialize((self.num_features,))
                tensor._data.fill(fill)


def _lazy_norm(eager, affine, track_running_stats):
    def __init__(self, eps=1e-5, momentum=0.1, affine=affine, track_running_stats=track_running_stats, device=None,
                 dtype=None, *, bias=True):
        _LazyNormMixin.__init__(self, eps, momentum, affine, track_running_stats, device, dtype, bias=bias)

    # on the eager class's base, with its own settings (expected_dims, spatial): until its first input a lazy norm
    # is no BatchNorm1d (PyTorch's _LazyNormBase, _BatchNorm), and code telling layers apart by isinstance skips it
    own = {name: value for name, value in vars(eager).items() if not name.startswith("__")}
    return type("Lazy" + eager.__name__, (_LazyNormMixin, eager.__base__),
                dict(own, __init__=__init__, cls_to_become=eager, __module__=__name__,
                     __doc__=f"{eager.__name__} whose num_features is the channel count of its first input."))


LazyBatchNorm1d, LazyBatchNorm2d, LazyBatchNorm3d = (
    _lazy_norm(eager, True, True) for eager in (BatchNorm1d, BatchNorm2d, BatchNorm3d))
# PyTorch's lazy instance norms default to affine=True, track_running_stats=True (unlike the eager ones)
LazyInstanceNorm1d, LazyInstanceNorm2d, LazyInstanceNorm3d = (
    _lazy_norm(eager, True, True) for eager in (InstanceNorm1d, InstanceNorm2d, InstanceNorm3d))
