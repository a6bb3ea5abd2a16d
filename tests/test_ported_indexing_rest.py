"""The rest of PyTorch's test/test_indexing.py (TestIndexing and NumpyTests), past what
tests/test_ported_indexing.py ports: ATen's index and index_put with optional (None) indices, the uint8-mask
warnings of index_put_, accumulation at negative positions and through a non-contiguous view, the CPU halves
of the device-only tests (writes beside slices, repeated positions: the last write wins), the index lists of
test_advancedindex the first port left out, non-contiguous operands, gradients through indexing, and the
errors for indices out of range or of the wrong dtype.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`), against
literal or NumPy-computed expectations.
"""

import warnings

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values, xfail_ours

S, E = slice(None), Ellipsis


# ------------------------------------------------------------------------------- ATen's index, index_put


def test_aten_index_needs_an_index_and_reads_none_as_a_whole_dim(T):
    """test_index_tensor_empty_indices, and aten::index's optional indices: None stands for ``:``."""
    raises(IndexError, "at least one index must be provided", T.ops.aten.index.Tensor, T.tensor([1.0]), [])
    v = T.arange(12.0).view(3, 4)
    table = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    same(T.ops.aten.index.Tensor(v, [None, T.tensor([0, 3])]), table[:, [0, 3]], "float32")
    same(T.ops.aten.index(v, (T.tensor([0, 2]),)), table[[0, 2]])
    same(T.ops.aten.index.Tensor(v, [T.tensor([True, False, True])]), table[[0, 2]])
    same(T.ops.aten.index.Tensor(v, [None, T.tensor([[0, 1], [1, 0]])]), table[:, [[0, 1], [1, 0]]])
    raises(IndexError, r"too many indices for tensor of dimension 2 \(got 3\)", T.ops.aten.index.Tensor, v,
           [T.tensor([0]), None, None])


def test_aten_index_put_reads_none_as_a_whole_dim(T):
    """test_multi_dimensional_bool_mask_assignment's aten::index_put_(v, [None, mask, None], 0)."""
    v = T.tensor([[[[1], [2]], [[3], [4]]]])
    mask = T.tensor([[1, 0], [0, 1]], dtype=T.bool)
    T.ops.aten.index_put_(v, [None, mask, None], T.tensor(0))
    same(v, [[[[0], [2]], [[3], [0]]]], "int64")

    w = T.arange(12.0).view(3, 4)
    added = T.ops.aten.index_put(w, (None, T.tensor([0, 3, 3])), T.tensor(-1.0), True)
    same(added, [[-1, 1, 2, 1], [3, 5, 6, 5], [7, 9, 10, 9]], "float32")
    same(w, np.arange(12.0).reshape(3, 4))  # (out of place)

    x = T.zeros(3, 4, requires_grad=True)
    source = T.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = T.ops.aten.index_put(x, [None, T.tensor([1])], source[:, None] * 2, True)
    (y * T.arange(12.0).view(3, 4)).sum().backward()
    same(y, [[0, 2, 0, 0], [0, 4, 0, 0], [0, 6, 0, 0]])
    same(x.grad, np.arange(12.0).reshape(3, 4))
    same(source.grad, [2, 10, 18])


def test_index_put_takes_a_tuple_of_tensors(T):
    """The library's own index_put (and the Tensor method) take index tensors only, as PyTorch's."""
    w = T.arange(12.0).view(3, 4)
    raises(TypeError, "expected Tensor as element 0 in argument", w.index_put_, [None, T.tensor([0])], T.tensor(1.0))
    raises(TypeError, "expected Tensor as element 1 in argument", T.index_put, w, (T.tensor([0]), None),
           T.tensor(1.0))
    raises(TypeError, "must be tuple of Tensors, not Tensor", w.index_put_, T.tensor([0, 1]), T.tensor(1.0))
    raises(TypeError, "expected Tensor as element 0 in argument .*, but got list", w.index_put_, ([0, 1],),
           T.tensor(1.0))
    same(w, np.arange(12.0).reshape(3, 4))


# -------------------------------------------------------------------------------- index_put_, accumulate


def test_byte_mask_accumulate_warns_for_the_read_and_the_write(T):
    """test_byte_mask_accumulate: y[mask] and index_put_((mask,), ...) each warn of the uint8 mask."""
    mask = T.zeros(10, dtype=T.uint8)
    y = T.ones(10, 10)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y.index_put_((mask,), y[mask], accumulate=True)
    same(y, np.ones((10, 10), np.float32))
    assert len(caught) == 2 and all("uint8 is now deprecated" in str(w.message) for w in caught)
    z = T.zeros(3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        z.index_put_((T.tensor([1, 0, 1], dtype=T.uint8),), T.tensor([5.0, 6.0]))
    same(z, [5, 0, 6])
    assert len(caught) == 1 and caught[0].filename == __file__  # (it names the program's line)


def test_index_put_accumulate_at_negative_positions(T):
    """test_index_put_accumulate_large_tensor's positions and values, on a small int8 tensor."""
    a = T.ones(10, dtype=T.int8)
    a.index_put_((T.tensor([-2, 0, -2, -1, 0, -1, 1]),), T.tensor([6, 5, 6, 6, 5, 7, 11], dtype=T.int8),
                 accumulate=True)
    same(a, [11, 12, 1, 1, 1, 1, 1, 1, 13, 14], "int8")
    a = T.ones((2, 10), dtype=T.int8)
    a.index_put_((T.tensor([0, -1, 0, 1]), T.tensor([-2, -1, 0, 1])), T.tensor([12, 13, 10, 11], dtype=T.int8),
                 accumulate=True)
    expected = np.ones((2, 10), np.int8)
    expected[0, 0], expected[1, 1], expected[0, -2], expected[1, -1] = 11, 12, 13, 14
    same(a, expected, "int8")
    # the sum wraps around in int8, as PyTorch's: 100 + 100 + 100 is 300 - 256
    b = T.full((3,), 100, dtype=T.int8)
    b.index_put_((T.tensor([0, 0]),), T.tensor([100, 100], dtype=T.int8), accumulate=True)
    same(b, [44, 100, 100], "int8")


def test_index_put_accumulate_into_a_non_contiguous_view(T):
    """test_index_put_accumulate_non_contiguous (its CPU half): the view stays a view, its base changes."""
    t = T.zeros(5, 2, 2)
    view = t[:, 0, :]
    assert not view.is_contiguous()
    value = T.tensor([[1.0, 2.0], [3.0, 4.0]])
    out = view.index_put_([T.tensor([0, 1])], value, accumulate=True)
    assert out is view and not view.is_contiguous()
    view.index_put_([T.tensor([0, 0])], value, accumulate=True)
    expected = np.zeros((5, 2, 2), np.float32)
    expected[0, 0] = [1 + 1 + 3, 2 + 2 + 4]
    expected[1, 0] = [3, 4]
    same(t, expected)


def test_setitem_with_optional_tensors(T):
    """test_index_put_deterministic_with_optional_tensors (its CPU half): x[..., i] = v and x[i] = v."""
    t = T.arange(8, dtype=T.float32).reshape(4, 2)
    t[..., T.tensor([1, 0])] = T.tensor([[1.0], [2.0], [3.0], [4.0]])
    same(t, [[1, 1], [2, 2], [3, 3], [4, 4]])
    z = T.zeros(5, 4)
    z[T.tensor([1, 4, 3])] = T.tensor([1.0, 2.0, 3.0, 4.0])
    same(z, [[0] * 4, [1, 2, 3, 4], [0] * 4, [1, 2, 3, 4], [1, 2, 3, 4]])


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8",
                                   "bool", "complex64", "complex128"])
def test_index_and_index_put_keep_the_dtype(T, dtype):
    """test_index_put_src_datatype and test_index_src_datatype, over every dtype."""
    dt = getattr(T, dtype)
    src = T.ones(3, 2, 4, dtype=dt)
    read = src[[0, 2, 1], :, :]
    assert read.shape == (3, 2, 4) and dtype_name(read) == dtype
    src[[0, 2, 1], :, :] = read * 0 if dtype != "bool" else ~read
    same(src, np.zeros((3, 2, 4), dtype))
    res = T.ones(3, 2, 4, dtype=dt).index_put_((T.tensor([0, 2, 2]),), T.ones(3, 2, 4, dtype=dt), accumulate=True)
    expected = np.ones((3, 2, 4)) + np.array([1, 0, 2])[:, None, None]
    same(res, (expected > 0 if dtype == "bool" else expected).astype(dtype), dtype)


# ------------------------------------------------------------------------ CPU halves of the device tests


def test_index_writes_beside_slices_against_numpy(T):
    """test_cuda_broadcast_index_use_deterministic_algorithms (its CPU half), against NumPy's writes."""
    rng = np.random.default_rng(0)
    i1, i2, i3 = np.array([0]), np.array([2, 6]), np.array([1, 5, 7])
    base = rng.random((3, 4, 8, 8, 8)).astype(np.float32)
    a, expected = T.tensor(base), base.copy()
    for key, number in (((i1,), 1.0), ((i1, S, i2, i2, S), 2.0), ((S, i1, i3, S, i3), 3.0)):
        a[tuple(T.tensor(k) if isinstance(k, np.ndarray) else k for k in key)] = number
        expected[key] = number
    same(a, expected)
    # apart indices put their dims first, as NumPy's
    assert a[T.tensor(i1), :, T.tensor(i2), T.tensor(i2), :].shape == (2, 4, 8)
    assert a[:, T.tensor(i1), T.tensor(i3), :, T.tensor(i3)].shape == (3, 3, 8)
    base = rng.random((10, 11)).astype(np.float32)
    b, expected = T.tensor(base), base.copy()
    for key, number in (((i3,), 1.0), ((i2, S), 2.0), ((S, i2), 3.0), ((S, i1), 4.0), (([8],), 5.0), ((6,), 6.0)):
        b[tuple(T.tensor(k) if isinstance(k, np.ndarray) else k for k in key)] = number
        expected[key] = number
    same(b, expected)


@pytest.mark.parametrize("dim", [0, 1, 2])
def test_index_copy_and_index_add_with_repeats(T, dim):
    """test_index_copy_deterministic and test_index_add_deterministic (sizes shrunk): repeated positions, the
    last copy wins and the adds are the same each time."""
    rng = np.random.default_rng(dim)
    shape = [5, 4, 3]
    shape[dim] = 40
    src_shape = list(shape)
    src_shape[dim] = 800
    src = rng.random(src_shape).astype(np.float32)
    index = rng.integers(0, 40, 800)
    key = (S,) * dim
    copied, added = np.zeros(shape, np.float32), np.zeros(shape)
    for k, i in enumerate(index):
        copied[key + (i,)] = src[key + (k,)]
        added[key + (i,)] += 1.5 * src[key + (k,)].astype(np.float64)
    before = T.are_deterministic_algorithms_enabled()
    T.use_deterministic_algorithms(True)
    try:
        same(T.index_copy(T.zeros(shape), dim, T.tensor(index), T.tensor(src)), copied)
        first = T.index_add(T.zeros(shape), dim, T.tensor(index), T.tensor(src), alpha=1.5)
        for _ in range(2):
            same(T.index_add(T.zeros(shape), dim, T.tensor(index), T.tensor(src), alpha=1.5), values(first))
    finally:
        T.use_deterministic_algorithms(before)
    close(first, added, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:.*jit.script. is deprecated:DeprecationWarning")
def test_mask_and_slice_writes_in_scripted_functions(T):
    """test_jit_indexing: x[x < 50] = 1 and x[0:50] = 1, plain and through jit.script."""
    def below_fifty(x):
        x[x < 50] = 1.0
        return x

    def first_fifty(x):
        x[0:50] = 1.0
        return x

    expected = np.concatenate([np.ones(50), np.arange(50, 100)]).astype(np.float32)
    data = T.arange(100, dtype=T.float)
    for fn in (below_fifty, first_fifty):
        for run in (fn, T.jit.script(fn)):
            same(run(data.detach().clone()), expected, "float32")
    same(data, np.arange(100))


# --------------------------------------------------------- test_advancedindex's lists, the rest of them

REST_4x8x5 = [
    (S, (0, 1, 3), (4,)), (S, ((0, 1), (2, 3)), ((0,),)), ((0,), (1, 2, 4), S), ((0, 1, 3), (4,), S),
    (((0, 1), (1, 0)), ((2, 3),), S), (((0, 1), (2, 3)), ((0,),), S), (((2, 1),), ((0, 3), (4, 4)), S), ((0, 2), S),
    ((0, 2), S, E), ((0, 2), (1, 3)), (E, (2, 3, 4)), (E, S, (2, 3, 4)), (E, S, S, (0, 3, 4)), (S, E, S, (0, 3, 4)),
    (S, S, E, (0, 3, 4)), (((0, 1), (1, 0)), ((2, 1), (3, 5)), E, S),
]
REST_3x9x8x6 = [
    (S, S, S, (0, 3, 4)), (S, S, (2, 4, 5, 7), S), (S, (2, 3), S, S), ((1, 2), S, S, S), (S, S, (0,), (1, 2, 4)),
    (S, S, (0, 1, 3), (4,)), (S, S, ((0, 1), (1, 0)), ((2, 3),)), (S, S, ((0, 1), (2, 3)), ((0,),)),
    (S, S, ((5, 6),), ((0, 3), (4, 4))), (S, (0,), (1, 2, 4), S), (S, (0, 1, 3), (4,), S),
    (S, ((0, 1), (3, 4)), ((2, 3), (0, 1)), S), (S, ((0, 1), (3, 4)), ((2, 3),), S), (S, ((0, 1), (3, 2)), ((0,),), S),
    (S, ((2, 1),), ((0, 3), (6, 4)), S), (S, ((2,),), ((0, 3), (4, 2)), S), ((0, 1, 2), (1, 3, 4), S, S),
    ((0,), (1, 2, 4), S, S), ((0, 1, 2), (4,), S, S), (((0, 1), (1, 2)), ((2, 0),), S, S),
    (((2, 2),), ((0, 3), (4, 5)), S, S), (((2,),), ((0, 3), (4, 5)), S, S), (S, (2, 3, 4), (1, 3, 4), (4,)),
    (S, (0, 1, 3), (4,), (1, 3, 4)), (S, (6,), (0, 2, 3), (1, 3, 4)), (S, (2, 3, 5), (3,), (4,)),
    (S, (0,), (4,), (1, 3, 4)), (S, (6,), (0, 2, 3), (1,)), ((2, 2, 1), (0, 2, 3), (1, 3, 4), S),
    ((0, 1, 2), (4,), (1, 3, 4), S), ((0,), (0, 2, 3), (1, 3, 4), S), ((0, 2, 1), (3,), (4,), S),
    ((0,), (4,), (1, 3, 4), S), ((1,), (0, 2, 3), (1,), S), (E, (0, 3, 4)), (E, S, (0, 3, 4)), (E, S, S, (0, 3, 4)),
    (S, E, (0, 3, 4)), (S, S, E, (0, 3, 4)), (S, (0, 2, 3), (1, 3, 4)), (S, (0, 2, 3), (1, 3, 4), E),
    ((0,), (1, 2, 4)), ((0,), (1, 2, 4), S), ((0,), (1, 2, 4), E), ((1,),), ((0, 2, 1), (3,), (4,), S),
    ((0, 2, 1), (3,), (4,), E),
]


@pytest.mark.parametrize("shape,keys", [((4, 5), [(S, [0, 1, 1, 2, 2])]), ((4, 8, 5), REST_4x8x5),
                                        ((3, 9, 8, 6), REST_3x9x8x6)])
def test_advanced_index_rest_against_numpy(T, shape, keys):
    """test_advancedindex's indexers (tuples of ints are index sequences): the read, a write of a number and
    of a tensor, and the read's gradient (scattered back, repeats summed), against NumPy."""
    base = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    x = T.tensor(base)
    rng = np.random.default_rng(1)
    for key in keys:
        npkey = tuple(list(k) if isinstance(k, tuple) else k for k in key)
        same(x[key], base[npkey], "float64")
        region = base[npkey].shape
        for value in (1333.0, rng.permutation(int(np.prod(region))).reshape(region).astype(np.float64)):
            written, expected = x.clone(), base.copy()
            written[key] = value if isinstance(value, float) else T.tensor(value)
            expected[npkey] = value
            same(written, expected)
        leaf = T.tensor(base, requires_grad=True)
        out = leaf[key]
        g = rng.standard_normal(region)
        out.backward(T.tensor(g))
        expected_grad = np.zeros_like(base)
        np.add.at(expected_grad, npkey, g)
        np.testing.assert_allclose(values(leaf.grad), expected_grad, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- non-contiguous operands


def test_vector_index_ops_on_non_contiguous_operands(T):
    """test_index_copy, test_index_select, test_index_reduce and test_take_along_dim read transposed and
    strided operands (and strided index vectors) as their values."""
    rng = np.random.default_rng(2)
    dest = rng.integers(-9, 9, (5, 6)).astype(np.float32)
    src = rng.integers(-9, 9, (3, 5)).astype(np.float32)
    t_dest = T.tensor(dest.T.copy()).t()  # (5, 6), transposed
    t_src = T.tensor(src.T.copy()).t()  # (3, 5), transposed
    assert not t_dest.is_contiguous() and not t_src.is_contiguous()
    index = T.tensor([4, 4, 0, 0, 2, 2])[::2]  # [4, 0, 2], strided
    got = t_dest[:, :5].clone().index_copy_(0, index, t_src)
    expected = dest[:, :5].copy()
    expected[[4, 0, 2]] = src
    same(got, expected)
    same(T.index_select(t_dest, 1, index), dest[:, [4, 0, 2]])
    same(t_dest.index_select(0, index), dest[[4, 0, 2]])
    reduced = t_dest[:, :5].clone().index_reduce_(0, T.tensor([1, 1, 3]), t_src, "amax", include_self=False)
    expected = dest[:, :5].copy()
    expected[1] = np.maximum(src[0], src[1])
    expected[3] = src[2]
    same(reduced, expected)
    order = T.argsort(t_dest, dim=1)
    same(T.take_along_dim(t_dest, order, dim=1), np.sort(dest, axis=1))
    same(T.take_along_dim(t_dest[:, ::2], order[:, ::2] % 3, dim=1),
         np.take_along_axis(dest[:, ::2], values(order)[:, ::2] % 3, axis=1))


def test_index_reduce_says_it_is_in_beta(T, warn_always):
    for reduce in ("prod", "amax"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = T.zeros(3).index_reduce(0, T.tensor([0, 0]), T.tensor([2.0, 3.0]), reduce, include_self=False)
        same(out, [6 if reduce == "prod" else 3, 0, 0])
        assert len(caught) == 1  # (PyTorch's adds where it was triggered in its C++)
        assert str(caught[0].message).startswith("index_reduce() is in beta and the API may change at any time.")


# ------------------------------------------------------------------------------ gradients through indexing


def test_gradients_through_index_writes(T):
    """A written region takes its gradient from the write's value: the values it covers get none."""
    x = T.arange(6.0, requires_grad=True)
    v = T.tensor([10.0, 20.0], requires_grad=True)
    y = x * 1
    y[[0, 3]] = v * 2
    (y * T.arange(6.0)).sum().backward()
    same(x.grad, [0, 1, 2, 0, 4, 5])
    same(v.grad, [0, 6])

    for v, v_grad in ((T.tensor(5.0, requires_grad=True), 12), (T.tensor([1.0, 2.0, 3.0], requires_grad=True),
                                                                 [3, 4, 5])):
        x = T.arange(6.0, requires_grad=True)
        y = x.clone()
        y[y > 2] = v
        (y * T.arange(6.0)).sum().backward()
        same(x.grad, [0, 1, 2, 0, 0, 0])
        same(v.grad, v_grad)

    x = T.zeros(3, 4, requires_grad=True)
    v = T.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x.index_put((T.tensor([0, 0, 2]), T.tensor([1, 1, -1])), v * 3, accumulate=True)
    (y * T.arange(12.0).view(3, 4)).sum().backward()
    same(y, [[0, 9, 0, 0], [0, 0, 0, 0], [0, 0, 0, 9]])
    same(x.grad, np.arange(12.0).reshape(3, 4))
    same(v.grad, [3, 3, 33])


def test_gradients_through_index_reads(T):
    """Basic and advanced keys mixed (a slice, None, apart index arrays): the gradient lands where the read came
    from."""
    x = T.arange(24.0, requires_grad=True)
    y = x.view(2, 3, 4)[:, [0, 2], None, 1:3]
    assert y.shape == (2, 2, 1, 2)
    (y ** 2).sum().backward()
    expected = np.zeros((2, 3, 4))
    expected[:, [0, 2], 1:3] = 2 * np.arange(24.0).reshape(2, 3, 4)[:, [0, 2], 1:3]
    same(x.grad, expected.reshape(-1))

    x = T.arange(60.0).view(3, 4, 5).requires_grad_()
    y = x[[0, 2], :, [1, 1]]
    assert y.shape == (2, 4)
    y.backward(T.ones_like(y))
    expected = np.zeros((3, 4, 5))
    expected[[0, 2], :, 1] = 1
    same(x.grad, expected)

    x = T.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    picked = x[T.tensor([[True, False], [False, True]])]  # a 2-d mask: the diagonal
    (picked * T.tensor([10.0, 100.0])).sum().backward()
    same(picked, [1, 4])
    same(x.grad, [[10, 0], [0, 100]])


def test_leaf_that_requires_grad_refuses_index_writes(T):
    a = T.zeros(3, requires_grad=True)
    raises(RuntimeError, "a leaf Variable that requires grad is being used in an in-place operation",
           a.__setitem__, 0, 1.0)
    raises(RuntimeError, "a leaf Variable that requires grad is being used in an in-place operation",
           a.index_put_, (T.tensor([0]),), T.tensor(1.0))
    with T.no_grad():
        a[T.tensor([0, 2])] = 1.0
    same(a, [1, 0, 1])


# ---------------------------------------------------------------------- out-of-range and wrong-dtype indices


def test_sequences_of_floats_are_positions(T):
    """PyTorch makes an index tensor of a list (or NumPy array) of numbers, int64 where it holds floats: the
    positions toward zero. A float number or NumPy bool alone is refused."""
    x = T.arange(5.0)
    same(x[[1.7, 2.2]], [1, 2], "float32")
    same(x[np.array([-1.5])], [4])
    same(x[np.array([1.0], dtype=np.float32)], [1])
    same(x[[True, 1.0]], [1, 1])
    y = T.arange(6.0).view(2, 3)
    same(y[[0.0, 1.0], :], [[0, 1, 2], [3, 4, 5]])
    same(y[0, [1.5]], [1])
    same(y[np.array([[1.0, 0.0]])], [[[3, 4, 5], [0, 1, 2]]])
    z = T.zeros(5, requires_grad=True).clone()
    z[[0.5, 3.9]] = T.tensor([1.0, 2.0])
    same(z, [1, 0, 0, 2, 0])
    for bad, name in ((np.bool_(True), r"numpy\.bool_?"), (np.float64(1.0), r"numpy\.float64"), (1.0, "float")):
        raises(IndexError, rf"valid indices \(got {name}\)", x.__getitem__, bad)


def test_indices_of_the_wrong_dtype(T):
    """Index tensors are int64 or int32 (uint8 and bool as masks); each op says so in its own words."""
    x = T.arange(5.0)
    for bad in (T.tensor([1.0]), T.tensor([1], dtype=T.int16), T.tensor([1], dtype=T.int8)):
        raises(IndexError, "tensors used as indices must be long, int, byte or bool tensors", x.__getitem__, bad)
        raises(IndexError, "tensors used as indices must be long, int, byte or bool tensors", x.__setitem__, bad,
               0.0)
        raises(IndexError, "tensors used as indices must be long, int, byte or bool tensors", x.index_put_,
               (bad,), T.tensor(0.0))
    f = T.tensor([1.0])
    raises(RuntimeError, r"index_select\(\): Expected dtype int32 or int64 for index", T.index_select, x, 0, f)
    raises(RuntimeError, r"index_add_\(\): Expected dtype int32/int64 for index but got: Float", x.index_add_, 0, f,
           T.tensor([1.0]))
    raises(IndexError, r"index_fill_\(\): Expected dtype int64 for index", x.index_fill_, 0, f, 2)
    raises(RuntimeError, r"index_copy_\(\): Expected a long tensor for index, but got Float", x.index_copy_, 0, f,
           T.tensor([9.0]))
    raises(RuntimeError, r"take\(\): Expected a long tensor for index, but got Float", T.take, x, f)
    raises(RuntimeError, r"gather\(\): Expected dtype int32/int64 for index", T.gather, x, 0, f)
    raises(IndexError, r"index_select\(\): Index is supposed to be a vector", T.index_select, x, 0, T.tensor([[1]]))
    same(x, np.arange(5.0))


def test_indices_out_of_range(T):
    x = T.arange(5.0)
    raises(IndexError, "index out of range in self", T.index_select, x, 0, T.tensor([5]))
    # index_add's kernel for a vector says "in self" (no position wraps there: -1 is out of range too); for more
    # dims it names the position
    raises(IndexError, "index out of range in self", x.index_add_, 0, T.tensor([7]), T.tensor([1.0]))
    raises(IndexError, "index out of range in self", x.index_add_, 0, T.tensor([-1]), T.tensor([1.0]))
    raises(RuntimeError, "index 7 is out of bounds for dimension 1 with size 3", T.zeros(5, 3).index_add_, 1,
           T.tensor([7]), T.ones(5, 1))
    # index_fill counts negative positions from the end, and names the one given
    raises(IndexError, "index -6 is out of bounds for dimension 0 with size 5", x.index_fill_, 0, T.tensor([-6]), 2)
    same(x.clone().index_fill_(0, T.tensor([-5, 4]), 2), [2, 1, 2, 3, 2])
    raises(IndexError, "index 5 is out of bounds for dimension 0 with size 5", x.index_put_, (T.tensor([5]),),
           T.tensor(0.0))
    raises(IndexError, "index -6 is out of bounds for dimension 0 with size 5", x.index_put_, (T.tensor([-6]),),
           T.tensor(0.0), accumulate=True)
    raises(IndexError, r"too many indices for tensor of dimension 1 \(got 2\)", x.index_put_,
           (T.tensor([1]), T.tensor([0])), T.tensor(0.0))
    raises(IndexError, "out of range: tried to access index 5 on a tensor of 5 elements", T.take, x, T.tensor([5]))
    raises(RuntimeError, "index 5 is out of bounds for dimension 0 with size 5", T.gather, x, 0, T.tensor([5]))
    raises(IndexError, "index 3 is out of bounds for dimension 0 with size 3", T.arange(12).view(3, 4).__getitem__,
           [0, 3])
    same(x, np.arange(5.0))


def test_masks_that_do_not_fit_name_both_shapes(T):
    """A mask's shape against the tensor's: which dim of the mask, which of the tensor (in a read, a write and
    index_put_)."""
    x = T.arange(60).view(3, 4, 5)
    words = r"The shape of the mask \[{}\] at index {} does not match the shape of the indexed tensor \[3, 4, 5\] " \
            r"at index {}"
    raises(IndexError, words.format(2, 0, 0), x.__getitem__, T.tensor([True, False]))
    raises(IndexError, words.format(2, 0, 1), x.__getitem__, (S, T.tensor([True, False])))
    raises(IndexError, words.format(2, 0, 1), x.__setitem__, (S, T.tensor([True, False])), 1)
    raises(IndexError, words.format("2, 5", 0, 1), x.__getitem__, (E, T.ones(2, 5, dtype=T.bool)))
    raises(IndexError, words.format("3, 2", 1, 1), x.__getitem__, T.ones(3, 2, dtype=T.bool))
    raises(IndexError, words.format(4, 0, 2), x.__getitem__, ([0], E, T.ones(4, dtype=T.bool)))
    raises(IndexError, words.format(2, 0, 0), x.index_put_, (T.tensor([True, False]),), T.tensor(1))
    raises(IndexError, words.format(2, 0, 1), x.index_put_, (T.tensor([0]), T.tensor([True, False])), T.tensor(1))
    same(x, np.arange(60).reshape(3, 4, 5))


def test_written_values_of_another_dtype_or_shape(T):
    """x[i] = v with v of another dtype (a tensor of more than one element) or a shape that does not broadcast."""
    x = T.arange(5.0)
    for value, name in ((T.tensor([3], dtype=T.float64), "Double"), (T.tensor([3j]), "ComplexFloat")):
        raises(RuntimeError, "Index put requires the source and destination dtypes match, got Float for the "
               f"destination and {name} for the source", x.__setitem__, T.tensor([1]), value)
    raises(RuntimeError, "got Bool for the destination and Long for the source", T.zeros(3, dtype=T.bool).__setitem__,
           [0, 1], T.tensor([2, 0]))
    raises(RuntimeError, r"shape mismatch: value tensor of shape \[3, 3\] cannot be broadcast to indexing result of "
           r"shape \[3, 2\]", T.zeros(3, 4).__setitem__, (S, [0, 1]), T.ones(3, 3))
    raises(RuntimeError, r"shape mismatch: value tensor of shape \[3\] cannot be broadcast to indexing result of "
           r"shape \[2, 2\]", T.zeros(2, 2).index_put_, (T.tensor([0, 1]),), T.ones(3))
    # a Python number is cast (toward zero), and the leading 1s of a value drop
    y = T.arange(5)
    y[[1, 2]] = 2.7
    y[0] = -1.5
    same(y, [-1, 2, 2, 3, 4], "int64")
    z = T.zeros(3, 4)
    z[1] = T.ones(1, 1, 4)
    z[[0, 2], 1:3] = T.tensor([[1.0], [2.0]])
    same(z, [[0, 1, 1, 0], [1, 1, 1, 1], [0, 2, 2, 0]])
    same(x, np.arange(5.0))


@xfail_ours("x[i] = v takes any value NumPy broadcasts (a list, a tuple, a NumPy array or float32 or bool) where "
            "PyTorch takes a tensor or a Python number (and NumPy integers, float64) only, with a TypeError; "
            "the library's own code writes NumPy arrays through x[i] = v (embedding_renorm_ among them), so refusing "
            "them waits on those callers")
def test_written_values_are_tensors_or_numbers(T):
    x = T.zeros(2, 3)
    x[0] = np.float64(2.5)
    x[1] = np.int64(3)
    same(x, [[2.5] * 3, [3] * 3])
    for value, name in (([1.0, 2.0, 3.0], "list"), ((1.0, 2.0, 3.0), "tuple"), (np.ones(3), r"numpy\.ndarray"),
                        (np.float32(1.5), r"numpy\.float32")):
        raises(TypeError, f"can't assign a {name} to a torch.FloatTensor", x.__setitem__, 0, value)


def test_several_ellipses(T):
    x = T.arange(24.0).view(2, 3, 4)
    assert x[..., ...].shape == (2, 3, 4)
    assert x[..., 0, ...].shape == (2, 3)
    assert x[..., None, ...].shape == (2, 3, 4, 1)
