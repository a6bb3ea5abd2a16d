"""Keys' cubic convolution (1981), the kernel of bicubic resizing (``F.interpolate(mode='bicubic')``) and
bicubic sampling (``grid_sampler``), with PyTorch's coefficient a = -0.75:

    W(d) = (a + 2)|d|³ - (a + 3)|d|² + 1        for |d| ≤ 1
    W(d) = a|d|³ - 5a|d|² + 8a|d| - 4a           for 1 < |d| < 2

A point at ⌊s⌋ + t (0 ≤ t < 1) blends its four neighbours ⌊s⌋ - 1 .. ⌊s⌋ + 2. ``t`` may be an array or a
Tensor (its arithmetic is then recorded: the weights' gradient with respect to the position).
"""

import numpy

CUBIC_A = -0.75  # PyTorch's (and OpenCV's) cubic convolution coefficient


def _near(d, a):  # |d| ≤ 1
    return ((a + 2) * d - (a + 3)) * d * d + 1


def _far(d, a):  # 1 < |d| < 2
    return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a


def cubic_weights(t):
    """Keys' weights of the four neighbours ⌊s⌋ - 1 .. ⌊s⌋ + 2, at distances 1 + t, t, 1 - t, 2 - t."""
    a = CUBIC_A
    return _far(t + 1, a), _near(t, a), _near(1 - t, a), _far(2 - t, a)


def cubic_kernel(d, a):
    """W(d) at every distance of the array ``d`` (0 from |d| = 2 on), with coefficient ``a`` (antialiased
    resizing uses a = -0.5, as PIL does)."""
    d = numpy.abs(d)
    return numpy.where(d <= 1, _near(d, a), numpy.where(d < 2, _far(d, a), 0.0))
