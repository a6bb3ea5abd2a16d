"""The further losses (smooth L1, KL divergence, Poisson and Gaussian NLL, soft margin,
multi-label margins, triplet with a distance): gradcheck in float64, and PyTorch's values
and gradients for every reduction; the loss modules' signatures, buffers and errors."""

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F
from autograd import Tensor
from tests.test_ops import leaf

RNG = np.random.default_rng(0)
X = RNG.standard_normal((4, 3))
Y = RNG.standard_normal((4, 3))
POSITIVE = RNG.random((4, 3)) + 0.2
COUNTS = RNG.integers(0, 5, (4, 3)).astype(float)
PROBS = np.exp(Y) / np.exp(Y).sum(1, keepdims=True)
SIGNS = np.where(RNG.random((4, 3)) > 0.5, 1.0, -1.0)
BITS = (RNG.random((4, 3)) > 0.5).astype(float)
MULTILABEL = np.array([[2, 0, -1], [1, -1, 2], [0, 1, 2], [-1, 0, 0]])

# name: (our function, torch's, the float inputs (differentiated), the constant inputs)
LOSSES = {
    "smooth_l1": (F.smooth_l1_loss, "smooth_l1_loss", (X, Y), (), {"beta": 0.5}),
    "smooth_l1_zero_beta": (F.smooth_l1_loss, "smooth_l1_loss", (X, Y), (), {"beta": 0.0}),
    "kl_div": (F.kl_div, "kl_div", (np.log(PROBS[::-1]), PROBS), (), {}),
    "kl_div_zero_target": (F.kl_div, "kl_div", (X,), (np.where(BITS > 0, PROBS, 0.0),), {}),
    "kl_div_log_target": (F.kl_div, "kl_div", (X, Y), (), {"log_target": True}),
    "poisson": (F.poisson_nll_loss, "poisson_nll_loss", (X,), (COUNTS,), {}),
    "poisson_full": (F.poisson_nll_loss, "poisson_nll_loss", (X,), (COUNTS,), {"full": True}),
    "poisson_rates": (F.poisson_nll_loss, "poisson_nll_loss", (POSITIVE,), (COUNTS,),
                      {"log_input": False, "full": True, "eps": 1e-4}),
    "gaussian": (F.gaussian_nll_loss, "gaussian_nll_loss", (X, Y, POSITIVE), (), {}),
    "gaussian_full_shared_var": (F.gaussian_nll_loss, "gaussian_nll_loss", (X, Y, POSITIVE[:, :1]), (),
                                 {"full": True}),
    "gaussian_var_one_dim_fewer": (F.gaussian_nll_loss, "gaussian_nll_loss", (X, Y, POSITIVE[:, 0]), (), {}),
    "soft_margin": (F.soft_margin_loss, "soft_margin_loss", (X,), (SIGNS,), {}),
    "multilabel_soft_margin": (F.multilabel_soft_margin_loss, "multilabel_soft_margin_loss", (X,), (BITS,),
                               {}),
    "multilabel_margin": (F.multilabel_margin_loss, "multilabel_margin_loss", (X,), (MULTILABEL,), {}),
    "multilabel_margin_1d": (F.multilabel_margin_loss, "multilabel_margin_loss", (X[0],), (MULTILABEL[1],),
                             {}),
}
pytestmark = [pytest.mark.filterwarnings("ignore:reduction. 'mean' divides the total loss"),
              pytest.mark.filterwarnings("ignore:size_average and reduce args will be deprecated")]
REDUCTIONS = {"kl_div": ("mean", "sum", "none", "batchmean")}


def _ours(name, reduction, leaves):
    fn, _, floats, constants, options = LOSSES[name]
    return fn(*leaves, *[autograd.tensor(c) for c in constants], reduction=reduction, **options)


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_gradients_match_finite_differences(name, reduction):
    floats = LOSSES[name][2]
    weights = Tensor(RNG.standard_normal(np.shape(floats[0])[:1]))

    def loss(*leaves):
        value = _ours(name, reduction, leaves)
        return value if reduction != "none" else (value * weights.reshape(value.shape[:1] + (1,) * (
            value.ndim - 1)) if value.ndim else value)

    assert autograd.gradcheck(loss, [leaf(f) for f in floats])


@pytest.mark.torch
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_values_and_gradients_match_pytorch(name):
    import torch

    fn, torch_name, floats, constants, options = LOSSES[name]
    torch_fn = getattr(torch.nn.functional, torch_name)
    for reduction in REDUCTIONS.get(name.split("_zero")[0].split("_log")[0], ("mean", "sum", "none")):
        leaves = [leaf(f) for f in floats]
        value = _ours(name, reduction, leaves)
        weights = RNG.standard_normal(value.shape)
        (value * Tensor(weights)).sum().backward()
        torch_leaves = [torch.tensor(np.asarray(f, dtype=np.float64), requires_grad=True) for f in floats]
        expected = torch_fn(*torch_leaves, *[torch.tensor(c) for c in constants], reduction=reduction, **options)
        (expected * torch.tensor(weights)).sum().backward()
        np.testing.assert_allclose(value.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-13,
                                   err_msg=f"{name} {reduction}")
        for ours, theirs in zip(leaves, torch_leaves):
            np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=f"{name} {reduction}")


@pytest.mark.torch
@pytest.mark.parametrize("swap", [False, True])
def test_triplet_margin_with_distance_matches_pytorch(swap):
    import torch

    anchor, positive, negative = X, Y, X[::-1] * 0.5
    for distance in (None, "cosine"):
        ours_distance = None if distance is None else (lambda a, b: 1.0 - F.cosine_similarity(a, b))
        theirs_distance = None if distance is None else (
            lambda a, b: 1.0 - torch.nn.functional.cosine_similarity(a, b))
        leaves = [leaf(v) for v in (anchor, positive, negative)]
        loss = nn.TripletMarginWithDistanceLoss(distance_function=ours_distance, margin=1.5, swap=swap)(*leaves)
        loss.backward()
        torch_leaves = [torch.tensor(v.copy(), requires_grad=True) for v in (anchor, positive, negative)]
        expected = torch.nn.TripletMarginWithDistanceLoss(distance_function=theirs_distance, margin=1.5,
                                                          swap=swap)(*torch_leaves)
        expected.backward()
        np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-12)
        for ours, theirs in zip(leaves, torch_leaves):
            np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-13)
    assert autograd.gradcheck(lambda a, p, n: F.triplet_margin_with_distance_loss(a, p, n, margin=2.0),
                              [leaf(anchor), leaf(positive), leaf(negative)])


@pytest.mark.torch
def test_loss_modules_match_pytorch_modules_with_weights_as_buffers():
    import torch

    weight = np.array([0.5, 2.0, 1.0])
    pairs = [
        (nn.SmoothL1Loss(beta=0.3), torch.nn.SmoothL1Loss(beta=0.3), (X, Y)),
        (nn.KLDivLoss(reduction="batchmean"), torch.nn.KLDivLoss(reduction="batchmean"), (X, PROBS)),
        (nn.KLDivLoss(reduction="sum", log_target=True), torch.nn.KLDivLoss(reduction="sum", log_target=True),
         (X, Y)),
        (nn.PoissonNLLLoss(full=True), torch.nn.PoissonNLLLoss(full=True), (X, COUNTS)),
        (nn.GaussianNLLLoss(full=True, eps=0.5), torch.nn.GaussianNLLLoss(full=True, eps=0.5), (X, Y, POSITIVE)),
        (nn.SoftMarginLoss(), torch.nn.SoftMarginLoss(), (X, SIGNS)),
        (nn.MultiLabelSoftMarginLoss(weight=Tensor(weight)),
         torch.nn.MultiLabelSoftMarginLoss(weight=torch.tensor(weight)), (X, BITS)),
        (nn.MultiLabelMarginLoss(reduction="sum"), torch.nn.MultiLabelMarginLoss(reduction="sum"), (X, MULTILABEL)),
        (nn.MSELoss(reduce=False), torch.nn.MSELoss(reduce=False), (X, Y)),
        (nn.L1Loss(size_average=False), torch.nn.L1Loss(size_average=False), (X, Y)),
    ]
    for ours, theirs, inputs in pairs:
        value = ours(*[autograd.tensor(v) for v in inputs])
        expected = theirs(*[torch.tensor(v) for v in inputs])
        np.testing.assert_allclose(value.numpy(), expected.numpy(), rtol=1e-12, err_msg=repr(ours))
        assert ours.reduction == theirs.reduction
        assert list(ours.state_dict()) == list(theirs.state_dict())
    for ours, theirs in [(nn.CrossEntropyLoss(weight=Tensor(weight)), torch.nn.CrossEntropyLoss(torch.tensor(weight))),
                         (nn.BCEWithLogitsLoss(pos_weight=Tensor(weight)),
                          torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(weight))),
                         (nn.NLLLoss(Tensor(weight)), torch.nn.NLLLoss(torch.tensor(weight))),
                         (nn.BCELoss(Tensor(weight)), torch.nn.BCELoss(torch.tensor(weight)))]:
        assert list(ours.state_dict()) == list(theirs.state_dict())
        assert [name for name, _ in ours.named_buffers()] == [name for name, _ in theirs.named_buffers()]


def test_errors_are_pytorchs():
    with pytest.raises(ValueError, match="var has negative"):
        F.gaussian_nll_loss(Tensor(X), Tensor(Y), Tensor(-POSITIVE))
    with pytest.raises(ValueError, match="var is of incorrect size"):
        F.gaussian_nll_loss(Tensor(X), Tensor(Y), Tensor(POSITIVE[:2]))
    with pytest.raises(ValueError, match="batchmean"):
        nn.MSELoss(reduction="batchmean")
    with pytest.raises(ValueError, match="margin to be greater than 0"):
        nn.TripletMarginWithDistanceLoss(margin=0.0)
    with pytest.raises(RuntimeError, match="negative values for beta"):
        F.smooth_l1_loss(Tensor(X), Tensor(Y), beta=-1.0)


def test_gaussian_nll_clamps_the_variance_but_not_its_gradient():
    """As PyTorch: var is clamped to eps in value only (the clamp is done in place under no_grad)."""
    var = leaf([[1e-9]])
    loss = F.gaussian_nll_loss(leaf([[0.0]]), Tensor(np.array([[2e-3]])), var, eps=1e-6)
    loss.backward()
    np.testing.assert_allclose(loss.item(), 0.5 * (np.log(1e-6) + 4e-6 / 1e-6))
    np.testing.assert_allclose(var.grad.item(), 0.5 * (1 / 1e-6 - 4e-6 / 1e-12))


def test_kl_div_mean_warns_as_pytorch():
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        F.kl_div(Tensor(X), Tensor(PROBS))


def test_kl_div_is_zero_between_a_distribution_and_itself_and_positive_otherwise():
    assert abs(F.kl_div(Tensor(np.log(PROBS)), Tensor(PROBS), reduction="batchmean").item()) < 1e-15
    assert F.kl_div(Tensor(np.log(PROBS[::-1])), Tensor(PROBS), reduction="batchmean").item() > 0


def test_soft_margin_loss_refuses_a_target_that_requires_grad_as_pytorchs(T):
    """PyTorch has no derivative of soft_margin_loss in its target: it refuses one that requires grad (outside
    no_grad), where a loss built of differentiable ops would silently give dL/dtarget."""
    F_ = pytest.importorskip("torch.nn.functional") if T.__name__ == "torch" else F
    x = T.tensor([0.5, -1.0, 2.0], requires_grad=True)
    y = T.tensor([1.0, -1.0, -1.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="'soft_margin_loss' is not differentiable with respect to argument"):
        F_.soft_margin_loss(x, y)
    with T.no_grad():
        value = F_.soft_margin_loss(x, y)
    assert abs(float(value) - float(np.log1p(np.exp([-0.5, -1.0, 2.0])).mean())) < 1e-6
    F_.soft_margin_loss(x, y.detach()).backward()
    y_times_x = np.array([0.5, 1.0, -2.0])
    np.testing.assert_allclose(x.grad.numpy(), -np.array([1, -1, -1]) / (1 + np.exp(y_times_x)) / 3, rtol=1e-5)
