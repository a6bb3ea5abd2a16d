"""Silent differences from PyTorch 2.13 in the reductions and conversions found by session 35's diff of small
programs on both libraries, each checked on both (the ``T`` fixture: chainrule's, then PyTorch's where it is
installed): max/min over a tuple of dims (read as its first dim), argmax/argmin into an out= of another dtype
(written, cast), nansum with an integer dtype= (the NaNs cast before they were dropped), float16's std past
float16's range (∞), and the words for bool() of an empty tensor and select() of a 0-d one."""

import numpy as np
import pytest

from tests.ported import raises, same

# -- max/min take one dim -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("dim", [(0, 1), (0,), [1]])
def test_max_and_min_refuse_a_tuple_of_dims(T, name, dim):
    x = T.tensor([[1.0, 5.0, 3.0], [2.0, 2.0, -1.0]])
    # (chainrule reduced over the tuple's first dim only, a silent answer to a question not asked)
    raises(TypeError, "", getattr(T, name), x, dim)
    raises(TypeError, "", getattr(x, name), dim)
    raises(TypeError, "", getattr(x, name), dim=dim, keepdim=True)


@pytest.mark.parametrize("name, values, indices", [("max", [5.0, 2.0], [1, 0]), ("min", [1.0, -1.0], [0, 2])])
def test_max_and_min_over_one_dim_still_give_values_and_indices(T, name, values, indices):
    x = T.tensor([[1.0, 5.0, 3.0], [2.0, 2.0, -1.0]], dtype=T.float64)
    for dim in (1, -1, np.int64(1)):
        result = getattr(x, name)(dim)
        same(result.values, values, "float64")
        same(result.indices, indices, "int64")
    kept = getattr(T, name)(x, 1, True)
    assert tuple(kept.values.shape) == (2, 1) and tuple(kept.indices.shape) == (2, 1)


# -- argmax/argmin write only into an int64 out ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("dtype, words", [("float32", "float"), ("float64", "double"), ("int32", "int")])
def test_argmax_and_argmin_refuse_an_out_of_another_dtype(T, name, dtype, words):
    x = T.tensor([[1.0, 5.0, 3.0], [2.0, 2.0, -1.0]])
    out = T.zeros(2, dtype=getattr(T, dtype))
    raises(RuntimeError, rf"^Expected out tensor to have dtype long int, but got {words} instead", getattr(T, name),
           x, 1, out=out)
    same(out, [0, 0])  # (left as it was)


@pytest.mark.parametrize("name, expected", [("argmax", [1, 0]), ("argmin", [0, 2])])
def test_argmax_and_argmin_write_into_an_int64_out(T, name, expected):
    x = T.tensor([[1.0, 5.0, 3.0], [2.0, 2.0, -1.0]])
    out = T.zeros(0, dtype=T.int64)
    assert getattr(T, name)(x, 1, out=out) is out
    same(out, expected, "int64")
    whole = T.zeros((), dtype=T.int64)
    getattr(T, name)(x, out=whole)
    same(whole, 1 if name == "argmax" else 5, "int64")


# -- nansum with dtype= ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["int32", "int64", "int16"])
def test_nansum_into_an_integer_dtype_drops_the_nans_first(T, dtype):
    x = T.tensor([[1.0, -0.0, float("nan")], [2.0, 2.0, -1.0]])
    # (chainrule cast NaN to the integer dtype first: -2147483648 in the total, not 0)
    same(T.nansum(x, dtype=getattr(T, dtype)), 4, dtype)
    same(T.nansum(x, 1, dtype=getattr(T, dtype)), [1, 3], dtype)
    same(x.nansum(dim=0, keepdim=True, dtype=getattr(T, dtype)), [[3, 2, -1]], dtype)


def test_nansum_with_a_floating_dtype_keeps_its_gradient(T):
    x = T.tensor([[1.0, -0.0, float("nan")], [2.0, 2.0, -1.0]], requires_grad=True)
    y = T.nansum(x, 1, dtype=T.float64)
    same(y, [1.0, 3.0], "float64")
    y.sum().backward()
    same(x.grad, [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], "float32")
    same(T.nansum(x.detach(), dtype=T.float16), 4.0, "float16")


# -- float16's std ---------------------------------------------------------------------------------------------------


def test_float16_std_past_float16s_range_of_variance_is_finite(T):
    x = T.tensor([60000.0, 50000.0], dtype=T.float16)  # (its variance, about 5e7, is past float16's 65504)
    held = np.array([60000.0, 50000.0], dtype=np.float16).astype(np.float64)  # (60000, 49984)
    expected = np.float16(np.std(held, ddof=1))  # (7084 once rounded)
    same(T.std(x), expected, "float16")
    std, mean = T.std_mean(x)
    same(std, expected, "float16")
    same(mean, np.float16(held.mean()), "float16")
    assert np.isinf(T.var(x).item())  # (the variance itself is past the range, in both)


def test_float16_std_keeps_its_gradient(T):
    x = T.tensor([[6.0, 5.0], [1.0, 3.0]], dtype=T.float16, requires_grad=True)
    y = T.std(x, 1)
    same(y, np.array([0.7071, 1.414], dtype=np.float16), "float16")
    y.sum().backward()
    assert x.grad.dtype == T.float16
    np.testing.assert_allclose(x.grad.numpy().astype(np.float64), [[0.7071, -0.7071], [-0.7071, 0.7071]], rtol=2e-3)


# -- the words of two refusals -------------------------------------------------------------------------------------


def test_bool_of_an_empty_tensor_says_it_has_no_values(T):
    raises(RuntimeError, "^Boolean value of Tensor with no values is ambiguous", bool, T.zeros(0))
    raises(RuntimeError, "^Boolean value of Tensor with more than one value is ambiguous", bool, T.zeros(2))
    assert bool(T.ones(1, 1)) is True


def test_select_of_a_0_dim_tensor_says_so(T):
    raises(IndexError, r"^select\(\) cannot be applied to a 0-dim tensor\.", T.tensor(1.0).select, 0, 0)
    raises(IndexError, r"^select\(\) cannot be applied to a 0-dim tensor\.", T.select, T.tensor(1.0), 0, 0)
    same(T.tensor([[1, 2], [3, 4]]).select(1, -1), [2, 4])


# -- clamp by numbers and conj_physical write only into an out of their result's dtype ------------------------------


@pytest.mark.parametrize("name, bounds", [("clamp", (0, 1)), ("clip", (None, 1)), ("clamp_min", (0.5,)),
                                          ("clamp_max", (1,))])
@pytest.mark.parametrize("dtype, words", [("float64", "Double"), ("float16", "Half"), ("int64", "Long")])
def test_clamp_by_numbers_refuses_an_out_of_another_dtype(T, name, bounds, dtype, words):
    out = T.zeros(2, dtype=getattr(T, dtype))
    raises(RuntimeError, f"^Found dtype {words} but expected Float", getattr(T, name), T.tensor([1.0, 2.0]), *bounds,
           out=out)
    same(out, [0, 0])
    into = T.zeros(0)
    assert getattr(T, name)(T.tensor([1.0, 2.0]), *bounds, out=into) is into and tuple(into.shape) == (2,)


def test_clamp_of_integers_by_a_float_number_writes_into_the_default_dtype_only(T):
    x = T.tensor([1, 2])
    same(T.clamp(x, 0.5, out=T.zeros(2)), [1.0, 2.0], "float32")
    raises(RuntimeError, "^Found dtype Long but expected Float", T.clamp_min, x, 0.5, out=T.zeros(2, dtype=T.int64))


@pytest.mark.parametrize("name", ["clamp", "clamp_min"])
def test_clamp_by_tensors_casts_into_out(T, name):
    x = T.tensor([1, 2])
    same(getattr(T, name)(x, T.tensor([0.5, 3.0]), out=T.zeros(2, dtype=T.float64)), [1.0, 3.0], "float64")
    same(getattr(T, name)(T.tensor([1.0, 2.0]), T.tensor(0.0), out=T.zeros(2, dtype=T.float16)), [1.0, 2.0],
         "float16")
    raises(RuntimeError, "^result type Float can't be cast to the desired output type Long", getattr(T, name), x,
           T.tensor([0.5, 3.0]), out=T.zeros(2, dtype=T.int64))


def test_conj_physical_writes_into_an_out_of_its_dtype_only(T):
    raises(RuntimeError, "^Found dtype Float but expected Long", T.conj_physical, T.tensor([1, 2]),
           out=T.zeros(2))
    raises(RuntimeError, "^Found dtype ComplexDouble but expected ComplexFloat", T.conj_physical,
           T.tensor([1 + 2j], dtype=T.complex64), out=T.zeros(1, dtype=T.complex128))
    same(T.conj_physical(T.tensor([1 + 2j]), out=T.zeros(0, dtype=T.complex64)), [1 - 2j], "complex64")


# -- a (values, indices) op given one tensor as out= ---------------------------------------------------------------


@pytest.mark.parametrize("name, args", [("max", (1,)), ("min", (1,)), ("sort", (1,)), ("topk", (1,)),
                                        ("kthvalue", (1,)), ("median", (1,)), ("nanmedian", (1,)), ("mode", (1,)),
                                        ("cummax", (1,)), ("cummin", (1,)), ("aminmax", ()), ("frexp", ())])
def test_a_pair_op_refuses_a_lone_out_tensor(T, name, args):
    # (chainrule raised AttributeError, ValueError, or asked bool() of the empty tensor)
    out = T.zeros(0)
    raises(TypeError, "", getattr(T, name), T.tensor([[1.0, 2.0]]), *args, out=out)
    assert tuple(out.shape) == (0,)
    values, indices = T.zeros(0), T.zeros(0, dtype=T.int64)
    result = T.max(T.tensor([[1.0, 2.0]]), 1, out=(values, indices))
    assert result.values is values and result.indices is indices
    same(values, [2.0])
    same(indices, [1])
