"""More of PyTorch's test/test_torch.py (TestTorch and TestTorchDeviceType on CPU): ops on empty
tensors (test_dim_function_empty), masked_scatter's special cases, 0-d tensors through the indexing
ops, numbers given as NumPy integers or 0-d tensors, new_* constructors, iteration, allclose, and the
argument errors of t(), mv and outer.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`),
against literal or NumPy-computed expectations.
"""

import numpy as np
import pytest

from tests.ported import dtype_name, raises, same, values


def shape_of(t):
    return tuple(t.shape)


# --------------------------------------------------------------------------------- empty tensors


def test_dim_function_empty(T):
    """test_dim_function_empty: shape ops keep zero-size dims where PyTorch does."""
    x = T.zeros(0, 3)
    empty_long = T.tensor([], dtype=T.int64)
    assert shape_of(x.index_select(0, empty_long)) == (0, 3)
    assert shape_of(T.zeros(2, 0).index_select(1, empty_long)) == (2, 0)
    assert shape_of(x.narrow(0, 0, 0)) == (0, 3)
    assert [shape_of(p) for p in x.split(1, 1)] == [(0, 1)] * 3
    assert [shape_of(p) for p in x.chunk(2, 1)] == [(0, 2), (0, 1)]
    assert shape_of(x.flip(0)) == (0, 3) and shape_of(x.roll(1, 1)) == (0, 3)
    assert shape_of(x.repeat(2, 2)) == (0, 6)
    assert shape_of(T.zeros(0).diag()) == (0, 0) and shape_of(x.diag()) == (0,)
    assert shape_of(x.tril()) == (0, 3) and shape_of(x.nonzero()) == (0, 2)
    assert shape_of(x.masked_select(T.zeros(0, 3, dtype=T.bool))) == (0,)
    assert shape_of(x.masked_fill(T.zeros(0, 3, dtype=T.bool), 1.0)) == (0, 3)
    assert shape_of(x.gather(1, T.zeros(0, 2, dtype=T.int64))) == (0, 2)
    assert shape_of(x.scatter(1, T.zeros(0, 2, dtype=T.int64), T.zeros(0, 2))) == (0, 3)
    assert shape_of(x.index_add(0, empty_long, T.zeros(0, 3))) == (0, 3)
    assert shape_of(x.index_fill(1, T.tensor([0]), 1.0)) == (0, 3)
    assert shape_of(x.index_copy(0, empty_long, T.zeros(0, 3))) == (0, 3)
    assert shape_of(x.take(empty_long)) == (0,)
    assert shape_of(x.expand(2, 0, 3)) == (2, 0, 3)
    assert x.unbind(0) == ()
    assert shape_of(x.clamp(0, 1)) == (0, 3)
    assert shape_of(x.diff(dim=0)) == (0, 3) and shape_of(x.diff(dim=1)) == (0, 2)
    assert shape_of(x.rot90()) == (3, 0)
    assert [shape_of(p) for p in x.tensor_split(2)] == [(0, 3), (0, 3)]
    assert shape_of(x.repeat_interleave(2, dim=0)) == (0, 3)
    assert shape_of(x.unfold(1, 2, 1)) == (0, 2, 2)
    assert shape_of(T.where(T.zeros(0, dtype=T.bool), 1.0, 0.0)) == (0,)
    assert shape_of(T.zeros(0, 3, 4).diag_embed()) == (0, 3, 4, 4)
    assert shape_of(T.zeros(2, 3, 0).diagonal()) == (0, 2)
    assert shape_of(T.cross(T.zeros(0, 3), T.zeros(0, 3), dim=1)) == (0, 3)


def test_empty_index_gradients(T):
    """test_gather_backward_with_empty_index_tensor: an empty index gives a zero gradient."""
    x = T.ones(2, 2, requires_grad=True)
    T.gather(x, 1, T.zeros(2, 0, dtype=T.int64)).sum().backward()
    same(x.grad, np.zeros((2, 2), np.float32))
    y = T.ones(3, requires_grad=True)
    y.index_select(0, T.tensor([], dtype=T.int64)).sum().backward()
    same(y.grad, np.zeros(3, np.float32))


# ------------------------------------------------------------------------------------ masked_scatter


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int16", "int64", "float16", "float32", "float64", "complex64"])
def test_masked_scatter_against_a_loop(T, dtype):
    """test_masked_scatter: the loop it replaces; a too-short source fails; empty destinations work."""
    dest = T.tensor(np.arange(1, 11).astype(dtype))
    expected = values(dest).copy()
    src = np.zeros(10).astype(dtype)
    mask = np.array([0, 0, 0, 0, 1, 0, 1, 0, 1, 0], bool)
    expected[mask] = src[:3]
    dest.masked_scatter_(T.tensor(mask), T.tensor(src))
    same(dest, expected, dtype)
    raises(RuntimeError, None, dest.masked_scatter_, T.tensor(mask), T.zeros(2, dtype=getattr(T, dtype)))
    empty = T.empty((5, 0, 5), dtype=getattr(T, dtype))
    empty.masked_scatter_(T.ones_like(empty, dtype=T.bool), T.empty(0, dtype=getattr(T, dtype)))
    empty.masked_scatter_(T.ones(5, 1, 5, dtype=T.bool), T.empty(0, dtype=getattr(T, dtype)))
    assert shape_of(empty) == (5, 0, 5)


def test_masked_scatter_bool_tensor(T):
    dst = T.tensor([False, False, False])
    dst.masked_scatter_(T.tensor([False, True, False]), T.tensor([True, True, True]))
    same(dst, [False, True, False])
    dst = dst.masked_scatter(T.tensor([True, False, True]), T.tensor([True, True, True]))
    same(dst, [True, True, True])


def test_masked_scatter_inplace_noncontiguous(T):
    """The result does not depend on whether the target and the mask are contiguous."""
    mask = T.tensor([[False, True], [False, True], [False, False], [True, True], [True, True]])
    source = T.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 9, 9]])
    expected = T.zeros(2, 5, dtype=T.int64).masked_scatter_(mask.t().contiguous(), source)
    same(expected, [[0, 0, 0, 1, 2], [3, 4, 0, 5, 6]])  # source's elements in order, row-major
    for target in (T.zeros(5, 2, dtype=T.int64).t(), T.zeros(2, 5, dtype=T.int64)):
        for m in (mask.t(), mask.t().contiguous()):
            same(target.clone().masked_scatter_(m, source), values(expected))
    t = T.zeros(5, 2, dtype=T.int64)
    t.t().masked_scatter_(mask.t(), source)  # writes through the transposed view
    same(t, values(expected).T)


# ------------------------------------------------------------------------------------ 0-d operands


def test_scalar_tensors_through_indexing_ops(T):
    """test_index_copy_scalars / test_scatter_gather of 0-d tensors: one element, index 0."""
    x = T.tensor(5.0)
    same(x.index_fill(0, T.tensor([0]), 1.0), np.float32(1))
    same(x.index_add(0, T.tensor([0]), T.tensor(2.0)), np.float32(7))
    same(x.index_select(0, T.tensor([0])), np.float32(5))
    same(x.gather(0, T.tensor(0)), np.float32(5))
    same(x.scatter(0, T.tensor(0), T.tensor(7.0)), np.float32(7))
    same(x.take(T.tensor(0)), np.float32(5))
    same(T.tensor(3).flip(0), np.int64(3))
    same(T.tensor(2.0).clamp(0, 1), np.float32(1))
    same(T.tensor(2.0).masked_fill(T.tensor(True), 0.0), np.float32(0))
    same(T.tensor([1.0, 2.0]).masked_fill(T.tensor(True), 3.0), [3, 3])


def test_index_fill_negative_dim_and_index(T):
    same(T.tensor([[1.0, 2.0], [3.0, 4.0]]).index_fill(-1, T.tensor([-1]), 0.0), [[1, 0], [3, 0]])
    raises(IndexError, r"index_fill_\(\): Expected dtype int64 for index", T.tensor([1.0, 2.0]).index_fill, 0,
           T.tensor([0], dtype=T.int32), 0.0)


def test_masked_fill_with_tensor_values(T):
    """test_masked_fill: a 0-d tensor value is cast to self's dtype and carries its gradient."""
    same(T.tensor([1, 2]).masked_fill(T.tensor([True, False]), T.tensor(5.5)), [5, 2], "int64")
    same(T.tensor([1.0, 2.0]).masked_fill(T.tensor([True, False]), T.tensor(5)), [5, 2], "float32")
    x = T.tensor([1.0, 2.0], requires_grad=True)
    v = T.tensor(5.0, requires_grad=True)
    y = x.masked_fill(T.tensor([True, False]), v)
    (y * T.tensor([3.0, 4.0])).sum().backward()
    same(x.grad, [0, 4])
    same(v.grad, np.float32(3))


# --------------------------------------------------------------------- numbers as NumPy ints or tensors


def test_numpy_integers_and_0d_tensors_as_sizes(T):
    """test_parsing_intlist / test_parsing_int64: sizes and dims may be NumPy integers or 0-d tensors."""
    assert shape_of(T.ones(np.int64(2), 3)) == (2, 3)
    assert shape_of(T.ones(2, 3).view(np.int64(3), 2)) == (3, 2)
    assert shape_of(T.ones(2, 3).view(T.tensor(3), 2)) == (3, 2)
    assert shape_of(T.ones(2, 3).expand(T.tensor(2), 3)) == (2, 3)
    same(T.ones(2, 3)[np.int64(1)], np.ones(3, np.float32))
    assert [shape_of(p) for p in T.ones(4).split(T.tensor(2))] == [(2,), (2,)]
    assert [shape_of(p) for p in T.ones(4).chunk(T.tensor(2))] == [(2,), (2,)]
    same(T.ones(3, 3).narrow(0, T.tensor(1), 1), np.ones((1, 3), np.float32))
    raises(RuntimeError, r"start must be an 0-dim integral Tensor", T.ones(3, 3).narrow, 0, T.tensor(1.0), 1)
    same(T.ones(4).tensor_split(T.tensor([1, 2]))[1], [1])


def test_repeat_interleave_output_size(T):
    same(T.tensor([1, 2]).repeat_interleave(2, output_size=4), [1, 1, 2, 2])
    same(T.tensor([1, 2]).repeat_interleave(T.tensor([1, 2]), output_size=3), [1, 2, 2])
    raises(RuntimeError, r"repeat_interleave: Invalid output_size, expected 4 but got 3",
           T.tensor([1, 2]).repeat_interleave, 2, output_size=3)


# ------------------------------------------------------------------------------------- constructors


def test_new_methods(T):
    """test_new / test_new_methods_requires_grad: new_* take self's dtype unless told otherwise."""
    x = T.tensor([1.0, 2.0, 3.0])
    assert dtype_name(x.new_tensor([1, 2])) == "float32"
    assert dtype_name(x.new_empty((2,))) == "float32"
    same(x.new_full((2,), 3.5), [3.5, 3.5], "float32")
    same(x.new_ones((2, 1), dtype=T.int16), [[1], [1]], "int16")
    same(x.new_zeros(2), [0, 0], "float32")
    assert x.new_zeros(2, requires_grad=True).requires_grad
    assert x.new_tensor([1.0], requires_grad=True).requires_grad
    assert x.new_ones((2,), dtype=T.float64, requires_grad=True).requires_grad
    assert shape_of(x.new_empty(0)) == (0,)
    i = T.ones(2, dtype=T.int32)
    same(i.new_tensor([1.5]), [1], "int32")  # (self's dtype, the data cast to it)
    assert dtype_name(i.new_full((1,), 7)) == "int32"


# ------------------------------------------------------------------------------- iteration, allclose


def test_iteration(T):
    """test_iter: a tensor iterates over its first dim; a 0-d tensor cannot be iterated."""
    rows = list(T.arange(6).view(2, 3))
    assert len(rows) == 2
    same(rows[1], [3, 4, 5])
    assert len(T.zeros(4, 2)) == 4
    assert [v.item() for v in T.tensor([1.0, 2.0])] == [1.0, 2.0]
    raises(TypeError, r"len\(\) of a 0-d tensor", len, T.tensor(1.0))


def test_iteration_over_0d_tensor_message(T):
    raises(TypeError, r"iteration over a 0-d tensor", list, T.tensor(1.0))


def test_allclose(T):
    x = T.tensor([1.0, 2.0, 3.0])
    y = T.tensor([1.01, 2.01, 3.01])
    assert T.allclose(x, y, rtol=0, atol=0.02)
    assert T.allclose(x, y, rtol=0.01, atol=0.0)
    assert not T.allclose(x, y)
    assert T.allclose(T.tensor([0.0]), T.tensor([1e-8]))
    x = T.tensor([2.0, 3.0, float("nan")])
    y = T.tensor([2.01, 3.01, float("nan")])
    assert not T.allclose(x, y, rtol=1e-2)
    assert T.allclose(x, y, rtol=1e-2, equal_nan=True)
    assert not T.allclose(x, y, rtol=1e-3, equal_nan=True)
    inf = T.tensor([float("inf")])
    assert T.allclose(inf, inf) and T.allclose(-inf, -inf)
    assert not T.allclose(inf, -inf)
    assert not T.allclose(inf, T.tensor([1e20]))
    assert not T.allclose(-inf, T.tensor([-1e20]))


# ------------------------------------------------------------------------------------ argument errors


def test_linear_algebra_scalar_raises(T):
    m = T.randn(5, 5)
    v = T.randn(5)
    s = T.tensor(7.0)
    raises(RuntimeError, r"vector \+ matrix @ vector expected", T.mv, m, s)
    raises(RuntimeError, None, T.addmv, v, m, s)
    raises(RuntimeError, r"outer: Expected 1-D argument vec2, but got 0-D", T.outer, v, s)
    raises(RuntimeError, r"outer: Expected 1-D argument self, but got 0-D", T.outer, s, v)


def test_t_not_2d_error(T):
    raises(RuntimeError, r"t\(\) expects a tensor with <= 2 dimensions, but self is 3D", T.ones(2, 3, 4).t)
    raises(RuntimeError, r"t_?\(\) expects a tensor with <= 2 dimensions, but self is 3D", T.ones(2, 3, 4).t_)
    same(T.tensor([1, 2]).t(), [1, 2])
    same(T.tensor(3).t(), np.int64(3))


def test_fliplr_flipud_errors(T):
    raises(RuntimeError, r"Input must be >= 2-d", T.fliplr, T.tensor([1, 2, 3]))
    raises(RuntimeError, r"Input must be >= 1-d", T.flipud, T.tensor(1))


# --------------------------------------------------------------------------------------- torch.Size


def test_shape_is_a_size(T):
    x = T.ones(2, 3)
    assert isinstance(x.shape, T.Size)
    assert x.shape.numel() == 6
    assert x.shape[1:].numel() == 3 and isinstance(x.shape[1:], T.Size)
    assert x.shape == (2, 3) and x.shape == x.size() and x.shape + (4,) == (2, 3, 4)


# ------------------------------------------------------------------------------ Python number protocol


def test_python_number_protocol(T):
    """test_is_signed / test_contains / __index__ / __reversed__: a tensor as a Python number or container."""
    assert T.tensor([1]).is_signed() and T.tensor([1.0]).is_signed()
    assert not T.tensor([1], dtype=T.uint8).is_signed() and not T.tensor([True]).is_signed()
    assert 2 in T.tensor([1, 2, 3]) and 5 not in T.tensor([1, 2, 3]) and T.tensor(2) in T.tensor([1, 2, 3])
    assert [10, 20, 30][T.tensor(1)] == 20 and list(range(T.tensor(3))) == [0, 1, 2]
    raises(TypeError, r"only integer tensors of (a single|one) element can", [1, 2].__getitem__, T.tensor(1.0))
    assert [v.item() for v in reversed(T.tensor([1, 2, 3]))] == [3, 2, 1]
    assert float(T.tensor([True])) == 1.0 and complex(T.tensor(1.5)) == 1.5 + 0j
    assert abs(T.tensor([-1])).tolist() == [1]
    assert int(T.tensor(-2.7)) == -2 and T.tensor(7) // 2 == 3


def test_complex_and_contains_of_tensors(T):
    assert complex(T.tensor(1 + 2j)) == 1 + 2j
    assert T.tensor([1, 2]) in T.tensor([[1, 2], [3, 4]])
