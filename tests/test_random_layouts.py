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


def test_a_dropout_mask_of_a_slice_of_a_transpose_is_drawn_down_its_columns(T):
    """``empty_like`` of a view with gaps is dense in the order of the view's strides (PyTorch's
    infer_dense_strides): row-major for a slice of a row-major tensor (above), down the columns for a slice of a
    transpose, and so is the dropout mask drawn into it."""
    F = T.nn.functional
    sliced = _seeded(T, lambda: F.dropout(T.ones(6, 8).t()[1:3], 0.5))
    assert T.equal(sliced, _seeded(T, lambda: F.dropout(T.ones(6, 2), 0.5)).t())
    permuted = _seeded(T, lambda: F.dropout(T.ones(2, 3, 4, 5).permute(2, 0, 3, 1)[:, :, 1:4], 0.5))
    assert T.equal(permuted, _seeded(T, lambda: F.dropout(T.ones(2, 3, 4, 3), 0.5)).permute(2, 0, 3, 1))


@pytest.mark.parametrize("view", ["transpose", "slice of a transpose", "strided slice of a transpose"])
def test_multinomial_races_exponentials_laid_out_as_its_input(T, view):
    """multinomial without replacement (and a single draw) is PyTorch's exponential race: the indices of the
    largest p / E for E = empty_like(p).exponential_(), so E follows p's layout. multinomial(probs.T, n) gave
    other indices than PyTorch's for the same seed (the exponentials went row-major)."""
    g = T.Generator().manual_seed(3)
    probs = T.rand(5, 6, generator=g, dtype=T.float64)

    def drawn_down(rows, columns):  # exponentials drawn into a (columns, rows) tensor laid out column-major
        return lambda: T.empty(rows, columns, dtype=T.float64).exponential_(generator=g).t()

    weights, races = {"transpose": (probs.t(), drawn_down(5, 6)),
                      "slice of a transpose": (probs.t()[1:4], drawn_down(5, 3)),
                      "strided slice of a transpose": (probs.t()[::2], drawn_down(5, 3))}[view]
    state = g.get_state()
    drawn = T.multinomial(weights, 3, generator=g)
    g.set_state(state)
    by_hand = (weights / races()).topk(3, dim=1).indices
    assert T.equal(drawn, by_hand)
    g.set_state(state)
    single = T.multinomial(weights, 1, generator=g)
    g.set_state(state)
    assert T.equal(single, (weights / races()).argmax(1, keepdim=True))


def test_dense_strides_are_pytorchs_infer_dense_strides():
    from autograd.backend import dense_strides

    # the strides of PyTorch's empty_like(x) for x = P.T[1:3], P.t()[::2], permute(2, 0, 1)[:, :, 1:3], a row
    # expanded, and a slice of a row-major tensor
    assert dense_strides((2, 4), (1, 6)) == [1, 2]
    assert dense_strides((3, 4), (2, 6)) == [1, 3]
    assert dense_strides((4, 2, 2), (1, 12, 4)) == [1, 8, 4]
    assert dense_strides((3, 8), (0, 1)) == [8, 1]
    assert dense_strides((4, 3), (6, 2)) == [3, 1]
