"""Focused tests for the fixes found by tests/test_programs_probe12_func_*.py, on chainrule and on PyTorch."""

import numpy as np
import pytest


def test_vmap_out_dims_is_a_tree_broadcast_over_the_outputs(T):
    x = T.arange(24, dtype=T.float64).reshape(4, 3, 2)
    out = T.func.vmap(lambda a: {"s": a.sum(0), "pair": (a, a * 2)}, out_dims={"s": 0, "pair": (1, 0)})(x)
    np.testing.assert_array_equal(out["s"].numpy(), x.numpy().sum(1))
    np.testing.assert_array_equal(out["pair"][0].numpy(), np.moveaxis(x.numpy(), 0, 1))
    np.testing.assert_array_equal(out["pair"][1].numpy(), x.numpy() * 2)
    prefix = T.func.vmap(lambda a: (a, (a * 2, a * 3)), out_dims=(0, 1))(x)  # 1 for both of the inner pair
    assert prefix[0].shape == (4, 3, 2) and prefix[1][0].shape == prefix[1][1].shape == (3, 4, 2)
    np.testing.assert_array_equal(prefix[1][1].numpy(), np.moveaxis(x.numpy() * 3, 0, 1))


def test_vmap_refuses_out_dims_that_do_not_fit_the_outputs(T):
    x = T.ones(4, 3)
    with pytest.raises(ValueError, match="out_dims is not compatible with the structure of `outputs`"):
        T.func.vmap(lambda a: (a, a), out_dims=(0, 1, 0))(x)
    with pytest.raises(ValueError, match="out_dims is not compatible with the structure of `outputs`"):
        T.func.vmap(lambda a: {"a": a}, out_dims={"b": 0})(x)


def _forward_ad(T):
    import importlib

    return importlib.import_module(T.__name__ + ".autograd.forward_ad")


def test_a_tangent_is_differentiable_with_respect_to_the_parameters(T):
    """Reverse over forward: d/dw of (J v) for y = tanh(x wᵀ)² summed; the tangent required no grad (the
    penalty's gradient was silently dropped from a loss that added it)."""
    fwAD = _forward_ad(T)
    x0, v0 = np.array([[0.5, -1.0], [2.0, 0.3]]), np.array([[1.0, 0.0], [0.5, -1.0]])
    w = T.tensor([[0.2, -0.4], [0.7, 0.1]], dtype=T.float64, requires_grad=True)
    with fwAD.dual_level():
        y = (T.tanh(fwAD.make_dual(T.tensor(x0), T.tensor(v0)) @ w.T) ** 2).sum()
        tangent = fwAD.unpack_dual(y).tangent
    assert tangent.requires_grad
    (g,) = T.autograd.grad(tangent, w)

    def tangent_at(wn):  # J v by hand: Σ 2 tanh(a) sech²(a) (v wᵀ), a = x wᵀ
        a = x0 @ wn.T
        return float((2 * np.tanh(a) / np.cosh(a) ** 2 * (v0 @ wn.T)).sum())

    w0, h = w.detach().numpy(), 1e-6
    numeric = np.zeros_like(w0)
    for i in np.ndindex(*w0.shape):
        e = np.zeros_like(w0)
        e[i] = h
        numeric[i] = (tangent_at(w0 + e) - tangent_at(w0 - e)) / (2 * h)
    np.testing.assert_allclose(float(tangent), tangent_at(w0), rtol=1e-12)
    np.testing.assert_allclose(g.numpy(), numeric, rtol=1e-6, atol=1e-9)


def test_a_tangent_is_differentiable_with_respect_to_itself_and_stays_constant_otherwise(T):
    fwAD = _forward_ad(T)
    v = T.tensor([1.0, 2.0, -1.0], dtype=T.float64, requires_grad=True)
    x0 = np.array([0.3, -0.7, 1.1])
    with fwAD.dual_level():
        tangent = fwAD.unpack_dual((fwAD.make_dual(T.tensor(x0), v).sin()).sum()).tangent
        plain = fwAD.unpack_dual((fwAD.make_dual(T.tensor(x0), v.detach()).sin()).sum()).tangent
        with T.no_grad():
            unrecorded = fwAD.unpack_dual((fwAD.make_dual(T.tensor(x0), v).sin()).sum()).tangent
    (g,) = T.autograd.grad(tangent, v)
    np.testing.assert_allclose(g.numpy(), np.cos(x0), rtol=1e-12)  # the tangent Σ cos(x) v is linear in v
    assert not plain.requires_grad and not unrecorded.requires_grad


@pytest.mark.parametrize("reduce", ["svdvals", "nuc", "2"])
def test_second_derivatives_of_singular_values_see_the_singular_vectors_turn(T, reduce):
    """H = ∂²(f(σ(A)))/∂A²: the singular vectors of A change with A, so the Hessian of a function of the
    singular values is not U (∂²f/∂σ²) Vᵀ alone (chainrule's took U and V as constants: the nuclear norm's
    and the spectral norm's Hessians came out 0). Against differences of the gradient."""
    A0 = np.array([[2.0, 0.3, 0.1], [0.2, 1.5, -0.4]])

    def f(a):
        if reduce == "svdvals":
            return (T.linalg.svdvals(a) ** 3).sum()
        return T.linalg.matrix_norm(a, "nuc" if reduce == "nuc" else 2)

    def gradient(a0):
        a = T.tensor(a0, requires_grad=True)
        return T.autograd.grad(f(a), a)[0].numpy()

    a = T.tensor(A0, requires_grad=True)
    (g,) = T.autograd.grad(f(a), a, create_graph=True)
    V = np.cos(np.arange(6.0)).reshape(2, 3)
    (hv,) = T.autograd.grad((g * T.tensor(V)).sum(), a)
    h = 1e-6
    numeric = (gradient(A0 + h * V) - gradient(A0 - h * V)) / (2 * h)
    np.testing.assert_allclose(hv.numpy(), numeric, rtol=1e-6, atol=1e-8)


def test_an_integer_output_has_a_zero_tangent_in_forward_mode_and_is_refused_in_reverse(T):
    """jvp and jacfwd give an integer output (an argmax, a comparison) a zero tangent of its dtype (chainrule's
    jvp raised: it could not make the output require grad); vjp and jacrev refuse it, as PyTorch's."""
    x = T.tensor([1.0, 2.0])
    (index, doubled), (index_tangent, doubled_tangent) = T.func.jvp(lambda x: (x.argmax(), x * 2), (x,), (x,))
    assert int(index) == 1 and index_tangent.dtype == T.int64 and int(index_tangent) == 0
    np.testing.assert_array_equal(doubled_tangent.numpy(), [2.0, 4.0])
    _, above = T.func.jvp(lambda x: x > 1, (x,), (x,))
    assert above.dtype == T.bool and not above.any()
    jacobian, index_jacobian = T.func.jacfwd(lambda x: (x, x.argmax()))(x)
    np.testing.assert_array_equal(jacobian.numpy(), np.eye(2))
    assert index_jacobian.dtype == T.int64 and index_jacobian.shape == (2,) and not index_jacobian.any()
    for call in (lambda: T.func.jacrev(lambda x: (x, x.argmax()))(x), lambda: T.func.vjp(lambda x: x.argmax(), x)):
        with pytest.raises(RuntimeError, match="All outputs of f must be floating-point or complex Tensors"):
            call()
    with pytest.raises(ValueError, match="Expected tangent to be floating point or complex, but got"):
        T.func.jvp(lambda x: x * 2, (x,), (T.tensor([1, 1]),))


@pytest.mark.parametrize("chunk_size", [0, -2])
def test_vmap_refuses_a_chunk_size_that_is_not_positive(T, chunk_size):
    with pytest.raises(ValueError, match=f"vmap: chunk_size should be None or greater than 0. \\(got {chunk_size}\\)"):
        T.func.vmap(lambda x: x * 2, chunk_size=chunk_size)(T.ones(3))
    np.testing.assert_array_equal(T.func.vmap(lambda x: x * 2, chunk_size=2)(T.ones(3)).numpy(), [2.0, 2.0, 2.0])
