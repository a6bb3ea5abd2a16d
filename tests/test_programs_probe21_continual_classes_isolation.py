# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Continual, federated and private learning programs, run as tests/probe21_continual_common.py says.
Class-incremental learning (Avalanche's grown head with an int8 ``active_units`` buffer re-registered and
``masked_fill``, the optimizer's state reset to ``defaultdict(dict)``, iCaRL herding and nearest-mean-of-exemplars by
``cdist``, weight aligning, a BiC layer); PackNet (kthvalue pruning, ``p.grad.data[frozen] = 0``) and HAT (gates,
gradient compensation in place, ``p.data =`` reassigned)."""

import numpy as np

from .probe21_continual_common import MLP_WEIGHTS, mlp, two_tasks
from .pytorch_programs import load, run_both, weights_of

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
