"""``backend.select``, ``where`` by bits on large arrays (Where's and MaskedFill's forward): the same elements as
NumPy's ``where``, bit for bit (NaN payloads, -0.0), for every dtype it takes, broadcast shapes included."""

import numpy as np
import pytest

from autograd.backend import select, to_numpy, xp

SHAPES = [((200, 100), (200, 100), (200, 100)), ((200, 100), (200, 100), ()), ((200, 1), (1, 100), (200, 100)),
          ((), (200, 100), (200, 100)), ((300, 60), (60,), ()), ((200, 1), (200, 100), ())]


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "complex64", "complex128", "int8", "uint16",
                                   "int64", "bool"])
@pytest.mark.parametrize("shapes", SHAPES)
def test_the_elements_numpys_where_chooses(dtype, shapes):
    rng = np.random.default_rng(0)
    condition = rng.standard_normal(shapes[0]) > 0
    x, y = ((rng.standard_normal(shape) * 100).astype(dtype) for shape in shapes[1:])
    chosen, expected = to_numpy(select(xp.asarray(condition), xp.asarray(x), xp.asarray(y))), np.where(condition, x, y)
    assert chosen.dtype == expected.dtype and chosen.shape == expected.shape
    assert chosen.tobytes() == expected.tobytes()


def test_nan_payloads_and_negative_zero_are_kept():
    rng = np.random.default_rng(1)
    payload = np.array([0x7FC00123, 0xFFC00001], np.uint32).view(np.float32)
    x = np.resize(np.concatenate([payload, [-0.0]]).astype(np.float32), 9000)
    y = np.full(9000, 0.0, np.float32)
    condition = rng.standard_normal(9000) > 0
    chosen = to_numpy(select(xp.asarray(condition), xp.asarray(x), xp.asarray(y)))
    assert chosen.view(np.uint32).tolist() == np.where(condition, x, y).view(np.uint32).tolist()


def test_where_and_masked_fill_of_large_tensors_with_their_gradients(T):
    rng = np.random.default_rng(2)
    values = rng.standard_normal((128, 96))
    x = T.tensor(values, requires_grad=True)
    y = T.where(x > 0, x * 2, T.tensor(-1.0, dtype=T.float64))
    z = x.masked_fill(x < -1, float("nan"))
    (y.sum() + z.nan_to_num(0.0).sum()).backward()
    np.testing.assert_array_equal(y.detach().numpy(), np.where(values > 0, values * 2, -1.0))
    assert np.isnan(z.detach().numpy()[values < -1]).all()
    np.testing.assert_array_equal(x.grad.numpy(), np.where(values > 0, 2.0, 0.0) + np.where(values < -1, 0.0, 1.0))
