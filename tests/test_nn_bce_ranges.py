"""binary_cross_entropy refuses what PyTorch's kernel refuses: an input or a target outside [0, 1], NaN
included (it gave NaN, or a loss for a "probability" of 2, silently), and takes what lies inside."""

import math

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close

nn = ported_nn.nn  # the fixture
F = ported_nn.F


@pytest.mark.parametrize("target", [[0.0, 2.0], [0.0, -0.5], [0.0, math.nan], [1.0000001, 0.0]])
def test_bce_refuses_a_target_outside_zero_one(T, F, target):
    with pytest.raises(RuntimeError, match="all elements of target should be between 0 and 1"):
        F.binary_cross_entropy(T.tensor([0.5, 0.25]), T.tensor(target))


def test_bce_refuses_a_nan_input(T, F):
    with pytest.raises(RuntimeError, match="all elements of input should be between 0 and 1"):
        F.binary_cross_entropy(T.tensor([0.5, math.nan]), T.tensor([0.0, 1.0]))


def test_bce_module_checks_the_target_too(T, nn):
    with pytest.raises(RuntimeError, match="all elements of target should be between 0 and 1"):
        nn.BCELoss()(T.tensor([0.5]), T.tensor([3.0]))


def test_bce_soft_targets_and_the_ends(T, F):
    p = np.array([0.0, 1.0, 0.3, 0.9])
    y = np.array([0.3, 1.0, 0.0, 0.25])
    logs = np.maximum(np.log(np.where(p > 0, p, 1.0)), -100) * (p > 0) - 100 * (p == 0)
    log1m = np.maximum(np.log1p(-np.where(p < 1, p, 0.0)), -100) * (p < 1) - 100 * (p == 1)
    expected = -(y * logs + (1 - y) * log1m)
    close(F.binary_cross_entropy(T.tensor(p), T.tensor(y), reduction="none"), expected, rtol=1e-12)
