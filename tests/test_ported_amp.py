"""Mixed precision ported from PyTorch's test/test_autocast.py (the CPU parts: autocast as a context manager and
a decorator, nesting, enabled=False, the dtype argument and its checks, the thread-local state, the cache switch,
custom_fwd/custom_bwd, the errors). The CPU GradScaler tests of test/test_torch.py are in
test_ported_amp_grad_scaler.py.

Each test runs on chainrule's `autograd` and, where installed, on PyTorch (fixture `T`), against literals.
CPU autocast to float16 runs TestAutocastCPU's op lists here too (run_lowered_ops and the others, below);
bfloat16, CPU autocast's default dtype in PyTorch, is not built (NumPy has no bfloat16): it is refused in words.
"""

import importlib
import threading

import numpy as np
import pytest


def nn_of(T):
    return importlib.import_module("nn") if T.__name__ == "autograd" else T.nn


def optim_of(T):
    return importlib.import_module("optim") if T.__name__ == "autograd" else T.optim


# ---------------------------------------------------------------------------------------------------------------
# autocast's state (test_autocast.py: TestTorchAutocast, TestAutocastCPU's non-op tests)
# ---------------------------------------------------------------------------------------------------------------


def test_autocast_disabled_with_fp32_dtype(T):
    with T.autocast(device_type="cpu", dtype=T.float32, enabled=False):
        assert not T.is_autocast_enabled("cpu")
        assert T.get_autocast_dtype("cpu") == T.float32
        np.testing.assert_array_equal(T.ones(10).numpy(), np.ones(10, np.float32))
    assert not T.is_autocast_enabled("cpu")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cpu_autocast_of_an_unsupported_dtype_warns_and_disables(T, dtype):
    with pytest.warns(UserWarning, match="In CPU autocast, but the target dtype is not supported. Disabling"):
        block = T.autocast("cpu", dtype=getattr(T, dtype))
    with block:
        assert not T.is_autocast_enabled("cpu")
        x = T.ones(2, 2)
        assert (x @ x).dtype == T.float32


def test_non_string_device(T):
    with pytest.raises(ValueError, match=r"Expected `device_type` of type `str`, got: `<class '.*device'>`"):
        T.autocast(device_type=T.device("cpu"))
    with pytest.raises(ValueError, match="Expected `device_type` of type `str`"):
        T.amp.custom_fwd(device_type=T.device("cpu"))
    with pytest.raises(ValueError, match="Expected `device_type` of type `str`"):
        T.amp.custom_bwd(device_type=T.device("cpu"))


def test_invalid_device(T):
    with pytest.raises(RuntimeError, match="device"):
        with T.autocast(device_type="not a real device"):
            pass
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda"):
        T.is_autocast_enabled("bogus")


def test_autocast_fast_dtype_of_cuda(T):
    assert T.get_autocast_dtype("cuda") == T.float16
    with pytest.warns(DeprecationWarning):
        assert T.get_autocast_gpu_dtype() == T.half


@pytest.mark.xfail(strict=True, reason="NumPy has no bfloat16: chainrule's CPU autocast dtype starts at float16, "
                                       "PyTorch's at bfloat16")
def test_autocast_fast_dtype_of_cpu_is_bfloat16():
    import autograd

    assert autograd.get_autocast_dtype("cpu") == autograd.bfloat16


def test_nested_blocks_restore_enabled_dtype_and_cache(T):
    before = T.get_autocast_dtype("cpu")
    assert T.is_autocast_cache_enabled()
    with T.autocast("cpu", enabled=False, cache_enabled=False):
        assert (T.is_autocast_enabled("cpu"), T.is_autocast_cache_enabled()) == (False, False)
        with T.autocast("cpu", dtype=T.float16, enabled=False):
            assert T.get_autocast_dtype("cpu") == T.float16
            assert not T.is_autocast_cache_enabled()  # (None: the enclosing block's)
            with T.autocast("cpu", dtype=T.float64, enabled=False, cache_enabled=True):
                assert T.get_autocast_dtype("cpu") == T.float64 and T.is_autocast_cache_enabled()
            assert T.get_autocast_dtype("cpu") == T.float16 and not T.is_autocast_cache_enabled()
        assert T.get_autocast_dtype("cpu") == before
    assert T.is_autocast_cache_enabled() and not T.is_autocast_enabled("cpu")


def test_a_block_restores_the_state_when_its_body_raises(T):
    with pytest.raises(KeyError):
        with T.autocast("cpu", dtype=T.float64, enabled=False, cache_enabled=False):
            raise KeyError("x")
    assert T.is_autocast_cache_enabled() and T.get_autocast_dtype("cpu") != T.float64


def test_nesting_counter(T):
    assert T.autocast_increment_nesting() == 1
    assert T.autocast_increment_nesting() == 2
    assert T.autocast_decrement_nesting() == 1
    assert T.autocast_decrement_nesting() == 0
    T.clear_autocast_cache()  # (nothing cached: a no-op that runs)


def test_autocast_as_a_decorator(T):
    seen = []

    @T.autocast("cpu", dtype=T.float64, enabled=False)
    def body(x):
        """Doubles x."""
        seen.append((T.is_autocast_enabled("cpu"), T.get_autocast_dtype("cpu")))
        return 2 * x

    assert body.__name__ == "body" and body.__doc__ == "Doubles x."
    np.testing.assert_array_equal(body(T.tensor([1.0, 2.0])).numpy(), [2.0, 4.0])
    body(T.tensor(0.0))  # (each call enters the block again)
    assert seen == [(False, T.float64)] * 2
    assert T.get_autocast_dtype("cpu") != T.float64


def test_decorating_what_is_not_callable(T):
    with pytest.raises(TypeError, match=r"autocast\(\)\(func\) requires a callable, but got int"):
        T.autocast("cpu", enabled=False)(3)


def test_the_state_is_per_thread(T):
    seen = []
    before = T.get_autocast_dtype("cpu")
    with T.autocast("cpu", dtype=T.float64, enabled=False, cache_enabled=False):
        worker = threading.Thread(target=lambda: seen.append(
            (T.get_autocast_dtype("cpu") == before, T.is_autocast_cache_enabled())))
        worker.start()
        worker.join()
    assert seen == [(True, True)]


def test_set_autocast_enabled_wants_a_bool(T):
    with pytest.raises(TypeError, match=r"argument 'enabled' \(position 2\) must be bool, not int"):
        T.set_autocast_enabled("cpu", 1)


def test_cuda_autocast_without_a_gpu_warns_and_disables(T):
    with pytest.warns(UserWarning, match="CUDA is not available or torch_xla is imported. Disabling autocast."):
        block = T.autocast("cuda")
    with block:
        assert not T.is_autocast_enabled("cuda")
        assert (T.ones(2, 2) @ T.ones(2, 2)).dtype == T.float32


def test_custom_fwd_and_bwd_outside_autocast(T):
    """A Function decorated for CPU autocast, run outside any autocast block: its own values and gradients."""

    class Cube(T.autograd.Function):
        @staticmethod
        @T.amp.custom_fwd(device_type="cpu", cast_inputs=T.float32)
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x**3

        @staticmethod
        @T.amp.custom_bwd(device_type="cpu")
        def backward(ctx, grad):
            (x,) = ctx.saved_tensors
            assert not T.is_autocast_enabled("cpu")
            return 3 * x**2 * grad

    x = T.tensor([1.0, -2.0], dtype=T.float64, requires_grad=True)
    y = Cube.apply(x)
    y.sum().backward()
    assert y.dtype == T.float64  # (cast_inputs applies only inside autocast)
    np.testing.assert_array_equal(y.detach().numpy(), [1.0, -8.0])
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 12.0])


def test_custom_fwd_wants_device_type_by_keyword(T):
    with pytest.raises(TypeError):
        T.amp.custom_fwd(lambda ctx, x: x)


# ---------------------------------------------------------------------------------------------------------------
# CPU autocast that takes effect (TestAutocastCPU's op lists, with dtype=float16)
# ---------------------------------------------------------------------------------------------------------------


def lowered_ops(T):
    """Ops autocast runs in the lower dtype, each with float32 arguments (autocast_test_lists' torch_16, nn_16), by
    the namespace and name each is called by inside the block, as test_autocast.py's _run_autocast_outofplace does
    (here a function bound to a name before the first autocast block is called as it is: README)."""
    T.manual_seed(0)
    mat = [T.randn(4, 4) for _ in range(3)]
    batch = [T.randn(2, 4, 4) for _ in range(3)]
    F = nn_of(T).functional
    return [(T, "mm", mat[:2]), (T, "matmul", mat[:2]), (T, "bmm", batch[:2]), (T, "addmm", mat),
            (T, "baddbmm", batch), (F, "linear", mat[:2]), (F, "conv1d", [T.randn(2, 3, 5), T.randn(4, 3, 2)]),
            (F, "conv2d", [T.randn(1, 2, 4, 4), T.randn(3, 2, 2, 2)])]


def run_lowered_ops(T):
    for module, name, args in lowered_ops(T):
        with T.autocast("cpu", dtype=T.float16):
            out = getattr(module, name)(*args)
        assert out.dtype == T.float16, name
        control = getattr(module, name)(*[a.half() for a in args])
        np.testing.assert_allclose(out.float().numpy(), control.float().numpy(), rtol=1e-2, atol=1e-2)


def run_fp32_and_promote_ops(T):
    F = nn_of(T).functional
    a, b = T.rand(4, 4).half(), T.rand(4, 4).half()
    with T.autocast("cpu", dtype=T.float16):
        assert F.mse_loss(a, b).dtype == T.float32  # (autocast's fp32 list)
        assert F.binary_cross_entropy(a, b).dtype == T.float32
        assert T.cat([a[0], T.ones(4)]).dtype == T.float32  # (its promote list)
        assert T.stack([a[0], T.ones(4)]).dtype == T.float32
        assert (a + T.ones(4, 4)).dtype == T.float32  # (ordinary promotion, which autocast relies on)


def run_training_step(T):
    model = nn_of(T).Linear(4, 2)
    with T.autocast("cpu", dtype=T.float16):
        out = model(T.ones(3, 4))
        loss = out.float().pow(2).mean()
    loss.backward()
    assert out.dtype == T.float16 and model.weight.grad.dtype == T.float32


@pytest.mark.parametrize("program", [run_lowered_ops, run_fp32_and_promote_ops, run_training_step])
def test_cpu_float16_autocast(T, program):
    program(T)


def test_cpu_autocast_to_bfloat16_is_refused_in_words():
    import autograd

    with pytest.raises(NotImplementedError, match="NumPy has no bfloat16 type. Pass dtype=autograd.float16"):
        autograd.autocast("cpu", dtype=autograd.bfloat16)
    assert autograd.amp.is_autocast_available("cpu")  # (to float16, as PyTorch's is available)
