# ruff: noqa: B007, E501, UP018  (the programs are kept as their authors wrote them)
"""3-D volumetric programs as medical-imaging and video code writes them, run as tests/probe19_volumes_common.py
says. Video Swin's shifted 3-D windows, TSM, a non-local block and X3D."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Video transformers and temporal modules: Video Swin's 3-D shifted windows (window partition by view/permute,
# torch.roll, the attention mask built by slices, a relative position bias table), TSM's temporal shift, a
# non-local block, and X3D's depthwise Conv3d with squeeze-excitation
# ----------------------------------------------------------------------------------------------


def window_partition(x, window_size):
    B, D, H, W, C = x.shape
    x = x.view(B, D // window_size[0], window_size[0], H // window_size[1], window_size[1], W // window_size[2],
               window_size[2], C)
    windows = x.permute(0, 1, 3, 5, 2, 4, 6, 7).contiguous().view(-1, window_size[0] * window_size[1] * window_size[2], C)
    return windows


def window_reverse(windows, window_size, B, D, H, W):
    x = windows.view(B, D // window_size[0], H // window_size[1], W // window_size[2], window_size[0], window_size[1],
                     window_size[2], -1)
    x = x.permute(0, 1, 4, 2, 5, 3, 6, 7).contiguous().view(B, D, H, W, -1)
    return x


def compute_mask(m, D, H, W, window_size, shift_size):
    torch = m.torch
    img_mask = torch.zeros((1, D, H, W, 1))
    cnt = 0
    for d in slice(-window_size[0]), slice(-window_size[0], -shift_size[0]), slice(-shift_size[0], None):
        for h in slice(-window_size[1]), slice(-window_size[1], -shift_size[1]), slice(-shift_size[1], None):
            for w in slice(-window_size[2]), slice(-window_size[2], -shift_size[2]), slice(-shift_size[2], None):
                img_mask[:, d, h, w, :] = cnt
                cnt += 1
    mask_windows = window_partition(img_mask, window_size)
    mask_windows = mask_windows.squeeze(-1)
    attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
    attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))
    return attn_mask


def video_swin(m):
    torch, nn, F = m.torch, m.nn, m.F

    class WindowAttention3D(nn.Module):
        def __init__(self, dim, window_size, num_heads):
            super().__init__()
            self.dim, self.window_size, self.num_heads = dim, window_size, num_heads
            head_dim = dim // num_heads
            self.scale = head_dim ** -0.5
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1) * (2 * window_size[2] - 1), num_heads))
            coords_d = torch.arange(self.window_size[0])
            coords_h = torch.arange(self.window_size[1])
            coords_w = torch.arange(self.window_size[2])
            coords = torch.stack(torch.meshgrid(coords_d, coords_h, coords_w, indexing="ij"))
            coords_flatten = torch.flatten(coords, 1)
            relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]
            relative_coords = relative_coords.permute(1, 2, 0).contiguous()
            relative_coords[:, :, 0] += self.window_size[0] - 1
            relative_coords[:, :, 1] += self.window_size[1] - 1
            relative_coords[:, :, 2] += self.window_size[2] - 1
            relative_coords[:, :, 0] *= (2 * self.window_size[1] - 1) * (2 * self.window_size[2] - 1)
            relative_coords[:, :, 1] *= (2 * self.window_size[2] - 1)
            relative_position_index = relative_coords.sum(-1)
            self.register_buffer("relative_position_index", relative_position_index)
            self.qkv = nn.Linear(dim, dim * 3, bias=True)
            self.proj = nn.Linear(dim, dim)
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x, mask=None):
            B_, N, C = x.shape
            qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            q = q * self.scale
            attn = q @ k.transpose(-2, -1)
            relative_position_bias = self.relative_position_bias_table[self.relative_position_index[:N, :N].reshape(-1)].reshape(
                N, N, -1)
            relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()
            attn = attn + relative_position_bias.unsqueeze(0)
            if mask is not None:
                nW = mask.shape[0]
                attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, self.num_heads, N, N)
            attn = self.softmax(attn)
            x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
            return self.proj(x)

    class SwinTransformerBlock3D(nn.Module):
        def __init__(self, dim, num_heads, window_size=(2, 2, 2), shift_size=(0, 0, 0)):
            super().__init__()
            self.window_size, self.shift_size = window_size, shift_size
            self.norm1 = nn.LayerNorm(dim)
            self.attn = WindowAttention3D(dim, window_size=self.window_size, num_heads=num_heads)
            self.norm2 = nn.LayerNorm(dim)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

        def forward(self, x, mask_matrix):
            B, D, H, W, C = x.shape
            shortcut = x
            x = self.norm1(x)
            pad_d1 = (self.window_size[0] - D % self.window_size[0]) % self.window_size[0]
            pad_b = (self.window_size[1] - H % self.window_size[1]) % self.window_size[1]
            pad_r = (self.window_size[2] - W % self.window_size[2]) % self.window_size[2]
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b, 0, pad_d1))
            _, Dp, Hp, Wp, _ = x.shape
            if any(i > 0 for i in self.shift_size):
                shifted_x = torch.roll(x, shifts=(-self.shift_size[0], -self.shift_size[1], -self.shift_size[2]),
                                       dims=(1, 2, 3))
                attn_mask = mask_matrix
            else:
                shifted_x = x
                attn_mask = None
            x_windows = window_partition(shifted_x, self.window_size)
            attn_windows = self.attn(x_windows, mask=attn_mask)
            attn_windows = attn_windows.view(-1, *(self.window_size + (C,)))
            shifted_x = window_reverse(attn_windows, self.window_size, B, Dp, Hp, Wp)
            if any(i > 0 for i in self.shift_size):
                x = torch.roll(shifted_x, shifts=(self.shift_size[0], self.shift_size[1], self.shift_size[2]), dims=(1, 2, 3))
            else:
                x = shifted_x
            if pad_d1 > 0 or pad_r > 0 or pad_b > 0:
                x = x[:, :D, :H, :W, :].contiguous()
            x = shortcut + x
            return x + self.mlp(self.norm2(x))

    class TinyVideoSwin(nn.Module):
        def __init__(self, dim=8, num_classes=3):
            super().__init__()
            self.patch_embed = nn.Conv3d(3, dim, kernel_size=(2, 4, 4), stride=(2, 4, 4))
            self.blocks = nn.ModuleList([SwinTransformerBlock3D(dim, 2), SwinTransformerBlock3D(dim, 2, shift_size=(1, 1, 1))])
            self.norm = nn.LayerNorm(dim)
            self.head = nn.Linear(dim, num_classes)

        def forward(self, x):
            x = self.patch_embed(x)  # B C D H W
            x = x.permute(0, 2, 3, 4, 1)  # B D H W C
            B, D, H, W, C = x.shape
            Dp, Hp, Wp = (int(np.ceil(s / 2)) * 2 for s in (D, H, W))
            attn_mask = compute_mask(m, Dp, Hp, Wp, (2, 2, 2), (1, 1, 1)).to(x.dtype)
            for blk in self.blocks:
                x = blk(x, attn_mask)
            x = self.norm(x)
            return self.head(x.mean(dim=(1, 2, 3)))

    return TinyVideoSwin()


def video_swin_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, video_swin(m), weights).double()
    rng = np.random.default_rng(17)
    clips = torch.from_numpy(rng.standard_normal((2, 3, 6, 12, 16)))  # 3 x 3 x 4 tokens: padded to windows
    labels = torch.tensor([2, 0])
    optimizer = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(clips), labels, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return {"history": history, "bias_grad": model.blocks[1].attn.relative_position_bias_table.grad,
            "index": model.blocks[0].attn.relative_position_index, "mask": compute_mask(m, 4, 4, 4, (2, 2, 2), (1, 1, 1))}


def test_video_swin_shifted_window_attention():
    weights = weights_of(video_swin)
    ours, _ = run_both(video_swin_training, weights, rtol=1e-8, atol=1e-10)
    assert ours["index"].shape == (8, 8) and ours["index"].max() == 3 * 3 * 3 - 1 and (np.diag(ours["index"]) == 13).all()
    mask = ours["mask"]
    assert mask.shape == (8, 8, 8) and (mask[0] == 0).all() and set(np.unique(mask[-1])) == {0.0, -100.0}


def temporal_modules(m):
    nn, torch, F = m.nn, m.torch, m.F

    class TemporalShift(nn.Module):
        def __init__(self, net, n_segment=4, n_div=4):
            super().__init__()
            self.net, self.n_segment, self.fold_div = net, n_segment, n_div

        def forward(self, x):
            nt, c, h, w = x.size()
            n_batch = nt // self.n_segment
            x = x.view(n_batch, self.n_segment, c, h, w)
            fold = c // self.fold_div
            out = torch.zeros_like(x)
            out[:, :-1, :fold] = x[:, 1:, :fold]  # shift left
            out[:, 1:, fold: 2 * fold] = x[:, :-1, fold: 2 * fold]  # shift right
            out[:, :, 2 * fold:] = x[:, :, 2 * fold:]  # not shift
            return self.net(out.view(nt, c, h, w))

    class NonLocalBlock3D(nn.Module):
        def __init__(self, in_channels, inter_channels):
            super().__init__()
            self.inter_channels = inter_channels
            self.g = nn.Conv3d(in_channels, inter_channels, 1)
            self.theta = nn.Conv3d(in_channels, inter_channels, 1)
            self.phi = nn.Conv3d(in_channels, inter_channels, 1)
            self.W = nn.Sequential(nn.Conv3d(inter_channels, in_channels, 1), nn.BatchNorm3d(in_channels))
            self.pool = nn.MaxPool3d(kernel_size=(1, 2, 2))

        def forward(self, x):
            batch_size = x.size(0)
            g_x = self.pool(self.g(x)).view(batch_size, self.inter_channels, -1).permute(0, 2, 1)
            theta_x = self.theta(x).view(batch_size, self.inter_channels, -1).permute(0, 2, 1)
            phi_x = self.pool(self.phi(x)).view(batch_size, self.inter_channels, -1)
            f_div_C = F.softmax(torch.matmul(theta_x, phi_x), dim=-1)
            y = torch.matmul(f_div_C, g_x).permute(0, 2, 1).contiguous()
            y = y.view(batch_size, self.inter_channels, *x.size()[2:])
            return self.W(y) + x

    class X3DBlock(nn.Module):
        def __init__(self, channels, expansion=2):
            super().__init__()
            mid = channels * expansion
            self.a = nn.Sequential(nn.Conv3d(channels, mid, 1, bias=False), nn.BatchNorm3d(mid), nn.ReLU())
            self.b = nn.Conv3d(mid, mid, 3, padding=1, groups=mid, bias=False)
            self.se = nn.Sequential(nn.AdaptiveAvgPool3d(1), nn.Conv3d(mid, 4, 1), nn.ReLU(), nn.Conv3d(4, mid, 1), nn.Sigmoid())
            self.swish = nn.SiLU()
            self.c = nn.Sequential(nn.Conv3d(mid, channels, 1, bias=False), nn.BatchNorm3d(channels))

        def forward(self, x):
            y = self.b(self.a(x))
            y = self.swish(y * self.se(y))
            return F.relu(x + self.c(y))

    class TemporalNet(nn.Module):
        def __init__(self, n_segment=4):
            super().__init__()
            self.n_segment = n_segment
            self.tsm = TemporalShift(nn.Conv2d(8, 8, 3, padding=1), n_segment=n_segment)
            self.stem = nn.Conv2d(3, 8, 3, padding=1)
            self.nonlocal_ = NonLocalBlock3D(8, 4)
            self.x3d = X3DBlock(8)
            self.fc = nn.Linear(8, 3)

        def forward(self, x):  # x: (B, T, C, H, W)
            b, t = x.shape[:2]
            y = F.relu(self.tsm(F.relu(self.stem(x.flatten(0, 1)))))
            y = y.view(b, t, *y.shape[1:]).transpose(1, 2)  # to (B, C, T, H, W)
            y = self.x3d(self.nonlocal_(y))
            return self.fc(y.mean((2, 3, 4)))

    return TemporalNet()


def temporal_training(m, weights):
    torch, F, optim = m.torch, m.F, m.optim
    model = load(m, temporal_modules(m), weights).double()
    rng = np.random.default_rng(18)
    clips = torch.from_numpy(rng.standard_normal((2, 4, 3, 6, 6)))
    labels = torch.tensor([1, 2])
    optimizer = optim.SGD(model.parameters(), lr=0.02, momentum=0.9)
    history = []
    for step in range(3):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(clips), labels)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    x = torch.arange(2 * 4 * 8 * 1 * 1.0).view(8, 8, 1, 1).requires_grad_(True)
    shifted = model.tsm.__class__(m.nn.Identity(), 4, 4)(x)
    shifted.backward(torch.arange(shifted.numel() * 1.0).view(shifted.shape))
    return {"history": history, "se_grad": model.x3d.se[1].weight.grad, "dw_grad": model.x3d.b.weight.grad,
            "shifted": shifted, "shift_grad": x.grad}


def test_tsm_nonlocal_and_x3d_blocks():
    weights = weights_of(temporal_modules)
    ours, _ = run_both(temporal_training, weights, rtol=1e-8, atol=1e-10)
    s = ours["shifted"].reshape(2, 4, 8)
    x = np.arange(64.0).reshape(2, 4, 8)
    np.testing.assert_array_equal(s[:, :-1, :2], x[:, 1:, :2])
    np.testing.assert_array_equal(s[:, -1, :2], 0)
    np.testing.assert_array_equal(s[:, 1:, 2:4], x[:, :-1, 2:4])
    np.testing.assert_array_equal(s[:, :, 4:], x[:, :, 4:])
