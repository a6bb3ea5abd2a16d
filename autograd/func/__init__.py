"""Function transforms, PyTorch's ``torch.func``: ``grad``, ``grad_and_value``, ``vjp``, ``jacrev``,
``jacfwd``, ``hessian``, ``vmap``, ``functional_call``, ``stack_module_state``, ``functionalize``.

A transform takes a function of tensors and returns another function:

    grad(f)(x)          ∇f(x) for a scalar f            (one backward pass)
    vjp(f, x)           (f(x), v ↦ vᵀ J)                (backward passes on demand)
    jvp(f, (x,), (v,))  (f(x), J v)                     (the double-backward trick, below)
    jacrev(f)(x)        J, shaped f(x).shape + x.shape  (one backward pass per output element)
    hessian(f)(x)       jacrev(jacrev(f))(x)            (double backward)
    vmap(f)(xs)         stack(f(x) for x in xs)          (here: a loop, see vmap)

They are built on the reverse-mode engine: each call differentiates with respect to fresh
graph roots standing for its arguments, so the arguments need not require grad and
``.grad`` is never touched. Transforms compose (``jacrev(jacrev(f))``, ``vmap(grad(f))``):
when an argument already requires grad (an outer transform's root, or the user's own
tensor) or the function reads another tensor that requires grad (a closure), the
derivative is recorded (create_graph) so that the outer level can differentiate it in turn.
The caller's grad mode is respected as in PyTorch: under no_grad or inference_mode a transform
still records its own graph, but its results are not recorded for the caller.

Arguments may be pytrees: a Tensor, or tuples, lists and dicts of them (``grad`` of a loss
with respect to a dict of parameters, as ``functional_call`` takes them). There is no
forward mode here: ``jacfwd`` gives the same Jacobian as ``jacrev``, computed in reverse, and
``jvp`` uses the double-backward trick: g(u) = uᵀ J is linear in u, so J v = ∂(g(u) · v)/∂u.
"""

from ..utils._pytree import tree_flatten, tree_unflatten
from .functionalize import functionalize
from .modules import functional_call, replace_all_batch_norm_modules_, stack_module_state
from .transforms import grad, grad_and_value, hessian, jacfwd, jacrev, jvp, linearize, vjp
from .vmap import vmap

__all__ = ["grad", "grad_and_value", "vjp", "jvp", "linearize", "jacrev", "jacfwd", "hessian", "vmap",
           "functional_call", "stack_module_state", "replace_all_batch_norm_modules_", "functionalize"]
