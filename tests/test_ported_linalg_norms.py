"""Norms and condition numbers ported from PyTorch's test/test_linalg.py (TestLinalg): vector_norm over ords,
dims, keepdim and dtype=, matrix_norm and linalg.norm's ords, their errors (bad ords, empty inputs, dims),
complex inputs, cond, and gradients by gradcheck in float64.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same

INF = float("inf")


def _r(T, shape, seed=0, dtype="float64"):
    return T.tensor(np.random.default_rng(seed).standard_normal(shape).astype(dtype))


@pytest.mark.parametrize("ord", [0, 0.5, 1, 2, 3, INF, -INF, -1, -2, -0.5])
@pytest.mark.parametrize("dim,keepdim", [(None, False), (1, False), (-1, True), ((0, 2), False), ((0, 1), True)])
def test_vector_norm(T, ord, dim, keepdim):
    x = _r(T, (3, 4, 5))
    a = x.numpy()
    axis = tuple(range(3)) if dim is None else (dim if isinstance(dim, tuple) else (dim,))
    absx = np.abs(a)
    if ord == INF:
        expect = absx.max(axis=axis, keepdims=keepdim)
    elif ord == -INF:
        expect = absx.min(axis=axis, keepdims=keepdim)
    elif ord == 0:
        expect = (absx != 0).sum(axis=axis, keepdims=keepdim).astype(float)
    else:
        expect = (absx ** ord).sum(axis=axis, keepdims=keepdim) ** (1 / ord)
    close(T.linalg.vector_norm(x, ord, dim, keepdim), expect, rtol=1e-10, atol=1e-12)


def test_vector_norm_dtype_and_complex(T):
    x = _r(T, (3, 4), dtype="float32")
    out = T.linalg.vector_norm(x, dtype=T.float64)
    assert dtype_name(out) == "float64"
    close(out, np.linalg.norm(x.numpy().astype(np.float64)), rtol=1e-12)
    z = T.tensor(np.array([3 + 4j, 1j, -2.0]), dtype=T.complex64)
    n = T.linalg.vector_norm(z)
    assert dtype_name(n) == "float32"
    close(n, np.sqrt(25 + 1 + 4), rtol=1e-6)
    close(T.linalg.vector_norm(z, INF), 5.0)
    raises(RuntimeError, "without narrowing", T.linalg.vector_norm, x, dtype=T.float16)


def test_vector_norm_of_integers_and_empty(T):
    raises(RuntimeError, "", T.linalg.vector_norm, T.tensor([1, 2, 3]))
    e = T.zeros(0, 3)
    same(T.linalg.vector_norm(e), 0.0)
    same(T.linalg.vector_norm(e, 1, dim=0), np.zeros(3))
    raises(RuntimeError, "", T.linalg.vector_norm, e, INF)
    raises(RuntimeError, "", T.linalg.vector_norm, e, -1)
    same(T.linalg.vector_norm(e, INF, dim=1), np.zeros(0))


MATRIX_ORDS = ["fro", "nuc", INF, -INF, 1, -1, 2, -2]


def _np_matrix_norm(a, ord):
    return np.stack([np.linalg.norm(m, ord) for m in a.reshape(-1, *a.shape[-2:])]).reshape(a.shape[:-2])


@pytest.mark.parametrize("ord", MATRIX_ORDS)
def test_matrix_norm(T, ord):
    x = _r(T, (2, 3, 4))
    close(T.linalg.matrix_norm(x, ord), _np_matrix_norm(x.numpy(), ord), rtol=1e-10)
    close(T.linalg.norm(x, ord, dim=(-2, -1)), _np_matrix_norm(x.numpy(), ord), rtol=1e-10)
    kept = T.linalg.matrix_norm(x, ord, keepdim=True)
    assert tuple(kept.shape) == (2, 1, 1)
    swapped = T.linalg.matrix_norm(x, ord, dim=(-1, -2))
    close(swapped, _np_matrix_norm(np.swapaxes(x.numpy(), -1, -2), ord), rtol=1e-10)


@pytest.mark.parametrize("ord", ["fro", "nuc", INF, 1, 2, -2])
def test_matrix_norm_grad(T, ord):
    x = _r(T, (3, 3), 4).requires_grad_()
    assert T.autograd.gradcheck(lambda m: T.linalg.matrix_norm(m, ord), (x,))


@pytest.mark.parametrize("ord", [1, 2, 3.5, INF, -INF])
def test_vector_norm_grad(T, ord):
    x = _r(T, (2, 5), 4).requires_grad_()
    assert T.autograd.gradcheck(lambda v: T.linalg.vector_norm(v, ord, dim=1), (x,))


def test_norm_grad_at_zero_is_finite(T):
    x = T.zeros(3, dtype=T.float64, requires_grad=True)
    T.linalg.vector_norm(x).backward()
    same(x.grad, np.zeros(3))


def test_matrix_norm_errors(T):
    x = _r(T, (3, 3))
    raises(RuntimeError, "", T.linalg.matrix_norm, _r(T, 3))
    raises(RuntimeError, "", T.linalg.matrix_norm, x, 3)
    raises(RuntimeError, "", T.linalg.matrix_norm, x, "bad")
    raises(RuntimeError, "", T.linalg.matrix_norm, x, "fro", dim=(0, 0))
    raises(RuntimeError, "", T.linalg.matrix_norm, T.tensor([[1, 2], [3, 4]]))
    raises(RuntimeError, "", T.linalg.norm, _r(T, (2, 2, 2)), "fro", dim=(0, 1, 2))
    raises(RuntimeError, "", T.linalg.norm, _r(T, 3), "nuc")
    raises(TypeError, "must be Number, not str", T.linalg.vector_norm, x, "fro")


def test_matrix_norm_of_empty(T):
    """The largest of no row sums or singular values is 0; the smallest is an error."""
    e = T.zeros(2, 0, 3)
    for ord in ("fro", "nuc", 1, 2, INF, -INF):
        same(T.linalg.matrix_norm(e, ord, dim=(0, 1)), np.zeros(3))
    for ord in ("fro", "nuc", 1, -1, 2, INF):
        same(T.linalg.matrix_norm(e, ord), np.zeros(2))
    for ord in (1, 2, INF):
        same(T.linalg.matrix_norm(e, ord, dim=(-1, -2)), np.zeros(2))
    raises(IndexError, "non-zero size", T.linalg.matrix_norm, e, -1, dim=(0, 1))
    raises(IndexError, "non-zero size", T.linalg.matrix_norm, e, -INF)
    raises(IndexError, "non-zero size", T.linalg.matrix_norm, e, -2)
    same(T.linalg.matrix_norm(T.zeros(0, 2, 2), "nuc"), np.zeros(0))


def test_linalg_norm_defaults(T):
    x = _r(T, (3, 4))
    close(T.linalg.norm(x), np.linalg.norm(x.numpy()))
    close(T.linalg.norm(_r(T, (2, 3, 4))), np.linalg.norm(_r(T, (2, 3, 4)).numpy().ravel()))
    close(T.linalg.norm(x, 2), np.linalg.norm(x.numpy(), 2), rtol=1e-10)
    close(T.linalg.norm(x, 3, dim=1), np.linalg.norm(x.numpy(), 3, axis=1), rtol=1e-10)
    close(T.linalg.norm(_r(T, 5), INF), np.abs(_r(T, 5).numpy()).max())
    raises(RuntimeError, "", T.linalg.norm, _r(T, (2, 3, 4)), 2)
    z = T.tensor(np.array([[1 + 1j, 2], [0, 1j]]))
    close(T.linalg.norm(z), np.linalg.norm(z.numpy()))
    close(T.linalg.norm(z, "nuc"), np.linalg.norm(z.numpy(), "nuc"))
    assert dtype_name(T.linalg.norm(z)) == "float64"


def test_torch_norm_legacy(T):
    x = _r(T, (3, 4))
    close(T.norm(x), np.linalg.norm(x.numpy()))
    close(T.norm(x, p=1, dim=0), np.abs(x.numpy()).sum(0))
    close(T.norm(x, p="fro", dim=(0, 1)), np.linalg.norm(x.numpy()))
    close(x.norm(3), (np.abs(x.numpy()) ** 3).sum() ** (1 / 3))
    close(T.norm(x, p="nuc"), np.linalg.norm(x.numpy(), "nuc"))


@pytest.mark.parametrize("p", [None, "fro", "nuc", INF, -INF, 1, -1, 2, -2])
def test_cond(T, p):
    x = _r(T, (2, 3, 3), 2)
    expect = np.stack([np.linalg.cond(m, p) for m in x.numpy()])
    close(T.linalg.cond(x, p), expect, rtol=1e-8)


def test_cond_special_cases(T):
    sing = T.tensor([[1.0, 2.0], [2.0, 4.0]], dtype=T.float64)
    assert T.linalg.cond(sing, 1).item() == INF
    assert T.linalg.cond(sing).item() > 1e15
    close(T.linalg.cond(_r(T, (3, 2))), np.linalg.cond(_r(T, (3, 2)).numpy()), rtol=1e-10)
    raises(RuntimeError, "", T.linalg.cond, _r(T, (3, 2)), 1)
    same(T.linalg.cond(T.zeros(2, 0, 0), 1), np.zeros(2))
    raises(RuntimeError, "", T.linalg.cond, _r(T, 3))
    assert dtype_name(T.linalg.cond(T.eye(2, dtype=T.complex64))) == "float32"


def test_cond_of_empty_by_singular_values(T):
    for p in (None, 2, -2, "nuc"):
        same(T.linalg.cond(T.zeros(0, 0), p), 0.0)
    same(T.linalg.cond(T.zeros(2, 0, 3)), np.zeros(2, np.float32))
    same(T.linalg.cond(T.zeros(3, 0, 0, dtype=T.complex64), "fro"), np.zeros(3, np.float32))
    assert tuple(T.linalg.cond(T.zeros(0, 3, 3)).shape) == (0,)


@pytest.mark.parametrize("ord", [1, 2, 3, 0.5, INF, -1])
def test_vector_norm_complex_grad(T, ord):
    rng = np.random.default_rng(3)
    z = T.tensor(rng.standard_normal((2, 4)) + 1j * rng.standard_normal((2, 4))).requires_grad_()
    assert T.autograd.gradcheck(lambda x: T.linalg.vector_norm(x, ord, dim=-1), (z,))
    T.linalg.vector_norm(z, ord, dim=-1).sum().backward()
    a = z.detach().numpy()
    norm = (np.abs(a) ** ord).sum(-1, keepdims=True) ** (1 / ord) if ord != INF else np.abs(a).max(-1, keepdims=True)
    expect = (a / np.abs(a)) * (np.abs(a) ** (ord - 1) / norm ** (ord - 1) if ord != INF else np.abs(a) == norm)
    close(z.grad, expect, rtol=1e-10, atol=1e-12)


def test_matrix_norm_complex_grad(T):
    rng = np.random.default_rng(4)
    z = T.tensor(rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3))).requires_grad_()
    for ord in ("fro", 1, INF):
        assert T.autograd.gradcheck(lambda x, ord=ord: T.linalg.matrix_norm(x, ord), (z,))
