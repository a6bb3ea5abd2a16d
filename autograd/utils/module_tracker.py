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
        self._handles = []  # the global forward hooks, while entered
        self._gradient_hooks = []  # the multi-grad hooks put on modules' inputs and outputs
        self._names = weakref.WeakKeyDictionary()  # module -> its name, learnt when it or its owner first ran
        self._children_named = weakref.WeakSet()  # the modules whose children have their names
        self._reset_queued = False  # whether this pass already resets the set at its end

    @property
    def is_bw(self):
        """Whether a backward pass runs in this thread now (it keeps its final callbacks in modes)."""
        return modes.final_callbacks is not None

    def _reset_when_the_pass_ends(self):
        """"Global" alone again at the end of the pass: a module whose inputs need no gradient is never left."""
        if self._reset_queued:
            return

        def reset():
            self.parents = {"Global"}
            self._reset_queued = False

        queue_callback(reset)
        self._reset_queued = True

    def _name_of(self, module):
        """The module's type name, and for its submodules the attribute path under it (``Net.encoder.0``)."""
        name = self._names.setdefault(module, type(module).__name__)
        if module not in self._children_named:
            for child_name, child in module.named_children():
                self._names[child] = f"{name}.{child_name}"
                self._name_of(child)
            self._children_named.add(module)
        return name

    def _enter(self, name, in_backward):
        if in_backward:
            self._reset_when_the_pass_ends()
        if name in self.parents:  # (PyTorch's log words)
            logger.info("The module hierarchy tracking seems to be broken as this Module was already entered. "
                        "%s during %s", name, "backward" if in_backward else "forward")
        self.parents.add(name)

    def _leave(self, name, in_backward):
        if name in self.parents:
            self.parents.remove(name)
        else:
            logger.info("The Module hierarchy tracking is confused as we're exiting a Module that was never "
                        "entered. %s during %s", name, "backward" if in_backward else "forward")

    def _on_gradients(self, tensors, step, name):
        """Run step(name, True) once the gradients of all ``tensors`` (those requiring grad) are computed."""
        from ..autograd.graph import register_multi_grad_hook

        tensors = _tensors_requiring_grad(tensors)
        if tensors:
            self._gradient_hooks.append(register_multi_grad_hook(tensors, lambda *_: step(name, True)))

    def _before_forward(self, module, inputs):
        name = self._name_of(module)
        self._enter(name, False)
        self._on_gradients(inputs, self._leave, name)  # the backward leaves it once its inputs' gradients are made

    def _after_forward(self, module, inputs, output):
        name = self._name_of(module)
        self._leave(name, False)
        self._on_gradients(output, self._enter, name)  # ... and enters it when its outputs' gradients arrive

    def __enter__(self):
        # the global module hooks are nn's, and autograd does not import nn (the layer built on it): modules exist
        # only once nn is imported, so a tracker entered before has none to track (and registers nothing)
        module = importlib.import_module("nn.modules.module") if "nn" in sys.modules else None
        self._handles = [] if module is None else [module.register_module_forward_pre_hook(self._before_forward),
                                                   module.register_module_forward_hook(self._after_forward)]
        return self

    def __exit__(self, *args):
        for handle in self._handles:
            handle.remove()
        for hook in self._gradient_hooks:
            hook.remove()
        self._gradient_hooks.clear()
