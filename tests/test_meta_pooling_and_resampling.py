"""The meta device through pooling, resampling, padding and views, forward and backward: each op gives a meta tensor
of PyTorch's shape, and its gradient is a meta tensor of the input's shape (no values to compare, pad or add: these
ops once wrote into the meta tensor's read-only zeros, asked a meta tensor for its maxima, or made their gradient
on the CPU). Each test runs on chainrule and on PyTorch (skipped where it is missing)."""

import pytest

import nn as _nn  # noqa: F401  (registers autograd.nn, as torch.nn)

OPS = {
    "max_pool2d 3 s2 p1": lambda F, x: F.max_pool2d(x, 3, 2, 1),
    "max_pool2d 2": lambda F, x: F.max_pool2d(x, 2),
    "max_pool2d with indices": lambda F, x: F.max_pool2d(x, 2, return_indices=True)[0],
    "avg_pool2d 3 s2 p1": lambda F, x: F.avg_pool2d(x, 3, 2, 1),
    "adaptive_avg_pool2d 1": lambda F, x: F.adaptive_avg_pool2d(x, 1),
    "adaptive_max_pool2d 2": lambda F, x: F.adaptive_max_pool2d(x, 2),
    "max_pool1d": lambda F, x: F.max_pool1d(x[0], 2),
    "avg_pool1d": lambda F, x: F.avg_pool1d(x[0], 3),
    "max_pool3d": lambda F, x: F.max_pool3d(x.unsqueeze(0), 2),
    "avg_pool3d": lambda F, x: F.avg_pool3d(x.unsqueeze(0), 2),
    "lp_pool2d": lambda F, x: F.lp_pool2d(x, 2, 2),
    "nearest": lambda F, x: F.interpolate(x, scale_factor=2),
    "nearest-exact": lambda F, x: F.interpolate(x, size=(5, 11), mode="nearest-exact"),
    "bilinear": lambda F, x: F.interpolate(x, scale_factor=2, mode="bilinear"),
    "bicubic": lambda F, x: F.interpolate(x, size=(3, 4), mode="bicubic", align_corners=True),
    "area": lambda F, x: F.interpolate(x, size=(3, 5), mode="area"),
    "reflect pad": lambda F, x: F.pad(x, (1, 1, 2, 2), mode="reflect"),
    "circular pad": lambda F, x: F.pad(x, (1, 2, 0, 3), mode="circular"),
    "a select of a slice": lambda F, x: x[0][1:],
    "a column": lambda F, x: x[:, 1],
}


@pytest.mark.parametrize("op", OPS.values(), ids=OPS.keys())
def test_meta_in_meta_out_both_ways(T, op):
    x = T.empty(2, 3, 8, 8, device="meta", requires_grad=True)
    y = op(T.nn.functional, x)
    assert y.is_meta
    y.sum().backward()
    assert x.grad.is_meta and tuple(x.grad.shape) == (2, 3, 8, 8) and x.grad.dtype == T.float32


def test_the_shapes_are_pytorchs():
    torch = pytest.importorskip("torch")
    import autograd

    for name, op in OPS.items():
        shapes = [tuple(op(lib.nn.functional, lib.empty(2, 3, 8, 8, device="meta")).shape) for lib in (autograd, torch)]
        assert shapes[0] == shapes[1], name


def test_max_pooling_indices_are_meta_int64(T):
    values, indices = T.nn.functional.max_pool2d(T.empty(2, 3, 8, 8, device="meta"), 3, 2, 1, return_indices=True)
    assert indices.is_meta and indices.dtype == T.int64 and tuple(indices.shape) == tuple(values.shape) == (2, 3, 4, 4)
