"""Shared memory and autograd.multiprocessing, as torch.multiprocessing: share_memory_ moves a tensor's
values into memory other processes map; forked and spawned processes, and tensors sent through a Queue,
write the parent's numbers in place (Hogwild training); spawn reports a process's failure."""

import pickle
import sys
import warnings

import numpy as np
import pytest

import autograd
import autograd.multiprocessing as mp
import nn
import optim
from tests import multiprocessing_workers as workers
from tests.pytorch_programs import pytorch

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="shared memory by file descriptors: POSIX")


# -- share_memory_ in one process ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [autograd.float32, autograd.float64, autograd.int64, autograd.bool,
                                   autograd.complex64, autograd.float16])
def test_share_memory_keeps_values_dtype_and_shape(dtype):
    x = (autograd.arange(12).reshape(3, 4) % 3).to(dtype)
    expected = x.numpy().copy()
    assert not x.is_shared()
    assert x.share_memory_() is x
    assert x.is_shared() and x.dtype == dtype and x.shape == (3, 4) and x.stride() == (4, 1)
    np.testing.assert_array_equal(x.numpy(), expected)


def test_share_memory_of_a_transpose_keeps_its_strides_and_an_empty_or_0d_tensor_moves_too():
    t = autograd.arange(6.0).reshape(2, 3).t()
    t.share_memory_()
    assert t.is_shared() and t.stride() == (1, 3)
    np.testing.assert_array_equal(t.numpy(), [[0, 3], [1, 4], [2, 5]])
    for x in (autograd.zeros(0), autograd.tensor(2.5)):
        assert x.share_memory_().is_shared()
    assert autograd.tensor(2.5).share_memory_().item() == 2.5


def test_without_memfd_a_temporary_file_holds_the_memory(monkeypatch):
    import os

    def refuse(*args):
        raise PermissionError("memfd_create refused by the sandbox")

    monkeypatch.setattr(os, "memfd_create", refuse, raising=False)
    x = autograd.arange(4.0).share_memory_()
    assert x.is_shared() and x.tolist() == [0.0, 1.0, 2.0, 3.0]
    process = mp.get_context("fork").Process(target=workers.fill_row, args=(2, x))
    process.start()
    process.join()
    assert x.tolist() == [0.0, 1.0, 3.0, 3.0]


def test_a_shared_tensor_is_shared_once_and_its_views_move_with_it():
    x = autograd.arange(12.0).reshape(3, 4)
    row = x[1]  # a view the base knows of
    x.share_memory_()
    place = x.data_ptr()
    x.share_memory_()  # already shared: nothing moves
    assert x.data_ptr() == place
    assert row.is_shared()
    row.mul_(10)
    np.testing.assert_array_equal(x.numpy()[1], [40, 50, 60, 70])
    column = x[:, 2]  # a view of a shared tensor is shared
    assert column.is_shared() and not x.clone().is_shared()


def test_sharing_a_view_moves_its_base():
    x = autograd.arange(6.0)
    tail = x[3:]
    tail.share_memory_()  # the whole memory moves, as PyTorch moves the storage
    assert x.is_shared() and tail.is_shared()
    tail.fill_(-1)
    np.testing.assert_array_equal(x.numpy(), [0, 1, 2, -1, -1, -1])


def test_a_shared_parameter_trains_as_before():
    autograd.manual_seed(0)
    model = nn.Linear(3, 2)
    reference = nn.Linear(3, 2)
    reference.load_state_dict(model.state_dict())
    model.share_memory()
    assert all(p.is_shared() for p in model.parameters())
    for m in (model, reference):
        optimizer = optim.Adam(m.parameters(), lr=0.1)
        for _ in range(3):
            optimizer.zero_grad()
            m(autograd.ones(5, 3)).pow(2).sum().backward()
            optimizer.step()
    assert all(p.is_shared() for p in model.parameters())  # the optimizer updated them in place
    for p, q in zip(model.parameters(), reference.parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def test_module_share_memory_moves_buffers_and_gradients():
    model = nn.BatchNorm1d(3)
    model(autograd.randn(4, 3)).sum().backward()
    model.share_memory()
    assert model.running_mean.is_shared() and model.weight.grad.is_shared()


# -- pickling between processes ----------------------------------------------------------------------------------


def test_a_tensor_computed_in_a_graph_is_refused_at_the_boundary():
    y = autograd.ones(2, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="Cowardly refusing to serialize non-leaf tensor"):
        mp.reductions.ForkingPickler.dumps(y)
    assert not pickle.loads(pickle.dumps(y.detach())).is_shared()  # (ordinary pickling copies the values)


def test_sharing_strategies():
    assert mp.get_sharing_strategy() == "file_descriptor"
    assert mp.get_all_sharing_strategies() == {"file_descriptor", "file_system"}
    mp.set_sharing_strategy("file_system")
    assert mp.get_sharing_strategy() == "file_system"
    mp.set_sharing_strategy("file_descriptor")
    with pytest.raises(ValueError, match="sharing strategy"):
        mp.set_sharing_strategy("shm")


# -- other processes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_process_writes_the_parents_shared_tensor(method):
    table = autograd.zeros(2, 3)
    table.share_memory_()
    process = mp.get_context(method).Process(target=workers.fill_row, args=(1, table))
    process.start()
    process.join()
    assert process.exitcode == 0
    np.testing.assert_array_equal(table.numpy(), [[0, 0, 0], [2, 2, 2]])


def test_a_tensor_through_a_queue_is_the_same_memory_on_both_sides():
    context = mp.get_context("spawn")
    inbox, outbox = context.Queue(), context.Queue()
    process = context.Process(target=workers.double_what_arrives, args=(inbox, outbox))
    process.start()
    sent = autograd.arange(4.0)  # not shared yet: sending moves it into shared memory, as PyTorch's
    weight = nn.Parameter(autograd.ones(2))
    inbox.put(sent)
    inbox.put(weight)
    answers = [outbox.get(timeout=60), outbox.get(timeout=60)]
    inbox.put(None)
    process.join()
    assert sent.is_shared()
    np.testing.assert_array_equal(sent.numpy(), [0, 2, 4, 6])  # doubled by the other process, in place
    np.testing.assert_array_equal(weight.detach().numpy(), [2, 2])
    assert [answer[:3] for answer in answers] == [("Tensor", False, True), ("Parameter", True, True)]
    np.testing.assert_array_equal(answers[0][3].numpy(), [0, 2, 4, 6])


def hogwild(name, method):
    """Three workers train one shared model in turn; the parent then reads their result."""
    torch, nn_, _ = workers.library(name)
    torch.manual_seed(0)
    model = nn_.Linear(4, 1)
    model.share_memory()
    context = torch.multiprocessing.get_context(method)
    for rank in range(3):
        process = context.Process(target=workers.hogwild_train, args=(rank, name, model, 4))
        process.start()
        process.join()
        assert process.exitcode == 0
    return [p.detach().numpy().copy() for p in model.parameters()]


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_hogwild_training_updates_the_parents_model_as_pytorchs(method):
    ours = hogwild("autograd", method)
    # the same steps in this process, on an unshared copy: what the workers must have left
    autograd.manual_seed(0)
    model = nn.Linear(4, 1)
    for rank in range(3):
        workers.hogwild_train(rank, "autograd", model, 4)
    for got, expected in zip(ours, model.parameters()):
        np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-6)
    assert not np.allclose(ours[0], _initial_weight())
    if pytorch() is not None:
        for got, theirs in zip(ours, hogwild("torch", method)):
            np.testing.assert_allclose(got, theirs, rtol=1e-5, atol=1e-6)


def _initial_weight():
    autograd.manual_seed(0)
    return nn.Linear(4, 1).weight.detach().numpy()


# -- spawn ------------------------------------------------------------------------------------------------------


def test_spawn_runs_fn_with_each_index():
    table = autograd.zeros(3).share_memory_()
    assert mp.spawn(workers.fill_row, args=(table,), nprocs=3) is None
    np.testing.assert_array_equal(table.numpy(), [1, 2, 3])


def test_spawn_raises_what_a_process_raised():
    with pytest.raises(mp.ProcessRaisedException, match="process 1 gives up") as caught:
        mp.spawn(workers.fail_at, args=(1, "raise"), nprocs=2)
    assert caught.value.error_index == 1
    assert "-- Process 1 terminated with the following error:" in str(caught.value)
    assert "ValueError" in str(caught.value)


def test_spawn_reports_an_exit_code():
    with pytest.raises(mp.ProcessExitedException, match="process 0 terminated with exit code 3") as caught:
        mp.spawn(workers.fail_at, args=(0, "exit"), nprocs=1)
    assert caught.value.exit_code == 3 and caught.value.error_index == 0


def test_start_processes_without_join_and_spawns_warning_for_other_start_methods():
    table = autograd.zeros(2).share_memory_()
    context = mp.start_processes(workers.fill_row, args=(table,), nprocs=2, join=False, start_method="fork")
    assert isinstance(context, mp.ProcessContext) and len(context.pids()) == 2
    while not context.join():
        pass
    assert context.join() is True
    np.testing.assert_array_equal(table.numpy(), [1, 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mp.spawn(workers.fill_row, args=(table,), nprocs=1, start_method="fork")
    assert any(issubclass(w.category, FutureWarning) and "only supports start_method=spawn" in str(w.message)
               for w in caught)


def test_the_standard_modules_names_are_here():
    import multiprocessing

    for name in ("Process", "Queue", "Pool", "Manager", "Event", "Lock", "Value", "Array", "SimpleQueue",
                 "set_start_method", "get_start_method", "get_context", "cpu_count", "current_process"):
        assert getattr(mp, name) is getattr(multiprocessing, name)
