# ruff: noqa: B007, B008, B023, E741, E731, F841, UP004, UP008, UP031, UP032  (the programs are kept as their authors wrote them)
"""Continual, federated and private learning programs (see tests/pytorch_programs.py), each run on chainrule
and on PyTorch from the same weights and data, and checked by hand where PyTorch is missing.

Continual learning: Elastic Weight Consolidation (a diagonal Fisher from squared per-batch gradients,
``p.grad.detach().clone() ** 2``, the quadratic penalty over two tasks, online EWC's decayed Fisher);
Synaptic Intelligence (the path integral of ``-grad * delta`` kept in registered buffers, their state_dict
order); Learning without Forgetting (a frozen ``copy.deepcopy`` teacher, ``F.kl_div(log_target=True)`` at a
temperature, a multi-head ``nn.ModuleDict``, per-group learning rates); experience replay with a reservoir
buffer drawn by ``torch.randint(generator=...)``; A-GEM and GEM (flattened gradients by
``torch.cat([g.view(-1)...])``, the projection, the dual QP, written back by ``p.grad.copy_``);
class-incremental learning (Avalanche's grown head with an int8 ``active_units`` buffer re-registered and
``masked_fill``, the optimizer's state reset to ``defaultdict(dict)``, iCaRL herding and nearest-mean-of-
exemplars by ``cdist``, weight aligning, a BiC layer); PackNet (kthvalue pruning, ``p.grad.data[frozen] = 0``)
and HAT (gates, gradient compensation in place, ``p.data =`` reassigned); a hypernetwork generating weights
for ``functional_call``; the Fisher by ``is_grads_batched``, by ``jacrev`` and with sampled labels.

Federated learning: FedAvg (deepcopy of the global model, local SGD with per-client optimizer state kept by
``copy.deepcopy(optimizer.state_dict())``, ``random_split`` shards, averaged state dicts whose int64
``num_batches_tracked`` becomes float by ``torch.div`` and truncates on ``load_state_dict``, the in-place
float-into-int64 refusal); FedProx, SCAFFOLD, FedAdam and FedAvgM servers stepping on a pseudo-gradient in
``p.grad`` over a model with tied weights; state_dict aliasing; what ``copy.deepcopy`` carries (bound-method
and closure hooks, optimizer state, views); top-k with error feedback, QSGD and signSGD compression; secure
aggregation with pairwise masks in the field of 2^31 - 1; Byzantine-robust rules (median, trimmed mean, Krum,
Weiszfeld, FLTrust, centered clipping); Flower's NumPy client (FedAvg in NumPy, ``OrderedDict(zip(...))`` loaded
without ``_metadata``, FedBN).

Private learning: DP-SGD with per-sample gradients three ways (Opacus-style hooks with ``p.grad_sample`` and
the unfold conv sampler, ``vmap(grad)`` over ``functional_call``, a loop with ``clip_grad_norm_``), Poisson
sampling and noise from seeded Generators; Opacus' Embedding / LayerNorm / Linear samplers on a text model and
its convolution sampler (``as_strided`` unfold, ``Tensor.unfold``, the ``einsum("ngrg...->ngr...")`` diagonal).

Weight averaging: uniform and greedy soups through ``torch.save``/``torch.load``, task arithmetic and TIES
merging, linear interpolation by ``parameters_to_vector`` / ``vector_to_parameters`` (the parameters left as
views of the vector), Fisher merging, ``AveragedModel`` with a custom ``avg_fn``, ``get_ema_multi_avg_fn`` and
``use_buffers`` (the int64 counter truncated each update), ``SWALR`` with per-group cosine annealing and
``update_bn``."""

import copy
import math

import numpy as np
import pytest

from .pytorch_programs import OURS, load, run_both, weights_of


def two_tasks(seed=0, n=64, d=6):
    """Two synthetic classification tasks on the same inputs' space with different labelling rules."""
    rng = np.random.default_rng(seed)
    XA = rng.standard_normal((n, d)).astype(np.float32)
    YA = (XA[:, 0] + 0.5 * XA[:, 1] > 0).astype(np.int64)
    XB = rng.standard_normal((n, d)).astype(np.float32) + 0.5
    YB = (XB[:, 2] - XB[:, 3] > 0).astype(np.int64)
    return XA, YA, XB, YB


def mlp(m, d=6, hidden=16, classes=2):
    nn = m.nn
    return nn.Sequential(nn.Linear(d, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, classes))


MLP_WEIGHTS = weights_of(mlp)

# ----------------------------------------------------------------------------------------------
# Elastic Weight Consolidation (Kirkpatrick et al.), offline and online
# ----------------------------------------------------------------------------------------------


def ewc(m, online=False):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    XA, YA, XB, YB = (torch.from_numpy(a) for a in two_tasks())
    model = load(m, mlp(m), MLP_WEIGHTS)

    class EWC:
        def __init__(self, model, batches, gamma=0.9):
            self.model = model
            self.gamma = gamma
            self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
            self._means = {}
            self._precision_matrices = None
            self.consolidate(batches)

        def _diag_fisher(self, batches):
            precision_matrices = {}
            for n, p in copy.deepcopy(self.params).items():
                p.data.zero_()
                precision_matrices[n] = p.data
            self.model.eval()
            for x, y in batches:
                self.model.zero_grad()
                output = self.model(x)
                loss = F.nll_loss(F.log_softmax(output, dim=1), y)
                loss.backward()
                for n, p in self.model.named_parameters():
                    precision_matrices[n].data += p.grad.detach().clone() ** 2 / len(batches)
            return precision_matrices

        def consolidate(self, batches):
            fisher = self._diag_fisher(batches)
            if online and self._precision_matrices is not None:
                fisher = {n: self.gamma * self._precision_matrices[n] + f for n, f in fisher.items()}
            self._precision_matrices = fisher
            for n, p in self.params.items():
                self._means[n] = p.detach().clone()

        def penalty(self, model):
            loss = 0
            for n, p in model.named_parameters():
                _loss = self._precision_matrices[n] * (p - self._means[n]) ** 2
                loss += _loss.sum()
            return loss

    def train(x, y, epochs, penalty=None, importance=100.0):
        optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model.train()
        losses = []
        for epoch in range(epochs):
            for i in range(0, len(x), 16):
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x[i:i + 16]), y[i:i + 16])
                if penalty is not None:
                    loss = loss + importance / 2 * penalty.penalty(model)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
        return losses

    def accuracy(x, y):
        with torch.no_grad():
            return (model(x).argmax(1) == y).float().mean().item()

    losses_a = train(XA, YA, 3)
    batches_a = [(XA[i:i + 16], YA[i:i + 16]) for i in range(0, 64, 16)]
    ewc_state = EWC(model, batches_a)
    fisher_a = {n: f.clone() for n, f in ewc_state._precision_matrices.items()}
    losses_b = train(XB, YB, 3, penalty=ewc_state)
    batches_b = [(XB[i:i + 16], YB[i:i + 16]) for i in range(0, 64, 16)]
    ewc_state.consolidate(batches_b)
    return {"losses_a": losses_a, "losses_b": losses_b, "fisher_a": fisher_a,
            "fisher": ewc_state._precision_matrices, "means": ewc_state._means,
            "penalty_now": ewc_state.penalty(model), "acc": [accuracy(XA, YA), accuracy(XB, YB)],
            "requires_grad": [f.requires_grad for f in fisher_a.values()]}


@pytest.mark.parametrize("online", [False, True])
def test_elastic_weight_consolidation(online):
    ours, _ = run_both(ewc, online=online, rtol=1e-4, atol=1e-6)
    assert ours["penalty_now"] == pytest.approx(0.0, abs=1e-12)  # the means were just consolidated
    assert not any(ours["requires_grad"])
    assert all(np.all(f >= 0) for f in ours["fisher_a"].values())
    # the Fisher of task A by hand: the mean of the squared per-batch gradients of the loaded weights' model
    assert ours["losses_a"][-1] < ours["losses_a"][0]
    if online:  # the decayed Fisher of task A plus task B's (the B Fisher itself is positive)
        for n in ours["fisher"]:
            assert np.all(ours["fisher"][n] >= 0.9 * ours["fisher_a"][n] - 1e-12)


# ----------------------------------------------------------------------------------------------
# Synaptic Intelligence (Zenke et al.): the path integral in registered buffers
# ----------------------------------------------------------------------------------------------


def synaptic_intelligence(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    XA, YA, XB, YB = (torch.from_numpy(a) for a in two_tasks(seed=1))

    class Classifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp(m)
            self.si_c = 0.5
            self.epsilon = 0.1

        def forward(self, x):
            return self.net(x)

        def register_starting_param_values(self):
            for n, p in self.named_parameters():
                if p.requires_grad:
                    n = n.replace(".", "__")
                    self.register_buffer("{}_SI_prev_task".format(n), p.detach().clone())

        def update_omega(self, W, epsilon):
            for n, p in self.named_parameters():
                if p.requires_grad:
                    n = n.replace(".", "__")
                    p_prev = getattr(self, "{}_SI_prev_task".format(n))
                    p_current = p.detach().clone()
                    p_change = p_current - p_prev
                    omega_add = W[n] / (p_change ** 2 + epsilon)
                    try:
                        omega = getattr(self, "{}_SI_omega".format(n))
                    except AttributeError:
                        omega = p.detach().clone().zero_()
                    omega_new = omega + omega_add
                    self.register_buffer("{}_SI_prev_task".format(n), p_current)
                    self.register_buffer("{}_SI_omega".format(n), omega_new)

        def surrogate_loss(self):
            try:
                losses = []
                for n, p in self.named_parameters():
                    if p.requires_grad:
                        n = n.replace(".", "__")
                        prev_values = getattr(self, "{}_SI_prev_task".format(n))
                        omega = getattr(self, "{}_SI_omega".format(n))
                        losses.append((omega * (p - prev_values) ** 2).sum())
                return sum(losses)
            except AttributeError:
                return torch.tensor(0.0)

    model = Classifier()
    model.net.load_state_dict({k: torch.tensor(v) for k, v in MLP_WEIGHTS.items()})
    model.register_starting_param_values()
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    history = []
    for x_all, y_all in [(XA, YA), (XB, YB)]:
        W = {}
        p_old = {}
        for n, p in model.named_parameters():
            if p.requires_grad:
                n = n.replace(".", "__")
                W[n] = p.data.clone().zero_()
                p_old[n] = p.data.clone()
        for epoch in range(2):
            for i in range(0, 64, 16):
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x_all[i:i + 16]), y_all[i:i + 16])
                loss_total = loss + model.si_c * model.surrogate_loss()
                loss_total.backward()
                optimizer.step()
                history.append(loss_total.item())
                for n, p in model.named_parameters():
                    if p.requires_grad:
                        n = n.replace(".", "__")
                        if p.grad is not None:
                            W[n].add_(-p.grad * (p.detach() - p_old[n]))
                        p_old[n] = p.detach().clone()
        model.update_omega(W, model.epsilon)
    buffers = dict(model.named_buffers())
    return {"history": history, "buffer_names": list(buffers), "buffers": buffers,
            "state_keys": list(model.state_dict().keys()), "surrogate": model.surrogate_loss()}


def test_synaptic_intelligence():
    ours, _ = run_both(synaptic_intelligence, rtol=1e-4, atol=1e-6)
    assert ours["surrogate"] == pytest.approx(0.0, abs=1e-12)
    assert ours["buffer_names"][0] == "net__0__weight_SI_prev_task"
    assert len(ours["buffer_names"]) == 12  # prev_task and omega for each of six parameters
    # a module's own buffers come before its children's entries, in their registration order
    assert ours["state_keys"][12:] == ["net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias",
                                       "net.4.weight", "net.4.bias"]
    assert ours["state_keys"][:3] == ["net__0__weight_SI_prev_task", "net__0__bias_SI_prev_task",
                                      "net__2__weight_SI_prev_task"]


# ----------------------------------------------------------------------------------------------
# Learning without Forgetting: a frozen deepcopy teacher, distillation at a temperature
# ----------------------------------------------------------------------------------------------


class_heads = {"task_a": 2, "task_b": 3}


def lwf_model(m):
    nn = m.nn

    class MultiHead(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = nn.Sequential(nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU())
            self.heads = nn.ModuleDict({k: nn.Linear(16, c) for k, c in class_heads.items()})

        def forward(self, x):
            h = self.backbone(x)
            return {k: head(h) for k, head in self.heads.items()}

    return MultiHead()


LWF_WEIGHTS = weights_of(lwf_model)


def lwf(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    XA, YA, XB, _ = (torch.from_numpy(a) for a in two_tasks(seed=2))
    YB = torch.from_numpy((two_tasks(seed=2)[2][:, 4] > 0.5).astype(np.int64) + (two_tasks(seed=2)[2][:, 5] > 1.0))
    model = load(m, lwf_model(m), LWF_WEIGHTS)
    opt = optim.SGD(model.parameters(), lr=0.05)
    for i in range(0, 64, 16):
        opt.zero_grad()
        F.cross_entropy(model(XA[i:i + 16])["task_a"], YA[i:i + 16]).backward()
        opt.step()

    old_model = copy.deepcopy(model)
    old_model.eval()
    for p in old_model.parameters():
        p.requires_grad_(False)
    T = 2.0
    opt = optim.SGD([{"params": model.backbone.parameters(), "lr": 0.01},
                     {"params": model.heads["task_b"].parameters()},
                     {"params": model.heads["task_a"].parameters(), "lr": 0.001}], lr=0.05, momentum=0.9)
    history = []
    for epoch in range(2):
        for i in range(0, 64, 16):
            x, y = XB[i:i + 16], YB[i:i + 16]
            with torch.no_grad():
                old_logits = old_model(x)["task_a"]
            out = model(x)
            loss_new = F.cross_entropy(out["task_b"], y)
            loss_kd = F.kl_div(F.log_softmax(out["task_a"] / T, dim=1), F.log_softmax(old_logits / T, dim=1),
                               reduction="batchmean", log_target=True) * T * T
            loss_hinton = -(F.softmax(old_logits / T, dim=1) * F.log_softmax(out["task_a"] / T, dim=1)).sum(1).mean()
            loss = loss_new + loss_kd
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append([loss_new.item(), loss_kd.item(), loss_hinton.item()])
    model.eval()
    with torch.no_grad():
        drift = (model(XA)["task_a"].softmax(1) - old_model(XA)["task_a"].softmax(1)).abs().max()
    return {"history": history, "drift": drift, "state": model.state_dict(), "old_state": old_model.state_dict(),
            "old_grad": [p.requires_grad for p in old_model.parameters()],
            "new_grad": [p.requires_grad for p in model.parameters()],
            "old_training": old_model.training, "bn_tracked": model.backbone[1].num_batches_tracked}


def test_learning_without_forgetting():
    ours, _ = run_both(lwf, rtol=1e-4, atol=1e-6)
    assert not any(ours["old_grad"]) and all(ours["new_grad"])
    assert ours["bn_tracked"] == 12 and ours["old_state"]["backbone.1.num_batches_tracked"] == 4
    assert ours["history"][0][1] > 0  # the student trains its BatchNorm on batch statistics, the teacher not
    # KL(p||q) = cross-entropy(p, q) - entropy(p): the two distillation losses differ by the teacher's entropy
    assert all(h[2] >= h[1] / 4 - 1e-6 for h in ours["history"])


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
# Federated averaging: deepcopy of the global model, local SGD on client shards, averaged state_dicts
# ----------------------------------------------------------------------------------------------


def fed_model(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 2))


FED_WEIGHTS = weights_of(fed_model)


def client_data():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((90, 6)).astype(np.float32)
    Y = (X[:, 0] - X[:, 1] + 0.3 * X[:, 2] > 0).astype(np.int64)
    return X, Y


def fedavg(m, weighted):
    torch, nn, F, optim, data = m.torch, m.nn, m.F, m.optim, m.data

    def FedAvg(w):
        """shaoxiongji/federated-learning's models/Fed.py, as written."""
        w_avg = copy.deepcopy(w[0])
        for k in w_avg.keys():
            for i in range(1, len(w)):
                w_avg[k] += w[i][k]
            w_avg[k] = torch.div(w_avg[k], len(w))
        return w_avg

    X, Y = client_data()
    dataset = data.TensorDataset(torch.from_numpy(X), torch.from_numpy(Y))
    shards = data.random_split(dataset, [0.5, 0.3, 0.2], generator=torch.Generator().manual_seed(42))
    net_glob = load(m, fed_model(m), FED_WEIGHTS)
    calls = []
    net_glob.register_forward_hook(lambda mod, inp, out: calls.append(out.shape[0]))
    client_opt_states = {}
    history = []
    for rnd in range(3):
        w_locals, sizes, loss_locals = [], [], []
        for cid, shard in enumerate(shards):
            local = copy.deepcopy(net_glob)
            local.train()
            optimizer = optim.SGD(local.parameters(), lr=0.05, momentum=0.5)
            if cid in client_opt_states:
                optimizer.load_state_dict(client_opt_states[cid])
            loader = data.DataLoader(shard, batch_size=10, shuffle=True,
                                     generator=torch.Generator().manual_seed(rnd * 10 + cid))
            batch_loss = []
            for epoch in range(2):
                for images, labels in loader:
                    local.zero_grad()
                    log_probs = local(images)
                    loss = F.cross_entropy(log_probs, labels)
                    loss.backward()
                    optimizer.step()
                    batch_loss.append(loss.item())
            client_opt_states[cid] = copy.deepcopy(optimizer.state_dict())
            w_locals.append(copy.deepcopy(local.state_dict()))
            sizes.append(len(shard))
            loss_locals.append(sum(batch_loss) / len(batch_loss))
        if weighted:
            total = sum(sizes)
            w_glob = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in w_locals[0].items()}
            for w, n in zip(w_locals, sizes):
                for k in w_glob:
                    w_glob[k] += w[k] * (n / total)
        else:
            w_glob = FedAvg(w_locals)
        net_glob.load_state_dict(w_glob)
        history.append(loss_locals)
    net_glob.eval()
    with torch.no_grad():
        acc = (net_glob(torch.from_numpy(X)).argmax(1) == torch.from_numpy(Y)).float().mean()
    return {"history": history, "w_glob": w_glob, "state": net_glob.state_dict(), "acc": acc,
            "keys": list(w_glob), "sizes": sizes, "calls": sum(calls),
            "avg_dtype_is_long": w_glob["1.num_batches_tracked"].dtype == torch.int64,
            "buffer_is_long": net_glob[1].num_batches_tracked.dtype == torch.long,
            "opt_state_keys": sorted(client_opt_states[0]["state"])}


@pytest.mark.parametrize("weighted", [False, True])
def test_fedavg(weighted):
    ours, _ = run_both(fedavg, weighted=weighted, rtol=1e-4, atol=1e-6)
    assert ours["sizes"] == [45, 27, 18]
    assert ours["keys"] == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                            "1.num_batches_tracked", "3.weight", "3.bias"]
    # torch.div of the summed int64 counters is a true division; loading it truncates into the int64 buffer
    assert not ours["avg_dtype_is_long"] and ours["buffer_is_long"]
    batches = [5, 3, 2]  # batches per local epoch of 45, 27 and 18 examples
    sizes = [45, 27, 18]
    g = 0
    for rnd in range(3):  # each client adds 2 epochs of its batches to the counter it started from
        if weighted:
            avg = sum((g + 2 * b) * n / 90 for b, n in zip(batches, sizes))
        else:
            avg = sum(g + 2 * b for b in batches) / 3
        g = int(avg)
    assert ours["w_glob"]["1.num_batches_tracked"] == pytest.approx(avg, rel=1e-6)
    assert ours["state"]["1.num_batches_tracked"] == g
    # the hook's closure list is shared by every deep copy: 3 rounds of 2 epochs over 90 examples, and the eval
    assert ours["calls"] == 3 * 2 * 90 + 90
    assert ours["opt_state_keys"] == [0, 1, 2, 3, 4, 5]


def fedavg_int_buffer_in_place(m):
    """Accumulating a weighted mean into zeros_like(num_batches_tracked) keeps its int64 dtype: PyTorch
    refuses to write the float product into it in place."""
    torch, nn = m.torch, m.nn
    sds = [load(m, fed_model(m), FED_WEIGHTS).state_dict() for _ in range(2)]
    w_avg = {k: torch.zeros_like(v) for k, v in sds[0].items()}
    try:
        for sd in sds:
            for k in w_avg:
                w_avg[k] += sd[k] * 0.5
    except RuntimeError as e:
        return {"refused": "result type Float can't be cast to the desired output type Long" in str(e), "reached": k}
    return {"refused": False, "reached": None}


def test_fedavg_int_buffer_in_place_refused():
    ours, _ = run_both(fedavg_int_buffer_in_place)
    assert ours["reached"] == "1.num_batches_tracked"
    assert ours["refused"]


# ----------------------------------------------------------------------------------------------
# FedProx's proximal term, SCAFFOLD's control variates, and a FedAdam / FedAvgM server optimizer stepping
# on the pseudo-gradient written into p.grad
# ----------------------------------------------------------------------------------------------


def tied_model(m):
    nn = m.nn

    class TiedLM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(10, 8)
            self.proj = nn.Linear(8, 8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.embed.weight

        def forward(self, idx):
            return self.head(self.proj(self.embed(idx)).tanh())

    return TiedLM()


TIED_WEIGHTS = weights_of(tied_model)


def token_data(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 10, (40,))
    return x, (x * 3 + 1) % 10


def fed_server(m, algorithm):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    global_model = load(m, tied_model(m), TIED_WEIGHTS)
    shards = [tuple(torch.from_numpy(a) for a in token_data(s)) for s in range(3)]
    if algorithm == "fedadam":
        server_opt = optim.Adam(global_model.parameters(), lr=0.05, betas=(0.9, 0.99), eps=1e-3)
    else:
        server_opt = optim.SGD(global_model.parameters(), lr=1.0, momentum=0.9, nesterov=True)
    mu, lr, K = 0.1, 0.1, 4
    c_global = [torch.zeros_like(p) for p in global_model.parameters()]
    c_locals = [[torch.zeros_like(p) for p in global_model.parameters()] for _ in shards]
    history, tied = [], []
    for rnd in range(3):
        local_params, deltas_c, prox = [], [], []
        for cid, (x, y) in enumerate(shards):
            local = copy.deepcopy(global_model)
            tied.append(local.head.weight is local.embed.weight)
            global_params = [p.detach().clone() for p in global_model.parameters()]
            opt = optim.SGD(local.parameters(), lr=lr)
            for step in range(K):
                opt.zero_grad()
                loss = F.cross_entropy(local(x[step * 10:(step + 1) * 10]), y[step * 10:(step + 1) * 10])
                proximal_term = 0.0
                for w, w_t in zip(local.parameters(), global_params):
                    proximal_term += torch.square((w - w_t).norm(2))
                loss = loss + (mu / 2) * proximal_term
                loss.backward()
                if algorithm == "scaffold":
                    for p, c, ci in zip(local.parameters(), c_global, c_locals[cid]):
                        p.grad.data.add_(c - ci)
                opt.step()
                prox.append(proximal_term.item())
            if algorithm == "scaffold":
                new_ci = [ci - c + (xg - yl.detach()) / (K * lr)
                          for ci, c, xg, yl in zip(c_locals[cid], c_global, global_params, local.parameters())]
                deltas_c.append([n - o for n, o in zip(new_ci, c_locals[cid])])
                c_locals[cid] = new_ci
            local_params.append([p.detach() for p in local.parameters()])
        avg = [torch.stack(ps).mean(dim=0) for ps in zip(*local_params)]
        if algorithm == "scaffold":
            c_global = [c + torch.stack(d).mean(0) for c, d in zip(c_global, zip(*deltas_c))]
        server_opt.zero_grad()
        for p, a in zip(global_model.parameters(), avg):
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            p.grad.copy_(p.data - a)
        server_opt.step()
        history.append(prox)
    state = server_opt.state_dict()
    return {"history": history, "params": [p.detach() for p in global_model.parameters()],
            "n_params": len(list(global_model.parameters())), "tied": all(tied),
            "state_keys": list(global_model.state_dict()), "opt_state": state["state"],
            "c_global": c_global}


@pytest.mark.parametrize("algorithm", ["fedadam", "fedavgm", "scaffold"])
def test_federated_server_optimizers(algorithm):
    ours, _ = run_both(fed_server, algorithm=algorithm, rtol=1e-4, atol=1e-6)
    assert ours["tied"] and ours["n_params"] == 3  # the tied weight is one parameter, in every deep copy
    assert ours["state_keys"] == ["embed.weight", "proj.weight", "proj.bias", "head.weight"]
    assert all(h[0] == 0 for h in ours["history"])  # the first local step starts at the global weights
    assert sorted(ours["opt_state"]) == [0, 1, 2]


def state_dict_aliasing(m):
    """state_dict() tensors share memory with the parameters: an author's in-place averaging into it
    moves the model, and a deepcopy of it does not."""
    torch, nn = m.torch, m.nn
    model = load(m, fed_model(m), FED_WEIGHTS)
    sd = model.state_dict()
    sd["0.weight"].mul_(0.5)
    sd["1.num_batches_tracked"] += 3
    kept = copy.deepcopy(model.state_dict())
    kept["0.bias"].zero_()
    vars_sd = model.state_dict(keep_vars=True)
    with torch.no_grad():
        model[3].weight.add_(1.0)
    return {"weight": model[0].weight, "tracked": model[1].num_batches_tracked, "bias": model[0].bias,
            "kept_bias": kept["0.bias"], "sd_w3": sd["3.weight"], "keep_vars_is_param":
            vars_sd["0.weight"] is model[0].weight, "sd_requires_grad": sd["0.weight"].requires_grad,
            "vars_requires_grad": vars_sd["0.weight"].requires_grad}


def test_state_dict_aliases_parameters():
    ours, _ = run_both(state_dict_aliasing)
    np.testing.assert_allclose(ours["weight"], 0.5 * FED_WEIGHTS["0.weight"])
    assert ours["tracked"] == 3
    np.testing.assert_allclose(ours["bias"], FED_WEIGHTS["0.bias"])
    np.testing.assert_allclose(ours["sd_w3"], FED_WEIGHTS["3.weight"] + 1.0)
    assert ours["keep_vars_is_param"] and not ours["sd_requires_grad"] and ours["vars_requires_grad"]


# ----------------------------------------------------------------------------------------------
# DP-SGD: per-sample gradients by Opacus-style hooks (grad_sample on each parameter, conv by unfold),
# by vmap(grad) over functional_call, and by a per-sample loop with clip_grad_norm_; Poisson sampling and
# Gaussian noise from a seeded Generator
# ----------------------------------------------------------------------------------------------


def dp_model(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, stride=2), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 3 * 3, 8), nn.ELU(), nn.Linear(8, 3))


def fix_batchnorm(m, module):
    """Opacus' ModuleValidator.fix: BatchNorm mixes samples, so it becomes a GroupNorm."""
    nn = m.nn
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(module, name, nn.GroupNorm(min(32, child.num_features), child.num_features, affine=True))
        else:
            fix_batchnorm(m, child)
    return module


def dp_weights():
    autograd_model = fix_batchnorm(OURS, dp_model(OURS))
    OURS.torch.manual_seed(1)
    for p in autograd_model.parameters():
        p.data.normal_(0, 0.3)
    return {k: v.numpy().copy() for k, v in autograd_model.state_dict().items()}


DP_WEIGHTS = dp_weights()


def dp_images():
    rng = np.random.default_rng(7)
    X = rng.standard_normal((40, 1, 6, 6)).astype(np.float32)
    Y = rng.integers(0, 3, 40)
    return X, Y


class GradSampleModule:
    """Opacus' hooks, cut down: the forward hook keeps the activations, the full backward hook turns the
    backprops into each sample's gradient, kept in p.grad_sample."""

    def __init__(self, m, module):
        self.m, self.module = m, module
        self.handles = []
        for layer in module.modules():
            if isinstance(layer, (m.nn.Linear, m.nn.Conv2d, m.nn.GroupNorm)):
                self.handles.append(layer.register_forward_hook(self.capture_activations))
                self.handles.append(layer.register_full_backward_hook(self.capture_backprops))

    def capture_activations(self, module, forward_input, _forward_output):
        module.activations = forward_input[0].detach()

    def capture_backprops(self, module, _grad_input, grad_output):
        torch, F = self.m.torch, self.m.F
        A, B = module.activations, grad_output[0].detach()
        n = A.shape[0]
        if isinstance(module, self.m.nn.Linear):
            gs = {"weight": torch.einsum("n...i,n...j->nij", B, A), "bias": torch.einsum("n...k->nk", B)}
        elif isinstance(module, self.m.nn.Conv2d):
            A = F.unfold(A, module.kernel_size, dilation=module.dilation, padding=module.padding,
                         stride=module.stride)
            B = B.reshape(n, -1, A.shape[-1])
            grad_sample = torch.einsum("noq,npq->nop", B, A)
            gs = {"weight": grad_sample.view(n, *module.weight.shape), "bias": torch.sum(B, dim=2)}
        else:
            normalized = F.group_norm(A, module.num_groups, eps=module.eps)
            gs = {"weight": torch.einsum("ni...->ni", normalized * B), "bias": torch.einsum("ni...->ni", B)}
        for name, g in gs.items():
            p = getattr(module, name)
            if hasattr(p, "grad_sample"):
                p.grad_sample += g
            else:
                p.grad_sample = g


def dp_sgd(m, method):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    from_numpy = torch.from_numpy
    X, Y = (from_numpy(a) for a in dp_images())
    model = load(m, fix_batchnorm(m, dp_model(m)), DP_WEIGHTS)
    optimizer = optim.SGD(model.parameters(), lr=0.5, momentum=0.5)
    max_grad_norm, noise_multiplier, sample_rate = 1.0, 0.7, 0.25
    generator = torch.Generator().manual_seed(2024)
    sampler_gen = torch.Generator().manual_seed(99)
    params = dict(model.named_parameters())
    if method == "hooks":
        gsm = GradSampleModule(m, model)
    if method == "vmap":
        from_func = torch.func

        def compute_loss(params, buffers, sample, target):
            batch = sample.unsqueeze(0)
            targets = target.unsqueeze(0)
            predictions = from_func.functional_call(model, (params, buffers), (batch,))
            return F.cross_entropy(predictions, targets)

        ft_compute_sample_grad = from_func.vmap(from_func.grad(compute_loss), in_dims=(None, None, 0, 0))
    history, batch_sizes = [], []
    for step in range(4):
        mask = torch.rand(len(X), generator=sampler_gen) < sample_rate
        idx = mask.nonzero(as_tuple=True)[0]
        x, y = X[idx], Y[idx]
        batch_sizes.append(len(idx))
        optimizer.zero_grad()
        if method == "hooks":
            loss = F.cross_entropy(model(x), y, reduction="sum")
            loss.backward()
            grad_samples = {n: p.grad_sample for n, p in params.items()}
        elif method == "vmap":
            detached = {k: v.detach() for k, v in params.items()}
            buffers = {k: v.detach() for k, v in model.named_buffers()}
            grad_samples = ft_compute_sample_grad(detached, buffers, x, y)
        if method == "loop":
            summed = {n: torch.zeros_like(p) for n, p in params.items()}
            norms = []
            for i in range(len(x)):
                optimizer.zero_grad()
                F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]).backward()
                norms.append(nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm))
                for n, p in params.items():
                    summed[n] += p.grad
            per_sample_norms = torch.stack(norms)
        else:
            per_param_norms = [g.reshape(len(g), -1).norm(2, dim=-1) for g in grad_samples.values()]
            per_sample_norms = torch.stack(per_param_norms, dim=1).norm(2, dim=1)
            per_sample_clip_factor = (max_grad_norm / (per_sample_norms + 1e-6)).clamp(max=1.0)
            summed = {n: torch.einsum("i,i...", per_sample_clip_factor, g) for n, g in grad_samples.items()}
        for n, p in params.items():
            noise = torch.normal(mean=0, std=noise_multiplier * max_grad_norm, size=p.shape, generator=generator)
            p.grad = (summed[n] + noise) / (sample_rate * len(X))
            if method == "hooks":
                del p.grad_sample
        optimizer.step()
        history.append(per_sample_norms)
    if method == "hooks":
        for h in gsm.handles:
            h.remove()
    return {"history": history, "params": {n: p.detach() for n, p in params.items()}, "batch_sizes": batch_sizes,
            "leftover": [hasattr(p, "grad_sample") for p in model.parameters()],
            "hooks_left": sum(len(mod._forward_hooks) + len(mod._backward_hooks) for mod in model.modules())}


@pytest.mark.parametrize("method", ["hooks", "vmap", "loop"])
def test_dp_sgd(method):
    ours, _ = run_both(dp_sgd, method=method, rtol=1e-4, atol=1e-5)
    assert not any(ours["leftover"]) and ours["hooks_left"] == 0
    assert ours["batch_sizes"] == dp_sgd(OURS, "vmap")["batch_sizes"]


def test_dp_sgd_methods_agree():
    """Clipping by 1e-6-padded norms (hooks, vmap) or by clip_grad_norm_'s (loop): the same to about 1e-5."""
    hooks, vmapped, looped = (dp_sgd(OURS, method) for method in ["hooks", "vmap", "loop"])
    for a, b in [(hooks, vmapped), (hooks, looped)]:
        for n in a["params"]:
            np.testing.assert_allclose(a["params"][n], b["params"][n], rtol=1e-4, atol=1e-5, err_msg=n)
        for s, t in zip(a["history"], b["history"]):
            np.testing.assert_allclose(s, t, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Weight averaging: uniform and greedy soups, task arithmetic and TIES merging of fine-tuned state dicts,
# linear interpolation by parameters_to_vector / vector_to_parameters, AveragedModel over BatchNorm buffers
# ----------------------------------------------------------------------------------------------


def finetune(m, model, x, y, steps, lr):
    opt = m.optim.SGD(model.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        m.F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def soup_model(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(6, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 3))


SOUP_WEIGHTS = weights_of(soup_model)


def soups(m, float_check):
    import io

    torch, nn, F = m.torch, m.nn, m.F
    XA, YA, XB, YB = (torch.from_numpy(a) for a in two_tasks(seed=6))
    YA = YA + (XA[:, 2] > 1).long()  # three classes: two-class heads' gradient rows tie in magnitude
    base = load(m, soup_model(m), SOUP_WEIGHTS)
    base_sd = {k: v.clone() for k, v in base.state_dict().items()}
    ingredients = []
    for i, lr in enumerate([0.05, 0.1, 0.2]):
        ft = finetune(m, copy.deepcopy(base), XA[i * 8:i * 8 + 40], YA[i * 8:i * 8 + 40], 5, lr)
        buf = io.BytesIO()
        torch.save(ft.state_dict(), buf)
        buf.seek(0)
        ingredients.append(torch.load(buf, weights_only=True))
    num = len(ingredients)
    uniform = {k: sum(sd[k] for sd in ingredients) / num for k in ingredients[0]}

    def evaluate(sd):
        model = soup_model(m)
        model.load_state_dict(sd)
        model.eval()
        with torch.no_grad():
            return (model(XA[40:]).argmax(1) == YA[40:]).float().mean().item()

    scores = [evaluate(sd) for sd in ingredients]
    order = sorted(range(num), key=lambda i: scores[i], reverse=True)
    greedy = [order[0]]
    best = scores[order[0]]
    for i in order[1:]:
        candidate = {k: sum(ingredients[j][k].float() for j in greedy + [i]) / (len(greedy) + 1)
                     for k in ingredients[0]}
        acc = evaluate(candidate)
        if acc >= best:
            greedy.append(i)
            best = acc

    # task arithmetic: the float entries' differences, scaled and added back
    is_float = (lambda t: t.dtype.is_floating_point) if float_check == "dtype" else torch.is_floating_point
    task_vectors = [{k: sd[k] - base_sd[k] for k in base_sd if is_float(base_sd[k])} for sd in ingredients]
    merged = {k: v.clone() for k, v in base_sd.items()}
    for k in merged:
        if torch.is_floating_point(merged[k]):
            merged[k] += 0.4 * sum(tv[k] for tv in task_vectors)

    # TIES: trim each task vector to its top 30% magnitudes, elect a sign, average those that agree
    flat = torch.stack([nn.utils.parameters_to_vector([tv[k] for k in tv]) for tv in task_vectors])
    k_keep = int(flat.shape[1] * 0.3)
    kth, _ = flat.abs().kthvalue(flat.shape[1] - k_keep + 1, dim=1, keepdim=True)
    trimmed = flat * (flat.abs() >= kth)
    elected = torch.sign(trimmed.sum(dim=0))
    agree = torch.where(elected.unsqueeze(0) > 0, trimmed > 0, trimmed < 0)
    ties = (trimmed * agree).sum(0) / agree.sum(0).clamp(min=1)
    ties_model = copy.deepcopy(base)
    float_params = [p for p in ties_model.state_dict(keep_vars=True).values() if is_float(p)]
    base_vec = nn.utils.parameters_to_vector(float_params)
    nn.utils.vector_to_parameters(base_vec + ties, float_params)

    # the loss along the straight line between two fine-tuned models
    model = soup_model(m)
    model.load_state_dict(ingredients[0])
    model.eval()
    v0 = nn.utils.parameters_to_vector(model.parameters())
    model.load_state_dict(ingredients[2])
    v1 = nn.utils.parameters_to_vector(model.parameters()).detach()
    path = []
    for alpha in torch.linspace(0, 1, 5):
        vec = (1 - alpha) * v0.detach() + alpha * v1
        nn.utils.vector_to_parameters(vec, model.parameters())
        with torch.no_grad():
            path.append(F.cross_entropy(model(XA), YA))
    vec.mul_(0.0)  # vector_to_parameters left the parameters as views of vec
    return {"uniform": uniform, "tracked_dtype_float": uniform["1.num_batches_tracked"].dtype == torch.float32,
            "scores": scores, "greedy": greedy, "merged": merged, "ties": ties, "elected": elected,
            "ties_state": ties_model.state_dict(), "path": path,
            "after_zero": [p.detach().abs().sum() for p in model.parameters()],
            "loaded_keys": list(ingredients[0])}


@pytest.mark.parametrize("float_check", ["dtype", "function"])
def test_model_soups_and_merging(float_check):
    ours, _ = run_both(soups, float_check=float_check, rtol=1e-4, atol=1e-6)
    assert ours["tracked_dtype_float"]
    assert ours["uniform"]["1.num_batches_tracked"] == 5
    assert ours["loaded_keys"][6] == "1.num_batches_tracked"
    assert all(s == 0 for s in ours["after_zero"])
    assert ours["merged"]["1.num_batches_tracked"] == 0  # integer entries are left as the base's


def weight_averaging(m, averaging):
    torch, nn, F, optim, data = m.torch, m.nn, m.F, m.optim, m.data
    swa_utils = optim.swa_utils
    X, Y = client_data()
    loader = data.DataLoader(data.TensorDataset(torch.from_numpy(X), torch.from_numpy(Y)), batch_size=30)
    model = load(m, fed_model(m), FED_WEIGHTS)
    optimizer = optim.SGD([{"params": model[0].parameters(), "lr": 0.1},
                           {"params": list(model[1].parameters()) + list(model[3].parameters())}],
                          lr=0.05, momentum=0.9)
    if averaging == "custom_avg_fn":
        ema_avg = lambda averaged_model_parameter, model_parameter, num_averaged: \
            0.8 * averaged_model_parameter + 0.2 * model_parameter
        averaged = swa_utils.AveragedModel(model, avg_fn=ema_avg, use_buffers=True)
    elif averaging == "ema_multi":
        averaged = swa_utils.AveragedModel(model, multi_avg_fn=swa_utils.get_ema_multi_avg_fn(0.7),
                                           use_buffers=True)
    elif averaging == "swa_buffers":
        averaged = swa_utils.AveragedModel(model, use_buffers=True)
    else:
        averaged = swa_utils.AveragedModel(model)
    swa_scheduler = swa_utils.SWALR(optimizer, swa_lr=[0.02, 0.01], anneal_epochs=3, anneal_strategy="cos")
    lrs, tracked = [], []
    for epoch in range(5):
        for x, y in loader:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
        averaged.update_parameters(model)
        swa_scheduler.step()
        lrs.append(swa_scheduler.get_last_lr())
        tracked.append(averaged.module[1].num_batches_tracked.clone())
    before_bn = {k: v.clone() for k, v in averaged.state_dict().items()}
    momentum_before = averaged.module[1].momentum
    swa_utils.update_bn(loader, averaged)
    restored = swa_utils.AveragedModel(fed_model(m))
    restored.load_state_dict(averaged.state_dict())
    averaged.eval()
    with torch.no_grad():
        out = averaged(torch.from_numpy(X[:5]))
    return {"lrs": lrs, "tracked": tracked, "before_bn": before_bn, "after_bn": averaged.state_dict(),
            "keys": list(averaged.state_dict()), "n": restored.n_averaged, "out": out,
            "momentum": [momentum_before, averaged.module[1].momentum],
            "tracked_dtype_long": averaged.module[1].num_batches_tracked.dtype == torch.int64,
            "n_dtype_long": averaged.n_averaged.dtype == torch.long}


@pytest.mark.parametrize("averaging", ["custom_avg_fn", "ema_multi", "swa_buffers", "swa"])
def test_weight_averaging_buffers(averaging):
    ours, _ = run_both(weight_averaging, averaging=averaging, rtol=1e-4, atol=1e-6)
    assert ours["keys"][0] == "n_averaged" and ours["keys"][1] == "module.0.weight"
    assert ours["n"] == 5 and ours["tracked_dtype_long"] and ours["n_dtype_long"]
    assert ours["momentum"] == [0.1, 0.1]
    tracked = [int(t) for t in ours["tracked"]]
    steps = [3 * (e + 1) for e in range(5)]  # the model's counter after each epoch of three batches
    if averaging == "custom_avg_fn":  # 0.8 avg + 0.2 current in float, truncated into the int64 buffer
        expect, a = [], 0
        for i, s in enumerate(steps):
            a = s if i == 0 else int(np.float32(0.8) * np.float32(a) + np.float32(0.2) * np.float32(s))
            expect.append(a)
        assert tracked == expect
    elif averaging == "ema_multi":  # decay 0.7 in float for non-float buffers, truncated
        expect, a = [], 0
        for i, s in enumerate(steps):
            a = s if i == 0 else int(a * 0.7 + s * (1 - 0.7))
            expect.append(a)
        assert tracked == expect
    elif averaging == "swa_buffers":  # the running mean avg + (cur - avg) / (n + 1), truncated
        expect, a = [], 0
        for i, s in enumerate(steps):
            a = s if i == 0 else int(a + (s - a) / (i + 1))
            expect.append(a)
        assert tracked == expect
    else:  # without use_buffers the buffers are copied from the model
        assert tracked == steps
    assert ours["lrs"][-1] == pytest.approx([0.02, 0.01])


# ----------------------------------------------------------------------------------------------
# Secure aggregation: pairwise masks from seeds shared by each pair of clients, in the field of the
# Mersenne prime 2^31 - 1; the masks cancel in the server's sum
# ----------------------------------------------------------------------------------------------

PRIME = 2**31 - 1


def secure_aggregation(m):
    torch = m.torch
    updates = [torch.from_numpy(np.random.default_rng(c).standard_normal(10).astype(np.float32)) for c in range(3)]
    scale = 2**16

    def quantize(update):
        return torch.round(update * scale).long() % PRIME

    def pairwise_mask(i, j, shape):
        g = torch.Generator().manual_seed(1000 * min(i, j) + max(i, j))
        mask = torch.randint(0, PRIME, shape, generator=g)
        return mask if i < j else (PRIME - mask) % PRIME

    masked = []
    for i, u in enumerate(updates):
        y = quantize(u)
        for j in range(len(updates)):
            if j != i:
                y = (y + pairwise_mask(i, j, u.shape)) % PRIME
        masked.append(y)
    total = torch.stack(masked).sum(0) % PRIME
    signed = torch.where(total > PRIME // 2, total - PRIME, total)
    return {"masked": masked, "sum": signed.double() / scale, "mask_01": pairwise_mask(0, 1, (4,))}


# PyTorch 2.13's torch.randint(0, 2**31 - 1, (4,), generator=torch.Generator().manual_seed(1)): its CPU kernel
# (uniform_int_from_to_distribution) draws a 64-bit word for each number once the range is 2^28 or more
TORCH_MASK_01 = [1422616888, 1602909028, 551272839, 445412382]


def test_secure_aggregation_masks_cancel():
    ours = secure_aggregation(OURS)
    updates = [np.random.default_rng(c).standard_normal(10).astype(np.float32) for c in range(3)]
    expected = sum(np.round(u.astype(np.float64) * 2**16) for u in updates) / 2**16
    np.testing.assert_allclose(ours["sum"], expected, atol=1e-12)
    assert all(int(v.min()) >= 0 and int(v.max()) < PRIME for v in ours["masked"])


def test_secure_aggregation_masks_are_pytorchs():
    assert secure_aggregation(OURS)["mask_01"].tolist() == TORCH_MASK_01
    run_both(secure_aggregation, rtol=0, atol=0)


@pytest.mark.parametrize("library", ["autograd", pytest.param("torch", marks=pytest.mark.torch)])
def test_randint_takes_a_64_bit_word_from_a_range_of_2_to_the_28(library):
    T = pytest.importorskip(library)

    def seeded():
        return T.Generator().manual_seed(7)

    assert T.randint(0, 2**28 - 1, (3,), generator=seeded()).tolist() == [59306160, 171107527, 128500261]
    assert T.empty(3, dtype=T.int64).random_(0, 2**28, generator=seeded()).tolist() == [171107524, 27798006,
                                                                                           174903507]
    assert T.randint(-2**30, 2**30, (3,), generator=seeded(), dtype=T.int32).tolist() == [-97327932, 296233462,
                                                                                          980209875]


def test_unbounded_random_takes_its_word_by_dtype(T):
    """random_() with no bound: a 64-bit word for int64 and float64, a 32-bit one for int32 (whose range,
    2^31, is past the 2^28 from which a bounded draw takes 64 bits)."""
    def seeded():
        return T.Generator().manual_seed(7)

    assert T.empty(4, dtype=T.int32).random_(generator=seeded()).tolist() == [327741615, 976413892, 1202242073,
                                                                              1369975286]
    assert T.empty(2, dtype=T.float64).random_(generator=seeded()).tolist() == [2516435200042024.0,
                                                                                2465213813629881.0]


# ----------------------------------------------------------------------------------------------
# Class-incremental learning: Avalanche's IncrementalClassifier (a head grown in place, an int8 buffer of
# active units re-registered, masked logits), the optimizer reset to the grown head, iCaRL's herding and
# nearest-mean-of-exemplars, weight aligning (WA) and a BiC bias layer
# ----------------------------------------------------------------------------------------------


def class_incremental_data():
    rng = np.random.default_rng(8)
    centres = rng.standard_normal((6, 5)).astype(np.float32) * 2
    y = np.repeat(np.arange(6), 12)
    X = centres[y] + 0.6 * rng.standard_normal((72, 5)).astype(np.float32)
    return X, y


def cil_model(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())


CIL_WEIGHTS = weights_of(cil_model)


def class_incremental(m):
    from collections import defaultdict

    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, y = class_incremental_data()
    X, y = torch.from_numpy(X), torch.from_numpy(y)

    class IncrementalClassifier(nn.Module):
        def __init__(self, in_features, initial_out_features=2, masking=True, mask_value=-1000):
            super().__init__()
            self.masking = masking
            self.mask_value = mask_value
            self.classifier = nn.Linear(in_features, initial_out_features)
            au_init = torch.zeros(initial_out_features, dtype=torch.int8)
            self.register_buffer("active_units", au_init)

        @torch.no_grad()
        def adaptation(self, targets):
            in_features = self.classifier.in_features
            old_nclasses = self.classifier.out_features
            curr_classes = torch.unique(targets)
            new_nclasses = max(self.classifier.out_features, int(curr_classes.max()) + 1)
            if self.masking:
                if old_nclasses != new_nclasses:
                    old_act_units = self.active_units
                    self.active_units = torch.zeros(new_nclasses, dtype=torch.int8)
                    self.active_units[: old_act_units.shape[0]] = old_act_units
                self.active_units[curr_classes] = 1
            if old_nclasses == new_nclasses:
                return
            old_w, old_b = self.classifier.weight, self.classifier.bias
            self.classifier = nn.Linear(in_features, new_nclasses)
            self.classifier.weight[:old_nclasses] = old_w
            self.classifier.bias[:old_nclasses] = old_b

        def forward(self, x):
            out = self.classifier(x)
            if self.masking:
                mask = torch.logical_not(self.active_units)
                out = out.masked_fill(mask=mask, value=self.mask_value)
            return out

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = cil_model(m)
            self.head = IncrementalClassifier(8)

        def forward(self, x):
            return self.head(self.features(x))

    torch.manual_seed(3)
    model = Net()
    model.features.load_state_dict({k: torch.tensor(v) for k, v in CIL_WEIGHTS.items()})
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    exemplars_x, exemplars_y = [], []
    history, heads, masked_logits = [], [], []
    old_classes = 0
    for task, classes in enumerate([(0, 1), (2, 3), (4, 5)]):
        sel = (y == classes[0]) | (y == classes[1])
        tx, ty = X[sel], y[sel]
        model.head.adaptation(ty)
        optimizer.state = defaultdict(dict)
        optimizer.param_groups[0]["params"] = list(model.parameters())
        if exemplars_x:
            tx = torch.cat([tx] + exemplars_x)
            ty = torch.cat([ty] + exemplars_y)
        for epoch in range(3):
            perm = torch.randperm(len(tx))
            for i in range(0, len(tx), 8):
                idx = perm[i:i + 8]
                optimizer.zero_grad()
                loss = F.cross_entropy(model(tx[idx]), ty[idx])
                loss.backward()
                optimizer.step()
                history.append(loss.item())
        masked_logits.append(model(X[:2]).detach())
        heads.append((model.head.classifier.out_features, model.head.active_units.clone()))
        new_classes = model.head.classifier.out_features
        if task > 0:  # WA: align the new classes' weight norms to the old ones'
            with torch.no_grad():
                norms = torch.norm(model.head.classifier.weight, p=2, dim=1)
                gamma = norms[:old_classes].mean() / norms[old_classes:new_classes].mean()
                model.head.classifier.weight.data[old_classes:new_classes] *= gamma
        # iCaRL herding: 3 exemplars a class, each the one that brings the running mean closest to the class mean
        model.eval()
        with torch.no_grad():
            for c in classes:
                xc = X[y == c]
                feats = F.normalize(model.features(xc), p=2, dim=1)
                mu = feats.mean(0)
                chosen, running = [], torch.zeros_like(mu)
                for k in range(3):
                    dist = torch.norm(mu - (running + feats) / (k + 1), dim=1)
                    if chosen:
                        dist[torch.tensor(chosen)] = float("inf")
                    i = int(dist.argmin())
                    chosen.append(i)
                    running += feats[i]
                exemplars_x.append(xc[chosen])
                exemplars_y.append(torch.full((3,), c, dtype=torch.long))
        model.train()
        old_classes = new_classes
    model.eval()
    with torch.no_grad():
        ex_x, ex_y = torch.cat(exemplars_x), torch.cat(exemplars_y)
        ex_feats = F.normalize(model.features(ex_x), dim=1)
        class_means = torch.stack([F.normalize(ex_feats[ex_y == c].mean(0), dim=0) for c in range(6)])
        feats = F.normalize(model.features(X), dim=1)
        nme_pred = torch.cdist(feats, class_means).argmin(1)
        logits = model(X)
    # BiC: a two-parameter correction of the last task's logits, learnt on the exemplars
    alpha, beta = nn.Parameter(torch.ones(1)), nn.Parameter(torch.zeros(1))
    bic_opt = optim.SGD([alpha, beta], lr=0.1)
    for _ in range(5):
        bic_opt.zero_grad()
        out = model(ex_x).detach()
        out = torch.cat([out[:, :4], alpha * out[:, 4:] + beta], dim=1)
        F.cross_entropy(out, ex_y).backward()
        bic_opt.step()
    return {"history": history, "heads": heads, "masked_logits": masked_logits, "nme_pred": nme_pred,
            "nme_acc": (nme_pred == y).float().mean(), "logits": logits, "exemplars": ex_x, "bic": [alpha, beta],
            "state_keys": list(model.state_dict()), "active_dtype_int8": model.head.active_units.dtype == torch.int8,
            "opt_params": len(optimizer.param_groups[0]["params"]), "opt_state": len(optimizer.state)}


def test_class_incremental():
    ours, _ = run_both(class_incremental, rtol=1e-4, atol=1e-5)
    assert [h[0] for h in ours["heads"]] == [2, 4, 6]
    assert ours["heads"][1][1].tolist() == [1, 1, 1, 1]
    assert ours["masked_logits"][0].shape == (2, 2)
    assert (ours["masked_logits"][1][:, 2:] > -1000).all()  # the second task's classes are active
    assert ours["active_dtype_int8"] and ours["opt_params"] == 6 and ours["opt_state"] == 6
    assert ours["state_keys"][-3:] == ["head.active_units", "head.classifier.weight", "head.classifier.bias"]
    assert ours["nme_acc"] > 0.5


# ----------------------------------------------------------------------------------------------
# Parameter isolation: PackNet (magnitude pruning by kthvalue, frozen weights' gradients zeroed through a
# boolean index on p.grad, pruned weights re-zeroed after the step) and HAT (sigmoid task gates, the
# embedding gradient compensated in place, gradients masked by the previous tasks' attention, p.data reassigned)
# ----------------------------------------------------------------------------------------------


def packnet(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    XA, YA, XB, YB = (torch.from_numpy(a) for a in two_tasks(seed=9))
    model = load(m, mlp(m), MLP_WEIGHTS)
    prunable = {n: p for n, p in model.named_parameters() if n.endswith("weight")}
    masks = {n: torch.zeros(p.shape, dtype=torch.uint8) for n, p in prunable.items()}  # 0: free, t: task t's

    def train(x, y, task, steps):
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)  # (weight decay would move frozen weights)
        for step in range(steps):
            i = (step * 16) % 64
            opt.zero_grad()
            F.cross_entropy(model(x[i:i + 16]), y[i:i + 16]).backward()
            for n, p in prunable.items():
                frozen = masks[n].ne(0) & masks[n].ne(task)
                p.grad.data[frozen] = 0
            opt.step()

    def prune(task, fraction):
        kept = {}
        for n, p in prunable.items():
            free = masks[n].eq(0)
            weights = p.data[free].abs()
            k = int(round(fraction * weights.numel()))
            cutoff = weights.view(-1).kthvalue(k)[0].item()
            remove = free & (p.data.abs() <= cutoff)
            masks[n][free & ~remove] = task
            p.data[remove] = 0.0
            kept[n] = int((masks[n] == task).sum())
        return kept

    def evaluate(x, y, task):
        backup = {n: p.data.clone() for n, p in prunable.items()}
        with torch.no_grad():
            for n, p in prunable.items():
                p.data[(masks[n] > task) | masks[n].eq(0)] = 0.0
            acc = (model(x).argmax(1) == y).float().mean().item()
            for n, p in prunable.items():
                p.data.copy_(backup[n])
        return acc

    train(XA, YA, 1, 12)
    kept_a = prune(1, 0.6)
    train(XA, YA, 1, 4)  # fine-tune the kept weights (the pruned ones are free: their gradient still flows)
    with torch.no_grad():
        for n, p in prunable.items():
            p.data[masks[n].eq(0)] = 0.0
    snapshot = {n: p.detach().clone() for n, p in prunable.items()}
    train(XB, YB, 2, 12)
    kept_b = prune(2, 0.5)
    unchanged = [bool(torch.equal(p.data[masks[n].eq(1)], snapshot[n][masks[n].eq(1)])) for n, p in prunable.items()]
    return {"kept_a": kept_a, "kept_b": kept_b, "masks": masks, "unchanged": unchanged,
            "acc": [evaluate(XA, YA, 1), evaluate(XB, YB, 2)], "weights": {n: p.detach() for n, p in prunable.items()}}


def test_packnet():
    ours, _ = run_both(packnet, rtol=1e-4, atol=1e-6)
    assert all(ours["unchanged"])  # task 1's weights are frozen through task 2
    sizes = {"0.weight": 96, "2.weight": 256, "4.weight": 32}
    for n, size in sizes.items():
        assert ours["kept_a"][n] == size - int(round(0.6 * size))
    assert all(m.dtype == np.uint8 for m in ours["masks"].values())


def hat(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    XA, YA, XB, YB = (torch.from_numpy(a) for a in two_tasks(seed=10))

    class Net(nn.Module):
        def __init__(self, ntasks=2):
            super().__init__()
            self.fc1 = nn.Linear(6, 16)
            self.fc2 = nn.Linear(16, 16)
            self.efc1 = nn.Embedding(ntasks, 16)
            self.efc2 = nn.Embedding(ntasks, 16)
            self.last = nn.ModuleList([nn.Linear(16, 2) for _ in range(ntasks)])
            self.gate = nn.Sigmoid()

        def mask(self, t, s=1):
            return [self.gate(s * self.efc1(t)), self.gate(s * self.efc2(t))]

        def forward(self, t, x, s=1):
            gfc1, gfc2 = self.mask(t, s=s)
            h = F.relu(self.fc1(x)) * gfc1.expand_as(self.fc1(x))
            h = F.relu(self.fc2(h)) * gfc2.expand_as(h)
            return [head(h) for head in self.last], [gfc1, gfc2]

        def get_view_for(self, n, masks):
            gfc1, gfc2 = masks
            if n == "fc1.weight":
                return gfc1.data.view(-1, 1).expand_as(self.fc1.weight)
            if n == "fc1.bias":
                return gfc1.data.view(-1)
            if n == "fc2.weight":
                post = gfc2.data.view(-1, 1).expand_as(self.fc2.weight)
                pre = gfc1.data.view(1, -1).expand_as(self.fc2.weight)
                return torch.min(post, pre)
            if n == "fc2.bias":
                return gfc2.data.view(-1)
            return None

    torch.manual_seed(5)
    model = Net()
    smax, thres_cosh, thres_emb, lamb, clipgrad = 50.0, 50.0, 6.0, 0.75, 10000.0
    mask_pre, mask_back = None, None
    history = []
    for t, (x, y) in enumerate([(XA, YA), (XB, YB)]):
        task = torch.LongTensor([t])
        optimizer = optim.SGD(model.parameters(), lr=0.05)
        nbatches = 4
        for epoch in range(2):
            for i, b in enumerate(range(0, 64, 16)):
                s = (smax - 1 / smax) * i / nbatches + 1 / smax
                outputs, masks = model.forward(task, x[b:b + 16], s=s)
                output = outputs[t]
                reg, count = 0, 0
                if mask_pre is not None:
                    for m_, mp in zip(masks, mask_pre):
                        aux = 1 - mp
                        reg += (m_ * aux).sum()
                        count += aux.sum()
                else:
                    for m_ in masks:
                        reg += m_.sum()
                        count += np.prod(m_.size()).item()
                reg /= count
                loss = F.cross_entropy(output, y[b:b + 16]) + lamb * reg
                optimizer.zero_grad()
                loss.backward()
                if t > 0:
                    for n, p in model.named_parameters():
                        if n in mask_back:
                            p.grad.data *= mask_back[n]
                for n, p in model.named_parameters():
                    if n.startswith("e"):
                        num = torch.cosh(torch.clamp(s * p.data, -thres_cosh, thres_cosh)) + 1
                        den = torch.cosh(p.data) + 1
                        p.grad.data *= smax / s * num / den
                nn.utils.clip_grad_norm_(model.parameters(), clipgrad)
                optimizer.step()
                for n, p in model.named_parameters():
                    if n.startswith("e"):
                        p.data = torch.clamp(p.data, -thres_emb, thres_emb)
                history.append([loss.item(), reg.item()])
        mask = [m_.detach().clone() for m_ in model.mask(task, s=smax)]
        mask = [(m_ > 0.5).float() for m_ in mask]
        if mask_pre is None:
            mask_pre = mask
        else:
            mask_pre = [torch.max(a, b) for a, b in zip(mask_pre, mask)]
        mask_back = {}
        for n, _ in model.named_parameters():
            vals = model.get_view_for(n, mask_pre)
            if vals is not None:
                mask_back[n] = 1 - vals
    return {"history": history, "mask_pre": mask_pre, "mask_back": mask_back,
            "params": {n: p.detach() for n, p in model.named_parameters()}}


def test_hat():
    ours, _ = run_both(hat, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(ours["params"]["efc1.weight"]) <= 6.0)
    assert set(ours["mask_back"]) == {"fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"}


# ----------------------------------------------------------------------------------------------
# Communication-efficient FL: top-k sparsification with error feedback, QSGD's stochastic quantization from a
# seeded Generator, signSGD with a majority vote
# ----------------------------------------------------------------------------------------------


MLP3_WEIGHTS = weights_of(lambda m: mlp(m, classes=3))


def compressed_fl(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    X, Y = client_data()
    Y = Y + (X[:, 3] > 1)  # three classes: a two-class head's gradient rows tie in magnitude for topk
    model = load(m, mlp(m, classes=3), MLP3_WEIGHTS)  # (no BatchNorm: the bias before one has a zero gradient,
    params = list(model.parameters())  # whose signs would be rounding's)
    shapes = [p.shape for p in params]
    residuals = [torch.zeros(sum(p.numel() for p in params)) for _ in range(3)]
    g = torch.Generator().manual_seed(17)
    history, sent = [], []

    def flat_grad():
        return torch.cat([p.grad.view(-1) for p in params])

    def topk_compress(v, ratio=0.1):
        k = max(1, int(v.numel() * ratio))
        _, idx = v.abs().topk(k)
        sparse = torch.zeros_like(v)
        sparse.scatter_(0, idx, v.gather(0, idx))
        return sparse, idx

    def qsgd(v, s=4):
        norm = v.norm()
        level = v.abs() / norm * s
        lower = level.floor()
        prob = level - lower
        q = lower + (torch.rand(v.shape, generator=g) < prob).float()
        return norm * torch.sign(v) * q / s

    for rnd, scheme in enumerate(["topk", "topk", "qsgd", "qsgd", "sign", "sign"]):
        updates = []
        for c in range(3):
            model.zero_grad()
            x, y = torch.from_numpy(X[c * 30:(c + 1) * 30]), torch.from_numpy(Y[c * 30:(c + 1) * 30])
            F.cross_entropy(model(x), y).backward()
            grad = flat_grad()
            if scheme == "topk":
                corrected = grad + residuals[c]
                sparse, idx = topk_compress(corrected)
                residuals[c] = corrected - sparse
                updates.append(sparse)
                sent.append(idx.sort().values)
            elif scheme == "qsgd":
                updates.append(qsgd(grad))
            else:
                updates.append(torch.sign(grad))
        if scheme == "sign":
            agg = torch.sign(torch.stack(updates).sum(0)) * 0.01
        else:
            agg = torch.stack(updates).mean(0)
        offset = 0
        with torch.no_grad():
            for p, shape in zip(params, shapes):
                n = p.numel()
                p.sub_(0.5 * agg[offset:offset + n].view(shape))
                offset += n
        history.append(agg)
    return {"history": history, "sent": sent, "residuals": residuals,
            "vector": nn.utils.parameters_to_vector(model.parameters())}


def test_compressed_federated_updates():
    ours, _ = run_both(compressed_fl, rtol=1e-4, atol=1e-6)
    assert all(len(s) == 43 for s in ours["sent"])  # 10% of 435 parameters
    assert set(np.unique(ours["history"][4]).tolist()) <= {np.float32(v).item() for v in (-0.01, 0.0, 0.01)}


# ----------------------------------------------------------------------------------------------
# DP on a text classifier: Opacus' grad samplers for Embedding (scatter_add_ over an expanded index),
# LayerNorm and a Linear on 3-D activations, checked against vmap(grad) of functional_call
# ----------------------------------------------------------------------------------------------


def dp_text_model(m):
    nn = m.nn

    class TextClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.embedding = nn.Embedding(20, 6, padding_idx=0)
            self.norm = nn.LayerNorm(6)
            self.proj = nn.Linear(6, 6)
            self.fc = nn.Linear(6, 3)

        def forward(self, tokens):
            h = self.proj(self.norm(self.embedding(tokens))).relu()
            return self.fc(h.mean(dim=1))

    return TextClassifier()


DP_TEXT_WEIGHTS = weights_of(dp_text_model)


def sum_over_all_but_batch_and_last_n(tensor, n_dims):
    if tensor.dim() == n_dims + 1:
        return tensor
    dims = list(range(1, tensor.dim() - n_dims))
    return tensor.sum(dim=dims)


def dp_text(m, method):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(12)
    tokens = torch.from_numpy(rng.integers(0, 20, (10, 7)))
    labels = torch.from_numpy(rng.integers(0, 3, 10))
    model = load(m, dp_text_model(m), DP_TEXT_WEIGHTS)
    if method == "vmap":
        params = {k: v.detach() for k, v in model.named_parameters()}

        def loss_of(p, tok, lab):
            return F.cross_entropy(torch.func.functional_call(model, p, (tok.unsqueeze(0),)), lab.unsqueeze(0))

        return torch.func.vmap(torch.func.grad(loss_of), in_dims=(None, 0, 0))(params, tokens, labels)

    def capture_activations(module, inputs, output):
        module.activations = inputs[0].detach()

    def capture_backprops(module, grad_input, grad_output):
        A, B = module.activations, grad_output[0].detach()
        batch_size = A.shape[0]
        if isinstance(module, nn.Embedding):
            index = A.unsqueeze(-1).expand(*A.shape, module.embedding_dim).reshape(batch_size, -1,
                                                                                    module.embedding_dim)
            grad_sample = torch.zeros(batch_size, *module.weight.shape, dtype=B.dtype)
            grad_sample.scatter_add_(1, index, B.reshape(batch_size, -1, module.embedding_dim))
            module.weight.grad_sample = grad_sample
        elif isinstance(module, nn.LayerNorm):
            module.weight.grad_sample = sum_over_all_but_batch_and_last_n(
                F.layer_norm(A, module.normalized_shape, eps=module.eps) * B, module.weight.dim())
            module.bias.grad_sample = sum_over_all_but_batch_and_last_n(B, module.bias.dim())
        else:
            module.weight.grad_sample = torch.einsum("n...i,n...j->nij", B, A)
            module.bias.grad_sample = torch.einsum("n...k->nk", B)

    for layer in model.children():
        layer.register_forward_hook(capture_activations)
        layer.register_full_backward_hook(capture_backprops)
    F.cross_entropy(model(tokens), labels, reduction="sum").backward()
    return {n: p.grad_sample for n, p in model.named_parameters()}


def test_dp_text_grad_samplers():
    hooks, _ = run_both(dp_text, method="hooks", rtol=1e-4, atol=1e-6)
    vmapped, _ = run_both(dp_text, method="vmap", rtol=1e-4, atol=1e-6)
    # the sampler scatters the padding tokens' backprops into row 0 too; autograd's gradient leaves that row 0
    assert np.all(vmapped["embedding.weight"][:, 0] == 0)
    for grads in (hooks, vmapped):
        grads["embedding.weight"] = grads["embedding.weight"][:, 1:]
    for n in vmapped:
        np.testing.assert_allclose(hooks[n], vmapped[n], rtol=1e-4, atol=1e-6, err_msg=n)


# ----------------------------------------------------------------------------------------------
# Fisher information three ways (is_grads_batched, jacrev over functional_call, the true Fisher with labels
# sampled by Categorical), Fisher-weighted merging, and a hypernetwork for continual learning (task
# embeddings, generated weights split into a functional_call, the output regularizer on old tasks)
# ----------------------------------------------------------------------------------------------


def fisher_and_hypernetwork(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    XA, YA, _, _ = two_tasks(seed=13)
    x = torch.from_numpy(XA[:12])
    y = torch.from_numpy(YA[:12] + (XA[:12, 3] > 0.5))
    model = load(m, mlp(m, classes=3), MLP3_WEIGHTS)
    params = list(model.parameters())
    losses = F.cross_entropy(model(x), y, reduction="none")
    per_sample = torch.autograd.grad(losses, params, grad_outputs=torch.eye(12), is_grads_batched=True)
    empirical = [g.pow(2).mean(0) for g in per_sample]
    detached = {k: v.detach() for k, v in model.named_parameters()}
    J = torch.func.jacrev(lambda p: F.cross_entropy(torch.func.functional_call(model, p, (x,)), y,
                                                    reduction="none"))(detached)
    by_jacobian = {k: (v ** 2).mean(0) for k, v in J.items()}
    torch.manual_seed(4)
    out = model(x)
    sampled = torch.distributions.Categorical(logits=out).sample()
    true_fisher = torch.autograd.grad(F.nll_loss(F.log_softmax(out, 1), sampled), params)

    # Fisher merging of two fine-tuned copies
    copies = [finetune(m, copy.deepcopy(model), x, (y + k) % 3, 3, 0.1) for k in range(2)]
    fishers = []
    for c in copies:
        c.zero_grad()
        F.cross_entropy(c(x), y).backward()
        fishers.append({n: p.grad.detach() ** 2 + 1e-8 for n, p in c.named_parameters()})
    merged = {n: sum(f[n] * dict(c.named_parameters())[n].detach() for f, c in zip(fishers, copies))
              / sum(f[n] for f in fishers) for n in fishers[0]}

    # a hypernetwork: generated weights for the target network, one embedding per task
    torch.manual_seed(2)
    target = mlp(m, classes=3)
    shapes = {k: v.shape for k, v in target.named_parameters()}
    sizes = [math.prod(s) for s in shapes.values()]
    hnet = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Linear(16, sum(sizes)))
    embeddings = nn.ParameterList([nn.Parameter(torch.randn(3)) for _ in range(2)])
    opt = optim.Adam(list(hnet.parameters()) + list(embeddings.parameters()), lr=0.01)
    history, targets_old = [], None
    for task in range(2):
        for step in range(4):
            opt.zero_grad()
            flat = hnet(embeddings[task])
            weights = {k: chunk.view(s) for (k, s), chunk in zip(shapes.items(), torch.split(flat, sizes))}
            loss = F.cross_entropy(torch.func.functional_call(target, weights, (x,)), (y + task) % 3)
            if targets_old is not None:
                loss = loss + 0.1 * (hnet(embeddings[0]) - targets_old).pow(2).sum()
            loss.backward()
            opt.step()
            history.append(loss.item())
        targets_old = hnet(embeddings[0]).detach().clone()
    return {"empirical": empirical, "by_jacobian": by_jacobian, "sampled": sampled, "true_fisher": true_fisher,
            "merged": merged, "history": history, "hnet": [p.detach() for p in hnet.parameters()],
            "emb_grad": embeddings[1].grad, "target_untouched": [p.detach() for p in target.parameters()]}


def test_fisher_and_hypernetwork():
    ours, _ = run_both(fisher_and_hypernetwork, rtol=1e-4, atol=1e-6)
    for e, k in zip(ours["empirical"], ours["by_jacobian"]):
        np.testing.assert_allclose(e, ours["by_jacobian"][k], rtol=1e-5, atol=1e-8)
    assert math.isfinite(ours["history"][-1])


# ----------------------------------------------------------------------------------------------
# What copy.deepcopy carries in federated code: hooks that are bound methods (re-bound to the copy) or closures
# (still the original's), the optimizer with its state (its parameters copies, unless copied with the model in
# one call), gradients, tensors sharing memory
# ----------------------------------------------------------------------------------------------


def deepcopy_semantics(m):
    torch, nn, optim = m.torch, m.nn, m.optim

    class Client(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.calls = 0
            self.register_forward_hook(self._count)
            self.fc.register_forward_pre_hook(lambda mod, inp: setattr(self, "seen", getattr(self, "seen", 0) + 1))

        def _count(self, module, inputs, output):
            self.calls += 1

        def forward(self, x):
            return self.fc(x)

    torch.manual_seed(0)
    original = Client()
    local = copy.deepcopy(original)
    local(torch.ones(1, 2))
    local(torch.ones(1, 2))
    original(torch.ones(1, 2))
    hooks = [original.calls, local.calls, getattr(original, "seen", 0), getattr(local, "seen", 0)]

    model = nn.Linear(2, 1)
    opt = optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    opt_copy = copy.deepcopy(opt)
    opt_copy.zero_grad()
    state = opt_copy.state_dict()
    alone = [opt_copy.param_groups[0]["params"][0] is model.weight, model.weight.grad is not None,
             next(iter(opt_copy.state)) is opt_copy.param_groups[0]["params"][0]]
    model2, opt2 = copy.deepcopy((model, opt))
    model2(torch.ones(1, 2)).sum().backward()
    opt2.step()
    together = [opt2.param_groups[0]["params"][0] is model2.weight, model2.weight.grad.clone()]
    model2.weight.grad.add_(1)
    base = torch.arange(6.0)
    views = copy.deepcopy({"a": base, "b": base[2:4], "c": base.view(2, 3)})
    views["a"][2] = 100
    return {"hooks": hooks, "alone": alone, "exp_avg": state["state"][0]["exp_avg"],
            "step": state["state"][0]["step"], "together": together, "weights": [model.weight, model2.weight],
            "grads": [model.weight.grad, model2.weight.grad], "views": [views["b"], views["c"], base[2:4]]}


def test_deepcopy_semantics():
    ours, _ = run_both(deepcopy_semantics)
    # the bound hook counts on the copy; the closure's self is still the original
    assert ours["hooks"] == [1, 2, 3, 0]
    assert ours["alone"] == [False, True, True]
    assert ours["together"][0]
    assert ours["views"][0].tolist() == [100, 3] and ours["views"][2].tolist() == [2, 3]


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


# ----------------------------------------------------------------------------------------------
# Byzantine-robust aggregation: coordinate-wise median (the lower middle of an even count), trimmed mean,
# Krum / Multi-Krum by cdist, the geometric median by Weiszfeld, FLTrust's cosine trust scores, centered clipping
# ----------------------------------------------------------------------------------------------


def robust_aggregation(m, rule):
    torch, nn, F = m.torch, m.nn, m.F
    X, Y = client_data()
    model = load(m, mlp(m, classes=3), MLP3_WEIGHTS)
    Y = Y + (X[:, 3] > 1)
    n_clients, n_byzantine = 6, 2
    history = []
    for rnd in range(3):
        updates = []
        for c in range(n_clients):
            model.zero_grad()
            x = torch.from_numpy(X[c * 15:(c + 1) * 15])
            y = torch.from_numpy(Y[c * 15:(c + 1) * 15])
            F.cross_entropy(model(x), y).backward()
            g = torch.cat([p.grad.view(-1) for p in model.parameters()])
            if c == 0:  # a sign-flipping attacker
                g = -4 * g
            elif c == 1:  # a large constant
                g = torch.full_like(g, 3.0)
            updates.append(g)
        S = torch.stack(updates)
        if rule == "median":
            agg = torch.median(S, dim=0).values
        elif rule == "trimmed_mean":
            agg = torch.sort(S, dim=0).values[n_byzantine:-n_byzantine].mean(0)
        elif rule in ("krum", "multi_krum"):
            d = torch.cdist(S, S) ** 2
            scores = torch.stack([d[i][torch.arange(n_clients) != i].topk(n_clients - n_byzantine - 2,
                                                                           largest=False).values.sum()
                                  for i in range(n_clients)])
            chosen = scores.topk(1 if rule == "krum" else 3, largest=False).indices
            agg = S[chosen].mean(0)
            history.append(chosen.sort().values)
        elif rule == "geomed":
            z = S.mean(0)
            for _ in range(30):
                w = 1 / torch.clamp(torch.norm(S - z, dim=1), min=1e-6)
                z = (w[:, None] * S).sum(0) / w.sum()
            agg = z
        elif rule == "fltrust":
            model.zero_grad()
            F.cross_entropy(model(torch.from_numpy(X[-10:])), torch.from_numpy(Y[-10:])).backward()
            g0 = torch.cat([p.grad.view(-1) for p in model.parameters()])
            trust = F.relu(F.cosine_similarity(S, g0.unsqueeze(0), dim=1))
            normed = S / S.norm(dim=1, keepdim=True) * g0.norm()
            agg = (trust[:, None] * normed).sum(0) / trust.sum()
            history.append(trust)
        else:  # centered clipping around the previous aggregate
            v = torch.zeros_like(S[0]) if rnd == 0 else agg
            for _ in range(3):
                diff = S - v
                scale = torch.clamp(1.0 / diff.norm(dim=1, keepdim=True), max=1.0)
                v = v + (diff * scale).mean(0)
            agg = v
        with torch.no_grad():
            nn.utils.vector_to_parameters(nn.utils.parameters_to_vector(model.parameters()) - 0.5 * agg,
                                          model.parameters())
        history.append(agg)
    with torch.no_grad():
        loss = F.cross_entropy(model(torch.from_numpy(X)), torch.from_numpy(Y))
    return {"history": history, "loss": loss}


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "krum", "multi_krum", "geomed", "fltrust", "cclip"])
def test_robust_aggregation(rule):
    ours, _ = run_both(robust_aggregation, rule=rule, rtol=1e-4, atol=1e-5)
    if rule in ("krum", "multi_krum"):  # the attackers are never chosen
        assert all(0 not in c and 1 not in c for c in ours["history"][0::2])
    if rule == "fltrust":
        assert ours["history"][0][0] == 0  # the sign-flipped update has no trust


# ----------------------------------------------------------------------------------------------
# Opacus' convolution grad sampler: unfold2d by as_strided over the padded input (groups, dilation, stride),
# Conv1d with padding='same' through F.unfold, Conv3d by Tensor.unfold, permute and index_select of the dilated
# rows; the groups' diagonal by einsum("ngrg...->ngr..."); against vmap(grad) over functional_call
# ----------------------------------------------------------------------------------------------


def unfold2d(m, input, *, kernel_size, padding, stride, dilation):
    F = m.F
    *shape, H, W = input.shape
    if padding == "same":
        total_pad_H = dilation[0] * (kernel_size[0] - 1)
        total_pad_W = dilation[1] * (kernel_size[1] - 1)
        pad_H_left = math.floor(total_pad_H / 2)
        pad_H_right = total_pad_H - pad_H_left
        pad_W_left = math.floor(total_pad_W / 2)
        pad_W_right = total_pad_W - pad_W_left
    else:
        pad_H_left, pad_H_right, pad_W_left, pad_W_right = padding[0], padding[0], padding[1], padding[1]
    H_effective = (H + pad_H_left + pad_H_right - (kernel_size[0] + (kernel_size[0] - 1) * (dilation[0] - 1))) \
        // stride[0] + 1
    W_effective = (W + pad_W_left + pad_W_right - (kernel_size[1] + (kernel_size[1] - 1) * (dilation[1] - 1))) \
        // stride[1] + 1
    input = F.pad(input, (pad_W_left, pad_W_right, pad_H_left, pad_H_right))
    *shape_pad, H_pad, W_pad = input.shape
    strides = list(input.stride())
    strides = strides[:-2] + [W_pad * dilation[0], dilation[1], W_pad * stride[0], stride[1]]
    out = input.as_strided(shape + [kernel_size[0], kernel_size[1], H_effective, W_effective], strides)
    return out.reshape(input.size(0), -1, H_effective * W_effective)


def unfold3d(m, tensor, *, kernel_size, padding, stride, dilation):
    torch, F = m.torch, m.F
    batch_size, channels, _, _, _ = tensor.shape
    tensor = F.pad(tensor, (padding[2], padding[2], padding[1], padding[1], padding[0], padding[0]))
    dilated_kernel_size = tuple(k + (k - 1) * (d - 1) for k, d in zip(kernel_size, dilation))
    tensor = tensor.unfold(dimension=2, size=dilated_kernel_size[0], step=stride[0])
    tensor = tensor.unfold(dimension=3, size=dilated_kernel_size[1], step=stride[1])
    tensor = tensor.unfold(dimension=4, size=dilated_kernel_size[2], step=stride[2])
    if dilation != (1, 1, 1):
        axis_offset = len(tensor.shape) - 3
        for dim in range(3):
            keep = torch.arange(0, dilated_kernel_size[dim], dilation[dim])
            tensor = torch.index_select(tensor, dim=axis_offset + dim, index=keep)
    tensor = tensor.permute(0, 2, 3, 4, 1, 5, 6, 7)
    return tensor.reshape(batch_size, -1, channels * np.prod(kernel_size)).transpose(1, 2)


def conv_layers(m):
    nn = m.nn
    return nn.ModuleDict({
        "conv1d": nn.Conv1d(4, 6, 3, padding="same", dilation=2, groups=2),
        "conv2d": nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2),
        "conv3d": nn.Conv3d(2, 3, 2, stride=(1, 2, 1), padding=(1, 0, 1), dilation=(2, 1, 1)),
    })


CONV_WEIGHTS = weights_of(conv_layers)


def opacus_conv_grad_samples(m, kind, method):
    torch, nn, F = m.torch, m.nn, m.F
    layer = load(m, conv_layers(m), CONV_WEIGHTS)[kind]
    rng = np.random.default_rng(15)
    shape = {"conv1d": (3, 4, 9), "conv2d": (3, 4, 9, 8), "conv3d": (3, 2, 5, 6, 4)}[kind]
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    out_shape = layer(x).shape
    target = torch.from_numpy(rng.standard_normal(tuple(out_shape)).astype(np.float32))
    if method == "vmap":
        params = {k: v.detach() for k, v in layer.named_parameters()}

        def loss_of(p, xi, ti):
            return (torch.func.functional_call(layer, p, (xi.unsqueeze(0),)) * ti.unsqueeze(0)).sum()

        return torch.func.vmap(torch.func.grad(loss_of), in_dims=(None, 0, 0))(params, x, target)
    activations = x
    output = layer(x)
    backprops = torch.autograd.grad((output * target).sum(), output)[0]
    n = activations.shape[0]
    if kind == "conv2d":
        activations = unfold2d(m, activations, kernel_size=layer.kernel_size, padding=layer.padding,
                               stride=layer.stride, dilation=layer.dilation)
    elif kind == "conv1d":
        activations = activations.unsqueeze(-2)
        total_pad = layer.dilation[0] * (layer.kernel_size[0] - 1)
        left_pad = math.floor(total_pad / 2)
        right_pad = total_pad - left_pad
        activations = F.pad(activations, (left_pad, right_pad))
        activations = F.unfold(activations, kernel_size=(1, layer.kernel_size[0]), stride=(1, layer.stride[0]),
                               dilation=(1, layer.dilation[0]))
    else:
        activations = unfold3d(m, activations, kernel_size=layer.kernel_size, padding=layer.padding,
                               stride=layer.stride, dilation=layer.dilation)
    backprops = backprops.reshape(n, -1, activations.shape[-1])
    grad_sample = torch.einsum("noq,npq->nop", backprops, activations)
    grad_sample = grad_sample.view(n, layer.groups, -1, layer.groups, int(layer.in_channels / layer.groups),
                                   np.prod(layer.kernel_size))
    grad_sample = torch.einsum("ngrg...->ngr...", grad_sample).contiguous()
    return {"weight": grad_sample.view([n] + list(layer.weight.shape)), "bias": torch.sum(backprops, dim=2)}


@pytest.mark.parametrize("kind", ["conv1d", "conv2d", "conv3d"])
def test_opacus_conv_grad_sampler(kind):
    hooks, _ = run_both(opacus_conv_grad_samples, kind=kind, method="unfold", rtol=1e-4, atol=1e-6)
    vmapped, _ = run_both(opacus_conv_grad_samples, kind=kind, method="vmap", rtol=1e-4, atol=1e-6)
    for n in ("weight", "bias"):
        np.testing.assert_allclose(hooks[n], vmapped[n], rtol=1e-4, atol=1e-5, err_msg=n)


# ----------------------------------------------------------------------------------------------
# Flower's NumPy client: get_parameters as state_dict arrays (views of the weights), FedAvg aggregated in NumPy
# (the int64 counter comes back float64), set_parameters through OrderedDict(zip(keys, ...)) and torch.tensor;
# FedBN keeps each client's BatchNorm entries local
# ----------------------------------------------------------------------------------------------


def flower_numpy(m, fedbn):
    from collections import OrderedDict
    from functools import reduce

    torch, nn, F, optim, data = m.torch, m.nn, m.F, m.optim, m.data
    X, Y = client_data()
    net = load(m, fed_model(m), FED_WEIGHTS)

    def get_parameters(net):
        return [val.cpu().numpy() for _, val in net.state_dict().items()]

    def set_parameters(net, parameters, skip_bn=False):
        keys = [k for k in net.state_dict().keys()]
        params_dict = [(k, v) for k, v in zip(keys, parameters) if not (skip_bn and k.startswith("1."))]
        state_dict = OrderedDict({k: torch.tensor(v) for k, v in params_dict})
        return net.load_state_dict(state_dict, strict=not skip_bn)

    def aggregate(results):
        num_examples_total = sum(num_examples for (_, num_examples) in results)
        weighted_weights = [[layer * num_examples for layer in weights] for weights, num_examples in results]
        return [reduce(np.add, layer_updates) / num_examples_total for layer_updates in zip(*weighted_weights)]

    clients = [load(m, fed_model(m), FED_WEIGHTS) for _ in range(3)]
    parameters = get_parameters(net)
    live = parameters[0]
    history = []
    for rnd in range(2):
        results = []
        for cid, client in enumerate(clients):
            incompatible = set_parameters(client, parameters, skip_bn=fedbn)
            opt = optim.SGD(client.parameters(), lr=0.1)
            lo, hi = [0, 40, 70, 90][cid], [0, 40, 70, 90][cid + 1]
            loader = data.DataLoader(data.TensorDataset(torch.from_numpy(X[lo:hi]), torch.from_numpy(Y[lo:hi])),
                                     batch_size=10)
            client.train()
            for xb, yb in loader:
                opt.zero_grad()
                F.cross_entropy(client(xb), yb).backward()
                opt.step()
            results.append(([p.copy() for p in get_parameters(client)], hi - lo))
        parameters = aggregate(results)
        history.append([p.dtype.name for p in parameters])
    set_parameters(net, parameters)
    return {"parameters": parameters, "state": net.state_dict(), "dtypes": history,
            "live_view": bool(np.shares_memory(live, net[0].weight.detach().numpy())),
            "missing": sorted(incompatible.missing_keys) if fedbn else None,
            "client_bn": [c[1].running_mean for c in clients]}


@pytest.mark.parametrize("fedbn", [False, True])
def test_flower_numpy_client(fedbn):
    ours, _ = run_both(flower_numpy, fedbn=fedbn, rtol=1e-4, atol=1e-6)
    assert ours["dtypes"][0][6] == "float64" and ours["dtypes"][0][0] == "float32"
    # batches per round: 4, 3 and 2 for 40, 30 and 20 examples; the float64 mean truncates on loading
    expected = (8 * 40 + 6 * 30 + 4 * 20) / 90 if fedbn else (7 * 40 + 6 * 30 + 5 * 20) / 90
    assert ours["parameters"][6] == pytest.approx(expected)
    assert ours["state"]["1.num_batches_tracked"] == 6
    assert ours["live_view"]  # state_dict().numpy() shares the weights' memory
    if fedbn:  # a dict without _metadata: BatchNorm fills in its own num_batches_tracked, so it is not missing
        assert ours["missing"] == ["1.bias", "1.running_mean", "1.running_var", "1.weight"]
