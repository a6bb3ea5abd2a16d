# ruff: noqa: B007, F841, UP032  (the programs are kept as their authors wrote them)
"""Continual, federated and private learning programs, run as tests/probe21_continual_common.py says. Continual
learning by regularisation: Elastic Weight Consolidation (a diagonal Fisher from squared per-batch gradients,
``p.grad.detach().clone() ** 2``, the quadratic penalty over two tasks, online EWC's decayed Fisher); Synaptic
Intelligence (the path integral of ``-grad * delta`` kept in registered buffers, their state_dict order); Learning
without Forgetting (a frozen ``copy.deepcopy`` teacher, ``F.kl_div(log_target=True)`` at a temperature, a multi-head
``nn.ModuleDict``, per-group learning rates); the Fisher by ``is_grads_batched``, by ``jacrev`` and with sampled
labels, and a hypernetwork generating weights for ``functional_call``."""

import copy
import math

import numpy as np
import pytest

from .probe21_continual_common import MLP3_WEIGHTS, MLP_WEIGHTS, finetune, mlp, two_tasks
from .pytorch_programs import load, run_both, weights_of

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
