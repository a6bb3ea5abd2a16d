"""Power-average pooling: ``F.lp_pool1d/2d/3d`` and ``LPPool1d/2d/3d``.

    y = (Σ_window x^p)^(1/p)

p = 1 is sum pooling, p = ∞ max pooling of |x| (and p = −∞ the minimum of |x|), as PyTorch computes them.
Otherwise, as PyTorch, the sum is an average pooling of x^p times the kernel's size (so a window that ceil_mode
cuts short is scaled as if it were whole), no padding, and sign(s)·relu(|s|) is taken of it before the root (the
same value; its derivative is 0 where s = 0).
"""

import math

from autograd import _lazy

from .functional_3d import avg_pool3d, max_pool3d
from .functional_conv import _tuple, avg_pool1d, avg_pool2d, max_pool1d, max_pool2d
from .module import Module


def _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, spatial):
    max_pool = (max_pool1d, max_pool2d, max_pool3d)[spatial - 1]
    if norm_type == math.inf:  # the limits: max |x|, and min |x| = −max(−|x|)
        return max_pool(input.abs(), kernel_size, stride, 0, 1, ceil_mode)
    if norm_type == -math.inf:
        return -max_pool(-input.abs(), kernel_size, stride, 0, 1, ceil_mode)
    if spatial == 1 and not isinstance(kernel_size, int):  # (PyTorch multiplies by kernel_size itself: an int)
        raise TypeError(f"lp_pool1d(): kernel_size must be an int for a finite norm_type, not "
                        f"{type(kernel_size).__name__} ({kernel_size!r})")
    pool = (avg_pool1d, avg_pool2d, avg_pool3d)[spatial - 1]
    sums = pool(input**norm_type, kernel_size, stride, 0, ceil_mode)
    size = math.prod(_tuple(kernel_size, spatial, "kernel_size"))
    return (sums.sign() * sums.abs().relu() * size) ** (1.0 / norm_type)


def lp_pool1d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """(Σ_window x^p)^(1/p) over windows of kernel_size along the last dim."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 1)


def lp_pool2d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """(Σ_window x^p)^(1/p) over kh×kw windows."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 2)


def lp_pool3d(input, norm_type, kernel_size, stride=None, ceil_mode=False):
    """(Σ_window x^p)^(1/p) over kd×kh×kw windows."""
    return _lp_pool(input, norm_type, kernel_size, stride, ceil_mode, 3)


class _LPPoolNd(Module):
    function = None

    def __init__(self, norm_type, kernel_size, stride=None, ceil_mode=False):
        super().__init__()
        self.norm_type, self.kernel_size, self.stride, self.ceil_mode = norm_type, kernel_size, stride, ceil_mode

    def forward(self, input):
        return type(self).function(input, self.norm_type, self.kernel_size, self.stride, self.ceil_mode)

    def extra_repr(self):
        return (f"norm_type={self.norm_type}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"ceil_mode={self.ceil_mode}")


class LPPool1d(_LPPoolNd):
    function = staticmethod(lp_pool1d)


class LPPool2d(_LPPoolNd):
    function = staticmethod(lp_pool2d)


class LPPool3d(_LPPoolNd):
    function = staticmethod(lp_pool3d)


# nn.LPPool2d(x) asks a subclass of Tensor x as F.lp_pool2d(x, ...) does (each layer calls the function its class holds)
_lazy.dispatch_layer_functions(globals())
