"""Fixes found by the padding and resampling programs (tests/test_programs_probe22_resample.py): interpolate's linear
and cubic source positions rounded once, as PyTorch's compiled kernels fuse r (o + 1/2) - 1/2; complex inputs
refused as PyTorch's kernels refuse them."""

import numpy as np
import pytest

import autograd
import nn.functional as F


def _torch():
    return pytest.importorskip("torch")


def _fused_linear(n, factor):
    """interpolate(arange(n), scale_factor=factor, mode='linear') as PyTorch's kernel computes it in float32: the
    source r (o + 1/2) - 1/2 with one rounding (a fused multiply-add), then the two-point blend."""
    out = int(np.floor(n * factor))
    scale = np.float32(1 / factor)
    o = np.arange(out, dtype=np.float64)
    source = np.maximum((np.float64(scale) * (o + 0.5) - 0.5).astype(np.float32), np.float32(0))
    low = np.minimum(np.floor(source).astype(np.int64), n - 1)
    high = np.minimum(low + 1, n - 1)
    lam = source - low.astype(np.float32)
    x = np.arange(n, dtype=np.float32)
    return (np.float32(1) - lam) * x[low] + lam * x[high]


@pytest.mark.parametrize("factor", [3, 7, 1.5])
def test_linear_source_of_a_long_signal_is_rounded_once(factor):
    x = np.arange(8000, dtype=np.float32)[None, None]
    y = F.interpolate(autograd.tensor(x), scale_factor=factor, mode="linear").numpy()[0, 0]
    np.testing.assert_array_equal(y, _fused_linear(8000, factor))  # (rounded twice: 2.4e-4 off at x3)
    torch = _torch()
    expected = torch.nn.functional.interpolate(torch.tensor(x), scale_factor=factor, mode="linear").numpy()[0, 0]
    np.testing.assert_array_equal(y, expected)


def test_bilinear_and_bicubic_of_a_large_image_agree_with_pytorch():
    rng = np.random.default_rng(0)
    img = rng.standard_normal((1, 1, 300, 257)).astype(np.float32)
    ramp = np.broadcast_to(np.arange(300, dtype=np.float32)[:, None], (300, 257))[None, None].copy()
    # a ramp along the rows resampled by bilinear x3 (the columns kept) reads the fused sources of the rows
    rows = F.interpolate(autograd.tensor(ramp), scale_factor=(3, 1), mode="bilinear").numpy()[0, 0]
    np.testing.assert_array_equal(rows, np.broadcast_to(_fused_linear(300, 3)[:, None], rows.shape))
    torch = _torch()
    for mode in ("bilinear", "bicubic"):
        ours = F.interpolate(autograd.tensor(img), scale_factor=3, mode=mode).numpy()
        theirs = torch.nn.functional.interpolate(torch.tensor(img), scale_factor=3, mode=mode).numpy()
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=2e-6)  # (bicubic was 1e-4 off)


@pytest.mark.parametrize("mode, shape, kernel", [
    ("nearest", (1, 1, 4), "compute_indices_weights_nearest"),
    ("nearest", (1, 1, 4, 4), "upsample_nearest2d_channels_last"),
    ("nearest-exact", (1, 1, 2, 2, 2), "compute_indices_weights_nearest"),
    ("linear", (1, 1, 4), "compute_indices_weights_linear"),
    ("bilinear", (1, 1, 4, 4), "upsample_bilinear2d_channels_last"),
    ("bicubic", (1, 1, 4, 4), "compute_indices_weights_cubic"),
    ("trilinear", (1, 1, 2, 2, 2), "compute_indices_weights_linear"),
])
def test_complex_inputs_are_refused_as_pytorch_refuses_them(mode, shape, kernel):
    x = autograd.ones(shape, dtype=autograd.complex64)
    with pytest.raises(NotImplementedError, match=f'"{kernel}" not implemented for \'ComplexFloat\''):
        F.interpolate(x, scale_factor=2, mode=mode)
    torch = _torch()
    with pytest.raises(NotImplementedError, match=kernel):
        torch.nn.functional.interpolate(torch.ones(shape, dtype=torch.complex64), scale_factor=2, mode=mode)


@pytest.mark.xfail(strict=True, reason="PyTorch's 1-d/3-d nearest and bicubic backward kernels copy the gradient of "
                                       "a dim that keeps its size, though their forwards resample it (scale 1.1 on 4 "
                                       "samples reads 0 0 1 2); chainrule's gradient is its forward's adjoint")
@pytest.mark.parametrize("mode, shape", [("nearest", (1, 1, 4)), ("nearest", (1, 1, 4, 1, 1)),
                                         ("bicubic", (1, 1, 7, 1))])
def test_the_gradient_of_a_kept_size_resampled_by_its_factor_is_a_copy(mode, shape):
    x = autograd.arange(float(np.prod(shape))).reshape(shape).requires_grad_()
    y = F.interpolate(x, scale_factor=1.1, mode=mode)
    assert y.shape == x.shape
    y.backward(autograd.arange(1.0, y.numel() + 1).reshape(y.shape))
    np.testing.assert_array_equal(x.grad.numpy().ravel(), np.arange(1.0, x.numel() + 1))  # (PyTorch's numbers)


@pytest.mark.parametrize("shape, factor", [((1, 2, 5, 6), 2), ((1, 2, 5, 6), 3), ((1, 1, 3, 4, 5), 2), ((1, 2, 9), 3)])
def test_the_float16_gradient_of_nearest_is_added_in_float32(shape, factor):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float16)
    grad = rng.standard_normal(tuple(n * factor for n in shape[:2]) + tuple(n * factor for n in shape[2:]))
    grad = grad[:shape[0], :shape[1]].astype(np.float16)
    half = autograd.tensor(x, requires_grad=True)
    F.interpolate(half, scale_factor=factor).backward(autograd.tensor(grad))
    # each input's factor ** dims terms summed exactly in float32 (float16 sums are exact there), rounded once
    blocks = grad.astype(np.float32).reshape(shape[:2] + sum(((n, factor) for n in shape[2:]), ()))
    expected = blocks.sum(tuple(range(3, blocks.ndim, 2))).astype(np.float16)
    np.testing.assert_array_equal(half.grad.numpy(), expected)  # (rounded at each addition: 2 ulp off)
    assert half.grad.dtype == autograd.float16
    torch = _torch()
    theirs = torch.tensor(x, requires_grad=True)
    torch.nn.functional.interpolate(theirs, scale_factor=factor).backward(torch.tensor(grad))
    np.testing.assert_array_equal(half.grad.numpy(), theirs.grad.numpy())


@pytest.mark.parametrize("shape", [(2, 0, 4, 4), (2, 3, 0, 4), (0, 0, 4), (0, 4)])
def test_reflection_pads_refuse_empty_dims_but_the_batch_as_replication_pads(shape):
    pad = (1, 1, 0, 0)[:2 if len(shape) < 4 else 4]
    words = "possibly 0 batch size and other non-zero dimensions"
    for mode in ("reflect", "replicate"):
        with pytest.raises(RuntimeError, match=words):
            F.pad(autograd.zeros(shape), pad, mode=mode)
    assert F.pad(autograd.zeros(shape), pad, mode="circular").shape[-1] == shape[-1] + 2  # (circular copies slices)
    assert F.pad(autograd.zeros((0, 3, 4)), (1, 2), mode="reflect").shape == (0, 3, 7)  # (an empty batch pads)
    torch = _torch()
    with pytest.raises(RuntimeError, match=words):
        torch.nn.functional.pad(torch.zeros(shape), pad, mode="reflect")


@pytest.mark.parametrize("mode, shape", [("nearest", (2, 0, 4)), ("linear", (2, 0, 4)), ("bilinear", (0, 0, 4, 4)),
                                         ("bicubic", (2, 0, 4, 4)), ("nearest-exact", (2, 0, 2, 2, 2)),
                                         ("trilinear", (2, 0, 2, 2, 2))])
def test_interpolate_refuses_an_input_without_channels(mode, shape):
    message = f"Non-empty {len(shape)}D data tensor expected but got a tensor with sizes {list(shape)}"
    with pytest.raises(RuntimeError, match=message.replace("[", r"\[")):
        F.interpolate(autograd.zeros(shape), scale_factor=2, mode=mode)
    empty_batch = F.interpolate(autograd.zeros((0, 2) + shape[2:]), scale_factor=2, mode=mode)  # (that one resizes)
    assert empty_batch.shape == (0, 2) + tuple(2 * n for n in shape[2:])
    torch = _torch()
    with pytest.raises(RuntimeError, match=message.replace("[", r"\[")):
        torch.nn.functional.interpolate(torch.zeros(shape), scale_factor=2, mode=mode)


def test_remembered_plans_keep_a_digest_not_the_positions():
    import tracemalloc

    from autograd.ops import sliced_gather
    from autograd.ops.padding import padded_positions

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for n in range(100_000, 100_020):  # clips of 20 lengths, each padded as stft's centre padding pads it
        F.pad(autograd.zeros(1, 1, n), (128, 128), mode="reflect")
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert held < 2_000_000  # (the positions as keys held 16 MB: 800 kB a clip)
    assert all(len(key) == 16 for key in sliced_gather._plans) and len(sliced_gather._plans) <= 256
    plan = sliced_gather.slice_plan(padded_positions(100_000, 128, 128, "reflect"))
    assert len(plan) == 3 and sum(count for _, _, count, _, _ in plan) == 100_256  # (mirror, middle, mirror)
    assert sliced_gather.slice_plan(padded_positions(100_000, 128, 128, "reflect")) is plan  # (remembered)


@pytest.mark.parametrize("shape, pad", [((1, 1, 2), (1, 2)), ((2, 3, 5), (2, 5)), ((1, 2, 4, 5), (3, 1, -1, 3)),
                                        ((1, 1, 3, 4, 2), (1, 2, 0, 4, 3, 3))])
def test_circular_pad_gradients_add_in_pytorchs_order(shape, pad):
    """PyTorch's _pad_circular copies the input into the middle, then from the last dim the middle's ends into the
    pads: its gradient adds, per input and dim from the first, the middle's term, the right pad's, the left's."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    ours = autograd.tensor(x, requires_grad=True)
    y = F.pad(ours, pad, mode="circular")
    grad = (rng.standard_normal(y.shape) * 10).astype(np.float32)
    y.backward(autograd.tensor(grad))
    expected = grad.astype(np.float32)
    for k in range(len(pad) // 2 - 1, -1, -1):  # (dims from the first padded one)
        dim, left, right = len(shape) - 1 - k, max(pad[2 * k], 0), max(pad[2 * k + 1], 0)
        g = np.moveaxis(expected, dim, 0)
        size = g.shape[0] - left - right
        folded = g[left:left + size].copy()  # the middle's term
        folded[:right] += g[left + size:]  # then the right pad's (copied from the middle's start)
        folded[size - left:] += g[:left]  # then the left pad's (from the middle's end)
        expected = np.moveaxis(folded, 0, dim)
    crops = tuple(slice(max(-pad[2 * k], 0), shape[len(shape) - 1 - k] - max(-pad[2 * k + 1], 0))
                  for k in range(len(pad) // 2 - 1, -1, -1))
    full = np.zeros(shape, np.float32)
    full[(Ellipsis,) + crops] = expected
    np.testing.assert_array_equal(ours.grad.numpy(), full)  # (added in output order: an ulp off, 1 case in 7)
    torch = _torch()
    theirs = torch.tensor(x, requires_grad=True)
    torch.nn.functional.pad(theirs, pad, mode="circular").backward(torch.tensor(grad))
    np.testing.assert_array_equal(ours.grad.numpy(), theirs.grad.numpy())
