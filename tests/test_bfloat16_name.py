"""``autograd.bfloat16`` names the dtype NumPy lacks: programs that only name it (a dtype check, a table of
dtypes, ``finfo``) run as on PyTorch, and anything that would make a tensor of it refuses with the reason."""

import pytest

import autograd
import nn


def test_it_compares_and_hashes_as_a_dtype():
    weight = autograd.ones(4, dtype=autograd.float16)
    assert weight.dtype in [autograd.float16, autograd.bfloat16]
    assert autograd.float32 != autograd.bfloat16 and autograd.bfloat16 != autograd.float32
    table = {"float32": autograd.float32, "bfloat16": autograd.bfloat16, "float16": autograd.float16}
    assert table["bfloat16"] is autograd.bfloat16 and {autograd.bfloat16: 1}[autograd.bfloat16] == 1
    assert autograd.bfloat16.is_floating_point and autograd.bfloat16.itemsize == 2
    assert repr(autograd.bfloat16) == "autograd.bfloat16"


def test_finfo_gives_its_limits():
    info = autograd.finfo(autograd.bfloat16)
    assert (info.bits, info.eps, info.resolution) == (16, 0.0078125, 0.01)
    assert info.max == 3.3895313892515355e38 and info.min == -info.max
    assert info.tiny == info.smallest_normal == 2.0**-126


@pytest.mark.parametrize("make", [
    lambda: autograd.zeros(2, dtype=autograd.bfloat16),
    lambda: autograd.tensor([1.0], dtype=autograd.bfloat16),
    lambda: autograd.ones(2).to(autograd.bfloat16),
    lambda: autograd.ones(2).bfloat16(),
    lambda: autograd.ones(2).type(autograd.bfloat16),
    lambda: nn.Linear(2, 2).to(autograd.bfloat16),
    lambda: nn.Linear(2, 2).bfloat16(),
    lambda: autograd.set_default_dtype(autograd.bfloat16),
])
def test_making_a_tensor_of_it_is_refused_with_the_reason(make):
    with pytest.raises(TypeError, match="bfloat16 is not built here: NumPy has no bfloat16"):
        make()


def test_autocast_to_it_is_refused():
    with pytest.raises(NotImplementedError, match="bfloat16"):
        with autograd.autocast("cpu", dtype=autograd.bfloat16):
            pass
