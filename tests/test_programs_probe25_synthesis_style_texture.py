# ruff: noqa: B007, E501, E702, F841, UP032  (the programs are kept as their authors write them)
"""Image synthesis by optimisation and image-to-image networks, run as tests/probe25_synthesis_common.py says. Style
and texture by optimisation: Gatys style transfer (a random-weight conv stack sliced into an ``nn.Sequential`` with
content and style losses recording in forward, Gram matrices by ``mm`` and ``bmm``, ``optim.LBFGS`` with a closure
and ``clamp_`` under ``no_grad``, the strong-Wolfe line search), total variation; texture synthesis by sliced
Wasserstein, patch matching with ``unfold``/``fold``, a Laplacian pyramid; WCT whitening by ``svd`` (and
differentiated through ``eigh``/``svd``)."""

import warnings

import numpy as np

from .probe25_synthesis_common import close, gram_bmm
from .pytorch_programs import run_both


def style_transfer(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=False), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).eval()
    for p in cnn.parameters():
        p.requires_grad_(False)
    content = torch.rand(1, 3, 16, 16); style = torch.rand(1, 3, 16, 16)
    def gram_matrix(input):
        a, b, c, d = input.size()
        features = input.view(a * b, c * d)
        G = torch.mm(features, features.t())
        return G.div(a * b * c * d)
    class ContentLoss(nn.Module):
        def __init__(self, target):
            super().__init__(); self.target = target.detach()
        def forward(self, input):
            self.loss = F.mse_loss(input, self.target); return input
    class StyleLoss(nn.Module):
        def __init__(self, target_feature):
            super().__init__(); self.target = gram_matrix(target_feature).detach()
        def forward(self, input):
            G = gram_matrix(input); self.loss = F.mse_loss(G, self.target); return input
    class Normalization(nn.Module):
        def __init__(self, mean, std):
            super().__init__()
            self.mean = torch.tensor(mean).view(-1, 1, 1); self.std = torch.tensor(std).view(-1, 1, 1)
        def forward(self, img):
            return (img - self.mean) / self.std
    norm = Normalization([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    model = nn.Sequential(norm)
    content_losses, style_losses = [], []
    i = 0
    for layer in cnn.children():
        if isinstance(layer, nn.Conv2d):
            i += 1; name = 'conv_{}'.format(i)
        elif isinstance(layer, nn.ReLU):
            name = 'relu_{}'.format(i); layer = nn.ReLU(inplace=False)
        elif isinstance(layer, nn.MaxPool2d):
            name = 'pool_{}'.format(i)
        model.add_module(name, layer)
        if name == 'conv_3':
            target = model(content).detach(); cl = ContentLoss(target)
            model.add_module("content_loss_{}".format(i), cl); content_losses.append(cl)
        if name in ('conv_1', 'conv_2', 'conv_3', 'conv_4'):
            target_feature = model(style).detach(); sl = StyleLoss(target_feature)
            model.add_module("style_loss_{}".format(i), sl); style_losses.append(sl)
    for i in range(len(model) - 1, -1, -1):
        if isinstance(model[i], (ContentLoss, StyleLoss)):
            break
    model = model[:(i + 1)]
    input_img = content.clone()
    input_img.requires_grad_(True)
    model.requires_grad_(False)
    optimizer = optim.LBFGS([input_img])
    run = [0]; losses = []
    while run[0] <= 6:
        def closure():
            with torch.no_grad():
                input_img.clamp_(0, 1)
            optimizer.zero_grad()
            model(input_img)
            style_score = sum(sl.loss for sl in style_losses) * 1000
            content_score = sum(cl.loss for cl in content_losses)
            loss = style_score + content_score
            loss.backward()
            run[0] += 1
            losses.append(loss.item())
            return style_score + content_score
        optimizer.step(closure)
    with torch.no_grad():
        input_img.clamp_(0, 1)
    return dict(losses=losses[:8], img=input_img, names=[n for n, _ in model.named_children()], typ=str(type(model).__name__))


def lbfgs_wolfe(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)
    x = torch.rand(1, 3, 6, 6, requires_grad=True)
    w = torch.randn(4, 3, 3, 3)
    tgt = torch.randn(1, 4, 4, 4)
    opt = optim.LBFGS([x], lr=1, max_iter=5, history_size=3, line_search_fn='strong_wolfe')
    calls = [0]
    def closure():
        opt.zero_grad()
        l = F.mse_loss(F.conv2d(x, w), tgt) + 0.1 * (x[..., 1:] - x[..., :-1]).abs().sum()
        l.backward(); calls[0] += 1
        return l
    ls = [opt.step(closure).item() for _ in range(2)]
    st = opt.state_dict()['state'][0]
    return dict(ls=ls, x=x, calls=calls[0], n_iter=st['n_iter'], func_evals=st['func_evals'], keys=sorted(st.keys()))


def wct(m):
    torch = m.torch
    torch.manual_seed(0)
    def whiten_and_color(cF, sF):
        cFSize = cF.size()
        c_mean = torch.mean(cF, 1).unsqueeze(1).expand_as(cF)
        cF = cF - c_mean
        contentConv = torch.mm(cF, cF.t()).div(cFSize[1] - 1) + torch.eye(cFSize[0]).double()
        c_u, c_e, c_v = torch.svd(contentConv, some=False)
        k_c = cFSize[0]
        for i in range(cFSize[0]):
            if c_e[i] < 0.00001:
                k_c = i; break
        sFSize = sF.size()
        s_mean = torch.mean(sF, 1)
        sF = sF - s_mean.unsqueeze(1).expand_as(sF)
        styleConv = torch.mm(sF, sF.t()).div(sFSize[1] - 1)
        s_u, s_e, s_v = torch.svd(styleConv, some=False)
        k_s = sFSize[0]
        for i in range(sFSize[0]):
            if s_e[i] < 0.00001:
                k_s = i; break
        c_d = (c_e[0:k_c]).pow(-0.5)
        step1 = torch.mm(c_v[:, 0:k_c], torch.diag(c_d))
        step2 = torch.mm(step1, (c_v[:, 0:k_c].t()))
        whiten_cF = torch.mm(step2, cF)
        s_d = (s_e[0:k_s]).pow(0.5)
        targetFeature = torch.mm(torch.mm(torch.mm(s_v[:, 0:k_s], torch.diag(s_d)), (s_v[:, 0:k_s].t())), whiten_cF)
        targetFeature = targetFeature + s_mean.unsqueeze(1).expand_as(targetFeature)
        return targetFeature
    cF = torch.randn(4, 30).double(); sF = (torch.randn(4, 25) * 2 + 1).double()
    out = whiten_and_color(cF, sF)
    # eigh variant
    cov = torch.cov(sF)
    evals, evecs = torch.linalg.eigh(cov)
    sq = evecs @ torch.diag_embed(evals.clamp_min(0).sqrt()) @ evecs.T
    return dict(out=out, cov=cov, sq=sq, dt=out.dtype == torch.float64, sF=sF)


def swd(m):
    torch, F = m.torch, m.F
    torch.manual_seed(1)
    def sliced_wasserstein(f1, f2, n_proj=8):
        c = f1.shape[1]
        proj = torch.randn(c, n_proj)
        proj = proj / torch.sqrt(torch.sum(proj ** 2, dim=0, keepdim=True))
        p1 = torch.einsum('bcn,cp->bpn', f1.flatten(2), proj)
        p2 = torch.einsum('bcn,cp->bpn', f2.flatten(2), proj)
        p1s, _ = torch.sort(p1, dim=-1); p2s = torch.sort(p2, dim=-1).values
        return F.mse_loss(p1s, p2s)
    x = torch.rand(1, 4, 5, 5, requires_grad=True); y = torch.rand(1, 4, 5, 5)
    l = sliced_wasserstein(x, y); l.backward()
    # histogram matching-ish
    q = torch.quantile(x.detach().flatten(), torch.tensor([0.1, 0.5, 0.9]))
    hc = torch.histc(y, bins=5, min=0, max=1)
    ss = torch.searchsorted(torch.sort(y.flatten()).values, x.detach().flatten()[:6])
    return dict(l=l, g=x.grad, q=q, hc=hc, ss=ss, x=x, y=y)


def mrf(m):
    torch, F = m.torch, m.F
    torch.manual_seed(2)
    x = torch.rand(1, 3, 6, 6, requires_grad=True)
    s = torch.rand(1, 3, 6, 6)
    k = 3
    sp = F.unfold(s, kernel_size=k, stride=1)  # (1, 27, L)
    sp = sp.squeeze(0).t().reshape(-1, 3, k, k)
    norms = sp.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    resp = F.conv2d(x, sp / norms)
    best = resp.argmax(dim=1)
    xp = F.unfold(x, k).squeeze(0).t()
    tgt = sp.flatten(1)[best.flatten()]
    loss = F.mse_loss(xp, tgt, reduction='sum')
    loss.backward()
    folded = F.fold(F.unfold(x, 2, stride=2), (6, 6), 2, stride=2)
    cs = F.cosine_similarity(xp, tgt, dim=1)
    d = torch.cdist(xp.detach(), sp.flatten(1))
    with warnings.catch_warnings():  # (PyTorch warns that an even kernel pads by a copy)
        warnings.simplefilter("ignore")
        pad_same = F.conv2d(x, torch.ones(2, 3, 2, 2), padding='same')
    x.grad = None
    ps = F.conv2d(x, torch.ones(2, 3, 4, 3), padding='same', dilation=1)
    ps.sum().backward()
    return dict(loss=loss, best=best, folded=folded, cs=cs, d=d, pad_same=pad_same, ps=ps, g=x.grad, x=x, s=s)


def lapstyle(m):
    torch, F = m.torch, m.F
    torch.manual_seed(3)
    def gauss_kernel(channels=3):
        k = torch.tensor([[1., 4., 6., 4., 1], [4., 16., 24., 16., 4.], [6., 24., 36., 24., 6.], [4., 16., 24., 16., 4.], [1., 4., 6., 4., 1.]]) / 256.
        return k.repeat(channels, 1, 1, 1)
    def downsample(x): return x[:, :, ::2, ::2]
    def upsample(x):
        cc = torch.cat([x, torch.zeros(x.shape[0], x.shape[1], x.shape[2], x.shape[3], device=x.device)], dim=3)
        cc = cc.view(x.shape[0], x.shape[1], x.shape[2] * 2, x.shape[3])
        cc = cc.permute(0, 1, 3, 2)
        cc = torch.cat([cc, torch.zeros(x.shape[0], x.shape[1], x.shape[3], x.shape[2] * 2, device=x.device)], dim=3)
        cc = cc.view(x.shape[0], x.shape[1], x.shape[3] * 2, x.shape[2] * 2)
        x_up = cc.permute(0, 1, 3, 2)
        return conv_gauss(x_up, 4 * gauss_kernel(channels=x.shape[1]))
    def conv_gauss(img, kernel):
        img = F.pad(img, (2, 2, 2, 2), mode='reflect')
        return F.conv2d(img, kernel, groups=img.shape[1])
    def laplacian_pyramid(img, kernel, max_levels=2):
        current = img; pyr = []
        for level in range(max_levels):
            filtered = conv_gauss(current, kernel)
            down = downsample(filtered)
            up = upsample(down)
            pyr.append(current - up); current = down
        pyr.append(current)
        return pyr
    x = torch.rand(1, 3, 8, 8, requires_grad=True)
    pyr = laplacian_pyramid(x, gauss_kernel())
    loss = sum(p.abs().mean() for p in pyr)
    loss.backward()
    return dict(pyr=pyr, g=x.grad)


def wct_grad(m):
    torch = m.torch
    torch.manual_seed(3)
    cF = torch.randn(4, 30, dtype=torch.float64, requires_grad=True)
    sF = torch.randn(4, 25, dtype=torch.float64) * 2 + 1
    def cov(f):
        fc = f - f.mean(1, keepdim=True)
        return fc @ fc.T / (f.shape[1] - 1), fc
    Cc, fc = cov(cF); Cs, _ = cov(sF)
    ec, Vc = torch.linalg.eigh(Cc + 1e-5 * torch.eye(4, dtype=torch.float64))
    es, Vs = torch.linalg.eigh(Cs)
    white = Vc @ torch.diag(ec.rsqrt()) @ Vc.T @ fc
    out = Vs @ torch.diag(es.sqrt()) @ Vs.T @ white + sF.mean(1, keepdim=True)
    (out * torch.arange(120., dtype=torch.float64).view(4, 30).cos()).sum().backward()
    g1 = cF.grad.clone(); cF.grad = None
    Cc, fc = cov(cF)
    U, S, Vh = torch.linalg.svd(Cc)
    white2 = U @ torch.diag(S.pow(-0.5)) @ Vh @ fc
    (white2.sin()).sum().backward()
    L = torch.linalg.cholesky(Cs)
    Lc = torch.linalg.cholesky(Cc.detach().requires_grad_())
    sv = torch.linalg.svdvals(fc.detach())
    return dict(out=out, g1=g1, g2=cF.grad, L=L, sv=sv, Cs=Cs, wcov=white @ white.T / 29, fc=fc)


def test_gatys_style_transfer():
    ours, _ = run_both(style_transfer, rtol=1e-3, atol=1e-4)  # (LBFGS amplifies rounding: 1e-13 apart in float64)
    assert ours["typ"] == "Sequential"
    assert ours["names"] == ["0", "conv_1", "style_loss_1", "relu_1", "conv_2", "style_loss_2", "relu_2", "pool_2",
                             "conv_3", "content_loss_3", "style_loss_3", "relu_3", "conv_4", "style_loss_4"]
    close(ours["losses"][:3], [0.0280423, 0.0257789, 0.0057247], rtol=1e-3)
    assert ours["losses"][-1] < ours["losses"][0] / 10
    assert ours["img"].min() >= 0 and ours["img"].max() <= 1


def test_gram_bmm_and_total_variation():
    ours, _ = run_both(gram_bmm)
    x, t, y = ours["x"].astype(np.float64), ours["t"], ours["y"].astype(np.float64)
    f = x.reshape(2, 4, 30)
    gram = f @ f.transpose(0, 2, 1) / 120
    close(ours["g"], gram, rtol=1e-5, atol=1e-6)
    grad_gram = 2 * (gram - t) / gram.size  # mse_loss's mean over the 2x4x4 Gram entries
    close(ours["gx"], ((grad_gram + grad_gram.transpose(0, 2, 1)) @ f / 120).reshape(x.shape), rtol=1e-4, atol=1e-7)
    dh, dw = y[:, :, 1:] - y[:, :, :-1], y[..., 1:] - y[..., :-1]
    close(ours["l2"], 2 * ((dh ** 2).sum() + (dw ** 2).sum()) / 192 + np.abs(dw).mean() + np.abs(dh).mean(), 1e-5)
    assert ours["dt"]


def test_lbfgs_strong_wolfe():
    ours, _ = run_both(lbfgs_wolfe, rtol=1e-4, atol=1e-5)
    close(ours["ls"], [17.194653, 1.840287], rtol=1e-4)
    assert (ours["calls"], ours["n_iter"], ours["func_evals"]) == (12, 9, 12)
    assert ours["keys"] == ["H_diag", "al", "d", "func_evals", "n_iter", "old_dirs", "old_stps", "prev_flat_grad",
                            "prev_loss", "ro", "t"]


def test_whitening_colouring_transform():
    ours, _ = run_both(wct, rtol=1e-8, atol=1e-9)
    out = ours["out"]
    close(out.mean(1), ours["sF"].mean(1), rtol=1e-10)  # the whitened content is centred: the style's mean comes back
    close(ours["cov"], np.cov(ours["sF"]), rtol=1e-10)
    close(ours["sq"] @ ours["sq"], ours["cov"], rtol=1e-8, atol=1e-10)
    assert ours["dt"]


def test_sliced_wasserstein_and_histograms():
    ours, _ = run_both(swd)
    x, y = ours["x"], ours["y"]
    close(ours["q"], np.quantile(x.flatten(), [0.1, 0.5, 0.9]), rtol=1e-6)
    close(ours["hc"], np.histogram(y, bins=5, range=(0, 1))[0], 0, 0)
    assert ours["ss"].tolist() == np.searchsorted(np.sort(y.flatten()), x.flatten()[:6]).tolist()


def test_patch_matching_unfold_fold():
    ours, _ = run_both(mrf, rtol=1e-4, atol=1e-5)
    close(ours["folded"], ours["x"], 0, 0)  # non-overlapping patches fold back to the image
    assert ours["best"].shape == (1, 4, 4) and ((0 <= ours["best"]) & (ours["best"] < 16)).all()
    assert ours["pad_same"].shape == (1, 2, 6, 6) and ours["ps"].shape == (1, 2, 6, 6)


def test_laplacian_pyramid():
    ours, _ = run_both(lapstyle, rtol=1e-4, atol=1e-6)
    assert [p.shape for p in ours["pyr"]] == [(1, 3, 8, 8), (1, 3, 4, 4), (1, 3, 2, 2)]
    assert np.isfinite(ours["g"]).all() and np.abs(ours["g"]).sum() > 0


def test_differentiable_whitening_by_eigh_and_svd():
    ours, _ = run_both(wct_grad, rtol=1e-7, atol=1e-9)
    close(ours["wcov"], np.eye(4), rtol=0, atol=1e-4)  # whitened features have unit covariance (up to the 1e-5 ridge)
    close(ours["L"] @ ours["L"].T, ours["Cs"], rtol=1e-10)
    close(ours["sv"], np.linalg.svd(ours["fc"], compute_uv=False), rtol=1e-10)
    assert np.isfinite(ours["g1"]).all() and np.isfinite(ours["g2"]).all()
