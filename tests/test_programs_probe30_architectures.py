# ruff: noqa: E501, E701, E702, E731, E741, B007, B023, F841  (the programs are kept as their authors write them)
"""Architectures earlier probes did not cover (see tests/pytorch_programs.py), each run on chainrule and, where
installed, on PyTorch under the same seeds, comparing losses, outputs and gradients; each also checked without
PyTorch against invariants.

Kolmogorov-Arnold networks (B-spline bases by comparisons and slices, ``einsum``, L-BFGS, ``bucketize``); a VQ-VAE
with an EMA codebook (``cdist``/``argmin``, the straight-through estimator, ``one_hot``, in-place EMA under
``no_grad``); neural cellular automata (depthwise Sobel ``conv2d`` with circular padding, stochastic update masks,
alive masks by ``max_pool2d``, per-parameter gradient normalisation through ``.grad.data``); capsule networks with
dynamic routing; hypernetworks (``func.functional_call`` and ``F.linear`` with generated weights); a neural Turing
machine's addressing (cosine similarity, ``roll``, sharpening, ``bmm`` reads, erase/add writes by ``einsum``);
neural style transfer (Gram matrices, an image optimised by L-BFGS with a clamping closure); knowledge distillation
(``kl_div`` with ``log_target``, ``KLDivLoss``, label smoothing) with triplet losses and hard negatives;
super-resolution (``PixelShuffle``, dilated convolution) warped by a spatial transformer (``affine_grid``,
``grid_sample``) against bicubic upsampling; mixture-of-depths routing (``topk``, ``gather``, ``scatter_add``,
advanced-index ``+=``); modern Hopfield retrieval; SimCLR-style contrastive logits with ``masked_fill`` of the
diagonal through a weight-normed encoder, ``CosineEmbeddingLoss``; closed-form continuous-time (CfC) cells with
an early exit by ``where``. All agreed with PyTorch when written (session 30): no fix was needed."""

import numpy as np

from .pytorch_programs import run_both


def kan(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    class KANLayer(nn.Module):
        def __init__(self, din, dout, grid=5, k=3):
            super().__init__()
            h = 2.0 / grid
            g = torch.arange(-k, grid + k + 1, dtype=torch.float32) * h - 1.0
            self.register_buffer("grid", g.expand(din, -1).contiguous())
            self.coef = nn.Parameter(torch.randn(dout, din, grid + k) * 0.1)
            self.base = nn.Linear(din, dout)
            self.k = k
        def bsplines(self, x):
            g = self.grid; x = x.unsqueeze(-1)
            b = ((x >= g[:, :-1]) & (x < g[:, 1:])).to(x.dtype)
            for p in range(1, self.k + 1):
                b = (x - g[:, :-(p + 1)]) / (g[:, p:-1] - g[:, :-(p + 1)]) * b[..., :-1] + \
                    (g[:, p + 1:] - x) / (g[:, p + 1:] - g[:, 1:(-p)]) * b[..., 1:]
            return b
        def forward(self, x):
            return self.base(F.silu(x)) + torch.einsum("bik,oik->bo", self.bsplines(x), self.coef)
    net = nn.Sequential(KANLayer(2, 5), KANLayer(5, 1))
    x = torch.rand(64, 2) * 2 - 1
    y = torch.sin(3 * x[:, :1]) * x[:, 1:]
    opt = torch.optim.LBFGS(net.parameters(), lr=0.5, max_iter=5)
    losses = []
    def closure():
        opt.zero_grad(); l = F.mse_loss(net(x), y); l.backward(); return l
    for _ in range(3):
        losses.append(opt.step(closure).item())
    idx = torch.bucketize(x[:, 0].contiguous(), torch.linspace(-1, 1, 5))
    return losses, idx

def vqvae(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    K, D = 16, 4
    enc, dec = nn.Linear(8, D), nn.Linear(D, 8)
    codebook = torch.randn(K, D)
    ema_count = torch.zeros(K); ema_w = codebook.clone()
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=1e-2)
    x = torch.randn(32, 8)
    out = []
    for step in range(4):
        z = enc(x)
        d = torch.cdist(z, codebook)
        idx = d.argmin(1)
        q = codebook[idx]
        zq = z + (q - z).detach()
        loss = F.mse_loss(dec(zq), x) + 0.25 * F.mse_loss(z, q.detach())
        opt.zero_grad(); loss.backward(); opt.step()
        with torch.no_grad():
            onehot = F.one_hot(idx, K).float()
            ema_count.mul_(0.9).add_(onehot.sum(0), alpha=0.1)
            ema_w.mul_(0.9).add_(onehot.t() @ z, alpha=0.1)
            n = ema_count.sum()
            count = (ema_count + 1e-5) / (n + K * 1e-5) * n
            codebook.copy_(ema_w / count.unsqueeze(1))
        out.append(loss.item())
    return out, codebook, idx

def nca(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    C = 8
    sobel = torch.tensor([[-1., 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 8
    ident = torch.tensor([[0., 0, 0], [0, 1, 0], [0, 0, 0]])
    k = torch.stack([ident, sobel, sobel.T]).repeat(C, 1, 1)[:, None]
    upd = nn.Sequential(nn.Conv2d(3 * C, 32, 1), nn.ReLU(), nn.Conv2d(32, C, 1, bias=False))
    with torch.no_grad(): upd[2].weight.zero_()
    opt = torch.optim.Adam(upd.parameters(), lr=2e-3)
    state = torch.zeros(2, C, 12, 12); state[:, 3:, 6, 6] = 1.0
    target = torch.rand(2, 4, 12, 12)
    g = torch.Generator().manual_seed(1)
    losses = []
    for it in range(3):
        s = state
        for _ in range(4):
            alive_pre = F.max_pool2d(s[:, 3:4], 3, 1, 1) > 0.1
            perc = F.conv2d(F.pad(s, (1, 1, 1, 1), mode="circular"), k, groups=C)
            mask = (torch.rand(s.shape[0], 1, 12, 12, generator=g) <= 0.5).float()
            s = s + upd(perc) * mask
            alive = (F.max_pool2d(s[:, 3:4], 3, 1, 1) > 0.1) & alive_pre
            s = s * alive.float()
        loss = F.mse_loss(s[:, :4], target)
        opt.zero_grad(); loss.backward()
        for p in upd.parameters():
            p.grad.data /= (p.grad.data.norm() + 1e-8)
        opt.step(); losses.append(loss.item())
    return losses


def capsules(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    def squash(s, dim=-1):
        n2 = (s ** 2).sum(dim, keepdim=True)
        return n2 / (1 + n2) * s / torch.sqrt(n2 + 1e-8)
    B, Ni, No, Di, Do = 4, 6, 3, 8, 4
    W = nn.Parameter(torch.randn(1, Ni, No, Do, Di) * 0.1)
    u = torch.randn(B, Ni, Di)
    u_hat = (W @ u[:, :, None, :, None]).squeeze(-1)  # B Ni No Do
    b = torch.zeros(B, Ni, No)
    for r in range(3):
        c = F.softmax(b, dim=2)
        s = (c.unsqueeze(-1) * u_hat).sum(1)
        v = squash(s)
        if r < 2:
            b = b + (u_hat * v.unsqueeze(1)).sum(-1)
    lengths = v.norm(dim=-1)
    target = F.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    loss = (target * F.relu(0.9 - lengths) ** 2 + 0.5 * (1 - target) * F.relu(lengths - 0.1) ** 2).sum(1).mean()
    loss.backward()
    return loss, W.grad

def hyper(m):
    torch, nn, F = m.torch, m.nn, m.F
    from_func = torch.func.functional_call
    torch.manual_seed(0)
    target = nn.Linear(4, 3)
    hyper = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 4 * 3 + 3))
    z = torch.randn(5, 2); x = torch.randn(5, 7, 4)
    outs = []
    for i in range(5):
        p = hyper(z[i]); w, b = p[:12].view(3, 4), p[12:]
        outs.append(from_func(target, {"weight": w, "bias": b}, (x[i],)))
        outs.append(F.linear(x[i], w, b))
    loss = torch.stack(outs).pow(2).mean()
    g = torch.autograd.grad(loss, list(hyper.parameters()))
    return loss, g

def ntm(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    N, M = 10, 6
    memory = torch.randn(2, N, M)
    key = torch.randn(2, M, requires_grad=True); beta = torch.tensor([[2.0], [5.0]], requires_grad=True)
    g = torch.sigmoid(torch.randn(2, 1)); shift = F.softmax(torch.randn(2, 3), 1); gamma = 1 + F.softplus(torch.randn(2, 1))
    w_prev = F.softmax(torch.randn(2, N), 1)
    wc = F.softmax(beta * F.cosine_similarity(memory, key.unsqueeze(1), dim=-1), dim=1)
    wg = g * wc + (1 - g) * w_prev
    ws = sum(shift[:, i:i + 1] * torch.roll(wg, i - 1, dims=1) for i in range(3))
    w = ws ** gamma; w = w / w.sum(1, keepdim=True)
    read = torch.bmm(w.unsqueeze(1), memory).squeeze(1)
    erase = torch.sigmoid(torch.randn(2, M)); add = torch.tanh(torch.randn(2, M))
    mem2 = memory * (1 - torch.einsum("bn,bm->bnm", w, erase)) + torch.einsum("bn,bm->bnm", w, add)
    (read.sum() + mem2.pow(2).sum()).backward()
    return read, mem2, key.grad, beta.grad

def style(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    feat = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
    for p in feat.parameters(): p.requires_grad_(False)
    def gram(f):
        b, c, h, w = f.shape; f = f.view(b, c, h * w); return torch.bmm(f, f.transpose(1, 2)) / (c * h * w)
    content = torch.rand(1, 3, 16, 16); style_img = torch.rand(1, 3, 16, 16)
    img = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([img], max_iter=4)
    ts = gram(feat(style_img)).detach(); tc = feat(content).detach()
    losses = []
    for _ in range(2):
        def closure():
            with torch.no_grad(): img.clamp_(0, 1)
            opt.zero_grad()
            f = feat(img)
            l = 1e3 * F.mse_loss(gram(f), ts) + F.mse_loss(f, tc)
            l.backward(); return l
        losses.append(opt.step(closure).item())
    return losses, img.detach()

def distill(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    t = nn.Linear(6, 4); s = nn.Linear(6, 4)
    x = torch.randn(8, 6); y = torch.randint(0, 4, (8,))
    T = 3.0
    with torch.no_grad(): tl = t(x)
    sl = s(x)
    kd = F.kl_div(F.log_softmax(sl / T, 1), F.log_softmax(tl / T, 1), reduction="batchmean", log_target=True) * T * T
    kd2 = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(sl / T, 1), F.softmax(tl / T, 1))
    loss = 0.7 * kd + 0.3 * F.cross_entropy(sl, y, label_smoothing=0.1)
    loss.backward()
    anchor, pos, neg = torch.randn(5, 4, requires_grad=True), torch.randn(5, 4), torch.randn(5, 4)
    tl2 = nn.TripletMarginLoss(margin=0.5, p=2, swap=True)(anchor, pos, neg)
    d = torch.cdist(anchor, neg); hard = d.argmin(1)
    tl3 = F.triplet_margin_with_distance_loss(anchor, pos, neg[hard], distance_function=nn.PairwiseDistance(), margin=0.3)
    (tl2 + tl3).backward()
    return kd, kd2, loss, s.weight.grad, tl2, tl3, anchor.grad

def pixelshuffle_stn(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    sr = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.PixelShuffle(2), nn.Conv2d(3, 3, 3, padding=2, dilation=2))
    x = torch.rand(2, 3, 8, 8)
    out = sr(x)
    theta = torch.tensor([[[0.9, 0.1, 0.05], [-0.1, 0.9, 0.0]]] * 2, requires_grad=True)
    grid = F.affine_grid(theta, out.shape, align_corners=False)
    warped = F.grid_sample(out, grid, align_corners=False, padding_mode="border")
    hr = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    loss = F.l1_loss(warped, hr) + F.smooth_l1_loss(out, hr, beta=0.5)
    loss.backward()
    return loss, theta.grad, sr[0].weight.grad


def mod(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    B, T, D, k = 2, 8, 6, 3
    x = torch.randn(B, T, D, requires_grad=True)
    router = nn.Linear(D, 1); block = nn.Sequential(nn.LayerNorm(D), nn.Linear(D, D), nn.GELU(approximate="tanh"))
    w = router(x).squeeze(-1)
    topv, topi = torch.topk(w, k, dim=1, sorted=False)
    topi, order = topi.sort(dim=1); topv = topv.gather(1, order)
    sel = x.gather(1, topi.unsqueeze(-1).expand(-1, -1, D))
    upd = block(sel) * torch.sigmoid(topv).unsqueeze(-1)
    out = x.scatter_add(1, topi.unsqueeze(-1).expand(-1, -1, D), upd)
    out2 = x.clone(); out2[torch.arange(B)[:, None], topi] += upd
    (out.pow(2).mean() + out2.abs().mean()).backward()
    return out, out2, x.grad, router.weight.grad

def hopfield(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    X = F.normalize(torch.randn(20, 16), dim=1)
    xi = X[:4] + 0.3 * torch.randn(4, 16)
    xi.requires_grad_(True)
    beta = 8.0
    s = xi
    for _ in range(3):
        s = F.softmax(beta * s @ X.T, dim=-1) @ X
    energy = -torch.logsumexp(beta * xi @ X.T, -1) / beta + 0.5 * (xi * xi).sum(-1)
    (s.sum() + energy.sum()).backward()
    return s, energy, xi.grad

def contrastive(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    enc = nn.utils.parametrizations.weight_norm(nn.Linear(10, 8))
    x = torch.randn(6, 10)
    z = F.normalize(enc(torch.cat([x, x + 0.1 * torch.randn_like(x)])), dim=1)
    logits = z @ z.T / 0.2
    logits = logits.masked_fill(torch.eye(12, dtype=torch.bool), float("-inf"))
    labels = torch.cat([torch.arange(6, 12), torch.arange(0, 6)])
    loss = F.cross_entropy(logits, labels)
    sim = torch.ones(12, 12).fill_diagonal_(0)
    cel = nn.CosineEmbeddingLoss(margin=0.2)(z[:6], z[6:], torch.tensor([1, -1, 1, -1, 1, 1]))
    (loss + cel).backward()
    return loss, cel, sim, enc.parametrizations.weight.original0.grad, enc.parametrizations.weight.original1.grad

def cfc(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    class CfC(nn.Module):
        def __init__(self, i, h):
            super().__init__()
            self.bb = nn.Sequential(nn.Linear(i + h, 16), nn.LeakyReLU(0.1))
            self.ff1, self.ff2 = nn.Linear(16, h), nn.Linear(16, h)
            self.ta, self.tb = nn.Linear(16, h), nn.Linear(16, h)
        def forward(self, x, h, ts):
            z = self.bb(torch.cat([x, h], 1))
            t = torch.sigmoid(-self.ta(z) * ts + self.tb(z))
            return torch.tanh(self.ff1(z)) * (1 - t) + t * torch.tanh(self.ff2(z))
    cell = CfC(3, 5); xs = torch.randn(7, 4, 3); ts = torch.rand(7, 4, 1)
    h = torch.zeros(4, 5); hs = []
    for t in range(7):
        h = cell(xs[t], h, ts[t]); hs.append(h)
    out = torch.stack(hs)
    conf = F.softmax(out[-1], -1).max(-1).values
    exit_early = torch.where(conf > 0.3, out[3].sum(-1), out[-1].sum(-1))
    (out.mean() + exit_early.sum()).backward()
    return out, exit_early, cell.ta.weight.grad


def test_kan_fits_by_lbfgs():
    losses, idx = run_both(kan, rtol=1e-4, atol=1e-5)[0]
    assert losses[-1] < losses[0] and np.isfinite(losses).all()
    assert idx.min() >= 0 and idx.max() <= 5


def test_vqvae_with_an_ema_codebook():
    losses, codebook, idx = run_both(vqvae, rtol=1e-4, atol=1e-5)[0]
    assert codebook.shape == (16, 4) and np.isfinite(codebook).all() and idx.shape == (32,)
    assert losses[-1] < losses[0]


def test_neural_cellular_automata():
    losses = run_both(nca, rtol=1e-4, atol=1e-5)[0]
    assert len(losses) == 3 and np.isfinite(losses).all()


def test_capsules_route_by_agreement():
    loss, grad = run_both(capsules, rtol=1e-4, atol=1e-5)[0]
    assert loss > 0 and grad.shape == (1, 6, 3, 4, 8) and np.abs(grad).sum() > 0


def test_hypernetwork_weights_through_functional_call():
    loss, grads = run_both(hyper, rtol=1e-4, atol=1e-5)[0]
    assert len(grads) == 4 and all(np.isfinite(g).all() for g in grads) and loss > 0


def test_neural_turing_machine_addressing():
    read, memory, key_grad, beta_grad = run_both(ntm, rtol=1e-4, atol=1e-5)[0]
    assert read.shape == (2, 6) and memory.shape == (2, 10, 6) and key_grad.shape == (2, 6) and beta_grad.shape == (2, 1)


def test_style_transfer_by_lbfgs():
    losses, image = run_both(style, rtol=1e-4, atol=1e-5)[0]
    # (L-BFGS's step returns the closure's first loss of that step: the second is the first step's result)
    assert losses[-1] <= losses[0] and image.shape == (1, 3, 16, 16) and np.isfinite(image).all()


def test_distillation_and_triplets():
    kd, kd2, loss, grad, triplet, triplet_hard, anchor_grad = run_both(distill, rtol=1e-4, atol=1e-5)[0]
    np.testing.assert_allclose(kd, kd2 * 9.0, rtol=1e-5)  # log_target=True and probabilities: the same divergence
    assert triplet >= 0 and triplet_hard >= 0 and anchor_grad.shape == (5, 4)


def test_super_resolution_through_a_spatial_transformer():
    loss, theta_grad, weight_grad = run_both(pixelshuffle_stn, rtol=1e-4, atol=1e-5)[0]
    assert theta_grad.shape == (2, 2, 3) and weight_grad.shape == (12, 3, 3, 3) and loss > 0


def test_mixture_of_depths_routing():
    out, out2, x_grad, router_grad = run_both(mod, rtol=1e-4, atol=1e-5)[0]
    np.testing.assert_allclose(out, out2, rtol=1e-6, atol=1e-7)  # scatter_add and index += agree
    assert x_grad.shape == (2, 8, 6) and np.abs(router_grad).sum() > 0


def test_modern_hopfield_retrieval():
    s, energy, grad = run_both(hopfield, rtol=1e-4, atol=1e-5)[0]
    assert s.shape == (4, 16) and energy.shape == (4,) and np.isfinite(grad).all()


def test_contrastive_logits_through_weight_norm():
    loss, cosine, ones, g0, g1 = run_both(contrastive, rtol=1e-4, atol=1e-5)[0]
    assert np.trace(ones) == 0 and ones.sum() == 132 and loss > 0 and cosine >= 0
    assert g0.shape == (8, 1) and g1.shape == (8, 10)


def test_closed_form_continuous_time_cells():
    out, exit_early, grad = run_both(cfc, rtol=1e-4, atol=1e-5)[0]
    assert out.shape == (7, 4, 5) and np.abs(out).max() <= 1 and exit_early.shape == (4,) and grad.shape == (5, 16)
