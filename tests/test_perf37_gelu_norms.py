"""The one-node normalisations' backward (``AffineNormalization``, session 37) writes dL/dx's passes over the arrays
it made itself (g' σ⁻¹ over g' = γ g, the share over g' (x - μ)) and g x̂ for dL/dγ over the array dL/dx is done
with: the same NumPy calls on the same values, so the gradients are still the composite's bit for bit, whatever
the layout of the incoming gradient (row-major, transposed, a broadcast one of .sum()), whichever inputs need a
gradient, where a statistic has one value per normalised axis (the sums then the arrays themselves), and at NaN,
±inf and ±0; PyTorch's values to rounding where it is installed."""

import numpy as np
import pytest

import autograd
import nn.functional as F
from autograd.ops import normalization
from autograd.ops.normalization_node import AffineNormalization, summed_over

FUNCTIONS = {  # x of shape (4, 6, 5, 7); the parameters' shape
    "layer_norm": (lambda f, x, w, b: f.layer_norm(x, (5, 7), w, b), (5, 7)),
    "layer_norm_last": (lambda f, x, w, b: f.layer_norm(x, (7,), w, b), (7,)),
    "group_norm": (lambda f, x, w, b: f.group_norm(x, 3, w, b), (6,)),
    "instance_norm": (lambda f, x, w, b: f.instance_norm(x, weight=w, bias=b), (6,)),
    "batch_norm": (lambda f, x, w, b: f.batch_norm(x, None, None, w, b, training=True), (6,)),
}
SHAPE = (4, 6, 5, 7)


def _identical(a, b):
    """The same values bit for bit, -0 apart from 0 (a NaN is a NaN, whatever its sign)."""
    return (a is None and b is None) or (
        a is not None and b is not None and a.dtype == b.dtype and a.shape == b.shape
        and np.array_equal(a, b, equal_nan=True)
        and np.array_equal(np.signbit(a) & ~np.isnan(a), np.signbit(b) & ~np.isnan(b)))


def _gradient(kind, dtype, rng):
    """dL/dy of x's shape in the layout ``kind`` (row-major, stored transposed, one value broadcast: strides 0), as a
    function of the library making it."""
    if kind == "broadcast":
        value = np.asarray(rng.standard_normal(), dtype)
        return lambda lib: lib.tensor(value).expand(SHAPE)
    grad = rng.standard_normal(SHAPE).astype(dtype)
    if kind == "transposed":
        stored = np.ascontiguousarray(grad.swapaxes(0, 3))
        return lambda lib: lib.tensor(stored).transpose(0, 3)
    return lambda lib: lib.tensor(grad)


def _previous_input_gradient(self, grad, centred, rstd, weight, shape):
    """The session-36 rule for dL/dx: each pass a new array (g' σ⁻¹ and the share made afresh), and g x̂ for dL/dγ
    made by the Tensor product (the None returned: no array for it)."""
    dtype = centred.dtype.type
    if weight is not None:
        grad = grad * weight._data.reshape(self.affine_shape)
    if self.grouped is not None:
        grad = grad.reshape(self.grouped)
    grad_centred = grad * rstd
    grad_variance = summed_over(grad * centred, self.axes)
    grad_variance *= dtype(-0.5)
    grad_variance *= rstd * rstd * rstd
    grad_variance /= dtype(self.count)
    share = centred * grad_variance
    grad_centred += share
    grad_centred += share
    grad_mean = summed_over(grad_centred, self.axes)
    grad_mean /= dtype(self.count)
    grad_centred -= grad_mean
    return autograd.Tensor._make(grad_centred.reshape(shape)), None


def _run(function, arrays, needs, grad, rule, monkeypatch):
    """y and the gradients of x, γ, β (None where not given or not needed), by the node ("node"), the node under
    the previous rule ("previous") or the composite ("composite")."""
    with monkeypatch.context() as patch:
        if rule == "composite":
            patch.setattr(normalization, "fits", lambda *tensors: False)
        if rule == "previous":
            patch.setattr(AffineNormalization, "_input_gradient", _previous_input_gradient)
        leaves = [None if a is None else autograd.tensor(a, requires_grad=need) for a, need in zip(arrays, needs)]
        y = function(F, *leaves)
        assert rule == "composite" or type(y.grad_fn).__name__ == "AffineNormalization"
        y.backward(grad(autograd))
    return [y.detach().numpy()] + [None if t is None or not t.requires_grad else t.grad.numpy() for t in leaves]


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "broadcast"])
@pytest.mark.parametrize("needs", [(True, True, True), (True, False, False), (False, True, True), (True, True, False)])
def test_gradients_in_every_layout_are_the_previous_rules_and_the_composites(name, layout, needs, monkeypatch):
    function, parameter_shape = FUNCTIONS[name]
    rng = np.random.default_rng(len(name))
    x = (rng.standard_normal(SHAPE) * 2 + 1).astype(np.float32)
    weight, bias = (1 + rng.standard_normal(parameter_shape)).astype(np.float32), rng.standard_normal(
        parameter_shape).astype(np.float32)
    grad = _gradient(layout, np.float32, rng)
    fused = _run(function, (x, weight, bias), needs, grad, "node", monkeypatch)
    previous = _run(function, (x, weight, bias), needs, grad, "previous", monkeypatch)
    assert all(_identical(a, b) for a, b in zip(fused, previous))
    composite = _run(function, (x, weight, bias), needs, grad, "composite", monkeypatch)
    if layout == "transposed" and name in ("instance_norm", "batch_norm") and needs[0]:
        # (as before this session: dL/dx of a gradient stored in another order than x differs from the composite's
        # in its last bit here and there, the composite's sums reading dL/d(x - μ) in that order)
        assert all(_identical(a, b) for i, (a, b) in enumerate(zip(fused, composite)) if i != 1)
        np.testing.assert_allclose(fused[1], composite[1], rtol=0, atol=1e-6 * np.abs(composite[1]).max())
    else:
        assert all(_identical(a, b) for a, b in zip(fused, composite))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # (NaN and ±inf through the sums)
@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("affine", [(True, True), (True, False), (False, False)])
def test_special_values_are_the_composites(name, dtype, affine, monkeypatch):
    function, parameter_shape = FUNCTIONS[name]
    rng = np.random.default_rng(7)
    x = (rng.standard_normal(SHAPE) * 3).astype(dtype)
    x.flat[::97] = np.nan
    x.flat[5::131] = np.inf
    x.flat[11::151] = -np.inf
    x.flat[3::13] = -0.0
    weight, bias = ((rng.standard_normal(parameter_shape).astype(dtype) if given else None) for given in affine)
    values = rng.standard_normal(SHAPE).astype(dtype)
    values.flat[::89] = -0.0
    grad = lambda lib: lib.tensor(values)  # noqa: E731
    fused = _run(function, (x, weight, bias), (True, True, True), grad, "node", monkeypatch)
    assert all(_identical(a, b) for a, b in zip(fused, _run(function, (x, weight, bias), (True, True, True), grad,
                                                            "previous", monkeypatch)))
    composite = _run(function, (x, weight, bias), (True, True, True), grad, "composite", monkeypatch)
    assert all(_identical(a, b) for a, b in zip(fused, composite))


@pytest.mark.parametrize("call, shape, parameter_shape", [
    (lambda f, x, w, b: f.layer_norm(x, (1,), w, b), (8, 3, 1), (1,)),  # one value per statistic
    (lambda f, x, w, b: f.group_norm(x, 3, w, b), (2, 3, 1), (3,)),
])
def test_statistics_of_one_value_are_the_composites(call, shape, parameter_shape, monkeypatch):
    """Where every normalised axis holds one value, the sums dL/dx takes are the arrays themselves, which the
    backward then writes over: the composite's values still (dL/dx = 0)."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal(shape).astype(np.float32)
    weight, bias = (rng.standard_normal(parameter_shape).astype(np.float32) for _ in range(2))
    grad = rng.standard_normal(shape).astype(np.float32)
    results = []
    for composite in (False, True):
        with monkeypatch.context() as patch:
            if composite:
                patch.setattr(normalization, "fits", lambda *tensors: False)
            leaves = [autograd.tensor(a, requires_grad=True) for a in (x, weight, bias)]
            call(F, *leaves).backward(autograd.tensor(grad))
            results.append([t.grad.numpy() for t in leaves])
    assert all(_identical(a, b) for a, b in zip(*results))
    np.testing.assert_array_equal(results[0][0], np.zeros(shape, np.float32))  # (x̂ = 0 whatever x is)


def test_the_incoming_gradient_is_left_as_it_was():
    """dL/dx's passes write only over arrays the backward made: the gradient it was given keeps its values."""
    rng = np.random.default_rng(4)
    x = autograd.tensor(rng.standard_normal((8, 16, 4, 4)).astype(np.float32), requires_grad=True)
    weight, bias = (autograd.tensor(np.ones(16, np.float32), requires_grad=True) for _ in range(2))
    grad = rng.standard_normal((8, 16, 4, 4)).astype(np.float32)
    given = autograd.tensor(grad)
    F.group_norm(x, 4, weight, bias).backward(given)
    np.testing.assert_array_equal(given.numpy(), grad)
    np.testing.assert_allclose(bias.grad.numpy(), grad.sum((0, 2, 3)), rtol=1e-5)


@pytest.mark.parametrize("name", list(FUNCTIONS))
@pytest.mark.parametrize("layout", ["contiguous", "transposed", "broadcast"])
def test_gradients_agree_with_pytorchs(name, layout):
    torch = pytest.importorskip("torch")
    function, parameter_shape = FUNCTIONS[name]
    rng = np.random.default_rng(11)
    arrays = [(rng.standard_normal(SHAPE) * 2 + 1).astype(np.float32),
              (1 + rng.standard_normal(parameter_shape)).astype(np.float32),
              rng.standard_normal(parameter_shape).astype(np.float32)]
    grad = _gradient(layout, np.float32, rng)
    results = []
    for lib, functional in ((autograd, F), (torch, torch.nn.functional)):
        leaves = [lib.tensor(a, requires_grad=True) for a in arrays]
        function(functional, *leaves).backward(grad(lib))
        results.append([t.grad.numpy() for t in leaves])
    for ours, theirs in zip(*results):
        # (a gradient of one value broadcast leaves dL/dx only rounding: the scale of the terms it cancels)
        np.testing.assert_allclose(ours, theirs, rtol=2e-4, atol=2e-5 * max(np.abs(theirs).max(), 1.0))
