"""``autograd.sym_*``: symbolic-size arithmetic on plain numbers, with PyTorch's result types (also on PyTorch)."""

import pytest


def test_symbolic_size_arithmetic_on_numbers(T):
    assert (T.sym_int(3.7), T.sym_int(-3.7), T.sym_float(3)) == (3, -3, 3.0)
    assert T.sym_max(2, 3.5) == 3.5 and T.sym_max(3, 2.5) == 3.0 and type(T.sym_max(3, 2.5)) is float
    assert T.sym_min(2, 3) == 2 and type(T.sym_min(2, 3)) is int
    assert T.sym_not(True) is False and T.sym_ite(False, 1, 2) == 2
    assert T.sym_sqrt(4) == 2.0 and T.sym_sum([1, 2, 3]) == 6 and T.sym_sum([1.5, 2]) == 3.5
    with pytest.raises(AssertionError):
        T.sym_max(T.tensor(1.0), T.tensor(2.0))
