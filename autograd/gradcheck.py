"""Checking gradients against finite differences.

For a function f of tensors, the engine's gradient of each output element
must match the central difference

    dL/dx_i ≈ (f(x + ε e_i) - f(x - ε e_i)) / 2ε

computed in float64, element by element.

A complex input or output is checked as the pair of real numbers it is (``view_as_real``): the
finite differences then move real and imaginary parts separately, and the engine's complex
gradient (∂L/∂a + i ∂L/∂b, see ops/conjugation.py) must match both.
"""

import numpy

from .differentiate import grad
from .tensor import Tensor


class GradcheckError(AssertionError):
    """The engine's gradient and the finite-difference one disagree."""


def _as_tuple(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def _float64_inputs(inputs):
    """Copies of the inputs in float64; those that required grad still do."""
    copies = []
    for x in inputs:
        if isinstance(x, Tensor) and x.dtype.kind in "fc":
            # a C-contiguous float64 (complex128) copy (of a 0-d input too, which ascontiguousarray would make 1-d):
            # the perturbations below write into its flat view
            wide = numpy.complex128 if x.dtype.kind == "c" else numpy.float64
            copies.append(Tensor(numpy.array(x._data, dtype=wide, order="C"), requires_grad=x.requires_grad))
        else:
            copies.append(x)
    return copies


def _outputs(fn, inputs):
    return [y for y in _as_tuple(fn(*inputs)) if isinstance(y, Tensor)]


def _as_real_function(fn, inputs):
    """fn and its inputs with every complex tensor, in or out, as its real pair, so that only real
    numbers are perturbed and compared."""
    from .ops.conjugation import view_as_complex, view_as_real  # (the ops build on the engine this checks)

    complex_at = {i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.dtype.kind == "c"}
    pairs = [Tensor(numpy.ascontiguousarray(view_as_real(x.detach())._data), requires_grad=x.requires_grad)
             if i in complex_at else x for i, x in enumerate(inputs)]

    def real_fn(*xs):
        ys = fn(*(view_as_complex(x) if i in complex_at else x for i, x in enumerate(xs)))
        return tuple(view_as_real(y) if isinstance(y, Tensor) and y.dtype.kind == "c" else y for y in _as_tuple(ys))

    return real_fn, pairs


def jacobians(fn, inputs, eps):
    """(analytic, numeric) Jacobians of every output with respect to every input that
    requires grad, each a 2-D array of shape (output size, input size)."""
    wrt = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise ValueError("gradcheck: no input requires grad, so there is nothing to check; "
                         "pass tensors made with requires_grad=True")
    outputs = _outputs(fn, inputs)
    analytic = [[numpy.zeros((y._data.size, x._data.size)) for x in wrt] for y in outputs]
    numeric = [[numpy.zeros((y._data.size, x._data.size)) for x in wrt] for y in outputs]
    for k, y in enumerate(outputs):
        for i in range(y._data.size):
            seed = numpy.zeros(y.shape)
            seed.flat[i] = 1.0
            if not y.requires_grad:
                continue
            rows = grad(y, wrt, grad_outputs=Tensor(seed), retain_graph=True, allow_unused=True)
            for j, row in enumerate(rows):
                if row is not None:
                    analytic[k][j][i] = row._data.reshape(-1)
    # fn runs with grad enabled here too: gradgradcheck's fn itself differentiates
    for j, x in enumerate(wrt):
        flat = x._data.reshape(-1)
        for i in range(flat.size):
            original = flat[i]
            flat[i] = original + eps
            plus = [y._data.astype(numpy.float64).reshape(-1) for y in _outputs(fn, inputs)]
            flat[i] = original - eps
            minus = [y._data.astype(numpy.float64).reshape(-1) for y in _outputs(fn, inputs)]
            flat[i] = original
            for k in range(len(outputs)):
                numeric[k][j][:, i] = (plus[k] - minus[k]) / (2 * eps)
    return analytic, numeric


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """True when the engine's gradients of ``fn(*inputs)`` match finite differences.

    Inputs are copied to float64 first. Raises ``GradcheckError`` naming the
    worst mismatch (output, input, element, both values) otherwise.
    """
    fn, inputs = _as_real_function(fn, _float64_inputs(_as_tuple(inputs)))
    analytic, numeric = jacobians(fn, inputs, eps)
    worst = None
    for k, row in enumerate(analytic):
        for j, a in enumerate(row):
            n = numeric[k][j]
            excess = numpy.abs(a - n) - (atol + rtol * numpy.abs(n))
            if excess.size and excess.max() > 0:
                where = numpy.unravel_index(excess.argmax(), excess.shape)
                if worst is None or excess.max() > worst[0]:
                    worst = (excess.max(), k, j, where, a[where], n[where])
    if worst is not None:
        _, k, j, (out_i, in_i), a, n = worst
        raise GradcheckError(
            f"gradient mismatch: d output {k}[{out_i}] / d input {j}[{in_i}] is {a:.10g} "
            f"from the engine but {n:.10g} by finite differences (atol={atol}, rtol={rtol})"
        )
    return True


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3):
    """gradcheck of the gradient itself: second derivatives through create_graph=True.

    Checks v ↦ d(Σ fn(x) · v)/dx against finite differences, with v random
    (or ``grad_outputs``), so Hessian-vector products are verified.
    """
    fn, inputs = _as_real_function(fn, _float64_inputs(_as_tuple(inputs)))
    wrt = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    outputs = _outputs(fn, inputs)
    rng = numpy.random.default_rng(0)
    if grad_outputs is None:
        grad_outputs = [Tensor(rng.standard_normal(y.shape)) for y in outputs]

    def first_derivative(*xs):
        ys = _outputs(fn, xs)
        return grad(ys, [xs[i] for i in wrt], grad_outputs=list(grad_outputs),
                    create_graph=True, allow_unused=True)

    return gradcheck(lambda *xs: tuple(g for g in first_derivative(*xs) if g is not None),
                     inputs, eps=eps, atol=atol, rtol=rtol)
