"""``autograd.ao.quantization`` (torch.ao.quantization) on chainrule and PyTorch against the same expectations:
the observers' ranges, scales and zero points (affine, symmetric, per channel, float qparams, moving averages),
FakeQuantize's switches and state dict, QConfig's refusal of instances, prepare_qat's swaps and hooks, and
what is not built (convert to int8, the fused fake quantizer's qconfig) saying so on chainrule."""

import importlib
import warnings

import numpy as np
import pytest


def _batches(T):
    rng = np.random.default_rng(0)
    return [T.tensor((rng.standard_normal((4, 3, 5)) * (i + 1) + 0.3 * i).astype(np.float32)) for i in range(3)]


def _observed(observer, batches):
    for batch in batches:
        assert observer(batch) is batch  # an observer passes its input through
    return observer.calculate_qparams()


def test_min_max_observer_affine_and_symmetric(T):
    q = T.ao.quantization
    batches = _batches(T)
    low = min(float(b.min()) for b in batches)
    high = max(float(b.max()) for b in batches)
    scale, zero_point = _observed(q.MinMaxObserver(), batches)
    expected_scale = np.float32(high - low) / np.float32(255)
    np.testing.assert_allclose(scale.numpy(), [expected_scale], rtol=1e-6)
    assert zero_point.tolist() == [int(np.clip(0 - np.rint(np.float32(low) / scale.numpy()[0]), 0, 255))]
    scale, zero_point = _observed(q.MinMaxObserver(dtype=T.qint8, qscheme=T.per_tensor_symmetric), batches)
    np.testing.assert_allclose(scale.numpy(), [max(-low, high) / 127.5], rtol=1e-6)
    assert zero_point.tolist() == [0] and zero_point.dtype == T.int64
    scale, zero_point = _observed(q.MinMaxObserver(qscheme=T.per_tensor_symmetric), batches)
    assert zero_point.tolist() == [128]  # quint8's middle


def test_observer_ranges(T):
    q = T.ao.quantization
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reduce_range's deprecation
        reduced = q.MinMaxObserver(reduce_range=True)
        fake = q.default_fake_quant()  # 0..255 given, halved by reduce_range
    assert (fake.quant_min, fake.quant_max) == (0, 127) and (reduced.quant_min, reduced.quant_max) == (0, 127)
    assert (q.MinMaxObserver(dtype=T.qint8).quant_min, q.MinMaxObserver(dtype=T.qint8).quant_max) == (-128, 127)
    with pytest.raises(AssertionError, match="must include 0"):
        q.MinMaxObserver(quant_min=1, quant_max=15)
    with pytest.raises(NotImplementedError, match="per_tensor"):
        q.MinMaxObserver(qscheme=T.per_channel_affine)


def test_moving_average_observer(T):
    q = T.ao.quantization
    batches = _batches(T)
    observer = q.MovingAverageMinMaxObserver(averaging_constant=0.25)
    _observed(observer, batches)
    low, high = float(batches[0].min()), float(batches[0].max())  # the first batch's own, then moved
    for batch in batches[1:]:
        low += 0.25 * (float(batch.min()) - low)
        high += 0.25 * (float(batch.max()) - high)
    np.testing.assert_allclose([float(observer.min_val), float(observer.max_val)], [low, high], rtol=1e-6)


def test_per_channel_observers(T):
    q = T.ao.quantization
    batches = _batches(T)
    observer = q.PerChannelMinMaxObserver(ch_axis=1, dtype=T.qint8, qscheme=T.per_channel_symmetric)
    scale, zero_point = _observed(observer, batches)
    stacked = np.stack([b.numpy() for b in batches])
    low, high = stacked.min(axis=(0, 1, 3)), stacked.max(axis=(0, 1, 3))
    np.testing.assert_array_equal(observer.min_val.numpy(), low)
    np.testing.assert_allclose(scale.numpy(), np.maximum(-low, high) / 127.5, rtol=1e-6)
    assert zero_point.tolist() == [0, 0, 0]
    observer = q.PerChannelMinMaxObserver(ch_axis=0, qscheme=T.per_channel_affine_float_qparams)
    scale, zero_point = _observed(observer, batches)
    low, high = stacked.min(axis=(0, 2, 3)), stacked.max(axis=(0, 2, 3))
    np.testing.assert_allclose(scale.numpy(), (high - low) / 255, rtol=1e-6)
    np.testing.assert_allclose(zero_point.numpy(), -low / scale.numpy(), rtol=1e-6)  # a float zero point
    assert zero_point.dtype == T.float32


def test_fake_quantize_switches_and_state(T):
    q = T.ao.quantization
    batches = _batches(T)
    fake = q.default_per_channel_weight_fake_quant()
    x = batches[0].requires_grad_()
    y = fake(x)
    scale = fake.scale.numpy() * 1
    assert fake.scale.shape == (4,) and fake.zero_point.dtype == T.int32
    expected = T.fake_quantize_per_channel_affine(x.detach(), fake.scale, fake.zero_point, 0, -128, 127)
    np.testing.assert_array_equal(y.detach().numpy(), expected.numpy())
    fake.disable_observer()
    fake(batches[2])
    np.testing.assert_array_equal(fake.scale.numpy(), scale)  # frozen
    fake.disable_fake_quant()
    assert fake(batches[2]) is batches[2]
    state = fake.state_dict()
    assert state["observer_enabled"].tolist() == [0] and state["fake_quant_enabled"].tolist() == [0]
    fresh = q.default_per_channel_weight_fake_quant()  # scale of one element, resized on loading
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh.scale.numpy(), scale)
    np.testing.assert_array_equal(fresh.activation_post_process.min_val.numpy(),
                                  fake.activation_post_process.min_val.numpy())


def test_qconfig_refuses_an_observer_instance(T):
    q = T.ao.quantization
    with pytest.raises(ValueError, match="observer instance"):
        q.QConfig(activation=q.MinMaxObserver(), weight=q.default_weight_observer)


def test_prepare_qat_swaps_and_hooks(T):
    nn, q = importlib.import_module("nn") if T.__name__ == "autograd" else T.nn, T.ao.quantization

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = q.QuantStub()
            self.fc = nn.Linear(3, 2)
            self.relu = nn.ReLU()
            self.dequant = q.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.relu(self.fc(self.quant(x))))

    model = Net()
    model.qconfig = q.default_qat_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = q.prepare_qat(model)
    assert type(model.fc) is nn.Linear  # (a copy was prepared)
    assert type(prepared.fc).__name__ == "Linear" and hasattr(prepared.fc, "weight_fake_quant")
    assert prepared.fc.weight is model.fc.weight or np.array_equal(prepared.fc.weight.detach().numpy(),
                                                                   model.fc.weight.detach().numpy())
    names = {name for name, _ in prepared.named_modules()}
    assert {"quant.activation_post_process", "fc.activation_post_process", "fc.weight_fake_quant"} <= names
    assert not any(n.startswith(("relu.", "dequant.")) for n in names)
    x = T.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]])
    y = prepared(x)
    fq = prepared.fc.activation_post_process
    assert float(fq.scale) != 1.0  # the hook observed fc's output
    out = T.fake_quantize_per_tensor_affine(prepared.fc(prepared.quant(x)).detach(), fq.scale, fq.zero_point, 0, 127)
    np.testing.assert_allclose(y.detach().numpy(), out.clamp(min=0).numpy(), atol=1e-6)
    with pytest.raises(AssertionError, match="training mode"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q.prepare_qat(model.eval())
    with pytest.warns(DeprecationWarning, match="torch.ao.quantization is deprecated"):
        q.prepare_qat(model.train())


def test_fused_fake_quantize_takes_fbgemms_qparams(T):
    q = T.ao.quantization
    x = T.tensor([[-1.0, 0.3, 2.5], [0.7, -0.2, 1.1]])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        activation = q.get_default_qat_qconfig("x86").activation()  # fused, 0..127 (reduce_range)
    assert type(activation).__name__ == "FusedMovingAvgObsFakeQuantize"
    activation(x)
    scale = np.float32(3.5 / 127)  # the range over the levels, in double, rounded to float32
    assert activation.scale.tolist() == [float(scale)]
    # the zero point from the end that loses less: |0| - |-1/s| < |127| - |2.5/s|, so from the minimum
    assert activation.zero_point.tolist() == [int(np.rint(0 + 1.0 / float(scale)))]
    weight = q.default_fused_per_channel_wt_fake_quant()
    w = T.tensor([[0.5, -2.0], [0.25, 0.125], [-0.1, 0.0]])
    y = weight(w)
    # a row of both signs is made symmetric: scale max(-min/128, max/127), zero point the middle (0); a row of
    # one sign keeps its range widened to 0, with the zero point at the end that holds 0
    np.testing.assert_allclose(weight.scale.numpy(), [2.0 / 128, 0.25 / 255, 0.1 / 255], rtol=1e-6)
    assert weight.zero_point.tolist() == [0, -128, 127]
    np.testing.assert_array_equal(y.numpy(), T.fake_quantize_per_channel_affine(w, weight.scale, weight.zero_point,
                                                                                 0, -128, 127).numpy())


def test_what_is_not_built_says_so():
    import autograd

    q = autograd.ao.quantization
    with pytest.raises(NotImplementedError, match="int8"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q.convert(q.QuantStub())
    assert autograd.quantization is q and repr(autograd.qint8) == "torch.qint8"


def _conv_bn_relu(T):
    nn = importlib.import_module("nn") if T.__name__ == "autograd" else T.nn
    T.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(12, 2), nn.ReLU())
    with T.no_grad():
        model[1].running_mean.copy_(T.tensor([0.1, -0.2, 0.3]))
        model[1].running_var.copy_(T.tensor([0.5, 2.0, 1.5]))
    return nn, model


def test_fuse_modules_for_inference_folds_the_norm(T):
    nn, model = _conv_bn_relu(T)
    model.eval()
    fused = T.ao.quantization.fuse_modules(model, [["0", "1", "2"], ["4", "5"]])
    assert [type(m).__name__ for m in fused] == ["ConvReLU2d", "Identity", "Identity", "Flatten", "LinearReLU",
                                                 "Identity"]
    assert type(model[0]).__name__ == "Conv2d"  # (a copy was fused)
    x = T.randn(2, 2, 4, 4)
    np.testing.assert_allclose(fused(x).detach().numpy(), model(x).detach().numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(AssertionError, match="did not find fuser method"):
        T.ao.quantization.fuse_modules(model, [["0", "2", "1"]])


def test_fuse_modules_qat_then_prepare_qat(T):
    nn, model = _conv_bn_relu(T)
    q = T.ao.quantization
    fused = q.fuse_modules_qat(model, [["0", "1", "2"]])
    assert type(fused[0]).__name__ == "ConvBnReLU2d" and type(fused[1]).__name__ == "Identity"
    fused.qconfig = q.default_qat_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = q.prepare_qat(fused)
    qat = prepared[0]
    assert type(qat).__module__.endswith("qat.modules.conv_fused") or type(qat).__module__ == "nn.intrinsic.qat"
    assert hasattr(qat, "weight_fake_quant") and hasattr(qat, "activation_post_process") and qat.bn.training
    qat.freeze_bn_stats()
    assert not qat.bn.training
    prepared.train()
    assert not qat.bn.training  # frozen statistics stay frozen
    with pytest.raises(AssertionError, match="same mode"):
        model[1].eval()
        q.fuse_modules_qat(model, [["0", "1"]])
