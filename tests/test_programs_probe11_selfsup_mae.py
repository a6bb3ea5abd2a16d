# ruff: noqa: E501  (the programs are kept as their authors wrote them)
"""Self-supervised, contrastive and metric-learning programs as their reference repositories write them, run as
tests/probe11_selfsup_common.py says. MAE (einsum patchify, masking by argsort and gather)."""

import math

import numpy as np

from .probe11_selfsup_common import images
from .pytorch_programs import assert_same, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# MAE (facebookresearch/mae: patchify by einsum, random masking by argsort and gather, mask tokens
# restored by gather, the normalised-pixel loss on the masked patches only; timm's blocks stand as
# nn.TransformerEncoderLayer)
# ----------------------------------------------------------------------------------------------


def get_2d_sincos_pos_embed(embed_dim, grid_size, cls_token=False):
    def get_1d_sincos_pos_embed_from_grid(embed_dim, pos):
        omega = np.arange(embed_dim // 2, dtype=np.float64)
        omega /= embed_dim / 2.
        omega = 1. / 10000**omega  # (D/2,)
        pos = pos.reshape(-1)  # (M,)
        out = np.einsum('m,d->md', pos, omega)  # (M, D/2), outer product
        return np.concatenate([np.sin(out), np.cos(out)], axis=1)  # (M, D)

    grid_h = np.arange(grid_size, dtype=np.float32)
    grid_w = np.arange(grid_size, dtype=np.float32)
    grid = np.meshgrid(grid_w, grid_h)  # here w goes first
    grid = np.stack(grid, axis=0).reshape([2, 1, grid_size, grid_size])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])  # (H*W, D/2)
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])  # (H*W, D/2)
    pos_embed = np.concatenate([emb_h, emb_w], axis=1)
    if cls_token:
        pos_embed = np.concatenate([np.zeros([1, embed_dim]), pos_embed], axis=0)
    return pos_embed


def mae_model(m, img_size=8, patch_size=2, embed_dim=16, depth=1, num_heads=2, decoder_embed_dim=8,
              decoder_depth=1, decoder_num_heads=2, norm_pix_loss=True):
    torch, nn = m.torch, m.nn

    class PatchEmbed(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_size = (patch_size, patch_size)
            self.num_patches = (img_size // patch_size) ** 2
            self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

        def forward(self, x):
            return self.proj(x).flatten(2).transpose(1, 2)  # BCHW -> BNC

    def Block(dim, heads):
        return nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, activation="gelu",
                                          batch_first=True, norm_first=True)

    class MaskedAutoencoderViT(nn.Module):
        """ Masked Autoencoder with VisionTransformer backbone
        """
        def __init__(self):
            super().__init__()
            # MAE encoder specifics
            self.patch_embed = PatchEmbed()
            num_patches = self.patch_embed.num_patches
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim), requires_grad=False)  # fixed sin-cos embedding
            self.blocks = nn.ModuleList([Block(embed_dim, num_heads) for i in range(depth)])
            self.norm = nn.LayerNorm(embed_dim)
            # MAE decoder specifics
            self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim, bias=True)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
            self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, decoder_embed_dim), requires_grad=False)  # fixed sin-cos embedding
            self.decoder_blocks = nn.ModuleList([Block(decoder_embed_dim, decoder_num_heads) for i in range(decoder_depth)])
            self.decoder_norm = nn.LayerNorm(decoder_embed_dim)
            self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * 3, bias=True)  # decoder to patch
            self.norm_pix_loss = norm_pix_loss
            self.initialize_weights()

        def initialize_weights(self):
            # initialization
            # initialize (and freeze) pos_embed by sin-cos embedding
            pos_embed = get_2d_sincos_pos_embed(self.pos_embed.shape[-1], int(self.patch_embed.num_patches**.5), cls_token=True)
            self.pos_embed.data.copy_(torch.from_numpy(pos_embed).float().unsqueeze(0))
            decoder_pos_embed = get_2d_sincos_pos_embed(self.decoder_pos_embed.shape[-1], int(self.patch_embed.num_patches**.5), cls_token=True)
            self.decoder_pos_embed.data.copy_(torch.from_numpy(decoder_pos_embed).float().unsqueeze(0))
            # initialize patch_embed like nn.Linear (instead of nn.Conv2d)
            w = self.patch_embed.proj.weight.data
            torch.nn.init.xavier_uniform_(w.view([w.shape[0], -1])) if hasattr(torch, "nn") else \
                nn.init.xavier_uniform_(w.view([w.shape[0], -1]))
            # timm's trunc_normal_(std=.02) is effectively normal_(std=.02) as cutoff is too big (2.)
            nn.init.normal_(self.cls_token, std=.02)
            nn.init.normal_(self.mask_token, std=.02)
            # initialize nn.Linear and nn.LayerNorm
            self.apply(self._init_weights)

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                # we use xavier_uniform following official JAX ViT:
                nn.init.xavier_uniform_(m.weight)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

        def patchify(self, imgs):
            """
            imgs: (N, 3, H, W)
            x: (N, L, patch_size**2 *3)
            """
            p = self.patch_embed.patch_size[0]
            assert imgs.shape[2] == imgs.shape[3] and imgs.shape[2] % p == 0
            h = w = imgs.shape[2] // p
            x = imgs.reshape(shape=(imgs.shape[0], 3, h, p, w, p))
            x = torch.einsum('nchpwq->nhwpqc', x)
            x = x.reshape(shape=(imgs.shape[0], h * w, p**2 * 3))
            return x

        def unpatchify(self, x):
            """
            x: (N, L, patch_size**2 *3)
            imgs: (N, 3, H, W)
            """
            p = self.patch_embed.patch_size[0]
            h = w = int(x.shape[1]**.5)
            assert h * w == x.shape[1]
            x = x.reshape(shape=(x.shape[0], h, w, p, p, 3))
            x = torch.einsum('nhwpqc->nchpwq', x)
            imgs = x.reshape(shape=(x.shape[0], 3, h * p, h * p))
            return imgs

        def random_masking(self, x, mask_ratio, noise):
            """
            Perform per-sample random masking by per-sample shuffling.
            Per-sample shuffling is done by argsort random noise.
            x: [N, L, D], sequence
            """
            N, L, D = x.shape  # batch, length, dim
            len_keep = int(L * (1 - mask_ratio))
            # noise = torch.rand(N, L, device=x.device)  # noise in [0, 1]: here given, the same to both libraries
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

        def forward_encoder(self, x, mask_ratio, noise):
            # embed patches
            x = self.patch_embed(x)
            # add pos embed w/o cls token
            x = x + self.pos_embed[:, 1:, :]
            # masking: length -> length * mask_ratio
            x, mask, ids_restore = self.random_masking(x, mask_ratio, noise)
            # append cls token
            cls_token = self.cls_token + self.pos_embed[:, :1, :]
            cls_tokens = cls_token.expand(x.shape[0], -1, -1)
            x = torch.cat((cls_tokens, x), dim=1)
            # apply Transformer blocks
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(x)
            return x, mask, ids_restore

        def forward_decoder(self, x, ids_restore):
            # embed tokens
            x = self.decoder_embed(x)
            # append mask tokens to sequence
            mask_tokens = self.mask_token.repeat(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], 1)
            x_ = torch.cat([x[:, 1:, :], mask_tokens], dim=1)  # no cls token
            x_ = torch.gather(x_, dim=1, index=ids_restore.unsqueeze(-1).repeat(1, 1, x.shape[2]))  # unshuffle
            x = torch.cat([x[:, :1, :], x_], dim=1)  # append cls token
            # add pos embed
            x = x + self.decoder_pos_embed
            # apply Transformer blocks
            for blk in self.decoder_blocks:
                x = blk(x)
            x = self.decoder_norm(x)
            # predictor projection
            x = self.decoder_pred(x)
            # remove cls token
            x = x[:, 1:, :]
            return x

        def forward_loss(self, imgs, pred, mask):
            """
            imgs: [N, 3, H, W]
            pred: [N, L, p*p*3]
            mask: [N, L], 0 is keep, 1 is remove,
            """
            target = self.patchify(imgs)
            if self.norm_pix_loss:
                mean = target.mean(dim=-1, keepdim=True)
                var = target.var(dim=-1, keepdim=True)
                target = (target - mean) / (var + 1.e-6)**.5
            loss = (pred - target) ** 2
            loss = loss.mean(dim=-1)  # [N, L], mean loss per patch
            loss = (loss * mask).sum() / mask.sum()  # mean loss on removed patches
            return loss

        def forward(self, imgs, mask_ratio=0.75, noise=None):
            latent, mask, ids_restore = self.forward_encoder(imgs, mask_ratio, noise)
            pred = self.forward_decoder(latent, ids_restore)  # [N, L, p*p*3]
            loss = self.forward_loss(imgs, pred, mask)
            return loss, pred, mask

    return MaskedAutoencoderViT()


def mae(m, weights, epochs=2, iters=2, blr=1.5e-4, warmup_epochs=1, min_lr=0.):
    torch = m.torch
    model = load(m, mae_model(m), weights)

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

    lr = blr * 4 / 256 * 100

    def adjust_learning_rate(optimizer, epoch):
        """Decay the learning rate with half-cycle cosine after warmup"""
        if epoch < warmup_epochs:
            lr_ = lr * epoch / warmup_epochs
        else:
            lr_ = min_lr + (lr - min_lr) * 0.5 * \
                (1. + math.cos(math.pi * (epoch - warmup_epochs) / (epochs - warmup_epochs)))
        for param_group in optimizer.param_groups:
            if "lr_scale" in param_group:
                param_group["lr"] = lr_ * param_group["lr_scale"]
            else:
                param_group["lr"] = lr_
        return lr_

    param_groups = param_groups_weight_decay(model, 0.05)
    optimizer = m.optim.AdamW(param_groups, lr=lr, betas=(0.9, 0.95))
    rng = np.random.default_rng(7)
    log = []
    for epoch in range(epochs):
        model.train(True)
        for data_iter_step in range(iters):
            adjust_learning_rate(optimizer, data_iter_step / iters + epoch)
            samples = images(m, n=4, side=8, seed=170 + epoch * iters + data_iter_step)
            noise = torch.tensor(rng.random((4, 16)).astype(np.float32))
            loss, pred, mask = model(samples, mask_ratio=0.75, noise=noise)
            loss_value = loss.item()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            log.append((loss_value, optimizer.param_groups[0]["lr"]))
    reconstruction = model.unpatchify(pred.detach())
    # attention ignores a shift common to a query's scores, so the key bias's gradient is rounding alone, which
    # AdamW makes into steps of lr: the key biases are left out of the comparison
    state, key_biases = model.state_dict(), {}
    for name in [k for k in state if k.endswith("in_proj_bias")]:
        q, k, v = state[name].chunk(3)
        state[name], key_biases[name] = torch.cat([q, v]), k
    return {"log": log, "mask": mask, "reconstruction": reconstruction, "state": state, "key_biases": key_biases,
            "grads": {n: p.grad for n, p in model.named_parameters() if p.requires_grad},
            "roundtrip": model.unpatchify(model.patchify(samples)) - samples,
            "frozen": [n for n, p in model.named_parameters() if not p.requires_grad]}


def test_mae():
    weights = weights_of(mae_model)
    bound = math.sqrt(6 / (16 + 12))  # xavier on the patch projection's (16, 12) view
    assert np.abs(weights["patch_embed.proj.weight"]).max() <= bound
    assert np.abs(weights["patch_embed.proj.weight"]).max() > 1 / math.sqrt(12)  # not Conv2d's own init
    ours, theirs = run_both(mae, weights, compare=False)
    key_biases = ours.pop("key_biases")
    if theirs is not None:
        theirs.pop("key_biases")
        assert_same(ours, theirs, rtol=1e-4, atol=1e-5)
    assert all(np.abs(b).max() < 4 * 1.5e-4 * 4 / 256 * 100 for b in key_biases.values())  # four steps of lr
    for name, grad in ours["grads"].items():
        if name.endswith("in_proj_bias"):
            d = len(grad) // 3
            assert np.abs(grad[d:2 * d]).max() < 1e-5  # the key bias's
    assert ours["frozen"] == ["pos_embed", "decoder_pos_embed"]
    np.testing.assert_array_equal(ours["roundtrip"], 0)
    assert (ours["mask"].sum(1) == 12).all()
    np.testing.assert_array_equal(ours["state"]["pos_embed"], weights["pos_embed"])
    assert ours["log"][0][1] == 0
