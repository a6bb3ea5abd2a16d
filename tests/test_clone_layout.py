"""clone() lays its copy out as PyTorch's preserve_format does: as the input where the input fills its memory
densely in some order of its dims (channels_last, a transpose, a permutation), and otherwise dense in the order
of its strides (infer_dense_strides: row-major for a slice with gaps or an expanded tensor); contiguous() and
clone(memory_format=contiguous_format) are row-major. The values and
the gradient are the input's either way."""

import numpy as np
import pytest

LAYOUTS = {  # name: (the input, the copy's strides in elements)
    "row-major": (lambda T: T.arange(24.0).reshape(2, 3, 4), (12, 4, 1)),
    "a transpose": (lambda T: T.arange(6.0).reshape(2, 3).t(), (1, 3)),
    "a permutation": (lambda T: T.arange(60.0).reshape(3, 4, 5).permute(2, 0, 1), (1, 20, 5)),
    "channels_last": (lambda T: T.arange(96.0).reshape(2, 3, 4, 4).contiguous(memory_format=T.channels_last),
                      (48, 1, 12, 3)),
    "a slice with gaps": (lambda T: T.arange(12.0).reshape(3, 4)[:, ::2], (2, 1)),
    "an expanded tensor": (lambda T: T.arange(3.0).expand(2, 3), (3, 1)),
    "a transposed slice": (lambda T: T.arange(12.0).reshape(3, 4)[:, :2].t(), (1, 2)),  # (in the order of its own)
    "an expanded permutation": (lambda T: T.arange(6.0).reshape(2, 1, 3).expand(2, 4, 3).permute(2, 1, 0), (1, 3, 12)),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_clone_preserves_a_dense_layout(T, layout):
    make, strides = LAYOUTS[layout]
    x = make(T)
    copy = x.clone()
    assert tuple(copy.stride()) == strides
    assert tuple(x.clone(memory_format=T.preserve_format).stride()) == strides
    np.testing.assert_array_equal(copy.numpy(), x.numpy())
    copy.add_(1.0)  # its own memory
    np.testing.assert_array_equal(copy.numpy(), x.numpy() + 1.0)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_contiguous_and_contiguous_format_are_row_major(T, layout):
    x = LAYOUTS[layout][0](T)
    row_major = tuple(int(np.prod(x.shape[i + 1:])) for i in range(x.ndim))
    for copy in (x.contiguous(), x.clone(memory_format=T.contiguous_format)):
        assert tuple(copy.stride()) == row_major and copy.is_contiguous()
        np.testing.assert_array_equal(copy.numpy(), x.numpy())


def test_the_gradient_goes_through_whatever_the_layout(T):
    x = T.arange(6.0, dtype=T.float64).reshape(2, 3).requires_grad_()
    y = x.t().clone()
    assert tuple(y.stride()) == (1, 3)
    (y * T.tensor([[1.0], [2.0], [3.0]], dtype=T.float64)).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [[1, 2, 3], [1, 2, 3]])


@pytest.mark.parametrize("format_name", ["channels_last", "contiguous_format", "preserve_format"])
def test_a_clone_in_the_layout_it_has_is_still_a_copy(T, format_name):
    """A tensor already in the asked layout is copied all the same (NumPy's ascontiguousarray would hand the same
    memory back: a write to the clone reached the original)."""
    x = T.arange(96.0).reshape(2, 3, 4, 4)
    if format_name == "channels_last":
        x = x.contiguous(memory_format=T.channels_last)
    copy = x.clone(memory_format=getattr(T, format_name))
    copy.add_(1.0)
    np.testing.assert_array_equal(x.numpy(), np.arange(96.0).reshape(2, 3, 4, 4))
    np.testing.assert_array_equal(copy.numpy(), np.arange(96.0).reshape(2, 3, 4, 4) + 1)
