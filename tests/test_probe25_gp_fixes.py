"""The library fixes probe25_gp found (Gaussian processes and Bayesian optimisation), each against PyTorch where
installed and against literals always."""

import numpy as np
import pytest

import autograd

from .pytorch_programs import pytorch


def both():
    """chainrule, and PyTorch where installed."""
    theirs = pytorch()
    return [autograd] + ([theirs.torch] if theirs else [])


LIBRARIES = pytest.mark.parametrize("torch", both(), ids=lambda module: module.__name__)


def refusal(call):
    with pytest.raises(Exception) as caught:
        call()
    return type(caught.value).__name__, str(caught.value)


@pytest.mark.parametrize("default", ["float32", "float64"])
@LIBRARIES
def test_distribution_of_python_numbers_takes_the_default_dtype(default, torch):
    """BoTorch sets float64 as the default: Normal(0, 1) is then float64 (it was float32, from the ints)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(getattr(torch, default))
    try:
        D = torch.distributions
        for dist in (D.Normal(0, 1), D.Uniform(0, 1), D.Normal(0, 1.5), D.Laplace(0, 2)):
            sample = dist.sample((3,))
            assert str(sample.dtype).replace("torch.", "") == default
        assert str(D.Normal(torch.tensor([0.5], dtype=torch.float16), 2).scale.dtype).endswith("float16")
    finally:
        torch.set_default_dtype(old)


@LIBRARIES
def test_cholesky_solve_and_inverse_refusals(torch):
    ints = torch.ones(2, 2, dtype=torch.long)
    assert refusal(lambda: torch.cholesky_solve(torch.ones(2, 1, dtype=torch.long), ints)) == (
        "NotImplementedError", "\"cholesky_solve_cpu\" not implemented for 'Long'")
    assert refusal(lambda: torch.cholesky_solve(torch.ones(2, 1, dtype=torch.bool), ints.bool())) == (
        "NotImplementedError", "\"cholesky_solve_cpu\" not implemented for 'Bool'")
    assert refusal(lambda: torch.cholesky_solve(torch.ones(2, dtype=torch.long), ints)) == (
        "RuntimeError", "b should have at least 2 dimensions, but has 1 dimensions instead")
    assert refusal(lambda: torch.cholesky_solve(torch.ones(2, 1), torch.ones(2, 3))) == (
        "RuntimeError", "A must be batches of square matrices, but they are 2 by 3 matrices")
    assert refusal(lambda: torch.cholesky_inverse(ints)) == (
        "NotImplementedError", "\"cholesky_inverse_out_cpu\" not implemented for 'Long'")
    assert refusal(lambda: torch.cholesky_inverse(torch.ones(2, 3))) == (
        "RuntimeError", "cholesky_inverse: A must be batches of square matrices, but they are 2 by 3 matrices")
    assert refusal(lambda: torch.cholesky_inverse(torch.ones(2))) == (
        "RuntimeError", "cholesky_inverse: The input tensor A must have at least 2 dimensions.")
    # floating inputs still solve
    L = torch.tensor([[2.0, 0.0], [1.0, 3.0]], dtype=torch.float64)
    x = torch.cholesky_solve(torch.tensor([[1.0], [2.0]], dtype=torch.float64), L)
    np.testing.assert_allclose(x.numpy(), np.linalg.solve(L.numpy() @ L.numpy().T, [[1.0], [2.0]]), rtol=1e-12)


@LIBRARIES
def test_qr_eigh_and_cdist_refuse_integers(torch):
    ints = torch.eye(2, dtype=torch.long)
    assert refusal(lambda: torch.linalg.qr(ints)) == (
        "RuntimeError", "linalg.qr: Expected a floating point or complex tensor as input. Got Long")
    assert refusal(lambda: torch.linalg.qr(torch.ones(2))) == (
        "RuntimeError", "linalg.qr: The input tensor A must have at least 2 dimensions.")
    assert refusal(lambda: torch.linalg.eigh(ints)) == (
        "NotImplementedError", "\"linalg_eigh_cpu\" not implemented for 'Long'")
    assert refusal(lambda: torch.linalg.eigvalsh(ints.bool())) == (
        "NotImplementedError", "\"linalg_eigh_cpu\" not implemented for 'Bool'")
    assert refusal(lambda: torch.cdist(torch.ones(3), torch.ones(2, 3))) == (
        "RuntimeError", "cdist only supports at least 2D tensors, X1 got: 1D")
    assert refusal(lambda: torch.cdist(torch.ones(2, 3), torch.ones(3))) == (
        "RuntimeError", "cdist only supports at least 2D tensors, X2 got: 1D")
    assert refusal(lambda: torch.cdist(torch.ones(2, 3), torch.ones(2, 3, dtype=torch.long))) == (
        "RuntimeError", "cdist only supports floating-point dtypes, X2 got: Long")
    assert refusal(lambda: torch.cdist(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3), p=-1)) == (
        "RuntimeError", "cdist only supports floating-point dtypes, X1 got: Long")


@LIBRARIES
def test_square_matrix_refusals_in_pytorchs_words(torch):
    assert refusal(lambda: torch.linalg.cholesky(torch.eye(2, dtype=torch.long)))[1] == (
        "linalg.cholesky: Expected a floating point or complex tensor as input. Got Long")
    assert refusal(lambda: torch.linalg.inv(torch.ones(2, 3)))[1] == (
        "linalg.inv: A must be batches of square matrices, but they are 2 by 3 matrices")
    assert refusal(lambda: torch.linalg.cholesky(torch.ones(3)))[1] == (
        "linalg.cholesky: The input tensor A must have at least 2 dimensions.")
    assert refusal(lambda: torch.linalg.eig(torch.eye(2, dtype=torch.int32)))[0] == "RuntimeError"
    assert refusal(lambda: torch.tril(torch.ones(3))) == (
        "RuntimeError", "tril: input tensor must have at least 2 dimensions")


MASKS = ("mask", "masked_fill", "where", "masked_select", "masked_scatter")
INDEXED = {
    "getitem": lambda torch, F, x, i: x[i],
    "mask": lambda torch, F, x, i: x[i],
    "index_select": lambda torch, F, x, i: x.index_select(0, i),
    "gather": lambda torch, F, x, i: x.gather(0, i),
    "index_add": lambda torch, F, x, i: torch.zeros(5).index_add(0, i, x[:2]),
    "index_put": lambda torch, F, x, i: torch.zeros(5).index_put((i,), x[:2]),
    "scatter": lambda torch, F, x, i: x.scatter(0, i, x[3:]),
    "scatter_add": lambda torch, F, x, i: x.scatter_add(0, i, x[3:]),
    "scatter_reduce": lambda torch, F, x, i: torch.zeros(5).scatter_reduce(0, i, x[:2], "sum"),
    "index_reduce": lambda torch, F, x, i: torch.ones(5).index_reduce(0, i, x[:2], "prod"),
    "index_copy": lambda torch, F, x, i: torch.zeros(5).index_copy(0, i, x[:2]),
    "index_fill": lambda torch, F, x, i: x.index_fill(0, i, 0.0),
    "take": lambda torch, F, x, i: torch.take(x, i),
    "take_along_dim": lambda torch, F, x, i: torch.take_along_dim(x, i),
    "index_put_accumulate": lambda torch, F, x, i: torch.zeros(5).index_put((i,), x[:2], accumulate=True),
    "put": lambda torch, F, x, i: torch.zeros(5).put(i, x[:2]),
    "embedding": lambda torch, F, x, i: F.embedding(i, x.view(5, 1)),
    "masked_fill": lambda torch, F, x, m: x.masked_fill(m, 0.0),
    "where": lambda torch, F, x, m: torch.where(m, x, 0.0),
    "masked_select": lambda torch, F, x, m: x.masked_select(m),
    "masked_scatter": lambda torch, F, x, m: torch.zeros(5).masked_scatter(m, x),
}


@LIBRARIES
@pytest.mark.parametrize("op", [*INDEXED, "setitem"])
def test_an_index_written_after_use_refuses_the_backward(op, torch):
    """The index ops save their index and mask tensors (PyTorch's nodes do): one written in place before the
    backward refuses it. Ours read the index's array, shared with the tensor, so the backward used the new indices:
    a wrong gradient, or a shape error for a mask."""
    F = torch.nn.functional
    x = torch.arange(5.0, requires_grad=True)
    index = torch.tensor([True, False, True, False, False]) if op in MASKS else torch.tensor([0, 2])
    if op == "setitem":
        y = x * 1
        y[index] = x[3:]
    else:
        y = INDEXED[op](torch, F, x, index)
    if op in MASKS:
        index.logical_not_()
    else:
        index.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@LIBRARIES
def test_an_index_left_alone_or_written_under_no_grad_is_fine(torch):
    x = torch.arange(5.0, requires_grad=True)
    index = torch.tensor([0, 2, 2])
    y = x[index.clone()] * 2  # (a copy is saved, not index)
    z = x * 1
    with torch.no_grad():
        z[index] = 0.0  # (not recorded: z's node keeps no watch on index)
    index[0] = 4
    other = torch.tensor([1, 3])
    w = x.index_select(0, other)
    (y.sum() + z.sum() + w.sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 2.0, 5.0, 2.0, 1.0])


@LIBRARIES
def test_take_along_a_dim_saves_a_copy_of_its_indices(torch):
    """take_along_dim with a dim gathers with a broadcast copy of indices (PyTorch's): writing them after the
    forward leaves the gradient the old indices' (without a dim it saves a view, and refuses: above)."""
    x = torch.arange(5.0, requires_grad=True)
    index = torch.tensor([0, 2])
    y = torch.take_along_dim(x, index, dim=0)
    index.add_(1)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 0.0, 1.0, 0.0, 0.0])
