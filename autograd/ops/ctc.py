"""Connectionist Temporal Classification loss (Graves et al., 2006): ``F.ctc_loss`` and PyTorch's top-level
``autograd.ctc_loss`` (``reduction`` an int there: 0 none, 1 mean, 2 sum); ``nn.CTCLoss`` is its layer.

A target l = (l_1 .. l_L) is read from T frames of class log-probabilities
x_t(c) through any alignment that, once repeats are merged and blanks dropped,
spells l. Extend the target with blanks, l' = (b, l_1, b, l_2, ..., l_L, b)
(length S = 2L + 1). The forward variables, in log space,

    α_0(0) = x_0(b),   α_0(1) = x_0(l_1),
    α_t(s) = x_t(l'_s) + logsumexp(α_{t-1}(s), α_{t-1}(s-1), α_{t-1}(s-2) [if s is odd and l'_s ≠ l'_{s-2}])

sum every alignment prefix ending at s; the loss is the negative log-likelihood

    ℓ = -logsumexp(α_{T-1}(S-1), α_{T-1}(S-2)).

The backward variables β_t(s) (suffixes from s at t, x_t(l'_s) included) run the
same recursion from the end, and every path through (t, s) has weight
α_t(s) + β_t(s) - x_t(l'_s). Hence the exact gradient:

    ∂ℓ/∂x_t(c) = -Σ_{s: l'_s = c} exp(α_t(s) + β_t(s) - x_t(c) + ℓ)     (t < T; 0 beyond).

Both recursions loop over time and are vectorised over the batch and the
positions s. PyTorch's own backward returns this plus softmax(x) (it assumes x
came from log_softmax); through log_softmax the two agree exactly.
"""

import numpy

from ..backend import ufunc_at, xp
from ..index_watching import watches_arguments
from ..primitive import Primitive
from ..tensor import Tensor
from .conversion import type_name
from .losses import _named, read_reduction
from .names import names

_NEG_INF = -numpy.inf


def _logsumexp(*terms):
    """log Σ e^terms elementwise, with -inf allowed everywhere."""
    top = terms[0]
    for term in terms[1:]:
        top = xp.maximum(top, term)
    shift = xp.where(xp.isfinite(top), top, 0)
    total = sum(xp.exp(term - shift) for term in terms)
    with numpy.errstate(divide="ignore"):
        return xp.log(total) + shift


def _shifted(a, by):
    """a moved ``by`` places right along the last axis, -inf filling in."""
    out = xp.full(a.shape, _NEG_INF, dtype=a.dtype)
    out[..., by:] = a[..., :-by]
    return out


class _Alignment:
    """The blank-extended targets of a batch and what the recursions need of them."""

    def __init__(self, targets, target_lengths, blank):
        batch, longest = len(target_lengths), int(max(target_lengths, default=0))
        self.size = 2 * longest + 1
        self.labels = xp.full((batch, self.size), blank, dtype=xp.int64)  # l'
        for n, (row, length) in enumerate(zip(targets, target_lengths)):
            self.labels[n, 1:2 * length:2] = row[:length]
        self.lengths = 2 * xp.asarray(target_lengths, dtype=xp.int64) + 1  # S per sample
        positions = xp.arange(self.size)
        self.inside = positions[None, :] < self.lengths[:, None]
        # (a label's position, odd s, not its value: a target naming the blank is a label there, as PyTorch reads it)
        label_position = positions[None, :] % 2 == 1
        before = xp.full(self.labels.shape, -1)
        before[:, 2:] = self.labels[:, :-2]
        self.skip = label_position & (self.labels != before)  # s-2 -> s allowed
        after = xp.full(self.labels.shape, -1)
        after[:, :-2] = self.labels[:, 2:]
        self.skip_back = label_position & (self.labels != after)  # s+2 -> s allowed (going back)
        self.skip_back &= (positions[None, :] + 2) < self.lengths[:, None]


def _emissions(log_probs, alignment):
    """x_t(l'_s) for every t, n, s: (T, N, S)."""
    batch = xp.arange(log_probs.shape[1])[:, None]
    return log_probs[:, batch, alignment.labels]


def ctc_forward(log_probs, alignment, input_lengths):
    """α for every frame (T, N, S) and the loss per sample (N,)."""
    frames, batch = log_probs.shape[:2]
    emit = _emissions(log_probs, alignment)
    alpha = xp.full((frames, batch, alignment.size), _NEG_INF, dtype=log_probs.dtype)
    start = xp.full((batch, alignment.size), _NEG_INF, dtype=log_probs.dtype)
    start[:, 0] = emit[0, :, 0]
    if alignment.size > 1:
        start[:, 1] = xp.where(alignment.lengths > 1, emit[0, :, 1], _NEG_INF)
    alpha[0] = start
    for t in range(1, frames):
        previous = alpha[t - 1]
        skip = xp.where(alignment.skip, _shifted(previous, 2), _NEG_INF)
        paths = _logsumexp(previous, _shifted(previous, 1), skip)
        alpha[t] = xp.where(alignment.inside, emit[t] + paths, _NEG_INF)
    rows = xp.arange(batch)
    lengths = xp.asarray(input_lengths)
    last = alpha[xp.maximum(lengths - 1, 0), rows]  # (N, S): α at each sample's last frame
    end = last[rows, alignment.lengths - 1]
    before_end = xp.where(alignment.lengths > 1, last[rows, xp.maximum(alignment.lengths - 2, 0)], _NEG_INF)
    # no frames: only the empty target is spelt (probability 1, a loss of -0.0 as PyTorch's); any other, never
    no_frames = xp.where(alignment.lengths == 1, 0.0, _NEG_INF)
    return alpha, -xp.where(lengths == 0, no_frames, _logsumexp(end, before_end)).astype(log_probs.dtype)


def ctc_gradient(log_probs, alignment, input_lengths, alpha, nll):
    """∂ℓ_n/∂x_t(c) for every t, n, c: (T, N, C), from α and a β pass."""
    frames, batch, classes = log_probs.shape
    emit = _emissions(log_probs, alignment)
    lengths = xp.asarray(input_lengths)
    rows = xp.arange(batch)
    beta = xp.full(alpha.shape, _NEG_INF, dtype=log_probs.dtype)
    later = xp.full((batch, alignment.size), _NEG_INF, dtype=log_probs.dtype)
    for t in range(frames - 1, -1, -1):
        start = xp.full((batch, alignment.size), _NEG_INF, dtype=log_probs.dtype)
        start[rows, alignment.lengths - 1] = emit[t, rows, alignment.lengths - 1]
        two = alignment.lengths > 1
        start[rows[two], alignment.lengths[two] - 2] = emit[t, rows[two], alignment.lengths[two] - 2]
        step = xp.full(later.shape, _NEG_INF, dtype=later.dtype)
        step[:, :-1] = later[:, 1:]
        skip = xp.full(later.shape, _NEG_INF, dtype=later.dtype)
        skip[:, :-2] = later[:, 2:]
        recursed = emit[t] + _logsumexp(later, step, xp.where(alignment.skip_back, skip, _NEG_INF))
        current = xp.where((t == lengths - 1)[:, None], start, xp.where((t < lengths - 1)[:, None], recursed,
                                                                         _NEG_INF))
        beta[t] = current = xp.where(alignment.inside, current, _NEG_INF)
        later = current
    with numpy.errstate(invalid="ignore"):
        posterior = xp.exp(alpha + beta - emit + nll[None, :, None])  # (T, N, S)
    posterior = xp.where(xp.isfinite(alpha + beta), posterior, 0)
    grad = xp.zeros(log_probs.shape, dtype=log_probs.dtype)
    time = xp.broadcast_to(xp.arange(frames)[:, None, None], posterior.shape)
    sample = xp.broadcast_to(rows[None, :, None], posterior.shape)
    label = xp.broadcast_to(alignment.labels[None], posterior.shape)
    ufunc_at("add", grad, (time, sample, label), -posterior)
    return grad


class CTCNegativeLogLikelihood(Primitive):
    """ℓ_n = -ln p(l_n | x_n) for each sample (the α recursion);
    dℓ_n/dx_t(c) = -Σ_{s: l'_s = c} exp(α_t(s) + β_t(s) - x_t(c) + ℓ_n)"""

    pytorch_name = "CtcLossBackward0"

    def forward(self, log_probs):
        self.alpha, self.nll = ctc_forward(log_probs, self.alignment, self.input_lengths)
        if self.zero_infinity:
            return xp.where(xp.isinf(self.nll), 0, self.nll).astype(log_probs.dtype)
        return self.nll

    def backward(self, grad, nll, log_probs):
        gradient = CTCGradient.apply(log_probs, alignment=self.alignment, input_lengths=self.input_lengths,
                                     alpha=self.alpha, nll=self.nll, zero_infinity=self.zero_infinity)
        return (gradient * grad.reshape(1, -1, 1),)


class CTCGradient(Primitive):
    """G = ∂ℓ/∂x for every frame, sample and class (see CTCNegativeLogLikelihood).
    Its own derivative is not implemented, as in PyTorch."""

    def forward(self, log_probs):
        grad = ctc_gradient(log_probs, self.alignment, self.input_lengths, self.alpha, self.nll)
        impossible = xp.isinf(self.nll)
        if self.zero_infinity:
            grad[:, impossible] = 0
        else:
            # no alignment: e^(α+β-x+ℓ) is e^(-∞+∞), NaN on each of the sample's frames, as PyTorch gives (even
            # where that sample's loss is not used), so training on it shows NaN instead of skipping the sample
            framed = xp.arange(grad.shape[0])[:, None] < xp.asarray(self.input_lengths)[None, :]
            grad[framed & impossible[None, :]] = xp.nan
        return grad

    def backward(self, grad, y, log_probs):
        raise RuntimeError("the derivative of ctc_loss's gradient is not implemented (as in PyTorch)")


def _lengths(name, values, batch):
    array = values._data if isinstance(values, Tensor) else xp.asarray(values)
    array = array.reshape(-1)
    if array.dtype.kind not in "iu":
        raise RuntimeError(f"ctc_loss: {name} must be integers, got {array.dtype}")
    if len(array) != batch:
        raise RuntimeError(f"ctc_loss: {name} must have size {batch} (the batch), got {len(array)}")
    if (array < 0).any():
        raise RuntimeError(f"Expected {name} to have value at least 0, but got value {int(array.min())}")
    return array.astype(xp.int64)


@watches_arguments("targets")  # (PyTorch's CtcLossBackward saves them; the lengths it reads as numbers)
def ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=0, reduction="mean", zero_infinity=False):
    """The CTC loss of ``log_probs`` (T, N, C) or (T, C) given ``targets``: (N, S) padded,
    or all targets concatenated in 1-d, with their ``target_lengths``; ``input_lengths``
    gives each sample's number of frames (0 spells only the empty target). reduction='mean' divides each loss by its
    target length (at least 1) and averages over the batch. An infinite loss (no alignment
    possible) has a NaN gradient on the sample's frames; zero_infinity replaces both by 0."""
    reduction = read_reduction(reduction)  # (first, as PyTorch's: its reduction is read at the call)
    unbatched = log_probs.ndim == 2
    if unbatched:
        log_probs = log_probs.unsqueeze(1)
    if log_probs.ndim != 3:
        raise RuntimeError(f"ctc_loss: log_probs must be (T, N, C) or (T, C), got shape {tuple(log_probs.shape)}")
    if log_probs.numel() == 0:  # (no frames, no batch or no classes: PyTorch's check, its words)
        raise RuntimeError("log_probs tensor must not be empty")
    if log_probs.dtype not in (xp.float32, xp.float64):  # PyTorch's kernels have these two loops only
        raise NotImplementedError(f"\"ctc_loss_cpu\" not implemented for '{type_name(log_probs.dtype)}'")
    frames, batch, classes = log_probs.shape
    if not 0 <= blank < classes:
        raise RuntimeError("blank must be in label range")
    input_lengths = _lengths("input_lengths", input_lengths, batch)
    target_lengths = _lengths("target_lengths", target_lengths, batch)
    if (input_lengths > frames).any():
        raise RuntimeError(f"ctc_loss: input_lengths must lie in [0, {frames}], got {input_lengths.tolist()}")
    labels = targets._data if isinstance(targets, Tensor) else xp.asarray(targets)
    if labels.ndim not in (1, 2):
        raise RuntimeError(f"Expected 1 to 2 dimensions, but got {labels.ndim}-dimensional tensor for argument #2 "
                           "'targets'")
    if labels.ndim == 1:  # concatenated (an unbatched sample's target too): exactly the targets' labels
        if labels.shape[0] != target_lengths.sum():
            raise RuntimeError(f"ctc_loss: expected targets to have size {int(target_lengths.sum())} at dimension 0 "
                               f"(the sum of target_lengths), but got size {labels.shape[0]}")
        offsets = xp.concatenate([xp.zeros(1, dtype=xp.int64), xp.cumsum(target_lengths)[:-1]])
        rows = [labels[o:o + n] for o, n in zip(offsets, target_lengths)]
    else:
        if labels.shape[0] != batch or (target_lengths > labels.shape[1]).any():
            raise RuntimeError(f"ctc_loss: targets of shape {tuple(labels.shape)} do not hold target_lengths "
                               f"{target_lengths.tolist()} for a batch of {batch}")
        rows = list(labels)
    for row, n in zip(rows, target_lengths):
        if ((row[:n] < 0) | (row[:n] >= classes)).any():
            raise RuntimeError(f"ctc_loss: targets must be classes in [0, {classes})")
    alignment = _Alignment(rows, target_lengths, blank)
    loss = CTCNegativeLogLikelihood.apply(log_probs, alignment=alignment, input_lengths=input_lengths,
                                          zero_infinity=zero_infinity)
    if reduction == "mean":
        divisor = Tensor._make(xp.maximum(target_lengths, 1).astype(log_probs.dtype))
        return (loss / divisor).mean()
    if reduction == "sum":
        return loss.sum()
    return loss.reshape(()) if unbatched else loss  # reduction 'none'


@names("ctc_loss", method=False)
def ctc_loss_by_position(log_probs, targets, input_lengths, target_lengths, blank=0, reduction=0,
                         zero_infinity=False):
    """PyTorch's top-level ``ctc_loss``: ``reduction`` an int (0 none, 1 mean, 2 sum). Left out it is 0, the
    loss of each sample, as ``torch.ctc_loss`` gives (its schema says 1, its Python binding reads 0, as for
    ``torch.kl_div``)."""
    return ctc_loss(log_probs, targets, input_lengths, target_lengths, blank, _named(reduction), zero_infinity)
