"""Derivative formulas that run on the arrays alone in a backward pass that records nothing (no node for the
pass's own ops): mean's spread gradient divided in place, a broadcast operand's gradient summed by Sum's forward,
neg's, exp's and an index's gradients. Each gives the values of the recorded formula (create_graph=True), and the
recorded formula still records."""

import numpy as np
import pytest

import autograd


def _pass_and_recorded(f, x):
    """dL/dx from a pass that records nothing and from one that records (create_graph=True)."""
    (plain,) = autograd.autograd.grad(f(x), x)
    (recorded,) = autograd.autograd.grad(f(x), x, create_graph=True)
    return plain, recorded


@pytest.mark.parametrize("dtype", [autograd.float16, autograd.float32, autograd.float64])
@pytest.mark.parametrize("dim, keepdim", [(None, False), (0, False), (1, True), ((0, 2), False)])
def test_mean_gradient_is_the_upstream_over_n_in_the_dtype(dtype, dim, keepdim):
    x = autograd.randn(3, 5, 7, dtype=dtype, requires_grad=True)
    count = {None: 105, 0: 3, 1: 5, (0, 2): 21}[dim]
    array = np.dtype(str(dtype))

    def scaled(x):  # dL/dy = 3 everywhere: dL/dx = 3 / n, rounded once in the dtype
        return (x.mean() if dim is None else x.mean(dim, keepdim=keepdim)).mul(3).sum()

    plain, recorded = _pass_and_recorded(scaled, x)
    expected = np.full((3, 5, 7), np.asarray(3, array) / np.asarray(count, array))
    assert plain.dtype == dtype and recorded.dtype == dtype
    assert plain.numpy().tobytes() == expected.tobytes() == recorded.numpy().tobytes()

    def squared(x):  # dL/dy = 2y, which depends on x: the recorded gradient has a graph
        y = x.mean() if dim is None else x.mean(dim, keepdim=keepdim)
        return (y * y).sum()

    plain, recorded = _pass_and_recorded(squared, x)
    assert plain.grad_fn is None and recorded.grad_fn is not None
    assert plain.numpy().tobytes() == recorded.detach().numpy().tobytes()
    means = x.detach().numpy().astype(np.float64).mean(axis=dim, keepdims=True)
    np.testing.assert_allclose(plain.numpy(), np.broadcast_to(2 * means / count, (3, 5, 7)),
                               rtol=1e-2 if dtype == autograd.float16 else 1e-5, atol=1e-3)


def test_mean_of_nothing_has_a_nan_gradient_and_mean_takes_no_copy_of_the_upstream_gradient():
    empty = autograd.zeros(0, 3, requires_grad=True)
    (grad,) = autograd.autograd.grad(empty.mean(0).sum(), empty)
    assert tuple(grad.shape) == (0, 3)
    x = autograd.ones(2, 3, requires_grad=True)
    upstream = autograd.tensor([1.0, 2.0, 4.0])
    x.mean(0).backward(upstream)
    assert x.grad.tolist() == [[0.5, 1.0, 2.0], [0.5, 1.0, 2.0]]
    assert upstream.tolist() == [1.0, 2.0, 4.0]  # (divided in the spread copy, never in the caller's tensor)


def test_broadcast_operand_gradients_are_sums_over_the_broadcast_dims():
    x = autograd.randn(4, 3, 5, dtype=autograd.float64, requires_grad=True)
    bias = autograd.randn(5, dtype=autograd.float64, requires_grad=True)
    column = autograd.randn(3, 1, dtype=autograd.float64, requires_grad=True)
    weights = autograd.randn(4, 3, 5, dtype=autograd.float64, requires_grad=True)  # (a graph under create_graph)
    for create_graph in (False, True):
        grads = autograd.autograd.grad(((x + bias - column) * weights).sum(), (bias, column),
                                       create_graph=create_graph)
        values = weights.detach().numpy()
        np.testing.assert_allclose(grads[0].detach().numpy(), values.sum((0, 1)), rtol=1e-12)
        np.testing.assert_allclose(grads[1].detach().numpy(), -values.sum((0, 2))[:, None], rtol=1e-12)
        assert (grads[0].grad_fn is not None) == create_graph


def test_sum_to_size_outside_a_pass_keeps_its_modes():
    x = autograd.ones(2, 3, requires_grad=True)
    assert x.sum_to_size(3).grad_fn.name() == "SumBackward1"
    with autograd.no_grad():
        plain = x.sum_to_size(1, 3)
    assert plain.grad_fn is None and plain.tolist() == [[2.0, 2.0, 2.0]]
    with autograd.inference_mode():
        inferred = x.sum_to_size(3)
    assert inferred.is_inference() and inferred.tolist() == [2.0, 2.0, 2.0]


def test_neg_exp_and_index_gradients_with_and_without_a_graph():
    x = autograd.tensor([0.5, -1.0, 2.0], dtype=autograd.float64, requires_grad=True)
    rows = autograd.tensor([2, 0, 2])
    plain, recorded = _pass_and_recorded(lambda x: (-(x.exp()[rows]) + (1 - x)).sum(), x)
    expected = [-np.exp(0.5) - 1, -1.0, -2 * np.exp(2.0) - 1]
    np.testing.assert_allclose(plain.numpy(), expected, rtol=1e-15)
    np.testing.assert_allclose(recorded.detach().numpy(), expected, rtol=1e-15)
    (second,) = autograd.autograd.grad(recorded.sum(), x)  # d/dx of the gradient: -e^x counted per index
    np.testing.assert_allclose(second.numpy(), [-np.exp(0.5), 0.0, -2 * np.exp(2.0)], rtol=1e-15)
