"""Regressions found by session 34's differential probe of nn layers and nn.functional (about 7,000 small
programs run on PyTorch 2.13 and on chainrule: convolutions, pooling, resampling, normalization, embeddings,
attention and activations, comparing values, the gradients of inputs and parameters, shapes, dtypes and errors).

- ``F.prelu`` of a 1-D input with one slope per element computed them elementwise; PyTorch reads an input of
  fewer than 2 dims as having one channel and refuses more slopes ("Mismatch of parameter numbers and input
  channel size"), and refuses a 0-d input with several slopes and a weight of 2 or more dims in its own words.
- ``F.embedding_bag`` with offsets that step back cut the input into overlapping bags and gave a mean's
  gradient a negative count; PyTorch's float32 kernels refuse them (its other kernels read past the bags), and
  chainrule now refuses them for every dtype and mode, naming the offsets.
- ``F.glu`` with a dim out of range raised IndexError "tuple index out of range"; it is PyTorch's
  "Dimension out of range" now. The integer refusals of leaky_relu, hardshrink, softshrink, hardsigmoid and
  hardswish named the dtype as NumPy does ('int64'); PyTorch's name ('Long') now.
- ``F.scaled_dot_product_attention`` took ``scale`` and ``enable_gqa`` by position; PyTorch's are keyword-only.
- ``F.batch_norm`` in training given one running statistic and not the other moved that one alone (or failed
  with AttributeError on ``None.mul_``), and ``F.instance_norm`` ignored it; PyTorch refuses both with
  ValueError "running_mean and running_var must either both be None or neither be None".
"""

import numpy as np
import pytest

import autograd
import nn.functional as F

T = autograd


def run(program, torch=T, functional=F):
    """The value of ``program`` with T and F bound to this library's (or PyTorch's) modules."""
    scope = {"T": torch, "F": functional, "np": np}
    exec(program, scope)
    return scope["r"]


# (program, the error PyTorch raises, words of its message, words of chainrule's message)
REFUSED = [
    ("r = F.prelu(T.tensor([1., -2., 3.]), T.tensor([.1, .2, .3]))", RuntimeError,
     "Found parameter numbers = 3 and channel size = 1.", None),
    ("r = F.prelu(T.tensor([1., -2.]), T.tensor([.1, .2]))", RuntimeError,
     "Found parameter numbers = 2 and channel size = 1.", None),
    ("r = F.prelu(T.tensor(-2.), T.tensor([.1, .2, .3]))", RuntimeError, "Not allow zero-dim input tensor.", None),
    ("r = F.prelu(T.ones(4, 3), T.full((1, 3), .1))", RuntimeError,
     "prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = 2", None),
    ("r = F.prelu(T.ones(4, 3), T.full((1, 1), .1))", RuntimeError,
     "prelu: Expected `weight` to be a scalar or 1D tensor, but got: ndim = 2", None),
    ("r = F.prelu(T.ones(4, 3), T.full((2, 2), .1))", RuntimeError,
     "Found parameter numbers = 4 and channel size = 3.", None),
    ("r = F.embedding_bag(T.tensor([1, 2, 0]), T.ones(10, 3, dtype=T.float32), T.tensor([0, 2, 1]))",
     RuntimeError, "Expected i < index_size",
     "offsets has to be non-decreasing, but got offsets[2] = 1 after offsets[1] = 2"),
    ("r = F.embedding_bag(T.tensor([1, 2, 0, 4]), T.ones(10, 3, dtype=T.float32), T.tensor([0, 3, 1]), "
     "mode='sum')", RuntimeError, "Expected i < index_size", "offsets[2] = 1 after offsets[1] = 3"),
    ("r = F.embedding_bag(T.tensor([1, 2, 0, 4]), T.ones(10, 3, dtype=T.float32), T.tensor([0, 1, 0]), "
     "mode='mean')", RuntimeError, "Expected i < index_size", "offsets[2] = 0 after offsets[1] = 1"),
    ("r = F.glu(T.ones(2, 4), 2)", IndexError, "Dimension out of range (expected to be in range of [-2, 1], but got 2)",
     None),
    ("r = F.glu(T.ones(2, 4), -3)", IndexError,
     "Dimension out of range (expected to be in range of [-2, 1], but got -3)", None),
    ("r = F.leaky_relu(T.tensor([1, -2]))", NotImplementedError, "\"leaky_relu_cpu\" not implemented for 'Long'", None),
    ("r = F.hardsigmoid(T.tensor([1, -2], dtype=T.int32))", NotImplementedError,
     "\"hardsigmoid_cpu\" not implemented for 'Int'", None),
    ("r = F.hardswish(T.tensor([1, -2], dtype=T.int16))", NotImplementedError,
     "\"hardswish_cpu\" not implemented for 'Short'", None),
    ("r = F.hardshrink(T.tensor([True, False]))", NotImplementedError, "\"hardshrink_cpu\" not implemented for 'Bool'",
     None),
    ("r = F.scaled_dot_product_attention(T.ones(2, 3, 4), T.ones(2, 5, 4), T.ones(2, 5, 4), None, 0.0, False, 0.5)",
     TypeError, "positional argument", None),
    ("r = F.batch_norm(T.ones(2, 3, 4), T.zeros(3), None, training=True)", ValueError,
     "running_mean and running_var must either both be None or neither be None", None),
    ("r = F.batch_norm(T.ones(2, 3, 4), None, T.ones(3), training=True)", ValueError,
     "running_mean and running_var must either both be None or neither be None", None),
    ("r = F.batch_norm(T.ones(2, 3, 4), T.zeros(3), None, training=False)", RuntimeError,
     "running_var must be defined in evaluation mode", None),
    ("r = F.instance_norm(T.ones(2, 3, 4), T.zeros(3), None)", ValueError,
     "running_mean and running_var must either both be None or neither be None", None),
    ("r = F.instance_norm(T.ones(2, 3, 4), None, T.ones(3))", ValueError,
     "running_mean and running_var must either both be None or neither be None", None),
    ("r = F.instance_norm(T.ones(2, 3, 4), None, T.ones(3), use_input_stats=False)", RuntimeError,
     "Expected running_mean and running_var to be defined when use_input_stats is false", None),
    ("r = T.native_batch_norm(T.ones(2, 3, 4), None, None, T.zeros(3), None, True, 0.1, 1e-5)", ValueError,
     "running_mean and running_var must either both be None or neither be None", None),
]

# (program, what PyTorch 2.13 gives)
TAKEN = [
    ("r = F.prelu(T.tensor([1., -2., 3.]), T.tensor([.5]))", [1.0, -1.0, 3.0]),
    ("r = F.prelu(T.tensor(-2.), T.tensor([.5]))", -1.0),
    ("r = F.prelu(T.tensor([[1., -2.], [-4., 3.]]), T.tensor([.5, .25]))", [[1.0, -0.5], [-2.0, 3.0]]),
    ("r = F.embedding_bag(T.tensor([1, 2, 0, 4]), T.arange(30.).reshape(10, 3), T.tensor([0, 2, 2]), mode='sum')",
     [[9.0, 11.0, 13.0], [0.0, 0.0, 0.0], [12.0, 14.0, 16.0]]),
    ("r = F.glu(T.tensor([[0., 0.], [2., 4.]]), -2)", [[0.0, 0.0]]),
    ("r = F.scaled_dot_product_attention(T.ones(1, 1, 2), T.ones(1, 3, 2), T.arange(3.).reshape(1, 3, 1), "
     "scale=0.5, enable_gqa=False)", [[[1.0]]]),
    ("r = F.batch_norm(T.tensor([[1., 2.], [3., 6.]]), None, None, training=True, eps=1e-12)",
     [[-1.0, -1.0], [1.0, 1.0]]),
]


def _check_refusal(raised, words):
    assert words in str(raised.value), str(raised.value)


@pytest.mark.parametrize("program, error, theirs, ours", REFUSED, ids=[p for p, _, _, _ in REFUSED])
def test_refused(program, error, theirs, ours):
    with pytest.raises(error) as raised:
        run(program)
    _check_refusal(raised, ours or theirs)


@pytest.mark.parametrize("program, error, theirs, ours", REFUSED, ids=[p for p, _, _, _ in REFUSED])
def test_pytorch_refuses_them_too(program, error, theirs, ours):
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    if "embedding_bag" in program:  # (PyTorch's check of the offsets runs in its parallel loop: on one thread,
        torch.set_num_threads(2)  # as an earlier test may leave it, its kernel reads past the bags instead)
    try:
        with pytest.raises(error) as raised:
            run(program, torch, torch.nn.functional)
    finally:
        torch.set_num_threads(threads)
    _check_refusal(raised, theirs)


@pytest.mark.parametrize("program, value", TAKEN, ids=[p for p, _ in TAKEN])
def test_taken(program, value):
    np.testing.assert_allclose(run(program).numpy(), value, rtol=1e-6)


@pytest.mark.parametrize("program, value", TAKEN, ids=[p for p, _ in TAKEN])
def test_taken_as_pytorch_takes_them(program, value):
    torch = pytest.importorskip("torch")
    np.testing.assert_allclose(run(program, torch, torch.nn.functional).numpy(), value, rtol=1e-6)


def test_prelu_of_a_1d_input_has_one_slope_and_its_gradient():
    """One slope over a 1-D input: dL/da = Σ_{x<0} x, as PyTorch's."""
    x = T.tensor([1.0, -2.0, -3.0], requires_grad=True)
    a = T.tensor([0.25], requires_grad=True)
    F.prelu(x, a).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [1.0, 0.25, 0.25])
    np.testing.assert_allclose(a.grad.numpy(), [-5.0])


def test_batch_norm_moves_both_running_statistics():
    """Given both, training moves both (the unbiased variance), as PyTorch's."""
    mean, var = T.zeros(2), T.ones(2)
    F.batch_norm(T.tensor([[1.0, 2.0], [3.0, 6.0]]), mean, var, training=True, momentum=0.5)
    np.testing.assert_allclose(mean.numpy(), [1.0, 2.0])
    np.testing.assert_allclose(var.numpy(), [1.5, 4.5])
