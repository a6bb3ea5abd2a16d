"""Containers: ``Sequential``, ``ModuleList``, ``ModuleDict``, and ``Ensemble``."""

import math

import autograd

from .module import Module


class _ModuleSequence(Module):
    """Modules kept in order under the names '0', '1', ...: indexing, assignment, iteration."""

    def _from_list(self, modules):
        raise NotImplementedError

    def append(self, module):
        self.add_module(str(len(self._modules)), module)
        return self

    def __getitem__(self, index):
        modules = list(self._modules.values())
        return self._from_list(modules[index]) if isinstance(index, slice) else modules[index]

    def __setitem__(self, index, module):
        names = list(self._modules)
        if not -len(names) <= index < len(names):
            raise IndexError(f"index {index} is out of range for {type(self).__name__} of length {len(names)}")
        self.add_module(names[index], module)  # the name keeps its place in the order

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


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

    def forward(self, x):
        for module in self._modules.values():
            x = module(x)
        return x


class ModuleList(_ModuleSequence):
    """A list of modules whose parameters the parent module sees."""

    def __init__(self, modules=()):
        super().__init__()
        self.extend(modules)

    def _from_list(self, modules):
        return ModuleList(modules)

    def extend(self, modules):
        for module in modules:
            self.append(module)
        return self


class ModuleDict(Module):
    """A dict of modules whose parameters the parent module sees."""

    def __init__(self, modules=None):
        super().__init__()
        for name, module in (modules or {}).items():
            self.add_module(name, module)

    def __getitem__(self, name):
        return self._modules[name]

    def __setitem__(self, name, module):
        self.add_module(name, module)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules)

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()


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
