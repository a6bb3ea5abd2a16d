# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch vision programs (see tests/pytorch_programs.py), each run unchanged but for its imports on chainrule
and on PyTorch from the same weights, comparing losses, parameters and gradients. A MobileNet/SE-style network
(depthwise ``groups=`` convolutions, ``padding='same'``, Hardswish, squeeze-excitation, ``zero_init_residual``
through ``model.modules()``), trained with mixup on SGD(nesterov) with no weight decay on norms and biases and
OneCycleLR cycling the momentum, and its classifier's dropout in train and eval; a tiny ViT as timm writes it
(``torch.jit.Final``, ``@torch.jit.ignore``, ``torch.jit.is_scripting()``, ``torch.compiler.is_compiling()``,
DropPath, which drops whole samples, in-place LayerScale)."""

import numpy as np

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# A MobileNetV3-style network with squeeze-excitation, trained with mixup and OneCycleLR
# ----------------------------------------------------------------------------------------------


def mobilenet(m, p_drop=0.0):
    torch, nn, F = m.torch, m.nn, m.F

    class SqueezeExcite(nn.Module):
        def __init__(self, ch, rd=4):
            super().__init__()
            self.fc1 = nn.Conv2d(ch, rd, 1)
            self.fc2 = nn.Conv2d(rd, ch, 1)

        def forward(self, x):
            s = x.mean((2, 3), keepdim=True)
            s = self.fc2(F.relu(self.fc1(s), inplace=True))
            return x * F.hardsigmoid(s)

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, expand, stride):
            super().__init__()
            mid = cin * expand
            self.use_res = stride == 1 and cin == cout
            self.block = nn.Sequential(
                nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.Hardswish(inplace=True),
                nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid, bias=False),
                nn.BatchNorm2d(mid), nn.Hardswish(inplace=True),
                SqueezeExcite(mid),
                nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
            )

        def forward(self, x):
            out = self.block(x)
            return out + x if self.use_res else out

    class Net(nn.Module):
        def __init__(self, num_classes=4):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding="same", bias=False), nn.BatchNorm2d(4), nn.Hardswish())
            self.features = nn.Sequential(InvertedResidual(4, 4, 2, 1), InvertedResidual(4, 6, 2, 2))
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(p_drop), nn.Linear(6, num_classes))
            for mod in self.modules():
                if isinstance(mod, nn.Conv2d):
                    nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
                    if mod.bias is not None:
                        nn.init.zeros_(mod.bias)
                elif isinstance(mod, (nn.BatchNorm2d, nn.GroupNorm)):
                    nn.init.ones_(mod.weight)
                    nn.init.zeros_(mod.bias)

        def forward(self, x):
            return self.classifier(self.pool(self.features(self.stem(x))))

    return Net()


def mixup_training(m, weights, steps=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, mobilenet(m), weights)
    for mod in model.modules():  # torchvision's zero_init_residual: each residual block starts as identity
        if type(mod).__name__ == "InvertedResidual" and mod.use_res:
            nn.init.constant_(mod.block[-1].weight, 0)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    opt = optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                    lr=0.05, momentum=0.9, nesterov=True)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=0.2, total_steps=steps, pct_start=0.3, base_momentum=0.85,
                                          max_momentum=0.95, div_factor=4.0)
    rng = np.random.default_rng(1)
    images = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    labels = rng.integers(0, 4, 16)
    images[np.arange(16), 0, labels * 2, labels * 2] += 3.0  # a learnable signal
    perms = [rng.permutation(16) for _ in range(steps)]
    lams = rng.beta(0.4, 0.4, steps)
    X, y = torch.tensor(images), torch.tensor(labels)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    losses, lrs, moms = [], [], []
    for step in range(steps):
        model.train()
        lam = float(lams[step])
        index = torch.tensor(perms[step])
        mixed = lam * X + (1 - lam) * X[index, :]
        y_a, y_b = y, y[index]
        out = model(mixed)
        loss = lam * criterion(out, y_a) + (1 - lam) * criterion(out, y_b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append(sched.get_last_lr()[0])
        moms.append(opt.param_groups[1]["momentum"])
    model.eval()
    with torch.no_grad():
        logits = model(X)
    bn = model.features[1].block[1]
    return (losses, lrs, moms, logits, [p.detach() for p in model.parameters()], bn.running_mean, bn.running_var,
            bn.num_batches_tracked, model.features[0].block[-1].weight)


def test_mobilenet_se_mixup_onecycle():
    weights = weights_of(mobilenet)
    (losses, lrs, moms, logits, params, rmean, rvar, tracked, zero_init), _ = run_both(
        mixup_training, weights, rtol=1e-4, atol=1e-5)
    assert lrs[-1] < lrs[1] and moms[0] < moms[-1]  # lr up then down, the momentum the other way
    assert int(tracked) == 6 and np.isfinite(losses).all()
    assert np.abs(zero_init).max() < 0.05  # the zero-initialised residual scale moved only a little


def dropout_in_the_classifier(m):
    """The Dropout of ``mobilenet``: active in train(), the identity in eval(), kept masks scaled by 1/(1-p)."""
    torch = m.torch
    torch.manual_seed(0)
    model = mobilenet(m, p_drop=0.5)
    drop = model.classifier[1]
    x = torch.ones(4, 64)
    model.train()
    a = drop(x)
    model.eval()
    b = drop(x)
    return sorted(set(a.flatten().tolist())), bool((b == x).all()), drop.training, model.training


def test_mobilenet_dropout_train_and_eval():
    ours, theirs = run_both(dropout_in_the_classifier, compare=False)
    for values, identity, drop_training, training in [ours] + ([theirs] if theirs else []):
        assert values == [0.0, 2.0] and identity and not drop_training and not training


# ----------------------------------------------------------------------------------------------
# A tiny ViT as timm writes it: `Final` annotations, `@torch.jit.ignore`, `torch.jit.is_scripting()`,
# a fused-attention switch, DropPath and LayerScale, no weight decay on what no_weight_decay() names
# ----------------------------------------------------------------------------------------------


def vit(m, drop_path_rate=0.0):
    torch, nn, F = m.torch, m.nn, m.F
    Final = torch.jit.Final

    def drop_path(x, drop_prob: float = 0.0, training: bool = False, scale_by_keep: bool = True):
        if drop_prob == 0.0 or not training:
            return x
        keep_prob = 1 - drop_prob
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        random_tensor = x.new_empty(shape).bernoulli_(keep_prob)
        if keep_prob > 0.0 and scale_by_keep:
            random_tensor.div_(keep_prob)
        return x * random_tensor

    class DropPath(nn.Module):
        def __init__(self, drop_prob: float = 0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            return drop_path(x, self.drop_prob, self.training)

    class LayerScale(nn.Module):
        def __init__(self, dim: int, init_values: float = 1e-5, inplace: bool = False):
            super().__init__()
            self.inplace = inplace
            self.gamma = nn.Parameter(init_values * torch.ones(dim))

        def forward(self, x):
            return x.mul_(self.gamma) if self.inplace else x * self.gamma

    class Attention(nn.Module):
        fused_attn: Final[bool]

        def __init__(self, dim, num_heads=2, qkv_bias=False, fused_attn=True):
            super().__init__()
            self.num_heads = num_heads
            self.head_dim = dim // num_heads
            self.scale = self.head_dim ** -0.5
            self.fused_attn = fused_attn
            self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x):
            B, N, C = x.shape
            qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            if self.fused_attn and not torch.jit.is_scripting() and not torch.compiler.is_compiling():
                x = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
            else:
                q = q * self.scale
                attn = q @ k.transpose(-2, -1)
                attn = attn.softmax(dim=-1)
                x = attn @ v
            x = x.transpose(1, 2).reshape(B, N, C)
            return self.proj(x)

    class Block(nn.Module):
        def __init__(self, dim, fused_attn, dpr):
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=1e-6)
            self.attn = Attention(dim, fused_attn=fused_attn)
            self.ls1 = LayerScale(dim, init_values=0.1)
            self.drop_path1 = DropPath(dpr) if dpr > 0.0 else nn.Identity()
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(approximate="tanh"), nn.Linear(2 * dim, dim))
            self.ls2 = LayerScale(dim, init_values=0.1, inplace=True)
            self.drop_path2 = DropPath(dpr) if dpr > 0.0 else nn.Identity()

        def forward(self, x):
            x = x + self.drop_path1(self.ls1(self.attn(self.norm1(x))))
            x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
            return x

    class VisionTransformer(nn.Module):
        def __init__(self, img_size=8, patch_size=4, in_chans=1, num_classes=3, embed_dim=8, depth=2):
            super().__init__()
            self.patch_embed = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
            num_patches = (img_size // patch_size) ** 2
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.randn(1, num_patches + 1, embed_dim) * 0.02)
            dpr = [x.item() for x in torch.linspace(0, drop_path_rate, depth)]  # stochastic depth decay rule
            self.blocks = nn.Sequential(*[Block(embed_dim, fused_attn=i % 2 == 0, dpr=dpr[i]) for i in range(depth)])
            self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
            self.head = nn.Linear(embed_dim, num_classes)
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)

        @torch.jit.ignore
        def no_weight_decay(self):
            return {"pos_embed", "cls_token"}

        def forward_features(self, x):
            x = self.patch_embed(x).flatten(2).transpose(1, 2)  # BCHW -> BNC
            x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            x = x + self.pos_embed
            return self.norm(self.blocks(x))

        def forward(self, x):
            return self.head(self.forward_features(x)[:, 0])

    return VisionTransformer()


def vit_training(m, weights, steps=5):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, vit(m), weights)
    skip = model.no_weight_decay()
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.ndim <= 1 or name.endswith(".bias") or name in skip:
            no_decay.append(param)
        else:
            decay.append(param)
    optimizer = optim.AdamW([{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": 0.05}],
                            lr=5e-3)
    warmup = optim.lr_scheduler.LinearLR(optimizer, start_factor=0.2, total_iters=2)
    cosine = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps - 2, eta_min=1e-4)
    scheduler = optim.lr_scheduler.SequentialLR(optimizer, [warmup, cosine], milestones=[2])
    rng = np.random.default_rng(15)
    images = torch.tensor(rng.standard_normal((6, 1, 8, 8)).astype(np.float32))
    labels = torch.tensor(rng.integers(0, 3, 6))
    losses = []
    for step in range(steps):
        model.train()
        loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    grads = [p.grad for p in model.parameters()]
    model.eval()
    with torch.no_grad():
        fused = model.blocks[0].attn(model.blocks[0].norm1(torch.ones(1, 5, 8)))
        model.blocks[0].attn.fused_attn = False
        unfused = model.blocks[0].attn(model.blocks[0].norm1(torch.ones(1, 5, 8)))
    return losses, grads, [p.detach() for p in model.parameters()], fused, unfused, len(no_decay), len(decay)


def test_timm_style_vit_with_jit_markers():
    weights = weights_of(vit)
    (losses, grads, params, fused, unfused, n_no_decay, n_decay), _ = run_both(vit_training, weights, rtol=1e-4,
                                                                               atol=1e-5)
    assert losses[-1] < losses[0]
    np.testing.assert_allclose(fused, unfused, rtol=1e-5, atol=1e-6)  # the two attention paths agree
    assert n_decay == 10 and n_no_decay == 24  # weights of convs and linears; the rest, and what no_weight_decay names


def drop_path_statistics(m):
    """DropPath in train(): whole samples dropped, the kept ones scaled by 1/keep; eval(): the identity."""
    torch = m.torch
    torch.manual_seed(0)
    model = vit(m, drop_path_rate=0.5)
    dp = model.blocks[1].drop_path1
    x = torch.ones(400, 2, 3)
    model.train()
    y = dp(x)
    per_sample = y.flatten(1)
    same_within = bool((per_sample == per_sample[:, :1]).all())
    model.eval()
    dropped = (per_sample[:, 0] == 0).float().mean()
    return sorted(set(y.flatten().tolist())), same_within, bool((dp(x) == x).all()), dropped


def test_drop_path_drops_whole_samples():
    ours, theirs = run_both(drop_path_statistics, compare=False)
    for values, same_within, identity, dropped in [ours] + ([theirs] if theirs else []):
        assert values == [0.0, 2.0] and same_within and identity and 0.4 < float(dropped) < 0.6
