"""``autograd.utils.data``, as ``torch.utils.data``: datasets, samplers, collation and the DataLoader."""

from pathlib import Path

from .collate import default_collate, default_convert
from .dataloader import DataLoader, get_worker_info
from .dataset import (
    ChainDataset,
    ConcatDataset,
    Dataset,
    IterableDataset,
    StackDataset,
    Subset,
    TensorDataset,
    random_split,
)
from .sampler import (
    BatchSampler,
    RandomSampler,
    Sampler,
    SequentialSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

if (Path(__file__).parent / "distributed.py").exists():  # DistributedSampler comes with autograd.distributed
    from .distributed import DistributedSampler  # noqa: F401

__all__ = [
    "BatchSampler", "ChainDataset", "ConcatDataset", "DataLoader", "Dataset", "IterableDataset", "RandomSampler",
    "Sampler", "SequentialSampler", "StackDataset", "Subset", "SubsetRandomSampler", "TensorDataset",
    "WeightedRandomSampler",
    "default_collate", "default_convert", "get_worker_info", "random_split",
] + (["DistributedSampler"] if "DistributedSampler" in globals() else [])
