"""The rest of PyTorch's test/test_view_ops.py and test/test_shape_ops.py, past what test_ported_view_ops.py,
test_ported_shape_ops.py and test_ported_torch_shape.py cover: resize_/resize_as_ in a memory format, contiguity
despite a size-1 dim's stride, atleast_*'s gradients, ravel of a non-contiguous tensor, and (beyond PyTorch's file,
in its spirit) which view ops share memory with their base for inputs of every layout, with the base, offset,
strides and contiguity PyTorch gives them, and the layout of x.to(dtype) for an x that does not fill its memory.

Each test runs on chainrule's `autograd` and, where it is installed, on PyTorch (fixture `T`); the expectations are
literals or NumPy's, so both halves check something.
"""

import numpy as np
import pytest

from tests.ported import raises, same, values


def shares_memory_with(base, v):
    """v is a view whose base is ``base``, on base's memory."""
    return (v._is_view() and v is not base and v._base is base
            and v.untyped_storage().data_ptr() == base.untyped_storage().data_ptr())


def element_strides(array):
    return tuple(step // array.itemsize for step in array.strides)


def offset_in(array, root):
    """Where array's first element lies in root's memory, in elements (NumPy's storage_offset)."""
    start = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    return start // array.itemsize


def strides_of_long_dims(t_or_shape, strides):
    """The strides of the dims longer than 1 (a size-1 dim's stride says nothing about the memory)."""
    return tuple(s for s, n in zip(strides, t_or_shape) if n > 1)


# -- TestOldViewOps.test_memory_format_resize_ and test_memory_format_resize_as --------------------------------


@pytest.mark.parametrize("shape, fmt, strides", [((10, 3, 4, 4), "channels_last", (48, 1, 12, 3)),
                                                 ((3, 10, 3, 4, 4), "channels_last_3d", (480, 1, 160, 40, 10))])
def test_resize_in_a_memory_format(T, shape, fmt, strides):
    memory_format = getattr(T, fmt)
    flat = T.arange(float(np.prod(shape)))
    flat.resize_(shape, memory_format=memory_format)
    assert flat.shape == shape and flat.stride() == strides
    assert flat.is_contiguous(memory_format=memory_format) and not flat.is_contiguous()
    # the elements stay where they are in memory: channels vary fastest
    expected = np.arange(float(np.prod(shape))).reshape(np.array(shape)[list(np.argsort(strides)[::-1])])
    same(flat, np.moveaxis(expected, -1, 1))


def test_resize_in_a_memory_format_small_case_and_errors(T):
    x = T.arange(8.)
    x.resize_((1, 2, 2, 2), memory_format=T.channels_last)
    same(x, [[[[0, 2], [4, 6]], [[1, 3], [5, 7]]]])
    assert x.stride() == (8, 1, 4, 2)
    # the same shape, laid out anew: restriding a transpose reads its memory row-major
    y = T.tensor([[0., 1., 2.], [3., 4., 5.]]).t()
    y.resize_((3, 2), memory_format=T.contiguous_format)
    assert y.stride() == (2, 1)
    same(y, [[0, 1], [2, 3], [4, 5]])
    # the same shape without a format changes nothing (test_resize_as_preserves_strides)
    z = T.empty(2, 3).t()
    z.resize_((3, 2))
    assert z.stride() == (1, 3)
    raises(RuntimeError, "Unsupported memory format", T.randn(4).resize_, (2, 2), memory_format=T.preserve_format)
    raises(RuntimeError, "required rank 4 tensor to use channels_last format", T.randn(4).resize_, (2, 2),
           memory_format=T.channels_last)
    raises(RuntimeError, "required rank 5 tensor to use channels_last_3d format", T.randn(16).resize_, (2, 2, 2, 2),
           memory_format=T.channels_last_3d)


@pytest.mark.parametrize("shape, fmt", [((10, 3, 4, 4), "channels_last"), ((3, 10, 3, 4, 4), "channels_last_3d")])
def test_resize_as_in_the_template_format(T, shape, fmt):
    memory_format = getattr(T, fmt)
    template = T.randn(shape).contiguous(memory_format=memory_format)
    flat = T.randn(template.numel())
    flat.resize_as_(template, memory_format=T.preserve_format)
    assert flat.is_contiguous(memory_format=memory_format)
    assert flat.stride() == template.stride()
    row_major = T.randn(template.numel())
    row_major.resize_as_(template)  # no format: row-major, whatever the template's
    assert row_major.is_contiguous()
    # preserve_format of a row-major (or a merely transposed 2-d) template is row-major
    z = T.arange(8.)
    z.resize_as_(T.empty(2, 4).t(), memory_format=T.preserve_format)
    assert z.stride() == (2, 1)
    same(z, np.arange(8.).reshape(4, 2))


# -- TestOldViewOps.test_contiguous ----------------------------------------------------------------------------


def test_contiguous_despite_the_stride_of_a_size_one_dim(T):
    x = T.randn(1, 16, 5, 5)
    before = values(x).copy()
    strides = list(x.stride())
    strides[0] = 20  # any step will do along a dim of one element
    x.set_(x.untyped_storage(), 0, x.size(), strides)
    assert x.is_contiguous()
    same(x, before)
    same(x.view(-1), before.reshape(-1))


# -- TestOldViewOps.test_atleast_gradient ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3])
def test_atleast_gradients(T, n):
    fn = getattr(T, f"atleast_{n}d")
    rng = np.random.default_rng(5)
    s = T.tensor(0.5, dtype=T.float64, requires_grad=True)
    a = T.tensor(rng.random(4), requires_grad=True)
    assert T.autograd.gradcheck(fn, (s,))
    assert T.autograd.gradgradcheck(fn, (s,))
    assert T.autograd.gradcheck(fn, (a,))
    assert T.autograd.gradgradcheck(fn, (a,))
    inputs = (s, a, *(T.tensor(rng.random(shape), requires_grad=True) for shape in ((4, 3), (4, 3, 2), (4, 3, 2, 1))))
    assert T.autograd.gradcheck(lambda *xs: fn(*xs), inputs)
    assert T.autograd.gradgradcheck(lambda *xs: fn(*xs), inputs)
    outs = fn(*inputs)
    expected_shapes = [getattr(np, f"atleast_{n}d")(np.zeros(tuple(x.shape))).shape for x in inputs]
    assert [tuple(o.shape) for o in outs] == expected_shapes
    sum(((o * (i + 1)).sum() for i, o in enumerate(outs)), T.tensor(0.0, dtype=T.float64)).backward()
    for i, x in enumerate(inputs):
        same(x.grad, np.full(tuple(x.shape), i + 1.0))
        assert outs[i]._base is x or outs[i] is x  # a view of its input (or the input, already wide enough)


# -- TestOldViewOps.test_ravel: the non-contiguous case --------------------------------------------------------


def test_ravel_of_a_non_contiguous_tensor_is_a_view_of_its_copy(T):
    """ravel is contiguous().view(-1): of a non-contiguous tensor, a view of the contiguous copy (never of src)."""
    src = T.tensor(np.arange(6.).reshape(2, 3))
    flat = src.ravel()
    assert shares_memory_with(src, flat) and flat.is_contiguous()
    for nc in (src.t(), T.arange(10.)[::2]):
        flat = nc.ravel()
        same(flat, values(nc).reshape(-1))
        assert flat.is_contiguous() and flat._is_view()
        assert flat._base is not src and flat._base is not nc and flat._base.shape == nc.shape
        assert flat.untyped_storage().data_ptr() != src.untyped_storage().data_ptr()
        flat[0] = 100.0  # the copy's memory, not src's
        assert src[0, 0].item() == 0.0
    x = T.arange(6.).reshape(2, 3).requires_grad_()
    y = (x * 1).t().ravel()
    assert repr(y.grad_fn).startswith("<ViewBackward0")
    (y * T.arange(6.)).sum().backward()
    same(x.grad, np.arange(6.).reshape(3, 2).T)


# -- views of inputs of every layout ----------------------------------------------------------------------------

# each layout: the tensor, made from T.arange(n), and the same made from NumPy's arange(n) (n: the memory's size)
LAYOUTS = {
    "contiguous": (lambda T: T.arange(24.).reshape(2, 3, 4), lambda a: a.reshape(2, 3, 4), 24),
    "permuted": (lambda T: T.arange(24.).reshape(2, 3, 4).permute(2, 0, 1),
                 lambda a: a.reshape(2, 3, 4).transpose(2, 0, 1), 24),
    "sliced": (lambda T: T.arange(48.).reshape(2, 6, 4)[:, 1:4], lambda a: a.reshape(2, 6, 4)[:, 1:4], 48),
    "stepped": (lambda T: T.arange(48.).reshape(2, 3, 8)[..., 1::2], lambda a: a.reshape(2, 3, 8)[..., 1::2], 48),
    "expanded": (lambda T: T.arange(4.).expand(2, 3, 4), lambda a: np.broadcast_to(a, (2, 3, 4)), 4),
}

# each view op, PyTorch's and NumPy's (NumPy's view gives the memory, offset and strides PyTorch's has)
VIEW_OPS = {
    "select": (lambda x: x.select(1, 1), lambda a: a[:, 1]),
    "index": (lambda x: x[-1, ..., 1:], lambda a: a[-1, ..., 1:]),
    "newaxis": (lambda x: x[None, :, 1], lambda a: a[None, :, 1]),
    "step": (lambda x: x[:, ::2], lambda a: a[:, ::2]),
    "narrow": (lambda x: x.narrow(-1, 1, 2), lambda a: a[..., 1:3]),
    "split": (lambda x: x.split(1, 1)[1], lambda a: a[:, 1:2]),
    "split_sizes": (lambda x: x.split([1, x.shape[0] - 1], 0)[1], lambda a: a[1:]),
    "chunk": (lambda x: x.chunk(2, -1)[1], lambda a: a[..., a.shape[-1] - a.shape[-1] // 2:]),
    "tensor_split": (lambda x: x.tensor_split([1], 1)[1], lambda a: a[:, 1:]),
    "unbind": (lambda x: x.unbind(-1)[1], lambda a: a[..., 1]),
    "permute": (lambda x: x.permute(1, 2, 0), lambda a: a.transpose(1, 2, 0)),
    "movedim": (lambda x: x.movedim(0, -1), lambda a: np.moveaxis(a, 0, -1)),
    "transpose": (lambda x: x.transpose(0, 2), lambda a: a.swapaxes(0, 2)),
    "mT": (lambda x: x.mT, lambda a: a.swapaxes(-1, -2)),
    "diagonal": (lambda x: x.diagonal(0, 1, 2), lambda a: np.diagonal(a, 0, 1, 2)),
    "diagonal_offset": (lambda x: x.diagonal(1, -1, 0), lambda a: np.diagonal(a, 1, -1, 0)),
    "unfold": (lambda x: x.unfold(-1, 2, 1), lambda a: np.lib.stride_tricks.sliding_window_view(a, 2, -1)),
    "unsqueeze": (lambda x: x.unsqueeze(1), lambda a: a[:, None]),
    "expand": (lambda x: x[:, :1].expand(-1, 5, -1), lambda a: np.broadcast_to(a[:, :1], (a.shape[0], 5, a.shape[2]))),
    "flatten_nothing": (lambda x: x.flatten(1, 1), lambda a: a),
    "view_as_real": (lambda x: x.real, lambda a: a),
}


def _numpy_equivalent(layout, op):
    _, make_np, size = LAYOUTS[layout]
    np_op = VIEW_OPS[op][1]
    root = np.arange(float(size))
    view = np_op(make_np(root))
    return root, view


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("op", list(VIEW_OPS))
def test_view_ops_share_memory_for_every_layout(T, layout, op):
    x = LAYOUTS[layout][0](T)
    base = x._base if x._is_view() else x
    v = VIEW_OPS[op][0](x)
    root, expected = _numpy_equivalent(layout, op)
    same(v, expected)
    if op in ("flatten_nothing", "view_as_real"):  # flatten(d, d) and a real tensor's .real are x itself
        assert v is x
        return
    assert shares_memory_with(base, v)
    assert v.storage_offset() == offset_in(expected, root)
    assert strides_of_long_dims(v.shape, v.stride()) == strides_of_long_dims(expected.shape, element_strides(expected))
    assert v.is_contiguous() == expected.flags.c_contiguous
    if layout == "expanded" or op == "expand":
        return  # (memory shown several times: no single element to write)
    v[(0,) * v.ndim] = -1.0  # the write reaches the base's memory, at the element NumPy's view starts at
    assert (values(base) == -1).sum() == 1
    assert values(base).reshape(-1)[offset_in(expected, root)] == -1


# -- x.to(dtype) of a tensor that does not fill its memory -----------------------------------------------------


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("dtype", ["float64", "int32", "bool", "complex128"])
def test_to_dtype_lays_the_copy_out_as_pytorch(T, layout, dtype):
    """_to_copy's preserve_format: x's own strides where x fills its memory densely (a permutation), otherwise dense
    in the order of x's strides, a zero stride keeping its row-major place (an expanded tensor: row-major)."""
    x = LAYOUTS[layout][0](T)
    y = x.to(getattr(T, dtype))
    expected_strides = {"permuted": (1, 12, 4)}.get(layout, tuple(np.cumprod((1, *tuple(y.shape)[:0:-1]))[::-1]))
    assert y.stride() == expected_strides
    assert y.is_contiguous() == (layout != "permuted")
    same(y, values(x).astype(dtype))
    if layout != "permuted":
        flat = y.view(-1)  # a view of the copy, as in PyTorch
        assert shares_memory_with(y, flat)
