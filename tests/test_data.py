"""Data loading, data sets, transforms, and training end to end with the lecture's regimes."""

import time

import numpy as np
import pytest

import autograd
import nn
import optim
from autograd import Tensor
from autograd.data import DataLoader, Dataset, TensorDataset, random_split
from autograd.transforms import AddNoise, Compose, RandomFlip, RandomShift, Standardize


def numbered(n=10):
    return TensorDataset(autograd.arange(n).float().reshape(n, 1), autograd.arange(n))


def test_every_sample_once_per_epoch_with_the_last_partial_batch():
    loader = DataLoader(numbered(10), batch_size=4, shuffle=True)
    assert len(loader) == 3
    batches = list(loader)
    assert [len(y) for _, y in batches] == [4, 4, 2]
    seen = np.concatenate([y.numpy() for _, y in batches])
    assert sorted(seen) == list(range(10))


def test_drop_last_and_order_without_shuffle():
    loader = DataLoader(numbered(10), batch_size=4, drop_last=True)
    assert len(loader) == 2
    assert [y.tolist() for _, y in loader] == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_shuffling_is_repeatable_under_manual_seed():
    def epoch():
        return np.concatenate([y.numpy() for _, y in DataLoader(numbered(20), batch_size=5, shuffle=True)])

    autograd.manual_seed(7)
    first = epoch()
    second = epoch()
    autograd.manual_seed(7)
    assert (epoch() == first).all() and not (first == second).all()


def test_a_plain_dataset_is_collated_and_a_custom_collate_is_used():
    class Squares(Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return Tensor([float(i)]), i * i

    x, y = next(iter(DataLoader(Squares(), batch_size=3)))
    assert x.shape == (3, 1) and y.tolist() == [0, 1, 4]
    sums = list(DataLoader(Squares(), batch_size=2, collate_fn=lambda samples: sum(s[1] for s in samples)))
    assert sums == [1, 13, 16]


def test_random_split_by_lengths_and_fractions():
    autograd.manual_seed(0)
    train, test = random_split(numbered(10), [7, 3])
    ids = sorted([int(train[i][1].item()) for i in range(7)] + [int(test[i][1].item()) for i in range(3)])
    assert ids == list(range(10))
    parts = random_split(numbered(10), [0.5, 0.3, 0.2])
    assert [len(p) for p in parts] == [5, 3, 2]
    x, _ = next(iter(DataLoader(parts[0], batch_size=5)))
    assert x.shape == (5, 1)
    with pytest.raises(ValueError, match="does not equal the length"):
        random_split(numbered(10), [3, 3])


def test_tensor_dataset_sizes_must_agree():
    with pytest.raises(AssertionError, match="Size mismatch"):
        TensorDataset(autograd.zeros(3, 2), autograd.zeros(4))


@pytest.mark.parametrize("make", [
    lambda: autograd.datasets.make_moons(101, noise=0.1),
    lambda: autograd.datasets.make_circles(101, noise=0.05, factor=0.5),
    lambda: autograd.datasets.make_spirals(99, classes=3),
    lambda: autograd.datasets.make_blobs(101, centers=4, n_features=3),
])
def test_generated_data_sets_are_seeded_and_shaped(make):
    autograd.manual_seed(1)
    X, y = make()
    autograd.manual_seed(1)
    X2, y2 = make()
    np.testing.assert_array_equal(X.numpy(), X2.numpy())
    np.testing.assert_array_equal(y.numpy(), y2.numpy())
    assert X.dtype == autograd.float32 and y.dtype == autograd.int64 and len(X) == len(y)
    counts = np.bincount(y.numpy())
    assert counts.max() - counts.min() <= 1  # balanced classes


def test_moons_and_circles_have_their_geometry():
    X, y = autograd.datasets.make_circles(200, factor=0.5)
    radius = np.linalg.norm(X.numpy(), axis=1)
    np.testing.assert_allclose(radius[y.numpy() == 0], 1.0, rtol=1e-6)
    np.testing.assert_allclose(radius[y.numpy() == 1], 0.5, rtol=1e-6)
    X, y = autograd.datasets.make_moons(200)
    upper = X.numpy()[y.numpy() == 0]
    np.testing.assert_allclose(np.linalg.norm(upper, axis=1), 1.0, rtol=1e-6)


def test_regression_set_follows_its_weights():
    X, y, w = autograd.datasets.make_regression(50, n_features=3, bias=2.0)
    np.testing.assert_allclose(y.numpy(), X.numpy() @ w.numpy() + 2.0, rtol=1e-5, atol=1e-5)


def test_digits_load_offline_or_name_the_extra():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install 'chainrule\[demo\]'"):
            autograd.datasets.load_digits()
        return
    X, y = autograd.datasets.load_digits()
    assert X.shape == (1797, 64) and set(y.numpy()) == set(range(10))


def test_standardize_fits_on_training_data_only():
    train = Tensor(np.array([[1.0, 10.0], [3.0, 30.0]]))
    scaler = Standardize().fit(train)
    np.testing.assert_allclose(scaler(train).numpy(), [[-1, -1], [1, 1]], atol=1e-6)
    np.testing.assert_allclose(scaler(Tensor(np.array([[5.0, 50.0]]))).numpy(), [[3, 3]], atol=1e-6)


def test_flip_and_shift_move_pixels():
    image = np.zeros((1, 3, 3), dtype=np.float32)
    image[0, 1, 0] = 1.0
    flipped = RandomFlip(p=1.0)(Tensor(image)).numpy()
    assert flipped[0, 1, 2] == 1.0 and flipped.sum() == 1.0
    autograd.manual_seed(0)
    batch = Tensor(np.repeat(image.reshape(1, 9), 50, axis=0))
    shifted = RandomShift(max_shift=1, image_shape=(3, 3))(batch).numpy().reshape(50, 3, 3)
    positions = {tuple(np.argwhere(s)[0]) for s in shifted if s.sum() == 1}
    assert positions <= {(r, c) for r in range(3) for c in range(2)} and len(positions) > 2
    assert ((shifted.sum((1, 2)) == 1) | (shifted.sum((1, 2)) == 0)).all()  # moved or shifted out


def test_loader_applies_the_transform_to_inputs_only():
    noisy = DataLoader(numbered(6), batch_size=6, transform=Compose([AddNoise(std=0.5)]))
    x, y = next(iter(noisy))
    assert not np.allclose(x.numpy().ravel(), np.arange(6)) and y.tolist() == list(range(6))


def accuracy(model, X, y):
    with autograd.no_grad():
        return float((model(X).argmax(1).numpy() == y.numpy()).mean())


def test_minibatch_adam_learns_two_moons_end_to_end():
    autograd.manual_seed(0)
    X, y = autograd.datasets.make_moons(1000, noise=0.1)
    train, test = random_split(TensorDataset(X, y), [800, 200])
    model = nn.MLP(2, [32, 32], 2)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()
    start = time.perf_counter()
    for _ in range(30):
        for inputs, targets in DataLoader(train, batch_size=32, shuffle=True):
            optimizer.zero_grad()
            criterion(model(inputs), targets).backward()
            optimizer.step()
    elapsed = time.perf_counter() - start
    X_test, y_test = test.batch(np.arange(len(test)))
    assert accuracy(model, X_test, y_test) >= 0.97, f"after {elapsed:.1f} s"


@pytest.mark.parametrize("batch_size", ["full", 1, 16])
def test_the_three_regimes_of_gradient_descent_all_learn(batch_size):
    autograd.manual_seed(1)
    X, y = autograd.datasets.make_blobs(120, centers=[[-2, 0], [2, 0]], cluster_std=0.5)
    size = len(X) if batch_size == "full" else batch_size
    model = nn.Linear(2, 2)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    for _ in range(20 if batch_size == "full" else 3):
        for inputs, targets in DataLoader(TensorDataset(X, y), batch_size=size, shuffle=True):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
    assert accuracy(model, X, y) >= 0.95
