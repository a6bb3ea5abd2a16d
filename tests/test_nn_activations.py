"""Activations: gradcheck in float64, PyTorch's values and gradients (kinks and extremes
included), the layers' options, reprs and errors."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
import nn
import nn.functional as F
from autograd import Tensor
from tests.test_ops import away_from, leaf

# the kinks of the piecewise activations, and values where a naive formula overflows
SPECIAL = np.array([-800.0, -50.0, -6.0, -3.0, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0, 6.0, 21.0, 50.0, 800.0])
RANDOM = np.random.default_rng(0).standard_normal(40) * 4

# name: (our function, the torch function of the same arguments)
ACTIVATIONS = {
    "relu": (lambda x: F.relu(x), lambda F_, x: F_.relu(x)),
    "relu6": (lambda x: F.relu6(x), lambda F_, x: F_.relu6(x)),
    "hardtanh": (lambda x: F.hardtanh(x, -2.0, 0.5), lambda F_, x: F_.hardtanh(x, -2.0, 0.5)),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda F_, x: F_.leaky_relu(x, 0.2)),
    "elu": (lambda x: F.elu(x, 0.7), lambda F_, x: F_.elu(x, 0.7)),
    "selu": (lambda x: F.selu(x), lambda F_, x: F_.selu(x)),
    "celu": (lambda x: F.celu(x, 1.5), lambda F_, x: F_.celu(x, 1.5)),
    "silu": (lambda x: F.silu(x), lambda F_, x: F_.silu(x)),
    "mish": (lambda x: F.mish(x), lambda F_, x: F_.mish(x)),
    "softplus": (lambda x: F.softplus(x), lambda F_, x: F_.softplus(x)),
    "softplus_beta": (lambda x: F.softplus(x, beta=2.0, threshold=5.0),
                      lambda F_, x: F_.softplus(x, beta=2.0, threshold=5.0)),
    "logsigmoid": (lambda x: F.logsigmoid(x), lambda F_, x: F_.logsigmoid(x)),
    "softsign": (lambda x: F.softsign(x), lambda F_, x: F_.softsign(x)),
    "hardsigmoid": (lambda x: F.hardsigmoid(x), lambda F_, x: F_.hardsigmoid(x)),
    "hardswish": (lambda x: F.hardswish(x), lambda F_, x: F_.hardswish(x)),
    "threshold": (lambda x: F.threshold(x, 0.5, -2.0), lambda F_, x: F_.threshold(x, 0.5, -2.0)),
    "tanhshrink": (lambda x: F.tanhshrink(x), lambda F_, x: F_.tanhshrink(x)),
    "hardshrink": (lambda x: F.hardshrink(x, 1.0), lambda F_, x: F_.hardshrink(x, 1.0)),
    "softshrink": (lambda x: F.softshrink(x, 1.0), lambda F_, x: F_.softshrink(x, 1.0)),
    "gelu": (lambda x: F.gelu(x), lambda F_, x: F_.gelu(x)),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), lambda F_, x: F_.gelu(x, approximate="tanh")),
    "sigmoid": (lambda x: F.sigmoid(x), lambda F_, x: F_.sigmoid(x)),
    "tanh": (lambda x: F.tanh(x), lambda F_, x: F_.tanh(x)),
}
KINKS = {"relu": (0,), "relu6": (0, 6), "hardtanh": (-2, 0.5), "leaky_relu": (0,), "elu": (0,), "selu": (0,),
         "celu": (0,), "softplus_beta": (2.5,), "hardsigmoid": (-3, 3), "hardswish": (-3, 3), "threshold": (0.5,),
         "hardshrink": (-1, 1), "softshrink": (-1, 1)}


@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
@given(x=hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=3), elements=st.floats(-5, 5)))
def test_activation_gradients_match_finite_differences(name, x):
    fn, _ = ACTIVATIONS[name]
    assert autograd.gradcheck(fn, [leaf(away_from(x, KINKS.get(name, ())))])


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation_matches_pytorch_with_kinks_and_extremes(name):
    import torch

    fn, torch_fn = ACTIVATIONS[name]
    values = np.concatenate([SPECIAL, RANDOM])
    weights = np.random.default_rng(1).standard_normal(values.shape)
    x = leaf(values)
    y = fn(x)
    (y * Tensor(weights)).sum().backward()
    expected_x = torch.tensor(values, requires_grad=True)
    expected = torch_fn(torch.nn.functional, expected_x)
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(y.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), expected_x.grad.numpy(), rtol=1e-10, atol=1e-12)
    assert y.dtype == np.float64 and np.isfinite(x.grad.numpy()).all()


@pytest.mark.torch
def test_float32_stays_float32_and_matches_pytorch():
    import torch

    values = np.linspace(-5, 5, 23).astype(np.float32)
    for name, (fn, torch_fn) in ACTIVATIONS.items():
        y = fn(Tensor(values))
        assert y.dtype == np.float32, name
        np.testing.assert_allclose(y.numpy(), torch_fn(torch.nn.functional, torch.tensor(values)).numpy(),
                                   rtol=2e-6, atol=2e-6, err_msg=name)


@pytest.mark.torch
def test_prelu_matches_pytorch_per_channel_and_shared():
    import torch

    rng = np.random.default_rng(2)
    values = rng.standard_normal((2, 3, 4))
    for slopes in (np.array([0.25]), np.array([0.1, -0.3, 2.0])):
        x, w = leaf(values), leaf(slopes)
        y = F.prelu(x, w)
        (y * y).sum().backward()
        tx = torch.tensor(values, requires_grad=True)
        tw = torch.tensor(slopes, requires_grad=True)
        ty = torch.nn.functional.prelu(tx, tw)
        (ty * ty).sum().backward()
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12)
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10)
        np.testing.assert_allclose(w.grad.numpy(), tw.grad.numpy(), rtol=1e-10)
    assert autograd.gradcheck(lambda x, w: F.prelu(x, w), [leaf(away_from(values, (0,))), leaf([0.1, -0.3, 2.0])])
    with pytest.raises(RuntimeError, match="Mismatch of parameter numbers"):
        F.prelu(leaf(values), leaf([0.1, 0.2]))


@pytest.mark.torch
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_glu_softmin_and_softmax_dtype_match_pytorch(dim):
    import torch

    values = np.random.default_rng(3).standard_normal((4, 2, 6))
    for ours, theirs in [(lambda x: F.glu(x, dim), lambda x: torch.nn.functional.glu(x, dim)),
                         (lambda x: F.softmin(x, dim=dim), lambda x: torch.nn.functional.softmin(x, dim=dim)),
                         (lambda x: F.softmax(x, dim=dim), lambda x: torch.nn.functional.softmax(x, dim=dim)),
                         (lambda x: F.log_softmax(x, dim=dim), lambda x: torch.nn.functional.log_softmax(x, dim))]:
        x, tx = leaf(values), torch.tensor(values, requires_grad=True)
        y, ty = ours(x), theirs(tx)
        (y * y).sum().backward()
        (ty * ty).sum().backward()
        np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), rtol=1e-10, atol=1e-14)
    assert autograd.gradcheck(lambda x: F.glu(x, dim), [leaf(values[:2, :, :2])])
    y = F.softmax(Tensor(values.astype(np.float32)), dim=dim, dtype=autograd.float64)
    assert y.dtype == np.float64
    y = F.log_softmax(Tensor(values), dim, dtype=autograd.float32)
    assert y.dtype == np.float32


def test_glu_on_an_odd_dim_raises_as_pytorch():
    with pytest.raises(RuntimeError, match="Halving dimension must be even, but dimension 1 is size 3"):
        F.glu(Tensor(np.zeros((2, 3))), 1)


@pytest.mark.torch
def test_softmax_without_dim_picks_pytorchs_implicit_dim_and_warns():
    import torch

    values = np.random.default_rng(4).standard_normal((2, 3, 4))
    for shape in [(5,), (2, 3), (2, 3, 4), (2, 3, 2, 2)]:
        data = values.reshape(-1)[:int(np.prod(shape))].reshape(shape)
        with pytest.warns(UserWarning, match="Implicit dimension"):
            y = nn.Softmax()(Tensor(data))
        with pytest.warns(UserWarning):
            expected = torch.nn.Softmax()(torch.tensor(data))
        np.testing.assert_allclose(y.numpy(), expected.numpy(), rtol=1e-12)


@pytest.mark.torch
def test_layers_match_pytorch_layers_with_their_options_and_reprs():
    import torch

    pairs = [
        (nn.ELU(alpha=0.5), torch.nn.ELU(alpha=0.5)),
        (nn.SELU(), torch.nn.SELU()),
        (nn.CELU(alpha=2.0), torch.nn.CELU(alpha=2.0)),
        (nn.SiLU(), torch.nn.SiLU()),
        (nn.Mish(), torch.nn.Mish()),
        (nn.Softplus(beta=3.0, threshold=4.0), torch.nn.Softplus(beta=3.0, threshold=4.0)),
        (nn.Softsign(), torch.nn.Softsign()),
        (nn.Hardtanh(-0.5, 2.0), torch.nn.Hardtanh(-0.5, 2.0)),
        (nn.ReLU6(), torch.nn.ReLU6()),
        (nn.ReLU(inplace=True), torch.nn.ReLU(inplace=True)),
        (nn.LeakyReLU(0.1, inplace=True), torch.nn.LeakyReLU(0.1, inplace=True)),
        (nn.Hardsigmoid(), torch.nn.Hardsigmoid()),
        (nn.Hardswish(), torch.nn.Hardswish()),
        (nn.LogSigmoid(), torch.nn.LogSigmoid()),
        (nn.Threshold(0.1, 20.0), torch.nn.Threshold(0.1, 20.0)),
        (nn.Softmin(dim=1), torch.nn.Softmin(dim=1)),
        (nn.Softmax(dim=0), torch.nn.Softmax(dim=0)),
        (nn.LogSoftmax(dim=1), torch.nn.LogSoftmax(dim=1)),
        (nn.GLU(dim=1), torch.nn.GLU(dim=1)),
        (nn.GELU(approximate="tanh"), torch.nn.GELU(approximate="tanh")),
        (nn.Tanhshrink(), torch.nn.Tanhshrink()),
        (nn.Hardshrink(0.3), torch.nn.Hardshrink(0.3)),
        (nn.Softshrink(0.3), torch.nn.Softshrink(0.3)),
        (nn.PReLU().double(), torch.nn.PReLU().double()),  # (PReLU does not promote a float32 weight)
        (nn.PReLU(4, init=0.1).double(), torch.nn.PReLU(4, init=0.1).double()),
        (nn.Sigmoid(), torch.nn.Sigmoid()),
        (nn.Tanh(), torch.nn.Tanh()),
        (nn.Softmax2d(), torch.nn.Softmax2d()),
    ]
    values = np.random.default_rng(5).standard_normal((3, 4, 2, 2)) * 3
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)
        y = ours(Tensor(values.copy()))
        expected = theirs(torch.tensor(values.copy()))
        np.testing.assert_allclose(y.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-14,
                                   err_msg=repr(ours))
    assert [n for n, _ in nn.PReLU(3).named_parameters()] == ["weight"]
    np.testing.assert_array_equal(nn.PReLU(3, init=0.1).weight.numpy(), np.full(3, 0.1, np.float32))


def test_inplace_writes_into_an_untracked_input_and_leaves_a_tracked_one_to_the_graph():
    x = Tensor(np.array([-1.0, 2.0]))
    y = nn.ReLU(inplace=True)(x)
    assert y is x and x.tolist() == [0.0, 2.0]
    x = Tensor(np.array([-1.0, 2.0]), requires_grad=True)
    y = F.elu(x * 1.0, inplace=True)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [np.exp(-1.0), 1.0])
    x = Tensor(np.array([-1.0, 2.0]))
    assert F.hardtanh(x, inplace=True) is x and x.tolist() == [-1.0, 1.0]


def test_alpha_dropout_keeps_selu_statistics_and_is_identity_in_eval():
    autograd.manual_seed(0)
    x = Tensor(np.random.default_rng(6).standard_normal(200_000))
    y = F.alpha_dropout(x, 0.2, training=True).numpy()
    assert abs(y.mean()) < 0.01 and abs(y.std() - 1) < 0.01
    assert nn.AlphaDropout(0.2).eval()(x) is x
    assert F.alpha_dropout(x, 0.2) is x  # training=False is the default, as PyTorch
    layer = nn.AlphaDropout(0.5)
    assert repr(layer) == "AlphaDropout(p=0.5, inplace=False)"


def test_dropout_inplace_and_bad_probability():
    autograd.manual_seed(1)
    x = Tensor(np.ones(1000))
    y = F.dropout(x, 0.5, inplace=True)
    assert y is x and set(np.unique(x.numpy())) == {0.0, 2.0}
    with pytest.raises(ValueError, match="between 0 and 1"):
        F.dropout(x, 1.5)


@pytest.mark.filterwarnings("ignore:.*Received a 3D input to dropout2d")
@pytest.mark.parametrize("layer, shape", [(nn.Dropout1d, (50, 40, 6)), (nn.Dropout2d, (50, 40, 3, 2)),
                                          (nn.Dropout3d, (40, 50, 2, 2, 2)), (nn.Dropout2d, (40, 3, 2))])
def test_channel_dropout_zeroes_whole_channels(layer, shape):
    autograd.manual_seed(2)
    if len(shape) == 3 and layer is nn.Dropout2d:
        with pytest.warns(UserWarning, match="3D input to dropout2d"):
            y = layer(0.3)(autograd.ones(*shape)).numpy()
        spatial = 1
    else:
        y = layer(0.3)(autograd.ones(*shape)).numpy()
        spatial = {nn.Dropout1d: 1, nn.Dropout2d: 2, nn.Dropout3d: 3}[layer]
    channels = y.reshape(shape[:len(shape) - spatial] + (-1,))
    assert (channels.min(-1) == channels.max(-1)).all()  # each channel kept or dropped whole
    draws = channels[..., 0].size  # (one per channel: 40 for the unbatched input, whose fraction moves by 0.07)
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.7)} and abs((y == 0).mean() - 0.3) < 3 * (0.21 / draws) ** 0.5
    assert layer(0.3).eval()(autograd.ones(*shape)).numpy().min() == 1.0
    assert repr(layer(0.3)) == f"{layer.__name__}(p=0.3, inplace=False)"
    with pytest.raises(RuntimeError, match="input"):
        layer(0.3)(autograd.ones(*shape[:1]))


@pytest.mark.torch
def test_argument_errors_have_pytorchs_types():
    import torch

    x = np.array([0.5, -1.0])
    for ours, theirs in [(lambda: nn.Hardtanh(2, 1), lambda: torch.nn.Hardtanh(2, 1)),
                         (lambda: F.hardtanh(Tensor(x), 2.0, 1.0), lambda: torch.nn.functional.hardtanh(
                             torch.tensor(x), 2.0, 1.0)),
                         (lambda: F.celu(Tensor(x), 0.0), lambda: torch.nn.functional.celu(torch.tensor(x), 0.0)),
                         (lambda: F.softshrink(Tensor(x), -1.0),
                          lambda: torch.nn.functional.softshrink(torch.tensor(x), -1.0)),
                         (lambda: F.glu(Tensor(np.array(1.0))), lambda: torch.nn.functional.glu(torch.tensor(1.0)))]:
        with pytest.raises(Exception) as expected:
            theirs()
        with pytest.raises(type(expected.value)):
            ours()


def test_functional_in_place_variants_write_into_their_input():
    for function, args, expected in [(F.relu_, (), [0.0, 2.0]), (F.elu_, (1.0,), [np.expm1(-1.0), 2.0]),
                                     (F.leaky_relu_, (0.5,), [-0.5, 2.0]), (F.hardtanh_, (), [-1.0, 1.0]),
                                     (F.threshold_, (1.0, 7.0), [7.0, 2.0])]:
        x = Tensor(np.array([-1.0, 2.0]))
        assert function(x, *args) is x
        np.testing.assert_allclose(x.numpy(), expected, rtol=1e-15)
    out = Tensor(np.zeros(2))
    assert F.normalize(Tensor(np.array([3.0, 4.0])), dim=0, out=out) is out
    np.testing.assert_allclose(out.numpy(), [0.6, 0.8])
