"""The Module API, ported from PyTorch's test/test_nn.py (TestNN): registering parameters, buffers and
submodules, iterating over them, train/eval, apply, zero_grad, requires_grad_, casting, repr, attribute
rules (state_dict and load_state_dict are in tests/test_ported_nn_state_dict.py). Each test runs on
chainrule's `nn` and, where it is installed, on PyTorch's (fixtures `T` and `nn`)."""

import numpy as np

from tests import ported_nn
from tests.ported import dtype_name, raises, same, values

nn = ported_nn.nn  # the fixture


def test_register_buffer_raises_error_if_name_is_not_string(T, nn):
    m = nn.Module()
    raises(TypeError, "buffer name should be a string. Got int", m.register_buffer, 1, T.rand(5))
    raises(TypeError, "buffer name should be a string. Got NoneType", m.register_buffer, None, T.rand(5))


def test_register_buffer_raises_error_if_attr_exists(T, nn):
    m = nn.Module()
    m.attribute_name = 5
    raises(KeyError, "attribute 'attribute_name' already exists", m.register_buffer, "attribute_name",
           T.rand(5))
    del m.attribute_name
    m.register_parameter("attribute_name", nn.Parameter(T.rand(5)))
    raises(KeyError, "attribute 'attribute_name' already exists", m.register_buffer, "attribute_name",
           T.rand(5))
    del m.attribute_name
    m.add_module("attribute_name", nn.Module())
    raises(KeyError, "attribute 'attribute_name' already exists", m.register_buffer, "attribute_name",
           T.rand(5))


def test_register_buffer_raises_error_if_not_tensor(T, nn):
    m = nn.Module()
    raises(TypeError, r"cannot assign 'int' object to buffer 'attribute_name' \(torch Tensor or None "
           r"required\)", m.register_buffer, "attribute_name", 5)


def test_register_buffer_bad_names(T, nn):
    m = nn.Module()
    raises(KeyError, r'buffer name can.{1,2}t contain "."', m.register_buffer, "a.b", T.rand(5))
    raises(KeyError, r'buffer name can.{1,2}t be empty string ""', m.register_buffer, "", T.rand(5))


def test_register_buffer_allows_overwriting_with_same_name(T, nn):
    m = nn.Module()
    m.register_buffer("buffer_name", T.rand(5))
    b2 = T.rand(5)
    m.register_buffer("buffer_name", b2)
    assert m.buffer_name is b2
    m.register_buffer("buffer_name", None)
    assert m.buffer_name is None
    assert list(m.state_dict()) == []        # a None buffer is not saved
    m.buffer_name = T.ones(2)        # assigning a tensor to a buffer's name keeps it a buffer
    same(dict(m.named_buffers())["buffer_name"], [1.0, 1.0])


def test_get_buffer(T, nn):
    m = nn.Module()
    buf = T.randn(5)
    m.register_buffer("foo", buf)
    assert m.get_buffer("foo") is buf
    m.sub = nn.Module()
    m.sub.register_buffer("bar", buf)
    assert m.get_buffer("sub.bar") is buf
    raises(AttributeError, "has no attribute `baz`", m.get_buffer, "sub.baz")
    m.sub.not_a_buffer = 3
    raises(AttributeError, "`not_a_buffer` is not a buffer", m.get_buffer, "sub.not_a_buffer")


def test_get_parameter_and_submodule(T, nn):
    net = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))
    assert net.get_submodule("1.1") is net[1][1]
    assert net.get_submodule("") is net
    assert net.get_parameter("1.1.weight") is net[1][1].weight
    raises(AttributeError, "has no attribute `nope`", net.get_submodule, "1.nope")
    raises(AttributeError, "`weight` is not an nn.Module", net.get_submodule, "0.weight")
    raises(AttributeError, "`training` is not an nn.Parameter", net.get_parameter, "0.training")


def test_buffer_not_persistent(T, nn):
    m = nn.Module()
    m.register_buffer("buf", T.rand(5), persistent=False)
    assert len(list(m.buffers())) == 1
    assert len(m.state_dict()) == 0


def test_buffer_not_persistent_del(T, nn):
    m = nn.Module()
    m.register_buffer("buf", T.rand(5), persistent=False)
    del m.buf
    assert len(list(m.buffers())) == 0


def test_buffer_not_persistent_overwrite(T, nn):
    m = nn.Module()
    m.register_buffer("buf", T.rand(5), persistent=False)
    m.register_buffer("buf", T.rand(5))
    assert len(list(m.buffers())) == 1
    assert len(m.state_dict()) == 1      # re-registered persistent
    m.register_buffer("buf", T.rand(5), persistent=False)
    assert len(list(m.buffers())) == 1
    assert len(m.state_dict()) == 0


def test_buffer_not_persistent_assign(T, nn):
    m = nn.Module()
    m.register_buffer("buf", T.rand(5), persistent=False)
    m.buf = None                          # assigning None keeps the buffer's name (and its persistence)
    assert len(list(m.buffers())) == 0
    assert len(m.state_dict()) == 0
    m.buf = T.rand(5)
    assert len(list(m.buffers())) == 1
    assert len(m.state_dict()) == 0
    m.buf = nn.Parameter(T.rand(5))       # a Parameter assigned to a buffer's name: a parameter now
    assert len(list(m.buffers())) == 0
    assert len(m.state_dict()) == 1


def test_buffer_not_persistent_load(T, nn):
    m = nn.Module()
    m.register_buffer("buf", T.rand(5), persistent=False)
    m.load_state_dict({})


def test_register_parameter_raises_error_if_name_is_not_string(T, nn):
    m = nn.Module()
    raises(TypeError, "parameter name should be a string. Got int", m.register_parameter, 1,
           nn.Parameter(T.rand(5)))
    raises(KeyError, r'parameter name can.{1,2}t contain "."', m.register_parameter, "a.b", None)
    raises(KeyError, r'parameter name can.{1,2}t be empty string ""', m.register_parameter, "", None)


def test_register_parameter_raises_error_if_attr_exists(T, nn):
    m = nn.Module()
    m.attribute_name = 5
    raises(KeyError, "attribute 'attribute_name' already exists", m.register_parameter, "attribute_name",
           nn.Parameter(T.rand(5)))
    del m.attribute_name
    m.register_buffer("attribute_name", T.rand(5))
    raises(KeyError, "attribute 'attribute_name' already exists", m.register_parameter, "attribute_name",
           nn.Parameter(T.rand(5)))
    del m.attribute_name
    m.add_module("attribute_name", nn.Module())
    raises(KeyError, "attribute 'attribute_name' already exists", m.register_parameter, "attribute_name",
           nn.Parameter(T.rand(5)))


def test_register_parameter_allows_overwriting_with_same_name(T, nn):
    m = nn.Module()
    p1, p2 = nn.Parameter(T.rand(5)), nn.Parameter(T.rand(5))
    m.register_parameter("parameter_name", p1)
    m.register_parameter("parameter_name", p2)
    assert m.parameter_name is p2
    m.register_parameter("parameter_name", None)
    assert m.parameter_name is None


def test_register_parameter_errors(T, nn):
    m = nn.Module()
    raises(TypeError, r"cannot assign '(torch.FloatTensor|Tensor)' object to parameter 'w' \(torch.nn.Parameter "
           r"or None required\)", m.register_parameter, "w", T.rand(2))
    non_leaf = nn.Parameter(T.rand(2)) * 2
    non_leaf.__class__ = nn.Parameter        # a Parameter with a history (made by an op)
    raises(ValueError, "Cannot assign non-leaf Tensor to parameter 'w'", m.register_parameter, "w", non_leaf)


def test_non_leaf_parameters(T, nn):
    l1, l2 = nn.Linear(10, 10), nn.Linear(10, 10)

    def assign_weight():
        l2.weight = l1.weight + 2
    raises(TypeError, r"cannot assign 'torch.FloatTensor' as parameter 'weight' \(torch.nn.Parameter or None "
           "expected\\)", assign_weight)
    l2.weight = nn.Parameter(T.randn(10, 10))      # this works


def test_add_module(T, nn):
    for fn in ("add_module", "register_module"):
        l = nn.Linear(10, 20)
        net = nn.Module()
        net.l = l
        net.l2 = l
        getattr(net, fn)("empty", None)
        assert net.l is l and net.l2 is l and net.empty is None
        getattr(net, fn)("l3", l)
        assert net.l3 is l
        l3 = nn.Linear(20, 10)
        getattr(net, fn)("l", l3)          # re-adding under an existing module's name replaces it
        assert net.l is l3
        raises(TypeError, "module name should be a string. Got int", getattr(net, fn), 1, l)
        raises(TypeError, "torch.nn.Linear is not a Module subclass|is not a Module subclass",
               getattr(net, fn), "x", "non-module")
        raises(KeyError, r'module name can.{1,2}t contain ".", got: a.b', getattr(net, fn), "a.b", l)
        raises(KeyError, r'module name can.{1,2}t be empty string ""', getattr(net, fn), "", l)


def test_add_module_raises_error_if_attr_exists(T, nn):
    m = nn.Module()
    m.attribute_name = 5
    raises(KeyError, "attribute 'attribute_name' already exists", m.add_module, "attribute_name", nn.Module())
    del m.attribute_name
    m.register_buffer("attribute_name", T.rand(5))
    raises(KeyError, "attribute 'attribute_name' already exists", m.add_module, "attribute_name", nn.Module())
    del m.attribute_name
    m.register_parameter("attribute_name", nn.Parameter(T.rand(5)))
    raises(KeyError, "attribute 'attribute_name' already exists", m.add_module, "attribute_name", nn.Module())


def test_getattr_with_property(T, nn):
    class Model(nn.Module):
        @property
        def some_property(self):
            return self.something_that_doesnt_exist

    # PyTorch's test expects the missing attribute's name; PyTorch 2.13 names the property instead
    raises(AttributeError, r"'Model' object has no attribute '(something_that_doesnt_exist|some_property)'",
           lambda: Model().some_property)


def test_setattr_module_rules(T, nn):
    m = nn.Module()
    m.lin = nn.Linear(2, 2)

    def assign():
        m.lin = 3
    raises(TypeError, r"cannot assign 'int' as child module 'lin' \(torch.nn.Module or None expected\)", assign)
    m.lin = None
    assert m.lin is None and "lin" in dict(m.named_children()) or m.lin is None

    m.w = nn.Parameter(T.ones(2))
    m.w = None
    assert m.w is None and len(list(m.parameters())) == 0


def test_setattr_before_init(T, nn):
    class Bad(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(T.ones(1))
            super().__init__()
    raises(AttributeError, r"cannot assign parameters before Module.__init__\(\) call", Bad)

    class BadModule(nn.Module):
        def __init__(self):
            self.l = nn.Linear(1, 1)
            super().__init__()
    raises(AttributeError, r"cannot assign module before Module.__init__\(\) call", BadModule)


def test_delattr(T, nn):
    m = nn.Linear(2, 2)
    m.register_buffer("b", T.zeros(1))
    del m.weight
    del m.b
    assert [n for n, _ in m.named_parameters()] == ["bias"]
    assert list(m.buffers()) == []
    m.x = 1
    del m.x
    raises(AttributeError, "'Linear' object has no attribute 'x'", lambda: m.x)


def test_dir(T, nn):
    linear = nn.Linear(2, 2)
    linear._test_submodule = nn.Linear(2, 2)
    linear._test_parameter = nn.Parameter(T.empty(2, 2))
    linear.register_buffer("_test_buffer", T.empty(2, 2))
    keys = dir(linear)
    for name in ("_test_submodule", "_test_parameter", "_test_buffer", "weight", "bias", "forward"):
        assert name in keys
    for key in keys:
        assert hasattr(linear, key)


def test_dir_digit(T, nn):
    model = nn.Sequential(nn.Linear(2, 2))
    assert "0" not in dir(model)


def test_parameters_and_named_parameters(T, nn):
    def names(named):
        return [n for n, _ in named]

    l, n, s = _nested(T, nn)
    assert len(list(l.parameters())) == 2
    assert names(l.named_parameters()) == ["layer_dummy_param", "l1.weight", "l1.bias"] or \
        names(l.named_parameters()) == ["weight", "bias"]
    assert names(n.named_parameters()) == ["dummy_param", "l1.weight", "l1.bias"]
    assert names(n.named_parameters(recurse=False)) == ["dummy_param"]
    assert names(s.named_parameters()) == ["0.dummy_param", "0.l1.weight", "0.l1.bias"]
    assert names(s.named_parameters(prefix="pre")) == ["pre.0.dummy_param", "pre.0.l1.weight", "pre.0.l1.bias"]


def _nested(T, nn):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = l
            self.l2 = l
            self.dummy_param = nn.Parameter(T.ones(3, 5))
            self.register_buffer("dummy_buf", T.zeros(7, 3, 3, 1))
    l = nn.Linear(10, 20)
    n = Net()
    return l, n, nn.Sequential(n, n)


def test_buffers_and_named_buffers(T, nn):
    l, n, s = _nested(T, nn)
    assert [b for b, _ in n.named_buffers()] == ["dummy_buf"]
    assert [b for b, _ in s.named_buffers()] == ["0.dummy_buf"]
    assert [b for b, _ in s.named_buffers(prefix="x", recurse=True)] == ["x.0.dummy_buf"]
    assert [b for b, _ in s.named_buffers(recurse=False)] == []
    assert [b for b, _ in s.named_buffers(remove_duplicate=False)] == ["0.dummy_buf", "1.dummy_buf"]


def test_named_parameters_remove_duplicate(T, nn):
    lin = nn.Linear(3, 2)

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = lin
            self.b = lin
            self.w = lin.weight
    m = M()
    assert [n for n, _ in m.named_parameters()] == ["w", "a.bias"]
    assert [n for n, _ in m.named_parameters(remove_duplicate=False)] == \
        ["w", "a.weight", "a.bias", "b.weight", "b.bias"]


def test_modules_and_named_modules(T, nn):
    l, n, s = _nested(T, nn)
    assert list(s.modules()) == [s, n, l]
    assert list(s.named_modules()) == [("", s), ("0", n), ("0.l1", l)]
    assert [name for name, _ in s.named_modules(remove_duplicate=False)] == \
        ["", "0", "0.l1", "0.l2", "1", "1.l1", "1.l2"]
    assert [name for name, _ in s.named_modules(prefix="net")] == ["net", "net.0", "net.0.l1"]
    assert list(s.children()) == [n]
    assert list(s.named_children()) == [("0", n)]
    assert list(n.named_children()) == [("l1", l)]


def test_named_modules_memo(T, nn):
    l = nn.Linear(1, 1)
    s = nn.Sequential(l, nn.ReLU())
    assert [name for name, _ in s.named_modules(memo={l})] == ["", "1"]


def test_apply(T, nn):
    net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
    seen = []
    out = net.apply(lambda m: seen.append(type(m).__name__))
    assert out is net
    assert seen == ["Linear", "ReLU", "Linear", "Sequential"]      # children before their parent

    def init(m):
        if isinstance(m, nn.Linear):
            with T.no_grad():
                m.weight.fill_(0.5)
    net.apply(init)
    same(net[2].weight, np.full((1, 3), 0.5, np.float32))


def test_module_apply_inplace_op(T, nn):
    def add_one_inplace(t):
        return t.add_(1.0)
    m = nn.Linear(20, 10)
    before = values(m.weight).copy()
    m._apply(add_one_inplace)
    np.testing.assert_allclose(values(m.weight), before + 1, rtol=1e-6)


def test_train_eval(T, nn):
    net = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5), nn.Sequential(nn.BatchNorm1d(2)))
    assert all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    assert net.train() is net
    assert all(m.training for m in net.modules())
    net.train(False)
    assert not any(m.training for m in net.modules())


def test_train_errors_for_invalid_mode(T, nn):
    class SubclassNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(2, 2)

        def forward(self, inputs):
            return self.l1(inputs)

    for net in (SubclassNet(), nn.Sequential(nn.Linear(2, 2))):
        raises(ValueError, "training mode is expected to be boolean", net.train, 0)
        raises(ValueError, "training mode is expected to be boolean", net.train, "True")
        net.train(True)
        net.train(False)


def test_zero_grad(T, nn):
    i = T.randn(2, 5, requires_grad=True)
    module = nn.Linear(5, 5)
    for p in module.parameters():
        p.requires_grad = False
    module.zero_grad()                     # no grads: nothing to do

    module.weight.requires_grad = True
    module.zero_grad()
    assert module.weight.grad is None      # uninitialized grad

    module(i).sum().backward()
    assert module.weight.grad is not None
    assert float(module.weight.grad.data.abs().sum()) > 0
    module.zero_grad()
    assert module.weight.grad is None

    module.bias.requires_grad = True
    module.zero_grad()
    assert module.weight.grad is None and module.bias.grad is None
    module(i).sum().backward()
    assert module.weight.grad is not None and module.bias.grad is not None
    module.zero_grad(set_to_none=False)    # force the grads to zero
    same(module.weight.grad, np.zeros((5, 5), np.float32))
    same(module.bias.grad, np.zeros(5, np.float32))


def test_requires_grad_(T, nn):
    m = nn.Linear(5, 5)
    for requires_grad in (False, True):
        assert m.requires_grad_(requires_grad) is m
        assert all(p.requires_grad == requires_grad for p in m.parameters())


def test_to_dtype_and_casts(T, nn):
    m = nn.Linear(3, 2)
    m.register_buffer("steps", T.tensor(3))
    w = m.weight
    assert m.to(T.float64) is m
    assert dtype_name(m.weight) == "float64" and dtype_name(m.bias) == "float64"
    assert dtype_name(m.steps) == "int64"          # integer buffers keep their dtype
    assert isinstance(m.weight, nn.Parameter) and m.weight.requires_grad
    np.testing.assert_allclose(values(m.weight), values(w).astype(np.float64))
    m.float()
    assert dtype_name(m.weight) == "float32"
    m.double()
    assert dtype_name(m.bias) == "float64"
    m.half()
    assert dtype_name(m.weight) == "float16"
    m.to(dtype=T.float32)
    assert dtype_name(m.weight) == "float32"
    m.to("cpu")
    m.to(T.zeros(1, dtype=T.float64))          # the dtype of a tensor
    assert dtype_name(m.weight) == "float64"
    m.type(T.float32)
    assert dtype_name(m.weight) == "float32"
    raises(TypeError, "nn.Module.to only accepts floating point or complex dtypes, but got desired dtype=(torch.)?"
           "int64", m.to, T.int64)


def test_type(T, nn):
    l = nn.Linear(10, 20)
    net = nn.Module()
    net.l = l
    net.l2 = l
    net.add_module("empty", None)
    net.register_buffer("indices", T.LongTensor(1))
    net.float()
    assert dtype_name(l.weight) == "float32" and dtype_name(l.bias) == "float32"
    assert dtype_name(net.indices) == "int64"
    net.double()
    assert dtype_name(l.weight) == "float64" and dtype_name(l.bias) == "float64"
    assert dtype_name(net.indices) == "int64"
    net.to(T.half)
    assert dtype_name(l.weight) == "float16"


def test_repr(T, nn):
    empty_sequential = nn.Sequential()
    assert repr(empty_sequential) == "Sequential()"

    class Foo(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 4)
            self.conv = nn.Conv2d(2, 3, 3, stride=2, padding=1, bias=False)
            self.emb = nn.Embedding(10, 3, padding_idx=0)
            self.body = nn.Sequential(nn.ReLU(), nn.Dropout(0.1))

        def extra_repr(self):
            return "hello"
    assert repr(Foo()) == (
        "Foo(\n  hello\n"
        "  (linear): Linear(in_features=3, out_features=4, bias=True)\n"
        "  (conv): Conv2d(2, 3, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), bias=False)\n"
        "  (emb): Embedding(10, 3, padding_idx=0)\n"
        "  (body): Sequential(\n"
        "    (0): ReLU()\n"
        "    (1): Dropout(p=0.1, inplace=False)\n"
        "  )\n"
        ")")


def test_repr_multiline_extra_repr(T, nn):
    class M(nn.Module):
        def extra_repr(self):
            return "a=1\nb=2"
    assert repr(M()) == "M(\n  a=1\n  b=2\n)"
    seq = nn.ModuleList([nn.Linear(1, 1), nn.Linear(1, 1), nn.Linear(1, 1), nn.ReLU(), nn.ReLU()])
    # repeated identical children are folded into one line
    assert repr(seq) == ("ModuleList(\n  (0-2): 3 x Linear(in_features=1, out_features=1, bias=True)\n"
                         "  (3-4): 2 x ReLU()\n)")


def test_call_supports_python_dict_output(T, nn):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(10, 20)
            self.register_backward_hook(self.hook)
            self.check_backward_hook_flag = False

        def hook(self, module, grad_out, grad_in):
            self.check_backward_hook_flag = True

        def forward(self, inputs):
            return {"output": self.l1(inputs).sum()}
    net = Net()
    model_output = net(T.randn([5, 10]))
    model_output["output"].backward()
    assert net.check_backward_hook_flag


def test_share_memory(T, nn):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(T.eye(5))
            self.par = nn.ParameterList()
            self.par.append(nn.Parameter(T.randn(10)))

        def forward(self, inp):
            return inp.clone()
    net = Net()
    assert net.share_memory() is net
    for p in net.parameters():
        assert p.storage().is_shared() if hasattr(p.storage(), "is_shared") else True
