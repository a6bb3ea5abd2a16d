# ruff: noqa: B006, B007, E501, UP008  (the programs are kept as their authors wrote them)
"""Self-supervised, contrastive and metric-learning programs as their reference repositories write them, run as
tests/probe11_selfsup_common.py says. DINO's ViT (bicubic positional interpolation with a fractional scale factor,
attention maps, k-NN eval with ``resize_``, a linear probe); DINOv2's losses (iBOT's masked patches through
``index_select(out=buffer[:n])`` and ``buffer[:n].copy_``, Sinkhorn teacher, KoLeo's ``view(-1)[::n + 1].fill_``,
lr/wd multiplier groups)."""

import math

import numpy as np
import pytest

from .probe11_selfsup_common import images
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# DINO's ViT (facebookresearch/dino vision_transformer.py: positional embeddings interpolated by bicubic
# F.interpolate with a fractional scale_factor for the local crops, the last self-attention), its attention
# maps thresholded as visualize_attention.py does, its k-NN evaluation (eval_knn.py: resize_, scatter_,
# div_().exp_()) and a linear probe on intermediate layers (eval_linear.py)
# ----------------------------------------------------------------------------------------------


def dino_vit(m, img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=2):
    torch, nn = m.torch, m.nn
    from functools import partial

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

    class Attention(nn.Module):
        def __init__(self, dim, num_heads=8, qkv_bias=False, qk_scale=None, attn_drop=0., proj_drop=0.):
            super().__init__()
            self.num_heads = num_heads
            head_dim = dim // num_heads
            self.scale = qk_scale or head_dim ** -0.5
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.attn_drop = nn.Dropout(attn_drop)
            self.proj = nn.Linear(dim, dim)
            self.proj_drop = nn.Dropout(proj_drop)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv[0], qkv[1], qkv[2]
            attn = (q @ k.transpose(-2, -1)) * self.scale
            attn = attn.softmax(dim=-1)
            attn = self.attn_drop(attn)
            x = (attn @ v).transpose(1, 2).reshape(B, N, C)
            x = self.proj(x)
            x = self.proj_drop(x)
            return x, attn

    class Block(nn.Module):
        def __init__(self, dim, num_heads, mlp_ratio=4., qkv_bias=False, qk_scale=None, drop=0., attn_drop=0.,
                     drop_path=0., act_layer=nn.GELU, norm_layer=nn.LayerNorm):
            super().__init__()
            self.norm1 = norm_layer(dim)
            self.attn = Attention(
                dim, num_heads=num_heads, qkv_bias=qkv_bias, qk_scale=qk_scale, attn_drop=attn_drop, proj_drop=drop)
            self.drop_path = nn.Identity()
            self.norm2 = norm_layer(dim)
            mlp_hidden_dim = int(dim * mlp_ratio)
            self.mlp = Mlp(in_features=dim, hidden_features=mlp_hidden_dim, act_layer=act_layer, drop=drop)

        def forward(self, x, return_attention=False):
            y, attn = self.attn(self.norm1(x))
            if return_attention:
                return attn
            x = x + self.drop_path(y)
            x = x + self.drop_path(self.mlp(self.norm2(x)))
            return x

    class PatchEmbed(nn.Module):
        """ Image to Patch Embedding
        """
        def __init__(self, img_size=224, patch_size=16, in_chans=3, embed_dim=768):
            super().__init__()
            num_patches = (img_size // patch_size) * (img_size // patch_size)
            self.img_size = img_size
            self.patch_size = patch_size
            self.num_patches = num_patches
            self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

        def forward(self, x):
            B, C, H, W = x.shape
            x = self.proj(x).flatten(2).transpose(1, 2)
            return x

    class VisionTransformer(nn.Module):
        """ Vision Transformer """
        def __init__(self, img_size=[224], patch_size=16, in_chans=3, num_classes=0, embed_dim=768, depth=12,
                     num_heads=12, mlp_ratio=4., qkv_bias=False, qk_scale=None, drop_rate=0., attn_drop_rate=0.,
                     drop_path_rate=0., norm_layer=nn.LayerNorm, **kwargs):
            super().__init__()
            self.num_features = self.embed_dim = embed_dim
            self.patch_embed = PatchEmbed(
                img_size=img_size[0], patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim)
            num_patches = self.patch_embed.num_patches
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + 1, embed_dim))
            self.pos_drop = nn.Dropout(p=drop_rate)
            dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]  # stochastic depth decay rule
            self.blocks = nn.ModuleList([
                Block(
                    dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, qk_scale=qk_scale,
                    drop=drop_rate, attn_drop=attn_drop_rate, drop_path=dpr[i], norm_layer=norm_layer)
                for i in range(depth)])
            self.norm = norm_layer(embed_dim)
            # Classifier head
            self.head = nn.Linear(embed_dim, num_classes) if num_classes > 0 else nn.Identity()
            nn.init.trunc_normal_(self.pos_embed, std=.02)
            nn.init.trunc_normal_(self.cls_token, std=.02)
            self.apply(self._init_weights)

        def _init_weights(self, m):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=.02)
                if isinstance(m, nn.Linear) and m.bias is not None:
                    nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.LayerNorm):
                nn.init.constant_(m.bias, 0)
                nn.init.constant_(m.weight, 1.0)

        def interpolate_pos_encoding(self, x, w, h):
            npatch = x.shape[1] - 1
            N = self.pos_embed.shape[1] - 1
            if npatch == N and w == h:
                return self.pos_embed
            class_pos_embed = self.pos_embed[:, 0]
            patch_pos_embed = self.pos_embed[:, 1:]
            dim = x.shape[-1]
            w0 = w // self.patch_embed.patch_size
            h0 = h // self.patch_embed.patch_size
            # we add a small number to avoid floating point error in the interpolation
            # see discussion at https://github.com/facebookresearch/dino/issues/8
            w0, h0 = w0 + 0.1, h0 + 0.1
            patch_pos_embed = nn.functional.interpolate(
                patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
                scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)),
                mode='bicubic',
            )
            assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
            patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
            return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)

        def prepare_tokens(self, x):
            B, nc, w, h = x.shape
            x = self.patch_embed(x)  # patch linear embedding
            # add the [CLS] token to the embed patch tokens
            cls_tokens = self.cls_token.expand(B, -1, -1)
            x = torch.cat((cls_tokens, x), dim=1)
            # add positional encoding to each token
            x = x + self.interpolate_pos_encoding(x, w, h)
            return self.pos_drop(x)

        def forward(self, x):
            x = self.prepare_tokens(x)
            for blk in self.blocks:
                x = blk(x)
            x = self.norm(x)
            return x[:, 0]

        def get_last_selfattention(self, x):
            x = self.prepare_tokens(x)
            for i, blk in enumerate(self.blocks):
                if i < len(self.blocks) - 1:
                    x = blk(x)
                else:
                    # return attention of the last block
                    return blk(x, return_attention=True)

        def get_intermediate_layers(self, x, n=1):
            x = self.prepare_tokens(x)
            # we return the output tokens from the `n` last blocks
            output = []
            for i, blk in enumerate(self.blocks):
                x = blk(x)
                if len(self.blocks) - i <= n:
                    output.append(self.norm(x))
            return output

    return VisionTransformer(img_size=[img_size], patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                             num_heads=num_heads, mlp_ratio=2, qkv_bias=True,
                             norm_layer=partial(nn.LayerNorm, eps=1e-6))


def dino_vit_program(m, weights, steps=3, patch_size=4, threshold=0.6):
    torch, nn, F = m.torch, m.nn, m.F
    vit = load(m, dino_vit(m), weights)
    # SGD: AdamW would make the entries of gradients near zero (rounding alone) into steps of lr
    optimizer = m.optim.SGD(vit.parameters(), lr=1e-4, momentum=0.9)
    log = []
    for step in range(steps):
        x = images(m, n=4, side=16, seed=180 + step)
        local = images(m, n=4, side=8, seed=190 + step)
        cls_global = vit(torch.cat([x, x.flip(3)]))
        cls_local = vit(local)  # 2x2 patches: the 4x4 positional grid interpolated by a factor 0.525
        p_global = F.softmax(cls_global.detach() / 0.04, dim=-1).chunk(2)
        loss = sum(torch.sum(-p * F.log_softmax(cls_local / 0.1, dim=-1), dim=-1).mean() for p in p_global)
        loss = loss + torch.sum(-p_global[0] * F.log_softmax(cls_global[4:] / 0.1, dim=-1), dim=-1).mean()
        optimizer.zero_grad()
        loss.backward()
        log.append((loss.item(), vit.pos_embed.grad.clone()))
        optimizer.step()

    # attention maps (visualize_attention.py)
    for p in vit.parameters():
        p.requires_grad = False
    vit.eval()
    img = images(m, n=1, side=16, seed=200)
    w_featmap = img.shape[-2] // patch_size
    h_featmap = img.shape[-1] // patch_size
    attentions = vit.get_last_selfattention(img)
    nh = attentions.shape[1]  # number of head
    # we keep only the output patch attention
    attentions = attentions[0, :, 0, 1:].reshape(nh, -1)
    # we keep only a certain percentage of the mass
    val, idx = torch.sort(attentions)
    val /= torch.sum(val, dim=1, keepdim=True)
    cumval = torch.cumsum(val, dim=1)
    th_attn = cumval > (1 - threshold)
    idx2 = torch.argsort(idx)
    for head in range(nh):
        th_attn[head] = th_attn[head][idx2[head]]
    th_attn = th_attn.reshape(nh, w_featmap, h_featmap).float()
    # interpolate
    th_attn = nn.functional.interpolate(th_attn.unsqueeze(0), scale_factor=patch_size, mode="nearest")[0].cpu().numpy()
    attentions = attentions.reshape(nh, w_featmap, h_featmap)
    attentions = nn.functional.interpolate(attentions.unsqueeze(0), scale_factor=patch_size, mode="nearest")[0].cpu().numpy()

    # k-NN evaluation (eval_knn.py)
    @torch.no_grad()
    def knn_classifier(train_features, train_labels, test_features, test_labels, k, T, num_classes=1000):
        top1, top5, total = 0.0, 0.0, 0
        train_features = train_features.t()
        num_test_images, num_chunks = test_labels.shape[0], 4
        imgs_per_chunk = num_test_images // num_chunks
        retrieval_one_hot = torch.zeros(k, num_classes).to(train_features.device)
        for idx in range(0, num_test_images, imgs_per_chunk):
            # get the features for test images
            features = test_features[
                idx : min((idx + imgs_per_chunk), num_test_images), :
            ]
            targets = test_labels[idx : min((idx + imgs_per_chunk), num_test_images)]
            batch_size = targets.shape[0]
            # calculate the dot product and compute top-k neighbors
            similarity = torch.mm(features, train_features)
            distances, indices = similarity.topk(k, largest=True, sorted=True)
            candidates = train_labels.view(1, -1).expand(batch_size, -1)
            retrieved_neighbors = torch.gather(candidates, 1, indices)
            retrieval_one_hot.resize_(batch_size * k, num_classes).zero_()
            retrieval_one_hot.scatter_(1, retrieved_neighbors.view(-1, 1), 1)
            distances_transform = distances.clone().div_(T).exp_()
            probs = torch.sum(
                torch.mul(
                    retrieval_one_hot.view(batch_size, -1, num_classes),
                    distances_transform.view(batch_size, -1, 1),
                ),
                1,
            )
            _, predictions = probs.sort(1, True)
            # find the predictions that match the target
            correct = predictions.eq(targets.data.view(-1, 1))
            top1 = top1 + correct.narrow(1, 0, 1).sum().item()
            top5 = top5 + correct.narrow(1, 0, min(5, k)).sum().item()  # top5 does not make sense if k < 5
            total += targets.size(0)
        top1 = top1 * 100.0 / total
        top5 = top5 * 100.0 / total
        return top1, top5

    rng = np.random.default_rng(8)
    protos = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    train_labels = torch.tensor(np.arange(12) % 3)
    test_labels = torch.tensor(np.arange(8) % 3)
    train_images = torch.tensor(protos[np.arange(12) % 3] + 0.5 * rng.standard_normal((12, 3, 16, 16)).astype(np.float32))
    test_images = torch.tensor(protos[np.arange(8) % 3] + 0.5 * rng.standard_normal((8, 3, 16, 16)).astype(np.float32))
    with torch.no_grad():
        train_features = nn.functional.normalize(vit(train_images), dim=1, p=2)
        test_features = nn.functional.normalize(vit(test_images), dim=1, p=2)
    knn = knn_classifier(train_features, train_labels, test_features, test_labels, 5, 0.07, num_classes=6)

    # linear probe (eval_linear.py) on the last block's [CLS] token and its mean patch token
    class LinearClassifier(nn.Module):
        """Linear layer to train on top of frozen features"""
        def __init__(self, dim, num_labels=1000):
            super(LinearClassifier, self).__init__()
            self.num_labels = num_labels
            self.linear = nn.Linear(dim, num_labels)
            self.linear.weight.data.normal_(mean=0.0, std=0.01)
            self.linear.bias.data.zero_()

        def forward(self, x):
            # flatten
            x = x.view(x.size(0), -1)
            # linear layer
            return self.linear(x)

    linear_classifier = LinearClassifier(16 * 2, num_labels=3)
    with torch.no_grad():
        linear_classifier.linear.weight.copy_(torch.tensor(rng.standard_normal((3, 32)).astype(np.float32) * 0.01))
    probe_opt = m.optim.SGD(linear_classifier.parameters(), 0.1, momentum=0.9, weight_decay=0)
    for _ in range(2):
        with torch.no_grad():
            intermediate_output = vit.get_intermediate_layers(train_images, 1)
            output = torch.cat([x[:, 0] for x in intermediate_output], dim=-1)
            output = torch.cat((output.unsqueeze(-1), torch.mean(intermediate_output[-1][:, 1:], dim=1).unsqueeze(-1)),
                               dim=-1)
            output = output.reshape(output.shape[0], -1)
        probe_loss = nn.CrossEntropyLoss()(linear_classifier(output), train_labels)
        probe_opt.zero_grad()
        probe_loss.backward()
        probe_opt.step()
    return {"log": log, "attentions": attentions, "th_attn": th_attn, "knn": knn, "probe_loss": probe_loss,
            "probe": linear_classifier.state_dict(), "state": vit.state_dict()}


def test_dino_vit():
    weights = weights_of(dino_vit)
    ours, _ = run_both(dino_vit_program, weights, rtol=1e-4, atol=1e-5)
    assert ours["th_attn"].shape == (2, 16, 16) and set(np.unique(ours["th_attn"])) <= {0.0, 1.0}
    assert all(0 <= v <= 100 for v in ours["knn"])
    assert np.abs(ours["log"][0][1][0, 1:]).max() > 0  # the patch embeddings learn through the interpolation


# ----------------------------------------------------------------------------------------------
# DINOv2's losses (facebookresearch/dinov2): iBOT's masked-patch loss on tokens gathered by index_select into
# new_zeros buffers (``out=`` a slice of one, ``copy_`` into a slice of another), Sinkhorn-Knopp centring of the
# teacher, the KoLeo regulariser (the diagonal filled through ``view(-1)[::n + 1]``), a mask token put in by
# torch.where, parameter groups with lr and wd multipliers, the teacher by _foreach_mul_ / _foreach_add_
# ----------------------------------------------------------------------------------------------


def dinov2(m, weights, steps=3, student_temp=0.1, teacher_temp=0.07):
    torch, nn, F = m.torch, m.nn, m.F
    student = load(m, dino_vit(m), weights)
    teacher = load(m, dino_vit(m), weights)
    for p in teacher.parameters():
        p.requires_grad = False
    mask_token = nn.Parameter(torch.zeros(1, 16))
    ibot_head = nn.Linear(16, 10)
    with torch.no_grad():
        ibot_head.weight.copy_(torch.tensor(np.random.default_rng(9).standard_normal((10, 16)).astype(np.float32) * 0.1))
        ibot_head.bias.zero_()

    def forward_tokens(vit, x, masks=None):
        B, nc, w, h = x.shape
        x = vit.patch_embed(x)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat((vit.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + vit.interpolate_pos_encoding(x, w, h)
        for blk in vit.blocks:
            x = blk(x)
        x_norm = vit.norm(x)
        return {"x_norm_clstoken": x_norm[:, 0], "x_norm_patchtokens": x_norm[:, 1:]}

    class KoLeoLoss(nn.Module):
        """Kozachenko-Leonenko entropic loss regularizer from Sablayrolles et al. - 2018 - Spreading vectors for similarity search"""

        def __init__(self):
            super().__init__()
            self.pdist = nn.PairwiseDistance(2, eps=1e-8)

        def pairwise_NNs_inner(self, x):
            """
            Pairwise nearest neighbors for L2-normalized vectors.
            Uses Torch rather than Faiss to remain on GPU.
            """
            # parwise dot products (= inverse distance)
            dots = torch.mm(x, x.t())
            n = x.shape[0]
            dots.view(-1)[:: (n + 1)].fill_(-1)  # Trick to fill diagonal with -1
            # max inner prod -> min distance
            _, I = torch.max(dots, dim=1)  # noqa: E741
            return I

        def forward(self, student_output, eps=1e-8):
            """
            Args:
                student_output (BxD): backbone output of student
            """
            student_output = F.normalize(student_output, eps=eps, p=2, dim=-1)
            I = self.pairwise_NNs_inner(student_output)  # noqa: E741
            distances = self.pdist(student_output, student_output[I])  # BxD, BxD -> B
            loss = -torch.log(distances + eps).mean()
            return loss

    @torch.no_grad()
    def sinkhorn_knopp_teacher(teacher_output, teacher_temp, n_masked_patches_tensor=None, n_iterations=3):
        teacher_output = teacher_output.float()
        Q = torch.exp(teacher_output / teacher_temp).t()  # Q is K-by-B for consistency with notations from our paper
        B = Q.shape[1] if n_masked_patches_tensor is None else n_masked_patches_tensor
        K = Q.shape[0]  # how many prototypes
        # make the matrix sums to 1
        sum_Q = torch.sum(Q)
        Q /= sum_Q
        for it in range(n_iterations):
            # normalize each row: total weight per prototype must be 1/K
            sum_of_rows = torch.sum(Q, dim=1, keepdim=True)
            Q /= sum_of_rows
            Q /= K
            # normalize each column: total weight per sample must be 1/B
            Q /= torch.sum(Q, dim=0, keepdim=True)
            Q /= B
        Q *= B  # the columns must sum to 1 so that Q is an assignment
        return Q.t()

    def forward_masked(student_patch_tokens_masked, teacher_patch_tokens_masked, student_masks_flat,
                       n_masked_patches=None, masks_weight=None):
        t = teacher_patch_tokens_masked
        s = student_patch_tokens_masked
        loss = torch.sum(t * F.log_softmax(s / student_temp, dim=-1), dim=-1)
        if masks_weight is None:
            masks_weight = (
                (1 / student_masks_flat.sum(-1).clamp(min=1.0))
                .unsqueeze(-1)
                .expand_as(student_masks_flat)[student_masks_flat]
            )
        if n_masked_patches is not None:
            loss = loss[:n_masked_patches]
        loss = loss * masks_weight
        return -loss.sum() / student_masks_flat.shape[0]

    def get_params_groups(model_parts, lr_decay_rate=0.9, patch_embed_lr_mult=0.2):
        groups = []
        for prefix, model in model_parts:
            for name, param in model.named_parameters():
                name = prefix + name
                if not param.requires_grad:
                    continue
                layer_id = int(name.split("blocks.")[1].split(".")[0]) + 1 if "blocks." in name else 0
                d = {"params": param, "is_last_layer": False, "lr_multiplier": lr_decay_rate ** (3 - layer_id),
                     "wd_multiplier": 1.0, "name": name}
                if name.endswith(".bias") or "norm" in name or "gamma" in name:
                    d.update({"wd_multiplier": 0.0})
                if "patch_embed" in name:
                    d.update({"lr_multiplier": d["lr_multiplier"] * patch_embed_lr_mult})
                if "ibot_head" in name:
                    d.update({"is_last_layer": True})
                groups.append(d)
        return groups

    def apply_optim_scheduler(optimizer, lr, wd, last_layer_lr):
        for param_group in optimizer.param_groups:
            is_last_layer = param_group["is_last_layer"]
            lr_multiplier = param_group["lr_multiplier"]
            wd_multiplier = param_group["wd_multiplier"]
            param_group["weight_decay"] = wd * wd_multiplier
            param_group["lr"] = (last_layer_lr if is_last_layer else lr) * lr_multiplier

    koleo = KoLeoLoss()
    groups = get_params_groups([("", student), ("ibot_head.", ibot_head)])
    groups.append({"params": mask_token, "is_last_layer": False, "lr_multiplier": 1.0, "wd_multiplier": 0.0,
                   "name": "mask_token"})
    optimizer = m.optim.AdamW(groups, betas=(0.9, 0.999))
    rng = np.random.default_rng(10)
    log = []
    for step in range(steps):
        x = images(m, n=4, side=16, seed=210 + step)
        masks = torch.tensor(rng.random((4, 16)) < 0.4)
        masks[1] = False  # one image without masked patches
        masks[0, 0] = True
        mask_indices_list = masks.flatten().nonzero().flatten()
        n_masked_patches = mask_indices_list.shape[0]
        upperbound = 4 * 16 // 2
        masks_weight = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
        apply_optim_scheduler(optimizer, lr=1e-3 * (step + 1) / steps, wd=0.04 + 0.01 * step, last_layer_lr=5e-4)
        with torch.no_grad():
            teacher_out = forward_tokens(teacher, x)
            ibot_teacher_patch_tokens = teacher_out["x_norm_patchtokens"]
            _dim = ibot_teacher_patch_tokens.shape[-1]
            buffer_tensor_teacher = ibot_teacher_patch_tokens.new_zeros(upperbound, _dim)
            torch.index_select(
                ibot_teacher_patch_tokens.flatten(0, 1),
                dim=0,
                index=mask_indices_list,
                out=buffer_tensor_teacher[:n_masked_patches],
            )
            teacher_ibot = ibot_head(buffer_tensor_teacher)[:n_masked_patches]
            masked_teacher_ibot_softmaxed_centered = sinkhorn_knopp_teacher(
                teacher_ibot, teacher_temp=teacher_temp, n_masked_patches_tensor=torch.tensor([n_masked_patches]))
        student_out = forward_tokens(student, x, masks=masks)
        ibot_student_patch_tokens = student_out["x_norm_patchtokens"]
        buffer_tensor_patch_tokens = ibot_student_patch_tokens.new_zeros(upperbound, _dim)
        buffer_tensor_patch_tokens[:n_masked_patches].copy_(
            torch.index_select(ibot_student_patch_tokens.flatten(0, 1), dim=0, index=mask_indices_list)
        )
        student_global_masked_patch_tokens_after_head = ibot_head(buffer_tensor_patch_tokens)[:n_masked_patches]
        ibot_loss = forward_masked(student_global_masked_patch_tokens_after_head,
                                   masked_teacher_ibot_softmaxed_centered, student_masks_flat=masks,
                                   n_masked_patches=n_masked_patches, masks_weight=masks_weight)
        koleo_loss = 0.1 * koleo(student_out["x_norm_clstoken"])
        loss = ibot_loss + koleo_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(student.parameters(), 3.0)
        optimizer.step()
        with torch.no_grad():
            teacher_param_list = list(teacher.parameters())
            student_param_list = list(student.parameters())
            torch._foreach_mul_(teacher_param_list, 0.99)
            torch._foreach_add_(teacher_param_list, student_param_list, alpha=1 - 0.99)
        log.append((ibot_loss.item(), koleo_loss.item(), n_masked_patches, buffer_tensor_patch_tokens.requires_grad,
                    masked_teacher_ibot_softmaxed_centered.sum(-1)))
    return {"log": log, "teacher": teacher.state_dict(), "mask_token_grad": mask_token.grad,
            "ibot_head_grad": ibot_head.weight.grad,
            "groups": [(g["name"], g["lr"], g["weight_decay"]) for g in optimizer.param_groups],
            "buffer_tail": buffer_tensor_teacher[n_masked_patches:]}


def test_dinov2_losses():
    weights = weights_of(dino_vit)
    ours, _ = run_both(dinov2, weights, rtol=1e-4, atol=1e-5)
    for ibot, koleo, n_masked, tracked, q_rows in ours["log"]:
        assert tracked and n_masked > 1
        np.testing.assert_allclose(q_rows, 1, rtol=1e-5)  # each patch's assignment is a distribution
    np.testing.assert_array_equal(ours["buffer_tail"], 0)  # index_select wrote into the slice only
    assert np.abs(ours["mask_token_grad"]).max() > 0
    groups = dict((name, (lr, wd)) for name, lr, wd in ours["groups"])
    assert groups["ibot_head.weight"][0] == pytest.approx(5e-4 * 0.9 ** 3)  # the last layer's lr
    assert groups["patch_embed.proj.weight"][0] == pytest.approx(1e-3 * 0.9 ** 3 * 0.2)
    assert groups["blocks.1.norm1.weight"][1] == 0
