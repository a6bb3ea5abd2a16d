"""Errors of PyTorch's class where a program catches them: ``except RuntimeError`` catches what
PyTorch raises as RuntimeError here too (chainrule's ShapeError and DtypeError are also a
ValueError and a TypeError, what NumPy-minded code catches)."""

import warnings

import pytest

import autograd
import nn
import nn.functional as F
from autograd.ops import shape


@pytest.mark.parametrize(("call", "match"), [
    (lambda: autograd.ones(2).item(), "a Tensor with 2 elements cannot be converted to Scalar"),
    (lambda: nn.Linear(3, 2)(autograd.ones(4, 5)), "mat1 and mat2 shapes cannot be multiplied"),
    (lambda: F.cross_entropy(autograd.randn(3, 4), autograd.tensor([0.0, 1.0, 2.0])), "expected target dtype"),
    (lambda: F.cross_entropy(autograd.randn(4, 3), autograd.tensor([[0], [1], [2], [0]])), r"target of shape \(4,\)"),
])
def test_runtime_errors_as_pytorch(call, match):
    with pytest.raises(RuntimeError, match=match):
        call()


def test_item_of_many_elements_is_still_a_value_error_and_a_float_target_a_type_error():
    with pytest.raises(ValueError):
        autograd.ones(3).item()
    with pytest.raises(TypeError):
        F.cross_entropy(autograd.randn(3, 4), autograd.tensor([0.0, 1.0, 2.0]))


def test_T_of_other_than_two_dims_warns_once_as_pytorch(monkeypatch):
    monkeypatch.setattr(shape, "_warned_of_T", False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert autograd.ones(2, 3).T.shape == (3, 2) and autograd.ones(()).T.shape == ()
        assert not caught  # 2 and 0 dims: no warning
        assert autograd.ones(2, 3, 4).T.shape == (4, 3, 2)
        assert autograd.ones(5).T.shape == (5,)
    assert len(caught) == 1 and "x.mT" in str(caught[0].message) and caught[0].filename == __file__
