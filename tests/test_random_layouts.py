"""Random draws into tensors that are not row-major, as PyTorch makes them: its serial kernels write draw after
draw through the tensor's memory (a transpose's go down its columns), ``normal_`` of a tensor that is not
contiguous takes the one-at-a-time kernel whatever its size (blocks of 16 only for contiguous ones), and a
dropout mask is made ``empty_like`` its input, so in the input's layout; ``bernoulli(x)`` draws into a row-major
tensor. Each check compares two spellings of the same draws, so it holds on chainrule and on PyTorch alike."""

import pytest

import nn  # noqa: F401  (registers autograd.nn)


def _seeded(T, make):
    T.manual_seed(0)
    return make()


@pytest.mark.parametrize("fill", ["uniform_", "normal_", "log_normal_", "cauchy_", "exponential_", "bernoulli_",
                                  "random_"])
def test_an_in_place_draw_into_a_transpose_fills_its_memory_in_order(T, fill):
    draw = {"random_": lambda x: x.random_(0, 100), "bernoulli_": lambda x: x.bernoulli_(0.3)}.get(
        fill, lambda x: getattr(x, fill)())
    transposed = _seeded(T, lambda: draw(T.zeros(3, 4).t()))
    row_major_then_transposed = _seeded(T, lambda: draw(T.zeros(3, 4)).t())
    assert T.equal(transposed, row_major_then_transposed)
    permuted = _seeded(T, lambda: draw(T.zeros(2, 2, 3).permute(2, 0, 1)))  # (under 16: normal_ one at a time)
    assert T.equal(permuted, _seeded(T, lambda: draw(T.zeros(2, 2, 3)).permute(2, 0, 1)))


def test_normal_of_a_slice_draws_one_at_a_time_whatever_its_size(T):
    """miniai's RandErase: ``init.normal_(x[:, :, a:b, c:d], mean, std)`` over 64 values."""
    sliced = _seeded(T, lambda: T.nn.init.normal_(T.zeros(16, 1, 12, 12)[:, :, 3:5, 2:4], mean=1.0, std=2.0))
    one_at_a_time = _seeded(T, lambda: T.cat([T.zeros(1).normal_(1.0, 2.0) for _ in range(64)]))
    assert T.equal(sliced.flatten(), one_at_a_time)
    contiguous = _seeded(T, lambda: T.zeros(64).normal_(1.0, 2.0))  # blocks of 16: other numbers
    assert not T.allclose(contiguous, one_at_a_time)
    # a transpose of 20 values: one at a time too, down its columns
    transposed = _seeded(T, lambda: T.zeros(4, 5).t().normal_())
    assert T.equal(transposed, _seeded(T, lambda: T.cat([T.zeros(1).normal_() for _ in range(20)]).view(4, 5).t()))


@pytest.mark.parametrize("p, shape", [(0.5, (3, 4)), (0.3, (2, 3, 4, 5))])
def test_a_dropout_mask_takes_its_inputs_layout(T, p, shape):
    F = T.nn.functional
    reordered = _seeded(T, lambda: F.dropout(T.ones(shape).transpose(0, -1), p))
    assert T.equal(reordered, _seeded(T, lambda: F.dropout(T.ones(shape), p).transpose(0, -1)))
    alpha = _seeded(T, lambda: F.alpha_dropout(T.ones(shape).transpose(0, -1), p, True))
    assert T.allclose(alpha, _seeded(T, lambda: F.alpha_dropout(T.ones(shape), p, True).transpose(0, -1)))


def test_a_dropout_mask_of_a_slice_is_row_major(T):
    """A slice leaves gaps in memory: ``empty_like`` of it is row-major."""
    F = T.nn.functional
    sliced = _seeded(T, lambda: F.dropout(T.ones(4, 6)[:, 1:5], 0.5))
    assert T.equal(sliced, _seeded(T, lambda: F.dropout(T.ones(4, 4), 0.5)))


def test_bernoulli_of_a_transpose_draws_row_major(T):
    probabilities = T.full((3, 4), 0.3)
    assert T.equal(_seeded(T, lambda: T.bernoulli(probabilities.t())),
                   _seeded(T, lambda: T.bernoulli(T.full((4, 3), 0.3))))
    assert T.equal(_seeded(T, lambda: T.bernoulli(probabilities.t(), 0.5)),
                   _seeded(T, lambda: T.bernoulli(T.full((4, 3), 0.3), 0.5)))


def test_random_like_a_permuted_tensor_draws_in_its_layout(T):
    transposed = _seeded(T, lambda: T.rand_like(T.zeros(3, 4).t()))  # empty_like keeps the layout: drawn down it
    assert transposed.stride() == (1, 4) and T.equal(transposed, _seeded(T, lambda: T.rand_like(T.zeros(3, 4)).t()))
    assert T.empty_like(T.zeros(3, 4)[:, ::2]).stride() == (2, 1)  # (not dense: row-major)
    normal = _seeded(T, lambda: T.randn_like(T.zeros(5, 4).t()))  # not contiguous: one draw at a time
    assert normal.stride() == (1, 4) and not T.equal(normal, _seeded(T, lambda: T.randn_like(T.zeros(5, 4)).t()))
