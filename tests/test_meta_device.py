"""The meta device (autograd/meta.py): tensors with a shape and a dtype and no values. A model built there takes
no memory and draws no numbers; it gets memory from to_empty or load_state_dict(assign=True), or serves as a
skeleton for functional_call. Each test runs on chainrule and on PyTorch (skipped where it is missing)."""

import copy

import numpy as np
import pytest

import nn as _nn  # noqa: F401  (registers autograd.nn, as torch.nn)


def test_factories_on_the_meta_device(T):
    x = T.empty(2, 3, device="meta")
    assert x.is_meta and x.device.type == "meta" and x.shape == (2, 3) and x.dtype == T.float32
    with T.device("meta"):
        made = [T.zeros(4), T.ones(2, 2, dtype=T.float64), T.randn(3), T.rand(2), T.randint(0, 5, (3,)),
                T.arange(5.0), T.tensor([1.0, 2.0]), T.full((2,), 7.0)]
    assert all(t.is_meta for t in made) and [tuple(t.shape) for t in made] == [(4,), (2, 2), (3,), (2,), (3,), (5,),
                                                                                (2,), (2,)]
    assert made[1].dtype == T.float64 and made[4].dtype == T.int64
    assert not T.zeros(1).is_meta  # (the block is over)
    assert repr(x) == "tensor(..., device='meta', size=(2, 3))"
    with pytest.raises(RuntimeError, match="cannot be called on meta tensors"):
        T.empty((), device="meta").item()
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"):
        x.tolist()
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"):
        x.to("cpu")


def test_an_op_on_meta_tensors_gives_a_meta_tensor_of_its_shape(T):
    with T.device("meta"):
        mask = T.triu(T.ones(4, 4), diagonal=1).bool()  # a causal mask made in a constructor
        angles = T.outer(T.arange(8.0), T.arange(3.0)).cos()
    assert mask.is_meta and mask.shape == (4, 4) and mask.dtype == T.bool
    assert angles.is_meta and angles.shape == (8, 3)
    w = T.empty(5, 3, device="meta", requires_grad=True)
    y = (T.empty(2, 3, device="meta") @ w.t()).relu().sum(0)
    assert y.is_meta and y.shape == (5,) and y.requires_grad
    view = w[1:].t()
    assert view.is_meta and view.shape == (3, 4)


def test_a_model_built_on_meta_draws_no_numbers_and_takes_memory_later(T):
    nn = T.nn
    T.manual_seed(0)
    expected = T.randn(3)
    T.manual_seed(0)
    with T.device("meta"):
        model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert T.equal(T.randn(3), expected)  # the meta model's initialisation took nothing from the generator
    assert all(p.is_meta for p in model.parameters()) and model[1].running_mean.is_meta
    assert repr(model[0].weight) == "Parameter containing:\ntensor(..., device='meta', size=(4, 3), requires_grad=True)"

    source = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    model.load_state_dict(source.state_dict(), assign=True)
    assert not any(p.is_meta for p in model.parameters()) and isinstance(model[0].weight, nn.Parameter)
    x = T.randn(5, 3)
    assert T.equal(model(x), source(x))

    with T.device("meta"):
        empty = nn.Linear(3, 4)
    empty.to_empty(device="cpu")
    assert empty.weight.device.type == "cpu" and not empty.weight.is_meta
    with T.no_grad():
        empty.weight.copy_(source[0].weight)
        empty.bias.copy_(source[0].bias)
    assert T.equal(empty(x), source[0](x))


def test_a_meta_skeleton_for_functional_call(T):
    nn = T.nn
    T.manual_seed(1)
    models = [nn.Linear(3, 2) for _ in range(3)]
    base = copy.deepcopy(models[0]).to("meta")
    assert base.weight.is_meta and isinstance(base.weight, nn.Parameter) and not models[0].weight.is_meta
    params, buffers = T.func.stack_module_state(models)
    x = T.randn(4, 3)

    def one(p, b, data):
        return T.func.functional_call(base, (p, b), (data,))

    ensemble = T.vmap(one, in_dims=(0, 0, None))(params, buffers, x)
    for i, model in enumerate(models):
        np.testing.assert_allclose(ensemble[i].detach().numpy(), model(x).detach().numpy(), rtol=1e-6, atol=1e-7)
    with pytest.raises(NotImplementedError, match="Cannot copy out of meta tensor"):
        base.to("cpu")


def test_backward_through_a_reduction_of_meta_tensors_gives_meta_gradients(T):
    nn = _nn if T.__name__ == "autograd" else T.nn
    x = T.randn(4, 8, device="meta", requires_grad=True)
    layer = nn.Linear(8, 3, device="meta")
    layer(x).relu().sum().backward()  # (a sum's gradient spreads over x's meta layout: nothing to write)
    assert x.grad.is_meta and x.grad.shape == (4, 8)
    assert layer.weight.grad.is_meta and layer.weight.grad.shape == (3, 8) and layer.bias.grad.shape == (3,)
    w = T.empty(5, device="meta", requires_grad=True)
    w.mean().backward()
    assert w.grad.is_meta and w.grad.shape == (5,)


def test_convolutions_and_unfold_of_meta_tensors_and_their_gradients_stay_meta(T):
    F = (_nn if T.__name__ == "autograd" else T.nn).functional
    x = T.randn(2, 3, 8, 8, device="meta", requires_grad=True)
    w = T.randn(4, 3, 3, 3, device="meta", requires_grad=True)
    for y in (F.conv2d(x, w, padding=1, stride=2), F.conv2d(x, w, dilation=2), F.conv_transpose2d(x, w.transpose(0, 1)),
              F.unfold(x, 3, padding=1)):
        grads = T.autograd.grad(y.sum(), [x, w], allow_unused=True)
        assert y.is_meta and grads[0].is_meta and grads[0].shape == (2, 3, 8, 8)
        assert grads[1] is None or grads[1].is_meta and grads[1].shape == (4, 3, 3, 3)
    assert F.unfold(x, 3, padding=1).shape == (2, 27, 64)


def test_cross_entropy_of_a_meta_model_backpropagates_meta_gradients(T):
    nn = _nn if T.__name__ == "autograd" else T.nn
    with T.device("meta"):
        head = nn.Linear(8, 10)
    x = T.randn(4, 8, device="meta", requires_grad=True)
    labels = T.randint(0, 10, (4,), device="meta")
    loss = nn.functional.cross_entropy(head(x), labels)
    loss.backward()
    assert loss.is_meta and x.grad.is_meta and head.weight.grad.is_meta and head.weight.grad.shape == (10, 8)
