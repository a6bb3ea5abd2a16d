"""The library fixes the probe16 sequence-model programs (tests/test_programs_probe16_ssm_*.py) led to, each
checked on chainrule and, where installed, on PyTorch (the ``T`` fixture) against the formula of PyTorch's
CPU kernel written out in NumPy."""

import numpy as np


def _half_gradient(T, op, x, g):
    t = T.tensor(x, requires_grad=True)
    y = op(t)
    (grad,) = T.autograd.grad(y, t, T.tensor(g))
    assert grad.dtype == T.float16
    return y.detach().numpy(), grad.numpy()


def _data(seed):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(4000) * 3).astype(np.float16), rng.standard_normal(4000).astype(np.float16)


def test_float16_tanh_gradient_is_rounded_once(T):
    """tanh's backward g (1 - y²) in float16: PyTorch computes it in float32 and rounds once; 1 - y² rounded
    in float16 loses its low bits where y is near ±1 (16 units off at x = 2.4)."""
    x, g = _data(0)
    y, grad = _half_gradient(T, T.tanh, x, g)
    wide = y.astype(np.float32)
    np.testing.assert_array_equal(grad, (g.astype(np.float32) * (1 - wide * wide)).astype(np.float16))


def test_float16_sigmoid_gradient_in_the_order_of_pytorchs_kernel(T):
    """sigmoid's backward in float16 is PyTorch's g · (1 - y) · y, rounded to float16 after each step, in this
    order: g · y · (1 - y) came out a unit or two off in a third of the values."""
    x, g = _data(1)
    y, grad = _half_gradient(T, T.sigmoid, x, g)
    np.testing.assert_array_equal(grad, (g * (np.float16(1) - y)) * y)


def test_float32_sigmoid_gradient_in_the_order_of_pytorchs_kernel(T):
    rng = np.random.default_rng(2)
    y = rng.uniform(0, 1, 4000).astype(np.float32)
    g = rng.standard_normal(4000).astype(np.float32)
    t = T.tensor(y, requires_grad=True)
    out = T.sigmoid(t)
    # sigmoid's backward reads its output: feed chosen outputs through sigmoid's derivative at them
    (grad,) = T.autograd.grad(out, t, T.tensor(g))
    s = out.detach().numpy()
    np.testing.assert_array_equal(grad.numpy(), (g * (np.float32(1) - s)) * s)


def _functional(T):
    import nn
    return nn.functional if T.__name__ == "autograd" else T.nn.functional


def test_float16_leaky_relu_in_float32_rounded_once(T):
    """leaky_relu of float16: PyTorch's kernel multiplies by the slope in float32 and rounds once, forward and
    backward; x · 0.01 in float16 rounds the slope first (a unit off in a fifth of the negative values)."""
    F = _functional(T)
    x, g = _data(3)
    for slope in (0.01, 0.2, 3.0):
        y, grad = _half_gradient(T, lambda t, slope=slope: F.leaky_relu(t, slope), x, g)
        wide = x.astype(np.float32)
        np.testing.assert_array_equal(y, np.where(x > 0, x, (wide * np.float32(slope)).astype(np.float16)))
        np.testing.assert_array_equal(grad, np.where(x > 0, g, (g.astype(np.float32) * np.float32(slope))
                                                     .astype(np.float16)))


def test_float16_hardsigmoid_gradient_has_a_float32_sixth(T):
    x, g = _data(4)
    _, grad = _half_gradient(T, _functional(T).hardsigmoid, x, g)
    inside = (x > -3) & (x < 3)
    np.testing.assert_array_equal(grad, np.where(inside, (g.astype(np.float32) * np.float32(1 / 6))
                                                 .astype(np.float16), 0))


def test_float16_bounds_compared_as_pytorchs_kernels_compare_them(T):
    """A float16 0.3 is 0.30005: threshold and hardtanh compare it with their bound in float32 (above 0.3),
    hardshrink in float16 (0.3 itself); softshrink's forward subtracts in float32 and its backward compares in
    float16."""
    F = _functional(T)
    x = np.array([0.3, -0.3, 0.2998, -1.3, 0.5], dtype=np.float16)
    g = np.ones(5, dtype=np.float16)
    y, grad = _half_gradient(T, lambda t: F.threshold(t, 0.3, 0.7), x, g)
    np.testing.assert_array_equal(y, np.array([0.3, 0.7, 0.7, 0.7, 0.5], dtype=np.float16))
    np.testing.assert_array_equal(grad, [1, 0, 0, 0, 1])
    _, grad = _half_gradient(T, lambda t: F.hardtanh(t, -1.3, 0.3), x, g)
    np.testing.assert_array_equal(grad, [0, 1, 1, 1, 0])  # -1.2998 is inside (-1.3, 0.3); 0.30005 is not
    y, grad = _half_gradient(T, lambda t: F.hardshrink(t, 0.3), x, g)
    np.testing.assert_array_equal(y, np.array([0, 0, 0, -1.3, 0.5], dtype=np.float16))
    np.testing.assert_array_equal(grad, [0, 0, 0, 1, 1])
    y, grad = _half_gradient(T, lambda t: F.softshrink(t, 0.3), x, g)
    np.testing.assert_array_equal(y, (x.astype(np.float32) - np.clip(x.astype(np.float32), -0.3, 0.3))
                                  .astype(np.float16))
    np.testing.assert_array_equal(grad, [0, 0, 0, 1, 1])


def test_float16_glu_as_pytorchs_kernels(T):
    """glu of float16: a σ(b) in float32, rounded once; the backward takes σ(b) rounded to float16 and
    computes σ(b) g and (1 - σ(b)) σ(b) a g in float32, each rounded once (PyTorch's glu_backward)."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3000, 2)) * 3).astype(np.float16)
    g = rng.standard_normal((3000, 1)).astype(np.float16)
    y, grad = _half_gradient(T, lambda t: _functional(T).glu(t, 1), x, g)
    a, b, g32 = x[:, :1].astype(np.float32), x[:, 1:].astype(np.float32), g.astype(np.float32)
    s = 1 / (1 + np.exp(-b.astype(np.float64)))
    np.testing.assert_array_equal(y, (a * s).astype(np.float16))  # (float64 σ: the same bits here)
    s16 = s.astype(np.float16).astype(np.float32)
    np.testing.assert_array_equal(grad[:, :1], (s16 * g32).astype(np.float16))
    np.testing.assert_array_equal(grad[:, 1:], ((1 - s16) * s16 * a * g32).astype(np.float16))


def test_glu_gradients_and_second_derivative_against_pytorch(T):
    rng = np.random.default_rng(6)
    x = T.tensor(rng.standard_normal((2, 6, 3)), requires_grad=True)
    y = _functional(T).glu(x, 1)
    assert y.shape == (2, 3, 3) and y.grad_fn.name() == "GluBackward0"
    (grad,) = T.autograd.grad((y * y.detach().cos()).sum(), x, create_graph=True)
    (second,) = T.autograd.grad((grad ** 2).sum(), x)
    a, b = x.detach().numpy()[:, :3], x.detach().numpy()[:, 3:]
    s = 1 / (1 + np.exp(-b))
    w = np.cos(a * s)
    np.testing.assert_allclose(grad.detach().numpy(), np.concatenate([s * w, (1 - s) * s * a * w], 1), rtol=1e-12)
    assert second.shape == x.shape and np.isfinite(second.numpy()).all()  # (held to finite differences in
    # tests/test_ops_probe16.py)


def test_float16_rsqrt_gradient_rounds_the_cube_once(T):
    """rsqrt's backward is PyTorch's -1/2 · g · y³ with y³ one op: in float16, y · y · y rounded twice put
    a fifth of the gradients (of RMSNorm's rsqrt) a unit or more off."""
    rng = np.random.default_rng(7)
    x = (np.abs(rng.standard_normal(4000)) * 3 + 0.1).astype(np.float16)
    g = rng.standard_normal(4000).astype(np.float16)
    y, grad = _half_gradient(T, T.rsqrt, x, g)
    wide = y.astype(np.float32)
    cube = (wide * wide * wide).astype(np.float16)
    np.testing.assert_array_equal(grad, (g * np.float16(-0.5)) * cube)


def test_float16_exp_and_cos_are_their_float32_values_rounded_once(T):
    """Over every finite float16: PyTorch computes exp and cos in float32 and rounds once; NumPy's float16 loops
    are a unit off at a few near-ties (e^-0.04724, three steps of RetNet's second decay, was 0.954)."""
    every = np.arange(65536, dtype=np.uint16).view(np.float16)
    every = every[np.isfinite(every)]
    wide = every.astype(np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        for op, expected in ((T.exp, np.exp(wide)), (T.cos, np.cos(wide))):
            result = op(T.tensor(every))
            assert result.dtype == T.float16
            np.testing.assert_array_equal(result.numpy(), expected.astype(np.float16))
    assert T.exp(T.tensor(np.float16(-0.04724))).item() == np.float16(0.9536).item()


def test_float16_logsigmoid_gradient_reads_a_float16_buffer(T):
    """PyTorch's log_sigmoid keeps e^-|x| from its forward in x's dtype and computes the backward from it in
    float32, rounded once: (1 - b / (1 + b)) g where x < 0, b / (1 + b) g elsewhere."""
    x, g = _data(8)
    y, grad = _half_gradient(T, _functional(T).logsigmoid, x, g)
    wide = x.astype(np.float32)
    np.testing.assert_array_equal(y, (np.minimum(wide, 0) - np.log1p(np.exp(-np.abs(wide)))).astype(np.float16))
    b = np.exp(-np.abs(wide)).astype(np.float16).astype(np.float32)
    q = b / (1 + b)
    np.testing.assert_array_equal(grad, (np.where(x < 0, 1 - q, q) * g.astype(np.float32)).astype(np.float16))


def test_float16_power_gradient_in_pytorchs_order(T):
    """x ** c's backward is PyTorch's g · (c · x^(c-1)), each step rounded in float16: (g · c) · x^(c-1) was a
    unit off in a fifth of the gradients of x³ and x^1.5 (GELU-tanh's cube, a Heinsen scan's powers)."""
    rng = np.random.default_rng(9)
    g = rng.standard_normal(4000).astype(np.float16)
    for c in (3, 1.5, 2, -2):
        x = (rng.standard_normal(4000) * 3).astype(np.float16)
        if c == 1.5:
            x = np.abs(x) + np.float16(0.01)
        _, grad = _half_gradient(T, lambda t, c=c: t ** c, x, g)
        with np.errstate(over="ignore"):  # (x^-3 of a small float16 is inf, in PyTorch too)
            power = (x.astype(np.float32) ** np.float32(c - 1)).astype(np.float16)
            expected = g * (power.astype(np.float32) * np.float32(c)).astype(np.float16)
        np.testing.assert_array_equal(grad, expected)


def test_division_gradient_of_the_denominator_grouped_as_pytorchs(T):
    """dL/dy of x / y is PyTorch's -g · ((x / y) / y): (-g · (x / y)) / y, as Python groups the product
    unparenthesised, was a unit off in a third of float16 gradients (the mLSTM's normaliser, softsign)."""
    rng = np.random.default_rng(10)
    a = (rng.standard_normal(4000) * 3).astype(np.float16)
    b = (np.abs(rng.standard_normal(4000)) * 3 + 0.5).astype(np.float16)
    g = rng.standard_normal(4000).astype(np.float16)
    x, y = T.tensor(a, requires_grad=True), T.tensor(b, requires_grad=True)
    _, grad_y = T.autograd.grad(x / y, (x, y), T.tensor(g))
    np.testing.assert_array_equal(grad_y.numpy(), -g * ((a / b) / b))
    a64, b64, g64 = (v.astype(np.float64) for v in (a, b, g))
    x, y = T.tensor(a64, requires_grad=True), T.tensor(b64, requires_grad=True)
    _, grad_y = T.autograd.grad(x / y, (x, y), T.tensor(g64))
    np.testing.assert_array_equal(grad_y.numpy(), -g64 * ((a64 / b64) / b64))


def test_float16_erf_gradient_in_pytorchs_order(T):
    """erf's backward is PyTorch's 2/√π · e^(-x²) · g, each step rounded in float16 (g · e^(-x²) first was a
    unit off in two fifths of the gradients: GELU's exact form in half precision); erfc's and erfinv's alike."""
    rng = np.random.default_rng(11)
    x = (rng.standard_normal(4000) * 2).astype(np.float16)
    g = rng.standard_normal(4000).astype(np.float16)
    _, grad = _half_gradient(T, T.erf, x, g)
    wide = x.astype(np.float32)
    bump = np.exp(-(wide * wide).astype(np.float16).astype(np.float32)).astype(np.float16)
    scaled = (bump.astype(np.float32) * np.float32(2 / np.sqrt(np.pi))).astype(np.float16)
    np.testing.assert_array_equal(grad, scaled * g)
    _, grad = _half_gradient(T, T.erfc, x, g)  # erfc's: -2/√π · e^(-x²) · g
    scaled = (bump.astype(np.float32) * np.float32(-2 / np.sqrt(np.pi))).astype(np.float16)
    np.testing.assert_array_equal(grad, scaled * g)
    u = rng.uniform(-0.95, 0.95, 4000).astype(np.float16)
    y, grad = _half_gradient(T, T.erfinv, u, g)  # erfinv's: √π/2 · e^(y²) · g
    growth = np.exp((y * y).astype(np.float32)).astype(np.float16)
    np.testing.assert_array_equal(grad, (growth.astype(np.float32) * np.float32(np.sqrt(np.pi) / 2))
                                  .astype(np.float16) * g)


def test_inverse_trig_log10_and_atan2_gradients_bit_for_bit(T):
    """PyTorch's formulas, to the bit in float64: arcsin' and the like multiply by the reciprocal square root
    (dividing by the root was a unit off in a third of the values), log10' divides by x · 2.3025850929940456
    (PyTorch's constant, a unit below math.log(10): nine tenths were off), atan2' is g · x · (1 / (x² + y²))."""
    rng = np.random.default_rng(12)
    u = rng.uniform(-0.9, 0.9, 3000)
    p = np.abs(rng.standard_normal(3000)) + 0.2
    a, b = rng.standard_normal(3000), rng.standard_normal(3000)
    g = rng.standard_normal(3000)

    def grads(op, *arrays):
        leaves = [T.tensor(v, requires_grad=True) for v in arrays]
        return [q.numpy() for q in T.autograd.grad(op(*leaves), leaves, T.tensor(g))]

    root = 1 / np.sqrt(1 - u * u)
    np.testing.assert_array_equal(grads(T.asin, u)[0], g * root)
    np.testing.assert_array_equal(grads(T.acos, u)[0], g * -root)
    np.testing.assert_array_equal(grads(T.asinh, a)[0], g * (1 / np.sqrt(a * a + 1)))
    np.testing.assert_array_equal(grads(T.acosh, p + 1)[0], g * (1 / np.sqrt((p + 1) * (p + 1) - 1)))
    np.testing.assert_array_equal(grads(T.log10, p)[0], g / (p * 2.3025850929940456))
    recip = 1 / (b * b + a * a)
    grad_a, grad_b = grads(T.atan2, a, b)
    np.testing.assert_array_equal(grad_a, g * b * recip)
    np.testing.assert_array_equal(grad_b, g * -a * recip)


def test_float16_huber_and_bce_with_logits_losses_as_pytorchs_kernels(T):
    """float16 losses: huber's kernel computes each loss in float32 from the exact difference and rounds once
    (in float16 ops a third were a unit off); binary_cross_entropy_with_logits is PyTorch's (1 - y) x - log σ(x)
    in float16 ops, log σ(x) rounded once (a tenth were off where softplus(-x) was computed in float16)."""
    F = _functional(T)
    rng = np.random.default_rng(13)
    a = (rng.standard_normal(4000) * 2).astype(np.float16)
    b = (rng.standard_normal(4000) * 2).astype(np.float16)
    loss = F.huber_loss(T.tensor(a), T.tensor(b), reduction="none", delta=0.7).numpy()
    z = np.abs(a.astype(np.float32) - b.astype(np.float32))
    np.testing.assert_array_equal(loss, np.where(z < 0.7, 0.5 * z * z, 0.7 * (z - 0.35)).astype(np.float16))
    y = np.clip(b / 4 + 0.5, 0, 1).astype(np.float16)
    loss = F.binary_cross_entropy_with_logits(T.tensor(a), T.tensor(y), reduction="none").numpy()
    wide = a.astype(np.float32)
    log_sigmoid = (np.minimum(wide, 0) - np.log1p(np.exp(-np.abs(wide)))).astype(np.float16)
    np.testing.assert_array_equal(loss, (np.float16(1) - y) * a - log_sigmoid)


def test_float16_logaddexp_gradient_is_pytorchs_quotient(T):
    """logaddexp's backward is PyTorch's g / (1 + e^(y - x)): σ(x - y) · g was a unit off in a third of the
    float16 gradients (a running log-sum of decays merged step by step)."""
    rng = np.random.default_rng(14)
    a = (rng.standard_normal(4000) * 2).astype(np.float16)
    b = (rng.standard_normal(4000) * 2).astype(np.float16)
    g = rng.standard_normal(4000).astype(np.float16)
    x, y = T.tensor(a, requires_grad=True), T.tensor(b, requires_grad=True)
    grad_x, grad_y = T.autograd.grad(T.logaddexp(x, y), (x, y), T.tensor(g))

    def exp16(v):
        return np.exp(v.astype(np.float32)).astype(np.float16)

    np.testing.assert_array_equal(grad_x.numpy(), g / (exp16(b - a) + np.float16(1)))
    np.testing.assert_array_equal(grad_y.numpy(), g / (exp16(a - b) + np.float16(1)))


def test_a_number_to_a_tensor_power_differentiates_with_the_numbers_own_log(T):
    """d(c ** y)/dy = c ** y · ln c with ln c of the number, as PyTorch's pow_backward_exponent: ln of c
    rounded to y's dtype first put nearly every float32 gradient of 0.9 ** t a unit or more off (float16 ones
    several units); and 0 where c = 0 and y >= 0."""
    import math
    rng = np.random.default_rng(15)
    t = rng.uniform(-4, 4, 3000).astype(np.float32)
    g = rng.standard_normal(3000).astype(np.float32)
    leaf = T.tensor(t, requires_grad=True)
    z = 0.9 ** leaf
    (grad,) = T.autograd.grad(z, leaf, T.tensor(g))
    assert z.grad_fn.name() == "PowBackward2"
    np.testing.assert_array_equal(grad.numpy(), g * (z.detach().numpy() * np.float32(math.log(0.9))))
    half = T.tensor(t.astype(np.float16), requires_grad=True)
    z = 0.9 ** half
    (grad,) = T.autograd.grad(z, half, T.tensor(g.astype(np.float16)))
    log_c = (z.detach().numpy().astype(np.float32) * np.float32(math.log(0.9))).astype(np.float16)
    np.testing.assert_array_equal(grad.numpy(), g.astype(np.float16) * log_c)
    leaf = T.tensor([-1.0, -0.0, 0.0, 0.5], requires_grad=True)
    (grad,) = T.autograd.grad((0.0 ** leaf).sum(), leaf)
    np.testing.assert_array_equal(grad.numpy(), [-np.inf, 0, 0, 0])
