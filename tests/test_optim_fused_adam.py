"""``optim.Adam(fused=True)`` / ``AdamW(fused=True)`` and ``autograd._fused_adam_`` / ``_fused_adamw_``:
the same arithmetic as the method-by-method step, to the last bit, in one call per parameter."""

import numpy as np
import pytest

import autograd
import optim

CONFIGS = [("Adam", {}), ("Adam", dict(weight_decay=0.1)), ("Adam", dict(amsgrad=True)),
           ("Adam", dict(maximize=True, betas=(0.8, 0.9), eps=1e-6)), ("AdamW", {}),
           ("AdamW", dict(weight_decay=0.3, amsgrad=True)),
           ("Adam", dict(decoupled_weight_decay=True, weight_decay=0.2))]


def trajectory(name, config, fused, dtype=np.float32, steps=6):
    rng = np.random.default_rng(0)
    params = [autograd.tensor(rng.standard_normal(shape).astype(dtype), requires_grad=True)
              for shape in ((5, 3), (3,), ())]
    optimizer = getattr(optim, name)(params, lr=0.05, fused=fused, **config)
    for step in range(steps):
        for p in params:
            p.grad = autograd.tensor(rng.standard_normal(p.shape).astype(dtype) * (step + 1))
        optimizer.step()
    return [p.numpy().copy() for p in params], optimizer


@pytest.mark.parametrize(("name", "config"), CONFIGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_is_the_same_step_to_the_last_bit(name, config, dtype):
    fused, fused_optimizer = trajectory(name, config, True, dtype)
    plain, plain_optimizer = trajectory(name, config, False, dtype)
    for a, b in zip(fused, plain):
        np.testing.assert_array_equal(a, b)
    for p_fused, p_plain in zip(fused_optimizer.param_groups[0]["params"], plain_optimizer.param_groups[0]["params"]):
        for key, value in plain_optimizer.state[p_plain].items():
            np.testing.assert_array_equal(fused_optimizer.state[p_fused][key].numpy(), value.numpy())


@pytest.mark.parametrize(("name", "config"), CONFIGS)
def test_fused_follows_torch_fused_trajectory(name, config):
    torch = pytest.importorskip("torch")
    ours, _ = trajectory(name, config, True)
    rng = np.random.default_rng(0)
    params = [torch.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
              for shape in ((5, 3), (3,), ())]
    optimizer = getattr(torch.optim, name)(params, lr=0.05, fused=True, **config)
    for step in range(6):
        for p in params:
            p.grad = torch.tensor(rng.standard_normal(tuple(p.shape)).astype(np.float32) * (step + 1))
        optimizer.step()
    for a, p in zip(ours, params):
        np.testing.assert_allclose(a, p.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_the_fused_step_moves_each_written_tensor_version():
    w = autograd.tensor([1.0, -2.0], requires_grad=True)
    optimizer = optim.Adam([w], fused=True)
    w.grad = autograd.tensor([0.5, 0.25])
    loss = (w * w).sum()  # saved w: a step changes it, so this graph must refuse backward
    version = w._version
    optimizer.step()
    assert w._version > version
    assert optimizer.state[w]["exp_avg"]._version == 1 and optimizer.state[w]["exp_avg_sq"]._version == 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_the_functions_take_pytorchs_arguments_and_skip_a_step_with_found_inf():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    values = [rng.standard_normal(4).astype(np.float32) for _ in range(4)]
    for decoupled, ours_fn, theirs_fn in ((False, autograd._fused_adam_, torch._fused_adam_),
                                          (True, autograd._fused_adamw_, torch._fused_adamw_)):
        for scale, inf in ((None, None), (2.0, 0.0), (2.0, 1.0)):
            results = []
            for lib, fn in ((autograd, ours_fn), (torch, theirs_fn)):
                p, g, m = (lib.tensor(v.copy()) for v in values[:3])
                v = lib.tensor(np.abs(values[3]))
                extra = {} if scale is None else dict(grad_scale=lib.tensor(scale), found_inf=lib.tensor(inf))
                fn([p], [g], [m], [v], [], [lib.tensor(3.0)], lr=0.01, beta1=0.9, beta2=0.99, weight_decay=0.05,
                   eps=1e-8, amsgrad=False, maximize=decoupled, **extra)
                results.append([t.numpy() if lib is autograd else t.numpy() for t in (p, m, v)])
            for a, b in zip(*results):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
            if inf:
                np.testing.assert_array_equal(results[0][0], values[0])  # skipped: unchanged


def test_fused_refuses_differentiable_and_grad_mode_writes():
    w = autograd.tensor([1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="`fused` does not support `differentiable`"):
        optim.Adam([w], fused=True, differentiable=True)
    with pytest.raises(RuntimeError, match="not differentiable.*no_grad"):
        autograd._fused_adam_([w], [autograd.ones(1)], [autograd.zeros(1)], [autograd.zeros(1)], [],
                              [autograd.tensor(1.0)], lr=0.1, beta1=0.9, beta2=0.99, weight_decay=0.0, eps=1e-8,
                              amsgrad=False, maximize=False)
