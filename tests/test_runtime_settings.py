"""The settings PyTorch programs make in their first lines: accepted with PyTorch's names,
checks and read-back, and (thread count) applied to NumPy's BLAS when threadpoolctl is there."""

import numpy as np
import pytest

import autograd


def test_matmul_precision_and_determinism_are_kept():
    before = autograd.get_float32_matmul_precision()
    try:
        autograd.set_float32_matmul_precision("high")
        assert autograd.get_float32_matmul_precision() == "high"
        with pytest.warns(UserWarning, match="no effect"):
            autograd.set_float32_matmul_precision("fastest")
        assert autograd.get_float32_matmul_precision() == "high"
        a = np.random.default_rng(0).standard_normal((8, 8)).astype(np.float32)
        np.testing.assert_array_equal((autograd.tensor(a) @ autograd.tensor(a)).numpy(), a @ a)  # full precision
    finally:
        autograd.set_float32_matmul_precision(before)
    autograd.use_deterministic_algorithms(True, warn_only=True)
    assert autograd.are_deterministic_algorithms_enabled() and autograd.is_deterministic_algorithms_warn_only_enabled()
    autograd.use_deterministic_algorithms(False)
    assert not autograd.are_deterministic_algorithms_enabled()


def test_thread_count():
    before = autograd.get_num_threads()
    assert before >= 1
    with pytest.raises(RuntimeError, match="positive integer"):
        autograd.set_num_threads(0)
    try:
        autograd.set_num_threads(1)
        assert autograd.get_num_threads() == 1
        threadpoolctl = pytest.importorskip("threadpoolctl")
        blas = [pool["num_threads"] for pool in threadpoolctl.threadpool_info() if pool["user_api"] == "blas"]
        assert blas and all(n == 1 for n in blas)
    finally:
        autograd.set_num_threads(before)
