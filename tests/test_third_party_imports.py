"""Names that third-party code imports from PyTorch's modules and that chainrule now has: the
``required`` default of optimizers written against ``torch.optim.optimizer`` (SGDP, LARS, Novograd, ...
declare ``lr=required``) and its ``ParamsT`` alias (timm's optim/_types.py), ``torch.nn.attention``
reached as an attribute of ``nn`` after ``import nn`` alone, and ``nn.modules.transformer._get_activation_fn``
(timm's MLDecoder), the classes PyTorch also keeps in torch.nn.modules submodules, and
``nn.utils.convert_conv2d_weight_memory_format``; and the base Optimizer taking ``lr=None`` (timm's
Adafactor); each against PyTorch where it is installed."""

import importlib
import subprocess
import sys

import pytest

import autograd

LIBRARIES = ["ours", pytest.param("torch", marks=pytest.mark.torch)]


def modules(which):
    if which == "ours":
        return autograd, importlib.import_module("nn"), importlib.import_module("optim")
    torch = pytest.importorskip("torch")
    return torch, torch.nn, torch.optim


@pytest.mark.parametrize("which", LIBRARIES)
def test_required_optimizer_option(which):
    torch, nn, optim = modules(which)
    from_optimizer = importlib.import_module(optim.__name__ + ".optimizer")
    required, Optimizer = from_optimizer.required, from_optimizer.Optimizer
    assert repr(required) == "<required parameter>"

    class SGDP(Optimizer):
        def __init__(self, params, lr=required, momentum=0.0):
            super().__init__(params, dict(lr=lr, momentum=momentum))

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-group["lr"])

    p = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="parameter group didn't specify a value of required optimization "
                                         "parameter lr"):
        SGDP([p])
    optimizer = SGDP([{"params": [p], "lr": 0.5}])
    assert optimizer.defaults["lr"] is required and optimizer.param_groups[0]["lr"] == 0.5
    with pytest.raises(ValueError, match="required optimization parameter lr"):
        optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(1))]})
    optimizer.add_param_group({"params": [nn.Parameter(torch.zeros(1))], "lr": 1.0, "momentum": 0.9})
    (p * torch.tensor([1.0, 3.0])).sum().backward()
    optimizer.step()
    assert p.tolist() == [0.5, -0.5]
    assert optimizer.state_dict()["param_groups"][0]["lr"] == 0.5
    assert SGDP([p], lr=0.1).param_groups[0]["lr"] == 0.1
    assert from_optimizer.ParamsT is not None  # a type alias, for annotations


@pytest.mark.parametrize("which", LIBRARIES)
def test_get_activation_fn(which):
    torch, nn, _ = modules(which)
    from_transformer = importlib.import_module(nn.__name__ + ".modules.transformer")
    F = nn.functional
    assert from_transformer._get_activation_fn("relu") is F.relu
    assert from_transformer._get_activation_fn("gelu") is F.gelu
    with pytest.raises(RuntimeError, match="activation should be relu/gelu, not tanh"):
        from_transformer._get_activation_fn("tanh")


@pytest.mark.parametrize("package", ["nn", pytest.param("torch.nn", marks=pytest.mark.torch)])
def test_nn_attention_is_an_attribute_after_importing_nn_alone(package):
    """In a fresh interpreter (nothing else has imported the subpackage): ``nn.attention.sdpa_kernel``."""
    pytest.importorskip(package.split(".")[0])
    code = (f"import {package.split('.')[0]}\n"
            f"nn = {package}\n"
            "print(nn.attention.SDPBackend.MATH.name, callable(nn.attention.sdpa_kernel))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["MATH", "True"]


@pytest.mark.parametrize("which", LIBRARIES)
def test_nn_modules_submodules_hold_pytorchs_names(which):
    """Classes PyTorch keeps in a torch.nn.modules submodule that chainrule keeps in another module."""
    torch, nn, _ = modules(which)
    from_activation = importlib.import_module(nn.__name__ + ".modules.activation")
    from_batchnorm = importlib.import_module(nn.__name__ + ".modules.batchnorm")
    assert from_activation.MultiheadAttention is nn.MultiheadAttention and from_activation.ReLU is nn.ReLU
    frozen = [m for m in nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2), nn.SyncBatchNorm(2)).modules()
              if isinstance(m, (nn.modules.batchnorm.BatchNorm2d, nn.modules.batchnorm.SyncBatchNorm))]
    assert [type(m).__name__ for m in frozen] == ["BatchNorm2d", "SyncBatchNorm"]
    assert from_batchnorm.LazyBatchNorm2d is nn.LazyBatchNorm2d and nn.modules.loss.CTCLoss is nn.CTCLoss
    assert nn.modules.pooling.MaxUnpool2d is nn.MaxUnpool2d and nn.modules.conv.LazyConv2d is nn.LazyConv2d
    assert isinstance(nn.MultiheadAttention(4, 2).out_proj, nn.modules.linear.NonDynamicallyQuantizableLinear)
    assert all(isinstance(d, nn.modules.dropout._DropoutNd) for d in (nn.Dropout(), nn.Dropout2d(), nn.AlphaDropout()))
    assert not isinstance(nn.ReLU(), nn.modules.dropout._DropoutNd)
    assert "SyncBatchNorm" in dir(nn.modules.batchnorm) and "_BatchNorm" in dir(nn.modules.batchnorm)


@pytest.mark.parametrize("which", LIBRARIES)
def test_convert_conv2d_weight_memory_format_keeps_values_and_parameters(which):
    torch, nn, optim = modules(which)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Sequential(nn.ConvTranspose2d(3, 2, 2)))
    weight, x = model[0].weight, torch.ones(1, 2, 5, 5)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    before, initial = model(x).detach().clone(), weight.detach().clone()
    assert nn.utils.convert_conv2d_weight_memory_format(model, torch.channels_last) is model
    assert model[0].weight is weight and torch.equal(weight, initial)
    assert torch.allclose(model(x), before, rtol=1e-6, atol=1e-7)  # (PyTorch's channels_last kernel rounds apart)
    model(x).sum().backward()
    optimizer.step()
    assert torch.allclose(model[0].weight, initial - 0.1 * weight.grad)  # the optimizer still holds it
    assert nn.utils.convert_conv3d_weight_memory_format(model, torch.channels_last_3d) is model


@pytest.mark.parametrize("which", LIBRARIES)
def test_a_custom_optimizer_may_default_lr_to_none(which):
    """The base Optimizer takes ``lr=None`` (timm's Adafactor computes its own step size); PyTorch's own
    optimizers still refuse it."""
    torch, nn, optim = modules(which)

    class RelativeStep(optim.Optimizer):
        def __init__(self, params, lr=None):
            super().__init__(params, dict(lr=lr, relative_step=not lr))

        @torch.no_grad()
        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    lr = group["lr"] if group["lr"] is not None else 0.25
                    p.add_(p.grad, alpha=-lr)

    p = nn.Parameter(torch.ones(2))
    optimizer = RelativeStep([p])
    assert optimizer.param_groups[0]["lr"] is None and optimizer.defaults["relative_step"]
    (p * torch.tensor([1.0, 2.0])).sum().backward()
    optimizer.step()
    assert p.tolist() == [0.75, 0.5]
    for builtin in (optim.SGD, optim.Adam, optim.AdamW, optim.RMSprop):
        with pytest.raises(TypeError):
            builtin([nn.Parameter(torch.ones(1))], lr=None)
