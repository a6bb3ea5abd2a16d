# ruff: noqa: B006, B007, B023, E741, E731, F841, UP008, UP031  (the programs are kept as their authors wrote them)
"""timm's building blocks and training recipe (see tests/pytorch_programs.py), each program run unchanged
but for its imports on chainrule and on PyTorch from the same weights and data, comparing losses,
gradients and parameters after a few optimizer steps.

What the other program tests do not already cover: a network of timm's layers as timm writes them
(LayerNorm2d by permute / ``F.layer_norm`` / permute back, a ConvNeXt block with a depthwise 7x7 conv, a
channels-last Linear MLP and LayerScale, EfficientNet's MBConv with ``groups=``, ``nn.SiLU(inplace=True)``
and a squeeze-excite gated by ``hard_sigmoid``, an in-place ``hard_swish``, StdConv2d and
ScaledStdConv2d standardising their weights by ``F.batch_norm`` over the weight reshaped, BiT's
weight standardisation by ``torch.var_mean``, BlurPool2d with a binomial filter copied into a
non-persistent buffer and reflect padding, an ``nn.Unfold`` patch embedding, Swin's relative position
bias gathered by an index buffer, and latent attention pooling); ``trunc_normal_`` statistics; and
timm's recipe: Mixup/CutMix (NumPy beta lambda, ``flip(0)`` mixing by ``mul_``/``add_``, boxes cut by
slice assignment, per-element mixing), LabelSmoothingCrossEntropy, SoftTargetCrossEntropy and
``nn.CrossEntropyLoss(label_smoothing=)`` with probabilities as targets, ModelEmaV2 over state_dict values
(buffers included), no-weight-decay groups by ``ndim <= 1``, BEiT's layer-wise lr decay, a cosine
schedule with warmup by ``LambdaLR``, timm's LAMB written out, SGD(nesterov), ``clip_grad_norm_``,
``clip_grad_value_`` and adaptive gradient clipping by unit-wise norms, ``channels_last`` (results
unchanged), CPU autocast, and BatchNorm folded into the preceding conv by hand for eval; torchvision's
references (``set_weight_decay`` by norm classes, an EMA by ``AveragedModel(use_buffers=True)``, accuracy
by ``topk``); timm's foreach code (Adan's multi-tensor step with caution, ModelEmaV3's ``_foreach_lerp_``
over state_dict values); and timm's attention/conv modules and losses (CBAM, ECA, global context,
coordinate attention, MedianPool2d, split attention, CondConv, MixedConv2d, AsymmetricLoss,
JsdCrossEntropy, BinaryCrossEntropy, RoPE, ``checkpoint_seq``) with pools, interpolation and norms;
timm's current Attention (fused and explicit paths, masks resolved to an additive bias) and its
Adafactor (relative step, no lr). The names timm imports at import time (``torch.fx.wrap``,
``torch.hub.HASH_REGEX``/``urlparse``, ``torch.jit.annotations``), the ``_foreach_*`` keyword operands and a
checkpoint holding the run's ``argparse.Namespace``."""

import math
from copy import deepcopy

import numpy as np
import pytest

from .pytorch_programs import OURS, load, pytorch, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# timm's layers
# ----------------------------------------------------------------------------------------------


def timm_layers(m):
    torch, nn, F = m.torch, m.nn, m.F
    from math import comb

    def hard_sigmoid(x, inplace: bool = False):
        if inplace:
            return x.add_(3.).clamp_(0., 6.).div_(6.)
        else:
            return F.relu6(x + 3.) / 6.

    def hard_swish(x, inplace: bool = False):
        inner = F.relu6(x + 3.).div_(6.)
        return x.mul_(inner) if inplace else x.mul(inner)

    class HardSwish(nn.Module):
        def __init__(self, inplace: bool = False):
            super(HardSwish, self).__init__()
            self.inplace = inplace

        def forward(self, x):
            return hard_swish(x, self.inplace)

    class LayerNorm2d(nn.LayerNorm):
        """ LayerNorm for channels of '2D' spatial NCHW tensors """

        def __init__(self, num_channels, eps=1e-6, affine=True):
            super().__init__(num_channels, eps=eps, elementwise_affine=affine)

        def forward(self, x):
            x = x.permute(0, 2, 3, 1)
            x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
            x = x.permute(0, 3, 1, 2)
            return x

    class LayerScale(nn.Module):
        def __init__(self, dim, init_values=1e-5, inplace=False):
            super().__init__()
            self.inplace = inplace
            self.gamma = nn.Parameter(init_values * torch.ones(dim))

        def forward(self, x):
            return x.mul_(self.gamma) if self.inplace else x * self.gamma

    class Mlp(nn.Module):
        def __init__(self, in_features, hidden_features, act_layer=nn.GELU):
            super().__init__()
            self.fc1 = nn.Linear(in_features, hidden_features)
            self.act = act_layer()
            self.fc2 = nn.Linear(hidden_features, in_features)

        def forward(self, x):
            return self.fc2(self.act(self.fc1(x)))

    class ConvNeXtBlock(nn.Module):
        def __init__(self, dim, ls_init_value=0.5):
            super().__init__()
            self.conv_dw = nn.Conv2d(dim, dim, kernel_size=7, padding=3, groups=dim, bias=True)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = Mlp(dim, 4 * dim, act_layer=nn.GELU)
            self.gamma = nn.Parameter(ls_init_value * torch.ones(dim))
            self.ls = LayerScale(dim, init_values=0.7, inplace=True)

        def forward(self, x):
            shortcut = x
            x = self.conv_dw(x)
            x = x.permute(0, 2, 3, 1)
            x = self.norm(x)
            x = self.ls(self.mlp(x))
            x = x.permute(0, 3, 1, 2)
            x = x.mul(self.gamma.reshape(1, -1, 1, 1))
            return x + shortcut

    class SqueezeExcite(nn.Module):
        def __init__(self, in_chs, rd_ratio=0.25, act_layer=nn.ReLU, gate_fn=hard_sigmoid):
            super(SqueezeExcite, self).__init__()
            rd_channels = max(1, round(in_chs * rd_ratio))
            self.conv_reduce = nn.Conv2d(in_chs, rd_channels, 1, bias=True)
            self.act1 = act_layer(inplace=True)
            self.conv_expand = nn.Conv2d(rd_channels, in_chs, 1, bias=True)
            self.gate_fn = gate_fn

        def forward(self, x):
            x_se = x.mean((2, 3), keepdim=True)
            x_se = self.conv_reduce(x_se)
            x_se = self.act1(x_se)
            x_se = self.conv_expand(x_se)
            return x * self.gate_fn(x_se)

    class InvertedResidual(nn.Module):
        """ MBConv: pointwise expansion, depthwise conv, squeeze-excite, linear pointwise projection """

        def __init__(self, in_chs, out_chs, exp_ratio=4.0, dw_kernel_size=3, stride=1):
            super().__init__()
            mid_chs = int(in_chs * exp_ratio)
            self.has_skip = in_chs == out_chs and stride == 1
            self.conv_pw = nn.Conv2d(in_chs, mid_chs, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid_chs)
            self.act1 = nn.SiLU(inplace=True)
            self.conv_dw = nn.Conv2d(mid_chs, mid_chs, dw_kernel_size, stride, padding=dw_kernel_size // 2,
                                     groups=mid_chs, bias=False)
            self.bn2 = nn.BatchNorm2d(mid_chs)
            self.act2 = HardSwish(inplace=True)
            self.se = SqueezeExcite(mid_chs, rd_ratio=0.25 / exp_ratio)
            self.conv_pwl = nn.Conv2d(mid_chs, out_chs, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(out_chs)

        def forward(self, x):
            shortcut = x
            x = self.act1(self.bn1(self.conv_pw(x)))
            x = self.act2(self.bn2(self.conv_dw(x)))
            x = self.se(x)
            x = self.bn3(self.conv_pwl(x))
            if self.has_skip:
                x = x + shortcut
            return x

    class StdConv2d(nn.Conv2d):
        def __init__(self, in_channel, out_channels, kernel_size, stride=1, padding=None, groups=1, bias=False,
                     eps=1e-6):
            if padding is None:
                padding = ((stride - 1) + (kernel_size - 1)) // 2
            super().__init__(in_channel, out_channels, kernel_size, stride=stride, padding=padding,
                             groups=groups, bias=bias)
            self.eps = eps

        def forward(self, x):
            weight = F.batch_norm(
                self.weight.reshape(1, self.out_channels, -1), None, None,
                training=True, momentum=0., eps=self.eps).reshape_as(self.weight)
            x = F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
            return x

    class ScaledStdConv2d(nn.Conv2d):
        def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=None, bias=True,
                     gamma=1.0, eps=1e-6, gain_init=1.0):
            if padding is None:
                padding = ((stride - 1) + (kernel_size - 1)) // 2
            super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=bias)
            self.gain = nn.Parameter(torch.full((self.out_channels, 1, 1, 1), gain_init))
            self.scale = gamma * self.weight[0].numel() ** -0.5  # gamma * 1 / sqrt(fan-in)
            self.eps = eps

        def forward(self, x):
            weight = F.batch_norm(
                self.weight.reshape(1, self.out_channels, -1), None, None,
                weight=(self.gain * self.scale).view(-1),
                training=True, momentum=0., eps=self.eps).reshape_as(self.weight)
            return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)

    class StdConv2dBiT(nn.Conv2d):
        """ BiT's original: weight standardisation by torch.var_mean """

        def forward(self, x):
            w = self.weight
            v, m_ = torch.var_mean(w, dim=[1, 2, 3], keepdim=True, unbiased=False)
            w = (w - m_) / torch.sqrt(v + 1e-10)
            return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)

    class BlurPool2d(nn.Module):
        def __init__(self, channels=None, filt_size=3, stride=2, pad_mode='reflect'):
            super().__init__()
            self.channels = channels
            self.filt_size = filt_size
            self.stride = stride
            self.pad_mode = pad_mode
            self.padding = [((stride - 1) + (filt_size - 1)) // 2] * 4
            filt_shape = (channels or 1, 1, filt_size, filt_size)
            self.register_buffer('filt', torch.empty(filt_shape), persistent=False)
            self.reset_parameters()

        def reset_parameters(self):
            coeffs = torch.tensor([comb(self.filt_size - 1, k) for k in range(self.filt_size)],
                                  device='cpu', dtype=torch.float32) / (2 ** (self.filt_size - 1))
            blur_filter = (coeffs[:, None] * coeffs[None, :])[None, None, :, :]
            if self.channels is not None:
                blur_filter = blur_filter.repeat(self.channels, 1, 1, 1)
            self.filt.copy_(blur_filter)

        def forward(self, x):
            x = F.pad(x, self.padding, mode=self.pad_mode)
            if self.channels is None:
                channels = x.shape[1]
                weight = self.filt.expand(channels, 1, self.filt_size, self.filt_size)
            else:
                channels = self.channels
                weight = self.filt
            return F.conv2d(x, weight, stride=self.stride, groups=channels)

    class UnfoldPatchEmbed(nn.Module):
        def __init__(self, patch_size, in_chans, embed_dim):
            super().__init__()
            self.unfold = nn.Unfold(kernel_size=patch_size, stride=patch_size)
            self.proj = nn.Linear(in_chans * patch_size * patch_size, embed_dim)

        def forward(self, x):
            x = self.unfold(x).transpose(1, 2)  # B, L, C*p*p
            return self.proj(x)

    def get_relative_position_index(win_h, win_w):
        coords = torch.stack(torch.meshgrid(torch.arange(win_h), torch.arange(win_w), indexing='ij'))  # 2, Wh, Ww
        coords_flatten = torch.flatten(coords, 1)  # 2, Wh*Ww
        relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]  # 2, Wh*Ww, Wh*Ww
        relative_coords = relative_coords.permute(1, 2, 0).contiguous()  # Wh*Ww, Wh*Ww, 2
        relative_coords[:, :, 0] += win_h - 1  # shift to start from 0
        relative_coords[:, :, 1] += win_w - 1
        relative_coords[:, :, 0] *= 2 * win_w - 1
        return relative_coords.sum(-1)  # Wh*Ww, Wh*Ww

    class WindowAttention(nn.Module):
        def __init__(self, dim, num_heads, window_size=(2, 2), qkv_bias=True):
            super().__init__()
            self.window_size = window_size
            win_h, win_w = self.window_size
            self.window_area = win_h * win_w
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = head_dim ** -0.5
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * win_h - 1) * (2 * win_w - 1), num_heads))
            self.register_buffer("relative_position_index", get_relative_position_index(win_h, win_w),
                                 persistent=False)
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.proj = nn.Linear(dim, dim)
            nn.init.normal_(self.relative_position_bias_table, std=.5)

        def _get_rel_pos_bias(self):
            relative_position_bias = self.relative_position_bias_table[
                self.relative_position_index.view(-1)].view(self.window_area, self.window_area, -1)  # Wh*Ww,Wh*Ww,nH
            relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()  # nH, Wh*Ww, Wh*Ww
            return relative_position_bias.unsqueeze(0)

        def forward(self, x, mask=None):
            B_, N, C = x.shape
            qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            attn = attn + self._get_rel_pos_bias()
            attn = attn.softmax(dim=-1)
            x = attn @ v
            x = x.transpose(1, 2).reshape(B_, N, -1)
            return self.proj(x)

    def window_partition(x, window_size):
        B, H, W, C = x.shape
        x = x.view(B, H // window_size[0], window_size[0], W // window_size[1], window_size[1], C)
        windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size[0], window_size[1], C)
        return windows

    def window_reverse(windows, window_size, H, W):
        C = windows.shape[-1]
        x = windows.view(-1, H // window_size[0], W // window_size[1], window_size[0], window_size[1], C)
        x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)
        return x

    class AttentionPoolLatent(nn.Module):
        def __init__(self, in_features, num_heads=2, latent_len=1):
            super().__init__()
            self.num_heads = num_heads
            self.head_dim = in_features // num_heads
            self.scale = self.head_dim ** -0.5
            self.latent_len = latent_len
            self.latent = nn.Parameter(torch.zeros(1, self.latent_len, in_features))
            self.q = nn.Linear(in_features, in_features)
            self.kv = nn.Linear(in_features, in_features * 2, bias=False)
            self.proj = nn.Linear(in_features, in_features)
            self.norm = nn.LayerNorm(in_features)
            nn.init.trunc_normal_(self.latent, std=in_features ** -0.5)

        def forward(self, x):
            B, N, C = x.shape
            q_latent = self.latent.expand(B, -1, -1)
            q = self.q(q_latent).reshape(B, self.latent_len, self.num_heads, self.head_dim).transpose(1, 2)
            kv = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            k, v = kv.unbind(0)
            x = F.scaled_dot_product_attention(q, k, v)
            x = x.transpose(1, 2).reshape(B, self.latent_len, C)
            x = self.proj(x)
            x = x + self.norm(x)
            return x.mean(1)

    class Net(nn.Module):
        def __init__(self, num_classes=5):
            super().__init__()
            self.stem = StdConv2d(3, 8, 3, stride=1)
            self.stem_norm = LayerNorm2d(8)
            self.convnext = ConvNeXtBlock(8)
            self.blur = BlurPool2d(channels=None)
            self.mbconv = InvertedResidual(8, 8)
            self.scaled = ScaledStdConv2d(8, 12, 3, gamma=1.5)
            self.bit = StdConv2dBiT(12, 12, 1)
            self.act = nn.Hardswish()
            self.blur2 = BlurPool2d(channels=12, filt_size=5, pad_mode='constant')
            self.patch = UnfoldPatchEmbed(2, 3, 12)
            # a key bias shifts every score of a row alike, so its gradient is zero but for rounding,
            # which AdamW would turn into lr-sized steps that differ between the libraries
            self.window = WindowAttention(12, num_heads=3, window_size=(2, 2), qkv_bias=False)
            self.pool = AttentionPoolLatent(12, num_heads=2)
            self.head = nn.Linear(12, num_classes)

        def forward(self, x):
            tokens = self.patch(x)  # B, 64, 12 from 16x16
            f = self.stem_norm(self.stem(x))
            f = self.convnext(f)
            f = self.blur(f)  # 8x8
            f = self.mbconv(f)
            f = self.act(self.scaled(f))
            f = self.bit(f)
            f = self.blur2(f)  # 4x4
            B, C, H, W = f.shape
            g = f.permute(0, 2, 3, 1)
            windows = window_partition(g, (2, 2)).view(-1, 4, C)
            windows = self.window(windows)
            g = window_reverse(windows.view(-1, 2, 2, C), (2, 2), H, W)
            seq = torch.cat([g.reshape(B, H * W, C), tokens], dim=1)
            return self.head(self.pool(seq))

    return Net()


def layers_training(m, weights, steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, timm_layers(m), weights)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias"):
            no_decay.append(param)
        else:
            decay.append(param)
    optimizer = optim.AdamW([{'params': no_decay, 'weight_decay': 0.}, {'params': decay, 'weight_decay': 0.05}],
                            lr=3e-3)
    rng = np.random.default_rng(0)
    images = torch.tensor(rng.standard_normal((4, 3, 16, 16)).astype(np.float32))
    labels = torch.tensor(rng.integers(0, 5, 4))
    losses, first_grads = [], None
    for step in range(steps):
        model.train()
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        if first_grads is None:
            first_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        out = model(images)
    buffers = {n: b for n, b in model.named_buffers()}
    return losses, first_grads, dict(model.named_parameters()), buffers, out, sorted(model.state_dict())


def test_timm_layers_train_alike():
    weights = weights_of(timm_layers)
    assert "blur.filt" not in weights and "window.relative_position_index" not in weights  # non-persistent
    (losses, grads, params, buffers, out, keys), _ = run_both(layers_training, weights, rtol=2e-4, atol=2e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(buffers["blur.filt"][0, 0], np.outer([1, 2, 1], [1, 2, 1]) / 16)
    np.testing.assert_allclose(buffers["blur2.filt"][3, 0, 2], np.array([1, 4, 6, 4, 1]) * 6 / 256)
    index = buffers["window.relative_position_index"]
    assert index.shape == (4, 4) and index.min() == 0 and index.max() == 8 and (np.diag(index) == 4).all()
    assert all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in grads.values())


def weight_standardisation(m):
    """StdConv2d's weights through F.batch_norm equal var_mean's by hand, forward and backward."""
    torch, F = m.torch, m.F
    rng = np.random.default_rng(1)
    w = torch.tensor(rng.standard_normal((6, 4, 3, 3)), requires_grad=True)
    by_bn = F.batch_norm(w.reshape(1, 6, -1), None, None, training=True, momentum=0., eps=1e-6).reshape_as(w)
    v, mu = torch.var_mean(w, dim=[1, 2, 3], keepdim=True, unbiased=False)
    by_hand = (w - mu) / torch.sqrt(v + 1e-6)
    upstream = torch.tensor(rng.standard_normal((6, 4, 3, 3)))
    g_bn, = torch.autograd.grad(by_bn, w, upstream)
    g_hand, = torch.autograd.grad(by_hand, w, upstream)
    return by_bn, by_hand, g_bn, g_hand


def test_weight_standardisation_by_batch_norm():
    (by_bn, by_hand, g_bn, g_hand), _ = run_both(weight_standardisation, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(by_bn, by_hand, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(g_bn, g_hand, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(by_bn.reshape(6, -1).mean(1), 0, atol=1e-12)


def trunc_normal_stats(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    w = torch.empty(200, 500)
    nn.init.trunc_normal_(w, std=.02)  # timm's default: a=-2, b=2 are absolute, nothing is cut off
    narrow = torch.empty(200, 500)
    nn.init.trunc_normal_(narrow, mean=1., std=1., a=0., b=2.)  # one std either side of the mean
    return w.mean().item(), w.std().item(), w.abs().max().item(), narrow.min().item(), narrow.max().item(), \
        narrow.mean().item(), narrow.std().item()


def test_trunc_normal_statistics():
    ours, theirs = run_both(trunc_normal_stats, compare=False)
    # the variance of a standard normal cut at +-1 is 1 - 2 phi(1) / (Phi(1) - Phi(-1))
    phi1 = math.exp(-0.5) / math.sqrt(2 * math.pi)
    cut_std = math.sqrt(1 - 2 * phi1 / math.erf(1 / math.sqrt(2)))
    for mean, std, top, lo, hi, n_mean, n_std in [ours] + ([theirs] if theirs else []):
        assert abs(mean) < 2e-4 and abs(std - 0.02) < 2e-4 and top < 0.02 * 6
        assert 0 <= lo and hi <= 2 and abs(n_mean - 1) < 5e-3 and abs(n_std - cut_std) < 5e-3


# ----------------------------------------------------------------------------------------------
# timm's training recipe: Mixup/CutMix, soft-target losses, EMA, parameter groups, schedules,
# optimizers and gradient clipping, on a small ResNet-style network in channels_last
# ----------------------------------------------------------------------------------------------


def small_resnet(m, num_classes=4):
    nn = m.nn

    class BasicBlock(nn.Module):
        def __init__(self, inplanes, planes, stride=1):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.act1 = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.act2 = nn.ReLU(inplace=True)
            self.downsample = None
            if stride != 1 or inplanes != planes:
                self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                                nn.BatchNorm2d(planes))

        def forward(self, x):
            shortcut = x
            x = self.act1(self.bn1(self.conv1(x)))
            x = self.bn2(self.conv2(x))
            if self.downsample is not None:
                shortcut = self.downsample(shortcut)
            x += shortcut
            return self.act2(x)

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(8)
            self.act1 = nn.ReLU(inplace=True)
            self.layer1 = BasicBlock(8, 8)
            self.layer2 = BasicBlock(8, 12, stride=2)
            self.global_pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(12, num_classes)

        def forward(self, x):
            x = self.act1(self.bn1(self.conv1(x)))
            x = self.layer2(self.layer1(x))
            return self.fc(self.global_pool(x).flatten(1))

    return ResNet()


def one_hot(m, x, num_classes, on_value=1., off_value=0.):
    torch = m.torch
    x = x.long().view(-1, 1)
    return torch.full((x.size()[0], num_classes), off_value, device=x.device).scatter_(1, x, on_value)


def mixup_target(m, target, num_classes, lam=1., smoothing=0.0):
    off_value = smoothing / num_classes
    on_value = 1. - smoothing + off_value
    y1 = one_hot(m, target, num_classes, on_value=on_value, off_value=off_value)
    y2 = one_hot(m, target.flip(0), num_classes, on_value=on_value, off_value=off_value)
    return y1 * lam + y2 * (1. - lam)


def rand_bbox(img_shape, lam, margin=0., count=None):
    ratio = np.sqrt(1 - lam)
    img_h, img_w = img_shape[-2:]
    cut_h, cut_w = int(img_h * ratio), int(img_w * ratio)
    margin_y, margin_x = int(margin * cut_h), int(margin * cut_w)
    cy = np.random.randint(0 + margin_y, img_h - margin_y, size=count)
    cx = np.random.randint(0 + margin_x, img_w - margin_x, size=count)
    yl = np.clip(cy - cut_h // 2, 0, img_h)
    yh = np.clip(cy + cut_h // 2, 0, img_h)
    xl = np.clip(cx - cut_w // 2, 0, img_w)
    xh = np.clip(cx + cut_w // 2, 0, img_w)
    return yl, yh, xl, xh


def cutmix_bbox_and_lam(img_shape, lam, correct_lam=True, count=None):
    yl, yu, xl, xu = rand_bbox(img_shape, lam, count=count)
    if correct_lam:
        bbox_area = (yu - yl) * (xu - xl)
        lam = 1. - bbox_area / float(img_shape[-2] * img_shape[-1])
    return (yl, yu, xl, xu), lam


class Mixup:
    """ timm's Mixup/Cutmix, per 'batch' or per 'elem' """

    def __init__(self, m, mixup_alpha=1., cutmix_alpha=0., prob=1.0, switch_prob=0.5, mode='batch',
                 correct_lam=True, label_smoothing=0.1, num_classes=1000):
        self.m = m
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.mix_prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing
        self.num_classes = num_classes
        self.mode = mode
        self.correct_lam = correct_lam
        self.mixup_enabled = True

    def _params_per_elem(self, batch_size):
        lam = np.ones(batch_size, dtype=np.float32)
        use_cutmix = np.zeros(batch_size, dtype=bool)
        if self.mixup_enabled:
            if self.mixup_alpha > 0. and self.cutmix_alpha > 0.:
                use_cutmix = np.random.rand(batch_size) < self.switch_prob
                lam_mix = np.where(
                    use_cutmix,
                    np.random.beta(self.cutmix_alpha, self.cutmix_alpha, size=batch_size),
                    np.random.beta(self.mixup_alpha, self.mixup_alpha, size=batch_size))
            elif self.mixup_alpha > 0.:
                lam_mix = np.random.beta(self.mixup_alpha, self.mixup_alpha, size=batch_size)
            else:
                use_cutmix = np.ones(batch_size, dtype=bool)
                lam_mix = np.random.beta(self.cutmix_alpha, self.cutmix_alpha, size=batch_size)
            lam = np.where(np.random.rand(batch_size) < self.mix_prob, lam_mix.astype(np.float32), lam)
        return lam, use_cutmix

    def _params_per_batch(self):
        lam = 1.
        use_cutmix = False
        if self.mixup_enabled and np.random.rand() < self.mix_prob:
            if self.mixup_alpha > 0. and self.cutmix_alpha > 0.:
                use_cutmix = np.random.rand() < self.switch_prob
                lam_mix = np.random.beta(self.cutmix_alpha, self.cutmix_alpha) if use_cutmix else \
                    np.random.beta(self.mixup_alpha, self.mixup_alpha)
            elif self.mixup_alpha > 0.:
                lam_mix = np.random.beta(self.mixup_alpha, self.mixup_alpha)
            else:
                use_cutmix = True
                lam_mix = np.random.beta(self.cutmix_alpha, self.cutmix_alpha)
            lam = float(lam_mix)
        return lam, use_cutmix

    def _mix_elem(self, x):
        torch = self.m.torch
        batch_size = len(x)
        lam_batch, use_cutmix = self._params_per_elem(batch_size)
        x_orig = x.clone()  # need to keep an unmodified original for mixing source
        for i in range(batch_size):
            j = batch_size - i - 1
            lam = lam_batch[i]
            if lam != 1.:
                if use_cutmix[i]:
                    (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(x[i].shape, lam, correct_lam=self.correct_lam)
                    x[i][:, yl:yh, xl:xh] = x_orig[j][:, yl:yh, xl:xh]
                    lam_batch[i] = lam
                else:
                    x[i] = x[i] * lam + x_orig[j] * (1 - lam)
        return torch.tensor(lam_batch, device=x.device, dtype=x.dtype).unsqueeze(1)

    def _mix_batch(self, x):
        lam, use_cutmix = self._params_per_batch()
        if lam == 1.:
            return 1.
        if use_cutmix:
            (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(x.shape, lam, correct_lam=self.correct_lam)
            x[:, :, yl:yh, xl:xh] = x.flip(0)[:, :, yl:yh, xl:xh]
        else:
            x_flipped = x.flip(0).mul_(1. - lam)
            x.mul_(lam).add_(x_flipped)
        return lam

    def __call__(self, x, target):
        assert len(x) % 2 == 0, 'Batch size should be even when using this'
        if self.mode == 'elem':
            lam = self._mix_elem(x)
        else:
            lam = self._mix_batch(x)
        target = mixup_target(self.m, target, self.num_classes, lam, self.label_smoothing)
        return x, target


def soft_target_cross_entropy(m):
    nn, F = m.nn, m.F

    class SoftTargetCrossEntropy(nn.Module):
        def __init__(self):
            super(SoftTargetCrossEntropy, self).__init__()

        def forward(self, x, target):
            loss = m.torch.sum(-target * F.log_softmax(x, dim=-1), dim=-1)
            return loss.mean()

    return SoftTargetCrossEntropy()


def label_smoothing_cross_entropy(m, smoothing=0.1):
    nn, F = m.nn, m.F

    class LabelSmoothingCrossEntropy(nn.Module):
        def __init__(self, smoothing=0.1):
            super(LabelSmoothingCrossEntropy, self).__init__()
            assert smoothing < 1.0
            self.smoothing = smoothing
            self.confidence = 1. - smoothing

        def forward(self, x, target):
            logprobs = F.log_softmax(x, dim=-1)
            nll_loss = -logprobs.gather(dim=-1, index=target.unsqueeze(1))
            nll_loss = nll_loss.squeeze(1)
            smooth_loss = -logprobs.mean(dim=-1)
            loss = self.confidence * nll_loss + self.smoothing * smooth_loss
            return loss.mean()

    return LabelSmoothingCrossEntropy(smoothing)


def model_ema_v2(m, model, decay):
    nn = m.nn
    torch = m.torch

    class ModelEmaV2(nn.Module):
        def __init__(self, model, decay=0.9999, device=None):
            super().__init__()
            self.module = deepcopy(model)
            self.module.eval()
            self.decay = decay
            self.device = device

        def _update(self, model, update_fn):
            with torch.no_grad():
                for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
                    if self.device is not None:
                        model_v = model_v.to(device=self.device)
                    ema_v.copy_(update_fn(ema_v, model_v))

        def update(self, model):
            self._update(model, update_fn=lambda e, m: self.decay * e + (1. - self.decay) * m)

        def set(self, model):
            self._update(model, update_fn=lambda e, m: m)

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    return ModelEmaV2(model, decay)


def lamb(m):
    torch = m.torch

    class Lamb(m.optim.Optimizer):
        """ timm's Lamb (NvLamb), as timm writes it (less caution and decoupled decay) """

        def __init__(self, params, lr=1e-3, bias_correction=True, betas=(0.9, 0.999), eps=1e-6,
                     weight_decay=0.01, grad_averaging=True, max_grad_norm=1.0, trust_clip=False,
                     always_adapt=False):
            defaults = dict(lr=lr, bias_correction=bias_correction, betas=betas, eps=eps,
                            weight_decay=weight_decay, grad_averaging=grad_averaging,
                            max_grad_norm=max_grad_norm, trust_clip=trust_clip, always_adapt=always_adapt)
            super().__init__(params, defaults)

        def _get_clip_grad_norm(self):
            max_grad_norm = self.defaults['max_grad_norm']
            if max_grad_norm is None:
                return None
            norms = []
            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    if grad.is_sparse:
                        raise RuntimeError('Lamb does not support sparse gradients, consider SparseAdam instead.')
                    norms.append(torch.linalg.vector_norm(grad))
            global_norm = torch.linalg.vector_norm(torch.stack(norms))
            clip_global_norm = (global_norm / max_grad_norm).clamp_(min=1.0)
            return clip_global_norm

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            clip_grad_norm = self._get_clip_grad_norm()
            for group in self.param_groups:
                bias_correction = 1 if group['bias_correction'] else 0
                beta1, beta2 = group['betas']
                grad_averaging = 1 if group['grad_averaging'] else 0
                beta3 = 1 - beta1 if grad_averaging else 1.0
                if 'step' not in group:
                    group['step'] = torch.tensor(0.0, dtype=torch.float32, device='cpu')
                group['step'].add_(1)
                if not any(p.grad is not None for p in group['params']):
                    continue
                step = group['step'].item()
                if bias_correction:
                    bias_correction1 = 1 - beta1 ** step
                    bias_correction2 = 1 - beta2 ** step
                else:
                    bias_correction1, bias_correction2 = 1.0, 1.0
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    if clip_grad_norm is not None:
                        grad.div_(clip_grad_norm)
                    state = self.state[p]
                    if len(state) == 0:
                        state['exp_avg'] = torch.zeros_like(p)
                        state['exp_avg_sq'] = torch.zeros_like(p)
                    exp_avg, exp_avg_sq = state['exp_avg'], state['exp_avg_sq']
                    exp_avg.mul_(beta1).add_(grad, alpha=beta3)  # m_t
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)  # v_t
                    denom = (exp_avg_sq.sqrt() / (bias_correction2 ** 0.5)).add_(group['eps'])
                    update = (exp_avg / bias_correction1).div_(denom)
                    weight_decay = group['weight_decay']
                    if weight_decay != 0:
                        update.add_(p, alpha=weight_decay)
                    if weight_decay != 0 or group['always_adapt']:
                        w_norm = p.norm(2.0)
                        g_norm = update.norm(2.0)
                        trust_ratio = w_norm / g_norm
                        trust_ratio = torch.where(
                            w_norm > 0,
                            torch.where(g_norm > 0, trust_ratio, 1.0),
                            1.0,
                        )
                        if group['trust_clip']:
                            trust_ratio = torch.clamp(trust_ratio, max=1.0)
                        update.mul_(trust_ratio)
                    p.add_(update, alpha=-group['lr'])
            return loss

    return Lamb


def unitwise_norm(x, norm_type=2.0):
    if x.ndim <= 1:
        return x.norm(norm_type)
    else:
        return x.norm(norm_type, dim=tuple(range(1, x.ndim)), keepdim=True)


def adaptive_clip_grad(m, parameters, clip_factor=0.01, eps=1e-3, norm_type=2.0):
    torch = m.torch
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    for p in parameters:
        if p.grad is None:
            continue
        p_data = p.detach()
        g_data = p.grad.detach()
        max_norm = unitwise_norm(p_data, norm_type=norm_type).clamp_(min=eps).mul_(clip_factor)
        grad_norm = unitwise_norm(g_data, norm_type=norm_type)
        clipped_grad = g_data * (max_norm / grad_norm.clamp(min=1e-6))
        new_grads = torch.where(grad_norm < max_norm, g_data, clipped_grad)
        p.grad.detach().copy_(new_grads)


def param_groups_weight_decay(model, weight_decay=1e-5, no_weight_decay_list=()):
    no_weight_decay_list = set(no_weight_decay_list)
    decay = []
    no_decay = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim <= 1 or name.endswith(".bias") or name in no_weight_decay_list:
            no_decay.append(param)
        else:
            decay.append(param)
    return [
        {'params': no_decay, 'weight_decay': 0.},
        {'params': decay, 'weight_decay': weight_decay}]


def param_groups_layer_decay(model, weight_decay=0.05, layer_decay=.75):
    """ BEiT's layer-wise lr decay: a layer's lr_scale is layer_decay ** (depth below the head) """
    layer_map = {}
    for name, _ in model.named_parameters():
        if name.startswith(('conv1', 'bn1')):
            layer_map[name] = 0
        elif name.startswith('layer1'):
            layer_map[name] = 1
        elif name.startswith('layer2'):
            layer_map[name] = 2
        else:
            layer_map[name] = 3
    num_layers = max(layer_map.values()) + 1
    layer_max = num_layers - 1
    layer_scales = list(layer_decay ** (layer_max - i) for i in range(num_layers))
    param_groups = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim == 1:
            g_decay = "no_decay"
            this_decay = 0.
        else:
            g_decay = "decay"
            this_decay = weight_decay
        layer_id = layer_map.get(name, layer_max)
        this_scale = layer_scales[layer_id]
        group_name = "layer_%d_%s" % (layer_id, g_decay)
        if group_name not in param_groups:
            param_groups[group_name] = {"lr_scale": this_scale, "weight_decay": this_decay, "params": []}
        param_groups[group_name]["params"].append(param)
    return list(param_groups.values())


def recipe_training(m, weights, opt='adamw', clip_mode='norm', mixup_mode='batch', steps=4):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    np.random.seed(42)  # Mixup's lambdas and boxes come from NumPy's global generator
    model = load(m, small_resnet(m), weights)
    model = model.to(memory_format=torch.channels_last)
    base_lr = 0.05 if opt == 'sgd' else 2e-3
    if opt == 'adamw':
        param_groups = param_groups_layer_decay(model, weight_decay=0.05, layer_decay=0.6)
        optimizer = optim.AdamW(param_groups, lr=base_lr, betas=(0.9, 0.95))
        scheduler = None
    elif opt == 'lamb':
        optimizer = lamb(m)(param_groups_weight_decay(model, 0.02), lr=base_lr, max_grad_norm=0.5)
        warmup = 2

        def lr_lambda(step):
            if step < warmup:
                return float(step + 1) / warmup
            progress = float(step - warmup) / float(max(1, steps - warmup))
            return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))

        scheduler = optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    else:
        optimizer = optim.SGD(param_groups_weight_decay(model, 1e-4), lr=base_lr, momentum=0.9, nesterov=True)
        warmup_lr = optim.lr_scheduler.LinearLR(optimizer, start_factor=0.1, total_iters=2)
        main_lr = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - 2, eta_min=0.0)
        scheduler = optim.lr_scheduler.SequentialLR(optimizer, schedulers=[warmup_lr, main_lr], milestones=[2])
    mixup_fn = Mixup(m, mixup_alpha=0.8, cutmix_alpha=1.0, switch_prob=0.5, mode=mixup_mode,
                     label_smoothing=0.1, num_classes=4)
    train_loss_fn = soft_target_cross_entropy(m)
    torchvision_loss_fn = nn.CrossEntropyLoss(label_smoothing=0.1)
    model_ema = model_ema_v2(m, model, decay=0.9)
    rng = np.random.default_rng(3)
    losses, lrs, mixed_inputs, targets = [], [], [], []
    for step in range(steps):
        if opt == 'adamw':  # MAE / BEiT's per-iteration schedule honours each group's lr_scale
            lr = base_lr * (step + 1) / steps
            for param_group in optimizer.param_groups:
                param_group["lr"] = lr * param_group.get("lr_scale", 1.0)
        model.train()
        input = torch.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
        target = torch.tensor(rng.integers(0, 4, 4))
        input = input.contiguous(memory_format=torch.channels_last)
        input, target = mixup_fn(input, target)
        mixed_inputs.append(input.clone())
        targets.append(target)
        output = model(input)
        loss = train_loss_fn(output, target)
        # torchvision's references: the same soft targets through nn.CrossEntropyLoss(label_smoothing=)
        loss_tv = torchvision_loss_fn(output, target)
        optimizer.zero_grad()
        (loss + 0.5 * loss_tv).backward()
        if clip_mode == 'norm':
            total_norm = nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        elif clip_mode == 'value':
            nn.utils.clip_grad_value_(model.parameters(), 0.01)
        else:
            adaptive_clip_grad(m, model.parameters(), clip_factor=0.02)
        optimizer.step()
        model_ema.update(model)
        if scheduler is not None:
            scheduler.step()
        losses.append((loss.item(), loss_tv.item()))
        lrs.append([g['lr'] for g in optimizer.param_groups])  # the next step's, after scheduler.step()
    grads = {n: p.grad for n, p in model.named_parameters()}
    model.eval()
    model_ema.eval()
    with torch.no_grad():
        probe = torch.tensor(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
        out, out_ema = model(probe), model_ema(probe)
    return dict(losses=losses, lrs=lrs, inputs=mixed_inputs, targets=targets, grads=grads,
                params=dict(model.state_dict()), ema=dict(model_ema.module.state_dict()), out=out,
                out_ema=out_ema)


def check_recipe(opt, clip_mode, mixup_mode):
    weights = weights_of(small_resnet)
    ours, _ = run_both(recipe_training, weights, opt=opt, clip_mode=clip_mode, mixup_mode=mixup_mode,
                       rtol=2e-4, atol=2e-5)
    # the EMA is a running average of the model's state (buffers too): after four updates from the
    # initial weights it lies between them and the model's
    ema_counter = ours["ema"]["bn1.num_batches_tracked"]
    assert ours["params"]["bn1.num_batches_tracked"] == 4 and ema_counter in (0, 1, 2)  # integers truncate
    assert not np.allclose(ours["ema"]["bn1.running_mean"], 0)
    targets = np.stack(ours["targets"])
    np.testing.assert_allclose(targets.sum(-1), 1, rtol=1e-6)
    assert targets.min() >= 0.1 / 4 * 0.99
    return ours


def test_recipe_adamw_layer_decay_clip_norm_mixup_batch():
    ours = check_recipe('adamw', 'norm', 'batch')
    lrs = np.array(ours["lrs"])
    scales = sorted(set(np.round(lrs[0] / lrs[0].max(), 6)))
    np.testing.assert_allclose(scales, [0.6 ** 3, 0.6 ** 2, 0.6, 1.0], rtol=1e-5)


def test_recipe_lamb_cosine_warmup_clip_value_mixup_elem():
    ours = check_recipe('lamb', 'value', 'elem')
    np.testing.assert_allclose(np.array(ours["lrs"])[:, 0],
                               [2e-3, 2e-3, 2e-3 * 0.5 * (1 + math.cos(math.pi * 0.5)), 0.0], atol=1e-12)


def test_recipe_sgd_nesterov_sequential_lr_agc():
    ours = check_recipe('sgd', 'agc', 'batch')
    np.testing.assert_allclose(np.array(ours["lrs"])[:, 0], [0.005 + 0.0225, 0.05, 0.025, 0.0], rtol=1e-6, atol=1e-12)


# ----------------------------------------------------------------------------------------------
# torchvision's classification references: set_weight_decay by norm classes, an EMA by
# AveragedModel(use_buffers=True), accuracy by topk, autocast(enabled=False); channels_last
# changing nothing; BatchNorm folded into the conv before it for eval
# ----------------------------------------------------------------------------------------------


def set_weight_decay(m, model, weight_decay, norm_weight_decay=None, norm_classes=None):
    nn = m.nn  # torchvision spells these torch.nn.…: torch_dot_nn_spelling in test_programs_nanogpt.py
    if not norm_classes:
        norm_classes = [
            nn.modules.batchnorm._BatchNorm,
            nn.LayerNorm,
            nn.GroupNorm,
            nn.modules.instancenorm._InstanceNorm,
            nn.LocalResponseNorm,
        ]
    norm_classes = tuple(norm_classes)
    params = {"other": [], "norm": []}
    params_weight_decay = {"other": weight_decay, "norm": norm_weight_decay}

    def _add_params(module, prefix=""):
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if norm_weight_decay is not None and isinstance(module, norm_classes):
                params["norm"].append(p)
            else:
                params["other"].append(p)
        for child_name, child_module in module.named_children():
            child_prefix = f"{prefix}.{child_name}" if prefix != "" else child_name
            _add_params(child_module, prefix=child_prefix)

    _add_params(model)
    param_groups = []
    for key in params:
        if len(params[key]) > 0:
            param_groups.append({"params": params[key], "weight_decay": params_weight_decay[key]})
    return param_groups


def exponential_moving_average(m, model, decay):
    optim = m.optim

    class ExponentialMovingAverage(optim.swa_utils.AveragedModel):
        """Maintains moving averages of model parameters using an exponential decay.
        ``ema_avg = decay * avg_model_param + (1 - decay) * model_param``"""

        def __init__(self, model, decay, device="cpu"):
            def ema_avg(avg_model_param, model_param, num_averaged):
                return decay * avg_model_param + (1 - decay) * model_param

            super().__init__(model, device, ema_avg, use_buffers=True)

    return ExponentialMovingAverage(model, decay)


def accuracy(m, output, target, topk=(1,)):
    """Computes the accuracy over the k top predictions for the specified values of k"""
    torch = m.torch
    with torch.inference_mode():
        maxk = max(topk)
        batch_size = target.size(0)
        if target.ndim == 2:
            target = target.max(dim=1)[1]
        _, pred = output.topk(maxk, 1, True, True)
        pred = pred.t()
        correct = pred.eq(target[None])
        res = []
        for k in topk:
            correct_k = correct[:k].flatten().sum(dtype=torch.float32)
            res.append(correct_k * (100.0 / batch_size))
        return res


def fold_bn(m, conv, bn):
    """The eval-mode conv whose output equals bn(conv(x)): weight * gamma / std, and the bias shifted"""
    torch, nn = m.torch, m.nn
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, bias=True)
    with torch.no_grad():
        std = (bn.running_var + bn.eps).sqrt()
        t = (bn.weight / std).reshape(-1, 1, 1, 1)
        fused.weight.copy_(conv.weight * t)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused.bias.copy_(bn.bias + (bias - bn.running_mean) * bn.weight / std)
    return fused


def fold_all_bn(m, module):
    nn = m.nn
    children = list(module.named_children())
    for (name, child), (next_name, next_child) in zip(children, children[1:]):
        if isinstance(child, nn.Conv2d) and isinstance(next_child, nn.BatchNorm2d):
            setattr(module, name, fold_bn(m, child, next_child))
            setattr(module, next_name, nn.Identity())
    for name, child in module.named_children():
        fold_all_bn(m, child)
    return module


def torchvision_training(m, weights, channels_last=False, epochs=2, lr_warmup_epochs=1, model_ema_steps=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, small_resnet(m), weights)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    parameters = set_weight_decay(m, model, 1e-4, norm_weight_decay=0.0)
    optimizer = optim.SGD(parameters, lr=0.1, momentum=0.9, weight_decay=1e-4, nesterov=True)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    main_lr_scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs - lr_warmup_epochs, eta_min=0.0)
    warmup_lr_scheduler = optim.lr_scheduler.LinearLR(optimizer, start_factor=0.01, total_iters=lr_warmup_epochs)
    lr_scheduler = optim.lr_scheduler.SequentialLR(
        optimizer, schedulers=[warmup_lr_scheduler, main_lr_scheduler], milestones=[lr_warmup_epochs])
    model_ema = exponential_moving_average(m, model, decay=1.0 - 0.2)
    rng = np.random.default_rng(5)
    data = [(torch.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32)),
             torch.tensor(rng.integers(0, 4, 4))) for _ in range(3)]
    losses, accs = [], []
    for epoch in range(epochs):
        model.train()
        for i, (image, target) in enumerate(data):
            if channels_last:
                image = image.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", enabled=False):
                output = model(image)
                loss = criterion(output, target)
            optimizer.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 2.0)
            optimizer.step()
            if i % model_ema_steps == 0:
                model_ema.update_parameters(model)
                if epoch < lr_warmup_epochs:
                    # Reset ema buffer to keep copying weights during warmup period
                    model_ema.n_averaged.fill_(0)
            acc1, acc3 = accuracy(m, output, target, topk=(1, 3))
            losses.append(loss.item())
            accs.append((acc1.item(), acc3.item()))
        lr_scheduler.step()
    grads = {n: p.grad for n, p in model.named_parameters()}
    model.eval()
    probe = torch.tensor(rng.standard_normal((3, 3, 8, 8)).astype(np.float32))
    with torch.no_grad():
        out, out_ema = model(probe), model_ema(probe)
        folded = fold_all_bn(m, deepcopy(model))
        out_folded = folded(probe)
    n_bn = sum(isinstance(mod, nn.BatchNorm2d) for mod in folded.modules())
    return dict(losses=losses, accs=accs, grads=grads, params=dict(model.state_dict()),
                ema=dict(model_ema.module.state_dict()), n_averaged=model_ema.n_averaged, out=out,
                out_ema=out_ema, out_folded=out_folded, n_bn=n_bn, n_groups=len(parameters),
                lr=optimizer.param_groups[0]["lr"])


def test_torchvision_reference_recipe_and_bn_folding():
    weights = weights_of(small_resnet)
    ours, theirs = run_both(torchvision_training, weights, rtol=2e-4, atol=2e-5)
    assert ours["n_bn"] == 0 and ours["n_groups"] == 2 and int(ours["n_averaged"]) == 2
    np.testing.assert_allclose(ours["out_folded"], ours["out"], rtol=1e-4, atol=1e-5)
    assert not np.allclose(ours["out_ema"], ours["out"], atol=1e-4)
    # the EMA averages the BN running statistics too (use_buffers=True)
    assert not np.allclose(ours["ema"]["bn1.running_var"], ours["params"]["bn1.running_var"])
    assert all(a3 >= a1 for a1, a3 in ours["accs"])


def test_channels_last_changes_no_result():
    weights = weights_of(small_resnet)
    plain_layout, _ = run_both(torchvision_training, weights, channels_last=False, compare=False)
    channels_last, _ = run_both(torchvision_training, weights, channels_last=True, rtol=2e-4, atol=2e-5)
    for key in ("losses", "grads", "params", "out", "out_folded"):
        a, b = plain_layout[key], channels_last[key]
        for k in (a if isinstance(a, dict) else [None]):
            np.testing.assert_allclose(a[k] if k else a, b[k] if k else b, rtol=1e-5, atol=1e-6, err_msg=f"{key} {k}")


def autocast_on_cpu(m):
    torch, nn = m.torch, m.nn
    lin = nn.Linear(4, 3)
    x = torch.ones(2, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        off = lin(x)
    with torch.autocast(device_type="cpu", dtype=torch.float16):
        on = lin(x)
    return off.dtype == torch.float32, on.dtype == torch.float16


def test_cpu_autocast_float16():
    """A float16 autocast on 'cpu' lowers the linear map to float16, as PyTorch's; ``enabled=False``, as
    torchvision's references pass without a GradScaler, runs in float32."""
    assert autocast_on_cpu(OURS) == (True, True)
    torch_modules = pytorch()
    if torch_modules is not None:
        assert autocast_on_cpu(torch_modules) == (True, True)
    with OURS.torch.autocast("cpu", enabled=False):
        assert OURS.nn.Linear(4, 3)(OURS.torch.ones(2, 4)).dtype == OURS.torch.float32


# ----------------------------------------------------------------------------------------------
# timm's foreach code: Adan's multi-tensor step (with caution) and ModelEmaV3's lerp over state_dict
# values, with the decay warmed up; the single-tensor paths give the same numbers
# ----------------------------------------------------------------------------------------------


def adan(m):
    torch = m.torch

    def _single_tensor_adan(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, *, beta1, beta2,
                            beta3, bias_correction1, bias_correction2, bias_correction3_sqrt, lr, weight_decay, eps,
                            no_prox, caution):
        for i, param in enumerate(params):
            grad = grads[i]
            exp_avg = exp_avgs[i]
            exp_avg_sq = exp_avg_sqs[i]
            exp_avg_diff = exp_avg_diffs[i]
            neg_grad_or_diff = neg_pre_grads[i]
            neg_grad_or_diff.add_(grad)
            exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)  # m_t
            exp_avg_diff.mul_(beta2).add_(neg_grad_or_diff, alpha=1 - beta2)  # diff_t
            neg_grad_or_diff.mul_(beta2).add_(grad)
            exp_avg_sq.mul_(beta3).addcmul_(neg_grad_or_diff, neg_grad_or_diff, value=1 - beta3)  # n_t
            denom = (exp_avg_sq.sqrt() / bias_correction3_sqrt).add_(eps)
            step_size_diff = lr * beta2 / bias_correction2
            step_size = lr / bias_correction1
            if caution:
                mask = (exp_avg * grad > 0).to(grad.dtype)
                mask.div_(mask.mean().clamp_(min=1e-3))
                exp_avg = exp_avg * mask
            if no_prox:
                param.mul_(1 - lr * weight_decay)
                param.addcdiv_(exp_avg, denom, value=-step_size)
                param.addcdiv_(exp_avg_diff, denom, value=-step_size_diff)
            else:
                param.addcdiv_(exp_avg, denom, value=-step_size)
                param.addcdiv_(exp_avg_diff, denom, value=-step_size_diff)
                param.div_(1 + lr * weight_decay)
            neg_grad_or_diff.zero_().add_(grad, alpha=-1.0)

    def _multi_tensor_adan(params, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads, *, beta1, beta2,
                           beta3, bias_correction1, bias_correction2, bias_correction3_sqrt, lr, weight_decay, eps,
                           no_prox, caution):
        if len(params) == 0:
            return
        torch._foreach_add_(neg_pre_grads, grads)
        torch._foreach_mul_(exp_avgs, beta1)
        torch._foreach_add_(exp_avgs, grads, alpha=1 - beta1)  # m_t
        torch._foreach_mul_(exp_avg_diffs, beta2)
        torch._foreach_add_(exp_avg_diffs, neg_pre_grads, alpha=1 - beta2)  # diff_t
        torch._foreach_mul_(neg_pre_grads, beta2)
        torch._foreach_add_(neg_pre_grads, grads)
        torch._foreach_mul_(exp_avg_sqs, beta3)
        torch._foreach_addcmul_(exp_avg_sqs, neg_pre_grads, neg_pre_grads, value=1 - beta3)  # n_t
        denom = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction3_sqrt)
        torch._foreach_add_(denom, eps)
        step_size_diff = lr * beta2 / bias_correction2
        step_size = lr / bias_correction1
        if caution:
            masks = torch._foreach_mul(exp_avgs, grads)
            masks = [(m > 0).to(g.dtype) for m, g in zip(masks, grads)]
            mask_scale = [m.mean() for m in masks]
            torch._foreach_maximum_(mask_scale, 1e-3)
            torch._foreach_div_(masks, mask_scale)
            exp_avgs = torch._foreach_mul(exp_avgs, masks)
        if no_prox:
            torch._foreach_mul_(params, 1 - lr * weight_decay)
            torch._foreach_addcdiv_(params, exp_avgs, denom, value=-step_size)
            torch._foreach_addcdiv_(params, exp_avg_diffs, denom, value=-step_size_diff)
        else:
            torch._foreach_addcdiv_(params, exp_avgs, denom, value=-step_size)
            torch._foreach_addcdiv_(params, exp_avg_diffs, denom, value=-step_size_diff)
            torch._foreach_div_(params, 1 + lr * weight_decay)
        torch._foreach_zero_(neg_pre_grads)
        torch._foreach_add_(neg_pre_grads, grads, alpha=-1.0)

    class Adan(m.optim.Optimizer):
        def __init__(self, params, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, no_prox=False,
                     caution=False, foreach=None):
            defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, no_prox=no_prox,
                            caution=caution, foreach=foreach)
            super().__init__(params, defaults)

        @torch.no_grad()
        def step(self, closure=None):
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()
            try:
                has_scalar_maximum = 'Scalar' in torch.ops.aten._foreach_maximum_.overloads()
            except Exception:
                has_scalar_maximum = False
            for group in self.param_groups:
                params_with_grad, grads, exp_avgs, exp_avg_sqs, exp_avg_diffs, neg_pre_grads = [], [], [], [], [], []
                beta1, beta2, beta3 = group['betas']
                if 'step' in group:
                    group['step'] += 1
                else:
                    group['step'] = 1
                bias_correction1 = 1.0 - beta1 ** group['step']
                bias_correction2 = 1.0 - beta2 ** group['step']
                bias_correction3 = 1.0 - beta3 ** group['step']
                for p in group['params']:
                    if p.grad is None:
                        continue
                    params_with_grad.append(p)
                    grads.append(p.grad)
                    state = self.state[p]
                    if len(state) == 0:
                        state['exp_avg'] = torch.zeros_like(p)
                        state['exp_avg_sq'] = torch.zeros_like(p)
                        state['exp_avg_diff'] = torch.zeros_like(p)
                    if 'neg_pre_grad' not in state or group['step'] == 1:
                        state['neg_pre_grad'] = -p.grad.clone()
                    exp_avgs.append(state['exp_avg'])
                    exp_avg_sqs.append(state['exp_avg_sq'])
                    exp_avg_diffs.append(state['exp_avg_diff'])
                    neg_pre_grads.append(state['neg_pre_grad'])
                if not params_with_grad:
                    continue
                if group['foreach'] is None:
                    use_foreach = not group['caution'] or has_scalar_maximum
                else:
                    use_foreach = group['foreach']
                func = _multi_tensor_adan if use_foreach else _single_tensor_adan
                func(params_with_grad, grads, exp_avgs=exp_avgs, exp_avg_sqs=exp_avg_sqs,
                     exp_avg_diffs=exp_avg_diffs, neg_pre_grads=neg_pre_grads, beta1=beta1, beta2=beta2,
                     beta3=beta3, bias_correction1=bias_correction1, bias_correction2=bias_correction2,
                     bias_correction3_sqrt=math.sqrt(bias_correction3), lr=group['lr'],
                     weight_decay=group['weight_decay'], eps=group['eps'], no_prox=group['no_prox'],
                     caution=group['caution'])
            return loss

    return Adan


def model_ema_v3(m, model, **kwargs):
    torch, nn = m.torch, m.nn

    class ModelEmaV3(nn.Module):
        def __init__(self, model, decay=0.9999, min_decay=0.0, update_after_step=0, use_warmup=False,
                     warmup_gamma=1.0, warmup_power=2 / 3, device=None, foreach=True, exclude_buffers=False):
            super().__init__()
            self.module = deepcopy(model)
            self.module.eval()
            self.decay = decay
            self.min_decay = min_decay
            self.update_after_step = update_after_step
            self.use_warmup = use_warmup
            self.warmup_gamma = warmup_gamma
            self.warmup_power = warmup_power
            self.foreach = foreach
            self.device = device
            self.exclude_buffers = exclude_buffers

        def get_decay(self, step=None):
            if step is None:
                return self.decay
            step = max(0, step - self.update_after_step - 1)
            if step <= 0:
                return 0.0
            if self.use_warmup:
                decay = 1 - (1 + step / self.warmup_gamma) ** -self.warmup_power
                decay = max(min(decay, self.decay), self.min_decay)
            else:
                decay = self.decay
            return decay

        @torch.no_grad()
        def update(self, model, step=None):
            decay = self.get_decay(step)
            if self.exclude_buffers:
                self.apply_update_no_buffers_(model, decay)
            else:
                self.apply_update_(model, decay)

        def apply_update_(self, model, decay):
            if self.foreach:
                ema_lerp_values = []
                model_lerp_values = []
                for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
                    if ema_v.is_floating_point():
                        ema_lerp_values.append(ema_v)
                        model_lerp_values.append(model_v)
                    else:
                        ema_v.copy_(model_v)
                torch._foreach_lerp_(ema_lerp_values, model_lerp_values, weight=1. - decay)
            else:
                for ema_v, model_v in zip(self.module.state_dict().values(), model.state_dict().values()):
                    if ema_v.is_floating_point():
                        ema_v.lerp_(model_v.to(device=self.device), weight=1. - decay)
                    else:
                        ema_v.copy_(model_v.to(device=self.device))

        def apply_update_no_buffers_(self, model, decay):
            ema_params = tuple(self.module.parameters())
            model_params = tuple(model.parameters())
            if self.foreach:
                torch._foreach_lerp_(ema_params, model_params, weight=1. - decay)
            else:
                for ema_p, model_p in zip(ema_params, model_params):
                    ema_p.lerp_(model_p.to(device=self.device), weight=1. - decay)
            for ema_b, model_b in zip(self.module.buffers(), model.buffers()):
                ema_b.copy_(model_b.to(device=self.device))

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    return ModelEmaV3(model, **kwargs)


def adan_ema_training(m, weights, foreach=True, caution=True, no_prox=False, steps=4):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, small_resnet(m), weights)
    optimizer = adan(m)(param_groups_weight_decay(model, 0.02), lr=1e-2, caution=caution, no_prox=no_prox,
                        foreach=foreach)
    emas = [model_ema_v3(m, model, decay=0.99, use_warmup=True, warmup_power=3 / 4, foreach=foreach),
            model_ema_v3(m, model, decay=0.9, foreach=foreach, exclude_buffers=True, update_after_step=1)]
    rng = np.random.default_rng(9)
    losses = []
    for step in range(steps):
        model.train()
        x = torch.tensor(rng.standard_normal((4, 3, 8, 8)).astype(np.float32))
        y = torch.tensor(rng.integers(0, 4, 4))
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        for ema in emas:
            ema.update(model, step=step + 2)
        losses.append(loss.item())
    return dict(
        losses=losses,
        params=dict(model.state_dict()),
        ema=dict(emas[0].module.state_dict()),
        ema_params=dict(emas[1].module.state_dict()),
        state=[optimizer.state[p]["exp_avg_diff"] for p in model.parameters()],
    )


def test_adan_foreach_and_model_ema_v3():
    weights = weights_of(small_resnet)
    by_foreach, _ = run_both(adan_ema_training, weights, foreach=True, rtol=2e-4, atol=2e-5)
    one_by_one, _ = run_both(adan_ema_training, weights, foreach=False, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(by_foreach["losses"], one_by_one["losses"], rtol=1e-5)
    for key in ("params", "ema", "ema_params"):
        for k in by_foreach[key]:
            np.testing.assert_allclose(by_foreach[key][k], one_by_one[key][k], rtol=1e-5, atol=1e-6, err_msg=k)
    # ModelEmaV3 copies integer buffers; with exclude_buffers it copies every buffer
    assert by_foreach["ema"]["bn1.num_batches_tracked"] == 4
    np.testing.assert_array_equal(
        by_foreach["ema_params"]["bn1.running_mean"], by_foreach["params"]["bn1.running_mean"]
    )
    assert not np.allclose(by_foreach["ema"]["bn1.running_mean"], by_foreach["params"]["bn1.running_mean"])
    run_both(adan_ema_training, weights, caution=False, no_prox=True, rtol=2e-4, atol=2e-5)


# ----------------------------------------------------------------------------------------------
# timm's attention and convolution modules and losses, each forward and backward: CBAM / ECA /
# global context, coordinate attention by torch.split, MedianPool2d by unfold().median(), space-to-depth
# and split attention's radix softmax, CondConv's per-sample grouped conv, MixedConv2d, in-place
# activations, AsymmetricLoss with set_grad_enabled(False), JsdCrossEntropy, timm's BinaryCrossEntropy,
# RoPE's rotate-half, qk-norm SDPA, checkpoint_seq; pools, interpolation, unfold/fold, norms, gathers
# ----------------------------------------------------------------------------------------------


def data(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def cbam_eca_gc(m):
    torch, nn, F = m.torch, m.nn, m.F
    x = torch.tensor(np.round(data(2, 4, 5, 5), 1), requires_grad=True)
    s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
    conv = nn.Conv2d(2, 1, 7, padding=3, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor(data(1, 2, 7, 7, seed=4)))
    x1 = x * conv(s).sigmoid()
    y = x1.mean((2, 3)).view(x.shape[0], 1, -1)
    c1 = nn.Conv1d(1, 1, kernel_size=3, padding=1, bias=False)
    with torch.no_grad():
        c1.weight.copy_(torch.tensor(data(1, 1, 3, seed=5)))
    y = c1(y).sigmoid().view(x.shape[0], -1, 1, 1)
    x2 = x1 * y.expand_as(x1)
    B, C, H, W = x2.shape
    attn = F.softmax(x2.mean(1, keepdim=True).view(B, 1, H * W), -1).unsqueeze(-1)
    context = x2.reshape(B, C, H * W).unsqueeze(1) @ attn
    out = x2 + context.view(B, C, 1, 1)
    (out * torch.tensor(data(2, 4, 5, 5, seed=6))).sum().backward()
    return out, x.grad


def coord_attention_split(m):
    torch = m.torch
    x = torch.tensor(data(2, 3, 4, 5), requires_grad=True)
    B, C, H, W = x.shape
    x_h = x.mean(3, keepdim=True)
    x_w = x.mean(2, keepdim=True).permute(0, 1, 3, 2)
    y = torch.cat([x_h, x_w], dim=2)
    y = m.F.hardswish(y)
    a_h, a_w = torch.split(y, [H, W], dim=2)
    a_w = a_w.permute(0, 1, 3, 2)
    out = x * a_h.sigmoid() * a_w.sigmoid()
    out.pow(2).sum().backward()
    return out, x.grad


def median_pool(m):
    torch, F = m.torch, m.F
    x = torch.tensor(np.round(data(1, 2, 6, 6), 0), requires_grad=True)
    xp = F.pad(x, (1, 1, 1, 1), mode="reflect")
    u = xp.unfold(2, 3, 1).unfold(3, 3, 1)
    med = u.contiguous().view(u.size()[:4] + (-1,)).median(dim=-1)[0]
    (med * torch.tensor(data(*med.shape, seed=2))).sum().backward()
    return med, x.grad


def space_to_depth_splitattn(m):
    torch, F = m.torch, m.F
    x = torch.tensor(data(2, 4, 4, 4), requires_grad=True)
    N, C, H, W = x.size()
    bs = 2
    s = (
        x.view(N, C, H // bs, bs, W // bs, bs)
        .permute(0, 3, 5, 1, 2, 4)
        .contiguous()
        .view(N, C * bs * bs, H // bs, W // bs)
    )
    radix, card = 2, 1
    B, RC, H2, W2 = s.shape
    xr = s.reshape((B, radix, RC // radix, H2, W2))
    x_gap = xr.sum(dim=1).mean((2, 3), keepdim=True).repeat(1, 2, 1, 1)
    att = x_gap.view(B, card, radix, -1).transpose(1, 2)
    att = F.softmax(att, dim=1).reshape(B, -1).view(B, -1, 1, 1)
    out = (xr * att.reshape((B, radix, RC // radix, 1, 1))).sum(dim=1)
    (out * torch.tensor(data(*out.shape, seed=3))).sum().backward()
    return out, x.grad


def condconv(m):
    torch, F = m.torch, m.F
    x = torch.tensor(data(2, 3, 5, 5), requires_grad=True)
    experts = torch.tensor(data(4, 6 * 3 * 3 * 3, seed=1) * 0.2, requires_grad=True)
    routing = torch.sigmoid(torch.tensor(data(2, 4, seed=2), requires_grad=True))
    B, C, H, W = x.shape
    weight = torch.matmul(routing, experts).view(B * 6, 3, 3, 3)
    y = F.conv2d(x.reshape(1, B * C, H, W), weight, None, 1, 1, 1, groups=B)
    y = y.permute([1, 0, 2, 3]).view(B, 6, y.shape[-2], y.shape[-1])
    (y * torch.tensor(data(*y.shape, seed=3))).sum().backward()
    return y, x.grad, experts.grad


def mixed_conv(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    convs = nn.ModuleList([nn.Conv2d(2, 2, k, padding=k // 2, groups=2) for k in (3, 5)])
    x = torch.tensor(data(1, 4, 6, 6), requires_grad=True)
    for i, c in enumerate(convs):
        with torch.no_grad():
            c.weight.copy_(torch.tensor(data(*c.weight.shape, seed=10 + i)))
            c.bias.zero_()
    x_split = torch.split(x, [2, 2], 1)
    y = torch.cat([c(x_split[i]) for i, c in enumerate(convs)], 1)
    y.pow(2).sum().backward()
    return y, x.grad


def activations_inplace(m):
    torch, F, nn = m.torch, m.F, m.nn
    x = torch.tensor(data(3, 8) * 3, requires_grad=True)
    outs = []
    for mod in [
        nn.Mish(inplace=True),
        nn.ReLU6(inplace=True),
        nn.LeakyReLU(0.01, inplace=True),
        nn.SiLU(inplace=True),
        nn.GELU(approximate="tanh"),
        nn.Hardtanh(-2, 2, inplace=True),
        nn.ELU(inplace=True),
        nn.CELU(0.5, inplace=True),
        nn.SELU(inplace=True),
        nn.Hardsigmoid(inplace=True),
        nn.PReLU(),
        nn.GLU(),
    ]:
        outs.append(mod(x * 1.0))
    y = x * 1.0
    outs.append(y.sigmoid_())
    outs.append((x * 1.0).tanh_())
    outs.append(F.leaky_relu(x * 1, negative_slope=0.2, inplace=True))
    sum((o * (i + 1)).sum() for i, o in enumerate(outs)).backward()
    return outs, x.grad


def asymmetric_loss(m):
    torch = m.torch
    x = torch.tensor(data(4, 5), requires_grad=True)
    y = torch.tensor((data(4, 5, seed=1) > 0).astype(np.float32))
    gamma_neg, gamma_pos, clip, eps = 4, 1, 0.05, 1e-8
    x_sigmoid = torch.sigmoid(x)
    xs_pos = x_sigmoid
    xs_neg = 1 - x_sigmoid
    xs_neg = (xs_neg + clip).clamp(max=1)
    los_pos = y * torch.log(xs_pos.clamp(min=eps))
    los_neg = (1 - y) * torch.log(xs_neg.clamp(min=eps))
    loss = los_pos + los_neg
    torch.set_grad_enabled(False)
    pt0 = xs_pos * y
    pt1 = xs_neg * (1 - y)
    pt = pt0 + pt1
    one_sided_gamma = gamma_pos * y + gamma_neg * (1 - y)
    one_sided_w = torch.pow(1 - pt, one_sided_gamma)
    torch.set_grad_enabled(True)
    loss *= one_sided_w
    l = -loss.sum()
    l.backward()
    return l, x.grad


def jsd(m):
    torch, F = m.torch, m.F
    output = torch.tensor(data(6, 5), requires_grad=True)
    target = torch.tensor([1, 2, 0, 1, 2, 0])
    split_size = 2
    logits_split = torch.split(output, split_size)
    loss = F.cross_entropy(logits_split[0], target[:split_size], label_smoothing=0.1)
    probs = [F.softmax(logits, dim=1) for logits in logits_split]
    logp_mixture = torch.clamp(torch.stack(probs).mean(axis=0), 1e-7, 1).log()
    loss += 12 * sum([F.kl_div(logp_mixture, p_split, reduction="batchmean") for p_split in probs]) / len(probs)
    loss.backward()
    return loss, output.grad


def bce_timm(m):
    torch, F = m.torch, m.F
    x = torch.tensor(data(4, 5), requires_grad=True)
    target = torch.tensor([1, 2, 0, 4])
    num_classes = x.shape[-1]
    off_value = 0.1 / num_classes
    on_value = 1.0 - 0.1 + off_value
    target = target.long().view(-1, 1)
    target = torch.full((4, num_classes), off_value, device=x.device, dtype=x.dtype).scatter_(1, target, on_value)
    target = target.gt(0.2).to(dtype=target.dtype)
    pos_weight = torch.tensor([1.0, 2.0, 3.0, 1.0, 0.5])
    loss = F.binary_cross_entropy_with_logits(
        x, target, torch.tensor([1.0, 1.0, 2.0, 1.0, 1.0]), pos_weight=pos_weight, reduction="mean"
    )
    loss.backward()
    return loss, x.grad


def rope(m):
    torch = m.torch
    x = torch.tensor(data(2, 3, 6, 8), requires_grad=True)
    freqs = 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8))
    t = torch.arange(6).float()
    f = torch.outer(t, freqs).repeat_interleave(2, -1)
    sin, cos = f.sin(), f.cos()

    def rot(x):
        return torch.stack([-x[..., 1::2], x[..., ::2]], -1).reshape(x.shape)

    y = x * cos + rot(x) * sin
    (y * torch.tensor(data(2, 3, 6, 8, seed=1))).sum().backward()
    return y, x.grad


def attn_qknorm_dropout_eval(m):
    torch, nn, F = m.torch, m.nn, m.F
    q = torch.tensor(data(2, 2, 5, 4), requires_grad=True)
    k = torch.tensor(data(2, 2, 5, 4, seed=1), requires_grad=True)
    v = torch.tensor(data(2, 2, 5, 4, seed=2), requires_grad=True)
    qn = nn.LayerNorm(4)
    kn = nn.LayerNorm(4)
    drop = nn.Dropout(0.3)
    drop.eval()
    mask = torch.tensor(data(5, 5, seed=3) > -0.5)
    o = F.scaled_dot_product_attention(qn(q), kn(k), v, attn_mask=mask, dropout_p=drop.p if drop.training else 0.0)
    o2 = F.scaled_dot_product_attention(q, k, v, attn_mask=torch.tensor(data(2, 1, 5, 5, seed=4)), scale=0.3)
    o3 = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    (o.sum() + (o2 * o3).sum()).backward()
    return o, o2, o3, q.grad, k.grad, v.grad


def checkpoint_seq(m):
    torch, nn = m.torch, m.nn
    from_utils = m.torch.utils.checkpoint
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(4, 4), nn.GELU(), nn.Linear(4, 4), nn.LayerNorm(4))
    with torch.no_grad():
        for i, p in enumerate(seq.parameters()):
            p.copy_(torch.tensor(data(*p.shape, seed=i)))
    x = torch.tensor(data(3, 4), requires_grad=True)

    def run_function(start, end, functions):
        def forward(_x):
            for j in range(start, end + 1):
                _x = functions[j](_x)
            return _x

        return forward

    y = from_utils.checkpoint(run_function(0, 1, seq), x, use_reentrant=False)
    y = from_utils.checkpoint(run_function(2, 3, seq), y, use_reentrant=False)
    y2 = from_utils.checkpoint_sequential(seq, 2, x, use_reentrant=False)
    (y.pow(2).sum() + y2.sum()).backward()
    return y, x.grad, [p.grad for p in seq.parameters()]


def pools_and_interp(m):
    torch, nn, F = m.torch, m.nn, m.F
    x = torch.tensor(data(2, 3, 7, 7), requires_grad=True)
    outs = [
        F.avg_pool2d(x, 3, 1, 1, count_include_pad=False) - x,
        F.adaptive_avg_pool2d(x, 3),
        F.adaptive_max_pool2d(x, (2, 4)),
        nn.AdaptiveAvgPool2d((None, 1))(x),
        F.interpolate(x, scale_factor=1.5, mode="bicubic", align_corners=False),
        F.interpolate(x, scale_factor=2, mode="nearest"),
        F.interpolate(x, size=(5, 9), mode="nearest-exact"),
        F.interpolate(x, scale_factor=0.6, mode="bilinear", recompute_scale_factor=True),
        F.interpolate(x, scale_factor=0.6, mode="bilinear"),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)(x),
        F.unfold(x, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), dilation=1),
        F.unfold(x, 2, dilation=2),
        F.fold(F.unfold(x, 3, padding=1, stride=2), (7, 7), 3, padding=1, stride=2),
        F.avg_pool2d(x, 2, ceil_mode=True),
        F.max_pool2d(x, 3, 2, 1, ceil_mode=True),
        F.lp_pool2d(x.abs() + 0.1, 2, 2),
    ]
    sum((o * (i + 1)).pow(2).sum() for i, o in enumerate(outs)).backward()
    return outs, x.grad


def norms(m):
    torch, nn, F = m.torch, m.nn, m.F
    x = torch.tensor(data(2, 4, 3, 3), requires_grad=True)
    ln = nn.LayerNorm(3, bias=False)
    rms = nn.RMSNorm([3, 3], eps=1e-6)
    gn = nn.GroupNorm(1, 4)
    with torch.no_grad():
        ln.weight.copy_(torch.tensor([1.0, 2.0, 3.0]))
        rms.weight.mul_(torch.tensor(data(3, 3, seed=1)))
    outs = [
        ln(x),
        rms(x),
        gn(x),
        F.rms_norm(x, (3,)),
        F.group_norm(x, 2),
        F.instance_norm(x),
        F.local_response_norm(x, 2),
        F.normalize(x, p=1, dim=1),
    ]
    sum((o * torch.tensor(data(*o.shape, seed=i))).sum() for i, o in enumerate(outs)).backward()
    return outs, x.grad, ln.weight


def gather_scatter(m):
    torch = m.torch
    x = torch.tensor(data(2, 6, 4), requires_grad=True)
    idx = torch.tensor([[0, 3, 5], [1, 1, 2]])
    g = x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    s = torch.zeros(2, 6, 4).scatter_add(1, idx.unsqueeze(-1).expand(-1, -1, 4), g)
    s2 = torch.zeros(2, 6, 4).scatter_reduce(
        1, idx.unsqueeze(-1).expand(-1, -1, 4), g, reduce="amax", include_self=False
    )
    isel = x.index_select(1, torch.tensor([5, 0]))
    (s.pow(2).sum() + s2.sum() + isel.sum()).backward()
    return g, s, s2, x.grad


MODULE_PROGRAMS = [
    cbam_eca_gc,
    coord_attention_split,
    median_pool,
    space_to_depth_splitattn,
    condconv,
    mixed_conv,
    activations_inplace,
    asymmetric_loss,
    jsd,
    bce_timm,
    rope,
    attn_qknorm_dropout_eval,
    checkpoint_seq,
    pools_and_interp,
    norms,
    gather_scatter,
]


@pytest.mark.parametrize("program", MODULE_PROGRAMS, ids=lambda f: f.__name__)
def test_timm_modules_and_losses(program):
    ours, _ = run_both(program, rtol=1e-5, atol=1e-5)
    grads = [g for g in ours if isinstance(g, np.ndarray)]
    assert all(np.isfinite(g).all() for g in grads)


def model_ema_v3_fallback(m):
    """ModelEmaV3's path where torch lacks _foreach_lerp_: ``_foreach_mul_(..., scalar=decay)`` then
    ``_foreach_add_(..., alpha=1 - decay)``, PyTorch's keyword names for the second operand."""
    torch, nn = m.torch, m.nn
    model = nn.Linear(3, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor(data(2, 3)))
        model.bias.copy_(torch.tensor([0.5, -0.25]))
    ema = deepcopy(model)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
        ema_params, model_params = tuple(ema.parameters()), tuple(model.parameters())
        decay = 0.75
        torch._foreach_mul_(ema_params, scalar=decay)
        torch._foreach_add_(ema_params, model_params, alpha=1 - decay)
        lerped = torch._foreach_lerp(model_params, ema_params, weight=0.5)
        scaled = torch._foreach_mul(model_params, other=torch.tensor(2.0))
        shifted = torch._foreach_add(model_params, scalars=[1.0, 2.0])
    return [p - q for p, q in zip(model.parameters(), ema.parameters())], lerped, scaled, shifted


def test_foreach_second_operand_by_keyword():
    (diffs, lerped, scaled, shifted), _ = run_both(model_ema_v3_fallback)
    for d in diffs:
        np.testing.assert_allclose(d, 0.75, rtol=1e-6)  # (1 - decay) of the way to the model, which is 1 ahead


# ----------------------------------------------------------------------------------------------
# timm's current Attention (layers/attention.py): fused SDPA or the explicit path with its mask
# resolved to an additive bias, qk-norm, scale-norm and a sigmoid gate, device/dtype passed through
# ----------------------------------------------------------------------------------------------


def timm_attention(m, fx_wrap=False):
    torch, nn, F = m.torch, m.nn, m.F
    Final = torch.jit.Final
    wrap = torch.fx.wrap if fx_wrap else (lambda fn: fn)

    def register_notrace_function(func):
        return func

    @wrap
    @register_notrace_function
    def maybe_add_mask(scores, attn_mask=None):
        return scores if attn_mask is None else scores + attn_mask

    @wrap
    @register_notrace_function
    def resolve_self_attn_mask(seq_len, attn, attn_mask=None, is_causal=False):
        if is_causal:
            attn_bias = attn.new_full((seq_len, seq_len), float('-inf')).triu_(1)
        elif attn_mask is None:
            attn_bias = None
        elif attn_mask.dtype == torch.bool:
            attn_bias = torch.zeros_like(attn_mask, dtype=attn.dtype)
            attn_bias.masked_fill_(~attn_mask, float('-inf'))
        else:
            attn_bias = attn_mask
        return attn_bias

    class Attention(nn.Module):
        fused_attn: Final[bool]

        def __init__(self, dim, num_heads=8, attn_head_dim=None, dim_out=None, qkv_bias=False, qk_norm=False,
                     scale_norm=False, proj_bias=True, gated=False, attn_drop=0., proj_drop=0., norm_layer=None,
                     device=None, dtype=None):
            super().__init__()
            dd = {'device': device, 'dtype': dtype}
            dim_out = dim_out or dim
            head_dim = attn_head_dim
            if head_dim is None:
                assert dim % num_heads == 0, 'dim should be divisible by num_heads'
                head_dim = dim // num_heads
            if qk_norm or scale_norm:
                assert norm_layer is not None, 'norm_layer must be provided if qk_norm or scale_norm is True'
            self.num_heads = num_heads
            self.head_dim = head_dim
            self.attn_dim = num_heads * head_dim
            self.scale = head_dim ** -0.5
            self.fused_attn = True
            self.qkv = nn.Linear(dim, self.attn_dim * 3, bias=qkv_bias, **dd)
            self.q_norm = norm_layer(head_dim, **dd) if qk_norm else nn.Identity()
            self.k_norm = norm_layer(head_dim, **dd) if qk_norm else nn.Identity()
            self.attn_drop = nn.Dropout(attn_drop)
            self.norm = norm_layer(self.attn_dim, **dd) if scale_norm else nn.Identity()
            self.gate = nn.Linear(dim, self.attn_dim, bias=qkv_bias, **dd) if gated else None
            self.proj = nn.Linear(self.attn_dim, dim_out, bias=proj_bias, **dd)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x, attn_mask=None, is_causal=False):
            B, N, C = x.shape
            gate = self.gate(x).sigmoid() if self.gate is not None else None
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            q, k = self.q_norm(q), self.k_norm(k)
            if self.fused_attn:
                x = F.scaled_dot_product_attention(
                    q, k, v,
                    attn_mask=attn_mask,
                    dropout_p=self.attn_drop.p if self.training else 0.,
                    is_causal=is_causal,
                )
            else:
                q = q * self.scale
                attn = q @ k.transpose(-2, -1)
                attn_bias = resolve_self_attn_mask(N, attn, attn_mask, is_causal)
                attn = maybe_add_mask(attn, attn_bias)
                attn = attn.softmax(dim=-1)
                attn = self.attn_drop(attn)
                x = attn @ v
            x = x.transpose(1, 2).reshape(B, N, self.attn_dim)
            x = self.norm(x)
            if gate is not None:
                x = x * gate
            x = self.proj(x)
            x = self.proj_drop(x)
            return x

    return Attention(12, num_heads=3, attn_head_dim=5, dim_out=8, qkv_bias=True, qk_norm=True, scale_norm=True,
                     gated=True, norm_layer=nn.LayerNorm, device="cpu", dtype=torch.float32)


def attention_training(m, weights, steps=3):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, timm_attention(m), weights)
    # k_norm's bias shifts every score of a row alike: its gradient is zero but for rounding, which
    # AdamW would turn into lr-sized steps that differ between the libraries
    model.k_norm.bias.requires_grad_(False)
    optimizer = optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.05)
    rng = np.random.default_rng(4)
    x = torch.tensor(rng.standard_normal((2, 5, 12)).astype(np.float32))
    target = torch.tensor(rng.standard_normal((2, 5, 8)).astype(np.float32))
    keep = torch.tensor(rng.random((5, 5)) > 0.3) | torch.eye(5, dtype=torch.bool)
    bias = torch.tensor(rng.standard_normal((2, 1, 5, 5)).astype(np.float32))
    losses, paths = [], []
    for step in range(steps):
        outs = {}
        for fused in (True, False):
            model.fused_attn = fused
            outs[fused] = [model(x, attn_mask=keep), model(x, is_causal=True), model(x, attn_mask=bias), model(x)]
        paths.append([(a - b).abs().max() for a, b in zip(outs[True], outs[False])])
        loss = sum(F.mse_loss(o, target) for o in outs[False]) + F.mse_loss(outs[True][0], target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    return losses, grads, [p.detach() for p in model.parameters()], paths


def test_timm_attention_fused_and_explicit_paths_agree():
    weights = weights_of(timm_attention)
    (losses, grads, params, paths), _ = run_both(attention_training, weights, rtol=2e-4, atol=2e-5)
    assert np.max(paths) < 1e-5 and losses[-1] < losses[0]


def test_timm_attention_with_torch_fx_wrap():
    # (chainrule's only: PyTorch's fx.wrap refuses a call that is not at a module's top level, as timm's are)
    assert OURS.torch.fx.wrap("len") == "len" and OURS.torch.fx.wrap(len) is len
    assert timm_attention(OURS, fx_wrap=True)(OURS.torch.ones(1, 3, 12)).shape == (1, 3, 8)


# ----------------------------------------------------------------------------------------------
# timm's Adafactor (from fairseq), with no lr given: its relative step sizes the update, and the
# optimizer base class must take lr=None as PyTorch's does
# ----------------------------------------------------------------------------------------------


def timm_adafactor(m):
    torch = m.torch

    class Adafactor(m.optim.Optimizer):

        def __init__(
                self,
                params,
                lr=None,
                eps = 1e-30,
                eps_scale = 1e-3,
                clip_threshold = 1.0,
                decay_rate = -0.8,
                betas=None,
                weight_decay = 0.0,
                scale_parameter = True,
                warmup_init = False,
                min_dim_size_to_factor = 16,
                caution = False,
        ):
            relative_step = not lr
            if warmup_init and not relative_step:
                raise ValueError('warmup_init requires relative_step=True')

            beta1 = None if betas is None else betas[0]   # make it compat with standard betas arg
            defaults = dict(
                lr=lr,
                eps=eps,
                eps_scale=eps_scale,
                clip_threshold=clip_threshold,
                decay_rate=decay_rate,
                beta1=beta1,
                weight_decay=weight_decay,
                scale_parameter=scale_parameter,
                relative_step=relative_step,
                warmup_init=warmup_init,
                min_dim_size_to_factor=min_dim_size_to_factor,
                caution=caution,
            )
            super(Adafactor, self).__init__(params, defaults)

        def __setstate__(self, state):
            super().__setstate__(state)
            for group in self.param_groups:
                group.setdefault('caution', False)
                group.setdefault('min_dim_size_to_factor', 16)

        @staticmethod
        def _get_lr(param_group, param_state):
            if param_group['relative_step']:
                min_step = 1e-6 * param_state['step'] if param_group['warmup_init'] else 1e-2
                lr_t = min(min_step, 1.0 / math.sqrt(param_state['step']))
                param_scale = 1.0
                if param_group['scale_parameter']:
                    param_scale = max(param_group['eps_scale'], param_state['RMS'])
                param_group['lr'] = lr_t * param_scale
            return param_group['lr']

        @staticmethod
        def _get_options(param_group, param_shape, min_size_to_factor=16):
            use_first_moment = param_group['beta1'] is not None
            factored = None
            ndim = len(param_shape)
            # Use a simple heuristic to pick factorization row & col, note other PyTorch impl tend to
            # always use -2, -1 BUT this will not pick correct dims for convolutions. This is a simple
            # approach that should work in most cases, compare to the slightly more involved approach
            # in AdafactorBigVision that sorts dims by size, please report if wrong dims chosen.
            if ndim > 2 and param_shape[0] > min_size_to_factor and param_shape[1] > min_size_to_factor:
                # nD convs in torch are ND + 2 dim weights with leading in/out chs
                factored = 0, 1
            elif ndim >= 2 and param_shape[-2] > min_size_to_factor and param_shape[-1] > min_size_to_factor:
                # if the criteria above didn't match, test trailing dims for eligibility as per original impl
                factored = ndim - 2, ndim - 1

            return factored, use_first_moment

        @staticmethod
        def _rms(tensor):
            return tensor.norm(2) / (tensor.numel() ** 0.5)

        def _approx_sq_grad(self, exp_avg_sq_row, exp_avg_sq_col, dim_col, dim_row):
            # from our dim heuristic, always dim_col < dim_row, so col reduction dim for factored row = dim_col
            r_factor = (exp_avg_sq_row / exp_avg_sq_row.mean(dim=dim_col, keepdim=True)).rsqrt_().unsqueeze(dim_row)
            c_factor = exp_avg_sq_col.unsqueeze(dim_col).rsqrt()
            return torch.mul(r_factor, c_factor)

        @torch.no_grad()
        def step(self, closure=None):
            """Performs a single optimization step.
            Arguments:
                closure (callable, optional): A closure that reevaluates the model and returns the loss.
            """
            loss = None
            if closure is not None:
                with torch.enable_grad():
                    loss = closure()

            for group in self.param_groups:
                for p in group['params']:
                    if p.grad is None:
                        continue
                    grad = p.grad
                    if grad.dtype in {torch.float16, torch.bfloat16}:
                        grad = grad.float()
                    if grad.is_sparse:
                        raise RuntimeError('Adafactor does not support sparse gradients.')

                    state = self.state[p]

                    factored_dims, use_first_moment = self._get_options(
                        group,
                        grad.shape,
                        min_size_to_factor=group['min_dim_size_to_factor'],
                    )
                    # State Initialization
                    if len(state) == 0:
                        state['step'] = 0

                        if use_first_moment:
                            # Exponential moving average of gradient values
                            state['exp_avg'] = torch.zeros_like(grad)
                        if factored_dims is not None:
                            dim_col, dim_row = factored_dims
                            def _remove_dim(shape, dim):
                                return shape[:dim] + shape[dim + 1:]
                            state['exp_avg_sq_row'] = torch.zeros(_remove_dim(grad.shape, dim_row)).to(grad)
                            state['exp_avg_sq_col'] = torch.zeros(_remove_dim(grad.shape, dim_col)).to(grad)
                        else:
                            state['exp_avg_sq'] = torch.zeros_like(grad)

                        state['RMS'] = 0
                    else:
                        if use_first_moment:
                            state['exp_avg'] = state['exp_avg'].to(grad)
                        if factored_dims is not None:
                            state['exp_avg_sq_row'] = state['exp_avg_sq_row'].to(grad)
                            state['exp_avg_sq_col'] = state['exp_avg_sq_col'].to(grad)
                        else:
                            state['exp_avg_sq'] = state['exp_avg_sq'].to(grad)

                    p_fp32 = p
                    if p.dtype in {torch.float16, torch.bfloat16}:
                        p_fp32 = p_fp32.float()

                    state['step'] += 1
                    state['RMS'] = self._rms(p_fp32)
                    lr_t = self._get_lr(group, state)

                    beta2t = 1.0 - math.pow(state['step'], group['decay_rate'])
                    update = grad ** 2 + group['eps']
                    if factored_dims is not None:
                        dim_col, dim_row = factored_dims
                        exp_avg_sq_row = state['exp_avg_sq_row']
                        exp_avg_sq_col = state['exp_avg_sq_col']

                        exp_avg_sq_row.mul_(beta2t).add_(update.mean(dim=dim_row), alpha=1.0 - beta2t)
                        exp_avg_sq_col.mul_(beta2t).add_(update.mean(dim=dim_col), alpha=1.0 - beta2t)

                        # Approximation of exponential moving average of square of gradient
                        update = self._approx_sq_grad(exp_avg_sq_row, exp_avg_sq_col, dim_col, dim_row)
                        update.mul_(grad)
                    else:
                        exp_avg_sq = state['exp_avg_sq']

                        exp_avg_sq.mul_(beta2t).add_(update, alpha=1.0 - beta2t)
                        update = exp_avg_sq.rsqrt().mul_(grad)

                    update.div_((self._rms(update) / group['clip_threshold']).clamp_(min=1.0))
                    update.mul_(lr_t)

                    if use_first_moment:
                        exp_avg = state['exp_avg']
                        exp_avg.mul_(group['beta1']).add_(update, alpha=1 - group['beta1'])
                        if group['caution']:
                            # Apply caution as per 'Cautious Optimizers' - https://arxiv.org/abs/2411.16085
                            mask = (exp_avg * grad > 0).to(grad.dtype)
                            mask.div_(mask.mean().clamp_(min=1e-3))
                            update = exp_avg * mask
                        else:
                            update = exp_avg

                    if group['weight_decay'] != 0:
                        p_fp32.add_(p_fp32, alpha=-group['weight_decay'] * lr_t)

                    p_fp32.add_(-update)
                    if p.dtype in {torch.float16, torch.bfloat16}:
                        p.copy_(p_fp32)

            return loss

    return Adafactor


def adafactor_training(m, lr=None, betas=None, steps=4):
    torch, nn, F = m.torch, m.nn, m.F
    model = nn.Sequential(nn.Linear(20, 18), nn.GELU(), nn.Linear(18, 3))
    with torch.no_grad():
        for i, p in enumerate(model.parameters()):
            p.copy_(torch.tensor(data(*p.shape, seed=i) * 0.2))
    optimizer = timm_adafactor(m)(model.parameters(), lr=lr, betas=betas, weight_decay=0.01)
    x = torch.tensor(data(8, 20, seed=7))
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    losses, lrs = [], []
    for step in range(steps):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        lrs.append(optimizer.param_groups[0]["lr"])
    first = optimizer.state[model[0].weight]
    return losses, lrs, [p.detach() for p in model.parameters()], first["exp_avg_sq_row"], first["exp_avg_sq_col"]


def test_timm_adafactor_relative_step():
    (losses, lrs, params, row, col), _ = run_both(adafactor_training, rtol=1e-4, atol=1e-6)
    assert losses[-1] < losses[0] and row.shape == (18,) and col.shape == (20,)  # factored over Linear(20, 18)
    assert all(0 < lr < 1e-2 for lr in lrs)  # min(1e-2, 1/sqrt(step)) scaled by the weights' RMS
    run_both(adafactor_training, lr=1e-2, betas=(0.9, 0.999), rtol=1e-4, atol=1e-6)


def torch_hub_names(m):
    """timm/models/_hub.py, at import time: ``from torch.hub import HASH_REGEX, download_url_to_file, urlparse``
    (the hash suffix of a checkpoint's file name checked after a download)."""
    hub = m.torch.hub
    HASH_REGEX, urlparse = hub.HASH_REGEX, hub.urlparse
    filename = urlparse("https://download.pytorch.org/models/resnet18-f37072fd.pth").path.rsplit("/", 1)[-1]
    return filename, HASH_REGEX.search(filename).group(1), callable(hub.download_url_to_file)


def test_torch_hub_names_timm_imports():
    ours, _ = run_both(torch_hub_names)
    assert ours == ("resnet18-f37072fd.pth", "f37072fd", True)


def jit_annotations(m):
    """timm/models/densenet.py, at import time: ``from torch.jit.annotations import List``."""
    import importlib
    import typing

    annotations = importlib.import_module(m.torch.__name__ + ".jit.annotations")
    return annotations.Any is typing.Any and annotations.Optional is typing.Optional and hasattr(annotations, "List")


def test_jit_annotations_module():
    ours, _ = run_both(jit_annotations)
    assert ours is True


def checkpoint_with_args(m, path):
    """torchvision's references (train.py: ``checkpoint = {"model": ..., "optimizer": ..., "lr_scheduler": ...,
    "epoch": epoch, "args": args}`` then ``utils.save_on_master(checkpoint, ...)``) and timm's CheckpointSaver
    both save the argparse Namespace of the run beside the weights."""
    import argparse

    torch, nn, optim = m.torch, m.nn, m.optim
    model = nn.Linear(3, 2)
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    lr_scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=30, gamma=0.1)
    args = argparse.Namespace(model="resnet18", lr=0.1, epochs=90, label_smoothing=0.1, mixup_alpha=0.2)
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "lr_scheduler": lr_scheduler.state_dict(), "epoch": 3, "args": args}
    torch.save(checkpoint, path)
    loaded = torch.load(path, map_location="cpu", weights_only=False)
    return vars(loaded["args"]), loaded["epoch"], sorted(loaded["model"])


def test_checkpoint_with_argparse_namespace(tmp_path):
    ours, _ = run_both(checkpoint_with_args, tmp_path / "checkpoint.pth")
    assert ours[0]["model"] == "resnet18" and ours[1] == 3 and ours[2] == ["bias", "weight"]
