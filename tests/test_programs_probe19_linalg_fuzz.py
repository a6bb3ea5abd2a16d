"""Numerical linear algebra as real programs use it (see tests/pytorch_programs.py), each run on chainrule and on
PyTorch from the same data, comparing values, gradients, dtypes and errors; all in float64 and, where programs run
so, float32. A hypothesis-driven differential fuzz over shapes for 21 linalg functions (values, dtypes and gradients
against PyTorch, batched and broadcast, gradcheck in float64 on chainrule)."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import autograd

from .probe19_linalg_common import INF
from .pytorch_programs import OURS, run_both

# ----------------------------------------------------------------------------------------------
# A differential fuzz over shapes: a family of linalg functions, values and gradients against PyTorch
# ----------------------------------------------------------------------------------------------


def _general(rng, shape):
    n = shape[-1]
    return rng.standard_normal(shape) + 2 * n ** 0.5 * np.eye(n)  # (well away from singular)


def _spd(rng, shape):
    x = rng.standard_normal(shape)
    return x @ np.swapaxes(x, -1, -2) + shape[-1] * np.eye(shape[-1])


def _spread_spd(rng, shape):
    """Symmetric, eigenvalues 1, 2, ..., n (apart, so that eigenvectors are well defined and gradients tame)."""
    q = np.linalg.qr(rng.standard_normal(shape))[0]
    return q @ (np.arange(1.0, shape[-1] + 1)[:, None] * np.swapaxes(q, -1, -2))


def _tall(rng, shape):
    return rng.standard_normal(shape[:-2] + (shape[-1] + 2, shape[-1]))


def sym(A):
    """A symmetric function of A: what a Cholesky or eigh program differentiates (they read one triangle, and give the
    symmetric gradient), so that finite differences of any entry see it."""
    return (A + A.mT) / 2


# name: (inputs from (rng, batch, other_batch, n, k), the program on them; sign- and phase-free results only)
FAMILY = {
    "solve": (lambda r, b, b2, n, k: [_general(r, b + (n, n)), r.standard_normal(b2 + (n, k))],
              lambda m, A, B: m.torch.linalg.solve(A, B)),
    "solve left=False": (lambda r, b, b2, n, k: [_general(r, b + (n, n)), r.standard_normal(b2 + (k, n))],
                         lambda m, A, B: m.torch.linalg.solve(A, B, left=False)),
    "inv": (lambda r, b, b2, n, k: [_general(r, b + (n, n))], lambda m, A: m.torch.linalg.inv(A)),
    "det, slogdet": (lambda r, b, b2, n, k: [_general(r, b + (n, n))],
                     lambda m, A: (m.torch.linalg.det(A), m.torch.linalg.slogdet(A).logabsdet)),
    "logdet": (lambda r, b, b2, n, k: [_spd(r, b + (n, n))], lambda m, A: m.torch.logdet(A)),
    "cholesky": (lambda r, b, b2, n, k: [_spd(r, b + (n, n))],
                 lambda m, A: (m.torch.linalg.cholesky(sym(A)), m.torch.linalg.cholesky(sym(A), upper=True))),
    "cholesky_solve": (lambda r, b, b2, n, k: [_spd(r, b + (n, n)), r.standard_normal(b2 + (n, k))],
                       lambda m, A, B: m.torch.cholesky_solve(B, m.torch.linalg.cholesky(sym(A)))),
    "cholesky_inverse": (lambda r, b, b2, n, k: [_spd(r, b + (n, n))],
                         lambda m, A: m.torch.cholesky_inverse(m.torch.linalg.cholesky(sym(A), upper=True),
                                                               upper=True)),
    "solve_triangular": (lambda r, b, b2, n, k: [_general(r, b + (n, n)), r.standard_normal(b2 + (n, k))],
                         lambda m, A, B: (m.torch.linalg.solve_triangular(A, B, upper=True),
                                          m.torch.linalg.solve_triangular(A, B.mT, upper=False, left=False),
                                          m.torch.linalg.solve_triangular(A, B, upper=False, unitriangular=True))),
    "lu_solve": (lambda r, b, b2, n, k: [_general(r, b + (n, n)), r.standard_normal(b2 + (n, k))],
                 lambda m, A, B: (m.torch.linalg.lu_solve(*m.torch.linalg.lu_factor(A), B),
                                  m.torch.linalg.lu_solve(*m.torch.linalg.lu_factor(A), B, adjoint=True))),
    "lu": (lambda r, b, b2, n, k: [r.standard_normal(b + (n, n + k - 1))], lambda m, A: m.torch.linalg.lu(A)),
    "qr": (lambda r, b, b2, n, k: [_tall(r, b + (n, n))], lambda m, A: tuple(m.torch.linalg.qr(A))),
    "eigh": (lambda r, b, b2, n, k: [_spread_spd(r, b + (n, n))],
             lambda m, A: (lambda w, V: (w, V @ m.torch.diag_embed(w.sqrt()) @ V.mT, V.abs()))(
                 *m.torch.linalg.eigh(sym(A)))),
    "svd": (lambda r, b, b2, n, k: [_tall(r, b + (n, n))],
            lambda m, A: (lambda U, S, Vh: (S, U @ m.torch.diag_embed(S.log()) @ Vh, U.abs()))(
                *m.torch.linalg.svd(A, full_matrices=False))),
    "pinv, lstsq": (lambda r, b, b2, n, k: [_tall(r, b + (n, n)), r.standard_normal(b + (n + 2, k))],
                    lambda m, A, B: (m.torch.linalg.pinv(A), m.torch.linalg.lstsq(A, B).solution)),
    "matrix_exp": (lambda r, b, b2, n, k: [r.standard_normal(b + (n, n))], lambda m, A: m.torch.linalg.matrix_exp(A)),
    "matrix_power": (lambda r, b, b2, n, k: [_general(r, b + (n, n)) / n],
                     lambda m, A: tuple(m.torch.linalg.matrix_power(A, p) for p in (-2, 0, 1, 3))),
    "norms": (lambda r, b, b2, n, k: [r.standard_normal(b + (n, n + k))],
              lambda m, A: tuple(m.torch.linalg.matrix_norm(A, ord) for ord in ("fro", "nuc", 1, 2, -2, INF))
              + tuple(m.torch.linalg.vector_norm(A, ord, dim=-1) for ord in (1, 2, 3, INF, 0.5))),
    "householder_product": (lambda r, b, b2, n, k: [r.standard_normal(b + (n + 1, n)), r.standard_normal(b + (n,))],
                            lambda m, A, tau: m.torch.linalg.householder_product(A, tau)),
    "eigvals": (lambda r, b, b2, n, k: [r.standard_normal(b + (n, n))],  # (symmetric functions of λ: no order)
                lambda m, A: tuple((m.torch.linalg.eigvals(A) ** p).sum(-1).real for p in (1, 2, 3))),
    "multi_dot, cross, vander": (lambda r, b, b2, n, k: [r.standard_normal((n, 3)), r.standard_normal((3, k))],
                                 lambda m, A, B: (m.torch.linalg.multi_dot([A, B, B.T, A.T]),
                                                  m.torch.linalg.cross(A, A.roll(1, 0)),
                                                  m.torch.linalg.vander(A[:, 0], N=4))),
}

FUZZ = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))


def _run_family(m, name, arrays, dtype_name):
    torch = m.torch
    dtype = getattr(torch, dtype_name)
    inputs = [torch.tensor(a, dtype=dtype, requires_grad=True) for a in arrays]
    outputs = FAMILY[name][1](m, *inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    loss = sum((o * torch.cos(torch.arange(o.numel(), dtype=dtype)).reshape(o.shape)).sum() for o in outputs
               if o.requires_grad)
    grads = torch.autograd.grad(loss, inputs)
    return ([o.detach() for o in outputs], [str(o.dtype).split(".")[-1] for o in outputs], list(grads),
            [str(g.dtype).split(".")[-1] for g in grads])


@FUZZ
@given(name=st.sampled_from(sorted(FAMILY)), batch=st.sampled_from([(), (2,), (2, 1), (1, 3)]),
       other=st.sampled_from([None, (), (3,)]), n=st.integers(1, 4), k=st.integers(1, 3),
       dtype_name=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 2**16))
def test_fuzz_linalg_family_against_pytorch(name, batch, other, n, k, dtype_name, seed):
    """Values, dtypes and gradients of each function of the family on random shapes (batched, a second operand's
    batch broadcast against the first's), against PyTorch; in float64 chainrule's gradients against finite
    differences too (gradcheck), so that the check stands where PyTorch is missing."""
    rng = np.random.default_rng(seed)
    b2 = batch if other is None else other
    if other is not None and batch and other:  # (shapes that broadcast: (2, 1) with (3,) gives (2, 3))
        b2 = other if batch[-1] == 1 or batch[-1] == other[-1] else batch
    arrays = FAMILY[name][0](rng, batch, b2, n, k)
    tol = dict(rtol=1e-7, atol=1e-9) if dtype_name == "float64" else dict(rtol=2e-3, atol=2e-4)
    ours, _ = run_both(_run_family, name, arrays, dtype_name, **tol)
    assert all(d == dtype_name for d in ours[3])
    if dtype_name == "float64":
        def fn(*xs):
            outs = FAMILY[name][1](OURS, *xs)
            return outs if isinstance(outs, tuple) else (outs,)

        inputs = tuple(autograd.tensor(a, requires_grad=True) for a in arrays)
        assert autograd.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-4)
