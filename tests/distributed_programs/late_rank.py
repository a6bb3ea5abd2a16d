"""Run under mpiexec -n 2: rank 1 stays away from the all-reduce past rank 0's timeout; rank 0
must raise, name rank 1 as missing, and end the job."""

import datetime
import sys
import time

import autograd
import autograd.distributed as dist

dist.init_process_group("mpi", timeout=datetime.timedelta(seconds=float(sys.argv[1])))
dist.barrier()
if dist.get_rank() == 1:
    time.sleep(30)
dist.all_reduce(autograd.ones(3))
print("unreachable")
