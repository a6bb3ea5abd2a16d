"""Fixes found by the mixed-dtype programs (tests/test_programs_probe28_mixed.py): float16 cross-entropy's
numbers, and PyTorch's words for products, linear layers, nll_loss, addcdiv and masked_scatter across dtypes."""

import numpy as np
import pytest

import autograd
import nn.functional as F

from .pytorch_programs import error_of, pytorch


def _half_cross_entropy(m, x, y, **kwargs):
    torch, functional = m.torch, m.F
    logits = torch.tensor(x, requires_grad=True)
    if "weight" in kwargs:
        kwargs["weight"] = torch.tensor(np.array(kwargs["weight"], np.float16))
    loss = functional.cross_entropy(logits, torch.tensor(y), **kwargs)
    loss.backward(torch.ones(loss.shape, dtype=torch.float16) * 0.75)
    return loss.detach().numpy(), logits.grad.numpy()


HALF_CASES = [  # (logits, labels, keywords, PyTorch's loss)
    ([[-0.5674, 0.0107, -0.2052], [-1.251, 0.605, -0.4309]], [0, 2], {}, 1.443359375),
    ([[-3.84, -2.14, 1.863, -6.75], [1.159, -1.745, 0.328, -0.227], [0.6064, 2.082, -2.275, 4.26],
      [2.178, 2.531, 3.494, 2.363]], [0, 2, 3, 1], {"reduction": "sum"}, None),
    ([[1.0, 2.0, 0.5], [0.1, -1.0, 3.0], [2.0, 2.0, 2.0]], [2, -100, 0], {"weight": [0.4504, 0.7964, 0.2306]}, None),
    ([[1.0, 2.0, 0.5]], [-100], {}, None),  # nothing kept: NaN, gradient 0
]


@pytest.mark.parametrize("x, y, kwargs, loss", HALF_CASES)
def test_half_cross_entropy_is_pytorchs(x, y, kwargs, loss):
    x = np.array(x, np.float16)
    ours_loss, ours_grad = _half_cross_entropy(autograd_modules(), x, np.array(y), **kwargs)
    assert ours_loss.dtype == np.float16 and ours_grad.dtype == np.float16
    # invariants without PyTorch: the loss within a float16 unit of float64's; gradient rows sum to ~0
    logp = x.astype(np.float64) - np.log(np.exp(x.astype(np.float64)).sum(1, keepdims=True))
    kept = np.array(y) != -100
    if kept.any() and "weight" not in kwargs:
        exact = -logp[kept.nonzero()[0], np.array(y)[kept]].sum() / (kept.sum() if "reduction" not in kwargs else 1)
        assert abs(float(ours_loss) - exact) <= 4e-3 * max(1, abs(exact))
        np.testing.assert_allclose(ours_grad.astype(np.float64).sum(1), 0, atol=3e-3)
    if not kept.any():
        assert np.isnan(ours_loss) and not ours_grad.any()
    if loss is not None:
        assert float(ours_loss) == loss
    torch_modules = pytorch()
    if torch_modules is not None:
        theirs_loss, theirs_grad = _half_cross_entropy(torch_modules, x, np.array(y), **kwargs)
        np.testing.assert_array_equal(ours_loss, theirs_loss)
        np.testing.assert_allclose(ours_grad.astype(np.float32), theirs_grad.astype(np.float32), rtol=2e-3,
                                   atol=1e-6)


def autograd_modules():
    from .pytorch_programs import OURS

    return OURS


def test_half_cross_entropy_sums_in_float16_as_pytorchs_kernel():
    """nll_loss's float16 sum: row 0's term passes up to the last partial sum, rows 1-16 add into the first (row
    16's sum then passes up a level), rows 17-19 into the first again; the partial sums are then added in order."""
    x = np.tile(np.array([[0.0, 1.0, -1.0, 0.3]], np.float16), (20, 1))
    y = np.zeros(20, np.int64)
    logits = autograd.tensor(x)
    total = F.cross_entropy(logits, autograd.tensor(y), reduction="sum").numpy()
    term = F.cross_entropy(logits[:1], autograd.tensor(y[:1]), reduction="sum").numpy()
    first = second = np.float16(0)
    for _ in range(16):
        first = np.float16(first + term)
    second, first = first, np.float16(0)
    for _ in range(3):
        first = np.float16(first + term)
    by_hand = np.float16(np.float16(np.float16(first + second)) + term)
    assert total == by_hand and total != np.float16(20 * np.float32(term))  # (not one rounding of a wide sum)
    torch_modules = pytorch()
    if torch_modules is not None:
        torch = torch_modules.torch
        theirs = torch_modules.F.cross_entropy(torch.tensor(x), torch.tensor(y), reduction="sum")
        assert total == theirs.numpy()


@pytest.mark.parametrize("shapes, words", [
    (((2, 2), (2, 2)), "expected m1 and m2 to have the same dtype, but got: float != double"),
    (((3, 2, 2), (2, 2)), "expected m1 and m2 to have the same dtype, but got: float != double"),
    (((3, 2, 2), (3, 2, 2)), "expected scalar type Float but found Double"),
    (((2,), (2,)), "dot : expected both vectors to have same dtype, but found Float and Double"),
    (((2, 2), (2,)), "addmv input tensors must have the same dtype, but got Double, Float, and Double"),
])
def test_matmul_of_two_dtypes_says_pytorchs_words(shapes, words):
    def product(torch):
        return torch.ones(*shapes[0]) @ torch.ones(*shapes[1], dtype=torch.float64)

    ours = error_of(lambda: product(autograd))
    assert ours[0] == "RuntimeError" and ours[1].startswith(words + " (matmul of float32 and float64")
    torch_modules = pytorch()
    if torch_modules is not None:
        assert error_of(lambda: product(torch_modules.torch))[1] == words


@pytest.mark.parametrize("case, words", [
    ("model", "mat1 and mat2 must have the same dtype, but got Float and Double"),
    ("no bias", "expected m1 and m2 to have the same dtype, but got: double != float"),
    ("bias", "self and mat2 must have the same dtype, but got Double and Float"),
    ("half", "mat1 and mat2 must have the same dtype, but got Half and Float"),
])
def test_linear_of_two_dtypes_says_pytorchs_words(case, words):
    def call(m):
        torch, functional = m.torch, m.F
        if case == "model":
            return m.nn.Linear(3, 2).double()(torch.ones(1, 3))
        if case == "no bias":
            return functional.linear(torch.ones(2, 3, dtype=torch.float64), torch.ones(4, 3))
        if case == "bias":
            return functional.linear(torch.ones(2, 3), torch.ones(4, 3), torch.ones(4, dtype=torch.float64))
        return m.nn.Linear(3, 2)(torch.ones(2, 3).half())

    ours = error_of(lambda: call(autograd_modules()))
    assert ours[0] == "RuntimeError" and ours[1].startswith(words + " (linear: the ")
    torch_modules = pytorch()
    if torch_modules is not None:
        assert error_of(lambda: call(torch_modules))[1] == words


def test_nll_loss_of_float_target_and_addcdiv_and_masked_scatter_say_pytorchs_words():
    def calls(torch, functional):
        return [error_of(lambda: functional.nll_loss(torch.zeros(3, 4), torch.tensor([0., 3., 1.]))),
                error_of(lambda: torch.addcdiv(torch.tensor([1]), torch.tensor([1]), torch.tensor([1]))),
                error_of(lambda: torch.zeros(2).masked_scatter_(torch.tensor([True, False]),
                                                                torch.ones(2, dtype=torch.float64)))]

    ours = calls(autograd, F)
    assert ours[0][1].startswith("expected target dtype to be Long or Byte, but got Float (nll_loss: ")
    assert "in a future  release addcdiv" in ours[1][1]
    assert ours[2][1] == "masked_scatter: expected self and source to have same dtypes but gotFloat and Double"
    torch_modules = pytorch()
    if torch_modules is not None:
        theirs = calls(torch_modules.torch, torch_modules.F)
        assert ours[0][1].startswith(theirs[0][1]) and ours[1][1] == theirs[1][1] and ours[2][1] == theirs[2][1]


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_class_weight_of_another_dtype_says_pytorchs_words(loss):
    def call(torch, functional):
        weight = torch.ones(3, dtype=torch.float64)
        return getattr(functional, loss)(torch.ones(2, 3), torch.tensor([0, 1]), weight=weight)

    ours = error_of(lambda: call(autograd, F))
    assert ours[0] == "RuntimeError"
    assert ours[1].startswith(f"expected scalar type Float but found Double ({loss}: the weight is float64")
    torch_modules = pytorch()
    if torch_modules is not None:
        assert error_of(lambda: call(torch_modules.torch, torch_modules.F))[1] == \
            "expected scalar type Float but found Double"


def test_half_nll_loss_reduces_in_float16_as_pytorchs_kernel():
    rng = np.random.default_rng(0)
    x = -(rng.random((21, 3)) * 3).astype(np.float16)
    y = rng.integers(0, 3, 21)
    total = F.nll_loss(autograd.tensor(x), autograd.tensor(y), reduction="sum").numpy()
    terms = -x[np.arange(21), y]
    first = np.float16(0)
    for row in range(1, 17):  # (row 0's term is passed to the last partial sum, row 16's sum up a level)
        first = np.float16(first + terms[row])
    rest = np.float16(0)
    for row in range(17, 21):
        rest = np.float16(rest + terms[row])
    by_hand = np.float16(np.float16(rest + first) + terms[0])
    assert by_hand == np.float16(30.28) != np.float16(terms.astype(np.float32).sum())
    assert total == by_hand


@pytest.mark.parametrize("case, words", [
    ("conv bias", "Input type (double) and bias type (float) should be the same"),
    ("conv no bias", "expected scalar type Double but found Float"),
    ("conv half", "Input type (c10::Half) and bias type (float) should be the same"),
    ("transposed", "expected scalar type Double but found Float"),
    ("layer_norm", "mixed dtype (CPU): all inputs must share same datatype."),
    ("double layer_norm", "mixed dtype (CPU): expect parameter to have scalar type of Float"),
    ("batch_norm", "mixed dtype (CPU): all inputs must share same datatype."),
    ("group_norm", "mixed dtype (CPU): expect parameter to have scalar type of Float"),
    ("instance_norm", "mixed dtype (CPU): all inputs must share same datatype."),
    ("vdot", "dot : expected both vectors to have same dtype, but found Float and Double"),
])
def test_convolutions_norms_and_dot_of_two_dtypes_say_pytorchs_words(case, words):
    def call(m):
        torch, nn = m.torch, m.nn
        wide = torch.float64
        calls = {
            "conv bias": lambda: nn.Conv2d(1, 2, 3)(torch.ones(1, 1, 5, 5, dtype=wide)),
            "conv no bias": lambda: nn.Conv2d(1, 2, 3, bias=False)(torch.ones(1, 1, 5, 5, dtype=wide)),
            "conv half": lambda: nn.Conv1d(1, 2, 3)(torch.ones(1, 1, 5).half()),
            "transposed": lambda: nn.ConvTranspose2d(1, 2, 3)(torch.ones(1, 1, 5, 5, dtype=wide)),
            "layer_norm": lambda: nn.LayerNorm(3)(torch.ones(2, 3, dtype=wide)),
            "double layer_norm": lambda: nn.LayerNorm(3).double()(torch.ones(2, 3)),
            "batch_norm": lambda: nn.BatchNorm1d(3)(torch.ones(2, 3, dtype=wide)),
            "group_norm": lambda: nn.GroupNorm(1, 2).double()(torch.ones(2, 2, 3)),
            "instance_norm": lambda: nn.InstanceNorm1d(3, affine=True)(torch.ones(2, 3, 4, dtype=wide)),
            "vdot": lambda: torch.vdot(torch.ones(2), torch.ones(2, dtype=wide)),
        }
        return calls[case]()

    ours = error_of(lambda: call(autograd_modules()))
    assert ours[0] == "RuntimeError" and ours[1].startswith(words)
    torch_modules = pytorch()
    if torch_modules is not None:
        assert error_of(lambda: call(torch_modules))[1] == words


def test_assigning_a_gradient_of_another_dtype_says_pytorchs_first_sentences():
    words = ("attempting to assign a gradient with dtype 'double' to a tensor with grad_dtype 'Float'. The gradient "
             "must match the tensor's grad_dtype (defaults to the tensor's dtype).")

    def assign(torch):
        x = torch.tensor([1.0, 2.0], requires_grad=True)
        x.grad = torch.ones(2, dtype=torch.float64)

    ours = error_of(lambda: assign(autograd))
    assert ours[0] == "DtypeError" and ours[1].startswith(words)
    torch_modules = pytorch()
    if torch_modules is not None:
        assert error_of(lambda: assign(torch_modules.torch))[1].startswith(words)


def test_half_cross_entropy_of_an_image_rounds_as_pytorchs_nll_loss2d():
    # an image's classes are not the last dim: PyTorch's log_softmax there is float32 rounded once, and nll_loss2d
    # sums the float16 losses in its float16 cascade (the wide float32 sum, rounded, was 113.1875 / 2.830078125)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 3, 5, 4)) * 3).astype(np.float16)
    target = rng.integers(0, 3, (2, 5, 4))
    logits = autograd.tensor(x, requires_grad=True)
    total = F.cross_entropy(logits, autograd.tensor(target), reduction="sum")
    assert total.dtype == autograd.float16 and total.item() == 113.25
    assert F.cross_entropy(logits, autograd.tensor(target)).item() == 2.83203125
    each = F.cross_entropy(logits, autograd.tensor(target), reduction="none")  # each loss: float32, rounded once
    by_hand = -np.take_along_axis(x.astype(np.float32) - np.log(np.exp(x.astype(np.float32)).sum(1, keepdims=True)),
                                  target[:, None], 1)[:, 0]
    np.testing.assert_array_equal(each.detach().numpy(), by_hand.astype(np.float16))
    total.backward()
    torch_modules = pytorch()
    if torch_modules is None:
        return
    torch = torch_modules.torch
    for seed in range(20):  # with class weights and ignored pixels: values and gradients bit for bit
        rng = np.random.default_rng(seed)
        x = (rng.standard_normal((2, 4, 3, 5)) * 3).astype(np.float16)
        target = rng.integers(0, 4, (2, 3, 5))
        target[rng.random(target.shape) < 0.2] = -100
        weight = (rng.random(4) + 0.5).astype(np.float16)
        for reduction in ("none", "mean", "sum"):
            ours, theirs = autograd.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
            mine = F.cross_entropy(ours, autograd.tensor(target), autograd.tensor(weight), reduction=reduction)
            reference = torch.nn.functional.cross_entropy(theirs, torch.tensor(target), torch.tensor(weight),
                                                          reduction=reduction)
            np.testing.assert_array_equal(mine.detach().numpy(), reference.detach().numpy())
            mine.sum().backward()
            reference.sum().backward()
            np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=2e-3, atol=0)
