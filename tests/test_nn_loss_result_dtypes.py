"""The dtype of a loss where its operands' dtypes differ, as PyTorch's: huber_loss computes in the input's
dtype (mse_loss and smooth_l1_loss promote), and binary_cross_entropy's weight scales the loss in the loss's
dtype (a float64 weight from a NumPy array left a float32 loss float32 in PyTorch, float64 here)."""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close

nn = ported_nn.nn  # the fixture
F = ported_nn.F


@pytest.mark.parametrize("input_dtype, target_dtype", [("float32", "float64"), ("float64", "float32")])
def test_huber_loss_has_the_input_dtype(T, F, input_dtype, target_dtype):
    x, y = np.array([0.25, -2.0, 3.5]), np.array([0.0, 1.0, 3.0])
    loss = F.huber_loss(T.tensor(x, dtype=getattr(T, input_dtype)), T.tensor(y, dtype=getattr(T, target_dtype)),
                        reduction="none")
    assert loss.dtype == getattr(T, input_dtype)
    d = np.abs(x - y)
    close(loss, np.where(d < 1, 0.5 * d * d, d - 0.5), rtol=1e-6)


def test_mse_loss_promotes(T, F):
    assert F.mse_loss(T.zeros(2), T.zeros(2, dtype=T.float64)).dtype == T.float64


def test_bce_weight_of_another_dtype_keeps_the_loss_dtype(T, F):
    p, y, w = np.array([0.25, 0.75]), np.array([0.0, 1.0]), np.array([2.0, 0.5])
    loss = F.binary_cross_entropy(T.tensor(p, dtype=T.float32), T.tensor(y, dtype=T.float32),
                                  weight=T.tensor(w), reduction="none")
    assert loss.dtype == T.float32
    close(loss, -w * (y * np.log(p) + (1 - y) * np.log1p(-p)), rtol=1e-6)


def test_multilabel_soft_margin_loss_promotes_its_target(T, F):
    """PyTorch promotes the target with the input (a float64 target gives a float64 loss, integers a float32 one)."""
    x = T.tensor([[0.5, -1.0, 2.0]])
    assert F.multilabel_soft_margin_loss(x, T.tensor([[1.0, 0.0, 1.0]], dtype=T.float64)).dtype == T.float64
    assert F.multilabel_soft_margin_loss(x, T.tensor([[1, 0, 1]])).dtype == T.float32
    assert F.multilabel_soft_margin_loss(x.double(), T.tensor([[1.0, 0.0, 1.0]])).dtype == T.float64
