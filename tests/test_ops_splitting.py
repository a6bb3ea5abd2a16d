"""Splitting, repeating, reordering, triangles and diagonals: gradients against finite
differences (float64, drawn shapes), and values, gradients, dtypes and errors against PyTorch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from tests.ops_reference import compare, raises_like
from tests.test_ops import _run, arrays, leaf, unary, with_dim


@st.composite
def with_dims(draw, min_dims=1):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=3))
    dims = draw(st.lists(st.integers(-len(shape), len(shape) - 1), unique_by=lambda d: d % len(shape), max_size=3))
    shifts = draw(st.lists(st.integers(-4, 4), min_size=len(dims), max_size=len(dims)))
    return [leaf(draw(arrays(shape)))], (tuple(dims), tuple(shifts))


@st.composite
def matrices(draw, min_dims=2):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=1, max_side=4))
    return [leaf(draw(arrays(shape)))], draw(st.integers(-3, 3))


CASES = {
    "Flip": (with_dims(), lambda x, arg: x.flip(arg[0]) * x),  # (dims as one tuple: () flips nothing)
    "Roll": (with_dims(), lambda x, arg: x.roll(arg[1], arg[0]) * x if arg[0] else x.roll(2)),
    "Diagonal": (matrices(), lambda x, k: x.diagonal(k, -1, 0) * x.diagonal(k, -1, 0).exp()),
}

COMPOSITES = {
    "split": (with_dim(), lambda x, dim: x.split(2, dim)[-1].exp()),
    "split_sizes": (with_dim(), lambda x, dim: autograd.cat(x.split([x.shape[dim] - 1, 1], dim)[::-1], dim)),
    "chunk": (with_dim(), lambda x, dim: x.chunk(2, dim)[0] * 2),
    "tensor_split": (with_dim(), lambda x, dim: x.tensor_split(2, dim)[-1].sin()),
    "unbind": (with_dim(), lambda x, dim: sum(t * (i + 1) for i, t in enumerate(x.unbind(dim)))),
    "narrow": (with_dim(), lambda x, dim: x.narrow(dim, x.shape[dim] - 1, 1).exp()),
    "repeat": (unary(), lambda x: x.repeat(2, *([1] * x.ndim)).cos()),
    "tile": (unary(), lambda x: x.tile((2,)) * x.tile((2,))),
    "repeat_interleave": (with_dim(), lambda x, dim: x.repeat_interleave(2, dim).exp()),
    "repeat_interleave_counts": (with_dim(), lambda x, dim: x.repeat_interleave(
        autograd.tensor(np.arange(x.shape[dim]) % 3), dim)),
    "movedim": (with_dim(), lambda x, dim: x.movedim(dim, 0) * x.movedim(dim, 0)),
    "rot90": (matrices(), lambda x, k: x.rot90(k, (0, 1)) * 1.5),
    "tril": (matrices(), lambda x, k: x.tril(k) * x),
    "triu": (matrices(), lambda x, k: autograd.triu(x, k).exp()),
    "diagonal": (matrices(), lambda x, k: x.diagonal(k, 0, -1).exp()),
    "diag_embed": (matrices(min_dims=1), lambda x, k: x.diag_embed(k) * 2),
    "diag": (matrices(min_dims=1), lambda x, k: x.reshape(-1).diag(k).diag(k)),
    "trace": (matrices(), lambda x, k: x.reshape(x.shape[0], -1).trace()),
    "unfold": (with_dim(), lambda x, dim: x.unfold(dim, min(2, x.shape[dim]), 1).exp()),
}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(COMPOSITES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run({**CASES, **COMPOSITES}[name], data)
    assert autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_second_derivatives_match_finite_differences(name, data):
    tensors, fn, *_ = _run(CASES[name], data)
    assert autograd.gradgradcheck(fn, tensors)


rng = np.random.default_rng(0)
X = rng.standard_normal((2, 3, 4))
M = rng.standard_normal((4, 5))
V = rng.standard_normal(4)

TORCH_CASES = {
    "split": (lambda m, x: x.split(2, 2), X),
    "split_sizes": (lambda m, x: m.split(x, [1, 2], dim=1), X),
    "split_larger": (lambda m, x: x.split(5, -1), X),
    "chunk": (lambda m, x: x.chunk(3, -1), X),
    "chunk_fewer": (lambda m, x: m.chunk(x, 3, 2), X[..., :2]),
    "chunk_uneven": (lambda m, x: x.chunk(2, 1), X),
    "tensor_split": (lambda m, x: x.tensor_split(3, 2), X),
    "tensor_split_indices": (lambda m, x: m.tensor_split(x, [1, 3], dim=2), X),
    "unbind": (lambda m, x: x.unbind(1), X),
    "narrow": (lambda m, x: x.narrow(2, 1, 2), X),
    "narrow_negative_start": (lambda m, x: m.narrow(x, -1, -2, 2), X),
    "select": (lambda m, x: x.select(1, -1), X),
    "repeat": (lambda m, x: x.repeat(2, 1, 3), X),
    "repeat_more_dims": (lambda m, x: x.repeat(2, 2, 1, 3), X),
    "tile": (lambda m, x: x.tile((2,)), X),
    "tile_function": (lambda m, x: m.tile(x, (2, 1, 1, 2)), X),
    "repeat_interleave": (lambda m, x: x.repeat_interleave(2), X),
    "repeat_interleave_dim": (lambda m, x: m.repeat_interleave(x, 2, dim=1), X),
    "repeat_interleave_counts": (lambda m, x, r: x.repeat_interleave(r, dim=2), X, np.array([1, 0, 2, 1])),
    "repeat_interleave_indices": (lambda m, r: m.repeat_interleave(r), np.array([1, 0, 2, 1])),
    "flip": (lambda m, x: x.flip(0, 2), X),
    "flip_tuple": (lambda m, x: m.flip(x, (1,)), X),
    "fliplr": (lambda m, x: x.fliplr(), X),
    "flipud": (lambda m, x: m.flipud(x), X),
    "roll_flat": (lambda m, x: x.roll(1), X),
    "roll_dims": (lambda m, x: m.roll(x, (1, -1), (0, 2)), X),
    "roll_one_dim": (lambda m, x: x.roll(5, 2), X),
    "rot90": (lambda m, x: x.rot90(), X),
    "rot90_k": (lambda m, x: m.rot90(x, 2, (1, 2)), X),
    "rot90_negative": (lambda m, x: x.rot90(-1, [1, 2]), X),
    "movedim": (lambda m, x: x.movedim(0, 2), X),
    "moveaxis_tuple": (lambda m, x: m.moveaxis(x, (0, 1), (2, 0)), X),
    "swapaxes": (lambda m, x: x.swapaxes(0, 2), X),
    "swapdims": (lambda m, x: m.swapdims(x, 1, -1), X),
    "tril": (lambda m, x: x.tril(), X),
    "triu": (lambda m, x: m.triu(x, 1), X),
    "tril_negative": (lambda m, x: x.tril(-1), M),
    "triu_inf": (lambda m, x: m.triu(x.log()), M),  # -inf and NaN below the diagonal stay out
    "diagonal": (lambda m, x: x.diagonal(), X),
    "diagonal_offset": (lambda m, x: m.diagonal(x, 1, 1, 2), X),
    "diagonal_negative": (lambda m, x: x.diagonal(-1, 2, 0), X),
    "diag_embed": (lambda m, x: x.diag_embed(), X),
    "diag_embed_dims": (lambda m, x: m.diag_embed(x, 1, 0, 2), X),
    "diag_matrix": (lambda m, x: x.diag(), M),
    "diag_vector": (lambda m, x: m.diag(x, -1), V),
    "diagflat": (lambda m, x: x.diagflat(1), M[:2, :2]),
    "trace": (lambda m, x: x.trace(), M),
    "concat": (lambda m, x: m.concat([x, x * 2], dim=1), X),
    "concatenate": (lambda m, x: m.concatenate([x, x], -1), X),
    "hstack": (lambda m, x: m.hstack([x, x]), X),
    "hstack_vectors": (lambda m, v: m.hstack([v, v]), V),
    "vstack": (lambda m, v, x: m.vstack([v, x]), V, M.T.copy()),
    "row_stack": (lambda m, x: m.row_stack((x, x)), M),
    "dstack": (lambda m, v: m.dstack([v, v]), V),
    "column_stack": (lambda m, v, x: m.column_stack([v, x]), V, M),
    "atleast_2d": (lambda m, v: m.atleast_2d(v), V),
    "atleast_3d": (lambda m, x: m.atleast_3d(x), M),
    "unflatten": (lambda m, x: x.unflatten(2, (2, 2)), X),
    "unflatten_inferred": (lambda m, x: m.unflatten(x, -1, (2, -1)), X),
    "unfold": (lambda m, x: x.unfold(1, 2, 1), X),
    "unfold_step": (lambda m, x: x.unfold(-1, 2, 2), X),
    "unfold_sparse_windows": (lambda m, x: x.unfold(2, 1, 3), X),
    "broadcast_to": (lambda m, v: m.broadcast_to(v, (3, 4)), V),
    "broadcast_to_method": (lambda m, v: v.broadcast_to((2, 1, 4)), V),
    "broadcast_tensors": (lambda m, v, x: m.broadcast_tensors(v, x[0]), V, X),
    "broadcast_shapes": (lambda m: tuple(m.broadcast_shapes((2, 1), (3,), 1)),),
    "hsplit": (lambda m, x: x.hsplit(3), X),
    "hsplit_indices": (lambda m, x: m.hsplit(x, [1, 2]), X),
    "hsplit_vector": (lambda m, v: m.hsplit(v, 2), V),
    "vsplit": (lambda m, x: m.vsplit(x, 2), X),
    "dsplit": (lambda m, x: x.dsplit(2), X),
    "ravel": (lambda m, x: x.ravel(), X),
    "ravel_function": (lambda m, x: m.ravel(x), X),
    "t_function": (lambda m, x: m.t(x[0]), X),
    "clone_function": (lambda m, x: m.clone(x), X),
    "detach_function": (lambda m, x: m.detach(x) * 2, X),
    "adjoint": (lambda m, x: x.adjoint(), X),
    "unravel_index": (lambda m: m.unravel_index(m.tensor([0, 5, 23, -1]), (2, 3, 4)),),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name):
    fn, *inputs = TORCH_CASES[name]
    with np.errstate(divide="ignore", invalid="ignore"):
        compare(fn, *inputs)


ERRORS = {
    "split_sizes_sum": (lambda m, x: x.split([1, 1], 1), "split_with_sizes expects split_sizes to sum exactly to 3"),
    "chunk_zero": (lambda m, x: x.chunk(0), "chunk expects `chunks` to be greater than 0"),
    "narrow_too_long": (lambda m, x: x.narrow(2, 3, 2), "start (3) + length (2) exceeds dimension size (4)."),
    "repeat_too_few": (lambda m, x: x.repeat(2), "can not be smaller than"),
    "flip_dim": (lambda m, x: x.flip(3), "Dimension out of range (expected to be in range of [-3, 2], but got 3)"),
    "roll_mismatch": (lambda m, x: x.roll((1, 2), (0,)), "shifts and dimensions must align"),
    "diagonal_same_dims": (lambda m, x: x.diagonal(0, 1, 1), "diagonal dimensions cannot be identical"),
    "diag_3d": (lambda m, x: m.diag(x), "diag(): Supports 1D or 2D tensors"),
    "tril_vector": (lambda m, x: x[0, 0].tril(), "at least 2 dimensions"),
    "movedim_lengths": (lambda m, x: x.movedim((0, 1), (1,)), "movedim: Invalid source or destination dims"),
    "select_index": (lambda m, x: x.select(1, 3), "out of range"),
    "hsplit_scalar": (lambda m, x: x[0, 0, 0].hsplit(1),
                      "torch.hsplit requires a tensor with at least 1 dimension, but got a tensor with 0 dimensions!"),
    "vsplit_vector": (lambda m, x: m.vsplit(x[0, 0], 1),
                      "torch.vsplit requires a tensor with at least 2 dimension, but got a tensor with 1 dimensions!"),
    "dsplit_matrix": (lambda m, x: x[0].dsplit(1),
                      "torch.dsplit requires a tensor with at least 3 dimension, but got a tensor with 2 dimensions!"),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_match_torch(name):
    fn, message = ERRORS[name]
    assert message in str(raises_like(fn, X))


def test_pieces_are_views_of_the_input():
    x = autograd.tensor(X)
    first, _ = x.chunk(2, 2)
    assert np.shares_memory(first.numpy(), x.numpy())


@pytest.mark.torch
@pytest.mark.parametrize("op", ["unsqueeze(4)", "transpose(0, 3)", "flatten(0, 3)", "squeeze(3)", "sum(3)",
                                "movedim(3, 0)", "cumsum(-4)"])
def test_dims_out_of_range_raise_pytorchs_index_error(op):
    error = raises_like(lambda m, x: eval(f"x.{op}"), X)
    assert "Dimension out of range (expected to be in range of [" in str(error)
