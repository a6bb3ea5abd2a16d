"""PyTorch's TORCH_WARN_ONCE warnings: said once a process, and every time while ``set_warn_always(True)``.
Each one goes through ``autograd.warn_once``, the owner of that rule: ``x.T`` of other than 2 dims, scatter's
``reduce=`` with a tensor src, ``float()`` of a tensor that requires grad, and ``backward(create_graph=True)``."""

import importlib
import warnings

import pytest

import autograd
import autograd.warn_once as once

SITES = {
    "x.T": (lambda T: T.ones(2, 3, 4).T, "The use of `x.T` on tensors of dimension other than 2"),
    "scatter reduce": (lambda T: T.ones(2, 3).scatter(1, T.tensor([[0, 0, 1], [2, 2, 2]]), T.ones(2, 3), reduce="add"),
                       "The reduce argument of torch.scatter with Tensor src is deprecated"),
    "float()": (lambda T: float(T.ones((), requires_grad=True)),
                "Converting a tensor with requires_grad=True to a scalar may lead to unexpected behavior"),
    "backward(create_graph=True)": (lambda T: (T.ones(2, requires_grad=True) ** 2).sum().backward(create_graph=True),
                                    "Using backward() with create_graph=True will create a reference cycle"),
    "frombuffer(bytes)": (lambda T: T.frombuffer(b"\0\0\0\0", dtype=T.float32),
                          "The given buffer is not writable, and PyTorch does not support non-writable tensors"),
}


def _said(call, T):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        call(T)
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("site", SITES)
def test_said_once_a_process(site, monkeypatch):
    monkeypatch.setattr(once, "_warned_once", set())
    call, words = SITES[site]
    first = _said(call, autograd)
    assert len(first) == 1 and words in first[0]
    assert _said(call, autograd) == []  # once only
    assert _said(call, autograd) == []


@pytest.mark.parametrize("module", ["autograd", "torch"])
@pytest.mark.parametrize("site", SITES)
def test_said_every_time_under_set_warn_always(site, module):
    T = importlib.import_module(module) if module == "autograd" else pytest.importorskip("torch")
    call, words = SITES[site]
    before = T.is_warn_always_enabled()
    T.set_warn_always(True)
    try:
        for _ in range(3):
            said = _said(call, T)
            assert len(said) == 1 and words in said[0]
    finally:
        T.set_warn_always(before)


@pytest.mark.parametrize("site", SITES)
def test_said_under_set_warn_always_is_not_yet_said_once(site, monkeypatch):
    # c10's TORCH_WARN_ONCE marks a site said only when it says it with set_warn_always off: a warning given
    # while it is on still comes once after (torch: 1, 1 under it, then 1, then 0)
    monkeypatch.setattr(once, "_warned_once", set())
    call, words = SITES[site]
    autograd.set_warn_always(True)
    try:
        assert len(_said(call, autograd)) == 1
    finally:
        autograd.set_warn_always(False)
    after = _said(call, autograd)
    assert len(after) == 1 and words in after[0]
    assert _said(call, autograd) == []


def test_not_said_without_the_condition(monkeypatch):
    monkeypatch.setattr(once, "_warned_once", set())
    assert _said(lambda T: T.ones(2, 3).T, autograd) == []  # two dims
    assert _said(lambda T: T.ones(2, 3).scatter(1, T.tensor([[0], [1]]), 2.0, reduce="add"), autograd) == []
    with autograd.no_grad():
        assert _said(lambda T: float(T.ones((), requires_grad=True)), autograd) == []
    assert _said(lambda T: float(T.ones(())), autograd) == []
