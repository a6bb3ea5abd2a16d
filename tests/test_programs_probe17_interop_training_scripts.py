# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Programs that mix tensors with NumPy and plain Python as real training scripts do (see tests/pytorch_programs.py),
each run on chainrule and on PyTorch and compared, results, Python types and dtypes. An evaluation loop that gathers
``.detach().cpu().numpy()`` batches and scores them with NumPy (``np.concatenate``, ``np.argmax``, a confusion matrix
by ``np.add.at``, ``f"{loss:.4f}"`` logs); data drawn by ``np.random`` after ``np.random.seed``; a ``Dataset`` over
NumPy arrays whose samples ``default_collate`` batches (arrays, NumPy scalars, dicts); an sklearn-style
``fit(X)``/``predict(X)`` wrapper; early stopping and meters that mix tensors, ``np.inf`` and NumPy scalars."""

import numpy as np
import pytest

from .probe17_interop_common import blobs, classifier, dtype_name, kind
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# 1. an evaluation loop scored with NumPy
# ----------------------------------------------------------------------------------------------


def evaluation_loop(m, weights):
    torch, nn, F, data = m.torch, m.nn, m.F, m.data
    X, y = blobs()
    dataset = data.TensorDataset(torch.from_numpy(X), torch.from_numpy(y))
    train_loader = data.DataLoader(dataset, batch_size=32, shuffle=False)
    model = load(m, classifier(m), weights)
    optimizer = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    log = []
    for epoch in range(3):
        model.train()
        running_loss = 0.0
        for xb, yb in train_loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * xb.size(0)
        log.append(f"epoch {epoch}: loss {running_loss / len(dataset):.4f}")

    model.eval()
    all_logits, all_probs, all_targets, losses = [], [], [], []
    with torch.no_grad():
        for xb, yb in data.DataLoader(dataset, batch_size=40):
            logits = model(xb)
            losses.append(F.cross_entropy(logits, yb, reduction="none").cpu().numpy())
            all_logits.append(logits.detach().cpu().numpy())
            all_probs.append(F.softmax(logits, dim=1).cpu().numpy())
            all_targets.append(yb.cpu().numpy())
    logits = np.concatenate(all_logits)
    probs = np.concatenate(all_probs, axis=0)
    targets = np.concatenate(all_targets)
    preds = np.argmax(logits, axis=1)
    confusion = np.zeros((3, 3), dtype=np.int64)
    np.add.at(confusion, (targets, preds), 1)
    precision = np.diag(confusion) / np.maximum(confusion.sum(axis=0), 1)
    recall = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    accuracy = (preds == targets).mean()
    mean_loss = np.concatenate(losses).mean()
    log.append(f"val loss {mean_loss:.4f} acc {100 * accuracy:.1f}%")
    kinds = [kind(logits), kind(targets), kind(preds), kind(mean_loss), kind(losses[0])]
    return logits, probs, confusion, precision, recall, float(accuracy), log, kinds


def test_an_evaluation_loop_scored_with_numpy():
    ours, _ = run_both(evaluation_loop, weights_of(classifier), rtol=1e-4, atol=1e-5)
    logits, probs, confusion, precision, recall, accuracy, log, kinds = ours
    assert confusion.sum() == 96 and kinds == ["ndarray(float32)", "ndarray(int64)", "ndarray(int64)",
                                              "np.float32", "ndarray(float32)"]
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-6)
    assert accuracy == np.trace(confusion) / 96 and log[-1].startswith("val loss ")


# ----------------------------------------------------------------------------------------------
# 9. data drawn by np.random after np.random.seed, fed to torch.tensor
# ----------------------------------------------------------------------------------------------


def numpy_seeded_regression(m):
    torch, nn = m.torch, m.nn
    np.random.seed(42)
    true_w = np.random.randn(3)
    X = np.random.rand(64, 3) * 2 - 1
    y = X @ true_w + 0.7 + 0.05 * np.random.randn(64)
    idx = np.random.permutation(64)
    train, val = idx[:48], idx[48:]
    X_t = torch.tensor(X[train], dtype=torch.float32)
    y_t = torch.tensor(y[train], dtype=torch.float32).unsqueeze(1)
    model = nn.Linear(3, 1)
    with torch.no_grad():
        model.weight.copy_(torch.from_numpy(np.random.uniform(-0.1, 0.1, (1, 3))))  # float64 into float32
        model.bias.fill_(np.float64(0.0))
    optimizer = m.optim.SGD(model.parameters(), lr=0.5)
    for epoch in range(60):
        batch = np.random.choice(48, 16, replace=False)
        optimizer.zero_grad()
        loss = ((model(X_t[batch]) - y_t[batch]) ** 2).mean()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        val_pred = model(torch.as_tensor(X[val], dtype=torch.float32)).squeeze(1).numpy()
    val_mse = np.mean((val_pred - y[val]) ** 2)
    lstsq_w = np.linalg.lstsq(np.c_[X[train], np.ones(48)], y[train], rcond=None)[0]
    return (model.weight.detach().numpy().ravel(), model.bias.item(), float(val_mse), lstsq_w,
            kind(val_mse), dtype_name(model.weight.dtype))


def test_data_drawn_by_numpy_random_trains_a_regression():
    ours, _ = run_both(numpy_seeded_regression, rtol=1e-5, atol=1e-6)
    w, b, val_mse, lstsq_w, mse_kind, weight_dtype = ours
    np.testing.assert_allclose(w, lstsq_w[:3], atol=0.05)  # near the least-squares answer
    assert abs(b - lstsq_w[3]) < 0.05 and val_mse < 0.01 and mse_kind == "np.float64" and weight_dtype == "float32"


# ----------------------------------------------------------------------------------------------
# 10. a Dataset over NumPy arrays, batched by default_collate
# ----------------------------------------------------------------------------------------------


def numpy_dataset(m):
    torch, nn, F, data = m.torch, m.nn, m.F, m.data
    X, y = blobs(n=40)
    weights = np.linspace(0.5, 1.5, 40)

    class NumpyDataset(data.Dataset):
        def __init__(self, X, y, weights, transform=None):
            self.X, self.y, self.weights, self.transform = X, y, weights, transform

        def __len__(self):
            return len(self.X)

        def __getitem__(self, idx):
            x = self.X[idx]
            if self.transform:
                x = self.transform(x)
            return {"x": x, "label": self.y[idx], "weight": self.weights[idx], "mask": x > 0,
                    "scale": np.float32(2.0), "index": idx, "meta": (np.int32(idx % 2), f"item{idx}")}

    normalise = lambda x: ((x - X.mean(0)) / X.std(0)).astype(np.float32)
    dataset = NumpyDataset(X, y, weights, transform=normalise)
    loader = data.DataLoader(dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    optimizer = m.optim.SGD(model.parameters(), lr=0.1)
    kinds, losses = None, []
    for batch in loader:
        if kinds is None:
            kinds = {k: kind(v) for k, v in batch.items() if k != "meta"}
            kinds["meta"] = [kind(batch["meta"][0]), type(batch["meta"][1]).__name__]
        per_sample = F.cross_entropy(model(batch["x"]), batch["label"], reduction="none")
        loss = (per_sample * batch["weight"]).sum() / batch["weight"].sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first = next(iter(data.DataLoader(dataset, batch_size=4)))
    subset = data.Subset(dataset, np.array([3, 1, 4]))
    picked = data.default_collate([subset[i] for i in range(len(subset))])
    return kinds, losses, first["x"], first["mask"], first["index"], first["meta"][1], picked["label"], \
        picked["weight"], model.weight


def test_a_dataset_over_numpy_arrays_batched_by_default_collate():
    ours, _ = run_both(numpy_dataset, rtol=1e-5, atol=1e-6)
    kinds = ours[0]
    assert kinds == {"x": "Tensor(float32)", "label": "Tensor(int64)", "weight": "Tensor(float64)",
                     "mask": "Tensor(bool)", "scale": "Tensor(float32)", "index": "Tensor(int64)",
                     "meta": ["Tensor(int32)", "tuple"]}
    assert ours[5] == ("item0", "item1", "item2", "item3")


# ----------------------------------------------------------------------------------------------
# 11. an sklearn-style estimator around a network
# ----------------------------------------------------------------------------------------------


def sklearn_style(m, weights):
    torch, nn, F = m.torch, m.nn, m.F

    class TorchClassifier:
        def __init__(self, epochs=20, lr=0.05, batch_size=32, seed=0):
            self.epochs, self.lr, self.batch_size, self.seed = epochs, lr, batch_size, seed

        def fit(self, X: np.ndarray, y: np.ndarray):
            self.classes_ = np.unique(y)
            self.mean_, self.scale_ = X.mean(axis=0), X.std(axis=0) + 1e-8
            X_t = torch.as_tensor((X - self.mean_) / self.scale_, dtype=torch.float32)
            y_t = torch.as_tensor(np.searchsorted(self.classes_, y))
            self.model_ = load(m, classifier(m), weights)
            optimizer = m.optim.Adam(self.model_.parameters(), lr=self.lr)
            rng = np.random.RandomState(self.seed)
            self.loss_curve_ = []
            for epoch in range(self.epochs):
                order = rng.permutation(len(X))
                total = 0.0
                for start in range(0, len(X), self.batch_size):
                    idx = order[start:start + self.batch_size]
                    optimizer.zero_grad()
                    loss = F.cross_entropy(self.model_(X_t[idx]), y_t[idx])
                    loss.backward()
                    optimizer.step()
                    total += float(loss) * len(idx)
                self.loss_curve_.append(total / len(X))
            return self

        def predict_proba(self, X):
            self.model_.eval()
            with torch.no_grad():
                X_t = torch.from_numpy(((X - self.mean_) / self.scale_).astype(np.float32))
                return F.softmax(self.model_(X_t), dim=-1).numpy()

        def predict(self, X):
            return self.classes_[self.predict_proba(X).argmax(axis=1)]

        def score(self, X, y):
            return np.mean(self.predict(X) == y)

    X, y = blobs(n=120)
    labels = np.array(["cat", "dog", "eel"])[y]
    clf = TorchClassifier(epochs=5).fit(X[:90], labels[:90])
    proba = clf.predict_proba(X[90:])
    predicted = clf.predict(X[90:])
    return clf.loss_curve_, proba, predicted.tolist(), float(clf.score(X[90:], labels[90:])), kind(proba), \
        kind(clf.score(X[90:], labels[90:]))


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad=True to a scalar")  # (PyTorch's)
def test_an_sklearn_style_estimator_around_a_network():
    ours, _ = run_both(sklearn_style, weights_of(classifier), rtol=1e-4, atol=1e-5)
    losses, proba, predicted, score, proba_kind, score_kind = ours
    assert losses[-1] < losses[0] and proba_kind == "ndarray(float32)" and score_kind == "np.float64"
    assert set(predicted) <= {"cat", "dog", "eel"} and score > 0.8


# ----------------------------------------------------------------------------------------------
# 13. early stopping and meters mixing tensors, np.inf and NumPy scalars
# ----------------------------------------------------------------------------------------------


def meters_and_early_stopping(m, weights):
    torch, F = m.torch, m.F

    class AverageMeter:
        def __init__(self):
            self.reset()

        def reset(self):
            self.val = self.avg = self.sum = self.count = 0

        def update(self, val, n=1):
            self.val = val
            self.sum += val * n
            self.count += n
            self.avg = self.sum / self.count

    class EarlyStopping:
        def __init__(self, patience=2, delta=0.0):
            self.patience, self.delta = patience, delta
            self.counter, self.best_score, self.early_stop, self.val_loss_min = 0, None, False, np.inf

        def __call__(self, val_loss, model):
            score = -val_loss
            if self.best_score is None or score > self.best_score + self.delta:
                self.best_score, self.val_loss_min, self.counter = score, val_loss, 0
                self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                self.counter += 1
                self.early_stop = self.counter >= self.patience

    X, y = blobs(n=64)
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)
    model = load(m, classifier(m), weights)
    optimizer = m.optim.SGD(model.parameters(), lr=0.8)  # large: the validation loss turns back up
    stopper, meter, tensor_meter = EarlyStopping(patience=2), AverageMeter(), AverageMeter()
    epochs, kinds = [], set()
    for epoch in range(12):
        for i in range(0, 48, 16):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(X_t[i:i + 16]), y_t[i:i + 16])
            loss.backward()
            optimizer.step()
            meter.update(loss.item(), 16)
            tensor_meter.update(loss.detach(), 16)  # a tensor in the meter: sums stay tensors
        with torch.no_grad():
            val_loss = F.cross_entropy(model(X_t[48:]), y_t[48:])
        stopper(np.float32(val_loss.item()), model)
        kinds.add((kind(stopper.val_loss_min), kind(tensor_meter.avg), kind(-val_loss)))
        epochs.append(f"{epoch:02d} train {meter.avg:.4f} ({tensor_meter.avg:.4f}) val {val_loss:.4f} "
                      f"best {stopper.val_loss_min:.4f}")
        if stopper.early_stop:
            break
    improved = bool(val_loss < np.inf) and bool(np.float32(0) < val_loss)
    return epochs, sorted(kinds), stopper.state["2.bias"], float(stopper.best_score), improved


def test_early_stopping_and_meters_mix_tensors_and_numpy_scalars():
    ours, _ = run_both(meters_and_early_stopping, weights_of(classifier), rtol=1e-4, atol=1e-5)
    epochs, kinds, _, best, improved = ours
    assert kinds[0][1:] == ("Tensor(float32)", "Tensor(float32)") and improved
    assert all(line.count(".") == 4 for line in epochs)
