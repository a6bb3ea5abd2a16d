"""Checkpoints in data-parallel training: every rank holds the same weights, so one
rank writes and the others wait for the file to exist before anyone reads it.

    if dist.get_rank() == 0:
        autograd.save(ddp.module.state_dict(), "model.npz")   # the plain module's keys
    dist.barrier()                                             # the file is complete for everyone
    model.load_state_dict(autograd.load("model.npz"))

``save_on_rank0`` is that pattern in one call.
"""

from .. import serialization
from . import collectives, process_group


def save_on_rank0(obj, path):
    """``autograd.save(obj, path)`` on rank 0 only, then a barrier so every rank may read the file.
    Without an initialized process group it just saves."""
    if not process_group.is_initialized():
        serialization.save(obj, path)
        return
    if process_group.get_rank() == 0:
        serialization.save(obj, path)
    collectives.barrier()
