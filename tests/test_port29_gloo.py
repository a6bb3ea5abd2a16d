"""The "gloo" backend of several processes (autograd/distributed/gloo.py): PyTorch's DDP tutorial through
autograd.multiprocessing.spawn, a torchrun-style launch, every collective against NumPy by hand, and the
errors (rendezvous timeout, collective timeout, a rank that died). Every process started here runs under a
deadline (``_join`` terminates what is left), so nothing can hang CI."""

import datetime
import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import numpy
import pytest

import autograd
import autograd.distributed as dist
import autograd.multiprocessing as mp
import nn
import optim

DEADLINE = 60.0  # seconds any group of processes here may run (each normally takes a few)


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _join(context):
    """Wait for spawned processes, terminating them past DEADLINE (then the test fails)."""
    deadline = time.monotonic() + DEADLINE
    while not context.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"spawned processes still running after {DEADLINE} s")


def _spawn(fn, args, nprocs):
    _join(mp.spawn(fn, args=args, nprocs=nprocs, join=False))


def _init(rank, world_size, port, seconds=20):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world_size, timeout=datetime.timedelta(seconds=seconds))


# -- PyTorch's DDP tutorial ----------------------------------------------------------------------------


def _toy_model():
    return nn.Sequential(nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 5))


def _rank_batch(rank):
    generator = numpy.random.default_rng(rank)
    return generator.standard_normal((20, 10)).astype("float32"), generator.standard_normal((20, 5)).astype("float32")


def _ddp_tutorial(rank, world_size, port, out):
    _init(rank, world_size, port)
    autograd.manual_seed(0)  # (every rank builds the same model; DDP broadcasts rank 0's anyway)
    if rank:
        autograd.manual_seed(rank)
    ddp_model = nn.parallel.DistributedDataParallel(_toy_model())
    loss_fn = nn.MSELoss()
    optimizer = optim.SGD(ddp_model.parameters(), lr=0.001)
    optimizer.zero_grad()
    inputs, labels = _rank_batch(rank)
    outputs = ddp_model(autograd.tensor(inputs))
    loss_fn(outputs, autograd.tensor(labels)).backward()
    optimizer.step()
    numpy.savez(f"{out}/rank{rank}.npz", *[p.detach().numpy() for p in ddp_model.parameters()])
    dist.destroy_process_group()


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_tutorial_spawned(tmp_path, world_size):
    _spawn(_ddp_tutorial, (world_size, _free_port(), str(tmp_path)), world_size)
    autograd.manual_seed(0)
    model = _toy_model()  # the step by hand: every rank's gradient, averaged, then SGD
    gradients = []
    for rank in range(world_size):
        model.zero_grad()
        inputs, labels = _rank_batch(rank)
        nn.MSELoss()(model(autograd.tensor(inputs)), autograd.tensor(labels)).backward()
        gradients.append([p.grad.numpy().copy() for p in model.parameters()])
    expected = [p.detach().numpy() - 0.001 * numpy.mean([g[i] for g in gradients], axis=0)
                for i, p in enumerate(model.parameters())]
    for rank in range(world_size):
        saved = numpy.load(tmp_path / f"rank{rank}.npz")
        for i, want in enumerate(expected):
            numpy.testing.assert_allclose(saved[f"arr_{i}"], want, rtol=1e-5, atol=1e-6)


# -- every collective against NumPy -------------------------------------------------------------------


def _rank_values(rank, dtype="float64"):
    return (numpy.arange(6).reshape(2, 3) * (rank + 1) + rank).astype(dtype)


def _collectives(rank, world_size, port, out):
    _init(rank, world_size, port)
    everyone = [_rank_values(r) for r in range(world_size)]
    results = {}
    ops = {"SUM": numpy.sum, "PRODUCT": numpy.prod, "MIN": numpy.min, "MAX": numpy.max, "AVG": numpy.mean}
    for name, by_hand in ops.items():
        t = autograd.tensor(_rank_values(rank))
        dist.all_reduce(t, op=getattr(dist.ReduceOp, name))
        results[f"all_reduce {name}"] = (t.numpy(), by_hand(everyone, axis=0))
    for name, by_hand in (("BAND", numpy.bitwise_and), ("BOR", numpy.bitwise_or), ("BXOR", numpy.bitwise_xor)):
        t = autograd.tensor(_rank_values(rank, "int64"))
        work = dist.all_reduce(t, op=getattr(dist.ReduceOp, name), async_op=True)
        work.wait()
        results[f"all_reduce {name}"] = (t.numpy(), by_hand.reduce([e.astype("int64") for e in everyone]))
    t = autograd.tensor(_rank_values(rank, "int8") * 50)  # (int8 wraps, as PyTorch's)
    dist.all_reduce(t)
    results["all_reduce int8"] = (t.numpy(), numpy.sum([e.astype("int8") * 50 for e in everyone], axis=0,
                                                       dtype="int8"))
    t = autograd.tensor(_rank_values(rank))
    dist.reduce(t, dst=1, op=dist.ReduceOp.MAX)
    results["reduce"] = (t.numpy(), numpy.max(everyone, axis=0) if rank == 1 else everyone[rank])
    t = autograd.tensor(_rank_values(rank)).t()  # (not contiguous)
    dist.broadcast(t, src=world_size - 1)
    results["broadcast"] = (t.numpy(), everyone[-1].T)
    gathered = [autograd.zeros(2, 3, dtype=autograd.float64) for _ in range(world_size)]
    dist.all_gather(gathered, autograd.tensor(_rank_values(rank)))
    results["all_gather"] = (numpy.stack([g.numpy() for g in gathered]), numpy.stack(everyone))
    into = autograd.zeros(2 * world_size, 3, dtype=autograd.float64)
    dist.all_gather_into_tensor(into, autograd.tensor(_rank_values(rank)))
    results["all_gather_into_tensor"] = (into.numpy(), numpy.concatenate(everyone))
    gather_list = [autograd.zeros(2, 3, dtype=autograd.float64) for _ in range(world_size)] if rank == 0 else None
    dist.gather(autograd.tensor(_rank_values(rank)), gather_list, dst=0)
    if rank == 0:
        results["gather"] = (numpy.stack([g.numpy() for g in gather_list]), numpy.stack(everyone))
    t = autograd.zeros(2, 3, dtype=autograd.float64)
    dist.scatter(t, [autograd.tensor(e * 7) for e in everyone] if rank == 1 else None, src=1)
    results["scatter"] = (t.numpy(), everyone[rank] * 7)
    t = autograd.zeros(2, 3, dtype=autograd.float64)
    dist.reduce_scatter(t, [autograd.tensor(_rank_values(rank) + i) for i in range(world_size)])
    results["reduce_scatter"] = (t.numpy(), numpy.sum([e + rank for e in everyone], axis=0))
    t = autograd.zeros(2, dtype=autograd.float64)
    dist.reduce_scatter_tensor(t, autograd.tensor(numpy.arange(2.0 * world_size) * (rank + 1)))
    total = sum(numpy.arange(2.0 * world_size) * (r + 1) for r in range(world_size))
    results["reduce_scatter_tensor"] = (t.numpy(), total[2 * rank:2 * rank + 2])
    t = autograd.zeros(world_size, 2, dtype=autograd.float64)  # block j of rank i: 100 i + j
    dist.all_to_all_single(t, autograd.tensor([[100.0 * rank + j] * 2 for j in range(world_size)]))
    results["all_to_all_single"] = (t.numpy(), numpy.array([[100.0 * i + rank] * 2 for i in range(world_size)]))
    outputs = [autograd.zeros(3) for _ in range(world_size)]
    dist.all_to_all(outputs, [autograd.full((3,), 10.0 * rank + j) for j in range(world_size)])
    results["all_to_all"] = (numpy.stack([o.numpy() for o in outputs]),
                             numpy.array([[10.0 * i + rank] * 3 for i in range(world_size)], dtype="float32"))
    objects = [None] * world_size
    dist.all_gather_object(objects, {"rank": rank, "name": f"r{rank}"})
    results["all_gather_object"] = (numpy.array([o["rank"] for o in objects]), numpy.arange(world_size))
    listed = [f"from {rank}", rank] if rank == 2 else [None, None]
    dist.broadcast_object_list(listed, src=2)
    results["broadcast_object_list"] = (numpy.array([listed[1]]), numpy.array([2]))
    dist.barrier()
    dist.monitored_barrier()
    dist.destroy_process_group()
    failures = [name for name, (got, want) in results.items()
                if got.dtype != numpy.asarray(want).dtype or not numpy.allclose(got, want)]
    with open(f"{out}/rank{rank}.json", "w") as file:
        json.dump({"checked": sorted(results), "failures": failures}, file)


def test_every_collective_against_numpy(tmp_path):
    _spawn(_collectives, (3, _free_port(), str(tmp_path)), 3)
    for rank in range(3):
        report = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert report["failures"] == [] and len(report["checked"]) == 20 + (rank == 0)


# -- torchrun style: the environment says who each process is -------------------------------------------

TORCHRUN_SCRIPT = textwrap.dedent("""
    import os, sys
    import autograd, autograd.distributed as dist
    from autograd.utils.data import DistributedSampler
    dist.init_process_group(backend="gloo")          # env://: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    rank, world = dist.get_rank(), dist.get_world_size()
    assert rank == int(os.environ["RANK"]) and dist.get_node_local_rank() == rank and dist.is_initialized()
    t = autograd.tensor([float(rank + 1)] * 3)
    dist.all_reduce(t)
    sampler = DistributedSampler(list(range(10)), shuffle=False)
    print(rank, world, t.tolist(), list(sampler), flush=True)
    dist.destroy_process_group()
""")


def test_torchrun_style_launch():
    port = _free_port()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    processes = []
    for rank in range(2):
        environment = dict(os.environ, RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                           MASTER_PORT=str(port), PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
        processes.append(subprocess.Popen([sys.executable, "-c", TORCHRUN_SCRIPT], env=environment,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for process in processes:
            out, err = process.communicate(timeout=DEADLINE)
            assert process.returncode == 0, err
            outputs.append(out.split(None, 2))
    finally:
        for process in processes:
            process.kill()
    assert outputs == [["0", "2", "[3.0, 3.0, 3.0] [0, 2, 4, 6, 8]\n"], ["1", "2", "[3.0, 3.0, 3.0] [1, 3, 5, 7, 9]\n"]]


# -- errors ------------------------------------------------------------------------------------------------


def test_rendezvous_times_out_as_pytorch():
    """Rank 0 waits for the others no longer than init_process_group's timeout (PyTorch: DistStoreError,
    "Timed out after 2 seconds waiting for clients. 1/2 clients joined.")."""
    started = time.monotonic()
    with pytest.raises(dist.DistStoreError, match=r"waiting for clients. 1/2 clients joined"):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=2,
                                timeout=datetime.timedelta(seconds=0.5))
    assert time.monotonic() - started < 3 and not dist.is_initialized()
    with pytest.raises(dist.DistStoreError, match="timed out after 0 seconds trying to connect"):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=1, world_size=2,
                                timeout=datetime.timedelta(seconds=0.3))
    assert issubclass(dist.DistStoreError, RuntimeError) and dist.is_gloo_available()
    with pytest.raises(ValueError, match="rank=2 is not a rank of world_size 2"):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=2, world_size=2)


def _faulty(rank, world_size, port, out, fault):
    _init(rank, world_size, port, seconds=1 if fault == "late" else 20)
    if rank == 1:
        if fault == "late":
            time.sleep(2.5)  # (past the others' timeout)
        os._exit(0)  # dies without a word: its sockets close with the process
    try:
        dist.all_reduce(autograd.ones(3))
        message = "no error"
    except dist.DistBackendError as error:
        message = str(error)
    with open(f"{out}/rank{rank}.txt", "w") as file:
        file.write(message)


@pytest.mark.parametrize("fault", ["died", "late"])
def test_a_rank_that_dies_or_is_late_raises_on_the_others(tmp_path, fault):
    _spawn(_faulty, (3, _free_port(), str(tmp_path), fault), 3)
    messages = [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 2)]
    if fault == "died":  # rank 0 lost rank 1; rank 2 then lost rank 0, which gave up
        assert "rank 0: gloo lost its connection to rank 1" in messages[0]
        assert "rank 2: gloo lost its connection to rank 0" in messages[1]
    else:  # (rank 2 times out too, or first sees rank 0 give up)
        assert "rank 0: gloo timed out after 1.0 s waiting for rank 1 (init_process_group timeout)" in messages[0]
        assert messages[1].startswith("rank 2: gloo ") and "rank 0" in messages[1]


def test_store_of_several_processes_is_refused():
    with pytest.raises(NotImplementedError, match="store="):
        dist.init_process_group("gloo", store=object(), rank=0, world_size=2)


# -- SyncBatchNorm: the statistics of every rank's batch ----------------------------------------------------


def _sync_batchnorm(rank, world_size, port, out):
    _init(rank, world_size, port)
    norm = nn.SyncBatchNorm(3)
    x = autograd.tensor(_rank_batch(rank)[0][:4, :6].reshape(4, 3, 2), requires_grad=True)
    y = norm(x)
    (y * y.detach() ** 2).sum().backward()
    numpy.savez(f"{out}/rank{rank}.npz", y=y.detach().numpy(), grad=x.grad.numpy(), mean=norm.running_mean.numpy())
    dist.destroy_process_group()


def test_sync_batchnorm_over_two_processes_is_batchnorm_of_their_whole_batch(tmp_path):
    _spawn(_sync_batchnorm, (2, _free_port(), str(tmp_path)), 2)
    x = autograd.tensor(numpy.concatenate([_rank_batch(r)[0][:4, :6].reshape(4, 3, 2) for r in range(2)]),
                        requires_grad=True)
    norm = nn.BatchNorm1d(3)
    y = norm(x)
    (y * y.detach() ** 2).sum().backward()
    for rank in range(2):
        saved = numpy.load(tmp_path / f"rank{rank}.npz")
        numpy.testing.assert_allclose(saved["y"], y.detach().numpy()[4 * rank:4 * rank + 4], atol=1e-5)
        numpy.testing.assert_allclose(saved["grad"], x.grad.numpy()[4 * rank:4 * rank + 4], atol=1e-5)
        numpy.testing.assert_allclose(saved["mean"], norm.running_mean.numpy(), atol=1e-6)


def _file_rendezvous(rank, world_size, path, out):
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=world_size,
                            timeout=datetime.timedelta(seconds=20))
    t = autograd.tensor([rank + 1, 10 * rank], dtype=autograd.int32)
    dist.all_reduce(t, op=dist.ReduceOp.PRODUCT)
    with open(f"{out}/rank{rank}.txt", "w") as file:
        file.write(f"{t.tolist()} {t.dtype}")
    dist.destroy_process_group()


def test_file_rendezvous_of_two_processes(tmp_path):
    _spawn(_file_rendezvous, (2, str(tmp_path / "store"), str(tmp_path)), 2)
    assert [(tmp_path / f"rank{r}.txt").read_text() for r in range(2)] == ["[2, 0] int32"] * 2
