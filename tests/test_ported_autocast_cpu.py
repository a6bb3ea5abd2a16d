"""CPU autocast to float16 ported from PyTorch's test/test_autocast.py: TestAutocastCPU's op lists (those of
torch/testing/_internal/autocast_test_lists.py's AutocastCPUTestLists, run as its _run_autocast_outofplace runs
them: the function and the Tensor method agree, and both equal the op run outside autocast on arguments cast
by hand), its generic and deprecated spellings and its recurrent case, TestAutocastGPU's cast cache in its CPU
form, and TestTorchAutocast's device checks.

Each test runs on chainrule's `autograd` and, where installed, on PyTorch (fixture `T`); the ``*_as_pytorch``
tests compare the values of the two (tests/pytorch_programs.py's ``run_both``). PyTorch's lists hold bfloat16
inputs and run each op under both dtypes; NumPy has no bfloat16, so here the float16 half of each runs (its
bfloat16 inputs made float16, as they meet a float16 autocast) and the bfloat16 half is refused in words. Two
cases of the lists are private ATen ops, not functions of PyTorch's API (``_addmm_activation``,
``_native_multi_head_attention``: F.multi_head_attention_forward stands for the latter in
tests/test_amp_cpu_float16.py), and ``Tensor.__div__`` is Python 2's name (``__truediv__`` runs here).

The last tests hold what running PyTorch's lists over the functions PyTorch builds from listed ops found: their
dtypes under autocast are those of the listed ops inside (cov, corrcoef, affine_grid, matrix_power, nn.RNN and
nn.RNNCell lowered; local_response_norm of more than 3 dimensions in float32)."""

import importlib
from types import SimpleNamespace

import numpy as np
import pytest

from tests.pytorch_programs import run_both

N = 8


def modules(T):
    nn = importlib.import_module("nn") if T.__name__ == "autograd" else T.nn
    return SimpleNamespace(torch=T, nn=nn, F=nn.functional)


# ---------------------------------------------------------------------------------------------------------------
# AutocastCPUTestLists, float16
# ---------------------------------------------------------------------------------------------------------------


def autocast_lists(m):
    """{list name: [(label, namespace, op, args, kwargs, run_as_type, out_type)]}: AutocastCPUTestLists' lists
    with float16 for its bfloat16, each op by the namespace PyTorch's test calls it through (``torch._C._nn``'s
    by ``nn.functional``: ``reflection_pad1d`` is F.pad's reflect mode, ``nll_loss2d`` F.nll_loss of 4 dims)."""
    T, F = m.torch, m.F
    rng = np.random.default_rng(0)

    def randn(*shape, dtype="float32"):
        return T.tensor(rng.standard_normal(shape).astype(np.float32)).to(getattr(T, dtype))

    def rand(*shape, dtype="float32"):
        return T.tensor(rng.uniform(0.0, 1.0, shape).astype(np.float32)).to(getattr(T, dtype))

    f32, f16, long = T.float32, T.float16, T.long
    conv = [(randn(*[N] * d), randn(*[N] * d)) for d in (3, 4, 5)]
    mat = [randn(N, N) for _ in range(4)]
    half = [randn(N, N, dtype="float16") for _ in range(3)]
    pointwise = (randn(N), randn(N, dtype="float16"))
    promote = [(op, T, op, pointwise, {}, f32, T.bool if op in ("eq", "ge", "gt", "le", "lt", "ne") else f32)
               for op in ("eq", "ge", "gt", "le", "lt", "ne", "add", "div", "mul")]
    dunder = {"div": "__truediv__"}
    return {
        "torch_expect_builtin_promote": promote,
        "methods_expect_builtin_promote": [(dunder.get(op, f"__{op}__"), None, dunder.get(op, f"__{op}__"), args, kw,
                                            run_as, out) for op, _, _, args, kw, run_as, out in promote],
        "torch_16": [(op, T, op, args, {}, f16, None) for op, args in (
            ("conv1d", conv[0]), ("conv2d", conv[1]), ("conv3d", conv[2]),
            ("bmm", (randn(N, N, N), randn(N, N, N))), ("mm", mat[:2]), ("matmul", mat[:2]),
            ("baddbmm", (randn(N, N, N), randn(N, N, N), randn(N, N, N))), ("addmm", mat[1:]),
            ("addbmm", (mat[0], randn(N, N, N), randn(N, N, N))),
            ("conv_tbc", (randn(10, 7, 3), randn(5, 3, 5), randn(5), 0)),
            ("conv_transpose1d", conv[0]), ("conv_transpose2d", conv[1]), ("conv_transpose3d", conv[2]),
            ("prelu", (randn(N), randn(1))))],
        "nn_16": [("linear", F, "linear", mat[:2], {}, f16, None)],
        "torch_fp32": [(op, T, op, args, {}, f32, None) for op, args in (
            ("poisson_nll_loss", (*half[:2], True, False, 1e-8, 1)),
            ("cosine_embedding_loss", (T.tensor([[1.0, 2, 3]]).half(), T.tensor([[1.0, 3, 4]]).half(),
                                       T.tensor([1], dtype=T.int32))),
            ("hinge_embedding_loss", (half[0], T.ones(N, dtype=T.int32))),
            ("margin_ranking_loss", (*half[:2], T.ones(N, dtype=f16))),  # (a target of 1 dimension: broadcast)
            ("triplet_margin_loss", half),
            ("binary_cross_entropy_with_logits", (half[0], rand(N, N, dtype="float16"))))],
        "nn_fp32": [(label, F, op, args, kw, f32, None) for label, op, args, kw in (
            ("avg_pool3d", "avg_pool3d", (randn(N, N, N, N, dtype="float16"),), {"kernel_size": (3, 3, 3),
                                                                                 "stride": (1, 1, 1)}),
            ("binary_cross_entropy", "binary_cross_entropy", (rand(N, N, dtype="float16"),
                                                              rand(N, N, dtype="float16")), {}),
            ("reflection_pad1d", "pad", (randn(N, N, N, dtype="float16"), (3, 3)), {"mode": "reflect"}),
            ("nll_loss", "nll_loss", (rand(N, N, dtype="float16"), T.zeros(N, dtype=long)), {}),
            ("nll_loss2d", "nll_loss", (rand(N, N, N, N, dtype="float16"), T.zeros(N, N, N, dtype=long)), {}),
            ("l1_loss", "l1_loss", half[:2], {}), ("smooth_l1_loss", "smooth_l1_loss", half[:2], {}),
            ("mse_loss", "mse_loss", half[:2], {}),
            ("multilabel_margin_loss", "multilabel_margin_loss", (half[0], T.ones(N, N, dtype=long)), {}),
            ("soft_margin_loss", "soft_margin_loss", (half[0], T.ones(N, N, dtype=long)), {}),
            ("multi_margin_loss", "multi_margin_loss", (half[0], T.ones(N, dtype=long)), {}),
            ("huber_loss", "huber_loss", half[:2], {}))],
        "torch_need_autocast_promote": [(op, T, op, ((randn(N, dtype="float16"), randn(N)),), {}, f32, None)
                                        for op in ("cat", "stack")],
    }


LISTS = ("torch_expect_builtin_promote", "methods_expect_builtin_promote", "torch_16", "nn_16", "torch_fp32",
         "nn_fp32", "torch_need_autocast_promote")


def cast(value, dtype):
    """test_autocast.py's helper: floating tensors to ``dtype``, through tuples and lists."""
    if hasattr(value, "is_floating_point"):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, (list, tuple)):
        return type(value)(cast(v, dtype) for v in value)
    return value


def same(T, first, second):
    if hasattr(first, "is_floating_point"):
        return first.dtype == second.dtype and T.equal(first, second)
    if isinstance(first, (list, tuple)):
        return all(same(T, f, s) for f, s in zip(first, second))
    return first == second


def run_autocast_outofplace(T, namespace, op, args, run_as_type, out_type=None, kwargs=None):
    """test_autocast.py's _run_autocast_outofplace with dtype=float16: the op by ``namespace`` and as a Tensor
    method (each where it is one) gives ``out_type`` inside the block, both the same, and the same to the bit as
    the op outside autocast on arguments cast to ``run_as_type``. Returns the result."""
    kwargs = kwargs or {}
    out_type = run_as_type if out_type is None else out_type
    assert not T.is_autocast_enabled("cpu")
    with T.autocast("cpu", dtype=T.float16):
        assert T.is_autocast_enabled("cpu")
        by_namespace = namespace is not None and hasattr(namespace, op)
        output = getattr(namespace, op)(*args, **kwargs) if by_namespace else None
        method = getattr(args[0], op)(*args[1:], **kwargs) if hasattr(T.Tensor, op) else None
        assert output is not None or method is not None, f"{op} is neither in {namespace} nor a Tensor method"
        for result in (output, method):
            assert result is None or result.dtype == out_type, f"{op}: {result.dtype}, not {out_type}"
        if output is not None and method is not None:
            assert type(output) is type(method) and same(T, output, method), f"{op}: function and method differ"
        result = output if output is not None else method
        with T.autocast("cpu", enabled=False):
            assert not T.is_autocast_enabled("cpu")
            if by_namespace:
                control = getattr(namespace, op)(*cast(args, run_as_type), **kwargs)
            else:
                control = getattr(args[0].to(run_as_type), op)(*cast(args[1:], run_as_type), **kwargs)
            assert type(result) is type(control) and same(T, result, control), f"{op}: not the control's result"
        assert T.is_autocast_enabled("cpu")
    assert not T.is_autocast_enabled("cpu")
    return result


@pytest.mark.parametrize("name", LISTS)
def test_autocast_list(T, name):
    for _, namespace, op, args, kwargs, run_as_type, out_type in autocast_lists(modules(T))[name]:
        run_autocast_outofplace(T, namespace, op, args, run_as_type, out_type, kwargs)


def list_results(m, name):
    return {label: run_autocast_outofplace(m.torch, namespace, op, args, run_as_type, out_type, kwargs)
            for label, namespace, op, args, kwargs, run_as_type, out_type in autocast_lists(m)[name]}


@pytest.mark.torch
@pytest.mark.parametrize("name", LISTS)
def test_autocast_list_values_as_pytorch(name):
    """The values, to float16's rounding of the products (a sum of 8⁴ products rounds to 1/32 near 50)."""
    pytest.importorskip("torch")
    ours, theirs = run_both(list_results, name, compare=False, own_float16_kernels=True)
    for label in ours:
        # conv_transpose3d adds its columns' overlaps in float16 in PyTorch's own kernel (0.9 from the exact
        # result's 210 here; oneDNN's: 0.06) and in chainrule's (0.3): compared to a part in 200 of its size
        tolerance = 5e-3 * np.abs(theirs[label]).max() if label == "conv_transpose3d" else 2e-3
        np.testing.assert_allclose(np.asarray(ours[label], np.float64), np.asarray(theirs[label], np.float64),
                                   rtol=2e-3, atol=tolerance, err_msg=label)


def test_bfloat16_halves_of_the_lists_are_refused_in_words():
    """PyTorch's lists' bfloat16 inputs, and its bfloat16 autocast (its CPU default), cannot be made here."""
    import autograd
    import nn

    with pytest.raises(TypeError, match="bfloat16 is not built here: NumPy has no bfloat16 type"):
        autograd.randn(N, dtype=autograd.bfloat16)
    with pytest.raises(TypeError, match="bfloat16 is not built here"):
        nn.LSTM(1, 1, 2).to(autograd.bfloat16)  # (test_autocast_rnn's model)
    for block in (lambda: autograd.autocast("cpu", dtype=autograd.bfloat16),
                  lambda: autograd.amp.autocast(device_type="cpu", dtype=autograd.bfloat16)):
        with pytest.raises(NotImplementedError, match="bfloat16 is not built here"):
            block()
    assert not autograd.is_autocast_enabled("cpu")


# ---------------------------------------------------------------------------------------------------------------
# TestAutocastCPU's other cases
# ---------------------------------------------------------------------------------------------------------------


def test_autocast_rnn_refuses_another_dtype_outside_autocast(T):
    """test_autocast_rnn: a half-precision LSTM refuses a float32 input outside autocast. (Inside, PyTorch runs
    it through oneDNN's float16 LSTM, which only processors with AVX512-FP16 have: its error elsewhere.)"""
    m = modules(T)
    x, hx, cx = T.randn(1, 2, 1), T.randn(2, 2, 1), T.randn(2, 2, 1)
    lstm = m.nn.LSTM(1, 1, 2).to(T.float16)
    with pytest.raises(ValueError, match=r"RNN input dtype \((torch\.)?float32\) does not match weight dtype"):
        lstm(x, (hx, cx))


def test_generic_autocast(T):
    """torch.amp.autocast and torch.autocast are one block: the same results, to the bit."""
    for _, namespace, op, args, kwargs, _, _ in autocast_lists(modules(T))["torch_16"]:
        with T.amp.autocast(device_type="cpu", dtype=T.float16):
            generic = getattr(namespace, op)(*args, **kwargs)
        with T.autocast("cpu", dtype=T.float16):
            cpu = getattr(namespace, op)(*args, **kwargs)
        assert generic.dtype == cpu.dtype == T.float16 and T.equal(generic, cpu), op


def test_generic_autocast_without_a_dtype_lowers_to_float16_here():
    """PyTorch's CPU default is bfloat16; chainrule's is float16 (NumPy has no bfloat16)."""
    import autograd

    a, b = autograd.randn(N, N), autograd.randn(N, N)
    with autograd.amp.autocast(device_type="cpu"):
        assert autograd.get_autocast_dtype("cpu") == autograd.float16
        out = autograd.mm(a, b)
    np.testing.assert_array_equal(out.numpy(), autograd.mm(a.half(), b.half()).numpy())


def test_cpu_autocast_deprecated_warning(T):
    with pytest.warns(FutureWarning, match=r"`\w+\.cpu\.amp\.autocast\(args\.\.\.\)` is deprecated\. Please use "
                                           r"`\w+\.amp\.autocast\('cpu', args\.\.\.\)` instead\."):
        block = T.cpu.amp.autocast(dtype=T.float16)
    with block:
        assert T.is_autocast_enabled("cpu") and (T.ones(2, 2) @ T.ones(2, 2)).dtype == T.float16
    assert not T.is_autocast_enabled("cpu")


# ---------------------------------------------------------------------------------------------------------------
# TestAutocastGPU.test_cast_cache_is_global, on the CPU; TestTorchAutocast
# ---------------------------------------------------------------------------------------------------------------


def counting_casts(T, weight, monkeypatch):
    """A context counting the casts of ``weight`` to float16 (PyTorch's test counts aten._to_copy in a
    TorchDispatchMode; chainrule's casts are Tensor.to calls)."""
    if T.__name__ == "torch":
        from torch.utils._python_dispatch import TorchDispatchMode

        class CastCounter(TorchDispatchMode):
            count = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func is T.ops.aten._to_copy.default and args[0] is weight and kwargs.get("dtype") is T.float16:
                    self.count += 1
                return func(*args, **kwargs)

        return CastCounter()

    class Counter:
        count = 0

        def __enter__(self):
            to = type(weight).to

            def counted(tensor, *args, **kwargs):
                if tensor is weight and T.float16 in (*args, kwargs.get("dtype")):
                    self.count += 1
                return to(tensor, *args, **kwargs)

            monkeypatch.setattr(type(weight), "to", counted)
            return self

        def __exit__(self, *exc_info):
            monkeypatch.undo()

    return Counter()


def custom_linear(T):
    class CustomLinear(T.autograd.Function):
        @staticmethod
        def forward(ctx, x, w_t):
            ctx.save_for_backward(x, w_t)
            return modules(T).F.linear(x, w_t)

        @staticmethod
        def backward(ctx, grad_output):
            x, w_t = ctx.saved_tensors
            with T.autocast(device_type="cpu", dtype=T.float16):
                dx = T.matmul(grad_output, w_t)
                dw = T.matmul(x.transpose(0, 1), grad_output).transpose(0, 1)
            return dx, dw

    return CustomLinear


def linear_data(T):
    data = T.tensor(np.arange(6, dtype=np.float32).reshape(2, 3) / 4)
    weight = modules(T).nn.Parameter(T.tensor(np.arange(12, dtype=np.float32).reshape(4, 3) / 8 - 0.5))
    return data, weight


def keep_the_cache(T, monkeypatch):
    """The test's mock: the outermost block's end clears nothing (the name it calls, replaced)."""
    monkeypatch.setattr(T if T.__name__ == "torch" else T.amp, "clear_autocast_cache", lambda: None)


@pytest.mark.parametrize("cache_kept", [True, False])
def test_cast_cache_is_global(T, monkeypatch, cache_kept):
    """A weight cast in one block is taken from the cache by the next while the cache is kept (the test stops the
    outermost block's end from clearing it): cast once, else once per block."""
    data, weight = linear_data(T)
    F = modules(T).F
    if cache_kept:
        keep_the_cache(T, monkeypatch)
    try:
        with counting_casts(T, weight, monkeypatch) as counter:
            with T.autocast(device_type="cpu", dtype=T.float16):
                first = F.linear(data, weight)
            with T.autocast(device_type="cpu", dtype=T.float16):
                second = F.linear(data, weight)
    finally:
        monkeypatch.undo()
        T.clear_autocast_cache()
    assert counter.count == (1 if cache_kept else 2)
    assert first.dtype == second.dtype == T.float16 and T.equal(first, second)
    np.testing.assert_array_equal(first.detach().numpy(), (data.half() @ weight.detach().half().t()).numpy())


@pytest.mark.parametrize("cache_kept", [True, False])
def test_cast_cache_is_global_through_backward(T, monkeypatch, cache_kept):
    """TestAutocastGPU's form: the second block is opened by a custom Function's backward (the program's code: the
    pass calls it with the mode machinery the program had, graph.as_program_code)."""
    data, weight = linear_data(T)
    if cache_kept:
        keep_the_cache(T, monkeypatch)
    try:
        with counting_casts(T, weight, monkeypatch) as counter:
            with T.autocast(device_type="cpu", dtype=T.float16):
                output = custom_linear(T).apply(data, weight)
                total = output.sum()
            total.backward()
    finally:
        monkeypatch.undo()
        T.clear_autocast_cache()
    assert counter.count == (1 if cache_kept else 2)
    assert output.dtype == T.float16 and weight.grad.dtype == T.float32
    expected = (data.numpy().T @ np.ones((2, 4), np.float32)).T  # dL/dW = 1ᵀ x, exact in float16
    np.testing.assert_array_equal(weight.grad.numpy(), expected)


def test_invalid_device(T):
    with pytest.raises(RuntimeError, match="not a real device"):
        with T.autocast(device_type="not a real device"):
            T.tensor(1)
    with pytest.raises(RuntimeError, match="not a real device"):
        T.amp.is_autocast_available(device_type="not a real device")
    assert T.amp.is_autocast_available(device_type="cpu")


# ---------------------------------------------------------------------------------------------------------------
# The functions PyTorch builds from listed ops: their dtypes are those of the listed ops inside
# ---------------------------------------------------------------------------------------------------------------


def composite_results(m):
    """{case: result inside a CPU float16 autocast block}, float32 inputs (float16 where said)."""
    T, nn, F = m.torch, m.nn, m.F
    rng = np.random.default_rng(1)

    def randn(*shape):
        return T.tensor(rng.standard_normal(shape).astype(np.float32))

    T.manual_seed(0)
    a, theta, series = randn(4, 4) / 2, randn(1, 2, 3), randn(1, 4, 3)
    volume = randn(1, 4, 3, 3)
    rnn, relu_rnn = nn.RNN(3, 2, num_layers=2, bidirectional=True), nn.RNN(3, 2, nonlinearity="relu", bias=False)
    cell, relu_cell, gru, gru_cell, lstm_cell = (nn.RNNCell(3, 2), nn.RNNCell(3, 2, nonlinearity="relu"),
                                                 nn.GRU(3, 2), nn.GRUCell(3, 2), nn.LSTMCell(3, 2))
    lstm = nn.LSTM(3, 2)
    steps, packed = randn(4, 2, 3), nn.utils.rnn.pack_sequence([randn(4, 3), randn(2, 3)])
    cases = {
        "cov": lambda: T.cov(randn(3, 5)), "corrcoef": lambda: T.corrcoef(randn(3, 5)),
        "affine_grid": lambda: F.affine_grid(theta, (1, 1, 3, 4), align_corners=False),
        **{f"matrix_power {n}": (lambda n=n: T.linalg.matrix_power(a, n)) for n in (0, 1, 2, 3)},
        "Tensor.matrix_power 2": lambda: a.matrix_power(2),
        "local_response_norm 3-d": lambda: F.local_response_norm(series, 2),
        "local_response_norm 3-d float16": lambda: F.local_response_norm(series.half(), 2),
        "local_response_norm 4-d": lambda: F.local_response_norm(volume, 2),
        "local_response_norm 4-d float16": lambda: F.local_response_norm(volume.half(), 2),
        "RNN": lambda: rnn(steps), "RNN relu without bias": lambda: relu_rnn(steps),
        "RNN packed": lambda: rnn(packed)[0].data, "RNNCell": lambda: cell(steps[0]),
        "RNNCell relu": lambda: relu_cell(steps[0], T.zeros(2, 2)), "GRU": lambda: gru(steps),
        "GRUCell": lambda: gru_cell(steps[0]), "LSTMCell": lambda: lstm_cell(steps[0]),
        "GRU float16": lambda: gru(steps.half()), "LSTM float16": lambda: lstm(steps.half()),
        "GRU packed float16": lambda: gru(nn.utils.rnn.pack_sequence([steps[:, 0].half(),
                                                                       steps[:2, 1].half()]))[0].data,
        "GRUCell float16": lambda: gru_cell(steps[0].half()), "LSTMCell float16": lambda: lstm_cell(steps[0].half()),
        "GRUCell float16, float32 state": lambda: gru_cell(steps[0].half(), T.zeros(2, 2)),
        "LSTMCell float16, float32 states": lambda: lstm_cell(steps[0].half(), (T.zeros(2, 2), T.zeros(2, 2))),
        "lstm_cell float16": lambda: T.lstm_cell(steps[0].half(), (T.zeros(2, 2).half(),) * 2,
                                                 *lstm_cell.parameters()),
    }
    results = {}
    with T.autocast("cpu", dtype=T.float16):
        for name, make in cases.items():
            results[name] = make()
    return results


FLOAT16 = {"cov", "corrcoef", "affine_grid", "matrix_power 2", "matrix_power 3", "Tensor.matrix_power 2",
           "local_response_norm 3-d float16", "RNN", "RNN relu without bias", "RNN packed", "RNNCell",
           "RNNCell relu", "GRU float16", "LSTM float16", "GRU packed float16",
           "GRUCell float16", "LSTMCell float16", "lstm_cell float16"}


def dtypes(value, T):
    """The dtypes of a result's tensors (through tuples), in order, by name."""
    if isinstance(value, (tuple, list)):
        return [d for v in value for d in dtypes(v, T)]
    return [str(value.dtype).removeprefix("torch.")]


def test_composites_take_the_dtypes_of_the_listed_ops_inside(T):
    """cov and corrcoef (a product), affine_grid (bmm), matrix_power for n ≥ 2 (products; n = 0, 1 a copy),
    nn.RNN and nn.RNNCell (linear) in float16; local_response_norm beyond 3 dimensions in float32 (avg_pool3d),
    in its input's dtype at 3 (avg_pool2d). The LSTM, the GRU and their cells lower their products too, but a
    float32 input or state promotes their gates back: float16 only where input and states are."""
    for name, result in composite_results(modules(T)).items():
        expected = "float16" if name in FLOAT16 else "float32"
        got = dtypes(result, T)
        assert got and all(d == expected for d in got), (name, got)


@pytest.mark.torch
def test_composites_values_as_pytorch():
    """Values to float16's precision (PyTorch rounds some steps inside to float16 that chainrule does not:
    local_response_norm's squares of a float16 input; an RNN's sums of two products)."""
    pytest.importorskip("torch")
    run_both(composite_results, rtol=1e-2, atol=5e-3)


def test_recurrent_gradients_reach_float32_weights(T):
    """The weights' casts are ops of the graph: a float16 RNN's float32 weights get float32 gradients, each cast
    once per block (PyTorch's cache), and the block's cache is empty after it."""
    m = modules(T)
    T.manual_seed(0)
    rnn, cell = m.nn.RNN(3, 2), m.nn.RNNCell(3, 2)
    x = T.ones(4, 2, 3)
    with T.autocast("cpu", dtype=T.float16):
        out, h = rnn(x)
        step = cell(x[0], h[0])
        step = cell(x[1], step)  # (the cell's weights taken from the cache the second time)
    (out.float().sum() + step.float().sum()).backward()
    for p in (*rnn.parameters(), *cell.parameters()):
        assert p.grad.dtype == T.float32 and p.grad.abs().sum().item() > 0
    if T.__name__ == "autograd":
        assert not T.amp.cast_cache()


def test_margin_ranking_loss_broadcasts_its_target_as_atens(T):
    """torch.margin_ranking_loss (ATen's) broadcasts the three; nn.functional's checks their dimensions first."""
    a, b = T.tensor([[1.0, 2, 3], [0, 1, 5]]), T.tensor([[0.0, 3, 1], [2, 1, 1]])
    target = T.tensor([1.0, -1, 1])
    np.testing.assert_array_equal(T.margin_ranking_loss(a, b, target).numpy(), [[0.0, 0, 0], [2, 0, 0]])
    assert T.margin_ranking_loss(a, b, target, 0.5, 2).item() == 3.0
    with pytest.raises(RuntimeError, match="All input tensors should have same dimension"):
        modules(T).F.margin_ranking_loss(a, b, target)
