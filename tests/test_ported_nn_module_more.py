"""More of the Module API, ported from PyTorch's test/test_nn.py and test/nn/test_lazy_modules.py: the order
of attribute assignment, deletion and reassignment, Parameter and Buffer, to_empty, set_submodule,
deepcopy, and lazy modules (LazyLinear, LazyConv2d, LazyBatchNorm1d: shapes inferred at the first call,
the class swapped, state_dict loading). Each test runs on chainrule's `nn` and, where it is installed, on
PyTorch's."""

import copy
import pickle

import numpy as np

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture
F = ported_nn.F


def test_assignment(T, nn):
    l = nn.Module()
    a = nn.Parameter(T.randn(2))
    b = nn.Parameter(T.randn(3))
    c = nn.Parameter(T.randn(4))
    q = nn.Linear(4, 4)
    r = nn.Linear(5, 5)
    w = nn.Linear(6, 6)

    def test_assignments(get_list, a, b, c):
        # Check that None can be shadowed
        l.a = None
        assert l.a is None
        l.a = a
        assert l.a is a
        assert get_list() == [a]

        # Assign second object
        l.b = None
        assert l.b is None
        l.b = b
        assert l.b is b
        assert get_list() == [a, b]

        # Remove and add the object back. Order should be unchanged.
        l.a = None
        assert l.a is None
        assert get_list() == [b]
        l.a = a
        assert l.a is a
        assert get_list() == [a, b]

        # Replace object with another one. Order should be unchanged.
        l.a = c
        assert l.a is c
        assert get_list() == [c, b]

        # Remove and reassign an attribute. It should appear at the end of the list now.
        del l.a
        assert not hasattr(l, "a")
        l.a = a
        assert l.a is a
        assert get_list() == [b, a]

    test_assignments(lambda: list(l.parameters()), a, b, c)
    del l.a, l.b
    assert list(l.parameters()) == []

    test_assignments(lambda: list(l.children()), q, r, w)
    del l.a, l.b
    assert list(l.children()) == []

    buf = T.randn(10)
    l.register_buffer("buf", buf)
    assert l.buf is buf
    l.buf = None
    assert l.buf is None
    l.buf = buf
    assert "buf" in l.state_dict()
    same(l.state_dict()["buf"], values(buf))


def test_buffer_class(T, nn):
    if not hasattr(nn, "Buffer"):
        return
    m = nn.Module()
    m.b = nn.Buffer(T.ones(2))
    m.np = nn.Buffer(T.zeros(1), persistent=False)
    assert [n for n, _ in m.named_buffers()] == ["b", "np"]
    assert list(m.state_dict()) == ["b"]


def test_parameter_basics(T, nn):
    p = nn.Parameter(T.ones(2, 2))
    assert isinstance(p, T.Tensor) and isinstance(p, nn.Parameter)
    assert p.requires_grad and p.is_leaf and p.grad_fn is None
    assert not nn.Parameter(T.ones(1), requires_grad=False).requires_grad
    empty = nn.Parameter()
    assert tuple(empty.shape) == (0,) and empty.requires_grad
    assert repr(nn.Parameter(T.tensor([1.0, 2.0]))) == "Parameter containing:\ntensor([1., 2.], requires_grad=True)"
    assert not isinstance(p.data, nn.Parameter)
    assert not isinstance(p * 2, nn.Parameter)
    assert not isinstance(p.detach(), nn.Parameter)
    d = copy.deepcopy(p)
    assert isinstance(d, nn.Parameter) and d is not p and d.requires_grad
    same(d, values(p))
    pk = pickle.loads(pickle.dumps(p))
    assert isinstance(pk, nn.Parameter) and pk.requires_grad


def test_parameter_of_integer_dtype(T, nn):
    raises(RuntimeError, "(O|o)nly Tensors of floating point (and complex )?dtype can require gradients",
           nn.Parameter, T.tensor([1, 2]))
    p = nn.Parameter(T.tensor([1, 2]), requires_grad=False)
    assert str(p.dtype).endswith("int64")


def test_deepcopy_module_shares_nothing(T, nn):
    lin = nn.Linear(2, 2)
    net = nn.Sequential(lin, lin)            # one module twice
    c = copy.deepcopy(net)
    assert c[0] is c[1] and c[0] is not lin
    assert c[0].weight is not lin.weight
    with T.no_grad():
        c[0].weight.fill_(3.0)
    assert not np.allclose(values(lin.weight), 3.0)


def test_set_submodule(T, nn):
    net = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))
    new = nn.Tanh()
    net.set_submodule("1.0", new)
    assert net[1][0] is new
    raises(AttributeError, "has no attribute `nope`", net.set_submodule, "nope.x", nn.ReLU())


def test_to_empty(T, nn):
    m = nn.Linear(3, 2)
    m.register_buffer("steps", T.tensor([5]))
    out = m.to_empty(device="cpu")
    assert out is m
    assert tuple(m.weight.shape) == (2, 3) and isinstance(m.weight, nn.Parameter) and m.weight.requires_grad
    assert tuple(m.steps.shape) == (1,) and str(m.steps.dtype).endswith("int64")


def test_named_members_after_registering_none(T, nn):
    m = nn.Module()
    m.register_parameter("p", None)
    m.register_buffer("b", None)
    m.add_module("c", None)
    assert list(m.named_parameters()) == [] and list(m.named_buffers()) == [] and list(m.named_children()) == []
    assert m.p is None and m.b is None and m.c is None
    assert list(m.state_dict()) == []


def test_lazy_linear(T, nn, F):
    module = nn.LazyLinear(10)
    assert isinstance(module.weight, nn.parameter.UninitializedParameter)
    assert isinstance(module.bias, nn.parameter.UninitializedParameter)
    assert module.has_uninitialized_params()
    input = T.ones(5, 5)
    module(input)
    assert isinstance(module, nn.Linear)
    assert not isinstance(module, nn.LazyLinear)
    assert tuple(module.weight.shape) == (10, 5)
    assert tuple(module.bias.shape) == (10,)
    assert module.in_features == 5
    y = module(input)
    close(y, values(F.linear(input, module.weight, module.bias)))
    assert not isinstance(module.weight, nn.parameter.UninitializedParameter)


def test_lazy_linear_state_dict(T, nn):
    module = nn.Linear(5, 10)
    lazy_module = nn.LazyLinear(10)
    lazy_module.load_state_dict(module.state_dict())
    # Parameters have been initialized but the module won't become a full
    # Linear one until the first iteration. This is due to
    # limitations on the state_dict loading logic
    assert not lazy_module.has_uninitialized_params()
    assert tuple(lazy_module.weight.shape) == (10, 5)
    same(lazy_module.weight, values(module.weight))

    module = nn.Linear(5, 10)
    lazy_module = nn.LazyLinear(10)
    raises(RuntimeError, "shape of an uninitialized", module.load_state_dict, lazy_module.state_dict())


def test_lazy_conv_and_batchnorm(T, nn):
    conv = nn.LazyConv2d(4, 3)
    conv(T.randn(2, 3, 6, 6))
    assert isinstance(conv, nn.Conv2d) and tuple(conv.weight.shape) == (4, 3, 3, 3) and conv.in_channels == 3
    bn = nn.LazyBatchNorm1d()
    bn(T.randn(4, 7))
    assert isinstance(bn, nn.BatchNorm1d) and bn.num_features == 7
    assert tuple(bn.running_mean.shape) == (7,) and tuple(bn.weight.shape) == (7,)
    same(bn.num_batches_tracked, 1)


def test_lazy_module_in_sequential_and_optimizer_params(T, nn):
    net = nn.Sequential(nn.LazyLinear(4), nn.ReLU(), nn.LazyLinear(2))
    out = net(T.randn(3, 6))
    assert tuple(out.shape) == (3, 2)
    assert [tuple(p.shape) for p in net.parameters()] == [(4, 6), (4,), (2, 4), (2,)]
