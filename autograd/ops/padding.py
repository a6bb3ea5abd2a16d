"""Padding by copying input values ('reflect', 'replicate', 'circular'): output position j of a padded dim reads
input position p(j), and the gradient adds up where a position is read more than once (a replicated edge, a
reflected border). p runs in a few slices (the edges and the middle): a sliced gather (sliced_gather.py). Used
by ``nn.functional.pad`` and ``stft``."""

from ..backend import xp
from .sliced_gather import gather_along, gather_by_plan


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
    mode takes; circular's are >= 0): one node for all its dims."""
    if mode == "circular" and all(max(before, after) <= size for (before, after), size in zip(amounts, x.shape)):
        return gather_by_plan(x, [(dim, _circular_runs(x.shape[dim], before, after), x.shape[dim] + before + after,
                                   x.shape[dim]) for dim, (before, after) in reversed(list(enumerate(amounts)))
                                  if before or after])
    return gather_along(x, {dim: padded_positions(x.shape[dim], before, after, mode)
                            for dim, (before, after) in enumerate(amounts) if before or after})


def _circular_runs(size, before, after):
    """A circular pad's runs in the order of PyTorch's gradient. Its _pad_circular copies the input into the middle,
    then, from the last dim to the first, the middle's end into the left pad and its start into the right pad, so
    its backward adds for each input the middle's term, then the right's, then the left's, dim by dim from the
    first (the plan lists the dims from the last: its sums run in reverse)."""
    runs = [(before, 1, size, 0, 1), (before + size, 1, after, 0, 1), (0, 1, before, size - before, 1)]
    return [run for run in runs if run[2]]
