"""PyTorch's fused Adam and AdamW steps, ``autograd._fused_adam_`` and ``autograd._fused_adamw_``:
the whole update of each parameter in one call on its arrays, in place.

The arithmetic is ``optim.Adam``'s, step by step and in the same order (so a trajectory is the
same to the last bit whichever runs it):

    g ← g / grad_scale, -g if maximize, g + λ W (L2; AdamW instead W ← W (1 - η λ))
    m ← m + (1 - β₁)(g - m)
    v ← β₂ v + (1 - β₂) g²                      v̂ ← max(v̂, v) if amsgrad
    W ← W + ((-η / (1 - β₁ᵗ)) · m) / (√v / √(1 - β₂ᵗ) + ε)

What fusing saves is the cost around the arithmetic: one call instead of eight Tensor
operations, and two scratch arrays reused by every step of the update (and kept for the next
step) instead of five temporaries of the parameter's size. ``optim.Adam(fused=True)`` steps with it (PyTorch's option
for its own fused kernel; the default steps through the parameters' in-place methods, which a
Tensor subclass may override). Each tensor written counts as written (its version moves on), as
after any in-place operation. Nothing here is recorded: an optimizer step is not differentiated.
A float16 parameter's step runs in float32, PyTorch's kernel's opmath type: its values and its moments
are read into float32, the arithmetic done there, and the results stored back, each rounded once.
"""

import threading

from ..backend import QUIET, errstate, float16, float32, float_error_mode, xp
from ..graph import bump_version, modes
from ..tensor import tensor_from
from .names import names


def _step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, weight_decay, eps, amsgrad,
          maximize, decoupled, scale):
    written = (param, exp_avg, exp_avg_sq) + ((max_exp_avg_sq,) if amsgrad else ())
    for tensor in written:
        tensor._before_write()  # the write door's checks first (an inference tensor; saved values kept)
    if param._data.dtype == float16:
        _step_in_float32(written, grad, step, lr, beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled,
                         scale)
        return
    p, m, v, g = param._data, exp_avg._data, exp_avg_sq._data, grad._data
    if scale is not None:
        g = g / scale
    if maximize:
        g = -g
    if weight_decay:
        if decoupled:
            p *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * p
    scratch, numerator = _scratch(m)  # the temporaries: each line below reuses them
    xp.subtract(g, m, out=scratch)
    scratch *= 1 - beta1
    m += scratch  # m + (1 - β₁)(g - m), as lerp_ computes it
    v *= beta2
    xp.multiply(g, g, out=scratch)
    scratch *= 1 - beta2
    v += scratch
    if amsgrad:
        xp.maximum(max_exp_avg_sq._data, v, out=max_exp_avg_sq._data)
        v = max_exp_avg_sq._data
    xp.sqrt(v, out=scratch)
    scratch /= (1 - beta2**step) ** 0.5
    scratch += eps
    xp.multiply(m, -lr / (1 - beta1**step), out=numerator)
    xp.divide(numerator, scratch, out=scratch)  # (-step · m) / denominator, in addcdiv_'s order
    p += scratch
    for tensor in written:
        bump_version(tensor)


def _step_in_float32(written, grad, step, lr, beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled, scale):
    """The step of a float16 parameter as PyTorch's CPU kernel takes it: every value read into float32 (the
    kernel's opmath type), ``_step``'s arithmetic there, and the parameter and its moments stored back, rounded
    to float16 once each (NumPy's float16 operations would round after each one)."""
    wide = [tensor_from(tensor._data.astype(float32)) for tensor in written]
    _step(wide[0], tensor_from(grad._data.astype(float32)), wide[1], wide[2], wide[3] if amsgrad else None, step, lr,
          beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled, scale)
    for tensor, values in zip(written, wide):
        tensor._data[...] = values._data
        bump_version(tensor)


_BUFFERS = threading.local()  # this thread's scratch arrays of the parameters' sizes, most recent last
_KEPT = 8  # sizes kept (a model's large weights)
_LARGE = 1 << 18  # elements: a smaller array comes from the allocator's free lists, a larger one from page faults


def _scratch(like):
    """Two scratch arrays of ``like``'s shape and dtype; a large parameter's are kept for the next step (an array
    of millions of elements made fresh each step costs more in page faults than the arithmetic)."""
    if like.size < _LARGE:
        return xp.empty_like(like), xp.empty_like(like)
    kept = _BUFFERS.__dict__.setdefault("kept", {})
    key = (like.shape, like.dtype)
    pair = kept.pop(key, None)
    if pair is None:
        pair = (xp.empty_like(like), xp.empty_like(like))
        if len(kept) >= _KEPT:
            kept.pop(next(iter(kept)))
    kept[key] = pair  # (most recently used last)
    return pair


def _refuse_recorded(written):
    """A fused step writes its tensors in place unrecorded: with grad mode on, one that requires grad is refused."""
    if any(t.requires_grad for t in written):
        raise RuntimeError("an optimizer's fused step is not differentiable, and a parameter that requires grad "
                           "may not be written in place while grad mode is on: call it under autograd.no_grad()")


def adam_step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, state_step, lr, beta1, beta2, weight_decay, eps,
              amsgrad, decoupled):
    """One parameter's step as ``torch.optim.Adam(fused=True)`` takes it: its step count ``state_step`` advanced
    by one in place (``_foreach_add_``), then ``_fused_adam_``'s update (``decoupled``: ``_fused_adamw_``'s).
    What ``optim.Adam`` calls for each parameter, without the lists, the scaler's arguments and maximize (its
    gradient comes negated). Returns the count."""
    if modes.grad_enabled:
        _refuse_recorded((param, exp_avg, exp_avg_sq))
    state_step._before_write()
    count = state_step._data
    # add_(1)'s arithmetic in the count's own dtype: the sum, exact as a Python float, rounded once as it is stored
    # (a NumPy addition on a 0-d array costs ten times as much)
    count[()] = count.item() + 1.0
    bump_version(state_step)
    step = count.item()
    numpy_errors = float_error_mode.set(QUIET)  # (as _fused's errstate, in the context variable itself)
    try:
        _step(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, weight_decay, eps, amsgrad,
              False, decoupled, None)
    finally:
        float_error_mode.reset(numpy_errors)
    return step


def _fused(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1, beta2, weight_decay, eps,
           amsgrad, maximize, grad_scale, found_inf, decoupled):
    if modes.grad_enabled:
        _refuse_recorded((*params, *exp_avgs, *exp_avg_sqs))
    if found_inf is not None and float(found_inf.item()) != 0:
        return  # the scaler found an inf or NaN gradient: this step is skipped (GradScaler's contract)
    scale = None if grad_scale is None else grad_scale._data
    lr = float(lr)  # (a Tensor lr on the CPU: its value in double, PyTorch's lr.item<double>())
    with errstate(all="ignore"):  # an inf gradient gives inf and NaN silently, as the step by methods does
        for i, param in enumerate(params):
            _step(param, grads[i], exp_avgs[i], exp_avg_sqs[i], max_exp_avg_sqs[i] if amsgrad else None,
                  float(state_steps[i].item()), lr, beta1, beta2, weight_decay, eps, amsgrad, maximize, decoupled,
                  scale)


@names(functions=("_fused_adam_",))
def fused_adam_(self, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, lr, beta1, beta2, weight_decay,
                eps, amsgrad, maximize, grad_scale=None, found_inf=None):
    """Adam's step for every tensor of ``self`` (the parameters), in place; ``state_steps`` hold each
    parameter's step count, already advanced (as torch.optim passes them)."""
    _fused(self, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1, beta2, weight_decay, eps,
           amsgrad, maximize, grad_scale, found_inf, decoupled=False)


@names(functions=("_fused_adamw_",))
def fused_adamw_(self, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, *, lr, beta1, beta2,
                 weight_decay, eps, amsgrad, maximize, grad_scale=None, found_inf=None):
    """AdamW's step (weight decay decoupled: W ← W (1 - η λ) first), as ``_fused_adam_``."""
    _fused(self, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, lr, beta1, beta2, weight_decay, eps,
           amsgrad, maximize, grad_scale, found_inf, decoupled=True)
