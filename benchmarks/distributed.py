"""Data-parallel training over MPI: 2 ranks against 1 process, one BLAS thread each.

A compute-bound MLP (1024-1024-1024-1024-10, ReLU, float32, 3.2 M parameters, 12.6 MB of
gradients), a global batch of 1024 split across the ranks, SGD. Reported:

  * time per step: 1 process on the whole batch; N ranks with DistributedDataParallel
    (gradients all-reduced in buckets during backward), and the speedup;
  * communication: one all-reduce of all the gradients alone (what a step must move);
  * overlap: the step with no communication at all (no_sync), with DDP's bucketed
    all-reduces, and with one blocking all-reduce after backward. Exposed communication
    is each minus the no-communication step; "hidden" is the share of the all-reduce time
    that the buckets tuck under backward.

    python benchmarks/distributed.py [bucket_cap_mb]    # launches mpiexec -n 2 itself

All variants run in one job, one step each per round, interleaved, so that the load of a
shared machine falls on all of them alike; the 1-process baseline is rank 0 alone on the
whole batch while the other rank waits.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
WIDTH, DEPTH, CLASSES, GLOBAL_BATCH = 1024, 3, 10, 1024
ONE_THREAD = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                                     "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")}


def worker(rounds, bucket_cap_mb):
    sys.path.insert(0, str(ROOT))
    import autograd
    import autograd.distributed as dist
    import nn
    import optim

    dist.init_process_group("mpi")
    rank, size = dist.get_rank(), dist.get_world_size()
    autograd.manual_seed(0)
    layers = [layer for _ in range(DEPTH) for layer in (nn.Linear(WIDTH, WIDTH), nn.ReLU())]
    model = nn.Sequential(*layers, nn.Linear(WIDTH, CLASSES))
    generator = np.random.default_rng(rank)
    local = GLOBAL_BATCH // size
    x = autograd.tensor(generator.standard_normal((local, WIDTH)).astype(np.float32))
    y = autograd.tensor(generator.integers(0, CLASSES, local))
    criterion = nn.CrossEntropyLoss()
    ddp = nn.parallel.DistributedDataParallel(model, bucket_cap_mb=bucket_cap_mb)
    optimizer = optim.SGD(ddp.parameters(), lr=1e-3)
    parameters = list(model.parameters())
    flat = autograd.zeros(sum(p.numel() for p in parameters))

    whole_x = autograd.tensor(generator.standard_normal((GLOBAL_BATCH, WIDTH)).astype(np.float32))
    whole_y = autograd.tensor(generator.integers(0, CLASSES, GLOBAL_BATCH))

    def one_process():
        """Rank 0 alone on the whole batch (the others idle at the next barrier): the baseline,
        measured in the same rounds as the rest."""
        if rank == 0:
            optimizer.zero_grad()
            criterion(model(whole_x), whole_y).backward()
            optimizer.step()

    def no_communication():
        optimizer.zero_grad()
        with ddp.no_sync():
            criterion(ddp(x), y).backward()
        optimizer.step()

    def bucketed():
        optimizer.zero_grad()
        criterion(ddp(x), y).backward()
        optimizer.step()

    spent = {"communication": 0.0}

    def after_backward():
        optimizer.zero_grad()
        with ddp.no_sync():
            criterion(ddp(x), y).backward()
        started = time.perf_counter()
        offset = 0
        for p in parameters:
            flat._data[offset:offset + p.numel()] = p.grad._data.reshape(-1)
            offset += p.numel()
        dist.all_reduce(flat)
        offset = 0
        for p in parameters:
            p.grad._data[...] = flat._data[offset:offset + p.numel()].reshape(p.shape) / size
            offset += p.numel()
        spent["communication"] = time.perf_counter() - started
        optimizer.step()

    def communication():
        started = time.perf_counter()
        dist.all_reduce(flat)
        spent["communication"] = time.perf_counter() - started

    def bucketed_timed():
        bucketed()
        spent["communication"] = sum(ddp.reducer.seconds.values())

    variants = {
        "one process": one_process, "no communication": no_communication, "bucketed (DDP)": bucketed_timed,
        "one all-reduce after backward": after_backward, "all-reduce of the gradients alone": communication}
    # rounds of one step of each variant, interleaved so that the shared machine's load falls on all
    # alike; per round the slowest rank's time; per variant the fastest round
    for step in variants.values():
        step()
    times = np.zeros((rounds, len(variants), 2))
    for r in range(rounds):
        for v, step in enumerate(variants.values()):
            spent["communication"] = 0.0
            dist.barrier()
            started = time.perf_counter()
            step()
            times[r, v] = time.perf_counter() - started, spent["communication"]
    slowest = autograd.tensor(times)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    fastest = slowest.numpy()[np.argmin(slowest.numpy()[:, :, 0], axis=0), np.arange(len(variants))]
    result = {name: {"step": float(step), "communication": float(comm)}
              for name, (step, comm) in zip(variants, fastest)}
    result["buckets"] = [len(b.params) for b in ddp.reducer.buckets]
    result["bytes"] = int(flat._data.nbytes)
    if rank == 0:
        print("RESULT " + json.dumps(result))
    dist.destroy_process_group()


def launch(processes, rounds, bucket_cap_mb):
    command = ["mpiexec", "-n", str(processes), sys.executable, __file__, "--worker", str(rounds), str(bucket_cap_mb)]
    mpiexec = Path(sys.executable).parent / "mpiexec"
    if mpiexec.exists():
        command[0] = str(mpiexec)
    done = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, **ONE_THREAD), check=True)
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def report(processes=2, rounds=16, bucket_cap_mb=25):
    many = launch(processes, rounds, bucket_cap_mb)
    base = many["one process"]["step"]
    compute = many["no communication"]["step"]
    bucketed, after = many["bucketed (DDP)"], many["one all-reduce after backward"]
    alone = many["all-reduce of the gradients alone"]["communication"]
    exposed = {name: max(many[name]["step"] - compute, 0.0)
               for name in ("bucketed (DDP)", "one all-reduce after backward")}
    after_exposed = exposed["one all-reduce after backward"]
    hidden = 1 - exposed["bucketed (DDP)"] / after_exposed if after_exposed > 0 else float("nan")
    return "\n".join([
        f"data-parallel MLP {WIDTH}x{DEPTH}+{CLASSES}, float32, {many['bytes'] / 1e6:.1f} MB of gradients, "
        f"global batch {GLOBAL_BATCH}, 1 BLAS thread per process, bucket_cap_mb={bucket_cap_mb:g} "
        f"(buckets of {many['buckets']} parameters); fastest of {rounds} interleaved rounds",
        f"    1 process, whole batch                  {base * 1e3:7.1f} ms/step",
        f"    {processes} ranks, no communication (no_sync)     {compute * 1e3:7.1f} ms/step   "
        f"(ideal speedup {base / compute:.2f}x)",
        f"    {processes} ranks, DDP bucketed all-reduces       {bucketed['step'] * 1e3:7.1f} ms/step   "
        f"speedup {base / bucketed['step']:.2f}x; {bucketed['communication'] * 1e3:.1f} ms in DDP's hooks and waits",
        f"    {processes} ranks, one all-reduce after backward  {after['step'] * 1e3:7.1f} ms/step   "
        f"speedup {base / after['step']:.2f}x; {after['communication'] * 1e3:.1f} ms in the all-reduce",
        f"    all-reduce of all the gradients alone   {alone * 1e3:7.1f} ms ({many['bytes'] / alone / 1e9:.2f} GB/s "
        f"algorithm bandwidth)",
        f"    communication exposed (step - no_sync step): bucketed {exposed['bucketed (DDP)'] * 1e3:.1f} ms, "
        f"after backward {after_exposed * 1e3:.1f} ms: the buckets hide {hidden:.0%} of it",
    ])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(int(sys.argv[2]), float(sys.argv[3]))
    else:
        cap = float(sys.argv[1]) if len(sys.argv) > 1 else 25
        print(report(bucket_cap_mb=cap))
