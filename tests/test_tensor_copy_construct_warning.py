"""torch.tensor(a_tensor) and x.new_tensor(a_tensor) copy it with PyTorch's UserWarning (pointing at
the caller's line) that ``detach().clone()`` is the way; Python data and the legacy typed
constructors (``torch.LongTensor(t)``) do not warn."""

import warnings

import pytest

import autograd

from .pytorch_programs import OURS, pytorch


def copy_warnings(m):
    torch = m.torch
    x = torch.ones(2, requires_grad=True)
    counts = []
    for make in (lambda: torch.tensor(x), lambda: x.new_tensor(x), lambda: torch.tensor([1.0, 2.0]),
                 lambda: torch.tensor(x.detach().numpy()), lambda: torch.LongTensor(torch.tensor([1, 2])),
                 lambda: torch.tensor([x[0].item(), 2.0])):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            made = make()
        counts.append(sum("To copy construct from a tensor" in str(w.message) for w in caught))
        assert not made.requires_grad
    return counts


def test_copy_construction_warns_as_pytorch():
    assert copy_warnings(OURS) == [1, 1, 0, 0, 0, 0]
    m = pytorch()
    if m is not None:
        assert copy_warnings(m) == [1, 1, 0, 0, 0, 0]


def test_the_warning_points_at_the_callers_line():
    x = autograd.ones(2)
    with pytest.warns(UserWarning, match=r"sourceTensor.detach\(\).clone\(\)") as record:
        y = autograd.tensor(x)
    assert record[0].filename == __file__ and y.tolist() == [1.0, 1.0]
    with pytest.warns(UserWarning) as record:
        x.new_tensor(x)
    assert record[0].filename == __file__
