"""Cross-entropy and the negative log-likelihood (``F.cross_entropy``, ``F.nll_loss``): class scores against
class indices or probabilities, with class weights, ``ignore_index`` and label smoothing, as PyTorch's.

``cross_entropy`` of indices is one fused node (``CrossEntropy``) whose backward is one node too
(``CrossEntropyGrad``): softmax minus the one-hot target, each row scaled by its weight and the reduction. The
class checks (indices in range, the class dim, a batch of one squeezed) are shared with the margin losses of
losses.py.
"""

import math

import numpy

from autograd import Primitive, Tensor
from autograd.backend import xp
from autograd.errors import DtypeError, IndexRangeError, ShapeError, check_same_dtype, not_a_tensor
from autograd.index_watching import watches_arguments
from autograd.meta import MetaArray, meta_array
from autograd.ops.conversion import refuse_kinds, type_name
from autograd.ops.elementwise import where
from autograd.ops.losses import checked_reduction, refuse_gradient_to
from autograd.ops.losses import reduced as _reduce
from autograd.ops.reductions import SoftmaxGrad, Sum, log_softmax_array, softmax_array
from autograd.primitive import named_node, no_tensor
from autograd.tensor import tensor_from


def _class_dim(input):
    return 0 if input.ndim == 1 else 1


def _class_last(input):
    """(N, C, d1, ...) -> (N·d1·..., C): one row of class scores per prediction."""
    dim = _class_dim(input)
    if input.ndim == 2:  # (already rows: no reshape, so no view node in the graph)
        return input
    if input.ndim > 2:
        input = input.permute(0, *range(2, input.ndim), 1)
    # (the row count spelled out, not -1: zero classes leave it undetermined)
    return input.reshape(math.prod(input.shape[:-1]), input.shape[-1]) if dim else input.reshape(1, -1)


def _class_planes(input):
    """(N, C, d1, d2, ...) -> (N, C, d1·d2·...) (a view of a row-major input), the classes left on dim 1; (C,),
    (N, C) and the scores of other layouts as _class_last gives them (a transpose's or channels-last's rows are a
    view). A prediction's classes are then strided, and a reduction over the classes one elementwise pass per class
    over whole planes, where _class_last's rows were first a transposed copy, then a reduction over short rows
    (NumPy's slowest: (131072, 10) rows took 8 ms to the planes' 0.3 ms)."""
    data = input._data
    if data.ndim == 2:
        return input
    if data.ndim < 3 or not data.flags.c_contiguous:
        return _class_last(input)
    return input if data.ndim == 3 else input.reshape(data.shape[0], data.shape[1], math.prod(data.shape[2:]))


def _per_prediction(values, x):
    """One value per prediction (R of them) as x's shape without the classes: (R,) of rows, (N, S) of planes."""
    return values.reshape(x.shape[:1] + x.shape[2:])


def _per_class_column(values, x):
    """One value per prediction (R of them), shaped to broadcast over x's classes: (R, 1) of rows, (N, 1, S) of
    planes."""
    return values.reshape(x.shape[:1] + (1,) + x.shape[2:])


def _at_labels(x, labels):
    """The index of each prediction's labelled class in x: (rows, labels) of (R, C) rows; (n, labels, s) of
    (N, C, S) planes, the labels (R = N·S of them, in the order n·S + s) as (N, S). x[_at_labels(...)] has the
    shape ``_per_prediction`` gives."""
    if x.ndim == 2:
        return xp.arange(len(labels)), labels
    n, _, size = x.shape
    return xp.arange(n)[:, None], labels.reshape(n, size), xp.arange(size)


def _refuse_non_tensor_scores(name, input, kernel, kernel_for_images=None):
    """PyTorch's TypeError for scores that are no tensor (a model whose forward forgot its ``return`` gives None;
    NumPy scores are refused as everywhere else), before anything reads their shape; and its NotImplementedError
    (naming its ``kernel``, for more than 2 dims ``kernel_for_images``) for integer, bool or complex scores, which
    NumPy would score in float64 (or in complex numbers)."""
    if not isinstance(input, Tensor):
        error = not_a_tensor(name, 0, input)
        if input is None:
            error.args = (f"{error.args[0]} (a forward() without a return statement gives None)",)
        raise error
    refuse_kinds(input, kernel if input.ndim <= 2 or kernel_for_images is None else kernel_for_images, "biuc")
    if not input._data.ndim:  # (the array's ndim: no call on the training step's path)
        _refuse_scores_without_classes(name)


def _refuse_scores_without_classes(name):
    """0-d scores have no class dim. PyTorch's nll_loss raises ValueError; its cross_entropy RuntimeError or
    IndexError, by the target's dtype (both here: IndexRangeError)."""
    wanted = "log-probabilities" if name == "nll_loss" else "scores"
    where = (f"{name}: the input is 0-d, with no class dim; it needs the {wanted} of each class, of shape (C,), "
             "(N, C) or (N, C, d1, ...)")
    if name == "nll_loss":
        raise ValueError(f"Expected 1 or more dimensions (got 0) ({where})")
    raise IndexRangeError(where)


def _squeezed_batch_of_one(input, target):
    """True for the scores of one prediction, (C,), with their class index still in a batch of one, (1,): what
    ``out.squeeze()`` of a (1, C) output leaves. PyTorch computes the loss of the label, and refuses at backward."""
    return input.ndim == 1 and target.shape == (1,) and target.dtype.kind in "iu"


def _refused_at_backward(loss, input):
    """``loss`` of a squeezed batch of one (``_squeezed_batch_of_one``), whose backward raises PyTorch's error."""
    if loss.requires_grad:
        def refuse(grad):
            raise RuntimeError(f"size mismatch (got input: [{input.shape[0]}], target: [1]): the scores of one "
                               "prediction, shape (C,), need a 0-d label (label.squeeze()), or keep the batch dim "
                               "of the scores (no .squeeze() of the (1, C) output)")

        loss.register_hook(refuse)
    return loss


def _check_class_indices(name, input, target):
    dtype = target._data.dtype  # (the array's: read at every step)
    if dtype.kind not in "iu":  # (PyTorch's RuntimeError; a TypeError too)
        raise DtypeError(f"expected target dtype to be Long or Byte, but got {type_name(target.dtype)} ({name}: "
                         f"target of dtype {target.dtype} given, but class indices must be integers (use .long()); "
                         f"for class probabilities pass a float target of the input's shape {tuple(input.shape)})")
    if dtype != numpy.int64 and dtype != numpy.uint8:  # PyTorch reads them as int64 (or uint8) only
        raise DtypeError(f"{name}: expected target dtype to be Long or Byte, but got {type_name(target.dtype)} "
                         f"({target.dtype}); convert the class indices with target.long()")
    if input.ndim == 1 and target.ndim == 1:  # (a (1,) target was read as 0-d: see _squeezed_batch_of_one)
        raise ShapeError(f"{name}: For 1D input, 1D target must have size 1, but got target size: "
                         f"{target.shape[0]} (input of shape {tuple(input.shape)}: the scores of one prediction)")
    shape = input._data.shape  # (the arrays' shapes: the hot path makes no Size)
    expected = shape[:_class_dim(input)] + shape[_class_dim(input) + 1:]
    if target._data.shape != expected:
        # (PyTorch's words, in its order: the batch, then the target's rank (a column of labels, (N, 1), as a
        # DataFrame gives them), then a spatial target's size)
        if input.ndim >= 2 and target.ndim >= 1 and target.shape[0] != input.shape[0]:
            words = f"Expected input batch_size ({input.shape[0]}) to match target batch_size ({target.shape[0]}). "
        elif input.ndim <= 2 and target.ndim > 1:
            words = "0D or 1D target tensor expected, multi-target not supported. "
        else:
            words = f"Expected target size {list(expected)}, got {list(target.shape)}. " if input.ndim > 2 else ""
        raise ShapeError(f"{words}{name}: input of shape {tuple(input.shape)} needs a target of shape "
                         f"{tuple(expected)}, "
                         f"got {tuple(target.shape)}")
    if target.dtype == numpy.uint8 and input.ndim > 2:  # (PyTorch's spatial kernel, nll_loss2d, reads int64 only;
        # its 1-d one takes a uint8 mask as class indices too)
        raise DtypeError(f"expected scalar type Long but found Byte ({name} of an input of shape "
                         f"{tuple(input.shape)}: convert a uint8 mask of class indices with target.long())")


def _weight_dtype_words(rows, weight):
    return f"expected scalar type {type_name(rows.dtype)} but found {type_name(weight.dtype)}"


def _class_weights(name, rows, target, weight, ignore_index):
    """(labels, w_y per prediction, Σ w_y): ignored targets get weight 0; the weights are
    constants, so their sum is a plain number."""
    classes = rows._data.shape[1]
    # (PyTorch's kernels refuse a weight of another dtype, in their words)
    check_same_dtype(name, rows, (_weight_dtype_words, rows, weight), weight=weight)
    if weight is not None and tuple(weight.shape) != (classes,):
        raise RuntimeError(f"weight tensor should be defined either for all {classes} classes or no classes but got "
                           f"weight tensor of shape: {list(weight.shape)} ({name}: one entry per class)")
    labels = target._data.reshape(-1).astype(xp.int64, copy=False)  # (uint8 labels index as positions, not a mask)
    if weight is None and labels.size:  # the common case in two reductions: every label a class, none ignored
        low, high = int(labels.min()), int(labels.max())
        if 0 <= low and high < classes and not low <= ignore_index <= high:
            return labels, None, float(len(labels))
    kept = labels != ignore_index
    bad = kept & ((labels < 0) | (labels >= classes))
    if bad.any():
        raise IndexError(f"Target {int(labels[bad][0])} is out of bounds. ({name}: {classes} classes, valid targets "
                         f"0 to {classes - 1}, or ignore_index={ignore_index})")
    if weight is None and kept.all():
        return labels, None, float(len(labels))
    safe = xp.where(kept, labels, 0)
    weights = xp.ones(len(labels), dtype=rows.dtype) if weight is None else weight._data[safe]
    weights = (weights * kept).astype(rows.dtype)
    return safe, weights, float(weights.sum())


def _picked_log_probabilities(name, log_probs, target, weight, ignore_index):
    """(-w_y ln p_y for each prediction, Σ w_y, the labels and w_y as _class_weights gives them), from
    log-probabilities. An ignored prediction is skipped, as PyTorch's kernel skips it: 0 whatever its
    log-probabilities (a weight of 0 times their -inf or NaN was NaN)."""
    rows = _class_planes(log_probs)
    labels, weights, total = _class_weights(name, rows, target, weight, ignore_index)
    picked = -rows[_at_labels(rows._data, labels)]
    if picked._data.ndim > 1:  # (planes': (N, S), flattened as the labels are)
        picked = picked.reshape(len(labels))
    if weights is None:
        return picked, total, labels, weights
    ignored = Tensor._make(_ignored(target, ignore_index))
    return where(ignored, 0.0, picked * Tensor._make(weights)), total, labels, weights


def _ignored(target, ignore_index):
    """Which predictions (flattened) have the ignored target."""
    return target._data.reshape(-1) == ignore_index


class CrossEntropy(Primitive):
    """ℓ = Σ_n s · w_n (ln Σ_c e^(x_nc) - x_n,y_n)  for rows of logits x (s: 1, or 1/Σw for 'mean');
    dℓ/dx_nc = s · w_n (softmax(x_n)_c - [c = y_n])

    One fused node from logits to the loss: stable (log-sum-exp) and cheaper than
    log_softmax, indexing and a reduction as separate nodes; its backward is one node too.
    """

    pytorch_name = "NllLossBackward0"  # (PyTorch's cross_entropy: log_softmax, then nll_loss)
    ignored = None  # the rows whose target is ignore_index (None: none is), their losses 0 whatever their logits
    mean = False  # reduction='mean' (float16 divides by its own sum of the weights: _float16_total_weight)
    class_last = True  # the classes were the input's last dim, (N, C); not an image's (N, C, H, W): _half_log_softmax
    # (each row's max, Σ e^(x - max)) from the forward, for the backward's softmax: the two reductions softmax_array
    # computes on a row-major x, the same numbers, kept (a number per row) so the backward does not compute them
    # again. Taken by the backward that uses them (None: computed there, as for another layout or a second backward)
    normalizers = None
    at_labels = None  # _at_labels(x, labels), the caller's: the backward's too

    def forward(self, x):
        if x.dtype == xp.float16:
            return self._half(x)
        if not x.size:  # (no rows, no classes: nothing to shift)
            shifted = picked = x[self.at_labels]
            sums = xp.exp(x).sum(axis=1)
        else:
            shift = x.max(axis=1, keepdims=True)
            shifted = x - shift
            picked = shifted[self.at_labels]  # (taken before e^shifted is written over it: no second array)
            sums = xp.exp(shifted, out=shifted).sum(axis=1)
        if x.size and x.flags.c_contiguous:
            self.normalizers = shift, sums
        losses = (xp.log(sums) - picked).reshape(-1)  # (planes' (N, S): n·S + s)
        if self.ignored is not None:  # skipped, as PyTorch's nll_loss skips them (a row of -inf logits is NaN)
            losses = xp.where(self.ignored, 0, losses)
        if self.weights is not None:
            losses = losses * self.weights
        return losses.sum() * self.scale if self.reduce else losses

    def _half(self, x):
        """float16 as PyTorch's log_softmax, then nll_loss's float16 arithmetic: -w_n ln p_n rounded, summed by
        _float16_sum, a mean divided by the float16 total weight."""
        losses = -_half_log_softmax(x, self.class_last)[self.at_labels].reshape(-1)
        if self.weights is not None:
            losses = (losses * self.weights).astype(xp.float16)
        if self.ignored is not None:
            losses = xp.where(self.ignored, xp.float16(0), losses)
        if not self.reduce:
            return losses
        return _float16_reduced(losses, self.labels, self.weights, self.ignored, self.mean)

    def backward(self, grad, loss, x):
        total_weight = 1
        if self.mean and x._data.dtype == xp.float16:
            total_weight = _float16_total_weight(self.labels, self.weights, self.ignored)
        normalizers, self.normalizers = self.normalizers, None
        return (CrossEntropyGrad.apply(grad, x, labels=self.labels, weights=self.weights, scale=self.scale,
                                       reduce=self.reduce, total_weight=total_weight, class_last=self.class_last,
                                       normalizers=normalizers, at_labels=self.at_labels),)


class CrossEntropyGrad(Primitive):
    """Cross-entropy's backward as one node, for g = dL/dℓ (one number, or one per row with
    reduction='none'), p = softmax(x) along the classes and c_n = s · w_n · g(_n):
        z_nc = c_n (p_nc - [c = y_n])
        dL/dg = Σ_c u_nc s w_n (p_nc - [c = y_n])   (summed over the rows too when g is one number)
        dL/dx = softmax's backward of c u:  p ⊙ (c u - Σ_c c u p)      (u = dL/dz)
    One pass over the logits instead of five ops; still differentiable for second derivatives.
    """

    total_weight = 1  # float16 'mean': PyTorch's float16 Σ w_n, which g is divided by (the scale s is not used)
    class_last = True  # as CrossEntropy's
    normalizers = None  # CrossEntropy's (row max, Σ e^(x - max)) of this x, when its forward kept them
    at_labels = None  # CrossEntropy's

    def row_scales(self, x):
        """s · w_n for each prediction, shaped to broadcast over x's classes (_per_class_column); without weights,
        s alone (a 0-d array: the same number for each row)."""
        scale = self.scale if self.reduce else 1
        if self.weights is None:
            return xp.asarray(scale, dtype=x.dtype)
        return _per_class_column(xp.full(len(self.labels), scale, dtype=x.dtype) * self.weights, x)

    def forward(self, g, x):
        if type(x) is MetaArray:  # (a meta model's loss): a gradient of x's shape, no values to write into
            return meta_array(x.shape, x.dtype)
        if x.dtype == xp.float16:
            return self._half(g, x)
        if self.normalizers is None:
            z = softmax_array(x, 1)  # the softmax, as x.softmax(1) computes it
        else:  # (softmax_array's arithmetic, its two reductions the forward's)
            shift, sums = self.normalizers
            z = x - shift
            xp.exp(z, out=z)
            z /= sums[:, None]
        z[self.at_labels] -= 1
        z *= self.row_scales(x) * (g if self.reduce else _per_class_column(g, x))
        return z

    def _half(self, g, x):
        """float16 as PyTorch's two backwards: nll_loss's -c_n = -w_n · (g / Σw), each step rounded to float16, at
        the labels; then log_softmax's, from its float16 output y, in float32 rounded once: c_n (e^y - [c = y_n])."""
        c = (g.astype(xp.float16) / self.total_weight).astype(xp.float16)
        if self.weights is not None:
            c = (self.weights * c).astype(xp.float16)
        c = xp.broadcast_to(c.astype(xp.float32), (len(self.labels),))
        z = xp.exp(_half_log_softmax(x, self.class_last).astype(xp.float32)) * _per_class_column(c, x)
        z[self.at_labels] -= _per_prediction(c, x)
        return z.astype(xp.float16)

    def backward(self, u, z, g, x):
        probabilities = x.softmax(1)
        scales = Tensor._make(self.row_scales(x._data))
        grad_g = grad_x = None
        if g.requires_grad:
            one_hot = xp.zeros(x.shape, dtype=x.dtype)
            one_hot[self.at_labels] = 1
            per_row = (u * (probabilities - Tensor._make(one_hot)) * scales).sum(1)
            grad_g = per_row.sum() if self.reduce else per_row.reshape(len(self.labels))
        if x.requires_grad:
            row_scales = scales * (g if self.reduce else g.reshape(_per_class_column(g._data, x._data).shape))
            grad_x = SoftmaxGrad.apply(u * row_scales, probabilities, dim=1)
        return grad_g, grad_x


def _half_log_softmax(x, class_last):
    """float16 log_softmax over the rows' classes, as PyTorch computes it for the input they came from: its kernel
    for the last dim, of (N, C); of an image's classes (N, C, H, W), not the last dim, float32 rounded once."""
    return log_softmax_array(x, 1) if class_last else log_softmax_array(x.astype(xp.float32), 1).astype(xp.float16)


def _float16_sum(terms, rows):
    """Σ terms in float16, each addition rounded, as PyTorch's nll_loss kernel sums float16 losses: a cascade of 8
    partial sums, row n's term added to the first, which passes its sum up a level (and is cleared) when n is a
    multiple of 16 (of 256 for the next level, ...); then the partial sums added in order. ``rows``: each term's row
    (the index n; ignored rows are skipped, passing nothing up)."""
    partial = [xp.float16(0)] * 8
    for row, term in zip(rows.tolist(), terms):
        partial[0] = partial[0] + term
        for level in range(7):
            if row & (15 << (4 * level)):
                break
            partial[level + 1], partial[level] = partial[level + 1] + partial[level], xp.float16(0)
    total = xp.float16(0)
    for value in partial:
        total = total + value
    return total


def _kept_rows(labels, ignored):
    return xp.arange(len(labels)) if ignored is None else xp.flatnonzero(~ignored)


def _float16_total_weight(labels, weights, ignored):
    """Σ w_n over the kept rows as PyTorch's float16 nll_loss holds it: their count, or _float16_sum of their
    weights."""
    kept = _kept_rows(labels, ignored)
    return xp.float16(len(kept)) if weights is None else _float16_sum(weights[kept], kept)


def _float16_reduced(losses, labels, weights, ignored, mean):
    """float16 losses -w_n ln p_n (0 where ignored) summed, or averaged, as PyTorch's float16 nll_loss does."""
    kept = _kept_rows(labels, ignored)
    total = _float16_sum(losses[kept], kept)
    return xp.asarray(total / _float16_total_weight(labels, weights, ignored) if mean else total, dtype=xp.float16)


def _nll_node_name(input, reduction):
    """PyTorch's node for the nll_loss of an input of this many dims: nll_loss's for (C,) and (N, C); nll_loss2d's
    for images (N, C, H, W), and for the other shapes (N, C, d1) or (N, C, d1, d2, d3, ...), which it views as
    images, but for reduction='none' there: the view of the losses back to the target's shape."""
    if input.ndim <= 2:
        return "NllLossBackward0"
    return "NllLoss2DBackward0" if input.ndim == 4 or reduction != "none" else "ViewBackward0"


@watches_arguments("input", "target", "weight")  # (NllLossBackward0 saves them: writing one refuses)
def nll_loss(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean"):
    """ℓ_n = -w_{y_n} x_{n, y_n} for log-probabilities x; 'mean' divides by Σ w_{y_n}."""
    reduction = checked_reduction(size_average, reduce, reduction)
    return named_node(_nll_loss(input, target, weight, ignore_index, reduction), None,
                      _nll_node_name(input, reduction), (input,))


def _nll_loss(input, target, weight, ignore_index, reduction):
    if weight is not None:
        refuse_gradient_to("weight", weight, "nll_loss_forward")
    _refuse_non_tensor_scores("nll_loss", input, "nll_loss_out_frame", "nll_loss2d_forward_out_frame")
    target = target if isinstance(target, Tensor) else tensor_from(target)
    if _squeezed_batch_of_one(input, target):
        return _refused_at_backward(_nll_loss(input, target.reshape(()), weight, ignore_index, reduction), input)
    _check_class_indices("nll_loss", input, target)
    losses, total_weight, labels, weights = _picked_log_probabilities("nll_loss", input, target, weight, ignore_index)
    return _nll_reduced(losses, total_weight, labels, weights, input, target, weight, ignore_index, reduction)


def _nll_reduced(losses, total_weight, labels, weights, input, target, weight, ignore_index, reduction):
    """nll_loss's reduction of the picked losses (_picked_log_probabilities' four results, of ``input``)."""
    if input._data.dtype == xp.float16 and reduction != "none":  # (no weight given: the kept rows' count)
        return _half_nll_reduced(losses, labels, None if weight is None else weights,
                                 _ignored(target, ignore_index), reduction)
    if reduction == "mean":
        return _mean_over_nothing(losses.sum()) if _nothing_kept(target, ignore_index) else losses.sum() / total_weight
    if reduction == "none":
        return losses.reshape(target.shape)
    return _reduce(losses, reduction)


def _cascade_total(terms, kept):
    """Σ of the kept rows' float16 terms by _float16_sum, a 0-d array (a meta array's: no values to sum)."""
    if type(terms) is MetaArray:
        return meta_array((), terms.dtype)
    return xp.asarray(_float16_sum(terms[kept], kept), dtype=xp.float16)


def _half_nll_reduced(losses, labels, weights, ignored, reduction):
    """float16 nll_loss summed, or averaged, in PyTorch's kernel's float16 arithmetic: the kept rows' losses summed
    by _float16_sum's cascade (a Sum node, so the gradient is Sum's), a mean divided by the float16 total weight
    (_float16_total_weight), as cross_entropy's fused node does. ``labels`` and ``weights`` (None: no weight given)
    as _class_weights gives them; ``ignored``: which rows' targets are ignore_index."""
    ignored = ignored if ignored.any() else None
    kept = _kept_rows(labels, ignored)
    total = Sum.apply(losses, axes=(0,), keepdim=False, float16_total=lambda terms: _cascade_total(terms, kept))
    if reduction != "mean":
        return total
    if not len(kept):
        return _mean_over_nothing(total)
    return total / float(_float16_total_weight(labels, weights, ignored))


def _nothing_kept(target, ignore_index):
    return not (target._data != ignore_index).any()


def _mean_over_nothing(total, name="NllLossBackward0"):
    """A mean over no (unignored) targets, from the sum of their weighted losses (0, with
    gradient 0): NaN, as PyTorch's, while the gradient stays 0 for the ignored predictions."""
    return named_node(total + float("nan"), None, name, (total,))


def cross_entropy(input, target, weight=None, size_average=None, ignore_index=-100, reduce=None, reduction="mean",
                  label_smoothing=0.0):
    """The lecture's L = -(1/m) Σ y ln ŷ with ŷ = softmax(x), from the logits x.

    target: class indices (integers, shape of input without the class dim) or
    class probabilities (floats, the input's shape). label_smoothing ε mixes the
    target with the uniform distribution: (1 - ε) y + ε / C. Computed from the
    logits by one fused node (class indices) or the fused log_softmax, so logits
    of ±1000 are fine.
    """
    reduction = checked_reduction(size_average, reduce, reduction)
    _refuse_non_tensor_scores("cross_entropy", input, "log_softmax_lastdim_kernel_impl", "log_softmax_kernel_impl")
    if not 0.0 <= label_smoothing <= 1.0:
        # (PyTorch refuses one above 1 with this RuntimeError and silently ignores a negative one: refused too)
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    target = target if isinstance(target, Tensor) else tensor_from(target)
    if _squeezed_batch_of_one(input, target):
        loss = cross_entropy(input, target.reshape(()), weight, None, ignore_index, None, reduction, label_smoothing)
        return _refused_at_backward(loss, input)
    dim = _class_dim(input)
    classes = input._data.shape[dim]
    class_shape = (1,) * dim + (classes,) + (1,) * (input.ndim - dim - 1)
    target_kind = target._data.dtype.kind  # (the arrays' dtype and shapes: this runs at every training step)
    if target_kind != "f" and target._data.shape == input._data.shape:  # (PyTorch reads the input's shape as
        # probabilities)
        indices = input.shape[:dim] + input.shape[dim + 1:]
        raise DtypeError(f"Expected floating point type for target with class probabilities, got "
                         f"{type_name(target.dtype)} (cross_entropy: a target of the input's shape "
                         f"{tuple(input.shape)} holds class probabilities; class indices would have shape "
                         f"{tuple(indices)})")
    if target_kind == "f":  # class probabilities
        if ignore_index >= 0:  # (a class index to skip means nothing for probabilities: PyTorch's check)
            raise RuntimeError(f"ignore_index is not supported for floating point target (got ignore_index="
                               f"{ignore_index}; the default -100 leaves every class in)")
        if target.shape != input.shape and input.ndim > 1 and target.ndim and target.shape[0] != input.shape[0]:
            raise ShapeError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size "
                             f"({target.shape[0]}). cross_entropy: input of shape {tuple(input.shape)}, target of "
                             f"shape {tuple(target.shape)}")
        if target.shape != input.shape:
            raise DtypeError(f"expected target dtype to be Long or Byte, but got {type_name(target.dtype)}. "
                             f"cross_entropy: a float target is read as class probabilities and must have the "
                             f"input's shape {tuple(input.shape)}, got {tuple(target.shape)}; class indices must be "
                             "integers (use target.long())")
        # (no classes: the target is empty, so the smoothed term may be any number, and 'mean' divides by PyTorch's
        # 0/0 predictions: NaN, not Python's ZeroDivisionError. Unsmoothed, the user's target is what the product
        # saves, as PyTorch's: writing it in place before the backward refuses it)
        if label_smoothing:
            target = target * (1 - label_smoothing) + label_smoothing / max(classes, 1)
        # -(log p · target · weight), summed over everything for a reduction, then negated (and divided by the
        # number of predictions for 'mean'), in PyTorch's order: its nodes NegBackward0 and DivBackward1
        products = input.log_softmax(dim) * target
        if weight is not None:
            products = products * weight.reshape(class_shape)
        if reduction == "mean":
            predictions = input._data.size // classes if classes else math.nan
            return named_node(-products.sum() / predictions, None, "DivBackward1")
        if reduction == "sum":
            return -products.sum()
        return _reduce(-products.sum(dim), reduction)
    if weight is not None:  # (class indices: nll_loss's weights, which have no derivative)
        refuse_gradient_to("weight", weight, "nll_loss_forward")
    _check_class_indices("cross_entropy", input, target)
    if label_smoothing:
        return _smoothed_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing, class_shape)
    rows = _class_planes(input)
    class_last = dim == input._data.ndim - 1  # (float16 rounds otherwise for an image's classes: CrossEntropy)
    labels, weights, total_weight = _class_weights("cross_entropy", rows, target, weight, ignore_index)
    at_labels = _at_labels(rows._data, labels)
    # (weights None: every label kept, so something is unless there are none)
    nothing_kept = (reduction == "mean" and (weights is not None or not len(labels))
                    and _nothing_kept(target, ignore_index))
    name = _nll_node_name(input, reduction)
    ignored = None if weights is None else _ignored(target, ignore_index)
    # the target (its array is the labels') and class weights PyTorch's NllLossBackward0 saves, watched by the node
    # (Primitive.watch_output's entries, spelled out: this runs at every training step, where a call would count)
    # (no node made either to name: class indices, and weights that require no grad, refused above)
    watched = ((target._version_cell, target._data.shape, target._data.dtype, no_tensor),)
    if weight is not None:
        watched += ((weight._version_cell, weight._data.shape, weight._data.dtype, no_tensor),)
    if reduction == "none":
        nll = CrossEntropy.apply(rows, labels=labels, weights=weights, scale=1.0, reduce=False, ignored=ignored,
                                 at_labels=at_labels, class_last=class_last, watched_outputs=watched)
        nll = named_node(nll.reshape(target.shape), None, name, (input,))
    else:  # mean or sum (checked at the call)
        scale = 1.0
        if reduction == "mean" and not nothing_kept:  # (kept targets of weight 0 only: NaN, as PyTorch's)
            scale = 1.0 / total_weight if total_weight else float("nan")
        nll = CrossEntropy.apply(rows, labels=labels, weights=weights, scale=scale, reduce=True, pytorch_name=name,
                                 mean=reduction == "mean" and not nothing_kept, ignored=ignored,
                                 at_labels=at_labels, class_last=class_last, watched_outputs=watched)
    return _mean_over_nothing(nll, name) if nothing_kept else nll


def _smoothed_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing, class_shape):
    """(1 - ε) nll_loss(log_softmax(x)) + ε/C · the uniform part, in PyTorch's steps: one log_softmax, from which
    both terms are taken (the fused node's log-sum-exp would be a second pass over the logits)."""
    dim = _class_dim(input)
    classes = input._data.shape[dim]
    log_probs = input.log_softmax(dim)
    losses, total_weight, labels, weights = _picked_log_probabilities("cross_entropy", log_probs, target, weight,
                                                                      ignore_index)
    nll = named_node(_nll_reduced(losses, total_weight, labels, weights, log_probs, target, weight, ignore_index,
                                  reduction), None, _nll_node_name(input, reduction), (log_probs,),
                     saves=(target,) if weight is None else (target, weight))  # (what NllLossBackward0 saves)
    nothing_kept = (reduction == "mean" and (weights is not None or not len(labels))
                    and _nothing_kept(target, ignore_index))
    # the uniform part: -Σ_c w_c ln p_c per prediction, reduced as PyTorch does
    weighted = log_probs if weight is None else log_probs * weight.reshape(class_shape)
    kept = Tensor._make(target._data != ignore_index)
    smooth = where(kept, -weighted.sum(dim), 0.0)  # (masked, as PyTorch's: an ignored row of -inf gives 0, not NaN)
    if reduction == "mean":
        # over the kept targets (their weights), as the main term: not over all N predictions
        smooth = smooth.sum() if nothing_kept else smooth.sum() / total_weight
    else:
        smooth = _reduce(smooth, reduction)
    loss = nll * (1 - label_smoothing) + smooth * (label_smoothing / classes)
    return _mean_over_nothing(loss) if nothing_kept else loss
