"""PyTorch's functional optimizer steps: ``torch.optim.sgd.sgd``, ``torch.optim.adam.adam``, ... (and the
same functions in ``torch.optim._functional``). Each takes lists of parameters, gradients and the state
tensors the caller keeps (moments, ``step`` counters as 0-d Tensors), and takes one step in place, as the
optimizer's ``step`` would with that state: meta-learning code and functional optimizers (a torch.distributed
pattern) call them with state of their own.

Each runs its optimizer class's own update rule (``Optimizer.update``) on every parameter, the state given
as that optimizer keeps it (the same names, so the counters and moments move in place as in PyTorch), the
options as one parameter group. A state entry the step makes (SGD's first momentum buffer) is written back
into the caller's list, as PyTorch's. ``foreach``, ``fused``, ``capturable``, ``differentiable`` and
``has_complex`` are accepted and change no arithmetic (one implementation), but are checked as the optimizer's
step checks them (``capturable=True`` on the CPU is PyTorch's AssertionError); a ``grad_scale``/``found_inf`` (the
fused kernels', from a GradScaler) divides the gradients, or skips the step where an inf was found.
"""

import inspect

from autograd import Tensor

__all__ = ["adadelta", "adagrad", "adam", "adamax", "adamw", "asgd", "nadam", "radam", "rmsprop", "rprop", "sgd"]


def _class(name):
    import optim  # (here: the optimizer modules import these functions)

    return getattr(optim, name)


def _check_steps(function, state_steps):
    if not all(isinstance(t, Tensor) for t in state_steps):
        raise RuntimeError(f"API has changed, `state_steps` argument must contain a list of singleton tensors "
                           f"({function})")


def _step(name, params, grads, states, options, grad_scale=None, found_inf=None, paths=None):
    """One step of optimizer ``name`` over ``params``: ``states`` maps each state entry's name to the
    caller's list (one entry a parameter; an empty list or None entries where there is none yet),
    ``options`` the group's options (the class's defaults fill the rest). ``paths``: the caller's ``capturable``,
    ``foreach`` and ``fused``, checked as the optimizer's step checks them (PyTorch's AssertionError for
    capturable on the CPU)."""
    if found_inf is not None and float(found_inf) != 0:
        return  # (the fused kernels skip a step whose gradients overflowed)
    cls = _class(name)
    group = {key: parameter.default for key, parameter in inspect.signature(cls.__init__).parameters.items()
             if parameter.default is not inspect.Parameter.empty} | options
    optimizer = cls.__new__(cls)  # the class's update rule only: no parameter groups
    optimizer.state = {}
    if paths and (paths.get("capturable") or paths.get("fused")):
        from .step_devices import check_step_devices

        check_step_devices(optimizer, paths, params)
    for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
        if grad_scale is not None:
            grad = grad / grad_scale
        state = {key: values[i] for key, values in states.items() if values and values[i] is not None}
        optimizer._update_parameter(param, grad, state, group)
        for key, values in states.items():
            if values and key in state and values[i] is not state[key]:
                values[i] = state[key]  # (an entry the step made: the caller's list gets it, as PyTorch's)


def sgd(params, d_p_list, momentum_buffer_list, has_sparse_grad=False, foreach=None, fused=None, grad_scale=None,
        found_inf=None, *, weight_decay, momentum, lr, dampening, nesterov, maximize):
    """SGD's step (``torch.optim.sgd.sgd``); a None momentum buffer is made and put in the list."""
    _step("SGD", params, d_p_list, {"momentum_buffer": momentum_buffer_list},
          dict(weight_decay=weight_decay, momentum=momentum, lr=lr, dampening=dampening, nesterov=nesterov,
               maximize=maximize), grad_scale, found_inf)


def adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, foreach=None, capturable=False,
         differentiable=False, fused=None, grad_scale=None, found_inf=None, has_complex=False,
         decoupled_weight_decay=False, *, amsgrad, beta1, beta2, lr, weight_decay, eps, maximize):
    """Adam's step (``torch.optim.adam.adam``)."""
    _check_steps("adam", state_steps)
    _step("Adam", params, grads, {"step": state_steps, "exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs,
                                  "max_exp_avg_sq": max_exp_avg_sqs if amsgrad else []},
          dict(amsgrad=amsgrad, betas=(beta1, beta2), lr=lr, weight_decay=weight_decay, eps=eps, maximize=maximize,
               differentiable=differentiable, decoupled_weight_decay=decoupled_weight_decay), grad_scale, found_inf,
          paths=dict(capturable=capturable, foreach=foreach, fused=fused))


def adamw(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, foreach=None, capturable=False,
          differentiable=False, fused=None, grad_scale=None, found_inf=None, has_complex=False, *, amsgrad, beta1,
          beta2, lr, weight_decay, eps, maximize):
    """AdamW's step (``torch.optim.adamw.adamw``): Adam's with decoupled weight decay."""
    adam(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, foreach=foreach, capturable=capturable,
         differentiable=differentiable, fused=fused, grad_scale=grad_scale, found_inf=found_inf,
         decoupled_weight_decay=True, amsgrad=amsgrad, beta1=beta1, beta2=beta2, lr=lr, weight_decay=weight_decay,
         eps=eps, maximize=maximize)


def adagrad(params, grads, state_sums, state_steps, fused=None, grad_scale=None, found_inf=None,
            has_sparse_grad=False, foreach=None, differentiable=False, has_complex=False, *, lr, weight_decay,
            lr_decay, eps, maximize):
    """Adagrad's step (``torch.optim.adagrad.adagrad``)."""
    _check_steps("adagrad", state_steps)
    _step("Adagrad", params, grads, {"step": state_steps, "sum": state_sums},
          dict(lr=lr, weight_decay=weight_decay, lr_decay=lr_decay, eps=eps, maximize=maximize,
               differentiable=differentiable), grad_scale, found_inf)


def adadelta(params, grads, square_avgs, acc_deltas, state_steps, capturable=False, foreach=None,
             differentiable=False, has_complex=False, *, lr, rho, eps, weight_decay, maximize):
    """Adadelta's step (``torch.optim.adadelta.adadelta``)."""
    _step("Adadelta", params, grads, {"step": state_steps, "square_avg": square_avgs, "acc_delta": acc_deltas},
          dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize, differentiable=differentiable),
          paths=dict(capturable=capturable, foreach=foreach))


def adamax(params, grads, exp_avgs, exp_infs, state_steps, foreach=None, maximize=False, differentiable=False,
           capturable=False, has_complex=False, *, eps, beta1, beta2, lr, weight_decay):
    """Adamax's step (``torch.optim.adamax.adamax``)."""
    _check_steps("adamax", state_steps)
    _step("Adamax", params, grads, {"step": state_steps, "exp_avg": exp_avgs, "exp_inf": exp_infs},
          dict(eps=eps, betas=(beta1, beta2), lr=lr, weight_decay=weight_decay, maximize=maximize,
               differentiable=differentiable),
          paths=dict(capturable=capturable, foreach=foreach))


def asgd(params, grads, axs, mus, etas, state_steps, foreach=None, maximize=False, differentiable=False,
         capturable=False, has_complex=False, *, lambd, lr, t0, alpha, weight_decay):
    """ASGD's step (``torch.optim.asgd.asgd``): ``etas`` and ``mus`` are 0-d Tensors, updated in place."""
    _step("ASGD", params, grads, {"step": state_steps, "eta": etas, "mu": mus, "ax": axs},
          dict(lambd=lambd, lr=lr, t0=t0, alpha=alpha, weight_decay=weight_decay, maximize=maximize,
               differentiable=differentiable),
          paths=dict(capturable=capturable, foreach=foreach))


def nadam(params, grads, exp_avgs, exp_avg_sqs, mu_products, state_steps, decoupled_weight_decay=False, foreach=None,
          capturable=False, differentiable=False, has_complex=False, maximize=False, *, beta1, beta2, lr, weight_decay,
          momentum_decay, eps):
    """NAdam's step (``torch.optim.nadam.nadam``)."""
    _check_steps("nadam", state_steps)
    _step("NAdam", params, grads, {"step": state_steps, "mu_product": mu_products, "exp_avg": exp_avgs,
                                   "exp_avg_sq": exp_avg_sqs},
          dict(betas=(beta1, beta2), lr=lr, weight_decay=weight_decay, momentum_decay=momentum_decay, eps=eps,
               decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, differentiable=differentiable),
          paths=dict(capturable=capturable, foreach=foreach))


def radam(params, grads, exp_avgs, exp_avg_sqs, state_steps, decoupled_weight_decay=False, foreach=None,
          differentiable=False, capturable=False, has_complex=False, maximize=False, *, beta1, beta2, lr, weight_decay,
          eps):
    """RAdam's step (``torch.optim.radam.radam``)."""
    _check_steps("radam", state_steps)
    _step("RAdam", params, grads, {"step": state_steps, "exp_avg": exp_avgs, "exp_avg_sq": exp_avg_sqs},
          dict(betas=(beta1, beta2), lr=lr, weight_decay=weight_decay, eps=eps,
               decoupled_weight_decay=decoupled_weight_decay, maximize=maximize, differentiable=differentiable),
          paths=dict(capturable=capturable, foreach=foreach))


def rmsprop(params, grads, square_avgs, grad_avgs, momentum_buffer_list, state_steps, foreach=None, maximize=False,
            differentiable=False, capturable=False, has_complex=False, *, lr, alpha, eps, weight_decay, momentum,
            centered):
    """RMSprop's step (``torch.optim.rmsprop.rmsprop``); ``grad_avgs`` is read where ``centered``,
    ``momentum_buffer_list`` where there is momentum."""
    _step("RMSprop", params, grads, {"step": state_steps, "square_avg": square_avgs,
                                     "grad_avg": grad_avgs if centered else [],
                                     "momentum_buffer": momentum_buffer_list if momentum > 0 else []},
          dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered,
               maximize=maximize, differentiable=differentiable),
          paths=dict(capturable=capturable, foreach=foreach))


def rprop(params, grads, prevs, step_sizes, state_steps, foreach=None, capturable=False, maximize=False,
          differentiable=False, has_complex=False, *, step_size_min, step_size_max, etaminus, etaplus):
    """Rprop's step (``torch.optim.rprop.rprop``): ``step_sizes`` are the per-weight step sizes (the
    state), ``step_size_min``/``step_size_max`` their bounds."""
    _step("Rprop", params, grads, {"step": state_steps, "prev": prevs, "step_size": step_sizes},
          dict(step_sizes=(step_size_min, step_size_max), etas=(etaminus, etaplus), maximize=maximize,
               differentiable=differentiable),
          paths=dict(capturable=capturable, foreach=foreach))
