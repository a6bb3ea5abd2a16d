# ruff: noqa: E501, E702, F841  (the programs are kept as their authors write them)
"""Semantic and instance segmentation programs, run as tests/probe25_segmentation_common.py says. Masks, data and
inference: tensor augmentations of an image and its mask together; flip TTA; sliding-window inference with count
maps, Gaussian importance maps and fold/unfold; a Mask R-CNN-style mask head over a bilinear RoI crop by
affine_grid/grid_sample (and grid_sample's modes and paddings, 2-d and 3-d); interpolation scales and modes; masks
resized, one-hot and scattered, their dtype rules, instances, boxes and components; uint8 image resizing (bilinear,
bicubic, antialiased) as torchvision's tensor transforms do it; DataLoader collation of uint8 masks; from_numpy
sharing."""

import numpy as np
import pytest

from .probe25_segmentation_common import D, kind
from .pytorch_programs import run_both


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


def test_grid_sampling_modes_for_spatial_transformers():
    ours, _ = run_both(grid_modes, rtol=1e-4, atol=1e-5)
    assert ours["gx"].shape == (2, 3, 6, 7) and ours["gt"].shape == (2, 2, 3) and ours["y3"].shape == (1, 2, 3, 3, 3)
    assert all(ours[f"{ac}{mode}{pad}"].shape == (2, 3, 5, 4) for ac in (False, True)
               for mode in ("bilinear", "nearest", "bicubic") for pad in ("zeros", "border", "reflection"))
    assert np.isfinite(ours["gt"]).all() and np.abs(ours["gv"]).sum() > 0
