"""The ``"gloo"`` backend's job of one process: what PyTorch programs written for several
processes do when they are started alone (``world_size=1``).

    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:29500", rank=0, world_size=1)
    dist.all_reduce(t)              # one rank: the sum, mean, max... of t alone is t

Rank and world size are found as PyTorch's rendezvous finds them (``rendezvous``), with
its errors for what is missing. A world of one opens nothing: no socket, no file; a
larger one meets through sockets (gloo.py).

The collectives are written against mpi4py's buffer methods; ``SingleProcessComm`` is
the communicator of one rank, so they run unchanged: a reduction over one rank is its
own buffer, a gather or scatter is a copy.
"""

import os
import types
from urllib.parse import urlparse


def _query(url):
    return dict(pair.split("=", 1) for pair in filter(None, url.query.split("&")))


def _rendezvous_error(scheme, message):
    return ValueError(f"Error initializing torch.distributed using {scheme}:// rendezvous: {message}")


def rendezvous(init_method, rank, world_size, store):
    """(rank, world_size) from the arguments, the URL's query and, for ``env://``, the
    environment (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT), as torch.distributed.rendezvous."""
    if store is not None:
        if init_method is not None:
            raise AssertionError("Cannot specify both init_method and store.")
        if not world_size > 0:
            raise AssertionError("world_size must be positive if using store")
        if not rank >= 0:
            raise AssertionError("rank must be non-negative if using store")
        return rank, world_size
    url = urlparse("env://" if init_method is None else init_method)
    query = _query(url)
    if rank != -1 or world_size != -1:
        if "rank" in query or "world_size" in query:
            raise AssertionError(f"The url: {init_method} has node-specific arguments(rank, world_size) already.")
        query.update({key: str(value) for key, value in (("rank", rank), ("world_size", world_size)) if value != -1})
    scheme = url.scheme
    if scheme == "env":
        def from_environment(name):
            if os.environ.get(name) is None:
                raise _rendezvous_error(scheme, f"environment variable {name} expected, but not set")
            return os.environ[name]

        rank = int(query["rank"] if "rank" in query else from_environment("RANK"))
        world_size = int(query["world_size"] if "world_size" in query else from_environment("WORLD_SIZE"))
        from_environment("MASTER_ADDR")
        int(from_environment("MASTER_PORT"))
        return rank, world_size
    if scheme not in ("tcp", "file"):
        raise RuntimeError(f"No rendezvous handler for {scheme}://")
    if scheme == "tcp" and not url.port:
        raise _rendezvous_error(scheme, "port number missing")
    if scheme == "file" and not url.path:
        raise _rendezvous_error(scheme, "path missing")
    if "rank" not in query:
        raise _rendezvous_error(scheme, "rank parameter missing")
    if "world_size" not in query:
        raise _rendezvous_error(scheme, "world size parameter missing")
    return int(query["rank"]), int(query["world_size"])


class _Done:
    """A request that completed when it was made."""

    @staticmethod
    def Testall(requests):  # noqa: N802  (mpi4py's name)
        return True


MPI = types.SimpleNamespace(  # the names of mpi4py.MPI that the collectives use
    Request=_Done, IN_PLACE=object(),
    SUM="SUM", PROD="PROD", MIN="MIN", MAX="MAX", BAND="BAND", BOR="BOR", BXOR="BXOR")


def _copy(source, destination):
    """MPI moves bytes between buffers of one layout: the same values, flattened."""
    destination.reshape(-1)[...] = source.reshape(-1)


class SingleProcessComm:  # mpi4py's method names (capitalised: the buffer versions)
    """The communicator of a job of one rank: every collective is complete when it is made."""

    def Iallreduce(self, send, receive, op):  # noqa: N802
        return _Done()  # (always IN_PLACE here: the buffer already holds the result)

    def Ireduce(self, send, receive, op, root):  # noqa: N802
        return _Done()

    def Ibcast(self, buffer, root):  # noqa: N802
        return _Done()

    def Ibarrier(self):  # noqa: N802
        return _Done()

    def Iallgather(self, send, receive):  # noqa: N802
        _copy(send, receive)
        return _Done()

    def Igather(self, send, receive, root):  # noqa: N802
        _copy(send, receive)
        return _Done()

    def Iscatter(self, send, receive, root):  # noqa: N802
        _copy(send, receive)
        return _Done()

    def Ireduce_scatter_block(self, send, receive, op):  # noqa: N802
        _copy(send, receive)
        return _Done()

    def Ialltoall(self, send, receive):  # noqa: N802
        _copy(send, receive)
        return _Done()
