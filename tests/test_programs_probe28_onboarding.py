"""A new user's first hour, as the beginner material teaches it and a newcomer types it from memory: "Learn the
Basics" (tensors and the NumPy bridge, a custom Dataset with a one-hot Lambda through scatter_, a model class
printed and its named_parameters walked, autograd with Jacobian-vector products, the train/test loops, saving
and loading), the "60 Minute Blitz" (LeNet on random data, next_functions walked back, a hand-written SGD step
through ``.data``), "What is torch.nn really?" (a hand-written log_softmax and nll up to a CNN of Lambda layers
behind a WrappedDataLoader) and "Learning PyTorch with Examples" (the cubic fit in NumPy, by hand, with autograd,
a custom Function, nn.Sequential with Flatten(0, 1), an optimizer). Each runs on chainrule and, where installed,
on PyTorch: printed text, values and gradients must agree; without PyTorch each checks NumPy's numbers or an
invariant that can fail. The newcomer errors of these programs are in ``test_probe28_onboarding_fixes.py``.
"""

import math
import re

import numpy as np

from tests.pytorch_programs import run_both

RNG = np.random.default_rng(28)
IMAGES = RNG.random((24, 28, 28)).astype(np.float32)
LABELS = RNG.integers(0, 10, 24)


def _text(printed):
    """Printed text, compared between the libraries: PyTorch names its dtypes torch.float64 and its sizes
    torch.Size (README's deliberate differences), and its nodes print their address; the rest must be the same
    character for character."""
    return re.sub(r" object at 0x[0-9a-f]+", "", printed).replace("torch.", "")


# -- Learn the Basics: tensors -----------------------------------------------------------------------------


def _tensors(m):
    torch = m.torch
    data = [[1, 2], [3, 4]]
    x_data = torch.tensor(data)
    np_array = np.array(data)
    x_np = torch.from_numpy(np_array)
    x_ones = torch.ones_like(x_data)
    tensor = torch.ones(4, 4)
    tensor[:, 1] = 0
    t1 = torch.cat([tensor, tensor, tensor], dim=1)
    y1 = tensor @ tensor.T
    y3 = torch.rand_like(y1)
    torch.matmul(tensor, tensor.T, out=y3)
    z3 = torch.rand_like(tensor)
    torch.mul(tensor, tensor, out=z3)
    agg_item = tensor.sum().item()
    tensor.add_(5)
    t = torch.ones(5)
    n = t.numpy()
    t.add_(1)  # the array sees it: one memory
    n2 = np.ones(5)
    t2 = torch.from_numpy(n2)
    np.add(n2, 1, out=n2)  # and the tensor sees this
    printed = _text("\n".join([f"Ones Tensor: \n {x_ones} \n", str(x_np), f"First column: {tensor[:, 0]}",
                         f"Last column: {tensor[..., -1]}", str(t1[0]), str(y3), str(z3),
                         f"{agg_item} {type(agg_item)}", f"t: {t}\nn: {n}", f"t: {t2}\nn: {n2}"]))
    return printed, x_data.dtype == torch.int64, n.copy(), t2


def test_tensors_print_and_share_memory_with_numpy():
    printed, int64, n, t2 = run_both(_tensors)[0]
    assert int64
    np.testing.assert_array_equal(n, np.full(5, 2.0, np.float32))
    np.testing.assert_array_equal(t2, np.full(5, 2.0))
    assert "First column: tensor([6., 6., 6., 6.])" in printed and "12.0 <class 'float'>" in printed
    assert "tensor([1., 0., 1., 1., 1., 0., 1., 1., 1., 0., 1., 1.])" in printed
    assert "tensor([2., 2., 2., 2., 2.], dtype=float64)" in printed


# -- Learn the Basics: a Dataset with a one-hot target transform, a DataLoader, a model printed -----------------


def _dataset_and_model(m):
    torch, nn = m.torch, m.nn

    class Lambda:  # torchvision.transforms.Lambda, as the tutorial uses it
        def __init__(self, f):
            self.f = f

        def __call__(self, x):
            return self.f(x)

    class CustomImageDataset(m.data.Dataset):
        def __init__(self, transform=None, target_transform=None):
            self.transform, self.target_transform = transform, target_transform

        def __len__(self):
            return len(LABELS)

        def __getitem__(self, idx):
            image, label = torch.from_numpy(IMAGES[idx]).unsqueeze(0), int(LABELS[idx])
            if self.transform:
                image = self.transform(image)
            if self.target_transform:
                label = self.target_transform(label)
            return image, label

    one_hot = Lambda(lambda y: torch.zeros(10, dtype=torch.float).scatter_(0, torch.tensor(y), value=1))
    training_data = CustomImageDataset(target_transform=one_hot)
    train_dataloader = m.data.DataLoader(training_data, batch_size=8, shuffle=False)
    train_features, train_labels = next(iter(train_dataloader))

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(nn.Linear(28 * 28, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                                                   nn.Linear(64, 10))

        def forward(self, x):
            return self.linear_relu_stack(self.flatten(x))

    torch.manual_seed(0)
    model = NeuralNetwork().to("cpu")
    logits = model(train_features)
    pred_probab = nn.Softmax(dim=1)(logits)
    printed = [f"Feature batch shape: {train_features.size()}", f"Labels batch shape: {train_labels.size()}",
               f"Model structure: {model}\n"]
    for name, param in model.named_parameters():
        values = param[:2, :3] if param.ndim == 2 else param[:2]
        printed.append(f"Layer: {name} | Size: {param.size()} | Values : {values}")
    loss = nn.CrossEntropyLoss()(logits, train_labels)  # one-hot float targets: class probabilities
    loss.backward()
    return _text("\n".join(printed)), train_labels, pred_probab, loss, model.linear_relu_stack[4].bias.grad


def test_a_custom_dataset_with_a_one_hot_transform_and_the_model_it_feeds():
    printed, labels, probab, loss, bias_grad = run_both(_dataset_and_model)[0]
    np.testing.assert_array_equal(labels, np.eye(10, dtype=np.float32)[LABELS[:8]])
    np.testing.assert_allclose(probab.sum(1), np.ones(8), rtol=1e-6)
    # d(mean CE)/d(bias) = mean over the batch of (softmax - one-hot): its entries add up to 0
    np.testing.assert_allclose(bias_grad, (probab - labels).mean(0), atol=1e-6)
    assert "Layer: linear_relu_stack.0.weight | Size: Size([64, 784])" in printed
    assert "(flatten): Flatten(start_dim=1, end_dim=-1)" in printed


# -- Learn the Basics: autograd ---------------------------------------------------------------------------


def _autograd_basics(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    x, y = torch.ones(5), torch.zeros(3)
    w = torch.randn(5, 3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    z = torch.matmul(x, w) + b
    loss = F.binary_cross_entropy_with_logits(z, y)
    names = [z.grad_fn.name(), loss.grad_fn.name()]
    loss.backward()
    with torch.no_grad():
        z2 = torch.matmul(x, w) + b
    flags = [z.requires_grad, z2.requires_grad, z.detach().requires_grad]
    inp = torch.eye(4, 5, requires_grad=True)
    out = (inp + 1).pow(2).t()
    out.backward(torch.ones_like(out), retain_graph=True)
    first = inp.grad.clone()
    out.backward(torch.ones_like(out), retain_graph=True)
    second = inp.grad.clone()
    inp.grad.zero_()
    out.backward(torch.ones_like(out), retain_graph=True)
    return names, flags, w, w.grad, b.grad, first, second, inp.grad, _text(f"First call\n{first}")


def test_autograd_gradients_and_jacobian_vector_products():
    names, flags, w, w_grad, b_grad, first, second, third, printed = run_both(_autograd_basics)[0]
    assert printed.startswith("First call\ntensor([[4., 2., 2., 2., 2.],")
    assert names == ["AddBackward0", "BinaryCrossEntropyWithLogitsBackward0"]
    assert flags == [True, False, False]
    np.testing.assert_allclose(w_grad, np.outer(np.ones(5), b_grad), rtol=1e-6)  # dz/dw = x ⊗ dL/dz
    expected = 2 * (np.eye(4, 5) + 1)  # d/dinp of sum((inp + 1)^2)
    np.testing.assert_allclose(first, expected)
    np.testing.assert_allclose(second, 2 * expected)  # accumulated
    np.testing.assert_allclose(third, expected)  # after zero_()


# -- Learn the Basics: the optimisation loop, save and load --------------------------------------------------


def _quickstart(m, path):
    torch, nn = m.torch, m.nn
    torch.manual_seed(1)
    dataset = m.data.TensorDataset(torch.tensor(IMAGES[:, None]), torch.tensor(LABELS))
    dataloader = m.data.DataLoader(dataset, batch_size=8)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))
    loss_fn = nn.CrossEntropyLoss()
    optimizer = m.optim.SGD(model.parameters(), lr=0.1)
    logs = []

    def train_loop():
        size = len(dataloader.dataset)
        model.train()
        for batch, (X, y) in enumerate(dataloader):
            loss = loss_fn(model(X), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if batch % 2 == 0:
                loss, current = loss.item(), batch * dataloader.batch_size + len(X)
                logs.append(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")

    def test_loop():
        model.eval()
        size, num_batches = len(dataloader.dataset), len(dataloader)
        test_loss, correct = 0, 0
        with torch.no_grad():
            for X, y in dataloader:
                pred = model(X)
                test_loss += loss_fn(pred, y).item()
                correct += (pred.argmax(1) == y).type(torch.float).sum().item()
        test_loss /= num_batches
        correct /= size
        logs.append(f"Test Error: \n Accuracy: {(100 * correct):>0.1f}%, Avg loss: {test_loss:>8f} \n")
        return correct

    accuracies = []
    for _ in range(3):
        train_loop()
        accuracies.append(test_loop())
    torch.save(model.state_dict(), path)
    again = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))
    message = str(again.load_state_dict(torch.load(path, weights_only=True)))
    again.eval()
    with torch.no_grad():
        same = torch.equal(again(dataset.tensors[0]), model(dataset.tensors[0]))
    assert logs[-1].startswith("Test Error: \n Accuracy: ") and logs[0].startswith("loss: ")
    return accuracies, message, same, model[4].bias, float(logs[-1].split("Avg loss: ")[1])  # (printed to 6 places)


def test_the_train_and_test_loops_then_the_weights_saved_and_loaded(tmp_path):
    (accuracies, message, same, bias, avg_loss), theirs = run_both(
        lambda m: _quickstart(m, tmp_path / f"{m.torch.__name__}.pth"), rtol=2e-4, atol=2e-5)
    assert message == "<All keys matched successfully>" and same
    assert all(a * len(LABELS) == round(a * len(LABELS)) for a in accuracies)  # correct counted as whole examples
    assert avg_loss < math.log(10) and bias.shape == (10,)  # below a uniform guess's loss: it learns


# -- the 60 Minute Blitz ---------------------------------------------------------------------------------------


def _blitz(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
            self.fc1, self.fc2, self.fc3 = nn.Linear(16 * 5 * 5, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv1(x)), (2, 2))
            x = F.max_pool2d(F.relu(self.conv2(x)), 2)
            x = torch.flatten(x, 1)
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    torch.manual_seed(0)
    net = Net()
    params = list(net.parameters())
    input = torch.randn(1, 1, 32, 32)
    net.zero_grad()
    net(input).backward(torch.randn(1, 10))
    target = torch.randn(10).view(1, -1)
    loss = nn.MSELoss()(net(input), target)
    chain = [_text(str(loss.grad_fn)), _text(str(loss.grad_fn.next_functions[0][0])),
             _text(str(loss.grad_fn.next_functions[0][0].next_functions[0][0]))]
    net.zero_grad()
    before = net.conv1.bias.grad
    loss.backward()
    learning_rate = 0.01
    old = net.fc3.bias.detach().clone()
    for f in net.parameters():
        f.data.sub_(f.grad.data * learning_rate)
    return len(params), params[0].size(), chain, before, net.conv1.bias.grad, old, net.fc3.bias, net.fc3.bias.grad


def test_the_blitz_lenet_backward_and_a_manual_sgd_step():
    (count, size, chain, before, conv_grad, old, bias, bias_grad), theirs = run_both(_blitz, atol=1e-6)
    assert count == 10 and tuple(size) == (6, 1, 5, 5)
    assert chain == ["<MseLossBackward0>", "<AddmmBackward0>", "<AccumulateGrad>"]
    assert before is None  # zero_grad() sets None (set_to_none=True)
    assert np.abs(conv_grad).sum() > 0
    np.testing.assert_allclose(bias, old - 0.01 * bias_grad, rtol=1e-6)  # the step through .data


# -- What is torch.nn really? -----------------------------------------------------------------------------------


def _nn_really(m):
    torch, nn, F = m.torch, m.nn, m.F
    x_train, y_train = torch.tensor(IMAGES.reshape(24, 784)), torch.tensor(LABELS)
    n = x_train.shape[0]
    torch.manual_seed(0)
    weights = torch.randn(784, 10) / math.sqrt(784)
    weights.requires_grad_()
    bias = torch.zeros(10, requires_grad=True)

    def log_softmax(x):
        return x - x.exp().sum(-1).log().unsqueeze(-1)

    def model(xb):
        return log_softmax(xb @ weights + bias)

    def nll(input, target):
        return -input[range(target.shape[0]), target].mean()

    bs, lr = 8, 0.01
    first = nll(model(x_train[:bs]), y_train[:bs])
    for _ in range(2):
        for i in range((n - 1) // bs + 1):
            xb, yb = x_train[i * bs:i * bs + bs], y_train[i * bs:i * bs + bs]
            loss = nll(model(xb), yb)
            loss.backward()
            with torch.no_grad():
                weights -= weights.grad * lr
                bias -= bias.grad * lr
                weights.grad.zero_()
                bias.grad.zero_()
    by_hand = (nll(model(x_train), y_train), F.cross_entropy(x_train @ weights + bias, y_train))

    class Lambda(nn.Module):
        def __init__(self, func):
            super().__init__()
            self.func = func

        def forward(self, x):
            return self.func(x)

    class WrappedDataLoader:
        def __init__(self, dl, func):
            self.dl, self.func = dl, func

        def __len__(self):
            return len(self.dl)

        def __iter__(self):
            for b in self.dl:
                yield self.func(*b)

    torch.manual_seed(1)
    cnn = nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), Lambda(lambda x: x.view(x.size(0), -1)))
    opt = m.optim.SGD(cnn.parameters(), lr=0.1, momentum=0.9)
    train_dl = WrappedDataLoader(m.data.DataLoader(m.data.TensorDataset(x_train, y_train), batch_size=bs),
                                 lambda x, y: (x.view(-1, 1, 28, 28), y))
    losses = []
    for xb, yb in train_dl:
        loss = F.cross_entropy(cnn(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return first, by_hand, bias, losses, repr(cnn[4])


def test_what_is_torch_nn_really_from_hand_written_log_softmax_to_a_wrapped_loader():
    (first, (mine, library), bias, losses, pool), theirs = run_both(_nn_really, rtol=1e-4, atol=1e-6)
    assert pool == "AdaptiveAvgPool2d(output_size=1)"
    np.testing.assert_allclose(mine, library, rtol=1e-5)  # the hand-written loss is cross_entropy
    assert mine < first and abs(float(bias.sum())) < 1e-5  # softmax's gradients add to 0 over the classes
    assert len(losses) == 3 and all(np.isfinite(losses))


# -- Learning PyTorch with Examples: the cubic fit -----------------------------------------------------------


def _cubic_numpy(steps, lr=1e-6):
    x = np.linspace(-math.pi, math.pi, 200)
    y = np.sin(x)
    a, b, c, d = 0.1, -0.2, 0.3, -0.4
    for _ in range(steps):
        y_pred = a + b * x + c * x ** 2 + d * x ** 3
        grad_y_pred = 2.0 * (y_pred - y)
        a -= lr * grad_y_pred.sum()
        b -= lr * (grad_y_pred * x).sum()
        c -= lr * (grad_y_pred * x ** 2).sum()
        d -= lr * (grad_y_pred * x ** 3).sum()
    return np.array([a, b, c, d])


def _cubic(m, steps):
    torch = m.torch
    x = torch.linspace(-math.pi, math.pi, 200, dtype=torch.float64)
    y = torch.sin(x)
    a, b, c, d = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.1, -0.2, 0.3, -0.4))
    for _ in range(steps):
        loss = (a + b * x + c * x ** 2 + d * x ** 3 - y).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            for p in (a, b, c, d):
                p -= 1e-6 * p.grad
                p.grad = None
    return torch.stack([a, b, c, d])


def test_the_cubic_fit_by_autograd_is_numpys_by_hand():
    ours, _ = run_both(_cubic, 300, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours, _cubic_numpy(300), rtol=1e-10)


def _legendre_and_sequential(m):
    torch, nn = m.torch, m.nn

    class LegendrePolynomial3(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return 0.5 * (5 * input ** 3 - 3 * input)

        @staticmethod
        def backward(ctx, grad_output):
            input, = ctx.saved_tensors
            return grad_output * 1.5 * (5 * input ** 2 - 1)

    x = torch.linspace(-math.pi, math.pi, 200)
    y = torch.sin(x)
    a, b, c, d = (torch.full((), v, requires_grad=True) for v in (0.0, -1.0, 0.0, 0.3))
    P3 = LegendrePolynomial3.apply
    for _ in range(50):
        loss = (a + b * P3(c + d * x) - y).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            for p in (a, b, c, d):
                p -= 5e-6 * p.grad
                p.grad = None
    xx = x.unsqueeze(-1).pow(torch.tensor([1, 2, 3]))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0, 1))
    loss_fn = nn.MSELoss(reduction="sum")
    optimizer = m.optim.RMSprop(model.parameters(), lr=1e-3)
    for _ in range(50):
        seq_loss = loss_fn(model(xx), y)
        optimizer.zero_grad()
        seq_loss.backward()
        optimizer.step()
    return torch.stack([a, b, c, d]), loss, model(xx).shape, model[0].weight, seq_loss


def test_legendre_function_and_flatten_0_1_sequential():
    (abcd, loss, shape, weight, seq_loss), _ = run_both(_legendre_and_sequential, rtol=1e-4, atol=1e-5)
    assert tuple(shape) == (200,)  # Flatten(0, 1) takes (200, 1) to (200,)
    assert 0 < float(seq_loss) and weight.shape == (1, 3)
    # the Function's backward is P3's derivative: 50 steps of it lower the loss from its start (a = c = 0, b = -1,
    # d = 0.3), NumPy's, and the coefficients stay near where they started (lr 5e-6)
    x = np.linspace(-np.pi, np.pi, 200, dtype=np.float32)
    z = 0.3 * x
    start = ((-0.5 * (5 * z ** 3 - 3 * z) - np.sin(x)) ** 2).sum()
    assert float(loss) < start
    assert abcd.shape == (4,)
