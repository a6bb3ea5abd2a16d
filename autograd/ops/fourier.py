"""The discrete Fourier transforms (``autograd.fft``), each forward beside its derivative.

The transform of n numbers along a dim is the linear map

    y_k = c · Σ_t x_t e^(∓2πi kt/n)        (− forward, + inverse)

with the scale c set by ``norm``: "backward" (the default) puts 1/n on the inverse, "forward"
puts it on the forward transform, "ortho" puts 1/√n on both. A linear map's gradient is its
adjoint (conjugate transpose) applied to dL/dy (ops/conjugation.py), and the adjoint of a
transform is the opposite transform with the scale on the other side:

    dL/dx = fft(dL/dy, norm = the other one)   for y = ifft(x), and the other way round.

The real transforms keep half the spectrum. rfft's output is the first n//2 + 1 terms of fft, so
its adjoint pads dL/dy with zeros to n terms first; irfft reads each term k strictly between 0
and n/2 twice (for itself and its conjugate mirror), so its adjoint is rfft of dL/dy with those
terms doubled. Asking for ``n`` (or ``s``) other than the input's length crops or pads the input
with zeros first, and the adjoint of cropping is padding: the gradient is fitted back to the
input's shape.
"""

from ..backend import xp
from ..primitive import Primitive
from ..tensor import Tensor
from .joins import cat

OTHER_NORM = {"backward": "forward", "forward": "backward", "ortho": "ortho"}


class FFT(Primitive):
    """y = the n-point (inverse) transform of x over ``dims`` (n = ``sizes``; x cropped or padded to it);
    dL/dx = the opposite transform of dL/dy with the other scale, fitted back to x's shape"""

    pytorch_name = "FftC2CBackward0"  # (PyTorch's complex-to-complex kernel's node)
    saves_inputs = False
    saves_arguments = True  # a second backward raises, as after PyTorch's FFT nodes
    handles_complex = True

    def forward(self, x):
        if not self.dims:  # nothing to transform: x as a complex copy (NumPy would hand back x itself, real)
            return x.astype(xp.result_type(x.dtype, xp.complex64))
        transform = xp.fft.ifftn if self.inverse else xp.fft.fftn
        return transform(x, s=self.sizes, axes=self.dims, norm=self.norm)

    def backward(self, grad, y, x):
        adjoint = FFT.apply(grad, dims=self.dims, sizes=self.sizes, norm=OTHER_NORM[self.norm],
                            inverse=not self.inverse)
        return (fitted(adjoint, x.shape, self.dims),)


class RealFFT(Primitive):
    """y = the first n//2 + 1 terms, along the last of ``dims``, of the transform of the real x;
    dL/dx = Re(the adjoint transform of dL/dy padded with zeros to n terms), fitted back to x's shape"""

    pytorch_name = "FftR2CBackward0"  # (PyTorch's real-to-complex kernel's node)
    saves_inputs = False
    saves_arguments = True  # a second backward raises, as after PyTorch's FFT nodes
    handles_complex = True

    def forward(self, x):
        return xp.fft.rfftn(x, s=self.sizes, axes=self.dims, norm=self.norm)

    def backward(self, grad, y, x):
        last = self.dims[-1]
        spectrum = fitted(grad, _with(grad.shape, last, self.sizes[-1]), (last,))
        adjoint = FFT.apply(spectrum, dims=self.dims, sizes=self.sizes, norm=OTHER_NORM[self.norm], inverse=True)
        return (fitted(adjoint.real, x.shape, self.dims),)


class InverseRealFFT(Primitive):
    """y = the real n-point inverse transform of the half spectrum x (the terms past n//2 are the
    conjugate mirror of x's); dL/dx = rfft(dL/dy) with the other scale and the terms 0 < k < n/2
    doubled, fitted back to x's shape"""

    pytorch_name = "FftC2RBackward0"  # (PyTorch's complex-to-real kernel's node)
    saves_inputs = False
    handles_complex = True

    def forward(self, x):
        return xp.fft.irfftn(x, s=self.sizes, axes=self.dims, norm=self.norm)

    def backward(self, grad, y, x):
        half = RealFFT.apply(grad, dims=self.dims, sizes=self.sizes, norm=OTHER_NORM[self.norm])
        n, last = self.sizes[-1], self.dims[-1]
        counts = xp.full(n // 2 + 1, 2.0, dtype=grad._data.dtype)  # how often irfft reads each term
        counts[0] = 1.0
        if n % 2 == 0:
            counts[-1] = 1.0  # the middle term n/2 is its own mirror
        counts = Tensor._make(counts.reshape((-1,) + (1,) * (half.ndim - 1 - last)))
        return (fitted(half * counts, x.shape, self.dims),)


def _with(shape, dim, length):
    shape = list(shape)
    shape[dim] = length
    return tuple(shape)


def fitted(t, shape, dims):
    """t cropped, or padded with zeros, along ``dims`` to ``shape`` (the adjoint of padding or cropping)."""
    for dim in dims:
        have, want = t.shape[dim], shape[dim]
        if have > want:
            t = t.narrow(dim, 0, want)
        elif have < want:
            t = cat([t, Tensor._make(xp.zeros(_with(t.shape, dim, want - have), dtype=t._data.dtype))], dim)
    return t
