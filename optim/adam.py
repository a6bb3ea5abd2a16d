"""Adam and AdamW: momentum on the gradient and on its square, with bias correction."""

import autograd
from autograd import Tensor
from autograd.backend import float32, float64

from ._functional import adam  # noqa: F401  (torch.optim.adam.adam, the functional step)
from .optimizer import Optimizer, kept_for_backward, l2_decayed, number_over, require, scalar_tensor


class AdamFamily(Optimizer):
    """What the optimizers built on Adam's moments (Adam, AdamW, Adamax, NAdam, RAdam) share:
    PyTorch's checks (and messages, in order) after the learning rate's."""

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        require(group["eps"] >= 0, f"Invalid epsilon value: {group['eps']}")
        if len(group["betas"]) < 2:  # (PyTorch's IndexError, from its check of betas[1])
            raise IndexError(f"tuple index out of range: betas={group['betas']!r} needs two coefficients, "
                             "(beta1, beta2)")
        for i, beta in enumerate(group["betas"]):
            require(0 <= beta < 1, f"Invalid beta parameter at index {i}: {beta} (must be in [0, 1))")
        require(group["weight_decay"] >= 0, f"Invalid weight_decay value: {group['weight_decay']}")


def check_tensor_options(group):
    """Adam's and AdamW's rules for options given as Tensors (PyTorch's): betas both numbers or both
    Tensors of one element; with ``foreach`` (a path not written here, whose rule this keeps), a Tensor lr
    or betas needs ``capturable``."""
    tensor_lr = isinstance(group["lr"], Tensor)
    if tensor_lr and group["foreach"] and not group["capturable"]:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    tensors = [isinstance(beta, Tensor) for beta in group["betas"]]
    if tensors[0] != tensors[1]:
        raise ValueError("betas must be either both floats or both Tensors")
    for i, beta in enumerate(group["betas"]):
        if tensors[i] and group["foreach"] and not group["capturable"]:
            raise ValueError(f"betas[{i}] as a Tensor is not supported for capturable=False and foreach=True")
        if tensors[i] and beta.numel() != 1:
            raise ValueError(f"Tensor betas[{i}] must be 1-element")


def update_moments(exp_avg, exp_avg_sq, grad, betas):
    """Adam's two moments, in place:  m ← m + (1 - β₁)(g - m),  v ← β₂ v + (1 - β₂) g².
    (With β₂ a Tensor that requires grad, v ← v + (1 - β₂)(g² - v), the same number in ops whose backward
    needs no v from before the write, as PyTorch's differentiable path.)"""
    beta1, beta2 = betas
    exp_avg.lerp_(grad, 1 - beta1)
    if isinstance(beta2, Tensor) and beta2.requires_grad:
        exp_avg_sq.lerp_(grad.square(), 1 - beta2)
    else:
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)


class Adam(AdamFamily):
    """Adam (Kingma & Ba, 2015), in ``torch.optim.Adam``'s order of operations:

        g ← ∇L(W) + λ W                          (weight_decay λ, L2-coupled)
          or W ← W (1 - η λ)                     (decoupled_weight_decay: AdamW)
        m ← m + (1 - β₁)(g - m)                  (first moment: a momentum; lerp)
        v ← β₂ v + (1 - β₂) g²                   (second moment: per-weight scale)
        v̂ ← max(v̂, v) if amsgrad else v
        W ← W - η/(1 - β₁ᵗ) · m / (√v̂ / √(1 - β₂ᵗ) + ε)

    A per-weight learning rate: the lecture's "variable learning rates for
    features/dimensions", with momentum, and bias correction for the zero start.
    ``fused=True`` runs the same arithmetic as one call per parameter on its arrays
    (``autograd._fused_adam_``, as PyTorch's fused kernel: faster, and it bypasses the
    parameters' own in-place methods). The default does too wherever that cannot be told apart
    from stepping through the methods (``one_call_is_the_same``; what is the same for a group's
    parameters is decided once per group and step, ``_step_group``); ``foreach`` is accepted and
    ignored; ``capturable=True`` is refused at the step unless fused (PyTorch's AssertionError on the CPU).
    ``differentiable=True`` records the step in the graph, in PyTorch's order for that path (the bias
    corrections as scalar-dtype Tensors, from the ``step`` Tensor). lr and betas may be Tensors.
    """
    # (those PyTorch's __setstate__ gives a loaded group that lacks them)
    group_setdefaults = {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False,
                         "differentiable": False, "decoupled_weight_decay": False, "fused": None}

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize, foreach=foreach, capturable=capturable,
                                      differentiable=differentiable, fused=fused,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def sparse_gradient(self, grad, group):
        raise RuntimeError("Adam does not support sparse gradients, please consider SparseAdam instead")

    def _step_group(self, group):
        """The group's step, each parameter's as ``_update_parameter`` takes it, with what is the same for every
        parameter decided once for the group (its options are read again at every step: a scheduler changes lr).
        Where the group's options are plain numbers and the step is not recorded (``plain_options``), a parameter
        whose update would be the one call (a dense real Tensor, its gradient a Tensor of its shape and dtype,
        neither it nor its moments of a class that overrides a method the step calls) takes that call directly;
        every other parameter, and every parameter of an optimizer whose class has its own ``update`` or
        ``_update_parameter``, goes through ``_update_parameter``."""
        cls = type(self)
        if (cls.update is not Adam.update or cls._update_parameter is not Optimizer._update_parameter
                or not plain_options(group)):
            return super()._step_group(group)
        adam_step = one_call_step()
        lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        amsgrad, maximize, decoupled = group["amsgrad"], group.get("maximize"), group.get("decoupled_weight_decay")
        states, keeps = self.state, _keeps_tensor_methods  # (keeps_tensor_methods' cache read here first: its call
        # for every parameter and its moments would be two more calls per parameter and step)
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            state = states[p]
            if (type(grad) is Tensor and (keeps.get(type(p)) or keeps_tensor_methods(type(p)))  # (not a sparse leaf)
                    and grad._data.shape == p._data.shape and grad._data.dtype == p._data.dtype
                    and p._data.dtype in _ONE_CALL_DTYPES):
                if not state:
                    new_state(p, state, group)
                exp_avg = state["exp_avg"]
                if keeps.get(type(exp_avg)) or keeps_tensor_methods(type(exp_avg)):
                    adam_step(p, grad.neg() if maximize else grad, exp_avg, state["exp_avg_sq"],
                              state.get("max_exp_avg_sq"), state["step"], lr, beta1, beta2, weight_decay, eps, amsgrad,
                              decoupled)
                    continue
            self._step_parameter(p, grad, state, group)

    def update(self, param, grad, state, group):
        if not state:
            new_state(param, state, group)
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        if (group["fused"] or one_call_is_the_same(param, state, group)) and grad._data.dtype == param._data.dtype:
            # the count, then the same arithmetic in one call on the arrays (ops/fused_adam.py, _fused_adam_'s and
            # _fused_adamw_'s step of one parameter): to the last bit, and faster. PyTorch's fused kernel takes
            # lr and the betas as numbers (lr.item(), a beta's float()): Tensor ones (which arrive here only when
            # fused: one_call_is_the_same wants plain numbers) step as their values in double, not in float32
            lr, beta1, beta2 = float(lr), float(beta1), float(beta2)
            one_call_step()(param, grad, state["exp_avg"], state["exp_avg_sq"], state.get("max_exp_avg_sq"),
                            state["step"], lr, beta1, beta2, group["weight_decay"], eps, group["amsgrad"],
                            group.get("decoupled_weight_decay"))
            return
        step = state["step"].add_(1).item()
        grad = apply_weight_decay(param, grad, group)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        update_moments(exp_avg, exp_avg_sq, grad, group["betas"])
        if group["amsgrad"]:  # the largest second moment so far
            largest = state["max_exp_avg_sq"]
            exp_avg_sq = largest.copy_(kept_for_backward(largest, group).maximum(exp_avg_sq))
        if group["differentiable"]:  # PyTorch's recorded path: the corrections as scalar-dtype Tensors
            step = state["step"].clone()  # (β ** step keeps step for its backward; the next step counts it on)
            step_size_neg = number_over(lr, 1 - beta1**step).neg()
            denominator = (exp_avg_sq.sqrt() / ((1 - beta2**step).sqrt() * step_size_neg))
            param.addcdiv_(exp_avg.clone(), denominator.add_(number_over(eps, step_size_neg)))
            return
        denominator = exp_avg_sq.sqrt().div_((1 - beta2**step) ** 0.5).add_(eps)  # a fresh Tensor: in place
        param.addcdiv_(exp_avg, denominator, value=-lr / (1 - beta1**step))

    def check_hyperparameters(self, group):
        super().check_hyperparameters(group)
        check_tensor_options(group)


def new_state(param, state, group):
    """Adam's state of ``param`` at its first step: the count (a scalar-dtype Tensor) and the moments, zeros."""
    state["step"] = scalar_tensor(0.0, fused=group["fused"])
    state["exp_avg"] = autograd.zeros_like(param)
    state["exp_avg_sq"] = autograd.zeros_like(param)
    if group["amsgrad"]:
        state["max_exp_avg_sq"] = autograd.zeros_like(param)


def one_call_step():
    """``ops/fused_adam.adam_step``, the one-call step of a parameter: imported at the first step (the module of
    autograd._fused_adam_ loads on first use, not with `import optim`), then kept (an import statement at every
    step costs half a microsecond each time)."""
    global _adam_step
    if _adam_step is None:
        from autograd.ops.fused_adam import adam_step as _adam_step
    return _adam_step


_adam_step = None  # ops/fused_adam.adam_step, once one_call_step has loaded it


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter, 2019):
        W ← W (1 - η λ), then the Adam step on ∇L alone (λ defaults to 1e-2)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def __setstate__(self, state):
        """As PyTorch's: a group loaded into AdamW decays its weights decoupled, whatever the saved group says
        (an Adam state dict, or one from before the option existed)."""
        super().__setstate__(state)
        for group in self.__dict__.get("param_groups", ()):
            group["decoupled_weight_decay"] = True


_METHODS_STEPPED_THROUGH = ("lerp_", "mul_", "addcmul_", "sqrt", "div_", "add_", "addcdiv_", "copy_", "maximum")
_keeps_tensor_methods = {}  # class -> whether it overrides none of them (asked once per class)


def one_call_is_the_same(param, state, group):
    """Whether Adam's step through the Tensor methods may run as the one-call arithmetic instead, with the same
    result to the last bit: a float32 or float64 parameter (float16's methods each round to float16, as PyTorch's
    single-tensor step does, where the one call keeps NumPy's own roundings), the group's options plain
    (``plain_options``), and neither the parameter nor its moments of a class that overrides a method the step
    calls (a Tensor subclass sees its own methods called, as in PyTorch)."""
    return (param._data.dtype in _ONE_CALL_DTYPES and plain_options(group) and keeps_tensor_methods(type(param))
            and keeps_tensor_methods(type(state["exp_avg"])))


_ONE_CALL_DTYPES = (float32, float64)  # the dtypes whose one-call step is the method-by-method one to the last bit


def plain_options(group):
    """Whether the group's step is not recorded (``differentiable``) and its options are plain numbers (a Tensor
    lr or beta is an operand of the methods' arithmetic)."""
    if group["differentiable"]:
        return False
    for option in (group["lr"], *group["betas"], group["eps"], group["weight_decay"]):
        if type(option) is not float and type(option) is not int:
            return False
    return True


def keeps_tensor_methods(cls):
    """Whether ``cls`` is Tensor or a subclass that overrides none of the methods Adam's step calls (asked once per
    class)."""
    keeps = _keeps_tensor_methods.get(cls)
    if keeps is None:
        keeps = _keeps_tensor_methods[cls] = issubclass(cls, Tensor) and all(
            getattr(cls, name) is getattr(Tensor, name) for name in _METHODS_STEPPED_THROUGH)
    return keeps


def apply_weight_decay(param, grad, group):
    """Weight decay λ as the Adam family does it: decoupled, W ← W (1 - η λ) in place
    (AdamW's); otherwise L2, the gradient g + λ W that the update then uses."""
    weight_decay = group["weight_decay"]
    if not weight_decay:
        return grad
    if group.get("decoupled_weight_decay"):
        param.mul_(1 - group["lr"] * weight_decay)
        return grad
    return l2_decayed(grad, param, weight_decay)
