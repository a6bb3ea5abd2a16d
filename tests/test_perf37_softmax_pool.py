"""Session 37's fast paths for the losses over an image's classes, max pooling and attention's safe softmax: each
gives the values of the rule it replaced (computed here another way), and PyTorch's where it is installed.

- cross_entropy / nll_loss of (N, C, d1, ...) scores run on (N, C, d1·d2·...) planes, not transposed rows: the
  per-prediction losses are -log_softmax(x, 1) at the labels bit for bit, the gradient softmax(x, 1) - one-hot;
- adaptive max pooling whose bins tile the plane is max pooling with kernel = stride: the values, indices and
  gradient of the bins' gather (the first maximum in scan order, NaN winning);
- max pooling's indices summed in narrow integers; its gradient over tiling windows has PyTorch's +0 off the
  winners (a negative dL/dy times False was -0);
- attention's safe softmax asks the scores for all -inf rows only where a row's first weight is NaN.
"""

import numpy as np
import pytest

import autograd
import nn
from autograd.ops.pooling import window_winner
from nn.attention import _safe_softmax

F = nn.functional


def _scores(rng, shape, dtype, special=False):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    if special:
        flat = x.reshape(-1)
        for value in (np.inf, -np.inf, np.nan, -0.0):
            flat[rng.integers(0, flat.size, max(1, flat.size // 50))] = value
    return x


def _at_labels(array, labels):
    """array[n, labels[n, s], s] for (N, C, S) array, (N, S) labels."""
    n, _, size = array.shape
    return array[np.arange(n)[:, None], labels, np.arange(size)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 10, 7, 9), (3, 4, 11), (2, 3, 4, 5, 6)])
@pytest.mark.parametrize("special", [False, True])
def test_cross_entropy_of_planes_is_log_softmax_over_dim_1_at_the_labels(dtype, shape, special):
    rng = np.random.default_rng(0)
    xn = _scores(rng, shape, dtype, special)
    target = rng.integers(0, shape[1], shape[:1] + shape[2:])
    x = autograd.tensor(xn, requires_grad=True)
    losses = F.cross_entropy(x, autograd.tensor(target), reduction="none")
    g = rng.standard_normal(target.shape).astype(dtype)
    losses.backward(autograd.tensor(g))
    planes = (shape[0], shape[1], int(np.prod(shape[2:])))
    labels = target.reshape(shape[0], -1)
    log_p = F.log_softmax(autograd.tensor(xn), 1).numpy().reshape(planes)
    np.testing.assert_array_equal(losses.detach().numpy().reshape(labels.shape), -_at_labels(log_p, labels))
    expected = F.softmax(autograd.tensor(xn), 1).numpy().reshape(planes).copy()
    expected[np.arange(shape[0])[:, None], labels, np.arange(planes[2])] -= 1
    expected *= g.reshape(shape[0], 1, -1)
    np.testing.assert_array_equal(x.grad.numpy().reshape(planes), expected)
    assert x.grad.numpy().flags.c_contiguous


@pytest.mark.parametrize("layout", ["transposed", "channels_last"])
def test_cross_entropy_of_other_layouts_keeps_the_rows(layout):
    """Scores not row-major (a transpose's (N, C, L), channels-last images) go by rows (a view there): their losses
    and gradient are those of the rows given explicitly."""
    rng = np.random.default_rng(7)
    shape = (3, 5, 4, 6) if layout == "channels_last" else (3, 6, 5)
    xn = _scores(rng, shape, np.float32, special=True)
    target = rng.integers(0, 5, (3, 4, 6) if layout == "channels_last" else (3, 6))
    g = rng.standard_normal(target.shape).astype(np.float32)
    results = []
    for given in ("layout", "rows"):
        x = autograd.tensor(xn, requires_grad=True)
        if layout == "channels_last":
            scores = x.contiguous(memory_format=autograd.channels_last)
            rows, labels = scores.permute(0, 2, 3, 1).reshape(-1, 5), target.reshape(-1)
        else:
            scores = x.transpose(1, 2)
            rows, labels = x.reshape(-1, 5), target.reshape(-1)
        if given == "layout":
            losses = F.cross_entropy(scores, autograd.tensor(target), reduction="none")
        else:
            losses = F.cross_entropy(rows, autograd.tensor(labels), reduction="none").reshape(target.shape)
        losses.backward(autograd.tensor(g))
        results.append((losses.detach().numpy(), x.grad.numpy()))
    for ours, rule in zip(*results):
        np.testing.assert_array_equal(ours, rule)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_and_nll_loss_of_planes_match_pytorch(reduction, weighted):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    xn = _scores(rng, (4, 5, 6, 7), np.float64, special=True)
    target = rng.integers(0, 5, (4, 6, 7))
    target.reshape(-1)[::9] = 2  # (the ignored class)
    weight = rng.random(5)
    for name, scores in (("cross_entropy", xn), ("nll_loss", np.log(np.abs(xn) + 0.5) - 3)):
        results = []
        for lib, functional in ((autograd, F), (torch, torch.nn.functional)):
            x = lib.tensor(scores, requires_grad=True)
            w = lib.tensor(weight) if weighted else None
            loss = getattr(functional, name)(x, lib.tensor(target), weight=w, ignore_index=2, reduction=reduction)
            loss.backward(lib.ones_like(loss))
            results.append((loss.detach().numpy(), x.grad.numpy()))
        (ours, ours_grad), (theirs, their_grad) = results
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ours_grad, their_grad, rtol=1e-12, atol=1e-12)


def test_nll_loss_of_planes_picks_the_labels_and_its_gradient_is_their_scatter():
    rng = np.random.default_rng(2)
    xn = _scores(rng, (3, 6, 5, 4), np.float32, special=True)
    target = rng.integers(0, 6, (3, 5, 4))
    x = autograd.tensor(xn, requires_grad=True)
    losses = F.nll_loss(x, autograd.tensor(target), reduction="none")
    g = rng.standard_normal(target.shape).astype(np.float32)
    losses.backward(autograd.tensor(g))
    labels = target.reshape(3, -1)
    np.testing.assert_array_equal(losses.detach().numpy().reshape(3, -1), -_at_labels(xn.reshape(3, 6, -1), labels))
    expected = np.zeros((3, 6, 20), np.float32)
    expected[np.arange(3)[:, None], labels, np.arange(20)] = -g.reshape(3, -1)
    np.testing.assert_array_equal(x.grad.numpy().reshape(3, 6, -1), expected)
    assert losses.grad_fn.name() == "NllLoss2DBackward0"


def test_cross_entropy_of_planes_double_backward_matches_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    xn = rng.standard_normal((2, 4, 3, 5))
    target = rng.integers(0, 4, (2, 3, 5))
    results = []
    for lib, functional in ((autograd, F), (torch, torch.nn.functional)):
        x = lib.tensor(xn, requires_grad=True)
        loss = functional.cross_entropy(x, lib.tensor(target), reduction="none")
        g = lib.tensor(np.linspace(-1, 1, 30).reshape(2, 3, 5), requires_grad=True)
        gx, = lib.autograd.grad(loss, x, g, create_graph=True)
        (gx * gx).sum().backward()
        results.append((gx.detach().numpy(), x.grad.numpy(), g.grad.numpy()))
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)


def _bin_maxima(xn, out):
    """Adaptive max pooling by the bins' rule, for bins that tile the plane: every bin's values in scan order and
    window_winner's pick of them."""
    n, c, h, w = xn.shape
    kh, kw = h // out[0], w // out[1]
    windows = xn.reshape(n, c, out[0], kh, out[1], kw).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, *out, kh * kw)
    winner = window_winner(windows)
    values = np.take_along_axis(windows, winner[..., None], -1)[..., 0]
    rows = np.arange(out[0])[:, None] * kh + winner // kw
    columns = np.arange(out[1]) * kw + winner % kw
    return values, rows * w + columns


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("kind", ["plain", "ties", "special"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_adaptive_max_pool_over_tiling_bins_gives_the_bins_values_indices_and_gradient(dtype, kind, channels_last):
    rng = np.random.default_rng(4)
    xn = _scores(rng, (2, 3, 12, 8), dtype, special=kind == "special")
    if kind == "ties":
        xn = np.maximum(np.round(xn), 0).astype(dtype)
    x = autograd.tensor(xn)
    if channels_last:
        x = x.contiguous(memory_format=autograd.channels_last)
    x.requires_grad_(True)
    y, indices = F.adaptive_max_pool2d(x, (3, 2), return_indices=True)
    values, expected = _bin_maxima(xn, (3, 2))
    np.testing.assert_array_equal(y.detach().numpy(), values)
    np.testing.assert_array_equal(indices.numpy(), expected)
    g = -np.abs(rng.standard_normal(y.shape)).astype(dtype)
    y.backward(autograd.tensor(g))
    grad = np.zeros((2, 3, 96), dtype)
    np.put_along_axis(grad, expected.reshape(2, 3, -1), g.reshape(2, 3, -1), -1)
    np.testing.assert_array_equal(x.grad.numpy().reshape(2, 3, -1), grad)
    # (PyTorch's +0 off the winners, where a negative dL/dy is)
    np.testing.assert_array_equal(np.signbit(x.grad.numpy().reshape(2, 3, -1)), np.signbit(grad))
    assert y.grad_fn.name() == "AdaptiveMaxPool2DBackward0"


@pytest.mark.parametrize("case", [
    ("max_pool2d", (2, 3, 11, 13), dict(kernel_size=3, stride=2, padding=1)),
    ("max_pool2d", (2, 3, 12, 12), dict(kernel_size=2, stride=2)),
    ("max_pool2d", (1, 2, 12, 13), dict(kernel_size=(2, 3), stride=(1, 2), dilation=(2, 1), ceil_mode=True)),
    ("max_pool1d", (2, 3, 20), dict(kernel_size=3, stride=2)),
    ("max_pool3d", (2, 2, 5, 6, 7), dict(kernel_size=2, stride=2, padding=1)),
    ("adaptive_max_pool2d", (2, 3, 12, 12), dict(output_size=3)),
    ("adaptive_max_pool1d", (2, 3, 12), dict(output_size=4)),
])
@pytest.mark.parametrize("kind", ["plain", "ties", "special"])
def test_max_pooling_values_indices_and_gradient_match_pytorch(case, kind):
    torch = pytest.importorskip("torch")
    name, shape, kwargs = case
    rng = np.random.default_rng(5)
    xn = _scores(rng, shape, np.float32, special=kind == "special")
    if kind == "ties":
        xn = np.maximum(np.round(xn), 0).astype(np.float32)
    g = rng.standard_normal(getattr(torch.nn.functional, name)(torch.tensor(xn), **kwargs).shape).astype(np.float32)
    results = []
    for lib, functional in ((autograd, F), (torch, torch.nn.functional)):
        x = lib.tensor(xn, requires_grad=True)
        y, indices = getattr(functional, name)(x, return_indices=True, **kwargs)
        y.backward(lib.tensor(g))
        results.append((y.detach().numpy(), indices.numpy(), np.signbit(x.grad.numpy()), x.grad.numpy()))
    for ours, theirs in zip(results[0][:3], results[1][:3]):
        np.testing.assert_array_equal(ours, theirs)
    # (overlapping windows add an input's several dL/dy in kernel-offset order, PyTorch in window order: an ulp)
    np.testing.assert_allclose(results[0][3], results[1][3], rtol=1e-6, atol=1e-6)


def test_max_pool_indices_of_wide_planes_need_wider_integers():
    """Offsets in a window beyond int16's range (a dilated window over rows 40,000 wide): int32, the same indices."""
    xn = np.zeros((1, 1, 3, 40000), np.float32)
    xn[0, 0, 2, 5] = 1.0
    y, indices = F.max_pool2d(autograd.tensor(xn), (3, 1), stride=1, return_indices=True)
    assert y.numpy()[0, 0, 0, 5] == 1.0 and indices.numpy()[0, 0, 0, 5] == 2 * 40000 + 5
    assert indices.dtype == autograd.int64 and indices.numpy()[0, 0, 0, 7] == 7


def _old_safe_softmax(scores):
    """The rule before: ask the scores for all -inf rows first."""
    nowhere = (scores == float("-inf")).all(dim=-1, keepdim=True)
    if not nowhere.numpy().any():
        return scores.softmax(-1)
    return scores.masked_fill(nowhere, 0.0).softmax(-1).masked_fill(nowhere, 0.0)


@pytest.mark.parametrize("rows", [(), ("nowhere",), ("nan",), ("inf",), ("nowhere", "nan", "inf"), ("first",)])
def test_safe_softmax_asks_the_scores_only_where_a_first_weight_is_nan(rows):
    rng = np.random.default_rng(6)
    sn = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    sn[..., 3:] = np.where(rng.random((2, 3, 6, 2)) < 0.5, -np.inf, sn[..., 3:])
    for k, what in enumerate(rows):
        row = sn[1, k, 2 + k]
        if what == "nowhere":
            row[:] = -np.inf
        elif what == "nan":
            row[4] = np.nan
        elif what == "inf":
            row[1] = np.inf
        else:  # the first score alone -inf: its weight 0, no NaN
            row[0] = -np.inf
    results = []
    for rule in (_safe_softmax, _old_safe_softmax):
        s = autograd.tensor(sn, requires_grad=True)
        weights = rule(s)
        weights.backward(autograd.tensor(np.linspace(-1, 1, sn.size).reshape(sn.shape).astype(np.float32)))
        results.append((weights.detach().numpy(), s.grad.numpy()))
    for new, old in zip(*results):
        np.testing.assert_array_equal(new, old)
    if "nowhere" in rows:
        assert (results[0][0][1, 0, 2] == 0).all()
