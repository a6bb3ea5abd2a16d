"""``autograd.utils.data._utils.worker``: ``get_worker_info`` and ``WorkerInfo`` under PyTorch's private path, where
sharding code imports them from (``from torch.utils.data._utils.worker import get_worker_info``)."""

from ..workers import WorkerInfo, get_worker_info, numpy_seed

__all__ = ["WorkerInfo", "get_worker_info"]


def _generate_state(base_seed, worker_id):
    """The four 32-bit words a worker seeds NumPy's global stream with, as Python ints (PyTorch's private helper,
    which hashes as NumPy's SeedSequence does)."""
    return [int(word) for word in numpy_seed(base_seed, worker_id)]
