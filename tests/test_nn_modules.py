"""Modules and layers: discovery, modes, state dicts, layers' gradients, and PyTorch."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from autograd import Tensor


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.blocks = nn.ModuleList([nn.Linear(8, 8), nn.Tanh()])
        self.heads = nn.ModuleDict({"a": nn.Linear(8, 2)})
        self.hidden = [nn.Linear(8, 8)]  # a plain list: an ordinary attribute, not registered (PyTorch's rule)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        h = self.drop(self.bn(self.fc1(x).relu()))
        for block in self.blocks:
            h = block(h)
        return self.heads["a"](h)


def test_parameters_are_found_through_attributes_and_module_containers():
    net = Net()
    names = [name for name, _ in net.named_parameters()]
    assert names == ["fc1.weight", "fc1.bias", "blocks.0.weight", "blocks.0.bias", "heads.a.weight",
                     "heads.a.bias", "bn.weight", "bn.bias"]
    assert len(list(net.parameters())) == 8
    # a module hidden in a plain list (a target network, a teacher) is no child: not trained, not saved, not moved
    assert isinstance(net.hidden, list) and "hidden" not in dict(net.named_children())
    assert not any(key.startswith("hidden") for key in net.state_dict())
    assert net.double().hidden[0].weight.dtype == autograd.float32


def test_shared_parameters_are_listed_once():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    assert len(list(model.parameters())) == 2


def test_train_and_eval_reach_every_child():
    model = Net()
    model.eval()
    assert all(not m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_zero_grad():
    model = Net()
    model(autograd.randn(5, 4)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=False)
    assert all(float(np.abs(p.grad.numpy()).sum()) == 0 for p in model.parameters())
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_state_dict_round_trips_through_save_and_load(tmp_path):
    autograd.manual_seed(0)
    model = Net()
    model(autograd.randn(6, 4))  # moves BatchNorm's running statistics
    path = tmp_path / "net.npz"
    autograd.save(model.state_dict(), path)
    fresh = Net()
    fresh.load_state_dict(autograd.load(path))
    for (name, a), (_, b) in zip(model.state_dict().items(), fresh.state_dict().items()):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    assert "bn.running_mean" in model.state_dict() and "bn.num_batches_tracked" in model.state_dict()
    model.eval()
    fresh.eval()
    x = autograd.randn(3, 4)
    np.testing.assert_array_equal(model(x).numpy(), fresh(x).numpy())


def test_load_state_dict_reports_missing_unexpected_and_mismatched_keys():
    model = Net()
    state = model.state_dict()
    del state["fc1.bias"]
    state["extra.weight"] = autograd.zeros(1)
    state["fc1.weight"] = autograd.zeros(3, 3)
    with pytest.raises(RuntimeError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert 'Missing key(s) in state_dict: "fc1.bias"' in message  # PyTorch's quotes
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in message
    assert "size mismatch for fc1.weight: copying a param with shape Size([3, 3])" in message
    state["fc1.weight"] = autograd.zeros(8, 4)
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == ["fc1.bias"] and result.unexpected_keys == ["extra.weight"]


def test_repr_is_nested_like_pytorch():
    text = repr(nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU())))
    assert text == ("Sequential(\n  (0): Linear(in_features=2, out_features=3, bias=True)\n"
                    "  (1): Sequential(\n    (0): ReLU()\n  )\n)")


def test_sequential_indexing_and_apply():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    assert isinstance(model[0], nn.Linear) and len(model[1:]) == 2 and len(model) == 3
    seen = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["Linear", "ReLU", "Linear", "Sequential"]


def test_replacing_a_module_by_index():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    model[-1] = nn.Tanh()
    model[0] = nn.DropConnect(model[0], p=0.1)
    assert [type(m).__name__ for m in model] == ["DropConnect", "Tanh"]
    assert [name for name, _ in model.named_parameters()] == ["0.linear.weight", "0.linear.bias"]
    layers = nn.ModuleList([nn.ReLU()])
    layers[0] = nn.Sigmoid()
    assert isinstance(layers[0], nn.Sigmoid)
    with pytest.raises(IndexError, match="out of range for Sequential of length 2"):
        model[5] = nn.ReLU()


def test_linear_has_pytorch_shapes_and_default_init_bounds():
    autograd.manual_seed(0)
    layer = nn.Linear(400, 30)
    assert layer.weight.shape == (30, 400) and layer.bias.shape == (30,)
    bound = 1 / np.sqrt(400)
    for p in (layer.weight, layer.bias):
        assert np.abs(p.numpy()).max() <= bound
        assert np.abs(p.numpy()).max() > 0.9 * bound  # really spread over the interval
    assert layer(autograd.randn(7, 400)).shape == (7, 30)
    assert layer(autograd.randn(2, 5, 400)).shape == (2, 5, 30)


def test_linear_feature_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"input of shape \(2, 5\) has 5 features .* \(3, 4\) expects 4"):
        nn.Linear(4, 3)(autograd.randn(2, 5))


LAYERS = {
    "linear": (lambda x: F.linear(x, x[:2, :] * 0.5 + 1.0, x[0, :2]), (4, 3)),
    "linear_3d": (lambda x: F.linear(x.reshape(2, 2, 3), x[:2] * 2.0), (4, 3)),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), (4, 3)),
    "gelu": (lambda x: F.gelu(x), (4, 3)),
    "gelu_tanh": (lambda x: F.gelu(x, approximate="tanh"), (4, 3)),
    "batch_norm": (lambda x: F.batch_norm(x, None, None, x[0] + 2.0, x[1], training=True), (4, 3)),
    "batch_norm_2d": (lambda x: F.batch_norm(x.reshape(2, 3, 1, 2), None, None, training=True), (4, 3)),
    "layer_norm": (lambda x: F.layer_norm(x, 3, x[0] + 1.0, x[1]), (4, 3)),
    "group_norm": (lambda x: F.group_norm(x.reshape(2, 4, 3), 2, x[:4, 0] + 1.5, x[4:, 1]), (8, 3)),
    "pairwise_distance": (lambda x: F.pairwise_distance(x[:2], x[2:]), (4, 3)),
    "cosine_similarity": (lambda x: F.cosine_similarity(x[:2], x[2:]), (4, 3)),
    "ensemble_probabilities": (lambda x: _ensemble("probabilities")(x), (4, 3)),
}


def _ensemble(combine):
    class Scale(nn.Module):
        def __init__(self, k):
            super().__init__()
            self.k = k

        def forward(self, x):
            return x * self.k

    return nn.Ensemble([Scale(1.0), Scale(-2.0)], combine=combine)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layer_gradients_match_finite_differences(name):
    fn, shape = LAYERS[name]
    x = Tensor(np.random.default_rng(1).standard_normal(shape), requires_grad=True)
    assert autograd.gradcheck(fn, [x])


@pytest.mark.parametrize("input_shape, outputs", [((3, 2), 4), ((5, 2), 3), ((2,), 3), ((2, 3, 2), 4)],
                         ids=["fewer_rows_than_outputs", "more_rows", "vector", "batched"])
def test_affine_map_second_derivative(input_shape, outputs):
    rng = np.random.default_rng(2)
    x = Tensor(rng.standard_normal(input_shape), requires_grad=True)
    w = Tensor(rng.standard_normal((outputs, 2)), requires_grad=True)
    b = Tensor(rng.standard_normal(outputs), requires_grad=True)
    assert autograd.gradgradcheck(lambda x, w: F.linear(x, w).tanh(), [x, w])
    assert autograd.gradgradcheck(lambda x, w, b: F.linear(x, w, b).tanh(), [x, w, b])


def test_dropout_is_inverted_and_off_in_eval():
    autograd.manual_seed(0)
    layer = nn.Dropout(0.25)
    y = layer(autograd.ones(100_000)).numpy()
    assert set(np.unique(y)) == {0.0, np.float32(1 / 0.75)}
    assert abs((y == 0).mean() - 0.25) < 0.01
    layer.eval()
    np.testing.assert_array_equal(layer(autograd.ones(10)).numpy(), np.ones(10))
    assert nn.Dropout(1.0)(autograd.ones(5)).numpy().sum() == 0


def test_dropconnect_drops_weights_in_training_only():
    autograd.manual_seed(0)
    linear = nn.Linear(50, 40)
    layer = nn.DropConnect(linear, p=0.5)
    x = autograd.eye(50)  # row i of the output is column i of W (plus b): shows the weights used
    used = (layer(x) - linear.bias).numpy().T
    dropped = used == 0
    assert 0.4 < dropped.mean() < 0.6
    np.testing.assert_allclose(used[~dropped], 2 * linear.weight.numpy()[~dropped], rtol=1e-4, atol=1e-6)
    layer.eval()
    np.testing.assert_allclose(layer(x).numpy(), linear(x).numpy())


def test_ensemble_averages_outputs_and_probabilities():
    x = Tensor([[1.0, 2.0, 3.0]])
    np.testing.assert_allclose(_ensemble("mean")(x).numpy(), -0.5 * x.numpy())
    expected = np.log((x.softmax(1).numpy() + (x * -2.0).softmax(1).numpy()) / 2)
    np.testing.assert_allclose(_ensemble("probabilities")(x).numpy(), expected, rtol=1e-6)


def test_lecture_mlp_neuron_and_perceptron():
    model = nn.MLP(2, [16, 16], 1, activation="tanh")
    assert [type(m).__name__ for m in model] == ["Linear", "Tanh", "Linear", "Tanh", "Linear"]
    assert model(autograd.randn(5, 2)).shape == (5, 1)
    neuron = nn.Neuron(3)
    y = neuron(autograd.randn(4, 3))
    assert y.shape == (4,) and ((y.numpy() > 0) & (y.numpy() < 1)).all()
    # the perceptron rule separates a linearly separable set
    rng = np.random.default_rng(0)
    points = rng.standard_normal((200, 2)).astype(np.float32)  # the layer's dtype: matmul does not promote
    labels = (points @ np.array([2.0, -1.0]) + 0.3 > 0).astype(np.float32)
    perceptron = nn.Perceptron(2)
    for _ in range(100):
        if perceptron.update(Tensor(points), labels) == 0:
            break
    np.testing.assert_array_equal(perceptron(Tensor(points)).numpy(), labels)


def test_batchnorm_running_statistics_and_momentum_none():
    layer = nn.BatchNorm1d(3, momentum=None)
    batches = [np.random.default_rng(i).standard_normal((8, 3)) * (i + 1) + i for i in range(3)]
    for batch in batches:
        layer(Tensor(batch, dtype=np.float32))
    stacked = np.stack(batches)
    np.testing.assert_allclose(layer.running_mean.numpy(), stacked.mean(1).mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.running_var.numpy(), stacked.var(1, ddof=1).mean(0), rtol=1e-5)
    assert int(layer.num_batches_tracked.item()) == 3


def test_batchnorm_shape_error():
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3\) expects input of 4 dims"):
        nn.BatchNorm2d(3)(autograd.randn(2, 3))


@pytest.mark.torch
def test_batchnorm_matches_torch_in_training_and_eval():
    import torch

    for ours, theirs, shape in ((nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4), (6, 4)),
                                (nn.BatchNorm2d(3, momentum=0.3), torch.nn.BatchNorm2d(3, momentum=0.3),
                                 (2, 3, 4, 5))):
        ours.double()
        theirs.double()
        rng = np.random.default_rng(0)
        for step in range(4):
            x = rng.standard_normal(shape) * 3 + step
            a, b = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
            out_a, out_b = ours(a), theirs(b)
            (out_a * out_a).sum().backward()
            (out_b * out_b).sum().backward()
            np.testing.assert_allclose(out_a.numpy(), out_b.detach().numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(ours.running_mean.numpy(), theirs.running_mean.numpy(), rtol=1e-12)
        np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-12)
        np.testing.assert_allclose(ours.weight.grad.numpy(), theirs.weight.grad.numpy(), rtol=1e-8)
        ours.eval()
        theirs.eval()
        x = rng.standard_normal(shape)
        np.testing.assert_allclose(ours(Tensor(x)).numpy(), theirs(torch.tensor(x)).detach().numpy(),
                                   rtol=1e-10)


def _normalised_then_written_in_place(torch, nn):
    """Normalisation layers without an affine step, their output written in place next: CycleGAN's
    generator block (InstanceNorm2d, affine=False, then ReLU(True)), and the others alike."""
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.standard_normal((2, 4, 5, 5)), requires_grad=True)
    layers = [nn.InstanceNorm2d(4), nn.GroupNorm(2, 4, affine=False), nn.BatchNorm2d(4, affine=False),
              nn.LayerNorm(5, elementwise_affine=False)]
    total = 0
    for layer in layers:
        out = nn.Sequential(layer, nn.ReLU(True)).double()(x * 1)
        total = total + (out + 1).pow(2).sum()
    evaluated = nn.BatchNorm2d(4, affine=False).double().eval()
    out = evaluated(x * 1)
    out.mul_(2.0)
    total = total + out.pow(2).sum()
    total.backward()
    return total.item(), x.grad.numpy()


@pytest.mark.parametrize("make", [lambda n: n.BatchNorm1d(3), lambda n: n.LayerNorm(3), lambda n: n.GroupNorm(1, 3)])
def test_normalisation_layers_refuse_mixed_dtypes_as_pytorch(make):
    """A float64 batch into float32 normalisation parameters: refused (as PyTorch, and as linear and
    the convolutions here), not silently promoted; in eval the running statistics count too."""
    layer = make(nn)
    x = Tensor(np.ones((4, 3)))
    with pytest.raises(RuntimeError, match="is float32 but the input is float64"):
        layer(x)
    assert layer.double()(x).dtype == autograd.float64
    torch = pytest.importorskip("torch")
    with pytest.raises(RuntimeError):
        make(torch.nn)(torch.ones(4, 3, dtype=torch.float64))
    bn = nn.BatchNorm1d(3, affine=False).eval()
    with pytest.raises(RuntimeError, match="batch_norm: the running_mean is float32"):
        bn(x)


def test_normalisation_output_may_be_changed_in_place():
    total, grad = _normalised_then_written_in_place(autograd, nn)
    assert np.isfinite(total) and np.count_nonzero(grad) == grad.size
    torch = pytest.importorskip("torch")
    their_total, their_grad = _normalised_then_written_in_place(torch, torch.nn)
    assert total == pytest.approx(their_total, rel=1e-12)
    np.testing.assert_allclose(grad, their_grad, rtol=1e-9, atol=1e-12)


@pytest.mark.torch
def test_norms_and_activations_match_torch():
    import torch

    x = np.random.default_rng(0).standard_normal((4, 6, 3))
    pairs = [
        (nn.LayerNorm(3), torch.nn.LayerNorm(3)),
        (nn.LayerNorm((6, 3)), torch.nn.LayerNorm((6, 3))),
        (nn.GroupNorm(2, 6), torch.nn.GroupNorm(2, 6)),
        (nn.GELU(), torch.nn.GELU()),
        (nn.GELU("tanh"), torch.nn.GELU("tanh")),
        (nn.LeakyReLU(0.1), torch.nn.LeakyReLU(0.1)),
        (nn.Softmax(1), torch.nn.Softmax(1)),
        (nn.LogSoftmax(-1), torch.nn.LogSoftmax(-1)),
    ]
    for ours, theirs in pairs:
        ours.double()
        theirs.double()
        a, b = Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        (ours(a) * Tensor(x)).sum().backward()
        (theirs(b) * torch.tensor(x)).sum().backward()
        np.testing.assert_allclose(ours(a).numpy(), theirs(b).detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("make", [lambda **kw: nn.Linear(3, 2, **kw), lambda **kw: nn.Bilinear(2, 3, 2, **kw),
                                  lambda **kw: nn.Embedding(5, 3, **kw), lambda **kw: nn.EmbeddingBag(5, 3, **kw),
                                  lambda **kw: nn.LayerNorm(4, **kw), lambda **kw: nn.GroupNorm(2, 4, **kw),
                                  lambda **kw: nn.PReLU(**kw)])
def test_layers_take_device_and_dtype_as_pytorch(make):
    """factory_kwargs = {"device": device, "dtype": dtype} as modern PyTorch code passes them: the
    parameters are made there, and a device that cannot be served raises."""
    layer = make(device="cpu", dtype=autograd.float64)
    assert all(p.dtype == autograd.float64 for p in layer.parameters())
    with pytest.raises(RuntimeError, match="cuda"):
        make(device="cuda")


def test_group_norm_without_bias_as_pytorch():
    norm = nn.GroupNorm(2, 4, bias=False)
    assert norm.bias is None and norm.weight.shape == (4,)
    np.testing.assert_allclose(norm(autograd.ones(1, 4, 2)).numpy(), 0.0)


def test_memory_formats_exist_and_change_no_values():
    """model.to(memory_format=torch.channels_last), x.contiguous(memory_format=...), torch.clone(x,
    memory_format=torch.preserve_format): accepted, the values unchanged."""
    x = autograd.randn(2, 3, 4, 5)
    assert repr(autograd.channels_last) == "torch.channels_last"
    assert isinstance(autograd.contiguous_format, autograd.memory_format)
    for y in (autograd.clone(x, memory_format=autograd.preserve_format),
              x.contiguous(memory_format=autograd.channels_last), x.to(memory_format=autograd.channels_last),
              autograd.zeros_like(x, memory_format=autograd.channels_last) + x):
        np.testing.assert_array_equal(y.numpy(), x.numpy())
    conv = nn.Conv2d(3, 2, 3).to(memory_format=autograd.channels_last)
    assert conv(x.to(memory_format=autograd.channels_last)).shape == (2, 2, 2, 3)
