"""Layer, group, instance and training batch norm as one node (``AffineNormalization``), and batch norm in
evaluation (``RunningNormalization``): the same outputs,
gradients and running statistics as the composite it replaced (``normalize`` then ``scale_and_shift``, still the
path for float16, channels-last maps, tracked instance statistics and meta tensors), bit for bit, over inputs
holding NaN, ±inf and ±0, in float32 and float64, contiguous or not, with γ and β given or not; second
derivatives, saved-tensor hooks, an output written in place, a saved input written in place; and PyTorch's
values where it is installed."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from autograd.ops import normalization

C = 6
FUNCTIONS = {  # x of shape (4, C, 5, 7)
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (5, 7), w, b), (5, 7), "NativeLayerNormBackward0"),
    "layer_norm_last": (lambda x, w, b: F.layer_norm(x, (7,), w, b), (7,), "NativeLayerNormBackward0"),
    "group_norm": (lambda x, w, b: F.group_norm(x, 3, w, b), (C,), "NativeGroupNormBackward0"),
    "instance_norm": (lambda x, w, b: F.instance_norm(x, weight=w, bias=b), (C,), "ViewBackward0"),
    "batch_norm": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), (C,), "NativeBatchNormBackward0"),
    "batch_norm_eval": (lambda x, w, b: F.batch_norm(x, *_running(x.dtype), w, b), (C,), "NativeBatchNormBackward0"),
}


def _running(dtype):
    """Running statistics for evaluation: a mean and a variance per channel (one variance 0, normalised by eps)."""
    return (autograd.tensor(np.linspace(-1, 2, C), dtype=dtype),
            autograd.tensor(np.linspace(0, 3, C) ** 2, dtype=dtype))


def _inputs(dtype, special, seed=0, transposed=False):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((4, C, 5, 7)) * 3 + 1).astype(dtype)
    if special:  # NaN, ±inf and ±0 among the values: whole groups NaN, others untouched
        x.flat[::211] = np.nan
        x.flat[13::307] = np.inf
        x.flat[29::401] = -np.inf
        x.flat[7::17] = -0.0
        x.flat[11::19] = 0.0
    grad = rng.standard_normal(x.shape).astype(dtype)
    if transposed:  # the same values, stored with the last two dims swapped
        x = np.ascontiguousarray(x.swapaxes(-1, -2)).swapaxes(-1, -2)
    return x, grad


def _run(function, x, weight, bias, grad, composite, monkeypatch):
    """Output and the gradients of x, γ and β, through the one node or (``composite``) the composite."""
    with monkeypatch.context() as patch:
        if composite:
            patch.setattr(normalization, "fits", lambda *tensors: False)
        leaves = [None if a is None else autograd.tensor(a, requires_grad=True) for a in (x, weight, bias)]
        y = function(*leaves)
        y.backward(autograd.tensor(grad))
    return y, [y.detach().numpy()] + [None if t is None else t.grad.numpy() for t in leaves]


def _identical(a, b):
    """The same values, bit for bit, -0 apart from 0 (NaN's sign is no value: a NaN is a NaN)."""
    return (a is None and b is None) or (
        a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True)
        and np.array_equal(np.signbit(a) & ~np.isnan(a), np.signbit(b) & ~np.isnan(b)))


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("special", [False, True])
@pytest.mark.parametrize("affine", [(True, True), (True, False), (False, True), (False, False)])
def test_outputs_and_gradients_are_the_composites_bit_for_bit(name, dtype, special, affine, monkeypatch):
    function, parameter_shape, node = FUNCTIONS[name]
    x, grad = _inputs(dtype, special, transposed=name.startswith("layer"))
    rng = np.random.default_rng(1)
    weight, bias = (rng.standard_normal(parameter_shape).astype(dtype) if given else None for given in affine)
    y, fused = _run(function, x, weight, bias, grad, False, monkeypatch)
    node_class = "RunningNormalization" if name.endswith("eval") else "AffineNormalization"
    assert type(y.grad_fn).__name__ == node_class and y.grad_fn.name() == node
    _, composite = _run(function, x, weight, bias, grad, True, monkeypatch)
    assert all(_identical(a, b) for a, b in zip(fused, composite))  # y, dL/dx, dL/dγ, dL/dβ


def test_batch_norm_running_statistics_are_the_composites(monkeypatch):
    x, grad = _inputs(np.float32, False)
    moved = []
    for composite in (False, True):
        with monkeypatch.context() as patch:
            if composite:
                patch.setattr(normalization, "fits", lambda *tensors: False)
            layer = nn.BatchNorm2d(C)
            for _ in range(2):
                layer(autograd.tensor(x)).sum().backward()
            moved.append((layer.running_mean.numpy(), layer.running_var.numpy(), layer.num_batches_tracked.item()))
    assert all(_identical(a, b) for a, b in zip(moved[0][:2], moved[1][:2])) and moved[0][2] == moved[1][2] == 2


@pytest.mark.parametrize("name", list(FUNCTIONS))
def test_second_derivatives_are_the_composites(name, monkeypatch):
    """create_graph: the gradient's own graph runs through the composite's ops, so a second derivative (here of
    Σ (dL/dx)², which reaches x, γ and β) agrees with the composite's to rounding."""
    function, parameter_shape, _ = FUNCTIONS[name]
    x, grad = _inputs(np.float64, False)
    rng = np.random.default_rng(3)
    weight, bias = (rng.standard_normal(parameter_shape) for _ in range(2))
    results = []
    for composite in (False, True):
        with monkeypatch.context() as patch:
            if composite:
                patch.setattr(normalization, "fits", lambda *tensors: False)
            leaves = [autograd.tensor(a, requires_grad=True) for a in (x, weight, bias)]
            y = function(*leaves)
            (grad_x,) = autograd.grad(y, leaves[0], autograd.tensor(grad), create_graph=True)
            results.append([None if g is None else g.numpy()
                            for g in autograd.grad((grad_x * grad_x).sum(), leaves, allow_unused=True)])
    assert results[0][2] is None and results[1][2] is None  # (β moves y, not dL/dx)
    for fused, composite in zip(results[0][:2], results[1][:2]):
        if composite is None:  # (in evaluation dL/dx = γ g σ⁻¹ does not depend on x)
            assert fused is None and name == "batch_norm_eval"
            continue
        np.testing.assert_allclose(fused, composite, rtol=1e-9, atol=1e-9 * np.abs(composite).max())


def test_under_saved_tensor_hooks_the_backward_computes_the_statistics_again(monkeypatch):
    x, grad = _inputs(np.float32, False)
    weight = np.linspace(0.5, 2, 7, dtype=np.float32)
    _, plain = _run(lambda x, w, b: F.layer_norm(x, (7,), w, b), x, weight, None, grad, False, monkeypatch)
    packed = []
    leaves = [autograd.tensor(a, requires_grad=True) for a in (x, weight)]
    with autograd.autograd.graph.saved_tensors_hooks(lambda t: packed.append(t) or t, lambda t: t):
        y = F.layer_norm(leaves[0], (7,), leaves[1])
    assert y.grad_fn.normalized is None and y.grad_fn.rstd is None and packed
    y.backward(autograd.tensor(grad))
    assert _identical(leaves[0].grad.numpy(), plain[1]) and _identical(leaves[1].grad.numpy(), plain[2])


def test_an_output_without_affine_step_may_be_written_in_place():
    """InstanceNorm2d then ReLU(inplace=True), as CycleGAN's generator: x̂ is the output, so the node does not keep
    it, and the backward computes it again from x (the gradient is that of relu(x̂))."""
    x, grad = _inputs(np.float64, False)
    a, b = autograd.tensor(x, requires_grad=True), autograd.tensor(x, requires_grad=True)
    nn.ReLU(inplace=True)(F.instance_norm(a)).backward(autograd.tensor(grad))
    F.instance_norm(b).relu().backward(autograd.tensor(grad))
    assert _identical(a.grad.numpy(), b.grad.numpy())


def test_a_saved_input_written_in_place_refuses_the_backward():
    x = autograd.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    h = x * 1
    y = F.layer_norm(h, (4,))
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


def test_a_second_backward_says_the_graph_was_freed():
    x = autograd.tensor(np.arange(12.0).reshape(3, 4), requires_grad=True)
    y = F.layer_norm(x, (4,), autograd.ones(4, dtype=autograd.float64, requires_grad=True))
    y.sum().backward()
    assert y.grad_fn.normalized is None
    with pytest.raises(RuntimeError, match="second time|freed"):
        y.sum().backward()


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_and_gradients_match_pytorch(name, dtype):
    torch = pytest.importorskip("torch")
    import torch.nn.functional as TF

    theirs = {
        "layer_norm": lambda x, w, b: TF.layer_norm(x, (5, 7), w, b),
        "layer_norm_last": lambda x, w, b: TF.layer_norm(x, (7,), w, b),
        "group_norm": lambda x, w, b: TF.group_norm(x, 3, w, b),
        "instance_norm": lambda x, w, b: TF.instance_norm(x, weight=w, bias=b),
        "batch_norm": lambda x, w, b: TF.batch_norm(x, None, None, w, b, training=True),
        "batch_norm_eval": lambda x, w, b: TF.batch_norm(x, *(torch.tensor(t.numpy()) for t in _running(dtype)),
                                                         w, b),
    }[name]
    function, parameter_shape, node = FUNCTIONS[name]
    x, grad = _inputs(dtype, False)
    rng = np.random.default_rng(4)
    weight, bias = (rng.standard_normal(parameter_shape).astype(dtype) for _ in range(2))
    ours = [autograd.tensor(a, requires_grad=True) for a in (x, weight, bias)]
    reference = [torch.tensor(a, requires_grad=True) for a in (x, weight, bias)]
    y, expected = function(*ours), theirs(*reference)
    y.backward(autograd.tensor(grad))
    expected.backward(torch.tensor(grad))
    assert y.grad_fn.name() == expected.grad_fn.name() == node
    eps = np.finfo(dtype).eps
    for a, b in zip([y] + [t.grad for t in ours], [expected] + [t.grad for t in reference]):
        b = b.detach().numpy()
        np.testing.assert_allclose(a.detach().numpy(), b, rtol=0, atol=64 * eps * np.abs(b).max())


def test_evaluation_keeps_the_statistics_it_normalised_by(monkeypatch):
    """Running statistics moved in place after an evaluation forward (a training step between the forward and the
    backward) leave its gradients alone: the node normalised by the statistics as they were, as the composite."""
    x, grad = _inputs(np.float32, False)
    weight = np.linspace(0.5, 2, C, dtype=np.float32)
    results = []
    for composite in (False, True):
        with monkeypatch.context() as patch:
            if composite:
                patch.setattr(normalization, "fits", lambda *tensors: False)
            running = _running(np.float32)
            leaves = [autograd.tensor(a, requires_grad=True) for a in (x, weight)]
            y = F.batch_norm(leaves[0], *running, leaves[1])
            running[0].add_(5.0)
            running[1].mul_(3.0)
            y.backward(autograd.tensor(grad))
            results.append([y.detach().numpy(), leaves[0].grad.numpy(), leaves[1].grad.numpy()])
    assert all(_identical(a, b) for a, b in zip(*results))


def test_training_batch_norm_moves_its_running_statistics_before_it_saves_anything():
    """As PyTorch's kernel: a non-reentrant checkpoint's recomputation stops once it has the saved tensors, and
    must have moved the running statistics by then (checkpoint_sequential over a BatchNorm1d)."""
    layer = nn.BatchNorm1d(3)
    x = autograd.tensor(np.arange(12.0, dtype=np.float32).reshape(4, 3), requires_grad=True)
    seen = []
    with autograd.autograd.graph.saved_tensors_hooks(lambda t: seen.append(layer.running_mean.numpy().copy()) or t,
                                                      lambda t: t):
        layer(x)
    np.testing.assert_allclose(seen[0], 0.1 * np.array([4.5, 5.5, 6.5]), rtol=1e-6)


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("wanted", [(False, True, True), (True, False, True), (True, True, False)])
def test_gradients_of_some_inputs_only_are_the_composites(name, wanted, monkeypatch):
    """x, γ or β left out of the gradient (a frozen input, a frozen γ): the others' gradients, bit for bit."""
    function, parameter_shape, _ = FUNCTIONS[name]
    x, grad = _inputs(np.float32, False)
    rng = np.random.default_rng(5)
    weight, bias = (rng.standard_normal(parameter_shape).astype(np.float32) for _ in range(2))
    results = []
    for composite in (False, True):
        with monkeypatch.context() as patch:
            if composite:
                patch.setattr(normalization, "fits", lambda *tensors: False)
            leaves = [autograd.tensor(a, requires_grad=flag) for a, flag in zip((x, weight, bias), wanted)]
            function(*leaves).backward(autograd.tensor(grad))
            results.append([None if t.grad is None else t.grad.numpy() for t in leaves])
    assert [g is None for g in results[0]] == [not flag for flag in wanted]
    assert all(_identical(a, b) for a, b in zip(*results))
