"""Run one computation in chainrule and in PyTorch (float64) and compare values and every gradient."""

import numpy as np

import autograd

TOLERANCE = dict(rtol=1e-10, atol=1e-10)


def first(output):
    return output[0] if isinstance(output, tuple) else output


def same_as_torch(ours, theirs, arrays, seed=0, outputs_equal=None):
    """ours(*Tensors) and theirs(*torch tensors) on the same float64 arrays: equal outputs, and equal
    gradients for every input under the same random dL/dy. Returns both raw outputs."""
    import torch

    ours_in = [autograd.Tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
    theirs_in = [torch.tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
    ours_out, theirs_out = ours(*ours_in), theirs(*theirs_in)
    y, ty = first(ours_out), first(theirs_out)
    assert tuple(y.shape) == tuple(ty.shape), (y.shape, ty.shape)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **TOLERANCE)
    grad = np.random.default_rng(seed).standard_normal(tuple(y.shape))
    y.backward(autograd.Tensor(grad))
    ty.backward(torch.tensor(grad))
    for a, b in zip(ours_in, theirs_in):
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), **TOLERANCE)
    return ours_out, theirs_out


def same_module_as_torch(ours, theirs, input, seed=0):
    """An nn module and its torch.nn twin, the torch one given our weights: equal outputs, equal gradients
    for the input and every parameter."""
    import torch

    with torch.no_grad():
        for name, p in theirs.named_parameters():
            p.copy_(torch.tensor(dict(ours.named_parameters())[name].numpy()))
    x = autograd.Tensor(np.array(input, dtype=np.float64), requires_grad=True)
    tx = torch.tensor(np.array(input, dtype=np.float64), requires_grad=True)
    y, ty = ours(x), theirs(tx)
    np.testing.assert_allclose(y.numpy(), ty.detach().numpy(), **TOLERANCE)
    grad = np.random.default_rng(seed).standard_normal(tuple(y.shape))
    y.backward(autograd.Tensor(grad))
    ty.backward(torch.tensor(grad))
    np.testing.assert_allclose(x.grad.numpy(), tx.grad.numpy(), **TOLERANCE)
    for name, p in theirs.named_parameters():
        np.testing.assert_allclose(dict(ours.named_parameters())[name].grad.numpy(), p.grad.numpy(), **TOLERANCE)
