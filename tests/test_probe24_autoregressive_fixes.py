"""What the autoregressive-model programs found (tests/test_programs_probe24_autoregressive_*.py).

- ``multinomial(p, n, replacement=True)`` (n > 1) searched a float64 cumulative distribution for the first entry
  above each uniform draw; PyTorch's kernel keeps a running sum in the input's dtype (float32 for float16),
  divides it by its last value, sets that last value to 1 and takes the first entry at or above the draw. A
  draw within a float32 rounding of a boundary picked the neighbouring category: 1 draw in 40000 of 256-way
  float32 rows (a WaveNet's or PixelCNN's sampling) differed from PyTorch's.
- ``multinomial``'s ``num_samples`` is read as PyTorch's parser reads an int: a 0-d integer tensor is accepted
  (it was refused as "cannot sample n_sample <= 0 samples"), a float, bool or string is a TypeError naming the
  argument, and ``num_samples=0`` says PyTorch's words. ``tril``/``triu``'s ``diagonal`` refuses a bool, as
  PyTorch's does (it was read as 1): the three ops share one reading of an int argument.
- ``multinomial(p, n, replacement=True)`` of a (0, C) input raised NumPy's "need at least one array to stack";
  PyTorch gives an empty (0, n) result; so did a batched ``searchsorted`` of no sequences, and one of empty
  sequences ((2, 0) boundaries) could not be reshaped: PyTorch places every value at 0.
"""

import numpy as np
import pytest

import autograd


def torch_or_none():
    try:
        import torch
    except ImportError:
        return None
    return torch


def with_replacement_draws(torch):
    torch.manual_seed(0)
    weights = torch.rand(2000, 256) ** 4
    return torch.multinomial(weights, 20, replacement=True).numpy()


def test_multinomial_with_replacement_searches_pytorchs_float32_running_sum():
    ours = with_replacement_draws(autograd)
    # PyTorch's draws of that row (a float64 cumulative sum put the 8th draw in category 67)
    assert ours[1883].tolist() == [207, 20, 212, 166, 63, 104, 10, 68, 149, 207, 212, 199, 113, 161, 212, 163, 174,
                                   139, 33, 50]
    assert int(ours.sum()) == 5080022
    torch = torch_or_none()
    if torch is not None:
        np.testing.assert_array_equal(ours, with_replacement_draws(torch))


def running_sum_draws(torch, dtype):
    torch.manual_seed(1)
    r = torch.rand(300, 1000)
    # r⁶ by multiplications, each rounded exactly in both libraries (r ** 6 is a vectorised pow, SVML's in NumPy on an
    # AVX-512 processor and Sleef's in PyTorch: a unit apart in 20% of the entries)
    weights = (r * r * r * r * r * r).to(getattr(torch, dtype))
    return torch.multinomial(weights, 30, replacement=True).numpy()


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_multinomial_with_replacement_in_each_dtype(dtype):
    ours = running_sum_draws(autograd, dtype)
    assert ours.shape == (300, 30) and ours.min() >= 0 and ours.max() < 1000
    torch = torch_or_none()
    if torch is not None:
        np.testing.assert_array_equal(ours, running_sum_draws(torch, dtype))


def test_multinomial_with_replacement_never_draws_a_zero_weight():
    autograd.manual_seed(0)
    draws = autograd.multinomial(autograd.tensor([0.0, 0.0, 1.0, 0.0, 2.0, 0.0]), 3000, replacement=True).numpy()
    assert set(np.unique(draws)) == {2, 4}
    assert abs((draws == 4).mean() - 2 / 3) < 0.03


@pytest.mark.parametrize("module", ["autograd", "torch"])
def test_num_samples_is_read_as_an_int(module):
    torch = autograd if module == "autograd" else pytest.importorskip("torch")
    torch.manual_seed(0)
    p = torch.tensor([0.2, 0.3, 0.5])
    assert tuple(torch.multinomial(p, torch.tensor(2)).shape) == (2,)
    assert tuple(torch.multinomial(p.expand(4, 3), np.int64(3)).shape) == (4, 3)
    for value, name in [(2.0, "float"), (True, "bool"), (torch.tensor(2.0), "Tensor"), ("2", "str"),
                        (None, "NoneType")]:
        with pytest.raises(TypeError, match=f"^multinomial\\(\\): argument 'num_samples' \\(position 2\\) must be "
                                            f"int, not {name}$"):
            torch.multinomial(p, value)
    for value in (0, -1):
        with pytest.raises(RuntimeError, match="^cannot sample n_sample <= 0 samples$"):
            torch.multinomial(p, value)


@pytest.mark.parametrize("module", ["autograd", "torch"])
def test_triangle_diagonal_refuses_a_bool(module):
    torch = autograd if module == "autograd" else pytest.importorskip("torch")
    x = torch.ones(3, 3)
    for op in (torch.tril, torch.triu):
        with pytest.raises(TypeError, match="argument 'diagonal' \\(position \\d\\) must be int, not bool"):
            op(x, True)
    np.testing.assert_array_equal(torch.tril(x, torch.tensor(-1)).numpy(), np.tril(np.ones((3, 3)), -1))
    np.testing.assert_allclose(torch.hann_window(torch.tensor(3)).numpy(), [0.0, 0.75, 0.75], atol=1e-6)


@pytest.mark.parametrize("module", ["autograd", "torch"])
def test_multinomial_with_replacement_of_no_rows(module):
    torch = autograd if module == "autograd" else pytest.importorskip("torch")
    draws = torch.multinomial(torch.empty(0, 3), 2, replacement=True)  # (NumPy's stack of no rows raised)
    assert tuple(draws.shape) == (0, 2) and draws.dtype == torch.int64
    assert tuple(torch.multinomial(torch.empty(0, 3, dtype=torch.float64), 4, True).shape) == (0, 4)


@pytest.mark.parametrize("module", ["autograd", "torch"])
def test_batched_searchsorted_of_no_rows_or_empty_rows(module):
    torch = autograd if module == "autograd" else pytest.importorskip("torch")
    assert tuple(torch.searchsorted(torch.empty(0, 3), torch.empty(0, 2)).shape) == (0, 2)
    assert torch.searchsorted(torch.empty(2, 0), torch.rand(2, 3)).tolist() == [[0, 0, 0], [0, 0, 0]]
    at = torch.searchsorted(torch.empty(2, 3, 0), torch.rand(2, 3, 1), right=True, out_int32=True)
    assert at.dtype == torch.int32 and at.tolist() == [[[0], [0], [0]], [[0], [0], [0]]]
    sequences = torch.tensor([[0.0, 1, 2], [1, 2, 3]])
    assert torch.searchsorted(sequences, torch.tensor([[0.5, 2.5], [3.5, 0.0]])).tolist() == [[1, 3], [3, 0]]
