# ruff: noqa: B007, E501  (the programs are kept as their authors wrote them)
"""Privacy programs as their reference PyTorch code writes them, each run on chainrule and on PyTorch from the same
seed (tests/pytorch_programs.py), comparing values and gradients, with invariants and NumPy checks that hold without
PyTorch. Federated learning: FedAvg by ``state_dict`` arithmetic over ``copy.deepcopy`` clients (BatchNorm buffers
and ``num_batches_tracked``), FedProx's proximal term, FedAdam on a pseudo-gradient with
``parameters_to_vector``/``vector_to_parameters``, SCAFFOLD's control variates, ``stack_module_state``, checkpoints
through ``torch.save``/``load(weights_only=True)``, ``load_state_dict(strict=False, assign=True)`` and its errors,
robust aggregation (median, trimmed mean, Krum, geometric median, signSGD, top-k with error feedback), pairwise
secure-aggregation masks from seeded generators (float and modular integer) and the generators' draws; what shares
memory in a round (state_dict, vector_to_parameters, assign=True, .data); a top-k delta as a COO tensor; federated
LoRA adapters."""

import copy
import io

import numpy as np
import pytest

from .probe23_privacy_common import _func
from .pytorch_programs import run_both


def _nn_utils(m):
    return m.nn.utils


# ----------------------------------------------------------------------------------------------
# Federated learning
# ----------------------------------------------------------------------------------------------


def fedavg(m):
    """FedAvg over deep-copied clients of a CNN with BatchNorm: local SGD with momentum, then the weighted average
    of their state_dicts (num_batches_tracked, an integer buffer, by floor division), loaded strictly; a partial
    load with strict=False reports its missing keys."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(0)

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.bn = nn.BatchNorm2d(2)
            self.fc = nn.Linear(2 * 4 * 4, 3)

        def forward(self, x):
            return self.fc(F.relu(self.bn(self.conv(x))).flatten(1))

    global_model = CNN()
    clients = [(torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))) for _ in range(3)]
    sizes = [8, 8, 8]
    for rnd in range(2):
        local_states = []
        for X, y in clients:
            local = copy.deepcopy(global_model)
            local.train()
            opt = optim.SGD(local.parameters(), lr=0.05, momentum=0.9)
            for e in range(2):
                opt.zero_grad()
                F.cross_entropy(local(X), y).backward()
                opt.step()
            local_states.append(copy.deepcopy(local.state_dict()))
        avg = copy.deepcopy(local_states[0])
        for k in avg.keys():
            if avg[k].dtype == torch.long:
                avg[k] = local_states[0][k].clone()
                for s in local_states[1:]:
                    avg[k] += s[k]
                avg[k] = torch.div(avg[k], len(local_states), rounding_mode="floor")
                continue
            avg[k] = avg[k] * sizes[0]
            for i in range(1, len(local_states)):
                avg[k] += local_states[i][k] * sizes[i]
            avg[k] = torch.div(avg[k], sum(sizes))
        global_model.load_state_dict(avg, strict=True)
    result = global_model.load_state_dict({k: v for k, v in avg.items() if "bn" not in k}, strict=False)
    return {"state": dict(global_model.state_dict()), "last_clients": local_states, "missing": list(result.missing_keys),
            "unexpected": list(result.unexpected_keys), "long": global_model.bn.num_batches_tracked.dtype == torch.long}


def test_fedavg_by_state_dict_arithmetic():
    ours, _ = run_both(fedavg, rtol=1e-5, atol=1e-6)
    for k, v in ours["state"].items():
        if k != "bn.num_batches_tracked":
            np.testing.assert_allclose(v, np.mean([s[k] for s in ours["last_clients"]], 0), rtol=1e-5, atol=1e-6)
    assert ours["state"]["bn.num_batches_tracked"] == 4 and ours["long"]
    # (BatchNorm's own loading fills a missing num_batches_tracked with its current count, as PyTorch's)
    assert ours["missing"] == ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"]
    assert ours["unexpected"] == []


def fedprox_fedadam(m):
    """FedProx clients (the proximal term mu/2 ||w - w_global||^2) under a FedAdam server: the pseudo-gradient is
    minus the mean client delta, cut from a flat vector (parameters_to_vector) into each parameter's .grad; then
    vector_to_parameters into a copy."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    nnu = _nn_utils(m)
    torch.manual_seed(1)
    server = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 1))
    server_opt = optim.Adam(server.parameters(), lr=0.05, betas=(0.9, 0.99), eps=1e-3)
    data = [(torch.randn(10, 5), torch.randn(10, 1)) for _ in range(3)]
    mu, history = 0.1, []
    for rnd in range(3):
        gvec = nnu.parameters_to_vector(server.parameters()).detach()
        deltas = []
        for X, y in data:
            client = copy.deepcopy(server)
            global_params = [p.detach().clone() for p in server.parameters()]
            opt = optim.SGD(client.parameters(), lr=0.1)
            for _ in range(3):
                opt.zero_grad()
                loss = F.mse_loss(client(X), y)
                prox = 0.0
                for w, w0 in zip(client.parameters(), global_params):
                    prox = prox + (w - w0).norm(2) ** 2
                loss = loss + mu / 2 * prox
                loss.backward()
                opt.step()
            deltas.append(nnu.parameters_to_vector(client.parameters()).detach() - gvec)
        mean_delta = torch.stack(deltas).mean(0)
        server_opt.zero_grad()
        offset = 0
        for p in server.parameters():
            n = p.numel()
            p.grad = -mean_delta[offset:offset + n].view_as(p).clone()
            offset += n
        server_opt.step()
        history.append(loss.detach())
    vec = nnu.parameters_to_vector(server.parameters())
    other = copy.deepcopy(server)
    nnu.vector_to_parameters(vec * 0.5, other.parameters())
    state = server_opt.state_dict()
    return {"vec": vec, "other": list(other.parameters()), "history": history, "exp_avg": state["state"][0]["exp_avg"],
            "step": state["state"][0]["step"], "vec_requires_grad": vec.requires_grad,
            "other_leaf": [p.is_leaf for p in other.parameters()]}


def test_fedprox_clients_under_a_fedadam_server():
    ours, _ = run_both(fedprox_fedadam, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([p.ravel() for p in ours["other"]]), 0.5 * ours["vec"], rtol=1e-6)
    assert ours["step"] == 3 and ours["vec_requires_grad"] and all(ours["other_leaf"])


def scaffold(m):
    """SCAFFOLD: local SGD corrected by the control variates (p.grad.data.add_(c - c_i)), the variates' update, the
    server's step; then state_dict(keep_vars=True) and load_state_dict(assign=True)."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    torch.manual_seed(5)
    server = nn.Linear(4, 2)
    c_global = [torch.zeros_like(p) for p in server.parameters()]
    data = [(torch.randn(8, 4), torch.randn(8, 2)) for _ in range(2)]
    c_local = [[torch.zeros_like(p) for p in server.parameters()] for _ in data]
    lr, K = 0.1, 3
    for rnd in range(2):
        dys, dcs = [], []
        for ci, (X, y) in enumerate(data):
            client = copy.deepcopy(server)
            opt = optim.SGD(client.parameters(), lr=lr)
            for _ in range(K):
                opt.zero_grad()
                F.mse_loss(client(X), y).backward()
                for p, c, cl in zip(client.parameters(), c_global, c_local[ci]):
                    p.grad.data.add_(c - cl)
                opt.step()
            new_c = [cl - c + (p0.data - p.data) / (K * lr)
                     for p, p0, c, cl in zip(client.parameters(), server.parameters(), c_global, c_local[ci])]
            dys.append([p.data - p0.data for p, p0 in zip(client.parameters(), server.parameters())])
            dcs.append([n - o for n, o in zip(new_c, c_local[ci])])
            c_local[ci] = new_c
        with torch.no_grad():
            for j, p in enumerate(server.parameters()):
                p.add_(torch.stack([d[j] for d in dys]).mean(0))
                c_global[j] += torch.stack([d[j] for d in dcs]).mean(0)
    sd = server.state_dict(keep_vars=True)
    server2 = nn.Linear(4, 2)
    server2.load_state_dict({k: v.detach() * 2 for k, v in sd.items()}, assign=True)
    return {"params": list(server.parameters()), "c": c_global, "c_local": c_local,
            "keep_vars": [v.requires_grad for v in sd.values()], "assigned": list(server2.parameters()),
            "assigned_requires_grad": [p.requires_grad for p in server2.parameters()]}


def test_scaffold_control_variates():
    ours, _ = run_both(scaffold, rtol=1e-5, atol=1e-6)
    for j in range(2):  # the server's variate is the mean of the clients'
        np.testing.assert_allclose(ours["c"][j], (ours["c_local"][0][j] + ours["c_local"][1][j]) / 2, atol=1e-6)
        np.testing.assert_allclose(ours["assigned"][j], 2 * ours["params"][j], rtol=1e-6)
    assert ours["keep_vars"] == [True, True] and ours["assigned_requires_grad"] == [True, True]


def stacked_clients_and_checkpoints(m):
    """Clients stacked by func.stack_module_state and averaged; the global model through torch.save / torch.load
    (weights_only=True) as a message; FedPer's partial load; load_state_dict's size and key errors; functional_call
    with the averaged (params, buffers) and the deprecated stateless.functional_call."""
    torch, nn = m.torch, m.nn
    tf = _func(m)
    torch.manual_seed(3)
    clients = [nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)) for _ in range(3)]
    params, buffers = tf.stack_module_state(clients)
    avg_p = {k: v.mean(0) for k, v in params.items()}
    avg_b = {k: (v.float().mean(0) if v.is_floating_point() else v[0]) for k, v in buffers.items()}
    glob = copy.deepcopy(clients[0])
    glob.load_state_dict({**avg_p, **avg_b})
    buf = io.BytesIO()
    torch.save(glob.state_dict(), buf)
    buf.seek(0)
    sd = torch.load(buf, weights_only=True)
    personal = clients[1]
    result = personal.load_state_dict({k: v for k, v in sd.items() if not k.startswith("2.")}, strict=False)
    x = torch.randn(5, 3)
    out = tf.functional_call(glob, (avg_p, avg_b), (x,))
    bad = copy.deepcopy(sd)
    bad["0.weight"] = torch.zeros(4, 4)
    with pytest.raises(RuntimeError, match="size mismatch for 0.weight"):
        personal.load_state_dict(bad)
    extra = copy.deepcopy(sd)
    extra["extra"] = torch.zeros(1)
    with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "extra"'):
        personal.load_state_dict(extra, strict=True)
    with pytest.warns(FutureWarning, match="stateless.functional_call"):
        out2 = nn.utils.stateless.functional_call(glob, avg_p, (x,))
    return {"sd": dict(sd), "missing": list(result.missing_keys), "out": out, "out2": out2,
            "stacked": {k: v for k, v in params.items()}, "stacked_requires_grad": [v.requires_grad for v in params.values()]}


def test_stacked_clients_and_checkpoints():
    ours, _ = run_both(stacked_clients_and_checkpoints, rtol=1e-5, atol=1e-6)
    assert ours["missing"] == ["2.weight", "2.bias"] and all(ours["stacked_requires_grad"])
    np.testing.assert_allclose(ours["sd"]["0.weight"], ours["stacked"]["0.weight"].mean(0), rtol=1e-6)
    np.testing.assert_allclose(ours["out"], ours["out2"], rtol=1e-6)  # (eval-free: batch statistics both times)


def robust_aggregation(m):
    """Byzantine-robust aggregators over client updates with one outlier: coordinate-wise median, trimmed mean,
    Krum (cdist, topk), Weiszfeld's geometric median, signSGD's majority vote; top-k sparsification with error
    feedback (scatter_), stochastic rounding, norm clipping (DP-FedAvg)."""
    torch = m.torch
    torch.manual_seed(0)
    ups = torch.randn(7, 10)
    ups[0] += 50.0
    med = torch.median(ups, dim=0)
    s, _ = torch.sort(ups, dim=0)
    trimmed = s[1:-1].mean(0)
    d = torch.cdist(ups, ups) ** 2
    scores = torch.stack([torch.topk(d[i], 7 - 1 - 1, largest=False).values.sum() for i in range(7)])
    krum = ups[torch.argmin(scores)]
    z = ups.mean(0)
    for _ in range(10):
        w = 1.0 / torch.clamp(torch.norm(ups - z, dim=1), min=1e-8)
        z = (w[:, None] * ups).sum(0) / w.sum()
    flat = ups[1]
    vals, idx = torch.topk(flat.abs(), 3)
    sparse = torch.zeros_like(flat).scatter_(0, idx, flat[idx])
    g = torch.Generator().manual_seed(1)
    rounded = torch.floor(flat * 4 + torch.rand(flat.shape, generator=g)) / 4
    clipped = ups * torch.clamp(2.0 / ups.norm(dim=1, keepdim=True), max=1.0)
    return {"ups": ups, "median": med.values, "median_at": med.indices, "nanmedian": torch.nanmedian(ups, 0).values,
            "trimmed": trimmed, "scores": scores, "krum": krum, "geomedian": z,
            "sign": torch.sign(torch.sign(ups).sum(0)), "sparse": sparse, "residual": flat - sparse,
            "rounded": rounded, "kth": torch.kthvalue(ups, 3, dim=0).values,
            "quartiles": torch.quantile(ups, torch.tensor([0.25, 0.75]), dim=0), "clipped": clipped}


def test_robust_aggregation():
    ours, _ = run_both(robust_aggregation, rtol=1e-5, atol=1e-6)
    ups = ours["ups"]
    np.testing.assert_allclose(ours["median"], np.median(ups, 0))  # (7 rows: the middle one, as PyTorch's lower median)
    np.testing.assert_array_equal(np.take_along_axis(ups, ours["median_at"][None], 0)[0], ours["median"])
    np.testing.assert_allclose(ours["trimmed"], np.sort(ups, 0)[1:-1].mean(0), rtol=1e-6)
    np.testing.assert_allclose(ours["quartiles"], np.quantile(ups, [0.25, 0.75], axis=0), rtol=1e-5)
    np.testing.assert_allclose(ours["kth"], np.sort(ups, 0)[2])
    assert np.abs(ours["krum"]).max() < 10 and np.abs(ours["geomedian"]).max() < 5  # the outlier left out
    np.testing.assert_allclose(np.linalg.norm(ours["clipped"], axis=1), np.minimum(np.linalg.norm(ups, axis=1), 2.0),
                               rtol=1e-5)
    assert (ours["sparse"] != 0).sum() == 3 and np.allclose(ours["sparse"] + ours["residual"], ups[1])


def secure_aggregation(m):
    """Pairwise masks that cancel in the sum (a generator seeded per pair; mask added by the lower id, subtracted by
    the higher), self masks removed by the server, a modular integer version; generator state round trip."""
    torch = m.torch
    n_clients, dim = 4, 6
    torch.manual_seed(0)
    updates = [torch.randn(dim) for _ in range(n_clients)]
    masked = []
    for i in range(n_clients):
        y = updates[i].clone()
        for j in range(n_clients):
            if i == j:
                continue
            g = torch.Generator().manual_seed(min(i, j) * 1000 + max(i, j))
            mask = torch.randn(dim, generator=g)
            y = y + mask if i < j else y - mask
        g = torch.Generator()
        g.manual_seed(i + 77)
        masked.append(y + torch.rand(dim, generator=g))
    agg = torch.stack(masked).sum(0)
    for i in range(n_clients):
        g = torch.Generator()
        g.manual_seed(i + 77)
        agg = agg - torch.rand(dim, generator=g)
    q = [torch.round(u * 2 ** 10).to(torch.int64) for u in updates]
    g = torch.Generator().manual_seed(5)
    masks = [torch.randint(0, 2 ** 31, (dim,), generator=g, dtype=torch.int64) for _ in range(n_clients - 1)]
    masks.append((-torch.stack(masks).sum(0)) % 2 ** 31)
    qs = torch.stack([(qi + mk) % 2 ** 31 for qi, mk in zip(q, masks)]).sum(0) % 2 ** 31
    qs = torch.where(qs >= 2 ** 30, qs - 2 ** 31, qs)
    g2 = torch.Generator()
    g2.set_state(g.get_state())
    a, b = torch.randn(3, generator=g), torch.randn(3, generator=g2)
    return {"agg": agg, "true": torch.stack(updates).sum(0), "qs": qs, "q_true": torch.stack(q).sum(0), "a": a, "b": b,
            "seed": g.initial_seed(), "perm": torch.randperm(7, generator=g2),
            "multinomial": torch.multinomial(torch.tensor([0.1, 0.5, 0.4]), 5, replacement=True, generator=g2)}


def test_secure_aggregation_masks_cancel():
    ours, _ = run_both(secure_aggregation, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours["agg"], ours["true"], atol=1e-5)
    np.testing.assert_array_equal(ours["qs"], ours["q_true"])
    np.testing.assert_array_equal(ours["a"], ours["b"])
    np.testing.assert_allclose(ours["a"], [0.0570927, -1.1893746, -0.5658849], rtol=1e-6)  # PyTorch's draws
    np.testing.assert_array_equal(ours["perm"], [2, 5, 6, 1, 3, 4, 0])
    np.testing.assert_array_equal(ours["multinomial"], [1, 1, 1, 1, 2])
    assert ours["seed"] == 5


def shared_memory(m):
    """What shares memory in a federated round, as PyTorch: a module's state_dict with its parameters,
    vector_to_parameters's parameters with the vector, load_state_dict(assign=True) with the dict (a plain
    load_state_dict copies), .data assignment; tied weights through deepcopy; an optimizer's deep-copied state
    dict loaded."""
    torch, nn = m.torch, m.nn
    nnu = nn.utils
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    r = {}
    sd = model.state_dict()
    sd["0.weight"].mul_(0)
    r["sd_shares"] = model[0].weight.detach().clone()
    r["sd_rg"] = sd["0.bias"].requires_grad
    vec = nnu.parameters_to_vector(model.parameters())
    vec2 = torch.arange(vec.numel(), dtype=torch.float32)
    nnu.vector_to_parameters(vec2, model.parameters())
    vec2.add_(100)
    r["v2p_shares"] = [p.detach().clone() for p in model.parameters()]
    r["is_leaf"] = [p.is_leaf for p in model.parameters()]
    r["rg"] = [p.requires_grad for p in model.parameters()]
    model2 = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    src = {k: v.clone() * 2 for k, v in model.state_dict().items()}
    model2.load_state_dict(src)
    src["0.bias"].add_(1000)
    r["load_copies"] = model2[0].bias.detach().clone()
    model3 = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    src3 = {k: v.clone() for k, v in model.state_dict().items()}
    model3.load_state_dict(src3, assign=True)
    src3["0.bias"].add_(1000)
    r["assign_shares"] = model3[0].bias.detach().clone()
    r["assign_type"] = type(model3[0].bias).__name__
    # tied weights deepcopy
    emb, head = nn.Embedding(4, 3), nn.Linear(3, 4, bias=False)
    head.weight = emb.weight
    tied = nn.ModuleDict({"emb": emb, "head": head})
    c = copy.deepcopy(tied)
    r["tied_kept"] = c["emb"].weight is c["head"].weight
    sdt = tied.state_dict()
    r["sd_keys"] = list(sdt.keys())
    sdc = copy.deepcopy(sdt)
    sdc["emb.weight"].add_(1)
    r["sdc_shared"] = bool((sdc["emb.weight"] == sdc["head.weight"]).all())
    r["params_count"] = len(list(tied.parameters()))
    r["named"] = [n for n, _ in tied.named_parameters(remove_duplicate=False)]
    # .data assignment in FedAvg
    g = nn.Linear(2, 2)
    newv = torch.ones(2, 2)
    g.weight.data = newv
    newv.add_(1)
    r["data_assign_shares"] = g.weight.detach().clone()
    with torch.no_grad():
        for p, q in zip(model.parameters(), model2.parameters()):
            p.copy_(0.5 * p + 0.5 * q)
    r["avg"] = [p.detach().clone() for p in model.parameters()]
    # optimizer state dict averaging
    opt = m.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 2)).sum().backward()
    opt.step()
    st = opt.state_dict()
    st2 = copy.deepcopy(st)
    st2["state"][0]["exp_avg"].mul_(2)
    r["opt_state_shared"] = opt.state[model[0].weight]["exp_avg"].clone()
    opt.load_state_dict(st2)  # (a change to st2 after this reaches the optimizer in PyTorch 2.13, not in later
    # PyTorch nor here: see tests/test_ported_optim.py's test_load_state_dict_clones_tensor_state)
    r["opt_loaded"] = opt.state[model[0].weight]["exp_avg"].clone()
    return r


def test_what_shares_memory_in_a_federated_round():
    ours, _ = run_both(shared_memory, rtol=1e-5, atol=1e-6)
    assert not ours["sd_shares"].any() and not ours["sd_rg"]
    np.testing.assert_allclose(np.concatenate([p.ravel() for p in ours["v2p_shares"]]), np.arange(13) + 100)
    assert ours["tied_kept"] and ours["sdc_shared"] and ours["params_count"] == 1
    assert ours["named"] == ["emb.weight", "head.weight"] and ours["assign_type"] == "Parameter"
    np.testing.assert_allclose(ours["data_assign_shares"], np.full((2, 2), 2.0))
    np.testing.assert_allclose(ours["opt_loaded"], 2 * ours["opt_state_shared"], rtol=1e-6)


def sparse_deltas(m):
    """A top-k model delta sent as a sparse COO tensor: to_sparse, indices/values, sparse_coo_tensor, coalesce,
    sparse.sum, sparse.mm."""
    torch = m.torch
    torch.manual_seed(1)
    delta = torch.randn(4, 5)
    k = 4
    thresh = delta.abs().flatten().kthvalue(delta.numel() - k + 1).values
    mask = delta.abs() >= thresh
    sp = (delta * mask).to_sparse()
    idx, vals = sp.indices(), sp.values()
    s2 = torch.sparse_coo_tensor(idx, vals, delta.shape)
    s3 = (s2 + s2).coalesce()
    dense = s3.to_dense()
    ssum = torch.sparse.sum(s3, dim=1).to_dense()
    mm = torch.sparse.mm(s2, torch.ones(5, 2))
    return {"idx": idx, "vals": vals, "dense": dense, "ssum": ssum, "mm": mm, "nnz": s3._nnz(), "thresh": thresh}


def test_a_top_k_delta_as_a_sparse_tensor():
    ours, _ = run_both(sparse_deltas, rtol=1e-6, atol=1e-7)
    assert ours["nnz"] == 4 and (ours["dense"] != 0).sum() == 4
    np.testing.assert_allclose(ours["ssum"], ours["dense"].sum(1), rtol=1e-6)


def generator_draws(m):
    """The draws secure aggregation and noise addition take from seeded generators: randint over wide and narrow
    ranges and dtypes, random_, rand/randn in float64 and float16, a negative and a 63-bit seed, the default
    generator, get_state/set_state replay, randperm, normal, bernoulli_ with a tensor of probabilities."""
    torch = m.torch
    g = torch.Generator().manual_seed(2**63 - 1)
    r = {}
    r["a"] = torch.randint(-2**40, 2**40, (3,), generator=g)
    r["b"] = torch.randint(0, 2**62, (3,), generator=g)
    r["c"] = torch.randint(0, 100, (3,), generator=g, dtype=torch.int32)
    r["d"] = torch.empty(3, dtype=torch.int64).random_(generator=g)
    r["e"] = torch.empty(3, dtype=torch.int32).random_(generator=g)
    r["f"] = torch.empty(3).random_(generator=g)
    r["h"] = torch.rand(3, generator=g, dtype=torch.float64)
    r["i"] = torch.randn(5, generator=g, dtype=torch.float16)
    r["j"] = torch.randint(0, 2, (6,), generator=g, dtype=torch.bool)
    r["k"] = torch.randint(0, 256, (4,), generator=g, dtype=torch.uint8)
    gen2 = torch.random.manual_seed(3)
    r["gen_type"] = type(gen2).__name__
    r["l"] = torch.randn(2)
    r["dg"] = torch.default_generator.initial_seed()
    r["m"] = torch.randn(2, generator=torch.default_generator)
    g3 = torch.Generator().manual_seed(-5)
    r["neg"] = torch.randn(2, generator=g3)
    r["neg_seed"] = g3.initial_seed()
    g4 = torch.Generator()
    g4.manual_seed(7)
    st = g4.get_state()
    x1 = torch.randn(3, generator=g4)
    g4.set_state(st)
    x2 = torch.randn(3, generator=g4)
    r["eq"] = bool((x1 == x2).all())
    g5 = torch.Generator().manual_seed(7)
    r["perm64"] = torch.randperm(5, generator=g5, dtype=torch.int32)
    r["normal_scalar"] = torch.normal(2.0, 3.0, size=(3,), generator=g5, dtype=torch.float64)
    r["bern_p"] = torch.empty(5).bernoulli_(torch.full((5,), 0.7), generator=g5)
    return r


def test_generator_draws():
    ours, _ = run_both(generator_draws)
    assert ours["eq"] and ours["gen_type"] == "Generator" and ours["neg_seed"] == 2 ** 64 - 5
    assert ours["i"].dtype == np.float16 and ours["c"].dtype == np.int32 and ours["k"].dtype == np.uint8
    assert sorted(ours["perm64"]) == [0, 1, 2, 3, 4]


def federated_lora(m):
    """Federated LoRA: low-rank adapters registered by parametrize.register_parametrization on frozen Linear weights,
    clients deep-copied and trained with Adam on the adapters only, the adapters averaged and loaded
    with strict=False; then merged by remove_parametrizations(leave_parametrized=True). (On a deep copy the merge
    would change the original too: the copy shares the parametrized class, in PyTorch as here.)"""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    P = nn.utils.parametrize
    torch.manual_seed(0)
    class LoRA(nn.Module):
        def __init__(self, out_f, in_f, r=2, alpha=4.0):
            super().__init__()
            self.A = nn.Parameter(torch.randn(r, in_f) * 0.1)
            self.B = nn.Parameter(torch.zeros(out_f, r))
            self.scale = alpha / r
        def forward(self, W):
            return W + self.scale * self.B @ self.A
    base = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    for lin in (base[0], base[2]):
        P.register_parametrization(lin, "weight", LoRA(*lin.weight.shape))
        lin.parametrizations.weight.original.requires_grad_(False)
    wn = nn.utils.parametrizations.weight_norm(nn.Linear(2, 2))
    keys = list(base.state_dict().keys())
    data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(2)]
    for rnd in range(2):
        states = []
        for X, y in data:
            c = copy.deepcopy(base)
            opt = optim.Adam([p for p in c.parameters() if p.requires_grad], lr=0.05)
            for _ in range(2):
                opt.zero_grad()
                F.cross_entropy(c(X), y).backward()
                opt.step()
            states.append({k: v for k, v in c.state_dict().items() if ".0.A" in k or ".0.B" in k})
        avg = {k: torch.stack([s[k] for s in states]).mean(0) for k in states[0]}
        res = base.load_state_dict(avg, strict=False)
    x = torch.randn(3, 4)
    out = base(x).detach()
    w = base[0].weight.detach()
    is_param = P.is_parametrized(base[0])
    merged = base
    for lin in (merged[0], merged[2]):
        P.remove_parametrizations(lin, "weight", leave_parametrized=True)
    return {"keys": keys, "missing": list(res.missing_keys), "out": out, "merged": merged(x).detach(),
            "merged_keys": list(merged.state_dict().keys()), "wn_keys": list(wn.state_dict().keys()),
            "n_trainable": sum(p.numel() for p in base.parameters() if p.requires_grad),
            "is_param": is_param, "w": w, "cls": type(merged[0]).__name__}


def test_federated_lora_adapters():
    ours, _ = run_both(federated_lora, rtol=1e-5, atol=1e-6)
    # (the adapters of both layers are averaged: "parametrizations.weight.0.A" is in both names)
    assert ours["missing"] == ["0.bias", "0.parametrizations.weight.original", "2.bias",
                               "2.parametrizations.weight.original"]
    assert ours["n_trainable"] == 6 + 2 and ours["is_param"]  # (merged: the weights keep the frozen original's flag)
    np.testing.assert_allclose(ours["merged"], ours["out"], rtol=1e-6)
    assert ours["merged_keys"] == ["0.bias", "0.weight", "2.bias", "2.weight"] and ours["cls"] == "Linear"
    assert ours["wn_keys"] == ["bias", "parametrizations.weight.original0", "parametrizations.weight.original1"]
