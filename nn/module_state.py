"""Saving and loading a Module's state: ``state_dict``, ``load_state_dict``, their hooks, extra state.

PyTorch's protocol, which real code overrides and hooks into, is kept: each
module saves its own tensors in ``_save_to_state_dict(destination, prefix,
keep_vars)`` and loads them in ``_load_from_state_dict(state_dict, prefix,
local_metadata, strict, missing_keys, unexpected_keys, error_msgs)``; the
public methods walk the tree and run the hooks around those:

    state_dict:      pre-hooks(module, prefix, keep_vars) → own tensors (+ extra state)
                     → children → post-hooks(module, state_dict, prefix, local_metadata)
    load_state_dict: load pre-hooks(module, state_dict, prefix, ...) → own tensors
                     → children → post-hooks(module, incompatible_keys)

A module whose class defines ``get_extra_state``/``set_extra_state`` saves any
object under ``<prefix>_extra_state`` and gets it back on load.

A ``load_state_dict`` that raises (missing or unexpected keys with ``strict``, a
shape mismatch) has copied the tensors that fitted, as PyTorch's: programs
fine-tuned from a checkpoint with another head catch the error and go on with
the backbone loaded (YOLACT's ``try: self.load_state_dict(state_dict) except
RuntimeError as e: print('Ignoring ...')``).
"""

import collections
import collections.abc
import itertools
import warnings

import numpy

import autograd
from autograd import Tensor
from autograd.graph import program_stacklevel
from autograd.hooks import add_hook
from autograd.sparse_layout import is_sparse
from autograd.tensor import tensor_from

# PyTorch's class name (code may test type(result).__name__); nn.module also gives it as IncompatibleKeys
IncompatibleKeys = collections.namedtuple("_IncompatibleKeys", ["missing_keys", "unexpected_keys"])
IncompatibleKeys.__repr__ = (lambda self: "<All keys matched successfully>"
                             if not self.missing_keys and not self.unexpected_keys
                             else f"_IncompatibleKeys(missing_keys={self.missing_keys}, "
                                  f"unexpected_keys={self.unexpected_keys})")

EXTRA_STATE_KEY_SUFFIX = "_extra_state"

class ModuleState:
    """The state-dict half of ``nn.Module`` (mixed into it)."""

    _version = 1  # saved in each module's metadata, as PyTorch's; subclasses may raise it

    def _hook_registry(self, name):
        registry = self.__dict__.get(name)
        if registry is None:
            registry = {}
            object.__setattr__(self, name, registry)
        return registry

    # -- hooks ------------------------------------------------------------------------------------

    def register_state_dict_pre_hook(self, hook):
        """hook(module, prefix, keep_vars) -> None, before this module's state is saved."""
        return add_hook(self._hook_registry("_state_dict_pre_hooks"), hook)

    def register_state_dict_post_hook(self, hook):
        """hook(module, state_dict, prefix, local_metadata) -> None, once this module and its children
        are saved; it may change ``state_dict`` in place (a returned value raises, as in PyTorch)."""
        hook._from_public_api = True
        return add_hook(self._hook_registry("_state_dict_hooks"), hook)

    def _register_state_dict_hook(self, hook):
        """PyTorch's older post-hook: as register_state_dict_post_hook, but a dict it returns
        replaces the state dict (respected at the root module only, as in PyTorch)."""
        if getattr(hook, "_from_public_api", False):
            raise RuntimeError("Cannot register the same function as the state dict post hook that was "
                               "previously registered via register_state_dict_post_hook")
        return add_hook(self._hook_registry("_state_dict_hooks"), hook)

    def register_load_state_dict_pre_hook(self, hook):
        """hook(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
        error_msgs) -> None, before this module loads; it may change ``state_dict`` (rename keys)."""
        return self._register_load_state_dict_pre_hook(hook, with_module=True)

    def _register_load_state_dict_pre_hook(self, hook, with_module=False):
        """As register_load_state_dict_pre_hook; without ``with_module`` the hook is not given the module."""
        call = _WithModule(hook, self) if with_module else hook
        return add_hook(self._hook_registry("_load_state_dict_pre_hooks"), call)

    def register_load_state_dict_post_hook(self, hook):
        """hook(module, incompatible_keys) -> None, once this module and its children are loaded (before
        ``strict`` is checked): it may change ``incompatible_keys.missing_keys``/``unexpected_keys`` in place."""
        return add_hook(self._hook_registry("_load_state_dict_post_hooks"), hook)

    # -- extra state ------------------------------------------------------------------------------

    def get_extra_state(self):
        """Override (with set_extra_state) to save any object in this module's state dict, under
        ``<prefix>_extra_state``. Not called unless overridden."""
        raise RuntimeError("Reached a code path in Module.get_extra_state() that should never be called.")

    def set_extra_state(self, state):
        """Override (with get_extra_state) to take back the object get_extra_state saved."""
        raise RuntimeError("Reached a code path in Module.set_extra_state() that should never be called.")

    def _has_extra_state(self, method):
        return getattr(type(self), method) is not getattr(ModuleState, method)

    # -- saving -----------------------------------------------------------------------------------

    def _persistent_tensors(self):
        """(name, tensor) of this module's own parameters, then persistent buffers (None skipped)."""
        non_persistent = self.__dict__.get("_non_persistent", ())
        buffers = ((name, b) for name, b in self._buffers.items() if name not in non_persistent)
        return [(name, t) for name, t in itertools.chain(self._parameters.items(), buffers) if t is not None]

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """This module's own tensors (not its children's) into ``destination``, and its extra state."""
        for name, tensor in self._persistent_tensors():
            destination[prefix + name] = tensor if keep_vars else tensor.detach()
        if self._has_extra_state("get_extra_state"):
            destination[prefix + EXTRA_STATE_KEY_SUFFIX] = self.get_extra_state()

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """{dotted name: tensor} of parameters and persistent buffers, sharing their data, in
        PyTorch's order: module by module, each one's parameters then its buffers (then its extra
        state). A tensor reached under two names (tied weights, a shared submodule) is saved under
        both, as PyTorch does. ``_metadata`` on the dict holds each module's version."""
        if args:
            warnings.warn("Positional args are being deprecated, use kwargs instead.", FutureWarning,
                          stacklevel=program_stacklevel())
            destination = args[0] if destination is None else destination
            prefix = args[1] if len(args) > 1 and prefix == "" else prefix
            keep_vars = args[2] if len(args) > 2 and keep_vars is False else keep_vars
        if destination is None:
            destination = collections.OrderedDict()
            destination._metadata = collections.OrderedDict()
        local_metadata = dict(version=self._version)
        if hasattr(destination, "_metadata"):
            destination._metadata[prefix[:-1]] = local_metadata
        for hook in list(self.__dict__.get("_state_dict_pre_hooks", {}).values()):
            hook(self, prefix, keep_vars)
        self._save_to_state_dict(destination, prefix, keep_vars)
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=f"{prefix}{name}.", keep_vars=keep_vars)
        for hook in list(self.__dict__.get("_state_dict_hooks", {}).values()):
            result = hook(self, destination, prefix, local_metadata)
            if getattr(hook, "_from_public_api", False):
                if result is not None:
                    raise RuntimeError("state_dict post-hook must return None")
            elif result is not None:
                destination = result
        return destination

    # -- loading ----------------------------------------------------------------------------------

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Copy this module's own tensors (not its children's) from ``state_dict``; record missing
        and (with ``strict``) unexpected keys and size mismatches in the lists given."""
        for hook in list(self.__dict__.get("_load_state_dict_pre_hooks", {}).values()):
            hook(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        from .lazy import is_lazy  # (lazy.py imports the layers, which import this module)

        local_state = dict(self._persistent_tensors())
        assign = local_metadata.get("assign_to_params_buffers", False)
        for name, target in local_state.items():
            key = prefix + name
            if key not in state_dict:
                if strict:
                    missing_keys.append(key)
                continue
            value = state_dict[key]
            if is_lazy(target):  # still without a shape: the checkpoint's is uninitialized too (PyTorch leaves it)
                continue
            if is_sparse(target):  # a sparse buffer (an adjacency) takes the saved entries
                if tuple(value.shape) != tuple(target.shape):
                    error_msgs.append(f"size mismatch for {key}: copying a param with shape {value.shape!r} from "
                                      f"checkpoint, the shape in current model is {target.shape!r}.")
                elif assign:
                    setattr(self, name, value)
                else:
                    target.copy_(value)
                continue
            if isinstance(value, Tensor):
                value.shape  # noqa: B018  (a lazy module's uninitialized tensor has none: PyTorch's RuntimeError)
            try:
                array = value._data if isinstance(value, Tensor) else numpy.asarray(value)
            except Exception:
                array = None
            if array is None or array.dtype.kind not in "biufc":  # a string, a list of objects: not a tensor
                error_msgs.append(f'While copying the parameter named "{key}", expected torch.Tensor or '
                                  f"Tensor-like object from checkpoint but received {type(value)}")
                continue
            if target.ndim == 0 and array.shape == (1,):  # PyTorch loads a 1-element vector into a scalar
                array = array.reshape(())
            if tuple(array.shape) != target.shape:
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {autograd.Size(array.shape)!r} "
                                  f"from checkpoint, the shape in current model is {autograd.Size(target.shape)!r}.")
                continue
            if assign:
                self._assign_loaded(name, target, value, array)
            else:
                if target.is_meta and not getattr(value, "is_meta", False):
                    warnings.warn(f"for {key}: copying from a non-meta parameter in the checkpoint to a meta "
                                  "parameter in the current model, which is a no-op. (Did you mean to pass "
                                  "`assign=True` to assign items in the state dictionary to their corresponding "
                                  "key in the module instead of copying them in place?)",
                                  stacklevel=program_stacklevel())
                _copy_loaded(target, array)
        extra_key = prefix + EXTRA_STATE_KEY_SUFFIX
        if self._has_extra_state("set_extra_state"):
            if extra_key in state_dict:
                self.set_extra_state(state_dict[extra_key])
            elif strict:
                missing_keys.append(extra_key)
        elif strict and extra_key in state_dict:
            unexpected_keys.append(extra_key)
        if strict:
            for key in state_dict:
                if key.startswith(prefix) and key != extra_key:
                    head, dot, _ = key[len(prefix):].partition(".")
                    if (head not in self._modules) if dot else (head not in local_state):
                        unexpected_keys.append(key)

    def _assign_loaded(self, name, target, value, array):
        """assign=True: the loaded tensor itself becomes the attribute (a Parameter keeps the
        module's requires_grad), as PyTorch's."""
        from .parameter import Parameter

        tensor = value if isinstance(value, Tensor) else tensor_from(array)
        if isinstance(target, Parameter):
            tensor = (tensor.requires_grad_(target.requires_grad) if isinstance(tensor, Parameter)
                      else Parameter(tensor.detach(), requires_grad=target.requires_grad))
        setattr(self, name, tensor)

    def load_state_dict(self, state_dict, strict=True, assign=False):
        """Copy tensors from ``state_dict`` (Tensors, NumPy arrays, or anything NumPy reads) into
        this module's parameters and buffers; returns (missing_keys, unexpected_keys).

        With ``strict`` (the default) missing and unexpected keys raise, and a shape mismatch
        always does: one error lists every problem, raised after the tensors that fitted were copied.
        ``assign=True`` puts the loaded tensors in place of the module's own.
        """
        if not isinstance(state_dict, collections.abc.Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        missing_keys, unexpected_keys, error_msgs = [], [], []
        metadata = getattr(state_dict, "_metadata", None)
        state_dict = collections.OrderedDict(state_dict)
        if metadata is not None:
            state_dict._metadata = metadata

        def load(module, local_state_dict, prefix=""):
            local_metadata = {} if metadata is None else metadata.get(prefix[:-1], {})
            if assign:
                local_metadata["assign_to_params_buffers"] = assign
            module._load_from_state_dict(local_state_dict, prefix, local_metadata, True, missing_keys,
                                         unexpected_keys, error_msgs)
            for name, child in module._modules.items():
                if child is not None:
                    child_prefix = f"{prefix}{name}."
                    load(child, {k: v for k, v in local_state_dict.items() if k.startswith(child_prefix)},
                         child_prefix)
            incompatible_keys = IncompatibleKeys(missing_keys, unexpected_keys)
            for hook in list(module.__dict__.get("_load_state_dict_post_hooks", {}).values()):
                if hook(module, incompatible_keys) is not None:
                    raise AssertionError("Hooks registered with ``register_load_state_dict_post_hook`` are not "
                                         "expected to return new values, if incompatible_keys need to be "
                                         "modified, it should be done inplace.")

        try:
            load(self, state_dict)
        finally:
            load = None  # (the recursive closure refers to itself: a reference cycle the garbage collector must find)
        if strict:
            if unexpected_keys:
                error_msgs.insert(0, "Unexpected key(s) in state_dict: "
                                     + ", ".join(f'"{k}"' for k in unexpected_keys) + ". ")
            if missing_keys:
                error_msgs.insert(0, "Missing key(s) in state_dict: "
                                     + ", ".join(f'"{k}"' for k in missing_keys) + ". ")
        if error_msgs:
            raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                               + "\n\t".join(error_msgs))
        return IncompatibleKeys(missing_keys, unexpected_keys)


class _WithModule:
    """A load pre-hook given its module first. A class, not a closure, so that a deep copy of the
    module (copy.deepcopy, AveragedModel) calls the hook with the copy."""

    def __init__(self, hook, module):
        self.hook, self.module = hook, module

    def __call__(self, *args):
        return self.hook(self.module, *args)


def _copy_loaded(target, array):
    """target ← array through the write door (a pending backward that saved the target raises)."""
    with autograd.no_grad():
        target.copy_(tensor_from(array, dtype=target.dtype))
