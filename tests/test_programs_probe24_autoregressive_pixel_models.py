# ruff: noqa: B007, E501, E702, F841, UP008  (the programs are kept as their authors wrote them)
"""Autoregressive generative models and classic architectures from papers (see tests/pytorch_programs.py), as PyTorch
users write them, each run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against
invariants that can fail (receptive fields, normalisation, reconstructions, ranges). Models of pixels: PixelCNN with
masked convolutions (a ``Conv2d`` subclass with a mask buffer multiplied into ``self.weight.data``, type A/B masks,
BatchNorm, 256-way ``cross_entropy``, a receptive-field check by the input's gradient, sampling pixel by pixel with
``multinomial``); a class-conditional gated PixelCNN (vertical and horizontal stacks, gated activations by ``chunk``,
the first layer made causal by zeroing ``weight.data``, generation writing through ``x.data``); PixelRNN's Diagonal
LSTM (skewing by slice writes into ``new_zeros``); PixelCNN++'s pieces (``weight_norm``, down-shifts by
``ZeroPad2d``, ``concat_elu``, the discretised logistic mixture loss and its Gumbel-max sampler through
``FloatTensor(...).uniform_`` and ``scatter_``); masks by ``prune.custom_from_mask``, ``parametrize`` and gradient
hooks, colour-grouped masks through ``_conv_forward``, ``torch.where`` and ``masked_fill``."""

import importlib

import numpy as np

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# PixelCNN (van den Oord et al., 2016): masked convolutions, 256-way softmax, sampling pixel by pixel
# ----------------------------------------------------------------------------------------------


def pixelcnn(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MaskedConv2d(nn.Conv2d):
        def __init__(self, mask_type, *args, **kwargs):
            super().__init__(*args, **kwargs)
            assert mask_type in {'A', 'B'}
            self.register_buffer('mask', self.weight.data.clone())
            _, _, kH, kW = self.weight.size()
            self.mask.fill_(1)
            self.mask[:, :, kH // 2, kW // 2 + (mask_type == 'B'):] = 0
            self.mask[:, :, kH // 2 + 1:] = 0

        def forward(self, x):
            self.weight.data *= self.mask
            return super(MaskedConv2d, self).forward(x)

    torch.manual_seed(0)
    fm = 8
    net = nn.Sequential(
        MaskedConv2d('A', 1, fm, 7, 1, 3, bias=False), nn.BatchNorm2d(fm), nn.ReLU(True),
        MaskedConv2d('B', fm, fm, 7, 1, 3, bias=False), nn.BatchNorm2d(fm), nn.ReLU(True),
        MaskedConv2d('B', fm, fm, 7, 1, 3, bias=False), nn.BatchNorm2d(fm), nn.ReLU(True),
        nn.Conv2d(fm, 256, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.rand(4, 1, 8, 8)
    target = (x[:, 0] * 255).long()
    losses = []
    for step in range(3):
        out = net(x)
        loss = F.cross_entropy(out, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    g0 = net[0].weight.grad.clone()
    xi = torch.rand(1, 1, 8, 8, requires_grad=True)
    net.eval()
    o = net(xi)
    o[0, :, 4, 4].sum().backward()
    rf = (xi.grad[0, 0] != 0).int()
    sample = torch.zeros(2, 1, 8, 8)
    with torch.no_grad():
        for i in range(3):
            for j in range(8):
                out = net(sample)
                probs = F.softmax(out[:, :, i, j], dim=1)
                sample[:, :, i, j] = torch.multinomial(probs, 1).float() / 255.
    return {"losses": losses, "g0": g0, "rf": rf, "sample": sample, "mask": net[3].mask[0, 0],
            "w0": net[0].weight}


def test_pixelcnn():
    ours, _ = run_both(pixelcnn, rtol=1e-4, atol=1e-5)
    rf = ours["rf"]
    # pixel (4, 4) sees every pixel above it and those to its left on its row, never itself or what follows
    expected = np.zeros((8, 8), int)
    expected[:4] = 1
    expected[4, :4] = 1
    np.testing.assert_array_equal(rf, expected)
    mask_b = np.ones((7, 7))
    mask_b[3, 4:] = 0
    mask_b[4:] = 0
    np.testing.assert_array_equal(ours["mask"], mask_b)
    assert np.all(ours["w0"][:, :, 3, 3:] == 0) and np.all(ours["w0"][:, :, 4:] == 0)  # type A: centre masked too
    assert np.abs(ours["g0"][:, :, 4:]).sum() > 0  # masked weights still get gradients: each forward masks again
    assert ours["losses"][-1] < ours["losses"][0]
    s = ours["sample"] * 255
    np.testing.assert_allclose(s, np.round(s), atol=1e-4)
    assert s.min() >= 0 and s.max() <= 255


# ----------------------------------------------------------------------------------------------
# Gated PixelCNN (van den Oord et al., 2016b), class-conditional, vertical and horizontal stacks
# ----------------------------------------------------------------------------------------------


def gated_pixelcnn(m):
    torch, nn, F = m.torch, m.nn, m.F

    class GatedActivation(nn.Module):
        def forward(self, x):
            x, y = x.chunk(2, dim=1)
            return torch.tanh(x) * torch.sigmoid(y)

    class GatedMaskedConv2d(nn.Module):
        def __init__(self, mask_type, dim, kernel, residual=True, n_classes=4):
            super().__init__()
            self.mask_type, self.residual = mask_type, residual
            self.class_cond_embedding = nn.Embedding(n_classes, 2 * dim)
            kernel_shp = (kernel // 2 + 1, kernel)
            padding_shp = (kernel // 2, kernel // 2)
            self.vert_stack = nn.Conv2d(dim, dim * 2, kernel_shp, 1, padding_shp)
            self.vert_to_horiz = nn.Conv2d(2 * dim, 2 * dim, 1)
            kernel_shp = (1, kernel // 2 + 1)
            padding_shp = (0, kernel // 2)
            self.horiz_stack = nn.Conv2d(dim, dim * 2, kernel_shp, 1, padding_shp)
            self.horiz_resid = nn.Conv2d(dim, dim, 1)
            self.gate = GatedActivation()

        def make_causal(self):
            self.vert_stack.weight.data[:, :, -1].zero_()
            self.horiz_stack.weight.data[:, :, :, -1].zero_()

        def forward(self, x_v, x_h, h):
            if self.mask_type == 'A':
                self.make_causal()
            h = self.class_cond_embedding(h)
            h_vert = self.vert_stack(x_v)
            h_vert = h_vert[:, :, :x_v.size(-1), :]
            out_v = self.gate(h_vert + h[:, :, None, None])
            h_horiz = self.horiz_stack(x_h)
            h_horiz = h_horiz[:, :, :, :x_h.size(-2)]
            v2h = self.vert_to_horiz(h_vert)
            out = self.gate(v2h + h_horiz + h[:, :, None, None])
            if self.residual:
                out_h = self.horiz_resid(out) + x_h
            else:
                out_h = self.horiz_resid(out)
            return out_v, out_h

    class GatedPixelCNN(nn.Module):
        def __init__(self, input_dim=4, dim=8, n_layers=4, n_classes=4):
            super().__init__()
            self.dim = dim
            self.embedding = nn.Embedding(input_dim, dim)
            self.layers = nn.ModuleList()
            for i in range(n_layers):
                mask_type = 'A' if i == 0 else 'B'
                kernel = 7 if i == 0 else 3
                residual = False if i == 0 else True
                self.layers.append(GatedMaskedConv2d(mask_type, dim, kernel, residual, n_classes))
            self.output_conv = nn.Sequential(nn.Conv2d(dim, 16, 1), nn.ReLU(True), nn.Conv2d(16, input_dim, 1))

        def forward(self, x, label):
            shp = x.size() + (-1,)
            x = self.embedding(x.view(-1)).view(shp)
            x = x.permute(0, 3, 1, 2)
            x_v, x_h = (x, x)
            for i, layer in enumerate(self.layers):
                x_v, x_h = layer(x_v, x_h, label)
            return self.output_conv(x_h)

        def generate(self, label, shape=(6, 6), batch_size=2):
            param = next(self.parameters())
            x = torch.zeros((batch_size, *shape), dtype=torch.int64, device=param.device)
            for i in range(shape[0]):
                for j in range(shape[1]):
                    logits = self.forward(x, label)
                    probs = F.softmax(logits[:, :, i, j], -1)
                    x.data[:, i, j].copy_(probs.multinomial(1).squeeze().data)
            return x

    torch.manual_seed(0)
    model = GatedPixelCNN()
    x = torch.randint(0, 4, (3, 6, 6))
    lab = torch.tensor([0, 1, 3])
    opt = torch.optim.Adam(model.parameters(), lr=3e-4)
    ls = []
    for it in range(2):
        logits = model(x, lab)
        logits = logits.permute(0, 2, 3, 1).contiguous()
        loss = F.cross_entropy(logits.view(-1, 4), x.view(-1))
        opt.zero_grad(); loss.backward(); opt.step(); ls.append(loss.item())
    model.eval()
    with torch.no_grad():
        gen = model.generate(torch.tensor([1, 2]))
    xi = model.embedding(x[:1].view(-1)).view(1, 6, 6, -1).permute(0, 3, 1, 2).detach().requires_grad_()
    ov, oh = model.layers[0](xi, xi, lab[:1])
    oh[0, :, 3, 3].sum().backward()
    return {"ls": ls, "gen": gen, "dep": (xi.grad[0].abs().sum(0) > 0).int(),
            "g": model.layers[1].vert_stack.weight.grad}


def test_gated_pixelcnn():
    ours, _ = run_both(gated_pixelcnn, rtol=1e-4, atol=1e-5)
    dep = ours["dep"]
    assert dep[3, 3] == 0 and dep[3, 4:].sum() == 0 and dep[4:].sum() == 0  # causal: nothing at or after (3, 3)
    assert dep[3, :3].sum() == 3 and dep[2, 3] == 1  # the row's left part and the pixel above
    assert ours["gen"].dtype == np.int64 and ours["gen"].min() >= 0 and ours["gen"].max() < 4
    assert ours["ls"][1] < ours["ls"][0] < np.log(4) + 0.5


# ----------------------------------------------------------------------------------------------
# PixelCNN++ (Salimans et al., 2017): weight norm, shifts, concat_elu, discretised logistic mixture
# ----------------------------------------------------------------------------------------------


def pixelcnnpp_pieces(m):
    torch, nn, F = m.torch, m.nn, m.F

    def concat_elu(x):
        axis = len(x.size()) - 3
        return F.elu(torch.cat([x, -x], dim=axis))

    def log_sum_exp(x):
        axis = len(x.size()) - 1
        m_, _ = torch.max(x, dim=axis)
        m2, _ = torch.max(x, dim=axis, keepdim=True)
        return m_ + torch.log(torch.sum(torch.exp(x - m2), dim=axis))

    def log_prob_from_logits(x):
        axis = len(x.size()) - 1
        m_, _ = torch.max(x, dim=axis, keepdim=True)
        return x - m_ - torch.log(torch.sum(torch.exp(x - m_), dim=axis, keepdim=True))

    def discretized_mix_logistic_loss_1d(x, l):
        x = x.permute(0, 2, 3, 1)
        l = l.permute(0, 2, 3, 1)
        xs = [int(y) for y in x.size()]
        ls = [int(y) for y in l.size()]
        nr_mix = int(ls[-1] / 3)
        logit_probs = l[:, :, :, :nr_mix]
        l = l[:, :, :, nr_mix:].contiguous().view(xs + [nr_mix * 2])
        means = l[:, :, :, :, :nr_mix]
        log_scales = torch.clamp(l[:, :, :, :, nr_mix:2 * nr_mix], min=-7.)
        x = x.contiguous()
        x = x.unsqueeze(-1) + torch.zeros(xs + [nr_mix], requires_grad=False)
        centered_x = x - means
        inv_stdv = torch.exp(-log_scales)
        plus_in = inv_stdv * (centered_x + 1. / 255.)
        cdf_plus = F.sigmoid(plus_in)
        min_in = inv_stdv * (centered_x - 1. / 255.)
        cdf_min = F.sigmoid(min_in)
        log_cdf_plus = plus_in - F.softplus(plus_in)
        log_one_minus_cdf_min = -F.softplus(min_in)
        cdf_delta = cdf_plus - cdf_min
        mid_in = inv_stdv * centered_x
        log_pdf_mid = mid_in - log_scales - 2. * F.softplus(mid_in)
        inner_inner_cond = (cdf_delta > 1e-5).float()
        inner_inner_out = inner_inner_cond * torch.log(torch.clamp(cdf_delta, min=1e-12)) + (1. - inner_inner_cond) * (log_pdf_mid - np.log(127.5))
        inner_cond = (x > 0.999).float()
        inner_out = inner_cond * log_one_minus_cdf_min + (1. - inner_cond) * inner_inner_out
        cond = (x < -0.999).float()
        log_probs = cond * log_cdf_plus + (1. - cond) * inner_out
        log_probs = torch.sum(log_probs, dim=3) + log_prob_from_logits(logit_probs)
        return -torch.sum(log_sum_exp(log_probs))

    def to_one_hot(tensor, n, fill_with=1.):
        one_hot = torch.FloatTensor(tensor.size() + (n,)).zero_()
        one_hot.scatter_(len(tensor.size()), tensor.unsqueeze(-1), fill_with)
        return one_hot

    def sample_from_discretized_mix_logistic_1d(l, nr_mix):
        l = l.permute(0, 2, 3, 1)
        ls = [int(y) for y in l.size()]
        xs = ls[:-1] + [1]
        logit_probs = l[:, :, :, :nr_mix]
        l = l[:, :, :, nr_mix:].contiguous().view(xs + [nr_mix * 2])
        temp = torch.FloatTensor(logit_probs.size())
        temp.uniform_(1e-5, 1. - 1e-5)
        temp = logit_probs.data - torch.log(- torch.log(temp))
        _, argmax = temp.max(dim=3)
        one_hot = to_one_hot(argmax, nr_mix)
        sel = one_hot.view(xs[:-1] + [1, nr_mix])
        means = torch.sum(l[:, :, :, :, :nr_mix] * sel, dim=4)
        log_scales = torch.clamp(torch.sum(l[:, :, :, :, nr_mix:2 * nr_mix] * sel, dim=4), min=-7.)
        u = torch.FloatTensor(means.size())
        u.uniform_(1e-5, 1. - 1e-5)
        x = means + torch.exp(log_scales) * (torch.log(u) - torch.log(1. - u))
        x0 = torch.clamp(torch.clamp(x[:, :, :, 0], min=-1.), max=1.)
        return x0.unsqueeze(1)

    class down_shift(nn.Module):
        def __init__(self):
            super().__init__()
            self.pad = nn.ZeroPad2d((0, 0, 1, 0))

        def forward(self, x):
            xs = [int(y) for y in x.size()]
            x = x[:, :, :xs[2] - 1, :]
            return self.pad(x)

    class down_right_shifted_conv2d(nn.Module):
        def __init__(self, nin, nout, fs=(2, 2)):
            super().__init__()
            self.pad = nn.ZeroPad2d((fs[1] - 1, 0, fs[0] - 1, 0))
            self.conv = nn.utils.parametrizations.weight_norm(nn.Conv2d(nin, nout, fs))

        def forward(self, x):
            return self.conv(self.pad(x))

    torch.manual_seed(0)
    nr_mix = 3
    c1 = down_right_shifted_conv2d(1, 8)
    c2 = down_right_shifted_conv2d(16, nr_mix * 3)
    ds = down_shift()
    x = torch.rand(2, 1, 6, 6) * 2 - 1
    x.requires_grad_()
    h = concat_elu(c1(ds(x)))
    l = c2(h)
    loss = discretized_mix_logistic_loss_1d(x.detach(), l)
    loss.backward(retain_graph=True)
    # causality of the shifted stack: the output at (2, 3) sees only rows above
    x.grad = None
    l[0, :, 2, 3].sum().backward()
    smp = sample_from_discretized_mix_logistic_1d(l.detach(), nr_mix)
    return {"loss": loss, "g": c1.conv.parametrizations.weight.original1.grad,
            "gg": c1.conv.parametrizations.weight.original0.grad, "smp": smp,
            "dep": (x.grad[0, 0] != 0).int(), "oh": to_one_hot(torch.tensor([[0, 2], [1, 1]]), 3)}


def test_pixelcnnpp_pieces():
    ours, _ = run_both(pixelcnnpp_pieces, rtol=1e-4, atol=1e-4)  # (a float32 sum of 216 log-probabilities)
    assert np.all(ours["dep"][2:] == 0) and ours["dep"][:2].sum() > 0  # down-shifted: rows 0 and 1 only
    assert np.all(np.abs(ours["smp"]) <= 1)
    np.testing.assert_array_equal(ours["oh"], np.eye(3)[[[0, 2], [1, 1]]])
    assert np.isfinite(ours["loss"]) and ours["loss"] > 0


# ----------------------------------------------------------------------------------------------
# Other ways to mask: prune.custom_from_mask, parametrize, gradient hooks, colour groups, where / masked_fill
# ----------------------------------------------------------------------------------------------


def causal_mask(torch, cout, cin, k, typ):
    mask = torch.ones(cout, cin, k, k)
    mask[:, :, k // 2, k // 2 + (typ == 'B'):] = 0
    mask[:, :, k // 2 + 1:] = 0
    return mask


def masks_other_ways(m):
    torch, nn, F = m.torch, m.nn, m.F
    prune = importlib.import_module(nn.__name__ + ".utils.prune")  # (PyTorch's is imported on demand)
    parametrize = importlib.import_module(nn.__name__ + ".utils.parametrize")
    torch.manual_seed(0)
    out = {}
    conv = nn.Conv2d(2, 4, 5, padding=2)
    prune.custom_from_mask(conv, name='weight', mask=causal_mask(torch, 4, 2, 5, 'A'))
    out["names"] = sorted(n for n, _ in conv.named_parameters()) + sorted(n for n, _ in conv.named_buffers())
    x = torch.randn(1, 2, 6, 6, requires_grad=True)
    y = conv(x)
    y[0, :, 3, 3].sum().backward()
    out["dep"] = (x.grad[0].abs().sum(0) > 0).int()
    out["gorig"] = conv.weight_orig.grad
    prune.remove(conv, 'weight')
    out["after"] = sorted(n for n, _ in conv.named_parameters())
    out["w"] = conv.weight

    class Mask(nn.Module):
        def __init__(self, mask):
            super().__init__()
            self.register_buffer("mask", mask)

        def forward(self, w):
            return w * self.mask

    conv2 = nn.Conv2d(2, 4, 3, padding=1)
    parametrize.register_parametrization(conv2, "weight", Mask(causal_mask(torch, 4, 2, 3, 'B')))
    out["pnames"] = sorted(conv2.state_dict().keys())
    x2 = torch.randn(1, 2, 5, 5, requires_grad=True)
    y2 = conv2(x2)
    y2[0, :, 2, 2].sum().backward()
    out["pdep"] = (x2.grad[0].abs().sum(0) > 0).int()
    out["pgo"] = conv2.parametrizations.weight.original.grad
    with parametrize.cached():
        out["cached"] = conv2(x2)
    parametrize.remove_parametrizations(conv2, "weight", leave_parametrized=True)
    out["pw"] = conv2.weight
    lin = nn.Linear(4, 4)
    M = torch.tril(torch.ones(4, 4), -1)
    with torch.no_grad():
        lin.weight.mul_(M)
    lin.weight.register_hook(lambda g: g * M)
    opt = torch.optim.SGD(lin.parameters(), lr=0.5)
    for _ in range(3):
        loss = lin(torch.randn(8, 4)).pow(2).mean()
        opt.zero_grad(); loss.backward(); opt.step()
    out["hookw"] = lin.weight
    return out


def test_masks_other_ways():
    ours, _ = run_both(masks_other_ways, rtol=1e-5, atol=1e-6)
    assert ours["names"] == ["bias", "weight_orig", "weight_mask"]
    assert ours["after"] == ["bias", "weight"]
    expected = np.zeros((6, 6), int)
    expected[1:3, 1:6] = 1
    expected[3, 1:3] = 1
    np.testing.assert_array_equal(ours["dep"], expected)  # a 5x5 type-A window around (3, 3)
    np.testing.assert_array_equal(ours["w"][:, :, 2, 2:], 0)
    assert ours["pnames"] == ["bias", "parametrizations.weight.0.mask", "parametrizations.weight.original"]
    assert ours["pdep"][2, 2] == 1 and ours["pdep"][2, 3] == 0 and ours["pdep"][3].sum() == 0  # type B sees (2, 2)
    np.testing.assert_array_equal(np.triu(ours["hookw"]), 0)  # the hook kept the masked weights at 0


def colour_masked_convs(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    out = {}

    class MaskedConv(nn.Conv2d):
        def __init__(self, typ, cin, cout, k, **kw):
            super().__init__(cin, cout, k, padding=k // 2, **kw)
            mask = torch.ones_like(self.weight, dtype=torch.bool)
            c = k // 2
            mask[:, :, c, c + 1:] = False
            mask[:, :, c + 1:] = False
            for i in range(3):  # R sees nothing of this pixel, G sees R, B sees R and G (and themselves in B)
                for j in range(3):
                    if (typ == 'A' and j >= i) or (typ == 'B' and j > i):
                        mask[i * cout // 3:(i + 1) * cout // 3, j * cin // 3:(j + 1) * cin // 3, c, c] = False
            self.register_buffer('mask', mask, persistent=False)

        def forward(self, x):
            return self._conv_forward(x, self.weight * self.mask, self.bias)

    class MaskedConvWhere(MaskedConv):
        def forward(self, x):
            return F.conv2d(x, torch.where(self.mask, self.weight, 0.), self.bias, self.stride, self.padding,
                            self.dilation, self.groups)

    class MaskedConvFill(MaskedConv):
        def forward(self, x):
            return F.conv2d(x, self.weight.masked_fill(~self.mask, 0), self.bias, self.stride, self.padding)

    a = MaskedConv('A', 3, 6, 5)
    b = MaskedConvWhere('B', 6, 6, 3, padding_mode='reflect')
    c = MaskedConvFill('B', 6, 3, 3)
    out["sd"] = sorted(a.state_dict().keys())
    x = torch.randn(1, 3, 6, 6, requires_grad=True)
    y = c(F.elu(b(F.elu(a(x)))))
    deps = []
    for ch in range(3):
        x.grad = None
        y[0, ch, 3, 3].backward(retain_graph=True)
        deps.append((x.grad[0, :, 3, 3] != 0).int())
    out["deps"] = torch.stack(deps)
    out["grads"] = (a.weight.grad, b.weight.grad, c.weight.grad, b.bias.grad)
    d = a.double()
    out["y64"] = d(x.double().detach())
    out["dtypes"] = (d.mask.dtype == torch.bool, d.weight.dtype == torch.float64)
    return out


def test_colour_masked_convs():
    ours, _ = run_both(colour_masked_convs, rtol=1e-5, atol=1e-6)
    assert ours["sd"] == ["bias", "weight"]  # a mask that is not persistent stays out of the state dict
    np.testing.assert_array_equal(ours["deps"], [[0, 0, 0], [1, 0, 0], [1, 1, 0]])
    assert ours["dtypes"] == (True, True)


# ----------------------------------------------------------------------------------------------
# PixelRNN's Diagonal BiLSTM half (van den Oord et al., 2016a): skewing by slice writes, a column-by-column LSTM
# ----------------------------------------------------------------------------------------------


def diagonal_lstm(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    def skew(x):
        B, C, H, W = x.shape
        out = x.new_zeros(B, C, H, 2 * W - 1)
        for i in range(H):
            out[:, :, i, i:i + W] = x[:, :, i]
        return out

    def unskew(x):
        B, C, H, W2 = x.shape
        W = (W2 + 1) // 2
        return torch.stack([x[:, :, i, i:i + W] for i in range(H)], dim=2)

    class DiagonalLSTM(nn.Module):
        def __init__(self, cin, h):
            super().__init__()
            self.h = h
            self.i2s = nn.Conv2d(cin, 4 * h, (1, 1))
            self.s2s = nn.Conv1d(h, 4 * h, 2, padding=1)

        def forward(self, x):
            xs = skew(x)
            B, C, H, W = xs.shape
            i2s = self.i2s(xs)
            h = xs.new_zeros(B, self.h, H); c = xs.new_zeros(B, self.h, H)
            outs = []
            for col in range(W):
                s2s = self.s2s(h)[:, :, :H]
                gates = i2s[:, :, :, col] + s2s
                o, f, i, g = torch.split(gates, self.h, dim=1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            return unskew(torch.stack(outs, dim=3))

    net = DiagonalLSTM(2, 3)
    x = torch.randn(2, 2, 4, 4, requires_grad=True)
    y = net(x)
    y.pow(2).sum().backward()
    probe = torch.randn(1, 2, 4, 4, requires_grad=True)
    net(probe)[0, :, 1, 1].sum().backward()
    grid = torch.arange(8.).view(1, 1, 2, 4)
    return {"y": y, "gx": x.grad, "gw": net.s2s.weight.grad, "gi": net.i2s.weight.grad, "skew": skew(grid),
            "round_trip": unskew(skew(grid)), "dep": (probe.grad[0].abs().sum(0) > 0).int()}


def test_diagonal_lstm():
    ours, _ = run_both(diagonal_lstm, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(ours["skew"][0, 0], [[0, 1, 2, 3, 0, 0, 0], [0, 4, 5, 6, 7, 0, 0]])
    np.testing.assert_array_equal(ours["round_trip"], np.arange(8.0).reshape(1, 1, 2, 4))
    dep = ours["dep"]
    assert dep[2:].sum() == 0 and dep[1, 2:].sum() == 0 and dep[1, 1] == 1  # only rows above and the left
