# ruff: noqa: B007, E721, F841, UP008, UP031  (the programs are kept as their authors wrote them)
"""Dense-prediction and image-synthesis programs, run as tests/probe15_dense_common.py says. pix2pix's recursive
U-Net and GauGAN (SPADE, ``spectral_norm``, multi-scale discriminator, hinge and feature matching)."""

import numpy as np

from .probe15_dense_common import F32, images, masks
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# pix2pix and GauGAN: the recursive UnetSkipConnectionBlock (innermost / outermost, LeakyReLU(0.2, True),
# ConvTranspose2d, torch.cat skips), a conditional PatchGAN on cat(A, B), vanilla GAN loss by
# BCEWithLogits plus L1; SPADE (a parameter-free BatchNorm modulated by gamma / beta convolved from the
# segmentation map resized by nearest interpolation) in a SPADEResnetBlock with spectral_norm and a learnt
# shortcut, a multi-scale discriminator (avg_pool2d with count_include_pad=False), hinge losses and
# feature matching
# ----------------------------------------------------------------------------------------------


def pix2pix(m, ngf=4, ndf=4):
    nn, torch = m.nn, m.torch
    import functools

    class UnetSkipConnectionBlock(nn.Module):
        def __init__(self, outer_nc, inner_nc, input_nc=None,
                     submodule=None, outermost=False, innermost=False, norm_layer=nn.BatchNorm2d, use_dropout=False):
            super(UnetSkipConnectionBlock, self).__init__()
            self.outermost = outermost
            if type(norm_layer) == functools.partial:
                use_bias = norm_layer.func == nn.InstanceNorm2d
            else:
                use_bias = norm_layer == nn.InstanceNorm2d
            if input_nc is None:
                input_nc = outer_nc
            downconv = nn.Conv2d(input_nc, inner_nc, kernel_size=4,
                                 stride=2, padding=1, bias=use_bias)
            downrelu = nn.LeakyReLU(0.2, True)
            downnorm = norm_layer(inner_nc)
            uprelu = nn.ReLU(True)
            upnorm = norm_layer(outer_nc)
            if outermost:
                upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc,
                                            kernel_size=4, stride=2,
                                            padding=1)
                down = [downconv]
                up = [uprelu, upconv, nn.Tanh()]
                model = down + [submodule] + up
            elif innermost:
                upconv = nn.ConvTranspose2d(inner_nc, outer_nc,
                                            kernel_size=4, stride=2,
                                            padding=1, bias=use_bias)
                down = [downrelu, downconv]
                up = [uprelu, upconv, upnorm]
                model = down + up
            else:
                upconv = nn.ConvTranspose2d(inner_nc * 2, outer_nc,
                                            kernel_size=4, stride=2,
                                            padding=1, bias=use_bias)
                down = [downrelu, downconv, downnorm]
                up = [uprelu, upconv, upnorm]
                if use_dropout:
                    model = down + [submodule] + up + [nn.Dropout(0.5)]
                else:
                    model = down + [submodule] + up
            self.model = nn.Sequential(*model)

        def forward(self, x):
            if self.outermost:
                return self.model(x)
            else:
                return torch.cat([x, self.model(x)], 1)

    class UnetGenerator(nn.Module):
        def __init__(self, input_nc, output_nc, num_downs, ngf=64, norm_layer=nn.BatchNorm2d, use_dropout=False):
            super(UnetGenerator, self).__init__()
            unet_block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, input_nc=None, submodule=None,
                                                 norm_layer=norm_layer, innermost=True)
            for i in range(num_downs - 5):
                unet_block = UnetSkipConnectionBlock(ngf * 8, ngf * 8, input_nc=None, submodule=unet_block,
                                                     norm_layer=norm_layer, use_dropout=use_dropout)
            unet_block = UnetSkipConnectionBlock(ngf * 4, ngf * 8, input_nc=None, submodule=unet_block,
                                                 norm_layer=norm_layer)
            unet_block = UnetSkipConnectionBlock(ngf * 2, ngf * 4, input_nc=None, submodule=unet_block,
                                                 norm_layer=norm_layer)
            unet_block = UnetSkipConnectionBlock(ngf, ngf * 2, input_nc=None, submodule=unet_block,
                                                 norm_layer=norm_layer)
            self.model = UnetSkipConnectionBlock(output_nc, ngf, input_nc=input_nc, submodule=unet_block,
                                                 outermost=True, norm_layer=norm_layer)

        def forward(self, input):
            return self.model(input)

    netD = nn.Sequential(
        nn.Conv2d(6, ndf, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf, ndf * 2, kernel_size=4, stride=2, padding=1, bias=False), nn.BatchNorm2d(ndf * 2),
        nn.LeakyReLU(0.2, True),
        nn.Conv2d(ndf * 2, 1, kernel_size=4, stride=1, padding=1))
    return nn.ModuleDict({"G": UnetGenerator(3, 3, 6, ngf), "D": netD})


def pix2pix_training(m, weights, steps=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    nets = load(m, pix2pix(m), weights)
    netG, netD = nets["G"], nets["D"]
    real_A = torch.tensor(images((2, 3, 64, 64), seed=12, low=-1.0))
    real_B = torch.tensor(images((2, 3, 64, 64), seed=13, low=-1.0))
    criterionGAN = nn.BCEWithLogitsLoss()
    criterionL1 = nn.L1Loss()
    optimizer_G = optim.Adam(netG.parameters(), lr=2e-4, betas=(0.5, 0.999))
    optimizer_D = optim.Adam(netD.parameters(), lr=2e-4, betas=(0.5, 0.999))
    history = []
    for step in range(steps):
        fake_B = netG(real_A)
        for p in netD.parameters():
            p.requires_grad = True
        optimizer_D.zero_grad()
        fake_AB = torch.cat((real_A, fake_B), 1)
        pred_fake = netD(fake_AB.detach())
        loss_D_fake = criterionGAN(pred_fake, torch.zeros_like(pred_fake))
        real_AB = torch.cat((real_A, real_B), 1)
        pred_real = netD(real_AB)
        loss_D_real = criterionGAN(pred_real, torch.ones_like(pred_real))
        loss_D = (loss_D_fake + loss_D_real) * 0.5
        loss_D.backward()
        optimizer_D.step()
        for p in netD.parameters():
            p.requires_grad = False
        optimizer_G.zero_grad()
        pred_fake = netD(torch.cat((real_A, fake_B), 1))
        loss_G_GAN = criterionGAN(pred_fake, torch.ones_like(pred_fake))
        loss_G_L1 = criterionL1(fake_B, real_B) * 100.0
        loss_G = loss_G_GAN + loss_G_L1
        loss_G.backward()
        optimizer_G.step()
        history.append((loss_D.item(), loss_G_GAN.item(), loss_G_L1.item()))
    grads = {n: p.grad for n, p in nets.named_parameters()}
    return history, fake_B, grads, nets.state_dict()


def test_pix2pix_unet_generator():
    weights = weights_of(pix2pix)
    ours, _ = run_both(pix2pix_training, weights, **F32)
    history, fake_B, grads, state = ours
    assert fake_B.shape == (2, 3, 64, 64)
    # six blocks nested by recursion: the innermost (at 1x1) is the submodule of the submodule of ...
    assert "G.model.model.1.model.3.model.3.model.3.model.3.model.4.running_mean" in state
    assert all(np.isfinite(h).all() for h in history)


def spade(m, label_nc=3, nf=8):
    nn, torch, F = m.nn, m.torch, m.F

    spectral_norm = nn.utils.spectral_norm

    class SPADE(nn.Module):
        def __init__(self, norm_nc, label_nc, nhidden=8):
            super().__init__()
            self.param_free_norm = nn.BatchNorm2d(norm_nc, affine=False)
            self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, nhidden, kernel_size=3, padding=1), nn.ReLU())
            self.mlp_gamma = nn.Conv2d(nhidden, norm_nc, kernel_size=3, padding=1)
            self.mlp_beta = nn.Conv2d(nhidden, norm_nc, kernel_size=3, padding=1)

        def forward(self, x, segmap):
            normalized = self.param_free_norm(x)
            segmap = F.interpolate(segmap, size=x.size()[2:], mode='nearest')
            actv = self.mlp_shared(segmap)
            gamma = self.mlp_gamma(actv)
            beta = self.mlp_beta(actv)
            out = normalized * (1 + gamma) + beta
            return out

    class SPADEResnetBlock(nn.Module):
        def __init__(self, fin, fout):
            super().__init__()
            self.learned_shortcut = (fin != fout)
            fmiddle = min(fin, fout)
            self.conv_0 = nn.Conv2d(fin, fmiddle, kernel_size=3, padding=1)
            self.conv_1 = nn.Conv2d(fmiddle, fout, kernel_size=3, padding=1)
            if self.learned_shortcut:
                self.conv_s = nn.Conv2d(fin, fout, kernel_size=1, bias=False)
            self.conv_0 = spectral_norm(self.conv_0)
            self.conv_1 = spectral_norm(self.conv_1)
            if self.learned_shortcut:
                self.conv_s = spectral_norm(self.conv_s)
            self.norm_0 = SPADE(fin, label_nc)
            self.norm_1 = SPADE(fmiddle, label_nc)
            if self.learned_shortcut:
                self.norm_s = SPADE(fin, label_nc)

        def forward(self, x, seg):
            x_s = self.shortcut(x, seg)
            dx = self.conv_0(self.actvn(self.norm_0(x, seg)))
            dx = self.conv_1(self.actvn(self.norm_1(dx, seg)))
            out = x_s + dx
            return out

        def shortcut(self, x, seg):
            if self.learned_shortcut:
                x_s = self.conv_s(self.norm_s(x, seg))
            else:
                x_s = x
            return x_s

        def actvn(self, x):
            return F.leaky_relu(x, 2e-1)

    class SPADEGenerator(nn.Module):
        def __init__(self):
            super().__init__()
            self.sw, self.sh = 4, 4
            self.fc = nn.Conv2d(label_nc, 2 * nf, 3, padding=1)
            self.head_0 = SPADEResnetBlock(2 * nf, 2 * nf)
            self.up_0 = SPADEResnetBlock(2 * nf, nf)
            self.up_1 = SPADEResnetBlock(nf, nf // 2)
            self.conv_img = nn.Conv2d(nf // 2, 3, 3, padding=1)
            self.up = nn.Upsample(scale_factor=2)

        def forward(self, input):
            seg = input
            x = F.interpolate(seg, size=(self.sh, self.sw))
            x = self.fc(x)
            x = self.head_0(x, seg)
            x = self.up(x)
            x = self.up_0(x, seg)
            x = self.up(x)
            x = self.up_1(x, seg)
            x = self.conv_img(F.leaky_relu(x, 2e-1))
            x = torch.tanh(x)
            return x

    class NLayerDiscriminator(nn.Module):
        def __init__(self, input_nc):
            super().__init__()
            self.model0 = nn.Sequential(nn.Conv2d(input_nc, 8, 4, 2, 2), nn.LeakyReLU(0.2, False))
            self.model1 = nn.Sequential(spectral_norm(nn.Conv2d(8, 8, 4, 2, 2)), nn.InstanceNorm2d(8, affine=False),
                                        nn.LeakyReLU(0.2, False))
            self.model2 = nn.Conv2d(8, 1, 4, 1, 2)

        def forward(self, input):
            results = [input]
            for submodel in [self.model0, self.model1, self.model2]:
                intermediate_output = submodel(results[-1])
                results.append(intermediate_output)
            return results[1:]

    class MultiscaleDiscriminator(nn.Module):
        def __init__(self, num_D=2):
            super().__init__()
            for i in range(num_D):
                self.add_module('discriminator_%d' % i, NLayerDiscriminator(label_nc + 3))

        def downsample(self, input):
            return F.avg_pool2d(input, kernel_size=3, stride=2, padding=[1, 1], count_include_pad=False)

        def forward(self, input):
            result = []
            for name, D in self.named_children():
                out = D(input)
                result.append(out)
                input = self.downsample(input)
            return result

    return nn.ModuleDict({"G": SPADEGenerator(), "D": MultiscaleDiscriminator()})


def gaugan_training(m, weights, steps=2, dtype="float32"):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    dtype = getattr(torch, dtype)
    nets = load(m, spade(m), weights).to(dtype)
    netG, netD = nets["G"], nets["D"]
    label = torch.tensor(masks((2, 16, 16), 3, seed=14))
    input_semantics = F.one_hot(label, 3).permute(0, 3, 1, 2).to(dtype)
    real_image = torch.tensor(images((2, 3, 16, 16), seed=15, low=-1.0), dtype=dtype)
    optimizer_G = optim.Adam(netG.parameters(), lr=1e-3, betas=(0.0, 0.9))
    optimizer_D = optim.Adam(netD.parameters(), lr=4e-3, betas=(0.0, 0.9))

    def discriminate(fake_image):
        fake_concat = torch.cat([input_semantics, fake_image], dim=1)
        real_concat = torch.cat([input_semantics, real_image], dim=1)
        fake_and_real = torch.cat([fake_concat, real_concat], dim=0)
        discriminator_out = netD(fake_and_real)
        pred_fake = [[tensor[:tensor.size(0) // 2] for tensor in p] for p in discriminator_out]
        pred_real = [[tensor[tensor.size(0) // 2:] for tensor in p] for p in discriminator_out]
        return pred_fake, pred_real

    def hinge(input, target_is_real, for_discriminator=True):
        loss = 0
        for pred_i in input:
            pred_i = pred_i[-1]
            if for_discriminator:
                if target_is_real:
                    minval = torch.min(pred_i - 1, torch.zeros_like(pred_i))
                else:
                    minval = torch.min(-pred_i - 1, torch.zeros_like(pred_i))
                loss_tensor = -torch.mean(minval)
            else:
                loss_tensor = -torch.mean(pred_i)
            loss += loss_tensor
        return loss / len(input)

    history = []
    for step in range(steps):
        optimizer_G.zero_grad()
        fake_image = netG(input_semantics)
        pred_fake, pred_real = discriminate(fake_image)
        G_GAN = hinge(pred_fake, True, for_discriminator=False)
        GAN_Feat_loss = torch.zeros(1, dtype=dtype)
        num_D = len(pred_fake)
        for i in range(num_D):
            num_intermediate_outputs = len(pred_fake[i]) - 1
            for j in range(num_intermediate_outputs):
                unweighted_loss = F.l1_loss(pred_fake[i][j], pred_real[i][j].detach())
                GAN_Feat_loss += unweighted_loss * 10.0 / num_D
        g_loss = G_GAN + GAN_Feat_loss.squeeze()
        g_loss.backward()
        optimizer_G.step()
        optimizer_D.zero_grad()
        with torch.no_grad():
            fake_image = netG(input_semantics)
            fake_image = fake_image.detach()
            fake_image.requires_grad_()
        pred_fake, pred_real = discriminate(fake_image)
        d_loss = hinge(pred_fake, False) + hinge(pred_real, True)
        d_loss.backward()
        optimizer_D.step()
        history.append((g_loss.item(), d_loss.item(), GAN_Feat_loss.item()))
    grads = {n: p.grad for n, p in nets.named_parameters()}
    return history, fake_image, grads, nets.state_dict()


def test_gaugan_spade_generator_and_multiscale_discriminator():
    weights = weights_of(spade)
    ours, _ = run_both(gaugan_training, weights, dtype="float64", rtol=1e-9, atol=1e-9)
    # in float32, several parameters have gradients of zero up to rounding (biases before a parameter-free norm;
    # the last conv's bias, whose hinge gradients cancel over fakes and reals), which Adam(betas=(0, 0.9)) turns
    # into steps of ±lr that differ between the libraries: the losses and image of one step compare
    run_both(lambda m, weights: gaugan_training(m, weights, steps=1)[:2], weights, **F32)
    history, fake, grads, state = ours
    assert fake.shape == (2, 3, 16, 16)
    assert "G.head_0.conv_0.weight_orig" in state and "G.head_0.conv_0.weight_u" in state
