"""Gradient clipping (``torch.nn.utils.clip_grad``): by the joint norm of all gradients, or by value.

The lecture's remedy for exploding gradients. ``clip_grad_norm_`` is PyTorch's two steps, each
also public: ``get_total_norm`` (the norm of the per-tensor norms, i.e. of all the gradients as
one vector) and ``clip_grads_with_norm_`` (scale by min(1, max_norm / (norm + 1e-6))). The sums
run in the gradients' dtype, as PyTorch's. ``foreach`` (PyTorch's choice of kernel) changes nothing.
"""

import types
import warnings

import autograd
from autograd import Tensor
from autograd.graph import program_stacklevel
from autograd.sparse_layout import is_sparse


def _tensor_list(tensors):
    return [tensors] if isinstance(tensors, Tensor) else list(tensors)


def _grads(parameters):
    return [p.grad for p in parameters if p.grad is not None]


@autograd.no_grad()
def get_total_norm(tensors, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """‖(‖t_1‖_p, ..., ‖t_k‖_p)‖_p = the p-norm of all ``tensors`` as if concatenated into one vector
    (p = ``norm_type``, inf included), as a 0-d Tensor; 0.0 for no tensors."""
    from autograd.linalg import vector_norm  # here: `import nn` does not load autograd.linalg

    tensors = _tensor_list(tensors)
    norm_type = float(norm_type)
    if not tensors:
        return autograd.tensor(0.0)
    for t in tensors:
        if is_sparse(t):  # (an Embedding(sparse=True)'s .grad: PyTorch has no norm kernel)
            raise NotImplementedError("Could not run 'aten::linalg_vector_norm' with arguments from the 'SparseCPU' "
                                      f"backend: a sparse gradient (size {tuple(t.shape)}) has no norm here; clip "
                                      "the dense parameters only, or use an optimizer that takes sparse gradients")
    # (PyTorch's foreach kernel unless foreach=False: its refusal of an empty tensor under norm_type=inf is its own)
    norms = (autograd._foreach_norm(tensors, norm_type) if foreach is not False
             else [vector_norm(t, norm_type) for t in tensors])
    total = vector_norm(autograd.stack(list(norms)), norm_type)
    if error_if_nonfinite and not bool(total.isfinite()):
        raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so "
                           "it cannot be clipped. To disable this error and scale the gradients by the non-finite "
                           "norm anyway, set `error_if_nonfinite=False`")
    return total


@autograd.no_grad()
def clip_grads_with_norm_(parameters, max_norm, total_norm, foreach=None):
    """Multiply every gradient in place by min(1, max_norm / (total_norm + 1e-6)): with the norm
    from get_total_norm, clip_grad_norm_ in two steps (the norm may be gathered in between)."""
    grads = _grads(_tensor_list(parameters))
    if not grads:
        return
    coefficient = (float(max_norm) / (total_norm + 1e-6))
    coefficient = coefficient.clamp(max=1.0) if isinstance(coefficient, Tensor) else min(coefficient, 1.0)
    for grad in grads:
        grad.mul_(coefficient)


@autograd.no_grad()
def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Scale all gradients together so that their joint norm is at most ``max_norm``:
    g ← g · min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ the norm of all gradients as one vector.
    Returns ‖g‖ (before clipping) as a 0-d Tensor."""
    is_generator = isinstance(parameters, types.GeneratorType)
    parameters = _tensor_list(parameters)
    if is_generator and not parameters:
        warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.",
                      stacklevel=program_stacklevel())
    total_norm = get_total_norm(_grads(parameters), norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total_norm, foreach)
    return total_norm


def clip_grad_norm(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False, foreach=None):
    """Deprecated (as in PyTorch) for clip_grad_norm_."""
    warnings.warn("`torch.nn.utils.clip_grad_norm` is now deprecated in favor of `torch.nn.utils.clip_grad_norm_`.",
                  FutureWarning, stacklevel=program_stacklevel())
    return clip_grad_norm_(parameters, max_norm, norm_type, error_if_nonfinite, foreach)


@autograd.no_grad()
def clip_grad_value_(parameters, clip_value, foreach=None):
    """Clamp every gradient element to [-clip_value, clip_value], in place."""
    clip_value = float(clip_value)
    for grad in _grads(_tensor_list(parameters)):
        grad.clamp_(min=-clip_value, max=clip_value)
