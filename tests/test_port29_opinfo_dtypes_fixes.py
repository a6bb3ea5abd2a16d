"""The fixes found by tests/test_opinfo_dtypes.py (PyTorch's OpInfo samples in the dtypes other than float64),
each checked without PyTorch: against literals (PyTorch 2.13's answers) or NumPy."""

import numpy as np
import pytest

import autograd
import nn.functional as F


def test_lstsq_of_complex_matrices_gives_real_residuals_and_singular_values():
    A = autograd.tensor(np.array([[1 + 1j, 2], [3, 4j], [1, 1]], np.complex64))
    for driver in ("gels", "gelsd"):
        solution, residuals, rank, singular_values = autograd.linalg.lstsq(A, A, driver=driver)
        assert solution.dtype == autograd.complex64
        assert residuals.dtype == singular_values.dtype == autograd.float32  # (were complex64)
    assert np.allclose(singular_values.numpy(), np.linalg.svd(A.numpy(), compute_uv=False), rtol=1e-5)


def test_unravel_index_of_int32_indices_computes_in_int64():
    rows, columns = autograd.unravel_index(autograd.tensor(np.array([3, 7], np.int32)), (4, 1073741824))
    assert rows.dtype == columns.dtype == autograd.int64
    assert rows.tolist() == [0, 0] and columns.tolist() == [3, 7]  # (raised OverflowError: 2**32 in int32)


def test_index_add_casts_alpha_to_an_integer_dtype_wrapping_around():
    base = autograd.tensor(np.array([5, 7], np.uint8))
    source = autograd.tensor(np.array([5, 3], np.uint8))
    out = autograd.index_add(base, 0, autograd.tensor([0, 0]), source, alpha=-1)  # alpha -1 is 255 in uint8
    assert out.dtype == autograd.uint8 and out.tolist() == [253, 7]  # 5 + 255 * 8 = 2045 = 253 mod 256
    scalar = autograd.tensor(np.array(5, np.uint8))
    assert autograd.index_add(scalar, 0, autograd.tensor([0]), scalar, alpha=-1).item() == 0


def test_softmin_negates_before_the_cast_to_dtype():
    x = np.array([[0, 200, 250], [3, 4, 5]], np.uint8)
    got = F.softmin(autograd.tensor(x), 0, dtype=autograd.float64)
    wrapped = (-x).astype(np.float64)  # (uint8: -0 is 0, -3 is 253)
    want = np.exp(wrapped - wrapped.max(0)) / np.exp(wrapped - wrapped.max(0)).sum(0)
    assert got.dtype == autograd.float64 and np.allclose(got.numpy(), want)
    assert np.isclose(got.numpy()[0, 0], 1.3289e-110, rtol=1e-4)  # PyTorch's; the unwrapped -x gave 0.95
    with pytest.raises(RuntimeError, match="Negation"):
        F.softmin(autograd.tensor([True, False]), 0, dtype=autograd.float64)


def test_bilinear_keeps_an_integer_dtype():
    x = np.arange(6, dtype=np.int32).reshape(2, 3)
    weight = np.arange(18, dtype=np.int32).reshape(2, 3, 3)
    y = F.bilinear(autograd.tensor(x), autograd.tensor(x), autograd.tensor(weight))
    assert y.dtype == autograd.int32  # (was int64: the sum's promotion)
    assert np.array_equal(y.numpy(), np.einsum("bi,kij,bj->bk", x, weight, x))


def test_conv3d_and_int64_conv_transpose3d_of_integers():
    x = np.arange(2 * 4 * 4 * 4).reshape(1, 2, 4, 4, 4) % 7
    w = np.arange(2 * 3 * 3 * 3).reshape(1, 2, 3, 3, 3) % 5
    for dtype in (np.int64, np.int32, np.uint8):
        y = F.conv3d(autograd.tensor(x.astype(dtype)), autograd.tensor(w.astype(dtype)))
        want = F.conv3d(autograd.tensor(x.astype(np.float64)), autograd.tensor(w.astype(np.float64)))
        assert y.dtype == autograd.tensor(x.astype(dtype)).dtype
        assert np.array_equal(y.numpy(), want.numpy().astype(np.int64).astype(dtype))
    wt = np.swapaxes(w, 0, 1)  # (in, out, ...)
    y = F.conv_transpose3d(autograd.tensor(x), autograd.tensor(wt))
    want = F.conv_transpose3d(autograd.tensor(x.astype(np.float64)), autograd.tensor(wt.astype(np.float64)))
    assert y.dtype == autograd.int64 and np.array_equal(y.numpy(), want.numpy().astype(np.int64))


@pytest.mark.parametrize("dtype", [np.int32, np.int16, np.int8, np.uint8])
def test_transposed_convolutions_refuse_integers_other_than_int64(dtype):
    with pytest.raises(NotImplementedError, match="slow_conv_transpose2d_out_cpu"):
        F.conv_transpose1d(autograd.tensor(np.ones((1, 1, 4), dtype)), autograd.tensor(np.ones((1, 1, 3), dtype)))
    with pytest.raises(NotImplementedError, match="slow_conv_transpose3d_out_cpu"):
        F.conv_transpose3d(autograd.tensor(np.ones((1, 1, 2, 2, 2), dtype)),
                           autograd.tensor(np.ones((1, 1, 2, 2, 2), dtype)))


def test_unfold_and_fold_still_refuse_integers():
    with pytest.raises(NotImplementedError, match="im2col_out_cpu"):
        F.unfold(autograd.ones(1, 1, 3, 3, dtype=autograd.int64), 2)
    with pytest.raises(NotImplementedError, match="col2im_out_cpu"):
        F.fold(autograd.ones(1, 4, 4, dtype=autograd.int64), (3, 3), 2)


def test_logaddexp_of_complex_keeps_the_larger_operands_imaginary_part():
    x = np.array([-4.8270 - 7.5824j, 3.0 + 0.5j], np.complex128)
    y = np.array([5.5761 - 8.3157j, -1.0 + 9.0j], np.complex128)
    got = autograd.logaddexp(autograd.tensor(x), autograd.tensor(y)).numpy()
    larger, smaller = np.where(x.real >= y.real, x, y), np.where(x.real >= y.real, y, x)
    want = larger + np.log1p(np.exp(smaller - larger))
    assert np.allclose(got, want)
    assert got[0].imag < -8  # (PyTorch's -8.3157...: the principal value, -2.03, was 2π off)
    assert np.allclose(np.exp(got), np.exp(x) + np.exp(y))


def test_clamp_of_bools_by_one_tensor_bound_is_taken():
    b = autograd.tensor([True, False])
    assert autograd.clamp(b, min=autograd.tensor([False, True])).tolist() == [True, True]
    assert autograd.clamp_max(b, autograd.tensor(False)).tolist() == [False, False]


def _ones(shape, dtype):
    return autograd.tensor(np.ones(shape, dtype))


REFUSED = {  # PyTorch's kernels have no loop for these dtypes (its NotImplementedError, or its RuntimeError)
    "addbmm of bools": lambda: autograd.addbmm(_ones((2, 2), bool), _ones((2, 2, 2), bool), _ones((2, 2, 2), bool)),
    "clamp of bools by two tensors": lambda: autograd.clamp(_ones(3, bool), _ones(3, bool), _ones(3, bool)),
    "native_layer_norm of complex": lambda: autograd.native_layer_norm(_ones((2, 3), np.complex64), [3], None, None,
                                                                       1e-5),
    "native_group_norm of complex": lambda: autograd.native_group_norm(_ones((1, 4, 3), np.complex64), None, None,
                                                                       1, 4, 3, 2, 1e-5),
    "binary_cross_entropy of integers": lambda: F.binary_cross_entropy(_ones(3, np.int64), _ones(3, np.int64)),
    "binary_cross_entropy of complex": lambda: F.binary_cross_entropy(_ones(3, np.complex64) * 0.5,
                                                                      _ones(3, np.complex64)),
    "binary_cross_entropy_with_logits of complex": lambda: F.binary_cross_entropy_with_logits(
        _ones(3, np.complex64), _ones(3, np.complex64)),
    "multi_margin_loss of float16": lambda: F.multi_margin_loss(_ones((2, 3), np.float16), autograd.tensor([0, 1])),
    "multi_margin_loss of int64": lambda: F.multi_margin_loss(_ones((2, 3), np.int64), autograd.tensor([0, 1])),
    "multilabel_margin_loss of complex": lambda: F.multilabel_margin_loss(
        _ones((2, 3), np.complex64), autograd.tensor([[0, 1, -1], [1, -1, 0]])),
    "linalg.vecdot of integers": lambda: autograd.linalg.vecdot(_ones(3, np.int32), _ones(3, np.int32)),
    "linalg.vander of float16": lambda: autograd.linalg.vander(_ones(3, np.float16)),
    "linalg.vander of bools": lambda: autograd.linalg.vander(_ones(3, bool)),
    "triu_indices as float32": lambda: autograd.triu_indices(3, 3, dtype=autograd.float32),
    "tril_indices as uint8": lambda: autograd.tril_indices(3, 3, dtype=autograd.uint8),
    "arange as complex64": lambda: autograd.arange(0, 3, dtype=autograd.complex64),
    "index_reduce of bools": lambda: _ones(3, bool).index_reduce(0, autograd.tensor([0, 1]), _ones(2, bool), "amax"),
    "index_reduce of complex": lambda: _ones(3, np.complex64).index_reduce(0, autograd.tensor([0, 1]),
                                                                          _ones(2, np.complex64), "prod"),
    "scatter_reduce mean of bools": lambda: _ones(3, bool).scatter_reduce(0, autograd.tensor([0, 1]), _ones(2, bool),
                                                                          "mean"),
    "gaussian_nll_loss of complex": lambda: F.gaussian_nll_loss(*(_ones(3, np.complex64),) * 3),
    "gaussian_nll_loss of integers": lambda: F.gaussian_nll_loss(*(_ones(3, np.int32),) * 3),
    "local_response_norm of int32": lambda: F.local_response_norm(_ones((1, 4, 3), np.int32), 2),
    "local_response_norm of complex": lambda: F.local_response_norm(_ones((1, 4, 3), np.complex64), 2),
    "avg_pool3d of float16": lambda: F.avg_pool3d(_ones((1, 1, 2, 2, 2), np.float16), 2),
    "histogramdd of float16": lambda: autograd.histogramdd(_ones((3, 2), np.float16), [2, 2]),
    "ldl_factor_ex of float16": lambda: autograd.linalg.ldl_factor_ex(autograd.tensor(np.eye(3, dtype=np.float16))),
}


@pytest.mark.parametrize("call", REFUSED.values(), ids=REFUSED.keys())
def test_refused_as_pytorch_refuses(call):
    with pytest.raises(RuntimeError):  # (NotImplementedError is a RuntimeError, as PyTorch's)
        call()


def test_what_stays_accepted_beside_the_refusals():
    assert autograd.triu_indices(3, 3, dtype=autograd.int32).dtype == autograd.int32
    assert autograd.vander(_ones(3, bool)).dtype == autograd.int64  # (torch.vander takes bools; linalg's not)
    assert F.local_response_norm(_ones((1, 4, 3), np.int64), 2).shape == (1, 4, 3)
    assert autograd.linalg.vecdot(_ones(3, np.complex64), _ones(3, np.complex64)).item() == 3
    assert F.avg_pool3d(_ones((1, 1, 2, 2, 2), np.float32), 2).item() == 1
    assert autograd.linspace(0, 1, 3, dtype=autograd.complex64).dtype == autograd.complex64
