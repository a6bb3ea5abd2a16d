# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Programs that mix tensors with NumPy and plain Python as real training scripts do (see tests/pytorch_programs.py),
each run on chainrule and on PyTorch and compared, results, Python types and dtypes. An augmentation pipeline whose
shifts, scale factors, fills and k come out of NumPy (``roll``, ``F.interpolate``, ``torch.where``, ``kthvalue``,
``movedim`` given NumPy integers and floats); a random hyperparameter search whose configurations NumPy draws
(``nn.ZeroPad2d``, ``nn.MaxPool2d``, ``nn.LayerNorm``, ``tensor_split``, ``multinomial``, ``histc`` given NumPy
integers); a Thompson-sampling bandit whose counts NumPy keeps and whose draws ``Beta``, ``Bernoulli`` and ``Normal``
make from ``numpy.float64`` parameters; class weights of an imbalanced problem from counts (``len(y) / (3 *
counts)``, ``np.float64(n) / counts``, to the last bit) and a classifier trained with them and a
``WeightedRandomSampler`` over NumPy weights."""

import numpy as np

from .probe17_interop_common import blobs, classifier, dtype_name
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# 15. augmentation and robust statistics whose arguments come out of NumPy
# ----------------------------------------------------------------------------------------------


def numpy_configured_augmentation(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.RandomState(3)
    signals = torch.from_numpy(np.sin(np.linspace(0, 6, 32 * 8)).reshape(8, 1, 32).astype(np.float32))
    augmented = []
    for x in signals:
        shift = rng.randint(-4, 5)  # a NumPy int64
        x = x.roll(shift, dims=np.int64(-1))
        scale = np.float32(rng.choice([1.0, 2.0]))
        x = F.interpolate(x[None], scale_factor=scale, mode="linear", align_corners=False)
        x = F.interpolate(x, size=np.int64(32), mode="linear", align_corners=False)[0]
        mean = np.float64(x.mean().item())
        x = torch.where(x > mean, x, np.float64(0.0))  # a NumPy mean as the fill
        augmented.append(x)
    batch = torch.stack(augmented)
    k = np.argmax([0, 3, 1]) + 1
    robust_low = batch.kthvalue(k, dim=np.int64(-1)).values  # k: a NumPy int64 from argmax
    channels_last = batch.movedim(np.int64(1), np.int64(-1))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(1, 4, 5, padding=2), nn.ReLU(), nn.AdaptiveAvgPool1d(1), nn.Flatten(),
                          nn.Linear(4, 1))
    optimizer = m.optim.Adam(model.parameters(), lr=np.float64(1e-2))
    target = torch.from_numpy(rng.rand(8, 1).astype(np.float32))
    losses = []
    for step in range(5):
        optimizer.zero_grad()
        loss = F.mse_loss(model(batch), target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return batch, robust_low, tuple(channels_last.shape), losses, dtype_name(batch.dtype)


def test_augmentation_whose_arguments_come_out_of_numpy():
    ours, _ = run_both(numpy_configured_augmentation, rtol=1e-5, atol=1e-6)
    batch, robust_low, channels_last_shape, losses, batch_dtype = ours
    assert batch.shape == (8, 1, 32) and batch_dtype == "float32" and channels_last_shape == (8, 32, 1)
    np.testing.assert_array_equal(robust_low, np.sort(batch, axis=-1)[..., 1])


# ----------------------------------------------------------------------------------------------
# 16. a random hyperparameter search whose configurations NumPy draws
# ----------------------------------------------------------------------------------------------


def numpy_hyperparameter_search(m):
    torch, nn, F = m.torch, m.nn, m.F
    images, labels = blobs(n=48, features=16)
    images = torch.from_numpy(images.reshape(48, 1, 4, 4))
    labels = torch.from_numpy(labels)
    rng = np.random.RandomState(7)
    space = {"channels": [4, 8], "pool": [2], "pad": [0, 1], "hidden": [8, 12], "drop": (0.0, 0.0)}
    results = []
    for trial in range(3):
        config = {
            "channels": rng.choice(space["channels"]),  # NumPy int64s and float64s from here on
            "pool": rng.choice(space["pool"]),
            "pad": rng.choice(space["pad"]),
            "hidden": rng.choice(space["hidden"]),
            "lr": np.logspace(-2, -1, 3)[rng.randint(3)],
            "drop": rng.uniform(*space["drop"]),
        }
        torch.manual_seed(trial)
        side = (4 + 2 * config["pad"]) // config["pool"]
        model = nn.Sequential(
            nn.ZeroPad2d(config["pad"]),
            nn.Conv2d(1, config["channels"], kernel_size=np.int64(3), padding=1),
            nn.ReLU(),
            nn.MaxPool2d(config["pool"], stride=config["pool"]),
            nn.Flatten(),
            nn.Linear(config["channels"] * side * side, config["hidden"]),
            nn.LayerNorm(config["hidden"]),
            nn.Dropout(config["drop"]),
            nn.Linear(config["hidden"], 3),
        )
        optimizer = m.optim.SGD(model.parameters(), lr=config["lr"], momentum=np.float64(0.9))
        for xb, yb in zip(images.tensor_split(np.int64(3)), labels.tensor_split(np.int64(3))):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            probs = F.softmax(model(images), dim=1)
            accuracy = (probs.argmax(1) == labels).float().mean().item()
        torch.manual_seed(100 + trial)
        sampled = torch.multinomial(probs[:4], np.int64(2), replacement=True)  # a NumPy count
        counts = torch.histc(probs[:, 0], bins=np.int64(4), min=0, max=1)
        results.append({"loss": loss.item(), "accuracy": accuracy, "sampled": sampled, "counts": counts,
                        "config": {k: (float(v) if k in ("lr", "drop") else int(v)) for k, v in config.items()}})
    best = max(results, key=lambda r: r["accuracy"])
    return results, best["config"]


def test_a_hyperparameter_search_whose_configurations_numpy_draws():
    ours, _ = run_both(numpy_hyperparameter_search, rtol=1e-4, atol=1e-5)
    results, best = ours
    assert len(results) == 3 and set(best) == {"channels", "pool", "pad", "hidden", "lr", "drop"}
    assert all(r["counts"].sum() == 48 for r in results)


# ----------------------------------------------------------------------------------------------
# 17. a bandit simulation: statistics kept in NumPy, draws by torch.distributions
# ----------------------------------------------------------------------------------------------


def thompson_bandit(m):
    torch, D = m.torch, m.torch.distributions
    torch.manual_seed(0)
    true_rates = np.array([0.2, 0.5, 0.7])
    successes, failures = np.ones(3), np.ones(3)
    rewards_seen = [[] for _ in range(3)]
    chosen = []
    for step in range(40):
        # posterior draws, one per arm, from NumPy's running counts (numpy.float64 parameters)
        draws = [D.Beta(successes[a], failures[a]).sample() for a in range(3)]
        arm = int(torch.stack(draws).argmax())
        reward = D.Bernoulli(probs=true_rates[arm]).sample()  # a numpy.float64 probability
        successes[arm] += reward.item()
        failures[arm] += 1 - reward.item()
        rewards_seen[arm].append(reward.item())
        chosen.append(arm)
    # a Gaussian model of each arm's mean reward, from NumPy statistics
    summaries = []
    for arm in range(3):
        seen = np.array(rewards_seen[arm]) if rewards_seen[arm] else np.zeros(1)
        posterior = D.Normal(np.mean(seen), np.std(seen) / np.sqrt(len(seen)) + 0.05)
        summaries.append((posterior.mean, posterior.cdf(torch.tensor(0.5)), posterior.sample((2,)),
                          posterior.log_prob(torch.tensor(np.float64(0.6)))))
    kl = D.kl_divergence(D.Normal(np.float64(0.0), np.float64(1.0)), D.Normal(np.mean(true_rates), 2.0))
    return chosen, successes, failures, summaries, kl, [dtype_name(s[0].dtype) for s in summaries]


def test_a_bandit_whose_statistics_numpy_keeps_samples_with_distributions():
    ours, _ = run_both(thompson_bandit, rtol=1e-5, atol=1e-6)
    chosen, successes, failures, summaries, kl, dtypes = ours
    assert len(chosen) == 40 and successes.sum() + failures.sum() == 46 and dtypes == ["float32"] * 3


# ----------------------------------------------------------------------------------------------
# 18. class weights for an imbalanced problem, from counts and NumPy statistics
# ----------------------------------------------------------------------------------------------


def imbalance_weights(m):
    torch = m.torch
    rng = np.random.default_rng(5)
    labels = torch.from_numpy(rng.choice(3, size=70, p=[0.7, 0.2, 0.1]))
    counts = torch.bincount(labels, minlength=3)
    return {
        "balanced": len(labels) / (3 * counts),  # sklearn's "balanced": an int over an integer tensor
        "inverse": 1.0 / counts,
        "numpy_total": np.float64(len(labels)) / counts.float(),  # a NumPy number on the left
        "numpy_int": np.int64(len(labels)) / counts,
        "effective": (1 - 0.99) / (1 - torch.pow(0.99, counts.float())),  # class-balanced loss (Cui et al.)
        "sample_weights": (1.0 / counts)[labels],
    }


def imbalanced_training(m, weights):
    torch, F, data = m.torch, m.F, m.data
    X, _ = blobs(n=70)
    rng = np.random.default_rng(5)
    y = rng.choice(3, size=70, p=[0.7, 0.2, 0.1])
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    counts = torch.bincount(y_t, minlength=3)
    class_weights = len(y) / (3 * counts)
    sampler = data.WeightedRandomSampler(class_weights[y_t].double().numpy(), num_samples=70, replacement=True,
                                         generator=torch.Generator().manual_seed(0))
    loader = data.DataLoader(data.TensorDataset(X_t, y_t), batch_size=14, sampler=sampler)
    model = load(m, classifier(m), weights)
    optimizer = m.optim.Adam(model.parameters(), lr=0.02)
    seen = np.zeros(3, dtype=np.int64)
    for epoch in range(2):
        for xb, yb in loader:
            np.add.at(seen, yb.numpy(), 1)
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb, weight=class_weights)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        preds = model(X_t).argmax(1).numpy()
    tp = np.array([np.sum((preds == c) & (y == c)) for c in range(3)])
    precision = tp / np.maximum(np.bincount(preds, minlength=3), 1)
    recall = tp / np.bincount(y, minlength=3)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    return seen, class_weights, f1, float(np.mean(f1)), loss.item()


def test_class_weights_from_counts_are_pytorchs_to_the_last_bit():
    ours, _ = run_both(imbalance_weights, rtol=0, atol=0)
    assert {k: v.dtype for k, v in ours.items()} == {k: np.dtype(np.float32) for k in ours}


def test_an_imbalanced_classifier_trained_with_class_weights_and_a_weighted_sampler():
    ours, _ = run_both(imbalanced_training, weights_of(classifier), rtol=1e-4, atol=1e-5)
    seen, class_weights, f1, macro_f1, loss = ours
    assert seen.sum() == 140 and seen.min() > 20  # the sampler evens the classes out
