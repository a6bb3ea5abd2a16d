"""Ops at their edges, found by a table-driven comparison with PyTorch: empty dim lists,
mixed-dtype binary ops, non-finite inputs. Each test asserts values on its own and, where
PyTorch is installed, also compares with it (tests marked ``torch`` skip cleanly without it)."""

import numpy as np
import pytest

import autograd
from tests.ops_reference import compare, raises_like

X = np.arange(1.0, 7.0).reshape(2, 1, 3)


# -- an empty dim list reduces every dim (PyTorch's reading), except where it means "none" --

EMPTY_DIM_REDUCTIONS = {  # name: (fn(module, x, dim), the value over every dim)
    "sum": (lambda m, x, d: x.sum(dim=d), 21.0),
    "mean": (lambda m, x, d: x.mean(dim=d), 3.5),
    "nansum": (lambda m, x, d: x.nansum(dim=d), 21.0),
    "nanmean": (lambda m, x, d: x.nanmean(dim=d), 3.5),
    "var": (lambda m, x, d: x.var(dim=d), 3.5),
    "std": (lambda m, x, d: x.std(dim=d, correction=0), np.sqrt(35 / 12)),
    "norm": (lambda m, x, d: x.norm(dim=d), np.sqrt(91.0)),
    "vector_norm_inf": (lambda m, x, d: m.linalg.vector_norm(x, float("inf"), dim=d), 6.0),
    "logsumexp": (lambda m, x, d: x.logsumexp(dim=d if d is not None else (0, 1, 2)), np.log(np.exp(X).sum())),
    "count_nonzero": (lambda m, x, d: x.count_nonzero(dim=d), 6),
}


@pytest.mark.parametrize("empty", [(), []])
@pytest.mark.parametrize("name", sorted(EMPTY_DIM_REDUCTIONS))
def test_an_empty_dim_list_reduces_every_dim(name, empty):
    fn, expected = EMPTY_DIM_REDUCTIONS[name]
    wants_grad = name != "count_nonzero"
    x, whole = (autograd.tensor(X, requires_grad=wants_grad) for _ in range(2))
    y, y_whole = fn(autograd, x, empty), fn(autograd, whole, None)
    assert y.shape == ()
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-12)
    if wants_grad:  # the gradient is the whole reduction's
        y.backward()
        y_whole.backward()
        np.testing.assert_allclose(x.grad.numpy(), whole.grad.numpy(), rtol=1e-12)


def test_an_empty_dim_list_keeps_every_dim_where_it_means_none():
    x = autograd.tensor(X)
    assert x.squeeze(()).shape == (2, 1, 3)
    np.testing.assert_array_equal(x.flip(()).numpy(), X)
    assert x.any(dim=()).shape == (2, 1, 3) and x.all(dim=[]).shape == (2, 1, 3)


@pytest.mark.torch
# PyTorch 2.13's logsumexp raises here and its var/std gradients come out ±inf (test above: ours equal dim=None's)
@pytest.mark.parametrize("name", sorted(set(EMPTY_DIM_REDUCTIONS) - {"logsumexp", "var", "std"}))
def test_an_empty_dim_list_matches_torch(name):
    fn = EMPTY_DIM_REDUCTIONS[name][0]
    compare(lambda m, x: fn(m, x, ()), X)


@pytest.mark.torch
@pytest.mark.parametrize("op", ["squeeze", "flip", "any", "all"])
def test_an_empty_dim_list_meaning_none_matches_torch(op):
    compare(lambda m, x: getattr(x, op)(()), X)


# -- the pointwise binary ops promote as PyTorch does, not as NumPy (float16 with int64 is float16) --

PROMOTING_BINARY_OPS = {
    "fmod": lambda m, a, b: m.fmod(a, b),
    "remainder": lambda m, a, b: m.remainder(a, b),
    "mod_operator": lambda m, a, b: a % b,
    "floor_divide": lambda m, a, b: m.floor_divide(a, b),
    "floordiv_operator": lambda m, a, b: a // b,
    "div_trunc": lambda m, a, b: m.div(a, b, rounding_mode="trunc"),
    "atan2": lambda m, a, b: m.atan2(a, b),
    "hypot": lambda m, a, b: m.hypot(a, b),
    "xlogy": lambda m, a, b: m.xlogy(a, b),
    "logaddexp": lambda m, a, b: m.logaddexp(a, b),
    "copysign": lambda m, a, b: m.copysign(a, b),
}
PROMOTIONS = [  # (input dtype, shape), (other dtype, shape), PyTorch's result dtype
    (("float16", (3,)), ("int64", (3,)), "float16"),
    (("float32", (3,)), ("int32", (3,)), "float32"),
    (("int64", (3,)), ("float32", (3,)), "float32"),
    (("float32", (3,)), ("float64", ()), "float32"),  # a 0-d tensor does not widen its category
    (("float16", (3,)), ("int64", ()), "float16"),
    (("int32", (3,)), ("float64", ()), "float64"),  # ... but brings a higher one: its dtype
]
A = np.array([5.0, -7.0, 2.5])
B = np.array([2.0, 3.0, -1.5])


def _operands(a_spec, b_spec):
    (a_dtype, a_shape), (b_dtype, b_shape) = a_spec, b_spec
    a = A.astype(a_dtype).reshape(a_shape) if a_shape else A[:1].astype(a_dtype).reshape(())
    b = B.astype(b_dtype).reshape(b_shape) if b_shape else B[:1].astype(b_dtype).reshape(())
    return a, b


@pytest.mark.parametrize("a_spec,b_spec,dtype", PROMOTIONS)
@pytest.mark.parametrize("name", sorted(PROMOTING_BINARY_OPS))
def test_pointwise_binary_ops_promote_as_pytorch(name, a_spec, b_spec, dtype):
    if name == "copysign" and a_spec[0].startswith("int") and dtype.startswith("int"):
        pytest.skip("copysign is floating")
    a, b = _operands(a_spec, b_spec)
    y = PROMOTING_BINARY_OPS[name](autograd, autograd.tensor(a), autograd.tensor(b))
    assert str(y.dtype).split(".")[-1] == dtype


def test_floor_division_and_fmod_values_in_the_promoted_dtype():
    a = autograd.tensor(np.array([7.0, -7.0, 7.5], dtype=np.float16))
    b = autograd.tensor(np.array([2, 2, -2]))
    assert (a // b).dtype == autograd.float16 and (a % b).dtype == autograd.float16
    np.testing.assert_array_equal((a // b).numpy(), [3.0, -4.0, -4.0])
    np.testing.assert_array_equal((a % b).numpy(), [1.0, 1.0, -0.5])
    np.testing.assert_array_equal(autograd.fmod(a, b).numpy(), [1.0, -1.0, 1.5])
    i = autograd.tensor(np.array([7, -7], dtype=np.int32))
    assert autograd.div(i, autograd.tensor(2), rounding_mode="trunc").dtype == autograd.int32


@pytest.mark.torch
@pytest.mark.parametrize("a_spec,b_spec,dtype", PROMOTIONS)
@pytest.mark.parametrize("name", sorted(PROMOTING_BINARY_OPS))
def test_pointwise_binary_ops_promote_as_torch(name, a_spec, b_spec, dtype):
    if name == "copysign" and a_spec[0].startswith("int"):
        pytest.skip("PyTorch records a zero gradient for other here; ours records none (left alone)")
    a, b = _operands(a_spec, b_spec)
    tolerance = 1e-3 if "float16" in (a_spec[0], b_spec[0]) else 1e-6
    grad = "floor" not in name  # PyTorch has no derivative for floor_divide
    compare(PROMOTING_BINARY_OPS[name], a, b, grad=grad, rtol=tolerance, atol=tolerance)


# -- polygamma (digamma's and lgamma's gradients) at -inf and far-off poles: an answer, not a hang --

def test_polygamma_of_infinities_and_far_poles_returns():
    x = autograd.tensor([-np.inf, np.inf, np.nan, -1e300, -3.0, 0.3], dtype=autograd.float64)
    expected = [np.nan, 0.0, np.nan, np.inf, np.inf, 12.245364544940365]
    np.testing.assert_allclose(autograd.polygamma(1, x).numpy(), expected, rtol=1e-10)
    x = autograd.tensor([-np.inf, 0.3], dtype=autograd.float64, requires_grad=True)
    autograd.digamma(x).sum().backward()  # polygamma(1, x): hung forever at -inf (10^308 shifts)
    assert np.isnan(x.grad.numpy()[0]) and np.isclose(x.grad.numpy()[1], 12.245364544940365, rtol=1e-10)


@pytest.mark.torch
def test_polygamma_of_infinities_matches_torch():
    # values only: PyTorch's polygamma(2, ±inf), this one's gradient, are -inf and NaN (ours NaN and 0)
    x = np.array([-np.inf, np.inf, np.nan, 0.3, -2.5])
    compare(lambda m, x: m.polygamma(1, x), x, grad=False, rtol=1e-10, atol=1e-10)


# -- cat and stack promote as PyTorch; scatter_reduce's mean keeps the dtype --

@pytest.mark.parametrize("join", ["cat", "stack", "hstack", "vstack"])
@pytest.mark.parametrize("dtypes,expected", [(("float32", "int64"), "float32"), (("int32", "float16"), "float16"),
                                             (("bool", "int32"), "int32"), (("float32", "float64"), "float64")])
def test_joining_tensors_promotes_as_pytorch(join, dtypes, expected):
    a, b = (autograd.tensor(np.arange(3).astype(d)) for d in dtypes)
    y = getattr(autograd, join)([a, b])
    assert str(y.dtype).split(".")[-1] == expected
    np.testing.assert_array_equal(y.numpy().ravel(), np.r_[a.numpy(), b.numpy()].astype(expected))


def test_cat_of_mixed_dtypes_gives_each_gradient_its_own_dtype():
    a = autograd.tensor(np.ones(2, dtype=np.float16), requires_grad=True)
    b = autograd.tensor(np.ones(3, dtype=np.float32), requires_grad=True)
    y = autograd.cat([a, b])
    assert y.dtype == autograd.float32
    (y * autograd.arange(5.0)).sum().backward()
    assert a.grad.dtype == autograd.float16 and b.grad.dtype == autograd.float32
    np.testing.assert_array_equal(a.grad.numpy(), [0.0, 1.0])
    np.testing.assert_array_equal(b.grad.numpy(), [2.0, 3.0, 4.0])


def test_scatter_reduce_mean_keeps_float32():
    x = autograd.zeros(4)
    y = x.scatter_reduce(0, autograd.tensor([1, 1, 3]), autograd.tensor([1.0, 2.0, 5.0]), "mean")
    assert y.dtype == autograd.float32
    np.testing.assert_allclose(y.numpy(), [0.0, 1.0, 0.0, 2.5])


@pytest.mark.torch
@pytest.mark.parametrize("include_self", [True, False])
def test_scatter_reduce_mean_matches_torch(include_self):
    x = np.arange(4, dtype=np.float32)
    src = np.array([1.0, 2.0, 5.0], dtype=np.float32)
    compare(lambda m, x, s: x.scatter_reduce(0, m.tensor([1, 1, 3]), s, "mean", include_self=include_self), x, src,
            rtol=1e-6, atol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("dtypes", [("float32", "int64"), ("int64", "float16"), ("bool", "int32")])
def test_cat_promotion_matches_torch(dtypes):
    a, b = np.arange(6).reshape(2, 3).astype(dtypes[0]), np.arange(3).reshape(1, 3).astype(dtypes[1])
    compare(lambda m, a, b: m.cat([a, b]), a, b, rtol=1e-3, atol=1e-3)


# -- shapes that do not fit raise PyTorch's RuntimeError (a ShapeError, also a ValueError) --

BAD_SHAPES = {
    "reshape": lambda m, x: x.reshape(5, -1),
    "reshape_two_inferred": lambda m, x: x.reshape(-1, -1),
    "reshape_zero_inferred": lambda m, x: x[:, :0].reshape(0, -1),
    "view": lambda m, x: x.view(7),
    "flatten_reversed": lambda m, x: x.flatten(2, 1),
    "permute_repeated": lambda m, x: x.permute(0, 0, 1),
    "permute_short": lambda m, x: x.permute(0, 1),
    "t_of_3d": lambda m, x: x.t(),
    "expand_mismatch": lambda m, x: x.expand(2, 3, 5),
    "expand_fewer": lambda m, x: x.expand(3, 4),
    "cat_sizes": lambda m, x: m.cat([x, x[:, :2, :3]], 1),
    "cat_ndim": lambda m, x: m.cat([x, x[0]]),
    "stack_sizes": lambda m, x: m.stack([x, x[:, :2]]),
}
Y = np.arange(24.0).reshape(2, 3, 4)


@pytest.mark.parametrize("name", sorted(BAD_SHAPES))
def test_bad_shapes_raise_a_runtime_error_that_is_also_a_value_error(name):
    with pytest.raises(RuntimeError) as caught:
        BAD_SHAPES[name](autograd, autograd.tensor(Y))
    assert isinstance(caught.value, ValueError)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(BAD_SHAPES))
def test_bad_shapes_raise_as_torch(name):
    raises_like(BAD_SHAPES[name], Y)


def test_good_shapes_still_pass():
    x = autograd.tensor(Y)
    assert x.reshape(-1, 6).shape == (4, 6) and x[:, :0].reshape(-1).shape == (0,)
    assert x[:1, :1].expand(2, -1, 4, 4).shape == (2, 1, 4, 4) and x.flatten(1, 1).shape == (2, 3, 4)


# -- factories: arange's bounds and step, negative sizes --

def test_arange_takes_0d_tensors_as_its_bounds():
    y = autograd.arange(autograd.tensor(3))
    assert y.dtype == autograd.int64
    np.testing.assert_array_equal(y.numpy(), [0, 1, 2])
    np.testing.assert_allclose(autograd.arange(autograd.tensor(0.5), 2).numpy(), [0.5, 1.5])


BAD_FACTORIES = {
    "arange_zero_step": lambda m: m.arange(0, 5, 0),
    "arange_wrong_sign": lambda m: m.arange(0, 5, -1),
    "arange_step_zero_as_int": lambda m: m.arange(0, 3, 0.5, dtype=m.int64),
    "zeros_negative": lambda m: m.zeros(2, -1),
    "rand_negative": lambda m: m.rand(-1),
    "full_negative": lambda m: m.full((-1,), 1.0),
    "eye_negative": lambda m: m.eye(-1),
    "linspace_negative": lambda m: m.linspace(0, 1, -1),
}


@pytest.mark.parametrize("name", sorted(BAD_FACTORIES))
def test_bad_factory_arguments_raise(name):
    expected = ValueError if name == "arange_step_zero_as_int" else RuntimeError  # PyTorch's types
    with pytest.raises(expected):
        BAD_FACTORIES[name](autograd)


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(BAD_FACTORIES))
def test_bad_factory_arguments_raise_as_torch(name):
    raises_like(lambda m: BAD_FACTORIES[name](m))


@pytest.mark.torch
@pytest.mark.parametrize("args", [(5,), (1, 4.0), (5, 0, -2), (-1, 1, 0.2), (3, 3), (0, 1, 10), (2.5,)])
def test_arange_matches_torch(args):
    compare(lambda m: m.arange(*args), rtol=1e-6, atol=1e-6)


MORE_BAD_SHAPES = {
    "matmul_inner": lambda m, x: x @ x,
    "matmul_0d": lambda m, x: x[0, 0] @ x[0],
    "mT_of_1d": lambda m, x: x[0].mT,
    "stack_nothing": lambda m, x: m.stack([]),
}
M34 = np.arange(12.0).reshape(3, 4)


@pytest.mark.parametrize("name", sorted(MORE_BAD_SHAPES))
def test_matmul_and_mT_shape_errors_are_runtime_errors(name):
    with pytest.raises(RuntimeError):
        MORE_BAD_SHAPES[name](autograd, autograd.tensor(M34))


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(MORE_BAD_SHAPES))
def test_matmul_and_mT_shape_errors_raise_as_torch(name):
    raises_like(MORE_BAD_SHAPES[name], M34)


# -- erf of integers and bools is the default dtype (NumPy's would be float64; bool failed) --

@pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
def test_erf_of_integers_and_bools_is_float32(dtype):
    x = autograd.tensor(np.array([0, 1, 1]).astype(dtype))
    for y in (autograd.erf(x), x.erf(), autograd.special.erf(x), autograd.special.ndtr(x)):
        assert y.dtype == autograd.float32
    np.testing.assert_allclose(autograd.erf(x).numpy(), [0.0, 0.8427007929497149, 0.8427007929497149], rtol=1e-6)


@pytest.mark.torch
@pytest.mark.parametrize("dtype", ["int32", "int64", "bool"])
def test_erf_of_integers_matches_torch(dtype):
    compare(lambda m, x: m.erf(x), np.array([0, 1, 2]).astype(dtype), rtol=1e-6, atol=1e-6)


# -- unique keeps each NaN apart; atan2's gradient at the origin is 0 --

def test_unique_keeps_every_nan_as_pytorch():
    values, inverse, counts = autograd.unique(autograd.tensor([np.nan, 1.0, np.nan, 1.0]), return_inverse=True,
                                              return_counts=True)
    np.testing.assert_array_equal(values.numpy(), [1.0, np.nan, np.nan])
    np.testing.assert_array_equal(inverse.numpy(), [1, 0, 2, 0])
    np.testing.assert_array_equal(counts.numpy(), [2, 1, 1])


def test_atan2_gradient_at_the_origin_is_zero():
    y = autograd.tensor([0.0, 1.0], requires_grad=True)
    x = autograd.tensor([0.0, 2.0], requires_grad=True)
    autograd.atan2(y, x).sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), [0.0, 0.4])
    np.testing.assert_allclose(x.grad.numpy(), [0.0, -0.2])


@pytest.mark.torch
def test_unique_and_atan2_at_their_edges_match_torch():
    compare(lambda m, x: m.unique(x, return_inverse=True, return_counts=True), np.array([np.nan, 1.0, np.nan, 1.0]),
            grad=False)
    compare(lambda m, y, x: m.atan2(y, x), np.array([0.0, 1.0, -0.0]), np.array([0.0, 2.0, 0.0]))


def test_norm_below_one_has_a_zero_gradient_at_zero_entries():
    x = autograd.tensor([0.0, 4.0, 1.0], requires_grad=True)
    x.norm(0.5).backward()  # y = (Σ √|x|)² = 9;  dy/dx = √y · |x|^(-1/2) · sign(x) = 3 / √|x|, 0 at x = 0
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 1.5, 3.0])


@pytest.mark.torch
def test_norm_below_one_at_zero_matches_torch():
    compare(lambda m, x: m.linalg.vector_norm(x, 0.5, dim=1), np.array([[0.0, 4.0, 1.0], [0.0, 0.0, 2.0]]))


# -- bitwise functions promote as PyTorch; reflected operators and shifts exist --

def test_bitwise_ops_promote_as_pytorch_and_reflect():
    a = autograd.tensor(np.array([1, 2, 3], dtype=np.int32))
    six = autograd.tensor(6)  # a 0-d int64: it does not widen an int32 tensor
    for name in ("bitwise_and", "bitwise_or", "bitwise_xor", "bitwise_left_shift", "bitwise_right_shift"):
        assert getattr(autograd, name)(a, six).dtype == autograd.int32
    np.testing.assert_array_equal((2 & a).numpy(), [0, 2, 2])
    np.testing.assert_array_equal((True | a).numpy(), [1, 3, 3])
    np.testing.assert_array_equal((5 ^ a).numpy(), [4, 7, 6])
    np.testing.assert_array_equal((a << 1).numpy(), [2, 4, 6])
    np.testing.assert_array_equal((1 << a).numpy(), [2, 4, 8])
    np.testing.assert_array_equal((a >> 1).numpy(), [0, 1, 1])
    with pytest.raises(RuntimeError):
        autograd.bitwise_and(a, autograd.tensor([1.0, 2.0, 3.0]))


@pytest.mark.torch
@pytest.mark.parametrize("fn", [lambda m, a: m.bitwise_and(a, m.tensor(6)), lambda m, a: 2 & a, lambda m, a: True | a,
                                lambda m, a: 5 ^ a, lambda m, a: a << 2, lambda m, a: 1 << a, lambda m, a: a >> 1,
                                lambda m, a: m.bitwise_left_shift(a, m.tensor(1))])
def test_bitwise_ops_match_torch(fn):
    compare(fn, np.array([1, 2, 3], dtype=np.int32))


# -- einsum broadcasts a size-1 named dim, as PyTorch --

EINSUM_BROADCASTS = {
    "rowwise_dot": ("ij,ij->i", (3, 4), (1, 4)),
    "batched_matmul": ("bij,bjk->bik", (2, 3, 4), (1, 4, 5)),
    "outer_sum": ("ij,jk->ik", (3, 1), (4, 2)),  # j: 1 against 4, summed over
}


@pytest.mark.parametrize("name", sorted(EINSUM_BROADCASTS))
def test_einsum_broadcasts_size_one_named_dims(name):
    equation, a_shape, b_shape = EINSUM_BROADCASTS[name]
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal(a_shape), rng.standard_normal(b_shape)
    ta, tb = autograd.tensor(a, requires_grad=True), autograd.tensor(b, requires_grad=True)
    y = autograd.einsum(equation, ta, tb)
    sizes = {}
    for term, shape in zip(equation.split("->")[0].split(","), (a_shape, b_shape)):
        for label, n in zip(term, shape):
            sizes[label] = max(n, sizes.get(label, 1))
    terms = equation.split("->")[0].split(",")
    expanded = [np.broadcast_to(x, tuple(sizes[c] for c in t)) for x, t in zip((a, b), terms)]
    np.testing.assert_allclose(y.numpy(), np.einsum(equation, *expanded), rtol=1e-12)
    y.sum().backward()
    assert ta.grad.shape == a_shape and tb.grad.shape == b_shape


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(EINSUM_BROADCASTS))
def test_einsum_broadcasting_matches_torch(name):
    equation, a_shape, b_shape = EINSUM_BROADCASTS[name]
    rng = np.random.default_rng(0)
    compare(lambda m, a, b: m.einsum(equation, a, b), rng.standard_normal(a_shape), rng.standard_normal(b_shape))


def test_take_out_of_range_raises_index_error():
    x = autograd.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(x.take(autograd.tensor([[0, -1], [5, -6]])).numpy(), [[0.0, 5.0], [5.0, 0.0]])
    for bad in (6, -7):
        with pytest.raises(IndexError, match="out of range"):
            x.take(autograd.tensor([bad]))


@pytest.mark.torch
def test_take_out_of_range_raises_as_torch():
    raises_like(lambda m, x: x.take(m.tensor([6])), np.arange(6.0).reshape(2, 3))
    compare(lambda m, x: x.take(m.tensor([[0, -1], [5, -6]])), np.arange(6.0).reshape(2, 3))


# -- small API gaps and missing errors: tile(*dims), reshape_as, a floating alpha on integers --

def test_tile_takes_dims_as_arguments_or_a_tuple_and_reshape_as_exists():
    x = autograd.tensor([1, 2])
    np.testing.assert_array_equal(x.tile(2, 1).numpy(), [[1, 2], [1, 2]])
    np.testing.assert_array_equal(autograd.tile(x, (2,)).numpy(), [1, 2, 1, 2])
    assert x.reshape_as(autograd.zeros(2, 1)).shape == (2, 1)


def test_methods_with_sizes_take_them_by_keyword_too():
    """PyTorch's keyword names: torch.flip(w, dims=[-1]) (FFT convolution's flipped kernel),
    x.permute(dims=...), x.view(size=...), x.reshape(shape=...), x.expand(size=...),
    x.repeat(repeats=...), x.tile(dims=...), x.new_zeros(size=...)."""
    x = autograd.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    np.testing.assert_array_equal(autograd.flip(x, dims=[-1]).detach().numpy(), [[2, 1, 0], [5, 4, 3]])
    np.testing.assert_array_equal(x.flip(dims=(0, 1)).detach().numpy(), [[5, 4, 3], [2, 1, 0]])
    assert x.permute(dims=(1, 0)).shape == (3, 2) and x.view(size=(6,)).shape == (6,)
    assert x.reshape(shape=(3, 2)).shape == (3, 2) and x.expand(size=(4, 2, 3)).shape == (4, 2, 3)
    assert x.repeat(repeats=(2, 1)).shape == (4, 3) and autograd.tile(x, dims=(2,)).shape == (2, 6)
    assert x.new_zeros(size=(2,)).shape == (2,) and x.new_ones(size=4).dtype == x.dtype
    autograd.flip(x, dims=[1]).mul(autograd.tensor([1.0, 2.0, 3.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[3, 2, 1], [3, 2, 1]])
    with pytest.raises(TypeError, match="dims"):
        x.flip(0, dims=[1])
    with pytest.raises(TypeError, match="size"):
        x.view(6, size=(6,))


@pytest.mark.parametrize("op", ["add", "sub", "rsub"])
def test_a_floating_alpha_on_integer_tensors_raises(op):
    x = autograd.tensor([1, 2])
    with pytest.raises(RuntimeError, match="alpha"):
        getattr(autograd, op)(x, x, alpha=0.5)
    np.testing.assert_allclose(getattr(autograd, op)(x, autograd.tensor([2.0, 4.0]), alpha=0.5).numpy(),
                               {"add": [2.0, 4.0], "sub": [0.0, 0.0], "rsub": [1.5, 3.0]}[op])


@pytest.mark.torch
@pytest.mark.parametrize("op", ["add", "sub", "rsub"])
def test_a_floating_alpha_on_integer_tensors_raises_as_torch(op):
    raises_like(lambda m, x: getattr(m, op)(x, x, alpha=0.5), np.array([1, 2]))
    compare(lambda m, x, y: getattr(m, op)(x, y, alpha=0.5), np.array([1, 2]), np.array([2.0, 4.0]))


# -- dtypes and degenerate inputs of the core ops (elementwise.py, reductions.py), as PyTorch's ----

def test_floating_functions_of_integers_and_bools_give_the_default_dtype():
    for values in ([1, 2], [True, False]):
        for name in ("exp", "log", "sqrt", "sin", "cos", "tanh", "sigmoid"):
            y = getattr(autograd.tensor(values), name)()
            assert y.dtype == autograd.float32, name
            expected = getattr(np, name, None) or (lambda v: 1 / (1 + np.exp(-v)))
            with np.errstate(divide="ignore"):
                np.testing.assert_allclose(y.numpy(), expected(np.array(values, dtype=np.float32)), rtol=1e-6)
    assert autograd.tensor([1, 2]).logsumexp(0).dtype == autograd.float32
    y = autograd.tensor([1, 2, 3]).clamp(0.5, 2.5)
    assert y.dtype == autograd.float32
    np.testing.assert_array_equal(y.numpy(), [1.0, 2.0, 2.5])


def test_std_of_equal_values_has_gradient_zero():
    x = autograd.tensor([[2.0, 2.0, 2.0], [1.0, 2.0, 3.0]], requires_grad=True)
    s = x.std(dim=1)
    np.testing.assert_allclose(s.detach().numpy(), [0.0, 1.0])
    s.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5]])


def test_softmax_and_logsumexp_over_an_empty_dim():
    empty = autograd.zeros(2, 0)
    assert empty.softmax(1).shape == (2, 0) and empty.log_softmax(1).shape == (2, 0)
    np.testing.assert_array_equal(empty.logsumexp(1).numpy(), [-np.inf, -np.inf])


def test_argmax_keepdim_without_dim_keeps_every_dim():
    x = autograd.tensor([[1.0, 5.0], [7.0, 2.0]])
    assert x.argmax(keepdim=True).shape == (1, 1) and x.argmax(keepdim=True).item() == 2
    assert x.argmin(keepdim=True).shape == (1, 1) and x.argmin(keepdim=True).item() == 0


def test_float16_mean_and_sum_accumulate_in_float32():
    halves = autograd.full((4000,), 30.0, dtype=autograd.float16)
    assert halves.mean().item() == 30.0 and halves.mean().dtype == autograd.float16
    tenths = autograd.tensor(np.full(1000, 0.1, dtype=np.float16))
    assert tenths.sum().item() == np.float16(np.float32(np.float16(0.1)) * 1000)


def test_errors_of_empty_arg_reductions_bool_arithmetic_and_integer_powers():
    for call, error, message in (
            (lambda: autograd.zeros(0).argmax(), IndexError, "numel"),
            (lambda: autograd.zeros(2, 0).argmax(dim=1), IndexError, "dim 1"),
            (lambda: autograd.zeros(0, 3).argmin(dim=0), IndexError, "dim 0"),
            (lambda: autograd.where(autograd.tensor([1.0, 0.0]), 1.0, 2.0), RuntimeError, "boolean"),
            (lambda: -autograd.tensor([True]), RuntimeError, "logical_not"),
            (lambda: autograd.tensor([True]) - autograd.tensor([False]), RuntimeError, "logical_xor"),
            (lambda: autograd.tensor([2, 3]) ** -1, RuntimeError, "negative integer powers")):
        with pytest.raises(error, match=message):
            call()
    assert autograd.zeros(2, 0).argmax(dim=0).shape == (0,)
    squared = autograd.tensor([True, False]) ** 2
    assert squared.dtype == autograd.int64
    np.testing.assert_array_equal(squared.numpy(), [1, 0])


@pytest.mark.torch
def test_those_errors_match_pytorch():
    raises_like(lambda m, x: m.argmax(x), np.zeros(0))
    raises_like(lambda m, x: m.argmin(x, dim=1), np.zeros((2, 0)))
    raises_like(lambda m, x: m.where(x, 1.0, 2.0), np.array([1.0, 0.0]))
    raises_like(lambda m, x: -x, np.array([True]))
    raises_like(lambda m, x: x - x, np.array([True]))
    raises_like(lambda m, x: x ** -1, np.array([2, 3]))


def test_fmax_fmin_ignore_nan_and_send_the_gradient_as_pytorch():
    a = autograd.tensor([1.0, np.nan, 3.0, np.nan, 2.0], requires_grad=True)
    b = autograd.tensor([2.0, 1.0, np.nan, np.nan, 2.0], requires_grad=True)
    y = autograd.fmax(a, b)
    np.testing.assert_array_equal(y.detach().numpy(), [2.0, 1.0, 3.0, np.nan, 2.0])
    y.sum().backward()  # ties and a NaN in other: input's
    np.testing.assert_array_equal(a.grad.numpy(), [0, 0, 1, 1, 1])
    np.testing.assert_array_equal(b.grad.numpy(), [1, 1, 0, 0, 0])
    np.testing.assert_array_equal(autograd.fmin(a, b).detach().numpy(), [1.0, 1.0, 3.0, np.nan, 2.0])
    assert autograd.tensor([1, 2]).fmax(autograd.tensor([1.5, 0.5])).dtype == autograd.float32


def test_sinc_is_one_at_zero_with_gradient_zero():
    x = autograd.tensor([0.0, 0.5, -1.3, 2.0], dtype=autograd.float64, requires_grad=True)
    y = autograd.sinc(x)
    expected = np.sinc(x.detach().numpy())
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=1e-14)
    y.sum().backward()
    values = x.detach().numpy()
    slope = np.where(values == 0, 0.0, (np.cos(np.pi * values) - expected) / np.where(values == 0, 1, values))
    np.testing.assert_allclose(x.grad.numpy(), slope, rtol=1e-12, atol=1e-15)
    assert autograd.gradcheck(autograd.sinc, (autograd.tensor([0.3, -0.7], dtype=autograd.float64,
                                                              requires_grad=True),))


def test_sinc_derivatives_at_zero_are_the_limits():
    """sinc(x) = Σ_k (-1)^k (πx)^2k / (2k+1)!: at 0 its n-th derivative is 0 for odd n and
    (-1)^(n/2) π^n / (n+1) for even n (PyTorch gives NaN from the second on); and a second
    derivative at 0 agrees with central differences of the first derivative around it."""
    x = autograd.tensor([0.0, 0.25], dtype=autograd.float64, requires_grad=True)
    derivatives = [autograd.sinc(x)]
    for _ in range(6):
        derivatives.append(autograd.autograd.grad(derivatives[-1].sum(), x, create_graph=True)[0])
    at_zero = [d[0].item() for d in derivatives]
    expected = [0.0 if n % 2 else (-1) ** (n // 2) * np.pi ** n / (n + 1) for n in range(7)]
    np.testing.assert_allclose(at_zero, expected, rtol=1e-12, atol=1e-12)
    h = 1e-5
    probe = autograd.tensor([-h, h], dtype=autograd.float64, requires_grad=True)
    slope = autograd.autograd.grad(autograd.sinc(probe).sum(), probe)[0].numpy()
    assert np.isclose((slope[1] - slope[0]) / (2 * h), expected[2], rtol=1e-6)
    assert autograd.gradgradcheck(autograd.sinc, (autograd.tensor([0.0, 0.3], dtype=autograd.float64,
                                                                  requires_grad=True),))


@pytest.mark.torch
def test_fmax_fmin_sinc_match_pytorch():
    a = np.array([1.0, np.nan, 3.0, np.nan, 2.0, -4.0])
    b = np.array([2.0, 1.0, np.nan, np.nan, 2.0, 5.0])
    compare(lambda m, x, y: m.fmax(x, y), a, b)
    compare(lambda m, x, y: m.fmin(x, y), a, b)
    compare(lambda m, x: m.sinc(x), np.array([0.0, 0.5, -1.3, 2.0, 7.25]), rtol=1e-10, atol=1e-12)
