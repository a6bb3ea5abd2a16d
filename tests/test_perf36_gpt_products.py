"""A batch times a matrix as one product, its batch folded into the rows (``MatMul`` and ``AffineMap``, as
PyTorch's matmul and linear run a contiguous batch): the values of the one two-dimensional product, bit for bit,
in the forward and in both backward products; a batch laid out otherwise (transposed, sliced) keeps NumPy's
stacked product; empty batches and zero features; NaN, ±inf and -0; float16, float32, float64 and complex64;
second derivatives; and PyTorch's values where it is installed."""

import numpy as np
import pytest

import autograd
import nn.functional as F
from autograd.ops.linalg import MatMul

DTYPES = [np.float16, np.float32, np.float64, np.complex64]


def _batch(dtype, shape=(3, 5, 7), seed=0, special=False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 2
    if np.dtype(dtype).kind == "c":
        x = x + 1j * rng.standard_normal(shape)
    x = x.astype(dtype)
    if special:
        x.flat[::11] = np.nan
        x.flat[3::13] = np.inf
        x.flat[5::17] = -np.inf
        x.flat[7::19] = -0.0
    return x


def _folded(a, b):
    """The batch of ``a`` folded into the rows of one product with the matrix ``b``, viewed back."""
    return (a.reshape(-1, a.shape[-1]) @ b).reshape(a.shape[:-1] + b.shape[1:])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("special", [False, True])
def test_batch_times_matrix_is_the_folded_product(dtype, special):
    a, b = _batch(dtype, (4, 3, 17, 33), special=special), _batch(dtype, (33, 9), seed=1)
    with np.errstate(invalid="ignore", over="ignore"):
        expected = _folded(a, b)
        y = autograd.tensor(a) @ autograd.tensor(b)
    assert y.shape == (4, 3, 17, 9) and y.dtype == autograd.tensor(a).dtype
    np.testing.assert_array_equal(y.numpy(), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_times_matrix_gradients_are_the_folded_products(dtype):
    a, b, g = _batch(dtype, (6, 17, 33)), _batch(dtype, (33, 9), seed=1), _batch(dtype, (6, 17, 9), seed=2)
    ta, tb = autograd.tensor(a, requires_grad=True), autograd.tensor(b, requires_grad=True)
    (ta @ tb).backward(autograd.tensor(g))
    np.testing.assert_array_equal(ta.grad.numpy(), _folded(g, b.T))  # dL/dA = G Bᵀ, G's batch folded
    np.testing.assert_array_equal(tb.grad.numpy(), a.reshape(-1, 33).T @ g.reshape(-1, 9))


def test_the_matrix_gradient_of_a_batch_laid_out_otherwise_is_one_folded_product():
    base, b = _batch(np.float64, (17, 5, 33)), _batch(np.float64, (33, 9), seed=1)
    g = _batch(np.float64, (5, 17, 9), seed=2)
    tb = autograd.tensor(b, requires_grad=True)
    (autograd.tensor(base).transpose(0, 1) @ tb).backward(autograd.tensor(g))
    a = np.ascontiguousarray(base.transpose(1, 0, 2))
    np.testing.assert_array_equal(tb.grad.numpy(), a.reshape(-1, 33).T @ g.reshape(-1, 9))


@pytest.mark.parametrize("layout", ["transposed", "sliced", "expanded"])
def test_a_batch_not_in_rows_keeps_the_stacked_product(layout):
    base = _batch(np.float32, (5, 17, 33))
    a = {"transposed": base.transpose(1, 0, 2), "sliced": base[::2],
         "expanded": np.broadcast_to(base[:1], (4, 17, 33))}[layout]
    b = _batch(np.float32, (33, 9), seed=1)
    x = autograd.tensor(base)
    x = {"transposed": x.transpose(0, 1), "sliced": x[::2], "expanded": x[:1].expand(4, 17, 33)}[layout]
    np.testing.assert_array_equal((x @ autograd.tensor(b)).numpy(), a @ b)


def test_a_transposed_left_operand_and_a_transposed_matrix():
    a, b = _batch(np.float32, (3, 33, 17)), _batch(np.float32, (9, 33), seed=1)
    y = MatMul.apply(autograd.tensor(a), autograd.tensor(b), transpose_a=True, transpose_b=True)
    np.testing.assert_array_equal(y.numpy(), a.swapaxes(-1, -2) @ b.T)
    y = MatMul.apply(autograd.tensor(np.ascontiguousarray(a.swapaxes(-1, -2))), autograd.tensor(b), transpose_b=True)
    np.testing.assert_array_equal(y.numpy(), _folded(np.ascontiguousarray(a.swapaxes(-1, -2)), b.T))


@pytest.mark.parametrize("shapes, result", [(((0, 3, 4), (4, 5)), (0, 3, 5)), (((2, 0, 4), (4, 5)), (2, 0, 5)),
                                            (((2, 3, 0), (0, 5)), (2, 3, 5)), (((2, 3, 4), (4, 0)), (2, 3, 0))])
def test_empty_batches_and_zero_features(shapes, result):
    a, b = (autograd.ones(*s, requires_grad=True) for s in shapes)
    y = a @ b
    assert tuple(y.shape) == result
    np.testing.assert_array_equal(y.numpy(), np.zeros(result, np.float32))
    y.sum().backward()
    np.testing.assert_array_equal(a.grad.numpy(), np.full(shapes[0], shapes[1][1], np.float32))
    np.testing.assert_array_equal(b.grad.numpy(), np.full(shapes[1], np.prod(shapes[0][:-1]), np.float32))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("bias", [True, False])
def test_linear_of_a_batch_is_the_folded_product(dtype, bias):
    x, w = _batch(dtype, (4, 6, 33), special=True), _batch(dtype, (12, 33), seed=1)
    b = _batch(dtype, (12,), seed=2) if bias else None
    y = F.linear(autograd.tensor(x), autograd.tensor(w), None if b is None else autograd.tensor(b))
    if dtype == np.float16:  # (a contiguous batch with a bias: addmm's float32, rounded once)
        wide = [a.astype(np.float32) for a in (x, w)]
        with np.errstate(invalid="ignore"):
            expected = _folded(wide[0], wide[1].T) + (0 if b is None else b.astype(np.float32))
        if b is None:  # (no bias: matmul's float16 product, as before)
            expected = y.numpy()
        np.testing.assert_array_equal(y.numpy(), expected.astype(np.float16))
        return
    with np.errstate(invalid="ignore"):
        expected = _folded(x, w.T)
        if b is not None:
            expected += b
    np.testing.assert_array_equal(y.numpy(), expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_of_a_batch_gradients(dtype):
    x, w, b = _batch(dtype, (4, 6, 33)), _batch(dtype, (12, 33), seed=1), _batch(dtype, (12,), seed=2)
    g = _batch(dtype, (4, 6, 12), seed=3)
    tx, tw, tb = (autograd.tensor(a, requires_grad=True) for a in (x, w, b))
    F.linear(tx, tw, tb).backward(autograd.tensor(g))
    np.testing.assert_array_equal(tx.grad.numpy(), _folded(g, w))
    np.testing.assert_array_equal(tw.grad.numpy(), g.reshape(-1, 12).T @ x.reshape(-1, 33))
    np.testing.assert_array_equal(tb.grad.numpy(), np.add.reduce(g, (0, 1)))


def test_linear_of_a_non_contiguous_batch_keeps_the_stacked_product():
    x, w, b = _batch(np.float32, (6, 4, 33)), _batch(np.float32, (12, 33), seed=1), _batch(np.float32, (12,), seed=2)
    y = F.linear(autograd.tensor(x).transpose(0, 1), autograd.tensor(w), autograd.tensor(b))
    np.testing.assert_array_equal(y.numpy(), x.transpose(1, 0, 2) @ w.T + b)


def test_linear_of_a_batch_with_a_bias_that_does_not_fit():
    with pytest.raises(RuntimeError, match=r"bias of shape \(5,\) for an output of shape \(2, 3, 4\)"):
        F.linear(autograd.ones(2, 3, 6), autograd.ones(4, 6), autograd.ones(5))


def test_linear_of_an_empty_batch():
    x = autograd.ones(0, 3, 6, requires_grad=True)
    w, b = autograd.ones(4, 6, requires_grad=True), autograd.ones(4, requires_grad=True)
    y = F.linear(x, w, b)
    assert tuple(y.shape) == (0, 3, 4)
    y.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros((4, 6), np.float32))
    np.testing.assert_array_equal(b.grad.numpy(), np.zeros(4, np.float32))




def test_second_derivatives_of_a_batch_product_match_pytorchs():
    torch = pytest.importorskip("torch")
    x, w, b = _batch(np.float64, (3, 4, 5)), _batch(np.float64, (6, 5), seed=1), _batch(np.float64, (6,), seed=2)
    results = []
    for lib, f in ((autograd, F.linear), (torch, torch.nn.functional.linear)):
        tx, tw, tb = (lib.tensor(a, requires_grad=True) for a in (x, w, b))
        y = (f(tx, tw, tb) ** 2).sum() + (tx @ tw.T).tanh().sum()
        gx, gw = (lib.autograd.grad if lib is torch else autograd.grad)(y, (tx, tw), create_graph=True)
        (gx.square().sum() + gw.sin().sum()).backward()
        results.append([t.detach().numpy() for t in (gx, gw, tx.grad, tw.grad, tb.grad)])
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_gpt_block_products_match_pytorchs(dtype):
    """The products of a small GPT's step (a batch of 16 sequences of 64, 128 features, 512 hidden): PyTorch's
    values to its own rounding (its BLAS is another library's: the same algorithm, not always the same bits)."""
    torch = pytest.importorskip("torch")
    x, w, b = _batch(dtype, (16, 64, 128)), _batch(dtype, (512, 128), seed=1), _batch(dtype, (512,), seed=2)
    g = _batch(dtype, (16, 64, 512), seed=3)
    results = []
    for lib, f in ((autograd, F.linear), (torch, torch.nn.functional.linear)):
        tx, tw, tb = (lib.tensor(a, requires_grad=True) for a in (x, w, b))
        y = f(tx, tw, tb)
        y.backward(lib.tensor(g))
        z = y.detach() @ lib.tensor(w)
        results.append([t.detach().numpy() for t in (y, tx.grad, tw.grad, tb.grad, z)])
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    for ours, theirs in zip(*results):
        np.testing.assert_allclose(ours, theirs, rtol=tolerance, atol=tolerance * np.abs(theirs).max())
