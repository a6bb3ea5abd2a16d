"""``Module``: the base of every layer and model, as ``torch.nn.Module``.

A module's parameters, buffers and child modules are found through its
attributes: assigning a ``Parameter`` or a ``Module`` registers it (a plain list
or dict of modules is an ordinary attribute, as in PyTorch: ``nn.ModuleList``
and ``nn.ModuleDict`` register theirs). From that come ``parameters()`` and
``named_parameters()`` with dotted names, ``train()``/``eval()`` for every
child, ``zero_grad()``, ``state_dict()``/``load_state_dict()`` (module_state.py), the
forward and backward hooks (module_hooks.py) and ``to()``/``double()``/``cuda()``
(module_placement.py).
"""


import functools
import inspect

import numpy

import autograd
from autograd import Tensor
from autograd.errors import NotATensorError, not_a_tensor
from autograd.graph import zero_grad
from autograd.ops.names import parameter_names
from autograd.sparse_layout import is_sparse

from .module_hooks import (  # noqa: F401  (torch.nn.modules.module's names)
    ModuleHooks,
    _after_registration_hooks,
    _global_backward_hooks,
    _global_backward_pre_hooks,
    _global_forward_hooks,
    _global_forward_pre_hooks,
    register_module_backward_hook,
    register_module_buffer_registration_hook,
    register_module_forward_hook,
    register_module_forward_pre_hook,
    register_module_full_backward_hook,
    register_module_full_backward_pre_hook,
    register_module_module_registration_hook,
    register_module_parameter_registration_hook,
)
from .module_placement import ModulePlacement
from .module_registry import REGISTRY_NAMES, Registry
from .module_state import IncompatibleKeys, ModuleState  # noqa: F401  (IncompatibleKeys: nn.module's name)
from .parameter import Buffer, Parameter

_IncompatibleKeys = IncompatibleKeys  # PyTorch's name in torch.nn.modules.module

# what a layer legitimately takes beside tensors (hidden states, sizes, flags, sequences of tensors)
_NOT_MISTAKEN_FOR_TENSORS = (Tensor, tuple, list, dict, int, float, bool, str, type(None))


def _failed_as_a_tensor(argument, error):
    """True where ``error`` (an AttributeError) is ``argument``, a tuple, list or number, read as a tensor."""
    return (isinstance(argument, (tuple, list, int, float)) and not isinstance(argument, bool)
            and str(error).startswith(f"'{type(argument).__name__}' object has no attribute"))




class Module(ModuleState, ModuleHooks, ModulePlacement):
    dump_patches = False  # PyTorch's flags, kept for code that reads or sets them
    call_super_init = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__module__.partition(".")[0] == "nn" and "__init__" in cls.__dict__ \
                and "device" in parameter_names(cls.__init__):  # (not inspect.signature: slow, for every layer)
            cls.__init__ = _made_on_the_device(cls.__init__)

    def __init__(self, *args, **kwargs):
        """A module's empty registries and hooks. Arguments are PyTorch's allowance for cooperative mixins: with
        ``call_super_init`` set, they go on to the next ``__init__`` in the method resolution order."""
        if not self.call_super_init and kwargs:
            raise TypeError(f"{type(self).__name__}.__init__() got an unexpected keyword argument "
                            f"'{next(iter(kwargs))}'")
        if not self.call_super_init and args:
            raise TypeError(f"{type(self).__name__}.__init__() takes 1 positional argument but {len(args) + 1} "
                            "were given")
        object.__setattr__(self, "_parameters", Registry(self))
        object.__setattr__(self, "_buffers", Registry(self))
        object.__setattr__(self, "_modules", Registry(self))
        object.__setattr__(self, "training", True)
        # hooks: {handle id: hook}, in calling order; the sets hold ids of hooks with flags
        for name in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            object.__setattr__(self, name, {})
        for name in ("_forward_hooks_with_kwargs", "_forward_hooks_always_called", "_forward_pre_hooks_with_kwargs"):
            object.__setattr__(self, name, set())
        if self.call_super_init:
            super().__init__(*args, **kwargs)

    def __setstate__(self, state):
        """A copied or unpickled module's attributes (PyTorch's Module has this too: subclasses call
        ``super().__setstate__(state)``), its registries tied to it again."""
        self.__dict__.update(state)
        for name in REGISTRY_NAMES:
            registry = self.__dict__.get(name)
            if isinstance(registry, Registry):
                registry.tie(self)
            elif isinstance(registry, dict):  # (a plain dict, from an older pickle: the attributes are there)
                object.__setattr__(self, name, Registry(self, registry, set_attributes=False))

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def __call__(self, *args, **kwargs):
        try:
            if not (self._forward_hooks or self._forward_pre_hooks or self._backward_hooks
                    or self._backward_pre_hooks or _global_forward_pre_hooks or _global_forward_hooks
                    or _global_backward_hooks or _global_backward_pre_hooks):
                return self.forward(*args, **kwargs)
            return self._call_with_hooks(args, kwargs)
        except (AttributeError, TypeError) as error:
            # a NumPy array given to one of our layers fails deep inside it ("no attribute '_data'"): say what
            # it was (a user's module may take arrays: its errors are its own)
            if not isinstance(error, NotATensorError) and type(self).__module__.partition(".")[0] == "nn":
                for i, argument in enumerate(args):
                    if isinstance(argument, numpy.ndarray):
                        raise not_a_tensor(type(self).__name__, i, argument) from error
                # another object where a tensor belongs (pool(input) with the built-in input): PyTorch's TypeError
                # too, not "object has no attribute 'ndim'"
                if isinstance(error, AttributeError):
                    for i, argument in enumerate(args):
                        if not isinstance(argument, _NOT_MISTAKEN_FOR_TENSORS):
                            raise not_a_tensor(type(self).__name__, i, argument) from error
                    # the input itself a tuple, list or number that failed as a tensor: an LSTM's (output, (h, c))
                    # passed on whole by nn.Sequential(nn.LSTM(...), nn.Linear(...)) (PyTorch: "must be Tensor,
                    # not tuple"); a later argument of these types (a GRU's hx given as a tuple) keeps its error
                    if args and _failed_as_a_tensor(args[0], error):
                        refusal = not_a_tensor(type(self).__name__, 0, args[0])
                        if isinstance(args[0], tuple):
                            refusal.args = (f"{refusal.args[0]} (a recurrent layer returns (output, h_n): pass "
                                            "on its output, rnn(x)[0])",)
                        raise refusal from error
            raise

    _call_impl = _wrapped_call_impl = __call__  # PyTorch's names for the call with hooks (code calls them)

    # -- registration ---------------------------------------------------------------

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            # before Module.__init__ there are no registries: a plain attribute may be set (PyTorch allows
            # `self.size = size` first), a parameter, module or buffer may not
            kind = ("parameters" if isinstance(value, Parameter) else "module" if isinstance(value, Module)
                    else "buffers" if isinstance(value, Buffer) else None)
            if kind is None:
                object.__setattr__(self, name, value)
                return
            raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
        if name in REGISTRY_NAMES and type(value) is dict:
            # a registry replaced by a dict (learn2learn's clone_module: ``clone._parameters =
            # clone._parameters.copy()``, then writes into it): what it holds is what the module computes with
            value = Registry(self, value)
        if isinstance(value, Buffer):  # nn.Buffer(t, persistent): a buffer, whatever the name held before
            if name not in self.__dict__.get("_buffer_names", ()):
                self._reregister_buffer(name, value, value.persistent)
                return
            (self._non_persistent.discard if value.persistent else self._non_persistent.add)(name)
        if isinstance(value, Parameter) or name in self._parameters:
            # a registered parameter takes a Parameter or None only (not a Module)
            if not isinstance(value, Parameter) and value is not None:
                raise TypeError(f"cannot assign '{_type_name(value)}' as parameter '{name}' "
                                "(torch.nn.Parameter or None expected)")
            # through register_parameter, as PyTorch's __setattr__: a program that wraps it sees every parameter
            # a layer's __init__ assigns (accelerate's init_empty_weights moves each one to the meta device)
            if name not in self._parameters:
                for other in (self._buffers, self._modules):
                    other.pop(name, None)
                self.__dict__.pop(name, None)  # a plain attribute of that name gives way, as in PyTorch
            self.register_parameter(name, value)
            return
        if isinstance(value, Module):
            registry = self._modules
        elif name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign '{_type_name(value)}' as child module '{name}' "
                                "(torch.nn.Module or None expected)")
            registry = self._modules
        elif name in self.__dict__.get("_buffer_names", ()):
            if value is not None and not isinstance(value, Tensor) and not is_sparse(value):
                raise TypeError(f"cannot assign '{_type_name(value)}' as buffer '{name}' "
                                "(torch.Tensor or None expected)")
            self._reregister_buffer(name, value)
            return
        else:
            registry = None
        self._set_member(registry, name, value)

    def _reregister_buffer(self, name, value, persistent=None):
        """A buffer's new tensor (persistent as before unless said) through register_buffer, as PyTorch's
        __setattr__; a subclass's register_buffer written without ``persistent`` is called without it, for a
        persistent buffer (PyTorch's allowance)."""
        persistent = name not in self._non_persistent if persistent is None else persistent
        if type(self).register_buffer is not Module.register_buffer and \
                "persistent" not in inspect.signature(self.register_buffer).parameters:
            if not persistent:
                raise RuntimeError("Registering a non-persistent buffer on a Module subclass that implements "
                                   "register_buffer() without the persistent argument is not allowed.")
            self.register_buffer(name, value)
        else:
            self.register_buffer(name, value, persistent=persistent)

    def _set_member(self, registry, name, value):
        """``value`` as ``name``, in ``registry`` (None for a plain attribute) and in no other."""
        for other in (self._parameters, self._buffers, self._modules):
            if other is not registry:
                other.pop(name, None)
        if registry is not None:
            value = _after_registration_hooks(self, registry, name, value)
            registry[name] = value  # an existing name keeps its place: Sequential's order
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        registered = False
        for registry in (self._parameters, self._buffers, self._modules):
            if name in registry:
                registry.pop(name)  # (a registry drops the attribute with the entry)
                registered = True
        if not registered or name in self.__dict__:
            object.__delattr__(self, name)

    def __dir__(self):
        # the children of a Sequential or ModuleList are named "0", "1", ...: not attribute names
        return [name for name in super().__dir__() if not name[0].isdigit()]

    def _refuse_before_init(self, kind):
        """PyTorch's AttributeError for registering before ``super().__init__()`` made the registries (it
        would otherwise say only that the registry is missing)."""
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {kind} before Module.__init__() call")

    def _check_new_name(self, kind, name, registry):
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string. Got {type(name).__name__}")
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain "."' + (f", got: {name}" if kind == "module" else ""))
        if name == "":
            raise KeyError(f'{kind} name can\'t be empty string ""')
        if name in self.__dict__ and name not in registry or hasattr(type(self), name):
            raise KeyError(f"attribute '{name}' already exists")

    def register_parameter(self, name, param):
        """Add ``param`` (a Parameter, or None for an absent one such as a missing bias)."""
        self._refuse_before_init("parameter")
        self._check_new_name("parameter", name, self._parameters)
        if param is None:
            self._parameters[name] = None
            object.__setattr__(self, name, None)
            return
        if not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{_type_name(param)}' object to parameter '{name}' "
                            "(torch.nn.Parameter or None required)")
        if param.grad_fn is not None:
            raise ValueError(f"Cannot assign non-leaf Tensor to parameter '{name}'. Model parameters must be "
                             "created explicitly. To express '{name}' as a function of another Tensor, compute "
                             "the value in the forward() method.")
        self._set_member(self._parameters, name, param)

    def register_buffer(self, name, tensor, persistent=True):
        """A tensor that is part of the module's state but not trained (BatchNorm's
        running mean). It is saved in ``state_dict`` unless ``persistent=False``."""
        self._refuse_before_init("buffer")
        self._check_new_name("buffer", name, self._buffers)
        if tensor is not None and not isinstance(tensor, Tensor) and not is_sparse(tensor):
            raise TypeError(f"cannot assign '{_type_name(tensor)}' object to buffer '{name}' "
                            "(torch Tensor or None required)")
        if "_buffer_names" not in self.__dict__:
            object.__setattr__(self, "_buffer_names", set())
            object.__setattr__(self, "_non_persistent", set())
        self._buffer_names.add(name)
        (self._non_persistent.discard if persistent else self._non_persistent.add)(name)
        self._set_member(self._buffers, name, tensor)

    def _buffer_names_set(self):
        if "_buffer_names" not in self.__dict__:
            object.__setattr__(self, "_buffer_names", set())
            object.__setattr__(self, "_non_persistent", set())
        return self._buffer_names

    @property
    def _non_persistent_buffers_set(self):
        """PyTorch's name for the buffers state_dict leaves out (code written for PyTorch reads and
        updates it): the same set as this module's own."""
        if "_buffer_names" not in self.__dict__:
            object.__setattr__(self, "_buffer_names", set())
            object.__setattr__(self, "_non_persistent", set())
        return self._non_persistent

    def add_module(self, name, module):
        """Add a child module under ``name`` (None keeps the name, holding no module)."""
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{_type_name(module)} is not a Module subclass")
        self._refuse_before_init("module")
        self._check_new_name("module", name, self._modules)
        if module is None:
            module = _after_registration_hooks(self, self._modules, name, None)
            self._modules[name] = module
            object.__setattr__(self, name, module)
            return
        setattr(self, name, module)

    register_module = add_module

    def get_submodule(self, target):
        """The module at dotted path ``target`` ('' is this module)."""
        if target == "":
            return self
        module = self
        for item in target.split("."):
            if not hasattr(module, item):
                raise AttributeError(f"{module._get_name()} has no attribute `{item}`")
            module = getattr(module, item)
            if not isinstance(module, Module):
                raise AttributeError(f"`{item}` is not an nn.Module")
        return module

    def _functional_call(self, tensors, args, kwargs, *, tie_weights, strict):
        """What autograd.func.functional_call calls (autograd does not import nn): see nn.utils.stateless."""
        from .utils.stateless import _functional_call

        return _functional_call(self, tensors, args, kwargs, tie_weights=tie_weights, strict=strict)

    def set_submodule(self, target, module, strict=False):
        """Put ``module`` at dotted path ``target``: replace the module there, or add it below an
        existing parent (not with ``strict``, which only replaces)."""
        if target == "":
            raise ValueError("Cannot set the submodule without a target name!")
        if not isinstance(module, Module):
            raise ValueError(f"`module` is not an nn.Module, found {type(module)}")
        parent_path, _, name = target.rpartition(".")
        parent = self.get_submodule(parent_path)
        if strict and not hasattr(parent, name):
            raise AttributeError(f"{parent._get_name()} has no attribute `{name}`")
        if hasattr(parent, name) and not isinstance(getattr(parent, name), Module):
            raise AttributeError(f"`{name}` is not an nn.Module")
        setattr(parent, name, module)

    def get_parameter(self, target):
        """The parameter at dotted path ``target``, e.g. 'net.0.weight'."""
        module, name = _owner_of(self, target)
        parameter = getattr(module, name)
        if not isinstance(parameter, Parameter):
            raise AttributeError(f"`{name}` is not an nn.Parameter")
        return parameter

    def get_buffer(self, target):
        """The buffer at dotted path ``target``, e.g. 'bn.running_mean'."""
        module, name = _owner_of(self, target)
        if name not in module._buffers:
            raise AttributeError(f"`{name}` is not a buffer")
        return getattr(module, name)

    def _get_name(self):
        return type(self).__name__

    # -- walking the tree ---------------------------------------------------------------

    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(dotted name, module) for this module and every module below it, depth first;
        a module reached twice is given once unless remove_duplicate=False."""
        seen = set() if memo is None else memo
        stack = [(prefix, self)]
        while stack:
            name, module = stack.pop()
            if remove_duplicate:
                if module in seen:
                    continue
                seen.add(module)
            yield name, module
            children = [(f"{name}.{child_name}" if name else child_name, child)
                        for child_name, child in module._modules.items() if child is not None]
            stack.extend(reversed(children))

    def modules(self):
        return (module for _, module in self.named_modules())

    def named_children(self):
        """The direct submodules with their names; a module held under two names comes once (the first)."""
        seen = set()
        for name, module in self._modules.items():
            if module is not None and id(module) not in seen:
                seen.add(id(module))
                yield name, module

    def children(self):
        return (module for _, module in self.named_children())

    def _named_members(self, registry, prefix, recurse, remove_duplicate):
        seen = set()
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse
                   else [(prefix, self)])
        for module_name, module in modules:
            for name, member in getattr(module, registry).items():
                if member is None or (remove_duplicate and id(member) in seen):
                    continue
                seen.add(id(member))
                yield (f"{module_name}.{name}" if module_name else name), member

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        """(dotted name, parameter) pairs, e.g. ('fc1.weight', ...); shared ones once."""
        return self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        return (parameter for _, parameter in self.named_parameters(recurse=recurse))

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        return self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        return (buffer for _, buffer in self.named_buffers(recurse=recurse))

    def apply(self, fn):
        """Call ``fn(module)`` on every child (deepest first), then on this module."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # -- modes and gradients ------------------------------------------------------------

    def train(self, mode=True):
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        object.__setattr__(self, "training", mode)
        for module in self.children():  # each child's own train(): a subclass's override runs (loralib merges there)
            module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self, set_to_none=True):
        for parameter in self.parameters():
            zero_grad(parameter, set_to_none)

    def requires_grad_(self, requires_grad=True):
        for parameter in self.parameters():
            parameter.requires_grad_(requires_grad)
        return self

    def _replicate_for_data_parallel(self):
        """PyTorch's replica of this module for DataParallel: its attributes shared, no parameters of its
        own (they are the original module's), its buffers and children dicts copies. Subclasses
        override it to share or split what they cache (timm's patch-embed resampler)."""
        replica = self.__new__(type(self))
        replica.__dict__ = self.__dict__.copy()
        replica._parameters = {}
        replica._buffers = replica._buffers.copy()
        replica._modules = replica._modules.copy()
        replica._is_replica = True
        return replica

    def _compiled(self):
        """What autograd.compile(module) gives: the module wrapped as PyTorch's OptimizedModule (nn/compiled.py)."""
        from .compiled import OptimizedModule  # (compiled.py builds on this module)

        return OptimizedModule(self)

    def compile(self, *args, **kwargs):
        """PyTorch compiles this module's forward in place with torch.compile and returns None.
        There is no compiler here (autograd.compile calls the module unchanged), so forward stays
        as written; returns None, as PyTorch's."""
        return None

    # -- printing -------------------------------------------------------------------------------

    def extra_repr(self):
        return ""

    def __repr__(self):
        """PyTorch's layout: Name(extra) for a leaf, else one line per extra_repr line and child."""
        extra = self.extra_repr()
        lines = extra.split("\n") if extra else []
        lines += [f"({name}): " + _addindent(repr(module), 2) for name, module in self._modules.items()]
        if not self._modules and len(lines) <= 1:
            return f"{self._get_name()}({extra})"
        return f"{self._get_name()}(\n  " + "\n  ".join(lines) + "\n)"


def _addindent(s_, numSpaces):
    """Every line of ``s_`` after the first indented by ``numSpaces`` (PyTorch's helper of that name, which
    custom ``__repr__`` methods written after Module's import from torch.nn.modules.module)."""
    return s_.replace("\n", "\n" + " " * numSpaces)


def _type_name(value):
    """As PyTorch's messages name a value's type: 'torch.FloatTensor', 'nn.activation.ReLU', 'int'."""
    return autograd.typename(value)


def _made_on_the_device(init):
    """A layer's constructor that makes its parameters and buffers on the ``device=`` it is given (PyTorch's
    factory_kwargs), however its body makes them: run inside that device's context (``Linear(3, 4,
    device="meta")`` makes meta tensors, autograd/meta.py). The layers of this package only: a program's own
    module may take a ``device`` that means something else."""

    @functools.wraps(init)
    def made(self, *args, **kwargs):
        where = kwargs.get("device")
        if where is None:
            return init(self, *args, **kwargs)
        with autograd.device(where):
            return init(self, *args, **kwargs)

    return made


def _owner_of(root, target):
    """(the module below ``root`` holding the attribute at dotted path ``target``, the attribute's name)."""
    module_path, _, name = target.rpartition(".")
    module = root.get_submodule(module_path)
    if not hasattr(module, name):
        raise AttributeError(f"{module._get_name()} has no attribute `{name}`")
    return module, name
