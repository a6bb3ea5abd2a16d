"""Forward-mode AD without PyTorch: the fixes the forward-mode OpInfo sweep (tests/test_opinfo_forward.py) led to,
against NumPy and literals, and, over a hand-picked list of common ops, forward mode against reverse mode through
the identity ⟨u, J v⟩ = ⟨Jᵀu, v⟩ (the real inner product Re Σ ū w for complex values)."""

import numpy as np
import pytest

import autograd
import autograd.autograd.forward_ad as fwAD
import autograd.linalg
import nn.functional as F


def _rng(seed):
    return np.random.default_rng(seed)


def _spd(n, seed):
    a = _rng(seed).standard_normal((n, n))
    return a @ a.T + n * np.eye(n)


# name: (f, inputs); every floating input gets a tangent, f returns one tensor
IDENTITY_CASES = {
    "add": (lambda x, y: x + y, [(3, 4), (4,)]),
    "sub": (lambda x, y: x - 2 * y, [(3, 4), (3, 1)]),
    "mul": (lambda x, y: x * y, [(3, 4), (3, 4)]),
    "div": (lambda x, y: x / (y.abs() + 1), [(3, 4), (3, 4)]),
    "pow": (lambda x, y: (x.abs() + 0.5) ** y, [(5,), (5,)]),
    "exp, log": (lambda x: x.exp() + (x.abs() + 1).log(), [(2, 3)]),
    "sin, tanh": (lambda x: x.sin() * x.tanh(), [(6,)]),
    "sigmoid, softplus": (lambda x: x.sigmoid() + F.softplus(x), [(6,)]),
    "relu, gelu, silu": (lambda x: F.relu(x) + F.gelu(x) + F.silu(x), [(7,)]),
    "softmax": (lambda x: F.softmax(x, -1), [(3, 5)]),
    "log_softmax": (lambda x: F.log_softmax(x, 0), [(3, 5)]),
    "logsumexp": (lambda x: x.logsumexp(1), [(3, 5)]),
    "sum, mean": (lambda x: x.sum(0) + x.mean(1, keepdim=True), [(4, 4)]),
    "var, std": (lambda x: x.var(0) * x.std(0), [(5, 3)]),
    "norm": (lambda x: autograd.linalg.vector_norm(x, 3, dim=1), [(4, 3)]),
    "matmul": (lambda a, b: a @ b, [(2, 3, 4), (4, 5)]),
    "linear": (lambda x, w, b: F.linear(x, w, b), [(4, 3), (2, 3), (2,)]),
    "conv1d": (lambda x, w: F.conv1d(x, w, padding=1, stride=2), [(2, 3, 9), (4, 3, 3)]),
    "conv2d": (lambda x, w: F.conv2d(x, w, padding=1), [(1, 2, 5, 5), (3, 2, 3, 3)]),
    "max_pool2d": (lambda x: F.max_pool2d(x, 2), [(1, 2, 4, 4)]),
    "avg_pool2d": (lambda x: F.avg_pool2d(x, 2, stride=1), [(1, 2, 4, 4)]),
    "layer_norm": (lambda x, w, b: F.layer_norm(x, (4,), w, b), [(3, 4), (4,), (4,)]),
    "batch_norm": (lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True), [(5, 3), (3,), (3,)]),
    "cumsum, cumprod": (lambda x: x.cumsum(1) * x.cumprod(0), [(3, 4)]),
    "sort": (lambda x: x.sort(1).values, [(3, 5)]),
    "gather, index_select": (lambda x: x.gather(1, autograd.tensor([[2, 0], [1, 1], [0, 3]]))
                             + x.index_select(1, autograd.tensor([3, 3])), [(3, 4)]),
    "where": (lambda x, y: autograd.where(x > 0, x * y, y), [(6,), (6,)]),
    "clamp by tensors": (lambda x, lo, hi: x.clamp(lo, lo + hi.abs()), [(8,), (8,), (8,)]),
    "maximum, minimum": (lambda x, y: autograd.maximum(x, y) * autograd.minimum(x, 2 * y), [(6,), (6,)]),
    "fmax": (lambda x, y: autograd.fmax(x, y), [(6,), (6,)]),
    "atan2, hypot": (lambda x, y: autograd.atan2(x, y) + autograd.hypot(x, y), [(5,), (5,)]),
    "cholesky": (lambda a: autograd.linalg.cholesky(a @ a.mT + 4 * autograd.eye(4, dtype=a.dtype)), [(4, 4)]),
    "eigh's eigenvalues": (lambda a: autograd.linalg.eigh(a + a.mT)[0], [(4, 4)]),
    "inv, solve": (lambda a, b: autograd.linalg.inv(a + 5 * autograd.eye(3, dtype=a.dtype))
                   + autograd.linalg.solve(a + 5 * autograd.eye(3, dtype=a.dtype), b), [(3, 3), (3, 3)]),
    "det, slogdet": (lambda a: autograd.linalg.det(a).reshape(1)
                     + autograd.linalg.slogdet(a + 5 * autograd.eye(3, dtype=a.dtype)).logabsdet, [(3, 3)]),
    "svdvals": (lambda a: autograd.linalg.svdvals(a), [(4, 3)]),
    "triangular_solve": (lambda b, a: autograd.triangular_solve(b, a + 4 * autograd.eye(3, dtype=a.dtype))[0],
                         [(3, 2), (3, 3)]),
    "diagonal_scatter": (lambda x, s: autograd.diagonal_scatter(x * 2, s.exp(), 1), [(4, 5), (4,)]),
    "cross_entropy, mse_loss": (lambda x, y: F.cross_entropy(x, autograd.tensor([0, 2, 1])).reshape(1)
                                + F.mse_loss(x, y, reduction="none").sum(0)[:1], [(3, 4), (3, 4)]),
    "complex exp, abs": (lambda z: z.exp() * z.abs(), [(5,)], np.complex128),
    "complex fft": (lambda z: autograd.fft.fft(z * z), [(6,)], np.complex128),
    "view_as_real": (lambda z: autograd.view_as_real(z.conj() * 3), [(4,)], np.complex128),
}


def _draw(shape, dtype, rng):
    values = rng.standard_normal(shape)
    return values + 1j * rng.standard_normal(shape) if np.dtype(dtype).kind == "c" else values


def _inner(a, b):
    return float(np.real(np.vdot(a, b)))  # Re Σ ā b


@pytest.mark.parametrize("name", list(IDENTITY_CASES))
def test_forward_mode_agrees_with_reverse_mode(name):
    """⟨u, J v⟩ from one forward-mode pass (J v, the tangent) equals ⟨Jᵀu, v⟩ from one backward pass (Jᵀu, the
    gradient of ⟨u, f⟩), for random u and v: the two modes compute the same Jacobian."""
    f, shapes, *dtype = IDENTITY_CASES[name]
    dtype = dtype[0] if dtype else np.float64
    rng = _rng(sum(map(ord, name)))
    xs = [_draw(shape, dtype, rng) for shape in shapes]
    vs = [_draw(shape, dtype, rng) for shape in shapes]
    with fwAD.dual_level():
        y = f(*[fwAD.make_dual(autograd.tensor(x), autograd.tensor(v)) for x, v in zip(xs, vs)])
        jv = fwAD.unpack_dual(y).tangent.numpy()
    leaves = [autograd.tensor(x, requires_grad=True) for x in xs]
    out = f(*leaves)
    u = _draw(tuple(out.shape), out.numpy().dtype, rng)
    jtu = autograd.autograd.grad(out, leaves, grad_outputs=autograd.tensor(u), allow_unused=True)
    assert jv.shape == tuple(out.shape) and jv.dtype == out.numpy().dtype
    backward = sum(_inner(g.numpy(), v) for g, v in zip(jtu, vs) if g is not None)
    assert np.isclose(_inner(u, jv), backward, rtol=1e-10, atol=1e-10)


# -- the fixes ---------------------------------------------------------------------------------------------------


def test_a_write_into_a_view_of_a_tensor_with_a_tangent_updates_its_tangent():
    """out = x.clone(); a write through views of out (diagonal, slice) writes its tangent into out's, as PyTorch's
    view and base share theirs (it was refused: NotImplementedError); each view written shows the others' writes."""
    x0 = np.arange(9.0).reshape(3, 3)
    with fwAD.dual_level():
        x = fwAD.make_dual(autograd.tensor(x0), autograd.ones(3, 3, dtype=autograd.float64))
        s = fwAD.make_dual(autograd.tensor([7.0, 8.0, 9.0]), autograd.tensor([1.0, 2.0, 3.0]))
        out = x.clone()
        diagonal = out.diagonal()
        diagonal.copy_(s * 2)
        out[1:, :2].mul_(s[:2])
        tangent, diagonal_tangent = fwAD.unpack_dual(out).tangent, fwAD.unpack_dual(diagonal).tangent
        x_tangent = fwAD.unpack_dual(x).tangent
    # (PyTorch's numbers, for the same program)
    np.testing.assert_array_equal(out.numpy(), [[14.0, 1.0, 2.0], [21.0, 128.0, 5.0], [42.0, 56.0, 18.0]])
    np.testing.assert_array_equal(tangent.numpy(), [[2.0, 1.0, 1.0], [10.0, 64.0, 1.0], [13.0, 22.0, 6.0]])
    np.testing.assert_array_equal(diagonal_tangent.numpy(), [2.0, 64.0, 6.0])
    np.testing.assert_array_equal(x_tangent.numpy(), np.ones((3, 3)))  # (the clone's input keeps its own)


def test_diagonal_scatter_carries_tangents():
    x0, s0 = _rng(0).standard_normal((4, 5)), _rng(1).standard_normal(4)
    xt, st = _rng(2).standard_normal((4, 5)), _rng(3).standard_normal(4)
    with fwAD.dual_level():
        y = autograd.diagonal_scatter(fwAD.make_dual(autograd.tensor(x0), autograd.tensor(xt)),
                                      fwAD.make_dual(autograd.tensor(s0), autograd.tensor(st)), 1)
        tangent = fwAD.unpack_dual(y).tangent.numpy()
    want = xt.copy()
    want[np.arange(4), np.arange(1, 5)] = st
    np.testing.assert_array_equal(tangent, want)


def test_a_real_slogdet_sign_is_in_the_graph_with_a_zero_derivative():
    """PyTorch's real sign requires grad (LinalgSlogdetBackward0) and its tangent is zeros; it was a constant here
    (no tangent: None)."""
    a = autograd.tensor([[2.0, 1.0], [1.0, -3.0]], requires_grad=True)
    sign, logabsdet = autograd.linalg.slogdet(a)
    assert sign.requires_grad and sign.grad_fn is not None and sign.item() == -1.0
    (sign * 5 + logabsdet).backward()
    np.testing.assert_allclose(a.grad.numpy(), np.linalg.inv(a.detach().numpy()).T)
    with fwAD.dual_level():
        d = fwAD.make_dual(autograd.tensor([[2.0, 1.0], [1.0, -3.0]]), autograd.ones(2, 2, dtype=autograd.float64))
        sign, logabsdet = autograd.linalg.slogdet(d)
        sign_tangent, tangent = fwAD.unpack_dual(sign).tangent, fwAD.unpack_dual(logabsdet).tangent
    assert sign_tangent.shape == () and sign_tangent.item() == 0.0
    np.testing.assert_allclose(tangent.item(), np.trace(np.linalg.inv([[2.0, 1.0], [1.0, -3.0]]) @ np.ones((2, 2))))


def test_lstsq_empty_outputs_are_real_and_the_empty_residuals_in_the_graph():
    """Where no residuals are computed (gelsy, or A not tall) PyTorch's empty residuals require grad and carry an
    empty float64 tangent; an empty singular_values of a complex A is real (it was complex128)."""
    a = autograd.tensor(_rng(0).standard_normal((3, 2)) + 1j * _rng(1).standard_normal((3, 2)), requires_grad=True)
    b = autograd.tensor(_rng(2).standard_normal((3, 2)) + 0j)
    result = autograd.linalg.lstsq(a, b)
    assert result.residuals.shape == (0,) and result.residuals.requires_grad
    assert result.residuals.dtype == autograd.float64 and result.singular_values.dtype == autograd.float64
    with fwAD.dual_level():
        d = fwAD.make_dual(autograd.tensor(a.detach().numpy()), autograd.ones(3, 2, dtype=autograd.complex128))
        tangents = [fwAD.unpack_dual(t).tangent for t in autograd.linalg.lstsq(d, b, driver="gels")]
        assert tangents[1].shape == (2,)  # (tall, full rank, gels: the residuals are computed, with a tangent)
        tangents = [fwAD.unpack_dual(t).tangent for t in autograd.linalg.lstsq(d[:2], b[:2], driver="gels")]
    assert tangents[0] is not None and tangents[2] is None and tangents[3] is None
    assert tangents[1].shape == (0,) and tangents[1].dtype == autograd.float64


def test_native_batch_norm_statistics_carry_no_tangent():
    """PyTorch's forward rule for native_batch_norm gives the output a tangent and the saved mean and invstd
    none (they had the statistics' tangents here)."""
    x0 = _rng(0).standard_normal((4, 3))
    with fwAD.dual_level():
        x = fwAD.make_dual(autograd.tensor(x0), autograd.tensor(_rng(1).standard_normal((4, 3))))
        y, mean, invstd = autograd.native_batch_norm(x, None, None, None, None, True, 0.1, 1e-5)
        assert fwAD.unpack_dual(y).tangent is not None
        assert fwAD.unpack_dual(mean).tangent is None and fwAD.unpack_dual(invstd).tangent is None
    np.testing.assert_allclose(mean.numpy(), x0.mean(0))
    np.testing.assert_allclose(invstd.numpy(), 1 / np.sqrt(x0.var(0) + 1e-5))


def test_triangular_solve_tangent_reads_only_the_triangle():
    """chainrule's tangent is the derivative of what the op computes, A⁻¹(Ḃ - triu(Ȧ)X) (PyTorch's forward rule
    uses all of Ȧ, unlike its own backward: a deliberate difference, test_opinfo_forward's FORWARD_SKIP)."""
    rng = _rng(5)
    a0, b0, at, bt = rng.standard_normal((3, 3)) + 3 * np.eye(3), rng.standard_normal((3, 2)), \
        rng.standard_normal((3, 3)), rng.standard_normal((3, 2))
    with fwAD.dual_level():
        x = autograd.triangular_solve(fwAD.make_dual(autograd.tensor(b0), autograd.tensor(bt)),
                                      fwAD.make_dual(autograd.tensor(a0), autograd.tensor(at)))[0]
        tangent = fwAD.unpack_dual(x).tangent.numpy()
    upper = np.triu(a0)
    np.testing.assert_allclose(tangent, np.linalg.solve(upper, bt - np.triu(at) @ np.linalg.solve(upper, b0)),
                               rtol=1e-10)


def test_the_tangent_of_a_mean_over_nothing_is_nan():
    """mean's forward rule is the mean of the tangents, NaN over an empty input, as PyTorch's (the backward read
    forward gave 0); over elements, (1/n) Σ ẋ."""
    with fwAD.dual_level():
        nothing = autograd.zeros(0, 3, dtype=autograd.float64)
        empty = fwAD.make_dual(nothing, nothing.clone())
        x = fwAD.make_dual(autograd.tensor([[1.0, 2.0], [3.0, 5.0]]), autograd.tensor([[1.0, -1.0], [4.0, 2.0]]))
        tangents = [fwAD.unpack_dual(y).tangent for y in (empty.mean(), empty.mean(0), x.mean(1), x.mean())]
    assert np.isnan(tangents[0].item()) and np.isnan(tangents[1].numpy()).all() and tangents[1].shape == (3,)
    np.testing.assert_allclose(tangents[2].numpy(), [0.0, 3.0])
    assert tangents[3].item() == 1.5


def test_embedding_tangent_is_the_lookup_of_the_weight_tangent():
    """y = W[indices] is linear in W: ẏ = Ẇ[indices], the padding row's lookups too (PyTorch's forward rule; the
    backward read forward gave them 0); max_norm's renorm rewrites W's rows, not their tangent (it zeroed them)."""
    w0 = _rng(0).standard_normal((5, 3)) * 2
    wt = _rng(1).standard_normal((5, 3))
    idx = autograd.tensor([[0, 2], [2, 4]])
    for options in ({"padding_idx": 2}, {"max_norm": 1.0}, {"scale_grad_by_freq": True}):
        with fwAD.dual_level():
            w = fwAD.make_dual(autograd.tensor(w0), autograd.tensor(wt))
            y = F.embedding(idx, w, **options)
            tangent, weight_tangent = fwAD.unpack_dual(y).tangent, fwAD.unpack_dual(w).tangent
        np.testing.assert_array_equal(tangent.numpy(), wt[[[0, 2], [2, 4]]])
        np.testing.assert_array_equal(weight_tangent.numpy(), wt)
        norms = np.linalg.norm(w.detach().numpy()[[0, 2, 4]], axis=1)
        assert np.all(norms <= 1.0 + 1e-6) == ("max_norm" in options)  # (the renorm did rewrite the values)
