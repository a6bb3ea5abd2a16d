"""Starting a backward pass: ``Tensor.backward`` and ``autograd.grad``."""

import contextlib

from . import dual, engine
from .backend import xp
from .graph import accumulate_grad, modes, set_grad_enabled
from .sparse_layout import is_sparse
from .tensor import Tensor, as_array, tensor_from
from .warn_once import warn_once


def _node(tensor):
    """The graph node behind a tensor: its grad_fn, or the leaf itself."""
    return tensor.grad_fn if tensor.grad_fn is not None else tensor


def as_tuple(tensors):
    """A tensor, or a sequence of them, as a tuple (PyTorch's reading of ``backward``'s and ``grad``'s arguments: a
    number given as a gradient is no sequence, and refused as PyTorch's)."""
    if isinstance(tensors, Tensor) or is_sparse(tensors):  # (a sparse tensor is one tensor, not its rows)
        return (tensors,)
    return tuple(tensors)


def _seed_gradients(outputs, grad_outputs):
    """dL/doutput for each output: ones for a one-element output, else the given tensor."""
    if grad_outputs is None:
        return [_seed(output, None, i) for i, output in enumerate(outputs)]
    seeds = [_seed(output, grad, i) for i, (output, grad) in enumerate(zip(outputs, grad_outputs))]
    if len(grad_outputs) < len(outputs):  # (after the pairs' own checks; extra ones unread, as PyTorch's zip)
        raise RuntimeError(f"got {len(outputs)} tensors and {len(grad_outputs)} gradients")
    return seeds


def _seed(output, grad, i):
    """dL/doutput for output i: ones for a one-element output when ``grad`` is None, else ``grad``."""
    if not output._requires_grad:
        raise RuntimeError(
            f"element {i} of tensors does not require grad and does not have a grad_fn (output {i}, shape "
            f"{tuple(output.shape)}): nothing it depends on requires grad, or it was computed under no_grad()"
        )
    if grad is None:
        data = output._data
        if data.dtype.kind == "c":
            raise RuntimeError(f"grad can be implicitly created only for real scalar outputs (output {i} is "
                               f"{output.dtype}): backward() of a complex loss needs gradient=, or take "
                               ".abs() or .real first")
        if data.size != 1:
            raise RuntimeError(
                "grad can be implicitly created only for scalar outputs: backward of a non-scalar output "
                f"of shape {tuple(output.shape)} needs a gradient. Pass "
                f"gradient= a tensor of shape {tuple(output.shape)} (dL/doutput), or reduce the "
                "output first, e.g. loss.sum() or loss.mean()"
            )
        # (a 0-d loss is the common case, and array() the cheap way to make one)
        return Tensor._make(xp.array(1, data.dtype) if data.ndim == 0 else xp.ones(data.shape, data.dtype))
    if not isinstance(grad, Tensor):
        if not is_sparse(grad):  # (a number, a list, an array: PyTorch's TypeError, not a gradient made of it)
            raise TypeError(f"gradients can be either Tensors or None, but got {type(grad).__name__}")
        grad = tensor_from(as_array(grad))
    if grad._data.shape != output._data.shape:  # (the arrays' shapes: no Size is made on every backward)
        raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {grad.shape} and output[{i}] "
                           f"has a shape of {output.shape}.")  # (PyTorch's words: its Sizes, printed)
    if (grad._data.dtype.kind == "c") != (output._data.dtype.kind == "c"):  # (a real/complex cast would drop a part)
        raise RuntimeError("For complex Tensors, both grad_output and output are required to have the same dtype. "
                           f"Mismatch in dtype: grad_output[{i}] has a dtype of torch.{grad.dtype} and "
                           f"output[{i}] has a dtype of torch.{output.dtype}.")
    if not grad._requires_grad:  # the user's tensor, not copied: marked as held elsewhere
        data, tangent = grad._data, dual.tangent_of(grad)
        grad = Tensor._make(data if data.dtype is output._data.dtype else data.astype(output.dtype))
        grad._shared = True
        if tangent is not None:  # (a dual grad_output: its tangent flows through the pass, forward-over-reverse)
            dual.set_tangent(grad, tangent)
    return grad


@contextlib.contextmanager
def inside_a_transform():
    """Refuse backward() inside (in this thread): a transform's function has its values (and vmap its examples) for
    the transform alone, so accumulating into .grad from there is refused, as PyTorch's functorch refuses it."""
    modes.transforms_running += 1
    try:
        yield
    finally:
        modes.transforms_running -= 1


def backward(outputs, grad_outputs=None, retain_graph=False, create_graph=False, on_step=None, inputs=None):
    """Accumulate dL/dleaf into ``.grad`` of every leaf below ``outputs``; with ``inputs``, only
    into theirs (a non-leaf among them too, as PyTorch's).
    ``on_step`` is the engine's per-node callback (the step-through's trace)."""
    if modes.transforms_running:
        raise RuntimeError("backward() called inside a functorch transform. This is not supported, please use "
                           "functorch.grad or functorch.vjp instead or call backward() outside of functorch "
                           "transforms.")
    if create_graph:  # (.grad then holds a graph that reaches back to its own leaf; PyTorch says so, once)
        warn_once("backward create_graph", "Using backward() with create_graph=True will create a reference cycle "
                  "between the parameter and its gradient which can cause a memory leak. We recommend using "
                  "autograd.grad when creating the graph to avoid this. If you have to use this function, make sure "
                  "to reset the .grad fields of your parameters to None after use to break the cycle and avoid the "
                  "leak.")
    if inputs is not None:
        _backward_into(outputs, grad_outputs, retain_graph, create_graph, inputs)
        return
    if len(outputs) == 1 and (grad_outputs is None or len(grad_outputs) >= 1):  # loss.backward(): the common case
        output = outputs[0]
        roots, seeds = (_node(output),), (_seed(output, None if grad_outputs is None else grad_outputs[0], 0),)
    else:
        roots, seeds = [_node(output) for output in outputs], _seed_gradients(outputs, grad_outputs)
    engine.backpropagate(roots, seeds, retain_graph=retain_graph, on_step=on_step, create_graph=create_graph)


def _backward_into(outputs, grad_outputs, retain_graph, create_graph, inputs):
    inputs = [inputs] if isinstance(inputs, Tensor) or is_sparse(inputs) else list(inputs)
    if not inputs:
        raise RuntimeError("`inputs` argument to `backward()` cannot be empty.")
    # (a sparse tensor's .grad is read from its sources' grads: sparse/dense_gradient.py)
    inputs = [s for x in inputs for s in (x._gradient_sources() if is_sparse(x) else (x,))]
    grads = grad(outputs, inputs, grad_outputs, retain_graph=retain_graph, create_graph=create_graph,
                 allow_unused=True)
    with set_grad_enabled(create_graph):  # (as during the pass: whether .grad is added to in place)
        for x, g in zip(inputs, grads):
            if g is None:
                continue
            if x.is_leaf:
                x._accumulate(g)  # the hooks ran in the pass above
            elif not x.retains_grad:  # a retained grad was filled by the pass above
                accumulate_grad(x, g)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         allow_unused=False):
    """Return dL/dinput for each input, without touching any ``.grad``.

    outputs: a tensor or a sequence of them (L is the sum of output · grad_output).
    With ``create_graph=True`` the result has a graph, so it can be
    differentiated again (Hessian-vector products, gradient penalties).
    """
    outputs = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    single = isinstance(inputs, Tensor)
    inputs = [inputs] if single else list(inputs)
    if not inputs:
        raise RuntimeError("`inputs` argument to `grad()` cannot be empty.")
    if isinstance(grad_outputs, Tensor):
        grad_outputs = [grad_outputs]
    seeds = _seed_gradients(outputs, grad_outputs)  # (the outputs are checked before the inputs, as PyTorch's)
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            raise RuntimeError(f"One of the differentiated Tensors does not require grad (input {i}, shape "
                               f"{tuple(x.shape)})")
    if retain_graph is None:
        retain_graph = create_graph
    # (a sparse input's gradient comes from its values and its dense stand-in's holder: sparse/dense_gradient.py)
    sources = [x._gradient_sources() if is_sparse(x) else (x,) for x in inputs]
    captured = engine.backpropagate([_node(o) for o in outputs], seeds, retain_graph=retain_graph,
                                    capture={_node(s) for each in sources for s in each}, prune=not create_graph,
                                    create_graph=create_graph)
    results = []
    for i, x in enumerate(inputs):
        if is_sparse(x):
            g = x._gradient_from(*(captured.get(_node(s)) for s in sources[i]))
        else:
            g = captured.get(_node(x))
        if g is None:
            if not allow_unused:
                raise RuntimeError(
                    f"The differentiated Tensor at index {i} appears to not have been used in the graph. Set "
                    f"allow_unused=True if this is the desired behavior. (It has shape {tuple(x.shape)}.)"
                )
        elif is_sparse(g):
            g = g if create_graph else g.detach()
        elif g._sparse_gradient is not None:  # (an embedding's sparse=True: its sparse form, as .grad would be)
            g = g._sparse_gradient if create_graph else g._sparse_gradient.detach()
        elif not create_graph:
            tangent = dual.tangent_of(g)
            g = g.detach()
            if tangent is not None:  # (forward-over-reverse: the gradient keeps its tangent, as PyTorch's)
                dual.set_tangent(g, tangent)
        results.append(g)
    return tuple(results)
