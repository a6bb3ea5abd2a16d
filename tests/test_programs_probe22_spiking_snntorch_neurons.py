# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Spiking and other dynamical, biologically inspired networks as snnTorch, SpikingJelly, Norse, BindsNET and papers'
reference code write them, run as tests/probe22_spiking_common.py says. snnTorch's other neurons: RLeaky (all-to-all
and one-to-one), Synaptic, ALIF, Alpha, SLSTM, LeakyParallel (``nn.RNN(nonlinearity='relu')`` with a diagonal
``weight_hh`` kept by a gradient hook); its ``init_hidden`` states detached in place through a class-level list of
instances; the old ``_SpikeTensor`` subclass."""

import math

import numpy as np
import pytest

from .probe22_spiking_common import dtype_name
from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# more neurons, training schemes and the autograd.Function protocol
# ----------------------------------------------------------------------------------------------


def rleaky_synaptic_alif(m, all_to_all):
    torch, nn, F = m.torch, m.nn, m.F

    class ATanSpike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha=2.0):
            ctx.save_for_backward(x)
            ctx.alpha = alpha
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return ctx.alpha / 2 / (1 + (math.pi / 2 * ctx.alpha * x) ** 2) * g, None
    spike = ATanSpike.apply

    class RLeaky(nn.Module):
        def __init__(self, beta, linear_features=None, V=1.0, all_to_all=True, learn_recurrent=True, threshold=1.0):
            super().__init__()
            self.beta = beta
            self.threshold = threshold
            self.all_to_all = all_to_all
            if all_to_all:
                self.recurrent = nn.Linear(linear_features, linear_features)
            else:
                V = torch.as_tensor(V)
                if learn_recurrent:
                    self.V = nn.Parameter(V)
                else:
                    self.register_buffer("V", V)

        def init_rleaky(self):
            return torch.zeros(0), torch.zeros(0)

        def forward(self, input_, spk, mem):
            if not spk.shape == input_.shape:
                spk = torch.zeros_like(input_)
            if not mem.shape == input_.shape:
                mem = torch.zeros_like(input_)
            rec = self.recurrent(spk) if self.all_to_all else spk * self.V
            reset = (mem - self.threshold > 0).float().detach()
            mem = self.beta * mem + input_ + rec - reset * self.threshold
            spk = spike(mem - self.threshold)
            return spk, mem

    class Synaptic(nn.Module):
        def __init__(self, alpha, beta):
            super().__init__()
            self.alpha = nn.Parameter(torch.as_tensor(alpha))
            self.beta = nn.Parameter(torch.as_tensor(beta))

        def forward(self, x, syn, mem):
            reset = spike(mem - 1.0).detach()
            syn = self.alpha.clamp(0, 1) * syn + x
            mem = self.beta.clamp(0, 1) * mem + syn - reset
            return spike(mem - 1.0), syn, mem

    class ALIF(nn.Module):
        def __init__(self, n, tau_m=20.0, tau_a=200.0, beta_a=1.8):
            super().__init__()
            self.log_tau_m = nn.Parameter(torch.full((n,), math.log(tau_m)))
            self.register_buffer("rho", torch.tensor(math.exp(-1.0 / tau_a)))
            self.beta_a = beta_a

        def forward(self, x, state):
            v, a, z = state
            alpha = torch.exp(-1.0 / self.log_tau_m.exp())
            a = self.rho * a + (1 - self.rho) * z
            A = 0.5 + self.beta_a * a
            v = alpha * v + (1 - alpha) * x - A * z.detach()
            z = spike(v - A, 3.0)
            return z, (v, a, z)
    torch.manual_seed(0)
    fc1 = nn.Linear(6, 10)
    r = RLeaky(0.85, 10, all_to_all=all_to_all, V=0.3)
    fc2 = nn.Linear(10, 10)
    syn = Synaptic(0.7, 0.9)
    fc3 = nn.Linear(10, 10)
    alif = ALIF(10)
    fc4 = nn.Linear(10, 3)
    mods = nn.ModuleList([fc1, r, fc2, syn, fc3, alif, fc4])
    opt = torch.optim.Adamax(mods.parameters(), lr=2e-2)
    x = torch.rand(20, 4, 6) * 1.5
    tgt = torch.tensor([0, 1, 2, 0])
    losses = []
    for it in range(3):
        spk1, mem1 = r.init_rleaky()
        s2 = m2 = torch.zeros(4, 10)
        st = (torch.zeros(4, 10), torch.zeros(4, 10), torch.zeros(4, 10))
        outs = []
        for t in range(20):
            spk1, mem1 = r(fc1(x[t]), spk1, mem1)
            spk2, s2, m2 = syn(fc2(spk1), s2, m2)
            z, st = alif(fc3(spk2) * 3, st)
            outs.append(fc4(z))
        out = torch.stack(outs)
        loss = F.cross_entropy(out.sum(0), tgt) + 0.1 * F.cross_entropy(out.permute(1, 2, 0),
                                                                        tgt.unsqueeze(1).expand(4, 20))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss)
    return dict(losses=losses, grads={k: p.grad for k, p in mods.named_parameters()}, out=out)


def leaky_parallel(m):
    torch, nn, F = m.torch, m.nn, m.F

    class ATan(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha=2.0):
            ctx.save_for_backward(x)
            ctx.alpha = alpha
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return ctx.alpha / 2 / (1 + (math.pi / 2 * ctx.alpha * x).pow_(2)) * g, None

    class LeakyParallel(nn.Module):
        def __init__(self, input_size, hidden_size, beta=None, threshold=1.0, learn_beta=False, bias=True):
            super().__init__()
            self.rnn = nn.RNN(input_size, hidden_size, num_layers=1, nonlinearity='relu', bias=bias,
                              batch_first=False)
            self._beta_buffer(beta, learn_beta)
            self.hidden_size = hidden_size
            if self.beta is not None:
                self.beta = self.beta.clamp(0, 1)
            self.register_buffer("threshold", torch.as_tensor(threshold))
            self._beta_to_weight_hh()
            self.rnn.weight_hh_l0.register_hook(self.grad_hook)

        def _beta_buffer(self, beta, learn_beta):
            if not isinstance(beta, torch.Tensor):
                if beta is not None:
                    beta = torch.as_tensor([beta])
            self.register_buffer("beta", beta)

        def grad_hook(self, grad):
            device = grad.device
            diag_mask = torch.eye(self.hidden_size, device=device)
            return grad * diag_mask

        def _beta_to_weight_hh(self):
            with torch.no_grad():
                if self.beta is not None:
                    if isinstance(self.beta, (float, int)):
                        self.rnn.weight_hh_l0.fill_(self.beta)
                    elif isinstance(self.beta, torch.Tensor) or isinstance(self.beta, torch.FloatTensor):
                        if len(self.beta) == 1:
                            self.rnn.weight_hh_l0.fill_(self.beta[0])
                    self.rnn.weight_hh_l0.data = self.rnn.weight_hh_l0.data * torch.eye(self.hidden_size)

        def forward(self, input_):
            mem = self.rnn(input_)
            mem_shift = mem[0] - self.threshold
            spk = ATan.apply(mem_shift)
            return spk
    torch.manual_seed(0)
    lp = LeakyParallel(5, 7, beta=0.9)
    fc = nn.Linear(7, 2)
    opt = torch.optim.Adam(list(lp.parameters()) + list(fc.parameters()), lr=1e-2)
    x = torch.rand(15, 3, 5) * 2
    for it in range(3):
        spk = lp(x)
        loss = F.cross_entropy(fc(spk.mean(0)), torch.tensor([0, 1, 1]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return dict(whh=lp.rnn.weight_hh_l0, g=lp.rnn.weight_hh_l0.grad, gi=lp.rnn.weight_ih_l0.grad, loss=loss,
                spk=spk.sum(0), beta=lp.beta, bufs=sorted(k for k, _ in lp.named_buffers()))

def slstm_alpha(m):
    torch, nn, F = m.torch, m.nn, m.F

    class FS(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g / (25 * x.abs() + 1) ** 2

    class SLSTM(nn.Module):
        def __init__(self, input_size, hidden_size, threshold=1.0):
            super().__init__()
            self.lstm_cell = nn.LSTMCell(input_size, hidden_size)
            self.threshold = threshold

        def forward(self, input_, syn, mem):
            mem, syn = self.lstm_cell(input_, (mem, syn))
            spk = FS.apply(mem - self.threshold)
            return spk, syn, mem

    class Alpha(nn.Module):
        def __init__(self, alpha, beta, threshold=1.0):
            super().__init__()
            self.register_buffer("alpha", torch.as_tensor(alpha))
            self.register_buffer("beta", torch.as_tensor(beta))
            self.threshold = threshold

        def forward(self, input_, syn_exc, syn_inh, mem):
            reset = FS.apply(mem - self.threshold).detach()
            syn_exc = self.alpha * syn_exc + input_
            syn_inh = self.beta * syn_inh - input_
            tau_alpha = torch.log(self.alpha) / (torch.log(self.beta) - torch.log(self.alpha)) + 1
            mem = (syn_exc + syn_inh) - reset * (self.alpha - self.beta) * tau_alpha * self.threshold
            spk = FS.apply(mem - self.threshold)
            return spk, syn_exc, syn_inh, mem
    torch.manual_seed(0)
    sl = SLSTM(4, 6, threshold=0.1)
    fc = nn.Linear(6, 6)
    al = Alpha(0.9, 0.8)
    x = torch.rand(10, 2, 4)
    syn = mem = torch.zeros(2, 6)
    se = si = am = torch.zeros(2, 6)
    outs = []
    for t in range(10):
        s, syn, mem = sl(x[t], syn, mem)
        s2, se, si, am = al(fc(s) * 4, se, si, am)
        outs.append(s2)
    o = torch.stack(outs)
    loss = F.mse_loss(o.mean(0), torch.full((2, 6), 0.3)) + (mem ** 2).mean()
    loss.backward()
    return dict(o=o, loss=loss, g=[p.grad for p in sl.parameters()], gf=fc.weight.grad)


def spike_tensor_subclass(m):
    torch = m.torch

    class _SpikeTensor(torch.Tensor):
        def __new__(cls, *args, init_flag=False):
            return super().__new__(cls, *args)

        def __init__(self, *args, init_flag=False):
            super().__init__()
            self.init_flag = init_flag
    mem = _SpikeTensor(init_flag=False)
    info = (type(mem).__name__, tuple(mem.shape), hasattr(mem, "init_flag"), dtype_name(mem.dtype))
    inp = torch.ones(2, 3)
    if mem.init_flag is False:
        mem = torch.zeros_like(inp, requires_grad=True)
    mem2 = _SpikeTensor([1.0, 2.0], init_flag=True)
    return dict(info=info, mem=mem, rg=mem.requires_grad, t2=type(mem2 * 2).__name__, v=mem2 * 2, f=mem2.init_flag)


@pytest.mark.parametrize("all_to_all", [True, False])
def test_rleaky_synaptic_and_adaptive_lif(all_to_all):
    ours, _ = run_both(rleaky_synaptic_alif, all_to_all, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([float(x) for x in ours["losses"]], RLEAKY_LOSSES[all_to_all], rtol=1e-5)
    assert ("1.recurrent.weight" in ours["grads"]) == all_to_all and ("1.V" in ours["grads"]) != all_to_all


RLEAKY_LOSSES = {True: [5.231178, 4.035376, 3.270919], False: [2.305195, 1.872244, 1.626868]}


def test_leaky_parallel_keeps_a_diagonal_recurrence():
    ours, _ = run_both(leaky_parallel, rtol=1e-4, atol=1e-5)
    w_hh, g_hh = ours["whh"], ours["g"]
    np.testing.assert_array_equal(g_hh, np.diag(np.diag(g_hh)))  # the hook masked the off-diagonal gradient
    np.testing.assert_array_equal(w_hh, np.diag(np.diag(w_hh)))
    assert np.abs(np.diag(w_hh) - 0.9).max() < 0.05 and ours["bufs"] == ["beta", "threshold"]
    np.testing.assert_allclose(ours["beta"], [0.9])
    assert float(ours["loss"]) == pytest.approx(LEAKY_PARALLEL_LOSS, rel=1e-5)


LEAKY_PARALLEL_LOSS = 0.6288645


def test_slstm_into_alpha_neurons():
    ours, _ = run_both(slstm_alpha, rtol=1e-4, atol=1e-5)
    assert float(ours["loss"]) == pytest.approx(SLSTM_LOSS, rel=1e-5)
    assert set(np.unique(ours["o"])) <= {0.0, 1.0} and all(np.abs(g).sum() > 0 for g in ours["g"])


SLSTM_LOSS = 0.0918889


def test_old_snntorch_spike_tensor_subclass():
    ours, _ = run_both(spike_tensor_subclass)
    assert ours["info"] == ("_SpikeTensor", (0,), True, "float32")
    assert ours["t2"] == "_SpikeTensor" and ours["f"] is True
    np.testing.assert_allclose(ours["v"], [2.0, 4.0])
    np.testing.assert_array_equal(ours["mem"], np.zeros((2, 3)))


# ----------------------------------------------------------------------------------------------
# snnTorch's hidden states, spiking transformers, E/I rate networks, GLMs, and the tools around BPTT
# ----------------------------------------------------------------------------------------------


def snn_init_hidden(m):
    torch, nn, F = m.torch, m.nn, m.F

    class ATan(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g / (1 + (math.pi * x) ** 2)

    class SpikingNeuron(nn.Module):
        instances = []

        def __init__(self, threshold=1.0, init_hidden=False, output=False, graded_spikes_factor=1.0,
                     learn_graded_spikes_factor=False):
            super().__init__()
            SpikingNeuron.instances.append(self)
            self.init_hidden = init_hidden
            self.output = output
            self.register_buffer("threshold", torch.as_tensor(threshold))
            gsf = torch.as_tensor(graded_spikes_factor)
            if learn_graded_spikes_factor:
                self.graded_spikes_factor = nn.Parameter(gsf)
            else:
                self.register_buffer("graded_spikes_factor", gsf)

        def fire(self, mem):
            spk = ATan.apply(mem - self.threshold)
            return spk * self.graded_spikes_factor

        @classmethod
        def init(cls):
            cls.instances = []

        @classmethod
        def detach_hidden(cls):
            for layer in range(len(cls.instances)):
                if isinstance(cls.instances[layer], Leaky):
                    cls.instances[layer].mem.detach_()

        @classmethod
        def reset_hidden(cls):
            for layer in range(len(cls.instances)):
                if isinstance(cls.instances[layer], Leaky):
                    cls.instances[layer].mem = torch.zeros_like(cls.instances[layer].mem, requires_grad=False)

    class Leaky(SpikingNeuron):
        def __init__(self, beta, **kw):
            super().__init__(**kw)
            self.register_buffer("beta", torch.as_tensor(beta))
            if self.init_hidden:
                self.mem = torch.zeros(1)

        def forward(self, input_, mem=None):
            if not self.init_hidden:
                reset = self.fire(mem).detach() / self.graded_spikes_factor
                mem = self.beta.clamp(0, 1) * mem + input_ - reset * self.threshold
                return self.fire(mem), mem
            if self.mem.shape != input_.shape:
                self.mem = torch.zeros_like(input_, device=self.mem.device)
            reset = (self.mem - self.threshold > 0).float()
            self.mem = self.beta.clamp(0, 1) * self.mem + input_ - reset * self.threshold
            spk = self.fire(self.mem)
            if self.output:
                return spk, self.mem
            return spk
    SpikingNeuron.init()
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(12, 10), Leaky(beta=0.9, init_hidden=True),
                        nn.Linear(10, 3), Leaky(beta=0.8, init_hidden=True, output=True, graded_spikes_factor=0.5,
                                               learn_graded_spikes_factor=True))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    data = torch.rand(12, 4, 3, 4) * 2
    targets = torch.tensor([0, 1, 2, 0])
    losses = []
    for epoch in range(2):
        SpikingNeuron.reset_hidden()
        for chunk in range(3):
            spk_rec, mem_rec = [], []
            for step in range(4):
                spk, mem = net(data[chunk * 4 + step])
                spk_rec.append(spk)
                mem_rec.append(mem)
            spk_rec = torch.stack(spk_rec)
            loss = F.cross_entropy(spk_rec.sum(0), targets) + 0.1 * F.mse_loss(torch.stack(mem_rec),
                                                                                torch.zeros(4, 4, 3))
            opt.zero_grad()
            loss.backward()
            opt.step()
            SpikingNeuron.detach_hidden()
            losses.append(loss)
    names = [type(x).__name__ for x in SpikingNeuron.instances]
    return dict(losses=losses, gsf=net[4].graded_spikes_factor, names=names, g=net[1].weight.grad,
                sd=sorted(net.state_dict().keys()))


def test_snntorch_init_hidden_with_class_level_detach():
    ours, _ = run_both(snn_init_hidden, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([float(x) for x in ours["losses"]], INIT_HIDDEN_LOSSES, rtol=1e-5)
    assert ours["names"] == ["Leaky", "Leaky"] and float(ours["gsf"]) == 0.5  # (no output spike: no gradient)
    assert ours["sd"] == ["1.bias", "1.weight", "2.beta", "2.graded_spikes_factor", "2.threshold", "3.bias",
                          "3.weight", "4.beta", "4.graded_spikes_factor", "4.threshold"]


INIT_HIDDEN_LOSSES = [1.112594, 1.141369, 1.147195, 1.10381, 1.109853, 1.117334]
