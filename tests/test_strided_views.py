"""``expand`` and ``unfold`` are views, as PyTorch's.

expand: the new dims and the grown size-1 dims step 0 through the base's memory, so a write to the
base shows in it and expanding a large tensor allocates nothing. A write into it where several of its
elements are one element in memory is refused with PyTorch's error; fill_/zero_ pass, and
masked_fill_, index_fill_ and an advanced-index write pass with PyTorch's deprecation warning,
changing only the elements they select.

unfold: its windows step through the base's memory, so a write into a window reaches the base (and
every window that shows the element), and overlapping windows add their gradients.

Each test runs on chainrule and on PyTorch (the ``T`` fixture)."""

import warnings

import numpy as np
import pytest

OVERLAP = "unsupported operation: more than one element of the written-to tensor refers to a single memory location"


def test_expand_shows_its_base(T):
    x = T.zeros(3, 1)
    e = x.expand(3, 4)
    assert e.stride() == (1, 0) and not e.is_contiguous() and e._base is x
    assert e.data_ptr() == x.data_ptr()
    x[1, 0] = 5.0
    assert e.tolist() == [[0.0] * 4, [5.0] * 4, [0.0] * 4]
    assert x.unsqueeze(0).expand(2, 3, 4).stride() == (0, 1, 0)
    assert T.broadcast_to(x, (2, 3, 4)).stride() == (0, 1, 0)
    assert [t.stride() for t in T.broadcast_tensors(x, T.zeros(4))] == [(1, 0), (0, 1)]
    assert x.expand_as(T.zeros(3, 4)).stride() == (1, 0)
    assert e.contiguous().stride() == (4, 1) and e.contiguous().tolist() == e.tolist()


def test_expanding_a_large_tensor_allocates_nothing(T):
    x = T.ones(2000, 1)
    e = x.expand(2000, 50000)  # 400 MB as a copy
    assert e.data_ptr() == x.data_ptr() and e.shape == (2000, 50000)
    assert e[1999, 49999].item() == 1.0 and e.sum().item() == 1e8


@pytest.mark.parametrize("write", [
    lambda T, e: e.add_(1), lambda T, e: e.mul_(2), lambda T, e: e.copy_(T.ones(3, 4)),
    lambda T, e: e.__setitem__(0, 7.0), lambda T, e: e.__iadd__(1), lambda T, e: e.relu_(),
    lambda T, e: e.clamp_(0, 1), lambda T, e: e.uniform_(), lambda T, e: e.fill_(T.tensor(5.0)),
    lambda T, e: e.detach().add_(1), lambda T, e: e.data.__setitem__(0, 1.0),
    lambda T, e: T.add(T.ones(3, 4), 1, out=e), lambda T, e: e.scatter_(0, T.tensor([[0]]), 1.0),
    lambda T, e: e.index_add_(0, T.tensor([0]), T.ones(1, 4)),
    lambda T, e: e.masked_scatter_(T.ones(3, 4, dtype=T.bool), T.ones(12)),
], ids=["add_", "mul_", "copy_", "setitem_row", "iadd", "relu_", "clamp_", "uniform_", "fill_tensor",
        "detach_add_", "data_setitem", "out", "scatter_", "index_add_", "masked_scatter_"])
def test_a_write_into_shared_memory_is_refused(T, write):
    x = T.arange(3.0).reshape(3, 1)
    with pytest.raises(RuntimeError, match=OVERLAP):
        write(T, x.expand(3, 4))
    assert x.flatten().tolist() == [0.0, 1.0, 2.0]  # nothing written


def test_writes_that_pass(T):
    x = T.arange(3.0).reshape(3, 1)
    x.expand(3, 4).fill_(2.0)
    assert x.flatten().tolist() == [2.0, 2.0, 2.0]
    x.expand(3, 4).zero_()
    assert x.flatten().tolist() == [0.0, 0.0, 0.0]
    e = x.expand(3, 4)
    e[:, 0] = 5.0  # a column: one element per row
    e[:, :1].mul_(2)
    e[1].fill_(-1.0)
    e[2, 3] = 7.0
    assert x.flatten().tolist() == [10.0, -1.0, 7.0]
    assert x.unsqueeze(0).add_(1).shape == (1, 3, 1)  # a size-1 dim's step is no overlap
    assert x.expand(3, 1).add_(1).flatten().tolist() == [12.0, 1.0, 9.0]
    assert T.zeros(0, 1).expand(0, 5).add_(1).shape == (0, 5)


def test_deprecated_writes_change_the_elements_they_select(T):
    mask = T.tensor([[True, False, True, False]] * 3)
    for write, name, expected in [
        (lambda e: e.masked_fill_(mask, 1.0), "masked_fill_", [1.0, 1.0, 1.0]),
        (lambda e: e.index_fill_(1, T.tensor([3]), 4.0), "index_fill_", [4.0, 4.0, 4.0]),
        (lambda e: e.index_put_((T.tensor([1]),), T.tensor(6.0)), "index_put_", [0.0, 6.0, 0.0]),
        (lambda e: e.__setitem__(T.tensor([True, False, True]), 3.0), "index_put_", [3.0, 0.0, 3.0]),
        (lambda e: e.__setitem__(T.tensor([2]), 8.0), "index_put_", [0.0, 0.0, 8.0]),
    ]:
        x = T.zeros(3, 1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            write(x.expand(3, 4))
        assert x.flatten().tolist() == expected, name
        assert any(f"Use of {name} on expanded tensors is deprecated" in str(w.message) for w in caught), name


def test_ops_that_give_new_tensors_do_not_alias(T):
    x = T.tensor([1.0, 2.0, 3.0])
    for y in (x[None].repeat(4, 1), x.repeat_interleave(2), x[:1].repeat_interleave(3),
              T.tensor([5.0]).repeat_interleave(3), T.addmm(T.zeros(4, 2), T.ones(4, 3), T.ones(3, 2), beta=0),
              T.addmm(T.zeros(2), T.ones(4, 3), T.ones(3, 2), beta=0)):
        y += 1  # every element its own
        assert y.is_contiguous()
    assert x.tolist() == [1.0, 2.0, 3.0]
    grid = x[None].repeat(4, 1)
    grid[0, 0] = 9.0
    assert grid[:, 0].tolist() == [9.0, 1.0, 1.0, 1.0]


def test_gradients_through_an_expanded_view(T):
    a = T.tensor([[1.0], [2.0]], dtype=T.float64, requires_grad=True)
    (a.expand(2, 3) * T.arange(6.0, dtype=T.float64).view(2, 3)).sum().backward()
    assert a.grad.flatten().tolist() == [3.0, 12.0]
    b = a * 1
    e = b.expand(2, 3)
    y = (e * e).sum()
    b.add_(1)  # e saved by the product shares b's memory and version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_as_strided_of_an_expanded_tensor(T):
    x = T.tensor([1.0, -2.0, 3.0], dtype=T.float64, requires_grad=True)
    y = x.expand(4, 3).as_strided([2, 2], [1, 0], 0)
    assert y.tolist() == [[1.0, 1.0], [-2.0, -2.0]]
    (y * T.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=T.float64)).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 7.0, 0.0])


def test_gradcheck_refuses_an_expanded_input(T):
    x = T.ones(1, dtype=T.float64, requires_grad=True).expand(2, 2)
    with pytest.raises(RuntimeError, match="The 0th input has a dimension with stride 0"):
        T.autograd.gradcheck(lambda t: t * 2, (x,))


def test_unfold_is_a_view_of_its_windows(T):
    x = T.arange(24.0).view(2, 3, 4)
    w = x.unfold(1, 2, 1)
    assert w.shape == (2, 2, 4, 2) and w.stride() == (12, 4, 1, 4) and w.data_ptr() == x.data_ptr()
    assert w[1, 1, 3].tolist() == [19.0, 23.0]
    w[0, 0, 0, 1] = 100.0  # x[0, 1, 0], which the second window shows too
    assert x[0, 1, 0].item() == 100.0 and w[0, 1, 0, 0].item() == 100.0
    x[1, 2, 3] = -1.0
    assert w[1, 1, 3, 1].item() == -1.0
    assert T.arange(7.0).unfold(0, 3, 3).tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]  # the tail left out


def test_unfold_gradients(T):
    x = T.arange(6.0, dtype=T.float64, requires_grad=True)
    (x.unfold(0, 3, 2) * T.arange(6.0, dtype=T.float64).view(2, 3)).sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 5.0, 4.0, 5.0, 0.0]  # x[2] is in both windows
    assert x.unfold(0, 3, 2).grad_fn.name() == "UnfoldBackward0"
    y = T.randn(2, 5, 3, dtype=T.float64, requires_grad=True)
    assert T.autograd.gradcheck(lambda t: t.unfold(1, 3, 1).pow(2), (y,))
    assert T.autograd.gradgradcheck(lambda t: t.unfold(1, 2, 2).pow(2), (y,))


def test_real_imag_and_view_as_real_are_views_of_complex_memory(T):
    z = T.tensor([1 + 2j, 3 - 4j])
    z.real.mul_(10)
    z.imag[0] = 7.0
    T.view_as_real(z)[1, 1] = 9.0
    assert z.tolist() == [10 + 7j, 30 + 9j]
    z.real = T.tensor([0.0, 0.0])
    z.imag = 1.5
    assert z.tolist() == [1.5j, 1.5j]
    x = T.arange(8.0).view(2, 2, 2)
    c = T.view_as_complex(x)
    assert c.stride() == (2, 1)
    c[0, 0] = 5j
    assert x.flatten().tolist() == [0.0, 5.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert T.view_as_real(T.zeros(3, 2, dtype=T.complex64).t()).stride() == (2, 4, 1)


def test_gradients_through_complex_views(T):
    w = T.tensor([1 + 1j, 2 - 1j], requires_grad=True)
    (T.view_as_real(w * 2) ** 2).sum().backward()
    assert w.grad.tolist() == [8 + 8j, 16 - 8j]
    w.grad = None
    (w.real ** 3 + w.imag * 2).sum().backward()
    assert w.grad.tolist() == [3 + 2j, 12 + 2j]
    q = T.tensor([1 + 2j, 3 + 4j], requires_grad=True)
    doubled = q * 1
    doubled.real.mul_(2)  # a recorded write through the real part: the imaginary part's gradient stays
    (T.view_as_real(doubled) * T.tensor([[1.0, 2.0], [3.0, 4.0]])).sum().backward()
    assert doubled.tolist() == [2 + 2j, 6 + 4j] and q.grad.tolist() == [2 + 2j, 6 + 4j]
    a = T.tensor([[0.5, -1.0], [2.0, 0.25], [1.5, 3.0]], dtype=T.float64, requires_grad=True)
    pairs = a * 1
    T.view_as_complex(pairs).mul_(1j)  # (x + iy) i = -y + ix, written into pairs
    (pairs * T.arange(6.0, dtype=T.float64).view(3, 2)).sum().backward()
    assert a.grad.tolist() == [[1.0, 0.0], [3.0, -2.0], [5.0, -4.0]]
