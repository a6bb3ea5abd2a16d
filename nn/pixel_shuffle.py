"""Sub-pixel rearrangement (Shi et al., 2016): ``pixel_shuffle`` moves r² channels into an
r × r block of pixels, (*, C·r², H, W) → (*, C, H·r, W·r); ``pixel_unshuffle`` is its inverse.
``channel_shuffle`` (ShuffleNet, Zhang et al., 2017) interleaves the channels of g groups.
All are a reshape, a permutation and a reshape, so the gradient is the same moves undone."""

import sys

from autograd import _lazy
from autograd.ops.pixel_shuffle import (  # noqa: F401  (F.pixel_shuffle, ... as before)
    channel_shuffle,
    native_channel_shuffle,
    pixel_shuffle,
    pixel_unshuffle,
)

from .module import Module


class PixelShuffle(Module):
    def __init__(self, upscale_factor):
        super().__init__()
        self.upscale_factor = upscale_factor

    def forward(self, input):
        return pixel_shuffle(input, self.upscale_factor)

    def extra_repr(self):
        return f"upscale_factor={self.upscale_factor}"


class PixelUnshuffle(Module):
    def __init__(self, downscale_factor):
        super().__init__()
        self.downscale_factor = downscale_factor

    def forward(self, input):
        return pixel_unshuffle(input, self.downscale_factor)

    def extra_repr(self):
        return f"downscale_factor={self.downscale_factor}"


class ChannelShuffle(Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, input):
        return channel_shuffle(input, self.groups)

    def extra_repr(self):
        return f"groups={self.groups}"


# the layers call the functions held here: they ask a subclass of Tensor or an entered mode as F.pixel_shuffle does,
# and a symbolic trace through them records those functions
_lazy.dispatch_namespace(sys.modules[__name__],
                         lambda name, function: name in ("pixel_shuffle", "pixel_unshuffle", "channel_shuffle"))
