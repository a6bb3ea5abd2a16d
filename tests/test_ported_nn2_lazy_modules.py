"""Lazy modules, ported from PyTorch's test/nn/test_lazy_modules.py (TestLazyModules; LazyLinear's first
forward, LazyConv2d and LazyBatchNorm1d are in tests/test_ported_nn_module_more.py): UninitializedParameter
and UninitializedBuffer in a LazyModuleMixin module (state_dict round trips either way, share_memory,
materialize's dtype), every lazy convolution and transposed convolution (shapes inferred, the output the
functional form's, output_size, pickling before and after the first forward, loading an eager layer's
state_dict), every lazy batch and instance norm (output, parameters and running statistics equal to the eager
layer's, pickling, state_dict), forward hooks, chained lazy layers, optimizers built before
materialization, weight_norm / spectral_norm refusing them. (The jit cases have no counterpart here.) Each test
runs on chainrule's `nn` and, where it is installed, on PyTorch's."""

import pickle

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")    # (PyTorch's lazy modules warn they are new)


def lazy_module_class(nn):
    class LazyModule(nn.modules.lazy.LazyModuleMixin, nn.Module):
        pass

    return LazyModule


def uninitialized(nn):
    return nn.parameter.UninitializedParameter, nn.parameter.UninitializedBuffer


def optim_of(T):
    if T.__name__ == "autograd":
        import optim

        return optim
    return T.optim


def test_lazy_module_parameter(T, nn):
    LazyModule = lazy_module_class(nn)
    UninitializedParameter, _ = uninitialized(nn)
    module = LazyModule()
    module.register_parameter("test_param", UninitializedParameter())
    assert module.has_uninitialized_params()
    state_dict = module.state_dict()
    assert isinstance(state_dict["test_param"], UninitializedParameter)
    # an uninitialized entry does not load into a parameter that has a shape
    new_module = LazyModule()
    new_module.register_parameter("test_param", nn.Parameter(T.ones(5, 5)))
    raises(RuntimeError, "shape of an uninitialized", new_module.load_state_dict, state_dict)
    # an initialized entry materializes the uninitialized parameter
    module.load_state_dict(new_module.state_dict())
    same(module.test_param, np.ones((5, 5), np.float32))
    assert isinstance(module.test_param, nn.Parameter) and not isinstance(module.test_param, UninitializedParameter)
    assert not module.has_uninitialized_params()
    # uninitialized into uninitialized: left as it is
    module = LazyModule()
    module.register_parameter("test_param", UninitializedParameter())
    new_module = LazyModule()
    new_module.register_parameter("test_param", UninitializedParameter())
    module.load_state_dict(new_module.state_dict())
    assert module.has_uninitialized_params()


def test_lazy_module_buffer(T, nn):
    LazyModule = lazy_module_class(nn)
    _, UninitializedBuffer = uninitialized(nn)
    module = LazyModule()
    module.test_buffer = UninitializedBuffer()          # registered as a buffer by the assignment
    assert module.has_uninitialized_params()
    assert [name for name, _ in module.named_buffers()] == ["test_buffer"]
    state_dict = module.state_dict()
    assert isinstance(state_dict["test_buffer"], UninitializedBuffer)
    new_module = LazyModule()
    new_module.test_buffer = nn.Buffer(T.ones(5, 5))
    raises(RuntimeError, "shape of an uninitialized", new_module.load_state_dict, state_dict)
    module.load_state_dict(new_module.state_dict())
    same(module.test_buffer, np.ones((5, 5), np.float32))
    assert not module.has_uninitialized_params()
    module = LazyModule()
    module.test_buffer = UninitializedBuffer()
    new_module = LazyModule()
    new_module.test_buffer = UninitializedBuffer()
    module.load_state_dict(new_module.state_dict())
    module.load_state_dict(new_module.state_dict())
    assert module.has_uninitialized_params()


def test_lazy_share_memory(T, nn):
    LazyModule = lazy_module_class(nn)
    UninitializedParameter, UninitializedBuffer = uninitialized(nn)
    module = LazyModule()
    module.register_parameter("test_param", UninitializedParameter())
    raises(RuntimeError, "share memory on an uninitialized", module.share_memory)
    module = LazyModule()
    module.test_buffer = UninitializedBuffer()
    raises(RuntimeError, "share memory on an uninitialized", module.share_memory)
    module = nn.Sequential(nn.LazyLinear(3))      # found in a child too
    raises(RuntimeError, "share memory on an uninitialized", module.share_memory)
    module(T.ones(2, 4))
    assert module.share_memory() is module


def test_lazy_linear_pickle(T, nn):
    UninitializedParameter, _ = uninitialized(nn)
    module = pickle.loads(pickle.dumps(nn.LazyLinear(10)))
    assert isinstance(module, nn.LazyLinear)
    assert isinstance(module.weight, UninitializedParameter) and isinstance(module.bias, UninitializedParameter)
    module(T.ones(5, 5))
    new_module = pickle.loads(pickle.dumps(module))
    assert isinstance(new_module, nn.Linear) and not isinstance(new_module, nn.LazyLinear)
    assert tuple(new_module.weight.shape) == (10, 5) and tuple(new_module.bias.shape) == (10,)
    assert not isinstance(new_module.weight, UninitializedParameter)
    same(new_module.weight, values(module.weight))


def test_lazy_linear_state_and_forward(T, nn, F):
    module = nn.Linear(5, 10)
    lazy_module = nn.LazyLinear(10)
    lazy_module.load_state_dict(module.state_dict())
    assert isinstance(lazy_module, nn.Linear)
    assert tuple(lazy_module.weight.shape) == (10, 5) and tuple(lazy_module.bias.shape) == (10,)
    x = T.randn(5, 5)
    out = lazy_module(x)
    assert not isinstance(lazy_module, nn.LazyLinear) and lazy_module.in_features == 5
    same(out, values(module(x)))
    raises(RuntimeError, "shape of an uninitialized", nn.Linear(5, 10).load_state_dict, nn.LazyLinear(10).state_dict())


# (eager name, lazy name, functional name, input shape, weight shape, forward kwargs)
CONVS = [
    ("Conv1d", "LazyConv1d", "conv1d", (4, 16, 50), (32, 16, 2), {}),
    ("Conv2d", "LazyConv2d", "conv2d", (4, 16, 8, 6), (32, 16, 2, 2), {}),
    ("Conv3d", "LazyConv3d", "conv3d", (2, 16, 8, 7, 6), (32, 16, 2, 2, 2), {}),
    ("ConvTranspose1d", "LazyConvTranspose1d", "conv_transpose1d", (4, 16, 50), (16, 32, 2), {}),
    ("ConvTranspose1d", "LazyConvTranspose1d", "conv_transpose1d", (4, 16, 50), (16, 32, 2), {"output_size": (51,)}),
    ("ConvTranspose2d", "LazyConvTranspose2d", "conv_transpose2d", (4, 16, 8, 6), (16, 32, 2, 2), {}),
    ("ConvTranspose2d", "LazyConvTranspose2d", "conv_transpose2d", (4, 16, 8, 6), (16, 32, 2, 2),
     {"output_size": (9, 7)}),
    ("ConvTranspose3d", "LazyConvTranspose3d", "conv_transpose3d", (2, 16, 8, 7, 6), (16, 32, 2, 2, 2), {}),
    ("ConvTranspose3d", "LazyConvTranspose3d", "conv_transpose3d", (2, 16, 8, 7, 6), (16, 32, 2, 2, 2),
     {"output_size": (9, 8, 7)}),
]


@pytest.mark.parametrize("eager, lazy, functional, input_shape, weight_shape, kwargs", CONVS,
                         ids=[c[1] + ("-output_size" if c[5] else "") for c in CONVS])
def test_lazy_conv(T, nn, F, eager, lazy, functional, input_shape, weight_shape, kwargs):
    UninitializedParameter, _ = uninitialized(nn)
    module = getattr(nn, lazy)(32, 2)
    assert isinstance(module.weight, UninitializedParameter) and isinstance(module.bias, UninitializedParameter)
    x = T.ones(*input_shape)
    first = module(x, **kwargs)
    assert isinstance(module, getattr(nn, eager)) and not isinstance(module, getattr(nn, lazy))
    assert tuple(module.weight.shape) == weight_shape and tuple(module.bias.shape) == (32,)
    assert module.in_channels == 16
    if kwargs:
        assert tuple(first.shape[2:]) == kwargs["output_size"]
    same(module(x), values(getattr(F, functional)(x, module.weight, module.bias)))


@pytest.mark.parametrize("eager, lazy, input_shape, weight_shape", [
    ("Conv1d", "LazyConv1d", (2, 16, 10), (32, 16, 2)), ("Conv2d", "LazyConv2d", (2, 16, 8, 6), (32, 16, 2, 2)),
    ("Conv3d", "LazyConv3d", (2, 16, 4, 3, 3), (32, 16, 2, 2, 2)),
    ("ConvTranspose1d", "LazyConvTranspose1d", (2, 16, 10), (16, 32, 2)),
    ("ConvTranspose2d", "LazyConvTranspose2d", (2, 16, 8, 6), (16, 32, 2, 2)),
    ("ConvTranspose3d", "LazyConvTranspose3d", (2, 16, 4, 3, 3), (16, 32, 2, 2, 2))])
def test_lazy_conv_pickle_and_state(T, nn, eager, lazy, input_shape, weight_shape):
    UninitializedParameter, _ = uninitialized(nn)
    module = pickle.loads(pickle.dumps(getattr(nn, lazy)(32, 2)))
    assert isinstance(module, getattr(nn, lazy)) and isinstance(module.weight, UninitializedParameter)
    module(T.ones(*input_shape))
    new_module = pickle.loads(pickle.dumps(module))
    assert isinstance(new_module, getattr(nn, eager)) and not isinstance(new_module, getattr(nn, lazy))
    assert tuple(new_module.weight.shape) == weight_shape and tuple(new_module.bias.shape) == (32,)
    assert not isinstance(new_module.weight, UninitializedParameter)
    # an eager layer's state_dict gives the shapes and the values
    source = getattr(nn, eager)(16, 32, 2)
    lazy_module = getattr(nn, lazy)(32, 2)
    lazy_module.load_state_dict(source.state_dict())
    assert isinstance(lazy_module, getattr(nn, eager))
    assert tuple(lazy_module.weight.shape) == weight_shape and tuple(lazy_module.bias.shape) == (32,)
    same(lazy_module.weight, values(source.weight))
    same(lazy_module.bias, values(source.bias))
    raises(RuntimeError, "shape of an uninitialized", getattr(nn, eager)(16, 32, 2).load_state_dict,
           getattr(nn, lazy)(32, 2).state_dict())


@pytest.mark.parametrize("eager, lazy", [("Conv2d", "LazyConv2d"), ("ConvTranspose2d", "LazyConvTranspose2d")])
def test_lazy_conv2d_state_and_forward(T, nn, eager, lazy):
    module = getattr(nn, eager)(3, 16, 3, padding=1)
    lazy_module = getattr(nn, lazy)(16, 3, padding=1)
    lazy_module.load_state_dict(module.state_dict())
    assert isinstance(lazy_module, getattr(nn, eager))
    x = T.randn(1, 3, 8, 8)
    same(lazy_module(x), values(module(x)))
    # (in_channels: 3 in newer PyTorch and here, 0 in PyTorch 2.13, which infers it only with the shapes)
    assert not isinstance(lazy_module, getattr(nn, lazy))


def test_lazy_forward_hooks(T, nn):
    class TestModule(nn.modules.lazy.LazyModuleMixin, nn.Module):
        def initialize_parameters(self, input):
            return None

        def forward(self, input):
            return input

    module = TestModule()
    module.register_forward_pre_hook(lambda module, input: input[0] + 1)
    same(module(T.zeros(2, 2)), np.ones((2, 2), np.float32))
    module = TestModule()
    module.register_forward_hook(lambda module, input, output: input[0] + 1)
    same(module(T.zeros(2, 2)), np.ones((2, 2), np.float32))


NORMS = [("BatchNorm1d", "LazyBatchNorm1d", (16, 3, 6)), ("BatchNorm1d", "LazyBatchNorm1d", (16, 6)),
         ("BatchNorm2d", "LazyBatchNorm2d", (16, 3, 6, 7)), ("BatchNorm3d", "LazyBatchNorm3d", (4, 3, 6, 7, 8)),
         ("InstanceNorm1d", "LazyInstanceNorm1d", (16, 3, 6)),
         ("InstanceNorm2d", "LazyInstanceNorm2d", (16, 3, 6, 7)),
         ("InstanceNorm3d", "LazyInstanceNorm3d", (4, 3, 6, 7, 8))]


@pytest.mark.parametrize("eager, lazy, input_shape", NORMS, ids=[f"{n[1]}-{len(n[2])}d" for n in NORMS])
def test_lazy_norm(T, nn, eager, lazy, input_shape):
    UninitializedParameter, UninitializedBuffer = uninitialized(nn)
    rng = np.random.default_rng(len(input_shape))
    x = T.tensor(rng.standard_normal(input_shape).astype(np.float32))
    for affine in [False, True]:
        for track_running_stats in [False, True]:
            lazy_module = getattr(nn, lazy)(affine=affine, track_running_stats=track_running_stats)
            if affine:
                assert isinstance(lazy_module.weight, UninitializedParameter)
                assert isinstance(lazy_module.bias, UninitializedParameter)
            if track_running_stats:
                assert isinstance(lazy_module.running_mean, UninitializedBuffer)
                assert isinstance(lazy_module.running_var, UninitializedBuffer)
            lazy_output = lazy_module(x)
            assert isinstance(lazy_module, getattr(nn, eager)) and not isinstance(lazy_module, getattr(nn, lazy))
            module = getattr(nn, eager)(input_shape[1], affine=affine, track_running_stats=track_running_stats)
            close(lazy_output, values(module(x)), rtol=0, atol=0)
            if affine or track_running_stats:     # (with nothing to materialize PyTorch 2.13 leaves it 0)
                assert lazy_module.num_features == input_shape[1]
            for name in ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]:
                expected = getattr(module, name)
                if expected is None:
                    assert getattr(lazy_module, name) is None
                else:
                    same(getattr(lazy_module, name), values(expected))
            # pickled before and after the first forward
            module = pickle.loads(pickle.dumps(getattr(nn, lazy)(affine=affine,
                                                                  track_running_stats=track_running_stats)))
            assert isinstance(module, getattr(nn, lazy))
            if affine:
                assert isinstance(module.weight, UninitializedParameter)
            if track_running_stats:
                assert isinstance(module.running_mean, UninitializedBuffer)
            module(x)
            module = pickle.loads(pickle.dumps(module))
            assert isinstance(module, getattr(nn, eager)) and not isinstance(module, getattr(nn, lazy))
            if affine:
                assert not isinstance(module.weight, UninitializedParameter)
            if track_running_stats:
                assert not isinstance(module.running_var, UninitializedBuffer)
                same(module.running_var, values(lazy_module.running_var))


@pytest.mark.parametrize("eager, lazy", [("BatchNorm1d", "LazyBatchNorm1d"), ("BatchNorm2d", "LazyBatchNorm2d"),
                                         ("BatchNorm3d", "LazyBatchNorm3d")])
def test_lazy_batchnorm_state(T, nn, eager, lazy):
    module = getattr(nn, eager)(10)
    with T.no_grad():
        module.running_mean.fill_(0.5)
    lazy_module = getattr(nn, lazy)(affine=True, track_running_stats=True)
    lazy_module.load_state_dict(module.state_dict())
    for name in ["weight", "bias", "running_mean", "running_var"]:
        assert tuple(getattr(lazy_module, name).shape) == (10,)
    same(lazy_module.running_mean, np.full(10, 0.5, np.float32))
    lazy_module.eval()
    lazy_module(T.ones(*(2, 10) + (3,) * int(eager[-2])))
    # (newer PyTorch swaps the class at the load already; it and chainrule also set num_features, which
    # PyTorch 2.13 leaves 0)
    assert isinstance(lazy_module, getattr(nn, eager)) and not isinstance(lazy_module, getattr(nn, lazy))
    raises(RuntimeError, "shape of an uninitialized", getattr(nn, eager)(10).load_state_dict,
           getattr(nn, lazy)().state_dict())


@pytest.mark.parametrize("eager, lazy", [("InstanceNorm1d", "LazyInstanceNorm1d"),
                                         ("InstanceNorm2d", "LazyInstanceNorm2d"),
                                         ("InstanceNorm3d", "LazyInstanceNorm3d")])
def test_lazy_instancenorm_state(T, nn, eager, lazy):
    for affine in [False, True]:
        for track_running_stats in [False, True]:
            module = getattr(nn, eager)(10, affine=affine, track_running_stats=track_running_stats)
            lazy_module = getattr(nn, lazy)(affine=affine, track_running_stats=track_running_stats)
            lazy_module.load_state_dict(module.state_dict())
            if affine:
                assert tuple(lazy_module.weight.shape) == (10,) and tuple(lazy_module.bias.shape) == (10,)
            if track_running_stats:
                assert tuple(lazy_module.running_mean.shape) == (10,)
                assert tuple(lazy_module.running_var.shape) == (10,)
    raises(RuntimeError, "shape of an uninitialized",
           getattr(nn, eager)(10, affine=True, track_running_stats=True).load_state_dict,
           getattr(nn, lazy)(affine=True, track_running_stats=True).state_dict())


def test_lazy_batchnorm2d_state_and_forward(T, nn):
    module = nn.BatchNorm2d(16)
    module(T.randn(4, 16, 3, 3))     # running statistics that are not the initial ones
    module.eval()
    lazy_module = nn.LazyBatchNorm2d()
    lazy_module.load_state_dict(module.state_dict())
    lazy_module.eval()
    x = T.randn(2, 16, 4, 4)
    close(lazy_module(x), values(module(x)))
    assert isinstance(lazy_module, nn.BatchNorm2d) and not isinstance(lazy_module, nn.LazyBatchNorm2d)


@pytest.mark.parametrize("eager, lazy, input_shape", [("BatchNorm1d", "LazyBatchNorm1d", (16, 3, 6)),
                                                      ("BatchNorm2d", "LazyBatchNorm2d", (16, 3, 6, 7)),
                                                      ("BatchNorm3d", "LazyBatchNorm3d", (4, 3, 6, 7, 8))])
def test_lazy_batchnorm_with_dict_input(T, nn, eager, lazy, input_shape):
    x = T.randn(*input_shape)
    lazy_output = getattr(nn, lazy)()(**{"input": x})
    same(lazy_output, values(getattr(nn, eager)(input_shape[1])(**{"input": x})))


def test_materialize_dtype(T, nn):
    LazyModule = lazy_module_class(nn)
    UninitializedParameter, _ = uninitialized(nn)
    module = LazyModule()
    module.register_parameter("test_param", UninitializedParameter())
    module.test_param.materialize(10)
    assert tuple(module.test_param.shape) == (10,)
    assert module.test_param.dtype == T.get_default_dtype()
    module = LazyModule()
    module.register_parameter("test_param", UninitializedParameter())
    module.half()
    module.test_param.materialize(10)
    assert module.test_param.dtype == T.float16
    module = LazyModule()
    module.register_parameter("test_param", UninitializedParameter())
    module.test_param.materialize((2, 3), dtype=T.float64)
    assert tuple(module.test_param.shape) == (2, 3) and module.test_param.dtype == T.float64


def test_chained_initialization(T, nn):
    class MyNetwork(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear_1 = nn.LazyLinear(15)
            self.linear_2 = nn.LazyLinear(10)

        def forward(self, x):
            return self.linear_2(self.linear_1(x))

    net = MyNetwork()
    net(T.ones(5, 10))
    assert tuple(net.linear_1.weight.shape) == (15, 10) and tuple(net.linear_1.bias.shape) == (15,)
    assert tuple(net.linear_2.weight.shape) == (10, 15) and tuple(net.linear_2.bias.shape) == (10,)


@pytest.mark.parametrize("name", ["Adadelta", "Adamax", "Adam", "AdamW", "ASGD", "SGD", "Rprop", "RMSprop", "LBFGS",
                                  "NAdam", "RAdam"])
def test_optimizer_pass(T, nn, name):
    # an optimizer built on the uninitialized parameter holds the same object, materialized in place
    LazyModule = lazy_module_class(nn)
    UninitializedParameter, _ = uninitialized(nn)
    module = LazyModule()
    module.register_parameter("test_param", UninitializedParameter())
    cls = getattr(optim_of(T), name)
    opt = cls(module.parameters(), lr=0.0) if name == "SGD" else cls(module.parameters())
    assert isinstance(opt.param_groups[0]["params"][0], UninitializedParameter)
    module.test_param.materialize(10)
    assert opt.param_groups[0]["params"][0] is module.test_param
    assert isinstance(opt.param_groups[0]["params"][0], nn.Parameter)
    assert not isinstance(opt.param_groups[0]["params"][0], UninitializedParameter)
    with T.no_grad():
        module.test_param.fill_(1.0)
    module.test_param.grad = T.rand_like(module.test_param)
    if name == "LBFGS":
        opt.step(lambda: 1.0)
    else:
        opt.step()
    assert tuple(module.test_param.shape) == (10,)


def test_optimizer_adagrad_refuses_uninitialized(T, nn):
    LazyModule = lazy_module_class(nn)
    module = LazyModule()
    module.register_parameter("test_param", uninitialized(nn)[0]())
    raises(ValueError, "uninitialized parameter", optim_of(T).Adagrad, module.parameters())


def test_weight_norm_and_spectral_norm_refuse_lazy(T, nn):
    with pytest.warns(FutureWarning):
        raises(ValueError, "The module passed to `WeightNorm` can't have uninitialized parameters.",
               nn.utils.weight_norm, nn.LazyLinear(7))
    raises(ValueError, "The module passed to `SpectralNorm` can't have uninitialized parameters.",
           nn.utils.spectral_norm, nn.LazyLinear(7))


def test_invalid_functions(T, nn):
    param = uninitialized(nn)[0]()
    raises(ValueError, "uninitialized parameter", T.empty_like, param)
    raises(ValueError, "uninitialized parameter", T.add, param, param)
    raises(ValueError, "uninitialized parameter", lambda: param + param)
