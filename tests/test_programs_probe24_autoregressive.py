# ruff: noqa: B007, B008, B023, E501, E701, E702, E731, E741, F841, N801, N802, N806, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Autoregressive generative models and classic architectures from papers (see tests/pytorch_programs.py), as PyTorch
users write them, each run on chainrule and on PyTorch from the same seeds, and checked without PyTorch against
invariants that can fail (receptive fields, normalisation, reconstructions, ranges).

PixelCNN with masked convolutions (a ``Conv2d`` subclass with a mask buffer multiplied into ``self.weight.data``,
type A/B masks, BatchNorm, 256-way ``cross_entropy``, a receptive-field check by the input's gradient, sampling
pixel by pixel with ``multinomial``); a class-conditional gated PixelCNN (vertical and horizontal stacks, gated
activations by ``chunk``, the first layer made causal by zeroing ``weight.data``, generation writing through
``x.data``); PixelRNN's Diagonal LSTM (skewing by slice writes into ``new_zeros``); PixelCNN++'s pieces
(``weight_norm``, down-shifts by ``ZeroPad2d``, ``concat_elu``, the discretised logistic mixture loss and its
Gumbel-max sampler through ``FloatTensor(...).uniform_`` and ``scatter_``); masks by ``prune.custom_from_mask``,
``parametrize`` and gradient hooks, colour-grouped masks through ``_conv_forward``, ``torch.where`` and
``masked_fill``; MADE (Karpathy's, numpy masks copied into ``register_buffer`` masks, connectivity checked by
gradients and ``autograd.functional.jacobian``, order-agnostic training) and a MAF layer (``randperm`` orders,
``randint`` degrees, a triangular Jacobian, ``slogdet``, ``func.jacrev``, inversion by D passes); a WaveNet (causal
dilated ``Conv1d`` by ``F.pad``, gated residual and skip connections, mu-law coding, ``cross_entropy`` over 256
classes, causality by gradients, sampling with a temperature, fast generation by queues); a char-RNN (``LSTM`` and
``GRU``, truncated BPTT by ``detach``, ``clip_grad_norm_``, temperature sampling); a NADE (exact normalisation over
all 256 binary vectors, ``bernoulli`` sampling); capsule networks (squash, dynamic routing by softmax over routes,
margin loss, masked reconstruction; gram-ai's with 5-D broadcast matmul and ``torch.sparse.torch.eye``); mixture
density networks (``MixtureSameFamily`` of ``Categorical`` with ``Independent(Normal)``, ``MultivariateNormal``,
``LogNormal`` and ``LowRankMultivariateNormal``; ``log_prob`` against a hand-written ``logsumexp``, ``sample``,
``mean``, ``variance``, ``cdf``); Highway networks; temperature, top-k, nucleus and beam decoding."""

import importlib
import math

import numpy as np
import pytest

from .pytorch_programs import run_both


def normal_pdf(x, mu, sigma):
    return math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def normal_logpdf(x, mu=0.0, sigma=1.0):
    return math.log(normal_pdf(x, mu, sigma))


def normal_cdf(x, mu, sigma):
    return 0.5 * (1 + math.erf((x - mu) / (sigma * math.sqrt(2))))

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
# MADE (Germain et al., 2015) as Karpathy's pytorch-made writes it, and a MAF layer on top
# ----------------------------------------------------------------------------------------------


def made(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MaskedLinear(nn.Linear):
        def __init__(self, in_features, out_features, bias=True):
            super().__init__(in_features, out_features, bias)
            self.register_buffer('mask', torch.ones(out_features, in_features))

        def set_mask(self, mask):
            self.mask.data.copy_(torch.from_numpy(mask.astype(np.uint8).T))

        def forward(self, input):
            return F.linear(input, self.mask * self.weight, self.bias)

    class MADE(nn.Module):
        def __init__(self, nin, hidden_sizes, nout, num_masks=1, natural_ordering=False):
            super().__init__()
            self.nin, self.nout, self.hidden_sizes = nin, nout, hidden_sizes
            self.net = []
            hs = [nin] + hidden_sizes + [nout]
            for h0, h1 in zip(hs, hs[1:]):
                self.net.extend([MaskedLinear(h0, h1), nn.ReLU()])
            self.net.pop()
            self.net = nn.Sequential(*self.net)
            self.natural_ordering = natural_ordering
            self.num_masks = num_masks
            self.seed = 0
            self.m = {}
            self.update_masks()

        def update_masks(self):
            if self.m and self.num_masks == 1:
                return
            L = len(self.hidden_sizes)
            rng = np.random.RandomState(self.seed)
            self.seed = (self.seed + 1) % self.num_masks
            self.m[-1] = np.arange(self.nin) if self.natural_ordering else rng.permutation(self.nin)
            for l in range(L):
                self.m[l] = rng.randint(self.m[l - 1].min(), self.nin - 1, size=self.hidden_sizes[l])
            masks = [self.m[l - 1][:, None] <= self.m[l][None, :] for l in range(L)]
            masks.append(self.m[L - 1][:, None] < self.m[-1][None, :])
            if self.nout > self.nin:
                k = int(self.nout / self.nin)
                masks[-1] = np.concatenate([masks[-1]] * k, axis=1)
            layers = [l for l in self.net.modules() if isinstance(l, MaskedLinear)]
            for l, mm in zip(layers, masks):
                l.set_mask(mm)

        def forward(self, x):
            return self.net(x)

    torch.manual_seed(0)
    D = 6
    model = MADE(D, [20, 20], D * 2, num_masks=2)
    order = model.m[-1].copy()
    res = []
    for k in range(D * 2):
        x = (torch.rand(1, D) > 0.5).float().requires_grad_(True)
        xtr = model(x)
        loss = xtr[0, k]
        loss.backward()
        depends = (x.grad[0] != 0).numpy().astype(np.uint8)
        res.append(depends)
    x = torch.rand(3, D)
    jac = torch.autograd.functional.jacobian(lambda v: model(v), x[0])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-4)
    data = (torch.rand(32, D) > 0.5).float()
    losses = []
    for step in range(4):
        model.update_masks()
        logits = model(data)[:, :D]
        loss = F.binary_cross_entropy_with_logits(logits, data, reduction='sum') / data.size(0)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss)
    return {"dep": np.array(res), "order": order, "jac": jac, "losses": torch.stack(losses),
            "m1": model.net[2].mask, "g": model.net[0].weight.grad}


def test_made():
    ours, _ = run_both(made, rtol=1e-4, atol=1e-5)
    order, dep = ours["order"], ours["dep"]
    # output k (and its twin k + D) depends exactly on inputs earlier in the ordering: never on itself or later
    for k in range(12):
        allowed = order < order[k % 6]
        assert not np.any(dep[k] & ~allowed)
    assert not np.any(ours["jac"][np.arange(6), np.arange(6)])  # no output sees its own input
    assert set(np.unique(ours["m1"])) <= {0.0, 1.0}
    assert np.isfinite(ours["losses"]).all()


def maf_layer(m):
    torch, nn, F = m.torch, m.nn, m.F
    D = m.torch.distributions
    torch.manual_seed(3)

    class MaskedLinear(nn.Linear):
        def __init__(self, i, o, mask):
            super().__init__(i, o)
            self.register_buffer("mask", mask.float())

        def forward(self, x):
            return F.linear(x, self.weight * self.mask, self.bias)

    d, h = 5, 12
    order = torch.randperm(d)
    hid = torch.randint(order.min().item(), d - 1, (h,))
    m1 = hid.unsqueeze(-1) >= order.unsqueeze(0)
    m2 = order.unsqueeze(-1) > hid.unsqueeze(0)
    net = nn.Sequential(MaskedLinear(d, h, m1), nn.ELU(), MaskedLinear(h, 2 * d, m2.repeat(2, 1)))
    x = torch.randn(7, d)

    def forward(x):
        mu, alpha = net(x).chunk(2, dim=1)
        u = (x - mu) * torch.exp(-alpha)
        logdet = -alpha.sum(1)
        return u, logdet

    u, logdet = forward(x)
    base = D.Normal(torch.zeros(d), torch.ones(d))
    lp = base.log_prob(u).sum(1) + logdet
    lp.mean().backward()
    J = torch.autograd.functional.jacobian(lambda v: forward(v.unsqueeze(0))[0].squeeze(0), x[0])
    Jp = J[torch.argsort(order)][:, torch.argsort(order)]
    x_rec = torch.zeros_like(u)
    with torch.no_grad():
        for i in range(d):
            mu, alpha = net(x_rec).chunk(2, dim=1)
            idx = (order == i).nonzero().squeeze()
            x_rec[:, idx] = u[:, idx] * torch.exp(alpha[:, idx]) + mu[:, idx]
    JF = torch.func.jacrev(lambda v: forward(v.unsqueeze(0))[0].squeeze(0))(x[0])
    return {"lp": lp, "J": J, "Jp": Jp, "rec": (x_rec - x).abs().max(), "logdet": logdet[0],
            "slogdet": torch.linalg.slogdet(J)[1], "g": net[0].weight.grad, "JF": JF, "order": order, "hid": hid}


def test_maf_layer():
    ours, _ = run_both(maf_layer, rtol=1e-4, atol=1e-5)
    assert sorted(ours["order"].tolist()) == [0, 1, 2, 3, 4]
    np.testing.assert_array_equal(np.triu(ours["Jp"], 1), 0)  # triangular in the permuted order
    np.testing.assert_allclose(ours["slogdet"], ours["logdet"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["JF"], ours["J"], rtol=1e-6, atol=1e-7)
    assert ours["rec"] < 1e-5


# ----------------------------------------------------------------------------------------------
# WaveNet (van den Oord et al., 2016): dilated causal convolutions, gated units, mu-law over 256 classes
# ----------------------------------------------------------------------------------------------


def mu_law_encode(torch, x, mu=255):
    x = torch.clamp(x, -1.0, 1.0)
    y = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / np.log1p(mu)
    return ((y + 1) / 2 * mu + 0.5).long()


def mu_law_decode(torch, q, mu=255):
    y = 2 * (q.float() / mu) - 1
    return torch.sign(y) * (1.0 / mu) * ((1 + mu) ** torch.abs(y) - 1)


def wavenet(m):
    torch, nn, F = m.torch, m.nn, m.F

    class CausalConv1d(nn.Conv1d):
        def __init__(self, cin, cout, k, dilation=1):
            super().__init__(cin, cout, k, dilation=dilation)
            self.left = (k - 1) * dilation

        def forward(self, x):
            return super().forward(F.pad(x, (self.left, 0)))

    class ResidualBlock(nn.Module):
        def __init__(self, rc, sc, dilation):
            super().__init__()
            self.filter = CausalConv1d(rc, rc, 2, dilation)
            self.gate = CausalConv1d(rc, rc, 2, dilation)
            self.res = nn.Conv1d(rc, rc, 1)
            self.skip = nn.Conv1d(rc, sc, 1)

        def forward(self, x):
            z = torch.tanh(self.filter(x)) * torch.sigmoid(self.gate(x))
            return x + self.res(z), self.skip(z)

    class WaveNet(nn.Module):
        def __init__(self, layers=5, stacks=2, rc=8, sc=16, classes=256):
            super().__init__()
            self.embed = nn.Embedding(classes, rc)
            self.start = CausalConv1d(rc, rc, 2)
            self.blocks = nn.ModuleList([ResidualBlock(rc, sc, 2 ** i) for _ in range(stacks) for i in range(layers)])
            self.out1 = nn.Conv1d(sc, sc, 1)
            self.out2 = nn.Conv1d(sc, classes, 1)

        def forward(self, q):
            x = self.embed(q).transpose(1, 2)
            x = self.start(x)
            skips = 0
            for b in self.blocks:
                x, s = b(x)
                skips = skips + s
            return self.out2(F.relu(self.out1(F.relu(skips))))

    torch.manual_seed(0)
    t = torch.linspace(0, 1, 120)
    audio = 0.8 * torch.sin(2 * np.pi * 5 * t) * torch.exp(-t)
    q = mu_law_encode(torch, audio).unsqueeze(0).repeat(2, 1)
    rec = mu_law_decode(torch, q)
    net = WaveNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for step in range(3):
        logits = net(q[:, :-1])
        loss = F.cross_entropy(logits, q[:, 1:])
        opt.zero_grad(); loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    x = net.embed(q[:1]).detach().requires_grad_()
    h = net.start(x.transpose(1, 2))
    skips = 0
    for b in net.blocks:
        h, s = b(h); skips = skips + s
    skips[0, :, 100].sum().backward()
    dep = (x.grad[0].abs().sum(1) > 0)
    net.eval()
    gen = q[:1, :20]
    with torch.no_grad():
        for i in range(8):
            logits = net(gen)[:, :, -1]
            p = F.softmax(logits / 0.9, dim=-1)
            nxt = torch.multinomial(p, num_samples=1)
            gen = torch.cat([gen, nxt], dim=1)
        many = torch.multinomial(F.softmax(net(gen)[0].T, -1), 4, replacement=True)
    return {"q": q, "rec": rec, "losses": losses, "dep": dep, "gen": gen, "many": many,
            "err": (rec[0] - audio).abs().max(), "g": net.blocks[3].filter.weight.grad}


def test_wavenet():
    ours, _ = run_both(wavenet, rtol=1e-4, atol=1e-5)
    dep = np.nonzero(ours["dep"])[0]
    # receptive field of two stacks of dilations 1..16 after the start conv: 2 * 31 + 1 steps back, never ahead
    assert dep.max() == 100 and dep.min() == 100 - 63
    assert ours["err"] < 0.02  # mu-law quantisation error at this amplitude
    assert 0 <= ours["q"].min() and ours["q"].max() <= 255
    assert ours["losses"][-1] < ours["losses"][0] and abs(ours["losses"][0] - np.log(256)) < 0.5
    assert ours["gen"].shape == (1, 28) and ours["many"].shape == (28, 4)


# ----------------------------------------------------------------------------------------------
# char-RNN (Karpathy): LSTM / GRU, truncated backpropagation through time, temperature sampling
# ----------------------------------------------------------------------------------------------

TEXT = "the quick brown fox jumps over the lazy dog. " * 8


def char_rnn(m, cell):
    torch, nn, F = m.torch, m.nn, m.F
    chars = sorted(set(TEXT))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in TEXT], dtype=torch.long)

    class CharRNN(nn.Module):
        def __init__(self, vocab, hidden=32, layers=2):
            super().__init__()
            self.encoder = nn.Embedding(vocab, hidden)
            self.rnn = getattr(nn, cell)(hidden, hidden, layers, dropout=0.0, batch_first=True)
            self.decoder = nn.Linear(hidden, vocab)
            self.hidden, self.layers = hidden, layers

        def forward(self, x, h):
            out, h = self.rnn(self.encoder(x), h)
            return self.decoder(out.reshape(-1, out.size(2))), h

        def init_hidden(self, bsz):
            w = next(self.parameters())
            if cell == "LSTM":
                return (w.new_zeros(self.layers, bsz, self.hidden), w.new_zeros(self.layers, bsz, self.hidden))
            return w.new_zeros(self.layers, bsz, self.hidden)

    def repackage(h):
        if isinstance(h, torch.Tensor):
            return h.detach()
        return tuple(repackage(v) for v in h)

    torch.manual_seed(0)
    V = len(chars)
    model = CharRNN(V)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    bsz, bptt = 4, 10
    nb = data.size(0) // bsz
    batched = data[: nb * bsz].view(bsz, -1)
    h = model.init_hidden(bsz)
    losses = []
    for i in range(0, min(batched.size(1) - 1, 60), bptt):
        seq = min(bptt, batched.size(1) - 1 - i)
        x, y = batched[:, i:i + seq], batched[:, i + 1:i + 1 + seq]
        h = repackage(h)
        model.zero_grad()
        out, h = model(x, h)
        loss = F.cross_entropy(out, y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.25)
        opt.step()
        losses.append(loss.item())
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    leaf = all(v.grad_fn is None for v in (h if isinstance(h, tuple) else (h,)))
    model.eval()
    with torch.no_grad():
        h = model.init_hidden(1)
        inp = torch.tensor([[stoi['t']]])
        out_chars = []
        for T in [0.5, 1.0, 1.5]:
            for _ in range(8):
                logits, h = model(inp, h)
                word_weights = logits.squeeze().div(T).exp()
                idx = torch.multinomial(word_weights, 1)[0]
                inp.fill_(idx)
                out_chars.append(chars[idx])
    return {"losses": losses, "grads": grads, "text": "".join(out_chars), "leaf": leaf}


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_char_rnn(cell):
    ours, _ = run_both(char_rnn, cell, rtol=1e-4, atol=1e-5)
    assert len(ours["text"]) == 24 and set(ours["text"]) <= set(TEXT)
    assert ours["leaf"] is False  # the last chunk's state still has its history until detached
    assert ours["losses"][-1] < ours["losses"][0]
    total = np.sqrt(sum((g.astype(np.float64) ** 2).sum() for g in ours["grads"].values()))
    assert total > 0


# ----------------------------------------------------------------------------------------------
# NADE (Larochelle and Murray, 2011): exact normalisation over every binary vector
# ----------------------------------------------------------------------------------------------


def nade(m):
    torch, nn, F = m.torch, m.nn, m.F

    class NADE(nn.Module):
        def __init__(self, D, H):
            super().__init__()
            self.D, self.H = D, H
            self.W = nn.Parameter(torch.zeros(H, D))
            self.c = nn.Parameter(torch.zeros(1, H))
            self.V = nn.Parameter(torch.zeros(D, H))
            self.b = nn.Parameter(torch.zeros(1, D))
            nn.init.kaiming_normal_(self.W)
            nn.init.xavier_uniform_(self.V)

        def forward(self, x):
            a = self.c.expand(x.shape[0], -1)
            p_hat = []
            for d in range(self.D):
                h = torch.sigmoid(a)
                p = torch.sigmoid(h @ self.V[d:d + 1, :].t() + self.b[:, d:d + 1])
                p_hat.append(p)
                a = a + x[:, d:d + 1] @ self.W[:, d:d + 1].t()
            return torch.cat(p_hat, 1)

        def sample(self, n):
            x = torch.zeros(n, self.D)
            a = self.c.expand(n, -1)
            for d in range(self.D):
                h = torch.sigmoid(a)
                p = torch.sigmoid(h @ self.V[d:d + 1, :].t() + self.b[:, d:d + 1])
                x[:, d:d + 1] = torch.bernoulli(p)
                a = a + x[:, d:d + 1] @ self.W[:, d:d + 1].t()
            return x

    torch.manual_seed(0)
    model = NADE(8, 16)
    x = torch.bernoulli(torch.full((10, 8), 0.3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    ll = []
    for i in range(3):
        p = model(x)
        nll = F.binary_cross_entropy(p, x, reduction='none').sum(1).mean()
        opt.zero_grad(); nll.backward(); opt.step()
        ll.append(nll.detach())
    with torch.no_grad():
        s = model.sample(5)
    grid = torch.tensor([[int(b) for b in format(i, '08b')] for i in range(256)], dtype=torch.float32)
    with torch.no_grad():
        p = model(grid)
        logp = (grid * p.log() + (1 - grid) * (1 - p).log()).sum(1)
        bern = torch.distributions.Bernoulli(probs=p).log_prob(grid).sum(1)
    return {"ll": torch.stack(ll), "s": s, "Z": logp.exp().sum(), "bern": bern, "logp": logp, "gW": model.W.grad}


def test_nade():
    ours, _ = run_both(nade, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["Z"], 1.0, rtol=1e-5)  # the 256 probabilities sum to 1
    np.testing.assert_allclose(ours["bern"], ours["logp"], rtol=1e-5, atol=1e-5)
    assert set(np.unique(ours["s"])) <= {0.0, 1.0}
    assert ours["ll"][-1] < ours["ll"][0]


# ----------------------------------------------------------------------------------------------
# Capsule networks (Sabour et al., 2017): squash, dynamic routing, margin loss, masked reconstruction
# ----------------------------------------------------------------------------------------------


def capsnet(m):
    torch, nn, F = m.torch, m.nn, m.F

    def squash(s, dim=-1):
        sq = (s ** 2).sum(dim=dim, keepdim=True)
        return sq / (1 + sq) * s / torch.sqrt(sq + 1e-8)

    class PrimaryCaps(nn.Module):
        def __init__(self):
            super().__init__()
            self.capsules = nn.ModuleList([nn.Conv2d(16, 4, 3, stride=2) for _ in range(8)])

        def forward(self, x):
            u = [c(x) for c in self.capsules]
            u = torch.stack(u, dim=1)
            u = u.view(x.size(0), 8, -1).transpose(1, 2)
            return squash(u)

    class DigitCaps(nn.Module):
        def __init__(self, in_caps, num_caps=5, in_dim=8, out_dim=12, iters=3):
            super().__init__()
            self.W = nn.Parameter(0.01 * torch.randn(1, in_caps, num_caps, out_dim, in_dim))
            self.iters = iters
            self.num_caps = num_caps

        def forward(self, x):
            B = x.size(0)
            x = x.unsqueeze(2).unsqueeze(4)
            u_hat = torch.matmul(self.W, x).squeeze(-1)
            b_ij = torch.zeros(B, x.size(1), self.num_caps, 1)
            u_hat_detached = u_hat.detach()
            for it in range(self.iters):
                c_ij = F.softmax(b_ij, dim=2)
                if it == self.iters - 1:
                    s_j = (c_ij * u_hat).sum(dim=1, keepdim=True)
                    v_j = squash(s_j)
                else:
                    s_j = (c_ij * u_hat_detached).sum(dim=1, keepdim=True)
                    v_j = squash(s_j)
                    b_ij = b_ij + (u_hat_detached * v_j).sum(dim=-1, keepdim=True)
            return v_j.squeeze(1), c_ij

    def margin_loss(v, labels):
        lengths = v.norm(dim=-1)
        left = F.relu(0.9 - lengths).pow(2)
        right = F.relu(lengths - 0.1).pow(2)
        T = F.one_hot(labels, 5).float()
        return (T * left + 0.5 * (1 - T) * right).sum(dim=1).mean()

    torch.manual_seed(0)
    conv = nn.Conv2d(1, 16, 5)
    prim = PrimaryCaps()
    x = torch.randn(3, 1, 12, 12)
    u = prim(F.relu(conv(x)))
    digit = DigitCaps(u.size(1))
    v, c = digit(u)
    labels = torch.tensor([0, 3, 4])
    loss = margin_loss(v, labels)
    lengths = v.norm(dim=-1)
    _, pred = lengths.max(dim=1)
    masked = (v * F.one_hot(pred, 5).unsqueeze(-1)).view(3, -1)
    decoder = nn.Sequential(nn.Linear(60, 32), nn.ReLU(inplace=True), nn.Linear(32, 144), nn.Sigmoid())
    rec = decoder(masked)
    rloss = F.mse_loss(rec, x.view(3, -1).sigmoid(), reduction='sum')
    total = loss + 0.0005 * rloss
    total.backward()
    return {"v": v, "u": u, "c": c, "loss": loss, "W": digit.W.grad, "conv": conv.weight.grad, "pred": pred,
            "rec": rec}


def test_capsnet():
    ours, _ = run_both(capsnet, rtol=1e-4, atol=1e-5)
    assert np.all(np.linalg.norm(ours["v"], axis=-1) < 1) and np.all(np.linalg.norm(ours["u"], axis=-1) < 1)
    np.testing.assert_allclose(ours["c"].sum(2), 1, rtol=1e-6)  # coupling coefficients: a softmax over routes
    np.testing.assert_array_equal(ours["pred"], np.linalg.norm(ours["v"], axis=-1).argmax(1))


def gramai_capsnet(m):
    torch, nn, F = m.torch, m.nn, m.F
    Variable = torch.autograd.Variable
    NUM_CLASSES, NUM_ROUTING_ITERATIONS = 4, 3

    def softmax(input, dim=1):
        transposed_input = input.transpose(dim, len(input.size()) - 1)
        softmaxed_output = F.softmax(transposed_input.contiguous().view(-1, transposed_input.size(-1)), dim=-1)
        return softmaxed_output.view(*transposed_input.size()).transpose(dim, len(input.size()) - 1)

    class CapsuleLayer(nn.Module):
        def __init__(self, num_capsules, num_route_nodes, in_channels, out_channels, kernel_size=None, stride=None,
                     num_iterations=NUM_ROUTING_ITERATIONS):
            super().__init__()
            self.num_route_nodes = num_route_nodes
            self.num_iterations = num_iterations
            self.num_capsules = num_capsules
            if num_route_nodes != -1:
                self.route_weights = nn.Parameter(torch.randn(num_capsules, num_route_nodes, in_channels, out_channels))
            else:
                self.capsules = nn.ModuleList(
                    [nn.Conv2d(in_channels, out_channels, kernel_size=kernel_size, stride=stride, padding=0) for _ in
                     range(num_capsules)])

        def squash(self, tensor, dim=-1):
            squared_norm = (tensor ** 2).sum(dim=dim, keepdim=True)
            scale = squared_norm / (1 + squared_norm)
            return scale * tensor / torch.sqrt(squared_norm)

        def forward(self, x):
            if self.num_route_nodes != -1:
                priors = x[None, :, :, None, :] @ self.route_weights[:, None, :, :, :]
                logits = Variable(torch.zeros(*priors.size()))
                for i in range(self.num_iterations):
                    probs = softmax(logits, dim=2)
                    outputs = self.squash((probs * priors).sum(dim=2, keepdim=True))
                    if i != self.num_iterations - 1:
                        delta_logits = (priors * outputs).sum(dim=-1, keepdim=True)
                        logits = logits + delta_logits
            else:
                outputs = [capsule(x).view(x.size(0), -1, 1) for capsule in self.capsules]
                outputs = torch.cat(outputs, dim=-1)
                outputs = self.squash(outputs)
            return outputs

    class CapsuleNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(in_channels=1, out_channels=16, kernel_size=5, stride=1)
            self.primary_capsules = CapsuleLayer(num_capsules=4, num_route_nodes=-1, in_channels=16, out_channels=4,
                                                 kernel_size=3, stride=2)
            self.digit_capsules = CapsuleLayer(num_capsules=NUM_CLASSES, num_route_nodes=4 * 3 * 3, in_channels=4,
                                               out_channels=8)
            self.decoder = nn.Sequential(nn.Linear(8 * NUM_CLASSES, 32), nn.ReLU(inplace=True), nn.Linear(32, 144),
                                         nn.Sigmoid())

        def forward(self, x, y=None):
            x = F.relu(self.conv1(x), inplace=True)
            x = self.primary_capsules(x)
            x = self.digit_capsules(x).squeeze().transpose(0, 1)
            classes = (x ** 2).sum(dim=-1) ** 0.5
            classes = F.softmax(classes, dim=-1)
            if y is None:
                _, max_length_indices = classes.max(dim=1)
                y = Variable(torch.sparse.torch.eye(NUM_CLASSES)).index_select(dim=0, index=max_length_indices.data)
            reconstructions = self.decoder((x * y[:, :, None]).contiguous().view(x.size(0), -1))
            return classes, reconstructions

    class CapsuleLoss(nn.Module):
        def __init__(self):
            super().__init__()
            self.reconstruction_loss = nn.MSELoss(reduction='sum')

        def forward(self, images, labels, classes, reconstructions):
            left = F.relu(0.9 - classes, inplace=True) ** 2
            right = F.relu(classes - 0.1, inplace=True) ** 2
            margin_loss = labels * left + 0.5 * (1. - labels) * right
            margin_loss = margin_loss.sum()
            assert torch.numel(images) == torch.numel(reconstructions)
            images = images.view(reconstructions.size()[0], -1)
            reconstruction_loss = self.reconstruction_loss(reconstructions, images)
            return (margin_loss + 0.0005 * reconstruction_loss) / images.size(0)

    torch.manual_seed(0)
    model = CapsuleNet()
    crit = CapsuleLoss()
    opt = torch.optim.Adam(model.parameters())
    x = torch.rand(3, 1, 12, 12)
    labels = torch.tensor([0, 2, 3])
    y = torch.sparse.torch.eye(NUM_CLASSES).index_select(dim=0, index=labels)
    ls = []
    for _ in range(2):
        classes, rec = model(x, y)
        loss = crit(x, y, classes, rec)
        opt.zero_grad(); loss.backward(); opt.step(); ls.append(loss.item())
    classes, rec = model(x)
    return {"ls": ls, "classes": classes, "rec": rec, "g": model.digit_capsules.route_weights.grad, "y": y}


def test_gramai_capsnet():
    ours, _ = run_both(gramai_capsnet, rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(ours["y"], np.eye(4)[[0, 2, 3]])
    np.testing.assert_allclose(ours["classes"].sum(1), 1, rtol=1e-6)
    assert np.all((ours["rec"] > 0) & (ours["rec"] < 1))


# ----------------------------------------------------------------------------------------------
# Mixture density networks (Bishop, 1994) through torch.distributions, and by hand
# ----------------------------------------------------------------------------------------------


def mdn(m):
    torch, nn, F = m.torch, m.nn, m.F
    D = m.torch.distributions

    class MDN(nn.Module):
        def __init__(self, K=3, dim=2):
            super().__init__()
            self.K, self.dim = K, dim
            self.body = nn.Sequential(nn.Linear(1, 32), nn.Tanh())
            self.pi = nn.Linear(32, K)
            self.mu = nn.Linear(32, K * dim)
            self.sigma = nn.Linear(32, K * dim)

        def forward(self, x):
            h = self.body(x)
            mix = D.Categorical(logits=self.pi(h))
            mu = self.mu(h).view(-1, self.K, self.dim)
            sig = F.softplus(self.sigma(h)).view(-1, self.K, self.dim) + 1e-3
            comp = D.Independent(D.Normal(mu, sig), 1)
            return D.MixtureSameFamily(mix, comp)

    torch.manual_seed(0)
    x = torch.rand(64, 1) * 2 - 1
    y = torch.cat([torch.sin(3 * x), x ** 2], 1) + 0.05 * torch.randn(64, 2)
    model = MDN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for i in range(5):
        dist = model(x)
        loss = -dist.log_prob(y).mean()
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    dist = model(x[:4])
    s2 = dist.sample((3,))
    out = {"losses": losses, "s": dist.sample(), "s2": s2, "mean": dist.mean, "var": dist.variance,
           "shapes": (tuple(dist.batch_shape), tuple(dist.event_shape)), "lp2": dist.log_prob(s2),
           "g": model.sigma.weight.grad}
    h = model.body(x)
    logpi = F.log_softmax(model.pi(h), -1)
    mu = model.mu(h).view(-1, 3, 2)
    sig = F.softplus(model.sigma(h)).view(-1, 3, 2) + 1e-3
    lp = D.Normal(mu, sig).log_prob(y.unsqueeze(1)).sum(-1)
    out["hand"] = -torch.logsumexp(logpi + lp, dim=-1).mean()
    out["lib"] = -model(x).log_prob(y).mean()
    mix = D.Categorical(probs=torch.tensor([[0.2, 0.8], [0.5, 0.5]]))
    comp = D.Normal(torch.tensor([[0., 1.], [2., 3.]]), torch.tensor([[1., 0.5], [0.3, 2.]]))
    gm = D.MixtureSameFamily(mix, comp)
    out["u_lp"] = gm.log_prob(torch.tensor([0.5, 2.5]))
    out["u_cdf"] = gm.cdf(torch.tensor([0.5, 2.5]))
    out["u_s"] = gm.sample((4,))
    return out


def test_mdn():
    ours, _ = run_both(mdn, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["hand"], ours["lib"], rtol=1e-5)
    assert ours["shapes"] == ((4,), (2,)) and ours["s2"].shape == (3, 4, 2) and ours["lp2"].shape == (3, 4)
    assert ours["losses"][-1] < ours["losses"][0]
    p = [0.2 * normal_pdf(0.5, 0, 1) + 0.8 * normal_pdf(0.5, 1, 0.5), 0.5 * normal_pdf(2.5, 2, 0.3) + 0.5 * normal_pdf(2.5, 3, 2)]
    np.testing.assert_allclose(ours["u_lp"], np.log(p), rtol=1e-5)
    c = [0.2 * normal_cdf(0.5, 0, 1) + 0.8 * normal_cdf(0.5, 1, 0.5), 0.5 * normal_cdf(2.5, 2, 0.3) + 0.5 * normal_cdf(2.5, 3, 2)]
    np.testing.assert_allclose(ours["u_cdf"], c, rtol=1e-5)


def mdn_families(m):
    torch, nn, F = m.torch, m.nn, m.F
    D = torch.distributions
    torch.manual_seed(0)
    out = {}
    B, K, d = 4, 3, 2
    logits = torch.randn(B, K, requires_grad=True)
    mu = torch.randn(B, K, d, requires_grad=True)
    A = torch.randn(B, K, d, d)
    tril = torch.tril(A, -1) + torch.diag_embed(F.softplus(torch.diagonal(A, dim1=-2, dim2=-1)) + 0.1)
    tril.requires_grad_()
    gm = D.MixtureSameFamily(D.Categorical(logits=logits), D.MultivariateNormal(mu, scale_tril=tril))
    y = torch.randn(B, d)
    lp = gm.log_prob(y)
    lp.sum().backward()
    out["lp"] = lp; out["gl"] = logits.grad; out["gmu"] = mu.grad; out["gt"] = tril.grad
    out["s"] = gm.sample((5,))
    out["mean"] = gm.mean; out["var"] = gm.variance
    out["shapes"] = (tuple(gm.batch_shape), tuple(gm.event_shape), tuple(gm.sample((2, 3)).shape))
    refused = []
    for f in [lambda: gm.rsample(), lambda: gm.entropy(),
              lambda: D.MixtureSameFamily(D.Categorical(logits=torch.randn(3)), D.Normal(torch.zeros(4), 1.0)),
              lambda: D.MixtureSameFamily(torch.randn(3), D.Normal(torch.zeros(3), 1.0)),
              lambda: D.Independent(D.Normal(torch.zeros(3), 1.0), 2)]:
        try:
            f()
            refused.append("ok")
        except (NotImplementedError, ValueError) as e:
            refused.append(type(e).__name__)
    out["refused"] = refused
    um = D.MixtureSameFamily(D.Categorical(probs=torch.tensor([0.3, 0.7])),
                             D.Normal(torch.tensor([-1.0, 2.0]), torch.tensor([0.5, 1.0])))
    lo, hi = torch.tensor(-10.), torch.tensor(10.)
    for _ in range(40):
        mid = (lo + hi) / 2
        if um.cdf(mid) < 0.5:
            lo = mid
        else:
            hi = mid
    out["median"] = mid
    ln = D.MixtureSameFamily(D.Categorical(logits=torch.zeros(2)),
                             D.Independent(D.LogNormal(torch.zeros(2, 3), torch.ones(2, 3)), 1))
    out["ln_s"] = ln.sample((2,))
    out["ln_lp"] = ln.log_prob(torch.ones(3))
    lr = D.LowRankMultivariateNormal(torch.zeros(2, 3), torch.randn(2, 3, 1), torch.ones(2, 3))
    lrm = D.MixtureSameFamily(D.Categorical(logits=torch.zeros(2)), lr)
    out["lr_s"] = lrm.sample((2,))
    out["lr_lp"] = lrm.log_prob(torch.ones(3))
    return out


def test_mdn_families():
    ours, _ = run_both(mdn_families, rtol=1e-5, atol=1e-6)
    assert ours["refused"] == ["NotImplementedError", "NotImplementedError", "ValueError", "ValueError", "ValueError"]
    assert ours["shapes"] == ((4,), (2,), (2, 3, 4, 2))
    med = float(ours["median"])
    np.testing.assert_allclose(0.3 * normal_cdf(med, -1, 0.5) + 0.7 * normal_cdf(med, 2, 1), 0.5, atol=1e-6)
    np.testing.assert_allclose(ours["ln_lp"], 3 * normal_logpdf(0.0), rtol=1e-6)  # log 1 = 0 under both components


# ----------------------------------------------------------------------------------------------
# Highway networks (Srivastava et al., 2015), gates biased towards carrying
# ----------------------------------------------------------------------------------------------


def highway(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Highway(nn.Module):
        def __init__(self, size, num_layers, f):
            super().__init__()
            self.num_layers = num_layers
            self.nonlinear = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            self.linear = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            self.gate = nn.ModuleList([nn.Linear(size, size) for _ in range(num_layers)])
            for g in self.gate:
                g.bias.data.fill_(-2.0)
            self.f = f

        def forward(self, x):
            for layer in range(self.num_layers):
                gate = torch.sigmoid(self.gate[layer](x))
                nonlinear = self.f(self.nonlinear[layer](x))
                linear = self.linear[layer](x)
                x = gate * nonlinear + (1 - gate) * linear
            return x

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(10, 16), Highway(16, 10, F.relu), nn.Linear(16, 3))
    x = torch.randn(20, 10)
    y = torch.randint(0, 3, (20,))
    opt = torch.optim.RMSprop(net.parameters(), lr=1e-3)
    ls = []
    for _ in range(3):
        loss = F.cross_entropy(net(x), y, label_smoothing=0.1)
        opt.zero_grad(); loss.backward(); opt.step(); ls.append(loss.item())
    glu = F.glu(torch.randn(4, 6), dim=-1)
    return {"ls": ls, "g": net[1].gate[0].weight.grad, "gb": net[1].gate[9].bias.grad, "glu": glu,
            "bias": net[1].gate[5].bias}


def test_highway():
    ours, _ = run_both(highway, rtol=1e-4, atol=1e-5)
    assert ours["ls"][-1] < ours["ls"][0]
    assert np.all(np.abs(ours["bias"] + 2.0) < 0.04)  # three RMSprop steps of lr 1e-3 from -2: ~0.01 each at most
    assert np.abs(ours["g"]).sum() > 0


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
# Decoding: temperature, top-k, nucleus (top-p), beam search pieces, many 256-way draws
# ----------------------------------------------------------------------------------------------


def decoding(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    out = {}
    logits = torch.randn(4, 12)
    sorted_logits, sorted_indices = torch.sort(logits, descending=True)
    cumulative_probs = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    sorted_indices_to_remove = cumulative_probs > 0.7
    sorted_indices_to_remove[..., 1:] = sorted_indices_to_remove[..., :-1].clone()
    sorted_indices_to_remove[..., 0] = 0
    indices_to_remove = sorted_indices_to_remove.scatter(1, sorted_indices, sorted_indices_to_remove)
    top_p = logits.clone()
    top_p[indices_to_remove] = -float('Inf')
    out["top_p"] = top_p
    out["top_p_draws"] = torch.multinomial(F.softmax(top_p, -1), 6, replacement=True)
    v, _ = torch.topk(logits, 3)
    top_k = logits.clone()
    top_k[top_k < v[:, [-1]]] = -float('Inf')
    out["top_k_draws"] = torch.multinomial(F.softmax(top_k / 0.8, -1), 2)
    V, beam = 6, 3
    scores = torch.log_softmax(torch.randn(beam, V), -1) + torch.tensor([[0.0], [-1.0], [-2.0]])
    top, idx = scores.view(-1).topk(beam)
    out["beam"] = (top, torch.div(idx, V, rounding_mode='floor'), idx % V)
    wide = F.softmax(torch.randn(600, 256) * 3, -1)
    out["wide"] = torch.multinomial(wide, 16, replacement=True)
    out["cat"] = torch.distributions.Categorical(logits=torch.randn(300, 256)).sample((8,))
    return out


def test_decoding():
    ours, _ = run_both(decoding, rtol=1e-6, atol=1e-7)
    top_p, draws = ours["top_p"], ours["top_p_draws"]
    assert np.all(np.isfinite(np.take_along_axis(top_p, draws, 1)))  # never a removed token
    assert np.all(np.isfinite(top_p).sum(1) >= 1)
    k_draws = ours["top_k_draws"]
    assert np.all(k_draws[:, 0] != k_draws[:, 1])  # without replacement
    assert ours["wide"].min() >= 0 and ours["wide"].max() <= 255 and ours["cat"].shape == (8, 300)


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


def fast_wavenet(m):
    """Fast WaveNet generation (Paine et al., 2016): each dilated layer keeps a queue of its past inputs, so a step
    costs two matrix products per layer; the incremental outputs must be the full causal convolution's."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    C, L = 4, 12
    dil = [1, 2, 4]
    convs = nn.ModuleList([nn.Conv1d(C, C, 2, dilation=d) for d in dil])
    x = torch.randn(1, C, L)
    h = x
    for c, d in zip(convs, dil):
        h = torch.tanh(c(F.pad(h, (d, 0)))) + h
    full = h
    queues = [torch.zeros(1, C, d) for d in dil]
    outs = []
    with torch.no_grad():
        for t in range(L):
            cur = x[:, :, t]
            for i, (c, d) in enumerate(zip(convs, dil)):
                prev = queues[i][:, :, 0]
                queues[i] = torch.cat([queues[i][:, :, 1:], cur.unsqueeze(-1)], dim=2)
                y = F.linear(prev, c.weight[:, :, 0]) + F.linear(cur, c.weight[:, :, 1], c.bias)
                cur = torch.tanh(y) + cur
            outs.append(cur)
    return {"full": full, "incremental": torch.stack(outs, -1)}


def test_fast_wavenet():
    ours, _ = run_both(fast_wavenet, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["incremental"], ours["full"], rtol=1e-5, atol=2e-6)
