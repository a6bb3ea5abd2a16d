# ruff: noqa: B007, B023, E741, UP004, UP008, UP032, UP034, E731, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch programs, run unchanged but for their imports (see tests/pytorch_programs.py): each is
a function of the modules it imports (``torch`` is ``autograd``, ``nn``, ``F``, ``optim``, ``data``),
run on chainrule and, where PyTorch is installed, on PyTorch, comparing the numbers.

PyTorch's tensors and autograd tutorials."""


import numpy as np

from .pytorch_programs import load, run_both, weights_of

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
