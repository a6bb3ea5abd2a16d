"""``autograd.data``: the lecture's name for ``autograd.utils.data`` (the same classes), plus one
option of its own, the DataLoader's per-batch ``transform``.

    DataLoader(train, batch_size=32, shuffle=True, transform=Compose([RandomFlip(), AddNoise(0.1)]))

calls the transform on each batch's first field (the inputs) as it is made: the
place for data augmentation (``autograd.transforms``) and normalisation.
"""

from .utils import data as _data
from .utils.data import *  # noqa: F403  (every name of autograd.utils.data)
from .utils.data import __all__  # noqa: F401


class DataLoader(_data.DataLoader):
    """``autograd.utils.data.DataLoader`` with ``transform``, applied to each batch's inputs."""

    def __init__(self, dataset, *args, transform=None, **kwargs):
        super().__init__(dataset, *args, **kwargs)
        self.transform = transform

    def _finish(self, batch):
        if self.transform is None:
            return batch
        if isinstance(batch, list | tuple):
            return type(batch)([self.transform(batch[0]), *batch[1:]])
        return self.transform(batch)
