"""The last of PyTorch's test/test_nn.py (TestNNDeviceType's tail on CPU, TestFunctionalPickle, TestFusionUtils)
not ported elsewhere: softshrink against literals, threshold written in place into expanded memory (allowed: its
write is idempotent), triplet_margin_with_distance_loss against triplet_margin_loss and with other distances,
a module cast to a complex dtype (its warning), modules on the meta device (to() refused, to_empty, recurse=False),
channel_shuffle in 3, 4 and 5 dimensions, pickling F.softsign, the fusion helpers keeping requires_grad, and an
LSTM over packed sequences of any lengths against each sequence run alone. Each test runs on chainrule's `nn`
and, where it is installed, on PyTorch's; the expectations are literals or NumPy."""

import itertools
import pickle
import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def test_softshrink_against_literals(T, nn, F):
    x = T.tensor([[1.21, 0.56, 0.5001, 0.4999, 1.2357, -0.4999, -0.5001, -1.154, 0.254, 2.3554, float("nan")],
                  [-0.8203, -1.2344, -0.5234, 2.5312, -0.4551, 8.5458, 0.0557, -3.5486, 0.6797, 0.75, 0.0]])
    expected = [[0.71, 0.06, 0.0001, 0.0, 0.7357, 0.0, -0.0001, -0.654, 0.0, 1.8554, float("nan")],
                [-0.3203, -0.7344, -0.0234, 2.0312, 0.0, 8.0458, 0.0, -3.0486, 0.1797, 0.25, 0.0]]
    close(nn.Softshrink()(x), np.array(expected, np.float32), rtol=0, atol=1e-4)
    raises(RuntimeError, "lambda must be in range \\[0, 3.40282e\\+38\\] for input dtype Float, but found -1",
           nn.Softshrink(-1), T.randn(5))
    raises(RuntimeError, "lambda must be in range \\[0, 1.79769e\\+308\\] for input dtype Double, but found -1.5",
           F.softshrink, T.randn(5, dtype=T.float64), -1.5)


def test_threshold_in_place_on_expanded_memory(T, F):
    # every element sharing a memory location holds one value and gets one result: PyTorch allows it
    row = np.array([[0.9, -0.3, 0.2, 1.7, 0.5, -2.0]], np.float32)
    x = T.tensor(row).expand((6, 6))
    F.threshold(x, 0.5, 0.5, inplace=True)
    expected = np.where(row > 0.5, row, np.float32(0.5))
    same(x, np.broadcast_to(expected, (6, 6)))
    F.threshold_(x, 1.0, -1.0)
    same(x, np.broadcast_to(np.where(expected > 1.0, expected, np.float32(-1.0)), (6, 6)))
    # other in-place activations still refuse it
    raises(RuntimeError, "unsupported operation", F.leaky_relu, T.tensor(row).expand((6, 6)), inplace=True)
    # in place on a tracked tensor: the gradient is 1 where kept
    a = T.tensor([-1.0, 2.0, 0.3], requires_grad=True)
    b = a * 1
    F.threshold(b, 0.5, -7.0, inplace=True)
    b.sum().backward()
    same(b, [-7.0, 2.0, -7.0])
    same(a.grad, [0.0, 1.0, 0.0])


@pytest.mark.parametrize("margin, swap, reduction", list(itertools.product((0.5, 1, 1.5), (True, False),
                                                                             ("none", "mean", "sum"))))
def test_triplet_margin_with_distance_loss_defaults_are_triplet_margin_loss(T, nn, F, margin, swap, reduction):
    rng = np.random.default_rng(0)
    a, p, n = (rng.standard_normal((5, 10)) for _ in range(3))
    kwargs = {"margin": margin, "swap": swap, "reduction": reduction}
    anchor, positive, negative = (T.tensor(v, requires_grad=True) for v in (a, p, n))
    expected = F.triplet_margin_loss(anchor, positive, negative, **kwargs)
    close(F.triplet_margin_with_distance_loss(anchor, positive, negative, **kwargs), values(expected), rtol=1e-6)
    close(nn.TripletMarginWithDistanceLoss(**kwargs)(anchor, positive, negative),
          values(nn.TripletMarginLoss(**kwargs)(anchor, positive, negative)), rtol=1e-6)

    def dist(x, y):  # pairwise_distance's ‖x - y + ε‖₂, ε = 1e-6
        return np.sqrt(((x - y + 1e-6) ** 2).sum(1))

    to_negative = np.minimum(dist(a, n), dist(p, n)) if swap else dist(a, n)
    per = np.maximum(dist(a, p) - to_negative + margin, 0)
    close(expected, {"none": per, "mean": per.mean(), "sum": per.sum()}[reduction], rtol=1e-10)
    if reduction == "sum":  # (one gradcheck per margin and swap: the reductions share the gradient's rule)
        assert T.autograd.gradcheck(lambda x, y, z: F.triplet_margin_with_distance_loss(x, y, z, **kwargs),
                                    (anchor, positive, negative))


def test_triplet_margin_with_other_distances(T, nn, F):
    rng = np.random.default_rng(1)
    a, p, n = (rng.standard_normal((5, 10)) for _ in range(3))
    anchor, positive, negative = (T.tensor(v, requires_grad=True) for v in (a, p, n))

    def cosine(x, y):
        return 1 - (x * y).sum(1) / np.maximum(np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1), 1e-8)

    for distance, np_distance in ((nn.PairwiseDistance(), lambda x, y: np.sqrt(((x - y + 1e-6) ** 2).sum(1))),
                                  (lambda x, y: 1.0 - F.cosine_similarity(x, y), cosine)):
        for reduction, margin, swap in itertools.product(("mean", "none", "sum"), (1.0, 1.5, 0.5), (True, False)):
            kwargs = {"distance_function": distance, "reduction": reduction, "margin": margin, "swap": swap}
            functional = F.triplet_margin_with_distance_loss(anchor, positive, negative, **kwargs)
            same(nn.TripletMarginWithDistanceLoss(**kwargs)(anchor, positive, negative), values(functional))
            to_negative = np.minimum(np_distance(a, n), np_distance(p, n)) if swap else np_distance(a, n)
            per = np.maximum(np_distance(a, p) - to_negative + margin, 0)
            close(functional, {"none": per, "mean": per.mean(), "sum": per.sum()}[reduction], rtol=1e-10)
        assert T.autograd.gradcheck(lambda x, y, z, distance=distance: F.triplet_margin_with_distance_loss(
            x, y, z, distance_function=distance, swap=True), (anchor, positive, negative))


@pytest.mark.parametrize("dtype", ["complex64", "complex128", "float32"])
def test_module_to_complex_warns(T, nn, dtype):
    m = nn.Linear(3, 5)
    assert m.to("cpu") is m
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m.to(getattr(T, dtype))
    assert str(m.weight.dtype).endswith(dtype)
    complex_warnings = [w for w in caught if "Complex modules are a new feature" in str(w.message)]
    assert len(complex_warnings) == (dtype != "float32")
    out = m(T.ones(2, 3, dtype=getattr(T, dtype)))
    close(out, values(m.weight).sum(1)[None].repeat(2, 0) + values(m.bias), rtol=1e-5)


def test_modules_on_the_meta_device(T, nn):
    class Layer(nn.Module):
        def __init__(self, n):
            super().__init__()
            self.weight = nn.Parameter(T.randn(n, n))
            self.register_buffer("buf", T.randn(n))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(T.randn(3, 5))
            self.register_buffer("buf1", T.randn(5))
            self.layer = Layer(5)

    with T.device("meta"):
        net = Net()
    raises(NotImplementedError, "Cannot copy out of meta tensor; no data! Please use torch.nn.Module.to_empty\\(\\) "
           "instead of torch.nn.Module.to\\(\\) when moving module from meta to a different device.", net.to, "cpu")
    net.to_empty(device="cpu", recurse=False)  # the module's own tensors only
    assert not net.weight.is_meta and not net.buf1.is_meta
    assert all(t.is_meta for t in (*net.layer.parameters(), *net.layer.buffers()))
    net.to_empty(device="cpu")
    assert not any(t.is_meta for t in (*net.parameters(), *net.buffers()))
    with T.no_grad():
        nn.init.ones_(net.weight)
    same(T.ones(2, 3) @ net.weight, np.full((2, 5), 3.0, np.float32))
    net.to_empty(device="meta")
    assert net.weight.is_meta and tuple(net.weight.shape) == (3, 5)


def test_channel_shuffle_in_3_4_and_5_dims(T, nn, F):
    for shape in ((1, 4, 2), (1, 4, 2, 2), (1, 4, 1, 2, 2)):
        x = np.arange(1, 1 + int(np.prod(shape))).reshape(shape)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            out = F.channel_shuffle(T.tensor(x), 2)
        same(out, x[:, [0, 2, 1, 3]])  # groups of 2: channels (0, 1), (2, 3) interleaved
        same(nn.ChannelShuffle(2)(T.tensor(x)), x[:, [0, 2, 1, 3]])


def test_pickle_softsign(T, F):
    softsign = pickle.loads(pickle.dumps(F.softsign))
    close(softsign(T.tensor([1.0, -3.0])), [0.5, -0.75])


def test_fusion_helpers_keep_requires_grad(T, nn):
    fusion = nn.utils.fusion
    conv, bn2 = nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3)
    linear, bn1 = nn.Linear(3, 3), nn.BatchNorm1d(3)
    for weight_rg, bias_rg in itertools.product((True, False), (True, False)):
        for layer, bn, fuse in ((conv, bn2, fusion.fuse_conv_bn_weights), (linear, bn1, fusion.fuse_linear_bn_weights)):
            layer.weight.requires_grad = weight_rg
            layer.bias.requires_grad = bias_rg
            weight, bias = fuse(layer.weight, layer.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
            assert weight.requires_grad == weight_rg and bias.requires_grad == bias_rg
            assert isinstance(weight, nn.Parameter) and isinstance(bias, nn.Parameter)
            # fresh statistics (mean 0, var 1, γ 1, β 0): the weight divided by √(1 + ε)
            close(weight, values(layer.weight) / np.sqrt(1 + 1e-5), rtol=1e-6)
            close(bias, values(layer.bias) / np.sqrt(1 + 1e-5), rtol=1e-6)


@pytest.mark.parametrize("enforce_sorted, lengths", [(True, [5]), (False, [5]), (True, [10, 10, 6, 2, 2, 1, 1]),
                                                     (False, [2, 1, 3, 2, 10, 5, 3])])
@pytest.mark.parametrize("proj_size", [0, 2])
def test_lstm_over_packed_sequences_as_each_alone(T, nn, enforce_sorted, lengths, proj_size):
    T.manual_seed(0)
    pack, unpack = nn.utils.rnn.pack_padded_sequence, nn.utils.rnn.pad_packed_sequence
    lstm = nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=proj_size).double()
    longest, batch, out_size = max(lengths), len(lengths), proj_size or 4
    x = T.randn(longest, batch, 3, dtype=T.float64, requires_grad=True)
    hidden0 = (T.randn(4, batch, out_size, dtype=T.float64), T.randn(4, batch, 4, dtype=T.float64))
    outputs, states = [], []
    for i, n in enumerate(lengths):  # each sequence alone, its padding zeros
        out, (h, c) = lstm(x[:n, i:i + 1], tuple(s[:, i:i + 1].contiguous() for s in hidden0))
        outputs.append(T.cat([out, out.new_zeros(longest - n, 1, 2 * out_size)]))
        states.append((h, c))
    alone = T.cat(outputs, 1)
    packed_out, (h, c) = lstm(pack(x, lengths, enforce_sorted=enforce_sorted), hidden0)
    together, together_lengths = unpack(packed_out)
    close(together, values(alone), rtol=1e-10, atol=1e-12)
    close(h, values(T.cat([s[0] for s in states], 1)), rtol=1e-10, atol=1e-12)
    close(c, values(T.cat([s[1] for s in states], 1)), rtol=1e-10, atol=1e-12)
    same(together_lengths, lengths)
    alone.sum().backward()
    grad_alone = values(x.grad).copy()
    grads_alone = [values(p.grad).copy() for p in lstm.parameters()]
    x.grad = None
    lstm.zero_grad()
    together.sum().backward()
    close(x.grad, grad_alone, rtol=1e-10, atol=1e-12)
    for p, g in zip(lstm.parameters(), grads_alone):
        close(p.grad, g, rtol=1e-9, atol=1e-12)
