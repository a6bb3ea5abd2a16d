"""The fixes of probe 28 (distributed): init_process_group("gloo") as a job of one process with PyTorch's
rendezvous rules and errors, is_available(), reduce_scatter, the object collectives, and PyTorch's errors for
initializing twice and destroying no group."""

import datetime

import numpy as np
import pytest

import autograd
import autograd.distributed as dist
import nn
from autograd.distributed import process_group

TIMEOUT = datetime.timedelta(seconds=60)  # a stuck rendezvous fails the test instead of hanging it


@pytest.fixture
def alone(tmp_path):
    """A "gloo" job of this process alone, left again afterwards."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    yield
    if dist.is_initialized():
        dist.destroy_process_group()


def error_of(init, **kwargs):
    try:
        init("gloo", **kwargs)
    except Exception as error:  # noqa: BLE001  (the error is the result compared)
        return type(error).__name__, str(error)
    return None


RENDEZVOUS_CASES = [
    ({}, {}, "environment variable RANK expected, but not set"),
    ({}, {"rank": 0, "world_size": 1}, "environment variable MASTER_ADDR expected, but not set"),
    ({"MASTER_ADDR": "127.0.0.1"}, {"rank": 0, "world_size": 1}, "environment variable MASTER_PORT expected"),
    ({"RANK": "0"}, {}, "environment variable WORLD_SIZE expected, but not set"),
    ({}, {"init_method": "tcp://127.0.0.1:29512"}, "tcp:// rendezvous: rank parameter missing"),
    ({}, {"init_method": "tcp://127.0.0.1:29512", "rank": 0}, "tcp:// rendezvous: world size parameter missing"),
    ({}, {"init_method": "file:///tmp/probe28-never-made"}, "file:// rendezvous: rank parameter missing"),
]


@pytest.mark.parametrize("environment, kwargs, message", RENDEZVOUS_CASES)
def test_rendezvous_says_what_is_missing_as_pytorch(monkeypatch, environment, kwargs, message):
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    ours = error_of(dist.init_process_group, **kwargs)
    assert ours[0] == "ValueError" and ours[1].startswith("Error initializing torch.distributed using ")
    assert message in ours[1] and not dist.is_initialized()
    pytest.importorskip("torch")
    import torch.distributed

    assert ours == error_of(torch.distributed.init_process_group, **kwargs)


def test_every_way_to_name_a_job_of_one(tmp_path, monkeypatch):
    for name, value in (("RANK", "0"), ("WORLD_SIZE", "1"), ("MASTER_ADDR", "localhost"), ("MASTER_PORT", "29500")):
        monkeypatch.setenv(name, value)
    for kwargs in ({}, {"init_method": "env://"}, {"init_method": "tcp://127.0.0.1:23456?rank=0&world_size=1"},
                   {"init_method": f"file://{tmp_path}/s", "rank": 0, "world_size": 1},
                   {"store": object(), "rank": 0, "world_size": 1}):
        dist.init_process_group(backend="gloo", **kwargs)
        assert (dist.get_rank(), dist.get_world_size(), dist.get_backend()) == (0, 1, "gloo")
        dist.destroy_process_group()
    with pytest.raises(AssertionError, match="Cannot specify both init_method and store."):
        dist.init_process_group("gloo", init_method="env://", store=object(), rank=0, world_size=1)
    with pytest.raises(RuntimeError, match="No rendezvous handler for udp://"):
        dist.init_process_group("gloo", init_method="udp://x:1", rank=0, world_size=1)


def test_gloo_waits_for_the_others_and_checks_the_rank():
    import socket

    with socket.socket() as probe:  # (a port nothing listens on: rank 0 of 2 listens there, alone)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(dist.DistStoreError, match=r"waiting for clients. 1/2 clients joined"):  # (no rank 1 here)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=2,
                                timeout=datetime.timedelta(seconds=0.2))
    with pytest.raises(ValueError, match="rank=1 in a job of world_size 1"):
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29500", rank=1, world_size=1)
    assert not dist.is_initialized()
    assert dist.is_available() is True  # as PyTorch's: the package is there; MPI is asked for separately
    assert dist.is_gloo_available() is True  # (several processes meet through sockets: gloo.py)


def test_twice_and_destroying_nothing_raise_as_pytorch(alone):
    with pytest.raises(ValueError, match="trying to initialize the default process group twice!"):
        dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29500", rank=0, world_size=1)
    dist.destroy_process_group()
    assert process_group._State.MPI is None or process_group._State.MPI.__name__ == "mpi4py.MPI"
    with pytest.raises(AssertionError, match="Process group cannot be None"):
        dist.destroy_process_group()
    with pytest.raises(ValueError, match="has not been initialized"):
        dist.barrier()


def test_reduce_scatter_of_one_rank(alone):
    output = autograd.zeros(2, 2)
    dist.reduce_scatter(output, [autograd.tensor([[1.0, 2.0], [3.0, 4.0]])], op=dist.ReduceOp.MAX)
    assert output.tolist() == [[1.0, 2.0], [3.0, 4.0]]
    block = autograd.zeros(3, dtype=autograd.float64)
    work = dist.reduce_scatter_tensor(block, autograd.arange(3.0, dtype=autograd.float64), op=dist.ReduceOp.AVG,
                                      async_op=True)
    assert work.wait() and block.tolist() == [0.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="input_list has 2 tensors, the world size is 1"):
        dist.reduce_scatter(output, [output, output])
    with pytest.raises(ValueError, match=r"input of shape \(4,\) is not 1 outputs of shape \(3,\)"):
        dist.reduce_scatter_tensor(block, autograd.zeros(4))
    with pytest.raises(TypeError, match="ReduceOp.AVG needs a floating-point tensor"):
        dist.reduce_scatter_tensor(autograd.zeros(2, dtype=autograd.int64), autograd.ones(2, dtype=autograd.int64),
                                   op=dist.ReduceOp.AVG)


def test_object_collectives_copy_picklable_objects(alone):
    metrics = {"loss": np.float64(0.25), "names": ["a", "b"], "shape": (2, 3)}
    everyone = [None]
    dist.all_gather_object(everyone, metrics)
    assert everyone == [metrics] and everyone[0] is not metrics
    gathered = [None]
    dist.gather_object("done", gathered, dst=0)
    assert gathered == ["done"]
    with pytest.raises(ValueError, match="must give object_gather_list with 1 items, got None"):
        dist.gather_object("done", None, dst=0)
    settings = [{"lr": 0.1}, None, 3]
    dist.broadcast_object_list(settings, src=0)
    assert settings == [{"lr": 0.1}, None, 3]
    dist.broadcast_object_list([], src=0)


def test_sync_batchnorm_of_one_rank_is_batchnorm(alone):
    """Under a job of one process (PyTorch's SyncBatchNorm refuses CPU inputs in training; ours normalises them)."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 2))
    autograd.manual_seed(0)
    plain = nn.BatchNorm1d(3).double()
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(3).double())
    a, b = autograd.tensor(x, requires_grad=True), autograd.tensor(x, requires_grad=True)
    (plain(a) ** 3).sum().backward()
    (synced(b) ** 3).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(synced.running_var.numpy(), plain.running_var.numpy(), atol=1e-12)
    centred = x - x.mean((0, 2), keepdims=True)
    np.testing.assert_allclose(plain.running_var.numpy(), 0.9 + 0.1 * (centred ** 2).sum((0, 2)) / 9, atol=1e-12)


def test_all_to_all_groups_and_local_rank(alone, monkeypatch):
    output = autograd.zeros(4)
    dist.all_to_all_single(output, autograd.arange(4.0))
    assert output.tolist() == [0.0, 1.0, 2.0, 3.0]
    outputs = [autograd.zeros(2, dtype=autograd.int64)]
    dist.all_to_all(outputs, [autograd.tensor([7, 8])])
    assert outputs[0].tolist() == [7, 8]
    with pytest.raises(NotImplementedError, match="only equal splits"):
        dist.all_to_all_single(output, autograd.arange(4.0), [1, 3], [1, 3])
    world = dist.new_group()
    assert world is dist.group.WORLD is dist.GroupMember.WORLD and dist.new_group([0]) is world
    assert dist.get_world_size(world) == 1 and dist.get_global_rank(world, 0) == 0 == dist.get_group_rank(world, 0)
    with pytest.raises(NotImplementedError, match=r"only the group of every rank \(0 to 0\)"):
        dist.new_group([0, 1])
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert dist.get_node_local_rank(fallback_rank=0) == 0
    with pytest.raises(RuntimeError, match="LOCAL_RANK is not in the environment"):
        dist.get_node_local_rank()
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert dist.get_node_local_rank(fallback_rank=0) == 3


def test_consume_prefix_of_nn_parallel_is_nn_modules_utils():
    """(nn.parallel had its own copy, which kept the keys' order and left _metadata's prefixes.)"""
    from nn.modules.utils import consume_prefix_in_state_dict_if_present

    assert nn.parallel.consume_prefix_in_state_dict_if_present is consume_prefix_in_state_dict_if_present
    state = nn.DataParallel(nn.Sequential(nn.Linear(2, 2))).state_dict()
    state["extra"] = 1
    state.move_to_end("extra", last=False)
    nn.parallel.consume_prefix_in_state_dict_if_present(state, "module.")
    assert list(state) == ["extra", "0.weight", "0.bias"] and sorted(state._metadata) == ["", "0"]


def test_new_collectives_over_mpi_ranks():
    """Under mpiexec -n 2 and -n 3 where the distributed extra is installed (tests/distributed_programs)."""
    import importlib.util
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(beside) if beside.exists() else shutil.which("mpiexec")
    if importlib.util.find_spec("mpi4py") is None or mpiexec is None:
        pytest.skip("the distributed extra (mpi4py, mpiexec) is not installed")
    program = Path(__file__).resolve().parent / "distributed_programs" / "probe28_collectives.py"
    root = str(Path(__file__).resolve().parent.parent)
    for processes in (2, 3):
        result = subprocess.run([mpiexec, "-n", str(processes), sys.executable, str(program)], capture_output=True,
                                text=True, timeout=60, cwd=root, env={**os.environ, "PYTHONPATH": root})
        assert result.returncode == 0 and "new collectives OK" in result.stdout, result.stderr[-2000:]


def differentiable_collectives(torch, dnn, world):
    """(``group`` given: torch.distributed.nn's default is the WORLD of when it was first imported.)"""
    x = torch.tensor([1.0, -2.0], requires_grad=True)
    gathered = dnn.all_gather(x * 3, group=world)
    (torch.cat(gathered) * torch.tensor([2.0, 5.0])).sum().backward()
    y = torch.tensor([0.5, 4.0], requires_grad=True)
    total = dnn.all_reduce(y, group=world)
    (total ** 2).sum().backward()
    z = torch.tensor([7.0], requires_grad=True)
    shared = dnn.broadcast(z, src=0, group=world)
    (shared * -1).sum().backward()
    return (len(gathered), gathered[0].tolist(), x.grad.tolist(), total.tolist(), y.grad.tolist(), shared.tolist(),
            z.grad.tolist(), total.data_ptr() != y.data_ptr())


def test_differentiable_collectives_of_one_rank(alone, tmp_path):
    import autograd.distributed.nn

    ours = differentiable_collectives(autograd, autograd.distributed.nn, dist.group.WORLD)
    assert ours == (1, [3.0, -6.0], [6.0, 15.0], [0.5, 4.0], [1.0, 8.0], [7.0], [-1.0], True)
    assert dist.is_torchelastic_launched() is False
    pytest.importorskip("torch")
    import torch
    import torch.distributed.nn

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'theirs'}", rank=0, world_size=1,
                                         timeout=TIMEOUT)
    try:
        with pytest.warns(FutureWarning):
            assert ours == differentiable_collectives(torch, torch.distributed.nn, torch.distributed.group.WORLD)
    finally:
        torch.distributed.destroy_process_group()


def test_backend_names_and_monitored_barrier(alone):
    import datetime

    assert dist.Backend("GLOO") == "gloo" == dist.Backend.GLOO and type(dist.Backend("Mpi")) is str
    assert dist.get_backend() == dist.Backend.GLOO and dist.Backend("custom") == "custom"
    with pytest.raises(ValueError, match="Backend constructor parameter must be string-ish"):
        dist.Backend(3)
    assert dist.monitored_barrier(timeout=datetime.timedelta(seconds=5)) is None
    pytest.importorskip("torch")
    import torch.distributed

    assert [getattr(torch.distributed.Backend, name) for name in ("GLOO", "NCCL", "MPI", "UCC", "UNDEFINED")] == \
        [getattr(dist.Backend, name) for name in ("GLOO", "NCCL", "MPI", "UCC", "UNDEFINED")]


def test_no_backend_is_gloo_alone_and_mpi_under_mpiexec(tmp_path, monkeypatch):
    """PyTorch's default backend on the CPU is gloo; in a job mpiexec started, it is MPI."""
    monkeypatch.delenv("PMI_SIZE", raising=False)
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    dist.init_process_group(init_method=f"file://{tmp_path / 'ours'}", rank=0, world_size=1)
    try:
        assert dist.get_backend() == "gloo"
    finally:
        dist.destroy_process_group()
    monkeypatch.setenv("PMI_SIZE", "1")
    monkeypatch.setattr(process_group._State, "MPI", None)
    monkeypatch.setitem(__import__("sys").modules, "mpi4py", None)  # (no mpi4py: MPI's error says what to install)
    with pytest.raises(RuntimeError, match=r"pip install 'chainrule\[distributed\]'"):
        dist.init_process_group(init_method="env://")
    assert not dist.is_initialized()
    torch = pytest.importorskip("torch")
    import torch.distributed  # noqa: F811

    torch.distributed.init_process_group(init_method=f"file://{tmp_path / 'theirs'}", rank=0, world_size=1,
                                         timeout=TIMEOUT)
    try:  # (PyTorch's get_backend() answers "undefined" here: a gloo group for the CPU, no name chosen)
        assert torch.distributed.get_world_size() == 1 and torch.distributed.get_backend() in ("gloo", "undefined")
    finally:
        torch.distributed.destroy_process_group()


def ddp_without_trainable_parameters(torch, nn):
    errors = []
    frozen = nn.Linear(2, 2).requires_grad_(False)
    for module in (nn.ReLU(), frozen):
        try:
            nn.parallel.DistributedDataParallel(module)
        except RuntimeError as error:
            errors.append(str(error))
    model = nn.parallel.DistributedDataParallel(nn.Linear(2, 1))
    with model.join():
        model(torch.ones(1, 2)).sum().backward()
    return errors, model.module.weight.grad.tolist()


def test_ddp_needs_a_trainable_parameter_and_joins_alone(alone, tmp_path):
    ours = ddp_without_trainable_parameters(autograd, nn)
    assert ours == (["DistributedDataParallel is not needed when a module doesn't have any parameter that requires "
                     "a gradient."] * 2, [[1.0, 1.0]])
    pytest.importorskip("torch")
    import torch
    import torch.distributed

    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'theirs'}", rank=0, world_size=1,
                                         timeout=TIMEOUT)
    try:
        assert ours == ddp_without_trainable_parameters(torch, torch.nn)
    finally:
        torch.distributed.destroy_process_group()
