# ruff: noqa: B007, B023, E501, E702, E741, E731, F841, N806  (the programs are kept as their authors write them)
"""Image-classification training recipes (see tests/pytorch_programs.py), as torchvision's references and timm
write them, each run on chainrule and on PyTorch from the same seeds, comparing values, gradients, draws and
strides, and checked against NumPy by hand or invariants where PyTorch is not installed.

A small ResNet (BatchNorm, a depthwise separable conv with ``groups=C``, squeeze-and-excitation by
``F.adaptive_avg_pool2d`` and 1x1 convs, stochastic depth by ``x.new_empty(shape).bernoulli_(keep)``) trained by
SGD with nesterov in ``channels_last`` (``model.to(memory_format=...)``, ``.contiguous(memory_format=...)``):
every activation, parameter and ``.grad`` has PyTorch's strides, a size-1 dim's included, and the numbers are
the row-major run's; mixup and cutmix by ``distributions.Beta`` and ``randperm`` with soft targets and
``label_smoothing``; ``SequentialLR`` of ``LinearLR`` warmup and ``CosineAnnealingLR``; an EMA by
``swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn`` (buffers too) and ``get_ema_avg_fn``; gradient
accumulation with ``loss / accum`` and ``clip_grad_norm_``; ``fuse_conv_bn_eval``/``fuse_linear_bn_eval``;
flips, random erasing and crops written with tensor ops; and the layouts of clones, flips, ``*_like``
factories, dropout masks and draws of channels_last tensors, and of each layer of a channels_last network."""

import math

import numpy as np

from .pytorch_programs import OURS, run_both


def resnet_cl(m, cl=True, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)

    class SE(nn.Module):
        def __init__(self, c, r=4):
            super().__init__()
            self.fc1 = nn.Conv2d(c, c // r, 1)
            self.fc2 = nn.Conv2d(c // r, c, 1)
        def forward(self, x):
            s = F.adaptive_avg_pool2d(x, 1)
            s = torch.sigmoid(self.fc2(F.relu(self.fc1(s), inplace=True)))
            return x * s

    def drop_path(x, p, training):
        if p == 0. or not training:
            return x
        keep = 1 - p
        shape = (x.shape[0],) + (1,) * (x.ndim - 1)
        mask = x.new_empty(shape).bernoulli_(keep)
        if keep > 0:
            mask.div_(keep)
        return x * mask

    class Block(nn.Module):
        def __init__(self, cin, cout, stride, dp):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.dw = nn.Conv2d(cout, cout, 3, 1, 1, groups=cout, bias=False)
            self.pw = nn.Conv2d(cout, cout, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.se = SE(cout)
            self.dp = dp
            self.short = nn.Sequential()
            if stride != 1 or cin != cout:
                self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        def forward(self, x):
            out = F.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.pw(self.dw(out)))
            out = self.se(out)
            out = drop_path(out, self.dp, self.training) + self.short(x)
            return F.relu(out)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
            self.layer1 = Block(8, 8, 1, 0.1)
            self.layer2 = Block(8, 16, 2, 0.2)
            self.fc = nn.Linear(16, 5)
        def forward(self, x):
            x = self.stem(x)
            x = self.layer1(x)
            x = self.layer2(x)
            x = F.adaptive_avg_pool2d(x, (1, 1))
            x = torch.flatten(x, 1)
            return self.fc(x)

    model = Net()
    if cl:
        model = model.to(memory_format=torch.channels_last)
    strides_w = {n: tuple(p.stride()) for n, p in model.named_parameters() if p.ndim == 4}
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x = torch.randn(6, 3, 12, 12)
    if cl:
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 5, (6,))
    acts = {}
    def hook(name):
        def f(mod, inp, out):
            acts[name] = (tuple(out.shape), tuple(out.stride()), out.is_contiguous(memory_format=torch.channels_last))
        return f
    for n, mod in model.named_modules():
        if isinstance(mod, (nn.Conv2d, nn.BatchNorm2d)):
            mod.register_forward_hook(hook(n))
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)
        loss = F.cross_entropy(out, y, label_smoothing=0.1)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    gstrides = {n: tuple(p.grad.stride()) for n, p in model.named_parameters() if p.ndim == 4}
    pstrides = {n: tuple(p.stride()) for n, p in model.named_parameters() if p.ndim == 4}
    grads = {n: p.grad for n, p in model.named_parameters()}
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    bufs = {n: b.clone() for n, b in model.named_buffers()}
    model.eval()
    with torch.no_grad():
        ev = model(x)
    return dict(losses=losses, strides_w=strides_w, gstrides=gstrides, pstrides=pstrides, acts=acts,
                grads=grads, params=params, bufs=bufs, ev=ev, evs=tuple(ev.stride()))


def small_net(m, cl=False):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    if cl:
        model = model.to(memory_format=torch.channels_last)
    return model


def mixup_cutmix(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = small_net(m)
    torch.manual_seed(1)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    beta = torch.distributions.Beta(torch.tensor([0.4]), torch.tensor([0.4]))
    x = torch.randn(8, 3, 10, 10)
    y = torch.randint(0, 4, (8,))
    out = {}
    lams, perms, boxes = [], [], []
    for step in range(4):
        xb, yb = x.clone(), F.one_hot(y, 4).float()
        idx = torch.randperm(xb.size(0))
        lam = beta.sample().item()
        if step % 2 == 0:
            xb = lam * xb + (1 - lam) * xb[idx]
        else:
            H, W = xb.shape[-2:]
            cut = math.sqrt(1. - lam)
            ch, cw = int(H * cut), int(W * cut)
            cy, cx = torch.randint(H, (1,)).item(), torch.randint(W, (1,)).item()
            y1, y2 = max(cy - ch // 2, 0), min(cy + ch // 2, H)
            x1, x2 = max(cx - cw // 2, 0), min(cx + cw // 2, W)
            xb[:, :, y1:y2, x1:x2] = xb[idx, :, y1:y2, x1:x2]
            lam = 1 - (y2 - y1) * (x2 - x1) / (H * W)
            boxes.append((y1, y2, x1, x2))
        yb = lam * yb + (1 - lam) * yb[idx]
        lams.append(lam)
        perms.append(idx)
        logits = model(xb)
        loss = torch.sum(-yb * F.log_softmax(logits, dim=-1), dim=-1).mean()
        loss2 = F.cross_entropy(logits, yb, label_smoothing=0.1)
        loss3 = lam * F.cross_entropy(logits, y, label_smoothing=0.1) + (1 - lam) * F.cross_entropy(logits, y[idx], label_smoothing=0.1)
        opt.zero_grad()
        (loss + loss2 + loss3).backward()
        opt.step()
        out[f"loss{step}"] = torch.stack([loss, loss2, loss3]).detach()
    out["lams"] = lams
    out["perms"] = torch.stack(perms)
    out["boxes"] = boxes
    out["params"] = [p.detach().clone() for p in model.parameters()]
    out["bn"] = [b.clone() for b in model.buffers()]
    out["beta_rs"] = beta.rsample((3,))
    conc = torch.tensor([0.7], requires_grad=True)
    d = torch.distributions.Beta(conc, torch.tensor([1.3]))
    s = d.rsample((5,))
    s.sum().backward()
    out["beta_grad"] = conc.grad
    out["lp"] = d.log_prob(torch.tensor([0.3]))
    return out


def schedules(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = small_net(m)
    opt = optim.SGD(model.parameters(), lr=0.4, momentum=0.9, nesterov=True, weight_decay=5e-5)
    warm = optim.lr_scheduler.LinearLR(opt, start_factor=0.01, total_iters=3)
    cos = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=7, eta_min=1e-4)
    sched = optim.lr_scheduler.SequentialLR(opt, schedulers=[warm, cos], milestones=[3])
    lrs = []
    for i in range(12):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    last = sched.get_last_lr()
    sd = sched.state_dict()
    return dict(lrs=lrs, last=last, keys=sorted(sd.keys()), ms=sd["_milestones"], idx=sd["last_epoch"])


def ema_accum(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_swa = optim.swa_utils
    model = small_net(m)
    ema = from_swa.AveragedModel(model, multi_avg_fn=from_swa.get_ema_multi_avg_fn(0.9), use_buffers=True)
    ema2 = from_swa.AveragedModel(model, avg_fn=from_swa.get_ema_avg_fn(0.8))
    torch.manual_seed(2)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    accum = 3
    norms, clipped, snaps = [], [], []
    x = torch.randn(12, 3, 8, 8)
    y = torch.randint(0, 4, (12,))
    for step in range(2):
        opt.zero_grad(set_to_none=True)
        for k in range(accum):
            xb, yb = x[k * 4:(k + 1) * 4], y[k * 4:(k + 1) * 4]
            loss = F.cross_entropy(model(xb), yb, label_smoothing=0.1) / accum
            loss.backward()
        n = nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5)
        norms.append(n)
        clipped.append(torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters())))
        opt.step()
        snaps.append([p.detach().clone() for p in model.parameters()])
        ema.update_parameters(model)
        ema2.update_parameters(model)
    ema.eval()
    with torch.no_grad():
        out_ema = ema(x)
    return dict(norms=torch.stack(norms), ema=[p.detach().clone() for p in ema.parameters()],
                ema_bufs=[b.clone() for b in ema.buffers()], ema2=[p.detach().clone() for p in ema2.parameters()],
                n_avg=ema.n_averaged, out_ema=out_ema, keys=list(ema.state_dict().keys()), snaps=snaps,
                clipped=torch.stack(clipped))


def fuse_eval(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 6, 3, padding=1)
    bn = nn.BatchNorm2d(6)
    conv_nb = nn.Conv2d(3, 6, 3, padding=1, bias=False)
    x = torch.randn(4, 3, 6, 6)
    bn.train()
    bn(conv(x)); bn(conv(x * 2 + 1))
    conv.eval(); bn.eval()
    fused = nn.utils.fusion.fuse_conv_bn_eval(conv, bn)
    fused2 = nn.utils.fusion.fuse_conv_bn_eval(conv_nb.eval(), bn)
    w, b = nn.utils.fusion.fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    lin = nn.Linear(5, 6).eval()
    bn1 = nn.BatchNorm1d(6).eval()
    bn1.running_mean.uniform_(); bn1.running_var.uniform_(0.5, 2)
    flin = nn.utils.fusion.fuse_linear_bn_eval(lin, bn1)
    with torch.no_grad():
        ref = bn(conv(x)); got = fused(x); ref2 = bn(conv_nb(x)); got2 = fused2(x)
        l = flin(torch.ones(2, 5)); lr = bn1(lin(torch.ones(2, 5)))
    return dict(ref=ref, got=got, ref2=ref2, got2=got2, w=w, b=b, types=[type(fused.weight).__name__, type(w).__name__, fused.weight.requires_grad, fused2.bias is None],
                l=l, lr=lr, fw=fused.weight, fb=fused.bias)


def augment(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(3)
    img = torch.rand(4, 3, 12, 10)
    out = {}
    flips = torch.rand(4) < 0.5
    x = img.clone()
    x[flips] = torch.flip(x[flips], dims=[-1])
    out["hflip"] = x
    out["vflip"] = img.flip(-2)
    out["flipcl"] = img.contiguous(memory_format=torch.channels_last).flip(3).stride()

    def random_erase(im, p=0.5, scale=(0.02, 0.33), ratio=(0.3, 3.3), value=0.):
        if torch.rand(1).item() > p:
            return im
        c, h, w = im.shape
        area = h * w
        log_ratio = torch.log(torch.tensor(ratio))
        for _ in range(10):
            erase_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
            aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
            eh = int(round(math.sqrt(erase_area * aspect)))
            ew = int(round(math.sqrt(erase_area / aspect)))
            if not (eh < h and ew < w):
                continue
            v = torch.empty([c, eh, ew], dtype=torch.float32).normal_() if value is None else torch.tensor(value)
            i = torch.randint(0, h - eh + 1, size=(1,)).item()
            j = torch.randint(0, w - ew + 1, size=(1,)).item()
            im = im.clone()
            im[..., i:i + eh, j:j + ew] = v
            return im
        return im

    out["erased"] = torch.stack([random_erase(im, p=0.9, value=None if k % 2 else 0.) for k, im in enumerate(img)])
    # random resized crop offsets drawn with torch ops
    i = torch.randint(0, 4, (1,)).item()
    crop = img[:, :, i:i + 8, 1:9]
    out["crop"] = F.interpolate(crop, size=(12, 12), mode="bilinear", align_corners=False, antialias=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    out["norm"] = (img - mean) / std
    xc = img.contiguous(memory_format=torch.channels_last)
    norm_cl = (xc - mean) / std
    out["norm_cl_stride"] = norm_cl.stride()
    out["clone_stride"] = xc.clone().stride()
    out["clone_t"] = img.transpose(2, 3).clone().stride()
    out["contig"] = xc.contiguous().stride()
    out["flipped_cl_contig"] = xc.flip(-1).is_contiguous(memory_format=torch.channels_last)
    sl = xc[:, :, 2:, :]
    out["slice_clone"] = sl.clone().stride()
    out["slice_cl"] = sl.is_contiguous(memory_format=torch.channels_last)
    ch = xc[:, 1:]
    out["ch_clone"] = ch.clone().stride()
    out["empty_like"] = torch.empty_like(xc).stride()
    out["rand_like"] = torch.rand_like(xc)
    out["zeros_like_cl"] = torch.zeros_like(img, memory_format=torch.channels_last).stride()
    return out


def cl_random(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(5)
    x = torch.randn(3, 4, 5, 6).contiguous(memory_format=torch.channels_last)
    out = {}
    out["dropout"] = F.dropout(x, 0.3, training=True)
    out["dropout2d"] = F.dropout2d(x, 0.5, training=True)
    out["noise"] = x + 0.1 * torch.randn_like(x)
    out["bern"] = torch.bernoulli(torch.full_like(x, 0.5))
    m2 = x.new_empty((3, 1, 1, 1)).bernoulli_(0.7)
    out["dp"] = x * m2 / 0.7
    out["dp_stride"] = (x * m2).stride()
    xs = x[:, :, 1:, :]
    out["drop_slice"] = F.dropout(xs, 0.2)
    out["strides"] = [v.stride() for v in (out["dropout"], out["dropout2d"], out["noise"], out["bern"], out["drop_slice"])]
    out["uniform_cl"] = torch.empty(2, 3, 4, 5, memory_format=torch.channels_last).uniform_()
    out["normal_cl"] = torch.empty(2, 3, 4, 5, memory_format=torch.channels_last).normal_()
    out["uniform_cl_s"] = torch.empty(2, 3, 4, 5, memory_format=torch.channels_last).stride()
    return out


def cl_layers(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(6)
    x = torch.randn(2, 4, 7, 7).contiguous(memory_format=torch.channels_last).requires_grad_()
    conv = nn.Conv2d(4, 6, 3, stride=2, padding=1).to(memory_format=torch.channels_last)
    convt = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=0).to(memory_format=torch.channels_last)
    bn = nn.BatchNorm2d(6)
    h = conv(x)
    s = {"conv": h.stride()}
    h = bn(h); s["bn"] = h.stride()
    h = F.relu(h); s["relu"] = h.stride()
    h2 = F.max_pool2d(h, 2, ceil_mode=True); s["mp"] = h2.stride()
    h3 = F.avg_pool2d(h, 3, 1, 1); s["ap"] = h3.stride()
    h4 = F.adaptive_avg_pool2d(h, 1); s["aap"] = h4.is_contiguous(memory_format=torch.channels_last)
    h5 = F.adaptive_avg_pool2d(h, (2, 3)); s["aap23"] = h5.stride()
    y = convt(h); s["convt"] = y.stride()
    z = torch.cat([y, x], 1); s["cat"] = z.stride()
    g = nn.GroupNorm(2, 8)(z); s["gn"] = g.stride()
    u = F.interpolate(g, scale_factor=2, mode="nearest"); s["interp"] = u.stride()
    loss = u.pow(2).mean() + h4.sum() + h2.mean() + h3.mean() + h5.mean()
    loss.backward()
    s["xgrad"] = x.grad.stride()
    s["wgrad"] = conv.weight.grad.stride()
    s["twgrad"] = convt.weight.grad.stride()
    s["flat"] = torch.flatten(h4, 1).stride()
    s["view_ok"] = h4.view(2, -1).shape
    s["se"] = (h * torch.sigmoid(h4)).stride()
    return dict(s=s, loss=loss, xg=x.grad, wg=conv.weight.grad, tg=convt.weight.grad)


def cl_misc(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(11)
    cl = torch.channels_last
    x = torch.randn(2, 4, 6, 6).contiguous(memory_format=cl).requires_grad_()
    r = torch.randn(2, 4, 6, 6)
    s = {}
    s["mean_keep"] = x.mean((2, 3), keepdim=True).stride()
    s["add_mixed2"] = (r + x).stride()
    s["mul_scalar"] = (x * 2).stride()
    s["clamp"] = x.clamp(min=0).stride()
    s["sig"] = torch.sigmoid(x).stride()
    s["silu"] = F.silu(x).stride()
    s["gelu"] = F.gelu(x).stride()
    s["hsw"] = F.hardswish(x).stride()
    s["relu6"] = F.relu6(x).stride()
    s["pad_reflect"] = F.pad(x, (1, 1, 1, 1), mode="reflect").stride()
    s["pad_const"] = F.pad(x, (1, 1, 1, 1)).stride()
    s["bn_eval"] = F.batch_norm(x, torch.zeros(4), torch.ones(4), training=False).stride()
    s["ln_perm"] = F.layer_norm(x.permute(0, 2, 3, 1), (4,)).permute(0, 3, 1, 2).stride()
    pooled = F.adaptive_avg_pool2d(x, 1)
    s["view"] = pooled.view(2, -1).stride()
    s["reshape"] = x.reshape(2, -1).stride()
    s["flat"] = x.flatten(1)[0, :5]
    s["mp_idx"] = F.max_pool2d(x, 2, return_indices=True)[1].stride()
    s["up"] = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False).stride()
    s["softmax_c"] = F.softmax(x, 1).stride()
    s["cat0"] = torch.cat([x, x], 0).stride()
    s["stack"] = torch.stack([x, x]).stride()
    s["type_as"] = x.double().stride()
    s["half"] = x.half().stride()
    s["detach_clone"] = x.detach().clone().stride()
    s["new_zeros"] = x.new_zeros(x.shape).stride()
    s["chunk"] = [t.stride() for t in x.chunk(2, 1)]
    s["chunk_contig"] = [t.contiguous().stride() for t in x.chunk(2, 1)]
    loss = (F.silu(x) * r).sum() + F.pad(x, (1, 1, 1, 1), mode="reflect").pow(2).sum()
    loss.backward()
    s["xgrad"] = x.grad.stride()
    return dict(s=s, g=x.grad, loss=loss)


def cl_copy(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    import copy  # noqa: PLC0415
    model = small_net(m, cl=True)
    ema = optim.swa_utils.AveragedModel(model, multi_avg_fn=optim.swa_utils.get_ema_multi_avg_fn(0.9))
    dc = copy.deepcopy(model)
    model.eval()
    fused = nn.utils.fusion.fuse_conv_bn_eval(model[0], model[1])
    sd = model.state_dict()
    fresh = small_net(m)
    fresh.load_state_dict(sd)
    return dict(ema=[p.stride() for p in ema.parameters()], dc=[p.stride() for p in dc.parameters()],
                fused=fused.weight.stride(), sd=sd["0.weight"].stride(), loaded=fresh[0].weight.stride(),
                dw=model[3].weight.stride())


# ----------------------------------------------------------------------------------------------
# the tests
# ----------------------------------------------------------------------------------------------


def _cl_strides(shape):
    n, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def test_resnet_channels_last():
    ours, _ = run_both(resnet_cl, rtol=1e-4, atol=1e-5)
    assert all(flag for _, _, flag in ours["acts"].values())  # every conv and batch norm output channels_last
    for name, (shape, strides, _) in ours["acts"].items():
        assert strides == _cl_strides(shape), name
    assert ours["gstrides"] == ours["pstrides"] == ours["strides_w"]
    assert ours["strides_w"]["layer1.pw.weight"] == (8, 1, 8, 8)  # a 1x1 kernel's size-1 dims: PyTorch's steps
    assert ours["strides_w"]["layer1.dw.weight"] == (9, 1, 3, 1)
    assert ours["evs"] == (5, 1)
    assert all(np.isfinite(ours["losses"]))


def test_resnet_channels_last_changes_no_numbers():
    cl, row_major = resnet_cl(OURS, cl=True), resnet_cl(OURS, cl=False)
    np.testing.assert_allclose(cl["losses"], row_major["losses"], rtol=1e-5)
    for name in cl["params"]:
        np.testing.assert_allclose(cl["params"][name].numpy(), row_major["params"][name].numpy(), rtol=1e-4,
                                   atol=1e-6, err_msg=name)
    assert not any(flag for _, _, flag in row_major["acts"].values())


def test_mixup_cutmix():
    ours, _ = run_both(mixup_cutmix, rtol=1e-4, atol=1e-5)
    assert all(0 <= lam <= 1 for lam in ours["lams"])
    assert all(sorted(p) == list(range(8)) for p in ours["perms"].tolist())
    for y1, y2, x1, x2 in ours["boxes"]:
        assert 0 <= y1 <= y2 <= 10 and 0 <= x1 <= x2 <= 10
    assert ours["lams"][1] == 1 - (ours["boxes"][0][1] - ours["boxes"][0][0]) * (ours["boxes"][0][3] - ours["boxes"][0][2]) / 100
    a, b, v = 0.7, 1.3, 0.3
    by_hand = (a - 1) * math.log(v) + (b - 1) * math.log(1 - v) + math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
    np.testing.assert_allclose(ours["lp"], [by_hand], rtol=1e-5)
    assert np.isfinite(ours["beta_grad"]).all() and ((ours["beta_rs"] > 0) & (ours["beta_rs"] < 1)).all()


def test_sequential_warmup_cosine():
    ours, _ = run_both(schedules, rtol=1e-6)
    lrs = ours["lrs"]
    np.testing.assert_allclose(lrs[:3], [0.4 * (0.01 + 0.99 * k / 3) for k in (1, 2)] + [0.4], rtol=1e-12)
    cosine = [1e-4 + (0.4 - 1e-4) * (1 + math.cos(math.pi * k / 7)) / 2 for k in range(1, 10)]
    np.testing.assert_allclose(lrs[3:], cosine, rtol=1e-9)
    assert ours["ms"] == [3] and ours["idx"] == 12


def test_ema_and_accumulation():
    ours, _ = run_both(ema_accum, rtol=1e-4, atol=1e-6)
    assert int(ours["n_avg"]) == 2
    assert (ours["clipped"] <= 0.5 + 1e-5).all()
    first, second = ours["snaps"]
    for ema, a, b in zip(ours["ema"], first, second):
        np.testing.assert_allclose(ema, 0.9 * a + 0.1 * b, rtol=1e-5, atol=1e-7)
    for ema, a, b in zip(ours["ema2"], first, second):
        np.testing.assert_allclose(ema, 0.8 * a + 0.2 * b, rtol=1e-5, atol=1e-7)
    assert ours["keys"][0] == "n_averaged"


def test_fuse_conv_bn_eval():
    ours, _ = run_both(fuse_eval, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["got"], ours["ref"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["got2"], ours["ref2"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["l"], ours["lr"], rtol=1e-5, atol=1e-6)
    assert ours["types"] == ["Parameter", "Parameter", True, False]


def test_augmentations_and_layouts():
    ours, _ = run_both(augment)
    assert ours["flipcl"] == ours["clone_stride"] == ours["norm_cl_stride"] == (360, 1, 30, 3)
    assert ours["empty_like"] == ours["zeros_like_cl"] == (360, 1, 30, 3)
    assert ours["clone_t"] == (360, 120, 1, 10) and ours["contig"] == (360, 120, 10, 1)
    assert ours["ch_clone"] == (240, 1, 20, 2) and ours["flipped_cl_contig"] and not ours["slice_cl"]
    img = _drawn(3, 4, 3, 12, 10)
    np.testing.assert_array_equal(ours["vflip"], np.flip(img, 2))
    for k in range(4):  # each image is its own or its mirror
        assert np.array_equal(ours["hflip"][k], img[k]) or np.array_equal(ours["hflip"][k], np.flip(img[k], 2))
    for k, erased in enumerate(ours["erased"]):  # what changed lies in one box, the same for every channel
        rows, cols = np.nonzero((erased != img[k]).any(0))
        if rows.size:
            box = erased[:, rows.min():rows.max() + 1, cols.min():cols.max() + 1]
            assert k % 2 or (box == 0).all()


def _drawn(seed, *shape):
    OURS.torch.manual_seed(seed)
    return OURS.torch.rand(*shape).numpy() if seed == 3 else OURS.torch.randn(*shape).numpy()


def test_channels_last_draws():
    ours, _ = run_both(cl_random)
    assert ours["strides"] == [(120, 1, 24, 4)] * 3 + [(120, 30, 6, 1), (96, 1, 24, 4)]
    assert ours["uniform_cl_s"] == (60, 1, 15, 3)
    x = _drawn(5, 3, 4, 5, 6)
    kept = ours["dropout"] != 0
    np.testing.assert_allclose(ours["dropout"][kept], x[kept] / 0.7, rtol=1e-6)
    u = ours["uniform_cl"]
    assert ((u >= 0) & (u < 1)).all()


def test_channels_last_layers():
    ours, _ = run_both(cl_layers, rtol=1e-4, atol=1e-6)
    s = ours["s"]
    assert s["conv"] == s["bn"] == s["relu"] == s["ap"] == s["se"] == (96, 1, 24, 6)
    assert s["mp"] == (24, 1, 12, 6) and s["aap"] and s["aap23"] == (36, 1, 18, 6)
    assert s["convt"] == (196, 1, 28, 4) and s["cat"] == s["gn"] == (392, 1, 56, 8)
    assert s["xgrad"] == (196, 1, 28, 4) and s["wgrad"] == s["twgrad"] == (36, 1, 12, 4)


def test_channels_last_elementwise_pads_and_views():
    ours, _ = run_both(cl_misc, rtol=1e-5, atol=1e-6)
    s = ours["s"]
    for key in ("add_mixed2", "softmax_c", "new_zeros"):
        assert s[key] == (144, 36, 6, 1), key  # (row-major, as PyTorch's)
    for key in ("mul_scalar", "clamp", "sig", "silu", "gelu", "hsw", "relu6", "bn_eval", "ln_perm", "type_as",
                "half", "detach_clone", "xgrad"):
        assert s[key] == (144, 1, 24, 4), key
    assert s["pad_reflect"] == s["pad_const"] == (256, 1, 32, 4) and s["up"] == (576, 1, 48, 4)
    assert s["view"] == (4, 1) and s["reshape"] == (144, 1) and s["mean_keep"] == (4, 1, 1, 1)
    assert s["cat0"] == (144, 1, 24, 4) and s["stack"] == (288, 144, 1, 24, 4)
    assert s["chunk"] == [(144, 1, 24, 4)] * 2 and s["chunk_contig"] == [(72, 36, 6, 1)] * 2


def test_channels_last_copies_keep_their_strides():
    ours, _ = run_both(cl_copy)
    assert ours["ema"] == ours["dc"] == [(27, 1, 9, 3), (1,), (1,), (9, 1, 3, 1), (1,), (1,), (8, 1), (1,)]
    assert ours["dw"] == (9, 1, 3, 1) and ours["fused"] == ours["sd"] == (27, 1, 9, 3) and ours["loaded"] == (27, 9, 3, 1)
