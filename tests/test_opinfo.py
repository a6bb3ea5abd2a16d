"""chainrule against PyTorch's own operator database (`op_db`, the OpInfo entries PyTorch tests itself with).

For every OpInfo whose op exists here (`autograd.<name>`, a Tensor method or property, `nn.functional.<name>`,
`autograd.linalg/special/fft.<name>`), its float64 CPU samples (float32 for a few, integer or bool where the op
takes no floats) run through both libraries: values, dtypes and shapes must agree, and so must the gradients
of `(out * w).sum()` for fixed random weights `w` with respect to every floating input that requires grad.
Each `error_inputs` case must raise an instance of PyTorch's error class here too.

A second pass runs PyTorch's larger `reference_inputs` (inf/NaN values, non-contiguous and expanded inputs) for
the elementwise ops, reductions and the common nn.functional ops, a few samples each.

Known, deliberate differences are in SKIP (with the reason); disagreements not fixed yet are in XFAIL
(strict, so a fix shows up as a failure to remove the entry). Needs torch and expecttest (a test-only
dependency of `torch.testing._internal`); skips cleanly without them.
"""

import itertools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")

import autograd  # noqa: E402
import autograd.fft  # noqa: E402
import autograd.linalg  # noqa: E402
import autograd.special  # noqa: E402
import nn.functional  # noqa: E402
from tests.torch_samples import TORCH_TO_NUMPY_DTYPE, Unconvertible  # noqa: E402
from tests.torch_samples import compare_outputs as _compare_outputs  # noqa: E402
from tests.torch_samples import convert as _convert  # noqa: E402
from tests.torch_samples import leaves as _leaves  # noqa: E402

try:
    from torch.testing._internal.common_methods_invocations import op_db
except Exception as error:  # a torch build without its test internals
    pytest.skip(f"torch.testing._internal is not usable: {error}", allow_module_level=True)

pytestmark = pytest.mark.torch

MAX_SAMPLES = 8
INTEGER_SAMPLES = 3
FLOAT32_SAMPLES = 2
METHOD_SAMPLES = 3
FLOAT32_TOO = {"sum", "mean", "softmax", "log_softmax", "matmul", "exp", "cumsum", "var", "nn.functional.linear"}

RANDOM = "random: a different generator, so different draws"
DECOMPOSITION = "a decomposition is unique only up to signs/phases; tested in test_linalg_* / test_ops_svd"

# Ops whose comparison is meaningless or whose difference is deliberate (see README "Deliberate differences").
SKIP = {
    **{name: RANDOM for name in (
        "bernoulli", "cauchy", "exponential", "geometric", "log_normal", "normal", "uniform", "multinomial",
        "randn", "randn_like", "rand_like", "randint", "randint_like", "svd_lowrank", "pca_lowrank",
        "nn.functional.dropout", "nn.functional.dropout2d", "nn.functional.dropout3d",
        "nn.functional.alpha_dropout", "nn.functional.feature_alpha_dropout", "nn.functional.rrelu",
        "nn.functional.fractional_max_pool2d", "nn.functional.fractional_max_pool3d")},
    **{name: "uninitialised memory: values are arbitrary" for name in (
        "empty", "empty_like", "new_empty", "new_empty_strided", "empty_strided", "empty_permuted")},
    **{name: "reads the storage behind a view: the samples' inputs are views into larger storage, which "
             "the NumPy copy handed to chainrule does not have" for name in (
        "as_strided", "as_strided.partial_views", "as_strided_scatter")},
    **{name: "PyTorch's values are off by up to 3e-7 here; chainrule's agree with mpmath to 1e-16" for name in (
        "special.bessel_j0", "special.bessel_y1")},
    **{name: "options=LinearCrossEntropyOptions(...): PyTorch's chunked path, not built here (README); the "
             "reference path, options=None, is compared" for name in (
        "nn.functional.linear_cross_entropy.chunked", "nn.functional.linear_cross_entropy.chunked_none")},
    "bfloat16": "x.bfloat16(): NumPy has no bfloat16, so it is refused in words that say so (README: not built)",
    "to_sparse": "a sparse COO tensor is a class of its own here (SparseTensor), not a Tensor with a layout: its "
                 "values, indices and gradients are compared in test_ported_sparse.py and test_sparse*.py",
    **{name: DECOMPOSITION for name in (
        "linalg.eig", "linalg.eigh", "linalg.eigvals", "linalg.svd", "svd", "linalg.qr", "qr",
        "linalg.householder_product", "geqrf")},
}

# Disagreements not fixed here (strict: a fix makes the test fail until its entry goes).
XFAIL = {
    "gather": "PyTorch skips the same-ndim check for an empty index ((2, 0) into (5,)); exotic",
    "nn.functional.batch_norm": "a 1-D input of shape (0,) (no channel dim) is taken by PyTorch; exotic",
    "narrow_copy": "PyTorch raises RuntimeError (an internal assert) for a dim out of range, where narrow and "
                   "every other op raise IndexError, as chainrule does",
    "histogramdd": "bins that decrease: PyTorch counts nothing, NumPy's histogramdd (used here) refuses them",
    "tensordot": "PyTorch contracts a size-1 dim against a size-2 one (broadcasting); chainrule refuses",
}
XFAIL_EVERY_VARIANT = {}  # keyed by OpInfo name: all its variants

# Values are compared, gradients not.
NO_GRADIENT_CHECK = {
    "nn.functional.ctc_loss": "README: the gradient with respect to log_probs is the exact derivative; PyTorch's "
                              "is right only behind a log_softmax, and the samples' log_probs are raw",
}

FLOAT32_NO_GRADIENT_CHECK = {
    "logcumsumexp": "inputs up to 1e4 make the float32 gradient ill-conditioned: PyTorch's and chainrule's are "
                    "both about 3e-3 from the float64 answer, in different directions",
}

# Ops returning (values, indices) where PyTorch does not say which of tied elements' index it gives: for
# integer and bool samples (ties) only the values are compared; argsort's indices are compared through the
# values they pick.
TIED_INDICES = {"topk", "kthvalue", "sort"}

# Samples that draw random numbers (dropout) are left out of otherwise deterministic ops.
DETERMINISTIC_SAMPLES = {
    "nn.functional.scaled_dot_product_attention": lambda sample: not sample.kwargs.get("dropout_p"),
    "nn.functional.multi_head_attention_forward": lambda sample: not sample.kwargs.get("training", True)
    or not sample.args[9],
}


def _torch_rejects_python_number(error):
    """PyTorch's argument parser wants a Tensor where a Python number was given (`torch.eq(2, t)`); chainrule
    takes the number, as NumPy does. A leniency, not a wrong answer, so such error inputs are not checked."""
    return isinstance(error, TypeError) and any(text in str(error) for text in (
        "invalid combination of arguments", "must be Tensor, not", "descriptor"))


def _variant(op):
    return f"{op.name}.{op.variant_test_name}" if op.variant_test_name else op.name


def _attr_path(root, dotted):
    for part in dotted.split("."):
        root = getattr(root, part, None)
        if root is None:
            return None
    return root


def _method(name):
    """A caller of Tensor.<name> (a property such as `T` is read, not called), or None."""
    attribute = getattr(autograd.Tensor, name, None)
    if attribute is None:
        return None
    if isinstance(attribute, property):
        return lambda x: getattr(x, name)
    return lambda x, *args, **kwargs: getattr(x, name)(*args, **kwargs)


def _ours_for(op):
    """The chainrule callable that mirrors `op.op` (same argument order), or None where there is none."""
    name = op.name
    if name in ("where",):
        return lambda x, condition, other, **kw: autograd.where(condition, x, other, **kw)
    if name == "einsum":
        return lambda tensors, equation: autograd.einsum(equation, tensors)
    if name in ("polygamma", "special.polygamma"):
        fn = _attr_path(autograd, name)
        return None if fn is None else (lambda x, n, **kw: fn(n, x, **kw))
    if name in ("nn.functional.embedding", "nn.functional.embedding_bag"):
        fn = _attr_path(nn, name[3:])
        return None if fn is None else (lambda weight, idx, **kw: fn(idx, weight, **kw))
    if name == "linalg.lstsq" and op.variant_test_name == "grad_oriented":
        return lambda a, b, driver: autograd.linalg.lstsq(a, b, driver=driver)[:2]
    if name == "linalg.pinv" and op.variant_test_name == "singular":
        return lambda a, b: autograd.linalg.pinv(a @ b.mT)
    if name in ("resize_", "zero_"):
        method = _method(name)
        return None if method is None else (lambda x, *args: method(x.clone(), *args))
    if name == "resize_as_":
        return lambda x, other: x.clone().resize_as_(other)
    if name.startswith("nn.functional."):
        return _attr_path(nn, name[3:])
    if name.split(".")[0] in ("linalg", "special", "fft"):
        return _attr_path(autograd, name)
    if getattr(op.op, "__name__", "") != "<lambda>" and not name.startswith("__"):
        fn = getattr(autograd, name, None)
        if callable(fn) and not isinstance(fn, type):
            return fn
    return _method(name)


def _weights(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


def _floating_tensors(outputs, library_tensor):
    return [t for t in _leaves(outputs) if isinstance(t, library_tensor) and t.dtype.is_floating_point] \
        if library_tensor is torch.Tensor else \
        [t for t in _leaves(outputs) if isinstance(t, library_tensor) and np.issubdtype(t.dtype, np.floating)]


def _compare_gradients(ours_out, theirs_out, memo, theirs_inputs, where):
    theirs_float = [t for t in _floating_tensors(theirs_out, torch.Tensor) if t.requires_grad]
    ours_float = _floating_tensors(ours_out, autograd.Tensor)
    if not theirs_float:
        return []
    leaves = [t for t in theirs_inputs if isinstance(t, torch.Tensor) and t.requires_grad
              and t.dtype.is_floating_point]
    leaves = list({id(t): t for t in leaves}.values())
    if not leaves:
        return []
    if len(ours_float) != len(_floating_tensors(theirs_out, torch.Tensor)):
        return [f"{where}: floating outputs differ in number"]
    ours_by_position = dict(zip(map(id, _floating_tensors(theirs_out, torch.Tensor)), ours_float))
    theirs_loss, ours_loss = 0, 0
    for k, t in enumerate(theirs_float):
        w = _weights(tuple(t.shape), k)
        theirs_loss = theirs_loss + (t * torch.tensor(w, dtype=t.dtype)).sum()
        o = ours_by_position[id(t)]
        if o.requires_grad:  # (one that does not, an empty residual or slogdet's sign, adds 0 to every
            ours_loss = ours_loss + (o * autograd.tensor(w.astype(o.dtype))).sum()  # gradient: compared below)
    try:
        theirs_grads = torch.autograd.grad(theirs_loss, leaves, allow_unused=True)
    except RuntimeError as error:  # PyTorch has no derivative for it ("not implemented")
        return [] if "not implemented" in str(error) else [f"{where}: PyTorch's backward raised {error}"]
    ours_leaves = [memo[id(t)] for t in leaves]
    try:
        ours_grads = autograd.grad(ours_loss, ours_leaves, allow_unused=True) \
            if isinstance(ours_loss, autograd.Tensor) else [None] * len(ours_leaves)
    except Exception as error:
        return [f"{where}: backward raised {type(error).__name__}: {error}"]
    problems = []
    for i, (a, b) in enumerate(zip(ours_grads, theirs_grads)):
        # (a gradient has its input's dtype: PyTorch's p=0 norm of float32 gives a float64 one, its slip)
        dtype = TORCH_TO_NUMPY_DTYPE[leaves[i].dtype]
        want = np.zeros(tuple(leaves[i].shape), dtype) if b is None else b.numpy(force=True).astype(dtype)
        got = np.zeros(tuple(leaves[i].shape)) if a is None else a.numpy()
        if got.shape != want.shape:
            problems.append(f"{where} grad[{i}]: shape {got.shape}, PyTorch {want.shape}")
        elif a is not None and np.dtype(a.dtype) != want.dtype:
            problems.append(f"{where} grad[{i}]: dtype {a.dtype}, the input's {want.dtype}")
        elif not np.allclose(got, want, rtol=1e-6 if want.dtype == np.float64 else 1e-4,
                             atol=1e-8 if want.dtype == np.float64 else 1e-5, equal_nan=True):
            problems.append(f"{where} grad[{i}]: max |diff| {np.nanmax(np.abs(got - want), initial=0)}")
    return problems


def _dtypes_for(op):
    """(dtype, number of samples): float64 (or the first of int64, bool the op takes), float32 for a few
    ops, and a few int64 samples where the op also takes floats (type promotion)."""
    supported = op.supported_dtypes("cpu")
    first = next((dtype for dtype in (torch.float64, torch.int64, torch.bool) if dtype in supported), None)
    if first is None:
        return []
    chosen = [(first, MAX_SAMPLES)]
    if torch.float32 in supported:
        chosen.append((torch.float32, MAX_SAMPLES if op.name in FLOAT32_TOO else FLOAT32_SAMPLES))
    if first != torch.bool and torch.bool in supported:
        chosen.append((torch.bool, INTEGER_SAMPLES))
    if first == torch.float64 and torch.int64 in supported:
        chosen.append((torch.int64, INTEGER_SAMPLES))
    return chosen


def _run_samples(op, ours, dtype, count, counts, theirs_fn=None, label=""):
    problems = []
    grad = op.supports_autograd and dtype.is_floating_point and op.name not in NO_GRADIENT_CHECK \
        and not (dtype == torch.float32 and op.name in FLOAT32_NO_GRADIENT_CHECK)
    # (the generator itself: op.sample_inputs wraps it in a tracker that walks the call stack per item)
    samples = op.sample_inputs_func(op, "cpu", dtype, grad)
    keep = DETERMINISTIC_SAMPLES.get(op.name, lambda sample: True)
    for n, sample in enumerate(itertools.islice(filter(keep, samples), count)):
        where = f"{label}{dtype} sample {n}"
        try:
            theirs = (theirs_fn or op.op)(sample.input, *sample.args, **sample.kwargs)
        except Exception:
            continue
        memo = {}
        try:
            ours_args = _convert([sample.input, *sample.args], memo)
            ours_kwargs = _convert(sample.kwargs, memo)
        except Unconvertible:
            continue
        counts["samples"] += 1
        try:
            ours_out = ours(*ours_args, **ours_kwargs)
        except Exception as error:
            problems.append(f"{where}: raised {type(error).__name__}: {str(error)[:200]} "
                            f"(args {_describe(sample)})")
            continue
        if op.name in TIED_INDICES and not dtype.is_floating_point:  # (small integers tie: values only)
            ours_out, theirs = ours_out[0], theirs[0]
        if op.name == "argsort" and not dtype.is_floating_point and isinstance(ours_out, autograd.Tensor):
            dim = sample.kwargs.get("dim", sample.args[0] if sample.args else -1)
            theirs = torch.take_along_dim(sample.input, theirs, dim)
            ours_out = autograd.tensor(np.take_along_axis(ours_args[0].numpy(), ours_out.numpy(),
                                                          dim if ours_args[0].ndim else None))
        found = _compare_outputs(ours_out, theirs, where)
        if not found and grad:
            found = _compare_gradients(ours_out, theirs, memo,
                                       _leaves([sample.input, list(sample.args), sample.kwargs]), where)
        problems.extend(f"{p} (args {_describe(sample)})" for p in found)
    return problems


def _describe(sample):
    def short(v):
        if isinstance(v, torch.Tensor):
            return f"T{tuple(v.shape)}:{str(v.dtype)[6:]}"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(short(x) for x in v) + "]"
        return repr(v)
    return ", ".join([short(sample.input), *map(short, sample.args),
                      *(f"{k}={short(v)}" for k, v in sample.kwargs.items())])


def _run_errors(op, ours):
    problems = []
    try:
        cases = [] if op.error_inputs_func is None else list(itertools.islice(op.error_inputs_func(op, "cpu"),
                                                                               MAX_SAMPLES))
    except Exception:
        return problems
    for n, case in enumerate(cases):
        sample = case.sample_input
        if "out" in sample.kwargs:
            continue  # out= is not checked: chainrule writes the result into out without PyTorch's aliasing rules
        try:
            op.op(sample.input, *sample.args, **sample.kwargs)
            continue  # PyTorch's own op accepts it (the case is for its Python reference only)
        except Exception as error:
            if _torch_rejects_python_number(error):
                continue
        memo = {}
        try:
            ours_args = _convert([sample.input, *sample.args], memo)
            ours_kwargs = _convert(sample.kwargs, memo)
        except Unconvertible:
            continue
        try:
            ours(*ours_args, **ours_kwargs)
        except case.error_type:
            continue
        except Exception as error:
            problems.append(f"error input {n}: raised {type(error).__name__} ({str(error)[:120]}), PyTorch "
                            f"{case.error_type.__name__} /{case.error_regex}/ (args {_describe(sample)})")
            continue
        problems.append(f"error input {n}: no error, PyTorch {case.error_type.__name__} "
                        f"/{case.error_regex}/ (args {_describe(sample)})")
    return problems


def _method_variant(op, ours):
    """Tensor.<name> where the function was compared and PyTorch has the method too, else None."""
    name = getattr(op.method_variant, "__name__", None)
    if op.method_variant is None or name is None or getattr(op.op, "__name__", "") == "<lambda>":
        return None
    method = _method(name)
    same = getattr(ours, "__wrapped__", ours) is getattr(autograd.Tensor, name, None)  # (autograd.<name> may wrap
    return None if method is None or same else method  # the method: it refuses NumPy arrays given as input)


COMPARED = [op for op in op_db if _ours_for(op) is not None]


def _param(op):
    variant = _variant(op)
    marks = []
    reason = XFAIL.get(variant) or XFAIL_EVERY_VARIANT.get(op.name)
    if reason:
        marks.append(pytest.mark.xfail(reason=reason, strict=True))
    return pytest.param(op, id=variant, marks=marks)


@pytest.mark.parametrize("op", [_param(op) for op in COMPARED])
def test_op_agrees_with_pytorch(op):
    reason = SKIP.get(_variant(op)) or SKIP.get(op.name)  # (a skip covers every variant of the op)
    if reason:
        pytest.skip(reason)
    torch.manual_seed(0)  # the samples' values are drawn from PyTorch's generator: the same every run
    ours = _ours_for(op)
    counts = {"samples": 0}
    problems = []
    for dtype, count in _dtypes_for(op):
        problems += _run_samples(op, ours, dtype, count, counts)
    method = _method_variant(op, ours)
    if method is not None:
        dtype = _dtypes_for(op)[0][0]
        problems += _run_samples(op, method, dtype, METHOD_SAMPLES, counts, op.method_variant, "method: ")
    problems += _run_errors(op, ours)
    assert not problems, f"{_variant(op)}: {len(problems)} disagreements\n" + "\n".join(problems[:12])


# -- reference_inputs: PyTorch's larger sample sets (extremal values, non-contiguous, expanded inputs) -----------

REFERENCE_SAMPLES = 2  # per op and kind: the first few that hold inf/NaN, and that are non-contiguous or expanded
REFERENCE_MAX_ELEMENTS = 4096  # (the 1024 x 1024 ones test PyTorch's kernels, not an autodiff rule)
REFERENCE_NN = {"softmax", "log_softmax", "nn.functional.cross_entropy", "nn.functional.mse_loss",
                "nn.functional.linear", "nn.functional.relu", "nn.functional.gelu", "nn.functional.layer_norm"}


def _reference_family(op):
    from torch.testing._internal.opinfo.core import BinaryUfuncInfo, ReductionOpInfo, UnaryUfuncInfo

    return isinstance(op, (UnaryUfuncInfo, BinaryUfuncInfo, ReductionOpInfo)) or op.name in REFERENCE_NN


def _sample_tensors(sample):
    return [t for t in _leaves([sample.input, list(sample.args), sample.kwargs]) if isinstance(t, torch.Tensor)]


def _unviewed(sample):
    """The sample with each leaf that is a view replaced by a contiguous copy. PyTorch's reference inputs make
    non-contiguous and expanded (stride-0) leaves as views of another tensor; torch.autograd.grad gives None for
    such a leaf (its uses are routed to the base), which would read as a zero gradient. chainrule gets a
    materialised NumPy copy either way, so the copy loses nothing this comparison can see."""
    copies = {}

    def fix(value):
        if isinstance(value, torch.Tensor):
            if value.is_leaf and value.requires_grad and value._base is not None:
                copies.setdefault(id(value), value.detach().clone().requires_grad_())
                return copies[id(value)]
            return value
        if isinstance(value, (list, tuple)) and not hasattr(value, "_fields"):
            return type(value)(fix(v) for v in value)
        if isinstance(value, dict):
            return {k: fix(v) for k, v in value.items()}
        return value

    sample.input, sample.args, sample.kwargs = fix(sample.input), fix(sample.args), fix(sample.kwargs)
    return sample


def _finite(tensors):
    return all(torch.isfinite(t).all() for t in tensors if t.dtype.is_floating_point)


def _kind(sample):
    """'extremal' (inf or NaN in an input), 'strided' (a non-contiguous or expanded input) or None."""
    tensors = _sample_tensors(sample)
    if not tensors or sum(t.numel() for t in tensors) > REFERENCE_MAX_ELEMENTS:
        return None
    if not _finite(tensors):
        return "extremal"
    return "strided" if any(not t.is_contiguous() or 0 in t.stride() for t in tensors) else None


# Reference-input disagreements where chainrule is right or the point is undefined (values checked by hand).
REFERENCE_SKIP = {
    **{f"polygamma.polygamma_n_{n}": "polygamma(4, ±inf): PyTorch gives NaN at +inf (the limit is 0, chainrule's) "
                                      "and -inf at -inf (a pole at every negative integer: NaN here)"
       for n in range(5)},
    "half": "PyTorch rounds float64 to float16 through float32 (twice): -4.4707031530538 becomes -4.46875; "
            "chainrule rounds once, to the nearest float16, -4.47265625",
    "special.airy_ai": "PyTorch's values are off by up to 2e-6 near x = -2.4; chainrule's agree with mpmath",
    "special.bessel_j1": "PyTorch's values are off by up to 5e-7 near |x| = 5; chainrule's agree with mpmath",
}

# Ops whose inf/NaN samples are not compared (their non-contiguous and expanded ones are).
REFERENCE_SKIP_EXTREMAL = {
    **{name: "a NaN input: PyTorch gives a number for some (igamma(inf, NaN) = 0, igamma(NaN, inf) = 1), "
             "chainrule propagates the NaN" for name in ("igamma", "igammac")},
    "special.zeta": "zeta(NaN, -inf): PyTorch gives inf, chainrule propagates the NaN",
}

REFERENCE_COMPARED = [op for op in COMPARED if _reference_family(op) and not SKIP.get(_variant(op))
                      and not SKIP.get(op.name) and torch.float64 in op.supported_dtypes("cpu")]


@pytest.mark.parametrize("op", [pytest.param(op, id=_variant(op)) for op in REFERENCE_COMPARED])
def test_op_agrees_with_pytorch_on_reference_inputs(op):
    """Values everywhere; gradients where every input is finite (at inf and NaN the derivative is undefined and
    the libraries differ: PyTorch's relu passes a gradient of 1 at NaN, chainrule's NaN, say)."""
    if _variant(op) in REFERENCE_SKIP:
        pytest.skip(REFERENCE_SKIP[_variant(op)])
    torch.manual_seed(0)
    if op.reference_inputs_func is None:
        pytest.skip("no reference inputs beyond the samples test_op_agrees_with_pytorch compares")
    ours = _ours_for(op)
    grad = op.supports_autograd and op.name not in NO_GRADIENT_CHECK
    samples = op.reference_inputs_func(op, "cpu", torch.float64, grad)
    problems, compared = [], {"extremal": 0, "strided": 0}
    for n, sample in enumerate(samples):
        if min(compared.values()) == REFERENCE_SAMPLES:
            break
        kind = _kind(sample)
        if kind is None or compared[kind] == REFERENCE_SAMPLES or (kind == "extremal"
                                                                   and _variant(op) in REFERENCE_SKIP_EXTREMAL):
            continue
        sample, where = _unviewed(sample), f"reference sample {n}"
        try:
            theirs = op.op(sample.input, *sample.args, **sample.kwargs)
            memo = {}
            ours_args, ours_kwargs = _convert([sample.input, *sample.args], memo), _convert(sample.kwargs, memo)
        except Exception:  # (PyTorch refuses it, or an argument has no counterpart here)
            continue
        compared[kind] += 1
        try:
            ours_out = ours(*ours_args, **ours_kwargs)
        except Exception as error:
            problems.append(f"{where}: raised {type(error).__name__}: {str(error)[:200]} (args {_describe(sample)})")
            continue
        found = _compare_outputs(ours_out, theirs, where)
        if not found and grad and _finite(_sample_tensors(sample)):
            found = _compare_gradients(ours_out, theirs, memo, _leaves([sample.input, list(sample.args),
                                                                        sample.kwargs]), where)
        problems.extend(f"{p} (args {_describe(sample)})" for p in found)
    assert not problems, f"{_variant(op)}: {len(problems)} disagreements\n" + "\n".join(problems[:12])
