"""autograd.testing.assert_close (PyTorch's default tolerances per dtype) and autograd.compile
(accepted; returns what it is given)."""

import numpy as np
import pytest

import autograd
import nn


def test_assert_close_passes_within_the_dtypes_tolerance():
    autograd.testing.assert_close(autograd.tensor([1.0, 2.0]), autograd.tensor([1.0, 2.0 + 1e-6]))
    autograd.testing.assert_close(autograd.tensor([1.0, np.nan]), autograd.tensor([1.0, np.nan]), equal_nan=True)
    autograd.testing.assert_close(autograd.tensor([1.0]), autograd.tensor([1.0], dtype=autograd.float64),
                                  check_dtype=False)
    autograd.testing.assert_close([autograd.tensor(1.0), 2.0], [autograd.tensor(1.0), 2.0])
    autograd.testing.assert_close({"w": autograd.tensor([3.0])}, {"w": autograd.tensor([3.0])})
    autograd.testing.assert_close(autograd.tensor([1.0, 2.0]), autograd.tensor([1.0, 2.1]), rtol=0.1, atol=0.0)


@pytest.mark.parametrize("actual, expected, message", [
    ([1.0, 2.0], [1.0, 2.1], r"(?s)not close!.*1 / 2 \(50.0%\).*0\.0999.* at index \(1,\) \(up to 1e-05 allowed\)"),
    ([1.0, np.nan], [1.0, np.nan], "not close"),  # NaN is not NaN unless equal_nan
    ([1, 2], [1, 3], "not equal"),  # integers: exactly
    ([1.0, 2.0], [1.0, 2.0, 3.0], "shape"),
])
def test_assert_close_names_what_differs(actual, expected, message):
    with pytest.raises(AssertionError, match=message):
        autograd.testing.assert_close(autograd.tensor(actual), autograd.tensor(expected))


def test_assert_close_checks_dtypes_and_its_arguments():
    with pytest.raises(AssertionError, match="dtype"):
        autograd.testing.assert_close(autograd.tensor([1.0]), autograd.tensor([1.0], dtype=autograd.float64))
    with pytest.raises(ValueError, match="atol"):
        autograd.testing.assert_close(autograd.tensor([1.0]), autograd.tensor([1.0]), rtol=0.1)


def test_compile_wraps_a_module_as_pytorch_does_and_returns_a_function():
    model = nn.Linear(2, 3)
    compiled = autograd.compile(model)
    assert type(compiled).__name__ == "OptimizedModule" and isinstance(compiled, nn.Module)
    assert compiled._orig_mod is model and getattr(compiled, "_orig_mod", compiled) is model
    assert list(compiled.state_dict()) == ["_orig_mod.weight", "_orig_mod.bias"]  # (as PyTorch's: loaders strip it)
    assert compiled.in_features == 2 and list(compiled.parameters()) == list(model.parameters())
    x = autograd.ones(1, 2)
    np.testing.assert_array_equal(compiled(x).detach().numpy(), model(x).detach().numpy())
    assert compiled.eval() is compiled and not model.training

    @autograd.compile(mode="max-autotune")
    def double(x):
        return x * 2

    np.testing.assert_array_equal(double(autograd.tensor([1.5])).numpy(), [3.0])


def test_dynamo_is_there_to_be_asked_and_changes_nothing():
    from autograd import _dynamo

    assert _dynamo.is_compiling() is False
    _dynamo.config.suppress_errors = True  # (a setting programs write: kept)
    x = autograd.ones(2)
    assert _dynamo.mark_dynamic(x, 0) is None and _dynamo.mark_static_address(x) is None
    assert _dynamo.disable(len) is len
