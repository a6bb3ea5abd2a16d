"""The elementwise family and arithmetic's functional forms: gradients against finite
differences (float64, drawn shapes, first and second order), and values, gradients and
dtypes against PyTorch, integer inputs included."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import autograd
from tests.ops_reference import compare, raises_like
from tests.test_ops import _run, arrays, broadcast_pair, leaf, unary

INTEGERS = (-2.0, -1.0, 0.0, 1.0, 2.0)
HALVES = (-1.5, -0.5, 0.5, 1.5)


@st.composite
def quotient_pair(draw):
    """x, y with x / y safely between two integers (fmod, remainder and rounded division jump there)."""
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, max_side=3))
    x = draw(arrays(shapes.input_shapes[0], 0.1, 0.9)) * draw(st.sampled_from([1, -1])) + draw(st.sampled_from([0, 3]))
    y = draw(arrays(shapes.input_shapes[1], 1.1, 2.0)) * draw(st.sampled_from([1, -1]))
    x = np.where(np.abs(np.abs(x) - 3.0) < 0.05, 3.2, x)
    ratio = np.abs(x / y)
    if np.any(np.abs(ratio - np.round(ratio)) < 0.05):  # too near a jump: move x a little
        x = x + 0.07 * np.sign(y.sum() or 1.0)
    return [leaf(x), leaf(y)]


@st.composite
def triple(draw):
    shapes = draw(hnp.mutually_broadcastable_shapes(num_shapes=3, min_dims=0, max_dims=3, max_side=3))
    return [leaf(draw(arrays(shape))) for shape in shapes.input_shapes]


CASES = {
    "Log2": (unary(0.2, 3.0), autograd.log2),
    "Log10": (unary(0.2, 3.0), lambda x: x.log10()),
    "Log1p": (unary(-0.8, 3.0), autograd.log1p),
    "Exp2": (unary(), lambda x: x.exp2()),
    "Expm1": (unary(), autograd.expm1),
    "Logit": (unary(0.1, 0.9), autograd.logit),
    "Sinh": (unary(), autograd.sinh),
    "Cosh": (unary(), lambda x: x.cosh()),
    "Tan": (unary(-1.2, 1.2), autograd.tan),
    "Asin": (unary(-0.9, 0.9), autograd.asin),
    "Acos": (unary(-0.9, 0.9), lambda x: x.acos()),
    "Atan": (unary(), autograd.arctan),
    "Asinh": (unary(), autograd.asinh),
    "Acosh": (unary(1.2, 3.0), autograd.acosh),
    "Atanh": (unary(-0.9, 0.9), lambda x: x.atanh()),
    "Erfinv": (unary(-0.9, 0.9), autograd.erfinv),
    "Rsqrt": (unary(0.3, 3.0), autograd.rsqrt),
    "Reciprocal": (unary(0.3, 3.0), lambda x: x.reciprocal()),
    "Rounding": (unary(kinks=INTEGERS + HALVES), lambda x: x.floor() + x.ceil() * x + autograd.round(x) + x.trunc()
                 + x.sgn() + autograd.round(x * 10, decimals=-1)),
    "Frac": (unary(kinks=INTEGERS), lambda x: x.frac() * x),
    "Fmod": (quotient_pair(), autograd.fmod),
    "Remainder": (quotient_pair(), lambda x, y: x.remainder(y)),
    "ModuloByNumber": (unary(0.2, 1.8), lambda x: x % 2.0 + autograd.fmod(x, -2.5) + x.remainder(-3)),
    "RoundedDiv": (quotient_pair(), lambda x, y: autograd.div(x, y, rounding_mode="floor") * x
                   + autograd.div(x, y, rounding_mode="trunc") * y),
    "Atan2": (broadcast_pair(0.2, 2.0), autograd.atan2),
    "Hypot": (broadcast_pair(0.2, 2.0), lambda x, y: x.hypot(-y)),
    "LogAddExp": (broadcast_pair(-30.0, 30.0), autograd.logaddexp),
    "LogAddExp2": (broadcast_pair(), autograd.logaddexp2),
    "Xlogy": (broadcast_pair(0.2, 3.0), autograd.xlogy),
    "NanToNum": (unary(), lambda x: autograd.nan_to_num(x * x)),
    "Lerp": (triple(), autograd.lerp),
}

COMPOSITES = {
    "add_alpha": (broadcast_pair(), lambda x, y: autograd.add(x, y, alpha=2.5)),
    "sub_alpha": (broadcast_pair(), lambda x, y: autograd.sub(x, other=y, alpha=-0.5)),
    "rsub": (broadcast_pair(), lambda x, y: autograd.rsub(x, y, alpha=3)),
    "div": (broadcast_pair(0.5, 2.0), lambda x, y: autograd.div(x, y)),
    "pow_number_base": (unary(), lambda x: autograd.pow(2.0, x)),
    "float_power": (unary(0.5, 2.0), lambda x: autograd.float_power(x, 2.5)),
    "logit": (unary(0.1, 0.9), lambda x: autograd.logit(x) + autograd.logit(x, eps=0.05)),
    "copysign": (broadcast_pair(0.2, 2.0), lambda x, y: autograd.copysign(x, -y)),
    "lerp_number": (broadcast_pair(), lambda x, y: x.lerp(y, 0.75) + autograd.lerp(x, y, 0.25)),
    "deg2rad": (unary(), lambda x: autograd.deg2rad(x) * autograd.rad2deg(x)),
}


@pytest.mark.parametrize("name", sorted(CASES) + sorted(COMPOSITES))
@given(data=st.data())
def test_gradient_matches_finite_differences(name, data):
    tensors, fn, *_ = _run({**CASES, **COMPOSITES}[name], data)
    assert autograd.gradcheck(fn, tensors)


SECOND_ORDER = ["Log2", "Log1p", "Exp2", "Expm1", "Sinh", "Cosh", "Tan", "Asin", "Acos", "Atan", "Asinh", "Atanh",
                "Erfinv", "Rsqrt", "Reciprocal", "Atan2", "Hypot", "LogAddExp", "LogAddExp2", "Xlogy", "Lerp"]


@pytest.mark.parametrize("name", SECOND_ORDER)
@settings(max_examples=10)  # 21 ops: fewer draws each keeps the file quick
@given(data=st.data())
def test_second_derivatives_match_finite_differences(name, data):
    tensors, fn, *_ = _run(CASES[name], data)
    assert autograd.gradgradcheck(fn, tensors)


def test_log1p_and_expm1_are_exact_for_tiny_arguments():
    tiny = autograd.tensor([1e-20, -1e-18, 1e-300], dtype=np.float64)
    np.testing.assert_array_equal(autograd.log1p(tiny).numpy(), tiny.numpy())
    np.testing.assert_array_equal(autograd.expm1(tiny).numpy(), tiny.numpy())


def test_erfinv_inverts_erf():
    # beyond |x| = 4, erf(x) is 1 - 1e-8 and its last bit moves the inverse by more than 1e-9; y is math.erf's
    # (correctly rounded), as the inverse is accurate on its own, not only against autograd.erf's roundings
    x = np.linspace(-4, 4, 1001)
    y = autograd.tensor([math.erf(v) for v in x], dtype=np.float64)
    np.testing.assert_allclose(autograd.erfinv(y).numpy(), x, rtol=1e-9, atol=1e-12)


rng = np.random.default_rng(0)
U = rng.uniform(0.1, 0.9, (3, 4))
Y = np.where(np.abs(w := rng.uniform(-2, 2, (3, 4))) < 0.2, 0.5, w)
INTS = rng.integers(-5, 6, (3, 4))
DIVISORS = rng.integers(1, 4, 4) * rng.choice([-1, 1], 4)
SPECIAL = np.array([0.0, -1.0, 1.0, 2.0, np.inf, -np.inf, np.nan])

UNARY = ["log2", "log10", "log1p", "exp2", "expm1", "sinh", "cosh", "tan", "asin", "acos", "atan", "asinh", "atanh",
         "arcsin", "arccos", "arctan", "arcsinh", "arctanh", "erfinv", "rsqrt", "reciprocal", "frac", "logit",
         "deg2rad", "rad2deg", "absolute", "negative", "neg", "positive"]
ROUNDING = ["floor", "ceil", "trunc", "fix", "round", "sgn"]
BINARY = ["atan2", "arctan2", "fmod", "remainder", "hypot", "logaddexp", "logaddexp2", "xlogy", "copysign", "add",
          "sub", "subtract", "mul", "multiply", "div", "divide", "true_divide", "pow", "float_power"]

TORCH_CASES = {
    **{f"{name}_function": (lambda m, x, name=name: getattr(m, name)(x), U) for name in UNARY},
    **{f"{name}_method": (lambda m, x, name=name: getattr(x, name)(), U) for name in UNARY},
    **{f"{name}_ints": (lambda m, x, name=name: getattr(m, name)(x), INTS) for name in ("log2", "exp2", "sinh", "atan",
                                                                                        "expm1", "reciprocal")},
    **{f"{name}_rounding": (lambda m, x, name=name: getattr(m, name)(x.detach() * 3.7), Y) for name in ROUNDING},
    **{f"{name}_rounding_ints": (lambda m, x, name=name: getattr(m, name)(x), INTS) for name in ROUNDING},
    **{f"{name}_binary": (lambda m, x, y, name=name: getattr(m, name)(x, y), U, Y) for name in BINARY},
    **{f"{name}_broadcast": (lambda m, x, y, name=name: getattr(x, name)(y[0]), U, Y)
       for name in BINARY if name not in ("add", "sub", "mul", "div", "pow")},
    **{f"{name}_ints": (lambda m, x, y, name=name: getattr(m, name)(x, y), INTS, DIVISORS)
       for name in ("fmod", "remainder", "div", "true_divide", "floor_divide", "mul", "add", "sub")},
    "addcmul": (lambda m, x, y: m.addcmul(x, y, y, value=0.5), U, Y),
    "addcdiv": (lambda m, x, y: x.addcdiv(y, x.exp(), value=-2), U, Y),
    "round_decimals": (lambda m, x: m.round(x.detach() * 3.7, decimals=2), Y),
    "round_halves": (lambda m: m.round(m.tensor([0.5, 1.5, 2.5, -0.5])),),
    "div_floor": (lambda m, x, y: m.div(x.detach() * 5, y, rounding_mode="floor"), U, Y),
    "div_trunc": (lambda m, x, y: m.div(x.detach() * 5, y.detach(), rounding_mode="trunc"), U, Y),
    "div_floor_ints": (lambda m, x, y: m.div(x, y, rounding_mode="floor"), INTS, DIVISORS),
    "div_trunc_ints": (lambda m, x, y: m.div(x, y, rounding_mode="trunc"), INTS, DIVISORS),
    "floor_divide_operator": (lambda m, x, y: x // y, INTS, DIVISORS),
    "mod_operator": (lambda m, x, y: x % y, INTS, DIVISORS),
    "mod_operator_float": (lambda m, x, y: x % y, U, Y),
    "rmod_operator": (lambda m, y: 7 % y, DIVISORS),
    "add_alpha": (lambda m, x, y: m.add(x, y, alpha=2), U, Y),
    "add_keywords": (lambda m, x, y: m.add(input=x, other=y), U, Y),
    "add_ints_alpha": (lambda m, x, y: m.add(x, y, alpha=2), INTS, DIVISORS),
    "sub_number_alpha": (lambda m, x: m.sub(x, 1, alpha=3), U),
    "rsub": (lambda m, x, y: m.rsub(x, y, alpha=2), U, Y),
    "pow_number_base": (lambda m, y: m.pow(2, y), Y),
    "pow_int_tensor": (lambda m, x: m.pow(x, 2), INTS),
    "lerp_number": (lambda m, x, y: m.lerp(x, y, 0.3), U, Y),
    "lerp_far_weight": (lambda m, x, y: x.lerp(y, 0.7), U, Y),
    "lerp_tensor_weight": (lambda m, x, y, w: m.lerp(x, y, w), U, Y, U[0]),
    "xlogy_zero": (lambda m, x, y: m.xlogy(x * 0, y), U, U),
    "xlogy_number": (lambda m, x: m.xlogy(x, 3.0), U),
    "nan_to_num": (lambda m, x: m.nan_to_num(x), SPECIAL),
    "nan_to_num_values": (lambda m, x: x.nan_to_num(nan=2.0, posinf=1.0, neginf=-1.0), SPECIAL),
    "heaviside": (lambda m, x: m.heaviside(x.detach(), m.tensor(0.5, dtype=m.float64)), SPECIAL),
    "logaddexp_extremes": (lambda m, x, y: m.logaddexp(x * 1000, y * 1000), U, Y),
    "clip": (lambda m, y: m.clip(y, -1, 1), Y),
    "logit_eps": (lambda m, x: m.logit(x, eps=0.2), U),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(TORCH_CASES))
def test_matches_torch(name):
    fn, *inputs = TORCH_CASES[name]
    with np.errstate(all="ignore"):
        # integer inputs compute in float32 (the default dtype), where libraries differ in the last bit
        compare(fn, *inputs, rtol=1e-6 if name.endswith("_ints") else 1e-10 if "erfinv" in name else 1e-12)


@pytest.mark.torch
def test_bad_rounding_mode_is_refused_as_in_torch():
    error = raises_like(lambda m, x: m.div(x, 2, rounding_mode="up"), U)
    assert "rounding_mode" in str(error)


class _Functions:
    """The registered functional spellings (autograd/__init__.py may still bind older positional
    forwarders under some of these names; this reaches the registered ones)."""

    def __getattr__(self, name):
        from autograd.ops.names import FUNCTIONS

        return FUNCTIONS[name] if name in FUNCTIONS else getattr(autograd, name)


FUNCTION_CASES = {
    "exp_keywords": (lambda m, x: m.exp(input=x), Y),
    "abs": (lambda m, x: m.abs(x), Y),
    "square": (lambda m, x: m.square(x), Y),
    "sum_keywords": (lambda m, x: m.sum(x, dim=1, keepdim=True), Y),
    "sum_dtype": (lambda m, x: m.sum(x, dtype=m.float64), INTS),
    "mean_dims": (lambda m, x: m.mean(input=x, dim=(0, 1)), Y),
    "var_correction": (lambda m, x: m.var(x, dim=1, correction=0), Y),
    "std": (lambda m, x: m.std(x, 0, keepdim=True), Y),
    "max_dim": (lambda m, x: m.max(x, dim=1), Y),
    "max_tensor": (lambda m, x, y: m.max(x, y), U, Y),
    "min_all": (lambda m, x: m.min(x), Y),
    "maximum_keywords": (lambda m, x, y: m.maximum(input=x, other=y), U, Y),
    "argmax": (lambda m, x: m.argmax(x, dim=1, keepdim=True), Y),
    "softmax_dtype": (lambda m, x: m.softmax(x, dim=-1, dtype=m.float64), Y),
    "log_softmax": (lambda m, x: m.log_softmax(x, 0), Y),
    "reshape": (lambda m, x: m.reshape(x, (4, 3)), Y),
    "flatten": (lambda m, x: m.flatten(x), Y),
    "transpose": (lambda m, x: m.transpose(x, 0, 1), Y),
    "permute": (lambda m, x: m.permute(x, (1, 0)), Y),
    "unsqueeze_squeeze": (lambda m, x: m.squeeze(m.unsqueeze(x, dim=0), 0), Y),
}


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(FUNCTION_CASES))
def test_functional_spellings_match_torch(name):
    fn, *inputs = FUNCTION_CASES[name]
    compare(lambda m, *xs: fn(_Functions() if m is autograd else m, *xs), *inputs)


@pytest.mark.parametrize("name", ["erfinv", "logaddexp", "logaddexp2"])
def test_output_may_be_changed_in_place_where_pytorch_keeps_only_inputs(name):
    """These backwards need only the inputs (as PyTorch's), so a later in-place write of the
    output is no error, and the gradient is the one of the values before it."""
    def program(torch):
        a = torch.tensor([0.3, -1.2, 0.8, 1.5], dtype=torch.float64, requires_grad=True)
        b = torch.tensor([1.1, 0.7, -0.9, 2.0], dtype=torch.float64, requires_grad=True)
        y = {"erfinv": lambda: torch.erfinv(a * 0.3), "logaddexp": lambda: torch.logaddexp(a, b),
             "logaddexp2": lambda: torch.logaddexp2(a, b)}[name]()
        y.mul_(2)
        y.sum().backward()
        return a.grad.numpy(), None if b.grad is None else b.grad.numpy()

    a_grad, b_grad = program(autograd)
    av, bv = np.array([0.3, -1.2, 0.8, 1.5]), np.array([1.1, 0.7, -0.9, 2.0])
    if name == "logaddexp":
        np.testing.assert_allclose(a_grad, 2 / (1 + np.exp(bv - av)), rtol=1e-12)
        np.testing.assert_allclose(b_grad, 2 / (1 + np.exp(av - bv)), rtol=1e-12)
    elif name == "logaddexp2":
        np.testing.assert_allclose(a_grad + b_grad, 2.0, rtol=1e-12)
    torch = pytest.importorskip("torch")
    their_a, their_b = program(torch)
    np.testing.assert_allclose(a_grad, their_a, rtol=1e-12)
    if their_b is not None:
        np.testing.assert_allclose(b_grad, their_b, rtol=1e-12)


def test_addcmul_of_integers_reads_value_as_an_integer():
    """PyTorch casts addcmul's value to the tensors' result type: 0.5 is 0 for integers, 1.7 is 1, and the result
    stays an integer tensor; with a float tensor among them the value stays 0.5."""
    t = autograd.tensor([1, 2, 3])
    assert autograd.addcmul(t, t, t, value=0.5).tolist() == [1, 2, 3]
    assert autograd.addcmul(t, t, t, value=1.7).tolist() == [2, 6, 12]
    assert autograd.addcmul(t, t, t, value=0.5).dtype == autograd.int64
    assert autograd.addcmul(t.float(), t, t, value=0.5).tolist() == [1.5, 4.0, 7.5]
    u = t.clone()
    u.addcmul_(t, t, value=0.5)
    assert u.tolist() == [1, 2, 3]
