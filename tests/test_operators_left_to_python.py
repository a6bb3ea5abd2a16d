"""Python's arithmetic operators beside None, a string or a Python container: PyTorch's return NotImplemented,
so Python answers (its TypeError naming both types, or a sequence's repetition by a 0-d tensor's __index__);
the functions (autograd.add(x, [1, 2])) are not operators and read a list as a tensor. Against PyTorch where
it is installed."""

import operator

import numpy as np
import pytest

import autograd

OPERATORS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv,
             "//": operator.floordiv, "%": operator.mod, "**": operator.pow}
PYTHON_SYMBOL = {"**": "** or pow()"}
NOT_OPERANDS = [None, "a", [1.0, 2.0], (1.0, 2.0), range(2), {"a": 1}]


def _libraries():
    libraries = [autograd]
    try:
        import torch
    except ModuleNotFoundError:
        return libraries
    return libraries + [torch]


@pytest.mark.parametrize("library", _libraries(), ids=lambda m: m.__name__)
@pytest.mark.parametrize("symbol", sorted(OPERATORS))
@pytest.mark.parametrize("other", NOT_OPERANDS, ids=lambda v: type(v).__name__)
def test_an_operator_leaves_a_non_operand_to_python(library, symbol, other):
    x = library.ones(2)
    if symbol == "*" and isinstance(other, (str, list, tuple)):  # a sequence times a tensor: repeated by it
        return
    if symbol == "%" and isinstance(other, str):  # other % x is str formatting: x % other only
        sides = [(x, other)]
    else:
        sides = [(x, other), (other, x)]
    for left, right in sides:
        names = type(left).__name__, type(right).__name__
        with pytest.raises(TypeError) as caught:
            OPERATORS[symbol](left, right)
        message = str(caught.value)
        if isinstance(left, (list, tuple, str)) and symbol == "+":  # (Python's own words for concatenation)
            assert "concatenate" in message
            continue
        assert message == (f"unsupported operand type(s) for {PYTHON_SYMBOL.get(symbol, symbol)}: "
                           f"'{names[0]}' and '{names[1]}'")


@pytest.mark.parametrize("library", _libraries(), ids=lambda m: m.__name__)
def test_a_sequence_times_a_zero_dim_tensor_is_repeated(library):
    n = library.tensor(3)
    assert [0] * n == [0, 0, 0]
    assert n * [0] == [0, 0, 0]
    assert (1,) * library.tensor(2) == (1, 1)
    assert "ab" * library.tensor(2) == "abab"


def test_the_functions_still_read_a_list_as_a_tensor():
    np.testing.assert_array_equal(autograd.add(autograd.ones(2), [1.0, 2.0]).numpy(), [2.0, 3.0])
    np.testing.assert_array_equal(autograd.ones(2).mul([2.0, 3.0]).numpy(), [2.0, 3.0])


@pytest.mark.parametrize("library", _libraries(), ids=lambda m: m.__name__)
def test_numbers_and_arrays_stay_operands(library):
    x = library.ones(2)
    np.testing.assert_array_equal(np.asarray(x + np.float32(2)), [3.0, 3.0])
    np.testing.assert_array_equal(np.asarray(x + np.ones(2)), [2.0, 2.0])
    np.testing.assert_array_equal(np.asarray(2 ** x), [2.0, 2.0])
    np.testing.assert_array_equal(np.asarray(7 % (x * 4)), [3.0, 3.0])


class _Unit:
    """An object with its own reflected product, which Python asks once the tensor's operator declines."""

    def __rmatmul__(self, other):
        return "rmatmul"

    def __matmul__(self, other):
        return "matmul"


@pytest.mark.parametrize("library", _libraries(), ids=lambda m: m.__name__)
def test_the_matrix_product_operator_leaves_a_non_operand_to_python(library):
    x = library.ones(2)
    assert (x @ _Unit(), _Unit() @ x) == ("rmatmul", "matmul")
    for other in (None, "a", [1.0, 2.0], object()):
        with pytest.raises(TypeError, match="unsupported operand type"):
            x @ other
        with pytest.raises(TypeError, match="unsupported operand type"):
            other @ x
    with pytest.raises(TypeError, match="matmul\\(\\): argument 'other' .* must be Tensor, not object"):
        library.matmul(x, object())
    assert float(x @ library.ones(2)) == 2.0
