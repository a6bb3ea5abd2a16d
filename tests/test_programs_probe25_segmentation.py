# ruff: noqa: B007, B023, E501, E702, E741, E731, F841, N806, C408  (the programs are kept as their authors write them)
"""Semantic and instance segmentation programs (see tests/pytorch_programs.py), as people write them after
milesial's U-Net, torchvision's DeepLabV3/FCN heads, PSPNet, SegNet, nnU-Net, Lovasz-softmax's reference code and
mmsegmentation's metrics, each run on chainrule and on PyTorch from the same seeds, comparing values, gradients,
dtypes (masks of int64, uint8 and bool), errors and memory sharing, and checked against NumPy by hand or invariants
where PyTorch is not installed.

A small U-Net (max pooling, ConvTranspose2d or align_corners=True upsampling, skip concatenation after F.pad)
trained by Adam on cross_entropy with class weights and ignore_index=255; ASPP (dilated convs, an image-pooling
branch interpolated back) and a pyramid pooling module (adaptive_avg_pool2d to 1/2/3/6); a pixel-shuffle decoder;
soft Dice, Tversky, focal, OHEM by topk and sort, Lovasz-softmax and Lovasz-hinge (sort, cumsum, dot); confusion
matrices by bincount, histc and index_put_ with accumulate, mIoU, pixel and frequency-weighted accuracy; poly LR by
LambdaLR and PolynomialLR; tensor augmentations of an image and its mask together; flip TTA; sliding-window
inference with count maps, Gaussian importance maps and fold/unfold; a Mask R-CNN-style mask head over a bilinear
RoI crop by affine_grid/grid_sample (and grid_sample's modes and paddings, 2-d and 3-d); a CRF-like mean-field
step by unfold; boundary and signed-distance losses by max pooling; SegNet's max_unpool2d;
3-d segmentation with trilinear interpolation; uint8 image resizing (bilinear, bicubic, antialiased) as
torchvision's tensor transforms do it; DataLoader collation of uint8 masks; from_numpy sharing."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

D = lambda t: str(t.dtype).replace("torch.", "")


def kind(error):
    """An error's family, in which both libraries agree (chainrule's ShapeError and DtypeError are RuntimeErrors
    that are also ValueError/TypeError, where PyTorch raises a plain RuntimeError)."""
    for family in (NotImplementedError, IndexError, RuntimeError, ValueError, TypeError):
        if isinstance(error, family) and not (family is IndexError and isinstance(error, RuntimeError)):
            return family.__name__
    return type(error).__name__


def unet(m, align=False, steps=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    def block(ci, co):
        return nn.Sequential(nn.Conv2d(ci, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True),
                             nn.Conv2d(co, co, 3, padding=1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))
    class Up(nn.Module):
        def __init__(self, ci, co, bilinear):
            super().__init__()
            self.bilinear = bilinear
            if bilinear:
                self.up = nn.Upsample(scale_factor=2, mode='bilinear', align_corners=True)
                self.conv = block(ci + co, co)
            else:
                self.up = nn.ConvTranspose2d(ci, ci // 2, 2, stride=2)
                self.conv = block(ci // 2 + co, co)
        def forward(self, x1, x2):
            x1 = self.up(x1)
            dy = x2.size()[2] - x1.size()[2]
            dx = x2.size()[3] - x1.size()[3]
            x1 = F.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            return self.conv(torch.cat([x2, x1], dim=1))
    class UNet(nn.Module):
        def __init__(self, bilinear):
            super().__init__()
            self.inc = block(3, 4)
            self.d1 = nn.Sequential(nn.MaxPool2d(2), block(4, 8))
            self.d2 = nn.Sequential(nn.MaxPool2d(2), block(8, 16))
            self.u1 = Up(16, 8, bilinear)
            self.u2 = Up(8, 4, bilinear)
            self.outc = nn.Conv2d(4, 3, 1)
        def forward(self, x):
            x1 = self.inc(x); x2 = self.d1(x1); x3 = self.d2(x2)
            x = self.u1(x3, x2); x = self.u2(x, x1)
            return self.outc(x)
    model = UNet(align)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(2, 3, 13, 11)
    y = torch.randint(0, 3, (2, 13, 11))
    y[0, :2] = 255
    w = torch.tensor([1.0, 2.0, 0.5])
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        out = model(x)
        loss = F.cross_entropy(out, y, weight=w, ignore_index=255)
        loss.backward()
        losses.append(loss.item())
        opt.step()
    grads = {n: p.grad for n, p in model.named_parameters()}
    pred = out.argmax(1)
    return dict(losses=losses, grads=grads, out=out, y=y, pred=pred, pdt=str(pred.dtype).replace("torch.", ""))



def aspp_psp(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    class ASPPPooling(nn.Sequential):
        def __init__(self, ci, co):
            super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(ci, co, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU())
        def forward(self, x):
            size = x.shape[-2:]
            for mod in self:
                x = mod(x)
            return F.interpolate(x, size=size, mode='bilinear', align_corners=False)
    class ASPP(nn.Module):
        def __init__(self, ci, rates, co=8):
            super().__init__()
            mods = [nn.Sequential(nn.Conv2d(ci, co, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU())]
            for r in rates:
                mods.append(nn.Sequential(nn.Conv2d(ci, co, 3, padding=r, dilation=r, bias=False), nn.BatchNorm2d(co), nn.ReLU()))
            mods.append(ASPPPooling(ci, co))
            self.convs = nn.ModuleList(mods)
            self.project = nn.Sequential(nn.Conv2d(len(self.convs) * co, co, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(), nn.Dropout(0.1))
        def forward(self, x):
            res = [conv(x) for conv in self.convs]
            return self.project(torch.cat(res, dim=1))
    class PPM(nn.Module):
        def __init__(self, ci, bins=(1, 2, 3, 6)):
            super().__init__()
            self.features = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(b), nn.Conv2d(ci, 2, 1, bias=False), nn.ReLU(inplace=True)) for b in bins])
        def forward(self, x):
            size = x.size()
            out = [x]
            for f in self.features:
                out.append(F.interpolate(f(x), size[2:], mode='bilinear', align_corners=True))
            return torch.cat(out, 1)
    aspp = ASPP(4, [1, 2, 3]).eval()
    ppm = PPM(4)
    x = torch.randn(2, 4, 11, 9, requires_grad=True)
    a = aspp(x)
    p = ppm(x)
    head = nn.Conv2d(8, 5, 1)
    logits = F.interpolate(head(a), scale_factor=4, mode='bilinear', align_corners=False)
    loss = logits.logsumexp(1).mean() + (p ** 2).mean()
    loss.backward()
    return dict(a=a, p=p, logits=logits, xg=x.grad, gp=[q.grad for q in ppm.parameters()], ga=[q.grad for q in aspp.parameters()])



def pixel_shuffle_dec(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 3 * 4, 3, padding=1)
    ps = nn.PixelShuffle(2)
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    y = ps(conv(x))
    u = F.pixel_unshuffle(y, 2)
    loss = (y.sin() * torch.arange(y.numel()).reshape(y.shape).float()).sum() + u.pow(2).sum()
    loss.backward()
    return dict(y=y, u=u, c=conv(x), g=x.grad, gw=conv.weight.grad)



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



def augment(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    img = torch.randn(3, 10, 12)
    mask = torch.randint(0, 4, (10, 12), dtype=torch.uint8)
    out = {}
    if torch.rand(1) < 0.5:
        img = torch.flip(img, [2]); mask = torch.flip(mask, [1])
    img2 = img.flip(-1); mask2 = mask.flip(-1)
    th, tw = 7, 8
    i = torch.randint(0, 10 - th + 1, size=(1,)).item()
    j = torch.randint(0, 12 - tw + 1, size=(1,)).item()
    ci = img[:, i:i + th, j:j + tw]; cm = mask[i:i + th, j:j + tw]
    out['shares'] = ci.data_ptr() == img[:, i:, j:].data_ptr()
    ci[0, 0, 0] = 100.0
    out['img00'] = img[0, i, j]
    # scale with nearest for mask, bilinear for image
    s = F.interpolate(img.unsqueeze(0), scale_factor=1.5, mode='bilinear', align_corners=False)
    sm = F.interpolate(mask[None, None].float(), scale_factor=1.5, mode='nearest').long().squeeze()
    sm2 = F.interpolate(mask[None, None].float(), size=(7, 9), mode='nearest-exact').to(torch.uint8)
    out.update(ci=ci, cm=cm, cmdt=str(cm.dtype).replace("torch.", ""), s=s, sm=sm, smdt=str(sm.dtype).replace("torch.", ""), sm2=sm2, img2=img2, mask2=mask2)
    oh = F.one_hot(mask.long(), 4).permute(2, 0, 1)
    out['oh'] = oh; out['ohc'] = oh.is_contiguous(); out['ohs'] = tuple(oh.stride())
    # pad image and mask with ignore
    pimg = F.pad(img, (0, 3, 0, 2), value=0)
    pm = F.pad(mask, (0, 3, 0, 2), value=255)
    out.update(pimg=pimg, pm=pm, pmdt=str(pm.dtype).replace("torch.", ""))
    # normalize
    mean = torch.tensor([0.485, 0.456, 0.406]).view(-1, 1, 1); std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    out['norm'] = (img - mean) / std
    return out



def tta_sliding(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1)).eval()
    img = torch.randn(1, 3, 13, 17)
    with torch.no_grad():
        p = model(img).softmax(1)
        p = p + model(img.flip(3)).softmax(1).flip(3)
        p = p + model(torch.flip(img, dims=[2])).softmax(1).flip(2)
        tta = p / 3
    crop, stride = 8, 5
    H, W = img.shape[2:]
    nh = max(H - crop + stride - 1, 0) // stride + 1
    nw = max(W - crop + stride - 1, 0) // stride + 1
    preds = img.new_zeros((1, 3, H, W))
    count = img.new_zeros((1, 1, H, W))
    for hi in range(nh):
        for wi in range(nw):
            y1 = hi * stride; x1 = wi * stride
            y2 = min(y1 + crop, H); x2 = min(x1 + crop, W)
            y1 = max(y2 - crop, 0); x1 = max(x2 - crop, 0)
            c = img[:, :, y1:y2, x1:x2]
            with torch.no_grad():
                lo = model(c)
            preds += F.pad(lo, (int(x1), int(preds.shape[3] - x2), int(y1), int(preds.shape[2] - y2)))
            count[:, :, y1:y2, x1:x2] += 1
    assert (count == 0).sum() == 0
    seg = preds / count
    # unfold/fold version
    patches = F.unfold(img, kernel_size=crop, stride=stride)
    folded = F.fold(patches, (H, W), kernel_size=crop, stride=stride)
    cnt = F.fold(torch.ones_like(patches), (H, W), kernel_size=crop, stride=stride)
    return dict(img=img, tta=tta, seg=seg, count=count, folded=folded, cnt=cnt, ps=tuple(patches.shape))



def roi_heads(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    feat = torch.randn(2, 4, 8, 10, requires_grad=True)
    boxes = torch.tensor([[0, 1.0, 1.5, 6.0, 7.0], [1, 0.0, 0.0, 9.0, 7.0], [0, 2.5, 3.0, 4.5, 5.0]])
    def roi_align(feat, rois, out_size=4, scale=1.0):
        N, C, H, W = feat.shape
        bi = rois[:, 0].long()
        x1, y1, x2, y2 = (rois[:, 1:] * scale).unbind(1)
        theta = torch.zeros(rois.size(0), 2, 3)
        theta[:, 0, 0] = (x2 - x1) / (W - 1)
        theta[:, 0, 2] = (x1 + x2 - W + 1) / (W - 1)
        theta[:, 1, 1] = (y2 - y1) / (H - 1)
        theta[:, 1, 2] = (y1 + y2 - H + 1) / (H - 1)
        grid = F.affine_grid(theta, (rois.size(0), C, out_size, out_size), align_corners=True)
        return F.grid_sample(feat[bi], grid, mode='bilinear', align_corners=True)
    r = roi_align(feat, boxes)
    mask_head = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(4, 4, 2, 2), nn.ReLU(), nn.Conv2d(4, 3, 1))
    mlog = mask_head(r)
    labels = torch.tensor([1, 2, 0])
    sel = mlog[torch.arange(3), labels]
    gt = (torch.rand(3, 8, 8) > 0.5)
    loss = F.binary_cross_entropy_with_logits(sel, gt.float())
    # paste masks back via interpolate
    pasted = F.interpolate(sel.sigmoid()[:, None], size=(5, 5), mode='bilinear', align_corners=False)
    binm = pasted > 0.5
    loss.backward()
    # nearest grid sample / zeros padding out-of-box
    g2 = F.grid_sample(feat.detach(), torch.rand(2, 3, 3, 2) * 2.4 - 1.2, mode='nearest', padding_mode='zeros', align_corners=False)
    g3 = F.grid_sample(feat.detach(), torch.rand(2, 3, 3, 2) * 2.4 - 1.2, mode='bilinear', padding_mode='border', align_corners=False)
    return dict(feat=feat, r=r, mlog=mlog, loss=loss, g=feat.grad, pasted=pasted, binm=binm, bdt=str(binm.dtype).replace("torch.", ""), g2=g2, g3=g3,
                wg=[p.grad for p in mask_head.parameters()])



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


def interp_scales(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    x = torch.randn(1, 2, 10, 7, requires_grad=True)
    out = {}
    for mode in ['nearest', 'nearest-exact', 'bilinear', 'bicubic', 'area']:
        for sf in [1.7, 0.45, (2.3, 0.6)]:
            kw = {} if mode in ('nearest', 'nearest-exact', 'area') else dict(align_corners=False)
            y = F.interpolate(x, scale_factor=sf, mode=mode, **kw)
            out[f'{mode}{sf}'] = y
            y2 = F.interpolate(x, scale_factor=sf, mode=mode, recompute_scale_factor=True, **kw)
            out[f'{mode}{sf}r'] = y2
    tot = sum((v * (i + 1)).sum() for i, v in enumerate(out.values()))
    tot.backward()
    out['g'] = x.grad
    out['x'] = x
    out['aa'] = F.interpolate(x.detach(), size=(4, 3), mode='bilinear', antialias=True, align_corners=False)
    out['ac'] = F.interpolate(x.detach(), size=(13, 9), mode='bicubic', align_corners=True)
    return out



def mask_resize(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    mask = torch.randint(0, 5, (2, 1, 7, 9), dtype=torch.uint8)
    out = {}
    y = F.interpolate(mask, size=(11, 13), mode='nearest')
    out['u8'] = y; out['u8dt'] = D(y)
    y = F.interpolate(mask, scale_factor=0.5, mode='nearest-exact')
    out['u8e'] = y
    b = mask > 2
    try:
        out['bool'] = F.interpolate(b, size=(5, 5), mode='nearest')
    except Exception as e:
        out['boolerr'] = kind(e)
    try:
        out['long'] = F.interpolate(mask.long(), size=(5, 5), mode='nearest')
    except Exception as e:
        out['longerr'] = kind(e)
    out['upn'] = torch.nn.Upsample(scale_factor=2)(mask.float())
    out['upb'] = torch.nn.UpsamplingBilinear2d(scale_factor=2)(mask.float())
    out['upnn'] = torch.nn.UpsamplingNearest2d(size=(3, 4))(mask.float())
    return out



def segnet(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    dec = nn.Conv2d(4, 2, 3, padding=1)
    x = torch.randn(2, 3, 9, 11, requires_grad=True)
    h = conv(x)
    p, idx = F.max_pool2d(h, 2, 2, return_indices=True)
    p2, idx2 = nn.MaxPool2d(3, 2, ceil_mode=True, return_indices=True)(h)
    u = F.max_unpool2d(p, idx, 2, 2, output_size=h.shape[-2:])
    u2 = nn.MaxUnpool2d(2)(p, idx, output_size=h.size())
    y = dec(u)
    loss = (y ** 2).sum() + (p2 * 3).sum() + u2.sum()
    loss.backward()
    return dict(h=h, p=p, idx=idx, idt=D(idx), p2=p2, idx2=idx2, u=u, u2=u2, g=x.grad, gw=conv.weight.grad)



def convT(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    up = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1)
    up2 = nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1)
    x = torch.randn(2, 4, 5, 6, requires_grad=True)
    a = up(x)
    b = up2(x, output_size=[10, 12])
    c = up2(x, output_size=(2, 3, 9, 11))
    try:
        up2(x, output_size=(13, 12))
        err = None
    except Exception as e:
        err = kind(e)
    d = F.conv_transpose2d(x, up.weight, None, stride=2, padding=1, output_padding=1, dilation=1)
    (a.sum() + (b ** 2).sum() + c.mean() + d.abs().sum()).backward()
    return dict(a=a, b=b, c=c, d=d, err=err, g=x.grad, gw=up.weight.grad, gw2=up2.weight.grad)



def onehot_scatter(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    t = torch.randint(0, 4, (2, 5, 6))
    out = {}
    oh = torch.zeros(2, 4, 5, 6).scatter_(1, t.unsqueeze(1), 1)
    out['oh'] = oh
    oh2 = torch.zeros(2, 4, 5, 6, dtype=torch.long).scatter_(1, t.unsqueeze(1), 1)
    out['oh2'] = oh2
    ohf = F.one_hot(t).permute(0, 3, 1, 2)
    out['ohf'] = ohf; out['ohfs'] = tuple(ohf.stride()); out['ohfdt'] = D(ohf)
    for bad in [t.to(torch.uint8), t.float(), t - 1]:
        try:
            F.one_hot(bad, 4); out.setdefault('errs', []).append(None)
        except Exception as e:
            out.setdefault('errs', []).append(kind(e))
    try:
        F.one_hot(t, 3); out['small'] = None
    except Exception as e:
        out['small'] = kind(e)
    out['empty'] = tuple(F.one_hot(torch.zeros(0, dtype=torch.long), 3).shape)
    try:
        F.one_hot(torch.zeros(0, dtype=torch.long)); out['empty2'] = None
    except Exception as e:
        out['empty2'] = kind(e)
    return out



def mask_dtypes(m):
    torch = m.torch
    torch.manual_seed(0)
    x = torch.randn(3, 4)
    u8 = (torch.rand(3, 4) > 0.5).to(torch.uint8)
    b = u8.bool()
    out = {}
    def tryit(name, f):
        try:
            r = f()
            out[name] = r
            if hasattr(r, 'dtype'):
                out[name + 'dt'] = D(r)
        except Exception as e:
            out[name] = kind(e)
    tryit('idx_u8', lambda: x[u8])
    tryit('idx_b', lambda: x[b])
    tryit('mf_u8', lambda: x.masked_fill(u8, 0.))
    tryit('mf_b', lambda: x.masked_fill(b, 0.))
    tryit('where_u8', lambda: torch.where(u8, x, 0.))
    tryit('where_b', lambda: torch.where(b, x, 0.))
    tryit('not_u8', lambda: ~u8)
    tryit('not_b', lambda: ~b)
    tryit('and', lambda: u8 & b)
    tryit('mul', lambda: u8 * b)
    tryit('add_b', lambda: b + b)
    tryit('sum_b', lambda: b.sum())
    tryit('sum_u8', lambda: u8.sum(1))
    tryit('mean_u8', lambda: u8.mean())
    tryit('mean_u8f', lambda: u8.float().mean())
    tryit('sub_b', lambda: b - b)
    tryit('neg_b', lambda: -b)
    tryit('u8_sub', lambda: u8 - 1)
    tryit('u8_div', lambda: u8 / 2)
    tryit('u8_fdiv', lambda: u8 // 2)
    tryit('u8x255', lambda: u8 * 255 + 10)
    tryit('u8_neg', lambda: -u8)
    tryit('b_max', lambda: b.max())
    tryit('b_any', lambda: b.any(dim=1))
    tryit('b_argmax', lambda: b.float().argmax(1))
    tryit('ms_u8', lambda: x.masked_select(u8))
    tryit('nz', lambda: b.nonzero())
    tryit('nzt', lambda: b.nonzero(as_tuple=True))
    tryit('u8_eq', lambda: u8 == 1)
    tryit('u8_f', lambda: u8 * 0.5)
    tryit('u8_cumsum', lambda: u8.cumsum(0))
    tryit('b_cumsum', lambda: b.cumsum(1))
    tryit('b_prod', lambda: b.prod())
    tryit('u8_prod', lambda: u8.prod(0))
    tryit('set_u8', lambda: x.clone().index_put_((u8,), torch.tensor(5.)))
    def setitem():
        y = x.clone(); y[b] = 0; y[u8.bool() == 0] += 1; return y
    tryit('setitem', setitem)
    tryit('u8_max_other', lambda: torch.maximum(u8, b))
    tryit('clamp_u8', lambda: u8.clamp(max=0))
    return out



def instance(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    inst = torch.randint(0, 4, (6, 7))
    ids, inv, counts = torch.unique(inst, return_inverse=True, return_counts=True)
    ids = ids[ids != 0]
    masks = inst[None] == ids[:, None, None]
    areas = masks.sum((1, 2))
    ys, xs = torch.where(masks[0])
    boxes = []
    for mk in masks:
        yy, xx = torch.where(mk)
        boxes.append(torch.stack([xx.min(), yy.min(), xx.max(), yy.max()]))
    boxes = torch.stack(boxes)
    # mask iou
    mf = masks.flatten(1).float()
    inter = mf @ mf.T
    union = areas[:, None] + areas[None, :] - inter
    miou = inter / union
    # connected components via max pooling
    fg = (inst > 1).float()
    lab = (torch.arange(1, 43).view(1, 1, 6, 7).float()) * fg
    for _ in range(20):
        lab = F.max_pool2d(lab, 3, 1, 1) * fg
    return dict(inst=inst, ids=ids, inv=inv, counts=counts, masks=masks, areas=areas, adt=D(areas), ys=ys, boxes=boxes, bdt=D(boxes),
                miou=miou, lab=lab, ncomp=torch.unique(lab[lab > 0]).numel())



def norms_heads(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=2, dilation=2), nn.GroupNorm(4, 8), nn.ReLU(), nn.Dropout2d(0.2),
                        nn.Conv2d(8, 8, 3, padding=1, padding_mode='reflect'), nn.InstanceNorm2d(8, affine=True), nn.LeakyReLU(0.1),
                        nn.Conv2d(8, 4, 1))
    opt = optim.AdamW(net.parameters(), lr=1e-3)
    sch = optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=4)
    x = torch.randn(2, 3, 8, 8)
    y = torch.randint(0, 4, (2, 8, 8))
    losses = []
    for _ in range(3):
        opt.zero_grad()
        o = net(x)
        loss = nn.CrossEntropyLoss(weight=torch.tensor([0.1, 1, 2, 3.]), ignore_index=2, label_smoothing=0.05)(o, y)
        loss.backward(); opt.step(); sch.step(); losses.append(loss.item())
    o = net.eval()(x)
    am = F.adaptive_max_pool2d(o, (3, 3))
    ap = F.avg_pool2d(o, 3, 2, 1, count_include_pad=False, ceil_mode=True)
    return dict(losses=losses, o=o, am=am, ap=ap, g=[p.grad for p in net.parameters()])



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


def sharing(m):
    torch, F = m.torch, m.F
    out = {}
    arr = (np.arange(24).reshape(4, 6) % 5).astype(np.uint8)
    t = torch.from_numpy(arr)
    arr[0, 0] = 9
    out['from_np'] = t[0, 0].item()
    a2 = torch.as_tensor(arr); arr[0, 1] = 7; out['as_t'] = a2[0, 1].item()
    a3 = torch.as_tensor(arr, dtype=torch.int64); arr[0, 2] = 8; out['as_t_long'] = a3[0, 2].item()
    l = t.long(); out['long_new'] = l is t
    l2 = l.long(); out['long_same'] = l2 is l
    l3 = l.to(torch.int64); out['to_same'] = l3 is l
    l4 = l.type(torch.long); out['type_same'] = l4 is l
    l5 = l.to(torch.int64, copy=True); out['to_copy'] = l5 is l
    n = l.numpy(); n[1, 1] = 42; out['numpy_shares'] = l[1, 1].item()
    img = np.random.RandomState(0).randint(0, 255, (5, 4, 3)).astype(np.uint8)
    ti = torch.from_numpy(img).permute(2, 0, 1)
    out['perm_stride'] = tuple(ti.stride()); out['perm_contig'] = ti.is_contiguous()
    tf = ti.float().div(255)
    out['tf_stride'] = tuple(tf.stride())
    c = ti.contiguous(); out['contig_stride'] = tuple(c.stride())
    out['tf'] = tf
    v = l.view(-1); v[0] = 11; out['view'] = l[0, 0].item()
    r = l.reshape(3, 8); out['reshape_shares'] = r.data_ptr() == l.data_ptr()
    p = l.t().reshape(-1); out['reshape_t_shares'] = p.data_ptr() == l.data_ptr()
    sq = l[None].squeeze(0); sq[0, 3] = 99; out['squeeze'] = l[0, 3].item()
    u = l.unsqueeze(0).expand(3, 4, 6); out['expand_stride'] = tuple(u.stride())
    out['flat'] = l.flatten().data_ptr() == l.data_ptr()
    out['detach'] = l.float().requires_grad_().detach().data_ptr() is not None
    b = l > 2
    bu = b.to(torch.uint8); out['b2u'] = bu
    bb = b.bool(); out['bool_same'] = bb is b
    return out



def collate(m):
    torch, data = m.torch, m.data
    torch.manual_seed(0)
    class DS(data.Dataset):
        def __init__(self):
            rs = np.random.RandomState(0)
            self.imgs = rs.rand(6, 5, 4, 3).astype(np.float32)
            self.masks = rs.randint(0, 3, (6, 5, 4)).astype(np.uint8)
        def __len__(self):
            return 6
        def __getitem__(self, i):
            img = torch.from_numpy(self.imgs[i]).permute(2, 0, 1)
            mask = torch.from_numpy(self.masks[i])
            if torch.rand(1).item() < 0.5:
                img = img.flip(-1); mask = mask.flip(-1)
            return img, mask.long(), {'name': f'img{i}', 'np': self.masks[i]}
    dl = data.DataLoader(DS(), batch_size=4, shuffle=True, drop_last=False)
    out = []
    for img, mask, meta in dl:
        out.append((img, mask, D(mask), meta['name'], meta['np'], D(meta['np']), img.is_contiguous()))
    return out



def gaussian_sliding(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    net = nn.Conv2d(2, 3, 3, padding=1)
    patch = (6, 6)
    sig = [p / 8 for p in patch]
    g = torch.zeros(patch)
    ys = torch.arange(patch[0]).float() - (patch[0] - 1) / 2
    xs = torch.arange(patch[1]).float() - (patch[1] - 1) / 2
    gy = torch.exp(-ys ** 2 / (2 * sig[0] ** 2)); gx = torch.exp(-xs ** 2 / (2 * sig[1] ** 2))
    g = torch.outer(gy, gx)
    g = g / g.max()
    g[g == 0] = g[g != 0].min()
    img = torch.randn(1, 2, 11, 9)
    H, W = img.shape[-2:]
    steps_y = np.round(np.linspace(0, H - patch[0], int(np.ceil((H - patch[0]) / 3)) + 1)).astype(int)
    steps_x = np.round(np.linspace(0, W - patch[1], int(np.ceil((W - patch[1]) / 3)) + 1)).astype(int)
    agg = torch.zeros(1, 3, H, W); cnt = torch.zeros(H, W)
    with torch.inference_mode():
        for y in steps_y:
            for x in steps_x:
                sl = (slice(None), slice(None), slice(y, y + patch[0]), slice(x, x + patch[1]))
                pr = net(img[sl])
                agg[sl] += pr * g
                cnt[y:y + patch[0], x:x + patch[1]] += g
    res = agg / cnt
    seg = res.argmax(1).squeeze(0)
    return dict(g=g, res=res, seg=seg, cnt=cnt, inf=res.is_inference(), sy=[int(s) for s in steps_y])



def deep_supervision(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    enc = nn.Conv2d(3, 4, 3, padding=1)
    heads = nn.ModuleList([nn.Conv2d(4, 3, 1) for _ in range(3)])
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    y = torch.randint(0, 3, (2, 8, 8))
    f = enc(x)
    outs = [heads[0](f), heads[1](F.avg_pool2d(f, 2)), heads[2](F.avg_pool2d(f, 4))]
    ws = torch.tensor([1 / 2 ** i for i in range(3)]); ws = ws / ws.sum()
    loss = 0
    for i, o in enumerate(outs):
        yi = F.interpolate(y[:, None].float(), size=o.shape[-2:], mode='nearest').squeeze(1).long()
        loss = loss + ws[i] * F.cross_entropy(o, yi)
        # auxiliary upsample then loss
        loss = loss + 0.4 * F.cross_entropy(F.interpolate(o, size=(8, 8), mode='bilinear', align_corners=True), y)
    loss.backward()
    return dict(loss=loss, g=x.grad, hg=[h.weight.grad for h in heads])



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


def misc_errors(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    out = {}
    def tryit(name, f):
        try:
            r = f()
            out[name] = r
        except Exception as e:
            out[name] = kind(e)
    pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU())
    tryit('bn1', lambda: pool(torch.randn(1, 3, 5, 5)))
    tryit('bn1eval', lambda: pool.eval()(torch.randn(1, 3, 5, 5)))
    tryit('convT_op', lambda: nn.ConvTranspose2d(2, 2, 3, stride=1, output_padding=1)(torch.randn(1, 2, 4, 4)))
    tryit('ps_bad', lambda: F.pixel_shuffle(torch.randn(1, 6, 2, 2), 2))
    tryit('pus_bad', lambda: F.pixel_unshuffle(torch.randn(1, 1, 3, 4), 2))
    tryit('ce5d', lambda: F.cross_entropy(torch.randn(2, 3, 2, 3, 4), torch.randint(0, 3, (2, 2, 3, 4)), weight=torch.tensor([1., 2, 3]), ignore_index=1))
    tryit('ce_oob', lambda: F.cross_entropy(torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), 3)))
    tryit('ce_neg', lambda: F.cross_entropy(torch.randn(2, 3, 4, 4), torch.full((2, 4, 4), -1)))
    tryit('ce_w_bad', lambda: F.cross_entropy(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), weight=torch.ones(4)))
    tryit('ce_w_double', lambda: F.cross_entropy(torch.randn(2, 3, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long), weight=torch.ones(3, dtype=torch.float64)))
    tryit('scaler', lambda: (lambda s: (s.scale(torch.tensor(2.0)), s.is_enabled()))(torch.cuda.amp.GradScaler(enabled=False)))
    tryit('scaler2', lambda: torch.amp.GradScaler('cpu', enabled=False).get_scale())
    def cudnn():
        torch.backends.cudnn.benchmark = True
        torch.backends.cudnn.deterministic = False
        return torch.backends.cudnn.benchmark
    tryit('cudnn', cudnn)
    tryit('cuda', lambda: torch.cuda.is_available())
    tryit('interp_shape_t', lambda: F.interpolate(torch.randn(1, 1, 4, 4), size=torch.Size([6, 5]), mode='bilinear', align_corners=False))
    tryit('interp_size_list', lambda: F.interpolate(torch.randn(1, 1, 4, 4), size=[6, 5], mode='bicubic', align_corners=True))
    tryit('interp_float_size', lambda: F.interpolate(torch.randn(1, 1, 4, 4), size=(6.0, 5.0)))
    tryit('interp_zero', lambda: F.interpolate(torch.randn(1, 1, 4, 4), scale_factor=0.1))
    tryit('interp_neg_sf', lambda: F.interpolate(torch.randn(1, 1, 4, 4), scale_factor=-1.0))
    tryit('argmax_kd', lambda: tuple(torch.argmax(torch.randn(2, 3, 4, 4), dim=1, keepdim=True).shape))
    tryit('bn_mom_none', lambda: (lambda bn: (bn(torch.randn(4, 2, 3, 3)), bn(torch.randn(4, 2, 3, 3)), bn.running_mean, bn.num_batches_tracked)[2:])(nn.BatchNorm2d(2, momentum=None)))
    tryit('drop2d_3d', lambda: tuple(nn.Dropout2d(0.5)(torch.ones(2, 3, 4)).shape))
    tryit('sched_state', lambda: (lambda o: optim.lr_scheduler.LambdaLR(o, lambda e: 0.5 ** e).state_dict()['base_lrs'])(optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)))
    return out



def vol_seg(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.LeakyReLU(0.01), nn.MaxPool3d(2),
                        nn.ConvTranspose3d(4, 4, 2, 2), nn.Conv3d(4, 3, 1))
    x = torch.randn(2, 1, 6, 4, 8, requires_grad=True)
    y = torch.randint(0, 3, (2, 6, 4, 8))
    o = net(x)
    ce = F.cross_entropy(o, y, weight=torch.tensor([0.2, 1., 1.5]))
    oh = F.one_hot(y, 3).permute(0, 4, 1, 2, 3).float()
    p = o.softmax(1)
    dims = (0, 2, 3, 4)
    dice = 1 - ((2 * (p * oh).sum(dims) + 1e-5) / (p.sum(dims) + oh.sum(dims) + 1e-5)).mean()
    tri = F.interpolate(o, scale_factor=(0.5, 1.5, 0.75), mode='trilinear', align_corners=False)
    tri2 = F.interpolate(o, size=(3, 5, 7), mode='trilinear', align_corners=True)
    (ce + dice + tri.sum() * 0.01 + tri2.pow(2).mean()).backward()
    return dict(ce=ce, dice=dice, tri=tri, tri2=tri2, g=x.grad, gw=[q.grad for q in net.parameters()])


def grid_modes(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    x = torch.randn(2, 3, 6, 7, requires_grad=True)
    theta = (torch.eye(2, 3)[None].repeat(2, 1, 1) + 0.3 * torch.randn(2, 2, 3)).requires_grad_()
    out = {}
    tot = 0
    for ac in (False, True):
        grid = F.affine_grid(theta, (2, 3, 5, 4), align_corners=ac)
        for mode in ('bilinear', 'nearest', 'bicubic'):
            for pad in ('zeros', 'border', 'reflection'):
                y = F.grid_sample(x, grid * 1.3, mode=mode, padding_mode=pad, align_corners=ac)
                out[f'{ac}{mode}{pad}'] = y
                tot = tot + (y * torch.arange(y.numel()).reshape(y.shape).float().cos()).sum()
    tot.backward()
    out['gx'] = x.grad; out['gt'] = theta.grad
    # 3-d
    v = torch.randn(1, 2, 4, 5, 6, requires_grad=True)
    g3 = F.affine_grid(torch.eye(3, 4)[None] * 0.9, (1, 2, 3, 3, 3), align_corners=False)
    y3 = F.grid_sample(v, g3, align_corners=False, padding_mode='reflection')
    y3.sum().backward()
    out['y3'] = y3; out['gv'] = v.grad
    return out

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


def softmax(z, axis):
    e = np.exp(z - z.max(axis, keepdims=True))
    return e / e.sum(axis, keepdims=True)


def numpy_cross_entropy(logits, target, weight=None, ignore=-100):
    """Per-pixel -w_y log softmax(z)_y over (N, C, H, W), mean weighted by w_y over the pixels not ignored."""
    logp = np.log(softmax(logits.astype(np.float64), 1))
    valid = target != ignore
    t = np.where(valid, target, 0)
    picked = np.take_along_axis(logp, t[:, None], 1)[:, 0]
    w = np.ones(logits.shape[1]) if weight is None else np.asarray(weight, np.float64)
    wy = w[t] * valid
    return -(picked * wy).sum() / wy.sum(), -picked * valid


def test_unet_trains_with_weights_and_ignore_index():
    for align in (False, True):
        ours, _ = run_both(unet, align, rtol=1e-4, atol=1e-5)
        loss, _ = numpy_cross_entropy(ours["out"], ours["y"], [1.0, 2.0, 0.5], 255)
        np.testing.assert_allclose(ours["losses"][-1], loss, rtol=1e-5)
        assert ours["out"].shape == (2, 3, 13, 11) and ours["pdt"] == "int64"
        np.testing.assert_array_equal(ours["pred"], ours["out"].argmax(1))


def test_aspp_and_pyramid_pooling():
    ours, _ = run_both(aspp_psp, rtol=1e-4, atol=1e-5)
    assert ours["a"].shape == (2, 8, 11, 9) and ours["p"].shape == (2, 12, 11, 9)
    assert ours["logits"].shape == (2, 5, 44, 36)
    bin1 = ours["p"][:, 4:6]  # the 1x1 bin interpolated back: constant over the image
    np.testing.assert_allclose(bin1, np.broadcast_to(bin1[:, :, :1, :1], bin1.shape), rtol=1e-6)
    assert np.isfinite(ours["xg"]).all() and all(np.isfinite(g).all() for g in ours["ga"] + ours["gp"])


def test_pixel_shuffle_decoder():
    ours, _ = run_both(pixel_shuffle_dec, rtol=1e-4, atol=1e-4)
    c, y = ours["c"], ours["y"]
    expected = c.reshape(2, 3, 2, 2, 5, 6).transpose(0, 1, 4, 2, 5, 3).reshape(2, 3, 10, 12)  # y[c, 2h+i, 2w+j]
    np.testing.assert_array_equal(y, expected)
    np.testing.assert_array_equal(ours["u"], c)  # unshuffle undoes shuffle


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


def test_image_and_mask_augmentations():
    ours, _ = run_both(augment)
    assert ours["shares"] is True and ours["img00"] == 100.0  # a crop is a view: the write reaches the image
    assert (ours["cmdt"], ours["smdt"], ours["pmdt"]) == ("uint8", "int64", "uint8")
    np.testing.assert_array_equal(ours["oh"].argmax(0), ours["mask2"][:, ::-1])
    assert ours["ohc"] is False and ours["ohs"] == (1, 48, 4)
    assert (ours["pm"][-2:] == 255).all() and (ours["pm"][:, -3:] == 255).all()
    assert ours["s"].shape == (1, 3, 15, 18) and ours["sm"].shape == (15, 18)


def test_flip_tta_and_sliding_windows():
    ours, _ = run_both(tta_sliding)
    np.testing.assert_allclose(ours["tta"].sum(1), 1, rtol=1e-6)
    assert ours["count"].min() >= 1 and ours["ps"] == (1, 192, 4)
    np.testing.assert_allclose(ours["folded"], ours["img"] * ours["cnt"], rtol=1e-5, atol=1e-6)


def test_mask_head_over_a_bilinear_roi_crop():
    ours, _ = run_both(roi_heads, rtol=1e-4, atol=1e-5)
    feat = ours["feat"][1]  # box 1 spans the whole map: its crop is the map resized with align_corners=True
    rows, cols = np.linspace(0, 7, 4), np.linspace(0, 9, 4)
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    r1, c1 = np.minimum(r0 + 1, 7), np.minimum(c0 + 1, 9)
    fr, fc = (rows - r0)[:, None], (cols - c0)[None, :]
    crop = (feat[:, r0][:, :, c0] * (1 - fr) * (1 - fc) + feat[:, r0][:, :, c1] * (1 - fr) * fc
            + feat[:, r1][:, :, c0] * fr * (1 - fc) + feat[:, r1][:, :, c1] * fr * fc)
    np.testing.assert_allclose(ours["r"][1], crop, rtol=1e-5, atol=1e-6)
    assert ours["bdt"] == "bool" and ours["mlog"].shape == (3, 3, 8, 8)


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


def test_interpolation_scales_and_modes():
    ours, _ = run_both(interp_scales, rtol=1e-4, atol=1e-5)
    x = ours["x"]
    rows, cols = np.floor(np.arange(17) / 1.7).astype(int), np.floor(np.arange(11) / 1.7).astype(int)
    np.testing.assert_array_equal(ours["nearest1.7"], x[:, :, rows][:, :, :, cols])  # 1/scale_factor, not in/out
    assert ours["bilinear(2.3, 0.6)"].shape == (1, 2, 23, 4) and np.isfinite(ours["g"]).all()


def test_mask_resizing_dtypes():
    ours, _ = run_both(mask_resize)
    assert ours["u8dt"] == "uint8" and ours["u8"].shape == (2, 1, 11, 13)
    assert (ours["boolerr"], ours["longerr"]) == ("NotImplementedError", "NotImplementedError")


def uint8_resize(m):
    """A data pipeline's resize of uint8 images (torchvision's tensor Resize): bilinear with antialiasing for the
    image, nearest for its mask, and a random-scale augmentation of both."""
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    img = torch.randint(0, 256, (3, 21, 30), dtype=torch.uint8)
    mask = torch.randint(0, 4, (21, 30), dtype=torch.uint8)
    out = {}
    out['down'] = F.interpolate(img[None], size=(10, 14), mode='bilinear', antialias=True, align_corners=False)[0]
    out['up'] = F.interpolate(img[None], scale_factor=1.6, mode='bilinear', align_corners=False)[0]
    out['cubic'] = F.interpolate(img[None].contiguous(memory_format=torch.channels_last), size=(25, 13),
                                 mode='bicubic', align_corners=True)
    out['cubic_stride'] = tuple(out['cubic'].stride())
    s = float(torch.empty(1).uniform_(0.5, 2.0))
    h, w = int(21 * s), int(30 * s)
    out['scaled'] = F.interpolate(img[None], size=(h, w), mode='bilinear', align_corners=False)[0]
    out['scaled_mask'] = F.interpolate(mask[None, None], size=(h, w), mode='nearest')[0, 0]
    out['dtypes'] = [D(v) for v in (out['down'], out['up'], out['cubic'], out['scaled_mask'])]
    small = torch.tensor([[[[0, 100, 200], [50, 150, 250]]]], dtype=torch.uint8)
    out['small'] = F.interpolate(small, size=(2, 5), mode='bilinear', align_corners=False)
    out['small_cubic'] = F.interpolate(small, size=(3, 5), mode='bicubic', align_corners=True)
    out['small_aa'] = F.interpolate(small, size=(1, 2), mode='bilinear', antialias=True)
    return out


def test_uint8_image_resizing():
    ours, _ = run_both(uint8_resize, rtol=0, atol=0)
    assert ours["dtypes"] == ["uint8"] * 4 and ours["cubic_stride"] == (975, 1, 39, 3)
    np.testing.assert_array_equal(ours["small"], [[[[0, 40, 100, 160, 200], [50, 90, 150, 210, 250]]]])
    np.testing.assert_array_equal(ours["small_cubic"], [[[[0, 41, 100, 159, 200], [25, 66, 125, 184, 225],
                                                          [50, 91, 150, 209, 250]]]])
    np.testing.assert_array_equal(ours["small_aa"], [[[[63, 188]]]])
    assert ours["down"].shape == (3, 10, 14) and set(np.unique(ours["scaled_mask"])) <= {0, 1, 2, 3}


def test_segnet_unpooling():
    ours, _ = run_both(segnet, rtol=1e-4, atol=1e-5)
    assert ours["idt"] == "int64"
    u = ours["u"].reshape(2, 4, -1)
    np.testing.assert_array_equal(np.take_along_axis(u, ours["idx"].reshape(2, 4, -1), 2), ours["p"].reshape(2, 4, -1))
    assert (ours["u"] != 0).sum() == ours["p"].size


def test_transposed_convolutions_with_output_size():
    ours, _ = run_both(convT, rtol=1e-4, atol=1e-5)
    bias = (ours["a"] - ours["d"])[0, :, :1, :1]  # (d is a without its bias)
    np.testing.assert_allclose(ours["a"] - ours["d"], np.broadcast_to(bias, ours["a"].shape), atol=1e-6)
    assert ours["b"].shape == (2, 3, 10, 12) and ours["c"].shape == (2, 3, 9, 11) and ours["err"] == "ValueError"


def test_one_hot_and_scatter():
    ours, _ = run_both(onehot_scatter)
    np.testing.assert_array_equal(ours["oh"], ours["ohf"])
    np.testing.assert_array_equal(ours["oh2"], ours["ohf"])
    assert ours["ohfs"] == (120, 1, 24, 4) and ours["ohfdt"] == "int64"
    assert ours["errs"] == ["RuntimeError", "RuntimeError", "RuntimeError"] and ours["small"] == "RuntimeError"
    assert ours["empty"] == (0, 3) and ours["empty2"] == "RuntimeError"


def test_mask_dtype_rules():
    with pytest.warns(UserWarning, match="uint8"):
        ours, _ = run_both(mask_dtypes)
    assert ours["mf_u8"] == ours["set_u8"] == ours["neg_b"] == ours["sub_b"] == "RuntimeError"
    assert (ours["sum_bdt"], ours["sum_u8dt"], ours["u8_divdt"], ours["u8_negdt"], ours["b_cumsumdt"]) == (
        "int64", "int64", "float32", "uint8", "int64")
    np.testing.assert_array_equal(ours["idx_u8"], ours["idx_b"])


def test_instances_boxes_and_components():
    ours, _ = run_both(instance)
    inst = ours["inst"]
    for mask, i, box in zip(ours["masks"], ours["ids"], ours["boxes"]):
        ys, xs = np.nonzero(inst == i)
        np.testing.assert_array_equal(mask, inst == i)
        assert list(box) == [xs.min(), ys.min(), xs.max(), ys.max()]
    np.testing.assert_array_equal(ours["areas"], ours["counts"][1:])
    np.testing.assert_allclose(np.diag(ours["miou"]), 1)


def test_norms_dilations_and_heads():
    ours, _ = run_both(norms_heads, rtol=1e-4, atol=1e-5)
    assert all(np.isfinite(ours["losses"])) and ours["am"].shape == (2, 4, 3, 3) and ours["ap"].shape == (2, 4, 5, 5)


def test_soft_targets_and_errors():
    ours, _ = run_both(soft_targets, rtol=1e-4, atol=1e-5)
    logp = np.log(softmax(ours["logits"].astype(np.float64), 1))
    np.testing.assert_allclose(ours["a"], -(logp * ours["soft"]).sum(1).mean(), rtol=1e-5)
    assert math.isnan(ours["d"]) and ours["e"] == 0
    assert ours["errs"] == ["RuntimeError", "RuntimeError", "RuntimeError", "IndexError"]  # (uint8: a Byte target)


def test_memory_sharing_of_masks():
    ours, _ = run_both(sharing)
    assert (ours["from_np"], ours["as_t"], ours["as_t_long"], ours["numpy_shares"], ours["view"]) == (9, 7, 2, 42, 11)
    assert ours["long_same"] and ours["to_same"] and ours["type_same"] and ours["bool_same"]
    assert not ours["long_new"] and not ours["to_copy"] and ours["reshape_shares"] and not ours["reshape_t_shares"]
    assert ours["perm_stride"] == (1, 12, 3) and ours["tf_stride"] == (1, 12, 3) and ours["expand_stride"] == (0, 6, 1)


def test_collating_uint8_masks():
    ours, _ = run_both(collate)
    assert [batch[0].shape for batch in ours] == [(4, 3, 5, 4), (2, 3, 5, 4)]
    assert all(batch[2] == "int64" and batch[5] == "uint8" for batch in ours)
    assert sorted(sum((list(batch[3]) for batch in ours), [])) == [f"img{i}" for i in range(6)]


def test_gaussian_weighted_sliding_window():
    ours, _ = run_both(gaussian_sliding)
    g = ours["g"]
    assert g.max() == 1 and ours["inf"] is False and ours["cnt"].min() > 0
    np.testing.assert_allclose(g, g[::-1, ::-1], rtol=1e-6)


def test_deep_supervision():
    ours, _ = run_both(deep_supervision, rtol=1e-4, atol=1e-5)
    assert np.isfinite(ours["loss"]) and all(np.abs(g).sum() > 0 for g in ours["hg"])


def test_histogram_metrics():
    ours, _ = run_both(hist_metrics)
    gt, pred = ours["gt"], ours["pred"]
    np.testing.assert_array_equal(ours["ai"], np.bincount(pred[pred == gt], minlength=4))
    assert ours["wbdt"] == "float32" and ours["cntdt"] == "int64"
    np.testing.assert_array_equal(ours["per_img"].sum((1, 2)), [25, 25, 25])
    assert math.isnan(ours["nan"]) and list(ours["argsort"]) == [0, 2, 1]


@pytest.mark.filterwarnings("ignore:.*GradScaler:FutureWarning", "ignore:dropout2d:UserWarning")  # (both warn)
def test_training_details_and_errors():
    ours, _ = run_both(misc_errors, rtol=1e-4, atol=1e-5)
    assert ours["bn1"] == "ValueError" and ours["bn1eval"].shape == (1, 4, 1, 1)
    assert ours["ce_oob"] == ours["ce_neg"] == "IndexError" and ours["ce_w_double"] == "RuntimeError"
    assert ours["cudnn"] is True and ours["argmax_kd"] == (2, 1, 4, 4)


def test_volumetric_segmentation():
    ours, _ = run_both(vol_seg, rtol=1e-4, atol=1e-5)
    assert ours["tri"].shape == (2, 3, 3, 6, 6) and ours["tri2"].shape == (2, 3, 3, 5, 7)
    assert 0 < ours["dice"] < 1 and np.isfinite(ours["g"]).all()


def test_grid_sampling_modes_for_spatial_transformers():
    ours, _ = run_both(grid_modes, rtol=1e-4, atol=1e-5)
    assert ours["gx"].shape == (2, 3, 6, 7) and ours["gt"].shape == (2, 2, 3) and ours["y3"].shape == (1, 2, 3, 3, 3)
    assert all(ours[f"{ac}{mode}{pad}"].shape == (2, 3, 5, 4) for ac in (False, True)
               for mode in ("bilinear", "nearest", "bicubic") for pad in ("zeros", "border", "reflection"))
    assert np.isfinite(ours["gt"]).all() and np.abs(ours["gv"]).sum() > 0


def test_crf_like_mean_field_by_unfold():
    ours, _ = run_both(crf_like, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["q"].sum(1), 1, rtol=1e-5)
    assert np.isfinite(ours["g"]).all()
