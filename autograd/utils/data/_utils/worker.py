"""``autograd.utils.data._utils.worker``: ``get_worker_info`` and ``WorkerInfo`` under PyTorch's private path, where
sharding code imports them from (``from torch.utils.data._utils.worker import get_worker_info``)."""

from ..workers import WorkerInfo, get_worker_info

__all__ = ["WorkerInfo", "get_worker_info"]
