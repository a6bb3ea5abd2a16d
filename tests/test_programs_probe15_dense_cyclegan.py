# ruff: noqa: B007, E721, F841, UP008, UP031  (the programs are kept as their authors wrote them)
"""Dense-prediction and image-synthesis programs, run as tests/probe15_dense_common.py says. CycleGAN
(ResnetGenerator with reflection/replication padding and InstanceNorm, PatchGAN, LSGAN by a buffered GANLoss,
``itertools.chain``, LambdaLR)."""

import numpy as np
import pytest

from .probe15_dense_common import F32, images
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# CycleGAN as junyanz/pytorch-CycleGAN-and-pix2pix writes it: a ResnetGenerator (ReflectionPad2d,
# InstanceNorm2d, ConvTranspose2d with output_padding=1, Tanh), a PatchGAN discriminator, LSGAN losses
# by a GANLoss that caches its target tensors as buffers, cycle and identity L1 terms, set_requires_grad,
# Adam over itertools.chain, and a linear LambdaLR decay
# ----------------------------------------------------------------------------------------------


def cyclegan(m, ngf=4, ndf=4):
    nn, torch = m.nn, m.torch
    import functools

    norm_layer = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)

    class ResnetBlock(nn.Module):
        def __init__(self, dim, padding_type, norm_layer, use_dropout, use_bias):
            super(ResnetBlock, self).__init__()
            self.conv_block = self.build_conv_block(dim, padding_type, norm_layer, use_dropout, use_bias)

        def build_conv_block(self, dim, padding_type, norm_layer, use_dropout, use_bias):
            conv_block = []
            p = 0
            if padding_type == 'reflect':
                conv_block += [nn.ReflectionPad2d(1)]
            elif padding_type == 'replicate':
                conv_block += [nn.ReplicationPad2d(1)]
            elif padding_type == 'zero':
                p = 1
            else:
                raise NotImplementedError('padding [%s] is not implemented' % padding_type)
            conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim), nn.ReLU(True)]
            if use_dropout:
                conv_block += [nn.Dropout(0.5)]
            p = 0
            if padding_type == 'reflect':
                conv_block += [nn.ReflectionPad2d(1)]
            elif padding_type == 'replicate':
                conv_block += [nn.ReplicationPad2d(1)]
            elif padding_type == 'zero':
                p = 1
            conv_block += [nn.Conv2d(dim, dim, kernel_size=3, padding=p, bias=use_bias), norm_layer(dim)]
            return nn.Sequential(*conv_block)

        def forward(self, x):
            out = x + self.conv_block(x)
            return out

    class ResnetGenerator(nn.Module):
        def __init__(self, input_nc, output_nc, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False, n_blocks=6,
                     padding_type='reflect'):
            assert(n_blocks >= 0)
            super(ResnetGenerator, self).__init__()
            if type(norm_layer) == functools.partial:
                use_bias = norm_layer.func == nn.InstanceNorm2d
            else:
                use_bias = norm_layer == nn.InstanceNorm2d
            model = [nn.ReflectionPad2d(3),
                     nn.Conv2d(input_nc, ngf, kernel_size=7, padding=0, bias=use_bias),
                     norm_layer(ngf),
                     nn.ReLU(True)]
            n_downsampling = 2
            for i in range(n_downsampling):
                mult = 2 ** i
                model += [nn.Conv2d(ngf * mult, ngf * mult * 2, kernel_size=3, stride=2, padding=1, bias=use_bias),
                          norm_layer(ngf * mult * 2),
                          nn.ReLU(True)]
            mult = 2 ** n_downsampling
            for i in range(n_blocks):
                model += [ResnetBlock(ngf * mult, padding_type=padding_type, norm_layer=norm_layer,
                                      use_dropout=use_dropout, use_bias=use_bias)]
            for i in range(n_downsampling):
                mult = 2 ** (n_downsampling - i)
                model += [nn.ConvTranspose2d(ngf * mult, int(ngf * mult / 2),
                                             kernel_size=3, stride=2,
                                             padding=1, output_padding=1,
                                             bias=use_bias),
                          norm_layer(int(ngf * mult / 2)),
                          nn.ReLU(True)]
            model += [nn.ReflectionPad2d(3)]
            model += [nn.Conv2d(ngf, output_nc, kernel_size=7, padding=0)]
            model += [nn.Tanh()]
            self.model = nn.Sequential(*model)

        def forward(self, input):
            return self.model(input)

    class NLayerDiscriminator(nn.Module):
        def __init__(self, input_nc, ndf=64, n_layers=3, norm_layer=nn.BatchNorm2d):
            super(NLayerDiscriminator, self).__init__()
            if type(norm_layer) == functools.partial:
                use_bias = norm_layer.func == nn.InstanceNorm2d
            else:
                use_bias = norm_layer == nn.InstanceNorm2d
            kw = 4
            padw = 1
            sequence = [nn.Conv2d(input_nc, ndf, kernel_size=kw, stride=2, padding=padw), nn.LeakyReLU(0.2, True)]
            nf_mult = 1
            nf_mult_prev = 1
            for n in range(1, n_layers):
                nf_mult_prev = nf_mult
                nf_mult = min(2 ** n, 8)
                sequence += [
                    nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=2, padding=padw, bias=use_bias),
                    norm_layer(ndf * nf_mult),
                    nn.LeakyReLU(0.2, True)
                ]
            nf_mult_prev = nf_mult
            nf_mult = min(2 ** n_layers, 8)
            sequence += [
                nn.Conv2d(ndf * nf_mult_prev, ndf * nf_mult, kernel_size=kw, stride=1, padding=padw, bias=use_bias),
                norm_layer(ndf * nf_mult),
                nn.LeakyReLU(0.2, True)
            ]
            sequence += [nn.Conv2d(ndf * nf_mult, 1, kernel_size=kw, stride=1, padding=padw)]
            self.model = nn.Sequential(*sequence)

        def forward(self, input):
            return self.model(input)

    nets = nn.ModuleDict({
        "G_A": ResnetGenerator(3, 3, ngf, norm_layer=norm_layer, n_blocks=2),
        "G_B": ResnetGenerator(3, 3, ngf, norm_layer=norm_layer, n_blocks=2, padding_type='replicate'),
        "D_A": NLayerDiscriminator(3, ndf, n_layers=2, norm_layer=norm_layer),
        "D_B": NLayerDiscriminator(3, ndf, n_layers=2, norm_layer=norm_layer),
    })
    return nets


def cyclegan_training(m, weights, steps=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    import itertools

    nets = load(m, cyclegan(m), weights)
    netG_A, netG_B, netD_A, netD_B = nets["G_A"], nets["G_B"], nets["D_A"], nets["D_B"]

    class GANLoss(nn.Module):
        def __init__(self, gan_mode, target_real_label=1.0, target_fake_label=0.0):
            super(GANLoss, self).__init__()
            self.register_buffer('real_label', torch.tensor(target_real_label))
            self.register_buffer('fake_label', torch.tensor(target_fake_label))
            self.gan_mode = gan_mode
            if gan_mode == 'lsgan':
                self.loss = nn.MSELoss()
            elif gan_mode == 'vanilla':
                self.loss = nn.BCEWithLogitsLoss()

        def get_target_tensor(self, prediction, target_is_real):
            if target_is_real:
                target_tensor = self.real_label
            else:
                target_tensor = self.fake_label
            return target_tensor.expand_as(prediction)

        def __call__(self, prediction, target_is_real):
            target_tensor = self.get_target_tensor(prediction, target_is_real)
            return self.loss(prediction, target_tensor)

    def set_requires_grad(nets, requires_grad=False):
        if not isinstance(nets, list):
            nets = [nets]
        for net in nets:
            if net is not None:
                for param in net.parameters():
                    param.requires_grad = requires_grad

    criterionGAN = GANLoss('lsgan')
    criterionCycle = nn.L1Loss()  # torch.nn.L1Loss in the repository (autograd.nn: see test_torch_dot_nn_spelling)
    criterionIdt = nn.L1Loss()
    optimizer_G = optim.Adam(itertools.chain(netG_A.parameters(), netG_B.parameters()), lr=2e-3, betas=(0.5, 0.999))
    optimizer_D = optim.Adam(itertools.chain(netD_A.parameters(), netD_B.parameters()), lr=2e-3, betas=(0.5, 0.999))

    def lambda_rule(epoch):
        return 1.0 - max(0, epoch + 1 - 1) / float(2 + 1)

    schedulers = [optim.lr_scheduler.LambdaLR(o, lr_lambda=lambda_rule) for o in (optimizer_G, optimizer_D)]
    real_A = torch.tensor(images((1, 3, 16, 16), seed=4, low=-1.0))
    real_B = torch.tensor(images((1, 3, 16, 16), seed=5, low=-1.0))
    lambda_A = lambda_B = 10.0
    lambda_idt = 0.5
    history = []
    for step in range(steps):
        fake_B = netG_A(real_A)
        rec_A = netG_B(fake_B)
        fake_A = netG_B(real_B)
        rec_B = netG_A(fake_A)
        set_requires_grad([netD_A, netD_B], False)
        optimizer_G.zero_grad()
        idt_A = netG_A(real_B)
        loss_idt_A = criterionIdt(idt_A, real_B) * lambda_B * lambda_idt
        idt_B = netG_B(real_A)
        loss_idt_B = criterionIdt(idt_B, real_A) * lambda_A * lambda_idt
        loss_G_A = criterionGAN(netD_A(fake_B), True)
        loss_G_B = criterionGAN(netD_B(fake_A), True)
        loss_cycle_A = criterionCycle(rec_A, real_A) * lambda_A
        loss_cycle_B = criterionCycle(rec_B, real_B) * lambda_B
        loss_G = loss_G_A + loss_G_B + loss_cycle_A + loss_cycle_B + loss_idt_A + loss_idt_B
        loss_G.backward()
        optimizer_G.step()
        set_requires_grad([netD_A, netD_B], True)
        optimizer_D.zero_grad()

        def backward_D_basic(netD, real, fake):
            pred_real = netD(real)
            loss_D_real = criterionGAN(pred_real, True)
            pred_fake = netD(fake.detach())
            loss_D_fake = criterionGAN(pred_fake, False)
            loss_D = (loss_D_real + loss_D_fake) * 0.5
            loss_D.backward()
            return loss_D

        loss_D_A = backward_D_basic(netD_A, real_B, fake_B)
        loss_D_B = backward_D_basic(netD_B, real_A, fake_A)
        optimizer_D.step()
        for scheduler in schedulers:
            scheduler.step()
        history.append([loss_G.item(), loss_D_A.item(), loss_D_B.item(), loss_cycle_A.item(), loss_idt_B.item()])
    # a convolution's bias just before an InstanceNorm has a gradient of zero up to rounding (the norm takes out
    # each channel's mean), which Adam scales up to steps of ±lr: compare those by size, the rest by value
    before_norm = set()
    for name, module in nets.named_modules():
        if isinstance(module, nn.Sequential):
            for i in range(len(module) - 1):
                if isinstance(module[i + 1], nn.InstanceNorm2d) and module[i].bias is not None:
                    before_norm.add(f"{name}.{i}.bias")
    grads = {name: p.grad for name, p in nets.named_parameters() if name not in before_norm}
    state = {name: v for name, v in nets.state_dict().items() if name not in before_norm}
    largest = max(nets.get_parameter(name).grad.abs().max().item() for name in before_norm)
    return history, fake_B, rec_A, state, grads, optimizer_G.param_groups[0]["lr"], largest < 1e-5


def test_cyclegan_resnet_generator_and_patchgan():
    weights = weights_of(cyclegan)
    ours, _ = run_both(cyclegan_training, weights, **F32)
    history, fake_B, rec_A, state, grads, lr, bias_gradients_vanish = ours
    assert bias_gradients_vanish
    assert fake_B.shape == (1, 3, 16, 16) and np.abs(fake_B).max() <= 1.0
    assert lr == pytest.approx(2e-3 * (1 - 2 / 3))
    assert not any(k.endswith("running_mean") for k in state)  # InstanceNorm without running statistics
