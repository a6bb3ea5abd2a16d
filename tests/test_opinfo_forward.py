"""Forward-mode AD against PyTorch's own operator database (`op_db`), the sweep of tests/test_opinfo.py along
one more axis: for every OpInfo with `supports_forward_ad` whose op exists here, a few float64 samples (and
complex128 ones where the OpInfo lists complex dtypes and the op takes them here) run inside a dual level on
both libraries, each floating input made dual with a fixed random tangent (`make_dual`, as a PyTorch user
writes it); the outputs' tangents (`unpack_dual(y).tangent`, the Jacobian-vector products J ẋ) must agree
in value, dtype and shape, and be None where PyTorch's are.

The op lookup, the SKIP table and the sample conversion are test_opinfo's. Disagreements not fixed yet are in
XFAIL (strict); deliberate ones in SKIP. Needs torch and expecttest; skips cleanly without them (the
torch-free check of forward against reverse mode is in tests/test_port29_opinfo_forward_fixes.py).
"""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")

import autograd  # noqa: E402
import autograd.autograd.forward_ad as fwAD  # noqa: E402
from tests.test_opinfo import COMPARED, DETERMINISTIC_SAMPLES, SKIP, _describe, _ours_for, _variant  # noqa: E402
from tests.torch_samples import TORCH_TO_NUMPY_DTYPE, Unconvertible, leaves, tolerance  # noqa: E402
from tests.torch_samples import convert as _convert  # noqa: E402

pytestmark = pytest.mark.torch
torch_fwAD = torch.autograd.forward_ad

FLOAT_SAMPLES = 3
COMPLEX_SAMPLES = 2

# Ops whose forward-mode comparison is meaningless here (beyond test_opinfo's SKIP, which applies too).
FORWARD_SKIP = {
    "triangular_solve": "PyTorch's forward rule uses the whole tangent of A, A⁻¹(Ḃ - ȦX), where the op reads only "
                        "A's triangle (its own backward masks the gradient to it, and finite differences agree): "
                        "chainrule's tangent is the derivative of what the op computes, A⁻¹(Ḃ - triu(Ȧ)X)",
}
# Ops whose complex samples are not compared (their float64 ones are).
COMPLEX_SKIP = {
    "logcumsumexp": "complex inputs of 10⁴: PyTorch's forward rule overflows (exp(10⁴)) to NaN, chainrule's "
                    "tangent, from the stable backward, is finite",
}

EMPTY_VARIANCE = ("an empty input, correction 0: PyTorch's forward rule gives var a tangent of 0 (it multiplies by "
                  "2/(n - correction) = ∞ before summing no terms); chainrule's, read from the backward of "
                  "Σ|x - mean|² · ∞, is 0 · ∞ = NaN")
# Disagreements not fixed here (strict: a fix makes the test fail until its entry goes).
XFAIL = {
    "tensordot": "PyTorch contracts a size-1 dim against a size-2 one (broadcasting); chainrule refuses "
                 "(test_opinfo's XFAIL too)",
    **{name: EMPTY_VARIANCE for name in ("var.unbiased", "var_mean.unbiased")},
}


def _dual_tree(value, make, memo):
    """`value` (nested lists, tuples, dicts) with each floating or complex tensor made dual by `make(t)`, the
    same tensor twice made dual once."""
    if isinstance(value, (torch.Tensor, autograd.Tensor)):
        floating = value.dtype.is_floating_point or value.dtype.is_complex if isinstance(value, torch.Tensor) \
            else np.dtype(value.dtype).kind in "fc"
        if not floating:
            return value
        if id(value) not in memo:
            memo[id(value)] = make(value)
        return memo[id(value)]
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_dual_tree(v, make, memo) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_dual_tree(v, make, memo) for v in value)
    if isinstance(value, dict):
        return {k: _dual_tree(v, make, memo) for k, v in value.items()}
    return value


def _tangent_array(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        values = values + 1j * rng.standard_normal(shape)
    return values.astype(dtype)


def _tangents_for(sample):
    """A fixed random tangent (a NumPy array) per distinct floating input tensor, keyed by the torch tensor's id."""
    tangents = {}
    for t in leaves([sample.input, list(sample.args), sample.kwargs]):
        if isinstance(t, torch.Tensor) and (t.dtype.is_floating_point or t.dtype.is_complex) \
                and id(t) not in tangents:
            tangents[id(t)] = _tangent_array(tuple(t.shape), TORCH_TO_NUMPY_DTYPE.get(t.dtype, np.float64),
                                             len(tangents))
    return tangents


def _theirs_jvp(fn, sample, tangents):
    with torch_fwAD.dual_level():
        memo = {}
        make = lambda t: torch_fwAD.make_dual(t.detach(), torch.from_numpy(tangents[id(t)].copy()))  # noqa: E731
        args = _dual_tree([sample.input, *sample.args], make, memo)
        kwargs = _dual_tree(sample.kwargs, make, memo)
        out = fn(*args, **kwargs)
        return out, [torch_fwAD.unpack_dual(y).tangent if isinstance(y, torch.Tensor) else None
                     for y in leaves(out)]


def _ours_jvp(fn, ours_args, ours_kwargs, tangents_by_ours_id):
    with fwAD.dual_level():
        memo = {}
        make = lambda t: fwAD.make_dual(t, autograd.tensor(tangents_by_ours_id[id(t)].copy()))  # noqa: E731
        args = _dual_tree(ours_args, make, memo)
        kwargs = _dual_tree(ours_kwargs, make, memo)
        out = fn(*args, **kwargs)
        return out, [fwAD.unpack_dual(y).tangent if isinstance(y, autograd.Tensor) else None for y in leaves(out)]


def _compare_tangents(ours, theirs, where):
    if len(ours) != len(theirs):
        return [f"{where}: {len(ours)} outputs, PyTorch {len(theirs)}"]
    problems = []
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if b is None:
            if a is not None:
                problems.append(f"{where} tangent[{i}]: {a.dtype} {tuple(a.shape)}, PyTorch None")
            continue
        if a is None:
            problems.append(f"{where} tangent[{i}]: None, PyTorch {b.dtype} {tuple(b.shape)}")
            continue
        want = b.numpy(force=True)  # (force: a ZeroTensor, a real slogdet sign's tangent, has no array)
        got = np.asarray(a.detach().numpy())
        if got.shape != want.shape:
            problems.append(f"{where} tangent[{i}]: shape {got.shape}, PyTorch {want.shape}")
        elif got.dtype != want.dtype:
            problems.append(f"{where} tangent[{i}]: dtype {got.dtype}, PyTorch {want.dtype}")
        else:
            rtol, atol = tolerance(want.dtype) if want.dtype.kind in "fc" else (0, 0)
            if not np.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
                problems.append(f"{where} tangent[{i}]: max |diff| {np.nanmax(np.abs(got - want), initial=0)}")
    return problems


def _run_samples(op, ours, dtype, count):
    problems, compared = [], 0
    samples = op.sample_inputs_func(op, "cpu", dtype, False)
    keep = DETERMINISTIC_SAMPLES.get(op.name, lambda sample: True)
    for n, sample in enumerate(itertools.islice(filter(keep, samples), count)):
        where = f"{dtype} sample {n}"
        tangents = _tangents_for(sample)
        if not tangents:
            continue
        memo = {}
        try:
            ours_args = _convert([sample.input, *sample.args], memo)
            ours_kwargs = _convert(sample.kwargs, memo)
        except Unconvertible:
            continue
        try:
            theirs_out, theirs = _theirs_jvp(op.op, sample, tangents)
        except Exception:  # (PyTorch refuses the sample, or has no forward rule for it)
            continue
        if dtype.is_complex:  # (complex samples only where the op takes complex numbers here)
            try:
                ours(*_convert([sample.input, *sample.args], {}), **_convert(sample.kwargs, {}))
            except Exception:
                continue
        by_ours_id = {id(memo[key]): tangent for key, tangent in tangents.items() if key in memo}
        compared += 1
        try:
            ours_out, got = _ours_jvp(ours, ours_args, ours_kwargs, by_ours_id)
        except Exception as error:
            problems.append(f"{where}: raised {type(error).__name__}: {str(error)[:200]} (args {_describe(sample)})")
            continue
        problems.extend(f"{p} (args {_describe(sample)})" for p in _compare_tangents(got, theirs, where))
    return problems, compared


def _dtypes_for(op):
    supported = op.supported_dtypes("cpu")
    chosen = [(torch.float64, FLOAT_SAMPLES)] if torch.float64 in supported else []
    if torch.complex128 in supported:
        chosen.append((torch.complex128, COMPLEX_SAMPLES))
    return chosen


FORWARD_COMPARED = [op for op in COMPARED if op.supports_forward_ad and _dtypes_for(op)]


def _param(op):
    reason = XFAIL.get(_variant(op))
    return pytest.param(op, id=_variant(op), marks=[pytest.mark.xfail(reason=reason, strict=True)] if reason else [])


@pytest.mark.parametrize("op", [_param(op) for op in FORWARD_COMPARED])
def test_forward_mode_agrees_with_pytorch(op):
    reason = SKIP.get(_variant(op)) or SKIP.get(op.name) or FORWARD_SKIP.get(_variant(op))
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)  # (the samples' values come from PyTorch's generator: the same every run)
    ours = _ours_for(op)
    problems = []
    for dtype, count in _dtypes_for(op):
        if dtype.is_complex and op.name in COMPLEX_SKIP:
            continue
        found, _ = _run_samples(op, ours, dtype, count)
        problems += found
    assert not problems, f"{_variant(op)}: {len(problems)} disagreements\n" + "\n".join(problems[:12])
