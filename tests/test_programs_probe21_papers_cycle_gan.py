# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Paper implementations as labml.ai's annotated_deep_learning_paper_implementations writes them (labml_nn/...), run
as tests/probe21_papers_common.py says: CycleGAN."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# labml_nn/gan/cycle_gan: CycleGAN (reflect-padded convolutions, instance norm, in-place ReLUs, a
# replay buffer of generated images, LambdaLR decay), seeded and initialised by apply(weights_init_normal)
# ----------------------------------------------------------------------------------------------


def make_cycle_gan(m):
    torch, nn = m.torch, m.nn
    class GeneratorResNet(nn.Module):
        def __init__(self, input_channels, n_residual_blocks):
            super().__init__()
            out_features = 8
            layers = [
                nn.Conv2d(input_channels, out_features, kernel_size=7, padding=3, padding_mode='reflect'),
                nn.InstanceNorm2d(out_features),
                nn.ReLU(inplace=True),
            ]
            in_features = out_features
            for _ in range(2):
                out_features *= 2
                layers += [
                    nn.Conv2d(in_features, out_features, kernel_size=3, stride=2, padding=1),
                    nn.InstanceNorm2d(out_features),
                    nn.ReLU(inplace=True),
                ]
                in_features = out_features
            for _ in range(n_residual_blocks):
                layers += [ResidualBlock(out_features)]
            for _ in range(2):
                out_features //= 2
                layers += [
                    nn.Upsample(scale_factor=2),
                    nn.Conv2d(in_features, out_features, kernel_size=3, stride=1, padding=1),
                    nn.InstanceNorm2d(out_features),
                    nn.ReLU(inplace=True),
                ]
                in_features = out_features
            layers += [nn.Conv2d(out_features, input_channels, 7, padding=3, padding_mode='reflect'), nn.Tanh()]
            self.layers = nn.Sequential(*layers)
            self.apply(weights_init_normal)

        def forward(self, x):
            return self.layers(x)

    class ResidualBlock(nn.Module):
        def __init__(self, in_features):
            super().__init__()
            self.block = nn.Sequential(
                nn.Conv2d(in_features, in_features, kernel_size=3, padding=1, padding_mode='reflect'),
                nn.InstanceNorm2d(in_features),
                nn.ReLU(inplace=True),
                nn.Conv2d(in_features, in_features, kernel_size=3, padding=1, padding_mode='reflect'),
                nn.InstanceNorm2d(in_features),
                nn.ReLU(inplace=True),
            )

        def forward(self, x):
            return x + self.block(x)

    class DiscriminatorBlock(nn.Module):
        def __init__(self, in_filters, out_filters, normalize=True):
            super().__init__()
            layers = [nn.Conv2d(in_filters, out_filters, kernel_size=4, stride=2, padding=1)]
            if normalize:
                layers.append(nn.InstanceNorm2d(out_filters))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            self.layers = nn.Sequential(*layers)

        def forward(self, x):
            return self.layers(x)

    class Discriminator(nn.Module):
        def __init__(self, input_shape):
            super().__init__()
            channels, height, width = input_shape
            self.output_shape = (1, height // 2 ** 4, width // 2 ** 4)
            self.layers = nn.Sequential(
                DiscriminatorBlock(channels, 8, normalize=False),
                DiscriminatorBlock(8, 16),
                DiscriminatorBlock(16, 16),
                DiscriminatorBlock(16, 16),
                nn.ZeroPad2d((1, 0, 1, 0)),
                nn.Conv2d(16, 1, kernel_size=4, padding=1)
            )
            self.apply(weights_init_normal)

        def forward(self, img):
            return self.layers(img)

    def weights_init_normal(m):
        classname = m.__class__.__name__
        if classname.find("Conv") != -1:
            torch.nn.init.normal_(m.weight.data, 0.0, 0.02)

    return nn.ModuleDict(dict(generator_xy=GeneratorResNet(3, 1), generator_yx=GeneratorResNet(3, 1),
                              discriminator_x=Discriminator((3, 32, 32)), discriminator_y=Discriminator((3, 32, 32))))


def cycle_gan_program(m, weights, dtype):
    torch, nn = m.torch, m.nn
    import itertools
    import random

    class ReplayBuffer:
        def __init__(self, max_size=50):
            self.max_size = max_size
            self.data = []

        def push_and_pop(self, data):
            data = data.detach()
            res = []
            for element in data:
                if len(self.data) < self.max_size:
                    self.data.append(element)
                    res.append(element)
                else:
                    if random.uniform(0, 1) > 0.5:
                        i = random.randint(0, self.max_size - 1)
                        res.append(self.data[i].clone())
                        self.data[i] = element
                    else:
                        res.append(element)
            return torch.stack(res)


    torch.manual_seed(0)
    random.seed(0)
    models = load(m, make_cycle_gan(m), weights)  # (the same initial weights in both libraries)
    generator_xy, generator_yx = models.generator_xy, models.generator_yx
    discriminator_x, discriminator_y = models.discriminator_x, models.discriminator_y
    dtype = getattr(torch, dtype)
    for model in (generator_xy, generator_yx, discriminator_x, discriminator_y):
        model.to(dtype)  # (their .to(self.device))
    generator_optimizer = torch.optim.Adam(itertools.chain(generator_xy.parameters(), generator_yx.parameters()),
                                           lr=2e-4, betas=(0.5, 0.999))
    discriminator_optimizer = torch.optim.Adam(itertools.chain(discriminator_x.parameters(), discriminator_y.parameters()),
                                               lr=2e-4, betas=(0.5, 0.999))
    epochs, decay_start = 4, 2
    decay_epochs = epochs - decay_start
    generator_lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
        generator_optimizer, lr_lambda=lambda e: 1.0 - max(0, e - decay_start) / decay_epochs)
    discriminator_lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
        discriminator_optimizer, lr_lambda=lambda e: 1.0 - max(0, e - decay_start) / decay_epochs)
    gan_loss, cycle_loss, identity_loss = torch.nn.MSELoss(), torch.nn.L1Loss(), torch.nn.L1Loss()
    gen_x_buffer, gen_y_buffer = ReplayBuffer(3), ReplayBuffer(3)
    data_x, data_y = (torch.rand(2, 2, 3, 32, 32) * 2 - 1).to(dtype), (torch.rand(2, 2, 3, 32, 32) * 2 - 1).to(dtype)
    out = {"g": [], "d": [], "lr": []}
    for epoch in range(epochs):
        for data_x_, data_y_ in zip(data_x, data_y):
            true_labels = torch.ones(data_x_.size(0), *discriminator_x.output_shape, requires_grad=False, dtype=dtype)
            false_labels = torch.zeros(data_x_.size(0), *discriminator_x.output_shape, requires_grad=False, dtype=dtype)
            generator_xy.train()
            generator_yx.train()
            loss_identity = (identity_loss(generator_yx(data_x_), data_x_) + identity_loss(generator_xy(data_y_), data_y_))
            gen_y = generator_xy(data_x_)
            gen_x = generator_yx(data_y_)
            loss_gan = (gan_loss(discriminator_y(gen_y), true_labels) + gan_loss(discriminator_x(gen_x), true_labels))
            loss_cycle = (cycle_loss(generator_yx(gen_y), data_x_) + cycle_loss(generator_xy(gen_x), data_y_))
            loss_generator = (loss_gan + 10.0 * loss_cycle + 5. * loss_identity)
            generator_optimizer.zero_grad()
            loss_generator.backward()
            if "first_grads" not in out:
                out["first_grads"] = [p.grad.clone() for p in generator_xy.parameters()]
                out["first_loss"] = loss_generator.item()
            generator_optimizer.step()
            gen_x = gen_x_buffer.push_and_pop(gen_x)
            gen_y = gen_y_buffer.push_and_pop(gen_y)
            loss_discriminator = (gan_loss(discriminator_x(data_x_), true_labels) +
                                  gan_loss(discriminator_x(gen_x), false_labels) +
                                  gan_loss(discriminator_y(data_y_), true_labels) +
                                  gan_loss(discriminator_y(gen_y), false_labels))
            discriminator_optimizer.zero_grad()
            loss_discriminator.backward()
            discriminator_optimizer.step()
            out["g"].append(loss_generator.item())
            out["d"].append(loss_discriminator.item())
        generator_lr_scheduler.step()
        discriminator_lr_scheduler.step()
        out["lr"].append(generator_lr_scheduler.get_last_lr()[0])
    # (the convolutions' biases before instance norm change nothing and have no gradient in exact arithmetic, so
    # Adam moves them by lr times the sign of rounding noise: left out)
    out["weights"] = [p for name, p in generator_xy.named_parameters() if "weight" in name]
    out["buffer"] = torch.stack(gen_x_buffer.data)
    return out


def test_cycle_gan():
    # (in float64: this generator-into-generator gradient is ill-conditioned, float32 rounding moves the first
    # step's gradients by about 1% in either library, and a 1-ulp change of the initial weights as much)
    weights = weights_of(make_cycle_gan)
    ours, _ = run_both(cycle_gan_program, weights, "float64", rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["lr"], [2e-4, 2e-4, 1e-4, 0.0], atol=1e-12)
    assert ours["buffer"].shape == (3, 3, 32, 32)
    assert ours["g"][-1] < ours["g"][0]
