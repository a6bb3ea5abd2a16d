"""PyTorch's operator database (`op_db`) along the axes of its own test_ops.py that tests/test_opinfo.py does not
take: in-place variants (`x.add_(y)`), `out=`, non-contiguous samples and the reference inputs of the families
test_opinfo's second pass leaves out, and the consistency of an op's variants (function, method, in-place,
operator).

- In place: on a copy of each float64 sample (and a few int64 and bool ones), the in-place method must give
  PyTorch's values, return self (`is`) and bump self's version; where PyTorch refuses (a result dtype self can't
  hold, a broadcast that would resize self), chainrule raises PyTorch's error class. Gradients through the op
  applied to a non-leaf clone (`x.clone().op_()`) are compared with PyTorch's.
- out=: for the ops PyTorch lists with `supports_out`, an out of the result's shape and dtype receives the values
  and is returned; one of another shape is resized (with PyTorch's UserWarning when it held elements); one of a
  dtype the result can't be cast to, and one that requires grad, are refused with PyTorch's error class.
- Non-contiguous: each float64 sample again with every tensor a strided NumPy view (`from_numpy(a[..., 0])` of an
  array with a trailing dim of 2): the values and gradients of the contiguous sample.
- Variants: Tensor.<name>, the in-place method and the operator (`op.operator_variant`) give the function's
  (PyTorch's) values on the same samples.

test_opinfo's op lookup, SKIP table and conversion are reused. Disagreements not fixed yet are in the XFAIL
tables (strict). Needs torch and expecttest; skips cleanly without them (the torch-free checks of the fixes are in
tests/test_port30_opinfo_variants_fixes.py).
"""

import itertools
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")

import autograd  # noqa: E402
from tests.test_opinfo import (  # noqa: E402
    COMPARED,
    DETERMINISTIC_SAMPLES,
    NO_GRADIENT_CHECK,
    SKIP,
    _compare_gradients,
    _describe,
    _method,
    _ours_for,
    _reference_family,
    _unviewed,
    _variant,
)
from tests.test_opinfo import XFAIL as OPINFO_XFAIL  # noqa: E402
from tests.torch_samples import Unconvertible, compare_outputs, leaves  # noqa: E402
from tests.torch_samples import convert as _convert  # noqa: E402

pytestmark = pytest.mark.torch

SAMPLES = 4  # float64 samples per op and axis
INTEGER_SAMPLES = 2  # int64 / bool samples per op (in place: the refusals of a result self can't hold)


def _samples(op, dtype, grad, count=SAMPLES):
    keep = DETERMINISTIC_SAMPLES.get(op.name, lambda sample: True)
    return list(itertools.islice(filter(keep, op.sample_inputs_func(op, "cpu", dtype, grad)), count))


def _skip_reason(op):
    return SKIP.get(_variant(op)) or SKIP.get(op.name)


def _param(op, xfail):
    reason = xfail.get(_variant(op)) or xfail.get(op.name)
    marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
    return pytest.param(op, id=_variant(op), marks=marks)


def _detached(value):
    """A sample argument with every tensor detached and copied (the in-place and out= calls need no graph)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*map(_detached, value))
    if isinstance(value, (list, tuple)):
        return type(value)(map(_detached, value))
    if isinstance(value, dict):
        return {k: _detached(v) for k, v in value.items()}
    return value


def _error_matches(ours_error, theirs_error):
    """chainrule raised PyTorch's error class (or a subclass of it)."""
    return isinstance(ours_error, type(theirs_error))


# -- in place ---------------------------------------------------------------------------------------------------

def _inplace_name(op):
    return getattr(op.inplace_variant, "__name__", None) if op.inplace_variant is not None else None


def _ours_inplace(op):
    """chainrule's in-place variant: Tensor.<name>_, or for nn.functional ops the function with inplace=True (the
    OpInfo's in-place variant is such a lambda), or None."""
    if op.name.startswith("nn.functional."):
        function = _ours_for(op)
        return None if function is None else (lambda x, *args, **kwargs: function(x, *args, inplace=True, **kwargs))
    return _method(_inplace_name(op))


INPLACE_COMPARED = [op for op in COMPARED if _inplace_name(op) and not _skip_reason(op)]

# Disagreements not fixed here (strict: a fix makes the test fail until its entry goes).
INPLACE_XFAIL = {
    "addbmm": "PyTorch's addbmm_ resizes a self of shape (1,) to the (5, 10) result (a legacy of its out= kernel), "
              "a broadcast every other in-place op refuses; chainrule resizes it without grad but refuses on a "
              "recorded tensor (grad samples 1 and 3)",
}


def _inplace_problems(op, method, dtype, count):
    problems = []
    for n, sample in enumerate(_samples(op, dtype, False, count)):
        where = f"{dtype} sample {n}"
        sample_args = _detached([sample.input, *sample.args])
        sample_kwargs = _detached(sample.kwargs)
        memo = {}
        try:
            ours_args, ours_kwargs = _convert(sample_args, memo), _convert(sample_kwargs, memo)
        except Unconvertible:
            continue
        theirs_self = sample_args[0]
        if not isinstance(theirs_self, torch.Tensor):
            continue
        theirs_version = theirs_self._version
        try:
            op.inplace_variant(theirs_self, *sample_args[1:], **sample_kwargs)
            theirs_error = None
        except Exception as error:
            theirs_error = error
        self_ = ours_args[0]
        version = self_._version
        try:
            ours = method(self_, *ours_args[1:], **ours_kwargs)
        except Exception as error:
            if theirs_error is None:
                problems.append(f"{where}: raised {type(error).__name__}: {str(error)[:160]} "
                                f"(args {_describe(sample)})")
            elif not _error_matches(error, theirs_error):
                problems.append(f"{where}: raised {type(error).__name__} ({str(error)[:100]}), PyTorch "
                                f"{type(theirs_error).__name__} ({str(theirs_error)[:100]}) (args {_describe(sample)})")
            continue
        if theirs_error is not None:
            problems.append(f"{where}: no error, PyTorch {type(theirs_error).__name__} ({str(theirs_error)[:120]}) "
                            f"(args {_describe(sample)})")
            continue
        if ours is not self_:
            problems.append(f"{where}: the result is not self (args {_describe(sample)})")
        if (self_._version > version) != (theirs_self._version > theirs_version):  # (resize_ to its own shape: 0)
            problems.append(f"{where}: self's version {version} -> {self_._version}, PyTorch's {theirs_version} -> "
                            f"{theirs_self._version}")
        found = compare_outputs(self_, theirs_self, where)
        problems.extend(f"{p} (args {_describe(sample)})" for p in found)
    return problems


def _inplace_gradient_problems(op, method):
    """Gradients of (x.clone().op_(...) * w).sum(), as PyTorch's."""
    problems = []
    if not op.supports_autograd or op.name in NO_GRADIENT_CHECK:
        return problems
    for n, sample in enumerate(_samples(op, torch.float64, True)):
        where = f"grad sample {n}"
        if not isinstance(sample.input, torch.Tensor):
            continue
        try:
            theirs = op.inplace_variant(sample.input.clone(), *sample.args, **sample.kwargs)
        except Exception:
            continue
        memo = {}
        try:
            ours_args, ours_kwargs = _convert([sample.input, *sample.args], memo), _convert(sample.kwargs, memo)
        except Unconvertible:
            continue
        try:
            ours = method(ours_args[0].clone(), *ours_args[1:], **ours_kwargs)
        except Exception as error:
            problems.append(f"{where}: raised {type(error).__name__}: {str(error)[:160]} (args {_describe(sample)})")
            continue
        found = compare_outputs(ours, theirs, where) or _compare_gradients(
            ours, theirs, memo, leaves([sample.input, list(sample.args), sample.kwargs]), where)
        problems.extend(f"{p} (args {_describe(sample)})" for p in found)
    return problems


@pytest.mark.parametrize("op", [_param(op, INPLACE_XFAIL) for op in INPLACE_COMPARED])
def test_inplace_variant_agrees_with_pytorch(op):
    torch.manual_seed(0)
    method = _ours_inplace(op)
    assert method is not None, f"Tensor.{_inplace_name(op)} does not exist here"
    supported = op.supported_dtypes("cpu")
    problems = []
    for dtype, count in ((torch.float64, SAMPLES), (torch.int64, INTEGER_SAMPLES), (torch.bool, INTEGER_SAMPLES)):
        if dtype in supported:
            problems += _inplace_problems(op, method, dtype, count)
    if torch.float64 in supported:
        problems += _inplace_gradient_problems(op, method)
    assert not problems, f"{_variant(op)}: {len(problems)} disagreements\n" + "\n".join(problems[:12])


# -- out= -------------------------------------------------------------------------------------------------------

def _first_dtype(op):
    """float64, or the first of int64 and bool the op takes (bitwise ops, gcd), or None."""
    supported = op.supported_dtypes("cpu")
    return next((dtype for dtype in (torch.float64, torch.int64, torch.bool) if dtype in supported), None)


OUT_COMPARED = [op for op in COMPARED if op.supports_out and not _skip_reason(op) and _first_dtype(op)]

NO_DERIVATIVE = ("PyTorch has no derivative for it, so its out= writes into an out that requires grad (a leaf's "
                 "values changed behind autograd); chainrule's write_out refuses every out that requires grad")
# Cases (see _out_cases) not compared for an op, with the reason.
OUT_CASE_SKIP = {
    **{name: {"requires grad": NO_DERIVATIVE} for name in (
        "histc", "special.airy_ai", "special.bessel_j0", "special.bessel_j1", "special.bessel_y0",
        "special.bessel_y1", "special.modified_bessel_i0", "special.modified_bessel_i1", "special.modified_bessel_k0",
        "special.modified_bessel_k1", "special.scaled_modified_bessel_k0", "special.scaled_modified_bessel_k1",
        "special.spherical_bessel_j0", *(f"special.{kind}_polynomial_{letter}" for kind in (
            "chebyshev", "shifted_chebyshev") for letter in "tuvw"),
        "special.hermite_polynomial_h", "special.hermite_polynomial_he", "special.laguerre_polynomial_l",
        "special.legendre_polynomial_p")},
    **{name: {"integer dtype": "PyTorch casts the input to out's dtype first and finds no int64 nansum kernel "
                               "(NotImplementedError); chainrule refuses the float result's cast into int64, as the "
                               "other reductions do (RuntimeError)"} for name in ("nansum", "nanmean")},
}
# Ops whose resize warning is not compared.
OUT_WARNING_UNCHECKED = {
    **{name: "a vector times a matrix: PyTorch's out= path warns that an out of the right shape, (5,), was resized "
             "(it resizes it to (1, 5) and back); chainrule writes it as it is" for name in (
        "matmul", "nn.functional.linear")},
}
# Ops whose out= is not compared.
OUT_SKIP = {
    **{name: "PyTorch's out= result is wrong for a dim= (s=) that leaves dims out: ihfft2(x, dim=0, out=o) gives "
             "another shape and values than ihfft2(x, dim=0), which chainrule's matches" for name in (
        "fft.ihfft2", "fft.ihfftn")},
}

# Disagreements not fixed here (strict: a fix makes the test fail until its entry goes).
OUT_XFAIL = {
    "gather": "an empty uint8 index: PyTorch takes it (only with out=), chainrule refuses every index not int64 "
              "or int32",
    "tensordot": "PyTorch contracts a size-1 dim against a size-2 one (broadcasting); chainrule refuses "
                 "(test_opinfo's XFAIL too)",
}


def _like(value, library, shape=None, dtype=None, requires_grad=False):
    """An out argument of ``library`` (torch or autograd) shaped as the result ``value`` (a tensor, or a tuple of
    them), with another shape or dtype where asked."""
    if isinstance(value, (tuple, list)):
        return tuple(_like(v, library, shape, dtype, requires_grad) for v in value)
    dtype = dtype or (value.dtype if library is torch else convert_dtype(value.dtype))
    return library.zeros(shape if shape is not None else tuple(value.shape), dtype=dtype, requires_grad=requires_grad)


def convert_dtype(dtype):
    return getattr(autograd, str(dtype).split(".")[1])


def _call_out(function, args, kwargs, out):
    """(result, error, warned) of function(*args, out=out, **kwargs)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result, error = function(*args, out=out, **kwargs), None
        except Exception as exception:
            result, error = None, exception
    warned = any(issubclass(w.category, UserWarning) and "resized" in str(w.message) for w in caught)
    return result, error, warned


def _out_cases(theirs):
    """(name, shape, dtype, requires_grad) of each out= tried for a result of a single tensor `theirs`."""
    cases = [("right", None, None, False)]
    cases.append(("wrong shape", (theirs.numel() + 1,), None, False))
    cases.append(("empty", (0,), None, False))
    if theirs.dtype.is_floating_point:
        cases.append(("integer dtype", None, torch.int64, False))
        cases.append(("requires grad", None, None, True))
    elif theirs.dtype != torch.bool:
        cases.append(("bool dtype", None, torch.bool, False))
    return cases


def _same_outcome(where, ours, theirs):
    """Problems where the outcomes (result, error, warned) of the two calls differ."""
    (ours_result, ours_error, ours_warned), (theirs_result, theirs_error, theirs_warned) = ours, theirs
    if theirs_error is not None:
        if ours_error is None:
            return [f"{where}: no error, PyTorch {type(theirs_error).__name__} ({str(theirs_error)[:100]})"]
        if not _error_matches(ours_error, theirs_error):
            return [f"{where}: raised {type(ours_error).__name__} ({str(ours_error)[:100]}), PyTorch "
                    f"{type(theirs_error).__name__} ({str(theirs_error)[:100]})"]
        return []
    if ours_error is not None:
        return [f"{where}: raised {type(ours_error).__name__}: {str(ours_error)[:160]}"]
    problems = compare_outputs(ours_result, theirs_result, where)
    if ours_warned != theirs_warned:
        problems.append(f"{where}: {'a' if ours_warned else 'no'} resize warning, PyTorch "
                        f"{'one' if theirs_warned else 'none'}")
    return problems


@pytest.mark.parametrize("op", [_param(op, OUT_XFAIL) for op in OUT_COMPARED])
def test_out_agrees_with_pytorch(op):
    """PyTorch's test_out and test_out_warning: the result written into out, out returned; resized (warning when it
    held elements); refused when the result can't be cast to its dtype or it requires grad."""
    if _variant(op) in OUT_SKIP:
        pytest.skip(OUT_SKIP[_variant(op)])
    torch.manual_seed(0)
    function = _ours_for(op)
    skipped_cases = OUT_CASE_SKIP.get(_variant(op), {})
    problems = []
    for n, sample in enumerate(_samples(op, _first_dtype(op), False)):
        sample_args, sample_kwargs = _detached([sample.input, *sample.args]), _detached(sample.kwargs)
        try:
            theirs = op.op(*sample_args, **sample_kwargs)
        except Exception:
            continue
        if not isinstance(theirs, torch.Tensor):
            continue  # ((values, indices) ops: their out= pairs are tested in test_ops_*.py)
        memo = {}
        try:
            ours_args, ours_kwargs = _convert(sample_args, memo), _convert(sample_kwargs, memo)
        except Unconvertible:
            continue
        for case, shape, dtype, requires_grad in _out_cases(theirs):
            if case in skipped_cases:
                continue
            where = f"sample {n}, out {case}"
            theirs_out = _like(theirs, torch, shape, dtype, requires_grad)
            ours_out = _like(theirs, autograd, shape, dtype and convert_dtype(dtype), requires_grad)
            theirs_call = _call_out(op.op, sample_args, sample_kwargs, theirs_out)
            ours_call = _call_out(function, ours_args, ours_kwargs, ours_out)
            if _variant(op) in OUT_WARNING_UNCHECKED:
                ours_call = (*ours_call[:2], theirs_call[2])
            found = _same_outcome(where, ours_call, theirs_call)
            if not found and theirs_call[1] is None and ours_call[0] is not ours_out:
                found = [f"{where}: the result is not out"]
            if not found and theirs_call[1] is None:
                found = compare_outputs(ours_out, theirs_out, where + " (out itself)")
            problems.extend(f"{p} (args {_describe(sample)})" for p in found)
            if isinstance(ours_call[1], TypeError) and "out" in str(ours_call[1]):
                break  # (out= refused: the other cases say the same)
    assert not problems, f"{_variant(op)}: {len(problems)} disagreements\n" + "\n".join(problems[:12])


# -- non-contiguous samples and the other families' reference inputs --------------------------------------------

def _strided_convert(value, memo):
    """convert, with every float64 tensor of at least one element a non-contiguous leaf: a NumPy view of every
    other element of a larger array (`from_numpy(a[..., 0])` where a has a trailing dim of 2, filled with NaN
    elsewhere so that a read past the view shows)."""
    if isinstance(value, torch.Tensor) and id(value) not in memo and value.numel() and value.ndim \
            and value.dtype == torch.float64:
        array = np.full((*value.shape, 2), np.nan)
        array[..., 0] = value.detach().numpy()
        memo[id(value)] = autograd.from_numpy(array[..., 0]).requires_grad_(value.requires_grad)
        return memo[id(value)]
    if isinstance(value, (list, tuple)) and not (isinstance(value, tuple) and hasattr(value, "_fields")):
        return type(value)(_strided_convert(v, memo) for v in value)
    if isinstance(value, dict):
        return {k: _strided_convert(v, memo) for k, v in value.items()}
    return _convert(value, memo)


def _sample_problems(op, ours, sample, where, grad, convert=_convert):
    """Values (and gradients, with ``grad``) of one sample, as test_opinfo compares them."""
    try:
        theirs = op.op(sample.input, *sample.args, **sample.kwargs)
        memo = {}
        ours_args, ours_kwargs = convert([sample.input, *sample.args], memo), convert(sample.kwargs, memo)
    except Exception:  # (PyTorch refuses it, or an argument has no counterpart here)
        return None
    try:
        ours_out = ours(*ours_args, **ours_kwargs)
    except Exception as error:
        return [f"{where}: raised {type(error).__name__}: {str(error)[:200]} (args {_describe(sample)})"]
    found = compare_outputs(ours_out, theirs, where)
    if not found and grad:
        found = _compare_gradients(ours_out, theirs, memo, leaves([sample.input, list(sample.args), sample.kwargs]),
                                   where)
    return [f"{p} (args {_describe(sample)})" for p in found]


NONCONTIGUOUS_COMPARED = [op for op in COMPARED if not _skip_reason(op) and torch.float64 in op.supported_dtypes("cpu")]

NONCONTIGUOUS_SKIP = {
    "as_strided_copy": "reads the storage behind its input: PyTorch's non-contiguous sample and the strided NumPy "
                       "array hold different values between the elements (test_opinfo skips as_strided alike)",
}

# Disagreements not fixed here (strict: a fix makes the test fail until its entry goes): test_opinfo's, on the
# same samples made non-contiguous.
NONCONTIGUOUS_XFAIL = {name: OPINFO_XFAIL[name] for name in (
    "gather", "nn.functional.batch_norm", "histogramdd", "tensordot")}


@pytest.mark.parametrize("op", [_param(op, NONCONTIGUOUS_XFAIL) for op in NONCONTIGUOUS_COMPARED])
def test_noncontiguous_samples_agree_with_pytorch(op):
    """PyTorch's test_noncontiguous_samples: each float64 sample with its tensors non-contiguous here gives the
    contiguous sample's values and gradients (PyTorch's, on the same sample made non-contiguous with
    `sample.noncontiguous()`)."""
    if _variant(op) in NONCONTIGUOUS_SKIP:
        pytest.skip(NONCONTIGUOUS_SKIP[_variant(op)])
    torch.manual_seed(0)
    ours = _ours_for(op)
    grad = op.supports_autograd and op.name not in NO_GRADIENT_CHECK
    problems = []
    for n, sample in enumerate(_samples(op, torch.float64, grad)):
        found = _sample_problems(op, ours, sample.noncontiguous(), f"non-contiguous sample {n}", grad,
                                 _strided_convert)
        problems += found or []
    assert not problems, f"{_variant(op)}: {len(problems)} disagreements\n" + "\n".join(problems[:12])


REFERENCE_SAMPLES = 3
REFERENCE_MAX_ELEMENTS = 4096
REFERENCE_OTHERS = [op for op in NONCONTIGUOUS_COMPARED if op.reference_inputs_func is not None
                    and not _reference_family(op)]

# Values compared, gradients not.
REFERENCE_NO_GRADIENT_CHECK = {
    "index_copy": "repeated indices: the last source slice written wins, in both libraries; PyTorch's gradient "
                  "still gives every source slice the output's gradient, chainrule's only the one that was kept "
                  "(the derivative of what the op computes)",
}

# Disagreements not fixed here (strict: a fix makes the test fail until its entry goes).
REFERENCE_XFAIL = {}


@pytest.mark.parametrize("op", [_param(op, REFERENCE_XFAIL) for op in REFERENCE_OTHERS])
def test_reference_inputs_of_other_families_agree_with_pytorch(op):
    """The first few float64 reference inputs (of at most 4096 elements) of the ops test_opinfo's second pass
    leaves out (shape ops, linear algebra, indexing, most of nn.functional): values and gradients."""
    torch.manual_seed(0)
    ours = _ours_for(op)
    grad = op.supports_autograd and op.name not in NO_GRADIENT_CHECK and _variant(op) not in REFERENCE_NO_GRADIENT_CHECK
    problems, compared = [], 0
    for n, sample in enumerate(op.reference_inputs_func(op, "cpu", torch.float64, grad)):
        tensors = [t for t in leaves([sample.input, list(sample.args), sample.kwargs]) if isinstance(t, torch.Tensor)]
        if sum(t.numel() for t in tensors) > REFERENCE_MAX_ELEMENTS:
            continue
        keep = DETERMINISTIC_SAMPLES.get(op.name, lambda sample: True)
        if not keep(sample):
            continue
        finite = all(torch.isfinite(t).all() for t in tensors if t.dtype.is_floating_point)
        found = _sample_problems(op, ours, _unviewed(sample), f"reference sample {n}", grad and finite)
        if found is None:
            continue
        problems += found
        compared += 1
        if compared == REFERENCE_SAMPLES:
            break
    assert not problems, f"{_variant(op)}: {len(problems)} disagreements\n" + "\n".join(problems[:12])


# -- variant consistency ----------------------------------------------------------------------------------------

def _variants(op):
    """(label, chainrule callable, PyTorch callable) for each variant beside the function that both libraries
    have: Tensor.<name>, the in-place method (on a copy of self) and the operator (`operator.add`, ...)."""
    found = []
    name = getattr(op.method_variant, "__name__", None)
    if name and _method(name) is not None:
        found.append(("method", _method(name), op.method_variant))
    ours_inplace = _ours_inplace(op) if _inplace_name(op) else None
    if ours_inplace is not None:
        found.append(("in place", lambda x, *args, **kwargs: ours_inplace(x.clone(), *args, **kwargs),
                      lambda x, *args, **kwargs: op.inplace_variant(x.clone(), *args, **kwargs)))
    if op.operator_variant is not None:
        found.append(("operator", op.operator_variant, op.operator_variant))
    return found


VARIANTS_COMPARED = [op for op in COMPARED if not _skip_reason(op) and _first_dtype(op) and _variants(op)]

# Disagreements not fixed here (strict: a fix makes the test fail until its entry goes).
VARIANTS_XFAIL = {
    "addbmm": INPLACE_XFAIL["addbmm"],
}


@pytest.mark.parametrize("op", [_param(op, VARIANTS_XFAIL) for op in VARIANTS_COMPARED])
def test_variants_agree_with_pytorch(op):
    """PyTorch's test_variant_consistency_eager: every variant here gives what PyTorch's same variant gives (and
    so, where PyTorch's variants agree, what the function gives), values and gradients, or raises its error class
    where PyTorch's raises."""
    torch.manual_seed(0)
    dtype = _first_dtype(op)
    grad = op.supports_autograd and dtype.is_floating_point and op.name not in NO_GRADIENT_CHECK
    problems = []
    for label, ours, theirs in _variants(op):
        for n, sample in enumerate(_samples(op, dtype, grad, 3)):
            where = f"{label} sample {n}"
            memo = {}
            try:
                ours_args, ours_kwargs = _convert([sample.input, *sample.args], memo), _convert(sample.kwargs, memo)
            except Unconvertible:
                continue
            try:
                theirs_out, theirs_error = theirs(sample.input, *sample.args, **sample.kwargs), None
            except Exception as error:
                theirs_out, theirs_error = None, error
            try:
                ours_out, ours_error = ours(*ours_args, **ours_kwargs), None
            except Exception as error:
                ours_out, ours_error = None, error
            if theirs_error is not None or ours_error is not None:
                if theirs_error is None or ours_error is None or not _error_matches(ours_error, theirs_error):
                    problems.append(f"{where}: {type(ours_error).__name__} ({str(ours_error)[:100]}), PyTorch "
                                    f"{type(theirs_error).__name__} ({str(theirs_error)[:100]}) "
                                    f"(args {_describe(sample)})")
                continue
            found = compare_outputs(ours_out, theirs_out, where)
            if not found and grad:
                found = _compare_gradients(ours_out, theirs_out, memo,
                                           leaves([sample.input, list(sample.args), sample.kwargs]), where)
            problems.extend(f"{p} (args {_describe(sample)})" for p in found)
    assert not problems, f"{_variant(op)}: {len(problems)} disagreements\n" + "\n".join(problems[:12])
