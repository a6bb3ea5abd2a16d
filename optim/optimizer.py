"""``Optimizer``: parameter groups, per-parameter state and state dicts.

The bookkeeping lives here; each optimizer's update rule is a method over
Tensors in its own file (sgd.py, adam.py, ...). ``step`` runs it under
``no_grad`` (with ``differentiable=True`` under grad mode, as PyTorch's: the update is
recorded in the graph, and the parameters may then be non-leaf tensors), and the
rule changes the parameter and its state only through the
public in-place Tensor methods (``add_``, ``mul_``, ``addcmul_``, ``addcdiv_``,
``lerp_``, ``sqrt_``, ``copy_``, ...), so every write goes through the Tensor's
one write door: its version counter moves, and a graph that saved the old
value refuses to backpropagate through it.

PyTorch's keywords ``foreach``, ``fused`` and ``capturable`` are accepted and
recorded in the groups, and checked at the step as PyTorch checks them (``capturable=True``
needs an accelerator: on the CPU, PyTorch's AssertionError; ``fused`` takes floating-point
parameters only), but change no arithmetic here: there is one (single-tensor)
implementation, in the order of operations of PyTorch's single-tensor path,
on the CPU (Adam's and NAdam's ``differentiable=True`` follow PyTorch's recorded path,
whose step factors are scalar-dtype Tensors).

Hooks, as PyTorch's: ``register_step_pre_hook``/``register_step_post_hook`` run around
every ``step`` (also a subclass's own ``step``: it is wrapped when the class is made),
``register_optimizer_step_pre_hook``/``..._post_hook`` around every optimizer's, and
``register_(load_)state_dict_pre_hook``/``..._post_hook`` around saving and loading.
"""

import functools
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

import numpy

from autograd import Tensor, _lazy, enable_grad, set_grad_enabled
from autograd.backend import float32, float64, get_default_dtype, xp
from autograd.graph import program_stacklevel, zero_grad
from autograd.hooks import add_hook
from autograd.sparse_layout import is_sparse
from autograd.tensor import tensor_from

# what optimizers copied from PyTorch's sources import from torch.optim.optimizer (pytorch_helpers.py), with
# torch.utils._foreach_utils' helpers that module imports: loaded on first use (this package's optimizers need
# none of them)
__getattr__, __dir__, _ = _lazy.on_first_use(globals(), _lazy.from_module(
    ".pytorch_helpers", "FOREACH_UTILS", "_get_foreach_kernels_supported_devices",
    "_get_fused_kernels_supported_devices", "_group_tensors_by_device_and_dtype",
    "Args", "DeviceDict", "DeviceDtypeDict", "Kwargs", "StateDict", "_capturable_doc", "_default_to_fused_or_foreach",
    "_device_dtype_check_for_fused", "_differentiable_doc", "_disable_dynamo_if_unsupported", "_foreach_doc",
    "_foreach_supported_types", "_fused_doc", "_get_capturable_supported_devices", "_get_scalar_dtype", "_get_value",
    "_maximize_doc", "_params_doc", "_stack_if_compiling", "_to_scalar", "_use_grad_for_differentiable",
    "_view_as_real"))

# PyTorch's names for the hook types: hook(optimizer, args, kwargs) -> None or (new_args, new_kwargs),
# and hook(optimizer, args, kwargs) -> None
OptimizerPreHook = OptimizerPostHook = Callable
# what an optimizer's ``params`` may be: tensors, groups (dicts) or (name, tensor) pairs; third-party
# optimizers annotate with it (timm's optim/_types.py imports it)
ParamsT = Iterable[Tensor] | Iterable[dict[str, Any]] | Iterable[tuple[str, Tensor]]


class _RequiredParameter:
    """The default of an option that every group must give (``lr=required``, as optimizers written
    against PyTorch's ``torch.optim.optimizer.required`` declare it): ``add_param_group`` refuses a
    group that leaves it out."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()

# hooks run around the step of every optimizer: {handle id: hook(optimizer, args, kwargs)}
_global_optimizer_pre_hooks = {}
_global_optimizer_post_hooks = {}


def register_optimizer_step_pre_hook(hook):
    """hook(optimizer, args, kwargs) -> None or (new_args, new_kwargs), before every optimizer's
    step (before the optimizer's own pre-hooks); ``args`` are step's positional arguments with the
    optimizer first, as PyTorch passes them. Returns a handle with ``remove()``."""
    return add_hook(_global_optimizer_pre_hooks, hook)


def register_optimizer_step_post_hook(hook):
    """hook(optimizer, args, kwargs) -> None, after every optimizer's step (after its own post-hooks)."""
    return add_hook(_global_optimizer_post_hooks, hook)


def _with_step_hooks(step):
    """``step`` with the step hooks around it, as PyTorch's: global then the optimizer's own
    pre-hooks (each may replace the arguments), the step, then its own then global post-hooks.
    A step that calls another wrapped step (``super().step()``) runs the hooks once, outermost
    (PyTorch, which wraps the class of each optimizer it makes, can run them twice there)."""
    if getattr(step, "hooked", False):
        return step

    @functools.wraps(step)
    def hooked_step(*args, **kwargs):  # args: (optimizer, closure, ...), the optimizer included as PyTorch's
        self = args[0]
        if "_opt_called" in self.__dict__:  # a scheduler watches for its first step (scheduler.py)
            self._opt_called = True
        if self.__dict__.get("_in_step"):
            return step(*args, **kwargs)
        own_pre = self.__dict__.get("_optimizer_step_pre_hooks", {})
        own_post = self.__dict__.get("_optimizer_step_post_hooks", {})
        if _global_optimizer_pre_hooks or own_pre:  # (most steps have none: no list made for them)
            for hook in list(itertools.chain(_global_optimizer_pre_hooks.values(), own_pre.values())):
                result = hook(self, args, kwargs)
                if result is not None:
                    if not (isinstance(result, tuple) and len(result) == 2):
                        raise RuntimeError(f"{step} must return None or a tuple of (new_args, new_kwargs), "
                                           f"but got {result}.")
                    args, kwargs = result
        self._in_step = True
        try:
            out = step(*args, **kwargs)
        finally:
            self._in_step = False
        if own_post or _global_optimizer_post_hooks:
            for hook in list(itertools.chain(own_post.values(), _global_optimizer_post_hooks.values())):
                hook(self, args, kwargs)
        return out

    hooked_step.hooked = True
    return hooked_step


def require(condition, message):
    """Raise ValueError(message) unless ``condition``: hyperparameter checks."""
    if not condition:
        raise ValueError(message)


def scalar_tensor(value, fused=False):
    """A 0-d Tensor for scalar state (``step``, NAdam's ``mu_product``, ASGD's
    ``eta``): PyTorch keeps these in float64 when the default dtype is float64
    and in float32 otherwise, whatever the parameters' dtype, and its arithmetic
    on them rounds to that dtype. Ours does the same, so trajectories match.
    A ``fused`` optimizer's ``step`` is float32 whatever the default dtype, as its kernels take it.
    Always a new Tensor: ASGD's ``eta`` starts from a Tensor lr, which its step then overwrites in place
    (PyTorch's ``as_tensor(lr).clone()``), so the group's lr must not be that Tensor."""
    return tensor_from(numpy.array(value, dtype=float64 if get_default_dtype() == float64 and not fused
                                   else float32))


def check_tensor_lr(group):
    """A learning rate given as a Tensor (PyTorch's "tensor lr") must hold one number."""
    if isinstance(group.get("lr"), Tensor) and group["lr"].numel() != 1:
        raise ValueError(f"Tensor lr must be 1-element, got one of shape {tuple(group['lr'].shape)}")


def l2_decayed(grad, param, weight_decay):
    """g + λ W, the gradient with L2 weight decay. With λ a Tensor that requires grad (differentiable=True,
    a learned weight decay), the product's backward keeps W, which the step then changes in place: it gets
    a copy of W, as PyTorch's does."""
    if isinstance(weight_decay, Tensor) and weight_decay.requires_grad:
        param = param.clone()
    return grad + weight_decay * param


def fresh_plus(tensor, value, group):
    """``tensor + value`` for a ``tensor`` just computed by the step (a square root): written into it, to
    save a copy, except under differentiable=True, where the op that made it may have kept it for its
    backward (sqrt keeps its result), as PyTorch's differentiable paths do."""
    return tensor + value if group.get("differentiable") else tensor.add_(value)


def kept_for_backward(tensor, group):
    """``tensor``, or a copy of it under differentiable=True: for an op whose backward keeps its input when
    the step then overwrites that state in place (``max_v.copy_(max_v.maximum(v))``)."""
    return tensor.clone() if group.get("differentiable") else tensor


def number_over(number, tensor):
    """``number / tensor`` as PyTorch computes it (``Tensor.__rdiv__``): the tensor's reciprocal times
    the number. In a scalar-dtype (float32) Tensor that can be one ulp away from the correctly rounded
    quotient that ``/`` gives here; the update paths that PyTorch writes with Tensor scalars
    (``differentiable=True``) use this to keep to its rounding (its float32 pow and sqrt still
    differ from NumPy's in the last bit, so those paths agree to about 1e-7)."""
    return number / tensor if isinstance(number, Tensor) else tensor.reciprocal() * number


class Optimizer:
    defaults = {}
    # State entries that keep their own dtype on load_state_dict; the rest take the parameter's, as PyTorch's
    # (NAdam's mu_product and ASGD's eta and mu too: made in the scalar dtype, loaded in the parameter's).
    scalar_state = ("step",)
    supports_complex = True  # a complex parameter is updated as its real pairs (False: refused, as PyTorch's)
    # the options PyTorch's __setstate__ gives a group that lacks them (group.setdefault): a loaded group is the
    # saved one, so an option it predates (maximize, foreach, ...) takes this value, and one it never had (betas,
    # loaded from another optimizer's state dict) stays missing, as PyTorch's
    group_setdefaults = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:
            cls.step = _with_step_hooks(cls.step)

    def __init__(self, params, defaults):
        for name in self._hook_registries:
            setattr(self, name, {})
        self.defaults = dict(defaults)
        self.state = defaultdict(dict)  # PyTorch's: a custom step() may write self.state[p]["..."] at once
        self.param_groups = []
        self.check_hyperparameters(self.defaults)  # the options first, then the parameters: PyTorch's order
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got a Tensor of shape {tuple(params.shape)}: pass [tensor]")
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    _hook_registries = ("_optimizer_step_pre_hooks", "_optimizer_step_post_hooks",
                        "_optimizer_state_dict_pre_hooks", "_optimizer_state_dict_post_hooks",
                        "_optimizer_load_state_dict_pre_hooks", "_optimizer_load_state_dict_post_hooks")

    profile_hook_step = staticmethod(_with_step_hooks)  # PyTorch's name for the step wrapper
    OptimizerPreHook, OptimizerPostHook = OptimizerPreHook, OptimizerPostHook

    def __getstate__(self):
        """What pickling and ``copy.deepcopy`` keep, as PyTorch's: the defaults, the state and the groups. The
        hooks (often lambdas, which cannot be pickled) and any other attribute stay behind."""
        return {"defaults": self.defaults, "state": self.state, "param_groups": self.param_groups}

    def __setstate__(self, state):  # a copy, or an optimizer pickled before it had hooks, gets empty registries
        self.__dict__.update(state)
        for name in self._hook_registries:
            self.__dict__.setdefault(name, {})
        self.defaults.setdefault("differentiable", False)  # PyTorch's: so LBFGS's defaults gain it once loaded
        for group in self.__dict__.get("param_groups", ()):
            for name, value in self.group_setdefaults.items():
                group.setdefault(name, value)

    # -- hooks ----------------------------------------------------------------------------

    def register_step_pre_hook(self, hook):
        """hook(optimizer, args, kwargs) -> None or (new_args, new_kwargs), before each step."""
        return add_hook(self._optimizer_step_pre_hooks, hook)

    def register_step_post_hook(self, hook):
        """hook(optimizer, args, kwargs) -> None, after each step."""
        return add_hook(self._optimizer_step_post_hooks, hook)

    def register_state_dict_pre_hook(self, hook, prepend=False):
        """hook(optimizer) -> None, before ``state_dict`` builds the dict."""
        return add_hook(self._optimizer_state_dict_pre_hooks, hook, prepend)

    def register_state_dict_post_hook(self, hook, prepend=False):
        """hook(optimizer, state_dict) -> None or a new state_dict, before ``state_dict`` returns it."""
        return add_hook(self._optimizer_state_dict_post_hooks, hook, prepend)

    def register_load_state_dict_pre_hook(self, hook, prepend=False):
        """hook(optimizer, state_dict) -> None or the state_dict to load instead; it sees a shallow
        copy of the caller's dict."""
        return add_hook(self._optimizer_load_state_dict_pre_hooks, hook, prepend)

    def register_load_state_dict_post_hook(self, hook, prepend=False):
        """hook(optimizer) -> None, once ``load_state_dict`` has loaded the state."""
        return add_hook(self._optimizer_load_state_dict_post_hooks, hook, prepend)

    # what PyTorch's own step functions call first (and so the optimizers copied from them): nothing is
    # captured in a CUDA graph here, so there is nothing to check
    def _cuda_graph_capture_health_check(self):
        import warnings

        warnings.warn("Use _accelerator_graph_capture_health_check instead", DeprecationWarning,
                      stacklevel=program_stacklevel())

    def _accelerator_graph_capture_health_check(self):
        pass

    @staticmethod
    def _group_tensors_by_device_and_dtype(tensorlistlist, with_indices=False):  # (PyTorch's Optimizer has it)
        from autograd.utils._foreach_utils import _group_tensors_by_device_and_dtype

        return _group_tensors_by_device_and_dtype(tensorlistlist, with_indices)

    def check_hyperparameters(self, group):
        """Subclasses raise ValueError here for an invalid option (negative lr, ...)."""
        check_tensor_lr(group)
        # a custom optimizer need not have one, or may leave it to each group (required) or to its own
        # rule (None: timm's Adafactor then steps by its relative rule); PyTorch's own refuse None
        if "lr" in group and group["lr"] is not required and (_builtin(self) or group["lr"] is not None):
            if isinstance(group["lr"], str):  # (YAML reads 1e-3 as a string; PyTorch's TypeError is from its `<`)
                raise TypeError(f"Invalid learning rate: {group['lr']!r} is a str; lr must be a number "
                                f"(lr=float({group['lr']!r}))")
            require(group["lr"] >= 0, f"Invalid learning rate: {group['lr']}")
        if group.get("fused") and group.get("differentiable"):
            raise RuntimeError("`fused` does not support `differentiable`")
        if group.get("fused") and group.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")

    def _named_group(self, param_group):
        """The group as a dict of its own, its parameters a list; named parameters split into
        ``params`` and ``param_names`` (names in every group or in none)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        if isinstance(params, set):  # (a set's order changes between runs, and the state dict numbers by order)
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering of "
                            "tensors in sets will change between runs. Please use a list instead.")
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        named = [isinstance(p, tuple) for p in group["params"]]  # from model.named_parameters()
        if any(named):
            if not all(named):
                raise ValueError("all optimizer params should be with/without names. Some param names are missing")
            group["param_names"] = [name for name, _ in group["params"]]
            group["params"] = [p for _, p in group["params"]]
        if self.param_groups and ("param_names" in group) != ("param_names" in self.param_groups[0]):
            raise ValueError("all optimizer param groups should be with/without names. cannot add param group "
                             f"{'with' if 'param_names' in group else 'without'} names to the optimizer")
        return group

    def add_param_group(self, param_group):
        """Add a group of parameters with its own options (missing ones from defaults). The parameters
        may come named, as ``model.named_parameters()`` gives them: the names are kept in the group's
        ``param_names`` (and so in the state dict), in every group or in none."""
        group = self._named_group(param_group)
        seen = set()
        for i, p in enumerate(group["params"]):
            if not isinstance(p, Tensor) and not is_sparse(p):  # (a sparse leaf: SGD steps it, as PyTorch's)
                raise TypeError(f"optimizer can only optimize Tensors, but parameter {i} is a "
                                f"{type(p).__name__}")
            if not (self.defaults.get("differentiable") or p.is_leaf or p.retains_grad):
                raise ValueError(f"can't optimize a non-leaf Tensor (parameter {i}, shape {tuple(p.shape)}): "
                                 "optimize the leaf it was computed from, or .detach().requires_grad_()")
            if id(p) in seen:
                raise ValueError(f"parameter {i} (shape {tuple(p.shape)}) is listed twice in one parameter group")
            seen.add(id(p))
        for name, default in self.defaults.items():
            if default is required and name not in group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            group.setdefault(name, default)
        self.check_hyperparameters(group)
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if existing & seen:
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                zero_grad(p, set_to_none)

    @_with_step_hooks
    def step(self, closure=None):
        """Update every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with set_grad_enabled(bool(self.defaults.get("differentiable"))):  # PyTorch's: the defaults' flag
            for group in self.param_groups:
                if "capturable" in group and group["capturable"] or "fused" in group and group["fused"]:
                    # (tested without a call: nothing more on the hot path)
                    from .step_devices import check_step_devices

                    check_step_devices(self, group, [p for p in group["params"] if p.grad is not None])
                self._step_group(group)
        return loss

    def _step_group(self, group):
        """The step of each parameter of ``group`` that has a gradient, in order. (Adam's takes a shorter road to
        the same numbers where the group's options allow it.)"""
        for p in group["params"]:
            grad = p.grad
            if grad is not None:
                self._step_parameter(p, grad, self.state[p], group)

    def _step_parameter(self, p, grad, state, group):
        """``_update_parameter`` of ``p`` with its ``state`` (``self.state[p]``); an update that keeps nothing leaves
        no entry, as PyTorch's."""
        self._update_parameter(p, grad, state, group)
        if not self.state[p]:
            del self.state[p]

    # what PyTorch's capturable check names (NAdam and ASGD name their step tensors too), and whether its list of
    # devices has xla, on the single-tensor path and on the foreach one (step_devices.py)
    capturable_tensors = "params and state_steps"
    capturable_xla = (True, False)

    def sparse_gradient(self, grad, group):
        """What ``update`` takes for a sparse gradient (autograd.sparse: an Embedding's with sparse=True): PyTorch's
        refusal here; SGD and Adagrad take it (as the dense gradient it stands for), SparseAdam only it."""
        raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")

    def update_sparse_parameter(self, p, grad, group):
        """The step of a sparse leaf (autograd.sparse, a COO tensor) with its gradient: PyTorch's refusal here (its
        optimizers take a sparse gradient as SGD's, or refuse it); SGD adds it."""
        raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")

    def _update_parameter(self, p, grad, state, group):
        """``update`` of one parameter with its gradient (negated under maximize): a complex one as its
        real pairs. ``step`` runs it for each parameter with a gradient, the functional forms
        (``optim.sgd.sgd``, ...) for each parameter they are given."""
        if not isinstance(p, Tensor):  # a sparse leaf (add_param_group lets no other non-Tensor in)
            self.update_sparse_parameter(p, grad, group)
            return
        if type(grad) is not Tensor and grad.is_sparse:  # (an Embedding's sparse=True)
            grad = self.sparse_gradient(grad, group)
        # (a dense gradient's array's shape: no Size made for each parameter's step; a sparse one's own)
        if (grad._data.shape if type(grad) is Tensor else grad.shape) != p._data.shape:
            raise ValueError(f"gradient of shape {tuple(grad.shape)} for a parameter of shape {tuple(p.shape)}")
        grad = grad.neg() if group.get("maximize") else grad
        if p._data.dtype.kind == "c":  # optimised as its (real, imaginary) pairs, as PyTorch's
            if not self.supports_complex:
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
            self._update_complex(p, grad, state, group)
        else:
            self.update(p, grad, state, group)

    def _update_complex(self, param, grad, state, group):
        """``update`` of a complex parameter on its real pairs, its state kept complex as PyTorch's (its
        state_dict holds complex moments of the parameter's shape): the update sees each complex state
        entry as pairs (views: its writes reach the entry), and an entry it makes of the pairs' shape
        becomes a complex tensor over the same memory."""
        pairs = {key: real_pairs(value) if _is_complex(value) else value for key, value in state.items()}
        seen = dict(pairs)
        self.update(real_pairs(param), real_pairs(grad), pairs, group)
        pairs_shape = tuple(param.shape) + (2,)
        for key, value in pairs.items():
            if value is seen.get(key):
                continue  # (an entry the update kept: the complex tensor it views stays)
            if isinstance(value, Tensor) and value._data.dtype.kind == "f" and tuple(value.shape) == pairs_shape:
                value = complex_of_pairs(value)
            state[key] = value
        for key in set(state) - set(pairs):
            del state[key]

    def update(self, param, grad, state, group):
        """Change the Tensor ``param`` in place (public in-place methods only) from the
        Tensor ``grad`` (already negated under maximize); keep what it needs in ``state``."""
        raise NotImplementedError

    # -- saving and resuming --------------------------------------------------------------

    def state_dict(self):
        """{'state': {index: {...}}, 'param_groups': [{options..., 'params': [indices]}]},
        parameters named by their position across groups, as PyTorch does. State
        tensors are copies, so the dict is a snapshot."""
        for hook in list(self._optimizer_state_dict_pre_hooks.values()):
            hook(self)
        index = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        copies = {}  # one copy per Tensor: entries that are one Tensor stay one in the dict, as PyTorch's
        state = {}
        for key, entries in self.state.items():
            if not isinstance(key, Tensor):  # (a custom step's self.state["global_step"]: kept, as PyTorch's)
                state[key] = _snapshot(entries, copies)
            elif id(key) in index:
                state[index[id(key)]] = {k: _snapshot(v, copies) for k, v in entries.items()}
        state_dict = {"state": state, "param_groups": groups}
        for hook in list(self._optimizer_state_dict_post_hooks.values()):
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        return state_dict

    def load_state_dict(self, state_dict):
        """Restore state and options; resuming gives the same trajectory as never stopping (but where
        PyTorch's does not either: state tensors take their parameter's dtype, except ``step``, so NAdam's
        float32 ``mu_product`` and ASGD's ``eta``/``mu`` continue in the parameter's dtype, as PyTorch's).
        Each group becomes the saved one (a copy) holding this optimizer's parameters, and keeps its
        ``param_names`` where the saved one has none: options the saved group lacks are not kept from this
        optimizer's, and those PyTorch's ``__setstate__`` sets by default (``group_setdefaults``) take that
        default there, as PyTorch's."""
        state_dict = dict(state_dict)  # a shallow copy, as PyTorch's: the pre-hooks may change it
        for hook in list(self._optimizer_load_state_dict_pre_hooks.values()):
            result = hook(self, state_dict)
            if result is not None:
                state_dict = result
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has a different number of parameter groups ({len(groups)}; the "
                             f"optimizer has {len(self.param_groups)})")
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size "
                                 f"of optimizer's group ({len(saved['params'])} vs {len(group['params'])})")
        import copy  # here, not at import: `import optim` stays quick

        params = {}
        float32_steps = set()  # a fused or capturable group's `step` loads as float32, as PyTorch's
        copied = {}  # one deepcopy over all the groups, as PyTorch's: what groups shared, they share again
        loaded_groups = []
        for saved, group in zip(groups, self.param_groups):
            for i, p in zip(saved["params"], group["params"]):
                params[i] = p
                if saved.get("fused") or saved.get("capturable"):
                    float32_steps.add(i)
            loaded = {k: group["params"] if k == "params" else copy.deepcopy(v, copied) for k, v in saved.items()}
            if "param_names" in group and "param_names" not in loaded:
                loaded["param_names"] = group["param_names"]
            loaded_groups.append(loaded)
        self.state = defaultdict(dict)
        for i, values in state_dict["state"].items():
            p = params.get(int(i) if isinstance(i, str) and i.isdigit() else i)
            if p is None:  # an entry under a key of its own (self.state["global_step"]): back as it is, as PyTorch's
                self.state[i] = values
                continue
            # (a complex parameter's entries keep their dtypes, as PyTorch's: it casts for floating parameters only)
            cast = p.dtype if p._data.dtype.kind == "f" else None
            step_dtype = float32 if i in float32_steps else None
            self.state[p] = {k: _restore(v, (step_dtype if k == "step" else None) if k in self.scalar_state else cast,
                                         numbers_to_tensors=k in self.scalar_state and _builtin(self),
                                         step_dtype=step_dtype)
                             for k, v in values.items()}
        # through __setstate__, as PyTorch's: an optimizer written against it migrates an old checkpoint there
        # (``group.setdefault("amsgrad", False)``, a ``step`` saved as a number made a Tensor)
        self.__setstate__({"state": self.state, "param_groups": loaded_groups})
        for hook in list(self._optimizer_load_state_dict_post_hooks.values()):
            hook(self)

    def __repr__(self):
        text = f"{type(self).__name__} ("  # each group opens with a newline, each option ends with one: PyTorch's
        for i, group in enumerate(self.param_groups):  # (so a blank line parts two groups)
            text += f"\nParameter Group {i}\n" + "".join(f"    {k}: {v}\n" for k, v in sorted(group.items())
                                                          if k != "params")
        return text + ")"


def real_pairs(tensor):
    """A complex tensor's memory as real numbers, shape (..., 2) (PyTorch's view_as_real, a view here
    too): an update of the pairs is an update of the tensor, and Adam's g² is then |g|² per part."""
    data = tensor._data
    if not data.flags.c_contiguous:
        raise RuntimeError(f"a complex parameter of shape {tuple(tensor.shape)} must be contiguous to be optimised")
    pairs = Tensor._make(data[..., None].view(data.real.dtype))  # (a trailing axis first: 0-d ones too)
    pairs._version_cell = tensor._version_cell  # (a write to the pairs is a write to the tensor)
    return pairs


def complex_of_pairs(pairs):
    """The complex tensor whose (real, imaginary) pairs ``pairs`` holds, shape (..., 2) (view_as_complex's
    inverse of ``real_pairs``), over the same memory where it is contiguous."""
    data = xp.ascontiguousarray(pairs._data)
    return Tensor._make(data.view(numpy.result_type(data.dtype, numpy.complex64))[..., 0])


def _is_complex(value):
    return isinstance(value, Tensor) and value._data.dtype.kind == "c"


def _snapshot(value, copies):
    """A copy of a state entry: Tensors (also inside LBFGS's lists) are copied, each once (``copies``:
    id of a Tensor -> its copy), so that two entries holding one Tensor hold one copy."""
    if isinstance(value, Tensor):
        if id(value) not in copies:
            copies[id(value)] = (value, tensor_from(value.numpy().copy()))  # (the original kept: its id stays its)
        return copies[id(value)][1]
    if isinstance(value, dict):
        return {k: _snapshot(v, copies) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_snapshot(v, copies) for v in value)
    return value


def _restore(value, dtype, numbers_to_tensors=False, step_dtype=None):
    """A loaded state entry as a fresh Tensor (of ``dtype`` when given), numbers as they are; with
    ``numbers_to_tensors``, a number (an old-style ``step`` of one of this package's optimizers, which
    step with a Tensor) becomes a scalar Tensor, as their ``__setstate__`` makes it in PyTorch. The Tensors
    in a list or tuple are cast as the entry; those in a dict by their own keys, as PyTorch's ``_cast``
    does (a custom optimizer's ``state["factors"] = {"row": ..., "step": ...}``: a ``step`` there takes
    ``step_dtype``, None for its own)."""
    if isinstance(value, (Tensor, numpy.ndarray)):
        array = value.numpy() if isinstance(value, Tensor) else value
        return tensor_from(numpy.array(array, dtype=dtype or array.dtype, copy=True))
    if isinstance(value, dict):
        return {k: _restore(v, step_dtype if k == "step" else dtype, step_dtype=step_dtype) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_restore(v, dtype, numbers_to_tensors, step_dtype) for v in value)
    if numbers_to_tensors and isinstance(value, (int, float)) and not isinstance(value, bool):
        return scalar_tensor(value)
    return value


def _builtin(optimizer):
    """Whether ``optimizer`` is one of this package's (PyTorch's own), not an optimizer written against
    ``torch.optim.Optimizer``: the base class checks and converts nothing for those (a custom ``lr=None``
    stays, a ``step`` kept as a number stays a number: timm's RAdam caches step sizes by it)."""
    return type(optimizer).__module__.partition(".")[0] == __name__.partition(".")[0]

