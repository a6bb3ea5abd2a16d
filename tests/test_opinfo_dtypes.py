"""chainrule against PyTorch's operator database (`op_db`) in the dtypes other than float64.

tests/test_opinfo.py compares float64 samples (and a few float32, int64 and bool ones). Here every compared
OpInfo runs a few samples in each of float32, float16, complex64, complex128, int64, int32, int16, int8, uint8
and bool: where PyTorch computes a result, ours must have its shape and exactly its dtype (a float16 op that
answers in float32, an integer op that answers in float64, is the silent wrong answer this file looks for) and
its values within PyTorch's per-dtype tolerances; where PyTorch refuses the dtype ("not implemented for
'Half'"), we must raise too (any error). For complex samples the gradient of `(out * w).sum().real` (`w` fixed
and real) with respect to every complex input that requires grad is compared as well.

bfloat16, the quantized dtypes and uint16 and up are not served here. Known differences are in SKIP (deliberate)
and XFAIL (strict: a fix makes its test fail until the entry goes). Needs torch and expecttest; skips cleanly
without them.
"""

import contextlib
import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")

import autograd  # noqa: E402
from tests.pytorch_programs import pytorch_own_float16_kernels  # noqa: E402
from tests.test_opinfo import (  # noqa: E402
    COMPARED,
    DETERMINISTIC_SAMPLES,
    FLOAT32_NO_GRADIENT_CHECK,
    NO_GRADIENT_CHECK,
    TIED_INDICES,
    _describe,
    _ours_for,
    _variant,
)
from tests.test_opinfo import SKIP as FLOAT64_SKIP  # noqa: E402
from tests.torch_samples import TORCH_TO_NUMPY_DTYPE, Unconvertible, compare_outputs, convert, leaves  # noqa: E402

pytestmark = pytest.mark.torch

DTYPES = (torch.float32, torch.float16, torch.complex64, torch.complex128, torch.int64, torch.int32, torch.int16,
          torch.int8, torch.uint8, torch.bool)
SAMPLES = 2  # per op and dtype PyTorch lists for CPU
REFUSED_SAMPLES = 1  # per dtype it does not list (where it must refuse, we must too)


def tolerance(dtype):
    """(rtol, atol) per floating dtype, as torch.testing.assert_close's defaults, float16's loosened as
    PyTorch's test_ops loosens it per op: its kernels compute in float32 and round once, NumPy's float16 ufuncs
    (and sums) round at each step."""
    dtype = np.dtype(dtype)
    if dtype == np.float16:
        return 1e-2, 1e-2
    if dtype in (np.float32, np.complex64):
        return 1e-4, 1e-5
    return 1e-6, 1e-8


F16, C64, C128 = torch.float16, torch.complex64, torch.complex128
INTEGERS_AND_BOOL = (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool)

# Whole ops whose comparison in these dtypes is meaningless here.
SKIP = {
    "bfloat16": "converts to bfloat16, which is not served here (NumPy has no bfloat16; README)",
    "to_sparse": "a sparse result: torch_samples.compare_outputs compares strided tensors only",
}

# (variant, dtype) pairs whose difference is deliberate.
POLE = ("the int8/int16 samples hold negative integers, polygamma's poles: PyTorch's float32 answer there is a "
        "finite rounding artefact (8.07e13 at -4), chainrule's is inf")
SKIP_DTYPES = {
    **{(name, F16): "complex32 (ComplexHalf) is not served: chainrule has no complex32 dtype (README)"
       for name in ("complex", "view_as_complex")},
    **{(f"polygamma.polygamma_n_{n}", dtype): POLE for n in range(5) for dtype in (torch.int16, torch.int8)},
    **{("special.polygamma.special_polygamma_n_0", dtype): POLE for dtype in (torch.int16, torch.int8)},
}

EMPTY = ("an empty input: PyTorch returns the empty result before its kernel's dtype dispatch, chainrule refuses "
         "the dtype")
WRAPS = ("uint8 samples: PyTorch adds y_i + y_(i+1) (and multiplies by x's differences) in uint8, wrapping past 255, "
         "before promoting; chainrule promotes first (the mathematically right area)")
# (variant, dtype) pairs that disagree, not fixed here. Strict: where one agrees, the test fails until it goes.
XFAIL_DTYPES = {
    **{("nn.functional.adaptive_avg_pool1d", dtype): EMPTY for dtype in (C64, C128, *INTEGERS_AND_BOOL)},
    **{("searchsorted", dtype): EMPTY for dtype in (C64, C128, torch.bool)},
    ("nn.functional.pdist", F16): "a single row (no pairs): PyTorch returns the empty result before refusing Half",
    ("histogramdd", torch.float32): "bins that decrease: PyTorch counts nothing, NumPy's histogramdd refuses them "
                                    "(as test_opinfo's XFAIL, float64)",
    **{(name, torch.uint8): WRAPS for name in ("trapz", "trapezoid", "cumulative_trapezoid")},
    ("matrix_exp", F16): "PyTorch's float16 matrix_exp overflows to NaN on the samples (5x5, entries up to 9); "
                         "chainrule's gives finite values",
    ("nn.functional.soft_margin_loss", F16): "PyTorch computes log(1 + exp(-y x)) in float16: exp(12) overflows "
                                             "to inf; chainrule's stable softplus gives 5.02",
    ("nn.functional.soft_margin_loss", C64): "complex: PyTorch's log1p(exp(-y x)) differs from chainrule's "
                                             "softplus (the imaginary part's branch)",
}

# Disagreements not fixed here, by variant name (strict).
XFAIL = {}


def _complex_gradients(ours_out, theirs_out, memo, theirs_inputs, where):
    """The gradient of sum_k Re(out_k * w_k) for fixed real weights w_k, with respect to each complex leaf."""
    theirs_outs = [t for t in leaves(theirs_out) if isinstance(t, torch.Tensor) and t.requires_grad
                   and (t.dtype.is_complex or t.dtype.is_floating_point)]
    inputs = list({id(t): t for t in theirs_inputs if isinstance(t, torch.Tensor) and t.requires_grad
                   and t.dtype.is_complex}.values())
    if not theirs_outs or not inputs:
        return []
    position = {id(t): k for k, t in enumerate(leaves(theirs_out))}
    ours_leaves = leaves(ours_out)
    theirs_loss, ours_loss = 0, 0
    for t in theirs_outs:
        w = np.random.default_rng(position[id(t)]).standard_normal(tuple(t.shape))
        theirs_loss = theirs_loss + (t * torch.tensor(w, dtype=t.real.dtype)).sum().real
        o = ours_leaves[position[id(t)]]
        if o.requires_grad:
            ours_loss = ours_loss + (o * autograd.tensor(w.astype(o.real.dtype))).sum().real
    try:
        theirs_grads = torch.autograd.grad(theirs_loss, inputs, allow_unused=True)
    except RuntimeError:  # PyTorch has no complex derivative for it
        return []
    try:
        ours_grads = autograd.grad(ours_loss, [memo[id(t)] for t in inputs], allow_unused=True) \
            if isinstance(ours_loss, autograd.Tensor) else [None] * len(inputs)
    except Exception as error:
        return [f"{where}: backward raised {type(error).__name__}: {str(error)[:160]}"]
    problems = []
    for i, (a, b, leaf) in enumerate(zip(ours_grads, theirs_grads, inputs)):
        dtype = TORCH_TO_NUMPY_DTYPE[leaf.dtype]
        want = np.zeros(tuple(leaf.shape), dtype) if b is None else b.numpy(force=True)
        got = np.zeros(tuple(leaf.shape), dtype) if a is None else a.numpy()
        rtol, atol = tolerance(dtype)
        if got.shape != want.shape or got.dtype != want.dtype:
            problems.append(f"{where} grad[{i}]: {got.dtype}{got.shape}, PyTorch {want.dtype}{want.shape}")
        elif not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
            problems.append(f"{where} grad[{i}]: max |diff| {np.nanmax(np.abs(got - want), initial=0)}")
    return problems


def _samples(op, dtype, grad):
    try:
        return list(itertools.islice(filter(DETERMINISTIC_SAMPLES.get(op.name, lambda s: True),
                                            op.sample_inputs_func(op, "cpu", dtype, grad)), 8))
    except Exception:  # (the sample maker itself refuses a dtype the op does not list)
        return []


def _run_dtype(op, ours, dtype, listed):
    grad = listed and dtype.is_complex and op.supports_autograd and dtype in op.supported_backward_dtypes("cpu") \
        and not (dtype == C64 and op.name in FLOAT32_NO_GRADIENT_CHECK) and op.name not in NO_GRADIENT_CHECK
    problems, compared = [], 0
    for n, sample in enumerate(_samples(op, dtype, grad)):
        if compared == (SAMPLES if listed else REFUSED_SAMPLES):
            break
        where = f"{str(dtype)[6:]} sample {n}"
        memo = {}
        try:
            ours_args, ours_kwargs = convert([sample.input, *sample.args], memo), convert(sample.kwargs, memo)
        except Unconvertible:
            continue
        try:
            with pytorch_own_float16_kernels(torch) if dtype == F16 else contextlib.nullcontext():
                theirs = op.op(sample.input, *sample.args, **sample.kwargs)
            refused = None
        except Exception as error:
            refused = error
        compared += 1
        try:
            ours_out = ours(*ours_args, **ours_kwargs)
        except Exception as error:
            if refused is None:
                problems.append(f"{where}: raised {type(error).__name__}: {str(error)[:160]} "
                                f"(args {_describe(sample)})")
            continue
        if refused is not None:
            problems.append(f"{where}: no error, PyTorch {type(refused).__name__}: {str(refused)[:100]} "
                            f"(args {_describe(sample)})")
            continue
        if op.name in TIED_INDICES and not (dtype.is_floating_point or dtype.is_complex):
            ours_out, theirs = ours_out[0], theirs[0]  # (small integers tie: values only)
        found = compare_outputs(ours_out, theirs, where, tolerance)
        if not found and grad:
            found = _complex_gradients(ours_out, theirs, memo, leaves([sample.input, list(sample.args),
                                                                       sample.kwargs]), where)
        problems.extend(f"{p} (args {_describe(sample)})" for p in found)
    return problems


def _param(op):
    variant = _variant(op)
    marks = [pytest.mark.xfail(reason=XFAIL[variant], strict=True)] if variant in XFAIL else []
    return pytest.param(op, id=variant, marks=marks)


def _skipped(op):
    return any(table.get(name) for table in (FLOAT64_SKIP, SKIP) for name in (_variant(op), op.name))


# (argsort's indices of tied integers are PyTorch's choice: test_opinfo compares them through the values)
SWEPT = [op for op in COMPARED if not _skipped(op) and op.name != "argsort"]


@pytest.mark.parametrize("op", [_param(op) for op in SWEPT])
def test_op_agrees_with_pytorch_in_other_dtypes(op):
    torch.manual_seed(0)
    ours = _ours_for(op)
    supported = op.supported_dtypes("cpu")
    problems = []
    for dtype in DTYPES:
        key = (_variant(op), dtype)
        if key in SKIP_DTYPES:
            continue
        found = _run_dtype(op, ours, dtype, dtype in supported)
        if key not in XFAIL_DTYPES:
            problems += found
        elif not found:
            problems.append(f"{str(dtype)[6:]}: agrees now; remove its XFAIL_DTYPES entry ({XFAIL_DTYPES[key]})")
    assert not problems, f"{_variant(op)}: {len(problems)} disagreements\n" + "\n".join(problems[:12])
