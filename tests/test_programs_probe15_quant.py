# ruff: noqa: B007, B008, B023, E741, E731, F841, N806, UP004, UP008, UP031  (the programs are kept as their authors wrote them)
"""Model-compression programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the
same weights and data, comparing values, gradients and training trajectories (float32, about 1e-5).

Quantization-aware training with a straight-through estimator written by hand (``x + (q - x).detach()`` over
``torch.round``/``clamp``, per-tensor symmetric int8); a binarized network (BinaryNet: ``sign`` with a clipped
straight-through ``autograd.Function``, ``hardtanh``, weights clipped after each step); fake quantization with
``torch.fake_quantize_per_tensor_affine``/``per_channel_affine`` (values at rounding ties, the clamped-range
mask in the gradient); learned step-size quantization (LSQ) with
``torch._fake_quantize_learnable_per_tensor_affine`` and ``..._per_channel_affine`` (scale and zero point
trained); eager-mode QAT with ``torch.ao.quantization`` (QuantStub/DeQuantStub, ``get_default_qat_qconfig``,
``prepare_qat``, the fused ``FusedMovingAvgObsFakeQuantize`` of the default qconfig, observers frozen by
``model.apply(disable_observer)``, the state dict's scales); observers on their own (MinMax, MovingAverage,
PerChannel); int8 matmul emulation (``round``/``clamp``/ ``to(torch.int8)``, int32 accumulation,
dequantization); magnitude pruning with ``torch.nn.utils.prune`` (``l1_unstructured``, ``ln_structured``,
``global_unstructured``, fine-tuning through ``weight_orig`` and ``weight_mask``, ``remove``); knowledge
distillation (``F.kl_div`` of temperature-softened log-probabilities with ``log_target=True``,
``reduction='batchmean'``, times T²); and low-rank factorisation of a trained layer by ``torch.linalg.svd`` into
two layers, fine-tuned. Then: random pruning from a seed (``random_unstructured`` twice, ``random_structured``);
QAT as a ``torch.nn.utils.parametrize`` parametrization of each weight; Deep Compression's weight sharing
(k-means by ``cdist``/``index_add_``/``bincount``, centroids trained through indexing, ``bucketize``); and
feature distillation (forward hooks, attention transfer, ``cosine_embedding_loss``)."""

import io
import warnings

import numpy as np
import pytest

from .pytorch_programs import load, run_both, weights_of

try:
    import torch.nn.utils.prune  # noqa: F401  (PyTorch's is a submodule to import; chainrule's loads on first use)
except ImportError:
    pass


def classification_data(n=64, features=12, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((classes, features)).astype(np.float32) * 1.5
    labels = rng.integers(0, classes, n)
    x = centers[labels] + 0.7 * rng.standard_normal((n, features)).astype(np.float32)
    return x.astype(np.float32), labels


def image_data(n=16, channels=2, side=6, classes=3, seed=1):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    x = rng.standard_normal((n, channels, side, side)).astype(np.float32) + labels[:, None, None, None] * 0.5
    return x.astype(np.float32), labels


# ----------------------------------------------------------------------------------------------
# QAT by hand: a straight-through estimator written as x + (q - x).detach()
# ----------------------------------------------------------------------------------------------


def mlp(m, features=12, hidden=16, classes=4):
    nn = m.nn
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))


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


def cnn(m):
    nn = m.nn
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(64, 3))


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
# eager-mode QAT with torch.ao.quantization
# ----------------------------------------------------------------------------------------------


def qat_model(m):
    nn, tq = m.nn, m.torch.ao.quantization

    class QATNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = tq.QuantStub()
            self.conv = nn.Conv2d(2, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.relu = nn.ReLU()
            self.fc = nn.Linear(64, 3)
            self.dequant = tq.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            x = self.relu(self.bn(self.conv(x)))
            x = self.fc(x.flatten(1))
            return self.dequant(x)

    return QATNet()


def eager_qat(m, weights, qconfig_name, fuse=False):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    tq = torch.ao.quantization
    model = load(m, qat_model(m), weights)
    if fuse:  # the QAT tutorial's: conv, bn and relu as one, the norm folded into the quantized weight
        model = tq.fuse_modules_qat(model.train(), [["conv", "bn", "relu"]])
    model.qconfig = {"x86": tq.get_default_qat_qconfig("x86", version=0),  # FakeQuantize modules
                     "x86_fused": tq.get_default_qat_qconfig("x86"),  # the tutorial's: fused observe + quantize
                     "default": tq.default_qat_qconfig}[qconfig_name]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reduce_range's deprecation
        model = tq.prepare_qat(model.train())
    x, y = (torch.tensor(a) for a in image_data())
    optimizer = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for epoch in range(8):
        if epoch == 5:
            model.apply(tq.disable_observer)  # freeze the scales
        if epoch == 6 and fuse:
            model.apply(torch.ao.nn.intrinsic.qat.freeze_bn_stats)  # and the batch norm's statistics
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        logits = model(x)
    # the trained model saved and loaded into a freshly prepared one (per-channel scales resized on loading)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = qat_model(m)
    if fuse:
        fresh = tq.fuse_modules_qat(fresh.train(), [["conv", "bn", "relu"]])
    fresh.qconfig = model.qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fresh = tq.prepare_qat(fresh.train())
    fresh.load_state_dict(torch.load(buffer))
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), logits)
    kinds = sorted((name, type(module).__name__) for name, module in model.named_modules()
                   if "fake_quant" in name or "post_process" in name)
    return losses, logits, model.state_dict(), kinds, type(model.fc).__name__


@pytest.mark.parametrize(("qconfig_name", "fuse"), [("x86", False), ("x86_fused", False), ("default", False),
                                                   ("x86_fused", True), ("default", True)])
def test_eager_mode_qat(qconfig_name, fuse):
    ours, theirs = run_both(eager_qat, weights_of(qat_model), qconfig_name, fuse, rtol=1e-4, atol=1e-5)
    losses, state, kinds = ours[0], ours[2], ours[3]
    assert losses[-1] < losses[0]
    kind = "FusedMovingAvgObsFakeQuantize" if qconfig_name == "x86_fused" else "FakeQuantize"
    assert ("fc.weight_fake_quant", kind) in kinds and ("quant.activation_post_process", kind) in kinds
    assert not any(name.startswith("dequant") or name.startswith("relu") for name, _ in kinds)
    assert state["fc.weight_fake_quant.observer_enabled"].tolist() == [0]
    if qconfig_name != "default":  # per-channel weights: one scale per output channel, symmetric (zero point 0)
        assert state["conv.weight_fake_quant.scale"].shape == (4,)
        assert (state["conv.weight_fake_quant.zero_point"] == 0).all()
    if fuse:  # the norm lives inside the fused conv; only the fused output is observed
        assert "conv.bn.running_var" in state and not any(name.startswith("bn.") for name, _ in kinds)


def observers(m):
    torch = m.torch
    tq = torch.ao.quantization
    rng = np.random.default_rng(3)
    batches = [torch.tensor(rng.standard_normal((8, 3)).astype(np.float32) * (1 + i) + i) for i in range(5)]
    made = {
        "minmax": tq.MinMaxObserver(),
        "symmetric": tq.MinMaxObserver(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric),
        "moving": tq.MovingAverageMinMaxObserver(averaging_constant=0.2),
        "per_channel": tq.PerChannelMinMaxObserver(ch_axis=1, dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
        "moving_per_channel": tq.MovingAveragePerChannelMinMaxObserver(ch_axis=1, quant_min=0, quant_max=15),
    }
    out = {}
    for name, observer in made.items():
        for batch in batches:
            assert observer(batch) is batch
        scale, zero_point = observer.calculate_qparams()
        out[name] = (scale, zero_point, observer.min_val, observer.max_val)
    fq = tq.FakeQuantize.with_args(observer=tq.MinMaxObserver, quant_min=0, quant_max=255)()
    out["fake_quantized"] = fq(batches[-1])
    return out


def test_observers():
    ours, theirs = run_both(observers)
    scale, zero_point, low, high = ours["minmax"]
    rng = np.random.default_rng(3)
    batches = np.stack([rng.standard_normal((8, 3)).astype(np.float32) * (1 + i) + i for i in range(5)])
    assert low == batches.min() and high == batches.max()
    np.testing.assert_allclose(scale, (high - min(low, 0)) / 255, rtol=1e-6)
    sym_scale, sym_zero_point, sym_low, sym_high = ours["symmetric"]
    np.testing.assert_allclose(sym_scale, max(-sym_low, sym_high) / 127.5, rtol=1e-6)
    assert sym_zero_point.tolist() == [0]


# ----------------------------------------------------------------------------------------------
# int8 matmul emulation: quantize, multiply in int32, dequantize
# ----------------------------------------------------------------------------------------------


def int8_matmul(m):
    torch = m.torch
    rng = np.random.default_rng(4)
    a = torch.tensor(rng.standard_normal((6, 10)).astype(np.float32))
    b = torch.tensor(rng.standard_normal((10, 5)).astype(np.float32) * 0.3)

    def quantize(t, dim=None):
        amax = t.abs().amax() if dim is None else t.abs().amax(dim=dim, keepdim=True)
        scale = amax / 127.0
        q = torch.clamp(torch.round(t / scale), -128, 127).to(torch.int8)
        return q, scale

    qa, sa = quantize(a, dim=1)  # per row of a
    qb, sb = quantize(b, dim=0)  # per column of b
    acc = torch.matmul(qa.to(torch.int32), qb.to(torch.int32))  # int32 accumulation
    approx = acc.to(torch.float32) * sa * sb
    exact = a @ b
    return qa, qb, acc, approx, exact, (approx - exact).abs().max(), acc.dtype == torch.int32


def test_int8_matmul_emulation():
    ours, theirs = run_both(int8_matmul)
    qa, qb, acc, approx, exact, error, int32 = ours
    assert qa.dtype == np.int8 and int32
    np.testing.assert_array_equal(acc, qa.astype(np.int64) @ qb.astype(np.int64))
    assert error < 0.05 * np.abs(exact).max()


# ----------------------------------------------------------------------------------------------
# magnitude pruning with torch.nn.utils.prune
# ----------------------------------------------------------------------------------------------


def pruning(m, weights):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    prune = nn.utils.prune
    model = load(m, cnn(m), weights)
    conv1, conv2, fc = model[0], model[2], model[5]
    prune.l1_unstructured(conv1, name="weight", amount=0.3)
    prune.ln_structured(conv2, name="weight", amount=0.5, n=2, dim=0)  # half the filters
    prune.global_unstructured([(conv1, "bias"), (fc, "weight")], pruning_method=prune.L1Unstructured, amount=60)
    keys = sorted(model.state_dict().keys())
    x, y = (torch.tensor(a) for a in image_data())
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for step in range(6):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    grad_orig = conv2.weight_orig.grad
    masks = [conv1.weight_mask, conv2.weight_mask, fc.weight_mask]
    sparsity = [float((mk == 0).sum()) / mk.numel() for mk in masks]
    for module, name in ((conv1, "weight"), (conv2, "weight"), (conv1, "bias"), (fc, "weight")):
        prune.remove(module, name)
    return losses, keys, sparsity, grad_orig, model.state_dict(), sorted(model.state_dict().keys())


def test_magnitude_pruning():
    ours, theirs = run_both(pruning, weights_of(cnn), rtol=1e-4, atol=1e-5)
    losses, keys, sparsity, grad_orig, state, final_keys = ours
    assert "0.weight_orig" in keys and "0.weight_mask" in keys and "5.weight_mask" in keys
    assert sparsity[1] == 0.5
    assert (state["2.weight"].reshape(4, -1) == 0).all(1).sum() == 2  # two whole filters stay zero
    assert final_keys == sorted(["0.weight", "0.bias", "2.weight", "2.bias", "5.weight", "5.bias"])


# ----------------------------------------------------------------------------------------------
# knowledge distillation: KL between temperature-softened distributions, times T²
# ----------------------------------------------------------------------------------------------


def teacher_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))


def student_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 4))


def distillation(m, teacher_weights, student_weights, T=4.0, alpha=0.7):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    teacher = load(m, teacher_net(m), teacher_weights)
    student = load(m, student_net(m), student_weights)
    x, y = (torch.tensor(a) for a in classification_data())
    t_opt = optim.Adam(teacher.parameters(), lr=0.01)
    for step in range(10):  # a quick teacher
        t_opt.zero_grad()
        F.cross_entropy(teacher(x), y).backward()
        t_opt.step()
    teacher.eval()
    optimizer = optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    history = []
    for step in range(12):
        with torch.no_grad():
            teacher_logits = teacher(x)
        student_logits = student(x)
        soft_loss = F.kl_div(F.log_softmax(student_logits / T, dim=1), F.log_softmax(teacher_logits / T, dim=1),
                             reduction="batchmean", log_target=True) * (T * T)
        hard_loss = F.cross_entropy(student_logits, y)
        loss = alpha * soft_loss + (1 - alpha) * hard_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append((soft_loss.item(), hard_loss.item()))
    # the same soft loss through nn.KLDivLoss on probabilities (log_target=False)
    kl = nn.KLDivLoss(reduction="batchmean")(F.log_softmax(student(x) / T, dim=1), F.softmax(teacher(x) / T, dim=1))
    return history, kl, student.state_dict()


def test_knowledge_distillation():
    ours, theirs = run_both(distillation, weights_of(teacher_net), weights_of(student_net, seed=1), rtol=1e-4,
                            atol=1e-5)
    history = ours[0]
    assert history[-1][0] < history[0][0]  # the student moves towards the teacher


# ----------------------------------------------------------------------------------------------
# low-rank factorisation by SVD, then fine-tuning
# ----------------------------------------------------------------------------------------------


def wide_net(m):
    nn = m.nn
    return nn.Sequential(nn.Linear(12, 48), nn.ReLU(), nn.Linear(48, 48), nn.ReLU(), nn.Linear(48, 4))


def low_rank(m, weights, rank=6):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, wide_net(m), weights)
    x, y = (torch.tensor(a) for a in classification_data())
    optimizer = optim.Adam(model.parameters(), lr=0.01)
    for step in range(10):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    layer = model[2]
    W = layer.weight.detach()
    U, S, Vh = torch.linalg.svd(W, full_matrices=False)
    first = nn.Linear(48, rank, bias=False)
    second = nn.Linear(rank, 48)
    with torch.no_grad():
        root = S[:rank].sqrt()
        first.weight.copy_(root[:, None] * Vh[:rank])
        second.weight.copy_(U[:, :rank] * root)
        second.bias.copy_(layer.bias)
    model[2] = nn.Sequential(first, second)
    product = second.weight @ first.weight  # the best rank-6 approximation of W (sign choices cancel)
    error = torch.linalg.matrix_norm(W - product)
    tail = S[rank:].pow(2).sum().sqrt()  # Eckart–Young: the error is the discarded singular values' norm
    optimizer = optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for step in range(8):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    params = sum(p.numel() for p in model.parameters())
    return S, product, error, tail, losses, second.weight @ first.weight, params


def test_low_rank_factorisation():
    ours, theirs = run_both(low_rank, weights_of(wide_net), rtol=2e-4, atol=2e-5)
    S, product, error, tail, losses, tuned, params = ours
    np.testing.assert_allclose(error, tail, rtol=1e-4)
    assert params == 12 * 48 + 48 + 48 * 6 + 6 * 48 + 48 + 48 * 4 + 4


# ----------------------------------------------------------------------------------------------
# random pruning from a seed (the draws and which of them are pruned must be PyTorch's)
# ----------------------------------------------------------------------------------------------


def random_pruning(m):
    torch, nn = m.torch, m.nn
    prune = nn.utils.prune
    lin, conv = nn.Linear(6, 5), nn.Conv2d(2, 4, 3)
    torch.manual_seed(3)
    prune.random_unstructured(lin, "weight", amount=0.4)
    prune.random_structured(conv, "weight", amount=2, dim=0)
    prune.random_unstructured(lin, "weight", amount=0.5)  # half of what is left, drawn among it
    return lin.weight_mask, conv.weight_mask


def test_random_pruning_follows_the_seed():
    ours, theirs = run_both(random_pruning)
    lin_mask, conv_mask = ours
    assert lin_mask.sum() == 30 - 12 - 9 and conv_mask.reshape(4, -1).all(1).sum() == 2


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


# ----------------------------------------------------------------------------------------------
# weight sharing (Deep Compression): k-means centroids trained through the assignment
# ----------------------------------------------------------------------------------------------


def weight_sharing(m, weights, k=8):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    model = load(m, mlp(m), weights)
    layer = model[2]
    w = layer.weight.detach().flatten()
    centroids = torch.linspace(w.min().item(), w.max().item(), k)  # linear initialisation
    for _ in range(10):
        assign = torch.cdist(w[:, None], centroids[:, None]).argmin(1)
        sums = torch.zeros(k).index_add_(0, assign, w)
        counts = torch.bincount(assign, minlength=k).float()
        centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
    centroids = nn.Parameter(centroids)
    x, y = (torch.tensor(a) for a in classification_data())
    optimizer = optim.SGD([centroids], lr=0.05)
    history = []
    for step in range(5):
        shared = centroids[assign].view_as(layer.weight)  # each centroid's gradient: the sum over its weights
        h = F.relu(F.linear(F.relu(model[0](x)), shared, layer.bias))
        loss = F.cross_entropy(model[4](h), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    levels = torch.bucketize(w, torch.sort(centroids.detach()).values)
    return centroids, assign, history, counts, levels


def test_weight_sharing():
    ours, theirs = run_both(weight_sharing, weights_of(mlp), rtol=1e-4, atol=1e-5)
    centroids, assign, history, counts, levels = ours
    assert counts.sum() == 16 * 16 and set(assign.tolist()) <= set(range(8))


# ----------------------------------------------------------------------------------------------
# feature distillation: intermediate activations matched through forward hooks
# ----------------------------------------------------------------------------------------------


def feature_distillation(m, teacher_weights, student_weights, T=3.0):
    torch, nn, F, optim = m.torch, m.nn, m.F, m.optim
    teacher, student = load(m, mlp(m), teacher_weights), load(m, mlp(m), student_weights)
    features = {}
    teacher[2].register_forward_hook(lambda module, inputs, output: features.__setitem__("teacher", output))
    student[2].register_forward_hook(lambda module, inputs, output: features.__setitem__("student", output))
    x, y = (torch.tensor(a) for a in classification_data())
    optimizer = optim.SGD(student.parameters(), lr=0.05, momentum=0.9, nesterov=True)
    history = []
    for step in range(6):
        with torch.no_grad():
            teacher_logits = teacher(x)
        student_logits = student(x)
        attention = lambda f: F.normalize(f.pow(2), dim=1)  # attention transfer on the hidden features
        loss = (F.cross_entropy(student_logits, y)
                + 0.5 * F.mse_loss(attention(features["student"]), attention(features["teacher"]))
                + F.kl_div(F.log_softmax(student_logits / T, 1), F.softmax(teacher_logits / T, 1),
                           reduction="batchmean") * T * T
                + 0.1 * F.cosine_embedding_loss(features["student"], features["teacher"], torch.ones(len(x))))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append(loss.item())
    return history, student.state_dict()


def test_feature_distillation():
    ours, theirs = run_both(feature_distillation, weights_of(mlp), weights_of(mlp, seed=2), rtol=1e-4, atol=1e-5)
    assert ours[0][-1] < ours[0][0]
