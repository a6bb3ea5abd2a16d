"""Data-parallel training over MPI: autograd.distributed, nn.parallel.DistributedDataParallel,
nn.SyncBatchNorm, DistributedSampler.

The multi-process checks run programs in tests/distributed_programs under ``mpiexec -n 2``
(each program asserts, and an assertion on any rank aborts the job with a non-zero exit).
They skip when the distributed extra (mpi4py, MPICH's mpiexec) is not installed.
"""

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import autograd
import autograd.distributed as dist
import nn
from autograd.distributed import process_group
from autograd.utils.data import DistributedSampler

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = Path(__file__).resolve().parent / "distributed_programs"


def _mpiexec():
    beside_python = Path(sys.executable).parent / "mpiexec"
    return str(beside_python) if beside_python.exists() else shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None or _mpiexec() is None,
                               reason="the distributed extra is not installed (pip install 'chainrule[distributed]')")


def run_mpi(arguments, processes=2, timeout=60):
    environment = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
                       MKL_NUM_THREADS="1")
    return subprocess.run([_mpiexec(), "-n", str(processes), sys.executable, *arguments], capture_output=True,
                          text=True, timeout=timeout, env=environment, cwd=ROOT)


def _passed(result, marker):
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count(marker) == 2, result.stdout


# -- several processes ----------------------------------------------------------------------------------


@needs_mpi
def test_every_collective_against_numpy():
    _passed(run_mpi([str(PROGRAMS / "collectives.py")]), "collectives OK")


@needs_mpi
def test_data_parallel_training_equals_one_process_on_the_whole_batch(tmp_path):
    """SGD with momentum and Adam; SyncBatchNorm; per-rank BatchNorm; no_sync; state_dict and a
    checkpoint written on rank 0; find_unused_parameters (see the program)."""
    _passed(run_mpi([str(PROGRAMS / "equivalence.py"), str(tmp_path)]), "equivalence OK")
    assert (tmp_path / "checkpoint.npz").exists()


@needs_mpi
def test_a_rank_that_raises_ends_the_job_with_its_error():
    started = time.monotonic()
    result = run_mpi([str(PROGRAMS / "failing_rank.py")], timeout=50)
    output = result.stdout + result.stderr
    assert time.monotonic() - started < 30, output  # rank 0's collective timeout is 60 s: only the abort ended it
    assert result.returncode != 0, output
    assert "rank 1 of 2 failed with ValueError: rank 1 found a bad batch" in result.stderr, output
    assert "unreachable" not in result.stdout


@needs_mpi
def test_a_collective_past_its_timeout_names_the_missing_rank():
    started = time.monotonic()
    result = run_mpi([str(PROGRAMS / "late_rank.py"), "1.0"], timeout=50)
    output = result.stdout + result.stderr
    assert time.monotonic() - started < 20, output  # rank 1 sleeps 30 s
    assert result.returncode != 0, output
    assert "DistBackendError: rank 0: all_reduce(SUM) of shape (3,)" in result.stderr, output
    assert re.search(r"timed out after \d+\.\d s \(init_process_group timeout 0:00:01\); rank\(s\) 1 never reached it",
                     result.stderr), result.stderr


@needs_mpi
def test_distributed_demo_trains_and_only_rank_0_prints(tmp_path):
    result = run_mpi(["-m", "chainrule", "demo", "--distributed", "--data", "moons", "--epochs", "6",
                      "--out", str(tmp_path)])
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("chainrule demo --distributed: 2 processes") == 1
    assert result.stdout.count("epoch   6/6") == 1
    accuracy = float(result.stdout.split("validation accuracy ")[-1].split("%")[0])
    assert accuracy >= 90.0
    saved = autograd.load(tmp_path / "model.npz")
    assert saved["state_dict"]["0.weight"].shape == (32, 2)  # the plain module's keys, without "module."
    assert f"{saved['validation_accuracy']:.1%}" == result.stdout.split("validation accuracy ")[-1].split()[0]


# -- one process ------------------------------------------------------------------------------------


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setattr(process_group._State, "MPI", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # import mpi4py now raises ImportError
    with pytest.raises(RuntimeError, match=r"pip install 'chainrule\[distributed\]'"):
        dist.init_process_group("mpi")
    assert not dist.is_initialized()


def test_distributed_demo_without_the_extra_says_what_to_install(monkeypatch, capsys):
    from chainrule import cli

    monkeypatch.setattr(process_group._State, "MPI", None)
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert cli.main(["demo", "--distributed", "--data", "moons"]) == 2
    assert "pip install 'chainrule[distributed]'" in capsys.readouterr().err


def test_missing_mpi_library_names_the_install_command(monkeypatch):
    import types

    fake = types.ModuleType("mpi4py")  # mpi4py without its compiled MPI module: as when libmpi cannot load
    fake.rc, fake.__path__ = types.SimpleNamespace(threads=True), []
    monkeypatch.setattr(process_group._State, "MPI", None)
    monkeypatch.setitem(sys.modules, "mpi4py", fake)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    with pytest.raises(RuntimeError, match=r"could not load an MPI library.*chainrule\[distributed\]"):
        dist.init_process_group("mpi")


def test_uninitialized_group_and_bad_arguments():
    assert not dist.is_initialized()
    with pytest.raises(ValueError, match="has not been initialized"):
        dist.get_rank()
    with pytest.raises(ValueError, match="has not been initialized"):
        dist.all_reduce(autograd.ones(2))
    with pytest.raises(ValueError, match="Invalid backend: 'nccl'"):
        dist.init_process_group("nccl")
    with pytest.raises(TypeError, match="timedelta"):
        dist.init_process_group("mpi", timeout=30)
    with pytest.raises(ValueError, match="has not been initialized"):
        nn.parallel.DistributedDataParallel(nn.Linear(2, 2))
    assert dist.is_available() is True  # (as PyTorch's: a job of one process needs no MPI)
    assert dist.is_mpi_available() == (importlib.util.find_spec("mpi4py") is not None)


@pytest.mark.parametrize("size, replicas, drop_last", [(10, 3, False), (10, 3, True), (9, 3, False), (2, 4, False),
                                                        (11, 4, True)])
def test_distributed_sampler_shares_as_pytorch(size, replicas, drop_last):
    data = list(range(size))
    shares = [DistributedSampler(data, num_replicas=replicas, rank=r, shuffle=False, drop_last=drop_last)
              for r in range(replicas)]
    # PyTorch's rule, written out: pad by repeating from the start, or cut the tail; then every replicas-th
    per_rank = (size - replicas) // replicas + (1 if (size - replicas) % replicas else 0) \
        if drop_last and size % replicas else -(-size // replicas)
    indices = (list(range(size)) * (per_rank * replicas // size + 1))[:per_rank * replicas]
    for r, sampler in enumerate(shares):
        assert len(sampler) == per_rank
        assert list(sampler) == indices[r::replicas]


def test_distributed_sampler_shuffles_by_seed_and_epoch():
    data = list(range(20))
    a, b = (DistributedSampler(data, num_replicas=2, rank=r, seed=3) for r in range(2))
    assert sorted(list(a) + list(b)) == data  # disjoint shares covering everything
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(list(a) + list(DistributedSampler(data, 2, 1, seed=3))) != data
    b.set_epoch(1)
    assert sorted(list(a) + list(b)) == data
    assert list(DistributedSampler(data, 2, 0, seed=3)) == first
    with pytest.raises(ValueError, match=r"Invalid rank 2, rank should be in the interval \[0, 1\]"):
        DistributedSampler(data, num_replicas=2, rank=2)
    with pytest.raises(ValueError, match="initialized process group"):  # as PyTorch's
        DistributedSampler(data)


def test_sync_batchnorm_alone_is_batchnorm(rng):
    x = rng.standard_normal((6, 3, 2))
    plain, synced = nn.BatchNorm1d(3).double(), nn.SyncBatchNorm(3).double()
    a, b = autograd.tensor(x, requires_grad=True), autograd.tensor(x, requires_grad=True)
    (plain(a) ** 3).sum().backward()
    (synced(b) ** 3).sum().backward()
    np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), atol=1e-12)
    np.testing.assert_allclose(synced.running_var.numpy(), plain.running_var.numpy(), atol=1e-12)
    with pytest.raises(ValueError, match="expected at least 2D input"):
        synced(autograd.ones(3))


def test_sync_batchnorm_normalisation_gradient_matches_finite_differences(rng):
    """The primitive with the statistics of its own input (one rank): its backward's two sums."""
    from nn.sync_batchnorm import SyncBatchNormalize, _global_moments

    def normalise(x):
        axes = (0, 2)
        mean, variance, count = _global_moments(x._data, axes)
        return SyncBatchNormalize.apply(x, mean=mean.reshape(1, -1, 1), count=count, axes=axes,
                                        invstd=(1 / np.sqrt(variance + 1e-5)).reshape(1, -1, 1))

    x = autograd.tensor(rng.standard_normal((4, 3, 2)), requires_grad=True)
    weights = autograd.tensor(rng.standard_normal((4, 3, 2)))
    assert autograd.gradcheck(lambda x: normalise(x) * weights, [x])


def test_convert_sync_batchnorm_keeps_weights_stats_and_mode():
    autograd.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Sequential(nn.BatchNorm2d(2)))
    model[1].running_mean._data[...] = 7.0
    model[2][0].eval()
    converted = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    assert converted is model
    assert type(model[1]) is nn.SyncBatchNorm and type(model[2][0]) is nn.SyncBatchNorm
    assert model[1].running_mean.tolist() == [7.0] * 4 and not model[2][0].training
    assert [name for name, _ in model.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias",
                                                              "2.0.weight", "2.0.bias"]
    assert type(nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(2))) is nn.SyncBatchNorm


def test_buckets_as_pytorch_assigns_them():
    """Reverse parameter order; a bucket closes once it holds the cap or more, the first at 1 MiB;
    one dtype per bucket."""
    from nn.parallel.reducer import Reducer

    def tensor(count, dtype=np.float32):
        return autograd.tensor(np.zeros(count, dtype=dtype), requires_grad=True)

    mib = 1024 * 1024
    params = [tensor(mib // 4), tensor(mib // 2), tensor(mib // 4), tensor(10), tensor(mib // 8), tensor(3, np.float64)]
    buckets = Reducer._make_buckets(list(reversed(params)), 2 * mib)
    position = {id(p): i for i, p in enumerate(params)}
    assert [[position[id(p)] for p in b.params] for b in buckets] == [[5], [4, 3, 2, 1], [0]]
    assert [b.buffer.dtype for b in buckets] == [np.float64, np.float32, np.float32]
    assert [b.offsets for b in buckets][1] == [0, mib // 8, mib // 8 + 10, mib // 8 + 10 + mib // 4]


@pytest.mark.torch
@pytest.mark.parametrize("size, replicas, drop_last", [(10, 3, False), (10, 3, True), (2, 4, False), (11, 4, True)])
def test_distributed_sampler_unshuffled_equals_pytorch(size, replicas, drop_last):
    from torch.utils.data.distributed import DistributedSampler as TorchSampler

    data = list(range(size))
    for r in range(replicas):
        ours = DistributedSampler(data, num_replicas=replicas, rank=r, shuffle=False, drop_last=drop_last)
        theirs = TorchSampler(data, num_replicas=replicas, rank=r, shuffle=False, drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)
