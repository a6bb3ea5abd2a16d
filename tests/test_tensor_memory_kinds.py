"""The small Tensor facts and legacy spellings PyTorch programs reach for: layout and the kind
predicates (every tensor here is dense and strided), new(), apply_/map_, nonzero_static,
cfloat/cdouble, share_memory_."""

import numpy as np
import pytest

import autograd
from autograd import Tensor

try:
    import torch
except ImportError:
    torch = None


def test_every_tensor_is_dense_and_strided():
    x = autograd.ones(2)
    assert x.layout is autograd.strided and repr(autograd.strided) == "torch.strided"
    assert autograd.zeros(2, layout=autograd.strided).tolist() == [0.0, 0.0]
    for kind in ("is_meta", "is_sparse", "is_sparse_csr", "is_quantized", "is_nested", "is_mkldnn"):
        assert getattr(x, kind) is False
    assert x.is_shared() is False and x.share_memory_() is x


def test_new_apply_map_and_conversions():
    x = autograd.ones(2, dtype=autograd.float64)
    assert x.new(2, 3).shape == (2, 3) and x.new(2, 3).dtype == autograd.float64
    assert x.new([1, 2]).tolist() == [1.0, 2.0] and x.new([1, 2]).dtype == autograd.float64 and x.new().shape == (0,)
    with pytest.raises(TypeError, match="expected a tensor of dtype float64"):
        x.new(autograd.tensor([1, 2]))
    y = autograd.arange(6.0).reshape(2, 3)
    version = y._version
    assert y.apply_(lambda v: v * 2) is y and y.tolist() == [[0, 2, 4], [6, 8, 10]] and y._version > version
    z = autograd.ones(2, 3)
    z.map_(y[0], lambda a, b: a + b)
    assert z.tolist() == [[1, 3, 5], [1, 3, 5]]
    with pytest.raises(RuntimeError, match=r"Can't call apply_\(\) on Variable that requires grad"):
        autograd.ones(2, requires_grad=True).apply_(abs)
    with pytest.raises(RuntimeError, match=r"Can't call map_\(\)"):
        autograd.ones(2, requires_grad=True).map_(autograd.ones(2), max)
    assert autograd.ones(2).cfloat().dtype == autograd.complex64
    assert autograd.ones(2).cdouble().dtype == autograd.complex128


def test_nonzero_static():
    found = autograd.nonzero_static(autograd.tensor([0, 1, 0, 2]), size=4)
    assert found.dtype == autograd.int64 and found.tolist() == [[1], [3], [-1], [-1]]
    assert autograd.tensor([[0, 1], [2, 0]]).nonzero_static(size=1, fill_value=-5).tolist() == [[0, 1]]


@pytest.mark.skipif(torch is None, reason="PyTorch is not installed")
def test_against_pytorch():
    values = np.array([[0.0, 1.5, 0.0], [2.0, 0.0, -1.0]])
    for size, fill in ((0, -1), (2, -1), (6, 7)):
        ours = autograd.nonzero_static(Tensor(values), size=size, fill_value=fill).tolist()
        assert ours == torch.nonzero_static(torch.tensor(values), size=size, fill_value=fill).tolist()
    assert str(autograd.ones(1).layout) == str(torch.ones(1).layout)
    assert autograd.ones(2).new(3, 1).shape == tuple(torch.ones(2).new(3, 1).shape)


def test_is_contiguous_in_a_memory_format():
    x = autograd.ones(2, 3, 4, 5)
    assert x.is_contiguous() and x.is_contiguous(memory_format=autograd.contiguous_format)
    assert not x.is_contiguous(memory_format=autograd.channels_last)
    nhwc = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2)
    assert nhwc.is_contiguous(memory_format=autograd.channels_last) and not nhwc.is_contiguous()
    assert not autograd.ones(2, 3).is_contiguous(memory_format=autograd.channels_last)
    assert x.clone(memory_format=autograd.contiguous_format).tolist() == x.tolist()
