"""``optim.Adam(fused=True)`` / ``AdamW(fused=True)`` and ``autograd._fused_adam_`` / ``_fused_adamw_``:
the same arithmetic as the method-by-method step, to the last bit, in one call per parameter. The default
Adam takes the same call where nothing can tell them apart; a Tensor subclass that overrides a method the
step calls (``Stepped`` here) gets the method-by-method step."""

import numpy as np
import pytest

import autograd
import optim

CONFIGS = [("Adam", {}), ("Adam", dict(weight_decay=0.1)), ("Adam", dict(amsgrad=True)),
           ("Adam", dict(maximize=True, betas=(0.8, 0.9), eps=1e-6)), ("AdamW", {}),
           ("AdamW", dict(weight_decay=0.3, amsgrad=True)),
           ("Adam", dict(decoupled_weight_decay=True, weight_decay=0.2))]


class Stepped(autograd.Tensor):
    """A Tensor subclass with its own addcdiv_ (counting its calls): the optimizer must step through it."""

    calls = 0

    def addcdiv_(self, *args, **kwargs):
        Stepped.calls += 1
        return super().addcdiv_(*args, **kwargs)


def trajectory(name, config, fused, dtype=np.float32, steps=6, kind=autograd.Tensor):
    rng = np.random.default_rng(0)
    params = [kind(rng.standard_normal(shape).astype(dtype), requires_grad=True) for shape in ((5, 3), (3,), ())]
    optimizer = getattr(optim, name)(params, lr=0.05, fused=fused, **config)
    for step in range(steps):
        for p in params:
            p.grad = autograd.tensor(rng.standard_normal(p.shape).astype(dtype) * (step + 1))
        optimizer.step()
    return [p.numpy().copy() for p in params], optimizer


@pytest.mark.parametrize(("name", "config"), CONFIGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_is_the_same_step_to_the_last_bit(name, config, dtype):
    calls = Stepped.calls
    stepped, stepped_optimizer = trajectory(name, config, False, dtype, kind=Stepped)  # through the methods
    assert Stepped.calls - calls == 6 * 3  # every step of every parameter went through its addcdiv_
    for fused in (True, False):  # fused=True, and the default, which takes the one call for plain tensors
        ours, optimizer = trajectory(name, config, fused, dtype)
        for a, b in zip(ours, stepped):
            np.testing.assert_array_equal(a, b)
        for p, p_stepped in zip(optimizer.param_groups[0]["params"], stepped_optimizer.param_groups[0]["params"]):
            for key, value in stepped_optimizer.state[p_stepped].items():
                np.testing.assert_array_equal(optimizer.state[p][key].numpy(), value.numpy())


def test_a_tensor_lr_or_betas_steps_through_the_methods_with_the_same_result():
    plain, _ = trajectory("Adam", dict(betas=(0.8, 0.9)), False)
    for options in (dict(lr=autograd.tensor(0.05)), dict(betas=(autograd.tensor(0.8), autograd.tensor(0.9)))):
        rng = np.random.default_rng(0)
        params = [autograd.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
                  for shape in ((5, 3), (3,), ())]
        optimizer = optim.Adam(params, **{"lr": 0.05, "betas": (0.8, 0.9), **options})
        for step in range(6):
            for p in params:
                p.grad = autograd.tensor(rng.standard_normal(p.shape).astype(np.float32) * (step + 1))
            optimizer.step()
        for a, p in zip(plain, params):
            np.testing.assert_allclose(a, p.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("fused", [True, None])
def test_the_one_call_step_keeps_the_write_doors_rules(fused):
    from autograd.autograd.graph import allow_mutation_on_saved_tensors

    with allow_mutation_on_saved_tensors():  # the step writes w, which backward saved: the old w is kept for it
        w = autograd.tensor([1.0, -2.0], requires_grad=True)
        optimizer = optim.Adam([w], lr=0.5, fused=fused)
        loss = (w * w).sum()
        w.grad = autograd.tensor([0.5, 0.25])
        optimizer.step()
        assert not np.array_equal(w.numpy(), [1.0, -2.0])
        w.grad = None
        loss.backward()
        np.testing.assert_array_equal(w.grad.numpy(), [2.0, -4.0])  # 2 w at the w before the step
    with autograd.inference_mode():
        frozen = autograd.tensor([1.0, 2.0])
    optimizer = optim.Adam([frozen], fused=fused)
    frozen.grad = autograd.tensor([1.0, 1.0])
    with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
        optimizer.step()
    np.testing.assert_array_equal(frozen.numpy(), [1.0, 2.0])  # refused before anything was written


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


@pytest.mark.parametrize("fused", [True, None])
def test_the_per_parameter_step_advances_the_count_in_place(fused):
    w = autograd.tensor([1.0, -2.0], requires_grad=True)
    optimizer = optim.Adam([w], lr=0.1, fused=fused)
    w.grad = autograd.tensor([0.5, 0.25])
    optimizer.step()
    count = optimizer.state[w]["step"]  # held across steps: the same tensor, written in place, its version moved
    version = count._version
    optimizer.step()
    assert optimizer.state[w]["step"] is count
    assert count.item() == 2.0 and count.dtype == autograd.float32 and count._version == version + 1


def test_the_functional_step_under_grad_mode_refuses_a_leaf_that_requires_grad():
    w = autograd.tensor([1.0, -2.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="not differentiable.*no_grad"):
        optim.adam.adam([w], [autograd.ones(2)], [autograd.zeros(2)], [autograd.zeros(2)], [], [autograd.tensor(0.0)],
                        amsgrad=False, beta1=0.9, beta2=0.99, lr=0.1, weight_decay=0.0, eps=1e-8, maximize=False)
    np.testing.assert_array_equal(w.detach().numpy(), [1.0, -2.0])
