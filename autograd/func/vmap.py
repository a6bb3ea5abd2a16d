"""``vmap``: a function mapped over a batch dimension, by a loop over the batch (see its docstring)."""

import contextlib
import functools

from ..backend import xp
from ..differentiate import inside_a_transform
from ..graph import modes
from ..ops.joins import stack
from ..random import refusing_draws
from ..tensor import Tensor
from ..utils._pytree import _broadcast_to_and_flatten, tree_flatten, tree_structure, tree_unflatten


def vmap(func, in_dims=0, out_dims=0, randomness="error", *, chunk_size=None):
    """``func`` mapped over a batch dimension: vmap(f)(xs) = stack([f(x) for x in xs]).

    ``in_dims``: an int or None for every positional argument, or a tuple with one entry per
    argument, each an int, None (not batched: passed whole to every call) or a tree of them shaped
    like that argument (``({"a": 0, "b": None},)`` for a dict argument); ``out_dims``: where the
    batch dimension goes in each output (None: the output is not batched, and must be the same
    for every example). This implementation loops over the batch in Python and stacks the
    results: PyTorch's vmap runs the batch through batched kernels instead, so the values are the
    same but the cost is one call of ``func`` per example (and its side effects happen once per example).
    An output that is a view of its example (the example itself, a slice of it) comes back as one view
    of the input, as PyTorch's; any other is a new stack. Inside ``func``, backward() and a training
    batch_norm that moves running statistics raise, as PyTorch's. ``randomness``: 'error' refuses a
    draw from any generator inside ``func`` (as PyTorch's refuses any random op), 'different'
    draws fresh numbers in each call, 'same' replays the generator's state for every call, so
    each sees the same numbers. ``chunk_size`` changes nothing here.
    """
    if randomness not in ("error", "different", "same"):
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or 'same'. Got "
                           f"{randomness}")
    if not (chunk_size is None or chunk_size > 0):
        raise ValueError(f"vmap: chunk_size should be None or greater than 0. (got {chunk_size})")

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        name = getattr(func, "__name__", "f")
        if not all(dim is None or isinstance(dim, int) for dim in tree_flatten(out_dims)[0]):
            raise ValueError(f"vmap({name}, ..., out_dims={out_dims}): `out_dims` must be an int, None or a python "
                             "collection of ints representing where in the outputs the vmapped dimension should "
                             "appear.")
        if not args:
            raise ValueError(f"vmap({name})(<inputs>): got no inputs. Maybe you forgot to add inputs, or you are "
                             "trying to vmap over a function with no inputs. The latter is unsupported.")
        if not isinstance(in_dims, (int, tuple)):  # (None too: some input must be batched)
            raise ValueError(f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): expected `in_dims` to be int or a "
                             f"(potentially nested) tuple matching the structure of inputs, got: {type(in_dims)}.")
        leaves, args_spec = tree_flatten(args)
        leaf_dims = _broadcast_to_and_flatten(in_dims, args_spec)
        if leaf_dims is None:
            raise ValueError(f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): in_dims is not compatible with the "
                             f"structure of `inputs`. in_dims has structure {tree_structure(in_dims)} but inputs "
                             f"has structure {args_spec}.")
        sizes = set()
        for leaf, dim in zip(leaves, leaf_dims):
            if dim is None:
                continue
            if not isinstance(leaf, Tensor):
                raise ValueError(f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): Got in_dim={dim} for an "
                                 f"input but the input is of type {type(leaf)}. We cannot vmap over non-Tensor "
                                 "arguments, please use None as the respective in_dim")
            if not -leaf.ndim <= dim < leaf.ndim:
                raise ValueError(f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): Got in_dim={dim} for some "
                                 f"input, but that input is a Tensor of dimensionality {leaf.ndim} so expected "
                                 f"in_dim to satisfy -{leaf.ndim} <= in_dim < {leaf.ndim}.")
            sizes.add(leaf.shape[dim])
        if not sizes:
            raise ValueError("vmap: Expected at least one Tensor to vmap over")
        if len(sizes) > 1:
            raise ValueError(f"vmap: Expected all tensors to have the same size in the mapped dimension, got sizes "
                             f"{sorted(sizes)} for the mapped dimension")
        (batch,) = sizes
        state = None
        if randomness == "same":
            from ..random import get_rng_state

            state = get_rng_state()
        if batch == 0:  # no example to loop over: f runs once, as PyTorch's does, on one made of zeros
            call_args = _select(args, leaf_dims, None)
            return _stack_results([func(*call_args, **kwargs)], out_dims, name, empty=True)
        results = []
        with _drawn_for_the_batch(batch, randomness == "different") as draws:
            for b in range(batch):
                if state is not None:
                    from ..random import set_rng_state

                    set_rng_state(state)
                call_args = _select(args, leaf_dims, b)
                if draws is not None:
                    draws.example, draws.calls = b, 0
                with refusing_draws() if randomness == "error" else contextlib.nullcontext(), \
                        inside_a_transform(), _running_on(call_args):
                    results.append(func(*call_args, **kwargs))
        return _stack_results(results, out_dims, name)

    return wrapper


@contextlib.contextmanager
def _running_on(call_args):
    """func runs on ``call_args`` in this thread: their tensors are its example (graph.unbatched_under_vmap)."""
    before = modes.vmap_examples
    modes.vmap_examples = before + ({id(leaf) for leaf in tree_flatten(call_args)[0] if isinstance(leaf, Tensor)},)
    try:
        yield
    finally:
        modes.vmap_examples = before


@contextlib.contextmanager
def _drawn_for_the_batch(batch, different):
    """With ``different``, the default generator's stream lent to the examples as ``_BatchDraws`` (yielded;
    None otherwise), and given back after."""
    if not different:
        yield None
        return
    from ..random import default_generator, swap_default_stream

    draws = _BatchDraws(default_generator.numpy, batch)
    seed, stream = swap_default_stream((default_generator.initial_seed(), draws))
    try:
        yield draws
    finally:
        if default_generator.numpy is draws:  # (not where func reseeded the generator: its new stream stays)
            swap_default_stream((seed, stream))


class _BatchDraws:
    """The default stream as vmap(randomness='different') lends it to its examples. PyTorch runs each random op
    once for the whole batch, drawing shape (batch, *size): so the k-th sized draw of the first example takes
    that block from the stream, and the k-th of example ``example`` is its row (which matters: PyTorch makes
    normals of 16 or more by blocks of 16 over the whole tensor, so one draw of batch * n numbers is not batch
    draws of n). Draws one number at a time (the serial samplers: one_uniform, one_normal) go to the stream
    itself, example after example, as PyTorch's batched kernels make them element after element."""

    _SIZE_AT = {"uniform": 2, "random": 0, "normal": 2, "standard_normal": 0, "integers": 2, "exponential": 1}

    def __init__(self, stream, batch):
        self.stream, self.batch, self.example, self.blocks, self.calls = stream, batch, 0, [], 0

    def __getattr__(self, name):
        method = getattr(self.stream, name)
        if name not in self._SIZE_AT:
            return method
        return functools.partial(self._draw, name)

    def _draw(self, name, *args, **kwargs):
        at = self._SIZE_AT[name]
        args = list(args)
        size = kwargs.pop("size") if "size" in kwargs else args.pop(at) if len(args) > at else None
        spread = name == "normal" and (xp.ndim(_arg(args, kwargs, 0, "loc", 0.0)) or
                                       xp.ndim(_arg(args, kwargs, 1, "scale", 1.0)))
        if spread:  # normal(mean_tensor, std_tensor): standard normals of the batch, then each example's
            loc, scale = _arg(args, kwargs, 0, "loc", 0.0), _arg(args, kwargs, 1, "scale", 1.0)
            dtype = _arg(args, kwargs, 3, "dtype", xp.float64)
            size = size if size is not None else xp.broadcast_shapes(xp.shape(loc), xp.shape(scale))
            args, kwargs = [0.0, 1.0], {"dtype": dtype}
        shape = () if size is None else tuple(size) if isinstance(size, (tuple, list)) else (int(size),)
        if self.example == 0:
            args.insert(at, (self.batch, *shape))
            self.blocks.append(getattr(self.stream, name)(*args, **kwargs))
        elif self.calls >= len(self.blocks) or self.blocks[self.calls].shape[1:] != shape:
            raise RuntimeError("vmap: randomness='different' draws each random op for the whole batch at once, so "
                               "every example must make the same random calls, of the same shapes")
        row = self.blocks[self.calls][self.example]
        self.calls += 1
        if spread:
            return (row * xp.asarray(scale, dtype)).astype(dtype) + xp.asarray(loc, dtype)
        return row


def _arg(args, kwargs, index, name, default):
    """A draw's argument, positional or by keyword."""
    return args[index] if len(args) > index else kwargs.get(name, default)


def _select(tree, dims, index):
    """Example ``index`` of each batched tensor of the tree (index None, for an empty batch: zeros of
    an example's shape, still on the tensor's graph: the sum over its empty batch dim)."""
    leaves, spec = tree_flatten(tree)
    return tree_unflatten([leaf if dim is None else leaf.sum(dim) if index is None else leaf.select(dim, index)
                           for leaf, dim in zip(leaves, dims)], spec)


def _stack_results(results, out_dims, name="f", empty=False):
    """Each output stacked over the examples along its out_dim (with ``empty``, ``results`` holds the
    one call made for an empty batch, and each batched output gets a batch dim of size 0)."""
    flat = [tree_flatten(r) for r in results]
    spec = flat[0][1]
    if isinstance(results[0], Tensor) and isinstance(out_dims, tuple) and len(out_dims) == 1:
        dims = out_dims  # (one output, its dim in a 1-tuple: PyTorch accepts it)
    else:  # an int or None for every output, or a tree shaped like a prefix of the output's (as in_dims)
        dims = _broadcast_to_and_flatten(out_dims, spec)
        if dims is None:
            raise ValueError(f"vmap({name}, ..., out_dims={out_dims})(<inputs>): out_dims is not compatible with "
                             f"the structure of `outputs`. out_dims has structure {tree_structure(out_dims)} but "
                             f"outputs has structure {spec}.")
    stacked = []
    for k, dim in enumerate(dims):
        column = [leaves[k] for leaves, _ in flat]
        if dim is None:
            if any(not _same_value(c, column[0]) for c in column[1:]):
                raise ValueError(f"vmap({name}, ...): `{name}` can not return a BatchedTensor when out_dim is None "
                                 f"(output {k} differs from one example to the next)")
            stacked.append(column[0])
            continue
        if not all(isinstance(c, Tensor) for c in column):
            raise ValueError(f"vmap({name}, ...): `{name}` must only return Tensors, got type {type(column[0])}. "
                             "Did you mean to set out_dims= to None for output?")
        if empty:
            stacked.append(column[0].unsqueeze(dim)[(slice(None),) * (dim % (column[0].ndim + 1)) + (slice(0, 0),)])
            continue
        shared = _one_view(column, dim)
        stacked.append(stack(column, dim=dim) if shared is None else shared)
    return tree_unflatten(stacked, spec)


def _one_view(column, dim):
    """The examples' outputs as one view, batched at ``dim``, of the memory they show, where they are views of
    one tensor evenly spaced in it (func returned its example, or a view of it: PyTorch's vmap then returns a
    view of the input, so writing into the result writes into the input); None otherwise, and where they
    require grad (the memory's owner may not be on their graph: the stack's gradient is the same)."""
    first = column[0]
    root = first if first._base is None else first._base
    if any(c.requires_grad or (c if c._base is None else c._base) is not root or c.shape != first.shape
           or c.stride() != first.stride() for c in column):
        return None
    offsets = [c.storage_offset() for c in column]
    step = offsets[1] - offsets[0] if len(offsets) > 1 else 1
    if step <= 0 or any(later - earlier != step for earlier, later in zip(offsets, offsets[1:])):
        return None
    size, stride = list(first.shape), list(first.stride())
    size.insert(dim % (first.ndim + 1), len(column))
    stride.insert(dim % (first.ndim + 1), step)
    return root.as_strided(size, stride, offsets[0])


def _same_value(a, b):
    """Whether two examples' outputs for an out_dim of None are one value (anything, or tensors)."""
    if a is b:
        return True
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(
            xp.array_equal(a._data, b._data, equal_nan=a.dtype.kind in "fc"))
    return not isinstance(a, Tensor) and not isinstance(b, Tensor) and a == b

