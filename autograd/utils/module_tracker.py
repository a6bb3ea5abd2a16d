"""``autograd.utils.module_tracker``, PyTorch's ``torch.utils.module_tracker``: which modules are running now,
in the forward and in the backward pass.

    with ModuleTracker() as tracker:
        model(x).sum().backward()     # inside: tracker.parents == {"Global", "Net", "Net.fc1"}, tracker.is_bw

A module is named by its type and the attribute path to it from the first module that ran (``Net.encoder.0``).
How, as PyTorch's: the global forward pre-hook adds its name, the forward hook takes it away; in the backward
pass a multi-grad hook on its outputs adds it again when their gradients arrive, and one on its inputs takes it
away when theirs are computed (and the set is "Global" alone when the pass ends).
"""

import importlib
import logging
import sys
import weakref

from ..engine import queue_callback
from ..graph import modes
from ..tensor import Tensor

logger = logging.getLogger(__name__)

__all__ = ["ModuleTracker"]


def _tensors_requiring_grad(values):
    """The tensors that require grad among ``values`` (nested in tuples, lists and dicts)."""
    if isinstance(values, Tensor):
        return [values] if values.requires_grad else []
    if isinstance(values, (tuple, list)):
        return [t for v in values for t in _tensors_requiring_grad(v)]
    if isinstance(values, dict):
        return [t for v in values.values() for t in _tensors_requiring_grad(v)]
    return []


class ModuleTracker:
    """``parents``: the names of the modules running now, always with "Global"; ``is_bw``: whether a backward
    pass is running."""

    def __init__(self):
        self.parents = {"Global"}
        self._handles = []
        self._known_modules = weakref.WeakKeyDictionary()
        self._seen_modules = weakref.WeakSet()
        self._has_callback = False
        self._hooks = []

    @property
    def is_bw(self):
        """Whether a backward pass runs in this thread now (it keeps its final callbacks in modes)."""
        return modes.final_callbacks is not None

    def _maybe_set_engine_callback(self):
        """At the end of the pass, "Global" alone again (a module whose inputs need no gradient is never left)."""
        if self._has_callback:
            return

        def reset():
            self.parents = {"Global"}
            self._has_callback = False

        queue_callback(reset)
        self._has_callback = True

    def _get_mod_name(self, mod):
        """The module's type name, and for its submodules the attribute path under it (learnt on first sight)."""
        if mod not in self._known_modules:
            self._known_modules[mod] = type(mod).__name__
        name = self._known_modules[mod]
        if mod not in self._seen_modules:
            for child_name, child in mod.named_children():
                self._known_modules[child] = f"{name}.{child_name}"
                self._get_mod_name(child)
            self._seen_modules.add(mod)
        return name

    def _get_append_fn(self, name, is_bw):
        def enter(*args):
            if is_bw:
                self._maybe_set_engine_callback()
            if name in self.parents:
                logger.info("The module hierarchy tracking seems to be broken as this Module was already entered. "
                            "%s during %s", name, "backward" if is_bw else "forward")
            self.parents.add(name)

        return enter

    def _get_pop_fn(self, name, is_bw):
        def leave(*args):
            if name in self.parents:
                self.parents.remove(name)
            else:
                logger.info("The Module hierarchy tracking is confused as we're exiting a Module that was never "
                            "entered. %s during %s", name, "backward" if is_bw else "forward")

        return leave

    def _fw_pre_hook(self, mod, input):  # noqa: A002  (PyTorch's name)
        from ..autograd.graph import register_multi_grad_hook

        name = self._get_mod_name(mod)
        self._get_append_fn(name, False)()
        tensors = _tensors_requiring_grad(input)
        if tensors:
            self._hooks.append(register_multi_grad_hook(tensors, self._get_pop_fn(name, True)))

    def _fw_post_hook(self, mod, input, output):  # noqa: A002
        from ..autograd.graph import register_multi_grad_hook

        name = self._get_mod_name(mod)
        self._get_pop_fn(name, False)()
        tensors = _tensors_requiring_grad(output)
        if tensors:
            self._hooks.append(register_multi_grad_hook(tensors, self._get_append_fn(name, True)))

    def __enter__(self):
        # the global module hooks are nn's, and autograd does not import nn (the layer built on it): modules exist
        # only once nn is imported, so a tracker entered before has none to track (and registers nothing)
        module = importlib.import_module("nn.modules.module") if "nn" in sys.modules else None
        self._handles = [] if module is None else [module.register_module_forward_pre_hook(self._fw_pre_hook),
                                                   module.register_module_forward_hook(self._fw_post_hook)]
        return self

    def __exit__(self, *args):
        for handle in self._handles:
            handle.remove()
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()
