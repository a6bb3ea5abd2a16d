"""Where metric-learning losses and distances are not differentiable, the gradient PyTorch picks.
The hinge of margin_ranking_loss, triplet_margin_loss (and with a distance) and cosine_embedding_loss is a
clamp_min: exactly at 0 the gradient goes through (a relu stopped it, so a ranking of tied scores with margin 0
never moved). cosine_embedding_loss takes any target, a loss only for 1 and -1 (0/1 labels gave an error).
The triplet losses refuse tensors of different numbers of dims (they broadcast them). With p = inf a norm's tied
largest entries share the gradient (pairwise_distance and F.normalize gave it all to one), while cdist and pdist
give each of them the whole of it, as PyTorch's kernels do."""

import importlib

import pytest


def functional(T):
    return importlib.import_module("torch.nn.functional" if T.__name__ == "torch" else "nn.functional")


def test_margin_ranking_at_a_tie_passes_the_gradient(T):
    F = functional(T)
    x1 = T.tensor([2.0, 1.0], requires_grad=True)
    x2 = T.tensor([2.0, 1.0], requires_grad=True)
    loss = F.margin_ranking_loss(x1, x2, T.tensor([1.0, -1.0]), margin=0.0, reduction="sum")
    g1, g2 = T.autograd.grad(loss, [x1, x2])
    assert loss.item() == 0 and g1.tolist() == [-1.0, 1.0] and g2.tolist() == [1.0, -1.0]


@pytest.mark.parametrize("swap", [False, True])
def test_triplet_at_the_margin_passes_the_gradient(T, swap):
    F = functional(T)
    a = T.tensor([[0.0, 0.0]], requires_grad=True)
    p = T.tensor([[1.0, 0.0]], requires_grad=True)
    n = T.tensor([[0.0, 2.0]], requires_grad=True)
    loss = F.triplet_margin_loss(a, p, n, margin=1.0, eps=0.0, swap=swap)  # 1 + 1 - 2 = 0
    ga, gp, gn = T.autograd.grad(loss, [a, p, n])
    assert loss.item() == 0
    assert ga.tolist() == [[-1.0, 1.0]] and gp.tolist() == [[1.0, 0.0]] and gn.tolist() == [[0.0, -1.0]]
    loss = F.triplet_margin_with_distance_loss(a, p, n, distance_function=lambda x, y: (x - y).norm(dim=-1),
                                               margin=1.0, swap=swap)
    assert T.autograd.grad(loss, a)[0].tolist() == [[-1.0, 1.0]]


def test_triplets_refuse_different_numbers_of_dims(T):
    F = functional(T)
    match = "expected to have the same number of dimensions, but got: anchor 2D, positive 2D, and negative 1D"
    with pytest.raises(RuntimeError, match=match):
        F.triplet_margin_loss(T.ones(3, 2), T.zeros(3, 2), T.ones(2))
    with pytest.raises(RuntimeError, match=match):
        F.triplet_margin_with_distance_loss(T.ones(3, 2), T.zeros(3, 2), T.ones(2))


def test_cosine_embedding_at_the_margin_and_with_other_targets(T):
    F = functional(T)
    x1 = T.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]], requires_grad=True)
    x2 = T.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    losses = F.cosine_embedding_loss(x1, x2, T.tensor([-1, 0, 2]), margin=0.0, reduction="none")
    assert losses.tolist() == [0.0, 0.0, 0.0]  # cos = margin for -1; 0 and 2 count for nothing
    g1, g2 = T.autograd.grad(losses.sum(), [x1, x2])
    assert g1.tolist() == [[0.0, 1.0], [0.0, 0.0], [0.0, 0.0]] and g2.tolist()[0] == [1.0, 0.0]
    labels01 = F.cosine_embedding_loss(x1, x2, T.tensor([1, 0, 1]), reduction="sum")
    assert labels01.item() == pytest.approx(1 + (1 - 2 ** -0.5))  # the 1s' losses alone


def test_inf_norm_ties_share_the_gradient(T):
    F = functional(T)
    x1 = T.tensor([[1.0, -3.0, 3.0, 0.0]], requires_grad=True)
    distance = F.pairwise_distance(x1, T.zeros(1, 4), p=float("inf"), eps=0.0)
    assert distance.tolist() == [3.0] and distance.grad_fn.name() == "NormBackward1"
    assert T.autograd.grad(distance.sum(), x1)[0].tolist() == [[0.0, -0.5, 0.5, 0.0]]
    unit = F.normalize(x1, p=float("inf"), dim=1)
    weights = T.tensor([[1.0, 2.0, 0.0, 0.0]])
    grad = T.autograd.grad((unit * weights).sum(), x1)[0]
    assert grad[0].tolist() == pytest.approx([1 / 3, 2 / 3 - 5 / 18, 5 / 18, 0])
    assert F.pairwise_distance(x1, T.zeros(1, 4), p=0, eps=0.0).tolist() == [3.0]  # the nonzero count


def test_cdist_and_pdist_inf_ties_each_take_the_whole_gradient(T):
    F = functional(T)
    x = T.tensor([[1.0, -3.0, 3.0, 0.0], [0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    assert T.autograd.grad(T.cdist(x[:1], x[1:], p=float("inf")).sum(), x)[0].tolist() == [
        [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, -1.0, 0.0]]
    assert T.autograd.grad(F.pdist(x, p=float("inf")).sum(), x)[0].tolist() == [
        [0.0, -1.0, 1.0, 0.0], [0.0, 1.0, -1.0, 0.0]]
