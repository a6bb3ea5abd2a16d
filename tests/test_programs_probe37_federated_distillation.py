# ruff: noqa: B007, B023, E501, E701, E702, F841  (the programs are kept as their authors would write them)
"""Training with many copies of a model in one process, run on chainrule and (where installed) PyTorch: FedAvg
(deepcopy per client, state_dict averaging weighted by client size, num_batches_tracked kept), a uniform model
soup of fine-tuned ingredients, knowledge distillation (KLDivLoss with log_target=True, F.kl_div both ways, a
temperature), resuming a deep-copied optimizer through its state_dict, an ensemble trained through
torch.func.stack_module_state + vmap(grad) with per-example gradients, a hypernetwork generating a layer's
weights, and hyperparameter learning through unrolled SGD (autograd.grad with create_graph). Without PyTorch each
test checks what the program's method guarantees, by hand."""

import copy

import numpy as np
import pytest

from .probe37_common import F32, F64, arrays, batch, mlp, numpy_mlp_loss
from .pytorch_programs import OURS, run_both


def bn_net(m, seed=0):
    m.torch.manual_seed(seed)
    return m.nn.Sequential(m.nn.Linear(5, 8, bias=False), m.nn.BatchNorm1d(8), m.nn.ReLU(), m.nn.Linear(8, 3))


# ---------------------------------------------------------------- FedAvg (shaoxiongji/federated-learning's shape)
def fedavg(m):
    torch, F = m.torch, m.F
    global_model = bn_net(m)
    x, y = batch(m, 24)
    clients = [(x[i::3], y[i::3]) for i in range(3)]
    log = []
    for rnd in range(2):
        local_weights, sizes = [], []
        for cx, cy in clients:
            local = copy.deepcopy(global_model)
            local.train()
            optimizer = torch.optim.SGD(local.parameters(), lr=0.1, momentum=0.5, weight_decay=1e-4)
            for epoch in range(2):
                optimizer.zero_grad()
                loss = F.cross_entropy(local(cx), cy)
                loss.backward()
                optimizer.step()
            local_weights.append(copy.deepcopy(local.state_dict()))
            sizes.append(len(cx))
        w_avg = copy.deepcopy(local_weights[0])
        for k in w_avg.keys():
            if 'num_batches_tracked' in k:
                continue
            w_avg[k] = torch.stack([w[k].float() * n for w, n in zip(local_weights, sizes)], 0).sum(0) / sum(sizes)
        log.append(str(global_model.load_state_dict(w_avg)))
        global_model.eval()
        log.append(F.cross_entropy(global_model(x), y).item())
    return log, global_model.state_dict(), [w["1.running_mean"] for w in local_weights]


def test_fedavg():
    log, state, client_means = run_both(fedavg, **F32)[0]
    assert log[0] == log[2] == "<All keys matched successfully>" and state["1.num_batches_tracked"] == 4
    np.testing.assert_allclose(state["1.running_mean"], np.mean(client_means, 0), rtol=1e-5, atol=1e-7)  # equal sizes


# ---------------------------------------------------------------- model soups (mlfoundations/model-soups, uniform)
def soup(m):
    torch, F = m.torch, m.F
    x, y = batch(m)
    base = bn_net(m)
    ingredients = []
    for s in range(3):
        model = copy.deepcopy(base)
        torch.manual_seed(10 + s)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2 * (s + 1))
        for epoch in range(3):
            perm = torch.randperm(16)[:8]
            optimizer.zero_grad()
            F.cross_entropy(model(x[perm]), y[perm], label_smoothing=0.05).backward()
            optimizer.step()
        ingredients.append({k: v.clone() for k, v in model.state_dict().items()})
    uniform_soup = {k: sum(sd[k] for sd in ingredients) / len(ingredients) if ingredients[0][k].is_floating_point()
                    else ingredients[0][k] for k in ingredients[0]}
    souped = copy.deepcopy(base)
    souped.load_state_dict(uniform_soup)
    souped.eval()
    return F.cross_entropy(souped(x), y), uniform_soup, ingredients


def test_model_soup():
    loss, uniform, ingredients = run_both(soup, **F32)[0]
    for k in ("0.weight", "1.running_var", "3.bias"):
        np.testing.assert_allclose(uniform[k], np.mean([sd[k] for sd in ingredients], 0), rtol=1e-6)
    assert uniform["1.num_batches_tracked"] == 3 and np.isfinite(loss)


# ---------------------------------------------------------------- knowledge distillation (Hinton et al.)
def distillation(m):
    torch, nn, F = m.torch, m.nn, m.F
    x, y = batch(m)
    teacher = mlp(m, 3).eval()
    student = mlp(m, 4)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.1)
    T = 4.0
    kl = nn.KLDivLoss(reduction="batchmean", log_target=True)
    log = []
    for i in range(3):
        with torch.no_grad():
            teacher_logits = teacher(x)
        student_logits = student(x)
        soft = kl(F.log_softmax(student_logits / T, dim=-1), F.log_softmax(teacher_logits / T, dim=-1)) * T * T
        soft_probs = F.kl_div(F.log_softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1), reduction="sum") / x.shape[0]
        per_row = F.kl_div(F.log_softmax(student_logits, 1), F.log_softmax(teacher_logits, 1), reduction="none",
                           log_target=True).sum(1).mean()
        hard = F.cross_entropy(student_logits, y)
        loss = 0.7 * soft + 0.3 * hard + 0.1 * per_row
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        log.append((loss.item(), soft.item(), soft_probs.item(), hard.item()))
    return log, [p.detach() for p in student.parameters()]


def test_distillation():
    log, params = run_both(distillation, **F32)[0]
    x, y = batch(OURS)
    x = x.numpy().astype(np.float64)

    def log_softmax(z):
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))

    def logits(w):
        return np.tanh(x @ w["0.weight"].T + w["0.bias"]) @ w["2.weight"].T + w["2.bias"]

    s, t = log_softmax(logits(arrays(mlp(OURS, 4))) / 4), log_softmax(logits(arrays(mlp(OURS, 3))) / 4)
    soft = (np.exp(t) * (t - s)).sum() / 16 * 16  # KL(teacher || student) per row, times T^2
    assert log[0][1] == pytest.approx(soft, rel=1e-5) and log[0][2] * 16 == pytest.approx(log[0][1], rel=1e-5)
    assert log[0][3] == pytest.approx(numpy_mlp_loss(arrays(mlp(OURS, 4)), x, y.numpy()), rel=1e-5)


# ---------------------------------------------------------------- resuming a copied optimizer
def resumed_optimizer(m):
    torch, F = m.torch, m.F
    model = bn_net(m)
    x, y = batch(m)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, amsgrad=True)
    for i in range(2):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    twin = copy.deepcopy(model)
    twin_optimizer = torch.optim.Adam(twin.parameters(), lr=1e-2, amsgrad=True)
    twin_optimizer.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    copied = copy.deepcopy(optimizer)
    shares_params = copied.param_groups[0]["params"][0] is model[0].weight
    for net, opt in ((model, optimizer), (twin, twin_optimizer)):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    sd = twin_optimizer.state_dict()
    return (shares_params, [p.detach() for p in model.parameters()], [p.detach() for p in twin.parameters()],
            sd["state"][0]["step"], sorted(sd["state"][0]), sd["param_groups"])


def test_resumed_optimizer():
    shares, params, twin_params, step, keys, groups = run_both(resumed_optimizer, **F32)[0]
    assert not shares and step == 3.0 and keys == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"]
    for p, q in zip(params, twin_params):
        np.testing.assert_array_equal(p, q)  # the resumed copy steps exactly as the original
    assert groups[0]["amsgrad"] and groups[0]["params"] == [0, 1, 2, 3, 4]


# ---------------------------------------------------------------- ensembles with torch.func (the model-ensembling tutorial)
def func_ensemble(m):
    torch, nn, F = m.torch, m.nn, m.F
    x, y = batch(m)
    models = []
    for i in range(3):
        torch.manual_seed(i)
        models.append(nn.Sequential(nn.Linear(5, 6), nn.ReLU(), nn.Linear(6, 3)).double())
    params, buffers = torch.func.stack_module_state(models)
    base_model = copy.deepcopy(models[0]).to("meta")
    x = x.double()

    def compute_loss(p, b, xb, yb):
        return F.cross_entropy(torch.func.functional_call(base_model, (p, b), (xb,)), yb)

    grads = torch.vmap(torch.func.grad(compute_loss), in_dims=(0, 0, None, None))(params, buffers, x, y)
    predictions = torch.vmap(lambda p, b: torch.func.functional_call(base_model, (p, b), (x,)))(params, buffers)
    first = {k: v[0] for k, v in params.items()}
    per_example = torch.vmap(torch.func.grad(lambda p, xb, yb: compute_loss(p, {}, xb[None], yb[None])),
                             in_dims=(None, 0, 0))(first, x, y)
    reference = torch.autograd.grad(F.cross_entropy(models[0](x), y), list(models[0].parameters()))
    return dict(grads), predictions, {k: v.mean(0) for k, v in per_example.items()}, reference, params["0.weight"].requires_grad


def test_func_ensemble():
    grads, predictions, per_example_mean, reference, requires = run_both(func_ensemble, **F64)[0]
    assert requires and predictions.shape == (3, 16, 3)
    for (k, g), r in zip(sorted(per_example_mean.items(), key=lambda kv: ["0.weight", "0.bias", "2.weight", "2.bias"].index(kv[0])), reference):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12)  # per-example gradients average to the batch's
        np.testing.assert_allclose(grads[k][0], r, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- a hypernetwork (Ha et al.; a task embedding)
def hypernetwork(m):
    torch, nn, F = m.torch, m.nn, m.F
    torch.manual_seed(0)

    class HyperNet(nn.Module):
        def __init__(self, z_dim=4, in_f=5, out_f=3):
            super().__init__()
            self.in_f, self.out_f = in_f, out_f
            self.emb = nn.Embedding(2, z_dim)
            self.w_gen = nn.Linear(z_dim, in_f * out_f)
            self.b_gen = nn.Linear(z_dim, out_f)

        def forward(self, x, task):
            z = self.emb(torch.tensor([task]))
            w = self.w_gen(z).view(self.out_f, self.in_f)
            b = self.b_gen(z).view(-1)
            return F.linear(x, w, b)

    hyper = HyperNet()
    x, y = batch(m)
    optimizer = torch.optim.Adam(hyper.parameters(), lr=1e-2)
    losses = []
    for i in range(4):
        optimizer.zero_grad()
        loss = F.cross_entropy(hyper(x, i % 2), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, [p.detach() for p in hyper.parameters()]


def test_hypernetwork():
    losses, params = run_both(hypernetwork, **F32)[0]
    assert len(params) == 5 and params[1].shape == (15, 4) and losses[2] < losses[0]


# ---------------------------------------------------------------- learning the learning rate and weight decay
def unrolled_hyperparameters(m):
    torch, F = m.torch, m.F
    x, y = batch(m)
    x = x.double()
    xv, yv = x.flip(0), y.flip(0)
    log_lr = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    log_wd = torch.tensor(-3.0, dtype=torch.float64, requires_grad=True)
    hyper_optimizer = torch.optim.Adam([log_lr, log_wd], lr=0.05)
    log = []
    for outer in range(3):
        torch.manual_seed(outer)
        w = (0.1 * torch.randn(5, 3, dtype=torch.float64)).requires_grad_()
        b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        params = [w, b]
        for inner in range(3):
            loss = F.cross_entropy(x @ params[0] + params[1], y) + log_wd.exp() * params[0].pow(2).sum()
            grads = torch.autograd.grad(loss, params, create_graph=True)
            params = [p - log_lr.exp() * g for p, g in zip(params, grads)]
        val = F.cross_entropy(xv @ params[0] + params[1], yv)
        hyper_optimizer.zero_grad()
        val.backward()
        log.append((val.item(), log_lr.grad.item(), log_wd.grad.item()))
        hyper_optimizer.step()
    return log, log_lr, log_wd


def test_unrolled_hyperparameters():
    log, log_lr, log_wd = run_both(unrolled_hyperparameters, **F64)[0]
    assert log_lr == pytest.approx(-1.0 - 0.05 * 3 * np.sign(log[0][1]), abs=0.02)
    # the hypergradient of the learning rate, by a central difference of the unrolled run in NumPy
    x, y = batch(OURS)
    x, y = x.numpy().astype(np.float64), y.numpy()
    OURS.torch.manual_seed(0)
    w0 = (0.1 * OURS.torch.randn(5, 3, dtype=OURS.torch.float64)).numpy()

    def validation(lr, wd):
        w, b = w0.copy(), np.zeros(3)
        for _ in range(3):
            z = x @ w + b
            p = np.exp(z - z.max(1, keepdims=True)); p /= p.sum(1, keepdims=True)
            g = (p - np.eye(3)[y]) / 16
            w, b = w - lr * (x.T @ g + 2 * wd * w), b - lr * g.sum(0)
        z = x[::-1] @ w + b
        return -(z[np.arange(16), y[::-1]] - np.log(np.exp(z).sum(1))).mean()

    lr, wd, h = np.exp(-1.0), np.exp(-3.0), 1e-6
    assert log[0][0] == pytest.approx(validation(lr, wd), rel=1e-10)
    d_log_lr = (validation(np.exp(-1.0 + h), wd) - validation(np.exp(-1.0 - h), wd)) / (2 * h)
    assert log[0][1] == pytest.approx(d_log_lr, rel=1e-6)
