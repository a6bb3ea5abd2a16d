# ruff: noqa: B007, B008, B023, E501, E741, E731, F841, N806, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Video and spatio-temporal programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the
same weights and clips, comparing outputs, gradients and short training trajectories, and checked without PyTorch
against values worked out by hand.

TimeSformer's divided space-time attention (a tubelet ``Conv3d`` embedding, a CLS token ``expand``-ed over the batch
and ``repeat``-ed over frames, temporal then spatial attention by ``reshape``/``permute`` between ``(b t) n d`` and
``(b n) t d``, learnable spatial and temporal position embeddings, ``trunc_normal_``) trained by AdamW with label
smoothing; a channel-separated network (ir-CSN: depthwise ``Conv3d(groups=channels)`` with temporal dilation,
``MaxPool3d`` with padding, dilation and ``ceil_mode``, ``BatchNorm3d``, Nesterov SGD); a video autoencoder over
``MaxPool3d(return_indices=True)`` / ``nn.MaxUnpool3d`` (its default output size, and a full ``Size`` as
``output_size``) with grouped ``ConvTranspose3d`` and ``output_padding``, and ``Dropout3d`` on an unbatched clip;
MoViNet-style causal ``Conv3d`` (time padded on the left by ``F.pad``, a cumulative-average squeeze-excitation)
whose chunked streaming with cached buffers equals the whole clip; a ConvLSTM encoder-forecaster (gates by
``torch.split``) trained with scheduled sampling (``torch.bernoulli`` with a seeded ``torch.Generator``); Super
SloMo's frame interpolation in float32 (backward warping by ``grid_sample``, intermediate flows, visibility maps,
Charbonnier and ``torch.diff`` smoothness losses, a forward-backward occlusion mask); BasicVSR's bidirectional
propagation (``flow_warp``, ``pixel_shuffle``, mirror-extension check, per-group learning rates and cosine
annealing); TSM's temporal shift by slicing and by an in-place ``autograd.Function`` writing through ``.data``,
temporal pooling by ``max_pool3d`` and TSN consensus; VideoMAE's tube masking (boolean-mask indexing, patch
targets normalised per patch); temporal super-resolution by ``F.interpolate(mode='trilinear')`` with
``scale_factor`` tuples, ``recompute_scale_factor`` and ``align_corners`` both ways; TRN's multi-scale relations
(``itertools.combinations`` of frames); MS-TCN action segmentation (dilated ``Conv1d`` stages, masks of padded
frames, the truncated smoothing loss, ``ignore_index``); temporal cycle-consistency (soft nearest neighbours,
cycle-back regression with its variance); a clip-sampling data pipeline (TSN segment jitter, seeded ``DataLoader``
shuffling, ``WeightedRandomSampler``, ``random_split`` by fractions); MoCoGAN (a ``GRUCell`` over motion codes,
spectrally normalised ``Conv3d``/``Conv2d`` discriminators, the hinge loss); and space-time warping by a learnt
3-D displacement read through a 5-D ``grid_sample`` in every padding mode, also where the flow diverged to nan or
inf (PyTorch's volume kernel reads such points outside, or at the edge with no gradient)."""

import itertools

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of


def clips(n=2, channels=3, frames=4, side=8, seed=0):
    """Synthetic clips: a bright square drifting one pixel a frame over noise, channels-first (B, C, T, H, W)."""
    rng = np.random.default_rng(seed)
    video = 0.1 * rng.standard_normal((n, channels, frames, side, side))
    for b in range(n):
        y, x = rng.integers(0, side // 2, 2)
        for t in range(frames):
            video[b, :, t, y:y + 3, (x + t) % side:(x + t) % side + 3] += 1.0
    return video


# ----------------------------------------------------------------------------------------------
# TimeSformer: divided space-time attention
# ----------------------------------------------------------------------------------------------


def timesformer(m):
    torch, nn = m.torch, m.nn

    class PatchEmbed(nn.Module):
        def __init__(self, img_size=8, patch_size=4, tubelet=1, in_chans=3, embed_dim=16):
            super().__init__()
            self.num_patches = (img_size // patch_size) ** 2
            self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(tubelet, patch_size, patch_size),
                                  stride=(tubelet, patch_size, patch_size))

        def forward(self, x):
            B, C, T, H, W = x.shape
            x = self.proj(x)  # B, D, T, h, w
            T, W = x.size(2), x.size(-1)
            x = x.flatten(3).permute(0, 2, 3, 1)  # B, T, N, D
            x = x.reshape(B * T, -1, x.size(-1))
            return x, T, W

    class Attention(nn.Module):
        def __init__(self, dim, num_heads=2, qkv_bias=False):
            super().__init__()
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = head_dim ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            return self.proj(x)

    class Block(nn.Module):
        def __init__(self, dim, num_heads):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim)
            self.attn = Attention(dim, num_heads, qkv_bias=True)
            self.temporal_norm1 = nn.LayerNorm(dim)
            self.temporal_attn = Attention(dim, num_heads, qkv_bias=True)
            self.temporal_fc = nn.Linear(dim, dim)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x, B, T, W):
            num_spatial_tokens = (x.size(1) - 1) // T
            H = num_spatial_tokens // W
            # temporal: (b (h w t)) -> ((b h w) t)
            xt = x[:, 1:, :]
            xt = xt.reshape(B, H, W, T, xt.size(-1)).reshape(B * H * W, T, xt.size(-1))
            res_temporal = self.temporal_attn(self.temporal_norm1(xt))
            res_temporal = res_temporal.reshape(B, H * W * T, res_temporal.size(-1))
            res_temporal = self.temporal_fc(res_temporal)
            xt = x[:, 1:, :] + res_temporal
            # spatial: ((b t) (h w)) with the cls token repeated over the frames
            init_cls_token = x[:, 0, :].unsqueeze(1)
            cls_token = init_cls_token.repeat(1, T, 1)
            cls_token = cls_token.reshape(B * T, cls_token.size(-1)).unsqueeze(1)
            xs = xt.reshape(B, H, W, T, xt.size(-1)).permute(0, 3, 1, 2, 4).reshape(B * T, H * W, xt.size(-1))
            xs = torch.cat((cls_token, xs), 1)
            res_spatial = self.attn(self.norm1(xs))
            cls_token = res_spatial[:, 0, :]
            cls_token = cls_token.reshape(B, T, cls_token.size(-1))
            cls_token = torch.mean(cls_token, 1, True)  # averaging over frames
            res_spatial = res_spatial[:, 1:, :]
            res_spatial = res_spatial.reshape(B, T, H, W, res_spatial.size(-1)).permute(0, 2, 3, 1, 4)
            res_spatial = res_spatial.reshape(B, H * W * T, res_spatial.size(-1))
            res = res_spatial
            x = xt
            x = torch.cat((init_cls_token, x), 1) + torch.cat((cls_token, res), 1)
            return x + self.mlp(self.norm2(x))

    class VisionTransformer(nn.Module):
        def __init__(self, num_classes=3, embed_dim=16, depth=2, num_heads=2, num_frames=4):
            super().__init__()
            self.patch_embed = PatchEmbed(embed_dim=embed_dim)
            num_patches = self.patch_embed.num_patches
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
            self.time_embed = nn.Parameter(torch.zeros(1, num_frames, embed_dim))
            self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for _ in range(depth)])
            self.norm = nn.LayerNorm(embed_dim)
            self.head = nn.Linear(embed_dim, num_classes)
            nn.init.trunc_normal_(self.pos_embed, std=.02)
            nn.init.trunc_normal_(self.cls_token, std=.02)
            for blk in self.blocks:  # temporal_fc starts at zero: the block starts as a per-frame ViT
                nn.init.constant_(blk.temporal_fc.weight, 0)
                nn.init.constant_(blk.temporal_fc.bias, 0)

        def forward_features(self, x):
            B = x.shape[0]
            x, T, W = self.patch_embed(x)
            cls_tokens = self.cls_token.expand(x.size(0), -1, -1)
            x = torch.cat((cls_tokens, x), dim=1)
            x = x + self.pos_embed
            # time embeddings: ((b t) n m) -> ((b n) t m)
            cls_tokens = x[:B, 0, :].unsqueeze(1)
            x = x[:, 1:]
            x = x.reshape(B, T, -1, x.size(-1)).permute(0, 2, 1, 3).reshape(-1, T, x.size(-1))
            x = x + self.time_embed
            x = x.reshape(B, -1, T, x.size(-1)).reshape(B, -1, x.size(-1))  # (b n t) m
            x = torch.cat((cls_tokens, x), dim=1)
            for blk in self.blocks:
                x = blk(x, B, T, W)
            x = self.norm(x)
            return x[:, 0]

        def forward(self, x):
            return self.head(self.forward_features(x))

    return VisionTransformer()


def timesformer_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, timesformer(m), weights).double()
    x = torch.from_numpy(clips())
    labels = torch.tensor([1, 2])
    optimizer = optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), labels, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "logits": model(x), "time_embed_grad": model.time_embed.grad,
            "temporal_fc_grad": model.blocks[0].temporal_fc.weight.grad, "cls_grad": model.cls_token.grad}


def test_timesformer_divided_space_time_attention():
    weights = weights_of(timesformer)
    ours, _ = run_both(timesformer_training, weights, rtol=1e-7, atol=1e-9)
    assert np.abs(ours["time_embed_grad"]).sum() > 0  # reached through the temporal attention and the reshapes
    assert ours["logits"].shape == (2, 3)


def test_timesformer_without_time_embedding_ignores_frame_order_by_hand():
    """With temporal_fc at zero (its initialisation) the temporal branch adds nothing, attention is spatial within
    each frame and the cls token is averaged over frames: without a time embedding, reversing the frames leaves the
    logits as they were; the time embedding is what tells the frames apart."""
    torch = OURS.torch
    model = load(OURS, timesformer(OURS), weights_of(timesformer)).double()
    x = torch.from_numpy(clips(n=1))
    with torch.no_grad():
        model.time_embed.zero_()
        forward, backward = model(x).numpy(), model(x.flip(2)).numpy()
        np.testing.assert_allclose(forward, backward, rtol=1e-12, atol=1e-12)
        # (rows differing by a constant would not do: every layer norm the time embedding reaches takes it away)
        model.time_embed.copy_(torch.from_numpy(np.random.default_rng(4).standard_normal((1, 4, 16))))
        assert np.abs(model(x).numpy() - model(x.flip(2)).numpy()).max() > 1e-3


# ----------------------------------------------------------------------------------------------
# ir-CSN: channel-separated 3-D convolutions
# ----------------------------------------------------------------------------------------------


def csn(m):
    nn = m.nn

    class Bottleneck(nn.Module):
        """ir-CSN's bottleneck: the 3x3x3 convolution is depthwise (groups = channels), here with a temporal
        dilation as in dilated video ResNets."""
        expansion = 2

        def __init__(self, inplanes, planes, stride=1, temporal_dilation=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv3d(inplanes, planes, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm3d(planes)
            self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=(1, stride, stride),
                                   padding=(temporal_dilation, 1, 1), dilation=(temporal_dilation, 1, 1),
                                   groups=planes, bias=False)
            self.bn2 = nn.BatchNorm3d(planes)
            self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
            self.bn3 = nn.BatchNorm3d(planes * self.expansion)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            identity = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            if self.downsample is not None:
                identity = self.downsample(x)
            out += identity
            return self.relu(out)

    class CSN(nn.Module):
        def __init__(self, num_classes=3):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv3d(3, 8, kernel_size=(3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2),
                                                bias=False),
                                      nn.BatchNorm3d(8), nn.ReLU(inplace=True))
            # a dilated, padded pool with ceil_mode: time 4 -> 3, height 4 -> 2, width 4 -> 3
            self.maxpool = nn.MaxPool3d(kernel_size=(2, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1),
                                        dilation=(1, 2, 1), ceil_mode=True)
            down = nn.Sequential(nn.Conv3d(8, 8, kernel_size=1, bias=False), nn.BatchNorm3d(8))
            self.layer1 = Bottleneck(8, 4, downsample=down)
            self.layer2 = Bottleneck(8, 4, temporal_dilation=2)
            self.drop = nn.Dropout3d(0.0)
            self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
            self.fc = nn.Linear(8, num_classes)

        def forward(self, x):
            x = self.maxpool(self.stem(x))
            x = self.layer2(self.layer1(x))
            x = self.drop(x)
            return self.fc(self.avgpool(x).flatten(1))

    return CSN()


def csn_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, csn(m), weights).double()
    x = torch.from_numpy(clips(n=3, frames=4, side=8, seed=1))
    labels = torch.tensor([0, 2, 1])
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    model.eval()
    pooled = model.maxpool(model.stem(x))
    return {"history": history, "pooled": pooled, "depthwise_grad": model.layer2.conv2.weight.grad,
            "running_var": model.layer1.bn2.running_var, "eval": model(x)}


def test_channel_separated_network_with_dilated_depthwise_conv3d():
    weights = weights_of(csn)
    ours, _ = run_both(csn_training, weights, rtol=1e-7, atol=1e-9)
    # ceil_mode: time (4 + 2 - 2) / 2 -> 2.0 + 1 = 3; height (dilated to 5) 0.5 -> 1 + 1 = 2; width 1.5 -> 2 + 1 = 3
    assert ours["pooled"].shape == (3, 8, 3, 2, 3)
    assert ours["depthwise_grad"].shape == (4, 1, 3, 3, 3)


# ----------------------------------------------------------------------------------------------
# A video autoencoder over max-pooling switches (MaxUnpool3d) and grouped transposed convolutions
# ----------------------------------------------------------------------------------------------


def switch_autoencoder(m):
    nn = m.nn

    class SwitchAE(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc1 = nn.Sequential(nn.Conv3d(3, 8, 3, padding=1), nn.ReLU())
            self.pool1 = nn.MaxPool3d((1, 2, 2), stride=(1, 2, 2), return_indices=True)
            self.enc2 = nn.Sequential(nn.Conv3d(8, 8, 3, padding=1, groups=2), nn.ReLU())
            self.pool2 = nn.MaxPool3d(kernel_size=(2, 3, 3), stride=(2, 2, 2), padding=(0, 1, 1), return_indices=True)
            self.unpool2 = nn.MaxUnpool3d(kernel_size=(2, 3, 3), stride=(2, 2, 2), padding=(0, 1, 1))
            self.dec2 = nn.Sequential(nn.ConvTranspose3d(8, 8, 3, padding=1, groups=4), nn.ReLU())
            self.unpool1 = nn.MaxUnpool3d((1, 2, 2))
            self.dec1 = nn.ConvTranspose3d(8, 3, 3, padding=1)
            # a learnt 2x temporal/spatial upsampler for the coarse code: output_padding makes 2x exact
            self.up = nn.ConvTranspose3d(8, 4, kernel_size=3, stride=2, padding=1, output_padding=1, groups=4)
            self.drop = nn.Dropout3d(0.5)

        def forward(self, x):
            h1 = self.enc1(x)
            p1, i1 = self.pool1(h1)
            h2 = self.enc2(p1)
            p2, i2 = self.pool2(h2)
            # the default size, (2 - 1) * 2 - 2 * 1 + 3 = 3, would not hold the 4 wide input: the full size is given
            d2 = self.unpool2(p2, i2, output_size=h2.size())
            d2 = self.dec2(d2)
            d1 = self.unpool1(d2, i1)  # the default size, (4 - 1) * 2 + 2 = 8, is the input's
            return self.dec1(self.drop(d1)), self.up(p2)

    return SwitchAE()


def switch_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, switch_autoencoder(m), weights).double()
    x = torch.from_numpy(clips(n=2, frames=4, side=8, seed=2))
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    model.drop.eval()  # the masks are drawn differently by the two libraries
    history = []
    for step in range(3):
        optimizer.zero_grad()
        recon, up = model(x)
        loss = F.mse_loss(recon, x) + 0.1 * up.pow(2).mean()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    recon, up = model(x)
    _, i1 = model.pool1(model.enc1(x))
    return {"history": history, "recon": recon, "up": up, "indices": i1,
            "grad": model.dec2[0].weight.grad, "up_grad": model.up.weight.grad}


def test_switch_autoencoder_with_max_unpool3d_default_size_and_grouped_transposed_conv():
    weights = weights_of(switch_autoencoder)
    ours, _ = run_both(switch_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["recon"].shape == (2, 3, 4, 8, 8)
    assert ours["up"].shape == (2, 4, 4, 4, 4)  # (2 - 1) * 2 - 2 + 3 + 1 = 4


def test_dropout3d_on_an_unbatched_clip_drops_whole_channels_by_hand():
    """A 4-D input to Dropout3d is one clip (C, T, H, W): each channel is kept whole (scaled by 1 / (1 - p)) or
    zeroed whole, as PyTorch treats it since 2.0 (no batch dimension)."""
    torch, nn = OURS.torch, OURS.nn
    torch.manual_seed(0)
    drop = nn.Dropout3d(p=0.5)
    x = torch.ones(16, 2, 3, 3)
    y = drop(x).numpy()
    per_channel = y.reshape(16, -1)
    assert set(np.unique(per_channel)) <= {0.0, 2.0}
    assert (per_channel.min(1) == per_channel.max(1)).all()  # whole channels
    assert 0 < (per_channel[:, 0] == 0).sum() < 16
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())


# ----------------------------------------------------------------------------------------------
# MoViNet-style causal convolutions: streaming frame by frame with a cached buffer
# ----------------------------------------------------------------------------------------------


def causal_net(m):
    torch, nn, F = m.torch, m.nn, m.F

    class CausalConv3d(nn.Module):
        """Pads time on the left only, so an output frame sees only the present and the past; in streaming mode
        the padding is the previous call's last frames instead of zeros."""

        def __init__(self, in_channels, out_channels, kernel_size, stride=(1, 1, 1), dilation=(1, 1, 1), groups=1):
            super().__init__()
            self.conv = nn.Conv3d(in_channels, out_channels, kernel_size, stride=stride, dilation=dilation,
                                  padding=(0, dilation[1] * (kernel_size[1] // 2), dilation[2] * (kernel_size[2] // 2)),
                                  groups=groups)
            self.time_pad = dilation[0] * (kernel_size[0] - 1)
            self.stream_buffer = None

        def reset(self):
            self.stream_buffer = None

        def forward(self, x, stream=False):
            if not stream:
                return self.conv(F.pad(x, (0, 0, 0, 0, self.time_pad, 0)))
            if self.stream_buffer is None:
                self.stream_buffer = torch.zeros_like(x[:, :, :1]).repeat(1, 1, self.time_pad, 1, 1)
            x = torch.cat([self.stream_buffer, x], dim=2)
            self.stream_buffer = x[:, :, -self.time_pad:].detach()
            return self.conv(x)

    class CausalModule(nn.Module):
        """The cumulative average over time (MoViNet's causal squeeze-excitation) by cumsum / frame count."""

        def __init__(self, channels):
            super().__init__()
            self.fc = nn.Conv3d(channels, channels, 1)
            self.sum_state = None
            self.count = 0

        def reset(self):
            self.sum_state, self.count = None, 0

        def forward(self, x, stream=False):
            frame_means = x.mean(dim=(3, 4), keepdim=True)
            cumsum = frame_means.cumsum(dim=2)
            if stream and self.sum_state is not None:
                cumsum = cumsum + self.sum_state
            counts = torch.arange(1, x.shape[2] + 1, dtype=x.dtype).view(1, 1, -1, 1, 1)
            if stream:
                counts = counts + self.count
                self.sum_state = cumsum[:, :, -1:].detach()
                self.count += x.shape[2]
            return x * torch.sigmoid(self.fc(cumsum / counts))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = CausalConv3d(3, 8, (3, 3, 3), stride=(1, 2, 2))
            self.c2 = CausalConv3d(8, 8, (3, 3, 3), dilation=(2, 1, 1), groups=8)
            self.se = CausalModule(8)
            self.head = nn.Conv3d(8, 2, 1)

        def reset(self):
            for module in self.modules():
                if module is not self and hasattr(module, "reset"):
                    module.reset()

        def forward(self, x, stream=False):
            x = F.hardswish(self.c1(x, stream))
            x = self.se(F.hardswish(self.c2(x, stream)), stream)
            return self.head(x).mean(dim=(3, 4))  # per-frame logits (B, classes, T)

    return Net()


def causal_streaming(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, causal_net(m), weights).double()
    x = torch.from_numpy(clips(n=2, frames=6, seed=4))
    optimizer = optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9)
    labels = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        whole = model(x)
        model.reset()
        streamed = torch.cat([model(chunk, stream=True) for chunk in x.split([1, 2, 3], dim=2)], dim=2)
        model.reset()
        prefix = model(x[:, :, :3])
    return {"history": history, "whole": whole, "streamed": streamed, "prefix": prefix}


def test_causal_conv3d_streaming_equals_the_whole_clip():
    weights = weights_of(causal_net)
    ours, _ = run_both(causal_streaming, weights, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours["streamed"], ours["whole"], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["prefix"], ours["whole"][:, :, :3], rtol=1e-10, atol=1e-12)  # causal


# ----------------------------------------------------------------------------------------------
# ConvLSTM video prediction: teacher forcing and scheduled sampling
# ----------------------------------------------------------------------------------------------


def convlstm_model(m):
    torch, nn = m.torch, m.nn

    class ConvLSTMCell(nn.Module):
        def __init__(self, input_dim, hidden_dim, kernel_size, bias=True):
            super().__init__()
            self.input_dim = input_dim
            self.hidden_dim = hidden_dim
            self.padding = kernel_size[0] // 2, kernel_size[1] // 2
            self.conv = nn.Conv2d(in_channels=self.input_dim + self.hidden_dim, out_channels=4 * self.hidden_dim,
                                  kernel_size=kernel_size, padding=self.padding, bias=bias)

        def forward(self, input_tensor, cur_state):
            h_cur, c_cur = cur_state
            combined = torch.cat([input_tensor, h_cur], dim=1)
            combined_conv = self.conv(combined)
            cc_i, cc_f, cc_o, cc_g = torch.split(combined_conv, self.hidden_dim, dim=1)
            i = torch.sigmoid(cc_i)
            f = torch.sigmoid(cc_f)
            o = torch.sigmoid(cc_o)
            g = torch.tanh(cc_g)
            c_next = f * c_cur + i * g
            h_next = o * torch.tanh(c_next)
            return h_next, c_next

        def init_hidden(self, batch_size, image_size):
            height, width = image_size
            return (torch.zeros(batch_size, self.hidden_dim, height, width, device=self.conv.weight.device,
                                dtype=self.conv.weight.dtype),
                    torch.zeros(batch_size, self.hidden_dim, height, width, device=self.conv.weight.device,
                                dtype=self.conv.weight.dtype))

    class Seq2Seq(nn.Module):
        def __init__(self, hidden=(6, 6)):
            super().__init__()
            self.encoder = nn.ModuleList([ConvLSTMCell(1, hidden[0], (3, 3)), ConvLSTMCell(hidden[0], hidden[1], (3, 3))])
            self.decoder = nn.ModuleList([ConvLSTMCell(1, hidden[0], (3, 3)), ConvLSTMCell(hidden[0], hidden[1], (3, 3))])
            self.out = nn.Conv2d(hidden[1], 1, kernel_size=1)

        def step(self, cells, frame, states):
            x = frame
            new_states = []
            for cell, state in zip(cells, states):
                h, c = cell(x, state)
                new_states.append((h, c))
                x = h
            return x, new_states

        def forward(self, inputs, future, targets=None, teacher_forcing_ratio=0.0, generator=None):
            b, seq_len, _, h, w = inputs.size()  # (B, T, C, H, W), batch_first
            states = [cell.init_hidden(b, (h, w)) for cell in self.encoder]
            for t in range(seq_len):
                _, states = self.step(self.encoder, inputs[:, t], states)
            frame = inputs[:, -1]
            outputs = []
            for t in range(future):
                top, states = self.step(self.decoder, frame, states)
                prediction = torch.sigmoid(self.out(top))
                outputs.append(prediction)
                if targets is not None:
                    # scheduled sampling, per example: the true frame with probability teacher_forcing_ratio
                    use_truth = torch.bernoulli(torch.full((b, 1, 1, 1), teacher_forcing_ratio, dtype=inputs.dtype),
                                                generator=generator)
                    frame = use_truth * targets[:, t] + (1 - use_truth) * prediction
                else:
                    frame = prediction
            return torch.stack(outputs, dim=1)

    return Seq2Seq()


def moving_squares(n=3, frames=6, side=8, seed=0):
    rng = np.random.default_rng(seed)
    video = np.zeros((n, frames, 1, side, side))
    for b in range(n):
        y, x = rng.integers(0, side - 2, 2)
        dy, dx = rng.choice([-1, 1], 2)
        for t in range(frames):
            video[b, t, 0, y:y + 2, x:x + 2] = 1.0
            if not 0 <= y + dy <= side - 2:
                dy = -dy
            if not 0 <= x + dx <= side - 2:
                dx = -dx
            y, x = y + dy, x + dx
    return video


def convlstm_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, convlstm_model(m), weights).double()
    video = torch.from_numpy(moving_squares())
    inputs, targets = video[:, :3], video[:, 3:]
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(1234)
    history, ratios = [], []
    for step in range(4):
        ratio = max(0.0, 1.0 - step / 3)  # linear decay: teacher forcing, then the model's own frames
        ratios.append(ratio)
        optimizer.zero_grad()
        predictions = model(inputs, future=3, targets=targets, teacher_forcing_ratio=ratio, generator=generator)
        loss = F.binary_cross_entropy(predictions, targets)
        loss.backward()
        m.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        rollout = model(inputs, future=3)
    return {"history": history, "rollout": rollout, "grad": model.encoder[0].conv.weight.grad,
            "next_draw": torch.rand(2, generator=generator)}


def test_convlstm_seq2seq_with_scheduled_sampling():
    weights = weights_of(convlstm_model)
    ours, _ = run_both(convlstm_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["rollout"].shape == (3, 3, 1, 8, 8)


def test_scheduled_sampling_at_ratio_one_is_teacher_forcing_by_hand():
    """At a ratio of 1 every draw keeps the true frame: the predictions are those of feeding the targets."""
    torch = OURS.torch
    model = load(OURS, convlstm_model(OURS), weights_of(convlstm_model)).double()
    video = torch.from_numpy(moving_squares())
    inputs, targets = video[:, :3], video[:, 3:]
    with torch.no_grad():
        sampled = model(inputs, 3, targets, 1.0, torch.Generator().manual_seed(0)).numpy()
        free = model(inputs, 3).numpy()
        states = [cell.init_hidden(3, (8, 8)) for cell in model.encoder]
        for t in range(3):
            _, states = model.step(model.encoder, inputs[:, t], states)
        fed = []
        for frame in [inputs[:, -1], targets[:, 0], targets[:, 1]]:
            top, states = model.step(model.decoder, frame, states)
            fed.append(torch.sigmoid(model.out(top)).numpy())
    np.testing.assert_allclose(sampled, np.stack(fed, 1), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sampled[:, 0], free[:, 0])  # the first prediction comes before any feeding
    assert not np.allclose(sampled[:, 1:], free[:, 1:])


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
# TSM: the temporal shift by slicing and by an in-place autograd.Function, temporal pooling, TSN consensus
# ----------------------------------------------------------------------------------------------


def tsm_modules(m):
    torch, nn, F = m.torch, m.nn, m.F

    class InplaceShift(torch.autograd.Function):
        """Shifts in place through .data (no copy of the activations), and shifts the gradient back likewise."""

        @staticmethod
        def forward(ctx, input, fold):
            ctx.fold_ = fold
            n, t, c, h, w = input.size()
            buffer = input.data.new(n, t, fold, h, w).zero_()
            buffer[:, :-1] = input.data[:, 1:, :fold]
            input.data[:, :, :fold] = buffer
            buffer.zero_()
            buffer[:, 1:] = input.data[:, :-1, fold: 2 * fold]
            input.data[:, :, fold: 2 * fold] = buffer
            return input

        @staticmethod
        def backward(ctx, grad_output):
            fold = ctx.fold_
            n, t, c, h, w = grad_output.size()
            buffer = grad_output.data.new(n, t, fold, h, w).zero_()
            buffer[:, 1:] = grad_output.data[:, :-1, :fold]
            grad_output.data[:, :, :fold] = buffer
            buffer.zero_()
            buffer[:, :-1] = grad_output.data[:, 1:, fold: 2 * fold]
            grad_output.data[:, :, fold: 2 * fold] = buffer
            return grad_output, None

    class TemporalShift(nn.Module):
        def __init__(self, net, n_segment=4, n_div=4, inplace=False):
            super().__init__()
            self.net, self.n_segment, self.fold_div, self.inplace = net, n_segment, n_div, inplace

        def forward(self, x):
            return self.net(self.shift(x, self.n_segment, fold_div=self.fold_div, inplace=self.inplace))

        @staticmethod
        def shift(x, n_segment, fold_div=3, inplace=False):
            nt, c, h, w = x.size()
            x = x.view(nt // n_segment, n_segment, c, h, w)
            fold = c // fold_div
            if inplace:
                out = InplaceShift.apply(x, fold)
            else:
                out = torch.zeros_like(x)
                out[:, :-1, :fold] = x[:, 1:, :fold]  # shift left
                out[:, 1:, fold: 2 * fold] = x[:, :-1, fold: 2 * fold]  # shift right
                out[:, :, 2 * fold:] = x[:, :, 2 * fold:]  # not shift
            return out.view(nt, c, h, w)

    class TemporalPool(nn.Module):
        def __init__(self, net, n_segment):
            super().__init__()
            self.net, self.n_segment = net, n_segment

        def forward(self, x):
            nt, c, h, w = x.size()
            x = x.view(nt // self.n_segment, self.n_segment, c, h, w).transpose(1, 2)  # n, c, t, h, w
            x = F.max_pool3d(x, kernel_size=(3, 1, 1), stride=(2, 1, 1), padding=(1, 0, 0))
            x = x.transpose(1, 2).contiguous().view(nt // 2, c, h, w)
            return self.net(x)

    class ConsensusModule(nn.Module):
        def __init__(self, consensus_type, dim=1):
            super().__init__()
            self.consensus_type, self.dim = consensus_type, dim

        def forward(self, input):
            if self.consensus_type == 'avg':
                return input.mean(dim=self.dim, keepdim=True)
            return input

    class BasicBlock(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)

        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            return F.relu(x + self.bn2(self.conv2(out)))

    class TSN(nn.Module):
        def __init__(self, num_class=3, num_segments=4, inplace=False):
            super().__init__()
            self.num_segments = num_segments
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
            self.layer1 = BasicBlock(8)
            self.layer2 = BasicBlock(8)
            # 'blockres' placement: the shift goes before the first conv of each residual branch
            self.layer1.conv1 = TemporalShift(self.layer1.conv1, n_segment=num_segments, inplace=inplace)
            self.layer2.conv1 = TemporalShift(self.layer2.conv1, n_segment=num_segments // 2, inplace=inplace)
            self.layer2 = TemporalPool(self.layer2, num_segments)
            self.new_fc = nn.Linear(8, num_class)
            self.consensus = ConsensusModule('avg')

        def forward(self, input):
            # input: (B, T * C, H, W) as TSN's data loader stacks the segments
            x = self.stem(input.view((-1, 3) + input.size()[-2:]))
            x = self.layer2(self.layer1(x))
            base_out = self.new_fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
            base_out = base_out.view((-1, self.num_segments // 2) + base_out.size()[1:])  # halved by the pool
            return self.consensus(base_out).squeeze(1)

    return TemporalShift, TSN


def tsm_net(m):
    return tsm_modules(m)[1]()


def tsm_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    TemporalShift, TSN = tsm_modules(m)
    video = clips(n=2, frames=4, seed=7)  # (B, C, T, H, W) -> TSN's (B, T * C, H, W)
    x = torch.from_numpy(video).transpose(1, 2).reshape(2, 12, 8, 8)
    labels = torch.tensor([2, 1])
    results = {}
    for inplace in (False, True):
        model = load(m, TSN(inplace=inplace), weights).double()
        optimizer = optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
        history = []
        for step in range(3):
            optimizer.zero_grad()
            loss = F.cross_entropy(model(x), labels)
            loss.backward()
            m.nn.utils.clip_grad_norm_(model.parameters(), 20)
            optimizer.step()
            history.append(loss.item())
        results[f"history_{inplace}"] = history
        results[f"grad_{inplace}"] = model.stem[0].weight.grad
    # the module's own check: the in-place shift equals the sliced one, forward and backward
    tsm1 = TemporalShift(m.nn.Sequential(), n_segment=4, n_div=4, inplace=False)
    tsm2 = TemporalShift(m.nn.Sequential(), n_segment=4, n_div=4, inplace=True)
    x1 = torch.from_numpy(np.random.default_rng(0).random((2 * 4, 8, 3, 3))).requires_grad_()
    x2 = x1.clone()
    y1, y2 = tsm1(x1), tsm2(x2)
    grad1 = torch.autograd.grad((y1 ** 2).mean(), [x1])[0]
    grad2 = torch.autograd.grad((y2 ** 2).mean(), [x1])[0]
    results.update(y1=y1, y2=y2, grad1=grad1, grad2=grad2)
    return results


def test_tsm_in_place_shift_function_temporal_pool_and_consensus():
    weights = weights_of(tsm_net)
    ours, _ = run_both(tsm_training, weights, rtol=1e-7, atol=1e-9)
    # in a residual block the in-place shift also shifts the identity branch (it writes into the block's input
    # through .data), so the two networks train differently, in PyTorch as here
    assert not np.allclose(ours["history_True"][1:], ours["history_False"][1:])
    np.testing.assert_allclose(ours["y1"], ours["y2"], rtol=1e-12)
    np.testing.assert_allclose(ours["grad1"], ours["grad2"], rtol=1e-12)


def test_temporal_shift_moves_a_quarter_of_the_channels_each_way_by_hand():
    torch = OURS.torch
    TemporalShift, _ = tsm_modules(OURS)
    x = torch.arange(4.0).view(4, 1, 1, 1).expand(4, 4, 1, 1).contiguous()  # frame t holds t in every channel
    y = TemporalShift.shift(x, 4, fold_div=4).view(4, 4).numpy()
    np.testing.assert_array_equal(y[:, 0], [1, 2, 3, 0])  # from the next frame, zero at the end
    np.testing.assert_array_equal(y[:, 1], [0, 0, 1, 2])  # from the previous frame, zero at the start
    np.testing.assert_array_equal(y[:, 2:], np.arange(4.0)[:, None].repeat(2, 1))


# ----------------------------------------------------------------------------------------------
# VideoMAE: tube masking and normalised-pixel reconstruction
# ----------------------------------------------------------------------------------------------


def videomae(m):
    torch, nn = m.torch, m.nn

    def get_sinusoid_encoding_table(n_position, d_hid):
        def get_position_angle_vec(position):
            return [position / np.power(10000, 2 * (hid_j // 2) / d_hid) for hid_j in range(d_hid)]

        sinusoid_table = np.array([get_position_angle_vec(pos_i) for pos_i in range(n_position)])
        sinusoid_table[:, 0::2] = np.sin(sinusoid_table[:, 0::2])
        sinusoid_table[:, 1::2] = np.cos(sinusoid_table[:, 1::2])
        return torch.tensor(sinusoid_table, dtype=torch.float, requires_grad=False).unsqueeze(0)

    class PatchEmbed(nn.Module):
        def __init__(self, img_size=8, patch_size=4, in_chans=3, embed_dim=16, num_frames=4, tubelet_size=2):
            super().__init__()
            self.tubelet_size = int(tubelet_size)
            self.num_patches = (img_size // patch_size) ** 2 * (num_frames // self.tubelet_size)
            self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=(self.tubelet_size, patch_size, patch_size),
                                  stride=(self.tubelet_size, patch_size, patch_size))

        def forward(self, x):
            return self.proj(x).flatten(2).transpose(1, 2)

    class PretrainVisionTransformer(nn.Module):
        def __init__(self, embed_dim=16, decoder_dim=8, patch_size=4, tubelet_size=2):
            super().__init__()
            self.patch_embed = PatchEmbed(embed_dim=embed_dim, tubelet_size=tubelet_size)
            num_patches = self.patch_embed.num_patches
            self.register_buffer("pos_embed", get_sinusoid_encoding_table(num_patches, embed_dim), persistent=False)
            layer = nn.TransformerEncoderLayer(embed_dim, nhead=2, dim_feedforward=32, dropout=0.0, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.encoder = nn.TransformerEncoder(layer, num_layers=1, enable_nested_tensor=False)
            self.encoder_to_decoder = nn.Linear(embed_dim, decoder_dim, bias=False)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
            self.register_buffer("decoder_pos", get_sinusoid_encoding_table(num_patches, decoder_dim), persistent=False)
            self.decoder = nn.Sequential(nn.LayerNorm(decoder_dim), nn.Linear(decoder_dim, decoder_dim), nn.GELU(),
                                         nn.Linear(decoder_dim, 3 * tubelet_size * patch_size ** 2))
            nn.init.trunc_normal_(self.mask_token, std=.02)

        def forward(self, x, mask):
            # mask: (B, N) bool, True where masked; the same count in every row
            x = self.patch_embed(x)
            B, _, C = x.shape
            x = x + self.pos_embed.type_as(x).to(x.device).clone().detach()
            x_vis = x[~mask].reshape(B, -1, C)
            x_vis = self.encoder_to_decoder(self.encoder(x_vis))
            B, N, C = x_vis.shape
            expand_pos_embed = self.decoder_pos.expand(B, -1, -1).type_as(x).to(x.device).clone().detach()
            pos_emd_vis = expand_pos_embed[~mask].reshape(B, -1, C)
            pos_emd_mask = expand_pos_embed[mask].reshape(B, -1, C)
            x_full = torch.cat([x_vis + pos_emd_vis, self.mask_token + pos_emd_mask], dim=1)
            return self.decoder(x_full)[:, -pos_emd_mask.shape[1]:]  # only the masked tokens

    return PretrainVisionTransformer()


class TubeMaskingGenerator:
    """The same spatial mask on every temporal slice (tube masking), drawn by a seeded NumPy generator."""

    def __init__(self, input_size, mask_ratio, rng):
        self.frames, self.height, self.width = input_size
        self.num_patches_per_frame = self.height * self.width
        self.num_masks_per_frame = int(mask_ratio * self.num_patches_per_frame)
        self.rng = rng

    def __call__(self):
        mask_per_frame = np.hstack([np.zeros(self.num_patches_per_frame - self.num_masks_per_frame),
                                    np.ones(self.num_masks_per_frame)])
        self.rng.shuffle(mask_per_frame)
        return np.tile(mask_per_frame, (self.frames, 1)).flatten()


def videomae_targets(m, videos, patch_size=4, tubelet=2, normlize_target=True):
    torch = m.torch
    mean = torch.as_tensor((0.485, 0.456, 0.406), dtype=videos.dtype)[None, :, None, None, None]
    std = torch.as_tensor((0.229, 0.224, 0.225), dtype=videos.dtype)[None, :, None, None, None]
    unnorm_videos = videos * std + mean
    B, C, T, H, W = unnorm_videos.shape
    p0, p1, p2 = tubelet, patch_size, patch_size
    # rearrange 'b c (t p0) (h p1) (w p2) -> b (t h w) (p0 p1 p2) c'
    x = unnorm_videos.reshape(B, C, T // p0, p0, H // p1, p1, W // p2, p2)
    x = x.permute(0, 2, 4, 6, 3, 5, 7, 1).reshape(B, (T // p0) * (H // p1) * (W // p2), p0 * p1 * p2, C)
    if normlize_target:
        x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.flatten(2)  # 'b n p c -> b n (p c)'


def videomae_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, videomae(m), weights).double()
    videos = torch.from_numpy(clips(n=2, frames=4, seed=8))
    generator = TubeMaskingGenerator((2, 2, 2), 0.5, np.random.default_rng(0))
    bool_masked_pos = torch.from_numpy(np.stack([generator(), generator()])).to(torch.bool)
    optimizer = optim.AdamW(model.parameters(), lr=1.5e-4 * 2 / 256 * 100, betas=(0.9, 0.95), weight_decay=0.05)
    history = []
    for step in range(3):
        with torch.no_grad():
            videos_patch = videomae_targets(m, videos)
            B, _, C = videos_patch.shape
            labels = videos_patch[bool_masked_pos].reshape(B, -1, C)
        outputs = model(videos, bool_masked_pos)
        loss = F.mse_loss(outputs, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "labels": labels, "mask_token_grad": model.mask_token.grad,
            "proj_grad": model.patch_embed.proj.weight.grad}


def test_videomae_tube_masking_reconstruction():
    weights = weights_of(videomae)
    ours, _ = run_both(videomae_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["labels"].shape == (2, 4, 96)  # half of 8 tubes masked, 2 x 4 x 4 pixels x 3 channels each
    assert np.abs(ours["mask_token_grad"]).sum() > 0


def test_tube_targets_are_normalised_per_patch_by_hand():
    torch = OURS.torch
    videos = torch.from_numpy(clips(n=1, frames=4, seed=9))
    targets = videomae_targets(OURS, videos).numpy()  # (1, 8, 96): (p0 p1 p2) then c
    by_channel = targets.reshape(1, 8, 32, 3)
    np.testing.assert_allclose(by_channel.mean(2), 0, atol=1e-12)
    np.testing.assert_allclose(by_channel.std(2, ddof=1), 1, rtol=1e-3)  # the 1e-6 beside a std of ~0.02
    # the first tube is frames 0-1, rows 0-3, columns 0-3; its first pixel (t, h, w) = (0, 0, 0)
    raw = videos.numpy()[0, :, :2, :4, :4] * np.array([0.229, 0.224, 0.225])[:, None, None, None] \
        + np.array([0.485, 0.456, 0.406])[:, None, None, None]
    patch = raw.reshape(3, 32).T
    np.testing.assert_allclose(by_channel[0, 0], (patch - patch.mean(0)) / (patch.std(0, ddof=1) + 1e-6), rtol=1e-10)


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


def trn(m):
    torch, nn = m.torch, m.nn

    class RelationModuleMultiScale(nn.Module):
        """TRN: relations between ordered tuples of frames at every scale from all frames down to pairs."""

        def __init__(self, img_feature_dim, num_frames, num_class):
            super().__init__()
            self.subsample_num = 3
            self.img_feature_dim = img_feature_dim
            self.scales = [i for i in range(num_frames, 1, -1)]
            self.relations_scales = []
            self.subsample_scales = []
            for scale in self.scales:
                relations_scale = self.return_relationset(num_frames, scale)
                self.relations_scales.append(relations_scale)
                self.subsample_scales.append(min(self.subsample_num, len(relations_scale)))
            self.num_class = num_class
            self.num_frames = num_frames
            num_bottleneck = 16
            self.fc_fusion_scales = nn.ModuleList()
            for i in range(len(self.scales)):
                scale = self.scales[i]
                fc_fusion = nn.Sequential(nn.ReLU(), nn.Linear(scale * self.img_feature_dim, num_bottleneck), nn.ReLU(),
                                          nn.Linear(num_bottleneck, self.num_class))
                self.fc_fusion_scales += [fc_fusion]

        def forward(self, input):
            # the full scale first, then (deterministically here) the first few tuples of each smaller scale
            act_all = input[:, self.relations_scales[0][0], :]
            act_all = act_all.view(act_all.size(0), self.scales[0] * self.img_feature_dim)
            act_all = self.fc_fusion_scales[0](act_all)
            for scaleID in range(1, len(self.scales)):
                idx_relations = list(range(self.subsample_scales[scaleID]))
                for idx in idx_relations:
                    act_relation = input[:, self.relations_scales[scaleID][idx], :]
                    act_relation = act_relation.view(act_relation.size(0), self.scales[scaleID] * self.img_feature_dim)
                    act_relation = self.fc_fusion_scales[scaleID](act_relation)
                    act_all += act_relation
            return act_all

        def return_relationset(self, num_frames, num_frames_relation):
            return list(itertools.combinations([i for i in range(num_frames)], num_frames_relation))

    class TRNNet(nn.Module):
        def __init__(self, num_segments=4, feature_dim=6, num_class=3):
            super().__init__()
            self.num_segments = num_segments
            self.base = nn.Sequential(nn.Conv2d(3, feature_dim, 3, stride=2, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())
            self.consensus = RelationModuleMultiScale(feature_dim, num_segments, num_class)

        def forward(self, x):
            # x: (B, T, C, H, W) -> frames through the 2-D base -> (B, T, D) relations
            b, t = x.shape[:2]
            feats = self.base(x.flatten(0, 1)).view(b, t, -1)
            return self.consensus(feats)

    return TRNNet()


def trn_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, trn(m), weights).double()
    x = torch.from_numpy(clips(n=3, frames=4, seed=11)).transpose(1, 2)
    labels = torch.tensor([0, 1, 2])
    optimizer = optim.Adagrad(model.parameters(), lr=0.05)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.nll_loss(F.log_softmax(model(x), dim=1), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "logits": model(x), "grad": model.base[0].weight.grad,
            "relations": [len(r) for r in model.consensus.relations_scales]}


def test_trn_multiscale_temporal_relations():
    weights = weights_of(trn)
    ours, _ = run_both(trn_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["relations"] == [1, 4, 6]  # C(4, 4), C(4, 3), C(4, 2)


# ----------------------------------------------------------------------------------------------
# MS-TCN action segmentation: dilated temporal convolutions, masks of padded frames, the truncated smoothing loss
# ----------------------------------------------------------------------------------------------


def ms_tcn(m):
    torch, nn, F = m.torch, m.nn, m.F

    class DilatedResidualLayer(nn.Module):
        def __init__(self, dilation, in_channels, out_channels):
            super().__init__()
            self.conv_dilated = nn.Conv1d(in_channels, out_channels, 3, padding=dilation, dilation=dilation)
            self.conv_1x1 = nn.Conv1d(out_channels, out_channels, 1)
            self.dropout = nn.Dropout()

        def forward(self, x, mask):
            out = F.relu(self.conv_dilated(x))
            out = self.conv_1x1(out)
            out = self.dropout(out)
            return (x + out) * mask[:, 0:1, :]

    class SingleStageModel(nn.Module):
        def __init__(self, num_layers, num_f_maps, dim, num_classes):
            super().__init__()
            self.conv_1x1 = nn.Conv1d(dim, num_f_maps, 1)
            self.layers = nn.ModuleList([DilatedResidualLayer(2 ** i, num_f_maps, num_f_maps) for i in range(num_layers)])
            self.conv_out = nn.Conv1d(num_f_maps, num_classes, 1)

        def forward(self, x, mask):
            out = self.conv_1x1(x)
            for layer in self.layers:
                out = layer(out, mask)
            return self.conv_out(out) * mask[:, 0:1, :]

    class MultiStageModel(nn.Module):
        def __init__(self, num_stages=3, num_layers=3, num_f_maps=8, dim=6, num_classes=3):
            super().__init__()
            self.stage1 = SingleStageModel(num_layers, num_f_maps, dim, num_classes)
            self.stages = nn.ModuleList([SingleStageModel(num_layers, num_f_maps, num_classes, num_classes)
                                         for s in range(num_stages - 1)])

        def forward(self, x, mask):
            out = self.stage1(x, mask)
            outputs = out.unsqueeze(0)
            for s in self.stages:
                out = s(F.softmax(out, dim=1) * mask[:, 0:1, :], mask)
                outputs = torch.cat((outputs, out.unsqueeze(0)), dim=0)
            return outputs

    return MultiStageModel()


def segmentation_batch(m, lengths=(12, 9), dim=6, num_classes=3, seed=12):
    """Frame features of videos of different lengths padded to the longest, with labels -100 and a 0 mask there
    (as MS-TCN's BatchGenerator pads)."""
    torch = m.torch
    rng = np.random.default_rng(seed)
    longest = max(lengths)
    batch_input = np.zeros((len(lengths), dim, longest))
    batch_target = np.full((len(lengths), longest), -100, dtype=np.int64)
    mask = np.zeros((len(lengths), num_classes, longest))
    for i, length in enumerate(lengths):
        cuts = np.sort(rng.choice(np.arange(2, length - 1), num_classes - 1, replace=False))
        labels = np.searchsorted(cuts, np.arange(length), side="right")
        batch_target[i, :length] = labels
        batch_input[i, :, :length] = 0.5 * rng.standard_normal((dim, length)) + labels[None]
        mask[i, :, :length] = 1
    return torch.from_numpy(batch_input), torch.from_numpy(batch_target), torch.from_numpy(mask)


def ms_tcn_training(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, ms_tcn(m), weights).double()
    model.eval()  # the dropout masks are drawn differently: the graph and the losses are what is compared
    ce = nn.CrossEntropyLoss(ignore_index=-100)
    mse = nn.MSELoss(reduction='none')
    batch_input, batch_target, mask = segmentation_batch(m)
    optimizer = optim.Adam(model.parameters(), lr=5e-3)
    num_classes = 3
    history = []
    for step in range(3):
        optimizer.zero_grad()
        predictions = model(batch_input, mask)
        loss = 0
        for p in predictions:
            loss += ce(p.transpose(2, 1).contiguous().view(-1, num_classes), batch_target.view(-1))
            loss += 0.15 * torch.mean(torch.clamp(mse(F.log_softmax(p[:, :, 1:], dim=1),
                                                      F.log_softmax(p.detach()[:, :, :-1], dim=1)), min=0, max=16)
                                      * mask[:, :, 1:])
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    with torch.no_grad():
        predictions = model(batch_input, mask)
        _, predicted = torch.max(predictions[-1].data, 1)
        correct = ((predicted == batch_target).float() * mask[:, 0, :].squeeze(1)).sum().item()
        total = torch.sum(mask[:, 0, :]).item()
    return {"history": history, "predictions": predictions, "accuracy": correct / total,
            "grad": model.stage1.layers[2].conv_dilated.weight.grad}


def test_ms_tcn_action_segmentation_with_padded_videos():
    weights = weights_of(ms_tcn)
    ours, _ = run_both(ms_tcn_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["predictions"].shape == (3, 2, 3, 12)
    np.testing.assert_array_equal(ours["predictions"][:, 1, :, 9:], 0)  # masked frames of the shorter video


def test_padding_reaches_a_stage_only_through_its_receptive_field_by_hand():
    """The stage's first 1x1 convolution is not masked, so a padded frame holds its bias, which the dilated layers
    (dilations 1, 2, 4: a reach of 7 frames) carry back into the video: padding a 9-frame video to 12 changes the
    first stage's outputs only within 7 frames of its end."""
    torch = OURS.torch
    model = load(OURS, ms_tcn(OURS), weights_of(ms_tcn)).double().eval()
    batch_input, _, mask = segmentation_batch(OURS)
    with torch.no_grad():
        padded = model.stage1(batch_input[1:], mask[1:])[0, :, :9].numpy()
        alone = model.stage1(batch_input[1:, :, :9], mask[1:, :, :9])[0].numpy()
    np.testing.assert_allclose(padded[:, :2], alone[:, :2], rtol=1e-12, atol=1e-12)
    assert not np.allclose(padded[:, 2:], alone[:, 2:])


# ----------------------------------------------------------------------------------------------
# Temporal cycle-consistency (TCC): soft nearest neighbours between two videos and cycle-back regression
# ----------------------------------------------------------------------------------------------


def tcc_encoder(m):
    nn = m.nn
    return nn.Sequential(nn.Conv3d(3, 8, (3, 3, 3), padding=(1, 1, 1)), nn.BatchNorm3d(8), nn.ReLU(),
                         nn.AdaptiveMaxPool3d((None, 1, 1)), nn.Flatten(2), nn.Conv1d(8, 8, 1))


def pairwise_l2_distance(m, embs1, embs2):
    torch = m.torch
    norm1 = torch.sum(torch.square(embs1), dim=1).reshape(-1, 1)
    norm2 = torch.sum(torch.square(embs2), dim=1).reshape(1, -1)
    return torch.maximum(norm1 + norm2 - 2.0 * torch.matmul(embs1, embs2.t()), torch.tensor(0.0, dtype=embs1.dtype))


def get_scaled_similarity(m, embs1, embs2, similarity_type, temperature):
    channels = embs1.shape[1]
    if similarity_type == 'cosine':
        similarity = m.torch.matmul(embs1, embs2.t())
    else:
        similarity = -1.0 * pairwise_l2_distance(m, embs1, embs2)
    return similarity / channels / temperature


def align_pair_of_sequences(m, embs1, embs2, similarity_type, temperature):
    torch, F = m.torch, m.F
    max_num_steps = embs1.shape[0]
    sim_12 = get_scaled_similarity(m, embs1, embs2, similarity_type, temperature)
    softmaxed_sim_12 = F.softmax(sim_12, dim=1)
    nn_embs = torch.matmul(softmaxed_sim_12, embs2)  # soft nearest neighbours of embs1 in embs2
    sim_21 = get_scaled_similarity(m, nn_embs, embs1, similarity_type, temperature)
    logits = sim_21
    labels = F.one_hot(torch.arange(max_num_steps), max_num_steps).to(embs1.dtype)
    return logits, labels


def regression_loss(m, logits, labels, num_steps, steps, seq_lens, loss_type, normalize_indices, variance_lambda):
    """TCC's cycle-back regression: the cycled-back soft index should land on the frame's own index, weighted by
    the inverse of its variance ('regression_mse_var')."""
    torch = m.torch
    if normalize_indices:
        float_seq_lens = seq_lens.to(logits.dtype)
        tile_seq_lens = float_seq_lens.unsqueeze(1).repeat(1, num_steps)
        steps = steps.to(logits.dtype) / tile_seq_lens
    else:
        steps = steps.to(logits.dtype)
    beta = torch.softmax(logits, dim=1)
    true_time = torch.sum(steps * labels, dim=1)
    pred_time = torch.sum(steps * beta, dim=1)
    if loss_type in ['regression_mse', 'regression_mse_var']:
        if 'var' in loss_type:
            pred_time_tiled = pred_time.unsqueeze(1).repeat(1, num_steps)
            pred_time_variance = torch.sum(torch.square(steps - pred_time_tiled) * beta, dim=1)
            pred_time_log_var = torch.log(pred_time_variance)
            squared_error = torch.square(true_time - pred_time)
            return torch.mean(torch.exp(-pred_time_log_var) * squared_error + variance_lambda * pred_time_log_var)
        return torch.mean(torch.square(true_time - pred_time))
    raise ValueError(f'Unidentified loss_type {loss_type}')


def tcc_training(m, weights):
    torch, optim = m.torch, m.optim
    model = load(m, tcc_encoder(m), weights).double()
    videos = torch.from_numpy(clips(n=2, frames=6, seed=13))
    optimizer = optim.Adam(model.parameters(), lr=1e-3)
    num_steps = 6
    steps = torch.arange(num_steps).unsqueeze(0)
    seq_lens = torch.tensor([num_steps])
    history = []
    for step in range(3):
        optimizer.zero_grad()
        embs = model(videos).transpose(1, 2)  # (B, T, D)
        loss = 0
        for i, j in [(0, 1), (1, 0)]:
            for similarity_type, loss_type in [('l2', 'regression_mse_var'), ('cosine', 'regression_mse')]:
                logits, labels = align_pair_of_sequences(m, embs[i], embs[j], similarity_type, temperature=0.1)
                loss = loss + regression_loss(m, logits, labels, num_steps, steps.repeat(num_steps, 1),
                                              seq_lens.repeat(num_steps), loss_type, True, 0.001)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "embs": embs, "grad": model[0].weight.grad}


def test_temporal_cycle_consistency():
    weights = weights_of(tcc_encoder)
    ours, _ = run_both(tcc_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["embs"].shape == (2, 6, 8)


def test_a_video_cycles_back_to_itself_at_low_temperature_by_hand():
    """Aligning a sequence of well-separated embeddings with itself at a low temperature, the soft nearest
    neighbour of each step is itself and the cycle lands back on it: logits peak on the diagonal."""
    torch = OURS.torch
    embs = torch.from_numpy(np.eye(5) * 3.0)
    logits, labels = align_pair_of_sequences(OURS, embs, embs, 'l2', temperature=0.01)
    np.testing.assert_array_equal(logits.numpy().argmax(1), np.arange(5))
    np.testing.assert_array_equal(labels.numpy(), np.eye(5))


# ----------------------------------------------------------------------------------------------
# A clip-sampling data pipeline: TSN's segment jitter, uniform test-time sampling, seeded samplers
# ----------------------------------------------------------------------------------------------


VIDEO_LENGTHS = [9, 12, 7, 16, 10]


def video_pipeline(m):
    torch, data = m.torch, m.data
    videos = [np.random.default_rng(i).standard_normal((n, 3, 2, 2)).astype(np.float32)
              for i, n in enumerate(VIDEO_LENGTHS)]

    class VideoDataset(data.Dataset):
        def __init__(self, videos, num_segments=4, train=True):
            self.videos, self.num_segments, self.train = videos, num_segments, train

        def __len__(self):
            return len(self.videos)

        def __getitem__(self, idx):
            video = torch.from_numpy(self.videos[idx])  # (T, C, H, W)
            num_frames = video.shape[0]
            if self.train:  # one random frame from each of num_segments equal segments
                average_duration = num_frames / self.num_segments
                offsets = (torch.arange(self.num_segments) * average_duration
                           + torch.rand(self.num_segments) * average_duration).long()
            else:  # the segments' centres
                offsets = torch.linspace(0, num_frames - 1, self.num_segments).round().long()
            clip = video.index_select(0, offsets)
            if self.train and torch.rand(1).item() < 0.5:
                clip = clip.flip(-1)  # horizontal flip of the whole clip
            return clip.permute(1, 0, 2, 3), offsets  # (C, T, H, W)

    torch.manual_seed(3)
    loader = data.DataLoader(VideoDataset(videos), batch_size=2, shuffle=True,
                             generator=torch.Generator().manual_seed(7))
    batches = []
    for epoch in range(2):
        for clips, offsets in loader:
            batches.append((clips, offsets))
    test_loader = data.DataLoader(VideoDataset(videos, train=False), batch_size=3)
    test_offsets = torch.cat([offsets for _, offsets in test_loader])
    # class-balanced clip sampling by weights, and a seeded train/val split
    sampler = data.WeightedRandomSampler([0.1, 0.5, 0.2, 0.1, 0.1], num_samples=8, replacement=True,
                                         generator=torch.Generator().manual_seed(1))
    train_set, val_set = data.random_split(range(len(videos)), [0.6, 0.4], generator=torch.Generator().manual_seed(42))
    return {"batches": batches, "test_offsets": test_offsets, "weighted": torch.tensor(list(sampler)),
            "split": [list(train_set), list(val_set)]}


def test_clip_sampling_pipeline():
    ours, _ = run_both(video_pipeline)
    for clips, offsets in ours["batches"]:
        assert clips.shape[1:] == (3, 4, 2, 2)
        assert (np.diff(offsets, axis=1) >= 0).all()  # frames in temporal order
    lengths = np.array(VIDEO_LENGTHS)
    # uniform test-time sampling by hand: round(linspace(0, T - 1, 4))
    expected = np.concatenate([np.round(np.linspace(0, n - 1, 4)) for n in lengths]).reshape(5, 4)
    np.testing.assert_array_equal(ours["test_offsets"], expected)
    assert sorted(ours["split"][0] + ours["split"][1]) == list(range(5)) and len(ours["split"][0]) == 3


# ----------------------------------------------------------------------------------------------
# MoCoGAN: content and motion latents (a GRUCell over time), a per-frame generator, a spectrally normalised
# Conv3d video discriminator and an image discriminator, trained by the hinge loss
# ----------------------------------------------------------------------------------------------


def mocogan(m):
    torch, nn = m.torch, m.nn
    SN = nn.utils.spectral_norm

    class VideoGenerator(nn.Module):
        def __init__(self, dim_z_content=4, dim_z_motion=3, video_length=4):
            super().__init__()
            self.dim_z_content, self.dim_z_motion, self.video_length = dim_z_content, dim_z_motion, video_length
            self.recurrent = nn.GRUCell(dim_z_motion, dim_z_motion)
            dim_z = dim_z_content + dim_z_motion
            self.main = nn.Sequential(
                nn.ConvTranspose2d(dim_z, 8, 4, 1, 0, bias=False), nn.BatchNorm2d(8), nn.ReLU(True),
                nn.ConvTranspose2d(8, 4, 4, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(True),
                nn.ConvTranspose2d(4, 3, 3, 1, 1, bias=False), nn.Tanh())

        def sample_z_m(self, num_samples, eps):
            h_t = [torch.zeros(num_samples, self.dim_z_motion, dtype=eps.dtype)]
            for frame_num in range(self.video_length):
                h_t.append(self.recurrent(eps[:, frame_num], h_t[-1]))
            z_m_t = [h_k.view(-1, 1, self.dim_z_motion) for h_k in h_t]
            return torch.cat(z_m_t[1:], dim=1).view(-1, self.dim_z_motion)

        def forward(self, z_content, eps):
            num_samples = z_content.shape[0]
            z_c = z_content.repeat_interleave(self.video_length, dim=0)  # the same content for every frame
            z = torch.cat([z_c, self.sample_z_m(num_samples, eps)], dim=1)
            h = self.main(z.view(z.size(0), z.size(1), 1, 1))
            h = h.view(num_samples, self.video_length, 3, h.size(2), h.size(3))
            return h.permute(0, 2, 1, 3, 4)  # (B, C, T, H, W)

    class VideoDiscriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(
                SN(nn.Conv3d(3, 8, 4, stride=(1, 2, 2), padding=(0, 1, 1), bias=False)), nn.LeakyReLU(0.2, inplace=True),
                SN(nn.Conv3d(8, 8, (1, 4, 4), stride=(1, 2, 2), padding=(0, 1, 1), bias=False)), nn.LeakyReLU(0.2, inplace=True),
                SN(nn.Conv3d(8, 1, (1, 2, 2), stride=1, bias=False)))

        def forward(self, video):
            return self.main(video).flatten(1).mean(1)

    class ImageDiscriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Sequential(SN(nn.Conv2d(3, 8, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True),
                                      SN(nn.Conv2d(8, 1, 4, 1, 0)))

        def forward(self, image):
            return self.main(image).flatten()

    class MoCoGAN(nn.Module):
        def __init__(self):
            super().__init__()
            self.generator = VideoGenerator()
            self.video_discriminator = VideoDiscriminator()
            self.image_discriminator = ImageDiscriminator()

    return MoCoGAN()


def mocogan_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    gan = load(m, mocogan(m), weights).double()
    G, DV, DI = gan.generator, gan.video_discriminator, gan.image_discriminator
    real = torch.from_numpy(np.tanh(clips(n=2, frames=4, side=8, seed=14)))
    rng = np.random.default_rng(15)
    opt_g = optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999), weight_decay=1e-5)
    opt_d = optim.Adam(list(DV.parameters()) + list(DI.parameters()), lr=2e-4, betas=(0.5, 0.999))
    history = []
    for step in range(2):
        z_content = torch.from_numpy(rng.standard_normal((2, 4)))
        eps = torch.from_numpy(rng.standard_normal((2, 4, 3)))
        frame_index = int(rng.integers(0, 4))
        # discriminators: hinge loss on real and generated videos and on single frames
        fake = G(z_content, eps)
        opt_d.zero_grad()
        d_loss = (F.relu(1.0 - DV(real)).mean() + F.relu(1.0 + DV(fake.detach())).mean()
                  + F.relu(1.0 - DI(real[:, :, frame_index])).mean() + F.relu(1.0 + DI(fake.detach()[:, :, frame_index])).mean())
        d_loss.backward()
        opt_d.step()
        # generator
        opt_g.zero_grad()
        g_loss = -DV(fake).mean() - DI(fake[:, :, frame_index]).mean()
        g_loss.backward()
        opt_g.step()
        history.append((d_loss.item(), g_loss.item()))
    return {"history": history, "fake": fake, "gru_grad": G.recurrent.weight_hh.grad,
            "sn_u": DV.main[0].weight_u, "sn_grad": DV.main[0].weight_orig.grad}


def test_mocogan_with_spectrally_normalised_conv3d_discriminator():
    weights = weights_of(mocogan)
    ours, _ = run_both(mocogan_training, weights, rtol=1e-7, atol=1e-9)
    assert ours["fake"].shape == (2, 3, 4, 8, 8)


def test_spectral_norm_of_a_conv3d_converges_to_unit_norm_by_hand():
    """Each training-mode forward runs one power iteration: after enough of them the normalised Conv3d weight,
    flattened to (out, in * kt * kh * kw), has a largest singular value of 1."""
    torch = OURS.torch
    gan = load(OURS, mocogan(OURS), weights_of(mocogan)).double()
    conv = gan.video_discriminator.main[0]
    video = torch.zeros(1, 3, 4, 8, 8, dtype=torch.float64)
    for _ in range(60):
        conv(video)
    sigma = np.linalg.svd(conv.weight.detach().numpy().reshape(8, -1), compute_uv=False)[0]
    np.testing.assert_allclose(sigma, 1.0, rtol=1e-6)  # 1.14 after one iteration, 1.0001 after 30


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
