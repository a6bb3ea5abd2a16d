"""Turning PyTorch's test samples (OpInfo, ModuleInfo) into chainrule arguments and comparing the outputs.

Shared by tests/test_opinfo.py and tests/test_moduledb.py; imports torch, so only tests that already skip
without it import this module."""

import math
import numbers

import numpy as np
import torch

import autograd

TORCH_TO_NUMPY_DTYPE = {
    torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16, torch.int64: np.int64,
    torch.int32: np.int32, torch.int16: np.int16, torch.int8: np.int8, torch.uint8: np.uint8,
    torch.bool: np.bool_, torch.complex64: np.complex64, torch.complex128: np.complex128,
}
# what an op may return beside those (hash_tensor's uint64, a dtype chainrule makes no input of)
OUTPUT_DTYPES = {**TORCH_TO_NUMPY_DTYPE, torch.uint64: np.uint64}


class Unconvertible(Exception):
    """A sample argument this project has no counterpart of (a bfloat16 dtype, a memory format, ...)."""


def convert(value, memo):
    """torch -> chainrule, through NumPy; the same torch tensor twice gives the same chainrule tensor."""
    if isinstance(value, torch.Tensor):
        if id(value) not in memo:
            if value.dtype not in TORCH_TO_NUMPY_DTYPE or value.layout != torch.strided \
                    or value.device.type != "cpu":
                raise Unconvertible(f"{value.dtype}/{value.layout}/{value.device}")
            try:
                array = value.detach().resolve_conj().resolve_neg().numpy().copy()
            except (TypeError, ValueError, RuntimeError) as error:  # more dimensions than NumPy allows
                raise Unconvertible(str(error)) from error
            memo[id(value)] = autograd.tensor(array, requires_grad=value.requires_grad)
        return memo[id(value)]
    if isinstance(value, torch.dtype):
        if value not in TORCH_TO_NUMPY_DTYPE:
            raise Unconvertible(str(value))
        return getattr(autograd, str(value).split(".")[1])
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, (torch.memory_format, torch.layout, torch.Generator, torch.nn.Module)):
        raise Unconvertible(str(value))
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(convert(v, memo) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(convert(v, memo) for v in value)
    if isinstance(value, dict):
        return {k: convert(v, memo) for k, v in value.items()}
    return value


def leaves(value):
    """Tensors (or anything else) in nested tuples, lists and dicts, in order."""
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in leaves(v)]
    if isinstance(value, dict):
        return [leaf for v in value.values() for leaf in leaves(v)]
    return [value]


def tolerance(dtype):
    """(rtol, atol) for a floating NumPy dtype: tight for double precision, looser for single."""
    return (1e-6, 1e-8) if np.dtype(dtype) in (np.float64, np.complex128) else (1e-4, 1e-5)


def compare_outputs(ours, theirs, where, tolerance=tolerance):
    """Returns a list of mismatch messages. `tolerance(dtype)` gives (rtol, atol) for floating outputs."""
    theirs_leaves, ours_leaves = leaves(theirs), leaves(ours)
    if len(theirs_leaves) != len(ours_leaves):
        return [f"{where}: {len(ours_leaves)} outputs, PyTorch {len(theirs_leaves)}"]
    problems = []
    for i, (a, b) in enumerate(zip(ours_leaves, theirs_leaves)):
        if isinstance(b, torch.Tensor):
            if not isinstance(a, autograd.Tensor):
                problems.append(f"{where} out[{i}]: {type(a).__name__}, PyTorch a Tensor")
                continue
            if tuple(a.shape) != tuple(b.shape):
                problems.append(f"{where} out[{i}]: shape {tuple(a.shape)}, PyTorch {tuple(b.shape)}")
                continue
            expected_dtype = OUTPUT_DTYPES.get(b.dtype)
            if expected_dtype is None or np.dtype(a.dtype) != np.dtype(expected_dtype):
                problems.append(f"{where} out[{i}]: dtype {a.dtype}, PyTorch {b.dtype}")
                continue
            got, want = np.asarray(a.detach().numpy()), b.detach().resolve_conj().resolve_neg().numpy()
            if np.issubdtype(want.dtype, np.inexact):
                rtol, atol = tolerance(want.dtype)
                ok = np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True)
            else:
                ok = np.array_equal(got, want)
            if not ok:
                problems.append(f"{where} out[{i}]: values differ, max |diff| "
                                f"{np.nanmax(np.abs(_difference(got, want)), initial=0)}")
        elif isinstance(b, numbers.Number) and not isinstance(b, bool):
            a = a.item() if isinstance(a, autograd.Tensor) else a
            if not isinstance(a, numbers.Number) or not (a == b or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-8)
                                                         or (a != a and b != b)):
                problems.append(f"{where} out[{i}]: {a!r}, PyTorch {b!r}")
        elif a != b and not (isinstance(b, torch.dtype) and a == convert(b, {})):
            problems.append(f"{where} out[{i}]: {a!r}, PyTorch {b!r}")
    return problems


def _difference(got, want):
    """got - want, complex parts kept (a float cast drops the imaginary parts: a complex mismatch read 0.0)."""
    if np.issubdtype(want.dtype, np.inexact):
        return got.astype(want.dtype) - want
    return got.astype(float) - want.astype(float)
