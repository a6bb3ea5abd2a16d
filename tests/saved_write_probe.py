"""A probe of what each op's node saves for backward, as PyTorch's refusals show it: for one call, every tensor
it read or returned is written in place after the forward (a change of value, or a write of the same values,
which still bumps the version), then the backward runs. Where PyTorch's node saved that tensor, its backward
raises "modified by an inplace operation"; where it did not, the backward runs and gives gradients. Ours must do
the same: refuse where PyTorch refuses (else its gradient is silently computed from the new values), and run,
with PyTorch's gradients, where PyTorch runs.

``probe(call, spec)`` runs one (call, written tensor, write) on a library; ``differences(call, spec)`` compares
both over every tensor and both writes. A spec is the call's arguments with each tensor given as a NumPy array
(``Leaf`` where it requires grad: the call gets ``leaf * 1``, a tensor one may write, of a leaf). Imports torch,
so only tests that skip without it, and scripts, use ``differences``."""

import re

import numpy as np

import autograd

WRITES = ("value", "same")


class Leaf:
    """A floating argument that requires grad: the op reads ``leaf * 1``, so writing it in place is allowed."""

    def __init__(self, array):
        self.array = np.asarray(array)


class Attribute:
    """An argument each library spells its own way (a dtype): ``module.<name>``."""

    def __init__(self, name):
        self.name = name


def _make(module, spec, leaves, passed):
    if isinstance(spec, Attribute):
        return getattr(module, spec.name)
    if isinstance(spec, Leaf):
        leaf = module.tensor(spec.array.copy(), requires_grad=True)
        leaves.append(leaf)
        passed.append(leaf * 1)
        return passed[-1]
    if isinstance(spec, np.ndarray):
        passed.append(module.tensor(spec.copy()))
        return passed[-1]
    if isinstance(spec, tuple):
        return tuple(_make(module, s, leaves, passed) for s in spec)
    if isinstance(spec, list):
        return [_make(module, s, leaves, passed) for s in spec]
    if isinstance(spec, dict):
        return {k: _make(module, s, leaves, passed) for k, s in spec.items()}
    return spec


def _tensors(value, tensor_class):
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v, tensor_class)]
    return [value] if isinstance(value, tensor_class) else []


def _write(tensor, kind):
    """A change of value (+0.5 for floats, zeros for integers and bools) or the same values written back."""
    if kind == "same":
        tensor.copy_(tensor.detach().clone())
    elif tensor.dtype.is_floating_point:
        tensor.add_(0.5)
    else:
        tensor.zero_()


def probe(module, call, spec, target=None, kind="value"):
    """call(module, *args, **kwargs) with spec's tensors; then ``target`` ("arg k": the k-th tensor passed, "out k":
    the k-th tensor returned; None: nothing) written in place (``kind``); then the backward of a fixed weighting of
    the floating outputs. Returns ("raised", error) or ("grads", [arrays, one per leaf]), or ("no graph", None)."""
    leaves, passed = [], []
    args, kwargs = spec if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict) else (spec, {})
    args = _make(module, list(args), leaves, passed)
    kwargs = _make(module, kwargs, leaves, passed)
    out = call(module, *args, **kwargs)
    outputs = _tensors(out, module.Tensor)
    try:
        if target is not None:
            where, k = target.split()
            _write((passed if where == "arg" else outputs)[int(k)], kind)
        loss = 0
        for n, y in enumerate(outputs):
            if y.requires_grad and y.dtype.is_floating_point:
                weights = np.random.default_rng(n).standard_normal(tuple(y.shape))
                loss = loss + (y * module.tensor(weights, dtype=y.dtype)).sum()
        if not isinstance(loss, module.Tensor) or not leaves:
            return "no graph", None
        grads = module.autograd.grad(loss, leaves, allow_unused=True)
    except Exception as error:
        return "raised", error
    return "grads", [np.zeros(tuple(x.shape)) if g is None else g.detach().numpy() for x, g in zip(leaves, grads)]


def targets(call, spec):
    """"arg k" for each tensor the call reads, "out k" for each it returns (counted on ours)."""
    leaves, passed = [], []
    args, kwargs = spec if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[1], dict) else (spec, {})
    args = _make(autograd, list(args), leaves, passed)
    out = call(autograd, *args, **_make(autograd, kwargs, leaves, passed))
    return [f"arg {k}" for k in range(len(passed))] + [f"out {k}" for k in range(len(_tensors(out, autograd.Tensor)))]


def _agree(ours, theirs):
    if ours[0] != theirs[0]:
        return False
    if ours[0] == "grads":
        return all(np.allclose(a, b, rtol=1e-6, atol=1e-8, equal_nan=True) for a, b in zip(ours[1], theirs[1]))
    return True


def describe(result):
    if result[0] == "raised":
        return f"raised {type(result[1]).__name__}: {str(result[1])[:160]}"
    return result[0]


def differences(call, spec):
    """[(target, write, ours, PyTorch's)] where ours and PyTorch's disagree (raise or not; gradients where neither
    raises and their gradients agree without a write), and the number of (target, write) pairs compared."""
    import torch

    baseline_agrees = _agree(probe(autograd, call, spec), probe(torch, call, spec))
    found, compared = [], 0
    for target in targets(call, spec):
        for kind in WRITES:
            ours, theirs = probe(autograd, call, spec, target, kind), probe(torch, call, spec, target, kind)
            if theirs[0] == "no graph":
                continue
            compared += 1
            if ours[0] != theirs[0] or (baseline_agrees and not _agree(ours, theirs)):
                found.append((target, kind, describe(ours), describe(theirs)))
    return found, compared


START = "one of the variables needed for gradient computation has been modified by an inplace operation: "


def message_words(error, target):
    """The in-place error up to the saved version: PyTorch's sentence, before each library's advice. For a written
    input (``target`` "arg k"), which ours watches as saved, ours does not name the node that made it (PyTorch's
    ", which is output 0 of Add," after x.add_(0.5)): left out of both."""
    words = str(error).split(" instead")[0]
    return re.sub(r", which is output \d+ of [^,]+,", "", words) if target.startswith("arg") else words
