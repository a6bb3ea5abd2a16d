"""The default process group: who we are (rank), how many we are (world size), and what
happens when something goes wrong.

``init_process_group("gloo")`` meets the other processes through sockets (gloo.py; a job
of one process through none, single_process.py); its faults are the sockets' timeouts and
closed connections, raised as DistBackendError. What follows is about "mpi".

``init_process_group("mpi")`` reads rank and size from MPI (start the job with
``mpiexec -n N python script.py``). mpi4py is imported here, never by the core:
it is the optional extra ``pip install 'chainrule[distributed]'`` (mpi4py and
MPICH's ``mpiexec``).

Faults. MPI collectives wait for every rank, so one failing rank would hang the
others. Two guards:
  * an uncaught exception on any rank prints its rank and error, then calls
    ``MPI.COMM_WORLD.Abort``, which ends every process of the job (installed as
    ``sys.excepthook`` by ``init_process_group``);
  * every collective waits by polling its non-blocking request; past ``timeout``
    it raises, naming the ranks that never arrived. Arrival is a per-rank counter
    of collectives entered, kept in memory shared by the ranks of one machine;
    a rank whose counter is behind ours has not reached this collective.
"""

import datetime
import os
import sys
import threading
import time

import numpy

from . import gloo, single_process

INSTALL_HINT = "pip install 'chainrule[distributed]'  (mpi4py and MPICH's mpiexec)"
NOT_INITIALIZED = ("Default process group has not been initialized, please make sure to call "
                   "init_process_group.")
DEFAULT_TIMEOUT = datetime.timedelta(minutes=30)  # PyTorch's default for CPU backends


class DistBackendError(RuntimeError):
    """A collective failed or timed out (PyTorch's ``torch.distributed.DistBackendError``)."""

    __module__ = "autograd.distributed"


class DistStoreError(RuntimeError):
    """The rendezvous failed or timed out (PyTorch's ``torch.distributed.DistStoreError``)."""

    __module__ = "autograd.distributed"


class Backend(str):
    """The backends' names, as ``torch.distributed.Backend``: ``Backend("GLOO")`` is the str "gloo"."""

    UNDEFINED, GLOO, NCCL, XCCL, UCC, MPI = "undefined", "gloo", "nccl", "xccl", "ucc", "mpi"
    backend_list = [UNDEFINED, GLOO, NCCL, XCCL, UCC, MPI]

    def __new__(cls, name):
        if not isinstance(name, str):
            raise ValueError("Backend constructor parameter must be string-ish")
        return getattr(cls, name.upper(), name.lower())


class _State:
    MPI = None  # the mpi4py.MPI module, once imported
    comm = None  # COMM_WORLD while a process group is initialized (a SingleProcessComm for "gloo")
    backend = None
    mpi_module = None  # mpi4py's MPI, put aside while "gloo" puts its stand-in in MPI
    rank = 0
    size = 1
    timeout = DEFAULT_TIMEOUT.total_seconds()
    sequence = 0  # collectives this rank has entered
    arrivals = None  # numpy view of the machine's shared counters, one per local rank
    local_to_world = None  # world rank of each local slot
    local_rank = 0
    window = None
    previous_hooks = None


def _import_mpi():
    """mpi4py's MPI module, or a RuntimeError that says how to install it."""
    if _State.MPI is not None:
        return _State.MPI
    try:
        import mpi4py
    except ImportError as error:
        raise RuntimeError(f"the 'mpi' backend needs mpi4py, which is not installed ({error}). "
                           f"Install the extra: {INSTALL_HINT}") from error
    mpi4py.rc.threads = False  # one thread talks to MPI
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError, OSError) as error:  # mpi4py present, the MPI library not
        raise RuntimeError(f"mpi4py could not load an MPI library ({error}). "
                           f"Install one with the extra: {INSTALL_HINT}") from error
    _State.MPI = MPI
    return MPI


def is_available():
    """True, as PyTorch's: "gloo" needs nothing more (sockets); "mpi"
    needs mpi4py (``is_mpi_available``)."""
    return True


def is_initialized():
    return _State.comm is not None


def is_mpi_available():
    """Whether mpi4py is installed, so that init_process_group("mpi") can join an mpiexec job."""
    import importlib.util

    return importlib.util.find_spec("mpi4py") is not None


def is_nccl_available():
    """False: no GPU here (what a program asks before choosing init_process_group's backend)."""
    return False


is_ucc_available = is_nccl_available


def is_gloo_available():
    """True: "gloo" runs over the standard library's sockets (gloo.py)."""
    return True


def _require():
    if _State.comm is None:
        raise ValueError(NOT_INITIALIZED)


def get_rank(group=None):
    _require()
    return _State.rank


def get_world_size(group=None):
    _require()
    return _State.size


def get_backend(group=None):
    _require()
    return _State.backend


def is_torchelastic_launched():
    """Whether torchrun (torch.distributed.elastic) started this process: it sets TORCHELASTIC_RUN_ID."""
    return os.getenv("TORCHELASTIC_RUN_ID") is not None


def get_node_local_rank(fallback_rank=None):
    """This process's rank on its machine, from LOCAL_RANK (torchrun sets it), else ``fallback_rank``."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    if fallback_rank is not None:
        return int(fallback_rank)
    raise RuntimeError(
        "LOCAL_RANK is not in the environment. Consider passing fallback_rank to allow `get_node_local_rank` to work, "
        "assuming you are not running in a multi-device context and want the code to run locally instead.")


def _seconds(timeout):
    if timeout is None:
        return DEFAULT_TIMEOUT.total_seconds()
    if isinstance(timeout, datetime.timedelta):
        return timeout.total_seconds()
    raise TypeError(f"timeout must be a datetime.timedelta, got {type(timeout).__name__} {timeout!r}")


def init_process_group(backend=None, init_method=None, timeout=None, world_size=-1, rank=-1, store=None,
                       group_name="", pg_options=None, device_id=None):
    """Join the job: with "mpi", the one ``mpiexec`` started (rank and world size come from MPI);
    with "gloo", the processes meeting at init_method (see ``gloo``; ``single_process`` for one).

    backend:    "mpi" or "gloo"; None (PyTorch's default) means "mpi" in a job an
                MPI launcher started, else "gloo" (PyTorch's choice on the CPU).
    init_method, store: for "gloo", where PyTorch's rendezvous finds rank and world size
                (default "env://": RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT); rank 0
                listens there, the others connect. ``store`` serves world_size 1 only.
    timeout:    a datetime.timedelta; the rendezvous or a collective waiting longer raises
                (DistStoreError, DistBackendError) (default 30 minutes, as PyTorch's).
    world_size, rank: optional for "mpi"; when given they must agree with MPI's.
    """
    name = (_launcher_backend() if backend is None else str(backend)).lower()
    if name not in ("mpi", "gloo"):
        raise ValueError(f"Invalid backend: {backend!r}; chainrule's distributed package has the 'mpi' backend "
                         f"(start the job with mpiexec -n N) and 'gloo' (sockets)")
    if _State.comm is not None:
        raise ValueError("trying to initialize the default process group twice!")
    seconds = _seconds(timeout)
    if name == "gloo":
        rank, world_size = single_process.rendezvous(init_method, rank, world_size, store)
        if world_size == 1:
            _join_alone(rank)
        else:
            _join_sockets(init_method, rank, world_size, store, seconds)
        _State.timeout, _State.sequence = seconds, 0
        return
    MPI = _import_mpi()
    comm = MPI.COMM_WORLD
    if world_size not in (-1, None) and world_size != comm.Get_size():
        raise ValueError(f"init_process_group: world_size={world_size} but mpiexec started {comm.Get_size()} "
                         f"processes; leave world_size out or run mpiexec -n {world_size}")
    if rank not in (-1, None) and rank != comm.Get_rank():
        raise ValueError(f"init_process_group: rank={rank} but MPI gave this process rank {comm.Get_rank()}; "
                         "leave rank out")
    _State.comm, _State.rank, _State.size, _State.backend = comm, comm.Get_rank(), comm.Get_size(), "mpi"
    _State.timeout, _State.sequence = seconds, 0
    _share_arrival_counters(MPI, comm)
    _install_abort_on_error()


def _launcher_backend():
    """ "mpi" when mpiexec started this process (MPICH's Hydra sets PMI_SIZE, Open MPI
    OMPI_COMM_WORLD_SIZE), else "gloo"."""
    return "mpi" if "PMI_SIZE" in os.environ or "OMPI_COMM_WORLD_SIZE" in os.environ else "gloo"


def _join_alone(rank):
    """The "gloo" group of world_size 1: this process is the whole job (no socket opened)."""
    if rank != 0:
        raise ValueError(f"init_process_group: rank={rank} in a job of world_size 1 (its one rank is 0)")
    _joined_gloo(single_process.SingleProcessComm(), 0, 1)


def _join_sockets(init_method, rank, world_size, store, seconds):
    """The "gloo" group of several processes: a star of sockets through rank 0 (gloo.py)."""
    if store is not None:
        raise NotImplementedError("init_process_group('gloo', store=...) with world_size > 1: chainrule's gloo "
                                  "meets through init_method (env://, tcp://host:port, file://path)")
    if not 0 <= rank < world_size:
        raise ValueError(f"init_process_group: rank={rank} is not a rank of world_size {world_size}")
    _joined_gloo(gloo.connect(init_method, rank, world_size, seconds), rank, world_size)


def _joined_gloo(comm, rank, size):
    """The "gloo" group, its communicator ``comm`` (MPI's names for the constants: single_process.MPI)."""
    _State.mpi_module, _State.MPI = _State.MPI, single_process.MPI
    _State.comm, _State.rank, _State.size, _State.backend = comm, rank, size, "gloo"


def _share_arrival_counters(MPI, comm):
    """One int64 per rank of this machine, in memory all of them map (no messages to read it)."""
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    _State.local_rank = local.Get_rank()
    _State.local_to_world = local.Get_group().Translate_ranks(list(range(local.Get_size())), comm.Get_group())
    itemsize = numpy.dtype(numpy.int64).itemsize
    window = MPI.Win.Allocate_shared(itemsize * local.Get_size() if local.Get_rank() == 0 else 0, itemsize,
                                     comm=local)
    memory, _ = window.Shared_query(0)
    _State.arrivals = numpy.frombuffer(memory, dtype=numpy.int64)
    _State.window = window
    local.Barrier()
    _State.arrivals[_State.local_rank] = 0
    local.Barrier()
    local.Free()


def _install_abort_on_error():
    """An uncaught exception on one rank ends the whole job instead of hanging the rest."""
    previous = (sys.excepthook, threading.excepthook)

    def abort(kind, error, trace):
        previous[0](kind, error, trace)
        _abort(f"{kind.__name__}: {error}")

    def abort_thread(arguments):
        previous[1](arguments)
        _abort(f"{arguments.exc_type.__name__} in thread {arguments.thread.name}: {arguments.exc_value}")

    sys.excepthook, threading.excepthook = abort, abort_thread
    _State.previous_hooks = previous


def _abort(message):
    if _State.comm is None:
        return
    sys.stdout.flush()
    sys.stderr.write(f"chainrule.distributed: rank {_State.rank} of {_State.size} failed with {message}; "
                     f"aborting the job (MPI_Abort)\n")
    sys.stderr.flush()
    time.sleep(0.2)  # let mpiexec forward this rank's last output before it tears the job down
    _State.comm.Abort(1)


def destroy_process_group(group=None):
    """Leave the process group: restore the exception hooks, free the shared counters."""
    if _State.comm is None:
        raise AssertionError("Process group cannot be None")  # (PyTorch's words)
    wait_all([_State.comm.Ibarrier()], "destroy_process_group", _arrive())  # no rank leaves while others talk
    if _State.window is not None:
        _State.arrivals = None
        _State.window.Free()
        _State.window = None
    if _State.previous_hooks is not None:
        sys.excepthook, threading.excepthook = _State.previous_hooks
        _State.previous_hooks = None
    if _State.backend == "gloo":
        _State.MPI, _State.mpi_module = _State.mpi_module, None
    _State.comm, _State.backend = None, None
    _State.rank, _State.size = 0, 1


# -- waiting with a timeout -------------------------------------------------------------------------


def _arrive():
    """Count this rank into its next collective; returns the collective's sequence number."""
    _State.sequence += 1
    if _State.arrivals is not None:
        _State.arrivals[_State.local_rank] = _State.sequence
    return _State.sequence


def _missing_ranks(sequence):
    """World ranks on this machine that have not entered collective ``sequence``."""
    if _State.arrivals is None:
        return [], []
    counters = _State.arrivals.copy()
    missing = [world for slot, world in enumerate(_State.local_to_world) if counters[slot] < sequence]
    elsewhere = sorted(set(range(_State.size)) - set(_State.local_to_world))
    return missing, elsewhere


def wait_all(requests, what, sequence, timeout=None):
    """Poll MPI requests until all complete; past the timeout raise DistBackendError naming the missing ranks.

    Polling (``Testall``) both drives MPI's progress and keeps the clock in our hands: a
    blocking MPI wait could not be interrupted.
    """
    MPI = _State.MPI
    if MPI.Request.Testall(requests):
        return
    limit = _State.timeout if timeout is None else _seconds(timeout)
    started = time.monotonic()
    pause = 0.0
    while not MPI.Request.Testall(requests):
        waited = time.monotonic() - started
        if waited > limit:
            raise DistBackendError(_timeout_message(what, sequence, waited))
        if waited > 0.001:  # spin for the first millisecond, then back off up to 1 ms
            pause = min(0.001, pause * 2 if pause else 1e-5)
            time.sleep(pause)


def _timeout_message(what, sequence, waited):
    missing, elsewhere = _missing_ranks(sequence)
    text = (f"rank {_State.rank}: {what} (collective #{sequence}) timed out after {waited:.1f} s "
            f"(init_process_group timeout {datetime.timedelta(seconds=_State.timeout)}); ")
    if missing:
        text += f"rank(s) {', '.join(map(str, missing))} never reached it"
    else:
        text += "every rank on this machine reached it (a rank may be waiting in a different collective)"
    if elsewhere:
        text += f"; ranks on other machines not checked: {', '.join(map(str, elsewhere))}"
    return text

