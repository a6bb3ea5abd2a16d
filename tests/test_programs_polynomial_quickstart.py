# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is
a function of the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``, ``data``),
run on chainrule and, where PyTorch is installed, on PyTorch, comparing the numbers.

PyTorch's polynomial-fitting series and the quickstart."""

import math

import numpy as np

from .pytorch_programs import assert_same, load, quickstart_data, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Learning PyTorch with examples: fitting y = sin(x) with a third-order polynomial
# ----------------------------------------------------------------------------------------------

STEPS = 300


def polynomial_tensors(m, init):
    """Raw tensors, gradients computed by hand."""
    torch = m.torch
    dtype = torch.float
    device = torch.device("cpu")
    x = torch.linspace(-math.pi, math.pi, 2000, device=device, dtype=dtype)
    y = torch.sin(x)
    a, b, c, d = (torch.tensor(v, device=device, dtype=dtype) for v in init)
    learning_rate = 1e-6
    for t in range(STEPS):
        y_pred = a + b * x + c * x ** 2 + d * x ** 3
        loss = (y_pred - y).pow(2).sum().item()
        grad_y_pred = 2.0 * (y_pred - y)
        grad_a = grad_y_pred.sum()
        grad_b = (grad_y_pred * x).sum()
        grad_c = (grad_y_pred * x ** 2).sum()
        grad_d = (grad_y_pred * x ** 3).sum()
        a -= learning_rate * grad_a
        b -= learning_rate * grad_b
        c -= learning_rate * grad_c
        d -= learning_rate * grad_d
    return {"loss": loss, "coefficients": [a.item(), b.item(), c.item(), d.item()]}


def polynomial_autograd(m, init):
    torch = m.torch
    dtype = torch.float
    device = "cpu"
    x = torch.linspace(-math.pi, math.pi, 2000, dtype=dtype)
    y = torch.sin(x)
    a, b, c, d = (torch.tensor(v, device=device, dtype=dtype, requires_grad=True) for v in init)
    learning_rate = 1e-6
    for t in range(STEPS):
        y_pred = a + b * x + c * x ** 2 + d * x ** 3
        loss = (y_pred - y).pow(2).sum()
        loss.backward()
        with torch.no_grad():
            a -= learning_rate * a.grad
            b -= learning_rate * b.grad
            c -= learning_rate * c.grad
            d -= learning_rate * d.grad
            a.grad = None
            b.grad = None
            c.grad = None
            d.grad = None
    return {"loss": loss.item(), "coefficients": [a.item(), b.item(), c.item(), d.item()]}


def test_polynomial_tensors_and_autograd_agree():
    init = [0.5, -0.2, 0.1, 0.05]
    by_hand, _ = run_both(polynomial_tensors, init, rtol=1e-4, atol=1e-5)
    auto, _ = run_both(polynomial_autograd, init, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(by_hand["coefficients"], auto["coefficients"], rtol=1e-4, atol=1e-6)
    assert auto["loss"] < 500  # from ~6000 at the start (the tutorial's 2000 steps reach ~10)


def polynomial_nn(m, weights):
    torch, nn = m.torch, m.nn
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    p = torch.tensor([1, 2, 3])
    xx = x.unsqueeze(-1).pow(p)
    model = nn.Sequential(
        nn.Linear(3, 1),
        nn.Flatten(0, 1)
    )
    load(m, model, weights)
    loss_fn = nn.MSELoss(reduction='sum')
    learning_rate = 1e-6
    for t in range(STEPS):
        y_pred = model(xx)
        loss = loss_fn(y_pred, y)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for param in model.parameters():
                param -= learning_rate * param.grad
    linear_layer = model[0]
    return {"loss": loss.item(), "bias": linear_layer.bias.item(), "weight": linear_layer.weight[:, 0].item(),
            "w2": linear_layer.weight[:, 1].item(), "w3": linear_layer.weight[:, 2].item()}


def polynomial_optim(m, weights):
    torch, nn = m.torch, m.nn
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    p = torch.tensor([1, 2, 3])
    xx = x.unsqueeze(-1).pow(p)
    model = nn.Sequential(nn.Linear(3, 1), nn.Flatten(0, 1))
    load(m, model, weights)
    loss_fn = nn.MSELoss(reduction='sum')
    learning_rate = 1e-3
    optimizer = m.optim.RMSprop(model.parameters(), lr=learning_rate)
    for t in range(STEPS):
        y_pred = model(xx)
        loss = loss_fn(y_pred, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if t == 0:
            first = loss.item()
    return {"first": first, "loss": loss.item(), "state": model.state_dict()}


def polynomial_module(m, init):
    torch = m.torch

    class Polynomial3(m.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = m.nn.Parameter(torch.tensor(init[0]))
            self.b = m.nn.Parameter(torch.tensor(init[1]))
            self.c = m.nn.Parameter(torch.tensor(init[2]))
            self.d = m.nn.Parameter(torch.tensor(init[3]))

        def forward(self, x):
            return self.a + self.b * x + self.c * x ** 2 + self.d * x ** 3

        def string(self):
            return f'y = {self.a.item()} + {self.b.item()} x + {self.c.item()} x^2 + {self.d.item()} x^3'

    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    model = Polynomial3()
    criterion = m.nn.MSELoss(reduction='sum')
    optimizer = m.optim.SGD(model.parameters(), lr=1e-6)
    for t in range(STEPS):
        y_pred = model(x)
        loss = criterion(y_pred, y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"loss": loss.item(), "string": model.string().startswith("y = "),
            "names": [n for n, _ in model.named_parameters()]}


def test_polynomial_nn_optim_and_module():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(3, 1), m.nn.Flatten(0, 1)))
    ours, _ = run_both(polynomial_nn, weights, rtol=1e-4, atol=1e-5)
    assert ours["loss"] < 2000
    ours, _ = run_both(polynomial_optim, weights, rtol=1e-3, atol=1e-4)
    assert ours["loss"] < ours["first"] / 2
    init = [0.5, -0.2, 0.1, 0.05]
    ours, _ = run_both(polynomial_module, init, rtol=1e-4, atol=1e-5)
    by_hand, _ = run_both(polynomial_tensors, init, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["loss"], by_hand["loss"], rtol=1e-4)
    assert ours["names"] == ["a", "b", "c", "d"]


def legendre_polynomial(m):
    """Custom autograd.Function: y = a + b * P3(c + d * x), P3(x) = (5x^3 - 3x) / 2."""
    torch = m.torch

    class LegendrePolynomial3(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return 0.5 * (5 * input ** 3 - 3 * input)

        @staticmethod
        def backward(ctx, grad_output):
            input, = ctx.saved_tensors
            return grad_output * 1.5 * (5 * input ** 2 - 1)

    dtype = torch.float
    device = torch.device("cpu")
    x = torch.linspace(-math.pi, math.pi, 2000, device=device, dtype=dtype)
    y = torch.sin(x)
    a = torch.full((), 0.0, device=device, dtype=dtype, requires_grad=True)
    b = torch.full((), -1.0, device=device, dtype=dtype, requires_grad=True)
    c = torch.full((), 0.0, device=device, dtype=dtype, requires_grad=True)
    d = torch.full((), 0.3, device=device, dtype=dtype, requires_grad=True)
    learning_rate = 5e-6
    losses = []
    for t in range(STEPS):
        P3 = LegendrePolynomial3.apply
        y_pred = a + b * P3(c + d * x)
        loss = (y_pred - y).pow(2).sum()
        losses.append(loss.item())
        loss.backward()
        with torch.no_grad():
            a -= learning_rate * a.grad
            b -= learning_rate * b.grad
            c -= learning_rate * c.grad
            d -= learning_rate * d.grad
            a.grad = None
            b.grad = None
            c.grad = None
            d.grad = None
    return {"losses": losses[::50], "result": [a.item(), b.item(), c.item(), d.item()]}


def test_legendre_polynomial_function():
    ours, _ = run_both(legendre_polynomial, rtol=1e-3, atol=1e-4)
    assert ours["losses"][-1] < ours["losses"][0] / 3


def linear_function_gradcheck(m):
    """'Extending PyTorch': a LinearFunction with ctx.needs_input_grad, checked by gradcheck."""
    torch = m.torch

    class LinearFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input, weight, bias=None):
            ctx.save_for_backward(input, weight, bias)
            output = input.mm(weight.t())
            if bias is not None:
                output += bias.unsqueeze(0).expand_as(output)
            return output

        @staticmethod
        def backward(ctx, grad_output):
            input, weight, bias = ctx.saved_tensors
            grad_input = grad_weight = grad_bias = None
            if ctx.needs_input_grad[0]:
                grad_input = grad_output.mm(weight)
            if ctx.needs_input_grad[1]:
                grad_weight = grad_output.t().mm(input)
            if bias is not None and ctx.needs_input_grad[2]:
                grad_bias = grad_output.sum(0)
            return grad_input, grad_weight, grad_bias

    linear = LinearFunction.apply
    input = (torch.randn(4, 5, dtype=torch.double, requires_grad=True),
             torch.randn(3, 5, dtype=torch.double, requires_grad=True))
    test = torch.autograd.gradcheck(linear, input, eps=1e-6, atol=1e-4)
    x = torch.ones(2, 3, dtype=torch.double)
    w = torch.ones(4, 3, dtype=torch.double, requires_grad=True)
    bias = torch.zeros(4, dtype=torch.double, requires_grad=True)
    linear(x, w, bias).sum().backward()
    return {"gradcheck": test, "w.grad": w.grad, "bias.grad": bias.grad}


def test_linear_function_gradcheck():
    ours, _ = run_both(linear_function_gradcheck)
    assert ours["gradcheck"] is True
    np.testing.assert_array_equal(ours["w.grad"], np.full((4, 3), 2.0))


# ----------------------------------------------------------------------------------------------
# Quickstart: datasets, a Flatten/Linear/ReLU network, train and test loops, saving and loading
# ----------------------------------------------------------------------------------------------

def build_model_tutorial(m, weights):
    """'Build the Neural Network': a model on random images, nn.Softmax, the layers one by one."""
    torch, nn = m.torch, m.nn
    device = "cuda" if torch.cuda.is_available() else "cpu"

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(
                nn.Linear(28*28, 64),
                nn.ReLU(),
                nn.Linear(64, 64),
                nn.ReLU(),
                nn.Linear(64, 10),
            )

        def forward(self, x):
            x = self.flatten(x)
            logits = self.linear_relu_stack(x)
            return logits

    model = NeuralNetwork().to(device)
    if weights is None:
        return model
    load(m, model, weights)
    X = torch.linspace(0, 1, 28 * 28).reshape(1, 28, 28).to(device)
    logits = model(X)
    pred_probab = nn.Softmax(dim=1)(logits)
    y_pred = pred_probab.argmax(1)
    input_image = torch.rand(3, 28, 28)
    flatten = nn.Flatten()
    flat_image = flatten(input_image)
    layer1 = nn.Linear(in_features=28*28, out_features=20)
    hidden1 = layer1(flat_image)
    hidden1 = nn.ReLU()(hidden1)
    seq_modules = nn.Sequential(
        flatten,
        layer1,
        nn.ReLU(),
        nn.Linear(20, 10)
    )
    logits2 = seq_modules(input_image)
    softmax = nn.Softmax(dim=1)
    pred_probab2 = softmax(logits2)
    lines = [f"Layer: {name} | Size: {param.size()} | Values : {param[:2]} \n"
             for name, param in model.named_parameters()]
    return {"probs": pred_probab, "y_pred": y_pred, "flat": tuple(flat_image.size()), "hidden": tuple(hidden1.shape),
            "sums": pred_probab2.sum(1), "min": hidden1.min().item() >= 0, "lines": [ln.split(" |")[0] for ln in lines]}


def test_build_model_tutorial():
    weights = weights_of(lambda m: build_model_tutorial(m, None))
    ours, _ = run_both(build_model_tutorial, weights, rtol=1e-5, atol=1e-6)
    assert ours["flat"] == (3, 784) and ours["hidden"] == (3, 20) and ours["min"]
    np.testing.assert_allclose(ours["sums"], 1, rtol=1e-6)
    assert ours["lines"][0] == "Layer: linear_relu_stack.0.weight"


def target_transform_one_hot(m):
    """The Datasets tutorial's target_transform: Lambda(lambda y: zeros(10).scatter_(0, tensor(y), value=1))."""
    torch = m.torch
    target_transform = (lambda y: torch.zeros(10, dtype=torch.float).scatter_(0, torch.tensor(y), value=1))
    return [target_transform(3), target_transform(9)]


def test_target_transform_one_hot():
    ours, _ = run_both(target_transform_one_hot)
    np.testing.assert_array_equal(ours[0], np.eye(10)[3])


def imagenet_topk_accuracy(m, logits, target):
    """The ImageNet example's accuracy(output, target, topk=(1, 5)) and AverageMeter."""
    torch = m.torch

    class AverageMeter(object):
        def __init__(self, name, fmt=':f'):
            self.name = name
            self.fmt = fmt
            self.reset()

        def reset(self):
            self.val = 0
            self.avg = 0
            self.sum = 0
            self.count = 0

        def update(self, val, n=1):
            self.val = val
            self.sum += val * n
            self.count += n
            self.avg = self.sum / self.count

        def __str__(self):
            fmtstr = '{name} {val' + self.fmt + '} ({avg' + self.fmt + '})'
            return fmtstr.format(**self.__dict__)

    def accuracy(output, target, topk=(1,)):
        with torch.no_grad():
            maxk = max(topk)
            batch_size = target.size(0)
            _, pred = output.topk(maxk, 1, True, True)
            pred = pred.t()
            correct = pred.eq(target.view(1, -1).expand_as(pred))
            res = []
            for k in topk:
                correct_k = correct[:k].reshape(-1).float().sum(0, keepdim=True)
                res.append(correct_k.mul_(100.0 / batch_size))
            return res

    top1 = AverageMeter('Acc@1', ':6.2f')
    top5 = AverageMeter('Acc@5', ':6.2f')
    output, target = torch.tensor(logits), torch.tensor(target)
    for i in range(0, len(target), 4):
        acc1, acc5 = accuracy(output[i:i + 4], target[i:i + 4], topk=(1, 5))
        top1.update(acc1[0], 4)
        top5.update(acc5[0], 4)
    return {"top1": top1.avg, "top5": top5.avg, "str": str(top1)[:6]}


def test_imagenet_topk_accuracy():
    rng = np.random.default_rng(11)
    logits = rng.standard_normal((16, 10)).astype(np.float32)
    target = rng.integers(0, 10, 16)
    ours, _ = run_both(imagenet_topk_accuracy, logits, target)
    order = np.argsort(-logits, axis=1)
    np.testing.assert_allclose(ours["top1"], 100 * np.mean(order[:, 0] == target), rtol=1e-6)
    np.testing.assert_allclose(ours["top5"], 100 * np.mean((order[:, :5] == target[:, None]).any(1)), rtol=1e-6)


def sampling_filters(m, logits_init, targets):
    """Top-p (nucleus) filtering as the Hugging Face-era snippets write it (sort, cumsum, scatter),
    log-probabilities picked with gather, and attention written with einsum."""
    torch, F = m.torch, m.F
    logits = torch.tensor(logits_init)
    top_p = 0.8
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    sorted_indices_to_remove = cumulative_probs > top_p
    sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
    sorted_indices_to_remove[..., 0] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
    filtered = logits.clone()
    filtered[indices_to_remove] = float('-inf')
    kept = (filtered > float('-inf')).sum(-1)

    x = torch.tensor(logits_init, requires_grad=True)
    log_probs = F.log_softmax(x, dim=-1)
    picked = torch.gather(log_probs, 1, torch.tensor(targets).unsqueeze(1)).squeeze(1)
    (-picked.mean()).backward()

    q = torch.tensor(logits_init).view(2, 2, 2, -1)
    k = q.flip(-1)
    att = torch.einsum('bhqd,bhkd->bhqk', q, k) / math.sqrt(q.size(-1))
    return {"kept": kept, "filtered": filtered, "picked": picked, "grad": x.grad, "att": att,
            "same_as_matmul": (att - q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).abs().max().item()}


def test_sampling_filters():
    rng = np.random.default_rng(12)
    logits = rng.standard_normal((4, 8)).astype(np.float32)
    ours, _ = run_both(sampling_filters, logits, rng.integers(0, 8, 4))
    assert (ours["kept"] >= 1).all() and ours["same_as_matmul"] < 1e-6


def quickstart_model(m, side=8, classes=4):
    nn = m.nn

    class NeuralNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.flatten = nn.Flatten()
            self.linear_relu_stack = nn.Sequential(
                nn.Linear(side * side, 32),
                nn.ReLU(),
                nn.Linear(32, 32),
                nn.ReLU(),
                nn.Linear(32, classes)
            )

        def forward(self, x):
            x = self.flatten(x)
            logits = self.linear_relu_stack(x)
            return logits

    return NeuralNetwork()


def quickstart(m, weights, path):
    torch, nn = m.torch, m.nn
    device = "cuda" if torch.cuda.is_available() else "cpu"
    images, labels = quickstart_data()
    training_data = m.data.TensorDataset(torch.tensor(images[:192]), torch.tensor(labels[:192]))
    test_data = m.data.TensorDataset(torch.tensor(images[192:]), torch.tensor(labels[192:]))
    batch_size = 32
    train_dataloader = m.data.DataLoader(training_data, batch_size=batch_size)
    test_dataloader = m.data.DataLoader(test_data, batch_size=batch_size)
    shapes = []
    for X, y in test_dataloader:
        shapes.append((tuple(X.shape), tuple(y.shape), str(y.dtype).split(".")[-1]))
        break

    model = load(m, quickstart_model(m), weights).to(device)
    loss_fn = nn.CrossEntropyLoss()
    optimizer = m.optim.SGD(model.parameters(), lr=1e-1)
    log = []

    def train(dataloader, model, loss_fn, optimizer):
        size = len(dataloader.dataset)
        model.train()
        for batch, (X, y) in enumerate(dataloader):
            X, y = X.to(device), y.to(device)
            pred = model(X)
            loss = loss_fn(pred, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
            if batch % 2 == 0:
                loss, current = loss.item(), (batch + 1) * len(X)
                log.append(f"loss: {loss:>7f}  [{current:>5d}/{size:>5d}]")

    def test(dataloader, model, loss_fn):
        size = len(dataloader.dataset)
        num_batches = len(dataloader)
        model.eval()
        test_loss, correct = 0, 0
        with torch.no_grad():
            for X, y in dataloader:
                X, y = X.to(device), y.to(device)
                pred = model(X)
                test_loss += loss_fn(pred, y).item()
                correct += (pred.argmax(1) == y).type(torch.float).sum().item()
        test_loss /= num_batches
        correct /= size
        log.append(f"Test Error: \n Accuracy: {(100*correct):>0.1f}%, Avg loss: {test_loss:>8f} \n")
        return correct, test_loss

    epochs = 3
    results = []
    for t in range(epochs):
        train(train_dataloader, model, loss_fn, optimizer)
        results.append(test(test_dataloader, model, loss_fn))

    torch.save(model.state_dict(), path)
    model = quickstart_model(m).to(device)
    model.load_state_dict(torch.load(path, weights_only=True))
    model.eval()
    x, y = test_data[0][0], test_data[0][1]
    with torch.no_grad():
        x = x.to(device)
        pred = model(x)
        predicted, actual = pred[0].argmax(0), y
    return {"shapes": shapes, "results": results, "log": log, "reloaded": (predicted.item(), actual.item()),
            "reloaded_accuracy": test(test_dataloader, model, loss_fn)}


def test_quickstart(tmp_path):
    weights = weights_of(quickstart_model)
    ours, theirs = run_both(quickstart, weights, tmp_path / "model.pth", compare=False)
    assert ours["shapes"] == [((32, 1, 8, 8), (32,), "int64")]
    accuracy, loss = ours["results"][-1]
    assert accuracy > 0.9 and loss < 0.65  # (0.59 from PyTorch's initial weights for seed 0, in both libraries)
    assert ours["reloaded_accuracy"] == ours["results"][-1]
    assert ours["log"][0].startswith("loss: ") and "[   32/  192]" in ours["log"][0]
    if theirs is not None:
        assert_same(ours["results"], theirs["results"], rtol=1e-4, atol=1e-5)
        assert [line[:10] for line in ours["log"]] == [line[:10] for line in theirs["log"]]


def device_selection(m):
    torch, nn = m.torch, m.nn
    device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    x = torch.ones(2, 3, device=device)
    model = nn.Linear(3, 1).to(device)
    y = model(x.to(device))
    dev = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    z = torch.zeros(2, device=dev).cpu()
    return {"device": str(device), "type": device.type, "x": str(x.device),
            "param": str(next(model.parameters()).device),
            "y": y.shape, "z": z, "cuda_count": torch.cuda.device_count() if not torch.cuda.is_available() else 0}


def test_device_selection():
    ours, _ = run_both(device_selection)
    assert ours["device"] == "cpu" and ours["param"] == "cpu"


def seeding(m):
    torch = m.torch
    torch.manual_seed(42)
    a = torch.randn(3)
    b = torch.rand(2, 2)
    torch.manual_seed(42)
    a2 = torch.randn(3)
    b2 = torch.rand(2, 2)
    g = torch.Generator().manual_seed(2147483647)
    c = torch.randn((27, 10), generator=g)
    g = torch.Generator().manual_seed(2147483647)
    c2 = torch.randn((27, 10), generator=g)
    ix = torch.randint(0, 10, (32,), generator=g)
    perm = torch.randperm(10, generator=g)
    return {"same": [bool((a == a2).all()), bool((b == b2).all()), bool((c == c2).all())],
            "ix": (ix.dtype == torch.int64, bool(((ix >= 0) & (ix < 10)).all())),
            "perm": sorted(perm.tolist()), "differs": bool((a != torch.randn(3)).any())}


def test_seeding():
    ours, _ = run_both(seeding)
    assert ours["same"] == [True, True, True] and ours["ix"] == (True, True)
    assert ours["perm"] == list(range(10)) and ours["differs"]
