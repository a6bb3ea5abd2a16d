# ruff: noqa: B007, E501, E701, E702, E731, F841  (the programs are kept as their authors write them)
"""Image synthesis by optimisation and image-to-image networks, run as tests/probe25_synthesis_common.py says.
Feature visualisation and attacks: DeepDream (a forward hook, jitter by ``torch.roll``, octaves by ``interpolate``,
gradient normalisation, clamping by tensor bounds); Fourier-parametrised images with decorrelated colours
(``torch.fft.irfft2``, ``linalg.norm(..., axis=0)``); jitter by ``grid_sample`` and padding; hooks and gradient
normalisation; guided backpropagation by backward hooks, Lucid's redirected ReLU as an ``autograd.Function``;
adversarial patches, FGSM/PGD and feature inversion."""

import copy
import warnings

import numpy as np

from .probe25_synthesis_common import close
from .pytorch_programs import run_both


def deepdream(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    acts = {}
    def hook(module, inp, out):
        acts['x'] = out
    h = net[2].register_forward_hook(hook)
    base = torch.rand(1, 3, 12, 12)
    mean = torch.tensor([0.485, 0.456, 0.406]).reshape(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).reshape(1, 3, 1, 1)
    octaves = []
    img = base
    for i in range(2):
        octaves.append(img)
        img = F.interpolate(img, scale_factor=1 / 1.4, mode='bilinear', align_corners=False, recompute_scale_factor=False)
    detail = torch.zeros_like(octaves[-1])
    out_hist = []
    for oi, oct_base in enumerate(octaves[::-1]):
        if oi > 0:
            detail = F.interpolate(detail, size=oct_base.shape[-2:], mode='bilinear', align_corners=False)
        x = (oct_base + detail).clone().detach().requires_grad_(True)
        for it in range(3):
            ox, oy = np.random.RandomState(it + oi).randint(-2, 3, 2)
            xj = torch.roll(x, shifts=(int(ox), int(oy)), dims=(2, 3))
            xj = xj.detach().requires_grad_(True)
            net((xj - mean) / std)
            loss = acts['x'].norm()
            loss.backward()
            g = xj.grad
            g = g / (g.abs().mean() + 1e-8)
            with torch.no_grad():
                xj += 0.01 * g
                xj.clamp_(-mean / std, (1 - mean) / std)  # tensor bounds, broadcast
                x = torch.roll(xj, shifts=(-int(ox), -int(oy)), dims=(2, 3)).detach()
            out_hist.append(loss.item())
        detail = x - oct_base
    h.remove()
    return dict(out=x, hist=out_hist, nhooks=len(net[2]._forward_hooks))


def fourier(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(3)
    h, w = 8, 10
    def rfft2d_freqs(h, w):
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.fftfreq(w)[: w // 2 + 1]
        return np.sqrt(fx * fx + fy * fy)
    freqs = rfft2d_freqs(h, w)
    init = torch.randn(2, 1, 3, *freqs.shape) * 0.01
    spectrum = nn.Parameter(init)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h)) ** 1.0
    scale = torch.tensor(scale).float()[None, None]
    color_corr = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
    max_norm = torch.max(torch.linalg.norm(color_corr, axis=0))
    def image():
        sc = torch.complex(spectrum[0], spectrum[1]) * scale
        img = torch.fft.irfft2(sc, s=(h, w), norm='ortho')
        img = img[:, :3, :h, :w] / 4.0
        flat = img.permute(0, 2, 3, 1)
        flat = torch.matmul(flat, (color_corr / max_norm).T)
        img = flat.permute(0, 3, 1, 2)
        return torch.sigmoid(img)
    opt = torch.optim.Adam([spectrum], lr=0.05)
    conv = nn.Conv2d(3, 4, 3)
    for p in conv.parameters(): p.requires_grad_(False)
    ls = []
    for _ in range(4):
        opt.zero_grad()
        im = image()
        loss = -conv(im)[:, 1].mean()
        loss.backward(); opt.step(); ls.append(loss.item())
    sp = torch.fft.rfft2(im)
    return dict(ls=ls, im=im, g=spectrum.grad, dt=sp.dtype == torch.complex64, sp_shape=tuple(sp.shape))


def adv_patch(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(8)
    clf = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5))
    clf.eval()
    for p in clf.parameters(): p.requires_grad = False
    patch = torch.zeros(3, 4, 4, requires_grad=True)
    opt = optim.SGD([patch], lr=1.0, momentum=0.9)
    imgs = torch.rand(4, 3, 10, 10)
    target = torch.full((4,), 3, dtype=torch.long)
    hist = []
    for it in range(3):
        p = (torch.tanh(patch) + 1) / 2
        padded = F.pad(p, (2, 4, 3, 3))
        mask = F.pad(torch.ones(3, 4, 4), (2, 4, 3, 3))
        x = imgs * (1 - mask) + padded * mask
        logits = clf(x)
        loss = F.cross_entropy(logits, target)
        opt.zero_grad(); loss.backward(); opt.step()
        hist.append(loss.item())
    # FGSM / PGD
    x0 = imgs.clone().requires_grad_(True)
    l = F.cross_entropy(clf(x0), torch.tensor([0, 1, 2, 3]))
    g, = torch.autograd.grad(l, x0)
    adv = (x0 + 0.03 * g.sign()).clamp(0, 1).detach()
    delta = torch.zeros_like(imgs).uniform_(-0.03, 0.03).requires_grad_()
    for _ in range(2):
        l = F.cross_entropy(clf(imgs + delta), torch.tensor([0, 1, 2, 3]))
        l.backward()
        delta.data = (delta + 0.01 * delta.grad.detach().sign()).clamp(-0.03, 0.03)
        delta.grad.zero_()
    return dict(hist=hist, patch=patch, adv=adv, delta=delta, pg=patch.grad)


def inversion(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(9)
    feat = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(6, 6, 3, padding=1))
    for p in feat.parameters(): p.requires_grad_(False)
    target = feat(torch.rand(1, 3, 8, 8))
    x = torch.randn(1, 3, 8, 8).mul_(0.1).requires_grad_()
    opt = optim.Adam([x], lr=0.1)
    sched = optim.lr_scheduler.StepLR(opt, 2, 0.5)
    alpha_norm = lambda x, a=6: x.abs().pow(a).sum()
    tv = lambda x, b=2: ((x[:, :, 1:, :-1] - x[:, :, :-1, :-1]) ** 2 + (x[:, :, :-1, 1:] - x[:, :, :-1, :-1]) ** 2).pow(b / 2).sum()
    hist = []
    for i in range(4):
        opt.zero_grad()
        rep = feat(x)
        loss = (rep - target).norm() / target.norm() + 1e-5 * alpha_norm(x) + 1e-4 * tv(x)
        loss.backward(); opt.step(); sched.step(); hist.append(loss.item())
    # texture synthesis: gram with einsum
    def gram(f):
        b, c, h, w = f.shape
        return torch.einsum('bchw,bdhw->bcd', f, f) / (h * w)
    tex = torch.rand(1, 3, 8, 8)
    y = torch.rand(1, 3, 8, 8, requires_grad=True)
    ltex = sum(F.mse_loss(gram(l(y)), gram(l(tex)), reduction='sum') for l in [feat[:2], feat])
    ltex.backward()
    return dict(hist=hist, x=x, gy=y.grad, lr=sched.get_last_lr())


def grid_jitter(m):
    torch, F = m.torch, m.F
    torch.manual_seed(4)
    x = torch.rand(2, 3, 8, 8, requires_grad=True)
    ang = torch.tensor([0.3, -0.2]); sc = torch.tensor([1.1, 0.9])
    theta = torch.zeros(2, 2, 3)
    theta[:, 0, 0] = torch.cos(ang) * sc; theta[:, 0, 1] = -torch.sin(ang) * sc
    theta[:, 1, 0] = torch.sin(ang) * sc; theta[:, 1, 1] = torch.cos(ang) * sc
    grid = F.affine_grid(theta, x.size(), align_corners=False)
    y = F.grid_sample(x, grid, align_corners=False, padding_mode='reflection')
    y2 = F.grid_sample(x, grid, mode='nearest', padding_mode='border', align_corners=True)
    (y.pow(2).sum() + y2.sum()).backward()
    # gaussian blur via depthwise conv
    k = torch.tensor([1., 4., 6., 4., 1.]); k = k[:, None] * k[None, :]; k = k / k.sum()
    k = k.expand(3, 1, 5, 5)
    b = F.conv2d(F.pad(x, (2, 2, 2, 2), mode='reflect'), k, groups=3)
    c = F.pad(x, (1, 1, 1, 1), mode='circular'); r = F.pad(x, (1, 2, 0, 1), mode='replicate')
    return dict(y=y, y2=y2, g=x.grad, b=b, c=c, r=r, grid=grid, x=x)


def hooks_grad(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    feats = []
    h1 = net[1].register_forward_hook(lambda mod, i, o: feats.append(o))
    grads = []
    h2 = net[0].register_full_backward_hook(lambda mod, gi, go: grads.append((gi[0], go[0])))
    pre = net[2].register_forward_pre_hook(lambda mod, inp: (inp[0] * 2,))
    x = torch.rand(1, 3, 7, 7, requires_grad=True)
    x.register_hook(lambda g: g / (g.std() + 1e-8))
    out = net(x)
    out.mean().backward()
    h1.remove(); h2.remove(); pre.remove()
    out2 = net(x)
    return dict(out=out, f=feats[0], gi_none=grads[0][0] is None, go=grads[0][1], gx=x.grad, out2=out2, nf=len(feats))


def guided(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    hs = []
    for mod in net.modules():
        if isinstance(mod, nn.ReLU):
            hs.append(mod.register_full_backward_hook(lambda mod, gi, go: (torch.clamp(gi[0], min=0.0),)))
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    out = net(x)
    out[0, 1].backward()
    g1 = x.grad.clone()
    for h in hs: h.remove()
    # old-style backward hook
    x.grad = None
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        net[3] = nn.ReLU(); h = net[3].register_backward_hook(lambda mod, gi, go: (gi[0] * 0.5,))
    net(x)[0, 2].backward()
    h.remove()
    g2 = x.grad.clone()
    # forward hook replacing output, with_kwargs, prepend
    order = []
    net[5].register_forward_hook(lambda mod, i, o: (order.append('a'), o * 2)[1])
    net[5].register_forward_hook(lambda mod, i, o: order.append('b'), prepend=True)
    net[5].register_forward_pre_hook(lambda mod, args, kwargs: (order.append('pre'), None)[1], with_kwargs=True)
    y = net(x)
    sub = net.get_submodule('2')
    named = dict(net.named_modules())
    cp = copy.deepcopy(net)
    y2 = cp(x)
    return dict(g1=g1, g2=g2, y=y, order=order, x=x, sub=type(sub).__name__, names=list(named.keys()), y2=y2)


def redirected(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(1)
    class RedirectedReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input_tensor):
            ctx.save_for_backward(input_tensor)
            return input_tensor.clamp(min=0)
        @staticmethod
        def backward(ctx, grad_output):
            input_tensor, = ctx.saved_tensors
            relu_grad = grad_output.clone()
            relu_grad[input_tensor < 0] = 0
            if torch.all(relu_grad == 0):
                return grad_output * (grad_output < 0).float() * 0 + grad_output * (input_tensor < 0).float() * (grad_output < 0).float()
            return relu_grad
    class RedirectedReluLayer(nn.Module):
        def forward(self, tensor):
            return RedirectedReLU.apply(tensor)
    x = torch.randn(2, 5, requires_grad=True)
    y = RedirectedReluLayer()(x - 3)
    (y * (torch.arange(10.).view(2, 5) - 5)).sum().backward()
    g1 = x.grad.clone(); x.grad = None
    y = RedirectedReluLayer()(x)
    (y * torch.arange(10.).view(2, 5)).sum().backward()
    return dict(g1=g1, g2=x.grad, name=type(y.grad_fn).__name__, x=x)


def test_deepdream_octaves_jitter():
    ours, _ = run_both(deepdream, rtol=1e-4, atol=1e-5)
    close(ours["hist"], [4.595663, 5.100882, 5.120187, 9.878288, 10.649216, 11.010086], rtol=1e-4)
    assert ours["nhooks"] == 0  # the hook's handle removed it
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    lo, hi = (-mean / std)[None, :, None, None], ((1 - mean) / std)[None, :, None, None]
    assert (ours["out"] >= lo - 1e-6).all() and (ours["out"] <= hi + 1e-6).all()  # clamp_ by tensor bounds


def test_fourier_parametrised_image():
    ours, _ = run_both(fourier, rtol=1e-4, atol=1e-5)
    close(ours["ls"], [-0.0530852, -0.0572844, -0.0614769, -0.0656564], rtol=1e-4)
    assert ours["dt"] and ours["sp_shape"] == (1, 3, 8, 6)
    assert ((ours["im"] > 0) & (ours["im"] < 1)).all()


def test_adversarial_patch_and_pgd():
    ours, _ = run_both(adv_patch, rtol=1e-4, atol=1e-6)
    assert ours["hist"][-1] < ours["hist"][0]
    assert np.abs(ours["delta"]).max() <= 0.03 + 1e-7
    assert ours["adv"].min() >= 0 and ours["adv"].max() <= 1


def test_feature_inversion_and_texture():
    ours, _ = run_both(inversion, rtol=1e-4, atol=1e-6)
    close(ours["hist"], [0.8922942, 0.7565635, 0.6261178, 0.5635614], rtol=1e-4)
    close(ours["lr"], [0.025], rtol=1e-12)


def test_jitter_by_grid_sample_and_padding():
    ours, _ = run_both(grid_jitter, rtol=1e-4, atol=1e-5)
    x = ours["x"]
    close(ours["c"], np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="wrap"), 0, 0)
    close(ours["r"], np.pad(x, ((0, 0), (0, 0), (0, 1), (1, 2)), mode="edge"), 0, 0)
    close(ours["b"].mean(), x.mean(), rtol=0.1)  # a normalised blur keeps the image's level
    assert ours["grid"].shape == (2, 8, 8, 2)


def test_hooks_and_gradient_normalisation():
    ours, _ = run_both(hooks_grad, rtol=1e-4, atol=1e-6)
    assert ours["nf"] == 1 and not ours["gi_none"]
    g = ours["gx"]
    close(g.std(ddof=1), 1.0, rtol=1e-4)  # the tensor hook divided the input's gradient by its std
    assert (ours["f"] >= 0).all()


def test_guided_backprop_and_module_hooks():
    ours, _ = run_both(guided, rtol=1e-4, atol=1e-6)
    assert ours["order"] == ["pre", "b", "a"] * 2  # prepend puts b first; a's returned output replaces it
    assert ours["sub"] == "Conv2d" and ours["names"] == ["", "0", "1", "2", "3", "4", "5"]
    close(ours["y2"], ours["y"], 0, 0)  # a deep copy keeps the hooks


def test_custom_function_redirected_relu():
    ours, _ = run_both(redirected)
    x, go = ours["x"], np.arange(10.).reshape(2, 5) - 5
    relu_grad = np.where(x - 3 < 0, 0, go)
    expected = relu_grad if relu_grad.any() else go * (x - 3 < 0) * (go < 0)
    close(ours["g1"], expected, 0, 0)
    close(ours["g2"], np.where(x < 0, 0, np.arange(10.).reshape(2, 5)), 0, 0)
    assert ours["name"] == "RedirectedReLUBackward"
