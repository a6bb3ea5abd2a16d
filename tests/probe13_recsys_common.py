"""What the files of session 13's recommender-system probe (tests/test_programs_probe13_recsys_*.py: click-through
models, retrieval, ranking and metrics, updates by hand) share: ``params_of`` and ``grads_of``, a model's parameters
and gradients as NumPy arrays."""

def params_of(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def grads_of(model):
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
