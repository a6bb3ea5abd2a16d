"""Regressions found by session 33's differential probe of the random API (tests/test_probe33_diff_fixes.py has the
promotion ones): arguments PyTorch refuses that were read silently as something else.

- ``randperm(n, dtype=bool)`` gave a tensor of bools that is no permutation; PyTorch has no bool (or complex) kernel.
- ``randint(2.5, size)`` drew below 2 (the bound truncated); PyTorch refuses a float (or bool) bound.
- ``Generator().manual_seed(2**64)`` wrapped to seed 0 and ``manual_seed(1.5)`` seeded 1: PyTorch refuses both
  (``torch.manual_seed`` converts with ``int()`` first, so 1.5 is seed 1 there, as here).
- ``set_rng_state`` of a float tensor raised RuntimeError where PyTorch raises TypeError (now DtypeError, both).
"""

import numpy as np
import pytest

import autograd

T = autograd

# (program, the error PyTorch raises, words of its message)
REFUSED = [
    ("T.randperm(5, dtype=T.bool)", NotImplementedError, "\"randperm\" not implemented for 'Bool'"),
    ("T.randperm(5, dtype=T.complex64)", NotImplementedError, "\"randperm\" not implemented for 'ComplexFloat'"),
    ("T.randint(2.5, (3,))", TypeError, "must be int, not float"),
    ("T.randint(True, (3,))", TypeError, "must be int, not bool"),
    ("T.randint(np.float64(3.), (3,))", TypeError, "must be int, not float64"),
    ("T.randint(1, 3.5, (3,))", TypeError, "randint()"),
    ("T.randint(low=1.5, high=3, size=(3,))", TypeError, "randint()"),
    ("T.Generator().manual_seed(2**64)", ValueError, "Overflow when unpacking long long"),
    ("T.Generator().manual_seed(-2**63 - 1)", ValueError, "Overflow when unpacking long long"),
    ("T.manual_seed(2**64)", ValueError, "Overflow when unpacking long long"),
    ("T.Generator().manual_seed(1.5)", RuntimeError, "manual_seed expected a long, but got float"),
    ("T.Generator().manual_seed('1')", RuntimeError, "manual_seed expected a long, but got str"),
    ("T.Generator().manual_seed(True)", RuntimeError, "manual_seed expected a long, but got bool"),
    ("T.set_rng_state(T.zeros(5056))", TypeError, "RNG state must be a torch.ByteTensor"),
    ("T.Generator().set_state(T.zeros(5056))", TypeError, "RNG state must be a torch.ByteTensor"),
    ("T.set_rng_state(T.zeros(3, dtype=T.uint8))", RuntimeError, "5056"),
]


def run(program, torch=T):
    return eval(program, {"T": torch, "np": np})


@pytest.mark.parametrize("program, error, words", REFUSED, ids=[p for p, _, _ in REFUSED])
def test_refused(program, error, words):
    with pytest.raises(error) as raised:
        run(program)
    assert words in str(raised.value)


@pytest.mark.parametrize("program, error, words", REFUSED, ids=[p for p, _, _ in REFUSED])
def test_pytorch_refuses_them_too(program, error, words):
    torch = pytest.importorskip("torch")
    with pytest.raises(error):
        run(program, torch)


def test_seeds_pytorch_takes_are_taken():
    assert T.Generator().manual_seed(2**64 - 1).initial_seed() == 2**64 - 1
    assert T.Generator().manual_seed(-2**63).initial_seed() == 2**63  # (wrapped to 64 bits, as PyTorch's)
    assert T.Generator().manual_seed(np.int64(3)).initial_seed() == 3
    assert T.manual_seed(1.5).initial_seed() == 1  # (torch.manual_seed converts with int())
    assert T.manual_seed("7").initial_seed() == 7
    assert T.manual_seed(T.tensor(4)).initial_seed() == 4


def test_seeded_draws_after_the_checks_are_pytorchs():
    """The checks change no draw: randint's and randperm's numbers after manual_seed(0) are PyTorch's."""
    T.manual_seed(0)
    np.testing.assert_array_equal(T.randint(3, 10, (6,)).numpy(), [7, 6, 3, 5, 4, 5])
    T.manual_seed(0)
    np.testing.assert_array_equal(T.randperm(6, dtype=T.float16).numpy(), [2, 5, 3, 0, 1, 4])
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    np.testing.assert_array_equal(torch.randint(3, 10, (6,)).numpy(), [7, 6, 3, 5, 4, 5])
    torch.manual_seed(0)
    np.testing.assert_array_equal(torch.randperm(6, dtype=torch.float16).numpy(), [2, 5, 3, 0, 1, 4])
