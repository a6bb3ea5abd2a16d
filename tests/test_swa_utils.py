"""optim.swa_utils: averaged models (SWA, EMA, custom), the SWA learning rate and update_bn,
by hand and against PyTorch's trajectories."""

import math
import types

import numpy as np
import pytest

import autograd
import nn
import optim
from optim.swa_utils import (
    SWALR,
    AveragedModel,
    get_ema_avg_fn,
    get_ema_multi_avg_fn,
    get_swa_avg_fn,
    get_swa_multi_avg_fn,
    update_bn,
)

OURS = types.SimpleNamespace(lib=autograd, nn=nn, optim=optim, swa=optim.swa_utils)


def torch_libs():
    import torch
    import torch.optim.swa_utils

    return types.SimpleNamespace(lib=torch, nn=torch.nn, optim=torch.optim, swa=torch.optim.swa_utils)


def make_model(L, seed=0):
    """Linear → BatchNorm1d → tanh → Linear in float64, with the same weights for either library."""
    model = L.nn.Sequential(L.nn.Linear(3, 4), L.nn.BatchNorm1d(4), L.nn.Tanh(), L.nn.Linear(4, 2)).double()
    rng = np.random.default_rng(seed)
    with L.lib.no_grad():
        for p in model.parameters():
            p.copy_(L.lib.tensor(rng.standard_normal(tuple(p.shape))))
    return model


def batches(L, count=4, seed=1):
    rng = np.random.default_rng(seed)
    return [L.lib.tensor(rng.standard_normal((5, 3))) for _ in range(count)]


def run(L, averaging, steps=6, anneal=("cos", 3), bn=True):
    """SGD on a small model, the average updated and SWALR stepped after each step; returns the
    learning rates, the averaged state after each update, and the state after update_bn."""
    model = make_model(L)
    averaged = L.swa.AveragedModel(model, **averaging(L))
    optimizer = L.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    scheduler = L.swa.SWALR(optimizer, swa_lr=0.05, anneal_strategy=anneal[0], anneal_epochs=anneal[1])
    lrs, states = [], []
    for x in batches(L, steps):
        optimizer.zero_grad()
        model(x).pow(2).mean().backward()
        optimizer.step()
        averaged.update_parameters(model)
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
        states.append({k: np.array(v.detach().numpy(), copy=True) for k, v in averaged.state_dict().items()})
    if bn:
        L.swa.update_bn([(x, 0) for x in batches(L, 3, seed=2)], averaged)
    final = {k: np.array(v.detach().numpy(), copy=True) for k, v in averaged.state_dict().items()}
    return lrs, states, final


AVERAGINGS = {
    "swa": lambda L: {},
    "swa-buffers": lambda L: dict(use_buffers=True),
    "swa-avg-fn": lambda L: dict(avg_fn=L.swa.get_swa_avg_fn()),
    "swa-multi": lambda L: dict(multi_avg_fn=L.swa.get_swa_multi_avg_fn()),
    "ema-avg-fn": lambda L: dict(avg_fn=L.swa.get_ema_avg_fn(0.9)),
    "ema-multi": lambda L: dict(multi_avg_fn=L.swa.get_ema_multi_avg_fn(0.8)),
    "ema-multi-buffers": lambda L: dict(multi_avg_fn=L.swa.get_ema_multi_avg_fn(0.8), use_buffers=True),
    "custom": lambda L: dict(avg_fn=lambda avg, new, n: 0.5 * avg + 0.5 * new),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", AVERAGINGS)
@pytest.mark.parametrize("anneal", [("cos", 3), ("linear", 2), ("cos", 0)])
def test_trajectories_match_torch(name, anneal):
    ours = run(OURS, AVERAGINGS[name], anneal=anneal)
    theirs = run(torch_libs(), AVERAGINGS[name], anneal=anneal)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=1e-12, atol=0)
    for state, torch_state in zip(ours[1] + [ours[2]], theirs[1] + [theirs[2]]):
        assert list(state) == list(torch_state)
        for key in state:
            assert state[key].dtype == torch_state[key].dtype, key
            np.testing.assert_allclose(state[key], torch_state[key], rtol=1e-12, atol=1e-14, err_msg=key)


def test_swa_is_the_running_mean_of_the_weights():
    weight = nn.Parameter(autograd.tensor([0.0, 0.0], dtype=autograd.float64))
    model = nn.Module()
    model.w = weight
    averaged = AveragedModel(model)
    seen = []
    for value in ([1.0, 2.0], [3.0, -2.0], [5.0, 6.0], [-1.0, 0.5]):
        with autograd.no_grad():
            weight.copy_(autograd.tensor(value))
        seen.append(value)
        averaged.update_parameters(model)
        np.testing.assert_allclose(averaged.module.w.numpy(), np.mean(seen, axis=0), rtol=1e-15)
    assert averaged.n_averaged.item() == 4 and averaged.n_averaged.dtype == autograd.int64
    assert averaged.module.w is not weight  # a deep copy
    assert list(averaged.state_dict()) == ["n_averaged", "module.w"]


def test_ema_functions_by_hand():
    decay = 0.75
    averaged, new = autograd.tensor([1.0, 2.0]), autograd.tensor([3.0, 6.0])
    np.testing.assert_allclose(get_ema_avg_fn(decay)(averaged, new, 1).numpy(), [1.5, 3.0])
    np.testing.assert_allclose(get_swa_avg_fn()(averaged, new, 3).numpy(), [1.5, 3.0])
    get_ema_multi_avg_fn(decay)([averaged], [new], 1)
    np.testing.assert_allclose(averaged.numpy(), [1.5, 3.0])
    counts = autograd.tensor([4, 8])
    get_ema_multi_avg_fn(0.5)([counts], [autograd.tensor([9, 8])], 1)  # integers: the mix cast back
    assert counts.tolist() == [6, 8]
    for n in (4, autograd.tensor(4)):  # an integer SWA average is refused, as by PyTorch
        with pytest.raises(RuntimeError):
            get_swa_multi_avg_fn()([counts], [autograd.tensor([9, 8])], n)
    with pytest.raises(ValueError, match="Invalid decay value 1.5"):
        get_ema_avg_fn(1.5)
    with pytest.raises(ValueError, match="Invalid decay value -0.1"):
        get_ema_multi_avg_fn(-0.1)


def test_buffers_follow_the_model_unless_averaged():
    model = nn.BatchNorm1d(2).double()
    plain, with_buffers = AveragedModel(model), AveragedModel(model, use_buffers=True)
    for value in (1.0, 3.0):
        with autograd.no_grad():
            model.running_mean.fill_(value)
        plain.update_parameters(model)
        with_buffers.update_parameters(model)
    assert plain.module.running_mean.tolist() == [3.0, 3.0]
    assert with_buffers.module.running_mean.tolist() == [2.0, 2.0]
    with pytest.raises(AssertionError, match="Only one of avg_fn and multi_avg_fn"):
        AveragedModel(model, avg_fn=get_swa_avg_fn(), multi_avg_fn=get_swa_multi_avg_fn())


def test_forward_runs_the_averaged_copy():
    model = nn.Linear(2, 1)
    averaged = AveragedModel(model)
    averaged.update_parameters(model)
    x = autograd.randn(3, 2)
    np.testing.assert_allclose(averaged(x).detach().numpy(), model(x).detach().numpy())


def test_swalr_by_hand():
    weight = autograd.zeros(1, requires_grad=True)
    optimizer = optim.SGD([weight], lr=1.0)
    scheduler = SWALR(optimizer, swa_lr=0.2, anneal_epochs=4, anneal_strategy="linear")
    assert optimizer.param_groups[0]["swa_lr"] == 0.2
    lrs = [optimizer.param_groups[0]["lr"]]
    for _ in range(6):
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    np.testing.assert_allclose(lrs, [1.0, 0.8, 0.6, 0.4, 0.2, 0.2, 0.2], rtol=1e-12)
    optimizer = optim.SGD([weight], lr=1.0)
    scheduler = SWALR(optimizer, swa_lr=0.0, anneal_epochs=2)  # cos: α = (1 - cos πt) / 2
    scheduler.step()
    assert math.isclose(scheduler.get_last_lr()[0], 0.5, rel_tol=1e-12)
    state = scheduler.state_dict()
    assert "anneal_func" not in state and "optimizer" not in state and state["_anneal_strategy"] == "cos"
    again = SWALR(optim.SGD([weight], lr=1.0), swa_lr=0.0, anneal_epochs=2, anneal_strategy="linear")
    again.load_state_dict(state)
    assert again.anneal_func is SWALR._cosine_anneal


def test_swalr_errors():
    optimizer = optim.SGD([autograd.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match="anneal_strategy must be one of 'cos' or 'linear', instead got exp"):
        SWALR(optimizer, 0.1, anneal_strategy="exp")
    with pytest.raises(ValueError, match="anneal_epochs must be equal or greater than 0, got -1"):
        SWALR(optimizer, 0.1, anneal_epochs=-1)
    with pytest.raises(ValueError, match="swa_lr must have the same length"):
        SWALR(optimizer, [0.1, 0.2])


def test_update_bn_recomputes_the_running_statistics():
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, momentum=0.3)).double()
    model.eval()
    data = [autograd.randn(4, 2, dtype=autograd.float64) for _ in range(3)]
    update_bn(data, model)
    assert not model.training and model[1].momentum == 0.3
    features = autograd.cat([model[0](x) for x in data]).detach().numpy()
    np.testing.assert_allclose(model[1].running_mean.numpy(), features.mean(0), rtol=1e-12)
    # the cumulative average of each batch's unbiased variance
    variances = np.mean([model[0](x).detach().numpy().var(0, ddof=1) for x in data], axis=0)
    np.testing.assert_allclose(model[1].running_var.numpy(), variances, rtol=1e-12)
    assert model[1].num_batches_tracked.item() == 3
    update_bn(data, nn.Linear(2, 2))  # no BatchNorm: nothing to do
