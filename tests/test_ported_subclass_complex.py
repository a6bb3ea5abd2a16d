"""Ported from PyTorch's test/test_weak.py (WeakTest and WeakKeyDictionaryTestCase, on torch.utils.weak's
WeakIdKeyDictionary), test/test_subclass.py (TestSubclass, for the subclasses tests/test_ported_overrides_modes.py
does not build: a subclass with no ``__torch_function__`` of its own, a subclass of Parameter) and the complex
defaults beyond tests/test_ported_dlpack_complex.py's port of test/test_complex.py.

A WeakIdKeyDictionary holds its keys weakly and tells them apart by identity (two tensors with equal values are
two keys, and ``==`` of tensors is never asked); ``nn.Parameter`` of a subclass instance keeps the subclass and
is counted a Parameter; the default dtype decides the complex dtype of Python complex numbers. Each test runs on
chainrule's ``autograd`` and, where installed, on PyTorch (fixture ``T``) against the same literal expectations.
"""

import copy
import gc
import importlib
import io
import random
import threading

import numpy as np
import pytest

from tests.ported import close, raises, same, xfail_ours


def _weak(T):
    return importlib.import_module(f"{T.__name__}.utils.weak")


def _nn(T):
    return importlib.import_module("torch.nn" if T.__name__ == "torch" else "nn")


def _optim(T):
    return importlib.import_module("torch.optim" if T.__name__ == "torch" else "optim")


# -- test_weak.py: WeakTest ---------------------------------------------------------------------------------------


def test_make_weak_keyed_dict_from_dict_and_from_another(T):
    o = T.randn(2)
    d = _weak(T).WeakIdKeyDictionary({o: 364})
    assert d[o] == 364
    d2 = _weak(T).WeakIdKeyDictionary(d)
    assert d2[o] == 364 and len(d2) == 1


def test_weak_tensor_key_dictionary_is_the_same_class(T):
    assert _weak(T).WeakTensorKeyDictionary is _weak(T).WeakIdKeyDictionary
    assert T.utils.weak is _weak(T)  # (reached as an attribute too)


def test_equal_tensors_are_different_keys(T):
    a, b = T.ones(2), T.ones(2)  # (equal values: a dict keyed by == could not hold both)
    d = _weak(T).WeakIdKeyDictionary()
    d[a], d[b] = "a", "b"
    assert len(d) == 2 and d[a] == "a" and d[b] == "b"
    assert T.ones(2) not in d


def test_popitem(T):
    key1, key2 = T.randn(1), T.randn(1)
    value1, value2 = "value 1", "value 2"
    d = _weak(T).WeakIdKeyDictionary()
    d[key1], d[key2] = value1, value2
    assert len(d) == 2
    for left in (1, 0):
        k, v = d.popitem()
        assert len(d) == left
        assert v is (value1 if k is key1 else value2)
    raises(KeyError, "", d.popitem)


def test_setdefault(T):
    key, value1, value2 = T.randn(1), "value 1", "value 2"
    d = _weak(T).WeakIdKeyDictionary()
    for _ in range(2):  # (the second call finds the first value)
        assert d.setdefault(key, value1 if _ == 0 else value2) is value1
        assert key in d and d.get(key) is value1 and d[key] is value1


def test_update_len_keys_get(T):
    source = {T.randn(1): 1, T.randn(1): 2, T.randn(1): 3}
    d = _weak(T).WeakIdKeyDictionary()
    d.update(source)
    assert len(d) == len(source)
    for k in d.keys():
        assert k in source and d[k] is source[k] and d.get(k) is source[k]
    for k in source:
        assert k in d and d[k] is source[k]


def test_delitem(T):
    d = _weak(T).WeakIdKeyDictionary()
    o1, o2 = T.randn(1), T.randn(2)
    d[o1] = d[o2] = "something"
    assert len(d) == 2
    del d[o1]
    assert len(d) == 1 and list(d.keys()) == [o2]


def test_union_operators(T):
    W = _weak(T).WeakIdKeyDictionary
    o1, o2, o3 = T.randn(1), T.randn(1), T.randn(1)
    wkd1, wkd2 = W({o1: 1, o2: 2}), W({o3: 3, o1: 4})
    wkd3 = wkd1.copy()
    d1 = {o2: "5", o3: "6"}
    pairs = [(o2, 7), (o3, 8)]

    tmp1 = wkd1 | wkd2  # (two weak dictionaries)
    assert dict(tmp1) == dict(wkd1) | dict(wkd2) and type(tmp1) is W
    assert dict(tmp1) == {o1: 4, o2: 2, o3: 3}
    wkd1 |= wkd2
    assert wkd1 == tmp1
    tmp2 = wkd2 | d1  # (a weak dictionary and a mapping)
    assert dict(tmp2) == dict(wkd2) | d1 and type(tmp2) is W
    wkd2 |= d1
    assert wkd2 == tmp2
    tmp3 = wkd3.copy()  # (and an iterable of pairs)
    tmp3 |= pairs
    assert dict(tmp3) == dict(wkd3) | dict(pairs) and type(tmp3) is W
    tmp4 = d1 | wkd3  # (__ror__)
    assert dict(tmp4) == d1 | dict(wkd3) and type(tmp4) is W

    del o1
    gc.collect()
    assert 4 not in tmp1.values() and 4 not in tmp2.values()
    assert 1 not in tmp3.values() and 1 not in tmp4.values()
    assert len(tmp1) == 2 and len(tmp4) == 2


def test_bad_delitem(T):
    d = _weak(T).WeakIdKeyDictionary()
    o = T.randn(1)
    raises(KeyError, "", d.__delitem__, o)
    raises(KeyError, "", d.__getitem__, o)
    for method, args in ((d.__delitem__, (13,)), (d.__getitem__, (13,)), (d.__setitem__, (13, 13))):
        raises(TypeError, "weak reference", method, *args)  # (an int cannot be referred to weakly)
    assert 13 not in d


def test_repr(T):
    assert repr(_weak(T).WeakIdKeyDictionary()).startswith("<WeakIdKeyDictionary at 0x")


def test_an_entry_goes_with_its_key(T):
    d = _weak(T).WeakIdKeyDictionary()
    kept, dropped = T.randn(1), T.randn(1)
    d[kept], d[dropped] = "kept", "dropped"
    del dropped
    gc.collect()
    assert len(d) == 1 and list(d.items()) == [(kept, "kept")]


def test_a_key_dropped_while_iterating_goes_when_the_loop_ends(T):
    d = _weak(T).WeakIdKeyDictionary()
    keys = [T.randn(1) for _ in range(4)]
    for i, k in enumerate(keys):
        d[k] = i
    del k  # (the list holds the only references)
    seen = []
    for _, v in d.items():  # (no "dictionary changed size during iteration")
        seen.append(v)
        if v == 0:
            del keys[3]
            gc.collect()
    assert seen[:3] == [0, 1, 2] and len(d) == 3 and sorted(d.values()) == [0, 1, 2]


@pytest.mark.parametrize("deep", [False, True])
def test_threaded_copy_while_keys_die(T, deep):
    """A copy taken while another thread lets keys die does not fail (CPython's issue #35615)."""

    class Key:
        def __init__(self, n):
            self.n = n

    d = _weak(T).WeakIdKeyDictionary()
    keys = [Key(i) for i in range(5000)]
    for k in keys:
        d[k] = Key(-k.n)
    del k  # (the list holds the only references)
    errors = []

    def copy_it():
        try:
            copy.deepcopy(d) if deep else d.copy()
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    def drop_keys():
        chooser = random.Random(0)
        while keys:
            keys.pop(chooser.randrange(len(keys)))

    threads = [threading.Thread(target=copy_it), threading.Thread(target=drop_keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    gc.collect()
    assert len(d) == 0


def test_copy_and_deepcopy_share_keys_and_copy_values(T):
    key = T.randn(2)
    value = [1, 2]
    d = _weak(T).WeakIdKeyDictionary({key: value})
    shallow, deep = copy.copy(d), copy.deepcopy(d)
    assert list(shallow.keys()) == [key] and list(deep.keys()) == [key]  # (keys are identities: never copied)
    assert shallow[key] is value and deep[key] == value and deep[key] is not value


def test_weak_id_ref(T):
    weak = _weak(T)
    a, b = T.ones(1), T.ones(1)
    ra, ra2, rb = weak.WeakIdRef(a), weak.WeakIdRef(a), weak.WeakIdRef(b)
    assert ra == ra2 and hash(ra) == hash(ra2) == id(a) and ra() is a
    assert not (ra == rb)
    del a
    gc.collect()
    assert ra() is None and not (ra == ra2) and ra == ra  # (dead: equal to itself only)
    assert weak.TensorWeakRef(b)() is b


# -- test_weak.py: WeakKeyDictionaryTestCase (CPython's mapping tests) --------------------------------------------


@pytest.fixture
def mapping(T):
    """(the WeakIdKeyDictionary class, a reference dict of 2 tensor keys, the entry in it, an entry not in it)."""
    keys = [T.randn(1), T.randn(2), T.randn(3)]
    reference = {keys[0]: 1, keys[1]: 2}
    return _weak(T).WeakIdKeyDictionary, reference, (keys[1], 2), (keys[2], 3)


def test_mapping_read(mapping):
    W, reference, _, (other_key, other_value) = mapping
    p, d = W(), W(reference)
    for key, value in reference.items():
        assert d[key] == value
    raises(KeyError, "", lambda: d[other_key])
    assert len(p) == 0 and len(d) == len(reference)
    assert all(k in d for k in reference) and other_key not in d
    assert p == p and d == d and p != d and d != p
    assert not p and d
    for it, ref in ((d.keys(), reference.keys()), (iter(d), reference.keys()), (d.values(), reference.values()),
                    (d.items(), reference.items())):
        assert hasattr(it, "__next__") and hasattr(it, "__iter__")
        assert set(it) == set(ref)
    key, value = next(iter(d.items()))
    assert d.get(key, other_value) == value and d.get(other_key, other_value) == other_value
    assert other_key not in d


def test_mapping_write(mapping):
    W, reference, _, (other_key, other_value) = mapping
    p = W()
    for key, value in reference.items():
        p[key] = value
        assert p[key] == value
    for key in reference:
        del p[key]
        raises(KeyError, "", lambda: p[key])  # noqa: B023  (called at once)
    p = W()
    p.update(reference)
    assert dict(p) == reference
    items = list(p.items())
    p = W()
    p.update(items)
    assert dict(p) == reference
    d = W(reference)
    key, value = next(iter(d.items()))
    assert d.setdefault(key, other_value) == value and d[key] == value
    assert d.setdefault(other_key, other_value) == other_value and d[other_key] == other_value
    assert d.pop(other_key) == other_value and other_key not in d
    raises(KeyError, "", d.pop, other_key)
    d[other_key] = other_value
    assert d.pop(other_key, 909) == other_value and other_key not in d and d.pop(other_key, 909) == 909
    key, value = d.popitem()
    assert key not in d and value == reference[key]
    raises(KeyError, "", W().popitem)


def test_mapping_empty_and_signatures(mapping):
    W, _, (in_key, in_value), (other_key, _) = mapping
    assert W() == W() and not W() and bool(W()) is False
    d = W()
    assert list(d.keys()) == [] and list(d.values()) == [] and list(d.items()) == [] and len(d) == 0
    for method, args in ((d.keys, (None,)), (d.values, (None,)), (d.items, (None,)), (d.get, ()),
                         (d.get, (None, None, None)), (d.setdefault, ()), (d.popitem, (42,)), (d.__getitem__, ())):
        raises(TypeError, "", method, *args)
    assert d.get(other_key) is None and d.get(other_key, 3) == 3
    d[in_key] = in_value
    assert d.get(in_key) == in_value and d.get(in_key, 3) == in_value
    raises(KeyError, "", d.pop, other_key)
    assert d.pop(in_key) == in_value and len(d) == 0
    raises(KeyError, "", d.pop, in_key)


def test_mapping_update(mapping):
    W, reference, _, (other_key, other_value) = mapping
    for source in ({other_key: other_value}, {other_key: other_value}.items(), iter([(other_key, other_value)])):
        d = W()
        d.update(source)
        assert list(d.items()) == [(other_key, other_value)]
    d = W()
    d.update()
    assert d == W()
    raises((TypeError, AttributeError), "", d.update, 42)

    class KeysAndGetitem:  # (not a Mapping: update reads keys() then d[key])
        def keys(self):
            return reference.keys()

        def __getitem__(self, key):
            return reference[key]

    d.clear()
    d.update(KeysAndGetitem())
    assert sorted((id(k), v) for k, v in d.items()) == sorted((id(k), v) for k, v in reference.items())

    class Exc(Exception):
        pass

    class FailingKeys:
        def keys(self):
            raise Exc

    class FailingGetitem:
        def keys(self):
            return iter("abc")

        def __getitem__(self, key):
            raise Exc

    class FailingIterator:
        def __iter__(self):
            return self

        def __next__(self):
            raise Exc

    for failing in (FailingKeys(), FailingGetitem(), FailingIterator()):
        raises(Exc, "", W().update, failing)
    raises(ValueError, "", W().update, [(1, 2, 3)])


# -- test_subclass.py: TestSubclass, a subclass with no __torch_function__ of its own; a subclass of Parameter ------


def _plain_subclass(T):
    """``class Plain(torch.Tensor): pass`` (PyTorch's default __torch_function__ keeps it through every op),
    findable by name for load."""

    class Plain(T.Tensor):
        pass

    Plain.__qualname__ = Plain.__name__ = f"Plain_{T.__name__}"
    globals()[Plain.__qualname__] = Plain
    return Plain


def _with_new_empty(T):
    class WithNewEmpty(T.Tensor):
        def new_empty(self, shape):
            return T.empty(shape).as_subclass(type(self))

    WithNewEmpty.__qualname__ = WithNewEmpty.__name__ = f"WithNewEmpty_{T.__name__}"
    globals()[WithNewEmpty.__qualname__] = WithNewEmpty
    return WithNewEmpty


@pytest.mark.parametrize("requires_grad", [False, True])
def test_parameter_of_a_subclass_keeps_its_class(T, requires_grad):
    nn = _nn(T)
    Plain = _plain_subclass(T)
    x = T.tensor([1.0, -2.0]).as_subclass(Plain).requires_grad_(requires_grad)
    p = nn.Parameter(x, requires_grad=not requires_grad)
    assert type(p) is Plain and isinstance(p, nn.Parameter) and p is not x
    assert p.requires_grad is (not requires_grad) and p._is_param is True
    assert not isinstance(x, nn.Parameter) and x.requires_grad is requires_grad  # (x left as it was)
    same(p.detach(), [1.0, -2.0])
    assert not isinstance(T.ones(1), nn.Parameter) and not issubclass(Plain, nn.Parameter)


def test_parameter_of_a_subclass_in_ops_module_and_optimizer(T):
    nn = _nn(T)
    Plain = _plain_subclass(T)
    m = nn.Linear(2, 1)
    m.extra = nn.Parameter(T.tensor([1.0, 2.0]).as_subclass(Plain))
    assert [name for name, _ in m.named_parameters()] == ["weight", "bias", "extra"]
    assert type(m.state_dict()["extra"]) is Plain
    out = m.extra * 3.0
    assert type(out) is Plain and not isinstance(out, nn.Parameter)
    detached, cloned = m.extra.detach(), m.extra.clone()
    assert type(detached) is Plain and not isinstance(detached, nn.Parameter)
    assert type(cloned) is Plain and not isinstance(cloned, nn.Parameter)
    out.sum().backward()
    assert type(m.extra.grad) is T.Tensor  # (its gradient is a plain tensor, as PyTorch's)
    same(m.extra.grad, [3.0, 3.0])
    _optim(T).SGD([m.extra], lr=0.5).step()
    same(m.extra.detach(), [-0.5, 0.5])
    assert type(m.extra) is Plain and isinstance(m.extra, nn.Parameter)


# each optimizer's state after two steps on p = [1, -2] of loss sum(p * p): the values of p, and which state
# tensors are of p's class (made like p: zeros_like(p), as PyTorch's) rather than plain (made from the gradient or a
# number)
_OPTIMIZER_STATES = {
    "SGD": ([0.46, -0.92], {"momentum_buffer": False}),
    "Adam": ([0.8004, -1.8002], {"exp_avg": True, "exp_avg_sq": True, "step": False}),
    "Adamax": ([0.8052, -1.8025], {"exp_avg": True, "exp_inf": True, "step": False}),
    "Adadelta": ([0.9994, -1.9994], {"acc_delta": True, "square_avg": True, "step": False}),
    "Adagrad": ([0.8331, -1.8311], {"sum": True, "step": False}),
    "ASGD": ([0.64, -1.28], {"ax": True, "eta": False, "mu": False, "step": False}),
    "NAdam": ([0.82, -1.8179], {"exp_avg": True, "exp_avg_sq": True, "mu_product": False, "step": False}),
    "RAdam": ([0.6211, -1.2421], {"exp_avg": True, "exp_avg_sq": True, "step": False}),
    "RMSprop": ([-0.9, 0.349], {"momentum_buffer": True, "square_avg": True, "step": False}),
    "Rprop": ([0.78, -1.78], {"prev": True, "step_size": False, "step": False}),
}


@pytest.mark.parametrize("name", sorted(_OPTIMIZER_STATES))
def test_optimizer_state_of_a_subclass_parameter(T, name):
    Plain = _plain_subclass(T)
    p = _nn(T).Parameter(T.tensor([1.0, -2.0]).as_subclass(Plain))
    optimizer = getattr(_optim(T), name)([p], lr=0.1, **({"momentum": 0.9} if name in ("SGD", "RMSprop") else {}))
    for _ in range(2):
        optimizer.zero_grad()
        (p * p).sum().backward()
        optimizer.step()
    expected_values, of_p_class = _OPTIMIZER_STATES[name]
    assert type(p) is Plain
    close(p.detach(), expected_values, rtol=0, atol=1e-4)
    assert {key: type(value) is Plain for key, value in optimizer.state[p].items()} == of_p_class


def test_an_operator_no_subclass_answers_is_not_implemented(T):
    """Between two unrelated subclasses no default __torch_function__ answers: an operator gives NotImplemented, so
    Python asks the other operand's reflected method and else says "unsupported operand"; a function raises."""

    class A(T.Tensor):
        pass

    class B(T.Tensor):
        def __rmatmul__(self, other):
            return "B.__rmatmul__"

    a, b = T.ones(1).as_subclass(A), T.ones(1).as_subclass(B)
    raises(TypeError, r"unsupported operand type\(s\) for \+: 'A' and 'B'", lambda: a + b)
    raises(TypeError, r"unsupported operand type\(s\) for \*\* or pow\(\): 'A' and 'B'", lambda: a ** b)
    raises(TypeError, "'<' not supported between instances of 'A' and 'B'", lambda: a < b)
    assert a @ b == "B.__rmatmul__"
    raises(TypeError, "Multiple dispatch failed for .*add'; all __torch_function__ handlers returned NotImplemented",
           T.add, a, b)
    raises(TypeError, r"unsupported operand type\(s\) for \+: 'Tensor' and 'str'", lambda: T.ones(1) + "x")
    x = T.ones(2).as_subclass(A)
    x += 1
    assert type(x) is A
    same(x, [2.0, 2.0])


def test_parameter_of_a_subclass_prints_both(T):
    nn = _nn(T)
    Plain = _plain_subclass(T)
    p = nn.Parameter(T.tensor([1.0, 2.0]).as_subclass(Plain))
    assert repr(p) == f"Parameter({Plain.__name__}([1., 2.], requires_grad=True))"

    class MyParam(nn.Parameter):
        pass

    q = MyParam(T.ones(2))
    assert type(q) is MyParam and repr(q) == "Parameter containing:\nParameter(MyParam([1., 1.], requires_grad=True))"
    assert repr(nn.Parameter(T.ones(2))) == "Parameter containing:\ntensor([1., 1.], requires_grad=True)"
    # a Parameter of a Parameter's subclass: its detach() is a plain tensor, which PyTorch refuses
    raises(RuntimeError, r"instance of type MyParam requires that detach\(\) returns an instance of the same type, "
           "but return type Tensor", nn.Parameter, q)
    assert type(nn.Parameter(nn.Parameter(T.ones(2)))) is nn.Parameter


@pytest.mark.parametrize("as_param", [False, True])
def test_save_and_load_a_parameter_of_a_subclass(T, as_param):
    nn = _nn(T)
    Plain = _plain_subclass(T)
    x = T.tensor([0.5, -1.5]).as_subclass(Plain)
    if as_param:
        x = nn.Parameter(x)
    buffer = io.BytesIO()
    T.save(x, buffer)
    buffer.seek(0)
    loaded = T.load(buffer, weights_only=False)
    assert type(loaded) is Plain and loaded is not x
    assert isinstance(loaded, nn.Parameter) is as_param and loaded.requires_grad is as_param
    same(loaded.detach(), [0.5, -1.5])


def test_deepcopy_of_a_subclass_needs_new_empty_of_its_class(T):
    Plain, WithNewEmpty = _plain_subclass(T), _with_new_empty(T)
    raises(RuntimeError, r"only works for subclass types that implement new_empty\(\)", copy.deepcopy,
           T.ones(2).as_subclass(Plain))
    raises(RuntimeError, "implement new_empty", copy.deepcopy, _nn(T).Parameter(T.ones(2).as_subclass(Plain)))
    x = T.tensor([1.0, 2.0]).as_subclass(WithNewEmpty)
    x.label = ["a"]
    x_copy = copy.deepcopy(x)
    assert type(x_copy) is WithNewEmpty and x_copy is not x
    assert x_copy.label == ["a"] and x_copy.label is not x.label
    same(x_copy, [1.0, 2.0])
    p_copy = copy.deepcopy(_nn(T).Parameter(x))
    assert type(p_copy) is WithNewEmpty and isinstance(p_copy, _nn(T).Parameter) and p_copy.requires_grad


def test_deepcopy_asks_the_subclass_and_the_mode(T):
    """copy.deepcopy of a tensor goes through __torch_function__ as Tensor.__deepcopy__ (once: inside it the
    subclasses are off), so a subclass can copy its own state there, and a mode sees it."""

    class Logged(T.Tensor):
        calls = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.calls.append(func.__name__)
            result = super().__torch_function__(func, types, args, kwargs)
            if func is T.Tensor.__deepcopy__:
                result.copied_from = id(args[0])
            return result

        def new_empty(self, shape, **kwargs):
            return T.empty(shape, **kwargs).as_subclass(type(self))

    x = T.tensor([1.0, 2.0]).as_subclass(Logged)
    Logged.calls.clear()
    y = copy.deepcopy(x)
    assert Logged.calls == ["__deepcopy__"] and type(y) is Logged and y.copied_from == id(x)
    same(y, [1.0, 2.0])
    seen = []

    class Recording(T.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func.__name__)
            return func(*args, **(kwargs or {}))

    plain = T.ones(2)
    with Recording():
        copied = copy.deepcopy(plain)
    assert seen == ["__deepcopy__"] and type(copied) is T.Tensor


@pytest.mark.parametrize("leave_parametrized", [False, True])
def test_parametrization_of_a_subclass_parameter(T, leave_parametrized):
    nn = _nn(T)
    parametrize = importlib.import_module(f"{nn.__name__}.utils.parametrize")
    Plain = _plain_subclass(T)

    class Negate(nn.Module):
        def forward(self, X):
            return -X

    m = nn.Module()
    m.weight = nn.Parameter(T.tensor([1.0, -3.0]).as_subclass(Plain))
    parametrize.register_parametrization(m, "weight", Negate())
    assert type(m.weight) is Plain
    same(m.weight.detach(), [-1.0, 3.0])
    (m.weight * T.tensor([2.0, 5.0])).sum().backward()
    same(m.parametrizations.weight.original.grad, [-2.0, -5.0])
    parametrize.remove_parametrizations(m, "weight", leave_parametrized=leave_parametrized)
    same(m.weight.detach(), [-1.0, 3.0] if leave_parametrized else [1.0, -3.0])
    assert isinstance(m.weight, nn.Parameter)


# -- complex defaults ----------------------------------------------------------------------------------------------


@pytest.fixture
def default_dtype(T, request):
    before = T.get_default_dtype()
    T.set_default_dtype(getattr(T, request.param))
    yield request.param
    T.set_default_dtype(before)


@pytest.mark.parametrize("bad", ["complex64", "complex128", "int64", "bool"])
def test_set_default_dtype_refuses_what_is_not_floating(T, bad):
    before = T.get_default_dtype()
    raises(TypeError, "only floating-point types are supported as the default type", T.set_default_dtype,
           getattr(T, bad))
    assert T.get_default_dtype() == before


@pytest.mark.parametrize("default_dtype", ["float32", "float64"], indirect=True)
def test_complex_creation_follows_the_default_dtype(T, default_dtype):
    complex_name = "complex128" if default_dtype == "float64" else "complex64"
    same(T.tensor(2j), np.array(2j), dtype=complex_name)
    same(T.tensor([1, 2j]), [1, 2j], dtype=complex_name)
    same(T.full((2,), 1j), [1j, 1j], dtype=complex_name)
    same(T.complex(T.ones(1), T.zeros(1)), [1 + 0j], dtype=complex_name)
    same(T.arange(3) * (1 + 1j), [0, 1 + 1j, 2 + 2j], dtype=complex_name)  # (an integer tensor: the default's)
    close(T.linspace(0, 1j, 3), [0, 0.5j, 1j])
    assert str(T.linspace(0, 1j, 3).dtype).endswith(complex_name)
    assert str(T.randn(2, dtype=T.cfloat).dtype).endswith("complex64")  # (an explicit dtype wins)


@pytest.mark.parametrize("default_dtype", ["float32", "float64"], indirect=True)
def test_complex_promotion_with_float_scalars(T, default_dtype):
    same(T.ones(2, dtype=T.complex64) * 2.5, [2.5, 2.5], dtype="complex64")  # (a float scalar: no wider)
    same(T.zeros(2, dtype=T.cfloat).add(1.5), [1.5, 1.5], dtype="complex64")
    same(T.ones(2, dtype=T.float32) * 1j, [1j, 1j], dtype="complex64")
    same(T.ones(2, dtype=T.float64) * 1j, [1j, 1j], dtype="complex128")
    assert T.result_type(T.tensor([1.0], dtype=T.float64), 1j) == T.complex128
    assert T.result_type(T.tensor([1j]), 2.0) == T.tensor([1j]).dtype
    assert T.promote_types(T.complex64, T.float64) == T.complex128


@xfail_ours("NumPy has no complex32: a float16 tensor times a complex scalar is complex64 here, PyTorch's complex32")
def test_half_times_a_complex_scalar_is_complex32(T):
    assert (T.ones(2, dtype=T.half) * 1j).dtype == T.complex32


def test_complex_equality_with_python_numbers(T):
    assert bool(T.tensor(1 + 1j) == 1 + 1j)
    same(T.tensor([1 + 0j]) == 1, [True])
    same(T.tensor([1.0]) == 1 + 0j, [True])
    same(T.tensor([1.0]) == 1 + 1j, [False])
    same(T.tensor([1, 2]).eq(T.tensor([1 + 0j, 2j])), [True, False])
    same(T.tensor([1 + 1j]).ne(T.tensor([1 + 1j], dtype=T.complex128)), [False])
    x = T.tensor([1 + 1j, 2 - 1j])
    assert T.equal(x, x.clone()) and not T.equal(x, x.conj())


def test_complex_printing_and_items(T):
    assert repr(T.tensor([1 + 2j, 3.5 - 1e-5j])) == "tensor([1.0000+2.0000e+00j, 3.5000-1.0000e-05j])"
    assert repr(T.tensor(2j)) == "tensor(0.+2.j)"
    assert repr(T.tensor([[1e10 + 1j, 2]])) == "tensor([[1.0000e+10+1.j, 2.0000e+00+0.j]])"
    assert repr(T.tensor([float("nan") + 1j, complex(0, float("inf"))])) == "tensor([nan+1.j, 0.+infj])"
    assert T.tensor([0.1 + 0.2j]).item() == complex(np.complex64(0.1 + 0.2j))
    assert T.tensor([0.1 + 0.2j], dtype=T.complex128).tolist() == [0.1 + 0.2j]
