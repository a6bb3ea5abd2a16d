"""Run under mpiexec -n N: every collective against NumPy on known inputs."""

import numpy as np

import autograd
import autograd.distributed as dist

dist.init_process_group("mpi")
rank, size = dist.get_rank(), dist.get_world_size()


def value(r):
    """Rank r's input: distinct per rank, no zeros (so PRODUCT means something)."""
    return np.arange(1.0, 7.0).reshape(2, 3) * (r + 1) + r


every = np.stack([value(r) for r in range(size)])
expected = {dist.ReduceOp.SUM: every.sum(0), dist.ReduceOp.AVG: every.mean(0), dist.ReduceOp.MAX: every.max(0),
            dist.ReduceOp.MIN: every.min(0), dist.ReduceOp.PRODUCT: every.prod(0)}
for op, want in expected.items():
    t = autograd.tensor(value(rank))
    dist.all_reduce(t, op=op)
    np.testing.assert_allclose(t.numpy(), want, rtol=1e-15, err_msg=f"all_reduce {op}")

# a non-contiguous tensor, a 0-d tensor, an integer tensor, and one that requires grad
t = autograd.tensor(value(rank)).transpose(0, 1)
dist.all_reduce(t)
np.testing.assert_array_equal(t.numpy(), every.sum(0).T)
t = autograd.tensor(float(rank + 2))
dist.all_reduce(t, dist.ReduceOp.PRODUCT)
assert t.item() == np.prod(np.arange(size) + 2.0)
t = autograd.tensor([rank, 10 * rank])
dist.all_reduce(t)
assert t.tolist() == [sum(range(size)), 10 * sum(range(size))] and t.dtype == np.int64
w = autograd.tensor(value(rank), requires_grad=True)
dist.all_reduce(w)
np.testing.assert_array_equal(w.numpy(), every.sum(0))

# async: the handle completes, and the result is there after wait()
t = autograd.tensor(value(rank))
work = dist.all_reduce(t, op=dist.ReduceOp.AVG, async_op=True)
assert work.wait() and work.is_completed()
np.testing.assert_allclose(t.numpy(), every.mean(0), rtol=1e-15)

for src in range(size):
    t = autograd.tensor(value(rank))
    dist.broadcast(t, src=src)
    np.testing.assert_array_equal(t.numpy(), value(src))

gathered = [autograd.zeros(2, 3, dtype=autograd.float64) for _ in range(size)]
dist.all_gather(gathered, autograd.tensor(value(rank)))
for r in range(size):
    np.testing.assert_array_equal(gathered[r].numpy(), value(r))
joined = autograd.zeros(2 * size, 3, dtype=autograd.float64)
dist.all_gather_into_tensor(joined, autograd.tensor(value(rank)))
np.testing.assert_array_equal(joined.numpy(), np.concatenate([value(r) for r in range(size)]))

for dst in range(size):
    t = autograd.tensor(value(rank))
    dist.reduce(t, dst=dst, op=dist.ReduceOp.MAX)
    np.testing.assert_array_equal(t.numpy(), every.max(0) if rank == dst else value(rank))

t = autograd.zeros(2, 3, dtype=autograd.float64)
dist.scatter(t, [autograd.tensor(value(r) * 100) for r in range(size)] if rank == 1 % size else None, src=1 % size)
np.testing.assert_array_equal(t.numpy(), value(rank) * 100)

target = [autograd.zeros(2, 3, dtype=autograd.float64) for _ in range(size)] if rank == 0 else None
work = dist.gather(autograd.tensor(value(rank)), target, dst=0, async_op=True)
work.wait()
if rank == 0:
    for r in range(size):
        np.testing.assert_array_equal(target[r].numpy(), value(r))

dist.barrier()
try:
    dist.broadcast(autograd.zeros(1), src=size)
except ValueError as error:
    assert f"src={size}" in str(error)
else:
    raise AssertionError("broadcast from a rank that does not exist must fail")
dist.destroy_process_group()
print(f"rank {rank}: collectives OK")
