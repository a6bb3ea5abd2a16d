"""clamp, nonzero, flip/roll/rot90, diff, cross, diag*, tril/triu, narrow/chunk/split/tensor_split/unbind,
repeat/repeat_interleave and expand ported from PyTorch's test/test_torch.py (TestTorch and
TestTorchDeviceType on CPU).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`),
against literal or NumPy-computed expectations.
"""

import numpy as np
import pytest

from tests.ported import raises, same, values

# ------------------------------------------------------------------------------------------------ clamp


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "float32", "float64"])
def test_clamp_integer_and_float_dtypes(T, dtype):
    """test_clamp / test_clamp_type_promotion: integer tensors clamp in their dtype."""
    a = np.array([0, 3, 7, 10, 100, 5]).astype(dtype)
    x = T.tensor(a)
    same(x.clamp(2, 9), np.clip(a, 2, 9), dtype)
    same(x.clamp(min=4), np.maximum(a, 4), dtype)
    same(x.clamp(max=6), np.minimum(a, 6), dtype)
    same(T.clamp_min(x, 4), np.maximum(a, 4), dtype)
    same(T.clamp_max(x, 6), np.minimum(a, 6), dtype)
    same(x.clip(2, 9), np.clip(a, 2, 9), dtype)
    y = T.tensor(a)
    y.clamp_(3, 8)
    same(y, np.clip(a, 3, 8), dtype)


def test_clamp_min_greater_than_max(T):
    """torch.clamp with min > max gives max everywhere (min is applied first, then max)."""
    x = T.tensor([-1.0, 0.5, 2.0, 5.0])
    same(x.clamp(3.0, 1.0), np.full(4, 1.0, np.float32))
    same(x.clamp(T.tensor(3.0), T.tensor(1.0)), np.full(4, 1.0, np.float32))


def test_clamp_tensor_bounds(T):
    """test_clamp_tensor: bounds are tensors that broadcast against the input."""
    a = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    lo = np.array([1.0, 2.0, 3.0, 20.0], np.float32)
    hi = np.array([[5.0], [6.0], [7.0]], np.float32)
    x = T.tensor(a)
    same(x.clamp(T.tensor(lo), T.tensor(hi)), np.minimum(np.maximum(a, lo), hi))
    same(x.clamp(min=T.tensor(lo)), np.maximum(a, lo))
    same(x.clamp(max=T.tensor(hi)), np.minimum(a, hi))
    same(T.clamp(T.tensor([1, 5, 9]), T.tensor([2.5, 0.0, 0.0])), np.array([2.5, 5, 9], np.float32), "float32")
    raises(RuntimeError, r"At least one of 'min' or 'max' must not be None", x.clamp)
    raises(RuntimeError, r"At least one of 'min' or 'max' must not be None", T.clamp, x, None, None)


def test_clamp_type_promotion(T):
    """A float bound promotes an integer tensor; an integer bound keeps a float one's dtype."""
    x = T.tensor([1, 5, 9])
    same(x.clamp(2.5, 7.5), np.array([2.5, 5, 7.5], np.float32), "float32")
    same(T.tensor([1.0, 5.0]).clamp(2, 3), np.array([2, 3], np.float32), "float32")
    same(T.tensor([1.5, 5.0], dtype=T.float64).clamp(T.tensor(2.0), None), [2, 5], "float64")
    i = T.tensor([1, 5, 9])
    raises(RuntimeError, r"result type Float can't be cast to the desired output type (Long|long int)", i.clamp_, 2.5)


def test_clamp_gradient(T):
    x = T.tensor([-2.0, 0.0, 0.5, 1.0, 3.0], dtype=T.float64, requires_grad=True)
    x.clamp(0.0, 1.0).sum().backward()
    same(x.grad, [0, 1, 1, 1, 0])
    lo = T.tensor([0.0, 1.0, 0.0, 0.0, 0.0], dtype=T.float64, requires_grad=True)
    x2 = x.detach().requires_grad_()
    x2.clamp(min=lo).sum().backward()
    same(x2.grad, [0, 0, 1, 1, 1])
    same(lo.grad, [1, 1, 0, 0, 0])


# ---------------------------------------------------------------------------------------------- nonzero


@pytest.mark.parametrize("shape", [(0,), (5,), (3, 4), (2, 3, 4), (1, 1, 1), ()])
def test_nonzero_as_tuple(T, shape):
    """test_nonzero / test_nonzero_astuple: (n, ndim) int64 positions, or one vector per dim."""
    rng = np.random.default_rng(4)
    a = rng.integers(0, 2, shape).astype(np.float32)
    x = T.tensor(a)
    got = T.nonzero(x)
    same(got, np.argwhere(a).astype(np.int64).reshape(-1, len(shape)) if a.ndim else
         np.zeros((int(a != 0), 0), np.int64), "int64")
    parts = T.nonzero(x, as_tuple=True)
    assert isinstance(parts, tuple)
    expected = np.nonzero(a) if a.ndim else np.nonzero(a.reshape(1))
    assert len(parts) == len(expected)
    for p, e in zip(parts, expected):
        same(p, e.astype(np.int64), "int64")
    same(x.nonzero(as_tuple=False), values(got))
    if a.ndim:
        same(x[parts], a[np.nonzero(a)])
    same(T.count_nonzero(x), np.int64(np.count_nonzero(a)))


def test_nonzero_of_bool_and_complex(T):
    same(T.tensor([[True, False], [False, True]]).nonzero(), [[0, 0], [1, 1]])
    same(T.tensor([0j, 1j, 0 + 0j, 2]).nonzero(), [[1], [3]])
    same(T.tensor([0.0, -0.0, float("nan")]).nonzero(), [[2]])


# ----------------------------------------------------------------------------------- flip, roll, rot90


def test_flip(T):
    a = np.arange(1, 9, dtype=np.float32).reshape(2, 2, 2)
    x = T.tensor(a)
    for dims in [(0,), (1,), (2,), (0, 1), (0, 1, 2), (-1,), (0, 2)]:
        same(x.flip(dims), np.flip(a, dims))
    same(T.flip(x.transpose(0, 1), (0,)), np.flip(a.transpose(1, 0, 2), 0))
    raises(RuntimeError, r"dim 0 appears multiple times in the list of dims", x.flip, (0, 0))
    raises(IndexError, r"Dimension out of range \(expected to be in range of \[-3, 2\], but got 3\)", x.flip, 3)
    same(T.tensor(5.0).flip(0), np.float32(5))


def test_roll(T):
    """test_roll: elements shift cyclically, over the flattened tensor when no dims are given."""
    a = np.arange(1, 21, dtype=np.float32).reshape(4, 5)
    x = T.tensor(a)
    for shifts, dims in [(1, 0), (-1, 0), (2, 1), (7, 1), ((1, 2), (0, 1)), ((-3, 6), (1, 0))]:
        same(x.roll(shifts, dims), np.roll(a, shifts, dims))
    same(x.roll(3), np.roll(a, 3))
    same(x.t().roll(1, 0), np.roll(a.T, 1, 0))
    same(T.roll(T.tensor([1, 2, 3]), 0), [1, 2, 3])
    same(T.zeros(0, 3).roll(1, 0), np.zeros((0, 3), np.float32))
    raises(RuntimeError, r"shifts and dimensions must align. shifts: 2, dims:1", x.roll, (1, 2), (0,))
    raises(IndexError, r"Dimension out of range", x.roll, 1, 2)


def test_roll_gradient(T):
    x = T.arange(5.0, dtype=T.float64, requires_grad=True)
    (x.roll(2) * T.arange(5.0, dtype=T.float64)).sum().backward()
    same(x.grad, np.roll(np.arange(5.0), -2))


def test_rot90(T):
    """test_rot90: k quarter turns from the first to the second of dims."""
    a = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    x = T.tensor(a)
    for k in range(-4, 6):
        same(x.rot90(k), np.rot90(a, k))
        same(x.rot90(k, [1, 0]), np.rot90(a, k, (1, 0)))
    b = np.arange(24.0, dtype=np.float32).reshape(2, 3, 4)
    same(T.rot90(T.tensor(b), 1, [0, 2]), np.rot90(b, 1, (0, 2)))
    raises(RuntimeError, r"expected total rotation dims == 2, but got dims = 3", x.rot90, 1, [0, 1, 2])
    raises(RuntimeError, r"expected total dims >= 2, but got total dims = 1", T.ones(3).rot90, 1, [0, 0])
    raises(RuntimeError, r"expected rotation dims to be different, but got dim0 = 1 and dim1 = 1", x.rot90, 1,
           [1, 1])
    raises(IndexError, r"Dimension out of range", x.rot90, 1, [0, 2])


# ------------------------------------------------------------------------------------------ diff, cross


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
def test_diff(T, dtype):
    """test_diff: n-th forward differences along dim, with prepend/append joined first."""
    rng = np.random.default_rng(5)
    a = rng.integers(0, 5, (4, 5)).astype(dtype)
    x = T.tensor(a)
    for n in (0, 1, 2, 5):
        for dim in (0, 1, -1):
            same(T.diff(x, n, dim), np.diff(a, n, dim), dtype)
    pre = rng.integers(0, 5, (4, 2)).astype(dtype)
    app = rng.integers(0, 5, (4, 1)).astype(dtype)
    same(x.diff(dim=1, prepend=T.tensor(pre), append=T.tensor(app)),
         np.diff(a, axis=1, prepend=pre, append=app))
    if dtype == "float32":
        same(x.diff(prepend=T.tensor(2.0)[None].expand(4, 1)), np.diff(a, prepend=2.0))


def test_diff_of_a_scalar(T):
    raises(RuntimeError, r"diff expects input to be at least one-dimensional", T.diff, T.tensor(2.0))


def test_diff_prepend_of_other_ndim(T):
    raises(RuntimeError, r"diff expects prepend or append to be the same dimension as input", T.diff,
           T.ones(3, 2), prepend=T.ones(2))


def test_diff_errors(T):
    raises(RuntimeError, r"order must be non-negative but got -1", T.diff, T.ones(3), -1)


def test_cross(T):
    """test_cross / test_linalg_cross: the first dim of size 3 (torch.cross with dim) or the last
    (linalg.cross); inputs broadcast."""
    rng = np.random.default_rng(6)
    a = rng.standard_normal((4, 3)).astype(np.float64)
    b = rng.standard_normal((4, 3)).astype(np.float64)
    np.testing.assert_allclose(values(T.cross(T.tensor(a), T.tensor(b), dim=1)), np.cross(a, b), rtol=1e-12)
    np.testing.assert_allclose(values(T.linalg.cross(T.tensor(a), T.tensor(b))), np.cross(a, b), rtol=1e-12)
    np.testing.assert_allclose(values(T.cross(T.tensor(a.T), T.tensor(b.T), dim=0)), np.cross(a, b).T, rtol=1e-12)
    np.testing.assert_allclose(values(T.linalg.cross(T.tensor(a), T.tensor(b[:1]))), np.cross(a, b[:1]),
                               rtol=1e-12)
    raises(RuntimeError, r"linalg.cross: inputs dimension -1 must have length 3. Got 2 and 2",
           T.linalg.cross, T.ones(2, 2), T.ones(2, 2))
    raises(RuntimeError, r"linalg.cross: inputs must have the same number of dimensions.", T.cross,
           T.ones(3, 3), T.ones(3), dim=1)


def test_cross_dim_out_of_range(T):
    raises(IndexError, r"Dimension out of range", T.cross, T.ones(3, 3), T.ones(3, 3), dim=2)


def test_cross_gradient(T):
    a = T.tensor([1.0, 2.0, 3.0], dtype=T.float64, requires_grad=True)
    b = T.tensor([4.0, 5.0, 6.0], dtype=T.float64, requires_grad=True)
    T.linalg.cross(a, b).sum().backward()
    same(a.grad, np.cross(np.array([4.0, 5.0, 6.0]), np.ones(3)))
    same(b.grad, np.cross(np.ones(3), np.array([1.0, 2.0, 3.0])))


# ----------------------------------------------------------------------------- diag, diagflat, diag_embed


def test_diag(T):
    a = np.arange(1, 13, dtype=np.float32).reshape(3, 4)
    for k in (-3, -1, 0, 1, 2, 4):
        same(T.diag(T.tensor(a), k), np.diag(a, k))
    v = np.array([1.0, 2.0, 3.0], np.float32)
    for k in (-2, 0, 1):
        same(T.tensor(v).diag(k), np.diag(v, k))
    raises(RuntimeError, r"diag\(\): Supports 1D or 2D tensors. Got 3D", T.diag, T.ones(2, 2, 2))


def test_diagflat(T):
    """test_diagflat: the flattened input on the k-th diagonal of a square matrix."""
    a = np.arange(1, 7, dtype=np.float32).reshape(2, 3)
    for k in (0, 1, -2):
        same(T.diagflat(T.tensor(a), k), np.diagflat(a, k))
    same(T.diagflat(T.tensor(a).t()), np.diagflat(a.T))
    same(T.diagflat(T.tensor(3.0)), [[3]])


def test_diag_embed(T):
    """test_diag_embed: the last dim's vectors become diagonals of new (dim1, dim2) planes."""
    rng = np.random.default_rng(7)
    a = rng.standard_normal((2, 3)).astype(np.float32)
    x = T.tensor(a)
    out = T.diag_embed(x)
    expected = np.zeros((2, 3, 3), np.float32)
    for i in range(2):
        expected[i] = np.diag(a[i])
    same(out, expected)
    out = T.diag_embed(x, offset=1, dim1=0, dim2=2)
    assert tuple(out.shape) == (4, 2, 4)
    for i in range(2):
        same(out[:, i, :], np.diag(a[i], 1))
    out = x.diag_embed(offset=-1, dim1=-1, dim2=0)
    for i in range(2):
        same(out[:, i, :], np.diag(a[i], -1).T)
    raises(RuntimeError, r"diagonal dimensions cannot be identical 1, 1", T.diag_embed, x, 0, 1, 1)
    raises(IndexError, r"Dimension out of range", T.diag_embed, x, 0, 0, 3)


def test_diagonal_views(T):
    a = np.arange(24.0, dtype=np.float32).reshape(2, 3, 4)
    x = T.tensor(a)
    same(x.diagonal(), np.diagonal(a))
    same(x.diagonal(1, 1, 2), np.diagonal(a, 1, 1, 2))
    same(T.diagonal(x, -1, 2, 0), np.diagonal(a, -1, 2, 0))
    d = x.diagonal(0, 1, 2)
    d.fill_(-1)
    expected = a.copy()
    for i in range(3):
        expected[:, i, i] = -1
    same(x, expected)


# ----------------------------------------------------------------------------------------- tril, triu


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool"])
def test_tril_triu(T, dtype):
    """test_tril_triu / test_triu_tril_extreme_k: batched and with any diagonal offset."""
    rng = np.random.default_rng(8)
    a = rng.integers(1, 5, (2, 4, 5)).astype(dtype)
    x = T.tensor(a)
    for k in (-10, -2, -1, 0, 1, 3, 10):
        same(x.tril(k), np.tril(a, k), dtype)
        same(T.triu(x, k), np.triu(a, k), dtype)
        same(x.transpose(1, 2).tril(k), np.tril(a.transpose(0, 2, 1), k))
    y = T.tensor(a)
    y.triu_(1)
    same(y, np.triu(a, 1))
    raises(RuntimeError, r"tril: input tensor must have at least 2 dimensions", T.tril, T.ones(3))
    raises(RuntimeError, r"triu: input tensor must have at least 2 dimensions", T.triu, T.ones(3))
    raises(TypeError, r"tril\(\): argument 'diagonal' \(position 1\) must be int, not float", T.ones(2, 2).tril, 1.5)
    same(T.ones(3, 3).triu_(T.tensor(1)), np.triu(np.ones((3, 3), np.float32), 1))


def test_tril_triu_indices(T):
    for row, col, off in [(3, 3, 0), (4, 3, 1), (3, 5, -1), (0, 3, 0), (1, 1, -2)]:
        same(T.tril_indices(row, col, off), np.stack(np.tril_indices(row, off, col)).astype(np.int64), "int64")
        same(T.triu_indices(row, col, off), np.stack(np.triu_indices(row, off, col)).astype(np.int64), "int64")


def test_tril_gradient(T):
    x = T.ones(3, 3, dtype=T.float64, requires_grad=True)
    x.tril(-1).sum().backward()
    same(x.grad, np.tril(np.ones((3, 3)), -1))


# -------------------------------------------------------------------- narrow, chunk, split, unbind


def test_narrow(T):
    a = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    x = T.tensor(a)
    same(x.narrow(0, 0, 1), a[0:1])
    same(x.narrow(0, 0, 2), a[0:2])
    same(x.narrow(0, 1, 1), a[1:2])
    same(x.narrow(0, -1, 1), a[-1:])
    same(x.narrow(0, -2, 2), a[-2:])
    same(x.narrow(-1, -1, 1), a[:, -1:])
    same(x.narrow(1, T.tensor(1), 2), a[:, 1:3])  # a 0-d integer tensor start
    v = x.narrow(1, 1, 2)
    v.fill_(0)
    same(x, [[1, 0, 0], [4, 0, 0], [7, 0, 0]])
    raises(RuntimeError, r"start \(3\) \+ length \(1\) exceeds dimension size \(3\)", x.narrow, 0, 3, 1)
    raises(IndexError, r"start out of range \(expected to be in range of \[-3, 3\], but got -4\)", x.narrow, 0, -4, 1)
    raises(RuntimeError, r"narrow\(\): length must be non-negative", x.narrow, 0, 0, -1)
    raises(RuntimeError, r"narrow\(\) cannot be applied to a 0-dim tensor", T.tensor(1.0).narrow, 0, 0, 1)


def test_chunk(T):
    """torch.chunk: ceil(n / chunks) per chunk; fewer chunks when they do not divide evenly."""
    a = np.arange(10.0, dtype=np.float32)
    x = T.tensor(a)
    for chunks, sizes in [(3, [4, 4, 2]), (4, [3, 3, 3, 1]), (6, [2, 2, 2, 2, 2]), (10, [1] * 10), (11, [1] * 10)]:
        parts = x.chunk(chunks)
        assert [p.numel() for p in parts] == sizes
        same(T.cat(parts), a)
    b = np.arange(12.0, dtype=np.float32).reshape(3, 4)
    parts = T.chunk(T.tensor(b), 2, dim=1)
    same(parts[0], b[:, :2])
    same(parts[1], b[:, 2:])
    assert len(T.zeros(0).chunk(3)) == 3  # (empty pieces, each of size 0)
    raises(RuntimeError, r"chunk expects `chunks` to be greater than 0, got: 0", x.chunk, 0)


def test_split(T):
    """test_split: by size (the last part shorter) or by a list of sizes (which must add up)."""
    a = np.arange(14.0, dtype=np.float32).reshape(7, 2)
    x = T.tensor(a)
    parts = x.split(3)
    assert [tuple(p.shape) for p in parts] == [(3, 2), (3, 2), (1, 2)]
    same(parts[2], a[6:])
    parts = T.split(x, [1, 4, 2])
    same(parts[1], a[1:5])
    parts = x.split([1, 1], dim=1)
    same(parts[1], a[:, 1:])
    assert len(x.split(7)) == 1 and len(x.split(100)) == 1
    parts = x.split([0, 7])
    assert tuple(parts[0].shape) == (0, 2)
    raises(RuntimeError, r"split_with_sizes expects split_sizes to sum exactly to 7 \(input tensor's size at dimension "
           r"0\), but got split_sizes=\[1, 2\]", x.split, [1, 2])
    raises(RuntimeError, r"split expects split_size be non-negative, but got split_size=-1", x.split, -1)
    raises(RuntimeError, r"split_size can only be 0 if dimension size is 0, but got dimension size of 7", x.split, 0)


def test_sizes_must_be_integers(T):
    """PyTorch's argument parser refuses a float where a size, an offset or a count goes (no truncation)."""
    x = T.ones(2, 3)
    raises(TypeError, r"split_with_sizes\(\): argument 'split_sizes' failed to unpack the object at pos 2 with error "
           r"\"type must be tuple of ints,but got float\"", x.split, [1, 1.5])
    raises(TypeError, r"expand\(\): argument 'size' failed to unpack the object at pos 3 with error \"type must be "
           r"tuple of ints,but got float\"", x.expand, 2, 3, 1.5)
    raises(TypeError, None, x.narrow, 0, 1.5, 1)
    raises(TypeError, None, x.narrow, 0, 0, 1.5)
    raises(TypeError, None, x.chunk, 1.5)
    raises(TypeError, None, x.repeat, 1.5, 1)
    raises(TypeError, None, x.repeat_interleave, 1.5)
    raises(TypeError, r"diag\(\): argument 'diagonal' \(position 2\) must be int, not float", T.diag, x, 1.5)
    raises(TypeError, r"diagflat\(\): argument 'offset' \(position 2\) must be int, not float", T.diagflat, x, 1.5)
    raises(RuntimeError, r"split_with_sizes expects split_sizes have only non-negative entries, but got "
           r"split_sizes=\[1, -1, 2\]", x.split, [1, -1, 2])
    raises(RuntimeError, r"Repeats must be non-negative", x.repeat_interleave, -1)
    raises(IndexError, r"Dimension out of range \(expected to be in range of \[-1, 0\], but got -2\)", T.diag_embed,
           T.tensor(1.0))


def test_roll_with_empty_dims_is_over_the_flattened_tensor(T):
    same(T.tensor([[1, 2], [3, 4]]).roll((1,), ()), [[4, 1], [2, 3]])
    same(T.tensor([[1, 2], [3, 4]]).roll(1, []), [[4, 1], [2, 3]])


def test_split_views_share_memory(T):
    x = T.zeros(6)
    a, b = x.split(3)
    b.fill_(1)
    same(x, [0, 0, 0, 1, 1, 1])


def test_tensor_split(T):
    """test_tensor_split: like numpy.array_split, by a number of sections or by indices."""
    a = np.arange(20.0, dtype=np.float32).reshape(4, 5)
    x = T.tensor(a)
    for sections in (1, 2, 3, 4, 5, 7):
        for dim in (0, 1, -1):
            got = x.tensor_split(sections, dim)
            expected = np.array_split(a, sections, dim)
            assert len(got) == len(expected)
            for g, e in zip(got, expected):
                same(g, e)
    for indices in ([1], [1, 3], [0, 2, 2], [3, 1], [10]):
        got = T.tensor_split(x, indices, dim=1)
        expected = np.split(a, indices, 1)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            same(g, e)
    same(x.tensor_split(T.tensor(2))[1], np.array_split(a, 2)[1])
    same(x.tensor_split(T.tensor([1, 3]))[1], a[1:3])
    raises(RuntimeError, r"number of sections must be larger than 0, got 0", x.tensor_split, 0)
    raises(RuntimeError, r"tensor_split expected at least a 1-dimensional tensor, but got a tensor with 0 dims",
           T.tensor(1.0).tensor_split, 2)
    raises(RuntimeError, r"tensor_split expected tensor_indices_or_sections to have dtype of long, but got Float",
           x.tensor_split, T.tensor(2.0))
    raises(RuntimeError, r"tensor_split expected tensor_indices_or_sections to be a zero-dimensional or "
           r"one-dimensional tensor, but got a tensor with 2 dims", x.tensor_split, T.tensor([[1]]))


def test_hsplit_vsplit_dsplit(T):
    a = np.arange(24.0, dtype=np.float32).reshape(2, 4, 3)
    x = T.tensor(a)
    for g, e in zip(T.hsplit(x, 2), np.hsplit(a, 2)):
        same(g, e)
    for g, e in zip(x.vsplit([1]), np.vsplit(a, [1])):
        same(g, e)
    for g, e in zip(T.dsplit(x, 3), np.dsplit(a, 3)):
        same(g, e)
    raises(RuntimeError, r"torch.hsplit attempted to split along dimension 1, but the size of the dimension 4 is not "
           r"divisible by the split_size 3!", T.hsplit, x, 3)
    raises(RuntimeError, r"torch.dsplit requires a tensor with at least 3 dimension, but got a tensor with 2 "
           r"dimensions!", T.dsplit, T.ones(2, 2), 2)


def test_unbind(T):
    a = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    x = T.tensor(a)
    parts = x.unbind(1)
    assert isinstance(parts, tuple) and len(parts) == 3
    for i, p in enumerate(parts):
        same(p, a[:, i])
    parts = T.unbind(x)
    same(parts[1], a[1])
    raises(IndexError, r"Dimension out of range", x.unbind, 2)
    raises(IndexError, r"Dimension specified as 0 but tensor has no dimensions", T.tensor(1.0).unbind)


def test_split_gradient(T):
    x = T.arange(6.0, dtype=T.float64, requires_grad=True)
    a, b = x.split([2, 4])
    (a.sum() * 2 + (b * b).sum()).backward()
    same(x.grad, [2, 2, 4, 6, 8, 10])


# ------------------------------------------------------------------------ repeat, repeat_interleave


def test_repeat(T):
    """test_repeat: np.tile, with more repeats than dims adding leading dims."""
    a = np.arange(6.0, dtype=np.float32).reshape(2, 3)
    x = T.tensor(a)
    for reps in [(1, 1), (2, 1), (1, 3), (2, 2), (3, 1, 2), (2, 0)]:
        same(x.repeat(*reps), np.tile(a, reps))
    same(x.repeat(T.Size([2, 2])), np.tile(a, (2, 2)))
    same(x.repeat([1, 2]), np.tile(a, (1, 2)))
    same(T.tensor(3).repeat(2, 2), [[3, 3], [3, 3]])
    raises(RuntimeError, r"Number of dimensions of repeat dims can not be smaller than number of dimensions of "
           r"tensor", x.repeat, 2)
    raises(RuntimeError, r"Trying to create tensor with negative dimension -2: \[-2, 3\]", x.repeat, -1, 1)


def test_repeat_interleave(T):
    """test_repeat_interleave: each element (slice along dim) repeated, a number or a count per element."""
    a = np.array([[1, 2], [3, 4]])
    x = T.tensor(a)
    same(x.repeat_interleave(2), np.repeat(a, 2))
    same(T.repeat_interleave(x, 3, dim=1), np.repeat(a, 3, 1))
    same(x.repeat_interleave(T.tensor([1, 2]), dim=0), np.repeat(a, [1, 2], 0))
    same(x.repeat_interleave(T.tensor([0, 3]), dim=1), np.repeat(a, [0, 3], 1))
    same(T.repeat_interleave(T.tensor([2, 0, 1])), [0, 0, 2])  # counts alone: the positions repeated
    same(x.repeat_interleave(T.tensor(2), dim=0), np.repeat(a, 2, 0))
    same(x.repeat_interleave(2, dim=0, output_size=4), np.repeat(a, 2, 0))
    raises(RuntimeError, r"repeats must have the same size as input along dim, but got repeats.size\(0\) = 3 and "
           r"input.size\(0\) = 2", x.repeat_interleave, T.tensor([1, 2, 3]), dim=0)
    raises(RuntimeError, r"repeats can not be negative", x.repeat_interleave, T.tensor([1, -1]), dim=0)
    raises(RuntimeError, r"repeat_interleave only accept 1D vector as repeat", T.repeat_interleave, T.tensor([[1]]))
    raises(NotImplementedError, r"not implemented for 'Float'", T.repeat_interleave, T.tensor([1.0]))
    raises(NotImplementedError, r"not implemented for 'Float'", x.repeat_interleave, T.tensor([1.0, 1.0]), dim=0)


def test_repeat_gradients(T):
    x = T.tensor([1.0, 2.0], dtype=T.float64, requires_grad=True)
    (x.repeat(3) * T.arange(6.0, dtype=T.float64)).sum().backward()
    same(x.grad, [0 + 2 + 4, 1 + 3 + 5])
    y = T.tensor([1.0, 2.0], dtype=T.float64, requires_grad=True)
    (y.repeat_interleave(T.tensor([2, 1])) * T.tensor([1.0, 2.0, 3.0], dtype=T.float64)).sum().backward()
    same(y.grad, [3, 3])


# --------------------------------------------------------------------------------------------- expand


def test_expand(T):
    """test_expand: -1 keeps a size; size-1 dims stretch; new leading dims; views with stride 0."""
    a = np.arange(4.0, dtype=np.float32).reshape(1, 4)
    x = T.tensor(a)
    same(x.expand(3, 4), np.broadcast_to(a, (3, 4)))
    same(x.expand(2, -1, -1), np.broadcast_to(a, (2, 1, 4)))
    same(x.expand(T.Size([5, 4])), np.broadcast_to(a, (5, 4)))
    same(x.expand_as(T.zeros(2, 3, 4)), np.broadcast_to(a, (2, 3, 4)))
    same(T.tensor(2.0).expand(2, 2), [[2, 2], [2, 2]])
    same(T.zeros(0, 1).expand(0, 3), np.zeros((0, 3), np.float32))


def test_expand_is_a_stride_0_view(T):
    x = T.arange(4.0).view(1, 4)
    assert x.expand(3, 4).stride() == (0, 1)


def test_expand_errors(T):
    x = T.ones(2, 3)
    raises(RuntimeError, r"The expanded size of the tensor \(4\) must match the existing size \(3\) at non-singleton "
           r"dimension 1.  Target sizes: \[2, 4\].  Tensor sizes: \[2, 3\]", x.expand, 2, 4)
    raises(RuntimeError, r"the number of sizes provided \(1\) must be greater or equal to the number of dimensions in "
           r"the tensor \(2\)", x.expand, 3)
    raises(RuntimeError, r"The expanded size of the tensor \(-1\) isn't allowed in a leading, non-existing dimension "
           r"0", x.expand, -1, 2, 3)
    raises(RuntimeError, None, T.ones(1).expand, -2)  # (PyTorch: "numel: integer multiplication overflow")


def test_expand_gradient(T):
    x = T.tensor([[1.0], [2.0]], dtype=T.float64, requires_grad=True)
    (x.expand(2, 3) * T.arange(6.0, dtype=T.float64).view(2, 3)).sum().backward()
    same(x.grad, [[3], [12]])
