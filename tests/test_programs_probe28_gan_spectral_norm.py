# ruff: noqa: B007, E501, E702, F841, UP008  (the programs are kept as their authors wrote them)
"""Generative adversarial networks, run as tests/probe28_gan_common.py says. Spectral normalisation both ways: the
hook (``nn.utils.spectral_norm``: ``weight_orig``/``weight_u``/``weight_v``, dim 1 for a transposed convolution, an
``Embedding``, ``remove_spectral_norm``) and the parametrisation (``parametrizations.spectral_norm``: ``_u``/``_v``
power-iteration state across train/eval, ``parametrize.cached``, ``remove_parametrizations``, state_dict keys and
round trips), under ``no_grad``, ``inference_mode`` and ``deepcopy``, following a model to float64; SAGAN's own
hand-written SpectralNorm (``w.data.new(h).normal_``, ``del module._parameters[name]``, ``u.data = ...``); the errors
of GAN utilities (spectral norm applied twice or removed where absent) and gradient clipping (``error_if_nonfinite``,
the inf norm with ``foreach``)."""

import copy

import numpy as np
import pytest

from .probe28_gan_common import LITERALS
from .pytorch_programs import OURS, error_of, plain, pytorch, run_both


def sn_old(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(0)
    out = {}
    for mod, kw in [(nn.Conv2d(3, 4, 3), {}), (nn.ConvTranspose2d(4, 3, 4, 2, 1), {}), (nn.Linear(5, 6), {'n_power_iterations': 3}), (nn.Embedding(7, 4), {})]:
        sn = nn.utils.spectral_norm(mod, **kw)
        name = type(mod).__name__
        out[name + 'keys'] = sorted(sn.state_dict().keys())
        out[name + 'u0'] = sn.weight_u.clone()
        if isinstance(mod, nn.Embedding):
            x = torch.randint(0, 7, (3,))
        elif isinstance(mod, nn.Linear):
            x = torch.randn(2, 5)
        elif isinstance(mod, nn.Conv2d):
            x = torch.randn(2, 3, 5, 5)
        else:
            x = torch.randn(2, 4, 3, 3)
        y = sn(x); y.pow(2).sum().backward()
        out[name + 'y'] = y
        out[name + 'g'] = sn.weight_orig.grad
        out[name + 'u1'] = sn.weight_u.clone(); out[name + 'v1'] = sn.weight_v.clone()
        sn.eval(); y2 = sn(x); out[name + 'eval'] = y2
        out[name + 'u2'] = sn.weight_u.clone()
        sd = sn.state_dict()
        out[name + 'sdw'] = sd['weight_orig']
        nn.utils.remove_spectral_norm(sn)
        out[name + 'after'] = sorted(n for n, _ in sn.named_parameters())
        out[name + 'w'] = sn.weight
    return out

def sn_new(m):
    torch, nn = m.torch, m.nn
    P = nn.utils.parametrizations
    torch.manual_seed(0)
    out = {}
    for mod in [nn.Conv2d(3, 4, 3), nn.ConvTranspose2d(4, 3, 4, 2, 1), nn.Linear(5, 6)]:
        name = type(mod).__name__  # (before the parametrisation swaps the class for Parametrized...)
        sn = P.spectral_norm(mod)
        out[name + 'keys'] = sorted(sn.state_dict().keys())
        out[name + 'u0'] = sn.parametrizations.weight[0]._u.clone()
        x = torch.randn(2, 3, 5, 5) if isinstance(mod, nn.Conv2d) else (torch.randn(2, 5) if isinstance(mod, nn.Linear) else torch.randn(2, 4, 3, 3))
        for _ in range(2):
            y = sn(x); y.pow(2).sum().backward()
        out[name + 'y'] = y
        out[name + 'g'] = sn.parametrizations.weight.original.grad
        out[name + 'u1'] = sn.parametrizations.weight[0]._u.clone()
        sn.eval(); out[name + 'eval'] = sn(x); out[name + 'eval2'] = sn(x)
        out[name + 'sigma'] = torch.linalg.matrix_norm(sn.weight.flatten(1) if not isinstance(mod, nn.ConvTranspose2d) else sn.weight.transpose(0,1).flatten(1), 2)
        torch.nn.utils.parametrize.remove_parametrizations(sn, 'weight')
        out[name + 'w'] = sn.weight
        out[name + 'after'] = sorted(sn.state_dict().keys())
    return out


def errors(m):
    torch, nn = m.torch, m.nn
    out = []
    c = nn.utils.spectral_norm(nn.Linear(3, 3))
    out.append(error_of(lambda: nn.utils.spectral_norm(c)))
    out.append(error_of(lambda: nn.utils.remove_spectral_norm(nn.Linear(2, 2))))
    out.append(error_of(lambda: nn.utils.parametrizations.spectral_norm(nn.Linear(2, 2), name='nope')))
    p = nn.Parameter(torch.ones(3)); p.grad = torch.tensor([float('inf'), 1., 1.])
    out.append(error_of(lambda: nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)))
    p.grad = torch.tensor([3., 4., 0.])
    q = nn.Parameter(torch.ones(2)); q.grad = torch.tensor([1., 2.])
    out.append(nn.utils.clip_grad_norm_([p, q], 1.0, norm_type='inf', foreach=True))
    out.append([p.grad.clone(), q.grad.clone()])
    out.append(nn.utils.clip_grad_norm_(iter([p, q]), 0.5, norm_type=1.0))
    out.append(nn.utils.get_total_norm([p.grad, q.grad], 2.0))
    nn.utils.clip_grad_value_([p, q], 0.01)
    out.append([p.grad.clone(), q.grad.clone()])
    x = torch.randn(2, 3)
    out.append(error_of(lambda: torch.autograd.grad(x.sum(), x)))
    y = torch.randn(2, 3, requires_grad=True)
    out.append(error_of(lambda: torch.autograd.grad((y * 2).sum(), [y, x])))
    out.append(torch.autograd.grad((y * 2).sum(), [y, torch.randn(1, requires_grad=True)], allow_unused=True, materialize_grads=True))
    net = nn.Linear(2, 2)
    net.requires_grad_(False)
    out.append([pp.requires_grad for pp in net.parameters()])
    out.append(error_of(lambda: net(torch.randn(1, 2)).sum().backward()))
    return out


def cached_sn(m):
    torch, nn = m.torch, m.nn
    P = nn.utils.parametrize
    torch.manual_seed(13)
    lin = nn.utils.parametrizations.spectral_norm(nn.Linear(4, 4), n_power_iterations=2)
    x = torch.randn(3, 4)
    with P.cached():
        y = lin(x) + lin(x)
    y.sum().backward()
    sd = lin.state_dict()
    lin2 = nn.utils.parametrizations.spectral_norm(nn.Linear(4, 4), n_power_iterations=2)
    lin2.load_state_dict(sd)
    lin2.eval()
    old = nn.utils.spectral_norm(nn.Linear(4, 4))
    old(x)
    sd_old = old.state_dict()
    old2 = nn.utils.spectral_norm(nn.Linear(4, 4)); old2.load_state_dict(sd_old); old2.eval()
    return y, lin.parametrizations.weight.original.grad, lin2(x), lin2.parametrizations.weight[0]._v, sorted(sd.keys()), old2(x), list(sd_old._metadata.keys()) if hasattr(sd_old, '_metadata') else None, P.is_parametrized(lin), P.is_parametrized(lin, 'bias')


def sagan_own_sn(m):
    torch, nn, F = m.torch, m.nn, m.F
    Parameter = nn.Parameter
    torch.manual_seed(14)
    def l2normalize(v, eps=1e-12):
        return v / (v.norm() + eps)
    class SpectralNorm(nn.Module):
        def __init__(self, module, name='weight', power_iterations=1):
            super(SpectralNorm, self).__init__()
            self.module = module; self.name = name; self.power_iterations = power_iterations
            if not self._made_params():
                self._make_params()
        def _update_u_v(self):
            u = getattr(self.module, self.name + "_u")
            v = getattr(self.module, self.name + "_v")
            w = getattr(self.module, self.name + "_bar")
            height = w.data.shape[0]
            for _ in range(self.power_iterations):
                v.data = l2normalize(torch.mv(torch.t(w.view(height, -1).data), u.data))
                u.data = l2normalize(torch.mv(w.view(height, -1).data, v.data))
            sigma = u.dot(w.view(height, -1).mv(v))
            setattr(self.module, self.name, w / sigma.expand_as(w))
        def _made_params(self):
            try:
                u = getattr(self.module, self.name + "_u"); v = getattr(self.module, self.name + "_v"); w = getattr(self.module, self.name + "_bar")
                return True
            except AttributeError:
                return False
        def _make_params(self):
            w = getattr(self.module, self.name)
            height = w.data.shape[0]
            width = w.view(height, -1).data.shape[1]
            u = Parameter(w.data.new(height).normal_(0, 1), requires_grad=False)
            v = Parameter(w.data.new(width).normal_(0, 1), requires_grad=False)
            u.data = l2normalize(u.data); v.data = l2normalize(v.data)
            w_bar = Parameter(w.data)
            del self.module._parameters[self.name]
            self.module.register_parameter(self.name + "_u", u)
            self.module.register_parameter(self.name + "_v", v)
            self.module.register_parameter(self.name + "_bar", w_bar)
        def forward(self, *args):
            self._update_u_v()
            return self.module.forward(*args)
    net = nn.Sequential(SpectralNorm(nn.Conv2d(2, 4, 3)), nn.LeakyReLU(0.1), SpectralNorm(nn.Linear(4 * 4 * 4, 1)))
    # fix Linear input: flatten in between
    class Net(nn.Module):
        def __init__(self):
            super().__init__(); self.c = net[0]; self.l = net[2]
        def forward(self, x):
            return self.l(F.leaky_relu(self.c(x), 0.1).view(x.size(0), -1))
    N = Net()
    opt = torch.optim.Adam(filter(lambda p: p.requires_grad, N.parameters()), lr=1e-2, betas=(0.0, 0.9))
    x = torch.randn(3, 2, 6, 6)
    hist = []
    for i in range(3):
        opt.zero_grad(); l = N(x).mean(); l.backward(); opt.step(); hist.append(l.item())
    return hist, sorted(N.state_dict().keys()), [p for p in N.parameters()], N.c.module.weight, [p.requires_grad for p in N.parameters()], len(opt.param_groups[0]['params'])


def dtypes(m):
    torch, nn = m.torch, m.nn
    torch.manual_seed(17)
    net = nn.Sequential(nn.utils.spectral_norm(nn.Linear(3, 3)), nn.utils.parametrizations.spectral_norm(nn.Linear(3, 2))).double()
    x = torch.randn(2, 3, dtype=torch.float64)
    y = net(x)
    n = torch.randn(4, dtype=torch.float64)
    e = torch.empty(3, dtype=torch.float64).normal_(0, 1)
    return y, y.dtype == torch.float64, net[0].weight_u.dtype == torch.float64, net[1].parametrizations.weight[0]._u.dtype == torch.float64, n, e, net[1].parametrizations.weight.original.dtype == torch.float64


def modes(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(20)
    a = nn.utils.spectral_norm(nn.Linear(3, 3))
    b = nn.utils.parametrizations.spectral_norm(nn.Linear(3, 3))
    x = torch.randn(2, 3)
    out = []
    with torch.no_grad():
        out += [a(x), b(x)]
    with torch.inference_mode():
        out += [a(x), b(x)]
    out += [a.weight_u.clone(), b.parametrizations.weight[0]._u.clone()]
    y = a(x).sum() + b(x).sum()
    y.backward()
    out += [a.weight_orig.grad, b.parametrizations.weight.original.grad, a.weight.requires_grad, a.weight.is_leaf]
    opt = torch.optim.SGD(list(a.parameters()) + list(b.parameters()), lr=0.1)
    opt.zero_grad(set_to_none=False)
    out.append([p.grad.abs().sum() for p in a.parameters()])
    a.zero_grad()
    out.append([p.grad is None for p in a.parameters()])
    # forward twice then one backward (the G step in many repos calls D twice)
    y = a(x).sum() + a(x * 2).sum()
    y.backward()
    out.append(a.weight_orig.grad)
    c = copy.deepcopy(b)
    out.append(c(x))
    out.append(c.parametrizations.weight[0]._u)  # (a fixed point of the power iteration, to rounding)
    return out


# ----------------------------------------------------------------------------------------------
# the tests: each compares with PyTorch where installed, and checks literals and invariants always
# ----------------------------------------------------------------------------------------------


def test_spectral_norm_hook_state_across_train_and_eval():
    ours, _ = run_both(sn_old, rtol=1e-5, atol=1e-6)
    assert ours['Conv2dkeys'] == ['bias', 'weight_orig', 'weight_u', 'weight_v']
    assert ours['Conv2dafter'] == ['bias', 'weight']
    for name in ['Conv2d', 'ConvTranspose2d', 'Linear', 'Embedding']:
        # training moved u; eval did not; the removed weight is W / (u · W v) with eval's u and v
        assert not np.allclose(ours[name + 'u0'], ours[name + 'u1'])
        np.testing.assert_array_equal(ours[name + 'u1'], ours[name + 'u2'])
        w = ours[name + 'sdw']
        mat = (np.swapaxes(w, 0, 1) if name == 'ConvTranspose2d' else w).reshape(ours[name + 'u1'].shape[0], -1)
        sigma = ours[name + 'u1'] @ mat @ ours[name + 'v1']
        np.testing.assert_allclose(ours[name + 'w'], w / sigma, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours['Lineary'][0, :3], LITERALS['sn_old'], rtol=1e-5)


def test_spectral_norm_parametrization_state_across_train_and_eval():
    ours, _ = run_both(sn_new, rtol=1e-4, atol=1e-5)  # (float32 convolutions: oneDNN's AVX-512 sums 5e-5 apart)
    assert ours['Linearkeys'] == ['bias', 'parametrizations.weight.0._u', 'parametrizations.weight.0._v',
                                  'parametrizations.weight.original']
    assert ours['Linearafter'] == ['bias', 'weight']
    for name in ['Conv2d', 'ConvTranspose2d', 'Linear']:
        np.testing.assert_array_equal(ours[name + 'eval'], ours[name + 'eval2'])  # eval runs no power iteration
        # sigma's estimate u·Wv is at most W's norm, so the normed weight's norm is at least 1, and close to it
        assert 1.0 - 1e-5 <= ours[name + 'sigma'] < 1.01
    np.testing.assert_allclose(ours['Lineary'][0, :3], LITERALS['sn_new'], rtol=1e-5)


def test_gan_utility_errors_and_gradient_clipping():
    ours = plain(errors(OURS))
    torch_modules = pytorch()
    if torch_modules is not None:
        theirs = plain(errors(torch_modules))
        for a, b in zip(ours, theirs):
            if isinstance(a, tuple) and isinstance(a[0], str):  # (an error: the class, and PyTorch's words first)
                assert a[0] == b[0] and a[1].startswith(b[1]), (a, b)
            else:
                run_both_same(a, b)
    assert ours[0][0] == 'RuntimeError' and 'two spectral_norm hooks' in ours[0][1]
    assert ours[4] == 4.0 and ours[6] == pytest.approx(2.5)
    np.testing.assert_allclose(ours[5][0], [0.75, 1.0, 0.0], rtol=1e-6)
    np.testing.assert_allclose(ours[8][0], [0.01, 0.01, 0.0], rtol=1e-6)
    assert ours[9][1].startswith('element 0 of tensors does not require grad')
    assert ours[10][1].startswith('One of the differentiated Tensors does not require grad')
    assert ours[12] == [False, False]


def run_both_same(a, b):
    from .pytorch_programs import assert_same

    assert_same(a, b, 1e-6, 1e-7)


def test_parametrize_cached_and_state_dict_round_trips():
    ours, _ = run_both(cached_sn, rtol=1e-5, atol=1e-6)
    y, grad, y2, v, keys, y_old, metadata, whole, bias = ours
    assert whole is True and bias is False
    np.testing.assert_allclose(y[0], LITERALS['cached_sn'], rtol=1e-5)


def test_sagan_hand_written_spectral_norm():
    ours, _ = run_both(sagan_own_sn, rtol=1e-4, atol=1e-6)
    hist, keys, params, weight, requires, n_optimized = ours
    assert keys == ['c.module.bias', 'c.module.weight_bar', 'c.module.weight_u', 'c.module.weight_v',
                    'l.module.bias', 'l.module.weight_bar', 'l.module.weight_u', 'l.module.weight_v']
    assert n_optimized == 4
    np.testing.assert_allclose(hist, LITERALS['sagan_own_sn'], rtol=1e-4)


def test_spectral_norms_follow_a_model_to_float64():
    ours, _ = run_both(dtypes, rtol=1e-10, atol=1e-12)
    assert ours[1:4] == (True, True, True) and ours[6] is True
    np.testing.assert_allclose(ours[0][0], LITERALS['dtypes'], rtol=1e-7)


def test_spectral_norms_under_no_grad_inference_mode_and_deepcopy():
    ours, _ = run_both(modes, rtol=1e-5, atol=1e-6)
    # train-mode forwards under no_grad and inference_mode still step the power iteration
    assert not np.array_equal(ours[0], ours[2])
    assert ours[8] is True and ours[9] is False  # the hook's weight is computed, not a leaf
    assert ours[10] == [0.0, 0.0] and ours[11] == [True, True]  # zero_grad(set_to_none=False), then module.zero_grad()
    np.testing.assert_allclose(ours[14], ours[5], rtol=1e-5)  # the deepcopy's u: the same fixed point
    np.testing.assert_allclose(ours[0][0], [0.4654574, -0.12284949, -1.0504853], rtol=1e-5)
