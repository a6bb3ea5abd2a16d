"""The ``__torch_function__`` protocol (autograd/overrides.py, PyTorch's torch.overrides): a subclass of Tensor
keeps its class through every op by default, a class may override the protocol (log, unwrap, answer for a
function), nn.Parameter opts out, and a backward pass asks no subclass. Each test runs on chainrule and on
PyTorch (the ``T`` fixture) against the same expectations."""

import importlib

import numpy as np
import pytest


def _F(T):
    return importlib.import_module("torch.nn.functional" if T.__name__ == "torch" else "nn.functional")


def _nn(T):
    return importlib.import_module("torch.nn" if T.__name__ == "torch" else "nn")


def _names(calls):
    return [getattr(func, "__name__", None) for func in calls]


def test_a_subclass_keeps_its_class_through_ops(T):
    class Mine(T.Tensor):
        pass

    a = T.tensor([1.0, 2.0]).as_subclass(Mine)
    b = T.tensor([3.0, 5.0])
    results = {
        "a + 1": a + 1, "b + a": b + a, "2 * a": 2 * a, "add": T.add(b, a), "sum": a.sum(), "a[0]": a[0],
        "detach": a.detach(), "clone": a.clone(), "to": a.to(T.float64), "cat": T.cat([b, a]),
        "stack": T.stack([a, b]), "where": T.where(a > 1, a, b), "a > 1": a > 1, "relu": _F(T).relu(a),
        "linear": _nn(T).Linear(2, 3)(a), "values": a.max(0).values, "T": a.reshape(1, 2).T, "data": a.data,
        "zeros_like": T.zeros_like(a), "exp": a.exp(),
    }
    for label, result in results.items():
        assert type(result) is Mine, label
    assert all(type(part) is Mine for part in a.unbind(0))
    np.testing.assert_allclose(T.where(a > 1, a, b).numpy(), [3.0, 2.0])
    np.testing.assert_allclose((b + a).numpy(), [4.0, 7.0])
    assert type(a.sum().item()) is float and type(a.numpy()) is np.ndarray and type(a.shape) is T.Size
    assert type(a.max(0)).__name__ == "max"  # (the named tuple stays one, its tensors converted)


def test_in_place_ops_and_writes_keep_the_tensor(T):
    class Mine(T.Tensor):
        pass

    a = T.tensor([1.0, 2.0]).as_subclass(Mine)
    a.add_(1)
    a[0] = 5.0
    assert type(a) is Mine and a.tolist() == [5.0, 3.0]


def test_a_subclass_of_a_subclass_is_asked_first(T):
    class Base(T.Tensor):
        pass

    class Derived(Base):
        pass

    base, derived = T.tensor([1.0]).as_subclass(Base), T.tensor([2.0]).as_subclass(Derived)
    assert type(base + derived) is Derived and type(derived + base) is Derived


def test_a_logging_subclass_sees_the_calls_and_not_the_backward_passs_ops(T):
    class Logging(T.Tensor):
        calls = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.calls.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    x = T.tensor([1.0, -2.0], requires_grad=True)
    logged = x.as_subclass(Logging)
    Logging.calls.clear()
    loss = (logged * logged).sum()
    loss.backward()
    assert _names(Logging.calls) == ["mul", "sum", "backward"]
    assert Logging.calls[0] == T.Tensor.mul  # (x * x is the method mul, as PyTorch gives it)
    assert type(loss) is Logging and type(x.grad) is T.Tensor
    np.testing.assert_allclose(x.grad.numpy(), [2.0, -4.0])


def test_a_subclass_may_answer_for_a_function(T):
    class Lazy(T.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            if func == T.mean:  # (its own answer: the number of elements, as a plain tensor)
                return T.tensor(float(args[0].numel()))
            return super().__torch_function__(func, types, args, kwargs or {})

    a = T.tensor([[1.0, 2.0], [3.0, 5.0]]).as_subclass(Lazy)
    assert T.mean(a).item() == 4.0 and type(T.mean(a)) is T.Tensor
    assert T.sum(a).item() == 11.0 and type(T.sum(a)) is Lazy


def test_a_table_of_functions_written_in_the_class_body_finds_them(T):
    """torchvision's tv_tensors: every op unwraps to a plain tensor, but those in a table the class body writes
    (before the class exists, so before any function dispatches) keep the class."""

    class Image(T.Tensor):
        KEEP = {T.Tensor.clone, T.Tensor.to, T.Tensor.detach, T.Tensor.requires_grad_}

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            with T._C.DisableTorchFunctionSubclass():
                output = func(*args, **(kwargs or {}))
                if func in cls.KEEP and isinstance(output, T.Tensor) and not isinstance(output, cls):
                    output = output.as_subclass(cls)
            return output

    image = T.tensor([[0.5, 1.0]]).as_subclass(Image)
    assert type(image.clone()) is Image and type(image.detach()) is Image and type(image.to(T.float64)) is Image
    assert type(image * 2) is T.Tensor and type(image.flip(1)) is T.Tensor
    np.testing.assert_allclose(image.flip(1).numpy(), [[1.0, 0.5]])


def test_parameters_and_a_switched_off_class_give_plain_tensors(T):
    class Plain(T.Tensor):
        __torch_function__ = T._C._disabled_torch_function_impl

    class Mine(T.Tensor):
        pass

    p = _nn(T).Parameter(T.ones(2))
    mine = T.tensor([1.0, 2.0]).as_subclass(Mine)
    assert type(p * 2) is T.Tensor and type(p + mine) is Mine
    plain = T.tensor([1.0]).as_subclass(Plain)
    assert type(plain * 2) is T.Tensor
    with T._C.DisableTorchFunctionSubclass():
        assert type(mine + 1) is T.Tensor


def test_a_function_of_ones_own_takes_part_through_handle_torch_function(T):
    overrides = importlib.import_module(f"{T.__name__}.overrides")

    def doubled(x):
        if overrides.has_torch_function_unary(x):
            return overrides.handle_torch_function(doubled, (x,), x)
        return x * 2

    class Mine(T.Tensor):
        seen = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.seen.append(func)
            return super().__torch_function__(func, types, args, kwargs or {})

    plain = T.tensor([1.0, 2.0])
    assert not overrides.has_torch_function((plain, 1.0)) and type(doubled(plain)) is T.Tensor
    mine = plain.as_subclass(Mine)
    assert overrides.has_torch_function_variadic(plain, mine) and overrides.is_tensor_like(mine)
    result = doubled(mine)
    assert type(result) is Mine and result.tolist() == [2.0, 4.0] and Mine.seen[0] is doubled


def test_no_class_answering_is_a_type_error(T):
    class Refusing(T.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            return NotImplemented

    refusing = T.tensor([1.0]).as_subclass(Refusing)
    with pytest.raises(TypeError, match="all __torch_function__ handlers returned NotImplemented"):
        T.add(refusing, 1)


def test_the_functions_are_plain_until_a_class_takes_part_and_again_after_uninstall():
    import autograd
    import nn
    from autograd import overrides

    overrides.uninstall()
    plain = (autograd.cat, autograd.Tensor.__dict__["sum"], nn.functional.relu, autograd.Tensor.__dict__["T"])

    class Mine(autograd.Tensor):
        pass

    assert type(autograd.cat) is overrides.Dispatching and autograd.cat == plain[0]
    assert type(autograd.Tensor.__dict__["sum"]) is overrides.Dispatching
    assert type(autograd.gradcheck) is not overrides.Dispatching  # (takes functions: never dispatches)
    overrides.uninstall()
    after = (autograd.cat, autograd.Tensor.__dict__["sum"], nn.functional.relu, autograd.Tensor.__dict__["T"])
    assert all(a is b for a, b in zip(plain, after))
    assert type(autograd.ones(2).as_subclass(Mine) + 1) is autograd.Tensor  # (uninstalled: no class is asked)


def test_layers_that_call_their_own_functions_ask_as_the_functional_form(T):
    class Mine(T.Tensor):
        pass

    calls = []

    class Logging(T.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            calls.append(func)
            return super().__torch_function__(func, types, args, kwargs)

    nn, F = _nn(T), _F(T)
    x = T.tensor([[0.5, -1.0, 2.0, 3.0]])
    results = [nn.Embedding(5, 2)(T.tensor([[1, 2]]).as_subclass(Mine)), nn.ZeroPad1d(1)(x.as_subclass(Mine)),
               nn.MSELoss()(x.as_subclass(Mine), T.zeros(1, 4)), nn.LPPool1d(2, 2)(x.as_subclass(Mine))]
    assert [type(result) for result in results] == [Mine] * 4
    np.testing.assert_allclose(results[2].item(), (0.25 + 1 + 4 + 9) / 4)
    nn.MSELoss()(x.as_subclass(Logging), T.zeros(1, 4))
    assert calls == [F.mse_loss]


def test_a_class_made_by_its_own_new_keeps_what_new_made(T):
    class Boxes(T.Tensor):
        def __new__(cls, data, *, format):
            boxes = data.as_subclass(cls)
            boxes.format = format
            return boxes

    class Flipped(Boxes):  # (inherits Boxes' __new__: made by it too)
        pass

    x = T.tensor([1.0, 2.0], requires_grad=True)
    boxes = Boxes(x * 3, format="XYXY")  # (keywords Tensor's constructor does not take)
    flipped = Flipped(x.flip(0), format="YX")
    assert boxes.format == "XYXY" and boxes.requires_grad and boxes.grad_fn is not None
    (boxes.sum() + (flipped * T.tensor([1.0, 10.0])).sum()).backward()
    np.testing.assert_allclose(x.grad.numpy(), [13.0, 4.0])
    assert type(flipped) is Flipped and flipped.format == "YX"

    class Bare(T.Tensor):
        def __new__(cls, data):
            return super().__new__(cls)  # (no data given: an empty tensor)

    bare = Bare([1.0, 2.0])
    assert type(bare) is Bare and tuple(bare.shape) == (0,) and bare.dtype == T.float32


def test_operators_give_the_functions_pytorch_gives(T):
    calls = []

    class Logging(T.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            calls.append(func.__name__)
            return super().__torch_function__(func, types, args, kwargs)

    a = T.tensor([5.0, 7.0]).as_subclass(Logging)
    n = T.tensor([5, 6]).as_subclass(Logging)
    results = [a % 3, +a, a == 5, 3 & n, 35 / a]
    a += 1
    a -= 1
    a *= 2
    a /= 2
    a **= 1
    n //= 2
    n %= 2
    assert calls == ["remainder", "positive", "__eq__", "bitwise_and", "__rdiv__", "add_", "sub_", "mul_", "div_",
                     "pow_", "floor_divide_", "remainder_"]
    assert [r.tolist() for r in results] == [[2.0, 1.0], [5.0, 7.0], [True, False], [1, 2], [7.0, 5.0]]
    assert type(a) is Logging and a.tolist() == [5.0, 7.0] and n.tolist() == [0, 1]


def test_relevant_args_are_taken_as_they_are_and_a_parameter_subclass_is_made_by_new(T):
    class Mine(T.Tensor):
        pass

    a = T.ones(2).as_subclass(Mine)
    assert T.overrides.has_torch_function((a,)) and not T.overrides.has_torch_function(([a],))
    assert type(T.cat([T.ones(1), a])) is Mine  # (a function still reads its list arguments)

    class Tagged(_nn(T).Parameter):
        def __new__(cls, data=None, requires_grad=True, tag="decay"):
            parameter = super().__new__(cls, data, requires_grad)
            parameter.tag = tag
            return parameter

    p = Tagged(T.tensor([1.0, 2.0]), tag="no_decay")
    assert type(p) is Tagged and p.tag == "no_decay" and p.requires_grad and p.tolist() == [1.0, 2.0]
    assert isinstance(p, _nn(T).Parameter) and type(p * 2) is T.Tensor


def test_autograd_grad_and_backward_ask_the_subclass_among_their_tensors(T):
    calls = []

    class Logging(T.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            calls.append(func.__name__)
            return super().__torch_function__(func, types, args, kwargs)

    x = T.tensor([1.0, 2.0], requires_grad=True)
    y = (x.as_subclass(Logging) ** 2).sum()
    calls.clear()
    (gx,) = T.autograd.grad(y, x, retain_graph=True)
    T.autograd.backward([y])
    assert calls == ["grad", "backward"] and type(gx) is Logging
    np.testing.assert_allclose(gx.numpy(), [2.0, 4.0])
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])


def test_the_overrides_helpers(T):
    overrides = T.overrides

    class Mine(T.Tensor):
        pass

    @overrides.wrap_torch_function(lambda x: (x,))
    def double(x):
        return x * 2

    x = T.ones(2)
    a = x.as_subclass(Mine)
    assert type(double(a)) is Mine and type(double(x)) is T.Tensor and double.__name__ == "double"
    assert overrides.is_tensor_method_or_property(T.Tensor.sum) and not overrides.is_tensor_method_or_property(T.sum)
    assert overrides.is_tensor_method_or_property(T.Tensor.T.__get__)
    assert T.zeros in overrides.get_ignored_functions() and T.exp not in overrides.get_ignored_functions()
    assert T.Tensor.grad.__get__ in overrides.get_default_nowrap_functions()
    assert [type(arg) for arg in overrides._get_overloaded_args([x, a, x])] == [Mine, T.Tensor]
    assert T._C._has_torch_function((x, a)) and not T._C._has_torch_function_unary(x)
    assert T._C._is_torch_function_enabled()


def test_recurrent_layers_and_cells_ask_at_their_core(T):
    class Mine(T.Tensor):
        pass

    nn = _nn(T)
    T.manual_seed(0)
    lstm = nn.LSTM(2, 3)
    x = T.ones(4, 1, 2)
    plain_out, (plain_h, _) = lstm(x)
    out, (h, c) = lstm(x.as_subclass(Mine))
    assert [type(t) for t in (out, h, c)] == [Mine] * 3
    np.testing.assert_allclose(out.detach().numpy(), plain_out.detach().numpy())
    assert type(nn.GRUCell(2, 3)(x[0], T.zeros(1, 3).as_subclass(Mine))) is Mine


def test_a_property_reaches_the_protocol_as_its_getter(T):
    calls = []

    class Logging(T.Tensor):
        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            calls.append(func.__name__)
            return super().__torch_function__(func, types, args, kwargs)

    a = T.ones(2, 3).as_subclass(Logging)
    calls.clear()
    transposed, data = a.T, a.data
    assert calls == ["__get__", "__get__"] and type(transposed) is Logging and type(data) is Logging
    assert transposed.shape == (3, 2)
