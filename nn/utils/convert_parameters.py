"""Parameters as one flat vector and back (``torch.nn.utils.convert_parameters``)."""

import autograd
from autograd import Tensor
from autograd.errors import ShapeError


def parameters_to_vector(parameters):
    """All parameters flattened into one vector (differentiable, like PyTorch's)."""
    return autograd.cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vector, parameters):
    """Make each parameter's data the next slice of ``vector`` (a view of it, in its dtype, as PyTorch's)."""
    if not isinstance(vector, Tensor):
        raise TypeError(f"expected torch.Tensor, but got: {autograd.typename(vector)}")
    parameters = list(parameters)
    needed = sum(p.numel() for p in parameters)
    # (PyTorch reads a longer vector's first elements silently, and fails on a shorter one with a RuntimeError:
    # ShapeError is a RuntimeError and a ValueError)
    if vector.ndim != 1:
        raise ShapeError(f"vector_to_parameters expects a 1-D vector, got a tensor of shape {tuple(vector.shape)}")
    if vector.numel() != needed:
        raise ShapeError(f"vector has {vector.numel()} elements but the parameters need {needed}")
    start = 0
    for p in parameters:  # each parameter's data becomes a view of its slice, as PyTorch's (param.data = ...):
        p.data = vector[start:start + p.numel()].view_as(p).data  # later writes to vector show in the model
        start += p.numel()
