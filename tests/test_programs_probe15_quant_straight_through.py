# ruff: noqa: B007  (the programs are kept as their authors wrote them)
"""Model-compression programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights and data, comparing values, gradients and training trajectories (float32, about 1e-5). Quantization-aware
training with a straight-through estimator written by hand (``x + (q - x).detach()`` over ``torch.round``/``clamp``,
per-tensor symmetric int8); a binarized network (BinaryNet: ``sign`` with a clipped straight-through
``autograd.Function``, ``hardtanh``, weights clipped after each step); fake quantization with
``torch.fake_quantize_per_tensor_affine``/``per_channel_affine`` (values at rounding ties, the clamped-range mask in
the gradient); learned step-size quantization (LSQ) with ``torch._fake_quantize_learnable_per_tensor_affine`` and
``..._per_channel_affine`` (scale and zero point trained); QAT as a ``torch.nn.utils.parametrize`` parametrization of
each weight."""

import numpy as np

from .probe15_quant_common import classification_data, cnn, image_data, mlp
from .pytorch_programs import load, run_both, weights_of

# ----------------------------------------------------------------------------------------------
# QAT by hand: a straight-through estimator written as x + (q - x).detach()
# ----------------------------------------------------------------------------------------------


def ste_qat(m, weights, bits=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    def quantize_ste(x, bits):
        qmax = 2 ** (bits - 1) - 1
        scale = x.detach().abs().max().clamp(min=1e-8) / qmax
        q = torch.clamp(torch.round(x / scale), -qmax - 1, qmax) * scale
        return x + (q - x).detach()  # forward: q; backward: identity

    class QuantLinear(nn.Linear):
        def forward(self, x):
            return F.linear(quantize_ste(x, bits), quantize_ste(self.weight, bits), self.bias)

    model = nn.Sequential(QuantLinear(12, 16), nn.ReLU(), QuantLinear(16, 16), nn.ReLU(), QuantLinear(16, 4))
    load(m, model, weights)
    x, y = (torch.tensor(a) for a in classification_data())
    optimizer = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    losses = []
    for step in range(15):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grads = [p.grad for p in model.parameters()]
    return losses, grads, model.state_dict()


def test_straight_through_qat_by_hand():
    weights = weights_of(mlp)
    ours, theirs = run_both(ste_qat, weights, rtol=1e-4, atol=1e-5)
    losses = ours[0]
    assert losses[-1] < losses[0] * 0.5  # it learns through the rounding
    for bits in (2, 4):  # coarser grids: fewer levels, the same estimator
        run_both(ste_qat, weights, bits=bits, rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# BinaryNet: sign with a clipped straight-through estimator, hardtanh activations
# ----------------------------------------------------------------------------------------------


def binarized(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class BinarizeSTE(torch.autograd.Function):
        @staticmethod
        def forward(ctx, input):
            ctx.save_for_backward(input)
            return torch.where(input >= 0, torch.ones_like(input), -torch.ones_like(input))

        @staticmethod
        def backward(ctx, grad_output):
            (input,) = ctx.saved_tensors
            return grad_output * (input.abs() <= 1).to(grad_output.dtype)  # cancelled outside [-1, 1]

    class BinaryLinear(nn.Linear):
        def forward(self, input):
            return F.linear(input, BinarizeSTE.apply(self.weight), self.bias)

    class BinaryNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(12, 32, bias=False)  # (a bias before batch norm only cancels)
            self.bn1 = nn.BatchNorm1d(32)
            self.fc2 = BinaryLinear(32, 32, bias=False)
            self.bn2 = nn.BatchNorm1d(32)
            self.fc3 = nn.Linear(32, 4)

        def forward(self, x):
            x = F.hardtanh(self.bn1(self.fc1(x)))
            x = BinarizeSTE.apply(x)
            x = F.hardtanh(self.bn2(self.fc2(x)))
            return self.fc3(x)

    model = load(m, BinaryNet(), weights)
    x, y = (torch.tensor(a) for a in classification_data())
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for step in range(12):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        with torch.no_grad():
            model.fc2.weight.clamp_(-1, 1)  # keep the latent weights where the estimator passes gradient
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(x).argmax(1) == y).float().mean()
    return losses, accuracy, model.fc2.weight.sign(), model.state_dict()


def test_binarized_network():
    def make(m):
        class Shape(m.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = m.nn.Linear(12, 32, bias=False)
                self.bn1 = m.nn.BatchNorm1d(32)
                self.fc2 = m.nn.Linear(32, 32, bias=False)
                self.bn2 = m.nn.BatchNorm1d(32)
                self.fc3 = m.nn.Linear(32, 4)

        return Shape()

    ours, theirs = run_both(binarized, weights_of(make), rtol=1e-4, atol=1e-5)
    losses, accuracy = ours[0], ours[1]
    assert losses[-1] < losses[0] and accuracy > 0.5


# ----------------------------------------------------------------------------------------------
# torch.fake_quantize_per_tensor_affine / per_channel_affine inside a small CNN
# ----------------------------------------------------------------------------------------------


def fake_quant_cnn(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, cnn(m), weights)
    x, y = (torch.tensor(a) for a in image_data())

    def forward(model, x):
        for layer in model:
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                w = layer.weight
                # symmetric int8 per output channel, scales from each channel's largest |w|
                scale = (w.detach().abs().flatten(1).amax(1) / 127).clamp(min=1e-8).float()
                zero_point = torch.zeros(w.shape[0], dtype=torch.int32)
                wq = torch.fake_quantize_per_channel_affine(w, scale, zero_point, 0, -128, 127)
                x = F.conv2d(x, wq, layer.bias, padding=layer.padding) if isinstance(layer, nn.Conv2d) \
                    else F.linear(x, wq, layer.bias)
                # activations: uint8 per tensor over a fixed range, clamped beyond it
                x = torch.fake_quantize_per_tensor_affine(x, 0.05, 64, 0, 255)
            else:
                x = layer(x)
        return x

    optimizer = optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for step in range(8):
        optimizer.zero_grad()
        loss = F.cross_entropy(forward(model, x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    probe = torch.linspace(-4, 10, 57, requires_grad=True)  # across the clamped ends, with ties on the grid
    out = torch.fake_quantize_per_tensor_affine(probe, 0.25, 8, 0, 31)
    out.backward(torch.arange(57.0))
    return losses, [p.grad for p in model.parameters()], model.state_dict(), out, probe.grad


def test_fake_quantize_ops_in_training():
    ours, theirs = run_both(fake_quant_cnn, weights_of(cnn), rtol=1e-4, atol=1e-5)
    out, probe_grad = ours[3], ours[4]
    probe = np.linspace(-4, 10, 57, dtype=np.float32)
    inside = (np.rint(probe / 0.25) + 8 >= 0) & (np.rint(probe / 0.25) + 8 <= 31)
    np.testing.assert_array_equal(probe_grad, np.arange(57.0) * inside)
    assert out.min() == -2.0 and out.max() == 5.75


# ----------------------------------------------------------------------------------------------
# LSQ: learned step sizes through the learnable fake-quantize ops
# ----------------------------------------------------------------------------------------------


def lsq(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim

    class LSQLinear(nn.Linear):
        def __init__(self, in_features, out_features, bits=4):
            super().__init__(in_features, out_features)
            self.qmin, self.qmax = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
            self.w_scale = nn.Parameter(torch.full((out_features,), 0.05))
            self.w_zero_point = nn.Parameter(torch.zeros(out_features))
            self.a_scale = nn.Parameter(torch.tensor([0.1]))
            self.a_zero_point = nn.Parameter(torch.tensor([0.4]))

        def forward(self, x):
            grad_factor = 1.0 / (self.weight.numel() * self.qmax) ** 0.5
            w = torch._fake_quantize_learnable_per_channel_affine(
                self.weight, self.w_scale, self.w_zero_point, 0, self.qmin, self.qmax, grad_factor)
            x = torch._fake_quantize_learnable_per_tensor_affine(x, self.a_scale, self.a_zero_point, 0, 15, 1.0)
            return F.linear(x, w, self.bias)

    torch.manual_seed(0)
    model = nn.Sequential(LSQLinear(12, 16), nn.ReLU(), LSQLinear(16, 4))
    model.load_state_dict({k: torch.tensor(v) for k, v in weights.items()}, strict=False)
    x, y = (torch.tensor(a) for a in classification_data())
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    losses = []
    for step in range(6):  # (longer, float32's summation order flips a rounding somewhere: the runs part)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses, model.state_dict(), [p.grad for p in model.parameters()]


def test_learned_step_size_quantization():
    def shape(m):
        return m.nn.Sequential(m.nn.Linear(12, 16), m.nn.ReLU(), m.nn.Linear(16, 4))

    ours, theirs = run_both(lsq, weights_of(shape), rtol=1e-4, atol=1e-5)
    state = ours[1]
    assert not np.allclose(state["0.w_scale"], 0.05) and not np.allclose(state["0.a_scale"], 0.1)  # learnt


# ----------------------------------------------------------------------------------------------
# QAT through torch.nn.utils.parametrize (a fake-quantize parametrization of each weight)
# ----------------------------------------------------------------------------------------------


def parametrized_qat(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    parametrize = nn.utils.parametrize

    class FakeQuant(nn.Module):
        def __init__(self, bits=4):
            super().__init__()
            self.qmax = 2 ** (bits - 1) - 1

        def forward(self, w):
            scale = w.detach().abs().amax(dim=1, keepdim=True) / self.qmax
            return w + (torch.round(w / scale).clamp(-self.qmax - 1, self.qmax) * scale - w).detach()

    model = load(m, mlp(m), weights)
    for layer in model:
        if isinstance(layer, nn.Linear):
            parametrize.register_parametrization(layer, "weight", FakeQuant())
    x, y = (torch.tensor(a) for a in classification_data())
    optimizer = optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01)
    losses = []
    for step in range(8):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    keys = sorted(model.state_dict().keys())
    for layer in model:
        if isinstance(layer, nn.Linear):
            parametrize.remove_parametrizations(layer, "weight", leave_parametrized=True)
    return losses, keys, model.state_dict()


def test_parametrized_qat():
    ours, theirs = run_both(parametrized_qat, weights_of(mlp), rtol=1e-4, atol=1e-5)
    losses, keys, state = ours
    assert "0.parametrizations.weight.original" in keys
    levels = state["2.weight"] / (np.abs(state["2.weight"]).max(1, keepdims=True) / 7)
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)  # left on the 4-bit grid
