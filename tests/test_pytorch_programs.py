# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports.

Each program below is written as a PyTorch user writes it (PyTorch's beginner tutorials, the
"learning PyTorch with examples" series, the quickstart, Karpathy's micrograd / makemore /
nanoGPT lectures, d2l) as a function of the modules it imports: ``torch`` (``autograd``),
``nn``, ``F`` (``nn.functional``), ``optim`` and ``data`` (``autograd.utils.data``). Each test
runs the program on chainrule and asserts its result; where PyTorch is installed the very same
function is run on PyTorch too, and where the program is deterministic (weights passed in as
arrays, no random draws) the two runs must give the same numbers.
"""

import math
import random
from types import SimpleNamespace

import numpy as np
import pytest

import autograd
import autograd.utils.data
import nn
import nn.functional
import optim

OURS = SimpleNamespace(torch=autograd, nn=nn, F=nn.functional, optim=optim, data=autograd.utils.data)


def pytorch():
    """The same modules from PyTorch, or None where it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    import torch.utils.data

    torch.set_num_threads(1)  # tiny programs: threads only contend on a shared machine
    return SimpleNamespace(torch=torch, nn=torch.nn, F=torch.nn.functional, optim=torch.optim,
                           data=torch.utils.data)


def plain(value):
    """A program's result as NumPy / Python values (tensors of either library become arrays)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if hasattr(value, "detach") and hasattr(value, "numpy"):
        return value.detach().numpy().copy()
    return value


def assert_same(ours, theirs, rtol, atol, where="result"):
    if isinstance(ours, dict):
        assert set(ours) == set(theirs), where
        for k in ours:
            assert_same(ours[k], theirs[k], rtol, atol, f"{where}[{k!r}]")
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, rtol, atol, f"{where}[{i}]")
    elif isinstance(ours, (str, bool, type(None))):
        assert ours == theirs, f"{where}: {ours!r} != {theirs!r}"
    else:
        a, b = np.asarray(ours), np.asarray(theirs)
        assert a.shape == b.shape, f"{where}: shapes {a.shape} != {b.shape}"
        np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=where)


def run_both(program, *args, compare=True, rtol=1e-5, atol=1e-6, **kwargs):
    """Run ``program(modules, *args, **kwargs)`` on chainrule and (where installed) PyTorch; where
    ``compare`` the two results must agree. Returns chainrule's result, and PyTorch's (or None)."""
    ours = plain(program(OURS, *args, **kwargs))
    theirs = None
    torch_modules = pytorch()
    if torch_modules is not None:
        theirs = plain(program(torch_modules, *args, **kwargs))
        if compare:
            assert_same(ours, theirs, rtol, atol)
    return ours, theirs


def weights_of(make_model, seed=0):
    """Freshly initialised weights of a model (chainrule's, seeded), as arrays to load into either library."""
    autograd.manual_seed(seed)
    return {k: v.numpy().copy() for k, v in make_model(OURS).state_dict().items()}


def load(m, model, weights):
    model.load_state_dict({k: m.torch.tensor(v) for k, v in weights.items()})
    return model


NEEDS_OPS = "needs {} (branch ops)"


def needs(*ops):
    return pytest.mark.xfail(reason=NEEDS_OPS.format(", ".join(ops)), strict=False)


# ----------------------------------------------------------------------------------------------
# Tensors tutorial (pytorch.org/tutorials/beginner/basics/tensorqs_tutorial)
# ----------------------------------------------------------------------------------------------

def tensors_tutorial(m):
    torch = m.torch
    out = {}
    data = [[1, 2], [3, 4]]
    x_data = torch.tensor(data)
    np_array = np.array(data)
    x_np = torch.from_numpy(np_array)
    x_ones = torch.ones_like(x_data)
    x_rand = torch.rand_like(x_data, dtype=torch.float)
    out["x_data"], out["x_np"], out["x_ones"] = x_data, x_np, x_ones
    out["x_rand"] = (tuple(x_rand.shape), str(x_rand.dtype).split(".")[-1], bool((x_rand < 1).all()))

    shape = (2, 3,)
    rand_tensor = torch.rand(shape)
    ones_tensor = torch.ones(shape)
    zeros_tensor = torch.zeros(shape)
    out["factories"] = [tuple(rand_tensor.shape), ones_tensor, zeros_tensor]

    tensor = torch.rand(3, 4)
    out["attributes"] = (tuple(tensor.shape), str(tensor.dtype).split(".")[-1], str(tensor.device))

    tensor = torch.ones(4, 4)
    out["first_row"] = tensor[0]
    out["first_column"] = tensor[:, 0]
    out["last_column"] = tensor[..., -1]
    tensor[:, 1] = 0
    out["tensor"] = tensor.clone()

    t1 = torch.cat([tensor, tensor, tensor], dim=1)
    out["cat"] = t1

    y1 = tensor @ tensor.T
    y2 = tensor.matmul(tensor.T)
    z1 = tensor * tensor
    z2 = tensor.mul(tensor)
    out["arithmetic"] = [y1, y2, z1, z2]

    agg = tensor.sum()
    agg_item = agg.item()
    out["agg"] = (agg_item, type(agg_item).__name__)

    tensor.add_(5)
    out["in_place"] = tensor

    t = torch.ones(5)
    n = t.numpy()
    t.add_(1)
    out["bridge_t_to_n"] = n.copy()
    n = np.ones(5)
    t = torch.from_numpy(n)
    np.add(n, 1, out=n)
    out["bridge_n_to_t"] = t
    return out


def tensors_tutorial_out(m):
    """The tutorial's out= spellings of matrix and elementwise products."""
    torch = m.torch
    tensor = torch.ones(4, 4)
    tensor[:, 1] = 0
    y1 = tensor @ tensor.T
    y3 = torch.rand_like(y1)
    torch.matmul(tensor, tensor.T, out=y3)
    z3 = torch.rand_like(tensor)
    torch.mul(tensor, tensor, out=z3)
    return [y1, y3, tensor * tensor, z3]


def test_tensors_tutorial_out():
    ours, _ = run_both(tensors_tutorial_out)
    np.testing.assert_array_equal(ours[0], ours[1])
    np.testing.assert_array_equal(ours[2], ours[3])


def test_tensors_tutorial():
    ours, _ = run_both(tensors_tutorial)
    assert ours["agg"] == (12.0, "float")
    assert ours["attributes"] == ((3, 4), "float32", "cpu")
    np.testing.assert_array_equal(ours["in_place"][:, 1], 5)
    np.testing.assert_array_equal(ours["bridge_t_to_n"], 2)
    np.testing.assert_array_equal(ours["bridge_n_to_t"], 2)


def tensor_ops_tour(m):
    """torch.arange/linspace/where/stack/cat, indexing and in-place writes as code uses them."""
    torch = m.torch
    out = {}
    x = torch.arange(12).reshape(3, 4)
    out["arange"] = x
    out["arange_float"] = torch.arange(0, 1, 0.25)
    out["linspace"] = torch.linspace(-1, 1, steps=5)
    out["where"] = torch.where(x > 5, x, torch.zeros_like(x))
    out["where_scalar"] = torch.where(x >= 4, 1.0, -1.0)
    out["stack0"] = torch.stack([x, x * 2])
    out["stack1"] = torch.stack((x[0], x[1]), dim=1)
    out["cat"] = torch.cat((x, x), 0)
    out["bool_index"] = x[x > 6]
    out["fancy"] = x[[0, 2], [1, 3]]
    out["range_index"] = x[range(3), [0, 1, 2]]
    out["step_slice"] = x[:, ::2]
    out["none_index"] = x[None, :, 1].shape
    y = torch.zeros(3, 4)
    y[1] = torch.ones(4)
    y[:, -1] += 2
    y[y == 0] = -1
    out["setitem"] = y
    out["argmax"] = (x.float().softmax(dim=1).argmax(dim=1), x.argmax().item())
    out["max"] = x.max(dim=0).values
    vals, idx = torch.max(x, 1)
    out["max_tuple"] = (vals, idx)
    out["reductions"] = [x.sum(dim=1), x.float().mean(0), x.float().std(), x.float().var(1, keepdim=True)]
    out["view"] = x.view(4, 3)[-1]
    out["permute"] = x.unsqueeze(0).permute(2, 0, 1).shape
    out["type"] = (x.float().dtype == torch.float32, x.long().dtype == torch.int64,
                   x.to(torch.float64).dtype == torch.float64)
    out["clamp"] = x.clamp(min=2, max=9)
    out["numel"] = (x.numel(), x.dim(), x.size(), x.size(1))
    out["tolist"] = x.tolist()
    out["item_int"] = type(x[0, 0].item()).__name__
    return out


def test_tensor_ops_tour():
    ours, _ = run_both(tensor_ops_tour)
    np.testing.assert_array_equal(ours["where"], np.where(np.arange(12).reshape(3, 4) > 5,
                                                          np.arange(12).reshape(3, 4), 0))
    assert ours["item_int"] == "int"
    assert ours["numel"][0] == 12


def allclose_and_friends(m):
    torch = m.torch
    a = torch.linspace(0, 1, 5)
    b = a + 1e-9
    return {"allclose": torch.allclose(a, b), "not_close": torch.allclose(a, a + 1),
            "equal": torch.equal(a, a.clone()), "isclose": torch.isclose(a, b).all().item()}


def test_allclose_and_friends():
    ours, _ = run_both(allclose_and_friends)
    assert ours == {"allclose": True, "not_close": False, "equal": True, "isclose": True}


# ----------------------------------------------------------------------------------------------
# Autograd tutorial (autogradqs_tutorial and the older blitz autograd_tutorial)
# ----------------------------------------------------------------------------------------------

def autograd_tutorial(m, w_init, b_init):
    torch, F = m.torch, m.F
    out = {}
    x = torch.ones(5)  # input tensor
    y = torch.zeros(3)  # expected output
    w = torch.tensor(w_init, requires_grad=True)
    b = torch.tensor(b_init, requires_grad=True)
    z = torch.matmul(x, w) + b
    loss = F.binary_cross_entropy_with_logits(z, y)
    out["has_grad_fn"] = (z.grad_fn is not None, loss.grad_fn is not None)
    loss.backward()
    out["w.grad"], out["b.grad"] = w.grad, b.grad

    z = torch.matmul(x, w) + b
    out["requires_grad"] = [z.requires_grad]
    with torch.no_grad():
        z = torch.matmul(x, w) + b
    out["requires_grad"].append(z.requires_grad)
    z = torch.matmul(x, w) + b
    z_det = z.detach()
    out["requires_grad"].append(z_det.requires_grad)

    inp = torch.eye(4, 5, requires_grad=True)
    out_ = (inp + 1).pow(2).t()
    out_.backward(torch.ones_like(out_), retain_graph=True)
    out["first"] = inp.grad.clone()
    out_.backward(torch.ones_like(out_), retain_graph=True)
    out["second"] = inp.grad.clone()
    inp.grad.zero_()
    out_.backward(torch.ones_like(out_), retain_graph=True)
    out["after_zero"] = inp.grad.clone()
    return out


def test_autograd_tutorial():
    rng = np.random.default_rng(0)
    w, b = rng.standard_normal((5, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    ours, _ = run_both(autograd_tutorial, w, b)
    assert ours["requires_grad"] == [True, False, False]
    np.testing.assert_allclose(ours["second"], 2 * ours["first"])
    np.testing.assert_allclose(ours["after_zero"], ours["first"])
    np.testing.assert_allclose(ours["first"], 2 * (np.eye(4, 5) + 1))


def autograd_blitz(m, x_init):
    """The 60-minute blitz: y = x * 2 doubled until its norm passes 1000, then y.backward(v)."""
    torch = m.torch
    x = torch.tensor(x_init, requires_grad=True)
    y = x * 2
    while y.data.norm() < 1000:
        y = y * 2
    v = torch.tensor([0.1, 1.0, 0.0001], dtype=torch.float)
    y.backward(v)
    with torch.no_grad():
        print((x ** 2).requires_grad)
    return {"y": y, "x.grad": x.grad, "requires_grad": (x ** 2).requires_grad}


def test_autograd_blitz_vector_jacobian_product():
    ours, _ = run_both(autograd_blitz, np.array([0.3, -0.5, 0.8], dtype=np.float32))
    scale = ours["y"][0] / np.float32(0.3)
    np.testing.assert_allclose(ours["x.grad"], scale * np.array([0.1, 1.0, 0.0001]), rtol=1e-6)


def jacobian_vector_product(m):
    """Q = 3a^3 - b^2;  Q.backward(gradient=external_grad) gives dQ/da = 9a^2, dQ/db = -2b."""
    torch = m.torch
    a = torch.tensor([2., 3.], requires_grad=True)
    b = torch.tensor([6., 4.], requires_grad=True)
    Q = 3 * a ** 3 - b ** 2
    external_grad = torch.tensor([1., 1.])
    Q.backward(gradient=external_grad)
    return {"a": a.grad, "b": b.grad, "check": (9 * a ** 2 == a.grad).tolist() + (-2 * b == b.grad).tolist()}


def test_jacobian_vector_product():
    ours, _ = run_both(jacobian_vector_product)
    np.testing.assert_array_equal(ours["a"], [36.0, 81.0])
    np.testing.assert_array_equal(ours["b"], [-12.0, -8.0])
    assert ours["check"] == [True] * 4


def frozen_parameters(m, weights):
    """Fine-tuning: freeze every parameter, replace the head; only the head gets gradients."""
    torch, nn, optim = m.torch, m.nn, m.optim
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    load(m, model, weights)
    for param in model.parameters():
        param.requires_grad = False
    model[2] = nn.Linear(8, 2)
    optimizer = optim.SGD(model[2].parameters(), lr=1e-2, momentum=0.9)
    loss = model(torch.ones(2, 4)).sum()
    loss.backward()
    optimizer.step()
    return {"frozen": [p.grad is None for p in model[0].parameters()],
            "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "head_grad": model[2].weight.grad}


def test_frozen_parameters():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 8), m.nn.ReLU(), m.nn.Linear(8, 3)))
    ours, _ = run_both(frozen_parameters, weights)
    assert ours["frozen"] == [True, True]
    assert ours["trainable"] == 8 * 2 + 2


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


def quickstart_data(n=256, side=8, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    prototypes = rng.standard_normal((classes, side, side)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    images = prototypes[labels] + 0.5 * rng.standard_normal((n, side, side)).astype(np.float32)
    return images[:, None], labels


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
    assert accuracy > 0.9 and loss < 0.5
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


# ----------------------------------------------------------------------------------------------
# micrograd: the README's comparisons with PyTorch, and a training loop with p.data updates
# ----------------------------------------------------------------------------------------------

def micrograd_sanity(m):
    torch = m.torch
    x = torch.Tensor([-4.0]).double()
    x.requires_grad = True
    z = 2 * x + 2 + x
    q = z.relu() + z * x
    h = (z * z).relu()
    y = h + q + q * x
    y.backward()
    xpt, ypt = x, y
    return ypt.data.item(), xpt.grad.item()


def micrograd_more_ops(m):
    torch = m.torch
    a = torch.Tensor([-4.0]).double()
    b = torch.Tensor([2.0]).double()
    a.requires_grad = True
    b.requires_grad = True
    c = a + b
    d = a * b + b**3
    c = c + c + 1
    c = c + 1 + c + (-a)
    d = d + d * 2 + (b + a).relu()
    d = d + 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g = g + 10.0 / f
    g.backward()
    return g.data.item(), a.grad.item(), b.grad.item()


def test_micrograd_readme():
    ours, _ = run_both(micrograd_sanity, rtol=0, atol=0)
    assert ours == (-20.0, 46.0)
    ours, _ = run_both(micrograd_more_ops, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours, (24.70408163265306, 138.83381924198252, 645.5772594752186), rtol=1e-12)


def micrograd_training(m, weights):
    """The micrograd demo's loop on the two-moons-like data, written in PyTorch: max-margin loss + L2."""
    torch, nn = m.torch, m.nn
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 2)).astype(np.float32)
    y = np.where(X[:, 0] + 0.5 * X[:, 1] ** 2 > 0.3, 1.0, -1.0).astype(np.float32)
    model = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    load(m, model, weights)
    Xb, yb = torch.tensor(X), torch.tensor(y)
    history = []
    for k in range(100):
        scores = model(Xb).squeeze(1)
        losses = (1 + -yb * scores).relu()
        data_loss = losses.mean()
        alpha = 1e-4
        reg_loss = alpha * sum((p * p).sum() for p in model.parameters())
        total_loss = data_loss + reg_loss
        accuracy = ((yb > 0) == (scores > 0)).float().mean()
        model.zero_grad()
        total_loss.backward()
        learning_rate = 1.0 - 0.9 * k / 100
        for p in model.parameters():
            if k % 2:
                p.data -= learning_rate * 0.1 * p.grad
            else:
                p.data += -learning_rate * 0.1 * p.grad
        history.append((total_loss.item(), accuracy.item()))
    return history


def test_micrograd_training():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(2, 16), m.nn.ReLU(), m.nn.Linear(16, 16),
                                                   m.nn.ReLU(), m.nn.Linear(16, 1)))
    ours, _ = run_both(micrograd_training, weights, rtol=1e-3, atol=1e-4)
    assert ours[-1][0] < ours[0][0] / 2 and ours[-1][1] > 0.85


# ----------------------------------------------------------------------------------------------
# makemore: bigram counts, the neural bigram, the MLP, batch normalisation by hand
# ----------------------------------------------------------------------------------------------

WORDS = ["emma", "olivia", "ava", "isabella", "sophia", "charlotte", "mia", "amelia", "harper", "evelyn",
         "abigail", "emily", "elizabeth", "mila", "ella", "avery", "sofia", "camila", "aria", "scarlett",
         "victoria", "madison", "luna", "grace", "chloe", "penelope", "layla", "riley", "zoey", "nora",
         "lily", "eleanor", "hannah", "lillian", "addison", "aubrey", "ellie", "stella", "natalie", "zoe",
         "leah", "hazel", "violet", "aurora", "savannah", "audrey", "brooklyn", "bella", "claire", "skylar",
         "jade", "quinn", "willow", "ximena"]


def makemore_bigram_counts(m, words):
    torch = m.torch
    N = torch.zeros((27, 27), dtype=torch.int32)
    chars = sorted(list(set(''.join(words))))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi['.'] = 0
    itos = {i: s for s, i in stoi.items()}
    for w in words:
        chs = ['.'] + list(w) + ['.']
        for ch1, ch2 in zip(chs, chs[1:]):
            ix1 = stoi[ch1]
            ix2 = stoi[ch2]
            N[ix1, ix2] += 1
    p = N[0].float()
    p = p / p.sum()
    g = torch.Generator().manual_seed(2147483647)
    first = torch.multinomial(p, num_samples=1, replacement=True, generator=g).item()
    P = (N + 1).float()
    P /= P.sum(1, keepdim=True)
    names = []
    for i in range(5):
        out = []
        ix = 0
        while True:
            p = P[ix]
            ix = torch.multinomial(p, num_samples=1, replacement=True, generator=g).item()
            out.append(itos[ix])
            if ix == 0:
                break
        names.append(''.join(out))
    log_likelihood = 0.0
    n = 0
    for w in words:
        chs = ['.'] + list(w) + ['.']
        for ch1, ch2 in zip(chs, chs[1:]):
            ix1 = stoi[ch1]
            ix2 = stoi[ch2]
            prob = P[ix1, ix2]
            logprob = torch.log(prob)
            log_likelihood += logprob
            n += 1
    nll = -log_likelihood
    return {"N": N, "N.dtype": str(N.dtype).split(".")[-1], "row_sums": P.sum(1), "nll": nll / n,
            "first": itos[first] in stoi, "names": all(name.endswith(".") for name in names), "n": n}


def test_makemore_bigram_counts():
    ours, _ = run_both(makemore_bigram_counts, WORDS)
    assert ours["N.dtype"] == "int32" and ours["N"].sum() == ours["n"]
    np.testing.assert_allclose(ours["row_sums"], 1, rtol=1e-6)
    assert 2.0 < ours["nll"] < 3.0 and ours["first"] and ours["names"]


def makemore_neural_bigram(m, words, W_init):
    torch, F = m.torch, m.F
    chars = sorted(list(set(''.join(words))))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi['.'] = 0
    xs, ys = [], []
    for w in words:
        chs = ['.'] + list(w) + ['.']
        for ch1, ch2 in zip(chs, chs[1:]):
            xs.append(stoi[ch1])
            ys.append(stoi[ch2])
    xs = torch.tensor(xs)
    ys = torch.tensor(ys)
    num = xs.nelement()
    W = torch.tensor(W_init, requires_grad=True)
    losses = []
    for k in range(40):
        xenc = F.one_hot(xs, num_classes=27).float()
        logits = xenc @ W
        counts = logits.exp()
        probs = counts / counts.sum(1, keepdims=True)
        loss = -probs[torch.arange(num), ys].log().mean() + 0.01 * (W**2).mean()
        losses.append(loss.item())
        W.grad = None
        loss.backward()
        W.data += -50 * W.grad
    g = torch.Generator().manual_seed(2147483647)
    ix = 0
    out = []
    for _ in range(30):
        xenc = F.one_hot(torch.tensor([ix]), num_classes=27).float()
        logits = xenc @ W
        counts = logits.exp()
        p = counts / counts.sum(1, keepdims=True)
        ix = torch.multinomial(p, num_samples=1, replacement=True, generator=g).item()
        out.append(ix)
        if ix == 0:
            break
    return {"losses": losses, "sampled": all(0 <= i < 27 for i in out)}


def test_makemore_neural_bigram():
    W = np.random.default_rng(2147483647).standard_normal((27, 27)).astype(np.float32)
    ours, _ = run_both(makemore_neural_bigram, WORDS, W, rtol=1e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0] - 0.5 and ours["sampled"]


def build_dataset(m, words, block_size=3):
    torch = m.torch
    chars = sorted(list(set(''.join(words))))
    stoi = {s: i + 1 for i, s in enumerate(chars)}
    stoi['.'] = 0
    X, Y = [], []
    for w in words:
        context = [0] * block_size
        for ch in w + '.':
            ix = stoi[ch]
            X.append(context)
            Y.append(ix)
            context = context[1:] + [ix]
    X = torch.tensor(X)
    Y = torch.tensor(Y)
    return X, Y


def makemore_mlp(m, words):
    torch, F = m.torch, m.F
    random.seed(42)
    words = list(words)
    random.shuffle(words)
    n1 = int(0.8 * len(words))
    Xtr, Ytr = build_dataset(m, words[:n1])
    Xdev, Ydev = build_dataset(m, words[n1:])
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((27, 10), generator=g)
    W1 = torch.randn((30, 200), generator=g)
    b1 = torch.randn(200, generator=g)
    W2 = torch.randn((200, 27), generator=g)
    b2 = torch.randn(27, generator=g)
    parameters = [C, W1, b1, W2, b2]
    count = sum(p.nelement() for p in parameters)
    for p in parameters:
        p.requires_grad = True
    lri, lossi, stepi = [], [], []
    for i in range(300):
        ix = torch.randint(0, Xtr.shape[0], (32,))
        emb = C[Xtr[ix]]  # (32, 3, 10)
        h = torch.tanh(emb.view(-1, 30) @ W1 + b1)  # (32, 200)
        logits = h @ W2 + b2  # (32, 27)
        loss = F.cross_entropy(logits, Ytr[ix])
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < 200 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
        stepi.append(i)
        lossi.append(loss.log10().item())
    emb = C[Xtr]
    h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
    logits = h @ W2 + b2
    train_loss = F.cross_entropy(logits, Ytr)
    emb = C[Xdev]
    h = torch.tanh(emb.view(-1, 30) @ W1 + b1)
    dev_loss = F.cross_entropy(h @ W2 + b2, Ydev)
    return {"count": count, "train": train_loss.item(), "dev": dev_loss.item(), "lossi": lossi}


def test_makemore_mlp():
    ours, theirs = run_both(makemore_mlp, WORDS, compare=False)
    assert ours["count"] == 27 * 10 + 30 * 200 + 200 + 200 * 27 + 27
    assert ours["train"] < 2.6 and np.mean(ours["lossi"][-20:]) < np.mean(ours["lossi"][:20])


def makemore_batchnorm(m, words):
    """makemore part 3: Kaiming-scaled init, batch normalisation by hand, running statistics."""
    torch, F = m.torch, m.F
    Xtr, Ytr = build_dataset(m, words)
    n_embd, n_hidden, block_size, vocab_size = 10, 64, 3, 27
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((vocab_size, n_embd), generator=g)
    W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (5/3)/((n_embd * block_size)**0.5)
    W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.01
    b2 = torch.randn(vocab_size, generator=g) * 0
    bngain = torch.ones((1, n_hidden))
    bnbias = torch.zeros((1, n_hidden))
    bnmean_running = torch.zeros((1, n_hidden))
    bnstd_running = torch.ones((1, n_hidden))
    parameters = [C, W1, W2, b2, bngain, bnbias]
    for p in parameters:
        p.requires_grad = True
    lossi = []
    for i in range(200):
        ix = torch.randint(0, Xtr.shape[0], (32,), generator=g)
        Xb, Yb = Xtr[ix], Ytr[ix]
        emb = C[Xb]
        embcat = emb.view(emb.shape[0], -1)
        hpreact = embcat @ W1
        bnmeani = hpreact.mean(0, keepdim=True)
        bnstdi = hpreact.std(0, keepdim=True)
        hpreact = bngain * (hpreact - bnmeani) / bnstdi + bnbias
        with torch.no_grad():
            bnmean_running = 0.999 * bnmean_running + 0.001 * bnmeani
            bnstd_running = 0.999 * bnstd_running + 0.001 * bnstdi
        h = torch.tanh(hpreact)
        logits = h @ W2 + b2
        loss = F.cross_entropy(logits, Yb)
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < 150 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
        lossi.append(loss.item())

    @torch.no_grad()
    def split_loss():
        emb = C[Xtr]
        embcat = emb.view(emb.shape[0], -1)
        hpreact = embcat @ W1
        hpreact = bngain * (hpreact - bnmean_running) / bnstd_running + bnbias
        h = torch.tanh(hpreact)
        logits = h @ W2 + b2
        return F.cross_entropy(logits, Ytr)

    loss = split_loss()
    with torch.no_grad():
        emb = C[Xtr]
        embcat = emb.view(emb.shape[0], -1)
        hpreact = embcat @ W1
        bnmean = hpreact.mean(0, keepdim=True)
        bnstd = hpreact.std(0, keepdim=True)
    return {"loss": loss.item(), "requires_grad": loss.requires_grad, "lossi": lossi,
            "running_mean_moved": (bnmean_running - bnmean).abs().mean().item() < bnmean.abs().mean().item(),
            "bnstd_positive": bool((bnstd > 0).all())}


def test_makemore_batchnorm():
    ours, _ = run_both(makemore_batchnorm, WORDS, compare=False)
    assert ours["requires_grad"] is False and ours["bnstd_positive"]
    assert np.mean(ours["lossi"][-20:]) < np.mean(ours["lossi"][:20]) - 0.5


def makemore_layers(m, words):
    """makemore part 3, 'PyTorch-ified': hand-written Linear / BatchNorm1d / Tanh layer classes."""
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(2147483647)

    class Linear:
        def __init__(self, fan_in, fan_out, bias=True):
            self.weight = torch.randn((fan_in, fan_out), generator=g) / fan_in**0.5
            self.bias = torch.zeros(fan_out) if bias else None

        def __call__(self, x):
            self.out = x @ self.weight
            if self.bias is not None:
                self.out += self.bias
            return self.out

        def parameters(self):
            return [self.weight] + ([] if self.bias is None else [self.bias])

    class BatchNorm1d:
        def __init__(self, dim, eps=1e-5, momentum=0.1):
            self.eps = eps
            self.momentum = momentum
            self.training = True
            self.gamma = torch.ones(dim)
            self.beta = torch.zeros(dim)
            self.running_mean = torch.zeros(dim)
            self.running_var = torch.ones(dim)

        def __call__(self, x):
            if self.training:
                xmean = x.mean(0, keepdim=True)
                xvar = x.var(0, keepdim=True)
            else:
                xmean = self.running_mean
                xvar = self.running_var
            xhat = (x - xmean) / torch.sqrt(xvar + self.eps)
            self.out = self.gamma * xhat + self.beta
            if self.training:
                with torch.no_grad():
                    self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean
                    self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar
            return self.out

        def parameters(self):
            return [self.gamma, self.beta]

    class Tanh:
        def __call__(self, x):
            self.out = torch.tanh(x)
            return self.out

        def parameters(self):
            return []

    n_embd, n_hidden, vocab_size, block_size = 10, 32, 27, 3
    C = torch.randn((vocab_size, n_embd), generator=g)
    layers = [
        Linear(n_embd * block_size, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
        Linear(n_hidden, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
        Linear(n_hidden, vocab_size, bias=False), BatchNorm1d(vocab_size),
    ]
    with torch.no_grad():
        layers[-1].gamma *= 0.1
        for layer in layers[:-1]:
            if isinstance(layer, Linear):
                layer.weight *= 5/3
    parameters = [C] + [p for layer in layers for p in layer.parameters()]
    for p in parameters:
        p.requires_grad = True
    Xtr, Ytr = build_dataset(m, words)
    lossi, ud = [], []
    for i in range(100):
        ix = torch.randint(0, Xtr.shape[0], (32,), generator=g)
        Xb, Yb = Xtr[ix], Ytr[ix]
        emb = C[Xb]
        x = emb.view(emb.shape[0], -1)
        for layer in layers:
            x = layer(x)
        loss = F.cross_entropy(x, Yb)
        for layer in layers:
            layer.out.retain_grad()
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1
        for p in parameters:
            p.data += -lr * p.grad
        lossi.append(loss.item())
        with torch.no_grad():
            ud.append([((lr*p.grad).std() / p.data.std()).item() for p in parameters])
    saturated = [(layer.out.abs() > 0.97).float().mean().item() for layer in layers if isinstance(layer, Tanh)]
    grads = [layer.out.grad.std().item() for layer in layers if isinstance(layer, Tanh)]
    for layer in layers:
        layer.training = False
    return {"lossi": lossi, "saturated": saturated, "grads": grads, "ud": ud[-1],
            "count": sum(p.nelement() for p in parameters)}


def test_makemore_layers():
    ours, _ = run_both(makemore_layers, WORDS, compare=False)
    assert np.mean(ours["lossi"][-10:]) < np.mean(ours["lossi"][:10])
    assert all(s < 0.5 for s in ours["saturated"]) and all(gr > 0 for gr in ours["grads"])
    assert ours["count"] == 270 + 300 * 32 // 10 + 32 * 2 + 32 * 32 + 64 + 32 * 27 + 54


def makemore_backprop_ninja(m, words):
    """makemore part 4: backpropagate through the MLP by hand, check against autograd."""
    torch, F = m.torch, m.F
    Xtr, Ytr = build_dataset(m, words)
    vocab_size, block_size, n_embd, n_hidden = 27, 3, 10, 64
    g = torch.Generator().manual_seed(2147483647)
    C = torch.randn((vocab_size, n_embd), generator=g)
    W1 = torch.randn((n_embd * block_size, n_hidden), generator=g) * (5/3)/((n_embd * block_size)**0.5)
    b1 = torch.randn(n_hidden, generator=g) * 0.1
    W2 = torch.randn((n_hidden, vocab_size), generator=g) * 0.1
    b2 = torch.randn(vocab_size, generator=g) * 0.1
    bngain = torch.randn((1, n_hidden))*0.1 + 1.0
    bnbias = torch.randn((1, n_hidden))*0.1
    parameters = [C, W1, b1, W2, b2, bngain, bnbias]
    for p in parameters:
        p.requires_grad = True
    batch_size = 32
    n = batch_size
    ix = torch.randint(0, Xtr.shape[0], (batch_size,), generator=g)
    Xb, Yb = Xtr[ix], Ytr[ix]

    emb = C[Xb]
    embcat = emb.view(emb.shape[0], -1)
    hprebn = embcat @ W1 + b1
    bnmeani = 1/n*hprebn.sum(0, keepdim=True)
    bndiff = hprebn - bnmeani
    bndiff2 = bndiff**2
    bnvar = 1/(n-1)*(bndiff2).sum(0, keepdim=True)
    bnvar_inv = (bnvar + 1e-5)**-0.5
    bnraw = bndiff * bnvar_inv
    hpreact = bngain * bnraw + bnbias
    h = torch.tanh(hpreact)
    logits = h @ W2 + b2
    logit_maxes = logits.max(1, keepdim=True).values
    norm_logits = logits - logit_maxes
    counts = norm_logits.exp()
    counts_sum = counts.sum(1, keepdims=True)
    counts_sum_inv = counts_sum**-1
    probs = counts * counts_sum_inv
    logprobs = probs.log()
    loss = -logprobs[range(n), Yb].mean()
    for p in parameters:
        p.grad = None
    for t in [logprobs, probs, counts, counts_sum, counts_sum_inv, norm_logits, logit_maxes, logits, h, hpreact,
              bnraw, bnvar_inv, bnvar, bndiff2, bndiff, hprebn, bnmeani, embcat, emb]:
        t.retain_grad()
    loss.backward()

    def cmp(s, dt, t):
        ex = torch.all(dt == t.grad).item()
        maxdiff = (dt - t.grad).abs().max().item()
        return s, ex, maxdiff

    checks = []
    dlogprobs = torch.zeros_like(logprobs)
    dlogprobs[range(n), Yb] = -1.0/n
    dprobs = (1.0 / probs) * dlogprobs
    dcounts_sum_inv = (counts * dprobs).sum(1, keepdim=True)
    dcounts = counts_sum_inv * dprobs
    dcounts_sum = (-counts_sum**-2) * dcounts_sum_inv
    dcounts += torch.ones_like(counts) * dcounts_sum
    dnorm_logits = counts * dcounts
    dlogits = dnorm_logits.clone()
    dlogit_maxes = (-dnorm_logits).sum(1, keepdim=True)
    dlogits += F.one_hot(logits.max(1).indices, num_classes=logits.shape[1]) * dlogit_maxes
    dh = dlogits @ W2.T
    dW2 = h.T @ dlogits
    db2 = dlogits.sum(0)
    dhpreact = (1.0 - h**2) * dh
    dbngain = (bnraw * dhpreact).sum(0, keepdim=True)
    dbnraw = bngain * dhpreact
    dbnbias = dhpreact.sum(0, keepdim=True)
    dbndiff = bnvar_inv * dbnraw
    dbnvar_inv = (bndiff * dbnraw).sum(0, keepdim=True)
    dbnvar = (-0.5*(bnvar + 1e-5)**-1.5) * dbnvar_inv
    dbndiff2 = (1.0/(n-1))*torch.ones_like(bndiff2) * dbnvar
    dbndiff += (2*bndiff) * dbndiff2
    dhprebn = dbndiff.clone()
    dbnmeani = (-dbndiff).sum(0)
    dhprebn += 1.0/n * (torch.ones_like(hprebn) * dbnmeani)
    dembcat = dhprebn @ W1.T
    dW1 = embcat.T @ dhprebn
    db1 = dhprebn.sum(0)
    demb = dembcat.view(emb.shape)
    dC = torch.zeros_like(C)
    for k in range(Xb.shape[0]):
        for j in range(Xb.shape[1]):
            ix = Xb[k, j]
            dC[ix] += demb[k, j]
    for name, d, t in [('logprobs', dlogprobs, logprobs), ('probs', dprobs, probs),
                       ('counts_sum_inv', dcounts_sum_inv, counts_sum_inv), ('counts_sum', dcounts_sum, counts_sum),
                       ('counts', dcounts, counts), ('norm_logits', dnorm_logits, norm_logits),
                       ('logit_maxes', dlogit_maxes, logit_maxes), ('logits', dlogits, logits), ('h', dh, h),
                       ('W2', dW2, W2), ('b2', db2, b2), ('hpreact', dhpreact, hpreact), ('bngain', dbngain, bngain),
                       ('bnbias', dbnbias, bnbias), ('bnraw', dbnraw, bnraw), ('bnvar_inv', dbnvar_inv, bnvar_inv),
                       ('bnvar', dbnvar, bnvar), ('bndiff2', dbndiff2, bndiff2), ('bndiff', dbndiff, bndiff),
                       ('bnmeani', dbnmeani, bnmeani), ('hprebn', dhprebn, hprebn), ('embcat', dembcat, embcat),
                       ('W1', dW1, W1), ('b1', db1, b1), ('emb', demb, emb), ('C', dC, C)]:
        checks.append(cmp(name, d, t))

    # exercise 2: the cross entropy's and the batch norm's backward in one line each
    loss_fast = F.cross_entropy(logits, Yb)
    dlogits = F.softmax(logits, 1)
    dlogits[range(n), Yb] -= 1
    dlogits /= n
    checks.append(cmp('logits (fast)', dlogits, logits))
    dhprebn = bngain*bnvar_inv/n * (n*dhpreact - dhpreact.sum(0) - n/(n-1)*bnraw*(dhpreact*bnraw).sum(0))
    checks.append(cmp('hprebn (fast)', dhprebn, hprebn))
    return {"checks": checks, "loss": (loss.item(), loss_fast.item())}


def test_makemore_backprop_ninja():
    ours, _ = run_both(makemore_backprop_ninja, WORDS, compare=False)
    worst = {name: maxdiff for name, _, maxdiff in ours["checks"] if maxdiff > 1e-6}
    assert not worst, worst
    exact = {name for name, ex, _ in ours["checks"] if ex}
    assert {"logprobs", "probs", "counts_sum_inv", "W2", "b2", "emb"} <= exact
    np.testing.assert_allclose(*ours["loss"], rtol=1e-6)


def makemore_wavenet(m, words):
    """makemore part 5: the hierarchical (WaveNet-like) model with FlattenConsecutive and a
    BatchNorm1d normalising over (0, 1) for 3-d inputs."""
    torch, F = m.torch, m.F

    class Linear:
        def __init__(self, fan_in, fan_out, bias=True):
            self.weight = torch.randn((fan_in, fan_out)) / fan_in**0.5
            self.bias = torch.zeros(fan_out) if bias else None

        def __call__(self, x):
            self.out = x @ self.weight
            if self.bias is not None:
                self.out += self.bias
            return self.out

        def parameters(self):
            return [self.weight] + ([] if self.bias is None else [self.bias])

    class BatchNorm1d:
        def __init__(self, dim, eps=1e-5, momentum=0.1):
            self.eps = eps
            self.momentum = momentum
            self.training = True
            self.gamma = torch.ones(dim)
            self.beta = torch.zeros(dim)
            self.running_mean = torch.zeros(dim)
            self.running_var = torch.ones(dim)

        def __call__(self, x):
            if self.training:
                if x.ndim == 2:
                    dim = 0
                elif x.ndim == 3:
                    dim = (0, 1)
                xmean = x.mean(dim, keepdim=True)
                xvar = x.var(dim, keepdim=True)
            else:
                xmean = self.running_mean
                xvar = self.running_var
            xhat = (x - xmean) / torch.sqrt(xvar + self.eps)
            self.out = self.gamma * xhat + self.beta
            if self.training:
                with torch.no_grad():
                    self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * xmean
                    self.running_var = (1 - self.momentum) * self.running_var + self.momentum * xvar
            return self.out

        def parameters(self):
            return [self.gamma, self.beta]

    class Tanh:
        def __call__(self, x):
            self.out = torch.tanh(x)
            return self.out

        def parameters(self):
            return []

    class Embedding:
        def __init__(self, num_embeddings, embedding_dim):
            self.weight = torch.randn((num_embeddings, embedding_dim))

        def __call__(self, IX):
            self.out = self.weight[IX]
            return self.out

        def parameters(self):
            return [self.weight]

    class FlattenConsecutive:
        def __init__(self, n):
            self.n = n

        def __call__(self, x):
            B, T, C = x.shape
            x = x.view(B, T//self.n, C*self.n)
            if x.shape[1] == 1:
                x = x.squeeze(1)
            self.out = x
            return self.out

        def parameters(self):
            return []

    class Sequential:
        def __init__(self, layers):
            self.layers = layers

        def __call__(self, x):
            for layer in self.layers:
                x = layer(x)
            self.out = x
            return self.out

        def parameters(self):
            return [p for layer in self.layers for p in layer.parameters()]

    torch.manual_seed(42)
    block_size, vocab_size, n_embd, n_hidden = 8, 27, 10, 32
    Xtr, Ytr = build_dataset(m, words, block_size=block_size)
    model = Sequential([
        Embedding(vocab_size, n_embd),
        FlattenConsecutive(2), Linear(n_embd * 2, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
        FlattenConsecutive(2), Linear(n_hidden*2, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
        FlattenConsecutive(2), Linear(n_hidden*2, n_hidden, bias=False), BatchNorm1d(n_hidden), Tanh(),
        Linear(n_hidden, vocab_size),
    ])
    with torch.no_grad():
        model.layers[-1].weight *= 0.1
    parameters = model.parameters()
    count = sum(p.nelement() for p in parameters)
    for p in parameters:
        p.requires_grad = True
    lossi = []
    for i in range(150):
        ix = torch.randint(0, Xtr.shape[0], (32,))
        Xb, Yb = Xtr[ix], Ytr[ix]
        logits = model(Xb)
        loss = F.cross_entropy(logits, Yb)
        for p in parameters:
            p.grad = None
        loss.backward()
        lr = 0.1 if i < 100 else 0.01
        for p in parameters:
            p.data += -lr * p.grad
        lossi.append(loss.item())
    shapes = [(layer.__class__.__name__, tuple(layer.out.shape)) for layer in model.layers[:5]]
    for layer in model.layers:
        layer.training = False
    with torch.no_grad():
        full = F.cross_entropy(model(Xtr), Ytr).item()
    out = []
    context = [0] * block_size
    for _ in range(20):
        logits = model(torch.tensor([context]))
        probs = F.softmax(logits, dim=1)
        ix = torch.multinomial(probs, num_samples=1).item()
        context = context[1:] + [ix]
        out.append(ix)
        if ix == 0:
            break
    lossi = torch.tensor(lossi).view(-1, 10).mean(1)
    return {"count": count, "lossi": lossi, "full": full, "shapes": shapes, "sampled": len(out)}


def test_makemore_wavenet():
    ours, _ = run_both(makemore_wavenet, WORDS, compare=False)
    assert ours["count"] == 270 + 20 * 32 + 64 + 2 * (64 * 32 + 64) + 32 * 27 + 27
    assert ours["shapes"] == [("Embedding", (32, 8, 10)), ("FlattenConsecutive", (32, 4, 20)),
                              ("Linear", (32, 4, 32)), ("BatchNorm1d", (32, 4, 32)), ("Tanh", (32, 4, 32))]
    assert ours["lossi"][-1] < ours["lossi"][0] - 0.5 and ours["full"] < 3.0 and ours["sampled"] >= 1


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


def dynamic_net(m):
    """Learning PyTorch with examples: control flow and weight sharing in forward."""
    torch = m.torch

    class DynamicNet(m.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = m.nn.Parameter(torch.tensor(0.1))
            self.b = m.nn.Parameter(torch.tensor(0.2))
            self.c = m.nn.Parameter(torch.tensor(0.0))
            self.d = m.nn.Parameter(torch.tensor(0.0))
            self.e = m.nn.Parameter(torch.tensor(0.0))

        def forward(self, x):
            y = self.a + self.b * x + self.c * x ** 2 + self.d * x ** 3
            for exp in range(4, random.randint(4, 6)):
                y = y + self.e * x ** exp
            return y

        def string(self):
            return (f'y = {self.a.item()} + {self.b.item()} x + {self.c.item()} x^2 + {self.d.item()} x^3 + '
                    f'{self.e.item()} x^4 ? + {self.e.item()} x^5 ?')

    random.seed(0)
    x = torch.linspace(-math.pi, math.pi, 2000)
    y = torch.sin(x)
    model = DynamicNet()
    criterion = m.nn.MSELoss(reduction='sum')
    optimizer = m.optim.SGD(model.parameters(), lr=1e-8, momentum=0.9)
    losses = []
    for t in range(200):
        y_pred = model(x)
        loss = criterion(y_pred, y)
        losses.append(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"losses": losses[::20], "string": model.string()[:4]}


def test_dynamic_net():
    ours, _ = run_both(dynamic_net, rtol=1e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0] and ours["string"] == "y = "


def tensor_hooks_and_grad(m, x_init):
    """Gradient hooks on tensors, retain_grad, torch.autograd.grad with create_graph (a gradient
    penalty as WGAN-GP writes it, the norm taken by hand), and grad accumulation across backward calls."""
    torch, nn = m.torch, m.nn
    x = torch.tensor(x_init, requires_grad=True)
    y = x * 2
    seen = []
    handle = y.register_hook(lambda grad: seen.append(grad.clone()) or grad * 3)
    z = (y ** 2).sum()
    z.backward()
    handle.remove()
    hooked = x.grad.clone()

    D = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    with torch.no_grad():
        for i, p in enumerate(D.parameters()):
            p.copy_(torch.linspace(-0.5, 0.5, p.numel()).reshape(p.shape) * (i + 1))
    real = torch.tensor(x_init.reshape(2, 3))
    alpha = torch.tensor([[0.3], [0.7]])
    interpolates = (alpha * real + ((1 - alpha) * real[[1, 0]]))
    interpolates.requires_grad_(True)
    d_interpolates = D(interpolates)
    gradients = torch.autograd.grad(outputs=d_interpolates, inputs=interpolates,
                                    grad_outputs=torch.ones_like(d_interpolates),
                                    create_graph=True, retain_graph=True, only_inputs=True)[0]
    gradients = gradients.view(gradients.size(0), -1)
    gradient_penalty = ((torch.sqrt((gradients ** 2).sum(dim=1)) - 1) ** 2).mean()
    gradient_penalty.backward()

    w = torch.ones(3, requires_grad=True)
    for _ in range(3):
        (w * torch.tensor([1., 2., 3.])).sum().backward()
    accumulated = w.grad.clone()
    return {"seen": seen, "hooked": hooked, "penalty": gradient_penalty, "D.grad": D[0].weight.grad,
            "accumulated": accumulated}


def test_tensor_hooks_and_grad():
    x = np.array([0.5, -1.0, 2.0, 0.25, 1.5, -0.75], dtype=np.float32)
    ours, _ = run_both(tensor_hooks_and_grad, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["hooked"], 2 * 3 * 2 * (2 * x), rtol=1e-6)
    np.testing.assert_array_equal(ours["accumulated"], [3.0, 6.0, 9.0])


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


def vae_example(m, weights):
    """pytorch/examples' vae/main.py: the reparameterisation trick (randn_like), BCE + KL loss."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class VAE(nn.Module):
        def __init__(self):
            super(VAE, self).__init__()
            self.fc1 = nn.Linear(64, 32)
            self.fc21 = nn.Linear(32, 4)
            self.fc22 = nn.Linear(32, 4)
            self.fc3 = nn.Linear(4, 32)
            self.fc4 = nn.Linear(32, 64)

        def encode(self, x):
            h1 = F.relu(self.fc1(x))
            return self.fc21(h1), self.fc22(h1)

        def reparameterize(self, mu, logvar):
            std = torch.exp(0.5*logvar)
            eps = torch.randn_like(std)
            return mu + eps*std

        def decode(self, z):
            h3 = F.relu(self.fc3(z))
            return torch.sigmoid(self.fc4(h3))

        def forward(self, x):
            mu, logvar = self.encode(x.view(-1, 64))
            z = self.reparameterize(mu, logvar)
            return self.decode(z), mu, logvar

    def loss_function(recon_x, x, mu, logvar):
        BCE = F.binary_cross_entropy(recon_x, x.view(-1, 64), reduction='sum')
        KLD = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return BCE + KLD

    model = VAE()
    if weights is None:
        return model
    load(m, model, weights)
    torch.manual_seed(0)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    images, _ = quickstart_data(n=64, side=8, classes=2, seed=14)
    data = torch.sigmoid(torch.tensor(images))
    train_losses = []
    for epoch in range(1, 16):
        model.train()
        optimizer.zero_grad()
        recon_batch, mu, logvar = model(data)
        loss = loss_function(recon_batch, data, mu, logvar)
        loss.backward()
        optimizer.step()
        train_losses.append(loss.item() / len(data))
    model.eval()
    with torch.no_grad():
        sample = torch.randn(8, 4)
        sample = model.decode(sample)
    return {"losses": train_losses, "sample": (tuple(sample.view(8, 1, 8, 8).shape), sample.min().item() >= 0)}


def test_vae_example():
    weights = weights_of(lambda m: vae_example(m, None))
    ours, _ = run_both(vae_example, weights, compare=False)
    assert ours["losses"][-1] < ours["losses"][0] and ours["sample"] == ((8, 1, 8, 8), True)


def conv_autoencoder(m, weights):
    """A convolutional autoencoder: Conv2d/ReLU/MaxPool2d down, ConvTranspose2d/Sigmoid up, MSE."""
    torch, nn = m.torch, m.nn

    class Autoencoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Sequential(
                nn.Conv2d(1, 4, 3, stride=1, padding=1), nn.ReLU(True), nn.MaxPool2d(2, stride=2),
                nn.Conv2d(4, 8, 3, stride=1, padding=1), nn.ReLU(True), nn.MaxPool2d(2, stride=2))
            self.decoder = nn.Sequential(
                nn.ConvTranspose2d(8, 4, 2, stride=2), nn.ReLU(True),
                nn.ConvTranspose2d(4, 1, 2, stride=2), nn.Sigmoid())

        def forward(self, x):
            return self.decoder(self.encoder(x))

    model = Autoencoder()
    if weights is None:
        return model
    load(m, model, weights)
    images, _ = quickstart_data(n=16, side=8, classes=2, seed=15)
    img = torch.sigmoid(torch.tensor(images))
    criterion = nn.MSELoss()
    optimizer = m.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-5)
    losses = []
    for epoch in range(10):
        output = model(img)
        loss = criterion(output, img)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return {"losses": losses, "code": tuple(model.encoder(img).shape)}


def test_conv_autoencoder():
    weights = weights_of(lambda m: conv_autoencoder(m, None))
    ours, _ = run_both(conv_autoencoder, weights, rtol=1e-4, atol=1e-6)
    assert ours["code"] == (16, 8, 2, 2) and ours["losses"][-1] < ours["losses"][0]


def transformer_encoder_classifier(m):
    """nn.TransformerEncoder over embeddings plus positions, mean-pooled, classified."""
    torch, nn = m.torch, m.nn

    class TransformerClassifier(nn.Module):
        def __init__(self, vocab, d_model=16, nhead=2, num_layers=2, num_classes=2):
            super().__init__()
            self.embedding = nn.Embedding(vocab, d_model)
            self.pos = nn.Parameter(torch.zeros(1, 8, d_model))
            encoder_layer = nn.TransformerEncoderLayer(d_model=d_model, nhead=nhead, dim_feedforward=32,
                                                       dropout=0.0, batch_first=True)
            self.encoder = nn.TransformerEncoder(encoder_layer, num_layers=num_layers)
            self.fc = nn.Linear(d_model, num_classes)

        def forward(self, x, mask=None):
            h = self.encoder(self.embedding(x) + self.pos[:, :x.size(1)], src_key_padding_mask=mask)
            return self.fc(h.mean(dim=1))

    model = TransformerClassifier(10)
    mha = nn.MultiheadAttention(16, 2, batch_first=True)
    q = torch.randn(2, 5, 16)
    attn_output, attn_weights = mha(q, q, q, need_weights=True)
    x = torch.randint(0, 10, (4, 8))
    return {"logits": tuple(model(x).shape), "attn": (tuple(attn_output.shape), tuple(attn_weights.shape))}


def test_transformer_encoder_classifier():
    ours, _ = run_both(transformer_encoder_classifier)
    assert ours == {"logits": (4, 2), "attn": ((2, 5, 16), (2, 5, 5))}


def gan_step(m, weights_d, weights_g):
    """A DCGAN-style training step: D on real and G(z).detach(), then G through D, BCE losses,
    two Adam optimizers with betas=(0.5, 0.999)."""
    torch, nn, optim = m.torch, m.nn, m.optim
    netD = load(m, nn.Sequential(nn.Linear(4, 16), nn.LeakyReLU(0.2, inplace=True), nn.Linear(16, 1), nn.Sigmoid()),
                weights_d)
    netG = load(m, nn.Sequential(nn.Linear(2, 16), nn.ReLU(True), nn.Linear(16, 4), nn.Tanh()), weights_g)
    criterion = nn.BCELoss()
    optimizerD = optim.Adam(netD.parameters(), lr=2e-3, betas=(0.5, 0.999))
    optimizerG = optim.Adam(netG.parameters(), lr=2e-3, betas=(0.5, 0.999))
    real_label, fake_label = 1., 0.
    real_cpu = torch.linspace(-0.5, 0.5, 32).reshape(8, 4)
    noise = torch.linspace(-1, 1, 16).reshape(8, 2)
    history = []
    for i in range(10):
        netD.zero_grad()
        b_size = real_cpu.size(0)
        label = torch.full((b_size,), real_label, dtype=torch.float)
        output = netD(real_cpu).view(-1)
        errD_real = criterion(output, label)
        errD_real.backward()
        D_x = output.mean().item()
        fake = netG(noise)
        label.fill_(fake_label)
        output = netD(fake.detach()).view(-1)
        errD_fake = criterion(output, label)
        errD_fake.backward()
        errD = errD_real + errD_fake
        optimizerD.step()
        netG.zero_grad()
        label.fill_(real_label)
        output = netD(fake).view(-1)
        errG = criterion(output, label)
        errG.backward()
        optimizerG.step()
        history.append((errD.item(), errG.item(), D_x))
    return history


def test_gan_step():
    wd = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 16), m.nn.LeakyReLU(0.2), m.nn.Linear(16, 1),
                                              m.nn.Sigmoid()))
    wg = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(2, 16), m.nn.ReLU(), m.nn.Linear(16, 4), m.nn.Tanh()))
    ours, _ = run_both(gan_step, wd, wg, rtol=1e-4, atol=1e-5)
    assert len(ours) == 10 and all(np.isfinite(ours).ravel())


def d2l_rnn_state(m, weights):
    """d2l's RNN training epoch: nn.RNN with an explicit state, one-hot inputs (X.T.long()),
    the state detached between minibatches with detach_(), grad clipping by param.grad[:] *=."""
    torch, nn, F = m.torch, m.nn, m.F

    class RNNModel(nn.Module):
        def __init__(self, rnn_layer, vocab_size):
            super(RNNModel, self).__init__()
            self.rnn = rnn_layer
            self.vocab_size = vocab_size
            self.num_hiddens = self.rnn.hidden_size
            self.num_directions = 1
            self.linear = nn.Linear(self.num_hiddens, self.vocab_size)

        def forward(self, inputs, state):
            X = F.one_hot(inputs.T.long(), self.vocab_size)
            X = X.to(torch.float32)
            Y, state = self.rnn(X, state)
            output = self.linear(Y.reshape((-1, Y.shape[-1])))
            return output, state

        def begin_state(self, device, batch_size=1):
            return torch.zeros((self.num_directions * self.rnn.num_layers, batch_size, self.num_hiddens),
                               device=device)

    net = RNNModel(nn.RNN(8, 16), 8)
    if weights is None:
        return net
    load(m, net, weights)

    def grad_clipping(net, theta):
        params = [p for p in net.parameters() if p.requires_grad]
        norm = torch.sqrt(sum(torch.sum((p.grad ** 2)) for p in params))
        if norm > theta:
            for param in params:
                param.grad[:] *= theta / norm

    corpus = torch.tensor([i % 8 for i in range(200)])
    loss = nn.CrossEntropyLoss()
    updater = m.optim.SGD(net.parameters(), lr=1)
    state = None
    history = []
    for epoch in range(3):
        for i in range(0, 160, 20):
            X = corpus[i:i + 20].reshape(4, 5)
            Y = corpus[i + 1:i + 21].reshape(4, 5)
            if state is None:
                state = net.begin_state(batch_size=X.shape[0], device="cpu")
            else:
                state.detach_()
            y = Y.T.reshape(-1)
            y_hat, state = net(X, state)
            l = loss(y_hat, y.long()).mean()
            updater.zero_grad()
            l.backward()
            grad_clipping(net, 1)
            updater.step()
        history.append(l.item())
    return history


def test_d2l_rnn_state():
    weights = weights_of(lambda m: d2l_rnn_state(m, None))
    ours, _ = run_both(d2l_rnn_state, weights, rtol=1e-3, atol=1e-4)
    assert ours[-1] < ours[0]


# ----------------------------------------------------------------------------------------------
# CNN (the CIFAR-10 tutorial's Net on random images), RNNs, embeddings
# ----------------------------------------------------------------------------------------------

def mnist_example(m, weights):
    """pytorch/examples' mnist/main.py on random 12x12 'digits': Conv2d/Dropout/max_pool2d/log_softmax,
    F.nll_loss, Adadelta with StepLR, the train/test functions and their log lines."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    StepLR = optim.lr_scheduler.StepLR

    class Net(nn.Module):
        def __init__(self):
            super(Net, self).__init__()
            self.conv1 = nn.Conv2d(1, 8, 3, 1)
            self.conv2 = nn.Conv2d(8, 16, 3, 1)
            self.dropout1 = nn.Dropout(0.25)
            self.dropout2 = nn.Dropout(0.5)
            self.fc1 = nn.Linear(256, 32)
            self.fc2 = nn.Linear(32, 4)

        def forward(self, x):
            x = self.conv1(x)
            x = F.relu(x)
            x = self.conv2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = self.dropout1(x)
            x = torch.flatten(x, 1)
            x = self.fc1(x)
            x = F.relu(x)
            x = self.dropout2(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    def train(args, model, device, train_loader, optimizer, epoch, log):
        model.train()
        for batch_idx, (data, target) in enumerate(train_loader):
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            if batch_idx % args["log_interval"] == 0:
                log.append('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                    epoch, batch_idx * len(data), len(train_loader.dataset),
                    100. * batch_idx / len(train_loader), loss.item()))

    def test(model, device, test_loader, log):
        model.eval()
        test_loss = 0
        correct = 0
        with torch.no_grad():
            for data, target in test_loader:
                data, target = data.to(device), target.to(device)
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
                pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
                correct += pred.eq(target.view_as(pred)).sum().item()
        test_loss /= len(test_loader.dataset)
        log.append('\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.0f}%)\n'.format(
            test_loss, correct, len(test_loader.dataset),
            100. * correct / len(test_loader.dataset)))
        return test_loss, correct

    args = {"batch_size": 16, "test_batch_size": 32, "epochs": 3, "lr": 1.0, "gamma": 0.7, "log_interval": 4,
            "seed": 1}
    use_cuda = torch.cuda.is_available()
    torch.manual_seed(args["seed"])
    device = torch.device("cuda") if use_cuda else torch.device("cpu")
    train_kwargs = {'batch_size': args["batch_size"]}
    test_kwargs = {'batch_size': args["test_batch_size"]}
    images, labels = quickstart_data(n=160, side=12, classes=4, seed=13)
    dataset1 = m.data.TensorDataset(torch.tensor(images[:128]), torch.tensor(labels[:128]))
    dataset2 = m.data.TensorDataset(torch.tensor(images[128:]), torch.tensor(labels[128:]))
    train_loader = m.data.DataLoader(dataset1, **train_kwargs)
    test_loader = m.data.DataLoader(dataset2, **test_kwargs)
    model = Net().to(device)
    if weights is None:
        return model
    load(m, model, weights)
    optimizer = optim.Adadelta(model.parameters(), lr=args["lr"])
    scheduler = StepLR(optimizer, step_size=1, gamma=args["gamma"])
    log, results = [], []
    for epoch in range(1, args["epochs"] + 1):
        train(args, model, device, train_loader, optimizer, epoch, log)
        results.append(test(model, device, test_loader, log))
        scheduler.step()
    return {"results": results, "log": log[:2]}


def test_mnist_example():
    weights = weights_of(lambda m: mnist_example(m, None))
    ours, _ = run_both(mnist_example, weights, compare=False)
    assert ours["log"][0].startswith("Train Epoch: 1 [0/128 (0%)]\tLoss: ")
    loss, correct = ours["results"][-1]
    assert correct >= 28 and loss < ours["results"][0][0] + 0.1


def modern_device_selection(m):
    """Device lines of current tutorials and examples: torch.accelerator, torch.backends.mps."""
    torch = m.torch
    device = torch.accelerator.current_accelerator().type if torch.accelerator.is_available() else "cpu"
    use_mps = torch.backends.mps.is_available()
    return device, use_mps


def test_modern_device_selection():
    ours, _ = run_both(modern_device_selection)
    assert ours == ("cpu", False)


def cifar_net(m):
    nn, F, torch = m.nn, m.F, m.torch

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 6, 5)
            self.pool = nn.MaxPool2d(2, 2)
            self.conv2 = nn.Conv2d(6, 16, 5)
            self.fc1 = nn.Linear(16 * 5 * 5, 120)
            self.fc2 = nn.Linear(120, 84)
            self.fc3 = nn.Linear(84, 10)

        def forward(self, x):
            x = self.pool(F.relu(self.conv1(x)))
            x = self.pool(F.relu(self.conv2(x)))
            x = torch.flatten(x, 1)  # flatten all dimensions except batch
            x = F.relu(self.fc1(x))
            x = F.relu(self.fc2(x))
            x = self.fc3(x)
            return x

    return Net()


def cifar_training(m, weights, path):
    torch, nn, optim = m.torch, m.nn, m.optim
    net = load(m, cifar_net(m), weights)
    criterion = nn.CrossEntropyLoss()
    optimizer = optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(6)
    images = rng.standard_normal((16, 3, 32, 32)).astype(np.float32)
    labels = rng.integers(0, 10, 16)
    trainloader = m.data.DataLoader(m.data.TensorDataset(torch.tensor(images), torch.tensor(labels)),
                                    batch_size=4, shuffle=False, num_workers=0)
    losses = []
    for epoch in range(3):
        running_loss = 0.0
        for i, data in enumerate(trainloader, 0):
            inputs, labels_ = data
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels_)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        losses.append(running_loss / len(trainloader))
    torch.save(net.state_dict(), path)
    net = load(m, cifar_net(m), {k: v.numpy() for k, v in torch.load(path).items()})
    correct = 0
    total = 0
    with torch.no_grad():
        for data in trainloader:
            images_, labels_ = data
            outputs = net(images_)
            _, predicted = torch.max(outputs.data, 1)
            total += labels_.size(0)
            correct += (predicted == labels_).sum().item()
    params = sum(p.numel() for p in net.parameters())
    return {"losses": losses, "accuracy": correct / total, "params": params}


def test_cifar_net(tmp_path):
    weights = weights_of(cifar_net)
    ours, _ = run_both(cifar_training, weights, tmp_path / "cifar_net.pth", rtol=2e-3, atol=1e-4)
    assert ours["params"] == 62006
    assert ours["losses"][-1] < ours["losses"][0]


def lstm_tagger(m, weights):
    """The sequence models tutorial: an LSTM part-of-speech tagger."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def prepare_sequence(seq, to_ix):
        idxs = [to_ix[w] for w in seq]
        return torch.tensor(idxs, dtype=torch.long)

    training_data = [
        ("The dog ate the apple".split(), ["DET", "NN", "V", "DET", "NN"]),
        ("Everybody read that book".split(), ["NN", "V", "DET", "NN"])
    ]
    word_to_ix = {}
    for sent, tags in training_data:
        for word in sent:
            if word not in word_to_ix:
                word_to_ix[word] = len(word_to_ix)
    tag_to_ix = {"DET": 0, "NN": 1, "V": 2}
    EMBEDDING_DIM = 6
    HIDDEN_DIM = 6

    class LSTMTagger(nn.Module):
        def __init__(self, embedding_dim, hidden_dim, vocab_size, tagset_size):
            super(LSTMTagger, self).__init__()
            self.hidden_dim = hidden_dim
            self.word_embeddings = nn.Embedding(vocab_size, embedding_dim)
            self.lstm = nn.LSTM(embedding_dim, hidden_dim)
            self.hidden2tag = nn.Linear(hidden_dim, tagset_size)

        def forward(self, sentence):
            embeds = self.word_embeddings(sentence)
            lstm_out, _ = self.lstm(embeds.view(len(sentence), 1, -1))
            tag_space = self.hidden2tag(lstm_out.view(len(sentence), -1))
            tag_scores = F.log_softmax(tag_space, dim=1)
            return tag_scores

    model = LSTMTagger(EMBEDDING_DIM, HIDDEN_DIM, len(word_to_ix), len(tag_to_ix))
    if weights is None:
        return model
    load(m, model, weights)
    loss_function = nn.NLLLoss()
    optimizer = optim.SGD(model.parameters(), lr=0.5)
    with torch.no_grad():
        inputs = prepare_sequence(training_data[0][0], word_to_ix)
        before = model(inputs)
    for epoch in range(60):
        for sentence, tags in training_data:
            model.zero_grad()
            sentence_in = prepare_sequence(sentence, word_to_ix)
            targets = prepare_sequence(tags, tag_to_ix)
            tag_scores = model(sentence_in)
            loss = loss_function(tag_scores, targets)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        inputs = prepare_sequence(training_data[0][0], word_to_ix)
        tag_scores = model(inputs)
    return {"before": before, "after": tag_scores, "tags": tag_scores.argmax(dim=1).tolist()}


def test_lstm_tagger():
    weights = weights_of(lambda m: lstm_tagger(m, None))
    ours, _ = run_both(lstm_tagger, weights, rtol=1e-3, atol=1e-4)
    assert ours["tags"] == [0, 1, 2, 0, 1]


def char_rnn_classifier(m, weights):
    """'NLP From Scratch: classifying names with a character-level RNN': one-hot letters written
    by chained indexing (tensor[li][0][i] = 1), an RNN cell built from Linear layers, NLLLoss, and
    the update p.data.add_(p.grad.data, alpha=-learning_rate)."""
    torch, nn, F = m.torch, m.nn, m.F
    import string
    all_letters = string.ascii_letters + " .,;'"
    n_letters = len(all_letters)
    category_lines = {"English": ["smith", "jones", "taylor", "brown", "wilson", "walker"],
                      "Italian": ["rossi", "russo", "ferrari", "esposito", "bianchi", "romano"]}
    all_categories = list(category_lines)
    n_categories = len(all_categories)

    def letterToIndex(letter):
        return all_letters.find(letter)

    def letterToTensor(letter):
        tensor = torch.zeros(1, n_letters)
        tensor[0][letterToIndex(letter)] = 1
        return tensor

    def lineToTensor(line):
        tensor = torch.zeros(len(line), 1, n_letters)
        for li, letter in enumerate(line):
            tensor[li][0][letterToIndex(letter)] = 1
        return tensor

    class RNN(nn.Module):
        def __init__(self, input_size, hidden_size, output_size):
            super(RNN, self).__init__()
            self.hidden_size = hidden_size
            self.i2h = nn.Linear(input_size, hidden_size)
            self.h2h = nn.Linear(hidden_size, hidden_size)
            self.h2o = nn.Linear(hidden_size, output_size)
            self.softmax = nn.LogSoftmax(dim=1)

        def forward(self, input, hidden):
            hidden = F.tanh(self.i2h(input) + self.h2h(hidden))
            output = self.h2o(hidden)
            output = self.softmax(output)
            return output, hidden

        def initHidden(self):
            return torch.zeros(1, self.hidden_size)

    n_hidden = 32
    rnn = RNN(n_letters, n_hidden, n_categories)
    if weights is None:
        return rnn
    load(m, rnn, weights)
    criterion = nn.NLLLoss()
    learning_rate = 0.05

    def train(category_tensor, line_tensor):
        hidden = rnn.initHidden()
        rnn.zero_grad()
        for i in range(line_tensor.size()[0]):
            output, hidden = rnn(line_tensor[i], hidden)
        loss = criterion(output, category_tensor)
        loss.backward()
        for p in rnn.parameters():
            p.data.add_(p.grad.data, alpha=-learning_rate)
        return output, loss.item()

    def categoryFromOutput(output):
        category_i = output.argmax(1)[0].item()
        return all_categories[category_i], category_i

    pairs = [(c, line) for c in all_categories for line in category_lines[c]]
    current_loss, all_losses = 0, []
    for epoch in range(15):
        for category, line in pairs:
            category_tensor = torch.tensor([all_categories.index(category)], dtype=torch.long)
            line_tensor = lineToTensor(line)
            output, loss = train(category_tensor, line_tensor)
            current_loss += loss
        all_losses.append(current_loss / len(pairs))
        current_loss = 0

    def evaluate(line_tensor):
        hidden = rnn.initHidden()
        for i in range(line_tensor.size()[0]):
            output, hidden = rnn(line_tensor[i], hidden)
        return output

    with torch.no_grad():
        guesses = [categoryFromOutput(evaluate(lineToTensor(line)))[0] == c for c, line in pairs]
    return {"letter": letterToTensor('J').argmax().item(), "line": lineToTensor('Jones').sum().item(),
            "losses": all_losses, "accuracy": sum(guesses) / len(guesses)}


def test_char_rnn_classifier():
    weights = weights_of(lambda m: char_rnn_classifier(m, None))
    ours, _ = run_both(char_rnn_classifier, weights, rtol=1e-3, atol=1e-4)
    assert ours["letter"] == 35 and ours["line"] == 5.0
    assert ours["losses"][-1] < ours["losses"][0] / 2 and ours["accuracy"] >= 0.9


def gru_classifier(m, weights):
    """A batch-first GRU over padded sequences, classifying by the last hidden state (h_n[-1])."""
    torch, nn = m.torch, m.nn

    class RNNClassifier(nn.Module):
        def __init__(self, vocab_size, embed_dim, hidden_size, num_classes):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=0)
            self.rnn = nn.GRU(embed_dim, hidden_size, num_layers=2, batch_first=True, dropout=0.0)
            self.fc = nn.Linear(hidden_size, num_classes)

        def forward(self, x):
            emb = self.embedding(x)
            output, h_n = self.rnn(emb)
            return self.fc(h_n[-1])

    model = RNNClassifier(10, 8, 16, 2)
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(7)
    x = rng.integers(1, 10, (32, 6))
    y = (x[:, 0] > 5).astype(np.int64)  # the class is told by the first token: the GRU must remember it
    X, Y = torch.tensor(x), torch.tensor(y)
    optimizer = m.optim.Adam(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss()
    for epoch in range(40):
        model.train()
        optimizer.zero_grad()
        loss = criterion(model(X), Y)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
    model.eval()
    with torch.no_grad():
        acc = (model(X).argmax(dim=1) == Y).float().mean().item()
    return {"loss": loss.item(), "accuracy": acc}


def test_gru_classifier():
    weights = weights_of(lambda m: gru_classifier(m, None))
    ours, _ = run_both(gru_classifier, weights, rtol=2e-3, atol=1e-3)
    assert ours["accuracy"] > 0.9


def embedding_bag_text_classifier(m, weights):
    """The text classification tutorial's model (EmbeddingBag with offsets), and the same model
    written with nn.Embedding and mean pooling over a padded batch."""
    torch, nn = m.torch, m.nn

    class TextClassificationModel(nn.Module):
        def __init__(self, vocab_size, embed_dim, num_class):
            super(TextClassificationModel, self).__init__()
            self.embedding = nn.EmbeddingBag(vocab_size, embed_dim, sparse=False)
            self.fc = nn.Linear(embed_dim, num_class)
            self.init_weights()

        def init_weights(self):
            initrange = 0.5
            self.embedding.weight.data.uniform_(-initrange, initrange)
            self.fc.weight.data.uniform_(-initrange, initrange)
            self.fc.bias.data.zero_()

        def forward(self, text, offsets):
            embedded = self.embedding(text, offsets)
            return self.fc(embedded)

    class MeanPool(nn.Module):
        def __init__(self, vocab_size, embed_dim, num_class):
            super().__init__()
            self.embedding = nn.Embedding(vocab_size, embed_dim)
            self.fc = nn.Linear(embed_dim, num_class)

        def forward(self, tokens):
            return self.fc(self.embedding(tokens).mean(dim=1))

    bag, pool = TextClassificationModel(20, 8, 2), MeanPool(20, 8, 2)
    if weights is None:
        return bag
    load(m, bag, weights)
    load(m, pool, weights)
    rng = np.random.default_rng(8)
    tokens = rng.integers(0, 20, (16, 5))
    labels = (tokens < 10).sum(1) > 2
    text = torch.tensor(tokens.reshape(-1))
    offsets = torch.arange(0, 16 * 5, 5)
    label = torch.tensor(labels.astype(np.int64))
    same = (bag(text, offsets) - pool(torch.tensor(tokens))).abs().max().item()
    criterion = nn.CrossEntropyLoss()
    optimizer = m.optim.SGD(bag.parameters(), lr=5)
    scheduler = m.optim.lr_scheduler.StepLR(optimizer, 1.0, gamma=0.1)
    for epoch in range(3):
        for _ in range(5):
            optimizer.zero_grad()
            predicted_label = bag(text, offsets)
            loss = criterion(predicted_label, label)
            loss.backward()
            nn.utils.clip_grad_norm_(bag.parameters(), 0.1)
            optimizer.step()
        scheduler.step()
    acc = (bag(text, offsets).argmax(1) == label).sum().item() / label.size(0)
    return {"same": same, "accuracy": acc, "lr": scheduler.get_last_lr()}


def test_embedding_bag_text_classifier():
    weights = weights_of(lambda m: embedding_bag_text_classifier(m, None))
    ours, _ = run_both(embedding_bag_text_classifier, weights, rtol=1e-4, atol=1e-5)
    assert ours["same"] < 1e-6 and ours["accuracy"] >= 0.75


# ----------------------------------------------------------------------------------------------
# nanoGPT-style: self-attention, the averaging trick, a tiny GPT trained for a few steps
# ----------------------------------------------------------------------------------------------

def attention_trick(m):
    torch, F = m.torch, m.F
    torch.manual_seed(1337)
    B, T, C = 4, 8, 2
    x = torch.randn(B, T, C)
    xbow = torch.zeros((B, T, C))
    for b in range(B):
        for t in range(T):
            xprev = x[b, :t+1]  # (t,C)
            xbow[b, t] = torch.mean(xprev, 0)
    wei = torch.tril(torch.ones(T, T))
    wei = wei / wei.sum(1, keepdim=True)
    xbow2 = wei @ x  # (B, T, T) @ (B, T, C) ----> (B, T, C)
    tril = torch.tril(torch.ones(T, T))
    wei = torch.zeros((T, T))
    wei = wei.masked_fill(tril == 0, float('-inf'))
    wei = F.softmax(wei, dim=-1)
    xbow3 = wei @ x
    return {"version2": torch.allclose(xbow, xbow2, atol=1e-6), "version3": torch.allclose(xbow, xbow3, atol=1e-6)}


def test_attention_trick():
    ours, _ = run_both(attention_trick)
    assert ours == {"version2": True, "version3": True}


def tiny_gpt(m):
    torch, nn, F = m.torch, m.nn, m.F
    batch_size, block_size, max_iters, eval_iters = 4, 8, 30, 3
    learning_rate = 1e-3
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    n_embd, n_head, n_layer, dropout = 16, 2, 2, 0.0
    torch.manual_seed(1337)
    text = " ".join(WORDS) * 4
    chars = sorted(list(set(text)))
    vocab_size = len(chars)
    stoi = {ch: i for i, ch in enumerate(chars)}
    itos = {i: ch for i, ch in enumerate(chars)}

    def encode(s):
        return [stoi[c] for c in s]

    def decode(ids):
        return ''.join([itos[i] for i in ids])

    data = torch.tensor(encode(text), dtype=torch.long)
    n = int(0.9*len(data))
    train_data = data[:n]
    val_data = data[n:]

    def get_batch(split):
        data = train_data if split == 'train' else val_data
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([data[i:i+block_size] for i in ix])
        y = torch.stack([data[i+1:i+block_size+1] for i in ix])
        x, y = x.to(device), y.to(device)
        return x, y

    @torch.no_grad()
    def estimate_loss():
        out = {}
        model.eval()
        for split in ['train', 'val']:
            losses = torch.zeros(eval_iters)
            for k in range(eval_iters):
                X, Y = get_batch(split)
                logits, loss = model(X, Y)
                losses[k] = loss.item()
            out[split] = losses.mean()
        model.train()
        return out

    class Head(nn.Module):
        """ one head of self-attention """

        def __init__(self, head_size):
            super().__init__()
            self.key = nn.Linear(n_embd, head_size, bias=False)
            self.query = nn.Linear(n_embd, head_size, bias=False)
            self.value = nn.Linear(n_embd, head_size, bias=False)
            self.register_buffer('tril', torch.tril(torch.ones(block_size, block_size)))
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            B, T, C = x.shape
            k = self.key(x)    # (B,T,C)
            q = self.query(x)  # (B,T,C)
            wei = q @ k.transpose(-2, -1) * k.size(-1)**-0.5  # (B, T, C) @ (B, C, T) -> (B, T, T)
            wei = wei.masked_fill(self.tril[:T, :T] == 0, float('-inf'))  # (B, T, T)
            wei = F.softmax(wei, dim=-1)  # (B, T, T)
            wei = self.dropout(wei)
            v = self.value(x)  # (B,T,C)
            out = wei @ v  # (B, T, T) @ (B, T, C) -> (B, T, C)
            return out

    class MultiHeadAttention(nn.Module):
        def __init__(self, num_heads, head_size):
            super().__init__()
            self.heads = nn.ModuleList([Head(head_size) for _ in range(num_heads)])
            self.proj = nn.Linear(n_embd, n_embd)
            self.dropout = nn.Dropout(dropout)

        def forward(self, x):
            out = torch.cat([h(x) for h in self.heads], dim=-1)
            out = self.dropout(self.proj(out))
            return out

    class FeedFoward(nn.Module):
        def __init__(self, n_embd):
            super().__init__()
            self.net = nn.Sequential(
                nn.Linear(n_embd, 4 * n_embd),
                nn.ReLU(),
                nn.Linear(4 * n_embd, n_embd),
                nn.Dropout(dropout),
            )

        def forward(self, x):
            return self.net(x)

    class Block(nn.Module):
        def __init__(self, n_embd, n_head):
            super().__init__()
            head_size = n_embd // n_head
            self.sa = MultiHeadAttention(n_head, head_size)
            self.ffwd = FeedFoward(n_embd)
            self.ln1 = nn.LayerNorm(n_embd)
            self.ln2 = nn.LayerNorm(n_embd)

        def forward(self, x):
            x = x + self.sa(self.ln1(x))
            x = x + self.ffwd(self.ln2(x))
            return x

    class BigramLanguageModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_embedding_table = nn.Embedding(vocab_size, n_embd)
            self.position_embedding_table = nn.Embedding(block_size, n_embd)
            self.blocks = nn.Sequential(*[Block(n_embd, n_head=n_head) for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(n_embd)
            self.lm_head = nn.Linear(n_embd, vocab_size)

        def forward(self, idx, targets=None):
            B, T = idx.shape
            tok_emb = self.token_embedding_table(idx)  # (B,T,C)
            pos_emb = self.position_embedding_table(torch.arange(T, device=device))  # (T,C)
            x = tok_emb + pos_emb  # (B,T,C)
            x = self.blocks(x)  # (B,T,C)
            x = self.ln_f(x)  # (B,T,C)
            logits = self.lm_head(x)  # (B,T,vocab_size)
            if targets is None:
                loss = None
            else:
                B, T, C = logits.shape
                logits = logits.view(B*T, C)
                targets = targets.view(B*T)
                loss = F.cross_entropy(logits, targets)
            return logits, loss

        def generate(self, idx, max_new_tokens):
            for _ in range(max_new_tokens):
                idx_cond = idx[:, -block_size:]
                logits, loss = self(idx_cond)
                logits = logits[:, -1, :]  # becomes (B, C)
                probs = F.softmax(logits, dim=-1)  # (B, C)
                idx_next = torch.multinomial(probs, num_samples=1)  # (B, 1)
                idx = torch.cat((idx, idx_next), dim=1)  # (B, T+1)
            return idx

    model = BigramLanguageModel()
    m_ = model.to(device)
    n_params = sum(p.numel() for p in m_.parameters())
    optimizer = m.optim.AdamW(model.parameters(), lr=learning_rate)
    first = estimate_loss()
    for iter in range(max_iters):
        xb, yb = get_batch('train')
        logits, loss = model(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    last = estimate_loss()
    context = torch.zeros((1, 1), dtype=torch.long, device=device)
    sample = decode(m_.generate(context, max_new_tokens=20)[0].tolist())
    return {"n_params": n_params, "first": first["train"].item(), "last": last["train"].item(),
            "sample": len(sample), "buffers": sorted({name.split(".")[-1] for name, _ in model.named_buffers()})}


def test_tiny_gpt():
    ours, theirs = run_both(tiny_gpt, compare=False)
    assert ours["sample"] == 21 and ours["buffers"] == ["tril"]
    assert ours["last"] < ours["first"]
    if theirs is not None:
        assert ours["n_params"] == theirs["n_params"]


def nanogpt(m, path):
    """nanoGPT's model.py (abridged only where it loads GPT-2 weights): GPTConfig, CausalSelfAttention
    with c_attn(x).split, weight tying, _init_weights through self.apply, configure_optimizers with
    decay/no-decay groups, top-k generate, crop_block_size; a few steps of train.py's loop."""
    import inspect
    from dataclasses import dataclass

    torch, nn, F = m.torch, m.nn, m.F

    class LayerNorm(nn.Module):
        """ LayerNorm but with an optional bias. PyTorch doesn't support simply bias=False """

        def __init__(self, ndim, bias):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(ndim))
            self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

        def forward(self, input):
            return F.layer_norm(input, self.weight.shape, self.weight, self.bias, 1e-5)

    class CausalSelfAttention(nn.Module):
        def __init__(self, config):
            super().__init__()
            assert config.n_embd % config.n_head == 0
            self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
            self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
            self.attn_dropout = nn.Dropout(config.dropout)
            self.resid_dropout = nn.Dropout(config.dropout)
            self.n_head = config.n_head
            self.n_embd = config.n_embd
            self.dropout = config.dropout
            self.flash = False  # the explicit attention below, on either library
            self.register_buffer("bias", torch.tril(torch.ones(config.block_size, config.block_size))
                                 .view(1, 1, config.block_size, config.block_size))

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
            k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
            q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
            v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))
            att = att.masked_fill(self.bias[:, :, :T, :T] == 0, float('-inf'))
            att = F.softmax(att, dim=-1)
            att = self.attn_dropout(att)
            y = att @ v  # (B, nh, T, T) x (B, nh, T, hs) -> (B, nh, T, hs)
            y = y.transpose(1, 2).contiguous().view(B, T, C)
            y = self.resid_dropout(self.c_proj(y))
            return y

    class MLP(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
            self.dropout = nn.Dropout(config.dropout)

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
            self.attn = CausalSelfAttention(config)
            self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
            self.mlp = MLP(config)

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            x = x + self.mlp(self.ln_2(x))
            return x

    @dataclass
    class GPTConfig:
        block_size: int = 16
        vocab_size: int = 32
        n_layer: int = 2
        n_head: int = 2
        n_embd: int = 16
        dropout: float = 0.0
        bias: bool = True

    class GPT(nn.Module):
        def __init__(self, config):
            super().__init__()
            assert config.vocab_size is not None
            assert config.block_size is not None
            self.config = config
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=LayerNorm(config.n_embd, bias=config.bias),
            ))
            self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
            self.transformer.wte.weight = self.lm_head.weight  # https://paperswithcode.com/method/weight-tying
            self.apply(self._init_weights)
            for pn, p in self.named_parameters():
                if pn.endswith('c_proj.weight'):
                    nn.init.normal_(p, mean=0.0, std=0.02/math.sqrt(2 * config.n_layer))

        def get_num_params(self, non_embedding=True):
            n_params = sum(p.numel() for p in self.parameters())
            if non_embedding:
                n_params -= self.transformer.wpe.weight.numel()
            return n_params

        def _init_weights(self, module):
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)

        def forward(self, idx, targets=None):
            device = idx.device
            b, t = idx.size()
            assert t <= self.config.block_size, f"Cannot forward sequence of length {t}"
            pos = torch.arange(0, t, dtype=torch.long, device=device)  # shape (t)
            tok_emb = self.transformer.wte(idx)  # token embeddings of shape (b, t, n_embd)
            pos_emb = self.transformer.wpe(pos)  # position embeddings of shape (t, n_embd)
            x = self.transformer.drop(tok_emb + pos_emb)
            for block in self.transformer.h:
                x = block(x)
            x = self.transformer.ln_f(x)
            if targets is not None:
                logits = self.lm_head(x)
                loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)
            else:
                logits = self.lm_head(x[:, [-1], :])  # note: using list [-1] to preserve the time dim
                loss = None
            return logits, loss

        def crop_block_size(self, block_size):
            assert block_size <= self.config.block_size
            self.config.block_size = block_size
            self.transformer.wpe.weight = nn.Parameter(self.transformer.wpe.weight[:block_size])
            for block in self.transformer.h:
                if hasattr(block.attn, 'bias'):
                    block.attn.bias = block.attn.bias[:, :, :block_size, :block_size]

        def configure_optimizers(self, weight_decay, learning_rate, betas, device_type):
            param_dict = {pn: p for pn, p in self.named_parameters()}
            param_dict = {pn: p for pn, p in param_dict.items() if p.requires_grad}
            decay_params = [p for n, p in param_dict.items() if p.dim() >= 2]
            nodecay_params = [p for n, p in param_dict.items() if p.dim() < 2]
            optim_groups = [
                {'params': decay_params, 'weight_decay': weight_decay},
                {'params': nodecay_params, 'weight_decay': 0.0}
            ]
            num_decay_params = sum(p.numel() for p in decay_params)
            num_nodecay_params = sum(p.numel() for p in nodecay_params)
            fused_available = 'fused' in inspect.signature(m.optim.AdamW).parameters
            use_fused = fused_available and device_type == 'cuda'
            extra_args = dict(fused=True) if use_fused else dict()
            optimizer = m.optim.AdamW(optim_groups, lr=learning_rate, betas=betas, **extra_args)
            return optimizer, (num_decay_params, num_nodecay_params)

        @torch.no_grad()
        def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None):
            for _ in range(max_new_tokens):
                idx_cond = idx if idx.size(1) <= self.config.block_size else idx[:, -self.config.block_size:]
                logits, _ = self(idx_cond)
                logits = logits[:, -1, :] / temperature
                if top_k is not None:
                    v, _ = torch.topk(logits, min(top_k, logits.size(-1)))
                    logits[logits < v[:, [-1]]] = -float('Inf')
                probs = F.softmax(logits, dim=-1)
                idx_next = torch.multinomial(probs, num_samples=1)
                idx = torch.cat((idx, idx_next), dim=1)
            return idx

    torch.manual_seed(1337)
    model = GPT(GPTConfig())
    tied = model.transformer.wte.weight is model.lm_head.weight
    optimizer, counts = model.configure_optimizers(0.1, 1e-2, (0.9, 0.95), 'cpu')
    rng = np.random.default_rng(9)
    pattern = rng.integers(0, 32, 8)
    data = torch.tensor(np.tile(pattern, 40))  # a repeating sequence: easy to learn

    def get_batch():
        ix = torch.randint(len(data) - 16, (8,))
        x = torch.stack([data[i:i+16] for i in ix])
        y = torch.stack([data[i+1:i+1+16] for i in ix])
        return x, y

    grad_clip = 1.0
    losses = []
    for iter_num in range(40):
        lr = 1e-2 * min(1.0, (iter_num + 1) / 10)
        for param_group in optimizer.param_groups:
            param_group['lr'] = lr
        X, Y = get_batch()
        logits, loss = model(X, Y)
        loss.backward()
        if grad_clip != 0.0:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    checkpoint = {'model': model.state_dict(), 'optimizer': optimizer.state_dict(), 'iter_num': iter_num,
                  'best_val_loss': min(losses), 'config': {'n_layer': 2}}
    torch.save(checkpoint, path)
    model = GPT(GPTConfig())
    state_dict = torch.load(path)['model']
    unwanted_prefix = '_orig_mod.'
    for k, v in list(state_dict.items()):
        if k.startswith(unwanted_prefix):
            state_dict[k[len(unwanted_prefix):]] = state_dict.pop(k)
    model.load_state_dict(state_dict)
    model.eval()
    sample = model.generate(torch.tensor(pattern[None, :4]), max_new_tokens=8, temperature=0.5, top_k=3)
    model.crop_block_size(8)
    logits, _ = model(torch.tensor(pattern[None, :8]))
    return {"tied": tied, "counts": counts, "n_params": model.get_num_params(), "losses": losses,
            "keys": list(state_dict)[:3], "sample": sample.shape, "cropped": logits.shape}


def test_nanogpt(tmp_path):
    ours, theirs = run_both(nanogpt, tmp_path / "ckpt.pt", compare=False)
    assert ours["tied"] and ours["keys"] == ["transformer.wte.weight", "transformer.wpe.weight",
                                             "transformer.h.0.ln_1.weight"]
    assert np.mean(ours["losses"][-5:]) < np.mean(ours["losses"][:5]) - 1
    assert tuple(ours["sample"]) == (1, 12) and tuple(ours["cropped"]) == (1, 1, 32)
    if theirs is not None:
        assert ours["counts"] == theirs["counts"] and ours["n_params"] == theirs["n_params"]


def torch_dot_nn_spelling(m):
    """Code that never imports nn or optim itself: torch.nn.Linear, torch.nn.functional.relu,
    torch.optim.AdamW and torch.nn.utils.clip_grad_norm_ reached through the torch module
    (nanoGPT's train.py builds its optimizer as torch.optim.AdamW)."""
    torch = m.torch
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss = torch.nn.functional.mse_loss(model(torch.ones(2, 3)), torch.zeros(2, 1))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return type(model).__name__


@pytest.mark.xfail(reason="core: autograd.nn / autograd.optim are not reachable from autograd (reported to the "
                          "lead: a PEP 562 __getattr__ importing them on first use)", strict=True)
def test_torch_dot_nn_spelling():
    ours, _ = run_both(torch_dot_nn_spelling)
    assert ours == "Sequential"


def seq2seq_attention(m, weights):
    """'NLP From Scratch: translation with a sequence to sequence network and attention': a GRU
    encoder, Bahdanau attention with torch.bmm, greedy decoding with topk, teacher forcing."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    SOS_token, MAX_LENGTH, device = 0, 5, "cpu"

    class EncoderRNN(nn.Module):
        def __init__(self, input_size, hidden_size, dropout_p=0.1):
            super(EncoderRNN, self).__init__()
            self.hidden_size = hidden_size
            self.embedding = nn.Embedding(input_size, hidden_size)
            self.gru = nn.GRU(hidden_size, hidden_size, batch_first=True)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, input):
            embedded = self.dropout(self.embedding(input))
            output, hidden = self.gru(embedded)
            return output, hidden

    class BahdanauAttention(nn.Module):
        def __init__(self, hidden_size):
            super(BahdanauAttention, self).__init__()
            self.Wa = nn.Linear(hidden_size, hidden_size)
            self.Ua = nn.Linear(hidden_size, hidden_size)
            self.Va = nn.Linear(hidden_size, 1)

        def forward(self, query, keys):
            scores = self.Va(torch.tanh(self.Wa(query) + self.Ua(keys)))
            scores = scores.squeeze(2).unsqueeze(1)
            weights = F.softmax(scores, dim=-1)
            context = torch.bmm(weights, keys)
            return context, weights

    class AttnDecoderRNN(nn.Module):
        def __init__(self, hidden_size, output_size, dropout_p=0.1):
            super(AttnDecoderRNN, self).__init__()
            self.embedding = nn.Embedding(output_size, hidden_size)
            self.attention = BahdanauAttention(hidden_size)
            self.gru = nn.GRU(2 * hidden_size, hidden_size, batch_first=True)
            self.out = nn.Linear(hidden_size, output_size)
            self.dropout = nn.Dropout(dropout_p)

        def forward(self, encoder_outputs, encoder_hidden, target_tensor=None):
            batch_size = encoder_outputs.size(0)
            decoder_input = torch.empty(batch_size, 1, dtype=torch.long, device=device).fill_(SOS_token)
            decoder_hidden = encoder_hidden
            decoder_outputs = []
            attentions = []
            for i in range(MAX_LENGTH):
                decoder_output, decoder_hidden, attn_weights = self.forward_step(
                    decoder_input, decoder_hidden, encoder_outputs)
                decoder_outputs.append(decoder_output)
                attentions.append(attn_weights)
                if target_tensor is not None:
                    decoder_input = target_tensor[:, i].unsqueeze(1)  # Teacher forcing
                else:
                    _, topi = decoder_output.topk(1)
                    decoder_input = topi.squeeze(-1).detach()  # detach from history as input
            decoder_outputs = torch.cat(decoder_outputs, dim=1)
            decoder_outputs = F.log_softmax(decoder_outputs, dim=-1)
            attentions = torch.cat(attentions, dim=1)
            return decoder_outputs, decoder_hidden, attentions

        def forward_step(self, input, hidden, encoder_outputs):
            embedded = self.dropout(self.embedding(input))
            query = hidden.permute(1, 0, 2)
            context, attn_weights = self.attention(query, encoder_outputs)
            input_gru = torch.cat((embedded, context), dim=2)
            output, hidden = self.gru(input_gru, hidden)
            output = self.out(output)
            return output, hidden, attn_weights

    encoder, decoder = EncoderRNN(8, 16), AttnDecoderRNN(16, 8)
    if weights is None:
        return {"encoder." + k: v for k, v in encoder.state_dict().items()} | {
            "decoder." + k: v for k, v in decoder.state_dict().items()}
    load(m, encoder, {k[8:]: v for k, v in weights.items() if k.startswith("encoder.")})
    load(m, decoder, {k[8:]: v for k, v in weights.items() if k.startswith("decoder.")})
    input_tensor = torch.tensor([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1], [2, 3, 4, 5, 6], [7, 6, 5, 4, 3]])
    target_tensor = input_tensor[:, [4, 3, 2, 1, 0]]
    encoder_optimizer = optim.Adam(encoder.parameters(), lr=0.01)
    decoder_optimizer = optim.Adam(decoder.parameters(), lr=0.01)
    criterion = nn.NLLLoss()
    losses = []
    for epoch in range(30):
        encoder_optimizer.zero_grad()
        decoder_optimizer.zero_grad()
        encoder_outputs, encoder_hidden = encoder(input_tensor)
        decoder_outputs, _, _ = decoder(encoder_outputs, encoder_hidden, target_tensor)
        loss = criterion(decoder_outputs.view(-1, decoder_outputs.size(-1)), target_tensor.view(-1))
        loss.backward()
        encoder_optimizer.step()
        decoder_optimizer.step()
        losses.append(loss.item())
    encoder.eval()
    decoder.eval()
    with torch.no_grad():
        encoder_outputs, encoder_hidden = encoder(input_tensor)
        decoder_outputs, decoder_hidden, decoder_attn = decoder(encoder_outputs, encoder_hidden)
        _, topi = decoder_outputs.topk(1)
        decoded_ids = topi.squeeze()
    return {"losses": losses, "decoded": decoded_ids, "attn": decoder_attn.sum(-1)}


def test_seq2seq_attention():
    autograd.manual_seed(0)
    weights = {k: v.numpy() for k, v in seq2seq_attention(OURS, None).items()}
    ours, _ = run_both(seq2seq_attention, weights, compare=False)
    assert ours["losses"][-1] < ours["losses"][0] / 2
    np.testing.assert_allclose(ours["attn"], 1, rtol=1e-5)
    assert ours["decoded"].shape == (4, 5)


# ----------------------------------------------------------------------------------------------
# Training-loop utilities: schedulers, gradient clipping, parameter counting, checkpoints
# ----------------------------------------------------------------------------------------------

def schedulers(m, weights):
    torch, nn, optim = m.torch, m.nn, m.optim
    lrs = {}
    for name in ["step", "multistep", "exponential", "cosine", "lambda", "plateau"]:
        model = load(m, nn.Linear(3, 1), weights)
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = {
            "step": lambda: optim.lr_scheduler.StepLR(optimizer, step_size=3, gamma=0.5),
            "multistep": lambda: optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 5], gamma=0.1),
            "exponential": lambda: optim.lr_scheduler.ExponentialLR(optimizer, gamma=0.9),
            "cosine": lambda: optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=8, eta_min=0.001),
            "lambda": lambda: optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda epoch: 0.95 ** epoch),
            "plateau": lambda: optim.lr_scheduler.ReduceLROnPlateau(optimizer, 'min', patience=1, factor=0.5),
        }[name]()
        x, y = torch.ones(4, 3), torch.zeros(4, 1)
        seen = []
        for epoch in range(8):
            optimizer.zero_grad()
            loss = nn.functional.mse_loss(model(x), y)
            loss.backward()
            optimizer.step()
            if name == "plateau":
                scheduler.step(1.0)  # a validation loss that never improves
            else:
                scheduler.step()
            seen.append(optimizer.param_groups[0]['lr'])
        if name != "plateau":
            seen.append(scheduler.get_last_lr()[0])
        lrs[name] = seen
    return lrs


def test_schedulers():
    ours, _ = run_both(schedulers, weights_of(lambda m: m.nn.Linear(3, 1)), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(ours["step"][:6], [0.1, 0.1, 0.05, 0.05, 0.05, 0.025])


def lbfgs_closure(m, weights):
    """LBFGS needs a closure that re-evaluates the loss (the optim docs' pattern)."""
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, nn.Linear(3, 1), weights)
    x = torch.linspace(-1, 1, 30).reshape(10, 3)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    loss_fn = nn.MSELoss()
    optimizer = optim.LBFGS(model.parameters(), lr=1, max_iter=20, history_size=10, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        return loss

    losses = [optimizer.step(closure).item() for _ in range(3)]
    return {"losses": losses, "final": loss_fn(model(x), y).item()}


def test_lbfgs_closure():
    ours, _ = run_both(lbfgs_closure, weights_of(lambda m: m.nn.Linear(3, 1)), rtol=1e-3, atol=1e-6)
    assert ours["final"] < 1e-6


def fine_tuning_param_groups(m, weights):
    """Per-layer learning rates (a backbone and a head), weight decay, nesterov momentum,
    OneCycleLR stepped per batch, and the lr of each group read back."""
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)), weights)
    backbone, head = model[0], model[2]
    optimizer = optim.SGD([
        {'params': backbone.parameters(), 'lr': 1e-3},
        {'params': head.parameters()},
    ], lr=1e-2, momentum=0.9, nesterov=True, weight_decay=5e-4)
    scheduler = optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[1e-2, 1e-1], total_steps=12)
    x = torch.linspace(-1, 1, 32).reshape(8, 4)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 1, 0])
    lrs, losses = [], []
    for step in range(12):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        scheduler.step()
        lrs.append([group['lr'] for group in optimizer.param_groups])
        losses.append(loss.item())
    return {"lrs": lrs, "losses": losses, "state": model.state_dict()}


def test_fine_tuning_param_groups():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 8), m.nn.ReLU(), m.nn.Linear(8, 2)))
    ours, _ = run_both(fine_tuning_param_groups, weights, rtol=1e-5, atol=1e-7)
    assert max(lr[1] for lr in ours["lrs"]) <= 0.1 + 1e-12 and ours["losses"][-1] < ours["losses"][0]


def gradient_clipping(m, weights):
    torch, nn = m.torch, m.nn
    model = load(m, nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)), weights)
    loss = (model(torch.ones(3, 4) * 10) ** 2).sum() * 100
    loss.backward()
    before = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    total_norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    after = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    nn.utils.clip_grad_value_(model.parameters(), clip_value=0.01)
    biggest = max(p.grad.abs().max().item() for p in model.parameters())
    return {"before": before, "total_norm": total_norm, "after": after, "biggest": biggest}


def test_gradient_clipping():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(4, 8), m.nn.Tanh(), m.nn.Linear(8, 2)))
    ours, _ = run_both(gradient_clipping, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["total_norm"], ours["before"], rtol=1e-6)
    np.testing.assert_allclose(ours["after"], 1.0, rtol=1e-5)
    assert ours["biggest"] <= 0.01


def parameter_counting(m):
    nn = m.nn
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 10))
    rnn = nn.LSTM(10, 20, num_layers=2, bidirectional=True)
    emb = nn.Embedding(100, 16)
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model[0].weight.requires_grad_(False)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    names = [name for name, _ in model.named_parameters()]
    shapes = {name: tuple(p.shape) for name, p in rnn.named_parameters()}
    buffers = [name for name, _ in model.named_buffers()]
    state = list(model.state_dict().keys())
    return {"total": total, "trainable": trainable, "frozen": frozen, "names": names,
            "rnn": sum(p.numel() for p in rnn.parameters()), "shapes": shapes,
            "emb": sum(p.numel() for p in emb.parameters()), "buffers": buffers, "state": state,
            "children": len(list(model.children())), "modules": len(list(model.modules()))}


def test_parameter_counting():
    ours, _ = run_both(parameter_counting)
    assert ours["total"] == 3 * 8 * 9 + 8 + 16 + 288 * 10 + 10 and ours["frozen"] == 216


def checkpoints(m, weights, path):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 1)), weights)
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    x, y = torch.linspace(-1, 1, 24).reshape(8, 3), torch.ones(8, 1)
    for epoch in range(3):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
    torch.save({
        'epoch': epoch,
        'model_state_dict': model.state_dict(),
        'optimizer_state_dict': optimizer.state_dict(),
        'loss': loss,
    }, path)
    model2 = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.BatchNorm1d(4), nn.Linear(4, 1))
    optimizer2 = optim.Adam(model2.parameters(), lr=0.5)
    checkpoint = torch.load(path, weights_only=True)
    model2.load_state_dict(checkpoint['model_state_dict'])
    optimizer2.load_state_dict(checkpoint['optimizer_state_dict'])
    epoch2 = checkpoint['epoch']
    loss2 = checkpoint['loss']
    model2.train()
    trajectories = []
    for mod, opt in [(model, optimizer), (model2, optimizer2)]:
        opt.zero_grad()
        nn.functional.mse_loss(mod(x), y).backward()
        opt.step()
        trajectories.append(mod.state_dict())
    model2.eval()
    tensor_path = str(path) + ".t"
    t = torch.arange(6.0).reshape(2, 3)
    torch.save([t, {"a": t[0]}], tensor_path)
    loaded = torch.load(tensor_path)
    return {"epoch": epoch2, "loss": (loss2.item(), loss.item()), "lr": optimizer2.param_groups[0]["lr"],
            "same": trajectories[0], "same2": trajectories[1], "loaded": loaded,
            "eval_out": model2(x), "running_mean": model2[2].running_mean}


def save_load_tutorial(m, weights, path):
    """The 'Save and Load the Model' tutorial: weights through state_dict, then the entire model
    (pickled: torch.load needs weights_only=False, and refuses without it)."""
    torch, nn = m.torch, m.nn
    model = load(m, nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), weights)
    torch.save(model.state_dict(), str(path) + '.weights')
    model2 = nn.Sequential(nn.Flatten(), nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    model2.load_state_dict(torch.load(str(path) + '.weights', weights_only=True))
    model2.eval()
    torch.save(model, path)
    try:
        torch.load(path, weights_only=True)
        refused = False
    except Exception as error:  # PyTorch raises pickle.UnpicklingError
        refused = type(error).__name__ == "UnpicklingError"
    model3 = torch.load(path, weights_only=False)
    x = torch.linspace(-1, 1, 8).reshape(2, 2, 2)
    return {"same": (model2(x), model3(x), model(x)), "refused": refused, "type": type(model3).__name__,
            "children": len(list(model3.children())), "trainable": model3[1].weight.requires_grad}


@pytest.mark.xfail(reason="design: autograd.save refuses whole modules (no pickle); reported to the lead",
                   strict=True)
def test_save_load_tutorial(tmp_path):
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Flatten(), m.nn.Linear(4, 3), m.nn.ReLU(), m.nn.Linear(3, 2)))
    ours, _ = run_both(save_load_tutorial, weights, tmp_path / "model.pth")
    np.testing.assert_array_equal(ours["same"][0], ours["same"][2])
    np.testing.assert_array_equal(ours["same"][1], ours["same"][2])
    assert ours["refused"] and ours["type"] == "Sequential" and ours["trainable"]


def test_checkpoints(tmp_path):
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(3, 4), m.nn.ReLU(), m.nn.BatchNorm1d(4),
                                                   m.nn.Linear(4, 1)))
    ours, _ = run_both(checkpoints, weights, tmp_path / "ckpt.tar", rtol=1e-5, atol=1e-6)
    assert ours["epoch"] == 2 and ours["lr"] == 0.01 and ours["loss"][0] == ours["loss"][1]
    assert_same(ours["same"], ours["same2"], rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# Regressions found by the programs above
# ----------------------------------------------------------------------------------------------

def test_numpy_keyword_aliases():
    """d2l writes y_hat.argmax(axis=1): PyTorch takes NumPy's axis / keepdims for dim / keepdim."""
    x = autograd.tensor([[1.0, 3.0], [4.0, 2.0]])
    assert x.argmax(axis=1).tolist() == [1, 0] and autograd.argmax(x, axis=0).tolist() == [1, 0]
    assert x.max(axis=1).indices.tolist() == [1, 0]
    assert x.std(axis=0, keepdims=True).shape == (1, 2)
    np.testing.assert_allclose(x.softmax(axis=1).sum(1).numpy(), 1, rtol=1e-6)
    with pytest.raises(TypeError, match="alias"):
        x.argmax(dim=1, axis=1)


def test_state_dict_order_and_tied_weights():
    """PyTorch orders a state_dict module by module (parameters, then buffers) and saves a tied
    weight under each of its names, so its checkpoints load here and ours load there."""
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3), nn.Linear(3, 1))
    assert list(model.state_dict()) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean",
                                        "1.running_var", "1.num_batches_tracked", "2.weight", "2.bias"]
    assert list(model.state_dict(prefix="model."))[0] == "model.0.weight"
    assert model.state_dict(keep_vars=True)["0.weight"] is model[0].weight

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(5, 4)
            self.lm_head = nn.Linear(4, 5, bias=False)
            self.wte.weight = self.lm_head.weight  # nanoGPT's weight tying

    tied = Tied()
    assert list(tied.state_dict()) == ["wte.weight", "lm_head.weight"]
    tied.load_state_dict({"wte.weight": np.ones((5, 4), np.float32), "lm_head.weight": np.ones((5, 4), np.float32)})
    assert tied.wte.weight is tied.lm_head.weight and float(tied.wte.weight.sum()) == 20.0


def test_factories_take_size_keyword():
    """torch.zeros(size=(2, 3)) as well as zeros(2, 3) and zeros((2, 3))."""
    for factory in (autograd.zeros, autograd.ones, autograd.empty, autograd.rand, autograd.randn):
        assert factory(size=(2, 3)).shape == (2, 3) and factory(2, 3).shape == (2, 3)
        assert factory([4]).shape == (4,) and factory(size=4).shape == (4,)
        with pytest.raises(TypeError, match="size"):
            factory(2, size=(2, 3))
