"""Errors of PyTorch's class where a program catches them: ``except RuntimeError`` catches what
PyTorch raises as RuntimeError here too (chainrule's ShapeError and DtypeError are also a
ValueError and a TypeError, what NumPy-minded code catches)."""

import re
import warnings

import numpy as np
import pytest

import autograd
import autograd.warn_once as once
import nn
import nn.functional as F


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
    monkeypatch.setattr(once, "_warned_once", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert autograd.ones(2, 3).T.shape == (3, 2) and autograd.ones(()).T.shape == ()
        assert not caught  # 2 and 0 dims: no warning
        assert autograd.ones(2, 3, 4).T.shape == (4, 3, 2)
        assert autograd.ones(5).T.shape == (5,)
    assert len(caught) == 1 and "x.mT" in str(caught[0].message) and caught[0].filename == __file__


# -- a NumPy array where a Tensor goes: the beginner's first mistake, said plainly ------------------

ARRAY_2D = np.random.default_rng(0).random((4, 3)).astype(np.float32)
ARRAY_4D = np.random.default_rng(0).random((2, 3, 8, 8)).astype(np.float32)


@pytest.mark.parametrize(("layer", "array"), [
    (lambda: nn.Linear(3, 2), ARRAY_2D),
    (lambda: nn.Conv2d(3, 4, 3), ARRAY_4D),
    (lambda: nn.BatchNorm2d(3), ARRAY_4D),
    (lambda: nn.LayerNorm(3), ARRAY_2D),
    (lambda: nn.ReLU(), ARRAY_2D),
    (lambda: nn.GELU(), ARRAY_2D),
    (lambda: nn.MaxPool2d(2), ARRAY_4D),
    (lambda: nn.LSTM(3, 4), ARRAY_2D[:, None]),
    (lambda: nn.Sequential(nn.Linear(3, 2), nn.ReLU()), ARRAY_2D),
], ids=["Linear", "Conv2d", "BatchNorm2d", "LayerNorm", "ReLU", "GELU", "MaxPool2d", "LSTM", "Sequential"])
def test_a_numpy_array_given_to_a_layer_is_a_type_error_that_says_so(layer, array):
    # PyTorch: TypeError "linear(): argument 'input' (position 1) must be Tensor, not numpy.ndarray" (for
    # some layers an AttributeError on the array); here always a TypeError naming the array and the fix
    with pytest.raises(TypeError, match="argument 1 must be a Tensor, not numpy.ndarray of shape "
                                        + re.escape(str(tuple(array.shape))) + ".*autograd.from_numpy"):
        layer()(array)
    assert layer()(autograd.from_numpy(array)) is not None  # converted, it runs


def test_a_numpy_array_given_to_an_op_names_its_position():
    with pytest.raises(TypeError, match=r"argument 2 must be a Tensor, not numpy.ndarray of shape \(2, 3\)"):
        F.linear(autograd.ones(4, 3), np.ones((2, 3), np.float32))
    with pytest.raises(TypeError, match=r"argument 3 must be a Tensor, not numpy.ndarray of shape \(2,\)"):
        F.linear(autograd.ones(4, 3), autograd.ones(2, 3), np.ones(2, np.float32))
    with pytest.raises(TypeError, match="argument 1 must be a Tensor, not numpy.ndarray"):
        F.conv2d(ARRAY_4D, autograd.ones(4, 3, 3, 3))


def test_a_users_module_that_takes_arrays_keeps_its_own_errors():
    class Scaled(nn.Module):
        def forward(self, x):
            return x.relu()  # an array has no relu: the user's own AttributeError, not ours

    with pytest.raises(AttributeError, match="has no attribute 'relu'"):
        Scaled()(ARRAY_2D)


@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "bool"])
@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_class_indices_are_int64_or_uint8_as_pytorch_reads_them(loss, dtype):
    scores = autograd.randn(4, 3).log_softmax(1)
    labels = np.array([0, 1, 2, 1]).astype(dtype)
    error = TypeError if dtype == "bool" else RuntimeError
    with pytest.raises(error, match="Long" if dtype != "bool" else "integers"):
        getattr(F, loss)(scores, autograd.tensor(labels))
    expected = getattr(F, loss)(scores, autograd.tensor(labels.astype(np.int64))).item()
    assert getattr(F, loss)(scores, autograd.tensor(labels.astype(np.uint8))).item() == expected


def test_class_index_dtype_errors_match_pytorch():
    torch = pytest.importorskip("torch")
    for dtype, name in (("int32", "Int"), ("int16", "Short"), ("int8", "Char")):
        with pytest.raises(RuntimeError, match=f"expected target dtype to be Long or Byte, but got {name}"):
            torch.nn.functional.cross_entropy(torch.randn(4, 3), torch.tensor([0, 1, 2, 1]).to(getattr(torch, dtype)))
        with pytest.raises(RuntimeError, match=f"expected target dtype to be Long or Byte, but got {name}"):
            F.cross_entropy(autograd.randn(4, 3), autograd.tensor(np.array([0, 1, 2, 1], dtype=dtype)))


def test_a_loss_of_mismatched_shapes_is_both_pytorchs_runtime_error_and_a_value_error():
    for catch in (RuntimeError, ValueError):
        with pytest.raises(catch, match=r"input of shape \(4, 3\) and target of shape \(4,\) differ"):
            F.mse_loss(autograd.randn(4, 3), autograd.randn(4))


def test_every_autograd_function_taking_an_input_tensor_refuses_a_numpy_array():
    """autograd.<name>(array): PyTorch's TypeError ("must be Tensor, not numpy.ndarray") for every function
    whose first parameter is its ``input`` tensor, naming the function and the fix; before, some computed
    the answer with NumPy alone (a NumPy array back) and others failed deep inside with an AttributeError."""
    from autograd.ops.names import FUNCTIONS, refusing_arrays

    checked = 0
    for name in sorted(FUNCTIONS):
        function = getattr(autograd, name)
        if refusing_arrays(FUNCTIONS[name]) is FUNCTIONS[name] or getattr(function, "__wrapped__", None) is None:
            continue  # its first parameter is no input tensor (tensors=, data=, size=, ...), or autograd's name is
            # another function's (autograd.max_pool2d is PyTorch's torch.max_pool2d, not F.max_pool2d)
        with pytest.raises(TypeError, match=r"autograd\.\w+: argument 1 must be a Tensor, not numpy\.ndarray"):
            function(ARRAY_2D)
        with pytest.raises(TypeError, match="autograd.from_numpy"):
            function(input=ARRAY_2D)
        checked += 1
    assert checked > 300
    assert autograd.exp(autograd.from_numpy(ARRAY_2D)).shape == ARRAY_2D.shape  # converted, it runs


def test_common_errors_start_with_pytorchs_words(T):
    """Programs and their tests match PyTorch's messages; chainrule's say PyTorch's words first, then name what it
    knows (the shapes, the op)."""
    import importlib

    F = importlib.import_module("torch.nn.functional" if T.__name__ == "torch" else "nn.functional")
    nn = importlib.import_module("torch.nn" if T.__name__ == "torch" else "nn")
    cases = [
        (RuntimeError, "Boolean value of Tensor with more than one value is ambiguous", lambda: bool(T.ones(2))),
        (IndexError, "Target 3 is out of bounds", lambda: F.cross_entropy(T.ones(2, 3), T.tensor([0, 3]))),
        (ValueError, r"Expected input batch_size \(2\) to match target batch_size \(3\)",
         lambda: F.nll_loss(T.ones(2, 3), T.tensor([0, 1, 2]))),
        (RuntimeError, r"mat1 and mat2 shapes cannot be multiplied \(2x3 and 4x5\)",
         lambda: T.ones(2, 3) @ T.ones(4, 5)),
        (RuntimeError, r"expected input\[1, 2, 5, 5\] to have 3 channels, but got 2 channels instead",
         lambda: nn.Conv2d(3, 4, 3)(T.ones(1, 2, 5, 5))),
        (RuntimeError, "running_mean should contain 4 elements not 3", lambda: nn.BatchNorm1d(3)(T.ones(2, 4))),
        (RuntimeError, r"Given normalized_shape=\[3\], expected input with shape \[\*, 3\], but got input of "
                       r"size\[2, 4\]", lambda: nn.LayerNorm(3)(T.ones(2, 4))),
        (IndexError, "index out of range in self", lambda: T.ones(3).index_select(0, T.tensor([4]))),
        (RuntimeError, r"Given input size: \(1x2x2\). Calculated output size: \(1x0x0\). Output size is too small",
         lambda: F.max_pool2d(T.ones(1, 1, 2, 2), 3)),
    ]
    for error, words, call in cases:
        with pytest.raises(error, match=words):
            call()
