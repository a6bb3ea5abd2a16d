# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""Neural fields and differentiable rendering (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights and data, comparing losses, outputs and gradients. Shape decoders: Occupancy Networks with
conditional batch norm; Convolutional Occupancy Networks (scatter_reduce mean into a voxel grid, a 3-D U-Net, 5-D
grid_sample); DeepSDF's auto-decoder (``Embedding(max_norm)``)."""

import numpy as np
import pytest

from .pytorch_programs import load, run_both, same_dropout_masks, weights_of

# ----------------------------------------------------------------------------------------------
# Occupancy Networks: a ResNet-PointNet encoder (max pooling over points), a decoder of ResnetBlockFC
# layers with conditional batch norm (CBatchNorm1d, gamma and beta from the latent code, as Conv1d),
# binary cross-entropy on occupancy logits, IoU
# ----------------------------------------------------------------------------------------------


def onet_net(m, c_dim=8, hidden=16):
    torch, nn, F = m.torch, m.nn, m.F

    def maxpool(x, dim=-1, keepdim=False):
        out, _ = x.max(dim=dim, keepdim=keepdim)
        return out

    class ResnetBlockFC(nn.Module):
        def __init__(self, size_in, size_out=None, size_h=None):
            super().__init__()
            if size_out is None:
                size_out = size_in
            if size_h is None:
                size_h = min(size_in, size_out)
            self.size_in, self.size_h, self.size_out = size_in, size_h, size_out
            self.fc_0 = nn.Linear(size_in, size_h)
            self.fc_1 = nn.Linear(size_h, size_out)
            self.actvn = nn.ReLU()
            if size_in == size_out:
                self.shortcut = None
            else:
                self.shortcut = nn.Linear(size_in, size_out, bias=False)
            nn.init.zeros_(self.fc_1.weight)

        def forward(self, x):
            net = self.fc_0(self.actvn(x))
            dx = self.fc_1(self.actvn(net))
            if self.shortcut is not None:
                x_s = self.shortcut(x)
            else:
                x_s = x
            return x_s + dx

    class ResnetPointnet(nn.Module):
        def __init__(self, c_dim=128, dim=3, hidden_dim=128):
            super().__init__()
            self.c_dim = c_dim
            self.fc_pos = nn.Linear(dim, 2 * hidden_dim)
            self.block_0 = ResnetBlockFC(2 * hidden_dim, hidden_dim)
            self.block_1 = ResnetBlockFC(2 * hidden_dim, hidden_dim)
            self.fc_c = nn.Linear(hidden_dim, c_dim)
            self.actvn = nn.ReLU()
            self.pool = maxpool

        def forward(self, p):
            batch_size, T, D = p.size()
            net = self.fc_pos(p)
            net = self.block_0(net)
            pooled = self.pool(net, dim=1, keepdim=True).expand(net.size())
            net = torch.cat([net, pooled], dim=2)
            net = self.block_1(net)
            net = self.pool(net, dim=1)
            c = self.fc_c(self.actvn(net))
            return c

    class CBatchNorm1d(nn.Module):
        def __init__(self, c_dim, f_dim, norm_method='batch_norm'):
            super().__init__()
            self.c_dim = c_dim
            self.f_dim = f_dim
            self.conv_gamma = nn.Conv1d(c_dim, f_dim, 1)
            self.conv_beta = nn.Conv1d(c_dim, f_dim, 1)
            self.bn = nn.BatchNorm1d(f_dim, affine=False)
            self.reset_parameters()

        def reset_parameters(self):
            nn.init.zeros_(self.conv_gamma.weight)
            nn.init.zeros_(self.conv_beta.weight)
            nn.init.ones_(self.conv_gamma.bias)
            nn.init.zeros_(self.conv_beta.bias)

        def forward(self, x, c):
            assert (x.size(0) == c.size(0))
            assert (c.size(1) == self.c_dim)
            if len(c.size()) == 2:
                c = c.unsqueeze(2)
            gamma = self.conv_gamma(c)
            beta = self.conv_beta(c)
            net = self.bn(x)
            out = gamma * net + beta
            return out

    class CResnetBlockConv1d(nn.Module):
        def __init__(self, c_dim, size_in, size_h=None, size_out=None):
            super().__init__()
            size_h = size_in if size_h is None else size_h
            size_out = size_in if size_out is None else size_out
            self.bn_0 = CBatchNorm1d(c_dim, size_in)
            self.bn_1 = CBatchNorm1d(c_dim, size_h)
            self.fc_0 = nn.Conv1d(size_in, size_h, 1)
            self.fc_1 = nn.Conv1d(size_h, size_out, 1)
            self.actvn = nn.ReLU()
            self.shortcut = None if size_in == size_out else nn.Conv1d(size_in, size_out, 1, bias=False)
            nn.init.zeros_(self.fc_1.weight)

        def forward(self, x, c):
            net = self.fc_0(self.actvn(self.bn_0(x, c)))
            dx = self.fc_1(self.actvn(self.bn_1(net, c)))
            x_s = self.shortcut(x) if self.shortcut is not None else x
            return x_s + dx

    class DecoderCBatchNorm(nn.Module):
        def __init__(self, dim=3, z_dim=0, c_dim=128, hidden_size=256, leaky=False):
            super().__init__()
            self.fc_p = nn.Conv1d(dim, hidden_size, 1)
            self.block0 = CResnetBlockConv1d(c_dim, hidden_size)
            self.block1 = CResnetBlockConv1d(c_dim, hidden_size)
            self.bn = CBatchNorm1d(c_dim, hidden_size)
            self.fc_out = nn.Conv1d(hidden_size, 1, 1)
            self.actvn = F.relu if not leaky else (lambda x: F.leaky_relu(x, 0.2))

        def forward(self, p, z, c, **kwargs):
            p = p.transpose(1, 2)
            net = self.fc_p(p)
            net = self.block0(net, c)
            net = self.block1(net, c)
            out = self.fc_out(self.actvn(self.bn(net, c)))
            out = out.squeeze(1)
            return out

    class OccupancyNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = ResnetPointnet(c_dim=c_dim, hidden_dim=hidden)
            self.decoder = DecoderCBatchNorm(c_dim=c_dim, hidden_size=hidden)

        def forward(self, p, inputs):
            c = self.encoder(inputs)
            return torch.distributions.Bernoulli(logits=self.decoder(p, None, c))

    return OccupancyNetwork()


def onet(m, weights, steps=4):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, onet_net(m), weights).double()
    rng = np.random.default_rng(47)
    B, T, P = 3, 20, 24
    radii = np.array([0.4, 0.6, 0.8])
    surface = rng.standard_normal((B, T, 3))
    surface = surface / np.linalg.norm(surface, axis=-1, keepdims=True) * radii[:, None, None]
    p = rng.uniform(-1, 1, (B, P, 3))
    occ = (np.linalg.norm(p, axis=-1) < radii[:, None]).astype(np.float64)
    inputs, p, occ = torch.tensor(surface), torch.tensor(p), torch.tensor(occ)
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for it in range(steps):
        model.train()
        optimizer.zero_grad()
        c = model.encoder(inputs)
        logits = model.decoder(p, None, c)
        loss_i = F.binary_cross_entropy_with_logits(logits, occ, reduction='none')
        loss = loss_i.sum(-1).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    model.eval()
    with torch.no_grad():
        p_out = model(p, inputs)
        occ_iou_hat_np = (p_out.probs >= 0.5).cpu().numpy()
    occ_np = (occ >= 0.5).cpu().numpy()
    iou = (occ_iou_hat_np & occ_np).sum(-1) / np.maximum((occ_iou_hat_np | occ_np).sum(-1), 1)
    return {"history": history, "probs": p_out.probs, "iou": iou,
            "grads": {n: p.grad for n, p in model.named_parameters()},
            "running": {n: b for n, b in model.named_buffers()}}


def test_occupancy_network_with_conditional_batch_norm():
    weights = weights_of(onet_net)
    ours, _ = run_both(onet, weights, rtol=1e-8, atol=1e-10)
    assert ours["history"][-1] < ours["history"][0]
    assert np.abs(ours["grads"]["decoder.bn.conv_gamma.weight"]).sum() > 0


# ----------------------------------------------------------------------------------------------
# DeepSDF's auto-decoder: per-shape latent codes (nn.Embedding with max_norm, renormalised in place at
# lookup), a weight-normed decoder with the latent re-injected mid-way, clamped L1 on SDF samples
# ----------------------------------------------------------------------------------------------


def deepsdf_net(m, latent_size=4, num_scenes=3, dropout=None, code_bound=0.5):
    torch, nn, F = m.torch, m.nn, m.F

    class Decoder(nn.Module):
        def __init__(self, latent_size, dims, dropout=None, dropout_prob=0.0, norm_layers=(), latent_in=(),
                     weight_norm=False, xyz_in_all=None, use_tanh=False, latent_dropout=False):
            super(Decoder, self).__init__()
            dims = [latent_size + 3] + dims + [1]
            self.num_layers = len(dims)
            self.norm_layers = norm_layers
            self.latent_in = latent_in
            self.latent_dropout = latent_dropout
            if self.latent_dropout:
                self.lat_dp = nn.Dropout(0.2)
            self.xyz_in_all = xyz_in_all
            self.weight_norm = weight_norm
            for layer in range(0, self.num_layers - 1):
                if layer + 1 in latent_in:
                    out_dim = dims[layer + 1] - dims[0]
                else:
                    out_dim = dims[layer + 1]
                    if self.xyz_in_all and layer != self.num_layers - 2:
                        out_dim -= 3
                if weight_norm and layer in self.norm_layers:
                    setattr(self, "lin" + str(layer), nn.utils.weight_norm(nn.Linear(dims[layer], out_dim)))
                else:
                    setattr(self, "lin" + str(layer), nn.Linear(dims[layer], out_dim))
                if (not weight_norm) and self.norm_layers is not None and layer in self.norm_layers:
                    setattr(self, "bn" + str(layer), nn.LayerNorm(out_dim))
            self.use_tanh = use_tanh
            if use_tanh:
                self.tanh = nn.Tanh()
            self.relu = nn.ReLU()
            self.dropout_prob = dropout_prob
            self.dropout = dropout
            self.th = nn.Tanh()

        def forward(self, input):
            xyz = input[:, -3:]
            if input.shape[1] > 3 and self.latent_dropout:
                latent_vecs = input[:, :-3]
                latent_vecs = F.dropout(latent_vecs, p=0.2, training=self.training)
                x = torch.cat([latent_vecs, xyz], 1)
            else:
                x = input
            for layer in range(0, self.num_layers - 1):
                lin = getattr(self, "lin" + str(layer))
                if layer in self.latent_in:
                    x = torch.cat([x, input], 1)
                elif layer != 0 and self.xyz_in_all:
                    x = torch.cat([x, xyz], 1)
                x = lin(x)
                if layer == self.num_layers - 2 and self.use_tanh:
                    x = self.tanh(x)
                if layer < self.num_layers - 2:
                    if (self.norm_layers is not None and layer in self.norm_layers and not self.weight_norm):
                        bn = getattr(self, "bn" + str(layer))
                        x = bn(x)
                    x = self.relu(x)
                    if self.dropout is not None and layer in self.dropout:
                        x = F.dropout(x, p=self.dropout_prob, training=self.training)
            if hasattr(self, "th"):
                x = self.th(x)
            return x

    class AutoDecoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = Decoder(latent_size, [16, 16, 16, 16], dropout=dropout, dropout_prob=0.2,
                                   norm_layers=[0, 1, 2, 3], latent_in=[2], weight_norm=True, xyz_in_all=False,
                                   latent_dropout=False)
            self.lat_vecs = torch.nn.Embedding(num_scenes, latent_size, max_norm=code_bound)
            torch.nn.init.normal_(self.lat_vecs.weight.data, 0.0, 1.0 / np.sqrt(latent_size))

    return AutoDecoder()


def deepsdf(m, weights, steps=4, clamp_dist=0.1, dropout=None):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, deepsdf_net(m, dropout=dropout), weights)
    decoder, lat_vecs = model.decoder, model.lat_vecs
    rng = np.random.default_rng(67)
    n_scenes, per_scene = 3, 16
    xyz = rng.uniform(-1, 1, (n_scenes, per_scene, 3)).astype(np.float32)
    radii = np.array([0.3, 0.5, 0.7], dtype=np.float32)
    sdf = np.linalg.norm(xyz, axis=-1) - radii[:, None]
    sdf_data = torch.tensor(np.concatenate([xyz, sdf[..., None]], -1))
    indices = torch.arange(n_scenes)
    loss_l1 = torch.nn.L1Loss(reduction="sum")
    optimizer_all = torch.optim.Adam([{"params": decoder.parameters(), "lr": 5e-4},
                                      {"params": lat_vecs.parameters(), "lr": 1e-3}])
    history = []
    torch.manual_seed(0)
    for epoch in range(steps):
        decoder.train()
        sdf_data_ = sdf_data.reshape(-1, 4)
        num_sdf_samples = sdf_data_.shape[0]
        xyz_ = sdf_data_[:, 0:3]
        sdf_gt = torch.clamp(sdf_data_[:, 3].unsqueeze(1), -clamp_dist, clamp_dist)
        idx = indices.unsqueeze(-1).repeat(1, per_scene).view(-1)
        optimizer_all.zero_grad()
        batch_vecs = lat_vecs(idx)
        input = torch.cat([batch_vecs, xyz_], dim=1)
        pred_sdf = decoder(input)
        pred_sdf = torch.clamp(pred_sdf, -clamp_dist, clamp_dist)
        chunk_loss = loss_l1(pred_sdf, sdf_gt) / num_sdf_samples
        l2_size_loss = torch.sum(torch.norm(batch_vecs, dim=1))
        reg_loss = (1e-4 * min(1, epoch / 100) * l2_size_loss) / num_sdf_samples
        chunk_loss = chunk_loss + reg_loss
        chunk_loss.backward()
        optimizer_all.step()
        history.append(chunk_loss.item())
    return {"history": history, "lat": lat_vecs.weight.detach(),
            "grads": {n: p.grad for n, p in model.named_parameters()}}


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")
@pytest.mark.parametrize("dropout", [None, pytest.param([0, 1, 2, 3], marks=pytest.mark.skipif(
    not same_dropout_masks(), reason="PyTorch's dropout masks are not chainrule's here"))])
def test_deepsdf_auto_decoder(dropout):
    weights = weights_of(lambda m: deepsdf_net(m, dropout=dropout))
    ours, _ = run_both(deepsdf, weights, dropout=dropout, rtol=1e-5, atol=1e-6)
    # max_norm renormalises the looked-up codes in place to the code bound (0.5, from up to 0.68), and each
    # Adam step after the last lookup moves a code by a few lr
    assert np.all(np.abs(np.linalg.norm(ours["lat"], axis=1) - 0.5) <= 1e-2)


# ----------------------------------------------------------------------------------------------
# Convolutional Occupancy Networks: point features averaged into a voxel grid (scatter_reduce 'mean', the
# torch_scatter.scatter_mean of the original), a small 3-D U-Net (Conv3d, GroupNorm, MaxPool3d, BatchNorm3d,
# ConvTranspose3d and a trilinear upsampling skip), features read back at query points by 5-D grid_sample
# ----------------------------------------------------------------------------------------------


def convonet_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class UNet3D(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Sequential(nn.Conv3d(4, 6, 3, padding=1), nn.GroupNorm(2, 6), nn.ReLU())
            self.down = nn.MaxPool3d(2)
            self.mid = nn.Sequential(nn.Conv3d(6, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU())
            self.up = nn.ConvTranspose3d(8, 6, 2, stride=2)
            self.dec = nn.Conv3d(12, 4, 3, padding=1)

        def forward(self, x):
            e = self.enc(x)
            mid = self.mid(self.down(e))
            u = self.up(mid)
            u2 = F.interpolate(mid, scale_factor=2, mode="trilinear", align_corners=False)
            return self.dec(torch.cat([e, u + u2[:, :6]], 1))

    class ConvONet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc_pos = nn.Linear(3, 4)
            self.unet3d = UNet3D()
            self.fc_out = nn.Linear(4, 1)

    return ConvONet()


def convonet(m, weights, steps=3, reso=4):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, convonet_net(m), weights).double()
    rng = np.random.default_rng(83)
    p = torch.tensor(rng.uniform(-0.5, 0.5, (1, 30, 3)))
    query = torch.tensor(rng.uniform(-0.55, 0.55, (1, 12, 3)))
    occ = torch.tensor((np.linalg.norm(query.numpy()[0], axis=-1) < 0.4).astype(np.float64))[None]

    def normalize_3d_coordinate(p, padding=0.1):
        p_nor = p / (1 + padding + 10e-4)
        p_nor = p_nor + 0.5
        p_nor = torch.where(p_nor >= 1, torch.full_like(p_nor, 1 - 10e-4), p_nor)
        p_nor = torch.where(p_nor < 0, torch.zeros_like(p_nor), p_nor)
        return p_nor

    def coordinate2index(x, reso):
        x = (x * reso).long()
        return x[:, :, 0] + reso * (x[:, :, 1] + reso * x[:, :, 2])

    def generate_grid_features(p, c):
        p_nor = normalize_3d_coordinate(p.clone())
        index = coordinate2index(p_nor, reso)
        fea_grid = c.new_zeros(p.size(0), c.size(-1), reso ** 3)
        c = c.permute(0, 2, 1)
        fea_grid = fea_grid.scatter_reduce(2, index[:, None].expand(-1, c.size(1), -1), c, reduce="mean",
                                           include_self=False)
        fea_grid = fea_grid.reshape(p.size(0), c.size(1), reso, reso, reso)
        return model.unet3d(fea_grid)

    def sample_grid_feature(p, c):
        p_nor = normalize_3d_coordinate(p.clone())
        p_nor = p_nor[:, :, None, None].float() if p.dtype == torch.float32 else p_nor[:, :, None, None]
        vgrid = 2.0 * p_nor - 1.0
        return F.grid_sample(c, vgrid, padding_mode='border', align_corners=True, mode='bilinear').squeeze(-1) \
            .squeeze(-1)

    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for it in range(steps):
        model.train()
        c = generate_grid_features(p, F.relu(model.fc_pos(p)))
        features = sample_grid_feature(query, c).transpose(1, 2)
        logits = model.fc_out(features).squeeze(-1)
        loss = F.binary_cross_entropy_with_logits(logits, occ, reduction='none').sum(-1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "logits": logits.detach(), "grads": {n: p.grad for n, p in model.named_parameters()},
            "running": {n: b for n, b in model.named_buffers()}}


def test_convolutional_occupancy_network():
    weights = weights_of(convonet_net)
    ours, _ = run_both(convonet, weights, rtol=1e-8, atol=1e-10)
    assert np.abs(ours["grads"]["fc_pos.weight"]).sum() > 0  # through scatter_reduce's mean into the grid
