"""The normalisation layers, ported from PyTorch's test/test_nn.py (TestNN and TestNNDeviceType, CPU): BatchNorm's
gradients and double backward, eval mode, affine against no-op parameters, the cumulative average of momentum=None,
running statistics moving only in training, its size checks, channels-last and permuted inputs, float16 sums that
would overflow, SyncBatchNorm on one process and convert_sync_batchnorm; InstanceNorm's normalisation and running
statistics, its channel and spatial checks; LayerNorm's and GroupNorm's normalisation, applied weight and bias, bad
shapes, empty batches and numeric references; RMSNorm's eps; LocalResponseNorm; fusing batch norm into a layer.
Tests already in tests/test_ported_nn_embedding_norm.py and tests/test_ported_modules.py are not repeated. Each test
runs on chainrule's `autograd` and `nn` and, where it is installed, on PyTorch's, against NumPy or literals."""

import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def check_grads(T, fn, *inputs):
    assert T.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)
    assert T.autograd.gradgradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3)


def uniform(shape, low=0.0, high=1.0, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).uniform(low, high, shape).astype(dtype)


def batch_norm_reference(x, mean, var, weight, bias, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * weight.reshape(shape) + bias.reshape(shape)


def empty_input_backward(T, module, x):
    """PyTorch's _test_module_empty_input: an empty batch goes forward and back, every gradient zero."""
    x.requires_grad_(True)
    out = module(x)
    assert tuple(out.shape) == tuple(x.shape)
    out.backward(T.rand_like(out))
    for p in module.parameters():
        same(p.grad, np.zeros(tuple(p.shape), np.float32))
    same(x.grad, np.zeros(tuple(x.shape), np.float32))


# -- BatchNorm ------------------------------------------------------------------------------------

def test_batchnorm_grad_and_double_backward(T, F):
    n, c, length = 4, 5, 6
    x = T.arange(n * c * length, dtype=T.float64).view(n, c, length).requires_grad_()
    weight = T.arange(1, c + 1, dtype=T.float64).requires_grad_()
    bias = T.arange(c, dtype=T.float64).requires_grad_()
    running_mean = 1 - T.arange(c, dtype=T.float64)
    running_var = 2 * T.arange(c, dtype=T.float64)
    xv = np.arange(n * c * length, dtype=np.float64).reshape(n, c, length)
    w, b = np.arange(1.0, c + 1), np.arange(float(c))
    close(F.batch_norm(x, running_mean, running_var, weight, bias, False, 0.1, 1e-4),
          batch_norm_reference(xv, 1 - np.arange(c), 2 * np.arange(c), w, b, 1e-4), rtol=1e-12, atol=1e-12)
    close(F.batch_norm(x, None, None, weight, bias, True, 0.1, 1e-4),
          batch_norm_reference(xv, xv.mean((0, 2)), xv.var((0, 2)), w, b, 1e-4), rtol=1e-12, atol=1e-12)
    small = x.detach()[:2, :, :3].requires_grad_()       # (PyTorch's checks the whole; a part keeps this quick)
    for training in (False, True):
        check_grads(T, lambda x, w, b, training=training: F.batch_norm(x, running_mean, running_var, w, b, training,
                                                                       0.1, 1e-4),
                    small, weight, bias)


@pytest.mark.parametrize("ndim", [2, 3])
def test_batchnorm_eval(T, nn, ndim):
    module = nn.BatchNorm1d(3).eval()
    data = T.tensor(uniform([3] * ndim), requires_grad=True)
    grad = T.tensor(uniform([3] * ndim, seed=1))
    res1 = module(data)
    res1.backward(grad)
    grad1 = data.grad.clone()
    data.grad.zero_()
    res2 = module(data)
    res2.backward(grad)
    same(res1, values(res2))
    same(grad1, values(data.grad))
    scale = np.float32(1 / np.sqrt(1 + 1e-5))             # the fresh running statistics: mean 0, variance 1
    close(res1, values(data) * scale, rtol=1e-6, atol=1e-7)
    close(grad1, values(grad) * scale, rtol=1e-6, atol=1e-7)
    same(module.num_batches_tracked, 0)

    # no running statistics: eval normalises with the batch's, as training does
    module = nn.BatchNorm1d(3, track_running_stats=False)
    data = T.tensor(uniform((4, 3), seed=2), requires_grad=True)
    grad = T.tensor(uniform((4, 3), seed=3))
    res1 = module(data)
    res1.backward(grad)
    grad1 = data.grad.clone()
    module.eval()
    data.grad.zero_()
    res2 = module(data)
    res2.backward(grad)
    same(res1, values(res2))
    same(grad1, values(data.grad))
    d = values(data)
    close(res1, (d - d.mean(0)) / np.sqrt(d.var(0) + 1e-5), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("ndim", [2, 3])
def test_batchnorm_affine_matches_no_op_parameters(T, nn, ndim):
    module = nn.BatchNorm1d(3, affine=False)
    module_affine = nn.BatchNorm1d(3, affine=True)
    with T.no_grad():
        module_affine.weight.fill_(1.0)
        module_affine.bias.zero_()
    data = T.tensor(uniform([3] * ndim, seed=4), requires_grad=True)
    grad = T.ones_like(data)
    res1 = module_affine(data)
    res1.backward(grad)
    grad1 = data.grad.clone()
    data.grad.zero_()
    res2 = module(data)
    res2.backward(grad)
    close(res1, values(res2), rtol=1e-6, atol=1e-7)
    close(grad1, values(data.grad), rtol=1e-6, atol=1e-6)
    close(grad1, np.zeros([3] * ndim), atol=1e-5)     # an upstream of ones: the normalised values sum to 0
    same(module_affine.bias.grad, [3.0 ** (ndim - 1)] * 3)      # Σ of the ones over the batch (and length)


def test_batchnorm_simple_average(T, nn):
    module = nn.BatchNorm1d(3, momentum=None)
    same(module.running_mean, np.zeros(3, np.float32))
    same(module.running_var, np.ones(3, np.float32))
    data1, data2 = uniform((4, 3), seed=5), uniform((4, 3), seed=6)
    res1 = module(T.tensor(data1))
    running_mean1, running_var1 = values(module.running_mean).copy(), values(module.running_var).copy()
    close(running_mean1, data1.mean(0), rtol=1e-6)          # the first batch: factor 1/1
    close(running_var1, data1.var(0, ddof=1), rtol=1e-5)
    module.reset_running_stats()
    same(module.running_mean, np.zeros(3, np.float32))
    same(module.running_var, np.ones(3, np.float32))
    res2 = module(T.tensor(data2))
    running_mean2, running_var2 = values(module.running_mean).copy(), values(module.running_var).copy()
    module.reset_running_stats()
    res3 = module(T.tensor(data1))
    res4 = module(T.tensor(data2))
    same(res3, values(res1))
    same(res4, values(res2))
    close(module.running_mean, (running_mean1 + running_mean2) / 2, rtol=1e-6)
    close(module.running_var, (running_var1 + running_var2) / 2, rtol=1e-6)
    same(module.num_batches_tracked, 2)


def test_batchnorm_update_stats_only_in_training(T, nn):
    module = nn.BatchNorm1d(3)
    data = uniform((4, 3), seed=7)
    module(T.tensor(data))
    close(module.running_mean, 0.1 * data.mean(0), rtol=1e-6)
    close(module.running_var, 0.9 + 0.1 * data.var(0, ddof=1), rtol=1e-6)
    same(module.num_batches_tracked, 1)
    module.eval()
    before = [values(b).copy() for b in (module.running_mean, module.running_var, module.num_batches_tracked)]
    module(T.tensor(data))
    for buffer, old in zip((module.running_mean, module.running_var, module.num_batches_tracked), before):
        same(buffer, old)


def test_batchnorm_eval_with_a_batch_of_one(T, nn):
    bn = nn.BatchNorm1d(3)
    x = T.tensor([[1.0, 2.0, 3.0]])
    raises(ValueError, "Expected more than 1 value per channel when training", bn, x)
    same(bn.num_batches_tracked, 1)            # (PyTorch's module counts the batch before its check refuses it)
    bn.eval()
    close(bn(x), np.array([[1.0, 2.0, 3.0]]) / np.sqrt(1 + 1e-5), rtol=1e-6)


@pytest.mark.parametrize("which", ["weight", "bias"])
def test_batchnorm_raises_error_if_parameter_is_not_same_size_as_input(T, nn, F, which):
    x = T.rand(2, 10)
    for size in (9, 11):
        for training in (False, True):
            raises(RuntimeError, "", F.batch_norm, x, T.rand(10), T.rand(10), training=training,
                   **{which: nn.Parameter(T.rand(size))})


def test_batchnorm_raises_error_if_running_stats_are_the_wrong_size_in_eval(T, F):
    x = T.rand(2, 10)
    for size in (9, 11):
        raises(RuntimeError, "", F.batch_norm, x, T.rand(size), T.rand(10))
        raises(RuntimeError, "", F.batch_norm, x, T.rand(10), T.rand(size))


def test_batch_norm_update_stats(T):
    x = uniform((5, 3), seed=8)
    running_mean, running_var = T.zeros(3), T.ones(3)
    mean, var = T.batch_norm_update_stats(T.tensor(x), running_mean, running_var, 0.25)
    close(mean, x.mean(0), rtol=1e-6)
    close(var, x.var(0), rtol=1e-5)                           # the batch's biased variance
    close(running_mean, 0.25 * x.mean(0), rtol=1e-6)
    close(running_var, 0.75 + 0.25 * x.var(0, ddof=1), rtol=1e-6)   # moved with the unbiased one
    raises(RuntimeError, r"input tensor must have at least one element, but got input_sizes = \[0, 1\]",
           T.batch_norm_update_stats, T.rand(0, 1), T.rand(1), T.rand(1), 0.0)


def test_batchnorm_raises_error_if_running_stats_have_forward_grad(T, F):
    fwAD = T.autograd.forward_ad
    args = (T.randn(3, 2, 5), T.randn(2), T.randn(2).abs())
    for dual_indices in ((0,), (1,), (1, 2), (0, 1), (0, 1, 2)):
        tangents = tuple(T.rand_like(a) for a in args)
        with fwAD.dual_level():
            duals = [fwAD.make_dual(a, t) if i in dual_indices else a for i, (a, t) in enumerate(zip(args, tangents))]
            if 0 in dual_indices and (1 in dual_indices or 2 in dual_indices):
                raises(RuntimeError, "batch_norm is not differentiable wrt running_mean and running_var",
                       F.batch_norm, *duals, training=False, momentum=-1.2)
            else:
                out = F.batch_norm(*duals, training=False, momentum=-1.2)
                assert tuple(out.shape) == (3, 2, 5)


def test_batchnorm_load_state_dict_keeps_an_assigned_count(T, nn):
    bn = nn.BatchNorm2d(3)
    same(bn.state_dict()["num_batches_tracked"], 0)
    bn.num_batches_tracked = T.tensor(10)
    same(bn.state_dict()["num_batches_tracked"], 10)
    bn.load_state_dict({}, strict=False)
    same(bn.state_dict()["num_batches_tracked"], 10)


@pytest.mark.parametrize("module", ["BatchNorm2d", "SyncBatchNorm"])
def test_batchnorm_non_contiguous_input(T, nn, module):
    x = T.arange(6, dtype=T.float32).reshape(1, 3, 2, 1).permute(0, 2, 1, 3)    # (1, 2, 3, 1), channels last
    bn = getattr(nn, module)(2).eval()
    with T.no_grad():
        bn.weight.copy_(T.tensor([0.5, 2.0]))
        bn.bias.copy_(T.tensor([1.0, -1.0]))
        bn.running_mean.copy_(T.tensor([1.0, 2.0]))
        bn.running_var.copy_(T.tensor([4.0, 0.25]))
    ref = nn.BatchNorm2d(2).eval()
    ref.load_state_dict(bn.state_dict())
    out = bn(x)
    ref_out = ref(x.contiguous())
    assert out.is_contiguous(memory_format=T.channels_last)
    assert ref_out.is_contiguous()
    same(out, values(ref_out))
    xv = np.arange(6.0).reshape(1, 3, 2, 1).transpose(0, 2, 1, 3)
    close(out, batch_norm_reference(xv, np.array([1.0, 2.0]), np.array([4.0, 0.25]), np.array([0.5, 2.0]),
                                    np.array([1.0, -1.0]), 1e-5), rtol=1e-6)
    # float16 input, float32 module: PyTorch's mixed-precision kernel
    half = T.arange(24, dtype=T.float16).reshape(1, 3, 2, 4).permute(0, 2, 1, 3)
    bn_mix = getattr(nn, module)(2).float().eval()
    out_half = bn_mix(half)
    assert out_half.dtype == T.float16
    close(out_half.float(), values(bn_mix(half.float())), rtol=0.05, atol=0.05)


@pytest.mark.parametrize("module, shape", [("BatchNorm2d", (4, 8, 3, 3)), ("BatchNorm2d", (4, 1, 3, 3)),
                                           ("BatchNorm2d", (4, 9, 1, 1)), ("BatchNorm3d", (4, 3, 2, 3, 3))])
def test_batchnorm_channels_last(T, nn, module, shape):
    fmt = T.channels_last if len(shape) == 4 else T.channels_last_3d
    T.manual_seed(0)
    x = T.randn(shape).contiguous(memory_format=fmt).requires_grad_()
    grad = T.randn(shape).contiguous(memory_format=fmt)
    bn = getattr(nn, module)(shape[1])
    with T.no_grad():
        bn.weight.uniform_()
        bn.bias.uniform_()
    ref_x = x.detach().clone().contiguous().requires_grad_()
    ref_bn = getattr(nn, module)(shape[1])
    ref_bn.load_state_dict(bn.state_dict())
    out = bn(x)
    out.backward(grad)
    ref_out = ref_bn(ref_x)
    ref_out.backward(grad.contiguous())
    assert out.is_contiguous(memory_format=fmt)
    assert ref_out.is_contiguous()
    close(out, values(ref_out), rtol=1e-5, atol=1e-6)
    close(bn.weight.grad, values(ref_bn.weight.grad), rtol=1e-4, atol=1e-5)
    close(bn.bias.grad, values(ref_bn.bias.grad), rtol=1e-5, atol=1e-5)
    close(x.grad, values(ref_x.grad), rtol=1e-4, atol=1e-5)
    xv = values(x).astype(np.float64)
    axes = (0,) + tuple(range(2, len(shape)))
    close(bn.running_mean, 0.1 * xv.mean(axes), rtol=1e-4, atol=1e-6)


def test_batchnorm_half_sums_do_not_overflow(T, nn):
    T.manual_seed(0)
    x = T.randn(4, 2, 130, 130).half()          # 67600 values a channel: Σx² passes float16's 65504
    bn = nn.BatchNorm2d(2).half()
    out = bn(x)
    assert out.dtype == T.float16
    assert not out.isinf().any() and not out.isnan().any()
    ref = nn.BatchNorm2d(2)(x.float())
    close(out.float(), values(ref), rtol=1e-3, atol=2e-3)
    xv = values(x).astype(np.float64)
    close(bn.running_mean.float(), 0.1 * xv.mean((0, 2, 3)), atol=1e-3)
    close(bn.running_var.float(), 0.9 + 0.1 * xv.var((0, 2, 3), ddof=1), rtol=1e-3)


def test_batchnorm_half_module(T, nn):
    x = T.tensor(uniform((4, 3, 2, 2), 1, 10, seed=9).round(), dtype=T.float16, requires_grad=True)
    bn = nn.BatchNorm2d(3).half()
    out = bn(x)
    out.sum().backward()
    assert out.dtype == T.float16 and x.grad.dtype == T.float16
    xv = values(x).astype(np.float64)
    close(out.float(), (xv - xv.mean((0, 2, 3), keepdims=True)) / np.sqrt(xv.var((0, 2, 3), keepdims=True) + 1e-5),
          rtol=2e-3, atol=2e-3)
    close(x.grad.float(), np.zeros((4, 3, 2, 2)), atol=2e-3)


# -- SyncBatchNorm on one process, convert_sync_batchnorm -----------------------------------------

def test_sync_batchnorm_convert(T, nn):
    module = nn.Sequential(nn.BatchNorm1d(100), nn.InstanceNorm1d(100))
    comp_module = nn.Sequential(nn.BatchNorm1d(100), nn.InstanceNorm1d(100))
    comp_module.load_state_dict(module.state_dict())
    weight = module[0].weight
    sync_bn_module = nn.SyncBatchNorm.convert_sync_batchnorm(module)
    children = list(sync_bn_module.children())
    assert children[0].__class__ is nn.SyncBatchNorm
    assert children[1].__class__ is nn.InstanceNorm1d
    assert children[0].weight is weight                   # the same parameters, not copies
    for layer, converted in zip(comp_module.children(), sync_bn_module.children()):
        assert list(layer.state_dict()) == list(converted.state_dict())
        for key in layer.state_dict():
            same(converted.state_dict()[key], values(layer.state_dict()[key]))


def test_sync_batchnorm_convert_keeps_no_bias_and_qconfig(T, nn):
    bn = nn.BatchNorm2d(3, bias=False)
    bn.qconfig = "a qconfig"
    sync = nn.SyncBatchNorm.convert_sync_batchnorm(bn)
    assert type(sync) is nn.SyncBatchNorm and sync.bias is None and sync.weight is bn.weight
    assert sync.qconfig == "a qconfig"
    assert list(sync.state_dict()) == ["weight", "running_mean", "running_var", "num_batches_tracked"]
    assert repr(sync) == "SyncBatchNorm(3, eps=1e-05, momentum=0.1, affine=True, bias=False, track_running_stats=True)"
    untracked = nn.SyncBatchNorm.convert_sync_batchnorm(nn.BatchNorm1d(2, affine=False, track_running_stats=False))
    assert untracked.weight is None and untracked.running_mean is None and list(untracked.state_dict()) == []


def test_sync_batchnorm_without_a_process_group_is_batchnorm(T, nn):
    x = T.tensor(uniform((4, 3, 2, 2), -1, 1, seed=10), requires_grad=True)
    sync, bn = nn.SyncBatchNorm(3, momentum=None), nn.BatchNorm2d(3, momentum=None)
    out = sync(x)
    out.sum().backward()
    grad = x.grad.clone()
    x.grad = None
    ref = bn(x)
    ref.sum().backward()
    close(out, values(ref), rtol=1e-6, atol=1e-6)
    close(grad, values(x.grad), atol=1e-6)
    for a, b in ((sync.running_mean, bn.running_mean), (sync.running_var, bn.running_var)):
        close(a, values(b), rtol=1e-6)
    same(sync.num_batches_tracked, 1)
    xv = values(x)
    close(sync.running_mean, xv.mean((0, 2, 3)), rtol=1e-5, atol=1e-7)        # momentum None, one batch
    sync.eval()
    close(sync(x), (xv - values(sync.running_mean).reshape(1, 3, 1, 1))
          / np.sqrt(values(sync.running_var).reshape(1, 3, 1, 1) + 1e-5), rtol=1e-5, atol=1e-6)


def test_sync_batchnorm_input_checks(T, nn):
    raises(ValueError, r"expected at least 2D input \(got 1D input\)", nn.SyncBatchNorm(3), T.rand(3))
    raises(ValueError, "SyncBatchNorm number of input channels should be non-zero", nn.SyncBatchNorm(0),
           T.rand(2, 0, 3))


# -- InstanceNorm ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cls, shape", [("InstanceNorm1d", (3, 4, 9)), ("InstanceNorm2d", (4, 3, 7, 5)),
                                        ("InstanceNorm3d", (3, 5, 3, 4, 2))])
def test_instance_norm_general(T, nn, cls, shape):
    b, c = shape[:2]
    x = T.tensor(uniform(shape, seed=11), requires_grad=True)
    IN = getattr(nn, cls)(c, eps=0)
    output = IN(x)
    out_reshaped = output.view(b * c, -1)
    close(out_reshaped.mean(1), np.zeros(b * c), atol=1e-5)
    close(out_reshaped.var(1, unbiased=False), np.ones(b * c), atol=1e-5)
    xv = values(x).reshape(b, c, -1).astype(np.float64)
    close(output, ((xv - xv.mean(2, keepdims=True)) / xv.std(2, keepdims=True)).reshape(shape), rtol=1e-4, atol=1e-5)

    # without running statistics eval mode changes nothing
    grad_out = T.tensor(uniform(shape, -1, 1, seed=12))
    res1 = output.detach().clone()
    output.backward(grad_out)
    grad1 = x.grad.clone()
    IN.eval()
    x.grad = None
    output = IN(x)
    output.backward(grad_out)
    same(output, values(res1))
    same(x.grad, values(grad1))

    # momentum 1 and running statistics: they become the batch's (the unbiased variance of each instance, averaged)
    IN = getattr(nn, cls)(c, momentum=1, eps=0, track_running_stats=True)
    IN(x)
    close(IN.running_mean, xv.transpose(1, 0, 2).reshape(c, -1).mean(1), atol=1e-5)
    close(IN.running_var, xv.var(2, ddof=1).mean(0), atol=1e-5)
    # in eval mode adding X·std to a channel makes that channel's output have mean X
    IN.eval()
    delta = (IN.running_var.sqrt() * T.arange(c, dtype=T.float32)).view(-1, *[1] * (len(shape) - 2))
    output = IN(x + delta)
    close(output.transpose(0, 1).reshape(c, -1).mean(1), np.arange(c, dtype=np.float32), atol=1e-5)


@pytest.mark.parametrize("cls", ["InstanceNorm1d", "InstanceNorm2d", "InstanceNorm3d"])
@pytest.mark.parametrize("no_batch_dim", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_instancenorm_raises_error_if_input_channels_is_not_num_features(T, nn, cls, no_batch_dim, affine):
    inst_norm = getattr(nn, cls)(4, affine=affine)
    size = [2] * inst_norm._get_no_batch_dim()
    if not no_batch_dim:
        size = [3] + size
    t = T.randn(size)
    if affine:
        raises(ValueError, f"expected input's size at dim={0 if no_batch_dim else 1} to match num_features "
                           r"\(4\), but got: 2.", inst_norm, t)
    else:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            out = inst_norm(t)
        assert "which is not used because affine=False" in str(w[0].message)
        tv = values(t).reshape(2 if no_batch_dim else (3, 2), -1) if no_batch_dim else values(t).reshape(3, 2, -1)
        close(out.reshape(tv.shape), (tv - tv.mean(-1, keepdims=True)) / np.sqrt(tv.var(-1, keepdims=True) + 1e-5),
              rtol=1e-4, atol=1e-5)


def test_instancenorm_raises_error_if_less_than_one_value_per_channel(T, nn):
    x = T.rand(10)[None, :, None]
    raises(ValueError, r"Expected more than 1 spatial element when training, got input size", nn.InstanceNorm1d(10), x)


@pytest.mark.parametrize("spatial", [1, 2, 3])
def test_instancenorm_raises_error_for_single_spatial_element_during_training(T, nn, spatial):
    m = getattr(nn, f"InstanceNorm{spatial}d")(3, track_running_stats=True)
    x = T.randn(10, 3, *[1] * spatial)
    raises(ValueError, r"Expected more than 1 spatial element when training, got input size "
           rf"(torch.Size\()?\[10, 3{', 1' * spatial}\]", m, x)
    m.eval()                                          # eval: the running mean 0 and variance 1
    close(m(x), values(x) / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_instancenorm_eval_uses_running_statistics(T, nn):
    m = nn.InstanceNorm1d(3, track_running_stats=True).eval()
    x = uniform((2, 3, 1), seed=13)
    close(m(T.tensor(x)), x / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_instance_norm_functional_with_running_stats(T, F):
    x = uniform((2, 3, 5), seed=14).astype(np.float64)
    rm, rv = T.tensor([0.5, -0.5, 0.0], dtype=T.float64), T.tensor([1.0, 2.0, 3.0], dtype=T.float64)
    w, b = T.tensor([1.0, 2.0, 3.0], dtype=T.float64), T.tensor([0.0, 1.0, -1.0], dtype=T.float64)
    out = F.instance_norm(T.tensor(x), rm, rv, w, b, use_input_stats=False, eps=1e-3)
    close(out, batch_norm_reference(x, values(rm), values(rv), values(w), values(b), 1e-3), rtol=1e-12)
    same(rm, [0.5, -0.5, 0.0])
    out = F.instance_norm(T.tensor(x), rm, rv, w, b, use_input_stats=True, momentum=0.5, eps=1e-3)
    normed = (x - x.mean(2, keepdims=True)) / np.sqrt(x.var(2, keepdims=True) + 1e-3)
    close(out, normed * values(w)[:, None] + values(b)[:, None], rtol=1e-10)
    close(rm, 0.5 * np.array([0.5, -0.5, 0.0]) + 0.5 * x.mean(2).mean(0), rtol=1e-12)
    close(rv, 0.5 * np.array([1.0, 2.0, 3.0]) + 0.5 * x.var(2, ddof=1).mean(0), rtol=1e-12)


# -- LayerNorm ------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, normalized_ndim", [((3, 4), 1), ((4, 3, 5), 2), ((3, 5, 4, 3), 1),
                                                    ((3, 3, 4, 5, 3), 3)])
@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_layer_norm_general(T, nn, shape, normalized_ndim, dtype):
    x = T.tensor(uniform(shape, 0, 10, seed=15), dtype=getattr(T, dtype))
    normalized_shape = list(shape[-normalized_ndim:])
    unnormalized_shape = list(shape[:-normalized_ndim])
    ln = nn.LayerNorm(normalized_shape, eps=0).to(getattr(T, dtype))
    delta = 1e-1 if dtype == "float16" else 1e-5
    out = ln(x).float().view(*(unnormalized_shape + [-1]))
    assert ln(x).dtype == getattr(T, dtype)
    close(out.mean(-1).abs().mean(), 0.0, atol=delta)
    close(out.var(-1, unbiased=False).abs().mean(), 1.0, atol=delta)
    scale, bias = 1.5, 0.4
    with T.no_grad():
        ln.weight.fill_(scale)
        ln.bias.fill_(bias)
    out = ln(x).float().view(*(unnormalized_shape + [-1]))
    close(out.mean(-1).abs().mean(), bias, atol=delta)
    close(out.var(-1, unbiased=False).abs().mean(), scale ** 2, atol=delta * 3)


@pytest.mark.parametrize("norm_shape, input_shape", [((), ()), ((2, 3), (3,)), ((2,), (1, 2, 3)), ((10,), (2, 3)),
                                                     (10, (2, 3))])
def test_layer_norm_bad_shapes(T, nn, norm_shape, input_shape):
    ln = nn.LayerNorm(norm_shape)
    raises(RuntimeError, "", ln, T.rand(input_shape) * 10)


def test_layer_norm_numeric(T, nn):
    normalized_shape = [6, 5, 4]
    ln = nn.LayerNorm(normalized_shape)
    with T.no_grad():
        ln.weight.copy_(T.tensor(uniform(normalized_shape, 0.5, 2, seed=16)))
        ln.bias.copy_(T.tensor(uniform(normalized_shape, -1, 1, seed=17)))
    x = uniform([2] + normalized_shape, seed=18)
    rows = x.reshape(2, -1).astype(np.float64)
    ref = (rows - rows.mean(-1, keepdims=True)) / np.sqrt(rows.var(-1, keepdims=True) + 1e-5)
    ref = ref * values(ln.weight).reshape(-1) + values(ln.bias).reshape(-1)
    close(ln(T.tensor(x)), ref.reshape(x.shape), rtol=0, atol=1e-5)


def test_layer_norm_grads_with_create_graph_flag(T, nn):
    x = T.tensor(uniform((4, 4, 16), -1, 1, seed=19), requires_grad=True)
    layer_norm = nn.LayerNorm((16,), 1e-5, True)
    with T.no_grad():
        layer_norm.weight.copy_(T.tensor(uniform(16, 0.5, 1.5, seed=20)))
    grads1 = T.autograd.grad(layer_norm(x).sum(), x, create_graph=False)[0]
    grads2 = T.autograd.grad(layer_norm(x).sum(), x, create_graph=True)[0]
    close(grads1, values(grads2), rtol=1e-6, atol=1e-6)
    assert grads2.requires_grad and not grads1.requires_grad
    # Σ over the normalised values of dy/dx with γ = 1 would vanish; with γ the rows of the gradient sum to 0
    close(grads1.sum(-1), np.zeros((4, 4)), atol=1e-5)


def test_layer_norm_eps_of_constant_rows(T, nn):
    x = T.tensor([[[2.0, 2.0], [14.0, 14.0]], [[2.0, 2.0], [14.0, 14.0]]])
    ln = nn.LayerNorm(2, eps=1e-6, elementwise_affine=False)
    same(ln(x), np.zeros((2, 2, 2), np.float32))


def test_layer_norm_weight_or_bias_none(T):
    x = T.tensor(uniform((1, 5, 16), seed=21) * 0.1)
    data = T.tensor(uniform(16, -1, 1, seed=22))
    ones, zeros = T.ones(16), T.zeros(16)
    # (PyTorch's CPU kernel takes another path without a weight: a unit in the last place apart)
    close(T.layer_norm(x, (16,), None, data, 1e-5), values(T.layer_norm(x, (16,), ones, data, 1e-5)), atol=2e-7)
    close(T.layer_norm(x, (16,), data, None, 1e-5), values(T.layer_norm(x, (16,), data, zeros, 1e-5)), atol=2e-7)


def test_layer_and_group_norm_of_an_empty_batch(T, nn):
    empty_input_backward(T, nn.GroupNorm(2, 4), T.randn(0, 4, 2, 2))
    empty_input_backward(T, nn.LayerNorm((2, 2)), T.randn(0, 4, 2, 2))


# -- GroupNorm ------------------------------------------------------------------------------------

GOOD_SHAPE_GROUPS = {(1, 2, 3, 4): 2, (2, 3, 10): 3, (3, 1, 1, 1, 2): 1, (2, 6, 4, 2, 2): 3, (1, 256, 1, 1): 32}


@pytest.mark.parametrize("shape", list(GOOD_SHAPE_GROUPS))
@pytest.mark.parametrize("grad", [True, False])
def test_group_norm_general(T, nn, shape, grad):
    g = GOOD_SHAPE_GROUPS[shape]
    b, c = shape[:2]
    x = T.tensor(uniform(shape, 0, 10, seed=23), requires_grad=grad)
    gn = nn.GroupNorm(g, c, eps=0)
    output = gn(x)
    out_reshaped = output.view(b, g, -1)
    close(out_reshaped.mean(-1).abs().mean(), 0.0, atol=1e-5)
    close(out_reshaped.var(-1, unbiased=False).abs().mean(), 1.0, atol=1e-5)
    if grad:
        output.backward(T.tensor(uniform(shape, -1, 1, seed=24)))
        close(x.grad.view(b, g, -1).sum(-1), np.zeros((b, g)), atol=1e-3)   # normalising forgets the group's mean
    scale = T.tensor(uniform(c, 0.2, 2, seed=25))
    bias = T.tensor(uniform(c, 0.2, 2, seed=26))
    with T.no_grad():
        gn.weight.copy_(scale)
        gn.bias.copy_(bias)
    output = gn(x)
    out_normed = (output.view(b, c, -1) - bias.view(c, 1)) / scale.view(c, 1)
    close(out_normed.view(b, g, -1).mean(-1).abs().mean(), 0.0, atol=1e-5)
    close(out_normed.view(b, g, -1).var(-1, unbiased=False).abs().mean(), 1.0, atol=1e-5)


@pytest.mark.parametrize("shape, g", [((1, 2, 3, 4), 3), ((2, 3, 10), 2), ((3, 1, 1, 1, 2), 10), ((2, 6, 4, 2, 2), 4)])
def test_group_norm_bad_groups(T, nn, shape, g):
    raises(ValueError, rf"num_channels \({shape[1]}\) must be divisible by num_groups \({g}\)", nn.GroupNorm, g,
           shape[1])


def test_group_norm_raises_error_if_one_value_per_group(T, nn):
    raises(ValueError, r"Expected more than 1 value per channel when training, got input size "
           r"(torch.Size\()?\[1, 10, 1\]", nn.GroupNorm(10, 10), T.rand(10)[None, :, None])


def test_group_norm_numeric(T, nn):
    groups, channels = 2, 8
    gn = nn.GroupNorm(groups, channels)
    with T.no_grad():
        gn.weight.copy_(T.tensor(uniform(channels, 0.5, 2, seed=27)))
        gn.bias.copy_(T.tensor(uniform(channels, -1, 1, seed=28)))
    x = uniform((1, channels, 16, 16, 9), seed=29)
    view = x.reshape(1, groups, -1).astype(np.float64)
    ref = ((view - view.mean(-1, keepdims=True)) / np.sqrt(view.var(-1, keepdims=True) + 1e-5)).reshape(1, channels, -1)
    ref = ref * values(gn.weight)[:, None] + values(gn.bias)[:, None]
    close(gn(T.tensor(x)), ref.reshape(x.shape), rtol=0, atol=1e-5)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("size, groups", [((4, 8, 5, 5), 4), ((2, 30, 3, 3), 3), ((2, 9, 3, 4, 5), 3)])
def test_group_norm_channels_last(T, nn, dtype, size, groups):
    fmt = T.channels_last if len(size) == 4 else T.channels_last_3d
    dt = getattr(T, dtype)
    T.manual_seed(0)
    x = T.randn(size, dtype=dt).contiguous(memory_format=fmt).requires_grad_()
    grad = T.randn(size, dtype=dt).contiguous(memory_format=fmt)
    gn = nn.GroupNorm(groups, size[1]).to(dt)
    with T.no_grad():
        gn.weight.uniform_()
        gn.bias.uniform_()
    ref_x = x.detach().clone().contiguous().requires_grad_()
    ref_gn = nn.GroupNorm(groups, size[1]).to(dt)
    ref_gn.load_state_dict(gn.state_dict())
    out = gn(x)
    out.backward(grad)
    ref_out = ref_gn(ref_x)
    ref_out.backward(grad.contiguous())
    assert out.is_contiguous(memory_format=fmt)
    close(out, values(ref_out), rtol=1e-5, atol=1e-6)
    close(gn.weight.grad, values(ref_gn.weight.grad), rtol=8e-3, atol=5e-4)
    close(gn.bias.grad, values(ref_gn.bias.grad), rtol=8e-3, atol=5e-4)
    close(x.grad, values(ref_x.grad), rtol=8e-3, atol=5e-4)


def test_group_norm_grad_and_double_backward(T, F):
    T.manual_seed(0)
    x = T.randn(2, 6, 3, dtype=T.float64, requires_grad=True)
    w = T.randn(6, dtype=T.float64, requires_grad=True)
    b = T.randn(6, dtype=T.float64, requires_grad=True)
    check_grads(T, lambda x, w, b: F.group_norm(x, 3, w, b, eps=1e-3), x, w, b)


# -- RMSNorm --------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_rms_norm_numeric(T, F, dtype):
    shape = (1, 2, 3)
    x = T.tensor(uniform(shape, seed=30), dtype=getattr(T, dtype))
    w = T.tensor(uniform(shape, seed=31), dtype=getattr(T, dtype))
    y = F.rms_norm(x, shape, w, 0.5)
    assert y.dtype == getattr(T, dtype)
    xf = values(x).astype(np.float32)
    ref = xf / np.sqrt((xf * xf).mean() + np.float32(0.5)) * values(w).astype(np.float32)
    close(y.float(), ref.astype(dtype).astype(np.float32), rtol=0, atol=1e-3 if dtype == "float16" else 1e-6)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_rms_norm_eps_none_is_the_dtype_epsilon(T, nn, dtype):
    x = T.full((2, 4), 1e-8, dtype=getattr(T, dtype))
    m = nn.RMSNorm(4, dtype=getattr(T, dtype))
    assert m.eps is None
    eps = np.finfo(dtype).eps
    expected = 1e-8 / np.sqrt(1e-16 + eps)                   # the epsilon dominates the tiny mean square
    close(m(x), np.full((2, 4), expected), rtol=1e-5)
    close(nn.RMSNorm(4, eps=0.0, dtype=getattr(T, dtype))(x), np.ones((2, 4)), rtol=1e-5)


def test_rms_norm_no_affine_and_grad(T, nn, F):
    m = nn.RMSNorm([2, 3], elementwise_affine=False)
    assert m.weight is None and list(m.state_dict()) == []
    assert repr(m) == "RMSNorm((2, 3), eps=None, elementwise_affine=False)"
    T.manual_seed(0)
    x = T.randn(4, 2, 3, dtype=T.float64, requires_grad=True)
    w = T.randn(2, 3, dtype=T.float64, requires_grad=True)
    check_grads(T, lambda x, w: F.rms_norm(x, (2, 3), w, 1e-3), x, w)


# -- LocalResponseNorm ----------------------------------------------------------------------------

def lrn_reference(x, size, alpha, beta, k):
    sq = x.astype(np.float64) ** 2
    c = x.shape[1]
    total = np.zeros_like(sq)
    for ch in range(c):
        lo, hi = max(0, ch - size // 2), min(c, ch + (size - 1) // 2 + 1)
        total[:, ch] = sq[:, lo:hi].sum(1)
    return x / (k + alpha / size * total) ** beta


@pytest.mark.parametrize("args, shape", [((3,), (1, 5, 7)), ((2,), (1, 5, 7, 7)),
                                         ((5, 1e-3, 0.5, 2), (1, 5, 7, 7, 7))])
def test_local_response_norm(T, nn, args, shape):
    x = uniform(shape, -2, 2, seed=32).astype(np.float64)
    size, alpha, beta, k = (args + (1e-4, 0.75, 1.0)[len(args) - 1:])[:4]
    m = nn.LocalResponseNorm(*args)
    close(m(T.tensor(x)), lrn_reference(x, size, alpha, beta, k), rtol=1e-10, atol=1e-12)
    xs = T.tensor(x[(Ellipsis,) + (slice(0, 2),) * (len(shape) - 2)], requires_grad=True)
    check_grads(T, m, xs)


def test_local_response_norm_empty(T, nn):
    m = nn.LocalResponseNorm(2)
    x = T.ones(0, 5, 4, 4, requires_grad=True)
    out = m(x)
    assert tuple(out.shape) == (0, 5, 4, 4)
    out.backward(T.rand_like(out))
    same(x.grad, np.zeros((0, 5, 4, 4), np.float32))


def test_local_response_norm_needs_three_dims(T, F):
    raises(ValueError, r"Expected 3D or higher dimensionality\s+input \(got 2 dimensions\)", F.local_response_norm,
           T.rand(2, 3), 2)


# -- fusing batch norm into the layer before it ---------------------------------------------------

def test_fuse_conv_and_linear_bn_weights(T, nn):
    from importlib import import_module

    fusion = import_module(f"{nn.__name__}.utils.fusion")
    conv, bn = nn.Conv2d(3, 3, 3), nn.BatchNorm2d(3)
    for w_rg in (True, False):
        for b_rg in (True, False):
            conv.weight.requires_grad = w_rg
            conv.bias.requires_grad = b_rg
            weight, bias = fusion.fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var,
                                                       bn.eps, bn.weight, bn.bias)
            assert weight.requires_grad == w_rg and bias.requires_grad == b_rg
    linear, bn1 = nn.Linear(3, 3), nn.BatchNorm1d(3)
    for w_rg in (True, False):
        for b_rg in (True, False):
            linear.weight.requires_grad = w_rg
            linear.bias.requires_grad = b_rg
            weight, bias = fusion.fuse_linear_bn_weights(linear.weight, linear.bias, bn1.running_mean,
                                                         bn1.running_var, bn1.eps, bn1.weight, bn1.bias)
            assert weight.requires_grad == w_rg and bias.requires_grad == b_rg
    # the fused layer computes the pair's eval output
    with T.no_grad():
        bn1.running_mean.copy_(T.tensor([0.5, -1.0, 2.0]))
        bn1.running_var.copy_(T.tensor([2.0, 0.5, 1.5]))
        bn1.weight.copy_(T.tensor([1.5, -0.5, 2.0]))
        bn1.bias.copy_(T.tensor([0.1, 0.2, 0.3]))
    x = T.tensor(uniform((4, 3), -1, 1, seed=33))
    fused = fusion.fuse_linear_bn_eval(linear.eval(), bn1.eval())
    close(fused(x), values(bn1(linear(x))), rtol=1e-5, atol=1e-6)
    xv, lw, lb = values(x), values(linear.weight), values(linear.bias)
    close(fused(x), batch_norm_reference(xv @ lw.T + lb, np.array([0.5, -1.0, 2.0]), np.array([2.0, 0.5, 1.5]),
                                         np.array([1.5, -0.5, 2.0]), np.array([0.1, 0.2, 0.3]), 1e-5),
          rtol=1e-5, atol=1e-6)


# -- float16 inputs with float16 or float32 parameters (PyTorch's CPU "mixed dtype" kernels) --------

@pytest.mark.parametrize("elementwise_affine", [True, False])
def test_layer_norm_half_and_mixed_dtype(T, nn, elementwise_affine):
    from copy import deepcopy

    x = T.tensor(uniform((2, 3, 11, 3), 1, 10, seed=34).round(), dtype=T.float16)
    m = nn.LayerNorm([11, 3], elementwise_affine=elementwise_affine).half()
    x_fp32 = x.float().requires_grad_()
    out_fp32 = deepcopy(m).float()(x_fp32)
    out_fp32.sum().backward()
    x_half, x_mix = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_half = deepcopy(m)(x_half)
    out_half.sum().backward()
    out_mix = deepcopy(m).float()(x_mix)
    out_mix.sum().backward()
    assert out_half.dtype == out_mix.dtype == T.float16
    close(out_half, values(out_fp32.half()), rtol=1e-3, atol=1e-3)
    close(out_mix, values(out_fp32.half()), rtol=1e-3, atol=1e-3)
    close(x_half.grad.float(), values(x_fp32.grad), rtol=1e-1, atol=1e-1)
    close(x_mix.grad.float(), values(x_fp32.grad), rtol=1e-1, atol=1e-1)
    xv = values(x).astype(np.float64).reshape(6, -1)
    ref = (xv - xv.mean(1, keepdims=True)) / np.sqrt(xv.var(1, keepdims=True) + 1e-5)
    close(out_fp32, ref.reshape(2, 3, 11, 3), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, g", [((1, 8, 4, 3), 2), ((1, 8, 3, 4), 4), ((1, 9, 3, 4, 5), 3), ((1, 3, 5, 5), 1)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_group_norm_half_and_mixed_dtype(T, nn, shape, g, channels_last):
    from copy import deepcopy

    T.manual_seed(0)
    x = T.randn(shape).half()
    if channels_last:
        x = x.contiguous(memory_format=T.channels_last if len(shape) == 4 else T.channels_last_3d)
    x_half, x_mix = x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    x_f = x.float().detach().requires_grad_()
    m_half = nn.GroupNorm(g, shape[1]).half()
    m_f = deepcopy(m_half).float()
    m_f2 = deepcopy(m_f)
    out, out2, out3 = m_half(x_half), m_f(x_mix), m_f2(x_f)
    assert out.dtype == out2.dtype == T.float16
    close(out.float(), values(out2.float()), rtol=5e-3, atol=5e-3)
    close(out2.float(), values(out3), rtol=5e-3, atol=5e-3)
    grad = T.randn(shape).half()
    out2.backward(grad)
    out3.backward(grad.float())
    out.backward(grad)
    close(m_f.weight.grad, values(m_f2.weight.grad), rtol=1e-3, atol=1e-3)
    close(m_f.bias.grad, values(m_f2.bias.grad), rtol=1e-3, atol=1e-3)
    close(x_mix.grad.float(), values(x_f.grad), rtol=5e-3, atol=5e-3)
    close(m_half.weight.grad.float(), values(m_f.weight.grad), rtol=1.5e-2, atol=5e-2)
    close(x_half.grad.float(), values(x_mix.grad.float()), rtol=1.5e-2, atol=5e-3)
    xv = values(x).astype(np.float64).reshape(1, g, -1)
    ref = ((xv - xv.mean(2, keepdims=True)) / np.sqrt(xv.var(2, keepdims=True) + 1e-5)).reshape(shape)
    close(out3, ref, rtol=1e-4, atol=1e-4)


def test_cross_map_lrn2d(T, nn):
    x = uniform((2, 3, 4, 4), -2, 2, seed=35).astype(np.float64)
    m = nn.CrossMapLRN2d(5, 5e-3, 1e-3, 2)
    xt = T.tensor(x, requires_grad=True)
    out = m(xt)
    # PyTorch's port of Lua's LRN: with C ≤ ⌊(size − 1)/2⌋ + 1 channels its window is LocalResponseNorm's
    close(out, lrn_reference(x, 5, 5e-3, 1e-3, 2), rtol=1e-10)
    if not ported_nn.on_chainrule(T):
        return  # PyTorch's hand-written backward is not its forward's derivative (nn/cross_map_lrn.py says so)
    assert T.autograd.gradcheck(lambda a: nn.CrossMapLRN2d(3, 1e-2, 0.75, 1)(a), (xt[:1, :, :2, :2],), eps=1e-6,
                                atol=1e-5)
