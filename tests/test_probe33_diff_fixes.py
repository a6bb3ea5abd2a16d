"""Regressions found by session 33's differential probe (type promotion, clamp/lerp/addcmul/addcdiv with mixed
dtypes and complex numbers), each checked by value here and against PyTorch where it is installed.

- A Python int beside a complex tensor was made an int64 operand: NumPy then widened complex64 to complex128
  in lerp's kernel (``lerp(c64, c64, 2)`` was complex128; PyTorch's is complex64).
- ``clamp`` of a real tensor with a complex bound returned a complex tensor; PyTorch reads the bound as a real
  number for a floating tensor (1+0j is 1, 1+1j is refused) and refuses it for integers, bools, and in
  ``clamp_min``/``clamp_max``.
- ``clamp`` of a bool tensor by two integer (or floating) tensor bounds, and ``addcmul`` of a bool input with
  integer factors, were refused as bool kernels; PyTorch runs both in the common dtype (int64, ...).
- ``addcmul``/``addcdiv`` (and their in-place forms) and ``lerp``/``lerp_`` read a complex ``value``/``weight``
  beside real tensors as PyTorch converts it: 2+0j is 2, 1j is refused. Out of place the result became complex;
  in place (``addcmul_(..., value=1j)``, ``lerp_(end, 1j)``, a 0-d complex tensor too) NumPy's unsafe cast dropped
  the imaginary part silently. ``fill_diagonal_(tensor(1j))`` likewise.
- ``ldexp`` of a floating tensor by an integer tensor formed 2^e first: 0 · 2^128 was NaN and 1e-30 · 2^128 inf
  in float32; PyTorch's is exact, as NumPy's ldexp (its node is LdexpBackward0 now, as PyTorch's).
- ``relu(-0.0)`` was +0 (NumPy's maximum(x, 0) gives its second operand at a tie); PyTorch keeps -0.
(Creation and write fixes: tests/test_probe33_diff_fixes_creation.py; the random API's:
tests/test_probe33_diff_fixes_random.py.)
"""

import numpy as np
import pytest

import autograd

T = autograd

# (program, its result: dtype name and values) as PyTorch 2.13 gives them
PROMOTIONS = [
    ("T.lerp(T.tensor([3, 1], dtype=T.complex64), T.tensor([5, 1], dtype=T.complex64), 2)", "complex64", [7, 1]),
    ("T.lerp(T.tensor([3.], dtype=T.complex64), T.tensor([5.], dtype=T.complex64), True)", "complex64", [5]),
    ("T.clamp(T.tensor([3., 1.]), min=(2+0j))", "float32", [3, 2]),
    ("T.clamp(T.tensor([3., 1.], dtype=T.float64), min=1, max=(2+0j))", "float64", [2, 1]),
    ("T.clamp(T.tensor([3., 1.], dtype=T.float16), max=(2+0j))", "float16", [2, 1]),
    ("T.clamp(T.tensor([True, False]), T.tensor([3, 1], dtype=T.int8), T.tensor([3, 1], dtype=T.int8))", "int8",
     [3, 1]),
    ("T.clamp(T.tensor([True, False]), T.tensor([0, 0]), T.tensor([1, 1]))", "int64", [1, 0]),
    ("T.clamp(T.tensor([True, False]), T.tensor([0.5, 0.5]), T.tensor([2., 2.]))", "float32", [1, 0.5]),
    ("T.addcmul(T.tensor([True, False]), T.tensor([True, False]), T.tensor([3, 1], dtype=T.int8))", "int8", [4, 0]),
    ("T.addcmul(T.tensor([True, False]), T.tensor([3, 1]), T.tensor([3, 1]), value=2)", "int64", [19, 2]),
    ("T.addcmul(T.tensor([True, False]), T.tensor(2), T.tensor(3))", "int64", [7, 6]),
    ("T.addcmul(T.tensor([True, False]), T.tensor([2.]), T.tensor(3))", "float32", [7, 6]),
    ("T.addcmul(T.zeros(2), T.ones(2), T.ones(2), value=2+0j)", "float32", [2, 2]),
    ("T.addcdiv(T.zeros(2), T.ones(2), T.ones(2) * 2, value=2+0j)", "float32", [1, 1]),
    ("T.zeros(2).addcmul_(T.ones(2), T.ones(2), value=2+0j)", "float32", [2, 2]),
    ("T.zeros(2).addcdiv_(T.ones(2), T.ones(2) * 2, value=2+0j)", "float32", [1, 1]),
    ("T.zeros(2, dtype=T.float16).addcdiv_(T.ones(2, dtype=T.float16), T.ones(2, dtype=T.float16), value=2+0j)",
     "float16", [2, 2]),
    ("T.addcmul(T.zeros(2), T.ones(2, dtype=T.complex64), T.ones(2), value=1j)", "complex64", [1j, 1j]),
    ("T.lerp(T.tensor([1., 2.]), T.tensor([3., 4.]), 1+0j)", "float32", [3, 4]),
    ("T.lerp(T.tensor([1., 2.], dtype=T.float16), T.tensor([3., 4.], dtype=T.float16), 0.5+0j)", "float16", [2, 3]),
    ("T.zeros(2, dtype=T.float64).lerp_(T.ones(2, dtype=T.float64), 1+0j)", "float64", [1, 1]),
    ("T.ones(2, 2).fill_diagonal_(T.tensor(2.))", "float32", [[2, 1], [1, 2]]),
    # ldexp by integer exponents is exact: no 2^e formed (0 · 2^128 was NaN, 1e-30 · 2^128 inf, in float32)
    ("T.ldexp(T.tensor([-0.0, 0.0, 1.0, 1e-30, 3.0]), T.tensor([128, 128, 128, 128, 200]))", "float32",
     [-0.0, 0.0, np.inf, 1e-30 * 2.0**128, np.inf]),
    ("T.ldexp(T.tensor([0.0, 1e-30]), T.tensor([128, 128], dtype=T.uint8))", "float32", [0.0, 1e-30 * 2.0**128]),
    ("T.ldexp(T.tensor([1e-40]), T.tensor([130], dtype=T.int32))", "float32", [float(np.float32(1e-40)) * 2.0**130]),
    ("T.ldexp(T.tensor([3., 1., 0.], dtype=T.float16), T.tensor([-25, -25, 30]))", "float16", [2.0**-23, 0, 0]),
    ("T.ldexp(T.tensor([0.0, 1.0], dtype=T.float64), T.tensor([1030, -1030]))", "float64", [0.0, 2.0**-1030]),
    ("T.ldexp(T.tensor([1., 2.]), T.tensor([[1], [-2]]))", "float32", [[2, 4], [0.25, 0.5]]),
]

# (program, the error PyTorch raises, words of its message)
REFUSALS = [
    ("T.clamp(T.tensor([3., 1.]), min=(1+1j))", RuntimeError, "value cannot be converted to type double"),
    ("T.clamp(T.tensor([3., 1.], dtype=T.float64), min=1, max=(1+1j))", RuntimeError, "cannot be converted"),
    ("T.clip(T.tensor([3., 1.]), min=(1+1j))", RuntimeError, "cannot be converted"),
    ("T.tensor([3., 1.]).clamp_(min=(1+1j))", RuntimeError, "cannot be converted"),
    ("T.clamp(T.tensor([3, 1]), min=(1+0j))", NotImplementedError, "clamp is not supported for complex types"),
    ("T.clamp(T.tensor([True, False]), min=(1+1j))", NotImplementedError, "clamp is not supported for complex"),
    ("T.clamp_min(T.tensor([3., 1.]), (1+0j))", NotImplementedError, "clamp is not supported for complex types"),
    ("T.clamp_max(T.tensor([3., 1.], dtype=T.float64), (1+1j))", NotImplementedError, "not supported for complex"),
    ("T.clamp(T.tensor([True, False]), T.tensor([True]), T.tensor([True]))", NotImplementedError,
     "\"clamp_cpu\" not implemented for 'Bool'"),
    ("T.addcmul(T.tensor([True, False]), T.tensor([True, False]), T.tensor([True, True]))", NotImplementedError,
     "\"addcmul_cpu_out\" not implemented for 'Bool'"),
    ("T.lerp(T.tensor([1., 2.]), T.tensor([1., 2.]), 1j)", RuntimeError, "cannot be converted to type float "),
    # a complex number written into real tensors by an in-place op: the imaginary part was silently dropped
    ("T.zeros(2).addcmul_(T.ones(2), T.ones(2), value=1j)", RuntimeError, "cannot be converted to type float "),
    ("T.zeros(2).addcmul_(T.ones(2), T.ones(2), value=T.tensor(1j))", RuntimeError, "cannot be converted"),
    ("T.zeros(2).addcdiv_(T.ones(2), T.ones(2), value=1j)", RuntimeError, "cannot be converted to type float "),
    ("T.zeros(2, dtype=T.float16).addcdiv_(T.ones(2, dtype=T.float16), T.ones(2, dtype=T.float16), "
     "value=T.tensor(1j))", RuntimeError, "cannot be converted"),
    ("T.zeros(2, dtype=T.float64).lerp_(T.ones(2, dtype=T.float64), 1j)", RuntimeError, "to type double"),
    ("T.zeros(2).lerp_(T.ones(2), T.tensor(1j))", RuntimeError, "float"),  # (PyTorch: "can't be cast")
    ("T.ones(2, 2).fill_diagonal_(T.tensor(1j))", RuntimeError, "value cannot be converted to type float"),
    ("T.addcmul(T.zeros(2), T.ones(2), T.ones(2), value=1j)", RuntimeError, "cannot be converted to type float "),
    ("T.addcmul(T.zeros(2), T.ones(2), T.ones(2), value=T.tensor(1j))", RuntimeError, "cannot be converted"),
    ("T.addcdiv(T.zeros(2), T.ones(2), T.ones(2), value=1j)", RuntimeError, "cannot be converted to type float "),
    ("T.addcmul(T.zeros(2, dtype=T.int64), T.ones(2, dtype=T.int64), T.ones(2, dtype=T.int64), value=1j)",
     RuntimeError, "value cannot be converted to type"),
    ("T.lerp(T.tensor([1.], dtype=T.float64), T.tensor([1.], dtype=T.float64), 1j)", RuntimeError, "type double"),
]


def run(program, torch=T):
    return eval(program, {"T": torch})


def dtype_name(dtype):
    return str(dtype).replace("torch.", "")


@pytest.mark.parametrize("program, dtype, values", PROMOTIONS, ids=[p for p, _, _ in PROMOTIONS])
def test_result_dtype_and_values(program, dtype, values):
    result = run(program)
    assert dtype_name(result.dtype) == dtype
    np.testing.assert_array_equal(result.numpy(), np.array(values, dtype=dtype))


@pytest.mark.parametrize("program, error, words", REFUSALS, ids=[p for p, _, _ in REFUSALS])
def test_refused_as_pytorch_refuses(program, error, words):
    with pytest.raises(error, match=None) as raised:
        run(program)
    assert words.lower() in str(raised.value).lower()


@pytest.mark.filterwarnings("ignore:An output with one or more elements was resized")  # (PyTorch's broadcast ldexp)
@pytest.mark.parametrize("program, dtype, values", PROMOTIONS, ids=[p for p, _, _ in PROMOTIONS])
def test_results_are_pytorchs(program, dtype, values):
    torch = pytest.importorskip("torch")
    theirs, ours = run(program, torch), run(program)
    assert dtype_name(theirs.dtype) == dtype_name(ours.dtype) == dtype
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("program, error, words", REFUSALS, ids=[p for p, _, _ in REFUSALS])
def test_refusals_are_pytorchs(program, error, words):
    torch = pytest.importorskip("torch")
    with pytest.raises(error) as raised:
        run(program, torch)
    assert words.lower() in str(raised.value).lower()


def test_a_python_int_keeps_a_complex_tensors_dtype_in_every_operator():
    """The operand made of 2 beside complex64 is complex64 (NumPy's int64 would widen the result to complex128
    wherever the kernel sees the two arrays together)."""
    x = T.tensor([1 + 2j, -3j], dtype=T.complex64)
    for result, expected in ((x + 2, [3 + 2j, 2 - 3j]), (x * 2, [2 + 4j, -6j]), (2 - x, [1 - 2j, 2 + 3j]),
                             (x ** 2, [-3 + 4j, -9]), (T.lerp(x, x * 3, 2), [5 + 10j, -15j])):
        assert result.dtype == T.complex64
        np.testing.assert_allclose(result.numpy(), np.array(expected, dtype=np.complex64), rtol=1e-6)


def test_fill_of_a_complex_tensor_into_a_real_one_is_refused():
    """PyTorch's fill_ of a 0-d complex tensor drops the imaginary part (fill_(1j), a number, it refuses): here both
    are refused, as a silent wrong answer (README's deliberate differences)."""
    for value in (1j, T.tensor(1j), T.tensor(2 + 1j, dtype=T.complex128)):
        x = T.ones(2)
        with pytest.raises(RuntimeError, match="value cannot be converted"):
            x.fill_(value)
        np.testing.assert_array_equal(x.numpy(), [1, 1])
    np.testing.assert_array_equal(T.ones(2).fill_(T.tensor(2 + 0j)).numpy(), [2, 2])
    np.testing.assert_array_equal(T.ones(2, dtype=T.complex64).fill_(T.tensor(1j)).numpy(), [1j, 1j])


def test_ldexp_by_integers_has_the_exact_gradient():
    """dL/dx = dL/dy · 2^e, broadcast back to x, and LdexpBackward0 as PyTorch names it. (PyTorch computes 2^e in
    integers there, so its gradient for a negative exponent is 0: the derivative is kept here.)"""
    x = T.tensor([3., 0.5], requires_grad=True)
    y = T.ldexp(x, T.tensor([[2], [-1]]))
    y.sum().backward()
    assert y.grad_fn.name() == "LdexpBackward0"
    np.testing.assert_array_equal(y.detach().numpy(), [[12, 2], [1.5, 0.25]])
    np.testing.assert_array_equal(x.grad.numpy(), [4.5, 4.5])
    z = T.tensor([1e-30], requires_grad=True)
    T.ldexp(z, T.tensor([128])).backward()
    np.testing.assert_array_equal(z.grad.numpy(), [np.inf])  # (2^128 is past float32's range: the gradient is)
    assert T.ldexp(T.tensor([3, 0]), T.tensor([200, 200])).isnan().tolist() == [False, True]  # integers: x · 2^e,
    # as PyTorch's


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("size", [1, 4, 17, 64])
def test_relu_keeps_a_negative_zero(dtype, size):
    """relu(-0) is -0, as PyTorch's (max(x, 0) keeps x at a tie); NaN stays NaN and negatives give +0."""
    x = T.tensor([-0.0, -1.5, 0.0, float("nan")] * size, dtype=getattr(T, dtype))
    for y in (T.relu(x), x.clone().relu_()):
        values = y.numpy()
        assert np.signbit(values[0::4]).all() and not np.signbit(values[1::4]).any()
        assert not np.signbit(values[2::4]).any() and np.isnan(values[3::4]).all()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_relus_signs_are_pytorchs(dtype):
    torch = pytest.importorskip("torch")
    x = T.tensor([-0.0, -1.5, 0.0, float("nan")] * 5, dtype=getattr(T, dtype))
    theirs = torch.relu(torch.tensor(x.numpy()))
    np.testing.assert_array_equal(np.signbit(T.relu(x).numpy()), np.signbit(theirs.numpy()))


def test_clamp_with_a_real_complex_bound_keeps_the_gradient():
    x = T.tensor([3., 1., 2.], requires_grad=True)
    y = T.clamp(x, min=1.5 + 0j, max=2.5 + 0j)
    y.sum().backward()
    assert y.dtype == T.float32
    np.testing.assert_array_equal(y.detach().numpy(), [2.5, 1.5, 2.])
    np.testing.assert_array_equal(x.grad.numpy(), [0., 0., 1.])
