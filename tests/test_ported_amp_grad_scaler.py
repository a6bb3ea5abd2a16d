"""The CPU GradScaler tests of PyTorch's test/test_torch.py, ported (grad_scaling_*: unscale_, skipping a step on
inf/NaN, growth and backoff, state_dict, scaling nested outputs, clipping, a gradient penalty, accumulation, several
optimizers, the errors); autocast's own are in test_ported_amp.py.

Each test runs on chainrule's `autograd` and, where installed, on PyTorch (fixture `T`), against literals.
"""

import importlib
import pickle

import numpy as np
import pytest

from .test_ported_amp import nn_of, optim_of


def params_with_grads(T, grads):
    params = [T.zeros(g.shape, requires_grad=True) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g
    return params


@pytest.mark.parametrize("inject", [None, "inf", "nan"])
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "sliced"])
def test_grad_scaling_unscale(T, inject, layout):
    """unscale_ divides every gradient by the scale (dense, transposed, sliced) and finds an inf or NaN anywhere;
    step then skips the update."""
    g = T.full((6, 6), 4.0)
    second = g.clone()
    if inject:
        second[2, 2] = float(inject)
    second = {"contiguous": second, "transposed": second.t(), "sliced": second[:, :5]}[layout]
    params = params_with_grads(T, [g.clone(), second])
    optimizer = optim_of(T).SGD(params, lr=1.0)
    scaler = T.amp.GradScaler("cpu", init_scale=4.0)
    scaler.scale(T.ones(1))
    scaler.unscale_(optimizer)
    np.testing.assert_array_equal(params[0].grad.numpy(), np.ones((6, 6), np.float32))
    if inject is None:
        np.testing.assert_array_equal(params[1].grad.numpy(), np.ones(second.shape, np.float32))
    assert scaler.step(optimizer) is None
    stepped = not np.array_equal(params[0].detach().numpy(), np.zeros((6, 6)))
    assert stepped == (inject is None)
    scaler.update()
    assert scaler.get_scale() == (4.0 if inject is None else 2.0)


def test_grad_scaling_update_scale(T):
    """growth_interval=2: two clean steps double the scale; an inf halves it and restarts the count."""
    param = T.zeros(1, requires_grad=True)
    optimizer = optim_of(T).SGD([param], lr=1.0)
    scaler = T.amp.GradScaler("cpu", init_scale=4.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2)
    seen = []
    for grad in (1.0, 1.0, float("inf"), 1.0):
        scaler.scale(T.ones(1))
        param.grad = T.tensor([grad])
        scaler.step(optimizer)
        scaler.update()
        seen.append((scaler.get_scale(), scaler.state_dict()["_growth_tracker"]))
    assert seen == [(4.0, 1), (8.0, 0), (4.0, 0), (4.0, 1)]


def test_grad_scaling_growth_stops_at_a_finite_scale(T):
    scaler = T.amp.GradScaler("cpu", init_scale=2.0**127, growth_interval=1)
    param = T.zeros(1, requires_grad=True)
    optimizer = optim_of(T).SGD([param], lr=1.0)
    scaler.scale(T.ones(1))
    param.grad = T.zeros(1)
    scaler.step(optimizer)
    scaler.update()
    assert scaler.get_scale() == 2.0**127  # (2^128 overflows float32: kept)
    assert scaler.state_dict()["_growth_tracker"] == 0


def test_the_scale_is_float32(T):
    scaler = T.amp.GradScaler("cpu", init_scale=0.1)
    assert scaler.get_scale() == 0.1  # (before the first scale(): the number given)
    scaler.scale(T.ones(1))
    assert scaler.get_scale() == float(np.float32(0.1)) != 0.1
    scaler.update(new_scale=0.3)
    assert scaler.get_scale() == float(np.float32(0.3))
    scaler.update(new_scale=T.tensor(5.0))
    assert scaler.get_scale() == 5.0


@pytest.mark.parametrize("lazy", [False, True])
def test_grad_scaling_state_dict(T, lazy):
    s0 = T.amp.GradScaler("cpu", init_scale=3.0, growth_factor=4.0, backoff_factor=0.5, growth_interval=2)
    s1 = T.amp.GradScaler("cpu", init_scale=6.0, growth_factor=7.0, backoff_factor=0.8, growth_interval=1)
    if lazy:
        s1.scale(T.full((1,), 4.0))
    s1.load_state_dict(s0.state_dict())
    assert s1.state_dict() == {"scale": 3.0, "growth_factor": 4.0, "backoff_factor": 0.5, "growth_interval": 2,
                               "_growth_tracker": 0}
    assert s1.get_scale() == 3.0 and s1.get_growth_factor() == 4.0 and s1.get_backoff_factor() == 0.5
    assert s1.get_growth_interval() == 2
    np.testing.assert_array_equal(s1.scale(T.full((1,), 4.0)).numpy(), [12.0])


def test_a_disabled_scaler_passes_everything_through(T):
    scaler = T.amp.GradScaler("cpu", enabled=False)
    x = T.ones(2)
    assert scaler.scale(x) is x and scaler.get_scale() == 1.0 and not scaler.is_enabled()
    assert scaler.state_dict() == {}
    scaler.update()  # (no inf checks needed)
    enabled = T.amp.GradScaler("cpu")
    with pytest.raises(RuntimeError, match="The source state dict is empty"):
        enabled.load_state_dict(scaler.state_dict())


def test_grad_scaling_scale_nested_outputs(T):
    scaler = T.amp.GradScaler("cpu", init_scale=2.0)
    t0, t1 = T.full((1,), 4.0), T.full((1,), 4.0)
    outputs = scaler.scale((t1.clone(), (t0.clone(), t1.clone()), [t0.clone(), (t1.clone(), t0.clone())]))
    assert isinstance(outputs, tuple) and isinstance(outputs[1], tuple) and isinstance(outputs[2], list)
    flat = [outputs[0], *outputs[1], outputs[2][0], *outputs[2][1]]
    assert [float(t.item()) for t in flat] == [8.0] * 6
    scaled = scaler.scale(t for t in (t0, t1))  # (another iterable: scaled lazily, as a map)
    assert [float(t.item()) for t in scaled] == [8.0, 8.0]
    with pytest.raises(ValueError, match="outputs must be a Tensor or an iterable of Tensors"):
        scaler.scale(4.0)


def test_grad_scaler_errors(T):
    with pytest.raises(AssertionError, match="The growth factor must be > 1.0."):
        T.amp.GradScaler("cpu", growth_factor=1.0)
    with pytest.raises(AssertionError, match="The backoff factor must be < 1.0."):
        T.amp.GradScaler("cpu", backoff_factor=1.0)
    param = T.zeros(2, requires_grad=True)
    optimizer = optim_of(T).SGD([param], lr=1.0)
    scaler = T.amp.GradScaler("cpu")
    for call in (lambda: scaler.step(optimizer), lambda: scaler.unscale_(optimizer), scaler.update):
        with pytest.raises(AssertionError, match="but _scale is None"):
            call()
    scaler.scale(T.ones(1))
    without_grads = optim_of(T).SGD([T.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(AssertionError, match="No inf checks were recorded for this optimizer."):
        scaler.step(without_grads)  # (no gradient to check)
    param.grad = T.ones(2)
    with pytest.raises(RuntimeError, match="Closure use is not currently supported if GradScaler is enabled."):
        scaler.step(optimizer, closure=lambda: None)
    scaler.unscale_(optimizer)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) has already been called on this optimizer"):
        scaler.unscale_(optimizer)
    scaler.step(optimizer)
    with pytest.raises(RuntimeError, match="step\\(\\) has already been called since the last update\\(\\)."):
        scaler.step(optimizer)
    with pytest.raises(RuntimeError, match="unscale_\\(\\) is being called after step\\(\\)."):
        scaler.unscale_(optimizer)
    with pytest.raises(AssertionError, match="A GradScaler instance may only be pickled"):
        pickle.dumps(scaler)
    scaler.update()
    with pytest.raises(AssertionError, match="No inf checks were recorded prior to update."):
        scaler.update()
    for bad in (T.ones(2), T.ones(1, requires_grad=True)):
        with pytest.raises(AssertionError, match="new_scale should be a float or a 1-element"):
            scaler.update(new_scale=bad)
    half = T.zeros(2, dtype=T.float16, requires_grad=True)
    half.grad = T.ones(2, dtype=T.float16)
    with pytest.raises(ValueError, match="Attempting to unscale FP16 gradients."):
        scaler.unscale_(optim_of(T).SGD([half], lr=1.0))


def test_grad_scaler_pickles_between_iterations(T):
    scaler = T.amp.GradScaler("cpu", init_scale=8.0, growth_interval=3)
    param = T.zeros(1, requires_grad=True)
    optimizer = optim_of(T).SGD([param], lr=1.0)
    scaler.scale(T.ones(1))
    param.grad = T.ones(1)
    scaler.step(optimizer)
    scaler.update()
    copy = pickle.loads(pickle.dumps(scaler))
    assert copy.state_dict() == {"scale": 8.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 3,
                                 "_growth_tracker": 1}


# Training against an unscaled control (test_torch.py's _run_scaling_case): 4 iterations, the third skipped
# (its gradient set to inf after backward), growth_interval=1; the scaled model must end where the control ends.


def scaling_models(T):
    nn = nn_of(T)
    T.manual_seed(0)
    control = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    scaled = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
    with T.no_grad():
        for c, s in zip(control.parameters(), scaled.parameters()):
            s.copy_(c)
    data = [(T.randn(8, 8), T.randn(8, 8)) for _ in range(4)]
    return control, scaled, data


def default_run(T, data, model, optimizer, scaler, loss_fn, skip_iter, scaling):
    for i, (x, target) in enumerate(data):
        optimizer.zero_grad()
        loss = loss_fn(model(x), target)
        if scaling:
            scaler.scale(loss).backward()
            if i == skip_iter and scaler.is_enabled():
                with T.no_grad():
                    model[1].weight.grad.fill_(float("inf"))
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if not scaler.is_enabled() or i != skip_iter:
                optimizer.step()


def clipping_run(T, data, model, optimizer, scaler, loss_fn, skip_iter, scaling, max_norm=0.2):
    """Clipping the scaled gradients to max_norm · scale."""
    clip = nn_of(T).utils.clip_grad_norm_
    for i, (x, target) in enumerate(data):
        optimizer.zero_grad()
        loss = loss_fn(model(x), target)
        if scaling:
            scaler.scale(loss).backward()
            clip(model.parameters(), max_norm * scaler.get_scale())
            if i == skip_iter and scaler.is_enabled():
                model[1].weight.grad.data.fill_(float("inf"))
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            clip(model.parameters(), max_norm)
            if not scaler.is_enabled() or i != skip_iter:
                optimizer.step()


def separate_unscale_run(T, data, model, optimizer, scaler, loss_fn, skip_iter, scaling, max_norm=0.2):
    """unscale_ first, then clip the true gradients (an inf one gives a non-finite norm, not an error)."""
    clip = nn_of(T).utils.clip_grad_norm_
    for i, (x, target) in enumerate(data):
        optimizer.zero_grad()
        loss = loss_fn(model(x), target)
        if scaling:
            scaler.scale(loss).backward()
            if i == skip_iter and scaler.is_enabled():
                model[1].weight.grad.data.fill_(float("inf"))
            scaler.unscale_(optimizer)
            clip(model.parameters(), max_norm, error_if_nonfinite=False)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            clip(model.parameters(), max_norm)
            if not scaler.is_enabled() or i != skip_iter:
                optimizer.step()


def penalty_run(T, data, model, optimizer, scaler, loss_fn, skip_iter, scaling):
    """A gradient penalty: the gradients of the scaled loss, unscaled by hand, their norm added to the loss."""
    for i, (x, target) in enumerate(data):
        optimizer.zero_grad()
        loss = loss_fn(model(x), target)
        params = list(model.parameters())
        if scaling:
            grads = T.autograd.grad(scaler.scale(loss), params, create_graph=True)
            grads = [g * (1.0 / scaler.get_scale()) for g in grads]
        else:
            grads = T.autograd.grad(loss, params, create_graph=True)
        loss = loss + sum(g.pow(2).sum() for g in grads).sqrt()
        if scaling:
            scaler.scale(loss).backward()
            if i == skip_iter and scaler.is_enabled():
                model[1].weight.grad.data.fill_(float("inf"))
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if not scaler.is_enabled() or i != skip_iter:
                optimizer.step()


def accumulation_run(T, data, model, optimizer, scaler, loss_fn, skip_iter, scaling, every=2):
    """Gradients of two iterations summed before each step (skip_iter -1: nothing skipped)."""
    for i, (x, target) in enumerate(data):
        loss = loss_fn(model(x), target) / every
        if scaling:
            scaler.scale(loss).backward()
        else:
            loss.backward()
        if (i + 1) % every == 0:
            if scaling:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad()


RUNS = {"default": (default_run, 3, 1, 1e-7), "clipping": (clipping_run, 3, 1, 1e-5),
        "separate_unscale": (separate_unscale_run, 3, 1, 1e-5), "penalty": (penalty_run, 3, 1, 1e-5),
        "accumulation": (accumulation_run, 2, 0, 1e-6)}


def run_scaling_case(T, name, enabled):
    run, unskipped, skipped, atol = RUNS[name]
    control, scaled, data = scaling_models(T)
    optim = optim_of(T)
    opt_control, opt_scaled = optim.SGD(control.parameters(), lr=1.0), optim.SGD(scaled.parameters(), lr=1.0)
    loss_fn = nn_of(T).MSELoss()
    skip_iter = -1 if name == "accumulation" else 2
    scaler = T.amp.GradScaler("cpu", init_scale=128.0, growth_factor=2.0, enabled=enabled, growth_interval=1)
    run(T, data, control, opt_control, scaler, loss_fn, skip_iter, False)
    run(T, data, scaled, opt_scaled, scaler, loss_fn, skip_iter, True)
    expected_scale = 128.0 * 2.0**unskipped * 0.5**skipped if enabled else 1.0
    assert scaler.get_scale() == expected_scale
    for c, s in zip(control.parameters(), scaled.parameters()):
        np.testing.assert_allclose(s.detach().numpy(), c.detach().numpy(), atol=atol, rtol=1e-5)
    return [p.detach().numpy() for p in scaled.parameters()]


@pytest.mark.parametrize("enabled", [True, False])
@pytest.mark.parametrize("name", list(RUNS))
def test_grad_scaling_runs(T, name, enabled):
    run_scaling_case(T, name, enabled)


@pytest.mark.torch
@pytest.mark.parametrize("name", list(RUNS))
def test_grad_scaling_runs_end_where_pytorch_ends(name):
    torch = pytest.importorskip("torch")
    ours = run_scaling_case(importlib.import_module("autograd"), name, True)
    theirs = run_scaling_case(torch, name, True)
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_grad_scaling_multiple(T):
    """Two models, two optimizers, two losses summed from both; one optimizer's gradient made inf in the third
    iteration: that step skipped alone, and the scale backs off once for both."""
    nn, optim = nn_of(T), optim_of(T)
    control0, scaled0, data = scaling_models(T)
    control1, scaled1, _ = scaling_models(T)
    scaler = T.amp.GradScaler("cpu", init_scale=128.0, growth_factor=2.0, growth_interval=1)
    loss_fn = nn.MSELoss()
    for models, scaling in (((control0, control1), False), ((scaled0, scaled1), True)):
        optimizers = [optim.SGD(m.parameters(), lr=1.0) for m in models]
        for i, (x, target) in enumerate(data):
            for o in optimizers:
                o.zero_grad()
            out0, out1 = models[0](x), models[1](x)
            loss0 = loss_fn(0.3 * out0 + 0.7 * out1, target)
            loss1 = loss_fn(0.6 * out0 - 0.4 * out1, target)
            if scaling:
                scaler.scale(loss0).backward(retain_graph=True)
                scaler.scale(loss1).backward()
                if i == 2:
                    models[1][1].weight.grad.data.fill_(float("inf"))
                scaler.unscale_(optimizers[0])  # (one unscaled by hand, one by step)
                scaler.step(optimizers[0])
                scaler.step(optimizers[1])
                scaler.update()
            else:
                loss0.backward(retain_graph=True)
                loss1.backward()
                optimizers[0].step()
                if i != 2:
                    optimizers[1].step()
    assert scaler.get_scale() == 128.0 * 2.0**3 * 0.5
    for control, scaled in ((control0, scaled0), (control1, scaled1)):
        for c, s in zip(control.parameters(), scaled.parameters()):
            np.testing.assert_allclose(s.detach().numpy(), c.detach().numpy(), atol=1e-6, rtol=1e-5)


def test_scaled_loss_keeps_its_dtype(T):
    scaler = T.amp.GradScaler("cpu", init_scale=2.0**10)
    for dtype in (T.float16, T.float32, T.float64):
        out = scaler.scale(T.ones(2, dtype=dtype))
        assert out.dtype == dtype
        np.testing.assert_array_equal(out.double().numpy(), [1024.0, 1024.0])


def test_the_deprecated_cpu_spelling_warns(T):
    with pytest.warns(FutureWarning, match="GradScaler"):
        scaler = T.cpu.amp.GradScaler(init_scale=8.0)
    assert scaler.get_scale() == 8.0
