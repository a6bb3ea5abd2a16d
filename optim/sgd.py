"""Stochastic gradient descent, with momentum and Nesterov's look-ahead."""

from autograd import Tensor

from ._functional import sgd  # noqa: F401  (torch.optim.sgd.sgd, the functional step)
from .optimizer import Optimizer, l2_decayed, require


class SGD(Optimizer):
    """W ← W - η g, optionally with momentum, exactly as ``torch.optim.SGD``:

        g ← ∇L(W) + λ W                       (weight_decay λ; -∇L with maximize)
        b ← μ b + (1 - τ) g                   (momentum μ, dampening τ; b₁ = g)
        g ← g + μ b   if nesterov  else  b
        W ← W - η g

    How this relates to the lecture's slides. Momentum there is
        v_t = γ v_{t-1} + η ∇J(θ),   θ ← θ - v_t
    which is the rule above with b = v / η (and μ = γ, τ = 0). The lecture's
    Nesterov form evaluates the gradient at the look-ahead point:
        v_t = γ v_{t-1} + η ∇J(θ - γ v_{t-1}),   θ ← θ - v_t.
    Write φ = θ - γ v for the look-ahead point. Then g = ∇J(φ_{t-1}) and
        φ_t = θ_t - γ v_t = φ_{t-1} - η g - γ v_t = φ_{t-1} - η (g + μ b_t),
    which is the nesterov=True rule: PyTorch (and this class) stores the look-ahead
    point φ as the parameter, so no second gradient evaluation is needed
    (Sutskever et al., 2013).

    ``foreach`` and ``fused`` are accepted and ignored (one implementation).
    """
    # (those PyTorch's __setstate__ gives a loaded group that lacks them)
    group_setdefaults = {"nesterov": False, "maximize": False, "foreach": None, "differentiable": False, "fused": False}


    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize, foreach=foreach,
                                      differentiable=differentiable, fused=fused))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        require(group["momentum"] >= 0, f"Invalid momentum value: {group['momentum']}")
        require(group["weight_decay"] >= 0, f"Invalid weight_decay value: {group['weight_decay']}")
        require(not group["nesterov"] or (group["momentum"] > 0 and group["dampening"] == 0),
                "Nesterov momentum requires a momentum and zero dampening")

    def sparse_gradient(self, grad, group):
        """A sparse gradient (an Embedding's sparse=True) moves only its rows, each entry added in turn, as
        PyTorch's. With momentum the velocity is the dense one it stands for (PyTorch keeps it sparse: the same
        numbers to a unit in the last place). Weight decay has no sparse form: refused, as PyTorch's."""
        if group["weight_decay"]:
            raise RuntimeError("add(sparse, dense) is not supported. Use add(dense, sparse) instead.")
        return grad.to_dense() if group["momentum"] else grad

    def update_sparse_parameter(self, param, grad, group):
        """A sparse leaf p ← p - lr · g: its entries and the gradient's together (uncoalesced, as PyTorch's sparse
        add); no momentum or weight decay, which PyTorch refuses for sparse tensors too."""
        if group["momentum"] or group["weight_decay"] or group.get("maximize"):
            raise RuntimeError("SGD steps a sparse parameter with plain steps only (no momentum, weight_decay or "
                               "maximize), as PyTorch's sparse tensors allow")
        param.add_(grad, alpha=-group["lr"])

    def update(self, param, grad, state, group):
        if grad.is_sparse:
            param.index_put_(tuple(grad._indices()), grad._values() * -group["lr"], accumulate=True)
            return
        momentum = group["momentum"]
        if group["weight_decay"]:
            grad = l2_decayed(grad, param, group["weight_decay"])
        if momentum:
            velocity = state.get("momentum_buffer")
            if velocity is None:
                velocity = state["momentum_buffer"] = grad.detach().clone()
            else:
                velocity.mul_(momentum).add_(grad, alpha=1 - group["dampening"])
            grad = grad + momentum * velocity if group["nesterov"] else velocity
        lr = group["lr"]
        if isinstance(lr, Tensor) and lr.requires_grad:  # a learnt lr (differentiable=True): a recorded product, as
            param.addcmul_(grad, lr, value=-1)  # PyTorch's (a Number alpha takes no tensor that requires grad)
        else:
            param.add_(grad, alpha=-lr)
