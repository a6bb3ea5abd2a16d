# ruff: noqa: E501, E702  (the programs are kept as their authors write them)
"""Image synthesis by optimisation and image-to-image networks, run as tests/probe25_synthesis_common.py says. What
these programs share memory with and write through (``.data``, ``detach``, ``numpy``, views), run without PyTorch
too; ``view_as_complex`` spectra and a complex Adam parameter; uint8 image I/O; editing an ``nn.Sequential`` (insert,
append, pop, slices, item assignment)."""

import numpy as np

from .probe25_synthesis_common import close, gram_bmm
from .pytorch_programs import OURS, run_both


def memory(m):
    torch = m.torch
    torch.manual_seed(6)
    res = {}
    fake = torch.randn(2, 3, 4, 4, requires_grad=True) * 1
    img = torch.unsqueeze(fake.data, 0)
    img[0, 0, 0, 0, 0] = 100.
    res['data_shares'] = fake[0, 0, 0, 0].item() == 100.
    d = fake.detach(); d[1, 0, 0, 0] = 7.
    res['detach_shares'] = fake[1, 0, 0, 0].item() == 7.
    x = torch.rand(1, 3, 4, 4)
    n = x.numpy(); n[0, 0, 0, 0] = -1
    res['numpy_shares'] = x[0, 0, 0, 0].item() == -1
    v = x.view(3, 16); v[0, 0] = -2
    res['view'] = x[0, 0, 0, 0].item()
    imgs = list(x.split(1, 1)); imgs[0].mul_(0)
    res['split'] = x.sum().item() == x[:, 1:].sum().item()
    t = torch.from_numpy(np.ones((2, 2), np.float32)); t.add_(1)
    res['fn'] = t
    p = torch.nn.Parameter(torch.zeros(3)); q = p.data; q.fill_(3)
    res['p'] = p
    ch = x[0].permute(1, 2, 0)
    res['perm_contig'] = ch.is_contiguous()
    c2 = ch.contiguous(); c2[0, 0, 0] = 55
    res['contig_copy'] = x[0, 0, 0, 0].item() != 55
    res['flat'] = x.flatten().data_ptr() == x.data_ptr()
    res['reshape_view'] = x[0].permute(1, 2, 0).reshape(-1, 3).data_ptr() == x.data_ptr()
    return res


def view_complex(m):
    torch = m.torch
    torch.manual_seed(7)
    p = torch.randn(1, 3, 4, 3, 2) * 0.01
    p.requires_grad_()
    c = torch.view_as_complex(p)
    img = torch.fft.irfft2(c, s=(4, 4), norm='ortho')
    back = torch.view_as_real(torch.fft.rfft2(img, norm='ortho'))
    (img.sin().sum() + back.pow(2).sum()).backward()
    fy = torch.fft.fftfreq(4)[:, None]; fx = torch.fft.rfftfreq(4)
    freqs = torch.sqrt(fx * fx + fy * fy)
    return dict(img=img, back=back, g=p.grad, p=p, freqs=freqs, dt=freqs.dtype == torch.float32, cdt=c.dtype == torch.complex64)


def complex_adam(m):
    torch, nn, optim = m.torch, m.nn, m.optim
    torch.manual_seed(1)
    spec = nn.Parameter(torch.randn(1, 3, 4, 3, dtype=torch.complex64) * 0.1)
    opt = optim.Adam([spec], lr=0.05)
    w = torch.randn(3, 4, 4)
    ls = []
    for _ in range(3):
        opt.zero_grad()
        img = torch.fft.irfft2(spec, s=(4, 4), norm='ortho')
        loss = -(img * w).sum() + img.pow(2).mean()
        loss.backward(); opt.step(); ls.append(loss.item())
    return dict(ls=ls, spec=torch.view_as_real(spec.detach()), g=torch.view_as_real(spec.grad), st=torch.view_as_real(opt.state[spec]['exp_avg']), sq=opt.state[spec]['exp_avg_sq'])


def uint8_io(m):
    torch = m.torch
    torch.manual_seed(5)
    img = torch.rand(3, 4, 4) * 1.2 - 0.1
    nd = img.mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to('cpu', torch.uint8).numpy()
    back = torch.from_numpy(nd).permute(2, 0, 1).float().div(255)
    wrap = (torch.tensor([300.7, -3.2, 255.9]) ).to(torch.uint8)
    b2 = torch.tensor([1, 200], dtype=torch.uint8) + torch.tensor([100, 100], dtype=torch.uint8)
    mean_u8 = torch.tensor([[1, 2], [3, 4]], dtype=torch.uint8).float().mean()
    grid = torch.stack([img, img.flip(-1)]).permute(1, 0, 2, 3).reshape(3, 2 * 4, 4)
    return dict(nd=nd, back=back, dt=nd.dtype == np.uint8, wrap=wrap, b2=b2, mean=mean_u8, grid=grid, img=img)


def seq_edit(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(2)
    s = nn.Sequential(nn.Conv2d(3, 3, 1), nn.ReLU(), nn.Conv2d(3, 3, 1), nn.ReLU(), nn.MaxPool2d(2))
    s.insert(2, nn.Identity()); s.append(nn.Flatten()); s.extend([nn.Identity()])
    p = s.pop(1)
    del s[0]
    names = [n for n, _ in s.named_children()]
    s2 = s[1:3]
    for i, layer in enumerate(s):
        if isinstance(layer, nn.ReLU):
            s[i] = nn.LeakyReLU(0.1)
    r = repr(s)
    return dict(names=names, p=type(p).__name__, n2=[n for n, _ in s2.named_children()], r=r, l=len(s))


def test_memory_sharing():
    ours, _ = run_both(memory)
    for flag in ("data_shares", "detach_shares", "numpy_shares", "split", "contig_copy", "flat", "reshape_view"):
        assert ours[flag] is True, flag
    assert ours["view"] == -2.0 and ours["perm_contig"] is False
    close(ours["fn"], np.full((2, 2), 2.0), 0, 0)
    close(ours["p"], [3, 3, 3], 0, 0)


def test_view_as_complex_spectrum():
    ours, _ = run_both(view_complex, rtol=1e-4, atol=1e-6)
    c = ours["p"][..., 0] + 1j * ours["p"][..., 1]
    close(ours["img"], np.fft.irfft2(c, s=(4, 4), norm="ortho"), rtol=1e-4, atol=1e-7)
    fy, fx = np.fft.fftfreq(4)[:, None], np.fft.rfftfreq(4)
    close(ours["freqs"], np.sqrt(fx * fx + fy * fy), rtol=1e-6)
    assert ours["dt"] and ours["cdt"]


def test_complex_parameter_adam():
    ours, _ = run_both(complex_adam, rtol=1e-4, atol=1e-5)
    close(ours["ls"], [0.2471237, -2.5126364, -5.2634115], rtol=1e-4)
    sq = ours["sq"]  # exp_avg_sq of a complex parameter: its real and imaginary parts' squares, separately
    assert (sq.real >= 0).all() and (sq.imag >= 0).all()


def test_uint8_image_io():
    ours, _ = run_both(uint8_io)
    img = ours["img"]
    nd = np.clip(img * 255 + 0.5, 0, 255).transpose(1, 2, 0).astype(np.uint8)
    assert ours["dt"] and (ours["nd"] == nd).all()
    close(ours["back"], nd.transpose(2, 0, 1) / 255, rtol=1e-6)
    assert ours["wrap"].tolist() == [44, 253, 255] and ours["b2"].tolist() == [101, 44]
    assert ours["mean"] == 2.5 and ours["grid"].shape == (3, 8, 4)


def test_programs_run_without_pytorch():
    for program in (gram_bmm, memory):
        assert program(OURS)


def test_sequential_editing():
    ours, _ = run_both(seq_edit)
    assert ours["names"] == ["0", "1", "2", "3", "4", "5"] and ours["n2"] == ["1", "2"]
    assert ours["p"] == "ReLU" and ours["l"] == 6 and "(2): LeakyReLU(negative_slope=0.1)" in ours["r"]
