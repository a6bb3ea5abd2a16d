"""Fixes found by the probe24 uncertainty programs, each checked against literals (and PyTorch where installed)."""

import pytest

import autograd
import nn

from .pytorch_programs import pytorch


def both(program):
    """program(torch, nn) on chainrule, and on PyTorch where installed: (ours, theirs or None)."""
    ours = program(autograd, nn)
    modules = pytorch()
    return ours, (None if modules is None else program(modules.torch, modules.nn))


# ----------------------------------------------------------------------------------------------
# Channel and alpha dropouts are no Dropout: MC dropout re-enables only nn.Dropout
# ----------------------------------------------------------------------------------------------


def mc_dropout_switches(torch, nn):
    """Test-time MC dropout as its authors write it: eval(), then train() on each ``isinstance(m, nn.Dropout)``;
    a Dropout2d or AlphaDropout stays in eval, and ``_DropoutNd`` is the base all share."""
    model = nn.Sequential(nn.Dropout(0.1), nn.Dropout2d(0.2), nn.AlphaDropout(0.3), nn.Dropout1d(0.1),
                          nn.Dropout3d(0.1), nn.FeatureAlphaDropout(0.1), nn.ReLU())
    model.eval()
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    base = nn.modules.dropout._DropoutNd
    return ([m.training for m in model], [isinstance(m, base) for m in model],
            [issubclass(type(m), nn.Dropout) for m in model], repr(model[1]), model[2].p)


def test_only_dropout_is_a_dropout():
    ours, theirs = both(mc_dropout_switches)
    assert ours == ([True, False, False, False, False, False, False], [True] * 6 + [False],
                    [True] + [False] * 6, "Dropout2d(p=0.2, inplace=False)", 0.3)
    if theirs is not None:
        assert ours == theirs


def test_mc_dropout_draws_only_through_dropout():
    """With the channel dropout left in eval, the MC passes of a conv net differ only by nn.Dropout's masks."""
    autograd.manual_seed(0)
    net = nn.Sequential(nn.Dropout2d(0.5), nn.Flatten(), nn.Dropout(0.5))
    net.eval()
    for module in net.modules():
        if isinstance(module, nn.Dropout):
            module.train()
    out = net(autograd.ones(1, 4, 1, 1))
    assert sorted(set(out.numpy().ravel().tolist())) <= [0.0, 2.0]  # Dropout2d's would zero a whole channel and scale


# ----------------------------------------------------------------------------------------------
# quantile's q is a float or a Tensor: a list is a TypeError, as PyTorch's argument parser says
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["quantile", "nanquantile"])
@pytest.mark.parametrize("q", [[0.5], (0.1, 0.9), None])
def test_quantile_refuses_a_list_of_qs(name, q):
    def program(torch, nn):
        with pytest.raises(TypeError, match=rf"{name}\(\) received an invalid combination of arguments - got "
                                            rf"\(Tensor, {type(q).__name__}\)"):
            getattr(torch, name)(torch.arange(4.0), q)
        return getattr(torch, name)(torch.arange(4.0), 1).item(), torch.quantile(torch.arange(4.0), True).item()

    ours, theirs = both(program)
    assert ours == (3.0, 3.0)
    if theirs is not None:
        assert ours == theirs
