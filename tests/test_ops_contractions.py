"""einsum and the named products: gradients against finite differences (float64, drawn
sizes, first and second order), and values, gradients, dtypes and errors against PyTorch."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import autograd
from tests.ops_reference import compare, raises_like
from tests.test_ops import _run, arrays, leaf, matmul_pair

# (equation, the subscripts of each operand, as given to np.random shapes)
EQUATIONS = ["ij,jk->ik", "bij,bjk->bik", "ii->i", "ii", "ij->", "i,j->ij", "iij->j", "ij,ij->", "ijk,jk",
             "i,i", "ij,jk,k->i", "...ij,...jk->...ik", "ji", "bi,bi->b", "ik,kj->ji"]


@st.composite
def einsum_case(draw):
    equation = draw(st.sampled_from(EQUATIONS))
    sizes = {label: draw(st.integers(1, 3)) for label in "bijk"}
    terms = equation.split("->")[0].split(",")
    tensors = []
    for term in terms:
        if "..." in term:  # a batch that broadcasts: (2,) against (1,) or ()
            batch = draw(st.sampled_from([(2,), (1,), ()]))
            shape = batch + tuple(sizes[c] for c in term.replace("...", ""))
        else:
            shape = tuple(sizes[c] for c in term)
        tensors.append(leaf(draw(arrays(shape))))
    return tensors, equation


CASES = {
    "Einsum": (einsum_case(), lambda *args: autograd.einsum(args[-1], *args[:-1])),
}

COMPOSITES = {
    "kron": (matmul_pair(), lambda a, b: autograd.kron(a, b)),
    "tensordot": (matmul_pair(), lambda a, b: autograd.tensordot(a, b.movedim(-2, 0) if b.ndim > 1 else b, dims=1)),
    "inner": (matmul_pair(), lambda a, b: autograd.inner(a, b.mT if b.ndim > 1 else b)),
}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(COMPOSITES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run({**CASES, **COMPOSITES}[name], data)
    assert autograd.gradcheck(fn, tensors)


@given(data=st.data())
def test_einsum_second_derivatives_match_finite_differences(data):
    tensors, fn = _run(CASES["Einsum"], data)
    assert autograd.gradgradcheck(fn, tensors)


rng = np.random.default_rng(0)
A = rng.standard_normal((2, 3, 4))
B = rng.standard_normal((4, 5))
BB = rng.standard_normal((2, 4, 5))
V = rng.standard_normal(4)
S = rng.standard_normal((3, 3))

TORCH_CASES = {
    "einsum_batched": (lambda m, a, b: m.einsum("bij,jk->bik", a, b), A, B),
    "einsum_implicit": (lambda m, a, b: m.einsum("...j,jk", a, b), A, B),
    "einsum_list_operands": (lambda m, a, b: m.einsum("bij,bjk->bik", [a, b]), A, BB),
    "einsum_diagonal": (lambda m, s: m.einsum("ii->i", s), S),
    "einsum_trace": (lambda m, s: m.einsum("ii", s), S),
    "einsum_sum": (lambda m, s: m.einsum("ij->", s), S),
    "einsum_transpose": (lambda m, s: m.einsum("ij->ji", s), S),
    "einsum_outer": (lambda m, v: m.einsum("i,j->ij", v, v), V),
    "einsum_three": (lambda m, a, b, v: m.einsum("bij,jk,k->bi", a, b, b[0]), A, B, V),
    "einsum_ellipsis_broadcast": (lambda m, a, b: m.einsum("...ij,...jk->...ik", a, b), A, BB[:1]),
    "einsum_spaces": (lambda m, a, b: m.einsum("b i j , j k -> b i k", a, b), A, B),
    "einsum_attention": (lambda m, a: m.einsum("bqd,bkd->bqk", a, a).softmax(-1), A),
    "dot": (lambda m, v: m.dot(v, v * 2), V),
    "vdot": (lambda m, v: m.vdot(v, v.exp()), V),
    "dot_method": (lambda m, v: v.dot(v), V),
    "inner": (lambda m, a, b: m.inner(a, b.T), A, B),
    "outer": (lambda m, v: m.outer(v, v[:3]), V),
    "ger": (lambda m, v: v.ger(v), V),
    "mv": (lambda m, b, v: m.mv(b.T, v), B, V),
    "mm": (lambda m, a, b: m.mm(a[0], b), A, B),
    "bmm": (lambda m, a, b: m.bmm(a, b), A, BB),
    "bmm_method": (lambda m, a, b: a.bmm(b), A, BB),
    "addmm": (lambda m, c, a, b: m.addmm(c, a[0], b, beta=0.5, alpha=2), B[:3], A, B),
    "addmm_broadcast": (lambda m, c, a, b: m.addmm(c[0], a[0], b), B, A, B),
    "addmm_beta_zero_nan": (lambda m, c, a, b: m.addmm((c * float("nan")).detach(), a[0], b, beta=0), B[:3], A, B),
    "addmv": (lambda m, c, a, v: m.addmv(c[:3], a[0], v, alpha=3), V, A, V),
    "baddbmm": (lambda m, c, a, b: m.baddbmm(c, a, b, alpha=2), B[:3], A, BB),
    "addbmm": (lambda m, c, a, b: m.addbmm(c, a, b, beta=2), B[:3], A, BB),
    "addr": (lambda m, c, v: m.addr(c, v[:3], v), B[:3, :4], V),
    "kron": (lambda m, s, b: m.kron(s, b), S, B[:2, :2]),
    "kron_mixed_dims": (lambda m, v, s: m.kron(v, s), V, S),
    "tensordot_int": (lambda m, a, b: m.tensordot(a, b, dims=1), A, B),
    "tensordot_pairs": (lambda m, a, b: m.tensordot(a, b, dims=([1, 2], [2, 1])), A, rng.standard_normal((2, 4, 3))),
    "matmul_keywords": (lambda m, a, b: m.matmul(input=a, other=b), A, B),
    "linalg_multi_dot": (lambda m, s, b: m.linalg.multi_dot([s, s, b[:3]]), S, B),
    "linalg_vecdot": (lambda m, a: m.linalg.vecdot(a, a[0], dim=-1), A),
    "linalg_cross": (lambda m, s: m.linalg.cross(s, s.exp()), S),
    "linalg_cross_dim0": (lambda m, s: m.linalg.cross(s, s * s, dim=0), S),
    "cross": (lambda m, a: m.cross(a, a * a, dim=1), A),
    "cross_method": (lambda m, s: s.cross(s.exp(), dim=0), S),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name):
    fn, *inputs = TORCH_CASES[name]
    compare(fn, *inputs)


ERRORS = {
    "einsum_size_mismatch": (lambda m, a, b: m.einsum("ij,jk", a[0], a[0]), "subscript j has size 3 for operand 1"),
    "einsum_fewer_operands": (lambda m, a, b: m.einsum("ij,jk", a[0]), "fewer operands were provided"),
    "einsum_wrong_ndim": (lambda m, a, b: m.einsum("ijk", a[0]), "does not match the number of dimensions"),
    "dot_matrices": (lambda m, a, b: m.dot(b, b), "1D tensors expected, but got 2D and 2D tensors"),
    "dot_lengths": (lambda m, a, b: m.dot(b[0], b[1, :3]), "inconsistent tensor size"),
    "bmm_2d": (lambda m, a, b: m.bmm(a[0], a[0]), "batch1 must be a 3D tensor"),
    "mm_shapes": (lambda m, a, b: m.mm(a[0], a[0]), "mat1 and mat2 shapes cannot be multiplied (3x4 and 3x4)"),
    "outer_matrix": (lambda m, a, b: m.outer(b, b[0]), "outer"),
    # batch dims that do not broadcast are named among the batch dims (not a matrix dim of the product)
    "matmul_batch_dims": (lambda m, a, b: m.matmul(a[None, :, None], b.expand(3, 3, 1, 4, 5)),
                          "The size of tensor a (2) must match the size of tensor b (3) at non-singleton dimension 1"),
    "matmul_batch_3d": (lambda m, a, b: m.matmul(a, b.expand(3, 4, 5)),
                        "The size of tensor a (2) must match the size of tensor b (3) at non-singleton dimension 0"),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(ERRORS))
def test_errors_match_torch(name):
    fn, message = ERRORS[name]
    assert message in str(raises_like(fn, A, B))
