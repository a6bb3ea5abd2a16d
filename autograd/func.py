"""Function transforms, PyTorch's ``torch.func``: ``grad``, ``grad_and_value``, ``vjp``, ``jacrev``,
``jacfwd``, ``hessian``, ``vmap``, ``functional_call``, ``stack_module_state``, ``functionalize``.

A transform takes a function of tensors and returns another function:

    grad(f)(x)          ∇f(x) for a scalar f            (one backward pass)
    vjp(f, x)           (f(x), v ↦ vᵀ J)                (backward passes on demand)
    jvp(f, (x,), (v,))  (f(x), J v)                     (the double-backward trick, below)
    jacrev(f)(x)        J, shaped f(x).shape + x.shape  (one backward pass per output element)
    hessian(f)(x)       jacrev(jacrev(f))(x)            (double backward)
    vmap(f)(xs)         stack(f(x) for x in xs)          (here: a loop, see vmap)

They are built on the reverse-mode engine: each call differentiates with respect to fresh
graph roots standing for its arguments, so the arguments need not require grad and
``.grad`` is never touched. Transforms compose (``jacrev(jacrev(f))``, ``vmap(grad(f))``):
when an argument already requires grad (an outer transform's root, or the user's own
tensor) or the function reads another tensor that requires grad (a closure), the
derivative is recorded (create_graph) so that the outer level can differentiate it in turn.
The caller's grad mode is respected as in PyTorch: under no_grad or inference_mode a transform
still records its own graph, but its results are not recorded for the caller.

Arguments may be pytrees: a Tensor, or tuples, lists and dicts of them (``grad`` of a loss
with respect to a dict of parameters, as ``functional_call`` takes them). There is no
forward mode here: ``jacfwd`` gives the same Jacobian as ``jacrev``, computed in reverse, and
``jvp`` uses the double-backward trick: g(u) = uᵀ J is linear in u, so J v = ∂(g(u) · v)/∂u.
"""

import contextlib
import functools
import threading
import weakref

from .backend import xp
from .factories import zeros_like
from .grad_mode import inference_mode, is_grad_enabled
from .ops.shape import stack
from .tensor import Tensor

__all__ = ["grad", "grad_and_value", "vjp", "jvp", "linearize", "jacrev", "jacfwd", "hessian", "vmap",
           "functional_call", "stack_module_state", "replace_all_batch_norm_modules_", "functionalize"]


# -- pytrees: a Tensor, or tuples, lists and dicts of pytrees ---------------------------------------------

def tree_flatten(tree):
    """(the leaves in order, a spec to rebuild the tree with other leaves)."""
    if isinstance(tree, (tuple, list)):
        pairs = [tree_flatten(item) for item in tree]
        return [leaf for leaves, _ in pairs for leaf in leaves], (type(tree), [spec for _, spec in pairs])
    if isinstance(tree, dict):
        pairs = [tree_flatten(item) for item in tree.values()]
        return [leaf for leaves, _ in pairs for leaf in leaves], (dict, (list(tree), [spec for _, spec in pairs]))
    return [tree], None


def tree_unflatten(leaves, spec):
    leaves = iter(leaves)
    return _rebuild(leaves, spec)


def _rebuild(leaves, spec):
    if spec is None:
        return next(leaves)
    kind, children = spec
    if kind is dict:
        keys, specs = children
        return {key: _rebuild(leaves, s) for key, s in zip(keys, specs)}
    items = [_rebuild(leaves, s) for s in children]
    return kind(items) if kind is list else tuple(items) if kind is tuple else kind(*items)


def _leaf_count(spec):
    if spec is None:
        return 1
    kind, children = spec
    return sum(_leaf_count(s) for s in (children[1] if kind is dict else children))


# -- differentiating with respect to fresh roots -------------------------------------------------------

# The fresh leaves the transforms differentiate with respect to ({id: tensor}, weakly held), and
# the ids of those whose transform is still running its function, per thread. A finished
# transform's leaf reached by an outer level is private to it: nothing outside differentiates it.
_fresh_roots = weakref.WeakValueDictionary()
_running = threading.local()


@contextlib.contextmanager
def _running_with(roots):
    active = _running.__dict__.setdefault("ids", set())
    ids = {id(r) for r in roots} - active
    active |= ids
    try:
        yield
    finally:
        active -= ids


def _root(x, name):
    if not isinstance(x, Tensor):
        raise TypeError(f"{name}: expected the arguments to differentiate to be Tensors (or tuples, lists and "
                        f"dicts of them), got {type(x).__name__}")
    if x.dtype.kind not in "fc":
        if name in ("jacfwd", "jvp(f, primals, tangents)"):  # (forward mode's primals: PyTorch's jvp's refusal)
            raise ValueError(f"{name}: Expected primal to be floating point or complex, but got: {x.dtype}")
        raise RuntimeError(f"{name}: only Tensors of floating point dtype can require gradients, got {x.dtype}")
    if x.requires_grad:
        return x.view_as(x)
    # (an inference tensor, made under the caller's inference_mode, cannot require grad: a normal copy can)
    root = (x.clone() if x.is_inference() else x).detach().requires_grad_()
    _fresh_roots[id(root)] = root
    return root


def _recording():
    """Record the transform's own graph whatever the caller's mode (no_grad, inference_mode): the
    caller's mode decides only whether the results are recorded for the caller, as in PyTorch."""
    return inference_mode(False)


def _reaches_outer_graph(originals, outputs, roots):
    """Whether the derivative must be recorded for an outer level (where the caller records): an
    argument requires grad, or the outputs reach a leaf that requires grad other than the fresh roots
    (a closed-over tensor; the fresh leaf of a running transform counts, that of a finished one does
    not)."""
    if any(isinstance(x, Tensor) and x.requires_grad for x in originals):
        return True
    own = {id(r) for r in roots}
    stack_, seen = [y.grad_fn for y in outputs if isinstance(y, Tensor) and y.grad_fn is not None], set()
    while stack_:
        node = stack_.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        try:  # every engine node lists its parents: a node, a leaf tensor, or None
            parents = list(node.parents)
        except (AttributeError, RuntimeError):  # not a node we know, or a freed graph: record, to be safe
            return True
        for parent in parents:
            if isinstance(parent, Tensor):
                if parent.requires_grad and id(parent) not in own and (
                        _fresh_roots.get(id(parent)) is not parent or id(parent) in _running.__dict__.get("ids", ())):
                    return True
            elif parent is not None:
                stack_.append(parent)
    return False


def _backward(outputs, roots, cotangents, create_graph, retain_graph):
    """vᵀ J for each root (zeros where the outputs do not depend on it)."""
    from .autograd import grad as autograd_grad

    pairs = [(y, v) for y, v in zip(outputs, cotangents) if y.requires_grad]
    if not pairs:
        grads = [None] * len(roots)
    else:
        grads = autograd_grad([y for y, _ in pairs], roots, [v for _, v in pairs], retain_graph=retain_graph,
                              create_graph=create_graph, allow_unused=True)
    return [zeros_like(r) if g is None else g if create_graph else g.detach() for g, r in zip(grads, roots)]


def _argnums_tuple(argnums, count, name):
    if not isinstance(argnums, (int, tuple)):  # (a bool is an int here, as in PyTorch)
        raise RuntimeError(f"{name}: argnums must be int or Tuple[int, ...], got: {type(argnums)}")
    numbers = argnums if isinstance(argnums, tuple) else (argnums,)
    if not numbers:
        raise RuntimeError(f"{name}: argnums must be non-empty")
    for n in numbers:
        if not isinstance(n, int):
            raise RuntimeError(f"{name}: argnum must be int, got: {type(n)}")
        if not -count <= n < count:
            raise RuntimeError(f"Got argnums={argnums}, but only {count} positional inputs")
    numbers = tuple(n % count for n in numbers)
    if len(set(numbers)) != len(numbers):
        raise RuntimeError(f"argnums elements must be unique, got {numbers}")
    return numbers


def _with_roots(args, argnums, name):
    """The args with the differentiated ones replaced by trees of fresh roots; (new args, the
    differentiated trees as given, their roots flat, the spec of the argnums tree)."""
    numbers = _argnums_tuple(argnums, len(args), name)
    args = list(args)
    chosen = tuple(args[n] for n in numbers) if isinstance(argnums, tuple) else args[numbers[0]]
    leaves, spec = tree_flatten(chosen)
    roots = [_root(x, name) for x in leaves]
    rooted = tree_unflatten(roots, spec)
    for i, n in enumerate(numbers):
        args[n] = rooted[i] if isinstance(argnums, tuple) else rooted
    return args, leaves, roots, spec


def _call_on_roots(func, args, kwargs, argnums, has_aux, name, aux_name=None):
    """f(*args, **kwargs) with the differentiated arguments replaced by fresh roots (``_with_roots``):
    (output, aux, the differentiated trees as given, their roots flat, the spec of the argnums tree).
    ``aux_name`` names the call in has_aux's message where it is not ``name`` (jacrev's is vjp's)."""
    args, originals, roots, spec = _with_roots(args, argnums, name)
    with _running_with(roots):
        output, aux = _split_aux(func(*args, **kwargs), has_aux, aux_name or name)
    return output, aux, originals, roots, spec


def _split_aux(result, has_aux, name):
    """(output, aux) of f's result; ``name`` is how PyTorch's messages name the call, e.g. 'vjp(f, *primals)'."""
    if not has_aux:
        return result, None
    if not (isinstance(result, tuple) and len(result) == 2):
        raise RuntimeError(f"{name}: output of function f should be a tuple: (output, aux) if has_aux is True")
    for leaf in tree_flatten(result[1])[0]:
        if not isinstance(leaf, Tensor):  # (aux is returned detached from the transform: tensors only)
            raise RuntimeError(f"Expected tensors, got unsupported type {type(leaf)}")
    return result


def _output_tensors(output, name):
    """The tensors of f's output (a non-empty pytree of tensors), flat, and its spec. ``name``: the
    call as PyTorch's messages name it ('vjp(f, *primals)'; jacrev's and jacfwd's are vjp's and jvp's)."""
    leaves, spec = tree_flatten(output)
    if output is None or not leaves:
        raise RuntimeError(f"{name}: Expected f to be a function that has non-empty output (got output = "
                           f"{[] if output == () else [output]})")
    for y in leaves:
        if not isinstance(y, Tensor):
            raise RuntimeError(f"{name}: expected f(*primals) to return only tensors, got unsupported type {type(y)}")
    return leaves, spec


def _detached(tree):
    leaves, spec = tree_flatten(tree)
    return tree_unflatten([x.detach() if isinstance(x, Tensor) else x for x in leaves], spec)


# -- the transforms --------------------------------------------------------------------------------------

def grad_and_value(func, argnums=0, has_aux=False):
    """A function returning (∇f, f) at its arguments (``(∇f, (f, aux))`` with has_aux); f must return a
    scalar Tensor. The gradient has the structure of ``args[argnums]`` (a tuple for a tuple argnums)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        caller_records = is_grad_enabled()
        with _recording():
            output, aux, originals, roots, spec = _call_on_roots(func, args, kwargs, argnums, has_aux,
                                                                 "grad_and_value(f)(*args)")
            if not isinstance(output, Tensor):
                raise RuntimeError(f"grad_and_value(f)(*args): Expected f(*args) to return a Tensor, got "
                                   f"{type(output)}")
            if output.ndim != 0:
                raise RuntimeError(f"grad_and_value(f)(*args): Expected f(*args) to return a scalar Tensor, got "
                                   f"tensor with {output.ndim} dims. Maybe you wanted to use the vjp or jacrev "
                                   "APIs instead?")
            nested = caller_records and _reaches_outer_graph(originals, [output], roots)
            grads = _backward([output], roots, [None], create_graph=nested, retain_graph=nested)
        gradient = tree_unflatten(grads, spec)
        value = output if nested else output.detach()
        if has_aux:
            return gradient, (value, aux if nested else _detached(aux))
        return gradient, value

    return wrapper


def grad(func, argnums=0, has_aux=False):
    """A function returning ∇f at its arguments (``(∇f, aux)`` with has_aux): f must return a scalar.
    ``grad(f)(x)`` is PyTorch's ``torch.func.grad``: the gradient with respect to ``args[argnums]``."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        gradient, value = grad_and_value(func, argnums, has_aux)(*args, **kwargs)
        return (gradient, value[1]) if has_aux else gradient

    return wrapper


def vjp(func, *primals, has_aux=False):
    """(func(*primals), vjp_fn) [, aux]: ``vjp_fn(cotangents)`` (shaped like the output) returns vᵀ J
    for every primal, as a tuple with one entry per primal; it may be called more than once. The
    output is recorded for the caller where the caller's mode records; vjp_fn's result where the
    mode at its own call records (and the primals or the cotangents require grad)."""
    caller_records = is_grad_enabled()
    with _recording():
        leaves, spec = tree_flatten(tuple(primals))
        roots = [_root(x, "vjp(f, *primals)") for x in leaves]
        with _running_with(roots):
            output, aux = _split_aux(func(*tree_unflatten(roots, spec)), has_aux, "vjp(f, *primals)")
        out_leaves, out_spec = _output_tensors(output, "vjp(f, *primals)")
        reaches = _reaches_outer_graph(leaves, out_leaves, roots)

    def vjp_fn(cotangents, *, retain_graph=True, create_graph=None):
        v_leaves, v_spec = tree_flatten(cotangents)
        if v_spec != out_spec:
            raise RuntimeError(f"Expected pytree structure of cotangents to be the same as pytree structure of "
                               f"outputs to the function. cotangents: {_spec_str(v_spec)}, primal output: "
                               f"{_spec_str(out_spec)}")
        for i, (v, y) in enumerate(zip(v_leaves, out_leaves)):
            if not isinstance(v, Tensor):
                raise RuntimeError(f"Expected cotangents to only contain Tensors, got {type(v)}")
            if v.shape != y.shape:
                raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {tuple(v.shape)} and "
                                   f"output[{i}] has a shape of {tuple(y.shape)}.")
        record = (is_grad_enabled() and (reaches or any(v.requires_grad for v in v_leaves))
                  if create_graph is None else create_graph)
        with _recording():
            grads = _backward(out_leaves, roots, v_leaves, create_graph=record, retain_graph=retain_graph)
        return tree_unflatten(grads, spec)

    nested = caller_records and reaches
    result = output if nested else _detached(output)
    if has_aux:
        return result, vjp_fn, aux if nested else _detached(aux)
    return result, vjp_fn


def _spec_str(spec):
    """A pytree's structure as PyTorch's messages write it: ``(*, [*, *], {'a': *})``."""
    if spec is None:
        return "*"
    kind, children = spec
    if kind is dict:
        keys, specs = children
        return "{" + ", ".join(f"{key!r}: {_spec_str(s)}" for key, s in zip(keys, specs)) + "}"
    inner = ", ".join(_spec_str(s) for s in children)
    return f"[{inner}]" if kind is list else f"({inner}{',' if len(children) == 1 else ''})"


def jvp(func, primals, tangents, *, strict=False, has_aux=False):
    """(func(*primals), J v) [, aux] with v = ``tangents`` (shaped like ``primals``, both tuples): the
    directional derivative of func along v, by the double-backward trick (see the module's docstring).
    ``strict``: refuse an output that does not depend on the primals (PyTorch gives it a zero tangent
    otherwise)."""
    name = "jvp(f, primals, tangents)"
    if not isinstance(primals, tuple):
        raise RuntimeError(f"{name}: Expected primals and tangents to be tuples: primals is a "
                           f"{type(primals).__name__}, but it must be a tuple. E.g. it should be valid to call "
                           "f(*primals).")
    leaves, spec = tree_flatten(primals)
    v_leaves, v_spec = tree_flatten(tangents)
    if v_spec != spec:
        raise RuntimeError(f"{name}: Expected primals and tangents to have the same python structure. For example, "
                           "if primals is a tuple of 3 tensors, tangents also must be. Got primals with structure "
                           f"{_spec_str(spec)} and tangents with structure {_spec_str(v_spec)}")
    if not leaves:
        raise RuntimeError(f"{name}: Expected primals to contain at least one Tensor.")
    for role, trees in (("primals", leaves), ("tangents", v_leaves)):
        for x in trees:
            if not isinstance(x, Tensor):
                raise RuntimeError(f"{name}: Expected {role} to only contain Tensors, got {type(x)}")
    for x, v in zip(leaves, v_leaves):
        if x.shape != v.shape:
            raise RuntimeError(f"{name}: Expected primals and tangents to have the same shapes, got "
                               f"{tuple(x.shape)} and {tuple(v.shape)}")
    caller_records = is_grad_enabled()
    with _recording():
        roots = [_root(x, name) for x in leaves]
        with _running_with(roots):
            output, aux = _split_aux(func(*tree_unflatten(roots, spec)), has_aux, name)
        out_leaves, out_spec = _output_tensors(output, name)
        if strict and not all(y.requires_grad for y in out_leaves):
            raise RuntimeError("jvp(f, primals, tangents, strict=True): The output of f is independent of the "
                               "inputs. This is not allowed with strict=True.")
        # J v is recorded for the caller where the primals' graph reaches it or v itself requires grad
        nested = caller_records and (_reaches_outer_graph(leaves, out_leaves, roots)
                                     or any(v.requires_grad for v in v_leaves))
        dummies = [zeros_like(y).requires_grad_() for y in out_leaves]  # u: g(u) = uᵀ J
        pulled = _backward(out_leaves, roots, dummies, create_graph=True, retain_graph=True)
        pairs = [(g, v) for g, v in zip(pulled, v_leaves) if g.requires_grad]
        pushed = (_backward([g for g, _ in pairs], dummies, [v for _, v in pairs], create_graph=nested,
                            retain_graph=nested) if pairs else [zeros_like(y) for y in out_leaves])
    result = (output if nested else _detached(output), tree_unflatten(pushed, out_spec))
    return result + ((aux if nested else _detached(aux)),) if has_aux else result


def linearize(func, *primals):
    """(func(*primals), jvp_fn): ``jvp_fn(*tangents)`` is J v at the primals, for any number of calls
    (each one is a jvp here; PyTorch's records the linear map once). The tangents must be shaped like
    the primals: the same structure, shapes and dtypes."""
    output = _detached(func(*primals))
    leaves, spec = tree_flatten(primals)

    def jvp_fn(*tangents):
        v_leaves, v_spec = tree_flatten(tangents)
        if v_spec != spec:
            raise RuntimeError(f"Expected the tangents {_spec_str(v_spec)} to have the same argspec as the primals "
                               f"{_spec_str(spec)}")
        for i, (x, v) in enumerate(zip(leaves, v_leaves)):
            for attribute in ("shape", "dtype"):
                if getattr(v, attribute) != getattr(x, attribute):
                    raise RuntimeError(f"tangent:{i} with {attribute} {getattr(v, attribute)} in flattened pytree "
                                       f"doesn't match the {attribute} {getattr(x, attribute)} of the corresponding "
                                       "primal.")
        return jvp(func, primals, tangents)[1]

    return output, jvp_fn


def jacrev(func, argnums=0, *, has_aux=False, chunk_size=None, _preallocate_and_copy=False):
    """A function returning the Jacobian of f at its arguments, one backward pass per output element:
    J[i..., j...] = ∂f(x)[i...] / ∂x[j...], shaped f(x).shape + x.shape. For several outputs or a
    tuple argnums (or pytree arguments) the result nests as output structure, then argument structure.
    ``chunk_size`` (how many rows PyTorch batches) changes nothing here but must be positive."""
    if chunk_size is not None and not (isinstance(chunk_size, int) and chunk_size > 0):
        raise ValueError("jacrev: `chunk_size` should be greater than 0.")
    return _jacobian(func, argnums, has_aux, "jacrev")


def jacfwd(func, argnums=0, has_aux=False, *, randomness="error"):
    """The Jacobian, as PyTorch's forward-mode ``jacfwd`` gives it (same values and layout); computed
    here in reverse mode (as ``jacrev``), which composes with the other transforms (forward mode,
    ``autograd.autograd.forward_ad``, has one level and does not nest)."""
    return _jacobian(func, argnums, has_aux, "jacfwd")


def _jacobian(func, argnums, has_aux, transform):
    """jacrev's and jacfwd's Jacobian; ``transform`` names which, in the messages (PyTorch's come from the
    vjp or the jvp that each is built on)."""
    inner = "vjp(f, *primals)" if transform == "jacrev" else "jvp(f, primals, tangents)"

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        caller_records = is_grad_enabled()
        with _recording():
            output, aux, originals, roots, spec = _call_on_roots(func, args, kwargs, argnums, has_aux, transform, inner)
            for i, x in enumerate(originals):
                if x.dtype.kind == "c":  # a complex Jacobian is not what either transform computes
                    raise RuntimeError(f"{transform}: Expected all inputs to be real but received complex tensor "
                                       f"at flattened input idx: {i}")
            out_leaves, out_spec = _output_tensors(output, inner)
            for i, y in enumerate(out_leaves):
                if y.dtype.kind == "c":
                    raise RuntimeError(f"{transform}: Expected all outputs to be real but received complex tensor "
                                       f"at flattened input idx: {i}")
            nested = caller_records and _reaches_outer_graph(originals, out_leaves, roots)
            per_output = []
            for k, y in enumerate(out_leaves):
                rows = []
                for i in range(y.numel()):
                    seed = zeros_like(y).reshape(-1)
                    seed[i] = 1
                    cotangents = [seed.reshape(y.shape) if j == k else zeros_like(other)
                                  for j, other in enumerate(out_leaves)]
                    rows.append(_backward(out_leaves, roots, cotangents, create_graph=nested, retain_graph=True))
                jacobians = [(stack([row[r] for row in rows]) if rows else zeros_like(root).reshape(0, *root.shape))
                             .reshape(*y.shape, *root.shape) for r, root in enumerate(roots)]
                per_output.append(tree_unflatten(jacobians, spec))
        jacobian = tree_unflatten(per_output, out_spec)
        if has_aux:
            return jacobian, aux if nested else _detached(aux)
        return jacobian

    return wrapper


def hessian(func, argnums=0):
    """A function returning the Hessian of a scalar f: H[i..., j...] = ∂²f / ∂x[i...] ∂x[j...], the
    Jacobian of the gradient (``jacrev(jacrev(f))``; PyTorch's is forward over reverse, same values)."""
    return jacrev(jacrev(func, argnums), argnums)


def vmap(func, in_dims=0, out_dims=0, randomness="error", *, chunk_size=None):
    """``func`` mapped over a batch dimension: vmap(f)(xs) = stack([f(x) for x in xs]).

    ``in_dims``: an int or None for every positional argument, or a tuple with one entry per
    argument, each an int, None (not batched: passed whole to every call) or a tree of them shaped
    like that argument (``({"a": 0, "b": None},)`` for a dict argument); ``out_dims``: where the
    batch dimension goes in each output (None: the output is not batched, and must be the same
    for every example). This implementation loops over the batch in Python and stacks the
    results: PyTorch's vmap runs the batch through batched kernels instead, so the values are the
    same but the cost is one call of ``func`` per example. ``randomness``: 'error' refuses a draw
    from the default generator inside ``func`` (as PyTorch's refuses any random op), 'different'
    draws fresh numbers in each call, 'same' replays the generator's state for every call, so
    each sees the same numbers. ``chunk_size`` changes nothing here.
    """
    if randomness not in ("error", "different", "same"):
        raise RuntimeError(f"Only allowed values for randomness are 'error', 'different', or 'same'. Got "
                           f"{randomness}")

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        name = getattr(func, "__name__", "f")
        if not (in_dims is None or isinstance(in_dims, (int, tuple))):
            raise ValueError(f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): expected `in_dims` to be int or a "
                             f"(potentially nested) tuple matching the structure of inputs, got: {type(in_dims)}.")
        dims = in_dims if isinstance(in_dims, tuple) else (in_dims,) * len(args)
        if len(dims) != len(args):
            raise ValueError(f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): in_dims is not compatible with "
                             f"the structure of `inputs`. in_dims has structure with {len(dims)} entries but "
                             f"inputs has {len(args)}.")
        leaf_dims = [_dims_of_leaves(dim, arg, name, in_dims) for arg, dim in zip(args, dims)]
        sizes = set()
        for arg, arg_dims in zip(args, leaf_dims):
            for leaf, dim in zip(tree_flatten(arg)[0], arg_dims):
                if dim is None:
                    continue
                if not isinstance(leaf, Tensor):
                    raise ValueError(f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): Got in_dim={dim} for an "
                                     f"input but the input is of type {type(leaf)}. We cannot vmap over non-Tensor "
                                     "arguments")
                if not -leaf.ndim <= dim < leaf.ndim:
                    raise ValueError(f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): Got in_dim={dim} for some "
                                     f"input, but that input is a Tensor of dimensionality {leaf.ndim} so expected "
                                     f"in_dim to satisfy -{leaf.ndim} <= in_dim < {leaf.ndim}.")
                sizes.add(leaf.shape[dim])
        if not sizes:
            raise ValueError(f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): at least one input must be batched")
        if len(sizes) > 1:
            raise ValueError(f"vmap: Expected all tensors to have the same size in the mapped dimension, got sizes "
                             f"{sorted(sizes)} for the mapped dimension")
        (batch,) = sizes
        state = None
        if randomness == "same":
            from .random import get_rng_state

            state = get_rng_state()
        if batch == 0:  # no example to loop over: f runs once, as PyTorch's does, on one made of zeros
            call_args = [_select(arg, arg_dims, None) for arg, arg_dims in zip(args, leaf_dims)]
            return _stack_results([func(*call_args, **kwargs)], out_dims, name, empty=True)
        results = []
        for b in range(batch):
            if state is not None:
                from .random import set_rng_state

                set_rng_state(state)
            call_args = [_select(arg, arg_dims, b) for arg, arg_dims in zip(args, leaf_dims)]
            if randomness == "error":
                before = _default_draws()
                results.append(func(*call_args, **kwargs))
                if _default_draws() != before:
                    raise RuntimeError("vmap: called random operation while in randomness error mode. Please "
                                       "either use the 'same' or 'different' randomness flags on vmap or perform "
                                       "the randomness operation out of vmap")
            else:
                results.append(func(*call_args, **kwargs))
        return _stack_results(results, out_dims, name)

    return wrapper


def _dims_of_leaves(dims, arg, name, in_dims):
    """The batch dim of each tensor of the argument ``arg``, from its entry of in_dims: an int or
    None for all of them, or a tree shaped like ``arg`` (PyTorch's in_dims are such prefixes)."""
    if dims is None or isinstance(dims, int):
        return [dims] * len(tree_flatten(arg)[0])
    same_kind = (isinstance(dims, dict) and isinstance(arg, dict) and set(dims) == set(arg)) or (
        isinstance(dims, (tuple, list)) and isinstance(arg, (tuple, list)) and len(dims) == len(arg))
    if not same_kind:
        raise ValueError(f"vmap({name}, in_dims={in_dims}, ...)(<inputs>): in_dims is not compatible with the "
                         f"structure of `inputs`: an entry {dims!r} stands for an input of type "
                         f"{type(arg).__name__}")
    if isinstance(arg, dict):
        return [d for key in arg for d in _dims_of_leaves(dims[key], arg[key], name, in_dims)]
    return [d for sub_dims, sub in zip(dims, arg) for d in _dims_of_leaves(sub_dims, sub, name, in_dims)]


def _default_draws():
    """Where the default generator stands (to tell whether a call drew from it)."""
    from .random import default_generator

    made = default_generator._numpy  # (None until the first draw)
    return None if made is None else made.bit_generator.state


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
    count = len(flat[0][0])
    dims = out_dims if isinstance(out_dims, (tuple, list)) else (out_dims,) * count
    if len(dims) != count:
        raise ValueError(f"vmap({name}, ..., out_dims={out_dims})(<inputs>): out_dims is not compatible with the "
                         f"structure of `outputs`. out_dims has structure with {len(dims)} entries but outputs has "
                         f"{count}.")
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
        stacked.append(column[0].unsqueeze(dim)[(slice(None),) * (dim % (column[0].ndim + 1)) + (slice(0, 0),)]
                       if empty else stack(column, dim=dim))
    return tree_unflatten(stacked, spec)


def _same_value(a, b):
    """Whether two examples' outputs for an out_dim of None are one value (anything, or tensors)."""
    if a is b:
        return True
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        return a.shape == b.shape and a.dtype == b.dtype and bool(
            xp.array_equal(a._data, b._data, equal_nan=a.dtype.kind in "fc"))
    return not isinstance(a, Tensor) and not isinstance(b, Tensor) and a == b


def functional_call(module, parameter_and_buffer_dicts, args=None, kwargs=None, *, tie_weights=True, strict=False):
    """``module(*args, **kwargs)`` with the given tensors ({dotted name: tensor}, or a tuple of such
    dicts) in place of its parameters and buffers; the module's own are put back after. The output is
    a function of the tensors given, so ``grad(lambda p: loss(functional_call(model, p, x)))(params)``
    differentiates with respect to ``params``. ``module`` is an ``nn.Module`` (the swap itself is
    nn's: ``nn.utils.stateless``, reached through the module, as autograd does not import nn)."""
    if isinstance(parameter_and_buffer_dicts, dict):
        tensors = parameter_and_buffer_dicts
    elif isinstance(parameter_and_buffer_dicts, (tuple, list)):
        keys = [key for d in parameter_and_buffer_dicts for key in d]
        repeated = sorted({key for key in keys if keys.count(key) > 1})
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


def functionalize(func, *, remove="mutations"):
    """PyTorch's ``torch.func.functionalize``: a function with ``func``'s semantics whose outputs never
    alias its inputs. PyTorch rewrites the program without its in-place ops (for compilers) and copies
    any change of an input back to it; in eager execution the values, the gradients and the inputs'
    changes are those of running ``func`` itself, so that is what runs here, and an output that shares
    memory with an input (a view of it) is returned as a copy, as PyTorch's is."""
    if remove not in ("mutations", "mutations_and_views"):
        raise RuntimeError(
            f"functionalize(f, remove='mutations'): received invalid argument for remove={remove}. Valid options "
            "are:\n     remove='mutations': all inplace and out= operators will be removed from the program, and "
            "replaced with their out-of-place equivalents.\n     remove='mutations_and_views': In addition to the "
            "above, all aliasing operators {view} will be replaced with their non-aliasing counterparts, "
            "{view}_copy.\n")

    @functools.wraps(func)
    def functionalized(*args, **kwargs):
        inputs = [x._data for x in tree_flatten((args, kwargs))[0] if isinstance(x, Tensor)]
        leaves, spec = tree_flatten(func(*args, **kwargs))
        return tree_unflatten([x.clone() if isinstance(x, Tensor) and any(xp.may_share_memory(x._data, i)
                                                                          for i in inputs) else x
                               for x in leaves], spec)

    return functionalized
