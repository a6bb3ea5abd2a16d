# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031, UP032  (the programs are kept as their authors wrote them)
"""What programs print, as notebooks and teaching material show it (see tests/pytorch_programs.py): each program
returns the text it would print, run on chainrule and on PyTorch, compared character for character (PyTorch's text
in chainrule's names: ``autograd.return_types.max(`` for ``torch.return_types.max(``, a dtype bare in a tensor's
suffix, ``Size([2, 3])``, a node's repr without its address; a suffix that PyTorch's longer dtype name moved to the
next line is joined back, as tests/test_printing.py does), and checked against literal text where it runs alone.

The 60-minute blitz's LeNet and its walk of ``loss.grad_fn.next_functions``; a notebook's tour of tensors of every
dtype and rank, f-strings and format specs on 0-d tensors (``f"{loss:.4f}"``, ``"{:d}".format(n)``, ``%``),
``torch.Size``, devices, finfo, the named tuples of max / sort / topk / slogdet / eigh / ...; a session changing
``set_printoptions`` (precision, sci_mode, threshold, edgeitems, linewidth, the short and full profiles); a
mixed-precision notebook printing float16 activations with their ``grad_fn`` (MulBackward0 where it showed
ToCopyBackward0) and a look-ahead step ``w.add(v, alpha=...)``; a torchviz-style walk of a masked self-attention
graph (``1 - out``, ``masked_fill``, ``square``); ``print(model)`` of a CNN, an LSTM tagger with Embedding's
padding_idx, a Transformer classifier with ModuleDict heads and a ParameterList; ``print(optimizer)`` through a
scheduler's steps and every scheduler's ``state_dict()``; distributions' reprs.

Then the blitz's next step: ``next_functions`` of a Linear layer's AddmmBackward0 lists (bias, input, TBackward0 of
the weight), as PyTorch's."""

import math
import re

import numpy as np
import pytest

import autograd

from .pytorch_programs import OURS, pytorch


@pytest.fixture(autouse=True)
def _default_printoptions():
    """Each program starts and ends with the default print settings, in both libraries."""
    yield
    autograd.set_printoptions(profile="default")
    m = pytorch()
    if m is not None:
        m.torch.set_printoptions(profile="default")


def _ours_spelling(text):
    """PyTorch's text in chainrule's names (see the module's docstring)."""
    text = text.replace("torch.return_types.", "autograd.return_types.")
    text = re.sub(r"\[torch\.(\w+) of size", r"[autograd.\1 of size", text)  # (ParameterList's lines)
    text = re.sub(r" object at 0x[0-9a-f]+>", ">", text)  # (a node's repr: its address)
    return text.replace("torch.", "")


def _joined(text):
    """The text with a tensor's suffixes on the line of its numbers (a longer dtype name wraps them sooner)."""
    return re.sub(r",\n *(?=(?:size|dtype|grad_fn|requires_grad)=)", ", ", text)


def prints_alike(program):
    """Run ``program(m)`` (a list of printed lines or blocks) on both libraries; they must print the same text.
    Returns chainrule's text."""
    ours = program(OURS)
    m = pytorch()
    if m is not None:
        theirs = program(m)
        assert len(ours) == len(theirs)
        for i, (a, b) in enumerate(zip(ours, theirs)):
            a, b = _joined(a), _joined(_ours_spelling(b))
            assert a == b, f"line {i}:\nours:\n{a}\nPyTorch's:\n{b}"
    return ours


# ----------------------------------------------------------------------------------------------
# The 60-minute blitz: LeNet, MSELoss, and loss.grad_fn's next_functions
# ----------------------------------------------------------------------------------------------


def lenet_loss(m):
    torch, nn, F = m.torch, m.nn, m.F

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

    torch.manual_seed(0)
    net = Net()
    input = torch.tensor(np.random.default_rng(0).standard_normal((1, 1, 32, 32)).astype(np.float32))
    output = net(input)
    target = torch.tensor(np.arange(10, dtype=np.float32) / 10).view(1, -1)
    criterion = nn.MSELoss()
    loss = criterion(output, target)
    return net, loss


def blitz_graph(m):
    net, loss = lenet_loss(m)
    lines = [str(net), str(loss.grad_fn)]
    lines.append(str(loss.grad_fn.next_functions[0][0]))  # Linear
    lines.append(str([(None if f is None else f.name(), i) for f, i in loss.grad_fn.next_functions]))
    params = list(net.parameters())
    lines += [str(len(params)), str(params[0].size())]
    return lines


def test_blitz_prints_the_network_and_its_loss_node():
    text = prints_alike(blitz_graph)
    assert text[0].startswith("Net(\n  (conv1): Conv2d(1, 6, kernel_size=(5, 5), stride=(1, 1))\n")
    assert text[1:4] == ["<MseLossBackward0>", "<AddmmBackward0>", "[('AddmmBackward0', 0), (None, 0)]"]
    assert text[4:] == ["10", "Size([6, 1, 5, 5])"]


def blitz_next_step(m):
    net, loss = lenet_loss(m)
    addmm = loss.grad_fn.next_functions[0][0]
    return [str(addmm.next_functions[0][0]), str([f.name() for f, _ in addmm.next_functions])]


def test_blitz_linear_node_edges_in_pytorchs_order():
    """AddmmBackward0's edges are (bias, input, TBackward0 of the weight), as PyTorch's (AffineMap's own order,
    which the engine walks, is (input, weight, bias))."""
    text = prints_alike(blitz_next_step)
    assert text == ["<AccumulateGrad>", "['torch::autograd::AccumulateGrad', 'ReluBackward0', 'TBackward0']"]


# ----------------------------------------------------------------------------------------------
# A notebook's tour of tensors: every dtype and rank, format specs, Size, devices, named tuples
# ----------------------------------------------------------------------------------------------


def tensor_tour(m):
    torch = m.torch
    out = []
    p = out.append
    p(repr(torch.tensor(3.5)))
    p(repr(torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)))
    p(repr(torch.tensor([True, False])))
    p(repr(torch.tensor([1 + 2j, -0.5j])))
    p(repr(torch.zeros(2, 0, 3)))
    p(repr(torch.arange(6.0).reshape(2, 3).T))  # a transposed view
    p(repr(torch.tensor([1.0, 2.0]).expand(3, 2)))
    p(repr(torch.arange(10.0)[::3]))
    p(repr(torch.tensor([-0.0, 1e-8, 1.0])))
    p(repr(torch.tensor([float("nan"), float("inf"), -float("inf"), 2.5], dtype=torch.float64)))
    p(repr(torch.tensor([complex(float("nan"), 1), complex(1, float("inf")), 2 + 0j])))
    p(repr(torch.tensor(200, dtype=torch.uint8)))
    p(repr(torch.linspace(0, 1, 3000).half()))
    p(repr(torch.arange(2000, dtype=torch.float32).reshape(2, 1000) * (1 + 1j)))
    p(repr(torch.tensor([1, 2, 3]) / 2))
    p(repr(torch.tensor([True, False, True]).sum()))
    loss = torch.tensor(0.123456)
    n = torch.tensor(7)
    p(f"loss {loss:.4f} | {loss.item():.2f} | {loss} | {n} | {n:d} | {loss:>10.3e}")
    p("{:d} {:.3f} {}".format(n, loss, n))
    p("epoch %d: %.3f (%s)" % (n, loss, torch.tensor([1.0, 2.0])))
    x = torch.zeros(4, 3, 2)
    p(f"{x.shape} {x.size()} {x.shape[1:]} {x.size(1)} {x.shape.numel()} {tuple(x.shape)}")
    p(repr(torch.Size([2, 3]) + (4,)))
    p(f"{x.device} {x.device!r} {torch.device('cuda', 1)} {torch.device('cuda:0')!r}")
    p(repr(torch.finfo(torch.float32)))
    p(repr(torch.finfo(torch.float16)))
    p(repr(torch.iinfo(torch.int16)))
    a = torch.tensor([[1.0, 3.0, 2.0], [4.0, 0.5, 4.0]], requires_grad=True)
    p(repr(a.max(dim=1)))
    p(str(torch.sort(a.detach(), dim=1, descending=True)))
    p(repr(a.detach().topk(2)))
    p(repr(torch.kthvalue(a.detach(), 2, 1)))
    p(repr(torch.mode(torch.tensor([3, 1, 1, 2]))))
    p(repr(torch.median(a.detach(), 1)))
    p(repr(torch.aminmax(a.detach())))
    p(repr(torch.cummax(a.detach(), 1)))
    p(repr(torch.linalg.slogdet(torch.eye(2) * 2)))
    p(repr(torch.linalg.eigh(torch.tensor([[2.0, 0.0], [0.0, 1.0]]))))
    p(repr(torch.frexp(torch.tensor([1.0, 2.0, 5.0]))))
    p(repr(torch.linalg.inv_ex(torch.eye(2))))
    return out


def test_tensor_tour_prints_as_pytorch():
    text = prints_alike(tensor_tour)
    assert text[0] == "tensor(3.5000)" and text[4] == "tensor([], size=(2, 0, 3))"
    assert text[16:18] == ["loss 0.1235 | 0.12 | 0.12345600128173828 | 7 | 7 |  1.235e-01", "7 0.123 7"]
    assert "Size([4, 3, 2]) Size([4, 3, 2]) Size([3, 2]) 3 24 (4, 3, 2)" in text
    assert ("autograd.return_types.max(\nvalues=tensor([3., 4.], grad_fn=<MaxBackward0>),\n"
            "indices=tensor([1, 0]))") in text


# ----------------------------------------------------------------------------------------------
# A session changing the print settings
# ----------------------------------------------------------------------------------------------


def printoptions_session(m):
    torch = m.torch
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.standard_normal((3, 4)).astype(np.float32) * [[1.0], [1e-3], [1e3]])
    big = torch.arange(1500.0).reshape(30, 50)
    out = [repr(x)]
    torch.set_printoptions(precision=2)
    out.append(repr(x))
    torch.set_printoptions(sci_mode=False)  # (precision stays 2)
    out.append(repr(x))
    torch.set_printoptions(precision=6, linewidth=120)
    out.append(repr(x))
    torch.set_printoptions(threshold=10, edgeitems=2)
    out.append(repr(big))
    torch.set_printoptions(profile="short")
    out.append(repr(big))
    torch.set_printoptions(profile="full")
    out.append(f"{len(repr(big))} {'...' in repr(big)}")
    torch.set_printoptions(profile="default")
    out.append(repr(big))
    torch.set_printoptions(edgeitems=1, threshold=5)
    out.append(repr(torch.arange(24).reshape(2, 3, 4).requires_grad_(False)))
    out.append(repr(torch.ones(5, 5, requires_grad=True) * 2))
    torch.set_printoptions(profile="default")
    return out


def test_printoptions_session_prints_as_pytorch():
    text = prints_alike(printoptions_session)
    assert text[-1] == ("tensor([[2.,  ..., 2.],\n        ...,\n        [2.,  ..., 2.]], grad_fn=<MulBackward0>)")
    assert text[6].endswith(" False") and "..." in text[5] and text[1] != text[2]


# ----------------------------------------------------------------------------------------------
# A mixed-precision notebook: float16 activations and their grad_fn; a look-ahead step with alpha
# ----------------------------------------------------------------------------------------------


def half_precision_notebook(m):
    torch, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(2)
    x = torch.tensor(rng.standard_normal((2, 4)).astype(np.float16), requires_grad=True)
    scaled = x * 0.5
    out = [repr(scaled), repr(scaled / 4), repr(2.0 * x), repr((x * 0.1).sum())]
    out.append(repr(F.gelu(x)))
    out.append(repr(F.softplus(x)))
    out.append(repr(x.add(x, alpha=0.5)))
    out.append(repr(x.sub(x.detach(), alpha=2)))
    out.append(repr(x.lerp(torch.zeros_like(x), 0.3)))
    w = torch.tensor(rng.standard_normal(3).astype(np.float32), requires_grad=True)
    v = torch.tensor(rng.standard_normal(3).astype(np.float32))
    lookahead = w.add(v, alpha=0.9)  # Nesterov's look-ahead point, kept in the graph
    out.append(repr(lookahead))
    out.append(repr(w - 0.1 * v))
    out.append(repr(1 - w))
    out.append(str([f.name() if f is not None else None for f, _ in (1 - w).grad_fn.next_functions]))
    return out


def test_half_precision_notebook_prints_pytorchs_nodes():
    text = prints_alike(half_precision_notebook)
    assert _joined(text[0]).endswith("dtype=float16, grad_fn=<MulBackward0>)")
    assert text[1].endswith("grad_fn=<DivBackward0>)") and text[4].endswith("grad_fn=<GeluBackward0>)")
    assert text[6].endswith("grad_fn=<AddBackward0>)") and text[7].endswith("grad_fn=<SubBackward0>)")
    assert text[9].endswith("grad_fn=<AddBackward0>)")
    assert text[-1] == "['torch::autograd::AccumulateGrad']"


# ----------------------------------------------------------------------------------------------
# A torchviz-style walk of a masked self-attention graph
# ----------------------------------------------------------------------------------------------


def walk(root):
    """The graph under root depth first, one node a line, indented by depth, as torchviz visits it (a node seen
    before is named again, not entered)."""
    seen, lines = set(), []

    def visit(node, depth):
        if node is None:
            lines.append("  " * depth + "None")
            return
        if node in seen:
            lines.append("  " * depth + "(seen) " + node.name())
            return
        seen.add(node)
        lines.append("  " * depth + node.name())
        for child, _ in node.next_functions:
            visit(child, depth + 1)

    visit(root, 0)
    return "\n".join(lines)


def attention_graph(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((4, 8)).astype(np.float32))
    Wq, Wk, Wv = (torch.tensor(rng.standard_normal((8, 8)).astype(np.float32) * 0.3, requires_grad=True)
                  for _ in range(3))
    q, k, v = x @ Wq, x @ Wk, x @ Wv
    scores = q @ k.T / math.sqrt(8)
    mask = torch.triu(torch.ones(4, 4, dtype=torch.bool), diagonal=1)
    scores = scores.masked_fill(mask, float("-inf"))
    attn = torch.softmax(scores, dim=-1)
    out = attn @ v
    loss = (1 - out).square().mean() + 0.01 * (Wq ** 2).sum()
    return [walk(loss.grad_fn), repr(loss)]


def test_attention_graph_walks_as_pytorchs():
    text = prints_alike(attention_graph)
    assert text[0].split("\n")[:7] == ["AddBackward0", "  MeanBackward0", "    PowBackward0", "      RsubBackward1",
                                       "        MmBackward0", "          SoftmaxBackward0",
                                       "            MaskedFillBackward0"]
    assert text[0].endswith("(seen) torch::autograd::AccumulateGrad\n    None")


# ----------------------------------------------------------------------------------------------
# print(model)
# ----------------------------------------------------------------------------------------------


def model_zoo(m):
    torch, nn = m.torch, m.nn

    class ConvNet(nn.Module):
        def __init__(self, num_classes=10):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, 32, kernel_size=3, padding=1, bias=False), nn.BatchNorm2d(32, momentum=0.01),
                nn.ReLU(inplace=True), nn.MaxPool2d(2, 2),
                nn.Conv2d(32, 64, 3, stride=2, padding=1, dilation=1, groups=2, padding_mode="reflect"),
                nn.BatchNorm2d(64, affine=False, track_running_stats=False), nn.LeakyReLU(0.2, inplace=True),
                nn.Dropout2d(0.1), nn.AdaptiveAvgPool2d((1, 1)))
            self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(p=0.5, inplace=True),
                                            nn.Linear(64, num_classes))

        def forward(self, x):
            return self.classifier(self.features(x))

    class Tagger(nn.Module):
        def __init__(self, vocab=100, tags=5):
            super().__init__()
            self.embedding = nn.Embedding(vocab, 32, padding_idx=0)
            self.lstm = nn.LSTM(32, 64, num_layers=2, batch_first=True, dropout=0.2, bidirectional=True)
            self.gru = nn.GRU(128, 16, bias=False)
            self.head = nn.Linear(16, tags)

    class TinyTransformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.pos = nn.Parameter(torch.zeros(1, 16, 32))
            self.layers = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.1,
                                                                           batch_first=True, norm_first=True), 2,
                                                enable_nested_tensor=False)
            self.attn = nn.MultiheadAttention(32, 4, dropout=0.1, kdim=16, vdim=16, batch_first=True)
            self.heads = nn.ModuleDict({"cls": nn.Linear(32, 3), "reg": nn.Sequential(nn.LayerNorm(32, eps=1e-6),
                                                                                     nn.Linear(32, 1))})
            self.scales = nn.ParameterList([nn.Parameter(torch.ones(4)), nn.Parameter(torch.zeros(2, 2))])
            self.blocks = nn.ModuleList([nn.Sequential(nn.Linear(32, 32), nn.GELU(approximate="tanh"))
                                         for _ in range(3)])

    torch.manual_seed(0)
    return [str(ConvNet()), repr(Tagger()), str(TinyTransformer())]


def test_print_model_as_pytorch():
    text = prints_alike(model_zoo)
    assert "(0): Embedding" not in text[1] and "(embedding): Embedding(100, 32, padding_idx=0)" in text[1]
    assert "(1): BatchNorm2d(32, eps=1e-05, momentum=0.01, affine=True, bias=True, track_running_stats=True)" in text[0]
    assert "(0-2): 3 x Sequential(" in text[2]


# ----------------------------------------------------------------------------------------------
# print(optimizer) and schedulers' state
# ----------------------------------------------------------------------------------------------


def optimizer_and_schedulers(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = optim.SGD([{"params": model[0].parameters()},
                           {"params": model[2].parameters(), "lr": 0.01, "weight_decay": 0}],
                          lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    out = [str(optimizer)]
    x, y = torch.ones(3, 4), torch.zeros(3, 1)
    for epoch in range(3):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        out.append(f"epoch {epoch}: lr {scheduler.get_last_lr()} loss {loss.item():.4f}")
    out += [str(optimizer), str(scheduler.state_dict())]
    adam = optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1, amsgrad=True)
    out.append(repr(adam))
    plateau = optim.lr_scheduler.ReduceLROnPlateau(adam, patience=0)
    for metric in (1.0, 2.0, 3.0):
        plateau.step(metric)
    out.append(str(plateau.state_dict()))
    cyclic = optim.lr_scheduler.CyclicLR(optimizer, base_lr=0.01, max_lr=0.1, step_size_up=2)
    cyclic.step()
    out.append(str(cyclic.state_dict()))
    onecycle = optim.lr_scheduler.OneCycleLR(adam, max_lr=0.01, total_steps=10)
    out.append(str(list(onecycle.state_dict())))
    return out


def test_optimizer_and_schedulers_print_as_pytorch():
    text = prints_alike(optimizer_and_schedulers)
    assert text[0].startswith("SGD (\nParameter Group 0\n    dampening: 0\n    differentiable: False\n")
    assert list(eval(text[-3].replace("inf", "float('inf')")))[:2] == ["factor", "default_min_lr"]
    assert list(eval(text[-2]))[-1] == "_scale_fn_custom"


# ----------------------------------------------------------------------------------------------
# Distributions
# ----------------------------------------------------------------------------------------------


def distributions_repr(m):
    torch = m.torch
    D = torch.distributions
    return [repr(D.Normal(torch.tensor(0.0), torch.tensor(1.0))), repr(D.Normal(0.0, 2.5)),
            repr(D.Normal(torch.zeros(3), torch.ones(3))), repr(D.Normal(torch.zeros(2, 30), torch.ones(2, 30))),
            repr(D.Bernoulli(probs=torch.tensor([0.3, 0.7]))), repr(D.Bernoulli(logits=torch.tensor(0.3))),
            repr(D.Categorical(logits=torch.zeros(4, 3))),
            repr(D.MultivariateNormal(torch.zeros(2), covariance_matrix=torch.eye(2))),
            repr(D.MultivariateNormal(torch.zeros(2), scale_tril=torch.eye(2))),
            repr(D.Independent(D.Normal(torch.zeros(3), torch.ones(3)), 1)), repr(D.Uniform(0.0, 2.0)),
            repr(D.Gamma(2.0, 3.0)), repr(D.Dirichlet(torch.ones(3))), repr(D.LogNormal(0.0, 1.0)),
            repr(D.Poisson(torch.tensor([2.0]))), repr(D.Binomial(10, torch.tensor([0.5]))),
            repr(D.Laplace(0.0, 1.0)), repr(D.Exponential(torch.tensor([1.0]))),
            repr(D.TransformedDistribution(D.Normal(0.0, 1.0), [D.transforms.ExpTransform()])),
            repr(D.transforms.AffineTransform(0.0, 2.0)), repr(D.Normal.arg_constraints),
            repr(D.Normal(torch.zeros(2, requires_grad=True) * 1, torch.ones(2)).loc)]


def test_distributions_print_as_pytorch():
    text = prints_alike(distributions_repr)
    assert text[:4] == ["Normal(loc: 0.0, scale: 1.0)", "Normal(loc: 0.0, scale: 2.5)",
                        "Normal(loc: Size([3]), scale: Size([3]))", "Normal(loc: Size([2, 30]), scale: Size([2, 30]))"]


def test_scheduler_state_dicts_list_keys_in_pytorchs_order():
    """ReduceLROnPlateau's and CyclicLR's state_dict keys, in PyTorch's order (print(scheduler.state_dict()) gave
    another text)."""
    import nn
    import optim

    sgd = optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
    assert list(optim.lr_scheduler.ReduceLROnPlateau(sgd).state_dict())[:3] == ["factor", "default_min_lr", "min_lrs"]
    cyclic = optim.lr_scheduler.CyclicLR(sgd, base_lr=0.01, max_lr=0.1)
    keys = list(cyclic.state_dict())
    assert keys[-1] == "_scale_fn_custom" and keys[:2] == ["max_lrs", "total_size"]


# ----------------------------------------------------------------------------------------------
# A learnt temperature, printed as the training log prints it
# ----------------------------------------------------------------------------------------------


def temperature_log(m):
    torch, nn = m.torch, m.nn

    class Calibrated(nn.Module):
        def __init__(self):
            super().__init__()
            self.temperature = nn.Parameter(torch.tensor(1.5))
            self.bias = nn.Parameter(torch.zeros(1))

        def forward(self, logits):
            return logits / self.temperature + self.bias

    model = Calibrated()
    logits = torch.tensor([[2.0, 0.5], [0.1, 1.0]])
    loss = nn.functional.cross_entropy(model(logits), torch.tensor([0, 1]))
    out = [f"temperature: {model.temperature}", "T={}".format(model.temperature), "T=%s" % model.temperature,
           f"T={model.temperature.item():.3f} loss={loss:.4f}", "%.2f" % model.temperature.detach(),
           f"bias: {model.bias}"]
    try:
        out.append(f"{model.temperature:.2f}")
    except TypeError as error:  # PyTorch formats only a plain 0-d Tensor as its number
        out.append(f"TypeError: {error}")
    return out


def test_learnt_temperature_prints_as_a_parameter():
    text = prints_alike(temperature_log)
    assert text[0] == "temperature: Parameter containing:\ntensor(1.5000, requires_grad=True)"
    assert text[3:5] == ["T=1.500 loss=0.3754", "1.50"]
    assert text[-1] == "TypeError: unsupported format string passed to Parameter.__format__"


def subclass_and_meta_format(m):
    torch = m.torch

    class Scaled(torch.Tensor):
        pass

    t = torch.tensor(0.5).as_subclass(Scaled)
    out = [f"{t}", f"{torch.empty((), device='meta')}"]
    try:
        out.append(f"{t:.2f}")
    except TypeError as error:
        out.append(f"TypeError: {error}")
    return out


def test_a_0d_subclass_and_a_meta_tensor_format_as_their_text():
    """Only a plain 0-d Tensor off the meta device formats as its number: a subclass prints its repr,
    Scaled(0.5000), and refuses a spec; a meta tensor prints tensor(..., device='meta', size=())."""
    text = prints_alike(subclass_and_meta_format)
    assert text == ["Scaled(0.5000)", "tensor(..., device='meta', size=())",
                    "TypeError: unsupported format string passed to Scaled.__format__"]
