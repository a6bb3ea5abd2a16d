"""functional_call, stack_module_state and vmap over models, ported from PyTorch's
test/functorch/test_eager_transforms.py (TestMakeFunctional's functional_call and stack_module_state tests,
TestExamplesCorrectness through functional_call, TestVmapJvpInplaceView): per-sample gradients, MAML, ensembles
with vmap's in_dims and randomness='same', a batched Jacobian trained through, and jvp of in-place writes under
vmap. (make_functional and combine_state_for_ensemble, functorch's older API, are not chainrule's.)

Each test runs on chainrule's `autograd` and `nn` (transforms in `autograd.func`) and, where it is installed,
on PyTorch (fixture `T`). The models are small versions of PyTorch's; the expectations are the same model's
results computed example by example with plain autograd.
"""

import copy
import importlib
from functools import partial

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values, xfail_on_chainrule

nn = ported_nn.nn  # the fixture


@pytest.fixture
def fn(T):
    """The library's torch.func."""
    return importlib.import_module(T.__name__ + ".func")


def t(T, a):
    return T.tensor(np.asarray(a, dtype=np.float32))


def randn(T, *shape, seed=0):
    return t(T, np.random.default_rng(seed).standard_normal(shape))


def close_trees(got, expected, rtol=1e-5, atol=1e-6):
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected)
        for key in expected:
            close_trees(got[key], expected[key], rtol, atol)
    elif isinstance(expected, (tuple, list)):
        assert isinstance(got, (tuple, list)) and len(got) == len(expected)
        for g, e in zip(got, expected):
            close_trees(g, e, rtol, atol)
    else:
        close(got, values(expected), rtol=rtol, atol=atol)


def linear_with_buffer(T, nn):
    class Foo(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)
            self.register_buffer("buffer", T.randn(3))

        def forward(self, x):
            return self.linear(x) + self.buffer

    return Foo()


# -- functional_call -------------------------------------------------------------------------------------

@pytest.mark.parametrize("detach_params", [True, False])
def test_functional_call_records_what_the_tensors_given_record(T, fn, nn, detach_params):
    mod = linear_with_buffer(T, nn)
    params = {k: v.detach() if detach_params else v for k, v in mod.named_parameters()}
    x = randn(T, 3, 3)
    out = fn.functional_call(mod, (params, dict(mod.named_buffers())), x)
    assert (out.grad_fn is None) == detach_params
    close(out, values(mod(x)), rtol=1e-6)


def test_functional_call_uses_the_tensors_given_and_puts_the_modules_own_back(T, fn, nn):
    mod = nn.Linear(3, 3)
    weight, bias = mod.weight, mod.bias
    x = randn(T, 4, 3)
    new = {"weight": T.eye(3), "bias": T.ones(3)}
    same(fn.functional_call(mod, new, x), values(x) + 1)
    assert mod.weight is weight and mod.bias is bias
    close(mod(x), values(x) @ values(weight).T + values(bias), rtol=1e-6)
    same(fn.functional_call(mod, new, (), {"input": x}), values(x) + 1)  # args as kwargs
    raises(ValueError, "Expected parameter_and_buffer_dicts to be a dict, or a list/tuple of dicts",
           fn.functional_call, mod, 3, x)
    raises(ValueError, "appeared in multiple dictionaries", fn.functional_call, mod, (new, {"weight": T.eye(3)}), x)


def test_grad_through_tied_parameters(T, fn, nn):
    class Foo(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)
            self.weight = self.linear.weight
            self.bias = self.linear.bias

        def forward(self, x):
            return nn.functional.linear(self.linear(x), self.weight, self.bias)

    mod = Foo()
    x = randn(T, 2, 3)
    expected = T.autograd.grad(mod(x).sum(), list(mod.parameters()))
    params = {k: v.detach() for k, v in mod.named_parameters()}
    assert list(params) == ["weight", "bias"]  # the tied names are one parameter each
    result = fn.grad(lambda p, x: fn.functional_call(mod, p, (x,)).sum())(params, x)
    close(result["weight"], values(expected[0]), rtol=1e-5)
    close(result["bias"], values(expected[1]), rtol=1e-5)


# -- stack_module_state -----------------------------------------------------------------------------------

def test_stack_module_state_stacks_leaves(T, fn, nn):
    models = [nn.Linear(2, 2) for _ in range(3)]
    params, buffers = fn.stack_module_state(models)
    assert set(params) == {"weight", "bias"} and buffers == {}
    for name, param in params.items():
        assert param.requires_grad and param.is_leaf
        same(param, np.stack([values(getattr(m, name)) for m in models]))


def test_stack_module_state_refuses_mixed_models(T, fn, nn):
    raises(RuntimeError, "stack_module_state:.* Expected at least one model", fn.stack_module_state, [])
    models = [nn.Linear(2, 2) for _ in range(3)]
    models[1].eval()
    raises(RuntimeError, "stack_module_state:.* same training/eval mode.", fn.stack_module_state, models)
    models = [nn.Linear(2, 2) for _ in range(3)]
    models[1] = nn.Conv2d(3, 3, (3, 3))
    raises(RuntimeError, "stack_module_state:.* models to be of the same class", fn.stack_module_state, models)


def test_stack_module_state_refuses_mixed_requires_grad(T, fn, nn):
    models = [nn.Linear(2, 2) for _ in range(3)]
    models[0].weight.requires_grad_(False)
    raises(RuntimeError, "same .requires_grad", fn.stack_module_state, models)


def test_ensemble_of_tied_parameters_and_buffers(T, fn, nn):
    class Foo(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)
            self.weight = self.linear.weight
            self.bias = self.linear.bias
            self.register_buffer("buffer", T.randn(3))
            self.register_buffer("buffer_tied", self.buffer)

        def forward(self, x):
            x = nn.functional.linear(self.linear(x), self.weight, self.bias)
            return x + self.buffer + self.buffer_tied

    models = [Foo() for _ in range(2)]
    params, buffers = fn.stack_module_state(models)
    xs = randn(T, 2, 8, 3)
    result = fn.vmap(lambda p, b, x: fn.functional_call(models[0], (p, b), (x,)))(params, buffers, xs)
    close(result, np.stack([values(m(x)) for m, x in zip(models, xs)]), rtol=1e-5, atol=1e-6)


# -- TestExamplesCorrectness ------------------------------------------------------------------------------

def test_per_sample_grads_of_an_embedding_net(T, fn, nn):
    class SampleNet(nn.Module):
        def __init__(self, vocab_size):
            super().__init__()
            self.emb = nn.Embedding(vocab_size, 8)
            self.fc1 = nn.Linear(8, 8)
            self.fc2 = nn.Linear(8, 2)

        def forward(self, x):
            x = T.mean(T.transpose(self.emb(x), -1, -2), -1)
            return self.fc2(nn.functional.relu(self.fc1(x)))

    T.manual_seed(0)
    net = SampleNet(50)
    data = T.tensor(np.random.default_rng(1).integers(0, 50, (6, 5)))
    targets = T.zeros(6, dtype=T.long)
    weights = dict(net.named_parameters())
    criterion = nn.CrossEntropyLoss()

    def compute_loss(weights, data, target):
        return criterion(fn.functional_call(net, weights, (data,)), target)

    expected = [fn.grad(compute_loss)(weights, data[i], targets[i]) for i in range(6)]
    result = fn.vmap(partial(fn.grad(compute_loss), weights))(data, targets)
    for key in weights:
        close(result[key], np.stack([values(e[key]) for e in expected]), rtol=1e-5, atol=1e-7)
    for i in range(6):  # against plain autograd too
        loss = criterion(net(data[i]), targets[i])
        for key, g in zip(weights, T.autograd.grad(loss, list(weights.values()))):
            close(result[key][i], values(g), rtol=1e-5, atol=1e-7)


def test_maml_regression(T, fn, nn):
    T.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1)).double()
    params = dict(net.named_parameters())
    rng = np.random.default_rng(2)
    task = [T.tensor(rng.uniform(-5, 5, (3, 4, 1))) for _ in range(4)]

    def mse_loss(x, y):
        return T.mean((x - y) ** 2)

    def loss_for_task(use_transform, x1, y1, x2, y2):
        def inner_loss(params, x1, y1):
            return mse_loss(fn.functional_call(net, params, (x1,)), y1)

        if use_transform:
            grads = fn.grad(inner_loss)(params, x1, y1)
        else:
            loss = inner_loss(params, x1, y1)
            grads = dict(zip(params, T.autograd.grad(loss, list(params.values()), create_graph=True)))
        new_params = {k: params[k] - 0.1 * grads[k] for k in params}
        return mse_loss(fn.functional_call(net, new_params, (x2,)), y2)

    inner_losses = fn.vmap(partial(loss_for_task, True))(*task)
    result = T.autograd.grad(inner_losses.sum() / 3, list(params.values()))
    losses = [loss_for_task(False, *(part[i] for part in task)) for i in range(3)]
    close(inner_losses, [values(loss) for loss in losses], rtol=1e-10)
    expected = T.autograd.grad(sum(losses) / 3, list(params.values()))
    for r, e in zip(result, expected):
        close(r, values(e), rtol=1e-8, atol=1e-12)


def test_per_sample_grads_with_batch_norm_replaced(T, fn, nn):
    T.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    net = net.double()
    fn.replace_all_batch_norm_modules_(net)
    params, buffers = dict(net.named_parameters()), dict(net.named_buffers())
    criterion = nn.CrossEntropyLoss()

    def compute_loss(x, y, params, buffers):
        return criterion(fn.functional_call(net, (params, buffers), (x,)), y)

    x = T.tensor(np.random.default_rng(3).standard_normal((2, 2, 2, 6, 6)))
    y = T.tensor([[1, 3], [0, 4]])
    result = fn.vmap(fn.grad(compute_loss, argnums=2), in_dims=(0, 0, None, None))(x, y, params, buffers)
    for i in range(2):
        expected = T.autograd.grad(compute_loss(x[i], y[i], params, buffers), list(params.values()))
        for key, e in zip(params, expected):
            close(result[key][i], values(e), rtol=1e-8, atol=1e-12)


def test_lennard_jones_batched_jacobian_trained_through(T, fn, nn):
    sigma, epsilon = 0.5, 4.0
    T.manual_seed(0)
    model = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 1)).double()
    r = T.linspace(0.5, 2 * sigma, steps=6, dtype=T.float64)
    drs = T.outer(r, T.tensor([1.0, 0, 0], dtype=T.float64))
    norms = T.norm(drs, dim=1).reshape(-1, 1)
    energies = epsilon * ((sigma / norms) ** 12 - (sigma / norms) ** 6)
    forces = -epsilon * ((-12 * sigma ** 12 / norms ** 13) + (6 * sigma ** 6 / norms ** 7)) * drs

    def loss_fn(predicted_energies, predicted_forces):
        return (nn.functional.mse_loss(energies, predicted_energies)
                + 0.01 * nn.functional.mse_loss(forces, predicted_forces) / 3)

    for jac in (fn.jacrev, fn.jacfwd):
        derivs = fn.vmap(jac(model))(norms).squeeze(-1)
        loss = loss_fn(model(norms), -derivs * drs / norms)
        result = T.autograd.grad(loss, list(model.parameters()))
        predicted = []
        for row, dr in zip(norms, drs):
            deriv = T.autograd.functional.jacobian(model, row, create_graph=True)
            predicted.append(-deriv * dr / row)
        expected = T.autograd.grad(loss_fn(model(norms), T.cat(predicted)), list(model.parameters()))
        for a, e in zip(result, expected):
            close(a, values(e), rtol=1e-8, atol=1e-12)


def mlp_classifier(T, nn, dropout=None):
    class MLPClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.dropout = dropout() if dropout else nn.Identity()
            self.fc1 = nn.Linear(2, 8)
            self.fc2 = nn.Linear(8, 2)

        def forward(self, x):
            x = self.fc2(nn.functional.relu(self.fc1(self.dropout(x))))
            return nn.functional.log_softmax(x, -1)

    return MLPClassifier


def test_ensemble_regression(T, fn, nn):
    T.manual_seed(0)
    rng = np.random.default_rng(4)
    points, labels = t(T, rng.standard_normal((20, 2))), T.tensor(rng.integers(0, 2, 20))
    model_class = mlp_classifier(T, nn)
    model = model_class()
    loss_fn = nn.NLLLoss()

    def train_step(use_transform, weights, batch, targets, lr=0.2):
        def compute_loss(weights, batch, targets):
            return loss_fn(fn.functional_call(model, weights, (batch,)), targets)

        if use_transform:
            grad_weights, loss = fn.grad_and_value(compute_loss)(weights, batch, targets)
        else:
            loss = compute_loss(weights, batch, targets)
            grad_weights = dict(zip(weights, T.autograd.grad(loss, list(weights.values()))))
        return loss, {k: weights[k] - lr * grad_weights[k] for k in weights}

    batched_weights = fn.stack_module_state([model_class() for _ in range(2)])[0]
    result_loss, result_weights = fn.vmap(partial(train_step, True), in_dims=(0, None, None))(
        batched_weights, points, labels)
    expected = [train_step(False, {k: w[i].detach().requires_grad_() for k, w in batched_weights.items()},
                           points, labels) for i in range(2)]
    close(result_loss, [values(loss) for loss, _ in expected], rtol=1e-5)
    for key in batched_weights:
        close(result_weights[key], np.stack([values(w[key]) for _, w in expected]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dropout", ["Dropout", "AlphaDropout", "FeatureAlphaDropout"])
def test_same_randomness_gives_every_model_the_same_dropout(T, fn, nn, dropout):
    T.manual_seed(0)
    rng = np.random.default_rng(5)
    points, labels = t(T, rng.standard_normal((20, 2))), T.tensor(rng.integers(0, 2, 20))
    model = mlp_classifier(T, nn, getattr(nn, dropout))()
    loss_fn = nn.NLLLoss()

    def train_step(weights, batch, targets, lr):
        def compute_loss(weights, batch, targets):
            return loss_fn(fn.functional_call(model, weights, (batch,)), targets)

        grad_weights, loss = fn.grad_and_value(compute_loss)(weights, batch, targets)
        return (loss, *[weights[k] - lr * grad_weights[k] for k in weights])

    batched_weights = fn.stack_module_state([copy.deepcopy(model) for _ in range(2)])[0]
    result = fn.vmap(train_step, in_dims=(0, None, None, 0), randomness="same")(
        batched_weights, points, labels, t(T, [0.2, 0.4]))
    same(result[0][0], values(result[0][1]))  # same weights, same dropout mask: the same loss
    assert any(not np.array_equal(values(w[0]), values(w[1])) for w in result[1:])  # different learning rates


# -- TestVmapJvpInplaceView -------------------------------------------------------------------------------

def push_jvp(fn, f):
    return lambda x, xt, y, yt: fn.jvp(f, (x, y), (xt, yt))


def test_vmap_of_jvp_of_a_copy_between_duals(T, fn, request):
    xfail_on_chainrule(T, request, "jvp's primals are leaves that require grad in chainrule (jvp is reverse mode, "
                       "by double backward), and an in-place write into one, or into a view of one, is refused; "
                       "PyTorch's primals are dual tensors, written in place, the caller's tensor with them")
    def f(x, y):
        x.copy_(y)
        return x

    x, xt, y, yt = (randn(T, 3, 2, seed=s) for s in range(4))
    out, out_tangent = fn.vmap(push_jvp(fn, f), in_dims=1)(x, xt, y, yt)
    same(out, values(x).T)  # (f wrote y into the primal x, which vmap's results alias)
    same(out_tangent, values(yt).T)


def test_vmap_of_jvp_of_a_write_through_a_view(T, fn, request):
    xfail_on_chainrule(T, request, "jvp's primals are leaves that require grad in chainrule (jvp is reverse mode, "
                       "by double backward), and an in-place write into one, or into a view of one, is refused; "
                       "PyTorch's primals are dual tensors, written in place, the caller's tensor with them")
    def f(x, y):
        view = x[:, ::2]
        view.copy_(y)
        return view, x

    orig_x, orig_xt = randn(T, 2, 6, 2), randn(T, 2, 6, 2, seed=1)
    y, yt = randn(T, 2, 2, 3, seed=2), randn(T, 2, 2, 3, seed=3)
    out, out_tangent = fn.vmap(push_jvp(fn, f), in_dims=(2, 2, 1, 1))(orig_x.clone(), orig_xt.clone(), y, yt)
    expected_x = np.moveaxis(values(orig_x), 2, 0).copy()
    expected_x[:, :, ::2] = np.moveaxis(values(y), 1, 0)
    same(out[0], np.moveaxis(values(y), 1, 0))
    same(out[1], expected_x)
    same(out_tangent[0], np.moveaxis(values(yt), 1, 0))
    expected_xt = np.moveaxis(values(orig_xt), 2, 0).copy()
    expected_xt[:, :, ::2] = np.moveaxis(values(yt), 1, 0)
    same(out_tangent[1], expected_xt)


def test_vmap_of_jvp_of_a_write_into_a_plain_tensor(T, fn):
    def f(x, y):
        x = x.clone()
        view = x[0]
        view.copy_(y)
        return view, x

    x, y, yt = randn(T, 2, 2, 6), randn(T, 6, 2, seed=1), randn(T, 6, 2, seed=2)
    outs, tangents = fn.vmap(lambda x, y, yt: fn.jvp(partial(f, x), (y,), (yt,)), in_dims=(1, 1, 1))(x, y, yt)
    expected_x = np.moveaxis(values(x), 1, 0).copy()
    expected_x[:, 0] = values(y).T
    same(outs[0], values(y).T)
    same(outs[1], expected_x)
    same(tangents[0], values(yt).T)
    expected_tangent = np.zeros((2, 2, 6))
    expected_tangent[:, 0] = values(yt).T
    same(tangents[1], expected_tangent)


def test_vmap_of_jvp_of_a_write_into_a_plain_base_seen_by_its_view(T, fn, request):

    def f(x, y):
        x = x.clone()
        view = x[0]
        x.copy_(y)
        return view, x

    x, y, yt = randn(T, 2, 2, 6), randn(T, 2, 6, 2, seed=1), randn(T, 2, 6, 2, seed=2)
    outs, tangents = fn.vmap(lambda x, y, yt: fn.jvp(partial(f, x), (y,), (yt,)), in_dims=(1, 2, 2))(x, y, yt)
    same(outs[0], np.moveaxis(values(y), 2, 0)[:, 0])
    same(outs[1], np.moveaxis(values(y), 2, 0))
    same(tangents[0], np.moveaxis(values(yt), 2, 0)[:, 0])
    same(tangents[1], np.moveaxis(values(yt), 2, 0))
