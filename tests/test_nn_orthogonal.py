"""nn.utils.parametrizations.orthogonal, parametrize.type_before_parametrizations and
parametrize.transfer_parametrizations_and_params: values without PyTorch, then against it."""

import numpy as np
import pytest

import autograd
import nn
import optim
from nn.utils import parametrize
from nn.utils.parametrizations import orthogonal, weight_norm

MAPS = ["matrix_exp", "cayley", "householder"]
SHAPES = [(4, 4), (5, 3), (3, 5), (2, 4, 3), (2, 3, 3)]


def _layer(shape, dtype=autograd.float64, seed=0):
    """A Linear whose weight has ``shape`` (a batch of matrices where it has three axes)."""
    autograd.manual_seed(seed)
    layer = nn.Linear(shape[-1], shape[-2]).to(dtype)
    if len(shape) > 2:
        layer.weight = nn.Parameter(autograd.randn(*shape, dtype=dtype))
    return layer


def _assert_orthogonal(Q, atol=1e-12):
    """QᵀQ = I (tall or square) or QQᵀ = I (wide), for each matrix of the batch."""
    Q = np.asarray(Q)
    if Q.shape[-2] < Q.shape[-1]:
        Q = np.swapaxes(Q, -1, -2)
    np.testing.assert_allclose(np.swapaxes(Q, -1, -2) @ Q, np.broadcast_to(np.eye(Q.shape[-1]), Q.shape[:-2] +
                                                                            (Q.shape[-1],) * 2), atol=atol)


def _qr_positive(A):
    """Q of A = QR with R's diagonal positive (A tall), in NumPy."""
    q, r = np.linalg.qr(A)
    return q * np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None, :]


@pytest.mark.parametrize("trivialization", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_the_weight_is_orthogonal(orthogonal_map, shape, trivialization):
    layer = orthogonal(_layer(shape), orthogonal_map=orthogonal_map, use_trivialization=trivialization)
    assert type(layer).__name__ == "ParametrizedLinear"
    assert tuple(layer.weight.shape) == shape and layer.weight.dtype == autograd.float64
    _assert_orthogonal(layer.weight.numpy())
    assert hasattr(layer.parametrizations.weight[0], "base") == trivialization
    names = [name for name, _ in layer.named_parameters()]
    assert names == ["bias", "parametrizations.weight.original"]


@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_float32_weights_are_orthogonal_to_float32_precision(orthogonal_map):
    layer = orthogonal(_layer((6, 4), autograd.float32), orthogonal_map=orthogonal_map)
    assert layer.weight.dtype == autograd.float32
    _assert_orthogonal(layer.weight.numpy().astype(np.float64), atol=1e-5)


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (2, 4, 3)])
def test_the_weight_starts_as_the_q_of_the_original(shape):
    layer = _layer(shape)
    weight = layer.weight.numpy().copy()
    tall = weight if shape[-2] >= shape[-1] else np.swapaxes(weight, -1, -2)
    expected = _qr_positive(tall)
    expected = expected if shape[-2] >= shape[-1] else np.swapaxes(expected, -1, -2)
    for orthogonal_map in MAPS:  # the trivialization's base holds the Q (completed at random where not square)
        np.testing.assert_allclose(orthogonal(_layer(shape), orthogonal_map=orthogonal_map).weight.numpy(),
                                   expected, atol=1e-12)
    # the householder map without trivialization starts from geqrf's reflections: the same Q
    layer = orthogonal(_layer(shape), orthogonal_map="householder", use_trivialization=False)
    np.testing.assert_allclose(layer.weight.numpy(), expected, atol=1e-12)


def test_an_orthogonal_weight_is_kept_as_it_is():
    layer = _layer((4, 4))
    Q = _qr_positive(np.random.default_rng(0).standard_normal((4, 4))) * np.array([1, -1, 1, -1])
    layer.weight = nn.Parameter(autograd.tensor(Q))
    np.testing.assert_array_equal(orthogonal(layer).weight.numpy(), Q)
    np.testing.assert_array_equal(layer.parametrizations.weight[0].base.numpy(), Q)
    np.testing.assert_array_equal(layer.parametrizations.weight.original.numpy(), -np.eye(4))


def test_the_default_map_is_matrix_exp_for_square_matrices_householder_otherwise():
    assert orthogonal(_layer((3, 3))).parametrizations.weight[0].orthogonal_map.name == "matrix_exp"
    assert orthogonal(_layer((5, 3))).parametrizations.weight[0].orthogonal_map.name == "householder"
    assert orthogonal(_layer((3, 5))).parametrizations.weight[0].orthogonal_map.name == "householder"


@pytest.mark.parametrize("trivialization", [True, False])
@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (2, 4, 3)])
def test_assigning_an_orthogonal_matrix_sets_the_weight_to_it(shape, trivialization):
    rng = np.random.default_rng(1)
    tall = (shape[-2], shape[-1]) if shape[-2] >= shape[-1] else (shape[-1], shape[-2])
    Q = _qr_positive(rng.standard_normal(shape[:-2] + tall)) * rng.choice([-1.0, 1.0], tall[1])
    Q = Q if shape[-2] >= shape[-1] else np.swapaxes(Q, -1, -2)
    maps = MAPS if trivialization else ["householder"]
    for orthogonal_map in maps:
        layer = orthogonal(_layer(shape), orthogonal_map=orthogonal_map, use_trivialization=trivialization)
        layer.weight = autograd.tensor(Q)
        np.testing.assert_allclose(layer.weight.numpy(), Q, atol=1e-12)


@pytest.mark.parametrize("orthogonal_map", ["matrix_exp", "cayley"])
def test_matrix_exp_and_cayley_without_trivialization_cannot_be_assigned(orthogonal_map):
    layer = _layer((4, 4))
    weight = layer.weight.numpy().copy()
    orthogonal(layer, orthogonal_map=orthogonal_map, use_trivialization=False)
    # registering keeps the original as it is (no inverse): the weight is its map
    np.testing.assert_array_equal(layer.parametrizations.weight.original.numpy(), weight)
    with pytest.raises(NotImplementedError, match="use_trivialization=False"):
        layer.weight = autograd.eye(4, dtype=autograd.float64)


def test_assigning_a_matrix_that_is_not_orthogonal_sets_the_q_of_it():
    layer = orthogonal(_layer((4, 4)))
    A = np.random.default_rng(2).standard_normal((4, 4))
    layer.weight = autograd.tensor(A)
    np.testing.assert_allclose(layer.weight.numpy(), _qr_positive(A), atol=1e-12)


def _reflections_with_signed_diagonal(shape, seed):
    """An unconstrained X whose diagonal is ±1.5: its integer part (±1) is the householder map's
    column signs, constant under the small steps of finite differences."""
    X = np.random.default_rng(seed).standard_normal(shape)
    tall = X if shape[-2] >= shape[-1] else np.swapaxes(X, -1, -2)
    k = tall.shape[-1]
    tall[..., range(k), range(k)] = 1.5 * np.sign(tall[..., range(k), range(k)])
    return X


@pytest.mark.parametrize("trivialization", [True, False])
@pytest.mark.parametrize("shape", [(3, 3), (4, 2), (2, 4), (2, 3, 2)])
@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_gradients_match_finite_differences(orthogonal_map, shape, trivialization):
    layer = orthogonal(_layer(shape), orthogonal_map=orthogonal_map, use_trivialization=trivialization)
    parametrization = layer.parametrizations.weight[0]
    X = autograd.tensor(_reflections_with_signed_diagonal(shape, 3), requires_grad=True)
    assert autograd.gradcheck(parametrization, [X])
    assert autograd.gradgradcheck(parametrization, [X])


@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_sgd_steps_keep_the_weight_orthogonal(orthogonal_map):
    layer = orthogonal(_layer((5, 3)), orthogonal_map=orthogonal_map)
    rng = np.random.default_rng(4)
    x, y = autograd.tensor(rng.standard_normal((8, 3))), autograd.tensor(rng.standard_normal((8, 5)))
    optimizer = optim.SGD(layer.parameters(), lr=0.05)
    before = layer.weight.numpy().copy()
    losses = []
    for _ in range(5):
        optimizer.zero_grad()
        loss = ((layer(x) - y) ** 2).mean()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] and not np.allclose(layer.weight.numpy(), before)
    _assert_orthogonal(layer.weight.numpy())


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="Expected a matrix or batch of matrices. Got a tensor of 1 dimensions."):
        orthogonal(nn.Linear(3, 4), name="bias")
    with pytest.raises(ValueError, match="orthogonal_map has to be one of"):
        orthogonal(nn.Linear(3, 4), orthogonal_map="qr")
    with pytest.raises(ValueError, match="has no parameter or buffer with name 'kernel'"):
        orthogonal(nn.Linear(3, 4), name="kernel")
    layer = orthogonal(nn.Linear(3, 4))
    with pytest.raises(ValueError, match=r"Expected a matrix or batch of matrices of shape"):
        layer.weight = autograd.eye(3)


def test_complex_weights_are_unitary_except_under_householder():
    weight = nn.Parameter(autograd.randn(3, 3, dtype=autograd.complex128))
    with pytest.raises(ValueError, match="householder parametrization does not support complex"):
        layer = nn.Linear(3, 3)
        layer.weight = weight
        orthogonal(layer, orthogonal_map="householder")
    for orthogonal_map in ("matrix_exp", "cayley"):
        for shape in ((3, 3), (4, 2), (2, 4)):
            layer = nn.Linear(shape[1], shape[0], bias=False, dtype=autograd.complex128)
            orthogonal(layer, orthogonal_map=orthogonal_map)
            opt = optim.SGD(layer.parameters(), lr=0.1)
            for _ in range(3):  # (a step moves the unconstrained X; Q stays unitary)
                opt.zero_grad()
                layer(autograd.ones(1, shape[1], dtype=autograd.complex128)).imag.sum().backward()
                opt.step()
            Q = layer.weight.detach().numpy()
            gram = Q.conj().T @ Q if shape[0] >= shape[1] else Q @ Q.conj().T
            np.testing.assert_allclose(gram, np.eye(min(shape)), atol=1e-12)


def test_type_before_parametrizations():
    layer = nn.Linear(3, 3)
    assert parametrize.type_before_parametrizations(layer) is nn.Linear
    orthogonal(layer)
    assert type(layer) is not nn.Linear and parametrize.type_before_parametrizations(layer) is nn.Linear
    parametrize.remove_parametrizations(layer, "weight")
    assert parametrize.type_before_parametrizations(layer) is nn.Linear


def test_transfer_parametrizations_and_params_shares_the_originals():
    source = weight_norm(orthogonal(_layer((4, 3))), name="bias", dim=None)
    target = _layer((4, 3), seed=1)
    assert parametrize.transfer_parametrizations_and_params(source, target) is target
    for name in ("weight", "bias"):
        assert parametrize.is_parametrized(target, name)
        assert list(target.parametrizations[name]) == list(source.parametrizations[name])
        np.testing.assert_allclose(getattr(target, name).numpy(), getattr(source, name).numpy())
    assert target.parametrizations.weight.original is source.parametrizations.weight.original
    assert target.parametrizations.bias.original0 is source.parametrizations.bias.original0
    assert target.parametrizations.bias.original1 is source.parametrizations.bias.original1
    assert list(target.state_dict()) == list(source.state_dict())


def test_transfer_one_tensor_to_a_module_that_lacks_it():
    source = orthogonal(_layer((4, 3)))
    target = nn.Module()
    parametrize.transfer_parametrizations_and_params(source, target, "weight")
    assert parametrize.type_before_parametrizations(target) is nn.Module
    np.testing.assert_allclose(target.weight.numpy(), source.weight.numpy())
    assert target.parametrizations.weight.original is source.parametrizations.weight.original
    plain = nn.Linear(2, 2)
    assert parametrize.transfer_parametrizations_and_params(plain, target) is target  # nothing to transfer


# --- against PyTorch ---------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("trivialization", [True, False])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("orthogonal_map", MAPS)
def test_matches_pytorch(orthogonal_map, shape, trivialization):
    import torch

    ours = _layer(shape)
    theirs = torch.nn.Linear(shape[-1], shape[-2]).double()
    with torch.no_grad():
        theirs.weight = torch.nn.Parameter(torch.tensor(ours.weight.numpy()))
        theirs.bias.copy_(torch.tensor(ours.bias.numpy()))
    orthogonal(ours, orthogonal_map=orthogonal_map, use_trivialization=trivialization)
    torch.nn.utils.parametrizations.orthogonal(theirs, orthogonal_map=orthogonal_map,
                                               use_trivialization=trivialization)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    # from the same original the first weight is the same (a tall base's random columns do not show)
    np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), atol=1e-12)
    # the same state loaded into both: the same weight and the same gradients
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()})
    G = np.random.default_rng(5).standard_normal(shape)
    out, expected = ours.weight, theirs.weight
    np.testing.assert_allclose(out.detach().numpy(), expected.detach().numpy(), atol=1e-12)
    (out * out.sum(-1, keepdim=True) * autograd.tensor(G)).sum().backward()  # a non-linear loss
    (expected * expected.sum(-1, keepdim=True) * torch.tensor(G)).sum().backward()
    np.testing.assert_allclose(ours.parametrizations.weight.original.grad.numpy(),
                               theirs.parametrizations.weight.original.grad.numpy(), atol=1e-12)
    # and the same assignment
    if trivialization or orthogonal_map == "householder":
        A = np.random.default_rng(6).standard_normal(shape)
        ours.weight = autograd.tensor(A)
        with torch.no_grad():
            theirs.weight = torch.tensor(A)
        if shape[-2] == shape[-1] or not trivialization:  # (else a random completion of the base)
            np.testing.assert_allclose(ours.weight.numpy(), theirs.weight.detach().numpy(), atol=1e-12)
        np.testing.assert_allclose(ours.parametrizations.weight.original.numpy(),
                                   theirs.parametrizations.weight.original.detach().numpy(), atol=1e-12)


@pytest.mark.torch
def test_errors_match_pytorch():
    import torch

    cases = [
        (lambda m, f: f(m.Linear(3, 4), name="bias"), ValueError),
        (lambda m, f: f(m.Linear(3, 4), orthogonal_map="qr"), ValueError),
        (lambda m, f: f(m.Linear(3, 4), name="kernel"), ValueError),
    ]
    for case, error in cases:
        with pytest.raises(error) as theirs:
            case(torch.nn, torch.nn.utils.parametrizations.orthogonal)
        with pytest.raises(error) as ours:
            case(nn, orthogonal)
        assert str(ours.value).split("'")[0] == str(theirs.value).split("'")[0]
    for lib, f, tensor in ((torch, torch.nn.utils.parametrizations.orthogonal, torch.eye(3)),
                           (autograd, orthogonal, autograd.eye(3))):
        layer = f(lib.nn.Linear(3, 4) if lib is torch else nn.Linear(3, 4))
        with pytest.raises(ValueError, match=r"Expected a matrix or batch of matrices of shape"):
            layer.weight = tensor
        layer = f(lib.nn.Linear(3, 3) if lib is torch else nn.Linear(3, 3), use_trivialization=False)
        with pytest.raises(NotImplementedError, match="use_trivialization=False"):
            layer.weight = tensor
    complex_weight = torch.randn(3, 3, dtype=torch.complex128)
    layer = torch.nn.Linear(3, 3)
    layer.weight = torch.nn.Parameter(complex_weight)
    with pytest.raises(ValueError, match="householder parametrization does not support complex"):
        torch.nn.utils.parametrizations.orthogonal(layer, orthogonal_map="householder")


@pytest.mark.torch
def test_parametrize_helpers_match_pytorch():
    import torch

    P = torch.nn.utils.parametrize
    theirs_from = torch.nn.utils.parametrizations.orthogonal(torch.nn.Linear(3, 4).double())
    ours_from = orthogonal(_layer((4, 3)))
    with torch.no_grad():
        theirs_from.parametrizations.weight.original.copy_(
            torch.tensor(ours_from.parametrizations.weight.original.numpy()))
        theirs_from.parametrizations.weight[0].base.copy_(
            torch.tensor(ours_from.parametrizations.weight[0].base.numpy()))
    theirs_to, ours_to = torch.nn.Linear(3, 4).double(), _layer((4, 3), seed=1)
    theirs_to.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours_to.state_dict().items()})
    P.transfer_parametrizations_and_params(theirs_from, theirs_to)
    parametrize.transfer_parametrizations_and_params(ours_from, ours_to)
    assert list(ours_to.state_dict()) == list(theirs_to.state_dict())
    # the shared parametrization's right_inverse made its base from the target's weight
    np.testing.assert_allclose(ours_to.weight.numpy(), theirs_to.weight.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(ours_from.weight.numpy(), theirs_from.weight.detach().numpy(), atol=1e-12)
    assert P.type_before_parametrizations(theirs_to) is torch.nn.Linear
    assert parametrize.type_before_parametrizations(ours_to) is nn.Linear
    theirs_module, ours_module = torch.nn.Module(), nn.Module()
    P.transfer_parametrizations_and_params(theirs_from, theirs_module, "weight")
    parametrize.transfer_parametrizations_and_params(ours_from, ours_module, "weight")
    assert list(ours_module.state_dict()) == list(theirs_module.state_dict())
    assert [n for n, _ in ours_module.named_parameters()] == [n for n, _ in theirs_module.named_parameters()]
