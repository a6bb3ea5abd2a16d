"""Focused tests of the library fixes made while porting test_autograd.py's remaining parts, test_dlpack.py and
test_complex.py (port24_autograd_misc): each checks chainrule against literals or NumPy and, where PyTorch is
installed, against PyTorch (fixture `T`)."""

import io
import sys
import warnings

import numpy as np

from tests.ported import raises, same, values


def test_custom_function_writing_a_view_of_a_view_in_place_rebases_the_base(T):
    """mark_dirty on a view written in place: the base's history takes the write (PyTorch's CopySlices), so a
    gradient through the base reaches the Function's other inputs (it reached none of them)."""
    class PyAdd(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            ctx.mark_dirty(x)
            x.add_(y)
            return x

        @staticmethod
        def backward(ctx, grad):
            return grad, 3 * grad

    a = T.zeros(4, 4, requires_grad=True)
    b = T.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    x = a.clone()
    PyAdd.apply(x.narrow(1, 0, 2).narrow(0, 1, 2), b)
    assert x.grad_fn.name() in ("CopySlices", "torch::autograd::CopySlices")
    expected = np.zeros((4, 4), np.float32)
    expected[1:3, 0:2] = [[1.0, 2.0], [3.0, 4.0]]
    same(x, expected)
    go = np.arange(16.0, dtype=np.float32).reshape(4, 4)
    grad_a, grad_b = T.autograd.grad(x, (a, b), T.tensor(go))
    same(grad_a, go)
    same(grad_b, 3 * go[1:3, 0:2])


def test_from_dlpack_of_a_legacy_capsule_is_writable_and_shares_memory(T):
    x = T.tensor([1.0, 2.0, 3.0], dtype=T.float64)
    z = T.from_dlpack(T.utils.dlpack.to_dlpack(x))
    z[0] = z[0] + 20.0  # (raised "shape mismatch: value tensor of shape [] cannot be broadcast ... shape []")
    z.mul_(2)
    same(x, [42.0, 4.0, 6.0])
    copied = T.from_dlpack(x, copy=True)
    copied.zero_()
    same(x, [42.0, 4.0, 6.0])


def test_dlpack_export_refusals_are_pytorchs(T):
    x = T.tensor([1.0, 2.0])
    raises(TypeError, "stream must be ``int`` or ``none``", lambda: x.__dlpack__(stream="cuda"))
    raises(AssertionError, "stream should be None on cpu", lambda: x.__dlpack__(stream=1))
    raises(BufferError, "Unsupported device_type: 16", lambda: x.__dlpack__(max_version=(1, 0), dl_device=(16, 0)))
    raises(BufferError, "layout other than torch.strided", T.sparse_coo_tensor([[0]], [1.0], (2,)).__dlpack__)
    device_type, index = x.__dlpack_device__()
    assert device_type is T.utils.dlpack.DLDeviceType.kDLCPU and device_type == 1 and index == 0
    same(T.from_dlpack(x.__dlpack__(max_version=(1, 0), dl_device=(1, 0))), [1.0, 2.0])


def test_tensor_reads_an_object_that_only_speaks_dlpack(T):
    class OnlyDLPack:
        def __init__(self, array):
            self.array = array

        def __dlpack__(self, **kwargs):
            return self.array.__dlpack__(**kwargs)

        def __dlpack_device__(self):
            return self.array.__dlpack_device__()

    source = np.array([[1, 2], [3, 4]], dtype=np.int16)
    t = T.tensor(OnlyDLPack(source))
    same(t, source, dtype="int16")
    t.add_(1)
    same(source, [[1, 2], [3, 4]])  # (a copy, as torch.tensor makes)


def test_anomaly_mode_names_the_parent_backward_of_a_second_backward(T):
    class Inner(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            return g * float("nan")

    class Outer(T.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * 1.0

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return Inner.apply(g * x)

    x = T.tensor([1.0, 2.0], requires_grad=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with T.autograd.detect_anomaly():
            (g,) = T.autograd.grad(Outer.apply(x).sum(), x, create_graph=True)
            raises(RuntimeError, "Function 'InnerBackward' returned nan values in its 0th output", g.sum().backward)
    notes = [str(w.message) for w in caught if "Error detected" in str(w.message) or "Previous" in str(w.message)]
    assert len(notes) == 2
    assert notes[0].startswith("Error detected in InnerBackward. Traceback of forward call")
    assert "Inner.apply" in notes[0]
    assert "Previous calculation was induced by OuterBackward. Traceback of forward call that induced the previous " \
           "calculation" in notes[1] and "Outer.apply" in notes[1]


def test_anomaly_note_made_an_error_by_a_filter_goes_to_stderr(T):
    x = T.tensor([0.0, 1.0], requires_grad=True)
    stderr, captured = sys.stderr, io.StringIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with T.autograd.detect_anomaly():
            y = (x / x).sum()
            warnings.simplefilter("error")
            sys.stderr = captured
            try:  # the pass's own error, not the warning
                raises(RuntimeError, "Function 'DivBackward0' returned nan values in its 1th output", y.backward)
            finally:
                sys.stderr = stderr
    assert "UserWarning: Error detected in DivBackward0" in captured.getvalue()


def test_assigning_a_tensor_as_its_own_grad_is_refused(T):
    x = T.ones(3)
    raises(RuntimeError, "can't assign Variable as its own grad", setattr, x, "grad", x)
    assert x.grad is None
    x.grad = x.clone()
    same(x.grad, values(x))


def test_prod_scatter_with_two_zeros_at_one_place_refuses_its_second_backward(T):
    """src's gradient there is 0 (the other zero), but its derivative is not the product of the other terms:
    PyTorch refuses to differentiate it again; chainrule gave a wrong second derivative."""
    inp = T.tensor([1.0, 3.0], dtype=T.float64, requires_grad=True)
    src = T.tensor([0.0, 0.0, 2.0], dtype=T.float64, requires_grad=True)
    index = T.tensor([0, 0, 1])
    for fn, source in ((T.scatter_reduce, "src"), (T.index_reduce, "source")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # (PyTorch's "index_reduce() is in beta")
            out = fn(inp, 0, index, src, "prod")
        same(out, [0.0, 6.0])
        grad_inp, grad_src = T.autograd.grad(out.sum(), (inp, src), create_graph=True)
        same(grad_inp, [0.0, 2.0])
        same(grad_src, [0.0, 0.0, 3.0])
        raises(RuntimeError, f"{fn.__name__}\\(\\): Double backward is unsupported for {source} when >1 zeros in "
               f"{source} are scattered to the same position in self", T.autograd.grad, grad_src.sum(), src)
        same(T.autograd.grad(grad_inp.sum(), src)[0], [0.0, 0.0, 1.0])  # (inp's own second derivative is taken)


def test_unsafe_split_pieces_are_not_views_to_autograd(T):
    """unsafe_split/unsafe_chunk/unsafe_split_with_sizes: memory shared, but each piece its own version counter, so
    writing one in place leaves what another's node saved usable (it was refused as 'modified by an inplace
    operation'); split's pieces stay views."""
    for cut in (lambda t: t.unsafe_split(2), lambda t: T.unsafe_chunk(t, 2),
                lambda t: t.unsafe_split_with_sizes([2, 2])):
        a = T.tensor([1.0, 2.0, 3.0, 4.0], requires_grad=True)
        b = a * 1
        first, second = cut(b)
        assert first.data_ptr() == b.data_ptr() and not first._is_view()
        first.mul_(second)
        same(b, [3.0, 8.0, 3.0, 4.0])  # (the memory is shared)
        first.sum().backward()
        same(a.grad, [3.0, 4.0, 1.0, 2.0])
    assert T.tensor([1.0, 2.0]).split(1)[0]._is_view()
