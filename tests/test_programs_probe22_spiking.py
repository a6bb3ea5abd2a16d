# ruff: noqa: B007, B008, B023, E731, E741, F841, UP004, UP008  (the programs are kept as their authors wrote them)
"""Spiking and other dynamical, biologically inspired networks as snnTorch, SpikingJelly, Norse, BindsNET and papers'
reference code write them (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same seed
(random draws match bit for bit), comparing values, gradients, spike counts and dtypes, with literals, NumPy by hand
and invariants where PyTorch is missing.

- surrogate gradients: heaviside forwards (``(x > 0).float()``, ``(x >= 0).to(x)``, ``torch.heaviside``) with
  arctan, fast-sigmoid, triangle, straight-through, piecewise-leaky and user-supplied backwards in
  ``autograd.Function``s (``ctx.save_for_backward``, ``ctx.needs_input_grad``, ``mark_non_differentiable``,
  ``set_materialize_grads``, ``mark_dirty``, ``once_differentiable``, ``setup_context`` with ``vmap``/``func.grad``);
- snnTorch: Leaky with reset by subtraction and to zero (reset detached or not, beta learnt or a buffer) trained by
  BPTT on a membrane cross-entropy
  RLeaky (all-to-all and one-to-one), Synaptic, ALIF, Alpha, SLSTM, LeakyParallel
  (``nn.RNN(nonlinearity='relu')`` with a diagonal ``weight_hh`` kept by a gradient hook)
  rate, latency, linear
  latency and delta encodings
  ce_rate, ce_count and mse_count losses
  the old ``_SpikeTensor`` subclass;
- SpikingJelly: MemoryModule (``__getattr__``/``__setattr__`` over a dict of memories, ``detach_()`` of them,
  ``_apply``), LIF/IF nodes in multi-step mode behind SeqToANNContainer, ``torch.jit.script`` surrogates, PLIF,
  tdBN convolutions, a sequence-wide dropout mask;
- Norse: LIF parameters as a NamedTuple of 0-d tensors, SuperSpike and HeaviErfc, a recurrent LIF cell into a
  leaky integrator read out by its maximum over time;
- plasticity under ``no_grad``: STDP with traces (SpikingJelly's and BindsNET's), Oja's rule, a Hopfield memory
  (``addmm_``, ``fill_diagonal_``), Diehl & Cook 2015 (adaptive thresholds, ``masked_fill_``, ``bmm`` updates,
  column normalisation), e-prop with eligibility traces written into ``.grad``;
- reservoirs and continuous time: an echo state network (``linalg.eigvals`` spectral radius, ridge readouts by
  ``linalg.solve``, ``inv``, ``lstsq`` and ``pinv``
  gradients through ``eigvals`` and ``solve``), a sparse
  reservoir, LTC and CfC cells (default, pure, no-gate), Izhikevich neurons, event streams binned into frames and
  voxel grids;
- around them: snnTorch's ``init_hidden`` states detached in place through a class-level list of instances, SEW
  ResNet blocks and Spikformer's spiking self-attention, an excitatory/inhibitory rate RNN (Dale's masks,
  ``init._calculate_fan_in_and_fan_out``) and Dale's law as a parametrization beside spectral norm and the sparse
  and orthogonal inits, a Poisson GLM with a spike-history filter fitted by L-BFGS, checkpointed BPTT replaying
  the encoder's draws, forward-mode JVPs through a surrogate, decoding spike counts with ties, spike-train
  statistics (ISIs, PSPs by FFT and by conv1d), and ``torch.heaviside`` without a surrogate failing at backward.

The library bugs these programs found are tested in tests/test_probe22_spiking_fixes.py.
"""

import copy
import math
from typing import NamedTuple

import numpy as np
import pytest

from .pytorch_programs import run_both

pytestmark = [pytest.mark.filterwarnings(r"ignore:.*jit\.script.* is deprecated:DeprecationWarning"),
              pytest.mark.filterwarnings("ignore:Sparse invariant checks:UserWarning")]


def dtype_name(dtype):
    return str(dtype).split(".")[-1]


# ----------------------------------------------------------------------------------------------
# surrogate gradients
# ----------------------------------------------------------------------------------------------


def surrogates(m):
    torch, nn, F = m.torch, m.nn, m.F

    class ATan(torch.autograd.Function):
        @staticmethod
        def forward(ctx, mem, alpha=2.0):
            spk = (mem > 0).float()
            ctx.save_for_backward(mem)
            ctx.alpha = alpha
            return spk

        @staticmethod
        def backward(ctx, grad_output):
            (mem,) = ctx.saved_tensors
            grad = ctx.alpha / 2 / (1 + (math.pi / 2 * ctx.alpha * mem).pow_(2)) * grad_output
            return grad, None

    class FastSigmoid(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input_, slope=25):
            ctx.save_for_backward(input_)
            ctx.slope = slope
            out = (input_ > 0).float()
            return out

        @staticmethod
        def backward(ctx, grad_output):
            (input_,) = ctx.saved_tensors
            grad_input = grad_output.clone()
            grad = grad_input / (ctx.slope * torch.abs(input_) + 1.0) ** 2
            return grad, None

    class Triangle(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, threshold=1.0):
            ctx.save_for_backward(x)
            ctx.threshold = threshold
            return torch.heaviside(x, torch.tensor(0.0))

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            grad = g.clone() * ctx.threshold
            grad[x >= 0] = -grad[x >= 0]
            grad = grad * (x.abs() < ctx.threshold)
            return grad, None

    class STE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return (x >= 0).to(x)

        @staticmethod
        def backward(ctx, g):
            if ctx.needs_input_grad[0]:
                return g
            return None

    class CustomSurrogate(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input_, custom_surrogate_function):
            out = (input_ > 0).float()
            ctx.save_for_backward(input_, out)
            ctx.custom_surrogate_function = custom_surrogate_function
            return out

        @staticmethod
        def backward(ctx, grad_output):
            input_, out = ctx.saved_tensors
            grad = ctx.custom_surrogate_function(input_, grad_output.clone(), out)
            return grad, None

    class PiecewiseLeakyReLU(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, w=1, c=0.01):
            if x.requires_grad:
                ctx.save_for_backward(x)
                ctx.w = w
                ctx.c = c
            return (x >= 0).to(x)

        @staticmethod
        def backward(ctx, grad_output):
            grad_x = None
            if ctx.needs_input_grad[0]:
                w, c = ctx.w, ctx.c
                x = ctx.saved_tensors[0]
                mask_width = (x.abs() < w)
                mask_c = mask_width.logical_not()
                grad_x = x.masked_fill(mask_width, 1 / (2 * w)).masked_fill(mask_c, c) * grad_output
            return grad_x, None, None

    def exp_surrogate(input_, grad_input, spikes):
        return grad_input * torch.exp(-input_.abs()) * (1 + spikes)

    torch.manual_seed(0)
    x = torch.randn(5, 7, requires_grad=True)
    out = {}
    for name, fn in [("atan", lambda x: ATan.apply(x, 2.0)), ("fast_sigmoid", lambda x: FastSigmoid.apply(x)),
                     ("triangle", lambda x: Triangle.apply(x, 1.5)), ("ste", STE.apply),
                     ("custom", lambda x: CustomSurrogate.apply(x, exp_surrogate)),
                     ("piecewise", lambda x: PiecewiseLeakyReLU.apply(x, 0.5, 0.05))]:
        x.grad = None
        s = fn(x)
        (s * torch.arange(7.0)).sum().backward()
        out[name] = (s, x.grad.clone(), s.requires_grad, dtype_name(s.dtype))
    unrecorded = PiecewiseLeakyReLU.apply(torch.randn(3))
    out["unrecorded"] = (unrecorded, unrecorded.requires_grad)
    return x, out


def test_surrogate_functions_against_numpy():
    ours, _ = run_both(surrogates)
    x, out = ours
    step = np.arange(7.0)
    want = {
        "atan": 2.0 / 2 / (1 + (math.pi / 2 * 2.0 * x) ** 2),
        "fast_sigmoid": 1 / (25 * np.abs(x) + 1) ** 2,
        "triangle": np.where(x >= 0, -1.5, 1.5) * (np.abs(x) < 1.5),
        "ste": np.ones_like(x),
        "custom": np.exp(-np.abs(x)) * (1 + (x > 0)),
        "piecewise": np.where(np.abs(x) < 0.5, 1.0, 0.05),
    }
    for name, local in want.items():
        spikes, grad, requires_grad, dtype = out[name]
        np.testing.assert_array_equal(spikes, (x >= 0) if name in ("ste", "triangle", "piecewise") else (x > 0))
        np.testing.assert_allclose(grad, local * step, rtol=1e-5, atol=1e-7, err_msg=name)
        assert requires_grad and dtype == "float32"
    assert out["unrecorded"][1] is False


# ----------------------------------------------------------------------------------------------
# snnTorch: Leaky trained by BPTT
# ----------------------------------------------------------------------------------------------


def snntorch_leaky(m, detach_reset, learn_beta):
    torch, nn, F = m.torch, m.nn, m.F

    class FastSigmoid(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).type(x.dtype)

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g / (25 * x.abs() + 1.0) ** 2

    spike_grad = FastSigmoid.apply

    class Leaky(nn.Module):
        def __init__(self, beta, threshold=1.0, learn_beta=False, reset_mechanism="subtract"):
            super().__init__()
            beta = torch.as_tensor(beta)
            if learn_beta:
                self.beta = nn.Parameter(beta)
            else:
                self.register_buffer("beta", beta)
            self.register_buffer("threshold", torch.as_tensor(threshold))
            self.reset_mechanism = reset_mechanism

        def init_leaky(self):
            return torch.zeros(0)

        def forward(self, input_, mem):
            if mem.shape != input_.shape:
                mem = torch.zeros_like(input_)
            reset = self.fire(mem)
            if detach_reset:
                reset = reset.detach()
            beta = torch.clamp(self.beta, 0, 1)
            if self.reset_mechanism == "subtract":
                mem = beta * mem + input_ - reset * self.threshold
            else:
                mem = beta * mem + input_ - reset * (beta * mem + input_)
            spk = self.fire(mem)
            return spk, mem

        def fire(self, mem):
            return spike_grad(mem - self.threshold)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(12, 16)
            self.lif1 = Leaky(beta=0.9, learn_beta=learn_beta)
            self.fc2 = nn.Linear(16, 3)
            self.lif2 = Leaky(beta=0.8, learn_beta=learn_beta, reset_mechanism="zero")

        def forward(self, x):
            mem1 = self.lif1.init_leaky()
            mem2 = self.lif2.init_leaky()
            spk2_rec, mem2_rec = [], []
            for step in range(x.size(0)):
                cur1 = self.fc1(x[step])
                spk1, mem1 = self.lif1(cur1, mem1)
                cur2 = self.fc2(spk1)
                spk2, mem2 = self.lif2(cur2, mem2)
                spk2_rec.append(spk2)
                mem2_rec.append(mem2)
            return torch.stack(spk2_rec, dim=0), torch.stack(mem2_rec, dim=0)

    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=5e-3, betas=(0.9, 0.999))
    data = torch.rand(10, 4, 12) * 2.0
    targets = torch.tensor([0, 2, 1, 2])
    loss_fn = nn.CrossEntropyLoss()
    losses, counts = [], []
    for it in range(4):
        spk_rec, mem_rec = net(data)
        loss_val = torch.zeros((1), dtype=torch.float)
        for step in range(10):
            loss_val += loss_fn(mem_rec[step], targets)
        opt.zero_grad()
        loss_val.backward()
        opt.step()
        losses.append(loss_val.item())
        counts.append(spk_rec.sum(0))
    _, idx = spk_rec.sum(dim=0).max(1)
    acc = np.mean((targets == idx).detach().cpu().numpy())
    return dict(losses=losses, counts=counts, acc=float(acc), params=dict(net.named_parameters()),
                grads={k: p.grad for k, p in net.named_parameters()}, buffers=dict(net.named_buffers()))


@pytest.mark.parametrize("detach_reset", [True, False])
@pytest.mark.parametrize("learn_beta", [False, True])
def test_snntorch_leaky_bptt(detach_reset, learn_beta):
    ours, _ = run_both(snntorch_leaky, detach_reset, learn_beta, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["losses"], LEAKY_LOSSES[detach_reset, learn_beta], rtol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]
    counts = np.stack(ours["counts"])
    assert counts.dtype == np.float32 and np.all(counts == np.round(counts)) and counts.max() <= 10
    assert ("lif1.beta" in ours["params"]) == learn_beta and ("lif1.beta" in ours["buffers"]) != learn_beta
    if learn_beta:
        assert ours["grads"]["lif1.beta"].shape == () and ours["grads"]["lif1.beta"] != 0


LEAKY_LOSSES = {
    (True, False): [14.654374, 13.847687, 12.682545, 12.212715],
    (True, True): [14.654374, 13.748626, 12.531487, 12.127068],
    (False, False): [14.654374, 13.736883, 12.697653, 12.123409],
    (False, True): [14.654374, 13.638855, 12.546225, 12.099343],
}


# ----------------------------------------------------------------------------------------------
# snnTorch: encodings and spike-count losses
# ----------------------------------------------------------------------------------------------


def spike_encodings(m):
    torch, F = m.torch, m.F
    g = torch.Generator().manual_seed(3)
    data = torch.rand(4, 6, generator=g)
    num_steps = 7
    rate = torch.bernoulli(torch.clamp(data.repeat(num_steps, 1, 1) * 1.0, 0, 1), generator=g)
    torch.manual_seed(5)
    rate2 = torch.bernoulli(data.unsqueeze(0).expand(num_steps, -1, -1))
    poisson = torch.rand_like(data).le(data).to(data)
    # latency: the time a RC circuit charged by the input takes to reach a threshold
    tau, threshold = 5, 0.01
    d = torch.clamp(data, threshold + 1e-7)
    spike_time = tau * torch.log(d / (d - threshold))
    spike_time = torch.round(spike_time / spike_time.max() * (num_steps - 1)).long()
    latency = torch.zeros((num_steps,) + tuple(data.shape)).scatter(0, spike_time.unsqueeze(0), 1)
    # linear latency, as one-hot spike trains
    linear = torch.clamp((num_steps - 1) * (1 - data), 0, num_steps - 1).round()
    one_hot = F.one_hot(linear.long(), num_classes=num_steps).to(data).permute(2, 0, 1)
    # delta modulation
    seq = torch.cumsum(torch.randn(9, 3), 0)
    prev = torch.cat((torch.zeros_like(seq[0]).unsqueeze(0), seq[:-1]))
    delta = torch.ones_like(seq) * ((seq - prev) >= 0.5) - torch.ones_like(seq) * ((seq - prev) <= -0.5)
    return dict(data=data, rate=rate, rate2=rate2, poisson=poisson, spike_time=spike_time, latency=latency,
                linear=linear, one_hot=one_hot, seq=seq, delta=delta, dtype=dtype_name(rate.dtype),
                time_dtype=dtype_name(spike_time.dtype))


def test_rate_latency_and_delta_encodings():
    ours, _ = run_both(spike_encodings)
    data = ours["data"]
    for rate in (ours["rate"], ours["rate2"]):
        assert rate.shape == (7, 4, 6) and set(np.unique(rate)) <= {0.0, 1.0}
    assert ours["dtype"] == "float32" and ours["time_dtype"] == "int64"
    assert RATE_SPIKES == (ours["rate"].sum(), ours["rate2"].sum(), ours["poisson"].sum())
    d = np.maximum(data, 0.01 + 1e-7)
    t = 5 * np.log(d / (d - 0.01))
    np.testing.assert_array_equal(ours["spike_time"], np.round(t / t.max() * 6))
    assert np.all(ours["latency"].sum(0) == 1)  # one spike per input
    np.testing.assert_array_equal(ours["latency"].argmax(0), ours["spike_time"])
    np.testing.assert_array_equal(ours["one_hot"].argmax(0), ours["linear"])
    step = np.diff(np.concatenate([np.zeros((1, 3), np.float32), ours["seq"]]), axis=0)
    np.testing.assert_array_equal(ours["delta"], (step >= 0.5).astype(np.float32) - (step <= -0.5))


RATE_SPIKES = (82.0, 83.0, 14.0)


def spike_count_losses(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(1)
    spk = (torch.rand(8, 5, 4) > 0.6).float().requires_grad_()
    targets = torch.tensor([0, 3, 1, 1, 2])
    # ce_rate_loss: the cross-entropy of each step's spikes, averaged over time
    log_p = nn.LogSoftmax(dim=-1)(spk)
    loss = torch.zeros((1), dtype=torch.float)
    for step in range(spk.size(0)):
        loss += nn.NLLLoss()(log_p[step], targets)
    ce = loss / spk.size(0)
    # ce_count_loss
    spike_count = torch.sum(spk, 0)
    ce_count = nn.NLLLoss()(F.log_softmax(spike_count, dim=-1), targets)
    # mse_count_loss: 80% of the steps for the right class, 20% for the others
    on_target = torch.ones_like(spike_count) * 0.8 * 8
    off_target = torch.ones_like(spike_count) * 0.2 * 8
    onehot = F.one_hot(targets, 4)
    spike_count_target = torch.where(onehot == 1, on_target, off_target)
    mse = nn.MSELoss()(spike_count, spike_count_target)
    (ce + ce_count + mse).backward()
    return dict(spk=spk, ce=ce, ce_count=ce_count, mse=mse, grad=spk.grad, count_dtype=dtype_name(spike_count.dtype),
                onehot_dtype=dtype_name(onehot.dtype), nonzero=torch.count_nonzero(spk, dim=0),
                bool_count=(spk > 0).sum(0), bool_dtype=dtype_name((spk > 0).sum(0).dtype))


def test_spike_count_losses_against_numpy():
    ours, _ = run_both(spike_count_losses)
    spk = ours["spk"].astype(np.float64)
    targets = np.array([0, 3, 1, 1, 2])

    def log_softmax(z):
        return z - np.log(np.exp(z).sum(-1, keepdims=True))

    ce = -np.mean([log_softmax(s)[np.arange(5), targets].mean() for s in spk])
    count = spk.sum(0)
    ce_count = -log_softmax(count)[np.arange(5), targets].mean()
    target = np.where(np.eye(4)[targets] == 1, 6.4, 1.6)
    np.testing.assert_allclose([ours["ce"].item(), ours["ce_count"], ours["mse"]],
                               [ce, ce_count, ((count - target) ** 2).mean()], rtol=1e-6)
    d_count = 2 * (count - target) / count.size + (np.exp(log_softmax(count)) - np.eye(4)[targets]) / 5
    d_step = (np.exp(log_softmax(spk)) - np.eye(4)[targets]) / 5 / 8
    np.testing.assert_allclose(ours["grad"], d_step + d_count, rtol=1e-5, atol=1e-7)
    assert (ours["count_dtype"], ours["onehot_dtype"], ours["bool_dtype"]) == ("float32", "int64", "int64")
    np.testing.assert_array_equal(ours["nonzero"], count)
    np.testing.assert_array_equal(ours["bool_count"], count)


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


# ----------------------------------------------------------------------------------------------
# plasticity under no_grad: STDP, BindsNET traces, Oja, Hopfield, Diehl & Cook
# ----------------------------------------------------------------------------------------------


def plasticity_rules(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    N_pre, N_post, B, T = 8, 5, 3, 20
    fc = nn.Linear(N_pre, N_post, bias=False)
    nn.init.uniform_(fc.weight, 0.0, 0.5)
    tau_pre, tau_post = 2.0, 4.0
    trace_pre = trace_post = None
    pre_spikes = (torch.rand(T, B, N_pre) < 0.3).float()
    v = torch.zeros(B, N_post)
    w_hist = []
    with torch.no_grad():  # SpikingJelly's STDPLearner on a Linear layer
        for t in range(T):
            x = pre_spikes[t]
            v = v * 0.8 + fc(x)
            s = (v >= 0.6).float()
            v = v * (1 - s)
            if trace_pre is None:
                trace_pre = 0.
                trace_post = 0.
            trace_pre = trace_pre - trace_pre / tau_pre + x
            trace_post = trace_post - trace_post / tau_post + s
            delta_w_pre = -0.01 * (trace_post.unsqueeze(2) * x.unsqueeze(1)).sum(0)
            delta_w_post = 0.012 * (trace_pre.unsqueeze(1) * s.unsqueeze(2)).sum(0)
            fc.weight.data += delta_w_pre + delta_w_post
            fc.weight.data.clamp_(0, 1)
            w_hist.append(fc.weight.detach().clone())
    # BindsNET's traces: decayed in place, set to 1 where a spike is, outer products into the weights
    w = torch.rand(N_pre, N_post)
    x_tr = torch.zeros(N_pre)
    y_tr = torch.zeros(N_post)
    decay = torch.exp(torch.tensor(-1.0 / 20.0))
    for t in range(T):
        pre = pre_spikes[t, 0].bool()
        post = (pre.float() @ w) > 0.9
        x_tr.mul_(decay)
        x_tr.masked_fill_(pre, 1.0)
        y_tr *= decay
        y_tr[post] += 1
        w += 1e-2 * torch.ger(x_tr, post.float()) - 1e-2 * torch.outer(pre.float(), y_tr)
        w.addr_(x_tr, y_tr, alpha=-1e-3)
        w.clamp_(0.0, 1.0)
        w *= 2.0 / w.sum(0).unsqueeze(0)
    # Oja's rule on a Parameter, written in place under no_grad
    p = nn.Parameter(torch.randn(1, 6) * 0.1)
    xs = torch.randn(400, 6) * torch.tensor([3.0, 1.0, 0.5, 0.5, 0.2, 0.1])
    for xi in xs:
        with torch.no_grad():
            y_ = p @ xi
            p += 0.01 * (torch.outer(y_, xi) - (y_ ** 2).unsqueeze(1) * p)
    # a Hopfield memory: Hebbian outer products, no self-connections, recall from a corrupted pattern
    W = torch.zeros(12, 12)
    patterns = torch.sign(torch.randn(2, 12))
    W.addmm_(patterns.t(), patterns, beta=1.0, alpha=1.0 / 12)
    W.fill_diagonal_(0)
    state = patterns[0].clone()
    state[:2] *= -1
    for _ in range(5):
        state = torch.sign(W @ state)
    return dict(w_hist=w_hist, w=w, x_tr=x_tr, y_tr=y_tr, p=p, p_grad=p.grad is None, p_requires_grad=p.requires_grad,
                W=W, state=state, patterns=patterns, w_dtype=dtype_name(w.dtype),
                fc_requires_grad=fc.weight.requires_grad)


def test_stdp_oja_and_hopfield_under_no_grad():
    ours, _ = run_both(plasticity_rules)
    w_hist = np.stack(ours["w_hist"])
    assert w_hist.min() >= 0 and w_hist.max() <= 1 and not np.allclose(w_hist[0], w_hist[-1])
    np.testing.assert_allclose(ours["w"].sum(0), 2.0, rtol=1e-5)  # columns normalised
    assert ours["x_tr"].max() <= 1 and ours["w_dtype"] == "float32"
    # Oja's rule: the weight vector turns to the first principal direction, with unit norm
    p = ours["p"][0]
    np.testing.assert_allclose(np.linalg.norm(p), 1.0, atol=0.05)
    assert abs(p[0]) > 0.95
    assert ours["p_grad"] and ours["p_requires_grad"] and ours["fc_requires_grad"]
    P = ours["patterns"]
    W = P.T @ P / 12
    np.fill_diagonal(W, 0)
    np.testing.assert_allclose(ours["W"], W, rtol=1e-6)
    np.testing.assert_array_equal(ours["state"], P[0])  # recalled


def diehl_cook(m):
    torch = m.torch
    torch.manual_seed(0)
    n_in, n_exc, B = 16, 6, 2
    dt = 1.0

    class Nodes:
        def __init__(self, n, thresh, rest, reset, refrac, tc_decay, theta_plus=0.0, tc_theta_decay=1e7,
                     tc_trace=20.0):
            self.thresh = torch.tensor(thresh)
            self.rest = torch.tensor(rest)
            self.reset = torch.tensor(reset)
            self.refrac = torch.tensor(refrac)
            self.decay = torch.exp(-dt / torch.tensor(tc_decay))
            self.theta_plus = torch.tensor(theta_plus)
            self.theta_decay = torch.exp(-dt / torch.tensor(tc_theta_decay))
            self.trace_decay = torch.exp(-dt / torch.tensor(tc_trace))
            self.v = self.rest * torch.ones(B, n)
            self.theta = torch.zeros(n)
            self.refrac_count = torch.zeros(B, n)
            self.s = torch.zeros(B, n, dtype=torch.bool)
            self.x = torch.zeros(B, n)

        def forward(self, x):
            self.v = self.decay * (self.v - self.rest) + self.rest
            self.v += (self.refrac_count <= 0).float() * x
            self.refrac_count -= dt
            self.s = self.v >= self.thresh + self.theta
            self.refrac_count.masked_fill_(self.s, self.refrac)
            self.v.masked_fill_(self.s, self.reset)
            self.theta *= self.theta_decay
            self.theta += self.theta_plus * self.s.float().sum(0)
            self.x *= self.trace_decay
            self.x.masked_fill_(self.s, 1)

    inp = Nodes(n_in, 1e9, 0., 0., 0., 1e9)
    exc = Nodes(n_exc, -52.0, -65.0, -60.0, 5.0, 100.0, theta_plus=0.05, tc_theta_decay=1e4)
    w = 0.3 * torch.rand(n_in, n_exc)
    w_inh = -10.0 * (torch.ones(n_exc, n_exc) - torch.diag(torch.ones(n_exc)))
    nu = (1e-4, 1e-2)
    norm = 78.0 * n_in / 784
    image = torch.rand(B, n_in)
    spikes = []
    for t in range(60):
        inp.s = torch.bernoulli(image * 0.5).bool()
        inp.x *= inp.trace_decay
        inp.x.masked_fill_(inp.s, 1)
        exc.forward(inp.s.float() @ w * 10 + exc.s.float() @ w_inh)
        source_s = inp.s.view(B, -1).float().unsqueeze(2)
        target_x = exc.x.view(B, -1).unsqueeze(1)
        w -= nu[0] * torch.bmm(source_s, target_x).sum(0)
        source_x = inp.x.view(B, -1).unsqueeze(2)
        target_s = exc.s.view(B, -1).float().unsqueeze(1)
        w += nu[1] * torch.bmm(source_x, target_s).sum(0)
        w.clamp_(0, 1)
        w_abs_sum = w.abs().sum(0).unsqueeze(0)
        w_abs_sum[w_abs_sum == 0] = 1.0
        w *= norm / w_abs_sum
        spikes.append(exc.s.clone())
    S = torch.stack(spikes)
    return dict(w=w, theta=exc.theta, counts=S.sum(0), v=exc.v, spike_dtype=dtype_name(S.dtype),
                refrac_count=exc.refrac_count, count_dtype=dtype_name(S.sum(0).dtype))


def test_diehl_cook_adaptive_thresholds_and_normalised_stdp():
    ours, _ = run_both(diehl_cook, rtol=1e-4, atol=1e-5)
    assert ours["spike_dtype"] == "bool" and ours["count_dtype"] == "int64"
    counts = ours["counts"]
    np.testing.assert_allclose(ours["theta"], 0.05 * counts.sum(0), rtol=0.01)  # (a slow decay: 1e4 steps)
    np.testing.assert_allclose(ours["w"].sum(0), 78.0 * 16 / 784, rtol=1e-5)
    assert counts.tolist() == DIEHL_COOK_COUNTS


DIEHL_COOK_COUNTS = [[5, 4, 5, 0, 0, 5], [4, 1, 1, 3, 5, 6]]


def eprop(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    n_in, n_rec, n_out, T, B = 5, 8, 2, 25, 3
    thr, dt, tau_m, tau_o = 0.6, 1.0, 20.0, 20.0
    alpha = math.exp(-dt / tau_m)
    kappa = math.exp(-dt / tau_o)
    w_in = nn.Parameter(torch.randn(n_rec, n_in) / math.sqrt(n_in))
    w_rec = nn.Parameter(torch.randn(n_rec, n_rec) / math.sqrt(n_rec))
    w_out = nn.Parameter(torch.randn(n_out, n_rec) / math.sqrt(n_rec))
    with torch.no_grad():
        w_rec.fill_diagonal_(0)
    B_fb = torch.randn(n_rec, n_out)  # random feedback weights
    opt = torch.optim.Adam([w_in, w_rec, w_out], lr=1e-2)
    x = (torch.rand(T, B, n_in) < 0.3).float()
    y_target = torch.stack([torch.sin(torch.arange(T) / 4.0), torch.cos(torch.arange(T) / 4.0)], 1)
    y_target = y_target.unsqueeze(1).expand(T, B, n_out)
    losses = []
    for it in range(3):
        v = torch.zeros(B, n_rec)
        z = torch.zeros(B, n_rec)
        y = torch.zeros(B, n_out)
        trace_in = torch.zeros(B, n_in)
        trace_rec = torch.zeros(B, n_rec)
        trace_out = torch.zeros(B, n_rec)
        e_in_f = torch.zeros(B, n_rec, n_in)
        e_rec_f = torch.zeros(B, n_rec, n_rec)
        g_in = torch.zeros_like(w_in)
        g_rec = torch.zeros_like(w_rec)
        g_out = torch.zeros_like(w_out)
        loss = 0.0
        with torch.no_grad():
            for t in range(T):
                trace_in = alpha * trace_in + x[t]
                trace_rec = alpha * trace_rec + z
                v = alpha * v + x[t] @ w_in.t() + z @ w_rec.t() - z * thr
                z = (v > thr).float()
                psi = 0.3 / thr * torch.clamp(1 - torch.abs((v - thr) / thr), min=0)  # pseudo-derivative
                e_in_f = kappa * e_in_f + psi[:, :, None] * trace_in[:, None, :]
                e_rec_f = kappa * e_rec_f + psi[:, :, None] * trace_rec[:, None, :]
                trace_out = kappa * trace_out + z
                y = kappa * y + z @ w_out.t()
                err = y - y_target[t]
                L = torch.einsum('bo,ro->br', err, B_fb)  # learning signals
                g_in += torch.einsum('br,bri->ri', L, e_in_f)
                g_rec += (L.unsqueeze(2) * e_rec_f).sum(0)
                g_out += torch.einsum('bo,br->or', err, trace_out)
                loss += 0.5 * (err ** 2).sum().item()
        w_in.grad = g_in / B
        w_rec.grad = g_rec / B
        w_out.grad = g_out.clone() / B
        w_rec.grad.fill_diagonal_(0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss)
    return dict(losses=losses, w_in=w_in, w_rec=w_rec, w_out=w_out, grads_cleared=w_in.grad is None)


def test_eprop_eligibility_traces_into_grad():
    ours, _ = run_both(eprop, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["losses"], EPROP_LOSSES, rtol=1e-5)
    assert np.all(np.diag(ours["w_rec"]) == 0) and ours["grads_cleared"]


EPROP_LOSSES = [79.33761, 68.92993, 66.67768]


# ----------------------------------------------------------------------------------------------
# reservoirs: an echo state network
# ----------------------------------------------------------------------------------------------


def echo_state_network(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(42)
    N, n_in = 40, 2
    W = torch.rand(N, N, dtype=torch.float64) - 0.5
    mask = torch.rand(N, N) > 0.2
    W[mask] = 0
    eigs = torch.linalg.eigvals(W)
    rho = torch.max(torch.abs(eigs))
    W *= 0.9 / rho
    W_in = (torch.rand(N, 1 + n_in, dtype=torch.float64) - 0.5) * 1.0
    t = torch.arange(0, 300, dtype=torch.float64)
    u = torch.stack([torch.sin(t / 5), torch.cos(t / 7)], 1)
    target = torch.sin((t + 1) / 5).unsqueeze(1)
    a = 0.3  # leaking rate
    x = torch.zeros(N, dtype=torch.float64)
    X = torch.zeros(1 + n_in + N, 300, dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    for k in range(300):
        x = (1 - a) * x + a * torch.tanh(W_in @ torch.cat([one, u[k]]) + W @ x)
        X[:, k] = torch.cat([one, u[k], x])
    washout = 50
    Xw, Yw = X[:, washout:], target[washout:].t()
    reg = 1e-6
    eye = torch.eye(1 + n_in + N, dtype=torch.float64)
    W_out = torch.linalg.solve(Xw @ Xw.T + reg * eye, Xw @ Yw.T).T
    W_out_inv = Yw @ Xw.T @ torch.linalg.inv(Xw @ Xw.T + reg * eye)
    fit = torch.linalg.lstsq(Xw.T, Yw.T)
    pinv = torch.linalg.pinv(Xw.T) @ Yw.T
    return dict(W=W, rho=rho, eig_dtype=dtype_name(eigs.dtype), rho_dtype=dtype_name(rho.dtype),
                radius_after=torch.linalg.eigvals(W).abs().max(), X=Xw, Y=Yw, W_out=W_out, W_out_inv=W_out_inv,
                mse=F.mse_loss(W_out @ Xw, Yw), lstsq_pred=Xw.T @ fit.solution, pinv_pred=Xw.T @ pinv,
                rank=fit.rank, spectral_norm=torch.linalg.matrix_norm(W, ord=2), svdvals=torch.linalg.svdvals(W))


def test_echo_state_network_spectral_radius_and_ridge_readout():
    ours, _ = run_both(echo_state_network, rtol=1e-6, atol=1e-8)
    assert ours["eig_dtype"] == "complex128" and ours["rho_dtype"] == "float64"
    np.testing.assert_allclose(ours["radius_after"], 0.9, rtol=1e-10)
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(ours["W"])).max(), 0.9, rtol=1e-10)
    X, Y = ours["X"], ours["Y"]
    W_out = ours["W_out"]
    # the ridge readout solves its normal equations
    np.testing.assert_allclose((X @ X.T + 1e-6 * np.eye(len(X))) @ W_out.T, X @ Y.T, atol=1e-8)
    np.testing.assert_allclose(ours["W_out_inv"], W_out, rtol=1e-4, atol=1e-6)
    assert ours["mse"] < 1e-3
    np.testing.assert_allclose(ours["lstsq_pred"], ours["pinv_pred"], atol=1e-6)
    np.testing.assert_allclose(ours["spectral_norm"], ours["svdvals"][0], rtol=1e-12)
    np.testing.assert_allclose(ours["svdvals"], np.linalg.svd(ours["W"], compute_uv=False), rtol=1e-10)


def differentiable_reservoir(m):
    torch = m.torch
    torch.manual_seed(1)
    W = torch.randn(6, 6, dtype=torch.float64, requires_grad=True)
    radius = torch.linalg.eigvals(W).abs().max()
    radius.backward()
    X = torch.randn(30, 5, dtype=torch.float64, requires_grad=True)
    Y = torch.randn(30, 2, dtype=torch.float64)
    lam = torch.tensor(0.1, dtype=torch.float64, requires_grad=True)
    W_out = torch.linalg.solve(X.T @ X + lam * torch.eye(5, dtype=torch.float64), X.T @ Y)
    (W_out ** 2).sum().backward()
    solution = torch.linalg.lstsq(X, Y).solution
    (g_lstsq,) = torch.autograd.grad(solution.sum(), X)
    return dict(W=W, radius=radius, g_radius=W.grad, X=X, Y=Y, lam=lam, g_X=X.grad, g_lam=lam.grad, g_lstsq=g_lstsq)


def test_gradients_through_eigvals_and_ridge_solve_against_finite_differences():
    ours, _ = run_both(differentiable_reservoir, rtol=1e-6, atol=1e-8)
    W, X, Y, lam = ours["W"], ours["X"], ours["Y"], float(ours["lam"])

    def numeric(f, a, eps=1e-6):
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            d = np.zeros_like(a)
            d[i] = eps
            g[i] = (f(a + d) - f(a - d)) / (2 * eps)
        return g

    np.testing.assert_allclose(ours["g_radius"], numeric(lambda w: np.abs(np.linalg.eigvals(w)).max(), W),
                               rtol=1e-5, atol=1e-7)

    def ridge(x, lam=lam):
        return (np.linalg.solve(x.T @ x + lam * np.eye(5), x.T @ Y) ** 2).sum()

    np.testing.assert_allclose(ours["g_X"], numeric(ridge, X), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ours["g_lam"], numeric(lambda v: ridge(X, v), np.array(lam)), rtol=1e-5)
    np.testing.assert_allclose(ours["g_lstsq"], numeric(lambda x: np.linalg.lstsq(x, Y, rcond=None)[0].sum(), X),
                               rtol=1e-5, atol=1e-7)


def sparse_reservoir(m):
    torch = m.torch
    torch.manual_seed(0)
    N = 12
    idx = torch.randint(0, N, (2, 30))
    vals = torch.randn(30)
    W = torch.sparse_coo_tensor(idx, vals, (N, N)).coalesce()
    dense = W.to_dense()
    x = torch.randn(N, 1)
    rho = torch.linalg.eigvals(dense).abs().max()
    W2 = W * (0.9 / rho)
    h = torch.zeros(N)
    for t in range(5):
        h = torch.tanh(torch.mv(W2.to_dense(), h) + 0.1 * t)
    return dict(idx=idx, vals=vals, dense=dense, x=x, sparse_mm=torch.sparse.mm(W, x), matmul=W @ x, rho=rho, h=h,
                nnz=W._nnz(), scaled=W2.to_dense())


def test_sparse_reservoir():
    ours, _ = run_both(sparse_reservoir, rtol=1e-5, atol=1e-6)
    dense = np.zeros((12, 12), np.float32)
    np.add.at(dense, tuple(ours["idx"]), ours["vals"])
    np.testing.assert_allclose(ours["dense"], dense, rtol=1e-6)
    np.testing.assert_allclose(ours["sparse_mm"], dense @ ours["x"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ours["matmul"], ours["sparse_mm"], rtol=1e-6)
    assert ours["nnz"] == len({tuple(c) for c in ours["idx"].T})
    np.testing.assert_allclose(np.abs(np.linalg.eigvals(ours["scaled"])).max(), 0.9, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# continuous time: LTC and CfC cells
# ----------------------------------------------------------------------------------------------
def ltc(m):
    torch, nn, F = m.torch, m.nn, m.F

    class LTCCell(nn.Module):
        def __init__(self, in_features, units, ode_unfolds=6, epsilon=1e-8):
            super().__init__()
            self._init_ranges = {"gleak": (0.001, 1.0), "vleak": (-0.2, 0.2), "cm": (0.4, 0.6), "w": (0.001, 1.0),
                                 "sigma": (3, 8), "mu": (0.3, 0.8), "sensory_w": (0.001, 1.0),
                                 "sensory_sigma": (3, 8), "sensory_mu": (0.3, 0.8)}
            self.in_features, self.units = in_features, units
            self._ode_unfolds = ode_unfolds
            self._epsilon = epsilon
            self.softplus = nn.Softplus()
            self.make_positive_fn = nn.Softplus()
            rs = np.random.RandomState(0)
            adj = rs.choice([-1, 1, 0], size=(units, units))
            sadj = rs.choice([-1, 1, 0], size=(in_features, units))
            self._params = {}

            def add_weight(name, init_value, requires_grad=True):
                param = torch.nn.Parameter(init_value, requires_grad=requires_grad)
                self.register_parameter(name, param)
                self._params[name] = param
                return param

            def get_init_value(shape, param_name):
                minval, maxval = self._init_ranges[param_name]
                if minval == maxval:
                    return torch.ones(shape) * minval
                return torch.rand(*shape) * (maxval - minval) + minval
            add_weight("gleak", get_init_value((units,), "gleak"))
            add_weight("vleak", get_init_value((units,), "vleak"))
            add_weight("cm", get_init_value((units,), "cm"))
            add_weight("sigma", get_init_value((units, units), "sigma"))
            add_weight("mu", get_init_value((units, units), "mu"))
            add_weight("w", get_init_value((units, units), "w"))
            add_weight("erev", torch.Tensor(adj))
            add_weight("sensory_sigma", get_init_value((in_features, units), "sensory_sigma"))
            add_weight("sensory_mu", get_init_value((in_features, units), "sensory_mu"))
            add_weight("sensory_w", get_init_value((in_features, units), "sensory_w"))
            add_weight("sensory_erev", torch.Tensor(sadj))
            add_weight("sparsity_mask", torch.Tensor(np.abs(adj)), requires_grad=False)
            add_weight("sensory_sparsity_mask", torch.Tensor(np.abs(sadj)), requires_grad=False)
            add_weight("input_w", torch.ones((in_features,)))
            add_weight("input_b", torch.zeros((in_features,)))
            add_weight("output_w", torch.ones((units,)))
            add_weight("output_b", torch.zeros((units,)))

        def _sigmoid(self, v_pre, mu, sigma):
            v_pre = torch.unsqueeze(v_pre, -1)
            mues = v_pre - mu
            x = sigma * mues
            return torch.sigmoid(x)

        def _ode_solver(self, inputs, state, elapsed_time):
            v_pre = state
            sensory_w_activation = self.make_positive_fn(self._params["sensory_w"]) * self._sigmoid(
                inputs, self._params["sensory_mu"], self._params["sensory_sigma"])
            sensory_w_activation = sensory_w_activation * self._params["sensory_sparsity_mask"]
            sensory_rev_activation = sensory_w_activation * self._params["sensory_erev"]
            w_numerator_sensory = torch.sum(sensory_rev_activation, dim=1)
            w_denominator_sensory = torch.sum(sensory_w_activation, dim=1)
            cm_t = self.make_positive_fn(self._params["cm"]) / (elapsed_time / self._ode_unfolds)
            w_param = self.make_positive_fn(self._params["w"])
            for t in range(self._ode_unfolds):
                w_activation = w_param * self._sigmoid(v_pre, self._params["mu"], self._params["sigma"])
                w_activation = w_activation * self._params["sparsity_mask"]
                rev_activation = w_activation * self._params["erev"]
                w_numerator = torch.sum(rev_activation, dim=1) + w_numerator_sensory
                w_denominator = torch.sum(w_activation, dim=1) + w_denominator_sensory
                gleak = self.make_positive_fn(self._params["gleak"])
                numerator = cm_t * v_pre + gleak * self._params["vleak"] + w_numerator
                denominator = cm_t + gleak + w_denominator
                v_pre = numerator / (denominator + self._epsilon)
            return v_pre

        def forward(self, inputs, states, elapsed_time=1.0):
            inputs = inputs * self._params["input_w"] + self._params["input_b"]
            next_state = self._ode_solver(inputs, states, elapsed_time)
            outputs = next_state * self._params["output_w"] + self._params["output_b"]
            return outputs, next_state

        def apply_weight_constraints(self):
            self._params["w"].data = torch.nn.ReLU()(self._params["w"].data)
            self._params["sensory_w"].data = torch.nn.ReLU()(self._params["sensory_w"].data)
            self._params["cm"].data = torch.nn.ReLU()(self._params["cm"].data)
            self._params["gleak"].data = torch.nn.ReLU()(self._params["gleak"].data)
    torch.manual_seed(0)
    cell = LTCCell(3, 7)
    opt = torch.optim.Adam(cell.parameters(), lr=0.05)
    xs = torch.randn(2, 12, 3)
    ys = torch.randn(2, 12, 7)
    ts = torch.rand(2, 12) + 0.5
    losses = []
    for it in range(3):
        h = torch.zeros(2, 7)
        outs = []
        for t in range(12):
            o, h = cell(xs[:, t], h, ts[:, t].view(-1, 1))
            outs.append(o)
        out = torch.stack(outs, dim=1)
        loss = F.mse_loss(out, ys)
        opt.zero_grad()
        loss.backward()
        opt.step()
        cell.apply_weight_constraints()
        losses.append(loss)
    return dict(losses=losses, grads={k: p.grad for k, p in cell.named_parameters()},
                params={k: p for k, p in cell.named_parameters()},
                rg={k: p.requires_grad for k, p in cell.named_parameters()}, n=len(list(cell.parameters())))


def test_ltc_cell_ode_unfolds():
    ours, _ = run_both(ltc, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([float(x) for x in ours["losses"]], LTC_LOSSES, rtol=1e-5)
    assert ours["n"] == 17 and not ours["rg"]["sparsity_mask"] and not ours["rg"]["sensory_sparsity_mask"]
    assert ours["grads"]["sparsity_mask"] is None and ours["grads"]["erev"] is not None
    for name in ("w", "sensory_w", "cm", "gleak"):  # the constraints keep them non-negative
        assert ours["params"][name].min() >= 0


LTC_LOSSES = [1.3197563, 1.2318158, 1.1948144]


def cfc(m, mode):
    torch, nn, F = m.torch, m.nn, m.F

    class LeCun(nn.Module):
        def __init__(self):
            super().__init__()
            self.tanh = nn.Tanh()

        def forward(self, x):
            return 1.7159 * self.tanh(0.666 * x)

    class CfCCell(nn.Module):
        def __init__(self, input_size, hidden_size, mode="default", backbone_activation="lecun_tanh",
                     backbone_units=16, backbone_layers=1, backbone_dropout=0.0, sparsity_mask=None):
            super().__init__()
            self.input_size, self.hidden_size = input_size, hidden_size
            self.mode = mode
            self.sparsity_mask = None if sparsity_mask is None else nn.Parameter(
                data=torch.from_numpy(np.abs(sparsity_mask.T).astype(np.float32)), requires_grad=False)
            act = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU,
                   "lecun_tanh": LeCun}[backbone_activation]
            layer_list = [nn.Linear(input_size + hidden_size, backbone_units), act()]
            for i in range(1, backbone_layers):
                layer_list.append(nn.Linear(backbone_units, backbone_units))
                layer_list.append(act())
                if backbone_dropout > 0.0:
                    layer_list.append(torch.nn.Dropout(backbone_dropout))
            self.backbone = nn.Sequential(*layer_list)
            self.tanh = nn.Tanh()
            self.sigmoid = nn.Sigmoid()
            cat_shape = int(backbone_units)
            self.ff1 = nn.Linear(cat_shape, hidden_size)
            if self.mode == "pure":
                self.w_tau = torch.nn.Parameter(data=torch.zeros(1, self.hidden_size), requires_grad=True)
                self.A = torch.nn.Parameter(data=torch.ones(1, self.hidden_size), requires_grad=True)
            else:
                self.ff2 = nn.Linear(cat_shape, hidden_size)
                self.time_a = nn.Linear(cat_shape, hidden_size)
                self.time_b = nn.Linear(cat_shape, hidden_size)
            self.init_weights()

        def init_weights(self):
            for w in self.parameters():
                if w.dim() == 2 and w.requires_grad:
                    torch.nn.init.xavier_uniform_(w)

        def forward(self, input, hx, ts):
            x = torch.cat([input, hx], 1)
            x = self.backbone(x)
            if self.sparsity_mask is not None:
                ff1 = F.linear(x, self.ff1.weight * self.sparsity_mask, self.ff1.bias)
            else:
                ff1 = self.ff1(x)
            if self.mode == "pure":
                new_hidden = (-self.A * torch.exp(-ts * (torch.abs(self.w_tau) + torch.abs(ff1))) * ff1 + self.A)
            else:
                if self.sparsity_mask is not None:
                    ff2 = F.linear(x, self.ff2.weight * self.sparsity_mask, self.ff2.bias)
                else:
                    ff2 = self.ff2(x)
                ff1 = self.tanh(ff1)
                ff2 = self.tanh(ff2)
                t_a = self.time_a(x)
                t_b = self.time_b(x)
                t_interp = self.sigmoid(t_a * ts + t_b)
                if self.mode == "no_gate":
                    new_hidden = ff1 + t_interp * ff2
                else:
                    new_hidden = ff1 * (1.0 - t_interp) + t_interp * ff2
            return new_hidden, new_hidden

    class CfC(nn.Module):
        def __init__(self, input_size, units, proj_size=None, return_sequences=True, batch_first=True,
                     mixed_memory=False, mode="default"):
            super().__init__()
            self.state_size = units
            self.rnn_cell = CfCCell(input_size, units, mode, backbone_layers=2,
                                    sparsity_mask=(np.random.RandomState(0).rand(16, units) > 0.3).astype(np.float64))
            self.use_mixed = mixed_memory
            if self.use_mixed:
                self.lstm = nn.LSTMCell(input_size, units)
            self.fc = nn.Linear(units, proj_size)
            self.batch_first = batch_first
            self.return_sequences = return_sequences

        def forward(self, input, hx=None, timespans=None):
            is_batched = input.dim() == 3
            batch_dim = 0 if self.batch_first else 1
            seq_dim = 1 if self.batch_first else 0
            if not is_batched:
                input = input.unsqueeze(batch_dim)
                if timespans is not None:
                    timespans = timespans.unsqueeze(batch_dim)
            batch_size, seq_len = input.size(batch_dim), input.size(seq_dim)
            h_state = torch.zeros((batch_size, self.state_size), device=input.device)
            c_state = torch.zeros((batch_size, self.state_size), device=input.device) if self.use_mixed else None
            output_sequence = []
            for t in range(seq_len):
                inputs = input[:, t]
                ts = 1.0 if timespans is None else timespans[:, t].squeeze()
                if self.use_mixed:
                    h_state, c_state = self.lstm(inputs, (h_state, c_state))
                h_out, h_state = self.rnn_cell.forward(inputs, h_state,
                                                       ts.view(batch_size, 1) if timespans is not None else ts)
                if self.return_sequences:
                    output_sequence.append(self.fc(h_out))
            if self.return_sequences:
                readout = torch.stack(output_sequence, dim=seq_dim)
            else:
                readout = self.fc(h_out)
            hx = (h_state, c_state) if self.use_mixed else h_state
            return readout, hx
    torch.manual_seed(0)
    model = CfC(3, 8, proj_size=2, mixed_memory=(mode == "default"), mode=mode)
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.9)
    x = torch.randn(4, 10, 3)
    ts = torch.rand(4, 10, 1) + 0.2
    y = torch.randn(4, 10, 2)
    losses = []
    for it in range(3):
        out, hx = model(x, timespans=ts)
        loss = F.mse_loss(out, y)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss)
    return dict(losses=losses, grads={k: p.grad for k, p in model.named_parameters()}, out=out,
                names=sorted(k for k, _ in model.named_parameters()))


@pytest.mark.parametrize("mode", ["default", "pure", "no_gate"])
def test_cfc_closed_form_continuous_time(mode):
    ours, _ = run_both(cfc, mode, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([float(x) for x in ours["losses"]], CFC_LOSSES[mode], rtol=1e-5)
    assert ours["out"].shape == (4, 10, 2)
    assert ("lstm.weight_ih" in ours["names"]) == (mode == "default")
    assert ("rnn_cell.w_tau" in ours["names"]) == (mode == "pure")


CFC_LOSSES = {
    'default': [0.9358034, 0.8683041, 0.8325508],
    'pure': [1.0467277, 0.9949591, 0.9562405],
    'no_gate': [1.0184536, 0.8719811, 0.8067036],
}


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


def tbptt(m):
    torch, nn, F = m.torch, m.nn, m.F

    class FS(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g / (10 * x.abs() + 1) ** 2
    torch.manual_seed(0)
    fc = nn.Linear(4, 6).double()
    ro = nn.Linear(6, 2).double()
    opt = torch.optim.SGD(list(fc.parameters()) + list(ro.parameters()), lr=0.1, nesterov=True, momentum=0.9)
    x = torch.rand(24, 3, 4, dtype=torch.float64) * 2
    y = torch.randn(24, 3, 2, dtype=torch.float64)
    mem = torch.zeros(3, 6, dtype=torch.float64)
    K = 6
    losses = []
    loss = 0
    for t in range(24):
        mem = 0.9 * mem + fc(x[t])
        spk = FS.apply(mem - 1.0)
        mem = mem - spk * 1.0
        loss = loss + F.mse_loss(ro(spk), y[t])
        if (t + 1) % K == 0:
            opt.zero_grad()
            loss.backward(retain_graph=False)
            opt.step()
            losses.append(loss.item())
            loss = 0
            mem.detach_()
    return dict(losses=losses, w=fc.weight, mem=mem, leaf=mem.is_leaf, requires_grad=mem.requires_grad)


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


def func_transforms(m):
    torch = m.torch

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(x, alpha):
            return (x >= 0).to(x.dtype)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, alpha = inputs
            ctx.save_for_backward(x)
            ctx.alpha = alpha

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * ctx.alpha / (1 + (ctx.alpha * x).abs()) ** 2, None

        @staticmethod
        def vmap(info, in_dims, x, alpha):
            return Spike.apply(x, alpha), in_dims[0]
    torch.manual_seed(0)
    W = torch.randn(4, 3, dtype=torch.float64)

    def lif(W, x):
        mem = torch.zeros(4, dtype=torch.float64)
        cnt = 0
        for t in range(x.shape[0]):
            mem = 0.8 * mem + W @ x[t]
            s = Spike.apply(mem - 0.5, 5.0)
            mem = mem - s * 0.5
            cnt = cnt + s
        return (cnt * torch.arange(4.0, dtype=torch.float64)).sum()
    xs = torch.rand(5, 6, 3, dtype=torch.float64)
    per_sample = torch.func.vmap(torch.func.grad(lif), in_dims=(None, 0))(W, xs)
    jac = torch.func.jacrev(lambda W: torch.stack([lif(W, xi) for xi in xs]))(W)
    jf = torch.autograd.functional.jacobian(lambda W: torch.stack([lif(W, xi) for xi in xs]), W)
    return dict(ps=per_sample, jac=jac, jf=jf)

def grad_scale_identity(m):
    torch = m.torch

    class GradScale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, scale):
            ctx.scale = scale
            return x

        @staticmethod
        def backward(ctx, g):
            return g * ctx.scale, None

    class InplaceReset(torch.autograd.Function):
        @staticmethod
        def forward(ctx, mem, thr):
            spk = (mem > thr).to(mem.dtype)
            mem.sub_(spk * thr)
            ctx.mark_dirty(mem)
            ctx.mark_non_differentiable(spk)
            ctx.save_for_backward(spk)
            return mem, spk

        @staticmethod
        def backward(ctx, g_mem, g_spk):
            return g_mem, None
    x = torch.tensor([0.5, 1.5, 2.5], requires_grad=True)
    y = GradScale.apply(x, 0.5)
    same = y is x
    z = x * 2
    mem, spk = InplaceReset.apply(z, 1.0)
    (y.sum() + (mem * torch.tensor([1.0, 2.0, 3.0])).sum()).backward()
    return dict(g=x.grad, same=same, mem=mem, spk=spk, zs=z is mem, name=mem.grad_fn.name(),
                v=z._version > 0)


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


def izhikevich(m):
    torch = m.torch
    torch.manual_seed(0)
    Ne, Ni = 16, 4
    re, ri = torch.rand(Ne), torch.rand(Ni)
    a = torch.cat([0.02 * torch.ones(Ne), 0.02 + 0.08 * ri])
    b = torch.cat([0.2 * torch.ones(Ne), 0.25 - 0.05 * ri])
    c = torch.cat([-65 + 15 * re ** 2, -65 * torch.ones(Ni)])
    d = torch.cat([8 - 6 * re ** 2, 2 * torch.ones(Ni)])
    S = torch.cat([0.5 * torch.rand(Ne + Ni, Ne), -torch.rand(Ne + Ni, Ni)], dim=1)
    v = -65 * torch.ones(Ne + Ni)
    u = b * v
    firings = []
    for t in range(60):
        I = torch.cat([5 * torch.randn(Ne), 2 * torch.randn(Ni)])
        fired = torch.where(v >= 30)[0]
        firings.append(fired.numel())
        v[fired] = c[fired]
        u[fired] = u[fired] + d[fired]
        I = I + S[:, fired].sum(1)
        v = v + 0.5 * (0.04 * v ** 2 + 5 * v + 140 - u + I)
        v = v + 0.5 * (0.04 * v ** 2 + 5 * v + 140 - u + I)
        u = u + a * (b * v - u)
        v.clamp_(max=30)
    return dict(v=v, u=u, firings=firings)


def events_to_frames(m):
    torch, F = m.torch, m.F
    rng = np.random.default_rng(0)
    n = 200
    ev = np.zeros(n, dtype=[("x", np.int16), ("y", np.int16), ("t", np.int64), ("p", np.int8)])
    ev["x"] = rng.integers(0, 8, n)
    ev["y"] = rng.integers(0, 6, n)
    ev["t"] = np.sort(rng.integers(0, 10000, n))
    ev["p"] = rng.integers(0, 2, n)
    T, H, W = 5, 6, 8
    t = torch.from_numpy(ev["t"].copy())
    x = torch.from_numpy(ev["x"].astype(np.int64))
    y = torch.from_numpy(ev["y"].astype(np.int64))
    p = torch.from_numpy(ev["p"].astype(np.int64))
    t_idx = torch.div(t - t.min(), (t.max() - t.min() + 1) / T, rounding_mode="floor").long().clamp(max=T - 1)
    frames = torch.zeros(T, 2, H, W)
    frames.index_put_((t_idx, p, y, x), torch.ones(n), accumulate=True)
    flat = ((t_idx * 2 + p) * H + y) * W + x
    frames2 = torch.bincount(flat, minlength=T * 2 * H * W).reshape(T, 2, H, W)
    frames3 = torch.zeros(T * 2 * H * W, dtype=torch.long).scatter_add_(0, flat, torch.ones_like(flat))
    hist = torch.histc(t.float(), bins=T, min=float(t.min()), max=float(t.max()))
    edges = torch.linspace(float(t.min()), float(t.max()) + 1, T + 1)
    bidx = torch.bucketize(t.float(), edges, right=True) - 1
    ss = torch.searchsorted(edges, t.float(), right=True) - 1
    # voxel grid with bilinear in time
    tn = (t - t[0]).float() / (t[-1] - t[0]).float() * (T - 1)
    t0 = tn.floor().long()
    vox = torch.zeros(T, H, W)
    pol = p.float() * 2 - 1
    for dt_ in (0, 1):
        ti = t0 + dt_
        wgt = pol * (1 - (tn - ti.float()).abs()).clamp(min=0)
        valid = ti < T
        vox.index_put_((ti[valid], y[valid], x[valid]), wgt[valid], accumulate=True)
    u, c = torch.unique(t_idx, return_counts=True)
    ds = F.avg_pool2d(frames, 2) * 4
    return dict(frames=frames, eq=bool((frames2 == frames).all()), f3=frames3.view(T, 2, H, W), hist=hist,
                bidx=bidx, ss=ss, vox=vox, u=u, c=c, ds=ds, tdt=str(t_idx.dtype).split('.')[-1])


def fn_multi_out(m, materialize):
    torch = m.torch
    infos = []

    class LIFStep(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, mem, beta):
            mem = beta * mem + x
            spk = (mem > 1.0).float()
            mem_out = mem - spk
            ctx.save_for_backward(mem)
            ctx.beta = beta
            ctx.mark_non_differentiable(spk)
            ctx.set_materialize_grads(materialize)
            return mem_out, spk

        @staticmethod
        def backward(ctx, g_mem, g_spk):
            mem, = ctx.saved_tensors
            info = (g_spk is None, None if g_spk is None else float(g_spk.abs().sum()))
            infos.append(info)
            sg = 1 / (1 + (math.pi * (mem - 1)).pow(2))
            g = g_mem * (1 - sg)
            return g, g * ctx.beta, None
    torch.manual_seed(0)
    x = torch.rand(6, 3, requires_grad=True) * 1.0
    x.retain_grad()
    mem = torch.zeros(3, requires_grad=True)
    spks = []
    m_ = mem
    for t in range(6):
        m_, s = LIFStep.apply(x[t], m_, 0.9)
        spks.append(s)
    (m_.sum() + torch.stack(spks).sum()).backward()
    return dict(infos=infos, gx=x.grad, gm=mem.grad, s_rg=spks[0].requires_grad, spks=torch.stack(spks))

def function_errors(m):
    torch = m.torch
    out = {}

    class TooFew(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            return g

    class NonNoneForFloat(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, alpha):
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            return g, torch.ones(())

    class BadShape(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            return g.sum(0)

    class WrongDtype(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return (x > 0).to(x.dtype)

        @staticmethod
        def backward(ctx, g):
            return g.double() * 2

    class SavedModified(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g * x

    class BroadcastGrad(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            return g[0:1]  # (1, n) for an (k, n) input
    x = torch.randn(3, 4, requires_grad=True)
    for name, f in [("few", lambda: TooFew.apply(x, 2.0)), ("nonnone", lambda: NonNoneForFloat.apply(x, 2.0)),
                    ("shape", lambda: BadShape.apply(x)), ("bcast", lambda: BroadcastGrad.apply(x))]:
        try:
            x.grad = None
            f().sum().backward()
            out[name] = ("ok", x.grad)
        except Exception as e:
            out[name] = (type(e).__name__, str(e)[:100])
    x.grad = None
    WrongDtype.apply(x).sum().backward()
    out["dtype"] = (dtype_name(x.grad.dtype), x.grad)
    try:
        y = x * 1.0
        s = SavedModified.apply(y)
        y.add_(1)
        s.sum().backward()
        out["saved"] = "ok"
    except Exception as e:
        out["saved"] = type(e).__name__
    return out


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


def test_truncated_bptt_with_in_place_detach():
    ours, _ = run_both(tbptt, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["losses"], TBPTT_LOSSES, rtol=1e-9)
    assert ours["leaf"] and not ours["requires_grad"]  # detach_() made the membrane a leaf


TBPTT_LOSSES = [8.471775041636654, 6.281910054397218, 9.515677120269388, 5.422123697547235]


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


def test_per_sample_gradients_and_jacobians_through_a_surrogate():
    ours, _ = run_both(func_transforms, rtol=1e-8, atol=1e-10)
    assert ours["ps"].shape == (5, 4, 3)
    np.testing.assert_allclose(ours["jac"], ours["jf"], rtol=1e-12)
    np.testing.assert_allclose(ours["jac"], ours["ps"], rtol=1e-12)  # one sample's gradient is its row


def test_function_forward_returning_its_input_and_marking_it_dirty():
    ours, _ = run_both(grad_scale_identity)
    assert not ours["same"] and ours["zs"] and ours["v"] and ours["name"] == "InplaceResetBackward"
    np.testing.assert_allclose(ours["g"], [0.5 + 2, 0.5 + 4, 0.5 + 6])
    np.testing.assert_allclose(ours["mem"], [1.0, 2.0, 4.0])
    np.testing.assert_allclose(ours["spk"], [0.0, 1.0, 1.0])


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


def test_izhikevich_network_with_in_place_resets():
    ours, _ = run_both(izhikevich, rtol=1e-4, atol=1e-3)
    assert ours["v"].max() <= 30 and sum(ours["firings"]) == IZHIKEVICH_FIRINGS


IZHIKEVICH_FIRINGS = 5


def test_events_binned_into_frames_and_voxel_grids():
    ours, _ = run_both(events_to_frames)
    frames = ours["frames"]
    assert frames.sum() == 200 and ours["eq"] and ours["tdt"] == "int64"
    np.testing.assert_array_equal(ours["f3"], frames)
    np.testing.assert_array_equal(ours["c"], frames.sum((1, 2, 3)))
    np.testing.assert_array_equal(ours["bidx"], ours["ss"])
    np.testing.assert_allclose(ours["ds"], frames.reshape(5, 2, 3, 2, 4, 2).sum((3, 5)), rtol=1e-6)


@pytest.mark.parametrize("materialize", [True, False])
def test_lif_function_with_a_non_differentiable_spike_output(materialize):
    ours, _ = run_both(fn_multi_out, materialize)
    infos = ours["infos"]
    assert len(infos) == 6 and not ours["s_rg"]
    # the spikes' gradient is zeros when grads are materialised, None when not
    assert all(info == ((False, 0.0) if materialize else (True, None)) for info in infos)


def test_function_backward_protocol_errors():
    ours, _ = run_both(function_errors)
    assert ours["few"][0] == "RuntimeError" and "incorrect number of gradients (expected 2, got 1)" in ours["few"][1]
    assert ours["nonnone"][0] == "RuntimeError" and "different than None at position 2" in ours["nonnone"][1]
    assert ours["shape"][0] == "RuntimeError" and "invalid gradient at index 0 - got [4]" in ours["shape"][1]
    assert ours["bcast"][0] == "RuntimeError"  # (a gradient that would broadcast to its input's shape is refused too)
    assert ours["dtype"][0] == "float32" and np.all(ours["dtype"][1] == 2)
    assert ours["saved"] == "RuntimeError"


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


def sew_spikformer(m):
    torch, nn, F = m.torch, m.nn, m.F

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x >= 0).to(x)

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            sg = torch.sigmoid(4 * x)
            return g * 4 * sg * (1 - sg)

    class MultiStepLIF(nn.Module):
        def __init__(self, tau=2.0, v_th=1.0):
            super().__init__()
            self.tau, self.v_th = tau, v_th

        def forward(self, x_seq):
            v = torch.zeros_like(x_seq[0])
            out = []
            for x in x_seq.unbind(0):
                v = v + (x - v) / self.tau
                s = Spike.apply(v - self.v_th)
                v = v * (1 - s)
                out.append(s)
            return torch.stack(out)

    class SSA(nn.Module):
        def __init__(self, dim, heads):
            super().__init__()
            self.heads = heads
            self.scale = 0.125
            self.q = nn.Linear(dim, dim)
            self.q_bn = nn.BatchNorm1d(dim)
            self.q_lif = MultiStepLIF()
            self.k = nn.Linear(dim, dim)
            self.k_bn = nn.BatchNorm1d(dim)
            self.k_lif = MultiStepLIF()
            self.v = nn.Linear(dim, dim)
            self.v_bn = nn.BatchNorm1d(dim)
            self.v_lif = MultiStepLIF()
            self.attn_lif = MultiStepLIF(v_th=0.5)
            self.proj = nn.Linear(dim, dim)
            self.proj_bn = nn.BatchNorm1d(dim)
            self.proj_lif = MultiStepLIF()

        def branch(self, x, lin, bn, lif):
            T, B, N, C = x.shape
            y = lin(x.flatten(0, 1))
            y = bn(y.transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C).contiguous()
            y = lif(y)
            return y.reshape(T, B, N, self.heads, C // self.heads).permute(0, 1, 3, 2, 4).contiguous()

        def forward(self, x):
            T, B, N, C = x.shape
            q = self.branch(x, self.q, self.q_bn, self.q_lif)
            k = self.branch(x, self.k, self.k_bn, self.k_lif)
            v = self.branch(x, self.v, self.v_bn, self.v_lif)
            attn = (q @ k.transpose(-2, -1)) * self.scale
            x = attn @ v
            x = x.transpose(2, 3).reshape(T, B, N, C).contiguous()
            x = self.attn_lif(x)
            x = x.flatten(0, 1)
            x = self.proj_lif(self.proj_bn(self.proj(x).transpose(-1, -2)).transpose(-1, -2).reshape(T, B, N, C))
            return x, attn

    class SEWBlock(nn.Module):
        def __init__(self, c, connect_f):
            super().__init__()
            self.conv = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c))
            self.lif = MultiStepLIF()
            self.connect_f = connect_f

        def forward(self, x):
            T, B = x.shape[:2]
            out = self.lif(self.conv(x.flatten(0, 1)).view(x.shape))
            if self.connect_f == 'ADD':
                return out + x
            elif self.connect_f == 'AND':
                return out * x
            return x * (1. - out)  # IAND
    torch.manual_seed(0)
    T, B = 3, 2
    blocks = nn.ModuleList([SEWBlock(2, f) for f in ("ADD", "AND", "IAND")])
    ssa = SSA(8, 2)
    head = nn.Linear(8, 3)
    params = list(blocks.parameters()) + list(ssa.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3)
    img = (torch.rand(T, B, 2, 4, 4) > 0.5).float()
    for it in range(2):
        x = img
        for b in blocks:
            x = b(x)
        tokens = x.flatten(3).transpose(-1, -2)  # T, B, 16, 2
        tokens = torch.cat([tokens, tokens, tokens, tokens], -1)  # T, B, 16, 8
        y, attn = ssa(tokens)
        logits = head(y.mean(2)).mean(0)
        loss = F.cross_entropy(logits, torch.tensor([0, 2]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return dict(loss=loss, attn=attn, x=x, g=[p.grad for p in params])


def ei_rnn(m):
    torch, nn, F = m.torch, m.nn, m.F
    init = nn.init

    class EIRecLinear(nn.Module):
        __constants__ = ['bias', 'hidden_size', 'e_prop']

        def __init__(self, hidden_size, e_prop, bias=True):
            super().__init__()
            self.hidden_size = hidden_size
            self.e_prop = e_prop
            self.e_size = int(e_prop * hidden_size)
            self.i_size = hidden_size - self.e_size
            self.weight = nn.Parameter(torch.Tensor(hidden_size, hidden_size))
            mask = np.tile([1] * self.e_size + [-1] * self.i_size, (hidden_size, 1))
            np.fill_diagonal(mask, 0)
            self.mask = torch.tensor(mask, dtype=torch.float32)
            if bias:
                self.bias = nn.Parameter(torch.Tensor(hidden_size))
            else:
                self.register_parameter('bias', None)
            self.reset_parameters()

        def reset_parameters(self):
            init.kaiming_uniform_(self.weight, a=math.sqrt(5))
            self.weight.data[:, :self.e_size] /= (self.e_size / self.i_size)
            if self.bias is not None:
                fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
                bound = 1 / math.sqrt(fan_in)
                init.uniform_(self.bias, -bound, bound)

        def effective_weight(self):
            return torch.abs(self.weight) * self.mask

        def forward(self, input):
            return F.linear(input, self.effective_weight(), self.bias)

    class EIRNN(nn.Module):
        def __init__(self, input_size, hidden_size, dt=None, e_prop=0.8, sigma_rec=0, **kwargs):
            super().__init__()
            self.input_size = input_size
            self.hidden_size = hidden_size
            self.e_size = int(hidden_size * e_prop)
            self.i_size = hidden_size - self.e_size
            self.num_layers = 1
            tau = 100
            alpha = 1 if dt is None else dt / tau
            self.alpha = alpha
            self.oneminusalpha = 1 - alpha
            self._sigma_rec = np.sqrt(2 * alpha) * sigma_rec
            self.input2h = nn.Linear(input_size, hidden_size)
            self.h2h = EIRecLinear(hidden_size, e_prop=0.8)

        def init_hidden(self, input):
            batch_size = input.shape[1]
            return (torch.zeros(batch_size, self.hidden_size).to(input.device),
                    torch.zeros(batch_size, self.hidden_size).to(input.device))

        def recurrence(self, input, hidden):
            state, output = hidden
            total_input = self.input2h(input) + self.h2h(output)
            state = state * self.oneminusalpha + total_input * self.alpha
            state += self._sigma_rec * torch.randn_like(state)
            output = torch.relu(state)
            return state, output

        def forward(self, input, hidden=None):
            if hidden is None:
                hidden = self.init_hidden(input)
            output = []
            steps = range(input.size(0))
            for i in steps:
                hidden = self.recurrence(input[i], hidden)
                output.append(hidden[1])
            output = torch.stack(output, dim=0)
            return output, hidden

    class Net(nn.Module):
        def __init__(self, input_size, hidden_size, output_size, **kwargs):
            super().__init__()
            self.rnn = EIRNN(input_size, hidden_size, **kwargs)
            self.fc = nn.Linear(self.rnn.e_size, output_size)

        def forward(self, x):
            rnn_activity, _ = self.rnn(x)
            rnn_e = rnn_activity[:, :, :self.rnn.e_size]
            out = self.fc(rnn_e)
            return out, rnn_activity
    torch.manual_seed(0)
    net = Net(3, 20, 2, dt=20, sigma_rec=0.15)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x = torch.randn(15, 4, 3)
    labels = torch.randint(0, 2, (15 * 4,))
    losses = []
    for i in range(3):
        opt.zero_grad()
        output, activity = net(x)
        output = output.view(-1, 2)
        loss = nn.CrossEntropyLoss()(output, labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return dict(losses=losses, w=net.rnn.h2h.weight, eff=net.rnn.h2h.effective_weight(),
                fan=nn.init._calculate_fan_in_and_fan_out(net.rnn.h2h.weight), act=activity)


def dale_parametrize(m):
    torch, nn, F = m.torch, m.nn, m.F
    import importlib
    parametrize = importlib.import_module(m.nn.__name__ + ".utils.parametrize")

    class Dale(nn.Module):
        def __init__(self, sign):
            super().__init__()
            self.register_buffer("sign", sign)

        def forward(self, W):
            return F.softplus(W) * self.sign
    torch.manual_seed(0)
    rnn = nn.RNNCell(4, 6, nonlinearity="tanh")
    sign = torch.ones(6)
    sign[4:] = -1
    parametrize.register_parametrization(rnn, "weight_hh", Dale(sign.unsqueeze(0).expand(6, 6).clone()))
    opt = torch.optim.SGD(rnn.parameters(), lr=0.1)
    x = torch.randn(5, 3, 4)
    for it in range(2):
        h = torch.zeros(3, 6)
        for t in range(5):
            h = rnn(x[t], h)
        loss = h.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    W = rnn.weight_hh
    names = sorted(n for n, _ in rnn.named_parameters())
    sn = nn.utils.parametrizations.spectral_norm(nn.Linear(6, 6))
    y = sn(torch.randn(2, 6))
    sp = torch.empty(8, 5)
    nn.init.sparse_(sp, sparsity=0.5, std=0.1)
    orth = torch.empty(5, 5)
    nn.init.orthogonal_(orth, gain=0.9)
    return dict(W=W, names=names, loss=loss, g=rnn.parametrizations.weight_hh.original.grad, y=y, sp=sp, orth=orth,
                u=sn.parametrizations.weight[0]._u)


def poisson_glm(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    T, D, H = 400, 6, 5
    stim = torch.randn(T, D, dtype=torch.float64)
    k_true = torch.tensor([0.5, -0.3, 0.2, 0.0, 0.1, -0.2], dtype=torch.float64)
    rate = torch.exp(stim @ k_true - 1.0)
    counts = torch.poisson(rate)
    k = torch.zeros(D, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    h = torch.zeros(H, dtype=torch.float64, requires_grad=True)  # spike-history filter
    past = F.pad(counts, (H, 0))[:-1].unfold(0, H, 1)  # (T, H): the H counts before each bin
    opt = torch.optim.LBFGS([k, b, h], lr=1, max_iter=50, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        log_rate = stim @ k + b + past @ h
        loss = F.poisson_nll_loss(log_rate, counts, log_input=True, full=False) + 1e-3 * (h ** 2).sum()
        loss.backward()
        return loss
    loss = opt.step(closure)
    log_rate = stim @ k + b + past @ h
    ll = torch.distributions.Poisson(log_rate.exp()).log_prob(counts).sum()
    ll2 = (counts * log_rate - log_rate.exp() - torch.special.gammaln(counts + 1)).sum()
    return dict(k=k, b=b, h=h, loss=loss, ll=ll, ll2=ll2, counts=counts.sum(), past=past[:8])


def checkpoint_random(m):
    torch, nn = m.torch, m.nn
    from_cp = torch.utils.checkpoint.checkpoint

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return (x > 0).float()

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g / (1 + 10 * x.abs()) ** 2
    torch.manual_seed(0)
    fc = nn.Linear(5, 4)
    img = torch.rand(3, 5)

    def chunk(mem, w_scale):
        spikes = []
        for t in range(4):
            x = torch.bernoulli(img)
            mem = 0.9 * mem + fc(x) * w_scale
            s = Spike.apply(mem - 0.5)
            mem = mem - s * 0.5
            spikes.append(s)
        return mem, torch.stack(spikes)
    res = {}
    for mode in ("plain", "cp"):
        torch.manual_seed(1)
        fc.zero_grad()
        mem = torch.zeros(3, 4)
        scale = torch.tensor(1.5, requires_grad=True)
        total = 0
        for c in range(3):
            if mode == "cp":
                mem, s = from_cp(chunk, mem, scale, use_reentrant=False)
            else:
                mem, s = chunk(mem, scale)
            total = total + s.sum() + mem.pow(2).sum()
        total.backward()
        res[mode] = (total, fc.weight.grad.clone(), scale.grad)
    torch.manual_seed(1)
    mem = torch.zeros(3, 4)
    scale = torch.tensor(1.5, requires_grad=True)
    fc.zero_grad()
    with torch.autograd.graph.saved_tensors_hooks(lambda t: t * 1, lambda t: t):
        m2, s2 = chunk(mem, scale)
    (s2.sum() + m2.pow(2).sum()).backward()
    res["hooks"] = (fc.weight.grad.clone(), scale.grad)
    return res


def forward_ad_lif(m):
    torch = m.torch
    import importlib
    fwAD = importlib.import_module(m.torch.__name__ + ".autograd.forward_ad")

    class Spike(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return (x > 0).to(x.dtype)

        @staticmethod
        def setup_context(ctx, inputs, output):
            x, = inputs
            ctx.save_for_backward(x)
            ctx.x = x

        @staticmethod
        def backward(ctx, g):
            x, = ctx.saved_tensors
            return g / (1 + 5 * x.abs()) ** 2

        @staticmethod
        def jvp(ctx, t):
            x = ctx.x
            return t / (1 + 5 * x.abs()) ** 2
    torch.manual_seed(0)
    W = torch.randn(3, 2, dtype=torch.float64)
    x = torch.rand(6, 2, dtype=torch.float64)
    tangent = torch.randn(3, 2, dtype=torch.float64)

    def run_(W):
        mem = torch.zeros(3, dtype=torch.float64)
        cnt = 0
        for t in range(6):
            mem = 0.8 * mem + W @ x[t]
            s = Spike.apply(mem - 0.4)
            mem = mem - s * 0.4
            cnt = cnt + s * (t + 1)
        return cnt.sum() + mem.sum()
    with fwAD.dual_level():
        dual = fwAD.make_dual(W, tangent)
        out = run_(dual)
        primal, jvp_ = fwAD.unpack_dual(out)
    Wr = W.clone().requires_grad_()
    run_(Wr).backward()
    _, jvp2 = torch.func.jvp(run_, (W,), (tangent,))
    return dict(primal=primal, jvp=jvp_, jvp2=jvp2, vjp_dot=(Wr.grad * tangent).sum())


def ties(m):
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    spk = (torch.rand(6, 5, 10) > 0.7).float()
    counts = spk.sum(0)
    out = {}
    out["argmax"] = counts.argmax(1)
    out["max_dim"] = counts.max(1)
    out["min_dim"] = counts.min(1)
    out["topk"] = counts.topk(3, dim=1)
    out["topk_small"] = counts.topk(3, dim=1, largest=False)
    out["sort"] = counts.sort(1, descending=True)
    out["sort_stable"] = counts.sort(dim=1, descending=True, stable=True)
    out["argsort"] = counts.argsort(1)
    out["median"] = counts.median(1)
    out["mode"] = counts.mode(1)
    out["kth"] = counts.kthvalue(2, 1)
    c = counts.clone().requires_grad_()
    (c.max() + c.min() + c.amax(1).sum() + c.max(1).values.sum() + c.median() + c.median(1).values.sum()
     + c.topk(2, 1).values.sum() + c.mode(1).values.sum() + c.kthvalue(3, 1).values.sum()).backward()
    out["grad"] = c.grad
    lc = counts.long()
    out["lmax"] = lc.max(1)
    out["ce_ls"] = F.cross_entropy(counts, torch.tensor([0, 1, 2, 3, 4]), label_smoothing=0.1)
    try:
        F.softmax(lc, 1)
        out["sm_long"] = "ok"
    except RuntimeError:
        out["sm_long"] = "RuntimeError"
    out["unique"] = torch.unique(counts, sorted=True, return_counts=True, return_inverse=True)
    out["ucons"] = torch.unique_consecutive(counts.flatten(), return_counts=True)
    out["counts"] = counts
    return out


def spike_train_stats(m):
    torch, nn, F = m.torch, m.nn, m.F
    g = torch.Generator().manual_seed(11)
    spk = (torch.rand(50, 3, generator=g) < 0.2)
    out = {}
    out["cumsum_bool"] = spk.cumsum(0)
    out["cumsum_dt"] = dtype_name(spk.cumsum(0).dtype)
    out["diff"] = torch.diff(spk.float(), dim=0, prepend=torch.zeros(1, 3))
    out["diff_bool"] = torch.diff(spk, dim=0)
    nz = torch.nonzero(spk.t(), as_tuple=True)
    out["nz"] = nz
    counts = spk.sum(0)
    per_neuron = torch.split(nz[1], counts.tolist())
    out["isi"] = [torch.diff(t) for t in per_neuron]
    padded = nn.utils.rnn.pad_sequence(list(per_neuron), batch_first=True, padding_value=-1)
    out["padded"] = padded
    win = spk.float().t().unfold(1, 10, 5)
    out["win"] = win.sum(-1)
    out["isi_hist"] = torch.histc(torch.cat(out["isi"]).float(), bins=5, min=0, max=25)
    t = torch.arange(50.0)
    kernel = torch.exp(-t / 5.0)
    sp = spk.float().t()
    n = 128
    conv_fft = torch.fft.irfft(torch.fft.rfft(sp, n=n) * torch.fft.rfft(kernel, n=n), n=n)[:, :50]
    conv_direct = F.conv1d(F.pad(sp.unsqueeze(1), (49, 0)), kernel.flip(0).view(1, 1, -1)).squeeze(1)
    out["psp_fft"] = conv_fft
    out["psp"] = conv_direct
    depth = F.conv1d(F.pad(sp.unsqueeze(0), (4, 0)), torch.rand(3, 1, 5, generator=g), groups=3)
    out["depth"] = depth
    power = torch.fft.rfft(sp - sp.mean(1, keepdim=True)).abs().pow(2)
    out["power"] = power
    st = torch.tensor([-7, -3, 0, 5, 9])
    out["floor"] = (torch.div(st, 4, rounding_mode="floor"), st % 4, torch.div(st, 4, rounding_mode="trunc"),
                    torch.fmod(st, 4), st // 4)
    out["cumprod"] = (1 - spk.float()).cumprod(0)[-1]
    out["strided"] = sp.contiguous().as_strided((3, 9, 10), (50, 5, 1)).sum(-1)
    return out


def test_snntorch_init_hidden_with_class_level_detach():
    ours, _ = run_both(snn_init_hidden, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([float(x) for x in ours["losses"]], INIT_HIDDEN_LOSSES, rtol=1e-5)
    assert ours["names"] == ["Leaky", "Leaky"] and float(ours["gsf"]) == 0.5  # (no output spike: no gradient)
    assert ours["sd"] == ["1.bias", "1.weight", "2.beta", "2.graded_spikes_factor", "2.threshold", "3.bias",
                          "3.weight", "4.beta", "4.graded_spikes_factor", "4.threshold"]


INIT_HIDDEN_LOSSES = [1.112594, 1.141369, 1.147195, 1.10381, 1.109853, 1.117334]


def test_sew_resnet_blocks_and_spiking_self_attention():
    ours, _ = run_both(sew_spikformer, rtol=1e-4, atol=1e-5)
    assert float(ours["loss"]) == pytest.approx(SEW_LOSS, rel=1e-5)
    attn = ours["attn"] / 0.125  # products of spikes: whole counts
    assert np.all(attn == np.round(attn)) and attn.max() <= 4
    assert set(np.unique(ours["x"])) <= {0.0, 1.0, 2.0}  # ADD, then AND, then IAND of spikes


SEW_LOSS = 1.0251653


def test_excitatory_inhibitory_rate_rnn_with_dale_masks():
    ours, _ = run_both(ei_rnn, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["losses"], EI_RNN_LOSSES, rtol=1e-5)
    eff = ours["eff"]
    assert np.all(eff[:, :16] >= 0) and np.all(eff[:, 16:] <= 0) and np.all(np.diag(eff) == 0)
    assert tuple(ours["fan"]) == (20, 20) and np.all(ours["act"] >= 0)


EI_RNN_LOSSES = [0.698132, 0.688906, 0.686161]


def test_dale_parametrization_spectral_norm_and_sparse_inits():
    ours, _ = run_both(dale_parametrize, rtol=1e-4, atol=1e-5)
    W = ours["W"]
    assert np.all(W[:, :4] > 0) and np.all(W[:, 4:] < 0)
    assert ours["names"] == ["bias_hh", "bias_ih", "parametrizations.weight_hh.original", "weight_ih"]
    sparse = ours["sp"]
    assert all((column == 0).sum() == 4 for column in sparse.T)  # sparsity 0.5 of 8 rows, per column
    np.testing.assert_allclose(ours["orth"] @ ours["orth"].T, 0.81 * np.eye(5), atol=1e-5)


def test_poisson_glm_with_a_history_filter_fitted_by_lbfgs():
    ours, _ = run_both(poisson_glm, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours["ll"], ours["ll2"], rtol=1e-10)
    np.testing.assert_allclose(ours["k"], [0.5, -0.3, 0.2, 0.0, 0.1, -0.2], atol=0.2)
    assert ours["counts"] == GLM_SPIKES


GLM_SPIKES = 188.0


def test_checkpointed_bptt_replays_the_encoder_draws():
    ours, _ = run_both(checkpoint_random)
    for a, b in zip(ours["plain"], ours["cp"]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(ours["hooks"], ours["plain"][1:]):
        assert a.shape == b.shape


def test_forward_mode_jvp_through_a_surrogate():
    ours, _ = run_both(forward_ad_lif, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours["jvp"], ours["vjp_dot"], rtol=1e-10)
    np.testing.assert_allclose(ours["jvp2"], ours["vjp_dot"], rtol=1e-10)


def test_spike_count_decoding_with_ties():
    ours, _ = run_both(ties)
    counts = ours["counts"]
    np.testing.assert_array_equal(ours["argmax"], np.argmax(counts, 1))  # the first of equal counts
    np.testing.assert_array_equal(ours["max_dim"][1], np.argmax(counts, 1))
    np.testing.assert_array_equal(ours["min_dim"][1], np.argmin(counts, 1))
    np.testing.assert_array_equal(ours["sort_stable"][1], np.argsort(-counts, axis=1, kind="stable"))
    np.testing.assert_array_equal(ours["topk"][0], -np.sort(-counts, axis=1)[:, :3])
    # each reduction passes a total gradient of 1 per value it returns, split among ties or not
    assert ours["grad"].sum() == pytest.approx(1 + 1 + 5 + 5 + 1 + 5 + 10 + 5 + 5)
    assert ours["sm_long"] == "RuntimeError"


def test_spike_train_statistics():
    ours, _ = run_both(spike_train_stats, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["psp_fft"], ours["psp"], atol=1e-4)  # convolution by FFT and by conv1d
    assert ours["cumsum_dt"] == "int64"
    times = [np.flatnonzero(row) for row in ours["cumsum_bool"].T.astype(bool) & np.diff(
        np.concatenate([np.zeros((1, 3), np.int64), ours["cumsum_bool"]]), axis=0).T.astype(bool)]
    for isi, t in zip(ours["isi"], times):
        np.testing.assert_array_equal(isi, np.diff(t))
    st = np.array([-7, -3, 0, 5, 9])
    floor, mod, trunc, fmod, floordiv = ours["floor"]
    np.testing.assert_array_equal(floor, st // 4)
    np.testing.assert_array_equal(mod, st % 4)
    np.testing.assert_array_equal(trunc, np.trunc(st / 4))
    np.testing.assert_array_equal(fmod, np.fmod(st, 4))
    np.testing.assert_array_equal(floordiv, st // 4)


def heaviside_without_a_surrogate(m):
    """The first attempt of many a tutorial: a LIF layer spiking through torch.heaviside, which has no derivative, so
    training it fails at backward (and the surrogate of the next cell of the notebook mends it)."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)
    fc = nn.Linear(4, 3)
    x = torch.rand(5, 2, 4) * 2
    mem = torch.zeros(2, 3)
    spikes = []
    for t in range(5):
        mem = 0.9 * mem + fc(x[t])
        spk = torch.heaviside(mem - 1.0, torch.tensor(0.0))
        mem = mem - spk
        spikes.append(spk)
    spk_rec = torch.stack(spikes)
    loss = F.mse_loss(spk_rec.mean(0), torch.full((2, 3), 0.5)) + 0.01 * mem.pow(2).mean()
    try:
        loss.backward()
        error = None
    except RuntimeError as e:
        error = str(e)
    return dict(spk_rec=spk_rec, requires_grad=spk_rec.requires_grad, error=error, grad=fc.weight.grad is None)


def test_heaviside_without_a_surrogate_fails_at_backward():
    ours, _ = run_both(heaviside_without_a_surrogate)
    assert ours["requires_grad"] and ours["grad"]
    assert ours["error"] == "derivative for aten::heaviside is not implemented"
    assert set(np.unique(ours["spk_rec"])) <= {0.0, 1.0}
