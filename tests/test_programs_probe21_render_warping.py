# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Differentiable rendering and geometry programs in plain PyTorch (see tests/pytorch_programs.py), each run on
chainrule and on PyTorch from the same data and weights (float64 mostly, to about 1e-9; NeRF and the hash grid in
float32), comparing values, gradients and short optimisation trajectories, and checked by hand where they run alone.
Image warping: deformable convolution built from ``grid_sample`` and a strided convolution; flow warping (a meshgrid
grid written in place, border padding, occlusion masks) and a 3-D displacement field (reflection padding,
align_corners=False, gradients w.r.t. the grid); soft histograms (sigmoid bins, a Gaussian KDE, ``histc``,
``kl_div``) matched by Adam.

Every program agrees with PyTorch. What the probe found is pinned elsewhere: tests/test_avx_mathfun.py (randn's
float32 blocks of 16, an ulp off in one value in seven) and tests/test_probe21_render_fixes.py (shape refusals)."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Image warping: deformable convolution, flow warping, a 3-D transformer, a soft histogram
# ----------------------------------------------------------------------------------------------


def make_deform_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class DeformConv2d(nn.Module):
        """Deformable convolution v2 written with grid_sample: each of the k*k taps is sampled at its regular
        position plus a learnt offset, modulated by a sigmoid mask, and the taps are contracted with the weight
        as an unfolded convolution would be."""

        def __init__(self, inc, outc, kernel_size=3, padding=1, stride=1):
            super().__init__()
            self.k, self.padding, self.stride = kernel_size, padding, stride
            self.p_conv = nn.Conv2d(inc, 2 * kernel_size * kernel_size, 3, padding=1, stride=stride)
            nn.init.normal_(self.p_conv.weight, std=0.01)
            self.m_conv = nn.Conv2d(inc, kernel_size * kernel_size, 3, padding=1, stride=stride)
            self.conv = nn.Conv2d(inc, outc, kernel_size, stride=kernel_size, bias=False)

        def forward(self, x):
            B, C, H, W = x.shape
            offset = self.p_conv(x)  # (B, 2kk, Ho, Wo): (dy, dx) per tap
            mask = torch.sigmoid(self.m_conv(x))
            Ho, Wo = offset.shape[-2:]
            k = self.k
            ky, kx = torch.meshgrid(torch.arange(-(k - 1) // 2, (k - 1) // 2 + 1),
                                    torch.arange(-(k - 1) // 2, (k - 1) // 2 + 1), indexing="ij")
            oy, ox = torch.meshgrid(torch.arange(Ho) * self.stride, torch.arange(Wo) * self.stride, indexing="ij")
            base_y = (oy[None] + ky.reshape(-1, 1, 1)).to(x.dtype)  # (kk, Ho, Wo)
            base_x = (ox[None] + kx.reshape(-1, 1, 1)).to(x.dtype)
            py = base_y[None] + offset[:, 0::2]
            px = base_x[None] + offset[:, 1::2]
            grid = torch.stack([2 * px / (W - 1) - 1, 2 * py / (H - 1) - 1], dim=-1)  # (B, kk, Ho, Wo, 2)
            sampled = F.grid_sample(x, grid.reshape(B, k * k * Ho, Wo, 2), mode="bilinear", padding_mode="zeros",
                                    align_corners=True).reshape(B, C, k * k, Ho, Wo)
            sampled = sampled * mask[:, None]
            # (B, C, kk, Ho, Wo) -> tiles of k x k per output pixel, then a stride-k convolution
            tiles = sampled.reshape(B, C, k, k, Ho, Wo).permute(0, 1, 4, 2, 5, 3).reshape(B, C, Ho * k, Wo * k)
            return self.conv(tiles)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1)
            self.deform = DeformConv2d(4, 5)
            self.head = nn.Conv2d(5, 1, 1)

        def forward(self, x):
            return self.head(F.relu(self.deform(F.relu(self.conv(x)))))

    return Net()


def deformable_convolution(m, weights, steps=4):
    torch, F, optim = m.torch, m.F, m.optim
    net = load(m, make_deform_net(m), weights).double()
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.standard_normal((2, 2, 7, 8)))
    y = torch.from_numpy(rng.standard_normal((2, 1, 7, 8)))
    opt = optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    history = []
    for step in range(steps):
        opt.zero_grad()
        loss = F.smooth_l1_loss(net(x), y)
        loss.backward()
        opt.step()
        history.append(loss.item())
    # with zero offsets and a unit mask the layer is an ordinary convolution
    d = net.deform
    with torch.no_grad():
        d.p_conv.weight.zero_()
        d.p_conv.bias.zero_()
        d.m_conv.weight.zero_()
        d.m_conv.bias.fill_(20.0)
        h = torch.from_numpy(rng.standard_normal((1, 4, 5, 6)))
        as_deform = d(h)
        as_conv = F.conv2d(h, d.conv.weight, padding=1) * torch.sigmoid(torch.tensor(20.0, dtype=torch.float64))
    grads = {k: p.grad for k, p in net.named_parameters()}
    return {"history": history, "grads": grads, "as_deform": as_deform, "as_conv": as_conv}


def test_deformable_convolution_by_grid_sample():
    ours, _ = run_both(deformable_convolution, weights_of(make_deform_net), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["as_deform"], ours["as_conv"], rtol=1e-10, atol=1e-12)
    assert ours["history"][-1] < ours["history"][0]


def flow_warping(m, steps=20):
    """Recover a smooth flow field by gradient descent on the photometric error of a backward warp, with the
    grid built from a meshgrid plus the flow (normalised by (size - 1), align_corners=True) and an occlusion
    mask from warping ones; then the same for a 3-D volume with reflection padding and align_corners=False."""
    torch, F, optim = m.torch, m.F, m.optim
    rng = np.random.default_rng(11)
    H, W = 9, 10
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    img1 = np.sin(xx / 2.0) * np.cos(yy / 3.0) + 0.1 * xx / W
    true_flow = np.stack([0.6 + 0.1 * np.sin(yy / 4.0), -0.4 + 0.05 * xx / W])  # (2, H, W)
    img1_t = torch.from_numpy(img1)[None, None]

    def warp(x, flo, padding_mode="zeros"):
        B, C, H, W = x.size()
        xx = torch.arange(0, W).view(1, -1).repeat(H, 1)
        yy = torch.arange(0, H).view(-1, 1).repeat(1, W)
        xx = xx.view(1, 1, H, W).repeat(B, 1, 1, 1)
        yy = yy.view(1, 1, H, W).repeat(B, 1, 1, 1)
        grid = torch.cat((xx, yy), 1).to(x.dtype)
        vgrid = grid + flo
        vgrid[:, 0, :, :] = 2.0 * vgrid[:, 0, :, :].clone() / max(W - 1, 1) - 1.0
        vgrid[:, 1, :, :] = 2.0 * vgrid[:, 1, :, :].clone() / max(H - 1, 1) - 1.0
        vgrid = vgrid.permute(0, 2, 3, 1)
        output = F.grid_sample(x, vgrid, align_corners=True, padding_mode=padding_mode)
        mask = torch.ones(x.size(), dtype=x.dtype)
        mask = F.grid_sample(mask, vgrid, align_corners=True)
        mask = (mask > 0.9999).to(x.dtype)
        return output * mask, mask

    with torch.no_grad():
        img2, _ = warp(img1_t, torch.from_numpy(true_flow)[None], padding_mode="border")
    flow = torch.zeros(1, 2, H, W, dtype=torch.float64, requires_grad=True)
    opt = optim.Adam([flow], lr=0.1)
    history = []
    for step in range(steps):
        opt.zero_grad()
        warped, mask = warp(img1_t, flow, padding_mode="border")
        photo = (torch.sqrt((warped - img2) ** 2 + 1e-6) * mask).sum() / mask.sum()
        smooth = (flow[..., 1:, :] - flow[..., :-1, :]).abs().mean() + (flow[..., 1:] - flow[..., :-1]).abs().mean()
        loss = photo + 0.1 * smooth
        loss.backward()
        opt.step()
        history.append(loss.item())

    # a 3-D displacement field, reflection padding, align_corners=False, gradients w.r.t. the grid and the volume
    vol = torch.from_numpy(rng.standard_normal((1, 2, 4, 5, 6))).requires_grad_(True)
    disp = torch.from_numpy(0.3 * rng.standard_normal((1, 4, 5, 6, 3))).requires_grad_(True)
    d, h, w = torch.meshgrid(torch.linspace(-1, 1, 4, dtype=torch.float64), torch.linspace(-1, 1, 5, dtype=torch.float64),
                             torch.linspace(-1, 1, 6, dtype=torch.float64), indexing="ij")
    ident = torch.stack([w, h, d], dim=-1)[None]
    moved = {}
    for mode in ("bilinear", "nearest"):
        out = F.grid_sample(vol, ident * 1.3 + disp, mode=mode, padding_mode="reflection", align_corners=False)
        g_vol, g_disp = torch.autograd.grad((out * out.detach().flip(-1)).sum(), [vol, disp])
        moved[mode] = (out, g_vol, g_disp)
    return {"history": history, "flow": flow.detach(), "moved": moved}


def test_flow_warping_2d_and_3d():
    ours, _ = run_both(flow_warping, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < 0.7 * ours["history"][0]
    assert np.abs(ours["moved"]["nearest"][2]).max() == 0  # nearest sampling: no gradient w.r.t. the grid


def soft_histogram(m, steps=25):
    """A differentiable histogram (soft binning: differences of sigmoids at bin edges, and a Gaussian kernel
    density) whose image is pushed towards a target histogram, compared against torch.histc's hard counts."""
    torch, optim = m.torch, m.optim
    rng = np.random.default_rng(4)
    img = torch.from_numpy(rng.beta(2, 5, (1, 16, 16)))
    target = torch.from_numpy(np.histogram(rng.beta(5, 2, 4096), bins=8, range=(0, 1))[0] / 4096.0)
    edges = torch.linspace(0, 1, 9, dtype=torch.float64)
    centres = 0.5 * (edges[1:] + edges[:-1])

    def soft_hist(x, sigma=0.02):
        v = x.reshape(-1, 1)
        upper = torch.sigmoid((edges[1:] - v) / sigma)
        lower = torch.sigmoid((edges[:-1] - v) / sigma)
        return (upper - lower).sum(0) / v.shape[0]

    def kde_hist(x, bandwidth=0.05):
        v = x.reshape(-1, 1)
        k = torch.exp(-0.5 * ((v - centres) / bandwidth) ** 2)
        k = k / k.sum(1, keepdim=True)
        return k.mean(0)

    hard = torch.histc(img, bins=8, min=0, max=1) / img.numel()
    soft0 = soft_hist(img)
    logits = torch.logit(img.clamp(1e-4, 1 - 1e-4)).clone().requires_grad_(True)
    opt = optim.Adam([logits], lr=0.1)
    history = []
    for step in range(steps):
        opt.zero_grad()
        x = torch.sigmoid(logits)
        h = soft_hist(x)
        loss = ((h.cumsum(0) - target.cumsum(0)) ** 2).sum() + torch.nn.functional.kl_div(
            (kde_hist(x) + 1e-8).log(), target + 1e-8, reduction="sum")
        loss.backward()
        opt.step()
        history.append(loss.item())
    return {"hard": hard, "soft0": soft0, "history": history, "final": soft_hist(torch.sigmoid(logits)).detach()}


def test_soft_histogram_matching():
    ours, _ = run_both(soft_histogram, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["soft0"], ours["hard"], atol=0.05)
    assert ours["history"][-1] < 0.5 * ours["history"][0]
