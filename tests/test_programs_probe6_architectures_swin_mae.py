# ruff: noqa: B007, F841, UP018  (the programs are kept as their authors wrote them)
"""Architectures from papers' reference code (see tests/pytorch_programs.py), each run on chainrule and on PyTorch
from the same weights, comparing outputs, losses, gradients and parameters. Swin Transformer's blocks as
microsoft/Swin-Transformer writes them (``window_partition`` by ``view``/``permute``/``contiguous``, a cyclic shift
by ``torch.roll``, the shifted-window mask from slices and ``masked_fill``, the relative-position index built by
in-place integer arithmetic and used to index a bias table, ``register_buffer("attn_mask", None)``, ``PatchMerging``
by strided slices); MAE's patchify/unpatchify by ``einsum`` and its random masking (``argsort`` of noise, ``gather``)
with patches also cut and put back by ``F.unfold``/``F.fold``."""

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Swin Transformer
# ----------------------------------------------------------------------------------------------


def window_partition(x, window_size):
    B, H, W, C = x.shape
    x = x.view(B, H // window_size, window_size, W // window_size, window_size, C)
    windows = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, window_size, window_size, C)
    return windows


def window_reverse(windows, window_size, H, W):
    B = int(windows.shape[0] / (H * W / window_size / window_size))
    x = windows.view(B, H // window_size, W // window_size, window_size, window_size, -1)
    x = x.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H, W, -1)
    return x


def swin(m):
    torch, nn = m.torch, m.nn

    class Mlp(nn.Module):
        def __init__(self, in_features, hidden_features=None, out_features=None, act_layer=nn.GELU, drop=0.):
            super().__init__()
            out_features = out_features or in_features
            hidden_features = hidden_features or in_features
            self.fc1 = nn.Linear(in_features, hidden_features)
            self.act = act_layer()
            self.fc2 = nn.Linear(hidden_features, out_features)
            self.drop = nn.Dropout(drop)

        def forward(self, x):
            x = self.fc1(x)
            x = self.act(x)
            x = self.drop(x)
            x = self.fc2(x)
            x = self.drop(x)
            return x

    class WindowAttention(nn.Module):
        def __init__(self, dim, window_size, num_heads, qkv_bias=True, qk_scale=None, attn_drop=0., proj_drop=0.):
            super().__init__()
            self.dim = dim
            self.window_size = window_size  # Wh, Ww
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = qk_scale or head_dim ** -0.5
            self.relative_position_bias_table = nn.Parameter(
                torch.zeros((2 * window_size[0] - 1) * (2 * window_size[1] - 1), num_heads))  # 2*Wh-1 * 2*Ww-1, nH
            coords_h = torch.arange(self.window_size[0])
            coords_w = torch.arange(self.window_size[1])
            coords = torch.stack(torch.meshgrid([coords_h, coords_w]))  # 2, Wh, Ww
            coords_flatten = torch.flatten(coords, 1)  # 2, Wh*Ww
            relative_coords = coords_flatten[:, :, None] - coords_flatten[:, None, :]  # 2, Wh*Ww, Wh*Ww
            relative_coords = relative_coords.permute(1, 2, 0).contiguous()  # Wh*Ww, Wh*Ww, 2
            relative_coords[:, :, 0] += self.window_size[0] - 1  # shift to start from 0
            relative_coords[:, :, 1] += self.window_size[1] - 1
            relative_coords[:, :, 0] *= 2 * self.window_size[1] - 1
            relative_position_index = relative_coords.sum(-1)  # Wh*Ww, Wh*Ww
            self.register_buffer("relative_position_index", relative_position_index)
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)
            nn.init.trunc_normal_(self.relative_position_bias_table, std=.02)
            self.softmax = nn.Softmax(dim=-1)

        def forward(self, x, mask=None):
            B_, N, C = x.shape
            qkv = self.qkv(x).reshape(B_, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]  # make torchscript happy (cannot use tensor as tuple)
            q = q * self.scale
            attn = (q @ k.transpose(-2, -1))
            relative_position_bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(
                self.window_size[0] * self.window_size[1], self.window_size[0] * self.window_size[1], -1)
            relative_position_bias = relative_position_bias.permute(2, 0, 1).contiguous()  # nH, Wh*Ww, Wh*Ww
            attn = attn + relative_position_bias.unsqueeze(0)
            if mask is not None:
                nW = mask.shape[0]
                attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, self.num_heads, N, N)
                attn = self.softmax(attn)
            else:
                attn = self.softmax(attn)
            attn = self.attn_drop(attn)
            x = (attn @ v).transpose(1, 2).reshape(B_, N, C)
            x = self.proj(x)
            x = self.proj_drop(x)
            return x

    class SwinTransformerBlock(nn.Module):
        def __init__(self, dim, input_resolution, num_heads, window_size=7, shift_size=0, mlp_ratio=4.,
                     act_layer=nn.GELU, norm_layer=nn.LayerNorm):
            super().__init__()
            self.dim = dim
            self.input_resolution = input_resolution
            self.num_heads = num_heads
            self.window_size = window_size
            self.shift_size = shift_size
            self.mlp_ratio = mlp_ratio
            if min(self.input_resolution) <= self.window_size:
                # if window size is larger than input resolution, we don't partition windows
                self.shift_size = 0
                self.window_size = min(self.input_resolution)
            assert 0 <= self.shift_size < self.window_size, "shift_size must in 0-window_size"
            self.norm1 = norm_layer(dim)
            self.attn = WindowAttention(dim, window_size=(self.window_size, self.window_size), num_heads=num_heads)
            self.drop_path = nn.Identity()
            self.norm2 = norm_layer(dim)
            mlp_hidden_dim = int(dim * mlp_ratio)
            self.mlp = Mlp(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer)
            if self.shift_size > 0:
                # calculate attention mask for SW-MSA
                H, W = self.input_resolution
                img_mask = torch.zeros((1, H, W, 1))  # 1 H W 1
                h_slices = (slice(0, -self.window_size), slice(-self.window_size, -self.shift_size),
                            slice(-self.shift_size, None))
                w_slices = (slice(0, -self.window_size), slice(-self.window_size, -self.shift_size),
                            slice(-self.shift_size, None))
                cnt = 0
                for h in h_slices:
                    for w in w_slices:
                        img_mask[:, h, w, :] = cnt
                        cnt += 1
                mask_windows = window_partition(img_mask, self.window_size)  # nW, window_size, window_size, 1
                mask_windows = mask_windows.view(-1, self.window_size * self.window_size)
                attn_mask = mask_windows.unsqueeze(1) - mask_windows.unsqueeze(2)
                attn_mask = attn_mask.masked_fill(attn_mask != 0, float(-100.0)).masked_fill(attn_mask == 0, float(0.0))
            else:
                attn_mask = None
            self.register_buffer("attn_mask", attn_mask)

        def forward(self, x):
            H, W = self.input_resolution
            B, L, C = x.shape
            assert L == H * W, "input feature has wrong size"
            shortcut = x
            x = self.norm1(x)
            x = x.view(B, H, W, C)
            # cyclic shift
            if self.shift_size > 0:
                shifted_x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            else:
                shifted_x = x
            # partition windows
            x_windows = window_partition(shifted_x, self.window_size)  # nW*B, window_size, window_size, C
            x_windows = x_windows.view(-1, self.window_size * self.window_size, C)  # nW*B, window_size*window_size, C
            # W-MSA/SW-MSA
            attn_windows = self.attn(x_windows, mask=self.attn_mask)  # nW*B, window_size*window_size, C
            # merge windows
            attn_windows = attn_windows.view(-1, self.window_size, self.window_size, C)
            shifted_x = window_reverse(attn_windows, self.window_size, H, W)  # B H' W' C
            # reverse cyclic shift
            if self.shift_size > 0:
                x = torch.roll(shifted_x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
            else:
                x = shifted_x
            x = x.view(B, H * W, C)
            # FFN
            x = shortcut + self.drop_path(x)
            x = x + self.drop_path(self.mlp(self.norm2(x)))
            return x

    class PatchMerging(nn.Module):
        def __init__(self, input_resolution, dim, norm_layer=nn.LayerNorm):
            super().__init__()
            self.input_resolution = input_resolution
            self.dim = dim
            self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
            self.norm = norm_layer(4 * dim)

        def forward(self, x):
            H, W = self.input_resolution
            B, L, C = x.shape
            assert L == H * W, "input feature has wrong size"
            assert H % 2 == 0 and W % 2 == 0, f"x size ({H}*{W}) are not even."
            x = x.view(B, H, W, C)
            x0 = x[:, 0::2, 0::2, :]  # B H/2 W/2 C
            x1 = x[:, 1::2, 0::2, :]  # B H/2 W/2 C
            x2 = x[:, 0::2, 1::2, :]  # B H/2 W/2 C
            x3 = x[:, 1::2, 1::2, :]  # B H/2 W/2 C
            x = torch.cat([x0, x1, x2, x3], -1)  # B H/2 W/2 4*C
            x = x.view(B, -1, 4 * C)  # B H/2*W/2 4*C
            x = self.norm(x)
            x = self.reduction(x)
            return x

    class TinySwin(nn.Module):
        def __init__(self, img_size=16, patch_size=2, in_chans=3, embed_dim=8, num_classes=5, window_size=4):
            super().__init__()
            res = img_size // patch_size
            self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
            self.blocks = nn.ModuleList([
                SwinTransformerBlock(embed_dim, (res, res), num_heads=2, window_size=window_size, shift_size=0),
                SwinTransformerBlock(embed_dim, (res, res), num_heads=2, window_size=window_size,
                                     shift_size=window_size // 2)])
            self.merge = PatchMerging((res, res), embed_dim)
            self.norm = nn.LayerNorm(2 * embed_dim)
            self.avgpool = nn.AdaptiveAvgPool1d(1)
            self.head = nn.Linear(2 * embed_dim, num_classes)

        def forward(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)  # B Ph*Pw C
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(self.merge(x))  # B L C
            x = self.avgpool(x.transpose(1, 2))  # B C 1
            x = torch.flatten(x, 1)
            return self.head(x)

    return TinySwin()


def swin_training(m, weights, steps=3):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, swin(m), weights)
    rng = np.random.default_rng(0)
    x = torch.tensor(rng.standard_normal((2, 3, 16, 16)).astype(np.float32))
    y = torch.tensor([1, 3])
    no_decay = {"relative_position_bias_table"}
    decay = [p for n, p in model.named_parameters() if not any(k in n for k in no_decay) and p.ndim > 1]
    rest = [p for n, p in model.named_parameters() if any(k in n for k in no_decay) or p.ndim <= 1]
    optimizer = m.optim.AdamW([{"params": decay}, {"params": rest, "weight_decay": 0.0}], lr=1e-3, weight_decay=0.05)
    losses = []
    for step in range(steps):
        loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    block = model.blocks[1]
    buffers = sorted(name for name, _ in model.named_buffers())
    return {"losses": losses, "grads": [p.grad for p in model.parameters()], "mask": block.attn_mask,
            "index": block.attn.relative_position_index, "buffers": buffers,
            "none_buffer": model.blocks[0].attn_mask is None,
            "state": sorted(k for k in model.state_dict() if "mask" in k or "index" in k)}


@pytest.mark.filterwarnings("ignore:torch.meshgrid")  # (the original calls it without indexing=)
def test_swin_transformer_blocks():
    weights = weights_of(swin)
    ours, _ = run_both(swin_training, weights, rtol=1e-4, atol=1e-6)
    assert ours["losses"][-1] < ours["losses"][0]
    index, mask = ours["index"], ours["mask"]
    assert index.shape == (16, 16) and index.min() == 0 and index.max() == 48 and index[0, 0] == 24
    assert mask.shape == (4, 16, 16) and set(np.unique(mask)) == {-100.0, 0.0}
    assert (mask[0] == 0).all() and (mask[3] != 0).any()  # only the windows across the shift are masked
    assert ours["none_buffer"] and ours["state"] == ["blocks.0.attn.relative_position_index",
                                                     "blocks.1.attn.relative_position_index", "blocks.1.attn_mask"]


def test_window_partition_and_reverse_are_inverse():
    """Without torch: partitioning into windows and merging back gives the image again, and the
    window of index 1 is the top-left 4 x 4 block of columns 4..7."""
    torch = OURS.torch
    x = torch.arange(2 * 8 * 8 * 3).reshape(2, 8, 8, 3)
    windows = window_partition(x, 4)
    assert windows.shape == (8, 4, 4, 3)
    assert (windows[1] == x[0, :4, 4:]).all()
    assert (window_reverse(windows, 4, 8, 8) == x).all()
    shifted = torch.roll(x, shifts=(-2, -2), dims=(1, 2))
    assert (torch.roll(shifted, shifts=(2, 2), dims=(1, 2)) == x).all() and shifted[0, 0, 0, 0] == x[0, 2, 2, 0]


# ----------------------------------------------------------------------------------------------
# MAE: patchify, random masking, and patches through F.unfold / F.fold
# ----------------------------------------------------------------------------------------------

P, IMG = 4, 12


def mae_model(m):
    nn = m.nn

    class TinyMAE(nn.Module):
        def __init__(self, embed_dim=16):
            super().__init__()
            self.patch_embed = nn.Linear(P * P * 3, embed_dim)
            self.pos_embed = nn.Parameter(m.torch.zeros(1, (IMG // P) ** 2, embed_dim))
            self.mask_token = nn.Parameter(m.torch.zeros(1, 1, embed_dim))
            self.encoder = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, embed_dim), nn.GELU())
            self.decoder = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, P * P * 3))
            nn.init.normal_(self.pos_embed, std=.02)
            nn.init.normal_(self.mask_token, std=.02)

    return TinyMAE()


def mae(m, weights, steps=3, mask_ratio=0.75, norm_pix_loss=True):
    torch, nn, F = m.torch, m.nn, m.F
    model = load(m, mae_model(m), weights)
    rng = np.random.default_rng(3)

    def patchify(imgs):
        p = P
        assert imgs.shape[2] == imgs.shape[3] and imgs.shape[2] % p == 0
        h = w = imgs.shape[2] // p
        x = imgs.reshape(shape=(imgs.shape[0], 3, h, p, w, p))
        x = torch.einsum('nchpwq->nhwpqc', x)
        x = x.reshape(shape=(imgs.shape[0], h * w, p ** 2 * 3))
        return x

    def unpatchify(x):
        p = P
        h = w = int(x.shape[1] ** .5)
        assert h * w == x.shape[1]
        x = x.reshape(shape=(x.shape[0], h, w, p, p, 3))
        x = torch.einsum('nhwpqc->nchpwq', x)
        imgs = x.reshape(shape=(x.shape[0], 3, h * p, h * p))
        return imgs

    def random_masking(x, mask_ratio, noise):
        N, L, D = x.shape  # batch, length, dim
        len_keep = int(L * (1 - mask_ratio))
        # sort noise for each sample
        ids_shuffle = torch.argsort(noise, dim=1)  # ascend: small is keep, large is remove
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        # keep the first subset
        ids_keep = ids_shuffle[:, :len_keep]
        x_masked = torch.gather(x, dim=1, index=ids_keep.unsqueeze(-1).repeat(1, 1, D))
        # generate the binary mask: 0 is keep, 1 is remove
        mask = torch.ones([N, L], device=x.device)
        mask[:, :len_keep] = 0
        # unshuffle to get the binary mask
        mask = torch.gather(mask, dim=1, index=ids_restore)
        return x_masked, mask, ids_restore

    def forward_loss(imgs, pred, mask):
        target = patchify(imgs)
        if norm_pix_loss:
            mean = target.mean(dim=-1, keepdim=True)
            var = target.var(dim=-1, keepdim=True)
            target = (target - mean) / (var + 1.e-6) ** .5
        loss = (pred - target) ** 2
        loss = loss.mean(dim=-1)  # [N, L], mean loss per patch
        loss = (loss * mask).sum() / mask.sum()  # mean loss on removed patches
        return loss

    optimizer = m.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95))
    log = []
    for step in range(steps):
        imgs = torch.tensor(rng.standard_normal((2, 3, IMG, IMG)).astype(np.float32))
        noise = torch.tensor(rng.random((2, (IMG // P) ** 2)).astype(np.float32))
        x = model.patch_embed(patchify(imgs)) + model.pos_embed
        x, mask, ids_restore = random_masking(x, mask_ratio, noise)
        latent = model.encoder(x)
        mask_tokens = model.mask_token.repeat(latent.shape[0], ids_restore.shape[1] - latent.shape[1], 1)
        x_ = torch.cat([latent, mask_tokens], dim=1)
        x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x_.shape[2]))  # unshuffle
        pred = model.decoder(x_ + model.pos_embed)
        loss = forward_loss(imgs, pred, mask)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((loss.item(), mask.sum().item()))
    # patches the other ways: F.unfold's columns are (c, kh, kw) per patch; fold puts them back
    cols = F.unfold(imgs, kernel_size=P, stride=P)  # N, C*P*P, L
    by_unfold = cols.transpose(1, 2)
    by_einsum = patchify(imgs)
    back = F.fold(cols, output_size=(IMG, IMG), kernel_size=P, stride=P)
    one_image = F.unfold(imgs[0], kernel_size=P, stride=P)  # an unbatched (C, H, W) image, to show its patches
    overlapping = F.unfold(imgs, kernel_size=P, stride=2)
    counts = F.fold(torch.ones_like(overlapping), output_size=(IMG, IMG), kernel_size=P, stride=2)
    averaged = F.fold(overlapping, output_size=(IMG, IMG), kernel_size=P, stride=2) / counts
    with torch.no_grad():
        recon = unpatchify(pred)
    return {"log": log, "grads": [p.grad for p in model.parameters()], "by_unfold": by_unfold,
            "by_einsum": by_einsum, "back": back, "imgs": imgs, "averaged": averaged, "counts": counts,
            "recon": recon, "roundtrip": unpatchify(by_einsum), "one_image": one_image}


def test_mae_masking_and_patches():
    weights = weights_of(mae_model)
    ours, _ = run_both(mae, weights, rtol=1e-4, atol=1e-6)
    assert all(masked == 2 * 9 - 2 * 2 for _, masked in ours["log"])  # int(9 * 0.25) = 2 kept per image
    assert ours["log"][-1][0] < ours["log"][0][0]
    np.testing.assert_array_equal(ours["back"], ours["imgs"])
    np.testing.assert_array_equal(ours["one_image"], ours["by_unfold"][0].T)
    np.testing.assert_array_equal(ours["roundtrip"], ours["imgs"])
    np.testing.assert_allclose(ours["averaged"], ours["imgs"], rtol=1e-6)
    assert ours["counts"].max() == 4 and ours["counts"].min() == 1
    # the same patches, the unfold columns ordered (c, kh, kw) and the einsum's (kh, kw, c)
    unfold = ours["by_unfold"].reshape(2, 9, 3, P, P).transpose(0, 1, 3, 4, 2).reshape(2, 9, -1)
    np.testing.assert_array_equal(unfold, ours["by_einsum"])
