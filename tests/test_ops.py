"""Every op in the registry: gradients against finite differences (float64), over
hypothesis-drawn shapes and values, broadcasting included; second derivatives too."""

import importlib
import pathlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from autograd import REGISTRY, Tensor
from autograd.ops.conversion import Move

SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=3)


def arrays(shape, low=-2.0, high=2.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(low, high, allow_nan=False, width=64))


def away_from(values, points, gap=0.05):
    """Move values off the points where an op has a kink (relu, abs, clamp)."""
    for point in points:
        close = np.abs(values - point) < gap
        values = np.where(close, point + np.where(values >= point, gap, -gap) * 2, values)
    return values


def leaf(array):
    return Tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


@st.composite
def unary(draw, low=-2.0, high=2.0, kinks=()):
    x = draw(arrays(draw(SHAPES), low, high))
    return [leaf(away_from(x, kinks))]


@st.composite
def broadcast_pair(draw, low=-2.0, high=2.0, distinct=False, kinks=()):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
    x = away_from(draw(arrays(shapes.input_shapes[0], low, high)), kinks)
    y = draw(arrays(shapes.input_shapes[1], low, high))
    if distinct:  # max/min: keep the two apart so the kink is not sampled
        y = np.where(np.abs(x - y) < 0.1, y + 0.3, y)
    return [leaf(x), leaf(y)]


@st.composite
def with_dim(draw, min_dims=1, min_side=1):
    shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=3, min_side=min_side, max_side=3))
    x = leaf(draw(arrays(shape)))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    return [x], dim


@st.composite
def distinct_values(draw, min_side=1):
    """Arrays with well separated entries (max/min have no ties to sample)."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=min_side, max_side=3))
    size = int(np.prod(shape))
    values = np.random.default_rng(draw(st.integers(0, 1000))).permutation(size) * 0.5
    return [leaf(values.reshape(shape))]


@st.composite
def matmul_pair(draw):
    batch = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=2, max_side=2))
    m, k, n = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    vector_a, vector_b = draw(st.booleans()), draw(st.booleans())
    shape_a = (k,) if vector_a else batch.input_shapes[0] + (m, k)
    shape_b = (k,) if vector_b else batch.input_shapes[1] + (k, n)
    return [leaf(draw(arrays(shape_a))), leaf(draw(arrays(shape_b)))]


def _positive_steps(index):
    """A basic index with its negative slice steps made positive (PyTorch, and chainrule, refuse them)."""
    def positive(i):
        return slice(i.start, i.stop, -i.step) if isinstance(i, slice) and i.step is not None and i.step < 0 else i
    return tuple(positive(i) for i in index) if isinstance(index, tuple) else positive(index)


@st.composite
def indexed(draw):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=2, max_side=4))
    x = leaf(draw(arrays(shape)))
    kind = draw(st.sampled_from(["basic", "ints", "mask", "repeat"]))
    if kind == "basic":
        index = draw(hnp.basic_indices(shape, allow_newaxis=True, allow_ellipsis=True).map(_positive_steps))
    elif kind == "ints":
        index = np.array(draw(st.lists(st.integers(-shape[0], shape[0] - 1), min_size=1, max_size=5)))
    elif kind == "mask":
        index = draw(hnp.arrays(bool, shape))
    else:
        index = (np.array([0, 0, 1, 0]), Ellipsis)
    return [x], index


# Each registered op, how to draw its inputs, and how to call it through the public API.
CASES = {
    "Add": (broadcast_pair(), lambda x, y: x + y),
    "Sub": (broadcast_pair(), lambda x, y: x - y),
    "Mul": (broadcast_pair(), lambda x, y: x * y),
    "Div": (broadcast_pair(0.5, 2.0), lambda x, y: x / y),
    "Pow": (broadcast_pair(0.5, 2.0), lambda x, y: x**y),
    "PowConstant": (unary(0.5, 2.0), lambda x: x**2 + x**-1.5 + x**3),
    "Maximum": (broadcast_pair(distinct=True), autograd.maximum),
    "Minimum": (broadcast_pair(distinct=True), autograd.minimum),
    "Where": (broadcast_pair(kinks=(0.3,)), lambda x, y: autograd.where(x > 0.3, x, y)),
    "Neg": (unary(), lambda x: -x),
    # a tensor with a Python number: the number is a constant of the op
    "Scale": (unary(), lambda x: x * 2.5 + 3 * x - x * -0.5),
    "Shift": (unary(), lambda x: (x + 1.5) * (2 + x) * (x - 0.25)),
    "DivConstant": (unary(), lambda x: x / 2.5 + x.div(-3) + autograd.true_divide(x, 0.7)),
    "Exp": (unary(), autograd.exp),
    "Log": (unary(0.2, 3.0), autograd.log),
    "Sqrt": (unary(0.2, 3.0), autograd.sqrt),
    "Sin": (unary(), autograd.sin),
    "Cos": (unary(), autograd.cos),
    "Tanh": (unary(), autograd.tanh),
    "Sigmoid": (unary(-6.0, 6.0), autograd.sigmoid),
    "Relu": (unary(kinks=(0.0,)), autograd.relu),
    "Abs": (unary(kinks=(0.0,)), autograd.abs),
    "Clamp": (unary(kinks=(-0.5, 1.0)), lambda x: x.clamp(-0.5, 1.0)),
    # through float32 and back: finite differences need a step float32 can resolve
    "Cast": (unary(), lambda x: x.float().double() * 3.0, {"eps": 1e-2, "atol": 1e-3}),
    "Clone": (unary(), lambda x: x.clone() * x),
    # to host memory and back (the devices differ under CuPy only; under NumPy both moves copy)
    "Move": (unary(), lambda x: Move.apply(Move.apply(x, to_host=True) * 2.0, to_host=False) * x),
    "Sum": (with_dim(), lambda x, dim: x.sum(dim) + x.sum(dim, keepdim=True).sum() + x.sum()),
    "Mean": (with_dim(), lambda x, dim: x.mean(dim) + x.mean(dim, keepdim=True).sum() + x.mean()),
    "LogSumExp": (with_dim(), lambda x, dim: x.logsumexp(dim)),
    "Softmax": (with_dim(), lambda x, dim: x.softmax(dim) * x),
    "LogSoftmax": (with_dim(), lambda x, dim: x.log_softmax(dim) * x),
    # the softmaxes' backward nodes, checked as functions of x through a gradient of a gradient
    "SoftmaxGrad": (with_dim(), lambda x, dim: autograd.grad((x.softmax(dim) * x.sin()).sum(), x,
                                                             create_graph=True)[0]),
    "LogSoftmaxGrad": (with_dim(), lambda x, dim: autograd.grad((x.log_softmax(dim) * x.sin()).sum(), x,
                                                                create_graph=True)[0]),
    # tanh's and sigmoid's backward nodes, as functions of x through a gradient of a gradient
    "TanhGrad": (unary(), lambda x: autograd.grad((x.tanh() * x.sin()).sum(), x, create_graph=True)[0]),
    "ReluGrad": (unary(kinks=(0.0,)), lambda x: autograd.grad((x.relu() * x.sin()).sum(), x, create_graph=True)[0]),
    "SigmoidGrad": (unary(-6.0, 6.0), lambda x: autograd.grad((x.sigmoid() * x.sin()).sum(), x,
                                                                create_graph=True)[0]),
    "Extremum": (distinct_values(),
                 lambda x: x.max() + x.min(0).values.sum() + x.max(-1, keepdim=True).values.sum()),
    "MatMul": (matmul_pair(), lambda a, b: a @ b),
    "Reshape": (unary(), lambda x: x.reshape(-1).flatten().unsqueeze(0).squeeze(0)),
    "Permute": (with_dim(min_dims=2), lambda x, dim: x.transpose(dim, 0).T),
    "Expand": (unary(), lambda x: x.unsqueeze(0).expand(2, *x.shape)),
    "GetItem": (indexed(), lambda x, index: x[index]),
    "IndexAdd": (indexed(), lambda x, index: x[index] * x[index]),
    "Cat": (with_dim(), lambda x, dim: autograd.cat([x, x * 2, x.exp()], dim)),
    "Erf": (unary(-4.0, 4.0), lambda x: x.erf()),
    "Softplus": (unary(-30.0, 30.0), lambda x: x.softplus()),
}

# Composite ops (no primitive of their own) that need gradients checked too.
COMPOSITES = {
    "mean": (with_dim(), lambda x, dim: x.mean(dim) + x.mean()),
    "var": (with_dim(min_side=2), lambda x, dim: x.var(dim) + x.var(dim, unbiased=False, keepdim=True).sum()),
    "std": (distinct_values(min_side=2), lambda x: x.std() + x.std(0, correction=0).sum()),
    "stack": (with_dim(), lambda x, dim: autograd.stack([x, x.sin()], dim)),
    "clamp_tensor": (broadcast_pair(distinct=True), lambda x, y: x.clamp(min=y)),
}


def _every_case():
    """The cases here and the CASES of each tests/test_ops_*.py and tests/test_linalg_*.py (one file
    per family of ops)."""
    cases = dict(CASES)
    folder = pathlib.Path(__file__).parent
    for path in sorted([*folder.glob("test_ops_*.py"), *folder.glob("test_linalg_*.py")]):
        module = f"{__package__}.{path.stem}" if __package__ else path.stem  # tests/ is a package
        cases.update(getattr(importlib.import_module(module), "CASES", {}))
    return cases


def test_every_registered_op_has_a_case():
    autograd.ops.load_every_deferred()  # (the op modules loaded on first use register theirs then)
    core = {name for name, op in REGISTRY.items() if op.__module__.startswith("autograd.")}
    missing = core - set(_every_case())
    assert not missing, f"ops without a test case (add one to CASES in tests/test_ops*.py): {missing}"


def _run(case, data):
    strategy, fn, *options = case
    drawn = data.draw(strategy)
    if isinstance(drawn, tuple):  # (tensors, a non-tensor argument such as dim or index)
        tensors, argument = drawn
        return tensors, lambda *xs: fn(*xs, argument), *options
    return drawn, fn, *options


def assert_first_and_second_derivatives(case, data):
    """A case's first and second derivatives against finite differences (gradcheck, gradgradcheck), its tensors
    drawn from ``data``: the per-op files' check of primitives with double backward (test_ops_gelu.py, ...)."""
    tensors, fn = _run(case, data)
    assert autograd.gradcheck(fn, tensors)
    assert autograd.gradgradcheck(fn, tensors)


@pytest.mark.parametrize("name", sorted(CASES) + sorted(COMPOSITES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *options = _run({**CASES, **COMPOSITES}[name], data)
    assert autograd.gradcheck(fn, tensors, **(options[0] if options else {}))


SECOND_ORDER = ["Add", "Mul", "Div", "Pow", "PowConstant", "Exp", "Log", "Sqrt", "Sin", "Cos",
                "Tanh", "Sigmoid", "Relu", "Sum", "Mean", "LogSumExp", "Softmax", "LogSoftmax", "MatMul",
                "GetItem", "Cat", "Permute", "Expand", "Erf", "Softplus"]


def test_erf_matches_math_erf_to_double_precision():
    import math

    xs = np.concatenate([np.linspace(-7, 7, 20001), [0.0, 1e-300, -1e-8, 5.99999, 6.0, np.inf, -np.inf]])
    ours = autograd.Tensor(xs).erf().numpy()
    exact = np.array([math.erf(v) for v in xs])
    np.testing.assert_allclose(ours, exact, rtol=1e-14, atol=1e-15)


def test_softplus_is_finite_and_exact_at_extremes():
    x = autograd.Tensor([-1000.0, -30.0, 0.0, 30.0, 1000.0], dtype=np.float64, requires_grad=True)
    y = x.softplus()
    np.testing.assert_allclose(y.numpy(), [0.0, np.log1p(np.exp(-30.0)), np.log(2), 30 + np.log1p(np.exp(-30.0)),
                                           1000.0], rtol=1e-15)
    y.sum().backward()
    with np.errstate(over="ignore"):  # the reference σ(x) overflows to 1/inf = 0 at -1000, as it should
        expected = 1 / (1 + np.exp(-x.numpy()))
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-15)


@pytest.mark.parametrize("name", SECOND_ORDER)
@given(data=st.data())
def test_second_derivatives_match_finite_differences(name, data):
    tensors, fn, *_ = _run(CASES[name], data)
    assert autograd.gradgradcheck(fn, tensors)


def test_gradcheck_catches_a_wrong_derivative():
    class WrongExp(autograd.Primitive):
        saves_output = True

        def forward(self, x):
            return np.exp(x)

        def backward(self, grad, y, x):
            return (grad * y * 1.01,)

    try:
        with pytest.raises(autograd.GradcheckError, match="finite differences"):
            autograd.gradcheck(lambda x: WrongExp.apply(x), [leaf([0.5, 1.0])])
    finally:
        del REGISTRY["WrongExp"]


def _gradcheck_functions(torch):
    """Custom Functions whose backward is wrong in one way each, for gradcheck's options."""

    class WrongSquare(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x  # should be 2 x g

    class NotReentrant(torch.autograd.Function):
        calls = [0]

        @staticmethod
        def forward(ctx, x):
            return x * 3

        @staticmethod
        def backward(ctx, g):
            NotReentrant.calls[0] += 1
            return g * 3 if NotReentrant.calls[0] % 2 else g * (3 + 1e-9)  # drifts on every other call

    class NonzeroForZero(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2 if bool((g != 0).any()) else torch.ones_like(g)

    return WrongSquare, NotReentrant, NonzeroForZero


def gradcheck_options_program(torch):
    WrongSquare, NotReentrant, NonzeroForZero = _gradcheck_functions(torch)
    x = torch.tensor([0.5, -1.25, 2.0], dtype=torch.float64, requires_grad=True)
    results = {
        "quiet": torch.autograd.gradcheck(WrongSquare.apply, (x,), raise_exception=False),
        "fast": torch.autograd.gradcheck(WrongSquare.apply, (x,), raise_exception=False, fast_mode=True),
        "reentrant": torch.autograd.gradcheck(NotReentrant.apply, (x,), raise_exception=False),
        "nondet_tol": torch.autograd.gradcheck(NotReentrant.apply, (x,), nondet_tol=1e-6),
        "zero": torch.autograd.gradcheck(NonzeroForZero.apply, (x,), raise_exception=False),
        "batched": torch.autograd.gradcheck(lambda t: (t.tanh() * t[0], t.sum()), (x,), check_batched_grad=True,
                                            check_grad_dtypes=True),
        "gradgrad": torch.autograd.gradgradcheck(lambda t: t.sin() * t, (x,), raise_exception=False,
                                                 gen_non_contig_grad_outputs=True, check_batched_grad=True),
        "gradgrad wrong": torch.autograd.gradgradcheck(lambda t: WrongSquare.apply(t) * t, (x,),
                                                       raise_exception=False),
    }
    try:
        torch.autograd.gradcheck(WrongSquare.apply, (x,))
    except RuntimeError as e:  # PyTorch's GradcheckError is a RuntimeError
        results["raises"] = type(e).__name__
    return results


def test_gradcheck_options_as_pytorch():
    """raise_exception, nondet_tol (the reentrancy check), the zero-gradient check, fast_mode,
    check_batched_grad and gradgradcheck's keywords, with PyTorch's results."""
    ours = gradcheck_options_program(autograd)
    assert ours == {"quiet": False, "fast": False, "reentrant": False, "nondet_tol": True, "zero": False,
                    "batched": True, "gradgrad": True, "gradgrad wrong": False, "raises": "GradcheckError"}
    assert issubclass(autograd.GradcheckError, AssertionError)  # still a failed check, as before
    x = leaf([0.5, 1.0])
    assert autograd.gradcheck(lambda t: t.sin() * t, (x,), check_forward_ad=True)
    assert autograd.gradcheck(lambda t: t.sin() * t, (x,), check_forward_ad=True, check_backward_ad=False)
    with pytest.raises(NotImplementedError, match="check_batched_forward_grad"):
        autograd.gradcheck(lambda t: t * 2, (x,), check_batched_forward_grad=True)
    with pytest.raises(NotImplementedError, match="sparse"):
        autograd.gradcheck(lambda t: t * 2, (x,), masked=True)
    torch = pytest.importorskip("torch")
    assert gradcheck_options_program(torch) == ours


@pytest.mark.parametrize("transpose_a", [False, True])
@pytest.mark.parametrize("transpose_b", [False, True])
def test_matmul_with_transposed_operands_first_and_second_derivatives(transpose_a, transpose_b):
    from autograd.ops.linalg import MatMul

    rng = np.random.default_rng(0)
    a = leaf(rng.standard_normal((2, 4, 3) if transpose_a else (2, 3, 4)))
    b = leaf(rng.standard_normal((5, 4) if transpose_b else (4, 5)))

    def f(a, b):
        return MatMul.apply(a, b, transpose_a=transpose_a, transpose_b=transpose_b)

    expected = (np.swapaxes(a.numpy(), -1, -2) if transpose_a else a.numpy()) @ \
        (b.numpy().T if transpose_b else b.numpy())
    np.testing.assert_allclose(f(a, b).numpy(), expected)
    assert autograd.gradcheck(f, [a, b])
    assert autograd.gradgradcheck(f, [a, b])


def test_every_op_name_is_declared_once_and_bound():
    from autograd.ops.names import CLASHES, FUNCTIONS, INPLACE, METHODS

    assert not CLASHES, f"names declared by two ops: {CLASHES}"
    for name in METHODS:
        assert hasattr(Tensor, name), name
    for name in INPLACE:
        assert callable(getattr(Tensor, name)), name
    for name in FUNCTIONS:
        assert hasattr(autograd, name), name
    x = Tensor([1.0, -2.0])
    np.testing.assert_allclose(autograd.exp(x).numpy(), x.exp().numpy())
    np.testing.assert_allclose((2 - x).numpy(), [1.0, 4.0])  # a reflected operator


def test_var_with_no_degrees_of_freedom_warns_and_divides_by_zero():
    """As PyTorch: n <= correction warns, naming the function called, and gives Σ/0 (∞; NaN for one sample)."""
    import warnings

    for call, name in [(lambda t: t.var(correction=2), "var"), (lambda t: t.std(correction=2), "std"),
                       (lambda t: autograd.var_mean(t, correction=2)[0], "var_mean"),
                       (lambda t: autograd.std_mean(t, correction=2)[0], "std_mean")]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert np.isinf(call(autograd.tensor([1.0, 2.0])).item())
        assert any(f"{name}(): degrees of freedom is <= 0" in str(w.message) for w in caught)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert np.isnan(autograd.tensor([3.0]).var().item())
        assert np.isnan(autograd.tensor([1.0, 1.0]).var(correction=2).item())
