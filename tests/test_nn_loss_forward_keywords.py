"""Loss modules take their inputs by PyTorch's names: ``criterion(logits, target=y)``,
``nn.CosineEmbeddingLoss()(a, b, target=ones)``, ``nn.TripletMarginLoss()(anchor=a, positive=p,
negative=n)`` bind as they do in PyTorch, and a wrong name is a TypeError."""

import inspect

import numpy as np
import pytest

import autograd
import nn

FORWARD_NAMES = {
    "MSELoss": ["input", "target"], "CrossEntropyLoss": ["input", "target"], "NLLLoss": ["input", "target"],
    "BCEWithLogitsLoss": ["input", "target"], "KLDivLoss": ["input", "target"], "HuberLoss": ["input", "target"],
    "PoissonNLLLoss": ["log_input", "target"], "GaussianNLLLoss": ["input", "target", "var"],
    "CosineEmbeddingLoss": ["input1", "input2", "target"], "MarginRankingLoss": ["input1", "input2", "target"],
    "TripletMarginLoss": ["anchor", "positive", "negative"],
    "TripletMarginWithDistanceLoss": ["anchor", "positive", "negative"],
    "CTCLoss": ["log_probs", "targets", "input_lengths", "target_lengths"],
}


@pytest.mark.parametrize("name", FORWARD_NAMES)
def test_forward_names_are_pytorchs(name):
    assert list(inspect.signature(getattr(nn, name).forward).parameters)[1:] == FORWARD_NAMES[name]
    torch = pytest.importorskip("torch")
    assert list(inspect.signature(getattr(torch.nn, name).forward).parameters)[1:] == FORWARD_NAMES[name]


def test_every_pytorch_loss_module_has_its_forward_names():
    torch = pytest.importorskip("torch")
    for name in dir(torch.nn):
        theirs = getattr(torch.nn, name)
        if isinstance(theirs, type) and issubclass(theirs, torch.nn.modules.loss._Loss) and hasattr(nn, name):
            assert (list(inspect.signature(getattr(nn, name).forward).parameters)
                    == list(inspect.signature(theirs.forward).parameters)), name


def test_keyword_calls_equal_positional_calls():
    rng = np.random.default_rng(0)
    a, b, c = (autograd.tensor(rng.standard_normal((4, 3))) for _ in range(3))
    y = autograd.tensor([0, 2, 1, 1])
    ones = autograd.ones(4, dtype=autograd.float64)
    assert nn.CrossEntropyLoss()(a, target=y).item() == nn.CrossEntropyLoss()(a, y).item()
    assert nn.MSELoss()(input=a, target=b).item() == nn.MSELoss()(a, b).item()
    assert nn.CosineEmbeddingLoss()(a, b, target=ones).item() == nn.CosineEmbeddingLoss()(a, b, ones).item()
    assert (nn.TripletMarginLoss()(anchor=a, positive=b, negative=c).item()
            == nn.TripletMarginLoss()(a, b, c).item())
    var = autograd.ones(4, 3, dtype=autograd.float64)
    assert nn.GaussianNLLLoss()(a, b, var=var).item() == nn.GaussianNLLLoss()(a, b, var).item()
    assert nn.PoissonNLLLoss()(log_input=a, target=b.abs()).item() == nn.PoissonNLLLoss()(a, b.abs()).item()


def test_a_wrong_keyword_or_a_missing_input_is_a_type_error():
    a = autograd.zeros(2, 3)
    with pytest.raises(TypeError, match="target"):
        nn.MSELoss()(a)
    with pytest.raises(TypeError, match="labels"):
        nn.MSELoss()(a, labels=a)
    with pytest.raises(TypeError):
        nn.TripletMarginLoss()(a, a)
