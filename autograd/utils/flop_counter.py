"""``autograd.utils.flop_counter``, PyTorch's ``torch.utils.flop_counter``: ``FlopCounterMode`` counts the
floating-point operations of the matrix products and convolutions run inside it, forward and backward, by
module:

    with FlopCounterMode(display=False) as counter:
        model(x).sum().backward()
    counter.get_total_flops()        # all of them
    counter.get_flop_counts()        # {"Global": {aten.mm: ..., aten.convolution: ...}, "Net.fc1": {...}}

As PyTorch's, it counts the ops of its registry by ATen's names (``mm``, ``addmm``, ``bmm``, ``baddbmm``,
``convolution``, ``convolution_backward``) with ATen's formulas (a product of an m×k by a k×n matrix is
2·m·k·n; a convolution 2·N·C_out·C_in/groups·prod(kernel)·prod(output positions), input positions when
transposed; biases and elementwise ops count nothing). The library's ops are not ATen's: each op it runs is
seen (``autograd.op_observers``) and said as the ATen call PyTorch makes for it: a product of two matrices is
``mm``, of batches ``bmm``, of a batch and a matrix ``mm`` or ``bmm`` as PyTorch's matmul folds it or not, forward
and backward (``MatMul.kernel``); a matrix (or batch) times a vector, and two vectors, are ``mv`` and ``dot``, which
count nothing; ``addmm`` and ``baddbmm`` are themselves, ``linear`` with a bias ``addmm``, a two-operand ``einsum``
that sums over a shared index ``bmm`` (``addbmm``'s counts nothing, its backward's products ``bmm``), and in a
backward pass the two products of a convolution's gradients halves of ``convolution_backward``. nn's fused
recurrent layers count the per-step ``addmm`` and ``mm`` of PyTorch's CPU kernels, their backward's when it runs
(``_recurrent_calls``). ``scaled_dot_product_attention`` counts as PyTorch's math backend (its four products,
``bmm``), where PyTorch's fused CPU kernel counts nothing.
"""

import math
import threading
from collections import defaultdict

from ..backend import float32
from ..graph import is_grad_enabled
from ..op_observers import observing
from ..ops import aten
from ..ops.contractions import Einsum
from ..ops.convolution import Conv2d, Conv2dWeightGrad, ConvTranspose2d
from ..ops.linalg import MatMul, mixed_kernel
from ..tensor import Tensor
from .module_tracker import ModuleTracker

__all__ = ["FlopCounterMode", "register_flop_formula"]

flop_registry = {}


def get_shape(value):
    return tuple(value.shape) if isinstance(value, Tensor) else value


def shape_wrapper(formula):
    """``formula`` given the shapes of the tensors among the arguments, and the output's as ``out_shape``."""
    def with_shapes(*args, out_val=None, **kwargs):
        shapes = [get_shape(a) for a in args]
        out_shape = tuple(get_shape(o) for o in out_val) if isinstance(out_val, (tuple, list)) else get_shape(out_val)
        return formula(*shapes, out_shape=out_shape, **{k: get_shape(v) for k, v in kwargs.items()})

    with_shapes.__wrapped__ = formula
    return with_shapes


def register_flop_formula(targets, get_raw=False):
    """Decorator: ``formula(*arg_shapes, out_shape=...)`` counts the FLOPs of the operator(s) ``targets``
    (``autograd.ops.aten.mm``, or a list). ``get_raw=True`` gives it the arguments as they are (here their shapes
    too, but for the library's own values)."""
    def register(formula):
        wrapped = formula if get_raw else shape_wrapper(formula)
        for target in targets if isinstance(targets, (list, tuple)) else [targets]:
            if not hasattr(target, "_name") and not hasattr(target, "_qualified_op_name"):
                raise ValueError(f"register_flop_formula(targets): expected each target to be OpOverloadPacket "
                                 f"(i.e. torch.ops.mylib.foo), got {target} which is of type {type(target)}")
            if target in flop_registry:
                raise RuntimeError(f"duplicate registrations for {target}")
            flop_registry[target] = wrapped
        return wrapped

    return register


@register_flop_formula(aten.mm)
def mm_flop(a_shape, b_shape, *args, out_shape=None, **kwargs):
    """(m×k) @ (k×n): m·n multiply-adds of k terms, 2·m·n·k (k − 1 adds taken as k, as ATen's)."""
    m, k = a_shape
    k2, n = b_shape
    if k != k2:
        raise AssertionError(f"matmul: inner dimensions must match (k == k2), got {k} and {k2}")
    return m * n * 2 * k


@register_flop_formula(aten.addmm)
def addmm_flop(self_shape, a_shape, b_shape, out_shape=None, **kwargs):
    """The product's: the added input counts nothing."""
    return mm_flop(a_shape, b_shape)


@register_flop_formula(aten.bmm)
def bmm_flop(a_shape, b_shape, out_shape=None, **kwargs):
    """b products (m×k) @ (k×n): 2·b·m·n·k."""
    b, m, k = a_shape
    b2, k2, n = b_shape
    if b != b2 or k != k2:
        raise AssertionError(f"bmm: shapes {a_shape} and {b_shape} do not multiply")
    return b * m * n * 2 * k


@register_flop_formula(aten.baddbmm)
def baddbmm_flop(self_shape, a_shape, b_shape, out_shape=None, **kwargs):
    return bmm_flop(a_shape, b_shape)


def conv_flop_count(x_shape, w_shape, out_shape, transposed=False):
    """2 · N · C_out · C_in/groups (the weight's two first sizes) · prod(kernel) · prod(positions), the positions
    the output's, or the input's when ``transposed`` (each input position scatters the kernel there). Padding
    and bias are not counted, as ATen's."""
    positions = (x_shape if transposed else out_shape)[2:]
    c_out, c_in, *kernel = w_shape
    return math.prod(positions) * math.prod(kernel) * x_shape[0] * c_out * c_in * 2


@register_flop_formula(aten.convolution)
def conv_flop(x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed, *args, out_shape=None, **kwargs):
    return conv_flop_count(x_shape, w_shape, out_shape, transposed=transposed)


@register_flop_formula(aten.convolution_backward)
def conv_backward_flop(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                       _output_padding, _groups, output_mask, out_shape, **kwargs):
    """dL/dx is the transposed convolution of dL/dy by w (of a transposed one, the plain one); dL/dw the
    convolution of x by dL/dy with batch and channels swapped (of a transposed one, of dL/dy by x)."""
    def swapped(shape):
        return [shape[1], shape[0], *shape[2:]]

    flops = 0
    if output_mask[0]:
        flops += conv_flop_count(grad_out_shape, w_shape, out_shape[0], not transposed)
    if output_mask[1]:
        x, grad_out = (grad_out_shape, x_shape) if transposed else (x_shape, grad_out_shape)
        flops += conv_flop_count(swapped(x), swapped(grad_out), swapped(out_shape[1]))
    return flops


def sdpa_flop_count(query_shape, key_shape, value_shape):
    """Attention's two products, QKᵀ and its weights by V, over b·h heads (the key's heads may be fewer)."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    return bmm_flop((b * h, s_q, d_q), (b * h, d_q, s_k)) + bmm_flop((b * h, s_q, s_k), (b * h, s_k, d_v))


def sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape):
    """The fused kernels' backward: the scores again, then dL/d(weights), dL/dV, dL/dQ and dL/dK (five)."""
    b, h, s_q, d_q = query_shape
    s_k, d_v = key_shape[2], value_shape[3]
    return (bmm_flop((b * h, s_q, d_q), (b * h, d_q, s_k)) + bmm_flop((b * h, s_q, d_v), (b * h, d_v, s_k))
            + bmm_flop((b * h, s_k, s_q), (b * h, s_q, d_v)) + bmm_flop((b * h, s_q, s_k), (b * h, s_k, d_q))
            + bmm_flop((b * h, d_q, s_q), (b * h, s_q, s_k)))


# -- the library's ops, said as ATen's calls --------------------------------------------------------------------


def _swap_last(shape, swap):
    return shape[:-2] + (shape[-1], shape[-2]) if swap else shape


def _matmul_call(call):
    """The product's kernel (MatMul.kernel), or by its shapes mm for two matrices, bmm for batches. mm of a batch
    and a matrix is the batch folded (as PyTorch's matmul folds it), of two batches (a backward's gradient of the
    matrix, summed over the batch) the batch folded into the summed dim; addmm and baddbmm add the output's shape;
    mv, dot and the products of their backwards (outer, mul) are said with the operands' shapes, and counted by
    no formula of PyTorch's."""
    a = _swap_last(tuple(call.inputs[0].shape), call.params.get("transpose_a"))
    b = _swap_last(tuple(call.inputs[1].shape), call.params.get("transpose_b"))
    kernel = call.params.get("kernel")
    if kernel in ("addmm", "baddbmm"):
        return getattr(aten, kernel), (tuple(call.output.shape), a, b)
    if kernel not in (None, "mm", "bmm"):
        return getattr(aten, kernel), (a, b)
    if kernel == "bmm" or kernel is None and len(a) > 2 and len(b) > 2:
        batch = math.prod(_broadcast(a[:-2], b[:-2]))
        return aten.bmm, ((batch, *a[-2:]), (batch, *b[-2:]))
    if len(a) > 2 and len(b) > 2:  # (the summed batch: dL/dW of x @ W or W @ x, x a batch)
        batch = math.prod(a[:-2])
        return aten.mm, ((a[-2], batch * a[-1]), (batch * b[-2], b[-1]))
    if len(b) == 2:
        return aten.mm, ((math.prod(a[:-1]), a[-1]), b)
    return aten.mm, (a, (b[-2], math.prod(b[:-2]) * b[-1]))


def _broadcast(a, b):
    """The broadcast shape of two shapes that broadcast."""
    ndim = max(len(a), len(b))
    a, b = (1,) * (ndim - len(a)) + a, (1,) * (ndim - len(b)) + b
    return tuple(max(i, j) for i, j in zip(a, b))


def _linear_call(call):
    """linear: addmm with a bias (a 2-d input, or a contiguous 3-d one flattened, as PyTorch's), else mm."""
    x, weight = tuple(call.inputs[0].shape), tuple(call.inputs[1].shape)
    matrices = ((math.prod(x[:-1]), x[-1]), (weight[1], weight[0]))
    if len(call.inputs) == 3 and (len(x) == 2 or (len(x) == 3 and call.inputs[0].is_contiguous())):
        return aten.addmm, (tuple(call.inputs[2].shape), *matrices)
    return aten.mm, matrices


def _einsum_call(call):
    """Two operands summed over a shared index (not size 1): PyTorch's one bmm of them; else none (a mul)."""
    if len(call.inputs) != 2:
        return None
    if call.params.get("kernel") == "addbmm":  # (uncounted: PyTorch counts only its backward's bmm)
        return aten.addbmm, (tuple(call.output.shape), *(tuple(x.shape) for x in call.inputs))
    (ta, tb), output = call.params["terms"], call.params["output"]
    sizes = dict(zip(ta, call.inputs[0].shape)) | dict(zip(tb, call.inputs[1].shape))
    shared, summed = set(ta) & set(tb), (set(ta) & set(tb)) - set(output)
    if all(sizes[i] == 1 for i in summed):
        return None

    def size(labels):
        return math.prod(sizes[i] for i in labels)

    batch, k = size(shared - summed), size(summed)
    m, n = size(set(ta) - shared & set(output)), size(set(tb) - shared & set(output))
    return aten.bmm, ((batch, m, k), (batch, k, n))


def _convolution_call(call):
    """convolution in a forward; in a backward pass, dL/dx's half of convolution_backward (Conv2d.backward
    computes it with ConvTranspose2d, ConvTranspose2d.backward with Conv2d)."""
    p, shapes = call.params, [tuple(x.shape) for x in call.inputs]
    x, weight, out = shapes[0], shapes[1], tuple(call.output.shape)
    transposed = call.op is ConvTranspose2d
    common = (p["stride"], p["padding"], p["dilation"])
    output_padding, groups = p.get("output_padding", (0, 0)), p["groups"]
    if not call.in_backward:
        bias = shapes[2] if len(shapes) == 3 else None
        return aten.convolution, (x, weight, bias, *common, transposed, output_padding, groups), out
    return (aten.convolution_backward, (x, out, weight, None, *common, not transposed, output_padding, groups,
                                        (True, False)), (out, None, None))


def _weight_grad_call(call):
    """dL/dw's half of convolution_backward: v = Conv2dWeightGrad(x, dL/dy) (of a transposed convolution,
    (dL/dy, its input): the count is the same)."""
    p = call.params
    x, grad_out, out = tuple(call.inputs[0].shape), tuple(call.inputs[1].shape), tuple(call.output.shape)
    return (aten.convolution_backward, (grad_out, x, out, None, p["stride"], p["padding"], p["dilation"], False,
                                        (0, 0), p["groups"], (False, True)), (None, out, None))


def _recurrent_calls(call):
    """A fused recurrent layer (nn's RNNLayer, GRULayer, LSTMLayer: one layer in one direction) as the ATen calls of
    PyTorch's CPU kernels (or of its cells, one step): the input projection of all steps at once (linear: addmm of
    the rows of a contiguous or packed input, else matmul's mm or bmm, the bias added apart), then at each step the
    hidden state's (addmm; mm without a bias) and a projecting LSTM's projection (mm); a float32 LSTM layer that
    does not project runs oneDNN's kernel, which counts nothing. Returns (forward calls, backward calls), the
    backward's an mm for each operand of those products that requires grad, as autograd runs them (h_0 requires
    it when given so; the later states whenever the layer's output does)."""
    x, w_ih, w_hh, b_ih = call.inputs[:4]
    steps, batch = x.shape[0], x.shape[1]
    sizes, reverse = call.params.get("batch_sizes"), call.params.get("reverse")
    projection = call.inputs[7] if len(call.inputs) == 8 else None
    if (call.op.__name__ == "LSTMLayer" and projection is None and sizes is None and not call.params.get("cell")
            and x.dtype == float32 and x.numel()):
        return [], []
    biased, tracked = call.params.get("bias", True), call.output.requires_grad
    forward, backward = [], []

    def linear(operator, x_shape, weight, x_needs):
        """x (m, k) @ weightᵀ (k, n): the forward call, and the backward's mm for each operand requiring grad."""
        (m, k), n = x_shape, weight.shape[0]
        matrices = ((m, k), (k, n))
        forward.append((operator, ((m, n), *matrices) if operator == aten.addmm else matrices, (m, n)))
        if tracked and x_needs:
            backward.append((aten.mm, ((m, n), (n, k)), (m, k)))
        if tracked and weight.requires_grad:
            backward.append((aten.mm, ((n, m), (m, k)), (n, k)))

    rows = [batch if sizes is None else int(sizes[t]) for t in range(steps)]
    if sizes is not None or x.is_contiguous():
        linear(aten.addmm if biased else aten.mm, (sum(rows), x.shape[2]), w_ih, x.requires_grad)
    elif mixed_kernel(x, w_ih.mT, vector=False) == "mm":
        linear(aten.mm, (steps * batch, x.shape[2]), w_ih, x.requires_grad)
    else:  # (weights that require no grad, a batch-first input: matmul's bmm of the expanded weight)
        forward.append((aten.bmm, ((steps, batch, x.shape[2]), (steps, x.shape[2], w_ih.shape[0])), None))
        if tracked and x.requires_grad:
            backward.append((aten.bmm, ((steps, batch, w_ih.shape[0]), (steps, w_ih.shape[0], x.shape[2])), None))
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for i, t in enumerate(order):
        linear(aten.addmm if biased else aten.mm, (rows[t], w_hh.shape[1]), w_hh,
               call.inputs[5].requires_grad if i == 0 else True)
        if projection is not None:
            linear(aten.mm, (rows[t], projection.shape[1]), projection, True)
    return forward, backward


_ATEN_CALLS = {MatMul: _matmul_call, Einsum: _einsum_call, Conv2d: _convolution_call,
               ConvTranspose2d: _convolution_call, Conv2dWeightGrad: _weight_grad_call}


def _aten_call(call):
    """(operator, arguments, output) of the ATen call PyTorch makes for this op, or None. Another op is said by
    its class's name in snake case (Add: aten.add) with its inputs, for formulas a counter's custom_mapping adds."""
    said = _ATEN_CALLS.get(call.op)
    if said is None:
        if call.op.__name__ == "AffineMap":  # (nn's op: the library does not import nn)
            said = _linear_call
        else:
            operator = _NAMED.get(call.op, False)
            if operator is False:
                operator = _NAMED[call.op] = _aten_named(call.op.__name__)
            return None if operator is None else (operator, call.inputs, call.output)
    result = said(call)
    if result is None or len(result) == 3:
        return result
    return (*result, call.output)


_NAMED = {}  # op class -> the aten operator of its name in snake case, or None (looked up once)


def _aten_named(class_name):
    name = "".join("_" + c.lower() if c.isupper() else c for c in class_name).lstrip("_")
    try:
        return getattr(aten, name)
    except AttributeError:
        return None


# -- the counter ----------------------------------------------------------------------------------------------

suffixes = ["", "K", "M", "B", "T"]


def get_suffix_str(number):
    """The unit a table shows ``number`` in: one more only past its fourth digit (1001M, not 1.001B)."""
    return suffixes[max(0, min(len(suffixes) - 1, (len(str(number)) - 2) // 3))]


def convert_num_with_suffix(number, suffix):
    return f"{number / 1000 ** suffixes.index(suffix):.3f}" + suffix


def convert_to_percent_str(num, denom):
    return "0%" if denom == 0 else f"{num / denom:.2%}"


def _table(rows, headers, aligns):
    """tabulate's "simple" format, as PyTorch's table prints through it (tabulate 0.9): cells stripped, a column of
    numbers alone shown as numbers ("420.000" as 420), columns at least their header and two wide, two spaces
    apart, a line of dashes under the headers."""
    columns = [[row[i].strip() for row in rows] for i in range(len(headers))]
    columns = [[format(float(c), "g") for c in column] if all(_is_number(c) for c in column) else column
               for column in columns]
    widths = [max([len(h) + 2] + [len(c) for c in column]) for h, column in zip(headers, columns)]

    def line(cells):
        return "  ".join(c.ljust(w) if a == "left" else c.rjust(w) for c, w, a in zip(cells, widths, aligns))

    return "\n".join([line(headers), "  ".join("-" * w for w in widths)] + [line(row) for row in zip(*columns)])


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


class FlopCounterMode:
    """Counts the FLOPs of the ops run inside it, by module (``"Global"``, ``"Net"``, ``"Net.fc1"``, named as
    the module's type and its attribute path) and by ATen operator; prints its table at exit when ``display``."""

    def __init__(self, mods=None, depth=2, display=True, custom_mapping=None):
        self.flop_counts = defaultdict(lambda: defaultdict(int))
        self.depth, self.display = depth, display
        if mods is not None:
            import warnings

            warnings.warn("mods argument is not needed anymore, you can stop passing it", stacklevel=2)
        self.flop_registry = {**flop_registry, **{
            key: formula if getattr(formula, "_get_raw", False) else shape_wrapper(formula)
            for key, formula in (custom_mapping or {}).items()}}
        self.mod_tracker = ModuleTracker()
        self._observing = None

    def get_total_flops(self):
        return sum(self.flop_counts["Global"].values())

    def get_flop_counts(self):
        """{module name: {operator: FLOPs}}, "Global" holding all of them."""
        return {name: dict(counts) for name, counts in self.flop_counts.items()}

    def get_table(self, depth=None):
        """The counts as PyTorch's table: each module down to ``depth`` levels with its operators, FLOPs in the
        unit of the total, and their share of it; "Global" first unless a module holds them all."""
        depth = self.depth if depth is None else depth
        depth = 999999 if depth is None else depth
        total = self.get_total_flops()
        suffix = get_suffix_str(total)
        global_subsumed = False
        values = []

        def rows_of(name, level):
            nonlocal global_subsumed
            flops = sum(self.flop_counts[name].values())
            global_subsumed |= flops >= total
            pad = " " * level
            rows = [[pad + name, convert_num_with_suffix(flops, suffix), convert_to_percent_str(flops, total)]]
            rows += [[pad + " - " + str(op), convert_num_with_suffix(n, suffix), convert_to_percent_str(n, total)]
                     for op, n in self.flop_counts[name].items()]
            return rows

        for name in sorted(self.flop_counts):
            if name != "Global" and name.count(".") + 1 <= depth:
                values += rows_of(name, name.count("."))
        if "Global" in self.flop_counts and not global_subsumed:
            values = rows_of("Global", 0) + [[" " + row[0], *row[1:]] for row in values]
        if not values:
            values = [["Global", "0", "0%"]]
        return _table(values, ["Module", "FLOP", "% Total"], ("left", "right", "right"))

    def __enter__(self):
        self.flop_counts.clear()
        self.mod_tracker.__enter__()
        self._thread = threading.get_ident()  # (PyTorch's modes are per thread: another thread's ops are not counted)
        self._observing = observing(self._count)
        self._observing.__enter__()
        return self

    def __exit__(self, *exc_info):
        self._observing.__exit__(*exc_info)
        self._observing = None
        self.mod_tracker.__exit__()
        if self.display:
            print(self.get_table(self.depth))
        return False

    def _count(self, call):
        if threading.get_ident() != self._thread:
            return
        if call.op.__name__ in ("RNNLayer", "GRULayer", "LSTMLayer"):  # (nn's ops: the library does not import nn)
            forward, backward = _recurrent_calls(call)
            self._add(forward)
            if backward and call.output.grad_fn is not None:  # counted when the layer's backward runs, if inside
                call.output.grad_fn.register_prehook(lambda grads: self._add_in_backward(backward))
            return
        said = _aten_call(call)
        if said is not None:
            self._add([said])

    def _add(self, calls):
        """Count each (operator, arguments, output) under the modules running now."""
        for operator, args, output in calls:
            if operator in self.flop_registry:
                flops = self.flop_registry[operator](*args, out_val=output)
                for name in set(self.mod_tracker.parents):
                    self.flop_counts[name][operator] += flops

    def _add_in_backward(self, calls):
        """A fused layer's backward products, while this counter counts (a backward of create_graph=True runs the
        layer's Tensor ops instead, which are counted as they run)."""
        if self._observing is not None and threading.get_ident() == self._thread and not is_grad_enabled():
            self._add(calls)
