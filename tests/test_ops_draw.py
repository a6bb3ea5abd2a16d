"""Draw: a random draw recorded from parameters that require grad, with gradient 0 to each, as PyTorch's samplers
(``normal(mu, sigma)``, ``bernoulli(p)``, ``poisson(rate)``) are: they are not reparameterised, so a score-function
(REINFORCE) loss through them runs, and no share of the gradient flows through the draw itself."""

import numpy as np
import pytest


def normal_of_parameters(T):
    mean = T.tensor([0.0, 1.0, -2.0], dtype=T.float64, requires_grad=True)
    std = T.tensor([1.0, 0.5, 2.0], dtype=T.float64, requires_grad=True)
    T.manual_seed(0)
    return (mean, std), T.normal(mean, std)


CASES = {"Draw": normal_of_parameters}


def test_the_draws_are_the_seeds_and_the_gradients_are_zero(T):
    (mean, std), draws = CASES["Draw"](T)
    T.manual_seed(0)
    unit = T.randn(3, dtype=T.float64)
    np.testing.assert_allclose(draws.detach().numpy(), mean.detach().numpy() + std.detach().numpy() * unit.numpy(),
                               rtol=1e-15)
    assert draws.requires_grad and draws.grad_fn.name() == "NormalBackward3"
    (draws * draws).sum().backward()
    assert mean.grad.tolist() == [0.0, 0.0, 0.0] and std.grad.tolist() == [0.0, 0.0, 0.0]


def test_a_score_function_loss_through_a_bernoulli_draw(T):
    """REINFORCE: the draw carries no gradient; the log-probability of it does."""
    logits = T.tensor([0.3, -1.2, 2.0, 0.0], dtype=T.float64, requires_grad=True)
    probs = logits.sigmoid()
    T.manual_seed(3)
    action = T.bernoulli(probs)
    assert action.requires_grad and action.grad_fn.name() == "BernoulliBackward0"
    log_prob = action * probs.log() + (1 - action) * (1 - probs).log()
    (-(log_prob * 2.0).sum() + action.sum()).backward()
    p, a = probs.detach().numpy(), action.detach().numpy()
    np.testing.assert_allclose(logits.grad.numpy(), -2.0 * (a - p), rtol=1e-12)  # d log p(a) / d logit = a - σ


def test_as_pytorch():
    torch = pytest.importorskip("torch")
    import autograd

    (_, _), ours = CASES["Draw"](autograd)
    (_, _), theirs = CASES["Draw"](torch)
    np.testing.assert_array_equal(ours.detach().numpy(), theirs.detach().numpy())
    assert ours.grad_fn.name() == theirs.grad_fn.name()
