"""nn.init's formulas (and PyTorch's), nn.utils' clipping, vectors and early stopping."""

import math

import numpy as np
import pytest

import autograd
import nn
from autograd import Tensor


@pytest.mark.parametrize("nonlinearity, param, gain", [
    ("linear", None, 1.0), ("sigmoid", None, 1.0), ("conv2d", None, 1.0), ("tanh", None, 5 / 3),
    ("relu", None, math.sqrt(2)), ("selu", None, 0.75), ("leaky_relu", None, math.sqrt(2 / (1 + 0.01**2))),
    ("leaky_relu", 0.2, math.sqrt(2 / 1.04)),
])
def test_calculate_gain_table(nonlinearity, param, gain):
    assert nn.init.calculate_gain(nonlinearity, param) == pytest.approx(gain)


def test_fans_include_the_receptive_field():
    assert nn.init._calculate_fan_in_and_fan_out(autograd.empty(30, 400)) == (400, 30)
    assert nn.init._calculate_fan_in_and_fan_out(autograd.empty(16, 3, 5, 5)) == (75, 400)
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(autograd.empty(5))


def spread(tensor):
    values = tensor.numpy()
    return np.abs(values).max(), values.std()


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
@pytest.mark.parametrize("nonlinearity, a", [("relu", 0), ("leaky_relu", 0.1), ("tanh", 0), ("linear", 0)])
def test_kaiming_bounds_and_standard_deviations(mode, nonlinearity, a):
    shape = (300, 200)
    fan = 200 if mode == "fan_in" else 300
    std = nn.init.calculate_gain(nonlinearity, a) / math.sqrt(fan)
    w = nn.init.kaiming_uniform_(autograd.empty(*shape), a=a, mode=mode, nonlinearity=nonlinearity)
    largest, deviation = spread(w)
    assert largest <= math.sqrt(3) * std and largest > 0.99 * math.sqrt(3) * std
    assert deviation == pytest.approx(std, rel=0.02)
    w = nn.init.kaiming_normal_(autograd.empty(*shape), a=a, mode=mode, nonlinearity=nonlinearity)
    assert spread(w)[1] == pytest.approx(std, rel=0.02)


def test_xavier_bounds_and_standard_deviations():
    std = 1.5 * math.sqrt(2 / (200 + 300))
    largest, deviation = spread(nn.init.xavier_uniform_(autograd.empty(300, 200), gain=1.5))
    assert largest <= math.sqrt(3) * std and deviation == pytest.approx(std, rel=0.02)
    assert spread(nn.init.xavier_normal_(autograd.empty(300, 200), gain=1.5))[1] == pytest.approx(std, rel=0.02)


def test_the_lecture_line_runs_and_is_repeatable():
    autograd.manual_seed(3)
    w = autograd.empty(3, 5)
    nn.init.kaiming_uniform_(w, mode='fan_in', nonlinearity='relu')
    autograd.manual_seed(3)
    again = nn.init.kaiming_uniform_(autograd.empty(3, 5), mode='fan_in', nonlinearity='relu')
    np.testing.assert_array_equal(w.numpy(), again.numpy())
    assert np.abs(w.numpy()).max() <= math.sqrt(2) * math.sqrt(3 / 5)


def test_other_initialisers():
    w = autograd.empty(4, 6)
    assert (nn.init.zeros_(w).numpy() == 0).all() and (nn.init.ones_(w).numpy() == 1).all()
    assert (nn.init.constant_(w, 0.3).numpy() == np.float32(0.3)).all()
    np.testing.assert_array_equal(nn.init.eye_(w).numpy(), np.eye(4, 6))
    t = nn.init.trunc_normal_(autograd.empty(10_000), std=1.0, a=-0.5, b=1.0).numpy()
    assert t.min() >= -0.5 and t.max() <= 1.0
    for shape in ((5, 8), (8, 5), (4, 2, 3)):
        q = nn.init.orthogonal_(autograd.empty(*shape, dtype=autograd.float64), gain=2.0).numpy()
        flat = q.reshape(shape[0], -1)
        small = flat @ flat.T if shape[0] <= flat.shape[1] else flat.T @ flat
        np.testing.assert_allclose(small, 4 * np.eye(len(small)), atol=1e-12)


def test_initialisers_refuse_nothing_under_grad_and_bump_the_version():
    p = nn.Parameter(autograd.zeros(3, 3))
    y = (p * p).sum()  # p * p saves p for backward
    nn.init.normal_(p)
    with pytest.raises(RuntimeError, match="changed in place"):
        y.backward()
    q = nn.Parameter(autograd.zeros(3, 3))
    y = (q * 2).sum()  # times a number saves nothing (as PyTorch): the write is harmless
    nn.init.normal_(q)
    y.backward()
    np.testing.assert_array_equal(q.grad.numpy(), np.full((3, 3), 2.0, np.float32))


@pytest.mark.torch
def test_init_statistics_match_torch_formulas():
    import torch

    autograd.manual_seed(0)
    torch.manual_seed(0)
    for uniform, ours, theirs in (
        (True, lambda w: nn.init.kaiming_uniform_(w, a=math.sqrt(5)),
         lambda w: torch.nn.init.kaiming_uniform_(w, a=math.sqrt(5))),
        (False, lambda w: nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu"),
         lambda w: torch.nn.init.kaiming_normal_(w, mode="fan_out", nonlinearity="relu")),
        (True, lambda w: nn.init.xavier_uniform_(w, gain=nn.init.calculate_gain("tanh")),
         lambda w: torch.nn.init.xavier_uniform_(w, gain=torch.nn.init.calculate_gain("tanh"))),
    ):
        a = ours(autograd.empty(64, 32, 3, 3)).numpy()
        b = theirs(torch.empty(64, 32, 3, 3)).numpy()
        assert a.std() == pytest.approx(b.std(), rel=0.03)
        if uniform:  # the bound: both reach it within a hair (18,432 draws)
            assert np.abs(a).max() == pytest.approx(np.abs(b).max(), rel=0.01)


def grads(*values):
    params = []
    for v in values:
        p = nn.Parameter(autograd.zeros(len(v)))
        p.grad = Tensor(np.array(v, dtype=np.float32))
        params.append(p)
    return params


def test_clip_grad_norm_returns_norm_before_clipping():
    params = grads([3.0, 0.0], [0.0, 4.0])
    total = nn.utils.clip_grad_norm_(params, max_norm=1.0)
    assert total.item() == pytest.approx(5.0)
    np.testing.assert_allclose(params[0].grad.numpy(), [3 / 5, 0], rtol=1e-5)
    joint = np.concatenate([p.grad.numpy() for p in params])
    assert np.linalg.norm(joint) == pytest.approx(1.0, rel=1e-5)
    params = grads([3.0, -5.0], [1.0])
    assert nn.utils.clip_grad_norm_(params, 10.0, norm_type=1).item() == pytest.approx(9.0)
    assert nn.utils.clip_grad_norm_(params, 2.0, norm_type="inf").item() == pytest.approx(5.0)
    np.testing.assert_allclose(params[0].grad.numpy(), [1.2, -2.0], rtol=1e-5)
    untouched = grads([0.1, 0.1])
    nn.utils.clip_grad_norm_(untouched, 5.0)
    np.testing.assert_allclose(untouched[0].grad.numpy(), [0.1, 0.1])


def test_clip_grad_norm_can_refuse_a_non_finite_norm():
    with pytest.raises(RuntimeError, match="non-finite"):
        nn.utils.clip_grad_norm_(grads([np.inf, 1.0]), 1.0, error_if_nonfinite=True)


def test_clip_grad_value():
    params = grads([3.0, -0.5, -7.0])
    nn.utils.clip_grad_value_(params, 1.0)
    np.testing.assert_array_equal(params[0].grad.numpy(), [1.0, -0.5, -1.0])


def test_parameters_to_vector_and_back():
    model = nn.Linear(3, 2)
    vector = nn.utils.parameters_to_vector(model.parameters())
    assert vector.shape == (8,)
    nn.utils.vector_to_parameters(autograd.arange(8).float(), model.parameters())
    np.testing.assert_array_equal(model.weight.numpy(), np.arange(6).reshape(2, 3))
    np.testing.assert_array_equal(model.bias.numpy(), [6, 7])
    with pytest.raises(ValueError, match="has 3 elements but the parameters need 8"):
        nn.utils.vector_to_parameters(autograd.zeros(3), model.parameters())


def test_early_stopping_restores_best_weights():
    model = nn.Linear(2, 1)
    stopper = nn.utils.EarlyStopping(patience=2, min_delta=0.01)
    history = [1.0, 0.5, 0.495, 0.6, 0.7]
    stopped_at = None
    for epoch, loss in enumerate(history):
        with autograd.no_grad():
            model.weight.fill_(float(epoch))
        if stopper.step(loss, model):
            stopped_at = epoch
            break
    assert stopped_at == 3 and stopper.best == 0.5 and stopper.best_epoch == 1
    np.testing.assert_array_equal(model.weight.numpy(), [[1.0, 1.0]])
    maximise = nn.utils.EarlyStopping(patience=1, mode="max", restore_best_weights=False)
    assert not maximise.step(0.8) and maximise.step(0.79)


def test_complex_tensors_are_initialised_in_both_parts():
    """As PyTorch's: uniform_ draws the real and the imaginary part each from U(a, b); normal_ draws
    each part from N(mean, std²/2) (E|w - mean|² = std²). nn.Linear(..., dtype=cfloat) then starts with
    complex weights, not real ones stored as complex (the imaginary parts were all 0)."""
    autograd.manual_seed(0)
    w = autograd.empty(200, 300, dtype=autograd.cfloat)
    v = nn.init.uniform_(w, -1.0, 2.0).numpy()
    assert v.dtype == np.complex64 and v.imag.min() >= -1.0 and v.imag.max() <= 2.0 and abs(v.imag.mean() - 0.5) < 0.02
    v = w.normal_(2.0, 3.0).numpy()
    np.testing.assert_allclose([v.real.mean(), v.imag.mean()], 2.0, atol=0.03)
    np.testing.assert_allclose([v.real.std(), v.imag.std()], 3.0 / math.sqrt(2), rtol=0.02)
    layer = nn.Linear(400, 300, dtype=autograd.cfloat)
    bound = 1 / math.sqrt(400)
    for part in (layer.weight.detach().numpy().real, layer.weight.detach().numpy().imag):
        assert np.abs(part).max() <= bound and part.std() > bound / 2  # U(-b, b): std b/√3
    autograd.manual_seed(0)  # a real tensor draws as PyTorch's uniform_: rand's uniforms, times 2 minus 1, rounded once
    first = nn.init.uniform_(autograd.empty(5), -1, 1).numpy()
    autograd.manual_seed(0)
    np.testing.assert_array_equal(first, (autograd.rand(5).numpy().astype(np.float64) * 2 - 1).astype(np.float32))
