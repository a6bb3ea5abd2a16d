"""The probe of saved_write_probe.py over PyTorch's operator database: for each op of test_opinfo.py's COMPARED,
its first float64 samples whose result has a graph, every tensor read or returned written in place after the
forward. Prints each disagreement and the counts. A script (minutes): python -m tests.saved_write_sweep [names]"""

import sys

import numpy as np
import torch

from tests.saved_write_probe import Attribute, Leaf, differences
from tests.test_opinfo import COMPARED, SKIP, _ours_for, _variant

SAMPLES = 2


def spec_of(value):
    """A sample's argument as a probe spec (None inside: a tensor the probe cannot make, so the sample is skipped)."""
    if isinstance(value, torch.Tensor):
        if value.dtype.is_complex or value.layout != torch.strided:
            raise ValueError("complex or sparse")
        array = value.detach().numpy().copy()
        return Leaf(array) if value.requires_grad and value.dtype.is_floating_point else array
    if isinstance(value, torch.dtype):
        return Attribute(str(value).split(".")[1])
    if isinstance(value, (torch.Size,)):
        return tuple(value)
    if isinstance(value, (torch.device, torch.memory_format, torch.layout, torch.Generator, torch.nn.Module)):
        raise ValueError(str(value))
    if isinstance(value, tuple):
        return tuple(spec_of(v) for v in value)
    if isinstance(value, list):
        return [spec_of(v) for v in value]
    if isinstance(value, dict):
        return {k: spec_of(v) for k, v in value.items()}
    return value


def op_differences(op, samples=SAMPLES):
    """[(target, write, ours, PyTorch's)] over the op's first ``samples`` float64 samples that have a graph, and the
    number of (target, write) pairs compared (test_opinfo's _ours_for calls ours)."""
    ours = _ours_for(op)

    def call(T, *args, **kwargs):
        return (op.op if T is torch else ours)(*args, **kwargs)

    found, pairs, done = [], 0, 0
    for sample in op.sample_inputs_func(op, "cpu", torch.float64, True):
        if done == samples:
            break
        try:
            spec = ([spec_of(sample.input), *spec_of(list(sample.args))], spec_of(sample.kwargs))
            differing, compared = differences(call, spec)
        except Exception as error:  # a sample ours cannot run, or one the probe cannot make: test_opinfo's business
            found.append(("skipped", "", f"{type(error).__name__}: {str(error)[:80]}", ""))
            continue
        if compared:
            done += 1
            pairs += compared
            found.extend(differing)
    return found, pairs


def probed(names=None):
    """The ops of op_db the sweep probes: differentiable in float64, compared by test_opinfo, not skipped there."""
    return [op for op in COMPARED if (not names or _variant(op) in names) and _variant(op) not in SKIP
            and op.supports_autograd and torch.float64 in op.supported_dtypes("cpu")]


def sweep(names=None):
    pairs = differing = 0
    for op in probed(names):
        found, compared = op_differences(op)
        pairs += compared
        for target, kind, got, want in found:
            differing += target != "skipped"
            print(f"{_variant(op)} {target} {kind}: ours {got} | PyTorch {want}", flush=True)
    print(f"pairs compared: {pairs}, differing: {differing}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    sweep(set(sys.argv[1:]) or None)
