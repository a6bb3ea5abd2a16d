"""Layer, group, instance and training batch norm as one node (``AffineNormalization`` of
autograd/ops/normalization_node.py), and batch norm in evaluation (``RunningNormalization``): gradients and second
derivatives against finite differences over hypothesis-drawn shapes, with and without γ and β.
(tests/test_perf35_norms.py checks their values against the composite they replaced and against PyTorch.)"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
import nn.functional as F
from tests.test_ops import _run, arrays, leaf


@st.composite
def normalized_with_parameters(draw, parameter_dim=1):
    """x of shape (N, C, *spatial) with values spread apart (a normalisation's gradient is ill-conditioned where a
    group's values nearly coincide), and γ, β of as many values as x's ``parameter_dim`` has, either one or both
    left out."""
    shape = draw(hnp.array_shapes(min_dims=2, max_dims=4, min_side=2, max_side=3))
    x = draw(arrays(shape)) + np.arange(np.prod(shape)).reshape(shape) % 3
    weight, bias = draw(st.booleans()), draw(st.booleans())
    tensors = [leaf(x)] + [leaf(draw(arrays((shape[parameter_dim],)))) for given in (weight, bias) if given]
    return tensors, (weight, bias)


def _affine(function):
    """function(x, γ, β) of the drawn tensors (γ and β None where the draw left them out)."""

    def call(*tensors_and_flags):
        *tensors, (weight, bias) = tensors_and_flags
        x, rest = tensors[0], list(tensors[1:])
        return function(x, rest.pop(0) if weight else None, rest.pop(0) if bias else None)

    return call


FUNCTIONS = {
    "layer_norm": lambda x, w, b: F.layer_norm(x, x.shape[-1:], w, b, eps=1e-3),
    "group_norm": lambda x, w, b: F.group_norm(x, 1, w, b, eps=1e-3),
    "instance_norm": lambda x, w, b: F.instance_norm(x, weight=w, bias=b, eps=1e-3),
    "batch_norm": lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True, eps=1e-3),
    "batch_norm_eval": lambda x, w, b: F.batch_norm(x, autograd.tensor(np.linspace(-1, 1, x.shape[1])),
                                                    autograd.tensor(np.linspace(0.5, 2, x.shape[1])), w, b),
}

CASES = {"AffineNormalization": (normalized_with_parameters(), _affine(FUNCTIONS["group_norm"])),
         "RunningNormalization": (normalized_with_parameters(), _affine(FUNCTIONS["batch_norm_eval"]))}


@pytest.mark.parametrize("name", list(FUNCTIONS))
@given(data=st.data())
def test_gradients_and_second_derivatives_match_finite_differences(name, data):
    tensors, flags = data.draw(normalized_with_parameters(-1 if name == "layer_norm" else 1))
    if name == "instance_norm" and np.prod(tensors[0].shape[2:]) == 1:  # (one value per instance is refused)
        x = tensors[0].detach().numpy().reshape(*tensors[0].shape[:2], 1)
        tensors[0] = leaf(np.concatenate([x, x + 0.5], axis=-1))
    function = _affine(FUNCTIONS[name])
    assert autograd.gradcheck(lambda *ts: function(*ts, flags), tensors)
    assert autograd.gradgradcheck(lambda *ts: function(*ts, flags), tensors)


def test_the_case_runs():
    tensors, fn = _run(CASES["AffineNormalization"], _Fixed())
    assert fn(*tensors).grad_fn.name() == "NativeGroupNormBackward0"


class _Fixed:
    """A data object that draws the same example each time (the CASES entry run once, outside hypothesis)."""

    def draw(self, strategy):
        x = leaf(np.arange(12.0).reshape(2, 3, 2) % 5)
        return [x, leaf([1.0, 2.0, 3.0])], (True, False)
