# ruff: noqa: B007, E501, E731, F811, UP008  (the programs are kept as their authors wrote them)
"""PyTorch's official tutorials (pytorch/tutorials: beginner_source, intermediate_source, advanced_source), each run
on chainrule and on PyTorch from the same weights and data, comparing losses, parameters and gradients. Custom
autograd Functions: fusing convolution and batch norm in a custom Function (``once_differentiable``, a convolution's
backward by ``conv2d`` of transposes and ``conv_transpose2d``, batch norm's backward in place, more gradients
returned than inputs, gradcheck, a net trained by Adadelta under StepLR and evaluated under ``inference_mode``); the
double-backward tutorial (Square saving its input, Exp its output, Sinh returning its intermediate results as outputs
so that they carry a graph, the Sinh that keeps them on ``ctx`` and so gives a gradient without one, and Cube whose
backward is itself a custom Function with its own backward; ``gradcheck`` and ``gradgradcheck`` of each, and third
derivatives); extensions in NumPy and SciPy (BadFFTFunction through ``numpy.fft`` and ``Tensor.new(ndarray)``, the
legacy non-static Function refused, ScipyConv2d by ``scipy.signal.correlate2d``/``convolve2d`` with
``torch.as_tensor(..., dtype=)`` and a float32 filter meeting a float64 input, trained a few SGD steps, and
``gradcheck`` of the module itself)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, quickstart_data, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Fusing convolution and batch norm with a custom Function (intermediate_source/custom_function_conv_bn_tutorial.py)
# ----------------------------------------------------------------------------------------------


def fused_conv_bn_functions(m):
    torch, F = m.torch, m.F
    once_differentiable = m.torch.autograd.function.once_differentiable

    def convolution_backward(grad_out, X, weight):
        grad_input = F.conv2d(X.transpose(0, 1), grad_out.transpose(0, 1)).transpose(0, 1)
        grad_X = F.conv_transpose2d(grad_out, weight)
        return grad_X, grad_input

    class Conv2D(torch.autograd.Function):
        @staticmethod
        def forward(ctx, X, weight):
            ctx.save_for_backward(X, weight)
            return F.conv2d(X, weight)

        @staticmethod
        @once_differentiable
        def backward(ctx, grad_out):
            X, weight = ctx.saved_tensors
            return convolution_backward(grad_out, X, weight)

    def unsqueeze_all(t):
        return t[None, :, None, None]

    def batch_norm_backward(grad_out, X, sum, sqrt_var, N, eps):
        tmp = -((X - unsqueeze_all(sum) / N) * grad_out).sum(dim=(0, 2, 3))
        d_denom = tmp / (sqrt_var + eps)**2
        d_var = d_denom / (2 * sqrt_var)
        d_mean_dx = grad_out / unsqueeze_all(sqrt_var + eps)
        d_mean_dx = unsqueeze_all(-d_mean_dx.sum(dim=(0, 2, 3)) / N)
        grad_input = X * unsqueeze_all(d_var * N)
        grad_input += unsqueeze_all(-d_var * sum)
        grad_input *= 2 / ((N - 1) * N)
        grad_input += d_mean_dx
        grad_input *= unsqueeze_all(sqrt_var + eps)
        grad_input += grad_out
        grad_input /= unsqueeze_all(sqrt_var + eps)
        return grad_input

    class BatchNorm(torch.autograd.Function):
        @staticmethod
        def forward(ctx, X, eps=1e-3):
            sum = X.sum(dim=(0, 2, 3))
            var = X.var(unbiased=True, dim=(0, 2, 3))
            N = X.numel() / X.size(1)
            sqrt_var = torch.sqrt(var)
            ctx.save_for_backward(X)
            ctx.eps = eps
            ctx.sum = sum
            ctx.N = N
            ctx.sqrt_var = sqrt_var
            mean = sum / N
            denom = sqrt_var + eps
            return (X - unsqueeze_all(mean)) / unsqueeze_all(denom)

        @staticmethod
        @once_differentiable
        def backward(ctx, grad_out):
            X, = ctx.saved_tensors
            return batch_norm_backward(grad_out, X, ctx.sum, ctx.sqrt_var, ctx.N, ctx.eps)

    class FusedConvBN2DFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, X, conv_weight, eps=1e-3):
            assert X.ndim == 4  # N, C, H, W
            ctx.save_for_backward(X, conv_weight)
            X = F.conv2d(X, conv_weight)
            sum = X.sum(dim=(0, 2, 3))
            var = X.var(unbiased=True, dim=(0, 2, 3))
            N = X.numel() / X.size(1)
            sqrt_var = torch.sqrt(var)
            ctx.eps = eps
            ctx.sum = sum
            ctx.N = N
            ctx.sqrt_var = sqrt_var
            mean = sum / N
            denom = sqrt_var + eps
            out = X - unsqueeze_all(mean)
            out /= unsqueeze_all(denom)
            return out

        @staticmethod
        def backward(ctx, grad_out):
            X, conv_weight, = ctx.saved_tensors
            X_conv_out = F.conv2d(X, conv_weight)
            grad_out = batch_norm_backward(grad_out, X_conv_out, ctx.sum, ctx.sqrt_var,
                                           ctx.N, ctx.eps)
            grad_X, grad_input = convolution_backward(grad_out, X, conv_weight)
            # more gradients than inputs, the extra ones None: PyTorch accepts that
            return grad_X, grad_input, None, None, None, None, None

    return Conv2D, BatchNorm, FusedConvBN2DFunction


def fused_conv_bn_gradchecks(m):
    torch = m.torch
    Conv2D, BatchNorm, FusedConvBN2DFunction = fused_conv_bn_functions(m)
    rng = np.random.default_rng(1)
    weight = torch.tensor(rng.random((5, 3, 3, 3)), requires_grad=True, dtype=torch.double)
    X = torch.tensor(rng.random((4, 3, 7, 7)), requires_grad=True, dtype=torch.double)
    ok = [torch.autograd.gradcheck(Conv2D.apply, (X, weight))]
    a = torch.tensor(rng.random((1, 2, 3, 4)), requires_grad=True, dtype=torch.double)
    ok.append(torch.autograd.gradcheck(BatchNorm.apply, (a,), fast_mode=False))
    weight = torch.tensor(rng.random((5, 3, 3, 3)), requires_grad=True, dtype=torch.double)
    X = torch.tensor(rng.random((2, 3, 4, 4)), requires_grad=True, dtype=torch.double)
    ok.append(torch.autograd.gradcheck(FusedConvBN2DFunction.apply, (X, weight)))
    # the three against autograd through the library's own layers
    out = FusedConvBN2DFunction.apply(X, weight)
    g = torch.tensor(rng.standard_normal(out.shape))
    gX, gW = torch.autograd.grad(out, (X, weight), g)
    y = m.F.conv2d(X, weight)
    mean = y.mean(dim=(0, 2, 3), keepdim=True)
    ref = (y - mean) / (y.var(dim=(0, 2, 3), keepdim=True).sqrt() + 1e-3)
    rX, rW = torch.autograd.grad(ref, (X, weight), g)
    once = Conv2D.apply(X, weight)
    v = torch.ones_like(once, requires_grad=True)
    try:
        torch.autograd.grad(once, X, v, create_graph=True)[0].sum().backward()
        twice = "no error"
    except RuntimeError as e:
        twice = "trying to differentiate twice a function that was marked with @once_differentiable" in str(e)
    return {"ok": ok, "out": out, "gX": gX, "gW": gW, "rX": rX, "rW": rW, "twice": twice}


def test_fused_conv_bn_functions_pass_gradcheck():
    ours, _ = run_both(fused_conv_bn_gradchecks, rtol=1e-10, atol=1e-12)
    assert ours["ok"] == [True, True, True]
    np.testing.assert_allclose(ours["gX"], ours["rX"], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours["gW"], ours["rW"], rtol=1e-9, atol=1e-12)
    assert ours["twice"] is True


def fused_conv_bn_net(m, fused, weights=None, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    Conv2D, BatchNorm, FusedConvBN2DFunction = fused_conv_bn_functions(m)

    class FusedConvBN(nn.Module):
        def __init__(self, in_channels, out_channels, kernel_size, exp_avg_factor=0.1,
                     eps=1e-3, device=None, dtype=None):
            super(FusedConvBN, self).__init__()
            factory_kwargs = {'device': device, 'dtype': dtype}
            weight_shape = (out_channels, in_channels, kernel_size, kernel_size)
            self.conv_weight = nn.Parameter(torch.empty(*weight_shape, **factory_kwargs))
            num_features = out_channels
            self.num_features = num_features
            self.eps = eps
            self.reset_parameters()

        def forward(self, X):
            return FusedConvBN2DFunction.apply(X, self.conv_weight, self.eps)

        def reset_parameters(self) -> None:
            nn.init.kaiming_uniform_(self.conv_weight, a=math.sqrt(5))

    class Net(nn.Module):
        def __init__(self, fused=True):
            super(Net, self).__init__()
            self.fused = fused
            if fused:
                self.convbn1 = FusedConvBN(1, 4, 3)
                self.convbn2 = FusedConvBN(4, 6, 3)
            else:
                self.conv1 = nn.Conv2d(1, 4, 3, 1, bias=False)
                self.bn1 = nn.BatchNorm2d(4, affine=False, track_running_stats=False)
                self.conv2 = nn.Conv2d(4, 6, 3, 1, bias=False)
                self.bn2 = nn.BatchNorm2d(6, affine=False, track_running_stats=False)
            self.fc1 = nn.Linear(6 * 3 * 3, 16)
            self.dropout = nn.Dropout(0.5)
            self.fc2 = nn.Linear(16, 4)

        def forward(self, x):
            if self.fused:
                x = self.convbn1(x)
            else:
                x = self.conv1(x)
                x = self.bn1(x)
            x = F.relu(x)
            if self.fused:
                x = self.convbn2(x)
            else:
                x = self.conv2(x)
                x = self.bn2(x)
            x = F.relu(x)
            x = F.max_pool2d(x, 2)
            x = F.relu(x)
            x = x.flatten(1)
            x = self.fc1(x)
            x = self.dropout(x)
            x = F.relu(x)
            x = self.fc2(x)
            output = F.log_softmax(x, dim=1)
            return output

    model = Net(fused=fused)
    if weights is None:
        return model
    load(m, model, weights)
    images, labels = quickstart_data(n=48, side=10)
    dataset = m.data.TensorDataset(torch.tensor(images), torch.tensor(labels))
    train_loader = m.data.DataLoader(dataset, batch_size=16)
    optimizer = optim.Adadelta(model.parameters(), lr=1.0)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
    losses = []
    for epoch in range(2):
        model.train()
        model.dropout.p = 0.0  # dropout draws differ between the libraries
        for batch_idx, (data, target) in enumerate(train_loader):
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        test_loss = 0
        correct = 0
        with torch.inference_mode():
            for data, target in train_loader:
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction='sum').item()
                pred = output.argmax(dim=1, keepdim=True)
                correct += pred.eq(target.view_as(pred)).sum().item()
        losses.append(test_loss / len(train_loader.dataset))
        scheduler.step()
    return {"losses": losses, "correct": correct, "lr": optimizer.param_groups[0]["lr"],
            "params": dict(model.state_dict()), "grads": [p.grad for p in model.parameters()]}


@pytest.mark.parametrize("fused", [True, False])
def test_fused_conv_bn_network_trains_with_adadelta(fused):
    weights = weights_of(lambda m: fused_conv_bn_net(m, fused))
    ours, _ = run_both(fused_conv_bn_net, fused, weights, rtol=2e-4, atol=2e-5)
    assert ours["lr"] == pytest.approx(0.49)
    assert ours["losses"][-1] < ours["losses"][0]


# ----------------------------------------------------------------------------------------------
# Double backward with custom Functions (intermediate_source/custom_function_double_backward_tutorial.py)
# ----------------------------------------------------------------------------------------------


def double_backward(m):
    torch = m.torch
    rng = np.random.default_rng(0)
    rand33 = lambda: torch.tensor(rng.random((3, 3)), requires_grad=True, dtype=torch.double)
    checks, results = [], {}

    class Square(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**2

        @staticmethod
        def backward(ctx, grad_out):
            x, = ctx.saved_tensors
            return grad_out * 2 * x

    x = rand33()
    checks.append(torch.autograd.gradcheck(Square.apply, x))
    checks.append(torch.autograd.gradgradcheck(Square.apply, x))
    x = torch.tensor(1., requires_grad=True).clone()
    out = Square.apply(x)
    grad_x, = torch.autograd.grad(out, x, create_graph=True)
    results["square"] = (out, grad_x, grad_x.requires_grad, torch.autograd.grad(grad_x, x)[0])

    class Exp(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            result = torch.exp(x)
            ctx.save_for_backward(result)
            return result

        @staticmethod
        def backward(ctx, grad_out):
            result, = ctx.saved_tensors
            return result * grad_out

    x = torch.tensor(1., requires_grad=True, dtype=torch.double).clone()
    checks.append(torch.autograd.gradcheck(Exp.apply, x))
    checks.append(torch.autograd.gradgradcheck(Exp.apply, x))
    out = Exp.apply(x)
    grad_x, = torch.autograd.grad(out, x, create_graph=True)
    grad_xx, = torch.autograd.grad(grad_x, x, create_graph=True)
    results["exp"] = (out, grad_x, grad_xx, torch.autograd.grad(grad_xx, x)[0])

    class Sinh(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            expx = torch.exp(x)
            expnegx = torch.exp(-x)
            ctx.save_for_backward(expx, expnegx)
            return (expx - expnegx) / 2, expx, expnegx

        @staticmethod
        def backward(ctx, grad_out, _grad_out_exp, _grad_out_negexp):
            expx, expnegx = ctx.saved_tensors
            grad_input = grad_out * (expx + expnegx) / 2
            grad_input += _grad_out_exp * expx
            grad_input -= _grad_out_negexp * expnegx
            return grad_input

    def sinh(x):
        return Sinh.apply(x)[0]

    x = rand33()
    checks.append(torch.autograd.gradcheck(sinh, x))
    checks.append(torch.autograd.gradgradcheck(sinh, x))
    out = sinh(x)
    grad_x, = torch.autograd.grad(out.sum(), x, create_graph=True)
    results["sinh"] = (out, grad_x, torch.autograd.grad(grad_x.sum(), x)[0])

    class Sinh(torch.autograd.Function):
        # This is an example of what NOT to do!
        @staticmethod
        def forward(ctx, x):
            expx = torch.exp(x)
            expnegx = torch.exp(-x)
            ctx.expx = expx
            ctx.expnegx = expnegx
            return (expx - expnegx) / 2

        @staticmethod
        def backward(ctx, grad_out):
            expx = ctx.expx
            expnegx = ctx.expnegx
            grad_input = grad_out * (expx + expnegx) / 2
            return grad_input

    out = Sinh.apply(x)
    grad_x, = torch.autograd.grad(out.sum(), x, create_graph=True)
    results["wrong_sinh"] = (out, grad_x, grad_x.requires_grad, grad_x.grad_fn is None)

    def cube_forward(x):
        return x**3

    def cube_backward(grad_out, x):
        return grad_out * 3 * x**2

    def cube_backward_backward(grad_out, sav_grad_out, x):
        return grad_out * sav_grad_out * 6 * x

    def cube_backward_backward_grad_out(grad_out, x):
        return grad_out * 3 * x**2

    class Cube(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return cube_forward(x)

        @staticmethod
        def backward(ctx, grad_out):
            x, = ctx.saved_tensors
            return CubeBackward.apply(grad_out, x)

    class CubeBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, grad_out, x):
            ctx.save_for_backward(x, grad_out)
            return cube_backward(grad_out, x)

        @staticmethod
        def backward(ctx, grad_out):
            x, sav_grad_out = ctx.saved_tensors
            dx = cube_backward_backward(grad_out, sav_grad_out, x)
            dgrad_out = cube_backward_backward_grad_out(grad_out, x)
            return dgrad_out, dx

    x = torch.tensor(2., requires_grad=True, dtype=torch.double)
    checks.append(torch.autograd.gradcheck(Cube.apply, x))
    checks.append(torch.autograd.gradgradcheck(Cube.apply, x))
    out = Cube.apply(x)
    grad_x, = torch.autograd.grad(out, x, create_graph=True)
    grad_xx, = torch.autograd.grad(grad_x, x, create_graph=True)
    results["cube"] = (out, grad_x, grad_xx, type(grad_x.grad_fn).__name__)
    results["checks"] = checks
    results["x"] = x
    return results


def test_double_backward_with_custom_functions():
    ours, _ = run_both(double_backward, rtol=1e-12, atol=1e-12)
    assert ours["checks"] == [True] * 8
    assert ours["square"][1:] == (2.0, True, 2.0)
    assert ours["exp"][1:] == (math.e, math.e, math.e)
    np.testing.assert_allclose(ours["sinh"][1], np.cosh(ours["sinh"][0] * 0 + np.arcsinh(ours["sinh"][0])))
    np.testing.assert_allclose(ours["sinh"][2], ours["sinh"][0], rtol=1e-12)  # sinh'' = sinh
    assert ours["wrong_sinh"][2:] == (False, True)  # the gradient has no graph behind it
    assert ours["cube"][:3] == (8.0, 12.0, 12.0)
    assert ours["cube"][3] == "CubeBackwardBackward"


# ----------------------------------------------------------------------------------------------
# Creating extensions using NumPy and SciPy (advanced_source/numpy_extensions_tutorial.py)
# ----------------------------------------------------------------------------------------------


def numpy_extensions(m, weights):
    torch = m.torch
    Function = torch.autograd.Function
    Module, Parameter = m.nn.Module, m.nn.Parameter
    from numpy.fft import irfft2, rfft2
    from scipy.signal import convolve2d, correlate2d

    rng = np.random.default_rng(0)
    randn = lambda *shape, dtype=torch.float32: torch.tensor(rng.standard_normal(shape), dtype=dtype)
    results = {}

    class BadFFTFunction(Function):
        @staticmethod
        def forward(ctx, input):
            numpy_input = input.detach().numpy()
            result = abs(rfft2(numpy_input))
            return input.new(result)

        @staticmethod
        def backward(ctx, grad_output):
            numpy_go = grad_output.numpy()
            result = irfft2(numpy_go)
            return grad_output.new(result)

    def incorrect_fft(input):
        return BadFFTFunction.apply(input)

    input = randn(8, 8).requires_grad_()
    result = incorrect_fft(input)
    result.backward(randn(*result.size()))
    results["fft"] = (result, input.grad, result.dtype == torch.float32, input.grad.dtype == torch.float32)

    class LegacyFunction(Function):  # the tutorial's first version: forward is not a staticmethod
        def forward(self, input):
            return input.clone()

        def backward(self, grad_output):
            return grad_output

    try:
        LegacyFunction()(input)
        results["legacy"] = "no error"
    except RuntimeError as e:
        results["legacy"] = "Legacy autograd function with non-static forward method is deprecated" in str(e)

    class ScipyConv2dFunction(Function):
        @staticmethod
        def forward(ctx, input, filter, bias):
            input, filter, bias = input.detach(), filter.detach(), bias.detach()
            result = correlate2d(input.numpy(), filter.numpy(), mode='valid')
            result += bias.numpy()
            ctx.save_for_backward(input, filter, bias)
            return torch.as_tensor(result, dtype=input.dtype)

        @staticmethod
        def backward(ctx, grad_output):
            grad_output = grad_output.detach()
            input, filter, bias = ctx.saved_tensors
            grad_output = grad_output.numpy()
            grad_bias = np.sum(grad_output, keepdims=True)
            grad_input = convolve2d(grad_output, filter.numpy(), mode='full')
            grad_filter = correlate2d(input.numpy(), grad_output, mode='valid')
            return torch.as_tensor(grad_input, dtype=input.dtype), torch.as_tensor(grad_filter, dtype=filter.dtype), torch.as_tensor(grad_bias, dtype=bias.dtype)

    class ScipyConv2d(Module):
        def __init__(self, filter_width, filter_height):
            super(ScipyConv2d, self).__init__()
            self.filter = Parameter(torch.randn(filter_width, filter_height))
            self.bias = Parameter(torch.randn(1, 1))

        def forward(self, input):
            return ScipyConv2dFunction.apply(input, self.filter, self.bias)

    module = ScipyConv2d(3, 3)
    load(m, module, weights)
    input = randn(10, 10).requires_grad_()
    output = module(input)
    output.backward(randn(8, 8))
    results["conv"] = (output, input.grad, module.filter.grad, module.bias.grad)
    # the filter learnt: a few steps of SGD towards a known kernel
    target_filter = randn(3, 3)
    data = [randn(6, 6) for _ in range(4)]
    optimizer = m.optim.SGD(module.parameters(), lr=0.01)  # torch.optim: see test_torch_dot_nn_spelling
    losses = []
    for x in data:
        optimizer.zero_grad()
        target = torch.as_tensor(correlate2d(x.numpy(), target_filter.numpy(), mode='valid'))
        loss = ((module(x) - target) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    results["trained"] = (losses, module.filter.detach(), module.bias.detach())

    moduleConv = ScipyConv2d(3, 3)
    load(m, moduleConv, weights)
    input = [randn(20, 20, dtype=torch.double).requires_grad_()]
    results["gradcheck"] = torch.autograd.gradcheck(moduleConv, input, eps=1e-6, atol=1e-4)
    return results


@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
def test_numpy_and_scipy_extensions():
    pytest.importorskip("scipy")
    weights = {"filter": np.random.default_rng(1).standard_normal((3, 3)).astype(np.float32),
               "bias": np.float32([[0.5]])}
    ours, _ = run_both(numpy_extensions, weights, rtol=1e-5, atol=1e-6)
    result, grad, *dtypes = ours["fft"]
    assert result.shape == (8, 5) and grad.shape == (8, 8) and dtypes == [True, True]
    assert ours["legacy"] is True
    output, input_grad, filter_grad, bias_grad = ours["conv"]
    assert output.shape == (8, 8) and bias_grad.shape == (1, 1)
    assert ours["gradcheck"] is True
    assert ours["trained"][0][-1] < ours["trained"][0][0]
