"""Where a module's tensors live and in what dtype: ``to()``, ``cuda()``, ``double()``, ``half()``,
``type()``, ``to_empty()`` and ``share_memory()`` all go through ``_apply``, PyTorch's engine of them,
which a subclass may override (a cache kept in float32 while the weights go to float16). Mixed
into ``Module`` (module.py), as its hooks (module_hooks.py) and its state (module_state.py) are."""

import warnings

import numpy

import autograd
from autograd import Tensor
from autograd.device import resolve as resolve_device
from autograd.graph import bump_version, program_stacklevel
from autograd.ops.conversion import parse_to


class ModulePlacement:
    def to(self, *args, **kwargs):
        """Move and/or cast every parameter and buffer in place, as PyTorch's: ``to(device)``,
        ``to(dtype)``, ``to(tensor)``, ``to(device, dtype)`` and the keywords ``device``, ``dtype``,
        ``non_blocking``. A dtype applies to floating and complex tensors only, and must be one."""
        device, dtype, copy = parse_to(args, dict(kwargs))
        if copy:  # a module's tensors are moved in place: there is no copy to make
            raise RuntimeError(".to() does not accept copy argument")
        moved = device is not None and (resolve_device(device).type == "meta" or self._on_meta())
        if moved:  # to the meta device (a skeleton for functional_call), or refused from it: each tensor's to()
            self._apply(lambda tensor: tensor.to(device))
        if dtype is not None:
            dtype = numpy.dtype(dtype)
            if dtype.kind not in "fc":
                raise TypeError(f"nn.Module.to only accepts floating point or complex dtypes, but got desired "
                                f"dtype={dtype}")
            if dtype.kind == "c":  # (PyTorch's caution, in its words, at every complex to())
                warnings.warn("Complex modules are a new feature under active development whose design may change, "
                              "and some modules might not work as expected when using complex tensors as parameters "
                              "or buffers. Please file an issue at "
                              "https://github.com/pytorch/pytorch/issues/new?template=bug-report.yml if a complex "
                              "module does not work as expected.", stacklevel=program_stacklevel())
            self._cast(dtype, kinds="fc")
        elif not moved:  # nothing to move to (one device), but a subclass's _apply runs on every to(), as PyTorch's
            self._apply(lambda tensor: tensor)
        layout = kwargs.get("memory_format")
        if getattr(layout, "order", None) is not None:  # channels_last: the tensors of its rank laid out so
            self._apply(lambda tensor: tensor.to(memory_format=layout) if tensor.ndim == len(layout.order)
                        else tensor)
        return self

    def _cast(self, dtype, kinds=None):
        """Every parameter and buffer (of NumPy dtype ``kinds`` only, if given: "f" floating, "c"
        complex) to ``dtype``, through ``_apply`` as PyTorch's to()/half()/float()/double()/type()
        go, so a subclass's ``_apply`` runs (a rotary cache kept in float32 while the weights go to
        float16). A parameter and its gradient keep their objects; a buffer is replaced."""

        from .lazy import is_lazy  # (lazy.py imports the layers, which import this module)

        def cast(tensor):
            if (kinds is None or tensor.dtype.kind in kinds) and tensor.dtype != dtype:
                if is_lazy(tensor):  # no values yet: it stays itself, to be materialized in the new dtype
                    tensor._data = tensor._data.astype(dtype)
                    return tensor
                return tensor.to(dtype)
            return tensor

        return self._apply(cast)

    def _apply(self, fn, recurse=True):
        """PyTorch's engine of to()/double()/cuda(): ``fn(tensor) -> tensor`` (under no_grad) on
        every parameter, its gradient and every buffer, children first (``recurse``). A parameter
        (and its gradient) keeps its object and takes the new values, as PyTorch's ``param.data =
        fn(param)``; a buffer is replaced by what ``fn`` returns. Returns self."""
        if recurse:
            for child in self.children():
                child._apply(fn)
        for parameter in self._parameters.values():
            if parameter is None:
                continue
            with autograd.no_grad():
                _set_storage(parameter, _array(fn(parameter)))
                if parameter.grad is not None:
                    _set_storage(parameter.grad, _array(fn(parameter.grad)))
        for name, buffer in list(self._buffers.items()):
            if buffer is not None:
                with autograd.no_grad():
                    applied = fn(buffer)
                self._buffers[name] = applied  # (no registration hooks: PyTorch's _apply runs none)
                object.__setattr__(self, name, applied)
        return self

    def type(self, dst_type):
        """Cast every parameter and buffer, integer ones too, to ``dst_type`` (a dtype or a name
        such as 'torch.DoubleTensor'), in place; returns self."""
        self._cast(autograd.zeros(0).type(dst_type).dtype)
        return self

    def to_empty(self, *, device, recurse=True):
        """Parameters and buffers replaced by uninitialised tensors of the same shapes and dtypes on
        ``device``, as PyTorch's (which moves meta-device modules without copying: initialise them
        after, e.g. with reset_parameters): a module built on the meta device gets memory; the values
        are not kept. ``recurse=False``: this module's own tensors only."""
        # through _apply, as PyTorch's: a subclass's _apply runs (timm's patch-embed resampler drops its cache)
        return self._apply(lambda tensor: autograd.empty_like(tensor, device=device), recurse=recurse)

    def _on_meta(self):
        """Whether some parameter or buffer is a meta tensor (a shape without values: autograd/meta.py)."""
        return any(isinstance(tensor, Tensor) and tensor.is_meta for tensor in (*self.parameters(), *self.buffers()))

    def share_memory(self):
        """Move every parameter, its gradient and every buffer into memory shared between processes
        (``Tensor.share_memory_``), for ``autograd.multiprocessing``: a process started after it updates
        these same numbers in place (Hogwild training). A lazy module's uninitialized tensor refuses,
        as PyTorch's. Returns self."""
        return self._apply(lambda tensor: tensor.share_memory_())

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else device)

    def xpu(self, device=None):
        return self.to("xpu" if device is None else device)  # (refused, naming the device, where not served)

    def mtia(self, device=None):
        return self.to("mtia" if device is None else device)

    def ipu(self, device=None):
        return self.to("ipu" if device is None else device)

    # the floating tensors only (to(dtype) casts complex ones too), as PyTorch's
    def double(self):
        self._cast(numpy.dtype(autograd.float64), kinds="f")
        return self

    def half(self):
        self._cast(numpy.dtype(autograd.float16), kinds="f")
        return self

    def float(self):
        self._cast(numpy.dtype(autograd.float32), kinds="f")
        return self

    def bfloat16(self):
        self._cast(numpy.dtype(autograd.bfloat16), kinds="f")  # (refused, naming why: NumPy has no bfloat16)
        return self


def _set_storage(tensor, array):
    """``tensor`` takes ``array`` as its memory (any shape or dtype), as PyTorch's ``t.data = new``;
    the version moves on, so a graph that saved the old values refuses backward."""
    if array is not tensor._data:
        tensor._data = array
        bump_version(tensor)


def _array(value):
    return value._data if isinstance(value, Tensor) else numpy.asarray(value)
