# ruff: noqa: E731  (the programs are kept as their authors wrote them)
"""Object-detection and audio programs written with plain tensor idioms, as the model repositories write them without
torchvision / torchaudio, run as tests/probe10_detect_common.py says. YOLOv5's ComputeLoss (CIoU, neighbour cells,
``split``, detached IoU objectness), ModelEMA, its training loop (``add_param_group``, warmup by ``np.interp``,
LambdaLR, accumulation, GradScaler) and fuse_conv_and_bn (``delattr``, forward replaced on the instance,
``nn.utils.fusion``)."""

import math

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# YOLOv5's ComputeLoss (CIoU, neighbour-cell targets, objectness from detached IoU) and ModelEMA
# ----------------------------------------------------------------------------------------------


def bbox_iou(m, box1, box2, xywh=True, CIoU=False, eps=1e-7):
    torch = m.torch
    if xywh:  # transform from xywh to xyxy
        (x1, y1, w1, h1), (x2, y2, w2, h2) = box1.chunk(4, -1), box2.chunk(4, -1)
        w1_, h1_, w2_, h2_ = w1 / 2, h1 / 2, w2 / 2, h2 / 2
        b1_x1, b1_x2, b1_y1, b1_y2 = x1 - w1_, x1 + w1_, y1 - h1_, y1 + h1_
        b2_x1, b2_x2, b2_y1, b2_y2 = x2 - w2_, x2 + w2_, y2 - h2_, y2 + h2_
    else:
        b1_x1, b1_y1, b1_x2, b1_y2 = box1.chunk(4, -1)
        b2_x1, b2_y1, b2_x2, b2_y2 = box2.chunk(4, -1)
        w1, h1 = b1_x2 - b1_x1, (b1_y2 - b1_y1).clamp(eps)
        w2, h2 = b2_x2 - b2_x1, (b2_y2 - b2_y1).clamp(eps)
    inter = (b1_x2.minimum(b2_x2) - b1_x1.maximum(b2_x1)).clamp(0) * \
            (b1_y2.minimum(b2_y2) - b1_y1.maximum(b2_y1)).clamp(0)
    union = w1 * h1 + w2 * h2 - inter + eps
    iou = inter / union
    if CIoU:
        cw = b1_x2.maximum(b2_x2) - b1_x1.minimum(b2_x1)  # convex (smallest enclosing box) width
        ch = b1_y2.maximum(b2_y2) - b1_y1.minimum(b2_y1)  # convex height
        c2 = cw ** 2 + ch ** 2 + eps  # convex diagonal squared
        rho2 = ((b2_x1 + b2_x2 - b1_x1 - b1_x2) ** 2 + (b2_y1 + b2_y2 - b1_y1 - b1_y2) ** 2) / 4  # center dist ** 2
        v = (4 / math.pi ** 2) * (torch.atan(w2 / h2) - torch.atan(w1 / h1)).pow(2)
        with torch.no_grad():
            alpha = v / (v - iou + (1 + eps))
        return iou - (rho2 / c2 + v * alpha)  # CIoU
    return iou


def yolov5_model(m):
    nn = m.nn

    class Detect(nn.Module):
        def __init__(self, nc=2, anchors=((10, 13, 16, 30, 33, 23), (30, 61, 62, 45, 59, 119)), ch=(4, 6)):
            super().__init__()
            self.nc = nc
            self.no = nc + 5
            self.nl = len(anchors)
            self.na = len(anchors[0]) // 2
            self.register_buffer("anchors", m.torch.tensor(anchors).float().view(self.nl, -1, 2))
            self.stride = m.torch.tensor([8.0, 16.0])
            self.anchors /= self.stride.view(-1, 1, 1)
            self.m = nn.ModuleList(nn.Conv2d(x, self.no * self.na, 1) for x in ch)

        def forward(self, x):
            for i in range(self.nl):
                x[i] = self.m[i](x[i])
                bs, _, ny, nx = x[i].shape
                x[i] = x[i].view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            return x

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.b1 = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.SiLU(),
                                    nn.Conv2d(4, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.SiLU(),
                                    nn.Conv2d(4, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.SiLU())
            self.b2 = nn.Sequential(nn.Conv2d(4, 6, 3, 2, 1, bias=False), nn.BatchNorm2d(6), nn.SiLU())
            self.detect = Detect()

        def forward(self, x):
            p3 = self.b1(x)
            p4 = self.b2(p3)
            return self.detect([p3, p4])

    return Model()


def smooth_BCE(eps=0.1):
    return 1.0 - 0.5 * eps, 0.5 * eps


def yolov5_program(m, weights, steps=3, float_check="dtype"):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = yolov5_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    from copy import deepcopy

    class ModelEMA:
        def __init__(self, model, decay=0.9999, tau=2000, updates=0):
            self.ema = deepcopy(model).eval()
            self.updates = updates
            self.decay = lambda x: decay * (1 - math.exp(-x / tau))
            for p in self.ema.parameters():
                p.requires_grad_(False)

        def update(self, model):
            self.updates += 1
            d = self.decay(self.updates)
            msd = model.state_dict()
            for k, v in self.ema.state_dict().items():
                if (v.dtype.is_floating_point if float_check == "dtype" else v.is_floating_point()):
                    v *= d
                    v += (1 - d) * msd[k].detach()

    class ComputeLoss:
        def __init__(self, model, autobalance=False):
            h = {"cls_pw": 1.0, "obj_pw": 1.0, "box": 0.05, "cls": 0.5, "obj": 1.0, "anchor_t": 4.0}
            self.BCEcls = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([h["cls_pw"]]))
            self.BCEobj = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([h["obj_pw"]]))
            self.cp, self.cn = smooth_BCE(eps=0.1)
            det = model.detect
            self.balance = [4.0, 1.0]
            self.gr, self.hyp = 1.0, h
            self.na, self.nc, self.nl, self.anchors = det.na, det.nc, det.nl, det.anchors
            self.sort_obj_iou = True

        def __call__(self, p, targets):
            lcls = torch.zeros(1)
            lbox = torch.zeros(1)
            lobj = torch.zeros(1)
            tcls, tbox, indices, anchors = self.build_targets(p, targets)
            for i, pi in enumerate(p):
                b, a, gj, gi = indices[i]
                tobj = torch.zeros(pi.shape[:4], dtype=pi.dtype)
                n = b.shape[0]
                if n:
                    pxy, pwh, _, pcls = pi[b, a, gj, gi].split((2, 2, 1, self.nc), 1)
                    pxy = pxy.sigmoid() * 2 - 0.5
                    pwh = (pwh.sigmoid() * 2) ** 2 * anchors[i]
                    pbox = torch.cat((pxy, pwh), 1)
                    iou = bbox_iou(m, pbox, tbox[i], CIoU=True).squeeze()
                    lbox += (1.0 - iou).mean()
                    iou = iou.detach().clamp(0).type(tobj.dtype)
                    if self.sort_obj_iou:
                        j = iou.argsort()
                        b, a, gj, gi, iou = b[j], a[j], gj[j], gi[j], iou[j]
                    if self.gr < 1:
                        iou = (1.0 - self.gr) + self.gr * iou
                    tobj[b, a, gj, gi] = iou
                    if self.nc > 1:
                        t = torch.full_like(pcls, self.cn)
                        t[range(n), tcls[i]] = self.cp
                        lcls += self.BCEcls(pcls, t)
                obji = self.BCEobj(pi[..., 4], tobj)
                lobj += obji * self.balance[i]
            lbox *= self.hyp["box"]
            lobj *= self.hyp["obj"]
            lcls *= self.hyp["cls"]
            bs = tobj.shape[0]
            return (lbox + lobj + lcls) * bs, torch.cat((lbox, lobj, lcls)).detach()

        def build_targets(self, p, targets):
            na, nt = self.na, targets.shape[0]
            tcls, tbox, indices, anch = [], [], [], []
            gain = torch.ones(7)
            ai = torch.arange(na).float().view(na, 1).repeat(1, nt)
            targets = torch.cat((targets.repeat(na, 1, 1), ai[..., None]), 2)
            g = 0.5
            off = torch.tensor([[0, 0], [1, 0], [0, 1], [-1, 0], [0, -1]]).float() * g
            for i in range(self.nl):
                anchors, shape = self.anchors[i], p[i].shape
                gain[2:6] = torch.tensor(shape)[[3, 2, 3, 2]]
                t = targets * gain
                if nt:
                    r = t[..., 4:6] / anchors[:, None]
                    j = torch.max(r, 1 / r).max(2)[0] < self.hyp["anchor_t"]
                    t = t[j]
                    gxy = t[:, 2:4]
                    gxi = gain[[2, 3]] - gxy
                    j, k = ((gxy % 1 < g) & (gxy > 1)).T
                    l, m_ = ((gxi % 1 < g) & (gxi > 1)).T
                    j = torch.stack((torch.ones_like(j), j, k, l, m_))
                    t = t.repeat((5, 1, 1))[j]
                    offsets = (torch.zeros_like(gxy)[None] + off[:, None])[j]
                else:
                    t = targets[0]
                    offsets = 0
                bc, gxy, gwh, a = t.chunk(4, 1)
                a, (b, c) = a.long().view(-1), bc.long().T
                gij = (gxy - offsets).long()
                gi, gj = gij.T
                indices.append((b, a, gj.clamp_(0, shape[2] - 1), gi.clamp_(0, shape[3] - 1)))
                tbox.append(torch.cat((gxy - gij, gwh), 1))
                anch.append(anchors[a])
                tcls.append(c)
            return tcls, tbox, indices, anch

    rng = np.random.default_rng(16)
    imgs = torch.tensor(rng.standard_normal((2, 3, 32, 32)), dtype=torch.float32)
    # image, class, x, y, w, h (normalised)
    targets = torch.tensor([[0, 0, 0.30, 0.35, 0.30, 0.40], [0, 1, 0.74, 0.22, 0.50, 0.30],
                            [1, 1, 0.52, 0.61, 0.90, 0.80], [1, 0, 0.12, 0.88, 0.16, 0.20]])
    compute_loss = ComputeLoss(model)
    ema = ModelEMA(model, decay=0.9, tau=1)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.937, nesterov=True)
    losses, items = [], []
    model.train()
    for _ in range(steps):
        pred = model(imgs)
        loss, loss_items = compute_loss(pred, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        losses.append(loss.item())
        items.append(loss_items)
    tcls, tbox, indices, anch = compute_loss.build_targets(pred, targets)

    def clip_boxes(boxes, shape):
        boxes[..., 0].clamp_(0, shape[1])  # x1
        boxes[..., 1].clamp_(0, shape[0])  # y1
        boxes[..., 2].clamp_(0, shape[1])  # x2
        boxes[..., 3].clamp_(0, shape[0])  # y2

    def xywh2xyxy(x):
        y = x.clone()
        y[..., 0] = x[..., 0] - x[..., 2] / 2
        y[..., 1] = x[..., 1] - x[..., 3] / 2
        y[..., 2] = x[..., 0] + x[..., 2] / 2
        y[..., 3] = x[..., 1] + x[..., 3] / 2
        return y

    boxes = xywh2xyxy(targets[:, 2:] * 32)
    clip_boxes(boxes, (24, 20))
    ema_sd = ema.ema.state_dict()
    return (losses, items, [t for ind in indices for t in ind], tbox, tcls, anch, model.detect.m[0].weight.grad,
            model.b1[0].weight.grad, ema_sd["b1.1.running_mean"], ema_sd["detect.m[1].bias".replace("[1]", ".1")],
            ema_sd["b1.1.num_batches_tracked"], boxes)


@pytest.mark.parametrize("float_check", ["dtype", "tensor"])
def test_yolov5_compute_loss_and_model_ema(float_check):
    weights = weights_of(lambda m: yolov5_program(m, None))
    (losses, items, indices, tbox, tcls, anch, g_det, g_b1, ema_rm, ema_bias, ema_nbt, boxes), _ = run_both(
        yolov5_program, weights, rtol=1e-4, atol=1e-5, float_check=float_check)
    assert losses[-1] < losses[0] and all(i.dtype == np.int64 for i in indices)
    assert boxes[:, [0, 2]].max() <= 20 and boxes[:, [1, 3]].max() <= 24 and boxes.min() >= 0
    assert int(ema_nbt) == 0 and not np.allclose(ema_rm, 0)


# ----------------------------------------------------------------------------------------------
# YOLOv5's training loop: three parameter groups (BN weights, decayed weights, biases) added by
# add_param_group, warmup of lr and momentum by np.interp, LambdaLR, gradient accumulation, GradScaler
# ----------------------------------------------------------------------------------------------


def yolov5_train_program(m, weights, epochs=3, batches=2):
    torch, nn, optim = m.torch, m.nn, m.optim
    model = yolov5_model(m)
    if weights is None:
        return model
    load(m, model, weights)
    hyp = {"lr0": 0.01, "lrf": 0.1, "momentum": 0.937, "weight_decay": 5e-4, "warmup_epochs": 1.0,
           "warmup_momentum": 0.8, "warmup_bias_lr": 0.1}
    g = [], [], []  # optimizer parameter groups
    bn = tuple(v for k, v in nn.__dict__.items() if "Norm" in k)  # normalization layers, i.e. BatchNorm2d()
    for v in model.modules():
        for p_name, p in v.named_parameters(recurse=False):
            if p_name == "bias":  # bias (no decay)
                g[2].append(p)
            elif p_name == "weight" and isinstance(v, bn):  # weight (no decay)
                g[1].append(p)
            else:
                g[0].append(p)  # weight (with decay)
    optimizer = optim.SGD(g[2], lr=hyp["lr0"], momentum=hyp["momentum"], nesterov=True)
    optimizer.add_param_group({"params": g[0], "weight_decay": hyp["weight_decay"]})
    optimizer.add_param_group({"params": g[1], "weight_decay": 0.0})
    lf = lambda x: (1 - x / epochs) * (1.0 - hyp["lrf"]) + hyp["lrf"]  # linear
    scheduler = optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=lf)
    amp = m.torch.amp if hasattr(m.torch, "amp") else None
    scaler = amp.GradScaler("cpu", enabled=False)
    rng = np.random.default_rng(32)
    imgs = torch.tensor(rng.standard_normal((batches, 2, 3, 32, 32)), dtype=torch.float32)
    nw = max(round(hyp["warmup_epochs"] * batches), 3)
    accumulate, last_opt_step = 2, -1
    history = []
    for epoch in range(epochs):
        model.train()
        optimizer.zero_grad()
        for i in range(batches):
            ni = i + batches * epoch
            if ni <= nw:
                xi = [0, nw]
                for j, x in enumerate(optimizer.param_groups):
                    x["lr"] = np.interp(ni, xi, [hyp["warmup_bias_lr"] if j == 0 else 0.0,
                                                 x["initial_lr"] * lf(epoch)])
                    if "momentum" in x:
                        x["momentum"] = np.interp(ni, xi, [hyp["warmup_momentum"], hyp["momentum"]])
            pred = model(imgs[i])
            loss = sum(p[..., 4].sigmoid().mean() + p[..., :4].pow(2).mean() * 0.1 for p in pred)
            scaler.scale(loss).backward()
            if ni - last_opt_step >= accumulate:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), max_norm=10.0)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad()
                last_opt_step = ni
            history.append([x["lr"] for x in optimizer.param_groups] + [loss.item()])
        scheduler.step()
    return (history, [len(x["params"]) for x in optimizer.param_groups], model.detect.m[1].bias.detach(),
            model.b1[1].weight.detach(), model.b2[0].weight.detach(), scheduler.get_last_lr())


def test_yolov5_training_loop_param_groups_and_warmup():
    weights = weights_of(lambda m: yolov5_train_program(m, None))
    (history, sizes, bias, bn_weight, conv_weight, last_lr), _ = run_both(yolov5_train_program, weights, rtol=1e-4,
                                                                          atol=1e-6)
    assert sizes == [6, 6, 4] and len(history) == 6  # biases (BN and detect), conv weights, BN weights
    np.testing.assert_allclose(last_lr, [0.01 * 0.1] * 3, rtol=1e-12)


# ----------------------------------------------------------------------------------------------
# YOLO's fuse_conv_and_bn for inference: a new Conv2d from the conv and BN's running statistics,
# delattr of the BN, forward replaced on the instance; and torch.nn.utils.fusion's version
# ----------------------------------------------------------------------------------------------


def fuse_program(m, weights):
    torch, nn = m.torch, m.nn

    class Conv(nn.Module):
        def __init__(self, c1, c2, k=1, s=1, g=1):
            super().__init__()
            self.conv = nn.Conv2d(c1, c2, k, s, k // 2, groups=g, bias=False)
            self.bn = nn.BatchNorm2d(c2)
            self.act = nn.SiLU()

        def forward(self, x):
            return self.act(self.bn(self.conv(x)))

        def forward_fuse(self, x):
            return self.act(self.conv(x))

    model = nn.Sequential(Conv(3, 4, 3, 2), Conv(4, 4, 3, 1, g=2), Conv(4, 6, 1))
    if weights is None:
        return model
    load(m, model, weights)
    rng = np.random.default_rng(33)
    with torch.no_grad():  # running statistics as after training
        for mod in model.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.tensor(rng.standard_normal(mod.num_features) * 0.2))
                mod.running_var.copy_(torch.tensor(rng.uniform(0.5, 2.0, mod.num_features)))
                mod.weight.copy_(torch.tensor(rng.uniform(0.5, 1.5, mod.num_features)))
                mod.bias.copy_(torch.tensor(rng.standard_normal(mod.num_features) * 0.1))

    def fuse_conv_and_bn(conv, bn):
        fusedconv = nn.Conv2d(conv.in_channels, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                              padding=conv.padding, dilation=conv.dilation, groups=conv.groups,
                              bias=True).requires_grad_(False).to(conv.weight.device)
        w_conv = conv.weight.clone().view(conv.out_channels, -1)
        w_bn = torch.diag(bn.weight.div(torch.sqrt(bn.eps + bn.running_var)))
        fusedconv.weight.copy_(torch.mm(w_bn, w_conv).view(fusedconv.weight.shape))
        b_conv = torch.zeros(conv.weight.shape[0], device=conv.weight.device) if conv.bias is None else conv.bias
        b_bn = bn.bias - bn.weight.mul(bn.running_mean).div(torch.sqrt(bn.running_var + bn.eps))
        fusedconv.bias.copy_(torch.mm(w_bn, b_conv.reshape(-1, 1)).reshape(-1) + b_bn)
        return fusedconv

    x = torch.tensor(rng.standard_normal((2, 3, 9, 9)), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        before = model(x)
    # torch.nn.utils.fusion's function on a copy of the first block
    from copy import deepcopy
    first = deepcopy(model[0])
    fused_util = nn.utils.fusion.fuse_conv_bn_eval(first.conv, first.bn)
    for mod in model.modules():
        if isinstance(mod, Conv) and hasattr(mod, "bn"):
            mod.conv = fuse_conv_and_bn(mod.conv, mod.bn)
            delattr(mod, "bn")
            mod.forward = mod.forward_fuse
    with torch.no_grad():
        after = model(x)
    n_params = sum(p.numel() for p in model.parameters())
    return before, after, fused_util.weight.detach(), fused_util.bias.detach(), n_params, sorted(model.state_dict())


def test_fuse_conv_and_bn_for_inference():
    weights = weights_of(lambda m: fuse_program(m, None))
    (before, after, w, b, n_params, keys), _ = run_both(fuse_program, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-5)
    assert n_params == (4 * 3 * 9 + 4) + (4 * 2 * 9 + 4) + (6 * 4 + 6) and not any(".bn." in k for k in keys)
