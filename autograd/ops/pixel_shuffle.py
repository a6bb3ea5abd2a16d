"""Sub-pixel rearrangement (Shi et al., 2016): ``pixel_shuffle`` moves r² channels into an
r × r block of pixels, (*, C·r², H, W) → (*, C, H·r, W·r); ``pixel_unshuffle`` is its inverse.
``channel_shuffle`` (ShuffleNet, Zhang et al., 2017) interleaves the channels of g groups.
All are a reshape, a permutation and a reshape, so the gradient is the same moves undone; the two pixel
rearrangements lay their result out in their input's suggested memory format (channels-last for a channels-last
image), as PyTorch's kernels write it, channel_shuffle row-major. PyTorch
spells them at top level too (``autograd.pixel_shuffle``); ``nn.PixelShuffle`` and its kin wrap them."""

from ..backend import xp
from ..primitive import node_named
from .layouts import in_suggested_layout
from .names import names


def _own_memory(y, x):
    """y, or a copy of it where the rearrangement moved nothing and y is a view of x (a factor of 1, one group,
    single-pixel maps): PyTorch's kernels always write a new tensor, so a write into either leaves the other."""
    return y.clone() if y._data.size and xp.may_share_memory(y._data, x._data) else y


def _check(input, name, condition, what):
    if input.ndim < 3:
        raise RuntimeError(f"{name} expects input to have at least 3 dimensions, but got input with "
                           f"{input.ndim} dimension(s)")
    if not condition:
        raise RuntimeError(f"{name} expects {what}")


@names("pixel_shuffle", method=False)
@node_named("PixelShuffleBackward0")
def pixel_shuffle(input, upscale_factor):
    """(*, C·r², H, W) → (*, C, H·r, W·r): out[c, h·r + i, w·r + j] = in[c·r² + i·r + j, h, w]."""
    r = int(upscale_factor)
    if r <= 0:
        raise RuntimeError(f"pixel_shuffle expects a positive upscale_factor, but got {r}")
    *batch, channels, height, width = input.shape if input.ndim >= 3 else (0, 0, 0)
    _check(input, "pixel_shuffle", channels % (r * r) == 0,
           f"its input's 'channel' dimension to be divisible by the square of upscale_factor, but "
           f"input.size(-3)={channels} is not divisible by {r * r}")
    n = len(batch)
    blocks = input.reshape(*batch, channels // (r * r), r, r, height, width)
    moved = blocks.permute(*range(n), n, n + 3, n + 1, n + 4, n + 2)  # (*, C, H, r, W, r)
    return _own_memory(in_suggested_layout(moved.reshape(*batch, channels // (r * r), height * r, width * r), input),
                       input)


@names("pixel_unshuffle", method=False)
@node_named("PixelUnshuffleBackward0")
def pixel_unshuffle(input, downscale_factor):
    """(*, C, H·r, W·r) → (*, C·r², H, W), the inverse of ``pixel_shuffle``."""
    r = int(downscale_factor)
    if r <= 0:
        raise RuntimeError(f"pixel_unshuffle expects a positive downscale_factor, but got {r}")
    *batch, channels, height, width = input.shape if input.ndim >= 3 else (0, 0, 0)
    _check(input, "pixel_unshuffle", height % r == 0,
           f"height to be divisible by downscale_factor, but input.size(-2)={height} is not divisible by {r}")
    _check(input, "pixel_unshuffle", width % r == 0,
           f"width to be divisible by downscale_factor, but input.size(-1)={width} is not divisible by {r}")
    n = len(batch)
    blocks = input.reshape(*batch, channels, height // r, r, width // r, r)
    moved = blocks.permute(*range(n), n, n + 2, n + 4, n + 1, n + 3)  # (*, C, r, r, H, W)
    return _own_memory(in_suggested_layout(moved.reshape(*batch, channels * r * r, height // r, width // r), input),
                       input)


@names("channel_shuffle", method=False, functions=("native_channel_shuffle",))
@node_named("ChannelShuffleBackward0")
def channel_shuffle(input, groups):
    """(N, g·m, *) → (N, m·g, *): out[:, j·g + i] = in[:, i·m + j], channel j of group i moved to place i of
    block j, so that the groups of the next grouped convolution each see every group's channels."""
    if input.ndim <= 2:
        raise RuntimeError(f"channel_shuffle expects input with > 2 dims, but got input with sizes "
                           f"{list(input.shape)}")
    if groups <= 0:
        raise RuntimeError(f"Number of groups to divide channels in must be positive. Value of groups:{groups}")
    channels = input.shape[1]
    if channels % groups:
        raise RuntimeError(f"Number of channels must be divisible by groups. Got {channels} channels and "
                           f"{groups} groups.")
    rest = input.shape[2:]
    grouped = input.reshape(input.shape[0], groups, channels // groups, *rest)
    return _own_memory(grouped.transpose(1, 2).reshape(input.shape), input)


native_channel_shuffle = channel_shuffle
