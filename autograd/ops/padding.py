"""Which input position each position of a padded dim reads, for the padding modes that copy input
values ('reflect', 'replicate', 'circular'): padding is then an index gather, and its gradient adds up
where a position is read twice (as at a reflected edge). Used by ``nn.functional.pad`` and ``stft``."""

from ..backend import xp


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
