"""The tensor object itself, ported from PyTorch's test/test_torch.py (TestTorch and TestTorchDeviceType
on CPU): dtype conversions and type(), item/bool/tolist, NumPy interop, pickling and deepcopy, sizes
and strides, torch.Size, printing, seeds and the random samplers' argument checks, apply_/map_.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`),
against literal or NumPy-computed expectations.
"""

import copy
import importlib
import io
import math
import pickle

import numpy as np
import pytest

from tests.ported import dtype_name, raises, same, values, xfail_ours

# ------------------------------------------------------------------------------------ type conversions


def test_type_conversion_via_dtype_name(T):
    x = T.tensor([1])
    for method, dtype in [("byte", "uint8"), ("bool", "bool"), ("char", "int8"), ("double", "float64"),
                          ("float", "float32"), ("half", "float16"), ("int", "int32"), ("short", "int16"),
                          ("long", "int64"), ("cfloat", "complex64"), ("cdouble", "complex128")]:
        y = getattr(x, method)()
        assert dtype_name(y) == dtype, method
        same(y, np.array([1]).astype(dtype))


def test_type(T):
    """test_type: .type() names the legacy tensor type; .type(t) converts by dtype or by that name."""
    x = T.tensor([1.5, -2.5])
    assert x.type() == "torch.FloatTensor"
    assert T.tensor([1]).type() == "torch.LongTensor"
    assert T.tensor([True]).type() == "torch.BoolTensor"
    assert x.double().type() == "torch.DoubleTensor"
    assert x.int().type() == "torch.IntTensor"
    assert x.type(T.float32) is x
    same(x.type(T.int32), [1, -2], "int32")
    same(x.type("torch.IntTensor"), [1, -2], "int32")
    same(x.type("torch.DoubleTensor"), [1.5, -2.5], "float64")
    same(x.type(T.DoubleTensor), [1.5, -2.5], "float64")
    assert isinstance(x, T.FloatTensor) and not isinstance(x, T.DoubleTensor)


def test_to_dtype_and_copy(T):
    x = T.tensor([1.7, -1.7, 0.5])
    assert x.to(T.float32) is x
    assert x.to(T.float32, copy=True) is not x
    same(x.to(T.int64), [1, -1, 0], "int64")
    same(x.to(T.bool), [True, True, True], "bool")
    same(x.to(T.zeros(1, dtype=T.float64)), values(x).astype(np.float64), "float64")
    same(x.to("cpu", T.float16), values(x).astype(np.float16), "float16")
    same(T.tensor([300, -1]).to(T.uint8), np.array([300, -1]).astype(np.uint8), "uint8")
    same(T.tensor([1.5 + 2j]).real, np.float32(1.5) * np.ones(1, np.float32))


def test_conversion_keeps_grad_flowing(T):
    x = T.tensor([1.0, 2.0], requires_grad=True)
    (x.double() * 3).sum().backward()
    same(x.grad, [3, 3], "float32")
    assert not x.long().requires_grad


# ---------------------------------------------------------------------------------- item, bool, tolist


def test_item(T):
    assert T.tensor([3.5]).item() == 3.5
    assert T.tensor([[7]]).item() == 7 and type(T.tensor([[7]]).item()) is int
    assert T.tensor(True).item() is True
    assert T.tensor(1 + 2j).item() == 1 + 2j
    assert type(T.tensor(2.0, dtype=T.float64).item()) is float
    raises(RuntimeError, r"a Tensor with 2 elements cannot be converted to Scalar", T.tensor([1.0, 2.0]).item)
    raises(RuntimeError, r"a Tensor with 0 elements cannot be converted to Scalar", T.tensor([]).item)
    assert float(T.tensor([2.5])) == 2.5 and int(T.tensor(3.9)) == 3
    raises(ValueError, r"only one element tensors can be converted to Python scalars|cannot be converted to Scalar",
           float, T.tensor([1.0, 2.0]))


def test_bool_of_tensors(T):
    """test_bool_tensor_value_change / test_is_nonzero: one element converts, more are ambiguous."""
    assert bool(T.tensor([1.0])) and not bool(T.tensor(0)) and not bool(T.tensor([[False]]))
    assert bool(T.tensor(float("nan")))
    assert T.tensor([5]).is_nonzero() and not T.tensor(0.0).is_nonzero()
    raises(RuntimeError, r"Boolean value of Tensor with more than one value is ambiguous|ambiguous", bool,
           T.tensor([1.0, 1.0]))
    raises(RuntimeError, r"Boolean value of Tensor with no values is ambiguous|ambiguous", bool, T.tensor([]))
    raises(RuntimeError, r"Boolean value of Tensor with more than one value is ambiguous", T.tensor([1, 1]).is_nonzero)
    raises(RuntimeError, r"Boolean value of Tensor with no values is ambiguous", T.tensor([]).is_nonzero)


def test_tolist(T):
    """test_tolist: nested lists of Python numbers of the matching kind."""
    assert T.tensor([]).tolist() == []
    assert T.tensor(3.5).tolist() == 3.5
    assert T.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    got = T.tensor([[1.5, 2.0]]).tolist()
    assert got == [[1.5, 2.0]] and type(got[0][0]) is float
    assert T.tensor([True, False]).tolist() == [True, False]
    assert T.tensor([1 + 1j]).tolist() == [1 + 1j]
    assert T.arange(6).view(2, 3).t().tolist() == [[0, 3], [1, 4], [2, 5]]
    assert T.zeros(2, 0).tolist() == [[], []]
    assert T.tensor([1.0], requires_grad=True).tolist() == [1.0]


# -------------------------------------------------------------------------------------- NumPy interop


def test_numpy_shares_memory(T):
    """test_numpy_non_writeable / from_numpy: numpy() and from_numpy() share the buffer both ways."""
    x = T.zeros(3)
    a = x.numpy()
    a[1] = 5
    same(x, [0, 5, 0])
    x[2] = 7
    assert a[2] == 7
    b = np.arange(4.0)
    t = T.from_numpy(b)
    b[0] = -1
    same(t, [-1, 1, 2, 3], "float64")
    same(T.from_numpy(np.array([1, 2], dtype=np.int16)), [1, 2], "int16")


def test_from_numpy_refuses_object_arrays(T):
    raises(TypeError, r"can't convert np.ndarray of type numpy.object_", T.from_numpy, np.array([1, "a"], dtype=object))


def test_array_protocol(T):
    """test_numpy_array_interface / __array__: np.asarray and ufuncs see the values; dtypes map one to one."""
    for dtype in ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64",
                  "complex64", "complex128"):
        x = T.tensor(np.array([1, 0, 1]).astype(dtype))
        a = np.asarray(x)
        assert a.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(a, np.array([1, 0, 1]).astype(dtype))
    x = T.tensor([1.0, 4.0])
    assert np.asarray(x, dtype=np.float64).dtype == np.float64
    np.testing.assert_array_equal(np.sqrt(np.asarray(x)), [1.0, 2.0])
    np.testing.assert_array_equal(np.array(T.arange(6).view(2, 3).t()), np.arange(6).reshape(2, 3).T)
    assert np.asarray(T.tensor(2.5)).shape == ()


def test_numpy_of_detached_requires_grad(T):
    x = T.tensor([1.0, 2.0], requires_grad=True)
    np.testing.assert_array_equal(x.detach().numpy(), [1.0, 2.0])
    np.testing.assert_array_equal(x.numpy(force=True), [1.0, 2.0])


@xfail_ours("numpy() of a tensor that requires grad is allowed on purpose (Tensor.numpy's docstring)")
def test_numpy_refuses_requires_grad(T):
    x = T.tensor([1.0, 2.0], requires_grad=True)
    raises(RuntimeError, r"Can't call numpy\(\) on Tensor that requires grad. Use tensor.detach\(\).numpy\(\) "
           r"instead.", x.numpy)
    raises(RuntimeError, r"Can't call numpy\(\) on Tensor that requires grad", np.asarray, x)


# ------------------------------------------------------------------------------- pickle, deepcopy, save


def nn_of(T):
    """The library's nn package: chainrule's is the top-level `nn`, PyTorch's `torch.nn`."""
    return importlib.import_module("nn" if T.__name__ == "autograd" else "torch.nn")


def test_pickle_keeps_values_dtype_and_requires_grad(T):
    """test_pickle / test_pickle_parameter: a pickled tensor comes back equal, with its flag."""
    for x in (T.tensor([[1.5, -2.0]]), T.tensor([1, 2], dtype=T.int16), T.tensor([True]), T.tensor(2 + 1j),
              T.arange(6.0).view(2, 3).t()):
        y = pickle.loads(pickle.dumps(x))
        same(y, values(x), dtype_name(x))
    x = T.tensor([1.0, 2.0], requires_grad=True)
    y = pickle.loads(pickle.dumps(x))
    assert y.requires_grad and y.is_leaf
    same(y, [1, 2])


def test_pickle_parameter(T):
    nn = nn_of(T)
    p = nn.Parameter(T.tensor([1.0, 2.0]))
    q = pickle.loads(pickle.dumps(p))
    assert isinstance(q, nn.Parameter) and q.requires_grad
    same(q, [1, 2])
    p = nn.Parameter(T.tensor([1.0]), requires_grad=False)
    assert not pickle.loads(pickle.dumps(p)).requires_grad


def test_deepcopy(T):
    """test_deepcopy / test_deepcopy_parameter: copies keep values, dtype, requires_grad and .grad;
    tensors shared in the copied object stay shared in the copy."""
    x = T.tensor([1.0, 2.0], requires_grad=True)
    (x * x).sum().backward()
    y = copy.deepcopy(x)
    assert y is not x and y.requires_grad and y.is_leaf
    same(y, [1, 2])
    same(y.grad, [2, 4])
    assert y.grad is not x.grad
    y.data.add_(1)
    same(x, [1, 2])
    a = T.zeros(3)
    b = [a, a, {"k": a}]
    c = copy.deepcopy(b)
    assert c[0] is c[1] and c[2]["k"] is c[0] and c[0] is not a
    same(copy.copy(a), [0, 0, 0])
    p = nn_of(T).Parameter(T.tensor([3.0]))
    q = copy.deepcopy(p)
    assert isinstance(q, nn_of(T).Parameter) and q.requires_grad


def test_deepcopy_keeps_views_sharing_memory(T):
    """test_deepcopy: a view and its base deep-copied together still share one storage."""
    x = T.arange(4.0)
    view, base = copy.deepcopy([x[1:], x])
    view.add_(1)
    same(base, [0, 2, 3, 4])
    same(x, [0, 1, 2, 3])


def test_deepcopy_of_a_non_leaf_is_refused(T):
    x = T.tensor([1.0], requires_grad=True) * 2
    raises(RuntimeError, r"Only Tensors created explicitly by the user \(graph leaves\) support the deepcopy "
           r"protocol at the moment", copy.deepcopy, x)


def test_save_load_round_trip(T):
    """test_serialization (the plain part): save/load keeps values, dtypes, requires_grad and sharing."""
    a = T.arange(6.0).view(2, 3)
    state = {"a": a, "view": a[1], "w": T.tensor([1.0], requires_grad=True), "n": 3}
    buf = io.BytesIO()
    T.save(state, buf)
    buf.seek(0)
    got = T.load(buf)
    same(got["a"], values(a))
    same(got["view"], [3, 4, 5])
    assert got["w"].requires_grad and got["n"] == 3


def test_save_load_keeps_views_sharing(T):
    a = T.arange(6.0).view(2, 3)
    buf = io.BytesIO()
    T.save({"a": a, "view": a[1]}, buf)
    buf.seek(0)
    got = T.load(buf)
    got["a"][1, 0] = -1
    same(got["view"], [-1, 4, 5])


# --------------------------------------------------------------------------- sizes, strides, dim order


def test_is_same_size_element_size_nbytes(T):
    assert T.ones(2, 3).is_same_size(T.zeros(2, 3))
    assert not T.ones(2, 3).is_same_size(T.ones(3, 2))
    assert not T.ones(6).is_same_size(T.ones(2, 3))
    for dtype, size in [("bool", 1), ("uint8", 1), ("int8", 1), ("int16", 2), ("int32", 4), ("int64", 8),
                        ("float16", 2), ("float32", 4), ("float64", 8), ("complex64", 8), ("complex128", 16)]:
        x = T.zeros(2, 3, dtype=getattr(T, dtype))
        assert x.element_size() == size and x.itemsize == size
        assert x.nbytes == 6 * size
        assert getattr(T, dtype).itemsize == size
    assert T.zeros(0, 4).nbytes == 0


def test_dim_order(T):
    """test_dim_order: the dims from outermost to innermost stride."""
    assert T.empty(2, 3, 4).dim_order() == (0, 1, 2)
    assert T.empty(2, 3, 4).permute(2, 0, 1).dim_order() == (1, 2, 0)
    assert T.empty(2, 3).t().dim_order() == (1, 0)
    assert T.empty(()).dim_order() == ()


def test_stride_and_is_contiguous(T):
    x = T.empty(2, 3, 4)
    assert x.stride() == (12, 4, 1)
    assert x.stride(1) == 4 and x.stride(-1) == 1
    assert x.transpose(0, 2).stride() == (1, 4, 12)
    assert not x.transpose(0, 2).is_contiguous()
    assert x[:, 1].stride() == (12, 1) and not x[:, 1].is_contiguous()
    assert x[:, :, ::2].stride() == (12, 4, 2)
    assert x[0].is_contiguous() and x[:1].is_contiguous()
    assert T.empty(3, 1).t().is_contiguous()  # a size-1 dim's stride does not count
    assert T.empty(0, 3).t().is_contiguous()
    assert x.storage_offset() == 0 and x[1, 2].storage_offset() == 20
    assert x.size(-1) == 4 and x.dim() == x.ndim == x.ndimension() == 3 and x.nelement() == x.numel() == 24


def test_stride_dim_out_of_range(T):
    raises(IndexError, r"Dimension out of range \(expected to be in range of \[-3, 2\], but got 3\)",
           T.empty(2, 3, 4).stride, 3)


# ------------------------------------------------------------------------------------------ torch.Size


def test_size_behaves_as_a_tuple(T):
    """test_Size / test_Size_iter / test_Size_scalar / test_Size_concat."""
    s = T.Size([2, 3, 4])
    assert s == (2, 3, 4) and isinstance(s, tuple) and len(s) == 3
    assert s[0] == 2 and s[-1] == 4 and list(s) == [2, 3, 4]
    assert isinstance(s[1:], T.Size) and s[1:] == (3, 4)
    assert isinstance(s + (5,), T.Size) and s + (5,) == (2, 3, 4, 5)
    assert isinstance((1,) + s, T.Size) and (1,) + s == (1, 2, 3, 4)
    assert isinstance(s * 2, T.Size) and s * 2 == (2, 3, 4, 2, 3, 4)
    assert s.numel() == 24 and T.Size([]).numel() == 1 and T.Size([0, 5]).numel() == 0
    assert hash(s) == hash((2, 3, 4))
    assert T.ones(2, 3).size() == T.Size([2, 3]) and isinstance(T.ones(2, 3).size(), T.Size)
    assert T.Size([np.int64(2), T.tensor(3)]) == (2, 3)
    assert str(T.Size([2, 3])).endswith("Size([2, 3])")
    assert pickle.loads(pickle.dumps(s)) == s and isinstance(pickle.loads(pickle.dumps(s)), T.Size)
    raises(TypeError, r"torch.Size\(\) takes an iterable of 'int' \(item 1 is 'float'\)", T.Size, [1, 1.5])
    raises(TypeError, r"torch.Size\(\) takes an iterable of 'int' \(item 0 is 'Tensor'\)", T.Size, [T.tensor(1.0)])
    assert T.zeros(s).shape == (2, 3, 4) and T.ones(2, 3).new_zeros(s).shape == s


# ------------------------------------------------------------------------------------------- printing


def reprs(t):
    """repr without the module prefix of dtypes (torch.float64 vs float64)."""
    return repr(t).replace("torch.", "")


@pytest.fixture
def default_printing(T):
    yield
    T.set_printoptions(profile="default")
    T.set_printoptions(sci_mode=None)


def test_repr_of_small_tensors(T, default_printing):
    """test_print: the exact strings PyTorch prints."""
    assert reprs(T.tensor([1.0, 2.5, -3.0])) == "tensor([ 1.0000,  2.5000, -3.0000])"
    assert reprs(T.tensor([1, 2, 3])) == "tensor([1, 2, 3])"
    assert reprs(T.tensor([True, False])) == "tensor([ True, False])"
    assert reprs(T.tensor(3.5)) == "tensor(3.5000)"
    assert reprs(T.tensor(7)) == "tensor(7)"
    assert reprs(T.tensor([], dtype=T.float64)) == "tensor([], dtype=float64)"
    assert reprs(T.zeros(2, 0)) == "tensor([], size=(2, 0))"
    assert reprs(T.tensor([1, 2], dtype=T.int32)) == "tensor([1, 2], dtype=int32)"
    assert reprs(T.tensor([1.0, 2.0], dtype=T.float64)) == "tensor([1., 2.], dtype=float64)"
    assert reprs(T.tensor([1e-5, 1e5])) == "tensor([1.0000e-05, 1.0000e+05])"
    assert reprs(T.tensor([float("nan"), float("inf"), -float("inf"), 1.0])) == "tensor([nan, inf, -inf, 1.])"
    assert reprs(T.tensor([[1.5, 2], [3, 4]])) == "tensor([[1.5000, 2.0000],\n        [3.0000, 4.0000]])"
    assert reprs(T.tensor([1.0, 2.0], requires_grad=True)) == "tensor([1., 2.], requires_grad=True)"
    assert reprs(T.tensor([0.1, 0.25], dtype=T.float16)) == "tensor([0.1000, 0.2500], dtype=float16)"
    assert reprs(T.tensor([1, 2], dtype=T.uint8)) == "tensor([1, 2], dtype=uint8)"


def test_repr_of_complex_and_grad_fn(T, default_printing):
    assert reprs(T.tensor([1 + 2j, -3.5j])) == "tensor([1.+2.0000j, -0.-3.5000j])"
    y = T.tensor([1.0, 2.0], requires_grad=True) * 2
    assert reprs(y).startswith("tensor([2., 4.], grad_fn=<MulBackward0>)")


def test_repr_of_large_tensors(T, default_printing):
    """More than 1000 elements are summarised with ... and three edge items."""
    assert reprs(T.arange(2000.0)) == "tensor([0.0000e+00, 1.0000e+00, 2.0000e+00,  ..., 1.9970e+03, 1.9980e+03,\n" \
        "        1.9990e+03])"
    assert reprs(T.arange(1001)) == "tensor([   0,    1,    2,  ...,  998,  999, 1000])"
    text = reprs(T.ones(3, 1000))
    assert text.startswith("tensor([[1., 1., 1.,  ..., 1., 1., 1.],") and text.count("\n") == 2


def test_set_printoptions(T, default_printing):
    T.set_printoptions(precision=2)
    assert reprs(T.tensor([1.23456789, 2.5])) == "tensor([1.23, 2.50])"
    T.set_printoptions(profile="default")
    T.set_printoptions(threshold=5)
    assert reprs(T.arange(10.0)) == "tensor([0., 1., 2.,  ..., 7., 8., 9.])"
    T.set_printoptions(edgeitems=1)
    assert reprs(T.arange(10.0)) == "tensor([0.,  ..., 9.])"
    T.set_printoptions(profile="default")
    T.set_printoptions(sci_mode=True)
    assert reprs(T.tensor([1.5, 2.0])) == "tensor([1.5000e+00, 2.0000e+00])"
    T.set_printoptions(sci_mode=False)
    assert reprs(T.tensor([1e-5, 1e5])) == "tensor([     0.0000, 100000.0000])"
    T.set_printoptions(sci_mode=None)
    T.set_printoptions(linewidth=20)
    assert reprs(T.arange(6.0)) == "tensor([0., 1., 2.,\n        3., 4., 5.])"
    T.set_printoptions(profile="full")
    assert "..." not in reprs(T.arange(2000))
    T.set_printoptions(profile="short")
    assert reprs(T.tensor([1.23456])) == "tensor([1.23])"
    T.set_printoptions(profile="default")
    assert reprs(T.tensor([1.23456])) == "tensor([1.2346])"


# -------------------------------------------------------------------------------------- random numbers


def test_manual_seed_reproducibility(T):
    """test_manual_seed / test_RNG_after_pickle: the same seed gives the same draws, from every sampler;
    get_rng_state/set_rng_state replay them."""
    draws = []
    for _ in range(2):
        T.manual_seed(123)
        draws.append([values(T.rand(4)), values(T.randn(3)), values(T.randint(0, 10, (5,))), values(T.randperm(6)),
                      values(T.empty(3).uniform_(-1, 1)), values(T.multinomial(T.ones(5), 3)),
                      values(T.bernoulli(T.full((4,), 0.5))), values(T.normal(0.0, 1.0, (2,)))])
    for a, b in zip(*draws):
        np.testing.assert_array_equal(a, b)
    state = T.get_rng_state()
    first = values(T.rand(3))
    T.set_rng_state(state)
    np.testing.assert_array_equal(values(T.rand(3)), first)
    g = T.Generator().manual_seed(5)
    a = values(T.rand(3, generator=g))
    g.manual_seed(5)
    np.testing.assert_array_equal(values(T.rand(3, generator=g)), a)
    assert T.initial_seed() == 123


def test_random_ranges(T):
    T.manual_seed(0)
    u = values(T.empty(1000).uniform_(2, 3))
    assert u.min() >= 2 and u.max() < 3
    r = values(T.randint(3, 7, (1000,)))
    assert set(np.unique(r)) == {3, 4, 5, 6}
    assert sorted(values(T.randperm(10)).tolist()) == list(range(10))
    b = values(T.bernoulli(T.tensor([0.0, 1.0, 0.0, 1.0])))
    np.testing.assert_array_equal(b, [0, 1, 0, 1])
    m = values(T.multinomial(T.tensor([0.0, 1.0, 0.0]), 4, replacement=True))
    np.testing.assert_array_equal(m, [1, 1, 1, 1])
    s = values(T.multinomial(T.tensor([1.0, 1.0, 1.0, 0.0]), 3))
    assert sorted(s.tolist()) == [0, 1, 2]
    n = values(T.normal(T.tensor([0.0, 100.0]), T.tensor([0.0, 0.0])))
    np.testing.assert_array_equal(n, [0, 100])
    e = values(T.empty(1000).exponential_(2.0))
    assert e.min() >= 0 and abs(e.mean() - 0.5) < 0.1


def test_sampler_argument_errors(T):
    """test_bernoulli / test_multinomial / test_normal / test_uniform argument checks."""
    raises(RuntimeError, r"p", T.empty(3).bernoulli_, 1.5)
    raises(RuntimeError, None, T.bernoulli, T.tensor([1.5]))
    raises(RuntimeError, r"probability tensor contains either `inf`, `nan` or element < 0", T.multinomial,
           T.tensor([1.0, -1.0]), 1)
    raises(RuntimeError, r"cannot sample n_sample > prob_dist.size\(-1\) samples without replacement",
           T.multinomial, T.tensor([1.0, 1.0]), 3)
    raises(RuntimeError, r"invalid multinomial distribution \(sum of probabilities <= 0\)", T.multinomial,
           T.tensor([0.0, 0.0]), 1)
    raises(RuntimeError, r"prob_dist must be 1 or 2 dim", T.multinomial, T.ones(2, 2, 2), 1)
    raises(RuntimeError, r"cannot sample n_sample <= 0 samples", T.multinomial, T.ones(3), 0)
    raises(RuntimeError, r"normal expects all elements of std >= 0.0", T.normal, T.zeros(2), T.tensor([-1.0, 1.0]))
    raises(RuntimeError, r"normal expects std >= 0.0, but found std -1|normal_ expects std >= 0.0, but found std -1",
           T.empty(3).normal_, 0, -1)
    raises(RuntimeError, r"uniform_ expects to return a \[from, to\) range, but found from=2 > to=1",
           T.empty(3).uniform_, 2, 1)
    raises(NotImplementedError, r"not implemented for 'Long'", T.tensor([1, 2]).uniform_)
    raises(NotImplementedError, r"not implemented for 'Long'", T.tensor([1, 2]).normal_)
    raises(RuntimeError, r"random_ expects 'from' to be less than 'to', but got from=3 >= to=3", T.empty(2).random_,
           3, 3)
    raises(RuntimeError, r"exponential_ expects lambda > 0.0, but found lambda=-1", T.empty(2).exponential_, -1.0)


def test_multinomial_shapes(T):
    T.manual_seed(1)
    probs = T.tensor([[0.2, 0.8, 0.0], [1.0, 0.0, 0.0]])
    out = T.multinomial(probs, 2, replacement=True)
    assert tuple(out.shape) == (2, 2) and dtype_name(out) == "int64"
    same(out[1], [0, 0])
    assert 2 not in values(out[0]).tolist()


# ------------------------------------------------------------------------------------------ apply_, map_


def test_apply_and_map(T):
    """test_apply / test_map / test_map2: Python callables over each element, in place."""
    x = T.arange(1.0, 5.0)
    out = x.apply_(lambda v: v * v)
    assert out is x
    same(x, [1, 4, 9, 16])
    y = T.tensor([1, 2, 3])
    y.apply_(lambda v: v + 10)
    same(y, [11, 12, 13], "int64")
    a = T.tensor([[1.0, 2.0], [3.0, 4.0]])
    a.map_(T.tensor([10.0, 20.0]), lambda u, v: u * v)  # the other tensor broadcasts
    same(a, [[10, 40], [30, 80]])
    x = T.tensor([1.0], requires_grad=True)
    raises(RuntimeError, r"apply_ is only implemented on CPU tensors|requires grad|leaf Variable", x.apply_,
           math.sqrt)


def test_numpy_ufunc_of_a_tensor_is_a_tensor(T):
    """test_ufunc_with_tensor_input (PyTorch's __array_wrap__): np.sin(t) is a tensor again."""
    y = np.sin(T.tensor([0.0, 1.0]))
    assert isinstance(y, T.Tensor)
    np.testing.assert_allclose(values(y), np.sin([0.0, 1.0]).astype(np.float32), rtol=1e-6)
