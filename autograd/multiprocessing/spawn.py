"""``spawn(fn, args, nprocs)``: run ``fn(i, *args)`` in ``nprocs`` new processes, as PyTorch's.

Each process's exception goes back to the parent as its formatted traceback; the first process to
fail stops the rest, and ``join`` raises ``ProcessRaisedException`` (the child's traceback in its
message) or ``ProcessExitedException`` (a non-zero exit code, or the signal that ended it).
"""

import multiprocessing
import multiprocessing.connection
import signal
import sys
import time
import traceback
import warnings

from ..graph import program_stacklevel


class ProcessException(Exception):
    def __init__(self, msg, error_index, pid):
        super().__init__(msg)
        self.msg = msg
        self.error_index = error_index
        self.pid = pid

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid)


class ProcessRaisedException(ProcessException):
    """A spawned process raised: the message holds its traceback."""


class ProcessExitedException(ProcessException):
    """A spawned process exited with a non-zero code, or was killed by a signal."""

    def __init__(self, msg, error_index, error_pid, exit_code, signal_name=None):
        super().__init__(msg, error_index, error_pid)
        self.exit_code = exit_code
        self.signal_name = signal_name

    def __reduce__(self):
        return type(self), (self.msg, self.error_index, self.pid, self.exit_code, self.signal_name)


def _wrap(fn, i, args, error_queue):
    """What each process runs: fn(i, *args), its exception sent to the parent as text."""
    try:
        fn(i, *args)
    except KeyboardInterrupt:
        pass  # the parent stopped the job: it knows why
    except Exception:
        error_queue.put(traceback.format_exc())
        sys.exit(1)


class ProcessContext:
    """The started processes; ``join()`` waits for them and says which one failed and how."""

    def __init__(self, processes, error_queues):
        self.processes = processes
        self.error_queues = error_queues
        self.sentinels = {process.sentinel: index for index, process in enumerate(processes)}

    def pids(self):
        return [process.pid for process in self.processes]

    def join(self, timeout=None, grace_period=None):
        """True once every process has ended well; False if some are still running after ``timeout``
        seconds. The first to fail has the others terminated (then killed after ``grace_period``
        seconds, when given) and its failure raised."""
        if not self.sentinels:
            return True
        ready = multiprocessing.connection.wait(self.sentinels.keys(), timeout=timeout)
        failed = None
        for sentinel in ready:
            index = self.sentinels.pop(sentinel)
            process = self.processes[index]
            process.join()
            if process.exitcode != 0 and failed is None:
                failed = index
        if failed is None:
            return not self.sentinels
        self._stop_the_rest(grace_period)
        process = self.processes[failed]
        if not self.error_queues[failed].empty():
            trace = self.error_queues[failed].get()
            raise ProcessRaisedException(f"\n\n-- Process {failed} terminated with the following error:\n{trace}",
                                         failed, process.pid)
        if process.exitcode < 0:
            name = signal.Signals(-process.exitcode).name
            raise ProcessExitedException(f"process {failed} terminated with signal {name}", failed, process.pid,
                                         process.exitcode, name)
        raise ProcessExitedException(f"process {failed} terminated with exit code {process.exitcode}", failed,
                                     process.pid, process.exitcode)

    def _stop_the_rest(self, grace_period):
        """The others, once one has failed: given ``grace_period`` seconds to end by themselves, then
        terminated (SIGTERM), then after another grace period (30 s by default) killed."""
        if grace_period is not None:
            self._join_all(grace_period)
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        self._join_all(30 if grace_period is None else grace_period)
        for process in self.processes:
            if process.is_alive():
                process.kill()
            process.join()
        self.sentinels.clear()

    def _join_all(self, seconds):
        deadline = time.monotonic() + seconds
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))


class SpawnContext(ProcessContext):
    """PyTorch's name for what ``spawn(..., join=False)`` returned before ``start_processes``."""


def start_processes(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    """Start ``nprocs`` processes by ``start_method`` ('spawn', 'fork' or 'forkserver'), process i running
    ``fn(i, *args)``. With ``join`` wait for all of them (None); otherwise return their ProcessContext."""
    context = multiprocessing.get_context(start_method)
    processes, error_queues = [], []
    for i in range(nprocs):
        error_queue = context.SimpleQueue()
        process = context.Process(target=_wrap, args=(fn, i, args, error_queue), daemon=daemon)
        process.start()
        processes.append(process)
        error_queues.append(error_queue)
    process_context = ProcessContext(processes, error_queues)
    if not join:
        return process_context
    while not process_context.join():
        pass


def spawn(fn, args=(), nprocs=1, join=True, daemon=False, start_method="spawn"):
    """``start_processes`` by 'spawn', whatever ``start_method`` says (PyTorch's ``torch.multiprocessing.spawn``,
    which warns of any other)."""
    if start_method != "spawn":
        warnings.warn(f"This method only supports start_method=spawn (got: {start_method}).\nTo use a different "
                      "start_method use:\n\t\t autograd.multiprocessing.start_processes(...)", FutureWarning,
                      stacklevel=program_stacklevel())
    return start_processes(fn, args, nprocs, join, daemon, "spawn")
