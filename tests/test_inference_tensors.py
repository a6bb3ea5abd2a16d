"""Inference tensors, as PyTorch's: what is made inside ``inference_mode`` (by an op, a factory, a
constructor, a layer) is an inference tensor, and so is any view of one; a view of a normal tensor
stays normal. Outside inference mode an inference tensor refuses to be changed in place, to require
grad, or to be saved for backward (an op that needs only its shape takes it). The programs run on
both libraries where PyTorch is installed; the expected answers are written out, so they mean
something without it."""

import pytest

from .pytorch_programs import OURS, pytorch


def _libraries():
    return [m for m in (OURS, pytorch()) if m is not None]


def test_what_inference_mode_makes_is_an_inference_tensor():
    for m in _libraries():
        torch = m.torch
        w = torch.ones(2, requires_grad=True)
        normal = torch.ones(3)
        with torch.inference_mode():
            made = {"factory": torch.ones(2), "constructor": torch.tensor([1.0, 2.0]), "op": w * 2,
                    "clone": normal.clone(), "layer": m.nn.Linear(3, 2)(normal)}
            view_of_normal = normal[:2]
            assert torch.is_inference_mode_enabled() and torch.is_grad_enabled() is False
        for name, tensor in made.items():
            assert tensor.is_inference(), (m.torch.__name__, name)
            assert not tensor.requires_grad
        assert not view_of_normal.is_inference()
        assert not normal.is_inference() and not (w * 2).is_inference()
        with torch.no_grad():
            assert not torch.ones(2).is_inference()  # no_grad makes normal tensors


def test_an_inference_tensor_refuses_in_place_writes_and_grad_outside_the_mode():
    for m in _libraries():
        torch = m.torch
        with torch.inference_mode():
            x = torch.ones(3)
            x.add_(1)  # inside the mode, writes are fine
            x[0] = 5.0
        assert x.tolist() == [5.0, 2.0, 2.0]
        for write in (lambda t: t.add_(1), lambda t: t.mul_(2), lambda t: t.zero_(), lambda t: t.__setitem__(1, 0.0),
                      lambda t: t[1:].fill_(0.0)):
            with pytest.raises(RuntimeError, match="Inplace update to inference tensor outside InferenceMode"):
                write(x)
        if m is OURS:  # refused before writing (PyTorch's kernel writes first, then raises)
            assert x.tolist() == [5.0, 2.0, 2.0]
        with pytest.raises(RuntimeError, match="requires_grad=True on inference tensor"):
            x.requires_grad_()
        with pytest.raises(RuntimeError, match="requires_grad=True on inference tensor"):
            m.nn.Parameter(x)
        assert x.detach().is_inference() and x[1:].is_inference()
        y = x.clone()  # the way out: a normal tensor with the same values
        assert not y.is_inference()
        y.add_(1)
        assert y.tolist() == [value + 1 for value in x.tolist()]


def test_an_inference_tensor_is_not_saved_for_backward():
    for m in _libraries():
        torch = m.torch
        w = torch.tensor([1.0, 2.0], requires_grad=True)
        with torch.inference_mode():
            x = torch.tensor([3.0, 4.0])
        with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
            w * x
        with pytest.raises(RuntimeError, match="Inference tensors cannot be saved for backward"):
            w @ x
        (w + x).sum().backward()  # an add saves no values: PyTorch takes it too
        assert w.grad.tolist() == [1.0, 1.0]
        w.grad = None
        (w * x.clone()).sum().backward()
        assert w.grad.tolist() == [3.0, 4.0]
        assert (x * 2).tolist() == [6.0, 8.0] and not (x * 2).is_inference()  # used without a graph: fine


def test_grad_modes_inside_inference_mode_make_inference_tensors_and_record_nothing():
    for m in _libraries():
        torch = m.torch
        w = torch.ones(2, requires_grad=True)
        with torch.inference_mode():
            with torch.no_grad():
                a = w * 2
            with torch.enable_grad():
                b = w * 2
            with torch.set_grad_enabled(True):
                c = w * 2
            with torch.inference_mode(False):
                d = w * 2
            e = w * 2
        for made in (a, b, c, e):
            assert made.is_inference() and not made.requires_grad and made.grad_fn is None
        assert not d.is_inference() and d.requires_grad and d.grad_fn is not None
        f = w * 2  # after the block: recording again
        assert f.requires_grad and not f.is_inference()


def test_an_inference_tensor_has_no_version_counter():
    for m in _libraries():
        torch = m.torch
        with torch.inference_mode():
            made = torch.ones(2)
        with pytest.raises(RuntimeError, match="Inference tensors do not track version counter"):
            _ = made._version
        assert torch.ones(2)._version == 0
