"""Without PyTorch: the fixes the in-place / out= / variant OpInfo sweep (tests/test_opinfo_variants.py) led to,
against NumPy and literals (PyTorch 2.13's behaviour, read off it by hand)."""

import warnings

import numpy as np
import pytest

import autograd
import nn.functional as F


def _no_warning(call):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return call()


# -- conj_physical_ on a real tensor is still a write (PyTorch bumps the version, refuses a leaf) -----------------

def test_conj_physical_in_place_on_a_real_tensor_is_a_write():
    x = autograd.tensor([1.0, -2.0, 3.0])
    version = x._version
    assert x.conj_physical_() is x
    assert x._version == version + 1
    np.testing.assert_array_equal(x.numpy(), [1.0, -2.0, 3.0])


def test_conj_physical_in_place_refuses_a_leaf_that_requires_grad_and_passes_gradients_through_a_clone():
    leaf = autograd.tensor([1.0, -2.0, 3.0], requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        leaf.conj_physical_()
    y = leaf.clone()
    y.conj_physical_()
    (y * autograd.tensor([1.0, 2.0, 3.0])).sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [1.0, 2.0, 3.0])


def test_conj_physical_in_place_conjugates_a_complex_tensor_and_its_gradient():
    z = autograd.tensor([1 + 2j, 3 - 1j])
    assert z.conj_physical_() is z
    np.testing.assert_array_equal(z.numpy(), [1 - 2j, 3 + 1j])
    leaf = autograd.tensor([1 + 2j, 3 - 1j], requires_grad=True)
    w = leaf.clone()
    w.conj_physical_()
    (w * autograd.tensor([1j, 2])).real.sum().backward()
    np.testing.assert_array_equal(leaf.grad.numpy(), [1j, 2])  # (PyTorch: tensor([0.+1.j, 2.-0.j]))


# -- hstack, vstack, dstack, column_stack refuse an out they can't cast into as cat does (TypeError) -------------

@pytest.mark.parametrize("stack", ["hstack", "vstack", "dstack", "column_stack"])
def test_stacks_refuse_an_integer_out_for_floats_with_cats_type_error(stack):
    a = autograd.tensor([1.5, 2.5])
    with pytest.raises(TypeError, match="input types can't be cast to the desired output type Long"):
        getattr(autograd, stack)([a, a], out=autograd.zeros(4, dtype=autograd.int64))


def test_stacks_write_into_out_and_resize_it():
    a, b = autograd.tensor([1.0, 2.0]), autograd.tensor([3.0, 4.0])
    out = autograd.zeros(2, 2)
    assert autograd.vstack([a, b], out=out) is out
    np.testing.assert_array_equal(out.numpy(), [[1.0, 2.0], [3.0, 4.0]])
    out = autograd.zeros(0)
    assert autograd.column_stack([a, b], out=out) is out
    np.testing.assert_array_equal(out.numpy(), [[1.0, 3.0], [2.0, 4.0]])


# -- out= resized without a warning where PyTorch's kernel resizes out itself -----------------------------------

def test_narrow_copy_resizes_out_without_a_warning():
    x = autograd.arange(12.0).reshape(3, 4)
    out = autograd.zeros(7)
    assert _no_warning(lambda: autograd.narrow_copy(x, 1, 1, 2, out=out)) is out
    np.testing.assert_array_equal(out.numpy(), [[1.0, 2.0], [5.0, 6.0], [9.0, 10.0]])


def test_addbmm_resizes_out_without_a_warning():
    batch1, batch2 = autograd.ones(2, 2, 3), autograd.ones(2, 3, 2)
    out = autograd.zeros(5)
    assert _no_warning(lambda: autograd.addbmm(autograd.ones(2, 2), batch1, batch2, out=out)) is out
    np.testing.assert_array_equal(out.numpy(), np.full((2, 2), 7.0))  # 1 + Σ_b 3


def test_addmm_still_warns_when_it_resizes_out():
    out = autograd.zeros(5)
    with pytest.warns(UserWarning, match="was resized"):
        autograd.addmm(autograd.ones(2, 2), autograd.ones(2, 3), autograd.ones(3, 2), out=out)
    np.testing.assert_array_equal(out.numpy(), np.full((2, 2), 4.0))


# -- logsigmoid and hash_tensor take out= --------------------------------------------------------------------

def test_logsigmoid_writes_into_out_and_resizes_it_without_a_warning():
    x = np.array([-30.0, -1.0, 0.0, 2.0])
    want = -np.logaddexp(0.0, -x)
    out = autograd.zeros(4, dtype=autograd.float64)
    assert F.logsigmoid(autograd.tensor(x), out=out) is out
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-15)
    out = autograd.zeros(9, dtype=autograd.float64)
    assert _no_warning(lambda: F.logsigmoid(autograd.tensor(x), out=out)) is out
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-15)


def test_logsigmoid_out_refuses_an_input_that_requires_grad():
    with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
        F.logsigmoid(autograd.tensor([1.0], requires_grad=True), out=autograd.zeros(1))


def test_hash_tensor_writes_into_out():
    x = autograd.tensor([[1.0, 2.0], [3.0, 1.0]])
    out = autograd.zeros(2, dtype=autograd.uint64)
    assert autograd.hash_tensor(x, 0, out=out) is out
    bits = np.array([[1.0, 2.0], [3.0, 1.0]]).view(np.uint64)
    np.testing.assert_array_equal(out.numpy(), bits[0] ^ bits[1])


# -- F.normalize's out= is torch.div's: resized with the warning, refused for an integer out or grad -------------

def test_normalize_out_is_resized_with_a_warning():
    out = autograd.zeros(3, dtype=autograd.float64)
    with pytest.warns(UserWarning, match="was resized"):
        assert F.normalize(autograd.tensor(np.array([[3.0, 4.0]])), dim=1, out=out) is out
    np.testing.assert_allclose(out.numpy(), [[0.6, 0.8]], rtol=1e-15)


def test_normalize_out_refuses_a_dtype_the_result_cannot_be_cast_to():
    with pytest.raises(RuntimeError, match="can't be cast to the desired output type Long"):
        F.normalize(autograd.tensor([[3.0, 4.0]]), out=autograd.zeros(1, 2, dtype=autograd.int64))


def test_normalize_out_refuses_an_input_that_requires_grad():
    with pytest.raises(RuntimeError, match="don't support automatic differentiation"):
        F.normalize(autograd.tensor([[3.0, 4.0]], requires_grad=True), out=autograd.zeros(1, 2))
