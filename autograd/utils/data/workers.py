"""A DataLoader's workers, played in the main process: each with PyTorch's seeds, its own copy of the
dataset and its own share of the batches, so ``num_workers`` gives PyTorch's batches.

PyTorch's loader with ``num_workers = W`` starts W processes. Worker i seeds its own random
streams from the pass's base seed b (drawn from the loader's generator):
    autograd's default generator:  b + i          (torch.manual_seed)
    Python's ``random``:           b + i
    NumPy's global stream:         SeedSequence([i, b mod 2^32, b div 2^32, 0]).generate_state(4)
then calls ``worker_init_fn(i)`` with ``get_worker_info()`` describing it, and works on its own copy
of the dataset (forked, so a worker's changes to it stay its own). Batch k of a map-style dataset is
made by worker k mod W; an IterableDataset is iterated by every worker, each over its own copy
(sharded by the dataset through ``get_worker_info()``), and their batches are taken in turn.

Here the workers take turns in the main process: a ``Worker`` holds its streams while it is away,
and puts them in place for the time it makes a batch (``with worker:``). The batches, and whatever
the dataset draws at random, are therefore PyTorch's; only the loading is not parallel.
"""

import copy
import dataclasses
import functools
import random
import traceback
import types

import numpy

from ...backend import memory_owner
from ...random import swap_default_stream
from ...tensor import Tensor

_current = None  # the WorkerInfo of the worker making a batch now; None in the main process


@dataclasses.dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What ``get_worker_info()`` says inside a worker: its ``id`` (0 to ``num_workers`` - 1), the
    ``num_workers``, its ``seed`` and its copy of the ``dataset`` (frozen, as PyTorch's)."""

    id: int
    num_workers: int
    seed: int
    dataset: object
    rng: object = None
    worker_method: str = "multiprocessing"


def get_worker_info():
    """The WorkerInfo of the worker that is loading (inside a dataset's ``__getitem__``/``__iter__`` or a
    ``worker_init_fn``), None in the main process."""
    return _current


def numpy_seed(base_seed, worker_id):
    """The four 32-bit words PyTorch's worker seeds NumPy's global stream with."""
    entropy = [worker_id, base_seed & 0xFFFFFFFF, base_seed >> 32, 0]
    return numpy.random.SeedSequence(entropy).generate_state(4)


class Worker:
    """One worker of one pass (or of every pass, with ``persistent_workers``)."""

    def __init__(self, loader, worker_id, base_seed):
        self.id = worker_id
        seed = base_seed + worker_id
        copied = _kept_shared(loader.dataset)  # (deepcopy's memo: each object of the dataset to the worker's own)
        self.dataset = _own_copy(loader.dataset, copied)
        self.info = WorkerInfo(id=worker_id, num_workers=loader.num_workers, seed=seed, dataset=self.dataset)
        self._default_stream = (seed, None)  # (manual_seed(seed): the stream is made from it on the first draw)
        self._python_state = random.Random(seed).getstate()
        self._numpy_state = numpy.random.RandomState(numpy_seed(base_seed, worker_id)).get_state()
        self.failure = None  # worker_init_fn's exception: raised at the worker's first batch, as PyTorch's
        self.stream = None  # an IterableDataset's samples, as this worker iterates its copy
        init_fn = _referring_to_the_copy(loader.worker_init_fn, copied)
        with self:
            try:
                if init_fn is not None:
                    init_fn(worker_id)
            except Exception as error:
                self.failure = error

    def __enter__(self):
        global _current
        self._outside = (swap_default_stream(self._default_stream), random.getstate(), numpy.random.get_state(),
                         _current)
        random.setstate(self._python_state)
        numpy.random.set_state(self._numpy_state)
        _current = self.info
        return self

    def __exit__(self, *exc_info):
        global _current
        default_stream, python_state, numpy_state, _current = self._outside
        self._default_stream = swap_default_stream(default_stream)
        self._python_state, self._numpy_state = random.getstate(), numpy.random.get_state()
        random.setstate(python_state)
        numpy.random.set_state(numpy_state)
        del self._outside

    def start_stream(self):
        """A new pass over this worker's copy of an IterableDataset (PyTorch's worker makes its fetcher
        anew each pass, after ``worker_init_fn`` the first time)."""
        with self:
            try:
                self.stream = iter(self.dataset)
            except Exception as error:  # (raised at the worker's next batch, named as the worker's, as PyTorch's)
                self.failure = error

    def make(self, make_batch, *args):
        """``make_batch(self, *args)`` in this worker (it reads the worker's dataset or stream); an exception
        is raised again as PyTorch's loader raises a worker's: its class, with a message naming the worker and
        holding its traceback."""
        with self:
            try:
                if self.failure is not None:
                    failure, self.failure = self.failure, None
                    raise failure
                return make_batch(self, *args)
            except StopIteration:
                raise
            except Exception as error:
                kind = type(error)
                message = (f"Caught {kind.__name__} in DataLoader worker process {self.id}.\n"
                           f"Original {''.join(traceback.format_exception(error))}")
        _raise_as_pytorch(kind, message)  # (outside the worker: the main process's streams are back)


class _KeyErrorMessage(str):
    """A KeyError's message (KeyError shows its argument by repr, which would print the traceback on one line)."""

    __slots__ = ()

    def __repr__(self):
        return self


def _raise_as_pytorch(kind, message):
    if kind is KeyError:
        message = _KeyErrorMessage(message)
    elif getattr(kind, "message", None):  # (exceptions whose first argument is not their message)
        raise kind(message=message)
    try:
        error = kind(message)
    except Exception:  # (an exception that takes other arguments)
        raise RuntimeError(message) from None
    raise error


def _own_copy(dataset, memo):
    """The worker's copy of the dataset: a deep copy, as a forked process's memory is, so that whatever a
    worker changes (a shard's bounds set in ``worker_init_fn``, a cache it fills, a random generator the
    dataset holds and draws from) is its own: each worker's generator starts where the dataset's stood,
    and the main process's dataset is left as it was. Memory a fork shares stays shared (``memo``, from
    ``_kept_shared``), and ``memo`` is left mapping each object copied to its copy."""
    try:
        return copy.deepcopy(dataset, memo)
    except Exception:
        pass
    # a dataset holding something that cannot be copied (an open file, a lock): its own shallow copy, each of
    # whose attributes is copied where it can be, the others shared with the main process's dataset
    try:
        duplicate = copy.copy(dataset)
    except Exception:
        return dataset
    memo[id(dataset)] = duplicate
    attributes = getattr(duplicate, "__dict__", None)
    if attributes is not None:
        for name, value in attributes.items():
            try:
                attributes[name] = copy.deepcopy(value, memo)
            except Exception:
                pass
    return duplicate


def _referring_to_the_copy(worker_init_fn, copied):
    """``worker_init_fn`` as a forked worker has it: a method of the dataset (or of anything in it), or a
    ``functools.partial`` given the dataset, works on the worker's copy (``copied``: the memo of the copy, each
    object of the dataset to its copy). Only those references are swapped: what else the function holds stays
    the main process's, rather than being copied for every worker at every pass."""
    def in_worker(item):
        return copied.get(id(item), item)

    if isinstance(worker_init_fn, types.MethodType):
        return types.MethodType(worker_init_fn.__func__, in_worker(worker_init_fn.__self__))
    if isinstance(worker_init_fn, functools.partial):
        return functools.partial(worker_init_fn.func, *map(in_worker, worker_init_fn.args),
                                 **{name: in_worker(value) for name, value in worker_init_fn.keywords.items()})
    return worker_init_fn


# Arrays at least this large are shared with the workers rather than copied (see _kept_shared)
SHARED_FROM_BYTES = 1 << 20


def _kept_shared(dataset):
    """A ``deepcopy`` memo that maps to themselves the tensors and arrays of the dataset that a worker shares
    with the main process rather than copying. A fork shares all memory until it is written (copy on write):
    tensors in shared memory (``share_memory_()``: a cache every worker fills) and arrays on memory NumPy did
    not allocate (a memory-mapped file, an ``mp.Array``) stay shared after a write too, so they are shared
    here; and so is the bulk of the data (arrays of at least SHARED_FROM_BYTES), which a copy for every worker
    every pass would take longer to make than the pass (MNIST's 188 MB). A worker that writes into those in
    place writes the main process's (PyTorch's would write its own copy); smaller arrays, the state a dataset
    keeps beside its data, are copied."""
    memo, seen, pending = {}, set(), [dataset]
    while pending:
        item = pending.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, (Tensor, numpy.ndarray)):
            array = item._data if isinstance(item, Tensor) else item
            if not isinstance(array, numpy.ndarray) or array.nbytes >= SHARED_FROM_BYTES \
                    or memory_owner(array).base is not None:  # (a shared tensor's memory is a segment: an mmap)
                memo[id(item)] = item
        elif isinstance(item, dict):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple, set, frozenset)):
            pending.extend(item)
        elif not isinstance(item, (type, types.ModuleType, types.FunctionType)) and hasattr(item, "__dict__"):
            pending.extend(vars(item).values())
    return memo
