"""Run under mpiexec -n 2: rank 1 raises while rank 0 waits in an all-reduce; the job must end
with rank 1's error instead of hanging (rank 0's timeout is long, so only the abort can end it)."""

import datetime

import autograd
import autograd.distributed as dist

dist.init_process_group("mpi", timeout=datetime.timedelta(seconds=60))
if dist.get_rank() == 1:
    raise ValueError("rank 1 found a bad batch")
dist.all_reduce(autograd.ones(3))
print("unreachable: rank 0 finished an all-reduce that rank 1 never joined")
