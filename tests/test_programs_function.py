"""PyTorch tutorial programs about custom Functions, derivatives of whole functions, logging and
the NumPy bridge, run unchanged on chainrule (``torch`` is ``autograd``) and, where installed, on
PyTorch itself, with the results compared."""

import math

import numpy as np
import pytest

import autograd
import nn
import optim


def _torch():
    torch = pytest.importorskip("torch")
    return torch, torch.nn, torch.optim


def _numpy(t):
    return t.detach().numpy()


# -- "Defining new autograd functions" (PyTorch's polynomial_custom_function tutorial) --------------


def legendre_program(torch, steps=300):
    class LegendrePolynomial3(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return 0.5 * (5 * input**3 - 3 * input)

        @staticmethod
        def backward(ctx, grad_output):
            (input,) = ctx.saved_tensors
            return grad_output * 1.5 * (5 * input**2 - 1)

    dtype = torch.float
    x = torch.linspace(-math.pi, math.pi, 2000, dtype=dtype)
    y = torch.sin(x)
    a = torch.full((), 0.0, dtype=dtype, requires_grad=True)
    b = torch.full((), -1.0, dtype=dtype, requires_grad=True)
    c = torch.full((), 0.0, dtype=dtype, requires_grad=True)
    d = torch.full((), 0.3, dtype=dtype, requires_grad=True)
    learning_rate = 5e-6
    losses = []
    for t in range(steps):
        P3 = LegendrePolynomial3.apply
        y_pred = a + b * P3(c + d * x)
        loss = (y_pred - y).pow(2).sum()
        if t % 100 == 99:
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
    return losses, [p.item() for p in (a, b, c, d)]


def test_legendre_tutorial():
    losses, params = legendre_program(autograd)
    assert losses[-1] < losses[0]  # the fit improves
    assert losses[-1] < 0.5 * losses[0] and params[1] < -1.0
    try:
        torch, _, _ = _torch()
    except pytest.skip.Exception:
        return
    their_losses, their_params = legendre_program(torch)
    np.testing.assert_allclose(losses, their_losses, rtol=1e-4)
    np.testing.assert_allclose(params, their_params, rtol=1e-4, atol=1e-6)


# -- an exp with save_for_backward, and the tutorial's MyReLU in a two-layer net --------------------


def exp_and_relu_program(torch, nn, optim):
    class MyExp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, i):
            result = i.exp()
            ctx.save_for_backward(result)
            return result

        @staticmethod
        def backward(ctx, grad_output):
            (result,) = ctx.saved_tensors
            return grad_output * result

    class MyReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return input.clamp(min=0)

        @staticmethod
        def backward(ctx, grad_output):
            (input,) = ctx.saved_tensors
            grad_input = grad_output.clone()
            grad_input[input < 0] = 0
            return grad_input

    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((16, 3)), dtype=torch.float32)
    y = torch.tensor(rng.standard_normal((16, 1)), dtype=torch.float32)
    w1 = torch.tensor(rng.standard_normal((3, 8)) * 0.5, dtype=torch.float32, requires_grad=True)
    w2 = torch.tensor(rng.standard_normal((8, 1)) * 0.5, dtype=torch.float32, requires_grad=True)
    optimizer = optim.SGD([w1, w2], lr=0.05)
    losses = []
    for _ in range(20):
        hidden = MyReLU.apply(x @ w1)
        y_pred = hidden @ w2
        loss = (y_pred - y).pow(2).mean() + 1e-3 * MyExp.apply(w2).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, _numpy(w1), _numpy(w2)


def test_exp_and_relu_functions_train_a_net():
    losses, w1, w2 = exp_and_relu_program(autograd, nn, optim)
    assert losses[-1] < losses[0]
    try:
        torch, torch_nn, torch_optim = _torch()
    except pytest.skip.Exception:
        return
    their_losses, their_w1, their_w2 = exp_and_relu_program(torch, torch_nn, torch_optim)
    np.testing.assert_allclose(losses, their_losses, rtol=1e-5)
    np.testing.assert_allclose(w1, their_w1, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w2, their_w2, rtol=1e-5, atol=1e-6)


# -- jacobian and hessian: one Newton step minimises a quadratic --------------------------------------


def newton_program(torch):
    from_numpy = torch.from_numpy
    A = np.array([[3.0, 1.0], [1.0, 2.0]])
    b = np.array([1.0, -1.0])

    def f(x):
        return 0.5 * (x @ from_numpy(A) @ x) - (from_numpy(b) * x).sum()

    x = torch.zeros(2, dtype=torch.float64)
    for _ in range(2):
        gradient = torch.autograd.functional.jacobian(f, x)
        H = torch.autograd.functional.hessian(f, x)
        x = x - from_numpy(np.linalg.solve(H.numpy(), gradient.numpy()))
    _, hv = torch.autograd.functional.hvp(f, x, torch.ones(2, dtype=torch.float64))
    return x.numpy(), H.numpy(), hv.numpy(), f(x).item()


def test_newton_with_jacobian_and_hessian():
    x, H, hv, value = newton_program(autograd)
    A, b = np.array([[3.0, 1.0], [1.0, 2.0]]), np.array([1.0, -1.0])
    np.testing.assert_allclose(H, A)
    np.testing.assert_allclose(x, np.linalg.solve(A, b))
    np.testing.assert_allclose(hv, A @ np.ones(2))
    try:
        torch, _, _ = _torch()
    except pytest.skip.Exception:
        return
    theirs = newton_program(torch)
    for ours_part, their_part in zip((x, H, hv, value), theirs):
        np.testing.assert_allclose(ours_part, their_part, rtol=1e-12)


# -- logging with f"{loss:.4f}" -------------------------------------------------------------------


def logging_program(torch, nn, optim, state):
    model = nn.Linear(3, 1)
    model.load_state_dict(state)
    loss_fn = nn.MSELoss()
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.standard_normal((32, 3)), dtype=torch.float32)
    y = torch.tensor(rng.standard_normal((32, 1)), dtype=torch.float32)
    lines = []
    for epoch in range(5):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        lines.append(f"epoch {epoch}: loss {loss:.4f} ({loss.item():>8.3e})")
    return lines


def test_loss_logging_with_format_spec():
    state = {"weight": np.array([[0.1, -0.2, 0.3]], dtype=np.float32), "bias": np.array([0.05], dtype=np.float32)}
    lines = logging_program(autograd, nn, optim, state)
    assert len(lines) == 5 and all(line.startswith(f"epoch {i}: loss ") for i, line in enumerate(lines))
    first = float(lines[0].split()[3])
    assert first == round(first, 4) and len(lines[0].split()[3].split(".")[1]) == 4
    try:
        torch, torch_nn, torch_optim = _torch()
    except pytest.skip.Exception:
        return
    theirs = logging_program(torch, torch_nn, torch_optim, {k: torch.from_numpy(v) for k, v in state.items()})
    assert lines == theirs


# -- the NumPy bridge ("Tensors" tutorial) ---------------------------------------------------------


def numpy_bridge_program(torch):
    t = torch.ones(5)
    n = t.numpy()
    t.add_(1)  # a change in the tensor reflects in the NumPy array
    first = n.tolist()
    n = np.ones(5)
    t = torch.from_numpy(n)
    np.add(n, 1, out=n)  # and the other way
    return first, f"{t}", t.tolist(), t.dtype.__str__().replace("torch.", "")


def test_numpy_bridge():
    first, text, values, dtype = numpy_bridge_program(autograd)
    assert first == [2.0] * 5 and values == [2.0] * 5 and dtype == "float64"
    assert text.startswith("tensor([2., 2., 2., 2., 2.]") and "float64" in text
    try:
        torch, _, _ = _torch()
    except pytest.skip.Exception:
        return
    their_first, _, their_values, their_dtype = numpy_bridge_program(torch)
    assert (first, values, dtype) == (their_first, their_values, their_dtype)
