"""Derivatives of whole functions, PyTorch's ``torch.autograd.functional``.

For f: inputs -> outputs with Jacobian J = df/dx (and, for a scalar f, Hessian H):

    vjp(f, x, v)    v^T J      one backward pass
    jvp(f, x, v)    J v        the double-backward trick: g(u) = u^T J is linear in u,
                               so J v = d(g(u) · v)/du, a backward pass through the backward
    jacobian(f, x)  J          one vjp per output element (rows of J)
    hessian(f, x)   H          the jacobian of the gradient
    vhp(f, x, v)    v^T H      backward through the gradient
    hvp(f, x, v)    H v        the double-backward trick on the gradient

Inputs and outputs are a Tensor or a tuple of Tensors; each result has the
structure PyTorch gives it (a Tensor for a Tensor, tuples for tuples; a
jacobian is indexed [output][input]). ``strict=True`` raises where an output
does not depend on an input instead of returning zeros for it. ``v`` may be
left out only where it would hold one element.
"""

from ..factories import zeros, zeros_like
from ..grad_mode import enable_grad, is_grad_enabled, set_grad_enabled
from ..ops.joins import stack
from ..tensor import Tensor

__all__ = ["vjp", "jvp", "jacobian", "hessian", "hvp", "vhp"]


def _as_tuple(value, arg_name, fn_name):
    """(was it a tuple, the tuple of Tensors)."""
    is_tuple = isinstance(value, tuple)
    values = value if is_tuple else (value,)
    for i, element in enumerate(values):
        if not isinstance(element, Tensor):
            where = f"the value at index {i} has type {type(element)}" if is_tuple else \
                f"the given {arg_name} has type {type(element)}"
            raise TypeError(f"The {arg_name} given to {fn_name} must be either a Tensor or a tuple of Tensors "
                            f"but {where}.")
    return is_tuple, values


def _unpack(result, was_tuple):
    """Undo _as_tuple on a result: ``was_tuple`` is one flag, or (outer, inner) for a nesting."""
    if isinstance(was_tuple, tuple):
        outer, inner = was_tuple
        if not inner:
            result = tuple(row[0] for row in result)
        return result if outer else result[0]
    return result if was_tuple else result[0]


def _prepare(inputs, create_graph, need_graph):
    """Fresh graph roots for the inputs: the user's own tensors never collect gradients, but with
    create_graph the results stay connected to them (a view keeps the link)."""
    return tuple(x.view_as(x) if create_graph and x.requires_grad else x.detach().requires_grad_(need_graph)
                 for x in inputs)


def _finish(results, create_graph):
    if isinstance(results[0], Tensor):
        return results if create_graph else tuple(r.detach() for r in results)
    return tuple(_finish(r, create_graph) for r in results)


def _validate_v(v, like, like_is_tuple):
    if len(v) != len(like):
        if like_is_tuple:
            raise RuntimeError(f"v is a tuple of invalid length: should be {len(like)} but got {len(v)}.")
        raise RuntimeError("The given v should contain a single Tensor.")
    for i, (v_i, like_i) in enumerate(zip(v, like)):
        if v_i.shape != like_i.shape:
            prefix = f"Entry {i} in " if like_is_tuple else ""
            raise RuntimeError(f"{prefix}v has invalid size: should be {tuple(like_i.shape)} but got "
                               f"{tuple(v_i.shape)}.")


_NOT_DIFFERENTIABLE = {
    "hessian": ("The hessian of the user-provided function with respect to input {i} is independent of the "
                "input. This is not allowed in strict mode. You should ensure that your function is thrice "
                "differentiable and that the hessian depends on the inputs."),
    "jacobian": ("While computing the hessian, found that the jacobian of the user-provided function with "
                 "respect to input {i} is independent of the input. This is not allowed in strict mode. You "
                 "should ensure that your function is twice differentiable and that the jacobian depends on "
                 "the inputs (this would be violated by a linear function for example)."),
    "grad_inputs": ("The gradient with respect to input {i} is independent of the inputs of the user-provided "
                    "function. This is not allowed in strict mode."),
    "outputs": ("Output {i} of the user-provided function does not require gradients. The outputs must be "
                "computed in a differentiable manner from the input when running in strict mode."),
}


def _check_requires_grad(tensors, kind, strict):
    if not strict:
        return
    for i, t in enumerate(tensors):
        if t is None:
            raise RuntimeError(f"The output of the user-provided function is independent of input {i}. "
                               "This is not allowed in strict mode.")
        if not t.requires_grad:
            raise RuntimeError(_NOT_DIFFERENTIABLE[kind].format(i=i))


def _grad(outputs, inputs, grad_outputs=None, create_graph=False, retain_graph=None):
    """autograd.grad over the outputs that require grad; None for inputs nothing reaches."""
    from . import grad  # the package imports this module first

    grad_outputs = (None,) * len(outputs) if grad_outputs is None else grad_outputs
    pairs = [(y, g) for y, g in zip(outputs, grad_outputs) if y is not None and y.requires_grad]
    if not pairs:
        return (None,) * len(inputs)
    return grad([y for y, _ in pairs], inputs, [g for _, g in pairs], allow_unused=True,
                create_graph=create_graph, retain_graph=retain_graph)


_INDEPENDENT = {
    "back": "The output of the user-provided function is independent of input {i}. This is not allowed in "
            "strict mode.",
    "back_trick": "The gradient with respect to the input is independent of entry {i} in the grad_outputs when "
                  "using the double backward trick to compute forward mode gradients. This is not allowed in "
                  "strict mode.",
    "double_back": "The jacobian of the user-provided function is independent of input {i}. This is not "
                   "allowed in strict mode.",
    "double_back_trick": "The hessian of the user-provided function is independent of entry {i} in the "
                         "grad_jacobian. This is not allowed in strict mode as it prevents from using the "
                         "double backward trick to replace forward mode AD.",
}


def _fill_in_zeros(grads, refs, strict, create_graph, stage):
    """Zeros (shaped like refs[i]) where no gradient arrived; strict mode raises there instead."""
    filled = []
    for i, g in enumerate(grads):
        if g is None:
            if strict:
                raise RuntimeError(_INDEPENDENT[stage].format(i=i))
            g = zeros_like(refs[i])
        elif strict and create_graph and not g.requires_grad:
            what = "hessian" if "double" in stage else "jacobian"
            raise RuntimeError(f"The {what} of the user-provided function is independent of input {i}. This is "
                               "not allowed in strict mode when create_graph=True.")
        filled.append(g)
    return tuple(filled)


def _v_or_scalar(v, like, like_is_tuple, create_graph, fn_name, whose):
    if v is not None:
        _, v = _as_tuple(v, "v", fn_name)
        v = _prepare(v, create_graph, need_graph=False)
        _validate_v(v, like, like_is_tuple)
        return v
    if len(like) != 1 or like[0].numel() != 1:
        raise RuntimeError(f"The vector v can only be None if the {whose} a single Tensor with a single "
                           "element.")
    return None


def _inputs(inputs, create_graph, fn_name):
    """(were the inputs a tuple, the inputs as fresh graph roots)."""
    is_tuple, inputs = _as_tuple(inputs, "inputs", fn_name)
    return is_tuple, _prepare(inputs, create_graph, need_graph=True)


def _outputs(func, inputs, fn_name, strict):
    is_tuple, outputs = _as_tuple(func(*inputs), "outputs of the user-provided function", fn_name)
    _check_requires_grad(outputs, "outputs", strict)
    return is_tuple, outputs


def _scalar_outputs(func, inputs, fn_name, strict):
    outputs_tuple, outputs = _outputs(func, inputs, fn_name, strict)
    if outputs_tuple:
        raise RuntimeError(f"The function given to {fn_name} should return a single Tensor")
    if outputs[0].numel() != 1:
        raise RuntimeError(f"The Tensor returned by the function given to {fn_name} should contain a single "
                           "element")
    return outputs_tuple, outputs


def vjp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T J): the vector-Jacobian product, v shaped like the outputs."""
    with enable_grad():
        inputs_tuple, inputs = _inputs(inputs, create_graph, "vjp")
        outputs_tuple, outputs = _outputs(func, inputs, "vjp", strict)
        v = _v_or_scalar(v, outputs, outputs_tuple, create_graph, "vjp",
                         "user-provided function returns")
    with set_grad_enabled(create_graph or is_grad_enabled()):
        result = _fill_in_zeros(_grad(outputs, inputs, v, create_graph=create_graph), inputs, strict,
                                create_graph, "back")
    return _unpack(_finish(outputs, create_graph), outputs_tuple), _unpack(_finish(result, create_graph),
                                                                            inputs_tuple)


def jvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), J v): the Jacobian-vector product, v shaped like the inputs; by the
    double-backward trick (u^T J is linear in u, and its gradient with respect to u along v is J v)."""
    with enable_grad():
        inputs_tuple, inputs = _inputs(inputs, create_graph, "jvp")
        v = _v_or_scalar(v, inputs, inputs_tuple, create_graph, "jvp",
                         "input to the user-provided function is")
        outputs_tuple, outputs = _outputs(func, inputs, "jvp", strict)
        u = tuple(zeros_like(y, requires_grad=True) for y in outputs)
        u_jacobian = _grad(outputs, inputs, u, create_graph=True)
        _check_requires_grad(u_jacobian, "grad_inputs", strict)
    with set_grad_enabled(create_graph or is_grad_enabled()):
        result = _fill_in_zeros(_grad(u_jacobian, u, v, create_graph=create_graph), outputs, strict,
                                create_graph, "back_trick")
    return _unpack(_finish(outputs, create_graph), outputs_tuple), _unpack(_finish(result, create_graph),
                                                                            outputs_tuple)


def jacobian(func, inputs, create_graph=False, strict=False, vectorize=False, strategy="reverse-mode"):
    """J[i][j] = d output_i / d input_j, of shape output_i.shape + input_j.shape.

    Computed row by row with reverse mode. ``vectorize`` and ``strategy="forward-mode"`` are
    accepted with PyTorch's rules and give the same values (computed the same way here); forward mode's
    result stays in the graph as PyTorch's does (``_as_forward_mode_records``)."""
    if strategy not in ("forward-mode", "reverse-mode"):
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode". Hint: If your '
                             'function has more outputs than inputs, "forward-mode" tends to be more performant. '
                             'Otherwise, prefer to use "reverse-mode".')
    if strategy == "forward-mode":
        if create_graph:
            raise NotImplementedError('torch.autograd.functional.jacobian: `create_graph=True` and '
                                      '`strategy="forward-mode"` are not supported together (yet). Please either '
                                      'set `create_graph=False` or `strategy="reverse-mode"`.')
        if strict:
            raise RuntimeError('torch.autograd.functional.jacobian: `strict=True` and `strategy="forward-mode"` '
                               'are not supported together (yet). Please either set `strict=False` or '
                               '`strategy="reverse-mode"`.')
        if not vectorize:
            raise NotImplementedError("Computing Jacobian using forward-AD or forward-over-reverse Hessian is "
                                      "only implemented for `vectorize=True`.")
    if vectorize and strict:
        raise RuntimeError("torch.autograd.functional.jacobian: `strict=True` and `vectorized=True` are not "
                           "supported together. Please either set `strict=False` or `vectorize=False`.")
    recorded = create_graph or (strategy == "forward-mode" and is_grad_enabled())
    with enable_grad():
        given = _as_tuple(inputs, "inputs", "jacobian")[1]
        inputs_tuple, inputs = _inputs(inputs, recorded, "jacobian")
        outputs_tuple, outputs = _outputs(func, inputs, "jacobian", strict)
        rows = tuple(_jacobian_of(i, y, inputs, recorded, strict) for i, y in enumerate(outputs))
    if recorded and not create_graph:
        rows = tuple(_as_forward_mode_records(row, given, inputs) for row in rows)
    return _unpack(_finish(rows, recorded), (outputs_tuple, inputs_tuple))


def _as_forward_mode_records(row, given, roots):
    """One output's Jacobian as PyTorch's forward mode leaves it under grad mode: its tangents are computed by
    recorded ops, so the Jacobian stays in the graph (a later backward through it reaches the weights the
    function closed over, and the inputs) wherever an input requires grad or the Jacobian depends on a tensor
    that does; otherwise it is detached, as reverse mode leaves it. Computed in reverse mode with the graph
    kept, then cut where it reaches nothing outside the function's fresh inputs."""
    from ..func.transforms import _reaches_outer_graph  # (the package's transforms import this module's package)

    if _reaches_outer_graph(given, row, roots):
        return row
    return tuple(j.detach() for j in row)


def _jacobian_of(i, output, inputs, create_graph, strict):
    """d output / d input_j for every j: one backward pass per element of the output."""
    columns = [[] for _ in inputs]
    flat = output.reshape(-1)
    for k in range(output.numel()):
        grads = _grad((flat[k],), inputs, retain_graph=True, create_graph=create_graph)
        for j, (g, x) in enumerate(zip(grads, inputs)):
            if g is None:
                if strict:
                    raise RuntimeError(f"Output {i} of the user-provided function is independent of input {j}. "
                                       "This is not allowed in strict mode.")
                g = zeros_like(x)
            elif strict and create_graph and not g.requires_grad:
                raise RuntimeError(f"The jacobian of the user-provided function is independent of input {i}. "
                                   "This is not allowed in strict mode when create_graph=True.")
            columns[j].append(g)
    return tuple(stack(column).reshape(tuple(output.shape) + tuple(x.shape)) if column
                 else zeros(tuple(output.shape) + tuple(x.shape), dtype=x.dtype)  # an empty output
                 for column, x in zip(columns, inputs))


def hessian(func, inputs, create_graph=False, strict=False, vectorize=False, outer_jacobian_strategy="reverse-mode"):
    """H[i][j] = d^2 f / d input_i d input_j for a function f returning one element,
    of shape input_i.shape + input_j.shape: the jacobian of the gradient."""
    inputs_tuple, inputs = _as_tuple(inputs, "inputs", "hessian")
    if outer_jacobian_strategy not in ("forward-mode", "reverse-mode"):
        raise AssertionError('Expected strategy to be either "forward-mode" or "reverse-mode".')

    def single_output(*x):
        _, (out,) = _scalar_outputs(func, x, "hessian", strict)
        return out.squeeze()

    def gradient(*x):
        jac = jacobian(single_output, x, create_graph=True)
        _check_requires_grad(jac, "jacobian", strict)
        return jac

    result = jacobian(gradient, inputs, create_graph=create_graph, strict=strict, vectorize=vectorize,
                      strategy=outer_jacobian_strategy)
    return _unpack(result, (inputs_tuple, inputs_tuple))


def vhp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), v^T H) for a function returning one element."""
    with enable_grad():
        inputs_tuple, inputs = _inputs(inputs, create_graph, "vhp")
        v = _v_or_scalar(v, inputs, inputs_tuple, create_graph, "vhp", "input to the user-provided function is")
        outputs_tuple, outputs = _scalar_outputs(func, inputs, "vhp", strict)
        gradient = _grad(outputs, inputs, create_graph=True)
        _check_requires_grad(gradient, "jacobian", strict)
    with set_grad_enabled(create_graph or is_grad_enabled()):
        result = _fill_in_zeros(_grad(gradient, inputs, v, create_graph=create_graph), inputs, strict,
                                create_graph, "double_back")
    return _unpack(_finish(outputs, create_graph), outputs_tuple), _unpack(_finish(result, create_graph),
                                                                            inputs_tuple)


def hvp(func, inputs, v=None, create_graph=False, strict=False):
    """(func(inputs), H v) for a function returning one element, by the double-backward trick
    (equal to vhp's v^T H, H being symmetric)."""
    with enable_grad():
        inputs_tuple, inputs = _inputs(inputs, create_graph, "hvp")
        v = _v_or_scalar(v, inputs, inputs_tuple, create_graph, "hvp", "input to the user-provided function is")
        outputs_tuple, outputs = _scalar_outputs(func, inputs, "hvp", strict)
        gradient = _grad(outputs, inputs, create_graph=True)
        _check_requires_grad(gradient, "jacobian", strict)
        u = tuple(zeros_like(x, requires_grad=True) for x in inputs)
        u_hessian = _grad(gradient, inputs, u, create_graph=True)
        _check_requires_grad(gradient, "hessian", strict)
    with set_grad_enabled(create_graph or is_grad_enabled()):
        result = _fill_in_zeros(_grad(u_hessian, u, v, create_graph=create_graph), inputs, strict,
                                create_graph, "double_back_trick")
    return _unpack(_finish(outputs, create_graph), outputs_tuple), _unpack(_finish(result, create_graph),
                                                                            inputs_tuple)
