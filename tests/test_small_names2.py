"""Small PyTorch names programs reach for: autograd.compiler, autograd.dtype, the legacy typed
constructors (ByteTensor, ...), get_device_module, the deprecated autocast dtype setters, Future."""

import pytest

import autograd
from autograd import amp, compiler


def test_compiler_is_the_eager_one():
    assert autograd.compile is compiler.compile
    assert compiler.is_compiling() is False and compiler.is_dynamo_compiling() is False
    assert compiler.is_exporting() is False

    def f(x):
        return x + 1

    assert compiler.disable(f) is f and compiler.disable(recursive=False, reason="io")(f) is f
    assert compiler.allow_in_graph(f) is f and compiler.assume_constant_result(f) is f
    assert compiler.reset() is None and compiler.cudagraph_mark_step_begin() is None

    @compiler.disable
    def g(x):
        return x * 2

    assert g(autograd.tensor([1.0, 2.0])).tolist() == [2.0, 4.0]


def test_dtype_is_the_type_of_the_dtypes():
    assert all(isinstance(d, autograd.dtype) for d in (autograd.float32, autograd.int64, autograd.bool))
    assert isinstance(autograd.ones(2).dtype, autograd.dtype)

    def annotated(x, dtype: autograd.dtype = autograd.float32):  # a common signature in programs
        return x.to(dtype)

    assert annotated(autograd.ones(1)).dtype == autograd.float32


@pytest.mark.parametrize("name, dtype", [("ByteTensor", "uint8"), ("CharTensor", "int8"), ("ShortTensor", "int16"),
                                         ("HalfTensor", "float16")])
def test_legacy_typed_constructors(name, dtype):
    constructor = getattr(autograd, name)
    made = constructor([1, 2, 3])
    assert str(made.dtype) == dtype and made.tolist() == [1, 2, 3]
    empty = constructor(2, 3)
    assert empty.shape == (2, 3) and str(empty.dtype) == dtype


def test_get_device_module():
    assert autograd.get_device_module() is autograd.cpu  # NumPy: no accelerator
    assert autograd.get_device_module("cpu") is autograd.cpu
    assert autograd.get_device_module(autograd.device("cuda:0")) is autograd.cuda
    with pytest.raises(RuntimeError, match="Device 'mps' does not have a corresponding module"):
        autograd.get_device_module("mps")
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda"):
        autograd.get_device_module("gpu")
    with pytest.raises(RuntimeError, match="Invalid value of device '3'"):
        autograd.get_device_module(3)


def test_deprecated_autocast_dtype_setters():
    before = amp.get_autocast_dtype("cpu"), amp.get_autocast_dtype("cuda")
    try:
        with pytest.warns(DeprecationWarning, match="set_autocast_dtype\\('cpu', dtype\\)"):
            autograd.set_autocast_cpu_dtype(autograd.float64)
        with pytest.warns(DeprecationWarning, match="set_autocast_dtype\\('cuda', dtype\\)"):
            autograd.set_autocast_gpu_dtype(autograd.float32)
        assert amp.get_autocast_dtype("cpu") == autograd.float64
        assert amp.get_autocast_dtype("cuda") == autograd.float32
    finally:
        amp.set_autocast_dtype("cpu", before[0])
        amp.set_autocast_dtype("cuda", before[1])


def test_future_at_the_top_level():
    assert autograd.Future is autograd.futures.Future is autograd.jit.Future


@pytest.mark.torch
def test_against_torch():
    torch = pytest.importorskip("torch")
    assert torch.compiler.is_compiling() is compiler.is_compiling()
    assert torch.ByteTensor([1]).dtype == torch.uint8 and torch.HalfTensor([1.0]).dtype == torch.float16
    assert isinstance(torch.float32, torch.dtype)
    assert torch.get_device_module("cpu") is torch.cpu
    with pytest.raises(RuntimeError) as theirs:
        torch.get_device_module(3)
    with pytest.raises(RuntimeError) as ours:
        autograd.get_device_module(3)
    assert str(ours.value) == str(theirs.value)
    assert issubclass(torch.futures.Future, torch.Future)  # (ours: one class for both)


class Square(autograd.Function):
    """x², with its forward and backward decorated for autocast (a pattern of mixed-precision code)."""

    @staticmethod
    @amp.custom_fwd(device_type="cuda")
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    @amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return 2 * x * grad


class Halved(autograd.Function):
    @staticmethod
    @amp.custom_fwd(device_type="cpu", cast_inputs=autograd.float16)
    def forward(ctx, x):
        return x / 2

    @staticmethod
    @amp.custom_bwd(device_type="cpu")
    def backward(ctx, grad):
        return grad / 2


def test_custom_fwd_and_bwd_outside_autocast_change_nothing():
    x = autograd.tensor([1.0, -3.0], dtype=autograd.float64, requires_grad=True)
    Square.apply(x).sum().backward()
    assert x.grad.tolist() == [2.0, -6.0]
    y = autograd.tensor([4.0], requires_grad=True)
    out = Halved.apply(y)  # cast_inputs applies inside autocast only
    assert out.dtype == autograd.float32 and out.tolist() == [2.0]
    out.backward(autograd.ones(1))
    assert y.grad.tolist() == [0.5]


def test_custom_fwd_records_the_autocast_state_for_backward():
    x = autograd.tensor([2.0], requires_grad=True)
    with pytest.warns(UserWarning, match="CUDA is not available"), amp.autocast("cuda"):
        out = Square.apply(x)  # (autocast for an absent CUDA disables itself)
    out.backward()
    assert x.grad.tolist() == [4.0] and out.grad_fn._fwd_used_autocast is False
    with pytest.raises(ValueError, match="Expected `device_type` of type `str`"):
        amp.custom_fwd(device_type=None)
    with pytest.raises(ValueError, match="Expected `device_type` of type `str`"):
        amp.custom_bwd(device_type=3)


def test_is_autocast_available_on_the_cpu_only():
    assert amp.is_autocast_available("cpu") is True and amp.is_autocast_available("cuda") is False
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda"):
        amp.is_autocast_available("gpu")


def test_cuda_queries_without_cuda_are_pytorchs():
    cuda = autograd.cuda
    if cuda.is_available():
        pytest.skip("these are the answers without CUDA")
    assert cuda.is_initialized() is False and cuda.is_bf16_supported() is False and cuda.is_tf32_supported() is False
    assert cuda.memory_allocated() == cuda.max_memory_allocated() == 0
    assert cuda.memory_reserved() == cuda.max_memory_reserved() == 0
    assert cuda.memory_stats() == {} and cuda.reset_peak_memory_stats() is None
    assert cuda.get_rng_state_all() == [] and cuda.set_rng_state_all([]) is None
    state = autograd.get_rng_state()
    cuda.set_rng_state(state)  # nothing to set without CUDA (PyTorch sets it lazily)
    for query in (cuda.get_rng_state, cuda.initial_seed, cuda.current_device):
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            query()


@pytest.mark.torch
def test_cuda_queries_against_torch():
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available() or autograd.cuda.is_available():
        pytest.skip("compares the answers without CUDA")
    for name in ("is_initialized", "is_bf16_supported", "is_tf32_supported", "memory_allocated",
                 "max_memory_allocated", "memory_reserved", "max_memory_reserved", "memory_stats", "get_rng_state_all"):
        assert getattr(autograd.cuda, name)() == getattr(torch.cuda, name)(), name


def test_deprecated_out_of_place_resize_reshapes():
    x = autograd.arange(6.0, dtype=autograd.float64).requires_grad_()
    with pytest.warns(UserWarning, match="non-inplace resize is deprecated"):
        y = x.resize(2, 3)
    assert y.shape == (2, 3) and y.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    (y * autograd.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=autograd.float64)).sum().backward()
    assert x.grad.tolist() == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    with pytest.warns(UserWarning, match="non-inplace resize_as is deprecated"):
        assert x.resize_as(autograd.ones(3, 2)).shape == (3, 2)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError, match=r"requested resize to 4 \(4 elements in total\)"):
        x.resize(4)
    assert x.shape == (6,)  # out of place: x itself is unchanged


@pytest.mark.torch
def test_deprecated_resize_against_torch():
    torch = pytest.importorskip("torch")
    with pytest.warns(UserWarning), pytest.raises(RuntimeError) as theirs:
        torch.arange(6.0).resize(4)
    with pytest.warns(UserWarning), pytest.raises(RuntimeError) as ours:
        autograd.arange(6.0).resize(4)
    assert str(ours.value) == str(theirs.value)
