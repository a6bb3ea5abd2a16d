"""Linear's op: ``AffineMap``, y = x Wᵀ + b as one node (``F.linear``), and the edges PyTorch's addmm and mm show.
"""

from autograd import Primitive, Tensor
from autograd.backend import float16, xp
from autograd.errors import ShapeError, check_same_dtype, refuse_non_tensors
from autograd.ops.conjugation import conj
from autograd.ops.conversion import refuse_kinds, type_name
from autograd.ops.linalg import MatMul, matmul_dtype_words
from autograd.ops.outputs import write_out
from autograd.ops.reductions import Sum
from autograd.primitive import named_node


class AffineMap(Primitive):
    """y = x Wᵀ + b  (W of shape (out, in), as PyTorch);
    dL/dx = dL/dy W,   dL/dW = (dL/dy)ᵀ x,   dL/db = Σ_batch dL/dy

    One fused node instead of transpose, matmul and add: fewer nodes to visit,
    and dL/dW comes out in W's own (out, in) layout. Complex: W and x conjugated, as every product's.
    """

    handles_complex = True
    saved_input_readers = ((1,), (0,), ())  # x only for dL/dW, W only for dL/dx, b for none (its shape alone)
    pytorch_name = "AddmmBackward0"  # (a batch of vectors and a bias; linear names the other cases as PyTorch's)

    def forward(self, x, weight, bias=None):
        if x.dtype == xp.float16:  # in float32, the bias added before rounding once, as PyTorch's addmm
            wide = (a.astype(xp.float32) for a in (x, weight) + (() if bias is None else (bias,)))
            return self.forward(*wide).astype(xp.float16)
        if x.ndim == 2 and len(x) < len(weight):
            # the same product as W xᵀ, transposed: with fewer rows than outputs, BLAS (OpenBLAS)
            # runs it with the longer side first up to twice as fast; copied back to row order,
            # which the elementwise ops after it and the backward's products prefer
            y = xp.ascontiguousarray((weight @ x.T).T)
        elif x.ndim > 2 and weight.ndim == 2 and x.flags.c_contiguous and x.size:
            # a batch folded into the rows of one product (a view), as PyTorch's linear runs a contiguous batch
            # through addmm: one BLAS call, not NumPy's one per batch entry, up to 1.5x faster, and more often
            # PyTorch's values, bit for bit
            y = (x.reshape(-1, x.shape[-1]) @ weight.T).reshape(x.shape[:-1] + weight.shape[:1])
        else:
            y = x @ weight.T
        if bias is not None:
            try:
                y += bias
            except ValueError:  # (a bias that does not fit the output; no cost on the path that fits)
                raise _bias_misfit(y.shape, bias.shape) from None
        return y

    def backward(self, grad, y, x, weight, bias=None):
        # the products as MatMul nodes (Gᵀ x with G read transposed), shapes known to fit
        by_x, by_weight = (conj(x), conj(weight)) if grad._data.dtype.kind == "c" else (x, weight)  # (complex)
        grad_x = None
        if x.requires_grad:
            grad_x = MatMul.apply_in_backward(grad, by_weight) if grad.ndim > 1 else grad @ by_weight
        grad_weight = None
        if weight.requires_grad:
            rows = grad.reshape(-1, grad.shape[-1]) if grad.ndim != 2 else grad
            inputs = by_x.reshape(-1, x.shape[-1]) if x.ndim != 2 else by_x
            grad_weight = MatMul.apply_in_backward(rows, inputs, transpose_a=True)
        grad_bias = None
        if bias is not None and bias.requires_grad:
            # (Sum's node directly, as grad.sum(dims) makes it, without the method's argument reading: every step)
            grad_bias = (Sum.apply_in_backward(grad, axes=tuple(range(grad.ndim - 1)), keepdim=False,
                                               pytorch_name="SumBackward1") if grad.ndim > 1 else grad)
        return (grad_x, grad_weight) if bias is None else (grad_x, grad_weight, grad_bias)

    @property
    def next_functions(self):
        """The edges as PyTorch's addmm and mm show them, which take the weight through its transpose:
        (bias, input, TBackward0 of the weight) and (input, TBackward0 of the weight). The engine walks the node's
        own order (input, weight, bias); only what the program reads is PyTorch's (the blitz's graph walk)."""
        edges = Primitive.next_functions.fget(self)
        if self.name() not in ("AddmmBackward0", "MmBackward0"):
            return edges
        transposed = (None if edges[1][0] is None else _TransposeOf(edges[1]), 0)
        return (edges[2], edges[0], transposed) if len(edges) == 3 else (edges[0], transposed)


    def run_post_hooks(self, grad_inputs, grad_output):
        """Node hooks see the gradients as PyTorch's addmm and mm give them, in next_functions' order:
        (dL/db, dL/dx, dL/d(Wᵀ)) and (dL/dx, dL/d(Wᵀ)) (a deprecated module hook on a Linear reads them so); what a
        hook returns in that order is taken back into the node's own (x, W, b)."""
        if self.name() not in ("AddmmBackward0", "MmBackward0"):
            return super().run_post_hooks(grad_inputs, grad_output)
        grad_x, grad_weight, *grad_bias = grad_inputs
        shown = (grad_x, None if grad_weight is None else grad_weight.t())
        shown = tuple(grad_bias) + shown if grad_bias else shown
        replaced = super().run_post_hooks(shown, grad_output)
        if replaced is shown:
            return grad_inputs
        *grad_bias, grad_x, grad_weight_t = replaced
        return (grad_x, None if grad_weight_t is None else grad_weight_t.t(), *grad_bias)


def _bias_misfit(output_shape, bias_shape):
    """PyTorch's ShapeError (a RuntimeError) for a bias that does not expand to linear's output: its expand's words,
    then which bias would."""
    where = (f" (linear: a bias of shape {tuple(bias_shape)} for an output of shape {tuple(output_shape)}; it needs "
             f"one entry per output feature, shape ({output_shape[-1]},))")
    if len(bias_shape) > len(output_shape):
        return ShapeError(f"The expanded size of the tensor must not have fewer dims than the tensor{where}")
    for dim in range(-1, -len(bias_shape) - 1, -1):
        if bias_shape[dim] not in (1, output_shape[dim]):
            return ShapeError(f"The expanded size of the tensor ({output_shape[dim]}) must match the existing size "
                              f"({bias_shape[dim]}) at non-singleton dimension {len(output_shape) + dim}.  Target "
                              f"sizes: {list(output_shape)}.  Tensor sizes: {list(bias_shape)}{where}")
    return ShapeError(where.strip(" ()"))


class _TransposeOf:
    """PyTorch's TBackward0 between a linear layer's node and its weight, as next_functions shows it (no pass
    goes through it: AffineMap's backward gives dL/dW in W's own layout)."""

    metadata = {}

    def __init__(self, weight_edge):
        self.next_functions = (weight_edge,)

    def name(self):
        return "TBackward0"

    def __repr__(self):
        return "<TBackward0>"


def _linear_dtype_words(input, weight, bias):
    """PyTorch's words for a weight or bias of a dtype other than the input's: its addmm's (with a bias) or
    matmul's (without). The weight is checked first."""
    if weight.dtype == input.dtype:  # (then the bias differs)
        return (f"self and mat2 must have the same dtype, but got {type_name(bias.dtype)} and "
                f"{type_name(weight.dtype)}")
    if bias is None:
        return matmul_dtype_words(input._data, weight._data.T)
    return f"mat1 and mat2 must have the same dtype, but got {type_name(input.dtype)} and {type_name(weight.dtype)}"


def linear(input, weight, bias=None, *, out=None):
    """y = x Wᵀ + b, with W of shape (out_features, in_features)."""
    if input.ndim == 0 or weight.ndim == 0:
        raise RuntimeError(f"both arguments to linear need to be at least 1D, but they are {input.ndim}D and "
                           f"{weight.ndim}D")
    try:
        features, expected, dtype = input._data.shape[-1], weight._data.shape[-1], input._data.dtype
        weight_dtype, bias_dtype = weight._data.dtype, dtype if bias is None else bias._data.dtype
    except AttributeError:  # (an argument that is no Tensor, a NumPy array say: said by position, not read on)
        refuse_non_tensors("linear", (input, weight) if bias is None else (input, weight, bias), Tensor)
        raise
    if features != expected:  # (the arrays' shapes: no Size made at every call)
        raise ShapeError(f"linear: input of shape {tuple(input.shape)} has {input.shape[-1]} features but the "
                         f"weight of shape {tuple(weight.shape)} expects {weight.shape[-1]} (mat1 and mat2 "
                         f"shapes cannot "
                         "be multiplied)")
    if weight_dtype != dtype or bias_dtype != dtype:  # (compared here, a hot
        # path; the words where they differ)
        check_same_dtype("linear", input, (_linear_dtype_words, input, weight, bias), weight=weight, bias=bias)
    if dtype.kind == "b":  # (NumPy would multiply bools; PyTorch has no kernel for them)
        refuse_kinds(input, "addmm_impl_cpu_", "b")
    if bias is not None and dtype == float16:
        # PyTorch runs a 2-d input (of any layout) and a contiguous one through addmm (flattened), whose float16
        # is computed in float32 and rounded once; other layouts take matmul then add, each rounded
        if input.ndim > 2 and not input.is_contiguous():
            return write_out(input.matmul(weight.t()) + bias, out)
        return write_out(named_node(AffineMap.apply(input.float(), weight.float(), bias.float()).half(), None,
                                    "AddmmBackward0" if input.ndim == 2 else "ViewBackward0"), out)
    if input.ndim == 2 and bias is not None:  # the common case, PyTorch's addmm
        return write_out(AffineMap.apply(input, weight, bias), out)
    # PyTorch's node for the other cases: with a bias a view; without, mm, matmul's squeeze or its _unsafe_view
    if bias is not None:
        return write_out(AffineMap.apply(input, weight, bias, pytorch_name="ViewBackward0"), out)
    name = {1: "SqueezeBackward4", 2: "MmBackward0"}.get(input.ndim, "UnsafeViewBackward0")
    return write_out(AffineMap.apply(input, weight, pytorch_name=name), out)
