# ruff: noqa: B007, F841, UP008  (the programs are kept as their authors wrote them)
"""timm's building blocks and training recipe, run as tests/probe11_timm_common.py says. A network of timm's layers
as timm writes them (LayerNorm2d by permute / ``F.layer_norm`` / permute back, a ConvNeXt block with a depthwise 7x7
conv, a channels-last Linear MLP and LayerScale, EfficientNet's MBConv with ``groups=``, ``nn.SiLU(inplace=True)``
and a squeeze-excite gated by ``hard_sigmoid``, an in-place ``hard_swish``, StdConv2d and ScaledStdConv2d
standardising their weights by ``F.batch_norm`` over the weight reshaped, BiT's weight standardisation by
``torch.var_mean``, BlurPool2d with a binomial filter copied into a non-persistent buffer and reflect padding, an
``nn.Unfold`` patch embedding, Swin's relative position bias gathered by an index buffer, and latent attention
pooling); ``trunc_normal_`` statistics; timm's current Attention (fused and explicit paths, masks resolved to an
additive bias), with ``torch.fx.wrap``."""

import math

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

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
