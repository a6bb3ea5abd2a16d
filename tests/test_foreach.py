"""``autograd._foreach_*`` (autograd/foreach.py): each function against the loop of tensor methods it
stands for, in float64 with gradients checked by finite differences, and against PyTorch's
``torch._foreach_*`` (values, in-place results, gradients, errors) where PyTorch is installed."""

import numpy as np
import pytest

import autograd
from autograd.foreach import BINARY, FUNCTIONS, UNARY

RNG = np.random.default_rng(0)
SHAPES = [(3,), (2, 3), ()]
POSITIVE = {"acos": 0.9, "asin": 0.9, "log": None, "log10": None, "log2": None, "log1p": None, "rsqrt": None,
            "sqrt": None, "reciprocal": None, "lgamma": None}


def arrays(op=None, seed=0):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(s) for s in SHAPES]
    if op in POSITIVE:
        out = [np.abs(a) * 0.4 + 0.1 if POSITIVE[op] else np.abs(a) + 0.5 for a in out]
    return out


def ours(values, dtype=np.float64, grad=False):
    return [autograd.tensor(a.astype(dtype), requires_grad=grad) for a in values]


def test_every_torch_foreach_name_is_here():
    torch = pytest.importorskip("torch")
    assert {n for n in dir(torch) if n.startswith("_foreach_")} <= set(FUNCTIONS)
    assert all(getattr(autograd, n) is FUNCTIONS[n] for n in FUNCTIONS)


@pytest.mark.parametrize("op", UNARY)
def test_unary_is_the_method_on_each_tensor(op):
    xs = ours(arrays(op), grad=True)
    got = getattr(autograd, f"_foreach_{op}")(xs)
    assert isinstance(got, tuple) and len(got) == 3
    for g, x in zip(got, xs):
        np.testing.assert_array_equal(g.numpy(), getattr(x, op)().detach().numpy())
    inplace = ours(arrays(op))
    assert getattr(autograd, f"_foreach_{op}_")(inplace) is inplace
    for y, g in zip(inplace, got):
        np.testing.assert_array_equal(y.numpy(), g.detach().numpy())


@pytest.mark.parametrize("op", ["exp", "sigmoid", "log", "sqrt", "tanh"])
def test_unary_gradients_by_finite_differences(op):
    values = arrays(op)[:2]
    assert autograd.gradcheck(lambda a, b: getattr(autograd, f"_foreach_{op}")([a, b]), tuple(ours(values, grad=True)))


def other_forms(op, values):
    """The second operand in each form PyTorch takes: a list of tensors, a list of numbers, one number,
    one tensor (broadcast to each)."""
    others = [np.abs(a) + 0.5 for a in arrays(seed=1)] if op in ("div", "pow") else arrays(seed=1)
    forms = [("tensors", others), ("scalars", [1.5, -0.5, 2.0]), ("scalar", 0.75)]
    if op in ("add", "sub", "mul", "div"):
        forms.append(("tensor", np.array(1.25)))
    return forms


def as_operand(lib, kind, value, grad=False):
    if kind == "tensors":
        return [lib.tensor(v, requires_grad=grad) for v in value]
    if kind == "tensor":
        return lib.tensor(value)
    return value


@pytest.mark.parametrize("op", BINARY)
def test_binary_in_every_form_against_the_loop_and_finite_differences(op):
    values = [np.abs(a) + 0.5 for a in arrays()] if op == "pow" else arrays()
    for kind, other in other_forms(op, values):
        xs = ours(values, grad=True)
        operand = as_operand(autograd, kind, other)
        got = getattr(autograd, f"_foreach_{op}")(xs, operand)
        for i, (g, x) in enumerate(zip(got, xs)):
            o = operand[i] if isinstance(operand, list) else operand
            want = {"clamp_min": x.clamp(min=o), "clamp_max": x.clamp(max=o),
                    "maximum": x.clamp(min=o), "minimum": x.clamp(max=o)}.get(op)
            want = getattr(x, op)(o) if want is None else want
            np.testing.assert_array_equal(g.detach().numpy(), want.detach().numpy(), err_msg=f"{op} {kind}")
        inplace = ours(values)
        assert getattr(autograd, f"_foreach_{op}_")(inplace, operand) is inplace
        for y, g in zip(inplace, got):
            np.testing.assert_array_equal(y.numpy(), g.detach().numpy())
        if kind == "tensors" and op not in ("clamp_min", "clamp_max", "maximum", "minimum"):
            pair = tuple(ours(values[:2], grad=True) + [autograd.tensor(o, requires_grad=True) for o in other[:2]])
            assert autograd.gradcheck(lambda a, b, c, d: getattr(autograd, f"_foreach_{op}")([a, b], [c, d]), pair)


def test_alpha_lerp_addcmul_addcdiv_norm_and_the_rest():
    a, b, c = ours(arrays()), ours(arrays(seed=1)), [x.abs() + 0.5 for x in ours(arrays(seed=2))]
    for got, want in [
        (autograd._foreach_add(a, b, alpha=0.5), [x.add(y, alpha=0.5) for x, y in zip(a, b)]),
        (autograd._foreach_sub(a, b, alpha=2), [x.sub(y, alpha=2) for x, y in zip(a, b)]),
        (autograd._foreach_lerp(a, b, 0.25), [x.lerp(y, 0.25) for x, y in zip(a, b)]),
        (autograd._foreach_lerp(a, b, c), [x.lerp(y, w) for x, y, w in zip(a, b, c)]),
        (autograd._foreach_lerp(a, b, [0.1, 0.2, 0.3]), [x.lerp(y, w) for x, y, w in zip(a, b, [0.1, 0.2, 0.3])]),
        (autograd._foreach_addcmul(a, b, c, value=0.5), [x.addcmul(y, z, value=0.5) for x, y, z in zip(a, b, c)]),
        (autograd._foreach_addcdiv(a, b, c, [1.0, 2.0, 3.0]),
         [x.addcdiv(y, z, value=v) for x, y, z, v in zip(a, b, c, [1.0, 2.0, 3.0])]),
        (autograd._foreach_addcdiv(a, b, c, autograd.tensor([1.0, 2.0, 3.0])),
         [x.addcdiv(y, z, value=v) for x, y, z, v in zip(a, b, c, [1.0, 2.0, 3.0])]),
        (autograd._foreach_norm(a), [autograd.linalg.vector_norm(x) for x in a]),
        (autograd._foreach_norm(a, ord=1), [x.abs().sum() for x in a]),
        (autograd._foreach_powsum(a, 3), [x.abs().pow(3).sum() for x in a]),
        (autograd._foreach_max(a), [x.max() for x in a]),
        (autograd._foreach_pow(2.0, a), [2.0 ** x for x in a]),
        (autograd._foreach_clone(a), a),
        (autograd._foreach_mm([a[1].t()], [a[1]]), [a[1].t().mm(a[1])]),
    ]:
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-12, atol=1e-12)
    copies = ours([np.zeros(s) for s in SHAPES])
    assert autograd._foreach_copy_(copies, a) is copies and all(np.array_equal(x.numpy(), y.numpy())
                                                                 for x, y in zip(copies, a))
    assert autograd._foreach_zero_(copies) is copies and all((x.numpy() == 0).all() for x in copies)
    assert autograd._foreach_clone(a)[0] is not a[0]


def test_gradients_through_lerp_addcmul_and_norm():
    values = [v + 2.0 for v in arrays()[:2]]
    assert autograd.gradcheck(lambda a, b, c, d: autograd._foreach_lerp([a, b], [c, d], 0.3)
                              + autograd._foreach_addcmul([a, b], [c, d], [a, b], value=0.5)
                              + autograd._foreach_norm([a, b]), tuple(ours(values + values[::-1], grad=True)))


def test_errors_name_the_problem():
    xs = ours(arrays())
    with pytest.raises(RuntimeError, match="same number of tensors, got 3 and 1"):
        autograd._foreach_add(xs, [xs[0]])
    with pytest.raises(RuntimeError, match="same number of elements as scalar list"):
        autograd._foreach_mul(xs, [1.0])
    with pytest.raises(RuntimeError, match="at least one tensor"):
        autograd._foreach_exp([])
    with pytest.raises(TypeError, match="alpha"):
        autograd._foreach_mul(xs, 2.0, alpha=2)
    with pytest.raises(TypeError, match="list of tensors"):
        autograd._foreach_exp([1.0, 2.0])
    with pytest.raises(RuntimeError, match="empty tensor"):
        autograd._foreach_max([autograd.zeros(0)])


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    for name in sorted(FUNCTIONS):
        op = name[len("_foreach_"):].rstrip("_")
        values = arrays(op)
        if op in ("pow", "div", "addcdiv"):
            values = [np.abs(v) + 0.5 for v in values]
        calls = {
            "add": [("tensors", {"alpha": 0.5}), ("scalars", {}), ("scalar", {}), ("tensor", {"alpha": 2})],
            "sub": [("tensors", {"alpha": 0.5}), ("scalars", {}), ("scalar", {})],
            "lerp": [("lerp_scalar", {}), ("lerp_tensors", {}), ("lerp_scalars", {})],
            "addcmul": [("pointwise", {}), ("pointwise_scalars", {})],
            "addcdiv": [("pointwise", {}), ("pointwise_tensor", {})],
        }.get(op, [(kind, {}) for kind, _ in other_forms(op, values)] if op in BINARY else [("none", {})])
        for kind, kwargs in calls:
            results = []
            for lib in (autograd, torch):
                xs = [lib.tensor(v, requires_grad=not name.endswith("_")) for v in values]
                other = [np.abs(a) + 0.5 for a in arrays(seed=1)]
                args = {
                    "tensors": ([lib.tensor(o) for o in other],), "scalars": ([1.5, -0.5, 2.0],),
                    "scalar": (0.75,), "tensor": (lib.tensor(1.25, dtype=lib.float64),),
                    "lerp_scalar": ([lib.tensor(o) for o in other], 0.3),
                    "lerp_tensors": ([lib.tensor(o) for o in other], [lib.tensor(o * 0.1) for o in other]),
                    "lerp_scalars": ([lib.tensor(o) for o in other], [0.1, 0.5, 0.9]),
                    "pointwise": ([lib.tensor(o) for o in other], [lib.tensor(o + 1) for o in other]),
                    "pointwise_scalars": ([lib.tensor(o) for o in other], [lib.tensor(o + 1) for o in other],
                                          [1.0, -2.0, 0.5]),
                    "pointwise_tensor": ([lib.tensor(o) for o in other], [lib.tensor(o + 1) for o in other],
                                         lib.tensor([1.0, -2.0, 0.5], dtype=lib.float64)),
                    "none": {"mm": ([lib.tensor(v.reshape(-1, 1)) for v in values],),
                             "copy": ([lib.tensor(o) for o in other],)}.get(op, ()),
                }[kind]
                if op == "mm":
                    xs = [lib.tensor(v.reshape(1, -1), requires_grad=True) for v in values]
                out = getattr(lib, name)(xs, *args, **kwargs)
                if name.endswith("_"):
                    results.append(([x.detach().numpy() for x in xs], type(out).__name__))
                else:
                    total = sum(o.sum() for o in out)
                    try:
                        total.backward() if total.requires_grad else None
                    except RuntimeError as error:  # PyTorch has no derivative for a few (addcdiv)
                        assert "is not implemented" in str(error) and lib is torch
                        results[0] = results[0][:2]
                    results.append(([o.detach().numpy() for o in out], type(out).__name__,
                                    [None if x.grad is None else x.grad.numpy() for x in xs]))
            ours_, theirs = results
            assert ours_[1] == theirs[1], name
            for a, b in zip(ours_[0], theirs[0]):
                np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{name} {kind}")
                assert a.dtype == b.dtype, name
            if len(ours_) == len(theirs) == 3:
                for a, b in zip(ours_[2], theirs[2]):
                    assert (a is None) == (b is None), name
                    if a is not None:
                        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12, err_msg=f"{name} grad")


def test_an_ema_update_as_timm_and_diffusers_write_it():
    params = ours(arrays(), np.float32)
    ema_a, ema_b, ema_c = (ours(arrays(seed=3), np.float32) for _ in range(3))
    decay = 0.9
    autograd._foreach_lerp_(ema_a, params, weight=1.0 - decay)
    autograd._foreach_mul_(ema_b, decay)
    autograd._foreach_add_(ema_b, params, alpha=1.0 - decay)
    autograd._foreach_sub_(ema_c, autograd._foreach_sub(ema_c, params), alpha=1.0 - decay)
    for a, b, c, p, e in zip(ema_a, ema_b, ema_c, params, arrays(seed=3)):
        want = decay * e.astype(np.float32) + (1 - decay) * p.numpy()
        for got in (a, b, c):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-7)
            assert got.dtype == np.float32
