"""The ``_foreach_*`` functions, ported from PyTorch's test/test_foreach.py (TestForeach: parity with the
per-tensor op out of place and in place over lists of mixed shapes, dtypes and layouts, a number, a list of
numbers, a 0-d tensor or a list of tensors as the second operand, scalar self for pow, addcmul/addcdiv's
scalars tensor, implicit broadcasting, empty and zero-size tensors, overlapping inputs, inf/nan, the list
errors, leaf checks and grad_fn of the in-place forms, gradients by float64 gradcheck, _foreach_norm and
_foreach_max over empty tensors, copy_ across dtypes).

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`). The
reference is PyTorch's: the per-tensor op of the same library, and, for the values, NumPy.
"""

import math

import numpy as np
import pytest

from tests.ported import close, dtype_name, raises, same, values

UNARY = ["abs", "acos", "asin", "atan", "ceil", "cos", "cosh", "erf", "erfc", "exp", "expm1", "floor", "frac",
         "lgamma", "log", "log10", "log1p", "log2", "neg", "reciprocal", "round", "rsqrt", "sigmoid", "sign", "sin",
         "sinh", "sqrt", "tan", "tanh", "trunc"]
NUMPY = {"abs": np.abs, "acos": np.arccos, "asin": np.arcsin, "atan": np.arctan, "ceil": np.ceil, "cos": np.cos,
         "cosh": np.cosh, "erf": np.vectorize(math.erf, otypes=[float]),
         "erfc": np.vectorize(math.erfc, otypes=[float]), "exp": np.exp,
         "expm1": np.expm1, "floor": np.floor, "frac": lambda a: a - np.trunc(a),
         "lgamma": np.vectorize(math.lgamma, otypes=[float]), "log": np.log, "log10": np.log10, "log1p": np.log1p,
         "log2": np.log2,
         "neg": np.negative, "reciprocal": np.reciprocal, "round": np.round, "rsqrt": lambda a: 1 / np.sqrt(a),
         "sigmoid": lambda a: 1 / (1 + np.exp(-a)), "sign": np.sign, "sin": np.sin, "sinh": np.sinh,
         "sqrt": np.sqrt, "tan": np.tan, "tanh": np.tanh, "trunc": np.trunc}
BINARY = ["add", "sub", "mul", "div", "pow", "clamp_min", "clamp_max", "maximum", "minimum"]
BOOLEAN = ("add", "mul", "div")  # the binary ops whose samples take a bool as a number


def _mixed(T, rng, low=0.1, high=0.9, grad=False):
    """A list of every layout PyTorch's samples mix: shapes of 1, 2 and 0 dims, a zero-size tensor, a
    transposed (non-contiguous) one, float32 and float64."""
    def make(shape, dtype):
        return T.tensor(rng.uniform(low, high, shape).astype(dtype), requires_grad=grad)

    return [make((3,), "float32"), make((2, 3), "float64"), make((), "float32"), make((0,), "float32"),
            make((3, 2), "float64").t(), make((2, 1, 2), "float32")]


def _same_list(got, expected, rtol=0.0):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert dtype_name(g) == dtype_name(e) and g.shape == e.shape
        if rtol:
            close(g, values(e), rtol=rtol, atol=rtol)
        else:
            same(g, values(e))


@pytest.mark.parametrize("op", UNARY)
def test_unary_parity(T, op):
    rng = np.random.default_rng(0)
    tensors = _mixed(T, rng)
    got = getattr(T, f"_foreach_{op}")(tensors)
    _same_list(got, [getattr(T, op)(t) for t in tensors])
    for g, t in zip(got, tensors):  # (1 ulp: each library's float32 functions round their own way)
        close(g, NUMPY[op](values(t).astype(np.float64)).astype(values(t).dtype), rtol=2e-6, atol=1e-7)
    copies = [t.clone() for t in tensors]
    assert getattr(T, f"_foreach_{op}_")(copies) is copies
    _same_list(copies, got)


@pytest.mark.parametrize("op", UNARY)
def test_unary_on_integers_promotes_out_of_place_and_refuses_in_place_as_the_tensor_op(T, op):
    tensors = [T.tensor([1, 4]), T.tensor([[2], [3]])]

    def outcome(fn):
        try:
            return fn()
        except RuntimeError as error:
            return "refused", str(error).split(".")[0]

    per_tensor = outcome(lambda: [getattr(T, op)(t) for t in tensors])
    foreach = outcome(lambda: getattr(T, f"_foreach_{op}")(tensors))
    if isinstance(per_tensor, tuple):
        assert isinstance(foreach, tuple) and foreach[1] == per_tensor[1]
    else:
        _same_list(foreach, per_tensor, rtol=2e-6)
    per_tensor = outcome(lambda: [getattr(t.clone(), f"{op}_")() for t in tensors])
    foreach = outcome(lambda: getattr(T, f"_foreach_{op}_")([t.clone() for t in tensors]))
    if isinstance(per_tensor, tuple):
        assert isinstance(foreach, tuple) and foreach[1] == per_tensor[1], (foreach, per_tensor)
    else:
        _same_list(foreach, per_tensor)


def test_neg_of_bool_and_sqrt_in_place_of_integers_are_refused(T):
    raises(RuntimeError, "Negation, the `-` operator, on a bool tensor is not supported", T._foreach_neg,
           [T.tensor([True, False])])
    raises(RuntimeError, "Negation, the `-` operator, on a bool tensor is not supported", T._foreach_neg_,
           [T.tensor([True, False])])
    raises(RuntimeError, "result type Float can't be cast to the desired output type", T._foreach_sqrt_,
           [T.tensor([1, 4])])
    same(T._foreach_sqrt([T.tensor([1, 4])])[0], [1.0, 2.0], "float32")


def _reference(T, op, t, other):
    """The per-tensor op PyTorch's RegularFuncWrapper calls (a number for maximum/minimum: clamp)."""
    if op in ("maximum", "minimum") and not hasattr(other, "dtype"):
        op = "clamp_min" if op == "maximum" else "clamp_max"
    return getattr(T, op)(t, other)


def _forms(T, rng, n, op):
    low = 0.5 if op in ("div", "pow") else -2.0
    return {"tensors": [T.tensor(rng.uniform(low, 2.0, (3,)).astype(np.float32)) for _ in range(n)],
            "scalars": [1.5, -0.5 if op not in ("div", "pow") else 0.5, 2, True if op in BOOLEAN else 1, 0.25, 3][:n],
            "int scalar": 2, "float scalar": 0.75, "bool scalar": True, "0-d tensor": T.tensor(1.25)}


@pytest.mark.parametrize("op", BINARY)
def test_binary_parity_in_every_form(T, op):
    """A list of float32, float64, int64, 0-d, zero-size and non-contiguous tensors against a list of
    tensors (broadcasting), a list of numbers (int, float, bool), one number and one 0-d tensor."""
    rng = np.random.default_rng(1)
    tensors = [T.tensor(rng.uniform(0.5, 2.0, (2, 3)).astype(np.float32)), T.tensor(rng.uniform(0.5, 2.0, 3)),
               T.tensor([1, 2, 3]), T.tensor(1.5), T.zeros(0, 3), T.tensor(rng.uniform(0.5, 2.0, (3, 2))).t()]
    for form, other in _forms(T, rng, len(tensors), op).items():
        if form == "bool scalar" and op not in BOOLEAN:
            continue  # (bool is no number for these in PyTorch's foreach samples either)
        if form == "0-d tensor" and op in ("pow", "clamp_min", "clamp_max"):
            continue  # (no overload in PyTorch)
        others = other if isinstance(other, list) else [other] * len(tensors)
        got = getattr(T, f"_foreach_{op}")(tensors, other)
        _same_list(got, [_reference(T, op, t, o) for t, o in zip(tensors, others)])
        # in place where the result fits the tensor (its dtype and shape; the rest: see the refusals below)
        fits = [i for i, (t, g) in enumerate(zip(tensors, got)) if g.dtype == t.dtype and g.shape == t.shape]
        targets = [tensors[i].clone() for i in fits]
        result = getattr(T, f"_foreach_{op}_")(targets, [others[i] for i in fits] if isinstance(other, list) else other)
        assert result is targets
        _same_list(targets, [got[i] for i in fits])


def test_binary_in_place_refuses_a_result_its_dtype_cannot_hold(T):
    for op, other in (("div_", 2), ("add_", 1.5), ("pow_", 0.5), ("clamp_min_", 1.5), ("maximum_", 1.5)):
        raises(RuntimeError, "result type Float can't be cast to the desired output type",
               getattr(T, f"_foreach_{op}"), [T.tensor([1, 2])], other)


@pytest.mark.parametrize("op", ["add", "sub"])
def test_alpha(T, op):
    a = [T.tensor([1.0, 2.0]), T.tensor([[3.0], [4.0]], dtype=T.float64)]
    b = [T.tensor([0.5, 0.25]), T.tensor([[1.0], [2.0]], dtype=T.float64)]
    sign = 1 if op == "add" else -1
    for got in (getattr(T, f"_foreach_{op}")(a, b, alpha=2), getattr(T, f"_foreach_{op}_")([x.clone() for x in a], b,
                                                                                            alpha=2)):
        same(got[0], [1.0 + sign * 1.0, 2.0 + sign * 0.5], "float32")
        same(got[1], [[3.0 + sign * 2.0], [4.0 + sign * 4.0]], "float64")
    if op == "add":  # (PyTorch's one overload of a 0-d tensor with alpha)
        got = T._foreach_add([T.tensor([1.0, 2.0])], T.tensor(3.0), alpha=0.5)
        same(got[0], [2.5, 3.5], "float32")


def test_pow_with_a_number_as_self(T):
    exponents = [T.tensor([1, 2]), T.tensor([0.5, 2.0]), T.tensor(3.0, dtype=T.float64)]
    for base in (2, 2.0):
        got = T._foreach_pow(base, exponents)
        _same_list(got, [T.pow(base, e) for e in exponents])
    same(T._foreach_pow(2, [T.tensor([1, 2])])[0], [2, 4], "int64")
    same(T._foreach_pow(2.0, [T.tensor([1, 2])])[0], [2.0, 4.0], "float32")
    x = T.tensor([0.5, 1.5], requires_grad=True)
    T._foreach_pow(3.0, [x])[0].sum().backward()
    close(x.grad, 3.0 ** np.array([0.5, 1.5]) * math.log(3.0))


@pytest.mark.parametrize("op", ["addcmul", "addcdiv"])
def test_pointwise_scalars_in_every_form_and_their_errors(T, op):
    rng = np.random.default_rng(2)
    n = 3
    x, t1, t2 = ([T.tensor(rng.uniform(0.5, 2.0, (2, 2)).astype(np.float32)) for _ in range(n)] for _ in range(3))
    scalars = [1.0, -2.0, 0.5]
    fn, fn_ = getattr(T, f"_foreach_{op}"), getattr(T, f"_foreach_{op}_")
    expected = [getattr(T, op)(a, b, c, value=v) for a, b, c, v in zip(x, t1, t2, scalars)]
    for value in (scalars, T.tensor(scalars)):
        _same_list(fn(x, t1, t2, value), expected)
        copies = [a.clone() for a in x]
        assert fn_(copies, t1, t2, value) is copies
        _same_list(copies, expected)
    _same_list(fn(x, t1, t2, value=2.0), [getattr(T, op)(a, b, c, value=2.0) for a, b, c in zip(x, t1, t2)])
    raises(RuntimeError, "Expected packed scalar Tensor to be of dimension 1. Got 0 instead.", fn, x, t1, t2,
           T.tensor(1.0))
    raises(RuntimeError, "Expected length of scalars to match input of length 3 but got 2 instead.", fn, x, t1, t2,
           T.tensor(scalars)[:2])


def test_pointwise_scalars_tensor_must_be_contiguous(T):
    x = [T.ones(2), T.ones(2)]
    raises(RuntimeError, "Expected scalars to be contiguous.", T._foreach_addcmul, x, x, x,
           T.tensor([[0.0, 1.0], [2.0, 3.0]])[:, 1])


@pytest.mark.parametrize("op", ["addcmul", "addcdiv"])
def test_pointwise_broadcasts_each_triple(T, op):
    rng = np.random.default_rng(3)
    n = 4
    x = [T.tensor(rng.uniform(0.5, 2.0, (n, n))) for _ in range(n)]
    t1 = [T.tensor(rng.uniform(0.5, 2.0, (n - i, 1))) for i in range(n)]
    t2 = [T.tensor(rng.uniform(0.5, 2.0, (1, n - i))) for i in range(n)]
    for i in (1, 2):  # sizes n - i that neither fit n nor are 1: refused, as by the per-tensor op
        raises(RuntimeError, None, getattr(T, f"_foreach_{op}"), x[i:i + 1], t1[i:i + 1], t2[i:i + 1])
    got = getattr(T, f"_foreach_{op}")(x[::3], t1[::3], t2[::3], value=0.5)  # sizes n and 1
    for g, a, b, c in zip(got, x[::3], t1[::3], t2[::3]):
        ratio = values(b) * values(c) if op == "addcmul" else values(b) / values(c)
        close(g, values(a) + 0.5 * ratio, rtol=1e-12, atol=1e-12)


def test_lerp_with_a_weight_a_weight_list_and_weight_tensors(T):
    start = [T.tensor([0.0, 1.0]), T.tensor([[2.0], [4.0]], dtype=T.float64)]
    end = [T.tensor([1.0, 3.0]), T.tensor([[0.0], [8.0]], dtype=T.float64)]
    same(T._foreach_lerp(start, end, 0.25)[0], [0.25, 1.5], "float32")
    same(T._foreach_lerp(start, end, 0.25)[1], [[1.5], [5.0]], "float64")
    same(T._foreach_lerp(start, end, [T.tensor([0.5, 1.0]), T.tensor([[0.0], [0.5]], dtype=T.float64)])[1],
         [[2.0], [6.0]], "float64")
    copies = [s.clone() for s in start]
    assert T._foreach_lerp_(copies, end, 0.5) is copies
    same(copies[0], [0.5, 2.0], "float32")


def test_add_a_number_to_empty_tensors(T):
    for tensors in ([T.randn(0)], [T.empty_strided((0, 1), (0, 0))]):
        got = T._foreach_add(tensors, 1)
        _same_list(got, tensors)
        assert T._foreach_add_(tensors, 1) is tensors
        _same_list(got, tensors)
        T._foreach_mul_(tensors, 1)
        assert tensors[0].shape == got[0].shape


def test_zero_size_tensors_among_others(T):
    tensors = [T.zeros(0), T.ones(2, 0), T.tensor([1.0, 4.0])]
    for got in (T._foreach_sqrt(tensors), T._foreach_mul(tensors, 2.0), T._foreach_add(tensors, tensors)):
        assert [g.shape for g in got] == [(0,), (2, 0), (2,)]
    same(T._foreach_sqrt(tensors)[2], [1.0, 2.0])
    same(T._foreach_add(tensors, tensors)[2], [2.0, 8.0])


def test_a_number_over_an_expanded_tensor(T):
    tensors = [T.ones(1, 1).expand(2, 1, 3)]
    _same_list(T._foreach_add(tensors, 1), [t + 1 for t in tensors])
    same(T._foreach_add(tensors, 1)[0], np.full((2, 1, 3), 2.0))


def test_in_place_on_an_expanded_tensor_is_refused(T):
    raises(RuntimeError, "unsupported operation: more than one element of the written-to tensor refers to a single "
                         "memory location", T._foreach_add_, [T.ones(1, 1).expand(2, 1, 3)], 1)


def test_a_number_over_tensors_of_different_dtypes(T):
    got = T._foreach_add([T.tensor([1.1]), T.tensor([1])], 1)
    close(got[0], [2.1])
    same(got[1], [2], "int64")
    assert dtype_name(got[0]) == "float32"
    got = T._foreach_mul([T.tensor([1.5]), T.tensor([3]), T.tensor([True])], 2.5)
    _same_list(got, [T.tensor([3.75]), T.tensor([7.5]), T.tensor([2.5])])


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "pow", "clamp_min", "clamp_max", "maximum", "minimum"])
def test_inf_and_nan(T, op):
    inf, nan = float("inf"), float("nan")
    lhs = [T.tensor([inf]), T.tensor([-inf]), T.tensor([nan]), T.tensor([nan])]
    rhs = [T.tensor([-inf]), T.tensor([inf]), T.tensor([inf]), T.tensor([nan])]
    got = getattr(T, f"_foreach_{op}")(lhs, rhs)
    with np.errstate(all="ignore"):
        numpy_op = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "pow": np.power,
                    "clamp_min": np.maximum, "clamp_max": np.minimum, "maximum": np.maximum, "minimum": np.minimum}[op]
        for g, a, b in zip(got, lhs, rhs):
            same(g, numpy_op(values(a), values(b)), "float32")
    copies = [t.clone() for t in lhs]
    getattr(T, f"_foreach_{op}_")(copies, rhs)
    _same_list(copies, got)


@pytest.mark.parametrize("op", ["add", "mul", "div", "maximum"])
def test_tensors_of_any_layout(T, op):
    """PyTorch's slow path: a 0-stride (expanded) second operand, a transposed one, non-contiguous and
    sliced tensors; each as the per-tensor op."""
    rng = np.random.default_rng(4)
    first = T.tensor(rng.uniform(0.5, 2.0, (4, 4)).astype(np.float32))
    pairs = [(first, T.tensor(rng.uniform(0.5, 2.0, 1).astype(np.float32)).expand_as(first)),
             (T.zeros(4, 4), T.ones(4, 4).t()),
             (T.tensor(rng.uniform(0.5, 2.0, (5, 2, 1, 6)).astype(np.float32))[..., ::2],
              T.tensor(rng.uniform(0.5, 2.0, (5, 2, 1, 21)).astype(np.float32))[:, :, :, ::7])]
    for a, b in pairs:
        expected = getattr(T, op)(a, b)
        _same_list(getattr(T, f"_foreach_{op}")([a], [b]), [expected])
        target = [a.clone()]
        getattr(T, f"_foreach_{op}_")(target, [b])
        _same_list(target, [expected])


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_list_errors(T, op):
    fn, fn_ = getattr(T, f"_foreach_{op}"), getattr(T, f"_foreach_{op}_")
    for f in (fn, fn_):
        raises(RuntimeError, "Tensor list must have at least one tensor.", f, [], [])
        raises(RuntimeError, "Tensor list must have same number of elements as scalar list.", f, [T.tensor([1.0])], [])
        one, two = [T.tensor([1.0])], [T.tensor([1.0]), T.tensor([1.0])]
        raises(RuntimeError, "Tensor lists must have the same number of tensors, got 1 and 2", f, one, two)
        raises(RuntimeError, "Tensor lists must have the same number of tensors, got 2 and 1", f, two, one)
        raises(RuntimeError, "Tensor list must have same number of elements as scalar list", f, two, [1.0])
    raises(RuntimeError, "Subtraction, the `-` operator, with two bool tensors", T._foreach_sub, [T.tensor([True])],
           [T.tensor([False])])


@pytest.mark.parametrize("op", ["add", "mul"])
def test_a_tensor_as_the_number_must_be_0d(T, op):
    tensors = [T.ones(2, 2), T.ones(2, 2)]
    raises(RuntimeError, "scalar tensor expected to be 0 dim but it has 1 dimensions and 2 elements",
           getattr(T, f"_foreach_{op}"), tensors, T.tensor([1.0, 1.0]))


def test_sizes_that_do_not_broadcast_are_refused_with_pytorchs_words(T, request):
    tensors1 = [T.zeros(10, 10) for _ in range(3)]
    tensors2 = [T.ones(11, 11) for _ in range(3)]
    raises(RuntimeError, None, T._foreach_add, tensors1, tensors2)
    for fn in (T._foreach_add, T._foreach_add_):
        raises(RuntimeError, r"The size of tensor a \(10\) must match the size of tensor b \(11\) at non-singleton "
                             r"dimension 1", fn, tensors1, tensors2)


def test_in_place_on_a_leaf_that_requires_grad_is_refused_and_clones_get_their_own_grad_fn(T):
    first, second = T.tensor([1.0, 2.0]), T.tensor([3.0, 4.0])
    first.requires_grad_(True)
    raises(RuntimeError, "a leaf Variable that requires grad", T._foreach_mul_, [first, second], 2.0)
    second.requires_grad_(True)
    raises(RuntimeError, "a leaf Variable that requires grad", T._foreach_mul_, [first, second], 2.0)
    leaves = [first.detach().clone().requires_grad_(True), second.detach().clone()]
    tensors = [t.clone() for t in leaves]
    T._foreach_mul_(tensors, 2.0)
    assert tensors[0].grad_fn is not None and tensors[1].grad_fn is None
    tensors[0].sum().backward()
    same(leaves[0].grad, [2.0, 2.0])


def test_backward_through_one_output_reaches_its_input_only(T):
    inputs = [T.tensor([1.0, 2.0], requires_grad=True), T.tensor([3.0, 4.0], requires_grad=True)]
    first, _ = T._foreach_exp(inputs)
    first.backward(T.ones_like(first))
    close(inputs[0].grad, np.exp([1.0, 2.0]))
    assert inputs[1].grad is None


GRAD_CASES = [(op, ()) for op in UNARY if op not in ("ceil", "floor", "round", "sign", "trunc", "frac")] + [
    ("add", ("tensors",)), ("add", ("scalar",)), ("sub", ("tensors",)), ("mul", ("tensors",)), ("mul", ("scalars",)),
    ("div", ("tensors",)), ("div", ("scalar",)), ("pow", ("tensors",)), ("pow", ("scalars",)),
    ("maximum", ("tensors",)), ("minimum", ("tensors",)), ("clamp_min", ("scalar",)), ("clamp_max", ("scalars",)),
    ("addcmul", ("tensors", "tensors")), ("addcdiv", ("tensors", "tensors")), ("lerp", ("tensors", "scalar"))]


@pytest.mark.parametrize("op,arguments", GRAD_CASES, ids=lambda case: str(case))
@pytest.mark.parametrize("inplace", [False, True])
def test_gradients_by_gradcheck(T, op, arguments, inplace):
    """PyTorch's test_autodiff: float64 gradcheck of the out-of-place form and of the in-place form applied to
    clones, values in [0.5, 1) where the function needs them positive."""
    rng = np.random.default_rng(5)
    shapes = [(3,), (2, 2), ()]
    n = len(shapes)
    tensors = tuple(T.tensor(rng.uniform(0.5, 1.0, s), requires_grad=True) for s in shapes)
    extra = []
    for kind in arguments:
        if kind == "tensors":  # distinct from the inputs: maximum/minimum have no ties
            extra.append([T.tensor(rng.uniform(1.1, 1.6, s) * rng.choice([-1, 1], s) if op != "pow"
                                   else rng.uniform(1.1, 1.6, s)) for s in shapes])
        elif kind == "scalars":
            extra.append([0.7, 1.3, 2.0][:n])
        else:
            extra.append(0.75)
    if inplace:
        def fn(*xs):
            clones = [x.clone() for x in xs]
            getattr(T, f"_foreach_{op}_")(clones, *extra)
            return tuple(clones)
    else:
        def fn(*xs):
            return getattr(T, f"_foreach_{op}")(list(xs), *extra)
    assert T.autograd.gradcheck(fn, tensors)


def test_norm(T):
    tensors = [T.tensor([3.0, -4.0]), T.zeros(0), T.tensor([[1.0, -2.0], [2.0, 4.0]], dtype=T.float64)]
    for ord, numpy_ord in ((1, 1), (2, 2), (3, 3), (0.5, 0.5)):
        got = T._foreach_norm(tensors, ord)
        for g, t in zip(got, tensors):
            assert g.shape == () and dtype_name(g) == dtype_name(t)
            close(g, np.sum(np.abs(values(t)) ** numpy_ord) ** (1 / numpy_ord), 1e-6, 1e-6)
    got = T._foreach_norm(tensors[::2], float("inf"))
    same(got[0], 4.0, "float32")
    same(got[1], 4.0, "float64")
    raises(RuntimeError, "_foreach_norm cannot compute the infinity norm on an empty tensor because the operation does "
                         "not have an identity", T._foreach_norm, tensors, float("inf"))
    half = T._foreach_norm([T.tensor([3.0, 4.0], dtype=T.float16)], 2, dtype=T.float32)
    same(half[0], 5.0, "float32")
    same(T._foreach_norm([T.tensor([3 + 4j, 0j])])[0], 5.0, "float32")
    raises(RuntimeError, "Expected a floating point or complex tensor as input", T._foreach_norm, [T.tensor([3, 4])])


def test_norm_gradient(T):
    rng = np.random.default_rng(6)
    tensors = tuple(T.tensor(rng.uniform(0.5, 1.5, s) * rng.choice([-1, 1], s), requires_grad=True)
                    for s in ((3,), (2, 2), ()))
    for ord in (1, 2, 3, float("inf")):
        assert T.autograd.gradcheck(lambda *xs, o=ord: T._foreach_norm(list(xs), o), tensors)
    x = T.tensor([3.0, -4.0], requires_grad=True)
    T._foreach_norm([x])[0].backward()
    close(x.grad, [0.6, -0.8])


def test_max(T):
    got = T._foreach_max([T.tensor([3.0, 0.0, 4.0]), T.tensor([[1, 5], [2, 3]]), T.tensor(-2.0, dtype=T.float64)])
    same(got[0], 4.0, "float32")
    same(got[1], 5, "int64")
    same(got[2], -2.0, "float64")
    raises(RuntimeError, "cannot compute the maximum of an empty tensor|max over zero elements", T._foreach_max,
           [T.ones(2), T.zeros(0)])


def test_copy_across_dtypes(T):
    targets = [T.zeros(2), T.zeros(2, dtype=T.int64), T.zeros(2, dtype=T.float16), T.zeros(1, 2, dtype=T.float64)]
    sources = [T.tensor([1.5, 2.5], dtype=T.float64), T.tensor([1.7, -2.5]), T.tensor([1, 3]), T.tensor([0.25, 4.0])]
    expected = [T.empty_like(t).copy_(s) for t, s in zip(targets, sources)]
    assert T._foreach_copy_(targets, sources) is targets
    _same_list(targets, expected)
    same(targets[1], [1, -2], "int64")
    same(targets[3], [[0.25, 4.0]], "float64")


def test_zero_and_clone(T):
    tensors = [T.tensor([1.0, 2.0]), T.tensor([[3]])]
    clones = T._foreach_clone(tensors)
    assert all(c is not t for c, t in zip(clones, tensors))
    assert T._foreach_zero_(tensors) is tensors
    same(tensors[0], [0.0, 0.0], "float32")
    same(tensors[1], [[0]], "int64")
    same(clones[0], [1.0, 2.0], "float32")


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_and_minimum_with_a_number_share_the_gradient_of_a_tie(T, op):
    """maximum(x, c) as PyTorch's: a tie with the number gives the tensor half of dL/dy (clamp_min would give
    all of it; PyTorch has no derivative for the in-place form); the dtype is clamp's (an int tensor and a
    float give float32)."""
    x = T.tensor([2.0, 1.0, 3.0], requires_grad=True)
    y = getattr(T, f"_foreach_{op}")([x], 2.0)
    y[0].backward(T.tensor([1.0, 10.0, 100.0]))
    same(x.grad, [0.5, 0.0, 100.0] if op == "maximum" else [0.5, 10.0, 0.0])
    got = getattr(T, f"_foreach_{op}")([T.tensor([1, 2, 3]), T.tensor([1.0, float("nan")])], 1.5)
    same(got[0], [1.5, 2.0, 3.0] if op == "maximum" else [1.0, 1.5, 1.5], "float32")
    same(got[1], [1.5, float("nan")] if op == "maximum" else [1.0, float("nan")], "float32")


def test_powsum(T):
    tensors = [T.zeros(0), T.tensor([1.0, -2.0]), T.tensor([[3.0]], dtype=T.float64)]
    got = T._foreach_powsum(tensors, 3)
    same(got[0], 0.0, "float32")
    same(got[1], 9.0, "float32")
    same(got[2], 27.0, "float64")
    same(T._foreach_powsum([T.tensor([1.0, -2.0], dtype=T.float16)], 2, dtype=T.float32)[0], 5.0, "float32")
    raises(NotImplementedError, "not implemented for 'Long'", T._foreach_powsum, [T.tensor([1, -2])], 2)
