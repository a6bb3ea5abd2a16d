# ruff: noqa: B007, B008, B023, E501, E731, E741, F841, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Memory-augmented and set-structured models as their reference PyTorch code writes them, each run as a program on
chainrule and on PyTorch from the same seed (tests/pytorch_programs.py), comparing losses, outputs and gradients
after a few Adam/AdamW steps, with invariants and NumPy checks that hold without PyTorch.

- modern Hopfield networks (Ramsauer et al.): ``softmax(beta * X^T xi)`` retrieval iterated to a fixed point, the
  ``Hopfield`` layer with its projections and ``HopfieldPooling`` with a learnt state pattern;
- a Neural Turing Machine (content addressing by ``F.cosine_similarity``, key strength through ``softplus``, the
  interpolation gate, a 3-tap circular shift by ``F.pad(mode="circular")`` and by ``torch.roll``, sharpening by
  powering and renormalising, erase/add writes) on the copy task with gradient clipping;
- a Differentiable Neural Computer's memory (usage, allocation weighting by ``sort``/``cumprod``/``gather``,
  precedence and the temporal link matrix, forward/backward read modes);
- Conditional and Attentive Neural Processes (``nn.MultiheadAttention``, ``Normal`` with a softplus scale,
  ``kl_divergence`` between latent posteriors);
- the Set Transformer (MAB/SAB/ISAB/PMA by ``nn.MultiheadAttention(batch_first=True)`` with ``key_padding_mask``,
  and its authors' own head split by ``torch.cat(Q.split(d, 2), 0)``), Deep Sets with masked sums, a
  Perceiver's latent cross-attention with Fourier features, and Slot Attention (``GRUCell``, softmax over the
  slots, epsilon-weighted means).
"""

import math

import numpy as np
import pytest

from .pytorch_programs import run_both

# ----------------------------------------------------------------------------------------------
# Modern Hopfield networks
# ----------------------------------------------------------------------------------------------


def hopfield_retrieval(m):
    """Retrieval of stored patterns by the update xi <- X softmax(beta X^T xi), from a noisy query, iterated until
    it stops moving; and its gradient with respect to the stored patterns."""
    torch, F = m.torch, m.F
    torch.manual_seed(0)
    d, n = 16, 6
    X = torch.sign(torch.randn(d, n)).requires_grad_()
    target = 3
    xi = X.detach()[:, target].clone()
    flip = torch.randperm(d)[:4]
    xi[flip] = -xi[flip]
    beta = 0.5
    states = [xi]
    for step in range(5):
        p = F.softmax(beta * X.t() @ states[-1], dim=0)
        new = X @ p
        states.append(new)
        if torch.allclose(new, states[-2], atol=1e-6):
            break
    energy = -1.0 / beta * torch.logsumexp(beta * X.t() @ states[-1], dim=0) + 0.5 * states[-1] @ states[-1]
    energy.backward()
    return {"retrieved": states[-1].detach(), "steps": len(states), "energy": energy.detach(), "X_grad": X.grad,
            "match": int((X.detach().t() @ states[-1].detach()).argmax())}


def test_hopfield_retrieval():
    ours, _ = run_both(hopfield_retrieval, rtol=1e-5, atol=1e-6)
    assert ours["match"] == 3
    assert ours["energy"].shape == ()


def hopfield_layers(m):
    """The hflayers package's Hopfield layer in a small form: state patterns (queries) R, stored patterns Y
    projected by W_K, W_Q, W_V, retrieval iterated ``update_steps`` times with a scaling beta, and HopfieldPooling,
    whose query is a learnt state pattern; trained on a multiple-instance problem with AdamW."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class Hopfield(nn.Module):
        def __init__(self, input_size, hidden_size, output_size, num_heads=2, scaling=None, update_steps=2,
                     dropout=0.0):
            super().__init__()
            self.num_heads, self.hidden = num_heads, hidden_size
            self.scaling = scaling if scaling is not None else 1.0 / math.sqrt(hidden_size)
            self.update_steps = update_steps
            self.q_proj = nn.Linear(input_size, hidden_size * num_heads, bias=False)
            self.k_proj = nn.Linear(input_size, hidden_size * num_heads, bias=False)
            self.v_proj = nn.Linear(input_size, hidden_size * num_heads, bias=False)
            self.out_proj = nn.Linear(hidden_size * num_heads, output_size)
            self.norm_stored = nn.LayerNorm(input_size)
            self.norm_state = nn.LayerNorm(input_size)
            self.dropout = nn.Dropout(dropout)

        def forward(self, stored, state, stored_mask=None):
            B, N, _ = stored.shape
            S = state.shape[1]
            stored, state = self.norm_stored(stored), self.norm_state(state)
            k = self.k_proj(stored).view(B, N, self.num_heads, self.hidden).transpose(1, 2)
            v = self.v_proj(stored).view(B, N, self.num_heads, self.hidden).transpose(1, 2)
            xi = self.q_proj(state).view(B, S, self.num_heads, self.hidden).transpose(1, 2)
            for _ in range(self.update_steps):
                logits = self.scaling * torch.matmul(xi, k.transpose(-2, -1))
                if stored_mask is not None:
                    logits = logits.masked_fill(stored_mask[:, None, None, :], float("-inf"))
                assoc = torch.softmax(logits, dim=-1)
                xi = torch.matmul(assoc, k)  # the state moves towards the stored patterns
            assoc = self.dropout(assoc)
            out = torch.matmul(assoc, v).transpose(1, 2).reshape(B, S, -1)
            return self.out_proj(out), assoc

    class HopfieldPooling(nn.Module):
        def __init__(self, input_size, hidden_size, output_size, quantity=1, **kw):
            super().__init__()
            self.hopfield = Hopfield(input_size, hidden_size, output_size, **kw)
            self.pooling_weights = nn.Parameter(torch.empty(1, quantity, input_size))
            nn.init.normal_(self.pooling_weights, mean=0.0, std=0.02)

        def forward(self, stored, stored_mask=None):
            state = self.pooling_weights.expand(stored.shape[0], -1, -1)
            out, assoc = self.hopfield(stored, state, stored_mask)
            return out.flatten(start_dim=1), assoc

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Sequential(nn.Linear(5, 16), nn.ReLU())
            self.lookup = Hopfield(16, 8, 16, num_heads=2, update_steps=3)
            self.pool = HopfieldPooling(16, 8, 8, quantity=2, num_heads=2, scaling=0.25, update_steps=1)
            self.head = nn.Linear(16, 1)

        def forward(self, bags, mask):
            h = self.embed(bags)
            h2, _ = self.lookup(h, h, mask)
            h = h + h2
            pooled, assoc = self.pool(h, mask)
            return self.head(pooled).squeeze(-1), assoc

    torch.manual_seed(0)
    net = Net()
    bags = torch.randn(8, 7, 5)
    lengths = torch.tensor([7, 5, 3, 7, 6, 2, 4, 7])
    mask = torch.arange(7)[None, :] >= lengths[:, None]
    labels = (bags[:, :, 0] * (~mask)).amax(dim=1).gt(1.0).float()
    opt = optim.AdamW(net.parameters(), lr=1e-2, weight_decay=0.05)
    losses = []
    for step in range(6):
        opt.zero_grad()
        logits, assoc = net(bags, mask)
        loss = F.binary_cross_entropy_with_logits(logits, labels)
        loss.backward()
        nn.utils.clip_grad_norm_(net.parameters(), max_norm=1.0)
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "assoc": assoc.detach(), "pool_grad": net.pool.pooling_weights.grad,
            "kgrad": net.lookup.k_proj.weight.grad, "masked_zero": bool((assoc.detach()[5, :, :, 2:] == 0).all())}


def test_hopfield_layers():
    ours, _ = run_both(hopfield_layers, rtol=2e-4, atol=1e-5)
    assert ours["masked_zero"]
    np.testing.assert_allclose(ours["assoc"].sum(-1), 1.0, rtol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]


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


# ----------------------------------------------------------------------------------------------
# Neural Processes
# ----------------------------------------------------------------------------------------------


def gp_like_tasks(torch, batch=4, n_context=5, n_target=9):
    x = torch.rand(batch, n_target, 1) * 4 - 2
    phase = torch.rand(batch, 1, 1) * 3
    y = torch.sin(2 * x + phase) + 0.05 * torch.randn(batch, n_target, 1)
    return x[:, :n_context], y[:, :n_context], x, y


def conditional_np(m):
    """A Conditional Neural Process (Garnelo et al. 2018, DeepMind's notebook in PyTorch): an MLP encoder of
    (x, y) pairs averaged into r, a decoder of (r, x*) giving a mean and a scale 0.1 + 0.9 softplus, trained on
    the negative Normal log-likelihood with Adam."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_dists = m.torch.distributions

    class CNP(nn.Module):
        def __init__(self, r_dim=16):
            super().__init__()
            self.encoder = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, r_dim))
            self.decoder = nn.Sequential(nn.Linear(r_dim + 1, 32), nn.ReLU(), nn.Linear(32, 2))

        def forward(self, xc, yc, xt):
            r = self.encoder(torch.cat([xc, yc], dim=-1)).mean(dim=1, keepdim=True)
            r = r.expand(-1, xt.size(1), -1)
            out = self.decoder(torch.cat([r, xt], dim=-1))
            mu, log_sigma = torch.split(out, 1, dim=-1)
            sigma = 0.1 + 0.9 * F.softplus(log_sigma)
            dist = from_dists.Independent(from_dists.Normal(loc=mu, scale=sigma), 1)
            return dist, mu, sigma

    torch.manual_seed(3)
    model = CNP()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for it in range(5):
        xc, yc, xt, yt = gp_like_tasks(torch)
        dist, mu, sigma = model(xc, yc, xt)
        log_p = dist.log_prob(yt)
        loss = -log_p.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "mu": mu.detach(), "sigma": sigma.detach(), "batch_shape": tuple(dist.batch_shape),
            "event_shape": tuple(dist.event_shape), "grad": model.decoder[2].bias.grad}


def test_conditional_np():
    ours, _ = run_both(conditional_np, rtol=1e-4, atol=1e-6)
    assert ours["batch_shape"] == (4, 9) and ours["event_shape"] == (1,)
    assert (ours["sigma"] > 0.1).all()


def attentive_np(m):
    """An Attentive Neural Process (Kim et al. 2019) as soobinseo/Attentive-Neural-Process writes it: a latent
    path (self-attention over the context, mean, a Normal posterior with scale 0.1 + 0.9 sigmoid), a deterministic
    path with cross-attention from targets to context by nn.MultiheadAttention, the ELBO with
    kl_divergence(posterior, prior) over the latent, trained with AdamW; at test time samples by rsample."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = m.torch.distributions

    class LatentEncoder(nn.Module):
        def __init__(self, h=16, z=8):
            super().__init__()
            self.input = nn.Linear(2, h)
            self.self_attn = nn.MultiheadAttention(h, 2, batch_first=True)
            self.penultimate = nn.Linear(h, h)
            self.mu = nn.Linear(h, z)
            self.log_sigma = nn.Linear(h, z)

        def forward(self, x, y):
            e = self.input(torch.cat([x, y], dim=-1))
            e, _ = self.self_attn(e, e, e)
            hidden = torch.relu(self.penultimate(e.mean(dim=1)))
            mu = self.mu(hidden)
            sigma = 0.1 + 0.9 * torch.sigmoid(self.log_sigma(hidden))
            return D.Normal(mu, sigma)

    class DeterministicEncoder(nn.Module):
        def __init__(self, h=16):
            super().__init__()
            self.input = nn.Linear(2, h)
            self.context_projection = nn.Linear(1, h)
            self.target_projection = nn.Linear(1, h)
            self.self_attn = nn.MultiheadAttention(h, 4, batch_first=True)
            self.cross_attn = nn.MultiheadAttention(h, 4, batch_first=True)

        def forward(self, xc, yc, xt):
            e = self.input(torch.cat([xc, yc], dim=-1))
            e, _ = self.self_attn(e, e, e, need_weights=False)
            q = self.target_projection(xt)
            k = self.context_projection(xc)
            r, w = self.cross_attn(q, k, e, average_attn_weights=False)
            return r, w

    class Decoder(nn.Module):
        def __init__(self, h=16, z=8):
            super().__init__()
            self.target_projection = nn.Linear(1, h)
            self.layers = nn.ModuleList([nn.Linear(2 * h + z, 2 * h + z) for _ in range(2)])
            self.final = nn.Linear(2 * h + z, 2)

        def forward(self, r, z, xt):
            hidden = torch.cat([torch.cat([r, z], dim=-1), self.target_projection(xt)], dim=-1)
            for layer in self.layers:
                hidden = F.relu(layer(hidden))
            mu, log_sigma = self.final(hidden).chunk(2, dim=-1)
            sigma = 0.1 + 0.9 * F.softplus(log_sigma)
            return D.Normal(mu, sigma)

    class ANP(nn.Module):
        def __init__(self):
            super().__init__()
            self.latent_encoder = LatentEncoder()
            self.deterministic_encoder = DeterministicEncoder()
            self.decoder = Decoder()

        def forward(self, xc, yc, xt, yt=None):
            n_target = xt.size(1)
            prior = self.latent_encoder(xc, yc)
            if yt is not None:
                posterior = self.latent_encoder(xt, yt)
                z = posterior.rsample()
            else:
                z = prior.rsample()
            z = z.unsqueeze(1).repeat(1, n_target, 1)
            r, w = self.deterministic_encoder(xc, yc, xt)
            dist = self.decoder(r, z, xt)
            if yt is not None:
                log_p = dist.log_prob(yt).sum(-1).mean()
                kl = D.kl_divergence(posterior, prior).sum(-1).mean()
                loss = -log_p + kl / n_target
            else:
                log_p = kl = loss = None
            return dist.mean, dist.stddev, loss, kl, w

    torch.manual_seed(4)
    model = ANP()
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    losses, kls = [], []
    for it in range(4):
        model.train()
        xc, yc, xt, yt = gp_like_tasks(torch)
        mu, sigma, loss, kl, w = model(xc, yc, xt, yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        kls.append(kl.item())
    model.eval()
    with torch.no_grad():
        mu, sigma, _, _, w = model(xc, yc, xt)
    return {"losses": losses, "kls": kls, "mu": mu, "sigma": sigma, "w": w,
            "grad": model.deterministic_encoder.cross_attn.in_proj_weight.grad,
            "grad_out": model.latent_encoder.self_attn.out_proj.weight.grad}


def test_attentive_np():
    ours, _ = run_both(attentive_np, rtol=2e-4, atol=1e-6)
    assert all(k >= 0 for k in ours["kls"])
    assert ours["w"].shape == (4, 4, 9, 5)  # per head
    np.testing.assert_allclose(ours["w"].sum(-1), 1.0, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Set Transformer
# ----------------------------------------------------------------------------------------------


def set_transformer_authors(m):
    """The Set Transformer (Lee et al. 2019) as its authors' modules.py writes it: heads split by
    ``torch.cat(Q.split(dim_split, 2), 0)``, attention by ``torch.softmax(Q_.bmm(K_.transpose(1, 2)) /
    math.sqrt(dim_V), 2)``, ISAB's inducing points and PMA's seeds as parameters initialised by xavier_uniform_;
    trained on the max-of-a-set regression with Adam."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class MAB(nn.Module):
        def __init__(self, dim_Q, dim_K, dim_V, num_heads, ln=False):
            super(MAB, self).__init__()
            self.dim_V = dim_V
            self.num_heads = num_heads
            self.fc_q = nn.Linear(dim_Q, dim_V)
            self.fc_k = nn.Linear(dim_K, dim_V)
            self.fc_v = nn.Linear(dim_K, dim_V)
            if ln:
                self.ln0 = nn.LayerNorm(dim_V)
                self.ln1 = nn.LayerNorm(dim_V)
            self.fc_o = nn.Linear(dim_V, dim_V)

        def forward(self, Q, K):
            Q = self.fc_q(Q)
            K, V = self.fc_k(K), self.fc_v(K)
            dim_split = self.dim_V // self.num_heads
            Q_ = torch.cat(Q.split(dim_split, 2), 0)
            K_ = torch.cat(K.split(dim_split, 2), 0)
            V_ = torch.cat(V.split(dim_split, 2), 0)
            A = torch.softmax(Q_.bmm(K_.transpose(1, 2)) / math.sqrt(self.dim_V), 2)
            O = torch.cat((Q_ + A.bmm(V_)).split(Q.size(0), 0), 2)
            O = O if getattr(self, 'ln0', None) is None else self.ln0(O)
            O = O + F.relu(self.fc_o(O))
            O = O if getattr(self, 'ln1', None) is None else self.ln1(O)
            return O

    class SAB(nn.Module):
        def __init__(self, dim_in, dim_out, num_heads, ln=False):
            super(SAB, self).__init__()
            self.mab = MAB(dim_in, dim_in, dim_out, num_heads, ln=ln)

        def forward(self, X):
            return self.mab(X, X)

    class ISAB(nn.Module):
        def __init__(self, dim_in, dim_out, num_heads, num_inds, ln=False):
            super(ISAB, self).__init__()
            self.I = nn.Parameter(torch.Tensor(1, num_inds, dim_out))
            nn.init.xavier_uniform_(self.I)
            self.mab0 = MAB(dim_out, dim_in, dim_out, num_heads, ln=ln)
            self.mab1 = MAB(dim_in, dim_out, dim_out, num_heads, ln=ln)

        def forward(self, X):
            H = self.mab0(self.I.repeat(X.size(0), 1, 1), X)
            return self.mab1(X, H)

    class PMA(nn.Module):
        def __init__(self, dim, num_heads, num_seeds, ln=False):
            super(PMA, self).__init__()
            self.S = nn.Parameter(torch.Tensor(1, num_seeds, dim))
            nn.init.xavier_uniform_(self.S)
            self.mab = MAB(dim, dim, dim, num_heads, ln=ln)

        def forward(self, X):
            return self.mab(self.S.repeat(X.size(0), 1, 1), X)

    class SetTransformer(nn.Module):
        def __init__(self, dim_input, num_outputs, dim_output, num_inds=4, dim_hidden=16, num_heads=4, ln=True):
            super(SetTransformer, self).__init__()
            self.enc = nn.Sequential(
                ISAB(dim_input, dim_hidden, num_heads, num_inds, ln=ln),
                ISAB(dim_hidden, dim_hidden, num_heads, num_inds, ln=ln))
            self.dec = nn.Sequential(
                PMA(dim_hidden, num_heads, num_outputs, ln=ln),
                SAB(dim_hidden, dim_hidden, num_heads, ln=ln),
                nn.Linear(dim_hidden, dim_output))

        def forward(self, X):
            return self.dec(self.enc(X))

    torch.manual_seed(5)
    model = SetTransformer(1, 1, 1)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    criterion = nn.L1Loss()
    losses = []
    for step in range(4):
        X = torch.rand(6, 10, 1) * 10
        y = X.max(dim=1)[0]
        pred = model(X).squeeze(-1)
        loss = criterion(pred, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    perm = torch.randperm(10)
    with torch.no_grad():
        a, b = model(X), model(X[:, perm])
    return {"losses": losses, "pred": a, "perm_diff": (a - b).abs().max(), "I_grad": model.enc[0].I.grad,
            "S_grad": model.dec[0].S.grad}


def test_set_transformer_authors():
    ours, _ = run_both(set_transformer_authors, rtol=2e-4, atol=1e-5)
    assert ours["perm_diff"] < 1e-4  # a permutation-invariant function of the set


def set_transformer_padded(m):
    """Set Transformer blocks on nn.MultiheadAttention(batch_first=True) for sets of different sizes in one padded
    batch: ``key_padding_mask`` in SAB/ISAB/PMA, masked positions zeroed before pooling, a classification head;
    the result for a padded set equals that of the set alone."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class MAB(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.ln0, self.ln1 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))

        def forward(self, Q, K, key_padding_mask=None):
            H = self.ln0(Q + self.attn(Q, K, K, key_padding_mask=key_padding_mask, need_weights=False)[0])
            return self.ln1(H + self.ff(H))

    class ISAB(nn.Module):
        def __init__(self, d, heads, m_ind):
            super().__init__()
            self.inducing = nn.Parameter(torch.randn(1, m_ind, d) / math.sqrt(d))
            self.mab0, self.mab1 = MAB(d, heads), MAB(d, heads)

        def forward(self, X, mask=None):
            H = self.mab0(self.inducing.expand(X.size(0), -1, -1), X, key_padding_mask=mask)
            return self.mab1(X, H)

    class PMA(nn.Module):
        def __init__(self, d, heads, k):
            super().__init__()
            self.seeds = nn.Parameter(torch.randn(1, k, d) / math.sqrt(d))
            self.mab = MAB(d, heads)

        def forward(self, X, mask=None):
            return self.mab(self.seeds.expand(X.size(0), -1, -1), X, key_padding_mask=mask)

    class Net(nn.Module):
        def __init__(self, d_in=3, d=16, classes=3):
            super().__init__()
            self.embed = nn.Linear(d_in, d)
            self.isab = ISAB(d, 4, 3)
            self.sab = MAB(d, 4)
            self.pma = PMA(d, 4, 2)
            self.head = nn.Linear(2 * d, classes)

        def forward(self, X, mask):
            H = self.embed(X)
            H = self.isab(H, mask)
            H = self.sab(H, H, key_padding_mask=mask)
            H = H.masked_fill(mask.unsqueeze(-1), 0.0)
            return self.head(self.pma(H, mask).flatten(1))

    torch.manual_seed(6)
    net = Net()
    sizes = [7, 3, 5, 1, 6]
    X = torch.randn(len(sizes), 7, 3)
    mask = torch.arange(7).unsqueeze(0) >= torch.tensor(sizes).unsqueeze(1)
    X = X.masked_fill(mask.unsqueeze(-1), 0.0)
    labels = torch.tensor([0, 1, 2, 1, 0])
    opt = optim.AdamW(net.parameters(), lr=3e-3, betas=(0.9, 0.98), weight_decay=1e-2)
    sched = optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    losses = []
    for step in range(5):
        logits = net(X, mask)
        loss = F.cross_entropy(logits, labels, label_smoothing=0.1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    net.eval()
    with torch.no_grad():
        batched = net(X, mask)
        alone = net(X[1:2, :3], mask[1:2, :3])
        float_mask = torch.zeros(mask.shape).masked_fill(mask, float("-inf"))
        by_float = net.sab.attn(X[:, :, :1].expand(-1, -1, 16).contiguous(), net.embed(X), net.embed(X),
                                key_padding_mask=float_mask)[0]
        by_bool = net.sab.attn(X[:, :, :1].expand(-1, -1, 16).contiguous(), net.embed(X), net.embed(X),
                               key_padding_mask=mask)[0]
    return {"losses": losses, "logits": batched, "alone": alone, "by_float": by_float, "by_bool": by_bool,
            "seed_grad": net.pma.seeds.grad, "in_proj_grad": net.isab.mab0.attn.in_proj_weight.grad}


def test_set_transformer_padded():
    ours, _ = run_both(set_transformer_padded, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(ours["logits"][1:2], ours["alone"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ours["by_float"], ours["by_bool"], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Slot Attention, Perceiver, Deep Sets
# ----------------------------------------------------------------------------------------------


def slot_attention(m):
    """Slot Attention (Locatello et al. 2020) as lucidrains/slot-attention writes it: slots drawn from a learnt
    Gaussian (mu + exp(logsigma) * randn), dots scaled by d^-0.5, softmax over the slots (dim=1) plus eps,
    weights renormalised over the inputs, ``einsum('bjd,bij->bid')`` updates through a GRUCell and a residual MLP;
    inside an autoencoder with a soft position embedding built from ``torch.meshgrid``, a spatial broadcast
    decoder and an alpha-mask recombination, trained with Adam under warmup and decay."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class SlotAttention(nn.Module):
        def __init__(self, num_slots, dim, iters=3, eps=1e-8, hidden_dim=32):
            super().__init__()
            self.num_slots = num_slots
            self.iters = iters
            self.eps = eps
            self.scale = dim ** -0.5
            self.slots_mu = nn.Parameter(torch.randn(1, 1, dim))
            self.slots_logsigma = nn.Parameter(torch.zeros(1, 1, dim))
            nn.init.xavier_uniform_(self.slots_logsigma)
            self.to_q = nn.Linear(dim, dim)
            self.to_k = nn.Linear(dim, dim)
            self.to_v = nn.Linear(dim, dim)
            self.gru = nn.GRUCell(dim, dim)
            hidden_dim = max(dim, hidden_dim)
            self.mlp = nn.Sequential(nn.Linear(dim, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, dim))
            self.norm_input = nn.LayerNorm(dim)
            self.norm_slots = nn.LayerNorm(dim)
            self.norm_pre_ff = nn.LayerNorm(dim)

        def forward(self, inputs, num_slots=None):
            b, n, d = inputs.shape
            n_s = num_slots if num_slots is not None else self.num_slots
            mu = self.slots_mu.expand(b, n_s, -1)
            sigma = self.slots_logsigma.exp().expand(b, n_s, -1)
            slots = mu + sigma * torch.randn(mu.shape)
            inputs = self.norm_input(inputs)
            k, v = self.to_k(inputs), self.to_v(inputs)
            for _ in range(self.iters):
                slots_prev = slots
                slots = self.norm_slots(slots)
                q = self.to_q(slots)
                dots = torch.einsum('bid,bjd->bij', q, k) * self.scale
                attn = dots.softmax(dim=1) + self.eps
                attn = attn / attn.sum(dim=-1, keepdim=True)
                updates = torch.einsum('bjd,bij->bid', v, attn)
                slots = self.gru(updates.reshape(-1, d), slots_prev.reshape(-1, d))
                slots = slots.reshape(b, -1, d)
                slots = slots + self.mlp(self.norm_pre_ff(slots))
            return slots, attn

    def build_grid(resolution):
        ranges = [torch.linspace(0.0, 1.0, steps=res) for res in resolution]
        grid = torch.meshgrid(*ranges, indexing="ij")
        grid = torch.stack(grid, dim=-1)
        grid = torch.reshape(grid, [resolution[0], resolution[1], -1])
        grid = grid.unsqueeze(0)
        return torch.cat([grid, 1.0 - grid], dim=-1)

    class SoftPositionEmbed(nn.Module):
        def __init__(self, hidden_size, resolution):
            super().__init__()
            self.embedding = nn.Linear(4, hidden_size, bias=True)
            self.register_buffer("grid", build_grid(resolution))

        def forward(self, inputs):
            return inputs + self.embedding(self.grid)

    class SlotAutoEncoder(nn.Module):
        def __init__(self, resolution=(8, 8), num_slots=3, hid=16):
            super().__init__()
            self.resolution, self.num_slots, self.hid = resolution, num_slots, hid
            self.conv1 = nn.Conv2d(3, hid, 5, padding=2)
            self.conv2 = nn.Conv2d(hid, hid, 5, padding=2)
            self.enc_pos = SoftPositionEmbed(hid, resolution)
            self.dec_pos = SoftPositionEmbed(hid, resolution)
            self.fc1 = nn.Linear(hid, hid)
            self.fc2 = nn.Linear(hid, hid)
            self.deconv = nn.ConvTranspose2d(hid, 4, 3, stride=(1, 1), padding=1)
            self.slot_attention = SlotAttention(num_slots, hid, iters=3, eps=1e-8, hidden_dim=32)

        def forward(self, image):
            x = F.relu(self.conv2(F.relu(self.conv1(image))))
            x = x.permute(0, 2, 3, 1)
            x = self.enc_pos(x)
            x = torch.flatten(x, 1, 2)
            x = nn.LayerNorm(x.shape[1:])(x)
            x = self.fc2(F.relu(self.fc1(x)))
            slots, attn = self.slot_attention(x)
            b = slots.shape[0]
            slots = slots.reshape((-1, slots.shape[-1])).unsqueeze(1).unsqueeze(2)
            slots = slots.repeat((1, self.resolution[0], self.resolution[1], 1))
            x = self.dec_pos(slots).permute(0, 3, 1, 2)
            x = self.deconv(x).permute(0, 2, 3, 1)
            recons, masks = x.reshape(b, -1, x.shape[1], x.shape[2], x.shape[3]).split([3, 1], dim=-1)
            masks = nn.Softmax(dim=1)(masks)
            recon_combined = torch.sum(recons * masks, dim=1).permute(0, 3, 1, 2)
            return recon_combined, recons, masks, attn

    torch.manual_seed(7)
    model = SlotAutoEncoder()
    opt = optim.Adam(model.parameters(), lr=4e-4)
    images = torch.rand(2, 3, 8, 8)
    losses = []
    warmup, decay_rate, decay_steps = 2, 0.5, 10
    for step in range(3):
        lr = 4e-4 * min(1.0, (step + 1) / warmup) * decay_rate ** (step / decay_steps)
        opt.param_groups[0]["lr"] = lr
        recon, recons, masks, attn = model(images)
        loss = F.mse_loss(recon, images)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "masks": masks.detach(), "attn": attn.detach(),
            "mu_grad": model.slot_attention.slots_mu.grad, "gru_grad": model.slot_attention.gru.weight_hh.grad,
            "deconv_grad": model.deconv.weight.grad}


def test_slot_attention():
    ours, _ = run_both(slot_attention, rtol=3e-4, atol=1e-6)
    np.testing.assert_allclose(ours["masks"].sum(1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(ours["attn"].sum(-1), 1.0, rtol=1e-5)
    assert ours["attn"].shape == (2, 3, 64)


def perceiver(m):
    """A Perceiver (Jaegle et al. 2021) as lucidrains/perceiver-pytorch writes it: Fourier features of the input
    positions (``torch.linspace`` grids, ``einops``-free ``repeat`` by ``expand``), a learnt latent array
    cross-attending to the data with a mask, latent self-attention blocks with weight sharing, GEGLU feed-forward,
    mean pooling into logits; trained with AdamW."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def fourier_encode(x, max_freq, num_bands=4):
        x = x.unsqueeze(-1)
        dtype, orig_x = x.dtype, x
        scales = torch.linspace(1., max_freq / 2, num_bands, dtype=dtype)
        scales = scales[(*((None,) * (len(x.shape) - 1)), Ellipsis)]
        x = x * scales * math.pi
        x = torch.cat([x.sin(), x.cos()], dim=-1)
        return torch.cat((x, orig_x), dim=-1)

    class PreNorm(nn.Module):
        def __init__(self, dim, fn, context_dim=None):
            super().__init__()
            self.fn = fn
            self.norm = nn.LayerNorm(dim)
            self.norm_context = nn.LayerNorm(context_dim) if context_dim is not None else None

        def forward(self, x, **kwargs):
            x = self.norm(x)
            if self.norm_context is not None:
                kwargs.update(context=self.norm_context(kwargs["context"]))
            return self.fn(x, **kwargs)

    class GEGLU(nn.Module):
        def forward(self, x):
            x, gates = x.chunk(2, dim=-1)
            return x * F.gelu(gates)

    class FeedForward(nn.Module):
        def __init__(self, dim, mult=2):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(dim, dim * mult * 2), GEGLU(), nn.Linear(dim * mult, dim))

        def forward(self, x):
            return self.net(x)

    class Attention(nn.Module):
        def __init__(self, query_dim, context_dim=None, heads=2, dim_head=8):
            super().__init__()
            inner_dim = dim_head * heads
            context_dim = context_dim if context_dim is not None else query_dim
            self.scale = dim_head ** -0.5
            self.heads = heads
            self.to_q = nn.Linear(query_dim, inner_dim, bias=False)
            self.to_kv = nn.Linear(context_dim, inner_dim * 2, bias=False)
            self.to_out = nn.Linear(inner_dim, query_dim)

        def forward(self, x, context=None, mask=None):
            h = self.heads
            q = self.to_q(x)
            context = context if context is not None else x
            k, v = self.to_kv(context).chunk(2, dim=-1)
            q, k, v = (t.reshape(t.shape[0], t.shape[1], h, -1).permute(0, 2, 1, 3).reshape(t.shape[0] * h, t.shape[1], -1)
                       for t in (q, k, v))
            sim = torch.einsum('b i d, b j d -> b i j', q, k) * self.scale
            if mask is not None:
                mask = mask.reshape(mask.shape[0], -1)
                max_neg_value = -torch.finfo(sim.dtype).max
                mask = mask[:, None, :].repeat_interleave(h, dim=0)
                sim.masked_fill_(~mask, max_neg_value)
            attn = sim.softmax(dim=-1)
            out = torch.einsum('b i j, b j d -> b i d', attn, v)
            out = out.reshape(-1, h, out.shape[1], out.shape[2]).permute(0, 2, 1, 3).flatten(2)
            return self.to_out(out)

    class Perceiver(nn.Module):
        def __init__(self, input_channels=3, num_latents=6, latent_dim=16, depth=2, num_classes=4, max_freq=5.,
                     num_freq_bands=4):
            super().__init__()
            self.max_freq, self.num_freq_bands = max_freq, num_freq_bands
            input_dim = 2 * (num_freq_bands * 2 + 1) + input_channels
            self.latents = nn.Parameter(torch.randn(num_latents, latent_dim))
            self.cross_attn = PreNorm(latent_dim, Attention(latent_dim, input_dim, heads=1, dim_head=16),
                                      context_dim=input_dim)
            self.cross_ff = PreNorm(latent_dim, FeedForward(latent_dim))
            self.latent_attn = PreNorm(latent_dim, Attention(latent_dim))
            self.latent_ff = PreNorm(latent_dim, FeedForward(latent_dim))
            self.depth = depth
            self.to_logits = nn.Sequential(nn.LayerNorm(latent_dim), nn.Linear(latent_dim, num_classes))

        def forward(self, data, mask=None):
            b, *axis, _ = data.shape
            axis_pos = [torch.linspace(-1., 1., steps=size) for size in axis]
            pos = torch.stack(torch.meshgrid(*axis_pos, indexing="ij"), dim=-1)
            enc_pos = fourier_encode(pos, self.max_freq, self.num_freq_bands)
            enc_pos = enc_pos.reshape(*enc_pos.shape[:-2], -1)
            enc_pos = enc_pos.unsqueeze(0).expand(b, *enc_pos.shape)
            data = torch.cat((data, enc_pos), dim=-1)
            data = data.reshape(b, -1, data.shape[-1])
            x = self.latents.unsqueeze(0).expand(b, -1, -1)
            for _ in range(self.depth):  # weights tied across depth
                x = self.cross_attn(x, context=data, mask=mask) + x
                x = self.cross_ff(x) + x
                x = self.latent_attn(x) + x
                x = self.latent_ff(x) + x
            return self.to_logits(x.mean(dim=-2))

    torch.manual_seed(8)
    model = Perceiver()
    opt = optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    img = torch.randn(3, 5, 4, 3)
    mask = torch.ones(3, 5, 4, dtype=torch.bool)
    mask[0, 3:] = False
    labels = torch.tensor([1, 3, 0])
    losses = []
    for step in range(4):
        loss = F.cross_entropy(model(img, mask), labels)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0) if hasattr(torch, "nn") else nn.utils.clip_grad_norm_(
            model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "latent_grad": model.latents.grad, "kv_grad": model.cross_attn.fn.to_kv.weight.grad,
            "logits": model(img, mask).detach()}


def test_perceiver():
    ours, _ = run_both(perceiver, rtol=2e-4, atol=1e-5)
    assert ours["losses"][-1] < ours["losses"][0]


def deep_sets(m):
    """Deep Sets (Zaheer et al. 2017): phi on each element, a masked sum (and a masked mean and max for the
    variants), rho on the pooled vector; permutation-equivariant layers x W - max(x) Gamma as in the point-cloud
    classifier; trained on the sum-of-digits task with Adam and an exponential LR decay."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class PermEqui2_max(nn.Module):
        def __init__(self, in_dim, out_dim):
            super().__init__()
            self.Gamma = nn.Linear(in_dim, out_dim)
            self.Lambda = nn.Linear(in_dim, out_dim, bias=False)

        def forward(self, x, mask):
            xm, _ = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).max(1, keepdim=True)
            xm = self.Lambda(xm)
            x = self.Gamma(x)
            return x - xm

    class DeepSets(nn.Module):
        def __init__(self, vocab=10, d=16, pool="sum"):
            super().__init__()
            self.embed = nn.Embedding(vocab, d, padding_idx=0)
            self.phi = nn.Sequential(nn.Linear(d, d), nn.ELU(inplace=True), nn.Linear(d, d), nn.Tanh())
            self.equi = PermEqui2_max(d, d)
            self.rho = nn.Sequential(nn.Linear(3 * d, d), nn.ELU(inplace=True), nn.Linear(d, 1))

        def forward(self, digits):
            mask = digits != 0
            x = self.phi(self.embed(digits))
            x = F.elu(self.equi(x, mask))
            m_f = mask.unsqueeze(-1).to(x.dtype)
            s = (x * m_f).sum(dim=1)
            mean = s / m_f.sum(dim=1).clamp(min=1)
            mx = x.masked_fill(~mask.unsqueeze(-1), -1e9).amax(dim=1)
            return self.rho(torch.cat([s, mean, mx], dim=-1)).squeeze(-1)

    torch.manual_seed(9)
    model = DeepSets()
    opt = optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-5)
    sched = optim.lr_scheduler.ExponentialLR(opt, gamma=0.9)
    digits = torch.randint(1, 10, (16, 6))
    lengths = torch.randint(1, 7, (16,))
    digits[torch.arange(6)[None] >= lengths[:, None]] = 0
    target = digits.sum(1).float()
    losses = []
    for epoch in range(5):
        pred = model(digits)
        loss = F.l1_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    shuffled = digits[:, torch.randperm(6)]
    with torch.no_grad():
        diff = (model(digits) - model(shuffled)).abs().max()
    return {"losses": losses, "diff": diff, "emb_grad": model.embed.weight.grad, "lr": sched.get_last_lr()[0]}


def test_deep_sets():
    ours, _ = run_both(deep_sets, rtol=1e-4, atol=1e-5)
    assert ours["diff"] < 1e-4
    assert np.all(ours["emb_grad"][0] == 0)  # padding_idx gets no gradient
    assert ours["lr"] == pytest.approx(1e-3 * 0.9 ** 5)


# ----------------------------------------------------------------------------------------------
# End-to-end memory networks, product-key memory, an empty set at inference
# ----------------------------------------------------------------------------------------------


def memn2n(m):
    """End-To-End Memory Networks (Sukhbaatar et al. 2015) on a bAbI-like toy task: adjacent weight tying
    (``C[k].weight = A[k + 1].weight``), position encoding of the words, temporal encoding added to the memories,
    three hops, ``clip_grad_norm_(40)``, SGD with the learning rate halved on a schedule; linear start (no softmax)
    for the first steps."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    V, d, n_mem, n_words, hops = 12, 10, 5, 4, 3

    def position_encoding(sentence_size, embedding_dim):
        encoding = np.ones((embedding_dim, sentence_size), dtype=np.float32)
        ls, le = sentence_size + 1, embedding_dim + 1
        for i in range(1, le):
            for j in range(1, ls):
                encoding[i - 1, j - 1] = (i - (le - 1) / 2) * (j - (ls - 1) / 2)
        encoding = 1 + 4 * encoding / embedding_dim / sentence_size
        return torch.from_numpy(np.transpose(encoding))

    class MemN2N(nn.Module):
        def __init__(self):
            super().__init__()
            self.A = nn.ModuleList([nn.Embedding(V, d, padding_idx=0) for _ in range(hops + 1)])
            for emb in self.A:
                emb.weight.data.normal_(0, 0.1)
            self.C = nn.ModuleList()
            for k in range(hops):
                self.C.append(nn.Embedding(V, d, padding_idx=0))
                self.C[k].weight = self.A[k + 1].weight  # adjacent tying
            self.TA = nn.Parameter(torch.randn(n_mem, d) * 0.1)
            self.TC = nn.Parameter(torch.randn(n_mem, d) * 0.1)
            self.register_buffer("encoding", position_encoding(n_words, d))
            self.linear_start = True

        def forward(self, story, query):
            u = (self.A[0](query) * self.encoding).sum(1)
            for k in range(hops):
                m_in = (self.A[k](story) * self.encoding).sum(2) + self.TA
                c = (self.C[k](story) * self.encoding).sum(2) + self.TC
                scores = torch.bmm(m_in, u.unsqueeze(2)).squeeze(2)
                p = scores if self.linear_start else F.softmax(scores, dim=-1)
                o = torch.bmm(p.unsqueeze(1), c).squeeze(1)
                u = u + o
            return F.linear(u, self.C[-1].weight), p

    rng = np.random.default_rng(0)
    story = torch.from_numpy(rng.integers(0, V, (8, n_mem, n_words)))
    query = torch.from_numpy(rng.integers(1, V, (8, n_words)))
    answer = story[torch.arange(8), 2, 1]
    torch.manual_seed(10)
    model = MemN2N()
    opt = optim.SGD(model.parameters(), lr=0.01)
    sched = optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    losses, norms = [], []
    for step in range(6):
        if step == 3:
            model.linear_start = False
        logits, p = model(story, query)
        loss = F.cross_entropy(logits, answer, reduction="sum")
        opt.zero_grad()
        loss.backward()
        norms.append(float(nn.utils.clip_grad_norm_(model.parameters(), 40.0)))
        opt.step()
        sched.step()
        with torch.no_grad():
            for emb in model.A:
                emb.weight[0].zero_()  # keep the null word's embedding at zero
        losses.append(loss.item())
    n_params = sum(p.numel() for p in model.parameters())
    return {"losses": losses, "norms": norms, "p": p.detach(), "n_params": n_params,
            "tied": model.C[0].weight is model.A[1].weight, "A1_grad": model.A[1].weight.grad}


def test_memn2n():
    ours, _ = run_both(memn2n, rtol=1e-4, atol=1e-5)
    assert ours["tied"]
    assert ours["n_params"] == 4 * 12 * 10 + 2 * 5 * 10  # tied embeddings counted once
    assert max(ours["norms"][3:]) > 0 and all(n <= 1e6 for n in ours["norms"])
    np.testing.assert_allclose(ours["p"].sum(-1), 1.0, rtol=1e-5)


def product_key_memory(m):
    """A product-key memory layer (Lample et al. 2019) as its reference writes it: two half-queries scored
    against two sets of sub-keys, the top-k of each, the k*k candidate scores and indices by broadcasting, the
    best k kept, their values read by ``nn.EmbeddingBag(mode="sum", sparse=True)`` with ``per_sample_weights``;
    sub-keys trained by Adam and the sparse values by SparseAdam."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class HashingMemory(nn.Module):
        def __init__(self, input_dim=8, k_dim=6, n_keys=5, heads=2, knn=3, v_dim=8):
            super().__init__()
            self.k_dim, self.n_keys, self.heads, self.knn = k_dim, n_keys, heads, knn
            self.keys = nn.Parameter(torch.empty(heads, 2, n_keys, k_dim // 2))
            nn.init.uniform_(self.keys, -1 / math.sqrt(k_dim), 1 / math.sqrt(k_dim))
            self.values = nn.EmbeddingBag(n_keys ** 2, v_dim, mode="sum", sparse=True)
            nn.init.normal_(self.values.weight, mean=0, std=v_dim ** -0.5)
            self.query_proj = nn.Sequential(nn.Linear(input_dim, heads * k_dim), nn.BatchNorm1d(heads * k_dim))

        def _get_indices(self, query, subkeys):
            bs = query.size(0)
            knn, half = self.knn, self.k_dim // 2
            q1, q2 = query[:, :half], query[:, half:]
            scores1 = F.linear(q1, subkeys[0], bias=None)
            scores2 = F.linear(q2, subkeys[1], bias=None)
            scores1, indices1 = scores1.topk(knn, dim=1)
            scores2, indices2 = scores2.topk(knn, dim=1)
            all_scores = (scores1.view(bs, knn, 1).expand(bs, knn, knn) +
                          scores2.view(bs, 1, knn).expand(bs, knn, knn)).view(bs, -1)
            all_indices = (indices1.view(bs, knn, 1).expand(bs, knn, knn) * self.n_keys +
                           indices2.view(bs, 1, knn).expand(bs, knn, knn)).view(bs, -1)
            scores, best_indices = torch.topk(all_scores, k=knn, dim=1)
            indices = all_indices.gather(1, best_indices)
            return scores, indices

        def forward(self, x):
            prefix_shape = x.shape[:-1]
            x = x.contiguous().view(-1, x.shape[-1])
            bs = x.size(0)
            query = self.query_proj(x).view(bs, self.heads, self.k_dim)
            outputs = [self._get_indices(query[:, i], self.keys[i]) for i in range(self.heads)]
            scores = torch.cat([s.unsqueeze(1) for s, _ in outputs], 1).view(bs * self.heads, self.knn)
            indices = torch.cat([idx.unsqueeze(1) for _, idx in outputs], 1).view(bs * self.heads, self.knn)
            scores = F.softmax(scores.float(), dim=-1).type_as(scores)
            output = self.values(indices, per_sample_weights=scores)
            output = output.view(bs, self.heads, -1).sum(1)
            return output.view(prefix_shape + (output.shape[-1],)), indices

    torch.manual_seed(11)
    memory = HashingMemory()
    head = nn.Linear(8, 1)
    dense = [p for n, p in memory.named_parameters() if not n.startswith("values")] + list(head.parameters())
    opt_dense = optim.Adam(dense, lr=1e-2)
    opt_sparse = optim.SparseAdam(list(memory.values.parameters()), lr=1e-2)
    x = torch.randn(4, 3, 8)
    y = x.sum(-1, keepdim=True).tanh()
    losses = []
    for step in range(4):
        out, indices = memory(x)
        loss = F.mse_loss(head(out + x), y)
        opt_dense.zero_grad()
        opt_sparse.zero_grad()
        loss.backward()
        grad = memory.values.weight.grad
        touched = grad.coalesce().indices()[0].unique()
        opt_dense.step()
        opt_sparse.step()
        losses.append(loss.item())
    return {"losses": losses, "indices": indices, "sparse": grad.is_sparse, "touched": touched,
            "values": memory.values.weight.detach(), "keys_grad": memory.keys.grad}
    # (not the batch norm's running mean: the query projection's bias, which batch norm cancels, gets gradients of
    # rounding noise only, which Adam scales up to steps of lr in directions the two libraries' rounding decides)


def test_product_key_memory():
    ours, _ = run_both(product_key_memory, rtol=2e-4, atol=1e-6)
    assert ours["sparse"]
    assert ours["indices"].min() >= 0 and ours["indices"].max() < 25
    assert set(ours["indices"].ravel()) <= set(ours["touched"].tolist())


def empty_set_inference(m):
    """A set encoder (nn.TransformerEncoder over a padded batch) evaluated on a batch holding an empty set: in
    inference PyTorch runs its fused kernels, so the empty set's attention is a softmax over nothing (NaN), unlike
    training mode's SDPA route (0); a pooled readout guards with ``nan_to_num`` as set-prediction code does."""
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(12)
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    encoder = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
    sab = nn.MultiheadAttention(8, 2, batch_first=True)
    X = torch.randn(3, 4, 8)
    mask = torch.tensor([[False, False, True, True], [True, True, True, True], [False, False, False, False]])
    train_out = encoder(X, src_key_padding_mask=mask)
    encoder.eval()
    sab.eval()
    with torch.no_grad():
        eval_out = encoder(X, src_key_padding_mask=mask)
        attended, _ = sab(X, X, X, key_padding_mask=mask, need_weights=False)
        keep = (~mask).unsqueeze(-1).float()
        pooled = (attended.nan_to_num(0.0) * keep).sum(1) / keep.sum(1).clamp(min=1)
    return {"train": train_out.detach(), "eval": eval_out, "attended": attended, "pooled": pooled}


def test_empty_set_inference():
    ours, _ = run_both(empty_set_inference, rtol=1e-4, atol=1e-5)
    assert np.isfinite(ours["train"]).all()
    assert np.isnan(ours["eval"][1]).all() and np.isfinite(ours["eval"][[0, 2]]).all()
    np.testing.assert_allclose(ours["eval"][[0, 2]], ours["train"][[0, 2]], rtol=1e-4, atol=1e-5)
    assert np.isnan(ours["attended"][1]).all()
    np.testing.assert_array_equal(ours["pooled"][1], 0.0)


# ----------------------------------------------------------------------------------------------
# Perceiver IO on nn modules, the Neural Statistician, Hopfield fixed points through torch.func
# ----------------------------------------------------------------------------------------------


def perceiver_io(m):
    """A Perceiver IO (Jaegle et al. 2021) on PyTorch's modules: the encoder's cross-attention from the latent array
    to the inputs by ``nn.MultiheadAttention(kdim=, vdim=)`` with a key padding mask, a latent
    ``nn.TransformerEncoder`` (pre-norm, GELU), a decoder cross-attending from output queries (a learnt array plus
    query features) to the latents; trained with AdamW under OneCycleLR, then evaluated (the fused inference path of
    the latent encoder)."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class PerceiverIO(nn.Module):
        def __init__(self, in_dim=5, latent_dim=16, num_latents=4, query_dim=3, out_dim=2):
            super().__init__()
            self.latents = nn.Parameter(torch.randn(num_latents, latent_dim) * 0.02)
            self.encode = nn.MultiheadAttention(latent_dim, 2, kdim=in_dim, vdim=in_dim, batch_first=True)
            self.encode_norm = nn.LayerNorm(latent_dim)
            layer = nn.TransformerEncoderLayer(latent_dim, 2, 32, dropout=0.1, activation="gelu", batch_first=True,
                                               norm_first=True)
            self.process = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
            self.query_embed = nn.Linear(query_dim, latent_dim)
            self.decode = nn.MultiheadAttention(latent_dim, 2, batch_first=True)
            self.head = nn.Linear(latent_dim, out_dim)

        def forward(self, inputs, input_mask, queries):
            b = inputs.size(0)
            latents = self.latents.unsqueeze(0).expand(b, -1, -1)
            z, _ = self.encode(latents, inputs, inputs, key_padding_mask=input_mask)
            z = self.encode_norm(z + latents)
            z = self.process(z)
            q = self.query_embed(queries)
            out, weights = self.decode(q, z, z)
            return self.head(out + q), weights

    torch.manual_seed(13)
    model = PerceiverIO()
    inputs = torch.randn(3, 7, 5)
    input_mask = torch.zeros(3, 7, dtype=torch.bool)
    input_mask[0, 5:] = True
    input_mask[2, 2:] = True
    queries = torch.rand(3, 6, 3)
    target = torch.stack([queries.sum(-1), queries.prod(-1)], -1)
    opt = optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=1e-2, total_steps=5)
    losses, lrs = [], []
    for step in range(5):
        pred, _ = model(inputs, input_mask, queries)
        loss = F.mse_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        lrs.append(sched.get_last_lr()[0])
    model.eval()
    with torch.no_grad():
        pred, weights = model(inputs, input_mask, queries)
    return {"losses": losses, "lrs": lrs, "pred": pred, "weights": weights, "latent_grad": model.latents.grad,
            "k_grad": model.encode.k_proj_weight.grad, "v_grad": model.encode.v_proj_weight.grad}


def test_perceiver_io():
    ours, _ = run_both(perceiver_io, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(ours["weights"].sum(-1), 1.0, rtol=1e-5)
    assert ours["weights"].shape == (3, 6, 4)
    assert ours["lrs"][-1] < ours["lrs"][1]


def neural_statistician(m):
    """The Neural Statistician (Edwards & Storkey 2017), reduced: a statistic network pools each set (masked mean of
    an element encoder) into q(c | D), a Normal with softplus scale; the latent c, drawn by rsample, conditions a
    Gaussian decoder of every element; the loss is the negative ELBO with ``kl_divergence(q(c|D), N(0, I))``
    through ``Independent``; trained with Adam; sets of different sizes padded in one batch."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = m.torch.distributions

    class Statistician(nn.Module):
        def __init__(self, x_dim=2, h=16, c_dim=3):
            super().__init__()
            self.element = nn.Sequential(nn.Linear(x_dim, h), nn.ELU(), nn.Linear(h, h), nn.ELU())
            self.post = nn.Linear(h, 2 * c_dim)
            self.decoder = nn.Sequential(nn.Linear(c_dim, h), nn.Tanh(), nn.Linear(h, 2 * x_dim))
            self.c_dim = c_dim

        def forward(self, x, mask):
            keep = (~mask).unsqueeze(-1).to(x.dtype)
            e = self.element(x) * keep
            pooled = e.sum(1) / keep.sum(1)
            mu, pre = self.post(pooled).chunk(2, -1)
            q_c = D.Independent(D.Normal(mu, F.softplus(pre) + 1e-4), 1)
            prior = D.Independent(D.Normal(torch.zeros_like(mu), torch.ones_like(mu)), 1)
            c = q_c.rsample()
            x_mu, x_pre = self.decoder(c).chunk(2, -1)
            p_x = D.Normal(x_mu.unsqueeze(1), F.softplus(x_pre).unsqueeze(1) + 1e-3)
            log_lik = (p_x.log_prob(x).sum(-1) * keep.squeeze(-1)).sum(1)
            kl = D.kl_divergence(q_c, prior)
            return -(log_lik - kl).mean(), kl, q_c.mean

    torch.manual_seed(14)
    model = Statistician()
    opt = optim.Adam(model.parameters(), lr=5e-3)
    centres = torch.randn(6, 1, 2) * 2
    x = centres + 0.3 * torch.randn(6, 5, 2)
    sizes = torch.tensor([5, 3, 4, 2, 5, 1])
    mask = torch.arange(5)[None] >= sizes[:, None]
    x = x.masked_fill(mask.unsqueeze(-1), 0.0)
    losses = []
    for step in range(5):
        loss, kl, c_mean = model(x, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return {"losses": losses, "kl": kl.detach(), "c_mean": c_mean.detach(), "grad": model.post.weight.grad}


def test_neural_statistician():
    ours, _ = run_both(neural_statistician, rtol=2e-4, atol=1e-5)
    assert (ours["kl"] >= 0).all()
    assert ours["c_mean"].shape == (6, 3)


def hopfield_fixed_point_jacobian(m):
    """The modern Hopfield update f(xi) = X softmax(beta X^T xi) as a function for torch.func: its Jacobian by
    ``jacrev`` and ``jacfwd`` equals beta X (diag(p) - p p^T) X^T, the Hessian of the energy by ``hessian`` is
    I - that Jacobian, and ``vmap`` retrieves a batch of queries."""
    torch = m.torch
    torch.manual_seed(15)
    X = torch.randn(5, 7, dtype=torch.float64)
    beta = 1.5

    def update(xi):
        return X @ torch.softmax(beta * X.T @ xi, dim=0)

    def energy(xi):
        return -torch.logsumexp(beta * X.T @ xi, dim=0) / beta + 0.5 * xi @ xi

    xi = torch.randn(5, dtype=torch.float64)
    return {"jacrev": torch.func.jacrev(update)(xi), "jacfwd": torch.func.jacfwd(update)(xi),
            "hessian": torch.func.hessian(energy)(xi), "grad": torch.func.grad(energy)(xi),
            "batch": torch.func.vmap(update)(torch.randn(4, 5, dtype=torch.float64)), "X": X, "xi": xi}


def test_hopfield_fixed_point_jacobian():
    ours, _ = run_both(hopfield_fixed_point_jacobian, rtol=1e-10, atol=1e-12)
    X, xi, beta = ours["X"], ours["xi"], 1.5
    z = beta * X.T @ xi
    p = np.exp(z - z.max())
    p /= p.sum()
    J = beta * X @ (np.diag(p) - np.outer(p, p)) @ X.T
    np.testing.assert_allclose(ours["jacrev"], J, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["jacfwd"], J, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["hessian"], np.eye(5) - J, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours["grad"], xi - X @ p, rtol=1e-10, atol=1e-12)
