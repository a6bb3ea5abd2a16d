"""Kernels PyTorch builds for some dtypes only: activations and normalisations that are floating only refuse
integer and bool tensors, and products (matmul, einsum, tensordot, inner, linear) refuse bools, with PyTorch's
error, where NumPy gave a result here (a float tensor PyTorch never gives, a bool product). Each test runs on
chainrule and, where installed, on PyTorch."""

import pytest

import nn
from tests.ported import raises


def _functional(T):
    return nn.functional if T.__name__ == "autograd" else T.nn.functional


KERNELS = {
    "gelu": (lambda F, x: F.gelu(x), "GeluKernelImpl"),
    "silu": (lambda F, x: F.silu(x), "silu_cpu"),
    "mish": (lambda F, x: F.mish(x), "mish_cpu"),
    "elu": (lambda F, x: F.elu(x), "elu_cpu"),
    "selu": (lambda F, x: F.selu(x), "elu_cpu"),
    "celu": (lambda F, x: F.celu(x), "elu_cpu"),
    "softplus": (lambda F, x: F.softplus(x), "softplus_cpu"),
    "logsigmoid": (lambda F, x: F.logsigmoid(x), "log_sigmoid_cpu"),
    "glu": (lambda F, x: F.glu(x, 1), "glu_cpu"),
    "layer_norm": (lambda F, x: F.layer_norm(x, (2,)), "LayerNormKernelImpl"),
}


@pytest.mark.parametrize("name", sorted(KERNELS))
@pytest.mark.parametrize("dtype", ["int64", "int32", "bool"])
def test_a_floating_kernel_refuses_integers(T, name, dtype):
    op, kernel = KERNELS[name]
    x = T.tensor([[1, 2], [3, 0]]).to(getattr(T, dtype))
    raises(NotImplementedError, f'"{kernel}" not implemented for', op, _functional(T), x)


def test_normalize_refuses_integers_as_its_norm_does(T):
    raises(RuntimeError, "Expected a floating point or complex tensor as input", _functional(T).normalize,
           T.tensor([[3, 4]]))


def test_floating_inputs_still_work(T):
    F = _functional(T)
    x = T.tensor([[1.0, -2.0], [0.5, 3.0]])
    for name, (op, _) in KERNELS.items():
        assert op(F, x).dtype == T.float32, name


@pytest.mark.parametrize("name, kernel", [
    ("vector @ vector", "dot"), ("matrix @ vector", "addmv_impl_cpu"), ("vector @ matrix", "addmm_impl_cpu_"),
    ("matrix @ matrix", "addmm_impl_cpu_"), ("batch @ batch", "bmm"), ("einsum", "bmm"),
    ("tensordot", "addmm_impl_cpu_"), ("inner", "dot"), ("linear", "addmm_impl_cpu_"),
])
def test_products_of_bools_are_refused_as_pytorch_has_no_bool_kernel(T, name, kernel):
    """NumPy multiplies bool matrices (an adjacency matrix squared, say) into bools; PyTorch refuses."""
    vector, matrix, batch = T.tensor([True, False]), T.ones(2, 2, dtype=T.bool), T.ones(2, 2, 2, dtype=T.bool)
    product = {
        "vector @ vector": lambda: vector @ vector, "matrix @ vector": lambda: matrix @ vector,
        "vector @ matrix": lambda: vector @ matrix, "matrix @ matrix": lambda: matrix @ matrix,
        "batch @ batch": lambda: batch @ batch, "einsum": lambda: T.einsum("ij,jk->ik", matrix, matrix),
        "tensordot": lambda: T.tensordot(matrix, matrix, 1), "inner": lambda: T.inner(vector, vector),
        "linear": lambda: _functional(T).linear(matrix, matrix),
    }[name]
    raises(NotImplementedError, f'"{kernel}" not implemented for', product)
    assert (matrix.float() @ matrix.float()).tolist() == [[2.0, 2.0], [2.0, 2.0]]  # (the way: convert first)


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_geqrf_refuses_integers_and_factors_complex_matrices(T, dtype):
    raises(NotImplementedError, '"geqrf_cpu" not implemented for', T.geqrf, T.ones(2, 2).to(getattr(T, dtype)))
    z = T.tensor([[1 + 2j, 0.5 - 1j], [3 - 1j, 2 + 0.5j], [-1j, 1.0 + 0j]], dtype=T.complex128)
    packed, tau = T.geqrf(z)
    q = T.linalg.householder_product(packed, tau)
    r = packed.triu()[:2]
    assert (q @ r - z).abs().max().item() < 1e-12
    assert (q.mH @ q - T.eye(2, dtype=T.complex128)).abs().max().item() < 1e-12


def test_cov_and_corrcoef_refuse_bools(T):
    x = T.tensor([[True, False, True], [False, False, True]])
    raises(RuntimeError, "cov\\(\\): bool dtype is not supported for input", T.cov, x)
    raises(RuntimeError, "cov\\(\\): bool dtype is not supported for input", T.corrcoef, x)


def test_searches_and_isin_refuse_bools_and_complex_numbers(T):
    b, c, f = T.tensor([True, False]), T.tensor([1 + 1j, 2j]), T.tensor([1.0, 2.0])
    for elements, test_elements, name in ((f, b, "Bool"), (b, f, "Bool"), (f, c, "ComplexFloat")):
        raises(RuntimeError, f"Unsupported input type encountered for isin\\(\\): {name}", T.isin, elements,
               test_elements)
    raises(NotImplementedError, "\"searchsorted_out_cpu\" not implemented for 'Bool'", T.bucketize, b, b)
    raises(NotImplementedError, "\"searchsorted_out_cpu\" not implemented for 'ComplexFloat'", T.searchsorted, f, c)
    assert T.bucketize(f, b.sort().values).tolist() == [1, 2]  # (bool boundaries with floats: floats)


def test_kernels_without_half_or_complex_versions(T):
    h, c, f = T.tensor([1.0, 2.0], dtype=T.float16), T.tensor([1 + 1j, 2j]), T.tensor([1.0, 2.0])
    raises(NotImplementedError, "\"zeta_cpu\" not implemented for 'Half'", T.special.zeta, h, h)
    raises(NotImplementedError, "\"zeta_cpu\" not implemented for 'ComplexFloat'", T.special.zeta, f, c)
    raises(NotImplementedError, "\"xlog1py_cpu\" not implemented for 'ComplexFloat'", T.special.xlog1py, f, c)
    raises(NotImplementedError, "\"logaddexp2_cpu\" not implemented for 'ComplexFloat'", T.logaddexp2, f, c)
    raises(NotImplementedError, "\"cdist\" not implemented for 'Half'", T.cdist, h.view(1, 2, 1), h.view(1, 2, 1))
    assert T.logaddexp(f, c).dtype == T.complex64


def test_ldexp_and_trapezoid_keep_the_promoted_dtype(T):
    i, h = T.tensor([1, 2]), T.tensor([1.0, 3.0], dtype=T.float16)
    assert T.ldexp(i, h).dtype == T.float16 and T.ldexp(i, h).tolist() == [2.0, 16.0]
    assert T.ldexp(h, i).dtype == T.float16 and T.ldexp(i, i).dtype == T.float32
    assert T.trapezoid(i, h).dtype == T.float16 and T.trapezoid(i, h).item() == 3.0
    assert T.cumulative_trapezoid(i, h).dtype == T.float16
    raises(RuntimeError, "trapezoid: received a bool input for `x` or `y`, but bool is not supported", T.trapezoid,
           T.tensor([True, False]), h)
    raises(RuntimeError, "cumulative_trapezoid: received a bool input for `y`, but bool is not supported",
           T.cumulative_trapezoid, T.tensor([True, False]))


def test_running_extrema_refuse_complex_and_quantiles_refuse_half(T):
    c = T.tensor([1 + 1j, 2j])
    raises(NotImplementedError, "\"cummax_cpu\" not implemented for 'ComplexFloat'", T.cummax, c, 0)
    raises(NotImplementedError, "\"cummin_cpu\" not implemented for 'ComplexFloat'", T.cummin, c, 0)
    for quantile in (T.quantile, T.nanquantile):
        for dtype in (T.float16, T.int64):
            raises(RuntimeError, "quantile\\(\\) input tensor must be either float or double dtype", quantile,
                   T.ones(3, dtype=dtype), 0.5)


SPECIAL_FLOAT_ONLY = ["airy_ai", "bessel_j0", "bessel_j1", "bessel_y0", "bessel_y1", "modified_bessel_i0",
                      "modified_bessel_i1", "modified_bessel_k0", "modified_bessel_k1", "scaled_modified_bessel_k0",
                      "scaled_modified_bessel_k1", "spherical_bessel_j0", "erfcx", "ndtri", "log_ndtr"]


@pytest.mark.parametrize("name", SPECIAL_FLOAT_ONLY)
def test_special_functions_with_float_loops_only_refuse_half_and_complex(T, name):
    function = getattr(T.special, name)
    for dtype, c_name in ((T.float16, "Half"), (T.complex64, "ComplexFloat")):
        raises(NotImplementedError, f"\"{name}_cpu\" not implemented for '{c_name}'", function,
               T.ones(2, dtype=dtype))
    assert function(T.tensor([0.5, 1.0])).dtype == T.float32 and function(T.tensor([1, 2])).dtype == T.float32


def test_orthogonal_polynomials_refuse_half(T):
    raises(NotImplementedError, "\"chebyshev_polynomial_t_cpu\" not implemented for 'Half'",
           T.special.chebyshev_polynomial_t, T.ones(2, dtype=T.float16), 2)
    assert T.special.legendre_polynomial_p(T.tensor([0.5]), 2).tolist() == [-0.125]


def test_pdist_histogram_and_gradient_refusals(T):
    h = T.ones(2, 3, dtype=T.float16)
    raises(NotImplementedError, "\"pdist\" not implemented for 'Half'", T.pdist, h)
    raises(RuntimeError, "pdist only supports floating-point dtypes", T.pdist, T.ones(2, 3, dtype=T.complex64))
    raises(NotImplementedError, "\"histogramdd\" not implemented for 'Half'", T.histogram, h)
    raises(RuntimeError, "torch.gradient does not support uint8 input", T.gradient, T.ones(3, dtype=T.uint8))
    raises(RuntimeError, "Subtraction, the `-` operator, with two bool tensors is not supported", T.gradient,
           T.ones(3, dtype=T.bool))
    assert T.gradient(T.tensor([1, 4, 9]))[0].tolist() == [3.0, 4.0, 5.0]


COMPLEX_REFUSED = {
    "gelu": (lambda F, x: F.gelu(x), "GeluKernelImpl"),
    "mish": (lambda F, x: F.mish(x), "mish_cpu"),
    "softplus": (lambda F, x: F.softplus(x), "softplus_cpu"),
    "logsigmoid": (lambda F, x: F.logsigmoid(x), "log_sigmoid_cpu"),
    "glu": (lambda F, x: F.glu(x), "glu_cpu"),
    "layer_norm": (lambda F, x: F.layer_norm(x, (4,)), "LayerNormKernelImpl"),
    "group_norm": (lambda F, x: F.group_norm(x, 1), "GroupNormKernelImpl"),
    "batch_norm": (lambda F, x: F.batch_norm(x, None, None, training=True), "batch_norm"),
    "instance_norm": (lambda F, x: F.instance_norm(x), "batch_norm"),
}


@pytest.mark.parametrize("name", sorted(COMPLEX_REFUSED))
def test_real_kernels_refuse_complex_tensors(T, name):
    op, kernel = COMPLEX_REFUSED[name]
    raises(NotImplementedError, f"\"{kernel}\" not implemented for 'ComplexFloat'", op, _functional(T),
           T.ones(1, 2, 4, dtype=T.complex64))


def test_silu_takes_complex_tensors(T):
    z = T.tensor([1 + 1j, -0.5j])
    expected = z / (1 + T.exp(-z))
    assert (_functional(T).silu(z) - expected).abs().max().item() < 1e-6


# -- linear algebra in float16: LAPACK has no half-precision routines, and PyTorch's CPU none either ---------------

HALF_LINALG = {  # call: (error class, what its message says)
    "linalg.det": (NotImplementedError, '"lu_cpu" not implemented for \'Half\''),
    "linalg.slogdet": (RuntimeError, "linalg.slogdet: Low precision dtypes not supported. Got Half"),
    "linalg.inv": (RuntimeError, "linalg.inv: Low precision dtypes not supported. Got Half"),
    "linalg.inv_ex": (RuntimeError, "linalg.inv: Low precision dtypes not supported"),
    "inverse": (RuntimeError, "linalg.inv: Low precision dtypes not supported"),
    "logdet": (RuntimeError, "logdet: Low precision dtypes not supported. Got Half"),
    "linalg.cholesky": (NotImplementedError, '"cholesky_cpu" not implemented'),
    "linalg.eigh": (NotImplementedError, '"linalg_eigh_cpu" not implemented'),
    "linalg.eigvals": (NotImplementedError, '"linalg_eig_out_cpu" not implemented'),
    "linalg.svd": (NotImplementedError, '"linalg_svd_cpu" not implemented'),
    "linalg.svdvals": (NotImplementedError, '"linalg_svd_cpu" not implemented'),
    "linalg.cond": (NotImplementedError, '"linalg_svd_cpu" not implemented'),
    "linalg.qr": (NotImplementedError, '"geqrf_cpu" not implemented'),
    "geqrf": (NotImplementedError, '"geqrf_cpu" not implemented'),
    "linalg.lu": (NotImplementedError, '"lu_cpu" not implemented'),
    "linalg.lu_factor": (NotImplementedError, '"lu_cpu" not implemented'),
    "linalg.ldl_factor": (NotImplementedError, '"ldl_factor_kernel_cpu" not implemented'),
    "linalg.pinv": (RuntimeError, "linalg.pinv(Half{[3, 3]}): expected a tensor with 2 or more dimensions"),
    "linalg.matrix_rank": (RuntimeError, "doesn't handle types other than float and double"),
    "cholesky_inverse": (NotImplementedError, '"cholesky_inverse_out_cpu" not implemented'),
}


@pytest.mark.parametrize("call", sorted(HALF_LINALG))
def test_linear_algebra_refuses_float16_as_pytorchs(T, call):
    matrix = T.tensor([[2.0, 1.0, 0.5], [1.0, 3.0, 0.2], [0.5, 0.2, 4.0]]).half()
    function = T
    for part in call.split("."):
        function = getattr(function, part)
    kind, message = HALF_LINALG[call]
    with pytest.raises(kind) as caught:
        function(matrix)
    assert message in str(caught.value)


def test_linear_algebra_with_two_float16_operands_refuses_too(T):
    matrix = T.eye(3).half()
    with pytest.raises(NotImplementedError, match='"lu_cpu" not implemented'):
        T.linalg.solve(matrix, matrix)
    with pytest.raises(NotImplementedError, match='"triangular_solve_cpu" not implemented'):
        T.linalg.solve_triangular(matrix, matrix, upper=True)
    with pytest.raises(NotImplementedError, match='"cholesky_solve_cpu" not implemented'):
        T.cholesky_solve(matrix, matrix)
    with pytest.raises(RuntimeError, match="doesn't handle types other than float and double"):
        T.linalg.lstsq(matrix, matrix)
    assert T.linalg.solve(matrix.float(), matrix.float()).dtype == T.float32  # (float32 still works)


def test_float16_matrix_norms_by_singular_values_are_refused_and_the_others_computed(T):
    matrix = T.tensor([[0.5, 1.5, 0.0], [2.0, -3.0, 4.0]]).half()
    for order in ("nuc", 2, -2):
        with pytest.raises(RuntimeError, match="linalg.matrix_norm: Low precision dtypes not supported. Got Half"):
            T.linalg.matrix_norm(matrix, order)
    with pytest.raises(RuntimeError, match="Low precision dtypes not supported"):
        T.norm(matrix, "nuc")
    for order in ("fro", 1, -1, float("inf")):
        assert T.linalg.matrix_norm(matrix, order).dtype == T.float16
    assert abs(T.linalg.norm(matrix).item() - 31.5 ** 0.5) < 5e-3
