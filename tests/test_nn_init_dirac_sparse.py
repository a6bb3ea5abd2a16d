"""nn.init.dirac_ and sparse_, PyTorch's private ``_calculate_correct_fan`` that custom initialisers
call, and the pre-0.4 names without the underscore (a FutureWarning, then the same fill)."""

import warnings

import numpy as np
import pytest

import autograd
import nn


@pytest.mark.parametrize("shape, groups", [((4, 2, 3, 3), 2), ((3, 5, 3), 1), ((2, 2, 3, 1, 3), 1), ((6, 4, 3, 3), 3)])
def test_dirac_makes_the_convolution_the_identity_on_shared_channels(shape, groups):
    w = autograd.empty(*shape)
    assert nn.init.dirac_(w, groups=groups) is w
    per_group = shape[0] // groups
    want = np.zeros(shape)
    centre = tuple(k // 2 for k in shape[2:])
    for g in range(groups):
        for d in range(min(per_group, shape[1])):
            want[(g * per_group + d, d, *centre)] = 1.0
    np.testing.assert_array_equal(w.numpy(), want)


def test_dirac_identity_through_a_grouped_convolution():
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=2, bias=False)
    nn.init.dirac_(conv.weight, groups=2)
    x = autograd.randn(2, 4, 5, 5)
    np.testing.assert_allclose(conv(x).detach().numpy(), x.numpy(), rtol=1e-6)


def test_dirac_errors():
    with pytest.raises(ValueError, match="3, 4, or 5 dimensions"):
        nn.init.dirac_(autograd.empty(2, 2))
    with pytest.raises(ValueError, match="divisible by groups"):
        nn.init.dirac_(autograd.empty(3, 2, 3, 3), groups=2)


def test_sparse_zeroes_the_same_count_in_every_column_and_repeats_under_a_seed():
    w = autograd.empty(10, 6)
    autograd.manual_seed(0)
    assert nn.init.sparse_(w, sparsity=0.25, std=0.5) is w
    values = w.numpy().copy()
    assert ((values == 0).sum(0) == 3).all()  # ceil(0.25 * 10)
    assert 0.2 < values[values != 0].std() < 0.9
    autograd.manual_seed(0)
    np.testing.assert_array_equal(nn.init.sparse_(autograd.empty(10, 6), 0.25, std=0.5).numpy(), values)
    g = autograd.Generator().manual_seed(3)
    a = nn.init.sparse_(autograd.empty(4, 3), 0.5, generator=g).numpy()
    assert ((a == 0).sum(0) == 2).all()
    with pytest.raises(ValueError, match="2 dimensions"):
        nn.init.sparse_(autograd.empty(2, 2, 2), 0.1)


def test_calculate_correct_fan():
    w = autograd.empty(4, 3, 2, 2)
    assert nn.init._calculate_correct_fan(w, "fan_in") == 12 and nn.init._calculate_correct_fan(w, "fan_out") == 16
    with pytest.raises(ValueError, match=r"Mode x not supported, please use one of \['fan_in', 'fan_out'\]"):
        nn.init._calculate_correct_fan(w, "x")


@pytest.mark.parametrize("old, args", [("uniform", (-1, 1)), ("normal", ()), ("constant", (0.5,)), ("eye", ()),
                                       ("xavier_uniform", ()), ("xavier_normal", ()), ("kaiming_uniform", ()),
                                       ("kaiming_normal", ()), ("orthogonal", ()), ("sparse", (0.5,))])
def test_the_old_names_warn_and_fill_as_the_new(old, args):
    autograd.manual_seed(1)
    want = getattr(nn.init, old + "_")(autograd.empty(4, 4), *args).numpy()
    autograd.manual_seed(1)
    with pytest.warns(FutureWarning, match=f"`nn.init.{old}` is now deprecated in favor of `nn.init.{old}_`"):
        got = getattr(nn.init, old)(autograd.empty(4, 4), *args)
    np.testing.assert_array_equal(got.numpy(), want)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert nn.init.dirac(autograd.empty(2, 2, 3)).sum().item() == 2.0


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    for shape, groups in [((4, 2, 3, 3), 2), ((3, 5, 3), 1), ((2, 2, 3, 1, 3), 1)]:
        ours = nn.init.dirac_(autograd.empty(*shape), groups=groups).numpy()
        theirs = torch.nn.init.dirac_(torch.empty(*shape), groups=groups).numpy()
        np.testing.assert_array_equal(ours, theirs)
    w = autograd.empty(4, 3, 2, 2)
    for mode in ("fan_in", "fan_out"):
        assert nn.init._calculate_correct_fan(w, mode) == torch.nn.init._calculate_correct_fan(
            torch.empty(4, 3, 2, 2), mode)
    for old in ("uniform", "normal", "constant", "eye", "dirac", "xavier_uniform", "xavier_normal", "kaiming_uniform",
                "kaiming_normal", "orthogonal", "sparse"):
        assert hasattr(torch.nn.init, old) and callable(getattr(nn.init, old))
    theirs = torch.nn.init.sparse_(torch.empty(10, 6), 0.25)
    assert ((theirs.numpy() == 0).sum(0) == 3).all()
