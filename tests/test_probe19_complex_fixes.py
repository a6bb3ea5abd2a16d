"""Focused tests of the complex-number fixes found by tests/test_programs_probe19_complex_*.py, each run on
chainrule's ``autograd`` and on PyTorch (the ``T`` fixture) against the same expectations."""

import numpy as np
import pytest

import nn  # noqa: F401  (registers autograd.nn, which T.nn reaches)


def test_a_complex_tensor_cast_to_bool_is_true_where_either_part_is_nonzero(T):
    z = T.tensor([0j, 1j, 1 + 0j, -2 - 3j])
    expected = [False, True, True, True]
    assert z.bool().tolist() == expected
    assert z.to(T.bool).tolist() == expected
    assert T.zeros(4, dtype=T.bool).copy_(z).tolist() == expected


def test_clamp_in_place_refuses_a_complex_tensor_as_clamp_does(T):
    z = T.tensor([2 + 1j, -3j])
    with pytest.raises(NotImplementedError):
        z.clamp_(-1.0, 1.0)
    with pytest.raises(NotImplementedError):
        z.clamp(-1.0, 1.0)
    assert z.tolist() == [2 + 1j, -3j]  # untouched
    assert T.tensor([3.0, -5.0]).clamp_(-1, 1).tolist() == [1.0, -1.0]


def test_fill_of_a_complex_tensor_is_differentiable(T):
    z = T.tensor([[1 + 2j, 3j], [2 + 0j, 1 - 1j]], requires_grad=True)
    c = T.tensor(0.5 - 1j, requires_grad=True)
    a = z * 1
    a.fill_diagonal_(2j)
    b = z * 2
    b[0].fill_(c)
    loss = (a.abs() ** 2).sum() + (b * (1 - 2j)).real.sum()
    loss.backward()
    # off the diagonal |z|² gives 2z; b's second row 2z gives 2 conj(1 - 2j); the filled entries nothing
    expected = np.array([[0, 2 * 3j], [2 * 2, 0]]) + np.array([[0, 0], [2 * (1 + 2j), 2 * (1 + 2j)]])
    np.testing.assert_allclose(z.grad.numpy(), expected, rtol=1e-6)
    assert complex(c.grad) == pytest.approx(2 * (1 + 2j))  # Σ over the row of conj(1 - 2j)


def test_a_full_backward_hook_sees_complex_gradients(T):
    layer = T.nn.Linear(2, 1, bias=False, dtype=T.cdouble)
    with T.no_grad():
        layer.weight.copy_(T.tensor([[1 + 1j, 2 - 1j]], dtype=T.cdouble))
    seen = []
    layer.register_full_backward_hook(lambda module, grad_input, grad_output: seen.append(
        (grad_input[0].clone(), grad_output[0].clone())))
    x = T.tensor([[1j, 1 + 0j]], dtype=T.cdouble, requires_grad=True)
    y = layer(x)  # (1 + 1j) 1j + (2 - 1j) = 1
    y.real.sum().backward()
    grad_input, grad_output = seen[0]
    assert grad_output.tolist() == [[1 + 0j]]
    np.testing.assert_allclose(grad_input.numpy(), [[1 - 1j, 2 + 1j]])  # dL/dy · conj(W)
    np.testing.assert_allclose(x.grad.numpy(), [[1 - 1j, 2 + 1j]])


def _by_hand_tanh_rnn(T, x, w_ih, w_hh, b_ih, b_hh):
    h, outputs = T.zeros(x.shape[1], w_hh.shape[0], dtype=x.dtype), []
    for t in range(x.shape[0]):
        h = T.tanh(x[t] @ w_ih.T + b_ih + h @ w_hh.T + b_hh)
        outputs.append(h)
    return T.stack(outputs)


@pytest.mark.parametrize("kind", ["RNN", "GRU", "LSTM"])
def test_complex_recurrent_layers_differentiate(T, kind):
    rng = np.random.default_rng(0)
    layer = getattr(T.nn, kind)(3, 2, dtype=T.cdouble)
    layer.load_state_dict({k: T.tensor(0.4 * (rng.standard_normal(tuple(v.shape)) + 1j * rng.standard_normal(
        tuple(v.shape)))) for k, v in layer.state_dict().items()})
    x = T.tensor(rng.standard_normal((4, 1, 3)) + 1j * rng.standard_normal((4, 1, 3)), requires_grad=True)
    assert T.autograd.gradcheck(lambda x: layer(x)[0], (x,))
    if kind == "RNN":  # its weights' gradients, against the recurrence written out
        y = layer(x)[0]
        loss = (y.abs() ** 2).sum() + (y * (0.3 - 0.7j)).real.sum()
        params = list(layer.parameters())
        grads = T.autograd.grad(loss, [x] + params)
        y_hand = _by_hand_tanh_rnn(T, x, *params)
        loss_hand = (y_hand.abs() ** 2).sum() + (y_hand * (0.3 - 0.7j)).real.sum()
        for ours, by_hand in zip(grads, T.autograd.grad(loss_hand, [x] + params)):
            np.testing.assert_allclose(ours.numpy(), by_hand.numpy(), rtol=1e-10, atol=1e-12)


def test_the_relu_rnn_refuses_complex_inputs(T):
    layer = T.nn.RNN(2, 3, nonlinearity="relu", dtype=T.cfloat)
    with pytest.raises(NotImplementedError):
        layer(T.ones(3, 1, 2, dtype=T.cfloat))


def test_eig_refuses_a_loss_that_depends_on_the_eigenvectors_phases(T):
    rng = np.random.default_rng(0)
    A = T.tensor(rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3)), requires_grad=True)
    values, vectors = T.linalg.eig(A)
    with pytest.raises(RuntimeError, match="specified up to multiplication by e\\^\\{i phi\\}"):
        T.autograd.grad(vectors.real.sum(), A, retain_graph=True)
    # |V|² does not depend on the phases: its gradient is defined, and checked
    assert T.autograd.gradcheck(lambda A: T.linalg.eig(A)[1].abs() ** 2, (A.detach().requires_grad_(),))


def test_exponential_refuses_a_complex_tensor(T):
    with pytest.raises(RuntimeError, match="dtype must be a floating point"):
        T.zeros(2, dtype=T.cfloat).exponential_()


@pytest.mark.torch
@pytest.mark.parametrize("count", [1, 3, 7])
def test_a_few_complex_normals_are_pytorchs_to_the_bit(count):
    """Fewer than 16 parts are drawn one at a time in float64 and scaled by std / √2 before rounding, as
    PyTorch's normal_ of a complex tensor (scaling after rounding to float32 was an ulp off)."""
    torch = pytest.importorskip("torch")
    import autograd

    def draws(library):
        library.manual_seed(count)
        return [library.randn(count, dtype=library.cfloat),
                library.empty(count, dtype=library.cfloat).normal_(0.5, 2.0),
                library.randn(count, dtype=library.cdouble)]

    for ours, theirs in zip(draws(autograd), draws(torch)):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("complex_", [False, True])
def test_forward_mode_carries_eigh_eigenvector_tangents(T, complex_):
    """The eigenvectors' tangent of eigh (it came out 0: the backward read forward mode's zero cotangent as
    "only the eigenvalues were used"), against central differences with each vector's phase fixed."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 3)) + (1j * rng.standard_normal((3, 3)) if complex_ else 0)
    D = rng.standard_normal((3, 3)) + (1j * rng.standard_normal((3, 3)) if complex_ else 0)
    S, dS = X + X.conj().T, D + D.conj().T

    def vectors(M):  # each eigenvector's first entry made real and positive: the gauge forward mode keeps here
        V = np.linalg.eigh(M)[1]
        return V * (np.abs(V[0]) / V[0])

    V0 = vectors(S)
    dV_fd = (vectors(S + 1e-6 * dS) - vectors(S - 1e-6 * dS)) / 2e-6
    _, dV = T.func.jvp(lambda A: T.linalg.eigh(A)[1], (T.tensor(S),), (T.tensor(dS),))
    V = T.linalg.eigh(T.tensor(S))[1].numpy()
    dV = dV.numpy() * (V0 / V)[0]  # in the same gauge as the differences
    # the gauge leaves a purely imaginary multiple of each vector free: compare what it cannot move
    projected = lambda dV: dV - V0 * np.sum(V0.conj() * dV, axis=0).imag * 1j  # noqa: E731
    np.testing.assert_allclose(projected(dV), projected(dV_fd), atol=1e-6)
