"""Tensor creation ported from PyTorch's test/test_tensor_creation_ops.py (TestTensorCreation,
TestRandomTensorCreation, TestLikeTensorCreation, TestBufferProtocol and TestAsArray, without the CUDA,
meta, sparse and memory-format tests): zeros/ones/full/empty and their dtypes, full's dtype inference,
arange/range/linspace/logspace (inference, rounding, errors), eye, tensor()/as_tensor()/asarray() dtype
inference and sharing, from_numpy/frombuffer, the *_like factories, tril_indices/triu_indices,
cartesian_prod, combinations, meshgrid, randint/randperm/random_/normal, complex/polar, block_diag,
diagflat/diag_embed, vander, roll, cat/stack and the h/v/d splits and stacks, repeat_interleave.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import itertools
import math
import warnings

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values

DTYPES = ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "complex64",
          "complex128"]


def test_diag_embed_and_diagflat(T):
    x = T.arange(3 * 4, dtype=T.float32).view(3, 4)
    same(T.diag_embed(x), np.stack([np.diag(r) for r in values(x)]))
    same(T.diag_embed(x, offset=1, dim1=0, dim2=2), np.stack([np.diag(r, 1) for r in values(x)], 1))
    v = T.randn(10)
    same(T.diagflat(v), np.diag(values(v)))
    same(T.diagflat(v, 3), np.diag(values(v), 3))
    m = T.randn(2, 3, 4).transpose(2, 0)
    same(T.diagflat(m), np.diag(values(m).reshape(-1)))
    same(T.diagflat(T.ones(4, dtype=T.complex128)), np.eye(4, dtype=np.complex128), "complex128")


def test_vander(T):
    assert tuple(T.vander(T.tensor([]), 0).shape) == (0, 0)
    x = T.tensor([1, 2, 3, 5])
    raises(RuntimeError, "N must be non-negative.", T.vander, x, N=-1)
    raises(RuntimeError, "x must be a one-dimensional tensor.", T.vander, T.stack((x, x)))


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64", "float32", "float64",
                                   "complex64", "complex128"])
def test_vander_types(T, dtype):
    if dtype == "uint8":
        xs = [[1, 2, 3, 5], [0, 1 / 3, 1, math.pi, 3 / 7]]
    elif dtype == "bool":
        xs = [[True, True, True, True], [False, True, True, True, True]]
    elif dtype.startswith("complex"):
        xs = [[1 + 1j, 1 + 0j, 0 + 1j, 0 + 0j], [2 + 2j, 3 + 2j, 4 + 3j, 5 + 4j]]
    else:
        xs = [[1, 2, 3, 5], [-math.pi, 0, 1 / 3, 1, math.pi, 3 / 7]]
    for x, n, increasing in itertools.product(xs, (None, 0, 1, 3), (False, True)):
        t = T.tensor(x, dtype=getattr(T, dtype))
        result = T.vander(t, increasing=increasing) if n is None else T.vander(t, n, increasing)
        expected = np.vander(np.array(x).astype(dtype), n, increasing)
        close(result, expected, rtol=0, atol=1e-3)
        assert dtype_name(result) == ("int64" if dtype in ("bool", "uint8", "int8", "int16", "int32") else dtype)


def test_cat_all_dtypes(T):
    for dt in DTYPES:
        x = T.tensor([[1, 2], [3, 4]], dtype=getattr(T, dt))
        same(T.cat((x, x), 0), np.array([[1, 2], [3, 4], [1, 2], [3, 4]]).astype(dt), dt)
        same(T.cat((x, x), 1), np.array([[1, 2, 1, 2], [3, 4, 3, 4]]).astype(dt), dt)


def test_fill_all_dtypes(T):
    for dt in DTYPES:
        for x in (T.tensor((10, 10), dtype=getattr(T, dt)), T.empty(1000, dtype=getattr(T, dt))):
            bound = 100 if dt in ("uint8", "int8") else 2000
            for n in range(-bound, bound, bound // 10):
                x.fill_(n)
                expected = np.full(x.numel(), n).astype(dt) if dt != "uint8" else np.full(x.numel(), n % 256)
                same(x, expected, dt)


def test_roll(T):
    numbers = T.arange(1, 9)
    same(numbers.roll(1, 0), [8, 1, 2, 3, 4, 5, 6, 7])
    same(numbers.roll(-2, 0), [3, 4, 5, 6, 7, 8, 1, 2])
    data = numbers.view(2, 2, 2)
    same(data.roll(1, 0), np.array([5, 6, 7, 8, 1, 2, 3, 4]).reshape(2, 2, 2))
    data = data.view(2, 4)
    same(data.roll(2, 0).roll(4, 1), values(data))
    same(data.roll(-20, 0).roll(-40, 1), values(data))
    strided = numbers.view(2, 4).transpose(0, 1)
    assert not strided.is_contiguous()
    same(strided.roll(1, 0), np.array([4, 8, 1, 5, 2, 6, 3, 7]).reshape(4, 2))
    same(data.roll(1), np.roll(values(numbers), 1).reshape(2, 4))
    same(data.roll(1, dims=None), np.roll(values(numbers), 1).reshape(2, 4))
    same(data.roll(shifts=(2, -1), dims=(1, 0)), [[7, 8, 5, 6], [3, 4, 1, 2]])
    raises(RuntimeError, "required", lambda: data.roll(shifts=(), dims=()))
    raises(RuntimeError, "required", lambda: data.roll(shifts=(), dims=1))
    raises(RuntimeError, "align", lambda: data.roll(shifts=(1, 2), dims=(1,)))
    raises(RuntimeError, "align", lambda: data.roll(shifts=(1,), dims=(1, 2)))
    t = T.zeros(6, dtype=T.bool)
    t[0] = True
    t[3] = True
    same(t.roll(1, 0), [False, True, False, False, True, False])
    t = T.tensor([1, 2 + 1j, 3.5, 4.0 + 2j, 5j, 6.0])
    t[0] = 1 + 0.5j
    t[3] = 4.0
    same(t.roll(1, 0), np.array([6.0, 1 + 0.5j, 2 + 1j, 3.5, 4.0, 5j], dtype=np.complex64))


@pytest.mark.parametrize("dtype", ["bool", "int64", "float32", "complex64"])
def test_triu_tril(T, dtype):
    for shape in [(3, 3), (5, 3, 3), (7, 3), (5, 7, 3), (3, 7), (3, 0), (0, 3, 3), (3, 1), (1, 3, 3, 3)]:
        x = T.empty(*shape, dtype=getattr(T, dtype)).fill_(2)
        xn = values(x)
        for diagonal in (-2, -1, 0, 1, 2):
            for upper, np_fn in ((True, np.triu), (False, np.tril)):
                fn = T.triu if upper else T.tril
                res1 = fn(x, diagonal=diagonal)
                res2 = T.empty(0, dtype=getattr(T, dtype))
                fn(x, diagonal=diagonal, out=res2)
                same(res1, np_fn(xn, diagonal), dtype)
                same(res2, values(res1))
                if 0 not in shape and len(shape) > 2:
                    nc = x.clone().transpose(0, 1)
                    same(fn(nc, diagonal), np_fn(values(nc), diagonal))
                    y = nc.clone()
                    getattr(y, "triu_" if upper else "tril_")(diagonal)
                    same(y, np_fn(values(nc), diagonal))


def test_block_diag(T):
    tensors = [T.rand(2, 2), T.rand(2, 3), T.rand(10), T.rand(8, 1), T.rand(1)[0]]
    expected = np.zeros((2 + 2 + 1 + 8 + 1, 2 + 3 + 10 + 1 + 1), dtype=np.float32)
    r = c = 0
    for t in tensors:
        a = np.atleast_2d(values(t))
        expected[r:r + a.shape[0], c:c + a.shape[1]] = a
        r, c = r + a.shape[0], c + a.shape[1]
    same(T.block_diag(*tensors), expected)
    t = T.rand(1)[0]
    same(T.block_diag(t), values(t).reshape(1, 1))
    t = T.rand(10)
    same(T.block_diag(t), values(t).reshape(1, 10))
    same(T.block_diag(), np.empty((1, 0)), "float32")
    kinds = ["uint8", "int8", "int16", "int32", "int64", "float32", "float64", "complex64", "complex128"]
    for d1, d2 in itertools.product(kinds, kinds):
        a, b = T.tensor(1, dtype=getattr(T, d1)), T.tensor(2, dtype=getattr(T, d2))
        same(T.block_diag(a, b), [[1, 0], [0, 2]], dtype_name(T.result_type(a, b)))
    raises(RuntimeError, "torch.block_diag: Input tensors must have 2 or fewer dimensions. Input 1 has 3 dimensions",
           T.block_diag, T.tensor(5), T.tensor([[[6]]]))
    raises(RuntimeError, "torch.block_diag: Input tensors must have 2 or fewer dimensions. Input 0 has 4 dimensions",
           T.block_diag, T.tensor([[[[6]]]]))
    for tensors, expected_dtype in (([[[1, 2], [3, 4]], [1]], "int64"), ([[[4, 9], [7, 10]], [4.6, 9.12], [1j + 3]],
                                                                        "complex64")):
        assert dtype_name(T.block_diag(*[T.tensor(t) for t in tensors])) == expected_dtype


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_complex_and_polar(T, dtype):
    complex_dtype = {"float16": "complex32", "float32": "complex64", "float64": "complex128"}[dtype]
    real = T.tensor([1, 2], dtype=getattr(T, dtype))
    imag = T.tensor([3, 4], dtype=getattr(T, dtype))
    if dtype != "float16":
        same(T.complex(real, imag), np.array([1 + 3j, 2 + 4j]).astype(complex_dtype), complex_dtype)
        absolute = T.tensor([1, 2, -3, -4.5, 1, 1], dtype=getattr(T, dtype))
        angle = T.tensor([math.pi / 2, 5 * math.pi / 4, 0, -11 * math.pi / 6, math.pi, -math.pi],
                         dtype=getattr(T, dtype))
        z = T.polar(absolute, angle)
        assert dtype_name(z) == complex_dtype
        close(z, [1j, -1.41421356237 - 1.41421356237j, -3, -3.89711431703 - 2.25j, -1, -1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "complex64", "complex128", "bool"])
def test_complex_floating_dtype_error(T, dtype):
    a = T.tensor([1, 2], dtype=getattr(T, dtype))
    b = T.tensor([3, 4], dtype=getattr(T, dtype))
    for op in (T.complex, T.polar):
        raises(RuntimeError, r"Expected both inputs to be Half, Float or Double tensors but got [A-Za-z]+ and "
               r"[A-Za-z]+", op, a, b)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_complex_same_dtype_and_out_errors(T, dtype):
    name = {"float32": "Float", "float64": "Double"}
    other = "float64" if dtype == "float32" else "float32"
    cname = {"float32": "ComplexFloat", "float64": "ComplexDouble"}[dtype]
    for op in (T.complex, T.polar):
        a = T.tensor([1, 2], dtype=getattr(T, dtype))
        b = T.tensor([3, 4], dtype=getattr(T, other))
        raises(RuntimeError, f"Expected object of scalar type {name[dtype]} but got scalar type {name[other]} for "
               "second argument", op, a, b)
        out = T.zeros(2, dtype=getattr(T, dtype))
        raises(RuntimeError, f"Expected object of scalar type {cname} but got scalar type {name[dtype]} for "
               "argument 'out'", op, a, a, out=out)


def test_cat_empty(T):
    x = T.randn(4, 3, 8, 8)
    empty = T.randn(0)
    same(T.cat([x, empty], dim=1), values(x))
    same(T.cat([empty, x], dim=1), values(x))
    same(T.cat([empty, empty], dim=1), np.empty(0, dtype=np.float32))
    raises((RuntimeError, ValueError), "non-empty list of Tensors", T.cat, [], dim=1)
    empty = T.randn(4, 0, 8, 8)
    same(T.cat([x, empty], dim=1), values(x))
    same(T.cat([empty, x], dim=1), values(x))
    same(T.cat([empty, empty], dim=1), np.empty((4, 0, 8, 8)))
    for bad in (T.randn(4, 0, 7, 8), T.randn(4, 0)):
        raises(RuntimeError, "", T.cat, [x, bad], dim=1)
        raises(RuntimeError, "", T.cat, [bad, x], dim=1)


def test_cat_out_and_errors(T):
    x = T.zeros(10, 5, 2)
    y = x.narrow(1, 0, 3)
    val = T.full_like(y[0], 3.0)
    T.cat((val[None],) * y.shape[0], dim=0, out=y)
    expected = np.zeros((10, 5, 2), dtype=np.float32)
    expected[:, :3] = 3.0
    same(x, expected)
    w = T.arange(24.0)
    b = T.cat([w[:2], w[4:6]], out=T.empty(4))
    same(b, [0.0, 1.0, 4.0, 5.0])
    raises(RuntimeError, "", T.cat, [T.randn(2, 1), T.randn(2, 1, 1), T.randn(2, 1, 1)])
    raises(RuntimeError, "", T.cat, [T.randn(2, 1, 2), T.randn(2, 1, 1), T.randn(2, 2, 1)], dim=1)
    raises(RuntimeError, "zero-dimensional.*cannot be concatenated", T.cat, [T.tensor(0), T.tensor(1)])
    raises(TypeError, "got None|NoneType", T.cat, [T.ones(2), None])


@pytest.mark.parametrize("dtype", ["float16", "float64", "int32"])
def test_cat_and_stack(T, dtype):
    rng = np.random.default_rng(70)
    for dim in range(-3, 3):
        pos = dim % 3
        parts = [T.tensor(rng.integers(-100, 100, (n, 5, 5)).astype(dtype)).transpose(0, pos) for n in (13, 17, 19)]
        res = T.cat(parts, dim)
        same(res.narrow(pos, 0, 13), values(parts[0]))
        same(res.narrow(pos, 13, 17), values(parts[1]))
        same(res.narrow(pos, 30, 19), values(parts[2]))
    x = T.tensor(rng.integers(-100, 100, (20, 5, 5)).astype(dtype))
    same(T.cat(T.split(x, 7)), values(x))
    same(T.cat(T.chunk(x, 7)), values(x))
    parts = [T.tensor(rng.integers(-100, 100, (2, 3, 4)).astype(dtype)) for _ in range(3)]
    for dim in range(4):
        res = T.stack(parts, dim)
        same(T.stack(parts, dim - 4), values(res))
        assert tuple(res.shape) == (2, 3, 4)[:dim] + (3,) + (2, 3, 4)[dim:]
        for i in range(3):
            same(res.select(dim, i), values(parts[i]))
        out = T.empty(0, dtype=getattr(T, dtype))
        T.stack(parts, dim, out=out)
        same(out, values(res))


def _split_cases(name):
    return {
        "hsplit": (1, [((), 3), ((), [2, 4, 6]), ((6,), 2), ((6,), 4), ((6,), [2, 5]), ((6,), [7, 9]), ((3, 8), 4),
                       ((3, 8), 5), ((3, 8), [1, 5]), ((3, 8), [3, 8]), ((5, 5, 5), 2), ((5, 5, 5), [1, 4]),
                       ((5, 0, 5), 3), ((5, 5, 0), [2, 6])]),
        "vsplit": (0, [((6,), 2), ((6,), 4), ((6, 5), 2), ((6, 5), 4), ((6, 5), [1, 2, 3]), ((6, 5), [1, 5, 9]),
                       ((6, 5, 5), 2), ((6, 0, 5), 2), ((5, 0, 5), [1, 5])]),
        "dsplit": (2, [((6,), 4), ((6, 6), 3), ((5, 5, 6), 2), ((5, 5, 6), 4), ((5, 5, 6), [1, 2, 3]),
                       ((5, 5, 6), [1, 5, 9]), ((5, 5, 0), 2), ((5, 0, 6), 4), ((5, 0, 6), [1, 2, 3])]),
    }[name]


@pytest.mark.parametrize("name", ["hsplit", "vsplit", "dsplit"])
@pytest.mark.parametrize("dtype", ["int64", "float32", "complex64"])
def test_hvd_split(T, name, dtype):
    dim, inputs = _split_cases(name)
    rng = np.random.default_rng(71)
    for shape, arg in inputs:
        direction = dim - (len(shape) == 1 and dim == 1)
        bound = dim + 2 * (dim == 0) + (dim == 2)
        error_expected = len(shape) < bound or (not isinstance(arg, list) and shape[direction] % arg != 0)
        data = rng.integers(-9, 9, shape).astype(dtype)
        t = T.tensor(data)
        if not error_expected:
            got = getattr(T, name)(t, arg)
            expected = getattr(np, name)(data, arg)
            assert len(got) == len(expected)
            for g, e in zip(got, expected):
                same(g, e, dtype)
        else:
            words = f"torch.{name} requires a tensor with at least " if len(shape) < bound else \
                f"torch.{name} attempted to split along dimension "
            raises(RuntimeError, words, getattr(T, name), t, arg)


@pytest.mark.parametrize("name, np_name", [("hstack", "hstack"), ("column_stack", "column_stack"),
                                           ("vstack", "vstack"), ("row_stack", "vstack"), ("dstack", "dstack")])
def test_special_stacks(T, name, np_name):
    fn, np_fn = getattr(T, name), getattr(np, np_name)
    raises(TypeError, "must be tuple of Tensors, not Tensor", fn, T.randn(10))
    rng = np.random.default_rng(72)
    scalars = [rng.uniform(0, 10, ()).astype(np.float32) for _ in range(3)]
    same(fn([T.tensor(s) for s in scalars]), np_fn(scalars))
    for shapes in ([(3,), (4,)], [(2, 3), (2, 5)], [(2, 3), (4, 3)], [(2, 3, 1), (2, 3, 2)], [(3,), (1, 3)],
                   [(3,), (1, 3), (1, 3, 1)], [(2, 4), (2, 4, 1)]):
        arrays = [rng.integers(0, 9, s).astype(np.float32) for s in shapes]
        try:
            expected = np_fn(arrays)
        except ValueError:
            raises(RuntimeError, "", fn, [T.tensor(a) for a in arrays])
            continue
        same(fn([T.tensor(a) for a in arrays]), expected)


@pytest.mark.parametrize("dtype", ["int32", "int64"])
def test_large_linspace(T, dtype):
    start = np.iinfo(dtype).min
    end = np.iinfo(dtype).max & ~0xFFF
    x = T.linspace(start, end, 15, dtype=getattr(T, dtype))
    assert (x[1] - x[0]).item() > (end - start) / 15


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_unpack_double(T, dtype):
    for val in (2**24 + 1, 2**53 + 1, np.iinfo(np.int64).max, np.iinfo(np.uint64).max, np.iinfo(np.uint64).max + 1,
                -1e500, 1e500):
        same(T.tensor(val, dtype=getattr(T, dtype)), np.array(val, dtype=dtype))


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64"])
def test_float_to_int_conversion_finite(T, dtype):
    fmin, fmax = float(np.finfo(np.float32).min), float(np.finfo(np.float32).max)
    vals = (-2, -1.5, -0.5, 0, 0.5, 1.5, 2) if dtype != "bool" else (fmin, -2, -1.5, -0.5, 0, 0.5, 1.5, 2, fmax)
    with np.errstate(invalid="ignore"):
        expected = np.array(vals, dtype=np.float32).astype(dtype)
    same(T.tensor(vals, dtype=T.float).to(getattr(T, dtype)), expected, dtype)


def test_zeros_ones_and_out(T):
    res2 = T.tensor(())
    T.zeros(10, 10, out=res2)
    same(res2, np.zeros((10, 10)), "float32")
    same(T.zeros(2, 2, dtype=T.bool), np.zeros((2, 2), dtype=bool), "bool")
    same(T.zeros(1, 1, dtype=T.half), [[0.0]], "float16")
    same(T.zeros(2, 2, dtype=T.complex64), np.zeros((2, 2)), "complex64")
    out = T.zeros(3, 4)
    T.zeros((3, 4), out=out)
    raises(RuntimeError, "", lambda: T.zeros((3, 4), dtype=T.int64, out=out))
    raises(RuntimeError, "", lambda: T.zeros((2, 3), dtype=T.float32, out=T.empty(2, 3, dtype=T.double)))
    same(T.zeros((3, 4), dtype=out.dtype, out=out), np.zeros((3, 4)))
    same(T.zeros((3, 4), layout=T.strided, out=out), np.zeros((3, 4)))
    res2 = T.tensor(())
    T.ones(10, 10, out=res2)
    same(res2, np.ones((10, 10)))
    same(T.ones(1, 2, dtype=T.bool), [[True, True]], "bool")
    for dt in ("bool", "uint8", "int16", "int64", "float16", "float32", "complex64"):
        t = T.zeros((2, 3), dtype=getattr(T, dt), layout=T.strided)
        assert t.dtype is getattr(T, dt) and t.layout is T.strided and t.device == T.device("cpu")


def test_factory_size_forms(T):
    for make in (T.zeros, T.ones, T.empty, T.rand, T.randn):
        for args in ((2, 3), ((2, 3),), ([2, 3],), (T.Size([2, 3]),)):
            assert tuple(make(*args).shape) == (2, 3)
        assert tuple(make(()).shape) == () and tuple(make([]).shape) == ()
        assert tuple(make(size=(2, 3)).shape) == (2, 3)
    assert tuple(T.full((2, 3), 7).shape) == (2, 3) and tuple(T.full([], 7).shape) == ()
    raises(RuntimeError, "non-negative|negative dimension", T.zeros, 2, -1)


def test_tensor_factories_empty(T):
    for shape in [(5, 0, 1), (0,), (0, 0, 1, 0, 2, 0, 0)]:
        for dt in DTYPES:
            d = getattr(T, dt)
            z = T.zeros(shape, dtype=d)
            for t in (z, T.zeros_like(z), T.full(shape, 3, dtype=d), T.full_like(z, 3), T.ones(shape, dtype=d),
                      T.ones_like(z), T.empty(shape, dtype=d), T.empty_like(z),
                      T.empty_strided(shape, (0,) * len(shape), dtype=d)):
                assert tuple(t.shape) == shape and t.dtype is d
            if dt == "bool":
                assert tuple(T.randint(2, shape, dtype=d).shape) == shape
                assert tuple(T.randint_like(z, 2).shape) == shape
            elif dt.startswith("complex"):
                raises(RuntimeError, "", T.randint, 6, shape, dtype=d)
            else:
                assert tuple(T.randint(6, shape, dtype=d).shape) == shape
                assert tuple(T.randint_like(z, 6).shape) == shape
            if not dt.startswith(("float", "complex")):
                raises(RuntimeError, "", T.rand, shape, dtype=d)
            if dt in ("float32", "float64") or dt.startswith("complex"):
                assert tuple(T.randn(shape, dtype=d).shape) == shape
                assert tuple(T.randn_like(z).shape) == shape
    assert tuple(T.arange(0).shape) == (0,)
    assert tuple(T.eye(0).shape) == (0, 0) and tuple(T.eye(0, 0).shape) == (0, 0)
    assert tuple(T.eye(5, 0).shape) == (5, 0) and tuple(T.eye(0, 5).shape) == (0, 5)
    assert tuple(T.linspace(1, 1, 0).shape) == (0,) and tuple(T.logspace(1, 1, 0).shape) == (0,)
    assert tuple(T.randperm(0).shape) == (0,)
    for window in (T.bartlett_window, T.hamming_window, T.hann_window, T.kaiser_window):
        assert tuple(window(0).shape) == (0,)
    assert tuple(T.bartlett_window(0, periodic=False).shape) == (0,)
    assert tuple(T.tensor([[[]]]).shape) == (1, 1, 0) and tuple(T.as_tensor([[[]]]).shape) == (1, 1, 0)


def test_repeat_interleave(T):
    x = T.tensor([0, 1, 2, 3])
    same(T.repeat_interleave(x), [1, 2, 2, 3, 3, 3])
    raises(RuntimeError, "", T.repeat_interleave, T.arange(4).reshape(2, 2))
    raises(RuntimeError, "", T.repeat_interleave, T.arange(4.0))
    raises(RuntimeError, "", T.repeat_interleave, T.tensor([1, 2, -1, 3, 4]))
    y = T.tensor([[1, 2], [3, 4]])
    for repeats in (2, T.tensor(2), T.tensor([2])):
        same(T.repeat_interleave(y, repeats), [1, 1, 2, 2, 3, 3, 4, 4])
    same(T.repeat_interleave(y, 3, dim=1), [[1, 1, 1, 2, 2, 2], [3, 3, 3, 4, 4, 4]])
    same(T.repeat_interleave(y, T.tensor([1, 2]), dim=0), [[1, 2], [3, 4], [3, 4]])
    raises(RuntimeError, "", T.repeat_interleave, y, T.tensor([1, 2, 3]), dim=0)
    raises(RuntimeError, "", T.repeat_interleave, y, T.arange(9).reshape(3, 3), dim=0)
    same(T.repeat_interleave(T.zeros(5, 0), repeats=3, dim=1), np.zeros((5, 0)))
    e = T.tensor([], dtype=T.int64)
    same(T.repeat_interleave(e, e), np.zeros(0), "int64")


def test_new_methods_requires_grad(T):
    size = (10,)
    for name, args in (("new_full", [size, 1]), ("new_empty", [size]), ("new_zeros", [size]), ("new_ones", [size])):
        x = T.randn(size)
        for requires_grad in (True, False):
            assert getattr(x, name)(*args, requires_grad=requires_grad).requires_grad == requires_grad
        x = T.randint(10, size)
        raises(RuntimeError, "", getattr(x, name), *args, requires_grad=True)
        assert getattr(x, name)(*args).dtype == T.int64


def test_tensor_messages(T, request):
    raises(RuntimeError, "Only Tensors of floating point and complex dtype can require gradients",
           T.randint(10, (3,)).new_zeros, 2, requires_grad=True)
    raises(RuntimeError, "", float, T.tensor(1.5j))
    raises(RuntimeError, "", int, T.tensor(1.5j))
    assert complex(T.tensor(1.5j)) == 1.5j


def test_new_factories_dtype_and_values(T):
    x = T.zeros(2, dtype=T.float64)
    same(x.new_full((2, 2), 3), np.full((2, 2), 3.0), "float64")
    same(x.new_ones(3, dtype=T.int32), [1, 1, 1], "int32")
    same(x.new_zeros((1, 2)), [[0.0, 0.0]], "float64")
    same(x.new_tensor([1, 2]), [1.0, 2.0], "float64")  # (new_tensor takes x's dtype, whatever the data)
    same(x.new_tensor(np.array([1.5, 2], dtype=np.float32)), [1.5, 2.0], "float64")
    same(x.new_tensor([1, 1], dtype=T.int32), [1, 1], "int32")
    b = T.tensor([1, 1], dtype=T.uint8)
    copy = b.new_tensor(b)
    copy[1] = 2
    same(b, [1, 1])


def test_tensor_from_sequence(T):
    class MockSequence:
        def __init__(self, lst):
            self.lst = lst

        def __len__(self):
            return len(self.lst)

        def __getitem__(self, item):
            raise TypeError

    class GoodMockSequence(MockSequence):
        def __getitem__(self, item):
            return self.lst[item]

    raises(ValueError, "could not determine the shape", T.tensor, MockSequence([1.0, 2.0, 3.0]))
    same(T.tensor(GoodMockSequence([1.0, 2.0, 3.0])), [1.0, 2.0, 3.0], "float32")


def test_simple_scalar_cast(T):
    for tensor, value in zip([T.tensor([1.5]), T.zeros(1, 1, 1, 1)], [1.5, 0]):
        assert int(tensor) == int(value) and float(tensor) == float(value) and complex(tensor) == complex(value)
    for tensor in (T.tensor([]), T.tensor([1.0, 2.0]), T.tensor([[1.0, 2.0], [3.0, 4.0]])):
        for convert in (int, float, complex):
            raises((ValueError, RuntimeError), "", convert, tensor)
    assert int(T.tensor([1.0, 2.0, 3.0])[2:]) == 3


def test_meshgrid_errors(T):
    raises(RuntimeError, "expects a non-empty TensorList", T.meshgrid)
    raises(RuntimeError, 'indexing must be one of "xy" or "ij"', lambda: T.meshgrid(T.tensor([1, 2]), indexing=""))
    raises(RuntimeError, "Expected 0D or 1D tensor", lambda: T.meshgrid(T.tensor([[1, 2], [3, 4]]), indexing="ij"))
    raises(RuntimeError, "expects all tensors to have the same dtype",
           lambda: T.meshgrid(T.tensor([1], dtype=T.int), T.tensor([2], dtype=T.float), indexing="ij"))


@pytest.mark.parametrize("indexing", [None, "ij", "xy"])
def test_meshgrid_indexing(T, indexing):
    a, b, c = T.tensor(1), T.tensor([1, 2, 3]), T.tensor([1, 2])
    kw = {} if indexing is None else {"indexing": indexing}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grids = T.meshgrid([a, b, c], **kw)
        grids2 = T.meshgrid(a, b, c, **kw)
    if indexing == "xy":
        shape = (3, 1, 2)
        ea, eb, ec = np.ones(shape), [[[1, 1]], [[2, 2]], [[3, 3]]], [[[1, 2]], [[1, 2]], [[1, 2]]]
    else:
        shape = (1, 3, 2)
        ea, eb, ec = np.ones(shape), [[[1, 1], [2, 2], [3, 3]]], [[[1, 2], [1, 2], [1, 2]]]
    for g in (grids, grids2):
        assert all(tuple(x.shape) == shape for x in g)
        same(g[0], ea, "int64")
        same(g[1], eb)
        same(g[2], ec)


def test_meshgrid_vs_numpy(T):
    rng = np.random.default_rng(73)
    cases = [[[]], [[1], [1], [1]], [[], [], []], [[3], [5], [7]], [[3], [], [7]], [[11], [13]], [[15]]]
    for shapes, (tkw, nkw) in itertools.product(cases, [({"indexing": "ij"}, {"indexing": "ij"}),
                                                        ({"indexing": "xy"}, {}),
                                                        ({"indexing": "xy"}, {"indexing": "xy"})]):
        arrays = [rng.integers(-9, 9, s).astype(np.int32) for s in shapes]
        got = T.meshgrid(*[T.tensor(a) for a in arrays], **tkw)
        expected = np.meshgrid(*arrays, **nkw)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            same(g, e, "int32")


def test_cartesian_prod(T):
    a, b, c = T.tensor([1]), T.tensor([1, 2, 3]), T.tensor([1, 2])
    same(T.cartesian_prod(a, b, c), list(itertools.product([1], [1, 2, 3], [1, 2])), "int64")
    d = T.empty(0, dtype=b.dtype)
    same(T.cartesian_prod(a, b, c, d), np.empty((0, 4)), "int64")
    same(T.cartesian_prod(b), [1, 2, 3])
    same(T.cartesian_prod(T.tensor([1.0, 2.0]), T.tensor([3.0])), [[1.0, 3.0], [2.0, 3.0]], "float32")


def test_combinations(T):
    a = T.tensor([1, 2, 3])
    same(T.combinations(a, r=0), np.empty(0), "int64")
    same(T.combinations(a, r=1), list(itertools.combinations([1, 2, 3], 1)))
    same(T.combinations(a, r=1, with_replacement=True), list(itertools.combinations_with_replacement([1, 2, 3], 1)))
    same(T.combinations(a), list(itertools.combinations([1, 2, 3], 2)))
    same(T.combinations(a, with_replacement=True), list(itertools.combinations_with_replacement([1, 2, 3], 2)))
    same(T.combinations(a, r=3), [[1, 2, 3]])
    same(T.combinations(a, r=4), np.empty((0, 4)))
    same(T.combinations(a, r=5), np.empty((0, 5)))
    e = T.empty(0)
    same(T.combinations(e), np.empty((0, 2)), "float32")
    same(T.combinations(e, with_replacement=True), np.empty((0, 2)), "float32")


def test_trilu_indices(T):
    for row, col, offset in [(0, 0, 0), (1, 1, 0), (3, 3, 0), (3, 3, 1), (3, 3, -1), (3, 5, 2), (5, 3, -2),
                             (4, 3, 1), (1, 3, 5), (3, 1, -5), (5, 5, -10), (5, 5, 10)]:
        same(T.tril_indices(row, col, offset), np.stack(np.tril_indices(row, offset, col)).reshape(2, -1), "int64")
        same(T.triu_indices(row, col, offset), np.stack(np.triu_indices(row, offset, col)).reshape(2, -1), "int64")
    x = T.ones(3, 3, dtype=T.long)
    same(T.tril_indices(3, 3), values(x.tril(0).nonzero().transpose(0, 1)))
    same(T.triu_indices(3, 3), values(x.triu(0).nonzero().transpose(0, 1)))
    same(T.tril_indices(4, 3, 1, dtype=T.int32), np.stack(np.tril_indices(4, 1, 3)), "int32")


def test_constructor_dtypes(T):
    assert T.tensor([]).dtype is T.get_default_dtype()
    assert T.ByteTensor.dtype is T.uint8 and T.FloatTensor.dtype is T.float32 and T.DoubleTensor.dtype is T.float64
    saved = T.get_default_dtype()
    try:
        T.set_default_dtype(T.float64)
        assert T.get_default_dtype() is T.float64 and T.tensor([1.0]).dtype is T.float64
        assert T.zeros(2).dtype is T.float64 and T.arange(1.0).dtype is T.float64
        assert T.tensor([1 + 1j]).dtype is T.complex128
        for bad in (T.int32, T.int64, T.bool, T.complex64):
            raises(TypeError, "", T.set_default_dtype, bad)
    finally:
        T.set_default_dtype(saved)


def test_tensor_factory(T):
    same(T.tensor([1, 1]), [1, 1], "int64")
    res1 = T.tensor([1, 1], dtype=T.int)
    same(res1, [1, 1], "int32")
    expected = T.ones(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res2 = T.tensor(expected)
    res2[1] = 2
    same(expected, [1.0, 1.0])
    for dtype in (np.float64, np.int64, np.int8, np.uint8):
        a = np.array([5.0]).astype(dtype)
        res = T.tensor(a)
        a[0] = 7
        assert res[0].item() == 5
    e = [True, False, True, True, True]
    same(T.tensor([-1, -1.1, 0, 1, 1.1], dtype=T.bool), [True, True, False, True, True], "bool")
    same(T.tensor([-0.1, -1.1, 0, 1, 0.1], dtype=T.bool), [True, True, False, True, True])
    same(T.tensor((-0.3, 0, 0.3, 1, 3 / 7), dtype=T.bool), e)
    same(T.tensor((-1, 0, -1.1, 1, 1.1), dtype=T.bool), e)
    i64max, i64min = np.iinfo(np.int64).max, np.iinfo(np.int64).min
    f64max, f64min = np.finfo(np.float64).max, np.finfo(np.float64).min
    same(T.tensor((float("nan"), 0, i64min, i64max, i64min - 1), dtype=T.bool), e)
    same(T.tensor((i64max + 1, 0, (i64max + 1) * 2, (i64max + 1) * 2 + 1, f64min), dtype=T.bool), e)
    same(T.tensor((f64max, 0, f64max + 1, f64min - 1, f64max + 1e291), dtype=T.bool), e)
    same(T.tensor([1e-323, 1e-324, 0j, 1e-323j, 1e-324j, 1 + 2j, -1j], dtype=T.bool),
         [True, False, False, True, False, True, True])
    same(T.tensor((1e323, -1e323, float("inf"), -float("inf")), dtype=T.bool), [True] * 4)


def test_tensor_factory_copy_var(T):
    source = T.randn(5, 5, dtype=T.double, requires_grad=True)

    def check(copy, is_leaf, requires_grad):
        close(copy, values(source))  # (new_tensor takes the float32 of the tensor it is called on)
        assert copy.is_leaf == is_leaf and copy.requires_grad == requires_grad

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(T.tensor(source), True, False)
        check(T.tensor(source, requires_grad=False), True, False)
        check(T.tensor(source, requires_grad=True), True, True)
        other = T.randn(1)
        check(other.new_tensor(source), True, False)
        check(other.new_tensor(source, requires_grad=True), True, True)
    assert T.as_tensor(source) is source
    converted = T.as_tensor(source, dtype=T.float)
    assert not converted.is_leaf and converted.requires_grad and converted.dtype is T.float32


def test_tensor_factory_type_inference(T):
    saved = T.get_default_dtype()
    try:
        for default in (T.float64, T.float32):
            T.set_default_dtype(default)
            default_complex = T.complex64 if default is T.float32 else T.complex128
            assert T.tensor(()).dtype is default and T.tensor(5.0).dtype is default
            assert T.tensor(5).dtype is T.int64 and T.tensor(True).dtype is T.bool
            assert T.tensor(5, dtype=T.int32).dtype is T.int32
            assert T.tensor(((7, 5), (9, 5.0))).dtype is default and T.tensor(((5.0, 5), (3, 5))).dtype is default
            assert T.tensor(((5, 3), (3, 5))).dtype is T.int64
            assert T.tensor(((5, 3 + 2j), (3, 5 + 4j))).dtype is default_complex
            assert T.tensor(np.array(())).dtype is T.float64 and T.tensor(np.array(5.0)).dtype is T.float64
            assert T.tensor(np.array(5)).dtype is T.int64
            assert T.tensor(np.array(3, dtype=np.uint8)).dtype is T.uint8
            assert T.tensor(((7, np.array(5)), (np.array(9), 5.0))).dtype is default
            assert T.tensor(((7, 5), (9, np.array(5.0)))).dtype is T.float64
            assert T.tensor(((5, np.array(3)), (np.array(3), 5))).dtype is T.int64
            assert T.tensor([True, 2]).dtype is T.int64 and T.tensor([True, 2.5]).dtype is default
    finally:
        T.set_default_dtype(saved)


def test_as_tensor(T):
    x = [[0, 1], [2, 3]]
    same(T.as_tensor(x), x, "int64")
    same(T.as_tensor(x, dtype=T.float32), x, "float32")
    raises(TypeError, "invalid data type", T.tensor, [0, "torch"])
    raises(TypeError, "invalid data type", T.as_tensor, [0, "torch"])
    z = [0]
    z += [z]
    raises(TypeError, "self-referential lists are incompatible", T.tensor, z)
    z = [[1, 2], z]
    raises(TypeError, "self-referential lists are incompatible", T.tensor, z)
    y = T.tensor(x)
    assert T.as_tensor(y) is y
    assert T.as_tensor(y, dtype=T.float32) is not y
    for dtype in (np.float64, np.int64, np.int8, np.uint8):
        n = np.random.default_rng(74).random((5, 6)).astype(dtype)
        t = T.as_tensor(n)
        t[0][0] = 25.7
        same(t, n)  # shares memory: the write shows in the array
        assert t.dtype == T.tensor(n).dtype
    n = np.random.default_rng(75).random((5, 6)).astype(np.float32)
    t = T.as_tensor(n, dtype=T.float64)
    t[0][1] = 250.8
    assert n[0][1] != 250.8


def test_from_numpy_sharing(T):
    a = np.arange(6.0).reshape(2, 3)
    t = T.from_numpy(a)
    assert t.dtype is T.float64
    a[0, 0] = 100.0
    assert t[0, 0].item() == 100.0
    t[1, 2] = -1.0
    assert a[1, 2] == -1.0
    same(T.from_numpy(a[:, ::2]), a[:, ::2])
    for dtype in ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "complex64",
                  "complex128"):
        assert dtype_name(T.from_numpy(np.zeros(2, dtype=dtype))) == dtype
    raises(TypeError, "", T.from_numpy, [1, 2])
    assert T.from_numpy(a).numpy() is not None and np.shares_memory(T.from_numpy(a).numpy(), a)


def test_tensor_from_non_writable_numpy(T):
    a = np.arange(5.0)
    a.flags.writeable = False
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        t = T.tensor(a)
    assert len(w) == 0
    same(t, a, "float64")


def test_range(T):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res1 = T.range(0, 1)
    assert len(w) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        same(res1, [0.0, 1.0], "float32")
        res2 = T.tensor(())
        T.range(0, 1, out=res2)
        same(res2, [0.0, 1.0])
        x = T.zeros(2, 3)
        T.range(0, 3, out=x.narrow(1, 1, 2))
        same(x, [[0, 0, 1], [0, 2, 3]])
        res2 = T.tensor(())
        T.range(1, 0, -1, out=res2)
        same(res2, [1.0, 0.0])
        T.range(1, 1, -1, out=res2)
        same(res2, [1.0])
        T.range(1, 1, 1, out=res2)
        same(res2, [1.0])
        same(T.range(0, 1, 0.25), [0, 0.25, 0.5, 0.75, 1.0])


def test_arange(T):
    same(T.arange(0, 10000), np.arange(10000), "int64")
    res2 = T.tensor([], dtype=T.int64)
    T.arange(0, 10000, out=res2)
    same(res2, np.arange(10000))
    same(T.arange(10), values(T.arange(0, 10)))
    x = T.zeros(2, 3)
    T.arange(0, 2, out=x[1, 1:])
    same(x, [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    res2 = T.tensor([])
    T.arange(1, -1, -1, out=res2)
    same(res2, [1.0, 0.0])
    T.arange(1, 0, -1, out=res2)
    same(res2, [1.0])
    T.arange(1, 2, 1, out=res2)
    same(res2, [1.0])
    for make in (T.FloatTensor, T.DoubleTensor):  # (a fresh out each time: PyTorch cannot resize one seen by NumPy)
        close(T.arange(0.6, 0.89, 0.1, out=make()), [0.6, 0.7, 0.8])
        res1 = T.arange(1, 10, 0.3, out=make())
        assert res1.size(0) == 30 and res1[0].item() == 1
        close(res1[29], 9.7, rtol=1e-6)
    r = T.arange(True)
    assert r[0].item() == 0 and r.dtype is T.int64
    r2 = T.arange(False)
    assert len(r2) == 0 and r2.dtype is T.int64
    r = T.arange(0, 5)
    assert r.min().item() == 0 and r.max().item() == 4 and r.numel() == 5
    r = T.arange(0, 5, 2)
    assert r.min().item() == 0 and r.max().item() == 4 and r.numel() == 3
    r1, r2, r3 = T.arange(0, 5 + 1e-6), T.arange(0, 5, dtype=T.float32), T.arange(0, 5 - 1e-6)
    same(r1[:-1], values(r2))
    same(r2, values(r3))
    r1, r2, r3 = T.arange(10, -1 + 1e-6, -1), T.arange(10, -1, -1, dtype=T.float32), T.arange(10, -1 - 1e-6, -1)
    same(r1, values(r2))
    same(r2, values(r3[:-1]))
    line = T.zeros(size=(1, 49))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        T.arange(-1, 1, 2.0 / 49, dtype=T.float32, out=line)
    assert tuple(line.shape) == (50,)
    msg = "unsupported range"
    for args in ((0, float("inf")), (float("inf"),), (-5, float("nan")), (0, float("-inf"), -1),
                 (float("-inf"), 10), (float("nan"), 10), (float("nan"),)):
        raises(RuntimeError, msg, T.arange, *args)
    raises(RuntimeError, "overflow", T.arange, 1.175494351e-38, 3.402823466e38)
    raises(RuntimeError, "step must be nonzero", T.arange, 0, 10, 0)
    raises(RuntimeError, "upper bound and lower bound inconsistent with step sign", T.arange, 0, 10, -1)
    assert T.arange(-4.0, 4.0, 0.01, dtype=T.float32).shape[0] == 800


def test_arange_inference(T):
    t = T.tensor
    assert T.arange(1.0).dtype is T.float32
    assert T.arange(t(1.0)).dtype is T.float32
    assert T.arange(t(1.0, dtype=T.float64)).dtype is T.float32
    assert T.arange(1).dtype is T.int64
    assert T.arange(t(1)).dtype is T.int64
    assert T.arange(t(1, dtype=T.int16)).dtype is T.int64
    assert T.arange(1.0, 3).dtype is T.float32
    assert T.arange(t(1.0, dtype=T.float64), 3).dtype is T.float32
    assert T.arange(1, 3.0).dtype is T.float32
    assert T.arange(t(1, dtype=T.int16), t(3.0)).dtype is T.float32
    assert T.arange(1, 3, 1.0).dtype is T.float32
    assert T.arange(t(1), t(3, dtype=T.int16), t(1.0, dtype=T.float64)).dtype is T.float32
    assert T.arange(1, 3).dtype is T.int64
    assert T.arange(t(1), 3).dtype is T.int64
    assert T.arange(t(1), t(3, dtype=T.int16)).dtype is T.int64
    assert T.arange(1, 3, 1).dtype is T.int64
    assert T.arange(t(1), t(3), t(1, dtype=T.int16)).dtype is T.int64
    for dt in ("uint8", "int16", "int32", "float16", "float64", "complex64"):
        if dt.startswith("complex"):
            continue
        same(T.arange(0, 6, 2, dtype=getattr(T, dt)), np.array([0, 2, 4]).astype(dt), dt)


def test_empty_strided_and_props(T):
    for shape in [(2, 3, 4), (0, 2, 0)]:
        for strides in [(12, 4, 1), (2, 4, 6), (0, 0, 0)]:
            e = T.empty_strided(shape, strides)
            assert tuple(e.shape) == shape
            if 0 not in shape:  # (chainrule reports an empty tensor's strides as contiguous ones)
                assert tuple(e.stride()) == strides
            n = T.zeros(5, 5, dtype=T.int32).new_empty_strided(shape, strides)
            assert tuple(n.shape) == shape and n.dtype is T.int32
            assert 0 in shape or tuple(n.stride()) == strides
    for size in [(0,), (0, 3), (5, 0), (5, 0, 3, 0, 2), (0, 3, 0, 2), (0, 5, 0, 2, 0)]:
        x = T.empty(size)
        assert tuple(x.shape) == size and x.is_contiguous()
        y = T.empty(tuple(s if s != 0 else 1 for s in size))
        assert x.stride() == y.stride()
    for shape, strides in [((1,), ()), ((1, 2), (1,))]:
        raises(RuntimeError, "mismatch in length of strides and shape", T.tensor(0.42).as_strided, shape, strides)


def test_eye(T):
    for dtype in DTYPES:
        dt = getattr(T, dtype)
        for n, m in ((-1, 1), (1, -1), (-1, -1)):
            raises(RuntimeError, "must be greater or equal to", T.eye, n, m, dtype=dt)
        for n in (3, 5):
            res1 = T.eye(n, dtype=dt)
            same(res1, np.eye(n).astype(dtype), dtype)
            res2 = T.empty(0, dtype=dt)
            T.eye(n, out=res2)
            same(res2, np.eye(n).astype(dtype))
        for n, m in itertools.product((3, 5), repeat=2):
            same(T.eye(n, m, dtype=dt), np.eye(n, m).astype(dtype), dtype)
            res2 = T.empty(0, dtype=dt)
            T.eye(n, m, out=res2)
            same(res2, np.eye(n, m).astype(dtype))
    assert T.eye(3).dtype is T.float32


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_linspace_vs_numpy(T, dtype):
    start = -0.0316082797944545745849609375 + (0.8888888888j if dtype.startswith("complex") else 0)
    end = 0.0315315723419189453125 + (0.444444444444j if dtype.startswith("complex") else 0)
    rtol = 1e-6 if dtype in ("float32", "complex64") else 1e-10
    for steps in (1, 2, 3, 5, 11, 256, 257, 2**14):
        t = T.linspace(start, end, steps, dtype=getattr(T, dtype))
        a = np.linspace(start, end, steps, dtype=dtype)
        close(t, a, rtol=rtol, atol=rtol)
        assert t[0].item() == a[0] and t[steps - 1].item() == a[steps - 1]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logspace_vs_numpy(T, dtype):
    start, end = -0.0316082797944545745849609375, 0.0315315723419189453125
    rtol = 1e-6 if dtype == "float32" else 1e-10
    for steps in (1, 2, 3, 5, 11, 256, 257, 2**14):
        t = T.logspace(start, end, steps, dtype=getattr(T, dtype))
        a = np.logspace(start, end, steps, dtype=dtype)
        close(t, a, rtol=rtol, atol=0)
        close(t[0], a[0], rtol=rtol)
        close(t[steps - 1], a[steps - 1], rtol=rtol)


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "int32", "int64", "float32", "float64", "complex64"])
def test_linspace(T, dtype):
    dt = getattr(T, dtype)
    res1 = T.linspace(0.2, 0.9, 137, dtype=dt)
    res2 = T.tensor((), dtype=dt)
    T.linspace(0.2, 0.9, 137, dtype=dt, out=res2)
    same(res2, values(res1))
    same(T.linspace(10, 20, 11, dtype=dt), np.arange(10, 21).astype(dtype), dtype)
    if dtype not in ("int8", "uint8"):
        same(T.linspace(10, 2000, 1991, dtype=dt), np.arange(10, 2001).astype(dtype))
    raises(RuntimeError, "number of steps must be non-negative", T.linspace, 0, 1, -1, dtype=dt)
    same(T.linspace(0, 1, 1, dtype=dt), np.zeros(1).astype(dtype))
    assert T.linspace(0, 1, 0, dtype=dt).numel() == 0
    raises(TypeError, "", lambda: T.linspace(0, 1, dtype=dt))
    if dtype == "float32":
        for s, e in ((0, 1j), (0j, 1), (0j, 1j)):
            raises(RuntimeError, r"torch.linspace\(\): inferred dtype", T.linspace, s, e, 5, dtype=dt)
    start = 0 if dtype == "uint8" else -100
    expected = np.array([start + 0.5 * i for i in range(401)])
    same(T.linspace(start, start + 200, 401, dtype=dt), expected.astype(dtype))
    same(T.linspace(2, 0, 3, dtype=dt), np.array([2, 1, 0]).astype(dtype))
    x = T.zeros(2, 3, dtype=dt)
    T.linspace(0, 3, 4, out=x.narrow(1, 1, 2), dtype=dt)
    same(x, np.array([[0, 0, 1], [0, 2, 3]]).astype(dtype))


@pytest.mark.parametrize("fn", ["linspace", "logspace"])
def test_linspace_logspace_deduction(T, fn):
    for start, end in [(1, 2), (1.0, 2), (1.0, -2.0), (1j, 2j), (0.0, 2j), (1j, 2)]:
        expected = T.cfloat if isinstance(start, complex) or isinstance(end, complex) else T.float32
        assert getattr(T, fn)(start, end, steps=100).dtype is expected


@pytest.mark.parametrize("dtype", ["uint8", "int16", "int32", "int64", "float32", "float64"])
def test_logspace(T, dtype):
    dt = getattr(T, dtype)
    res1 = T.logspace(0.2, 0.9, 137, dtype=dt)
    res2 = T.tensor((), dtype=dt)
    T.logspace(0.2, 0.9, 137, dtype=dt, out=res2)
    same(res2, values(res1))
    raises(RuntimeError, "number of steps must be non-negative", T.logspace, 0, 1, -1, dtype=dt)
    raises(TypeError, "", lambda: T.logspace(0, 1, dtype=dt))
    same(T.logspace(0, 1, 1, dtype=dt), np.ones(1).astype(dtype))
    if dtype == "float32":
        for s, e in ((0, 1j), (0j, 1), (0j, 1j)):
            raises(RuntimeError, r"torch.logspace\(\): inferred dtype", T.logspace, s, e, 5, dtype=dt)
    if dtype.startswith("float"):
        powers = np.array([2.0 ** (i / 8.0) for i in range(49)]).astype(dtype)
        same(T.logspace(0, 6, steps=49, base=2, dtype=dt), powers)
    same(T.logspace(1, 1, 1, 2, dtype=dt), np.array([2]).astype(dtype))
    same(T.logspace(0, 2, 3, 2, dtype=dt), np.array([1, 2, 4]).astype(dtype))
    same(T.logspace(1, 0, 2, dtype=dt), np.array([10, 1]).astype(dtype))
    x = T.zeros(2, 3, dtype=dt)
    T.logspace(0, 3, 4, base=2, dtype=dt, out=x.narrow(1, 1, 2))
    same(x, np.array([[0, 1, 2], [0, 4, 8]]).astype(dtype))


@pytest.mark.parametrize("default", ["float16", "float32", "float64"])
def test_full_inference(T, default):
    saved = T.get_default_dtype()
    try:
        T.set_default_dtype(getattr(T, default))
        assert T.full((2, 2), True).dtype is T.bool
        assert T.full((2, 2), 1).dtype is T.long
        assert T.full((2, 2), 1.0).dtype is getattr(T, default)
        assert T.full((2, 2), 1 + 1j).dtype is (T.complex128 if default == "float64" else T.complex64)
    finally:
        T.set_default_dtype(saved)
    same(T.full((2,), 7), [7, 7], "int64")
    same(T.full((2,), 2.5, dtype=T.int32), [2, 2], "int32")
    same(T.full((1, 2), float("-inf")), [[-math.inf, -math.inf]], "float32")


def test_full_out(T):
    o = T.empty(5, dtype=T.long)
    raises(RuntimeError, "", lambda: T.full(o.shape, 1.0, dtype=T.float, out=o))
    assert T.full(o.shape, 1.0, out=o).dtype is T.long
    assert T.full((5,), 1, out=o).dtype is T.long
    same(o, np.ones(5))


def test_like_factories(T):
    expected = T.ones(10, 10)
    same(T.ones_like(expected), np.ones((10, 10)), "float32")
    same(T.ones_like(T.tensor([True, True])), [True, True], "bool")
    same(T.zeros_like(T.zeros(10, 10)), np.zeros((10, 10)), "float32")
    for a in (T.tensor([]), T.randn(4, 4), T.tensor([1, 2, 3], dtype=T.int32)):
        e = T.empty_like(a)
        assert e.shape == a.shape and e.dtype == a.dtype
    like = T.empty((5,), dtype=T.long)
    assert T.full_like(like, 1.0).dtype is T.long
    same(T.full_like(like, 1.7), [1] * 5)
    assert T.full_like(like, 1.0, dtype=T.complex64).dtype is T.complex64
    x = T.randn(3, 4, dtype=T.float64, requires_grad=True)
    for fn in (T.zeros_like, T.ones_like, T.empty_like, T.rand_like, T.randn_like):
        y = fn(x)
        assert y.dtype is T.float64 and tuple(y.shape) == (3, 4) and not y.requires_grad
    assert T.zeros_like(x, dtype=T.int32).dtype is T.int32
    assert T.zeros_like(x, requires_grad=True).requires_grad
    r = T.randint_like(x, 10, 100)
    assert r.dtype is T.float64 and bool(((r >= 10) & (r < 100)).all()) and bool((r == r.floor()).all())
    r = T.randint_like(T.zeros(1000, dtype=T.int32), 3)
    assert r.dtype is T.int32 and set(r.unique().tolist()) == {0, 1, 2}
    raises(RuntimeError, "", T.rand_like, T.zeros(2, dtype=T.int64))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int8", "int16", "int32", "int64"])
def test_random_(T, dtype):
    t = T.empty(200, dtype=getattr(T, dtype))
    t.fill_(-1)
    t.random_(1, 4)
    assert t.min().item() == 1 and t.max().item() == 3
    t.fill_(-1)
    t.random_(4)
    assert t.min().item() == 0 and t.max().item() == 3
    raises(RuntimeError, "random_ expects 'from' to be less than 'to', but got from=3 >= to=1", t.random_, 3, 1)
    if dtype in ("float32", "float64", "int64", "int32", "int16"):
        t = T.rand(10, 10).to(getattr(T, dtype))
        t.random_(-10, -1)
        assert t.max().item() <= -2 and t.min().item() >= -10


def test_random_bool(T):
    t = T.empty(2000, dtype=T.bool)
    for fill in (False, True):
        t.fill_(fill)
        t.random_()
        assert t.min().item() is False and t.max().item() is True
        assert 0.4 < t.eq(True).to(T.int).sum().item() / 2000 < 0.6


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_normal(T, dtype):
    dt = getattr(T, dtype)
    q = T.empty(100, 100, dtype=dt)
    q.normal_()
    close(q.mean(), 0.0, atol=0.2)
    close(q.std(), 1.0, atol=0.2)
    q.normal_(2, 3)
    close(q.mean(), 2.0, atol=0.3)
    close(q.std(), 3.0, atol=0.3)
    mean = T.empty(100, 100, dtype=dt)
    mean[:50].fill_(0)
    mean[50:].fill_(1)
    std = T.empty(100, 100, dtype=T.float)
    std[:, :50] = 4
    std[:, 50:] = 1
    r = T.normal(mean)
    assert r.dtype is dt
    close(r[:50].mean(), 0.0, atol=0.2)
    close(r[50:].mean(), 1.0, atol=0.2)
    r = T.normal(mean, 3)
    close(r.std(), 3.0, atol=0.3)
    r = T.normal(2, std)
    close(r[:, :50].std(), 4.0, atol=0.3)
    close(r[:, 50:].std(), 1.0, atol=0.2)
    r = T.normal(mean, std)
    assert r.dtype is dt
    assert tuple(T.normal(mean=T.empty((0, 2)), std=T.empty((0, 1))).shape) == (0, 2)
    r = T.normal(2, 3, (100, 100), dtype=dt)
    assert r.dtype is dt
    close(r.mean(), 2.0, atol=0.3)
    out = T.empty(10, 10, dtype=dt)
    T.normal(2, 0, (10, 10), dtype=dt, out=out)
    assert bool(out.eq(2).all())
    mean_rand = T.randn(10, 10, dtype=dt)
    T.normal(mean_rand, 0, out=out)
    same(out, values(mean_rand))
    T.normal(2, T.zeros(10, 10, dtype=dt), out=out)
    assert bool(out.eq(2).all())


def test_normal_std_error(T):
    a = T.tensor(0, dtype=T.float32)
    std = T.tensor(-1, dtype=T.float32)
    for mean in (0, a):
        raises(RuntimeError, r"normal expects std >= 0.0, but found std", T.normal, mean, -1, (10,))
        raises(RuntimeError, r"normal expects all elements of std >= 0.0", T.normal, mean, std)


def test_randint_inference_and_values(T):
    for args in ((3,), (1, 3)):
        size = (2, 1)
        assert T.randint(*args, size=size).dtype is T.int64
        assert T.randint(*args, size=size, layout=T.strided).dtype is T.int64
        assert T.randint(*args, size=size, dtype=T.float32).dtype is T.float32
        out = T.empty(size, dtype=T.float32)
        assert T.randint(*args, size=size, out=out).dtype is T.float32
        out = T.empty(size, dtype=T.int64)
        assert T.randint(*args, size=size, out=out).dtype is T.int64
    for generator in (None, T.Generator()):
        def seed(g=generator):
            if g is None:
                T.manual_seed(123456)
            else:
                g.manual_seed(123456)
            return g

        res1 = T.randint(0, 6, (50, 50), generator=seed())
        res2 = T.empty((), dtype=T.int64)
        T.randint(0, 6, (50, 50), generator=seed(), out=res2)
        res3 = T.randint(6, (50, 50), generator=seed())
        same(res2, values(res1))
        same(res3, values(res1))
        assert bool((res1 < 6).all()) and bool((res1 >= 0).all())
    raises(RuntimeError, "random_ expects 'from' to be less than 'to'", T.randint, 5, 5, (3,))


@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64", "complex128"])
def test_randn_rand_out_matches_seed(T, dtype):
    for size in (0, 30):
        for fn in (T.randn, T.rand):
            T.manual_seed(123456)
            res1 = fn(size, size, dtype=getattr(T, dtype))
            res2 = T.tensor([], dtype=getattr(T, dtype))
            T.manual_seed(123456)
            fn(size, size, out=res2)
            same(res2, values(res1), dtype)


def test_randperm(T):
    for n in (5, 100, 5000):
        for dtype in (T.long, T.half, T.float):
            if n > 2049 and dtype is T.half:
                continue
            T.manual_seed(7)
            res1 = T.randperm(n, dtype=dtype)
            res2 = T.empty(0, dtype=dtype)
            T.manual_seed(7)
            T.randperm(n, out=res2, dtype=dtype)
            same(res2, values(res1))
            same(res1.sort().values.long(), np.arange(n))
            assert res1.dtype is dtype
    assert T.randperm(100).dtype is T.long
    res2 = T.tensor(5, dtype=T.float32)
    T.randperm(0, out=res2)
    assert T.randperm(0).numel() == 0 and res2.numel() == 0
    for dtype, small_n, large_n in ((T.uint8, 2**8, 2**8 + 1), (T.half, 2**11 + 1, 2**11 + 2)):
        res = T.empty(0, dtype=dtype)
        T.randperm(small_n, out=res)
        raises(RuntimeError, "", T.randperm, large_n, out=res)
    for n in (4, 5, 6):
        non_contiguous = T.zeros((2, 3), dtype=T.long).t()
        T.manual_seed(8)
        res = T.randperm(n, dtype=T.long)
        T.manual_seed(8)
        T.randperm(n, out=non_contiguous)
        same(non_contiguous, values(res))


SIZE = 5


def _frombuffer(T, dtype, shape=(SIZE,), count=-1, first=0, offset=None, **kwargs):
    nbytes = np.dtype(dtype).itemsize
    if offset is None:
        offset = first * nbytes
    original = (np.arange(int(np.prod(shape))) % 7 + 1).astype(dtype).reshape(shape)
    view = memoryview(original)
    t = T.frombuffer(view, dtype=getattr(T, dtype), count=count, offset=offset, **kwargs)
    expected = np.frombuffer(view, dtype=dtype, count=count, offset=offset)
    same(t, expected, dtype)
    return original, t


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32",
                                   "float64", "complex64", "complex128"])
def test_frombuffer(T, dtype):
    for shape in ((), (4,), (10, 10)):
        _frombuffer(T, dtype, shape)
        grad = dtype.startswith(("float", "complex"))
        _, t = _frombuffer(T, dtype, shape, requires_grad=grad)
        assert t.requires_grad == grad
    for i in range(SIZE):
        _frombuffer(T, dtype, first=i)
    for i in range(1, SIZE):
        for j in range(SIZE - i + 1):
            _frombuffer(T, dtype, count=i, first=j)
    nbytes = np.dtype(dtype).itemsize
    raises(ValueError, r"both buffer length \(0\) and count", T.frombuffer, np.array([]), dtype=getattr(T, dtype))
    raises(ValueError, r"both buffer length .* and count \(0\)", _frombuffer, T, dtype, count=0)
    raises(ValueError, rf"offset \(-{nbytes} bytes\) must be", _frombuffer, T, dtype, first=-1)
    raises(ValueError, rf"offset \({SIZE * nbytes} bytes\) must be .* buffer length \({SIZE * nbytes} bytes\)",
           _frombuffer, T, dtype, first=SIZE)
    arr, t = _frombuffer(T, dtype)
    t[:] = 1
    same(t, arr)
    arr[0] = 0
    same(t, arr)
    raises(ValueError, r"object does not implement Python buffer protocol.", T.frombuffer, [1, 2, 3, 4],
           dtype=getattr(T, dtype))


def test_frombuffer_byte_to_int(T):
    t = T.frombuffer(np.array([-1, 0, 0, 0, -1, 0, 0, 0], dtype=np.byte), dtype=T.int32)
    assert t.numel() == 2 and t.tolist() == [255, 255]


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int64", "float32", "float64", "complex64"])
def test_asarray_alias_and_copy(T, dtype):
    dt = getattr(T, dtype)
    original = T.tensor((np.arange(25) % 3).reshape(5, 5).astype(dtype))
    grad = dtype.startswith(("float", "complex"))
    for kw in ({}, {"copy": False}, {"dtype": dt}, {"dtype": dt, "copy": False}, {"device": "cpu"},
               {"requires_grad": grad, "dtype": dt}):
        r = T.asarray(original, **kw)
        assert r.data_ptr() == original.data_ptr()
        same(r, values(original), dtype)
        assert r.requires_grad == kw.get("requires_grad", False)
    for kw in ({"copy": True}, {"dtype": dt, "copy": True}, {"requires_grad": grad, "dtype": dt, "copy": True}):
        r = T.asarray(original, **kw)
        assert r.data_ptr() != original.data_ptr()
        same(r, values(original), dtype)
    n = values(original).copy()
    r = T.asarray(n)
    assert r.dtype is dt and np.shares_memory(r.numpy(), n)
    r = T.asarray(n, copy=True)
    assert not np.shares_memory(r.numpy(), n)
    other = "float64" if dtype != "float64" else "float32"
    r = T.asarray(original, dtype=getattr(T, other))
    assert r.dtype is getattr(T, other) and r.data_ptr() != original.data_ptr()
    r = T.asarray(original.tolist(), dtype=dt)
    same(r, values(original), dtype)


def test_asarray_errors_and_history(T):
    original = T.randn(5, 5)
    raises(ValueError, "with dtype '.*' into dtype '.*'", T.asarray, original, dtype=T.float64, copy=False)
    raises(ValueError, "can't alias arbitrary sequence", T.asarray, original.tolist(), copy=False)
    cloned = T.randn(5, 5, requires_grad=True).clone()
    for kw in ({}, {"requires_grad": True}, {"copy": True}, {"requires_grad": True, "copy": True},
               {"requires_grad": False}, {"requires_grad": False, "copy": True}):
        with warnings.catch_warnings():  # (unspecified requires_grad now follows the input's, with a warning)
            warnings.simplefilter("ignore")
            a = T.asarray(cloned, **kw)
        wanted = kw.get("requires_grad", True)
        assert a.requires_grad == wanted
        assert (a.grad_fn is None) == (not wanted)
        assert (a is cloned) == (kw == {} or kw == {"requires_grad": True})


def test_astensor_consistency(T):
    for e in (True, 42, 1.0, [True, True, False], [1, 2, 3, 42], [0.0, 1.0, 2.0, 3.0], [True, False, 0],
              [0.0, True, False], [0, 1.0, 42], [0.0, True, False, 42], [0.0, True, False, 42, 5j], range(5)):
        original = T.as_tensor(e)
        t = T.asarray(e)
        same(t, values(original), dtype_name(original))


def test_randint_bounds_for_dtype(T):
    for args, dtype, words in (((5, (3,)), "bool", "to - 1 is out of bounds for bool"),
                               ((300, (3,)), "uint8", "to - 1 is out of bounds for unsigned char"),
                               ((-1, 3, (3,)), "uint8", "from is out of bounds for unsigned char"),
                               ((2**40, (3,)), "int32", "to - 1 is out of bounds for int"),
                               ((-129, 3, (3,)), "int8", "from is out of bounds for signed char")):
        raises(RuntimeError, words, T.randint, *args, dtype=getattr(T, dtype))
    r = T.randint(2, (1000,), dtype=T.bool)
    assert r.dtype is T.bool and set(r.tolist()) == {False, True}
    r = T.randint(-128, 128, (2000,), dtype=T.int8)
    assert r.min().item() >= -128 and r.max().item() <= 127


def test_full_with_a_tensor_fill(T):
    for fill, dtype in ((T.tensor(3), "int64"), (T.tensor(3, dtype=T.int8), "int64"),
                        (T.tensor(3.0, dtype=T.float64), "float32"), (T.tensor(True), "bool"),
                        (T.tensor(1 + 2j, dtype=T.complex128), "complex64")):
        same(T.full((2,), fill), np.full(2, fill.item()).astype(dtype), dtype)
    same(T.full((2,), T.tensor(2.5), dtype=T.float64), [2.5, 2.5], "float64")
    raises(TypeError, "must be Number, not Tensor", T.full, (2,), T.tensor([3]))
