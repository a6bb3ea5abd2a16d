"""Masked reductions and normalizations (``autograd.masked``, PyTorch's ``torch.masked``), ported from PyTorch's
test/test_masked.py (TestMasked.test_reference_masked) with the samples of its OpInfos
(torch/testing/_internal/opinfo/definitions/_masked.py: inputs of 0 to 4 dims, every dim/keepdim kind, masks of
the input's shape and broadcast ones, inputs with inf, -inf and NaN on a diagonal), and their gradchecks. The
sparse layouts (test_mask_layout, test_where) and the prototype MaskedTensor are not built here.

The reference is PyTorch's: a masked reduction over a slice equals the plain reduction of the slice's masked-in
elements, and a masked normalization of a slice equals the plain one of its masked-in elements; both are
computed here in NumPy by hand, slice by slice, and compared where the output mask says an output saw an
element. Each such test runs on chainrule's ``autograd`` and, where installed, on PyTorch (fixture ``T``); one
more test compares the two libraries everywhere (fully masked slices, dtypes and gradients included)."""

import math
import warnings

import numpy as np
import pytest

import autograd

INF, NAN = float("inf"), float("nan")
S, M = 5, 10  # (the OpInfo sizes)


# ---- samples, as the OpInfos make them --------------------------------------------------------------------------

def masks_for(shape, rng):
    """None, a mask of the input's shape, and (for more than 2 dims) masks broadcast along each kind of dim."""
    yield None
    yield rng.random(shape) < 0.5
    if len(shape) > 2:
        for mask_shape in (shape[:-1] + (1,), shape[:1] + (1,) + shape[2:], (1,) + shape[1:], shape[1:], shape[-1:]):
            yield rng.random(mask_shape) < 0.5


def reduction_kwargs(ndim, multiple_dims=True):
    """dim/keepdim as the reduction OpInfos give them: default, outer, inner, middle, all, outer and inner, every
    other."""
    yield {}
    yield {"dim": 0, "keepdim": True}
    yield {"dim": -1, "keepdim": False}
    if ndim > 2:
        yield {"dim": ndim // 2, "keepdim": True}
    if multiple_dims:
        yield {"dim": tuple(range(ndim)), "keepdim": False}
        if ndim > 1:
            yield {"dim": (0, -1), "keepdim": True}
        if ndim > 3:
            yield {"dim": tuple(range(1, ndim, 2)), "keepdim": False}


def reduction_samples(multiple_dims=True, seed=0):
    """(input, kwargs, mask) as float64 NumPy arrays; a 2-d input with a full mask comes again with inf, -inf and
    NaN on its diagonal."""
    rng = np.random.default_rng(seed)
    for shape in ((), (2,), (3, 5), (3, 2, 1, 2)):
        x = rng.uniform(-9, 9, shape)
        for kwargs in reduction_kwargs(len(shape), multiple_dims):
            for mask in masks_for(shape, rng):
                yield x, kwargs, mask
                if len(shape) == 2 and mask is not None and mask.shape == shape:
                    for value in (INF, -INF, NAN):
                        special = x.copy()
                        np.fill_diagonal(special, value)
                        yield special, kwargs, mask


def normalization_samples(zero_sized=True, seed=0):
    """(input, dim, mask) as the softmax OpInfos give them."""
    rng = np.random.default_rng(seed)
    cases = [((S,), 0), ((S, S), 0), ((S, S), 1), ((S, S), -1), ((S, M, S), 2), ((), 0)]
    if zero_sized:
        cases.append(((S, 0, 0), -1))
    for shape, dim in cases:
        x = rng.uniform(-9, 9, shape)
        for mask in masks_for(shape, rng):
            yield x, dim, mask


# ---- the NumPy reference, slice by slice ------------------------------------------------------------------------

def canonical(dim, ndim):
    if dim is None or dim == ():
        return tuple(range(ndim))
    return tuple(sorted(d % max(ndim, 1) for d in ((dim,) if isinstance(dim, int) else dim)))


def full_mask(x, mask):
    return np.ones(x.shape, bool) if mask is None else np.broadcast_to(mask, x.shape)


def reduce_by_slices(np_op, x, mask, dim=None, keepdim=False):
    """np_op of the masked-in elements of each slice along ``dim`` (NaN for an empty one), and the output mask:
    which outputs saw an element."""
    inmask = full_mask(x, mask)
    dims = canonical(dim, x.ndim)
    if x.ndim == 0:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.asarray(np_op(x.reshape(1))), np.asarray(bool(inmask))
    kept = [d for d in range(x.ndim) if d not in dims]
    rows = np.transpose(x, kept + list(dims)).reshape(-1, math.prod(x.shape[d] for d in dims))
    row_masks = np.transpose(inmask, kept + list(dims)).reshape(rows.shape)
    with warnings.catch_warnings(), np.errstate(all="ignore"):  # (NumPy's words on inf - inf, ddof >= n)
        warnings.simplefilter("ignore", RuntimeWarning)
        values = np.array([np_op(row[keep]) if keep.any() else NAN for row, keep in zip(rows, row_masks)])
    shape = [x.shape[d] if d in kept else 1 for d in range(x.ndim)] if keepdim else [x.shape[d] for d in kept]
    return values.reshape(shape), row_masks.any(axis=1).reshape(shape)


def normalize_by_slices(np_op, x, dim, mask):
    """np_op of the masked-in elements of each 1-d slice along ``dim``, in their places (0 elsewhere)."""
    inmask = full_mask(x, mask)
    if x.ndim == 0:
        return np.asarray(np_op(x.reshape(1))[0]) if inmask else np.zeros(())
    moved, moved_mask = np.moveaxis(x, dim, -1), np.moveaxis(inmask, dim, -1)
    out = np.zeros(moved.shape)
    for index in np.ndindex(moved.shape[:-1]):
        keep = moved_mask[index]
        if keep.any():
            out[index + (keep,)] = np_op(moved[index][keep])
    return np.moveaxis(out, -1, dim)


def lower_median_skipping_nan(values):
    values = np.sort(values[~np.isnan(values)])
    return values[(len(values) - 1) // 2] if len(values) else NAN


def softmax(values):
    shifted = np.exp(values - values.max())
    return shifted / shifted.sum()


REDUCTIONS = {  # masked op: its plain reduction of a slice's masked-in elements, in NumPy
    "sum": np.sum, "prod": np.prod, "amax": np.max, "amin": np.min, "mean": np.mean,
    "logsumexp": np.logaddexp.reduce,
    "median": lower_median_skipping_nan,  # (reads through nanmedian: a masked-in NaN is skipped too)
}
NORMALIZATIONS = {
    "softmax": softmax, "log_softmax": lambda v: v - np.logaddexp.reduce(v), "softmin": lambda v: softmax(-v),
    "cumsum": np.cumsum, "cumprod": np.cumprod,
}


def lib_args(T, x, mask):
    return T.tensor(x), None if mask is None else T.tensor(mask)


def assert_masked_equal(actual, expected, outmask):
    """Equal where ``outmask`` holds (NaN equal to NaN); what the others hold is left unspecified by PyTorch."""
    actual = np.where(outmask, np.asarray(actual, dtype=np.float64), 0)
    np.testing.assert_allclose(actual, np.where(outmask, expected, 0), rtol=1e-10, atol=1e-12, equal_nan=True)


# ---- test_reference_masked --------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(REDUCTIONS))
def test_a_masked_reduction_is_the_plain_one_over_the_masked_in_elements(T, name):
    checked = 0
    for x, kwargs, mask in reduction_samples(multiple_dims=name != "median"):
        if name == "median":
            kwargs = {**kwargs, "dim": kwargs.get("dim", -1)}
        input, mask_ = lib_args(T, x, mask)
        actual = getattr(T.masked, name)(input, mask=mask_, **kwargs)
        expected, outmask = reduce_by_slices(REDUCTIONS[name], x, mask, kwargs.get("dim"), kwargs.get("keepdim"))
        assert tuple(actual.shape) == expected.shape and actual.dtype == T.float64
        assert_masked_equal(actual.numpy(), expected, outmask)
        checked += int(outmask.sum())
    assert checked > 150  # (the reference compared something)


@pytest.mark.parametrize("ord", [2.0, 1, INF, -INF, 0])
def test_masked_norm_is_the_vector_norm_of_the_masked_in_elements(T, ord):
    for x, kwargs, mask in reduction_samples():
        input, mask_ = lib_args(T, x, mask)
        actual = T.masked.norm(input, ord, mask=mask_, **kwargs)
        expected, outmask = reduce_by_slices(lambda v: np.linalg.norm(v, ord), x, mask, kwargs.get("dim"),
                                             kwargs.get("keepdim"))
        assert_masked_equal(actual.numpy(), expected, outmask)


@pytest.mark.parametrize("name", ["var", "std"])
@pytest.mark.parametrize("correction", [{}, {"unbiased": False}, {"unbiased": True}, {"correction": 0},
                                        {"correction": 2}])
def test_masked_var_and_std_are_numpys_over_the_masked_in_elements(T, name, correction):
    ddof = correction.get("correction", int(correction.get("unbiased", True)))
    np_op = np.var if name == "var" else np.std
    for x, kwargs, mask in reduction_samples():
        input, mask_ = lib_args(T, x, mask)
        actual = getattr(T.masked, name)(input, mask=mask_, **kwargs, **correction)
        expected, outmask = reduce_by_slices(lambda v: np_op(v, ddof=ddof), x, mask, kwargs.get("dim"),
                                             kwargs.get("keepdim"))
        counts, _ = reduce_by_slices(len, x, mask, kwargs.get("dim"), kwargs.get("keepdim"))
        # (the OpInfo leaves out slices of no more elements than the correction: NumPy warns and differs there)
        assert_masked_equal(actual.numpy(), expected, outmask & (counts > ddof))


def test_masked_argmax_and_argmin_index_the_extreme_masked_in_element(T):
    """(PyTorch's reference test expects these to fail: the slice reference loses the positions; NumPy's argmax of
    np.where(mask, x, -inf) keeps them.)"""
    for x, kwargs, mask in reduction_samples(multiple_dims=False):
        if np.isnan(x).any():
            continue
        inmask = full_mask(x, mask)
        input, mask_ = lib_args(T, x, mask)
        dim, keepdim = kwargs.get("dim"), kwargs.get("keepdim", False)
        for name, np_op, fill in (("argmax", np.argmax, -INF), ("argmin", np.argmin, INF)):
            actual = getattr(T.masked, name)(input, dim, keepdim=keepdim, mask=mask_, dtype=T.int64)
            filled = np.where(inmask, x, fill)
            expected = np_op(filled) if dim is None or x.ndim == 0 else np_op(filled, axis=dim, keepdims=keepdim)
            outmask = inmask.any() if dim is None or x.ndim == 0 else inmask.any(axis=dim, keepdims=keepdim)
            if not np.isinf(x).any():
                np.testing.assert_array_equal(np.where(outmask, actual.numpy(), 0), np.where(outmask, expected, 0))


@pytest.mark.parametrize("name", sorted(NORMALIZATIONS))
def test_a_masked_normalization_is_the_plain_one_over_the_masked_in_elements(T, name):
    cumulative = name.startswith("cum")
    for x, dim, mask in normalization_samples():
        if cumulative and mask is None:
            continue  # (the cumulative OpInfos take masks only)
        input, mask_ = lib_args(T, x, mask)
        actual = getattr(T.masked, name)(input, dim, mask=mask_)
        assert tuple(actual.shape) == x.shape and actual.dtype == T.float64
        assert_masked_equal(actual.numpy(), normalize_by_slices(NORMALIZATIONS[name], x, dim, mask),
                            full_mask(x, mask))
    if not cumulative:  # the softmax OpInfos' with_dtype samples: float32 in, float64 out
        x, mask = np.random.default_rng(1).uniform(-9, 9, (S, S)), np.eye(S, dtype=bool) | np.tri(S, k=-3, dtype=bool)
        actual = getattr(T.masked, name)(T.tensor(x, dtype=T.float32), 1, dtype=T.float64, mask=T.tensor(mask))
        assert actual.dtype == T.float64
        expected = normalize_by_slices(NORMALIZATIONS[name], x.astype(np.float32).astype(np.float64), 1, mask)
        assert_masked_equal(actual.numpy(), expected, mask)


@pytest.mark.parametrize("ord", [2.0, 1, INF, -INF, 0])
def test_masked_normalize_divides_by_the_norm_of_the_masked_in_elements(T, ord):
    def np_normalize(values):
        return values / max(np.linalg.norm(values, ord), 1e-12)

    for x, dim, mask in normalization_samples(zero_sized=False):
        input, mask_ = lib_args(T, x, mask)
        actual = T.masked.normalize(input, ord, dim, mask=mask_)
        assert_masked_equal(actual.numpy(), normalize_by_slices(np_normalize, x, dim, mask), full_mask(x, mask))
        # masked-out elements are 0 (the sum's identity, divided)
        assert (actual.numpy()[~full_mask(x, mask)] == 0).all()


def test_masked_logaddexp_leaves_out_each_operands_masked_out_elements(T):
    rng = np.random.default_rng(2)
    for shape in ((S,), (S, S), (S, M, S)):
        a, b = rng.uniform(-9, 9, shape), rng.uniform(-9, 9, shape)
        for mask_a, mask_b in zip(masks_for(shape, rng), masks_for(shape, rng)):
            ka, kb = full_mask(a, mask_a), full_mask(b, mask_b)
            actual = T.masked.logaddexp(T.tensor(a), T.tensor(b), input_mask=None if mask_a is None
                                        else T.tensor(mask_a), other_mask=None if mask_b is None else T.tensor(mask_b))
            expected = np.logaddexp(np.where(ka, a, -INF), np.where(kb, b, -INF))
            np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-12)
    # the docstring's example
    mask = T.tensor([True, False, True])
    out = T.masked.logaddexp(T.tensor([-100.0, -200, -300]), T.tensor([-1.0, -2, -3]), input_mask=mask,
                             other_mask=mask)
    assert out.tolist() == [-1.0, -INF, -3.0]


# ---- the documented examples and the fully masked slice's results -----------------------------------------------

EXAMPLE_INPUT, EXAMPLE_MASK = [[-3, -2, -1], [0, 1, 2]], [[True, False, True], [False, False, False]]


@pytest.mark.parametrize("name, args, expected, dtype", [
    # each reduction's identity in the fully masked second row
    ("sum", (1,), [-4, 0], "int64"),
    ("prod", (1,), [3, 1], "int64"),
    ("amax", (1,), [-1, -2**63], "int64"),
    ("amin", (1,), [-3, 2**63 - 1], "int64"),
    ("argmax", (1,), [2, 0], "int64"),
    ("argmin", (1,), [0, 0], "int64"),
    ("mean", (1,), [-2.0, NAN], "float32"),
    ("median", (1,), [-3.0, NAN], "float32"),
    ("logsumexp", (1,), [math.log(math.exp(-3) + math.exp(-1)), -INF], "float32"),
    ("norm", (2.0, 1), [math.sqrt(10), 0.0], "float32"),
    ("norm", (-INF, 1), [1.0, INF], "float32"),
    ("var", (1, False), [1.0, NAN], "float32"),
    ("std", (1,), [math.sqrt(2), NAN], "float32"),
])
def test_the_documented_reduction_examples(T, name, args, expected, dtype):
    input = T.tensor(EXAMPLE_INPUT, dtype=T.float32 if dtype == "float32" else T.int64)
    out = getattr(T.masked, name)(input, *args, mask=T.tensor(EXAMPLE_MASK))
    assert out.dtype == getattr(T, dtype)
    np.testing.assert_allclose(out.numpy().astype(np.float64), expected, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("name, args, expected", [
    ("softmax", (1,), [[1 / (1 + math.e ** 2), 0.0, 1 / (1 + math.e ** -2)], [NAN] * 3]),
    ("log_softmax", (1,), [[-math.log1p(math.e ** 2), -INF, -math.log1p(math.e ** -2)], [NAN] * 3]),
    ("softmin", (1,), [[1 / (1 + math.e ** -2), 0.0, 1 / (1 + math.e ** 2)], [NAN] * 3]),
    ("normalize", (2.0, 1), [[-3 / math.sqrt(10), 0.0, -1 / math.sqrt(10)], [0.0] * 3]),
    ("cumsum", (1,), [[-3, -3, -4], [0, 0, 0]]),
    ("cumprod", (1,), [[-3, -3, 3], [1, 1, 1]]),
])
def test_the_documented_normalization_examples(T, name, args, expected):
    out = getattr(T.masked, name)(T.tensor(EXAMPLE_INPUT, dtype=T.float32), *args, mask=T.tensor(EXAMPLE_MASK))
    assert out.dtype == T.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, equal_nan=True)


def test_result_dtypes(T):
    x, mask = T.tensor([[1, 2, 3], [4, 5, 6]], dtype=T.int32), T.tensor([True, False, True])
    # sum and prod widen a small integer (and a bool) to int64; the others keep the input's dtype
    assert T.masked.sum(x, 1, mask=mask).tolist() == [4, 10] and T.masked.sum(x, mask=mask).dtype == T.int64
    assert T.masked.prod(x, 1, mask=mask).tolist() == [3, 24] and T.masked.prod(x, mask=mask).dtype == T.int64
    assert T.masked.sum(T.tensor([[True, True, False]]), 1, mask=mask).tolist() == [1]
    assert T.masked.cumsum(x, 1, mask=mask).tolist() == [[1, 1, 4], [4, 4, 10]]
    assert T.masked.cumsum(x, 1, mask=mask).dtype == T.int32
    assert T.masked.amax(x, 1, mask=mask).dtype == T.int32
    assert T.masked.median(x, 1, mask=mask).tolist() == [1, 4] and T.masked.median(x, 1, mask=mask).dtype == T.int32
    # an integer var computes and answers in float32, or in the dtype asked for
    assert T.masked.var(x, 1, mask=mask).tolist() == [2.0, 2.0] and T.masked.var(x, 1, mask=mask).dtype == T.float32
    assert T.masked.std(x, 1, mask=mask, dtype=T.float64).dtype == T.float64
    # argmax's index comes in the input's dtype unless another is asked for
    floats = x.to(T.float32)
    assert T.masked.argmax(floats, 1, mask=mask).dtype == T.float32
    assert T.masked.argmax(floats, 1, mask=mask).tolist() == [2.0, 2.0]
    assert T.masked.argmin(floats, 1, mask=mask, dtype=T.int64).dtype == T.int64
    # dtype= is the result's
    assert T.masked.sum(floats, 1, mask=mask, dtype=T.float64).dtype == T.float64
    assert T.masked.amax(floats, 1, mask=mask, dtype=T.float64).dtype == T.float64
    assert T.masked.softmax(floats, 1, mask=mask, dtype=T.float64).dtype == T.float64


def test_a_mask_broadcasts_and_any_dtype_reads_as_bool(T):
    x = T.arange(12.0).reshape(2, 2, 3)
    assert T.masked.sum(x, mask=T.tensor([1, 0, 1])).item() == 0 + 2 + 3 + 5 + 6 + 8 + 9 + 11
    assert T.masked.sum(x, (0, 1), mask=T.tensor([[True], [False]])).tolist() == [6, 8, 10]
    assert T.masked.amax(x, -1, keepdim=True, mask=T.tensor([True, True, False])).flatten().tolist() == [1, 4, 7, 10]
    # a 0-d input with a 0-d mask: the identity when it is masked out
    scalar = T.tensor(3.0)
    assert T.masked.sum(scalar, mask=T.tensor(False)).item() == 0
    assert T.masked.amax(scalar, 0, mask=T.tensor(False)).item() == -INF
    assert T.masked.softmax(scalar, 0, mask=T.tensor(True)).item() == 1
    assert T.masked.mean(scalar, mask=T.tensor(True)).item() == 3
    # dim=() reduces every dim, as PyTorch still reads it
    assert T.masked.sum(x, (), mask=T.tensor([True, False, False])).item() == 0 + 3 + 6 + 9


def test_mask_and_dim_errors(T):
    x = T.ones(2, 3)
    with pytest.raises(IndexError, match="got mask dimensionality higher than of the input"):
        T.masked.sum(x, 1, mask=T.ones(1, 2, 3, dtype=T.bool))
    with pytest.raises(RuntimeError, match=r"The expanded size of the tensor \(3\) must match the existing size \(2\)"):
        T.masked.sum(x, 1, mask=T.ones(2, dtype=T.bool))
    with pytest.raises(RuntimeError, match="dim=1 appears multiple times in the list of dims"):
        T.masked.amax(x, (1, 1), mask=T.ones(3, dtype=T.bool))
    with pytest.raises(RuntimeError, match="dim 0 appears multiple times in the list of dims"):
        T.masked.sum(x, (0, -2), mask=T.ones(3, dtype=T.bool))
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 3\)"):
        T.masked.prod(x, 3, mask=T.ones(3, dtype=T.bool))
    with pytest.raises(ValueError, match="mean\\(\\): Could not infer output dtype. Input dtype must be either a "
                                         "floating point or complex dtype. Got: "):
        T.masked.mean(x.int(), 1)
    with pytest.raises(ValueError, match="masked median expects no fully masked out rows if dtype is not floating"):
        T.masked.median(x.int(), 1, mask=T.tensor([[True, False, True], [False, False, False]]))
    with pytest.raises(AssertionError, match="Only one of unbiased and correction may be given"):
        T.masked.var(x, 1, True, correction=1)
    with pytest.raises(ValueError, match="_input_mask requires explicit mask"):
        T.masked._input_mask(x)


def test_the_mask_helpers(T):
    """_canonical_dim, _input_mask, _output_mask and _reduction_identity, which test_masked.py reads."""
    assert T.masked._canonical_dim(None, 3) == (0, 1, 2) == T.masked._canonical_dim((), 3)
    assert T.masked._canonical_dim((-1, 0), 3) == (0, 2) and T.masked._canonical_dim(-1, 0) == (0,)
    x, mask = T.zeros(2, 3), T.tensor([True, False, True])
    assert T.masked._input_mask(x, mask=mask).tolist() == [[True, False, True]] * 2
    assert T.masked._input_mask(x, mask=mask).dtype == T.bool
    assert T.masked._output_mask(T.masked.sum, x, 0, mask=mask).tolist() == [True, False, True]
    assert T.masked._output_mask(T.masked.norm, x, 2.0, 1, mask=mask, keepdim=True).tolist() == [[True], [True]]
    assert T.masked._output_mask(T.masked.softmax, x, 1, mask=mask).tolist() == [[True, False, True]] * 2
    identity = T.masked._reduction_identity
    assert identity("amax", T.zeros(1, dtype=T.uint8)).item() == 0
    assert identity("amin", T.zeros(1, dtype=T.int32)).item() == 2**31 - 1
    assert identity("amax", T.zeros(1)).item() == -INF and identity("prod", T.zeros(1, dtype=T.int8)).item() == 1
    assert identity("norm", T.zeros(1), -INF).item() == INF and identity("norm", T.zeros(1)).item() == 0
    assert math.isnan(identity("median", T.zeros(1, dtype=T.int32)).item())
    assert identity("mean", T.zeros(1)) is None and identity("var", T.zeros(1)) is None


# ---- gradients ---------------------------------------------------------------------------------------------------

def zeroing_masked_out_outputs(T, op, mask, *args, **kwargs):
    """gradcheck_wrapper_masked_operation: the op with the outputs that saw no element set to 0 (they are
    infinite or NaN for amax, softmax, ...)."""
    def function(input):
        output = op(input, *args, mask=mask, **kwargs)
        if mask is None:
            return output
        return T.where(T.masked._output_mask(op, input, *args, mask=mask, **kwargs), output, output.new_zeros([]))
    return function


def gradient_samples():
    """Inputs with no ties in a slice (amax, median), masks with and without fully masked slices."""
    rng = np.random.default_rng(3)
    x = rng.permutation(np.linspace(-2, 2, 24)).reshape(2, 3, 4) + 0.1
    masks = [None, rng.random((2, 3, 4)) < 0.6, np.array([True, False, True, True]),
             np.array([[True, True, False, True], [False] * 4, [True, False, True, True]])]
    for mask in masks:
        for kwargs in ({"dim": -1}, {"dim": 1, "keepdim": True}, {"dim": (0, 2)}, {}):
            yield x, kwargs, mask


@pytest.mark.parametrize("name, args", [("sum", ()), ("prod", ()), ("amax", ()), ("amin", ()), ("mean", ()),
                                        ("logsumexp", ()), ("norm", (2.0,)), ("norm", (1,)), ("norm", (INF,)),
                                        ("var", ()), ("std", ()), ("median", ())])
def test_reduction_gradients_by_finite_differences(T, name, args):
    op = getattr(T.masked, name)
    for x, kwargs, mask in gradient_samples():
        if name == "median":
            if not isinstance(kwargs.get("dim", -1), int):
                continue
            kwargs = {**kwargs, "dim": kwargs.get("dim", -1)}  # (the output mask reads dim from the call)
        counts, _ = reduce_by_slices(len, x, mask, kwargs.get("dim"), kwargs.get("keepdim"))
        if name in ("var", "std") and np.nan_to_num(counts).min() <= 2:
            continue  # (fully masked slices give NaN gradients there, as below; the OpInfo leaves them out)
        mask_ = None if mask is None else T.tensor(mask)
        input = T.tensor(x, requires_grad=True)
        assert T.autograd.gradcheck(zeroing_masked_out_outputs(T, op, mask_, *args, **kwargs), (input,))


@pytest.mark.parametrize("name, args", [("softmax", ()), ("log_softmax", ()), ("softmin", ()), ("cumsum", ()),
                                        ("cumprod", ()), ("normalize", (2.0,)), ("normalize", (1,))])
def test_normalization_gradients_by_finite_differences(T, name, args):
    op = getattr(T.masked, name)
    for x, kwargs, mask in gradient_samples():
        dim = kwargs.get("dim", 0)
        if not isinstance(dim, int):
            continue
        mask_ = None if mask is None else T.tensor(mask)
        input = T.tensor(x, requires_grad=True)
        assert T.autograd.gradcheck(zeroing_masked_out_outputs(T, op, mask_, *args, dim), (input,))


@pytest.mark.parametrize("name, args", [("sum", (2,)), ("prod", (2,)), ("amax", (2,)), ("amin", (2,)),
                                        ("mean", (2,)), ("median", (2,)), ("logsumexp", (2,)), ("norm", (2.0, 2)),
                                        ("softmax", (2,)), ("log_softmax", (2,)), ("softmin", (2,)),
                                        ("normalize", (2.0, 2)), ("cumsum", (2,)), ("cumprod", (2,))])
def test_masked_out_elements_get_zero_gradient_even_in_a_fully_masked_slice(T, name, args):
    x, kwargs, mask = list(gradient_samples())[-1]
    x = x.copy()
    x[~np.broadcast_to(mask, x.shape)] = INF  # (what a masked-out element holds does not reach the gradient)
    input = T.tensor(x, requires_grad=True)
    output = zeroing_masked_out_outputs(T, getattr(T.masked, name), T.tensor(mask), *args)(input)
    (output * T.linspace(0.5, 1.5, output.numel(), dtype=T.float64).reshape(output.shape)).sum().backward()
    grad = input.grad.numpy()
    inmask = np.broadcast_to(mask, x.shape)
    assert (grad[~inmask] == 0).all() and np.isfinite(grad[inmask]).all() and (grad[inmask] != 0).any()


def test_var_of_a_fully_masked_slice_has_nan_gradients_as_pytorchs(T):
    """The deviation x - mean of a slice with no element is NaN (0/0), and so is its square's gradient, though
    ``where`` sends it a zero: PyTorch's composition gives NaN there, and so does ours."""
    x = T.tensor([[1.0, 2.0, 4.0], [3.0, 5.0, 6.0]], requires_grad=True)
    out = T.masked.var(x, 1, mask=T.tensor([[True, True, True], [False, False, False]]))
    T.where(T.isfinite(out), out, 0.0).sum().backward()
    np.testing.assert_allclose(x.grad[0].tolist(), [-4 / 3, -1 / 3, 5 / 3])
    assert np.isnan(x.grad[1].numpy()).all()


# ---- against PyTorch itself, everywhere ----------------------------------------------------------------------------

OPS_WITH_DIMS = [("sum", ()), ("prod", ()), ("amax", ()), ("amin", ()), ("mean", ()), ("logsumexp", ()),
                 ("norm", (2.0,)), ("norm", (-INF,)), ("norm", (0,)), ("var", ()), ("std", ())]


@pytest.mark.torch
def test_outputs_and_gradients_equal_pytorchs_everywhere():
    """Also where PyTorch leaves the value unspecified (fully masked slices, masked-out normalization outputs):
    the same compositions give the same numbers there, and the same gradients."""
    import torch

    def run(lib, name, x, mask, *args, **kwargs):
        input = lib.tensor(x, requires_grad=True)
        output = getattr(lib.masked, name)(input, *args, mask=None if mask is None else lib.tensor(mask), **kwargs)
        weights = lib.linspace(0.5, 1.5, output.numel(), dtype=lib.float64).reshape(output.shape)
        lib.where(lib.isfinite(output), output * weights, 0.0).sum().backward()
        grad = None if input.grad is None else input.grad.numpy()  # (ord=0 norms reach no input, in both)
        return output.detach().numpy(), grad, str(output.dtype).rsplit(".")[-1]

    def same(name, x, mask, *args, **kwargs):
        ours, theirs = run(autograd, name, x, mask, *args, **kwargs), run(torch, name, x, mask, *args, **kwargs)
        assert ours[2] == theirs[2] and (ours[1] is None) == (theirs[1] is None), (name, args, kwargs)
        for a, b in zip(ours[:2], theirs[:2]) if ours[1] is not None else [(ours[0], theirs[0])]:
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12, equal_nan=True, err_msg=f"{name} {args} {kwargs}")

    for x, kwargs, mask in reduction_samples(seed=4):
        if np.isnan(x).any() or np.isinf(x).any():
            continue  # (ties of infinities: which one takes amax's gradient is the engines' own choice)
        for name, args in OPS_WITH_DIMS:
            same(name, x, mask, *args, **kwargs)
        if isinstance(kwargs.get("dim"), int):
            same("median", x, mask, kwargs["dim"], keepdim=kwargs["keepdim"])
    for x, dim, mask in normalization_samples(zero_sized=False, seed=4):
        for name in ("softmax", "log_softmax", "softmin", "cumsum", "cumprod"):
            same(name, x, mask, dim)
        same("normalize", x, mask, 2.0, dim)


def test_masked_loads_on_first_use():
    import subprocess
    import sys

    code = "import sys, autograd; a = 'autograd.masked' in sys.modules; autograd.masked.sum; print(a)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.split() == ["False"]
    assert "masked" in dir(autograd) and autograd.masked.__all__ == sorted(autograd.masked.__all__)
