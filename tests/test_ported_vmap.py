"""vmap's API, ported from PyTorch's test/functorch/test_vmap.py (TestVmapAPI, the CPU batching rules it relies
on, TestRandomness's error/same/different modes, in-place ops on batched tensors, vmap over autograd.grad and of
grad/jacrev): in_dims and out_dims as ints, negative dims, None, tuples and pytrees; chunk_size; nested vmap;
tuple, list, dict and namedtuple outputs; the argument errors; random ops in each randomness mode.

Each test runs on chainrule's `autograd` (`autograd.func.vmap`) and, where it is installed, on PyTorch
(`torch.func.vmap`) (fixture `T`), against literal or NumPy-computed expectations. Per-sample gradients of a
plain loss and vmap/vjp compositions are in tests/test_ported_func_compose.py.
"""

import collections
import functools
import importlib

import numpy as np
import pytest

from tests.ported import close, raises, same, values, xfail_on_chainrule
from tests.ported_func import randn, t

RANDOM_ERROR = "called random operation while in randomness error mode"


@pytest.fixture
def fn(T):
    """The library's torch.func."""
    return importlib.import_module(T.__name__ + ".func")


@pytest.fixture
def F(T):
    return importlib.import_module("torch.nn.functional" if T.__name__ == "torch" else "nn.functional")


def arange(T, *shape, start=0.0):
    return t(T, np.arange(start, start + np.prod(shape)).reshape(shape))


# -- inputs, outputs and their dims (TestVmapAPI) -------------------------------------------------------------

def test_single_and_multiple_inputs(T, fn):
    x, y = randn(T, 2, 3), randn(T, 2, 3, seed=1)
    close(fn.vmap(T.sin)(x), np.sin(values(x)))
    close(fn.vmap(T.mul)(x, y), values(x) * values(y))
    close(fn.vmap(lambda a, b: a @ b)(randn(T, 4, 2, 3), randn(T, 4, 3)),
          np.einsum("bij,bj->bi", values(randn(T, 4, 2, 3)), values(randn(T, 4, 3))))


def test_tuple_list_dict_and_namedtuple_outputs(T, fn):
    x = arange(T, 2, 3)
    pair = fn.vmap(lambda a: (a * 2, a.sum()))(x)
    assert isinstance(pair, tuple)
    same(pair[0], np.arange(6.0).reshape(2, 3) * 2)
    same(pair[1], [3.0, 12.0])
    listed = fn.vmap(lambda a: [a, a.sum()])(x)
    assert isinstance(listed, list) and values(listed[1]).tolist() == [3.0, 12.0]
    named = fn.vmap(lambda a: {"sum": a.sum(), "nested": (a.max(), {"min": a.min()})})(x)
    same(named["sum"], [3.0, 12.0])
    same(named["nested"][0], [2.0, 5.0])
    same(named["nested"][1]["min"], [0.0, 3.0])
    Point = collections.namedtuple("Point", "a b")
    point = fn.vmap(lambda a: Point(a, a * 2))(x)
    assert type(point).__name__ == "Point"
    same(point.b, np.arange(6.0).reshape(2, 3) * 2)


@pytest.mark.parametrize("in_dim", [1, -1])
def test_in_dims_other_than_zero(T, fn, in_dim):
    x = arange(T, 2, 3)
    same(fn.vmap(T.sum, in_dims=in_dim)(x), [3.0, 5.0, 7.0])
    same(fn.vmap(T.mul, in_dims=(0, in_dim))(t(T, [1.0, 2.0, 3.0]), x), [[0.0, 3.0], [2.0, 8.0], [6.0, 15.0]])


def test_unbatched_inputs_and_keyword_arguments(T, fn):
    x = arange(T, 2, 3)
    same(fn.vmap(T.mul, in_dims=(0, None))(x, t(T, [1.0, 2.0, 3.0])), [[0.0, 2.0, 6.0], [3.0, 8.0, 15.0]])
    same(fn.vmap(lambda a, b: a * b, in_dims=(0, None))(x, 2.0), np.arange(6.0).reshape(2, 3) * 2)
    # keyword arguments are passed whole to every call, tensors included
    same(fn.vmap(lambda a, scale=1.0: a * scale)(x, scale=3.0), np.arange(6.0).reshape(2, 3) * 3)
    same(fn.vmap(lambda a, b=None: a + b)(x, b=t(T, [1.0, 1.0, 1.0])), np.arange(6.0).reshape(2, 3) + 1)
    same(fn.vmap(functools.partial(T.mul, other=t(T, 2.0)))(x), np.arange(6.0).reshape(2, 3) * 2)
    same(fn.vmap(T.Tensor.sum)(x), [3.0, 12.0])


def test_in_dims_as_pytrees(T, fn):
    x, y = arange(T, 2, 3), arange(T, 2, 3, start=6.0)
    got = fn.vmap(lambda d: d["a"] * d["b"], in_dims=({"a": 0, "b": None},))({"a": x, "b": t(T, [1.0, 2.0, 3.0])})
    same(got, [[0.0, 2.0, 6.0], [3.0, 8.0, 15.0]])
    # a nested tuple of dims, one per leaf; and a single int for a whole nested argument
    got = fn.vmap(lambda p: p[0] + p[1][0], in_dims=((0, (1,)),))((x, (y.T,)))
    same(got, values(x) + values(y))
    same(fn.vmap(lambda p: p[0] - p[1][0])((x, [y])), values(x) - values(y))


def test_out_dims(T, fn):
    x = t(T, np.ones((2, 3, 4)))
    assert fn.vmap(lambda a: a * 2, out_dims=1)(x).shape == (3, 2, 4)
    assert fn.vmap(lambda a: a * 2, out_dims=-1)(x).shape == (3, 4, 2)
    first, second = fn.vmap(lambda a: (a, a.sum()), out_dims=(2, 0))(x)
    assert first.shape == (3, 4, 2) and second.shape == (2,)
    # out_dims as a tree prefix of the output's, and a 1-tuple for a lone tensor
    tree = fn.vmap(lambda a: {"a": a, "b": (a, a)}, out_dims={"a": 0, "b": 1})(x)
    assert tree["a"].shape == (2, 3, 4) and tree["b"][0].shape == tree["b"][1].shape == (3, 2, 4)
    assert fn.vmap(lambda a: a, out_dims=(1,))(x).shape == (3, 2, 4)


def test_out_dims_none_for_unbatched_outputs(T, fn):
    x = arange(T, 2, 3)
    assert fn.vmap(lambda a: 3, out_dims=None)(x) == 3
    batched, constant = fn.vmap(lambda a, b: (a, b), in_dims=(0, None), out_dims=(0, None))(x, t(T, 1.0))
    same(batched, values(x))
    same(constant, 1.0)


def test_empty_batch(T, fn):
    assert fn.vmap(lambda a: a * 2)(t(T, np.ones((0, 3)))).shape == (0, 3)


def test_chunk_size_changes_no_value(T, fn):
    x = randn(T, 5, 3)
    expected = np.sin(values(x)).sum(1)
    for chunk_size in (None, 1, 2, 5, 7):
        close(fn.vmap(lambda a: a.sin().sum(), chunk_size=chunk_size)(x), expected)


@pytest.mark.parametrize("chunk_size", [0, -1])
def test_chunk_size_must_be_positive(T, fn, chunk_size):
    raises(ValueError, "chunk_size should be None or greater than 0", fn.vmap, T.sin, chunk_size=chunk_size)


def test_nested_vmap(T, fn):
    x, y = arange(T, 2, 3), arange(T, 2, 3, start=6.0)
    same(fn.vmap(fn.vmap(T.mul))(x, y), values(x) * values(y))
    # outer product: the inner vmap maps the second argument, the outer the first
    outer = fn.vmap(fn.vmap(T.mul, in_dims=(None, 0)), in_dims=(0, None))(t(T, [1.0, 2.0]), t(T, [3.0, 4.0, 5.0]))
    same(outer, [[3.0, 4.0, 5.0], [6.0, 8.0, 10.0]])
    # the inner over dim 1 of what the outer hands it, the outer over dim 1 of the input
    z = arange(T, 2, 3, 4)
    same(fn.vmap(fn.vmap(T.sum, in_dims=1), in_dims=1)(z), values(z).sum(0))


# -- argument errors ------------------------------------------------------------------------------------------

def test_batch_sizes_must_agree(T, fn):
    raises(ValueError, "Expected all tensors to have the same size in the mapped dimension, got sizes \\[2, 3\\]",
           fn.vmap(T.add), t(T, np.ones((2, 3))), t(T, np.ones((3, 3))))


def test_outputs_must_be_tensors(T, fn):
    x = arange(T, 2, 3)
    raises(ValueError, "must only return Tensors, got type <class 'int'>", fn.vmap(lambda a: 3), x)
    raises(ValueError, "must only return Tensors, got type <class 'int'>", fn.vmap(lambda a: (a, 3)), x)


def test_out_dims_errors(T, fn):
    x = arange(T, 2, 3)
    raises(IndexError, r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 3\)",
           fn.vmap(lambda a: a * 2, out_dims=3), x)
    raises(ValueError, "out_dims is not compatible with the structure of `outputs`",
           fn.vmap(lambda a: (a, a), out_dims=(0, 0, 0)), x)
    raises(ValueError, "`out_dims` must be an int, None or a python collection of ints",
           fn.vmap(T.sin, out_dims=0.0), x)
    raises(ValueError, "can not return a BatchedTensor when out_dim is None", fn.vmap(lambda a: a, out_dims=None), x)


def test_in_dims_errors(T, fn):
    x, y = arange(T, 2, 3), arange(T, 2, 3)
    raises(ValueError, "got no inputs", fn.vmap(lambda: t(T, 1.0)))
    for in_dims in (None, [0, 0], 0.0):
        raises(ValueError, "expected `in_dims` to be int or a \\(potentially nested\\) tuple", fn.vmap(T.mul, in_dims),
               x, y)
    raises(ValueError, "in_dims is not compatible with the structure of `inputs`", fn.vmap(T.mul, (0,)), x, y)
    raises(ValueError, "Expected at least one Tensor to vmap over", fn.vmap(T.mul, (None, None)), x, y)
    raises(ValueError, "Got in_dim=2 for some input, but that input is a Tensor of dimensionality 2 so expected "
           "in_dim to satisfy -2 <= in_dim < 2", fn.vmap(T.sin, 2), x)
    raises(ValueError, "dimensionality 0", fn.vmap(T.sin), t(T, 1.0))
    raises(ValueError, "We cannot vmap over non-Tensor arguments, please use None as the respective in_dim",
           fn.vmap(lambda a, b: a * b), x, 2.0)


# -- randomness (TestRandomness) -----------------------------------------------------------------------------

RANDOM_OPS = {
    "rand": lambda T, F, a: a + T.rand(3),
    "randn": lambda T, F, a: a + T.randn(()),
    "rand_like": lambda T, F, a: T.rand_like(a),
    "dropout": lambda T, F, a: F.dropout(a, 0.5),
    "randint": lambda T, F, a: T.randint(0, 10, (3,)),
    "bernoulli": lambda T, F, a: T.bernoulli(a * 0 + 0.5),
    "normal": lambda T, F, a: T.normal(a, 1.0),
    "generator": lambda T, F, a: a + T.rand(3, generator=T.Generator().manual_seed(0)),
}


@pytest.mark.parametrize("op", RANDOM_OPS)
def test_randomness_error_refuses_every_random_op(T, fn, F, op):
    raises(RuntimeError, RANDOM_ERROR, fn.vmap(functools.partial(RANDOM_OPS[op], T, F)), arange(T, 2, 3))


def test_randomness_error_allows_dropout_in_eval_and_rejects_unknown_modes(T, fn, F):
    x = arange(T, 2, 3)
    same(fn.vmap(lambda a: F.dropout(a, 0.5, training=False))(x), values(x))
    raises(RuntimeError, "Only allowed values for randomness are 'error', 'different', or 'same'. Got foo",
           fn.vmap, T.sin, randomness="foo")


def test_randomness_same_gives_every_example_one_draw(T, fn):
    x = arange(T, 2, 3)
    T.manual_seed(0)
    got = fn.vmap(lambda a: a + T.rand(3), randomness="same")(x)
    T.manual_seed(0)
    expected = values(T.rand(3))
    close(got, values(x) + expected)
    close(expected, [0.4962566, 0.7682218, 0.0884774], atol=1e-6)  # PyTorch's rand(3) at seed 0
    T.manual_seed(0)
    like = fn.vmap(lambda a: T.rand_like(a), randomness="same")(x)
    assert (values(like)[0] == values(like)[1]).all()
    T.manual_seed(0)
    nested = fn.vmap(fn.vmap(lambda a: T.rand(()), randomness="same"), randomness="same")(x)
    close(nested, np.full((2, 3), 0.4962566), atol=1e-6)


def test_randomness_different_draws_for_the_whole_batch(T, fn):
    x = arange(T, 2, 3)
    T.manual_seed(0)
    got = fn.vmap(lambda a: a + T.rand(3), randomness="different")(x)
    T.manual_seed(0)
    batch = values(T.rand(2, 3))  # PyTorch's batched op draws the (batch, 3) tensor at once
    close(got, values(x) + batch)
    close(batch, [[0.4962566, 0.7682218, 0.0884774], [0.1320305, 0.3074228, 0.6340787]], atol=1e-6)
    T.manual_seed(0)
    nested = fn.vmap(fn.vmap(lambda a: T.rand(()), randomness="different"), randomness="different")(x)
    close(nested, batch, atol=1e-6)


def test_dropout_in_each_randomness_mode(T, fn, F):
    x = t(T, np.ones((3, 8)))
    T.manual_seed(0)
    different = values(fn.vmap(lambda a: F.dropout(a + 1, 0.5), randomness="different")(x))
    np.testing.assert_array_equal(different, [[0, 0, 4, 0, 0, 0, 4, 4], [0, 4, 4, 4, 4, 0, 4, 4],
                                              [4, 4, 0, 0, 4, 0, 4, 0]])
    T.manual_seed(0)
    same_mask = values(fn.vmap(lambda a: F.dropout(a + 1, 0.5), randomness="same")(x))
    np.testing.assert_array_equal(same_mask, np.tile([0, 0, 4, 0, 0, 0, 4, 4], (3, 1)))


# -- in-place ops on batched tensors ---------------------------------------------------------------------------

def test_in_place_ops_write_through_to_the_batched_input(T, fn):
    z = arange(T, 2, 3)
    fn.vmap(lambda a: a.mul_(2))(z)
    same(z, np.arange(6.0).reshape(2, 3) * 2)
    z, y = arange(T, 2, 3), arange(T, 2, 3, start=6.0)
    returned = fn.vmap(lambda a, b: a.add_(b))(z, y)
    same(z, [[6.0, 8.0, 10.0], [12.0, 14.0, 16.0]])
    same(returned, values(z))
    z = arange(T, 2, 3)
    fn.vmap(lambda a, b: a.add_(b), in_dims=(0, None))(z, t(T, [1.0, 1.0, 1.0]))
    same(z, np.arange(6.0).reshape(2, 3) + 1)
    z = arange(T, 2, 3)
    fn.vmap(lambda a: a[0].mul_(10))(z)  # into a view of each example
    same(z, [[0.0, 1.0, 2.0], [30.0, 4.0, 5.0]])


@pytest.mark.parametrize("captured", [False, True])
def test_in_place_into_an_unbatched_tensor_from_a_batched_one_is_refused(T, fn, captured, request):
    xfail_on_chainrule(T, request, "chainrule's vmap loops over the examples and tracks no batched tensors: "
                       "an in-place op into an unbatched tensor from a batched one adds each example in turn")
    y = arange(T, 2, 3, start=6.0)
    z = t(T, [1.0, 2.0, 3.0])
    if captured:
        raises(RuntimeError, "doesn't match the broadcast shape", fn.vmap(lambda b: z.add_(b)), y)
    else:
        raises(RuntimeError, "doesn't match the broadcast shape", fn.vmap(lambda a, b: a.add_(b), in_dims=(None, 0)),
               z, y)


def test_func_runs_once_for_the_whole_batch(T, fn, request):
    xfail_on_chainrule(T, request, "chainrule's vmap calls func once per example: its side effects (an in-place "
                       "op on a captured unbatched tensor, a Python list appended to) happen batch-size times")
    z, calls = t(T, np.zeros(3)), []

    def f(a):
        calls.append(1)
        z.add_(1)
        return a * 2

    same(fn.vmap(f)(t(T, np.ones((4, 3)))), np.full((4, 3), 2.0))
    same(z, [1.0, 1.0, 1.0])
    assert len(calls) == 1


@pytest.mark.parametrize("use", ["item", "if"])
def test_data_dependent_python_is_refused(T, fn, use, request):
    xfail_on_chainrule(T, request, "chainrule's vmap hands func real examples: .item() and bool() of a value "
                       "computed from one work, where PyTorch's BatchedTensor refuses them")
    x = arange(T, 2, 3)
    if use == "item":
        raises(RuntimeError, "calling .item\\(\\) on a Tensor", fn.vmap(lambda a: t(T, a.sum().item())), x)
    else:
        raises(RuntimeError, "data-dependent control flow", fn.vmap(lambda a: a if a.sum() > 5 else -a), x)


# -- vmap with autograd: autograd.grad, grad, jacrev (TestVmapAPI batched gradients, per-sample grads) ----------

def test_vmap_over_autograd_grad_gives_jacobian_rows(T, fn):
    w = t(T, [1.0, 2.0, 3.0]).requires_grad_()
    y = w * w

    def vjp(v):
        return T.autograd.grad(y, w, v, retain_graph=True)[0]

    same(fn.vmap(vjp)(t(T, np.eye(3))), np.diag([2.0, 4.0, 6.0]))


def test_vmap_of_jacrev_and_jacrev_of_vmap(T, fn):
    x = randn(T, 2, 3)
    close(fn.vmap(fn.jacrev(T.sin))(x), np.stack([np.diag(np.cos(r)) for r in values(x)]))
    full = fn.jacrev(fn.vmap(T.sin))(x)
    assert full.shape == (2, 3, 2, 3)
    close(full, np.einsum("ij,ik,jl->ijkl", np.cos(values(x)), np.eye(2), np.eye(3)))


def test_per_sample_grads_of_a_module_through_functional_call(T, fn):
    nn = importlib.import_module("torch.nn" if T.__name__ == "torch" else "nn")
    model = nn.Linear(3, 1).double()
    with T.no_grad():
        model.weight.copy_(t(T, [[1.0, 2.0, 3.0]]))
        model.bias.fill_(0.5)
    params = {k: v.detach() for k, v in model.named_parameters()}
    x, target = arange(T, 2, 3), t(T, [1.0, 2.0])

    def loss(p, xi, yi):
        return ((fn.functional_call(model, p, (xi.unsqueeze(0),)).squeeze() - yi) ** 2)

    grads = fn.vmap(fn.grad(loss), in_dims=(None, 0, 0))(params, x, target)
    residual = np.arange(6.0).reshape(2, 3) @ [1.0, 2.0, 3.0] + 0.5 - [1.0, 2.0]  # [7.5, 24.5]
    same(grads["weight"], 2 * residual[:, None, None] * np.arange(6.0).reshape(2, 1, 3))
    same(grads["bias"], 2 * residual[:, None])


def test_an_output_that_views_the_input_is_a_view_of_it(T, fn):
    z = arange(T, 2, 3)
    fn.vmap(lambda a: a)(z).add_(1)  # the identity's result is the input's memory
    same(z, np.arange(6.0).reshape(2, 3) + 1)
    z = arange(T, 2, 3)
    fn.vmap(lambda a: a[:2])(z).mul_(0)
    same(z, [[0.0, 0.0, 2.0], [0.0, 0.0, 5.0]])
    y = arange(T, 3, 2)
    moved = fn.vmap(lambda a: a, in_dims=1)(y)
    same(moved, np.arange(6.0).reshape(3, 2).T)
    assert moved.stride() == (1, 2)
    moved.mul_(2)
    same(y, np.arange(6.0).reshape(3, 2) * 2)
    assert fn.vmap(lambda a: a.t(), out_dims=-1)(t(T, np.ones((2, 3, 4)))).stride() == (1, 4, 12)
    # a result computed from the examples is new memory
    z = arange(T, 2, 3)
    fn.vmap(lambda a: a * 1)(z).add_(1)
    same(z, np.arange(6.0).reshape(2, 3))


def test_model_ensembling_with_stacked_module_state(T, fn):
    nn = importlib.import_module("torch.nn" if T.__name__ == "torch" else "nn")
    models = [nn.Linear(3, 1).double() for _ in range(3)]
    with T.no_grad():
        for k, model in enumerate(models):
            model.weight.copy_(t(T, [[1.0, k, -k]]))
            model.bias.fill_(k / 2)
    params, buffers = fn.stack_module_state(models)
    assert tuple(params["weight"].shape) == (3, 1, 3) and params["weight"].requires_grad
    base = models[0]
    x = arange(T, 2, 3)
    out = fn.vmap(lambda p, b, xs: fn.functional_call(base, (p, b), (xs,)), in_dims=(0, 0, None))(params, buffers, x)
    weights = np.array([[1.0, k, -k] for k in range(3)])
    close(out, (np.einsum("kj,ij->ki", weights, np.arange(6.0).reshape(2, 3)) + np.arange(3)[:, None] / 2)[..., None])
    grads = fn.vmap(fn.grad(lambda p, b: fn.functional_call(base, (p, b), (x,)).sum()))(params, buffers)
    same(grads["weight"], np.tile([[[3.0, 5.0, 7.0]]], (3, 1, 1)))
    same(grads["bias"], [[2.0], [2.0], [2.0]])
