"""``nn.utils.prune``: zero some of a module's weights through a mask, as PyTorch's.

Pruning ``module.weight`` replaces the parameter by two tensors and a hook, with PyTorch's names
(so a pruned model's state dict has PyTorch's keys, ``weight_orig`` and ``weight_mask``):

    weight_orig   the parameter itself, still trained (its gradient is masked through the product)
    weight_mask   a buffer of 0s and 1s
    weight        a plain attribute, weight_orig · weight_mask, recomputed by a forward pre-hook
                  before every call

Which entries the mask zeroes is the method's choice: ``random_unstructured`` draws them,
``l1_unstructured`` takes those of smallest |w| (or of smallest ``importance_scores``),
``random_structured`` and ``ln_structured`` drop whole slices along ``dim`` (at random, or those
of smallest L_n norm), ``custom_from_mask`` takes a given mask, ``identity`` keeps everything, and
``global_unstructured`` ranks the entries of several tensors together. ``amount`` is a count
(an int) or a fraction of what is left (a float in [0, 1], rounded). Pruning a tensor again
combines the methods in a ``PruningContainer``: each new method sees only the entries (or, for a
structured one, the slices) that survived, so pruning 50% twice leaves 25%. ``remove`` makes the
pruning permanent (``weight`` a parameter again, holding the zeros), ``is_pruned`` tells whether
any submodule carries a pruning hook.
"""

import abc
import collections.abc
import numbers

import numpy

import autograd
from nn.utils.convert_parameters import parameters_to_vector

__all__ = ["BasePruningMethod", "CustomFromMask", "Identity", "L1Unstructured", "LnStructured", "PruningContainer",
           "RandomStructured", "RandomUnstructured", "custom_from_mask", "global_unstructured", "identity",
           "is_pruned", "l1_unstructured", "ln_structured", "random_structured", "random_unstructured", "remove"]


class BasePruningMethod(abc.ABC):
    """A pruning method: ``compute_mask`` says which entries to keep; ``apply`` reparametrizes a
    module's tensor with it; the instance is the module's forward pre-hook."""

    _tensor_name: str

    def __call__(self, module, inputs):
        setattr(module, self._tensor_name, self.apply_mask(module))

    @abc.abstractmethod
    def compute_mask(self, t, default_mask):
        """The new mask for tensor ``t``, given the mask so far (``default_mask``)."""

    def apply_mask(self, module):
        """<name>_orig · <name>_mask: the pruned tensor."""
        orig = getattr(module, self._tensor_name + "_orig")
        mask = getattr(module, self._tensor_name + "_mask")
        return mask.to(dtype=orig.dtype) * orig

    @classmethod
    def apply(cls, module, name, *args, importance_scores=None, **kwargs):
        """Prune ``module.<name>`` with ``cls(*args, **kwargs)`` (combined with any pruning it already has)."""
        method = _composite_method(cls, module, name, *args, **kwargs)
        orig = getattr(module, name)
        if importance_scores is not None:
            if tuple(importance_scores.shape) != tuple(orig.shape):
                raise AssertionError(f"importance_scores should have the same shape as parameter {name} of "
                                     f"{module}")
        else:
            importance_scores = orig
        first = not isinstance(method, PruningContainer)
        if first:  # <name> becomes <name>_orig (the same Parameter: registered first, so a tensor that is not one,
            # a parametrized weight or a buffer, is refused before anything changes), and the mask starts at all ones
            module.register_parameter(name + "_orig", orig)
            del module._parameters[name]
            default_mask = autograd.ones_like(orig)
        else:
            default_mask = getattr(module, name + "_mask").detach().clone()
        try:
            mask = method.compute_mask(importance_scores, default_mask=default_mask)
            module.register_buffer(name + "_mask", mask) if first else setattr(module, name + "_mask", mask)
            setattr(module, name, method.apply_mask(module))
            module.register_forward_pre_hook(method)
        except Exception:
            if first:  # leave the module as it was
                module.register_parameter(name, orig)
                del module._parameters[name + "_orig"]
            raise
        return method

    def prune(self, t, default_mask=None, importance_scores=None):
        """t with this method's mask applied (the mask computed from ``importance_scores``, or t)."""
        if importance_scores is not None and tuple(importance_scores.shape) != tuple(t.shape):
            raise AssertionError(f"importance_scores should have the same shape as tensor t, got "
                                 f"{importance_scores.shape} vs {t.shape}")
        scores = importance_scores if importance_scores is not None else t
        mask = self.compute_mask(scores, default_mask=default_mask if default_mask is not None
                                 else autograd.ones_like(t))
        return t * mask

    def remove(self, module):
        """Make the pruning permanent: ``<name>`` a parameter again (the same one as ``<name>_orig``,
        holding the pruned values); ``<name>_orig`` and ``<name>_mask`` go."""
        if self._tensor_name is None:
            raise AssertionError(f"Module {module} has to be pruned before pruning can be removed")
        weight = self.apply_mask(module)
        if hasattr(module, self._tensor_name):
            delattr(module, self._tensor_name)
        orig = module._parameters[self._tensor_name + "_orig"]
        # the pruned values become orig's data, as PyTorch's: a new storage, not a write into the old one (which a
        # graph may have saved, or a tensor may share)
        orig.data = weight.data
        delattr(module, self._tensor_name + "_orig")
        delattr(module, self._tensor_name + "_mask")
        setattr(module, self._tensor_name, orig)


def _composite_method(cls, module, name, *args, **kwargs):
    """cls(*args, **kwargs), combined with the pruning hook ``module.<name>`` already has (whose hook is
    taken off: the combined one is registered in its place)."""
    old_method, found = None, []
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, BasePruningMethod) and hook._tensor_name == name:
            old_method = hook
            found.append(key)
    if len(found) > 1:
        raise AssertionError(f"Avoid adding multiple pruning hooks to the same tensor {name} of module {module}. "
                             "Use a PruningContainer.")
    for key in found:
        del module._forward_pre_hooks[key]
    method = cls(*args, **kwargs)
    method._tensor_name = name
    if isinstance(old_method, PruningContainer):
        old_method.add_pruning_method(method)
        method = old_method
    elif old_method is not None:
        container = PruningContainer(old_method)
        container.add_pruning_method(method)
        method = container
    return method


class PruningContainer(BasePruningMethod):
    """The pruning methods applied to one tensor so far, in order: the mask is the last one's,
    computed on what the earlier ones left."""

    def __init__(self, *args):
        self._pruning_methods = ()
        if len(args) == 1 and not isinstance(args[0], BasePruningMethod):  # an iterable of methods
            args = tuple(args[0])
        for method in args:
            self.add_pruning_method(method)

    def add_pruning_method(self, method):
        if not isinstance(method, BasePruningMethod) and method is not None:
            raise TypeError(f"{type(method)} is not a BasePruningMethod subclass")
        if method is not None and getattr(self, "_tensor_name", None) not in (None, method._tensor_name):
            raise ValueError(f"Can only add pruning methods acting on the parameter named '{self._tensor_name}' to "
                             f"PruningContainer. Found '{method._tensor_name}'")
        self._pruning_methods += (method,)
        self._tensor_name = method._tensor_name

    def __len__(self):
        return len(self._pruning_methods)

    def __iter__(self):
        return iter(self._pruning_methods)

    def __getitem__(self, index):
        return self._pruning_methods[index]

    def compute_mask(self, t, default_mask):
        """The last method's mask, computed on the entries (unstructured) or slices (structured)
        the mask so far keeps, and written back into that mask."""
        method = self._pruning_methods[-1]
        mask = default_mask.to(dtype=t.dtype)
        kept = mask.numpy() == 1
        if method.PRUNING_TYPE == "unstructured":
            where = kept
        elif method.PRUNING_TYPE == "structured":
            if not hasattr(method, "dim"):
                raise AttributeError("Pruning methods of PRUNING_TYPE 'structured' need to have the attribute `dim` "
                                     "defined.")
            dim = method.dim + t.ndim if method.dim < 0 else method.dim
            if dim < 0:
                raise IndexError(f"Index is out of bounds for tensor of size {t.ndim}")
            others = tuple(d for d in range(t.ndim) if d != dim)
            channels = mask.numpy().sum(axis=others) != 0
            where = [slice(None)] * t.ndim
            where[dim] = numpy.flatnonzero(channels)
            where = tuple(where)
        elif method.PRUNING_TYPE == "global":
            where = (slice(None),) * t.ndim
        else:
            raise ValueError(f"Unrecognized PRUNING_TYPE {method.PRUNING_TYPE}")
        values = t.detach().numpy()[where]
        partial = method.compute_mask(autograd.tensor(values), default_mask=autograd.tensor(mask.numpy()[where]))
        combined = mask.numpy().copy()
        combined[where] = partial.numpy()
        return autograd.tensor(combined)


class Identity(BasePruningMethod):
    """Keeps every entry (a mask of ones): pruning's bookkeeping without pruning."""

    PRUNING_TYPE = "unstructured"

    def compute_mask(self, t, default_mask):
        return default_mask

    @classmethod
    def apply(cls, module, name):
        return super().apply(module, name)


def _validate_pruning_amount_init(amount):
    """``amount`` is a count (an int >= 0) or a fraction (a float in [0, 1]); checked when a method is made, before
    the size of the tensor it prunes is known."""
    if not isinstance(amount, numbers.Real) or isinstance(amount, bool):
        raise TypeError(f"Invalid type for amount: {amount}. Must be int or float.")
    if (isinstance(amount, numbers.Integral) and amount < 0) or (
            not isinstance(amount, numbers.Integral) and (float(amount) > 1.0 or float(amount) < 0.0)):
        raise ValueError(f"amount={amount} should either be a float in the range [0, 1] or a non-negative integer")


def _validate_pruning_amount(amount, tensor_size):
    """A count must not exceed the ``tensor_size`` units there are (a fraction never does)."""
    if isinstance(amount, numbers.Integral) and amount > tensor_size:
        raise ValueError(f"amount={amount} should be smaller than the number of parameters to prune={tensor_size}")


def _compute_nparams_toprune(amount, tensor_size):
    """How many of ``tensor_size`` units to prune: ``amount`` itself (an int) or round(amount · tensor_size)
    (Python's round: halves to even). These three helpers keep PyTorch's names, which custom pruning methods
    call."""
    if isinstance(amount, numbers.Integral):
        return amount
    return round(amount * tensor_size)


def _count(amount, size):
    """_compute_nparams_toprune, checked against ``size``."""
    count = _compute_nparams_toprune(amount, size)
    _validate_pruning_amount(count, size)
    return int(count)


def _without(t, default_mask, amount, chosen):
    """default_mask with 0 at the ``amount`` entries of t that ``chosen(count)`` names (flat indices), called
    only when something is pruned (a random choice draws only then)."""
    count = _count(amount, t.numel())
    mask = default_mask.detach().numpy().copy()
    if count:
        mask.reshape(-1)[chosen(count).numpy()] = 0
    return autograd.tensor(mask)


class RandomUnstructured(BasePruningMethod):
    """Zeroes ``amount`` entries drawn at random (from autograd's generator) among those left: those whose
    uniform draws are the largest, as PyTorch's (its topk of the draws), so a seed prunes what PyTorch's does."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount):
        _validate_pruning_amount_init(amount)
        self.amount = amount

    def compute_mask(self, t, default_mask):  # (t's dtype for the draws: a float64 tensor draws doubles)
        return _without(t, default_mask, self.amount,
                        lambda count: autograd.rand_like(t).reshape(-1).topk(count).indices)

    @classmethod
    def apply(cls, module, name, amount):
        return super().apply(module, name, amount=amount)


class L1Unstructured(BasePruningMethod):
    """Zeroes the ``amount`` entries of smallest absolute value (of ``importance_scores`` when given)."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, amount):
        _validate_pruning_amount_init(amount)
        self.amount = amount

    def compute_mask(self, t, default_mask):  # (topk's choice among equal |w|, as PyTorch's)
        return _without(t, default_mask, self.amount,
                        lambda count: t.detach().abs().reshape(-1).topk(count, largest=False).indices)

    @classmethod
    def apply(cls, module, name, amount, importance_scores=None):
        return super().apply(module, name, amount=amount, importance_scores=importance_scores)


def _check_structured(t, dim):
    if t.ndim <= 1:
        raise ValueError(f"Structured pruning can only be applied to multidimensional tensors. Found tensor of shape "
                         f"{t.shape} with {t.ndim} dims")
    if dim >= t.ndim:
        raise IndexError(f"Invalid index {dim} for tensor of size {t.shape}")


def _channel_mask(t, dim, kept):
    """Ones on the slices ``kept`` (indices along ``dim``), zeros elsewhere."""
    mask = numpy.zeros(t.shape, dtype=t.detach().numpy().dtype)
    where = [slice(None)] * t.ndim
    where[dim] = kept
    mask[tuple(where)] = 1
    return mask


def _without_slices(t, dim, default_mask, amount, kept):
    """default_mask times 0 on all but the slices of t along ``dim`` that ``kept(channels, count)`` names
    (when ``count`` of them go), called only when something is pruned."""
    _check_structured(t, dim)
    channels = t.shape[dim]
    count = _count(amount, channels)
    if count == 0:
        return default_mask
    return autograd.tensor(_channel_mask(t, dim, kept(channels, count))) * default_mask.to(dtype=t.dtype)


def _random_slices(channels, count):
    """The slices whose uniform draw is above the ``count``-th smallest, as PyTorch's (its kthvalue)."""
    draws = autograd.rand(channels)
    return (draws > autograd.kthvalue(draws, count).values).numpy()


class RandomStructured(BasePruningMethod):
    """Zeroes ``amount`` whole slices along ``dim``, drawn at random."""

    PRUNING_TYPE = "structured"

    def __init__(self, amount, dim=-1):
        _validate_pruning_amount_init(amount)
        self.amount, self.dim = amount, dim

    def compute_mask(self, t, default_mask):
        return _without_slices(t, self.dim, default_mask, self.amount, _random_slices)

    @classmethod
    def apply(cls, module, name, amount, dim=-1):
        return super().apply(module, name, amount=amount, dim=dim)


class LnStructured(BasePruningMethod):
    """Zeroes the ``amount`` slices along ``dim`` of smallest L_n norm (``n`` as ``torch.norm``'s p)."""

    PRUNING_TYPE = "structured"

    def __init__(self, amount, n, dim=-1):
        _validate_pruning_amount_init(amount)
        self.amount, self.n, self.dim = amount, n, dim

    def compute_mask(self, t, default_mask):
        def largest_norms(channels, count):  # torch.norm's p (so 'fro' over more than 2 dims fails as there)
            others = [d for d in range(t.ndim) if d != self.dim % t.ndim]
            return autograd.norm(t.detach(), p=self.n, dim=others).topk(channels - count).indices.numpy()
        return _without_slices(t, self.dim, default_mask, self.amount, largest_norms)

    @classmethod
    def apply(cls, module, name, amount, n, dim, importance_scores=None):
        return super().apply(module, name, amount=amount, n=n, dim=dim, importance_scores=importance_scores)


class CustomFromMask(BasePruningMethod):
    """Keeps what ``mask`` keeps (times the mask so far)."""

    PRUNING_TYPE = "global"

    def __init__(self, mask):
        self.mask = mask

    def compute_mask(self, t, default_mask):
        if tuple(default_mask.shape) != tuple(self.mask.shape):
            raise AssertionError(f"default_mask shape {default_mask.shape} must match self.mask shape "
                                 f"{self.mask.shape}")
        return default_mask * self.mask.to(dtype=default_mask.dtype)

    @classmethod
    def apply(cls, module, name, mask):
        return super().apply(module, name, mask=mask)


def identity(module, name):
    """Prune nothing, but reparametrize ``module.<name>`` as pruning does (``<name>_orig``, ``<name>_mask``)."""
    Identity.apply(module, name)
    return module


def random_unstructured(module, name, amount):
    """Zero ``amount`` random entries of ``module.<name>`` (an int, or a fraction of what is left)."""
    RandomUnstructured.apply(module, name, amount)
    return module


def l1_unstructured(module, name, amount, importance_scores=None):
    """Zero the ``amount`` entries of ``module.<name>`` of smallest |w| (or smallest importance score)."""
    L1Unstructured.apply(module, name, amount=amount, importance_scores=importance_scores)
    return module


def random_structured(module, name, amount, dim):
    """Zero ``amount`` random slices of ``module.<name>`` along ``dim``."""
    RandomStructured.apply(module, name, amount, dim)
    return module


def ln_structured(module, name, amount, n, dim, importance_scores=None):
    """Zero the ``amount`` slices of ``module.<name>`` along ``dim`` of smallest L_n norm."""
    LnStructured.apply(module, name, amount, n, dim, importance_scores=importance_scores)
    return module


def custom_from_mask(module, name, mask):
    """Prune ``module.<name>`` with the given mask."""
    CustomFromMask.apply(module, name, mask)
    return module


def global_unstructured(parameters, pruning_method, importance_scores=None, **kwargs):
    """Prune several tensors together: ``pruning_method(**kwargs)`` (an unstructured method) ranks the
    entries of all the (module, name) pairs of ``parameters`` at once, then each gets its part of
    the mask (so a layer with small weights may lose more than another)."""
    if not isinstance(parameters, collections.abc.Iterable):
        raise TypeError("global_unstructured(): parameters is not an Iterable")
    parameters = list(parameters)  # (read twice: PyTorch's, given a generator, finds it empty the second time)
    importance_scores = importance_scores if importance_scores is not None else {}
    if not isinstance(importance_scores, dict):
        raise TypeError("global_unstructured(): importance_scores must be of type dict")
    scores = parameters_to_vector([importance_scores.get((module, name), getattr(module, name))
                                   for module, name in parameters])
    default_mask = parameters_to_vector([getattr(module, name + "_mask", autograd.ones_like(getattr(module, name)))
                                         for module, name in parameters])
    method = pruning_method(**kwargs)
    method._tensor_name = "temp"
    if method.PRUNING_TYPE != "unstructured":
        raise TypeError(f'Only "unstructured" PRUNING_TYPE supported for the `pruning_method`. Found method '
                        f"{pruning_method} of type {method.PRUNING_TYPE}")
    final_mask = PruningContainer(method).compute_mask(scores, default_mask)
    start = 0
    for module, name in parameters:
        param = getattr(module, name)
        custom_from_mask(module, name, mask=final_mask[start:start + param.numel()].view_as(param))
        start += param.numel()


def remove(module, name):
    """Make the pruning of ``module.<name>`` permanent: it becomes a parameter again, zeros included."""
    for key, hook in list(module._forward_pre_hooks.items()):
        if isinstance(hook, BasePruningMethod) and hook._tensor_name == name:
            hook.remove(module)
            del module._forward_pre_hooks[key]
            return module
    raise ValueError(f"Parameter '{name}' of module {module} has to be pruned before pruning can be removed")


def is_pruned(module):
    """Whether ``module`` or any of its submodules carries a pruning hook."""
    return any(isinstance(hook, BasePruningMethod) for _, submodule in module.named_modules()
               for hook in submodule._forward_pre_hooks.values())
