"""Signatures that an audit against PyTorch's found wrong, and their fixes.

Each fixed name's parameters are checked against PyTorch's own (its Python signature, or for a
native function its ATen schemas) when torch is installed, so a regression shows; and every
fixed keyword or positional form is checked by value without torch.
"""

import inspect

import numpy as np
import pytest

import autograd
import nn.functional as F

POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)

# name -> (ours, its positional parameters as PyTorch orders them (a method's after the tensor itself),
#          keywords PyTorch also accepts, the torch object whose signature these come from, as a path below torch)
FIXED = {
    "std": (autograd.std, ["input", "dim", "unbiased", "keepdim"], ["correction", "out"], "std"),
    "var": (autograd.var, ["input", "dim", "unbiased", "keepdim"], ["correction", "out"], "var"),
    "std_mean": (autograd.std_mean, ["input", "dim", "unbiased", "keepdim"], ["correction"], "std_mean"),
    "var_mean": (autograd.var_mean, ["input", "dim", "unbiased", "keepdim"], ["correction"], "var_mean"),
    "max": (autograd.max, ["input", "dim", "keepdim"], ["other", "out"], "max"),
    "min": (autograd.min, ["input", "dim", "keepdim"], ["other", "out"], "min"),
    "swapdims": (autograd.swapdims, ["input", "dim0", "dim1"], [], "swapdims"),
    "swapaxes": (autograd.swapaxes, ["input", "axis0", "axis1"], [], "swapaxes"),
    "Tensor.swapdims_": (autograd.Tensor.swapdims_, ["dim0", "dim1"], [], "Tensor.swapdims_"),
    "Tensor.split": (autograd.Tensor.split, ["split_size", "dim"], [], "Tensor.split"),
    "split": (autograd.split, ["tensor", "split_size_or_sections", "dim"], [], "split"),
    "unsafe_split": (autograd.unsafe_split, ["input", "split_size", "dim"], [], "unsafe_split"),
    "tensor_split": (autograd.tensor_split, ["input"], ["sections", "indices", "tensor_indices_or_sections", "dim"],
                     "tensor_split"),
    "hsplit": (autograd.hsplit, ["input"], ["sections", "indices"], "hsplit"),
    "vsplit": (autograd.vsplit, ["input"], ["sections", "indices"], "vsplit"),
    "dsplit": (autograd.dsplit, ["input"], ["sections", "indices"], "dsplit"),
    "dot": (autograd.dot, ["input", "tensor"], ["out"], "dot"),
    "lu_solve": (autograd.lu_solve, ["input", "LU_data", "LU_pivots"], ["out"], "lu_solve"),
    "orgqr": (autograd.orgqr, ["input", "input2"], ["out"], "orgqr"),
    "ormqr": (autograd.ormqr, ["input", "input2", "input3", "left", "transpose"], ["out"], "ormqr"),
    "nn.functional.one_hot": (F.one_hot, ["input", "num_classes"], [], "nn.functional.one_hot"),
    "nn.functional.linear": (F.linear, ["input", "weight", "bias"], ["out"], "nn.functional.linear"),
    "norm": (autograd.norm, ["input", "p", "dim", "keepdim", "out", "dtype"], [], "norm"),
    "Tensor.norm": (autograd.Tensor.norm, ["p", "dim", "keepdim", "dtype"], [], "Tensor.norm"),
    "special.logsumexp": (autograd.special.logsumexp, ["input", "dim", "keepdim"], ["out"], "special.logsumexp"),
    "special.softmax": (autograd.special.softmax, ["input", "dim", "dtype"], [], "special.softmax"),
    "linalg.lstsq": (autograd.linalg.lstsq, ["input", "b", "rcond"], ["driver", "out"], "linalg.lstsq"),
    "linalg.tensorsolve": (autograd.linalg.tensorsolve, ["input", "other", "dims"], ["out"], "linalg.tensorsolve"),
    "linalg.solve_triangular": (autograd.linalg.solve_triangular, ["input", "B"], ["upper", "left", "out"],
                                "linalg.solve_triangular"),
    "linalg.matrix_rank": (autograd.linalg.matrix_rank, ["input", "tol", "hermitian"], ["atol", "rtol", "out"],
                           "linalg.matrix_rank"),
    "linalg.pinv": (autograd.linalg.pinv, ["input", "rcond", "hermitian"], ["atol", "rtol", "out"], "linalg.pinv"),
    "linalg.svdvals": (autograd.linalg.svdvals, ["A"], ["driver", "out"], "linalg.svdvals"),
    "linalg.cross": (autograd.linalg.cross, ["input", "other"], ["dim", "out"], "linalg.cross"),
    "linalg.vecdot": (autograd.linalg.vecdot, ["x", "y"], ["dim", "out"], "linalg.vecdot"),
}
# torch.linalg's functions of one matrix whose keyword is input= (its docs write A)
for _name in ("cholesky", "cholesky_ex", "cond", "eig", "eigvals", "eigh", "eigvalsh", "ldl_factor", "ldl_factor_ex",
              "matrix_norm", "matrix_power", "norm", "tensorinv"):
    FIXED["linalg." + _name] = (getattr(autograd.linalg, _name), ["input"], [], "linalg." + _name)
# torch.special's functions whose keyword is x=
for _name in ("chebyshev_polynomial_t", "chebyshev_polynomial_u", "chebyshev_polynomial_v", "chebyshev_polynomial_w",
              "shifted_chebyshev_polynomial_t", "shifted_chebyshev_polynomial_u", "shifted_chebyshev_polynomial_v",
              "shifted_chebyshev_polynomial_w", "hermite_polynomial_h", "hermite_polynomial_he",
              "laguerre_polynomial_l", "legendre_polynomial_p"):
    FIXED["special." + _name] = (getattr(autograd.special, _name), ["x", "n"], ["out"], "special." + _name)
for _name in ("airy_ai", "scaled_modified_bessel_k0", "scaled_modified_bessel_k1", "spherical_bessel_j0"):
    FIXED["special." + _name] = (getattr(autograd.special, _name), ["x"], ["out"], "special." + _name)
for _name in ("erf", "expit", "ndtr", "entr", "sinc"):
    FIXED["special." + _name] = (getattr(autograd.special, _name), ["input"], ["out"], "special." + _name)


def _parameters(fn, method=False):
    params = list(inspect.signature(fn).parameters.values())
    if method:  # the tensor itself, whatever either side calls it
        params = params[1:]
    return [p.name for p in params if p.kind in POSITIONAL], {p.name for p in params}


@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_signatures(name):
    ours, positional, keywords, _ = FIXED[name]
    our_positional, our_names = _parameters(ours, method=name.startswith("Tensor."))
    assert our_positional[:len(positional)] == positional
    assert set(keywords) <= our_names


def _torch_signatures(torch, path):
    """PyTorch's signatures of ``path``, as (positional names, all names) pairs: a Python function's
    own, or one per ATen overload of a native one (``self`` read as ``input``)."""
    fn = torch
    for part in path.split("."):
        fn = getattr(fn, part)
    method = path.startswith("Tensor.")
    try:
        return [_parameters(fn, method)]
    except (TypeError, ValueError):
        pass
    name = fn.__name__  # (torch.linalg.norm's is linalg_norm, its ATen name)
    signatures = []
    for schema in torch._C._jit_get_schemas_for_operator("aten::" + name):
        arguments = schema.arguments[1:] if method else schema.arguments
        if not any("Tensor" in str(a.type) for a in schema.arguments):
            continue
        names = ["input" if a.name == "self" else a.name for a in arguments]
        positional = [n for n, a in zip(names, arguments) if not a.kwarg_only]
        signatures.append((positional, set(names) | {"out"}))
    return signatures


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(FIXED))
def test_fixed_signatures_are_pytorchs(name):
    torch = pytest.importorskip("torch")
    _, positional, keywords, path = FIXED[name]
    signatures = _torch_signatures(torch, path)
    assert signatures, f"no signature found for torch {path}"
    # our positional order is one of PyTorch's overloads (up to where ours stops listing)
    assert any(p[:len(positional)] == positional for p, _ in signatures), signatures
    every_name = set().union(*(n for _, n in signatures))
    assert set(keywords) <= every_name, sorted(every_name)


X = autograd.tensor([1.0, 2.0, 4.0])


@pytest.mark.parametrize("op", ["std", "var"])
def test_std_var_bool_is_unbiased(op):
    data = np.array([1.0, 2.0, 4.0])
    expected = getattr(np, op)(data)  # ddof 0: the population statistic
    for value in (getattr(autograd, op)(X, False), getattr(X, op)(unbiased=False)):
        np.testing.assert_allclose(value.item(), expected)
    np.testing.assert_allclose(getattr(autograd, op)(X, True).item(), getattr(np, op)(data, ddof=1))
    with pytest.raises(TypeError, match="unbiased"):
        getattr(autograd, op)(X, False, keepdim=True)


@pytest.mark.parametrize("op", ["std_mean", "var_mean"])
def test_std_var_mean_bool_is_unbiased(op):
    spread, mean = getattr(autograd, op)(X, False)
    np.testing.assert_allclose(spread.item(), getattr(np, op.split("_")[0])([1.0, 2.0, 4.0]))
    np.testing.assert_allclose(mean.item(), 7 / 3)


def test_max_min_other_keyword():
    a, b = autograd.tensor([1.0, 5.0]), autograd.tensor([3.0, 2.0])
    assert autograd.max(a, other=b).tolist() == [3.0, 5.0]
    assert autograd.min(input=a, other=b).tolist() == [1.0, 2.0]
    assert autograd.max(a, b).tolist() == [3.0, 5.0]
    with pytest.raises(TypeError):
        autograd.max(a, b, other=b)
    with pytest.raises(TypeError):
        autograd.max(a, 0, other=b)


def test_swapdims_keywords():
    x = autograd.zeros(2, 3)
    assert autograd.swapdims(x, dim0=0, dim1=1).shape == (3, 2)
    assert x.swapdims(dim0=1, dim1=0).shape == (3, 2)
    assert autograd.swapaxes(x, axis0=0, axis1=1).shape == (3, 2)
    y = autograd.zeros(2, 3)
    assert y.swapdims_(dim0=0, dim1=1) is y and y.shape == (3, 2)


def test_split_keywords():
    x = autograd.arange(6)
    assert [p.tolist() for p in x.split(split_size=4)] == [[0, 1, 2, 3], [4, 5]]
    assert [p.tolist() for p in x.split([1, 5])] == [[0], [1, 2, 3, 4, 5]]
    assert [p.tolist() for p in autograd.unsafe_split(input=x, split_size=3)] == [[0, 1, 2], [3, 4, 5]]
    assert [p.tolist() for p in autograd.split(x, split_size_or_sections=3)] == [[0, 1, 2], [3, 4, 5]]


def test_tensor_split_keywords():
    x = autograd.arange(6)
    thirds = [[0, 1], [2, 3], [4, 5]]
    assert [p.tolist() for p in autograd.tensor_split(x, sections=3)] == thirds
    assert [p.tolist() for p in x.tensor_split(indices=[1, 4])] == [[0], [1, 2, 3], [4, 5]]
    assert [p.tolist() for p in autograd.tensor_split(x, tensor_indices_or_sections=autograd.tensor(3))] == thirds
    assert [p.tolist() for p in autograd.hsplit(x, sections=3)] == thirds
    assert [p.tolist() for p in x.hsplit(indices=[2])] == [[0, 1], [2, 3, 4, 5]]
    assert [p.shape for p in autograd.vsplit(autograd.zeros(4, 2), sections=2)] == [(2, 2), (2, 2)]
    assert [p.shape for p in autograd.dsplit(autograd.zeros(1, 1, 4), indices=[1])] == [(1, 1, 1), (1, 1, 3)]
    with pytest.raises(TypeError, match="one of"):
        autograd.tensor_split(x, 2, sections=3)
    with pytest.raises(TypeError, match="one of"):
        autograd.hsplit(x)


def test_dot_tensor_keyword():
    a, b = autograd.tensor([1.0, 2.0]), autograd.tensor([3.0, 4.0])
    assert autograd.dot(a, tensor=b).item() == 11.0
    assert a.dot(tensor=b).item() == 11.0


def test_lu_solve_input_keyword():
    A = autograd.tensor([[4.0, 3.0], [6.0, 3.0]])
    LU, pivots = autograd.linalg.lu_factor(A)
    b = autograd.tensor([[1.0], [2.0]])
    x = autograd.lu_solve(input=b, LU_data=LU, LU_pivots=pivots)
    np.testing.assert_allclose((A @ x).numpy(), b.numpy(), atol=1e-6)


def test_orgqr_ormqr_keywords():
    A = autograd.tensor([[2.0, 1.0], [1.0, 3.0], [0.5, 1.0]], dtype=autograd.float64)
    reflectors, tau = autograd.geqrf(A)
    Q = autograd.orgqr(reflectors, input2=tau)
    R = np.triu(reflectors.numpy()[:2])
    np.testing.assert_allclose(Q.numpy() @ R, A.numpy(), atol=1e-12)  # A = Q R
    C = autograd.eye(3, dtype=autograd.float64)
    QC = autograd.ormqr(reflectors, input2=tau, input3=C)  # Q · I: the full Q, whose first columns are orgqr's
    np.testing.assert_allclose(QC.numpy()[:, :2], Q.numpy(), atol=1e-12)
    np.testing.assert_allclose(reflectors.ormqr(tau, C, True, True).numpy(), QC.numpy().T, atol=1e-12)


def test_norm_method_takes_dtype_fourth():
    x = autograd.tensor([[3.0, 4.0], [6.0, 8.0]])
    by_column = x.norm(2, 0, False, autograd.float64)  # the function's fifth is out=, the method's dtype
    assert by_column.dtype == autograd.float64
    np.testing.assert_allclose(by_column.numpy(), [45 ** 0.5, 80 ** 0.5])
    out = autograd.empty(0)
    assert autograd.norm(x, 2, 1, False, out) is out and out.tolist() == [5.0, 10.0]


def test_resize_size_keyword():
    x = autograd.zeros(4)
    assert x.resize_(size=(2, 2)) is x and x.shape == (2, 2)
    with pytest.raises(TypeError):
        x.resize_(4, size=(4,))


def test_linear_out_keyword():
    x, w, b = autograd.tensor([[1.0, 2.0]]), autograd.tensor([[1.0, 1.0], [0.0, 2.0]]), autograd.tensor([1.0, 0.0])
    out = autograd.empty(0)
    assert F.linear(x, w, b, out=out) is out and out.tolist() == [[4.0, 4.0]]
    assert F.linear(x, w, out=autograd.empty(0)).tolist() == [[3.0, 4.0]]


def test_view_dtype():
    x = autograd.tensor([[1.0, 2.0]], requires_grad=True)
    bits = x.view(autograd.int32)
    assert bits.tolist() == [[1065353216, 1073741824]] and not bits.requires_grad  # IEEE 754 of 1.0 and 2.0
    assert x.view(dtype=autograd.float16).shape == (1, 4) and x.view(autograd.float64).shape == (1, 1)
    assert autograd.tensor([1, 2]).view(autograd.int32).tolist() == [1, 0, 2, 0]  # little-endian int64
    with pytest.raises(RuntimeError, match="divisible by 2"):
        autograd.tensor([[1.0, 2.0, 3.0]]).view(autograd.float64)
    with pytest.raises(RuntimeError, match="cannot be 0"):
        autograd.tensor(1.0).view(autograd.int16)


def test_explicit_none_defaults():
    x = autograd.tensor([1.0, float("nan"), 9.0])
    assert autograd.nan_to_num(x, nan=None).tolist() == [1.0, 0.0, 9.0]
    assert x.nan_to_num(None).tolist() == [1.0, 0.0, 9.0]
    (slope,) = autograd.gradient(autograd.tensor([1.0, 4.0, 9.0]), spacing=None)
    assert slope.tolist() == [3.0, 4.0, 5.0]


def test_one_hot_input_keyword():
    assert F.one_hot(input=autograd.tensor([0, 2]), num_classes=3).tolist() == [[1, 0, 0], [0, 0, 1]]


def _out_cases(m):
    """(name, call taking out=) for the functions that take out= in PyTorch and now in ours, over
    module ``m`` (autograd or torch)."""
    x, v, i = m.tensor([[1.0, 2.0], [3.0, 4.0]]), m.tensor([1.0, 2.0, 3.0]), m.tensor([1, 0])
    spd = m.tensor([[2.0, 1.0], [1.0, 2.0]])
    return {
        "argmax": lambda out: m.argmax(x, out=out), "argmin": lambda out: m.argmin(x, 1, out=out),
        "softmax": lambda out: m.softmax(x, 0, out=out), "log_softmax": lambda out: m.log_softmax(x, 1, out=out),
        "clamp_max": lambda out: m.clamp_max(x, 2.0, out=out), "clamp_min": lambda out: m.clamp_min(x, 2.0, out=out),
        "nansum": lambda out: m.nansum(x, 0, out=out), "nanmean": lambda out: m.nanmean(x, out=out),
        "cholesky": lambda out: m.cholesky(spd, out=out), "matrix_power": lambda out: m.matrix_power(x, 3, out=out),
        "conj_physical": lambda out: m.conj_physical(x, out=out), "diff": lambda out: m.diff(v, out=out),
        "heaviside": lambda out: m.heaviside(v - 2, v, out=out),
        "index_copy": lambda out: m.index_copy(x, 0, i, x, out=out), "take": lambda out: m.take(x, i, out=out),
        "nonzero_static": lambda out: m.nonzero_static(x, size=3, out=out),
        "isin": lambda out: m.isin(v, x, out=out), "mvlgamma": lambda out: m.mvlgamma(x + 2, 2, out=out),
        "narrow_copy": lambda out: m.narrow_copy(x, 1, 1, 1, out=out),
        "slice_scatter": lambda out: m.slice_scatter(x, x[:1], start=1, out=out),
        "renorm": lambda out: m.renorm(x, 2, 0, 1.0, out=out), "cat": lambda out: m.cat([x, x], 1, out=out),
        "stack": lambda out: m.stack([v, v], out=out),
        "bernoulli": lambda out: m.bernoulli(m.tensor([0.0, 1.0]), out=out),
        "multinomial": lambda out: m.multinomial(m.tensor([0.0, 1.0]), 1, out=out),
        "aminmax": lambda out: m.aminmax(x, out=out), "slogdet": lambda out: m.slogdet(x, out=out),
    }


PAIRS = {"aminmax", "slogdet"}  # (values, values) results take a pair of out tensors


@pytest.mark.parametrize("name", sorted(_out_cases(autograd)))
def test_out_keyword(name):
    call = _out_cases(autograd)[name]
    expected = call(None)
    if name in PAIRS:
        out = (autograd.empty(0), autograd.empty(0))
        result = call(out)
        assert result[0] is out[0] and result[1] is out[1]
        for got, want in zip(result, expected):
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6)
        return
    out = autograd.empty(0, dtype=expected.dtype)
    assert call(out) is out
    assert out.dtype == expected.dtype
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-6)


@pytest.mark.torch
@pytest.mark.filterwarnings("ignore:torch.cholesky is deprecated")
@pytest.mark.parametrize("name", sorted(_out_cases(autograd)))
def test_out_keyword_is_pytorchs(name):
    torch = pytest.importorskip("torch")
    call = _out_cases(torch)[name]
    expected = call(None)
    if name in PAIRS:
        out = (torch.empty(0), torch.empty(0))
    else:
        out = torch.empty(0, dtype=expected.dtype)
    call(out)  # PyTorch takes out= here too
    ours = _out_cases(autograd)[name](None)
    for got, want in zip(ours if name in PAIRS else [ours], expected if name in PAIRS else [expected]):
        if name not in ("bernoulli", "multinomial"):  # (random draws: ours are NumPy's)
            np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5)


A2 = autograd.tensor([[2.0, 1.0], [1.0, 2.0]], dtype=autograd.float64)  # singular values 3 and 1


def test_linalg_input_keywords():
    np.testing.assert_allclose(autograd.linalg.cholesky(input=A2).numpy(), np.linalg.cholesky(A2.numpy()))
    assert autograd.linalg.norm(input=A2).item() == pytest.approx(10 ** 0.5)
    assert autograd.linalg.matrix_power(input=A2, n=2).tolist() == [[5.0, 4.0], [4.0, 5.0]]
    B = autograd.tensor([[1.0], [2.0]], dtype=autograd.float64)
    solution = autograd.linalg.lstsq(input=A2, b=B).solution
    np.testing.assert_allclose(solution.numpy(), np.linalg.solve(A2.numpy(), B.numpy()), atol=1e-12)
    out = tuple(autograd.empty(0, dtype=dtype) for dtype in (A2.dtype, A2.dtype, autograd.int64, A2.dtype))
    result = autograd.linalg.lstsq(A2, B, out=out)
    assert result.solution is out[0] and result.rank is out[2] and out[2].item() == 2
    U = autograd.tensor([[2.0, 1.0], [0.0, 4.0]], dtype=autograd.float64)
    np.testing.assert_allclose(autograd.linalg.solve_triangular(input=U, B=B, upper=True).numpy(), [[0.25], [0.5]])
    v = autograd.tensor([3.0, 3.0], dtype=autograd.float64)
    np.testing.assert_allclose(autograd.linalg.tensorsolve(input=A2, other=v).numpy(), [1.0, 1.0])


def test_matrix_rank_tol_and_pinv_rcond_positional():
    rank = autograd.linalg.matrix_rank
    assert rank(A2, 1.5).item() == 1 and rank(A2, 0.5).item() == 2  # tol: an absolute tolerance
    assert rank(A2, atol=1.5).item() == 1 and rank(A2, atol=0.5, rtol=0.5).item() == 1  # max(atol, rtol·σ₁)
    assert rank(A2).item() == 2
    # rcond: relative to σ₁ = 3, so 0.5 drops σ = 1 and keeps the rank-one part (1/6 in every entry)
    np.testing.assert_allclose(autograd.linalg.pinv(A2, 0.5).numpy(), np.full((2, 2), 1 / 6))
    np.testing.assert_allclose(autograd.linalg.pinv(A2, 0.1, True).numpy(), np.linalg.inv(A2.numpy()))
    with pytest.raises(TypeError, match="not both"):
        rank(A2, 0.5, atol=0.1)
    with pytest.raises(TypeError, match="not both"):
        autograd.linalg.pinv(A2, 0.5, rtol=0.1)


def test_linalg_out_and_driver():
    out = autograd.empty(0)
    a, b = autograd.tensor([1.0, 0.0, 0.0]), autograd.tensor([0.0, 1.0, 0.0])
    assert autograd.linalg.cross(a, b, out=out) is out and out.tolist() == [0.0, 0.0, 1.0]
    out = autograd.empty(0)
    assert autograd.linalg.vecdot(a, a, out=out) is out and out.item() == 1.0
    np.testing.assert_allclose(autograd.linalg.svdvals(A2, driver=None).numpy(), [3.0, 1.0])


def test_special_x_keywords():
    x = autograd.tensor([0.5, 2.0], dtype=autograd.float64)
    np.testing.assert_allclose(autograd.special.chebyshev_polynomial_t(x=x, n=2).numpy(), 2 * x.numpy() ** 2 - 1)
    np.testing.assert_allclose(autograd.special.hermite_polynomial_h(x=x, n=1).numpy(), 2 * x.numpy())
    np.testing.assert_allclose(autograd.special.spherical_bessel_j0(x=x).numpy(), np.sin(x.numpy()) / x.numpy())
    assert autograd.special.airy_ai(x=autograd.tensor(0.0, dtype=autograd.float64)).item() == pytest.approx(
        0.3550280538878172)  # Ai(0) = 1 / (3^(2/3) Γ(2/3))
    k0 = autograd.special.scaled_modified_bessel_k0(x=x).numpy()
    np.testing.assert_allclose(k0, autograd.special.modified_bessel_k0(x).numpy() * np.exp(x.numpy()))


@pytest.mark.parametrize("name", ["erf", "expit", "ndtr", "entr", "sinc"])
def test_special_out(name):
    x = autograd.tensor([0.25, 1.0])
    out = autograd.empty(0)
    op = getattr(autograd.special, name)
    assert op(x, out=out) is out
    np.testing.assert_allclose(out.numpy(), op(x).numpy())


def test_special_logsumexp_and_softmax_keywords():
    x = autograd.tensor([[0.0, 0.0], [1.0, 1.0]])
    out = autograd.empty(0)
    assert autograd.special.logsumexp(input=x, dim=1, out=out) is out
    np.testing.assert_allclose(out.numpy(), np.log(2) + np.array([0.0, 1.0]), rtol=1e-6)
    assert autograd.special.softmax(x, 0, autograd.float64).dtype == autograd.float64


# Found by the same audit in the engine's own files (their fixes landed after the audit's branch).
ENGINE_FILES = {
    "x.std(False) is unbiased": lambda: X.std(False).item() == pytest.approx(np.std([1.0, 2.0, 4.0])),
    "x.max(other)": lambda: X.max(autograd.tensor([3.0, 3.0, 3.0])).tolist() == [3.0, 3.0, 4.0],
    "logsumexp(input=, out=)": lambda: autograd.logsumexp(input=X, dim=0, out=autograd.empty(0)).item()
    == pytest.approx(np.log(np.exp([1.0, 2.0, 4.0]).sum())),
    "clamp(input=, out=)": lambda: autograd.clamp(input=X, min=2.0, out=autograd.empty(0)).tolist() == [2.0, 2.0, 4.0],
    "where(..., out=)": lambda: autograd.where(X > 1, X, 0.0, out=autograd.empty(0)).tolist() == [0.0, 2.0, 4.0],
    "numel(input=)": lambda: autograd.numel(input=X) == 3,
    "div_(rounding_mode=)": lambda: autograd.tensor([5.0, -7.0]).div_(2.0, rounding_mode="floor").tolist()
    == [2.0, -4.0],
    "zeros_like(pin_memory=)": lambda: autograd.zeros_like(X, pin_memory=False).tolist() == [0.0, 0.0, 0.0],
    "copy_(other=)": lambda: autograd.zeros(3).copy_(other=X).tolist() == [1.0, 2.0, 4.0],
    "F.gelu(out=)": lambda: _written(lambda out: F.gelu(X, out=out), F.gelu(X)),
    "F.softplus(out=)": lambda: _written(lambda out: F.softplus(X, 2.0, out=out), F.softplus(X, 2.0)),
    "F.softshrink(out=)": lambda: _written(lambda out: F.softshrink(X, 1.5, out=out), F.softshrink(X, 1.5)),
    "hardshrink(out=)": lambda: _written(lambda out: autograd.hardshrink(X, 1.5, out=out), autograd.hardshrink(X, 1.5)),
    "threshold(out=)": lambda: _written(lambda out: autograd.threshold(X, 1.5, -1.0, out=out),
                                        autograd.threshold(X, 1.5, -1.0)),
    "F.avg_pool2d(out=)": lambda: _written(lambda out: F.avg_pool2d(X.reshape(1, 1, 1, 3), (1, 2), out=out),
                                           F.avg_pool2d(X.reshape(1, 1, 1, 3), (1, 2))),
    "F.avg_pool3d(out=)": lambda: _written(lambda out: F.avg_pool3d(X.reshape(1, 1, 1, 1, 3), (1, 1, 2), out=out),
                                           F.avg_pool3d(X.reshape(1, 1, 1, 1, 3), (1, 1, 2))),
}


def _written(call, expected):
    """call(out) writes its result into out and returns out, equal to the out-of-place result."""
    out = autograd.empty(0)
    result = call(out)
    return result is out and out.tolist() == expected.tolist() and out.tolist() != []


@pytest.mark.parametrize("name", sorted(ENGINE_FILES))
def test_fixed_in_the_engines_files(name):
    assert ENGINE_FILES[name]()
