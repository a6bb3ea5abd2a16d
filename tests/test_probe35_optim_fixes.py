"""Differences from PyTorch 2.13 in ``optim`` found by session 35's probe (many small programs run on both
libraries), fixed, each checked on both libraries (the ``T`` fixture: chainrule's, then PyTorch's where it is
installed): a Tensor lr given to ASGD is copied into its ``eta``, not shared with it; Adam/AdamW with
``fused=True`` take a Tensor lr and Tensor betas as their values in double (PyTorch's fused kernel:
``lr.item()``), as does ``_fused_adam_`` called directly; LBFGS's gᵀd and step length are 0-d tensors of the
parameters' dtype, as PyTorch's, so its float32 trajectories (strong-Wolfe line search) are PyTorch's."""

import importlib

import numpy as np
import pytest

import autograd


def _optim(T):
    return importlib.import_module("optim") if T is autograd else T.optim


def _params(T, dtype="float64", n=2, seed=0):
    rng = np.random.default_rng(seed)
    return [T.tensor(rng.standard_normal(3).astype(dtype), requires_grad=True) for _ in range(n)]


def _set_grads(T, params):
    """The gradient of Σₖ (k + 1)‖pₖ‖² + Σ sin(pₖ), computed in NumPy (the same bits on both libraries); returns
    the loss as a Tensor."""
    total = 0.0
    for k, p in enumerate(params):
        a = p.detach().numpy()
        total += float((a**2 * (k + 1)).sum() + np.sin(a).sum())
        p.grad = T.tensor((2 * (k + 1) * a + np.cos(a)).astype(a.dtype))
    return T.tensor(total)


def _trajectory(T, optimizer, params, steps):
    out = []
    for _ in range(steps):
        _set_grads(T, params)
        optimizer.step()
        out.append(np.concatenate([p.detach().numpy() for p in params]))
    return np.stack(out)


# -- ASGD: its eta is a copy of a Tensor lr ------------------------------------------------------------------------


def test_asgd_tensor_lr_is_not_overwritten_by_the_step(T):
    lr = T.tensor(0.5)
    params = _params(T)
    optimizer = _optim(T).ASGD(params, lr=lr, lambd=0.5)
    _set_grads(T, params)
    optimizer.step()
    # each parameter's eta started from lr = 0.5 and was then set to lr / (1 + λ lr t)^α = 0.5 / 1.25^0.75, in
    # the float32 of the Tensor lr (the second one's used to start from the first one's new eta, written into lr)
    assert lr.item() == 0.5 and optimizer.param_groups[0]["lr"].item() == 0.5
    etas = [optimizer.state[p]["eta"].item() for p in params]
    assert etas[0] == etas[1]
    np.testing.assert_allclose(etas[0], 0.5 / 1.25**0.75, rtol=1e-7)
    assert optimizer.state[params[0]]["eta"] is not optimizer.state[params[1]]["eta"]


def test_asgd_tensor_lr_steps_as_the_same_lr_given_as_a_number(T):
    """Both parameters step with eta = lr at the first step (the second one too: it used to start from the eta the
    first one's step had written into the shared lr)."""
    by_tensor, by_number = _params(T), _params(T)
    a = _trajectory(T, _optim(T).ASGD(by_tensor, lr=T.tensor(0.25), lambd=0.1), by_tensor, 3)
    b = _trajectory(T, _optim(T).ASGD(by_number, lr=0.25, lambd=0.1), by_number, 3)
    assert np.array_equal(a[0], b[0])
    np.testing.assert_allclose(a, b, rtol=1e-6)  # (eta then follows in float32 from the float32 lr, as PyTorch's)


# -- fused Adam/AdamW: a Tensor lr or betas steps as its value in double ---------------------------------------------


FUSED = [("Adam", {}), ("Adam", {"weight_decay": 0.1, "amsgrad": True}), ("AdamW", {"weight_decay": 0.1}),
         ("AdamW", {"weight_decay": 0.1, "amsgrad": True, "maximize": True})]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("name, options", FUSED, ids=[f"{n}-{sorted(o)}" for n, o in FUSED])
def test_fused_tensor_lr_steps_as_its_value(T, name, options, dtype):
    """PyTorch's fused kernel reads a CPU Tensor lr as lr.item(): the trajectory is the one of the float lr
    float(float32(0.01)), to the last bit. (AdamW's used to leave its first parameter where it was.)"""
    cls = getattr(_optim(T), name)
    by_tensor, by_number = _params(T, dtype), _params(T, dtype)
    a = _trajectory(T, cls(by_tensor, lr=T.tensor(0.01), fused=True, **options), by_tensor, 4)
    b = _trajectory(T, cls(by_number, lr=float(np.float32(0.01)), fused=True, **options), by_number, 4)
    assert np.array_equal(a, b)
    assert (a[0] != np.concatenate([p.detach().numpy() for p in _params(T, dtype)])).all()  # every weight moved


@pytest.mark.parametrize("lr", [0.01, "tensor"])
def test_fused_tensor_betas_step_as_their_values(T, lr):
    """Tensor betas with fused=True (they used to raise a TypeError from NumPy): the float betas' trajectory."""
    optim = _optim(T)
    by_tensor, by_number = _params(T), _params(T)
    learning_rate = T.tensor(0.01) if lr == "tensor" else lr
    a = _trajectory(T, optim.Adam(by_tensor, lr=learning_rate, betas=(T.tensor(0.8), T.tensor(0.95)), fused=True),
                    by_tensor, 4)
    b = _trajectory(T, optim.Adam(by_number, lr=float(learning_rate), betas=(float(np.float32(0.8)),
                                                                             float(np.float32(0.95))), fused=True),
                    by_number, 4)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("kernel", ["_fused_adam_", "_fused_adamw_"])
def test_fused_adam_kernel_takes_a_tensor_lr_as_its_value(T, kernel):
    def run(lr):
        params = _params(T)
        grads = [T.tensor(np.array([1.0, -2.0, 0.5])) for _ in params]
        moments = [[T.zeros(3, dtype=T.float64) for _ in params] for _ in range(2)]
        with T.no_grad():
            getattr(T, kernel)(params, grads, *moments, [], [T.tensor(1.0) for _ in params], lr=lr, beta1=0.9,
                               beta2=0.999, weight_decay=0.1, eps=1e-8, amsgrad=False, maximize=False)
        return np.concatenate([p.detach().numpy() for p in params])

    assert np.array_equal(run(T.tensor(0.01)), run(float(np.float32(0.01))))


# -- LBFGS: gᵀd and t in the parameters' dtype ---------------------------------------------------------------------


def _lbfgs(T, dtype, steps, **options):
    params = _params(T, dtype)
    optimizer = _optim(T).LBFGS(params, **options)

    def closure():
        optimizer.zero_grad()
        return _set_grads(T, params)

    out = []
    for _ in range(steps):
        optimizer.step(closure)
        out.append(np.concatenate([p.detach().numpy() for p in params]))
    return np.stack(out), optimizer.state[params[0]]


# PyTorch 2.13's three steps of strong-Wolfe L-BFGS on float32 parameters (chainrule's line search in double,
# before, stopped at x[0] = -0.45031098, 3e-4 relative away)
STRONG_WOLFE_FLOAT32 = [-0.4501851797103882, -0.4501844048500061, -0.45018699765205383, -0.24267564713954926,
                        -0.24267184734344482, -0.24267680943012238]


def test_lbfgs_float32_strong_wolfe_trajectory_is_pytorchs(T):
    positions, _ = _lbfgs(T, "float32", 3, line_search_fn="strong_wolfe")
    for row in positions:
        np.testing.assert_allclose(row, STRONG_WOLFE_FLOAT32, rtol=1e-6)


@pytest.mark.parametrize("line_search_fn", [None, "strong_wolfe"])
def test_lbfgs_step_length_is_a_tensor_of_the_parameters_dtype(T, line_search_fn):
    """The first iteration's t = min(1, 1/‖g‖₁) · lr is a 0-d tensor where 1/‖g‖₁ < 1, as PyTorch's (its float32
    value, not the double one)."""
    _, state = _lbfgs(T, "float32", 1, max_iter=2, lr=0.5 if line_search_fn is None else 1,
                      line_search_fn=line_search_fn)
    t = state["t"]
    assert isinstance(t, T.Tensor) and t.dtype == T.float32 and t.dim() == 0
    # (1/‖g‖₁ rounded to float32, then times lr: in double, 0.05475311918730851 and its double)
    expected = {None: 0.05475312098860741, "strong_wolfe": 0.10950624197721481}[line_search_fn]
    assert t.item() == expected


def test_lbfgs_float64_trajectory_unchanged(T):
    """In float64 the arithmetic in 0-d tensors is the arithmetic in Python numbers: PyTorch's numbers, as before."""
    positions, state = _lbfgs(T, "float64", 2, line_search_fn="strong_wolfe", history_size=3)
    assert isinstance(state["t"], (int, float, T.Tensor))
    torch = pytest.importorskip("torch")
    expected, _ = _lbfgs(torch, "float64", 2, line_search_fn="strong_wolfe", history_size=3)
    np.testing.assert_allclose(positions, expected, rtol=1e-12)


def test_cubic_interpolate_of_numbers_and_of_tensors(T):
    """The helper PyTorch's module exports (and code writing its own line search imports): with tensor slopes it
    computes in their dtype, as PyTorch's."""
    module = importlib.import_module("optim.lbfgs") if T is autograd else importlib.import_module("torch.optim.lbfgs")
    g1, g2 = T.tensor(-1.0), T.tensor(0.5)
    t = module._cubic_interpolate(0, 1.0, g1, 1.0, 0.9, g2)
    assert isinstance(t, T.Tensor) and t.dtype == T.float32
    assert t.item() == 0.5168367624282837  # (0.5168367524056072 in double)
    assert module._cubic_interpolate(0, 1.0, -1.0, 1.0, 0.9, T.tensor(0.5)).item() == 0.5168367624282837
    # no real minimiser (d₁ = 1 + 1 - 3 (0 - 2)/(0 - 3) = 0, d₁² < g₁ g₂): the middle of the bounds
    assert module._cubic_interpolate(0, 0.0, T.tensor(1.0), 3.0, 2.0, T.tensor(1.0), bounds=(0.2, 0.6)) == 0.4


# -- fused Adam/AdamW on float16 parameters: the arithmetic in float32 -------------------------------------------


@pytest.mark.parametrize("name, options", FUSED, ids=[f"{n}-{sorted(o)}" for n, o in FUSED])
def test_fused_adam_float16_steps_in_float32_rounding_once(T, name, options):
    """PyTorch's fused CPU kernel reads a float16 parameter, its gradient and its moments into float32, computes the
    update there and stores each back once: each step equals the float32 kernel's step on float32 copies, rounded to
    float16 (NumPy's float16 arithmetic, which rounds after every operation, left 8 to 34 of 50 weights 1 ulp away)."""
    rng = np.random.default_rng(1)
    start = rng.standard_normal(50).astype("float16")
    grads = [rng.standard_normal(50).astype("float16") for _ in range(4)]
    param = T.tensor(start, requires_grad=True)
    optimizer = getattr(_optim(T), name)([param], lr=0.01, fused=True, **options)
    amsgrad = options.get("amsgrad", False)
    expected = {"param": start.astype("float32")}
    moments = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
    expected |= {key: np.zeros(50, "float32") for key in moments}
    kernel = T._fused_adamw_ if name == "AdamW" else T._fused_adam_
    for i, grad in enumerate(grads):
        param.grad = T.tensor(grad)
        optimizer.step()
        wide = {key: T.tensor(value.astype("float32")) for key, value in expected.items()}
        with T.no_grad():
            kernel([wide["param"]], [T.tensor(grad.astype("float32"))], [wide["exp_avg"]], [wide["exp_avg_sq"]],
                   [wide["max_exp_avg_sq"]] if amsgrad else [], [T.tensor(float(i + 1))], lr=0.01, beta1=0.9,
                   beta2=0.999, weight_decay=options.get("weight_decay", 0), eps=1e-8, amsgrad=amsgrad,
                   maximize=options.get("maximize", False))
        expected = {key: value.numpy().astype("float16") for key, value in wide.items()}
        assert np.array_equal(param.detach().numpy(), expected["param"])
        for key in moments:
            assert np.array_equal(optimizer.state[param][key].numpy(), expected[key]), key


@pytest.mark.parametrize("name", ["Adam", "SGD"])
def test_fused_refusal_of_a_complex_parameter_names_the_dtype_as_pytorch(T, name):
    params = [T.tensor(np.ones(2, dtype="complex128"), requires_grad=True)]
    optimizer = getattr(_optim(T), name)(params, lr=0.1, fused=True)
    params[0].grad = T.ones(2, dtype=T.complex128)
    with pytest.raises(RuntimeError, match=r"\] but torch\.complex128 and cpu$"):
        optimizer.step()
