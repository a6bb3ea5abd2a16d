"""``repeat``, ``tile`` and ``repeat_interleave`` give a tensor of their own memory, as PyTorch's, also where every
count is 1 (``board.repeat(n_simulations, 1, 1)`` with one simulation): it was the input itself reshaped, so a
write to either showed in the other (an MCTS playing a move on its copy of the board moved the root's).
Each test runs on chainrule and on PyTorch (the ``T`` fixture)."""

import pytest

REPEATS = {
    "repeat": lambda x: x.repeat(1, 1),
    "repeat_leading": lambda x: x.repeat(1, 1, 1),
    "tile": lambda x: x.tile((1,)),
    "repeat_interleave": lambda x: x.repeat_interleave(1, dim=0),
    "repeat_interleave_flat": lambda x: x.repeat_interleave(1),
}


@pytest.mark.parametrize("name", sorted(REPEATS))
def test_a_repeat_by_ones_is_a_copy(T, name):
    board = T.zeros(3, 3)
    copies = REPEATS[name](board)
    copies.view(-1)[4] = 1.0  # a move played on the copy
    board[0, 0] = -1.0  # and one on the board
    assert board.view(-1)[4].item() == 0.0 and copies.view(-1)[0].item() == 0.0
    assert copies.data_ptr() != board.data_ptr()


def test_a_repeat_by_ones_passes_its_gradient_through(T):
    x = T.arange(3.0, requires_grad=True)
    y = x.repeat(1)
    (y * T.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0] and y.grad_fn.name() == "RepeatBackward0"
