"""Ops whose PyTorch result is always a new tensor give one also where they move nothing: ``repeat``, ``tile`` and
``repeat_interleave`` by counts of 1 (``board.repeat(n_simulations, 1, 1)`` with one simulation), ``rot90`` by a
multiple of 4 turns (a board's identity symmetry), ``pixel_shuffle``/``pixel_unshuffle`` by a factor of 1 and
``channel_shuffle`` of one group, ``interpolate`` (linear modes, antialiased) to the input's own size (a decoder's
``F.interpolate(x, size=skip.shape[-2:], mode="bilinear")``, then ``+= skip``) and ``F.unfold`` by a 1 x 1 window.
Each was the input itself, or a view of it (the unfold's read-only: a write into it raised), so a write to either
showed in the other (an MCTS playing a move on its copy of the board moved the root's). Each test runs on
chainrule and on PyTorch (the ``T`` fixture)."""

import pytest

import nn  # noqa: F401  (registers autograd.nn)

COPIES = {
    "repeat": lambda T, x: x.repeat(1, 1),
    "repeat_leading": lambda T, x: x.repeat(1, 1, 1),
    "tile": lambda T, x: x.tile((1,)),
    "repeat_interleave": lambda T, x: x.repeat_interleave(1, dim=0),
    "repeat_interleave_flat": lambda T, x: x.repeat_interleave(1),
    "rot90_by_0": lambda T, x: x.rot90(0),
    "rot90_by_minus_4": lambda T, x: T.rot90(x, -4, (1, 0)),
    "pixel_shuffle": lambda T, x: T.nn.functional.pixel_shuffle(x[None], 1)[0],
    "pixel_unshuffle": lambda T, x: T.nn.functional.pixel_unshuffle(x[None], 1)[0],
    "channel_shuffle": lambda T, x: T.nn.functional.channel_shuffle(x[None, None], 1)[0, 0],
    "bilinear_to_its_size": lambda T, x: T.nn.functional.interpolate(x[None, None], size=(3, 3), mode="bilinear")[0, 0],
    "linear_to_its_size": lambda T, x: T.nn.functional.interpolate(x[None], size=3, mode="linear",
                                                                   align_corners=True)[0],
    "antialiased_to_its_size": lambda T, x: T.nn.functional.interpolate(x[None, None], size=(3, 3), mode="bicubic",
                                                                        antialias=True)[0, 0],
    "unfold_1x1": lambda T, x: T.nn.functional.unfold(x[None, None], 1)[0],
}


@pytest.mark.parametrize("name", sorted(COPIES))
def test_a_rearrangement_that_moves_nothing_is_a_copy(T, name):
    board = T.zeros(3, 3)
    copies = COPIES[name](T, board)
    copies.view(-1)[4] = 1.0  # a move played on the copy
    board[0, 0] = -1.0  # and one on the board
    assert board.view(-1)[4].item() == 0.0 and copies.view(-1)[0].item() == 0.0
    assert copies.data_ptr() != board.data_ptr()


@pytest.mark.parametrize("make, node", [
    (lambda T, x: x.repeat(1, 1, 1, 1), "RepeatBackward0"),
    (lambda T, x: x.rot90(0, (2, 3)), "Rot90Backward0"),
    (lambda T, x: T.nn.functional.pixel_unshuffle(x, 1), "PixelUnshuffleBackward0"),
    (lambda T, x: T.nn.functional.channel_shuffle(x, 1), "ChannelShuffleBackward0"),
])
def test_the_copy_passes_its_gradient_through_under_pytorchs_node(T, make, node):
    x = T.arange(9.0).view(1, 1, 3, 3).requires_grad_()
    y = make(T, x)
    y.backward(T.arange(9.0).view(y.shape))
    assert y.grad_fn.name() == node and x.grad.flatten().tolist() == list(range(9))


@pytest.mark.parametrize("make", [lambda T, x: x.broadcast_to((2, 3)), lambda T, x: T.broadcast_to(x, (2, 3)),
                                  lambda T, x: x.unflatten(0, (2,))])
def test_a_view_of_the_same_shape_is_a_new_tensor(T, make):
    """broadcast_to and unflatten to the input's own shape returned the input itself: a change of the view's
    metadata (t_(), requires_grad_()) changed the input."""
    x = T.ones(2, 3)
    y = make(T, x)
    assert y is not x and y.data_ptr() == x.data_ptr()
    y.t_()
    assert tuple(x.shape) == (2, 3) and tuple(y.shape) == (3, 2)
