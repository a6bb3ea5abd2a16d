"""``Optimizer``: parameter groups, per-parameter state and state dicts.

The bookkeeping lives here; each optimizer's update rule is a plain function
over arrays in its own file (sgd.py, adam.py, ...), applied in place to
``param._data`` without recording a graph.
"""

import copy

import numpy

from autograd import Tensor, enable_grad, no_grad
from autograd.graph import bump_version


def require(condition, message):
    """Raise ValueError(message) unless ``condition``: hyperparameter checks."""
    if not condition:
        raise ValueError(message)


class Optimizer:
    defaults = {}

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}
        self.param_groups = []
        params = list(params) if not isinstance(params, Tensor) else [params]
        if not params:
            raise ValueError("optimizer got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def check_hyperparameters(self, group):
        """Subclasses raise ValueError here for an invalid option (negative lr, ...)."""
        require(group["lr"] >= 0, f"Invalid learning rate: {group['lr']}")

    def add_param_group(self, param_group):
        """Add a group of parameters with its own options (missing ones from defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"a parameter group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group["params"]
        group["params"] = [params] if isinstance(params, Tensor) else list(params)
        seen = set()
        for i, p in enumerate(group["params"]):
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but parameter {i} is a "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError(f"can't optimize a non-leaf Tensor (parameter {i}, shape {p.shape}): "
                                 "optimize the leaf it was computed from, or .detach().requires_grad_()")
            if not p.requires_grad:
                raise ValueError(f"parameter {i} (shape {p.shape}) does not require grad")
            if id(p) in seen:
                raise ValueError(f"parameter {i} (shape {p.shape}) is listed twice in one parameter group")
            seen.add(id(p))
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self.check_hyperparameters(group)
        existing = {id(p) for g in self.param_groups for p in g["params"]}
        if existing & seen:
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad._data[...] = 0

    def step(self, closure=None):
        """Update every parameter that has a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    state = self.state.setdefault(p, {})
                    grad = p.grad._data
                    if grad.shape != p.shape:
                        raise ValueError(f"gradient of shape {grad.shape} for a parameter of shape {p.shape}")
                    self.update(p._data, -grad if group.get("maximize") else grad, state, group)
                    bump_version(p)  # the parameter changed: a graph that saved it is stale
        return loss

    def update(self, param, grad, state, group):
        """Change the array ``param`` in place from ``grad``; keep what it needs in ``state``."""
        raise NotImplementedError

    # -- saving and resuming --------------------------------------------------------------

    def state_dict(self):
        """{'state': {index: {...}}, 'param_groups': [{options..., 'params': [indices]}]},
        parameters named by their position across groups, as PyTorch does."""
        index = {}
        groups = []
        for group in self.param_groups:
            ids = []
            for p in group["params"]:
                index.setdefault(id(p), len(index))
                ids.append(index[id(p)])
            groups.append({**{k: v for k, v in group.items() if k != "params"}, "params": ids})
        state = {index[id(p)]: {k: (Tensor(v.copy()) if isinstance(v, numpy.ndarray) else v)
                                for k, v in s.items()}
                 for p, s in self.state.items() if id(p) in index}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore state and options; resuming gives the same trajectory as never stopping."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter groups, the optimizer has "
                             f"{len(self.param_groups)}")
        for saved, group in zip(groups, self.param_groups):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size "
                                 f"of optimizer's group ({len(saved['params'])} vs {len(group['params'])})")
        params = {}
        for saved, group in zip(groups, self.param_groups):
            for i, p in zip(saved["params"], group["params"]):
                params[i] = p
            group.update({k: copy.deepcopy(v) for k, v in saved.items() if k != "params"})
        self.state = {}
        for i, values in state_dict["state"].items():
            p = params[int(i)]
            self.state[p] = {k: (v._data.astype(p.dtype, copy=True) if isinstance(v, Tensor) else
                                 numpy.array(v, dtype=p.dtype) if isinstance(v, numpy.ndarray) else v)
                             for k, v in values.items()}

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])
