"""Containers: ``Sequential``, ``ModuleList``, ``ModuleDict``, ``ParameterList``,
``ParameterDict`` and ``Ensemble``."""

import math
import operator
import warnings
from collections import OrderedDict, abc

import autograd
from autograd import Tensor
from autograd.graph import program_stacklevel

from .module import Module
from .parameter import Parameter


class Container(Module):
    """PyTorch's oldest container, deprecated there: the keyword arguments as child modules."""

    def __init__(self, **kwargs):
        super().__init__()
        warnings.warn("`nn.Container` is deprecated. All of its functionality is now implemented in `nn.Module`. "
                      "Subclass that instead.", stacklevel=program_stacklevel())
        for name, module in kwargs.items():
            self.add_module(name, module)


class _ModuleSequence(Module):
    """Modules kept in order under the names '0', '1', ...: indexing, assignment, iteration."""

    def _from_list(self, modules):
        raise NotImplementedError

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self

    def __add__(self, other):
        """A new container of both one's modules and the other's (the same module objects)."""
        self._check_operand(other)
        return self._from_list([*self, *other])

    def __iadd__(self, other):
        self._check_operand(other)
        return self.extend(list(other))

    def _check_operand(self, other):
        """What ``+`` takes: any modules for a ModuleList; only a Sequential for a Sequential (as PyTorch)."""
        if isinstance(other, Module) and not isinstance(other, _ModuleSequence):
            raise TypeError(f"{type(self).__name__} + takes an iterable of modules, got a {type(other).__name__}")

    def __getitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return self._from_list(modules[index])
        position = operator.index(index)  # a str or float: TypeError, as PyTorch's
        if not -len(modules) <= position < len(modules):
            raise IndexError(f"index {position} is out of range")
        return modules[position]

    def __setitem__(self, index, module):
        names = list(self._modules)
        index = operator.index(index)
        if not -len(names) <= index < len(names):
            raise IndexError(f"index {index} is out of range for {type(self).__name__} of length {len(names)}")
        self.add_module(names[index], module)  # the name keeps its place in the order

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def _renumber(self, modules):
        """Keep ``modules`` under the names '0', '1', ... again (after an insert or a removal)."""
        for name in list(self._modules):
            delattr(self, name)
        for module in modules:
            self.append(module)

    def insert(self, index, module):
        modules = list(self._modules.values())
        modules.insert(index, module)
        self._renumber(modules)
        return self

    def __delitem__(self, index):
        modules = list(self._modules.values())
        del modules[index]
        self._renumber(modules)

    def pop(self, index=-1):
        module = self[index]
        del self[index]
        return module


class Sequential(_ModuleSequence):
    """Modules applied one after another: Sequential(a, b, c)(x) = c(b(a(x)))."""

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], dict):
            for name, module in modules[0].items():
                self.add_module(name, module)
        else:
            for module in modules:
                self.append(module)

    def _from_list(self, modules):
        return Sequential(*modules)

    def insert(self, index, module):
        """PyTorch's Sequential.insert, stricter than a list's: ``index`` within [-len, len]."""
        if not isinstance(module, Module):
            raise AssertionError(f"module should be of type: {Module}")
        if not -len(self) <= index <= len(self):
            raise IndexError(f"Index out of range: {index}")
        return super().insert(index, module)

    def __getitem__(self, index):
        if isinstance(index, slice):  # a slice keeps its modules' names (model[:i + 1] of named layers)
            return type(self)(dict(list(self._modules.items())[index]))
        return super().__getitem__(index)

    def _check_operand(self, other):
        if not isinstance(other, Sequential):
            raise ValueError(f"add operator supports only objects of Sequential class, but {type(other)} is given.")

    def _check_factor(self, other):
        if not isinstance(other, int) or isinstance(other, bool):
            raise TypeError(f"unsupported operand type(s) for *: {type(self)} and {type(other)}")
        if other <= 0:
            raise ValueError(f"Non-positive multiplication factor {other} for {type(self)}")

    def __mul__(self, other):
        """The modules ``other`` times over, in a new Sequential (the same module objects, so shared weights)."""
        self._check_factor(other)
        return Sequential(*(list(self) * other))

    __rmul__ = __mul__

    def __imul__(self, other):
        self._check_factor(other)
        return self.extend(list(self) * (other - 1))

    def forward(self, input):  # (PyTorch's name: model(input=x), and a traced Sequential's placeholder, input_1)
        for module in self._modules.values():
            input = module(input)
        return input


class ModuleList(_ModuleSequence):
    """A list of modules whose parameters the parent module sees."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def _from_list(self, modules):
        return ModuleList(modules)

    def extend(self, modules):
        _check_iterable(modules, "ModuleList.extend should be called with an iterable")
        return super().extend(modules)

    def __iadd__(self, modules):
        return self.extend(modules)

    def __repr__(self):
        """PyTorch's: a run of children that print alike is one entry, ``(0-5): 6 x Block(...)``."""
        runs = []  # [first index, last index, repr]
        for index, module in enumerate(self):
            text = repr(module)
            if runs and runs[-1][2] == text:
                runs[-1][1] = index
            else:
                runs.append([index, index, text])
        if not runs:
            return self._get_name() + "()"
        lines = [(f"({first}): " if first == last else f"({first}-{last}): {last - first + 1} x ") + text
                 for first, last, text in runs]
        return self._get_name() + "(\n  " + "\n  ".join(line.replace("\n", "\n  ") for line in lines) + "\n)"


class ModuleDict(Module):
    """A dict of modules whose parameters the parent module sees."""

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, name):
        return self._modules[name]

    def __setitem__(self, name, module):
        self.add_module(name, module)

    def __delitem__(self, name):
        del self._modules[name]

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def __contains__(self, name):
        return name in self._modules

    def pop(self, name):
        module = self[name]
        del self[name]
        return module

    def clear(self):
        self._modules.clear()

    def update(self, modules):
        """Add (or replace) the modules of a mapping or of an iterable of (name, module) pairs."""
        for name, module in _pairs(modules, "ModuleDict", sort=False):
            self[name] = module

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()


def _check_iterable(values, what, tensor_is_one_value=False):
    """PyTorch's TypeError for a container's extend or update given one value (ParameterList's extend takes a
    tensor for one value, not for the sequence of its rows)."""
    if not isinstance(values, abc.Iterable) or tensor_is_one_value and isinstance(values, Tensor):
        raise TypeError(f"{what}, but got {type(values).__name__}")


def _pairs(entries, kind, sort):
    """The (key, value) pairs of a dict container's update: a mapping's items (a plain mapping's sorted by key
    when ``sort``, as PyTorch's ParameterDict, whose order it cannot trust) or an iterable of pairs, each
    checked."""
    what = "ParametersDict.update" if kind == "ParameterDict" else f"{kind}.update"
    _check_iterable(entries, f"{what} should be called with an iterable of key/value pairs")
    if isinstance(entries, (OrderedDict, ModuleDict, ParameterDict)):
        return list(entries.items())
    if isinstance(entries, abc.Mapping):
        return sorted(entries.items()) if sort else list(entries.items())
    pairs = []
    for j, pair in enumerate(entries):
        if not isinstance(pair, abc.Iterable):
            raise TypeError(f"{kind} update sequence element #{j} should be Iterable; is{type(pair).__name__}")
        if len(pair) != 2:
            raise ValueError(f"{kind} update sequence element #{j} has length {len(pair)}; 2 is required")
        pairs.append(tuple(pair))
    return pairs


def _set_entry(container, name, value):
    """Store a parameter container's entry: a plain Tensor becomes a Parameter (as PyTorch's parameter
    containers do) and is registered; anything else is a plain attribute."""
    if isinstance(value, Tensor) and not isinstance(value, Parameter):
        value = Parameter(value)
    if isinstance(value, Parameter) or value is None:
        container.register_parameter(name, value)
    else:
        setattr(container, name, value)


def _describe(entries, type_text):
    """PyTorch's lines for a ParameterList or ParameterDict, indented by two more spaces than a child
    module's: '  (0): Parameter containing: [autograd.float32 of size 2x3]' (``type_text(p)`` the
    middle: the dtype for a list, the tensor type, 'torch.FloatTensor', for a dict)."""
    lines = []
    for key, value in entries:
        if isinstance(value, Tensor):
            kind = "Parameter" if isinstance(value, Parameter) else "Tensor"
            device = f" ({value.device})" if value.device.type != "cpu" else ""
            text = f"{kind} containing: [{type_text(value)} of size {'x'.join(map(str, value.shape))}{device}]"
        else:
            text = f"Object of type: {type(value).__name__}"
        lines.append(f"  ({key}): {text}")
    return "\n".join(lines)


class ParameterList(Module):
    """A list of parameters whose module sees them (named '0', '1', ...)."""

    def __init__(self, values=None):
        super().__init__()
        self._size = 0
        self.extend(values or ())

    def append(self, value):
        self._size += 1
        _set_entry(self, str(self._size - 1), value)
        return self

    def extend(self, values):
        _check_iterable(values, "ParameterList.extend should be called with an iterable", tensor_is_one_value=True)
        for value in values:
            self.append(value)
        return self

    def __iadd__(self, values):
        return self.extend(values)

    def _index(self, index):
        index = operator.index(index)
        if not -self._size <= index < self._size:
            raise IndexError(f"index {index} is out of range")
        return str(index % self._size)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ParameterList([self[i] for i in range(self._size)[index]])
        return getattr(self, self._index(index))

    def __setitem__(self, index, value):
        _set_entry(self, self._index(index), value)

    def __len__(self):
        return self._size

    def __iter__(self):
        return (self[i] for i in range(self._size))

    def extra_repr(self):
        return _describe(enumerate(self), lambda p: f"autograd.{p.dtype}")


class ParameterDict(Module):
    """A dict of parameters whose module sees them, in insertion order."""

    def __init__(self, parameters=None):
        super().__init__()
        self._keys = {}
        if parameters is not None:
            self.update(parameters)

    def __getitem__(self, key):
        if key not in self._keys:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key, value):
        self._keys[key] = None
        _set_entry(self, key, value)

    def __delitem__(self, key):
        del self._keys[key]
        delattr(self, key)

    def __len__(self):
        return len(self._keys)

    def __iter__(self):
        return iter(self._keys)

    def __reversed__(self):
        return reversed(list(self._keys))

    def __contains__(self, key):
        return key in self._keys

    def keys(self):
        return self._keys.keys()

    def values(self):
        return [self[key] for key in self._keys]

    def items(self):
        return [(key, self[key]) for key in self._keys]

    def get(self, key, default=None):
        return self[key] if key in self else default

    def pop(self, key):
        value = self[key]
        del self[key]
        return value

    def popitem(self):
        """The last (key, parameter) put in, removed."""
        key = next(reversed(self._keys))
        return key, self.pop(key)

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def clear(self):
        for key in list(self._keys):
            del self[key]

    def copy(self):
        """A new ParameterDict holding the same parameters."""
        return ParameterDict(self.items())

    def __or__(self, other):
        """A new ParameterDict: this one's entries, then (replacing or added) other's."""
        merged = self.copy()
        merged.update(other)
        return merged

    def __ror__(self, other):
        merged = ParameterDict(other)
        merged.update(self)
        return merged

    def __ior__(self, other):
        self.update(other)
        return self

    def fromkeys(self, keys, default=None):
        """A new ParameterDict with each of ``keys`` set to ``default``."""
        return ParameterDict((key, default) for key in keys)

    def update(self, parameters):
        for key, value in _pairs(parameters, "ParameterDict", sort=True):
            self[key] = value

    def extra_repr(self):
        return _describe(self.items(), autograd.typename)


class Ensemble(Module):
    """Several models whose predictions are averaged (the lecture's decision-level regulariser).

    combine='mean' averages the members' outputs; combine='probabilities' averages
    their softmax probabilities and returns the log of that average, so it can be
    fed to ``nn.NLLLoss``. Train the members together by putting a loss on the
    ensemble's output, or separately with one loss per member on ``members_outputs(x)``.
    """

    def __init__(self, members, combine="mean", dim=-1):
        super().__init__()
        if combine not in ("mean", "probabilities"):
            raise ValueError(f"Ensemble: combine must be 'mean' or 'probabilities', got {combine!r}")
        self.members = ModuleList(members)
        self.combine, self.dim = combine, dim

    def members_outputs(self, x):
        return [member(x) for member in self.members]

    def forward(self, x):
        outputs = autograd.stack(self.members_outputs(x), 0)
        if self.combine == "mean":
            return outputs.mean(0)
        # log of the mean probability, computed stably: logsumexp of log-probabilities - log K
        log_probabilities = outputs.log_softmax(self.dim if self.dim < 0 else self.dim + 1)
        return log_probabilities.logsumexp(0) - math.log(len(self.members))

    def extra_repr(self):
        return f"combine={self.combine!r}"
