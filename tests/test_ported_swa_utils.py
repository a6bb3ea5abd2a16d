"""optim.swa_utils, ported from PyTorch's test/optim/test_swa_utils.py: AveragedModel over a convolutional
network with SWA and EMA multi_avg_fns (the average followed by hand through ten random steps), its state_dict
round trip and pickling, EMA through avg_fn or multi_avg_fn with and without use_buffers, and update_bn on a
fully-connected and a convolutional network fed by DataLoaders of (x,) and (x, y) batches, reset and run again,
keeping eval mode and momentum. (Devices other than the CPU are not chainrule's; SWALR is ported in
tests/test_ported_lr_scheduler.py, and tests/test_swa_utils.py checks these by hand against PyTorch's
trajectories.)

Each test runs on chainrule and, where it is installed, on PyTorch (fixture `T`); the expectations are the
averages computed by hand from the same random steps, and NumPy's statistics of the same features.
"""

import importlib
import itertools
import pickle

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, same, values

nn = ported_nn.nn  # the fixture


@pytest.fixture
def swa(T):
    return importlib.import_module({"autograd": "optim", "torch": "torch.optim"}[T.__name__] + ".swa_utils")


@pytest.fixture
def data(T):
    return importlib.import_module(T.__name__ + ".utils.data")


def conv_net(nn):
    return nn.Sequential(nn.Conv2d(1, 5, kernel_size=3), nn.ReLU(), nn.MaxPool2d(kernel_size=2),
                         nn.BatchNorm2d(5, momentum=0.3), nn.Conv2d(5, 2, kernel_size=3), nn.ReLU(), nn.Linear(5, 5),
                         nn.ReLU(), nn.Linear(5, 10))


@pytest.mark.parametrize("ema", [True, False])
def test_the_average_of_ten_random_steps(T, nn, swa, ema):
    T.manual_seed(0)
    model = conv_net(nn)
    decay, n_updates = 0.999, 10
    multi_avg_fn = swa.get_ema_multi_avg_fn(decay) if ema else swa.get_swa_multi_avg_fn()
    averaged_model = swa.AveragedModel(model, device=T.device("cpu"), multi_avg_fn=multi_avg_fn)
    expected = [np.zeros(tuple(p.shape), np.float64) for p in model.parameters()]
    for i in range(n_updates):
        for p, average in zip(model.parameters(), expected):
            p.detach().add_(T.randn_like(p))
            # EMA's first update copies the weights; each later one mixes in (1 - decay) of them
            weight = decay ** (n_updates - i - 1) * ((1 - decay) if i > 0 else 1.0) if ema else 1 / n_updates
            average += values(p).astype(np.float64) * weight
        averaged_model.update_parameters(model)
    averaged = list(averaged_model.parameters())
    assert len(averaged) == len(expected) == 10  # two convolutions, batch norm, two linears
    for got, want in zip(averaged, expected):
        close(got, want.astype(np.float32), rtol=1e-5, atol=1e-5)
        assert got.device == T.device("cpu")
    same(averaged_model.n_averaged, n_updates, dtype="int64")


def test_a_state_dict_carries_the_average_and_its_count(T, nn, swa):
    T.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 5, kernel_size=3), nn.Linear(5, 10))
    averaged, restored = swa.AveragedModel(model), swa.AveragedModel(model)
    sums = [np.zeros(tuple(p.shape), np.float64) for p in model.parameters()]
    for _ in range(10):
        for p, total in zip(model.parameters(), sums):
            p.detach().add_(T.randn_like(p))
            total += values(p)
        averaged.update_parameters(model)
    restored.load_state_dict(averaged.state_dict())
    for p, q, total in zip(averaged.parameters(), restored.parameters(), sums):
        same(q, values(p))
        close(q, (total / 10).astype(np.float32), rtol=1e-5, atol=1e-5)
    assert averaged.n_averaged == restored.n_averaged
    same(restored.n_averaged, 10)


def test_an_averaged_model_with_the_default_average_pickles(T, nn, swa):
    model = nn.Sequential(nn.Conv2d(1, 5, kernel_size=3), nn.BatchNorm2d(5), nn.Linear(5, 5))
    averaged = swa.AveragedModel(model)
    averaged.update_parameters(model)
    copy = pickle.loads(pickle.dumps(averaged))
    for p, q in zip(averaged.state_dict().values(), copy.state_dict().values()):
        same(q, values(p))
    model[0].weight.detach().add_(1.0)
    copy.update_parameters(model)  # the unpickled average still averages: (w + (w + 1)) / 2
    close(copy.module[0].weight, values(averaged.module[0].weight) + 0.5, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("use_multi_avg_fn", [True, False])
@pytest.mark.parametrize("use_buffers", [True, False])
def test_an_exponential_average_of_parameters_and_buffers(T, nn, swa, use_multi_avg_fn, use_buffers):
    T.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 5, kernel_size=3), nn.BatchNorm2d(5, momentum=0.3), nn.Linear(5, 10))
    decay = 0.9
    if use_multi_avg_fn:
        averaged_model = swa.AveragedModel(model, multi_avg_fn=swa.get_ema_multi_avg_fn(decay),
                                           use_buffers=use_buffers)
    else:
        def avg_fn(p_avg, p, n_avg):
            return decay * p_avg + (1 - decay) * p
        averaged_model = swa.AveragedModel(model, avg_fn=avg_fn, use_buffers=use_buffers)
    tensors = list(itertools.chain(model.parameters(), model.buffers())) if use_buffers else list(model.parameters())
    tensors = [t for t in tensors if t.dim() > 0]  # (num_batches_tracked, 0-d, is not stepped)
    expected = [None] * len(tensors)
    for i in range(10):
        for k, t in enumerate(tensors):
            t.detach().add_(T.randn_like(t))
            now = values(t).astype(np.float64)
            expected[k] = now if i == 0 else expected[k] * decay + now * (1 - decay)
        averaged_model.update_parameters(model)
    averaged = list(itertools.chain(averaged_model.module.parameters(), averaged_model.module.buffers()))
    for got, want in zip(averaged, expected):
        close(got, want.astype(np.float32), rtol=1e-5, atol=1e-5)
    if not use_buffers:  # the buffers are the model's own, copied
        for got, want in zip(averaged_model.module.buffers(), model.buffers()):
            same(got, values(want))
    # num_batches_tracked: never stepped, so its average stays 0 either way
    same(averaged_model.module[1].num_batches_tracked, 0, dtype="int64")


class DNN:
    """Linear(5, 100) then BatchNorm1d; the preactivation is the Linear's output."""

    @staticmethod
    def build(nn):
        class SWATestDNN(nn.Module):
            def __init__(self):
                super().__init__()
                self.n_features = 100
                self.fc1 = nn.Linear(5, self.n_features)
                self.bn = nn.BatchNorm1d(self.n_features)

            def compute_preactivation(self, x):
                return self.fc1(x)

            def forward(self, x):
                return self.bn(self.fc1(x))
        return SWATestDNN()

    shape = (5,)


class CNN:
    """Conv2d(3, 10, 3, padding=1) then BatchNorm2d(momentum=0.3)."""

    @staticmethod
    def build(nn):
        class SWATestCNN(nn.Module):
            def __init__(self):
                super().__init__()
                self.n_features = 10
                self.conv1 = nn.Conv2d(3, self.n_features, kernel_size=3, padding=1)
                self.bn = nn.BatchNorm2d(self.n_features, momentum=0.3)

            def compute_preactivation(self, x):
                return self.conv1(x)

            def forward(self, x):
                return self.bn(self.conv1(x))
        return SWATestCNN()

    shape = (3, 5, 5)


def reset_bn(T, nn):
    def reset(module):
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.running_mean = T.zeros_like(module.running_mean)
            module.running_var = T.ones_like(module.running_var)
    return reset


@pytest.mark.parametrize("net", [DNN, CNN], ids=["dnn", "cnn"])
def test_update_bn_gives_the_statistics_of_the_whole_data_set(T, nn, swa, data, net):
    T.manual_seed(0)
    x, y = T.rand(100, *net.shape), T.rand(100)
    loader_x = data.DataLoader(data.TensorDataset(x), batch_size=5, shuffle=True)
    loader_xy = data.DataLoader(data.TensorDataset(x, y), batch_size=5, shuffle=True)
    model = net.build(nn)
    model.train()
    with T.no_grad():
        features = values(model.compute_preactivation(x)).astype(np.float64)
    features = np.moveaxis(features, 1, -1).reshape(-1, model.n_features)  # one row per position
    mean, var = features.mean(0), features.var(0)  # (the biased variance: the test's own tolerance covers it)
    for loader in (loader_xy, loader_xy, loader_x):
        swa.update_bn(loader, model, device=x.device)
        close(model.bn.running_mean, mean.astype(np.float32), rtol=1e-4, atol=1e-5)
        close(model.bn.running_var, var.astype(np.float32), rtol=0, atol=1e-1)
        same(model.bn.num_batches_tracked, 20)
        model.apply(reset_bn(T, nn))
        same(model.bn.running_mean, np.zeros(model.n_features, np.float32))
    assert model.training


def test_update_bn_keeps_eval_mode_and_momentum(T, nn, swa, data):
    T.manual_seed(0)
    loader = data.DataLoader(data.TensorDataset(T.rand(100, *CNN.shape)), batch_size=5, shuffle=True)
    model = CNN.build(nn)
    model.eval()
    swa.update_bn(loader, model)
    assert not model.training
    assert model.bn.momentum == 0.3
    same(model.bn.num_batches_tracked, 20)
