"""``autograd.distributed``, as ``torch.distributed``: data-parallel training over sockets ("gloo") or MPI.

    # mpiexec -n 2 python train.py
    import autograd.distributed as dist
    dist.init_process_group("mpi")
    t = autograd.tensor([float(dist.get_rank())])
    dist.all_reduce(t)                       # every rank: tensor([1.])

"gloo" (PyTorch's backend on the CPU) needs nothing more: processes started by
``autograd.multiprocessing.spawn`` or torchrun-style (RANK, WORLD_SIZE, MASTER_ADDR,
MASTER_PORT in each one's environment) meet through the standard library's sockets
(gloo.py; a job of one process opens none, single_process.py). "mpi" joins an ``mpiexec``
job and needs the optional extra ``pip install 'chainrule[distributed]'`` (mpi4py and
MPICH); nothing here imports mpi4py until ``init_process_group("mpi")``.
"""

from .checkpoint import save_on_rank0
from .collectives import (
    WORLD,
    ReduceOp,
    Work,
    all_gather,
    all_gather_into_tensor,
    all_reduce,
    all_to_all,
    all_to_all_single,
    barrier,
    broadcast,
    gather,
    get_global_rank,
    get_group_rank,
    monitored_barrier,
    new_group,
    reduce,
    reduce_scatter,
    reduce_scatter_tensor,
    scatter,
)
from .object_collectives import all_gather_object, broadcast_object_list, gather_object
from .process_group import (
    Backend,
    DistBackendError,
    DistStoreError,
    destroy_process_group,
    get_backend,
    get_node_local_rank,
    get_rank,
    get_world_size,
    init_process_group,
    is_available,
    is_gloo_available,
    is_initialized,
    is_mpi_available,
    is_nccl_available,
    is_torchelastic_launched,
    is_ucc_available,
)


class group:  # noqa: N801  (torch.distributed.group.WORLD)
    WORLD = WORLD


GroupMember = group  # (torch.distributed.GroupMember.WORLD)
