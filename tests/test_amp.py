"""autograd.amp: a program written for a GPU's mixed precision runs on the CPU as PyTorch's does
there (autocast and GradScaler for "cuda" warn and pass through), and an enabled GradScaler
scales, unscales, skips non-finite steps and adapts its scale as PyTorch's."""

import numpy as np
import pytest

import autograd
import nn
import optim


def model_and_optimizer():
    autograd.manual_seed(0)
    model = nn.Linear(3, 1)
    return model, optim.SGD(model.parameters(), lr=0.1)


def test_a_cuda_amp_program_runs_without_a_gpu():
    model, optimizer = model_and_optimizer()
    reference, reference_optimizer = model_and_optimizer()
    x = autograd.tensor([[1.0, 2.0, 3.0]])
    with pytest.warns(UserWarning, match="Disabling"):
        scaler = autograd.amp.GradScaler("cuda")
    assert not scaler.is_enabled() and scaler.get_scale() == 1.0
    with pytest.warns(UserWarning, match="Disabling autocast"):
        with autograd.autocast(device_type="cuda", dtype=autograd.float16):
            loss = model(x).sum()
    assert loss.dtype == autograd.float32
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    reference(x).sum().backward()
    reference_optimizer.step()
    np.testing.assert_array_equal(model.weight.detach().numpy(), reference.weight.detach().numpy())


def test_autocast_that_is_not_built_says_so():
    """CPU autocast lowers to float16 (autocast_cpu.py); bfloat16 and a GPU's autocast are refused in words."""
    with pytest.raises(NotImplementedError, match="bfloat16 is not built here: NumPy has no bfloat16"):
        autograd.autocast("cpu", dtype=autograd.bfloat16)
    with pytest.raises(NotImplementedError, match="enabled=False"):
        autograd.autocast("xpu", dtype=autograd.float16)
    with autograd.autocast("cpu", enabled=False):
        assert not autograd.is_autocast_enabled("cpu")
    with autograd.autocast("cpu"):  # (float16: the default here)
        assert autograd.is_autocast_enabled("cpu") and autograd.get_autocast_dtype("cpu") == autograd.float16


def test_enabled_scaler_scales_unscales_skips_and_adapts():
    model, optimizer = model_and_optimizer()
    scaler = autograd.amp.GradScaler("cpu", init_scale=8.0, growth_interval=2)
    x = autograd.tensor([[1.0, 2.0, 3.0]])
    loss = model(x).sum()
    assert scaler.scale(loss).item() == pytest.approx(8 * loss.item())
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # back to dL/dW = x
    np.testing.assert_allclose(model.weight.grad.numpy(), [[1.0, 2.0, 3.0]])
    with pytest.raises(RuntimeError, match="already been called"):
        scaler.unscale_(optimizer)
    before = model.weight.detach().numpy().copy()
    scaler.step(optimizer)
    scaler.update()
    np.testing.assert_allclose(model.weight.detach().numpy(), before - 0.1 * np.array([[1.0, 2.0, 3.0]]), rtol=1e-6)
    assert scaler.get_scale() == 8.0  # one clean step of two
    optimizer.zero_grad()
    model.weight.grad = autograd.tensor([[np.inf, 0.0, 0.0]])
    kept = model.weight.detach().numpy().copy()
    assert scaler.step(optimizer) is None  # skipped
    scaler.update()
    np.testing.assert_array_equal(model.weight.detach().numpy(), kept)
    assert scaler.get_scale() == 4.0  # halved
    for _ in range(2):
        optimizer.zero_grad()
        scaler.scale(model(x).sum()).backward()
        scaler.step(optimizer)
        scaler.update()
    assert scaler.get_scale() == 8.0  # doubled after two clean steps
    state = scaler.state_dict()
    resumed = autograd.amp.GradScaler("cpu")
    resumed.load_state_dict(state)
    assert resumed.get_scale() == 8.0


@pytest.mark.torch
def test_scaler_trajectory_matches_pytorch():
    torch = pytest.importorskip("torch")
    losses = {}
    for name, lib, module in (("ours", autograd, nn), ("torch", torch, torch.nn)):
        lib.manual_seed(0)
        model = module.Linear(3, 1)
        with (torch.no_grad() if lib is torch else autograd.no_grad()):
            model.weight.copy_(lib.tensor([[0.1, -0.2, 0.3]]))
            model.bias.fill_(0.05)
        opt = (optim if lib is autograd else torch.optim).SGD(model.parameters(), lr=0.1)
        scaler = lib.amp.GradScaler("cpu", init_scale=4.0, growth_interval=2)
        x = lib.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
        seen = []
        for step in range(5):
            opt.zero_grad()
            loss = (model(x) ** 2).mean()
            scaler.scale(loss).backward()
            if step == 2:
                model.weight.grad.fill_(float("inf"))
            scaler.step(opt)
            scaler.update()
            seen.append((float(loss.item()), scaler.get_scale()))
        losses[name] = seen
    np.testing.assert_allclose(np.array(losses["ours"]), np.array(losses["torch"]), rtol=1e-6)


def test_the_older_cuda_amp_spelling():
    from autograd.cuda.amp import GradScaler, autocast

    with pytest.warns(FutureWarning, match="deprecated"), pytest.warns(UserWarning, match="Disabling"):
        scaler = GradScaler()
    assert not scaler.is_enabled()
    with pytest.warns(FutureWarning), pytest.warns(UserWarning):
        with autocast():
            pass


def test_the_older_cuda_amp_decorators_of_a_custom_function():
    """@torch.cuda.amp.custom_fwd / custom_bwd (bare, and with cast_inputs) on a Function: deprecated, and the
    function's values and gradients are its own (no autocast runs on the CPU)."""
    from autograd.cuda.amp import custom_bwd, custom_fwd

    with pytest.warns(FutureWarning, match="custom_fwd.*deprecated"):
        decorate_forward = custom_fwd(cast_inputs=autograd.float16)
    with pytest.warns(FutureWarning, match="custom_bwd.*deprecated"):

        class Cube(autograd.autograd.Function):
            @staticmethod
            @decorate_forward
            def forward(ctx, x):
                ctx.save_for_backward(x)
                return x**3

            @staticmethod
            @custom_bwd
            def backward(ctx, grad):
                (x,) = ctx.saved_tensors
                return 3 * x**2 * grad

    x = autograd.tensor([1.0, -2.0], requires_grad=True)
    y = Cube.apply(x)
    y.sum().backward()
    assert y.dtype == autograd.float32
    np.testing.assert_array_equal(y.detach().numpy(), [1.0, -8.0])
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 12.0])
