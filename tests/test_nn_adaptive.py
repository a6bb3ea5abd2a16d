"""AdaptiveLogSoftmaxWithLoss: a distribution over every class, the loss its negative mean log-likelihood,
finite differences; against PyTorch (float64: outputs, loss, every gradient, log_prob, predict, repr,
state_dict keys) where it is installed."""

import numpy as np
import pytest

import autograd
import nn

torch_only = pytest.mark.torch


def layer(**options):
    autograd.manual_seed(0)
    return nn.AdaptiveLogSoftmaxWithLoss(**options).double()


def test_log_prob_is_a_distribution_and_the_output_reads_it():
    asm = layer(in_features=6, n_classes=11, cutoffs=[3, 7], div_value=2.0)
    x = autograd.Tensor(np.random.default_rng(0).standard_normal((9, 6)))
    target = np.array([0, 2, 3, 6, 7, 10, 1, 5, 9])
    log_prob = asm.log_prob(x).numpy()
    np.testing.assert_allclose(np.exp(log_prob).sum(1), 1.0, rtol=1e-12)
    output, loss = asm(x, autograd.Tensor(target))
    np.testing.assert_allclose(output.detach().numpy(), log_prob[np.arange(9), target], rtol=1e-12)
    assert loss.item() == pytest.approx(-log_prob[np.arange(9), target].mean())
    np.testing.assert_array_equal(asm.predict(x).numpy(), log_prob.argmax(1))
    assert asm(x[0], autograd.tensor(4)).output.shape == ()  # one unbatched example
    assert autograd.gradcheck(lambda x: asm(x, autograd.Tensor(target)).output, (x.requires_grad_(),))


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="cutoffs should be a sequence of unique, positive integers"):
        nn.AdaptiveLogSoftmaxWithLoss(4, 10, [5, 3])
    asm = layer(in_features=4, n_classes=10, cutoffs=[3])
    with pytest.raises(RuntimeError, match=r"Target values should be in \[0, 9\]"):
        asm(autograd.randn(2, 4).double(), autograd.tensor([1, 10]))
    with pytest.raises(RuntimeError, match="same size in the batch dimension"):
        asm(autograd.randn(3, 4).double(), autograd.tensor([1, 2]))


@torch_only
@pytest.mark.parametrize("options", [dict(in_features=16, n_classes=20, cutoffs=[4, 10]),
                                     dict(in_features=8, n_classes=10, cutoffs=[3], div_value=2.0, head_bias=True)])
def test_matches_torch(options):
    import torch

    ours, theirs = layer(**options), torch.nn.AdaptiveLogSoftmaxWithLoss(**options).double()
    assert repr(ours) == repr(theirs) and list(ours.state_dict()) == list(theirs.state_dict())
    ours.load_state_dict({k: autograd.Tensor(v.detach().numpy()) for k, v in theirs.state_dict().items()})
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((12, options["in_features"])), rng.integers(0, options["n_classes"], 12)
    ours_x, theirs_x = autograd.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    mine, reference = ours(ours_x, autograd.Tensor(target)), theirs(theirs_x, torch.tensor(target))
    np.testing.assert_allclose(mine.output.detach().numpy(), reference.output.detach().numpy(), rtol=1e-12)
    mine.loss.backward()
    reference.loss.backward()
    np.testing.assert_allclose(ours_x.grad.numpy(), theirs_x.grad.numpy(), rtol=1e-10, atol=1e-12)
    for (name, p), (other, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert name == other
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.log_prob(autograd.Tensor(x)).detach().numpy(),
                               theirs.log_prob(torch.tensor(x)).detach().numpy(), rtol=1e-12)
    np.testing.assert_array_equal(ours.predict(autograd.Tensor(x)).numpy(), theirs.predict(torch.tensor(x)).numpy())
