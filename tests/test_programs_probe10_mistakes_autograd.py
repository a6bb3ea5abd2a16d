"""A new user's first hour: short programs that each make one mistake people really make, run as
tests/probe10_mistakes_common.py says. Autograd: backward twice through an unrolled RNN (and the loop with detach), a
non-scalar backward, backward under no_grad, forgotten zero_grad, a scaled "leaf", manual updates (outside no_grad,
rebinding the name, under no_grad with zeroing), in-place writes over saved outputs and in-place ReLUs, detach;
``item`` of per-example losses, ``requires_grad`` on integer labels, indexing a loss as old tutorials do,
``torch.tensor`` of a tensor."""

import warnings

import numpy as np

from tests.program_errors import raises_alike
from tests.pytorch_programs import load, weights_of

from .probe10_mistakes_common import IMAGES, LABELS, _same, warns_alike

# -- autograd ---------------------------------------------------------------------------------------------


def test_an_rnn_hidden_state_carried_over_without_detach():
    def program(m):
        rnn = m.nn.RNN(2, 3)
        hidden = m.torch.zeros(1, 1, 3)
        for _ in range(2):  # the second backward runs into the first chunk's freed graph
            out, hidden = rnn(m.torch.ones(4, 1, 2), hidden)
            out.sum().backward()

    raises_alike(program, "backward through the graph a second time", kind=RuntimeError)


def test_the_same_rnn_loop_with_detach_trains():
    weights = weights_of(lambda m: m.nn.RNN(2, 3))

    def program(m):
        rnn = load(m, m.nn.RNN(2, 3), weights)
        optimizer = m.optim.SGD(rnn.parameters(), lr=0.1)
        hidden = m.torch.zeros(1, 1, 3)
        for step in range(3):
            out, hidden = rnn(m.torch.full((4, 1, 2), float(step)), hidden.detach())
            optimizer.zero_grad()
            (out ** 2).mean().backward()
            optimizer.step()
        return out, rnn.weight_hh_l0

    out, trained = _same(program, rtol=1e-5, atol=1e-6)
    assert out.shape == (4, 1, 3) and not np.allclose(trained, weights["weight_hh_l0"])


def test_backward_of_a_loss_left_unreduced():
    def program(m):
        prediction = m.nn.Linear(3, 1)(m.torch.ones(4, 3))
        (prediction - m.torch.ones(4, 1)).pow(2).backward()  # forgot .mean()

    error = raises_alike(program, "grad can be implicitly created only for scalar outputs", kind=RuntimeError)
    assert "(4, 1)" in str(error)


def test_backward_of_a_loss_computed_under_no_grad():
    def program(m):
        model = m.nn.Linear(3, 1)
        with m.torch.no_grad():  # an evaluation block pasted around the training step
            loss = model(m.torch.ones(4, 3)).mean()
        loss.backward()

    raises_alike(program, "does not require grad", kind=RuntimeError)


def test_forgetting_zero_grad_accumulates_the_gradients():
    weights = weights_of(lambda m: m.nn.Linear(64, 3))

    def program(m):
        model = load(m, m.nn.Sequential(m.nn.Flatten(), m.nn.Linear(64, 3)),
                     {"1." + k: v for k, v in weights.items()})
        optimizer = m.optim.SGD(model.parameters(), lr=0.1)
        grad_norms = []
        for _ in range(3):
            loss = m.F.cross_entropy(model(m.torch.tensor(IMAGES)), m.torch.tensor(LABELS))
            loss.backward()  # no optimizer.zero_grad()
            grad_norms.append(model[1].weight.grad.norm().item())
            optimizer.step()
        return grad_norms, model[1].weight

    _same(program, rtol=1e-5, atol=1e-6)

    def without_steps(m):
        model = load(m, m.nn.Sequential(m.nn.Flatten(), m.nn.Linear(64, 3)),
                     {"1." + k: v for k, v in weights.items()})
        grads = []
        for _ in range(3):
            m.F.cross_entropy(model(m.torch.tensor(IMAGES)), m.torch.tensor(LABELS)).backward()
            grads.append(model[1].weight.grad.clone())
        return grads

    first, second, third = _same(without_steps)
    np.testing.assert_allclose(second, 2 * first, rtol=1e-6)
    np.testing.assert_allclose(third, 3 * first, rtol=1e-6)


def test_a_weight_scaled_after_requires_grad_is_no_leaf():
    def program(m):  # torch.randn(..., requires_grad=True) * 0.01 is the product's output, not a leaf
        w = m.torch.randn(3, 1, requires_grad=True) * 0.01
        (m.torch.ones(2, 3) @ w).sum().backward()
        return w.is_leaf, w.grad

    assert warns_alike(program, "not a leaf Tensor is being accessed") == (False, None)


def test_a_manual_update_outside_no_grad():
    def program(m):
        w = m.torch.ones(3, requires_grad=True)
        (w * w).sum().backward()
        w -= 0.1 * w.grad

    raises_alike(program, "a leaf Variable that requires grad is being used in an in-place operation",
                 kind=RuntimeError)


def test_a_manual_update_that_rebinds_the_name_loses_the_gradient_next_step():
    def program(m):
        w = m.torch.ones(3, requires_grad=True)
        for _ in range(2):
            (w * w).sum().backward()
            w = w - 0.1 * w.grad  # a new non-leaf tensor: its .grad stays None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the non-leaf .grad warning; the TypeError is what ends the program)
        raises_alike(program, "NoneType", kind=TypeError)


def test_a_manual_update_under_no_grad_with_zeroing():
    def program(m):
        w = m.torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
        for _ in range(3):
            ((w - 1) ** 2).sum().backward()
            with m.torch.no_grad():
                w -= 0.25 * w.grad
                w.grad.zero_()
        return w

    np.testing.assert_allclose(_same(program), [1.0, -2.0 + 3 * 0.875, 0.5 + 0.5 * 0.875], rtol=1e-6)


def test_an_in_place_write_over_an_output_saved_for_backward():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        y = x.sigmoid()
        y.mul_(2)  # sigmoid's backward needs its output
        y.sum().backward()

    error = raises_alike(program, "modified by an inplace operation", kind=RuntimeError)
    assert "Sigmoid" in str(error)


def test_an_in_place_relu_after_a_sigmoid_layer():
    def program(m):
        net = m.nn.Sequential(m.nn.Linear(2, 2), m.nn.Sigmoid(), m.nn.ReLU(inplace=True))
        net(m.torch.ones(1, 2)).sum().backward()

    raises_alike(program, "modified by an inplace operation", kind=RuntimeError)


def test_an_in_place_relu_after_a_linear_layer_is_fine():
    weights = weights_of(lambda m: m.nn.Sequential(m.nn.Linear(2, 3), m.nn.ReLU(), m.nn.Linear(3, 1)))

    def program(m):
        grads = []
        for inplace in (True, False):
            net = load(m, m.nn.Sequential(m.nn.Linear(2, 3), m.nn.ReLU(inplace=inplace), m.nn.Linear(3, 1)), weights)
            net(m.torch.tensor([[1.0, -2.0]])).sum().backward()
            grads.append([p.grad for p in net.parameters()])
        return grads

    in_place, out_of_place = _same(program)
    for a, b in zip(in_place, out_of_place):
        np.testing.assert_array_equal(a, b)


def test_a_detached_copy_gets_the_gradient_not_the_original():
    def program(m):
        x = m.torch.ones(2, requires_grad=True)
        y = x.detach().requires_grad_()
        (y * 3).sum().backward()
        return x.grad, y.grad

    x_grad, y_grad = _same(program)
    assert x_grad is None and list(y_grad) == [3, 3]


def test_item_of_per_example_losses():
    def program(m):
        losses = m.F.cross_entropy(m.torch.zeros(4, 3), m.torch.tensor(LABELS), reduction="none")
        return losses.item()

    error = raises_alike(program, "a Tensor with 4 elements cannot be converted to Scalar", kind=RuntimeError)
    assert "(4,)" in str(error)


def test_requires_grad_on_integer_labels():
    def program(m):
        return m.torch.tensor(LABELS, requires_grad=True)

    raises_alike(program, "Only Tensors of floating point and complex dtype can require gradients",
                 kind=RuntimeError)


def test_indexing_a_loss_as_old_tutorials_do():
    def program(m):
        loss = m.F.mse_loss(m.torch.zeros(2), m.torch.ones(2))
        return loss.data[0]  # PyTorch 0.3's loss.data[0]

    raises_alike(program, r"invalid index of a 0-dim tensor. Use `tensor.item\(\)`", kind=IndexError)


def test_torch_tensor_of_a_tensor_warns_and_copies():
    def program(m):
        x = m.torch.tensor([1.0, 2.0], requires_grad=True)
        y = m.torch.tensor(x)
        return y, y.requires_grad

    assert warns_alike(program, "To copy construct from a tensor")[1] is False
