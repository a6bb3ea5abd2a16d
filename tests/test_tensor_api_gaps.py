"""The Tensor API's smaller gaps with PyTorch: in-place twins (comparisons, logical and bitwise
ops, arithmetic aliases, shape changes), the in-place function forms (autograd.exp_(x)), and
memory-layout metadata (stride, storage_offset, ...). Values are checked without PyTorch; the
comparisons with PyTorch skip when it is missing."""

import warnings

import numpy as np
import pytest

import autograd
from autograd import Tensor

try:
    import torch
except ImportError:  # CI: the values are still checked
    torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")


def _t(values, dtype=None):
    return autograd.tensor(values, dtype=dtype)


# -- in-place comparisons, logical and bitwise ops ------------------------------------------------

COMPARISONS = {"eq_": np.equal, "ne_": np.not_equal, "not_equal_": np.not_equal, "lt_": np.less,
               "less_": np.less, "le_": np.less_equal, "less_equal_": np.less_equal, "gt_": np.greater,
               "greater_": np.greater, "ge_": np.greater_equal, "greater_equal_": np.greater_equal,
               "logical_and_": np.logical_and, "logical_or_": np.logical_or, "logical_xor_": np.logical_xor}


@pytest.mark.parametrize("name", sorted(COMPARISONS))
def test_in_place_comparisons_write_ones_and_zeros_in_the_tensors_dtype(name):
    a, b = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    x = Tensor(a.astype(np.float32))
    assert getattr(x, name)(Tensor(b.astype(np.float32))) is x
    assert x.dtype == autograd.float32
    np.testing.assert_array_equal(x.numpy(), COMPARISONS[name](a, b).astype(np.float32))
    n = _t([1, 2, 3])
    getattr(n, name)(_t(2) if name.startswith("logical") else 2)  # (PyTorch's logical ops take no number)
    assert n.dtype == autograd.int64
    np.testing.assert_array_equal(n.numpy(), COMPARISONS[name](np.array([1, 2, 3]), 2).astype(np.int64))


def test_logical_not_and_bitwise_in_place():
    x = _t([0.0, 2.0])
    x.logical_not_()
    np.testing.assert_array_equal(x.numpy(), [1.0, 0.0])
    n = _t([1, 2, 6])
    n.bitwise_and_(3)
    np.testing.assert_array_equal(n.numpy(), [1, 2, 2])
    n.bitwise_or_(_t([4, 0, 1]))
    np.testing.assert_array_equal(n.numpy(), [5, 2, 3])
    n.bitwise_xor_(1)
    np.testing.assert_array_equal(n.numpy(), [4, 3, 2])
    n.bitwise_left_shift_(2)
    np.testing.assert_array_equal(n.numpy(), [16, 12, 8])
    n.bitwise_right_shift_(1)
    np.testing.assert_array_equal(n.numpy(), [8, 6, 4])
    n.bitwise_not_()
    np.testing.assert_array_equal(n.numpy(), [-9, -7, -5])
    with pytest.raises(RuntimeError, match="not implemented for 'Float'"):
        _t([1.0]).bitwise_and_(1)


def test_an_in_place_comparison_keeps_the_graph_with_a_zero_gradient():
    """As PyTorch: b.eq_(0) on a recorded tensor keeps b requiring grad; its gradient is 0."""
    w = Tensor(np.array([1.0, 0.0, 2.0]), requires_grad=True)
    b = w * 1.0
    b.eq_(0)
    assert b.requires_grad and not b.is_leaf
    np.testing.assert_array_equal(b.numpy(), [0.0, 1.0, 0.0])
    (b * 3.0 + w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0, 1.0])
    leaf = Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        leaf.gt_(0)


# -- arithmetic aliases ---------------------------------------------------------------------------

ALIASES = [  # (in-place name, arguments, the out-of-place value)
    ("multiply_", (2.0,), lambda a: a * 2), ("divide_", (4.0,), lambda a: a / 4),
    ("true_divide_", (4.0,), lambda a: a / 4), ("subtract_", (1.0,), lambda a: a - 1),
    ("negative_", (), lambda a: -a), ("absolute_", (), np.abs), ("square_", (), np.square),
    ("clip_", (-0.5, 0.5), lambda a: np.clip(a, -0.5, 0.5)), ("arctan2_", (_t(0.5),), lambda a: np.arctan2(a, 0.5)),
    ("sinc_", (), np.sinc), ("logit_", (), lambda a: np.log(np.abs(a) / (1 - np.abs(a)))),
]


@pytest.mark.parametrize("name, args, expected", ALIASES, ids=[case[0] for case in ALIASES])
def test_arithmetic_alias_in_place_matches_the_out_of_place_value(name, args, expected):
    a = np.array([-0.75, -0.2, 0.0, 0.3, 0.9])
    if name == "logit_":
        a = np.abs(a) + (a == 0) * 0.5
    x = Tensor(a.copy())
    assert getattr(x, name)(*args) is x
    np.testing.assert_allclose(x.numpy(), expected(a), rtol=1e-12)


def test_subtract_takes_alpha_and_divide_takes_rounding_mode():
    x = _t([5.0, 7.0])
    x.subtract_(_t([1.0, 2.0]), alpha=2)
    np.testing.assert_array_equal(x.numpy(), [3.0, 3.0])
    x.divide_(2, rounding_mode="floor")
    np.testing.assert_array_equal(x.numpy(), [1.0, 1.0])
    h = _t([-1.0, 0.0, 2.0])
    h.heaviside_(_t(0.5))
    np.testing.assert_array_equal(h.numpy(), [0.0, 0.5, 1.0])


def test_integer_division_in_place_refuses_the_float_result():
    with pytest.raises(RuntimeError, match="can't be cast"):
        _t([1, 2]).divide_(2)


@pytest.mark.parametrize("name, args", [("multiply_", (3.0,)), ("divide_", (2.0,)), ("square_", ()),
                                        ("clip_", (-0.5, 0.5)), ("sinc_", ()), ("arctan2_", (_t(0.7),)),
                                        ("negative_", ()), ("absolute_", ()), ("subtract_", (1.5,))])
def test_recorded_in_place_alias_gradients(name, args):
    def f(w):
        h = w * 1.0
        getattr(h, name)(*args)
        return h * w

    w = Tensor(np.array([[-0.8, 0.3], [0.45, 1.2]]), requires_grad=True)
    assert autograd.gradcheck(f, (w,))


# -- in-place function forms ----------------------------------------------------------------------

def test_in_place_function_forms_change_their_input():
    x = _t([0.0, 1.0])
    assert autograd.exp_(x) is x
    np.testing.assert_allclose(x.numpy(), np.exp([0.0, 1.0]), rtol=1e-6)
    autograd.clamp_(x, max=2.0)
    np.testing.assert_allclose(x.numpy(), [1.0, 2.0])
    autograd.fill_(x, 3.0)
    np.testing.assert_array_equal(x.numpy(), [3.0, 3.0])
    autograd.zero_(x)
    np.testing.assert_array_equal(x.numpy(), [0.0, 0.0])
    autograd.sigmoid_(x)
    np.testing.assert_array_equal(x.numpy(), [0.5, 0.5])


def test_every_in_place_function_form_has_its_method():
    from autograd.ops.functions import IN_PLACE_FUNCTIONS

    assert [name for name in IN_PLACE_FUNCTIONS if not hasattr(Tensor, name)] == []


@needs_torch
def test_the_in_place_function_forms_are_pytorchs():
    from autograd.ops.functions import IN_PLACE_FUNCTIONS

    assert [name for name in IN_PLACE_FUNCTIONS if not hasattr(torch, name)] == []


# -- in-place shape changes -----------------------------------------------------------------------

def test_shape_changes_in_place_keep_the_memory():
    x = autograd.arange(6.0).reshape(2, 3)
    before = x.data_ptr()
    assert x.t_() is x and x.shape == (3, 2) and x.stride() == (1, 3)
    x.transpose_(0, 1)
    assert x.shape == (2, 3) and x.is_contiguous()
    x.swapaxes_(0, 1)
    x.swapdims_(0, 1)
    x.unsqueeze_(1)
    assert x.shape == (2, 1, 3)
    x.squeeze_(1)
    assert x.shape == (2, 3) and x.data_ptr() == before
    np.testing.assert_array_equal(x.numpy(), np.arange(6.0).reshape(2, 3))
    x.unsqueeze_(0).squeeze_()
    assert x.shape == (2, 3)


def test_a_recorded_shape_change_differentiates_as_the_view():
    def f(w):
        h = w * 2.0
        h.t_()
        h.unsqueeze_(0)
        return h * autograd.arange(6.0, dtype=autograd.float64).reshape(1, 3, 2)

    assert autograd.gradcheck(f, (Tensor(np.random.default_rng(0).normal(size=(2, 3)), requires_grad=True),))


def test_shape_change_in_place_refusals():
    w = Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w.t_()
    h = w * 1.0
    saved = h * h
    h.t_()
    assert h._version == 1
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        saved.sum().backward()
    x = autograd.zeros(2, 3)
    view = x[0]
    with pytest.raises(RuntimeError, match="live views"):
        x.t_()
    del view


def test_a_view_changed_in_place_still_writes_its_base():
    base = autograd.zeros(2, 3)
    view = base[:, 1:]
    view.t_()
    w = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    view[0] = w * 3.0  # base's column 1
    np.testing.assert_array_equal(base.numpy(), [[0.0, 3.0, 0.0], [0.0, 6.0, 0.0]])
    base.sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 3.0])


def test_resize():
    x = autograd.arange(6.0)
    x.resize_(2, 2)
    np.testing.assert_array_equal(x.numpy(), [[0.0, 1.0], [2.0, 3.0]])
    x.resize_(3, 3)  # the memory past the shrunk tensor shows again, as PyTorch's storage
    np.testing.assert_array_equal(x.numpy().ravel()[:6], np.arange(6.0))
    y = autograd.zeros(4)
    assert y.resize_as_(autograd.zeros(2, 2)).shape == (2, 2)
    assert y.resize_(2, 2) is y
    with pytest.raises(RuntimeError, match="cannot resize variables that require grad"):
        Tensor(np.ones(2), requires_grad=True).resize_(3)
    with pytest.raises(RuntimeError, match="negative dimension"):
        autograd.zeros(2).resize_(-1)


# -- metadata -------------------------------------------------------------------------------------

LAYOUTS = {  # name: (shape, how the tensor is made from a zeros tensor of that shape)
    "contiguous": ((2, 3), lambda t: t),
    "transposed": ((2, 3), lambda t: t.t()),
    "size one": ((2, 1, 3), lambda t: t),
    "empty": ((0, 3), lambda t: t),
    "sliced": ((4, 5), lambda t: t[1:, ::2]),
    "permuted": ((2, 3, 4), lambda t: t.permute(2, 0, 1)),
    "scalar": ((), lambda t: t),
}
EXPECTED = {  # stride, storage_offset, dim_order
    "contiguous": ((3, 1), 0, (0, 1)), "transposed": ((1, 3), 0, (1, 0)), "size one": ((3, 3, 1), 0, (0, 1, 2)),
    "empty": ((3, 1), 0, (0, 1)), "sliced": ((5, 2), 5, (0, 1)), "permuted": ((1, 12, 4), 0, (1, 2, 0)),
    "scalar": ((), 0, ()),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_strides_in_elements(layout):
    shape, make = LAYOUTS[layout]
    x = make(autograd.zeros(shape))
    assert (x.stride(), x.storage_offset(), x.dim_order()) == EXPECTED[layout]
    if x.ndim:
        assert x.stride(-1) == EXPECTED[layout][0][-1]
    if torch is not None:
        y = make(torch.zeros(shape))
        assert (y.stride(), y.storage_offset(), y.dim_order()) == EXPECTED[layout]


def test_metadata():
    x = autograd.zeros(2, 3, dtype=autograd.float64)
    assert (x.itemsize, x.nbytes, x.element_size(), x.ndimension()) == (8, 48, 8, 2)
    assert x.data_ptr() == x.numpy().ctypes.data and x[1].data_ptr() == x.data_ptr() + 24
    assert x.const_data_ptr() == x.data_ptr()
    assert x.is_signed() and not autograd.zeros(2, dtype=autograd.bool).is_signed()
    assert not autograd.zeros(2, dtype=autograd.uint8).is_signed()
    assert autograd.zeros(2, dtype=autograd.int8).is_signed()
    assert not x.is_complex() and not x.is_neg() and not x.is_conj() and not x.is_inference()
    assert x.is_same_size(autograd.ones(2, 3)) and not x.is_same_size(autograd.ones(3, 2))
    # the kind predicates are functions too, as PyTorch's (torch.is_complex(x), ...)
    assert autograd.is_signed(x) and not autograd.is_signed(autograd.zeros(2, dtype=autograd.uint8))
    assert not (autograd.is_complex(x) or autograd.is_neg(x) or autograd.is_conj(x) or autograd.is_inference(x))
    assert autograd.is_same_size(x, autograd.ones(2, 3))


def test_empty_strided_and_friends():
    e = autograd.empty_strided((2, 3), (1, 2))
    assert e.shape == (2, 3) and e.stride() == (1, 2) and e.dtype == autograd.float32
    n = autograd.zeros(1, dtype=autograd.float64).new_empty_strided((2, 2), (0, 1))
    assert n.stride() == (0, 1) and n.dtype == autograd.float64
    with pytest.raises(RuntimeError, match="mismatch in length"):
        autograd.empty_strided((2, 3), (1,))
    a = np.arange(3.0)
    shared = autograd.asarray(a)
    a[0] = 9.0
    assert shared[0].item() == 9.0 and autograd.asarray(a, copy=True).data_ptr() != a.ctypes.data
    assert autograd.asarray([1, 2]).dtype == autograd.int64 and autograd.asarray([1.5]).dtype == autograd.float32
    with pytest.raises(ValueError):
        autograd.asarray(a, dtype=autograd.float32, copy=False)
    assert autograd.scalar_tensor(3).dtype == autograd.float32 and autograd.scalar_tensor(3).ndim == 0
    f = autograd.frombuffer(bytearray(b"\x01\x00\x02\x00"), dtype=autograd.int16)
    np.testing.assert_array_equal(f.numpy(), [1, 2])


@needs_torch
def test_layout_and_creation_match_pytorch():
    for module in (autograd, torch):
        x = module.zeros(2, 3)
        assert (x.itemsize, x.nbytes, x.ndimension(), x.is_signed(), x.is_complex()) == (4, 24, 2, True, False)
    assert torch.empty_strided((2, 3), (1, 2)).stride() == (1, 2)
    assert torch.scalar_tensor(3).dtype == torch.float32
    assert torch.asarray([1, 2]).dtype == torch.int64


# -- real tensors' complex views, in-place products, unsafe splits, Cholesky helpers ----------------

def test_conjugation_of_real_tensors_is_the_tensor():
    x = Tensor(np.array([-1.0, 0.0, 2.0, np.inf, -np.inf, np.nan]), requires_grad=True)
    for name in ("conj", "resolve_conj", "resolve_neg", "conj_physical"):
        assert getattr(x, name)() is x and getattr(autograd, name)(x) is x
    assert x.real is x and autograd.real(x) is x and x.detach().conj_physical_().tolist()[:3] == [-1.0, 0.0, 2.0]
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):  # (a write all the same: PyTorch's)
        x.conj_physical_()
    assert x.isreal().tolist() == [True] * 6
    with pytest.raises(RuntimeError, match="imag is not implemented for tensors with non-complex dtypes"):
        _ = x.imag
    np.testing.assert_array_equal(x.angle().detach().numpy(), [np.pi, 0.0, 0.0, 0.0, np.pi, np.nan])
    (x.angle() * 2.0).sum().backward()  # piecewise constant: in the graph, with a zero gradient (PyTorch's)
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros(6))
    assert autograd.angle(autograd.tensor([1, -2])).dtype == autograd.float32
    m = autograd.arange(6.0).reshape(2, 3)
    assert m.H.shape == (3, 2) and autograd.zeros(2, 3, 4).mH.shape == (2, 4, 3)
    with pytest.raises(RuntimeError, match="only supported on matrices"):
        _ = autograd.zeros(2, 3, 4).H
    c = autograd.tensor(np.array([1 + 2j]))
    assert c.conj().tolist() == [1 - 2j] and c.imag.tolist() == [2.0] and not c.isreal().item()


def test_in_place_products_and_unsafe_splits():
    m = autograd.ones(2, 2)
    assert m.addmm_(autograd.ones(2, 3), autograd.ones(3, 2), beta=0.5) is m
    np.testing.assert_array_equal(m.numpy(), np.full((2, 2), 3.5))
    v = autograd.ones(2)
    v.addmv_(autograd.ones(2, 3), autograd.ones(3), alpha=2)
    np.testing.assert_array_equal(v.numpy(), [7.0, 7.0])
    r = autograd.zeros(2, 3)
    r.addr_(autograd.tensor([1.0, 2.0]), autograd.tensor([1.0, 0.0, 1.0]))
    np.testing.assert_array_equal(r.numpy(), [[1, 0, 1], [2, 0, 2]])
    b = autograd.zeros(2, 2)
    b.addbmm_(autograd.ones(4, 2, 3), autograd.ones(4, 3, 2))
    np.testing.assert_array_equal(b.numpy(), np.full((2, 2), 12.0))
    batched = autograd.zeros(1, 2, 2)
    batched.baddbmm_(autograd.ones(1, 2, 3), autograd.ones(1, 3, 2))
    np.testing.assert_array_equal(batched.numpy(), np.full((1, 2, 2), 3.0))
    assert [p.shape for p in autograd.arange(5.0).unsafe_chunk(2)] == [(3,), (2,)]
    assert [p.shape for p in autograd.arange(5.0).unsafe_split(2)] == [(2,), (2,), (1,)]
    assert [p.shape for p in autograd.arange(5.0).unsafe_split_with_sizes([1, 4])] == [(1,), (4,)]


def test_cholesky_solve_inverse_and_qr():
    rng = np.random.default_rng(5)
    b = rng.normal(size=(3, 3))
    a = b @ b.T + 3 * np.eye(3)
    lower, rhs = np.linalg.cholesky(a), rng.normal(size=(3, 2))
    np.testing.assert_allclose(autograd.cholesky_solve(Tensor(rhs), Tensor(lower)).numpy(), np.linalg.solve(a, rhs),
                               atol=1e-12)
    np.testing.assert_allclose(Tensor(rhs).cholesky_solve(Tensor(lower.T.copy()), upper=True).numpy(),
                               np.linalg.solve(a, rhs), atol=1e-12)
    np.testing.assert_allclose(Tensor(lower).cholesky_inverse().numpy(), np.linalg.inv(a), atol=1e-12)
    # (the factor's triangle is all they read, and their gradient is PyTorch's formula of the whole factor: checked
    # through tril / triu, as PyTorch's OpInfo checks them, gradcheck_wrapper_triangular_input)
    assert autograd.gradcheck(lambda b, L: autograd.cholesky_solve(b, L.tril()),
                              (Tensor(rhs, requires_grad=True), Tensor(lower, requires_grad=True)))
    assert autograd.gradcheck(lambda u: autograd.cholesky_inverse(u.triu(), upper=True),
                              (Tensor(lower.T.copy(), requires_grad=True),))
    q, r = Tensor(rng.normal(size=(4, 3))).qr()
    assert q.shape == (4, 3) and r.shape == (3, 3)
    if torch is not None:
        np.testing.assert_allclose(torch.cholesky_inverse(torch.tensor(lower)).numpy(), np.linalg.inv(a), atol=1e-12)
        np.testing.assert_allclose(torch.cholesky_solve(torch.tensor(rhs), torch.tensor(lower)).numpy(),
                                   np.linalg.solve(a, rhs), atol=1e-12)


def test_as_strided_in_place():
    x = autograd.arange(6.0)
    assert x.as_strided_((2, 2), (1, 2)) is x and x.stride() == (1, 2)
    np.testing.assert_array_equal(x.numpy(), [[0.0, 2.0], [1.0, 3.0]])
    with pytest.raises(RuntimeError, match="non-contiguous"):
        autograd.zeros(2, 3).t().as_strided_((2,), (1,))
    w = Tensor(np.ones(4), requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable"):
        w.as_strided_((2,), (1,))
    b = w * 1.0
    b.as_strided_((3, 2), (1, 1))  # overlapping windows: their gradients add up
    (b * autograd.arange(6.0, dtype=autograd.float64).reshape(3, 2)).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [0.0, 3.0, 7.0, 5.0])


def test_storage_tells_which_tensors_share_memory():
    def same_memory(a, b):
        return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()

    x = autograd.zeros(2, 3, dtype=autograd.float64)
    assert same_memory(x, x[1]) and same_memory(x, x.t()) and same_memory(x, x.view(6)) and same_memory(x, x.detach())
    assert not same_memory(x, x.clone()) and not same_memory(x, x.float())
    assert x[1].untyped_storage().nbytes() == 48 and len(x[1].storage()) == 6 and x.storage().element_size() == 8
    assert x.to_dense() is x and x.to_dense(autograd.float32).dtype == autograd.float32
    if torch is not None:
        y = torch.zeros(2, 3, dtype=torch.float64)
        assert y[1].untyped_storage().nbytes() == 48 and y[1].untyped_storage().data_ptr() == y.data_ptr()


@pytest.mark.parametrize("lib", ["autograd", "torch"])
def test_set_makes_a_tensor_show_another_s_memory(lib):
    T = autograd if lib == "autograd" else pytest.importorskip("torch")
    a, b = T.zeros(3), T.arange(6.0).reshape(2, 3)
    before = a.view(3)
    assert a.set_(b) is a and a.shape == (2, 3) and a.data_ptr() == b.data_ptr() and a._version == 1
    assert a.is_set_to(b) and b.is_set_to(a) and not a.is_set_to(b.view(6)) and not a.is_set_to(b.clone())
    b[0, 0] = 7.0  # one memory: seen through both
    assert a[0, 0].item() == 7.0 and before.tolist() == [0.0, 0.0, 0.0]  # an older view keeps its memory
    c = T.zeros(2)
    c.set_(T.zeros(2, 2).t())  # the source's strides too
    assert c.stride() == (1, 2) and not c.is_contiguous()
    assert T.zeros(2).set_().shape == (0,)
    x = T.arange(4.0)
    y = T.zeros(1).set_(x.untyped_storage(), 1, (2,), (1,))  # a window of a storage, in elements
    assert y.tolist() == [1.0, 2.0] and T.zeros(1).set_(x, 2, (2,)).tolist() == [2.0, 3.0]
    assert T.zeros(1).set_(x.untyped_storage()).tolist() == [0.0, 1.0, 2.0, 3.0]
    assert T.zeros(1, dtype=T.int32).set_(T.tensor([1.0]).untyped_storage()).tolist() == [1065353216]  # its bytes
    with pytest.raises(RuntimeError, match="Could not set tensor of type double to a tensor of type float"):
        T.zeros(3).set_(T.zeros(2, dtype=T.float64))
    if T is autograd:  # (PyTorch grows the storage: NumPy's memory cannot grow under the tensors that share it)
        with pytest.raises(RuntimeError, match="out of bounds for storage of size 16"):
            T.zeros(1).set_(T.zeros(4).untyped_storage(), 3, (3,), (1,))
    with pytest.raises(TypeError, match="set_"):
        T.zeros(1).set_(5)
    p = T.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        p.set_(T.ones(2))
    with T.no_grad():  # swapping a parameter's memory, as programs do under no_grad
        p.set_(T.ones(2))
    assert p.tolist() == [1.0, 1.0] and p.requires_grad and p.is_leaf
    h = T.ones(3, requires_grad=True) * 2  # not differentiable: backward through it raises
    h.set_(T.ones(3))
    assert h.requires_grad
    with pytest.raises(RuntimeError, match="derivative for .*set_ is not implemented"):
        h.sum().backward()
    s = T.zeros(2)
    s.set_(T.ones(2, requires_grad=True))
    assert s.requires_grad


@pytest.mark.parametrize("lib", ["autograd", "torch"])
def test_a_storage_reads_and_writes_the_memory_it_shows(lib):
    T = autograd if lib == "autograd" else pytest.importorskip("torch")
    p = T.tensor([[4.0, 1.0], [5.0, 3.0]])
    with warnings.catch_warnings():  # (TypedStorage is deprecated: PyTorch warns once a process)
        warnings.simplefilter("ignore")
        typed = p[1].storage()  # the whole memory, counted in p's elements
    assert len(typed) == 4 and typed.element_size() == 4 and typed.nbytes() == 16
    assert typed[0] == 4.0 and typed[-1] == 3.0 and typed.tolist() == [4.0, 1.0, 5.0, 3.0] and list(typed)[2] == 5.0
    typed[0] = 2.0  # seen by the tensor
    assert p[0, 0].item() == 2.0
    with pytest.raises(IndexError, match="index 4 out of range for storage of size 4"):
        typed[4]
    with pytest.raises(RuntimeError, match="slices are only supported in UntypedStorage"):
        typed[1:3]
    raw = p.untyped_storage()  # bytes
    assert len(raw) == 16 and raw[3] == 64 and raw[0:4].tolist() == [0, 0, 0, 64]
    raw[0] = 1  # the lowest byte of 2.0's mantissa
    assert p[0, 0].item() == float(np.frombuffer(np.array([1, 0, 0, 64], np.uint8).tobytes(), np.float32)[0])


@pytest.mark.parametrize("lib", ["autograd", "torch"])
def test_a_write_that_reads_part_of_the_memory_it_writes_is_refused(lib):
    T = autograd if lib == "autograd" else pytest.importorskip("torch")

    def outcome(write):
        x = T.arange(8.0)
        try:
            write(x)
        except RuntimeError as error:
            assert "refer to a single memory location" in str(error)
            return "refused"
        return x.tolist()

    refused = [lambda x: x.__setitem__(slice(2, 7), x[0:5]), lambda x: x[2:7].copy_(x[0:5]),
               lambda x: x[1:].add_(x[:-1]), lambda x: x[1:].mul_(x[:-1]),
               lambda x: x.view(2, 4).t().copy_(x.view(4, 2)),  # one span, other steps
               lambda x: x.__setitem__(T.tensor([1, 2]), x[0:2]), lambda x: x.view(2, 4).__setitem__(0, x[1:5])]
    for write in refused:
        assert outcome(write) == "refused"
    assert outcome(lambda x: x.copy_(x)) == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]  # the same elements
    assert outcome(lambda x: x[0:4].copy_(x[4:8])) == [4.0, 5.0, 6.0, 7.0, 4.0, 5.0, 6.0, 7.0]  # disjoint
    assert outcome(lambda x: x[::2].copy_(x[1::2])) == [1.0, 1.0, 3.0, 3.0, 5.0, 5.0, 7.0, 7.0]  # interleaved
    assert outcome(lambda x: x.add_(x)) == [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
