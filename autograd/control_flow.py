"""``autograd.cond``, ``autograd.while_loop`` and ``scan`` (``autograd._higher_order_ops.scan.scan``, where
PyTorch keeps its prototype): PyTorch's control-flow operators, run eagerly.

    cond(pred, true_fn, false_fn, operands)   true_fn(*operands) if pred else false_fn(*operands)
    while_loop(cond_fn, body_fn, carried)     while cond_fn(*carried): carried = body_fn(*carried)
    scan(combine_fn, init, xs, dim=0)         for each slice x_t of xs along dim: carry, y_t = combine_fn(carry, x_t);
                                              (the last carry, the y_t stacked along dim)

In PyTorch these exist so that a compiler can keep both branches, or the loop, in one graph
(``torch.compile``, ``torch.export``); called eagerly they compute exactly the lines above. There
is no compiler here, so that is all they do, and the gradient is the one of the code that ran:
the branch taken, the iterations made (each one is recorded as ordinary ops, so backward goes
through them in reverse).

What PyTorch refuses, these refuse too, so that a program that runs here also runs there: a
predicate that is not a bool or a one-element tensor, operands that are not tensors in (nested)
tuples, lists and dicts, a branch or loop body that changes its inputs in place or returns one
of them (or a view of one) as it is, a body whose outputs differ from the carried values in
number, shape or dtype. One thing is not checked: PyTorch compiles both branches of ``cond``
and requires their outputs to agree; here only the branch taken runs (the other may have side
effects), so a disagreement in the branch not taken goes unnoticed.
"""

from .backend import bool_
from .func import tree_flatten, tree_unflatten
from .ops.axes import dim_index
from .ops.joins import stack
from .tensor import Tensor

__all__ = ["cond", "while_loop"]


def cond(pred, true_fn, false_fn, operands=()):
    """``true_fn(*operands)`` if ``pred`` holds, else ``false_fn(*operands)``.

    ``pred``: a Python bool (or number, as PyTorch accepts eagerly) or a one-element tensor.
    ``operands``: a tuple or list of tensors (nested in tuples, lists and dicts allowed), given
    to the branch as its positional arguments. Returns what the branch returns."""
    if isinstance(pred, (bool, int, float)):  # PyTorch's eager case: the branch runs as it is
        return true_fn(*operands) if pred else false_fn(*operands)
    if not isinstance(pred, Tensor):
        raise RuntimeError(f"Expected pred to be bool or tensor, but got {pred}.")
    if pred.numel() != 1:
        raise RuntimeError(f"Expected pred to be bool or single-element tensor, but got {pred}.")
    if not callable(true_fn) or not callable(false_fn):
        raise RuntimeError("Expect both branches to be callable.")
    leaves = tree_flatten(operands)[0] if isinstance(operands, (tuple, list)) else None
    if leaves is None or not all(isinstance(leaf, Tensor) for leaf in leaves):
        raise RuntimeError("Expect operands to be a tuple of possibly nested dict/list/tuple that only "
                           f"consists of tensor leaves, but got {operands}.")
    branch = true_fn if pred.item() else false_fn
    return _run_pure("autograd.cond", branch, operands, leaves)


def while_loop(cond_fn, body_fn, carried_inputs):
    """Run ``carried = body_fn(*carried)`` while ``cond_fn(*carried)`` holds; the last ``carried``.

    ``carried_inputs``: a tuple or list of tensors and ints (nested in tuples, lists and dicts
    allowed). ``cond_fn`` returns a bool or a 0-d bool tensor; ``body_fn`` returns a tuple (or
    list) like ``carried_inputs``: the same structure, each tensor with its shape and dtype.
    When the loop body never runs, the result is a tuple of copies of the inputs (clones, so
    that it never aliases them), as PyTorch's."""
    if not callable(cond_fn) or not callable(body_fn):
        raise RuntimeError("Expect cond_fn and body_fn to be callable.")
    if not isinstance(carried_inputs, (tuple, list)):
        raise RuntimeError(f"carried_inputs must be a tuple or list but got {type(carried_inputs)}")
    leaves, spec = tree_flatten(carried_inputs)
    if not all(isinstance(leaf, (Tensor, int)) for leaf in leaves):
        raise RuntimeError("Expect carried_inputs to be a tuple of possibly nested dict/list/tuple that only "
                           f"consists of tensor or int leaves, but got {carried_inputs}.")
    carried, carried_leaves, ran = carried_inputs, leaves, False
    while _loop_predicate(cond_fn(*carried)):
        out = _run_pure("autograd.while_loop", body_fn, carried, carried_leaves)
        out_leaves = _like_carried(out, carried_inputs, leaves, spec)
        carried, carried_leaves, ran = out, out_leaves, True
    if ran:
        return carried
    clones = [leaf.clone() if isinstance(leaf, Tensor) else leaf for leaf in leaves]
    return tuple(tree_unflatten(clones, spec))


def scan(combine_fn, init, xs, *, dim=0, reverse=False):
    """An inclusive scan: ``carry, y_t = combine_fn(carry, x_t)`` for the slices x_t of ``xs`` along ``dim`` (from
    the last with ``reverse``), starting from ``init``; returns (the last carry, the y_t stacked along ``dim`` in
    the slices' order). ``init`` and ``xs`` are tensors or pytrees of them (each x_t has xs's structure; each carry
    init's, with its shapes and dtypes). ``combine_fn`` must neither write into its inputs nor return one of them
    (or a view of one, or one tensor twice): clone it, as PyTorch requires. No xs leaves: (init, [])."""
    init_leaves, init_spec = tree_flatten(init)
    xs_leaves, xs_spec = tree_flatten(xs)
    if not xs_leaves:
        return init, []
    dim = dim_index(dim, xs_leaves[0].ndim) if isinstance(dim, int) else dim
    if not callable(combine_fn):
        raise RuntimeError(f"Combine_fn must be a callable, but got {combine_fn}")
    if not isinstance(dim, int):
        raise RuntimeError("Dim must be an int, but got " + str(type(dim)))
    if not isinstance(reverse, bool):
        raise RuntimeError("Reverse must be a bool, but got " + str(type(reverse)))
    if not init_leaves:
        raise RuntimeError("scan() operator requires init leaves.")
    for role, leaves in (("init", init_leaves), ("xs", xs_leaves)):
        for leaf in leaves:
            if not isinstance(leaf, Tensor):
                raise RuntimeError(f"All {role} leaves must be a Tensor but got {leaf}")
    if any(x.ndim <= dim or x.shape[dim] == 0 for x in xs_leaves):
        raise RuntimeError("All xs leaves must at least have 'dim' number of dimensions and scan dimension > 0")
    steps = xs_leaves[0].shape[dim]
    carry, ys = init, [None] * steps
    for t in (range(steps - 1, -1, -1) if reverse else range(steps)):
        x = tree_unflatten([leaf.select(dim, t) for leaf in xs_leaves], xs_spec)
        out = _run_pure("scan", combine_fn, (carry, x), tree_flatten(carry)[0] + tree_flatten(x)[0])
        if not isinstance(out, (tuple, list)) or len(out) != 2:
            raise RuntimeError(f"combine_fn must return a tuple (next_carry, y), but got {out}")
        out_leaves = tree_flatten(out)[0]
        if len({id(leaf._version_cell) for leaf in out_leaves if isinstance(leaf, Tensor)}) < len(out_leaves):
            raise RuntimeError("scan: Higher order ops do not support aliasing: combine_fn returns one tensor twice "
                               "(or views of one); clone one of them")
        carry, ys[t] = _like_init(out[0], init_leaves, init_spec), out[1]
    y_leaves, y_spec = tree_flatten(ys[0])
    columns = [tree_flatten(y)[0] for y in ys]
    stacked = [stack([column[k] for column in columns], dim=dim if dim <= leaf.ndim else 0)
               for k, leaf in enumerate(y_leaves)]
    return carry, tree_unflatten(stacked, y_spec)


def _like_init(carry, init_leaves, init_spec):
    """``combine_fn``'s next carry, checked to be like ``init``: its structure, and each tensor's shape and dtype."""
    leaves, spec = tree_flatten(carry)
    if spec != init_spec:
        raise RuntimeError(f"Expected init and carry to have same pytree structure, but got {init_spec} and {spec}")
    for k, (new, old) in enumerate(zip(leaves, init_leaves)):
        for field, a, b in (("shape", new.shape, old.shape), ("dtype", new.dtype, old.dtype)):
            if a != b:
                raise RuntimeError(f"Expected init and carry to have same metadata but found:\npair[{k}] differ in "
                                   f"'{field}: {b} vs {a}'")
    return carry


def _loop_predicate(pred):
    """``cond_fn``'s answer as a Python bool: it must be a bool or a 0-d bool tensor."""
    if isinstance(pred, bool):
        return pred
    if isinstance(pred, Tensor) and pred.shape == () and pred.dtype == bool_:
        return bool(pred.item())
    raise RuntimeError(f"cond_fn must return a boolean scalar tensor or a boolean but got {pred}")


def _run_pure(op, function, arguments, leaves):
    """``function(*arguments)``, refused when it writes into one of the tensors ``leaves`` or
    returns one of them (or a view of one), as PyTorch's higher-order ops refuse both."""
    tensors = [leaf for leaf in leaves if isinstance(leaf, Tensor)]
    versions = [tensor._version_cell[1] for tensor in tensors]
    out = function(*arguments)
    for tensor, version in zip(tensors, versions):
        if tensor._version_cell[1] != version:
            raise RuntimeError(f"{op}: Higher order ops do not support input mutation: the function "
                               f"{getattr(function, '__name__', function)!r} changed one of its inputs (shape "
                               f"{tuple(tensor.shape)}) in place; compute a new tensor instead")
    cells = {id(tensor._version_cell) for tensor in tensors}
    for leaf in tree_flatten(out)[0]:
        if isinstance(leaf, Tensor) and id(leaf._version_cell) in cells:
            raise RuntimeError(f"{op}: Higher order ops do not support aliasing: the function "
                               f"{getattr(function, '__name__', function)!r} returns one of its inputs, or a view "
                               f"of one (shape {tuple(leaf.shape)}); replace `return input` with "
                               "`return input.clone()` to avoid aliasing")
        if not isinstance(leaf, (Tensor, int)):
            raise RuntimeError(f"{op}: the function's output must consist of tensors or ints/bools only but got "
                               f"{type(leaf)}")
    return out


def _like_carried(out, carried_inputs, leaves, spec):
    """The leaves of ``body_fn``'s output ``out``, checked to be like the carried inputs."""
    if not isinstance(out, (tuple, list)):
        raise RuntimeError(f"body_fn should return a tuple but got {type(out)}")
    out_leaves, out_spec = tree_flatten(out)
    if len(out) != len(carried_inputs) or len(out_leaves) != len(leaves) or _shape_of(out_spec) != _shape_of(spec):
        raise RuntimeError(f"Expected body_fn_output and carried_inputs to have same number of outputs but got "
                           f"lhs:{out} and rhs:{carried_inputs}")
    for k, (new, old) in enumerate(zip(out_leaves, leaves)):
        if isinstance(old, Tensor):
            if not isinstance(new, Tensor):
                raise RuntimeError(f"Expected body_fn_output and carried_inputs to have same metadata but found: "
                                   f"pair[{k}] differ: a {type(new).__name__} in place of a tensor")
            for field, a, b in (("shape", new.shape, old.shape), ("dtype", new.dtype, old.dtype)):
                if a != b:
                    raise RuntimeError(f"Expected body_fn_output and carried_inputs to have same metadata but "
                                       f"found: pair[{k}] differ in '{field}: {a} vs {b}'")
        elif isinstance(new, Tensor):
            raise RuntimeError(f"Expected body_fn_output and carried_inputs to have same metadata but found: "
                               f"pair[{k}] differ: a tensor in place of the int {old}")
    return out_leaves


def _shape_of(spec):
    """A pytree spec with tuples and lists alike (a body may give a list for a tuple)."""
    if spec.is_leaf():
        return None
    children = tuple(_shape_of(child) for child in spec.children_specs)
    if spec.type in (tuple, list):
        return "sequence", children
    return spec.type, repr(spec.context), children
