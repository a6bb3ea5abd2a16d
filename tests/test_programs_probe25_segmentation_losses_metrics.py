# ruff: noqa: B007, E501, E702, F841  (the programs are kept as their authors write them)
"""Semantic and instance segmentation programs, run as tests/probe25_segmentation_common.py says. Losses and metrics:
soft Dice, Tversky, focal, OHEM by topk and sort, Lovasz-softmax and Lovasz-hinge (sort, cumsum, dot); soft targets
and their errors; boundary and signed-distance losses by max pooling; a CRF-like mean-field step by unfold; confusion
matrices by bincount, histc and index_put_ with accumulate, mIoU, pixel and frequency-weighted accuracy, histogram
metrics; poly LR by LambdaLR and PolynomialLR."""

import math

import numpy as np

from .probe25_segmentation_common import D, kind, numpy_cross_entropy, softmax
from .pytorch_programs import run_both


def losses(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    N, C, H, W = 2, 4, 5, 6
    logits = torch.randn(N, C, H, W, requires_grad=True)
    target = torch.randint(0, C, (N, H, W))
    target[1, 0] = -100
    out = {}
    ce = F.cross_entropy(logits, target, reduction='none')
    out['ce'] = ce
    out['ce_w'] = F.cross_entropy(logits, target, weight=torch.tensor([1., 2., 3., 4.]))
    out['ce_ls'] = F.cross_entropy(logits, target, label_smoothing=0.1, weight=torch.tensor([1., 2., 3., 4.]))
    out['nll'] = F.nll_loss(F.log_softmax(logits, 1), target, reduction='sum')
    # soft dice
    valid = target != -100
    t = target.clone(); t[~valid] = 0
    oh = F.one_hot(t, C).permute(0, 3, 1, 2).float()
    out['ohdt'] = str(F.one_hot(t, C).dtype).replace("torch.", "")
    prob = logits.softmax(1) * valid.unsqueeze(1)
    inter = (prob * oh).sum(dim=(0, 2, 3))
    card = (prob + oh).sum(dim=(0, 2, 3))
    dice = 1 - (2 * inter + 1) / (card + 1)
    out['dice'] = dice.mean()
    # tversky
    tp = (prob * oh).sum((2, 3)); fp = (prob * (1 - oh)).sum((2, 3)); fn = ((1 - prob) * oh).sum((2, 3))
    out['tversky'] = (1 - tp / (tp + 0.3 * fp + 0.7 * fn + 1e-6)).mean()
    # focal
    logp = F.log_softmax(logits, 1)
    logpt = logp.gather(1, t.unsqueeze(1)).squeeze(1)
    pt = logpt.exp()
    focal = -((1 - pt) ** 2) * logpt
    out['focal'] = focal[valid].mean()
    # ohem
    pix = F.cross_entropy(logits, target, ignore_index=-100, reduction='none').view(-1)
    k = 20
    top, idx = pix.topk(k)
    thr = 0.7
    sorted_l, _ = torch.sort(pix, descending=True)
    keep = pix[pix > thr] if (pix > thr).sum() > k else top
    out['ohem'] = keep.mean()
    out['idx'] = idx
    total = sum(out[k] .sum() for k in ['ce', 'ce_w', 'ce_ls', 'nll', 'dice', 'tversky', 'focal', 'ohem'])
    total.backward()
    out['g'] = logits.grad
    out['logits'] = logits
    out['target'] = target
    return out



def lovasz(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    def lovasz_grad(gt_sorted):
        p = len(gt_sorted)
        gts = gt_sorted.sum()
        intersection = gts - gt_sorted.float().cumsum(0)
        union = gts + (1 - gt_sorted).float().cumsum(0)
        jaccard = 1. - intersection / union
        if p > 1:
            jaccard[1:p] = jaccard[1:p] - jaccard[0:-1]
        return jaccard
    def flatten_probas(probas, labels, ignore=None):
        B, C, H, W = probas.size()
        probas = probas.permute(0, 2, 3, 1).contiguous().view(-1, C)
        labels = labels.view(-1)
        if ignore is None:
            return probas, labels
        valid = (labels != ignore)
        vprobas = probas[valid.nonzero().squeeze()]
        vlabels = labels[valid]
        return vprobas, vlabels
    def lovasz_softmax_flat(probas, labels, classes='present'):
        C = probas.size(1)
        losses = []
        for c in range(C):
            fg = (labels == c).float()
            if classes == 'present' and fg.sum() == 0:
                continue
            class_pred = probas[:, c]
            errors = (fg - class_pred).abs()
            errors_sorted, perm = torch.sort(errors, 0, descending=True)
            perm = perm.data
            fg_sorted = fg[perm]
            losses.append(torch.dot(errors_sorted, lovasz_grad(fg_sorted)))
        return torch.stack(losses).mean()
    def lovasz_hinge_flat(logits, labels):
        signs = 2. * labels.float() - 1.
        errors = (1. - logits * signs)
        errors_sorted, perm = torch.sort(errors, dim=0, descending=True)
        gt_sorted = labels[perm]
        grad = lovasz_grad(gt_sorted)
        return torch.dot(F.relu(errors_sorted), grad)
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    labels = torch.randint(0, 3, (2, 4, 5))
    labels[0, 0, :3] = 255
    probas = F.softmax(logits, dim=1)
    l1 = lovasz_softmax_flat(*flatten_probas(probas, labels, 255))
    bl = torch.randn(2, 4, 5, requires_grad=True)
    bt = (torch.rand(2, 4, 5) > 0.5).to(torch.uint8)
    l2 = lovasz_hinge_flat(bl.view(-1), bt.view(-1))
    (l1 + l2).backward()
    return dict(l1=l1, l2=l2, g=logits.grad, bg=bl.grad, probas=probas, labels=labels, bl=bl, bt=bt)



def metrics(m):
    torch = m.torch
    torch.manual_seed(0)
    n = 5
    pred = torch.randint(0, n, (2, 6, 7))
    gt = torch.randint(0, n, (2, 6, 7))
    gt[0, 0] = 255
    k = (gt >= 0) & (gt < n)
    hist = torch.bincount(n * gt[k].to(torch.int64) + pred[k], minlength=n ** 2).reshape(n, n)
    iou = torch.diag(hist).float() / (hist.sum(1) + hist.sum(0) - torch.diag(hist)).float()
    miou = torch.nanmean(iou)
    acc = torch.diag(hist).sum().float() / hist.sum().float()
    cls_acc = torch.diag(hist) / hist.sum(dim=1)
    # per-image via scatter_add
    cm = torch.zeros(n, n, dtype=torch.long)
    cm.index_put_((gt[k], pred[k]), torch.ones_like(gt[k]), accumulate=True)
    freq = hist.sum(1) / hist.sum()
    fwiou = (freq[freq > 0] * iou[freq > 0]).sum()
    # uint8 masks
    pm = pred.to(torch.uint8); gm = gt.to(torch.uint8)
    eq = (pm == gm)
    inter = torch.logical_and(pm == 1, gm == 1).sum(dim=(1, 2))
    union = torch.logical_or(pm == 1, gm == 1).sum(dim=(1, 2))
    return dict(pred=pred, gt=gt, hist=hist, hdt=str(hist.dtype).replace("torch.", ""), iou=iou, miou=miou, acc=acc, cls_acc=cls_acc, cadt=str(cls_acc.dtype).replace("torch.", ""), cm=cm,
                fwiou=fwiou, eq=eq.float().mean(), inter=inter, idt=str(inter.dtype).replace("torch.", ""), union=union, u8sum=str(pm.sum().dtype).replace("torch.", ""),
                u8=str((pm + gm).dtype).replace("torch.", ""), u8max=pm.max())



def poly_lr(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1))
    opt = optim.SGD([{'params': model[0].parameters(), 'lr': 0.01}, {'params': model[2].parameters(), 'lr': 0.1}], lr=0.01, momentum=0.9, weight_decay=1e-4)
    max_iter = 6
    sch = optim.lr_scheduler.LambdaLR(opt, lambda it: (1 - it / max_iter) ** 0.9)
    x = torch.randn(2, 3, 6, 6); y = torch.randint(0, 3, (2, 6, 6))
    lrs = []
    for it in range(max_iter):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward(); opt.step(); sch.step()
        lrs.append([g['lr'] for g in opt.param_groups])
    sch2 = optim.lr_scheduler.PolynomialLR(opt, total_iters=4, power=0.9)
    lrs2 = []
    for it in range(5):
        opt.step(); sch2.step(); lrs2.append(sch2.get_last_lr())
    return dict(lrs=lrs, lrs2=lrs2, w=model[0].weight, loss=loss)


def boundary(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    mask = (torch.rand(2, 1, 9, 9) > 0.6).float()
    # morphological boundary by max pool
    dil = F.max_pool2d(mask, 3, 1, 1)
    ero = -F.max_pool2d(-mask, 3, 1, 1)
    bd = dil - ero
    # distance transform by iterative erosion
    dist = torch.zeros_like(mask)
    cur = mask.clone()
    for _ in range(5):
        dist += cur
        cur = -F.max_pool2d(-cur, 3, 1, 1)
    neg = torch.zeros_like(mask); cur = 1 - mask
    for _ in range(5):
        neg += cur
        cur = -F.max_pool2d(-cur, 3, 1, 1)
    sdf = neg - dist
    logits = torch.randn(2, 1, 9, 9, requires_grad=True)
    loss = (logits.sigmoid() * sdf).mean()
    # laplacian edge
    lap = torch.tensor([[-1., -1, -1], [-1, 8, -1], [-1, -1, -1]]).view(1, 1, 3, 3)
    edge = F.conv2d(mask, lap, padding=1).clamp(min=0)
    edge = (edge > 0.1).float()
    bl = F.binary_cross_entropy_with_logits(logits, edge, pos_weight=torch.tensor([3.0]))
    (loss + bl).backward()
    # cdist based distance transform
    ys, xs = torch.meshgrid(torch.arange(9), torch.arange(9), indexing='ij')
    coords = torch.stack([ys, xs], -1).view(-1, 2).float()
    fg = coords[mask[0, 0].view(-1) > 0]
    dt = torch.cdist(coords, fg).min(1).values.view(9, 9)
    return dict(mask=mask, bd=bd, sdf=sdf, loss=loss, bl=bl, g=logits.grad, dt=dt, edge=edge)


def soft_targets(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, requires_grad=True)
    soft = torch.rand(2, 3, 4, 5).softmax(1)
    a = F.cross_entropy(logits, soft)
    b = F.cross_entropy(logits, soft, weight=torch.tensor([1., 2, 3]), label_smoothing=0.2)
    c = F.cross_entropy(logits, soft, reduction='none')
    t = torch.randint(0, 3, (2, 4, 5))
    t[:] = 7
    d = F.cross_entropy(logits, t, ignore_index=7)  # all ignored -> nan
    e = F.cross_entropy(logits, t, ignore_index=7, reduction='sum')
    kl = F.kl_div(F.log_softmax(logits, 1), soft, reduction='batchmean')
    bce = F.binary_cross_entropy(torch.sigmoid(logits), soft, weight=torch.rand(1, 3, 1, 1))
    (a + b + c.sum() + e + kl + bce).backward()
    out = dict(logits=logits, soft=soft, a=a, b=b, c=c, d=d, e=e, kl=kl, bce=bce, g=logits.grad)
    for bad in [t.to(torch.uint8), t.float(), torch.randint(0, 3, (2, 4)), torch.full((2, 4, 5), 3)]:
        try:
            F.cross_entropy(logits, bad); out.setdefault('errs', []).append(None)
        except Exception as ex:
            out.setdefault('errs', []).append(kind(ex))
    return out


def hist_metrics(m):
    torch = m.torch
    torch.manual_seed(0)
    pred = torch.randint(0, 4, (3, 5, 5)); gt = torch.randint(0, 4, (3, 5, 5))
    inter = pred[pred == gt]
    ai = torch.histc(inter.float(), bins=4, min=0, max=3)
    ap = torch.histc(pred.float(), bins=4, min=0, max=3)
    al = torch.histc(gt.float(), bins=4, min=0, max=3)
    iou = ai / (ap + al - ai)
    wb = torch.bincount(gt.flatten(), weights=torch.rand(75), minlength=6)
    cnt = torch.bincount(gt.flatten().to(torch.uint8))
    per_img = torch.stack([torch.bincount(4 * g.flatten() + p.flatten(), minlength=16).view(4, 4) for g, p in zip(gt, pred)])
    nan = torch.nanmean(torch.tensor([float('nan'), float('nan')]))
    dice = 2 * ai / (ap + al)
    s = torch.tensor([3, 1, 2]).float()
    return dict(pred=pred, gt=gt, ai=ai, iou=iou, wb=wb, wbdt=D(wb), cnt=cnt, cntdt=D(cnt), per_img=per_img, nan=nan, dice=dice,
                ms=per_img.sum(0).diag(), mean_iou=iou[~iou.isnan()].mean(), argsort=torch.argsort(s, descending=True))


def crf_like(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 6, 6, requires_grad=True)
    img = torch.rand(1, 3, 6, 6)
    k = 3
    q = logits.softmax(1)
    for _ in range(2):
        patches = F.unfold(q, k, padding=1).view(1, 3, k * k, 6, 6)
        ip = F.unfold(img, k, padding=1).view(1, 3, k * k, 6, 6)
        w = torch.exp(-((ip - img.unsqueeze(2)) ** 2).sum(1, keepdim=True) / 0.1)
        msg = (patches * w).sum(2)
        compat = torch.ones(3, 3) - torch.eye(3)
        pen = torch.einsum('ij,bjhw->bihw', compat, msg)
        q = (logits - pen).softmax(1)
    loss = -(q.clamp_min(1e-6).log() * q).sum()
    loss.backward()
    return dict(q=q, g=logits.grad)


def test_segmentation_losses():
    ours, _ = run_both(losses, rtol=1e-4, atol=1e-5)
    z, t = ours["logits"], ours["target"]
    mean, per_pixel = numpy_cross_entropy(z, t)
    np.testing.assert_allclose(ours["ce"], per_pixel, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["ce_w"], numpy_cross_entropy(z, t, [1, 2, 3, 4])[0], rtol=1e-5)
    np.testing.assert_allclose(ours["nll"], per_pixel.sum(), rtol=1e-5)
    valid = t != -100
    p = softmax(z.astype(np.float64), 1) * valid[:, None]
    oh = np.eye(4)[np.where(valid, t, 0)].transpose(0, 3, 1, 2)
    dice = 1 - (2 * (p * oh).sum((0, 2, 3)) + 1) / ((p + oh).sum((0, 2, 3)) + 1)
    np.testing.assert_allclose(ours["dice"], dice.mean(), rtol=1e-5)
    pt = np.exp(-per_pixel)
    np.testing.assert_allclose(ours["focal"], (-(1 - pt) ** 2 * np.log(pt))[valid].mean(), rtol=1e-4)
    assert ours["ohdt"] == "int64" and np.isfinite(ours["g"]).all()
    np.testing.assert_allclose(np.sort(per_pixel.ravel())[::-1][:20], per_pixel.ravel()[ours["idx"]], rtol=1e-6)


def numpy_lovasz_grad(gt):
    gts = gt.sum()
    jaccard = 1 - (gts - np.cumsum(gt)) / (gts + np.cumsum(1 - gt))
    jaccard[1:] = jaccard[1:] - jaccard[:-1]
    return jaccard


def test_lovasz_softmax_and_hinge():
    ours, _ = run_both(lovasz, rtol=1e-4, atol=1e-5)
    probas = ours["probas"].transpose(0, 2, 3, 1).reshape(-1, 3)
    labels = ours["labels"].reshape(-1)
    keep = labels != 255
    probas, labels = probas[keep], labels[keep]
    by_class = []
    for c in range(3):
        fg = (labels == c).astype(np.float64)
        if fg.sum() == 0:
            continue
        errors = np.abs(fg - probas[:, c])
        order = np.argsort(-errors, kind="stable")
        by_class.append(errors[order] @ numpy_lovasz_grad(fg[order]))
    np.testing.assert_allclose(ours["l1"], np.mean(by_class), rtol=1e-5)
    logits, gt = ours["bl"].reshape(-1), ours["bt"].reshape(-1).astype(np.float64)
    errors = 1 - logits * (2 * gt - 1)
    order = np.argsort(-errors, kind="stable")
    np.testing.assert_allclose(ours["l2"], np.maximum(errors[order], 0) @ numpy_lovasz_grad(gt[order]), rtol=1e-5)


def test_confusion_matrix_metrics():
    ours, _ = run_both(metrics)
    gt, pred = ours["gt"].ravel(), ours["pred"].ravel()
    k = gt < 5
    hist = np.zeros((5, 5), np.int64)
    np.add.at(hist, (gt[k], pred[k]), 1)
    np.testing.assert_array_equal(ours["hist"], hist)
    np.testing.assert_array_equal(ours["cm"], hist)
    iou = np.diag(hist) / (hist.sum(0) + hist.sum(1) - np.diag(hist))
    np.testing.assert_allclose(ours["iou"], iou, rtol=1e-6)
    np.testing.assert_allclose(ours["miou"], np.nanmean(iou), rtol=1e-6)
    np.testing.assert_allclose(ours["acc"], np.diag(hist).sum() / hist.sum(), rtol=1e-6)
    assert (ours["hdt"], ours["cadt"], ours["idt"], ours["u8sum"], ours["u8"]) == ("int64", "float32", "int64",
                                                                                   "int64", "uint8")


def test_poly_learning_rates():
    ours, _ = run_both(poly_lr)
    for it, lrs in enumerate(ours["lrs"]):
        np.testing.assert_allclose(lrs, [0.01 * (1 - (it + 1) / 6) ** 0.9, 0.1 * (1 - (it + 1) / 6) ** 0.9], atol=1e-12)
    assert ours["lrs2"][-1] == [0.0, 0.0]


def test_boundaries_and_distance_maps():
    ours, _ = run_both(boundary)
    mask = ours["mask"][0, 0]
    padded = np.pad(mask, 1, constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (3, 3))
    dil = windows.max((-1, -2))
    ero = np.where(np.isinf(windows), np.inf, windows).min((-1, -2))
    np.testing.assert_array_equal(ours["bd"][0, 0], dil - ero)
    fg = np.argwhere(mask > 0)
    every = np.argwhere(np.ones((9, 9)))
    brute = np.sqrt(((every[:, None] - fg[None]) ** 2).sum(-1)).min(1).reshape(9, 9)
    np.testing.assert_allclose(ours["dt"], brute, rtol=1e-5, atol=1e-5)


def test_soft_targets_and_errors():
    ours, _ = run_both(soft_targets, rtol=1e-4, atol=1e-5)
    logp = np.log(softmax(ours["logits"].astype(np.float64), 1))
    np.testing.assert_allclose(ours["a"], -(logp * ours["soft"]).sum(1).mean(), rtol=1e-5)
    assert math.isnan(ours["d"]) and ours["e"] == 0
    assert ours["errs"] == ["RuntimeError", "RuntimeError", "RuntimeError", "IndexError"]  # (uint8: a Byte target)


def test_histogram_metrics():
    ours, _ = run_both(hist_metrics)
    gt, pred = ours["gt"], ours["pred"]
    np.testing.assert_array_equal(ours["ai"], np.bincount(pred[pred == gt], minlength=4))
    assert ours["wbdt"] == "float32" and ours["cntdt"] == "int64"
    np.testing.assert_array_equal(ours["per_img"].sum((1, 2)), [25, 25, 25])
    assert math.isnan(ours["nan"]) and list(ours["argsort"]) == [0, 2, 1]


def test_crf_like_mean_field_by_unfold():
    ours, _ = run_both(crf_like, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["q"].sum(1), 1, rtol=1e-5)
    assert np.isfinite(ours["g"]).all()
