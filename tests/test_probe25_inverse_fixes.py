# ruff: noqa: B023  (each lambda is called at once, inside its loop turn)
"""Focused tests of probe25_inverse's library fixes: torch.diff's prepend/append (tensors of the input's rank only),
the one-dim torch.fft transforms' int n and dim, and the dtype check between a complex output and its grad_output,
each against PyTorch where installed and against NumPy or literals always."""

import numpy as np
import pytest

import autograd

from .pytorch_programs import pytorch


def both():
    """chainrule, and PyTorch where installed."""
    torch_modules = pytorch()
    return [autograd] + ([] if torch_modules is None else [torch_modules.torch])


def raised(call):
    try:
        call()
    except Exception as error:  # noqa: BLE001  (the class and words are what is compared)
        return type(error), str(error)
    return None


def test_diff_refuses_a_0d_or_python_number_prepend():
    for T in both():
        x = T.arange(5.0)
        assert raised(lambda: T.diff(x, prepend=T.tensor(0.0))) == (
            RuntimeError, "diff expects prepend or append to be the same dimension as input")
        assert raised(lambda: T.diff(x, append=2.0)) == (
            TypeError, "diff(): argument 'append' must be Tensor, not float")
        assert raised(lambda: T.diff(x, prepend=[0.0])) == (
            TypeError, "diff(): argument 'prepend' must be Tensor, not list")
        y = T.diff(x, prepend=T.tensor([0.0]), append=T.tensor([9.0]))
        np.testing.assert_array_equal(y.numpy(), np.diff(np.arange(5.0), prepend=0.0, append=9.0))


@pytest.mark.parametrize("op", ["fft", "ifft", "rfft", "irfft", "hfft", "ihfft"])
def test_one_dim_fft_takes_int_n_and_dim(op):
    for T in both():
        x = T.ones(3, 4)
        transform = getattr(T.fft, op)
        assert raised(lambda: transform(x, dim=(0,))) == (
            TypeError, f"fft_{op}(): argument 'dim' must be int, not tuple")
        assert raised(lambda: transform(x, n=(3,))) == (TypeError, f"fft_{op}(): argument 'n' must be int, not tuple")
        assert raised(lambda: transform(x, dim=1.0)) == (
            TypeError, f"fft_{op}(): argument 'dim' must be int, not float")
        for n in (-1, 0):
            assert raised(lambda: transform(x, n=n)) == (RuntimeError, f"Invalid number of data points ({n}) specified")
        assert tuple(transform(x, n=np.int64(2), dim=0).shape)[1] == 4  # a NumPy integer is an int


def test_fft_along_a_dim_still_matches_numpy():
    x = np.arange(12.0).reshape(3, 4)
    np.testing.assert_allclose(autograd.fft.fft(autograd.tensor(x), n=5, dim=0).numpy(), np.fft.fft(x, n=5, axis=0))


def test_complex_output_needs_a_complex_grad_output():
    for T in both():
        z = T.tensor([1 + 2j], requires_grad=True)
        assert raised(lambda: T.autograd.grad(z.abs().sum(), z, grad_outputs=T.tensor(1j))) == (
            RuntimeError, "For complex Tensors, both grad_output and output are required to have the same dtype. "
            "Mismatch in dtype: grad_output[0] has a dtype of torch.complex64 and output[0] has a dtype of "
            "torch.float32.")
        w = T.tensor([1.0, 2.0], requires_grad=True)
        assert raised(lambda: (w * 2).backward(T.ones(2, dtype=T.complex64))) == (
            RuntimeError, "For complex Tensors, both grad_output and output are required to have the same dtype. "
            "Mismatch in dtype: grad_output[0] has a dtype of torch.complex64 and output[0] has a dtype of "
            "torch.float32.")
        (w * 2).backward(T.ones(2, dtype=T.float64))  # a real grad_output of another width is cast, as before
        np.testing.assert_array_equal(w.grad.numpy(), [2.0, 2.0])
        assert str(w.grad.dtype).endswith("float32")
        c = T.tensor([3j], requires_grad=True)
        c.abs().backward(T.ones(1))
        np.testing.assert_allclose(c.grad.numpy(), [1j])  # z/|z|


def test_norm_dtype_keeps_real_and_complex_apart():
    for T in both():
        assert raised(lambda: T.linalg.vector_norm(T.tensor([1.0, 2.0]), dtype=T.complex128)) == (
            RuntimeError, "linalg.vector_norm: dtype should be real for real inputs, but got ComplexDouble")
        # (the norm of 3+4j in float64 was 3: its real part's, the imaginary part cast away)
        assert raised(lambda: T.linalg.vector_norm(T.tensor([3 + 4j]), dtype=T.float64)) == (
            RuntimeError, "linalg.vector_norm: dtype should be complex for complex inputs, but got Double")
        assert raised(lambda: T.linalg.matrix_norm(T.tensor([[1.0, 2.0]]), dtype=T.complex64)) == (
            RuntimeError, "linalg.matrix_norm: dtype should be real for real inputs, but got ComplexFloat")
        assert raised(lambda: T.linalg.vector_norm(T.tensor([1, 2]), dtype=T.float32)) == (
            RuntimeError, "linalg.vector_norm: Expected a floating point or complex tensor as input. Got Long")
        norm = T.linalg.vector_norm(T.tensor([3 + 4j]), dtype=T.complex128)
        assert str(norm.dtype).endswith("float64") and norm.item() == 5.0


def test_fftn_takes_one_int_s():
    x = np.arange(6.0).reshape(2, 3)
    for T in both():
        np.testing.assert_allclose(T.fft.fftn(T.tensor(x), s=3, dim=0).numpy(), np.fft.fft(x, n=3, axis=0),
                                   rtol=1e-6, atol=1e-6)
        assert tuple(T.fft.rfftn(T.tensor(x), s=3).shape) == (2, 2)


def test_normal_of_a_complex_mean():
    """normal(mean, std) of a complex mean: a complex draw, each part N(0, std²/2), plus the mean (it was real)."""
    for T in both():
        T.manual_seed(0)
        z = T.normal(T.ones(3, dtype=T.complex64) * 1j, T.tensor([1.0, 2.0, 3.0]))
        assert str(z.dtype).endswith("complex64")
        np.testing.assert_allclose(z.numpy(), [1.0896488 + 0.79251444j, -3.0812736 + 1.8038832j,
                                               -2.3006194 - 1.9668689j], rtol=1e-5)
        T.manual_seed(0)
        parts = T.randn(3, dtype=T.complex64)  # the same draws, std 1
        np.testing.assert_allclose(z.numpy(), parts.numpy() * [1, 2, 3] + 1j, rtol=1e-5)
        assert raised(lambda: T.normal(0.0, T.ones(3, dtype=T.complex64))) == (
            RuntimeError, "normal expects standard deviation to be non-complex")


def test_zero_norm_of_a_complex_tensor_is_real():
    """ord=0 counts the nonzero entries: in the real dtype of the values' moduli (it was complex64)."""
    for T in both():
        z = T.tensor([[1 + 1j, 0j, 2j]], dtype=T.complex128)
        for count in (T.linalg.vector_norm(z, ord=0), T.linalg.norm(z[0], ord=0), z.norm(p=0, dim=1)):
            assert str(count.dtype).endswith("float64")
            nonzero = np.count_nonzero(z.numpy(), axis=-1)
            np.testing.assert_array_equal(count.numpy(), nonzero if count.ndim else nonzero.sum())


def test_window_parameters_only_after_the_ones_before():
    """PyTorch's overloads of hamming_window and kaiser_window take (periodic, alpha, beta) as a prefix."""
    for T in both():
        for call in (lambda: T.hamming_window(6, alpha=0.5), lambda: T.hamming_window(6, True, beta=0.5),
                     lambda: T.kaiser_window(5, beta=8.0)):
            assert raised(call)[0] is TypeError
        n = np.arange(6)
        np.testing.assert_allclose(T.hamming_window(6, False, 0.5, beta=0.4).numpy(),
                                   0.5 - 0.4 * np.cos(2 * np.pi * n / 5), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(T.kaiser_window(5, periodic=False, beta=8.0).numpy(), np.kaiser(5, 8.0), rtol=1e-5)
        np.testing.assert_allclose(T.hamming_window(6).numpy(), np.hamming(7)[:6], rtol=1e-6, atol=1e-7)
