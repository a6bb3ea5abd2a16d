"""``DistributedSampler``: each rank's share of a dataset's indices, as PyTorch's.

Every rank draws the same permutation (seeded by ``seed + epoch``, so call
``set_epoch`` at the start of each epoch), pads it by repeating its first indices
to a multiple of the number of replicas (or, with ``drop_last``, cuts the tail),
and takes every ``num_replicas``-th index from its ``rank``:

    indices[rank : total : num_replicas]

so the ranks' shares are disjoint (but for the padding) and of equal length. The
permutation is PyTorch's: ``randperm`` from a Generator seeded ``seed + epoch``, so a
run's data order (and its resume at an epoch) is the one PyTorch gives.
"""

import math

import numpy

from .sampler import Sampler


class DistributedSampler(Sampler):
    """This rank's share of ``dataset``'s indices (see the module's docstring)."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None or rank is None:
            import autograd.distributed as dist

            if not dist.is_initialized():
                # a ValueError, as PyTorch's (its process group raises it)
                raise ValueError("DistributedSampler needs num_replicas and rank, or an initialized process "
                                 "group: the default process group has not been initialized "
                                 "(autograd.distributed.init_process_group)")
            num_replicas = dist.get_world_size() if num_replicas is None else num_replicas
            rank = dist.get_rank() if rank is None else rank
        if rank >= num_replicas or rank < 0:
            raise ValueError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        if drop_last and len(dataset) % num_replicas != 0:
            # leave out the tail so that every rank gets the same number of samples
            self.num_samples = math.ceil((len(dataset) - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(len(dataset) / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def indices(self):
        """This rank's indices for the current epoch, as a NumPy array."""
        size = len(self.dataset)
        if self.shuffle:
            import autograd

            generator = autograd.Generator()
            generator.manual_seed(self.seed + self.epoch)
            order = autograd.randperm(size, generator=generator).numpy()
        else:
            order = numpy.arange(size)
        if not self.drop_last:
            padding = self.total_size - size
            if padding > 0:
                order = numpy.concatenate([order, numpy.resize(order, padding)])  # repeats from the start
        else:
            order = order[:self.total_size]
        return order[self.rank:self.total_size:self.num_replicas]

    def __iter__(self):
        return iter(self.indices().tolist())

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """Make the next epoch's permutation seed + epoch: call it before each epoch so that all
        ranks shuffle alike and differently from the last epoch."""
        self.epoch = epoch
