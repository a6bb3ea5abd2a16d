# ruff: noqa: B007, UP008  (the programs are kept as their authors wrote them)
"""Dense-prediction and image-synthesis programs, run as tests/probe15_dense_common.py says. RAFT (all-pairs
correlation pyramid, ``grid_sample`` lookup, ConvGRU, convex upsampling by ``F.unfold``, sequence loss, OneCycleLR)."""

import numpy as np

from .probe15_dense_common import F32
from .pytorch_programs import OURS, load, one_blas_thread, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# RAFT (optical flow): an all-pairs correlation volume by matmul and its avg_pool2d pyramid, looked up
# around the current flow by grid_sample (align_corners=True) over a meshgrid of offsets, a ConvGRU update
# operator iterated with the coordinates detached, convex upsampling (softmax over 9 neighbours of an
# F.unfold of the flow, then permute / reshape to 8x), the sequence loss with geometrically decaying weights
# and validity masks, AdamW with OneCycleLR (linear annealing, no momentum cycling) and gradient clipping
# ----------------------------------------------------------------------------------------------


def raft(m, fdim=16, hdim=8, cdim=8, corr_levels=2, corr_radius=2):
    nn, torch, F = m.nn, m.torch, m.F

    def encoder(out_dim):
        return nn.Sequential(
            nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.InstanceNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.InstanceNorm2d(12), nn.ReLU(inplace=True),
            nn.Conv2d(12, 16, 3, stride=2, padding=1), nn.InstanceNorm2d(16), nn.ReLU(inplace=True),
            nn.Conv2d(16, out_dim, 1))

    class ConvGRU(nn.Module):
        def __init__(self, hidden_dim, input_dim):
            super(ConvGRU, self).__init__()
            self.convz = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
            self.convr = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)
            self.convq = nn.Conv2d(hidden_dim + input_dim, hidden_dim, 3, padding=1)

        def forward(self, h, x):
            hx = torch.cat([h, x], dim=1)
            z = torch.sigmoid(self.convz(hx))
            r = torch.sigmoid(self.convr(hx))
            q = torch.tanh(self.convq(torch.cat([r * h, x], dim=1)))
            h = (1 - z) * h + z * q
            return h

    class SmallMotionEncoder(nn.Module):
        def __init__(self):
            super(SmallMotionEncoder, self).__init__()
            cor_planes = corr_levels * (2 * corr_radius + 1) ** 2
            self.convc1 = nn.Conv2d(cor_planes, 12, 1, padding=0)
            self.convf1 = nn.Conv2d(2, 8, 7, padding=3)
            self.convf2 = nn.Conv2d(8, 4, 3, padding=1)
            self.conv = nn.Conv2d(16, 10, 3, padding=1)

        def forward(self, flow, corr):
            cor = F.relu(self.convc1(corr))
            flo = F.relu(self.convf1(flow))
            flo = F.relu(self.convf2(flo))
            cor_flo = torch.cat([cor, flo], dim=1)
            out = F.relu(self.conv(cor_flo))
            return torch.cat([out, flow], dim=1)

    class UpdateBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = SmallMotionEncoder()
            self.gru = ConvGRU(hidden_dim=hdim, input_dim=12 + cdim)
            self.flow_head = nn.Sequential(nn.Conv2d(hdim, 16, 3, padding=1), nn.ReLU(inplace=True),
                                           nn.Conv2d(16, 2, 3, padding=1))
            self.mask = nn.Sequential(nn.Conv2d(hdim, 16, 3, padding=1), nn.ReLU(inplace=True),
                                      nn.Conv2d(16, 64 * 9, 1, padding=0))

        def forward(self, net, inp, corr, flow):
            motion_features = self.encoder(flow, corr)
            inp = torch.cat([inp, motion_features], dim=1)
            net = self.gru(net, inp)
            delta_flow = self.flow_head(net)
            mask = .25 * self.mask(net)  # scale mask to balence gradients
            return net, mask, delta_flow

    class RAFT(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden_dim, self.context_dim = hdim, cdim
            self.fnet = encoder(fdim)
            self.cnet = encoder(hdim + cdim)
            self.update_block = UpdateBlock()

    return RAFT()


def bilinear_sampler(m, img, coords):
    torch, F = m.torch, m.F
    H, W = img.shape[-2:]
    xgrid, ygrid = coords.split([1, 1], dim=-1)
    xgrid = 2 * xgrid / (W - 1) - 1
    ygrid = 2 * ygrid / (H - 1) - 1
    grid = torch.cat([xgrid, ygrid], dim=-1)
    img = F.grid_sample(img, grid, align_corners=True)
    return img


def coords_grid(torch, batch, ht, wd):
    coords = torch.meshgrid(torch.arange(ht), torch.arange(wd), indexing='ij')
    coords = torch.stack(coords[::-1], dim=0).float()
    return coords[None].repeat(batch, 1, 1, 1)


class CorrBlock:
    def __init__(self, m, fmap1, fmap2, num_levels=2, radius=2):
        self.m = m
        self.num_levels = num_levels
        self.radius = radius
        self.corr_pyramid = []
        corr = CorrBlock.corr(m.torch, fmap1, fmap2)
        batch, h1, w1, dim, h2, w2 = corr.shape
        corr = corr.reshape(batch * h1 * w1, dim, h2, w2)
        self.corr_pyramid.append(corr)
        for i in range(self.num_levels - 1):
            corr = m.F.avg_pool2d(corr, 2, stride=2)
            self.corr_pyramid.append(corr)

    def __call__(self, coords):
        torch = self.m.torch
        r = self.radius
        coords = coords.permute(0, 2, 3, 1)
        batch, h1, w1, _ = coords.shape
        out_pyramid = []
        for i in range(self.num_levels):
            corr = self.corr_pyramid[i]
            dx = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
            dy = torch.linspace(-r, r, 2 * r + 1, device=coords.device)
            delta = torch.stack(torch.meshgrid(dy, dx, indexing='ij'), axis=-1)
            centroid_lvl = coords.reshape(batch * h1 * w1, 1, 1, 2) / 2 ** i
            delta_lvl = delta.view(1, 2 * r + 1, 2 * r + 1, 2)
            coords_lvl = centroid_lvl + delta_lvl
            corr = bilinear_sampler(self.m, corr, coords_lvl)
            corr = corr.view(batch, h1, w1, -1)
            out_pyramid.append(corr)
        out = torch.cat(out_pyramid, dim=-1)
        return out.permute(0, 3, 1, 2).contiguous().float()

    @staticmethod
    def corr(torch, fmap1, fmap2):
        batch, dim, ht, wd = fmap1.shape
        fmap1 = fmap1.view(batch, dim, ht * wd)
        fmap2 = fmap2.view(batch, dim, ht * wd)
        corr = torch.matmul(fmap1.transpose(1, 2), fmap2)
        corr = corr.view(batch, ht, wd, 1, ht, wd)
        return corr / torch.sqrt(torch.tensor(dim).float())


def raft_forward(m, model, image1, image2, iters=3, flow_init=None):
    torch, F = m.torch, m.F
    image1 = 2 * (image1 / 255.0) - 1.0
    image2 = 2 * (image2 / 255.0) - 1.0
    image1 = image1.contiguous()
    image2 = image2.contiguous()
    hdim, cdim = model.hidden_dim, model.context_dim
    fmap = model.fnet(torch.cat([image1, image2], dim=0))
    fmap1, fmap2 = torch.split(fmap, [image1.shape[0], image1.shape[0]], dim=0)
    fmap1, fmap2 = fmap1.float(), fmap2.float()
    corr_fn = CorrBlock(m, fmap1, fmap2, radius=2)
    cnet = model.cnet(image1)
    net, inp = torch.split(cnet, [hdim, cdim], dim=1)
    net = torch.tanh(net)
    inp = torch.relu(inp)
    N, C, H, W = image1.shape
    coords0 = coords_grid(torch, N, H // 8, W // 8)
    coords1 = coords_grid(torch, N, H // 8, W // 8)
    if flow_init is not None:
        coords1 = coords1 + flow_init

    def upsample_flow(flow, mask):
        N, _, H, W = flow.shape
        mask = mask.view(N, 1, 9, 8, 8, H, W)
        mask = torch.softmax(mask, dim=2)
        up_flow = F.unfold(8 * flow, [3, 3], padding=1)
        up_flow = up_flow.view(N, 2, 9, 1, 1, H, W)
        up_flow = torch.sum(mask * up_flow, dim=2)
        up_flow = up_flow.permute(0, 1, 4, 2, 5, 3)
        return up_flow.reshape(N, 2, 8 * H, 8 * W)

    flow_predictions = []
    for itr in range(iters):
        coords1 = coords1.detach()
        corr = corr_fn(coords1)
        flow = coords1 - coords0
        net, up_mask, delta_flow = model.update_block(net, inp, corr, flow)
        coords1 = coords1 + delta_flow
        flow_up = upsample_flow(coords1 - coords0, up_mask)
        flow_predictions.append(flow_up)
    return flow_predictions


def sequence_loss(torch, flow_preds, flow_gt, valid, gamma=0.8, max_flow=400):
    n_predictions = len(flow_preds)
    flow_loss = 0.0
    mag = torch.sum(flow_gt ** 2, dim=1).sqrt()
    valid = (valid >= 0.5) & (mag < max_flow)
    for i in range(n_predictions):
        i_weight = gamma ** (n_predictions - i - 1)
        i_loss = (flow_preds[i] - flow_gt).abs()
        flow_loss += i_weight * (valid[:, None] * i_loss).mean()
    epe = torch.sum((flow_preds[-1] - flow_gt) ** 2, dim=1).sqrt()
    epe = epe.view(-1)[valid.view(-1)]
    metrics = {
        'epe': epe.mean().item(),
        '1px': (epe < 1).float().mean().item(),
        '3px': (epe < 3).float().mean().item(),
    }
    return flow_loss, metrics


def raft_training(m, weights, steps=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = load(m, raft(m), weights)
    rng = np.random.default_rng(17)
    image1 = torch.tensor(rng.uniform(0, 255, (2, 3, 32, 32)).astype(np.float32))
    image2 = torch.tensor(np.roll(image1.numpy(), 2, axis=3))
    flow_gt = torch.tensor(np.stack([np.full((2, 32, 32), 2.0), np.zeros((2, 32, 32))], 1).astype(np.float32))
    valid = torch.tensor((rng.uniform(size=(2, 32, 32)) > 0.1).astype(np.float32))
    optimizer = optim.AdamW(model.parameters(), lr=4e-4, weight_decay=1e-5, eps=1e-8)
    scheduler = optim.lr_scheduler.OneCycleLR(optimizer, 4e-4, 10 + 100, pct_start=0.05, cycle_momentum=False,
                                              anneal_strategy='linear')
    history = []
    for step in range(steps):
        optimizer.zero_grad()
        flow_predictions = raft_forward(m, model, image1, image2, iters=3)
        loss, metrics = sequence_loss(torch, flow_predictions, flow_gt, valid)
        loss.backward()
        norm = nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        history.append((loss.item(), metrics['epe'], metrics['1px'], norm.item(), scheduler.get_last_lr()[0]))
    grads = {n: p.grad for n, p in model.named_parameters()}
    return history, flow_predictions[-1], grads, model.state_dict()


def test_raft_optical_flow():
    weights = weights_of(raft)
    with one_blas_thread():
        ours, _ = run_both(raft_training, weights, **F32)
    history, flow, grads, state = ours
    assert flow.shape == (2, 2, 32, 32)


def test_raft_convex_upsampling_by_hand():
    torch, F = OURS.torch, OURS.F
    # a mask that puts all weight on the centre neighbour gives 8x nearest upsampling of 8 · flow
    flow = torch.tensor(np.random.default_rng(18).standard_normal((1, 2, 2, 3)).astype(np.float32))
    logits = np.full((1, 9, 8, 8, 2, 3), -1e4, dtype=np.float32)
    logits[:, 4] = 0.0
    mask = torch.tensor(logits.reshape(1, 9 * 64, 2, 3))
    N, _, H, W = flow.shape
    up_mask = torch.softmax(mask.view(N, 1, 9, 8, 8, H, W), dim=2)
    up_flow = F.unfold(8 * flow, [3, 3], padding=1).view(N, 2, 9, 1, 1, H, W)
    up = torch.sum(up_mask * up_flow, dim=2).permute(0, 1, 4, 2, 5, 3).reshape(N, 2, 8 * H, 8 * W)
    np.testing.assert_allclose(up.numpy(), 8 * flow.numpy().repeat(8, 2).repeat(8, 3), rtol=1e-6)
