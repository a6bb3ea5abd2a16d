"""CPU autocast to float16 (autograd/autocast_cpu.py), run on chainrule and on PyTorch (fixture ``T``) against the
same expectations: which ops run in float16, in float32 or promoted (PyTorch's CPU lists, as PyTorch 2.13 gives
them), the values of a model and of a GradScaler training loop against PyTorch's, gradients reaching float32
parameters in float32, nesting, the decorator, the thread-local state and the cache of weights' casts."""

import importlib
import threading

import numpy as np
import pytest


def nn_of(T):
    return importlib.import_module("nn") if T.__name__ == "autograd" else T.nn


def optim_of(T):
    return importlib.import_module("optim") if T.__name__ == "autograd" else T.optim


def dtype_cases(T):
    """{case: the result of the op inside a CPU float16 autocast block} on float32 inputs (float16 where said)."""
    nn = nn_of(T)
    F = nn.functional
    T.manual_seed(0)
    rng = np.random.default_rng(0)
    x = T.tensor(rng.standard_normal((2, 5, 4)).astype(np.float32))
    a = T.tensor(rng.standard_normal((3, 4)).astype(np.float32))
    b = T.tensor(rng.standard_normal((4, 5)).astype(np.float32))
    v = a[0]
    y = nn.Linear(4, 3)(x)  # float16
    return {
        "linear": lambda: y, "relu": lambda: F.relu(y), "softmax": lambda: y.softmax(-1),
        "layer_norm": lambda: F.layer_norm(y, (3,)), "add of float16 and float32": lambda: y + x[..., :3],
        "cat": lambda: T.cat([y, x[..., :3]]), "stack": lambda: T.stack([y, x[..., :3]]),
        "cross_entropy": lambda: F.cross_entropy(y.reshape(-1, 3), T.zeros(10, dtype=T.long)),
        "mse_loss": lambda: F.mse_loss(y, T.zeros_like(y)), "sum": lambda: y.sum(), "exp": lambda: y.exp(),
        "bmm": lambda: T.bmm(x, x.transpose(1, 2)), "einsum": lambda: T.einsum("ij,jk->ik", a, b),
        "tensordot": lambda: T.tensordot(a, b, 1), "inner": lambda: T.inner(a, a), "mv": lambda: T.mv(a, v),
        "dot": lambda: T.dot(v, v), "outer": lambda: T.outer(v, v), "kron": lambda: T.kron(a, a),
        "bilinear": lambda: F.bilinear(a, a, T.ones(2, 4, 4)), "vector @ vector": lambda: v @ v,
        "matrix @ vector": lambda: a @ v, "Tensor.mm": lambda: a.mm(b), "conv1d": lambda: F.conv1d(x, T.ones(2, 5, 3)),
        "conv_transpose1d": lambda: F.conv_transpose1d(x, T.ones(5, 2, 3)),
        "prelu": lambda: F.prelu(a, T.tensor([0.25])), "sdpa": lambda: F.scaled_dot_product_attention(x, x, x),
        "prod": lambda: y.prod(), "cdist": lambda: T.cdist(a, a),
        "MultiheadAttention": lambda: nn.MultiheadAttention(4, 2, batch_first=True)(x, x, x)[0],
        "GRU": lambda: nn.GRU(4, 3)(x)[0], "LSTMCell": lambda: nn.LSTMCell(4, 3)(x[0])[0],
        "Embedding": lambda: nn.Embedding(5, 4)(T.tensor([1])), "BatchNorm1d": lambda: nn.BatchNorm1d(5)(y),
        "pad reflect": lambda: F.pad(y, (1, 1), mode="reflect"), "pad constant": lambda: F.pad(y, (1, 1)),
        "index_copy": lambda: y[0].index_copy(0, T.tensor([0]), x[0, :1, :3]),
        "cosine_similarity": lambda: F.cosine_similarity(a, a),
        "interpolate": lambda: F.interpolate(y, scale_factor=2.0),
        "where": lambda: T.where(y > 0, y, x[..., :3]),
        "float64 linear": lambda: F.linear(T.ones(2, 4, dtype=T.float64), T.ones(3, 4, dtype=T.float64)),
        "int64 matmul": lambda: T.ones(2, 2, dtype=T.int64) @ T.ones(2, 2, dtype=T.int64),
    }


FLOAT16 = {"linear", "relu", "softmax", "layer_norm", "bmm", "einsum", "tensordot", "inner", "vector @ vector",
           "matrix @ vector", "Tensor.mm", "conv1d", "conv_transpose1d", "prelu", "sdpa", "MultiheadAttention",
           "BatchNorm1d", "pad constant", "interpolate", "sum", "exp"}
FLOAT64 = {"float64 linear"}
INT64 = {"int64 matmul"}


def test_the_cpu_lists_as_pytorch(T):
    """Products and convolutions (and what PyTorch builds from them: einsum, an attention) in float16; losses,
    prod, cdist, reflection padding in float32; cat, stack, index_copy at the widest; everything else in its
    inputs' dtypes (relu and softmax of float16 stay float16; mv, dot, outer and bilinear are PyTorch's own
    kernels, which it does not lower; GRU and LSTMCell lower their products, but their float32 states promote
    the result back to float32); float64 and integer products as they are."""
    with T.autocast("cpu", dtype=T.float16):
        cases = dtype_cases(T)
        got = {name: make().dtype for name, make in cases.items()}
    for name, dtype in got.items():
        expected = T.float16 if name in FLOAT16 else T.float64 if name in FLOAT64 else T.int64 if name in INT64 \
            else T.float32
        assert dtype == expected, name


def model_and_data(T, seed=0):
    rng = np.random.default_rng(seed)
    nn = nn_of(T)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    with T.no_grad():
        for p in model.parameters():
            p.copy_(T.tensor(rng.uniform(-0.5, 0.5, tuple(p.shape)).astype(np.float32)))
    x = T.tensor(rng.standard_normal((16, 6)).astype(np.float32))
    y = T.tensor(rng.integers(0, 3, 16))
    return model, x, y


def step_values(T):
    model, x, y = model_and_data(T)
    with T.autocast("cpu", dtype=T.float16):
        logits = model(x)
        loss = nn_of(T).functional.cross_entropy(logits, y)
    loss.backward()
    assert logits.dtype == T.float16 and loss.dtype == T.float32
    assert all(p.grad.dtype == T.float32 for p in model.parameters())
    return logits.float().detach().numpy(), loss.item(), [p.grad.numpy() for p in model.parameters()]


def scaler_losses(T, steps=6):
    model, x, y = model_and_data(T, seed=1)
    optimizer = optim_of(T).SGD(model.parameters(), lr=0.5)
    scaler = T.amp.GradScaler("cpu", init_scale=2.0**10)
    losses = []
    for _ in range(steps):
        optimizer.zero_grad()
        with T.autocast("cpu", dtype=T.float16):
            loss = nn_of(T).functional.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    return losses, scaler.get_scale()


@pytest.mark.torch
def test_values_as_pytorch():
    import autograd

    torch = pytest.importorskip("torch")
    ours, theirs = step_values(autograd), step_values(torch)
    np.testing.assert_allclose(ours[0], theirs[0], rtol=2e-3, atol=2e-3)  # (float16 products: its precision)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-3)
    for mine, their in zip(ours[2], theirs[2]):
        np.testing.assert_allclose(mine, their, rtol=5e-3, atol=2e-3)
    (our_losses, our_scale), (their_losses, their_scale) = scaler_losses(autograd), scaler_losses(torch)
    np.testing.assert_allclose(our_losses, their_losses, rtol=3e-3)
    assert our_scale == their_scale


def test_a_gradscaler_loop_trains(T):
    losses, scale = scaler_losses(T, steps=8)
    assert losses[-1] < 0.8 * losses[0] and scale == 2.0**10


def test_nesting_and_the_decorator(T):
    lin = nn_of(T).Linear(4, 3)
    x = T.ones(2, 4)

    @T.autocast("cpu", dtype=T.float16)
    def lowered(inputs):
        return lin(inputs)

    with T.autocast("cpu", dtype=T.float16):
        assert lin(x).dtype == T.float16
        with T.autocast("cpu", enabled=False):
            assert lin(x).dtype == T.float32 and not T.is_autocast_enabled("cpu")
        assert lin(x).dtype == T.float16
        with T.autocast("cpu", dtype=T.float16):  # (nested: still one cast per op)
            out = lin(x)
            assert out.dtype == T.float16
    assert lin(x).dtype == T.float32 and lowered(x).dtype == T.float16 and lin(x).dtype == T.float32


def test_the_state_is_this_threads(T):
    lin = nn_of(T).Linear(4, 3)
    seen = []
    with T.autocast("cpu", dtype=T.float16):
        worker = threading.Thread(target=lambda: seen.append(lin(T.ones(2, 4)).dtype))
        worker.start()
        worker.join()
        assert lin(T.ones(2, 4)).dtype == T.float16
    assert seen == [T.float32]


def test_a_float64_operand_meets_a_float16_one(T):
    """PyTorch leaves float64 alone and lowers float32: their product refuses, as outside autocast."""
    with T.autocast("cpu", dtype=T.float16), pytest.raises(RuntimeError, match="same dtype"):
        T.ones(2, 2, dtype=T.float64) @ T.ones(2, 2)


def test_weights_are_cast_once_per_block():
    import autograd
    import nn

    lin = nn.Linear(4, 3)
    with autograd.autocast("cpu", dtype=autograd.float16):
        first, second = lin(autograd.ones(2, 4)), lin(autograd.ones(1, 4))
        cached = dict(autograd.amp.cast_cache())
        assert {id(lin.weight), id(lin.bias)} == set(cached)
        assert cached[id(lin.weight)][1].dtype == autograd.float16
        with autograd.autocast("cpu", dtype=autograd.float16, cache_enabled=False):
            lin(autograd.ones(1, 4))
        assert autograd.amp.cast_cache().keys() == cached.keys()
    assert not autograd.amp.cast_cache()  # (cleared as the outermost block ends)
    (first.float().sum() + second.float().sum()).backward()
    np.testing.assert_allclose(lin.weight.grad.numpy(), np.full((3, 4), 3.0))  # both uses reach the weight
    assert lin.weight.grad.dtype == autograd.float32


def test_bfloat16_is_refused_in_words():
    import autograd

    with pytest.raises(NotImplementedError, match="bfloat16 is not built here"):
        with autograd.autocast("cpu", dtype=autograd.bfloat16):
            pass
    assert not autograd.is_autocast_enabled("cpu")
