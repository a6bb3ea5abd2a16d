"""Regressions found by session 33's differential probe of losses with mixed dtypes (tests/test_probe33_diff_fixes.py
has the promotion ones): silent answers where PyTorch refuses.

- ``huber_loss`` of integer predictions and a float target cast the target to integers (0.5 became 0) and returned
  0; ``soft_margin_loss`` cast a complex target to the input's real dtype. PyTorch computes both in the input's
  dtype and refuses a target whose common dtype with it cannot be cast there.
- ``binary_cross_entropy_with_logits`` of integer (or bool) logits computed in integers (a loss of 0 for a float
  target); PyTorch's first check refuses them ("log_sigmoid_cpu" not implemented).
- ``kl_div`` of complex log-probabilities was computed; PyTorch refuses complex inputs.
"""

import numpy as np
import pytest

import autograd
import nn.functional as F

T = autograd

# (program, the error PyTorch raises, words of its message)
REFUSED = [
    ("F.huber_loss(T.tensor([0, 1]), T.tensor([0.5, 1.0]))", RuntimeError,
     "result type Float can't be cast to the desired output type Long"),
    ("F.huber_loss(T.tensor([0, 1]), T.tensor([0.5, 1.0], dtype=T.float64))", RuntimeError,
     "result type Double can't be cast to the desired output type Long"),
    ("F.huber_loss(T.tensor([0, 1], dtype=T.int32), T.tensor([0.5, 1.0], dtype=T.float16))", RuntimeError,
     "result type Half can't be cast to the desired output type Int"),
    ("F.soft_margin_loss(T.tensor([0.25, 0.75]), T.tensor([1 + 1j, -1], dtype=T.complex64))", RuntimeError,
     "result type ComplexFloat can't be cast to the desired output type Float"),
    ("F.soft_margin_loss(T.tensor([0.25, 0.75], dtype=T.float64), T.tensor([1, -1], dtype=T.complex64))",
     RuntimeError, "result type ComplexDouble can't be cast to the desired output type Double"),
    ("F.binary_cross_entropy_with_logits(T.tensor([0, 1]), T.tensor([0.5, 1.0]))", NotImplementedError,
     "\"log_sigmoid_cpu\" not implemented for 'Long'"),
    ("F.binary_cross_entropy_with_logits(T.tensor([0, 1]), T.tensor([1, 0]))", NotImplementedError,
     "\"log_sigmoid_cpu\" not implemented for 'Long'"),
    ("F.binary_cross_entropy_with_logits(T.tensor([False, True]), T.tensor([0.5, 1.0]))", NotImplementedError,
     "\"log_sigmoid_cpu\" not implemented for 'Bool'"),
    ("F.binary_cross_entropy_with_logits(T.tensor([0.25, 0.75], dtype=T.complex64), T.tensor([1, 0]))",
     NotImplementedError, "\"log_sigmoid_cpu\" not implemented for 'ComplexFloat'"),
    ("F.kl_div(T.tensor([0.25, 0.75], dtype=T.complex64), T.tensor([0.5, 1.0]), reduction='sum')", RuntimeError,
     "kl_div: Complex inputs not supported."),
    ("F.kl_div(T.tensor([0.25, 0.75]), T.tensor([0.5, 1.0], dtype=T.complex64), reduction='sum')", RuntimeError,
     "kl_div: Complex inputs not supported."),
]

# (program, the loss's dtype and value) as PyTorch 2.13 gives them: what the checks still take
TAKEN = [
    ("F.huber_loss(T.tensor([0., 1.]), T.tensor([0, 3]))", "float32", (0.0 + 1.5) / 2),
    ("F.huber_loss(T.tensor([0., 1.], dtype=T.float64), T.tensor([0.5, 1.0]))", "float64", 0.125 / 2),
    ("F.soft_margin_loss(T.tensor([0., 0.]), T.tensor([1, -1]))", "float32", np.log(2)),
    ("F.soft_margin_loss(T.tensor([0., 0.], dtype=T.float64), T.tensor([1., -1.]))", "float64", np.log(2)),
    ("F.binary_cross_entropy_with_logits(T.tensor([0., 0.]), T.tensor([0.5, 1.0]))", "float32", np.log(2)),
    ("F.kl_div(T.tensor([0., 0.]), T.tensor([1., 1.]), reduction='sum')", "float32", 0.0),
]


def run(program, torch=T, functional=F):
    return eval(program, {"T": torch, "F": functional})


@pytest.mark.parametrize("program, error, words", REFUSED, ids=[p for p, _, _ in REFUSED])
def test_refused(program, error, words):
    with pytest.raises(error) as raised:
        run(program)
    assert words in str(raised.value)


@pytest.mark.parametrize("program, dtype, value", TAKEN, ids=[p for p, _, _ in TAKEN])
def test_taken(program, dtype, value):
    loss = run(program)
    assert str(loss.dtype) == dtype
    np.testing.assert_allclose(loss.item(), value, rtol=1e-6)


@pytest.mark.parametrize("program, error, words", REFUSED, ids=[p for p, _, _ in REFUSED])
def test_pytorch_refuses_them_too(program, error, words):
    torch = pytest.importorskip("torch")
    with pytest.raises(error) as raised:
        run(program, torch, torch.nn.functional)
    assert words in str(raised.value)


@pytest.mark.parametrize("program, dtype, value", TAKEN, ids=[p for p, _, _ in TAKEN])
def test_taken_as_pytorch_takes_them(program, dtype, value):
    torch = pytest.importorskip("torch")
    theirs = run(program, torch, torch.nn.functional)
    assert str(theirs.dtype) == "torch." + dtype
    np.testing.assert_allclose(theirs.item(), value, rtol=1e-6)
