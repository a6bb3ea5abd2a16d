"""Second derivatives of the activations: the piecewise-linear ones (leaky_relu, hardtanh, relu6,
threshold, hardshrink, softshrink, rrelu in eval) have a first derivative that is a graph of its own,
so that their second derivative exists and is zero, as PyTorch's fused activations have; the smooth
ones (elu, celu, selu, hardswish) have PyTorch's second derivative. Values, first and second
derivatives against PyTorch where it is installed, asserted values without it, finite differences
in float64 off the kinks, the in-place forms and the dtypes."""

import inspect
import warnings

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from autograd.backend import to_numpy
from autograd.ops import piecewise_linear

try:
    import torch
    import torch.nn.functional as torch_F
except ImportError:
    torch = torch_F = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

OURS = (autograd, F)
THEIRS = (torch, torch_F)

# (module, its functional, x) -> y, for both libraries
PIECEWISE_LINEAR = {
    "leaky_relu": lambda t, F, x: F.leaky_relu(x, 0.1),
    "leaky_relu default": lambda t, F, x: F.leaky_relu(x),
    "leaky_relu steep": lambda t, F, x: F.leaky_relu(x, 2.0),
    "leaky_relu negative slope": lambda t, F, x: F.leaky_relu(x, -0.5),
    "leaky_relu flat": lambda t, F, x: F.leaky_relu(x, 0.0),
    "hardtanh": lambda t, F, x: F.hardtanh(x),
    "hardtanh bounds": lambda t, F, x: F.hardtanh(x, -0.5, 2.0),
    "relu6": lambda t, F, x: F.relu6(x),
    "threshold": lambda t, F, x: F.threshold(x, 0.1, 20.0),
    "threshold at a kink": lambda t, F, x: F.threshold(x, 1.0, -3.0),
    "hardshrink": lambda t, F, x: F.hardshrink(x),
    "hardshrink wide": lambda t, F, x: F.hardshrink(x, 1.0),
    "softshrink": lambda t, F, x: F.softshrink(x),
    "softshrink wide": lambda t, F, x: F.softshrink(x, 1.0),
    "rrelu eval": lambda t, F, x: F.rrelu(x, 0.1, 0.3),
    "top-level threshold": lambda t, F, x: t.threshold(x, 0.5, -1.0),
    "hardshrink method": lambda t, F, x: x.hardshrink(0.25),
    "top-level rrelu": lambda t, F, x: t.rrelu(x),
}

# every kink of the cases above, and the infinities (a NaN's gradient is no contract in PyTorch: its
# scalar and vectorised kernels disagree, see autograd/ops/piecewise_linear.py)
POINTS = [-np.inf, -7.0, -6.0, -3.0, -2.0, -1.0, -0.5, -0.25, -0.0, 0.0, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 6.0,
          7.0, np.inf]
WEIGHTS = np.linspace(0.5, 2.0, len(POINTS))  # dL/dy: not all ones, so that dL/dy ⊙ a(x) is seen
OUTER = np.linspace(-1.0, 1.0, len(POINTS))  # the weights of the first derivative, for the second


def derivatives(library, activation, points, dtype):
    """y, dy/dx ⊙ v (v = WEIGHTS, itself a leaf), d(Σ (dy/dx ⊙ v) ⊙ w)/dx and d(...)/dv (w = OUTER)."""
    t, functional = library
    x = t.tensor(points, dtype=getattr(t, dtype), requires_grad=True)
    v = t.tensor(WEIGHTS[: len(points)], dtype=getattr(t, dtype), requires_grad=True)
    w = t.tensor(OUTER[: len(points)], dtype=getattr(t, dtype))
    y = activation(t, functional, x)
    g, = t.autograd.grad(y, x, grad_outputs=v, create_graph=True)
    assert g.grad_fn is not None  # the first derivative is a graph that depends on x
    gg, gv = t.autograd.grad((g * w).sum(), (x, v))
    return y, g, gg, gv


def _numpy(t):
    return t.detach().numpy()


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(PIECEWISE_LINEAR))
def test_values_and_first_and_second_derivatives_match_torch(name, dtype):
    ours = derivatives(OURS, PIECEWISE_LINEAR[name], POINTS, dtype)
    theirs = derivatives(THEIRS, PIECEWISE_LINEAR[name], POINTS, dtype)
    for what, a, b in zip(("y", "dy/dx", "d²y/dx²", "d(dy/dx ⊙ v)/dv"), ours, theirs):
        assert str(a.dtype).replace("autograd.", "") == str(b.dtype).replace("torch.", ""), what
        np.testing.assert_array_equal(_numpy(a), _numpy(b), err_msg=f"{name}: {what}")
    np.testing.assert_array_equal(_numpy(ours[2]), 0.0)  # the second derivative is zero, as PyTorch's


@needs_torch
@pytest.mark.parametrize("name", sorted(PIECEWISE_LINEAR))
def test_nodes_are_named_as_torch_names_them(name):
    def names(t, functional):
        x = t.tensor([-1.0, 0.5, 2.0], requires_grad=True)
        y = PIECEWISE_LINEAR[name](t, functional, x)
        g, = t.autograd.grad(y.sum(), x, create_graph=True)
        return y.grad_fn.name(), g.grad_fn.name()

    assert names(*OURS) == names(*THEIRS)


@needs_torch
@pytest.mark.parametrize("name", sorted(PIECEWISE_LINEAR))
def test_values_at_nan_match_torch(name):
    points = [np.nan, -1.0, 0.0, 2.0] * 5  # 20 elements: PyTorch's vectorised kernels as well
    ours = PIECEWISE_LINEAR[name](*OURS, autograd.tensor(points))
    theirs = PIECEWISE_LINEAR[name](*THEIRS, torch.tensor(points))
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


# -- the smooth activations beside them: PyTorch's second derivative, where PyTorch is consistent ----

SMOOTH = {
    "elu": lambda t, F, x: F.elu(x),
    "elu alpha": lambda t, F, x: F.elu(x, 2.0),
    "celu": lambda t, F, x: F.celu(x, 0.5),
    "selu": lambda t, F, x: F.selu(x),
    "hardswish": lambda t, F, x: F.hardswish(x),
}
# off 0 for elu, celu and selu: at 0 PyTorch's first derivative is α (the x <= 0 branch) but its second
# derivative is 0 (the x < 0 branch); ours is α, the derivative of that first derivative's branch
SMOOTH_POINTS = [-7.0, -3.0, -2.0, -1.0, -0.5, -0.25, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 6.0]


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(SMOOTH))
def test_smooth_activations_second_derivatives_match_torch(name, dtype):
    ours = derivatives(OURS, SMOOTH[name], SMOOTH_POINTS, dtype)
    theirs = derivatives(THEIRS, SMOOTH[name], SMOOTH_POINTS, dtype)
    for what, a, b in zip(("y", "dy/dx", "d²y/dx²", "d(dy/dx ⊙ v)/dv"), ours, theirs):
        assert str(a.dtype).replace("autograd.", "") == str(b.dtype).replace("torch.", ""), what
        np.testing.assert_allclose(_numpy(a), _numpy(b), rtol=1e-5, atol=1e-7, err_msg=f"{name}: {what}")


@needs_torch
def test_hardsigmoid_second_derivative_is_zero_where_torch_has_none():
    # PyTorch raises "derivative for aten::hardsigmoid_backward is not implemented"; the true second
    # derivative, 0 off the kinks at ±3, is what we give (hardsigmoid is hardtanh(x/6 + 1/2, 0, 1))
    points = [-7.0, -3.0, -2.0, -0.5, 0.0, 1.0, 2.9, 3.0, 7.0]
    x = torch.tensor(points, requires_grad=True)
    g_theirs, = torch.autograd.grad(torch_F.hardsigmoid(x).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="not implemented"):
        torch.autograd.grad(g_theirs.sum(), x)
    x = autograd.tensor(points, requires_grad=True)
    g, = autograd.grad(F.hardsigmoid(x).sum(), x, create_graph=True)
    gg, = autograd.grad(g.sum(), x)
    np.testing.assert_allclose(g.detach().numpy(), g_theirs.detach().numpy(), rtol=1e-6)
    np.testing.assert_array_equal(gg.numpy(), 0.0)
    assert gg.dtype == autograd.float32


def test_hardsigmoid_at_nan_and_infinity_is_pytorchs_and_its_formula_agrees_with_its_chain():
    points = [np.nan, np.inf, -np.inf, -3.0, 3.0, -1.5, 0.0, 2.0]
    x = autograd.tensor(points, requires_grad=True)
    y = F.hardsigmoid(x)
    (g,) = autograd.grad(y.sum(), x)
    np.testing.assert_allclose(y.detach().numpy(), [np.nan, 1.0, 0.0, 0.0, 1.0, 0.25, 0.5, 2 / 6 + 0.5], rtol=1e-6)
    np.testing.assert_array_equal(g.numpy(), np.float32([0.0, 0.0, 0.0, 0.0, 0.0, 1 / 6, 1 / 6, 1 / 6]))
    assert y.grad_fn.name() == "HardsigmoidBackward0"
    # (the formula rounds as PyTorch's kernel, (x + 3) / 6; the chain's line x · 1/6 + 1/2 within an ulp of it)
    np.testing.assert_allclose(y.detach().numpy(), to_numpy(y.grad_fn.pieces.chain_values(x.detach()._data)),
                               rtol=2e-7)
    if torch is not None:  # PyTorch's gradient at NaN is 0 too (hardsigmoid_backward tests -3 < x < 3)
        theirs = torch.tensor(points, requires_grad=True)
        their_y = torch_F.hardsigmoid(theirs)
        their_y.sum().backward()
        np.testing.assert_array_equal(y.detach().numpy(), their_y.detach().numpy())
        np.testing.assert_array_equal(g.numpy(), theirs.grad.numpy())


def test_hardsigmoid_rounds_as_pytorchs_kernels_in_every_dtype():
    """min(max(x + 3, 0), 6) / 6 (float16 through float32), and a slope of 1/6 rounded to float32 even in
    float64 (PyTorch's backward writes 1.0f / 6.0f): bit for bit, checked on values that tell them apart."""
    x = np.array([-2.9, -1.1, -0.7, 0.1, 0.3, 1.3, 2.2, 2.9])
    for dtype, expected_slope in ((autograd.float64, float(np.float32(1 / 6))), (autograd.float32, np.float32(1 / 6))):
        t = autograd.tensor(x, dtype=dtype, requires_grad=True)
        y = F.hardsigmoid(t)
        (g,) = autograd.grad(y.sum(), t)
        wide = x.astype(t.numpy().dtype)
        np.testing.assert_array_equal(y.detach().numpy(), np.clip(wide + 3, 0, 6) / wide.dtype.type(6))
        assert (g.numpy() == expected_slope).all()
    half = F.hardsigmoid(autograd.tensor(x, dtype=autograd.float16)).numpy()
    np.testing.assert_array_equal(half, (np.clip(x.astype(np.float16).astype(np.float32) + 3, 0, 6) / 6)
                                  .astype(np.float16))
    if torch is not None:
        for dtype in ("float16", "float32", "float64"):
            theirs = torch_F.hardsigmoid(torch.tensor(x).to(getattr(torch, dtype))).numpy()
            np.testing.assert_array_equal(F.hardsigmoid(autograd.tensor(x, dtype=getattr(autograd, dtype))).numpy(),
                                          theirs)


# -- without PyTorch: the values asserted ---------------------------------------------------------

X = [-2.0, -1.0, -0.5, 0.0, 0.3, 1.0, 7.0]
EXPECTED = {  # y, dy/dx (at a kink: the slope of the piece that holds it, as PyTorch's kernels)
    "leaky_relu": ([-0.2, -0.1, -0.05, 0.0, 0.3, 1.0, 7.0], [0.1, 0.1, 0.1, 0.1, 1.0, 1.0, 1.0]),
    "hardtanh": ([-1.0, -1.0, -0.5, 0.0, 0.3, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]),
    "relu6": ([0.0, 0.0, 0.0, 0.0, 0.3, 1.0, 6.0], [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0]),
    "threshold": ([20.0, 20.0, 20.0, 20.0, 0.3, 1.0, 7.0], [0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]),
    "hardshrink": ([-2.0, -1.0, 0.0, 0.0, 0.0, 1.0, 7.0], [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]),
    "softshrink": ([-1.5, -0.5, 0.0, 0.0, 0.0, 0.5, 6.5], [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 1.0]),
    "rrelu eval": ([-0.4, -0.2, -0.1, 0.0, 0.3, 1.0, 7.0], [0.2, 0.2, 0.2, 0.2, 1.0, 1.0, 1.0]),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_values_and_derivatives_without_torch(name):
    y, g, gg, gv = derivatives(OURS, PIECEWISE_LINEAR[name], X, "float32")
    values, slopes = EXPECTED[name]
    np.testing.assert_allclose(y.detach().numpy(), values, rtol=1e-6)
    np.testing.assert_allclose(g.detach().numpy(), np.array(slopes) * WEIGHTS[: len(X)], rtol=1e-6)
    np.testing.assert_array_equal(gg.numpy(), 0.0)  # d²y/dx² = 0
    np.testing.assert_allclose(gv.numpy(), np.array(slopes) * OUTER[: len(X)], rtol=1e-6, atol=1e-7)
    for tensor in (y, g, gg, gv):  # float32 in, float32 out, gradients included
        assert tensor.dtype == autograd.float32


def test_the_example_of_the_issue():
    x = autograd.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    g, = autograd.grad(F.leaky_relu(x, 0.1).sum(), x, create_graph=True)
    gg, = autograd.grad(g.sum(), x)
    np.testing.assert_allclose(g.detach().numpy(), [0.1, 1.0, 1.0], rtol=1e-7)
    np.testing.assert_array_equal(gg.numpy(), [0.0, 0.0, 0.0])


def test_a_third_derivative_is_zero_too():
    x = autograd.tensor([-1.0, 0.5, 2.0], dtype=autograd.float64, requires_grad=True)
    g, = autograd.grad((F.hardtanh(x, -0.5, 1.0) * x * x).sum(), x, create_graph=True)
    gg, = autograd.grad(g.sum(), x, create_graph=True)
    ggg, = autograd.grad(gg.sum(), x)
    # y = x³ on (-0.5, 1), -0.5 x² and x² outside: y''' = 6 inside, 0 outside
    np.testing.assert_allclose(ggg.numpy(), [0.0, 6.0, 0.0])


def test_rrelu_in_training_has_its_drawn_slopes_as_derivative_and_zero_second_derivative():
    x = autograd.tensor([-2.0, -1.0, -0.0, 0.0, 0.5, 3.0], requires_grad=True)
    y = F.rrelu(x, 0.1, 0.3, training=True)
    g, = autograd.grad(y.sum(), x, create_graph=True)
    gg, = autograd.grad(g.sum(), x)
    slopes = g.detach().numpy()
    assert np.all((slopes[:4] >= 0.1) & (slopes[:4] <= 0.3)) and np.all(slopes[4:] == 1.0)
    np.testing.assert_allclose(y.detach().numpy()[:2], [-2.0 * slopes[0], -slopes[1]], rtol=1e-6)
    np.testing.assert_array_equal(gg.numpy(), 0.0)
    assert y.grad_fn.name() == "RreluWithNoiseBackward0" and y.dtype == g.dtype == gg.dtype == autograd.float32
    if torch is not None:  # the same nodes and a zero second derivative there too
        x = torch.tensor([-2.0, -1.0, 0.5], requires_grad=True)
        y = torch_F.rrelu(x, 0.1, 0.3, training=True)
        g, = torch.autograd.grad(y.sum(), x, create_graph=True)
        assert y.grad_fn.name() == "RreluWithNoiseBackward0"
        np.testing.assert_array_equal(torch.autograd.grad(g.sum(), x)[0].numpy(), 0.0)


@pytest.mark.parametrize("name", sorted(PIECEWISE_LINEAR))
def test_gradgradcheck_in_float64_off_the_kinks(name):
    x = autograd.tensor([-6.5, -2.3, -0.7, -0.3, 0.2, 0.7, 1.3, 2.6, 6.5], dtype=autograd.float64,
                        requires_grad=True)
    # times sin x, so that the first derivative is not constant and the check sees its graph
    function = lambda x: PIECEWISE_LINEAR[name](*OURS, x) * x.sin()  # noqa: E731
    assert autograd.gradcheck(function, (x,))
    assert autograd.gradgradcheck(function, (x,))


@pytest.mark.parametrize("name", sorted(PIECEWISE_LINEAR))
def test_fast_formula_agrees_with_the_chain_of_tests(name):
    # an activation may compute its values with a faster formula than its chain of tests: the same numbers
    points = np.array([np.nan, *POINTS, 0.7, -0.7, 1e30, -1e30, 1e-30, -1e-30])
    for dtype in (np.float32, np.float64):
        x = autograd.tensor(points.astype(dtype), requires_grad=True)
        y = PIECEWISE_LINEAR[name](*OURS, x)
        np.testing.assert_array_equal(y.detach().numpy(), to_numpy(y.grad_fn.pieces.chain_values(x.detach()._data)))


# -- in place ------------------------------------------------------------------------------------

IN_PLACE = {  # (module, functional, nn) -> the in-place form, and its out-of-place twin
    "leaky_relu_": (lambda t, F, nn, h: F.leaky_relu_(h, 0.2), lambda t, F, nn, h: F.leaky_relu(h, 0.2)),
    "leaky_relu inplace": (lambda t, F, nn, h: F.leaky_relu(h, 0.2, inplace=True),
                           lambda t, F, nn, h: F.leaky_relu(h, 0.2)),
    "hardtanh_": (lambda t, F, nn, h: F.hardtanh_(h, -0.5, 0.5), lambda t, F, nn, h: F.hardtanh(h, -0.5, 0.5)),
    "hardtanh inplace": (lambda t, F, nn, h: F.hardtanh(h, inplace=True), lambda t, F, nn, h: F.hardtanh(h)),
    "relu6 inplace": (lambda t, F, nn, h: F.relu6(h, inplace=True), lambda t, F, nn, h: F.relu6(h)),
    "threshold inplace": (lambda t, F, nn, h: F.threshold(h, 0.1, 2.0, inplace=True),
                          lambda t, F, nn, h: F.threshold(h, 0.1, 2.0)),
    "F.threshold_": (lambda t, F, nn, h: F.threshold_(h, 0.1, 2.0), lambda t, F, nn, h: F.threshold(h, 0.1, 2.0)),
    "threshold_": (lambda t, F, nn, h: t.threshold_(h, 0.1, 2.0), lambda t, F, nn, h: t.threshold(h, 0.1, 2.0)),
    "rrelu_": (lambda t, F, nn, h: t.rrelu_(h, 0.1, 0.3), lambda t, F, nn, h: t.rrelu(h, 0.1, 0.3)),
    "F.rrelu_": (lambda t, F, nn, h: F.rrelu_(h), lambda t, F, nn, h: F.rrelu(h)),
    "LeakyReLU": (lambda t, F, nn, h: nn.LeakyReLU(0.3, inplace=True)(h), lambda t, F, nn, h: nn.LeakyReLU(0.3)(h)),
    "Hardtanh": (lambda t, F, nn, h: nn.Hardtanh(-0.5, 1.5, inplace=True)(h),
                 lambda t, F, nn, h: nn.Hardtanh(-0.5, 1.5)(h)),
    "ReLU6": (lambda t, F, nn, h: nn.ReLU6(inplace=True)(h), lambda t, F, nn, h: nn.ReLU6()(h)),
    "Threshold": (lambda t, F, nn, h: nn.Threshold(0.1, 20.0, inplace=True)(h),
                  lambda t, F, nn, h: nn.Threshold(0.1, 20.0)(h)),
}
LIBRARIES = {"ours": (autograd, F, nn), "torch": (torch, torch_F, torch and torch.nn)}


def in_place_run(library, form, dtype="float32"):
    """h = x ⊙ w (a non-leaf), the activation's output y (h itself for an in-place form): whether it was
    written into h, and y and the first and second derivatives of Σ y³ with respect to w."""
    t, functional, layers = library
    w = t.tensor([[0.5, -1.0, 3.0], [2.0, -0.25, -4.0]], dtype=getattr(t, dtype), requires_grad=True)
    x = t.tensor([[1.0, 2.0, 0.5], [-3.0, 0.5, 2.0]], dtype=getattr(t, dtype))
    h = x * w
    before = h._version
    out = form(t, functional, layers, h)
    written = out is h and h._version > before
    g, = t.autograd.grad((out * out * out).sum(), w, create_graph=True)
    gg, = t.autograd.grad(g.sum(), w)
    return written, _numpy(out), _numpy(g), _numpy(gg), g.dtype, gg.dtype


@pytest.mark.parametrize("name", sorted(IN_PLACE))
def test_in_place_forms_write_into_their_input_and_differentiate_twice(name):
    in_place, out_of_place = IN_PLACE[name]
    written, out, g, gg, *dtypes = in_place_run(LIBRARIES["ours"], in_place)
    _, expected, expected_g, expected_gg, *_ = in_place_run(LIBRARIES["ours"], out_of_place)
    assert written
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_allclose(g, expected_g, rtol=1e-6)
    np.testing.assert_allclose(gg, expected_gg, rtol=1e-6)
    assert dtypes == [autograd.float32, autograd.float32]


@needs_torch
@pytest.mark.parametrize("name", sorted(IN_PLACE))
def test_in_place_forms_match_torch(name):
    ours = in_place_run(LIBRARIES["ours"], IN_PLACE[name][0], "float64")
    theirs = in_place_run(LIBRARIES["torch"], IN_PLACE[name][0], "float64")
    assert ours[0] and theirs[0]
    for a, b in zip(ours[1:4], theirs[1:4]):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("library", ["ours", pytest.param("torch", marks=needs_torch)])
@pytest.mark.parametrize("name", ["leaky_relu_", "hardtanh_", "threshold_", "LeakyReLU"])
def test_in_place_forms_keep_the_version_rules(library, name):
    t, functional, layers = LIBRARIES[library]
    in_place = IN_PLACE[name][0]
    w = t.tensor([0.5, -1.0, 2.0], requires_grad=True)
    h = w * 1.5
    saved = h * h  # saves h for its backward
    in_place(t, functional, layers, h)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        saved.sum().backward()
    with pytest.raises(RuntimeError, match="leaf"):
        in_place(t, functional, layers, w)
    with t.no_grad():  # without grad mode a leaf may be written
        in_place(t, functional, layers, w)
    assert w.requires_grad and w.grad_fn is None


# -- dtypes and errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(PIECEWISE_LINEAR))
def test_float64_stays_float64_and_a_numpy_number_does_not_widen_float32(name):
    x = autograd.tensor([-1.0, 0.5, 2.0], dtype=autograd.float64, requires_grad=True)
    assert PIECEWISE_LINEAR[name](*OURS, x).dtype == autograd.float64
    x32 = autograd.tensor([-1.0, 0.5, 2.0], requires_grad=True)
    y = F.leaky_relu(x32, np.float64(0.1)) + F.hardtanh(x32, np.float64(-0.5), np.float64(0.5))
    g, = autograd.grad(y.sum(), x32, create_graph=True)
    assert y.dtype == g.dtype == autograd.float32


INTEGER_CASES = {
    "hardtanh": lambda F, x: F.hardtanh(x, -1.5, 1.5),  # bounds truncated to -1, 1
    "relu6": lambda F, x: F.relu6(x),
    "threshold": lambda F, x: F.threshold(x, -1.5, 7),  # -1 <= trunc(-1.5) = -1
}


@pytest.mark.parametrize("name", sorted(INTEGER_CASES))
def test_integer_tensors_keep_their_dtype(name):
    x = autograd.tensor([-3, -2, -1, 0, 1, 2, 7])
    y = INTEGER_CASES[name](F, x)
    expected = {"hardtanh": [-1, -1, -1, 0, 1, 1, 1], "relu6": [0, 0, 0, 0, 1, 2, 6],
                "threshold": [7, 7, 7, 0, 1, 2, 7]}[name]
    assert y.dtype == autograd.int64
    np.testing.assert_array_equal(y.numpy(), expected)
    if torch is not None:
        np.testing.assert_array_equal(y.numpy(), INTEGER_CASES[name](torch_F, torch.tensor(x.numpy())).numpy())


@pytest.mark.parametrize("library", ["ours", pytest.param("torch", marks=needs_torch)])
def test_dtypes_without_the_kernel_are_refused(library):
    t, functional, _ = LIBRARIES[library]
    integers, complexes = t.tensor([1, -2]), t.tensor([1 + 1j])
    for call in (lambda x: functional.leaky_relu(x), lambda x: functional.hardshrink(x),
                 lambda x: functional.softshrink(x)):
        with pytest.raises(NotImplementedError):
            call(integers)
        with pytest.raises(NotImplementedError):
            call(complexes)
    with pytest.raises(NotImplementedError, match="'leaky_relu_cpu' not implemented|\"leaky_relu_cpu\""):
        functional.leaky_relu(integers)
    with pytest.raises(RuntimeError, match="Bool inputs not supported for hardtanh"):
        functional.hardtanh(t.tensor([True, False]))
    with pytest.raises(ValueError, match="min_val cannot be greater than max_val"):
        functional.hardtanh(t.tensor([1.0]), 2.0, 1.0)


# -- nn.Hardtanh's deprecated names ------------------------------------------------------------------

def test_hardtanh_layer_takes_the_deprecated_min_value_and_max_value():
    with pytest.warns(FutureWarning, match="`min_value` is deprecated and renamed to `min_val`"):
        layer = nn.Hardtanh(min_value=-2.0)
    assert (layer.min_val, layer.max_val) == (-2.0, 1.0)
    with pytest.warns(FutureWarning, match="`max_value` is deprecated and renamed to `max_val`"):
        layer = nn.Hardtanh(-0.5, max_value=3.0)
    assert (layer.min_val, layer.max_val) == (-0.5, 3.0)
    np.testing.assert_array_equal(layer(autograd.tensor([-1.0, 0.0, 4.0])).numpy(), [-0.5, 0.0, 3.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.Hardtanh(-0.5, 0.5)  # the current names: no warning
    with pytest.warns(FutureWarning), pytest.raises(AssertionError, match="must be greater than min_val"):
        nn.Hardtanh(min_value=2.0)


@needs_torch
def test_hardtanh_layer_has_torchs_signature():
    ours = inspect.signature(nn.Hardtanh.__init__).parameters
    theirs = inspect.signature(torch.nn.Hardtanh.__init__).parameters
    assert [(p.name, p.default) for p in ours.values()] == [(p.name, p.default) for p in theirs.values()]


def test_piecewise_linear_nodes_are_listed_with_the_primitives():
    assert {"PiecewiseLinear", "PiecewiseLinearGrad"} <= set(autograd.REGISTRY)
    assert piecewise_linear.PiecewiseLinear.__module__ == "autograd.ops.piecewise_linear"
