"""Sequential, ModuleList, ModuleDict, ParameterList and ParameterDict, ported from PyTorch's
test/test_nn.py (TestNN): indexing, slicing, assignment, deletion, insert, extend, append, pop, +, *,
and the errors. Each test runs on chainrule's `nn` and, where it is installed, on PyTorch's."""

from collections import OrderedDict

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import raises, same, values

nn = ported_nn.nn  # the fixture


def _linears(nn, *sizes):
    return [nn.Linear(a, b) for a, b in zip(sizes, sizes[1:])]


def test_Sequential_getitem(T, nn):
    l1, l2, l3, l4 = _linears(nn, 10, 20, 30, 40, 50)
    n = nn.Sequential(l1, l2, l3, l4)
    assert n[0] is l1 and n[1] is l2 and n[2] is l3 and n[3] is l4
    assert n[T.tensor(3, dtype=T.int64)] is l4
    assert list(n[1:]) == [l2, l3, l4]
    assert isinstance(n[1:], nn.Sequential)
    assert list(n[3:]) == [l4]
    assert list(n[:-1]) == [l1, l2, l3]
    assert list(n[:-3]) == [l1]
    assert list(n[::-1]) == [l4, l3, l2, l1]
    assert n[-1] is l4 and n[-4] is l1
    raises(IndexError, "index 4 is out of range", lambda: n[4])
    raises(IndexError, "index -5 is out of range", lambda: n[-5])


def test_Sequential_setitem(T, nn):
    l1, l2, l3, l4 = _linears(nn, 10, 20, 30, 40, 50)
    n = nn.Sequential(l1, l2, l3)
    n[0] = l4
    n[-1] = l4
    n[T.tensor(1, dtype=T.int16)] = l1
    assert list(n) == [l4, l1, l4]


def test_Sequential_setitem_named(T, nn):
    l1, l2, l3, l4 = _linears(nn, 10, 20, 30, 40, 50)
    n = nn.Sequential(OrderedDict([("linear1", l1), ("linear2", l2), ("linear3", l3)]))
    n[0] = l4
    n[-1] = l4
    assert n.linear1 is l4 and n.linear3 is l4
    assert [name for name, _ in n.named_children()] == ["linear1", "linear2"]     # l4 once
    assert list(n._modules) == ["linear1", "linear2", "linear3"]


def test_Sequential_delitem(T, nn):
    l1, l2, l3, l4 = _linears(nn, 10, 20, 30, 40, 50)
    n = nn.Sequential(l1, l2, l3, l4)
    del n[-1]
    assert list(n) == [l1, l2, l3]
    del n[1::2]
    assert list(n) == [l1, l3]
    assert [name for name, _ in n.named_children()] == ["0", "1"]     # renumbered


def test_Sequential_add(T, nn):
    l1, l2, l3, l4 = _linears(nn, 1, 2, 3, 4, 5)
    n = nn.Sequential(l1, l2)
    other = nn.Sequential(l3, l4)
    both = n + other
    assert list(both) == [l1, l2, l3, l4]
    assert list(n) == [l1, l2]            # + makes a new Sequential
    raises(ValueError, "add operator supports only objects of Sequential class, but <class 'str'> is given.",
           lambda: n + "x")


def test_Sequential_iadd(T, nn):
    l1, l2, l3, l4 = _linears(nn, 1, 2, 3, 4, 5)
    n = nn.Sequential(l1, l2, l3)
    n2 = nn.Sequential(l4)
    n += n2
    n2 += n
    assert list(n) == [l1, l2, l3, l4]
    assert list(n2) == [l4, l1, l2, l3, l4]
    raises(ValueError, "add operator supports only objects of Sequential class", lambda: n.__iadd__(l1))


def test_Sequential_mul(T, nn):
    l1, l2, l3, l4 = _linears(nn, 1, 2, 3, 4, 5)
    n = nn.Sequential(l1, l2, l3, l4)
    n2 = n * 2
    assert list(n2) == [l1, l2, l3, l4, l1, l2, l3, l4]
    assert list(2 * n) == list(n2)
    raises(ValueError, "Non-positive multiplication factor -1 for <class '[a-z.]*container.Sequential'>",
           lambda: n * -1)
    raises(TypeError, "unsupported operand type", lambda: n * 1.5)


def test_Sequential_imul(T, nn):
    l1, l2, l3, l4 = _linears(nn, 1, 2, 3, 4, 5)
    n = nn.Sequential(l1, l2, l3, l4)
    n *= 2
    assert list(n) == [l1, l2, l3, l4, l1, l2, l3, l4]
    n *= 2
    assert len(n) == 16


def test_Sequential_append_insert_extend_pop(T, nn):
    l1, l2, l3, l4 = _linears(nn, 1, 2, 3, 4, 5)
    n = nn.Sequential(l1, l2, l3)
    assert n.append(l4) is n
    assert list(n) == [l1, l2, l3, l4]
    n = nn.Sequential(l1, l2, l3)
    module_1 = nn.Linear(4, 6)
    assert n.insert(1, module_1) is n
    assert list(n) == [l1, module_1, l2, l3]
    n.insert(-1, l4)                          # before the last
    assert list(n) == [l1, module_1, l2, l4, l3]
    n.insert(5, l1)                           # at the end
    assert n[5] is l1
    raises(IndexError, "Index out of range: 7", n.insert, 7, l1)
    raises(IndexError, "Index out of range: -8", n.insert, -8, l1)
    raises(AssertionError, "module should be of type: <class 'torch.nn.modules.module.Module'>|module should be "
           "of type", n.insert, 0, 3)

    n = nn.Sequential(l1)
    assert n.extend([l2, l3]) is n
    assert list(n) == [l1, l2, l3]
    n.extend(nn.Sequential(l4))
    assert list(n) == [l1, l2, l3, l4]

    n = nn.Sequential(l1, l2, l3, l4)
    assert n.pop(1) is l2
    assert list(n) == [l1, l3, l4]
    assert [name for name, _ in n.named_children()] == ["0", "1", "2"]
    assert n.pop(-1) is l4


def test_Sequential_forward_and_dict(T, nn):
    seq = nn.Sequential(OrderedDict([("a", nn.Linear(2, 3)), ("act", nn.ReLU())]))
    assert seq.act is seq[1]
    x = T.tensor([[1.0, -2.0]])
    np.testing.assert_allclose(values(seq(x)), np.maximum(values(seq.a(x)), 0), rtol=1e-6)
    raises(TypeError, "forward\\(\\) takes 2 positional arguments but 3 were given", seq, x, x)
    assert len(nn.Sequential()) == 0
    same(nn.Sequential()(x), values(x))       # an empty Sequential is the identity


def test_ModuleList(T, nn):
    modules = [nn.ReLU(), nn.Linear(5, 5)]
    module_list = nn.ModuleList(modules)

    def check():
        assert len(module_list) == len(modules)
        for m1, m2 in zip(modules, module_list):
            assert m1 is m2
        for m1, m2 in zip(modules, module_list.children()):
            assert m1 is m2
        for i in range(len(modules)):
            assert module_list[i] is modules[i]

    check()
    modules += [nn.Conv2d(3, 4, 3)]
    module_list += [modules[-1]]
    check()
    modules = modules + [nn.Conv2d(3, 4, 3, bias=False), nn.GELU()]
    module_list = module_list + nn.ModuleList(modules[-2:])
    check()
    modules.insert(1, nn.Linear(3, 2))
    module_list.insert(1, modules[1])
    check()
    modules.append(nn.Tanh())
    module_list.append(modules[-1])
    check()
    next_modules = [nn.Linear(5, 5), nn.Sigmoid()]
    modules.extend(next_modules)
    module_list.extend(next_modules)
    check()
    modules[2] = nn.Conv2d(5, 3, 2)
    module_list[2] = modules[2]
    check()
    modules[-1] = nn.Conv2d(5, 2, 1)
    module_list[-1] = modules[-1]
    check()
    idx = T.tensor(2, dtype=T.int32)
    modules[2] = nn.Conv2d(5, 3, 2)
    module_list[idx] = modules[2]
    assert module_list[idx] is modules[2]
    check()
    assert list(module_list[1:]) == modules[1:]
    assert list(module_list[3:]) == modules[3:]
    assert list(module_list[:-1]) == modules[:-1]
    assert list(module_list[:-3]) == modules[:-3]
    assert list(module_list[::-1]) == modules[::-1]
    assert isinstance(module_list[1:], nn.ModuleList)
    del module_list[-1]
    assert list(module_list) == modules[:-1]
    del module_list[1::2]
    assert list(module_list) == modules[:-1][0::2]
    assert [name for name, _ in module_list.named_children()] == [str(i) for i in range(len(module_list))]

    raises(TypeError, "ModuleList.extend should be called with an iterable, but got ReLU", module_list.extend,
           nn.ReLU())
    raises(TypeError, "ModuleList.extend should be called with an iterable", lambda: module_list.__iadd__(
        nn.ReLU()))
    l1, l2 = nn.Linear(1, 2), nn.Linear(2, 3)
    ml = nn.ModuleList([l1, l2])
    assert ml.pop(0) is l1 and list(ml) == [l2]
    raises(IndexError, "index 5 is out of range", lambda: ml[5])
    raises(NotImplementedError, 'Module \\[ModuleList\\] is missing the required "forward" function', ml)


def test_ModuleList_repr_and_iadd_keeps_object(T, nn):
    ml = nn.ModuleList()
    same_object = ml
    ml += [nn.ReLU()]
    assert ml is same_object
    assert repr(nn.ModuleList()) == "ModuleList()"


def test_ModuleDict(T, nn):
    modules = OrderedDict([("act", nn.ReLU()), ("conv", nn.Conv2d(10, 10, 5)), ("fc", nn.Linear(5, 5))])
    module_dict = nn.ModuleDict(modules)

    def check():
        assert len(module_dict) == len(modules)
        for k1, m2 in zip(modules, module_dict.children()):
            assert modules[k1] is m2
        for k1, k2 in zip(modules, module_dict):
            assert modules[k1] is module_dict[k2]
        for k in module_dict:
            assert module_dict[k] is modules[k]
        for k in module_dict.keys():
            assert module_dict[k] is modules[k]
        for k, v in module_dict.items():
            assert modules[k] is v
        for k1, m2 in zip(modules, module_dict.values()):
            assert modules[k1] is m2
        for k in modules.keys():
            assert k in module_dict
    check()

    modules["conv"] = nn.Conv2d(3, 4, 3)
    module_dict["conv"] = modules["conv"]
    check()

    next_modules = [("fc2", nn.Linear(5, 5)), ("act", nn.Sigmoid())]
    modules.update(next_modules)
    module_dict.update(next_modules)
    check()

    next_modules = OrderedDict([("fc3", nn.Linear(5, 5)), ("act2", nn.Sigmoid())])
    modules.update(next_modules)
    module_dict.update(next_modules)
    check()

    next_modules = {"fc4": nn.Linear(5, 5), "act3": nn.Sigmoid()}
    modules.update(next_modules.items())
    module_dict.update(next_modules)
    check()

    next_modules = nn.ModuleDict([("fc5", nn.Linear(5, 5)), ("act4", nn.Sigmoid())])
    modules.update(next_modules)
    module_dict.update(next_modules)
    check()

    del module_dict["fc"]
    del modules["fc"]
    check()

    raises(TypeError, "ModuleDict.update should be called with an iterable of key/value pairs, but got ReLU",
           module_dict.update, nn.ReLU())
    raises(TypeError, "ModuleDict update sequence element #0 should be Iterable; isLinear",
           module_dict.update, [nn.Linear(5, 5)])
    raises(ValueError, "ModuleDict update sequence element #0 has length 3; 2 is required",
           module_dict.update, [[nn.Linear(5, 5), nn.Linear(5, 5), nn.Linear(5, 5)]])

    # it's fine if key is a str-like object
    module_dict["1"] = nn.Linear(5, 5)
    assert "1" in module_dict
    del module_dict["1"]
    c = module_dict.pop("conv")
    assert c is modules["conv"]
    modules.pop("conv")
    check()
    module_dict.clear()
    assert len(module_dict) == 0
    modules.clear()
    check()
    raises(KeyError, "nope", lambda: module_dict["nope"])


def test_ParameterList(T, nn):
    def make_param():
        return nn.Parameter(T.randn(2, 2))
    parameters = [make_param(), make_param()]
    param_list = nn.ParameterList(parameters)

    def check():
        assert len(parameters) == len(param_list)
        for p1, p2 in zip(parameters, param_list):
            assert p1 is p2
        for p1, p2 in zip(filter(lambda x: isinstance(x, nn.Parameter), parameters), param_list.parameters()):
            assert p1 is p2
        for i in range(len(parameters)):
            assert parameters[i] is param_list[i]

    check()
    parameters += [make_param()]
    param_list += [parameters[-1]]
    check()
    parameters.append(make_param())
    param_list.append(parameters[-1])
    check()
    next_params = [make_param(), make_param()]
    parameters.extend(next_params)
    param_list.extend(next_params)
    check()
    parameters[2] = make_param()
    param_list[2] = parameters[2]
    check()
    parameters[-1] = make_param()
    param_list[-1] = parameters[-1]
    check()
    idx = T.tensor(2, dtype=T.int32)
    parameters[2] = make_param()
    param_list[idx] = parameters[2]
    assert param_list[idx] is parameters[2]
    check()
    assert list(param_list[1:]) == parameters[1:]
    assert list(param_list[3:]) == parameters[3:]
    assert list(param_list[:-1]) == parameters[:-1]
    assert list(param_list[:-3]) == parameters[:-3]
    assert list(param_list[::-1]) == parameters[::-1]

    raises(TypeError, "ParameterList.extend should be called with an iterable, but got Parameter",
           param_list.extend, make_param())
    raises(TypeError, "ParameterList.extend should be called with an iterable", lambda: param_list.__iadd__(
        make_param()))

    # a plain tensor is turned into a Parameter; other objects are kept as they are
    param_list = nn.ParameterList([T.ones(2), "foo", 1])
    assert isinstance(param_list[0], nn.Parameter) and param_list[0].requires_grad
    assert param_list[1] == "foo" and param_list[2] == 1
    assert len(list(param_list.parameters())) == 1
    assert [name for name, _ in param_list.named_parameters()] == ["0"]


def test_ParameterList_repr(T, nn):
    pl = nn.ParameterList([nn.Parameter(T.ones(2, 3)), nn.Parameter(T.ones(4, dtype=T.float64))])
    r = repr(pl)
    assert r.startswith("ParameterList(\n    (0): Parameter containing: [")
    assert "size 2x3" in r and "size 4" in r
    assert r.endswith(")")


def test_ParameterDict(T, nn):

    def make_param():
        return nn.Parameter(T.randn(2, 2))
    parameters = OrderedDict([("p1", make_param()), ("p2", make_param()), ("p3", make_param())])
    parameter_dict = nn.ParameterDict(parameters)

    def check():
        assert len(parameter_dict) == len(parameters)
        for k1, (k2, m2) in zip(parameters, parameter_dict.named_parameters()):
            assert k1 == k2
            assert parameters[k1] is m2
        for k1, k2 in zip(parameters, parameter_dict):
            assert parameters[k1] is parameter_dict[k2]
        for k in parameter_dict:
            assert parameter_dict[k] is parameters[k]
        for k in parameter_dict.keys():
            assert parameter_dict[k] is parameters[k]
        for k, v in parameter_dict.items():
            assert v is parameters[k]
        for k1, m2 in zip(parameters, parameter_dict.values()):
            assert parameters[k1] is m2
        for k in parameters.keys():
            assert k in parameter_dict

    check()
    parameters["p4"] = make_param()
    parameter_dict["p4"] = parameters["p4"]
    check()

    next_parameters = [("p5", make_param()), ("p2", make_param())]
    parameters.update(next_parameters)
    parameter_dict.update(next_parameters)
    check()

    next_parameters = OrderedDict([("p6", make_param()), ("p5", make_param())])
    parameters.update(next_parameters)
    parameter_dict.update(next_parameters)
    check()

    next_parameters = {"p8": make_param(), "p7": make_param()}
    parameters.update(sorted(next_parameters.items()))
    parameter_dict.update(next_parameters)                 # a plain dict is taken in sorted key order
    check()

    next_parameters = nn.ParameterDict([("p10", make_param()), ("p9", make_param())])
    parameters.update(next_parameters)
    parameter_dict.update(next_parameters)
    check()

    del parameter_dict["p3"]
    del parameters["p3"]
    check()

    raises(TypeError, "ParametersDict.update should be called with an iterable of key/value pairs, but got "
           "int", parameter_dict.update, 1)
    raises(TypeError, "ParameterDict update sequence element #0 should be Iterable; is ?int",
           parameter_dict.update, [1])
    raises(ValueError, "ParameterDict update sequence element #0 has length 3; 2 is required",
           parameter_dict.update, [[make_param(), make_param(), make_param()]])

    p_pop = parameter_dict.pop("p4")
    assert p_pop is parameters["p4"]
    parameters.pop("p4")
    check()

    # Check reverse works
    forward = list(iter(parameter_dict))
    backward = list(reversed(parameter_dict))
    assert len(forward) == len(backward)
    n = len(forward)
    for i in range(n):
        assert forward[i] is backward[n - i - 1]
    check()

    # Check copy works
    copy = parameter_dict.copy()
    for key in parameter_dict:
        assert key in copy
        assert parameter_dict[key] is copy[key]
    check()

    parameters["p20"] = make_param()
    parameter_dict["p20"] = parameters["p20"]
    copy = parameter_dict.copy()
    check()

    # Check fromkeys works
    parameter_dict2 = parameter_dict.fromkeys(["p19", "p20"])
    assert parameter_dict2 == {"p19": None, "p20": None} or dict(parameter_dict2.items()) == {"p19": None,
                                                                                                 "p20": None}
    check()

    # Check fromkeys with default works
    parameter_dict2 = parameter_dict.fromkeys(["p19", "p20"], T.ones(1))
    assert isinstance(parameter_dict2["p19"], nn.Parameter)
    same(parameter_dict2["p20"], [1.0])

    # Check get works
    for k in parameter_dict:
        assert parameter_dict[k] is parameter_dict.get(k)
    assert parameter_dict.get("notthere") is None
    assert parameter_dict.get("notthere", 1) == 1

    # Check popitem works
    p_popitem = parameter_dict.popitem()
    assert p_popitem[0] == "p20" and p_popitem[1] is parameters["p20"]

    # setdefault
    s = parameter_dict.setdefault("p21", make_param())
    assert parameter_dict["p21"] is s
    assert parameter_dict.setdefault("p21", make_param()) is s

    # Check that ParameterDict + ParameterDict works and | too
    both = parameter_dict | nn.ParameterDict({"z": make_param()})
    assert list(both.keys())[-1] == "z"
    parameter_dict.clear()
    assert len(parameter_dict) == 0
    # a missing key: KeyError here, AttributeError in PyTorch 2.13


def test_ParameterDict_plain_tensors_and_other_values(T, nn):
    pd = nn.ParameterDict({"a": T.ones(2), "b": "foo"})
    assert isinstance(pd["a"], nn.Parameter) and pd["a"].requires_grad
    assert pd["b"] == "foo"
    assert [name for name, _ in pd.named_parameters()] == ["a"]
    pd["c"] = T.zeros(1, dtype=T.float64)
    assert isinstance(pd["c"], nn.Parameter)


def test_parameterlistdict_setting_attributes(T, nn):
    import warnings
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        mod = nn.ParameterList(map(nn.Parameter, [T.rand(2), T.rand(2)]))
        mod.train()
        mod.eval()
        mod = nn.ParameterDict({"a": nn.Parameter(T.rand(2)), "b": nn.Parameter(T.rand(2))})
        mod.train()
        mod.eval()
    assert len(w) == 0


def test_container_copy(T, nn):
    import copy

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(4, 5)

        def forward(self, input):
            return self.linear(input)

    input = T.randn(2, 4)
    model = Model()
    model_cp = copy.deepcopy(model)
    np.testing.assert_array_equal(values(model(input)), values(model_cp(input)))
    with T.no_grad():
        model_cp.linear.weight.fill_(0)
    assert not np.array_equal(values(model.linear.weight), values(model_cp.linear.weight))


@pytest.mark.parametrize("kind", ["Sequential", "ModuleList"])
def test_containers_register_their_children(T, nn, kind):
    lins = _linears(nn, 2, 3, 4)
    c = nn.Sequential(*lins) if kind == "Sequential" else nn.ModuleList(lins)
    assert [name for name, _ in c.named_parameters()] == ["0.weight", "0.bias", "1.weight", "1.bias"]
    sd = c.state_dict()
    c2 = nn.Sequential(*_linears(nn, 2, 3, 4)) if kind == "Sequential" else nn.ModuleList(_linears(nn, 2, 3, 4))
    c2.load_state_dict(sd)
    same(c2[1].bias, values(lins[1].bias))
