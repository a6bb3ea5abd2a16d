"""autograd.utils.checkpoint: the same values and gradients as the plain call, with the function's
intermediates let go after forward and computed again in backward."""

import gc
import weakref

import numpy as np
import pytest

import autograd
import nn
from autograd.utils.checkpoint import checkpoint, checkpoint_sequential


def _layers(seed=0):
    rng = np.random.default_rng(seed)
    first, second = nn.Linear(4, 5), nn.Linear(5, 3)
    with autograd.no_grad():
        for layer in (first, second):
            layer.weight.copy_(autograd.tensor(rng.standard_normal(tuple(layer.weight.shape)).astype(np.float32)))
            layer.bias.copy_(autograd.tensor(rng.standard_normal(tuple(layer.bias.shape)).astype(np.float32)))
    return first, second


def _gradients(run, x, layers):
    for layer in layers:
        layer.zero_grad()
    y = run(x)
    (y * y).sum().backward()
    return y.detach().numpy(), [p.grad.numpy().copy() for layer in layers for p in layer.parameters()]


@pytest.mark.parametrize("use_reentrant", [False, True])
@pytest.mark.parametrize("input_requires_grad", [False, True])
def test_same_values_and_gradients_as_the_plain_call(use_reentrant, input_requires_grad):
    first, second = _layers()

    def block(h):
        return second(first(h).tanh()).sigmoid()

    x = autograd.tensor(np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4), requires_grad=input_requires_grad)
    plain_y, plain_grads = _gradients(block, x, (first, second))
    plain_x_grad = None if x.grad is None else x.grad.numpy().copy()
    x.grad = None
    y, grads = _gradients(lambda h: checkpoint(block, h, use_reentrant=use_reentrant), x, (first, second))
    np.testing.assert_allclose(y, plain_y, rtol=1e-6)
    for got, expected in zip(grads, plain_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    if input_requires_grad:
        np.testing.assert_allclose(x.grad.numpy(), plain_x_grad, rtol=1e-5, atol=1e-7)


def test_intermediates_are_let_go_after_forward_and_computed_again_in_backward():
    first, second = _layers()
    kept, runs = [], []

    def block(h):
        inner = first(h).tanh()
        kept.append(weakref.ref(inner))
        runs.append(1)
        return second(inner)

    x = autograd.ones(2, 4)
    y = checkpoint(block, x, use_reentrant=False)
    gc.collect()
    assert kept[0]() is None  # nothing holds the block's intermediate between the passes
    y.sum().backward()
    assert len(runs) == 2 and first.weight.grad is not None


def test_dropout_draws_the_same_mask_in_the_rerun_and_the_random_stream_goes_on_as_without():
    x = autograd.tensor(np.linspace(1, 2, 64, dtype=np.float32), requires_grad=True)
    drop = nn.Dropout(0.5)
    autograd.manual_seed(3)
    y = checkpoint(lambda h: drop(h * 2), x, use_reentrant=False)
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy() != 0, y.detach().numpy() != 0)
    np.testing.assert_allclose(x.grad.numpy()[y.detach().numpy() != 0], 4.0)
    after_checkpoint = autograd.rand(3).numpy()
    autograd.manual_seed(3)
    drop(x * 2)
    np.testing.assert_array_equal(autograd.rand(3).numpy(), after_checkpoint)


def test_autograd_grad_and_second_derivatives_go_through_it():
    x = autograd.tensor([0.5, -1.0, 2.0], requires_grad=True)
    (g,) = autograd.autograd.grad(checkpoint(lambda h: (h**3).sum(), x, use_reentrant=False), x, create_graph=True)
    np.testing.assert_allclose(g.detach().numpy(), 3 * np.array([0.5, -1.0, 2.0]) ** 2)
    (g2,) = autograd.autograd.grad(g.sum(), x)
    np.testing.assert_allclose(g2.numpy(), 6 * np.array([0.5, -1.0, 2.0]))


def test_a_computed_tensor_read_from_outside_gets_its_share():
    w = autograd.tensor([1.0, 2.0], requires_grad=True)
    outside = w * 3  # read by the function through its closure, and used again beside it
    x = autograd.tensor([1.0, 1.0], requires_grad=True)
    y = checkpoint(lambda h: (h * outside).exp(), x, use_reentrant=False)
    (y.sum() + outside.sum()).backward()
    e = np.exp([3.0, 6.0])
    np.testing.assert_allclose(w.grad.numpy(), 3 * e + 3, rtol=1e-6)  # through the checkpoint, and beside it
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 6.0] * e, rtol=1e-6)


def test_a_rerun_that_computes_something_else_is_refused():
    calls = []

    def changing(h):
        calls.append(1)
        return (h * h).sum() if len(calls) == 1 else (h[:1] * h[:1]).sum()

    y = checkpoint(changing, autograd.ones(3, requires_grad=True), use_reentrant=False)
    with pytest.raises(RuntimeError, match="different metadata than during the forward pass"):
        y.backward()


def test_a_second_backward_with_retain_graph_reruns_again():
    runs = []
    x = autograd.tensor([1.0, 2.0], requires_grad=True)
    y = checkpoint(lambda h: runs.append(1) or (h.exp() * h).sum(), x, use_reentrant=False)
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * np.exp([1.0, 2.0]) * (1 + np.array([1.0, 2.0])), rtol=1e-6)
    assert len(runs) == 3


def test_checkpoint_sequential_matches_the_plain_model():
    first, second = _layers()
    model = nn.Sequential(first, nn.Tanh(), second, nn.ReLU())
    x = autograd.tensor(np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4))
    plain_y, plain_grads = _gradients(model, x, (first, second))
    y, grads = _gradients(lambda h: checkpoint_sequential(model, 2, h, use_reentrant=False), x, (first, second))
    np.testing.assert_allclose(y, plain_y, rtol=1e-6)
    for got, expected in zip(grads, plain_grads):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)


def test_keyword_arguments_and_use_reentrant_as_pytorch():
    x = autograd.ones(2, requires_grad=True)
    with pytest.warns(UserWarning, match="use_reentrant parameter should be passed explicitly"):
        checkpoint(lambda h: h * 2, x)
    with pytest.raises(ValueError, match="Unexpected keyword arguments: scale"):
        checkpoint(lambda h, scale: h * scale, x, use_reentrant=True, scale=2.0)
    y = checkpoint(lambda h, scale: h * scale, x, use_reentrant=False, scale=2.0)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])
    with pytest.raises(ValueError, match="context_fn"):
        checkpoint(lambda h: h, x, use_reentrant=True, context_fn=lambda: (None, None))


def test_under_no_grad_it_is_the_plain_call():
    x = autograd.ones(2, requires_grad=True)
    with autograd.no_grad():
        y = checkpoint(lambda h: h * 2, x, use_reentrant=False)
    assert not y.requires_grad and y.tolist() == [2.0, 2.0]


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    import torch.utils.checkpoint as torch_checkpoint

    rng = np.random.default_rng(1)
    weights = [rng.standard_normal((4, 4)).astype(np.float32) for _ in range(2)]
    x = rng.standard_normal((3, 4)).astype(np.float32)
    results = []
    for library, run in ((torch, torch_checkpoint.checkpoint), (autograd, checkpoint)):
        w1, w2 = (library.tensor(w, requires_grad=True) for w in weights)
        inputs = library.tensor(x, requires_grad=True)
        y = run(lambda h, a, b: ((h @ a).relu() @ b).tanh(), inputs, w1, w2, use_reentrant=False)
        (y ** 2).mean().backward()
        results.append([t.detach().numpy() for t in (y, inputs.grad, w1.grad, w2.grad)])
    for ours, theirs in zip(results[1], results[0]):
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_a_rerun_that_saves_other_shapes_raises_checkpoint_error(T):
    import importlib

    cp = importlib.import_module(T.__name__ + ".utils.checkpoint")
    runs = []

    def crop(x):
        runs.append(1)
        return x[:3 if len(runs) == 1 else 2].exp().sum()

    x = T.ones(4, requires_grad=True)
    with pytest.raises(cp.CheckpointError, match=r"tensor at position 0:\nsaved metadata: .*\nrecomputed metadata"):
        cp.checkpoint(crop, x, use_reentrant=False).backward()
    runs.clear()

    def rescale(x):
        runs.append(1)
        return (x * len(runs)).exp().sum()

    x.grad = None
    cp.checkpoint(rescale, x, use_reentrant=False, determinism_check="none").backward()
    assert x.grad.tolist() == pytest.approx([np.e ** 2] * 4)  # exp's saved result is the rerun's: unchecked


def test_selective_checkpoint_contexts_give_the_plain_gradients(T):
    import functools
    import importlib

    cp = importlib.import_module(T.__name__ + ".utils.checkpoint")
    w = T.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    policy = functools.partial(cp.create_selective_checkpoint_contexts,
                               lambda ctx, op, *args, **kwargs: cp.CheckpointPolicy.MUST_SAVE)
    cp.checkpoint(lambda x: T.mm(x, w).sin().sum(), T.ones(1, 2), use_reentrant=False, context_fn=policy).backward()
    expected = np.cos(np.ones((1, 2)) @ w.detach().numpy())
    np.testing.assert_allclose(w.grad.numpy(), np.ones((2, 1)) @ expected, rtol=1e-6)


def test_the_non_reentrant_rerun_stops_once_it_has_every_saved_tensor(T):
    import importlib

    cp = importlib.import_module(T.__name__ + ".utils.checkpoint")
    steps = []

    def f(x):
        steps.append("exp")
        y = x.exp()  # saves its result: the last tensor the backward needs
        steps.append("after")
        return y * 2

    x = T.ones(2, requires_grad=True)
    cp.checkpoint(f, x, use_reentrant=False).sum().backward()
    assert steps == ["exp", "after", "exp"] and x.grad.tolist() == pytest.approx([2 * np.e] * 2)
    steps.clear()
    cp.checkpoint(f, x, use_reentrant=False, early_stop=False).sum().backward()
    assert steps == ["exp", "after", "exp", "after"]
    steps.clear()
    with cp.set_checkpoint_early_stop(False):
        cp.checkpoint(f, x, use_reentrant=False).sum().backward()
    assert steps == ["exp", "after", "exp", "after"]


def test_an_argument_changed_in_place_before_backward_is_refused(T):
    import importlib

    cp = importlib.import_module(T.__name__ + ".utils.checkpoint")
    x = T.ones(3, requires_grad=True)
    h = x * 1
    y = cp.checkpoint(lambda z: (z * z).sum(), h, use_reentrant=False)
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_a_backward_inside_the_checkpointed_function(T):
    import importlib

    cp = importlib.import_module(T.__name__ + ".utils.checkpoint")

    def slope(z):
        cube = (z ** 3).sum()
        g, = T.autograd.grad(cube, z, create_graph=True)  # 3 z², during the first run and the rerun
        return (g * z).sum()  # 3 z³: its derivative 9 z²

    x = T.tensor([1.0, 2.0], requires_grad=True)
    cp.checkpoint(slope, x, use_reentrant=False).backward()
    assert x.grad.tolist() == pytest.approx([9.0, 36.0])
