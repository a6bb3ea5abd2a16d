"""Padding by copying input values ('reflect', 'replicate', 'circular'): output position j of a padded dim reads
input position p(j), and the gradient adds up where a position is read more than once (a replicated edge, a
reflected border). p runs in a few slices (the edges and the middle): a sliced gather (sliced_gather.py). Used
by ``nn.functional.pad`` and ``stft``."""

from ..backend import xp
from .sliced_gather import gather_along


def padded_positions(size, before, after, mode):
    """The input position each output position reads, for a dim of ``size`` padded by (before, after) >= 0
    (any amounts for 'replicate': out[j] = in[clamp(j - before, 0, size - 1)], PyTorch's formula; for
    'reflect', negative amounts too, each below ``size``: out[j] mirrors j - before about the whole input's
    edges, as PyTorch's kernel, so a crop on one side does not move the mirror of the other)."""
    positions = xp.arange(-before, size + after)
    if mode == "replicate":
        return xp.clip(positions, 0, size - 1)
    if mode == "circular":
        return positions % size
    last = size - 1  # reflect: mirror about the first and the last element
    return last - xp.abs(last - xp.abs(positions))


def copying_pad(x, amounts, mode):
    """``x`` padded by (before, after) ``amounts`` per dim in ``mode`` (see padded_positions for the amounts each
    mode takes): one node for all its dims."""
    return gather_along(x, {dim: padded_positions(x.shape[dim], before, after, mode)
                            for dim, (before, after) in enumerate(amounts) if before or after})
