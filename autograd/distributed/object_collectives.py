"""Collectives of picklable Python objects, as ``torch.distributed``'s: ``all_gather_object``,
``gather_object``, ``broadcast_object_list`` (metrics, configurations, file names...).

As PyTorch does, each object is pickled into bytes that travel as a uint8 tensor through the
tensor collectives (so they keep their timeout): first every rank's byte count, then the
bytes, each padded to the longest.
"""

import pickle

import numpy

from ..tensor import Tensor
from . import collectives
from . import process_group as pg


def _pickled(obj):
    return numpy.frombuffer(pickle.dumps(obj), dtype=numpy.uint8)


def _padded(data, length):
    padded = numpy.zeros(length, dtype=numpy.uint8)
    padded[:data.size] = data
    return padded


def _gathered_bytes(obj, dst):
    """Every rank's pickled ``obj`` (on every rank when ``dst`` is None, else only on ``dst``)."""
    data = _pickled(obj)
    size = pg._State.size
    lengths = Tensor._make(numpy.zeros(size, dtype=numpy.int64))
    collectives.all_gather_into_tensor(lengths, Tensor._make(numpy.array([data.size], dtype=numpy.int64)))
    longest = int(lengths._data.max())
    mine = Tensor._make(_padded(data, longest))
    if dst is None:
        received = Tensor._make(numpy.zeros((size, longest), dtype=numpy.uint8))
        collectives.all_gather_into_tensor(received, mine)
        return received._data, lengths._data
    parts = [Tensor._make(numpy.zeros(longest, dtype=numpy.uint8)) for _ in range(size)] if pg._State.rank == dst \
        else None
    collectives.gather(mine, parts, dst=dst)
    return (None if parts is None else [p._data for p in parts]), lengths._data


def all_gather_object(object_list, obj, group=None):
    """``object_list[i]`` on every rank becomes (a copy of) rank i's ``obj``."""
    collectives._check_group(group)
    received, lengths = _gathered_bytes(obj, None)
    for i, (row, length) in enumerate(zip(received, lengths)):
        object_list[i] = pickle.loads(row[:length].tobytes())


def gather_object(obj, object_gather_list=None, dst=0, group=None, group_dst=None):
    """On rank ``dst``, ``object_gather_list[i]`` becomes rank i's ``obj`` (only ``dst`` gives the list)."""
    collectives._check_group(group)
    dst = collectives._rank_argument(dst if group_dst is None else group_dst, "dst")
    if pg._State.rank == dst and (object_gather_list is None or len(object_gather_list) != pg._State.size):
        raise ValueError(f"gather_object: rank {dst} (dst) must give object_gather_list with {pg._State.size} "
                         f"items, got {None if object_gather_list is None else len(object_gather_list)}")
    received, lengths = _gathered_bytes(obj, dst)
    if received is not None:
        for i, (row, length) in enumerate(zip(received, lengths)):
            object_gather_list[i] = pickle.loads(row[:length].tobytes())


def broadcast_object_list(object_list, src=0, group=None, device=None, group_src=None):
    """Every rank's ``object_list`` items become (copies of) rank ``src``'s, in place; every rank
    gives a list of the same length."""
    collectives._check_group(group)
    src = collectives._rank_argument(src if group_src is None else group_src, "src")
    sending = pg._State.rank == src
    pickled = [_pickled(item) for item in object_list] if sending else []
    lengths = Tensor._make(numpy.array([p.size for p in pickled] if sending else [0] * len(object_list),
                                       dtype=numpy.int64))
    collectives.broadcast(lengths, src=src)
    data = Tensor._make(numpy.concatenate(pickled) if sending and pickled
                        else numpy.zeros(int(lengths._data.sum()), dtype=numpy.uint8))
    collectives.broadcast(data, src=src)
    if not sending:
        ends = numpy.cumsum(lengths._data)
        for i, (start, end) in enumerate(zip(ends - lengths._data, ends)):
            object_list[i] = pickle.loads(data._data[start:end].tobytes())
