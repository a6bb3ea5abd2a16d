"""Forward-mode AD (``autograd.autograd.forward_ad``, PyTorch's ``torch.autograd.forward_ad``): a dual tensor's
tangent ẋ is carried through every op, and the result's tangent is the directional derivative J ẋ. Each case
runs on chainrule and on PyTorch against central finite differences in float64; then the API's rules and
errors, in-place writes, custom Functions' jvp, and printing."""

import importlib

import numpy as np
import pytest

from tests.ported import close

CASES = {  # name: f(T, F, x) for x of shape (6,)
    "sin of a product": lambda T, F, x: (x * x).sin(),
    "exp, sum": lambda T, F, x: x.exp().sum(),
    "matmul": lambda T, F, x: x.reshape(2, 3) @ T.arange(12.0, dtype=T.float64).reshape(3, 4),
    "linear": lambda T, F, x: F.linear(x.reshape(2, 3), T.ones(4, 3, dtype=T.float64) * 0.5,
                                       T.ones(4, dtype=T.float64)),
    "softmax": lambda T, F, x: F.softmax(x.reshape(2, 3), -1),
    "log_softmax": lambda T, F, x: F.log_softmax(x.reshape(3, 2), 0),
    "relu, tanh, sigmoid": lambda T, F, x: x.relu() + x.tanh() * x.sigmoid(),
    "max": lambda T, F, x: x.max(),
    "max over a dim": lambda T, F, x: x.reshape(2, 3).max(1).values,
    "norm": lambda T, F, x: x.norm(),
    "views": lambda T, F, x: x[1:].reshape(5, 1).t() * 2 + x.unsqueeze(0)[:, :5],
    "cat and stack": lambda T, F, x: T.cat([x, x * 2]) + T.stack([x, x]).sum(0).repeat(2),
    "cumsum, cumprod": lambda T, F, x: x.cumsum(0) * x.cumprod(0),
    "sort": lambda T, F, x: x.sort().values * T.arange(6.0, dtype=T.float64),
    "inverse": lambda T, F, x: T.linalg.inv(x[:4].reshape(2, 2) + 3 * T.eye(2, dtype=T.float64)),
    "mean, std, var": lambda T, F, x: x.mean() + x.std() * x.var(),
    "pow": lambda T, F, x: x.abs().pow(2.5) + x.pow(3),
    "where": lambda T, F, x: T.where(x > 0, x * 3, -x),
    "gelu, logsumexp": lambda T, F, x: F.gelu(x) + x.logsumexp(0),
    "layer_norm": lambda T, F, x: F.layer_norm(x.reshape(2, 3), (3,)),
    "conv1d": lambda T, F, x: F.conv1d(x.reshape(1, 1, 6), T.tensor([[[1.0, -2.0, 0.5]]], dtype=T.float64)),
    "mse_loss, cross_entropy": lambda T, F, x: F.mse_loss(x, T.ones(6, dtype=T.float64))
    + F.cross_entropy(x.reshape(2, 3), T.tensor([0, 2])),
    "index_select, gather": lambda T, F, x: x.index_select(0, T.tensor([5, 0, 0]))
    * x.reshape(2, 3).gather(1, T.tensor([[2], [0]])).reshape(2).repeat(2)[:3],
}


def _modules(T):
    name = T.__name__
    return (importlib.import_module(f"{name}.autograd.forward_ad"),
            importlib.import_module("torch.nn.functional" if name == "torch" else "nn.functional"))


def _point(seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-2, 2, 6), rng.standard_normal(6)


@pytest.mark.parametrize("name", list(CASES))
def test_tangent_is_the_directional_derivative(T, name):
    fwAD, F = _modules(T)
    f = CASES[name]
    x0, t0 = _point()
    with fwAD.dual_level():
        y = f(T, F, fwAD.make_dual(T.tensor(x0), T.tensor(t0)))
        primal, tangent = fwAD.unpack_dual(y)
    h = 1e-6
    expected = (f(T, F, T.tensor(x0 + h * t0)).numpy() - f(T, F, T.tensor(x0 - h * t0)).numpy()) / (2 * h)
    close(primal, f(T, F, T.tensor(x0)).numpy(), rtol=1e-12)
    close(tangent, expected, rtol=1e-5, atol=1e-7)


def test_two_dual_inputs_and_a_module(T):
    fwAD, F = _modules(T)
    x0, t0 = _point(1)
    y0, s0 = _point(2)
    with fwAD.dual_level():
        x, y = fwAD.make_dual(T.tensor(x0), T.tensor(t0)), fwAD.make_dual(T.tensor(y0), T.tensor(s0))
        z = fwAD.unpack_dual(x * y + x.exp()).tangent
        model = (T.nn if T.__name__ == "torch" else importlib.import_module("nn")).Linear(6, 2).double()
        w = fwAD.unpack_dual(model(x)).tangent
    close(z, t0 * y0 + x0 * s0 + np.exp(x0) * t0, rtol=1e-12)
    close(w, model.weight.detach().numpy() @ t0, rtol=1e-12)
    assert not model.weight.requires_grad or model.weight.grad is None  # (forward mode fills no .grad)


def test_the_levels_rules_and_the_errors(T):
    fwAD, F = _modules(T)
    x = T.ones(3)
    with pytest.raises(RuntimeError, match="no level exists"):
        fwAD.make_dual(x, T.ones(3))
    assert fwAD.unpack_dual(x).tangent is None
    with fwAD.dual_level() as level:
        assert level == 0
        with pytest.raises(RuntimeError, match="Nested forward mode AD is not supported"):
            with fwAD.dual_level():
                pass
        with pytest.raises(RuntimeError, match="different size than that of the original Tensor"):
            fwAD.make_dual(x, T.ones(2))
        with pytest.raises(ValueError, match="Expected tangent to be floating point or complex"):
            fwAD.make_dual(x, T.ones(3, dtype=T.int64))
        with pytest.raises(ValueError, match="Expected primal to be floating point or complex"):
            fwAD.make_dual(T.ones(3, dtype=T.int64), T.ones(3, dtype=T.int64))
        d = fwAD.make_dual(x, T.tensor([0.0, 1.0, 2.0]))
        assert d is not x and d._base is x and not d.requires_grad
        primal, tangent = fwAD.unpack_dual(d)
        assert primal is not d and fwAD.unpack_dual(primal).tangent is None
        close(tangent, [0.0, 1.0, 2.0])
        y = d * 3
        assert "tangent=tensor([0., 3., 6.])" in repr(y)
        assert (d > 1).dtype == T.bool  # (a comparison has no tangent)
    assert fwAD.unpack_dual(d).tangent is None and fwAD.unpack_dual(y).tangent is None  # (the level is closed)
    assert "tangent" not in repr(y)


def test_in_place_writes_carry_tangents(T):
    fwAD, F = _modules(T)
    with fwAD.dual_level():
        d = fwAD.make_dual(T.tensor([1.0, 2.0, 3.0]), T.tensor([1.0, 1.0, 1.0]))
        e = fwAD.make_dual(T.tensor([5.0]), T.tensor([7.0]))
        d.mul_(2)
        close(fwAD.unpack_dual(d).tangent, [2.0, 2.0, 2.0])
        d[1] = e[0] * 2
        close(d, [2.0, 10.0, 6.0])
        close(fwAD.unpack_dual(d).tangent, [2.0, 14.0, 2.0])
        w = T.zeros(3)
        w.copy_(d)
        w.add_(e)
        close(w, [7.0, 15.0, 11.0])
        close(fwAD.unpack_dual(w).tangent, [9.0, 21.0, 9.0])


def test_a_custom_function_uses_its_jvp(T):
    fwAD, F = _modules(T)

    class Cube(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_forward(x)
            return x ** 3

        @staticmethod
        def backward(ctx, g):
            raise AssertionError("not used in forward mode")

        @staticmethod
        def jvp(ctx, t):
            (x,) = ctx.saved_tensors
            return 3 * x * x * t

    class NoJvp(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

    with fwAD.dual_level():
        d = fwAD.make_dual(T.tensor([1.0, 2.0]), T.tensor([1.0, 0.5]))
        y = Cube.apply(d)
        close(y, [1.0, 8.0])
        close(fwAD.unpack_dual(y).tangent, [3.0, 6.0])
        with pytest.raises(NotImplementedError, match="You must implement the jvp function"):
            NoJvp.apply(d)


def test_complex_tangents(T):
    """ẏ = f'(z) ż for a holomorphic f; the real-pair Jacobian otherwise (|z|, conj, real parts), as PyTorch's."""
    fwAD, F = _modules(T)
    z0, t0 = np.array([1.0 + 2.0j, -0.5 + 0.25j]), np.array([0.3 - 1.0j, 2.0 + 0.5j])
    with fwAD.dual_level():
        z = fwAD.make_dual(T.tensor(z0), T.tensor(t0))
        tangents = [fwAD.unpack_dual(y).tangent for y in (z * z, z.exp(), z.abs(), z.conj() * 1, T.view_as_real(z),
                                                          T.fft.fft(z), z.real * z.imag)]
        x = fwAD.make_dual(T.tensor([0.5, -1.5], dtype=T.float64), T.tensor([1.0, 2.0], dtype=T.float64))
        from_real = fwAD.unpack_dual(T.polar(T.ones(2, dtype=T.float64), x)).tangent
    close(tangents[0], 2 * z0 * t0, rtol=1e-12)
    close(tangents[1], np.exp(z0) * t0, rtol=1e-12)
    close(tangents[2], (z0.conj() * t0).real / np.abs(z0), rtol=1e-12)
    close(tangents[3], t0.conj(), rtol=1e-12)
    close(tangents[4], np.stack([t0.real, t0.imag], -1), rtol=1e-12)
    close(tangents[5], np.fft.fft(t0), rtol=1e-12)
    close(tangents[6], t0.real * z0.imag + z0.real * t0.imag, rtol=1e-12)
    close(from_real, 1j * np.exp(1j * np.array([0.5, -1.5])) * np.array([1.0, 2.0]), rtol=1e-12)


def test_outside_a_level_the_ops_are_the_plain_ones():
    import autograd

    assert autograd.autograd.forward_ad.dual_level  # (torch.autograd.forward_ad without an import of its own)
    import autograd.autograd.forward_ad as fwAD  # noqa: E402
    from autograd.primitive import Primitive
    from autograd.write_door import WriteDoor

    plain = (Primitive.__dict__["apply"], WriteDoor.__dict__["_write"], WriteDoor.__dict__["_write_at"])
    try:
        with fwAD.dual_level():
            assert Primitive.__dict__["apply"] is not plain[0]
            raise KeyError("an error inside the level")
    except KeyError:
        pass
    assert (Primitive.__dict__["apply"], WriteDoor.__dict__["_write"], WriteDoor.__dict__["_write_at"]) == plain
    assert autograd.ones(2).add(1).sum().item() == 4.0


def test_gradcheck_checks_forward_mode_too(T):
    class Twice(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g * 2

        @staticmethod
        def jvp(ctx, t):
            return t * 4  # (wrong: the derivative is 2)

    x = T.tensor([0.5, 1.0], dtype=T.float64, requires_grad=True)
    assert T.autograd.gradcheck(lambda t: (t * t).exp(), (x,), check_forward_ad=True)
    assert not T.autograd.gradcheck(Twice.apply, (x,), check_forward_ad=True, check_backward_ad=False,
                                    raise_exception=False)
    assert T.autograd.gradcheck(Twice.apply, (x,), check_forward_ad=False)

    class ForwardOnly(T.autograd.Function):  # (no backward: checked in forward mode alone, as PyTorch allows)
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_forward(x)
            return x.exp()

        @staticmethod
        def jvp(ctx, t):
            (x,) = ctx.saved_tensors
            return x.exp() * t

    assert T.autograd.gradcheck(ForwardOnly.apply, (x,), check_forward_ad=True, check_backward_ad=False,
                                check_undefined_grad=False)


def test_an_op_that_draws_at_random_gets_the_tangent_of_what_it_returned(T):
    fwAD, F = _modules(T)
    T.manual_seed(0)
    with fwAD.dual_level():
        d = fwAD.make_dual(T.ones(1000), T.full((1000,), 3.0))
        y = F.dropout(d, 0.5, training=True)
        tangent = fwAD.unpack_dual(y).tangent
    kept = y.numpy() != 0
    assert 300 < kept.sum() < 700
    close(tangent, np.where(kept, 6.0, 0.0))  # 3 through the kept units, scaled by 1 / (1 - p)


def test_a_backward_pass_inside_a_level_still_gives_gradients(T):
    fwAD, F = _modules(T)
    a = T.tensor([1.0, -2.0], requires_grad=True)
    with fwAD.dual_level():
        x = fwAD.make_dual(a, T.tensor([1.0, 1.0]))
        y = (x * x).sum()
        close(fwAD.unpack_dual(y).tangent, -2.0)  # 2 x · ẋ
        y.backward()
        close(a.grad, [2.0, -4.0])
        assert fwAD.unpack_dual(a.grad).tangent is None  # (.grad gets no tangent, as PyTorch's)


HESSIAN_CASES = {  # f(T, F, x) -> a number, for x of shape (6,)
    "cube": lambda T, F, x: (x ** 3).sum(),
    "tanh times exp": lambda T, F, x: x.tanh().sum() * x.exp().sum(),
    "log_softmax": lambda T, F, x: F.log_softmax(x.reshape(2, 3), 1)[:, 0].sum(),
    "a small network": lambda T, F, x: F.gelu(x.reshape(2, 3) @ T.arange(6.0, dtype=T.float64).reshape(3, 2))
    .sigmoid().pow(2).sum(),
    "norm and relu": lambda T, F, x: x.norm() * x.relu().sum(),
}


@pytest.mark.parametrize("name", list(HESSIAN_CASES))
@pytest.mark.parametrize("create_graph", [False, True])
def test_forward_over_reverse_gives_hessian_vector_products(T, name, create_graph):
    """The tangent of autograd.grad's ∇f along ẋ is H ẋ, as PyTorch's (checked against differences of ∇f)."""
    fwAD, F = _modules(T)
    f = HESSIAN_CASES[name]
    x0, t0 = _point(3)

    def gradient(x):
        x = T.tensor(x, requires_grad=True)
        return T.autograd.grad(f(T, F, x), x)[0].detach().numpy()

    with fwAD.dual_level():
        x = fwAD.make_dual(T.tensor(x0, requires_grad=True), T.tensor(t0))
        (g,) = T.autograd.grad(f(T, F, x), x, create_graph=create_graph)
        hvp = fwAD.unpack_dual(g).tangent
    h = 1e-6
    close(g.detach(), gradient(x0), rtol=1e-12)
    close(hvp, (gradient(x0 + h * t0) - gradient(x0 - h * t0)) / (2 * h), rtol=1e-5, atol=1e-7)


def test_gradgradcheck_checks_forward_over_reverse(T):
    fwAD, F = _modules(T)
    x = T.tensor([0.5, -1.0, 2.0], dtype=T.float64, requires_grad=True)
    for f in (lambda t: (t.tanh() * t.exp()).sum(), lambda t: F.softplus(t) * t.sin()):
        assert T.autograd.gradgradcheck(f, (x,), check_fwd_over_rev=True)
        assert T.autograd.gradgradcheck(f, (x,), check_fwd_over_rev=True, check_rev_over_rev=False,
                                        check_undefined_grad=False)


def test_gradcheck_refuses_checking_nothing(T):
    x = T.tensor([0.5], dtype=T.float64, requires_grad=True)
    with pytest.raises(AssertionError, match="Expected at least one of check_forward_ad or check_backward_ad"):
        T.autograd.gradcheck(lambda t: t.exp(), (x,), check_forward_ad=False, check_backward_ad=False)
    with pytest.raises(AssertionError, match="check_batched_grad=True requires check_backward_ad"):
        T.autograd.gradcheck(lambda t: t.exp(), (x,), check_forward_ad=True, check_backward_ad=False,
                             check_batched_grad=True)
    with pytest.raises(AssertionError, match="Expected at least one of check_fwd_over_rev or check_rev_over_rev"):
        T.autograd.gradgradcheck(lambda t: t.exp(), (x,), check_rev_over_rev=False)
    with pytest.raises(AssertionError, match="check_undefined_grad=True requires check_rev_over_rev"):
        T.autograd.gradgradcheck(lambda t: t.exp(), (x,), check_rev_over_rev=False, check_fwd_over_rev=True)


def test_forward_mode_through_layers_agrees_with_pytorch():
    """A dual input through Conv2d, BatchNorm2d in training mode, Tanh, AvgPool2d, Linear and a batch-first LSTM, in
    float64: the tangents of the outputs and of the final hidden state are PyTorch's (where it is installed) and
    the directional derivative by finite differences."""
    from .pytorch_programs import OURS, assert_same, load, plain, pytorch, weights_of

    def layers(m):
        return (m.nn.Sequential(m.nn.Conv2d(2, 3, 3, padding=1), m.nn.BatchNorm2d(3), m.nn.Tanh(), m.nn.AvgPool2d(2),
                                m.nn.Flatten(), m.nn.Linear(12, 4)), m.nn.LSTM(4, 5, batch_first=True))

    weights = [weights_of(lambda m, i=i: layers(m)[i]) for i in (0, 1)]
    rng = np.random.default_rng(0)
    x0, t0 = rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((2, 2, 4, 4))

    def program(m, x, tangent=None):
        fwAD = importlib.import_module(m.torch.__name__ + ".autograd.forward_ad")
        conv, lstm = (load(m, layer, w).double() for layer, w in zip(layers(m), weights))
        with fwAD.dual_level():
            x = m.torch.tensor(x) if tangent is None else fwAD.make_dual(m.torch.tensor(x), m.torch.tensor(tangent))
            out, (hn, cn) = lstm(conv(x).unsqueeze(1).repeat(1, 3, 1))
            return [fwAD.unpack_dual(y).tangent if tangent is not None else y.detach() for y in (out, hn)]

    tangents = plain(program(OURS, x0, t0))
    h = 1e-6
    plus, minus = plain(program(OURS, x0 + h * t0)), plain(program(OURS, x0 - h * t0))
    for tangent, a, b in zip(tangents, plus, minus):
        np.testing.assert_allclose(tangent, (a - b) / (2 * h), rtol=1e-5, atol=1e-8)
    torch_modules = pytorch()
    if torch_modules is not None:
        assert_same(tangents, plain(program(torch_modules, x0, t0)), 1e-9, 1e-10)


# x on a bound, on a NaN and past it: PyTorch's forward rules for these ops are its own, not the backward read forward
TIE_X = [0.0, 0.5, 1.0, 2.0, float("nan"), 1.0]
TIE_BOUND = [0.0, 0.0, 1.0, 3.0, 0.0, float("nan")]
TIE_UPPER = [0.0, 0.5, 2.0, 2.0, 1.0, 0.5]
TIE_CASES = {  # name: (f, its inputs, their tangents, PyTorch's tangent of the result)
    "clamp(x, min)": (lambda T, x, lo: T.clamp(x, min=lo), (TIE_X, TIE_BOUND), [-1, 2, -3, -4, -5, -6]),
    "clamp(x, max=)": (lambda T, x, hi: T.clamp(x, max=hi), (TIE_X, TIE_UPPER), [-1, -2, 3, -4, -5, -6]),
    "clamp(x, min, max)": (lambda T, x, lo, hi: T.clamp(x, lo, hi), (TIE_X, TIE_BOUND, TIE_UPPER),
                           [1, 2, 3, 40, 5, 60]),
    "clamp_min": (lambda T, x, lo: x.clamp_min(lo), (TIE_X, TIE_BOUND), [1, 2, 3, -4, -5, -6]),
    "clamp_max": (lambda T, x, hi: T.clamp_max(x, hi), (TIE_X, TIE_UPPER), [1, 2, 3, 4, -5, -6]),
    "fmax": (lambda T, x, y: T.fmax(x, y), (TIE_X, TIE_BOUND), [-1, 2, -3, -4, -5, 6]),
    "fmin": (lambda T, x, y: T.fmin(x, y), (TIE_X, TIE_BOUND), [1, -2, 3, 4, -5, 6]),
    "maximum": (lambda T, x, y: T.maximum(x, y), (TIE_X, TIE_BOUND), [0, 2, 0, -4, -5, -6]),
    "minimum": (lambda T, x, y: T.minimum(x, y), (TIE_X, TIE_BOUND), [0, -2, 0, 4, -5, -6]),
}


@pytest.mark.parametrize("name", list(TIE_CASES))
def test_tangents_at_ties_and_nans_follow_pytorchs_forward_rules(T, name):
    """x's tangent is 1..6, the other input's -1..-6, clamp's upper bound's 10..60. At a tie clamp with a tensor
    bound takes the bound's tangent and fmax the other's (their backward gives x the gradient there: a rule of its
    own, jvp); clamp_min and clamp_max take x's; maximum and minimum average the two, and a NaN gives the other's."""
    fwAD, _ = _modules(T)
    f, inputs, expected = TIE_CASES[name]
    tangents = ([1.0, 2, 3, 4, 5, 6], [-1.0, -2, -3, -4, -5, -6], [10.0, 20, 30, 40, 50, 60])
    with fwAD.dual_level():
        duals = [fwAD.make_dual(T.tensor(x, dtype=T.float64), T.tensor(t, dtype=T.float64))
                 for x, t in zip(inputs, tangents)]
        tangent = fwAD.unpack_dual(f(T, *duals)).tangent
    np.testing.assert_array_equal(tangent.numpy(), expected)
