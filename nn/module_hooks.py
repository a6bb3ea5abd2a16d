"""Module hooks: PyTorch's forward and backward hook protocol of ``nn.Module``.

``ModuleHooks`` is a base of ``Module``: the ``register_*_hook`` methods and the call that runs
them (``_call_with_hooks``; ``Module.__call__`` takes it only when some hook is registered).
The hooks on every module (``torch.nn.modules.module``'s ``register_module_*_hook``) live here
too, and run before each module's own. The graph nodes behind full backward hooks are
``nn/hooks.py``'s.
"""

import warnings

from autograd import Tensor
from autograd.graph import program_stacklevel

from . import hooks as hook_tools

# hooks on every module (torch.nn.modules.module's register_module_*_hook): {handle id: hook}, run
# before each module's own; the sets hold the ids of forward hooks with flags
_global_forward_pre_hooks, _global_forward_hooks = {}, {}
_global_backward_pre_hooks, _global_backward_hooks = {}, {}
_global_forward_hooks_with_kwargs, _global_forward_hooks_always_called = set(), set()


def register_module_forward_pre_hook(hook):
    """hook(module, args) -> None or new args, before the forward of every module."""
    return hook_tools.add_hook(_global_forward_pre_hooks, hook)


def register_module_forward_hook(hook, *, with_kwargs=False, always_call=False):
    """hook(module, args, output) -> None or a new output, after the forward of every module
    (with_kwargs: hook(module, args, kwargs, output); always_call: even if forward raises)."""
    handle = hook_tools.add_hook(_global_forward_hooks, hook, False, _global_forward_hooks_with_kwargs,
                                 _global_forward_hooks_always_called)
    if with_kwargs:
        _global_forward_hooks_with_kwargs.add(handle.id)
    if always_call:
        _global_forward_hooks_always_called.add(handle.id)
    return handle


_global_parameter_registration_hooks, _global_buffer_registration_hooks = {}, {}
_global_module_registration_hooks = {}


def register_module_parameter_registration_hook(hook):
    """hook(module, name, param) -> None or a new parameter, whenever any module registers a parameter."""
    return hook_tools.add_hook(_global_parameter_registration_hooks, hook)


def register_module_buffer_registration_hook(hook):
    """hook(module, name, buffer) -> None or a new buffer, whenever any module registers a buffer."""
    return hook_tools.add_hook(_global_buffer_registration_hooks, hook)


def register_module_module_registration_hook(hook):
    """hook(module, name, submodule) -> None or a new submodule, whenever any module registers a child."""
    return hook_tools.add_hook(_global_module_registration_hooks, hook)


def _after_registration_hooks(module, registry, name, value):
    """``value`` as the global registration hooks of its kind leave it (a parameter's only when not None)."""
    if registry is module._parameters:
        hooks = _global_parameter_registration_hooks if value is not None else {}
    else:
        hooks = _global_buffer_registration_hooks if registry is module._buffers else _global_module_registration_hooks
    for hook in list(hooks.values()):
        output = hook(module, name, value)
        if output is not None:
            value = output
    return value


def register_module_full_backward_pre_hook(hook):
    """hook(module, grad_output) -> None or a new grad_output, for every module."""
    return hook_tools.add_hook(_global_backward_pre_hooks, hook)


_global_backward_hook_kind = [None]  # True: full hooks in _global_backward_hooks; False: deprecated ones


def _set_global_backward_hook_kind(full):
    if _global_backward_hook_kind[0] not in (None, full):  # (never reset, as PyTorch's flag)
        raise RuntimeError("Cannot use both regular backward hooks and full backward hooks as a global Module hook. "
                           "Please use only one of them.")
    _global_backward_hook_kind[0] = full


def register_module_full_backward_hook(hook):
    """hook(module, grad_input, grad_output) -> None or a new grad_input, for every module."""
    _set_global_backward_hook_kind(True)
    return hook_tools.add_hook(_global_backward_hooks, hook)


def register_module_backward_hook(hook):
    """PyTorch's deprecated global backward hook: ``Module.register_backward_hook``'s, on every module."""
    _set_global_backward_hook_kind(False)
    return hook_tools.add_hook(_global_backward_hooks, hook)


class ModuleHooks:
    """The hook methods of ``Module`` (its hook dicts are made by ``Module.__init__``)."""

    def _call_with_hooks(self, args, kwargs):
        """forward with PyTorch's hook protocol: pre-hooks may replace the arguments, forward
        hooks the result; full backward hooks see the gradients of inputs and outputs. The hooks
        registered on every module run first. Whatever raises (a pre-hook, forward or a forward hook),
        the forward hooks registered with always_call=True that have not run yet run then, as PyTorch's."""
        forward_hooks = {**_global_forward_hooks, **self._forward_hooks}
        result, always_called = None, set()
        try:
            args, kwargs = self._run_forward_pre_hooks(args, kwargs)
            full_hooks, deprecated_hooks = self._backward_hooks_for_call()
            backward_hook = None
            if full_hooks or self._backward_pre_hooks or _global_backward_pre_hooks:
                backward_hook = hook_tools.BackwardHook(self, full_hooks,
                                                        {**_global_backward_pre_hooks, **self._backward_pre_hooks})
            if backward_hook is not None:
                args = backward_hook.setup_input_hook(args)
            result = self.forward(*args, **kwargs)
            for hook_id, hook in forward_hooks.items():
                if self._always_called(hook_id):
                    always_called.add(hook_id)
                replaced = self._run_forward_hook(hook_id, hook, args, kwargs, result)
                if replaced is not None:
                    result = replaced
        except Exception:
            for hook_id, hook in forward_hooks.items():
                if self._always_called(hook_id) and hook_id not in always_called:
                    try:
                        self._run_forward_hook(hook_id, hook, args, kwargs, result)
                    except Exception as error:  # as PyTorch: said, and the first error raised
                        where = "global module" if hook_id in _global_forward_hooks else "module"
                        warnings.warn(f"{where} forward hook with ``always_call=True`` raised an exception that was "
                                      f"silenced as another error was raised in forward: {error}",
                                      stacklevel=program_stacklevel())
            raise
        if backward_hook is not None:
            if isinstance(result, (Tensor, tuple)):
                result = backward_hook.setup_output_hook(result)
            else:  # a dict or list: PyTorch's full backward hooks then never run, and it says so
                warnings.warn("For backward hooks to be called, module output should be a Tensor or a tuple of "
                              f"Tensors but received {type(result)}", stacklevel=program_stacklevel())
        if deprecated_hooks:
            hook_tools.hook_last_node(self, deprecated_hooks, args, result)
        return result

    def _run_forward_pre_hooks(self, args, kwargs):
        for hook_id, hook in [*_global_forward_pre_hooks.items(), *self._forward_pre_hooks.items()]:
            if hook_id in self._forward_pre_hooks_with_kwargs:
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError("forward pre-hook must return None or a tuple of (new_args, new_kwargs), "
                                           f"but got {result}.")
                    args, kwargs = result
            else:
                result = hook(self, args)
                if result is not None:
                    args = result if isinstance(result, tuple) else (result,)
        return args, kwargs

    def _backward_hooks_for_call(self):
        """This call's full backward hooks ({id: hook}) and deprecated ones (a list), the global ones first, each
        kind where it was registered as such (PyTorch's _get_backward_hooks)."""
        full, deprecated = {}, []
        for hooks, is_full in ((_global_backward_hooks, _global_backward_hook_kind[0]),
                               (self._backward_hooks, self.__dict__.get("_is_full_backward_hook"))):
            if hooks and is_full is False:
                deprecated += hooks.values()
            elif hooks:
                full.update(hooks)
        return full, deprecated

    def _always_called(self, hook_id):
        return hook_id in self._forward_hooks_always_called or hook_id in _global_forward_hooks_always_called

    def _run_forward_hook(self, hook_id, hook, args, kwargs, result):
        if hook_id in self._forward_hooks_with_kwargs or hook_id in _global_forward_hooks_with_kwargs:
            return hook(self, args, kwargs, result)
        return hook(self, args, result)

    # -- hooks ----------------------------------------------------------------------------

    def register_forward_pre_hook(self, hook, *, prepend=False, with_kwargs=False):
        """hook(module, args) -> None or new args (a tuple, or one value), before forward;
        with_kwargs: hook(module, args, kwargs) -> None or (new_args, new_kwargs)."""
        handle = hook_tools.add_hook(self._forward_pre_hooks, hook, prepend, self._forward_pre_hooks_with_kwargs)
        if with_kwargs:
            self._forward_pre_hooks_with_kwargs.add(handle.id)
        return handle

    def register_forward_hook(self, hook, *, prepend=False, with_kwargs=False, always_call=False):
        """hook(module, args, output) -> None or a new output, after forward;
        with_kwargs: hook(module, args, kwargs, output). always_call: run even if forward raises."""
        handle = hook_tools.add_hook(self._forward_hooks, hook, prepend, self._forward_hooks_with_kwargs,
                                     self._forward_hooks_always_called)
        if with_kwargs:
            self._forward_hooks_with_kwargs.add(handle.id)
        if always_call:
            self._forward_hooks_always_called.add(handle.id)
        return handle

    def register_full_backward_hook(self, hook, prepend=False):
        """hook(module, grad_input, grad_output) -> None or a new grad_input, once the
        gradients with respect to the module's inputs are known. grad_input and grad_output
        are tuples with one entry per positional input / output (None where no gradient)."""
        self._set_backward_hook_kind(full=True)
        return hook_tools.add_hook(self._backward_hooks, hook, prepend)

    def register_backward_hook(self, hook):
        """PyTorch's deprecated backward hook: hook(module, grad_input, grad_output) on the node of forward's *last
        operation* (the grad_fn of its first output), whose inputs grad_input is about: the module's inputs only
        where forward is one op (nn/hooks.py hook_last_node). It wraps nothing, so an in-place op after the
        module (ReLU(inplace=True)) changes the module's output itself, as in PyTorch. A forward of several
        nodes, or of other than tensors, is warned of at the call, as PyTorch's."""
        self._set_backward_hook_kind(full=False)
        return hook_tools.add_hook(self._backward_hooks, hook)

    def _set_backward_hook_kind(self, full):
        """PyTorch refuses the deprecated and the full backward hooks on one module: the first kind registered
        stays the module's kind, its hooks removed or not (PyTorch's flag is never reset)."""
        if self.__dict__.get("_is_full_backward_hook", full) != full:
            raise RuntimeError("Cannot use both regular backward hooks and full backward hooks on a single Module. "
                               "Please use only one of them.")
        object.__setattr__(self, "_is_full_backward_hook", full)

    def register_full_backward_pre_hook(self, hook, prepend=False):
        """hook(module, grad_output) -> None or a new grad_output, before the module's backward."""
        return hook_tools.add_hook(self._backward_pre_hooks, hook, prepend)
