"""The nodes a program sees in ``repr(y)`` (``grad_fn=<...>``) and in ``y.grad_fn.next_functions``, as PyTorch's, where
a composite of other ops showed its own: a float16 tensor times or over a number (HalfMul, HalfDiv: MulBackward0,
not the ToCopyBackward0 of a float32 product cast back), ``add``/``sub`` with an ``alpha`` (ScaledSum: AddBackward0,
SubBackward0), ``1 - x`` (Rsub: RsubBackward1 with x's one edge), ``masked_fill`` by a number (MaskedFill: x's one
edge), ``square`` (PowBackward0 with one edge), ``mse_loss`` (MseLossBackward0 whose edges are the input's and the
target's nodes, as the 60-minute blitz prints them), and the top nodes of float16 gelu, softplus, celu and lerp,
``instance_norm`` (ViewBackward0), ``lerp`` by a tensor weight (LerpBackward1) and ``addcdiv``; then the nodes that
layers and losses end in (found by running torch's module_db and op_db through both libraries): nll_loss2d's for
inputs past (N, C), cross_entropy of class probabilities, eval-mode batch_norm, the margin losses, ctc, bilinear,
the 3-d adaptive and unbatched 2-d pools, unbatched 1-d convolutions, circular padding, the FFTs, PyTorch's Linalg* and
Special* kernels, std_mean / var_mean, nansum, stable sort, addmv / addr / addbmm, div with a rounding mode and
fmod / remainder by a tensor. And what the sweeps found beside the names: F.pad by zeros and batch_norm of an empty
batch return a new tensor (they returned the input itself), multilabel_soft_margin_loss divides by C, and
cross_entropy of class probabilities sums in PyTorch's order.

Each runs on chainrule and on PyTorch (the ``T`` fixture) against the same values, computed by hand in NumPy with
the rounding PyTorch's kernels do; Rsub and MaskedFill go through gradcheck too."""

import importlib

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

import autograd
import autograd.fft  # noqa: F401  (autograd.fft, as torch.fft)

from .test_ops import assert_first_and_second_derivatives, leaf, unary

HALVES = np.array([[1.5, -2.25, 0.1], [3.0, -0.7, 65.5]], dtype=np.float16)


def _half_leaf():
    return autograd.tensor(HALVES.copy(), requires_grad=True)


CASES = {  # (tests/test_ops.py checks that every primitive has a case; the tests below say how each is checked)
    "Rsub": (unary(), lambda x: 1.5 - x * x),
    "MaskedFill": (unary(kinks=(0.3,)), lambda x: x.masked_fill(x > 0.3, 2.0) * x),
    # float16 and float32 only: checked against PyTorch's rounding below, not by finite differences
    "HalfMul": (st.just([_half_leaf()]), lambda x: x * 0.1),
    "HalfDiv": (st.just([_half_leaf()]), lambda x: x / 3),
    "ScaledSum": (st.just([_half_leaf(), _half_leaf()]), lambda x, y: x.add(y, alpha=0.1)),
}


@pytest.mark.parametrize("name", ["Rsub", "MaskedFill"])
@given(data=st.data())
def test_gradients_match_finite_differences(name, data):
    assert_first_and_second_derivatives(CASES[name], data)


def _edges(node):
    return [None if n is None else n.name() for n, _ in node.next_functions]


@pytest.mark.parametrize(("number", "op"), [(0.1, "mul"), (3, "mul"), (1e5, "mul"), (0.1, "rmul"), (3, "div"),
                                            (0.7, "div"), (1e-3, "div")])
def test_float16_times_or_over_a_number_is_one_node_rounded_once(T, number, op):
    x = T.tensor(HALVES.copy(), requires_grad=True)
    y = {"mul": lambda: x * number, "rmul": lambda: number * x, "div": lambda: x / number}[op]()
    wide, c = HALVES.astype(np.float32), np.float32(number)
    with np.errstate(over="ignore"):  # (65.5 · 1e5 is inf in float16)
        expected = (wide / c if op == "div" else wide * c).astype(np.float16)  # the number not rounded to float16
    np.testing.assert_array_equal(y.detach().numpy(), expected)
    name = "DivBackward0" if op == "div" else "MulBackward0"
    assert y.grad_fn.name() == name and _edges(y.grad_fn) == ["torch::autograd::AccumulateGrad", None]
    assert repr(y).endswith(f"grad_fn=<{name}>)")  # (not ToCopyBackward0)
    g = np.array([[1.0, -0.5, 2.0], [0.25, 3.0, -1.5]], np.float16)
    y.backward(T.tensor(g))
    wide_g = g.astype(np.float32)
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(x.grad.numpy(), (wide_g / c if op == "div" else wide_g * c).astype(np.float16))


@pytest.mark.parametrize("op", ["mul", "div"])
def test_float16_by_a_0d_tensor_that_requires_grad(T, op):
    x = T.tensor(HALVES.copy(), requires_grad=True)
    s = T.tensor(0.5, dtype=T.float64, requires_grad=True)
    y = x * s if op == "mul" else x / s
    assert y.dtype == T.float16 and _edges(y.grad_fn) == ["torch::autograd::AccumulateGrad"] * 2
    g = np.ones((2, 3), np.float16)
    y.backward(T.tensor(g))
    # dL/ds: the products (x / s / s for the quotient) each rounded to float16, summed (in float32), then float64
    per_element = HALVES * g if op == "mul" else -g * ((HALVES / np.float16(0.5)) / np.float16(0.5))
    assert s.grad.dtype == T.float64
    assert s.grad.item() == float(np.float16(per_element.astype(np.float32).sum()))
    np.testing.assert_array_equal(x.grad.numpy(), (g * 0.5 if op == "mul" else g / np.float16(0.5)))


@pytest.mark.parametrize("dtype", ["float16", "float32"])
@pytest.mark.parametrize(("op", "name"), [("add", "AddBackward0"), ("sub", "SubBackward0")])
def test_add_and_sub_with_alpha_are_one_node(T, dtype, op, name):
    rng = np.random.default_rng(3)
    a, b = (rng.standard_normal((4, 5)) * 10).astype(dtype), (rng.standard_normal((4, 5)) * 10).astype(dtype)
    x, y = T.tensor(a, requires_grad=True), T.tensor(b, requires_grad=True)
    z = getattr(x, op)(y, alpha=0.1)
    if dtype == "float32":  # (PyTorch's float16 kernel rounds its last few elements by another path)
        alpha = (1 if op == "add" else -1) * np.float64(np.float32(0.1))  # alpha in the dtype, then one sum
        np.testing.assert_array_equal(z.detach().numpy(), (a.astype(np.float64) + b * alpha).astype(dtype))
    assert z.grad_fn.name() == name and _edges(z.grad_fn) == ["torch::autograd::AccumulateGrad"] * 2
    g = rng.standard_normal((4, 5)).astype(dtype)
    z.backward(T.tensor(g))
    np.testing.assert_array_equal(x.grad.numpy(), g)
    sign = 1 if op == "add" else -1  # dL/dy = dL/dz · alpha as given (a number product in float32)
    np.testing.assert_array_equal(y.grad.numpy(), (sign * g.astype(np.float32) * np.float32(0.1)).astype(dtype))


def test_one_edge_nodes_of_a_number_operand(T):
    x = T.tensor([1.5, -2.0, 0.25], requires_grad=True)
    accumulate = ["torch::autograd::AccumulateGrad"]
    for y, name in [(1 - x, "RsubBackward1"), (x.masked_fill(x > 1, 0.0), "MaskedFillBackward0"),
                    (x.square(), "PowBackward0")]:
        assert y.grad_fn.name() == name and _edges(y.grad_fn) == accumulate
    np.testing.assert_array_equal((2.5 - x).detach().numpy(), [1.0, 4.5, 2.25])
    value = T.tensor(7.0, requires_grad=True)  # a tensor value: its own edge, after the input's
    y = x.masked_fill(x > 1, value)
    assert y.grad_fn.name() == "MaskedFillBackward1" and _edges(y.grad_fn) == accumulate * 2
    y.backward(T.tensor([1.0, 2.0, 3.0]))
    assert x.grad.tolist() == [0.0, 2.0, 3.0] and value.grad.item() == 1.0
    wide = T.zeros(2, 3, requires_grad=True)  # a mask wider than the input: the result and its gradient broadcast
    z = wide[0].masked_fill(T.tensor([[True, False, False], [False, False, True]]), 5.0)
    z.backward(T.ones(2, 3))
    assert z.tolist() == [[5.0, 0.0, 0.0], [0.0, 0.0, 5.0]] and wide.grad.tolist() == [[1.0, 2.0, 1.0], [0.0] * 3]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_mse_loss_is_one_node_with_the_inputs_edges(T, reduction, dtype):
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((6, 5)).astype(dtype), rng.standard_normal((6, 5)).astype(dtype)
    w = T.tensor(a, requires_grad=True)
    prediction, target = w * 1, T.tensor(b, requires_grad=True)
    F = importlib.import_module("nn.functional" if T is autograd else "torch.nn.functional")
    loss = F.mse_loss(prediction, target, reduction=reduction)
    assert loss.grad_fn.name() == "MseLossBackward0"
    assert _edges(loss.grad_fn) == ["MulBackward0", "torch::autograd::AccumulateGrad"]
    squares = (a - b) * (a - b)  # each step in the dtype, as PyTorch's kernel
    if reduction == "none":
        np.testing.assert_array_equal(loss.detach().numpy(), squares)
        g = np.full((6, 5), 0.5, dtype)
    else:
        total = squares.sum(dtype=np.float32 if dtype == "float16" else None)
        expected = total / 30 if reduction == "mean" else total
        np.testing.assert_allclose(loss.item(), expected.astype(dtype), rtol=1e-6 if dtype != "float16" else 1e-3)
        g = np.asarray(0.5, dtype)
    grad_w, grad_target = T.autograd.grad(loss, (w, target), T.tensor(g))
    factor = np.dtype(dtype).type(2 / 30 if reduction == "mean" else 2.0)
    np.testing.assert_array_equal(grad_w.numpy(), factor * (a - b) * g)  # PyTorch's c (x - y) · dL/dloss
    np.testing.assert_array_equal(grad_target.numpy(), factor * (b - a) * g)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_second_derivatives(reduction):
    import nn.functional as F

    x, y = leaf(np.linspace(-1, 1, 6).reshape(2, 3)), leaf(np.arange(6.0).reshape(2, 3) / 5)
    assert autograd.gradgradcheck(lambda a, b: F.mse_loss(a, b, reduction=reduction), [x, y])


@pytest.mark.parametrize(("make", "name"), [
    (lambda T, F, x: F.gelu(x.half()), "GeluBackward0"),
    (lambda T, F, x: F.gelu(x.half(), approximate="tanh"), "GeluBackward0"),
    (lambda T, F, x: F.softplus(x.half()), "SoftplusBackward0"),
    (lambda T, F, x: F.celu(x.half()), "CeluBackward0"),
    (lambda T, F, x: x.half().lerp(x.half() * 2, 0.3), "LerpBackward0"),
    (lambda T, F, x: x.lerp(x * 2, T.full_like(x, 0.3)), "LerpBackward1"),
    (lambda T, F, x: x.addcdiv(x, x.abs() + 1, value=0.5), "AddcdivBackward0"),
    (lambda T, F, x: F.instance_norm(x.reshape(1, 2, 3)), "ViewBackward0"),
    (lambda T, F, x: F.instance_norm(x.reshape(1, 2, 3), weight=T.ones(2), bias=T.zeros(2)), "ViewBackward0"),
    # nll_loss2d for images, and for other shapes past (N, C) viewed as images (a view back for reduction='none')
    (lambda T, F, x: F.cross_entropy(x.reshape(1, 2, 3, 1), T.tensor([[[0], [1], [1]]])), "NllLoss2DBackward0"),
    (lambda T, F, x: F.cross_entropy(x.reshape(1, 2, 3), T.tensor([[0, 1, 1]])), "NllLoss2DBackward0"),
    (lambda T, F, x: F.cross_entropy(x.reshape(1, 2, 3), T.tensor([[0, 1, 1]]), reduction="none"), "ViewBackward0"),
    (lambda T, F, x: F.nll_loss(x.reshape(1, 2, 3, 1), T.tensor([[[0], [1], [1]]]), reduction="none"),
     "NllLoss2DBackward0"),
    (lambda T, F, x: F.cross_entropy(x, T.tensor([1, 2])), "NllLossBackward0"),
    (lambda T, F, x: F.cross_entropy(x, T.full_like(x, 1 / 3)), "DivBackward1"),  # class probabilities
    (lambda T, F, x: F.cross_entropy(x, T.full_like(x, 1 / 3), reduction="sum"), "NegBackward0"),
    (lambda T, F, x: F.batch_norm(x, T.zeros(3), T.ones(3), training=False), "NativeBatchNormBackward0"),
    (lambda T, F, x: F.multi_margin_loss(x, T.tensor([1, 2])), "MultiMarginLossBackward0"),
    (lambda T, F, x: F.multilabel_margin_loss(x, T.tensor([[1, -1, 0], [2, 0, -1]])), "MultilabelMarginLossBackward0"),
    (lambda T, F, x: F.soft_margin_loss(x, T.ones(2, 3)), "SoftMarginLossBackward0"),
    (lambda T, F, x: F.margin_ranking_loss(x[0], x[1], T.ones(3), reduction="none"), "ClampMinBackward0"),
    (lambda T, F, x: F.ctc_loss(x.reshape(3, 1, 2).log_softmax(2), T.tensor([[1]]), [3], [1], reduction="none"),
     "CtcLossBackward0"),
    (lambda T, F, x: F.bilinear(x, x, T.ones(4, 3, 3), T.zeros(4)), "AddBackward0"),
    (lambda T, F, x: F.adaptive_avg_pool3d(x.reshape(1, 1, 1, 2, 3), (1, 2, 1)), "AdaptiveAvgPool3DBackward0"),
    (lambda T, F, x: F.adaptive_avg_pool3d(x.reshape(1, 1, 1, 2, 3), 1), "MeanBackward1"),  # (a mean, as 2-d's)
    (lambda T, F, x: F.adaptive_max_pool3d(x.reshape(1, 1, 2, 3), 1), "AdaptiveMaxPool3DBackward0"),  # unbatched
    (lambda T, F, x: F.max_pool2d(x.reshape(1, 2, 3), 2), "MaxPool2DWithIndicesBackward0"),  # unbatched
    (lambda T, F, x: F.avg_pool2d(x.reshape(1, 2, 3), 2), "AvgPool2DBackward0"),  # unbatched
    (lambda T, F, x: F.conv1d(x, T.ones(1, 2, 2)), "SqueezeBackward1"),  # unbatched: convolved unsqueezed
    (lambda T, F, x: F.conv1d(x.unsqueeze(0), T.ones(1, 2, 2)), "ConvolutionBackward0"),
    (lambda T, F, x: F.pad(x.unsqueeze(0), (1, 1), mode="circular"), "torch::autograd::CopySlices"),
    # PyTorch's names for its linalg and special kernels' nodes
    (lambda T, F, x: T.linalg.det(x[:, :2]), "LinalgDetBackward0"),
    (lambda T, F, x: T.inverse(x[:, :2]), "LinalgInvExBackward0"),
    (lambda T, F, x: T.linalg.pinv(x), "LinalgPinvBackward0"),
    (lambda T, F, x: T.matrix_exp(x[:, :2]), "LinalgMatrixExpBackward0"),
    (lambda T, F, x: T.linalg.lu_factor(x[:, :2])[0], "LinalgLuFactorExBackward0"),
    (lambda T, F, x: T.linalg.svdvals(x), "LinalgSvdBackward0"),
    (lambda T, F, x: T.logaddexp(x, x * 2), "LogaddexpBackward0"),
    (lambda T, F, x: T.logaddexp2(x, x * 2), "Logaddexp2Backward0"),
    (lambda T, F, x: T.nextafter(x, x * 2), "NextafterBackward0"),
    (lambda T, F, x: T.special.entr(x.abs()), "SpecialEntrBackward0"),
    (lambda T, F, x: T.special.erfcx(x), "SpecialErfcxBackward0"),
    (lambda T, F, x: T.special.i0e(x), "SpecialI0EBackward0"),
    (lambda T, F, x: T.special.i1(x), "SpecialI1Backward0"),
    (lambda T, F, x: T.special.i1e(x), "SpecialI1EBackward0"),
    (lambda T, F, x: T.special.log_ndtr(x), "SpecialLogNdtrBackward0"),
    (lambda T, F, x: T.special.ndtri(x.sigmoid()), "SpecialNdtriBackward0"),
    (lambda T, F, x: T.special.xlog1py(x, x.abs()), "SpecialXlog1PyBackward0"),
    # overloads and functions PyTorch names by their own node
    (lambda T, F, x: T.std_mean(x, 1)[0], "StdMeanBackward0"),
    (lambda T, F, x: T.std_mean(x, 1)[1], "StdMeanBackward0"),
    (lambda T, F, x: T.var_mean(x)[1], "VarMeanBackward0"),
    (lambda T, F, x: T.nansum(x, 0), "NansumBackward0"),
    (lambda T, F, x: x.sort(1).values, "SortBackward0"),
    (lambda T, F, x: x.sort(dim=1, stable=True).values, "SortBackward1"),
    (lambda T, F, x: T.addmv(x[0, :2], x[:, :2], x[1, :2]), "AddmvBackward0"),
    (lambda T, F, x: T.addr(x[:, :2], x[0, :2], x[1, :2]), "AddrBackward0"),
    (lambda T, F, x: T.addbmm(x, x.unsqueeze(0)[:, :, :2], x.unsqueeze(0)[:, :2]), "AddbmmBackward0"),
    (lambda T, F, x: x.div(x * 2 + 5, rounding_mode="floor"), "DivBackward2"),
    (lambda T, F, x: x.div(2.0, rounding_mode="trunc"), "DivBackward2"),
    (lambda T, F, x: x.fmod(x * 2 + 5), "FmodBackward1"),
    (lambda T, F, x: x.remainder(x * 2 + 5), "RemainderBackward1"),
    (lambda T, F, x: x.remainder(1.5), "RemainderBackward0"),
    (lambda T, F, x: T.linalg.solve(x[:, :2] + 3 * T.eye(2), x), "LinalgSolveExBackward0"),
    (lambda T, F, x: T.linalg.solve(x[:, :2] + 3 * T.eye(2), x[0, :2]), "LinalgSolveExBackward0"),  # a vector
    (lambda T, F, x: T.linalg.cholesky(x[:, :2] @ x[:, :2].mT + T.eye(2), upper=True), "LinalgCholeskyExBackward0"),
    (lambda T, F, x: T.cholesky_solve(x, T.eye(2) + x[:, :2].tril()), "CholeskySolveBackward0"),
    (lambda T, F, x: T.linalg.eigvalsh(x[:, :2] + x[:, :2].mT), "LinalgEighBackward0"),
    (lambda T, F, x: T.linalg.solve_triangular(x[:, :2].triu() + 3 * T.eye(2), x, upper=True),
     "LinalgSolveTriangularBackward0"),
    (lambda T, F, x: T.linalg.lu_solve(*T.linalg.lu_factor(x[:, :2] + 3 * T.eye(2)), x), "LinalgLuSolveBackward0"),
    (lambda T, F, x: F.grid_sample(x.reshape(1, 1, 2, 3), T.zeros(1, 2, 2, 2), align_corners=False),
     "GridSampler2DBackward0"),
    (lambda T, F, x: T.deg2rad(x), "Deg2RadBackward0"),
    (lambda T, F, x: T.rad2deg(x), "Rad2DegBackward0"),
    (lambda T, F, x: T.rsub(x, x * 2), "RsubBackward0"),
    (lambda T, F, x: T.rsub(x, 2), "RsubBackward1"),
    (lambda T, F, x: T.fft.fft2(x), "FftC2CBackward0"),
    (lambda T, F, x: T.fft.fft(x.to(T.complex64)), "FftC2CBackward0"),
    (lambda T, F, x: T.fft.rfft(x), "FftR2CBackward0"),
    (lambda T, F, x: T.fft.irfft(x.to(T.complex64)), "FftC2RBackward0"),
])
def test_the_top_node_is_named_as_pytorch_names_it(T, make, name):
    F = importlib.import_module("nn.functional" if T is autograd else "torch.nn.functional")
    x = T.tensor([[1.5, -2.0, 0.25], [0.5, 3.0, -1.0]], requires_grad=True)
    assert make(T, F, x).grad_fn.name() == name


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_padding_by_nothing_is_a_new_tensor(T, mode):
    """F.pad by zeros gives a new tensor, as PyTorch's: an in-place op on it leaves the input alone (it was the
    input itself)."""
    F = importlib.import_module("nn.functional" if T is autograd else "torch.nn.functional")
    x = T.tensor([[[1.0, 2.0, 3.0]]], requires_grad=True) * 1
    y = F.pad(x, (0, 0), mode=mode)
    y += 1
    assert y.tolist() == [[[2.0, 3.0, 4.0]]] and x.tolist() == [[[1.0, 2.0, 3.0]]]


def test_batch_norm_of_an_empty_batch_is_a_new_tensor(T):
    nn = importlib.import_module("nn" if T is autograd else "torch.nn")
    x = T.zeros(0, 3, requires_grad=True)
    y = nn.BatchNorm1d(3, affine=False)(x)
    assert y is not x and y.grad_fn.name() == "CloneBackward0" and y.shape == (0, 3)


def test_losses_computed_in_pytorchs_order(T):
    """multilabel_soft_margin_loss divides each row's sum by C (a product by 1/C rounded otherwise), and
    cross_entropy of class probabilities sums -(log p · target · weight) over everything, then divides."""
    F = importlib.import_module("nn.functional" if T is autograd else "torch.nn.functional")
    rng = np.random.default_rng(5)
    x, y = rng.standard_normal((6, 7)).astype(np.float32), (rng.random((6, 7)) > 0.5).astype(np.float32)
    loss = F.multilabel_soft_margin_loss(T.tensor(x), T.tensor(y), reduction="none")
    logsig = -np.logaddexp(0, -x.astype(np.float64))  # ln σ(x)
    terms = -(y * logsig + (1 - y) * (logsig - x))
    np.testing.assert_allclose(loss.numpy(), terms.sum(1) / 7, rtol=1e-6)
    p = rng.random((6, 7)).astype(np.float32)
    p /= p.sum(1, keepdims=True)
    weight = rng.random(7).astype(np.float32) + 0.5
    ce = F.cross_entropy(T.tensor(x), T.tensor(p), weight=T.tensor(weight))
    log_p = x - np.log(np.exp(x.astype(np.float64)).sum(1, keepdims=True))
    np.testing.assert_allclose(ce.item(), -(log_p * p * weight).sum() / 6, rtol=1e-6)
