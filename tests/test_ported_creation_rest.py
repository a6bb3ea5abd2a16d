"""The rest of PyTorch's test/test_tensor_creation_ops.py that tests/test_ported_creation_ops.py leaves out:
cat/stack into an out= that overlaps an input, random_'s bounds (bool, ``random_(from, None)``, the float
precision warnings, every int64), uniform_'s bounds, linspace/logspace bounds cast into an integer dtype,
arange's out= resize warning (the other factories resize silently), empty's storage overflow, frombuffer of a
read-only buffer, float-to-int casts of non-finite values, the *_like factories' strides, empty_strided,
as_strided's refusals, the legacy constructors' device= and asarray of a buffer.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`), against literal
or NumPy expectations (seeded draws: PyTorch's own numbers, which chainrule's draws match bit for bit).
"""

import itertools
import re
import warnings

import numpy as np
import pytest

from tests.ported import raises, same, values, xfail_on_chainrule

INT_DTYPES = ["uint8", "int8", "int16", "int32", "int64"]
FLOAT_DTYPES = ["float16", "float32", "float64"]
# the largest integer each floating dtype holds with all below it: 2^digits
EXACT = {"float16": 2**11, "float32": 2**24, "float64": 2**53}
I64_MIN, I64_MAX = -2**63, 2**63 - 1


def _warnings_of(fn, *args, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [str(w.message) for w in caught if issubclass(w.category, UserWarning)]


# -- cat and stack into an out= that overlaps an input -----------------------------------------------------


def test_cat_out_overlapping_an_input(T):
    msg = "unsupported operation: some elements of the input tensor and the written-to tensor refer to a single"
    x, y = T.zeros(0), T.randn(4, 6)
    raises(RuntimeError, msg, T.cat, [x, y], dim=0, out=x)
    raises(RuntimeError, msg, T.cat, [x, y], dim=0, out=y)
    z = T.zeros(4, 6)
    raises(RuntimeError, msg, T.cat, [y, z], out=z[:2, :])
    raises(RuntimeError, "unsupported operation", T.cat, [T.rand(3, 3)] * 2, out=T.rand(1, 3).expand(6, 3))
    # disjoint parts of one tensor are fine
    w = T.arange(24.0)
    T.cat([w[:2], w[4:6]], out=w[6:10])
    same(w, np.r_[0:6, 0, 1, 4, 5, 10:24].astype(np.float32))
    rows = T.zeros(2, 3)
    raises(RuntimeError, msg, T.stack, [rows[0], rows[1]], out=rows)
    v = T.randn(3)
    raises(RuntimeError, msg, T.stack, [v, v], out=v)


# -- random_: bounds, random_(from, None), the float precision warnings ------------------------------------


def test_random_from_to_bool(T):
    froms = [I64_MIN, -42, -1, 0, 1, 2, 42]
    tos = [-42, -1, 0, 1, 2, 42, I64_MAX]
    for low, high in itertools.product(froms, tos):
        t = T.empty(200, dtype=T.bool)
        if high <= low:
            raises(RuntimeError, f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}",
                   t.random_, low, high)
        elif not 0 <= low <= 1:
            raises(RuntimeError, "from is out of bounds for bool", t.random_, low, high)
        elif not 0 <= high - 1 <= 1:
            raises(RuntimeError, "to - 1 is out of bounds for bool", t.random_, low, high)
        else:
            t.random_(low, high)
            drawn = values(t.to(T.int64))
            assert drawn.min() == low and drawn.max() == high - 1
    raises(RuntimeError, "to - 1 is out of bounds for bool", T.empty(3, dtype=T.bool).random_, 5)


@pytest.mark.parametrize("dtype", INT_DTYPES + FLOAT_DTYPES)
def test_random_full_range(T, dtype):
    """random_(from, None): from ``from`` up to the largest integer the dtype holds (2^digits for a float)."""
    T.manual_seed(5)
    info = np.iinfo(dtype) if dtype in INT_DTYPES else None
    low = int(info.min) if info is not None else max(-EXACT[dtype], I64_MIN)
    top = int(info.max) if info is not None else EXACT[dtype]
    t = T.empty(2000, dtype=getattr(T, dtype))
    t.random_(low, None)
    drawn = values(t.to(T.float64))
    delta = max(1, 0.1 * (top - low + 1))
    assert low <= drawn.min() < low + delta
    assert top - delta < drawn.max() <= top


def test_random_from_none_values_and_refusals(T):
    def drawn(dtype, *bounds):
        T.manual_seed(11)
        return T.empty(4, dtype=getattr(T, dtype)).random_(*bounds).tolist()

    assert drawn("int8", 1, None) == [117, 92, 19, 29]
    assert drawn("uint8", 100, None) == [205, 151, 136, 183]
    assert drawn("bool", 0, None) == [True, True, False, True]
    assert drawn("bool", 1, None) == [True] * 4
    # every int64 (from = -2^63), and a range of more than 2^63 integers
    assert drawn("int64", I64_MIN, None) == [3325388913236545215, 359254775711865947, 8544873655684927415,
                                             -5074073479047749300]
    assert drawn("int64", -1, None) == [3325388913236545214, 359254775711865946, 8544873655684927414,
                                        4149298557807026506]
    assert drawn("float32", I64_MIN, None) == [3.325388805568987e+18, 3.592547728569139e+17, 8.54487385671467e+18,
                                               -5.074073538860679e+18]
    assert drawn("int16", -5, 30000) == [3416, 16789, 21580, 6277]
    # a float's bound past its exact integers is rounded into it first (to = 2^29 is 2^29 - 32 in float32)
    assert drawn("float32", 0, 2**29) == [396645856.0, 109015544.0, 120543096.0, 40282316.0]
    raises(RuntimeError, "from is out of bounds for signed char", drawn, "int8", 200, None)
    raises(RuntimeError, "from is out of bounds for bool", drawn, "bool", -1, None)
    raises(RuntimeError, "'from' casted to dtype to be less than or equal to 'to_inc' casted to dtype, but got "
           "from=2048 > to_inc=2048", drawn, "float16", 2048, None)
    raises(NotImplementedError, "random_full_64_bits_range_kernel_cpu\" not implemented for 'Bool'", drawn, "bool",
           I64_MIN, None)
    raises(NotImplementedError, "not implemented for 'Half'", drawn, "float16", I64_MIN, None)
    raises(RuntimeError, "random_full_64_bits_range_kernel_cpu handles only int64, double, float and bfloat16",
           drawn, "int32", I64_MIN, None)


@pytest.mark.parametrize("dtype", INT_DTYPES + FLOAT_DTYPES)
def test_random_from_to(T, dtype):
    if dtype in FLOAT_DTYPES:
        top = int(np.finfo(dtype).max)
        lowest, largest = max(-top, I64_MIN), min(top, I64_MAX)
        pairs = [(a, b) for a in (lowest, -42, 0, 42) for b in (-42, 0, 42, largest >> 1)]
    else:
        lowest, largest = int(np.iinfo(dtype).min), int(np.iinfo(dtype).max)
        ends = sorted({lowest - 1, lowest, -42, 0, 42, largest, largest + 1} - ({I64_MIN - 1, I64_MAX + 1}))
        pairs = list(itertools.product([I64_MIN] + ends, ends + [I64_MAX]))
    exact = EXACT.get(dtype, 0)
    T.manual_seed(7)
    for low, high in pairs:
        t = T.empty(2000, dtype=getattr(T, dtype))
        if high <= low:
            raises(RuntimeError, f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}",
                   t.random_, low, high)
        elif not lowest <= low <= largest:
            raises(RuntimeError, "from is out of bounds", t.random_, low, high)
        elif not lowest <= high - 1 <= largest:
            raises(RuntimeError, "to - 1 is out of bounds", t.random_, low, high)
        elif exact and not (-exact <= low <= exact and -exact <= high - 1 <= exact):
            _, said = _warnings_of(t.random_, low, high)
            name = "from" if not -exact <= low <= exact else "to - 1"
            digits = exact.bit_length() - 1
            assert any(f"{name} is out of bounds [-(2^{digits}), 2^{digits}]. Due to precision limitations" in w
                       for w in said), said
        else:
            _, said = _warnings_of(t.random_, low, high)
            assert not said
            drawn = values(t.to(T.float64))
            delta = max(1, 0.1 * (high - low))
            assert low <= drawn.min() < low + delta and high - delta <= drawn.max() < high


@pytest.mark.parametrize("dtype", INT_DTYPES + FLOAT_DTYPES)
def test_random_to_and_default(T, dtype):
    T.manual_seed(9)
    largest = EXACT[dtype] if dtype in FLOAT_DTYPES else int(np.iinfo(dtype).max)
    for high in (-42, 0, 1, 42):
        t = T.empty(2000, dtype=getattr(T, dtype))
        if high <= 0:
            raises(RuntimeError, f"but got from=0 >= to={high}", t.random_, high)
        else:
            drawn = values(t.random_(high).to(T.float64))
            assert drawn.min() == 0 and drawn.max() == high - 1
    drawn = values(T.empty(2000, dtype=getattr(T, dtype)).random_().to(T.float64))
    assert 0 <= drawn.min() < 0.1 * largest and 0.9 * largest < drawn.max() <= largest


def test_random_neg_values(T):
    for dtype in ("float64", "float32", "int64", "int32", "int16"):
        res = T.rand(10, 10).to(dtype=getattr(T, dtype))
        res.random_(-10, -1)
        assert -10 <= res.min().item() and res.max().item() <= -2


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_uniform_from_to(T, dtype):
    largest = float(np.finfo(dtype).max)
    picks = [-1.7976931348623157e308, -3.4028234663852886e38, -42.0, 0.0, 42.0, 3.4028234663852886e38,
             1.7976931348623157e308]
    T.manual_seed(3)
    for low, high in itertools.product(picks, picks):
        t = T.empty(200, dtype=getattr(T, dtype))
        if not (-largest <= low <= largest and -largest <= high <= largest):
            raises(RuntimeError, "is out of bounds for", t.uniform_, low, high)
        elif high < low:
            raises(RuntimeError, re.escape(f"uniform_ expects to return a [from, to) range, but found from={low:g} > "
                                           f"to={high:g}"), t.uniform_, low, high)
        elif high - low > largest:
            raises(RuntimeError, "uniform_ expects to-from", t.uniform_, low, high)
        else:
            drawn = values(t.uniform_(low, high).to(T.float64))
            if low == high:
                assert (drawn == low).all()
            elif dtype != "float16":
                delta = 0.1 * (high - low)
                assert low <= drawn.min() <= low + delta and high - delta <= drawn.max() < high


# -- ranges: bounds cast into the dtype, bool, out= ----------------------------------------------------------


def test_linspace_logspace_bounds_cast_into_the_dtype(T):
    same(T.linspace(-1, 3, 3, dtype=T.uint8), [255, 129, 3])  # (-1 is 255 in uint8, then the points)
    same(T.linspace(-300, 3, 3, dtype=T.int16), np.array([-300, -148, 3], dtype=np.int16))
    same(T.logspace(-1, 3, 3, base=2, dtype=T.int8), np.array([0, 2, 8], dtype=np.int8))
    for dtype in ("uint8", "int8", "int16", "int32", "int64", "float16", "float32"):
        raises(RuntimeError, f"value cannot be converted to type {dtype}(_t)? without overflow|type (int|float|"
               "c10::Half) without overflow", T.linspace, 0, 1e40, 3, dtype=getattr(T, dtype))
        raises(RuntimeError, "without overflow", T.logspace, 0, 1e40, 3, dtype=getattr(T, dtype))
    raises(RuntimeError, "without overflow", T.linspace, 10, 2000, 1991, dtype=T.int8)
    raises(NotImplementedError, "\"linspace_cpu\" not implemented for 'Bool'", T.linspace, 0, 1, 3, dtype=T.bool)
    raises(NotImplementedError, "\"logspace_cpu\" not implemented for 'Bool'", T.logspace, 0, 1, 3, dtype=T.bool)
    raises(NotImplementedError, "\"arange_cpu\" not implemented for 'Bool'", T.arange, 0, 1, dtype=T.bool)
    same(T.linspace(0, 1, 1, dtype=T.bool), [False])  # (one point or none: no arithmetic, no refusal)
    same(T.logspace(0, 1, 1, dtype=T.bool), [True])
    assert T.logspace(1, 1, 0, dtype=T.bool).shape == (0,)


def test_arange_out_resize_warning(T):
    line = T.zeros(1, 49)
    _, said = _warnings_of(T.arange, -1, 1, 2.0 / 49, dtype=T.float32, out=line)
    assert tuple(line.shape) == (50,)
    assert any("The number of elements in the out tensor of shape [1, 49] is 49 which does not match the computed "
               "number of elements 50" in w and "The out tensor will be resized" in w for w in said), said
    x = T.zeros(2, 3)
    _, said = _warnings_of(T.arange, 0, 4, out=x.narrow(1, 1, 2))  # (as many elements: filled in place)
    same(x, [[0, 0, 1], [0, 2, 3]])
    assert not said


def test_factories_resize_out_silently(T):
    """PyTorch's factories resize an out= of another shape without the resize warning other ops give."""
    cases = [(T.zeros, (5,), {}), (T.ones, (5,), {}), (T.full, ((5,), 2.0), {}), (T.eye, (5,), {}),
             (T.randn, (5,), {}), (T.rand, (5,), {}), (T.linspace, (0, 1, 5), {}), (T.logspace, (0, 1, 5), {})]
    for fn, args, kwargs in cases:
        out = T.zeros(3)
        _, said = _warnings_of(fn, *args, out=out, **kwargs)
        assert not said, (fn, said)
        assert out.shape[0] == 5
    for fn, args in ((T.randperm, (4,)), (T.randint, (4, (5,)))):
        out = T.zeros(3, dtype=T.int64)
        _, said = _warnings_of(fn, *args, out=out)
        assert not said and out.shape[0] in (4, 5)
    T.manual_seed(123456)
    drawn = T.randint(0, 6, (10, 10))
    T.manual_seed(123456)
    into = T.empty((), dtype=T.int64)
    T.randint(6, (10, 10), out=into)
    same(into, values(drawn))
    same(drawn[0], [1, 4, 4, 5, 0, 3, 5, 5, 1, 4])


def test_randperm_out(T):
    for n in (4, 5, 6):
        noncontiguous = T.zeros((2, 3), dtype=T.long).t()
        T.manual_seed(5)
        expected = T.randperm(n)
        T.manual_seed(5)
        T.randperm(n, out=noncontiguous)
        same(noncontiguous, values(expected))
        assert sorted(values(expected).tolist()) == list(range(n))
    emptied = T.tensor(5, dtype=T.float32)
    T.randperm(0, out=emptied)
    assert emptied.numel() == 0
    for dtype, small, large in (("uint8", 2**8, 2**8 + 1), ("float16", 2**11 + 1, 2**11 + 2)):
        res = T.empty(0, dtype=getattr(T, dtype))
        T.randperm(small, out=res)
        assert sorted(values(res.long()).tolist()) == list(range(small))
        raises(RuntimeError, "", T.randperm, large, out=res)


# -- memory: empty's overflow, frombuffer of a read-only buffer ---------------------------------------------


def test_empty_overflow(T):
    for shape in ([2, 4, 2**29, 2**29], [8, 8, 2**29, 2**29]):
        raises(RuntimeError, "Storage size calculation overflowed with sizes=\\[", T.empty, shape, dtype=T.float64)
    raises(RuntimeError, "Storage size calculation overflowed with sizes=\\[8, 8\\] and strides=\\[",
           T.empty_strided, [8, 8], [2**61, 1], dtype=T.float64)


def test_frombuffer_of_read_only_bytes(T):
    # the warning comes once per process, as its words say (asked for here under set_warn_always(True))
    read_only = np.arange(3, dtype=np.float32).tobytes()
    T.set_warn_always(True)
    try:
        t, said = _warnings_of(T.frombuffer, read_only, dtype=T.float32)
    finally:
        T.set_warn_always(False)
    same(t, np.arange(3, dtype=np.float32))
    assert any(w.startswith("The given buffer is not writable, and PyTorch does not support non-writable tensors")
               for w in said), said
    for _ in range(2):  # (the first may warn, if nothing in this process has had the warning yet)
        _, said = _warnings_of(T.frombuffer, read_only, dtype=T.float32)
    assert not any(w.startswith("The given buffer is not writable") for w in said), said
    _, said = _warnings_of(T.frombuffer, bytearray(8), dtype=T.int32)
    assert not said


# -- casts, scalars -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["bool"] + INT_DTYPES)
def test_float_to_int_conversion(T, dtype):
    finite = [float(np.finfo(np.float32).min), -2, -1.5, -0.5, 0, 0.5, 1.5, 2, float(np.finfo(np.float32).max)]
    for vals in (finite, [float("-inf"), float("inf"), float("nan")]):
        with np.errstate(invalid="ignore"):
            expected = np.array(vals, dtype=np.float32).astype(dtype)
        same(T.tensor(vals, dtype=T.float32).to(getattr(T, dtype)), expected)


def test_offset_scalar_cast(T):
    assert int(T.tensor([1.0, 2.0, 3.0])[2:]) == 3


# -- layouts: the *_like factories, empty_strided, as_strided ----------------------------------------------


def _strided_cases(T):
    return [T.randn(4, 3, 2), T.randn(4, 3, 2)[:, :, ::2], T.empty_strided((4, 3, 2), (10, 3, 1)).fill_(1.0),
            T.empty_strided((4, 3, 2), (10, 0, 3)).fill_(1.0), T.empty_strided((4, 3, 2), (10, 1, 2)).fill_(1.0),
            T.empty_strided((4, 3, 2), (4, 2, 1))[:, :, ::2].fill_(1.0),
            T.empty_strided((4, 3, 2), (10, 1, 1)).fill_(1.0), T.empty_strided((4, 1, 1, 2), (10, 0, 0, 2)).fill_(1.0),
            T.empty_strided((4, 2, 3), (10, 3, 3)).fill_(1.0)]


def _like_factories(T):
    return [T.zeros_like, T.ones_like, T.empty_like, T.randn_like, T.rand_like, lambda t: T.full_like(t, 7),
            lambda t: T.randint_like(t, 10, 100), lambda t: T.randint_like(t, 100)]


def test_like_factories_strides(T):
    """Dense where the input is, else dense in the order of its strides: PyTorch's strides, for each layout
    (dense, sliced, gapped, zero-strided, overlapping) as it is and reversed."""
    expected = [((6, 2, 1), (1, 2, 6)), ((3, 1, 1), (1, 1, 3)), ((6, 2, 1), (1, 2, 6)), ((6, 2, 1), (1, 2, 6)),
                ((6, 1, 3), (3, 1, 6)), ((3, 1, 1), (1, 1, 3)), ((6, 2, 1), (1, 2, 6)),
                ((2, 2, 2, 1), (1, 2, 2, 2)), ((6, 1, 2), (2, 1, 6))]
    for t, strides in zip(_strided_cases(T), expected):
        n = t.dim()
        for order, stride in zip((tuple(range(n)), tuple(reversed(range(n)))), strides):
            tp = t.permute(order)
            for like in _like_factories(T):
                made = like(tp)
                assert tuple(made.shape) == tuple(tp.shape)
                if 1 not in tp.shape:  # (a size-1 dim's step: test_like_factories_strides_as_an_elementwise_op)
                    assert made.stride() == stride, (order, like, made.stride(), stride)


def test_like_factories_strides_as_an_elementwise_op(T, request):
    """PyTorch's own test: the *_like factories lay out their result as exp lays out its own."""
    xfail_on_chainrule(T, request, "an elementwise op's output layout for an input with zero or overlapping strides "
                       "follows NumPy's order, not TensorIterator's, and stride() reports row-major steps for a "
                       "size-1 dim where PyTorch keeps the sliced step")
    for t in _strided_cases(T):
        for order in itertools.permutations(range(t.dim())):
            tp = t.permute(order)
            for like in _like_factories(T):
                assert like(tp).stride() == T.exp(tp).stride()


def test_empty_strided_and_new_empty_strided(T):
    for strides in [(12, 4, 1), (2, 4, 6), (0, 0, 0)]:
        made = T.empty_strided((2, 3, 4), strides)
        assert tuple(made.shape) == (2, 3, 4) and made.stride() == strides
        x = T.zeros(5, 5, dtype=T.int32)
        new = x.new_empty_strided((2, 3, 4), strides)
        assert new.stride() == strides and new.dtype == T.int32
    assert T.zeros(5, dtype=T.int32).new_empty_strided([5, 3], [0, 1]).stride() == (0, 1)
    assert T.zeros(5).new_empty_strided([], []).shape == ()


def test_empty_strided_of_no_elements_keeps_its_strides(T, request):
    xfail_on_chainrule(T, request, "stride() reports row-major steps for a tensor of no elements, whatever strides "
                       "empty_strided was given")
    for strides in [(12, 4, 1), (2, 4, 6), (0, 0, 0)]:
        assert T.empty_strided((0, 2, 0), strides).stride() == strides


def test_as_strided_refusals(T):
    negative = r"as_strided: Negative strides are not supported at the moment, got strides: \[-?[0-9]+(, -?[0-9]+)*\]"
    raises(RuntimeError, negative, T.as_strided, T.ones(3, 3), (1, 1), (2, -1))
    raises(RuntimeError, negative, T.as_strided, T.ones(14), (2,), (-11,))
    for shape, strides in [((1,), ()), ((1, 2), (1,))]:
        raises(RuntimeError, "mismatch in length of strides and shape", T.tensor(0.42).as_strided, shape, strides)
        raises(RuntimeError, "mismatch in length of strides and shape", T.tensor(0.42).as_strided_, shape, strides)


def test_empty_tensor_props(T):
    for size in [(0,), (0, 3), (5, 0), (5, 0, 3, 0, 2), (0, 3, 0, 2), (0, 5, 0, 2, 0)]:
        x = T.empty(size)
        assert tuple(x.shape) == size and x.is_contiguous()
        assert x.stride() == T.empty(tuple(n or 1 for n in size)).stride()


# -- constructors ------------------------------------------------------------------------------------------


def test_new_tensor(T):
    expected = T.ByteTensor([1, 1])
    res = expected.new_tensor([1, 1])
    same(res, np.array([1, 1], dtype=np.uint8), dtype="uint8")
    assert expected.new_tensor([1, 1], dtype=T.int).dtype == T.int32
    copy = expected.new_tensor(expected)
    copy[1] = 2
    same(expected, np.array([1, 1], dtype=np.uint8))
    array = np.array([5.0])
    res = T.tensor(array).new_tensor(array)
    array[0] = 7.0
    assert res[0].item() == 5.0


def test_tensor_device(T):
    assert T.tensor(5).device.type == "cpu"
    assert T.ones((2, 3), dtype=T.float32, device="cpu:0").device.type == "cpu"
    assert T.tensor(T.ones((2, 3)), device="cpu:0").device.type == "cpu"
    assert T.tensor(np.random.randn(2, 3), device="cpu").device.type == "cpu"


def test_block_diag_against_scipy(T):
    scipy_linalg = pytest.importorskip("scipy.linalg")
    cases = [([1, [2], [], [3, 4, 5], [[], []], [[6], [7.3]]], "float32"),
             ([[[1, 2], [3, 4]], [1]], "int64"),
             ([[[4, 9], [7, 10]], [4.6, 9.12], [1j + 3]], "complex64"),
             ([], "float32")]
    for parts, dtype in cases:
        result = T.block_diag(*[T.tensor(p) for p in parts])
        assert result.dtype == getattr(T, dtype)
        same(result, scipy_linalg.block_diag(*parts).astype(dtype))


def test_asarray_of_a_buffer(T):
    """An object with the buffer protocol (bytes, bytearray, array.array, a memoryview) is read as raw bytes of
    the given dtype, or of the default dtype: aliased, or copied with copy=True."""
    import array

    floats = array.array("f", [1.0, 2.0])
    same(T.asarray(floats), np.array([1.0, 2.0], dtype=np.float32))
    same(T.asarray(floats, dtype=T.uint8), np.array([1.0, 2.0], dtype=np.float32).view(np.uint8))
    doubles = np.arange(4.0)
    view = T.asarray(memoryview(doubles))  # (float64's bytes read as float32)
    same(view, doubles.view(np.float32))
    assert view.data_ptr() == doubles.__array_interface__["data"][0]
    copied = T.asarray(memoryview(doubles), dtype=T.float64, copy=True)
    assert copied.data_ptr() != doubles.__array_interface__["data"][0]
    same(copied, doubles)
    aliased = T.asarray(memoryview(doubles), dtype=T.float64, copy=False)
    doubles[0] = 5.0
    assert aliased[0].item() == 5.0 and copied[0].item() == 0.0
    same(T.asarray(bytearray(b"abcd"), dtype=T.uint8), [97, 98, 99, 100])
    raises(ValueError, r"buffer length \(25 bytes\) after offset \(0 bytes\) must be a multiple of element size "
           r"\(4\)", T.asarray, memoryview(np.ones(25, dtype=bool)))
    same(T.asarray(np.float32(2.5)), np.float32(2.5))  # (a NumPy scalar is its number, not its bytes)
    raises(RuntimeError, "can't alias NumPy scalars", T.asarray, np.float64(1.5), copy=False)


def test_legacy_constructors_and_device(T):
    legacy = "legacy constructor expects device type: cpu but device type: cuda was passed"
    for make in (T.FloatTensor, T.Tensor):
        raises(RuntimeError, legacy, make, device="cuda")
        raises(RuntimeError, legacy, make, T.Size([2, 3, 4]), device="cuda")
        raises(RuntimeError, legacy, make, (2.0, 3.0), device="cuda")
        same(make((2.0, 3.0), device="cpu"), np.array([2.0, 3.0], dtype=np.float32))
    i = T.tensor([1])
    raises(RuntimeError, r"Legacy tensor constructor of the form torch.Tensor\(tensor, device=device\) is not "
           "supported", T.Tensor, i, device="cpu")
    raises(RuntimeError, r"Legacy tensor new of the form tensor.new\(tensor, device=device\) is not supported",
           i.new, i, device="cpu")
    x = T.randn(3)
    raises(RuntimeError, legacy, x.new, device="cuda")
    raises(RuntimeError, legacy, x.new, T.Size([2, 3, 4]), device="cuda")
    raises(RuntimeError, legacy, x.new, (2.0, 3.0), device="cuda")
    assert tuple(x.new(T.Size([2, 3]), device="cpu").shape) == (2, 3)


def test_zeros_out_dtype_and_layout(T):
    out = T.zeros(3, 4)
    raises(RuntimeError, "", T.zeros, (3, 4), dtype=T.int64, out=out)
    raises(RuntimeError, "layout Sparse does not match layout of out parameter", T.zeros, (3, 4),
           layout=T.sparse_coo, out=out)
    same(T.zeros((3, 4), dtype=out.dtype, out=out), np.zeros((3, 4), dtype=np.float32))
    same(T.zeros((3, 4), layout=T.strided, out=out), np.zeros((3, 4), dtype=np.float32))
    made = T.zeros((2, 3), dtype=T.int16, layout=T.strided)
    assert made.dtype == T.int16 and made.layout == T.strided and made.device.type == "cpu"
    raises(RuntimeError, "", T.zeros, (2, 3), dtype=T.float32, out=T.zeros(2, 3, dtype=T.float64))


def test_set_default_dtype_refuses_other_kinds(T):
    saved = T.get_default_dtype()
    try:
        for dtype in ("bool", "uint8", "int8", "int16", "int32", "int64", "complex64", "complex128"):
            raises(TypeError, "only floating-point types are supported as the default type", T.set_default_dtype,
                   getattr(T, dtype))
        for dtype in ("float16", "float64", "float32"):
            T.set_default_dtype(getattr(T, dtype))
            assert T.get_default_dtype() == getattr(T, dtype) and T.tensor([1.5]).dtype == getattr(T, dtype)
    finally:
        T.set_default_dtype(saved)
    assert T.uint8 is T.ByteTensor.dtype and T.float32 is T.FloatTensor.dtype and T.float64 is T.DoubleTensor.dtype


@pytest.mark.parametrize("ctor", ["DoubleTensor", "FloatTensor", "HalfTensor"])
def test_legacy_constructor_of_numpy_arrays(T, ctor):
    """The typed constructors take an array of any dtype, cast to their own (up or down)."""
    for dtype in ("float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint8", "bool"):
        array = np.array([1, 2, 3, 4], dtype=dtype)
        made = getattr(T, ctor)(array)
        same(made, array.astype({"DoubleTensor": "float64", "FloatTensor": "float32", "HalfTensor": "float16"}[ctor]))


def test_cat_channels_last(T):
    cl = T.channels_last
    x, y = T.randn(4, 3, 8, 8), T.randn(4, 3, 8, 8)
    joined = T.cat((x, y))
    into = joined.clone().contiguous(memory_format=cl)
    same(T.cat((x, y), out=into), values(joined))  # (out= in channels_last: its layout kept)
    assert into.is_contiguous(memory_format=cl)
    for dim in range(4):
        a, b = T.randn(2, 5, 3, 3), T.randn(2, 5, 3, 3)
        plain = T.cat((a, b), dim=dim)
        both = T.cat((a.contiguous(memory_format=cl), b.contiguous(memory_format=cl)), dim=dim)
        assert both.is_contiguous(memory_format=cl)
        same(both, values(plain))
    z = T.arange(24, dtype=T.float32).reshape(2, 2, 3, 2).to(memory_format=cl)
    halves = T.cat((z[:, :, :2], z[:, :, 1:]), dim=-1)
    same(halves, np.concatenate([values(z)[:, :, :2], values(z)[:, :, 1:]], axis=-1))
    assert halves.is_contiguous(memory_format=cl)


def test_ranges_into_an_expanded_out(T):
    x = T.rand(1).expand(10)
    raises(RuntimeError, "unsupported operation", T.linspace, 1, 10, 10, out=x)
    raises(RuntimeError, "unsupported operation", T.logspace, 1, 10, 10, out=x)
    raises(RuntimeError, "", T.arange, 10, out=T.empty(1).expand(10))


def test_randint_of_floats_rounds_its_bounds_as_random_(T):
    """randint into a floating dtype is empty(...).random_(low, high): the bounds rounded into the dtype, and the
    precision warning past its exact integers."""
    T.manual_seed(3)
    drawn, said = _warnings_of(T.randint, 0, 2**29, (4,), dtype=T.float32)
    assert drawn.tolist() == [322108832.0, 3446179.0, 399205952.0, 391636576.0]
    assert any(w.startswith("to - 1 is out of bounds [-(2^24), 2^24]") for w in said), said
    T.manual_seed(3)
    drawn, _ = _warnings_of(T.randint, 0, 4096, (4,), dtype=T.float16)
    assert drawn.tolist() == [2496.0, 2624.0, 2292.0, 2748.0]
