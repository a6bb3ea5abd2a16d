"""``Module``: the base of every layer and model, as ``torch.nn.Module``.

A module's parameters, buffers and child modules are found through its
attributes: assigning a ``Parameter``, a ``Module`` (or a list or dict of
modules) registers it. From that come ``parameters()`` and
``named_parameters()`` with dotted names, ``train()``/``eval()`` for every
child, ``zero_grad()``, and ``state_dict()``/``load_state_dict()``.
"""

import collections

import numpy

import autograd
from autograd import Tensor
from autograd.device import resolve as resolve_device
from autograd.ops.conversion import parse_to

from .parameter import Parameter

IncompatibleKeys = collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


class Module:
    def __init__(self):
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    # -- registration ---------------------------------------------------------------

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.__init__ must call super().__init__() "
                                 "before assigning attributes")
        if isinstance(value, (list, tuple)) and value and all(isinstance(v, Module) for v in value):
            from .container import ModuleList

            value = ModuleList(value)
        elif isinstance(value, dict) and value and all(isinstance(v, Module) for v in value.values()):
            from .container import ModuleDict

            value = ModuleDict(value)
        if isinstance(value, Parameter):
            registry = self._parameters
        elif isinstance(value, Module):
            registry = self._modules
        elif name in self.__dict__.get("_buffer_names", ()):
            registry = self._buffers
        else:
            registry = None
        for other in (self._parameters, self._buffers, self._modules):
            if other is not registry:
                other.pop(name, None)
        if registry is not None:
            registry[name] = value  # an existing name keeps its place: Sequential's order
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        for registry in (self._parameters, self._buffers, self._modules):
            registry.pop(name, None)
        object.__delattr__(self, name)

    def register_parameter(self, name, parameter):
        if parameter is None:
            object.__setattr__(self, name, None)
            return
        if not isinstance(parameter, Parameter):
            raise TypeError(f"register_parameter: {name} must be a Parameter, got {type(parameter).__name__}")
        setattr(self, name, parameter)

    def register_buffer(self, name, tensor, persistent=True):
        """A tensor that is part of the module's state but not trained (BatchNorm's
        running mean). It is saved in ``state_dict`` unless ``persistent=False``."""
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"register_buffer: {name} must be a Tensor or None")
        if "_buffer_names" not in self.__dict__:
            object.__setattr__(self, "_buffer_names", set())
            object.__setattr__(self, "_non_persistent", set())
        self._buffer_names.add(name)
        if not persistent:
            self._non_persistent.add(name)
        setattr(self, name, tensor)

    def add_module(self, name, module):
        setattr(self, name, module)

    # -- walking the tree ---------------------------------------------------------------

    def named_modules(self, prefix=""):
        """(dotted name, module) for this module and every module below it, each once."""
        seen = set()
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if id(module) in seen:
                continue
            seen.add(id(module))
            yield name, module
            children = [(f"{name}.{child_name}" if name else child_name, child)
                        for child_name, child in module._modules.items() if child is not None]
            stack.extend(reversed(children))

    def modules(self):
        return (module for _, module in self.named_modules())

    def named_children(self):
        return ((name, module) for name, module in self._modules.items() if module is not None)

    def children(self):
        return (module for _, module in self.named_children())

    def named_parameters(self, prefix="", recurse=True):
        """(dotted name, parameter) pairs, e.g. ('fc1.weight', ...); shared ones once."""
        seen = set()
        modules = self.named_modules(prefix) if recurse else [(prefix, self)]
        for module_name, module in modules:
            for name, parameter in module._parameters.items():
                if parameter is None or id(parameter) in seen:
                    continue
                seen.add(id(parameter))
                yield (f"{module_name}.{name}" if module_name else name), parameter

    def parameters(self, recurse=True):
        return (parameter for _, parameter in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name, buffer in module._buffers.items():
                if buffer is not None:
                    yield (f"{module_name}.{name}" if module_name else name), buffer

    def buffers(self):
        return (buffer for _, buffer in self.named_buffers())

    def apply(self, fn):
        """Call ``fn(module)`` on every child (deepest first), then on this module."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # -- modes and gradients ------------------------------------------------------------

    def train(self, mode=True):
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        for parameter in self.parameters():
            if set_to_none:
                parameter.grad = None
            elif parameter.grad is not None:
                parameter.grad.zero_()

    def requires_grad_(self, requires_grad=True):
        for parameter in self.parameters():
            parameter.requires_grad_(requires_grad)
        return self

    def to(self, *args, **kwargs):
        """Move and/or cast every parameter and buffer in place, as PyTorch's: ``to(device)``,
        ``to(dtype)``, ``to(tensor)``, ``to(device, dtype)`` and the keywords ``device``, ``dtype``,
        ``non_blocking``. A dtype applies to floating tensors only and must be floating."""
        device, dtype, _ = parse_to(args, dict(kwargs))
        if device is not None:
            resolve_device(device)  # every served device is this one: only a check
        if dtype is not None:
            dtype = numpy.dtype(dtype)
            if dtype.kind not in "fc":
                raise TypeError(f"nn.Module.to only accepts floating point or complex dtypes, but got desired "
                                f"dtype={dtype}")
            for tensor in list(self.parameters()) + list(self.buffers()):
                if tensor.dtype.kind == "f" and tensor.dtype != dtype:
                    tensor._data = tensor._data.astype(dtype)
                    tensor.grad = None
        return self

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else device)

    def double(self):
        return self.to(autograd.float64)

    def float(self):
        return self.to(autograd.float32)

    def half(self):
        return self.to(autograd.float16)

    # -- saving and loading --------------------------------------------------------------------

    def state_dict(self):
        """{dotted name: tensor} of parameters and persistent buffers, sharing their data."""
        state = collections.OrderedDict()
        for name, parameter in self.named_parameters():
            state[name] = parameter.detach()
        for module_name, module in self.named_modules():
            for name, buffer in module._buffers.items():
                if buffer is not None and name not in module.__dict__.get("_non_persistent", ()):
                    state[f"{module_name}.{name}" if module_name else name] = buffer.detach()
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy tensors from ``state_dict`` into this module's parameters and buffers.

        With ``strict`` (the default) missing keys, unexpected keys and shape
        mismatches raise one error that lists them all; nothing is copied then.
        """
        own = self.state_dict()
        missing = [key for key in own if key not in state_dict]
        unexpected = [key for key in state_dict if key not in own]
        mismatched = []
        for key, target in own.items():
            if key in state_dict:
                shape = tuple(numpy.shape(_array(state_dict[key])))
                if shape != target.shape:
                    mismatched.append(f"size mismatch for {key}: copying a param with shape {shape} "
                                      f"from checkpoint, the shape in current model is {target.shape}")
        problems = mismatched[:]
        if strict:
            if missing:
                problems.insert(0, "Missing key(s) in state_dict: " + ", ".join(map(repr, missing)))
            if unexpected:
                problems.insert(0, "Unexpected key(s) in state_dict: " + ", ".join(map(repr, unexpected)))
        if problems:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(problems))
        with autograd.no_grad():  # through the write door: a pending backward that saved a weight raises
            for key, target in own.items():
                if key in state_dict:
                    target.copy_(Tensor(_array(state_dict[key]), dtype=target.dtype))
        return IncompatibleKeys(missing, unexpected)

    # -- printing -------------------------------------------------------------------------------

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"({name}): " + repr(module).replace("\n", "\n  ") for name, module in self.named_children()]
        extra = self.extra_repr()
        if not lines:
            return f"{type(self).__name__}({extra})"
        body = "\n  ".join(([extra] if extra else []) + lines)
        return f"{type(self).__name__}(\n  {body}\n)"


def _array(value):
    return value._data if isinstance(value, Tensor) else numpy.asarray(value)
