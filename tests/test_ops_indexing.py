"""Gathering and scattering along a dim: gradients against finite differences (float64,
hypothesis-drawn shapes), and values, gradients, dtypes and errors against PyTorch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from tests.ops_reference import compare, raises_like
from tests.test_ops import _run, arrays, leaf

SMALL = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)


@st.composite
def along_dim(draw, with_source=False, unique=False):
    """x, a dim and an index no larger than x outside dim (and a source shaped like the index)."""
    shape = draw(SMALL)
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    axis = dim % len(shape)
    index_shape = tuple(draw(st.integers(1, n if d != axis else (n if unique else 4))) for d, n in enumerate(shape))
    if unique:  # distinct positions along dim: scatter's writes do not overwrite each other
        rng = np.random.default_rng(draw(st.integers(0, 2**16)))
        full = tuple(shape[axis] if d == axis else n for d, n in enumerate(index_shape))
        index = np.argsort(rng.random(full), axis=axis)
        index = np.take(index, np.arange(index_shape[axis]), axis=axis)
    else:
        index = draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, shape[axis] - 1)))
    tensors = [leaf(draw(arrays(shape)))]
    if with_source:
        tensors.append(leaf(draw(arrays(index_shape))))
    return tensors, (dim, index)


@st.composite
def broadcast_index(draw):
    """x, a dim and an index that broadcasts against x outside dim (take_along_dim's rule)."""
    shape = draw(SMALL)
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    axis = dim % len(shape)
    index_shape = tuple(draw(st.integers(1, 4)) if d == axis else draw(st.sampled_from([1, n]))
                        for d, n in enumerate(shape))
    index = draw(hnp.arrays(np.int64, index_shape, elements=st.integers(0, shape[axis] - 1)))
    return [leaf(draw(arrays(shape)))], (dim, index)


@st.composite
def selecting(draw, with_source=False):
    shape = draw(SMALL)
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    index = np.array(draw(st.lists(st.integers(0, shape[dim] - 1), min_size=1, max_size=4)))
    tensors = [leaf(draw(arrays(shape)))]
    if with_source:
        tensors.append(leaf(draw(arrays(tuple(len(index) if d == dim % len(shape) else n
                                              for d, n in enumerate(shape))))))
    return tensors, (dim, index)


@st.composite
def masked(draw):
    shape = draw(SMALL)
    mask = draw(hnp.arrays(bool, shape[draw(st.integers(0, len(shape))):]))  # a mask that broadcasts
    return [leaf(draw(arrays(shape)))], mask


@st.composite
def scatter_reduce_case(draw):
    """along_dim's case with a reduction; values kept apart so amax/amin have no ties to sample."""
    tensors, (dim, index) = draw(along_dim(with_source=True))
    x, src = tensors
    separated = np.random.default_rng(draw(st.integers(0, 2**16))).permutation(x.numel() + src.numel()) * 0.1 + 0.5
    x, src = leaf(separated[:x.numel()].reshape(x.shape)), leaf(separated[x.numel():].reshape(src.shape) / 2)
    return [x, src], (dim, index, draw(st.sampled_from(["sum", "prod", "mean", "amax", "amin"])), draw(st.booleans()))


CASES = {
    "Gather": (along_dim(), lambda x, arg: x.gather(arg[0], arg[1]) * x.gather(arg[0], arg[1])),
    "ScatterAdd": (along_dim(with_source=True), lambda x, src, arg: autograd.scatter_add(x * x, arg[0], arg[1], src)),
    "Scatter": (along_dim(with_source=True, unique=True), lambda x, src, arg: x.scatter(arg[0], arg[1], src * src)),
    "ScatterReduce": (scatter_reduce_case(), lambda x, src, arg: x.scatter_reduce(
        arg[0], arg[1], src * 2, arg[2], include_self=arg[3])),
    "IndexSelect": (selecting(), lambda x, arg: x.index_select(arg[0], autograd.tensor(arg[1])).exp()),
    "IndexAddAlong": (selecting(with_source=True),
                      lambda x, src, arg: x.index_add(arg[0], autograd.tensor(arg[1]), src.sin(), alpha=2.5)),
}

COMPOSITES = {
    "masked_fill": (masked(), lambda x, mask: x.masked_fill(autograd.tensor(mask), 0.5) * x),
    "masked_select": (masked(), lambda x, mask: x.masked_select(autograd.tensor(mask)).exp()),
    "masked_scatter": (masked(), lambda x, mask: (x * 2).masked_scatter(autograd.tensor(mask), x.exp())),
    "take_along_dim": (broadcast_index(), lambda x, arg: autograd.take_along_dim(x, autograd.tensor(arg[1]), arg[0])),
    "index_copy": (selecting(with_source=True), lambda x, src, arg: x.index_copy(
        arg[0], autograd.tensor(np.unique(arg[1])), src.narrow(arg[0], 0, len(np.unique(arg[1]))) * 3)),
}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(COMPOSITES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run({**CASES, **COMPOSITES}[name], data)
    assert autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("name", ["Gather", "ScatterAdd", "IndexSelect", "IndexAddAlong"])
@given(data=st.data())
def test_second_derivatives_match_finite_differences(name, data):
    tensors, fn, *_ = _run(CASES[name], data)
    assert autograd.gradgradcheck(fn, tensors)


rng = np.random.default_rng(0)
X = rng.standard_normal((3, 4))
INDEX = np.array([[0, 3], [2, 2], [1, 0]])
UNIQUE = np.array([[0, 3], [2, 1], [1, 0]])
MASK = X > 0.2
LONG = np.array([2, 0, 2])

# name: (fn(module, *tensors), inputs) -- run on both libraries and compared
TORCH_CASES = {
    "gather": (lambda m, x, i: m.gather(x, 1, i), X, INDEX),
    "gather_dim0_method": (lambda m, x, i: x.gather(0, i), X, INDEX[:2] % 3),
    "gather_negative_dim": (lambda m, x, i: x.gather(-1, i), X, INDEX),
    "scatter_src": (lambda m, x, i, s: x.scatter(1, i, s), X, UNIQUE, X[:, :2] * 3),
    "scatter_value": (lambda m, x, i: x.scatter(1, i, 2.5), X, UNIQUE),
    "scatter_reduce_add": (lambda m, x, i, s: x.detach().scatter(1, i, s.detach(), reduce="add"), X, INDEX, X[:, :2]),
    "scatter_add": (lambda m, x, i, s: m.scatter_add(x, 1, i, s), X, INDEX, X[:, :2] * 3),
    # PyTorch cannot differentiate src here (its gradient would have the index's shape); we can
    "scatter_add_larger_src": (lambda m, x, i, s: x.scatter_add(0, i, s.detach()), X, INDEX[:2] % 3, X * 2),
    "index_select": (lambda m, x, i: m.index_select(x, 1, i), X, LONG),
    "index_select_dim0": (lambda m, x, i: x.index_select(0, i), X, LONG),
    "index_add": (lambda m, x, i, s: x.index_add(0, i, s, alpha=2), X, LONG, X[::-1] * 1.0),
    "masked_fill": (lambda m, x, k: x.masked_fill(k, -1.5), X, MASK),
    "masked_fill_broadcast": (lambda m, x, k: m.masked_fill(x, k[0], float("-inf")).softmax(-1), X, MASK),
    "masked_fill_tensor_value": (lambda m, x, k, v: x.masked_fill(k, v), X, MASK, np.array(2.0)),
    "masked_select": (lambda m, x, k: m.masked_select(x, k), X, MASK),
    "masked_select_broadcast": (lambda m, x, k: x.masked_select(k[1]), X, MASK),
    "masked_scatter": (lambda m, x, k, s: x.masked_scatter(k, s), X, MASK, X * 10),
    "take_along_dim": (lambda m, x, i: m.take_along_dim(x, i, 1), X, INDEX),
    "take_along_dim_flat": (lambda m, x, i: m.take_along_dim(x, i), X, LONG),
    "take_along_dim_broadcast": (lambda m, x, i: m.take_along_dim(x, i[:1], dim=1), X, INDEX),
    "take_along_dim_argsort": (lambda m, x: m.take_along_dim(x, x.argsort(1), 1), X),
    "nonzero": (lambda m, k: m.nonzero(k), MASK),
    "nonzero_tuple": (lambda m, k: m.nonzero(k, as_tuple=True), MASK),
    "argwhere": (lambda m, k: m.argwhere(k), MASK),
    "where_condition_only": (lambda m, k: m.where(k), MASK),
    "where_keywords": (lambda m, k, x: m.where(k, input=x, other=-x), MASK, X),
    "take": (lambda m, x, i: m.take(x, i), X, np.array([[0, 5], [11, -1]])),
    "take_method": (lambda m, x, i: x.take(i), X, np.array([3, 3, 1])),
    **{f"scatter_reduce_{reduce}_{include}": (
        lambda m, x, i, s, reduce=reduce, include=include: x.scatter_reduce(1, i, s, reduce, include_self=include),
        X, INDEX, X[:, :2] * 2) for reduce in ("sum", "prod", "mean", "amax", "amin") for include in (True, False)},
    **{f"scatter_reduce_{reduce}_ties": (lambda m, x, i, s, reduce=reduce: m.scatter_reduce(x, 1, i, s, reduce),
                                         np.array([[1.0, 2, 2, 0]]), np.array([[1, 2, 0]]), np.array([[2.0, 2, 1]]))
       for reduce in ("amax", "amin")},
    **{f"scatter_reduce_{reduce}_ints": (
        lambda m, x, i, s, reduce=reduce: m.scatter_reduce(x, 1, i, s, reduce, include_self=False),
        (X * 4).astype(np.int64), INDEX, (X[:, :2] * 3).astype(np.int64))
       for reduce in ("sum", "prod", "mean", "amax")},
    "index_fill": (lambda m, x: x.index_fill(1, m.tensor([0, 3]), -1.0), X),
    "index_copy": (lambda m, x, s: m.index_copy(x, 1, m.tensor([3, 0]), s), X, X[:, :2] * 7),
    "index_put": (lambda m, x, v: x.index_put((m.tensor([0, 1]), m.tensor([2, 3])), v), X, X[0, :1]),
    "index_put_accumulate": (lambda m, x, v: x.index_put((m.tensor([0, 0]), m.tensor([2, 2])), v, accumulate=True),
                             X, X[0, :2]),
    "index_put_rows": (lambda m, x: x.index_put((m.tensor([1]),), m.tensor(3.0, dtype=m.float64)), X),
    "index_put_mask": (lambda m, x: x.index_put((x > 0,), m.tensor(0.0, dtype=m.float64)), X),
    # in-place forms, on tensors outside the graph
    "scatter_inplace": (lambda m, x, i, s: x.detach().clone().scatter_(1, i, s.detach()), X, UNIQUE, X[:, :2]),
    "index_add_inplace": (lambda m, x, i, s: x.detach().clone().index_add_(0, i, s.detach()), X, LONG, X),
    "masked_fill_inplace": (lambda m, x, k: x.detach().clone().masked_fill_(k, 0.0), X, MASK),
}


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter")  # PyTorch deprecates scatter(reduce=)
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name):
    fn, *inputs = TORCH_CASES[name]
    compare(fn, *inputs)


ERRORS = {
    "gather_index_too_large": (lambda m, x: x.gather(1, m.tensor([[5]])), "index 5 is out of bounds for dimension 1 "
                               "with size 4"),
    "gather_negative_index": (lambda m, x: x.gather(1, m.tensor([[-1]])), "index -1 is out of bounds"),
    "gather_dim_out_of_range": (lambda m, x: x.gather(3, m.tensor([[0]])),
                                r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 3\)"),
    "gather_index_larger": (lambda m, x: x.gather(1, m.zeros(4, 1, dtype=m.int64)), "no larger than"),
    "gather_index_ndim": (lambda m, x: x.gather(1, m.zeros(3, 1, 1, dtype=m.int64)), "same number of dimensions"),
    "scatter_index_too_large": (lambda m, x: x.scatter(1, m.tensor([[4]]), 1.0), "index 4 is out of bounds"),
    "masked_fill_float_mask": (lambda m, x: x.masked_fill(m.ones(3, 4), 1.0), "boolean masks"),
    "masked_fill_vector_value": (lambda m, x: x.masked_fill(x > 0, m.ones(2)), "0-dimensional value"),
    "index_select_dim": (lambda m, x: x.index_select(2, m.tensor([0])), "Dimension out of range"),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_match_torch(name):
    fn, message = ERRORS[name]
    error = raises_like(fn, X)
    assert error.args and __import__("re").search(message, str(error)), str(error)


def test_index_select_out_of_range_names_the_index():
    with pytest.raises(RuntimeError, match="index 5 is out of bounds for dimension 1 with size 4"):
        autograd.tensor(X).index_select(1, autograd.tensor([5]))


def test_indices_and_masks_have_no_gradient_and_int64_dtype():
    x = autograd.tensor(X, requires_grad=True)
    assert autograd.nonzero(x > 0).dtype == np.int64 and not autograd.nonzero(x > 0).requires_grad
    assert all(i.dtype == np.int64 for i in autograd.where(x > 0))


def test_out_argument_writes_into_the_given_tensor_and_refuses_grad():
    x = autograd.tensor(X)
    out = autograd.zeros(1, dtype=autograd.float64)  # (gather, as PyTorch's, writes into no other dtype)
    result = autograd.gather(x, 1, autograd.tensor(INDEX), out=out)
    assert result is out and out.shape == (3, 2)
    np.testing.assert_array_equal(out.numpy(), np.take_along_axis(X, INDEX, 1))
    with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
        autograd.gather(autograd.tensor(X, requires_grad=True), 1, autograd.tensor(INDEX),
                        out=autograd.zeros(3, 2, dtype=autograd.float64))


def test_a_number_the_dtype_cannot_hold_is_refused_not_wrapped():
    """where and scatter with a Python int past an integer tensor's range raise, as PyTorch's; -1 into uint8
    wraps to 255 there too, and a float past float32's range is refused."""
    u = autograd.tensor([1, 2], dtype=autograd.uint8)
    mask = autograd.tensor([True, False])
    for call in (lambda: autograd.where(mask, u, 300), lambda: autograd.where(mask, 300, u),
                 lambda: u.scatter(0, autograd.tensor([0]), 300),
                 lambda: autograd.ones(2).scatter(0, autograd.tensor([0]), 1e300)):
        with pytest.raises(RuntimeError, match="without overflow"):
            call()
    assert autograd.where(mask, u, -1).tolist() == [1, 255]
    assert u.scatter(0, autograd.tensor([0]), -1).tolist() == [255, 2]
    assert autograd.where(mask, u, 2.5).tolist() == [1.0, 2.5]
