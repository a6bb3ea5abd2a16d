"""``fake_quantize_per_tensor_affine`` with its scale and zero point in tensors (PyTorch's tensor_qparams form)
takes a zero point outside [quant_min, quant_max] as it is, as PyTorch's: only the number form refuses it
(chainrule refused both)."""

import numpy as np
import pytest


def test_tensor_zero_point_outside_the_range_is_taken_as_it_is(T):
    x = T.tensor([0.33, -1.0, 5.0], requires_grad=True)
    y = T.fake_quantize_per_tensor_affine(x, T.tensor(0.05), T.tensor(-2, dtype=T.int32), 0, 255)
    y.sum().backward()
    # round(x/0.05) - 2 = 5, -22 (clamped to 0), 98: dequantized (q + 2)·0.05; the clamped entry passes no gradient
    np.testing.assert_allclose(y.detach().numpy(), [0.35, 0.1, 5.0], rtol=1e-6)
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 0.0, 1.0])
    above = T.fake_quantize_per_tensor_affine(x, T.tensor(0.05), T.tensor(300, dtype=T.int32), 0, 255)
    np.testing.assert_allclose(above.detach().numpy(), [-2.25] * 3, rtol=1e-6)  # (255 - 300)·0.05 everywhere


def test_number_zero_point_outside_the_range_is_refused(T):
    with pytest.raises(RuntimeError, match="`zero_point` must be between `quant_min` and `quant_max`"):
        T.fake_quantize_per_tensor_affine(T.tensor([0.33]), 0.05, -2, 0, 255)
