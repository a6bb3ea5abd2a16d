"""``DataLoader``, as ``torch.utils.data``'s: batches of a dataset, in order or shuffled anew every epoch.

The lecture's three regimes of gradient descent are three batch sizes:
    DataLoader(data, batch_size=len(data))            vanilla (full-batch)
    DataLoader(data, batch_size=1, shuffle=True)      stochastic
    DataLoader(data, batch_size=32, shuffle=True)     mini-batch

With ``num_workers = W > 0`` the batches are made by W workers with PyTorch's seeds, each with its
own copy of the dataset, ``worker_init_fn`` and ``get_worker_info()`` (workers.py): the batches,
and what the dataset draws at random, are PyTorch's. The workers take turns in the main process
rather than running in processes of their own, so loading is not parallel. ``pin_memory``,
``timeout`` and ``multiprocessing_context`` are accepted and checked as PyTorch checks them;
``persistent_workers`` keeps the workers (their copies of the dataset, their random streams) from
one pass to the next, and as PyTorch's they make the ``prefetch_factor`` batches per worker sent
ahead of a pass left unfinished before the next pass begins.

As PyTorch's, a loader's ``dataset``, ``batch_size``, ``sampler``,
``batch_sampler``, ``drop_last`` and ``persistent_workers`` are fixed once it is
made (setting one is a ValueError: they decide the batches together), and
``iter(loader)`` is an iterator with a length, the loader's.
"""

import collections
import multiprocessing
import os
import warnings
from typing import Generic, TypeVar

from ...random import drawn_seed
from .collate import default_collate, default_convert
from .dataset import IterableDataset, batches_itself
from .sampler import BatchSampler, RandomSampler, SequentialSampler
from .workers import Worker, get_worker_info  # noqa: F401  (get_worker_info: torch.utils.data.dataloader's too)

T_co = TypeVar("T_co", covariant=True)


class DataLoader(Generic[T_co]):
    """Iterate over ``dataset`` in batches (see the module's docstring for the options); typed code may
    write ``DataLoader[list[Tensor]]``, as with PyTorch's."""

    _FIXED = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")
    _initialized = False

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0, worker_init_fn=None,
                 multiprocessing_context=None, generator=None, *, prefetch_factor=None, persistent_workers=False,
                 pin_memory_device="", in_order=True):
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable "
                             "multiprocessing.")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError("prefetch_factor option could only be specified in multiprocessing."
                             "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None.")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        self.dataset, self.num_workers, self.pin_memory, self.timeout = dataset, num_workers, pin_memory, timeout
        self.worker_init_fn, self.generator = worker_init_fn, generator
        self.multiprocessing_context = _checked_context(multiprocessing_context, num_workers)
        self.prefetch_factor, self.persistent_workers = prefetch_factor, persistent_workers
        self.pin_memory_device, self.in_order = pin_memory_device, in_order

        if isinstance(dataset, IterableDataset):
            if shuffle not in (False, None):
                raise ValueError(f"DataLoader with IterableDataset: expected unspecified shuffle option, but got "
                                 f"shuffle={shuffle}")
            if sampler is not None:
                raise ValueError(f"DataLoader with IterableDataset: expected unspecified sampler option, but got "
                                 f"sampler={sampler}")
            if batch_sampler is not None:
                raise ValueError(f"DataLoader with IterableDataset: expected unspecified batch_sampler option, but "
                                 f"got batch_sampler={batch_sampler}")
        else:
            shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, "
                                 "and drop_last")
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with "
                             "drop_last")
        if batch_size is not None and (not isinstance(batch_size, int) or isinstance(batch_size, bool)
                                       or batch_size <= 0):
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        if sampler is None and not isinstance(dataset, IterableDataset):
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None and sampler is not None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.batch_size, self.drop_last = batch_size, drop_last
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self._default_collate = collate_fn is None
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self._workers = None  # the workers kept from pass to pass (persistent_workers)
        self._last_pass = None  # (and the pass they last worked for)
        # an IterableDataset's length as len(loader) last read it (None before): a pass that yields more batches
        # than that warns, as PyTorch's (which compares its count of batches with the dataset's length)
        self._IterableDataset_len_called = None
        self._initialized = True
        self.check_worker_number_rationality()

    def __setattr__(self, name, value):
        if self._initialized and name in self._FIXED:
            raise ValueError(f"{name} attribute should not be set after {type(self).__name__} is initialized")
        super().__setattr__(name, value)

    @property
    def _auto_collation(self):
        return self.batch_sampler is not None or (isinstance(self.dataset, IterableDataset)
                                                  and self.batch_size is not None)

    def __len__(self):
        if isinstance(self.dataset, IterableDataset):
            length = len(self.dataset)  # a TypeError when the dataset has no length, as PyTorch
            self._IterableDataset_len_called = length
            if self.batch_size is None:
                return length
            return length // self.batch_size if self.drop_last else -(-length // self.batch_size)
        return len(self.batch_sampler if self.batch_sampler is not None else self.sampler)

    def __iter__(self):
        if self.num_workers:
            self.check_worker_number_rationality()
        return _LoaderIterator(self)

    def check_worker_number_rationality(self):
        """Warn, as PyTorch's loader does at its making and at each pass with workers, when it would start more
        worker processes than the CPUs this process may run on (here they take turns in this process, but a
        program written for PyTorch hears what PyTorch would tell it)."""
        if not self.num_workers:
            return
        cpuset_checked = hasattr(os, "sched_getaffinity")
        suggested = len(os.sched_getaffinity(0)) if cpuset_checked else os.cpu_count()
        if suggested is not None and self.num_workers <= suggested:
            return
        if suggested is None:
            suggestion = "DataLoader is not able to compute a suggested max number of worker in current system."
        else:
            suggestion = (f"Our suggested max number of worker in current system is {suggested}"
                          f"{'' if cpuset_checked else ' (`cpuset` is not taken into account)'}, which is smaller "
                          "than what this DataLoader is going to create.")
        warnings.warn(f"This DataLoader will create {self.num_workers} worker processes in total. {suggestion} "
                      "Please be aware that excessive worker creation might get DataLoader running slow or even "
                      "freeze, lower the worker number to avoid potential slowness/freeze if necessary.",
                      stacklevel=2)

    def _finish(self, batch):
        """What is done to each batch once it is made (nothing here; autograd.data's loader transforms it)."""
        return batch

    def _fetch(self, indices, dataset=None):
        """The batch of the samples at ``indices`` of ``dataset`` (the loader's, or a worker's copy of it)."""
        dataset = self.dataset if dataset is None else dataset
        if self._default_collate and batches_itself(dataset):
            return dataset.batch(indices)  # the same batch, made without per-sample Python
        if hasattr(dataset, "__getitems__"):
            return self.collate_fn(dataset.__getitems__(indices))
        return self.collate_fn([dataset[index] for index in indices])


def _checked_context(context, num_workers):
    """``multiprocessing_context`` checked as PyTorch checks it: a start method's name (made its context) or a
    context, and only with ``num_workers > 0``."""
    if context is None:
        return None
    if num_workers == 0:
        raise ValueError("multiprocessing_context can only be used with multi-process loading (num_workers > 0), "
                         f"but got num_workers={num_workers}")
    if isinstance(context, str):
        methods = multiprocessing.get_all_start_methods()
        if context not in methods:
            raise ValueError(f"multiprocessing_context option should specify a valid start method in {methods!r}, "
                             f"but got multiprocessing_context={context!r}")
        context = multiprocessing.get_context(context)
    if not isinstance(context, multiprocessing.context.BaseContext):
        raise TypeError("multiprocessing_context option should be a valid context object or a string specifying the "
                        f"start method, but got multiprocessing_context={context}")
    return context


class _LoaderIterator:
    """One pass over a loader: its batches, and (for a map-style dataset) its length.

    Each ``next`` takes the next indices from the sampler (or the next samples from the stream)
    and fetches them then, so an error raised by the dataset for one batch reaches the caller and
    the pass goes on with the next batch, as PyTorch's. With workers, batch k of a map-style dataset
    is made by worker k mod W, and an IterableDataset's workers give a batch each in turn until
    each one's copy is exhausted (workers.py)."""

    def __init__(self, loader):
        self._loader = loader
        self._reported_length, self._yielded = loader._IterableDataset_len_called, 0
        self._sent = collections.deque()  # (worker, indices) of the batches sent to the workers, not yet made
        if loader.persistent_workers and loader._workers is not None:  # the workers of an earlier pass go on
            self._workers = loader._workers
            loader._last_pass._finish_sent_batches()
        else:
            # PyTorch's pass draws its workers' base seed first, from the loader's generator (workers or not), so
            # the sampler's draws after it are PyTorch's
            self._base_seed = drawn_seed(loader.generator)
            self._workers = self._start_workers() if loader.num_workers else None
        self._turn = 0  # the worker that makes the next batch
        if isinstance(loader.dataset, IterableDataset):
            if self._workers is None:
                self._samples = iter(loader.dataset)
            else:
                for worker in self._workers:
                    worker.start_stream()
                self._active = set(self._workers)  # those whose copies are not exhausted yet
        else:
            self._indices = iter(loader.batch_sampler if loader.batch_sampler is not None else loader.sampler)
        if self._workers is not None:
            for _ in range(len(self._workers) * (loader.prefetch_factor or 2)):
                self._send_next_indices()
        if loader.persistent_workers:
            object.__setattr__(loader, "_last_pass", self)

    def _send_next_indices(self):
        """Take the next batch's indices from the sampler (for an IterableDataset: the next batch of its
        stream) for the worker whose turn it is. PyTorch's loader keeps ``prefetch_factor`` batches per
        worker sent ahead of the one taken (from the start of the pass, so the sampler draws its order at
        ``iter(loader)``): a worker makes each batch sent to it, in turn."""
        if isinstance(self._loader.dataset, IterableDataset):
            if not self._active:
                return
            while self._workers[self._turn] not in self._active:  # (the workers whose streams ran out)
                self._turn = (self._turn + 1) % len(self._workers)
            indices = None
        else:
            indices = next(self._indices, None)
            if indices is None:
                return
        self._sent.append((self._workers[self._turn], indices))
        self._turn = (self._turn + 1) % len(self._workers)

    def _make_sent(self, worker, indices):
        """The batch sent to ``worker``: of the samples at ``indices``, or the next of the worker's stream."""
        if indices is None:
            return worker.make(lambda worker: self._next_from_stream(worker.stream))
        return worker.make(lambda worker, indices: self._make(indices, worker.dataset), indices)

    def _finish_sent_batches(self):
        """The batches sent to persistent workers in a pass left unfinished (a ``break``): PyTorch's workers
        make them before the next pass begins, drawing from their random streams, and the loader drops them."""
        while self._sent:
            worker, indices = self._sent.popleft()
            if indices is None and worker not in self._active:
                continue
            try:
                self._make_sent(worker, indices)
            except StopIteration:
                self._active.discard(worker)
            except Exception:
                pass  # (PyTorch's loader drops a failed batch of an abandoned pass with the others)

    def _start_workers(self):
        loader = self._loader
        workers = [Worker(loader, worker_id, self._base_seed) for worker_id in range(loader.num_workers)]
        if loader.persistent_workers:
            object.__setattr__(loader, "_workers", workers)
        return workers

    def __iter__(self):
        return self

    def __next__(self):
        loader = self._loader
        if isinstance(loader.dataset, IterableDataset):
            batch = self._next_from_stream() if self._workers is None else self._next_from_workers()
            self._yielded += 1
            if self._reported_length is not None and self._yielded > self._reported_length:
                self._warn_past_reported_length()
        elif self._workers is None:
            batch = self._make(next(self._indices), loader.dataset)
        else:
            if not self._sent:
                raise StopIteration
            worker, indices = self._sent.popleft()
            self._send_next_indices()  # (before the batch is made: its error still sends the next one)
            batch = self._make_sent(worker, indices)
        return loader._finish(batch)

    def _warn_past_reported_length(self):
        """PyTorch's warning when a pass over an IterableDataset yields more batches than the dataset's length as
        ``len(loader)`` read it before the pass (a dataset not sharded among the workers gives each one it all)."""
        message = (f"Length of IterableDataset {self._loader.dataset} was reported to be {self._reported_length}"
                   f"(when accessing len(dataloader)), but {self._yielded} samples have been fetched. ")
        if self._loader.num_workers > 0:
            message += ("For multiprocessing data-loading, this could be caused by not properly configuring the "
                        "IterableDataset replica at each worker. Please see "
                        "https://pytorch.org/docs/stable/data.html#torch.utils.data.IterableDataset for examples.")
        warnings.warn(message, stacklevel=3)

    def _make(self, indices, dataset):
        loader = self._loader
        if loader.batch_sampler is not None:
            return loader._fetch(indices, dataset)
        return loader.collate_fn(dataset[indices])

    def _next_from_workers(self):
        """The next batch of an IterableDataset's workers: each batch sent to a worker is the next of its stream;
        a worker whose stream has run out is sent no more, and the batches sent to it before are passed over."""
        while self._sent:
            worker, _ = self._sent.popleft()
            if worker not in self._active:
                continue
            try:
                batch = self._make_sent(worker, None)
            except StopIteration:
                self._active.discard(worker)
                self._send_next_indices()
                continue
            self._send_next_indices()
            return batch
        raise StopIteration

    def _next_from_stream(self, samples=None):
        loader = self._loader
        samples = self._samples if samples is None else samples
        if loader.batch_size is None:
            return loader.collate_fn(next(samples))
        batch = []
        for sample in samples:
            batch.append(sample)
            if len(batch) == loader.batch_size:
                break
        if not batch or (len(batch) < loader.batch_size and loader.drop_last):
            raise StopIteration
        return loader.collate_fn(batch)

    def __len__(self):
        if isinstance(self._loader.dataset, IterableDataset):  # a stream's length is unknown to the pass
            raise TypeError("an iterator over an IterableDataset has no len()")
        return len(self._loader)
