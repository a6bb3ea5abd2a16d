# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Spiking and other dynamical, biologically inspired networks as snnTorch, SpikingJelly, Norse, BindsNET and papers'
reference code write them, run as tests/probe22_spiking_common.py says. Architectures and training around the
neurons: SEW ResNet blocks and Spikformer's spiking self-attention, an excitatory/inhibitory rate RNN (Dale's masks,
``init._calculate_fan_in_and_fan_out``) and Dale's law as a parametrization beside spectral norm and the sparse and
orthogonal inits, checkpointed BPTT replaying the encoder's draws."""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both


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


def test_checkpointed_bptt_replays_the_encoder_draws():
    ours, _ = run_both(checkpoint_random)
    for a, b in zip(ours["plain"], ours["cp"]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(ours["hooks"], ours["plain"][1:]):
        assert a.shape == b.shape
