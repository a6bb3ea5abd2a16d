"""Second derivatives against PyTorch's operator database: Hessian-vector products of every OpInfo with
`supports_gradgrad` whose op exists here (test_opinfo.py's `_ours_for`), on float64 samples.

For a sample with floating inputs x_j that require grad: L = sum_k (out_k * w_k).sum() for fixed random w_k,
g = grad(L, x, create_graph=True), M = sum_i (g_i * v_i).sum() for fixed random v_i, and h = grad(M, x), the
Hessian of L applied to v. Both libraries' g and h must agree in values, dtypes and shapes.

A first derivative that does not depend on the inputs (a linear op: PyTorch's g_i does not require grad, or is
None for an input L does not use) is a constant: its term in M contributes nothing to h. Ours may still carry
a graph there (a backward written in differentiable ops need not know it is constant); so M is formed from the
g_i that require grad in each library, and h compared, which is zero where PyTorch's g_i is constant. Where
neither library's M requires grad, h is zero. An input whose h is None (unused by M) reads as zeros.

Needs torch and expecttest; skips cleanly without them (torch-free checks are in test_port29_opinfo_gradgrad_fixes.py).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")

import autograd  # noqa: E402
from autograd.sparse.coo import SparseTensor  # noqa: E402
from tests.test_opinfo import (  # noqa: E402
    COMPARED,
    DETERMINISTIC_SAMPLES,
    NO_GRADIENT_CHECK,
    SKIP,
    _describe,
    _floating_tensors,
    _ours_for,
    _variant,
    _weights,
)
from tests.test_opinfo import XFAIL as FIRST_ORDER_XFAIL  # noqa: E402
from tests.torch_samples import TORCH_TO_NUMPY_DTYPE, Unconvertible, tolerance  # noqa: E402
from tests.torch_samples import convert as _convert  # noqa: E402
from tests.torch_samples import leaves as _leaves  # noqa: E402

pytestmark = pytest.mark.torch

SAMPLES = 4  # per op: second derivatives of the first few float64 samples
MAX_ELEMENTS = 2048  # (larger samples test PyTorch's kernels, not a derivative rule, and cost time)
LARGE_SAMPLES = {"slice_scatter"}  # (every sample of theirs is 20 x 20 x 20)

GRADGRAD_SKIP = {
    "bfloat16": "README: bfloat16 tensors are not built (NumPy has no bfloat16); x.bfloat16() raises",
}

# Disagreements not fixed here (strict: a fix makes the test fail until its entry goes).
XFAIL = {
    **{name: f"first order, not second (test_opinfo's XFAIL): {FIRST_ORDER_XFAIL[name]}"
       for name in ("gather", "nn.functional.batch_norm", "tensordot")},
}

GRADGRAD_COMPARED = [op for op in COMPARED if op.supports_gradgrad and op.supports_autograd
                     and torch.float64 in op.supported_dtypes("cpu")]


def _floating_outputs(outputs, library):
    """The floating output tensors; here a sparse one too (PyTorch's is a torch.Tensor, ours a SparseTensor)."""
    if library is torch:
        return _floating_tensors(outputs, torch.Tensor)
    return [t for t in _leaves(outputs) if isinstance(t, (autograd.Tensor, SparseTensor))
            and np.issubdtype(t.dtype, np.floating)]


def _loss(outputs, library):
    """sum_k (out_k * w_k).sum() over the floating outputs that require grad, or None."""
    total = None
    for k, t in enumerate(_floating_outputs(outputs, library)):
        if not t.requires_grad:
            continue
        w = _weights(tuple(t.shape), k)
        term = (t * library.tensor(w, dtype=t.dtype)).sum()
        total = term if total is None else total + term
    return total


def _hvp(library, outputs, leaves):
    """(g, h): the first derivatives of _loss and the Hessian-vector products; entries may be None."""
    loss = _loss(outputs, library)
    if loss is None:
        return [None] * len(leaves), [None] * len(leaves)
    g = library.autograd.grad(loss, leaves, create_graph=True, allow_unused=True)
    m = None
    for i, gi in enumerate(g):
        if gi is not None and gi.requires_grad:
            term = (gi * library.tensor(_weights(tuple(gi.shape), 100 + i), dtype=gi.dtype)).sum()
            m = term if m is None else m + term
    h = [None] * len(leaves) if m is None else library.autograd.grad(m, leaves, allow_unused=True)
    return g, h


def _compare(ours, theirs, leaves, what, where):
    problems = []
    for i, (a, b) in enumerate(zip(ours, theirs)):
        dtype = TORCH_TO_NUMPY_DTYPE[leaves[i].dtype]
        want = np.zeros(tuple(leaves[i].shape), dtype) if b is None else b.numpy(force=True)
        got = np.zeros(tuple(leaves[i].shape), dtype) if a is None else a.detach().numpy()
        if got.shape != want.shape:
            problems.append(f"{where} {what}[{i}]: shape {got.shape}, PyTorch {want.shape}")
        elif got.dtype != want.dtype:
            problems.append(f"{where} {what}[{i}]: dtype {got.dtype}, PyTorch {want.dtype}")
        elif not np.allclose(got, want, *tolerance(want.dtype), equal_nan=True):  # (float32 weights of cov)
            problems.append(f"{where} {what}[{i}]: max |diff| {np.nanmax(np.abs(got - want), initial=0)}")
    return problems


def _small(sample):
    tensors = [t for t in _leaves([sample.input, list(sample.args), sample.kwargs]) if isinstance(t, torch.Tensor)]
    return sum(t.numel() for t in tensors) <= MAX_ELEMENTS


def _run(op, ours):
    problems, compared = [], 0
    keep = DETERMINISTIC_SAMPLES.get(op.name, lambda sample: True)
    samples = op.sample_inputs_func(op, "cpu", torch.float64, True)
    for n, sample in enumerate(samples):
        if compared == SAMPLES:
            break
        if not keep(sample) or not (_small(sample) or op.name in LARGE_SAMPLES):
            continue
        where = f"sample {n}"
        leaves = [t for t in _leaves([sample.input, list(sample.args), sample.kwargs])
                  if isinstance(t, torch.Tensor) and t.requires_grad and t.dtype.is_floating_point]
        leaves = list({id(t): t for t in leaves}.values())
        if not leaves:
            continue
        try:
            theirs_out = op.op(sample.input, *sample.args, **sample.kwargs)
            theirs_g, theirs_h = _hvp(torch, theirs_out, leaves)
        except Exception:  # (PyTorch refuses the sample, or has no second derivative for it)
            continue
        memo = {}
        try:
            ours_args, ours_kwargs = _convert([sample.input, *sample.args], memo), _convert(sample.kwargs, memo)
        except Unconvertible:
            continue
        compared += 1
        try:
            ours_g, ours_h = _hvp(autograd, ours(*ours_args, **ours_kwargs), [memo[id(t)] for t in leaves])
        except Exception as error:
            problems.append(f"{where}: raised {type(error).__name__}: {str(error)[:200]} (args {_describe(sample)})")
            continue
        found = _compare(ours_g, theirs_g, leaves, "g", where) or _compare(ours_h, theirs_h, leaves, "hvp", where)
        problems.extend(f"{p} (args {_describe(sample)})" for p in found)
    return problems


def _param(op):
    reason = XFAIL.get(_variant(op))
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(op, id=_variant(op), marks=marks)


@pytest.mark.parametrize("op", [_param(op) for op in GRADGRAD_COMPARED])
def test_second_derivatives_agree_with_pytorch(op):
    reason = (SKIP.get(_variant(op)) or SKIP.get(op.name) or GRADGRAD_SKIP.get(_variant(op))
              or NO_GRADIENT_CHECK.get(op.name))
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)
    problems = _run(op, _ours_for(op))
    assert not problems, f"{_variant(op)}: {len(problems)} disagreements\n" + "\n".join(problems[:12])
