"""Collectives with gradients, as ``torch.distributed.nn.functional``'s: they return new tensors (the
inputs are left alone) and backward sends the gradients back along the same wires. Contrastive losses
(SimCLR, CLIP) gather every rank's embeddings this way and still train their own encoder.

With y_k the output on rank k and g_k = dL/dy_k there:

    all_reduce:  y = Σ_r x_r                 dL/dx_r = Σ_k g_k         (an all_reduce of the gradients)
    all_gather:  y[i] = x_i on every rank    dL/dx_r = Σ_k g_k[r]      (a reduce_scatter of them)
    broadcast:   y = x_src                   dL/dx_src = Σ_k g_k, zero on the other ranks
"""

from ...autograd import Function
from .. import collectives
from ..collectives import ReduceOp


class _AllReduce(Function):
    @staticmethod
    def forward(ctx, op, group, tensor):
        ctx.op, ctx.group = op, group
        result = tensor.clone()
        collectives.all_reduce(result, op=op, group=group)
        return result

    @staticmethod
    def backward(ctx, grad_output):
        grad = grad_output.clone()
        collectives.all_reduce(grad, op=ctx.op, group=ctx.group)  # (as PyTorch's, whatever the op)
        return None, None, grad


class _AllGather(Function):
    @staticmethod
    def forward(ctx, group, tensor):
        ctx.group = group
        outputs = [tensor.new_empty(tensor.shape) for _ in range(collectives.pg.get_world_size(group))]
        collectives.all_gather(outputs, tensor.contiguous(), group=group)
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grad_outputs):
        grad = grad_outputs[0].new_empty(grad_outputs[0].shape)
        collectives.reduce_scatter(grad, [g.contiguous() for g in grad_outputs], op=ReduceOp.SUM, group=ctx.group)
        return None, grad


class _Broadcast(Function):
    @staticmethod
    def forward(ctx, src, group, tensor):
        ctx.src, ctx.group = src, group
        result = tensor.clone()
        collectives.broadcast(result, src, group=group)
        return result

    @staticmethod
    def backward(ctx, grad_output):
        grad = grad_output.clone()
        collectives.reduce(grad, ctx.src, op=ReduceOp.SUM, group=ctx.group)
        if collectives.pg.get_rank(ctx.group) != ctx.src:
            grad.zero_()
        return None, None, grad


def all_reduce(tensor, op=ReduceOp.SUM, group=None):
    """op over every rank's ``tensor``, as a new tensor that backward differentiates."""
    return _AllReduce.apply(op, group, tensor)


def all_gather(tensor, group=None):
    """A tuple of every rank's ``tensor`` (rank i's at index i); backward sums each rank's gradients home."""
    return _AllGather.apply(group, tensor)


def broadcast(tensor, src, group=None):
    """Rank ``src``'s ``tensor`` on every rank, as a new tensor; its gradient is summed to ``src``."""
    return _Broadcast.apply(src, group, tensor)
