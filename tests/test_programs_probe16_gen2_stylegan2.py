# ruff: noqa: B006, B007, E501  (the programs are kept as their authors wrote them)
"""Generative models not covered elsewhere, run as tests/probe16_gen2_common.py says: StyleGAN2 on the CPU
(upfirdn2d_native, modulated and grouped transposed convolutions, style mixing, lazy R1 and path-length
regularisation, the EMA generator)."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# StyleGAN2 as rosinality/stylegan2-pytorch writes it on the CPU: upfirdn2d_native (F.pad of a 6-d view, a
# negative-pad crop, a flipped FIR kernel, a strided slice viewed back), Blur/Upsample, equalised layers with
# lr_mul, fused_leaky_relu's CPU path, modulated convolutions (grouped conv2d and grouped conv_transpose2d),
# noise buffers on an empty nn.Module, style mixing through a seeded random.Random, the minibatch-stddev layer
# (mean with keepdims=), ConvLayer setting an attribute before nn.Sequential.__init__; trained one step at a time
# with the logistic loss, lazy R1 and path-length regularisation (autograd.grad with create_graph), requires_grad
# toggling and the EMA accumulate
# ----------------------------------------------------------------------------------------------


def stylegan2_modules(m, size=8, style_dim=8, n_mlp=2, channel=8):
    import random as pyrandom
    from collections import abc

    torch, nn, F = m.torch, m.nn, m.F

    def fused_leaky_relu(input, bias=None, negative_slope=0.2, scale=2 ** 0.5):
        if bias is not None:
            rest_dim = [1] * (input.ndim - bias.ndim - 1)
            return (
                F.leaky_relu(
                    input + bias.view(1, bias.shape[0], *rest_dim), negative_slope=0.2
                )
                * scale
            )
        else:
            return F.leaky_relu(input, negative_slope=0.2) * scale

    class FusedLeakyReLU(nn.Module):
        def __init__(self, channel, bias=True, negative_slope=0.2, scale=2 ** 0.5):
            super().__init__()
            if bias:
                self.bias = nn.Parameter(torch.zeros(channel))
            else:
                self.bias = None
            self.negative_slope = negative_slope
            self.scale = scale

        def forward(self, input):
            return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale)

    def upfirdn2d_native(input, kernel, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1):
        _, channel, in_h, in_w = input.shape
        input = input.reshape(-1, in_h, in_w, 1)
        _, in_h, in_w, minor = input.shape
        kernel_h, kernel_w = kernel.shape
        out = input.view(-1, in_h, 1, in_w, 1, minor)
        out = F.pad(out, [0, 0, 0, up_x - 1, 0, 0, 0, up_y - 1])
        out = out.view(-1, in_h * up_y, in_w * up_x, minor)
        out = F.pad(out, [0, 0, max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)])
        out = out[:, max(-pad_y0, 0): out.shape[1] - max(-pad_y1, 0), max(-pad_x0, 0): out.shape[2] - max(-pad_x1, 0), :]
        out = out.permute(0, 3, 1, 2)
        out = out.reshape([-1, 1, in_h * up_y + pad_y0 + pad_y1, in_w * up_x + pad_x0 + pad_x1])
        w = torch.flip(kernel, [0, 1]).view(1, 1, kernel_h, kernel_w)
        out = F.conv2d(out, w)
        out = out.reshape(-1, minor, in_h * up_y + pad_y0 + pad_y1 - kernel_h + 1,
                          in_w * up_x + pad_x0 + pad_x1 - kernel_w + 1)
        out = out.permute(0, 2, 3, 1)
        out = out[:, ::down_y, ::down_x, :]
        out_h = (in_h * up_y + pad_y0 + pad_y1 - kernel_h + down_y) // down_y
        out_w = (in_w * up_x + pad_x0 + pad_x1 - kernel_w + down_x) // down_x
        return out.view(-1, channel, out_h, out_w)

    def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
        if not isinstance(up, abc.Iterable):
            up = (up, up)
        if not isinstance(down, abc.Iterable):
            down = (down, down)
        if len(pad) == 2:
            pad = (pad[0], pad[1], pad[0], pad[1])
        return upfirdn2d_native(input, kernel, *up, *down, *pad)

    class PixelNorm(nn.Module):
        def __init__(self):
            super().__init__()

        def forward(self, input):
            return input * torch.rsqrt(torch.mean(input ** 2, dim=1, keepdim=True) + 1e-8)

    def make_kernel(k):
        k = torch.tensor(k, dtype=torch.float32)
        if k.ndim == 1:
            k = k[None, :] * k[:, None]
        k /= k.sum()
        return k

    class Upsample(nn.Module):
        def __init__(self, kernel, factor=2):
            super().__init__()
            self.factor = factor
            kernel = make_kernel(kernel) * (factor ** 2)
            self.register_buffer("kernel", kernel)
            p = kernel.shape[0] - factor
            pad0 = (p + 1) // 2 + factor - 1
            pad1 = p // 2
            self.pad = (pad0, pad1)

        def forward(self, input):
            out = upfirdn2d(input, self.kernel, up=self.factor, down=1, pad=self.pad)
            return out

    class Blur(nn.Module):
        def __init__(self, kernel, pad, upsample_factor=1):
            super().__init__()
            kernel = make_kernel(kernel)
            if upsample_factor > 1:
                kernel = kernel * (upsample_factor ** 2)
            self.register_buffer("kernel", kernel)
            self.pad = pad

        def forward(self, input):
            out = upfirdn2d(input, self.kernel, pad=self.pad)
            return out

    class EqualConv2d(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, stride=1, padding=0, bias=True):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
            self.scale = 1 / math.sqrt(in_channel * kernel_size ** 2)
            self.stride = stride
            self.padding = padding
            if bias:
                self.bias = nn.Parameter(torch.zeros(out_channel))
            else:
                self.bias = None

        def forward(self, input):
            out = F.conv2d(input, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)
            return out

    class EqualLinear(nn.Module):
        def __init__(self, in_dim, out_dim, bias=True, bias_init=0, lr_mul=1, activation=None):
            super().__init__()
            self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
            if bias:
                self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init))
            else:
                self.bias = None
            self.activation = activation
            self.scale = (1 / math.sqrt(in_dim)) * lr_mul
            self.lr_mul = lr_mul

        def forward(self, input):
            if self.activation:
                out = F.linear(input, self.weight * self.scale)
                out = fused_leaky_relu(out, self.bias * self.lr_mul)
            else:
                out = F.linear(input, self.weight * self.scale, bias=self.bias * self.lr_mul)
            return out

    class ModulatedConv2d(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, style_dim, demodulate=True, upsample=False,
                     blur_kernel=[1, 3, 3, 1]):
            super().__init__()
            self.eps = 1e-8
            self.kernel_size = kernel_size
            self.in_channel = in_channel
            self.out_channel = out_channel
            self.upsample = upsample
            if upsample:
                factor = 2
                p = (len(blur_kernel) - factor) - (kernel_size - 1)
                pad0 = (p + 1) // 2 + factor - 1
                pad1 = p // 2 + 1
                self.blur = Blur(blur_kernel, pad=(pad0, pad1), upsample_factor=factor)
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
                out = self.blur(out)
            else:
                input = input.view(1, batch * in_channel, height, width)
                out = F.conv2d(input, weight, padding=self.padding, groups=batch)
                _, _, height, width = out.shape
                out = out.view(batch, self.out_channel, height, width)
            return out

    class NoiseInjection(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1))

        def forward(self, image, noise=None):
            if noise is None:
                batch, _, height, width = image.shape
                noise = image.new_empty(batch, 1, height, width).normal_()
            return image + self.weight * noise

    class ConstantInput(nn.Module):
        def __init__(self, channel, size=4):
            super().__init__()
            self.input = nn.Parameter(torch.randn(1, channel, size, size))

        def forward(self, input):
            batch = input.shape[0]
            out = self.input.repeat(batch, 1, 1, 1)
            return out

    class StyledConv(nn.Module):
        def __init__(self, in_channel, out_channel, kernel_size, style_dim, upsample=False, blur_kernel=[1, 3, 3, 1],
                     demodulate=True):
            super().__init__()
            self.conv = ModulatedConv2d(in_channel, out_channel, kernel_size, style_dim, upsample=upsample,
                                        blur_kernel=blur_kernel, demodulate=demodulate)
            self.noise = NoiseInjection()
            self.activate = FusedLeakyReLU(out_channel)

        def forward(self, input, style, noise=None):
            out = self.conv(input, style)
            out = self.noise(out, noise=noise)
            out = self.activate(out)
            return out

    class ToRGB(nn.Module):
        def __init__(self, in_channel, style_dim, upsample=True, blur_kernel=[1, 3, 3, 1]):
            super().__init__()
            if upsample:
                self.upsample = Upsample(blur_kernel)
            self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
            self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

        def forward(self, input, style, skip=None):
            out = self.conv(input, style)
            out = out + self.bias
            if skip is not None:
                skip = self.upsample(skip)
                out = out + skip
            return out

    class Generator(nn.Module):
        def __init__(self, size, style_dim, n_mlp, channel_multiplier=2, blur_kernel=[1, 3, 3, 1], lr_mlp=0.01):
            super().__init__()
            self.size = size
            self.style_dim = style_dim
            layers = [PixelNorm()]
            for i in range(n_mlp):
                layers.append(EqualLinear(style_dim, style_dim, lr_mul=lr_mlp, activation="fused_lrelu"))
            self.style = nn.Sequential(*layers)
            self.channels = {4: channel, 8: channel, 16: channel}
            self.input = ConstantInput(self.channels[4])
            self.conv1 = StyledConv(self.channels[4], self.channels[4], 3, style_dim, blur_kernel=blur_kernel)
            self.to_rgb1 = ToRGB(self.channels[4], style_dim, upsample=False)
            self.log_size = int(math.log(size, 2))
            self.num_layers = (self.log_size - 2) * 2 + 1
            self.convs = nn.ModuleList()
            self.upsamples = nn.ModuleList()
            self.to_rgbs = nn.ModuleList()
            self.noises = nn.Module()
            in_channel = self.channels[4]
            for layer_idx in range(self.num_layers):
                res = (layer_idx + 5) // 2
                shape = [1, 1, 2 ** res, 2 ** res]
                self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(*shape))
            for i in range(3, self.log_size + 1):
                out_channel = self.channels[2 ** i]
                self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True,
                                             blur_kernel=blur_kernel))
                self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim, blur_kernel=blur_kernel))
                self.to_rgbs.append(ToRGB(out_channel, style_dim))
                in_channel = out_channel
            self.n_latent = self.log_size * 2 - 2

        def mean_latent(self, n_latent):
            latent_in = torch.randn(n_latent, self.style_dim, device=self.input.input.device)
            latent = self.style(latent_in).mean(0, keepdim=True)
            return latent

        def forward(self, styles, return_latents=False, inject_index=None, truncation=1, truncation_latent=None,
                    input_is_latent=False, noise=None, randomize_noise=True, random=None):
            if not input_is_latent:
                styles = [self.style(s) for s in styles]
            if noise is None:
                if randomize_noise:
                    noise = [None] * self.num_layers
                else:
                    noise = [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]
            if truncation < 1:
                style_t = []
                for style in styles:
                    style_t.append(truncation_latent + truncation * (style - truncation_latent))
                styles = style_t
            if len(styles) < 2:
                inject_index = self.n_latent
                if styles[0].ndim < 3:
                    latent = styles[0].unsqueeze(1).repeat(1, inject_index, 1)
                else:
                    latent = styles[0]
            else:
                if inject_index is None:
                    inject_index = random.randint(1, self.n_latent - 1)
                latent = styles[0].unsqueeze(1).repeat(1, inject_index, 1)
                latent2 = styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)
                latent = torch.cat([latent, latent2], 1)
            out = self.input(latent)
            out = self.conv1(out, latent[:, 0], noise=noise[0])
            skip = self.to_rgb1(out, latent[:, 1])
            i = 1
            for conv1, conv2, noise1, noise2, to_rgb in zip(self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2],
                                                            self.to_rgbs):
                out = conv1(out, latent[:, i], noise=noise1)
                out = conv2(out, latent[:, i + 1], noise=noise2)
                skip = to_rgb(out, latent[:, i + 2], skip)
                i += 2
            image = skip
            if return_latents:
                return image, latent
            else:
                return image, None

    class ConvLayer(nn.Sequential):
        def __init__(self, in_channel, out_channel, kernel_size, downsample=False, blur_kernel=[1, 3, 3, 1], bias=True,
                     activate=True):
            layers = []
            if downsample:
                factor = 2
                p = (len(blur_kernel) - factor) + (kernel_size - 1)
                pad0 = (p + 1) // 2
                pad1 = p // 2
                layers.append(Blur(blur_kernel, pad=(pad0, pad1)))
                stride = 2
                self.padding = 0
            else:
                stride = 1
                self.padding = kernel_size // 2
            layers.append(EqualConv2d(in_channel, out_channel, kernel_size, padding=self.padding, stride=stride,
                                      bias=bias and not activate))
            if activate:
                layers.append(FusedLeakyReLU(out_channel, bias=bias))
            super().__init__(*layers)

    class ResBlock(nn.Module):
        def __init__(self, in_channel, out_channel, blur_kernel=[1, 3, 3, 1]):
            super().__init__()
            self.conv1 = ConvLayer(in_channel, in_channel, 3)
            self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True)
            self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, activate=False, bias=False)

        def forward(self, input):
            out = self.conv1(input)
            out = self.conv2(out)
            skip = self.skip(input)
            out = (out + skip) / math.sqrt(2)
            return out

    class Discriminator(nn.Module):
        def __init__(self, size, channel_multiplier=2, blur_kernel=[1, 3, 3, 1]):
            super().__init__()
            channels = {4: channel, 8: channel, 16: channel}
            convs = [ConvLayer(3, channels[size], 1)]
            log_size = int(math.log(size, 2))
            in_channel = channels[size]
            for i in range(log_size, 2, -1):
                out_channel = channels[2 ** (i - 1)]
                convs.append(ResBlock(in_channel, out_channel, blur_kernel))
                in_channel = out_channel
            self.convs = nn.Sequential(*convs)
            self.stddev_group = 4
            self.stddev_feat = 1
            self.final_conv = ConvLayer(in_channel + 1, channels[4], 3)
            self.final_linear = nn.Sequential(
                EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
                EqualLinear(channels[4], 1),
            )

        def forward(self, input):
            out = self.convs(input)
            batch, channel, height, width = out.shape
            group = min(batch, self.stddev_group)
            stddev = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
            stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
            stddev = stddev.mean([2, 3, 4], keepdims=True).squeeze(2)
            stddev = stddev.repeat(group, 1, height, width)
            out = torch.cat([out, stddev], 1)
            out = self.final_conv(out)
            out = out.view(batch, -1)
            out = self.final_linear(out)
            return out

    return Generator(size, style_dim, n_mlp), Discriminator(size), upfirdn2d, make_kernel, pyrandom


def make_stylegan2(m):
    generator, discriminator, *_ = stylegan2_modules(m)
    return m.nn.ModuleDict({"g": generator, "d": discriminator})


def stylegan2(m, weights, iters=3, batch=4, latent=8, mixing=0.9, r1=10., path_regularize=2.,
              d_reg_every=2, g_reg_every=2, path_batch_shrink=2):
    torch, F = m.torch, m.F
    autograd = torch.autograd
    import copy
    both = load(m, make_stylegan2(m), weights)
    generator, discriminator = both["g"], both["d"]
    _, _, upfirdn2d, make_kernel, pyrandom = stylegan2_modules(m)
    random = pyrandom.Random(0)
    g_ema = copy.deepcopy(generator)
    g_ema.eval()

    def d_logistic_loss(real_pred, fake_pred):
        real_loss = F.softplus(-real_pred)
        fake_loss = F.softplus(fake_pred)
        return real_loss.mean() + fake_loss.mean()

    def d_r1_loss(real_pred, real_img):
        grad_real, = autograd.grad(outputs=real_pred.sum(), inputs=real_img, create_graph=True)
        grad_penalty = grad_real.pow(2).reshape(grad_real.shape[0], -1).sum(1).mean()
        return grad_penalty

    def g_nonsaturating_loss(fake_pred):
        loss = F.softplus(-fake_pred).mean()
        return loss

    def g_path_regularize(fake_img, latents, mean_path_length, decay=0.01):
        noise = torch.randn_like(fake_img) / math.sqrt(fake_img.shape[2] * fake_img.shape[3])
        grad, = autograd.grad(outputs=(fake_img * noise).sum(), inputs=latents, create_graph=True)
        path_lengths = torch.sqrt(grad.pow(2).sum(2).mean(1))
        path_mean = mean_path_length + decay * (path_lengths.mean() - mean_path_length)
        path_penalty = (path_lengths - path_mean).pow(2).mean()
        return path_penalty, path_mean.detach(), path_lengths

    def make_noise(batch, latent_dim, n_noise):
        if n_noise == 1:
            return torch.randn(batch, latent_dim)
        noises = torch.randn(n_noise, batch, latent_dim).unbind(0)
        return noises

    def mixing_noise(batch, latent_dim, prob):
        if prob > 0 and random.random() < prob:
            return make_noise(batch, latent_dim, 2)
        else:
            return [make_noise(batch, latent_dim, 1)]

    def accumulate(model1, model2, decay=0.999):
        par1 = dict(model1.named_parameters())
        par2 = dict(model2.named_parameters())
        for k in par1.keys():
            par1[k].data.mul_(decay).add_(par2[k].data, alpha=1 - decay)

    def requires_grad(model, flag=True):
        for p in model.parameters():
            p.requires_grad = flag

    g_reg_ratio = g_reg_every / (g_reg_every + 1)
    d_reg_ratio = d_reg_every / (d_reg_every + 1)
    lr = 0.002
    g_optim = m.optim.Adam(generator.parameters(), lr=lr * g_reg_ratio, betas=(0 ** g_reg_ratio, 0.99 ** g_reg_ratio))
    d_optim = m.optim.Adam(discriminator.parameters(), lr=lr * d_reg_ratio, betas=(0 ** d_reg_ratio, 0.99 ** d_reg_ratio))
    rng = np.random.default_rng(31)
    reals = np.tanh(rng.standard_normal((iters, batch, 3, 8, 8))).astype(np.float32)
    torch.manual_seed(4)
    mean_path_length = 0
    history = []
    for i in range(iters):
        real_img = torch.from_numpy(reals[i])
        requires_grad(generator, False)
        requires_grad(discriminator, True)
        noise = mixing_noise(batch, latent, mixing)
        fake_img, _ = generator(noise, random=random)
        fake_pred = discriminator(fake_img)
        real_pred = discriminator(real_img)
        d_loss = d_logistic_loss(real_pred, fake_pred)
        discriminator.zero_grad()
        d_loss.backward()
        d_optim.step()
        d_regularize = i % d_reg_every == 0
        r1_loss = torch.zeros(())
        if d_regularize:
            real_img.requires_grad = True
            real_pred = discriminator(real_img)
            r1_loss = d_r1_loss(real_pred, real_img)
            discriminator.zero_grad()
            (r1 / 2 * r1_loss * d_reg_every + 0 * real_pred[0]).backward()
            d_optim.step()
        requires_grad(generator, True)
        requires_grad(discriminator, False)
        noise = mixing_noise(batch, latent, mixing)
        fake_img, _ = generator(noise, random=random)
        fake_pred = discriminator(fake_img)
        g_loss = g_nonsaturating_loss(fake_pred)
        generator.zero_grad()
        g_loss.backward()
        g_optim.step()
        g_regularize = i % g_reg_every == 0
        path_loss = torch.zeros(())
        if g_regularize:
            path_batch_size = max(1, batch // path_batch_shrink)
            noise = mixing_noise(path_batch_size, latent, mixing)
            fake_img, latents = generator(noise, return_latents=True, random=random)
            path_loss, mean_path_length, path_lengths = g_path_regularize(fake_img, latents, mean_path_length)
            generator.zero_grad()
            weighted_path_loss = path_regularize * g_reg_every * path_loss
            if path_batch_shrink:
                weighted_path_loss += 0 * fake_img[0, 0, 0, 0]
            weighted_path_loss.backward()
            g_optim.step()
        accumulate(g_ema, generator, 0.5 ** (32 / (10 * 1000)))
        history.append([d_loss.item(), r1_loss.item(), g_loss.item(), path_loss.item(), float(mean_path_length)])
    grads = {"g." + n: p.grad for n, p in generator.named_parameters() if p.grad is not None}
    grads.update({"d." + n: p.grad for n, p in discriminator.named_parameters() if p.grad is not None})
    with torch.no_grad():
        mean_latent = g_ema.mean_latent(16)
        sample, _ = g_ema([torch.randn(2, latent)], truncation=0.7, truncation_latent=mean_latent,
                          randomize_noise=False)
    # upfirdn2d against its definition: zero-stuffing, FIR filtering with the flipped kernel, decimation
    x = torch.from_numpy(rng.standard_normal((1, 2, 5, 5)).astype(np.float32))
    k = make_kernel([1, 3, 3, 1])
    fir = {"up": upfirdn2d(x, k * 4, up=2, pad=(2, 1)), "down": upfirdn2d(x, k, down=2, pad=(1, 1)),
           "crop": upfirdn2d(x, k, pad=(-1, 2))}
    return {"history": history, "grads": grads, "state": both.state_dict(), "ema": g_ema.state_dict(),
            "sample": sample, "fir": fir, "x": x}


def fir_reference(x, k, up=1, down=1, pad=(0, 0)):
    """upfirdn2d in NumPy: zero-stuff by up, pad (negative crops), correlate with the flipped kernel (a true
    convolution), keep every down-th sample."""
    n, c, h, w = x.shape
    stuffed = np.zeros((n, c, h * up, w * up), x.dtype)
    stuffed[:, :, ::up, ::up] = x
    p0, p1 = pad
    padded = np.pad(stuffed, ((0, 0), (0, 0), (max(p0, 0), max(p1, 0)), (max(p0, 0), max(p1, 0))))
    padded = padded[:, :, max(-p0, 0):padded.shape[2] - max(-p1, 0), max(-p0, 0):padded.shape[3] - max(-p1, 0)]
    kh, kw = k.shape
    flipped = k[::-1, ::-1]
    out_h, out_w = padded.shape[2] - kh + 1, padded.shape[3] - kw + 1
    out = np.zeros((n, c, out_h, out_w))
    for i in range(out_h):
        for j in range(out_w):
            out[:, :, i, j] = (padded[:, :, i:i + kh, j:j + kw] * flipped).sum((-1, -2))
    return out[:, :, ::down, ::down]


def test_stylegan2_upfirdn_modulated_convs_r1_and_path_length():
    weights = weights_of(make_stylegan2)
    ours, _ = run_both(stylegan2, weights, rtol=5e-4, atol=5e-5)
    k = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0
    np.testing.assert_allclose(ours["fir"]["up"], fir_reference(ours["x"], k * 4, up=2, pad=(2, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["fir"]["down"], fir_reference(ours["x"], k, down=2, pad=(1, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["fir"]["crop"], fir_reference(ours["x"], k, pad=(-1, 2)), rtol=1e-5, atol=1e-6)
    assert ours["sample"].shape == (2, 3, 8, 8)
