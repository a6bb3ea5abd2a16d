"""autograd.distributions: densities, entropies and KL divergences by hand and against
torch.distributions, gradients through log_prob and rsample, sample shapes and frequencies,
PyTorch's argument checks, and a REINFORCE step as pytorch/examples writes it."""

import math

import numpy as np
import pytest

import autograd
import nn
import optim
from autograd.distributions import Bernoulli, Categorical, Normal, Uniform, kl_divergence


def test_normal_by_hand():
    m = Normal(autograd.tensor([0.0, 1.0]), autograd.tensor([1.0, 2.0]))
    expected = [-0.5 * 0.25 - 0.5 * math.log(2 * math.pi), -(0.5 ** 2) / 8 - math.log(2) - 0.5 * math.log(2 * math.pi)]
    np.testing.assert_allclose(m.log_prob(autograd.tensor([0.5, 1.5])).numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(m.entropy().numpy(), 0.5 + 0.5 * math.log(2 * math.pi) + np.log([1.0, 2.0]), rtol=1e-6)
    kl = kl_divergence(Normal(0.0, 1.0), Normal(1.0, 2.0))
    assert kl.item() == pytest.approx(math.log(2) + (1 + 1) / 8 - 0.5)


def test_rsample_keeps_the_gradient_and_sample_does_not():
    loc = autograd.tensor([0.5, -1.0], requires_grad=True)
    scale = autograd.tensor([1.0, 3.0], requires_grad=True)
    m = Normal(loc, scale)
    autograd.manual_seed(0)
    draw = m.rsample((4,))
    assert draw.shape == (4, 2) and draw.requires_grad
    draw.sum().backward()  # dx/dμ = 1, dx/dσ = ε = (x - μ) / σ
    np.testing.assert_allclose(loc.grad.numpy(), [4.0, 4.0])
    epsilon = (draw.detach().numpy() - loc.detach().numpy()) / scale.detach().numpy()
    np.testing.assert_allclose(scale.grad.numpy(), epsilon.sum(0), rtol=1e-5)
    assert not m.sample((3,)).requires_grad and m.sample().shape == (2,)
    autograd.manual_seed(1)
    many = Normal(2.0, 0.5).sample((20000,)).numpy()
    assert abs(many.mean() - 2.0) < 0.02 and abs(many.std() - 0.5) < 0.02


def test_categorical_by_hand_and_its_samples():
    m = Categorical(probs=autograd.tensor([[1.0, 3.0], [2.0, 2.0]]))  # normalised per row
    np.testing.assert_allclose(m.probs.numpy(), [[0.25, 0.75], [0.5, 0.5]])
    np.testing.assert_allclose(m.log_prob(autograd.tensor([1, 0])).numpy(), np.log([0.75, 0.5]), rtol=1e-6)
    np.testing.assert_allclose(m.entropy().numpy(), [-(0.25 * np.log(0.25) + 0.75 * np.log(0.75)), np.log(2)],
                               rtol=1e-6)
    assert m.sample((5,)).shape == (5, 2) and m.sample().dtype == autograd.int64
    autograd.manual_seed(2)
    drawn = Categorical(logits=autograd.tensor([0.0, np.log(3.0)])).sample((20000,)).numpy()
    assert abs(drawn.mean() - 0.75) < 0.02


def test_bernoulli_and_uniform_by_hand():
    b = Bernoulli(probs=autograd.tensor([0.2, 0.9]))
    np.testing.assert_allclose(b.log_prob(autograd.tensor([1.0, 0.0])).numpy(), np.log([0.2, 0.1]), rtol=1e-5)
    np.testing.assert_allclose(Bernoulli(logits=autograd.tensor([0.0])).entropy().numpy(), [np.log(2)], rtol=1e-6)
    u = Uniform(0.0, 4.0)
    assert u.log_prob(autograd.tensor(1.0)).item() == pytest.approx(-math.log(4))
    assert u.mean.item() == 2.0 and u.entropy().item() == pytest.approx(math.log(4))
    assert 0.0 <= float(u.sample((100,)).min().item()) and float(u.sample((100,)).max().item()) < 4.0


def test_argument_checks_as_pytorch():
    with pytest.raises(ValueError, match="scale"):
        Normal(0.0, -1.0)
    with pytest.raises(ValueError, match="probs"):
        Categorical(probs=autograd.tensor([-0.1, 1.1]))
    with pytest.raises(ValueError, match="not both"):
        Bernoulli(probs=0.5, logits=0.0)
    with pytest.raises(ValueError, match="support"):
        Uniform(0.0, 1.0).log_prob(autograd.tensor(2.0))


def test_reinforce_step():
    """pytorch/examples' REINFORCE: sample actions from the policy, weight their log-probability
    by the return; the step makes the rewarded action more likely."""
    autograd.manual_seed(0)
    policy = nn.Linear(3, 2)
    optimizer = optim.Adam(policy.parameters(), lr=0.1)
    state = autograd.tensor([[0.5, -0.2, 0.1]])

    def rewarded_probability():
        with autograd.no_grad():
            return float(Categorical(logits=policy(state)).probs[0, 1].item())

    before = rewarded_probability()
    for _ in range(20):
        m = Categorical(logits=policy(state))
        action = m.sample()
        reward = (action == 1).float()  # action 1 pays
        loss = -(m.log_prob(action) * reward).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert rewarded_probability() > before + 0.2


@pytest.mark.torch
def test_matches_torch_distributions():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    loc, scale, x = rng.standard_normal(3), rng.uniform(0.5, 2, 3), rng.standard_normal((2, 3))
    logits, probs = rng.standard_normal((2, 4)), rng.uniform(0, 1, (2, 4))
    probs[0, 1] = 0.0  # a class that never happens: finite log-probability, as PyTorch clamps it
    classes = np.array([[1, 3], [0, 2], [3, 3]])

    def both(make):
        return make(autograd, autograd.distributions), make(torch, torch.distributions)

    cases = [
        lambda m, d: d.Normal(m.tensor(loc), m.tensor(scale)).log_prob(m.tensor(x)),
        lambda m, d: d.Normal(m.tensor(loc), m.tensor(scale)).entropy(),
        lambda m, d: d.Normal(m.tensor(loc), m.tensor(scale)).cdf(m.tensor(x)),
        lambda m, d: d.kl_divergence(d.Normal(m.tensor(loc), m.tensor(scale)),
                                     d.Normal(m.tensor(loc * 0.5), m.tensor(scale * 1.5))),
        lambda m, d: d.Categorical(logits=m.tensor(logits)).log_prob(m.tensor(classes)),
        lambda m, d: d.Categorical(probs=m.tensor(probs)).log_prob(m.tensor(classes)),
        lambda m, d: d.Categorical(probs=m.tensor(probs)).entropy(),
        lambda m, d: d.kl_divergence(d.Categorical(probs=m.tensor(probs)), d.Categorical(logits=m.tensor(logits))),
        lambda m, d: d.Bernoulli(probs=m.tensor(probs[1])).log_prob(m.tensor(np.array([0.0, 1.0, 1.0, 0.0]))),
        lambda m, d: d.Bernoulli(logits=m.tensor(logits[0])).entropy(),
        lambda m, d: d.kl_divergence(d.Bernoulli(probs=m.tensor(probs[1])), d.Bernoulli(logits=m.tensor(logits[0]))),
        lambda m, d: d.Uniform(m.tensor([0.0, 1.0]), m.tensor([2.0, 5.0])).log_prob(m.tensor([1.0, 1.5])),
    ]
    for case in cases:
        ours, theirs = both(case)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-10, atol=1e-12)
    shapes = both(lambda m, d: d.Categorical(logits=m.tensor(logits)).sample((5,)).shape)
    assert tuple(shapes[0]) == tuple(shapes[1])


def diagonal_gaussian_policy(m, d):
    """A continuous-action policy as PPO/SAC code writes it: Independent(Normal(μ, σ), 1)."""
    mu = m.tensor([[0.3, -0.2, 1.0], [0.0, 0.5, -1.5]], dtype=m.float64, requires_grad=True)
    log_std = m.tensor([-0.5, 0.1, 0.3], dtype=m.float64, requires_grad=True)
    pi = d.Independent(d.Normal(mu, log_std.exp()), 1)
    action = m.tensor([[0.1, 0.4, 0.9], [-1.0, 2.0, -1.0]], dtype=m.float64)
    log_prob, entropy = pi.log_prob(action), pi.entropy()
    prior = d.Independent(d.Normal(m.zeros(2, 3, dtype=m.float64), m.ones(2, 3, dtype=m.float64)), 1)
    kl = d.kl_divergence(pi, prior)
    (log_prob.sum() + entropy.sum() + kl.sum()).backward()
    whole = d.Independent(d.Normal(mu, log_std.exp()), 2)
    return (log_prob, entropy, kl, mu.grad, log_std.grad, tuple(pi.batch_shape), tuple(pi.event_shape),
            tuple(whole.batch_shape), tuple(whole.event_shape), whole.log_prob(action), pi.has_rsample,
            tuple(pi.rsample((4,)).shape), pi.mean, pi.variance)


def test_independent_normal_as_a_diagonal_gaussian_policy():
    ours = diagonal_gaussian_policy(autograd, autograd.distributions)
    log_prob, entropy, kl = ours[:3]
    mu = np.array([[0.3, -0.2, 1.0], [0.0, 0.5, -1.5]])
    std = np.exp([-0.5, 0.1, 0.3])
    action = np.array([[0.1, 0.4, 0.9], [-1.0, 2.0, -1.0]])
    by_hand = (-((action - mu) ** 2) / (2 * std ** 2) - np.log(std) - 0.5 * np.log(2 * np.pi)).sum(-1)
    np.testing.assert_allclose(log_prob.numpy(), by_hand, rtol=1e-12)
    np.testing.assert_allclose(entropy.numpy(), np.full(2, (0.5 + 0.5 * np.log(2 * np.pi) + np.log(std)).sum()))
    np.testing.assert_allclose(kl.numpy(), (0.5 * (std ** 2 + mu ** 2 - 1) - np.log(std)).sum(-1), rtol=1e-12)
    assert ours[5:9] == ((2,), (3,), (), (2, 3))
    np.testing.assert_allclose(ours[9].numpy(), by_hand.sum(), rtol=1e-12)
    assert ours[10] is True and ours[11] == (4, 2, 3)
    with pytest.raises(ValueError, match="reinterpreted_batch_ndims"):
        autograd.distributions.Independent(autograd.distributions.Normal(autograd.zeros(3), autograd.ones(3)), 2)
    torch = pytest.importorskip("torch")
    theirs = diagonal_gaussian_policy(torch, torch.distributions)
    for a, b in zip(ours, theirs):
        if hasattr(a, "detach"):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-12, atol=1e-14)
        else:
            assert a == b
