"""Ported from PyTorch's test/test_overrides.py, class TestTorchFunctionMode (with the functions and the
SubTensor class its tests use), and from test/test_subclass.py, class TestSubclass, the cases about
``__torch_function__`` (its NonWrapperTensor from torch.testing._internal.common_subclass, beside plain Tensor;
the ``__torch_dispatch__`` classes are not ported: chainrule has no dispatcher below the Python API).

A ``TorchFunctionMode`` is asked about every call made while it is entered, factories included, before any
subclass, with itself off the mode stack while its handler runs. The last tests are programs a user writes with
a mode: a logging mode over a training step, a mode giving factories another default dtype, a mode counting a
module's ops, nested modes. Each runs on chainrule and on PyTorch (the ``T`` fixture) against the same
expectations."""

import copy
import importlib
import io
import pickle
import threading
import warnings

import numpy as np
import pytest

from tests.ported import close, raises, same, xfail_ours


def _nn(T):
    return importlib.import_module("torch.nn" if T.__name__ == "torch" else "nn")


def _optim(T):
    return importlib.import_module("torch.optim" if T.__name__ == "torch" else "optim")


def _pytree(T):
    return importlib.import_module(f"{T.__name__}.utils._pytree")


# PyTorch's SubTensor defines __torch_function__ as a plain method, which PyTorch deprecates (and still honours)
_PLAIN_METHOD_DEPRECATED = pytest.mark.filterwarnings("ignore:Defining your `__torch_function__")


def _bar(T):
    """PyTorch's test ``bar``: a Python function of one argument that takes part through has_torch_function."""

    def bar(a):
        if T.overrides.has_torch_function((a,)):
            return T.overrides.handle_torch_function(bar, (a,), a)
        return a

    return bar


def _sub_tensor(T, bar):
    """PyTorch's test SubTensor: a subclass answering for mean (0), mm (-1) and bar (1) from its table, and
    NotImplemented for div and everything else."""
    handled = {T.mean: lambda mat: 0, T.mm: lambda mat1, mat2: -1, bar: lambda mat: 1,
               T.div: lambda input, other, out=None: NotImplemented}

    class SubTensor(T.Tensor):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            if func not in handled:
                return NotImplemented
            return handled[func](*args, **(kwargs or {}))

    return SubTensor


def _constant_mode(T, value):
    class A(T.overrides.TorchFunctionMode):
        def __torch_function__(self, *args, **kwargs):
            return value

    return A


def _recording_mode(T, into):
    """A mode that records its message for each call and runs the call."""

    class A(T.overrides.TorchFunctionMode):
        def __init__(self, msg):
            self.msg = msg

        def __torch_function__(self, func, types, args=(), kwargs=None):
            into.append(self.msg)
            return func(*args, **(kwargs or {}))

    return A


# -- TestTorchFunctionWarning (the subclass half: a tensor-like that is no subclass is not built) ---------------


def test_warn_on_invalid_torch_function(T):
    class Bad2(T.Tensor):
        def __torch_function__(self, *args, **kwargs):
            pass

    a = T.tensor([1.0, -1.0]).as_subclass(Bad2)
    with pytest.warns(DeprecationWarning, match="as a plain method is deprecated"):
        _nn(T).functional.dropout(a)  # (a function written in Python, in PyTorch)
    with pytest.warns(DeprecationWarning, match="as a plain method is deprecated"):
        _bar(T)(a)  # (a program's own, through handle_torch_function)
    with pytest.warns(UserWarning, match="as a plain method is deprecated"):
        T.abs(a)  # (a function written in C++, in PyTorch)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert a.abs() is None and a + 1 is None  # (the plain method answers; a method's call does not warn)


# -- TestTorchFunctionMode --------------------------------------------------------------------------------------


def test_basic(T):
    A = _constant_mode(T, -1)
    bar = _bar(T)
    x = T.randn(1)
    with A():  # (factories are asked too)
        assert T.randn(3) == -1
        assert T.add(x, x) == -1
        assert T.split(None, [2]) == -1  # (a function written in Python: the mode answers before it looks)
        assert bar(x) == -1
    assert T.add(x, x).shape == (1,)  # (left: the plain functions again)


def test_factory_override(T):
    A = _constant_mode(T, -1)
    with A():
        assert T.tensor([1]) == -1
        assert T.as_tensor([1]) == -1
        assert T.sparse_coo_tensor(1, 1, 1) == -1
        assert T.zeros(2) == -1 and T.arange(3) == -1 and T.full((2,), 1.0) == -1 and T.eye(2) == -1


@_PLAIN_METHOD_DEPRECATED
def test_modes_handle_first(T):
    bar = _bar(T)
    SubTensor = _sub_tensor(T, bar)
    x = T.tensor([[1.0, 2.0], [1.0, 2.0]]).as_subclass(SubTensor)
    with _constant_mode(T, -40)():
        assert T.neg(x) == -40
        assert T.mean(x) == -40
        assert T.mm(x, x) == -40
        assert bar(x) == -40


@_PLAIN_METHOD_DEPRECATED
def test_modes_return_notimplemented(T):
    bar = _bar(T)
    SubTensor = _sub_tensor(T, bar)
    x = T.tensor([[1.0, 2.0], [1.0, 2.0]]).as_subclass(SubTensor)
    with _constant_mode(T, NotImplemented)():  # (the subclass answers next)
        assert T.mean(x) == 0
        assert T.mm(x, x) == -1
        assert bar(x) == 1
        raises(TypeError, "SubTensor", T.max, x, x)  # (neither answers)


def test_with_mode(T):
    class ErrorA(RuntimeError):
        pass

    class A(T.overrides.TorchFunctionMode):
        def __torch_function__(self, *args, **kwargs):
            raise ErrorA()

    with pytest.raises(ErrorA):
        with A():
            T.empty([])
    assert T.overrides._get_current_function_mode_stack() == []  # (the error left the block: the mode is off)


def test_with_mode_created_separately(T):
    class ErrorA(RuntimeError):
        pass

    class A(T.overrides.TorchFunctionMode):
        def __torch_function__(self, *args, **kwargs):
            raise ErrorA()

    x = A()
    with pytest.raises(ErrorA):
        with x:
            T.empty([])


def test_with_nested_modes(T):
    out = []
    A = _recording_mode(T, out)
    with A("layer1"):
        with A("layer2"):
            T.empty([])
    assert out == ["layer2", "layer1"]


def test_nested_same_mode(T):
    out = []
    A = _recording_mode(T, out)
    with A("layer1") as a:
        with a:
            T.empty([])
    assert out == ["layer1", "layer1"]


def test_error_using_class_method_on_mode(T):
    class A(T.overrides.TorchFunctionMode):
        @classmethod
        def __torch_function__(cls, func, _, args=(), kwargs=None):
            return func(args, kwargs)

    x = T.tensor(5.0)
    with pytest.raises(RuntimeError, match="classmethod is not supported, please make it a plain method"):
        with A():
            x + x


def test_restacking_with_ancestor(T):
    class A(T.overrides.TorchFunctionMode):
        pass

    with A():
        with A() as x:
            pass
    with x:
        assert T.overrides._get_current_function_mode() is x
    assert T.overrides._get_current_function_mode() is None


def test_get_cur_mode(T):
    class A(T.overrides.TorchFunctionMode):
        pass

    assert T.overrides._get_current_function_mode() is None
    with A() as mode1:
        assert T.overrides._get_current_function_mode() is mode1
    with mode1:
        with A() as mode2:
            assert T.overrides._get_current_function_mode() is mode2
        assert T.overrides._get_current_function_mode() is mode1


def test_get_mode_stack(T):
    class A(T.overrides.TorchFunctionMode):
        pass

    assert T.overrides._get_current_function_mode_stack() == []
    with A() as mode1:
        assert T.overrides._get_current_function_mode_stack() == [mode1]
    with mode1:
        with A() as mode2:
            assert T.overrides._get_current_function_mode_stack() == [mode1, mode2]
            assert T._C._len_torch_function_stack() == 2
    assert T._C._len_torch_function_stack() == 0


@xfail_ours("torch.utils._mode_utils (all_same_mode) is not built: autograd.utils has no _mode_utils")
def test_all_same_mode(T):
    all_same_mode = importlib.import_module(f"{T.__name__}.utils._mode_utils").all_same_mode

    class A(T.overrides.TorchFunctionMode):
        pass

    x, y = A(), A()
    assert all_same_mode([x, x, x])
    assert not all_same_mode([x, None])
    assert not all_same_mode([x, y])


def test_nested_modes_with_python_has_torch_function(T):
    called = []
    bar = _bar(T)

    class A(T.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            called.append("A")
            return func(*args, **(kwargs or {}))

    class B(T.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            called.append("B")
            return func(*args, **(kwargs or {}))

    x = T.randn(3, 4)
    with A():
        with B():
            y = bar(x)
    assert y is x
    assert called == ["B", "A"]


def test_reentrant_mode_idiom(T):
    log = []

    class A(T.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            log.append(func)
            if func is T.sub:  # (the function as the program reads it: T.sub is what it was given)
                with self:  # (calls made here come back to this mode)
                    input, other = args
                    assert not kwargs
                    return T.add(input, other, alpha=-1)
            return func(*args, **kwargs)

    x, y = T.tensor([5.0]), T.tensor([2.0])
    with A():
        result = T.sub(x, y)
    assert log == [T.sub, T.add]  # (add came back to the mode)
    same(result, [3.0])


def test_nn_parse_to(T):
    called = []
    with _recording_mode(T, called)("parse_to"):
        T._C._nn._parse_to("cpu")
    assert called == ["parse_to"]
    device, dtype, non_blocking, memory_format = T._C._nn._parse_to(T.ones(1, dtype=T.int32), True)
    assert (str(device), dtype, non_blocking, memory_format) == ("cpu", T.int32, True, None)
    assert T._C._nn._parse_to(dtype=T.float16, device="cpu") == (T.device("cpu"), T.float16, False, None)
    assert T._C._nn._parse_to(T.float64) == (None, T.float64, False, None)


def test_getitem_call(T):
    called = []
    a, b = T.zeros(5), T.tensor(0)
    with _recording_mode(T, called)("getitem"):
        a[b]
    assert called == ["getitem"]


def test_distributions_bernoulli(T):
    called = []
    with _recording_mode(T, called)("bernoulli"):
        T.distributions.Bernoulli(0.3)  # (turning the number into a tensor is a call the mode sees)
    assert called


def test_mode_notimplemented_loop(T):
    """The default __torch_function__ of a subclass runs its function with subclasses switched off: the mode,
    asked again from inside it, is given no subclass among the types and runs the function."""
    called = 0

    class A(T.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            nonlocal called
            called += 1
            if any(t is not T.Tensor for t in types):
                return NotImplemented
            return func(*args, **(kwargs or {}))

    class B(T.Tensor):
        pass

    b = T.tensor([1.0, -2.0]).as_subclass(B)
    with A():
        r = T.neg(b)
    assert type(r) is B and called == 2
    same(r, [-1.0, 2.0])

    called = 0
    with A():
        r = _bar(T)(b)
    assert type(r) is B and called == 2


def test_the_calls_a_mode_makes_reach_the_subclasses(T):
    seen = []

    class Labelled(T.Tensor):
        calls = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.calls.append(func.__name__)
            return super().__torch_function__(func, types, args, kwargs)

    class Recording(T.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append((func.__name__, types))
            return func(*args, **(kwargs or {}))

    x = T.tensor([1.0, -2.0]).as_subclass(Labelled)
    with Recording():
        r = T.neg(x)
    assert seen == [("neg", (Labelled,))] and Labelled.calls == ["neg"]  # (the mode first, then the subclass)
    assert type(r) is Labelled
    same(r, [-1.0, 2.0])


def test_disable_subclass_not_mode(T):
    called = []

    class B(T.Tensor):
        pass

    x = T.tensor([1.0, 2.0, 4.0]).as_subclass(B)
    with _recording_mode(T, called)("A"):
        with T._C.DisableTorchFunctionSubclass():
            result = T.sum(x)
            assert not isinstance(result, B)
            assert not T._C._is_torch_function_enabled() and T._C._is_torch_function_mode_enabled()
    assert called == ["A"]
    same(result, 7.0)


def test_disable_subclass_mode(T):
    called = []

    class B(T.Tensor):
        pass

    x = T.tensor([1.0, 2.0, 4.0]).as_subclass(B)
    with _recording_mode(T, called)("A"):
        with T._C.DisableTorchFunction():  # (modes switched off too)
            assert not isinstance(T.sum(x), B)
            assert not T._C._is_torch_function_mode_enabled() and T._C._is_torch_function_all_disabled()
            assert T._C._len_torch_function_stack() == 1  # (still entered: only not asked)
    assert called == []


def test_disable_enable_subclass(T):
    class A(T.Tensor):
        pass

    x = T.tensor([1.0, 2.0]).as_subclass(A)
    with T._C.DisableTorchFunctionSubclass():
        g = T._C._EnableTorchFunction()
        try:
            assert isinstance(T.sum(x), A)
        finally:
            del g
        assert not isinstance(T.sum(x), A)  # (the guard gone: switched off again)


def test_subclass_hash(T):
    tree_map = _pytree(T).tree_map

    class DiagTensor(T.Tensor):
        def __init__(self, diag):
            self._diag = diag

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            def full_matrix(t):
                return T.diag_embed(t._diag) if isinstance(t, DiagTensor) else t

            return func(*tree_map(full_matrix, args), **tree_map(full_matrix, kwargs or {}))

    d = T.tensor([2.0, 3.0])
    a = DiagTensor(d)
    same(a + 1, [[3.0, 1.0], [1.0, 4.0]])
    # hashing goes by identity and through no __torch_function__ (the one above would hash a temporary matrix)
    s = {a, DiagTensor(d)}
    assert len(s) == 2 and a in s


@xfail_ours("autograd.device is a plain class: constructing a device does not reach a mode (PyTorch's "
            "torch.device(...) does, which lets a mode map device numbers to another device type)")
def test_custom_device_type(T):
    class CustomDeviceContext(T.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func == T.device:
                if args and isinstance(args[0], int):
                    args = ("xla", args[0])
                elif isinstance(kwargs.get("device"), int):
                    kwargs["device"] = f"xla:{kwargs.get('device')}"
            return func(*args, **kwargs)

    with CustomDeviceContext():
        d_args = T.device(0)
        assert d_args.type == "xla" and d_args.index == 0
        d_kwargs = T.device(device=0)
        assert d_kwargs.type == "xla" and d_kwargs.index == 0


# -- the mode stack and the switches, beyond TestTorchFunctionMode --------------------------------------------


def test_the_stack_is_pushed_and_popped_by_the_private_functions(T):
    class A(T.overrides.TorchFunctionMode):
        pass

    mode = A()
    T._C._push_on_torch_function_stack(mode)
    try:
        assert T._C._len_torch_function_stack() == 1 and T._C._get_function_stack_at(0) is mode
        assert T.overrides._get_current_function_mode() is mode
    finally:
        assert T._C._pop_torch_function_stack() is mode
    raises(RuntimeError, "pop from empty mode stack", T._C._pop_torch_function_stack)
    with mode:
        with T.overrides._pop_mode_temporarily() as popped:
            assert popped is mode and T._C._len_torch_function_stack() == 0
        assert T._C._len_torch_function_stack() == 1


def test_has_torch_function_is_true_under_a_mode_for_any_argument(T):
    ov = T.overrides
    x = T.ones(2)
    assert not ov.has_torch_function((x, 1))
    with ov.BaseTorchFunctionMode():
        assert ov.has_torch_function((x, 1)) and ov.has_torch_function((1,)) and ov.has_torch_function_unary(x)
        assert not ov.has_torch_function(())  # (no argument at all: nothing to dispatch on, as PyTorch's)
        with T._C.DisableTorchFunction():
            assert not ov.has_torch_function((x,))


def test_a_mode_answering_NotImplemented_alone_is_a_type_error_naming_it(T):
    x = T.ones(1)
    with _constant_mode(T, NotImplemented)():
        raises(TypeError, r"all __torch_function__ handlers returned NotImplemented(.|\n)*mode object", T.add, x, 1)
        raises(TypeError, r"Multiple dispatch failed for '.*ones'", T.ones, 1)


def test_the_base_mode_runs_each_call_and_push_warns(T):
    class A(T.overrides.BaseTorchFunctionMode):
        pass

    with A():
        same(T.arange(3) * 2, [0, 2, 4])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        mode = A.push()
    assert isinstance(mode, A) and "no longer necessary" in str(caught[0].message)
    assert T.overrides._get_current_function_mode() is None  # (push only makes the mode)


def test_a_mode_is_not_asked_about_the_backward_passs_ops(T):
    seen = []

    class Named(T.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func.__name__)
            return func(*args, **(kwargs or {}))

    x = T.tensor([1.0, -2.0], requires_grad=True)
    with Named():
        loss = (x * x).sum()
        loss.backward()
    assert seen == ["mul", "sum", "backward"]
    same(x.grad, [2.0, -4.0])


def test_a_mode_is_per_thread(T):
    seen = []
    results = []
    with _recording_mode(T, seen)("main"):
        worker = threading.Thread(target=lambda: results.append(T.ones(2) + 1))
        worker.start()
        worker.join()
        assert T._C._len_torch_function_stack() == 1
    assert seen == []  # (the other thread's calls were its own)
    same(results[0], [2.0, 2.0])


@xfail_ours("a property other than the tensor-valued ones (T, mT, H, mH, real, imag, data) is read without "
            "reaching a mode: PyTorch gives the mode x.shape's, x.dtype's and x.grad's getters (__get__)")
def test_reading_a_property_reaches_the_mode_as_its_getter(T):
    seen = []

    class A(T.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(func.__name__)
            return func(*args, **(kwargs or {}))

    x = T.ones(2, 3)
    with A():
        read = (x.shape, x.dtype, x.mT)
    assert read[0] == (2, 3) and read[2].shape == (3, 2)
    assert seen == ["__get__", "__get__", "__get__"]


@xfail_ours("a function the program took from the library before the first mode was entered (from autograd "
            "import zeros, relu = F.relu) is the plain one: the functions become dispatching wrappers only when the "
            "first mode or subclass installs them (overrides.py), so calls through it never reach a mode")
def test_a_function_taken_before_the_first_mode_reaches_it(T):
    if T.__name__ == "autograd":
        T.overrides.uninstall()  # (as a program starts: no mode entered nor subclass defined yet)
    zeros, relu = T.zeros, _nn(T).functional.relu
    seen = []
    with _recording_mode(T, seen)("taken early"):
        relu(zeros(2))
    assert seen == ["taken early", "taken early"]


# -- TestSubclass (test_subclass.py): a __torch_function__ subclass in modules, copies and files ---------------


def _non_wrapper_tensor(T):
    """common_subclass's NonWrapperTensor: keeps the name of the last function that made it, in an attribute
    that its default __torch_function__ sets on each result (a deepcopy copies it)."""

    class NonWrapperTensor(T.Tensor):
        def __new__(cls, data):
            t = T.Tensor._make_subclass(cls, data)
            t.extra_state = {"last_func_called": None}
            return t

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            result = super().__torch_function__(func, types, args, kwargs)
            if isinstance(result, cls):
                if func is T.Tensor.__deepcopy__:
                    result.extra_state = copy.deepcopy(args[0].extra_state)
                else:
                    result.extra_state = {"last_func_called": func.__name__}
            return result

        def new_empty(self, shape):
            return type(self)(T.empty(shape))

    # pickled by its name in this module (one per library, made again by each test: a class made before the test
    # suite's uninstall would no longer take part in calls)
    NonWrapperTensor.__qualname__ = NonWrapperTensor.__name__ = f"NonWrapperTensor_{T.__name__}"
    globals()[NonWrapperTensor.__qualname__] = NonWrapperTensor
    return NonWrapperTensor


_TENSOR_CLASSES = ["base_tensor", "non_wrapper_tensor"]



def _tensor_class(T, name):
    return T.Tensor if name == "base_tensor" else _non_wrapper_tensor(T)


def _create(T, tensor_cls, rng):
    data = T.tensor(rng.standard_normal(3).astype(np.float32))
    return data if tensor_cls is T.Tensor else tensor_cls(data)


def _subject(T, cls_name, as_param, rng):
    """(the class under test, an instance of it, made a Parameter with ``as_param``), as TestSubclass makes them."""
    tensor_cls = _tensor_class(T, cls_name)
    x = _create(T, tensor_cls, rng)
    return tensor_cls, _nn(T).Parameter(x) if as_param else x


@pytest.mark.parametrize("tensor_requires_grad", [False, True])
@pytest.mark.parametrize("cls_name", _TENSOR_CLASSES)
def test_param_invariants(T, cls_name, tensor_requires_grad, rng):
    tensor_cls = _tensor_class(T, cls_name)
    x = _create(T, tensor_cls, rng).requires_grad_(tensor_requires_grad)
    param = _nn(T).Parameter(x, requires_grad=not tensor_requires_grad)
    assert isinstance(param, _nn(T).Parameter)
    assert param.requires_grad is (not tensor_requires_grad)  # (the constructor's requires_grad wins)
    assert not isinstance(x, _nn(T).Parameter) and x.requires_grad is tensor_requires_grad  # (x left as it was)
    same(param.detach(), x.detach().numpy())


@pytest.mark.parametrize("as_param", [False, True])
@pytest.mark.parametrize("cls_name", _TENSOR_CLASSES)
def test_deepcopy(T, cls_name, as_param, rng):
    tensor_cls, x = _subject(T, cls_name, as_param, rng)
    x_copy = copy.deepcopy(x)
    same(x_copy.detach(), x.detach().numpy())
    assert x.__class__ is x_copy.__class__ and x_copy is not x and isinstance(x_copy, tensor_cls)
    if as_param:
        assert isinstance(x_copy, _nn(T).Parameter)  # (both the class and being a parameter kept)


@pytest.mark.parametrize("as_param", [False, True])
@pytest.mark.parametrize("cls_name", _TENSOR_CLASSES)
def test_serialization(T, cls_name, as_param, rng):
    tensor_cls, x = _subject(T, cls_name, as_param, rng)
    buffer = io.BytesIO()
    T.save(x, buffer)
    buffer.seek(0)
    x_loaded = T.load(buffer, weights_only=False)
    same(x_loaded.detach(), x.detach().numpy())
    assert x_loaded is not x and isinstance(x_loaded, tensor_cls)
    if as_param:
        assert isinstance(x_loaded, _nn(T).Parameter)


@pytest.mark.parametrize("as_param", [False, True])
@pytest.mark.parametrize("cls_name", _TENSOR_CLASSES)
def test_repr(T, cls_name, as_param, rng):
    tensor_cls, x = _subject(T, cls_name, as_param, rng)
    text = repr(x)
    if tensor_cls is not T.Tensor:
        assert text.count(f"{tensor_cls.__name__}(") == 1  # (NonWrapperTensor_torch(...))
    assert text.count("Parameter") == (1 if as_param else 0)


@pytest.mark.parametrize("as_param", [False, True])
@pytest.mark.parametrize("cls_name", _TENSOR_CLASSES)
def test_type_propagation(T, cls_name, as_param, rng):
    tensor_cls, x = _subject(T, cls_name, as_param, rng)
    other = _create(T, T.Tensor, rng)
    output = x + other
    assert isinstance(output, tensor_cls)  # (closed under ops; being a parameter is not propagated)
    assert not isinstance(output, _nn(T).Parameter)
    close(output.detach(), x.detach().numpy() + other.numpy())
    if tensor_cls is not T.Tensor:
        assert output.extra_state == {"last_func_called": "add"}


@pytest.mark.parametrize("cls_name", _TENSOR_CLASSES)
def test_module_optimization(T, cls_name, rng):
    tensor_cls = _tensor_class(T, cls_name)
    nn = _nn(T)

    def create():
        return _create(T, tensor_cls, rng)

    class MyModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.p1 = nn.Parameter(create())
            self.p_list = nn.ParameterList([create() for _ in range(3)])
            self.p_list.append(create())
            self.p_dict = nn.ParameterDict({"foo": create(), "bar": create()})
            self.p_dict["baz"] = create()

        def forward(self, x):
            out = self.p1 + x
            for p in self.p_list:
                out = p + out
            for v in self.p_dict.values():
                out = v + out
            return out

    m = MyModule()
    assert len(m.state_dict()) == 8
    before = {name: p.detach().numpy().copy() for name, p in m.named_parameters()}
    optimizer = _optim(T).SGD(m.parameters(), lr=0.1)
    m(create()).sum().backward(T.tensor(1.0))
    optimizer.step()
    for name, p in m.named_parameters():  # (each parameter's gradient is 1 everywhere: a step of -lr)
        close(p.detach(), before[name] - 0.1)
        assert isinstance(p, tensor_cls) and isinstance(p, nn.Parameter)


@pytest.mark.parametrize("leave_parametrized", [False, True])
@pytest.mark.parametrize("cls_name", _TENSOR_CLASSES)
def test_parametrization(T, cls_name, leave_parametrized, rng):
    tensor_cls = _tensor_class(T, cls_name)
    nn = _nn(T)
    parametrize = importlib.import_module(f"{nn.__name__}.utils.parametrize")

    class MyModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(_create(T, tensor_cls, rng))

        def forward(self, x):
            return self.weight + x

    class MyParametrization(nn.Module):
        def forward(self, X):
            return -X

    m = MyModule()
    original = m.weight.detach().numpy().copy()
    assert len(m.state_dict()) == 1
    parametrize.register_parametrization(m, "weight", MyParametrization())
    assert isinstance(m.weight, tensor_cls)
    close(m.weight.detach(), -original)
    x = _create(T, T.Tensor, rng)
    output = m(x)
    assert isinstance(output, tensor_cls)
    close(output.detach(), x.numpy() - original)
    parametrize.remove_parametrizations(m, "weight", leave_parametrized=leave_parametrized)
    close(m.weight.detach(), -original if leave_parametrized else original)


# -- programs with a mode ---------------------------------------------------------------------------------------


def test_a_logging_mode_records_a_training_steps_public_calls(T):
    nn = _nn(T)

    class PublicCallLog(T.overrides.TorchFunctionMode):
        """Logs the name of each public function or method called (not the library's private helpers)."""

        def __init__(self):
            super().__init__()
            self.names = []

        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = func.__name__
            if not name.startswith("_"):
                self.names.append(name)
            return func(*args, **(kwargs or {}))

    T.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 1))
    optimizer = _optim(T).SGD(model.parameters(), lr=0.1)
    x = T.tensor(np.linspace(-1.0, 1.0, 15, dtype=np.float32).reshape(5, 3))
    y = T.tensor(np.arange(5, dtype=np.float32).reshape(5, 1))
    w1, b1, w2, b2 = (p.detach().numpy().copy() for p in model.parameters())
    with PublicCallLog() as log:
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert log.names == ["linear", "relu", "linear", "mse_loss", "backward", "add_", "add_", "add_", "add_"]
    # the step under the mode is the plain one: the last layer moved by -lr times its gradient, as NumPy has it
    hidden = np.maximum(x.numpy() @ w1.T + b1, 0)
    dout = 2 / 5 * (hidden @ w2.T + b2 - y.numpy())
    close(model[2].weight.grad, dout.T @ hidden, rtol=1e-4, atol=1e-6)
    close(model[2].bias.grad, dout.sum(0), rtol=1e-4, atol=1e-6)
    close(model[2].weight.detach(), w2 - 0.1 * dout.T @ hidden, rtol=1e-4, atol=1e-6)
    close(loss.detach(), np.mean((hidden @ w2.T + b2 - y.numpy()) ** 2), rtol=1e-5)


def test_a_mode_giving_factories_float64(T):
    class Float64Factories(T.overrides.TorchFunctionMode):
        """Factories that are given no dtype make float64 tensors (as set_default_dtype would, for one block)."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = dict(kwargs or {})
            if func in {T.zeros, T.ones, T.randn, T.full, T.empty, T.arange} and "dtype" not in kwargs:
                kwargs["dtype"] = T.float64
            return func(*args, **kwargs)

    with Float64Factories():
        z, o, r, f = T.zeros(2), T.ones(2, 3), T.randn(4), T.full((2,), 0.5)
        a = T.arange(0.0, 1.0, 0.25)
        kept = T.zeros(2, dtype=T.int32)
        s = z + o[0, :2]  # (ops keep their own promotion)
    for made in (z, o, r, f, a, s):
        assert made.dtype == T.float64
    assert kept.dtype == T.int32
    same(f, [0.5, 0.5], "float64")
    same(a, [0.0, 0.25, 0.5, 0.75], "float64")
    assert T.zeros(2).dtype == T.float32  # (outside: the library's default)


def test_a_mode_counting_a_modules_ops(T):
    nn = _nn(T)

    class OpCounter(T.overrides.TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.counts = {}

        def __torch_function__(self, func, types, args=(), kwargs=None):
            self.counts[func.__name__] = self.counts.get(func.__name__, 0) + 1
            return func(*args, **(kwargs or {}))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(4, 8), nn.Linear(8, 4)

        def forward(self, x):
            h = T.tanh(self.fc1(x))
            return x + self.fc2(h) * 0.5

    T.manual_seed(0)
    block = Block()
    x = T.tensor(np.linspace(-1.0, 1.0, 8, dtype=np.float32).reshape(2, 4))
    with T.no_grad():
        expected = block(x)
        with OpCounter() as counter:
            result = block(x)
    assert counter.counts == {"linear": 2, "tanh": 1, "mul": 1, "add": 1}
    same(result, expected.numpy())


def test_nested_modes_each_see_the_calls_the_inner_one_lets_through(T):
    order = []

    class Scaling(T.overrides.TorchFunctionMode):
        """Doubles what add returns (asked first: the inner mode)."""

        def __torch_function__(self, func, types, args=(), kwargs=None):
            order.append(("scaling", func.__name__))
            result = func(*args, **(kwargs or {}))
            return result * 2 if func == T.add else result

    class Recording(T.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            order.append(("recording", func.__name__))
            return func(*args, **(kwargs or {}))

    a, b = T.tensor([1.0, 2.0]), T.tensor([3.0, 4.0])
    with Recording():
        with Scaling():
            result = T.add(a, b)
        after = T.add(a, b)
    same(result, [8.0, 12.0])
    same(after, [4.0, 6.0])
    # the inner mode's own calls (func, then * 2) go to the outer mode; after the inner one left, only the outer
    assert order == [("scaling", "add"), ("recording", "add"), ("recording", "mul"), ("recording", "add")]


def test_a_module_holding_a_function_pickles_and_copies_after_a_mode_was_entered(T):
    """Entering a mode makes chainrule's functions dispatching wrappers for the rest of the process: a layer holding
    one (TransformerEncoderLayer's activation F.relu) still pickles, by the function's name."""
    nn = _nn(T)
    with _recording_mode(T, [])("any"):
        pass
    T.manual_seed(0)
    layer = nn.TransformerEncoderLayer(d_model=4, nhead=2, dim_feedforward=8, dropout=0.0).eval()
    x = T.tensor(np.linspace(-1.0, 1.0, 12, dtype=np.float32).reshape(3, 1, 4))
    with T.no_grad():
        expected = layer(x).numpy()
        for copied in (pickle.loads(pickle.dumps(layer)), copy.deepcopy(layer)):
            assert copied.activation == nn.functional.relu
            close(copied(x), expected, rtol=1e-5, atol=1e-6)
    assert pickle.loads(pickle.dumps(nn.functional.relu)) == nn.functional.relu
    assert pickle.loads(pickle.dumps(T.add)) is T.add


def test_a_mode_finding_the_first_op_that_made_a_nan(T):
    """A debugging mode that checks each op's tensor result and names the first one holding a NaN."""
    nn = _nn(T)

    class FirstNaN(T.overrides.TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.culprit = None

        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if self.culprit is None and isinstance(result, T.Tensor) and result.is_floating_point() and bool(
                    T.isnan(result).any()):
                self.culprit = func.__name__
            return result

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            return T.log(self.fc(x)).sum()

    net = Net()
    with T.no_grad():
        net.fc.weight.copy_(T.tensor([[1.0, 0.0], [0.0, -1.0]]))
        net.fc.bias.zero_()
    with FirstNaN() as checker:
        loss = net(T.tensor([[1.0, 2.0]]))
    assert checker.culprit == "log"  # (linear's output [1, -2] is finite: log(-2) is the first NaN)
    assert bool(T.isnan(loss))


def test_saving_a_module_that_holds_a_dispatching_function():
    # once a mode (or a subclass) has installed the wrappers, nn.functional.relu is a Dispatching wrapper: a module
    # holding it (TransformerEncoderLayer's activation) saves it as the function it stands for (it recursed without
    # end: the wrapper's `public` is itself)
    import io

    import autograd
    import nn

    class Quiet(autograd.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            return func(*args, **(kwargs or {}))

    with Quiet():
        pass
    layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0)
    assert isinstance(layer.activation, autograd.overrides.Dispatching)
    buffer = io.BytesIO()
    autograd.save({"activation": layer.activation, "weight": layer.linear1.weight.detach()}, buffer)
    buffer.seek(0)
    with autograd.serialization.safe_globals([nn.functional.relu.__wrapped__]):  # (load runs no named function
        loaded = autograd.load(buffer)  # unless the program allows it)
    assert loaded["activation"] == nn.functional.relu
    assert autograd.equal(loaded["weight"], layer.linear1.weight.detach())
