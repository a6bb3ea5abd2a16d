"""Short PyTorch-tutorial programs about devices, generators and data loading, run with only their imports
changed (``torch`` -> ``autograd``, ``torch.nn`` -> ``nn``, ``torch.optim`` -> ``optim``); each asserts
what it should have achieved."""

import math
import random

import numpy as np

import autograd
import nn
import optim
from autograd.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    TensorDataset,
    WeightedRandomSampler,
    random_split,
)


def test_quickstart_training_loop():
    """The shape of PyTorch's "Quickstart": device, a NeuralNetwork module, train and test loops."""
    device = "cuda" if autograd.cuda.is_available() else "cpu"

    autograd.manual_seed(0)
    X = autograd.randn(600, 1, 4, 4)
    y = (X.sum(dim=(1, 2, 3)) > 0).long()
    training_data, test_data = random_split(TensorDataset(X, y), [500, 100])
    train_dataloader = DataLoader(training_data, batch_size=64, shuffle=True)
    test_dataloader = DataLoader(test_data, batch_size=64)

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))

        def forward(self, x):
            return self.linear_relu_stack(self.flatten(x))

    model = NeuralNetwork().to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.1)

    def train(dataloader, model, loss_fn, optimizer):
        model.train()
        for X, y in dataloader:
            X, y = X.to(device), y.to(device)
            loss = loss_fn(model(X), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    def test(dataloader, model, loss_fn):
        size, num_batches = len(dataloader.dataset), len(dataloader)
        model.eval()
        test_loss, correct = 0, 0
        with autograd.no_grad():
            for X, y in dataloader:
                X, y = X.to(device), y.to(device)
                pred = model(X)
                test_loss += loss_fn(pred, y).item()
                correct += (pred.argmax(1) == y).type(autograd.float).sum().item()
        return test_loss / num_batches, correct / size

    for _ in range(10):
        train(train_dataloader, model, loss_fn, optimizer)
    test_loss, accuracy = test(test_dataloader, model, loss_fn)
    assert accuracy >= 0.9 and test_loss < 0.3


def test_custom_dataset_with_numpy_samples_and_dict_batches():
    """A map-style Dataset returning dicts of NumPy arrays, the "Datasets & DataLoaders" tutorial's way."""

    class Regression(Dataset):
        def __init__(self, n):
            rng = np.random.default_rng(0)
            self.features = rng.standard_normal((n, 3)).astype(np.float32)
            self.targets = (self.features @ np.array([1.0, -2.0, 0.5], dtype=np.float32) + 3.0)

        def __len__(self):
            return len(self.features)

        def __getitem__(self, idx):
            return {"features": self.features[idx], "target": self.targets[idx]}

    device = autograd.device("cuda" if autograd.cuda.is_available() else "cpu")
    g = autograd.Generator().manual_seed(0)
    loader = DataLoader(Regression(256), batch_size=32, shuffle=True, generator=g)
    model = nn.Linear(3, 1).to(device)
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(60):
        for batch in loader:
            features = batch["features"].to(device, non_blocking=True)
            target = batch["target"].to(device).unsqueeze(1)
            loss = nn.functional.mse_loss(model(features), target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    assert batch["features"].shape == (32, 3) and batch["target"].dtype == np.float32
    np.testing.assert_allclose(model.weight.detach().cpu().numpy(), [[1.0, -2.0, 0.5]], atol=0.05)
    np.testing.assert_allclose(model.bias.item(), 3.0, atol=0.05)


def test_seeded_generators_make_a_run_repeatable():
    """`g = torch.Generator().manual_seed(0)` passed to random_split and the loader: two runs agree."""

    def run():
        g = autograd.Generator().manual_seed(0)
        autograd.manual_seed(0)
        data = TensorDataset(autograd.randn(100, 2, generator=g), autograd.randint(0, 2, (100,), generator=g))
        train, _ = random_split(data, [0.8, 0.2], generator=g)
        model = nn.Linear(2, 2)
        opt = optim.SGD(model.parameters(), lr=0.1)
        losses = []
        for inputs, targets in DataLoader(train, batch_size=16, shuffle=True, generator=g):
            loss = nn.functional.cross_entropy(model(inputs), targets)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, g.get_state()

    (first, state), (second, state_again) = run(), run()
    assert first == second and len(first) == 5 and (state == state_again).all()


def seed_everything(seed):
    """The usual helper at the top of training scripts."""
    random.seed(seed)
    np.random.seed(seed)
    autograd.manual_seed(seed)
    autograd.cuda.manual_seed_all(seed)


def test_seed_everything_helper():
    seed_everything(42)
    a = (autograd.rand(3).tolist(), np.random.rand(), random.random())
    seed_everything(42)
    assert (autograd.rand(3).tolist(), np.random.rand(), random.random()) == a


def test_weighted_sampler_balances_an_imbalanced_data_set():
    """Oversampling the rare class: weight each sample by 1 / its class's count."""
    labels = autograd.tensor([0] * 90 + [1] * 10)
    data = TensorDataset(autograd.arange(100).float().unsqueeze(1), labels)
    class_count = autograd.tensor([(labels == c).sum().item() for c in (0, 1)])
    sample_weights = 1.0 / class_count[labels].double()
    sampler = WeightedRandomSampler(sample_weights, num_samples=2000, replacement=True,
                                    generator=autograd.Generator().manual_seed(0))
    seen = autograd.cat([y for _, y in DataLoader(data, batch_size=100, sampler=sampler)])
    assert len(seen) == 2000 and abs(seen.float().mean().item() - 0.5) < 0.05


def test_streaming_data_with_an_iterable_dataset():
    """An IterableDataset that makes samples on the fly (no length needed to train)."""

    class Line(IterableDataset):
        def __init__(self, n, generator):
            self.n, self.generator = n, generator

        def __iter__(self):
            for _ in range(self.n):
                x = autograd.rand(1, generator=self.generator) * 4 - 2
                yield x, 2 * x - 1

    model = nn.Linear(1, 1)
    opt = optim.SGD(model.parameters(), lr=0.1)
    stream = Line(3000, autograd.Generator().manual_seed(1))
    for x, y in DataLoader(stream, batch_size=20):
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert x.shape == (20, 1)
    assert math.isclose(model.weight.item(), 2.0, abs_tol=0.02) and math.isclose(model.bias.item(), -1.0,
                                                                                abs_tol=0.02)


def test_mixed_precision_style_casts_and_checkpoint_to_cpu():
    """Cast a model to double for a gradient check, back to float, and save its state 'on the CPU'."""
    autograd.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    x = autograd.randn(5, 3, dtype=autograd.float64)
    assert model(x).dtype == np.float64
    model.float()
    out = model(x.float())
    assert out.dtype == np.float32
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    clone = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    clone.load_state_dict(state)
    np.testing.assert_array_equal(clone(x.float()).detach().numpy(), out.detach().numpy())
