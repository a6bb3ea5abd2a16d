"""Regressions found by session 33's differential probe of creation ops and writes (tests/test_probe33_diff_fixes.py
has the promotion ones): arange's keyword end and complex bounds, linspace's and logspace's 0-d tensor steps,
asarray of a list read as tensor() reads it (its NumPy scalars' and 0-d tensors' dtypes, an integer past int64
refused, where it was float32 and uint64), a negative size given to a legacy constructor (FloatTensor(-1)),
empty_strided or randint refused with PyTorch's RuntimeError (NumPy's ValueError before), a bytearray or
memoryview read as the sequence of numbers PyTorch reads (int64, not NumPy's uint8), and None (or a string)
given where a number is written, which NumPy reads as NaN and PyTorch refuses."""

import numpy as np
import pytest

import autograd

T = autograd

# (program, its result's dtype name and values) as PyTorch 2.13 gives them
MADE = [
    ("T.arange(end=4)", "int64", [0, 1, 2, 3]),
    ("T.arange(end=4.5)", "float32", [0, 1, 2, 3, 4]),
    ("T.arange(start=1, end=4)", "int64", [1, 2, 3]),
    ("T.arange(0, 4 + 0j)", "float32", [0, 1, 2, 3]),
    ("T.arange(0, 4, 1 + 0j)", "float32", [0, 1, 2, 3]),
    ("T.linspace(0, 1, T.tensor(3))", "float32", [0, 0.5, 1]),
    ("T.linspace(0, 1, steps=T.tensor(5), dtype=T.float64)", "float64", [0, 0.25, 0.5, 0.75, 1]),
    ("T.logspace(0, 1, T.tensor(2))", "float32", [1, 10]),
    ("T.asarray([np.float64(1), 2])", "float64", [1, 2]),
    ("T.asarray([np.float16(1), np.int64(2)])", "float16", [1, 2]),
    ("T.asarray([T.tensor(1, dtype=T.float64), 2])", "float64", [1, 2]),
    ("T.asarray([np.array([1]), np.array([2.])])", "float64", [[1], [2]]),
    ("T.tensor(bytearray(b'ab'))", "int64", [97, 98]),
    ("T.as_tensor(bytearray(b'ab'))", "int64", [97, 98]),
    ("T.tensor(memoryview(b'ab'))", "int64", [97, 98]),
    ("T.tensor(memoryview(np.array([1.5, 2.5])))", "float32", [1.5, 2.5]),
    ("T.tensor(bytearray(b'ab'), dtype=T.uint8)", "uint8", [97, 98]),
    ("T.FloatTensor(2, np.int64(3)).zero_()", "float32", [[0, 0, 0], [0, 0, 0]]),
    ("T.LongTensor(T.Size([2])).zero_()", "int64", [0, 0]),
    ("T.randint(5, (0, 2))", "int64", np.zeros((0, 2))),
    ("T.empty_strided((2, 2), (2, 1)).zero_()", "float32", [[0, 0], [0, 0]]),
    ("T.asarray(bytearray(b'\\x00\\x00\\x80?'))", "float32", [1]),  # (asarray reads a buffer's bytes, as frombuffer)
]

# (program, the error PyTorch raises, words of its message)
REFUSED = [
    ("T.arange(1j)", RuntimeError, "value cannot be converted to type double without overflow"),
    ("T.arange(1, 4, 1j)", RuntimeError, "value cannot be converted to type double without overflow"),
    ("T.arange()", TypeError, "arange() missing 1 required positional argument"),
    ("T.linspace(0, 1, T.tensor([3]))", TypeError, "linspace()"),
    ("T.tensor([None], dtype=T.float32)", TypeError, "must be real number, not NoneType"),
    ("T.tensor([1, None], dtype=T.float64)", TypeError, "must be real number, not NoneType"),
    ("T.tensor(None, dtype=T.float32)", TypeError, "must be real number, not NoneType"),
    ("T.as_tensor([None], dtype=T.float32)", TypeError, "must be real number, not NoneType"),
    ("T.zeros(2).new_tensor([None])", TypeError, "must be real number, not NoneType"),
    ("T.full((2,), None)", TypeError, "full(): argument 'fill_value' (position 2) must be Number, not NoneType"),
    ("T.full((2,), '1')", TypeError, "full(): argument 'fill_value' (position 2) must be Number, not str"),
    ("T.full_like(T.zeros(2), None)", TypeError, "argument 'fill_value' (position 2) must be Number, not NoneType"),
    ("T.zeros(2).new_full((2,), None)", TypeError, "argument 'fill_value' (position 2) must be Number, not NoneType"),
    ("T.zeros(3).fill_(None)", TypeError, "fill_() received an invalid combination of arguments - got (NoneType)"),
    ("T.zeros(3).fill_('1')", TypeError, "fill_() received an invalid combination of arguments - got (str)"),
    ("T.asarray([2**63])", ValueError, "Overflow when unpacking long long"),
    ("T.asarray(2**63)", ValueError, "Overflow when unpacking long long"),
    ("T.FloatTensor(-1)", RuntimeError, "Trying to create tensor with negative dimension -1: [-1]"),
    ("T.LongTensor(2, -3)", RuntimeError, "Trying to create tensor with negative dimension -3: [2, -3]"),
    ("T.empty_strided((2, -1), (1, 1))", RuntimeError, "Trying to create tensor with negative dimension -1: [2, -1]"),
    ("T.randint(5, (2, -1))", RuntimeError, "Trying to create tensor with negative dimension -1: [2, -1]"),
    ("T.Tensor(-1)", RuntimeError, "Trying to create tensor with negative dimension -1: [-1]"),
    ("T.Tensor(2, -3)", RuntimeError, "Trying to create tensor with negative dimension -3: [2, -3]"),
    ("T.zeros(2).new(-1)", RuntimeError, "Trying to create tensor with negative dimension -1: [-1]"),
    ("T.zeros(3).index_put_((T.tensor([0]),), None)", TypeError,
     "index_put_(): argument 'values' (position 2) must be Tensor, not NoneType"),
]


def run(program, torch=T):
    return eval(program, {"T": torch, "np": np})


def assign(x, index, value):
    x[index] = value


@pytest.mark.parametrize("program, dtype, values", MADE, ids=[p for p, _, _ in MADE])
def test_made_as_pytorch_makes_it(program, dtype, values):
    made = run(program)
    assert str(made.dtype).replace("torch.", "") == dtype
    np.testing.assert_allclose(made.numpy(), np.array(values, dtype=dtype), rtol=1e-6)


@pytest.mark.parametrize("program, error, words", REFUSED, ids=[p for p, _, _ in REFUSED])
def test_refused(program, error, words):
    with pytest.raises(error) as raised:
        run(program)
    assert words in str(raised.value)


@pytest.mark.parametrize("program, dtype, values", MADE, ids=[p for p, _, _ in MADE])
def test_made_values_are_pytorchs(program, dtype, values):
    torch = pytest.importorskip("torch")
    theirs, ours = run(program, torch), run(program)
    assert str(theirs.dtype) == "torch." + str(ours.dtype) == "torch." + dtype
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("program, error, words", [r for r in REFUSED if r[0] != "T.arange()"],
                         ids=[p for p, _, _ in REFUSED if p != "T.arange()"])
def test_pytorch_refuses_them_too(program, error, words):
    torch = pytest.importorskip("torch")
    with pytest.raises(error):
        run(program, torch)


@pytest.mark.parametrize("value", [None, "1", b"1", {1: 2}])
@pytest.mark.parametrize("index", [1, (Ellipsis,), [0, 2], "mask"])
def test_setitem_of_no_number_is_refused_and_writes_nothing(index, value):
    x = T.zeros(3, 4)
    where = x[:, 0] == 0 if index == "mask" else index
    with pytest.raises(TypeError, match=f"can't assign a {type(value).__name__} to a torch.FloatTensor"):
        assign(x, where, value)
    np.testing.assert_array_equal(x.numpy(), np.zeros((3, 4), dtype=np.float32))


def test_setitem_of_no_number_names_the_tensors_type():
    for dtype, name in ((T.int64, "Long"), (T.complex64, "ComplexFloat"), (T.bool, "Bool"), (T.float64, "Double")):
        with pytest.raises(TypeError, match=f"can't assign a NoneType to a torch.{name}Tensor"):
            assign(T.zeros(3, dtype=dtype), 0, None)


def test_setitem_of_no_number_is_pytorchs_refusal():
    torch = pytest.importorskip("torch")
    for lib in (torch, T):
        x = lib.zeros(3)
        with pytest.raises(TypeError, match="can't assign a NoneType to a torch.FloatTensor"):
            assign(x, x == 0, None)


def test_numbers_and_tensors_are_still_written():
    x = T.zeros(3, 4)
    x[0] = 2
    x[1] = T.tensor([1., 2., 3., 4.])
    x[2, [0, 3]] = 7.5
    x[x == 0] = True
    np.testing.assert_array_equal(x.numpy(), [[2, 2, 2, 2], [1, 2, 3, 4], [7.5, 1, 1, 7.5]])
    np.testing.assert_array_equal(T.full((2,), np.float32(1.5)).numpy(), [1.5, 1.5])
    np.testing.assert_array_equal(T.tensor([1., float("nan")], dtype=T.float32).isnan().numpy(), [False, True])
