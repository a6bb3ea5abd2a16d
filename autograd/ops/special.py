"""Special functions: erf (for the exact GELU) and softplus (for losses on logits).

erf itself, on arrays, is ``error_function.erf`` (NumPy has none): Cody's rational approximations.
"""

import math

from ..backend import xp
from ..primitive import Primitive
from .elementwise import floating, half_as_float32
from .error_function import erf
from .names import names
from .outputs import write_out


class Erf(Primitive):
    """y = erf(x);   dL/dx = dL/dy · 2/√π · e^(-x²)"""

    def forward(self, x):
        if x.dtype.kind == "c":
            raise NotImplementedError("erf is not implemented for complex inputs (as PyTorch's)")
        return erf(x)

    def backward(self, grad, y, x):
        return ((-(x * x)).exp() * (2 / math.sqrt(math.pi)) * grad,)  # (in PyTorch's order: float16 rounds each step)


@names("erf", inplace="erf_")
def erf_of(input, *, out=None):
    """erf of a tensor; integers and bools become the default dtype first."""
    return write_out(Erf.apply(floating(input)), out)


@names("softplus")
class Softplus(Primitive):
    """y = ln(1 + e^x);   dL/dx = dL/dy · σ(x)"""

    def forward(self, x):
        # ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|): no overflow, full precision. float16 in float32, rounded
        # once, as PyTorch's log_sigmoid (binary_cross_entropy_with_logits's log σ(x) was a unit off in a tenth)
        wide = half_as_float32(x)
        return (xp.maximum(wide, 0) + xp.log1p(xp.exp(-xp.abs(wide)))).astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        return (grad * x.sigmoid(),)
