# ruff: noqa: B007, B023, E741, E731, F841, UP008, UP018  (the programs are kept as their authors wrote them)
"""Architectures from papers' reference code (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same weights, comparing outputs, losses, gradients and parameters.

Swin Transformer's blocks as microsoft/Swin-Transformer writes them (``window_partition`` by
``view``/``permute``/``contiguous``, a cyclic shift by ``torch.roll``, the shifted-window mask from slices
and ``masked_fill``, the relative-position index built by in-place integer arithmetic and used to index a
bias table, ``register_buffer("attn_mask", None)``, ``PatchMerging`` by strided slices);
MAE's patchify/unpatchify by ``einsum`` and its random masking (``argsort`` of noise, ``gather``) with
patches also cut and put back by ``F.unfold``/``F.fold``; the Set Transformer (juho-lee: MAB by ``split``
and ``cat`` of heads, ISAB, PMA) and a padded-set variant on ``nn.MultiheadAttention(key_padding_mask=...)``
with Deep Sets' masked pooling; neural collaborative filtering (guoyang9/NCF's NeuMF with its own
initialisation, ``BCEWithLogitsLoss(pos_weight=...)``, hit ratio and NDCG by ``topk`` and ``torch.take``);
and activation checkpointing as Hugging Face models write it (``create_custom_forward``, ``None``
arguments, dropout inside, and the reentrant variant on an input that does not require grad)."""

import math
import warnings

import numpy as np
import pytest

from .pytorch_programs import OURS, load, pytorch, run_both, weights_of

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


# ----------------------------------------------------------------------------------------------
# Sets: the Set Transformer, and padded sets through nn.MultiheadAttention with Deep Sets' pooling
# ----------------------------------------------------------------------------------------------


def set_models(m):
    torch, nn, F = m.torch, m.nn, m.F

    class MAB(nn.Module):
        def __init__(self, dim_Q, dim_K, dim_V, num_heads, ln=False):
            super(MAB, self).__init__()
            self.dim_V = dim_V
            self.num_heads = num_heads
            self.fc_q = nn.Linear(dim_Q, dim_V)
            self.fc_k = nn.Linear(dim_K, dim_V)
            self.fc_v = nn.Linear(dim_K, dim_V)
            if ln:
                self.ln0 = nn.LayerNorm(dim_V)
                self.ln1 = nn.LayerNorm(dim_V)
            self.fc_o = nn.Linear(dim_V, dim_V)

        def forward(self, Q, K):
            Q = self.fc_q(Q)
            K, V = self.fc_k(K), self.fc_v(K)
            dim_split = self.dim_V // self.num_heads
            Q_ = torch.cat(Q.split(dim_split, 2), 0)
            K_ = torch.cat(K.split(dim_split, 2), 0)
            V_ = torch.cat(V.split(dim_split, 2), 0)
            A = torch.softmax(Q_.bmm(K_.transpose(1, 2)) / math.sqrt(self.dim_V), 2)
            O = torch.cat((Q_ + A.bmm(V_)).split(Q.size(0), 0), 2)
            O = O if getattr(self, 'ln0', None) is None else self.ln0(O)
            O = O + F.relu(self.fc_o(O))
            O = O if getattr(self, 'ln1', None) is None else self.ln1(O)
            return O

    class SAB(nn.Module):
        def __init__(self, dim_in, dim_out, num_heads, ln=False):
            super(SAB, self).__init__()
            self.mab = MAB(dim_in, dim_in, dim_out, num_heads, ln=ln)

        def forward(self, X):
            return self.mab(X, X)

    class ISAB(nn.Module):
        def __init__(self, dim_in, dim_out, num_heads, num_inds, ln=False):
            super(ISAB, self).__init__()
            self.I = nn.Parameter(torch.Tensor(1, num_inds, dim_out))
            nn.init.xavier_uniform_(self.I)
            self.mab0 = MAB(dim_out, dim_in, dim_out, num_heads, ln=ln)
            self.mab1 = MAB(dim_in, dim_out, dim_out, num_heads, ln=ln)

        def forward(self, X):
            H = self.mab0(self.I.repeat(X.size(0), 1, 1), X)
            return self.mab1(X, H)

    class PMA(nn.Module):
        def __init__(self, dim, num_heads, num_seeds, ln=False):
            super(PMA, self).__init__()
            self.S = nn.Parameter(torch.Tensor(1, num_seeds, dim))
            nn.init.xavier_uniform_(self.S)
            self.mab = MAB(dim, dim, dim, num_heads, ln=ln)

        def forward(self, X):
            return self.mab(self.S.repeat(X.size(0), 1, 1), X)

    class SetTransformer(nn.Module):
        def __init__(self, dim_input, num_outputs, dim_output, num_inds=4, dim_hidden=8, num_heads=2, ln=True):
            super(SetTransformer, self).__init__()
            self.enc = nn.Sequential(ISAB(dim_input, dim_hidden, num_heads, num_inds, ln=ln),
                                     SAB(dim_hidden, dim_hidden, num_heads, ln=ln))
            self.dec = nn.Sequential(PMA(dim_hidden, num_heads, num_outputs, ln=ln),
                                     nn.Linear(dim_hidden, dim_output))

        def forward(self, X):
            return self.dec(self.enc(X))

    class PaddedSetPool(nn.Module):
        """Padded sets: self-attention that ignores the padding, then a seed vector attending to the
        set (PMA) and Deep Sets' masked sum of phi(x), side by side."""

        def __init__(self, dim_input=2, dim=8):
            super().__init__()
            self.embed = nn.Linear(dim_input, dim)
            self.sab = nn.MultiheadAttention(dim, num_heads=2, batch_first=True)
            self.seed = nn.Parameter(torch.randn(1, 1, dim) * 0.1)
            self.pma = nn.MultiheadAttention(dim, num_heads=2, batch_first=True)
            self.phi = nn.Sequential(nn.Linear(dim, dim), nn.ReLU())
            self.rho = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))

        def forward(self, x, key_padding_mask):
            h = self.embed(x)
            h = h + self.sab(h, h, h, key_padding_mask=key_padding_mask, need_weights=False)[0]
            pooled, weights = self.pma(self.seed.expand(x.size(0), -1, -1), h, h, key_padding_mask=key_padding_mask)
            keep = (~key_padding_mask).unsqueeze(-1).float()
            deep_sets = (self.phi(h) * keep).sum(1) / keep.sum(1)
            return self.rho(torch.cat([pooled.squeeze(1), deep_sets], -1)).squeeze(-1), weights

    return nn.ModuleDict({"set_transformer": SetTransformer(2, 1, 1), "padded": PaddedSetPool()})


def set_programs(m, weights, steps=3):
    torch, nn, F = m.torch, m.nn, m.F
    models = load(m, set_models(m), weights)
    st, padded = models["set_transformer"], models["padded"]
    rng = np.random.default_rng(9)
    # the max of a set of numbers, by the Set Transformer; sets of 6 two-d points
    X = torch.tensor(rng.standard_normal((4, 6, 2)).astype(np.float32))
    y = X[..., 0].max(1).values.unsqueeze(-1)
    lengths = [6, 3, 5, 2]
    key_padding_mask = torch.arange(6)[None, :] >= torch.tensor(lengths)[:, None]
    X_padded = X.masked_fill(key_padding_mask.unsqueeze(-1), 0.0)
    optimizer = m.optim.Adam(models.parameters(), lr=5e-3)
    log = []
    for step in range(steps):
        out = st(X).squeeze(-1)
        pred, attn_weights = padded(X_padded, key_padding_mask)
        loss = F.l1_loss(out, y) + F.mse_loss(pred, y.squeeze(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append(loss.item())
    models.eval()
    with torch.no_grad():
        perm = torch.tensor([3, 0, 5, 1, 4, 2])
        invariant = (st(X), st(X[:, perm]))
        junk = X_padded.clone()
        junk[key_padding_mask] = 9.0  # whatever sits in the padding is ignored
        padding = (padded(X_padded, key_padding_mask)[0], padded(junk, key_padding_mask)[0])
    return {"log": log, "grads": [p.grad for p in models.parameters()], "attn": attn_weights,
            "invariant": invariant, "padding": padding}


def test_set_transformer_and_padded_sets():
    weights = weights_of(set_models)
    ours, _ = run_both(set_programs, weights, rtol=1e-4, atol=1e-5)
    assert ours["log"][-1] < ours["log"][0]
    np.testing.assert_allclose(*ours["invariant"], rtol=1e-5, atol=1e-6)  # permutation invariant
    np.testing.assert_allclose(*ours["padding"], rtol=1e-5, atol=1e-6)
    attn = ours["attn"]
    assert attn.shape == (4, 1, 6) and (attn[1, 0, 3:] == 0).all() and (attn[3, 0, 2:] == 0).all()


# ----------------------------------------------------------------------------------------------
# Neural collaborative filtering
# ----------------------------------------------------------------------------------------------

USERS, ITEMS = 12, 20


def ncf_model(m, dropout=0.0):
    torch, nn = m.torch, m.nn

    class NCF(nn.Module):
        def __init__(self, user_num, item_num, factor_num, num_layers, dropout, model):
            super(NCF, self).__init__()
            self.dropout = dropout
            self.model = model
            self.embed_user_GMF = nn.Embedding(user_num, factor_num)
            self.embed_item_GMF = nn.Embedding(item_num, factor_num)
            self.embed_user_MLP = nn.Embedding(user_num, factor_num * (2 ** (num_layers - 1)))
            self.embed_item_MLP = nn.Embedding(item_num, factor_num * (2 ** (num_layers - 1)))
            MLP_modules = []
            for i in range(num_layers):
                input_size = factor_num * (2 ** (num_layers - i))
                MLP_modules.append(nn.Dropout(p=self.dropout))
                MLP_modules.append(nn.Linear(input_size, input_size // 2))
                MLP_modules.append(nn.ReLU())
            self.MLP_layers = nn.Sequential(*MLP_modules)
            if self.model in ['MLP', 'GMF']:
                predict_size = factor_num
            else:
                predict_size = factor_num * 2
            self.predict_layer = nn.Linear(predict_size, 1)
            self._init_weight_()

        def _init_weight_(self):
            nn.init.normal_(self.embed_user_GMF.weight, std=0.01)
            nn.init.normal_(self.embed_user_MLP.weight, std=0.01)
            nn.init.normal_(self.embed_item_GMF.weight, std=0.01)
            nn.init.normal_(self.embed_item_MLP.weight, std=0.01)
            for m in self.MLP_layers:
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
            nn.init.kaiming_uniform_(self.predict_layer.weight, a=1, nonlinearity='sigmoid')
            for m in self.modules():
                if isinstance(m, nn.Linear) and m.bias is not None:
                    m.bias.data.zero_()

        def forward(self, user, item):
            embed_user_GMF = self.embed_user_GMF(user)
            embed_item_GMF = self.embed_item_GMF(item)
            output_GMF = embed_user_GMF * embed_item_GMF
            embed_user_MLP = self.embed_user_MLP(user)
            embed_item_MLP = self.embed_item_MLP(item)
            interaction = torch.cat((embed_user_MLP, embed_item_MLP), -1)
            output_MLP = self.MLP_layers(interaction)
            concat = torch.cat((output_GMF, output_MLP), -1)
            prediction = self.predict_layer(concat)
            return prediction.view(-1)

    return NCF(USERS, ITEMS, 4, 2, dropout, "NeuMF-end")


def ncf(m, weights, epochs=5, top_k=5, lr=0.01):
    torch, nn = m.torch, m.nn
    model = load(m, ncf_model(m), weights)
    rng = np.random.default_rng(12)
    pos = {u: set(rng.choice(ITEMS, 3, replace=False).tolist()) for u in range(USERS)}
    users, items, labels = [], [], []
    for u in range(USERS):
        for i in range(ITEMS):
            users.append(u)
            items.append(i)
            labels.append(float(i in pos[u]))
    dataset = m.data.TensorDataset(torch.tensor(users), torch.tensor(items), torch.tensor(labels))
    loader = m.data.DataLoader(dataset, batch_size=64, shuffle=False)
    n_pos = sum(labels)
    loss_function = nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(labels) - n_pos) / n_pos))
    optimizer = m.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for epoch in range(epochs):
        model.train()
        total = 0.0
        for user, item, label in loader:
            model.zero_grad()
            prediction = model(user, item)
            loss = loss_function(prediction, label)
            loss.backward()
            optimizer.step()
            total += loss.item()
        losses.append(total)

    def hit(gt_item, pred_items):
        return 1 if gt_item in pred_items else 0

    def ndcg(gt_item, pred_items):
        if gt_item in pred_items:
            index = pred_items.index(gt_item)
            return np.reciprocal(np.log2(index + 2))
        return 0

    model.eval()
    HR, NDCG = [], []
    with torch.no_grad():
        for u in range(USERS):
            item = torch.arange(ITEMS)
            user = torch.full((ITEMS,), u, dtype=torch.long)
            predictions = model(user, item)
            _, indices = torch.topk(predictions, top_k)
            recommends = torch.take(item, indices).cpu().numpy().tolist()
            gt_item = min(pos[u])
            HR.append(hit(gt_item, recommends))
            NDCG.append(ndcg(gt_item, recommends))
    return {"losses": losses, "HR": float(np.mean(HR)), "NDCG": float(np.mean(NDCG)),
            "params": [p.detach() for p in model.parameters()], "pos_weight": loss_function.pos_weight,
            "buffers": sorted(dict(loss_function.named_buffers()))}


def test_neural_collaborative_filtering():
    weights = weights_of(ncf_model)
    ours, _ = run_both(ncf, weights, rtol=1e-4, atol=1e-5)
    # chance is 5 / 20
    assert ours["losses"][-1] < ours["losses"][0] and ours["HR"] > 0.4 and 0 < ours["NDCG"] <= ours["HR"]
    assert np.isclose(ours["pos_weight"], 17 / 3) and ours["buffers"] == ["pos_weight"]


# ----------------------------------------------------------------------------------------------
# Activation checkpointing, Hugging Face style
# ----------------------------------------------------------------------------------------------


def deep_mlp(m, p_drop=0.0):
    nn = m.nn

    class Layer(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.dense = nn.Linear(dim, dim)
            self.norm = nn.LayerNorm(dim)
            self.dropout = nn.Dropout(p_drop)

        def forward(self, hidden_states, attention_mask=None, scale=None):
            out = self.dropout(m.F.gelu(self.dense(self.norm(hidden_states))))
            if attention_mask is not None:
                out = out * attention_mask
            if scale is not None:
                out = out * scale
            return hidden_states + out

    class Encoder(nn.Module):
        def __init__(self, dim=8, depth=6):
            super().__init__()
            self.embed = nn.Linear(4, dim)
            self.layer = nn.ModuleList([Layer(dim) for _ in range(depth)])
            self.head = nn.Linear(dim, 1)
            self.gradient_checkpointing = False

        def forward(self, x, attention_mask=None, use_reentrant=False):
            hidden_states = self.embed(x)
            for i, layer_module in enumerate(self.layer):
                if self.gradient_checkpointing and self.training:
                    def create_custom_forward(module):
                        def custom_forward(*inputs):
                            return module(*inputs)
                        return custom_forward

                    hidden_states = m.torch.utils.checkpoint.checkpoint(
                        create_custom_forward(layer_module), hidden_states, attention_mask, None,
                        use_reentrant=use_reentrant)
                else:
                    hidden_states = layer_module(hidden_states, attention_mask)
            return self.head(hidden_states).squeeze(-1)

    return Encoder()


def checkpointing(m, weights, use_reentrant=False, steps=3):
    torch, F = m.torch, m.F
    model = load(m, deep_mlp(m), weights)
    rng = np.random.default_rng(13)
    x = torch.tensor(rng.standard_normal((6, 4)).astype(np.float32))
    mask = torch.tensor((rng.random((6, 8)) > 0.2).astype(np.float32))
    y = torch.tensor(rng.standard_normal(6).astype(np.float32))
    optimizer = m.optim.SGD(model.parameters(), lr=0.05)
    log = []
    for step in range(steps):
        for flag in (False, True):
            model.gradient_checkpointing = flag
            model.zero_grad()
            loss = F.mse_loss(model(x, mask, use_reentrant=use_reentrant), y)
            loss.backward()
            log.append((loss.item(), [p.grad.clone() for p in model.parameters()]))
        optimizer.step()
    return log


def test_gradient_checkpointing_hugging_face_style():
    weights = weights_of(deep_mlp)
    for use_reentrant in (False, True):
        log, _ = run_both(checkpointing, weights, use_reentrant, rtol=1e-5, atol=1e-6)
        for (plain_loss, plain), (ckpt_loss, ckpt) in zip(log[::2], log[1::2]):
            assert plain_loss == ckpt_loss
            for a, b in zip(plain, ckpt):
                np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def reentrant_without_a_grad_input(m, weights):
    model = load(m, deep_mlp(m), weights)
    x = m.torch.ones(6, 8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        h = m.torch.utils.checkpoint.checkpoint(model.layer[0], x, use_reentrant=True)
        (h.sum() + model.head(h).sum()).backward()
    warned = any("None of the inputs have requires_grad=True" in str(w.message) for w in caught)
    return model.layer[0].dense.weight.grad, model.head.weight.grad, warned


def test_reentrant_checkpoint_on_an_input_without_grad_still_gives_the_parameters_gradients():
    """A deliberate difference (autograd/utils/checkpoint.py's docstring): PyTorch's reentrant variant
    leaves the parameters inside without gradients (and warns) when no argument requires grad; ours
    gives them the gradients of the plain call."""
    weights = weights_of(deep_mlp)
    inner, head, warned = reentrant_without_a_grad_input(OURS, weights)
    model = load(OURS, deep_mlp(OURS), weights)
    (lambda h: h.sum() + model.head(h).sum())(model.layer[0](OURS.torch.ones(6, 8))).backward()
    np.testing.assert_allclose(inner.numpy(), model.layer[0].dense.weight.grad.numpy(), rtol=1e-6)
    assert not warned
    m = pytorch()
    if m is not None:
        inner, head, warned = reentrant_without_a_grad_input(m, weights)
        assert inner is None and head is not None and warned


def test_checkpointing_with_dropout_replays_the_same_mask():
    """Without torch: with dropout inside, the recomputation draws the mask the forward drew, so the
    checkpointed gradients are those of the plain run from the same seed."""
    weights = weights_of(deep_mlp)
    torch = OURS.torch
    model = load(OURS, deep_mlp(OURS, p_drop=0.3), weights)
    x = torch.tensor(np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32))
    grads = []
    for flag in (False, True):
        model.gradient_checkpointing = flag
        model.zero_grad()
        torch.manual_seed(7)
        model(x).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Fully masked rows: left-padded sequences under a causal mask leave pad queries with no key at all
# ----------------------------------------------------------------------------------------------


def fully_masked_rows(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(14)
    q = torch.tensor(rng.standard_normal((2, 4, 6)), requires_grad=True)
    k = torch.tensor(rng.standard_normal((2, 4, 6)))
    pad = torch.tensor([[True, True, False, False], [False, False, False, False]])  # left padding
    causal = torch.ones(4, 4, dtype=torch.bool).triu(1)
    mask = causal[None] | pad[:, None, :]
    scores = (q @ k.transpose(-2, -1)).masked_fill(mask, float("-inf"))
    attn = scores.softmax(-1)  # the pad queries' rows: all -inf, so NaN
    normaliser = torch.logsumexp(scores, dim=-1)  # -inf there
    log_attn = scores.log_softmax(-1)  # NaN there
    attn = torch.nan_to_num(attn)
    (attn * torch.tensor(rng.standard_normal((2, 4, 4)))).sum().backward()
    return attn, normaliser, q.grad, torch.isnan(log_attn)


def test_fully_masked_rows_give_nan_then_zero():
    ours, _ = run_both(fully_masked_rows, rtol=1e-10, atol=1e-12)
    attn, normaliser, q_grad, log_nan = ours
    assert (attn[0, :2] == 0).all() and np.isneginf(normaliser[0, 0]) and np.isfinite(q_grad).all()
    assert log_nan[0, :2].all() and not log_nan[0, 2:].any() and not log_nan[1].any()


def test_fully_masked_rows_warn_nothing():
    # in a fresh interpreter with Python's default warning filters (pytest installs its own): NumPy's
    # RuntimeWarnings from inside chainrule are filtered, as PyTorch computes these NaN silently
    import subprocess
    import sys

    program = ("from tests.test_programs_probe6_architectures import OURS, fully_masked_rows\n"
               "fully_masked_rows(OURS)\n")
    done = subprocess.run([sys.executable, "-W", "default", "-c", program], capture_output=True, text=True,
                          check=True, cwd=__file__.rsplit("/tests/", 1)[0])
    assert "Warning" not in done.stderr, done.stderr


# ----------------------------------------------------------------------------------------------
# Debugging with anomaly detection on: a causal mask of -inf is not an anomaly
# ----------------------------------------------------------------------------------------------


def causal_attention_net(m):
    nn = m.nn
    return nn.ModuleDict({"qkv": nn.Linear(6, 18), "out": nn.Linear(6, 6)})


def anomaly_detection_on(m, weights, steps=2):
    torch, F = m.torch, m.F
    net = load(m, causal_attention_net(m), weights)
    optimizer = m.optim.SGD(net.parameters(), lr=0.1)
    rng = np.random.default_rng(15)
    x = torch.tensor(rng.standard_normal((2, 5, 6)).astype(np.float32))
    target = torch.tensor(rng.standard_normal((2, 5, 6)).astype(np.float32))
    mask = torch.triu(torch.ones(5, 5), diagonal=1).bool()
    losses = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # PyTorch's "Anomaly Detection has been enabled" warning
        with torch.autograd.detect_anomaly():
            for step in range(steps):
                q, k, v = net["qkv"](x).chunk(3, dim=-1)
                scores = (q @ k.transpose(-2, -1)) / 6 ** 0.5
                scores = scores.masked_fill(mask, float("-inf"))  # -inf in a forward output: no anomaly
                y = net["out"](scores.softmax(-1) @ v)
                loss = F.mse_loss(y, target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
    return losses, [p.detach() for p in net.parameters()]


def test_a_training_step_with_anomaly_detection_on_and_a_causal_mask():
    weights = weights_of(causal_attention_net)
    (losses, params), _ = run_both(anomaly_detection_on, weights, rtol=1e-5, atol=1e-6)
    assert losses[-1] < losses[0]
