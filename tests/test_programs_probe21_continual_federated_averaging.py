# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Continual, federated and private learning programs, run as tests/probe21_continual_common.py says. Federated
learning: FedAvg (deepcopy of the global model, local SGD with per-client optimizer state kept by
``copy.deepcopy(optimizer.state_dict())``, ``random_split`` shards, averaged state dicts whose int64
``num_batches_tracked`` becomes float by ``torch.div`` and truncates on ``load_state_dict``, the in-place
float-into-int64 refusal); FedProx, SCAFFOLD, FedAdam and FedAvgM servers stepping on a pseudo-gradient in ``p.grad``
over a model with tied weights; state_dict aliasing; what ``copy.deepcopy`` carries (bound-method and closure hooks,
optimizer state, views); Flower's NumPy client (FedAvg in NumPy, ``OrderedDict(zip(...))`` loaded without
``_metadata``, FedBN)."""

import copy

import numpy as np
import pytest

from .probe21_continual_common import FED_WEIGHTS, client_data, fed_model
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Federated averaging: deepcopy of the global model, local SGD on client shards, averaged state_dicts
# ----------------------------------------------------------------------------------------------


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
