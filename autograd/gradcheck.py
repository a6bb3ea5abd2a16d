"""Checking gradients against finite differences.

For a function f of tensors, the engine's gradient of each output element
must match the central difference

    dL/dx_i ≈ (f(x + ε e_i) - f(x - ε e_i)) / 2ε

computed in float64, element by element. The inputs are perturbed where they live (``xp``'s
arrays, on a GPU under CuPy); the Jacobians are compared in NumPy.

A complex input or output is checked as the pair of real numbers it is (``view_as_real``): the
finite differences then move real and imaginary parts separately, and the engine's complex
gradient (∂L/∂a + i ∂L/∂b, see ops/conjugation.py) must match both.
"""

import warnings

import numpy

from .backend import to_numpy, xp
from .differentiate import grad
from .graph import program_stacklevel
from .tensor import Tensor, tensor_from
from .write_door import overlapping


class GradcheckError(RuntimeError, AssertionError):
    """The engine's gradient and the finite-difference one disagree (a RuntimeError, as
    PyTorch's; an AssertionError too, as a failed check)."""


def _nothing_to_check():
    """PyTorch's ValueError where no input requires grad (gradcheck's and gradgradcheck's)."""
    return ValueError("gradcheck expects at least one input tensor to require gradient, but none of them have "
                      "requires_grad=True (nothing to check: pass tensors made with requires_grad=True)")


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _float64_inputs(inputs):
    """Copies of the inputs in float64; those that required grad still do. An input of lower precision that
    requires grad is warned about in PyTorch's words, which also checks in the input's own precision."""
    copies = []
    for i, x in enumerate(inputs):
        if isinstance(x, Tensor) and x.requires_grad and overlapping(x._data):
            raise RuntimeError(f"The {i}th input has a dimension with stride 0. gradcheck only supports inputs that "
                               "are non-overlapping to be able to compute the numerical gradients correctly. You "
                               f"should call .contiguous on the input before passing it to gradcheck. (Its shape is "
                               f"{tuple(x.shape)}, its strides {x.stride()}: an expanded tensor.)")
        if isinstance(x, Tensor) and x.requires_grad and x.dtype.name not in ("float64", "complex128"):
            warnings.warn(f"Input #{i} requires gradient and is not a double precision floating point or complex. "
                          "This check will likely fail if all the inputs are not of double precision floating point "
                          "or complex. (Here every input is copied to float64 first, so the check does not fail for "
                          "this reason, where PyTorch's would.)", UserWarning, stacklevel=program_stacklevel())
        if isinstance(x, Tensor) and x.dtype.kind in "fc":
            # a C-contiguous float64 (complex128) copy (of a 0-d input too, which ascontiguousarray would make 1-d):
            # the perturbations below write into its flat view
            wide = numpy.complex128 if x.dtype.kind == "c" else numpy.float64
            copies.append(tensor_from(xp.array(x._data, dtype=wide, order="C"), requires_grad=x.requires_grad))
        else:
            copies.append(x)
    return copies


def _outputs(fn, inputs):
    return [y for y in _as_tuple(fn(*inputs)) if isinstance(y, Tensor)]


def _differentiable_outputs_of(fn, outputs):
    """fn restricted to the outputs that require grad, and those outputs, as PyTorch checks them: an
    output cut from the graph (detached, marked non-differentiable) is not compared. When no output
    requires grad, all are kept, so their finite differences must be zero (as the engine's are)."""
    keep = [k for k, y in enumerate(outputs) if y.requires_grad]
    if not keep or len(keep) == len(outputs):
        return fn, outputs

    def differentiable_fn(*xs):
        ys = _outputs(fn, xs)
        return tuple(ys[k] for k in keep)

    return differentiable_fn, [outputs[k] for k in keep]


def _as_real_function(fn, inputs):
    """fn and its inputs with every complex tensor, in or out, as its real pair, so that only real
    numbers are perturbed and compared."""
    from .ops.conjugation import view_as_complex, view_as_real  # (the ops build on the engine this checks)

    complex_at = {i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.dtype.kind == "c"}
    pairs = [tensor_from(xp.ascontiguousarray(view_as_real(x.detach())._data), requires_grad=x.requires_grad)
             if i in complex_at else x for i, x in enumerate(inputs)]

    def real_fn(*xs):
        ys = fn(*(view_as_complex(x) if i in complex_at else x for i, x in enumerate(xs)))
        return tuple(view_as_real(y) if isinstance(y, Tensor) and y.dtype.kind == "c" else y for y in _as_tuple(ys))

    return real_fn, pairs


def jacobians(fn, inputs, eps, outputs=None, analytic_too=True):
    """(analytic, numeric) Jacobians of every output with respect to every input that
    requires grad, each a 2-D array of shape (output size, input size). ``outputs``: fn's
    outputs at ``inputs``, when the caller has them already (their graphs are kept).
    ``analytic_too=False``: the finite differences alone (the analytic ones left zero)."""
    wrt = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise _nothing_to_check()
    outputs = _outputs(fn, inputs) if outputs is None else outputs
    analytic = [[numpy.zeros((y._data.size, x._data.size)) for x in wrt] for y in outputs]
    numeric = [[numpy.zeros((y._data.size, x._data.size)) for x in wrt] for y in outputs]
    for k, y in enumerate(outputs if analytic_too else ()):
        for i in range(y._data.size):
            seed = numpy.zeros(y.shape)
            seed.flat[i] = 1.0
            if not y.requires_grad:
                continue
            rows = grad(y, wrt, grad_outputs=tensor_from(seed), retain_graph=True, allow_unused=True)
            for j, row in enumerate(rows):
                if row is not None:
                    analytic[k][j][i] = to_numpy(row._data).reshape(-1)
    # fn runs with grad enabled here too: gradgradcheck's fn itself differentiates
    for j, x in enumerate(wrt):
        flat = x._data.reshape(-1)
        for i in range(flat.size):
            original = flat[i].item()  # a number: CuPy's flat[i] is a view, which the next line would change
            flat[i] = original + eps
            plus = _perturbed_outputs(fn, inputs, outputs, eps)
            flat[i] = original - eps
            minus = _perturbed_outputs(fn, inputs, outputs, eps)
            flat[i] = original
            for k in range(len(outputs)):
                numeric[k][j][:, i] = (plus[k] - minus[k]) / (2 * eps)
    return analytic, numeric


def _perturbed_outputs(fn, inputs, outputs, eps):
    """fn's outputs at perturbed inputs, flat float64 arrays; their shapes and dtypes must be the ones at the
    inputs themselves (PyTorch's check: an output whose shape or dtype depends on the values has no Jacobian)."""
    perturbed = _outputs(fn, inputs)
    for y, z in zip(outputs, perturbed):
        for what in ("shape", "dtype"):
            if getattr(y, what) != getattr(z, what):
                raise GradcheckError(f"Expected fn(*inputs) to return outputs with the same {what} when inputs are "
                                     f"perturbed by {eps}, but got: {getattr(y, what)} and {getattr(z, what)}.")
    return [to_numpy(z._data).astype(numpy.float64).reshape(-1) for z in perturbed]


def _forward_jacobians(fn, inputs, numeric):
    """The Jacobians as forward mode gives them: one pass per element of each input that requires grad,
    its tangent that element's unit vector, each output's tangent a column (shaped as ``numeric``)."""
    from .autograd import forward_ad  # (the namespace module: it imports this one)

    forward = [[numpy.zeros_like(n) for n in row] for row in numeric]
    wrt = [position for position, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    for j, position in enumerate(wrt):
        x = inputs[position]
        for i in range(x._data.size):
            direction = numpy.zeros(x.shape)
            direction.flat[i] = 1.0
            with forward_ad.dual_level():
                duals = list(inputs)
                duals[position] = forward_ad.make_dual(x, tensor_from(direction))
                for k, y in enumerate(_outputs(fn, duals)):
                    tangent = forward_ad.unpack_dual(y).tangent
                    if tangent is not None:
                        forward[k][j][:, i] = to_numpy(tangent._data).reshape(-1)
    return forward


def _refuse_unbuilt(forward_ad, masked):
    if forward_ad:
        raise NotImplementedError("gradcheck: batched forward gradients are not built here, so "
                                  "check_batched_forward_grad must stay False (check_forward_ad is)")
    if masked:
        raise NotImplementedError("gradcheck: masked=True checks sparse/masked semantics; sparse tensors "
                                  "are not built here")


def _check_jacobians(analytic, numeric, atol, rtol, outputs, forward=False):
    worst = None
    for k, row in enumerate(analytic):
        for j, a in enumerate(row):
            n = numeric[k][j]
            excess = numpy.abs(a - n) - (atol + rtol * numpy.abs(n))
            # a NaN on either side is a mismatch, as PyTorch's allclose (equal_nan=False) reads it
            excess = numpy.where(numpy.isnan(excess), numpy.inf, excess)
            if excess.size and excess.max() > 0:
                where = numpy.unravel_index(excess.argmax(), excess.shape)
                if worst is None or excess.max() > worst[0]:
                    worst = (excess.max(), k, j, where, a[where], n[where])
    if worst is not None:
        _, k, j, (out_i, in_i), a, n = worst
        if not any(y.requires_grad for y in outputs):  # (PyTorch's words for an output cut from the graph)
            raise GradcheckError(f"Numerical gradient for function expected to be zero: output {k} does not require "
                                 f"grad, yet d output {k}[{out_i}] / d input {j}[{in_i}] is {n:.10g} by finite "
                                 "differences")
        raise GradcheckError(
            f"Jacobian {'computed with forward mode ' if forward else ''}mismatch for output {k} with respect to "
            f"input {j}: d output {k}[{out_i}] / d input {j}[{in_i}] is {a:.10g} from the engine but {n:.10g} by "
            f"finite differences (atol={atol}, rtol={rtol})"
        )


def _differentiable(fn, inputs):
    wrt = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    outputs = [y for y in _outputs(fn, inputs) if y.requires_grad]
    return outputs, wrt


def _check_reentrant(outputs, inputs, analytic, nondet_tol):
    """The backward pass for each output's first element, run again through the same graph, must
    give the same row of the Jacobian (within ``nondet_tol``): a backward that depends on hidden
    state or on how often it ran fails. (PyTorch reruns every row; one per output catches the same
    faults.)"""
    wrt = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    for k, y in enumerate(outputs):
        if not y.requires_grad or y._data.size == 0:
            continue
        seed = numpy.zeros(y.shape)
        seed.flat[0] = 1.0
        again = grad(y, wrt, grad_outputs=tensor_from(seed), retain_graph=True, allow_unused=True)
        for j, g in enumerate(again):
            got = numpy.zeros(analytic[k][j].shape[1]) if g is None else to_numpy(g._data).reshape(-1)
            if numpy.abs(got - analytic[k][j][0]).max(initial=0.0) > nondet_tol:
                raise GradcheckError(
                    "Backward is not reentrant, i.e., running backward with same input and grad_output "
                    "multiple times gives different values, although analytical gradient matches numerical "
                    f"gradient. The tolerance for nondeterminism was {nondet_tol}.")


def _check_zero_grad_outputs(fn, inputs, check_dtypes):
    """Zero gradients of the outputs must give zero (or no) gradients of the inputs, of the
    inputs' dtypes: PyTorch's undefined-gradient check, where an absent output gradient is a
    zero one. A backward that adds something of its own to the gradient fails."""
    outputs, wrt = _differentiable(fn, inputs)
    if not outputs:
        return
    zeros = [tensor_from(xp.zeros(y.shape, dtype=y._data.dtype)) for y in outputs]
    for j, (x, g) in enumerate(zip(wrt, grad(outputs, wrt, grad_outputs=zeros, allow_unused=True))):
        if g is None:
            continue
        if xp.any(xp.isfinite(g._data) & (g._data != 0)):  # (0 · inf: NaN is arithmetic, not a leak)
            raise GradcheckError(f"backward not multiplied by grad_output: input {j} got a nonzero gradient from zero "
                                 "gradients of every output")
        if check_dtypes and g.dtype != x.dtype:
            raise GradcheckError(f"Gradient has dtype mismatch: input {j} is {x.dtype}, its gradient {g.dtype}")


def _check_batched(fn, inputs, analytic):
    """autograd.grad(..., is_grads_batched=True) seeded with every unit vector at once must give
    the Jacobian's rows."""
    outputs = _outputs(fn, inputs)
    _, wrt = _differentiable(fn, inputs)
    for k, y in enumerate(outputs):
        if not y.requires_grad or y._data.size == 0:
            continue
        seeds = tensor_from(numpy.eye(y._data.size).reshape((y._data.size, *y.shape)))
        from .autograd import grad as batched_grad  # the namespace module: it imports this one

        rows = batched_grad([y], wrt, grad_outputs=[seeds], is_grads_batched=True, retain_graph=True,
                            allow_unused=True)
        for j, g in enumerate(rows):
            got = 0.0 if g is None else to_numpy(g._data).reshape(y._data.size, -1)
            if not numpy.allclose(got, analytic[k][j], rtol=0, atol=1e-12):
                raise GradcheckError(f"batched gradient mismatch: output {k}, input {j}: is_grads_batched=True "
                                     "does not give the rows one backward pass per seed gives")


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, *, raise_exception=True, nondet_tol=0.0,
              check_undefined_grad=True, check_grad_dtypes=False, check_batched_grad=False,
              check_batched_forward_grad=False, check_forward_ad=False, check_backward_ad=True,
              fast_mode=False, masked=None):
    """True when the engine's gradients of ``fn(*inputs)`` match finite differences.

    Inputs are copied to float64 first. Raises ``GradcheckError`` naming the
    worst mismatch (output, input, element, both values) otherwise, or returns False
    with ``raise_exception=False``. As PyTorch's, it also checks that a second backward
    pass agrees with the first within ``nondet_tol``, that zero output gradients give zero
    input gradients (``check_undefined_grad``; with ``check_grad_dtypes`` their dtypes too),
    and with ``check_batched_grad`` that ``is_grads_batched`` gives the Jacobian's rows. As
    PyTorch's, only the outputs that require grad are checked when some do (a detached or
    non-differentiable output is left out); when none does, their finite differences must be zero.
    ``fast_mode`` is accepted: the whole Jacobian is always compared, which is stricter than
    PyTorch's fast mode (one random projection of it). ``check_forward_ad``: forward mode's tangents
    (``autograd.autograd.forward_ad``) along each input element, the Jacobian's columns, are compared
    with the finite differences too.
    """
    _refuse_unbuilt(check_batched_forward_grad, masked)
    if not (check_forward_ad or check_backward_ad):
        raise AssertionError("Expected at least one of check_forward_ad or check_backward_ad to be True")
    if check_batched_grad and not check_backward_ad:
        raise AssertionError("Setting check_batched_grad=True requires check_backward_ad to be True")
    try:
        if check_backward_ad or check_forward_ad:
            fn, inputs = _as_real_function(fn, _float64_inputs(_as_tuple(inputs)))
            fn, outputs = _differentiable_outputs_of(fn, _outputs(fn, inputs))
            analytic, numeric = jacobians(fn, inputs, eps, outputs, analytic_too=check_backward_ad)
        if check_forward_ad:
            _check_jacobians(_forward_jacobians(fn, inputs, numeric), numeric, atol, rtol, outputs, forward=True)
        if check_backward_ad:
            _check_jacobians(analytic, numeric, atol, rtol, outputs)
            _check_reentrant(outputs, inputs, analytic, nondet_tol)
            if check_undefined_grad or check_grad_dtypes:
                _check_zero_grad_outputs(fn, inputs, check_grad_dtypes)
            if check_batched_grad:
                _check_batched(fn, inputs, analytic)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, *,
                  gen_non_contig_grad_outputs=False, raise_exception=True, nondet_tol=0.0,
                  check_undefined_grad=True, check_grad_dtypes=False, check_batched_grad=False,
                  check_fwd_over_rev=False, check_rev_over_rev=True, fast_mode=False, masked=False):
    """gradcheck of the gradient itself: second derivatives through create_graph=True.

    Checks v ↦ d(Σ fn(x) · v)/dx against finite differences, with v random
    (or ``grad_outputs``), so Hessian-vector products are verified: by backward passes through
    the gradient (``check_rev_over_rev``) and by forward mode (``check_fwd_over_rev``). The keywords
    are gradcheck's; ``gen_non_contig_grad_outputs`` is accepted (NumPy gradients have no
    layout that could change a value here).
    """
    _refuse_unbuilt(False, masked)
    if not (check_rev_over_rev or check_fwd_over_rev):
        raise AssertionError("Expected at least one of check_fwd_over_rev or check_rev_over_rev to be True")
    if check_undefined_grad and not check_rev_over_rev:
        raise AssertionError("Setting check_undefined_grad=True requires check_rev_over_rev to be True")
    fn, inputs = _as_real_function(fn, _float64_inputs(_as_tuple(inputs)))
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:  # (before autograd.grad's own error, as PyTorch's)
        raise _nothing_to_check()
    fn, outputs = _differentiable_outputs_of(fn, _outputs(fn, inputs))
    rng = numpy.random.default_rng(0)
    if grad_outputs is None:
        grad_outputs = [tensor_from(rng.standard_normal(y.shape)) for y in outputs]

    def first_derivative(*xs):
        ys = _outputs(fn, xs)
        return grad(ys, [xs[i] for i in wrt], grad_outputs=list(grad_outputs),
                    create_graph=True, allow_unused=True)

    return gradcheck(lambda *xs: tuple(g for g in first_derivative(*xs) if g is not None),
                     inputs, eps=eps, atol=atol, rtol=rtol, raise_exception=raise_exception,
                     nondet_tol=nondet_tol, check_undefined_grad=check_undefined_grad,
                     check_grad_dtypes=check_grad_dtypes, check_batched_grad=check_batched_grad,
                     fast_mode=fast_mode, check_backward_ad=check_rev_over_rev, check_forward_ad=check_fwd_over_rev)
