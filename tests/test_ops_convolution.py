"""Gradient checks (float64, finite differences) for the convolution and pooling primitives, first and
second order, over hypothesis-drawn shapes and arguments (stride, padding, dilation, groups, ceil_mode)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
import nn.functional as F
from autograd.ops import convolution, pooling
from nn.functional_conv import _pool_sizes
from tests.test_ops import leaf


@st.composite
def conv_setting(draw):
    """Sizes and arguments of a small 2-d convolution whose output is at least 1x1."""
    groups = draw(st.integers(1, 2))
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride, padding, dilation = [(draw(st.integers(low, high)), draw(st.integers(low, high)))
                                 for low, high in ((1, 2), (0, 1), (1, 2))]
    size = tuple(max(1, dilation[a] * (kernel[a] - 1) + 1 - 2 * padding[a] + draw(st.integers(0, 2))) for a in (0, 1))
    return dict(n=draw(st.integers(1, 2)), in_channels=groups * draw(st.integers(1, 2)),
                out_channels=groups * draw(st.integers(1, 2)), kernel=kernel, size=size,
                params=dict(stride=stride, padding=padding, dilation=dilation, groups=groups),
                seed=draw(st.integers(0, 1000)))


def _conv_out(setting):
    p = setting["params"]
    return tuple(convolution.output_size(setting["size"][a], setting["kernel"][a], p["stride"][a], p["padding"][a],
                                         p["dilation"][a]) for a in (0, 1))


@st.composite
def conv_inputs(draw):
    s = draw(conv_setting())
    rng = np.random.default_rng(s["seed"])
    x = rng.standard_normal((s["n"], s["in_channels"]) + s["size"])
    w = rng.standard_normal((s["out_channels"], s["in_channels"] // s["params"]["groups"]) + s["kernel"])
    b = rng.standard_normal(s["out_channels"])
    return [leaf(x), leaf(w), leaf(b)], s["params"]


@st.composite
def conv_transpose_inputs(draw):
    """dL/dy-shaped input, weight and bias of ConvTranspose2d (the adjoint of a drawn convolution)."""
    s = draw(conv_setting())
    rng = np.random.default_rng(s["seed"])
    g = rng.standard_normal((s["n"], s["out_channels"]) + _conv_out(s))
    w = rng.standard_normal((s["out_channels"], s["in_channels"] // s["params"]["groups"]) + s["kernel"])
    p = s["params"]
    out = _conv_out(s)  # the output_padding that gives the convolution's input size back (so at least 1)
    extra = tuple(convolution.leftover(s["size"][a], s["kernel"][a], p["stride"][a], p["padding"][a],
                                       p["dilation"][a], out[a]) for a in (0, 1))
    return [leaf(g), leaf(w), leaf(rng.standard_normal(s["in_channels"]))], dict(p, output_padding=extra)


@st.composite
def weight_grad_inputs(draw):
    s = draw(conv_setting())
    rng = np.random.default_rng(s["seed"])
    x = rng.standard_normal((s["n"], s["in_channels"]) + s["size"])
    g = rng.standard_normal((s["n"], s["out_channels"]) + _conv_out(s))
    return [leaf(x), leaf(g)], dict(s["params"], kernel=s["kernel"])


@st.composite
def unfold_inputs(draw):
    s = draw(conv_setting())
    x = np.random.default_rng(s["seed"]).standard_normal((s["n"], s["in_channels"]) + s["size"])
    p = s["params"]
    return [leaf(x)], dict(kernel_size=s["kernel"], stride=p["stride"], padding=p["padding"], dilation=p["dilation"])


@st.composite
def fold_inputs(draw):
    s = draw(conv_setting())
    p = s["params"]
    out = _conv_out(s)
    cols = np.random.default_rng(s["seed"]).standard_normal(
        (s["n"], s["in_channels"] * s["kernel"][0] * s["kernel"][1], out[0] * out[1]))
    return [leaf(cols)], dict(output_size=s["size"], kernel_size=s["kernel"], stride=p["stride"],
                              padding=p["padding"], dilation=p["dilation"])


@st.composite
def pool_inputs(draw, dilation=True):
    """A pooling input with distinct values (max pooling has no ties to sample) and its arguments."""
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) if dilation else (1, 1)
    padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
    # at least one kernel extent, so that every window reaches into the input
    size = tuple(d * (k - 1) + 1 + draw(st.integers(0, 3)) for k, d in zip(kernel, dil))
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) + size
    values = np.random.default_rng(draw(st.integers(0, 1000))).permutation(int(np.prod(shape))) * 0.1 - 1.0
    params = dict(kernel_size=kernel, stride=stride, padding=padding, ceil_mode=draw(st.booleans()))
    if dilation:
        params["dilation"] = dil
    return [leaf(values.reshape(shape))], params


def _max_pool_gather(x, params):
    """GatherFlat at max pooling's indices (found without a graph), and ScatterFlat through its gradient."""
    _, indices = F.max_pool2d(x.detach(), return_indices=True, **params)
    return pooling.GatherFlat.apply(x, indices=indices.numpy(), overlapping=True)


def _scatter(g, params):
    x = autograd.Tensor(np.arange(np.prod(g.shape[:2]) * 25.0).reshape(*g.shape[:2], 5, 5))
    _, indices = F.max_pool2d(x, 3, stride=1, return_indices=True)
    return pooling.ScatterFlat.apply(g[..., :3, :3], indices=indices.numpy(), shape=x.shape, overlapping=True)


@st.composite
def scatter_inputs(draw):
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), 3, 3)
    return [leaf(np.random.default_rng(draw(st.integers(0, 99))).standard_normal(shape))], None


@st.composite
def winner_inputs(draw, spread):
    """A max pooling's winners (from a tie-free input) and a tensor to spread (dL/dy-shaped) or select from."""
    [x], params = draw(pool_inputs())
    ceil_mode = params.pop("ceil_mode")
    sizes = _pool_sizes(x, params["kernel_size"], params["stride"], params["padding"],
                                          params["dilation"], ceil_mode, 2, "max_pool2d")
    params = dict(zip(pooling.POOL_PARAMS, sizes))
    y = pooling.MaxPool2d.apply(x.detach(), **params)
    winners = pooling.max_pool_winners(x.numpy(), y.numpy(), params)
    values = np.random.default_rng(1).standard_normal(y.shape if spread else x.shape)
    return [leaf(values)], dict(params, winners=winners, **({"shape": x.shape} if spread else {}))


def _avg_pool_transpose(g, params):
    """AvgPool2dTranspose through the public API: the gradient of avg_pool2d, made twice differentiable."""
    x = leaf(np.zeros(params.pop("shape")))
    y = F.avg_pool2d(x, **params)
    (grad,) = autograd.grad(y, x, grad_outputs=g, create_graph=True)
    return grad


@st.composite
def avg_transpose_inputs(draw):
    [x], params = draw(pool_inputs(dilation=False))
    params["count_include_pad"] = draw(st.booleans())
    y = F.avg_pool2d(x.detach(), **params)
    return [leaf(np.random.default_rng(0).standard_normal(y.shape))], dict(params, shape=x.shape)


@st.composite
def avg_inputs(draw):
    [x], params = draw(pool_inputs(dilation=False))
    params["count_include_pad"] = draw(st.booleans())
    return [x], params


CASES = {
    "Conv2d": (conv_inputs(), lambda x, w, b, p: F.conv2d(x, w, b, **p)),
    "ConvTranspose2d": (conv_transpose_inputs(), lambda g, w, b, p: F.conv_transpose2d(g, w, b, **p)),
    "Conv2dWeightGrad": (weight_grad_inputs(), lambda x, g, p: convolution.Conv2dWeightGrad.apply(x, g, **p)),
    "Unfold": (unfold_inputs(), lambda x, p: F.unfold(x, **p)),
    "Fold": (fold_inputs(), lambda x, p: F.fold(x, **p)),
    "MaxPool2d": (pool_inputs(), lambda x, p: F.max_pool2d(x, **p)),
    "GatherFlat": (pool_inputs(), _max_pool_gather),
    "ScatterFlat": (scatter_inputs(), _scatter),
    "MaxPoolSpread": (winner_inputs(spread=True), lambda g, p: pooling.MaxPoolSpread.apply(g, **p)),
    "MaxPoolSelect": (winner_inputs(spread=False), lambda h, p: pooling.MaxPoolSelect.apply(h, **p)),
    "AvgPool2d": (avg_inputs(), lambda x, p: F.avg_pool2d(x, **p)),
    "AvgPool2dTranspose": (avg_transpose_inputs(), lambda g, p: _avg_pool_transpose(g, dict(p))),
}


def _draw(name, data):
    strategy, fn = CASES[name]
    tensors, argument = data.draw(strategy)
    return tensors, (lambda *xs: fn(*xs, argument))


@pytest.mark.parametrize("name", sorted(CASES))
@given(data=st.data())
def test_first_derivatives(name, data):
    tensors, fn = _draw(name, data)
    assert autograd.gradcheck(fn, tensors)


@pytest.mark.parametrize("name", ["Conv2d", "ConvTranspose2d", "Conv2dWeightGrad", "Unfold", "Fold", "AvgPool2d",
                                  "MaxPool2d", "MaxPoolSpread", "MaxPoolSelect"])
@given(data=st.data())
def test_second_derivatives(name, data):
    tensors, fn = _draw(name, data)
    assert autograd.gradgradcheck(fn, tensors)


def test_conv_keeps_its_columns_only_until_the_graph_is_freed():
    x, w = leaf(np.ones((1, 1, 4, 4))), leaf(np.ones((1, 1, 3, 3)))
    y = F.conv2d(x, w)
    assert y.grad_fn.cols is not None
    y.sum().backward()
    assert y.grad_fn.cols is None
    np.testing.assert_allclose(w.grad.numpy(), np.full((1, 1, 3, 3), 4.0))


def test_conv_columns_serve_one_backward_and_are_made_again_for_the_next():
    """dL/dw reads the forward's columns once, then they go (before dL/dx's temporaries); a second backward
    through a retained graph makes them again, with the same gradients."""
    rng = np.random.default_rng(0)
    x, w = leaf(rng.standard_normal((2, 3, 5, 5))), leaf(rng.standard_normal((4, 3, 3, 3)))
    y = F.conv2d(x, w, padding=1, stride=2)
    g = autograd.Tensor(rng.standard_normal(y.shape))
    first = autograd.grad(y, (x, w), grad_outputs=g, retain_graph=True)
    assert y.grad_fn.cols is None
    second = autograd.grad(y, (x, w), grad_outputs=g)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_conv_outputs_stay_batch_innermost_through_relu_and_pooling():
    """Convolutions store their outputs batch-innermost ((C, H, W, N) in memory, see autograd.ops.convolution);
    ReLU and pooling keep that layout, and the gradients flowing back through them too. Values are NCHW's."""
    rng = np.random.default_rng(0)
    x, w = leaf(rng.standard_normal((4, 3, 8, 8))), leaf(rng.standard_normal((5, 3, 3, 3)))
    y = F.conv2d(x, w, padding=1)
    h = F.max_pool2d(y.relu(), 2)
    g = autograd.Tensor(rng.standard_normal(h.shape))  # C order: another layout than h's
    grad_y, grad_x = autograd.grad(h, (y, x), grad_outputs=g)
    for array in (y, h, grad_y, grad_x):
        assert convolution.memory_order(array.numpy()) == [1, 2, 3, 0]
    flat = F.max_pool2d(F.conv2d(x.detach().contiguous(), w.detach(), padding=1).relu(), 2)
    np.testing.assert_allclose(h.numpy(), flat.numpy(), rtol=1e-12)


def test_in_layout_of_copies_only_across_layouts():
    rng = np.random.default_rng(0)
    batch_last = rng.standard_normal((3, 4, 5, 2)).transpose(3, 0, 1, 2)
    c_order = np.ascontiguousarray(batch_last)
    assert convolution.in_layout_of(batch_last, batch_last[:, :, :2]) is batch_last
    moved = convolution.in_layout_of(c_order, batch_last)
    assert convolution.memory_order(moved) == convolution.memory_order(batch_last) == [1, 2, 3, 0]
    np.testing.assert_array_equal(moved, c_order)


def test_a_sum_over_a_batch_innermost_output_gives_its_gradient_in_that_layout():
    """BatchNorm's mean and variance reduce a conv output: their gradient comes back laid out as that
    output is (elementwise NumPy loops over mixed layouts run several times slower), with the same values."""
    import nn

    y = nn.Conv2d(1, 3, 3, padding=1)(autograd.randn(4, 1, 5, 5))
    seen = []
    y.register_hook(lambda g: seen.append(g.numpy()))
    (y.sum((0, 2, 3)) * autograd.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert not seen[0].flags.c_contiguous and seen[0].strides[0] < seen[0].strides[1]  # batch innermost
    np.testing.assert_array_equal(seen[0], np.broadcast_to(np.array([1.0, 2.0, 3.0], np.float32)[:, None, None],
                                                           (4, 3, 5, 5)))
