# ruff: noqa: B007, E501, F841  (the programs are kept as their authors wrote them)
"""Programs students write in deep-learning courses (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights and data, comparing values and gradients. UvA DL notebooks: an energy-based model's
Langevin sampler (``torch.autograd.grad``, grad mode switched inside ``no_grad``), a RealNVP-style coupling flow with
dequantisation, PixelCNN (masked dilated convolutions, a 5-d cross-entropy, the receptive field by input gradients)."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# UvA DL tutorial 8: an energy-based model trained by contrastive divergence with Langevin sampling
# ----------------------------------------------------------------------------------------------


def make_energy_net(m):
    nn = m.nn

    class Swish(nn.Module):
        def forward(self, x):
            return x * m.torch.sigmoid(x)

    class CNNModel(nn.Module):
        def __init__(self, hidden_features=4, out_dim=1):
            super().__init__()
            c_hid1, c_hid2 = hidden_features // 2, hidden_features
            self.cnn_layers = nn.Sequential(
                nn.Conv2d(1, c_hid1, kernel_size=3, stride=2, padding=1), Swish(),
                nn.Conv2d(c_hid1, c_hid2, kernel_size=3, stride=2, padding=1), Swish(),
                nn.Flatten(), nn.Linear(c_hid2 * 2 * 2, c_hid2), Swish(), nn.Linear(c_hid2, out_dim))

        def forward(self, x):
            return self.cnn_layers(x).squeeze(dim=-1)

    return CNNModel()


def energy_based_model(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_energy_net(m), weights_of(make_energy_net))
    rng = np.random.default_rng(11)
    real = torch.tensor(np.tanh(rng.standard_normal((6, 1, 8, 8))).astype(np.float32))
    start = torch.tensor(rng.uniform(-1, 1, (6, 1, 8, 8)).astype(np.float32))
    noises = torch.tensor(0.005 * rng.standard_normal((3, 10, 6, 1, 8, 8)).astype(np.float32))
    small = torch.tensor(0.005 * rng.standard_normal((3, 6, 1, 8, 8)).astype(np.float32))

    def generate_samples(model, inp_imgs, noise_steps, step_size=10):
        is_training = model.training
        model.eval()
        for p in model.parameters():
            p.requires_grad = False
        inp_imgs.requires_grad = True
        had_gradients_enabled = torch.is_grad_enabled()
        torch.set_grad_enabled(True)
        for noise in noise_steps:
            inp_imgs.data.add_(noise.data)
            inp_imgs.data.clamp_(min=-1.0, max=1.0)
            out_imgs = -model(inp_imgs)
            out_imgs.sum().backward()
            inp_imgs.grad.data.clamp_(-0.03, 0.03)
            inp_imgs.data.add_(-step_size * inp_imgs.grad.data)
            inp_imgs.grad.detach_()
            inp_imgs.grad.zero_()
            inp_imgs.data.clamp_(min=-1.0, max=1.0)
        for p in model.parameters():
            p.requires_grad = True
        model.train(is_training)
        torch.set_grad_enabled(had_gradients_enabled)
        return inp_imgs

    optimizer = optim.Adam(model.parameters(), lr=1e-3, betas=(0.0, 0.999))
    scheduler = optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.97)
    logs = []
    fake_imgs = start
    for step in range(3):
        real_imgs = real + small[step]
        real_imgs.clamp_(min=-1.0, max=1.0)
        with torch.no_grad():  # the sampler turns grad mode back on for itself
            fake_imgs = generate_samples(model, fake_imgs.detach().clone(), noises[step])
            grad_mode_inside = torch.is_grad_enabled()
        inp_imgs = torch.cat([real_imgs, fake_imgs], dim=0)
        real_out, fake_out = model(inp_imgs).chunk(2, dim=0)
        reg_loss = 0.1 * (real_out ** 2 + fake_out ** 2).mean()
        cdiv_loss = fake_out.mean() - real_out.mean()
        loss = reg_loss + cdiv_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        logs.append((loss.item(), reg_loss.item(), cdiv_loss.item(), real_out.mean().item(), fake_out.mean().item()))
    # an energy gradient by torch.autograd.grad, as Langevin samplers without .backward() write it
    x = start.clone().requires_grad_()
    energy = model(x).sum()
    (dx,) = torch.autograd.grad(energy, x)
    return {"logs": logs, "fake": fake_imgs.detach(), "grad_mode_inside": grad_mode_inside, "dx": dx,
            "params": [p.detach() for p in model.parameters()], "param_grads_none": [p.grad is None for p in model.parameters()]}


def test_uva_energy_based_model_langevin():
    ours, _ = run_both(energy_based_model, rtol=2e-4, atol=1e-6)
    assert ours["grad_mode_inside"] is False  # the sampler restored the caller's grad mode
    assert np.abs(ours["fake"]).max() <= 1.0


# ----------------------------------------------------------------------------------------------
# UvA DL tutorial 11: a RealNVP-style flow on images (dequantisation, checkerboard and channel
# masks, squeeze, gated convolutions, bits per dimension)
# ----------------------------------------------------------------------------------------------


def make_flow(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Dequantization(nn.Module):
        def __init__(self, alpha=1e-5, quants=4):
            super().__init__()
            self.alpha = alpha
            self.quants = quants

        def forward(self, z, ldj, reverse=False, noise=None):
            if not reverse:
                z, ldj = self.dequant(z, ldj, noise)
                z, ldj = self.sigmoid(z, ldj, reverse=True)
            else:
                z, ldj = self.sigmoid(z, ldj, reverse=False)
                z = z * self.quants
                ldj += np.log(self.quants) * np.prod(z.shape[1:])
                z = torch.floor(z).clamp(min=0, max=self.quants - 1).to(torch.int32)
            return z, ldj

        def sigmoid(self, z, ldj, reverse=False):
            if not reverse:
                ldj += (-z - 2 * F.softplus(-z)).sum(dim=[1, 2, 3])
                z = torch.sigmoid(z)
            else:
                z = z * (1 - self.alpha) + 0.5 * self.alpha
                ldj += np.log(1 - self.alpha) * np.prod(z.shape[1:])
                ldj += (-torch.log(z) - torch.log(1 - z)).sum(dim=[1, 2, 3])
                z = torch.log(z) - torch.log(1 - z)
            return z, ldj

        def dequant(self, z, ldj, noise):
            z = z.to(torch.float32)
            z = z + noise.detach()
            z = z / self.quants
            ldj -= np.log(self.quants) * np.prod(z.shape[1:])
            return z, ldj

    class ConcatELU(nn.Module):
        def forward(self, x):
            return torch.cat([F.elu(x), F.elu(-x)], dim=1)

    class LayerNormChannels(nn.Module):
        def __init__(self, c_in, eps=1e-5):
            super().__init__()
            self.gamma = nn.Parameter(torch.ones(1, c_in, 1, 1))
            self.beta = nn.Parameter(torch.zeros(1, c_in, 1, 1))
            self.eps = eps

        def forward(self, x):
            mean = x.mean(dim=1, keepdim=True)
            var = x.var(dim=1, unbiased=False, keepdim=True)
            y = (x - mean) / torch.sqrt(var + self.eps)
            return y * self.gamma + self.beta

    class GatedConv(nn.Module):
        def __init__(self, c_in, c_hidden):
            super().__init__()
            self.net = nn.Sequential(ConcatELU(), nn.Conv2d(2 * c_in, c_hidden, kernel_size=3, padding=1),
                                     ConcatELU(), nn.Conv2d(2 * c_hidden, 2 * c_in, kernel_size=1))

        def forward(self, x):
            out = self.net(x)
            val, gate = out.chunk(2, dim=1)
            return x + val * torch.sigmoid(gate)

    class GatedConvNet(nn.Module):
        def __init__(self, c_in, c_hidden=4, c_out=-1, num_layers=1):
            super().__init__()
            c_out = c_out if c_out > 0 else 2 * c_in
            layers = [nn.Conv2d(c_in, c_hidden, kernel_size=3, padding=1)]
            for layer_index in range(num_layers):
                layers += [GatedConv(c_hidden, c_hidden), LayerNormChannels(c_hidden)]
            layers += [ConcatELU(), nn.Conv2d(2 * c_hidden, c_out, kernel_size=3, padding=1)]
            self.nn = nn.Sequential(*layers)
            self.nn[-1].weight.data.zero_()
            self.nn[-1].bias.data.zero_()

        def forward(self, x):
            return self.nn(x)

    class CouplingLayer(nn.Module):
        def __init__(self, network, mask, c_in):
            super().__init__()
            self.network = network
            self.scaling_factor = nn.Parameter(torch.zeros(c_in))
            self.register_buffer('mask', mask)

        def forward(self, z, ldj, reverse=False):
            z_in = z * self.mask
            nn_out = self.network(z_in)
            s, t = nn_out.chunk(2, dim=1)
            s_fac = self.scaling_factor.exp().view(1, -1, 1, 1)
            s = torch.tanh(s / s_fac) * s_fac
            s = s * (1 - self.mask)
            t = t * (1 - self.mask)
            if not reverse:
                z = (z + t) * torch.exp(s)
                ldj += s.sum(dim=[1, 2, 3])
            else:
                z = (z * torch.exp(-s)) - t
                ldj -= s.sum(dim=[1, 2, 3])
            return z, ldj

    class SqueezeFlow(nn.Module):
        def forward(self, z, ldj, reverse=False):
            B, C, H, W = z.shape
            if not reverse:
                z = z.reshape(B, C, H // 2, 2, W // 2, 2)
                z = z.permute(0, 1, 3, 5, 2, 4)
                z = z.reshape(B, 4 * C, H // 2, W // 2)
            else:
                z = z.reshape(B, C // 4, 2, 2, H, W)
                z = z.permute(0, 1, 4, 2, 5, 3)
                z = z.reshape(B, C // 4, H * 2, W * 2)
            return z, ldj

    def create_checkerboard_mask(h, w, invert=False):
        x, y = torch.arange(h, dtype=torch.int32), torch.arange(w, dtype=torch.int32)
        xx, yy = torch.meshgrid(x, y, indexing='ij')
        mask = torch.fmod(xx + yy, 2)
        mask = mask.to(torch.float32).view(1, 1, h, w)
        if invert:
            mask = 1 - mask
        return mask

    def create_channel_mask(c_in, invert=False):
        mask = torch.cat([torch.ones(c_in // 2, dtype=torch.float32),
                          torch.zeros(c_in - c_in // 2, dtype=torch.float32)])
        mask = mask.view(1, c_in, 1, 1)
        if invert:
            mask = 1. - mask
        return mask

    flow_layers = [Dequantization()]
    for i in range(2):
        flow_layers += [CouplingLayer(network=GatedConvNet(c_in=1, c_hidden=4),
                                      mask=create_checkerboard_mask(h=6, w=6, invert=(i % 2 == 1)), c_in=1)]
    flow_layers += [SqueezeFlow()]
    for i in range(2):
        flow_layers += [CouplingLayer(network=GatedConvNet(c_in=4, c_hidden=6),
                                      mask=create_channel_mask(c_in=4, invert=(i % 2 == 1)), c_in=4)]
    return nn.ModuleList(flow_layers)


def realnvp_flow(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    flows = load(m, make_flow(m), weights_of(make_flow))
    prior = torch.distributions.normal.Normal(loc=0.0, scale=1.0)
    rng = np.random.default_rng(12)
    imgs = torch.tensor(rng.integers(0, 4, (5, 1, 6, 6)))
    noises = torch.tensor(rng.uniform(0, 1, (4, 5, 1, 6, 6)).astype(np.float32))
    # the final convolutions start at zero; make them non-zero so the couplings do something
    with torch.no_grad():
        for f in flows:
            if hasattr(f, 'network'):
                f.network.nn[-1].weight.add_(0.05)
                f.scaling_factor.fill_(0.3)

    def encode(imgs, noise):
        z, ldj = imgs, torch.zeros(imgs.shape[0])
        for flow in flows:
            if isinstance(flow, type(flows[0])):
                z, ldj = flow(z, ldj, reverse=False, noise=noise)
            else:
                z, ldj = flow(z, ldj, reverse=False)
        return z, ldj

    def _get_likelihood(imgs, noise, return_ll=False):
        z, ldj = encode(imgs, noise)
        log_pz = prior.log_prob(z).sum(dim=[1, 2, 3])
        log_px = ldj + log_pz
        nll = -log_px
        bpd = nll * np.log2(np.exp(1)) / np.prod(imgs.shape[1:])
        return bpd.mean() if not return_ll else log_px

    optimizer = optim.Adam(flows.parameters(), lr=1e-2)
    scheduler = optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.99)
    bpds = []
    for step in range(3):
        loss = _get_likelihood(imgs, noises[step])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        bpds.append(loss.item())
    # invert: the latent back to the image through the reversed flows
    with torch.no_grad():
        z, ldj = encode(imgs, noises[3])
        ll = _get_likelihood(imgs, noises[3], return_ll=True)
        x, ldj_back = z, torch.zeros(imgs.shape[0])
        for flow in reversed(flows):
            x, ldj_back = flow(x, ldj_back, reverse=True)
    grads = {k: v.grad for k, v in flows.named_parameters()}
    return {"bpds": bpds, "z": z, "ldj": ldj, "ll": ll, "x_back": x, "ldj_back": ldj_back, "grads": grads,
            "dtype": str(x.dtype).replace("torch.", "")}


def test_uva_realnvp_flow():
    ours, _ = run_both(realnvp_flow, rtol=2e-4, atol=1e-5)
    imgs = np.random.default_rng(12).integers(0, 4, (5, 1, 6, 6))
    np.testing.assert_array_equal(ours["x_back"], imgs)  # the flow inverts exactly back to the integers
    assert ours["dtype"] == "int32"
    np.testing.assert_allclose(ours["ldj_back"], -ours["ldj"], rtol=1e-4, atol=1e-3)


# ----------------------------------------------------------------------------------------------
# UvA DL tutorial 12: PixelCNN (masked and dilated convolutions, gated stacks, a 5-d cross-entropy,
# the receptive field by input gradients, pixel-by-pixel sampling)
# ----------------------------------------------------------------------------------------------


def make_pixelcnn(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MaskedConvolution(nn.Module):
        def __init__(self, c_in, c_out, mask, **kwargs):
            super().__init__()
            kernel_size = (mask.shape[0], mask.shape[1])
            dilation = 1 if "dilation" not in kwargs else kwargs["dilation"]
            padding = tuple([dilation * (kernel_size[i] - 1) // 2 for i in range(2)])
            self.conv = nn.Conv2d(c_in, c_out, kernel_size, padding=padding, **kwargs)
            self.register_buffer('mask', mask[None, None])

        def forward(self, x):
            self.conv.weight.data *= self.mask  # Ensures zero's at masked positions
            return self.conv(x)

    class VerticalStackConvolution(MaskedConvolution):
        def __init__(self, c_in, c_out, kernel_size=3, mask_center=False, **kwargs):
            mask = torch.ones(kernel_size, kernel_size)
            mask[kernel_size // 2 + 1:, :] = 0
            if mask_center:
                mask[kernel_size // 2, :] = 0
            super().__init__(c_in, c_out, mask, **kwargs)

    class HorizontalStackConvolution(MaskedConvolution):
        def __init__(self, c_in, c_out, kernel_size=3, mask_center=False, **kwargs):
            mask = torch.ones(1, kernel_size)
            mask[0, kernel_size // 2 + 1:] = 0
            if mask_center:
                mask[0, kernel_size // 2] = 0
            super().__init__(c_in, c_out, mask, **kwargs)

    class GatedMaskedConv(nn.Module):
        def __init__(self, c_in, **kwargs):
            super().__init__()
            self.conv_vert = VerticalStackConvolution(c_in, c_out=2 * c_in, **kwargs)
            self.conv_horiz = HorizontalStackConvolution(c_in, c_out=2 * c_in, **kwargs)
            self.conv_vert_to_horiz = nn.Conv2d(2 * c_in, 2 * c_in, kernel_size=1, padding=0)
            self.conv_horiz_1x1 = nn.Conv2d(c_in, c_in, kernel_size=1, padding=0)

        def forward(self, v_stack, h_stack):
            v_stack_feat = self.conv_vert(v_stack)
            v_val, v_gate = v_stack_feat.chunk(2, dim=1)
            v_stack_out = torch.tanh(v_val) * torch.sigmoid(v_gate)
            h_stack_feat = self.conv_horiz(h_stack)
            h_stack_feat = h_stack_feat + self.conv_vert_to_horiz(v_stack_feat)
            h_val, h_gate = h_stack_feat.chunk(2, dim=1)
            h_stack_feat = torch.tanh(h_val) * torch.sigmoid(h_gate)
            h_stack_out = self.conv_horiz_1x1(h_stack_feat)
            h_stack_out = h_stack_out + h_stack
            return v_stack_out, h_stack_out

    class PixelCNN(nn.Module):
        def __init__(self, c_in, c_hidden, num_values=8):
            super().__init__()
            self.num_values = num_values
            self.conv_vstack = VerticalStackConvolution(c_in, c_hidden, mask_center=True)
            self.conv_hstack = HorizontalStackConvolution(c_in, c_hidden, mask_center=True)
            self.conv_layers = nn.ModuleList([
                GatedMaskedConv(c_hidden),
                GatedMaskedConv(c_hidden, dilation=2),
                GatedMaskedConv(c_hidden),
            ])
            self.conv_out = nn.Conv2d(c_hidden, c_in * num_values, kernel_size=1, padding=0)

        def forward(self, x):
            x = (x.float() / (self.num_values - 1)) * 2 - 1
            v_stack = self.conv_vstack(x)
            h_stack = self.conv_hstack(x)
            for layer in self.conv_layers:
                v_stack, h_stack = layer(v_stack, h_stack)
            out = self.conv_out(F.elu(h_stack))
            out = out.reshape(out.shape[0], self.num_values, out.shape[1] // self.num_values, out.shape[2], out.shape[3])
            return out

        def calc_likelihood(self, x):
            pred = self.forward(x)
            nll = F.cross_entropy(pred, x, reduction='none')
            bpd = nll.mean(dim=[1, 2, 3]) * np.log2(np.exp(1))
            return bpd.mean()

    return PixelCNN(c_in=1, c_hidden=4)


def pixelcnn(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, make_pixelcnn(m), weights_of(make_pixelcnn))
    rng = np.random.default_rng(15)
    imgs = torch.tensor(rng.integers(0, 8, (3, 1, 6, 6)))
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    scheduler = optim.lr_scheduler.StepLR(optimizer, 1, gamma=0.99)
    bpds = []
    for step in range(3):
        loss = model.calc_likelihood(imgs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        bpds.append(loss.item())
    # the receptive field of one pixel: the input's gradient
    inp_img = torch.zeros(1, 1, 7, 7)
    inp_img.requires_grad_()
    v_stack = model.conv_vstack(inp_img)
    h_stack = model.conv_hstack(inp_img)
    for layer in model.conv_layers:
        v_stack, h_stack = layer(v_stack, h_stack)
    h_stack[0, :, 3, 3].sum().backward()
    receptive = inp_img.grad.abs() > 0
    # sampling pixel by pixel with the uniforms drawn beforehand (inverse-CDF in place of multinomial)
    u = torch.tensor(rng.uniform(0, 1, (2, 1, 4, 4)).astype(np.float32))
    img = torch.zeros(2, 1, 4, 4, dtype=torch.long) - 1
    with torch.no_grad():
        for h in range(4):
            for w in range(4):
                for c in range(1):
                    if (img[:, c, h, w] != -1).all().item():
                        continue
                    pred = model.forward(img.clamp(min=0)[:, :, :4, :4])
                    probs = F.softmax(pred[:, :, c, h, w], dim=-1)
                    cdf = probs.cumsum(dim=-1)
                    img[:, c, h, w] = (cdf < u[:, c, h, w, None]).sum(dim=-1).clamp(max=7)
    # multinomial itself: only its shape and range compare
    samples = torch.multinomial(F.softmax(torch.zeros(2, 8), dim=-1), num_samples=5, replacement=True)
    return {"bpds": bpds, "receptive": receptive, "img": img, "masks": [b.clone() for n, b in model.named_buffers()],
            "samples_ok": bool(samples.shape == (2, 5)) and bool(((samples >= 0) & (samples < 8)).all()),
            "grads": {k: p.grad for k, p in model.named_parameters()}}


def test_uva_pixelcnn():
    ours, _ = run_both(pixelcnn, rtol=2e-4, atol=1e-5)
    r = ours["receptive"][0, 0]
    assert not r[4:].any() and not r[3, 4:].any()  # nothing below or to the right of the pixel
    assert r[3, :3].any() and r[:3].any()
    assert ours["samples_ok"] is True and (ours["img"] >= 0).all()
