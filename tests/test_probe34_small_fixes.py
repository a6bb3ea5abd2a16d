"""Small differences from PyTorch 2.13 fixed in session 34, each checked on both libraries (the ``T`` fixture:
chainrule's, then PyTorch's where it is installed): factories called without a size, arange's two forms, indexes
with several ellipses, the sign of zero in running sums, the plain RNN's relu, and the saved values that graph
nodes show (``grad_fn._saved_other``, ``_saved_mat2``, ``_saved_dim``, ...)."""

import importlib
import math

import numpy as np
import pytest

import autograd
from tests.ported import raises, same


def _nn(T):
    return importlib.import_module("nn") if T is autograd else T.nn


def _signs(t):
    """Each element's sign bit (True for -0 and negatives): what tells -0 from +0."""
    return np.signbit(t.detach().numpy()).tolist()


# -- factories without a size --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["zeros", "ones", "empty", "rand", "randn"])
def test_factory_without_a_size_raises_type_error_naming_it(T, name):
    factory = getattr(T, name)
    for call in (lambda: factory(dtype=T.float64), lambda: factory(out=T.zeros(2))):
        raises(TypeError, rf'^{name}\(\) missing 1 required positional arguments: "size"', call)
    for call in (factory, lambda: factory(*())):
        # (PyTorch's rand() and randn() with no argument at all list their overloads instead)
        words = "" if T is not autograd and name in ("rand", "randn") else " missing 1 required positional"
        raises(TypeError, rf'^{name}\(\){words}', call)


@pytest.mark.parametrize("name", ["zeros", "ones", "empty", "rand", "randn"])
def test_factory_of_an_empty_size_is_zero_dimensional(T, name):
    factory = getattr(T, name)
    for size in ((), [], T.Size([])):
        assert tuple(factory(size).shape) == ()
    assert tuple(factory(size=()).shape) == ()
    if name in ("zeros", "ones"):
        same(factory(()), float(name == "ones"))


@pytest.mark.parametrize("name", ["new_zeros", "new_ones", "new_empty"])
def test_new_factory_without_a_size_raises_and_of_an_empty_one_is_zero_dimensional(T, name):
    x = T.ones(2, dtype=T.float64)
    raises(TypeError, rf'^{name}\(\) missing 1 required positional arguments: "size"', getattr(x, name))
    made = getattr(x, name)(())
    assert tuple(made.shape) == () and made.dtype == T.float64


def test_samples_of_a_scalar_distribution_have_the_sample_shape(T):
    # (the distributions made their draws as randn(*shape): a 0-d draw of a scalar distribution is randn(()))
    D = T.distributions
    T.manual_seed(0)
    for dist in (D.Normal(0.0, 1.0), D.Uniform(0.0, 1.0), D.Exponential(1.0), D.Laplace(0.0, 1.0),
                 D.Cauchy(0.0, 1.0), D.Geometric(0.5), D.StudentT(3.0), D.ContinuousBernoulli(0.3)):
        assert tuple(dist.sample().shape) == ()
        assert tuple(dist.sample((3,)).shape) == (3,)
    assert tuple(D.RelaxedBernoulli(T.tensor(0.5), probs=T.tensor(0.3)).rsample().shape) == ()
    assert tuple(D.MultivariateNormal(T.zeros(2), T.eye(2)).sample().shape) == (2,)


def test_rnn_of_an_unbatched_input_still_runs(T):
    nn = _nn(T)
    T.manual_seed(0)
    for cls in (nn.RNN, nn.GRU, nn.LSTM):
        out, _ = cls(3, 4)(T.ones(5, 3))
        assert tuple(out.shape) == (5, 4)


# -- arange's two forms ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs, expected", [
    (dict(start=1, end=4), [1, 2, 3]), (dict(end=4), [0, 1, 2, 3]), (dict(end=4, start=1), [1, 2, 3]),
    (dict(start=1, step=2, end=4), [1, 3]), (dict(start=0, end=4, step=2), [0, 2])], ids=str)
def test_arange_named_bounds(T, kwargs, expected):
    same(T.arange(**kwargs), expected, dtype="int64")


def test_arange_positional_bounds(T):
    same(T.arange(4), [0, 1, 2, 3])
    same(T.arange(1, 4), [1, 2, 3])
    same(T.arange(1, 4, 2), [1, 3])
    same(T.arange(1, end=4), [1, 2, 3])
    same(T.arange(1, 4, step=2), [1, 3])
    same(T.arange(T.tensor(3)), [0, 1, 2])


@pytest.mark.parametrize("kwargs", [dict(start=1), dict(step=2), dict(start=1.5)], ids=str)
def test_arange_without_an_end_raises_type_error(T, kwargs):
    raises(TypeError, r'^arange\(\) missing 1 required positional arguments: "end"', T.arange, **kwargs)


@pytest.mark.parametrize("args, kwargs", [((4,), dict(step=2)), ((4,), dict(step=1)), ((), dict(end=4, step=2)),
                                          ((1,), dict(start=2)), ((), dict(start=1, step=2))], ids=str)
def test_arange_of_no_form_raises_type_error(T, args, kwargs):
    raises(TypeError, r"^arange\(\) received an invalid combination of arguments", T.arange, *args, **kwargs)


# -- several ellipses -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index, shape, first", [
    ((..., ...), (2, 3, 4), [0, 1, 2, 3]), ((..., None, ...), (2, 3, 4, 1), [0, 1, 2, 3]),
    ((None, ..., ...), (1, 2, 3, 4), [0, 1, 2, 3]), ((..., 0, ...), (2, 3), [0, 4, 8, 12]),
    ((0, ..., ...), (3, 4), [0, 1, 2, 3]), ((..., ..., ...), (2, 3, 4), [0, 1, 2, 3]),
    ((..., slice(1, None), ...), (2, 3, 3), [1, 2, 3, 5]), ((0, ..., 1, ...), (3,), [1, 5, 9]),
    (([0, 1], ..., ...), (2, 3, 4), [0, 1, 2, 3]), ((..., [0, 1], ...), (2, 3, 2), [0, 1, 4, 5]),
    ((0, ..., 0, ..., 0), (), [0]), ((..., 0, 0, 0, ...), (), [0])], ids=str)
def test_getitem_with_several_ellipses(T, index, shape, first):
    x = T.arange(24.0).reshape(2, 3, 4)
    y = x[index]
    assert tuple(y.shape) == shape
    assert y.flatten()[:4].tolist() == first


def test_several_ellipses_around_a_mask_and_in_one_and_zero_dims(T):
    x = T.arange(24.0).reshape(2, 3, 4)
    y = x[..., T.tensor([True, False, True, True]), ...]
    assert tuple(y.shape) == (2, 3, 3) and y[0, 0].tolist() == [0.0, 2.0, 3.0]
    same(T.arange(5.0)[..., ...], [0, 1, 2, 3, 4])
    same(T.arange(5.0)[..., 2, ...], 2.0)
    same(T.tensor(3.0)[..., None, ...], [3.0])


@pytest.mark.parametrize("index", [(..., ..., 0), (..., 0, ..., 0), (..., ..., None, None)], ids=str)
def test_a_part_past_the_dims_the_ellipses_passed_raises_index_error(T, index):
    with pytest.raises(IndexError):
        T.arange(24.0).reshape(2, 3, 4)[index]


@pytest.mark.parametrize("index, count, first", [((..., ...), 24, [0, 0, 0]), ((..., 0, ...), 6, [0, 0, 0]),
                                                 ((0, ..., 1, ...), 3, [0, 0, 1])], ids=str)
def test_setitem_with_several_ellipses(T, index, count, first):
    x = T.zeros(2, 3, 4)
    x[index] = 1
    assert x.sum().item() == count
    assert x.nonzero()[0].tolist() == first


def test_several_ellipses_record_gradients(T):
    a = T.arange(24.0).reshape(2, 3, 4).requires_grad_()
    (a[..., 0, ...] * T.arange(3.0)).sum().backward()
    expected = np.zeros((2, 3, 4))
    expected[:, :, 0] = [0, 1, 2]
    same(a.grad, expected)
    b = T.zeros(2, 3, 4, requires_grad=True).clone()
    b[..., 1, ...] = T.full((3,), 2.0)
    assert b.grad_fn.name() == "torch::autograd::CopySlices" and b.sum().item() == 12.0


# -- the sign of zero in running sums -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cumsum_of_negative_zeros_starts_from_positive_zero(T, dtype):
    dt = getattr(T, dtype)
    for shape, dims in (((1,), (0,)), ((3,), (0, -1)), ((2, 2), (0, 1, -1))):
        x = T.full(shape, -0.0, dtype=dt)
        for dim in dims:
            y = T.cumsum(x, dim)
            assert y.dtype == dt and not any(np.ravel(_signs(y))), (shape, dim)
    assert _signs(T.cumsum(T.tensor(-0.0, dtype=dt), 0)) is True  # (a 0-d one is a copy: PyTorch keeps -0)
    same(T.cumsum(T.tensor([-0.0, 1.5, -2.0], dtype=dt), 0), [0.0, 1.5, -0.5])


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_logcumsumexp_of_negative_zero_starts_from_positive_zero(T, dtype):
    dt = getattr(T, dtype)
    y = T.logcumsumexp(T.tensor([-0.0, -0.0, -0.0], dtype=dt), 0)
    assert _signs(y) == [False] * 3
    np.testing.assert_allclose(y.numpy(), [0.0, math.log(2), math.log(3)], rtol=1e-6)
    m = T.logcumsumexp(T.full((2, 2), -0.0, dtype=dt), 1)
    assert _signs(m) == [[False, False], [False, False]]
    assert _signs(T.logcumsumexp(T.tensor(-0.0, dtype=dt), 0)) is True


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_signs_of_zero_in_other_reductions_unchanged(T, dtype):
    x = T.full((2, 2), -0.0, dtype=getattr(T, dtype))
    assert _signs(x.sum()) is False and _signs(x.sum(0)) == [False, False] and _signs(T.nansum(x)) is False
    assert _signs(x.mean()) is False
    assert _signs(x[0].prod()) is False and _signs(x[0, :1].prod()) is True
    assert _signs(T.cumprod(T.tensor([-0.0, -0.0, -0.0]), 0)) == [True, False, True]


def test_cumsum_gradient_of_negative_zeros_is_positive_zero(T):
    t = T.tensor([-0.0, 2.0, -0.0], requires_grad=True)
    T.cumsum(t, 0).backward(T.full((3,), -0.0))
    assert _signs(t.grad) == [False] * 3
    t.grad = None
    T.cumsum(t, 0).backward(T.ones(3))
    same(t.grad, [3.0, 2.0, 1.0])


def test_cumsum_of_float16_and_integers_unchanged(T):
    same(T.cumsum(T.tensor([1.5, 2.5, -4.0], dtype=T.float16), 0), [1.5, 4.0, 0.0], dtype="float16")
    same(T.cumsum(T.tensor([1, 2, 3], dtype=T.int32), 0), [1, 3, 6], dtype="int64")


# -- the plain RNN's relu is relu --------------------------------------------------------------------------------


def test_rnn_relu_matches_its_cells_and_pytorch_values(T):
    nn = _nn(T)
    T.manual_seed(0)
    rnn = nn.RNN(3, 4, nonlinearity="relu")
    with T.no_grad():
        for p, values in zip(rnn.parameters(), (np.linspace(-1, 1, 12).reshape(4, 3), np.linspace(-1, 1, 16)
                                                .reshape(4, 4)[::-1].copy(), np.linspace(-0.5, 0.5, 4),
                                                np.zeros(4))):
            p.copy_(T.tensor(values, dtype=T.float32))
    x = T.tensor(np.sin(np.arange(15.0)).reshape(5, 1, 3), dtype=T.float32)
    y, h = rnn(x)
    state = T.zeros(1, 4)
    for t in range(5):
        state = T.relu(x[t] @ rnn.weight_ih_l0.T + rnn.bias_ih_l0 + state @ rnn.weight_hh_l0.T + rnn.bias_hh_l0)
        np.testing.assert_allclose(y[t].detach().numpy(), state.detach().numpy(), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(h[0].detach().numpy(), state.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert (y.detach().numpy() >= 0).all() and (y.detach().numpy() == 0).any()
    # (PyTorch's matrix products begin from +0, so a pre-activation is never -0: the zeros are +0 on both)
    assert not np.signbit(y.detach().numpy()[y.detach().numpy() == 0]).any()


# -- what graph nodes show they saved ------------------------------------------------------------------------------


def test_mul_and_div_by_a_number_show_it_as_saved_other(T):
    x = T.tensor([1.0, 2.0], requires_grad=True)
    for y, value, dtype in ((x * 2, 2, "int64"), (2 * x, 2, "int64"), (x * 2.5, 2.5, "float64"),
                            (x / 2, 2, "int64"), (x / 2.5, 2.5, "float64"), (x.double() * 2, 2, "int64")):
        node = y.grad_fn
        assert node.name() in ("MulBackward0", "DivBackward0")
        assert node._saved_self is None
        same(node._saved_other, value, dtype=dtype)
    y = x * 2
    y.sum().backward()
    raises(RuntimeError, "backward through the graph a second time", lambda: y.grad_fn._saved_other)


def test_add_of_a_number_shows_nothing_saved(T):
    x = T.tensor([1.0, 2.0], requires_grad=True)
    for y in (x + 1, x - 1):
        assert not hasattr(y.grad_fn, "_saved_other") and not hasattr(y.grad_fn, "_saved_self")


def test_matmul_shows_saved_self_and_mat2(T):
    a = T.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    b = T.tensor([[0.5, -1.0], [2.0, 1.0]], requires_grad=True)
    for y in (a @ b, T.mm(a, b)):
        assert y.grad_fn.name() == "MmBackward0"
        same(y.grad_fn._saved_self, [[1.0, 2.0], [3.0, 4.0]])
        same(y.grad_fn._saved_mat2, [[0.5, -1.0], [2.0, 1.0]])
    c = T.arange(8.0).reshape(2, 2, 2).requires_grad_()
    node = T.bmm(c, c + 1).grad_fn
    assert node.name() == "BmmBackward0"
    same(node._saved_mat2, np.arange(8.0).reshape(2, 2, 2) + 1)


def test_pow_shows_its_exponent_and_base(T):
    x = T.tensor([1.0, 2.0], requires_grad=True)
    y = T.tensor([0.5, 3.0], requires_grad=True)
    assert (x ** 2).grad_fn._saved_exponent == 2 and T.pow(x, 3.0).grad_fn._saved_exponent == 3.0
    same((x ** 2).grad_fn._saved_self, [1.0, 2.0])
    same((x ** y).grad_fn._saved_exponent, [0.5, 3.0])
    same((x ** y).grad_fn._saved_self, [1.0, 2.0])
    node = (2 ** x).grad_fn
    assert node.name() == "PowBackward2" and node._saved_self == 2
    same(node._saved_exponent, [1.0, 2.0])
    same(node._saved_result, [2.0, 4.0])


def test_unary_nodes_show_result_or_self(T):
    x = T.tensor([1.0, 4.0], requires_grad=True)
    for y, saved in ((x.exp(), "_saved_result"), (x.tanh(), "_saved_result"), (x.sigmoid(), "_saved_result"),
                     (x.relu(), "_saved_result"), (x.sqrt(), "_saved_result")):
        np.testing.assert_allclose(getattr(y.grad_fn, saved).detach().numpy(), y.detach().numpy(), rtol=1e-6)
    same(x.log().grad_fn._saved_self, [1.0, 4.0])


def test_sum_and_mean_show_dims_keepdim_and_sizes(T):
    x = T.ones(2, 3, requires_grad=True)
    node = x.sum().grad_fn
    assert node.name() == "SumBackward0" and node._saved_self_sym_sizes == (2, 3)
    assert not hasattr(node, "_saved_dim") and not hasattr(node, "_saved_keepdim")
    for y, dims, keepdim in ((x.sum(0), (0,), False), (x.sum(1, keepdim=True), (1,), True),
                             (x.sum((0, 1)), (0, 1), False)):
        assert y.grad_fn.name() == "SumBackward1"
        assert tuple(y.grad_fn._saved_dim) == dims and y.grad_fn._saved_keepdim is keepdim
        assert y.grad_fn._saved_self_sym_sizes == (2, 3)
    node = x.mean().grad_fn
    assert node.name() == "MeanBackward0" and node._saved_self_sym_sizes == (2, 3)
    assert node._saved_self_sym_numel == 6
    node = x.mean(1).grad_fn
    assert node.name() == "MeanBackward1" and tuple(node._saved_dim) == (1,) and node._saved_keepdim is False
    assert node._saved_self_sym_numel == 6


@pytest.mark.parametrize("name", ["zeros", "ones", "empty", "rand", "randn"])
def test_factory_of_a_tensor_of_several_sizes_raises_type_error(T, name):
    factory = getattr(T, name)
    raises(TypeError, rf"^{name}\(\): argument 'size' \(position 1\) must be tuple of ints, not Tensor", factory,
           T.tensor([2, 3]))
    raises(TypeError, rf"^{name}\(\): argument 'size' \(position 1\) must be tuple of ints, not numpy.ndarray",
           factory, np.array([2, 3]))
    for size in (T.tensor([2]), T.tensor(2), np.int64(2), (T.tensor(2),)):  # (one element: its integer)
        assert tuple(factory(size).shape) == (2,)
    assert tuple(factory(T.Size([2, 3])).shape) == (2, 3)
    raises(TypeError, r"^new_zeros\(\): argument 'size' \(position 1\) must be tuple of ints, not Tensor",
           T.ones(2).new_zeros, T.tensor([2, 3]))


def test_full_of_a_number_its_dtype_cannot_hold_raises_runtime_error(T):
    raises(RuntimeError, "value cannot be converted to type .* without overflow", T.full, (2,), 2**63)
    raises(RuntimeError, "value cannot be converted to type .* without overflow", T.full, (2,), 1e40)
    same(T.full((2,), 2**63 - 1), [2**63 - 1] * 2, dtype="int64")
    same(T.full((2,), True), [True, True], dtype="bool")
    same(T.full((2,), 3), [3, 3], dtype="int64")
    same(T.full((2,), 1.5), [1.5, 1.5], dtype="float32")
