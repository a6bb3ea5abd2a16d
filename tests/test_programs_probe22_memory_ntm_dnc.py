# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Memory-augmented and set-structured models as their reference PyTorch code writes them, each run as a program on
chainrule and on PyTorch from the same seed (tests/pytorch_programs.py), comparing losses, outputs and gradients
after a few Adam/AdamW steps, with invariants and NumPy checks that hold without PyTorch. Addressable memories: a
Neural Turing Machine (content addressing by ``F.cosine_similarity``, key strength through ``softplus``, the
interpolation gate, a 3-tap circular shift by ``F.pad(mode="circular")`` and by ``torch.roll``, sharpening by
powering and renormalising, erase/add writes) on the copy task with gradient clipping; a Differentiable Neural
Computer's memory (usage, allocation weighting by ``sort``/``cumprod``/``gather``, precedence and the temporal link
matrix, forward/backward read modes), and its allocation weighting by ``sort`` and ``scatter`` as Sonnet's port
writes it."""

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Neural Turing Machine on the copy task
# ----------------------------------------------------------------------------------------------


def ntm_copy(m, shift_by="pad"):
    """A Neural Turing Machine (Graves et al. 2014) as pytorch-ntm writes it: an LSTM controller, one read and one
    write head, memory initialised to a small constant, addressing by content (cosine similarity, key strength
    through softplus), interpolation with the previous weighting, a 3-tap circular shift, sharpening; trained a
    few steps on the copy task with Adam and gradient clipping by value."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    N, M = 12, 6

    def split_cols(mat, lengths):
        assert mat.size()[1] == sum(lengths), "Lengths must be summed to num columns"
        l = np.cumsum([0] + lengths)
        return [mat[:, int(s):int(e)] for s, e in zip(l[:-1], l[1:])]

    class Memory(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mem_bias", torch.Tensor(N, M))
            stdev = 1 / np.sqrt(N + M)
            nn.init.uniform_(self.mem_bias, -stdev, stdev)

        def reset(self, batch_size):
            self.batch_size = batch_size
            self.memory = self.mem_bias.clone().repeat(batch_size, 1, 1)

        def read(self, w):
            return torch.matmul(w.unsqueeze(1), self.memory).squeeze(1)

        def write(self, w, e, a):
            self.prev_mem = self.memory
            self.memory = torch.Tensor(self.batch_size, N, M)
            erase = torch.matmul(w.unsqueeze(-1), e.unsqueeze(1))
            add = torch.matmul(w.unsqueeze(-1), a.unsqueeze(1))
            self.memory = self.prev_mem * (1 - erase) + add

        def address(self, k, beta, g, s, gamma, w_prev):
            wc = self._similarity(k, beta)
            wg = self._interpolate(w_prev, wc, g)
            w_hat = self._shift(wg, s)
            return self._sharpen(w_hat, gamma)

        def _similarity(self, k, beta):
            k = k.view(self.batch_size, 1, -1)
            w = F.softmax(beta * F.cosine_similarity(self.memory + 1e-16, k + 1e-16, dim=-1), dim=1)
            return w

        def _interpolate(self, w_prev, wc, g):
            return g * wc + (1 - g) * w_prev

        def _shift(self, wg, s):
            if shift_by == "pad":  # a circular convolution by padding one on each side
                padded = F.pad(wg.unsqueeze(1), (1, 1), mode="circular")
                return F.conv1d(padded.view(1, -1, N + 2), s.flip(-1).unsqueeze(1), groups=self.batch_size).view(
                    self.batch_size, N)
            # the three rolled copies weighted by the shift distribution
            return s[:, 0:1] * torch.roll(wg, -1, dims=1) + s[:, 1:2] * wg + s[:, 2:3] * torch.roll(wg, 1, dims=1)

        def _sharpen(self, w_hat, gamma):
            w = w_hat ** gamma
            w = torch.div(w, torch.sum(w, dim=1).view(-1, 1) + 1e-16)
            return w

    class Head(nn.Module):
        def __init__(self, memory, controller_size, write):
            super().__init__()
            self.memory, self.is_write = memory, write
            self.lengths = [M, 1, 1, 3, 1] + ([M, M] if write else [])
            self.fc = nn.Linear(controller_size, sum(self.lengths))
            nn.init.xavier_uniform_(self.fc.weight, gain=1.4)
            nn.init.normal_(self.fc.bias, std=0.01)

        def create_new_state(self, batch_size):
            return torch.zeros(batch_size, N)

        def address(self, k, β, g, s, γ, w_prev):
            k = k.clone()
            β = F.softplus(β)
            g = F.sigmoid(g)
            s = F.softmax(s, dim=1)
            γ = 1 + F.softplus(γ)
            return self.memory.address(k, β, g, s, γ, w_prev)

        def forward(self, embeddings, w_prev):
            o = self.fc(embeddings)
            parts = split_cols(o, self.lengths)
            w = self.address(*parts[:5], w_prev)
            if self.is_write:
                e, a = parts[5:]
                self.memory.write(w, F.sigmoid(e), a)
                return w
            return self.memory.read(w), w

    class NTM(nn.Module):
        def __init__(self, num_inputs, num_outputs, controller_size=20):
            super().__init__()
            self.memory = Memory()
            self.controller = nn.LSTMCell(num_inputs + M, controller_size)
            self.read_head = Head(self.memory, controller_size, write=False)
            self.write_head = Head(self.memory, controller_size, write=True)
            self.fc = nn.Linear(controller_size + M, num_outputs)
            self.init_r = nn.Parameter(torch.randn(1, M) * 0.01)

        def init_sequence(self, batch_size):
            self.memory.reset(batch_size)
            self.state = (torch.zeros(batch_size, self.controller.hidden_size),
                          torch.zeros(batch_size, self.controller.hidden_size),
                          self.init_r.clone().repeat(batch_size, 1),
                          self.read_head.create_new_state(batch_size),
                          self.write_head.create_new_state(batch_size))

        def forward(self, x=None):
            h, c, prev_read, rw, ww = self.state
            if x is None:
                x = torch.zeros(h.size(0), self.fc.out_features + 1)
            h, c = self.controller(torch.cat([x, prev_read], dim=1), (h, c))
            r, rw = self.read_head(h, rw)
            ww = self.write_head(h, ww)
            o = F.sigmoid(self.fc(torch.cat([h, r], dim=1)))
            self.state = (h, c, r, rw, ww)
            return o, self.state

    torch.manual_seed(1)
    seq_width, seq_len, batch = 4, 5, 3
    net = NTM(seq_width + 1, seq_width)
    criterion = nn.BCELoss()
    opt = optim.RMSprop(net.parameters(), momentum=0.9, alpha=0.95, lr=1e-3) if shift_by == "roll" else \
        optim.Adam(net.parameters(), lr=3e-3)
    losses, weightings = [], []
    for step in range(3):
        seq = torch.randint(0, 2, (seq_len, batch, seq_width)).float()
        inp = torch.zeros(seq_len + 1, batch, seq_width + 1)
        inp[:seq_len, :, :seq_width] = seq
        inp[seq_len, :, seq_width] = 1.0
        opt.zero_grad()
        net.init_sequence(batch)
        for i in range(seq_len + 1):
            net(inp[i])
        y_out = torch.zeros(seq.size())
        for i in range(seq_len):
            y_out[i], state = net()
            weightings.append(state[3].detach())
        loss = criterion(y_out, seq)
        loss.backward()
        for p in net.parameters():
            p.grad.data.clamp_(-10, 10)
        opt.step()
        losses.append(loss.item())
        cost = torch.sum(torch.abs(y_out.clone().data.apply_(lambda x: 0 if x < 0.5 else 1) - seq.data))
    return {"losses": losses, "w": torch.stack(weightings), "cost": cost, "mem": net.memory.memory.detach(),
            "grad_fc": net.read_head.fc.weight.grad, "grad_r": net.init_r.grad}


@pytest.mark.parametrize("shift_by", ["pad", "roll"])
def test_ntm_copy_task(shift_by):
    ours, _ = run_both(ntm_copy, shift_by, rtol=2e-4, atol=1e-6)
    np.testing.assert_allclose(ours["w"].sum(-1), 1.0, rtol=1e-5)
    assert (ours["w"] >= 0).all()
    assert ours["mem"].shape == (3, 12, 6)


# ----------------------------------------------------------------------------------------------
# Differentiable Neural Computer memory
# ----------------------------------------------------------------------------------------------


def dnc_memory(m):
    """The DNC's memory access (Graves et al. 2016) as the dnc/pytorch-dnc packages write it: interface vector
    split into keys, strengths (oneplus), gates; usage updated by retention (free gates), the allocation weighting
    from the usage sorted ascending with an exclusive cumulative product, the write weighting, precedence and the
    temporal link matrix with a zeroed diagonal, forward and backward weightings and the read modes."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    N, W, R = 8, 5, 2
    δ = 1e-6

    def oneplus(x):
        return 1 + F.softplus(x)

    def θ(a, b, dimA=2, dimB=2, normBy=2):
        a_norm = torch.norm(a, normBy, dimA, keepdim=True).expand_as(a) + δ
        b_norm = torch.norm(b, normBy, dimB, keepdim=True).expand_as(b) + δ
        x = torch.bmm(a, b.transpose(1, 2)).transpose(1, 2) / (torch.bmm(a_norm, b_norm.transpose(1, 2)).transpose(1, 2) + δ)
        return x

    class Memory(nn.Module):
        def __init__(self, input_size):
            super().__init__()
            self.interface_size = (W * R) + (3 * W) + (5 * R) + 3
            self.interface_weights = nn.Linear(input_size, self.interface_size)
            self.I = 1 - torch.eye(N).unsqueeze(0)

        def new(self, b):
            return {"memory": torch.zeros(b, N, W).fill_(δ), "link_matrix": torch.zeros(b, 1, N, N),
                    "precedence": torch.zeros(b, 1, N), "read_weights": torch.zeros(b, R, N).fill_(δ),
                    "write_weights": torch.zeros(b, 1, N).fill_(δ), "usage_vector": torch.zeros(b, N)}

        def get_usage_vector(self, usage, free_gates, read_weights, write_weights):
            usage = usage + (1 - usage) * (1 - torch.prod(1 - write_weights, 1))
            ψ = torch.prod(1 - free_gates.unsqueeze(2) * read_weights, 1)
            return usage * ψ

        def allocate(self, usage, write_gate):
            usage = δ + (1 - δ) * usage
            b = usage.size(0)
            sorted_usage, φ = torch.topk(usage, N, dim=1, largest=False)
            v = usage.new_ones(b, 1)
            cat_sorted_usage = torch.cat((v, sorted_usage), 1)
            prod_sorted_usage = torch.cumprod(cat_sorted_usage, 1)[:, :-1]
            sorted_allocation_weights = (1 - sorted_usage) * prod_sorted_usage.squeeze()
            _, φ_rev = torch.topk(φ, k=N, dim=1, largest=False)
            allocation_weights = sorted_allocation_weights.gather(1, φ_rev.long())
            return allocation_weights.unsqueeze(1), usage

        def write_weighting(self, memory, write_content_weights, allocation_weights, write_gate, allocation_gate):
            ag = allocation_gate.unsqueeze(-1)
            wg = write_gate.unsqueeze(-1)
            return wg * (ag * allocation_weights + (1 - ag) * write_content_weights)

        def get_link_matrix(self, link_matrix, write_weights, precedence):
            precedence = precedence.unsqueeze(2)
            write_weights_i = write_weights.unsqueeze(3)
            write_weights_j = write_weights.unsqueeze(2)
            prev_scale = 1 - write_weights_i - write_weights_j
            new_link_matrix = write_weights_i * precedence
            link_matrix = prev_scale * link_matrix + new_link_matrix
            return self.I.expand_as(link_matrix) * link_matrix

        def update_precedence(self, precedence, write_weights):
            return (1 - torch.sum(write_weights, 2, keepdim=True)) * precedence + write_weights

        def content_weightings(self, memory, keys, strengths):
            d = θ(memory, keys)
            return F.softmax(d * strengths.unsqueeze(2), dim=-1)

        def directional_weightings(self, link_matrix, read_weights):
            rw = read_weights.unsqueeze(1)
            f = torch.matmul(link_matrix, rw.transpose(2, 3)).transpose(2, 3)
            b = torch.matmul(rw, link_matrix)
            return f.transpose(1, 2), b.transpose(1, 2)

        def forward(self, ξ, hidden):
            b = ξ.size(0)
            ξ = self.interface_weights(ξ)
            read_keys = torch.tanh(ξ[:, :R * W].contiguous().view(b, R, W))
            read_strengths = oneplus(ξ[:, R * W:R * W + R].contiguous().view(b, R))
            write_key = torch.tanh(ξ[:, R * W + R:R * W + R + W].contiguous().view(b, 1, W))
            write_strength = oneplus(ξ[:, R * W + R + W].contiguous().view(b, 1))
            erase_vector = torch.sigmoid(ξ[:, R * W + R + W + 1:R * W + R + 2 * W + 1].contiguous().view(b, 1, W))
            write_vector = torch.tanh(ξ[:, R * W + R + 2 * W + 1:R * W + R + 3 * W + 1].contiguous().view(b, 1, W))
            free_gates = torch.sigmoid(ξ[:, R * W + R + 3 * W + 1:R * W + 2 * R + 3 * W + 1].contiguous().view(b, R))
            allocation_gate = torch.sigmoid(ξ[:, R * W + 2 * R + 3 * W + 1].contiguous().unsqueeze(1).view(b, 1))
            write_gate = torch.sigmoid(ξ[:, R * W + 2 * R + 3 * W + 2].contiguous()).unsqueeze(1).view(b, 1)
            read_modes = F.softmax(ξ[:, R * W + 2 * R + 3 * W + 3:R * W + 5 * R + 3 * W + 3].contiguous().view(b, R, 3), -1)

            hidden["usage_vector"] = self.get_usage_vector(hidden["usage_vector"], free_gates, hidden["read_weights"],
                                                           hidden["write_weights"])
            write_content_weights = self.content_weightings(hidden["memory"], write_key, write_strength)
            alloc, _ = self.allocate(hidden["usage_vector"], allocation_gate * write_gate)
            hidden["write_weights"] = self.write_weighting(hidden["memory"], write_content_weights, alloc, write_gate,
                                                           allocation_gate)
            weighted_resets = hidden["write_weights"].unsqueeze(3) * erase_vector.unsqueeze(2)
            reset_gate = torch.prod(1 - weighted_resets, 1)
            hidden["memory"] = hidden["memory"] * reset_gate
            hidden["memory"] = hidden["memory"] + torch.bmm(hidden["write_weights"].transpose(1, 2), write_vector)
            hidden["link_matrix"] = self.get_link_matrix(hidden["link_matrix"], hidden["write_weights"],
                                                         hidden["precedence"])
            hidden["precedence"] = self.update_precedence(hidden["precedence"], hidden["write_weights"])
            content = self.content_weightings(hidden["memory"], read_keys, read_strengths)
            fwd, bwd = self.directional_weightings(hidden["link_matrix"], hidden["read_weights"])
            backward_mode = read_modes[:, :, 0:1]
            forward_mode = read_modes[:, :, 1:2]
            content_mode = read_modes[:, :, 2:3]
            hidden["read_weights"] = content_mode * content + torch.sum(forward_mode.unsqueeze(3) * fwd, 2) + \
                torch.sum(backward_mode.unsqueeze(3) * bwd, 2)
            read_vectors = torch.bmm(hidden["read_weights"], hidden["memory"])
            return read_vectors, hidden

    class DNC(nn.Module):
        def __init__(self, input_size, output_size, hidden_size=16):
            super().__init__()
            self.rnn = nn.GRU(input_size + R * W, hidden_size, batch_first=True)
            self.memory = Memory(hidden_size)
            self.output = nn.Linear(hidden_size + R * W, output_size)

        def forward(self, x):
            b, T, _ = x.shape
            mem = self.memory.new(b)
            last_read = torch.zeros(b, R * W)
            h = None
            outs = []
            for t in range(T):
                o, h = self.rnn(torch.cat([x[:, t], last_read], -1).unsqueeze(1), h)
                reads, mem = self.memory(o.squeeze(1), mem)
                last_read = reads.view(b, -1)
                outs.append(self.output(torch.cat([o.squeeze(1), last_read], -1)))
            return torch.stack(outs, 1), mem

    torch.manual_seed(2)
    net = DNC(4, 4)
    opt = optim.Adam(net.parameters(), lr=1e-2, eps=1e-10)
    x = torch.randn(3, 6, 4)
    y = x.flip(1)  # reverse the sequence
    losses = []
    for step in range(3):
        opt.zero_grad()
        out, mem = net(x)
        loss = F.mse_loss(out, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "usage": mem["usage_vector"].detach(), "link": mem["link_matrix"].detach(),
            "precedence": mem["precedence"].detach(), "grad_if": net.memory.interface_weights.weight.grad,
            "grad_rnn": net.rnn.weight_hh_l0.grad}


def test_dnc_memory():
    ours, _ = run_both(dnc_memory, rtol=1e-4, atol=1e-6)
    link = ours["link"]
    assert (np.diagonal(link, axis1=-2, axis2=-1) == 0).all()
    assert (ours["usage"] >= 0).all() and (ours["usage"] <= 1).all()
    assert (ours["precedence"].sum(-1) <= 1 + 1e-5).all()


def allocation_by_sort(m):
    """The DNC allocation weighting written with ``torch.sort`` and ``scatter`` (DeepMind's Sonnet port): the
    free list as sorted indices, the exclusive cumprod by shifting, the weights put back in memory order; checked
    against the formula a[φ_j] = (1 - u[φ_j]) Π_{i<j} u[φ_i] with its gradient."""
    torch = m.torch
    u = torch.tensor([[0.3, 0.9, 0.05, 0.6, 0.999], [0.5, 0.5, 0.2, 0.0, 1.0]], dtype=torch.float64,
                     requires_grad=True)
    sorted_u, free_list = torch.sort(u, dim=-1, stable=True)
    prod = torch.cumprod(sorted_u, dim=-1)
    exclusive = torch.cat([torch.ones_like(prod[:, :1]), prod[:, :-1]], dim=-1)
    sorted_alloc = (1 - sorted_u) * exclusive
    alloc = torch.zeros_like(u).scatter(-1, free_list, sorted_alloc)
    alloc2 = torch.empty_like(u).scatter_(1, free_list, sorted_alloc)
    (alloc * torch.arange(5, dtype=torch.float64)).sum().backward()
    return {"alloc": alloc, "same": torch.equal(alloc, alloc2), "free_list": free_list, "grad": u.grad}


def test_allocation_by_sort():
    ours, _ = run_both(allocation_by_sort, rtol=1e-12, atol=1e-12)
    u = np.array([[0.3, 0.9, 0.05, 0.6, 0.999], [0.5, 0.5, 0.2, 0.0, 1.0]])
    expect = np.zeros_like(u)
    for b in range(2):
        order = np.argsort(u[b], kind="stable")
        running = 1.0
        for j in order:
            expect[b, j] = (1 - u[b, j]) * running
            running *= u[b, j]
    np.testing.assert_allclose(ours["alloc"], expect, rtol=1e-12)
    assert ours["same"]
    np.testing.assert_array_equal(ours["free_list"][1], [3, 2, 0, 1, 4])
    assert ours["alloc"].sum(-1).max() <= 1
