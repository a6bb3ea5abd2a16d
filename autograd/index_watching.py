"""The index tensors an op reads or returns, watched as saved: PyTorch's index ops (x[i], x[i] = v, index_select,
index_add, index_put, gather, scatter, masked ops) save their index tensors, and its selections (sort, topk, max(dim),
cummax, max pooling, ...) the indices they return, so writing one in place before the backward refuses it, as writing
a saved input does (``Primitive.watch_output``). Ours read the index's array, which the tensor shares: without the
watch a write would silently move the gradient (or send it out of bounds)."""

import functools
import inspect

from .primitive import Primitive, named_node


def watch_index_tensors(result, index):
    """PyTorch's index ops (x[i], x[i] = v, index_select, index_add, index_put, gather, scatter) save their index
    tensors, so writing one in place before the backward refuses it. Ours read the index's array, which the tensor
    shares: the node that made ``result`` watches the version of each index tensor of ``index`` (one, or a tuple
    or list of them) instead of reading new indices silently. A 0-d one selects as a number, saved by neither.
    An op taking its index as an argument says so with ``watches_index``; only x[i] and x[i] = v call this, as
    their index is the whole subscript and x[i] of no graph (the common case) skips it."""
    node = getattr(result, "grad_fn", None)
    if not isinstance(node, Primitive):
        return
    for part in index if isinstance(index, (tuple, list)) else (index,):
        if getattr(part, "_version_cell", None) is not None and part.ndim:
            node.watch_output(part)


def watches_index(name, position):
    """Decorator of an op taking an index (or mask) tensor as argument ``name`` at ``position``: its result's node
    watches that tensor (watch_index_tensors), as PyTorch's node saves it."""

    def decorate(function):
        @functools.wraps(function)
        def watching(*args, **kwargs):
            result = function(*args, **kwargs)
            watch_index_tensors(result, kwargs[name] if name in kwargs else args[position] if len(args) > position
                                else None)
            return result

        return watching

    return decorate


def watches_arguments(*names):
    """Decorator of a function whose PyTorch node saves the tensors given as its arguments ``names`` (a loss's
    input, target and class weights, embedding's indices, max_unpool's indices), where the function's own nodes
    keep a copy or nothing, or read the array of a 0-d one (which x[i] reads as a number, saved by neither:
    watches_index skips those): the result's node (the first of a tuple's) watches each of them as saved
    (named_node's ``saves``), so writing one in place after the forward refuses the backward, as PyTorch's."""

    def decorate(function):
        parameters = list(inspect.signature(function).parameters)
        spots = tuple((name, parameters.index(name)) for name in names)

        @functools.wraps(function)
        def watching(*args, **kwargs):
            result = function(*args, **kwargs)
            first = result[0] if isinstance(result, tuple) else result
            if getattr(first, "grad_fn", None) is not None:
                named_node(first, None, None, saves=[kwargs.get(name) if name in kwargs else
                                                     args[position] if len(args) > position else None
                                                     for name, position in spots])
            return result

        return watching

    return decorate


def watch_returned_indices(values, indices):
    """(values, indices), of an op whose PyTorch node saves the indices it returns (sort, topk, kthvalue, max(dim),
    median(dim), mode, cummax, max pooling; frexp's exponent): values' node watches them. Ours gather by the same
    array, so writing the indices in place after the forward would move the gradient silently; PyTorch refuses the
    backward ("[torch.LongTensor [2, 2]] is at version 1; expected version 0 instead")."""
    node = values.grad_fn
    if node is not None:
        node.watch_output(indices)
    return values, indices
