"""A view made under no_grad (or in inference_mode), as PyTorch's NO_GRAD_MODE / INFERENCE_MODE views:

- it is a view (``_base``, ``_is_view()``), whether or not its base requires grad, and ``detach_()`` refuses it;
- a write into it that grad mode records (the value written requires grad) is refused, in PyTorch's words, where
  before ours recorded it on the view alone, so the base silently lost the write's history; a write nothing records
  goes through, into the base;
- a view made from it with grad mode on is refused likewise ("... is a view of a view which was created in
  no_grad mode");
- after a recorded write into its base (or another view of it) its use in a backward pass is refused: its values
  are the base's new ones, which no gradient through it could reach (PyTorch refuses when its grad_fn is read;
  ours when a backward reaches it);
- a view of an inference tensor is an inference tensor and no view.

Each runs on ours, and on PyTorch where it is installed.
"""

import numpy as np
import pytest

MADE_IN_NO_GRAD = "A view was created in no_grad mode and is being modified inplace with grad mode enabled"
BASE_WRITTEN = ("A view was created in no_grad mode and its base or another view of its base has been modified "
                "inplace with grad mode enabled")

VIEWS = {
    "slice": lambda a: a[1:],
    "detach then slice": lambda a: a.detach()[1:],
    "reshape": lambda a: a.view(3),
    "diagonal of an outer": lambda a: a.unsqueeze(0).expand(3, 3).diagonal(),
}


@pytest.mark.parametrize("make", VIEWS.values(), ids=VIEWS.keys())
@pytest.mark.parametrize("base_requires_grad", [False, True])
def test_it_is_a_view_of_its_base(T, make, base_requires_grad):
    x = T.tensor([1.0, 2.0, 3.0], requires_grad=base_requires_grad)
    with T.no_grad():
        v = make(x)
    through_base = base_requires_grad and make is not VIEWS["detach then slice"]
    assert v._is_view() and v.requires_grad == through_base and v.grad_fn is None
    with pytest.raises(RuntimeError, match="Can't detach views in-place"):
        v.detach_()


@pytest.mark.parametrize("make", [VIEWS["slice"], VIEWS["detach then slice"]], ids=["slice", "detach then slice"])
def test_a_recorded_write_into_it_is_refused(T, make):
    x = T.zeros(3)
    with T.no_grad():
        v = make(x)
    w = T.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match=MADE_IN_NO_GRAD):
        v.add_(w)
    with pytest.raises(RuntimeError, match=MADE_IN_NO_GRAD):
        v.copy_(w)
    assert x.tolist() == [0.0, 0.0, 0.0] and not x.requires_grad  # (refused before anything was written)


def test_a_write_nothing_records_goes_through_into_the_base(T):
    x = T.zeros(3)
    with T.no_grad():
        v = x[1:]
    v.add_(1.0)
    v[0] = 5.0
    assert x.tolist() == [0.0, 5.0, 1.0] and v._version == x._version == 2 and not v.requires_grad


def test_a_view_of_it_made_with_grad_mode_on_is_refused_too(T):
    x = T.zeros(3)
    with T.no_grad():
        v = x[1:]
    u = v[0:]
    with pytest.raises(RuntimeError, match=MADE_IN_NO_GRAD):
        u.add_(T.ones(2, requires_grad=True))
    leaf = T.ones(3, requires_grad=True)
    with T.no_grad():
        s = leaf[1:]
    with pytest.raises(RuntimeError, match="Output 0 of Select is a view of a view which was created in no_grad mode "
                                           "and is being modified inplace with grad mode enabled"):
        s[0] = 2.0


def test_the_inference_mode_form(T):
    x = T.zeros(3)
    with T.inference_mode():
        v = x[1:]
    assert not T.is_inference(v) and v._is_view()
    with pytest.raises(RuntimeError, match="A view was created in inference mode and is being modified inplace in "
                                           "normal mode"):
        v.add_(T.ones(2, requires_grad=True))
    v.add_(1.0)  # (nothing recorded: allowed)
    assert x.tolist() == [0.0, 1.0, 1.0]


@pytest.mark.parametrize("write", ["base", "sibling view"])
def test_after_a_recorded_write_into_its_base_a_backward_through_it_is_refused(T, write):
    x = T.zeros(3)
    with T.no_grad():
        v = x[1:]
    w = T.ones(3, requires_grad=True)
    if write == "base":
        x.add_(w)
    else:
        x[:2].add_(w[:2])
    assert x.requires_grad and x.grad_fn is not None
    with pytest.raises(RuntimeError, match=BASE_WRITTEN):
        (v.grad_fn, (v * 2).sum().backward())  # (PyTorch refuses at grad_fn; ours at the backward)
    assert w.grad is None


def test_after_a_write_nothing_records_it_is_an_ordinary_view(T):
    x = T.zeros(3)
    with T.no_grad():
        v = x[1:]
    x.add_(1.0)
    w = T.ones(2, requires_grad=True)
    (v * w).sum().backward()
    np.testing.assert_array_equal(w.grad.numpy(), [1.0, 1.0])


def test_the_base_may_change_its_shape_in_place(T):
    x = T.zeros(3)
    with T.no_grad():
        v = x[1:]
    x.unsqueeze_(0)
    assert tuple(x.shape) == (1, 3) and tuple(v.shape) == (2,)
    x.add_(T.ones(1, 3, requires_grad=True))
    with pytest.raises(RuntimeError, match=BASE_WRITTEN):
        (v.grad_fn, v.sum().backward())


@pytest.mark.parametrize("requires_grad", [False, True])
def test_a_view_of_an_inference_tensor_is_an_inference_tensor_and_no_view(T, requires_grad):
    with T.inference_mode():
        c = T.ones(2, 3)
        inside = c.view(-1)
    out = c.view(-1)
    for view in (inside, out):
        assert T.is_inference(view) and not view._is_view() and view.is_leaf
