"""Run under mpiexec -n N: reduce_scatter, all_to_all and the object collectives against NumPy (probe 28)."""

import numpy as np

import autograd
import autograd.distributed as dist

dist.init_process_group("mpi")
r, n = dist.get_rank(), dist.get_world_size()
assert dist.get_backend() == "mpi"
out = autograd.zeros(3)
dist.reduce_scatter(out, [autograd.full((3,), float(10 * r + i)) for i in range(n)])
assert out.tolist() == [sum(10 * k + r for k in range(n))] * 3, out
o2 = autograd.zeros(2)
dist.reduce_scatter_tensor(o2, autograd.arange(2.0 * n) * (r + 1), op=dist.ReduceOp.AVG)
expect = np.arange(2.0 * n)[2 * r:2 * r + 2] * np.mean([k + 1 for k in range(n)])
assert np.allclose(o2.numpy(), expect), (o2, expect)
a = autograd.zeros(2 * n)
dist.all_to_all_single(a, autograd.arange(2.0 * n) + 100 * r)
assert a.tolist() == [100 * i + 2 * r + j for i in range(n) for j in range(2)], a
outs = [autograd.zeros(2) for _ in range(n)]
dist.all_to_all(outs, [autograd.tensor([float(r), float(i)]) for i in range(n)])
assert [t.tolist() for t in outs] == [[float(i), float(r)] for i in range(n)], outs
objs = [None] * n
dist.all_gather_object(objs, {"rank": r, "pad": "x" * (r * 50)})
assert objs == [{"rank": i, "pad": "x" * (i * 50)} for i in range(n)]
g = [None] * n if r == 1 else None
dist.gather_object(("r", r), g, dst=1)
assert (g == [("r", i) for i in range(n)]) if r == 1 else g is None
lst = [{"cfg": [1, 2]}, "name"] if r == 0 else [None, None]
dist.broadcast_object_list(lst, src=0)
assert lst == [{"cfg": [1, 2]}, "name"]
assert dist.new_group(list(range(n))) is dist.group.WORLD

# the differentiable collectives: rank k's loss weighs rank i's gathered x by (k + 1) * (i + 2)
from autograd.distributed.nn import functional as dnn  # noqa: E402

x = autograd.full((2,), float(r), requires_grad=True)
gathered = dnn.all_gather(x)
assert [t.tolist() for t in gathered] == [[float(i)] * 2 for i in range(n)]
sum((r + 1) * (i + 2) * t.sum() for i, t in enumerate(gathered)).backward()
assert x.grad.tolist() == [float(sum(k + 1 for k in range(n)) * (r + 2))] * 2, x.grad
y = autograd.full((3,), float(r + 1), requires_grad=True)
total = dnn.all_reduce(y * 2)
assert total.tolist() == [float(n * (n + 1))] * 3 and y.tolist() == [float(r + 1)] * 3
(total * (r + 1)).sum().backward()
assert y.grad.tolist() == [2.0 * n * (n + 1) / 2] * 3, y.grad
z = autograd.full((2,), float(r + 5), requires_grad=True)
shared = dnn.broadcast(z, src=1)
assert shared.tolist() == [6.0, 6.0]
(shared * (r + 1)).sum().backward()
assert z.grad.tolist() == ([float(n * (n + 1) / 2)] * 2 if r == 1 else [0.0, 0.0]), z.grad

dist.barrier()
dist.destroy_process_group()
if r == 0:
    print("new collectives OK")
