"""The regressions that the programs of PyTorch's official tutorials (tests/test_programs_probe9_tutorials_*.py)
found, each on chainrule and PyTorch: ``cat``/``stack`` with NumPy's ``axis=``; layers and contractions that PyTorch
keeps to one dtype (prelu, binary_cross_entropy's target, instance_norm's affine parameters, einsum, cdist,
linalg.cross, inner, tensordot, the recurrent cells and the layers' given states, EmbeddingBag's per_sample_weights,
multi_margin_loss's weight), and binary_cross_entropy_with_logits taking the target's dtype; and, as strict expected
failures, gaps outside this task's files."""

import math

import numpy as np
import pytest

from .pytorch_programs import OURS

# ----------------------------------------------------------------------------------------------
# Regressions found by the programs above
# ----------------------------------------------------------------------------------------------


def test_cat_and_stack_take_numpy_axis(T):
    """The DDIM tutorial's U-Net joins its skips by torch.cat([h, hs.pop()], axis=1): PyTorch takes
    NumPy's axis for cat's and stack's dim, as for the reductions'."""
    a = T.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    b = T.tensor([[5.0], [6.0]])
    joined = T.cat([a, b], axis=1)
    assert joined.tolist() == [[1.0, 2.0, 5.0], [3.0, 4.0, 6.0]]
    stacked = T.stack((a, a * 2), axis=-1)
    assert tuple(stacked.shape) == (2, 2, 2) and stacked[1, 0].tolist() == [3.0, 6.0]
    (joined.sum() + stacked.sum()).backward()
    assert a.grad.tolist() == [[4.0, 4.0], [4.0, 4.0]]
    assert T.cat((b, b), axis=0).shape == T.cat((b, b), 0).shape


def test_ops_loaded_on_first_use_take_numpy_axis():
    import autograd
    y = autograd.tensor([[0.0, 1.0, 4.0], [1.0, 1.0, 1.0]])
    assert autograd.trapezoid(y, axis=1).tolist() == [3.0, 2.0]


def test_prelu_refuses_to_promote_and_integers(T):
    """The per-sample-gradients tutorial feeds a float64 sample to a float32 model, which PyTorch refuses
    in every layer; PReLU alone computed a float64 result here. PyTorch's prelu neither promotes nor has
    an integer kernel."""
    x = T.tensor([[-2.0, 3.0]], dtype=T.float64)
    with pytest.raises(RuntimeError, match="prelu: Type promoting not supported. Got Double and Float"):
        T.prelu(x, T.tensor([0.25]))
    with pytest.raises(RuntimeError, match="prelu: Type promoting not supported. Got Float and Double"):
        T.prelu(x.float(), T.tensor([0.25], dtype=T.float64))
    with pytest.raises(NotImplementedError, match="\"prelu_cpu\" not implemented for 'Long'"):
        T.prelu(T.tensor([[-2, 3]]), T.tensor([1]))
    assert T.prelu(x, T.tensor([0.25], dtype=T.float64)).tolist() == [[-0.5, 3.0]]


def test_binary_cross_entropy_and_instance_norm_refuse_mixed_dtypes(T):
    """A float64 batch into float32 parameters is refused by PyTorch's layers; binary_cross_entropy cast
    its target (an integer or float64 one) and instance_norm its affine parameters, and computed."""
    F = T.nn.functional if T.__name__ == "torch" else OURS.F
    probs = T.tensor([[0.25, 0.5]], dtype=T.float64)
    with pytest.raises(RuntimeError, match="Found dtype Float but expected Double"):
        F.binary_cross_entropy(probs, T.tensor([[0.0, 1.0]]))
    with pytest.raises(RuntimeError, match="Found dtype Long but expected Float"):
        F.binary_cross_entropy(probs.float(), T.tensor([[0, 1]]))
    loss = F.binary_cross_entropy(probs, T.tensor([[0.0, 1.0]], dtype=T.float64))
    assert loss.dtype == T.float64 and loss.item() == pytest.approx(-(math.log(0.75) + math.log(0.5)) / 2)
    weighted = F.binary_cross_entropy(probs, T.tensor([[0.0, 1.0]], dtype=T.float64), weight=T.tensor([1.0, 2.0]))
    assert weighted.dtype == T.float64  # (a weight of another dtype is taken, and promotes)
    assert weighted.item() == pytest.approx(-(math.log(0.75) + 2 * math.log(0.5)) / 2)
    x = T.tensor(np.arange(12.0).reshape(1, 2, 6))
    with pytest.raises(RuntimeError):
        F.instance_norm(x, weight=T.ones(2), bias=T.zeros(2))
    # running statistics of another dtype are taken (and stay in their dtype), as PyTorch's
    running_mean = T.zeros(2)
    y = F.instance_norm(x, running_mean, T.ones(2), weight=T.ones(2, dtype=T.float64), momentum=0.5)
    assert y.dtype == T.float64 and running_mean.dtype == T.float32
    assert running_mean.tolist() == [1.25, 4.25]


def test_binary_cross_entropy_with_logits_has_the_targets_dtype(T):
    """PyTorch builds the loss from the target ((1 - target).mul_(input)...): a float64 input with a float32
    target gives a float32 loss (and float64 gradients), and an integer or bool target is refused. Here the
    loss took the promoted dtype and any target was cast."""
    F = T.nn.functional if T.__name__ == "torch" else OURS.F
    x = T.tensor([[0.5, -1.0]], dtype=T.float64, requires_grad=True)
    y = T.tensor([[1.0, 0.0]])
    loss = F.binary_cross_entropy_with_logits(x, y, pos_weight=T.tensor([2.0, 3.0], dtype=T.float64))
    assert loss.dtype == T.float32
    expected = (2 * math.log1p(math.exp(-0.5)) + math.log1p(math.exp(-1.0))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert x.grad.dtype == T.float64
    assert F.binary_cross_entropy_with_logits(x.float(), y.double(), reduction="none").dtype == T.float64
    with pytest.raises(RuntimeError, match="result type Double can't be cast to the desired output type Long"):
        F.binary_cross_entropy_with_logits(x, T.tensor([[1, 0]]))
    with pytest.raises(RuntimeError, match="with two bool tensors is not supported"):
        F.binary_cross_entropy_with_logits(x, T.tensor([[True, False]]))


def test_contractions_refuse_mixed_dtypes(T):
    """einsum, cdist, linalg.cross, inner and tensordot promote nothing in PyTorch (a float64 sample meeting
    float32 weights is refused there); here they promoted and computed."""
    d, f = T.ones(2, 3, dtype=T.float64), T.ones(2, 3)
    with pytest.raises(RuntimeError, match="expected scalar type Float but found Double"):
        T.einsum("ij,ij->", f, d)
    with pytest.raises(RuntimeError, match="expected scalar type Long but found Float"):
        T.einsum("ij,ij->", T.ones(2, 3, dtype=T.int64), f)
    with pytest.raises(RuntimeError, match="expected scalar type Double but found Float"):
        T.cdist(d, f)
    with pytest.raises(RuntimeError, match="expected scalar type Float but found Double"):
        T.linalg.cross(T.ones(3), T.ones(3, dtype=T.float64))
    for call in (lambda: T.inner(f, d), lambda: T.tensordot(f, d.T, 1)):
        with pytest.raises(RuntimeError, match="both inputs should have same dtype"):
            call()
    assert T.inner(T.ones(3), T.tensor(2.0, dtype=T.float64)).dtype == T.float32  # a 0-d operand: a product
    assert T.einsum("ij,ij->", d, d).item() == 6.0 and T.cdist(f, f).dtype == T.float32


def test_retain_grad_on_a_tensor_without_grad_words_the_error_as_pytorch():
    x = OURS.torch.ones(1, 3)
    with pytest.raises(RuntimeError) as error:
        x.retain_grad()
    assert str(error.value) == "can't retain_grad on Tensor that has requires_grad=False"


def test_recurrent_cells_embedding_bag_and_multi_margin_refuse_mixed_dtypes(T):
    """RNN/LSTM/GRU cells and layers' states, EmbeddingBag's per_sample_weights and multi_margin_loss's
    weight must have the dtype of the weights / input in PyTorch; here they were promoted."""
    nn, F = (T.nn, T.nn.functional) if T.__name__ == "torch" else (OURS.nn, OURS.F)
    d = T.ones(1, 3, dtype=T.float64)
    for cell in (nn.RNNCell(3, 2), nn.GRUCell(3, 2), nn.LSTMCell(3, 2)):
        with pytest.raises(RuntimeError, match="mat1 and mat2 must have the same dtype, but got Double and Float"):
            cell(d)
    with pytest.raises(RuntimeError, match="mat1 and mat2 must have the same dtype, but got Double and Float"):
        nn.RNNCell(3, 2)(T.ones(1, 3), T.ones(1, 2, dtype=T.float64))
    with pytest.raises(RuntimeError, match="mat1 and mat2 must have the same dtype, but got Float and Double"):
        nn.LSTM(3, 2).double()(T.ones(2, 1, 3, dtype=T.float64), (T.zeros(1, 1, 2), T.zeros(1, 1, 2)))
    assert nn.GRUCell(3, 2).double()(d).dtype == T.float64
    bag = nn.EmbeddingBag(3, 2, mode="sum")
    with pytest.raises(RuntimeError, match="to have the same type as tensor for argument #1 'per_sample_weights'"):
        bag(T.tensor([[0, 1]]), per_sample_weights=T.ones(1, 2, dtype=T.float64))
    with pytest.raises(RuntimeError, match="expected scalar type Double but found Float"):
        F.multi_margin_loss(T.ones(2, 3, dtype=T.float64), T.tensor([0, 1]), weight=T.ones(3))


def test_bilinear_interpolation_of_uint8_images():
    x = OURS.torch.tensor([[[[0, 255], [100, 3]]]], dtype=OURS.torch.uint8)
    y = OURS.F.interpolate(x, scale_factor=2, mode="bilinear")
    assert y.dtype == OURS.torch.uint8
    assert y.flatten().tolist()[:8] == [0, 64, 191, 255, 25, 67, 150, 192]  # PyTorch 2.13's values


def test_backends_tf32_switches_of_training_scripts():
    torch = OURS.torch
    assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is True
    torch.backends.cuda.matmul.allow_tf32 = True  # nanoGPT's train.py, the PyTorch performance tuning guide
    torch.backends.cudnn.allow_tf32 = True
