# ruff: noqa: B007, B008  (the programs are kept as their authors wrote them)
"""Spiking and other dynamical, biologically inspired networks as snnTorch, SpikingJelly, Norse, BindsNET and papers'
reference code write them, run as tests/probe22_spiking_common.py says. SpikingJelly: MemoryModule
(``__getattr__``/``__setattr__`` over a dict of memories, ``detach_()`` of them, ``_apply``), LIF/IF nodes in
multi-step mode behind SeqToANNContainer, ``torch.jit.script`` surrogates, PLIF, tdBN convolutions, a sequence-wide
dropout mask; Norse: LIF parameters as a NamedTuple of 0-d tensors, SuperSpike and HeaviErfc, a recurrent LIF cell
into a leaky integrator read out by its maximum over time."""

import copy
import math
from typing import NamedTuple

import numpy as np
import pytest

from .probe22_spiking_common import dtype_name
from .pytorch_programs import run_both

pytestmark = [pytest.mark.filterwarnings(r"ignore:.*jit\.script.* is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")]


# ----------------------------------------------------------------------------------------------
# SpikingJelly: memory modules, multi-step LIF/IF nodes
# ----------------------------------------------------------------------------------------------


def spikingjelly_network(m, detach_reset, hard_reset):
    torch, nn, F = m.torch, m.nn, m.F

    @torch.jit.script
    def heaviside(x: torch.Tensor):
        return (x >= 0).to(x)

    @torch.jit.script
    def sigmoid_backward(grad_output: torch.Tensor, x: torch.Tensor, alpha: float):
        sgax = (x * alpha).sigmoid_()
        return grad_output * (1. - sgax) * sgax * alpha, None

    class sigmoid(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            if x.requires_grad:
                ctx.save_for_backward(x)
                ctx.alpha = alpha
            return heaviside(x)

        @staticmethod
        def backward(ctx, grad_output):
            return sigmoid_backward(grad_output, ctx.saved_tensors[0], ctx.alpha)

    class atan(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            if x.requires_grad:
                ctx.save_for_backward(x)
                ctx.alpha = alpha
            return heaviside(x)

        @staticmethod
        def backward(ctx, grad_output):
            grad_x = None
            if ctx.needs_input_grad[0]:
                shared_c = grad_output / (1 + (ctx.alpha * math.pi / 2 * ctx.saved_tensors[0]).pow_(2))
                grad_x = ctx.alpha / 2 * shared_c
            return grad_x, None

    class SurrogateFunctionBase(nn.Module):
        def __init__(self, alpha, spiking=True):
            super().__init__()
            self.spiking = spiking
            self.alpha = alpha

        def extra_repr(self):
            return f'alpha={self.alpha}, spiking={self.spiking}'

        def forward(self, x):
            if self.spiking:
                return self.spiking_function(x, self.alpha)
            return self.primitive_function(x, self.alpha)

    class Sigmoid(SurrogateFunctionBase):
        def __init__(self, alpha=4.0, spiking=True):
            super().__init__(alpha, spiking)

        @staticmethod
        def spiking_function(x, alpha):
            return sigmoid.apply(x, alpha)

        @staticmethod
        def primitive_function(x, alpha):
            return (x * alpha).sigmoid()

    class ATan(SurrogateFunctionBase):
        def __init__(self, alpha=2.0, spiking=True):
            super().__init__(alpha, spiking)

        @staticmethod
        def spiking_function(x, alpha):
            return atan.apply(x, alpha)

    class MemoryModule(nn.Module):
        def __init__(self):
            super().__init__()
            self._memories = {}
            self._memories_rv = {}

        def register_memory(self, name, value):
            assert not hasattr(self, name), f'{name} has been set as a member variable!'
            self._memories[name] = value
            self.set_reset_value(name, value)

        def set_reset_value(self, name, value):
            self._memories_rv[name] = copy.deepcopy(value)

        def reset(self):
            for key in self._memories.keys():
                self._memories[key] = copy.deepcopy(self._memories_rv[key])

        def __getattr__(self, name):
            if '_memories' in self.__dict__:
                memories = self.__dict__['_memories']
                if name in memories:
                    return memories[name]
            return super().__getattr__(name)

        def __setattr__(self, name, value):
            _memories = self.__dict__.get('_memories')
            if _memories is not None and name in _memories:
                _memories[name] = value
            else:
                super().__setattr__(name, value)

        def __delattr__(self, name):
            if name in self._memories:
                del self._memories[name]
                del self._memories_rv[name]
            else:
                return super().__delattr__(name)

        def __dir__(self):
            module_attrs = dir(self.__class__)
            attrs = list(self.__dict__.keys())
            keys = module_attrs + attrs + list(self._memories.keys())
            return sorted([k for k in keys if not k[0].isdigit()])

        def detach(self):
            for key in self._memories.keys():
                if isinstance(self._memories[key], torch.Tensor):
                    self._memories[key].detach_()

        def _apply(self, fn):
            for key, value in self._memories.items():
                if isinstance(value, torch.Tensor):
                    self._memories[key] = fn(value)
            for key, value in self._memories_rv.items():
                if isinstance(value, torch.Tensor):
                    self._memories_rv[key] = fn(value)
            return super()._apply(fn)

    class BaseNode(MemoryModule):
        def __init__(self, v_threshold=1., v_reset=0., surrogate_function=Sigmoid(), detach_reset=False,
                     step_mode='s'):
            super().__init__()
            self.register_memory('v', 0. if v_reset is None else v_reset)
            self.v_threshold = v_threshold
            self.v_reset = v_reset
            self.detach_reset = detach_reset
            self.surrogate_function = surrogate_function
            self.step_mode = step_mode

        def v_float_to_tensor(self, x):
            if isinstance(self.v, float):
                v_init = self.v
                self.v = torch.full_like(x.data, v_init)

        def neuronal_fire(self):
            return self.surrogate_function(self.v - self.v_threshold)

        def neuronal_reset(self, spike):
            spike_d = spike.detach() if self.detach_reset else spike
            if self.v_reset is None:
                self.v = self.v - spike_d * self.v_threshold
            else:
                self.v = (1. - spike_d) * self.v + spike_d * self.v_reset

        def single_step_forward(self, x):
            self.v_float_to_tensor(x)
            self.neuronal_charge(x)
            spike = self.neuronal_fire()
            self.neuronal_reset(spike)
            return spike

        def multi_step_forward(self, x_seq):
            T = x_seq.shape[0]
            y_seq = []
            self.v_seq = []
            for t in range(T):
                y = self.single_step_forward(x_seq[t])
                y_seq.append(y)
                self.v_seq.append(self.v)
            self.v_seq = torch.stack(self.v_seq)
            return torch.stack(y_seq)

        def forward(self, *args, **kwargs):
            if self.step_mode == 's':
                return self.single_step_forward(*args, **kwargs)
            return self.multi_step_forward(*args, **kwargs)

    class LIFNode(BaseNode):
        def __init__(self, tau=2., decay_input=True, **kw):
            super().__init__(**kw)
            self.tau = tau
            self.decay_input = decay_input

        def extra_repr(self):
            return f'tau={self.tau}, v_threshold={self.v_threshold}'

        def neuronal_charge(self, x):
            if self.decay_input:
                if self.v_reset is None or self.v_reset == 0.:
                    self.v = self.v + (x - self.v) / self.tau
                else:
                    self.v = self.v + (x - (self.v - self.v_reset)) / self.tau
            else:
                self.v = self.v - (self.v - (0. if self.v_reset is None else self.v_reset)) / self.tau + x

    class IFNode(BaseNode):
        def neuronal_charge(self, x):
            self.v = self.v + x

    class SeqToANNContainer(nn.Sequential):
        def forward(self, x_seq):
            y_shape = [x_seq.shape[0], x_seq.shape[1]]
            y_seq = super().forward(x_seq.flatten(0, 1))
            y_shape.extend(y_seq.shape[1:])
            return y_seq.view(y_shape)

    def reset_net(net):
        for mod in net.modules():
            if hasattr(mod, 'reset'):
                mod.reset()

    def set_step_mode(net, step_mode):
        for mod in net.modules():
            if hasattr(mod, 'step_mode'):
                mod.step_mode = step_mode

    v_reset = 0. if hard_reset else None
    torch.manual_seed(0)
    net = nn.Sequential(
        SeqToANNContainer(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)),
        LIFNode(tau=2., v_threshold=0.3, v_reset=v_reset, detach_reset=detach_reset, surrogate_function=ATan()),
        SeqToANNContainer(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 3 * 3, 5)),
        IFNode(v_threshold=0.5, v_reset=v_reset, detach_reset=detach_reset, surrogate_function=Sigmoid(alpha=4.)),
    )
    set_step_mode(net, 'm')
    opt = torch.optim.SGD(net.parameters(), lr=0.5, momentum=0.9)
    T = 4
    img = torch.rand(3, 1, 6, 6)
    label = torch.tensor([1, 4, 0])
    label_onehot = F.one_hot(label, 5).float()
    losses, firing_rates = [], []
    for it in range(3):
        x_seq = (torch.rand((T,) + img.shape) < img).float()  # Poisson encoding
        out_fr = net(x_seq).mean(0)
        loss = F.mse_loss(out_fr, label_onehot)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss)
        firing_rates.append(out_fr)
        v_seq = net[1].v_seq
        reset_net(net)
    after_reset = net[1].v
    memories = sorted(n for n in dir(net[1]) if n == 'v')
    # single steps, then the memories detached in place, then the network in float64 (its memories with it)
    set_step_mode(net, 's')
    s = net[1]((torch.rand(2, 4) * 3).requires_grad_())
    v_before = net[1].v
    v_was_recorded = v_before.requires_grad
    net[1].detach()
    s2 = net[1](torch.rand(2, 4) * 3)
    net.double()
    return dict(losses=losses, firing_rates=firing_rates, v_seq=v_seq, memories=memories, after_reset=after_reset,
                grads=[p.grad for p in net.parameters()], s=s, s2=s2, v_dtype=dtype_name(net[1].v.dtype),
                v_was_recorded=v_was_recorded, v_detached=(v_before.requires_grad, v_before.is_leaf),
                repr=repr(net[1]).replace('autograd', 'torch'))


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("hard_reset", [True, False])
def test_spikingjelly_memory_module_network(detach_reset, hard_reset):
    ours, _ = run_both(spikingjelly_network, detach_reset, hard_reset, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["losses"], JELLY_LOSSES[detach_reset, hard_reset], rtol=1e-5)
    assert ours["memories"] == ["v"] and ours["after_reset"] == 0.0
    assert ours["v_seq"].shape == (4, 3, 4, 6, 6)
    assert ours["v_was_recorded"] and ours["v_detached"] == (False, True)  # detach_() in place on a memory
    assert ours["v_dtype"] == "float64"  # _apply reached the memories
    assert ours["repr"].startswith("LIFNode(\n  tau=2.0, v_threshold=0.3") and "ATan(alpha=2.0" in ours["repr"]
    for rates in ours["firing_rates"]:
        assert set(np.unique(rates * 4)) <= {0.0, 1.0, 2.0, 3.0, 4.0}


JELLY_LOSSES = {
    (True, True): [0.2, 0.2, 0.15],
    (True, False): [0.2458333, 0.2, 0.15],
    (False, True): [0.2, 0.2, 0.1708333],
    (False, False): [0.2458333, 0.2, 0.15],
}


# ----------------------------------------------------------------------------------------------
# Norse: LIF parameters as a NamedTuple, SuperSpike and HeaviErfc, a recurrent cell into a leaky integrator
# ----------------------------------------------------------------------------------------------


def norse_network(m):
    torch, nn, F = m.torch, m.nn, m.F

    class LIFParameters(NamedTuple):
        tau_syn_inv: torch.Tensor = torch.as_tensor(1.0 / 5e-3)
        tau_mem_inv: torch.Tensor = torch.as_tensor(1.0 / 1e-2)
        v_leak: torch.Tensor = torch.as_tensor(0.0)
        v_th: torch.Tensor = torch.as_tensor(1.0)
        v_reset: torch.Tensor = torch.as_tensor(0.0)
        method: str = "super"
        alpha: float = torch.as_tensor(100.0)

    class LIFFeedForwardState(NamedTuple):
        v: torch.Tensor
        i: torch.Tensor

    def heaviside(data):
        return torch.where(data <= torch.zeros_like(data), torch.zeros_like(data), torch.ones_like(data))

    class SuperSpike(torch.autograd.Function):
        @staticmethod
        @torch.jit.ignore
        def forward(ctx, input_tensor, alpha):
            ctx.save_for_backward(input_tensor)
            ctx.alpha = alpha
            return heaviside(input_tensor)

        @staticmethod
        @torch.jit.ignore
        def backward(ctx, grad_output):
            (inp,) = ctx.saved_tensors
            alpha = ctx.alpha
            grad_input = grad_output.clone()
            grad = grad_input / (alpha * torch.abs(inp) + 1.0).pow(2)
            return grad, None

    class HeaviErfc(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, k):
            ctx.save_for_backward(x)
            ctx.k = k
            return heaviside(x)

        @staticmethod
        def backward(ctx, dy):
            (x,) = ctx.saved_tensors
            derfc = (2 * torch.exp(-(ctx.k * x).pow(2))) / (torch.as_tensor(math.pi).sqrt())
            return derfc * dy, None

    def threshold(x, method, alpha):
        if method == "super":
            return SuperSpike.apply(x, alpha)
        return HeaviErfc.apply(x, alpha)

    def li_feed_forward_step(input_tensor, state, p=LIFParameters(), dt=0.001):
        dv = dt * p.tau_mem_inv * ((p.v_leak - state.v) + state.i)
        v_new = state.v + dv
        di = -dt * p.tau_syn_inv * state.i
        i_new = state.i + di + input_tensor
        return v_new, LIFFeedForwardState(v_new, i_new)

    class LIFRecurrentCell(nn.Module):
        def __init__(self, input_size, hidden_size, p=LIFParameters()):
            super().__init__()
            self.input_weights = nn.Parameter(torch.randn(hidden_size, input_size) * np.sqrt(2 / hidden_size))
            self.recurrent_weights = nn.Parameter(torch.randn(hidden_size, hidden_size) * np.sqrt(2 / hidden_size))
            self.hidden_size = hidden_size
            self.p = p

        def forward(self, x, state=None):
            if state is None:
                z = torch.zeros(x.shape[0], self.hidden_size, device=x.device, dtype=x.dtype)
                state = (z, LIFFeedForwardState(v=self.p.v_leak.detach() * torch.ones_like(z), i=torch.zeros_like(z)))
            z, s = state
            dv = 0.001 * self.p.tau_mem_inv * ((self.p.v_leak - s.v) + s.i)
            v_decayed = s.v + dv
            i_decayed = s.i + -0.001 * self.p.tau_syn_inv * s.i
            z_new = threshold(v_decayed - self.p.v_th, self.p.method, self.p.alpha)
            v_new = (1 - z_new) * v_decayed + z_new * self.p.v_reset
            i_new = i_decayed + F.linear(x, self.input_weights) + F.linear(z, self.recurrent_weights)
            return z_new, (z_new, LIFFeedForwardState(v_new, i_new))

    torch.manual_seed(0)
    cell = LIFRecurrentCell(6, 10, LIFParameters(method="super", alpha=torch.as_tensor(100.0)))
    cell2 = LIFRecurrentCell(6, 10, LIFParameters(method="erfc", alpha=torch.as_tensor(3.0),
                                                  v_th=torch.as_tensor(0.3)))
    readout = nn.Linear(20, 3)
    opt = torch.optim.Adam(list(cell.parameters()) + list(cell2.parameters()) + list(readout.parameters()), lr=2e-2)
    x = torch.rand(30, 4, 6) * 8
    y = torch.tensor([0, 1, 2, 1])
    losses = []
    for it in range(3):
        s1 = s2 = None
        ls = LIFFeedForwardState(torch.zeros(4, 3), torch.zeros(4, 3))
        vs, zs = [], []
        for t in range(x.shape[0]):
            z1, s1 = cell(x[t], s1)
            z2, s2 = cell2(x[t], s2)
            v, ls = li_feed_forward_step(readout(torch.cat([z1, z2], 1)), ls)
            vs.append(v)
            zs.append(z1)
        voltages = torch.stack(vs)
        m_, _ = torch.max(voltages, 0)
        log_p_y = F.log_softmax(m_, dim=1)
        loss = F.nll_loss(log_p_y, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss)
    return dict(losses=losses, spikes=torch.stack(zs).sum(), grads=[p.grad for p in cell.parameters()],
                grads2=[p.grad for p in cell2.parameters()], voltages=voltages,
                tau_mem_inv=LIFParameters().tau_mem_inv, alpha_dtype=dtype_name(LIFParameters().alpha.dtype))


def test_norse_recurrent_lif_with_leaky_integrator_readout():
    ours, _ = run_both(norse_network, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([float(x) for x in ours["losses"]], NORSE_LOSSES, rtol=1e-5)
    assert ours["alpha_dtype"] == "float32" and ours["tau_mem_inv"] == np.float32(100.0)
    assert ours["spikes"] == NORSE_SPIKES
    assert np.abs(ours["grads"][0]).sum() > 0 and np.abs(ours["grads2"][0]).sum() > 0  # (input weights)


NORSE_LOSSES = [1.101552, 1.090529, 1.094313]
NORSE_SPIKES = 380.0


def plif_hooks(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x >= 0).to(x)

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            s = torch.sigmoid(4 * x)
            return g * 4 * s * (1 - s)

    class PLIF(nn.Module):
        def __init__(self, init_tau=2.0):
            super().__init__()
            self.w = nn.Parameter(torch.as_tensor(-math.log(init_tau - 1.)))

        def forward(self, x_seq):
            v = torch.zeros_like(x_seq[0])
            out = []
            for t in range(x_seq.shape[0]):
                v = v + (x_seq[t] - v) * self.w.sigmoid()
                s = Spike.apply(v - 0.3)
                v = v * (1 - s.detach())
                out.append(s)
            return torch.stack(out)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(2), nn.Linear(16, 12), PLIF(), nn.Linear(12, 4), PLIF(3.0))
    rec = {}

    def hook(name):
        def fn(mod, inp, out):
            rec[name] = out.detach().sum(0)
        return fn
    hs = [net[2].register_forward_hook(hook("l1")), net[4].register_forward_hook(hook("l2"))]
    x = torch.rand(6, 2, 4, 4) * 6
    out = net(x)
    fr = out.mean(0)
    reg = 1e-2 * sum(r.sum() for r in rec.values())
    loss = F.cross_entropy(fr, torch.tensor([1, 3])) + torch.relu(out.sum(0) - 2).pow(2).mean()
    loss.backward()
    for h in hs:
        h.remove()
    sd = net.state_dict()
    net2 = copy.deepcopy(net)
    net2.load_state_dict(sd)
    vec = torch.nn.utils.parameters_to_vector(net.parameters())
    return dict(out=out, loss=loss, rec=rec, reg=reg, w_g=[net[2].w.grad, net[4].w.grad], vec=vec,
                keys=sorted(sd.keys()), shapes=[tuple(v.shape) for v in sd.values()])


def tdbn_conv(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.gt(0).float()

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * (x.abs() < 0.5).float()
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 4, 3, padding=1, bias=False)
    bn = nn.BatchNorm2d(4)
    pool = nn.AvgPool2d(2)
    fc = nn.Linear(4 * 4 * 4, 3)
    params = list(conv.parameters()) + list(bn.parameters()) + list(fc.parameters())
    opt = torch.optim.RMSprop(params, lr=1e-2)
    T, B = 5, 3
    x = torch.rand(T, B, 2, 8, 8)
    for it in range(2):
        y = bn(conv(x.flatten(0, 1))).reshape(T, B, 4, 8, 8)
        mem = torch.zeros(B, 4, 8, 8)
        spikes = []
        for t in range(T):
            mem = 0.5 * mem + y[t]
            s = Spike.apply(mem - 0.5)
            mem = mem * (1. - s)
            spikes.append(s)
        s = torch.stack(spikes)
        z = fc(pool(s.flatten(0, 1)).flatten(1)).view(T, B, 3).mean(0)
        loss = F.cross_entropy(z, torch.tensor([0, 1, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return dict(loss=loss, g=conv.weight.grad, rm=bn.running_mean, rv=bn.running_var, nb=bn.num_batches_tracked,
                s=s.sum((0, 1)))


def test_plif_with_forward_hooks_recording_spikes():
    ours, _ = run_both(plif_hooks, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["rec"]["l2"], ours["out"].sum(0))
    assert float(ours["loss"]) == pytest.approx(PLIF_LOSS, rel=1e-5)
    assert all(g.shape == () and g != 0 for g in ours["w_g"])
    assert ours["keys"] == ["1.bias", "1.weight", "2.w", "3.bias", "3.weight", "4.w"]


PLIF_LOSS = 1.6335995


def test_threshold_dependent_batch_norm_conv_snn():
    ours, _ = run_both(tdbn_conv, rtol=1e-4, atol=1e-5)
    assert float(ours["loss"]) == pytest.approx(TDBN_LOSS, rel=1e-5)
    assert int(ours["nb"]) == 2


TDBN_LOSS = 0.9907166
