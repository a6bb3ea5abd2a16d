"""Session 36's faster softmax family and cross-entropy, checked for the same values:

- softmax, log_softmax and their backward nodes over large arrays in cache-sized blocks of slices
  (``ops/row_blocks.py``): bit for bit the whole-array passes they replace, over every dim, float32 and float64,
  NaN/±inf/±0, transposed inputs (the thresholds lowered so that small arrays go through many blocks, and one
  array over the real threshold);
- cross_entropy with label smoothing from one log_softmax, as PyTorch composes it (nll_loss and the uniform part
  both taken from it): PyTorch's values, and one log_softmax node in the graph.
"""

import numpy as np
import pytest

import autograd
import nn.functional as F
from autograd.ops import reductions, row_blocks


def _identical(a, b):
    """The same values bit for bit, NaN for NaN (a NaN's sign bit aside: a slice holding NaN may be shifted by
    maximum's NaN or fmax's number, NaN throughout either way)."""
    return a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b, equal_nan=True) and np.array_equal(
        np.signbit(a) & ~np.isnan(a), np.signbit(b) & ~np.isnan(b))


def _inputs(dtype, seed):
    rng = np.random.default_rng(seed)
    for shape in ((37, 53), (6, 5, 29), (3, 4, 5, 7), (2, 300)):
        x = (rng.standard_normal(shape) * 20).astype(dtype)
        yield x
        special = x.copy().reshape(-1)
        for value in (np.nan, np.inf, -np.inf, 0.0, -0.0):
            special[rng.integers(0, special.size, max(1, special.size // 17))] = value
        yield special.reshape(shape)
        zeros = np.where(rng.random(shape) < 0.5, -0.0, 0.0).astype(dtype)  # maxima of ±0, the rest far below
        zeros.reshape(-1)[::3] = -300
        yield zeros
    yield np.ascontiguousarray((rng.standard_normal((40, 30)) * 5).astype(dtype).T).T  # (a transpose's layout)


def _softmaxes(x, dim, grad):
    """softmax and log_softmax forward and the gradient of each for dL/dy = grad, as arrays."""
    results = []
    for name in ("softmax", "log_softmax"):
        t = autograd.tensor(x, requires_grad=True)
        y = getattr(t, name)(dim)
        y.backward(autograd.tensor(grad))
        results += [y.detach().numpy(), t.grad.numpy()]
    return results


def _whole(patch):
    patch.setattr(reductions, "LARGE", 1 << 62)


def _in_small_blocks(patch):
    patch.setattr(reductions, "LARGE", 0)
    patch.setattr(row_blocks, "_BLOCK", 50)  # (a few slices a block, a slice longer than a block alone)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_give_the_whole_arrays_values_bit_for_bit(dtype, monkeypatch):
    rng = np.random.default_rng(3)
    for x in _inputs(dtype, 0):
        grad = rng.standard_normal(x.shape).astype(dtype)
        for dim in range(-x.ndim, x.ndim):
            with monkeypatch.context() as patch:
                _whole(patch)
                whole = _softmaxes(x, dim, grad)
            with monkeypatch.context() as patch:
                _in_small_blocks(patch)
                blocked = _softmaxes(x, dim, grad)
            for ours, previous in zip(blocked, whole):
                assert _identical(ours, previous), (x.shape, dim)


def test_blocks_run_only_where_they_can(monkeypatch):
    """Over NumPy float32/float64 row-major arrays with more than one slice before the dim; float16 in float32
    whole (its own rounding steps), dim 0 whole (one slice)."""
    x = np.random.default_rng(4).standard_normal((8, 9)).astype(np.float32)
    assert row_blocks.blockable(1, x) and row_blocks.blockable(1, x, x)
    assert not row_blocks.blockable(0, x)
    assert not row_blocks.blockable(1, x.astype(np.float16))
    assert not row_blocks.blockable(1, x, x.T.copy().T)  # (a transposed gradient)
    assert not row_blocks.blockable(1, np.ones((1, 9), np.float32))
    with monkeypatch.context() as patch:
        _in_small_blocks(patch)
        half = autograd.tensor(x.astype(np.float16)).softmax(1).numpy()
    wide = x.astype(np.float16).astype(np.float32)
    expected = np.exp(wide - wide.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    assert _identical(half, expected.astype(np.float16))


def test_an_array_over_the_threshold_is_the_direct_formula():
    x = np.random.default_rng(5).standard_normal((2100, 1000)).astype(np.float32)
    assert x.size > reductions.LARGE
    shifted = x - np.maximum.reduce(x, 1, None, None, True)
    expected = np.exp(shifted)
    expected /= np.add.reduce(expected, 1, None, None, True)
    assert _identical(autograd.tensor(x).softmax(-1).numpy(), expected)
    log_expected = shifted - np.log(np.add.reduce(np.exp(shifted), 1, None, None, True))
    assert _identical(autograd.tensor(x).log_softmax(1).numpy(), log_expected)
    g = np.random.default_rng(6).standard_normal(x.shape).astype(np.float32)
    product = g * expected
    product -= expected * np.add.reduce(product, 1, None, None, True)
    t = autograd.tensor(x, requires_grad=True)
    t.softmax(1).backward(autograd.tensor(g))
    assert _identical(t.grad.numpy(), product)
    log_grad = np.exp(log_expected)
    log_grad *= np.add.reduce(g, 1, None, None, True)
    t.grad = None
    t.log_softmax(1).backward(autograd.tensor(g))
    assert _identical(t.grad.numpy(), g - log_grad)


def test_double_backward_through_blocks_matches_the_whole_arrays(monkeypatch):
    x = np.random.default_rng(7).standard_normal((12, 10)).astype(np.float64)
    results = []
    for setting in (_whole, _in_small_blocks):
        with monkeypatch.context() as patch:
            setting(patch)
            for name in ("softmax", "log_softmax"):
                t = autograd.tensor(x, requires_grad=True)
                y = getattr(t, name)(1)
                (g,) = autograd.grad((y * y).sum(), t, create_graph=True)
                (gg,) = autograd.grad((g * g).sum(), t)
                results.append((g.detach().numpy(), gg.numpy()))
    for (g1, gg1), (g2, gg2) in zip(results[:2], results[2:]):
        assert _identical(g1, g2) and _identical(gg1, gg2)


def _log_softmax_nodes(loss):
    seen, stack, count = set(), [loss.grad_fn], 0
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        count += "LogSoftmax" in node.name()
        stack.extend(parent for parent, _ in node.next_functions)
    return count


def _smoothing_cases(rng, dtype):
    for shape in ((64, 10), (8, 7, 5), (4, 3, 2, 2)):
        classes = shape[1]
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        target = rng.integers(0, classes, shape[:1] + shape[2:])
        weight = rng.random(classes).astype(dtype)
        for keywords in ({}, {"weight": weight}, {"ignore_index": 1}, {"weight": weight, "ignore_index": 2}):
            for reduction in ("mean", "sum", "none"):
                yield x, target, dict(keywords, reduction=reduction, label_smoothing=0.2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_label_smoothing_takes_one_log_softmax_and_pytorchs_values(dtype):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as TF
    rng = np.random.default_rng(9)
    # (log_softmax's backward g - p Σg cancels: a unit of its terms, which are up to about 1)
    tolerance = {"rtol": 2e-6, "atol": 1e-6} if dtype == np.float32 else {"rtol": 1e-13, "atol": 1e-14}
    for x, target, keywords in _smoothing_cases(rng, dtype):
        ours_in = autograd.tensor(x, requires_grad=True)
        theirs_in = torch.tensor(x, requires_grad=True)
        ours = F.cross_entropy(ours_in, autograd.tensor(target),
                               **{k: autograd.tensor(v) if k == "weight" else v for k, v in keywords.items()})
        theirs = TF.cross_entropy(theirs_in, torch.tensor(target),
                                  **{k: torch.tensor(v) if k == "weight" else v for k, v in keywords.items()})
        assert _log_softmax_nodes(ours) == 1
        grad = rng.standard_normal(tuple(ours.shape)).astype(dtype)
        ours.backward(autograd.tensor(grad))
        theirs.backward(torch.tensor(grad))
        np.testing.assert_allclose(ours.detach().numpy(), theirs.detach().numpy(), **tolerance)
        np.testing.assert_allclose(ours_in.grad.numpy(), theirs_in.grad.numpy(), **tolerance)


def test_label_smoothing_is_the_formula():
    """(1 - ε) nll + ε/C · (-Σ_c w_c ln p_c), each averaged over the kept targets' weights: in float64 by hand."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((32, 6))
    target = rng.integers(0, 6, 32)
    target[::5] = 3  # ignored
    weight = rng.random(6)
    log_p = x - np.log(np.exp(x).sum(1, keepdims=True))
    kept = target != 3
    picked = -log_p[np.arange(32), target] * weight[target] * kept
    uniform = -(log_p * weight).sum(1) * kept
    total_weight = (weight[target] * kept).sum()
    expected = 0.9 * picked.sum() / total_weight + 0.1 / 6 * uniform.sum() / total_weight
    ours = F.cross_entropy(autograd.tensor(x), autograd.tensor(target), weight=autograd.tensor(weight),
                           ignore_index=3, label_smoothing=0.1)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-14)


def test_label_smoothing_over_ignored_targets_only_is_nan_with_zero_gradient():
    x = autograd.tensor(np.random.default_rng(11).standard_normal((4, 5)), requires_grad=True)
    loss = F.cross_entropy(x, autograd.tensor(np.full(4, 2)), ignore_index=2, label_smoothing=0.3)
    assert np.isnan(loss.item())
    loss.backward()
    assert np.array_equal(x.grad.numpy(), np.zeros((4, 5)))


@pytest.mark.parametrize("width", [16, 64, 127, 128, 200])
def test_accumulating_index_put_of_rows_equals_ufunc_at(width, monkeypatch):
    """Rows narrower than 128 elements accumulated by their elements' numbers (backend._numpy_at), wider ones in
    rounds: either way NumPy's add.at's values bit for bit, repeated and negative rows, NaN/±inf/-0 among them."""
    from autograd import backend

    if backend.xp is not np:
        pytest.skip("NumPy's own ufunc.at paths")
    rounds = []
    monkeypatch.setattr(backend, "_update_in_rounds",
                        lambda *args, run=backend._update_in_rounds: rounds.append(run(*args)) or rounds[-1])
    rng = np.random.default_rng(width)
    x = rng.standard_normal((300, width)).astype(np.float32)
    index = rng.integers(-300, 300, 900)
    values = rng.standard_normal((900, width)).astype(np.float32)
    values.reshape(-1)[rng.integers(0, values.size, 40)] = np.tile([np.nan, np.inf, -np.inf, -0.0], 10)
    expected = np.zeros_like(x)
    with np.errstate(invalid="ignore"):
        np.add.at(expected, index, values)
        expected = x + expected
    put = autograd.tensor(x).index_put((autograd.tensor(index),), autograd.tensor(values), accumulate=True)
    assert _identical(put.numpy(), expected)
    assert rounds == ([True] if width >= 128 else [])
