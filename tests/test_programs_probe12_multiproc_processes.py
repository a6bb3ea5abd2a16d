# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Programs that use processes and DataLoader workers, as their authors write them in PyTorch (see
tests/pytorch_programs.py), run on chainrule and on PyTorch from the same seeds and compared. Processes
(autograd.multiprocessing), run one after another, so the numbers are deterministic and compared with PyTorch's; the
functions children run are at module level, so that a spawned child can import them: a producer and a consumer of
tensors, dicts of tensors and Parameters through ``mp.Queue``; ``Pool.map`` over tensors; ``spawn`` with an error in
one rank; and ``Event``/``Value``/``Array`` with a tensor on the Array's memory (``torch.frombuffer``)."""

import numpy as np
import pytest

from .probe12_multiproc_common import modules, multiprocessing_of, posix_only
from .pytorch_programs import OURS, pytorch


def producer(name, queue, results, done, seed):
    """Puts batches (a dict of tensors), a Parameter and a tensor with views made before it was sent on the
    queue; once the consumer is done, reports what the consumer wrote into them."""
    m = modules(name)
    torch = m.torch
    torch.manual_seed(seed)
    for i in range(3):
        queue.put({"x": torch.randn(4, 3), "y": torch.randint(0, 3, (4,)), "mask": torch.rand(4) > 0.5})
    weight = m.nn.Parameter(torch.randn(3, 3))
    table = torch.arange(12.0).reshape(3, 4)
    rows, columns = table[1:], table.t()
    queue.put((weight, table, rows, columns))
    queue.put(None)
    done.wait()  # (alive until the consumer has taken every tensor: a descriptor is sent by its holder)
    results.put((weight.detach().numpy().tolist(), table.numpy().tolist(), rows.numpy().tolist(),
                 columns.numpy().tolist(), weight.is_shared(), rows.is_shared()))


def producer_consumer(name, method):
    m = modules(name)
    torch, F = m.torch, m.F
    mp = multiprocessing_of(m)
    context = mp.get_context(method)
    queue, results, done = context.Queue(), context.Queue(), context.Event()
    p = context.Process(target=producer, args=(name, queue, results, done, 7))
    p.start()
    batches = []
    while True:
        item = queue.get(timeout=60)
        if item is None:
            break
        batches.append(item)
    weight, table, rows, columns = batches.pop()
    received = [(type(weight).__name__, weight.requires_grad, weight.is_shared(), table.is_shared(),
                 rows.shape, columns.stride())]
    for batch in batches:
        logits = batch["x"] @ weight
        loss = F.cross_entropy(logits[batch["mask"]], batch["y"][batch["mask"]]) if batch["mask"].any() \
            else logits.sum() * 0
        loss.backward()
    with torch.no_grad():
        weight -= 0.5 * weight.grad
    rows[0].fill_(-1)  # writes the producer's table[1]
    columns[3, 2] = 100.0  # its table[2, 3]
    done.set()
    report = results.get(timeout=60)
    p.join()
    assert p.exitcode == 0
    return batches, received, weight.detach().clone(), weight.grad, report


@posix_only
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_producer_consumer_through_a_queue(method):
    ours = producer_consumer("autograd", method)
    assert ours[1] == [("Parameter", True, True, True, (2, 4), (1, 4))]
    weight, table, rows, columns, weight_shared, rows_shared = ours[4]
    np.testing.assert_allclose(weight, ours[2], rtol=1e-6)  # the consumer's step, in the producer's memory
    assert table == [[0, 1, 2, 3], [-1, -1, -1, -1], [8, 9, 10, 100]]
    assert rows == table[1:] and columns == np.array(table).T.tolist()
    assert weight_shared and rows_shared
    if pytorch() is not None:
        theirs = producer_consumer("torch", "fork")
        for a, b in zip(ours[0], theirs[0]):
            for key in a:
                np.testing.assert_allclose(a[key], b[key], rtol=1e-6)
        assert ours[1] == [(n, g, s, t, tuple(r), c) for n, g, s, t, r, c in theirs[1]]
        np.testing.assert_allclose(ours[2], theirs[2], rtol=1e-5)
        np.testing.assert_allclose(ours[3], theirs[3], rtol=1e-5)
        assert ours[4][1:] == theirs[4][1:]


def standardized_norm(x, scale):
    """What each pool worker computes: a tensor back, and a number."""
    z = (x - x.mean(0)) / x.std(0)
    return z * scale, float(x.norm())


def pool_map(name, method):
    m = modules(name)
    torch = m.torch
    mp = multiprocessing_of(m)
    torch.manual_seed(0)
    inputs = [torch.randn(5, 3) for _ in range(4)]
    with mp.get_context(method).Pool(2) as pool:
        results = pool.starmap(standardized_norm, [(x, k + 1) for k, x in enumerate(inputs)])
        sizes = pool.map(len, inputs)
        asynchronous = pool.apply_async(standardized_norm, (inputs[0], -1.0)).get(timeout=60)
    return results, sizes, asynchronous, [x.is_shared() for x in inputs]


@posix_only
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_pool_maps_a_function_over_tensors(method):
    ours = pool_map("autograd", method)
    assert ours[1] == [5, 5, 5, 5] and ours[3] == [True] * 4
    OURS.torch.manual_seed(0)
    for (z, norm), x in zip(ours[0], [OURS.torch.randn(5, 3) for _ in range(4)]):
        assert norm == pytest.approx(float(np.linalg.norm(x.numpy())), rel=1e-6)
    if pytorch() is not None:
        theirs = pool_map("torch", "fork")
        for a, b in zip(ours[0] + [ours[2]], theirs[0] + [theirs[2]]):
            np.testing.assert_allclose(a[0].numpy(), b[0].numpy(), rtol=1e-5, atol=1e-6)
            assert a[1] == pytest.approx(b[1], rel=1e-6)
        assert ours[3] == theirs[3]


def run_rank(rank, name, world_size, table, fail_rank):
    """A DDP-style worker: its row of a shared table, and a missing shard in one rank."""
    m = modules(name)
    torch = m.torch
    torch.manual_seed(rank)
    table[rank] = torch.randn(3) + rank
    shards = {r: f"shard-{r}" for r in range(world_size) if r != fail_rank}
    print(f"rank {rank} of {world_size} reads {shards[rank]}")


def spawn_with_a_failing_rank(name, start_method):
    m = modules(name)
    torch = m.torch
    mp = multiprocessing_of(m)
    table = torch.zeros(3, 3).share_memory_()
    try:
        if start_method == "spawn":
            mp.spawn(run_rank, args=(name, 3, table, 1), nprocs=3, join=True)
        else:
            context = mp.start_processes(run_rank, args=(name, 3, table, 1), nprocs=3, join=False,
                                         start_method=start_method)
            while not context.join():
                pass
    except mp.ProcessRaisedException as e:
        lines = str(e).splitlines()
        failure = (type(e).__name__, e.error_index, lines[:4], lines[-1], type(e).__mro__[1].__name__)
    else:
        failure = None
    # rank 1 wrote its row before it failed; the others may have been stopped before writing theirs
    table_ok = torch.equal(table[2], torch.zeros(3)) or torch.allclose(table[2], (torch.manual_seed(2) and
                                                                                  torch.randn(3)) + 2)
    torch.manual_seed(1)
    return failure, table[1].clone(), torch.randn(3) + 1, table_ok


@posix_only
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_spawn_with_an_error_in_one_rank(start_method):
    ours = spawn_with_a_failing_rank("autograd", start_method)
    header = ["", "", "-- Process 1 terminated with the following error:", "Traceback (most recent call last):"]
    assert ours[0] == ("ProcessRaisedException", 1, header, "KeyError: 1", "ProcessException")
    np.testing.assert_array_equal(ours[1], ours[2])
    assert ours[3]
    if pytorch() is not None:
        theirs = spawn_with_a_failing_rank("torch", "fork")
        assert ours[0] == theirs[0]
        np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)


def accumulate(rank, name, go, done, total, shared):
    """Waits for its turn, then updates an Array through a tensor on its memory and a Value under its lock."""
    m = modules(name)
    torch = m.torch
    view = torch.frombuffer(shared.get_obj(), dtype=torch.float64)
    go.wait()
    with shared.get_lock():
        view[rank::2] = view[rank::2] * 2 + rank
    with total.get_lock():
        total.value += float(view.sum())
    done.set()


def events_values_arrays(name, method):
    m = modules(name)
    torch = m.torch
    mp = multiprocessing_of(m)
    context = mp.get_context(method)
    shared = context.Array('d', 6)
    total = context.Value('d', 0.0)
    view = torch.frombuffer(shared.get_obj(), dtype=torch.float64)
    view.copy_(torch.linspace(0, 1, 6, dtype=torch.float64))
    go = [context.Event() for _ in range(2)]
    done = [context.Event() for _ in range(2)]
    processes = [context.Process(target=accumulate, args=(rank, name, go[rank], done[rank], total, shared))
                 for rank in range(2)]
    for p in processes:
        p.start()
    for rank in range(2):  # one after the other
        go[rank].set()
        assert done[rank].wait(timeout=60)
    for p in processes:
        p.join()
    return view.clone(), total.value, list(shared), [p.exitcode for p in processes]


@posix_only
@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_event_value_and_array_coordination(method):
    ours = events_values_arrays("autograd", method)
    start = np.linspace(0, 1, 6)
    after0 = start.copy()
    after0[0::2] = after0[0::2] * 2
    after1 = after0.copy()
    after1[1::2] = after1[1::2] * 2 + 1
    np.testing.assert_allclose(ours[0], after1)
    assert ours[1] == pytest.approx(after0.sum() + after1.sum())
    assert ours[2] == pytest.approx(after1.tolist()) and ours[3] == [0, 0]
    if pytorch() is not None:
        theirs = events_values_arrays("torch", "fork")
        np.testing.assert_allclose(ours[0], theirs[0])
        assert ours[1:] == theirs[1:]
