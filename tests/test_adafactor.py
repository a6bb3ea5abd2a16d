"""optim.Adafactor: PyTorch's trajectories in float64 and float32 (matrices, a batch of matrices,
vectors, scalars), hand-computed first steps, resuming from a state dict, errors."""

import numpy as np
import pytest

import autograd
import optim

SHAPES = [(3, 4), (2, 3, 5), (4,), ()]
CONFIGS = [dict(), dict(lr=0.1, weight_decay=0.1), dict(lr=0.05, beta2_decay=-0.5, eps=(1e-20, 1e-2), d=2.0),
           dict(maximize=True), dict(lr=0.5, d=1.0, eps=(1e-3, 1e-3))]


def gradients(weights):
    """A fixed non-linear gradient field, computed in NumPy so both libraries get the same inputs."""
    return [np.sin(3 * w) + 0.5 * w**3 - 0.1 for w in weights]


def trajectory(lib, config, dtype, steps=25, resume_at=None):
    make = (optim if lib is autograd else lib.optim).Adafactor
    rng = np.random.default_rng(0)
    starts = [rng.standard_normal(shape).astype(dtype) for shape in SHAPES]
    params = [lib.tensor(s.copy(), requires_grad=True) for s in starts]
    optimizer = make(params, **config)
    path = []
    for step in range(steps):
        if step == resume_at:
            saved = optimizer.state_dict()
            optimizer = make(params, **config)
            optimizer.load_state_dict(saved)
        for p, g in zip(params, gradients([p.detach().numpy() for p in params])):
            p.grad = lib.tensor(g.astype(dtype))
        optimizer.step()
        path.append(np.concatenate([p.detach().numpy().ravel() for p in params]))
    return np.array(path), optimizer


@pytest.mark.torch
@pytest.mark.parametrize("config", CONFIGS, ids=range(len(CONFIGS)))
@pytest.mark.parametrize("dtype, tolerance", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_trajectory_matches_torch(config, dtype, tolerance):
    torch = pytest.importorskip("torch")
    ours, optimizer = trajectory(autograd, config, dtype)
    theirs, torch_optimizer = trajectory(torch, config, dtype)
    assert ours.dtype == theirs.dtype
    np.testing.assert_allclose(ours, theirs, rtol=tolerance, atol=tolerance)
    ours_state, theirs_state = optimizer.state_dict(), torch_optimizer.state_dict()
    assert ours_state["param_groups"] == theirs_state["param_groups"]
    for i, state in ours_state["state"].items():
        torch_state = theirs_state["state"][i]
        assert sorted(state) == sorted(torch_state)
        for key, value in state.items():
            assert value.shape == tuple(torch_state[key].shape) and str(value.dtype) == str(torch_state[key].dtype)[6:]
            np.testing.assert_allclose(value.numpy(), torch_state[key].numpy(), rtol=tolerance, atol=tolerance)


def test_resuming_gives_the_same_trajectory():
    for config in CONFIGS:
        straight, _ = trajectory(autograd, config, np.float64)
        resumed, optimizer = trajectory(autograd, config, np.float64, resume_at=10)
        np.testing.assert_array_equal(straight, resumed)
    state = optimizer.state_dict()["state"]
    assert sorted(state[0]) == ["col_var", "row_var", "step"] and state[0]["row_var"].shape == (3, 1)
    assert state[1]["col_var"].shape == (2, 1, 5) and sorted(state[2]) == ["step", "variance"]
    assert state[0]["step"].item() == 25


def test_first_step_by_hand():
    """t = 1: β̂₂ gives 1 - β̂₂ = 1, so V̂ = G² (vector) and R C / mean(R) for a matrix, which for a
    rank-one G² (here every row a multiple of one) is G² exactly; U = sign(G), RMS(U) = 1."""
    w = np.array([[1.0, 2.0], [2.0, 4.0]])
    weight = autograd.tensor(w.copy(), requires_grad=True)
    weight.grad = autograd.tensor([[0.5, -1.0], [1.0, -2.0]], dtype=autograd.float64)
    optim.Adafactor([weight], lr=0.01).step()
    alpha = max(1e-3, np.sqrt((w**2).mean())) * 0.01
    np.testing.assert_allclose(weight.detach().numpy(), w - alpha * np.array([[1, -1], [1, -1]]), rtol=1e-12)
    vector = autograd.tensor([3.0, -1.0], dtype=autograd.float64, requires_grad=True)
    vector.grad = autograd.tensor([2.0, 0.0], dtype=autograd.float64)  # U = (1, 0): RMS(U) = 1/√2 < d
    optim.Adafactor([vector], lr=0.5, weight_decay=0.2).step()
    alpha = np.sqrt(5.0) * 0.5
    np.testing.assert_allclose(vector.detach().numpy(), np.array([3.0, -1.0]) * 0.9 - alpha * np.array([1.0, 0.0]),
                               rtol=1e-12)


@pytest.mark.parametrize("config, message", [
    (dict(lr=-1.0), "Learning rate should be >= 0 but is: -1.0"),
    (dict(beta2_decay=0.5), "beta2_decay should be <= 0 but is: 0.5"),
    (dict(eps=(-1.0, 1e-3)), "epsilon1 should be >= 0 but is: -1.0"),
    (dict(eps=(None, -1.0)), "epsilon2 should be >= 0 but is: -1.0"),
    (dict(d=0.5), "Clipping threshold d should be >= 1 but is: 0.5"),
    (dict(weight_decay=-0.1), "weight_decay should be >= 0 but is: -0.1"),
])
def test_errors(config, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        optim.Adafactor([autograd.zeros(2, requires_grad=True)], **config)


def test_in_place_updates_of_0d_tensors():
    """A scalar parameter's state is 0-d: lerp_, addcmul_ and addcdiv_ on 0-d operands (NumPy gives
    scalars there, not arrays) update in place."""
    a = autograd.tensor(1.0)
    a.lerp_(autograd.tensor(3.0), 0.25)
    assert a.item() == 1.5
    a.addcmul_(autograd.tensor(2.0), autograd.tensor(3.0), value=0.5)
    assert a.item() == 4.5
    a.addcdiv_(autograd.tensor(2.0), autograd.tensor(4.0), value=2)
    assert a.item() == 5.5 and a.shape == ()
