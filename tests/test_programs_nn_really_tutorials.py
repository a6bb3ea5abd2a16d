# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is a function of
the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``, ``data``), run on chainrule and, where
PyTorch is installed, on PyTorch, comparing the numbers. "What is torch.nn really?": from raw tensors to nn.Module,
optim, Dataset and DataLoader, and its CNN; the 60-minute blitz's neural network; a graph of
``grad_fn.next_functions``; a custom Dataset, transforms and a DataLoader pipeline."""

import math

import numpy as np

from .pytorch_programs import load, quickstart_data, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# "What is torch.nn really?": from raw tensors to nn.Module, optim, Dataset and DataLoader
# ----------------------------------------------------------------------------------------------

def nn_tutorial(m, weights_init):
    torch, nn, F, optim, data = m.torch, m.nn, m.F, m.optim, m.data
    images, labels = quickstart_data(n=200, side=4, classes=3, seed=4)
    x_train, y_train = map(torch.tensor, (images.reshape(200, 16)[:160], labels[:160]))
    x_valid, y_valid = map(torch.tensor, (images.reshape(200, 16)[160:], labels[160:]))
    n, c = x_train.shape
    weights = torch.tensor(weights_init) / math.sqrt(16)
    weights.requires_grad_()
    bias = torch.zeros(3, requires_grad=True)

    def log_softmax(x):
        return x - x.exp().sum(-1).log().unsqueeze(-1)

    def model(xb):
        return log_softmax(xb @ weights + bias)

    def nll(input, target):
        return -input[range(target.shape[0]), target].mean()

    loss_func = nll

    def accuracy(out, yb):
        preds = torch.argmax(out, dim=1)
        return (preds == yb).float().mean()

    bs = 32
    lr = 0.5
    epochs = 2
    for epoch in range(epochs):
        for i in range((n - 1) // bs + 1):
            start_i = i * bs
            end_i = start_i + bs
            xb = x_train[start_i:end_i]
            yb = y_train[start_i:end_i]
            pred = model(xb)
            loss = loss_func(pred, yb)
            loss.backward()
            with torch.no_grad():
                weights -= weights.grad * lr
                bias -= bias.grad * lr
                weights.grad.zero_()
                bias.grad.zero_()
    raw = (loss_func(model(x_train[:bs]), y_train[:bs]).item(), accuracy(model(x_train[:bs]), y_train[:bs]).item())
    same_as_F = F.cross_entropy(xb @ weights + bias, yb).item() - nll(model(xb), yb).item()

    class Mnist_Logistic(nn.Module):
        def __init__(self):
            super().__init__()
            self.weights = nn.Parameter(torch.tensor(weights_init) / math.sqrt(16))
            self.bias = nn.Parameter(torch.zeros(3))

        def forward(self, xb):
            return xb @ self.weights + self.bias

    loss_func = F.cross_entropy
    model = Mnist_Logistic()

    def fit():
        for epoch in range(epochs):
            for i in range((n - 1) // bs + 1):
                start_i = i * bs
                end_i = start_i + bs
                xb = x_train[start_i:end_i]
                yb = y_train[start_i:end_i]
                pred = model(xb)
                loss = loss_func(pred, yb)
                loss.backward()
                with torch.no_grad():
                    for p in model.parameters():
                        p -= p.grad * lr
                    model.zero_grad()

    fit()
    module = loss_func(model(x_train[:bs]), y_train[:bs]).item()

    def loss_batch(model, loss_func, xb, yb, opt=None):
        loss = loss_func(model(xb), yb)
        if opt is not None:
            loss.backward()
            opt.step()
            opt.zero_grad()
        return loss.item(), len(xb)

    def fit_loop(epochs, model, loss_func, opt, train_dl, valid_dl):
        history = []
        for epoch in range(epochs):
            model.train()
            for xb, yb in train_dl:
                loss_batch(model, loss_func, xb, yb, opt)
            model.eval()
            with torch.no_grad():
                losses, nums = zip(*[loss_batch(model, loss_func, xb, yb) for xb, yb in valid_dl])
            val_loss = np.sum(np.multiply(losses, nums)) / np.sum(nums)
            history.append(val_loss)
        return history

    def get_data(train_ds, valid_ds, bs):
        return (data.DataLoader(train_ds, batch_size=bs, shuffle=False),
                data.DataLoader(valid_ds, batch_size=bs * 2))

    class Lambda(nn.Module):
        def __init__(self, func):
            super().__init__()
            self.func = func

        def forward(self, x):
            return self.func(x)

    train_ds = data.TensorDataset(x_train, y_train)
    valid_ds = data.TensorDataset(x_valid, y_valid)
    train_dl, valid_dl = get_data(train_ds, valid_ds, bs)
    model = nn.Sequential(
        Lambda(lambda x: x.view(-1, 1, 4, 4)),
        nn.Flatten(),
        nn.Linear(16, 3),
    )
    with torch.no_grad():
        model[2].weight.copy_(torch.tensor(weights_init).t() / math.sqrt(16))
        model[2].bias.zero_()
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    history = fit_loop(epochs, model, loss_func, opt, train_dl, valid_dl)
    return {"raw": raw, "same_as_F": same_as_F, "module": module, "history": history}


def test_nn_tutorial():
    w = np.random.default_rng(4).standard_normal((16, 3)).astype(np.float32)
    ours, _ = run_both(nn_tutorial, w, rtol=1e-4, atol=1e-5)
    assert abs(ours["same_as_F"]) < 1e-5 and ours["raw"][1] > 0.8
    np.testing.assert_allclose(ours["module"], ours["raw"][0], rtol=1e-4)
    assert ours["history"][-1] < 0.5


def nn_tutorial_cnn(m, weights):
    """'What is torch.nn really?', the CNN: Conv2d/ReLU stacked, avg pooling, view(-1, C)."""
    torch, nn, F = m.torch, m.nn, m.F

    class Mnist_CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 8, kernel_size=3, stride=2, padding=1)
            self.conv2 = nn.Conv2d(8, 8, kernel_size=3, stride=2, padding=1)
            self.conv3 = nn.Conv2d(8, 3, kernel_size=3, stride=2, padding=1)

        def forward(self, xb):
            xb = xb.view(-1, 1, 8, 8)
            xb = F.relu(self.conv1(xb))
            xb = F.relu(self.conv2(xb))
            xb = F.relu(self.conv3(xb))
            xb = F.avg_pool2d(xb, 1)
            return xb.view(-1, xb.size(1))

    model = Mnist_CNN()
    if weights is None:
        return model
    load(m, model, weights)
    sequential = nn.Sequential(
        nn.Conv2d(1, 8, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 8, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 3, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    images, labels = quickstart_data(n=64, side=8, classes=3, seed=5)
    x, y = m.torch.tensor(images.reshape(64, 64)), m.torch.tensor(labels)
    opt = m.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for epoch in range(5):
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return {"losses": losses, "sequential": sequential(x.view(-1, 1, 8, 8)).shape}


def test_nn_tutorial_cnn():
    weights = weights_of(lambda m: nn_tutorial_cnn(m, None))
    ours, _ = run_both(nn_tutorial_cnn, weights, rtol=1e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0] and tuple(ours["sequential"]) == (64, 3)


def blitz_neural_networks(m, weights, target_init, grad_init):
    """The 60-minute blitz's 'Neural Networks': LeNet with F.max_pool2d, backward with a given
    gradient, MSELoss, a manual update with f.data.sub_, then optim.SGD."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 6, 5)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, input):
            c1 = F.relu(self.conv1(input))
            s2 = F.max_pool2d(c1, (2, 2))
            c3 = F.relu(self.conv2(s2))
            s4 = F.max_pool2d(c3, 2)
            s4 = torch.flatten(s4, 1)
            f5 = F.relu(self.fc1(s4))
            f6 = F.relu(self.fc2(f5))
            output = self.fc3(f6)
            return output

    net = Net()
    if weights is None:
        return net
    load(m, net, weights)
    params = list(net.parameters())
    sizes = (len(params), tuple(params[0].size()))
    input = torch.tensor(target_init[:1024].reshape(1, 1, 32, 32))
    out = net(input)
    net.zero_grad()
    out.backward(torch.tensor(grad_init))
    first_grad = net.fc3.bias.grad.clone()
    output = net(input)
    target = torch.tensor(target_init[:10])
    target = target.view(1, -1)
    criterion = nn.MSELoss()
    loss = criterion(output, target)
    net.zero_grad()
    before = net.conv1.bias.grad
    loss.backward()
    after = net.conv1.bias.grad
    learning_rate = 0.01
    for f in net.parameters():
        f.data.sub_(f.grad.data * learning_rate)
    optimizer = optim.SGD(net.parameters(), lr=0.01)
    losses = [loss.item()]
    for _ in range(5):
        optimizer.zero_grad()
        output = net(input)
        loss = criterion(output, target)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"sizes": sizes, "first_grad": first_grad, "before": before is None, "after": after, "losses": losses}


def test_blitz_neural_networks():
    weights = weights_of(lambda m: blitz_neural_networks(m, None, None, None))
    rng = np.random.default_rng(10)
    ours, _ = run_both(blitz_neural_networks, weights, rng.standard_normal(1024).astype(np.float32),
                       rng.standard_normal((1, 10)).astype(np.float32), rtol=1e-4, atol=1e-6)
    assert ours["sizes"] == (10, (6, 1, 5, 5)) and ours["before"]
    assert ours["losses"][-1] < ours["losses"][0]


def grad_fn_graph(m):
    """The blitz follows loss.grad_fn backwards through next_functions."""
    torch, nn = m.torch, m.nn
    net = nn.Linear(3, 2)
    loss = nn.MSELoss()(net(torch.ones(1, 3)), torch.zeros(1, 2))
    return [loss.grad_fn is not None, loss.grad_fn.next_functions[0][0] is not None,
            loss.grad_fn.next_functions[0][0].next_functions[0][0] is not None]


def test_grad_fn_next_functions():
    ours, _ = run_both(grad_fn_graph)
    assert ours == [True, True, True]


def custom_dataset_pipeline(m):
    """A map-style Dataset subclass, random_split with fractions and a seeded generator, a
    collate_fn padding variable-length sequences, shuffle/drop_last, a seeded DataLoader."""
    torch, data = m.torch, m.data
    from importlib import import_module
    pad_sequence = import_module(m.nn.__name__ + ".utils.rnn").pad_sequence

    class SequenceDataset(data.Dataset):
        def __init__(self, n):
            self.items = [(list(range(1, 2 + i % 4)), i % 2) for i in range(n)]

        def __len__(self):
            return len(self.items)

        def __getitem__(self, idx):
            tokens, label = self.items[idx]
            return torch.tensor(tokens), label

    def collate_batch(batch):
        texts, labels = zip(*batch)
        lengths = torch.tensor([len(t) for t in texts])
        return pad_sequence(list(texts), batch_first=True, padding_value=0), torch.tensor(labels), lengths

    dataset = SequenceDataset(20)
    train_set, val_set = data.random_split(dataset, [0.8, 0.2], generator=torch.Generator().manual_seed(42))
    loader = data.DataLoader(train_set, batch_size=3, shuffle=True, drop_last=True, collate_fn=collate_batch,
                             generator=torch.Generator().manual_seed(0))
    batches = [(tuple(x.shape), y.dtype == torch.int64, int(lengths.max()) == x.shape[1]) for x, y, lengths in loader]
    val_loader = data.DataLoader(val_set, batch_size=8, collate_fn=collate_batch)
    n_val = sum(len(y) for _, y, _ in val_loader)
    return {"sizes": (len(train_set), len(val_set)), "batches": len(batches),
            "ok": all(ok1 and ok2 and shape[0] == 3 for shape, ok1, ok2 in batches), "n_val": n_val}


def test_custom_dataset_pipeline():
    ours, _ = run_both(custom_dataset_pipeline)
    assert ours == {"sizes": (16, 4), "batches": 5, "ok": True, "n_val": 4}
