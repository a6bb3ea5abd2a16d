"""The rest of PyTorch's test/test_torch.py (TestTorch and TestTorchDeviceType on CPU) not ported in the other
tests/test_ported_torch_*.py files: dtype properties, integer division and rounding modes, shifts and bitwise
ops, NaN handling of the reductions, histc/bincount/searchsorted, the scatter and index reductions, in-place
casting errors, type promotion with numbers, and the printed form of tensors (where the dtype suffix breaks
onto a new line).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`), against
literal or NumPy-computed expectations.
"""

import math

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, xfail_on_chainrule

nan, inf = math.nan, math.inf


# ------------------------------------------------------------------------------------------------ dtypes


def test_element_size(T):
    """test_element_size."""
    sizes = [T.empty(0, dtype=d).element_size() for d in (T.int8, T.int16, T.float16, T.float32, T.complex128,
                                                            T.bool)]
    assert sizes == [1, 2, 2, 4, 16, 1]
    assert [T.tensor([1.], dtype=d).is_floating_point() for d in (T.uint8, T.float16, T.complex64)] == [
        False, True, False]


def test_dtype_properties(T):
    """test_dtype_is_signed, test_is_floating_point: the properties of a dtype itself."""
    assert [d.is_signed for d in (T.uint8, T.int8, T.float32, T.bool, T.complex64)] == [False, True, True, False,
                                                                                          True]
    assert [d.is_floating_point for d in (T.uint8, T.float16, T.float64, T.complex64)] == [False, True, True, False]
    assert [d.is_complex for d in (T.uint8, T.float16, T.complex64)] == [False, False, True]


def test_type_conversion_names(T):
    """test_type_conversion_via_dtype_name and Tensor.type()."""
    x = T.tensor([1])
    assert [dtype_name(f()) for f in (x.byte, x.bool, x.char, x.short, x.int, x.long, x.half, x.float, x.double)] == [
        "uint8", "bool", "int8", "int16", "int32", "int64", "float16", "float32", "float64"]
    assert T.zeros(2).type() == "torch.FloatTensor" and T.zeros(2, dtype=T.int64).type() == "torch.LongTensor"
    assert dtype_name(T.zeros(2).type("torch.DoubleTensor")) == "float64"
    same(T.tensor([1.5]).type_as(T.tensor([1])), [1], "int64")


def test_number_promotion(T):
    """test_result_type and the promotion of a Python number with a tensor: the tensor's category decides."""
    assert dtype_name(T.tensor([1], dtype=T.int8) + 1000) == "int8"
    assert dtype_name(T.tensor([1], dtype=T.uint8) + 1.5) == "float32"
    assert dtype_name(T.tensor([1.], dtype=T.float16) + T.tensor(1., dtype=T.float64)) == "float16"
    assert dtype_name(T.tensor([1], dtype=T.int32) + T.tensor(1.)) == "float32"
    assert dtype_name(T.result_type(T.tensor([1], dtype=T.int32), 1.0)) == "float32"
    assert dtype_name(T.promote_types(T.uint8, T.int8)) == "int16"
    assert not T.can_cast(T.float32, T.int32) and T.can_cast(T.int32, T.float32)
    same(T.tensor([100], dtype=T.int8) + 100, [-56], "int8")  # wraps as C does
    same(T.tensor([1], dtype=T.uint8) - 2, [255], "uint8")


def test_inplace_cannot_change_category(T):
    """An in-place op whose result type is a wider category than the tensor's raises."""
    raises(RuntimeError, "result type Float can't be cast to the desired output type Long",
           T.zeros(2, dtype=T.int64).add_, 1.5)
    raises(RuntimeError, "result type Float can't be cast", T.zeros(2, dtype=T.int64).div_, 2)
    raises(RuntimeError, "result type Long can't be cast to the desired output type Bool",
           T.zeros(2, dtype=T.bool).add_, 1)
    same(T.zeros(2).add_(T.tensor([1, 2])), [1., 2.], "float32")
    raises(RuntimeError, "", T.zeros(2).add_, T.zeros(2, 2))  # in-place cannot broadcast the output


def test_bool_arithmetic_errors(T):
    """test_neg and test_sub_typing: `-` on bool tensors is refused with a hint."""
    raises(RuntimeError, r"Negation, the `-` operator, on a bool tensor is not supported", lambda: -T.tensor([True]))
    raises(RuntimeError, r"Subtraction, the `-` operator, with two bool tensors is not supported",
           lambda: T.tensor([True]) - T.tensor([False]))
    same(T.tensor([True]) * T.tensor([True]), [True], "bool")
    same(T.tensor([True]) + T.tensor([True]), [True], "bool")
    same(T.tensor([True, True]).sum(), 2, "int64")
    same(T.tensor([True, True]).cumsum(0), [1, 2], "int64")


# ------------------------------------------------------------------------------ division, powers, bits


def test_integer_division_and_rounding_modes(T):
    """test_div_rounding_modes, test_floor_divide, test_remainder_fmod: floor rounds down, trunc toward zero;
    `/` of integers is true division; remainder takes the divisor's sign, fmod the dividend's."""
    same(T.tensor([-7, 7]) // 2, [-4, 3], "int64")
    same(T.tensor([-7., 7.]) // 2, [-4., 3.], "float32")
    same(T.tensor([7, 8]) / 2, [3.5, 4.], "float32")
    same(T.div(T.tensor([-7, 7]), 2, rounding_mode="trunc"), [-3, 3], "int64")
    same(T.fmod(T.tensor([-3., 3.]), 2), [-1., 1.])
    same(T.remainder(T.tensor([-3., 3.]), -2), [-1., -1.])
    same(7 % T.tensor([-2]), [-1])
    raises(RuntimeError, "ZeroDivisionError", lambda: T.tensor([1]) // 0)
    raises(RuntimeError, "ZeroDivisionError", lambda: T.tensor([1]) % 0)
    same(T.true_divide(T.tensor([1]), T.tensor([2])), [0.5], "float32")


def test_integer_powers(T):
    """test_pow: integers to negative integer powers are refused; 0**0 is 1; int powers wrap."""
    raises(RuntimeError, "Integers to negative integer powers are not allowed", lambda: T.tensor([2, 3]) ** -1)
    raises(RuntimeError, "Integers to negative integer powers are not allowed", T.tensor([2]).pow, -2)
    same(T.tensor([2, 3]).pow(T.tensor([-1, 2])), [0, 9])  # a tensor of exponents is not checked: 2**-1 is 0
    same(T.tensor([0]) ** 0, [1], "int64")
    same(T.tensor([0.]) ** T.tensor([0.]), [1.])
    same(2 ** T.tensor([1, 2]), [2, 4], "int64")
    same(T.tensor([3]) ** 40, [np.int64(3) ** 40])  # wraps in int64, as NumPy's
    same(T.float_power(T.tensor([2]), 2), [4.], "float64")


def test_shifts_and_bitwise(T):
    """test_bitwise_not, test_lshift/rshift, test_bitwise_*: shifts past the width give 0 (or -1)."""
    same(T.tensor([1, 2]) << 2, [4, 8])
    same(T.tensor([-8]) >> 1, [-4])
    same(T.tensor([1]) << 64, [0])
    same(T.tensor([-1]) >> 70, [-1])
    same(T.bitwise_left_shift(T.tensor([1], dtype=T.int8), 7), [-128], "int8")
    same(~T.tensor([True, False]), [False, True])
    same(T.tensor([True, False]) ^ T.tensor([True, True]), [False, True])
    raises(TypeError, "only implemented on integer and Boolean-type tensors", lambda: ~T.tensor([1.0]))
    raises(RuntimeError, "", lambda: T.tensor([1.]) & T.tensor([1.]))
    same(T.logical_xor(T.tensor([1., 0.]), T.tensor([0, 0])), [True, False], "bool")


def test_sign_functions(T):
    """test_sign, test_signbit, test_sgn, test_heaviside, test_copysign."""
    same(T.sign(T.tensor([True, False])), [True, False], "bool")
    same(T.signbit(T.tensor([-0.0, 0.0, -1.0])), [True, False, True])
    same(T.heaviside(T.tensor([-1., 0., 2.]), T.tensor([0.5])), [0., 0.5, 1.])
    raises(RuntimeError, "heaviside is not yet implemented for tensors with different dtypes",
           T.heaviside, T.tensor([-1., 0.]), T.tensor([1]))
    same(T.copysign(T.tensor([1, -2]), T.tensor([-0., 1.])), [-1., 2.], "float32")
    close(T.sgn(T.tensor([3 + 4j, 0j])), [0.6 + 0.8j, 0j])


# ------------------------------------------------------------------------------------------- reductions


def test_cummax_cummin_propagate_nan(T):
    """test_cummax_cummin: a NaN is the running max from where it appears, and its index is kept."""
    values, indices = T.cummax(T.tensor([1., 3., 2., 3., nan, 0.]), 0)
    same(values, [1., 3., 3., 3., nan, nan])
    same(indices, [0, 1, 1, 3, 4, 4])
    values, indices = T.cummin(T.tensor([3, 1, 2, 1]), 0)
    same(values, [3, 1, 1, 1])
    same(indices, [0, 1, 1, 3])
    close(T.logcumsumexp(T.tensor([0., 1., -inf]), 0), [0., math.log(1 + math.e), math.log(1 + math.e)])


def test_histc_and_bincount(T):
    """test_histc, test_bincount: histc counts into equal bins of [min, max] (the last one closed); bincount
    refuses negatives."""
    same(T.histc(T.tensor([1., 2, 1, 4]), bins=4, min=0, max=3), [0., 2., 1., 0.])  # 4 is outside: not counted
    same(T.histc(T.tensor([2., 2.]), bins=4), [0., 0., 2., 0.])  # min == max: the range widens by 1 each side
    same(T.bincount(T.tensor([0, 1, 1, 3])), [1, 2, 0, 1], "int64")
    same(T.bincount(T.tensor([0, 1, 1, 3]), minlength=6), [1, 2, 0, 1, 0, 0])
    same(T.bincount(T.tensor([0, 1, 1]), weights=T.tensor([0.5, 1., 2.])), [0.5, 3.], "float32")
    raises(RuntimeError, "", T.bincount, T.tensor([-1]))


def test_searchsorted_and_bucketize(T):
    """test_searchsorted, test_bucketize: left and right boundaries, int32 output."""
    boundaries = T.tensor([1, 3, 5, 7])
    same(T.searchsorted(boundaries, T.tensor([3, 6, 9])), [1, 3, 4], "int64")
    same(T.searchsorted(boundaries, T.tensor([3, 6, 9]), right=True), [2, 3, 4])
    assert dtype_name(T.searchsorted(boundaries, T.tensor([3]), out_int32=True)) == "int32"
    same(T.bucketize(T.tensor([3, 6, 9]), boundaries), [1, 3, 4])
    same(T.bucketize(3, boundaries), 1)


def test_order_statistics(T):
    """test_topk, test_kthvalue, test_mode, test_median: lower median of an even count, NaN skipped by nanmedian."""
    values, indices = T.topk(T.tensor([1., 5., 3.]), 2, largest=False)
    same(values, [1., 3.])
    same(indices, [0, 2])
    values, indices = T.kthvalue(T.tensor([[3., 1., 2.], [9., 8., 7.]]), 2, 1)
    same(values, [2., 8.])
    same(indices, [2, 1])
    raises(RuntimeError, "", T.kthvalue, T.tensor([3., 1.]), 3)
    same(T.median(T.tensor([1., 4., 2., 3.])), 2.)
    same(T.nanmedian(T.tensor([1., nan, 2., 3.])), 2.)
    values, indices = T.tensor([1., nan, 3.]).max(0)
    same(values, nan)
    same(indices, 1)


def test_empty_reductions(T):
    """test_reduction_empty: sum/prod of nothing are 0/1, mean is NaN, max raises."""
    same(T.zeros(0).sum(), 0.)
    same(T.zeros(0).prod(), 1.)
    same(T.zeros(0).mean(), nan)
    same(T.zeros(0, 2).mean(0), [nan, nan])
    same(T.zeros(0).all(), True)
    same(T.zeros(0).any(), False)
    raises(RuntimeError, "", T.zeros(0).max)
    raises(IndexError, "", T.zeros(0, 3).max, 0)


def test_integer_reductions(T):
    """Integer sums and products accumulate in int64; mean and std of integers are refused."""
    same(T.tensor([1, 2], dtype=T.int32).cumsum(0), [1, 3], "int64")
    same(T.tensor([200, 200], dtype=T.uint8).sum(), 400, "int64")
    same(T.tensor([1, 2], dtype=T.int8).sum(dtype=T.float64), 3., "float64")
    same(T.tensor([True, False]).prod(), 0, "int64")
    same(T.tensor([1, 2]).mean(dtype=T.float32), 1.5, "float32")
    raises(RuntimeError, "mean\\(\\): could not infer output dtype", T.tensor([1, 2]).mean)
    raises(RuntimeError, "", T.tensor([1, 2]).std)
    raises(RuntimeError, "", T.tensor([0, 1]).quantile, 0.5)


# ------------------------------------------------------------------------- scatter, index and friends


def test_scatter_and_index_reductions(T):
    """test_scatter_reduce_*, test_index_reduce, test_put_, test_take."""
    index = T.tensor([0, 0, 2])
    source = T.tensor([2., 3., 4.])
    same(T.zeros(3).scatter_reduce(0, index, source, "amax", include_self=False), [3., 0., 4.])
    same(T.ones(3).scatter_reduce(0, index, source, "mean"), [2., 1., 2.5])
    same(T.ones(3).index_reduce(0, index, source, "prod"), [6., 1., 4.])
    same(T.ones(3).index_reduce(0, index, source, "mean", include_self=False), [2.5, 1., 4.])
    same(T.zeros(3).index_add(0, index, source, alpha=2), [10., 0., 8.])
    same(T.zeros(3).index_put_((index,), source, accumulate=True), [5., 0., 4.])
    a = T.zeros(2, 2, dtype=T.int64)
    a.put_(T.tensor([0, 0]), T.tensor([9, 8]), accumulate=True)
    same(a, [[17, 0], [0, 0]])
    same(T.take(T.tensor([[1, 2], [3, 4]]), T.tensor([0, 3, -1])), [1, 4, 4])
    raises(IndexError, "", T.take, T.tensor([[1, 2], [3, 4]]), T.tensor([4]))
    raises(IndexError, r"Number of indices \(1\) should be equal to source.size\(dim\) \(2\)",
           T.zeros(3).index_copy_, 0, T.tensor([0]), T.tensor([1., 2.]))


def test_masked_select_broadcasts(T):
    """test_masked_select: the mask broadcasts against the tensor."""
    same(T.masked_select(T.tensor([[1, 2], [3, 4]]), T.tensor([True, False])), [1, 3])
    same(T.zeros(2, 2).masked_fill(T.tensor([True, False]), 5), [[5., 0.], [5., 0.]])


def test_unfold_renorm_dist(T):
    """test_unfold, test_renorm, test_dist."""
    same(T.arange(7.).unfold(0, 3, 2), [[0., 1., 2.], [2., 3., 4.], [4., 5., 6.]])
    assert tuple(T.arange(12.).view(3, 4).unfold(1, 2, 1).shape) == (3, 3, 2)
    # rows of norm above 2 are scaled to norm 2 (times 1 / (1 + 1e-7)), the others kept
    close(T.renorm(T.tensor([[3., 4.], [1., 0.]]), 2, 0, 2), [[1.2, 1.6], [1., 0.]])
    close(T.dist(T.tensor([1., 2.]), T.tensor([4., 6.])), 5.)
    close(T.dist(T.tensor([1., 2.]), T.tensor([4., 6.]), inf), 4.)
    close(T.dist(T.tensor([1., 2.]), T.tensor([4., 6.]), 0), 2.)


def test_nan_to_num(T):
    """test_nan_to_num: NaN to 0, infinities to the dtype's extremes unless given."""
    big = np.finfo(np.float32).max
    same(T.nan_to_num(T.tensor([nan, inf, -inf, 1.])), np.array([0., big, -big, 1.], np.float32))
    same(T.nan_to_num(T.tensor([nan, inf, -inf, 1.]), nan=1.0, posinf=2.0), np.array([1., 2., -big, 1.], np.float32))
    same(T.nan_to_num(T.tensor([1, 2])), [1, 2], "int64")


def test_clamp_rules(T):
    """test_clamp: min above max gives max; NaN passes through; integers clamped by floats become floats."""
    same(T.clamp(T.tensor([1., 5.]), 4, 2), [2., 2.])
    same(T.clamp(T.tensor([nan]), 0, 1), [nan])
    same(T.clamp(T.tensor([1, 5]), 1.5, 3.5), [1.5, 3.5], "float32")
    same(T.clamp(T.tensor([1, 5]), max=3), [1, 3], "int64")
    same(T.clamp(T.tensor([1., 5.]), min=T.tensor([2., 0.])), [2., 5.])
    raises(RuntimeError, "At least one of 'min' or 'max' must not be None", T.clamp, T.tensor([1.]))


# -------------------------------------------------------------------------------------------- printing


@pytest.fixture
def printoptions(T):
    yield T.set_printoptions
    T.set_printoptions(profile="default")
    T.set_printoptions(sci_mode=None)


def test_print_dtype_suffix_breaks_where_pytorch_breaks(T, printoptions):
    """test_print: the ``dtype=`` suffix goes onto a new line where PyTorch's (``dtype=torch.float64``) would
    pass the line width, although ours (``dtype=float64``) is shorter."""
    text = repr(T.tensor([1, 2, 3, 4], dtype=T.float64) * 1e300).replace("torch.", "")
    assert text == "tensor([1.0000e+300, 2.0000e+300, 3.0000e+300, 4.0000e+300],\n       dtype=float64)"
    text = repr(T.tensor([1.0, 0.5j], dtype=T.complex128) * 1e5).replace("torch.", "")
    assert text == "tensor([100000.+0.j,      0.+50000.j], dtype=complex128)"
    printoptions(sci_mode=True)
    text = repr(T.tensor([1.0, 0.5j], dtype=T.complex128)).replace("torch.", "")
    assert text == "tensor([1.0000e+00+0.0000e+00j, 0.0000e+00+5.0000e-01j],\n       dtype=complex128)"
    printoptions(linewidth=30)
    assert repr(T.tensor([1, 2], dtype=T.int8)).replace("torch.", "") == "tensor([1, 2],\n       dtype=int8)"


def test_print_formats(T, printoptions):
    """test_print: fixed point where it fits, scientific where the range is wide, integers padded."""
    assert repr(T.tensor([1e8, 1.])) == "tensor([1.0000e+08, 1.0000e+00])"
    assert repr(T.tensor([123456., 1.5])) == "tensor([1.2346e+05, 1.5000e+00])"
    assert repr(T.tensor([1000., 1.5])) == "tensor([1000.0000,    1.5000])"  # max/min under 1000: fixed
    assert repr(T.tensor([1, -10, 100])) == "tensor([  1, -10, 100])"
    assert repr(T.tensor([nan, inf, -inf, 1.5])) == "tensor([   nan,    inf,   -inf, 1.5000])"
    assert repr(T.tensor(-0.)) == "tensor(-0.)"
    assert repr(T.zeros(0, 3)) == "tensor([], size=(0, 3))"
    printoptions(precision=2)
    assert repr(T.tensor([1.23456])) == "tensor([1.23])"
    printoptions(profile="default")
    printoptions(sci_mode=True)
    assert repr(T.tensor([1.5, 2.])) == "tensor([1.5000e+00, 2.0000e+00])"


# ------------------------------------------------------------------------------- writes, casts and out=


def test_writes_cast_into_the_tensor_dtype(T):
    """test_copy_*, test_fill_*, test_setitem_*: a number or tensor written into an integer tensor truncates toward
    zero; a complex number into a real tensor is refused; nonzero floats are True."""
    same(T.zeros(2, dtype=T.int64).copy_(T.tensor([1.7, -1.7])), [1, -1], "int64")
    a = T.zeros(2, dtype=T.int64)
    a[0] = 2.7
    same(a, [2, 0])
    a[1] = T.tensor(-2.7)
    same(a, [2, -2])
    raises(RuntimeError, "value cannot be converted to type float", a.float().__setitem__, 0, 1j)
    same(T.zeros(2, dtype=T.int64).fill_(2.7), [2, 2])
    same(T.zeros(2, dtype=T.bool).fill_(2), [True, True])
    same(T.zeros(2, dtype=T.int64).masked_fill(T.tensor([True, False]), 2.7), [2, 0])
    same(T.zeros(2, dtype=T.int64).index_fill(0, T.tensor([0]), 2.7), [2, 0])
    same(T.tensor([2.7, -2.7], dtype=T.int64), [2, -2])
    same(T.full((2,), 2.7, dtype=T.int64), [2, 2])
    same(T.tensor([0.1, 0., nan]).bool(), [True, False, True])
    same(T.tensor([0.5, 0.], dtype=T.bool), [True, False])
    same(T.tensor([65520]).half(), [inf], "float16")
    raises(RuntimeError, "value cannot be converted to type uint8 without overflow", T.tensor, [300, -1],
           dtype=T.uint8)


def test_writes_refuse_overlapping_memory(T):
    """test_memory_overlap: a write into an expanded tensor, or from memory it partly overlaps, is refused."""
    raises(RuntimeError, "more than one element of the written-to tensor refers to a single memory location",
           T.zeros(1).expand(3).add_, 1)
    a = T.arange(4.)
    raises(RuntimeError, "some elements of the input tensor and the written-to tensor refer to a single memory",
           a[1:].copy_, a[:-1])


def test_out_overlapping_an_input(T, request):
    """test_binary_op_mem_overlap: out= that partly overlaps an input is refused."""
    xfail_on_chainrule(T, request, "out= is written after the op, without the inputs: write_out cannot check their "
                                   "memory against out's")
    a = T.arange(3.)
    raises(RuntimeError, "some elements of the input tensor and the written-to tensor refer to a single memory",
           T.add, a[:2], a[1:], out=a[1:])


def test_out_argument(T):
    """test_out_*: out= takes any dtype the result casts to, resizes an empty out, fills (values, indices) pairs,
    and refuses inputs that require grad."""
    out = T.zeros(0)
    assert T.add(T.ones(3), 1, out=out) is out
    same(out, [2., 2., 2.], "float32")
    same(T.add(T.ones(3, dtype=T.int64), 1, out=T.zeros(3)), [2., 2., 2.], "float32")
    raises(RuntimeError, "result type Float can't be cast to the desired output type Long", T.add, T.ones(3), 1,
           out=T.zeros(3, dtype=T.int64))
    same(T.sum(T.ones(3), 0, out=T.zeros((), dtype=T.float64)), 3., "float64")
    values, indices = T.zeros(1), T.zeros(1, dtype=T.int64)
    T.max(T.tensor([[1., 3.]]), 1, out=(values, indices))
    same(values, [3.])
    same(indices, [1])
    raises(RuntimeError, "functions with out=... arguments don't support automatic differentiation", T.add,
           T.ones(2, requires_grad=True), 1, out=T.zeros(2))


# ---------------------------------------------------------------------------- gradients at the edges


def grad_of(T, fn, values):
    x = T.tensor(values, requires_grad=True)
    fn(x).backward()
    return x.grad


def test_subgradients_at_ties_and_zeros(T):
    """The gradients PyTorch picks where the derivative is not unique: max/amax of ties share evenly, max(dim)
    picks one, median the lower middle's, clamp's bounds pass, |x| at 0 is 0, norm at 0 is 0."""
    same(grad_of(T, lambda x: x.max(), [1., 3., 3.]), [0., 0.5, 0.5])
    same(grad_of(T, lambda x: x.amax(), [1., 3., 3.]), [0., 0.5, 0.5])
    same(grad_of(T, lambda x: x.max(0)[0], [1., 3., 3.]), [0., 1., 0.])
    same(grad_of(T, lambda x: x.median(), [1., 3., 2., 2.]), [0., 0., 0.5, 0.5])
    same(grad_of(T, lambda x: x.kthvalue(2)[0], [3., 1., 2.]), [0., 0., 1.])
    same(grad_of(T, lambda x: x.clamp(0, 1).sum(), [0., 1., 0.5, 2.]), [1., 1., 1., 0.])
    same(grad_of(T, lambda x: x.abs().sum(), [0., -1.]), [0., -1.])
    same(grad_of(T, lambda x: x.norm(), [0., 0.]), [0., 0.])
    same(grad_of(T, lambda x: T.dist(x, x.detach()), [1., 2.]), [0., 0.])
    same(grad_of(T, lambda x: T.atan2(x, x).sum(), [0.]), [0.])


def test_gradients_through_zeros_and_nans(T):
    """cumprod and prod through zeros, sqrt at 0, where's NaN leaking from the branch not taken, xlogy at 0,
    std of one element, nan_to_num."""
    same(grad_of(T, lambda x: x.cumprod(0).sum(), [2., 0., 3.]), [1., 8., 0.])
    same(grad_of(T, lambda x: x.prod(), [0., 0., 3.]), [0., 0., 0.])
    same(grad_of(T, lambda x: x.prod(1).sum(), [[0., 2., 3.]]), [[6., 0., 0.]])
    same(grad_of(T, lambda x: x.sqrt().sum(), [0., 4.]), [inf, 0.25])
    same(grad_of(T, lambda x: T.pow(0., x).sum(), [0., 2.]), [0., 0.])
    same(grad_of(T, lambda x: T.where(x > 0, x.sqrt(), T.zeros(2)).sum(), [-1., 4.]), [nan, 0.25])
    same(grad_of(T, lambda x: T.xlogy(x, x).sum(), [0., 1.]), [nan, 1.])
    same(grad_of(T, lambda x: x.std(), [1.]), [nan])
    same(grad_of(T, lambda x: x.logsumexp(0), [-inf, -inf]), [nan, nan])
    same(grad_of(T, lambda x: x.nan_to_num().sum(), [nan, 1.]), [0., 1.])


def test_gradients_of_indexing_writes(T):
    """index_put with accumulate, scatter_reduce amax (ties shared with self), masked_scatter, take with repeats,
    fmod and remainder."""
    a, v = T.zeros(2, requires_grad=True), T.ones(2, requires_grad=True)
    a.index_put((T.tensor([0, 0]),), v, accumulate=True).sum().backward()
    same(a.grad, [1., 1.])
    same(v.grad, [1., 1.])
    a, v = T.tensor([1., 0.], requires_grad=True), T.tensor([1., 0.5], requires_grad=True)
    a.scatter_reduce(0, T.tensor([0, 0]), v, "amax").sum().backward()
    same(a.grad, [0.5, 1.])
    same(v.grad, [0.5, 0.])
    a, v = T.zeros(2, requires_grad=True), T.ones(3, requires_grad=True)
    a.masked_scatter(T.tensor([True, False]), v).sum().backward()
    same(a.grad, [0., 1.])
    same(v.grad, [1., 0., 0.])
    same(grad_of(T, lambda x: x.take(T.tensor([1, 1])).sum(), [0., 0.]), [0., 2.])
    a, b = T.tensor([-5.], requires_grad=True), T.tensor([3.], requires_grad=True)
    T.remainder(a, b).sum().backward()
    same(a.grad, [1.])
    same(b.grad, [2.])  # -floor(-5 / 3)
    a, b = T.tensor([5.], requires_grad=True), T.tensor([3.], requires_grad=True)
    T.fmod(a, b).sum().backward()
    same(b.grad, [-1.])  # -trunc(5 / 3)


# ------------------------------------------------------------------------------------------- creation


@pytest.mark.parametrize("data, name", [(None, "NoneType"), ([1, None], "NoneType"), ([[1], [None]], "NoneType"),
                                        ({1: 2}, "dict"), ([object()], "object")])
def test_tensor_of_values_without_a_dtype(T, data, name):
    """test_tensor_factory_type_inference: values of no dtype are refused with PyTorch's RuntimeError (a string
    stays a TypeError)."""
    raises(RuntimeError, f"Could not infer dtype of {name}", T.tensor, data)


def test_tensor_type_inference(T):
    """test_tensor_factory_type_inference: NumPy scalars keep their dtype, bools with ints are int64, 0-d tensors
    in a list are read as numbers."""
    assert dtype_name(T.tensor(np.float64(1.5))) == "float64" and dtype_name(T.tensor(np.int32(1))) == "int32"
    assert dtype_name(T.tensor([np.float32(1.), 2.])) == "float32"
    assert dtype_name(T.tensor([True, 2])) == "int64" and dtype_name(T.tensor([True, 2.])) == "float32"
    assert dtype_name(T.tensor([1, 1j])) == "complex64"
    same(T.tensor([T.tensor(1), 2.5]), [1., 2.5], "float32")
    assert tuple(T.tensor([[], []]).shape) == (2, 0)
    raises(TypeError, "", T.tensor, "a")
    raises(ValueError, "", T.tensor, [[1, 2], [3]])
