"""Focused tests of what the neural-field programs (tests/test_programs_probe17_fields_*.py) found, each run on
chainrule and on PyTorch (the ``T`` fixture)."""

import importlib

import numpy as np
import pytest


def functional(T):
    return importlib.import_module("nn.functional" if T.__name__ == "autograd" else "torch.nn.functional")


@pytest.mark.parametrize("spatial", [2, 3])
@pytest.mark.parametrize("padding_mode", ["zeros", "border", "reflection"])
def test_grid_sample_nearest_gradients_are_differentiable(T, spatial, padding_mode):
    # under create_graph a nearest read's dL/dinput depends on the grid (where it reads) and dL/dgrid (zeros)
    # on the input, as PyTorch's: a penalty on those gradients differentiates to zeros (it raised 'element 0
    # of tensors does not require grad')
    rng = np.random.default_rng(0)
    x = T.tensor(rng.standard_normal((1, 2) + (3,) * (spatial - 1) + (4,)), requires_grad=True)
    grid = T.tensor(rng.uniform(-1.2, 1.2, (1,) + (2,) * spatial + (spatial,)), requires_grad=True)
    out = functional(T).grid_sample(x, grid, mode="nearest", padding_mode=padding_mode, align_corners=False)
    weight = T.tensor(rng.standard_normal(tuple(out.shape)))
    g_input, g_grid = T.autograd.grad((out * weight).sum(), [x, grid], create_graph=True)
    assert g_input.requires_grad and g_grid.requires_grad
    np.testing.assert_array_equal(g_grid.detach().numpy(), 0.0)
    # every read lands once: the input's gradient sums the weights of the reads that land on each cell
    assert g_input.sum().item() == pytest.approx(
        (weight * (out.detach() != 0)).sum().item() if padding_mode == "zeros" else weight.sum().item())
    (penalty_grid,) = T.autograd.grad((g_input ** 2).sum(), grid)
    np.testing.assert_array_equal(penalty_grid.numpy(), 0.0)


@pytest.mark.parametrize("pos_weight", [None, 1.0])
def test_bce_with_logits_keeps_float64_targets_beside_float32_logits(T, pos_weight):
    # occupancy targets from NumPy (float64) beside float32 logits: PyTorch computes (1 - y)·x in float64 and
    # returns a float64 loss; the targets were rounded to float32 first (2/3 · 1000 came out as 666.66656)
    logits = T.tensor([1000.0, -1000.0], requires_grad=True)
    targets = T.tensor([1 / 3, 1 / 3], dtype=T.float64)
    kwargs = {} if pos_weight is None else {"pos_weight": T.tensor(pos_weight, dtype=T.float64)}
    loss = functional(T).binary_cross_entropy_with_logits(logits, targets, reduction="none", **kwargs)
    assert loss.dtype == T.float64
    # softplus(-1000) is 0 and softplus(1000) is 1000, exactly, in float32
    np.testing.assert_allclose(loss.detach().numpy(), [2000 / 3, 1000 / 3], rtol=1e-15)
    loss.sum().backward()
    assert logits.grad.dtype == T.float32
    np.testing.assert_allclose(logits.grad.numpy(), [2 / 3, -1 / 3], rtol=1e-7)


def test_take_along_dim_without_dim_takes_int32_indices(T):
    # without dim PyTorch flattens both and gathers, so int32 indices are taken as gather takes them (they
    # were refused as not Long); with a dim it still asks for int64
    x = T.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(T.take_along_dim(x, T.tensor([5, 0, 2], dtype=T.int32)).numpy(), [5.0, 0.0, 2.0])
    with pytest.raises(RuntimeError, match="Expected dtype int32/int64 for index"):
        T.take_along_dim(x, T.tensor([0], dtype=T.int16))
    with pytest.raises(RuntimeError, match="dtype of indices should be Long but got Int"):
        T.take_along_dim(x, T.tensor([[0], [2]], dtype=T.int32), dim=1)


@pytest.mark.parametrize("op", ["addcmul", "addcdiv"])
def test_addcmul_and_addcdiv_multiply_in_the_common_dtype(T, op):
    # float32 factors beside a float64 input: PyTorch's kernel forms value · t1 · t2 (or / t2) in float64; the
    # product was rounded to float32 first
    t1 = T.tensor([1 / 3, 2 / 3], dtype=T.float32)
    t2 = T.tensor([3.0, 7.0], dtype=T.float32)
    out = getattr(T, op)(T.zeros(2, dtype=T.float64), t1, t2, value=1.0)
    assert out.dtype == T.float64
    a, b = np.float64(np.float32(1 / 3)), np.float64(np.float32(2 / 3))
    want = [a * 3, b * 7] if op == "addcmul" else [a / 3, b / 7]
    np.testing.assert_array_equal(out.numpy(), want)


@pytest.mark.parametrize("op", ["addcmul_", "addcdiv_"])
@pytest.mark.parametrize("self_dtype,factor_dtype", [("float64", "float32"), ("float32", "float64")])
def test_in_place_addcmul_and_addcdiv_in_the_common_dtype(T, op, self_dtype, factor_dtype):
    # formed in the wider dtype and written in self's, as PyTorch's in-place kernels (with and without a graph)
    t1 = T.tensor([1 / 3, 2 / 3], dtype=getattr(T, factor_dtype))
    t2 = T.tensor([3.0, 7.0], dtype=getattr(T, factor_dtype))
    a, b = (np.float64(getattr(np, factor_dtype)(v)) for v in (1 / 3, 2 / 3))
    want = np.array([a * 3, b * 7] if op == "addcmul_" else [a / 3, b / 7]).astype(self_dtype)
    for requires_grad in (False, True):
        leaf = T.zeros(2, dtype=getattr(T, self_dtype), requires_grad=requires_grad)
        out = getattr(leaf.clone() if requires_grad else leaf, op)(t1, t2, value=1.0)
        assert out.dtype == getattr(T, self_dtype)
        np.testing.assert_array_equal(out.detach().numpy(), want)
        if requires_grad:
            out.sum().backward()
            np.testing.assert_array_equal(leaf.grad.numpy(), [1.0, 1.0])
