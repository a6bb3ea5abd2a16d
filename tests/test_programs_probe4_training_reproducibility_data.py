# ruff: noqa: B007, F841  (the programs are kept as their authors wrote them)
"""Real PyTorch training-loop programs (see tests/pytorch_programs.py), each run unchanged but for its imports on
chainrule and on PyTorch from the same weights, comparing losses, parameters and gradients. A checkpoint carrying the
RNG state (``get_rng_state``/``set_rng_state``) so that a run with Dropout resumes exactly, and ``manual_seed``
giving identical runs; a data pipeline (a Dataset of variable-length items, a bucketing Sampler, a ``collate_fn``
padding into dicts, a ``persistent=False`` normalisation buffer) feeding gradient accumulation over uneven
micro-batches with ``clip_grad_norm_(norm_type='inf')``."""

import io

import numpy as np

from .pytorch_programs import load, run_both, weights_of

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
