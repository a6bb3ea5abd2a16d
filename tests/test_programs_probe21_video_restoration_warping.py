# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Video and spatio-temporal programs, run as tests/probe21_video_common.py says. Interpolation, super-resolution and
warping: Super SloMo's frame interpolation in float32 (backward warping by ``grid_sample``, intermediate flows,
visibility maps, Charbonnier and ``torch.diff`` smoothness losses, a forward-backward occlusion mask); BasicVSR's
bidirectional propagation (``flow_warp``, ``pixel_shuffle``, mirror-extension check, per-group learning rates and
cosine annealing); temporal super-resolution by ``F.interpolate(mode='trilinear')`` with ``scale_factor`` tuples,
``recompute_scale_factor`` and ``align_corners`` both ways; space-time warping by a learnt 3-D displacement read
through a 5-D ``grid_sample`` in every padding mode, also where the flow diverged to nan or inf (PyTorch's volume
kernel reads such points outside, or at the edge with no gradient)."""

import numpy as np

from .probe21_video_common import clips
from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Super SloMo: frame interpolation by intermediate flows, backward warping and visibility maps
# ----------------------------------------------------------------------------------------------


def slomo(m):
    torch, nn, F = m.torch, m.nn, m.F

    class down(nn.Module):
        def __init__(self, inChannels, outChannels, filterSize):
            super().__init__()
            self.conv1 = nn.Conv2d(inChannels, outChannels, filterSize, stride=1, padding=int((filterSize - 1) / 2))
            self.conv2 = nn.Conv2d(outChannels, outChannels, filterSize, stride=1, padding=int((filterSize - 1) / 2))

        def forward(self, x):
            x = F.avg_pool2d(x, 2)
            x = F.leaky_relu(self.conv1(x), negative_slope=0.1)
            return F.leaky_relu(self.conv2(x), negative_slope=0.1)

    class up(nn.Module):
        def __init__(self, inChannels, outChannels):
            super().__init__()
            self.conv1 = nn.Conv2d(inChannels, outChannels, 3, stride=1, padding=1)
            self.conv2 = nn.Conv2d(2 * outChannels, outChannels, 3, stride=1, padding=1)

        def forward(self, x, skpCn):
            x = F.interpolate(x, scale_factor=2, mode='bilinear', align_corners=False)
            x = F.leaky_relu(self.conv1(x), negative_slope=0.1)
            return F.leaky_relu(self.conv2(torch.cat((x, skpCn), 1)), negative_slope=0.1)

    class UNet(nn.Module):
        def __init__(self, inChannels, outChannels):
            super().__init__()
            self.conv1 = nn.Conv2d(inChannels, 8, 7, stride=1, padding=3)
            self.conv2 = nn.Conv2d(8, 8, 7, stride=1, padding=3)
            self.down1 = down(8, 16, 5)
            self.down2 = down(16, 16, 3)
            self.up1 = up(16, 16)
            self.up2 = up(16, 8)
            self.conv3 = nn.Conv2d(8, outChannels, 3, stride=1, padding=1)

        def forward(self, x):
            x = F.leaky_relu(self.conv1(x), negative_slope=0.1)
            s1 = F.leaky_relu(self.conv2(x), negative_slope=0.1)
            s2 = self.down1(s1)
            x = self.down2(s2)
            x = self.up1(x, s2)
            x = self.up2(x, s1)
            return F.leaky_relu(self.conv3(x), negative_slope=0.1)

    class backWarp(nn.Module):
        def __init__(self, W, H, device):
            super().__init__()
            gridX, gridY = np.meshgrid(np.arange(W), np.arange(H))
            self.W = W
            self.H = H
            self.gridX = torch.tensor(gridX, requires_grad=False, device=device)
            self.gridY = torch.tensor(gridY, requires_grad=False, device=device)

        def forward(self, img, flow):
            u = flow[:, 0, :, :]
            v = flow[:, 1, :, :]
            x = self.gridX.unsqueeze(0).expand_as(u).float() + u
            y = self.gridY.unsqueeze(0).expand_as(v).float() + v
            x = 2 * (x / self.W - 0.5)
            y = 2 * (y / self.H - 0.5)
            grid = torch.stack((x, y), dim=3)
            return F.grid_sample(img, grid, align_corners=False)

    class SloMo(nn.Module):
        def __init__(self, side=8):
            super().__init__()
            self.flowComp = UNet(6, 4)
            self.ArbTimeFlowIntrp = UNet(20, 5)
            self.trainFlowBackWarp = backWarp(side, side, "cpu")

        def forward(self, I0, I1, t):
            flowOut = self.flowComp(torch.cat((I0, I1), dim=1))
            F_0_1 = flowOut[:, :2, :, :]
            F_1_0 = flowOut[:, 2:, :, :]
            fCoeff = [-t * (1 - t), t * t, (1 - t) * (1 - t), -t * (1 - t)]
            F_t_0 = fCoeff[0] * F_0_1 + fCoeff[1] * F_1_0
            F_t_1 = fCoeff[2] * F_0_1 + fCoeff[3] * F_1_0
            g_I0_F_t_0 = self.trainFlowBackWarp(I0, F_t_0)
            g_I1_F_t_1 = self.trainFlowBackWarp(I1, F_t_1)
            intrpOut = self.ArbTimeFlowIntrp(torch.cat((I0, I1, F_0_1, F_1_0, F_t_1, F_t_0, g_I1_F_t_1, g_I0_F_t_0), dim=1))
            F_t_0_f = intrpOut[:, :2, :, :] + F_t_0
            F_t_1_f = intrpOut[:, 2:4, :, :] + F_t_1
            V_t_0 = torch.sigmoid(intrpOut[:, 4:5, :, :])
            V_t_1 = 1 - V_t_0
            g_I0_F_t_0_f = self.trainFlowBackWarp(I0, F_t_0_f)
            g_I1_F_t_1_f = self.trainFlowBackWarp(I1, F_t_1_f)
            wCoeff = [1 - t, t]
            Ft_p = (wCoeff[0] * V_t_0 * g_I0_F_t_0_f + wCoeff[1] * V_t_1 * g_I1_F_t_1_f) / (wCoeff[0] * V_t_0 + wCoeff[1] * V_t_1)
            return Ft_p, F_0_1, F_1_0

    return SloMo()


def charbonnier(m, x, eps=1e-3):
    return m.torch.sqrt(x * x + eps * eps).mean()


def smoothness(m, flow):
    torch = m.torch
    return torch.diff(flow, dim=-1).abs().mean() + torch.diff(flow, dim=-2).abs().mean()


def occlusion_mask(m, flow_fw, flow_bw, warp, alpha1=0.01, alpha2=0.5):
    """UnFlow's forward-backward check: a pixel is occluded where the backward flow, warped to it, does not
    cancel its forward flow."""
    flow_bw_warped = warp(flow_bw, flow_fw)
    flow_diff = flow_fw + flow_bw_warped
    mag_sq = (flow_fw ** 2).sum(1, keepdim=True) + (flow_bw_warped ** 2).sum(1, keepdim=True)
    occ_thresh = alpha1 * mag_sq + alpha2
    return ((flow_diff ** 2).sum(1, keepdim=True) > occ_thresh).float()


def slomo_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, slomo(m), weights)  # float32, as the paper's code trains
    video = torch.from_numpy(clips(n=2, frames=3, seed=5).astype(np.float32))
    I0, It, I1 = video[:, :, 0], video[:, :, 1], video[:, :, 2]
    optimizer = optim.Adam(model.parameters(), lr=1e-4)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        Ft_p, F_0_1, F_1_0 = model(I0, I1, 0.5)
        warp = model.trainFlowBackWarp
        recnLoss = F.l1_loss(Ft_p, It)
        warpLoss = F.l1_loss(warp(I1, F_0_1), I0) + F.l1_loss(warp(I0, F_1_0), I1)
        loss = 204 * recnLoss + 102 * warpLoss + charbonnier(m, Ft_p - It) + smoothness(m, F_0_1) + smoothness(m, F_1_0)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        Ft_p, F_0_1, F_1_0 = model(I0, I1, 0.25)
        occ = occlusion_mask(m, F_0_1 * 10, F_1_0 * 10, model.trainFlowBackWarp)
    return {"history": history, "frame": Ft_p, "flow": F_0_1, "occ_fraction": occ.mean(),
            "grad": model.flowComp.conv1.weight.grad}


def test_super_slomo_frame_interpolation():
    weights = weights_of(slomo)
    ours, _ = run_both(slomo_training, weights, rtol=2e-4, atol=2e-5)
    assert ours["frame"].dtype == np.float32


def test_backward_warp_by_an_integer_flow_shifts_by_hand():
    """backWarp with align_corners=False maps pixel x to 2 (x / W - 0.5), half a pixel off PyTorch's pixel centres
    ((2x + 1) / W - 1): it samples at (x + u - 1/2, y + v - 1/2), a blend of four neighbours, as Super SloMo's
    code does. On the ramp image[y, x] = 8 y + x a flow of one pixel right samples 8 (y - 1/2) + x + 1/2, and the
    first row and the last column blend with the zero padding."""
    torch = OURS.torch
    model = slomo(OURS)
    image = torch.arange(64, dtype=torch.float32).reshape(1, 1, 8, 8)
    flow = torch.zeros(1, 2, 8, 8)
    flow[:, 0] = 1.0
    warped = model.trainFlowBackWarp(image, flow).numpy()[0, 0]
    ramp = image.numpy()[0, 0]
    np.testing.assert_allclose(warped[1:, :7], ramp[1:, :7] - 3.5, rtol=1e-6)
    np.testing.assert_allclose(warped[0, :7], (ramp[0, :7] + 0.5) / 2, rtol=1e-6)
    np.testing.assert_allclose(warped[1:, 7], (ramp[1:, 7] - 4) / 2, rtol=1e-6)  # half of (8 (y - 1/2) + 7)


# ----------------------------------------------------------------------------------------------
# BasicVSR: bidirectional propagation with flow warping and pixel-shuffle upsampling
# ----------------------------------------------------------------------------------------------


def flow_warp(m, x, flow, interpolation='bilinear', padding_mode='zeros', align_corners=True):
    """mmedit's flow_warp: flow in pixels, (n, h, w, 2) last."""
    torch, F = m.torch, m.F
    if x.size()[-2:] != flow.size()[1:3]:
        raise ValueError(f'The spatial sizes of input ({x.size()[-2:]}) and flow ({flow.size()[1:3]}) are not the same.')
    _, _, h, w = x.size()
    grid_y, grid_x = torch.meshgrid(torch.arange(0, h), torch.arange(0, w), indexing='ij')
    grid = torch.stack((grid_x, grid_y), 2).type_as(x)  # (w, h, 2)
    grid.requires_grad = False
    grid_flow = grid + flow
    grid_flow_x = 2.0 * grid_flow[:, :, :, 0] / max(w - 1, 1) - 1.0
    grid_flow_y = 2.0 * grid_flow[:, :, :, 1] / max(h - 1, 1) - 1.0
    grid_flow = torch.stack((grid_flow_x, grid_flow_y), dim=3)
    return F.grid_sample(x, grid_flow, mode=interpolation, padding_mode=padding_mode, align_corners=align_corners)


def basicvsr(m):
    torch, nn, F = m.torch, m.nn, m.F

    class ResidualBlockNoBN(nn.Module):
        def __init__(self, mid_channels=8, res_scale=1.0):
            super().__init__()
            self.res_scale = res_scale
            self.conv1 = nn.Conv2d(mid_channels, mid_channels, 3, 1, 1, bias=True)
            self.conv2 = nn.Conv2d(mid_channels, mid_channels, 3, 1, 1, bias=True)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            identity = x
            out = self.conv2(self.relu(self.conv1(x)))
            return identity + out * self.res_scale

    class ResidualBlocksWithInputConv(nn.Module):
        def __init__(self, in_channels, out_channels=8, num_blocks=1):
            super().__init__()
            main = [nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=True), nn.LeakyReLU(negative_slope=0.1, inplace=True)]
            main.extend(ResidualBlockNoBN(out_channels) for _ in range(num_blocks))
            self.main = nn.Sequential(*main)

        def forward(self, feat):
            return self.main(feat)

    class PixelShufflePack(nn.Module):
        def __init__(self, in_channels, out_channels, scale_factor, upsample_kernel):
            super().__init__()
            self.scale_factor = scale_factor
            self.upsample_conv = nn.Conv2d(in_channels, out_channels * scale_factor * scale_factor, upsample_kernel,
                                           padding=(upsample_kernel - 1) // 2)

        def forward(self, x):
            return F.pixel_shuffle(self.upsample_conv(x), self.scale_factor)

    class TinySpyNet(nn.Module):
        """A stand-in for SPyNet: a small flow regressor on the two frames."""

        def __init__(self):
            super().__init__()
            self.basic = nn.Sequential(nn.Conv2d(6, 8, 5, 1, 2), nn.ReLU(), nn.Conv2d(8, 2, 5, 1, 2))

        def forward(self, ref, supp):
            return self.basic(torch.cat([ref, supp], 1)) * 0.5

    class BasicVSRNet(nn.Module):
        def __init__(self, mid_channels=8, num_blocks=1):
            super().__init__()
            self.mid_channels = mid_channels
            self.spynet = TinySpyNet()
            self.backward_resblocks = ResidualBlocksWithInputConv(mid_channels + 3, mid_channels, num_blocks)
            self.forward_resblocks = ResidualBlocksWithInputConv(mid_channels + 3, mid_channels, num_blocks)
            self.fusion = nn.Conv2d(mid_channels * 2, mid_channels, 1, 1, 0, bias=True)
            self.upsample1 = PixelShufflePack(mid_channels, mid_channels, 2, upsample_kernel=3)
            self.conv_hr = nn.Conv2d(mid_channels, 8, 3, 1, 1)
            self.conv_last = nn.Conv2d(8, 3, 3, 1, 1)
            self.img_upsample = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=False)
            self.lrelu = nn.LeakyReLU(negative_slope=0.1, inplace=True)

        def check_if_mirror_extended(self, lrs):
            self.is_mirror_extended = False
            if lrs.size(1) % 2 == 0:
                lrs_1, lrs_2 = torch.chunk(lrs, 2, dim=1)
                if torch.norm(lrs_1 - lrs_2.flip(1)) == 0:
                    self.is_mirror_extended = True

        def compute_flow(self, lrs):
            n, t, c, h, w = lrs.size()
            lrs_1 = lrs[:, :-1, :, :, :].reshape(-1, c, h, w)
            lrs_2 = lrs[:, 1:, :, :, :].reshape(-1, c, h, w)
            flows_backward = self.spynet(lrs_1, lrs_2).view(n, t - 1, 2, h, w)
            if self.is_mirror_extended:
                flows_forward = None
            else:
                flows_forward = self.spynet(lrs_2, lrs_1).view(n, t - 1, 2, h, w)
            return flows_forward, flows_backward

        def forward(self, lrs):
            n, t, c, h, w = lrs.size()
            self.check_if_mirror_extended(lrs)
            flows_forward, flows_backward = self.compute_flow(lrs)
            # backward-time propagation
            outputs = []
            feat_prop = lrs.new_zeros(n, self.mid_channels, h, w)
            for i in range(t - 1, -1, -1):
                if i < t - 1:
                    flow = flows_backward[:, i, :, :, :]
                    feat_prop = flow_warp(m, feat_prop, flow.permute(0, 2, 3, 1))
                feat_prop = torch.cat([lrs[:, i, :, :, :], feat_prop], dim=1)
                feat_prop = self.backward_resblocks(feat_prop)
                outputs.append(feat_prop)
            outputs = outputs[::-1]
            # forward-time propagation and upsampling
            feat_prop = torch.zeros_like(feat_prop)
            for i in range(0, t):
                lr_curr = lrs[:, i, :, :, :]
                if i > 0:
                    if flows_forward is not None:
                        flow = flows_forward[:, i - 1, :, :, :]
                    else:
                        flow = flows_backward[:, -i, :, :, :]
                    feat_prop = flow_warp(m, feat_prop, flow.permute(0, 2, 3, 1))
                feat_prop = torch.cat([lr_curr, feat_prop], dim=1)
                feat_prop = self.forward_resblocks(feat_prop)
                out = torch.cat([outputs[i], feat_prop], dim=1)
                out = self.lrelu(self.fusion(out))
                out = self.lrelu(self.upsample1(out))
                out = self.lrelu(self.conv_hr(out))
                out = self.conv_last(out)
                base = self.img_upsample(lr_curr)
                out += base
                outputs[i] = out
            return torch.stack(outputs, dim=1)

    return BasicVSRNet()


class CharbonnierLoss:
    def __init__(self, loss_weight=1.0, eps=1e-12):
        self.loss_weight, self.eps = loss_weight, eps

    def __call__(self, m, pred, target):
        return self.loss_weight * m.torch.sqrt((pred - target) ** 2 + self.eps).mean()


def basicvsr_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, basicvsr(m), weights).double()
    hr = torch.from_numpy(clips(n=2, frames=3, side=8, seed=6)).permute(0, 2, 1, 3, 4).contiguous()  # (n, t, c, h, w)
    lrs = F.avg_pool3d(hr.transpose(1, 2), (1, 2, 2)).transpose(1, 2)
    optimizer = optim.Adam([{"params": [p for name, p in model.named_parameters() if not name.startswith("spynet")]},
                            {"params": model.spynet.parameters(), "lr": 2.5e-5}], lr=2e-4, betas=(0.9, 0.99))
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4, eta_min=1e-7)
    criterion = CharbonnierLoss()
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = criterion(m, model(lrs), hr)
        loss.backward()
        optimizer.step()
        scheduler.step()
        history.append(loss.item())
    mirrored = torch.cat([lrs, lrs.flip(1)], dim=1)
    out_mirrored = model(mirrored)
    is_mirrored = model.is_mirror_extended
    return {"history": history, "sr": model(lrs), "mirrored": is_mirrored, "out_mirrored": out_mirrored,
            "spy_grad": model.spynet.basic[0].weight.grad, "lrs": scheduler.get_last_lr()}


def test_basicvsr_bidirectional_propagation():
    weights = weights_of(basicvsr)
    ours, _ = run_both(basicvsr_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["mirrored"] is True
    assert ours["sr"].shape == (2, 3, 3, 8, 8)


def test_flow_warp_by_an_integer_flow_shifts_by_hand():
    """With align_corners=True and the grid normalised by (w - 1), an integer flow moves whole pixels."""
    torch = OURS.torch
    image = torch.arange(20, dtype=torch.float64).reshape(1, 1, 4, 5)
    flow = torch.zeros(1, 4, 5, 2, dtype=torch.float64)
    flow[..., 0], flow[..., 1] = 2.0, -1.0
    warped = flow_warp(OURS, image, flow).numpy()[0, 0]
    expected = np.zeros((4, 5))
    expected[1:, :3] = image.numpy()[0, 0, :3, 2:]
    np.testing.assert_allclose(warped, expected, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# Temporal super-resolution by trilinear interpolation, and TRN's multi-scale temporal relations
# ----------------------------------------------------------------------------------------------


def temporal_sr(m):
    nn, F = m.nn, m.F

    class TemporalSR(nn.Module):
        """Doubles the frame rate: trilinear upsampling in time (and a fractional rescale in space) as the base,
        plus a learnt 3-D residual; a coarse branch goes down and up again with align_corners=True."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.PReLU(8), nn.Conv3d(8, 3, 3, padding=1))
            self.coarse = nn.Conv3d(3, 3, (1, 3, 3), padding=(0, 1, 1))

        def forward(self, x):
            base = F.interpolate(x, scale_factor=(2, 1.5, 1.5), mode='trilinear', align_corners=False)
            coarse = F.interpolate(self.coarse(F.avg_pool3d(x, (1, 2, 2), ceil_mode=True)), size=base.shape[2:],
                                   mode='trilinear', align_corners=True)
            return base + self.body(base) + 0.5 * coarse

    return TemporalSR()


def temporal_sr_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, temporal_sr(m), weights).double()
    hr = torch.from_numpy(clips(n=2, frames=6, side=6, seed=10))
    lr_clip = hr[:, :, ::2]  # every other frame
    target = F.interpolate(hr, scale_factor=(1, 1.5, 1.5), mode='trilinear', align_corners=False,
                           recompute_scale_factor=True)
    lr_clip = lr_clip.clone().requires_grad_()
    optimizer = optim.Adamax(model.parameters(), lr=2e-3)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.smooth_l1_loss(model(lr_clip), target, beta=0.5)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "out": model(lr_clip), "input_grad": lr_clip.grad, "prelu_grad": model.body[1].weight.grad}


def test_temporal_super_resolution_by_trilinear_interpolation():
    weights = weights_of(temporal_sr)
    ours, _ = run_both(temporal_sr_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["out"].shape == (2, 3, 6, 9, 9)


def test_trilinear_doubling_in_time_by_hand():
    """align_corners=False doubles time by sampling at (t + 1/2) / 2 - 1/2: frames 1/4 and 3/4 of the way between
    inputs, clamped at the ends; the gradient of the sum gives each input frame its share of those weights."""
    torch, F = OURS.torch, OURS.F
    x = torch.tensor([0.0, 4.0, 8.0], dtype=torch.float64).view(1, 1, 3, 1, 1).requires_grad_()
    y = F.interpolate(x, scale_factor=(2, 1, 1), mode='trilinear', align_corners=False)
    np.testing.assert_allclose(y.detach().numpy().ravel(), [0, 1, 3, 5, 7, 8])
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy().ravel(), [1.75 + 0.25, 0.25 + 0.75 + 0.75 + 0.25, 0.25 + 1.75])
    z = F.interpolate(x, size=(5, 1, 1), mode='trilinear', align_corners=True)  # the end frames are kept
    np.testing.assert_allclose(z.detach().numpy().ravel(), [0, 2, 4, 6, 8])


# ----------------------------------------------------------------------------------------------
# Space-time warping: a learnt 3-D displacement field read by a 5-D grid_sample
# ----------------------------------------------------------------------------------------------


def spacetime_warper(m):
    torch, nn, F = m.torch, m.nn, m.F

    class SpaceTimeWarp(nn.Module):
        """Predicts a displacement (dt, dy, dx) in voxels for every output voxel and reads the clip there by
        trilinear grid_sample (grid order x, y, t; align_corners=True: -1 and 1 are the first and last frames)."""

        def __init__(self, size=(4, 8, 8)):
            super().__init__()
            self.flow = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.Tanh(), nn.Conv3d(8, 3, 3, padding=1))
            vectors = [torch.linspace(-1, 1, s, dtype=torch.float64) for s in size]
            grid_t, grid_y, grid_x = torch.meshgrid(vectors, indexing='ij')
            self.register_buffer('grid', torch.stack([grid_x, grid_y, grid_t], dim=-1).unsqueeze(0))
            self.register_buffer('scale', torch.tensor([2.0 / (s - 1) for s in size[::-1]], dtype=torch.float64))

        def forward(self, video, padding_mode='border'):
            displacement = self.flow(video)  # (B, 3, T, H, W): dt, dy, dx in voxels
            offsets = displacement.permute(0, 2, 3, 4, 1).flip(-1) * self.scale  # -> (B, T, H, W, 3): x, y, t
            warped = F.grid_sample(video, self.grid + offsets, mode='bilinear', padding_mode=padding_mode,
                                   align_corners=True)
            return warped, displacement

    return SpaceTimeWarp()


def spacetime_training(m, weights):
    torch, optim = m.torch, m.optim
    model = load(m, spacetime_warper(m), weights).double()
    video = torch.from_numpy(clips(n=2, frames=4, seed=16))
    target = torch.roll(video, shifts=(1, 1), dims=(2, 4))  # the clip a frame later and a pixel right
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        warped, displacement = model(video)
        photometric = torch.sqrt((warped - target) ** 2 + 1e-6).mean()  # Charbonnier
        smooth = sum(torch.diff(displacement, dim=d).abs().mean() for d in (2, 3, 4))
        loss = photometric + 0.1 * smooth
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    out = {"history": history, "grad": model.flow[2].weight.grad}
    for padding_mode in ('zeros', 'reflection'):
        out[padding_mode] = model(video, padding_mode)[0]
    # a flow that diverged in places (nan and inf offsets): PyTorch's volume kernel reads such points outside, or
    # at the edge under border/reflection padding, with no gradient
    diverged = torch.zeros(2, 4, 8, 8, 3, dtype=torch.float64)
    diverged[0, 1, 2, 3] = float('nan')
    diverged[1, 2, 5, 6, 2] = float('inf')
    diverged.requires_grad_()
    clip = video.clone().requires_grad_()
    for padding_mode in ('zeros', 'border', 'reflection'):
        warped = m.F.grid_sample(clip, model.grid + diverged, padding_mode=padding_mode, align_corners=True)
        out[f"diverged_{padding_mode}"] = warped
        out[f"diverged_grads_{padding_mode}"] = torch.autograd.grad(warped.pow(2).sum(), [clip, diverged])
    return out


def test_spacetime_warping_by_5d_grid_sample():
    weights = weights_of(spacetime_warper)
    ours, _ = run_both(spacetime_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["zeros"].shape == (2, 3, 4, 8, 8)
    for padding_mode in ('zeros', 'border', 'reflection'):  # chainrule gave nan at those points
        assert np.isfinite(ours[f"diverged_{padding_mode}"]).all()
        assert all(np.isfinite(g).all() for g in ours[f"diverged_grads_{padding_mode}"])
    assert (ours["diverged_zeros"][0, :, 1, 2, 3] == 0).all()


def test_half_a_frame_of_displacement_blends_neighbouring_frames_by_hand():
    torch = OURS.torch
    model = spacetime_warper(OURS).double()
    video = torch.from_numpy(clips(n=1, frames=4, seed=17))
    dt = torch.zeros(1, 4, 8, 8, 3, dtype=torch.float64)
    dt[..., 2] = 0.5 * model.scale[2]  # half a frame later, in normalised units
    with torch.no_grad():
        same = OURS.F.grid_sample(video, model.grid, align_corners=True, padding_mode='border').numpy()
        later = OURS.F.grid_sample(video, model.grid + dt, align_corners=True, padding_mode='border').numpy()
    np.testing.assert_allclose(same, video.numpy(), rtol=1e-12, atol=1e-12)
    v = video.numpy()
    np.testing.assert_allclose(later[:, :, :3], (v[:, :, :3] + v[:, :, 1:]) / 2, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(later[:, :, 3], v[:, :, 3], rtol=1e-12, atol=1e-12)  # clamped at the last frame
