# ruff: noqa: F841  (the programs are kept as their authors wrote them)
"""Model-compression programs (see tests/pytorch_programs.py), each run on chainrule and on PyTorch from the same
weights and data, comparing values, gradients and training trajectories (float32, about 1e-5). Eager-mode QAT with
``torch.ao.quantization`` (QuantStub/DeQuantStub, ``get_default_qat_qconfig``, ``prepare_qat``, the fused
``FusedMovingAvgObsFakeQuantize`` of the default qconfig, observers frozen by ``model.apply(disable_observer)``, the
state dict's scales); observers on their own (MinMax, MovingAverage, PerChannel); int8 matmul emulation
(``round``/``clamp``/``to(torch.int8)``, int32 accumulation, dequantization)."""

import io
import warnings

import numpy as np
import pytest

from .probe15_quant_common import image_data
from .pytorch_programs import load, run_both, weights_of

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
