# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Spiking and other dynamical, biologically inspired networks as snnTorch, SpikingJelly, Norse, BindsNET and papers'
reference code write them, run as tests/probe22_spiking_common.py says. snnTorch: Leaky with reset by subtraction and
to zero (reset detached or not, beta learnt or a buffer) trained by BPTT on a membrane cross-entropy, and by
truncated BPTT with an in-place detach; rate, latency, linear latency and delta encodings; ce_rate, ce_count and
mse_count losses."""

import numpy as np
import pytest

from .probe22_spiking_common import dtype_name
from .pytorch_programs import run_both

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


def test_truncated_bptt_with_in_place_detach():
    ours, _ = run_both(tbptt, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ours["losses"], TBPTT_LOSSES, rtol=1e-9)
    assert ours["leaf"] and not ours["requires_grad"]  # detach_() made the membrane a leaf


TBPTT_LOSSES = [8.471775041636654, 6.281910054397218, 9.515677120269388, 5.422123697547235]
