"""How a loss reads its ``reduction``, as PyTorch's: the losses PyTorch computes in C++ read it at the call
(``_Reduction.get_enum``), before any other argument is looked at, and take the deprecated 'elementwise_mean'
as 'mean' with a warning; those that check the name in Python refuse 'elementwise_mean'; l1, mse, smooth_l1 and
huber compare the shapes first."""

import warnings

import numpy as np
import pytest

import autograd
import nn
import nn.functional as F

MODULES = ["autograd", pytest.param("torch", marks=pytest.mark.torch)]


def _modules(name):
    if name == "autograd":
        return autograd, F, nn
    torch = pytest.importorskip("torch")
    return torch, torch.nn.functional, torch.nn


def _inputs(torch):
    generator = np.random.default_rng(0)
    x = torch.tensor(generator.uniform(0.1, 0.9, (2, 3)).astype(np.float32))
    y = torch.tensor(generator.uniform(0.1, 0.9, (2, 3)).astype(np.float32))
    return x, y, torch.tensor([0, 1]), torch.tensor([1.0, -1.0])


def _read_first(torch, F):
    """Each loss called with a bad reduction and inputs that are wrong too (a target of another shape, or a class
    out of range): PyTorch names the reduction."""
    a, b = torch.zeros(2, 3), torch.zeros(2, 4)
    out_of_range = torch.tensor([0, 9])
    return {
        "binary_cross_entropy": lambda r: F.binary_cross_entropy(a, b, reduction=r),
        "binary_cross_entropy_with_logits": lambda r: F.binary_cross_entropy_with_logits(a, b, reduction=r),
        "nll_loss": lambda r: F.nll_loss(a, out_of_range, reduction=r),
        "cross_entropy": lambda r: F.cross_entropy(a, out_of_range, reduction=r),
        "cross_entropy smoothed": lambda r: F.cross_entropy(a, out_of_range, reduction=r, label_smoothing=2.0),
        "poisson_nll_loss": lambda r: F.poisson_nll_loss(a, b, reduction=r),
        "hinge_embedding_loss": lambda r: F.hinge_embedding_loss(a, b, reduction=r),
        "margin_ranking_loss": lambda r: F.margin_ranking_loss(a, b, torch.ones(2, 3), reduction=r),
        "soft_margin_loss": lambda r: F.soft_margin_loss(a, b, reduction=r),
        "cosine_embedding_loss": lambda r: F.cosine_embedding_loss(a, b, torch.ones(2), reduction=r),
        "triplet_margin_loss": lambda r: F.triplet_margin_loss(a, a, b, reduction=r, margin=-1.0),
        "triplet_margin_with_distance_loss": lambda r: F.triplet_margin_with_distance_loss(a, a, b, reduction=r,
                                                                                           margin=-1.0),
        "ctc_loss": lambda r: F.ctc_loss(torch.zeros(2, 3, 4), torch.zeros(5), [1], [1], reduction=r),
    }


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("loss", list(_read_first(autograd, F)))
def test_a_bad_reduction_is_named_before_the_other_arguments(module, loss):
    torch, functional, _ = _modules(module)
    with pytest.raises(ValueError, match="^bogus is not a valid value for reduction$"):
        _read_first(torch, functional)[loss]("bogus")


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("loss", ["l1_loss", "mse_loss", "smooth_l1_loss", "huber_loss"])
def test_the_pointwise_losses_compare_shapes_first(module, loss):
    torch, functional, _ = _modules(module)
    shapes = ("input of shape \\(2, 3\\) and target of shape \\(2, 4\\)" if module == "autograd" else
              "size of tensor a \\(3\\) must match the size of tensor b \\(4\\)")  # (ours names both shapes)
    with pytest.raises(RuntimeError, match=shapes), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (PyTorch's warning of the broadcast)
        getattr(functional, loss)(torch.zeros(2, 3), torch.zeros(2, 4), reduction="bogus")


def _mean_readers(torch, F):
    """The losses that take 'elementwise_mean' as 'mean'."""
    x, y, labels, signs = _inputs(torch)
    return {
        "l1_loss": lambda r: F.l1_loss(x, y, reduction=r),
        "mse_loss": lambda r: F.mse_loss(x, y, reduction=r),
        "smooth_l1_loss": lambda r: F.smooth_l1_loss(x, y, reduction=r),
        "huber_loss": lambda r: F.huber_loss(x, y, reduction=r),
        "binary_cross_entropy": lambda r: F.binary_cross_entropy(x, y, reduction=r),
        "binary_cross_entropy_with_logits": lambda r: F.binary_cross_entropy_with_logits(x, y, reduction=r),
        "nll_loss": lambda r: F.nll_loss(x, labels, reduction=r),
        "cross_entropy": lambda r: F.cross_entropy(x, labels, reduction=r),
        "hinge_embedding_loss": lambda r: F.hinge_embedding_loss(x, signs[:, None] * torch.ones(2, 3), reduction=r),
        "margin_ranking_loss": lambda r: F.margin_ranking_loss(x, y, torch.ones(2, 3), reduction=r),
        "soft_margin_loss": lambda r: F.soft_margin_loss(x, signs[:, None] * torch.ones(2, 3), reduction=r),
        "multilabel_margin_loss": lambda r: F.multilabel_margin_loss(x, torch.zeros(2, 3, dtype=torch.long),
                                                                     reduction=r),
        "multi_margin_loss": lambda r: F.multi_margin_loss(x, labels, reduction=r),
        "cosine_embedding_loss": lambda r: F.cosine_embedding_loss(x, y, signs, reduction=r),
        "triplet_margin_loss": lambda r: F.triplet_margin_loss(x, y, x * 2, reduction=r),
        "ctc_loss": lambda r: F.ctc_loss(x[:, None, :].expand(2, 2, 3).log_softmax(2), torch.tensor([[1], [2]]),
                                         [2, 2], [1, 1], reduction=r),
    }


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("loss", list(_mean_readers(autograd, F)))
def test_elementwise_mean_is_read_as_mean_with_a_warning(module, loss):
    torch, functional, _ = _modules(module)
    call = _mean_readers(torch, functional)[loss]
    with pytest.warns(UserWarning, match="reduction='elementwise_mean' is deprecated"):
        deprecated = float(call("elementwise_mean"))
    assert deprecated == float(call("mean"))
    assert deprecated != float(call("sum"))  # (the mean, not another reduction)


@pytest.mark.parametrize("module", MODULES)
def test_kl_div_reads_elementwise_mean_without_the_mean_warning(module):
    torch, functional, _ = _modules(module)
    x, y, _, _ = _inputs(torch)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        deprecated = float(functional.kl_div(x.log(), y, reduction="elementwise_mean"))
    assert [str(w.message)[:40] for w in caught] == ["reduction='elementwise_mean' is deprecat"]
    expected = (y.numpy() * (np.log(y.numpy()) - np.log(x.numpy()))).mean()
    np.testing.assert_allclose(deprecated, expected, rtol=1e-6)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("loss, message", [("poisson_nll_loss", "elementwise_mean is not a valid value for reduction"),
                                           ("gaussian_nll_loss", "elementwise_mean is not valid"),
                                           ("multilabel_soft_margin_loss", "elementwise_mean is not valid"),
                                           ("triplet_margin_with_distance_loss",
                                            "elementwise_mean is not a valid value for reduction")])
def test_the_losses_checking_in_python_refuse_elementwise_mean(module, loss, message):
    torch, functional, _ = _modules(module)
    x, y, _, _ = _inputs(torch)
    arguments = {"gaussian_nll_loss": (x, y, torch.ones(2, 3)),
                 "triplet_margin_with_distance_loss": (x, y, x * 2)}.get(loss, (x, y))
    with pytest.raises(ValueError, match=f"^{message}$"):
        getattr(functional, loss)(*arguments, reduction="elementwise_mean")


@pytest.mark.parametrize("module", MODULES)
def test_a_loss_module_built_with_elementwise_mean_reads_it_at_the_call(module):
    torch, _, modules = _modules(module)
    x, y, labels, _ = _inputs(torch)
    with pytest.warns(UserWarning, match="elementwise_mean"):
        assert float(modules.MSELoss(reduction="elementwise_mean")(x, y)) == float(((x - y) ** 2).mean())
    with pytest.warns(UserWarning, match="elementwise_mean"):
        deprecated = float(modules.CrossEntropyLoss(reduction="elementwise_mean")(x, labels))
    assert deprecated == float(modules.CrossEntropyLoss()(x, labels))
    with pytest.raises(ValueError, match="elementwise_mean is not a valid value for reduction"):
        modules.PoissonNLLLoss(reduction="elementwise_mean")(x, y)


def test_get_enum_reads_the_names():
    assert [F._Reduction.get_enum(r) for r in ("none", "mean", "sum")] == [0, 1, 2]
    with pytest.warns(UserWarning, match="elementwise_mean"):
        assert F._Reduction.get_enum("elementwise_mean") == 1
    with pytest.raises(ValueError, match="^bogus is not a valid value for reduction$"):
        F._Reduction.get_enum("bogus")
