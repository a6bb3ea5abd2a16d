# ruff: noqa: E731  (the programs are kept as their authors wrote them)
"""Extending PyTorch as tutorials and libraries do (see tests/pytorch_programs.py), each program run on chainrule and
on PyTorch and compared: values, gradients, printed text and errors. Custom operators in use: an op inside an
``nn.Module`` trained with Adam, then run under ``no_grad`` / ``inference_mode``; ``torch.ops.<ns>.<op>.default``;
ops under ``torch.func.vmap`` (with and without ``register_vmap``) and ``grad``/``jacrev``; the older
``torch.library.Library(ns, "DEF").define/impl`` API (a CPU kernel, a CompositeImplicitAutograd kernel,
``torch.library.define``/``impl`` with ``register_autograd``, an in-place op, two outputs with a fake function)."""

import warnings

import numpy as np

from .probe13_extend_common import NS, sub
from .pytorch_programs import OURS, run_both


def module_trained_with_adam(m):
    torch, nn = m.torch, m.nn

    @torch.library.custom_op(f"{NS}::numpy_linear", mutates_args=())
    def numpy_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(x.numpy() @ weight.numpy().T + bias.numpy())

    @numpy_linear.register_fake
    def _(x, weight, bias):
        return x.new_empty(x.shape[0], weight.shape[0])

    def setup_context(ctx, inputs, output):
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)

    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad @ weight if ctx.needs_input_grad[0] else None
        return grad_x, grad.t() @ x, grad.sum(0)

    torch.library.register_autograd(f"{NS}::numpy_linear", backward, setup_context=setup_context)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.tensor(np.linspace(-1, 1, 12).reshape(4, 3).astype(np.float32)))
            self.bias = nn.Parameter(torch.zeros(4))
            self.out = nn.Linear(4, 1)
            with torch.no_grad():
                self.out.weight.copy_(torch.tensor([[0.1, -0.2, 0.3, 0.4]]))
                self.out.bias.fill_(0.05)

        def forward(self, x):
            return self.out(torch.tanh(getattr(torch.ops, NS).numpy_linear(x, self.weight, self.bias)))

    net = Net()
    opt = m.optim.Adam(net.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.standard_normal((16, 3)).astype(np.float32))
    Y = torch.tensor(rng.standard_normal((16, 1)).astype(np.float32))
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = ((net(X) - Y) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.inference_mode():
        y_inference = net(X)
    with torch.no_grad():
        y_no_grad = net(X)
    return np.array(losses), net.weight, net.bias, y_inference, y_no_grad.requires_grad, y_inference.requires_grad


def test_an_operator_inside_a_module_trained_with_adam():
    ours, _ = run_both(module_trained_with_adam, rtol=1e-4, atol=1e-6)
    assert ours[0][-1] < ours[0][0] and ours[4] is False and ours[5] is False


def under_vmap(m):
    torch = m.torch
    func = sub(m, "func")

    @torch.library.custom_op(f"{NS}::center", mutates_args=())
    def center(x: torch.Tensor) -> torch.Tensor:
        a = x.numpy()
        return torch.from_numpy(a - a.mean())

    x = torch.tensor(np.arange(6.0).reshape(2, 3) ** 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (PyTorch warns that it loops, without a batching rule)
        looped = func.vmap(center)(x), func.vmap(center, in_dims=1)(x)

    @center.register_vmap
    def _(info, in_dims, x):
        (x_bdim,) = in_dims
        a = x.movedim(x_bdim, 0).numpy()
        return torch.from_numpy(a - a.mean(-1, keepdims=True)), 0

    ruled = func.vmap(center)(x), func.vmap(center, in_dims=1)(x)
    return looped, ruled


def test_an_operator_under_vmap_with_and_without_a_batching_rule():
    ours, _ = run_both(under_vmap)
    x = np.arange(6.0).reshape(2, 3) ** 2
    np.testing.assert_allclose(ours[0][0], x - x.mean(1, keepdims=True))
    np.testing.assert_allclose(ours[1][1], (x - x.mean(0)).T)


def numpy_op_in_inference_mode(m):
    torch = m.torch

    @torch.library.custom_op(f"{NS}::numpy_exp", mutates_args=())
    def numpy_exp(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(np.exp(x.numpy()))

    with torch.inference_mode():
        y = numpy_exp(torch.zeros(2))
    return y, y.is_inference()


def test_an_operator_wrapping_numpy_makes_inference_tensors():
    ours, _ = run_both(numpy_op_in_inference_mode)
    assert ours[1] is True


def test_an_operator_under_grad_and_jacrev():
    """PyTorch 2.13 refuses these (its generated Function has no setup_context); chainrule differentiates through
    the registered formula: checked by hand."""
    torch, func = OURS.torch, sub(OURS, "func")

    @torch.library.custom_op(f"{NS}::cube", mutates_args=())
    def cube(x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(x.numpy() ** 3)

    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(inputs[0])

    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * 3 * x * x

    cube.register_autograd(backward, setup_context=setup_context)
    x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    np.testing.assert_allclose(func.grad(lambda t: cube(t).sum())(x).numpy(), [0.75, 3.0, 12.0])
    np.testing.assert_allclose(func.jacrev(cube)(x).numpy(), np.diag([0.75, 3.0, 12.0]))


# ----------------------------------------------------------------------------------------------
# The older API: torch.library.Library(ns, "DEF").define / impl
# ----------------------------------------------------------------------------------------------


def library_define_impl(m):
    torch = m.torch
    ns = f"{NS}_old"
    ops = lambda: getattr(torch.ops, ns)
    lib = torch.library.Library(ns, "DEF")
    out = [repr(lib), lib.define("mysin(Tensor x, float scale=1.0, *, bool neg=False) -> Tensor")]

    def mysin_cpu(inp, s=1.0, *, neg=False):
        r = np.sin(inp.detach().numpy()) * s
        return torch.from_numpy(-r if neg else r)

    lib.impl("mysin", mysin_cpu, "CPU")
    x = torch.tensor([0.5, 1.0], requires_grad=True)
    y = ops().mysin(x, 2.0, neg=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y.sum().backward()  # (no autograd kernel: PyTorch warns and gives no gradient)
    out += [y.detach(), x.grad is None, any("an autograd kernel was not registered" in str(w.message) for w in caught),
            ops().mysin(x.detach())]
    try:
        ops().mysin()
    except RuntimeError as e:
        out.append(str(e).split("Declaration")[0])

    lib.define("cube(Tensor x) -> Tensor")
    lib.impl("cube", lambda x: x * x * x, "CompositeImplicitAutograd")
    z = ops().cube(x)
    z.sum().backward()
    out.append(x.grad)

    torch.library.define(f"{ns}::double", "(Tensor x) -> Tensor")

    @torch.library.impl(f"{ns}::double", "cpu")
    def _(x):
        return x.detach() * 2

    torch.library.register_autograd(f"{ns}::double", lambda ctx, grad: grad * 2)
    x.grad = None
    ops().double(x).sum().backward()
    out.append(x.grad)

    lib.define("noimpl(Tensor x) -> Tensor")
    for bad in [lambda: ops().noimpl(x), lambda: lib.define("mysin(Tensor x) -> Tensor"),
                lambda: torch.library.define(f"{ns}::bad", "Tensor x -> Tensor")]:
        try:
            bad()
        except (NotImplementedError, RuntimeError, ValueError) as e:
            out.append(f"{type(e).__name__}: {str(e)[:90]}")

    fragment = torch.library.Library(ns, "FRAGMENT")
    fragment.define("add_k_(Tensor(a!) x, int k) -> ()")

    def add_k(x, k):
        x.add_(k)

    fragment.impl("add_k_", add_k, "CPU")
    t = torch.zeros(2)
    ops().add_k_(t, 3)
    out.append(t)

    fragment.define("scale2(Tensor x) -> (Tensor, Tensor)")

    @torch.library.impl(fragment, "scale2", "CompositeExplicitAutograd")
    def _(x):
        return x * 2, x * 3

    @torch.library.register_fake(f"{ns}::scale2")
    def _(x):
        return torch.empty_like(x), torch.empty_like(x)

    out += [ops().scale2(torch.ones(2)), str(ops().scale2.default),
            str(torch.library.opcheck(ops().scale2.default, (torch.ones(2),),
                                      test_utils=("test_schema", "test_faketensor")))]
    return out


def test_the_older_library_define_impl_api():
    ours, _ = run_both(library_define_impl)
    np.testing.assert_allclose(ours[2], -2 * np.sin([0.5, 1.0]), rtol=1e-6)
    assert ours[3] is True and ours[4] is True
    np.testing.assert_allclose(ours[7], [0.75, 3.0])
