# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: GANs with gradient penalties (double backward): StyleGAN 2 with gradient and
path-length penalties, a U-Net generator under WGAN-GP."""

import math

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/gan/stylegan: StyleGAN 2 with its gradient and path-length penalties (double backward)
# ----------------------------------------------------------------------------------------------


def make_stylegan(m):
    torch, nn, F = m.torch, m.nn, m.F

    class EqualizedWeight(nn.Module):
        def __init__(self, shape):
            super().__init__()
            self.c = 1 / math.sqrt(np.prod(shape[1:]))
            self.weight = nn.Parameter(torch.randn(shape))

        def forward(self):
            return self.weight * self.c

    class EqualizedLinear(nn.Module):
        def __init__(self, in_features, out_features, bias=0.):
            super().__init__()
            self.weight = EqualizedWeight([out_features, in_features])
            self.bias = nn.Parameter(torch.ones(out_features) * bias)

        def forward(self, x):
            return F.linear(x, self.weight(), bias=self.bias)

    class EqualizedConv2d(nn.Module):
        def __init__(self, in_features, out_features, kernel_size, padding=0):
            super().__init__()
            self.padding = padding
            self.weight = EqualizedWeight([out_features, in_features, kernel_size, kernel_size])
            self.bias = nn.Parameter(torch.ones(out_features))

        def forward(self, x):
            return F.conv2d(x, self.weight(), bias=self.bias, padding=self.padding)

    class MappingNetwork(nn.Module):
        def __init__(self, features, n_layers):
            super().__init__()
            layers = []
            for i in range(n_layers):
                layers.append(EqualizedLinear(features, features))
                layers.append(nn.LeakyReLU(negative_slope=0.2, inplace=True))
            self.net = nn.Sequential(*layers)

        def forward(self, z):
            z = F.normalize(z, dim=1)
            return self.net(z)

    class Conv2dWeightModulate(nn.Module):
        def __init__(self, in_features, out_features, kernel_size, demodulate=True, eps=1e-8):
            super().__init__()
            self.out_features = out_features
            self.demodulate = demodulate
            self.padding = (kernel_size - 1) // 2
            self.weight = EqualizedWeight([out_features, in_features, kernel_size, kernel_size])
            self.eps = eps

        def forward(self, x, s):
            b, _, h, w = x.shape
            s = s[:, None, :, None, None]
            weights = self.weight()[None, :, :, :, :]
            weights = weights * s
            if self.demodulate:
                sigma_inv = torch.rsqrt((weights ** 2).sum(dim=(2, 3, 4), keepdim=True) + self.eps)
                weights = weights * sigma_inv
            x = x.reshape(1, -1, h, w)
            _, _, *ws = weights.shape
            weights = weights.reshape(b * self.out_features, *ws)
            x = F.conv2d(x, weights, padding=self.padding, groups=b)
            return x.reshape(-1, self.out_features, h, w)

    class StyleBlock(nn.Module):
        def __init__(self, d_latent, in_features, out_features):
            super().__init__()
            self.to_style = EqualizedLinear(d_latent, in_features, bias=1.0)
            self.conv = Conv2dWeightModulate(in_features, out_features, kernel_size=3)
            self.scale_noise = nn.Parameter(torch.zeros(1))
            self.bias = nn.Parameter(torch.zeros(out_features))
            self.activation = nn.LeakyReLU(0.2, True)

        def forward(self, x, w, noise):
            s = self.to_style(w)
            x = self.conv(x, s)
            if noise is not None:
                x = x + self.scale_noise[None, :, None, None] * noise
            return self.activation(x + self.bias[None, :, None, None])

    class ToRGB(nn.Module):
        def __init__(self, d_latent, features):
            super().__init__()
            self.to_style = EqualizedLinear(d_latent, features, bias=1.0)
            self.conv = Conv2dWeightModulate(features, 3, kernel_size=1, demodulate=False)
            self.bias = nn.Parameter(torch.zeros(3))
            self.activation = nn.LeakyReLU(0.2, True)

        def forward(self, x, w):
            style = self.to_style(w)
            x = self.conv(x, style)
            return self.activation(x + self.bias[None, :, None, None])

    class Smooth(nn.Module):
        def __init__(self):
            super().__init__()
            kernel = [[1, 2, 1], [2, 4, 2], [1, 2, 1]]
            kernel = torch.tensor([[kernel]], dtype=torch.float)
            kernel /= kernel.sum()
            self.kernel = nn.Parameter(kernel, requires_grad=False)
            self.pad = nn.ReplicationPad2d(1)

        def forward(self, x):
            b, c, h, w = x.shape
            x = x.view(-1, 1, h, w)
            x = self.pad(x)
            x = F.conv2d(x, self.kernel)
            return x.view(b, c, h, w)

    class UpSample(nn.Module):
        def __init__(self):
            super().__init__()
            self.up_sample = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False)
            self.smooth = Smooth()

        def forward(self, x):
            return self.smooth(self.up_sample(x))

    class DownSample(nn.Module):
        def __init__(self):
            super().__init__()
            self.smooth = Smooth()

        def forward(self, x):
            x = self.smooth(x)
            return F.interpolate(x, (x.shape[2] // 2, x.shape[3] // 2), mode='bilinear', align_corners=False)

    class GeneratorBlock(nn.Module):
        def __init__(self, d_latent, in_features, out_features):
            super().__init__()
            self.style_block1 = StyleBlock(d_latent, in_features, out_features)
            self.style_block2 = StyleBlock(d_latent, out_features, out_features)
            self.to_rgb = ToRGB(d_latent, out_features)

        def forward(self, x, w, noise):
            x = self.style_block1(x, w, noise[0])
            x = self.style_block2(x, w, noise[1])
            rgb = self.to_rgb(x, w)
            return x, rgb

    class Generator(nn.Module):
        def __init__(self, log_resolution, d_latent, n_features=32, max_features=512):
            super().__init__()
            features = [min(max_features, n_features * (2 ** i)) for i in range(log_resolution - 2, -1, -1)]
            self.n_blocks = len(features)
            self.initial_constant = nn.Parameter(torch.randn((1, features[0], 4, 4)))
            self.style_block = StyleBlock(d_latent, features[0], features[0])
            self.to_rgb = ToRGB(d_latent, features[0])
            blocks = [GeneratorBlock(d_latent, features[i - 1], features[i]) for i in range(1, self.n_blocks)]
            self.blocks = nn.ModuleList(blocks)
            self.up_sample = UpSample()

        def forward(self, w, input_noise):
            batch_size = w.shape[1]
            x = self.initial_constant.expand(batch_size, -1, -1, -1)
            x = self.style_block(x, w[0], input_noise[0][1])
            rgb = self.to_rgb(x, w[0])
            for i in range(1, self.n_blocks):
                x = self.up_sample(x)
                x, rgb_new = self.blocks[i - 1](x, w[i], input_noise[i])
                rgb = self.up_sample(rgb) + rgb_new
            return rgb

    class MiniBatchStdDev(nn.Module):
        def __init__(self, group_size=4):
            super().__init__()
            self.group_size = group_size

        def forward(self, x):
            assert x.shape[0] % self.group_size == 0
            grouped = x.view(self.group_size, -1)
            std = torch.sqrt(grouped.var(dim=0) + 1e-8)
            std = std.mean().view(1, 1, 1, 1)
            b, _, h, w = x.shape
            std = std.expand(b, -1, h, w)
            return torch.cat([x, std], dim=1)

    class DiscriminatorBlock(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.residual = nn.Sequential(DownSample(), EqualizedConv2d(in_features, out_features, kernel_size=1))
            self.block = nn.Sequential(
                EqualizedConv2d(in_features, in_features, kernel_size=3, padding=1),
                nn.LeakyReLU(0.2, True),
                EqualizedConv2d(in_features, out_features, kernel_size=3, padding=1),
                nn.LeakyReLU(0.2, True),
            )
            self.down_sample = DownSample()
            self.scale = 1 / math.sqrt(2)

        def forward(self, x):
            residual = self.residual(x)
            x = self.block(x)
            x = self.down_sample(x)
            return (x + residual) * self.scale

    class Discriminator(nn.Module):
        def __init__(self, log_resolution, n_features=64, max_features=512):
            super().__init__()
            self.from_rgb = nn.Sequential(EqualizedConv2d(3, n_features, 1), nn.LeakyReLU(0.2, True))
            features = [min(max_features, n_features * (2 ** i)) for i in range(log_resolution - 1)]
            n_blocks = len(features) - 1
            blocks = [DiscriminatorBlock(features[i], features[i + 1]) for i in range(n_blocks)]
            self.blocks = nn.Sequential(*blocks)
            self.std_dev = MiniBatchStdDev()
            final_features = features[-1] + 1
            self.conv = EqualizedConv2d(final_features, final_features, 3)
            self.final = EqualizedLinear(2 * 2 * final_features, 1)

        def forward(self, x):
            x = x - 0.5
            x = self.from_rgb(x)
            x = self.blocks(x)
            x = self.std_dev(x)
            x = self.conv(x)
            x = x.reshape(x.shape[0], -1)
            return self.final(x)

    class StyleGAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.mapping_network = MappingNetwork(8, 2)
            self.generator = Generator(4, 8, n_features=4, max_features=8)
            self.discriminator = Discriminator(4, n_features=4, max_features=8)

    return StyleGAN().double()


def stylegan_program(m, weights):
    torch, nn, F = m.torch, m.nn, m.F

    class GradientPenalty(nn.Module):
        def forward(self, x, d):
            batch_size = x.shape[0]
            gradients, *_ = torch.autograd.grad(outputs=d, inputs=x, grad_outputs=d.new_ones(d.shape),
                                                create_graph=True)
            gradients = gradients.reshape(batch_size, -1)
            norm = gradients.norm(2, dim=-1)
            return torch.mean(norm ** 2)

    class PathLengthPenalty(nn.Module):
        def __init__(self, beta):
            super().__init__()
            self.beta = beta
            self.steps = nn.Parameter(torch.tensor(0.), requires_grad=False)
            self.exp_sum_a = nn.Parameter(torch.tensor(0.), requires_grad=False)

        def forward(self, w, x):
            image_size = x.shape[2] * x.shape[3]
            y = torch.randn(x.shape, dtype=x.dtype)
            output = (x * y).sum() / math.sqrt(image_size)
            gradients, *_ = torch.autograd.grad(outputs=output, inputs=w, grad_outputs=torch.ones(output.shape, dtype=x.dtype),
                                                create_graph=True)
            norm = (gradients ** 2).sum(dim=2).mean(dim=1).sqrt()
            if self.steps > 0:
                a = self.exp_sum_a / (1 - self.beta ** self.steps)
                loss = torch.mean((norm - a) ** 2)
            else:
                loss = norm.new_tensor(0)
            mean = norm.mean().detach()
            self.exp_sum_a.mul_(self.beta).add_(mean, alpha=1 - self.beta)
            self.steps.add_(1.)
            return loss

    class DiscriminatorLoss(nn.Module):
        def forward(self, f_real, f_fake):
            return F.relu(1 - f_real).mean(), F.relu(1 + f_fake).mean()

    class GeneratorLoss(nn.Module):
        def forward(self, f_fake):
            return -f_fake.mean()

    model = load(m, make_stylegan(m), weights)
    mapping_network, generator, discriminator = model.mapping_network, model.generator, model.discriminator
    rng = np.random.default_rng(14)
    real = torch.tensor(rng.uniform(0, 1, (4, 3, 16, 16)))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=1e-3, betas=(0.0, 0.99))
    g_opt = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.0, 0.99))
    m_opt = torch.optim.Adam(mapping_network.parameters(), lr=1e-4, betas=(0.0, 0.99))
    gradient_penalty, path_length_penalty = GradientPenalty(), PathLengthPenalty(0.99)
    discriminator_loss, generator_loss = DiscriminatorLoss(), GeneratorLoss()
    torch.manual_seed(0)
    n_gen_blocks = generator.n_blocks

    def get_w(batch_size):
        z = torch.randn(batch_size, 8, dtype=torch.float64)
        w = mapping_network(z)
        return w[None, :, :].expand(n_gen_blocks, -1, -1)

    def get_noise(batch_size):
        noise = []
        resolution = 4
        for i in range(n_gen_blocks):
            if i == 0:
                n1 = None
            else:
                n1 = torch.randn(batch_size, 1, resolution, resolution, dtype=torch.float64)
            n2 = torch.randn(batch_size, 1, resolution, resolution, dtype=torch.float64)
            noise.append((n1, n2))
            resolution *= 2
        return noise

    def generate_images(batch_size):
        w = get_w(batch_size)
        noise = get_noise(batch_size)
        images = generator(w, noise)
        return images, w

    out = {"d": [], "g": [], "gp": [], "plp": []}
    for idx in range(3):
        d_opt.zero_grad()
        generated_images, _ = generate_images(4)
        fake_output = discriminator(generated_images.detach())
        real_images = real.clone().requires_grad_()
        real_output = discriminator(real_images)
        real_loss, fake_loss = discriminator_loss(real_output, fake_output)
        disc_loss = real_loss + fake_loss
        gp = gradient_penalty(real_images, real_output)
        disc_loss = disc_loss + 0.5 * 10. * gp
        disc_loss.backward()
        nn.utils.clip_grad_norm_(discriminator.parameters(), max_norm=1.0)
        d_opt.step()
        g_opt.zero_grad()
        m_opt.zero_grad()
        generated_images, w = generate_images(4)
        fake_output = discriminator(generated_images)
        gen_loss = generator_loss(fake_output)
        plp = path_length_penalty(w, generated_images)
        if not torch.isnan(plp):
            gen_loss = gen_loss + plp
        gen_loss.backward()
        nn.utils.clip_grad_norm_(generator.parameters(), max_norm=1.0)
        nn.utils.clip_grad_norm_(mapping_network.parameters(), max_norm=1.0)
        g_opt.step()
        m_opt.step()
        out["d"].append(disc_loss.item())
        out["g"].append(gen_loss.item())
        out["gp"].append(gp.item())
        out["plp"].append(plp.item())
    out["steps"] = path_length_penalty.steps
    out["exp_sum_a"] = path_length_penalty.exp_sum_a
    out["conv_grad"] = discriminator.from_rgb[0].weight.weight.grad
    out["style_grad"] = generator.blocks[0].style_block1.to_style.weight.weight.grad
    out["images"] = generated_images
    return out


def test_stylegan2_with_penalties():
    weights = weights_of(make_stylegan)
    ours, _ = run_both(stylegan_program, weights, rtol=1e-7, atol=1e-9)
    assert ours["steps"] == 3 and ours["plp"][0] == 0 and ours["plp"][2] > 0
    assert ours["images"].shape == (4, 3, 16, 16) and all(g > 0 for g in ours["gp"])


# ----------------------------------------------------------------------------------------------
# labml_nn/unet and gan/wasserstein/gradient_penalty: a U-Net (valid-size crops, transposed
# convolutions) as the generator of a WGAN-GP critic step (double backward through it all)
# ----------------------------------------------------------------------------------------------


def make_unet_wgan(m):
    torch, nn = m.torch, m.nn

    def center_crop(img, output_size):  # torchvision.transforms.functional.center_crop's arithmetic
        image_height, image_width = img.shape[-2:]
        crop_height, crop_width = output_size
        crop_top = int(round((image_height - crop_height) / 2.0))
        crop_left = int(round((image_width - crop_width) / 2.0))
        return img[..., crop_top:crop_top + crop_height, crop_left:crop_left + crop_width]

    class DoubleConvolution(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.first = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
            self.act1 = nn.ReLU()
            self.second = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1)
            self.act2 = nn.ReLU()

        def forward(self, x):
            x = self.first(x)
            x = self.act1(x)
            x = self.second(x)
            return self.act2(x)

    class DownSample(nn.Module):
        def __init__(self):
            super().__init__()
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            return self.pool(x)

    class UpSample(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=2, stride=2)

        def forward(self, x):
            return self.up(x)

    class CropAndConcat(nn.Module):
        def forward(self, x, contracting_x):
            contracting_x = center_crop(contracting_x, [x.shape[2], x.shape[3]])
            x = torch.cat([x, contracting_x], dim=1)
            return x

    class UNet(nn.Module):
        def __init__(self, in_channels, out_channels):
            super().__init__()
            self.down_conv = nn.ModuleList([DoubleConvolution(i, o) for i, o in [(in_channels, 4), (4, 8), (8, 8)]])
            self.down_sample = nn.ModuleList([DownSample() for _ in range(3)])
            self.middle_conv = DoubleConvolution(8, 16)
            self.up_sample = nn.ModuleList([UpSample(i, o) for i, o in [(16, 8), (8, 8), (8, 4)]])
            self.up_conv = nn.ModuleList([DoubleConvolution(i, o) for i, o in [(16, 8), (16, 8), (8, 4)]])
            self.concat = nn.ModuleList([CropAndConcat() for _ in range(3)])
            self.final_conv = nn.Conv2d(4, out_channels, kernel_size=1)

        def forward(self, x):
            pass_through = []
            for i in range(len(self.down_conv)):
                x = self.down_conv[i](x)
                pass_through.append(x)
                x = self.down_sample[i](x)
            x = self.middle_conv(x)
            for i in range(len(self.up_conv)):
                x = self.up_sample[i](x)
                x = self.concat[i](x, pass_through.pop())
                x = self.up_conv[i](x)
            x = self.final_conv(x)
            return x

    critic = nn.Sequential(nn.Conv2d(1, 8, 4, 2, 1), nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(8, 16, 4, 2, 1),
                           nn.LeakyReLU(0.2, inplace=True), nn.Flatten(), nn.Linear(16 * 4 * 4, 1))
    return nn.ModuleDict(dict(generator=UNet(1, 1), critic=critic)).double()


def unet_wgan_program(m, weights):
    torch, nn = m.torch, m.nn

    class GradientPenalty(nn.Module):
        def forward(self, x, f):
            batch_size = x.shape[0]
            gradients, *_ = torch.autograd.grad(outputs=f, inputs=x, grad_outputs=f.new_ones(f.shape),
                                                create_graph=True)
            gradients = gradients.reshape(batch_size, -1)
            norm = gradients.norm(2, dim=-1)
            return torch.mean((norm - 1) ** 2)

    class DiscriminatorLoss(nn.Module):
        def forward(self, f_real, f_fake):
            return F.relu(1 - f_real).mean(), F.relu(1 + f_fake).mean()

    F = nn.functional
    models = load(m, make_unet_wgan(m), weights)
    generator, critic = models.generator, models.critic
    rng = np.random.default_rng(21)
    real = torch.tensor(rng.uniform(-1, 1, (4, 1, 16, 16)))  # (the U-Net crops 20x20 noise to 16x16)
    noise = torch.tensor(rng.standard_normal((4, 1, 20, 20)))
    alpha = torch.tensor(rng.uniform(0, 1, (4, 1, 1, 1)))
    c_opt = torch.optim.Adam(critic.parameters(), lr=1e-3, betas=(0.5, 0.9))
    g_opt = torch.optim.Adam(generator.parameters(), lr=1e-3, betas=(0.5, 0.9))
    gradient_penalty, discriminator_loss = GradientPenalty(), DiscriminatorLoss()
    out = {"c": [], "g": [], "gp": []}
    for step in range(3):
        fake = torch.tanh(generator(noise))
        interpolates = (alpha * real + (1 - alpha) * fake.detach()).requires_grad_(True)
        loss_true, loss_false = discriminator_loss(critic(real), critic(fake.detach()))
        gp = gradient_penalty(interpolates, critic(interpolates))
        c_loss = loss_true + loss_false + 10 * gp
        c_opt.zero_grad()
        c_loss.backward()
        c_opt.step()
        # the generator's step, with the penalty through the generator itself (double backward through the U-Net)
        fake = torch.tanh(generator(noise))
        g_loss = -critic(fake).mean() + 0.1 * gradient_penalty(noise.requires_grad_(True), generator(noise).sum((1, 2, 3)))
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
        noise = noise.detach()
        out["c"].append(c_loss.item())
        out["g"].append(g_loss.item())
        out["gp"].append(gp.item())
    out["w"] = generator.up_sample[0].up.weight
    out["fake"] = fake
    return out


def test_unet_wgan_gradient_penalty():
    weights = weights_of(make_unet_wgan)
    ours, _ = run_both(unet_wgan_program, weights, rtol=1e-8, atol=1e-10)
    assert ours["fake"].shape == (4, 1, 16, 16) and all(g >= 0 for g in ours["gp"])
