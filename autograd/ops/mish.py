"""Mish (Misra, 2019) as one node, PyTorch's MishBackward0:

    y = x tanh(softplus(x)),   softplus(x) = ln(1 + e^x) = max(x, 0) + ln(1 + e^-|x|),
    dL/dx = g t + (1 - t²) (g x) σ(x),   t = tanh(softplus(x)),  σ(x) = 1 / (1 + e^-x).

It was three nodes (softplus, tanh and a product), whose forward and backward made about twenty arrays of x's
size. The passes are theirs, in their order, written over fewer arrays (three in the forward, three in the
backward): the same values bit for bit. Its backward's sum is the composite's, the product's share (g t) first,
then the softplus's: PyTorch's kernel computes g (t + x σ (1 - t²)), rounded otherwise. float16 is computed in
float32 and rounded once, both ways, as the composite was (in float32 between two conversions) and as PyTorch's
kernels are. t is kept on the node for the backward, as the composite's tanh kept it (not under saved-tensor hooks,
which decide where saved values live: the backward computes it again from x). Under create_graph (and in forward
mode) the gradient is the composite's ops again, recorded, so that it has a graph of its own."""

from ..backend import float16, xp
from ..graph import modes
from ..primitive import Primitive
from ..tensor import Tensor
from .elementwise import half_as_float32
from .elementwise_unary import TanhGrad, sigmoid_of


def tanh_of_softplus(x):
    """tanh(max(x, 0) + log1p(e^-|x|)) of a float32 or float64 array, softplus as ``special.Softplus`` computes it,
    into one new array (a 0-d array's arithmetic gives NumPy scalars, which take no out=: the same ops, new arrays)."""
    if not x.ndim:
        return xp.tanh(xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x))))
    softplus = xp.abs(x)
    xp.negative(softplus, out=softplus)
    xp.exp(softplus, out=softplus)
    xp.log1p(softplus, out=softplus)
    xp.add(xp.maximum(x, 0), softplus, out=softplus)  # (max(x, 0) first, as Softplus adds them)
    return xp.tanh(softplus, out=softplus)


class Mish(Primitive):
    """y = x tanh(softplus(x));   dL/dx = g t + (1 - t²)(g x) σ(x). The module's docstring has the rest."""

    pytorch_name = "MishBackward0"
    tanh_softplus = None  # t, kept for the backward

    def forward(self, x):
        wide = half_as_float32(x)
        t = tanh_of_softplus(wide)
        if modes.saved_tensor_hooks is None:
            self.tanh_softplus = t
        return (wide * t).astype(x.dtype, copy=False)

    def backward(self, grad, y, x):
        if modes.grad_enabled:  # (create_graph, forward mode: the composite's ops, recorded)
            half = x.dtype == float16
            wide, g = (x.float(), grad.float()) if half else (x, grad)
            t = wide.softplus().tanh()
            result = g * t + TanhGrad.apply(g * wide, t) * wide.sigmoid()
            return (result.half() if half else result,)
        wide, g = half_as_float32(x._data), half_as_float32(grad._data)
        t = self.tanh_softplus if self.tanh_softplus is not None else tanh_of_softplus(wide)
        if not wide.ndim:
            result = g * t + (1 - t * t) * (g * wide) * sigmoid_of(wide)
            return (Tensor._make(xp.asarray(result).astype(x._data.dtype, copy=False)),)
        softplus_share = xp.multiply(t, t)  # (1 - t²)(g x) σ(x), as TanhGrad and Softplus's backward compute it
        xp.subtract(softplus_share.dtype.type(1), softplus_share, out=softplus_share)
        product = xp.multiply(g, wide)
        softplus_share *= product
        softplus_share *= sigmoid_of(wide)
        xp.multiply(g, t, out=product)  # g t, the product's share, over g x (read)
        product += softplus_share
        return (Tensor._make(product.astype(x._data.dtype, copy=False)),)

    def release(self):
        super().release()
        self.tanh_softplus = None
