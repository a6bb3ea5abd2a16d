"""inf and NaN arrive silently, as in PyTorch: an op, a backward pass, an in-place write and an optimizer step
that meet log 0, 0/0 or an overflow give PyTorch's values and raise nothing, under a warnings filter that makes
warnings errors (``simplefilter("error")``, ``pytest -W error``) and under ``np.seterr(all="raise")``, while the
user's own NumPy code keeps its warnings and its error mode. Each test runs on chainrule and, where installed,
on PyTorch."""

import math
import warnings

import numpy as np
import pytest

import nn
import optim

SPECIAL = [0.0, -1.0, math.inf, -math.inf, math.nan, 3e38, -3e38, 2.0]


def _nn_and_optim(T):
    return (nn, optim) if T.__name__ == "autograd" else (T.nn, T.optim)


def _strict():
    """A block in which any warning is an error (as ``pytest -W error`` makes every test)."""
    block = warnings.catch_warnings()
    block.__enter__()
    warnings.simplefilter("error")
    return block


@pytest.mark.parametrize("name, reference", [
    ("log", np.log), ("sqrt", np.sqrt), ("reciprocal", np.reciprocal), ("exp", np.exp),
    ("rsqrt", lambda x: 1 / np.sqrt(x)),
    ("log1p", np.log1p), ("acos", np.arccos), ("atanh", np.arctanh), ("tan", np.tan), ("square", np.square),
])
def test_a_function_of_inf_nan_and_zero_is_silent_and_its_gradient_too(T, name, reference):
    x = T.tensor(SPECIAL, dtype=T.float64, requires_grad=True)
    block = _strict()
    try:
        y = getattr(x, name)()
        y.sum().backward()
    finally:
        block.__exit__(None, None, None)
    with np.errstate(all="ignore"):
        expected = reference(np.array(SPECIAL))
    # (within an ulp: PyTorch's vectorised log1p is one off NumPy's at one of these points on a Haswell machine)
    np.testing.assert_allclose(y.detach().numpy(), expected, rtol=3e-16, atol=0)
    assert x.grad.shape == (len(SPECIAL),)


def test_binary_arithmetic_of_every_pair_of_special_values_is_silent(T):
    a = T.tensor(SPECIAL * len(SPECIAL), dtype=T.float64, requires_grad=True)
    b = T.tensor(np.repeat(SPECIAL, len(SPECIAL)).tolist(), dtype=T.float64, requires_grad=True)
    block = _strict()
    try:
        results = [a + b, a - b, a * b, a / b, a ** b, T.atan2(a, b), T.hypot(a, b), T.xlogy(a, b)]
        sum(r.sum() for r in results).backward()
    finally:
        block.__exit__(None, None, None)
    x, y = np.array(SPECIAL * len(SPECIAL)), np.repeat(SPECIAL, len(SPECIAL))
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(results[3].detach().numpy(), x / y)
        np.testing.assert_array_equal(results[0].detach().numpy(), x + y)
    assert a.grad.shape == b.grad.shape == (len(SPECIAL) ** 2,)


def test_softmax_and_losses_of_infinities_are_silent(T):
    F = _nn_and_optim(T)[0].functional
    logits = T.tensor([[math.inf, 0.0, -math.inf], [-math.inf, -math.inf, -math.inf]], requires_grad=True)
    probabilities = T.tensor([0.0, 1.0, 0.5], requires_grad=True)
    block = _strict()
    try:
        soft = F.softmax(logits, dim=1)
        log_soft = F.log_softmax(logits, dim=1)
        bce = F.binary_cross_entropy(probabilities, T.tensor([1.0, 0.0, 1.0]))
        (soft.sum() + bce).backward()
    finally:
        block.__exit__(None, None, None)
    assert np.isnan(soft.detach().numpy()).all()  # a slice holding +inf, or only -inf: inf - inf, NaN
    assert np.isnan(log_soft.detach().numpy()).all()
    assert bce.item() == pytest.approx((200 + math.log(2)) / 3)  # PyTorch clamps log 0 at -100
    assert math.isnan(logits.grad[0, 0].item())


def test_in_place_writes_and_their_fast_path_are_silent(T):
    x = T.tensor(SPECIAL, dtype=T.float64)
    block = _strict()
    try:
        x.div_(T.zeros(len(SPECIAL), dtype=T.float64))
        with T.no_grad():
            x.sqrt_()
    finally:
        block.__exit__(None, None, None)
    with np.errstate(all="ignore"):
        expected = np.sqrt(np.array(SPECIAL) / 0.0)
    np.testing.assert_array_equal(x.numpy(), expected)


@pytest.mark.parametrize("fused", [None, True])
def test_an_adam_step_on_an_infinite_gradient_is_silent(T, fused):
    nn_, optim_ = _nn_and_optim(T)
    weight = nn_.Parameter(T.tensor([0.0, 1.0, 2.0]))
    optimizer = optim_.Adam([weight], lr=0.1, fused=fused)
    block = _strict()
    try:
        (weight * T.tensor([math.inf, 0.0, 1.0])).sum().backward()
        optimizer.step()
    finally:
        block.__exit__(None, None, None)
    values = weight.detach().numpy()
    assert math.isnan(values[0])  # m/√v = inf/inf
    assert values[1] == 1.0 and values[2] == pytest.approx(1.9)


def test_the_users_numpy_keeps_its_warnings_and_its_error_mode(T):
    """What chainrule silences is its own arithmetic, for the op's or the pass's duration only."""
    x = T.tensor([0.0], requires_grad=True)
    with np.errstate(divide="raise"):
        x.log().sum().backward()  # silent, as PyTorch
        assert np.geterr()["divide"] == "raise"
        with pytest.raises(FloatingPointError):
            np.log(np.zeros(1))
    with pytest.warns(RuntimeWarning, match="divide by zero"):
        np.log(np.zeros(1))


def test_reductions_of_opposite_infinities_are_silent(T):
    """inf + (-inf) in a sum is NaN, silently, in every reduction built on it (PyTorch's); NumPy's warning came
    from its own ndarray.sum wrapper, where autograd's filter could not see it, and printed even without -W."""
    N, _ = _nn_and_optim(T)
    x = T.tensor([[math.inf, -math.inf, 1.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = [x.sum(), x.mean(), x.var(1), x.std(), N.functional.layer_norm(x, (3,)), x.sum(0)]
    assert all(bool(r.isnan().any()) for r in results[:5]) and results[5].tolist()[:2] == [math.inf, -math.inf]
