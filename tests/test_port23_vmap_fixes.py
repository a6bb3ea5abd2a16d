"""Focused tests of the library fixes made while porting test/functorch/test_vmap.py (tests/test_ported_vmap.py):
randomness='error' refuses a draw from any generator, at the draw; backward() inside a transform is refused;
vmap's argument errors are checked when it is called."""

import importlib

import numpy as np
import pytest

from tests.ported import raises, same
from tests.ported_func import t


@pytest.fixture
def fn(T):
    return importlib.import_module(T.__name__ + ".func")


def test_randomness_error_refuses_a_generator_of_ones_own_and_leaves_draws_working_after(T, fn):
    g = T.Generator().manual_seed(0)
    raises(RuntimeError, "called random operation while in randomness error mode",
           fn.vmap(lambda a: a + T.rand(3, generator=g)), t(T, np.ones((2, 3))))
    # the refusal ends with the call, even one that raised; the generator state read inside is no draw
    np.testing.assert_allclose(T.rand(3, generator=g).numpy(), [0.4962566, 0.7682218, 0.0884774], atol=1e-6)
    states = fn.vmap(lambda a: a + T.get_rng_state()[:3].double())(t(T, np.zeros((2, 3))))
    same(states[0], states[1].numpy())


@pytest.mark.parametrize("transform", ["vmap", "grad"])
def test_backward_inside_a_transform_is_refused(T, fn, transform):
    w = t(T, [1.0, 2.0]).requires_grad_()

    def f(a):
        (a * w).sum().backward()
        return (a * a).sum()

    raises(RuntimeError, "backward\\(\\) called inside a functorch transform", getattr(fn, transform)(f),
           t(T, [1.0, 2.0]))
    assert w.grad is None
    (w * w).sum().backward()  # and works again after
    same(w.grad, [2.0, 4.0])


def test_argument_errors_come_when_vmap_is_called(T, fn):
    bad_out_dims = fn.vmap(T.sin, out_dims="a")  # (vmap itself accepts it: the call refuses it)
    raises(ValueError, "`out_dims` must be an int, None or a python collection of ints", bad_out_dims,
           t(T, [1.0]))
    raises(ValueError, "expected `in_dims` to be int", fn.vmap(T.sin, in_dims=None), t(T, [1.0]))


def _nn(T):
    return importlib.import_module("torch.nn" if T.__name__ == "torch" else "nn")


def test_training_batch_norm_with_running_statistics_is_refused_under_vmap(T, fn):
    nn = _nn(T)
    x = t(T, np.arange(24.0).reshape(4, 2, 3))
    bn = nn.BatchNorm1d(3).double()
    raises(RuntimeError, "Batch norm got a batched tensor as input while the running_mean or running_var",
           fn.vmap(bn), x)
    same(bn.running_mean, [0.0, 0.0, 0.0])  # (refused before any example moved them)
    # eval mode, and a module patched to keep no running statistics, normalise each example by itself
    same(fn.vmap(bn.eval())(x)[1], (np.arange(6.0, 12.0).reshape(2, 3)) / np.sqrt(1 + 1e-5))
    patched = nn.BatchNorm1d(3).double()
    fn.replace_all_batch_norm_modules_(patched)
    np.testing.assert_allclose(fn.vmap(patched)(x).detach().numpy(), np.tile([[-1.0], [1.0]], (4, 1, 3)), atol=1e-4)


def test_training_batch_norm_with_batched_running_statistics_moves_each_examples(T, fn):
    F = importlib.import_module(_nn(T).__name__ + ".functional")
    x = t(T, np.arange(24.0).reshape(4, 2, 3))
    running_mean, running_var = t(T, np.zeros((4, 3))), t(T, np.ones((4, 3)))
    out = fn.vmap(lambda a, m, v: F.batch_norm(a, m, v, training=True))(x, running_mean, running_var)
    np.testing.assert_allclose(out.numpy(), np.tile([[-1.0], [1.0]], (4, 1, 3)), atol=1e-4)
    means = np.arange(24.0).reshape(4, 2, 3).mean(1)  # each example's channel means, and unbiased variance 4.5
    np.testing.assert_allclose(running_mean.numpy(), 0.1 * means, rtol=1e-12)
    np.testing.assert_allclose(running_var.numpy(), np.full((4, 3), 0.9 + 0.1 * 4.5), rtol=1e-12)


def test_a_transform_in_one_thread_refuses_nothing_in_another():
    """What a running transform refuses (backward(), and random draws under randomness='error') is refused in its
    own thread only, as PyTorch's functorch state is per thread: a DataLoader thread or a second trainer is not."""
    import threading

    import autograd
    from autograd.differentiate import inside_a_transform
    from autograd.random import refusing_draws

    results = []

    def other_thread():
        x = autograd.ones(2, requires_grad=True)
        (x * 2).sum().backward()
        results.append((x.grad.tolist(), tuple(autograd.rand(3).shape)))

    with inside_a_transform(), refusing_draws():
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        with pytest.raises(RuntimeError, match="backward\\(\\) called inside a functorch transform"):
            (autograd.ones(2, requires_grad=True) * 2).sum().backward()
        with pytest.raises(RuntimeError, match="randomness error mode"):
            autograd.rand(3)
    assert results == [([2.0, 2.0], (3,))]


def test_a_vmap_in_one_thread_leaves_another_threads_batch_norm_alone():
    """The examples a running vmap handed its function are this thread's: a training BatchNorm in another thread,
    with running statistics of its own, is no unbatched tensor beside batched ones, and moves them."""
    import threading

    import autograd
    import nn as chainrule_nn
    from autograd import func

    norm = chainrule_nn.BatchNorm1d(2)
    moved = []

    def other_thread():
        norm(autograd.tensor([[1.0, 2.0], [3.0, 6.0]]))
        moved.append(norm.running_mean.tolist())

    def example(x):
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        with pytest.raises(RuntimeError, match="Batch norm got a batched tensor"):  # (in vmap's own thread)
            chainrule_nn.functional.batch_norm(x.reshape(1, 2).expand(2, 2), autograd.zeros(2), autograd.ones(2),
                                               training=True)
        return x * 2

    np.testing.assert_array_equal(func.vmap(example)(autograd.ones(1, 2)).numpy(), [[2.0, 2.0]])
    np.testing.assert_allclose(moved, [[0.2, 0.4]], rtol=1e-6)
