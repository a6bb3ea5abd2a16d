"""Divergences from PyTorch 2.13 that probe 36 found, and their fixes: dims given as 0-d integer tensors
(max/min's overloads, amax/amin/aminmax), ...

Each case runs on ours and, where torch is installed, on PyTorch too; without torch the expected values and
error messages are written out."""

import numpy as np
import pytest

import autograd

try:
    import torch
except ImportError:  # (CI: the written-out values stand alone)
    torch = None

LIBRARIES = [autograd] if torch is None else [autograd, torch]


def values(result):
    """A result as nested lists of plain numbers (a tensor's values, a namedtuple's fields)."""
    if isinstance(result, tuple):
        return [values(r) for r in result]
    return result.detach().numpy().tolist()


X = [[1.0, 5.0], [3.0, 2.0]]


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("call, expected", [
    (lambda T, x: x.max(dim=T.tensor(1)), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: T.max(x, dim=T.tensor(1)), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: x.min(dim=T.tensor(1)), [[1.0, 2.0], [0, 1]]),
    (lambda T, x: T.min(x, dim=T.tensor(1)), [[1.0, 2.0], [0, 1]]),
    (lambda T, x: x.max(dim=T.tensor(-1, dtype=T.int32)), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: x.max(dim=T.tensor(1, dtype=T.uint8)), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: x.max(T.tensor(1), True), [[[5.0], [3.0]], [[1], [0]]]),  # beside keepdim: a dim
    (lambda T, x: x.max(T.tensor(1), keepdim=False), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: T.max(x, T.tensor(0), True), [[[3.0, 5.0]], [[1, 0]]]),
    (lambda T, x: x.max(np.int64(1)), [[5.0, 3.0], [1, 0]]),
    (lambda T, x: x.min(dim=np.int32(0)), [[1.0, 2.0], [0, 1]]),
    (lambda T, x: x.max(T.tensor(2)), [[2.0, 5.0], [3.0, 2.0]]),  # alone in dim's place: the other tensor
    (lambda T, x: T.min(x, T.tensor(2)), [[1.0, 2.0], [2.0, 2.0]]),
    (lambda T, x: T.max(x, other=T.tensor(2.0)), [[2.0, 5.0], [3.0, 2.0]]),
    (lambda T, x: x.amax(T.tensor(1)), [5.0, 3.0]),
    (lambda T, x: T.amin(x, T.tensor(0)), [1.0, 2.0]),
    (lambda T, x: x.amax([T.tensor(1)]), [5.0, 3.0]),
    (lambda T, x: x.aminmax(dim=T.tensor(1)), [[1.0, 2.0], [5.0, 3.0]]),
    (lambda T, x: x.sum(T.tensor(1)), [6.0, 5.0]),
    (lambda T, x: x.softmax(np.int64(1)).argmax(T.tensor(1)), [1, 0]),
    (lambda T, x: x.topk(T.tensor(1), T.tensor(1))[1], [[1], [0]]),
    (lambda T, x: x.cumsum(T.tensor(1)), [[1.0, 6.0], [3.0, 5.0]]),
])
def test_a_0d_integer_tensor_or_numpy_integer_as_dim(lib, call, expected):
    assert values(call(lib, lib.tensor(X))) == expected


@pytest.mark.parametrize("lib", LIBRARIES, ids=lambda lib: lib.__name__)
@pytest.mark.parametrize("call", [
    lambda T, x: x.max(dim=T.tensor(1.0)),
    lambda T, x: x.max(dim=T.tensor([1])),
    lambda T, x: x.min(dim=T.tensor(True)),
    lambda T, x: T.max(x, dim=T.tensor(1.0)),
    lambda T, x: x.max(T.tensor(1.0), True),
    lambda T, x: x.max(1, dim=1),
    lambda T, x: T.max(x, other=T.tensor(2.0), keepdim=True),
    lambda T, x: x.max(1, True, True),
])
def test_what_is_no_dim_of_max_is_refused(lib, call):
    with pytest.raises(TypeError):
        call(lib, lib.tensor(X))


def test_the_refusal_names_the_dim_tensor():
    with pytest.raises(TypeError, match=r"max\(\): argument 'dim' must be int, not Tensor .*float32 and shape \(\)"):
        autograd.tensor(X).max(dim=autograd.tensor(1.0))
