# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Video and spatio-temporal programs, run as tests/probe21_video_common.py says. Recognition: TimeSformer's divided
space-time attention (a tubelet ``Conv3d`` embedding, a CLS token ``expand``-ed over the batch and ``repeat``-ed over
frames, temporal then spatial attention by ``reshape``/``permute`` between ``(b t) n d`` and ``(b n) t d``, learnable
spatial and temporal position embeddings, ``trunc_normal_``) trained by AdamW with label smoothing; a
channel-separated network (ir-CSN: depthwise ``Conv3d(groups=channels)`` with temporal dilation, ``MaxPool3d`` with
padding, dilation and ``ceil_mode``, ``BatchNorm3d``, Nesterov SGD); TSM's temporal shift by slicing and by an
in-place ``autograd.Function`` writing through ``.data``, temporal pooling by ``max_pool3d`` and TSN consensus; TRN's
multi-scale relations (``itertools.combinations`` of frames)."""

import itertools

import numpy as np

from .probe21_video_common import clips
from .pytorch_programs import OURS, load, run_both, weights_of

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
