"""Run under mpiexec -n N: data-parallel training equals one process on the whole batch.

Each rank computes the single-process reference itself (on the global batches the
DistributedSampler shares out), so no results travel between the processes but the
gradients themselves.
"""

import os
import sys

import numpy as np

import autograd
import autograd.distributed as dist
import nn
import optim
from autograd.data import TensorDataset
from autograd.utils.data import DistributedSampler
from nn.parallel import DistributedDataParallel, consume_prefix_in_state_dict_if_present

TOLERANCE = 1e-10
STEPS, LOCAL_BATCH = 4, 6

dist.init_process_group("mpi")
rank, size = dist.get_rank(), dist.get_world_size()
generator = np.random.default_rng(0)
data = TensorDataset(generator.standard_normal((64, 5)), generator.integers(0, 3, 64))


def model(norm=None, seed=0):
    autograd.manual_seed(seed + rank * 1000)  # different on every rank: DDP must broadcast rank 0's
    if rank == 0:
        autograd.manual_seed(seed)
    layers = [nn.Linear(5, 8)] + ([norm(8)] if norm else []) + [nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers).double()


def reference_model(norm=None, seed=0):
    autograd.manual_seed(seed)
    layers = [nn.Linear(5, 8)] + ([norm(8)] if norm else []) + [nn.Tanh(), nn.Linear(8, 3)]
    return nn.Sequential(*layers).double()


def batches(epoch=0):
    """(this rank's share, every rank's shares in rank order) for each step."""
    samplers = [DistributedSampler(data, num_replicas=size, rank=r, shuffle=True, seed=7) for r in range(size)]
    for sampler in samplers:
        sampler.set_epoch(epoch)
    shares = [sampler.indices() for sampler in samplers]
    for step in range(STEPS):
        parts = [share[step * LOCAL_BATCH:(step + 1) * LOCAL_BATCH] for share in shares]
        yield data.batch(parts[rank]), [data.batch(part) for part in parts]


def whole(reference, parts):
    """The reference model's output on the global batch, and the global targets."""
    return reference(autograd.cat([p[0] for p in parts])), autograd.cat([p[1] for p in parts])


def close(a, b, what):
    difference = np.max(np.abs(np.asarray(a) - np.asarray(b)))
    assert difference < TOLERANCE, f"rank {rank}: {what} differs by {difference:.2e}"


def same_parameters(ddp, reference, what):
    for (name, p), (_, q) in zip(ddp.module.named_parameters(), reference.named_parameters()):
        close(p.numpy(), q.numpy(), f"{what}: parameter {name}")


criterion = nn.CrossEntropyLoss()
for make_optimizer, label in [(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9), "SGD momentum"),
                              (lambda ps: optim.Adam(ps, lr=0.01), "Adam")]:
    for bucket_cap_mb in (25, 0.0001):  # one bucket, and one per parameter
        ddp = DistributedDataParallel(model(), bucket_cap_mb=bucket_cap_mb)
        reference = reference_model()
        same_parameters(ddp, reference, f"{label}: broadcast at construction")
        opt, ref_opt = make_optimizer(ddp.parameters()), make_optimizer(reference.parameters())
        for epoch in range(2):
            for (x, y), parts in batches(epoch):
                opt.zero_grad()
                criterion(ddp(x), y).backward()
                opt.step()
                ref_opt.zero_grad()
                criterion(*whole(reference, parts)).backward()
                ref_opt.step()
        same_parameters(ddp, reference, f"{label}, buckets of {bucket_cap_mb} MB")

# SyncBatchNorm: the statistics of the whole batch, so again one process on the whole batch
ddp = DistributedDataParallel(nn.SyncBatchNorm.convert_sync_batchnorm(model(nn.BatchNorm1d)))
reference = reference_model(nn.BatchNorm1d)
opt, ref_opt = optim.SGD(ddp.parameters(), lr=0.1, momentum=0.9), optim.SGD(reference.parameters(), lr=0.1,
                                                                             momentum=0.9)
for (x, y), parts in batches():
    opt.zero_grad()
    criterion(ddp(x), y).backward()
    opt.step()
    ref_opt.zero_grad()
    criterion(*whole(reference, parts)).backward()
    ref_opt.step()
same_parameters(ddp, reference, "SyncBatchNorm")
for (name, b), (_, c) in zip(ddp.module.named_buffers(), reference.named_buffers()):
    close(b.numpy(), c.numpy(), f"SyncBatchNorm buffer {name}")

# plain BatchNorm: each rank normalises its own share; the reference normalises each share
# separately and averages the losses; rank 0's running statistics are broadcast at each forward
ddp = DistributedDataParallel(model(nn.BatchNorm1d))
reference = reference_model(nn.BatchNorm1d)
opt, ref_opt = optim.SGD(ddp.parameters(), lr=0.1), optim.SGD(reference.parameters(), lr=0.1)
for (x, y), parts in batches():
    opt.zero_grad()
    criterion(ddp(x), y).backward()
    opt.step()
    ref_opt.zero_grad()
    before = [b.numpy().copy() for b in reference.buffers()]
    losses, rank0_buffers = [], None
    for r, (xr, yr) in enumerate(parts):
        for b, saved in zip(reference.buffers(), before):
            b._data[...] = saved
        losses.append(criterion(reference(xr), yr))
        if r == 0:
            rank0_buffers = [b.numpy().copy() for b in reference.buffers()]
    for b, saved in zip(reference.buffers(), rank0_buffers):
        b._data[...] = saved
    (sum(losses[1:], losses[0]) / size).backward()
    ref_opt.step()
same_parameters(ddp, reference, "BatchNorm1d per rank")
if rank == 0:
    for (name, b), (_, c) in zip(ddp.module.named_buffers(), reference.named_buffers()):
        close(b.numpy(), c.numpy(), f"BatchNorm1d rank 0 buffer {name}")

# no_sync: two micro-batches accumulated, averaged once, equal plain accumulation on the whole micro-batches
ddp = DistributedDataParallel(model(), bucket_cap_mb=0.0001)
reference = reference_model()
opt, ref_opt = optim.SGD(ddp.parameters(), lr=0.1), optim.SGD(reference.parameters(), lr=0.1)
steps = list(batches())
for first, second in [steps[0:2], steps[2:4]]:
    opt.zero_grad()
    with ddp.no_sync():
        criterion(ddp(first[0][0]), first[0][1]).backward()
    local = [p.grad.numpy().copy() for p in ddp.parameters()]
    criterion(ddp(second[0][0]), second[0][1]).backward()
    opt.step()
    ref_opt.zero_grad()
    for _, parts in (first, second):
        criterion(*whole(reference, parts)).backward()
    ref_opt.step()
same_parameters(ddp, reference, "no_sync accumulation")
gathered = [autograd.zeros(*local[0].shape, dtype=autograd.float64) for _ in range(size)]
dist.all_gather(gathered, autograd.tensor(local[0]))
assert size == 1 or not np.allclose(gathered[0].numpy(), gathered[1].numpy()), "no_sync must not average"

# state_dict: PyTorch's "module." prefix; stripped, the plain module loads it
state = ddp.state_dict()
assert all(key.startswith("module.") for key in state), list(state)
consume_prefix_in_state_dict_if_present(state, "module.")
plain = reference_model(seed=5)
plain.load_state_dict(state)
same_parameters(ddp, plain, "state_dict round trip")
if len(sys.argv) > 1:  # a checkpoint written by rank 0 alone, complete for every rank after the call
    checkpoint = os.path.join(sys.argv[1], "checkpoint.npz")
    dist.save_on_rank0(ddp.module.state_dict(), checkpoint)
    plain = reference_model(seed=6)
    plain.load_state_dict(autograd.load(checkpoint))
    same_parameters(ddp, plain, "checkpoint written on rank 0")


# find_unused_parameters: a head that only rank 0 uses, and one that no rank uses
class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.body, self.used_by_rank0, self.unused = nn.Linear(5, 3), nn.Linear(3, 3), nn.Linear(3, 3)

    def forward(self, x):
        hidden = self.body(x)
        return self.used_by_rank0(hidden) if rank == 0 else hidden


autograd.manual_seed(3)
heads = TwoHeads().double()
ddp = DistributedDataParallel(heads, find_unused_parameters=True, bucket_cap_mb=0.0001)
(x, y), parts = next(batches())
criterion(ddp(x), y).backward()
assert heads.unused.weight.grad is None, "a parameter no rank used keeps grad None"
if size > 1:
    # rank 0's share of the used head's gradient, averaged with rank 1's zeros
    gathered = [autograd.zeros(3, 3, dtype=autograd.float64) for _ in range(size)]
    dist.all_gather(gathered, heads.used_by_rank0.weight.grad)
    close(gathered[0].numpy(), gathered[1].numpy(), "the used head's averaged gradient")
    autograd.manual_seed(3)
    alone = TwoHeads().double()
    criterion(alone.used_by_rank0(alone.body(parts[0][0])), parts[0][1]).backward()
    close(heads.used_by_rank0.weight.grad.numpy(), alone.used_by_rank0.weight.grad.numpy() / size,
          "the used head's gradient is rank 0's over the world size")


# a parameter that gets no gradient, without find_unused_parameters: the next forward says which
class Partly(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.idle = nn.Linear(5, 3), nn.Linear(5, 3)

    def forward(self, x):
        return self.used(x)


ddp = DistributedDataParallel(Partly().double())
criterion(ddp(x), y).backward()
try:
    ddp(x)
except RuntimeError as error:
    assert "Expected to have finished reduction" in str(error) and "idle.weight, idle.bias" in str(error), error
    assert "find_unused_parameters=True" in str(error)
else:
    raise AssertionError("a forward after an unfinished reduction must fail")
dist.destroy_process_group()
print(f"rank {rank}: equivalence OK")
