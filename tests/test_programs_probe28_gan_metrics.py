# ruff: noqa: E501, E702, E731, F841  (the programs are kept as their authors wrote them)
"""Generative adversarial networks, run as tests/probe28_gan_common.py says. Evaluation by hand: FID (by ``eigh``
square roots and by complex ``eigvals``), KID with a cubic kernel, the Inception Score over splits, a precision by
``cdist``, and images converted to ``uint8`` two ways."""

import numpy as np

from .pytorch_programs import run_both


def metrics(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(19)
    feats_r = torch.randn(40, 5, dtype=torch.float64); feats_f = torch.randn(40, 5, dtype=torch.float64) * 1.2 + 0.3
    mu1, mu2 = feats_r.mean(0), feats_f.mean(0)
    s1, s2 = torch.cov(feats_r.T), torch.cov(feats_f.T)
    ev, V = torch.linalg.eigh(s1)
    s1_half = V @ torch.diag(ev.clamp(min=0).sqrt()) @ V.T
    M = s1_half @ s2 @ s1_half
    ev2 = torch.linalg.eigvalsh(M)
    fid = (mu1 - mu2).square().sum() + torch.trace(s1) + torch.trace(s2) - 2 * ev2.clamp(min=0).sqrt().sum()
    eigs = torch.linalg.eigvals(s1 @ s2)
    fid2 = (mu1 - mu2).dot(mu1 - mu2) + s1.trace() + s2.trace() - 2 * eigs.sqrt().real.sum()
    d = feats_r.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    m_ = feats_r.shape[0]
    kxx, kyy, kxy = k(feats_r, feats_r), k(feats_f, feats_f), k(feats_r, feats_f)
    kid = (kxx.sum() - kxx.diagonal().sum()) / (m_ * (m_ - 1)) + (kyy.sum() - kyy.trace()) / (m_ * (m_ - 1)) - 2 * kxy.mean()
    logits = torch.randn(30, 6)
    p_yx = F.softmax(logits, dim=1)
    p_y = p_yx.mean(0, keepdim=True)
    kl = p_yx * (torch.log(p_yx + 1e-12) - torch.log(p_y + 1e-12))
    is_score = kl.sum(1).mean().exp()
    splits = torch.stack([(c * (c.log() - c.mean(0, keepdim=True).log())).sum(1).mean().exp() for c in p_yx.chunk(3)])
    dist = torch.cdist(feats_r.float(), feats_f.float())
    pd = F.pdist(feats_r[:6].float())
    prec = (dist.min(1).values < 1.5).float().mean()
    img = (torch.rand(2, 3, 4, 4) * 2 - 1)
    with torch.no_grad():
        u8 = img.clamp_(-1, 1).add(1).mul(127.5).round().byte()
        u8b = ((img + 1) * 127.5).to(torch.uint8)
    return fid, fid2, kid, is_score, splits, splits.std(), dist, pd, prec, u8, u8b, eigs.dtype == torch.complex128


def test_fid_kid_and_inception_score_by_hand():
    ours, _ = run_both(metrics, rtol=1e-5, atol=1e-6)
    fid, fid2, kid, is_score, splits, splits_std, dist, pd, prec, u8, u8b, complex_eigs = ours
    np.testing.assert_allclose(fid, fid2, rtol=1e-8)  # the symmetric square root and eigvals(s1 s2) agree
    assert 1.0 <= is_score <= 6.0 and complex_eigs is True
    np.testing.assert_allclose([fid, kid, is_score], [1.387455755601291, 0.32583281390878227, 1.3123539686],
                               rtol=1e-6)
    assert u8.dtype == np.uint8 and u8b.dtype == np.uint8 and np.all(np.abs(u8.astype(int) - u8b) <= 1)
