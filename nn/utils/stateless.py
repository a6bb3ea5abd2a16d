"""Calling a module with other tensors in place of its parameters and buffers (``torch.nn.utils.stateless``).

``functional_call(model, {"fc.weight": w, ...}, args)`` runs ``model(*args)`` as if those were
its tensors, then puts the module's own back, so the output is a function of the tensors given
(gradients flow to them, not to the module's parameters): what ``autograd.func.grad`` and
per-sample gradients build on. The swap is PyTorch's: a registered name is written in its
registry directly, so any Tensor may stand in for a parameter (a non-leaf, a batched one); any
other name goes through ``setattr``, so a parametrized tensor is assigned through its
``right_inverse`` and a name the module lacks becomes an attribute (a Parameter: a parameter)
until the call ends. What forward assigns to a name given (``self.seen = self.seen + 1``) ends
up in the caller's dict.
"""

import contextlib
import warnings

from autograd import Tensor
from autograd.graph import program_stacklevel

_MISSING = object()


def _owner(module, name):
    prefix, _, attribute = name.rpartition(".")
    return module.get_submodule(prefix), attribute


def _swap(module, name, tensor):
    """Put ``tensor`` (or _MISSING: remove) at dotted ``name``; return what was there (or _MISSING).
    A registered name is written in its registry (a plain tensor may stand in for a parameter); any
    other goes through ``setattr``, as PyTorch's, so a Parameter at a new name is a parameter while
    the call lasts and a plain tensor an attribute."""
    owner, attribute = _owner(module, name)
    if attribute == "":  # ("" or "l1.": PyTorch's refusal, not an attribute by the empty name)
        raise KeyError('tensor name can\'t be empty string ""')
    if tensor is not _MISSING and tensor is not None and not isinstance(tensor, Tensor):
        raise TypeError(f"{tensor} is not an instance of torch.Tensor")
    registry = next((r for r in (owner._parameters, owner._buffers) if attribute in r), None)
    if registry is not None:
        original = registry[attribute]
        if tensor is _MISSING:
            del registry[attribute]
        else:
            registry[attribute] = tensor  # (the registry keeps the attribute in step)
        return original
    original = getattr(owner, attribute, _MISSING)
    if original is not _MISSING and original is not None and not isinstance(original, Tensor):
        raise TypeError(f"attribute `{attribute}`: {original} is not an instance of torch.Tensor")
    if tensor is not _MISSING:
        setattr(owner, attribute, tensor)
    elif hasattr(owner, attribute):
        delattr(owner, attribute)
    return original


def _untied(module, tensors):
    """``tensors`` with every name of a tied tensor (one tensor under several names) given the value
    given for any of them; two different values for one tied tensor raise."""
    names_of = {}
    for name, tensor in [*module.named_parameters(remove_duplicate=False),
                         *module.named_buffers(remove_duplicate=False)]:
        names_of.setdefault(id(tensor), set()).add(name)
    untied = dict(tensors)
    for names in names_of.values():
        given = [name for name in names if name in tensors]
        if len(names) < 2 or not given:
            continue
        if len({id(tensors[name]) for name in given}) > 1:
            raise ValueError(f"functional_call got multiple values for keys {sorted(names)}, which are tied. "
                             "Consider using tie_weights=False")
        for name in names:
            untied[name] = tensors[given[0]]
    return untied


@contextlib.contextmanager
def _reparametrize_module(module, parameters_and_buffers, tie_weights=False, strict=False):
    """Within the block, ``module``'s tensors at the names given are the tensors given."""
    tensors = _untied(module, parameters_and_buffers) if tie_weights else parameters_and_buffers
    if strict:
        own = {name for name, _ in [*module.named_parameters(remove_duplicate=False),
                                    *module.named_buffers(remove_duplicate=False)]}
        unexpected = sorted(set(tensors) - own)  # (both sorted, as PyTorch's: a set's order changes per process)
        missing = sorted(own - set(tensors))
        problems = ([f"Unexpected key(s): {', '.join(map(repr, unexpected))}."] if unexpected else []) + \
                   ([f"Missing key(s): {', '.join(map(repr, missing))}."] if missing else [])
        if problems:
            raise RuntimeError(f"Error(s) in reparametrizing for {module._get_name()}:\n\t" + "\n\t".join(problems))
    originals = {}
    try:
        for name, tensor in tensors.items():
            originals[name] = _swap(module, name, tensor)
        yield
    finally:
        finals = {name: _swap(module, name, original) for name, original in reversed(list(originals.items()))}
        # what forward assigned (``self.running = self.running + x``) goes back to the caller's dict, as in
        # PyTorch: the module's own tensor is put back either way
        parameters_and_buffers.update({name: finals[name] for name in parameters_and_buffers
                                       if finals.get(name, _MISSING) is not _MISSING})


def _functional_call(module, parameters_and_buffers, args=None, kwargs=None, *, tie_weights=True, strict=False):
    kwargs = {} if kwargs is None else kwargs
    args = () if args is None else args if isinstance(args, tuple) else (args,)
    with _reparametrize_module(module, parameters_and_buffers, tie_weights=tie_weights, strict=strict):
        return module(*args, **kwargs)


def functional_call(module, parameters_and_buffers, args=None, kwargs=None, *, tie_weights=True, strict=False):
    """``module(*args, **kwargs)`` with the tensors of ``parameters_and_buffers`` ({dotted name:
    tensor}) in place of its own (deprecated in PyTorch for ``torch.func.functional_call``, which is
    ``autograd.func.functional_call`` here). ``tie_weights``: a value given for one name of a tied
    tensor serves all its names. ``strict``: the names must be exactly the module's."""
    warnings.warn("`torch.nn.utils.stateless.functional_call` is deprecated as of PyTorch 2.0 and will be removed "
                  "in a future version of PyTorch. Please use `torch.func.functional_call` instead which is a "
                  "drop-in replacement.", FutureWarning, stacklevel=program_stacklevel())
    return _functional_call(module, parameters_and_buffers, args, kwargs, tie_weights=tie_weights, strict=strict)
