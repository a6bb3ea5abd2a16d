"""Collectives on Tensors, as ``torch.distributed``'s: ``all_reduce``, ``broadcast``,
``all_gather``, ``reduce``, ``reduce_scatter``, ``scatter``, ``gather``, ``barrier``.

Each moves the tensors' NumPy arrays with mpi4py's buffer methods (capitalised:
``Iallreduce``, ``Ibcast``, ...), never pickling, and writes the result into the
tensor's own array in place. Every one is started non-blocking; ``async_op=True``
returns the ``Work`` handle, otherwise it is waited for here, with the process
group's timeout (see ``process_group.wait_all``).
"""

import enum

import numpy

from .. import grad_mode
from ..graph import no_grad
from ..tensor import Tensor
from . import process_group as pg


class ReduceOp(enum.Enum):
    """How ``all_reduce`` and ``reduce`` combine the ranks' tensors elementwise."""

    SUM = "SUM"
    AVG = "AVG"  # the sum divided by the world size
    PRODUCT = "PRODUCT"
    MIN = "MIN"
    MAX = "MAX"
    BAND = "BAND"
    BOR = "BOR"
    BXOR = "BXOR"

    def __repr__(self):
        return f"<ReduceOp.{self.name}>"


def _mpi_op(op):
    MPI = pg._State.MPI
    if not isinstance(op, ReduceOp):
        raise ValueError(f"op must be a ReduceOp (SUM, AVG, PRODUCT, MIN, MAX, BAND, BOR, BXOR), got {op!r}")
    return {ReduceOp.SUM: MPI.SUM, ReduceOp.AVG: MPI.SUM, ReduceOp.PRODUCT: MPI.PROD, ReduceOp.MIN: MPI.MIN,
            ReduceOp.MAX: MPI.MAX, ReduceOp.BAND: MPI.BAND, ReduceOp.BOR: MPI.BOR, ReduceOp.BXOR: MPI.BXOR}[op]


class Work:
    """A collective in flight. ``wait()`` blocks until it is done (and the result is in the
    tensors); ``is_completed()`` asks without blocking."""

    def __init__(self, requests, what, sequence, finish=None, result=()):
        self._requests, self._what, self._sequence = list(requests), what, sequence
        self._finish, self._result, self._done = finish, list(result), False

    def _complete(self):
        self._done = True
        if self._finish is not None:
            finish, self._finish = self._finish, None
            with grad_mode.no_grad():
                finish()

    def wait(self, timeout=None):
        if not self._done:
            pg.wait_all(self._requests, self._what, self._sequence, timeout)
            self._complete()
        return True

    def is_completed(self):
        if not self._done and pg._State.MPI.Request.Testall(self._requests):
            self._complete()
        return self._done

    def is_success(self):
        return self.is_completed()

    def result(self):
        self.wait()
        return self._result

    def __repr__(self):
        return f"Work({self._what} #{self._sequence}, {'completed' if self._done else 'in flight'})"


def _check_group(group):
    pg._require()
    if group is not None and group is not WORLD:
        raise ValueError(f"only the default process group (group=None) is supported, got {group!r}")


class _World:
    def __repr__(self):
        return "<default process group: COMM_WORLD>"


WORLD = _World()  # torch.distributed.group.WORLD


def new_group(ranks=None, timeout=None, backend=None, pg_options=None, use_local_synchronization=False,
              group_desc=None, device_id=None, sort_ranks=True):
    """A group of every rank is the default group (``WORLD``); smaller groups are not supported."""
    pg._require()
    if ranks is not None and sorted(ranks) != list(range(pg._State.size)):
        raise NotImplementedError(f"new_group: only the group of every rank (0 to {pg._State.size - 1}) is supported, "
                                  f"got ranks={list(ranks)}")
    return WORLD


def get_global_rank(group, group_rank):
    """The global rank of ``group_rank`` in ``group``: the default group's ranks are the global ones."""
    _check_group(group)
    return group_rank


def get_group_rank(group, global_rank):
    """The rank in ``group`` of global rank ``global_rank``: the same in the default group."""
    _check_group(group)
    return global_rank


def _tensor_array(tensor, name):
    data = getattr(tensor, "_data", None)
    if data is None:
        raise TypeError(f"{name} must be a Tensor, got {type(tensor).__name__}")
    return data


def _buffer(array):
    """The array itself when MPI can write into it, else a contiguous copy (copied back after)."""
    return array if array.flags.c_contiguous and array.flags.writeable else numpy.ascontiguousarray(array)


def _rank_argument(value, name):
    if not isinstance(value, int) or not 0 <= value < pg._State.size:
        raise ValueError(f"{name}={value!r} is not a rank of this group (0 to {pg._State.size - 1})")
    return value


def _start(what, launch, finish=None, async_op=False, result=()):
    sequence = pg._arrive()
    work = Work(launch(), what, sequence, finish, result)
    if async_op:
        return work
    work.wait()
    return None


def _copy_back(array, buffer):
    if buffer is not array:
        array[...] = buffer


def _reducing(array, op, what):
    """(MPI's op, the buffer it reduces ``array`` into, finish: the buffer averaged for AVG and copied back into
    ``array``), after refusing AVG of integers: the one reading of ``op`` of the reducing collectives."""
    if op is ReduceOp.AVG and array.dtype.kind not in "fc":
        raise TypeError(f"{what}: ReduceOp.AVG needs a floating-point tensor, got {array.dtype}")
    mpi_op, buffer = _mpi_op(op), _buffer(array)

    def finish():
        if op is ReduceOp.AVG:
            buffer[...] /= pg._State.size
        _copy_back(array, buffer)

    return mpi_op, buffer, finish


def all_reduce(tensor, op=ReduceOp.SUM, group=None, async_op=False):
    """Every rank's ``tensor`` becomes op(tensor of rank 0, ..., tensor of rank N-1), in place."""
    _check_group(group)
    mpi_op, buffer, finish = _reducing(_tensor_array(tensor, "tensor"), op, "all_reduce")
    return _start(f"all_reduce({op.name}) of shape {tuple(tensor.shape)}",
                  lambda: [pg._State.comm.Iallreduce(pg._State.MPI.IN_PLACE, buffer, op=mpi_op)],
                  finish, async_op, [tensor])


def broadcast(tensor, src=0, group=None, async_op=False, group_src=None):
    """Every rank's ``tensor`` becomes rank ``src``'s, in place."""
    _check_group(group)
    src = _rank_argument(src if group_src is None else group_src, "src")
    array = _tensor_array(tensor, "tensor")
    buffer = _buffer(array)
    return _start(f"broadcast from rank {src} of shape {tuple(tensor.shape)}",
                  lambda: [pg._State.comm.Ibcast(buffer, root=src)],
                  lambda: _copy_back(array, buffer), async_op, [tensor])


def _check_one_per_rank(what, tensors, name, like, like_name):
    """``tensors`` (the argument ``name`` of the collective ``what``) holds one tensor per rank, each of ``like``'s
    shape: all_gather's tensor_list, reduce_scatter's input_list, scatter's scatter_list."""
    if len(tensors) != pg._State.size:
        raise ValueError(f"{what}: {name} has {len(tensors)} tensors, the world size is {pg._State.size}")
    for i, t in enumerate(tensors):
        if tuple(t.shape) != tuple(like.shape):
            raise ValueError(f"{what}: {name}[{i}] has shape {tuple(t.shape)}, the {like_name} {tuple(like.shape)}")


def all_gather(tensor_list, tensor, group=None, async_op=False):
    """``tensor_list[i]`` on every rank becomes rank i's ``tensor``."""
    _check_group(group)
    array = _tensor_array(tensor, "tensor")
    _check_one_per_rank("all_gather", tensor_list, "tensor_list", tensor, "tensor")
    send = numpy.ascontiguousarray(array)
    received = numpy.empty((pg._State.size,) + array.shape, dtype=array.dtype)

    def finish():
        with no_grad():
            for t, part in zip(tensor_list, received):
                t.copy_(Tensor._make(part))

    return _start(f"all_gather of shape {tuple(tensor.shape)}",
                  lambda: [pg._State.comm.Iallgather(send, received)], finish, async_op, tensor_list)


def all_gather_into_tensor(output_tensor, input_tensor, group=None, async_op=False):
    """``output_tensor`` (world size × input's first dim) becomes the ranks' inputs, concatenated."""
    _check_group(group)
    array = _tensor_array(input_tensor, "input_tensor")
    output = _tensor_array(output_tensor, "output_tensor")
    if output.size != array.size * pg._State.size:
        raise ValueError(f"all_gather_into_tensor: output of shape {tuple(output_tensor.shape)} cannot hold "
                         f"{pg._State.size} inputs of shape {tuple(input_tensor.shape)}")
    send, buffer = numpy.ascontiguousarray(array), _buffer(output)
    return _start(f"all_gather_into_tensor of shape {tuple(input_tensor.shape)}",
                  lambda: [pg._State.comm.Iallgather(send, buffer)],
                  lambda: _copy_back(output, buffer), async_op, [output_tensor])


def reduce(tensor, dst=0, op=ReduceOp.SUM, group=None, async_op=False, group_dst=None):
    """Rank ``dst``'s ``tensor`` becomes op over every rank's; the others' are left as they were."""
    _check_group(group)
    dst = _rank_argument(dst if group_dst is None else group_dst, "dst")
    mpi_op, buffer, finish = _reducing(_tensor_array(tensor, "tensor"), op, "reduce")
    root = pg._State.rank == dst

    def launch():
        MPI, comm = pg._State.MPI, pg._State.comm
        if root:
            return [comm.Ireduce(MPI.IN_PLACE, buffer, op=mpi_op, root=dst)]
        return [comm.Ireduce(buffer, None, op=mpi_op, root=dst)]

    return _start(f"reduce({op.name}) to rank {dst} of shape {tuple(tensor.shape)}", launch,
                  finish if root else None, async_op, [tensor])  # (the others' are left as they were)


def _reduce_scatter(output, send, op, what, async_op):
    """Rank i's ``output`` becomes op over the ranks of block i of their ``send`` (one block a rank)."""
    mpi_op, buffer, finish = _reducing(_tensor_array(output, "output"), op, what)
    return _start(f"{what}({op.name}) of shape {tuple(output.shape)}",
                  lambda: [pg._State.comm.Ireduce_scatter_block(send, buffer, op=mpi_op)], finish, async_op, [output])


def reduce_scatter(output, input_list, op=ReduceOp.SUM, group=None, async_op=False):
    """Rank i's ``output`` becomes op over every rank's ``input_list[i]``."""
    _check_group(group)
    _check_one_per_rank("reduce_scatter", input_list, "input_list", output, "output")
    dtype = _tensor_array(output, "output").dtype
    send = numpy.ascontiguousarray(numpy.stack([t._data for t in input_list]).astype(dtype, copy=False))
    return _reduce_scatter(output, send, op, "reduce_scatter", async_op)


def reduce_scatter_tensor(output, input, op=ReduceOp.SUM, group=None, async_op=False):
    """``input`` (world size × output's elements) cut into one block a rank; rank i's ``output``
    becomes op over every rank's block i."""
    _check_group(group)
    array = _tensor_array(input, "input")
    if array.size != _tensor_array(output, "output").size * pg._State.size:
        raise ValueError(f"reduce_scatter_tensor: input of shape {tuple(input.shape)} is not {pg._State.size} "
                         f"outputs of shape {tuple(output.shape)}")
    return _reduce_scatter(output, numpy.ascontiguousarray(array), op, "reduce_scatter_tensor", async_op)


def scatter(tensor, scatter_list=None, src=0, group=None, async_op=False, group_src=None):
    """Rank i's ``tensor`` becomes ``scatter_list[i]`` of rank ``src`` (only ``src`` gives the list)."""
    _check_group(group)
    src = _rank_argument(src if group_src is None else group_src, "src")
    array = _tensor_array(tensor, "tensor")
    buffer = _buffer(array)
    send = None
    if pg._State.rank == src:
        if scatter_list is None or len(scatter_list) != pg._State.size:
            raise ValueError(f"scatter: rank {src} (src) must give scatter_list with {pg._State.size} tensors, "
                             f"got {None if scatter_list is None else len(scatter_list)}")
        _check_one_per_rank("scatter", scatter_list, "scatter_list", tensor, "tensor")
        send = numpy.ascontiguousarray(numpy.stack([t._data for t in scatter_list]).astype(array.dtype, copy=False))
    elif scatter_list:
        raise ValueError(f"scatter: only rank {src} (src) gives scatter_list; rank {pg._State.rank} gave one")
    return _start(f"scatter from rank {src} of shape {tuple(tensor.shape)}",
                  lambda: [pg._State.comm.Iscatter(send, buffer, root=src)],
                  lambda: _copy_back(array, buffer), async_op, [tensor])


def gather(tensor, gather_list=None, dst=0, group=None, async_op=False, group_dst=None):
    """Rank ``dst``'s ``gather_list[i]`` becomes rank i's ``tensor`` (only ``dst`` gives the list)."""
    _check_group(group)
    dst = _rank_argument(dst if group_dst is None else group_dst, "dst")
    array = _tensor_array(tensor, "tensor")
    send = numpy.ascontiguousarray(array)
    received = None
    if pg._State.rank == dst:
        if gather_list is None or len(gather_list) != pg._State.size:
            raise ValueError(f"gather: rank {dst} (dst) must give gather_list with {pg._State.size} tensors, "
                             f"got {None if gather_list is None else len(gather_list)}")
        received = numpy.empty((pg._State.size,) + array.shape, dtype=array.dtype)
    elif gather_list:
        raise ValueError(f"gather: only rank {dst} (dst) gives gather_list; rank {pg._State.rank} gave one")

    def finish():
        if received is not None:
            with no_grad():
                for t, part in zip(gather_list, received):
                    t.copy_(Tensor._make(part))

    return _start(f"gather to rank {dst} of shape {tuple(tensor.shape)}",
                  lambda: [pg._State.comm.Igather(send, received, root=dst)], finish, async_op,
                  gather_list or [])


def _all_to_all(send, receive, what, async_op, result, finish=None):
    return _start(what, lambda: [pg._State.comm.Ialltoall(send, receive)], finish, async_op, result)


def all_to_all_single(output, input, output_split_sizes=None, input_split_sizes=None, group=None, async_op=False):
    """``input``'s dim 0 cut into one equal block a rank: rank j's ``output`` block i becomes rank i's
    ``input`` block j (uneven ``*_split_sizes`` are not supported)."""
    _check_group(group)
    size = pg._State.size
    for name, splits in (("output_split_sizes", output_split_sizes), ("input_split_sizes", input_split_sizes)):
        if splits and (len(splits) != size or len(set(splits)) != 1):
            raise NotImplementedError(f"all_to_all_single: only equal splits are supported, got {name}={splits}")
    array, out = _tensor_array(input, "input"), _tensor_array(output, "output")
    if array.shape != out.shape or (array.ndim and array.shape[0] % size):
        raise ValueError(f"all_to_all_single: input {tuple(input.shape)} and output {tuple(output.shape)} must have "
                         f"the same shape, with dim 0 divisible by the world size {size}")
    buffer = _buffer(out)
    return _all_to_all(numpy.ascontiguousarray(array), buffer, f"all_to_all_single of shape {tuple(input.shape)}",
                       async_op, [output], lambda: _copy_back(out, buffer))


def all_to_all(output_tensor_list, input_tensor_list, group=None, async_op=False):
    """Rank j's ``output_tensor_list[i]`` becomes rank i's ``input_tensor_list[j]`` (tensors of one shape)."""
    _check_group(group)
    size = pg._State.size
    if len(output_tensor_list) != size or len(input_tensor_list) != size:
        raise ValueError(f"all_to_all: give {size} output and {size} input tensors (the world size), got "
                         f"{len(output_tensor_list)} and {len(input_tensor_list)}")
    shape = tuple(input_tensor_list[0].shape)
    if any(tuple(t.shape) != shape for t in list(input_tensor_list) + list(output_tensor_list)):
        raise NotImplementedError(f"all_to_all: only tensors of one shape are supported (the first is {shape})")
    send = numpy.ascontiguousarray(numpy.stack([t._data for t in input_tensor_list]))
    received = numpy.empty_like(send)

    def finish():
        with no_grad():
            for t, part in zip(output_tensor_list, received):
                t.copy_(Tensor._make(part))

    return _all_to_all(send, received, f"all_to_all of shape {shape}", async_op, output_tensor_list, finish)


def barrier(group=None, async_op=False, device_ids=None):
    """Wait until every rank has reached the barrier."""
    _check_group(group)
    return _start("barrier", lambda: [pg._State.comm.Ibarrier()], None, async_op)


def monitored_barrier(group=None, timeout=None, wait_all_ranks=False):
    """A barrier that raises once it has waited ``timeout`` (a datetime.timedelta; the group's timeout by
    default), naming the ranks that did not arrive."""
    _check_group(group)
    _start("monitored_barrier", lambda: [pg._State.comm.Ibarrier()], None, async_op=True).wait(timeout)
