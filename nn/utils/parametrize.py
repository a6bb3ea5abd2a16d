"""``nn.utils.parametrize``: a tensor of a module computed from unconstrained originals (PyTorch's).

After ``register_parametrization(module, "weight", P)`` the module's ``weight`` is no
longer a parameter: it is recomputed as P(original) on every access, and the
optimiser trains ``module.parametrizations.weight.original`` instead (or
``original0``, ``original1``, ... when P's ``right_inverse`` splits a tensor into
several, as weight normalisation does into a norm and a direction). Gradients
reach the originals through P's Tensor ops. The module's class is swapped for a
subclass that holds ``weight`` as a property, as PyTorch does. Inside ``with cached():`` each
parametrized tensor is computed once, at its first read, and that value is reused (one graph node
for a recurrent weight read at every time step).
"""

import contextlib

import autograd
from autograd import Tensor

from ..container import ModuleDict, ModuleList
from ..parameter import Parameter

_cache_depth = 0  # how many cached() blocks are open
_cache = {}  # (id(module), tensor name) -> its value, while a cached() block is open


@contextlib.contextmanager
def cached():
    """Within the block, each parametrized tensor is computed at its first read and that value is
    reused by every later read; the values are dropped when the outermost block ends (PyTorch's)."""
    global _cache_depth
    _cache_depth += 1
    try:
        yield
    finally:
        _cache_depth -= 1
        if not _cache_depth:
            _cache.clear()


def _parametrized_value(module, tensor_name):
    chain = module.parametrizations[tensor_name]
    if not _cache_depth:
        return chain()
    key = (id(module), tensor_name)
    if key not in _cache:
        _cache[key] = chain()
    return _cache[key]


class ParametrizationList(ModuleList):
    """The parametrizations of one tensor, applied in order, and the original(s) they read."""

    def __init__(self, modules, original, unsafe=False):
        super().__init__(modules)
        with autograd.no_grad():
            new = original
            for module in reversed(list(self)):
                if hasattr(module, "right_inverse"):
                    try:
                        new = module.right_inverse(new)
                    except NotImplementedError:  # no inverse: the original is kept, as in PyTorch
                        pass
        self.is_tensor = isinstance(new, Tensor)
        self.ntensors = 1 if self.is_tensor else len(new)
        if self.is_tensor and not unsafe:
            for what in ("dtype", "shape"):
                if getattr(new, what) != getattr(original, what):
                    raise ValueError(f"When `right_inverse` outputs one tensor, it may not change the {what}.\n"
                                     f"original.{what}: {getattr(original, what)}\n"
                                     f"right_inverse(original).{what}: {getattr(new, what)}")
        if self.is_tensor:
            if new.shape == original.shape and new.dtype == original.dtype:
                # PyTorch keeps the original tensor object (its values set in place): an optimizer
                # built before the parametrization goes on training it
                if new is not original:
                    with autograd.no_grad():
                        original.copy_(new)
                _register_tensor(self, "original", original)
            else:
                self.original = Parameter(new.detach().clone(), requires_grad=original.requires_grad)
        else:
            for k, tensor in enumerate(new):
                setattr(self, f"original{k}", Parameter(tensor.detach().clone(), requires_grad=original.requires_grad))

    def steps(self):
        """The parametrizations, in order: the children named '0', '1', ... (a parametrization registered on
        this list's own ``original`` adds a ``parametrizations`` child here, which is not one of them)."""
        steps = []
        while str(len(steps)) in self._modules:
            steps.append(self._modules[str(len(steps))])
        return steps

    def originals(self):
        if self.is_tensor:
            return (self.original,)
        return tuple(getattr(self, f"original{k}") for k in range(self.ntensors))

    def right_inverse(self, value):
        """Set the originals so that the parametrized tensor becomes ``value``: every parametrization
        must say how (its ``right_inverse``), as PyTorch requires for an assignment (registering one
        without it keeps the original as it is)."""
        with autograd.no_grad():
            for module in reversed(self.steps()):
                if not hasattr(module, "right_inverse"):
                    raise RuntimeError(f"parametrization {type(module).__name__} does not implement right_inverse.")
                value = module.right_inverse(value)
            values = (value,) if self.is_tensor else tuple(value)
            for original, new in zip(self.originals(), values):
                original.copy_(new)

    def forward(self):
        modules = self.steps()
        x = modules[0](*self.originals())
        for module in modules[1:]:
            x = module(x)
        return x


def is_parametrized(module, tensor_name=None):
    parametrizations = module.__dict__.get("parametrizations")
    if not isinstance(parametrizations, ModuleDict):
        return False
    return len(parametrizations) > 0 if tensor_name is None else tensor_name in parametrizations.keys()


def _inject_new_class(module):
    """Give ``module`` a class of its own, so that properties can be added to it alone."""
    cls = module.__class__

    def __setattr__(self, name, value):
        if is_parametrized(self, name):
            self.parametrizations[name].right_inverse(value)
        else:
            cls.__setattr__(self, name, value)

    module.__class__ = type(f"Parametrized{cls.__name__}", (cls,), {"__setattr__": __setattr__})
    object.__setattr__(module, "_class_before_parametrization", cls)


def register_parametrization(module, tensor_name, parametrization, *, unsafe=False):
    """Make ``module.<tensor_name>`` = parametrization(original), original a new parameter."""
    parametrization.train(module.training)  # PyTorch's: it takes the module's mode
    if is_parametrized(module, tensor_name):
        if not unsafe:
            current = getattr(module, tensor_name)
            _check_unchanged(current, parametrization(current), "Calling `register_parametrization` on a "
                             "parametrized tensor")
        module.parametrizations[tensor_name].append(parametrization)
        return module
    original = getattr(module, tensor_name, None)
    if tensor_name not in module._parameters and tensor_name not in module._buffers or original is None:
        raise ValueError(f"Module '{module}' does not have a parameter, a buffer, or a parametrized element with "
                         f"name '{tensor_name}'")
    chain = ParametrizationList([parametrization], original, unsafe=unsafe)
    if not unsafe:
        _check_unchanged(original, chain(), "Registering a parametrization")
    delattr(module, tensor_name)
    if not is_parametrized(module):
        _inject_new_class(module)
        module.add_module("parametrizations", ModuleDict())
    module.parametrizations[tensor_name] = chain
    setattr(type(module), tensor_name, property(lambda self: _parametrized_value(self, tensor_name)))
    return module


def _check_unchanged(before, after, what):
    """PyTorch's consistency check (skipped with ``unsafe=True``): a parametrization returns a tensor of the
    dtype and shape of the tensor it parametrizes."""
    if not isinstance(after, Tensor):
        raise ValueError(f"A parametrization must return a tensor. Got {type(after).__name__}.")
    for name in ("dtype", "shape"):
        if getattr(after, name) != getattr(before, name):
            raise ValueError(f"{what} may not change the {name} of the tensor, unless the `unsafe` flag is "
                             f"enabled.\nunparametrized {name}: {getattr(before, name)}\n"
                             f"parametrized {name}: {getattr(after, name)}")


def remove_parametrizations(module, tensor_name, leave_parametrized=True):
    """Undo ``register_parametrization``: ``tensor_name`` becomes a plain parameter again, holding
    the parametrized value (or the original, with ``leave_parametrized=False``)."""
    if not is_parametrized(module, tensor_name):
        raise ValueError(f"Module {module} does not have a parametrization on {tensor_name}")
    chain = module.parametrizations[tensor_name]
    if not chain.is_tensor and not leave_parametrized:
        raise ValueError("Cannot leave unparametrized (`leave_parametrized=False`) a tensor that is "
                         "parametrized in terms of a sequence of tensors.")
    if leave_parametrized:
        value = getattr(module, tensor_name)
    if chain.is_tensor and (not leave_parametrized or (value.shape == chain.original.shape
                                                        and value.dtype == chain.original.dtype)):
        # the original object comes back (holding the parametrized values where so asked), as in
        # PyTorch, so that an optimizer that trained it goes on training the module's tensor
        original = chain.original
        if leave_parametrized:
            with autograd.no_grad():
                original.copy_(value)
    else:  # several originals (or a right_inverse that changed the shape): a new parameter
        original = Parameter(value.detach().clone(), requires_grad=value.requires_grad)
    delattr(type(module), tensor_name)
    delattr(module.parametrizations, tensor_name)
    if not is_parametrized(module):
        delattr(module, "parametrizations")
        module.__class__ = module.__dict__.pop("_class_before_parametrization")
    _register_tensor(module, tensor_name, original)
    return module


def _register_tensor(module, name, tensor):
    """A parameter stays a parameter, any other tensor becomes a buffer (as PyTorch's
    parametrizations keep an original buffer a buffer)."""
    if isinstance(tensor, Parameter):
        module.register_parameter(name, tensor)
    else:
        module.register_buffer(name, tensor)


def type_before_parametrizations(module):
    """The module's class before any parametrization was registered (its own class when none was)."""
    if is_parametrized(module):
        return module.__dict__["_class_before_parametrization"]
    return type(module)


def transfer_parametrizations_and_params(from_module, to_module, tensor_name=None):
    """Register ``from_module``'s parametrizations of ``tensor_name`` (of every parametrized
    tensor when None) on ``to_module`` too, the same parametrization objects, and make its
    originals the very same tensors as ``from_module``'s (shared, not copied). A tensor that
    ``to_module`` lacks is first made a parameter holding ``from_module``'s parametrized value.
    Nothing happens when ``from_module`` is not parametrized. Returns ``to_module``."""
    if not is_parametrized(from_module):
        return to_module
    names = list(from_module.parametrizations.keys()) if tensor_name is None else [tensor_name]
    for name in names:
        if not hasattr(to_module, name):
            setattr(to_module, name, Parameter(getattr(from_module, name)))
        source = from_module.parametrizations[name]
        for parametrization in source:
            register_parametrization(to_module, name, parametrization)
        target = to_module.parametrizations[name]
        for k, original in enumerate(source.originals()):
            setattr(target, "original" if source.is_tensor else f"original{k}", original)
    return to_module
