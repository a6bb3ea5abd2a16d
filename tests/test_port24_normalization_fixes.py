"""Fixes found porting PyTorch's normalisation tests (tests/test_ported_normalization.py): GroupNorm keeps a
channels-last input's layout; ``batch_norm_update_stats``; running statistics that require grad are refused (and in
eval a tangent on them beside the input's); a BatchNorm module counts a batch before its checks; convert_sync_batchnorm
keeps bias=False and qconfig and converts a SyncBatchNorm too; the norms refuse integer inputs and wrongly sized
parameters with PyTorch's errors. Each test runs on chainrule and, where installed, on PyTorch, against literals or
NumPy."""

import importlib

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def test_group_norm_output_follows_a_channels_last_input(T, nn):
    x = T.arange(16.0).reshape(1, 4, 2, 2).contiguous(memory_format=T.channels_last)
    out = nn.GroupNorm(2, 4)(x)
    assert out.is_contiguous(memory_format=T.channels_last) and not out.is_contiguous()
    g = np.arange(16.0).reshape(2, 8)
    expected = ((g - g.mean(1, keepdims=True)) / np.sqrt(g.var(1, keepdims=True) + 1e-5)).reshape(1, 4, 2, 2)
    close(out, expected, rtol=1e-5, atol=1e-6)
    assert nn.GroupNorm(2, 4)(x.contiguous()).is_contiguous()      # a row-major input stays row-major


def test_batch_norm_update_stats_returns_the_batch_statistics(T):
    x = T.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 10.0]])
    running_mean, running_var = T.zeros(2), T.ones(2)
    mean, var = T.batch_norm_update_stats(x, running_mean, running_var, 0.5)
    same(mean, np.array([3.0, 6.0], np.float32))
    close(var, [8 / 3, 32 / 3], rtol=1e-6)                            # biased
    close(running_mean, [1.5, 3.0], rtol=1e-6)
    close(running_var, [0.5 + 0.5 * 4.0, 0.5 + 0.5 * 16.0], rtol=1e-6)  # moved with the unbiased variance
    assert not mean.requires_grad
    raises(RuntimeError, r"input tensor must have at least one element, but got input_sizes = \[0, 3\]",
           T.batch_norm_update_stats, T.rand(0, 3), None, None, 0.1)


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("which", ["running_mean", "running_var"])
def test_running_stats_that_require_grad_are_refused(T, F, training, which):
    x = T.randn(3, 2, 4)
    stats = {"running_mean": T.zeros(2), "running_var": T.ones(2)}
    stats[which].requires_grad_()
    raises(RuntimeError, f"The function 'native_batch_norm' is not differentiable with respect to argument '{which}'. "
           "This input cannot have requires_grad True.", F.batch_norm, x, training=training, **stats)
    raises(RuntimeError, f"not differentiable with respect to argument '{which}'", F.instance_norm, x,
           use_input_stats=training, **stats)
    with T.no_grad():                                                 # outside grad mode they normalise
        out = F.batch_norm(x, stats["running_mean"], stats["running_var"], training=False)
    close(out, values(x) / np.sqrt(1 + 1e-5), rtol=1e-6)


def test_running_stats_with_a_tangent_in_eval_are_refused(T, F):
    fwAD = T.autograd.forward_ad
    x, rm, rv = T.tensor([[1.0, 2.0], [3.0, 5.0]]), T.tensor([1.0, 2.0]), T.tensor([4.0, 1.0])
    with fwAD.dual_level():
        dual_x = fwAD.make_dual(x, T.ones(2, 2))
        dual_rm = fwAD.make_dual(rm, T.ones(2))
        raises(RuntimeError, "batch_norm is not differentiable wrt running_mean and running_var", F.batch_norm,
               dual_x, dual_rm, rv)
        raises(RuntimeError, "batch_norm is not differentiable wrt running_mean and running_var", F.instance_norm,
               dual_x[None], dual_rm, rv, use_input_stats=False)
        out = F.batch_norm(dual_x, rm, rv, eps=0.0)                   # the input's tangent alone flows
        close(fwAD.unpack_dual(out).tangent, [[0.5, 1.0], [0.5, 1.0]], rtol=1e-6)
        out = F.batch_norm(dual_x, dual_rm, rv, training=True)        # training ignores them: allowed
        assert tuple(out.shape) == (2, 2)


def test_a_refused_training_batch_is_still_counted(T, nn):
    bn = nn.BatchNorm1d(3)
    raises(ValueError, r"Expected more than 1 value per channel when training, got input size "
           r"(torch.Size\(\[1, 3\]\)|\(1, 3\))", bn, T.ones(1, 3))
    same(bn.num_batches_tracked, 1)
    raises(ValueError, "eps must be positive", nn.BatchNorm1d(3, eps=0.0), T.ones(2, 3))
    same(bn.running_mean, np.zeros(3, np.float32))                    # the statistics did not move


def test_momentum_none_counts_a_mixed_precision_batch_once(T, nn):
    bn = nn.BatchNorm1d(2, momentum=None)                             # float32 statistics, float16 batches
    first, second = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[5.0, 0.0], [7.0, 2.0]])
    bn(T.tensor(first, dtype=T.float16))
    bn(T.tensor(second, dtype=T.float16))
    same(bn.num_batches_tracked, 2)
    close(bn.running_mean, (first.mean(0) + second.mean(0)) / 2, rtol=1e-6)      # [4, 2]
    close(bn.running_var, (first.var(0, ddof=1) + second.var(0, ddof=1)) / 2, rtol=1e-6)


def test_convert_sync_batchnorm_like_pytorch(T, nn):
    bn = nn.BatchNorm1d(4, bias=False, momentum=0.3)
    bn.qconfig = "qat"
    bn.eval()
    sync = nn.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(bn))[0]
    assert type(sync) is nn.SyncBatchNorm and sync.bias is None and sync.weight is bn.weight
    assert sync.qconfig == "qat" and not sync.training and sync.momentum == 0.3
    assert sync.running_mean is bn.running_mean and sync.num_batches_tracked is bn.num_batches_tracked
    again = nn.SyncBatchNorm.convert_sync_batchnorm(sync)             # a SyncBatchNorm is made anew too
    assert type(again) is nn.SyncBatchNorm and again is not sync and again.weight is sync.weight
    raises(ValueError, "SyncBatchNorm number of input channels should be non-zero", nn.SyncBatchNorm(0),
           T.rand(2, 0))


@pytest.mark.parametrize("dtype", ["int64", "bool"])
def test_norms_refuse_integer_and_bool_inputs(T, F, dtype):
    x = T.ones(2, 4, 3, dtype=getattr(T, dtype))
    name = "Long" if dtype == "int64" else "Bool"
    raises(NotImplementedError, f'"batch_norm" not implemented for \'{name}\'', F.batch_norm, x, None, None,
           training=True)
    raises(NotImplementedError, f'"batch_norm" not implemented for \'{name}\'', F.instance_norm, x)
    raises(NotImplementedError, f'"GroupNormKernelImpl" not implemented for \'{name}\'', F.group_norm, x, 2)
    raises(NotImplementedError, f'"rms_norm" not implemented for \'{name}\'', F.rms_norm, x, (3,))


def test_norms_refuse_wrongly_sized_parameters(T, F):
    x = T.randn(2, 3, 4)
    three, two = T.ones(3), T.ones(2)
    raises(RuntimeError, "weight should contain 3 elements not 2", F.batch_norm, x, three, three, two)
    raises(RuntimeError, "bias should contain 3 elements not 2", F.batch_norm, x, three, three, None, two)
    raises(RuntimeError, "running_var should contain 3 elements not 2", F.batch_norm, x, three, two, training=True)
    raises(RuntimeError, "running_mean should contain 6 elements not 4", F.instance_norm, x, two)
    raises(RuntimeError, "weight should contain 6 elements not 4", F.instance_norm, x, weight=two)
    raises(RuntimeError, r"Expected weight to be of same shape as normalized_shape, but got weight of shape \[2, 2\] "
           r"and normalized_shape = \[4\]", F.layer_norm, x, (4,), T.ones(2, 2))
    raises(RuntimeError, r"Expected bias to be of same shape as normalized_shape, but got bias of shape \[3\]",
           F.layer_norm, x, (4,), None, three)
    raises(RuntimeError, r"Expected weight to be of same shape as normalized_shape, but got weight of shape \[3\] "
           r"and normalized_shape = \[4\]", F.rms_norm, x, (4,), three)
    raises(RuntimeError, r"Expected weight to be a vector of size equal to the number of channels in input, but got "
           r"weight of shape \[2\] and input of shape \[2, 3, 4\]", F.group_norm, x, 3, two)
    raises(RuntimeError, r"Expected number of channels in input to be divisible by num_groups, but got input of shape "
           r"\[2, 3, 4\] and num_groups=2", F.group_norm, x, 2)


def test_normalising_by_running_stats_needs_them(T, F):
    x = T.randn(2, 3, 4)
    raises(RuntimeError, "running_mean must be defined in evaluation mode", F.batch_norm, x, None, None)
    raises(RuntimeError, "running_var must be defined in evaluation mode", F.batch_norm, x, T.zeros(3), None)
    raises(RuntimeError, "Expected running_mean and running_var to be defined when use_input_stats is false",
           F.instance_norm, x, use_input_stats=False)
    xv = values(x)
    close(F.batch_norm(x, None, None, training=True),                  # training needs none
          (xv - xv.mean((0, 2), keepdims=True)) / np.sqrt(xv.var((0, 2), keepdims=True) + 1e-5), rtol=1e-4, atol=1e-5)


def test_lazy_norm_base_is_importable_where_pytorch_keeps_it(T, nn):
    from importlib import import_module

    batchnorm = import_module(f"{nn.__name__}.modules.batchnorm")
    assert isinstance(nn.LazyBatchNorm1d(), batchnorm._LazyNormBase)
    assert isinstance(nn.LazyInstanceNorm2d(), batchnorm._LazyNormBase)
    assert not isinstance(nn.BatchNorm1d(2), batchnorm._LazyNormBase)
    lazy = nn.LazyBatchNorm1d()
    lazy(T.tensor([[1.0, 2.0], [3.0, 6.0]]))                         # materialised: the eager class
    assert type(lazy) is nn.BatchNorm1d and not isinstance(lazy, batchnorm._LazyNormBase)
    close(lazy.running_mean, [0.2, 0.4], rtol=1e-6)


def test_instance_norm_refuses_a_pre_0_4_checkpoint_with_running_stats(T, nn):
    from collections import OrderedDict

    model = nn.Sequential(nn.InstanceNorm1d(3))
    checkpoint = OrderedDict({"0.running_mean": T.zeros(3), "0.running_var": T.ones(3)})     # no version
    error = raises(RuntimeError, r'Unexpected running stats buffer\(s\) "0.running_mean" and "0.running_var" for '
                   "InstanceNorm1d with track_running_stats=False. If state_dict is a checkpoint saved before 0.4.0",
                   model.load_state_dict, checkpoint, strict=False)
    assert "Unexpected key(s)" not in str(error)
    assert list(checkpoint) == ["0.running_mean", "0.running_var"]          # the caller's dict is left alone
    checkpoint._metadata = OrderedDict({"0": {"version": 1}})               # a versioned one: unexpected keys
    raises(RuntimeError, r'Unexpected key\(s\) in state_dict: "0.running_mean", "0.running_var"', model.load_state_dict,
           checkpoint)
    tracked = nn.Sequential(nn.InstanceNorm1d(3, track_running_stats=True))
    tracked.load_state_dict(OrderedDict({"0.running_mean": T.full((3,), 2.0), "0.running_var": T.ones(3)}),
                            strict=False)
    same(tracked[0].running_mean, [2.0, 2.0, 2.0])


def test_a_meta_batch_norm_loaded_without_a_count_gets_a_real_zero(T, nn):
    with T.device("meta"):
        meta_bn = nn.BatchNorm2d(3)
    assert meta_bn.num_batches_tracked.is_meta
    meta_bn.load_state_dict({}, assign=True, strict=False)
    count = meta_bn.state_dict()["num_batches_tracked"]
    assert not count.is_meta and str(count.device) == "cpu"
    same(count, 0, dtype="int64")
    assert meta_bn.running_mean.is_meta                                    # not in the dict: left as it was


@pytest.mark.parametrize("module", ["autograd", "torch"])
def test_batch_norm_output_layout_follows_its_kernels_two_tests(module):
    """PyTorch's batch norm writes channels-last where its input is channels-last contiguous (a (1, C, H, 1)
    permutation, which the suggested-format rule alone calls row-major: group norm's output is row-major there)
    or suggests channels-last (a crop of a channels-last image, which is not contiguous)."""
    T = importlib.import_module("autograd") if module == "autograd" else pytest.importorskip("torch")
    modules = importlib.import_module("nn") if module == "autograd" else T.nn
    x = T.arange(6, dtype=T.float32).reshape(1, 3, 2, 1).permute(0, 2, 1, 3)
    normalized = modules.BatchNorm2d(2).eval()(x)  # (strides of its size-1 dim differ: no layout's)
    assert normalized.is_contiguous(memory_format=T.channels_last) and not normalized.is_contiguous()
    assert tuple(modules.functional.group_norm(x, 1).stride()) == (6, 3, 1, 1)
    crop = T.ones(2, 8, 8, 8).contiguous(memory_format=T.channels_last)[:, ::2]
    for mode in ("eval", "train"):
        assert tuple(getattr(modules.BatchNorm2d(4), mode)()(crop).stride()) == (256, 1, 32, 4)
