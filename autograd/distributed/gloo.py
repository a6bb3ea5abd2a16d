"""The ``"gloo"`` backend for several processes: standard-library sockets, arrays as raw bytes.

    # torchrun style: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT in each process's environment
    dist.init_process_group("gloo")
    # or autograd.multiprocessing.spawn(run, args=(world_size,), nprocs=world_size) with
    dist.init_process_group("gloo", rank=rank, world_size=world_size)

Rendezvous. Rank 0 listens on MASTER_ADDR:MASTER_PORT (``env://``), on ``tcp://host:port``,
or, for ``file://path``, on a free port it writes into the file; every other rank connects
to it (retrying until the timeout) and says its rank. The job is a star through rank 0.

A collective is one round: every rank sends rank 0 its array, rank 0 computes every rank's
result and sends each its own. An array travels as a header (dtype string, shape) then its
raw bytes, read back with ``numpy.frombuffer``: nothing received is unpickled here.
Reductions combine the ranks' arrays in rank order, in the tensors' dtype.

``SocketComm`` has mpi4py's buffer-method names, so collectives.py runs unchanged; each
``I...`` method completes its round before returning (every rank calls the collectives in
one order, so a blocking round cannot deadlock), and returns a request that is done.
Faults: every socket waits at most the process group's timeout; a peer that closed its
socket (its process ended) or a wait past the timeout raises ``DistBackendError`` on each
rank still running, never a hang.
"""

import functools
import os
import socket
import struct
import time
from urllib.parse import urlparse

import numpy

from .single_process import MPI, _Done

_REDUCTIONS = {MPI.SUM: numpy.add, MPI.PROD: numpy.multiply, MPI.MIN: numpy.minimum, MPI.MAX: numpy.maximum,
               MPI.BAND: numpy.bitwise_and, MPI.BOR: numpy.bitwise_or, MPI.BXOR: numpy.bitwise_xor}
_HELLO = struct.Struct("!qq")  # (rank, world_size) a rank says on connecting


def _backend_error(message):
    from .process_group import DistBackendError  # (process_group imports this module)

    return DistBackendError(message)


def _store_error(message):
    from .process_group import DistStoreError

    return DistStoreError(message)


def _reduce(op, arrays):
    """op over the ranks' arrays, in rank order, in their dtype (integers wrap as PyTorch's do)."""
    combine = _REDUCTIONS[op]
    if arrays[0].dtype == numpy.bool_ and op in (MPI.SUM, MPI.MAX):
        combine = numpy.logical_or  # (PyTorch's sum of bools is their "or")
    elif arrays[0].dtype == numpy.bool_ and op in (MPI.PROD, MPI.MIN):
        combine = numpy.logical_and
    return functools.reduce(lambda a, b: combine(a, b, dtype=a.dtype), arrays)


def _read_exactly(connection, count):
    """``count`` bytes from ``connection``, however the peer's sends were split; ConnectionError if it closes first."""
    chunks, left = [], count
    while left:
        chunk = connection.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class SocketComm:
    """The communicator of one rank of a star: rank 0 holds a socket to each other rank."""

    def __init__(self, rank, size, peers, timeout):
        self.rank, self.size, self.timeout = rank, size, timeout
        self._peers = peers  # rank 0: {rank: socket}; any other rank: {0: socket}
        for peer in peers.values():
            peer.settimeout(timeout)
            peer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # (a round is many small messages)

    # -- moving arrays ------------------------------------------------------------------------------

    def _send(self, peer, array):
        array = numpy.ascontiguousarray(array)
        if array.dtype.hasobject:
            raise TypeError(f"gloo: cannot send an array of dtype {array.dtype}")
        dtype = array.dtype.str.encode()
        header = struct.pack(f"!B{len(dtype)}sB{array.ndim}q", len(dtype), dtype, array.ndim, *array.shape)
        try:
            self._peers[peer].sendall(header + array.tobytes())
        except OSError as error:
            raise self._fault(peer, error) from error

    def _receive_exactly(self, peer, count):
        try:
            return _read_exactly(self._peers[peer], count)
        except OSError as error:
            raise self._fault(peer, error) from error

    def _receive(self, peer):
        (length,) = self._receive_exactly(peer, 1)
        dtype = numpy.dtype(self._receive_exactly(peer, length).decode())
        (ndim,) = self._receive_exactly(peer, 1)
        shape = struct.unpack(f"!{ndim}q", self._receive_exactly(peer, 8 * ndim))
        count = int(numpy.prod(shape, dtype=numpy.int64))
        return numpy.frombuffer(self._receive_exactly(peer, count * dtype.itemsize), dtype=dtype).reshape(shape)

    def _fault(self, peer, error):
        self.close()  # so that the ranks waiting on this one see it too
        if isinstance(error, TimeoutError):
            return _backend_error(f"rank {self.rank}: gloo timed out after {self.timeout:.1f} s waiting for rank "
                                  f"{peer} (init_process_group timeout)")
        return _backend_error(f"rank {self.rank}: gloo lost its connection to rank {peer} ({error}): "
                              "that process may have ended")

    def _round(self, mine, answer):
        """One collective: rank 0 receives every rank's array (``mine`` from each), computes
        ``answer(arrays)``, a list of one array per rank, and sends each its own; returns this rank's."""
        if self.rank != 0:
            self._send(0, mine)
            return self._receive(0)
        arrays = [numpy.ascontiguousarray(mine)] + [self._receive(peer) for peer in range(1, self.size)]
        results = answer(arrays)
        for peer in range(1, self.size):
            self._send(peer, results[peer])
        return results[0]

    def _nothing(self):
        return numpy.empty(0, dtype=numpy.uint8)

    # -- mpi4py's buffer methods --------------------------------------------------------------------

    def Iallreduce(self, send, receive, op):  # noqa: N802  (always IN_PLACE: ``receive`` holds this rank's)
        result = self._round(receive, lambda arrays: [_reduce(op, arrays)] * self.size)
        receive.reshape(-1)[...] = result.reshape(-1)
        return _Done()

    def Ireduce(self, send, receive, op, root):  # noqa: N802
        mine = receive if send is MPI.IN_PLACE else send
        result = self._round(mine, lambda arrays: [_reduce(op, arrays) if rank == root else self._nothing()
                                                   for rank in range(self.size)])
        if self.rank == root:
            receive.reshape(-1)[...] = result.reshape(-1)
        return _Done()

    def Ibcast(self, buffer, root):  # noqa: N802
        result = self._round(buffer if self.rank == root else self._nothing(),
                             lambda arrays: [arrays[root]] * self.size)
        buffer.reshape(-1)[...] = result.reshape(-1)
        return _Done()

    def Ibarrier(self):  # noqa: N802
        self._round(self._nothing(), lambda arrays: [self._nothing()] * self.size)
        return _Done()

    def Iallgather(self, send, receive):  # noqa: N802
        result = self._round(send, lambda arrays: [numpy.concatenate([a.reshape(-1) for a in arrays])] * self.size)
        receive.reshape(-1)[...] = result
        return _Done()

    def Igather(self, send, receive, root):  # noqa: N802
        result = self._round(send, lambda arrays: [numpy.concatenate([a.reshape(-1) for a in arrays])
                                                   if rank == root else self._nothing() for rank in range(self.size)])
        if self.rank == root:
            receive.reshape(-1)[...] = result
        return _Done()

    def Iscatter(self, send, receive, root):  # noqa: N802
        result = self._round(send if self.rank == root else self._nothing(),
                             lambda arrays: numpy.split(arrays[root].reshape(-1), self.size))
        receive.reshape(-1)[...] = result
        return _Done()

    def Ireduce_scatter_block(self, send, receive, op):  # noqa: N802
        result = self._round(send, lambda arrays: numpy.split(_reduce(op, [a.reshape(-1) for a in arrays]),
                                                              self.size))
        receive.reshape(-1)[...] = result
        return _Done()

    def Ialltoall(self, send, receive):  # noqa: N802
        """Rank j receives block j of every rank's ``send``, in rank order."""
        def answer(arrays):
            blocks = [numpy.split(a.reshape(-1), self.size) for a in arrays]
            return [numpy.concatenate([blocks[i][j] for i in range(self.size)]) for j in range(self.size)]

        receive.reshape(-1)[...] = self._round(send, answer)
        return _Done()

    def close(self):
        for peer in self._peers.values():
            peer.close()
        self._peers = {rank: _Closed() for rank in self._peers}


class _Closed:
    """A socket already closed: using it says so (as a socket would, with an OSError)."""

    def _closed(self, *args):
        raise ConnectionError("this rank's connection is closed")

    sendall = recv = settimeout = _closed

    def close(self):
        pass


# -- rendezvous -------------------------------------------------------------------------------------


def _address(init_method):
    """(host, port) rank 0 listens on, or (None, path) for ``file://``, from init_method or the environment."""
    url = urlparse("env://" if init_method is None else init_method)
    if url.scheme == "env":
        return os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if url.scheme == "tcp":
        return url.hostname, url.port
    return None, url.path


def _timed_out(seconds, joined, size):
    return _store_error(f"Timed out after {seconds:.0f} seconds waiting for clients. {joined}/{size} clients joined.")


def connect(init_method, rank, size, timeout):
    """This rank's ``SocketComm``, once every rank has joined (each side waits at most ``timeout`` seconds)."""
    host, port = _address(init_method)
    deadline = time.monotonic() + timeout
    if rank == 0:
        return SocketComm(0, size, _accept(host, port, size, timeout, deadline), timeout)
    if host is None:
        host, port = _read_address_file(port, deadline, timeout, size)
    return SocketComm(rank, size, {0: _connect_to_rank0(host, port, rank, size, timeout, deadline)}, timeout)


def _accept(host, port, size, timeout, deadline):
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    path = None
    if host is None:  # file://: any free port, published in the file
        path, host, port = port, "127.0.0.1", 0
    try:
        listener.bind((host, port))
    except OSError as error:
        listener.close()
        raise _store_error(f"The server socket has failed to listen on {host}:{port} ({error}): "
                           "is MASTER_PORT in use?") from error
    listener.listen(size)
    if path is not None:
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w") as file:
            file.write(f"{listener.getsockname()[0]}:{listener.getsockname()[1]}")
        os.replace(temporary, path)  # (whole, or not there: a reader never sees half an address)
    peers = {}
    try:
        while len(peers) < size - 1:
            listener.settimeout(max(0.0, deadline - time.monotonic()))
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                raise _timed_out(timeout, len(peers) + 1, size) from None
            connection.settimeout(max(0.01, deadline - time.monotonic()))
            peer_rank, peer_size = _HELLO.unpack(_receive_hello(connection))
            if peer_size != size or not 0 < peer_rank < size or peer_rank in peers:
                connection.close()
                raise _store_error(f"rank 0 (world_size {size}) was joined by a process saying rank {peer_rank} of "
                                   f"world_size {peer_size}")
            peers[peer_rank] = connection
    except BaseException:
        for connection in peers.values():
            connection.close()
        raise
    finally:
        listener.close()
        if path is not None and os.path.exists(path):
            os.remove(path)  # (the file is for this rendezvous only)
    return peers


def _receive_hello(connection):
    try:
        return _read_exactly(connection, _HELLO.size)
    except ConnectionError:  # (closed early; a timeout is raised as it is)
        raise _store_error("a process connected to rank 0 and closed before saying its rank") from None


def _read_address_file(path, deadline, timeout, size):
    while time.monotonic() < deadline:
        try:
            with open(path) as file:
                host, port = file.read().rsplit(":", 1)
            return host, int(port)
        except (OSError, ValueError):
            time.sleep(0.01)
    raise _timed_out(timeout, 0, size)


def _connect_to_rank0(host, port, rank, size, timeout, deadline):
    """Connect, retrying while rank 0 is not listening yet (as PyTorch's ranks wait for the store)."""
    while True:
        try:
            connection = socket.create_connection((host, port), timeout=max(0.01, deadline - time.monotonic()))
            break
        except OSError as error:
            if time.monotonic() >= deadline:
                raise _store_error(f"rank {rank}: timed out after {timeout:.0f} seconds trying to connect to "
                                   f"{host}:{port} (rank 0) ({error})") from error
            time.sleep(0.02)
    connection.sendall(_HELLO.pack(rank, size))
    return connection
