"""``nn.utils._per_sample_grad.call_for_per_sample_grads``: PyTorch's Expanded Weights front door, per-sample
gradients of a module's parameters in a ``grad_sample`` field after one backward pass.

For a batch x_1 .. x_B with per-sample losses l_b and L = sum_b l_b (``loss_reduction="sum"``),

    p.grad_sample[b] = dl_b/dp,   sum_b p.grad_sample[b] = dL/dp;

for L = (1/B) sum_b l_b (``"mean"``) the rows are scaled by B, so that they are still dl_b/dp.

PyTorch gets them from batched kernels that keep the batch dimension of the
weight gradient; here every trainable parameter is expanded to a batch of B leaves (``p.expand(B, *p.shape)``,
one copy per sample, sharing memory) and the module is mapped over the samples by ``func.vmap`` of
``func.functional_call``, each sample run as a batch of one. The gradient that reaches the expanded leaf is then
the per-sample gradient itself; a hook on it fills ``p.grad_sample`` (adding to one already there), and ``p.grad``
stays None, as PyTorch's. Random draws inside (dropout) are the batch's, as the module would draw them on the
whole batch; a PackedSequence argument is cut into its samples, each packed alone, and the output packed as the
input (grad_sample row i is sample i; PyTorch's rows follow the packed, sorted order).
"""

import functools

import autograd
from autograd.func import functional_call, vmap
from autograd.utils._pytree import tree_flatten, tree_unflatten

from ..module import Module
from ..normalization import _BatchNorm
from .rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


def call_for_per_sample_grads(module, *, batch_size=None, loss_reduction="sum", batch_first=True):
    """``module``'s forward, wrapped so that a backward pass through its output leaves each trainable parameter's
    per-sample gradients in ``p.grad_sample`` (shape (B, *p.shape)) and ``p.grad`` None. ``batch_size``: B, or
    None to read it from the inputs (every tensor argument's batch dimension: the first, or the second where not
    ``batch_first``); ``loss_reduction``: "mean" scales the per-sample gradients by B (the mean's 1/B undone), as
    PyTorch's. A module that mixes samples (batch norm) is refused, as PyTorch's Expanded Weights refuses it."""
    if loss_reduction not in ["sum", "mean"]:
        raise RuntimeError(f"Expected loss_reduction argument to be sum or mean, got {loss_reduction}")
    if not isinstance(module, Module):
        raise RuntimeError(f"Module passed must be nn.Module, got {type(module).__name__}")
    if not (batch_size is None or isinstance(batch_size, int)):
        raise RuntimeError(f"Batch size passed must be None or an integer, got {type(batch_size).__name__}")
    if batch_size is not None and batch_size < 1:
        raise RuntimeError(f"Batch size must be positive, got {batch_size}")
    for weight in module.parameters():
        if getattr(weight, "grad_sample", None) is not None:
            raise RuntimeError(
                "Current Expanded Weights accumulates the gradients, which will be incorrect for multiple "
                f"calls without clearing gradients. Please clear out the grad_sample parameter of {weight} or "
                "post an issue to pytorch/pytorch to prioritize correct behavior")
    batch_dim = 0 if batch_first else 1

    def compute_batch_size(leaves):
        found = None
        for leaf in leaves:
            if not isinstance(leaf, autograd.Tensor):
                continue
            size = leaf.shape[batch_dim]
            if found is not None and found != size:
                raise RuntimeError(
                    "When computing batch size, found at least one input with batch size "
                    f"{found} and one with batch size {size}. Please specify it "
                    "explicitly using the batch size kwarg in call_for_per_sample_grads")
            found = size
        if found is None:
            raise RuntimeError(
                "Unable to find a tensor in the passed args and kwargs. They may not be pytree-able "
                "and so ExpandedWeights cannot compute the batch size from the inputs. Please specify "
                "it explicitly")
        return found

    @functools.wraps(module.forward)
    def wrapper(*args, **kwargs):
        for sub in module.modules():
            if isinstance(sub, _BatchNorm) and any(p.requires_grad for p in sub.parameters(recurse=False)):
                raise RuntimeError("Expanded Weights encountered but cannot handle function batch_norm")
        # a PackedSequence argument goes in padded, so that it is cut into samples; each is packed again below
        packed = [i for i, arg in enumerate(args) if isinstance(arg, PackedSequence)]
        lengths, originals = None, [args[i] for i in packed]
        if packed:
            padded = [pad_packed_sequence(args[i], batch_first=batch_first) for i in packed]
            lengths = padded[0][1]
            args = tuple(padded[packed.index(i)][0] if i in packed else arg for i, arg in enumerate(args))
        leaves, spec = tree_flatten((args, kwargs))
        size = batch_size if batch_size is not None else compute_batch_size(leaves)
        scale = size if loss_reduction == "mean" else 1
        expanded = {}
        for name, p in module.named_parameters():
            if p.requires_grad:
                leaf = p.detach().unsqueeze(0).expand(size, *p.shape).requires_grad_()
                leaf.register_hook(functools.partial(_add_grad_sample, p, scale))
                expanded[name] = leaf
        # a tensor with the batch dimension is cut into samples (each kept as a batch of one); others go whole
        leaf_dims = [batch_dim if isinstance(leaf, autograd.Tensor) and leaf.dim() > batch_dim
                     and leaf.shape[batch_dim] == size else None for leaf in leaves]
        first = next((leaf for leaf in leaves if isinstance(leaf, autograd.Tensor) and leaf.dim() > batch_dim), None)
        if first is not None and first.shape[batch_dim] != size:  # (each sample would otherwise see the whole input)
            raise RuntimeError("Expected ExpandedWeights to have batch size matching input but got input batch size "
                               f"of {first.shape[batch_dim]} with ExpandedWeight of batch size {size}")

        packed_outputs = set()

        def one_sample(params, length, *sample_leaves):
            sample_leaves = [leaf.unsqueeze(batch_dim) if dim is not None else leaf
                             for leaf, dim in zip(sample_leaves, leaf_dims)]
            sample_args, sample_kwargs = tree_unflatten(sample_leaves, spec)
            sample_args = tuple(pack_padded_sequence(arg, [int(length)], batch_first=batch_first) if i in packed
                                else arg for i, arg in enumerate(sample_args))
            out = functional_call(module, params, sample_args, sample_kwargs)
            if not packed:
                return out
            # a packed output goes back padded to the input's length, so that the samples stack
            outs = list(out) if isinstance(out, tuple) and not isinstance(out, PackedSequence) else [out]
            for i, one in enumerate(outs):
                if isinstance(one, PackedSequence):
                    packed_outputs.add(i)
                    outs[i] = pad_packed_sequence(one, batch_first=batch_first, total_length=args[packed[0]].shape[
                        1 - batch_dim])[0]
            return tuple(outs) if len(outs) > 1 or isinstance(out, tuple) else outs[0]

        # dropout inside draws for the whole batch at once, the numbers the module would draw on the batch
        length_leaf = lengths if lengths is not None else autograd.zeros(size, dtype=autograd.long)
        stacked = vmap(one_sample, in_dims=(0, 0, *leaf_dims), randomness="different")(expanded, length_leaf,
                                                                                        *leaves)
        out_leaves, out_spec = tree_flatten(stacked)
        dims = _output_batch_dims(module, out_leaves, leaves, leaf_dims, spec, batch_dim)
        # each output (B, *one sample's output): the batch of one at its dim k becomes the batch
        out = tree_unflatten([out.movedim(0, k).squeeze(k + 1) if k is not None else out
                              for out, k in zip(out_leaves, dims)], out_spec)
        if packed_outputs:
            outs = list(out) if isinstance(out, tuple) else [out]
            for i in packed_outputs:
                outs[i] = _packed_like(outs[i], lengths, originals[0], batch_first)
            out = tuple(outs) if isinstance(out, tuple) else outs[0]
        return out

    return wrapper


def _output_batch_dims(module, stacked, leaves, leaf_dims, spec, batch_dim):
    """Where each output of the module (``stacked``: B one-sample outputs, stacked in front) holds its batch: the
    one dim of size 1 in a sample's output, or, where there are several (an RNN's h_n is (layers, batch, hidden)
    whatever its batch_first), the one that is 2 in the module's output on the first two samples (run without
    gradients, its random draws given back). None for what is not a tensor or has no dim of size 1."""
    ones = [[d for d in range(out.dim() - 1) if out.shape[d + 1] == 1] if isinstance(out, autograd.Tensor) else []
            for out in stacked]
    dims = [None if not candidates else batch_dim if batch_dim in candidates else candidates[0]
            for candidates in ones]
    size = next((out.shape[0] for out in stacked if isinstance(out, autograd.Tensor)), 1)
    if size > 1 and any(len(candidates) > 1 for candidates in ones):
        pair = [leaf.narrow(dim, 0, 2) if dim is not None else leaf for leaf, dim in zip(leaves, leaf_dims)]
        pair_args, pair_kwargs = tree_unflatten(pair, spec)
        with autograd.no_grad(), autograd.random.fork_rng():
            pair_out = tree_flatten(module(*pair_args, **pair_kwargs))[0]
        dims = [next((d for d in candidates if out.shape[d] == 2), dim) if len(candidates) > 1 else dim
                for candidates, dim, out in zip(ones, dims, pair_out)]
    return dims


def _packed_like(padded, lengths, like, batch_first):
    """The padded output packed as the PackedSequence ``like`` (its batch sizes and sample order)."""
    if like.sorted_indices is not None:
        padded = padded.index_select(0 if batch_first else 1, like.sorted_indices)
        lengths = lengths.index_select(0, like.sorted_indices)
    data = pack_padded_sequence(padded, lengths, batch_first=batch_first).data
    return PackedSequence(data, like.batch_sizes, like.sorted_indices, like.unsorted_indices)


def _add_grad_sample(param, scale, grad):
    """The hook on a parameter's expanded leaf: its gradient is the per-sample gradients (times B for a mean)."""
    grad = grad * scale if scale != 1 else grad
    previous = getattr(param, "grad_sample", None)
    param.grad_sample = grad if previous is None else previous + grad
