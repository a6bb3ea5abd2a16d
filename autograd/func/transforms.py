"""The differentiating transforms: ``grad``, ``grad_and_value``, ``vjp``, ``jvp``, ``linearize``, ``jacrev``,
``jacfwd``, ``hessian``, each built on the reverse-mode engine by differentiating with respect to fresh graph
roots that stand for its arguments (the package's docstring says how they compose)."""

import contextlib
import functools
import threading
import weakref

from ..differentiate import inside_a_transform
from ..factories import zeros_like
from ..grad_mode import inference_mode, is_grad_enabled
from ..ops.joins import stack
from ..tensor import Tensor
from ..utils._pytree import tree_flatten, tree_unflatten, treespec_pprint

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
    from ..autograd import grad as autograd_grad

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
    with _running_with(roots), inside_a_transform():
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
        if name.startswith("vjp") and y.dtype.kind not in "fc":  # (a jvp's integer output has a zero tangent)
            raise RuntimeError(f"vjp(f, ...): All outputs of f must be floating-point or complex Tensors, got Tensor "
                               f"with dtype {y.dtype}")
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
                               f"outputs to the function. cotangents: {treespec_pprint(v_spec)}, primal output: "
                               f"{treespec_pprint(out_spec)}")
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
                           f"{treespec_pprint(spec)} and tangents with structure {treespec_pprint(v_spec)}")
    if not leaves:
        raise RuntimeError(f"{name}: Expected primals to contain at least one Tensor.")
    for role, trees in (("primals", leaves), ("tangents", v_leaves)):
        for x in trees:
            if not isinstance(x, Tensor):
                raise RuntimeError(f"{name}: Expected {role} to only contain Tensors, got {type(x)}")
    for x, v in zip(leaves, v_leaves):
        if x.dtype.kind in "fc" and v.dtype.kind not in "fc":  # (an integer primal is refused first, by _root)
            raise ValueError(f"Expected tangent to be floating point or complex, but got: {v.dtype}")
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
        # u: g(u) = uᵀ J, over the floating outputs (an integer output, an argmax, has a zero tangent)
        dummies = [zeros_like(y).requires_grad_(y.dtype.kind in "fc") for y in out_leaves]
        pulled = _backward(out_leaves, roots, dummies, create_graph=True, retain_graph=True)
        pairs = [(g, v) for g, v in zip(pulled, v_leaves) if g.requires_grad]
        floating = [u for u in dummies if u.requires_grad]
        pushed_floating = iter(_backward([g for g, _ in pairs], floating, [v for _, v in pairs], create_graph=nested,
                                         retain_graph=nested) if pairs else [zeros_like(u) for u in floating])
        pushed = [next(pushed_floating) if u.requires_grad else zeros_like(u) for u in dummies]
    result = (output if nested else _detached(output), tree_unflatten(pushed, out_spec))
    return result + ((aux if nested else _detached(aux)),) if has_aux else result


def linearize(func, *primals):
    """(func(*primals), jvp_fn): ``jvp_fn(*tangents)`` is J v at the primals, for any number of calls
    (each one is a jvp here; PyTorch's records the linear map once). The tangents must be shaped like
    the primals: the same structure, shapes and dtypes. The output is func's own, in the caller's graph
    (PyTorch's evaluates func once more for it): a loss on it trains what func closed over."""
    output = func(*primals)
    leaves, spec = tree_flatten(primals)

    def jvp_fn(*tangents):
        v_leaves, v_spec = tree_flatten(tangents)
        if v_spec != spec:
            raise RuntimeError(f"Expected the tangents {treespec_pprint(v_spec)} to have the same argspec as the "
                               f"primals {treespec_pprint(spec)}")
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
                if y.dtype.kind not in "fc":  # (jacfwd's integer output: a zero Jacobian of its dtype, as PyTorch's)
                    per_output.append(tree_unflatten([zeros_like(y).reshape(*y.shape, *(1,) * root.ndim)
                                                      .expand(*y.shape, *root.shape).clone() for root in roots], spec))
                    continue
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

