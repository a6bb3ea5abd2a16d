"""Focused tests for the fixes found by tests/test_programs_probe12_func.py, on chainrule and on PyTorch."""

import numpy as np
import pytest


def test_vmap_out_dims_is_a_tree_broadcast_over_the_outputs(T):
    x = T.arange(24, dtype=T.float64).reshape(4, 3, 2)
    out = T.func.vmap(lambda a: {"s": a.sum(0), "pair": (a, a * 2)}, out_dims={"s": 0, "pair": (1, 0)})(x)
    np.testing.assert_array_equal(out["s"].numpy(), x.numpy().sum(1))
    np.testing.assert_array_equal(out["pair"][0].numpy(), np.moveaxis(x.numpy(), 0, 1))
    np.testing.assert_array_equal(out["pair"][1].numpy(), x.numpy() * 2)
    prefix = T.func.vmap(lambda a: (a, (a * 2, a * 3)), out_dims=(0, 1))(x)  # 1 for both of the inner pair
    assert prefix[0].shape == (4, 3, 2) and prefix[1][0].shape == prefix[1][1].shape == (3, 4, 2)
    np.testing.assert_array_equal(prefix[1][1].numpy(), np.moveaxis(x.numpy() * 3, 0, 1))


def test_vmap_refuses_out_dims_that_do_not_fit_the_outputs(T):
    x = T.ones(4, 3)
    with pytest.raises(ValueError, match="out_dims is not compatible with the structure of `outputs`"):
        T.func.vmap(lambda a: (a, a), out_dims=(0, 1, 0))(x)
    with pytest.raises(ValueError, match="out_dims is not compatible with the structure of `outputs`"):
        T.func.vmap(lambda a: {"a": a}, out_dims={"b": 0})(x)
