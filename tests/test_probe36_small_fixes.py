"""Divergences from PyTorch 2.13 that probe 36 found, and their fixes: dims given as 0-d integer tensors
(max/min's overloads, amax/amin/aminmax), ...

Each case runs on ours and, where torch is installed, on PyTorch too; without torch the expected values and
error messages are written out."""

import copy

import numpy as np
import pytest

import autograd

try:
    import torch
except ImportError:  # (CI: the written-out values stand alone)
    torch = None

LIBRARIES = [autograd] if torch is None else [autograd, torch]


def values(result):
    """A result as nested lists of plain numbers (a tensor's values, a namedtuple's fields)."""
    if isinstance(result, tuple):
        return [values(r) for r in result]
    return result.detach().numpy().tolist()


X = [[1.0, 5.0], [3.0, 2.0]]


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("call, expected", [
    (lambda T, x: x.max(dim=T.tensor(1)), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: T.max(x, dim=T.tensor(1)), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: x.min(dim=T.tensor(1)), [[1.0, 2.0], [0, 1]]),
    (lambda T, x: T.min(x, dim=T.tensor(1)), [[1.0, 2.0], [0, 1]]),
    (lambda T, x: x.max(dim=T.tensor(-1, dtype=T.int32)), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: x.max(dim=T.tensor(1, dtype=T.uint8)), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: x.max(T.tensor(1), True), [[[5.0], [3.0]], [[1], [0]]]),  # beside keepdim: a dim
    (lambda T, x: x.max(T.tensor(1), keepdim=False), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: T.max(x, T.tensor(0), True), [[[3.0, 5.0]], [[1, 0]]]),
    (lambda T, x: x.max(np.int64(1)), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: x.min(dim=np.int32(0)), [[1.0, 2.0], [0, 1]]),
    (lambda T, x: x.max(T.tensor(2)), [[2.0, 5.0], [3.0, 2.0]]),  # alone in dim's place: the other tensor
    (lambda T, x: T.min(x, T.tensor(2)), [[1.0, 2.0], [2.0, 2.0]]),
    (lambda T, x: T.max(x, other=T.tensor(2.0)), [[2.0, 5.0], [3.0, 2.0]]),
    (lambda T, x: x.amax(T.tensor(1)), [5.0, 3.0]),
    (lambda T, x: T.amin(x, T.tensor(0)), [1.0, 2.0]),
    (lambda T, x: x.amax([T.tensor(1)]), [5.0, 3.0]),
    (lambda T, x: x.aminmax(dim=T.tensor(1)), [[1.0, 2.0], [5.0, 3.0]]),
    (lambda T, x: x.sum(T.tensor(1)), [6.0, 5.0]),
    (lambda T, x: x.softmax(np.int64(1)).argmax(T.tensor(1)), [1, 0]),
    (lambda T, x: x.topk(T.tensor(1), T.tensor(1))[1], [[1], [0]]),
    (lambda T, x: x.cumsum(T.tensor(1)), [[1.0, 6.0], [3.0, 5.0]]),
    (lambda T, x: x.max(axis=1), [[5.0, 3.0], [1, 0]]),  # (NumPy's names, which PyTorch's parser takes too)
    (lambda T, x: T.min(x, axis=0, keepdims=True), [[[1.0, 2.0]], [[0, 1]]]),
    (lambda T, x: x.max(1, keepdims=True), [[[5.0], [3.0]], [[1], [0]]]),
])
def test_a_0d_integer_tensor_or_numpy_integer_as_dim(lib, call, expected):
    assert values(call(lib, lib.tensor(X))) == expected


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("call", [
    lambda T, x: x.max(dim=T.tensor(1.0)),
    lambda T, x: x.max(dim=T.tensor([1])),
    lambda T, x: x.min(dim=T.tensor(True)),
    lambda T, x: T.max(x, dim=T.tensor(1.0)),
    lambda T, x: x.max(T.tensor(1.0), True),
    lambda T, x: x.max(1, dim=1),
    lambda T, x: T.max(x, other=T.tensor(2.0), keepdim=True),
    lambda T, x: x.max(1, True, True),
])
def test_what_is_no_dim_of_max_is_refused(lib, call):
    with pytest.raises(TypeError):
        call(lib, lib.tensor(X))


def test_the_refusal_names_the_dim_tensor():
    with pytest.raises(TypeError, match=r"max\(\): argument 'dim' must be int, not Tensor .*float32 and shape \(\)"):
        autograd.tensor(X).max(dim=autograd.tensor(1.0))


# tensor(data) of a list mixing numbers, tensors and arrays: PyTorch walks the shape down the first items, where a
# tensor is no sequence; a tensor met where dims remain is read as a sequence of its rows, one where numbers belong
# as one number
@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("make, dtype, expected", [
    (lambda T: T.tensor([[1, 2], T.tensor([3.0, 4.0])]), "float32", [[1.0, 2.0], [3.0, 4.0]]),
    (lambda T: T.tensor([[1, 2], T.tensor([3, 4])]), "int64", [[1, 2], [3, 4]]),
    (lambda T: T.tensor([T.tensor(1.0), 2, T.tensor(3)]), "float32", [1.0, 2.0, 3.0]),
    (lambda T: T.tensor([[1, 2], T.tensor([3, 4], dtype=T.int32)]), "int64", [[1, 2], [3, 4]]),
    (lambda T: T.tensor([[True, False], T.tensor([3, 4], dtype=T.uint8)]), "uint8", [[1, 0], [3, 4]]),
    (lambda T: T.tensor([[1.0, 2.0], T.tensor([3, 4], dtype=T.float16)]), "float32", [[1.0, 2.0], [3.0, 4.0]]),
    (lambda T: T.tensor([[1, 2], T.tensor([3, 4], dtype=T.float64)]), "float64", [[1.0, 2.0], [3.0, 4.0]]),
    (lambda T: T.tensor([[np.float16(1), 2], T.tensor([3, 4])]), "float16", [[1.0, 2.0], [3.0, 4.0]]),
    (lambda T: T.tensor([[1, 2], T.tensor([True, False])]), "int64", [[1, 2], [1, 0]]),
    (lambda T: T.tensor([[[1, 2], [3, 4]], T.zeros(2, 2)]), "float32", [[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0]] * 2]),
    (lambda T: T.tensor([[1], T.tensor([[2.0]])]), "float32", [[1.0], [2.0]]),
    (lambda T: T.tensor([[1, 2], T.zeros(2, 1, 1, dtype=T.float64)]), "float64", [[1.0, 2.0], [0.0, 0.0]]),
    (lambda T: T.tensor([[1, 2], T.arange(6)[::3]]), "int64", [[1, 2], [0, 3]]),
    (lambda T: T.tensor(([1, 2], T.tensor([3.0, 4.0]).expand(2))), "float32", [[1.0, 2.0], [3.0, 4.0]]),
    (lambda T: T.tensor([[], T.tensor([])]), "float32", [[], []]),
    (lambda T: T.tensor([np.array([3.0, 4.0]), T.tensor([1, 2])]), "float64", [[3.0, 4.0], [1.0, 2.0]]),
    (lambda T: T.tensor([[1, 2], T.tensor([3.0, 4.0])], dtype=T.float64), "float64", [[1.0, 2.0], [3.0, 4.0]]),
    (lambda T: T.tensor([3.5, T.tensor(3)], dtype=T.int64), "int64", [3, 3]),
    (lambda T: T.tensor([[], T.tensor([], dtype=T.int64)]), "float32", [[], []]),  # (an empty list: float32)
    (lambda T: T.tensor([[[1]], T.zeros(1, 1, 1)]), "float32", [[[1.0]], [[0.0]]]),
])
def test_a_list_mixing_numbers_tensors_and_arrays(lib, make, dtype, expected):
    made = make(lib)
    assert str(made.dtype).split(".")[-1] == dtype and made.tolist() == expected


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
def test_a_tensor_requiring_grad_in_a_list_is_copied_without_history(lib):
    w = lib.tensor([3.0, 4.0], requires_grad=True)
    made = lib.tensor([[1, 2], w])
    assert not made.requires_grad and made.grad_fn is None
    made[1, 0] = 9.0
    assert w.tolist() == [3.0, 4.0]  # (a copy)
    assert lib.tensor([[1, 2], w], requires_grad=True).requires_grad


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("make, error, message", [
    (lambda T: T.tensor([T.tensor([1.0, 2.0]), [3, 4]]), ValueError, "only one element tensors"),  # first: a number
    (lambda T: T.tensor([T.tensor([1, 2]), [3, 4]]), TypeError, "only integer tensors of a single element"),
    (lambda T: T.tensor([[1, 2], T.zeros(2, 2)]), ValueError, "only one element tensors"),
    (lambda T: T.tensor([[1, 2], T.tensor([3.0, 4.0, 5.0])]), ValueError, "expected sequence of length 2 at dim 1"),
    (lambda T: T.tensor([[1, 2], T.tensor([[3, 4]])]), ValueError, "expected sequence of length 2 at dim 1 (got 1)"),
    (lambda T: T.tensor([[[1, 2], [3, 4]], T.zeros(3, 2)]), ValueError, "expected sequence of length 2 at dim 1"),
    (lambda T: T.tensor([[[1, 2], [3, 4]], T.zeros(2, 3)]), ValueError, "expected sequence of length 2 at dim 2"),
    (lambda T: T.tensor([[1], T.tensor(2.0)]), TypeError, "not a sequence"),
    (lambda T: T.tensor([[[1, 2], [3, 4]], T.zeros(2)]), TypeError, "not a sequence"),
    (lambda T: T.tensor([T.tensor(3.0)], dtype=T.int64), TypeError, "only integer tensors of a single element"),
    (lambda T: T.tensor([[1, 2], T.tensor([3.0, 4.0])], dtype=T.bool), TypeError, "only integer tensors"),
    (lambda T: T.tensor([np.array(1.0), 2]), TypeError, "len() of unsized object"),
])
def test_what_a_list_of_tensors_cannot_be(lib, make, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        make(lib)


def test_the_refusal_names_the_tensor_and_how_it_was_read():
    with pytest.raises(ValueError, match=r"a tensor of shape \(2, 2\) read as a 1-d list of numbers in the list"):
        autograd.tensor([[1, 2], autograd.zeros(2, 2)])


# the gradients of cumprod and prod where x holds zeros: PyTorch's signs of zero (its first derivative's masks)
def _gradient(lib, op, x, dtype, grad):
    x = lib.tensor(x, dtype=getattr(lib, dtype), requires_grad=True)
    y = op(x)
    y.backward(lib.full_like(y, grad))
    return x.grad.detach().numpy()


ZEROS = [[-2.0, 0.0, 3.0], [2.0, -0.0, 3.0], [2.0, 0.0, 3.0, 0.0], [0.0, 0.0], [-0.0, -0.0, 2.0], [0.0, -1.0, -2.0],
         [-1.0, -0.0, -3.0, 0.0, -2.0], [3.0, -2.0, 0.0, -0.0, 5.0, 0.0], [0.0], [-0.0], [-1.0, -2.0, 0.0, 4.0, -5.0]]
OPS = {"cumprod": lambda x: x.cumprod(0), "prod": lambda x: x.prod(), "prod(0)": lambda x: x.prod(0),
       "cumprod(1) 2-d": lambda x: x.expand(2, -1).contiguous().cumprod(1),
       "prod() 2-d": lambda x: x.expand(2, -1).prod(), "prod(1) 2-d": lambda x: x.expand(2, -1).prod(1)}


@pytest.mark.skipif(torch is None, reason="compares with PyTorch")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("grad", [1.0, -1.0, 0.0, -0.0, 2.5])
def test_product_gradients_at_zeros_match_pytorch_sign_for_sign(op, dtype, grad):
    for x in ZEROS:
        ours, theirs = (_gradient(lib, OPS[op], x, dtype, grad) for lib in (autograd, torch))
        np.testing.assert_allclose(ours, theirs, rtol=1e-6, err_msg=str(x))
        assert np.signbit(ours).tolist() == np.signbit(theirs).tolist(), (x, ours, theirs)


@pytest.mark.parametrize("op, x, grad, expected", [
    ("cumprod", [-2.0, 0.0, 3.0], 1.0, [1.0, -8.0, 0.0]),  # (after the first zero: +0, not (-2 · 0) · 1 = -0)
    ("cumprod", [2.0, 0.0, 3.0, 0.0], -1.0, [-1.0, -8.0, 0.0, 0.0]),
    ("cumprod", [2.0, 0.0, 3.0], -0.0, [0.0, 0.0, 0.0]),
    ("cumprod", [-0.0], -0.0, [-0.0]),  # (one element: dL/dy itself)
    ("prod", [2.0, 0.0, 3.0, 0.0], -1.0, [0.0, 0.0, 0.0, 0.0]),  # (two zeros: +0 whatever dL/dy)
    ("prod", [-0.0, -0.0, 2.0], 1.0, [0.0, 0.0, 0.0]),
    ("prod", [2.0, -0.0, 3.0], 1.0, [-0.0, 6.0, -0.0]),  # (one zero: the products of the others)
    ("prod(0)", [2.0, 0.0, 3.0, 0.0], 1.0, [0.0, 0.0, 0.0, 0.0]),
])
def test_product_gradients_at_zeros(op, x, grad, expected):
    got = _gradient(autograd, OPS[op], x, "float64", grad)
    assert got.tolist() == expected and np.signbit(got).tolist() == np.signbit(expected).tolist()


def test_second_derivatives_at_zeros_stay_exact():
    """create_graph keeps the differentiable products (a gradient that is 0 still changes with the zeros)."""
    x = autograd.tensor([2.0, 0.0, 3.0, 0.0], dtype=autograd.float64, requires_grad=True)
    (g,) = autograd.autograd.grad(x.prod(), x, create_graph=True)
    (h,) = autograd.autograd.grad(g[1], x)
    assert g.tolist() == [0.0, 0.0, 0.0, 0.0] and h.tolist() == [0.0, 0.0, 0.0, 6.0]  # d(x0 x2 x3)/dx3 = x0 x2
    x = autograd.tensor([-2.0, 0.0, 3.0], dtype=autograd.float64, requires_grad=True)
    (g,) = autograd.autograd.grad(x.cumprod(0).sum(), x, create_graph=True)
    (h,) = autograd.autograd.grad(g[2], x)
    assert g.tolist() == [1.0, -8.0, 0.0] and h.tolist() == [0.0, -2.0, 0.0]  # d(x0 x1)/dx1 = x0


def test_complex_cumprod_gradient_at_zeros_takes_the_conjugates():
    x = autograd.tensor([1 + 1j, 0j, 2 - 1j], requires_grad=True)
    x.cumprod(0).sum().abs().backward()
    # y = (1+i, 0, 0): L = |Σy| = |1+i + (1+i)x1 + (1+i)x1x2|; dL/dx1* at x1 = 0 is (Σy/|Σy|) conj(dΣy/dx1)
    s = (1 + 1j) / abs(1 + 1j)
    expected = [s * np.conj(1), s * np.conj((1 + 1j) * (1 + (2 - 1j))), 0]
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-6)


# ops whose PyTorch schema takes only tensors refuse a Python number, as PyTorch's argument parser does
TENSORS_ONLY = ["maximum", "minimum", "fmax", "fmin", "atan2", "arctan2", "hypot", "nextafter", "ldexp", "logaddexp",
                "logaddexp2", "dist", "isclose", "allclose", "equal", "igamma", "igammac"]


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("name", TENSORS_ONLY)
@pytest.mark.parametrize("number", [1.5, 2, True])
def test_a_number_where_pytorch_wants_a_tensor(lib, name, number):
    x = lib.tensor([1.0, 2.0])
    pattern = name.replace("arctan2", "a?r?c?tan2")  # (one function under both names)
    with pytest.raises(TypeError, match=rf"{pattern}\(\): argument 'other' \(position \d\) must be Tensor, not "
                                        rf"{type(number).__name__}"):
        getattr(lib, name)(x, number)
    with pytest.raises(TypeError, match="must be Tensor"):
        getattr(x, name)(number)
    if name not in ("isclose", "allclose"):  # (a number first: no function of PyTorch's takes it)
        with pytest.raises(TypeError, match=r"argument (('input' \(position 1\))|1) must be (a )?Tensor"):
            getattr(lib, name)(number, x)


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
def test_integer_pairs_refuse_numbers_too(lib):
    x = lib.tensor([4, 6])
    for name in ("gcd", "lcm"):
        with pytest.raises(TypeError, match="must be Tensor, not int"):
            getattr(lib, name)(x, 2)
        assert getattr(lib, name)(x, lib.tensor(4)).tolist() == ([4, 2] if name == "gcd" else [4, 12])


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
def test_what_takes_numbers_still_does(lib):
    x = lib.tensor([1.0, -2.0])
    assert lib.clamp_min(x, 1.5).tolist() == [1.5, 1.5] and x.clamp(max=0).tolist() == [0.0, -2.0]
    assert lib.maximum(x, lib.tensor(0.0)).tolist() == [1.0, 0.0]  # (a 0-d tensor: the way to a number)
    assert lib.copysign(x, -1.0).tolist() == [-1.0, -2.0] and lib.fmod(x, 1.5).tolist() == [1.0, -0.5]
    assert lib.pow(2, x).tolist() == [2.0, 0.25] and lib.remainder(x, 1.5).tolist() == [1.0, 1.0]
    assert lib.xlogy(x, 2.0)[0].item() == pytest.approx(0.6931472)
    assert lib.heaviside(x, lib.tensor(0.5)).tolist() == [1.0, 0.0]
    assert lib.tensor([4, 6]).bitwise_and(2).tolist() == [0, 2]


# optimizer.load_state_dict: each group becomes the saved one holding this optimizer's parameters; the options
# PyTorch's __setstate__ sets by default are filled, others the saved group lacks stay missing
def _optimizer(lib, name, **options):
    Parameter = lib.nn.Parameter if lib is torch else __import__("nn").Parameter
    optimizers = lib.optim if lib is torch else __import__("optim")
    p = Parameter(lib.tensor([1.0, -2.0]))
    return p, getattr(optimizers, name)([p], **options)


def _step(p, optimizer):
    optimizer.zero_grad()
    (p * p).sum().backward()
    optimizer.step()
    return [round(v, 6) for v in p.detach().tolist()]


OPTIMIZERS = ["SGD", "Adam", "AdamW", "Adagrad", "Adadelta", "Adamax", "ASGD", "NAdam", "RAdam", "RMSprop", "Rprop"]


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_a_saved_group_replaces_the_options(lib, name):
    p, source = _optimizer(lib, name, lr=0.1)
    _step(p, source)
    saved = copy.deepcopy(source.state_dict())
    q, target = _optimizer(lib, name, lr=0.5, **({} if name == "Rprop" else {"weight_decay": 0.25}))
    with lib.no_grad():
        q.copy_(p)
    target.load_state_dict(saved)
    group = target.param_groups[0]
    assert group["lr"] == 0.1 and group.get("weight_decay") == saved["param_groups"][0].get("weight_decay")
    assert group["params"][0] is q
    assert _step(q, target) == _step(p, source)  # (the same state and options: the same next step)


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("name, filled", [
    ("SGD", {"nesterov": False, "maximize": False, "foreach": None, "differentiable": False, "fused": False}),
    ("Adam", {"amsgrad": False, "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
              "decoupled_weight_decay": False, "fused": None}),
    ("AdamW", {"amsgrad": False, "decoupled_weight_decay": True, "fused": None}),
    ("Adagrad", {"foreach": None, "maximize": False, "differentiable": False, "fused": None}),
    ("RMSprop", {"momentum": 0, "centered": False, "foreach": None, "maximize": False, "capturable": False}),
    ("NAdam", {"decoupled_weight_decay": False, "capturable": False}),
    ("Rprop", {"maximize": False, "foreach": None}),
])
def test_an_older_group_gets_pytorchs_setdefaults_and_nothing_else(lib, name, filled):
    p, optimizer = _optimizer(lib, name, lr=0.5)
    saved = optimizer.state_dict()
    group = saved["param_groups"][0]
    for key in (*filled, "lr"):
        group.pop(key, None)
    _, target = _optimizer(lib, name, lr=0.3)
    target.load_state_dict(saved)
    loaded = target.param_groups[0]
    assert {key: loaded[key] for key in filled} == filled
    assert "lr" not in loaded  # (not this optimizer's 0.3: PyTorch's step then fails on it)


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
def test_a_group_from_another_optimizer_keeps_its_own_options(lib):
    p, sgd = _optimizer(lib, "SGD", lr=0.1, momentum=0.9)
    _, adam = _optimizer(lib, "Adam", lr=0.5)
    adam.load_state_dict(sgd.state_dict())
    group = adam.param_groups[0]
    assert group["momentum"] == 0.9 and group["lr"] == 0.1 and "betas" not in group and group["amsgrad"] is False
    with pytest.raises(KeyError):
        _step(p, adam)


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
def test_param_names_are_kept_where_the_saved_group_has_none(lib):
    Parameter = lib.nn.Parameter if lib is torch else __import__("nn").Parameter
    optimizers = lib.optim if lib is torch else __import__("optim")
    named = optimizers.SGD([("w", Parameter(lib.zeros(2)))], lr=0.2)
    named.load_state_dict(optimizers.SGD([Parameter(lib.zeros(2))], lr=0.3).state_dict())
    assert named.param_groups[0]["param_names"] == ["w"] and named.param_groups[0]["lr"] == 0.3
    unnamed = optimizers.SGD([Parameter(lib.zeros(2))], lr=0.2)
    unnamed.load_state_dict(optimizers.SGD([("v", Parameter(lib.zeros(2)))], lr=0.3).state_dict())
    assert unnamed.param_groups[0]["param_names"] == ["v"]


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
def test_groups_that_do_not_match_are_refused(lib):
    p, one = _optimizer(lib, "SGD", lr=0.1)
    Parameter = lib.nn.Parameter if lib is torch else __import__("nn").Parameter
    optimizers = lib.optim if lib is torch else __import__("optim")
    q = Parameter(lib.zeros(3))
    two = optimizers.SGD([{"params": [p]}, {"params": [q]}], lr=0.1)
    with pytest.raises(ValueError, match="loaded state dict has a different number of parameter groups"):
        two.load_state_dict(one.state_dict())
    with pytest.raises(ValueError, match="contains a parameter group that doesn't match the size"):
        optimizers.SGD([p, q], lr=0.1).load_state_dict(one.state_dict())


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("call", [
    lambda T, x: T.copysign(-1.0, x), lambda T, x: T.fmod(5.0, x), lambda T, x: T.rsub(5, x),
    lambda T, x: T.eq(1.0, x), lambda T, x: T.lt(1, x), lambda T, x: T.not_equal(2.0, x),
    lambda T, x: T.logical_and(x, True), lambda T, x: x.logical_or(0), lambda T, x: T.logical_xor(1.5, x),
])
def test_a_number_first_or_a_number_to_a_logical_op_is_refused(lib, call):
    with pytest.raises(TypeError):
        call(lib, lib.tensor([1.0, 2.0]))


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
def test_numbers_after_the_tensor_still_compare(lib):
    x = lib.tensor([1.0, 2.0])
    assert lib.eq(x, 1.0).tolist() == [True, False] and (1.0 < x).tolist() == [False, True]
    assert x.ne(2).tolist() == [True, False] and lib.fmod(x, 1.5).tolist() == [1.0, 0.5]
    assert lib.rsub(x, 5).tolist() == [4.0, 3.0] and lib.copysign(x, -0.0).tolist() == [-1.0, -2.0]
    assert lib.logical_and(x, lib.tensor(True)).tolist() == [True, True]
