"""Modules as functions of their tensors: ``functional_call``, ``stack_module_state`` (an ensemble as one
batch) and ``replace_all_batch_norm_modules_``. autograd does not import nn: each reaches the module
through its own methods."""

from collections import Counter

from ..ops.joins import stack


def functional_call(module, parameter_and_buffer_dicts, args=None, kwargs=None, *, tie_weights=True, strict=False):
    """``module(*args, **kwargs)`` with the given tensors ({dotted name: tensor}, or a tuple of such
    dicts) in place of its parameters and buffers; the module's own are put back after. The output is
    a function of the tensors given, so ``grad(lambda p: loss(functional_call(model, p, x)))(params)``
    differentiates with respect to ``params``. ``module`` is an ``nn.Module`` (the swap itself is
    nn's: ``nn.utils.stateless``, reached through the module, as autograd does not import nn)."""
    if isinstance(parameter_and_buffer_dicts, dict):
        tensors = parameter_and_buffer_dicts
    elif isinstance(parameter_and_buffer_dicts, (tuple, list)):
        if not all(isinstance(d, dict) for d in parameter_and_buffer_dicts):
            raise ValueError("Expected all elements of parameter_and_buffer_dicts to be dictionaries")
        counts = Counter(key for d in parameter_and_buffer_dicts for key in d)
        repeated = [key for key, count in counts.items() if count > 1]  # (in order of appearance, as PyTorch's)
        if repeated:
            raise ValueError(f"{repeated} appeared in multiple dictionaries; behavior of functional call is "
                             "ambiguous")
        tensors = {key: value for d in parameter_and_buffer_dicts for key, value in d.items()}
    else:
        raise ValueError(f"Expected parameter_and_buffer_dicts to be a dict, or a list/tuple of dicts, but got "
                         f"{type(parameter_and_buffer_dicts)}")
    return module._functional_call(tensors, args, kwargs, tie_weights=tie_weights, strict=strict)


def stack_module_state(models):
    """({name: the models' parameters stacked along a new dim 0}, {name: their buffers stacked}) for
    models of one architecture: an ensemble's state as one batch, for vmap over functional_call.
    The stacked parameters are new leaves (requiring grad where the models' did)."""
    models = list(models)
    if not models:
        raise RuntimeError("stack_module_state: Expected at least one model, got 0.")
    if not (all(m.training for m in models) or not any(m.training for m in models)):
        raise RuntimeError("stack_module_state: Expected all models to have the same training/eval mode.")
    reference = type(models[0])
    if not all(type(m) is reference for m in models):
        raise RuntimeError("stack_module_state: Expected all models to be of the same class.")
    params = [dict(m.named_parameters()) for m in models]
    buffers = [dict(m.named_buffers()) for m in models]
    for name in params[0]:
        if len({p[name].requires_grad for p in params}) > 1:  # (one stacked leaf cannot half require grad)
            raise RuntimeError(f"Expected {name} from each model to have the same .requires_grad")
    stacked_params = {name: stack([p[name].detach() for p in params]).requires_grad_(params[0][name].requires_grad)
                      for name in params[0]}
    stacked_buffers = {name: stack([b[name] for b in buffers]) for name in buffers[0]}
    return stacked_params, stacked_buffers


def replace_all_batch_norm_modules_(root):
    """Make every BatchNorm below ``root`` use batch statistics only (no running statistics), in
    place, as vmap over a model needs in PyTorch; returns ``root``."""
    for module in root.modules():
        if hasattr(module, "track_running_stats") and hasattr(module, "running_mean"):
            module.running_mean = module.running_var = module.num_batches_tracked = None
            module.track_running_stats = False
    return root

