"""Regressions found by session 31's probe of pytorch/examples (tests/test_programs_probe31_examples_fx.py), torch-free.

The activation and dropout layers that call the function their class holds (nn.ELU's F.elu, nn.Softshrink's,
nn.Sigmoid's, nn.Dropout's F.dropout) captured it before dispatching was installed, so the layer ran the plain
function: an entered TorchFunctionMode saw the ops inside it (``le``, ``write_out``) instead of ``F.elu``, and a
symbolic trace through the layer (a tracer whose ``is_leaf_module`` is False: fx/custom_tracer.py's
LowerReluTracer, widened) asked ``bool`` of a proxy and failed. PyTorch's layers call their function, which asks.
nn.Upsample, nn.PixelShuffle, nn.PixelUnshuffle and nn.ChannelShuffle did the same with the function their module
holds; nn.Unflatten computed its shape from ``input.ndim`` where PyTorch's calls ``input.unflatten``."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F

# (layer, its function as PyTorch's layer calls it)
LAYERS = [
    (nn.ELU(), F.elu), (nn.CELU(), F.celu), (nn.Sigmoid(), autograd.sigmoid), (nn.Tanh(), autograd.tanh),
    (nn.LogSigmoid(), F.logsigmoid), (nn.Softsign(), F.softsign), (nn.Tanhshrink(), F.tanhshrink),
    (nn.Softshrink(), F.softshrink), (nn.Hardshrink(), F.hardshrink), (nn.Softmax(1), F.softmax),
    (nn.LogSoftmax(1), F.log_softmax), (nn.Softmin(1), F.softmin), (nn.Dropout(), F.dropout),
    (nn.Dropout1d(), F.dropout1d), (nn.Dropout2d(), F.dropout2d), (nn.AlphaDropout(), F.alpha_dropout),
    (nn.FeatureAlphaDropout(), F.feature_alpha_dropout),
]


class FirstCall(autograd.overrides.TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.seen.append(func)
        return func(*args, **(kwargs or {}))


@pytest.mark.filterwarnings("ignore:dropout2d. Received a 3D input")
@pytest.mark.parametrize("layer, function", LAYERS, ids=[type(layer).__name__ for layer, _ in LAYERS])
def test_a_mode_sees_the_layers_function(layer, function):
    x = autograd.randn(2, 3, 4, generator=autograd.Generator().manual_seed(0))
    layer.eval()  # (dropout the identity: the value is checked below)
    mode = FirstCall()
    with mode:
        y = layer(x)
    assert mode.seen[0] == function and len(mode.seen) == 1  # the layer's function, answered by the mode once
    expected = function(x, 1) if isinstance(layer, (nn.Softmax, nn.LogSoftmax, nn.Softmin)) else (
        x if "ropout" in type(layer).__name__ else function(x))
    np.testing.assert_array_equal(y.numpy(), expected.numpy())


class Lowering(autograd.fx.Tracer):
    def is_leaf_module(self, m, qualname):
        return False


class Wrapped(nn.Module):
    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x)


@pytest.mark.filterwarnings("ignore:dropout2d. Received a 3D input")
@pytest.mark.parametrize("layer, function", LAYERS, ids=[type(layer).__name__ for layer, _ in LAYERS])
def test_a_trace_through_the_layer_records_its_function(layer, function):
    layer.eval()  # (dropout the identity: the trace records the training flag as a constant, as PyTorch's)
    graph = Lowering().trace(Wrapped(layer))
    calls = [node for node in graph.nodes if node.op in ("call_function", "call_method")]
    assert len(calls) == 1 and calls[0].op == "call_function" and calls[0].target == function
    module = autograd.fx.GraphModule(Wrapped(layer), graph).eval()
    x = autograd.randn(2, 3, 4, generator=autograd.Generator().manual_seed(1))
    np.testing.assert_array_equal(module(x).numpy(), Wrapped(layer).eval()(x).numpy())


def test_a_subclass_answers_for_nn_elu():
    class Tagged(autograd.Tensor):
        asked = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.asked.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    x = autograd.tensor([-1.0, 0.5]).as_subclass(Tagged)
    y = nn.ELU(alpha=2.0)(x)
    assert F.elu in Tagged.asked and type(y) is Tagged
    np.testing.assert_allclose(y.numpy(), [2.0 * (np.exp(-1.0) - 1.0), 0.5], rtol=1e-6)


# (layer, input shape, the function or method a trace through it records, as PyTorch's does)
MORE_LAYERS = [
    (lambda: nn.Upsample(scale_factor=2), (1, 2, 3, 3), ("call_function", "interpolate")),
    (lambda: nn.PixelShuffle(2), (1, 4, 2, 2), ("call_function", "pixel_shuffle")),
    (lambda: nn.PixelUnshuffle(2), (1, 1, 4, 4), ("call_function", "pixel_unshuffle")),
    (lambda: nn.ChannelShuffle(2), (1, 4, 2, 2), ("call_function", "channel_shuffle")),
    (lambda: nn.Unflatten(1, (2, 2)), (3, 4, 5), ("call_method", "unflatten")),
]


@pytest.mark.parametrize("make, shape, recorded", MORE_LAYERS, ids=[r[1] for _, _, r in MORE_LAYERS])
def test_a_trace_through_a_rearranging_layer(make, shape, recorded):
    """nn.Upsample and the shuffles called the function their module holds (not dispatching), nn.Unflatten
    computed its shape from ``input.ndim``: a trace through each failed on the proxy."""
    graph = Lowering().trace(Wrapped(make()))
    calls = [node for node in graph.nodes if node.op in ("call_function", "call_method")]
    target = calls[0].target if isinstance(calls[0].target, str) else calls[0].target.__name__
    assert len(calls) == 1 and (calls[0].op, target) == recorded
    x = autograd.arange(float(np.prod(shape))).reshape(shape)
    module = autograd.fx.GraphModule(Wrapped(make()), graph)
    np.testing.assert_array_equal(module(x).numpy(), make()(x).numpy())


def test_unflatten_keeps_its_errors():
    with pytest.raises(RuntimeError, match=r"unflatten: Provided sizes \[2, 3\] don't multiply up to the size of dim "
                                           r"1 \(4\) in the input tensor"):
        nn.Unflatten(1, (2, 3))(autograd.zeros(3, 4))
    assert nn.Unflatten(-1, [2, -1])(autograd.zeros(3, 4)).shape == (3, 2, 2)
