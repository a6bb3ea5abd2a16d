"""Fixes found by the probe24 uncertainty programs, each checked against literals (and PyTorch where installed)."""

import numpy as np
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


# ----------------------------------------------------------------------------------------------
# The rest of PyTorch's layer family tree: which layer is an instance of which
# ----------------------------------------------------------------------------------------------

# (layer, the classes it is an instance of in PyTorch among the others named here)
FAMILY = {
    "Softmax": [], "LogSoftmax": [], "Softmin": [], "ELU": [], "CELU": [], "Hardshrink": [], "Softshrink": [],
    "ConstantPad2d": [], "ZeroPad2d": ["ConstantPad2d"], "ZeroPad1d": [],
    "Dropout": [], "Dropout2d": [], "AlphaDropout": [],
}
LOSSES = {  # weighted: subclasses of _WeightedLoss; every one is a _Loss
    "CrossEntropyLoss": True, "NLLLoss": True, "BCELoss": True, "MultiMarginLoss": True,
    "MultiLabelSoftMarginLoss": True, "NLLLoss2d": True, "BCEWithLogitsLoss": False, "MSELoss": False,
    "GaussianNLLLoss": False, "CTCLoss": False,
}


def family_tree(torch, nn):
    layers = {name: [other for other in FAMILY if other != name and issubclass(getattr(nn, name), getattr(nn, other))]
              for name in FAMILY}
    loss_module = nn.modules.loss
    losses = {name: (issubclass(getattr(nn, name), loss_module._Loss),
                     issubclass(getattr(nn, name), loss_module._WeightedLoss)) for name in LOSSES}
    return layers, losses


def test_layer_family_tree():
    ours, theirs = both(family_tree)
    assert ours == (FAMILY, {name: (True, weighted) for name, weighted in LOSSES.items()})
    if theirs is not None:
        assert ours == theirs


def layers_after_the_split(torch, nn):
    """The layers keep their options, reprs, state and values once they no longer share a class with another."""
    torch.manual_seed(0)
    x = torch.randn(2, 3)
    weight = torch.tensor([1.0, 2.0, 0.5])
    ce = nn.CrossEntropyLoss(weight=weight, ignore_index=1, label_smoothing=0.1)
    nll = nn.NLLLoss(weight, reduction="sum")
    mm = nn.MultiMarginLoss(p=2, margin=0.5, weight=weight)
    ctc = nn.CTCLoss(blank=2, reduction="sum", zero_infinity=True)
    target = torch.tensor([0, 2])
    layers = [nn.ELU(0.5), nn.CELU(2.0, inplace=True), nn.Hardshrink(0.3), nn.Softshrink(0.3), nn.Softmax(1),
              nn.LogSoftmax(dim=1), nn.Softmin(-1), nn.ZeroPad1d(1), nn.ConstantPad1d((0, 1), 2.5)]
    values = [layer(x.clone()) for layer in layers]
    losses = [ce(x, target), nll(x, target), mm(x, target), nn.BCELoss(weight)(x.sigmoid(), x.gt(0).float())]
    return ([repr(layer) for layer in layers + [ce, nll, mm, ctc]], values, losses,
            [sorted(loss.state_dict()) for loss in (ce, nll, mm, ctc)],
            (ce.ignore_index, ce.label_smoothing, mm.p, mm.margin, ctc.blank, ctc.reduction, ctc.zero_infinity))


def test_layers_after_the_split():
    ours, theirs = both(layers_after_the_split)
    reprs, values, losses, states, options = ours
    assert reprs[:9] == ["ELU(alpha=0.5)", "CELU(alpha=2.0, inplace=True)", "Hardshrink(0.3)", "Softshrink(0.3)",
                         "Softmax(dim=1)", "LogSoftmax(dim=1)", "Softmin(dim=-1)", "ZeroPad1d((1, 1))",
                         "ConstantPad1d(padding=(0, 1), value=2.5)"]
    assert states == [["weight"], ["weight"], ["weight"], []]
    assert options == (1, 0.1, 2, 0.5, 2, "sum", True)
    autograd.manual_seed(0)
    x = autograd.randn(2, 3).numpy()
    np.testing.assert_allclose(values[4].numpy(), np.exp(x) / np.exp(x).sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(values[6].numpy(), np.exp(-x) / np.exp(-x).sum(1, keepdims=True), rtol=1e-6)
    np.testing.assert_allclose(values[1].numpy(), np.where(x > 0, x, 2.0 * np.expm1(x / 2.0)), rtol=1e-6)
    np.testing.assert_allclose(values[8].numpy(), np.pad(x, ((0, 0), (0, 1)), constant_values=2.5))
    if theirs is not None:
        assert reprs == theirs[0] and states == theirs[3] and options == theirs[4]
        for a, b in zip(values + losses, theirs[1] + theirs[2]):
            np.testing.assert_allclose(a.detach().numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# _LRScheduler is PyTorch's old base, a subclass of LRScheduler: the built-in schedulers are none of it
# ----------------------------------------------------------------------------------------------


def scheduler_bases(torch, nn):
    optim = torch.optim
    opt = optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    step = optim.lr_scheduler.StepLR(opt, 2, gamma=0.5)

    class Halving(optim.lr_scheduler._LRScheduler):  # an older author's own schedule
        def get_lr(self):
            return [base * 0.5 ** self.last_epoch for base in self.base_lrs]

    opt2 = optim.SGD(nn.Linear(2, 1).parameters(), lr=0.1)
    own = Halving(opt2)
    lrs = []
    for _ in range(3):
        opt2.step()
        own.step()
        lrs.append(opt2.param_groups[0]["lr"])
    lr_scheduler = optim.lr_scheduler
    return (isinstance(step, lr_scheduler._LRScheduler), isinstance(step, lr_scheduler.LRScheduler),
            isinstance(own, lr_scheduler.LRScheduler), issubclass(lr_scheduler._LRScheduler, lr_scheduler.LRScheduler),
            lr_scheduler._LRScheduler is lr_scheduler.LRScheduler, lrs)


def test_lr_scheduler_old_base():
    ours, theirs = both(scheduler_bases)
    assert ours[:5] == (False, True, True, True, False)
    np.testing.assert_allclose(ours[5], [0.05, 0.025, 0.0125])
    if theirs is not None:
        assert ours[:5] == theirs[:5]
        np.testing.assert_allclose(ours[5], theirs[5])


# ----------------------------------------------------------------------------------------------
# Gumbel is a TransformedDistribution of a uniform, as PyTorch's
# ----------------------------------------------------------------------------------------------


def gumbel_as_transformed(torch, nn):
    D = torch.distributions
    torch.manual_seed(0)
    loc, scale = torch.tensor([0.0, 1.0], requires_grad=True), torch.tensor([1.0, 2.0])
    g = D.Gumbel(loc, scale)
    x = g.rsample((3,))
    grad, = torch.autograd.grad(x.sum(), loc)
    expanded = g.expand((4, 2))
    scalar = D.Gumbel(0.0, 1.0)
    value = torch.tensor([0.5, -0.5])
    return dict(kinds=(isinstance(g, D.TransformedDistribution), type(g.base_dist).__name__,
                       [type(t).__name__ for t in g.transforms], type(expanded).__name__, tuple(expanded.batch_shape),
                       tuple(scalar.batch_shape)),
                x=x.detach().numpy(), grad=grad.numpy(), log_prob=g.log_prob(value).detach().numpy(),
                cdf=g.cdf(value).detach().numpy(), icdf=g.icdf(torch.tensor([0.3, 0.6])).detach().numpy(),
                mean=expanded.mean.detach().numpy(), scalar=scalar.sample((2,)).numpy())


def test_gumbel_is_a_transformed_uniform():
    ours, theirs = both(gumbel_as_transformed)
    assert ours["kinds"] == (True, "Uniform", ["_InverseTransform", "AffineTransform", "_InverseTransform",
                                                "AffineTransform"], "Gumbel", (4, 2), ())
    loc, scale, v = np.array([0.0, 1.0]), np.array([1.0, 2.0]), np.array([0.5, -0.5])
    z = (v - loc) / scale
    np.testing.assert_allclose(ours["log_prob"], -(z + np.exp(-z)) - np.log(scale), rtol=1e-6)
    np.testing.assert_allclose(ours["cdf"], np.exp(-np.exp(-z)), rtol=1e-6)
    np.testing.assert_allclose(ours["icdf"], loc - scale * np.log(-np.log([0.3, 0.6])), rtol=1e-6)
    np.testing.assert_allclose(ours["grad"], [3.0, 3.0])  # x = μ + β g: dx/dμ = 1 per draw
    np.testing.assert_allclose(ours["mean"], np.tile(loc + scale * 0.5772156649, (4, 1)), rtol=1e-6)
    if theirs is not None:
        assert ours["kinds"] == theirs["kinds"]
        for key in ("x", "log_prob", "cdf", "icdf", "mean", "scalar"):
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# Constraints: greater_than_eq is no greater_than, half_open_interval no interval; _IntegerLessThan,
# transforms._InverseTransform under PyTorch's names
# ----------------------------------------------------------------------------------------------


def constraint_kinds(torch, nn):
    C, T = torch.distributions.constraints, torch.distributions.transforms
    upto3 = C._IntegerLessThan(3)
    return (isinstance(C.greater_than_eq(0.5), C._GreaterThan), isinstance(C.nonnegative, C._GreaterThan),
            isinstance(C.half_open_interval(0, 1), C._Interval), isinstance(C.unit_interval, C._Interval),
            isinstance(C.positive, C._GreaterThan), repr(C.greater_than_eq(0.5)), repr(C.half_open_interval(0, 1)),
            repr(upto3), upto3.is_discrete, upto3.check(torch.tensor([2.0, 2.5, 3.0, 4.0])).tolist(),
            C.greater_than_eq(1.0).check(torch.tensor([1.0, 0.5])).tolist(),
            isinstance(T.ExpTransform().inv, T._InverseTransform))


def test_constraint_kinds():
    ours, theirs = both(constraint_kinds)
    assert ours == (False, False, False, True, True, "GreaterThanEq(lower_bound=0.5)",
                    "HalfOpenInterval(lower_bound=0, upper_bound=1)", "IntegerLessThan(upper_bound=3)", True,
                    [True, False, True, False], [True, False], True)
    if theirs is not None:
        assert ours == theirs
