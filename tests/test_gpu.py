"""The CuPy backend on a real GPU (``CHAINRULE_ARRAY_MODULE=cupy``): training steps whose values
and gradients are checked against NumPy by hand in float64.

Every test here skips cleanly without CUDA (CI has no GPU); the rest of the suite runs under the
CuPy backend too, where these tests add what only a GPU shows: that tensors are on it, and that
results come back to NumPy right.
"""

import numpy as np
import pytest

import autograd
import nn
import optim

pytestmark = pytest.mark.skipif(not autograd.cuda.is_available(),
                                reason="needs a GPU: run with CHAINRULE_ARRAY_MODULE=cupy where CuPy sees one")


def mlp_by_hand(x, target, w1, b1, w2, b2):
    """Linear-ReLU-Linear with a mean squared error, forward and backward in float64 NumPy."""
    h = x @ w1.T + b1
    r = np.maximum(h, 0)
    y = r @ w2.T + b2
    loss = ((y - target) ** 2).mean()
    dy = 2 * (y - target) / y.size
    dw2, db2 = dy.T @ r, dy.sum(0)
    dh = (dy @ w2) * (h > 0)
    dw1, db1 = dh.T @ x, dh.sum(0)
    return loss, (dw1, db1, dw2, db2)


def test_tensors_live_on_the_gpu_and_come_back_to_numpy():
    x = autograd.arange(6.0, device="cuda").reshape(2, 3)
    assert x.device == "cuda:0" and x.is_cuda
    assert type(x._data).__module__.startswith("cupy")
    back = x.numpy()
    assert isinstance(back, np.ndarray) and back.tolist() == [[0, 1, 2], [3, 4, 5]]
    assert (x * 2).sum().item() == 30.0 and isinstance(x.sum().item(), float)
    assert autograd.cuda.device_count() >= 1 and autograd.cuda.get_device_name()


def test_mlp_step_matches_numpy_by_hand_in_float64():
    rng = np.random.default_rng(0)
    x, target = rng.standard_normal((32, 10)), rng.standard_normal((32, 3))
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3)).double().cuda()
    params = [p.detach().numpy().copy() for p in model.parameters()]
    loss = nn.functional.mse_loss(model(autograd.tensor(x, device="cuda")), autograd.tensor(target, device="cuda"))
    loss.backward()
    expected_loss, expected_grads = mlp_by_hand(x, target, *params)
    assert loss.item() == pytest.approx(expected_loss, rel=1e-12)
    for p, g in zip(model.parameters(), expected_grads):
        assert p.grad.device == "cuda:0"
        np.testing.assert_allclose(p.grad.numpy(), g, rtol=1e-10, atol=1e-12)


def test_adam_training_on_the_gpu_lowers_the_loss_as_numpy_by_hand_does():
    """Twenty Adam steps on the GPU, against the same steps in NumPy by hand (PyTorch's Adam rule)."""
    rng = np.random.default_rng(1)
    x, target = rng.standard_normal((64, 10)), rng.standard_normal((64, 3))
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Linear(16, 3)).double().to("cuda")
    params = [p.detach().numpy().copy() for p in model.parameters()]
    moments = [(np.zeros_like(p), np.zeros_like(p)) for p in params]
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    gx, gt = autograd.tensor(x, device="cuda"), autograd.tensor(target, device="cuda")
    losses, expected = [], []
    for step in range(1, 21):
        optimizer.zero_grad()
        loss = nn.functional.mse_loss(model(gx), gt)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        value, grads = mlp_by_hand(x, target, *params)
        expected.append(value)
        for i, (p, g) in enumerate(zip(params, grads)):
            m, v = moments[i]
            m[:] = 0.9 * m + 0.1 * g
            v[:] = 0.999 * v + 0.001 * g * g
            p -= 1e-2 * (m / (1 - 0.9 ** step)) / (np.sqrt(v / (1 - 0.999 ** step)) + 1e-8)
    np.testing.assert_allclose(losses, expected, rtol=1e-9)
    assert losses[-1] < 0.8 * losses[0]
    for p, q in zip(model.parameters(), params):
        np.testing.assert_allclose(p.detach().numpy(), q, rtol=1e-9, atol=1e-12)


def test_convolution_pooling_and_cross_entropy_pass_gradcheck_on_the_gpu():
    autograd.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1).double().cuda()
    x = autograd.randn(2, 2, 6, 6, dtype=autograd.float64, device="cuda", requires_grad=True)
    labels = autograd.tensor([1, 2], device="cuda")

    def loss(x, weight):
        scores = nn.functional.max_pool2d(nn.functional.conv2d(x, weight, conv.bias), 2).flatten(1)[:, :3]
        return nn.functional.cross_entropy(scores, labels)

    weight = conv.weight.detach().clone().requires_grad_(True)
    assert autograd.autograd.gradcheck(loss, (x, weight))


def test_save_and_load_round_trip_on_the_gpu(tmp_path):
    model = nn.Linear(4, 2).cuda()
    path = tmp_path / "model.pt"
    autograd.save(model.state_dict(), path)
    again = nn.Linear(4, 2).cuda()
    again.load_state_dict(autograd.load(path))
    for p, q in zip(model.parameters(), again.parameters()):
        assert q.device == "cuda:0"
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy())


def test_cpu_moves_a_tensor_to_host_memory_and_cuda_brings_it_back_with_its_gradient():
    x = autograd.tensor([1.0, -2.0, 3.0], device="cuda", requires_grad=True)
    host = (x * 2).cpu()
    assert host.device == "cpu" and host.is_cpu and not host.is_cuda and host.get_device() == -1
    assert isinstance(host._data, np.ndarray) and host.type() == "torch.FloatTensor"
    assert host.tolist() == [2.0, -4.0, 6.0] and repr(host.detach()) == "tensor([ 2., -4.,  6.])"
    assert host.to("cpu") is host
    back = host.to("cuda")
    assert back.device == "cuda:0" and type(back._data).__module__.startswith("cupy")
    (back * back).sum().backward()  # d/dx of (2x)² is 8x, through both moves
    np.testing.assert_allclose(x.grad.cpu().numpy(), [8.0, -16.0, 24.0])


def test_an_op_on_a_cpu_and_a_gpu_tensor_raises_naming_both_devices():
    gpu = autograd.ones(3, device="cuda")
    with pytest.raises(RuntimeError, match="same device.*cuda:0 and cpu"):
        gpu + gpu.cpu()


def test_a_pytorch_program_that_picks_its_device_trains_on_the_gpu_and_reads_back_on_the_cpu():
    device = "cuda" if autograd.cuda.is_available() else "cpu"
    autograd.manual_seed(0)
    x = autograd.randn(128, 2, device=device)
    y = (x[:, 0] * x[:, 1] > 0).long()  # quadrants: not linearly separable
    model = nn.Sequential(nn.Linear(2, 32), nn.Tanh(), nn.Linear(32, 2)).to(device)
    optimizer = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    predictions = model(x).argmax(1).cpu().numpy()
    assert isinstance(predictions, np.ndarray) and predictions.dtype == np.int64
    assert (predictions == y.cpu().numpy()).mean() > 0.9 and loss.item() < 0.3
