# ruff: noqa: E501, E702, F841  (the programs are kept as their authors write them)
"""Semantic and instance segmentation programs, run as tests/probe25_segmentation_common.py says. Networks: a small
U-Net (max pooling, ConvTranspose2d or align_corners=True upsampling, skip concatenation after F.pad) trained by Adam
on cross_entropy with class weights and ignore_index=255; ASPP (dilated convs, an image-pooling branch interpolated
back) and a pyramid pooling module (adaptive_avg_pool2d to 1/2/3/6); a pixel-shuffle decoder; SegNet's max_unpool2d;
transposed convolutions with an output size; norms, dilations and heads; deep supervision; 3-d segmentation with
trilinear interpolation; training details and their errors."""

import numpy as np
import pytest

from .probe25_segmentation_common import D, kind, numpy_cross_entropy
from .pytorch_programs import run_both


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


def test_norms_dilations_and_heads():
    ours, _ = run_both(norms_heads, rtol=1e-4, atol=1e-5)
    assert all(np.isfinite(ours["losses"])) and ours["am"].shape == (2, 4, 3, 3) and ours["ap"].shape == (2, 4, 5, 5)


def test_deep_supervision():
    ours, _ = run_both(deep_supervision, rtol=1e-4, atol=1e-5)
    assert np.isfinite(ours["loss"]) and all(np.abs(g).sum() > 0 for g in ours["hg"])


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
