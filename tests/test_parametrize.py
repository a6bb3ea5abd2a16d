"""nn.utils.parametrize and nn.utils.parametrizations.weight_norm, against PyTorch."""

import numpy as np
import pytest

import autograd
import nn
from nn.utils import parametrize
from nn.utils.parametrizations import weight_norm


def test_weight_norm_splits_length_and_direction_and_can_be_removed():
    autograd.manual_seed(0)
    layer = nn.Linear(3, 4).double()
    weight = layer.weight.numpy().copy()
    weight_norm(layer)
    g, v = layer.parametrizations.weight.original0, layer.parametrizations.weight.original1
    assert tuple(g.shape) == (4, 1) and tuple(v.shape) == (4, 3)
    np.testing.assert_allclose(g.numpy()[:, 0], np.linalg.norm(weight, axis=1))
    np.testing.assert_allclose(layer.weight.numpy(), weight)
    assert "weight" not in dict(layer.named_parameters()) and parametrize.is_parametrized(layer, "weight")
    assert autograd.gradcheck(lambda g_, v_: v_ * (g_ / (v_ * v_).sum(dim=1, keepdim=True).sqrt()),
                              [g.detach().requires_grad_(), v.detach().requires_grad_()])
    layer.weight = autograd.tensor(2 * weight)  # assignment goes through right_inverse
    np.testing.assert_allclose(g.numpy()[:, 0], 2 * np.linalg.norm(weight, axis=1))
    parametrize.remove_parametrizations(layer, "weight")
    assert type(layer) is nn.Linear and [n for n, _ in layer.named_parameters()] == ["bias", "weight"]
    np.testing.assert_allclose(layer.weight.numpy(), 2 * weight)
    with pytest.raises(ValueError, match="does not have a parametrization"):
        parametrize.remove_parametrizations(layer, "weight")


@pytest.mark.torch
@pytest.mark.parametrize("dim", [0, 1, None])
def test_weight_norm_matches_pytorch(dim):
    import torch

    theirs = torch.nn.utils.parametrizations.weight_norm(torch.nn.Linear(3, 4).double(), dim=dim)
    ours = weight_norm(nn.Linear(3, 4).double(), dim=dim)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((2, 3))
    y_ours, y_theirs = ours(autograd.tensor(x)), theirs(torch.tensor(x))
    np.testing.assert_allclose(y_ours.numpy(), y_theirs.detach().numpy(), atol=1e-12)
    (y_ours * y_ours).sum().backward()
    (y_theirs * y_theirs).sum().backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), atol=1e-12, err_msg=name)


@pytest.mark.torch
def test_weight_norm_on_a_recurrent_weight():
    import torch

    theirs = torch.nn.utils.parametrizations.weight_norm(torch.nn.GRU(2, 3).double(), name="weight_hh_l0")
    ours = weight_norm(nn.GRU(2, 3).double(), name="weight_hh_l0")
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).standard_normal((4, 2, 2))
    np.testing.assert_allclose(ours(autograd.tensor(x))[0].numpy(), theirs(torch.tensor(x))[0].detach().numpy(),
                               atol=1e-12)


def _spectral_norm_program(torch, nn, rng_seed=0):
    P = nn.utils.parametrizations
    rng = np.random.default_rng(rng_seed)
    lin = nn.Linear(4, 3)
    lin.load_state_dict({k: torch.tensor(rng.standard_normal(tuple(v.shape)).astype(np.float32))
                         for k, v in lin.state_dict().items()})
    P.spectral_norm(lin)
    keys = sorted(lin.state_dict())
    # the same u and v in both libraries (they start random)
    lin.load_state_dict({k: torch.tensor(rng.standard_normal(tuple(v.shape)).astype(np.float32))
                         if k.endswith(("_u", "_v")) else v for k, v in lin.state_dict().items()})
    x = torch.tensor(rng.standard_normal((5, 4)).astype(np.float32))
    y = lin(x)
    y.pow(2).sum().backward()
    u_after_train = lin.parametrizations.weight[0]._u.clone()
    lin.eval()
    y_eval = lin(x)
    unchanged = bool(torch.equal(lin.parametrizations.weight[0]._u, u_after_train))
    up = nn.ConvTranspose2d(2, 3, 2)
    P.spectral_norm(up)
    bias_normed = P.spectral_norm(nn.Linear(2, 3), name="bias").bias
    return (keys, y.detach().numpy(), lin.parametrizations.weight.original.grad.numpy(), y_eval.detach().numpy(),
            unchanged, up.parametrizations.weight[0].dim, tuple(up.parametrizations.weight[0]._u.shape),
            float(bias_normed.detach().norm()))


def test_parametrizations_spectral_norm():
    """The parametrization-based spectral_norm (PyTorch's recommended one): W / σ(W) with u, v in
    the buffers _u, _v; power iteration in training only; dim 1 for a transposed convolution."""
    ours = _spectral_norm_program(autograd, nn)
    assert ours[0] == ["bias", "parametrizations.weight.0._u", "parametrizations.weight.0._v",
                       "parametrizations.weight.original"]
    assert ours[4] and ours[5] == 1 and ours[6] == (3,)
    assert ours[7] == pytest.approx(1.0)
    # after the 15 power steps at construction, the largest singular value of W / σ is 1
    autograd.manual_seed(0)
    lin = nn.utils.parametrizations.spectral_norm(nn.Linear(6, 5))
    assert np.linalg.svd(lin.weight.detach().numpy(), compute_uv=False)[0] == pytest.approx(1.0, rel=1e-3)
    with pytest.raises(IndexError, match="Dimension out of range"):
        nn.utils.parametrizations.spectral_norm(nn.Linear(2, 2), dim=2)
    torch = pytest.importorskip("torch")
    theirs = _spectral_norm_program(torch, torch.nn)
    assert ours[0] == theirs[0] and ours[4:7] == theirs[4:7]
    for a, b in zip(ours[1:4], theirs[1:4]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert ours[7] == pytest.approx(theirs[7])
