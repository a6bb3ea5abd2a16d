"""index_*, masked_*, where, take/put_, gather/scatter ported from PyTorch's
test/test_torch.py (TestTorch and TestTorchDeviceType on CPU).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`),
against literal or NumPy-computed expectations.
"""

import numpy as np
import pytest

import autograd
from tests.ported import raises, same, values

# ---------------------------------------------------------------------------------------------- index_*


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "int32", "complex64"])
def test_index_add(T, dtype):
    """test_index_add: rows of source added at index along dim, duplicates accumulate, alpha scales."""
    rng = np.random.default_rng(0)
    for dim in (0, 1, 2):
        shape = [5, 6, 7]
        n = 4
        src_shape = list(shape)
        src_shape[dim] = n
        base = rng.integers(-5, 5, shape).astype(dtype)
        src = rng.integers(-5, 5, src_shape).astype(dtype)
        idx = np.array([0, 2, 2, shape[dim] - 1])
        expected = base.copy()
        for i, k in enumerate(idx):
            sl = [slice(None)] * 3
            sl[dim] = k
            ss = [slice(None)] * 3
            ss[dim] = i
            expected[tuple(sl)] += 2 * src[tuple(ss)]
        x = T.tensor(base)
        out = x.index_add_(dim, T.tensor(idx), T.tensor(src), alpha=2)
        assert out is x
        same(x, expected, dtype)
        same(T.index_add(T.tensor(base), dim, T.tensor(idx, dtype=T.int32), T.tensor(src), alpha=2), expected)


def test_index_add_errors(T):
    x = T.zeros(5, 3)
    raises(RuntimeError, r"index 5 is out of bounds for dimension 0 with size 5", x.index_add_, 0, T.tensor([5]),
           T.ones(1, 3))
    raises(RuntimeError, "index_add_\\(\\): Expected dtype int32/int64 for index", x.index_add_, 0,
           T.tensor([0.0]), T.ones(1, 3))
    raises(RuntimeError, r"source tensor shape must match self tensor shape, excluding the specified dimension. "
           r"Got self.shape = \[5, 3\] source.shape = \[1, 4\]", x.index_add_, 0, T.tensor([0]), T.ones(1, 4))
    raises(RuntimeError, "index_add_\\(\\): self \\(Float\\) and source \\(Double\\) must have the same scalar type",
           x.index_add_, 0, T.tensor([0]), T.ones(1, 3, dtype=T.float64))
    raises(IndexError, "Dimension out of range", x.index_add_, 2, T.tensor([0]), T.ones(1, 3))


def test_index_add_gradient(T):
    x = T.zeros(4, 2, dtype=T.float64, requires_grad=True)
    s = T.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=T.float64, requires_grad=True)
    w = T.arange(8.0, dtype=T.float64).view(4, 2)
    (x.index_add(0, T.tensor([1, 1, 3]), s, alpha=3) * w).sum().backward()
    same(x.grad, values(w))
    same(s.grad, 3 * values(w)[[1, 1, 3]])


def test_index_copy(T):
    """test_index_copy: rows of source land at index; the target is otherwise untouched."""
    rng = np.random.default_rng(1)
    for dim in (0, 1, -1):
        base = rng.standard_normal((4, 5, 6)).astype(np.float32)
        n = base.shape[dim]
        perm = rng.permutation(n)[:3]
        src_shape = list(base.shape)
        src_shape[dim] = 3
        src = rng.standard_normal(src_shape).astype(np.float32)
        expected = base.copy()
        np.moveaxis(expected, dim, 0)[perm] = np.moveaxis(src, dim, 0)
        x = T.tensor(base)
        x.index_copy_(dim, T.tensor(perm), T.tensor(src))
        same(x, expected)
    x = T.zeros(3)
    same(x.index_copy(0, T.tensor([1]), T.tensor([5.0])), [0, 5, 0])
    same(x, [0, 0, 0])
    z = T.zeros(())
    z.index_copy_(0, T.tensor(0), T.tensor(7.0))
    same(z, np.float32(7.0))


def test_index_copy_errors(T):
    x = T.zeros(4, 3)
    raises(IndexError, r"index_copy_\(\): index 4 is out of bounds for dimension 0 with size 4", x.index_copy_, 0,
           T.tensor([4]), T.ones(1, 3))
    raises(RuntimeError, r"index_copy_\(\): Source/destination tensor must have same slice shapes. Destination "
           r"slice shape: 3 at dimension 0 and source slice shape: 2 at dimension 0",
           x.index_copy_, 0, T.tensor([0]), T.ones(1, 2))
    raises(IndexError, r"index_copy_\(\): Number of indices \(2\) should be equal to source.size\(dim\) \(1\)",
           x.index_copy_, 0, T.tensor([0, 1]), T.ones(1, 3))
    raises(RuntimeError, r"index_copy_\(\): Expected a long tensor for index, but got Float",
           x.index_copy_, 0, T.tensor([0.0]), T.ones(1, 3))
    raises(RuntimeError, r"index_copy_\(\): Source/destination tensor must have same slice shapes", x.index_copy_, 1,
           T.tensor([0]), T.ones(2, 1))
    raises(IndexError, r"index_copy_\(\): When source and destination are not scalars, their dimensionality must "
           r"match. Source dimensionality \(1\), destination dimensionality \(2\)", x.index_copy_, 1, T.tensor([0]),
           T.ones(3))


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "complex64"])
def test_index_fill(T, dtype):
    """test_index_fill: the listed slices along dim become value."""
    base = np.arange(12).reshape(3, 4).astype(dtype)
    x = T.tensor(base)
    fill = True if dtype == "bool" else 7
    x.index_fill_(1, T.tensor([0, 2, 2]), fill)
    expected = base.copy()
    expected[:, [0, 2]] = fill
    same(x, expected, dtype)
    y = T.tensor(base).index_fill(0, T.tensor([1]), T.tensor(fill))
    expected = base.copy()
    expected[1] = fill
    same(y, expected)
    raises(RuntimeError, r"index_fill_ only supports a 0-dimensional value tensor, but got tensor with 1 dimension",
           T.tensor(base).index_fill_, 0, T.tensor([0]), T.tensor([1]))
    raises(IndexError, r"index 3 is out of bounds for dimension 0 with size 3", T.tensor(base).index_fill_, 0,
           T.tensor([3]), 1)
    if dtype == "int64":
        raises(RuntimeError, r"index_fill_\(\): Converting complex Scalar to non-complex type is not supported",
               T.tensor(base).index_fill_, 0, T.tensor([0]), 1.5 + 2j)


def test_index_put_accumulate_duplicate_indices(T):
    """test_index_put_accumulate_duplicate_indices: accumulate sums every write at a repeated index,
    a plain write keeps one of them."""
    for n in (5, 50, 500):
        idx = np.arange(n) % 3
        v = np.arange(n, dtype=np.float64)
        x = T.zeros(3, dtype=T.float64)
        x.index_put_((T.tensor(idx),), T.tensor(v), accumulate=True)
        expected = np.zeros(3)
        np.add.at(expected, idx, v)
        same(x, expected)
    x = T.zeros(3)
    x.index_put_((T.tensor([1, 1]),), T.tensor([4.0, 4.0]))
    same(x, [0, 4, 0])


def test_index_put_gradients_with_duplicate_indices(T):
    """index_put without accumulate: the last write at a repeated position wins; every value that is
    written gets its position's gradient. (PyTorch also gives the overwritten value that gradient, though
    it reaches nothing; chainrule's is exact there: zero.)"""
    x = T.zeros(3, 2, dtype=T.float64, requires_grad=True)
    v = T.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=T.float64, requires_grad=True)
    w = T.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=T.float64)
    y = x.index_put((T.tensor([0, 2, 0]),), v)
    same(y, [[5, 6], [0, 0], [3, 4]])
    (y * w).sum().backward()
    same(x.grad, [[0, 0], [3, 4], [0, 0]])
    same(v.grad[1:], [[5, 6], [1, 2]])
    if T.__name__ == "autograd":
        same(v.grad[0], [0, 0])
    u = T.tensor([1.0, 2.0], dtype=T.float64, requires_grad=True)
    z = T.zeros(3, dtype=T.float64).index_put((T.tensor([2]),), u[1:])  # no repeat: plain routing
    (z * T.tensor([1.0, 2.0, 3.0], dtype=T.float64)).sum().backward()
    same(u.grad, [0, 3])


def test_index_put_with_repeats_passes_gradcheck():
    """chainrule's index_put gradient is the derivative of what it computes, repeats included (finite
    differences in float64; PyTorch's fails this check, as the overwritten values get a gradient)."""
    rng = np.random.default_rng(9)
    x = autograd.tensor(rng.standard_normal((4, 3)), requires_grad=True)
    v = autograd.tensor(rng.standard_normal((5, 3)), requires_grad=True)
    index = (autograd.tensor([0, 2, 0, 3, 2]),)
    assert autograd.gradcheck(lambda a, b: a.index_put(index, b), (x, v))
    assert autograd.gradcheck(lambda a, b: a.index_put(index, b, accumulate=True), (x, v))
    assert autograd.gradgradcheck(lambda a, b: a.index_put(index, b * b), (x, v))


def test_index_put_broadcast_and_errors(T):
    x = T.zeros(3, 4)
    x.index_put_((T.tensor([0, 2]),), T.tensor([1.0, 2.0, 3.0, 4.0]))
    same(x, [[1, 2, 3, 4], [0, 0, 0, 0], [1, 2, 3, 4]])
    x.index_put_((T.tensor([0, 2]), T.tensor([1, 3])), T.tensor(9.0), accumulate=True)
    same(x[0, 1], np.float32(11))
    same(x[2, 3], np.float32(13))
    raises(RuntimeError, r"shape mismatch: value tensor of shape \[3\] cannot be broadcast to indexing result of "
           r"shape \[2, 4\]", x.index_put_, (T.tensor([0, 2]),), T.ones(3))
    raises(IndexError, r"index 3 is out of bounds for dimension 0 with size 3", x.index_put_,
           (T.tensor([3]),), T.tensor(1.0))
    raises(IndexError, r"index -4 is out of bounds for dimension 0 with size 3", x.index_put_,
           (T.tensor([-4]),), T.tensor(1.0))
    raises(IndexError, r"too many indices for tensor of dimension 2", x.index_put_,
           (T.tensor([0]), T.tensor([0]), T.tensor([0])), T.tensor(1.0))
    raises(RuntimeError, r"Index put requires the source and destination dtypes match", x.index_put_,
           (T.tensor([0]),), T.ones(4, dtype=T.float64))


def test_index_put_accumulate_with_bool_mask_and_empty(T):
    x = T.ones(4)
    x.index_put_((T.tensor([True, False, True, False]),), T.tensor([2.0, 3.0]), accumulate=True)
    same(x, [3, 1, 4, 1])
    x.index_put_((T.tensor([], dtype=T.int64),), T.tensor([]), accumulate=True)
    same(x, [3, 1, 4, 1])


# --------------------------------------------------------------------------------------------- masked_*


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "complex64", "uint8"])
def test_masked_fill(T, dtype):
    """test_masked_fill: where mask is True the value, elsewhere self; the mask broadcasts."""
    base = (np.arange(10) % 4).astype(dtype)
    mask = np.array([i % 3 == 0 for i in range(10)])
    value = True if dtype == "bool" else 3
    x = T.tensor(base)
    x.masked_fill_(T.tensor(mask), value)
    same(x, np.where(mask, np.asarray(value).astype(dtype), base), dtype)
    m2 = T.tensor(base.reshape(2, 5)).masked_fill(T.tensor(mask[:5]), T.tensor(value))
    same(m2, np.where(mask[:5], np.asarray(value).astype(dtype), base.reshape(2, 5)))
    raises(RuntimeError, r"masked_fill_ only supports a 0-dimensional value tensor, but got tensor with 1 dimension",
           T.tensor(base).masked_fill_, T.tensor(mask), T.tensor([value]))
    raises(RuntimeError, r"masked_fill_ only supports boolean masks, but got mask with dtype long int",
           T.tensor(base).masked_fill_, T.tensor(mask.astype(np.int64)), value)
    raises(RuntimeError, r"The size of tensor a \(10\) must match the size of tensor b \(3\) at non-singleton "
           r"dimension 0|expand", T.tensor(base).masked_fill_, T.tensor([True, False, True]), value)


def test_masked_fill_broadcast_self_not_expanded(T):
    """The in-place form may not grow self to the mask's shape; the out-of-place one broadcasts both."""
    x = T.zeros(3)
    raises(RuntimeError, r"expand|broadcast|doesn't match the broadcast shape", x.masked_fill_,
           T.tensor([[True, False, True], [False, True, False]]), 1.0)
    y = x.masked_fill(T.tensor([[True, False, True], [False, True, False]]), 1.0)
    same(y, [[1, 0, 1], [0, 1, 0]])


def test_masked_fill_value_type_errors(T):
    raises(RuntimeError, r"value cannot be converted to type int64(_t)? without overflow",
           T.zeros(3, dtype=T.int64).masked_fill_, T.tensor([True, False, True]), 1.5 + 1j)
    x = T.zeros(3, dtype=T.int64).masked_fill(T.tensor([True, False, True]), 2.7)
    same(x, [2, 0, 2], "int64")


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "complex128"])
def test_masked_scatter(T, dtype):
    """test_masked_scatter: consecutive source elements land where mask is True, in row-major order."""
    base = np.zeros((2, 4)).astype(dtype)
    src = (np.arange(1, 9) % 5).reshape(2, 4).astype(dtype)
    mask = np.array([[True, False, True, False], [False, False, True, True]])
    x = T.tensor(base)
    x.masked_scatter_(T.tensor(mask), T.tensor(src))
    expected = base.copy()
    expected[mask] = src.reshape(-1)[: mask.sum()]
    same(x, expected, dtype)
    y = T.tensor(base).masked_scatter(T.tensor(mask[0]), T.tensor(src))  # mask broadcasts to self
    expected = base.copy()
    expected[np.broadcast_to(mask[0], (2, 4))] = src.reshape(-1)[:4]
    same(y, expected)


def test_masked_scatter_errors(T):
    x = T.zeros(4)
    raises(RuntimeError, r"masked_scatter_ only supports boolean masks, but got mask with dtype Byte",
           x.masked_scatter_, T.tensor([1, 0, 1, 0], dtype=T.uint8), T.ones(4))
    raises(RuntimeError, r"masked_scatter: expected self and source to have same dtypes but got ?Float and Double",
           x.masked_scatter_, T.tensor([True, False, True, False]), T.ones(4, dtype=T.float64))
    raises(RuntimeError, r"Number of elements of source < number of ones in mask", x.masked_scatter_,
           T.tensor([True, True, True, False]), T.ones(2))


def test_masked_scatter_gradient(T):
    x = T.zeros(4, dtype=T.float64, requires_grad=True)
    s = T.tensor([1.0, 2.0, 3.0, 4.0, 5.0], dtype=T.float64, requires_grad=True)
    mask = T.tensor([False, True, True, False])
    (x.masked_scatter(mask, s) * T.tensor([1.0, 2.0, 3.0, 4.0], dtype=T.float64)).sum().backward()
    same(x.grad, [1, 0, 0, 4])
    same(s.grad, [2, 3, 0, 0, 0])


@pytest.mark.parametrize("dtype", ["float32", "int16", "bool", "complex64"])
def test_masked_select(T, dtype):
    """test_masked_select: the elements where the (broadcast) mask is True, flattened in order."""
    base = (np.arange(12) % 5).reshape(3, 4).astype(dtype)
    mask = np.array([True, False, False, True])
    same(T.masked_select(T.tensor(base), T.tensor(mask)), np.broadcast_to(base, (3, 4))[np.broadcast_to(mask, (3, 4))],
         dtype)
    same(T.tensor(base[0]).masked_select(T.tensor(np.ones((2, 4), bool))), np.tile(base[0], 2))
    raises(RuntimeError, r"masked_select: expected BoolTensor for mask", T.masked_select, T.tensor(base),
           T.tensor(mask.astype(np.uint8)))
    raises(RuntimeError, r"The size of tensor a \(3\) must match the size of tensor b \(4\) at non-singleton "
           r"dimension 1", T.masked_select, T.tensor(base), T.tensor([True, False, True]))


def test_masked_select_discontiguous_and_empty(T):
    a = np.arange(20.0, dtype=np.float32).reshape(4, 5)
    x = T.tensor(a).t()
    mask = T.tensor(a.T > 7)
    same(x.masked_select(mask), a.T[a.T > 7])
    same(T.zeros(0, 3).masked_select(T.ones(3, dtype=T.bool)), np.zeros(0, np.float32))


# ------------------------------------------------------------------------------------------------ where


def test_where_scalars_and_promotion(T):
    """test_where_scalar_handling / test_where_scalar_valid_combination: Python numbers take the other
    operand's dtype category; two tensors promote."""
    cond = T.tensor([True, False, True])
    x = T.tensor([1, 2, 3], dtype=T.int32)
    r = T.where(cond, x, 0)
    same(r, [1, 0, 3], "int32")
    r = T.where(cond, x, 0.5)
    same(r, np.array([1, 0.5, 3], np.float32), "float32")
    r = T.where(cond, 1.0, 2.0)
    same(r, np.array([1, 2, 1], np.float32), "float32")
    r = T.where(cond, 1, 2)
    same(r, [1, 2, 1], "int64")
    r = T.where(cond, x, T.tensor([1.0, 2.0, 3.0], dtype=T.float64))
    same(r, [1, 2, 3], "float64")
    r = T.where(cond, T.tensor([1, 2, 3], dtype=T.uint8), T.tensor([-1, -2, -3], dtype=T.int8))
    same(r, [1, -2, 3], "int16")
    r = T.where(cond, 1j, T.zeros(3))
    same(r, np.array([1j, 0, 1j], np.complex64), "complex64")
    r = T.where(cond, T.tensor(2.0, dtype=T.float64), T.zeros(3))  # a 0-d tensor does not promote
    same(r, np.array([2, 0, 2], np.float32), "float32")


def test_where_broadcast_and_errors(T):
    cond = T.tensor([[True], [False]])
    same(T.where(cond, T.tensor([1.0, 2.0, 3.0]), T.tensor(0.0)), [[1, 2, 3], [0, 0, 0]])
    raises(RuntimeError, r"where expected condition to be a boolean tensor, but got a tensor with dtype "
           r"(Float|float32)", T.where, T.tensor([1.0, 0.0]), T.ones(2), T.zeros(2))
    same(T.where(T.tensor([[0, 1], [2, 0]]) > 0)[1], [1, 0])  # one argument: nonzero(as_tuple=True)


def test_where_shape_error(T):
    raises(RuntimeError, r"The size of tensor a \(2\) must match the size of tensor b \(3\) at non-singleton "
           r"dimension 0", T.where, T.tensor([True, False]), T.ones(3), T.zeros(3))


def test_where_scalar_overflow(T):
    raises(RuntimeError, r"value cannot be converted to type uint8(_t)? without overflow", T.where,
           T.tensor([True, False]), T.tensor([1], dtype=T.uint8), 300)


def test_where_gradient(T):
    a = T.tensor([1.0, 2.0, 3.0], dtype=T.float64, requires_grad=True)
    b = T.tensor([4.0, 5.0, 6.0], dtype=T.float64, requires_grad=True)
    T.where(T.tensor([True, False, True]), a, b).sum().backward()
    same(a.grad, [1, 0, 1])
    same(b.grad, [0, 1, 0])


# ------------------------------------------------------------------------------------------- take, put_


def test_take(T):
    """test_take: indices into the flattened tensor, any index shape, negatives from the end."""
    a = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    x = T.tensor(a)
    idx = np.array([[0, -1], [5, 7]])
    same(T.take(x, T.tensor(idx)), a.reshape(-1)[idx])
    same(x.t().take(T.tensor([1, 2])), a.T.reshape(-1)[[1, 2]])
    same(T.take(x, T.tensor([], dtype=T.int64)), np.zeros(0, np.float32))
    raises(IndexError, r"out of range: tried to access index 12 on a tensor of 12 elements", T.take, x,
           T.tensor([12]))
    raises(IndexError, r"out of range: tried to access index -13 on a tensor of 12 elements", T.take, x,
           T.tensor([-13]))
    raises(RuntimeError, r"take\(\): Expected a long tensor for index, but got Int", T.take, x,
           T.tensor([1], dtype=T.int32))
    raises(IndexError, r"take\(\): tried to take from an empty tensor", T.take, T.zeros(0), T.tensor([0]))


def test_put(T):
    """test_put / test_put_accumulate: writes into the flattened tensor; accumulate adds duplicates."""
    a = np.zeros((3, 4), np.float32)
    x = T.tensor(a)
    x.put_(T.tensor([[0, -1], [5, 5]]), T.tensor([[1.0, 2.0], [3.0, 3.0]]))
    expected = a.copy().reshape(-1)
    expected[[0, -1, 5]] = [1, 2, 3]
    same(x, expected.reshape(3, 4))
    x = T.zeros(3, 4)
    x.put_(T.tensor([1, 1, 2, 1]), T.tensor([1.0, 2.0, 3.0, 4.0]), accumulate=True)
    same(x.view(-1)[:3], [0, 7, 3])
    y = T.zeros(2, 2).t()  # a non-contiguous target uses its logical (row-major) order
    y.put_(T.tensor([1]), T.tensor([5.0]))
    same(y, [[0, 5], [0, 0]])
    same(T.zeros(3).put(T.tensor([2]), T.tensor([1.0])), [0, 0, 1])
    raises(IndexError, r"out of range: tried to access index 12 on a tensor of 12 elements", T.zeros(3, 4).put_,
           T.tensor([12]), T.tensor([1.0]))
    raises(IndexError, r"put_\(\): Expected source and index to have the same number of elements, but got "
           r"source.numel\(\) = 2, index.numel\(\) = 1", T.zeros(3).put_, T.tensor([0]), T.tensor([1.0, 2.0]))
    raises(RuntimeError, r"put_\(\): self and source expected to have the same dtype, but got self.dtype = Float "
           r"and source.dtype = Double", T.zeros(3).put_, T.tensor([0]), T.tensor([1.0], dtype=T.float64))


def test_take_put_gradients(T):
    x = T.tensor([1.0, 2.0, 3.0, 4.0], dtype=T.float64, requires_grad=True)
    T.take(x, T.tensor([0, 0, 3])).sum().backward()
    same(x.grad, [2, 0, 0, 1])
    v = T.tensor([5.0, 6.0], dtype=T.float64, requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    (x2.put(T.tensor([1, 2]), v, accumulate=False) * T.tensor([1.0, 2.0, 3.0, 4.0], dtype=T.float64)).sum().backward()
    same(x2.grad, [1, 0, 0, 4])
    same(v.grad, [2, 3])


# ------------------------------------------------------------------------------- gather, scatter(_add)


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "complex64"])
def test_gather(T, dtype):
    """test_gather: out[i][j][k] = src[i][index[i][j][k]][k] for dim 1, and the like."""
    rng = np.random.default_rng(2)
    src = rng.integers(0, 5, (4, 5, 6)).astype(dtype)
    for dim in range(3):
        ishape = [3, 4, 5]
        idx = rng.integers(0, src.shape[dim], ishape)
        got = T.gather(T.tensor(src), dim, T.tensor(idx))
        # reference by loops (the index may be smaller than src in the other dims)
        ref = np.empty(ishape, dtype)
        for i, j, k in np.ndindex(*ishape):
            pos = [i, j, k]
            pos[dim] = idx[i, j, k]
            ref[i, j, k] = src[tuple(pos)]
        same(got, ref, dtype)


def test_gather_errors(T):
    x = T.zeros(3, 4)
    raises(RuntimeError, r"index 4 is out of bounds for dimension 1 with size 4", T.gather, x, 1,
           T.tensor([[4]]))
    raises(RuntimeError, r"gather\(\): Expected dtype int(32/int)?64 for index", T.gather, x, 1, T.tensor([[0.0]]))
    raises(RuntimeError, r"Index tensor must have the same number of dimensions as input tensor", T.gather, x, 1,
           T.tensor([0]))
    raises(RuntimeError, r"Size does not match at dimension 0 expected index \[4, 1\] to be (smaller|no larger) than "
           r"(self|input) \[3, 4\] apart from dimension 1", T.gather, x, 1, T.zeros(4, 1, dtype=T.int64))


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64", "complex64"])
def test_scatter_and_scatter_add(T, dtype):
    """test_scatter / test_scatter_add: self[i][index[i][j]] = src[i][j] (dim 1); scatter_add sums
    duplicates."""
    rng = np.random.default_rng(3)
    for dim in (0, 1):
        base = rng.integers(-3, 3, (4, 5)).astype(dtype)
        src = rng.integers(1, 6, (3, 3)).astype(dtype)
        idx = rng.integers(0, base.shape[dim], (3, 3))
        expected_add = base.copy()
        for i, j in np.ndindex(3, 3):
            pos = [i, j]
            pos[dim] = idx[i, j]
            expected_add[tuple(pos)] += src[i, j]
        got = T.tensor(base).scatter_add_(dim, T.tensor(idx), T.tensor(src))
        same(got, expected_add, dtype)
        # plain scatter with unique indices per line
        uidx = np.stack([rng.permutation(base.shape[dim])[:3] for _ in range(3)], 1 - dim) if dim == 0 else \
            np.stack([rng.permutation(base.shape[dim])[:3] for _ in range(3)], 0)
        expected = base.copy()
        for i, j in np.ndindex(3, 3):
            pos = [i, j]
            pos[dim] = uidx[i, j]
            expected[tuple(pos)] = src[i, j]
        same(T.tensor(base).scatter(dim, T.tensor(uidx), T.tensor(src)), expected, dtype)
    x = T.zeros(2, 3, dtype=getattr(T, dtype))
    x.scatter_(1, T.tensor([[0, 2], [1, 1]]), 4)
    same(x, np.array([[4, 0, 4], [0, 4, 0]]).astype(dtype))


def test_scatter_reduce_argument(T):
    x = T.ones(2, 3)
    x.scatter_(1, T.tensor([[0, 0], [2, 1]]), T.tensor([[2.0, 3.0], [4.0, 5.0]]), reduce="multiply")
    same(x, [[6, 1, 1], [1, 5, 4]])
    x = T.ones(2, 3)
    x.scatter_(1, T.tensor([[0, 0], [2, 1]]), 2.0, reduce="add")
    same(x, [[5, 1, 1], [1, 3, 3]])
    raises(RuntimeError, r"reduce argument must be either add or multiply", T.ones(2, 3).scatter_, 1,
           T.tensor([[0]]), 1.0, reduce="max")


def test_scatter_errors(T):
    x = T.zeros(3, 4)
    raises(RuntimeError, r"index 4 is out of bounds for dimension 1 with size 4", x.scatter_, 1, T.tensor([[4]]),
           T.ones(1, 1))
    raises(RuntimeError, r"index -1 is out of bounds for dimension 1 with size 4", x.scatter_add_, 1,
           T.tensor([[-1]]), T.ones(1, 1))
    raises(RuntimeError, r"scatter\(\): Expected dtype int(32/int)?64 for index", x.scatter_, 1, T.tensor([[0.0]]),
           T.ones(1, 1))
    raises(RuntimeError, r"Index tensor must have the same number of dimensions as self tensor", x.scatter_, 1,
           T.tensor([0]), T.ones(1))
    raises(RuntimeError, r"Expected index \[1, 3\] to be (smaller|no larger) than self \[3, 4\] apart from dimension 1 "
           r"and to be (smaller|no larger) (size )?than src \[1, 2\]", x.scatter_, 1, T.tensor([[0, 1, 2]]),
           T.ones(1, 2))
    raises(RuntimeError, r"scatter\(\): Expected self.dtype to be equal to src.dtype", x.scatter_, 1,
           T.tensor([[0]]), T.ones(1, 1, dtype=T.float64))


def test_scatter_gather_gradients(T):
    x = T.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=T.float64, requires_grad=True)
    idx = T.tensor([[0, 0], [2, 1]])
    T.gather(x, 1, idx).sum().backward()
    same(x.grad, [[2, 0, 0], [0, 1, 1]])
    s = T.ones(2, 2, dtype=T.float64, requires_grad=True)
    base = T.zeros(2, 3, dtype=T.float64, requires_grad=True)
    w = T.arange(6.0, dtype=T.float64).view(2, 3)
    (base.scatter_add(1, idx, s) * w).sum().backward()
    same(base.grad, values(w))
    same(s.grad, [[0, 0], [5, 4]])
