# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Generative models (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same weights and
the same noise, comparing losses, samples, parameters and gradients. PixelCNN's masked convolutions (type A then B),
trained by cross-entropy over 4 intensity levels, and its causal receptive field; MADE (karpathy/pytorch-made):
masked linear layers, orderings, connectivity-agnostic training."""

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# PixelCNN's masked convolutions (type A then B), trained by cross-entropy over 4 intensity levels
# ----------------------------------------------------------------------------------------------


def make_pixelcnn(m):
    torch, nn = m.torch, m.nn

    class MaskedConv2d(nn.Conv2d):
        def __init__(self, mask_type, *args, **kwargs):
            super(MaskedConv2d, self).__init__(*args, **kwargs)
            assert mask_type in {'A', 'B'}
            self.register_buffer('mask', self.weight.data.clone())
            _, _, kH, kW = self.weight.size()
            self.mask.fill_(1)
            self.mask[:, :, kH // 2, kW // 2 + (mask_type == 'B'):] = 0
            self.mask[:, :, kH // 2 + 1:] = 0

        def forward(self, x):
            self.weight.data *= self.mask
            return super(MaskedConv2d, self).forward(x)

    fm = 8
    return nn.Sequential(
        MaskedConv2d('A', 1, fm, 5, 1, 2, bias=False), nn.BatchNorm2d(fm), nn.ReLU(True),
        MaskedConv2d('B', fm, fm, 3, 1, 1, bias=False), nn.BatchNorm2d(fm), nn.ReLU(True),
        nn.Conv2d(fm, 4, 1))


def pixelcnn(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(13)
    levels = rng.integers(0, 4, (6, 1, 7, 7))
    net = load(m, make_pixelcnn(m), weights)
    optimizer = optim.Adam(net.parameters())
    history = []
    for step in range(steps):
        input = torch.tensor(levels.astype(np.float32) / 3)
        target = torch.tensor(levels[:, 0])
        loss = F.cross_entropy(net(input), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    # sampling, pixel by pixel, with the probabilities fed to the same inverse-CDF draw
    sample = torch.zeros(2, 1, 7, 7)
    net.train(False)
    u = rng.random((2, 7, 7))
    with torch.no_grad():
        for i in range(7):
            for j in range(7):
                out = net(sample)
                probs = F.softmax(out[:, :, i, j], dim=1)
                cdf = probs.cumsum(1)
                k = (cdf < torch.tensor(u[:, i, j], dtype=torch.float32).unsqueeze(1)).sum(1).clamp(max=3)
                sample[:, :, i, j] = (k.float() / 3).unsqueeze(1)
    return {"history": history, "sample": sample, "weight0": net[0].weight.detach(),
            "grads": [p.grad for p in net.parameters()], "mask_b": net[3].mask[0, 0]}


def test_pixelcnn_masked_convolutions():
    weights = weights_of(make_pixelcnn)
    ours, _ = run_both(pixelcnn, weights, rtol=2e-5, atol=2e-6)
    assert ours["mask_b"].tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    w = ours["weight0"]
    assert (w[:, :, 2, 2:] == 0).all() and (w[:, :, 3:] == 0).all()  # type A sees no centre, nothing below
    assert set(np.unique(ours["sample"] * 3).round().astype(int)) <= {0, 1, 2, 3}


def test_pixelcnn_receptive_field_is_causal():
    """The gradient of one output pixel's logits reaches only the pixels above it and to its left."""
    torch = OURS.torch
    net = load(OURS, make_pixelcnn(OURS), weights_of(make_pixelcnn)).eval()
    x = torch.rand(1, 1, 7, 7, requires_grad=True)
    net(x)[0, :, 3, 3].sum().backward()
    g = x.grad[0, 0].abs().numpy()
    assert g[3, 3] == 0 and (g[3, 4:] == 0).all() and (g[4:] == 0).all()
    assert g[3, :3].sum() > 0 and g[:3].sum() > 0


# ----------------------------------------------------------------------------------------------
# MADE (karpathy/pytorch-made): masked linear layers, orderings, connectivity-agnostic training
# ----------------------------------------------------------------------------------------------


def make_made(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MaskedLinear(nn.Linear):
        """ same as Linear except has a configurable mask on the weights """

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
            self.nin = nin
            self.nout = nout
            self.hidden_sizes = hidden_sizes
            assert self.nout % self.nin == 0, "nout must be integer multiple of nin"

            self.net = []
            hs = [nin] + hidden_sizes + [nout]
            for h0, h1 in zip(hs, hs[1:]):
                self.net.extend([MaskedLinear(h0, h1), nn.ReLU()])
            self.net.pop()  # pop the last ReLU for the output layer
            self.net = nn.Sequential(*self.net)

            self.natural_ordering = natural_ordering
            self.num_masks = num_masks
            self.seed = 0  # for cycling through num_masks orderings

            self.m = {}
            self.update_masks()  # builds the initial self.m connectivity

        def update_masks(self):
            if self.m and self.num_masks == 1:
                return  # only a single seed, skip for efficiency
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
            for l, m_ in zip(layers, masks):
                l.set_mask(m_)

        def forward(self, x):
            return self.net(x)

    return MADE(6, [24, 24], 6, num_masks=2)


def made(m, weights, steps=4):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, make_made(m), weights)
    model.seed = 0
    model.update_masks()
    rng = np.random.default_rng(14)
    xtr = torch.tensor((rng.random((32, 6)) < 0.3).astype(np.float32))
    opt = optim.Adam(model.parameters(), 1e-3, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.StepLR(opt, step_size=45, gamma=0.1)
    history = []
    for step in range(steps):
        model.update_masks()
        xbhat = model(xtr)
        loss = F.binary_cross_entropy_with_logits(xbhat, xtr, reduction='sum') / xtr.size(0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        scheduler.step()
        history.append(loss.item())
    return {"history": history, "masks": [l.mask for l in model.net if hasattr(l, "mask")],
            "grads": [p.grad for p in model.parameters()], "mask_dtype": model.net[0].mask.dtype == torch.float32}


def test_made_autoregressive_masks():
    weights = weights_of(make_made)
    ours, _ = run_both(made, weights, rtol=1e-5, atol=1e-6)
    assert ours["mask_dtype"] and ours["masks"][0].shape == (24, 6)
    # the autoregressive property: output d depends only on inputs before d in the ordering
    torch = OURS.torch
    model = load(OURS, make_made(OURS), weights)
    x = torch.rand(1, 6, requires_grad=True)
    order = model.m[-1]
    for d in range(6):
        (g,) = torch.autograd.grad(model(x)[0, d], x)
        assert all(g[0, e].item() == 0 for e in range(6) if order[e] >= order[d])
