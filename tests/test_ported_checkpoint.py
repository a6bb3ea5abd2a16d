"""autograd.utils.checkpoint, ported from the TestCheckpoint part of PyTorch's test/test_utils.py: how often
checkpoint_sequential runs each module, the same outputs and gradients as the plain model (an nn.Sequential, a
list of its children, a ModuleList), autograd.grad with create_graph through the non-reentrant variant,
checkpoint_sequential's refusals of several inputs or none, dropout's random state kept for the rerun, None and
other non-tensor inputs and outputs, no tensors at all, an output that does not require grad, and
preserve_rng_state=False. (The accelerator, multi-device and memory-statistics tests are not chainrule's.)
tests/test_checkpoint.py tests the mechanism itself (intermediates let go, determinism checks, early stop,
selective contexts) and is not repeated.

Each test runs on chainrule and, where it is installed, on PyTorch (fixture `T`); the expectations are the
plain (uncheckpointed) call's values and gradients, and literals.
"""

import importlib
import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values, xfail_ours

nn = ported_nn.nn  # the fixture


@pytest.fixture
def cp(T):
    return importlib.import_module(T.__name__ + ".utils.checkpoint")


def dense_stack(nn):
    return nn.Sequential(nn.Linear(100, 50), nn.ReLU(), nn.Linear(50, 20), nn.ReLU(), nn.Linear(20, 5), nn.ReLU())


def check_against_the_plain_model(T, cp, model, pieces_list, x, use_reentrant, chunks=2):
    """checkpoint_sequential over each of `pieces_list` gives the model's outputs, parameter gradients and input
    gradient."""
    out = model(x)
    plain_out = values(out).copy()
    model.zero_grad()
    out.sum().backward()
    plain_grads = {name: values(p.grad).copy() for name, p in model.named_parameters()}
    plain_input_grad = values(x.grad).copy()
    assert np.abs(plain_input_grad).sum() > 0  # (the stack's ReLUs let something through)
    for pieces in pieces_list:
        detached = x.detach()
        detached.requires_grad = True
        out = cp.checkpoint_sequential(pieces, chunks, detached, use_reentrant=use_reentrant)
        same(out, plain_out)
        model.zero_grad()
        out.sum().backward()
        close(detached.grad, plain_input_grad, rtol=1e-6, atol=1e-7)
        for name, p in model.named_parameters():
            close(p.grad, plain_grads[name], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_checkpoint_sequential_runs_the_checkpointed_half_twice(T, nn, cp, use_reentrant):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.counter = 0

        def forward(self, x):
            self.counter += 1
            return x * T.tensor(2.0)  # (a product saves a tensor: the rerun has something to compute)

    modules = [Net() for _ in range(10)]
    x = T.randn(3, 4, requires_grad=True)
    out = cp.checkpoint_sequential(modules, 2, x, use_reentrant=use_reentrant)
    assert [m.counter for m in modules] == [1] * 10
    out.sum().backward()
    assert [m.counter for m in modules] == [2] * 5 + [1] * 5
    same(x.grad, np.full((3, 4), 2.0 ** 10, np.float32))


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_a_sequential_and_its_list_of_children(T, nn, cp, use_reentrant):
    T.manual_seed(0)
    model = dense_stack(nn)
    check_against_the_plain_model(T, cp, model, [list(model.children()), model], T.randn(1, 100, requires_grad=True),
                                  use_reentrant)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_a_module_list(T, nn, cp, use_reentrant):
    class ModuleListNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.module_list = nn.ModuleList(list(dense_stack(nn)))

        def forward(self, x):
            for layer in self.module_list:
                x = layer(x)
            return x

    T.manual_seed(0)
    model = ModuleListNet()
    check_against_the_plain_model(T, cp, model, [list(model.module_list.children()), model.module_list],
                                  T.randn(1, 100, requires_grad=True), use_reentrant)


def test_create_graph_through_the_non_reentrant_variant(T, nn, cp):
    T.manual_seed(0)
    model = dense_stack(nn)
    x = T.randn(1, 100, requires_grad=True)
    out = model(x)
    plain = T.autograd.grad([out], [x], grad_outputs=[T.ones(1, 5)], create_graph=True)
    checkpointed_out = cp.checkpoint_sequential(list(model.children()), 2, x, use_reentrant=False)
    same(checkpointed_out, values(out))
    checkpointed = T.autograd.grad([checkpointed_out], [x], grad_outputs=[T.ones(1, 5)], create_graph=True)
    close(checkpointed[0], values(plain[0]), rtol=1e-6, atol=1e-7)
    # (a ReLU stack's input gradient is piecewise constant: the second derivative is zero, but it is a graph)
    assert checkpointed[0].requires_grad


@xfail_ours("chainrule's reentrant checkpoint is its non-reentrant one, which autograd.grad goes through; "
            "PyTorch's reentrant variant refuses .grad()")
def test_the_reentrant_variant_refuses_autograd_grad(T, nn, cp):
    model = dense_stack(nn)
    x = T.randn(1, 100, requires_grad=True)
    out = cp.checkpoint_sequential(list(model.children()), 2, x, use_reentrant=True)
    raises(RuntimeError, "torch.utils.checkpoint is incompatible", T.autograd.grad, outputs=[out],
           grad_outputs=[T.ones(1, 5)], inputs=[x], create_graph=True)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_checkpoint_sequential_takes_exactly_one_input(T, nn, cp, use_reentrant):
    class Two(nn.Module):
        def forward(self, a, b):
            return a, b

    class Noop(nn.Module):
        def forward(self):
            pass

    a, b = T.randn(1, 100, requires_grad=True), T.randn(1, 100, requires_grad=True)
    with pytest.raises(TypeError):
        cp.checkpoint_sequential(nn.Sequential(Two()), 1, a, b, use_reentrant=use_reentrant)
    with pytest.raises(TypeError):
        cp.checkpoint_sequential(nn.Sequential(Noop()), 1, use_reentrant=use_reentrant)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_dropout_in_the_rerun_draws_the_first_runs_mask(T, nn, cp, use_reentrant):
    for _ in range(3):
        x = T.randn(2000).requires_grad_()
        phase1, phase2 = nn.Dropout(), nn.Dropout()
        state = T.get_rng_state()
        out = cp.checkpoint(phase2, phase1(x), use_reentrant=use_reentrant)
        out.sum().backward()
        checkpointed = values(x.grad).copy()
        after_checkpointed = T.rand(3)
        T.set_rng_state(state)
        x.grad = None
        phase2(phase1(x)).sum().backward()
        same(x.grad, checkpointed)
        # both masks keep each element with probability 1/2, scaling it by 2: the gradient is 0 or 4
        assert set(np.unique(checkpointed)) <= {0.0, 4.0} and 250 < (checkpointed == 4).sum() < 750
        same(T.rand(3), values(after_checkpointed))  # the rerun left the random stream where it was


def test_dropout_without_preserving_the_random_state_runs(T, nn, cp):
    x = T.randn(2).requires_grad_()
    out = cp.checkpoint(nn.Dropout(), x, use_reentrant=False, preserve_rng_state=False)
    out.sum().backward()
    assert x.grad.shape == (2,)
    assert set(np.unique(values(x.grad))) <= {0.0, 2.0}


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_a_none_argument(T, cp, use_reentrant):
    def run_fn(tensor1, tensor2):
        return tensor1 if tensor2 is None else tensor1 + tensor2

    x = T.randn(1, 100, requires_grad=True)
    out = cp.checkpoint(run_fn, x, None, use_reentrant=use_reentrant)
    out.sum().backward()
    same(x.grad, np.ones((1, 100), np.float32))


def mixed_outputs(t1, t2, scale, t3):
    t4 = t1 + t2 * t3
    t5 = t1 * t2 + t3
    t4 *= scale
    t5 *= scale
    return scale, t4, None, True, t5, "bar", t1


def test_non_tensor_inputs_and_outputs(T, cp):
    t1, t2, t3 = (T.tensor(np.linspace(0.1, 1.0, 10, dtype=np.float32) * k) for k in (1.0, 2.0, 3.0))
    t1.requires_grad_()
    t2.requires_grad_()
    scale = 7
    res = cp.checkpoint(mixed_outputs, t1, t2, scale, t3, use_reentrant=True)
    a, b, c = values(t1), values(t2), values(t3)
    assert res[0] == 7 and res[2] is None and res[3] is True and res[5] == "bar"
    close(res[1], (a + b * c) * 7)
    close(res[4], (a * b + c) * 7)
    same(res[6], a)
    res[1].sum().backward(retain_graph=True)
    res[4].sum().backward(retain_graph=True)
    res[6].sum().backward()
    # d/dt1: 7 + 7 t2 + 1; d/dt2: 7 t3 + 7 t1
    close(t1.grad, 7 + 7 * b + 1, rtol=1e-6)
    close(t2.grad, 7 * c + 7 * a, rtol=1e-6)
    checkpointed = values(t1.grad).copy(), values(t2.grad).copy()
    t1.grad = t2.grad = None
    res = mixed_outputs(t1, t2, scale, t3)
    T.autograd.backward([res[1].sum(), res[4].sum(), res[6].sum()])
    same(t1.grad, checkpointed[0])
    same(t2.grad, checkpointed[1])


@xfail_ours("chainrule's reentrant checkpoint returns an argument passed through as that very tensor (a leaf "
            "here), where PyTorch's autograd.Function gives a new output whose graph one backward frees")
def test_the_reentrant_variant_frees_its_graph_after_one_backward(T, cp):
    t1 = T.rand(10, requires_grad=True)
    t2 = T.rand(10, requires_grad=True)
    res = cp.checkpoint(mixed_outputs, t1, t2, 3, T.rand(10), use_reentrant=True)
    res[6].sum().backward()
    raises(RuntimeError, "Trying to backward through the graph a second time", res[6].sum().backward)


@pytest.mark.parametrize("use_reentrant", [True, False])
def test_no_tensors_at_all(T, cp, use_reentrant):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (PyTorch warns that no input requires grad)
        res = cp.checkpoint(mixed_outputs, 0.25, 0.5, 3, 0.75, use_reentrant=use_reentrant)
    assert res == (3, (0.25 + 0.5 * 0.75) * 3, None, True, (0.25 * 0.5 + 0.75) * 3, "bar", 0.25)


def test_an_output_that_does_not_need_its_gradient(T, cp):
    def both(tensor1, tensor2):
        return tensor1, tensor2  # tensor2 is for other logic

    x, other = T.randn(1, 4, requires_grad=True), T.randn(1, 4)
    out = cp.checkpoint(both, x, other, use_reentrant=True)
    out[0].sum().backward()
    same(x.grad, np.ones((1, 4), np.float32))
    same(out[1], values(other))


@xfail_ours("chainrule's reentrant checkpoint does not make its outputs require grad when only an unused input "
            "does: the backward fails on the output itself (does not require grad), not in PyTorch's words")
def test_the_reentrant_variant_refuses_outputs_none_of_which_require_grad(T, cp):
    x, y = T.randn(1, 4), T.randn(1, 4, requires_grad=True)
    out = cp.checkpoint(lambda tensor1, tensor2: tensor1, x, y, use_reentrant=True)
    raises(RuntimeError, r"none of output has requires_grad=True, this checkpoint\(\) is not necessary",
           out.sum().backward)


def test_an_output_that_does_not_require_grad_is_refused_by_backward(T, cp):
    x, y = T.randn(1, 4), T.randn(1, 4, requires_grad=True)
    out = cp.checkpoint(lambda tensor1, tensor2: tensor1, x, y, use_reentrant=False)
    assert not out.requires_grad
    raises(RuntimeError, "does not require grad", out.sum().backward)
