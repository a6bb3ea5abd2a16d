"""Views and shape ops ported from PyTorch's test/test_view_ops.py (TestViewOps and TestOldViewOps).

Which ops return views (sharing memory, with ``_base``), that writes through a view reach its
base, and the shapes, values and errors of the shape ops. Each test runs on chainrule's
`autograd` and, where it is installed, on PyTorch (fixture `T`).
"""

import itertools
import warnings

import numpy as np
import pytest

from tests.ported import DTYPES, dtype_name, raises, same, sample, values


def is_view_of(base, other):
    """other is a view whose base is base, sharing its memory."""
    return (other._is_view() and other is not base and other._base is base
            and base.untyped_storage().data_ptr() == other.untyped_storage().data_ptr())


def view_or_documented_copy(T, base, v):
    """PyTorch's result is a view of base. chainrule documents (README) that conj() returns a copy
    instead: there the result must not pass for a view, so no write into it could be replayed on
    base's history."""
    if T.__name__ == "autograd":
        return v._base is not base and v.untyped_storage().data_ptr() != base.untyped_storage().data_ptr() or \
            v.numel() == 0
    return is_view_of(base, v)


def is_view_of_same_base(v1, v2):
    return v1._is_view() and v1 is not v2 and is_view_of(v1._base, v2)



def test_conj_of_real_is_itself(T):
    t = T.ones(5, 5)
    assert t.conj() is t


@pytest.mark.parametrize("dtype", DTYPES[1:])
def test_view_as_dtype(T, dtype):
    """x.view(dtype) reads x's bytes as dtype: sizes and strides scale with the element sizes."""
    rng = np.random.default_rng(11)
    made = [sample(T, (4, 4, 64), dtype, rng), sample(T, (4, 4, 64), dtype, rng).permute(1, 0, 2),
            sample(T, (4, 64, 4), dtype, rng).permute(2, 0, 1), sample(T, (1, 5, 1), dtype, rng).expand(5, 5, 64),
            sample(T, (2, 5, 256), dtype, rng)[1::2, 1:, ::2], sample(T, (0, 5, 64), dtype, rng),
            sample(T, (), dtype, rng)]
    size = np.dtype(dtype).itemsize
    for a in made:
        for target in DTYPES[1:]:
            other = np.dtype(target).itemsize
            if other != size and a.dim() == 0:
                raises(RuntimeError, r"self.dim\(\) cannot be 0", a.view, getattr(T, target))
                continue
            if other != size and a.stride(-1) != 1:
                raises(RuntimeError, r"self.stride\(-1\) must be 1", a.view, getattr(T, target))
                continue
            v = a.view(getattr(T, target))
            assert dtype_name(v) == target
            assert v.data_ptr() == a.data_ptr()
            shape = list(a.shape)
            if shape:
                shape[-1] = shape[-1] * size // other
            assert tuple(v.shape) == tuple(shape)
            back = v.view(getattr(T, dtype))
            np.testing.assert_array_equal(values(back), values(a))
            if other == size:
                expected = values(a).view(target)
            else:
                expected = np.ascontiguousarray(values(a)).view(target)
            np.testing.assert_array_equal(values(v), expected)
    if dtype.startswith(("float", "complex")):
        t = sample(T, (5, 5, 64), dtype, rng).requires_grad_()
        for target in ("float16", "float32", "float64", "complex64", "complex128"):
            assert not t.view(getattr(T, target)).requires_grad


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int16", "int32", "float16", "float32", "int64", "complex64"])
def test_view_as_larger_dtype_errors(T, dtype):
    size = np.dtype(dtype).itemsize
    rng = np.random.default_rng(12)
    for target in DTYPES:
        other = np.dtype(target).itemsize
        if other <= size:
            continue
        ratio = other // size
        a = sample(T, (4, 4, ratio + 1), dtype, rng)
        raises(RuntimeError, rf"self.size\(-1\) must be divisible by {ratio}", a.view, getattr(T, target))
        raises(RuntimeError, rf"self.storage_offset\(\) must be divisible by {ratio}", a[:, :, 1:].view,
               getattr(T, target))
        b = sample(T, (4, 4, ratio), dtype, rng).as_strided((4, 4, ratio), (ratio, 1, 1))
        raises(RuntimeError, rf"self.stride\(1\) must be divisible by {ratio}", b.view, getattr(T, target))


def test_view_as_complex(T):
    rng = np.random.default_rng(13)
    base = rng.standard_normal((3, 2, 2)).astype(np.float32)
    t = T.tensor(base)
    res = T.view_as_complex(t)
    same(res, base[:, :, 0] + 1j * base[:, :, 1], "complex64")
    assert is_view_of(t, res)
    tr = t.transpose(0, 1)
    res = T.view_as_complex(tr)
    same(res, (base[:, :, 0] + 1j * base[:, :, 1]).T)
    assert is_view_of(t, res)
    raises(RuntimeError, "Tensor must have a last dimension of size 2", T.view_as_complex, t.transpose(0, 2)[:1, :, :])
    x = T.randn(3, 3)
    if T.__name__ == "torch":  # (chainrule's view_as_complex is a copy, so any layout will do: README)
        raises(RuntimeError, "Tensor must have a last dimension with stride 1", T.view_as_complex, t.transpose(1, 2))
        raises(RuntimeError, "Tensor must have a stride divisible by 2 for all but last dimension",
               T.view_as_complex, T.as_strided(x, (2, 2), (1, 1)))
    else:
        swapped = base.transpose(0, 2, 1)
        same(T.view_as_complex(t.transpose(1, 2)), swapped[:, :, 0] + 1j * swapped[:, :, 1])
    empty = T.tensor([])
    raises(RuntimeError, "Tensor must have a last dimension of size 2", T.view_as_complex, empty)
    raises(RuntimeError, "Input tensor must have one or more dimensions", T.view_as_complex, T.tensor(2.0))
    y = empty.reshape(0, 2)
    res = T.view_as_complex(y)
    assert is_view_of(empty, res)
    assert res.shape == (0,)


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_view_as_real(T, dtype):
    rng = np.random.default_rng(14)
    z = (rng.standard_normal((3, 4)) + 1j * rng.standard_normal((3, 4))).astype(dtype)
    t = T.tensor(z)
    for u, uz in ((t, z), (t.transpose(0, 1), z.T)):
        res = T.view_as_real(u)
        same(res[:, :, 0], uz.real)
        same(res[:, :, 1], uz.imag)
        assert is_view_of(t, res)
    e = T.tensor([], dtype=getattr(T, dtype))
    res = T.view_as_real(e)
    assert is_view_of(e, res) and res.shape == (0, 2)
    s = T.tensor(2 + 3j, dtype=getattr(T, dtype))
    res = T.view_as_real(s)
    assert is_view_of(s, res)
    same(res, [2, 3])


def test_splits_are_views(T):
    a = T.arange(40 * 30).reshape(40, 30).clone()
    for dim in (0, 1):
        for part in a.tensor_split(7, dim):
            assert is_view_of(a, part)
    t = T.arange(64).reshape(4, 4, 4).clone()
    for split, probe in ((T.hsplit, lambda parts: parts[1][2, 0, 2]), (T.vsplit, lambda parts: parts[1][0, 2, 2]),
                         (T.dsplit, lambda parts: parts[1][2, 2, 0])):
        parts = split(t, 2)
        for part in parts:
            assert is_view_of(t, part)
        t[2, 2, 2] = 7 + int(t[2, 2, 2])
        assert probe(parts).item() == t[2, 2, 2].item()


def test_real_imag_conj_views(T):
    raises(RuntimeError, None, T.imag, T.ones(5, 5))
    rng = np.random.default_rng(15)
    z = (rng.standard_normal((3, 3)) + 1j * rng.standard_normal((3, 3))).astype(np.complex64)
    t = T.tensor(z)
    for u, uz in ((t, z), (t.T, z.T)):
        re, im = u.real, u.imag
        same(re, uz.real, "float32")
        same(im, uz.imag, "float32")
        assert is_view_of(t, re) and is_view_of(t, im)
    a = T.tensor(rng.standard_normal(10) + 1j * rng.standard_normal(10))
    same(a[5:].real, values(a.real[5:]))
    same(a[5:].imag, values(a.imag[5:]))
    v = t.conj()
    assert view_or_documented_copy(T, t, v)
    same(v, z.conj())
    vi = v.imag
    assert view_or_documented_copy(T, t, vi)
    same(vi, z.conj().imag)
    assert vi.is_neg() or T.__name__ == "autograd"  # (chainrule's is a copy: no negative bit)


def test_conj_views_sharing_memory(T):
    rng = np.random.default_rng(16)
    z = (rng.standard_normal((4, 5)) + 1j * rng.standard_normal((4, 5))).astype(np.complex64)
    a = T.tensor(z)
    b, c = a.conj(), a.conj()
    np.testing.assert_allclose(values(a.add_(b)), 2 * z.real, rtol=1e-6)
    expected = values(T.add(b, c))
    np.testing.assert_allclose(values(T.add(b, c, out=a)), expected, rtol=1e-6)
    if T.__name__ == "torch":  # a is now 2·re(z): b and c, views of a, show it conjugated
        np.testing.assert_allclose(expected, 4 * z.real, rtol=1e-6)
    else:  # chainrule's conj() is a copy (README): b and c keep z's conjugate
        np.testing.assert_allclose(expected, 2 * z.conj(), rtol=1e-6)


@pytest.mark.parametrize("target", ["float32", "int64", "complex64", "bool"])
def test_set_real_and_imag(T, target):
    rng = np.random.default_rng(17)
    x = T.tensor((rng.standard_normal(10) + 1j * rng.standard_normal(10)).astype(np.complex64))
    new_real = sample(T, (10,), target, rng)
    new_imag = sample(T, (10,), target, rng)
    x.real = new_real
    x.imag = new_imag
    np.testing.assert_allclose(values(x.real), values(new_real).real.astype(np.float32))
    np.testing.assert_allclose(values(x.imag), values(new_imag).real.astype(np.float32))


def _writes_through(T, make_view, base_key, view_key, shape=(5, 5), value=0):
    t = T.ones(*shape)
    v = make_view(t)
    assert is_view_of(t, v)
    v[view_key] = value
    assert t[base_key].item() == v[view_key].item() == value
    return t, v


VIEWS = {
    "diagonal": (lambda t: T_.diagonal(t), (0, 0), 0),
    "select": (lambda t: t.select(0, 2), (2, 0), 0),
    "expand": (lambda t: t[:, :1].expand(5, 5), None, None),
    "narrow": (lambda t: T_.narrow(t, 1, 2, 2), (0, 2), (0, 0)),
    "permute": (lambda t: t.permute(1, 0), (1, 0), (0, 1)),
    "swapdims": (lambda t: T_.swapdims(t, 0, 1), (1, 0), (0, 1)),
    "swapaxes": (lambda t: T_.swapaxes(t, 0, 1), (1, 0), (0, 1)),
    "transpose": (lambda t: T_.transpose(t, 0, 1), (1, 0), (0, 1)),
    "t": (lambda t: t.t(), (1, 0), (0, 1)),
    "T": (lambda t: t.T, (1, 0), (0, 1)),
    "H": (lambda t: t.H, (1, 0), (0, 1)),
    "mT": (lambda t: t.mT, (1, 0), (0, 1)),
    "mH": (lambda t: t.mH, (1, 0), (0, 1)),
    "unsqueeze": (lambda t: T_.unsqueeze(t, 1), (0, 1), (0, 0, 1)),
    "as_strided": (lambda t: T_.as_strided(t, (25,), (1,)), (1, 1), 6),
    "view": (lambda t: t.view(25), (1, 1), 6),
    "view_as": (lambda t: t.view_as(T_.empty(25)), (1, 1), 6),
    "reshape": (lambda t: T_.reshape(t, (25,)), (1, 1), 6),
    "reshape_as": (lambda t: t.reshape_as(T_.empty(25)), (1, 1), 6),
    "slice": (lambda t: t[:2, :3], (0, 0), (0, 0)),
    "ellipsis": (lambda t: t[..., :2], (0, 0), (0, 0)),
    "newaxis": (lambda t: t[None, :2, 3], (0, 3), (0, 0)),
    "movedim": (lambda t: T_.movedim(t, (0, 1), (1, 0)), (1, 2), (2, 1)),
    "moveaxis": (lambda t: T_.moveaxis(t, 0, 1), (1, 2), (2, 1)),
}
T_ = None  # the library of the running test, for VIEWS' lambdas


@pytest.mark.parametrize("name", list(VIEWS))
def test_view_ops_write_through(T, name):
    global T_
    T_ = T
    make, base_key, view_key = VIEWS[name]
    if name == "expand":
        t = T.ones(5, 1)
        v = t.expand(5, 5)
        assert is_view_of(t, v)
        v[2, 2] = 0  # (one element: its memory is t[2, 0], which every v[2, j] shows)
        assert v[2].tolist() == [0] * 5 and t[2, 0].item() == 0
        assert is_view_of(t, t.expand_as(T.empty(5, 5)))
        assert is_view_of(t, t.expand(5, 1))  # to its own shape: a view in both
        return
    _writes_through(T, make, base_key, view_key)


def test_more_views_write_through(T):
    t = T.ones(3, 3, 3)
    v = T.diagonal(t, offset=1, dim1=1, dim2=2)
    assert is_view_of(t, v)
    v[0, 0] = 0
    assert t[0, 0, 1].item() == 0
    t = T.zeros(5, 5)
    for i, row in enumerate(T.unbind(t)):
        assert is_view_of(t, row)
        row[0] = i + 1
        assert t[i, 0].item() == i + 1
    t = T.ones(10)
    v = t.unfold(0, 3, 2)
    assert is_view_of(t, v) and v.stride() == (2, 1)
    v[1, 0] = 0  # (t[2], which v[0, 2] shows too)
    assert t[2].item() == 0 and v[0, 2].item() == 0
    t = T.ones(5, 1, 5)
    v = T.squeeze(t)
    assert is_view_of(t, v)
    v[0, 1] = 0
    assert v._base is t and t[0, 0, 1].item() == 0


@pytest.mark.parametrize("op", ["swapdims_", "swapaxes_", "transpose_", "t_", "squeeze_", "unsqueeze_", "as_strided_"])
def test_in_place_view_ops_keep_the_base(T, op):
    t = T.ones(5, 5)
    v = t.view_as(t)
    args = {"squeeze_": (), "t_": (), "unsqueeze_": (1,), "as_strided_": ((25,), (1,))}.get(op, (0, 1))
    w = getattr(v, op)(*args)
    assert w is v
    assert is_view_of(t, w)
    key, base_key = {"unsqueeze_": ((0, 0, 1), (0, 1)), "as_strided_": (6, (1, 1)),
                     "squeeze_": ((0, 1), (0, 1))}.get(op, ((0, 1), (1, 0)))
    w[key] = 0
    assert t[base_key].item() == 0


def test_unbind_gradients(T):
    rng = np.random.default_rng(18)
    stacked = T.tensor(rng.standard_normal((3, 4, 4)), requires_grad=True)
    grad = rng.standard_normal((3, 4, 4))
    x, y, z = stacked.unbind()
    T.autograd.backward([x, y, z], [T.tensor(g) for g in grad])
    same(stacked.grad, grad)
    for i in range(3):
        stacked = T.tensor(rng.standard_normal((3, 4, 4)), requires_grad=True)
        (g,) = T.autograd.grad(stacked.unbind()[i], stacked, T.tensor(grad[i]))
        expected = np.zeros((3, 4, 4))
        expected[i] = grad[i]
        same(g, expected)


AS_STRIDED_CASES = [  # (values, prepare, size, stride, offset)
    (np.arange(25.0), lambda x: x.view(5, 5), [3, 3], [6, 2], 2),
    (np.linspace(-1, 1, 12), None, [1, 2, 1, 5], [0, 5, 100, 1], 2),  # any stride at a dim of size 1
    (np.linspace(-1, 1, 5), None, [3, 3, 3], [0, 1, 0], 2),  # expanding
    (np.linspace(-1, 1, 5), None, [3, 3, 3], [0, 0, 0], 4),
    (np.linspace(-1, 1, 5), lambda x: x.expand(5, 5), [5, 5], [0, 1], 0),
    (np.linspace(-1, 1, 35), None, [6, 6], [5, 1], 2),  # overlapping windows
    (np.linspace(-1, 1, 15), None, [3, 2], [3, 6], 2),
    (np.linspace(-1, 1, 12).reshape(3, 4), None, [4, 3], [1, 4], None),  # a transpose
    (np.linspace(-1, 1, 6).reshape(2, 3), lambda x: x.expand(10, 2, 3), [2, 3], [3, 1], 0),
]


@pytest.mark.parametrize("case", range(len(AS_STRIDED_CASES)))
def test_as_strided_gradients(T, case):
    data, prepare, size, stride, offset = AS_STRIDED_CASES[case]
    x = T.tensor(data, dtype=T.float64, requires_grad=True)

    def fn(x):
        return (prepare(x) if prepare else x).as_strided(size, stride, offset)

    assert T.autograd.gradcheck(fn, (x,))
    assert T.autograd.gradgradcheck(fn, (x,))


def test_as_strided_reaches_outside_a_slice(T):
    x = T.randn(6, 2)
    same(x[3:].as_strided([3, 2], [2, 1], 0), values(x[:3]))
    leaf = T.randn(6, 2, dtype=T.float64, requires_grad=True)
    leaf[3:].as_strided([3, 2], [2, 1], 0).sum().backward()
    same(leaf.grad, np.zeros((6, 2)))  # the elements reached lie outside leaf[3:]: no gradient, as PyTorch's


def test_contiguous_and_copies(T):
    t = T.ones(5, 5)
    assert t.contiguous() is t
    nv = t.t().contiguous()
    assert not is_view_of(t, nv)
    nv[0, 0] = 0
    assert t[0, 0].item() == 1
    nv = T.reshape(t.t(), (25,))
    assert not is_view_of(t, nv)
    nv[6] = 0
    assert t[1, 1].item() == 1


def test_flatten_views(T):
    def writes_propagate(t, v):
        v[(0,) * v.ndim] = 0
        assert t[(0,) * t.ndim].item() == 0

    t = T.ones(1, 2, 3, 4)
    v = t.flatten()
    assert is_view_of(t, v)
    writes_propagate(t, v)
    t = T.tensor(1)
    v = t.flatten()
    writes_propagate(t, v)
    assert is_view_of(t, v)
    t = T.ones(1, 2, 3, 4).transpose(2, 3)
    v = t.flatten(0, 1)
    writes_propagate(t, v)
    assert is_view_of_same_base(t, v)
    t = T.ones(720).as_strided((2, 3, 2, 3, 5, 4), (6, 2, 15, 5, 1, 0))
    v1 = t.flatten(0, 1)
    v2 = v1.flatten(1, 3)
    v3 = v2.flatten(2, 2)
    for v in (v1, v2, v3):
        writes_propagate(t, v)
        assert is_view_of_same_base(t, v)


def test_flatten_copies(T):
    for t, (start, end) in ((T.ones(2, 3, 2, 3).transpose(2, 3), (1, 3)), (T.ones(2, 2).T, (0, -1))):
        nv = t.flatten(start, end)
        assert not nv._is_view()
        nv[(0,) * nv.ndim] = 0
        assert t[(0,) * t.ndim].item() == 1
    t = T.ones(2, 2)
    assert t.flatten(1, 1) is t


def test_advanced_indexing_copies(T):
    t = T.ones(3, 3)
    rows, cols = T.tensor([[0, 0], [2, 2]]), T.tensor([[0, 1], [2, 2]])
    nv = t[rows, cols]
    assert not is_view_of(t, nv)
    nv[1, 1] = 0
    assert t[2, 2].item() == 1
    t[rows, cols] = 0
    assert t[2, 2].item() == 0


def test_view_copy_ops(T):
    rng = np.random.default_rng(19)
    data = rng.standard_normal(4)
    a = T.tensor(data, requires_grad=True)
    a_ref = a.clone().detach().requires_grad_()
    view = a_ref.view(2, 2)
    copy = T.view_copy(a, (2, 2))
    assert is_view_of(a_ref, view)
    assert not is_view_of(a, copy)
    copy.sum().backward()
    view.sum().backward()
    same(copy, data.reshape(2, 2))
    same(a.grad, values(a_ref.grad))
    m = T.tensor(rng.standard_normal((2, 2)))
    out = T.empty(2, dtype=T.float64)
    T.diagonal_copy(m, out=out)
    same(out, np.diagonal(values(m)))
    out1, out2 = T.empty(2, dtype=T.float64), T.empty(2, dtype=T.float64)
    T.split_copy(T.tensor(data), 2, out=(out1, out2))
    same(out1, data[:2])
    same(out2, data[2:])


def test_ravel(T):
    zero = T.tensor(123)
    flat = zero.ravel()
    assert flat.shape == (1,) and flat.is_contiguous()
    same(flat, [123])
    strided = T.ones(10)[::2]
    assert strided.ravel().shape == (5,) and strided.ravel().is_contiguous()
    for src, n, transposed in ((T.randn(5, 5, 5, 5), 625, False), (T.randn(0, 2, 3), 0, False),
                               (T.randn(3, 0, 2), 0, False), (T.randn(5, 5), 25, True)):
        flat = src.ravel()
        assert flat.shape == (n,)
        same(flat, values(src.view(-1)))
        assert flat._base is src
        assert flat.is_contiguous()
        if transposed:
            nc = src.t()
            flat = nc.ravel()
            same(flat, values(nc.contiguous().view(-1)))
            assert flat._base is not src
            assert flat.is_contiguous()


def test_empty_reshape_and_view(T):
    x = T.randn(0, 6)
    assert x.reshape(1, 0, 6, 1, 1).shape == (1, 0, 6, 1, 1)
    assert x.data_ptr() == x.reshape(1, 0, 6, 1, 1).data_ptr()
    raises(RuntimeError, None, x.reshape, 0, -1)  # a -1 beside a 0 could be anything (NumPy's rule)
    assert x.view(1, 0, 6, 1, 1).shape == (1, 0, 6, 1, 1)


def test_expand(T):
    tensor = T.rand(1, 8, 1)
    tensor2 = T.rand(5)
    template = T.rand(4, 8, 5)
    for t in (tensor, tensor2):
        assert t.expand_as(template).shape == (4, 8, 5)
        assert t.expand(4, 8, 5).shape == (4, 8, 5)
        assert t.expand(template.size()).shape == (4, 8, 5)
    same(tensor2.expand(1, 5).expand(2, 2, 5), values(tensor2.repeat(2, 2, 1)))
    noncontig = T.randn(5, 2, 1, 3)[:, 0]
    assert not noncontig.is_contiguous()
    same(noncontig.expand(2, 5, 4, 3), values(noncontig.contiguous().repeat(2, 1, 4, 1)))
    expanded = tensor2.expand(1, 1, 5)
    unsqueezed = tensor2.unsqueeze(0).unsqueeze(1)
    same(expanded, values(unsqueezed))
    assert expanded.stride() == unsqueezed.stride()
    same(tensor.expand(4, -1, 5), values(tensor.expand(4, 8, 5)))
    raises(RuntimeError, None, tensor2.expand, -1, -1)
    assert T.zeros(0).expand((0,)).shape == (0,)


def test_reshape(T):
    x = T.randn(3, 3)
    assert x.data_ptr() == x.reshape(-1).data_ptr()
    assert x.data_ptr() == x.reshape(1, 9, 1).data_ptr()
    same(T.reshape(x, (9,)), values(x.reshape(9)))
    raises(RuntimeError, None, x.reshape, -1, -1)
    y = T.randn(4, 4, 4)[:, 0, :]
    assert y.data_ptr() != y.reshape(-1).data_ptr()
    same(y.reshape(-1), values(y.contiguous().view(-1)))
    assert y.reshape(2, 2, 4).data_ptr() == y.data_ptr()
    s = T.randn(())
    assert s.data_ptr() == s.reshape(()).data_ptr()
    assert s.reshape(-1).shape == (1,)
    raises(RuntimeError, None, s.reshape, 2)
    empty = T.tensor([])
    assert empty.reshape(-1).shape == (0,) and empty.reshape([0]).shape == (0,)
    assert empty.reshape([0, 1]).shape == (0, 1)
    assert empty.reshape([1, -1]).shape == (1, 0)
    raises(RuntimeError, None, empty.reshape, 1)
    assert x.data_ptr() == x.reshape_as(T.rand(9)).data_ptr()
    assert x.data_ptr() == x.reshape_as(T.rand(1, 9, 1)).data_ptr()
    raises(RuntimeError, None, x.reshape_as, T.rand(10))
    t = T.arange(60).reshape(15, 4)
    v = t.reshape(20, 3)
    assert v.shape == (20, 3) and t.untyped_storage().data_ptr() == v.untyped_storage().data_ptr()
    c = t.transpose(0, 1).reshape(20, 3)
    assert t.untyped_storage().data_ptr() != c.untyped_storage().data_ptr()


def test_flatten(T):
    zero = T.tensor(123)
    assert zero.flatten().shape == (1,)
    same(zero.flatten(), [123])
    src = T.randn(5, 5, 5, 5)
    for (start, end), shape in (((0, -1), (625,)), ((0, 2), (125, 5)), ((0, 1), (25, 5, 5)), ((1, 2), (5, 25, 5)),
                                ((2, 3), (5, 5, 25)), ((-2, -1), (5, 5, 25)), ((2, 2), (5, 5, 5, 5))):
        flat = src.flatten(start, end)
        assert flat.shape == shape
        same(flat.view(-1), values(src.view(-1)))
    raises(IndexError, "Dimension out of range", src.flatten, 5, 10)
    raises(RuntimeError, "start_dim cannot come after end_dim", src.flatten, 2, 0)


def test_narrow(T):
    x = T.tensor([[0, 1, 2], [3, 4, 5], [6, 7, 8]])
    for args, expected in (((0, 0, 1), [[0, 1, 2]]), ((0, 0, 2), [[0, 1, 2], [3, 4, 5]]), ((0, 1, 1), [[3, 4, 5]]),
                           ((0, -1, 1), [[6, 7, 8]]), ((0, -2, 2), [[3, 4, 5], [6, 7, 8]]),
                           ((0, -3, 3), [[0, 1, 2], [3, 4, 5], [6, 7, 8]]), ((-1, -1, 1), [[2], [5], [8]]),
                           ((-2, -1, 1), [[6, 7, 8]])):
        same(x.narrow(*args), expected)
    same(x.narrow(0, T.tensor(0), 1), [[0, 1, 2]])
    for bad in (T.tensor(0.0), T.tensor([0]), T.tensor([0, 1])):
        with pytest.raises((RuntimeError, TypeError, IndexError)):
            x.narrow(0, bad, 1)


def test_t(T):
    x = T.randn(())
    same(x.t(), values(x))
    x = T.arange(4)
    same(x.t(), [0, 1, 2, 3])
    x = T.rand(2, 2)
    same(x.t(), values(x.transpose(0, 1)))
    raises(RuntimeError, "expects a tensor with <= 2 dimensions, but self is 3D", T.rand(2, 2, 2).t)


def test_split_and_chunk(T):
    rng = np.random.default_rng(20)
    data = rng.random((7, 4))
    t = T.tensor(data)
    for part, size, start in zip(t.split(3, 0), ([3, 4], [3, 4], [1, 4]), (0, 3, 6)):
        assert list(part.shape) == size
        same(part, data[start:start + size[0]])
    data = rng.standard_normal((20, 10))
    t = T.tensor(data)
    for sizes, dim, shapes in (([5, 5, 10], 0, ([5, 10], [5, 10], [10, 10])),
                               ([2, 2, 6], 1, ([20, 2], [20, 2], [20, 6]))):
        start = 0
        for part, shape in zip(t.split(sizes, dim), shapes):
            assert list(part.shape) == shape
            same(part, values(t.narrow(dim, start, shape[dim])))
            start += shape[dim]
    t = T.rand(4, 7)
    for part, shape in zip(t.chunk(3, 1), ([4, 3], [4, 3], [4, 1])):
        assert list(part.shape) == shape
    raises(RuntimeError, "chunk expects.*greater than 0", t.chunk, 0)
    raises(RuntimeError, "chunk expects.*greater than 0", t.chunk, -2)


def test_unsqueeze_and_transposes(T):
    x = T.randn(2, 3, 4)
    same(x.unsqueeze(1), values(x.view(2, 1, 3, 4)))
    same(x.clone().unsqueeze_(2), values(x.view(2, 3, 1, 4)))
    x = x[:, 1]
    assert not x.is_contiguous()
    same(x.unsqueeze(1), values(x.contiguous().view(2, 1, 4)))
    same(x.clone().unsqueeze_(2), values(x.contiguous().view(2, 4, 1)))
    t = T.rand(45, 78)
    same(t.t().contiguous(), values(t).T)
    a = T.randn(2, 3, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (x.T of 3 dims is deprecated: both warn, once in a process)
        same(a.T, values(a.permute(2, 1, 0)))
    b = T.randn(10)
    same(b.T, values(b))
    s = T.tensor(5)
    same(s.T, 5)


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "complex64"])
def test_transposes_and_their_errors(T, dtype):
    rng = np.random.default_rng(21)
    for op in ("T", "H", "mT", "mH", "adjoint"):
        for shape in ((), (2, 3), (2, 3, 4)) if op[0] == "m" or op == "adjoint" else ((), (2, 3)):
            a = sample(T, shape, dtype, rng)
            got = getattr(a, op)
            got = got() if op == "adjoint" else got
            expected = values(a)
            if a.ndim:
                expected = np.swapaxes(expected, -2, -1)
            if op[-1] == "H" or op == "adjoint":
                expected = np.conj(expected)
            same(got, expected, dtype)
    for op in ("H", "mT", "mH", "adjoint"):
        for shape in ((2,), (2, 3, 4)) if op == "H" else ((2,),):
            a = sample(T, shape, dtype, rng)
            with pytest.raises(RuntimeError, match="only supported on matrices"):
                got = getattr(a, op)
                got() if op == "adjoint" else got


def test_python_types_as_dtypes(T):
    assert T.randn((1, 2), dtype=float).dtype == T.float64
    assert T.arange(10, 20, dtype=int).dtype == T.int64
    assert T.tensor([True, False], dtype=bool).dtype == T.bool


def test_resize(T):
    x = T.empty(2, 3).t()
    strides = x.stride()
    x.resize_as_(x)
    assert x.stride() == strides
    for dt in DTYPES:
        x = T.tensor([[1, 2], [3, 4], [5, 6]], dtype=getattr(T, dt))
        x.resize_((2, 2))
        assert x.shape == (2, 2)
        x = T.tensor([[1, 2], [3, 4], [5, 6]], dtype=getattr(T, dt))
        x.resize_as_(T.tensor([[1, 2, 3], [4, 5, 6]], dtype=getattr(T, dt)))
        assert x.shape == (2, 3)
        assert T.tensor([[1, 2], [3, 4], [5, 6]], dtype=getattr(T, dt)).view(6).shape == (6,)
    x = T.empty((), dtype=T.float64)
    raises(RuntimeError, "Storage size calculation overflowed", x.resize_, [2, 4, 2**29, 2**29])
    raises(RuntimeError, "overflow", x.resize_, [8, 8, 2**29, 2**29])


@pytest.mark.parametrize("fn", ["swapdims", "swapaxes", "transpose"])
def test_transpose_against_numpy(T, fn):
    rng = np.random.default_rng(22)
    for nd in range(5):
        data = rng.standard_normal(tuple(rng.integers(1, 4, nd)))
        x = T.tensor(data)
        for a, b in itertools.permutations(range(nd), 2):
            for da, db in ((a, b), (a - nd, b), (a, b - nd), (a - nd, b - nd)):
                same(getattr(T, fn)(x, da, db), np.swapaxes(data, da, db))
    x = T.randn(2, 3, 5, 7, 11)
    same(getattr(T, fn)(x, 0, 0), values(x))
    x = T.randn(5, 6, 7, 8)
    raises(IndexError, "Dimension out of range", getattr(T, fn), x, 5, 0)
    raises(IndexError, "Dimension out of range", getattr(T, fn), x, 0, 5)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_atleast(T, n):
    rng = np.random.default_rng(23)
    fn, np_fn = getattr(T, f"atleast_{n}d"), getattr(np, f"atleast_{n}d")
    for nd in range(5):
        data = rng.standard_normal(tuple(rng.integers(1, 4, nd)))
        for x, xd in ((T.tensor(data), data), (T.tensor(data).T, data.T)):
            same(fn(x), np_fn(xd))
            got = fn(x, x, x)
            for g, e in zip(got, np_fn(xd, xd, xd)):
                same(g, e)
    s = T.tensor(0.5, dtype=T.float64, requires_grad=True)
    a = T.rand(4, dtype=T.float64, requires_grad=True)
    assert T.autograd.gradcheck(fn, (s,)) and T.autograd.gradgradcheck(fn, (s,))
    assert T.autograd.gradcheck(fn, (a,))
    many = (s, a, T.rand(4, 3, dtype=T.float64, requires_grad=True),
            T.rand(4, 3, 2, dtype=T.float64, requires_grad=True), T.rand(4, 3, 2, 1, dtype=T.float64,
                                                                         requires_grad=True))
    assert T.autograd.gradcheck(lambda *xs: fn(*xs), many)
    assert T.autograd.gradgradcheck(lambda *xs: fn(*xs), many)


def test_broadcast_tensors_and_shapes(T):
    ys = T.broadcast_tensors(T.randn(2, 1, 3), T.randn(3), T.randn(3, 1))
    assert all(y.shape == (2, 3, 3) for y in ys)
    # (PyTorch's test once expected a RuntimeError for negative sizes; PyTorch 2.13 raises this ValueError)
    examples = [(), (1,), (2,), (1, 1), (3, 1), (3, 2), (4, 1, 1), (4, 3, 2)]
    for s0 in examples:
        assert T.broadcast_shapes(s0) == T.broadcast_tensors(T.randn(s0))[0].shape
        for s1 in examples:
            assert T.broadcast_shapes(s0, s1) == np.broadcast_shapes(s0, s1)
    for ints in ([1, 4], [4, 1], [1, 1, 3]):
        assert T.broadcast_shapes(*ints) == np.broadcast_shapes(*[(i,) for i in ints])
    for bad in ([1, 1, -12], [-1, 1], [-11]):
        raises(ValueError, "Attempting to broadcast a dimension with negative length", T.broadcast_shapes, *bad)
    for bad in ((3, 5), (2, 4, 1)):
        raises(RuntimeError, "Attempting to broadcast a dimension of length", T.broadcast_shapes, *bad)
    negative = [(-1,), (1, -12), (4, -11), (-4, 1), (1, 1, -2)]
    for s0 in negative:
        raises(ValueError, "Attempting to broadcast a dimension with negative length", T.broadcast_shapes, s0)
        for s1 in negative:
            raises(ValueError, "Attempting to broadcast a dimension with negative length", T.broadcast_shapes,
                   s0, s1)
    for f in (1.1, 2.0, 1.0):
        raises(RuntimeError, "Input shapes should be of type ints, a tuple of ints, or a list of ints",
               T.broadcast_shapes, f)
    for mixed in ((1, (5,)), (3, (1,)), (1, (3, 4))):
        assert T.broadcast_shapes(*mixed) == T.broadcast_tensors(*map(T.empty, mixed))[0].shape


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "complex64", "float16"])
def test_broadcast_to(T, dtype):
    rng = np.random.default_rng(24)
    sizes = ((), (1,), (2,), (1, 1), (3, 1), (3, 2), (4, 1, 1), (4, 3, 2))
    for s0, s1 in itertools.combinations(sizes, 2):
        t = sample(T, s0, dtype, rng)
        fits = all(a == 1 or a == b for a, b in zip(reversed(s0), reversed(s1)))
        if fits:
            same(T.broadcast_to(t, s1), np.broadcast_to(values(t), s1), dtype)
        else:
            raises(RuntimeError, r"The expanded size of the tensor \(\d\) must match the existing size \(\d\)",
                   T.broadcast_to, t, s1)


def test_view(T):
    tensor = T.rand(15)
    template = T.rand(3, 5)
    empty = T.empty(0)
    for v in (tensor.view_as(template), tensor.view(3, 5), tensor.view(T.Size([3, 5])), tensor.view(-1, 5),
              tensor.view(3, -1)):
        assert v.shape == (3, 5)
    tensor.view(5, 3).fill_(0.25)
    same(tensor, np.full(15, 0.25, np.float32))
    assert empty.view_as(empty).shape == (0,) and empty.view(0).shape == (0,)
    assert empty.view(0, 3, 0, 1).shape == (0, 3, 0, 1)
    assert empty.view(0, 3, 0, 1).view(0).shape == (0,)
    assert empty.view(-1).shape == (0,)
    assert empty.view(10, 3, -1).shape == (10, 3, 0)
    raises(RuntimeError, "because the unspecified dimension size -1 can be any value", empty.view, -1, 0)
    raises(RuntimeError, "because the unspecified dimension size -1 can be any value", empty.view, 3, 0, -1, 0)
    for bad in ((15, 0), (7, -1), (15, -1, -1)):
        raises(RuntimeError, None, tensor.view, *bad)

    # a tensor contiguous only in chunks of dims: views that keep within the chunks work
    t = T.rand(4, 2, 5, 1, 6, 2, 9, 3).transpose(-1, 2).transpose(-2, 3)
    contiguous = t.clone()
    for shape in ([8, 1, 3, 3, 3, 4, 1, 3, 5], [2, 4, 3, 1, 9, 2, 2, 3, 5, 1],
                  [1, 1, 2, 1, 4, 3, 1, 1, 9, 1, 2, 1, 2, 3, 1, 5, 1, 1]):
        same(t.view(*shape), values(contiguous.view(*shape)))
    t = T.empty(1, 1).expand(3, 4)
    contiguous = t.clone()
    for shape in ((-1,), (1, -1, 1), (-1, 1), (6, 2, 1), (1, 6, 2, 1)):
        same(t.view(*shape), values(contiguous.view(*shape)))


def test_view_across_chunks_is_refused_where_pytorch_refuses(T):
    """A view that would cross memory chunks is refused, as PyTorch refuses it (a transposed view of a row-major
    tensor has PyTorch's strides here too); one the strides allow shares the memory."""
    t = T.rand(4, 2, 5, 1, 6, 2, 9, 3).transpose(-1, 2).transpose(-2, 3)
    for shape in ((-1,), (24, 9, 6, 2, 1, 5), (8, 3, 9, 6, 10), (8, 3, 54, 2, 1, 5)):
        raises(RuntimeError, "view size is not compatible", t.view, *shape)
    allowed = t.view(4, 2, 3, 9, 6, 2, 5)  # (the dim of one element dropped: no chunk crossed)
    allowed[0, 0, 0, 0, 0, 0, 0] = 7.0
    assert t[0, 0, 0, 0, 0, 0, 0, 0].item() == 7.0


def test_contiguous_with_size_one_dim(T):
    x = T.randn(1, 16, 5, 5)
    assert x.is_contiguous()
    y = x.as_strided(x.shape, (20, 25, 5, 1))  # the step of a dim of size 1 does not matter
    assert y.is_contiguous()


@pytest.mark.parametrize("dtype", ["float32", "int64", "bool", "complex64"])
def test_tensor_split_against_numpy(T, dtype):
    rng = np.random.default_rng(25)
    for size in [(0,), (10,), (10, 0), (0, 10), (4, 10), (12, 3)]:
        a = sample(T, size, dtype, rng)
        an = values(a)
        for dim in range(-a.dim(), a.dim()):
            for sections in range(1, 2 * a.size(dim)):
                expected = np.array_split(an, sections, dim)
                for how in (sections, T.tensor(sections)):
                    got = T.tensor_split(a, how, dim)
                    assert len(got) == len(expected)
                    for g, e in zip(got, expected):
                        same(g, e, dtype)
            for indices in [(), (0,), (3,), (10,), (-1,), (-10,), (2, -1), (3, 4, 10), (0, -1, 0, 10), (1, 5, 2, 8)]:
                expected = np.array_split(an, list(indices), dim)
                for how in (indices, T.tensor(indices, dtype=T.int64)):
                    got = T.tensor_split(a, how, dim)
                    assert len(got) == len(expected)
                    for g, e in zip(got, expected):
                        same(g, e, dtype)


def test_tensor_split_errors(T):
    cases = [((10,), 10, 1, IndexError, "Dimension out of range"),
             ((), 10, 0, RuntimeError, "tensor_split expected at least a 1-dimensional tensor, but got a tensor with 0 "
                                       "dims"),
             ((10,), (10,), 1, IndexError, "Dimension out of range"),
             ((), (10,), 0, RuntimeError, "tensor_split expected at least a 1-dimensional tensor"),
             ((10,), 0, 0, RuntimeError, "number of sections must be larger than 0, got 0"),
             ((10,), -1, 0, RuntimeError, "number of sections must be larger than 0, got -1")]
    for size, how, dim, error, words in cases:
        a = T.randn(size)
        raises(error, words, T.tensor_split, a, how, dim)
        raises(error, words, T.tensor_split, a, T.tensor(how), dim)
    raises(RuntimeError, "tensor_split expected tensor_indices_or_sections to have dtype of long, but got Float",
           T.tensor_split, T.randn(10), T.tensor(1.1), 0)
    raises(RuntimeError, "tensor_split expected tensor_indices_or_sections to be a zero-dimensional or "
                         "one-dimensional tensor, but got a tensor with 2 dims",
           T.tensor_split, T.rand(10), T.tensor(((1,),)), 0)


def test_conj_view_to_numpy_and_dtype_view(T):
    if T.__name__ == "autograd":  # conj() is a copy here (README): numpy() and view(dtype) read its values
        same(T.tensor([1 + 2j]).conj().numpy(), [1 - 2j])
        same(T.tensor([1 + 2j]).conj().imag.numpy(), [-2])
        same(T.tensor([1 + 2j]).conj().view(T.float32), [1, -2])
        return
    raises(RuntimeError, "has conjugate bit set", lambda: T.tensor([1 + 2j]).conj().numpy())
    raises(RuntimeError, "has negative bit set", lambda: T.tensor([1 + 2j]).conj().imag.numpy())
    raises(RuntimeError, "not supported for conjugate view tensors", lambda: T.tensor([1 + 2j]).conj().view(T.float64))
    raises(RuntimeError, "not supported for tensors with negative bit set",
           lambda: T.tensor([1 + 2j]).conj().imag.view(T.int32))


@pytest.mark.parametrize("make", ["view", "view_as", "reshape", "reshape_as", "expand", "expand_as", "squeeze"])
def test_a_view_to_the_same_shape_is_a_new_tensor(T, make):
    """x.view(x.shape) and friends give a new tensor sharing x's memory, never x itself: an in-place shape
    change or requires_grad_() of the result leaves x alone (chainrule once returned x)."""
    t = T.arange(6.0).reshape(2, 3).clone()
    v = {"view": lambda: t.view(2, 3), "view_as": lambda: t.view_as(t), "reshape": lambda: t.reshape(2, 3),
         "reshape_as": lambda: t.reshape_as(t), "expand": lambda: t.expand(2, 3), "expand_as": lambda: t.expand_as(t),
         "squeeze": lambda: t.squeeze()}[make]()
    assert v is not t
    assert is_view_of(t, v)
    v.t_()
    assert t.shape == (2, 3) and v.shape == (3, 2)
    v[0, 1] = 10.0  # (v is t transposed)
    assert t[1, 0].item() == 10.0
    w = t.view(2, 3)
    w.requires_grad_()
    assert not t.requires_grad


def test_a_write_into_a_reshaped_copy_leaves_the_gradient_alone(T):
    """reshape of a transposed tensor is a copy: writing into it changes neither the tensor nor its gradient
    (chainrule once took the copy for a view and replayed the write on the tensor's history: a wrong
    gradient with right values)."""
    a = T.ones(3, 4, requires_grad=True)
    b = a * 1
    f = b.t().reshape(12)
    assert not f._is_view()
    f.mul_(2)
    b.sum().backward()
    same(b, np.ones((3, 4)))
    same(a.grad, np.ones((3, 4)))
    c = a * 1
    g = c.t().flatten()
    g.add_(5)
    (c * T.arange(12.0).reshape(3, 4)).sum().backward()
    same(a.grad, 1 + np.arange(12.0).reshape(3, 4))


def test_setting_real_and_imag_is_differentiable(T):
    x = T.tensor([1 + 2j, 3 + 4j], requires_grad=True)
    y = x * 1
    y.real = T.tensor([3.0, 0.0])
    y.imag = T.tensor([4.0, 1.0])
    same(y, [3 + 4j, 1j])
    w = T.tensor([1.0, 2.0], requires_grad=True)
    z = T.zeros(2, dtype=T.complex64)
    z.imag = w * 3
    (z.imag * z.imag).sum().backward()
    same(w.grad, [18.0, 36.0])
    raises(RuntimeError, "imag is not implemented for tensors with non-complex dtypes", setattr, T.ones(2), "imag",
           T.ones(2))
