"""``autograd.multiprocessing``, as ``torch.multiprocessing``: Python's ``multiprocessing``, whose
processes share tensors.

    import autograd.multiprocessing as mp
    model.share_memory()                       # parameters into shared memory
    workers = [mp.Process(target=train, args=(model,)) for _ in range(4)]

Every name of the standard module is here (``Process``, ``Queue``, ``Pool``, ``set_start_method``,
...). Importing this module registers how a tensor crosses a process boundary (reductions.py): by
its shared memory, so a worker's in-place updates of a shared model are the parent's (Hogwild),
and a tensor put on a ``Queue`` is the same memory on both sides. ``spawn`` runs a function in new
processes and reports their exceptions (spawn.py).
"""

import multiprocessing
from multiprocessing import *  # noqa: F403  (the standard module's names, as PyTorch's module has them)

from .reductions import init_reductions
from .spawn import (
    ProcessContext,
    ProcessException,
    ProcessExitedException,
    ProcessRaisedException,
    SpawnContext,
    spawn,
    start_processes,
)

__all__ = ["set_sharing_strategy", "get_sharing_strategy", "get_all_sharing_strategies", *multiprocessing.__all__]

# PyTorch's two ways to name shared memory to another process. Both are served by the same means here: the
# memory's file descriptor, duplicated into the receiver (its memory is anonymous, so nothing outlives the
# processes, and no file-system name can leak)
_ALL_SHARING_STRATEGIES = frozenset(("file_descriptor", "file_system"))
_sharing_strategy = "file_descriptor"


def set_sharing_strategy(new_strategy):
    global _sharing_strategy
    if new_strategy not in _ALL_SHARING_STRATEGIES:
        raise ValueError(f"sharing strategy must be one of {sorted(_ALL_SHARING_STRATEGIES)}, got {new_strategy!r}")
    _sharing_strategy = new_strategy


def get_sharing_strategy():
    return _sharing_strategy


def get_all_sharing_strategies():
    return set(_ALL_SHARING_STRATEGIES)


init_reductions()
