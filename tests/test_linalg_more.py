"""The _ex variants (info instead of errors), cond, tensorsolve, tensorinv, householder_product and
eig/eigvals: values without PyTorch, float64 finite differences on hypothesis-drawn inputs, and
PyTorch's values, gradients, dtypes and errors."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import autograd
from autograd import Tensor, linalg
from tests.test_linalg_triangular_lu import _well_conditioned
from tests.test_ops import _run, arrays, leaf

try:
    import torch
except ImportError:
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
RNG = np.random.default_rng(5)
P_VALUES = [None, 2, -2, "fro", "nuc", 1, -1, math.inf, -math.inf]


def _singular_batch():
    """Two 3 × 3 matrices, the second singular (its second column is zero: U[2,2] = 0)."""
    a = _well_conditioned(RNG, (2, 3, 3))
    a[1] = [[2.0, 0.0, 1.0], [1.0, 0.0, 3.0], [0.0, 0.0, 1.0]]
    return a


@st.composite
def _square(draw, sizes=(1, 2, 3), batches=((), (2,))):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    return [leaf(_well_conditioned(rng, draw(st.sampled_from(batches)) + (draw(st.sampled_from(sizes)),) * 2))]


@st.composite
def _reflectors(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    m, n = draw(st.sampled_from(((3, 2), (4, 4), (4, 3), (1, 1))))
    batch = draw(st.sampled_from(((), (2,))))
    k = draw(st.integers(0, n))
    return [leaf(rng.standard_normal(batch + (m, n))), leaf(rng.standard_normal(batch + (k,)))]


@st.composite
def _ormqr_inputs(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    m, n = draw(st.sampled_from(((3, 2), (3, 3), (2, 3))))
    left, transpose = draw(st.booleans()), draw(st.booleans())
    batch = draw(st.sampled_from(((), (2,))))
    other = rng.standard_normal(batch + ((m, 2) if left else (2, m)))
    tensors = [leaf(rng.standard_normal(batch + (m, n))), leaf(rng.standard_normal(batch + (min(m, n),))), leaf(other)]
    return tensors, (left, transpose)


def _spd(a):
    return a @ a.mT + autograd.eye(a.shape[-1], dtype=a.dtype)


FUNCTIONS = {
    "inv_ex": (_square(), lambda a: linalg.inv_ex(a).inverse),
    "solve_ex": (_square(), lambda a: linalg.solve_ex(a, a.sum(-1, keepdim=True) + 1.0).result),
    "cholesky_ex": (_square(), lambda a: linalg.cholesky_ex(_spd(a), upper=True).L),
    "tensorsolve": (_square(sizes=(4,), batches=((),)),
                    lambda a: linalg.tensorsolve(a.reshape(2, 2, 4), a[0].reshape(2, 2))),
    "tensorinv": (_square(sizes=(6,), batches=((),)), lambda a: linalg.tensorinv(a.reshape(2, 3, 6), ind=2)),
    "householder_product": (_reflectors(), linalg.householder_product),
    "ormqr": (_ormqr_inputs(), lambda a, tau, c, flags: autograd.ormqr(a, tau, c, *flags)),
    "vander": (_square(sizes=(3,)), lambda a: linalg.vander(a, N=4)),
    "qr wide": (_square(sizes=(3,), batches=((), (2,))), lambda a: autograd.cat(linalg.qr(a[..., :2, :]), -1)),
    **{f"cond {p}": (_square(sizes=(2, 3)), lambda a, p=p: linalg.cond(a, p)) for p in P_VALUES},
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn = _run(FUNCTIONS[name], data)
    assert autograd.gradcheck(fn, tensors)


def test_second_order():
    a = leaf(_well_conditioned(RNG, (3, 3)))
    assert autograd.gradgradcheck(lambda a: linalg.cond(a, "fro"), (a,))
    assert autograd.gradgradcheck(lambda a: linalg.householder_product(a, a[:, 0]), (a,))


def test_info_instead_of_errors():
    a, b = _singular_batch(), RNG.standard_normal((2, 3, 2))
    inverse, info = linalg.inv_ex(Tensor(a))
    assert info.tolist() == [0, 2] and info.dtype == autograd.int32
    np.testing.assert_allclose(inverse[0].numpy(), np.linalg.inv(a[0]), atol=1e-12)
    assert np.isnan(inverse[1].numpy()).all()  # not an answer
    result, info = linalg.solve_ex(Tensor(a), Tensor(b))
    assert info.tolist() == [0, 2] and np.isnan(result[1].numpy()).all()
    np.testing.assert_allclose(result[0].numpy(), np.linalg.solve(a[0], b[0]), atol=1e-12)
    assert linalg.solve_ex(Tensor(a), Tensor(b[..., 0])).result.shape == (2, 3)
    spd = a[:1] @ np.swapaxes(a[:1], -1, -2) + np.eye(3)
    indefinite = np.concatenate([spd, np.diag([1.0, 2.0, -1.0])[None]])
    L, info = linalg.cholesky_ex(Tensor(indefinite))
    assert info.tolist() == [0, 3]
    np.testing.assert_allclose(L[0].numpy(), np.linalg.cholesky(spd[0]), atol=1e-12)
    assert linalg.cholesky_ex(Tensor(spd[0])).info.item() == 0 and linalg.inv_ex(Tensor(a[0])).info.shape == ()
    # the good matrices keep their gradients
    x = Tensor(a, requires_grad=True)
    linalg.inv_ex(x).inverse[0].sum().backward()
    assert np.isfinite(x.grad.numpy()).all() and not x.grad[1].numpy().any()
    with pytest.raises(linalg.LinAlgError, match=r"^linalg.inv_ex: \(Batch element 1\): The diagonal element 2 is"):
        linalg.inv_ex(Tensor(a), check_errors=True)
    with pytest.raises(linalg.LinAlgError, match=r"^torch.linalg.solve_ex: The solver failed because the input"):
        linalg.solve_ex(Tensor(a[1]), Tensor(b[1]), check_errors=True)
    with pytest.raises(linalg.LinAlgError, match=r"\(Batch element 1\).*the leading minor of order 3 is not positive"):
        linalg.cholesky_ex(Tensor(indefinite), check_errors=True)
    with pytest.raises(RuntimeError, match="square matrices"):
        linalg.inv_ex(autograd.ones(2, 3))


def test_cond():
    diagonal = Tensor(np.diag([4.0, 2.0, 0.5]))
    for p, expected in [(None, 8.0), (2, 8.0), (-2, 1 / 8), (1, 8.0), (math.inf, 8.0), (-1, 1 / 8),
                        ("fro", math.sqrt(16 + 4 + 0.25) * math.sqrt(1 / 16 + 1 / 4 + 4)), ("nuc", 6.5 * 2.75)]:
        assert linalg.cond(diagonal, p).item() == pytest.approx(expected, rel=1e-14)
    singular = _singular_batch()
    for p in ("fro", 1, "nuc"):
        kappa = linalg.cond(Tensor(singular), p)
        assert math.isfinite(kappa[0].item()) and kappa[1].item() == math.inf
    assert linalg.cond(Tensor(RNG.standard_normal((2, 3, 5)))).shape == (2,)  # rectangular for p = 2
    with pytest.raises(RuntimeError, match=r"linalg.cond\(ord=fro\): A must be batches of square matrices"):
        linalg.cond(autograd.ones(2, 3), "fro")
    with pytest.raises(RuntimeError, match="invalid norm type: 3"):
        linalg.cond(diagonal, 3)
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        linalg.cond(autograd.ones(3))


def test_tensorsolve_tensorinv_householder():
    a = _well_conditioned(RNG, (6, 6)).reshape(2, 3, 6)
    b = RNG.standard_normal((2, 3))
    x = linalg.tensorsolve(Tensor(a), Tensor(b))
    np.testing.assert_allclose(np.tensordot(a, x.numpy(), 1), b, atol=1e-12)
    inverse = linalg.tensorinv(Tensor(a.reshape(6, 2, 3)), ind=1)
    assert inverse.shape == (2, 3, 6)
    np.testing.assert_allclose(np.tensordot(inverse.numpy(), a.reshape(6, 2, 3), 1), np.eye(2 * 3).reshape(2, 3, 2, 3),
                               atol=1e-12)
    with pytest.raises(RuntimeError, match="but got 6 != 8"):
        linalg.tensorsolve(autograd.ones(2, 3, 6), autograd.ones(2, 4))
    with pytest.raises(RuntimeError, match="strictly positive integer for 'ind', but got 0"):
        linalg.tensorinv(autograd.ones(2, 3, 6), ind=0)
    # Q of a QR factorisation, rebuilt from its reflectors (v = e₁ + (…), τ = 2 / vᵀv)
    column = RNG.standard_normal(4)
    v = column - np.linalg.norm(column) * np.eye(4)[0]
    v /= v[0]
    reflector = linalg.householder_product(Tensor(v[:, None]), Tensor([2 / (v @ v)], dtype=autograd.float64))
    np.testing.assert_allclose(reflector.numpy()[:, 0], (np.eye(4) - 2 * np.outer(v, v) / (v @ v))[:, 0])
    q = linalg.householder_product(Tensor(RNG.standard_normal((5, 3))), Tensor(np.zeros(0)))
    np.testing.assert_array_equal(q.numpy(), np.eye(5, 3))  # no reflection: the identity's columns
    with pytest.raises(RuntimeError, match=r"input.shape\[-2\] must be greater than or equal to input.shape\[-1\]"):
        linalg.householder_product(autograd.ones(2, 3), autograd.ones(2))
    with pytest.raises(RuntimeError, match="batch dimensions of tau"):
        linalg.householder_product(autograd.ones(2, 3, 2), autograd.ones(3, 2))


def test_geqrf_orgqr_ormqr_vander():
    a = RNG.standard_normal((2, 5, 3))
    packed, tau = autograd.geqrf(Tensor(a))
    Q = packed.orgqr(tau)  # Tensor.orgqr = linalg.householder_product
    R = packed.triu()[..., :3, :]
    np.testing.assert_allclose((Q @ R).numpy(), a, atol=1e-12)
    np.testing.assert_allclose((Q.mT @ Q).numpy(), np.broadcast_to(np.eye(3), (2, 3, 3)), atol=1e-12)
    c = RNG.standard_normal((2, 5, 2))
    full_q = autograd.ormqr(packed, tau, autograd.eye(5, dtype=autograd.float64).expand(2, 5, 5))
    np.testing.assert_allclose(full_q[..., :3].numpy(), Q.numpy(), atol=1e-12)
    for left, transpose, product in ((True, False, lambda q, c: q @ c), (True, True, lambda q, c: q.mT @ c),
                                     (False, False, lambda q, c: c.mT @ q), (False, True, lambda q, c: c.mT @ q.mT)):
        other = Tensor(c if left else np.swapaxes(c, -1, -2))
        np.testing.assert_allclose(autograd.ormqr(packed, tau, other, left, transpose).numpy(),
                                   product(full_q, Tensor(c)).numpy(), atol=1e-12)
    packed_, tau_ = autograd.geqrf(Tensor(a, requires_grad=True))  # (the values, in the graph: no derivative)
    np.testing.assert_array_equal(packed_.detach().numpy(), packed.numpy())
    with pytest.raises(NotImplementedError, match="the derivative for 'geqrf' is not implemented."):
        linalg.householder_product(packed_, tau_).sum().backward()
    with pytest.raises(RuntimeError, match=r"other.shape\[-1\] must be equal to input.shape\[-2\]"):
        autograd.ormqr(packed, tau, Tensor(c), left=False)
    x = Tensor(np.array([[0.0, 2.0, -1.0]]), requires_grad=True)
    powers = linalg.vander(x)
    np.testing.assert_array_equal(powers.detach().numpy(), [[[1, 0, 0], [1, 2, 4], [1, -1, 1]]])
    powers.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1.0, 5.0, -1.0]])  # 1 + 2x, finite at 0
    assert linalg.vander(autograd.tensor([1, 2])).dtype == autograd.int64
    with pytest.raises(RuntimeError, match="N must be greater than 1"):
        linalg.vander(x, N=1)


def test_qr_of_wide_matrices_and_complete_mode():
    a = RNG.standard_normal((2, 2, 4))
    q, r = linalg.qr(Tensor(a))
    assert q.shape == (2, 2, 2) and r.shape == (2, 2, 4)
    np.testing.assert_allclose((q @ r).numpy(), a, atol=1e-12)
    np.testing.assert_allclose(r.numpy(), np.triu(r.numpy()))
    assert linalg.qr(Tensor(a, requires_grad=True)).R.requires_grad  # (it had no gradient before)
    tall = RNG.standard_normal((5, 3))
    q, r = linalg.qr(Tensor(tall), mode="complete")
    assert q.shape == (5, 5) and r.shape == (5, 3)
    np.testing.assert_allclose((q @ r).numpy(), tall, atol=1e-12)
    np.testing.assert_allclose((q.mT @ q).numpy(), np.eye(5), atol=1e-12)
    assert Tensor(tall).qr(some=False).Q.shape == (5, 5)
    # computed with a graph, as PyTorch's; only the backward through it is refused
    leaf = Tensor(tall, requires_grad=True)
    q_graph, r_graph = linalg.qr(leaf, mode="complete")
    np.testing.assert_allclose(q_graph.detach().numpy(), q.numpy())
    np.testing.assert_allclose(r_graph.detach().numpy(), r.numpy())
    assert q_graph.grad_fn.name() == r_graph.grad_fn.name() == "LinalgQrBackward0"
    with pytest.raises(RuntimeError, match=r"not differentiable when mode='complete' and nrows > ncols\.$"):
        r_graph.sum().backward()
    assert leaf.grad is None
    assert linalg.qr(Tensor(a, requires_grad=True), mode="complete").Q.shape == (2, 2, 2)  # wide: as reduced
    with pytest.raises(RuntimeError, match="unrecognized mode 'x' but expected one of"):
        linalg.qr(Tensor(tall), mode="x")


@st.composite
def _tall_matrices(draw):
    rows = draw(st.integers(2, 5))
    return [leaf(draw(arrays((rows, draw(st.integers(1, rows - 1))))))]


def _complete_factors(a):
    q, r = linalg.qr(a, mode="complete")
    return q.sum() + r.sum()


CASES = {  # (tests/test_ops.py checks that every primitive has one)
    "NoQRGradient": (_tall_matrices(), _complete_factors),  # computed, its derivative refused, as PyTorch's
}


@given(data=st.data())
def test_complete_qr_of_a_tall_matrix_is_computed_and_its_derivative_refused(data):
    tensors, fn = _run(CASES["NoQRGradient"], data)
    a = tensors[0]
    q, r = linalg.qr(a, mode="complete")
    np.testing.assert_allclose((q @ r).detach().numpy(), a.detach().numpy(), atol=1e-12)
    with pytest.raises(RuntimeError, match="not differentiable when mode='complete' and nrows > ncols"):
        fn(*tensors).backward()


@pytest.mark.parametrize("shape", [(5, 3), (3, 3), (3, 5), (2, 4, 3)])
def test_qr_mode_r_keeps_r_in_the_graph_and_refuses_its_backward(shape):
    """mode 'r' keeps no Q, which R's derivative needs: R is computed with a graph, and a backward through it raises
    PyTorch's error (as its LinalgQrBackward0); Q is empty."""
    a = RNG.standard_normal(shape)
    leaf = Tensor(a, requires_grad=True)
    q, r = linalg.qr(leaf, mode="r")
    assert q.shape == (0,)
    np.testing.assert_allclose(r.detach().numpy(), linalg.qr(Tensor(a)).R.numpy())
    assert r.requires_grad and r.grad_fn.name() == "LinalgQrBackward0"
    with pytest.raises(RuntimeError, match="depends on Q, which is not computed when mode='r'"):
        r.sum().backward()
    with autograd.no_grad():
        assert not linalg.qr(leaf, mode="r").R.requires_grad


def test_deprecated_norm_and_product_spellings():
    a = RNG.standard_normal((2, 3, 4))
    np.testing.assert_allclose(autograd.frobenius_norm(Tensor(a), (1, 2)).numpy(), np.linalg.norm(a, axis=(1, 2)))
    assert autograd.frobenius_norm(Tensor(a), 1, keepdim=True).shape == (2, 1, 4)
    np.testing.assert_allclose(autograd.nuclear_norm(Tensor(a)).numpy(), np.linalg.norm(a, "nuc", axis=(1, 2)))
    assert autograd.nuclear_norm(Tensor(a[0]), True).shape == (1, 1)  # (the keepdim overload)
    np.testing.assert_allclose(autograd.chain_matmul(*map(Tensor, (a[0], a[1].T, a[0]))).numpy(), a[0] @ a[1].T @ a[0])
    with pytest.raises(RuntimeError, match="at most 2 dimensions"):
        autograd.frobenius_norm(Tensor(a), (0, 1, 2))
    with pytest.raises(RuntimeError, match="Expected one or more matrices"):
        autograd.chain_matmul()
    with pytest.raises(RuntimeError, match="Tensor dimension is 3, expected 2"):
        autograd.chain_matmul(Tensor(a), Tensor(a))
    x = Tensor(a, requires_grad=True)
    assert autograd.gradcheck(lambda x: autograd.nuclear_norm(x, (0, 2)) + autograd.frobenius_norm(x, (0, 1)).sum(),
                              (x,))


def test_eig_values_only():
    rotation = Tensor(np.array([[0.0, -1.0], [1.0, 0.0]]))
    values = linalg.eigvals(rotation)
    assert values.dtype == np.complex128
    np.testing.assert_allclose(sorted(values.numpy(), key=lambda z: z.imag), [-1j, 1j], atol=1e-15)
    a = RNG.standard_normal((2, 4, 4)).astype(np.float32)
    values, vectors = linalg.eig(Tensor(a))
    assert values.dtype == np.complex64 and vectors.dtype == np.complex64
    np.testing.assert_allclose(a @ vectors.numpy(), vectors.numpy() * values.numpy()[..., None, :], atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors.numpy(), axis=-2), 1.0, rtol=1e-6)
    assert linalg.eigvals(Tensor(np.eye(2))).dtype == np.complex128  # real eigenvalues, still complex
    hermitian = np.array([[2.0, 1j], [-1j, 2.0]])
    np.testing.assert_allclose(np.sort(linalg.eigvals(Tensor(hermitian)).numpy().real), [1.0, 3.0])
    with pytest.raises(RuntimeError, match="floating point or complex"):
        linalg.eigvals(autograd.ones(2, 2, dtype=autograd.int64))
    assert linalg.eig(Tensor(a, requires_grad=True)).eigenvalues.requires_grad  # (its gradient: test_ported_linalg_*)
    with autograd.no_grad():
        assert linalg.eigvals(Tensor(a, requires_grad=True)).shape == (2, 4)
    with pytest.raises(RuntimeError, match="square matrices"):
        linalg.eigvals(autograd.ones(2, 3))


@needs_torch
def test_ex_against_pytorch():
    a, b = _singular_batch(), RNG.standard_normal((2, 3, 2))
    for name, args in (("inv_ex", (a,)), ("solve_ex", (a, b))):
        ours = getattr(linalg, name)(*map(Tensor, args))
        theirs = getattr(torch.linalg, name)(*map(torch.tensor, args))
        assert ours.info.tolist() == theirs.info.tolist() and str(theirs.info.dtype) == "torch.int32"
        np.testing.assert_allclose(ours[0][0].numpy(), theirs[0][0].numpy(), atol=1e-12)
    spd = a @ np.swapaxes(a, -1, -2) + np.eye(3)
    spd[1, 1, 1] = -4.0
    for upper in (False, True):
        ours = linalg.cholesky_ex(Tensor(spd), upper=upper)
        theirs = torch.linalg.cholesky_ex(torch.tensor(spd), upper=upper)
        assert ours.info.tolist() == theirs.info.tolist()
        np.testing.assert_allclose(ours.L[0].numpy(), theirs.L[0].numpy(), atol=1e-12)
    for module, error in ((linalg, linalg.LinAlgError), (torch.linalg, torch.linalg.LinAlgError)):
        with pytest.raises(error, match=r"linalg.inv_ex: \(Batch element 1\): The diagonal element 2 is zero, the "
                                        "inversion could not be completed because the input matrix is singular."):
            module.inv_ex(Tensor(a) if module is linalg else torch.tensor(a), check_errors=True)


@needs_torch
@pytest.mark.parametrize("p", P_VALUES)
def test_cond_against_pytorch(p):
    a = _singular_batch()
    a[1, 1, 1] = 1.0  # invertible, but further from the identity
    ours, theirs = Tensor(a, requires_grad=True), torch.tensor(a, requires_grad=True)
    ours_kappa, theirs_kappa = linalg.cond(ours, p), torch.linalg.cond(theirs, p)
    np.testing.assert_allclose(ours_kappa.detach().numpy(), theirs_kappa.detach().numpy(), rtol=1e-12)
    assert str(theirs_kappa.dtype) == f"torch.{ours_kappa.dtype}"
    singular = _singular_batch()
    np.testing.assert_allclose(linalg.cond(Tensor(singular), p).numpy(),
                               torch.linalg.cond(torch.tensor(singular), p).numpy(), rtol=1e-12)
    if p in (None, 2, -2):  # (PyTorch's own backward for the other p fails: it changes inv_ex's output in place)
        ours_kappa.sum().backward()
        theirs_kappa.sum().backward()
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-9, atol=1e-12)


@needs_torch
@pytest.mark.parametrize("shape", [(5, 3), (3, 3), (2, 4, 3), (3, 5)])
def test_geqrf_ormqr_against_pytorch(shape):
    a = RNG.standard_normal(shape)
    ours, theirs = autograd.geqrf(Tensor(a)), torch.geqrf(torch.tensor(a))
    np.testing.assert_allclose(ours.a.numpy(), theirs.a.numpy(), atol=1e-12)
    np.testing.assert_allclose(ours.tau.numpy(), theirs.tau.numpy(), atol=1e-12)
    m = shape[-2]
    for left in (True, False):
        for transpose in (True, False):
            c = RNG.standard_normal(shape[:-2] + ((m, 2) if left else (2, m)))
            grads = []
            for module, wrap, result in ((autograd, Tensor, ours), (torch, torch.tensor, theirs)):
                inputs = [wrap(x.numpy() if hasattr(x, "numpy") else x, requires_grad=True) for x in (*result, c)]
                product = module.ormqr(*inputs, left, transpose)
                (product * wrap(np.arange(product.numel()).reshape(product.shape) % 3)).sum().backward()
                grads.append([product.detach().numpy()] + [x.grad.numpy() for x in inputs])
            for f, g in zip(*grads):
                np.testing.assert_allclose(f, g, rtol=1e-10, atol=1e-12)
    vector = RNG.standard_normal((2, 4))
    np.testing.assert_allclose(linalg.vander(Tensor(vector), N=5).numpy(),
                               torch.linalg.vander(torch.tensor(vector), N=5).numpy(), rtol=1e-14)


@needs_torch
@pytest.mark.parametrize("shape", [(2, 4), (3, 2, 5)])
def test_wide_qr_against_pytorch(shape):
    a = RNG.standard_normal(shape)
    weights = [RNG.standard_normal(shape[:-1] + (shape[-2],)), RNG.standard_normal(shape)]
    grads = []
    for module, wrap in ((linalg, Tensor), (torch.linalg, torch.tensor)):
        x = wrap(a, requires_grad=True)
        q, r = module.qr(x)
        ((q * wrap(weights[0])).sum() + (r * wrap(weights[1])).sum()).backward()
        grads.append((q.detach().numpy(), r.detach().numpy(), x.grad.numpy()))
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    tall = np.swapaxes(a, -1, -2)
    complete = linalg.qr(Tensor(tall), mode="complete")
    torch_complete = torch.linalg.qr(torch.tensor(tall), mode="complete")
    for ours, theirs in zip(complete, torch_complete):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-12)


@needs_torch
def test_tensor_ops_householder_and_eig_against_pytorch():
    a, b = RNG.standard_normal((2, 3, 6)), RNG.standard_normal((2, 3))
    for ours, theirs in (
        (linalg.tensorsolve(Tensor(a), Tensor(b)), torch.linalg.tensorsolve(torch.tensor(a), torch.tensor(b))),
        (linalg.tensorsolve(Tensor(a.transpose(2, 0, 1)), Tensor(b), dims=(0,)),
         torch.linalg.tensorsolve(torch.tensor(a.transpose(2, 0, 1)), torch.tensor(b), dims=(0,))),
        (linalg.tensorinv(Tensor(a.reshape(6, 3, 2)), 1), torch.linalg.tensorinv(torch.tensor(a.reshape(6, 3, 2)), 1)),
    ):
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)
    h, tau, weights = RNG.standard_normal((2, 5, 3)), RNG.standard_normal((2, 2)), RNG.standard_normal((2, 5, 3))
    grads = []
    for module, wrap in ((linalg, lambda x: Tensor(x, requires_grad=True)),
                         (torch.linalg, lambda x: torch.tensor(x, requires_grad=True))):
        A, T = wrap(h), wrap(tau)
        Q = module.householder_product(A, T)
        (Q * (Tensor(weights) if module is linalg else torch.tensor(weights))).sum().backward()
        grads.append((Q.detach().numpy(), A.grad.numpy(), T.grad.numpy()))
    for ours, theirs in zip(*grads):
        np.testing.assert_allclose(ours, theirs, rtol=1e-10, atol=1e-12)
    e = RNG.standard_normal((3, 4, 4))
    ours, theirs = linalg.eig(Tensor(e)), torch.linalg.eig(torch.tensor(e))
    assert str(theirs.eigenvalues.dtype) == f"torch.{ours.eigenvalues.dtype}"
    np.testing.assert_allclose(ours.eigenvalues.numpy(), theirs.eigenvalues.numpy(), atol=1e-12)
    overlap = np.abs(np.sum(ours.eigenvectors.numpy().conj() * theirs.eigenvectors.numpy(), axis=-2))
    np.testing.assert_allclose(overlap, 1.0, atol=1e-12)  # the same vectors, up to a phase


def test_det_gradient_at_singular_matrices_is_the_cofactor_matrix():
    """det is a polynomial: its gradient is the cofactor matrix everywhere, singular matrices included
    (PyTorch returns 0 there); a batch mixing singular and invertible matrices takes the SVD's path."""
    import numpy as np

    import autograd

    def cofactors(a):
        n = len(a)
        return np.array([[(-1) ** (i + j) * np.linalg.det(np.delete(np.delete(a, i, 0), j, 1)) for j in range(n)]
                         for i in range(n)])

    matrices = [np.array([[1.0, 2.0], [2.0, 4.0]]), np.array([[2.0, 1.0], [1.0, 3.0]])]
    batch = autograd.tensor(np.stack(matrices), requires_grad=True)
    autograd.linalg.det(batch).sum().backward()
    for grad, matrix in zip(batch.grad.numpy(), matrices):
        np.testing.assert_allclose(grad, cofactors(matrix), atol=1e-12)
    np.testing.assert_allclose(batch.grad.numpy()[0], [[4.0, -2.0], [-2.0, 1.0]], atol=1e-12)
    rank_one = autograd.tensor([[1.0, 2.0, 3.0], [2.0, 4.0, 6.0], [1.0, 0.0, 1.0]], dtype=autograd.float64,
                               requires_grad=True)
    assert autograd.autograd.gradcheck(autograd.linalg.det, (rank_one,))
    zero = autograd.zeros(3, 3, dtype=autograd.float64, requires_grad=True)
    autograd.det(zero).backward()
    assert not zero.grad.numpy().any()  # rank 0: every 2x2 minor vanishes
    # (a second derivative there takes the cofactors from linalg.svd, differentiable: PyTorch's singular path)
    assert autograd.autograd.gradgradcheck(autograd.linalg.det, (rank_one,))
