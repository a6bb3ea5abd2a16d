"""The rest of PyTorch's test/test_nn.py (TestNN and TestNNDeviceType on CPU) not ported elsewhere: the losses on
empty, all-ignored and zero-weight batches, the losses' argument checks (smooth_l1's beta, huber's delta,
multi_margin's weight, gaussian_nll's variance), activations at their kinks and on 0-d tensors, NaN passing
through every activation, in-place activations with a zero slope and on overlapping memory, and the Module API's
corners (to() with copy, zero_grad, call_super_init, a subclass's register_buffer without ``persistent``). Each
test runs on chainrule's `nn` and, where it is installed, on PyTorch's."""

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F

REDUCTIONS = ("none", "mean", "sum")


def test_nll_loss_empty_batch_all_ignored_and_zero_weight(T, F):
    # an empty batch (flat or spatial): 'mean' divides 0 by a total weight of 0, NaN; 'sum' is 0
    for x, t in ((T.randn(0, 3), T.zeros(0, dtype=T.long)), (T.randn(0, 3, 5, 5), T.zeros(0, 5, 5, dtype=T.long))):
        none, mean, total = (F.nll_loss(x, t, reduction=r) for r in REDUCTIONS)
        assert tuple(none.shape) == tuple(t.shape)
        assert np.isnan(values(mean)) and values(total) == 0
    # every target ignored, or every class weighted 0: the same 0 / 0
    x = T.ones(5, 3)
    t = T.zeros(5, dtype=T.long)
    for kwargs in ({"ignore_index": 0}, {"weight": T.zeros(3)}):
        none, mean, total = (F.nll_loss(x, t, reduction=r, **kwargs) for r in REDUCTIONS)
        same(none.abs(), np.zeros(5, np.float32))
        assert np.isnan(values(mean)) and values(total) == 0
    # a uint8 target reads as class indices, as an int64 one
    logp = T.randn(5, 3).log_softmax(1)
    labels = [0, 1, 2, 1, 0]
    same(F.nll_loss(logp, T.tensor(labels, dtype=T.uint8)), values(F.nll_loss(logp, T.tensor(labels))))
    close(F.nll_loss(logp, T.tensor(labels)), -values(logp)[np.arange(5), labels].mean())


def test_pointwise_losses_argument_checks(T, F):
    x, y = T.randn(2, 3), T.randn(2, 3)
    raises(RuntimeError, "smooth_l1_loss does not support negative values for beta.", F.smooth_l1_loss, x, y,
           beta=-1.0)
    raises(RuntimeError, "huber_loss does not support non-positive values for delta.", F.huber_loss, x, y, delta=0.0)
    raises(ValueError, "meen is not a valid value for reduction", F.mse_loss, x, y, reduction="meen")
    raises(ValueError, "meen is not a valid value for reduction", F.l1_loss, x, y, reduction="meen")
    # empty: 'mean' is NaN, 'sum' 0
    assert np.isnan(values(F.l1_loss(T.ones(0), T.ones(0))))
    assert values(F.mse_loss(T.ones(0), T.ones(0), reduction="sum")) == 0
    # l1_loss(x, 0) is mean |x|; smooth_l1 with beta = delta = 1 is huber
    close(F.l1_loss(x, T.zeros(2, 3)), np.abs(values(x)).mean())
    close(F.smooth_l1_loss(x, y), values(F.huber_loss(x, y)))
    # an integer target is promoted to the input's dtype
    xs, ts = T.tensor([0.2, 1.7, -3.0]), T.tensor([0, 1, 2])
    diff = np.array([0.2, 0.7, -5.0], np.float32)
    close(F.smooth_l1_loss(xs, ts, reduction="none"), np.where(np.abs(diff) < 1, 0.5 * diff ** 2, np.abs(diff) - 0.5))
    close(F.mse_loss(xs, ts), (diff ** 2).mean())


def test_pointwise_losses_gradient_of_target(T, F):
    # the target's gradient is minus the input's, for every pointwise loss, unreduced
    x = T.randn(3, 2, requires_grad=True)
    t = T.randn(3, 2, requires_grad=True)
    for loss in (F.mse_loss, F.l1_loss, F.smooth_l1_loss, F.huber_loss):
        x.grad = t.grad = None
        loss(x, t, reduction="none").sum().backward()
        close(x.grad + t.grad, np.zeros((3, 2)), atol=1e-7)


def test_multi_margin_loss_weight_size(T, F):
    x = T.randn(3, 4)
    raises(RuntimeError, r"inconsistent weight size, expected 4 but got \[3\]", F.multi_margin_loss, x,
           T.tensor([0, 1, 2]), weight=T.ones(3))
    raises(RuntimeError, "target out of range", F.multi_margin_loss, x, T.tensor([0, 1, 4]))
    raises(RuntimeError, "target out of range", F.multi_margin_loss, x, T.tensor([0, -1, 2]))
    # a weight per class scales each row's loss by its label's weight
    w = T.tensor([1.0, 2.0, 3.0, 4.0])
    close(F.multi_margin_loss(x, T.tensor([0, 1, 2]), weight=w, reduction="none"),
          values(F.multi_margin_loss(x, T.tensor([0, 1, 2]), reduction="none")) * [1.0, 2.0, 3.0])


def test_multi_margin_loss_one_prediction_p2(T, F):
    x = T.tensor([0.1, 0.2, 0.4, 0.8], requires_grad=True)
    loss = F.multi_margin_loss(x, T.tensor(3), margin=0.5, p=2)
    loss.backward()
    # the margins 0.5 - x_y + x_i of the other classes, those above 0 squared
    violated = np.maximum(0, 0.5 - 0.8 + np.array([0.1, 0.2, 0.4]))
    close(loss, (violated ** 2).sum() / 4)
    grad = np.append(2 * violated / 4, -2 * violated.sum() / 4)
    close(x.grad, grad)


def test_multilabel_margin_loss(T, F):
    x = T.tensor([[0.1, 0.2, 0.4, 0.8]], requires_grad=True)
    y = T.tensor([[3, 0, -1, 1]])  # labels 3 and 0; the -1 ends them
    loss = F.multilabel_margin_loss(x, y)
    loss.backward()
    # for each label j and each non-label i: max(0, 1 - (x_j - x_i)) / C
    xs = [0.1, 0.2, 0.4, 0.8]
    terms = [1 - (xs[j] - xs[i]) for j in (3, 0) for i in (1, 2)]
    close(loss, sum(max(0, v) for v in terms) / 4)
    close(x.grad, [[-0.5, 0.5, 0.5, -0.5]])


def test_gaussian_nll_loss_variance_shapes_and_checks(T, F):
    x = T.tensor([[1.0, 2.0], [0.0, 3.0]])
    t = T.tensor([[1.5, 2.0], [1.0, 2.0]])
    sq = (values(x) - values(t)) ** 2
    # a float variance, one per row ((2, 1) or (2,)), or one per element: the same 0.5 (log var + (x - t)² / var)
    per = 0.5 * (np.log(0.5) + sq / 0.5)
    close(F.gaussian_nll_loss(x, t, 0.5), per.mean())
    for var in (T.full((2, 1), 0.5), T.full((2,), 0.5), T.full((2, 2), 0.5)):
        close(F.gaussian_nll_loss(x, t, var), per.mean())
    close(F.gaussian_nll_loss(x, t, 0.5, full=True, reduction="sum"), (per + 0.5 * np.log(2 * np.pi)).sum())
    raises(ValueError, "var is of incorrect size", F.gaussian_nll_loss, x, t, T.ones(2, 3))
    raises(ValueError, "var has negative entry/entries", F.gaussian_nll_loss, x, t, -T.ones(2, 2))


def test_kl_div_batchmean_and_log_target(T, F):
    logp = T.log_softmax(T.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 1.0]]), 1)
    q = T.softmax(T.tensor([[0.0, 1.0, 0.0], [2.0, 1.0, 0.0]]), 1)
    per = values(q) * (np.log(values(q)) - values(logp))
    close(F.kl_div(logp, q, reduction="batchmean"), per.sum() / 2)
    close(F.kl_div(logp, q.log(), reduction="batchmean", log_target=True), per.sum() / 2)
    # a target of 0 contributes 0 (not 0 · log 0 = NaN)
    same(F.kl_div(T.tensor([-1.0, -2.0]), T.tensor([0.0, 0.5]), reduction="none")[0], np.float32(0))
    # the divergence of a distribution from itself is 0
    close(F.kl_div(logp, logp, reduction="sum", log_target=True), 0.0)


def test_softshrink_negative_lambda_and_softplus_low_threshold(T, F):
    raises(RuntimeError, r"lambda must be in range \[0, .*\] for input dtype .*, but found -1", F.softshrink,
           T.randn(3), -1)
    # softplus(x, β=2, threshold=1): linear where β·x > 1, (1/β) log(1 + e^{βx}) below
    x = T.tensor([0.1, 0.4, 0.6, 2.0], requires_grad=True)
    y = F.softplus(x, 2, 1)
    y.sum().backward()
    xv = np.array([0.1, 0.4, 0.6, 2.0])
    below = 2 * xv <= 1
    close(y, np.where(below, np.log1p(np.exp(2 * xv)) / 2, xv))
    close(x.grad, np.where(below, 1 / (1 + np.exp(-2 * xv)), 1.0))


@pytest.mark.parametrize("name, points, grads", [
    ("hardtanh", [-1.0, -0.5, 0.0, 1.0, 2.0], [0.0, 1.0, 1.0, 0.0, 0.0]),
    ("relu6", [0.0, 3.0, 6.0, 7.0], [0.0, 1.0, 0.0, 0.0]),
    ("hardsigmoid", [-3.0, 0.0, 3.0, 4.0], [0.0, 1 / 6, 0.0, 0.0]),
    ("hardswish", [-4.0, -3.0, 0.0, 3.0, 4.0], [0.0, 0.0, 0.5, 1.0, 1.0]),
    ("threshold", [1.0, 2.0, 3.0], [0.0, 0.0, 1.0]),
])
def test_activation_gradient_at_the_kinks(T, F, name, points, grads):
    # PyTorch's one-sided choices at each kink (hardtanh's 0 at ±1, relu6's 0 at 0 and 6, ...)
    x = T.tensor(points, requires_grad=True)
    y = F.threshold(x, 2.0, 0.0) if name == "threshold" else getattr(F, name)(x)
    y.sum().backward()
    close(x.grad, grads)


def test_threshold_of_integers(T, F):
    same(F.threshold(T.tensor([1, 2, 3, 4]), 2, 0), [0, 0, 3, 4], dtype="int64")


ACTIVATIONS = ["relu", "relu6", "elu", "selu", "celu", "gelu", "hardtanh", "leaky_relu", "logsigmoid", "softplus",
               "softshrink", "hardshrink", "tanhshrink", "softsign", "sigmoid", "tanh", "hardsigmoid", "hardswish",
               "silu", "mish", "rrelu"]


def test_activations_propagate_nan(T, F):
    x = T.tensor([float("nan")])
    for name in ACTIVATIONS:
        assert np.isnan(values(getattr(F, name)(x))).all(), name
    assert np.isnan(values(F.threshold(x, 0.1, 0.2))).all()


def test_activation_modules_on_a_0d_tensor(T, nn):
    x = T.tensor(0.7, requires_grad=True)
    expected = {"ReLU": (0.7, 1.0), "Sigmoid": (1 / (1 + np.exp(-0.7)), np.exp(-0.7) / (1 + np.exp(-0.7)) ** 2),
                "Tanh": (np.tanh(0.7), 1 - np.tanh(0.7) ** 2), "Softsign": (0.7 / 1.7, 1 / 1.7 ** 2),
                "Hardshrink": (0.7, 1.0), "Softshrink": (0.2, 1.0), "ReLU6": (0.7, 1.0),
                "Threshold": (20.0, 0.0), "Softmax": (1.0, 0.0), "LogSoftmax": (0.0, 0.0)}
    for module in (nn.ReLU(), nn.Sigmoid(), nn.Tanh(), nn.Softsign(), nn.Hardshrink(), nn.Softshrink(), nn.ReLU6(),
                   nn.Threshold(1.0, 20.0), nn.Softmax(0), nn.LogSoftmax(0), nn.ELU(), nn.GELU(), nn.SiLU(),
                   nn.Mish(), nn.PReLU(), nn.Hardswish(), nn.Softplus(), nn.LogSigmoid()):
        y = module(x)
        (grad,) = T.autograd.grad(y, x)
        assert tuple(y.shape) == () and tuple(grad.shape) == (), type(module).__name__
        if type(module).__name__ in expected:
            close(T.stack([y, grad]), expected[type(module).__name__], rtol=1e-5)


def test_losses_on_0d_tensors(T, nn):
    x, t = T.tensor(0.3), T.tensor(1.0)
    for loss in (nn.L1Loss, nn.MSELoss, nn.SmoothL1Loss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss,
                 nn.SoftMarginLoss, nn.PoissonNLLLoss, nn.KLDivLoss, nn.HingeEmbeddingLoss):
        results = [loss(reduction=r)(x, t) for r in REDUCTIONS]
        assert all(tuple(r.shape) == () for r in results), loss.__name__
        close(T.stack(results), [values(results[0])] * 3)
    close(nn.L1Loss()(x, t), 0.7)
    close(nn.MSELoss()(x, t), 0.49)
    close(nn.BCELoss()(x, t), -np.log(0.3))


def test_leaky_relu_in_place_with_zero_slope(T, F):
    a = T.tensor([-2.0, 0.0, 2.0], requires_grad=True)
    b = a * 1
    F.leaky_relu_(b, 0.0)
    b.backward(T.ones(3))
    same(a.grad, [0.0, 0.0, 1.0])


def test_in_place_activations_on_overlapping_memory(T, F, request):
    expanded = T.randn(1, 6).expand(6, 6)
    for fn in (F.leaky_relu_, lambda x: F.elu(x, inplace=True), lambda x: F.hardswish(x, inplace=True),
               lambda x: F.silu(x, inplace=True)):
        raises(RuntimeError, "unsupported operation", fn, expanded)


def test_threshold_in_place_on_overlapping_memory(T, F):
    # PyTorch allows it for threshold alone: it is idempotent, so every alias of an element gets the same value
    row = T.tensor([[1.5, 0.2, -1.0]])
    out = F.threshold(row.expand(3, 3), 0.5, 0.5, inplace=True)
    same(out, [[1.5, 0.5, 0.5]] * 3)


def test_batch_norm_and_instance_norm_need_more_than_one_value(T, nn):
    raises(ValueError, "Expected more than 1 value per channel when training", nn.BatchNorm1d(10), T.randn(1, 10))
    raises(ValueError, "Expected more than 1 value per channel when training", nn.BatchNorm1d(10), T.randn(1, 10, 1))
    raises(ValueError, "Expected more than 1 spatial element when training",
           nn.InstanceNorm1d(10, affine=False), T.randn(2, 10, 1))
    raises(ValueError, "Expected more than 1 value per channel when training", nn.GroupNorm(10, 10), T.randn(1, 10))
    raises(ValueError, r"num_channels \(10\) must be divisible by num_groups \(3\)", nn.GroupNorm, 3, 10)
    # in eval mode one value is fine
    bn = nn.BatchNorm1d(2).eval()
    close(bn(T.tensor([[1.0, 2.0]])), [[1.0, 2.0]] / np.sqrt(1 + 1e-5))


def test_batch_norm_cumulative_average_and_no_running_stats(T, nn):
    bn = nn.BatchNorm1d(2, momentum=None)  # the running statistics are the plain average of every batch's
    batches = [np.array([[1.0, 2.0], [3.0, float(i)]], np.float32) for i in range(3)]
    for b in batches:
        bn(T.tensor(b))
    close(bn.running_mean, np.mean([b.mean(0) for b in batches], 0))
    close(bn.running_var, np.mean([b.var(0, ddof=1) for b in batches], 0))
    same(bn.num_batches_tracked, 3)
    # without running statistics, eval mode normalises by the batch
    free = nn.BatchNorm1d(2, track_running_stats=False).eval()
    assert free.running_mean is None
    close(free(T.tensor([[1.0, 2.0], [3.0, 5.0]])), [[-1.0, -1.0], [1.0, 1.0]], rtol=1e-4, atol=1e-4)


def test_group_norm_and_linear_of_an_empty_batch(T, nn):
    for module, x in ((nn.GroupNorm(2, 4), T.randn(0, 4, 3, requires_grad=True)),
                      (nn.Linear(3, 4), T.randn(0, 3, requires_grad=True))):
        y = module(x)
        y.sum().backward()
        assert tuple(x.grad.shape) == tuple(x.shape)
        assert values(module.weight.grad).sum() == 0 if module.weight.grad is not None else True
    assert tuple(nn.Linear(3, 4)(T.randn(0, 3)).shape) == (0, 4)


def test_layer_norm_without_bias(T, nn):
    ln = nn.LayerNorm(3, bias=False)
    assert [n for n, _ in ln.named_parameters()] == ["weight"]
    x = np.array([1.0, 2.0, 4.0])
    close(ln(T.tensor([x.tolist()])), [(x - x.mean()) / np.sqrt(x.var() + 1e-5)], rtol=1e-5)


def test_module_to_refuses_copy_and_returns_itself(T, nn):
    m = nn.Linear(3, 5)
    assert m.to("cpu") is m and m.to("cpu", dtype=T.float32) is m
    assert m.to(T.float64).weight.dtype == T.float64
    raises(RuntimeError, r"\.to\(\) does not accept copy argument", m.to, "cpu", copy=True)


def test_zero_grad(T, nn):
    i = T.randn(2, 5, requires_grad=True)
    module = nn.Linear(5, 5)
    for p in module.parameters():
        p.requires_grad = False
    module.zero_grad()
    module.weight.requires_grad = True
    module.zero_grad()
    assert module.weight.grad is None
    module(i).sum().backward()
    assert values(module.weight.grad).sum() != 0 and module.bias.grad is None
    module.zero_grad(set_to_none=False)  # zeros, kept
    same(module.weight.grad, np.zeros((5, 5), np.float32))
    module.zero_grad()
    assert module.weight.grad is None


def test_module_call_super_init(T, nn):
    class Mixin:
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.mixin_init = True

    class MixinFirst(Mixin, nn.Module):
        pass

    class MixinAfter(nn.Module, Mixin):
        pass

    assert hasattr(MixinFirst(), "mixin_init") and not hasattr(MixinAfter(), "mixin_init")
    raises(TypeError, r"takes 1 positional argument but 2 were given", nn.Module, 3)
    raises(TypeError, "got an unexpected keyword argument 'size'", nn.Module, size=3)
    nn.Module.call_super_init = True
    try:
        assert hasattr(MixinFirst(), "mixin_init") and hasattr(MixinAfter(), "mixin_init")
    finally:
        nn.Module.call_super_init = False
    MixinAfter.call_super_init = True
    assert hasattr(MixinAfter(), "mixin_init")


def test_buffer_assigned_in_a_subclass_whose_register_buffer_has_no_persistent(T, nn):
    class OldStyle(nn.Linear):
        def __init__(self):
            super().__init__(2, 2)
            self.bar = nn.Buffer(T.ones(2, 2))

        def register_buffer(self, name, value):
            super().register_buffer(name, value, True)

    m = OldStyle()
    same(m.bar, np.ones((2, 2), np.float32))
    assert "bar" in m.state_dict()


def test_backward_hook_with_a_dict_output(T, nn):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(10, 20)
            self.register_backward_hook(self.hook)
            self.called = False

        def hook(self, module, grad_input, grad_output):
            self.called = True

        def forward(self, inputs):
            return {"output": self.l1(inputs).sum()}

    net = Net()
    net(T.randn(5, 10))["output"].backward()
    assert net.called
