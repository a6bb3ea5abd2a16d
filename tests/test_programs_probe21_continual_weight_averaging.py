# ruff: noqa: B007, E731, F841  (the programs are kept as their authors wrote them)
"""Continual, federated and private learning programs, run as tests/probe21_continual_common.py says. Weight
averaging: uniform and greedy soups through ``torch.save``/``torch.load``, task arithmetic and TIES merging, linear
interpolation by ``parameters_to_vector`` / ``vector_to_parameters`` (the parameters left as views of the vector),
Fisher merging, ``AveragedModel`` with a custom ``avg_fn``, ``get_ema_multi_avg_fn`` and ``use_buffers`` (the int64
counter truncated each update), ``SWALR`` with per-group cosine annealing and ``update_bn``."""

import copy

import numpy as np
import pytest

from .probe21_continual_common import FED_WEIGHTS, client_data, fed_model, finetune, two_tasks
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Weight averaging: uniform and greedy soups, task arithmetic and TIES merging of fine-tuned state dicts,
# linear interpolation by parameters_to_vector / vector_to_parameters, AveragedModel over BatchNorm buffers
# ----------------------------------------------------------------------------------------------


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
