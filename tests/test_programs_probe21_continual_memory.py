# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Continual, federated and private learning programs, run as tests/probe21_continual_common.py says. Continual
learning from a memory: experience replay with a reservoir buffer drawn by ``torch.randint(generator=...)``; A-GEM
and GEM (flattened gradients by ``torch.cat([g.view(-1)...])``, the projection, the dual QP, written back by
``p.grad.copy_``)."""

import numpy as np

from .probe21_continual_common import MLP_WEIGHTS, mlp, two_tasks
from .pytorch_programs import load, run_both

# ----------------------------------------------------------------------------------------------
# Experience replay with reservoir sampling
# ----------------------------------------------------------------------------------------------


def replay(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    XA, YA, XB, YB = two_tasks(seed=3)
    stream_x = torch.from_numpy(np.concatenate([XA, XB]))
    stream_y = torch.from_numpy(np.concatenate([YA, YB]))

    class ReservoirBuffer:
        def __init__(self, buffer_size, input_size, generator):
            self.buffer_size = buffer_size
            self.num_seen_examples = 0
            self.generator = generator
            self.examples = torch.zeros((buffer_size, input_size), dtype=torch.float32)
            self.labels = torch.zeros(buffer_size, dtype=torch.long)
            self.logits = torch.zeros((buffer_size, 2))

        def reservoir(self):
            if self.num_seen_examples < self.buffer_size:
                return self.num_seen_examples
            rand = torch.randint(0, self.num_seen_examples + 1, (1,), generator=self.generator).item()
            if rand < self.buffer_size:
                return rand
            return -1

        def add_data(self, examples, labels, logits):
            for i in range(examples.shape[0]):
                index = self.reservoir()
                self.num_seen_examples += 1
                if index >= 0:
                    self.examples[index] = examples[i].to(self.examples.device)
                    self.labels[index] = labels[i]
                    self.logits[index] = logits[i].detach()

        def get_data(self, size):
            n = min(self.num_seen_examples, self.examples.shape[0])
            choice = torch.randperm(n, generator=self.generator)[:size]
            return self.examples[choice], self.labels[choice], self.logits[choice]

        def is_empty(self):
            return self.num_seen_examples == 0

    g = torch.Generator().manual_seed(1234)
    buffer = ReservoirBuffer(20, 6, g)
    model = load(m, mlp(m), MLP_WEIGHTS)
    opt = optim.SGD(model.parameters(), lr=0.05)
    history = []
    for i in range(0, 128, 8):
        inputs, labels = stream_x[i:i + 8], stream_y[i:i + 8]
        opt.zero_grad()
        outputs = model(inputs)
        loss = F.cross_entropy(outputs, labels)
        if not buffer.is_empty():
            buf_inputs, buf_labels, buf_logits = buffer.get_data(8)
            buf_outputs = model(buf_inputs)
            loss = loss + 0.5 * F.mse_loss(buf_outputs, buf_logits) + F.cross_entropy(buf_outputs, buf_labels)
        loss.backward()
        opt.step()
        buffer.add_data(inputs, labels, outputs.data)
        history.append(loss.item())
    return {"history": history, "examples": buffer.examples, "labels": buffer.labels, "logits": buffer.logits,
            "seen": buffer.num_seen_examples, "next": torch.randint(0, 100, (4,), generator=g)}


def reservoir_by_hand(stream, size, draw):
    """Algorithm R: the i-th item (0-based) replaces slot j = draw(i + 1) when j < size."""
    kept = list(stream[:size])
    for i in range(size, len(stream)):
        j = draw(i + 1)
        if j < size:
            kept[j] = stream[i]
    return kept


def test_experience_replay_reservoir():
    ours, _ = run_both(replay, rtol=1e-4, atol=1e-6)
    assert ours["seen"] == 128
    XA, YA, XB, YB = two_tasks(seed=3)
    stream = np.concatenate([XA, XB])
    # every slot holds some example of the stream, and some of task B displaced task A's
    rows = [int(np.flatnonzero((stream == e).all(1))[0]) for e in ours["examples"]]
    assert any(r >= 64 for r in rows) and len(set(rows)) == 20
    assert ours["labels"].dtype == np.int64


# ----------------------------------------------------------------------------------------------
# A-GEM: project the gradient when it conflicts with the memory's
# ----------------------------------------------------------------------------------------------


def agem(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    XA, YA, XB, YB = (torch.from_numpy(a) for a in two_tasks(seed=4))
    model = load(m, mlp(m), MLP_WEIGHTS)
    opt = optim.SGD(model.parameters(), lr=0.1)
    for i in range(0, 64, 16):
        opt.zero_grad()
        F.cross_entropy(model(XA[i:i + 16]), YA[i:i + 16]).backward()
        opt.step()
    mem_x, mem_y = XA[:24], YA[:24]

    grad_dims = [p.data.numel() for p in model.parameters()]

    def store_grad(params, grads, grad_dims):
        grads.fill_(0.0)
        count = 0
        for param in params():
            if param.grad is not None:
                begin = 0 if count == 0 else sum(grad_dims[:count])
                end = sum(grad_dims[:count + 1])
                grads[begin:end].copy_(param.grad.data.view(-1))
            count += 1

    def overwrite_grad(params, newgrad, grad_dims):
        count = 0
        for param in params():
            if param.grad is not None:
                begin = 0 if count == 0 else sum(grad_dims[:count])
                end = sum(grad_dims[:count + 1])
                this_grad = newgrad[begin:end].contiguous().view(param.grad.data.size())
                param.grad.data.copy_(this_grad)
            count += 1

    def project(gxy, ger):
        corr = torch.dot(gxy, ger) / torch.dot(ger, ger)
        return gxy - corr * ger

    grad_xy = torch.zeros(sum(grad_dims))
    grad_er = torch.zeros(sum(grad_dims))
    dots, projected = [], []
    for i in range(0, 64, 8):
        opt.zero_grad()
        F.cross_entropy(model(XB[i:i + 8]), YB[i:i + 8]).backward()
        store_grad(model.parameters, grad_xy, grad_dims)
        flat = torch.cat([p.grad.view(-1) for p in model.parameters()])
        assert torch.equal(flat, grad_xy)
        opt.zero_grad()
        F.cross_entropy(model(mem_x), mem_y).backward()
        store_grad(model.parameters, grad_er, grad_dims)
        dot_prod = torch.dot(grad_xy, grad_er)
        dots.append(dot_prod.item())
        if dot_prod.item() < 0:
            g_tilde = project(gxy=grad_xy, ger=grad_er)
            overwrite_grad(model.parameters, g_tilde, grad_dims)
            projected.append(torch.dot(g_tilde, grad_er))
        else:
            overwrite_grad(model.parameters, grad_xy, grad_dims)
        opt.step()
    with torch.no_grad():
        mem_loss = F.cross_entropy(model(mem_x), mem_y)
    return {"dots": dots, "projected": projected, "mem_loss": mem_loss,
            "weights": [p.detach() for p in model.parameters()]}


def test_agem_projection():
    ours, _ = run_both(agem, rtol=1e-4, atol=1e-6)
    assert len(ours["projected"]) == sum(d < 0 for d in ours["dots"])
    for p in ours["projected"]:  # the projected gradient is orthogonal to the memory's
        assert abs(float(p)) < 1e-5


# ----------------------------------------------------------------------------------------------
# GEM: the gradient projected onto the cone of the memories' gradients, by the dual QP solved with
# projected gradient steps in torch
# ----------------------------------------------------------------------------------------------


def gem(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    tasks = [two_tasks(seed=14 + s) for s in range(3)]
    model = load(m, mlp(m), MLP_WEIGHTS)
    params = list(model.parameters())
    opt = optim.SGD(params, lr=0.1)
    memories = []

    def flat_grad(x, y):
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        return torch.cat([p.grad.detach().view(-1) for p in params])

    def project2cone2(gradient, memories_np, margin=0.5, steps=200, lr=0.05):
        G = memories_np
        GG = G @ G.t()
        Gg = G @ gradient
        v = torch.zeros(G.shape[0], dtype=G.dtype)
        for _ in range(steps):
            v = (v - lr * (GG @ v + Gg + margin)).clamp(min=0)
        return G.t() @ v + gradient, v

    violations, duals = [], []
    for t, (XA, YA, _, _) in enumerate(tasks):
        x, y = torch.from_numpy(XA), torch.from_numpy(YA if t != 1 else 1 - YA)
        for i in range(0, 64, 16):
            g = flat_grad(x[i:i + 16], y[i:i + 16])
            if memories:
                G = torch.stack([flat_grad(mx, my) for mx, my in memories])
                dots = G @ g
                violations.append((dots < 0).sum().item())
                if (dots < 0).any():
                    g, v = project2cone2(g, G)
                    duals.append(v)
                    violations.append(((G @ g) < -1e-4).sum().item())
            offset = 0
            for p in params:
                n = p.numel()
                p.grad.copy_(g[offset:offset + n].view_as(p))
                offset += n
            opt.step()
        memories.append((x[:10], y[:10]))
    return {"violations": violations, "duals": duals, "weights": [p.detach() for p in params]}


def test_gem():
    ours, _ = run_both(gem, rtol=1e-3, atol=1e-5)
    assert len(ours["duals"]) > 0 and all(np.all(v >= 0) for v in ours["duals"])
