# ruff: noqa: B007, E731  (the programs are kept as their authors wrote them)
"""Meta-learning and higher-order programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from
the same weights, comparing losses, parameters and gradients (float64 where the program allows, to about 1e-10).
PyHessian's power iteration and Hutchinson trace on a network's parameters; StyleGAN2's regularisers
(rosinality/stylegan2-pytorch: modulated grouped convolutions, the R1 penalty and the path-length penalty), with
double backward through a grouped transposed convolution."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# PyHessian: top eigenvalue by power iteration, trace by Hutchinson, on a network's parameters
# ----------------------------------------------------------------------------------------------


def make_small_cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 4 * 4, 3))


def pyhessian(m, weights):
    torch, F = m.torch, m.F

    def group_product(xs, ys):
        return sum([torch.sum(x * y) for (x, y) in zip(xs, ys)])

    def group_add(params, update, alpha=1):
        for i, p in enumerate(params):
            params[i].data.add_(update[i] * alpha)
        return params

    def normalization(v):
        s = group_product(v, v)
        s = s ** 0.5
        s = s.cpu().item()
        v = [vi / (s + 1e-6) for vi in v]
        return v

    def get_params_grad(model):
        params = []
        grads = []
        for param in model.parameters():
            if not param.requires_grad:
                continue
            params.append(param)
            grads.append(0. if param.grad is None else param.grad + 0.)
        return params, grads

    def hessian_vector_product(gradsH, params, v):
        hv = torch.autograd.grad(gradsH, params, grad_outputs=v, only_inputs=True, retain_graph=True)
        return hv

    model = load(m, make_small_cnn(m), weights).double()
    rng = np.random.default_rng(5)
    inputs = torch.tensor(rng.standard_normal((8, 1, 6, 6)))
    targets = torch.tensor(rng.integers(0, 3, 8))
    outputs = model(inputs)
    loss = F.cross_entropy(outputs, targets)
    loss.backward(create_graph=True)
    params, gradsH = get_params_grad(model)

    # power iteration with a fixed start
    v = [torch.tensor(rng.standard_normal(tuple(p.shape))) for p in params]
    v = normalization(v)
    eigenvalue = None
    maxIter, tol = 300, 1e-10
    for i in range(maxIter):
        model.zero_grad()
        Hv = hessian_vector_product(gradsH, params, v)
        tmp_eigenvalue = group_product(Hv, v).cpu().item()
        v = normalization(Hv)
        if eigenvalue is None:
            eigenvalue = tmp_eigenvalue
        else:
            if abs(eigenvalue - tmp_eigenvalue) / (abs(eigenvalue) + 1e-6) < tol:
                break
            else:
                eigenvalue = tmp_eigenvalue

    # Hutchinson with fixed Rademacher vectors
    iterations = i
    trace_vhv = []
    for i in range(5):
        v = [torch.randint_like(p, high=2) for p in params]
        v = [torch.tensor(rng.integers(0, 2, tuple(p.shape)).astype(np.float64)) for p in params]  # the same draw
        for v_i in v:
            v_i[v_i == 0] = -1
        Hv = hessian_vector_product(gradsH, params, v)
        trace_vhv.append(group_product(Hv, v).cpu().item())
    flat_grad = torch.cat([g.reshape(-1) for g in gradsH])
    return {"eigenvalue": eigenvalue, "iterations": iterations, "trace": np.mean(trace_vhv), "samples": trace_vhv,
            "flat_grad": flat_grad, "n_params": sum(p.numel() for p in params)}


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True:UserWarning")  # (PyTorch's)
def test_pyhessian_power_iteration_and_hutchinson():
    weights = weights_of(make_small_cnn)
    ours, _ = run_both(pyhessian, weights, rtol=1e-8, atol=1e-10)
    # against the dense Hessian by autograd.functional.hessian on the flattened parameters
    torch, F = OURS.torch, OURS.F
    model = load(OURS, make_small_cnn(OURS), weights).double()
    rng = np.random.default_rng(5)
    inputs = torch.tensor(rng.standard_normal((8, 1, 6, 6)))
    targets = torch.tensor(rng.integers(0, 3, 8))
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss_of(vector):
        tensors, offset = {}, 0
        for n, s in zip(names, shapes):
            k = int(np.prod(s))
            tensors[n] = vector[offset:offset + k].reshape(s)
            offset += k
        return F.cross_entropy(torch.func.functional_call(model, tensors, (inputs,)), targets)

    H = torch.autograd.functional.hessian(loss_of, flat).numpy()
    assert H.shape == (ours["n_params"],) * 2
    np.testing.assert_allclose(H, H.T, atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(H)
    top = eigenvalues[np.argmax(np.abs(eigenvalues))]
    assert ours["eigenvalue"] == pytest.approx(top, rel=1e-5) and ours["iterations"] < 299
    # each Hutchinson sample is v^T H v of a known +-1 vector: replay the draws
    rng = np.random.default_rng(5)
    rng.standard_normal((8, 1, 6, 6)), rng.integers(0, 3, 8)
    for s in shapes:
        rng.standard_normal(tuple(s))
    for sample in ours["samples"]:
        v = np.concatenate([rng.integers(0, 2, tuple(s)).astype(np.float64).reshape(-1) for s in shapes]) * 2 - 1
        assert sample == pytest.approx(v @ H @ v, rel=1e-9)


# ----------------------------------------------------------------------------------------------
# StyleGAN2's regularisers (rosinality/stylegan2-pytorch): modulated grouped convolutions, R1 penalty
# and path-length regularisation, each a double backward through (transposed, grouped) convolutions
# ----------------------------------------------------------------------------------------------


def make_stylegan(m):
    torch, nn, F = m.torch, m.nn, m.F
    import math

    class EqualLinear(nn.Module):
        def __init__(self, in_dim, out_dim, bias=True, bias_init=0, lr_mul=1):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
            self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init))
            self.scale = (1 / math.sqrt(in_dim)) * lr_mul
            self.lr_mul = lr_mul

        def forward(self, input):
            return F.linear(input, self.weight * self.scale, bias=self.bias * self.lr_mul)

    class ModulatedConv2d(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, style_dim, demodulate=True, upsample=False):
            super().__init__()
            self.eps = 1e-8
            self.kernel_size = kernel_size
            self.in_channel = in_channel
            self.out_channel = out_channel
            self.upsample = upsample
            fan_in = in_channel * kernel_size ** 2
            self.scale = 1 / math.sqrt(fan_in)
            self.padding = kernel_size // 2
            self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
            self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
            self.demodulate = demodulate

        def forward(self, input, style):
            batch, in_channel, height, width = input.shape
            style = self.modulation(style).view(batch, 1, in_channel, 1, 1)
            weight = self.scale * self.weight * style
            if self.demodulate:
                demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
                weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
            weight = weight.view(batch * self.out_channel, in_channel, self.kernel_size, self.kernel_size)
            if self.upsample:
                input = input.view(1, batch * in_channel, height, width)
                weight = weight.view(batch, self.out_channel, in_channel, self.kernel_size, self.kernel_size)
                weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, self.kernel_size,
                                                        self.kernel_size)
                out = F.conv_transpose2d(input, weight, padding=0, stride=2, groups=batch)
                _, _, height, width = out.shape
                out = out.view(batch, self.out_channel, height, width)
            else:
                input = input.view(1, batch * in_channel, height, width)
                out = F.conv2d(input, weight, padding=self.padding, groups=batch)
                _, _, height, width = out.shape
                out = out.view(batch, self.out_channel, height, width)
            return out

    class Generator(nn.Module):
        def __init__(self, style_dim=8):
            super().__init__()
            self.style = nn.Sequential(EqualLinear(style_dim, style_dim, lr_mul=0.01), nn.LeakyReLU(0.2))
            self.input = nn.Parameter(torch.randn(1, 4, 4, 4))
            self.conv1 = ModulatedConv2d(4, 4, 3, style_dim)
            self.up = ModulatedConv2d(4, 4, 3, style_dim, upsample=True)
            self.to_rgb = ModulatedConv2d(4, 1, 1, style_dim, demodulate=False)

        def forward(self, z, return_latents=False):
            latent = self.style(z)
            out = self.input.repeat(z.shape[0], 1, 1, 1)
            out = F.leaky_relu(self.conv1(out, latent), 0.2)
            out = F.leaky_relu(self.up(out, latent), 0.2)
            image = self.to_rgb(out, latent)
            return (image, latent) if return_latents else (image, None)

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.convs = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(4, 8, 3, stride=2),
                                       nn.LeakyReLU(0.2))
            self.final = nn.Linear(8 * 4 * 4, 1)

        def forward(self, x):
            return self.final(self.convs(x).flatten(1))

    return nn.ModuleDict({"g": Generator(), "d": Discriminator()})


def stylegan(m, weights, steps=2):
    torch, F, optim = m.torch, m.F, m.optim
    autograd = torch.autograd
    import math
    nets = load(m, make_stylegan(m), weights).double()
    generator, discriminator = nets["g"], nets["d"]
    g_reg_ratio, d_reg_ratio = 4 / 5, 16 / 17
    g_optim = optim.Adam(generator.parameters(), lr=0.002 * g_reg_ratio, betas=(0 ** g_reg_ratio, 0.99 ** g_reg_ratio))
    d_optim = optim.Adam(discriminator.parameters(), lr=0.002 * d_reg_ratio,
                         betas=(0 ** d_reg_ratio, 0.99 ** d_reg_ratio))
    rng = np.random.default_rng(21)
    mean_path_length = 0
    history = []

    def d_logistic_loss(real_pred, fake_pred):
        real_loss = F.softplus(-real_pred)
        fake_loss = F.softplus(fake_pred)
        return real_loss.mean() + fake_loss.mean()

    def d_r1_loss(real_pred, real_img):
        grad_real, = autograd.grad(outputs=real_pred.sum(), inputs=real_img, create_graph=True)
        grad_penalty = grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()
        return grad_penalty

    def g_nonsaturating_loss(fake_pred):
        return F.softplus(-fake_pred).mean()

    def g_path_regularize(fake_img, latents, mean_path_length, noise, decay=0.01):
        grad, = autograd.grad(outputs=(fake_img * noise).sum(), inputs=latents, create_graph=True)
        path_lengths = torch.sqrt(grad.pow(2).sum(1))
        path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)
        path_penalty = (path_lengths - path_mean).pow(2).mean()
        return path_penalty, path_mean.detach(), path_lengths

    for i in range(steps):
        real_img = torch.tensor(rng.standard_normal((3, 1, 9, 9)))
        z = torch.tensor(rng.standard_normal((3, 8)))
        fake_img, _ = generator(z)
        d_loss = d_logistic_loss(discriminator(real_img), discriminator(fake_img.detach()))
        discriminator.zero_grad()
        d_loss.backward()
        d_optim.step()

        real_img.requires_grad = True
        real_pred = discriminator(real_img)
        r1_loss = d_r1_loss(real_pred, real_img)
        discriminator.zero_grad()
        (10 / 2 * r1_loss * 16 + 0 * real_pred[0]).backward()
        d_optim.step()

        fake_img, _ = generator(z)
        g_loss = g_nonsaturating_loss(discriminator(fake_img))
        generator.zero_grad()
        g_loss.backward()
        g_optim.step()

        fake_img, latents = generator(z, return_latents=True)
        noise = torch.tensor(rng.standard_normal(fake_img.shape)) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
        path_loss, mean_path_length, path_lengths = g_path_regularize(fake_img, latents, mean_path_length, noise)
        generator.zero_grad()
        weighted_path_loss = 2 * 4 * path_loss
        weighted_path_loss.backward()
        g_optim.step()
        history.append((d_loss.item(), r1_loss.item(), g_loss.item(), path_loss.item(), mean_path_length.item()))
    return {"history": history, "fake_shape": tuple(fake_img.shape),
            "g_grads": [p.grad for p in generator.parameters()],
            "d_grads": [p.grad for p in discriminator.parameters()]}


def test_stylegan2_r1_and_path_length():
    weights = weights_of(make_stylegan)
    ours, _ = run_both(stylegan, weights, rtol=1e-8, atol=1e-10)
    assert ours["fake_shape"] == (3, 1, 9, 9)  # the transposed convolution upsamples 4 -> 9
    assert all(g is not None for g in ours["g_grads"][1:])


def test_double_backward_through_grouped_transposed_convolution():
    """gradgradcheck of conv_transpose2d with groups and stride, as StyleGAN's upsampling uses it."""
    torch, F = OURS.torch, OURS.F
    rng = np.random.default_rng(22)
    x = torch.tensor(rng.standard_normal((1, 4, 3, 3)), requires_grad=True)
    w = torch.tensor(rng.standard_normal((4, 3, 3, 3)), requires_grad=True)
    f = lambda x, w: F.conv_transpose2d(x, w, stride=2, groups=2)
    assert torch.autograd.gradcheck(f, (x, w))
    assert torch.autograd.gradgradcheck(f, (x, w))
