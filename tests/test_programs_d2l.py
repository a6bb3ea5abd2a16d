# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is
a function of the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``, ``data``),
run on chainrule and, where PyTorch is installed, on PyTorch, comparing the numbers.

d2l: linear and softmax regression, from scratch and concisely."""

import math
import random

import numpy as np

from .pytorch_programs import quickstart_data, run_both

# ----------------------------------------------------------------------------------------------
# d2l: linear regression from scratch and concisely, softmax regression from scratch
# ----------------------------------------------------------------------------------------------

def d2l_linear_regression_scratch(m):
    torch = m.torch
    torch.manual_seed(0)
    random.seed(0)

    def synthetic_data(w, b, num_examples):
        X = torch.normal(0, 1, (num_examples, len(w)))
        y = torch.matmul(X, w) + b
        y += torch.normal(0, 0.01, y.shape)
        return X, y.reshape((-1, 1))

    true_w = torch.tensor([2, -3.4])
    true_b = 4.2
    features, labels = synthetic_data(true_w, true_b, 1000)

    def data_iter(batch_size, features, labels):
        num_examples = len(features)
        indices = list(range(num_examples))
        random.shuffle(indices)
        for i in range(0, num_examples, batch_size):
            batch_indices = torch.tensor(indices[i: min(i + batch_size, num_examples)])
            yield features[batch_indices], labels[batch_indices]

    w = torch.normal(0, 0.01, size=(2, 1), requires_grad=True)
    b = torch.zeros(1, requires_grad=True)

    def linreg(X, w, b):
        return torch.matmul(X, w) + b

    def squared_loss(y_hat, y):
        return (y_hat - y.reshape(y_hat.shape)) ** 2 / 2

    def sgd(params, lr, batch_size):
        with torch.no_grad():
            for param in params:
                param -= lr * param.grad / batch_size
                param.grad.zero_()

    lr, num_epochs, batch_size = 0.03, 3, 10
    net, loss = linreg, squared_loss
    for epoch in range(num_epochs):
        for X, y in data_iter(batch_size, features, labels):
            l = loss(net(X, w, b), y)
            l.sum().backward()
            sgd([w, b], lr, batch_size)
        with torch.no_grad():
            train_l = loss(net(features, w, b), labels)
    return {"loss": float(train_l.mean()), "w_error": true_w - w.reshape(true_w.shape), "b_error": true_b - b}


def test_d2l_linear_regression_scratch():
    ours, _ = run_both(d2l_linear_regression_scratch, compare=False)
    assert ours["loss"] < 1e-3
    np.testing.assert_allclose(ours["w_error"], 0, atol=0.02)
    np.testing.assert_allclose(ours["b_error"], 0, atol=0.02)


def d2l_linear_regression_concise(m):
    torch, nn, data = m.torch, m.nn, m.data
    torch.manual_seed(0)
    true_w = torch.tensor([2, -3.4])
    true_b = 4.2
    features = torch.normal(0, 1, (500, 2))
    labels = (torch.matmul(features, true_w) + true_b + torch.normal(0, 0.01, (500,))).reshape((-1, 1))

    def load_array(data_arrays, batch_size, is_train=True):
        dataset = data.TensorDataset(*data_arrays)
        return data.DataLoader(dataset, batch_size, shuffle=is_train)

    data_iter = load_array((features, labels), 10)
    first = next(iter(data_iter))
    net = nn.Sequential(nn.Linear(2, 1))
    net[0].weight.data.normal_(0, 0.01)
    net[0].bias.data.fill_(0)
    loss = nn.MSELoss()
    trainer = m.optim.SGD(net.parameters(), lr=0.03)
    for epoch in range(3):
        for X, y in data_iter:
            l = loss(net(X), y)
            trainer.zero_grad()
            l.backward()
            trainer.step()
        l = loss(net(features), labels)
    w = net[0].weight.data
    b = net[0].bias.data
    return {"first": [tuple(t.shape) for t in first], "loss": l.item(), "w_error": true_w - w.reshape(true_w.shape),
            "b_error": true_b - b}


def test_d2l_linear_regression_concise():
    ours, _ = run_both(d2l_linear_regression_concise, compare=False)
    assert ours["first"] == [(10, 2), (10, 1)] and ours["loss"] < 1e-3
    np.testing.assert_allclose(ours["w_error"], 0, atol=0.02)


def d2l_softmax_scratch(m):
    torch = m.torch
    images, labels = quickstart_data(n=200, side=4, classes=3, seed=3)
    X_all = torch.tensor(images.reshape(200, -1))
    y_all = torch.tensor(labels)
    num_inputs, num_outputs = 16, 3
    W = torch.normal(0, 0.01, size=(num_inputs, num_outputs), requires_grad=True)
    b = torch.zeros(num_outputs, requires_grad=True)

    def softmax(X):
        X_exp = torch.exp(X)
        partition = X_exp.sum(1, keepdim=True)
        return X_exp / partition

    def net(X):
        return softmax(torch.matmul(X.reshape((-1, W.shape[0])), W) + b)

    def cross_entropy(y_hat, y):
        return - torch.log(y_hat[range(len(y_hat)), y])

    def accuracy(y_hat, y):
        if len(y_hat.shape) > 1 and y_hat.shape[1] > 1:
            y_hat = y_hat.argmax(axis=1)
        cmp = y_hat.type(y.dtype) == y
        return float(cmp.type(y.dtype).sum())

    y = torch.tensor([0, 2])
    y_hat = torch.tensor([[0.1, 0.3, 0.6], [0.3, 0.2, 0.5]])
    picked = y_hat[[0, 1], y]
    first_accuracy = accuracy(y_hat, y) / len(y)
    X = torch.normal(0, 1, (2, 5))
    X_prob = softmax(X)
    lr = 0.1
    for epoch in range(20):
        for i in range(0, 200, 20):
            l = cross_entropy(net(X_all[i:i + 20]), y_all[i:i + 20])
            l.sum().backward()
            with torch.no_grad():
                for param in [W, b]:
                    param -= lr * param.grad / 20
                    param.grad.zero_()
    with torch.no_grad():
        acc = accuracy(net(X_all), y_all) / len(y_all)
    return {"picked": picked, "first_accuracy": first_accuracy, "row_sums": X_prob.sum(1), "accuracy": acc}


def test_d2l_softmax_scratch():
    ours, _ = run_both(d2l_softmax_scratch, compare=False)
    np.testing.assert_allclose(ours["picked"], [0.1, 0.5])
    assert ours["first_accuracy"] == 0.5 and ours["accuracy"] > 0.9
    np.testing.assert_allclose(ours["row_sums"], 1, rtol=1e-6)


def d2l_mlp_init(m):
    """d2l's concise MLP: net.apply(init_weights), type(m) == nn.Linear, nn.init."""
    nn = m.nn
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))

    def init_weights(module):
        if type(module) == nn.Linear:  # noqa: E721
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)

    net.apply(init_weights)

    def init_xavier(module):
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            nn.init.constant_(module.bias, 1)

    net[3].apply(init_xavier)
    return {"std": net[1].weight.data.std().item(), "bias": net[1].bias.data.abs().sum().item(),
            "bias3": net[3].bias.data, "bound": net[3].weight.abs().max().item() <= math.sqrt(6 / 35),
            "shape": net(m.torch.ones(2, 1, 4, 4)).shape, "repr": str(net).splitlines()[0]}


def test_d2l_mlp_init():
    ours, _ = run_both(d2l_mlp_init, compare=False)
    assert 0.005 < ours["std"] < 0.015 and ours["bias"] == 0 and ours["bound"]
    np.testing.assert_array_equal(ours["bias3"], 1)
    assert tuple(ours["shape"]) == (2, 3) and ours["repr"] == "Sequential("
