# ruff: noqa: B007, B008, B023, E741, E731, F841, UP008  (the programs are kept as their authors wrote them)
"""Real PyTorch training-loop programs (see tests/pytorch_programs.py), each run unchanged but for its
imports on chainrule and on PyTorch from the same weights, comparing losses, parameters and gradients.

What the other program tests do not already cover: fine-tuning with an optimizer built over every
parameter while the backbone is frozen (``requires_grad_(False)``, its BatchNorm kept in ``eval()``),
then unfrozen layer by layer and a new head added with ``add_param_group`` under a running scheduler; an
exponential moving average of the weights written five ways (``lerp_``, ``mul_().add_(alpha=)``, timm's
ModelEmaV2 over ``state_dict().values()`` with its buffers, its ModelEmaV3's ``torch._foreach_lerp_`` and
diffusers' ``torch._foreach_sub_``); a checkpoint carrying the RNG state
(``get_rng_state``/``set_rng_state``) so that a run with Dropout resumes exactly, and ``manual_seed``
giving identical runs; and a data pipeline (a Dataset of variable-length items, a bucketing Sampler, a
``collate_fn`` padding into dicts, a ``persistent=False`` normalisation buffer) feeding gradient
accumulation over uneven micro-batches with ``clip_grad_norm_(norm_type='inf')``; the 2017 "Learning PyTorch
with Examples" script (``Variable``, ``dtype = torch.FloatTensor``, ``.type(dtype)``); and CleanRL's PPO
update (orthogonal ``layer_init``, Categorical and Normal policies, GAE, clipped losses, lr annealing); an
optimizer over named parameters; and Gaussian-process regression (Cholesky, ``cholesky_solve``, ``slogdet``)."""

import copy
import io
import math
import warnings

import numpy as np

from .pytorch_programs import OURS, load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# Fine-tuning: freeze, keep BatchNorm statistics, unfreeze gradually, add a head's param group
# ----------------------------------------------------------------------------------------------


def finetune_net(m):
    nn = m.nn
    backbone = nn.Sequential(nn.Linear(4, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                             nn.Linear(8, 8), nn.ReLU())
    return nn.ModuleDict({"backbone": backbone, "head": nn.Linear(8, 3), "head2": nn.Linear(8, 2)})


def finetuning(m, weights, epochs=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    net = load(m, finetune_net(m), weights)
    backbone, head = net["backbone"], net["head"]
    for p in backbone.parameters():
        p.requires_grad_(False)
    # every parameter goes to the optimizer; the frozen ones get no .grad, so no update
    optimizer = optim.SGD([{"params": backbone.parameters(), "lr": 0.01},
                           {"params": head.parameters()}], lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    rng = np.random.default_rng(9)
    X = torch.tensor(rng.standard_normal((12, 4)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 3, 12))
    y2 = torch.tensor(rng.integers(0, 2, 12))
    frozen_stats = backbone[1].running_mean.clone()
    log = []
    for epoch in range(epochs):
        net.train()
        if epoch < 2:
            backbone.eval()  # keep the frozen BatchNorm's running statistics
        if epoch == 2:
            for p in backbone[3].parameters():  # unfreeze the last layer of the backbone
                p.requires_grad_(True)
        if epoch == 4:
            backbone.requires_grad_(True)
            optimizer.add_param_group({"params": net["head2"].parameters(), "lr": 0.05})
        optimizer.zero_grad()
        feats = backbone(X)
        loss = F.cross_entropy(head(feats), y)
        if epoch >= 4:
            loss = loss + F.cross_entropy(net["head2"](feats), y2)
        loss.backward()
        optimizer.step()
        scheduler.step()
        log.append((loss.item(), [g["lr"] for g in optimizer.param_groups],
                    [p.grad is None for p in backbone.parameters()], backbone.training, backbone[1].training))
    stats_kept = bool(torch.equal(frozen_stats, backbone[1].running_mean)) if epochs <= 2 else None
    n_trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    state = optimizer.state_dict()
    return (log, [p.detach() for p in net.parameters()], [p.grad for p in net.parameters()], backbone[1].running_mean,
            backbone[1].num_batches_tracked, n_trainable, sorted(state["state"]), len(state["param_groups"]),
            stats_kept)


def test_finetuning_frozen_backbone_unfreezing_and_a_new_group():
    weights = weights_of(finetune_net)
    ours, _ = run_both(finetuning, weights, rtol=1e-5, atol=1e-6)
    log, params, grads, rmean, tracked, n_trainable, state_keys, n_groups, _ = ours
    assert [entry[2] for entry in log[:2]] == [[True] * 5] * 2  # frozen: no .grad at all
    assert log[2][2] == [True, True, True, False, False] and log[4][2] == [False] * 5
    assert log[0][3:] == (False, False) and log[2][3:] == (True, True)
    assert int(tracked) == 4  # the statistics moved only once the backbone was in train()
    assert grads[0] is not None and not np.array_equal(params[0], weights["backbone.0.weight"])  # unfrozen
    assert [entry[1] for entry in log][4] == [0.0025, 0.025, 0.05] and n_groups == 3
    assert n_trainable == sum(v.size for v in weights.values() if v.dtype == np.float32) - 16  # less BN buffers
    frozen_only = finetuning(OURS, weights, epochs=2)
    assert frozen_only[-1]  # in eval() the frozen BatchNorm kept its running statistics
    for k, p in zip(["backbone.0.weight", "backbone.1.weight", "backbone.1.bias", "backbone.3.weight"], frozen_only[1]):
        np.testing.assert_array_equal(p.numpy(), weights[k])  # weight decay and momentum left them alone


# ----------------------------------------------------------------------------------------------
# An exponential moving average of the weights, three ways, evaluated in eval()
# ----------------------------------------------------------------------------------------------


def ema_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(3, 6, bias=False), nn.BatchNorm1d(6), nn.Tanh(), nn.Linear(6, 2))


def ema(m, weights, steps=5, decay=0.8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, ema_net(m), weights)
    ema_lerp = copy.deepcopy(model)
    ema_mul = copy.deepcopy(model)
    ema_v2 = copy.deepcopy(model)
    for e in (ema_lerp, ema_mul, ema_v2):
        e.eval()
        for p in e.parameters():
            p.requires_grad_(False)
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    rng = np.random.default_rng(10)
    X = torch.tensor(rng.standard_normal((10, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 10))
    losses = []
    for step in range(steps):
        model.train()
        optimizer.zero_grad()
        loss = F.cross_entropy(model(X), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        with torch.no_grad():
            for e, p in zip(ema_lerp.parameters(), model.parameters()):
                e.lerp_(p, 1 - decay)
            for e, p in zip(ema_mul.parameters(), model.parameters()):
                e.mul_(decay).add_(p.detach(), alpha=1 - decay)
            for e_b, b in zip(ema_lerp.buffers(), model.buffers()):
                e_b.copy_(b)
            msd = model.state_dict()  # timm's ModelEmaV2: parameters and buffers alike
            for k, ema_v in ema_v2.state_dict().items():
                model_v = msd[k].detach()
                if ema_v.is_floating_point():
                    ema_v.copy_(ema_v * decay + (1.0 - decay) * model_v)
                else:
                    ema_v.copy_(model_v)
    with torch.no_grad():
        outs = [e(X) for e in (ema_lerp, ema_mul, ema_v2)]
    return (losses, [p for p in ema_lerp.parameters()], [p for p in ema_mul.parameters()], ema_v2.state_dict(), outs,
            [p.detach() for p in model.parameters()], ema_lerp[1].num_batches_tracked)


def test_ema_of_weights_three_ways():
    weights = weights_of(ema_net)
    (losses, lerped, mulled, v2, outs, params, tracked), _ = run_both(ema, weights, rtol=1e-5, atol=1e-6)
    for a, b in zip(lerped, mulled):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(v2["0.weight"], lerped[0], rtol=1e-5, atol=1e-7)
    assert int(v2["1.num_batches_tracked"]) == 5 == int(tracked)
    assert not np.allclose(v2["0.weight"], params[0])  # an average lags behind the weights


def ema_v3(m, weights, steps=4, decay=0.8):
    """timm's ModelEmaV3 update (foreach path): ``_foreach_lerp_`` over the floating parameters and
    buffers, a plain copy of the integer ones; and diffusers' EMAModel step (``_foreach_sub_``)."""
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, ema_net(m), weights)
    ema_model = copy.deepcopy(model).eval().requires_grad_(False)
    shadow = [p.clone().detach() for p in model.parameters()]
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    rng = np.random.default_rng(10)
    X = torch.tensor(rng.standard_normal((10, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 10))
    for step in range(steps):
        optimizer.zero_grad()
        F.cross_entropy(model(X), y).backward()
        optimizer.step()
        with torch.no_grad():
            ema_lerp_values, model_lerp_values = [], []
            for ema_v, model_v in zip(ema_model.state_dict().values(), model.state_dict().values()):
                if ema_v.is_floating_point():
                    ema_lerp_values.append(ema_v)
                    model_lerp_values.append(model_v)
                else:
                    ema_v.copy_(model_v)
            torch._foreach_lerp_(ema_lerp_values, model_lerp_values, weight=1.0 - decay)
            params = [p for p in model.parameters() if p.requires_grad]
            torch._foreach_sub_(shadow, torch._foreach_sub(shadow, params), alpha=1.0 - decay)
    with torch.no_grad():
        out = ema_model(X)
    return out, ema_model.state_dict(), shadow


def test_ema_with_foreach_ops_as_timm_and_diffusers():
    weights = weights_of(ema_net)
    (out, state, shadow), _ = run_both(ema_v3, weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state["0.weight"], shadow[0], rtol=1e-5, atol=1e-7)
    assert int(state["1.num_batches_tracked"]) == 4


# ----------------------------------------------------------------------------------------------
# A checkpoint with the RNG state: a run with Dropout resumes exactly; manual_seed repeats a run
# ----------------------------------------------------------------------------------------------


def dropout_net(m, p=0.3):
    nn = m.nn
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(p), nn.Linear(16, 16), nn.GELU(),
                         nn.Dropout(p), nn.Linear(16, 1))


def rng_resume(m, weights, p, total=6, resume_at=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    rng = np.random.default_rng(11)
    X = torch.tensor(rng.standard_normal((total, 8, 4)).astype(np.float32))
    Y = torch.tensor(rng.standard_normal((total, 8, 1)).astype(np.float32))

    def build():
        model = load(m, dropout_net(m, p), weights)
        opt = optim.AdamW(model.parameters(), lr=1e-2, amsgrad=True)
        warm = optim.lr_scheduler.LinearLR(opt, start_factor=0.25, total_iters=2)
        cos = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - 2)
        return model, opt, optim.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[2])

    def train(model, opt, sched, start, stop, log):
        for step in range(start, stop):
            model.train()
            opt.zero_grad()
            loss = F.mse_loss(model(X[step]), Y[step])
            loss.backward()
            opt.step()
            sched.step()
            log.append((loss.item(), sched.get_last_lr()[0]))

    torch.manual_seed(1234)
    model, opt, sched = build()
    full = []
    train(model, opt, sched, 0, total, full)
    straight = [q.detach().clone() for q in model.parameters()]

    torch.manual_seed(1234)
    model, opt, sched = build()
    part = []
    train(model, opt, sched, 0, resume_at, part)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "rng": torch.get_rng_state(), "step": resume_at}, buf)
    torch.manual_seed(999)  # whatever happens in between
    torch.rand(17)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)
    model2, opt2, sched2 = build()
    model2.load_state_dict(ckpt["model"])
    opt2.load_state_dict(ckpt["optimizer"])
    sched2.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"])
    train(model2, opt2, sched2, ckpt["step"], total, part)
    resumed = [q.detach() for q in model2.parameters()]
    return full, part, straight, resumed, str(ckpt["rng"].dtype).split(".")[-1], sorted(ckpt["optimizer"]["state"][0])


def test_checkpoint_with_rng_state_resumes_dropout_exactly():
    weights = weights_of(dropout_net)
    # without dropout the run is the same on both libraries ...
    run_both(rng_resume, weights, 0.0, rtol=1e-5, atol=1e-6)
    # ... with it, each library must repeat itself exactly from the saved RNG state
    ours, theirs = run_both(rng_resume, weights, 0.3, compare=False)
    for full, part, straight, resumed, rng_dtype, state_keys in [ours] + ([theirs] if theirs else []):
        assert full == part
        for a, b in zip(straight, resumed):
            np.testing.assert_array_equal(a, b)
        assert rng_dtype == "uint8" and state_keys == ["exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step"]
    no_dropout, _ = run_both(rng_resume, weights, 0.0, compare=False)
    assert ours[0] != no_dropout[0]  # the dropout did drop something


def seeded_runs(m):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def run(seed):
        torch.manual_seed(seed)
        model = dropout_net(m, 0.5)  # the initial weights come from the seed too
        opt = optim.SGD(model.parameters(), lr=0.1)
        x = torch.randn(8, 4)
        y = torch.randn(8, 1)
        losses = []
        for _ in range(3):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        return losses, torch.randperm(6).tolist()

    return run(0) == run(0), run(0) != run(1)


def test_manual_seed_repeats_a_whole_run():
    ours, theirs = run_both(seeded_runs)
    assert ours == (True, True)


# ----------------------------------------------------------------------------------------------
# A data pipeline: variable-length items, a bucketing sampler, a padding collate_fn, and gradient
# accumulation over uneven micro-batches
# ----------------------------------------------------------------------------------------------


def seq_model(m):
    torch, nn = m.torch, m.nn

    class Pooler(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.tensor([0.5, -0.5]), persistent=False)
            self.register_buffer("std", torch.tensor([2.0, 0.5]), persistent=False)
            self.proj = nn.Linear(2, 6)
            self.out = nn.Linear(6, 1)

        def forward(self, x, mask):
            h = torch.relu(self.proj((x - self.mean) / self.std))
            h = (h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)
            return self.out(h).squeeze(-1)

    return Pooler()


def pipeline(m, weights, epochs=2, accum=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    D = m.data
    rng = np.random.default_rng(12)
    lengths = rng.integers(1, 6, 11)
    items = [(rng.standard_normal((n, 2)).astype(np.float32), float(rng.standard_normal())) for n in lengths]

    class VarLen(D.Dataset):
        def __init__(self, items):
            self.items = items

        def __len__(self):
            return len(self.items)

        def __getitem__(self, idx):
            x, y = self.items[idx]
            return {"x": torch.from_numpy(x), "y": y, "idx": idx}

    class BucketSampler(D.Sampler):
        """Batches of similar lengths: sort by length, cut into batches, shortest batches first."""

        def __init__(self, lengths, batch_size):
            self.lengths, self.batch_size = lengths, batch_size

        def __iter__(self):
            order = sorted(range(len(self.lengths)), key=lambda i: (self.lengths[i], i))
            yield from (order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size))

        def __len__(self):
            return (len(self.lengths) + self.batch_size - 1) // self.batch_size

    def collate(batch):
        xs = [b["x"] for b in batch]
        x = nn.utils.rnn.pad_sequence(xs, batch_first=True)
        mask = torch.zeros(x.shape[:2])
        for i, t in enumerate(xs):
            mask[i, : len(t)] = 1.0
        return {"x": x, "mask": mask, "y": torch.tensor([b["y"] for b in batch], dtype=torch.float32),
                "idx": torch.tensor([b["idx"] for b in batch])}

    ds = VarLen(items)
    loader = D.DataLoader(ds, batch_sampler=BucketSampler([len(t[0]) for t in items], 3), collate_fn=collate)
    model = load(m, seq_model(m), weights)
    assert set(model.state_dict()) == {"proj.weight", "proj.bias", "out.weight", "out.bias"}
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.5)
    log = []
    for epoch in range(epochs):
        optimizer.zero_grad()
        seen = 0
        for i, batch in enumerate(loader):
            pred = model(batch["x"], batch["mask"])
            # an uneven last batch: weigh each by its share of the examples of the accumulation window
            loss = F.mse_loss(pred, batch["y"], reduction="sum") / len(ds)
            loss.backward()
            seen += len(batch["y"])
            if (i + 1) % accum == 0 or i + 1 == len(loader):
                norm = nn.utils.clip_grad_norm_(model.parameters(), max_norm=0.5, norm_type="inf")
                optimizer.step()
                optimizer.zero_grad()
                log.append((seen, norm.item()))
            log.append((batch["idx"].tolist(), tuple(batch["x"].shape), loss.item()))
    model.double()
    return log, [p.detach() for p in model.parameters()], str(model.mean.dtype).split(".")[-1], len(loader)


def test_bucketing_sampler_collate_and_uneven_accumulation():
    weights = weights_of(seq_model)
    (log, params, buffer_dtype, n_batches), _ = run_both(pipeline, weights, rtol=1e-5, atol=1e-6)
    assert n_batches == 4 and buffer_dtype == "float64"
    shapes = [entry[1] for entry in log if len(entry) == 3]
    assert [s[1] for s in shapes[:4]] == sorted(s[1] for s in shapes[:4])  # shortest batches first
    assert sorted(i for entry in log[:6] if len(entry) == 3 for i in entry[0]) == list(range(11))


# ----------------------------------------------------------------------------------------------
# The 2017 "Learning PyTorch with Examples" script: Variables, `dtype = torch.FloatTensor`,
# `.type(dtype)`, `.data -=` updates and `grad.data.zero_()`, with legacy ByteTensor masks
# ----------------------------------------------------------------------------------------------


def legacy_two_layer_net(m, steps=5):
    torch = m.torch
    from_numpy = torch.from_numpy
    Variable = torch.autograd.Variable
    dtype = torch.FloatTensor
    N, D_in, H, D_out = 8, 5, 6, 2
    rng = np.random.default_rng(13)
    x = Variable(from_numpy(rng.standard_normal((N, D_in))).type(dtype), requires_grad=False)
    y = Variable(from_numpy(rng.standard_normal((N, D_out))).type(dtype), requires_grad=False)
    w1 = Variable(from_numpy(0.3 * rng.standard_normal((D_in, H))).type(dtype), requires_grad=True)
    w2 = Variable(from_numpy(0.3 * rng.standard_normal((H, D_out))).type(dtype), requires_grad=True)
    keep = torch.ByteTensor([1, 0, 1, 1, 1, 0, 1, 1]).bool()  # an old-style mask of the rows to fit
    learning_rate = 1e-2
    losses = []
    for t in range(steps):
        y_pred = x.mm(w1).clamp(min=0).mm(w2)
        loss = (y_pred - y).pow(2)[keep].sum()
        losses.append(loss.data.item())
        loss.backward()
        w1.data -= learning_rate * w1.grad.data
        w2.data -= learning_rate * w2.grad.data
        w1.grad.data.zero_()
        w2.grad.data.zero_()
    kinds = [isinstance(w1, torch.FloatTensor), isinstance(w1, torch.DoubleTensor),
             isinstance(keep, torch.BoolTensor), isinstance(torch.LongTensor(2, 3), torch.LongTensor),
             x.type(), w1.type(torch.DoubleTensor).type(), torch.ShortTensor([1]).type(), torch.HalfTensor(2).type(),
             torch.CharTensor([1]).type(), torch.IntTensor(torch.Size([2])).shape[0]]
    return losses, w1, w2, kinds


def test_legacy_variables_and_typed_tensors():
    (losses, w1, w2, kinds), _ = run_both(legacy_two_layer_net)
    assert losses[-1] < losses[0]
    assert kinds == [True, False, True, True, "torch.FloatTensor", "torch.DoubleTensor", "torch.ShortTensor",
                     "torch.HalfTensor", "torch.CharTensor", 2]


# ----------------------------------------------------------------------------------------------
# A custom layer written the pre-2018 way: parameters from `torch.Tensor(sizes)`, then an init
# ----------------------------------------------------------------------------------------------


def old_style_layer(m):
    torch, nn = m.torch, m.nn
    import math

    class MyLinear(nn.Module):
        def __init__(self, in_features, out_features):
            super().__init__()
            self.weight = nn.Parameter(torch.Tensor(out_features, in_features))
            self.bias = nn.Parameter(torch.Tensor(out_features))  # one size: a float vector of that length
            self.reset_parameters()

        def reset_parameters(self):
            stdv = 1.0 / math.sqrt(self.weight.size(1))
            self.weight.data.uniform_(-stdv, stdv)
            self.bias.data.fill_(0.1)

        def forward(self, x):
            return x @ self.weight.t() + self.bias

    layer = MyLinear(3, 2)
    labels = torch.Tensor([0, 1, 1])  # torch.Tensor of ints is a float tensor (torch.tensor keeps int64)
    return layer.bias, str(layer.bias.dtype).split(".")[-1], str(labels.dtype).split(".")[-1], labels


def test_old_style_parameters_from_torch_tensor_sizes():
    (bias, bias_dtype, labels_dtype, labels), _ = run_both(old_style_layer)
    assert bias.shape == (2,) and bias_dtype == "float32" and labels_dtype == "float32"


# ----------------------------------------------------------------------------------------------
# CleanRL's PPO update on a recorded rollout: orthogonal layer_init, Categorical and Normal
# policies, GAE, clipped surrogate and value losses, minibatch epochs, lr annealing by hand
# ----------------------------------------------------------------------------------------------

OBS, ACTS, STEPS, ENVS = 4, 3, 8, 2


def ppo_agent(m):
    torch, nn = m.torch, m.nn

    def layer_init(layer, std=np.sqrt(2), bias_const=0.0):
        nn.init.orthogonal_(layer.weight, std)
        nn.init.constant_(layer.bias, bias_const)
        return layer

    class Agent(nn.Module):
        def __init__(self):
            super().__init__()
            self.critic = nn.Sequential(layer_init(nn.Linear(OBS, 16)), nn.Tanh(),
                                        layer_init(nn.Linear(16, 1), std=1.0))
            self.actor = nn.Sequential(layer_init(nn.Linear(OBS, 16)), nn.Tanh(),
                                       layer_init(nn.Linear(16, ACTS), std=0.01))
            self.actor_mean = layer_init(nn.Linear(OBS, 2), std=0.01)
            self.actor_logstd = nn.Parameter(torch.zeros(1, 2))

        def get_value(self, x):
            return self.critic(x)

        def get_action_and_value(self, x, action=None, caction=None):
            Categorical, Normal = torch.distributions.Categorical, torch.distributions.Normal
            probs = Categorical(logits=self.actor(x))
            action_mean = self.actor_mean(x)
            action_std = torch.exp(self.actor_logstd.expand_as(action_mean))
            cprobs = Normal(action_mean, action_std)
            logprob = probs.log_prob(action) + cprobs.log_prob(caction).sum(1)
            entropy = probs.entropy() + cprobs.entropy().sum(1)
            return action, logprob, entropy, self.critic(x)

    return Agent()


def ppo_update(m, weights, update_epochs=2, num_minibatches=2, num_updates=2):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    agent = load(m, ppo_agent(m), weights)
    learning_rate, gamma, gae_lambda = 2.5e-3, 0.99, 0.95
    clip_coef, ent_coef, vf_coef, max_grad_norm = 0.2, 0.01, 0.5, 0.5
    optimizer = optim.Adam(agent.parameters(), lr=learning_rate, eps=1e-5)
    rng = np.random.default_rng(16)
    batch_size = STEPS * ENVS
    minibatch_size = batch_size // num_minibatches
    log = []
    for update in range(1, num_updates + 1):
        frac = 1.0 - (update - 1.0) / num_updates
        optimizer.param_groups[0]["lr"] = frac * learning_rate
        # a recorded rollout: observations, actions and rewards come from the environment
        obs = torch.tensor(rng.standard_normal((STEPS, ENVS, OBS)).astype(np.float32))
        actions = torch.tensor(rng.integers(0, ACTS, (STEPS, ENVS)))
        cactions = torch.tensor(rng.standard_normal((STEPS, ENVS, 2)).astype(np.float32))
        rewards = torch.tensor(rng.standard_normal((STEPS, ENVS)).astype(np.float32))
        dones = torch.tensor((rng.random((STEPS, ENVS)) < 0.2).astype(np.float32))
        next_obs = torch.tensor(rng.standard_normal((ENVS, OBS)).astype(np.float32))
        next_done = torch.zeros(ENVS)
        with torch.no_grad():
            _, logprobs, _, values = agent.get_action_and_value(obs.reshape(-1, OBS), actions.reshape(-1),
                                                                cactions.reshape(-1, 2))
            logprobs, values = logprobs.reshape(STEPS, ENVS), values.reshape(STEPS, ENVS)
            next_value = agent.get_value(next_obs).reshape(1, -1)
            advantages = torch.zeros_like(rewards)
            lastgaelam = 0
            for t in reversed(range(STEPS)):
                if t == STEPS - 1:
                    nextnonterminal = 1.0 - next_done
                    nextvalues = next_value
                else:
                    nextnonterminal = 1.0 - dones[t + 1]
                    nextvalues = values[t + 1]
                delta = rewards[t] + gamma * nextvalues * nextnonterminal - values[t]
                advantages[t] = lastgaelam = delta + gamma * gae_lambda * nextnonterminal * lastgaelam
            returns = advantages + values
        b_obs, b_logprobs = obs.reshape((-1, OBS)), logprobs.reshape(-1)
        b_actions, b_cactions = actions.reshape(-1), cactions.reshape(-1, 2)
        b_advantages, b_returns, b_values = advantages.reshape(-1), returns.reshape(-1), values.reshape(-1)
        b_inds = np.arange(batch_size)
        clipfracs = []
        for epoch in range(update_epochs):
            rng.shuffle(b_inds)
            for start in range(0, batch_size, minibatch_size):
                mb_inds = b_inds[start : start + minibatch_size]
                _, newlogprob, entropy, newvalue = agent.get_action_and_value(
                    b_obs[mb_inds], b_actions.long()[mb_inds], b_cactions[mb_inds])
                logratio = newlogprob - b_logprobs[mb_inds]
                ratio = logratio.exp()
                with torch.no_grad():
                    old_approx_kl = (-logratio).mean()
                    approx_kl = ((ratio - 1) - logratio).mean()
                    clipfracs += [((ratio - 1.0).abs() > clip_coef).float().mean().item()]
                mb_advantages = b_advantages[mb_inds]
                mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                pg_loss1 = -mb_advantages * ratio
                pg_loss2 = -mb_advantages * torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
                pg_loss = torch.max(pg_loss1, pg_loss2).mean()
                newvalue = newvalue.view(-1)
                v_loss_unclipped = (newvalue - b_returns[mb_inds]) ** 2
                v_clipped = b_values[mb_inds] + torch.clamp(newvalue - b_values[mb_inds], -clip_coef, clip_coef)
                v_loss_clipped = (v_clipped - b_returns[mb_inds]) ** 2
                v_loss = 0.5 * torch.max(v_loss_unclipped, v_loss_clipped).mean()
                entropy_loss = entropy.mean()
                loss = pg_loss - ent_coef * entropy_loss + v_loss * vf_coef
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), max_grad_norm)
                optimizer.step()
                log.append((loss.item(), pg_loss.item(), v_loss.item(), entropy_loss.item(), approx_kl.item(),
                            old_approx_kl.item()))
        y_pred, y_true = b_values.numpy(), b_returns.numpy()
        var_y = np.var(y_true)
        explained_var = np.nan if var_y == 0 else 1 - np.var(y_true - y_pred) / var_y
        log.append((float(explained_var), float(np.mean(clipfracs)), optimizer.param_groups[0]["lr"]))
    return log, [p.detach() for p in agent.parameters()]


def test_cleanrl_ppo_update():
    weights = weights_of(ppo_agent)
    (log, params), _ = run_both(ppo_update, weights, rtol=1e-4, atol=1e-5)
    assert len(log) == 2 * (2 * 2 + 1) and log[-1][2] == 2.5e-3 / 2
    assert all(np.isfinite(entry).all() for entry in log)


# ----------------------------------------------------------------------------------------------
# Optimizers over named parameters (PyTorch 2.6): the names travel in param_groups and the state dict
# ----------------------------------------------------------------------------------------------


def named_optimizer(m, weights, steps=3):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, ema_net(m), weights)
    named = list(model.named_parameters())
    opt = optim.AdamW([{"params": [(n, p) for n, p in named if p.ndim > 1], "weight_decay": 0.1},
                       {"params": [(n, p) for n, p in named if p.ndim <= 1], "weight_decay": 0.0}], lr=0.05)
    rng = np.random.default_rng(17)
    X = torch.tensor(rng.standard_normal((10, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 10))
    for step in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    buf = io.BytesIO()
    torch.save(opt.state_dict(), buf)
    buf.seek(0)
    saved = torch.load(buf)
    resumed = optim.AdamW([{"params": [p for n, p in named if p.ndim > 1]},
                           {"params": [p for n, p in named if p.ndim <= 1]}], lr=0.05)
    resumed.load_state_dict(saved)
    opt.zero_grad()
    F.cross_entropy(model(X), y).backward()
    opt.step()
    return ([g["param_names"] for g in saved["param_groups"]], [g.get("param_names") for g in resumed.param_groups],
            [p.detach() for p in model.parameters()], [g["weight_decay"] for g in resumed.param_groups])


def test_an_optimizer_over_named_parameters():
    weights = weights_of(ema_net)
    (saved_names, resumed_names, params, decays), _ = run_both(named_optimizer, weights, rtol=1e-5, atol=1e-6)
    assert saved_names == [["0.weight", "3.weight"], ["1.weight", "1.bias", "3.bias"]] == resumed_names
    assert decays == [0.1, 0.0]


# ----------------------------------------------------------------------------------------------
# Gaussian-process regression in float64: the marginal likelihood three ways (Cholesky with
# cholesky_solve, solve + logdet, solve_triangular + slogdet), kernel hyperparameters by Adam
# ----------------------------------------------------------------------------------------------


def gaussian_process(m, steps=10):
    torch, nn, optim = m.torch, m.nn, m.optim
    rng = np.random.default_rng(20)
    X = torch.tensor(rng.uniform(-2, 2, (12, 1)))
    y = torch.sin(2 * X).squeeze(-1) + 0.1 * torch.tensor(rng.standard_normal(12))
    log_ls = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
    log_sf = nn.Parameter(torch.tensor(0.0, dtype=torch.float64))
    log_sn = nn.Parameter(torch.tensor(-1.0, dtype=torch.float64))

    def kernel(A, B):
        return log_sf.exp() ** 2 * torch.exp(-0.5 * torch.cdist(A, B) ** 2 / log_ls.exp() ** 2)

    opt = optim.Adam([log_ls, log_sf, log_sn], lr=0.05)
    log = []
    n = len(y)
    for i in range(steps):
        opt.zero_grad()
        K = kernel(X, X) + (log_sn.exp() ** 2 + 1e-6) * torch.eye(n, dtype=torch.float64)
        L = torch.linalg.cholesky(K)
        alpha = torch.cholesky_solve(y.unsqueeze(-1), L)
        const = 0.5 * n * math.log(2 * math.pi)
        nll = 0.5 * (y.unsqueeze(-1) * alpha).sum() + torch.log(torch.diagonal(L)).sum() + const
        nll2 = 0.5 * y @ torch.linalg.solve(K, y) + 0.5 * torch.logdet(K) + const
        v = torch.linalg.solve_triangular(L, y.unsqueeze(-1), upper=False)
        nll3 = 0.5 * (v ** 2).sum() + 0.5 * torch.linalg.slogdet(K).logabsdet + const
        nll.backward()
        opt.step()
        log.append((nll.item(), nll2.item(), nll3.item()))
    with torch.no_grad():
        Xs = torch.linspace(-2, 2, 5, dtype=torch.float64).unsqueeze(-1)
        mean = kernel(Xs, X) @ torch.cholesky_solve(y.unsqueeze(-1), L)
        eigenvalues = torch.linalg.eigh(K).eigenvalues
    return log, [log_ls.detach(), log_sf.detach(), log_sn.detach()], mean, eigenvalues


def test_gaussian_process_marginal_likelihood():
    (log, hypers, mean, eigenvalues), _ = run_both(gaussian_process, rtol=1e-9, atol=1e-11)
    for a, b, c in log:
        np.testing.assert_allclose([b, c], [a, a], rtol=1e-10)  # three ways to the same likelihood
    assert log[-1][0] < log[0][0] and (eigenvalues > 0).all()
    np.testing.assert_allclose(mean[:, 0], np.sin(2 * np.linspace(-2, 2, 5)), atol=0.5)


# ----------------------------------------------------------------------------------------------
# An optimizer written against PyTorch 1.x's deprecated signatures (Hugging Face's old AdamW, the
# original RAdam/AdaBound code): add_(alpha, tensor), addcmul_(value, t1, t2), addcdiv_(value, t1, t2)
# ----------------------------------------------------------------------------------------------


def old_signature_adamw(m, weights, steps=3, old_style=True):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class AdamW(optim.Optimizer):
        def __init__(self, params, lr=1e-2, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, correct_bias=True):
            super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                          correct_bias=correct_bias))

        def step(self, closure=None):
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    grad = p.grad.data
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(p.data)
                        state["exp_avg_sq"] = torch.zeros_like(p.data)
                    exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                    beta1, beta2 = group["betas"]
                    state["step"] += 1
                    if old_style:
                        exp_avg.mul_(beta1).add_(1.0 - beta1, grad)
                        exp_avg_sq.mul_(beta2).addcmul_(1.0 - beta2, grad, grad)
                    else:
                        exp_avg.mul_(beta1).add_(grad, alpha=1.0 - beta1)
                        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                    denom = exp_avg_sq.sqrt().add_(group["eps"])
                    step_size = group["lr"]
                    if group["correct_bias"]:
                        bias_correction1 = 1.0 - beta1 ** state["step"]
                        bias_correction2 = 1.0 - beta2 ** state["step"]
                        step_size = step_size * math.sqrt(bias_correction2) / bias_correction1
                    if old_style:
                        p.data.addcdiv_(-step_size, exp_avg, denom)
                    else:
                        p.data.addcdiv_(exp_avg, denom, value=-step_size)
                    if group["weight_decay"] > 0.0:
                        p.data.add_(p.data, alpha=-group["lr"] * group["weight_decay"])

    model = load(m, ema_net(m), weights)
    opt = AdamW(model.parameters(), weight_decay=0.01)
    rng = np.random.default_rng(22)
    X = torch.tensor(rng.standard_normal((10, 3)).astype(np.float32))
    y = torch.tensor(rng.integers(0, 2, 10))
    for step in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(X), y).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


def test_an_optimizer_in_pytorch_1_signatures():
    weights = weights_of(ema_net)
    modern, _ = run_both(old_signature_adamw, weights, old_style=False, rtol=1e-5, atol=1e-6)
    with warnings.catch_warnings():  # PyTorch warns that the signatures are deprecated
        warnings.simplefilter("ignore")
        old, _ = run_both(old_signature_adamw, weights, old_style=True, rtol=1e-5, atol=1e-6)
    for a, b in zip(old, modern):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
