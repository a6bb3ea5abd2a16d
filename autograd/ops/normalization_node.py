"""A normalisation and its affine step as one node: layer, group, instance and (training) batch norm's forward
and backward as NumPy passes over whole arrays, where the composite of ``normalization.normalize`` and
``scale_and_shift`` records nine nodes (two means, a difference, a square, a shift, a reciprocal root, three
products and a sum), each a node to make and visit and an array of its own. Over n values per statistic (the
axes normalised):

    μ = Σ x / n,   σ⁻¹ = (Σ (x - μ)² / n + eps)^(-1/2),   x̂ = (x - μ) σ⁻¹,   y = γ x̂ + β

and, with g = dL/dy and g' = γ g (g where there is no γ),

    dL/dx = σ⁻¹ (g' - mean(g') - x̂ · mean(g' x̂)),   dL/dγ = Σ g x̂,   dL/dβ = Σ g

(the means over the axes normalised; the sums over the axes γ is broadcast along). Both passes make the
composite's arrays by the same NumPy calls in the same order (the sums by ``add.reduce`` over the same axes of
the same arrays, the same products and quotients), so y and every gradient are the composite's, bit for bit:
dL/dx is computed as the composite's nodes computed it, through dL/d(x - μ) and dL/dvar (``_input_gradient``).

Under create_graph (and in forward mode, which reads a tangent from the backward) dL/dx is the formula above
written with Tensor ops over x̂ computed again by the composite, so that the gradient is a function of x, γ and β
with a graph of its own (second derivatives, double backward).
"""

import numpy

from ..graph import modes
from ..primitive import Primitive
from ..tensor import Tensor
from .broadcasting import unbroadcast
from .elementwise import row_major


def standardized(x, axes, count, eps):
    """(x̂, x - μ, σ⁻¹, μ, var) of an array over ``axes`` (kept), ``count`` values each: the composite's arrays
    (``normalization.normalize``: Mean, x - μ, (x - μ)², Mean, + eps, rsqrt, the product), by the same calls."""
    scale = x.dtype.type(count)
    mean = numpy.add.reduce(x, axes, None, None, True)
    mean /= scale
    centred = x - mean
    squares = centred * centred
    variance = numpy.add.reduce(squares, axes, None, None, True)
    variance /= scale
    rstd = 1 / numpy.sqrt(variance + x.dtype.type(eps))
    return numpy.multiply(centred, rstd, out=squares), centred, rstd, mean, variance


def summed_over(array, axes):
    """Σ over those of ``axes`` (kept) along which ``array`` has more than one value: the sum by which
    ``unbroadcast`` brings a gradient to a statistic's shape (itself where there is none)."""
    axes = tuple(axis for axis in axes if array.shape[axis] != 1)
    return numpy.add.reduce(array, axes, None, None, True) if axes else array


def fits(input, *parameters):
    """Whether ``AffineNormalization`` normalises ``input``: a NumPy array of float32 or float64 (float16 is
    normalised in float32 by its callers; meta arrays, CuPy's and other dtypes go through the composite), with
    values to normalise, and parameters of its dtype."""
    data = input._data
    return (type(data) is numpy.ndarray and data.dtype.kind == "f" and data.dtype.itemsize >= 4 and data.size > 0
            and all(p is None or p._data.dtype == data.dtype for p in parameters))


def _times(grad, normalized, scratch):
    """g x̂ (Tensors), into ``scratch`` (x's size, row-major) where g is row-major: the array ``grad * normalized``
    makes then, written over one that is done with, where a new one cost about as much as the product."""
    if scratch is None or not grad._data.flags.c_contiguous:
        return grad * normalized
    return Tensor._make(numpy.multiply(grad._data, normalized._data, out=scratch.reshape(grad._data.shape)))


class SavesNoShift:
    """What a normalisation's node counts as saved: x and γ, whichever gradient is wanted, and β only where
    PyTorch's node saves it (``bias_saved``: layer norm's does; batch, group and instance norm's do not, β's
    gradient reading its shape alone), so a β updated in place between the forward and the backward is allowed
    where PyTorch allows it. (A property: read only where a saved input was written, or under saved-tensor hooks.)"""

    bias_saved = False

    @property
    def saved_input_readers(self):
        if self.bias_saved or not self.shifted:
            return None
        every = tuple(range(len(self.inputs)))
        return (every,) * (len(every) - 1) + ((),)


class AffineNormalization(SavesNoShift, Primitive):
    """y = γ x̂ + β, x̂ normalised over ``axes`` of x viewed as ``grouped`` (None: x's own shape; group norm's
    (N, groups, rest)), ``count`` values each; the inputs are x and then γ if ``weighted`` and β if ``shifted``,
    both reshaped to ``affine_shape`` to broadcast against x. The module's docstring has the maths.

    x - μ, σ⁻¹ and x̂ are kept on the node for the backward (the composite's nodes kept them; PyTorch's keeps μ
    and σ⁻¹ and computes the rest again), but not x̂ where it is the output (no γ, no β: the output may be
    written in place, as InstanceNorm2d then ReLU(True) writes it; only γ's gradient reads it), nor anything
    under saved-tensor hooks, which decide where saved values live: the backward then computes them again from
    x, the same arrays."""

    normalized = centred = rstd = None
    # a function of the batch's μ and var (arrays) the forward calls last: batch norm's running averages, moved
    # before the node saves anything, as PyTorch's kernel moves them (a checkpoint's recomputation, which stops
    # once it has the saved tensors, still moves them)
    on_statistics = None

    def forward(self, x, *affine):
        x = row_major(x)  # (as the composite's callers normalise x.contiguous(): the same sums, in the same order)
        statistics_view = x if self.grouped is None else x.reshape(self.grouped)
        normalized, centred, rstd, mean, variance = standardized(statistics_view, self.axes, self.count, self.eps)
        normalized = normalized.reshape(x.shape)
        output = normalized
        if self.weighted:
            output = normalized * affine[0].reshape(self.affine_shape)
        if self.shifted:
            bias = affine[-1].reshape(self.affine_shape)
            output = numpy.add(output, bias, out=output) if output is not normalized else normalized + bias
        if modes.saved_tensor_hooks is None:
            self.centred, self.rstd = centred, rstd
            if output is not normalized:
                self.normalized = normalized
        if self.on_statistics is not None:
            self.on_statistics(mean, variance)
        return output

    def backward(self, grad, output, x, *affine):
        weight = affine[0] if self.weighted else None
        bias = affine[-1] if self.shifted else None
        weighted = weight is not None and weight.requires_grad  # (γ's gradient reads x̂)
        scratch = None  # (an array of x's size dL/dx no longer reads, for g x̂)
        if modes.grad_enabled:  # (create_graph, forward mode: the gradient a function of x, γ and β)
            normalized, rstd = self._recorded_statistics(x)
            grad_x = self._recorded_input_gradient(grad, normalized, rstd, weight, x.shape) if x.requires_grad \
                else None
        else:
            normalized, centred, rstd = self._statistics(x, weighted)
            grad_x, scratch = self._input_gradient(grad._data, centred, rstd, weight, x.shape) if x.requires_grad \
                else (None, None)
            normalized = None if normalized is None else Tensor._make(normalized)
        grads = [grad_x]
        if weight is not None:
            grads.append(self._parameter_gradient(_times(grad, normalized, scratch), weight) if weight.requires_grad
                         else None)
        if bias is not None:
            grads.append(self._parameter_gradient(grad, bias) if bias.requires_grad else None)
        return tuple(grads)

    def _statistics(self, x, weighted):
        """x̂ (in x's shape; None unless ``weighted``: only γ's gradient reads it, and with γ the forward kept it),
        x - μ and σ⁻¹ (in the statistics' view) for a backward that records nothing: the forward's, or computed
        again from x."""
        normalized, centred, rstd = self.normalized, self.centred, self.rstd
        if centred is None or rstd is None:
            data = row_major(x._data)
            data = data if self.grouped is None else data.reshape(self.grouped)
            normalized, centred, rstd, _, _ = standardized(data, self.axes, self.count, self.eps)
        return normalized.reshape(x._data.shape) if weighted else None, centred, rstd

    def _input_gradient(self, grad, centred, rstd, weight, shape):
        """dL/dx as the composite's backward computed it, its passes in its order (bit for bit): with g' = γ g,
        dL/d(x - μ) = g' σ⁻¹ + 2 (x - μ) · dL/dvar / n, where dL/dvar = Σ g' (x - μ) · -σ⁻³/2; then the
        mean's share, dL/dx = dL/d(x - μ) - Σ dL/d(x - μ) / n (the module's formula, rounded otherwise). Returned
        with an array of x's size it no longer reads, row-major (g's layout; None if it is not)."""
        dtype = centred.dtype.type
        owned = weight is not None  # (g' = γ g a new array, which the passes below may write over)
        if owned:
            grad = grad * weight._data.reshape(self.affine_shape)
        if self.grouped is not None:
            grad = grad.reshape(self.grouped)
        product = grad * centred
        grad_variance = summed_over(product, self.axes)
        # (over g' where it is row-major, the layout g' σ⁻¹ would have: the sum of dL/d(x - μ) below reads its
        # values in that order)
        grad_centred = numpy.multiply(grad, rstd, out=grad) if owned and grad.flags.c_contiguous else grad * rstd
        grad_variance *= dtype(-0.5)
        grad_variance *= rstd * rstd * rstd
        grad_variance /= dtype(self.count)  # (the second mean's gradient, spread over its terms)
        # (x - μ)² read twice: the share of each factor, written over g' (x - μ), read only by its sum: a new array
        # of this size (2 MB) took about as long to make and first write (memory not yet in the cache) as a product
        share = numpy.multiply(centred, grad_variance, out=product)
        grad_centred += share
        grad_centred += share
        grad_mean = summed_over(grad_centred, self.axes)
        grad_mean /= dtype(self.count)
        grad_centred -= grad_mean
        return Tensor._make(grad_centred.reshape(shape)), product if product.flags.c_contiguous else None

    def _recorded_statistics(self, x):
        """x̂ and σ⁻¹ as functions of x, recorded (create_graph, forward mode): the composite's ops."""
        from .normalization import normalize  # (normalization imports this module)

        normalized, _, variance = normalize(x if self.grouped is None else x.reshape(self.grouped), self.axes,
                                            self.eps)
        return normalized.reshape(x.shape), (variance + self.eps).rsqrt()

    def _recorded_input_gradient(self, grad, normalized, rstd, weight, shape):
        """dL/dx = σ⁻¹ (g' - mean(g') - x̂ · mean(g' x̂)), g' = γ g, with Tensor ops (recorded)."""
        if weight is not None:
            grad = grad * weight.reshape(self.affine_shape)
        if self.grouped is not None:
            grad, normalized = grad.reshape(self.grouped), normalized.reshape(self.grouped)
        result = (grad - grad.mean(self.axes, keepdim=True)
                  - normalized * (grad * normalized).mean(self.axes, keepdim=True)) * rstd
        return result.reshape(shape)

    def _parameter_gradient(self, grad, parameter):
        """Σ of ``grad`` over the axes the parameter is broadcast along, in its shape."""
        return unbroadcast(grad, parameter.reshape(self.affine_shape)).reshape(parameter.shape)

    def release(self):
        super().release()
        self.normalized = self.centred = self.rstd = None


class RunningNormalization(SavesNoShift, Primitive):
    """y = γ x̂ + β, x̂ = (x - m) σ⁻¹, with statistics given (batch norm in evaluation: the running mean m and
    σ⁻¹ = (running var + eps)^(-1/2), arrays of ``affine_shape`` made by the caller, constants of the node);
        dL/dx = (γ g) σ⁻¹,   dL/dγ = Σ g x̂,   dL/dβ = Σ g
    The inputs are x, then γ if ``weighted`` and β if ``shifted``. One output array written in place, where the
    composite (a difference and three products and sums, each a node) made four: the same values, bit for bit,
    and the same gradients (the composite's products in its order), written with Tensor ops, so recorded under
    create_graph. x̂ is kept for γ's gradient where it is not the output (not under saved-tensor hooks: computed
    again from x)."""

    normalized = None

    def forward(self, x, *affine):
        output = x - self.mean
        output *= self.rstd
        if self.weighted:
            normalized, output = output, output * affine[0].reshape(self.affine_shape)
            if modes.saved_tensor_hooks is None:
                self.normalized = normalized
        if self.shifted:
            output += affine[-1].reshape(self.affine_shape)
        return output

    def backward(self, grad, output, x, *affine):
        weight = affine[0] if self.weighted else None
        bias = affine[-1] if self.shifted else None
        grads = [None]
        if x.requires_grad:
            grads[0] = (grad if weight is None else grad * weight.reshape(self.affine_shape)) * Tensor._make(self.rstd)
        if weight is not None:
            grads.append(unbroadcast(grad * self._normalized(x), weight.reshape(self.affine_shape)).reshape(
                weight.shape) if weight.requires_grad else None)
        if bias is not None:
            grads.append(unbroadcast(grad, bias.reshape(self.affine_shape)).reshape(bias.shape)
                         if bias.requires_grad else None)
        return tuple(grads)

    def _normalized(self, x):
        """x̂: the forward's, or (recorded under create_graph, or under saved-tensor hooks) (x - m) σ⁻¹ again."""
        if self.normalized is not None and not modes.grad_enabled:
            return Tensor._make(self.normalized)
        return (x - Tensor._make(self.mean)) * Tensor._make(self.rstd)

    def release(self):
        super().release()
        self.normalized = None
