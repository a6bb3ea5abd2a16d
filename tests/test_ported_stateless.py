"""functional_call (``torch.func.functional_call`` and the deprecated ``torch.nn.utils.stateless`` one), ported
from PyTorch's test/test_stateless.py: swapping parameters and buffers in and putting the module's own back,
gradients to the tensors given, batch norm's running statistics written into the tensor given, circular module
references, parametrized modules (spectral norm's original swapped, put back after an error), some weights only,
``strict``, None and non-tensor values, tied weights, assignment and in-place writes inside ``forward``,
keyword arguments, tuples of dicts, and ``parameters()`` inside ``forward``. (JIT and DataParallel are not
chainrule's.) The tests already in tests/test_nn_utils_more.py (deprecation warning, sorted missing keys) and
tests/test_ported_func_modules.py are not repeated.

Each test runs on chainrule and, where it is installed, on PyTorch (fixture `T`); the expectations are
literals or the module's arithmetic by hand.
"""

import contextlib
import importlib
import re
import warnings

import numpy as np
import pytest

from tests import ported_nn
from tests.ported import close, raises, same, values

nn = ported_nn.nn  # the fixture


@pytest.fixture(params=["func", "stateless"])
def functional_call(request, T, nn):
    """Both of the library's functional_calls (the deprecated one without its FutureWarning)."""
    if request.param == "func":
        return importlib.import_module(T.__name__ + ".func").functional_call

    def call(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return nn.utils.stateless.functional_call(*args, **kwargs)
    return call


def mock_module(T, nn):
    """A Linear(1, 1) plus a buffer of ones, and a float attribute `foo`."""
    class MockModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(1, 1)
            self.register_buffer("buffer", T.ones(1))
            self.foo = 0.0

        def forward(self, x):
            return self.l1(x) + self.buffer
    return MockModule()


def mock_tied_module(T, nn):
    """l1's bias also as `tied_bias`, the buffer also as `tied_buffer`: forward adds each twice."""
    class MockTiedModule(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(1, 1)
            self.tied_bias = self.l1.bias
            self.register_buffer("buffer", T.ones(1))
            self.register_buffer("tied_buffer", self.buffer)

        def forward(self, x):
            return self.l1(x) + self.tied_bias + self.buffer + self.tied_buffer
    return MockTiedModule()


@contextlib.contextmanager
def module_unchanged(T, module):
    """The block leaves `module` with the very same parameter and buffer objects, holding the same values."""
    before = tuple(module.parameters()) + tuple(module.buffers())
    before_values = [values(t).copy() for t in before]
    try:
        yield
    finally:
        after = tuple(module.parameters()) + tuple(module.buffers())
        assert len(after) == len(before)
        assert all(a is b for a, b in zip(after, before))
        for t, v in zip(after, before_values):
            same(t, v)


def x11(T, value=0.75):
    return T.tensor([[value]])


def test_the_tensors_given_make_the_identity_and_the_module_keeps_its_own(T, nn, functional_call):
    module = mock_module(T, nn)
    weight, bias, buffer = T.tensor([[1.0]]), T.tensor([0.0]), T.tensor([0.0])
    own_weight, own_buffer = values(module.l1.weight).copy(), values(module.buffer).copy()
    x = x11(T)
    out = functional_call(module, {"l1.weight": weight, "l1.bias": bias, "buffer": buffer}, x)
    same(out, [[0.75]])
    same(module.l1.weight, own_weight)
    same(module.buffer, [1.0])
    same(module.buffer, own_buffer)


def test_gradients_go_to_the_tensors_given(T, nn, functional_call):
    module = mock_module(T, nn)
    weight = T.tensor([[1.0]], requires_grad=True)
    bias = T.tensor([0.0], requires_grad=True)
    buffer = T.tensor([0.0])
    out = functional_call(module, {"l1.weight": weight, "l1.bias": bias, "buffer": buffer}, x11(T, 0.5))
    out.backward()
    same(weight.grad, [[0.5]])
    same(bias.grad, [1.0])
    assert buffer.grad is None
    assert module.l1.weight.grad is None and module.l1.bias.grad is None and module.buffer.grad is None


def test_batch_norm_updates_the_running_mean_given_not_its_own(T, nn, functional_call):
    module = nn.BatchNorm1d(10)
    module.train()
    x = T.full((20, 10), 128.0)
    running_mean = T.zeros(10)
    functional_call(module, {"running_mean": running_mean}, x)
    same(module.running_mean, np.zeros(10, np.float32))
    close(running_mean, np.full(10, 12.8, np.float32))
    functional_call(module, {}, x)  # nothing given: the module's own buffer is updated
    close(module.running_mean, np.full(10, 12.8, np.float32))


def test_a_module_that_refers_back_to_itself(T, nn, functional_call):
    module = mock_module(T, nn)
    module.l1.m = module  # a circular reference: names through it reach the same tensors
    own_weight = values(module.l1.weight).copy()
    parameters = {"l1.m.l1.weight": T.tensor([[1.0]]), "l1.bias": T.tensor([0.0]), "l1.m.buffer": T.tensor([0.0])}
    out = functional_call(module, parameters, x11(T), tie_weights=False)
    same(out, [[0.75]])
    same(module.l1.weight, own_weight)
    same(module.buffer, [1.0])


def spectral_normed(T, nn):
    module = mock_module(T, nn)
    nn.utils.parametrizations.spectral_norm(module.l1)
    assert "l1.parametrizations.weight.original" in dict(module.named_parameters())
    return module


def test_swapping_a_parametrizations_original_keeps_the_parametrization(T, nn, functional_call):
    module = spectral_normed(T, nn)
    normed = values(module.l1.weight).copy()
    parameters = {"l1.parametrizations.weight.original": nn.Parameter(T.tensor([[1.0]])),
                  "l1.bias": T.tensor([0.0]), "buffer": T.tensor([0.0])}
    # spectral norm of [[1]] is [[1]] itself: the identity
    same(functional_call(module, parameters, x11(T)), [[0.75]])
    assert "l1.parametrizations.weight.original" in dict(module.named_parameters())
    same(module.l1.weight, normed)


def test_a_failing_call_puts_the_parametrizations_original_back(T, nn, functional_call):
    module = spectral_normed(T, nn)
    normed = values(module.l1.weight).copy()
    parameters = {"l1.parametrizations.weight.original": nn.Parameter(T.tensor([[1.0]])),
                  "l1.bias": T.tensor([0.0]), "buffer": T.tensor([0.0])}
    raises(RuntimeError, "shapes cannot be multiplied", functional_call, module, parameters, T.ones(4, 5))
    assert "l1.parametrizations.weight.original" in dict(module.named_parameters())
    same(module.l1.weight, normed)


def test_some_weights_given_and_an_extra_name(T, nn, functional_call):
    module = mock_module(T, nn)
    weight, x = T.tensor([[2.0]]), x11(T)
    expected = [[0.75 * 2.0 + values(module.l1.bias)[0] + 1.0]]
    close(functional_call(module, {"l1.weight": weight}, x), expected)
    close(functional_call(module, {"l1.weight": weight, "extra": T.tensor([1.0])}, x), expected)
    assert not hasattr(module, "extra")


def test_strict_wants_exactly_the_modules_names(T, nn, functional_call):
    module = mock_module(T, nn)
    weight, bias, buffer, extra = T.tensor([[2.0]]), T.tensor([5.0]), T.tensor([3.0]), T.tensor([1.0])
    x = x11(T)
    with module_unchanged(T, module):
        same(functional_call(module, {"l1.weight": weight, "l1.bias": bias, "buffer": buffer}, x, strict=True),
             [[1.5 + 5 + 3]])
    with module_unchanged(T, module):
        raises(RuntimeError, re.escape("Missing key(s): 'buffer', 'l1.bias'."),
               functional_call, module, {"l1.weight": weight}, x, strict=True)
    with module_unchanged(T, module):
        raises(RuntimeError, re.escape("Unexpected key(s): 'extra'."), functional_call, module,
               {"l1.weight": weight, "l1.bias": bias, "buffer": buffer, "extra": extra}, x, strict=True)
    with module_unchanged(T, module):
        raises(RuntimeError, re.escape("Unexpected key(s): 'extra'.") + r"\s+" +
               re.escape("Missing key(s): 'buffer', 'l1.bias'."),
               functional_call, module, {"l1.weight": weight, "extra": extra}, x, strict=True)


def test_none_drops_a_tensor_and_non_tensors_are_refused(T, nn, functional_call):
    class NonTensor:
        def __repr__(self):
            return "<NonTensor>"

    module = mock_module(T, nn)
    weight, buffer, x = T.tensor([[2.0]]), T.tensor([3.0]), x11(T)
    with module_unchanged(T, module):  # no bias at all: Linear adds none
        same(functional_call(module, {"l1.weight": weight, "l1.bias": None, "buffer": buffer}, x), [[1.5 + 3]])
    with module_unchanged(T, module):
        raises(TypeError, re.escape("<NonTensor> is not an instance of torch.Tensor"),
               functional_call, module, {"l1.weight": NonTensor()}, x)
    with module_unchanged(T, module):
        raises(TypeError, re.escape("attribute `foo`: 0.0 is not an instance of torch.Tensor"),
               functional_call, module, {"l1.weight": weight, "foo": T.tensor([1.0])}, x)
    assert module.foo == 0.0
    with module_unchanged(T, module):
        raises(AttributeError, re.escape("MockModule has no attribute `l2`"),
               functional_call, module, {"l1.weight": weight, "l2.bias": T.tensor([5.0])}, x)


def test_tied_weights_take_the_value_given_for_either_name(T, nn, functional_call):
    module = mock_tied_module(T, nn)
    weight, bias, buffer, x = T.tensor([[2.0]]), T.tensor([5.0]), T.tensor([3.0]), x11(T)
    parameters = {"l1.weight": weight, "l1.bias": bias, "buffer": buffer}
    same(functional_call(module, parameters, x, tie_weights=True), [[1.5 + 5 + 5 + 3 + 3]])
    same(functional_call(module, {**parameters, "extra": T.tensor([1.0])}, x, tie_weights=True),
         [[1.5 + 5 + 5 + 3 + 3]])
    # bias not given: the module's own, under both its names
    own_bias = values(module.l1.bias)
    close(functional_call(module, {"l1.weight": weight, "buffer": buffer}, x, tie_weights=True),
          [[1.5 + 2 * own_bias[0] + 3 + 3]])


def test_tied_weights_given_two_values_raise_and_one_tensor_twice_does_not(T, nn, functional_call):
    module = mock_tied_module(T, nn)
    bias, buffer, x = T.tensor([0.0]), T.tensor([0.0]), x11(T)
    parameters = {"l1.weight": T.tensor([[1.0]]), "l1.bias": bias, "buffer": buffer}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same(functional_call(module, parameters, x, tie_weights=True), [[0.75]])
        same(functional_call(module, {**parameters, "tied_bias": bias, "tied_buffer": buffer}, x, tie_weights=True),
             [[0.75]])
    raises(ValueError, re.escape("functional_call got multiple values for keys ['l1.bias', 'tied_bias']"),
           functional_call, module, {**parameters, "tied_bias": T.tensor([5.0])}, x, tie_weights=True)
    raises(ValueError, re.escape("functional_call got multiple values for keys ['buffer', 'tied_buffer']"),
           functional_call, module, {**parameters, "tied_buffer": T.tensor([5.0])}, x, tie_weights=True)


def test_untied_names_take_their_own_values_without_a_warning(T, nn):
    module = mock_tied_module(T, nn)
    parameters = {"l1.weight": T.tensor([[1.0]]), "l1.bias": T.tensor([0.0]), "buffer": T.tensor([0.0])}
    x = x11(T)
    own_bias = values(module.l1.bias)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # tied_bias and tied_buffer keep the module's own values
        close(nn.utils.stateless._functional_call(module, parameters, x, tie_weights=False), [[0.75 + own_bias[0] + 1]])
        close(nn.utils.stateless._functional_call(module, {**parameters, "tied_bias": T.tensor([5.0])}, x,
                                                  tie_weights=False), [[0.75 + 5 + 1]])
        close(nn.utils.stateless._functional_call(module, {**parameters, "tied_buffer": T.tensor([5.0])}, x,
                                                  tie_weights=False), [[0.75 + own_bias[0] + 5]])


def test_strict_with_tied_weights(T, nn, functional_call):
    module = mock_tied_module(T, nn)
    weight, bias, buffer, extra = T.tensor([[2.0]]), T.tensor([5.0]), T.tensor([3.0]), T.tensor([1.0])
    x = x11(T)
    every = {"l1.weight": weight, "l1.bias": bias, "buffer": buffer}
    some = {"l1.weight": weight, "buffer": buffer}
    with module_unchanged(T, module):
        same(functional_call(module, every, x, tie_weights=True, strict=True), [[1.5 + 5 + 5 + 3 + 3]])
    cases = [(every, False, "Missing key(s): 'tied_bias', 'tied_buffer'."),
             (some, True, "Missing key(s): 'l1.bias', 'tied_bias'."),
             ({**every, "extra": extra}, True, "Unexpected key(s): 'extra'."),
             ({**every, "extra": extra}, False, "Unexpected key(s): 'extra'.\n\tMissing key(s): 'tied_bias', "
                                                "'tied_buffer'."),
             ({**some, "extra": extra}, True, "Unexpected key(s): 'extra'.\n\tMissing key(s): 'l1.bias', "
                                              "'tied_bias'.")]
    for parameters, tie, message in cases:
        with module_unchanged(T, module):
            raises(RuntimeError, re.escape(message), functional_call, module, parameters, x, tie_weights=tie,
                   strict=True)


def adds_one_to_its_buffer(T, nn, in_place):
    class Foo(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("foo", T.tensor([0.0]))

        def forward(self, x):
            if in_place:
                self.foo.add_(1)
            else:
                self.foo = self.foo + 1
            return x + self.foo
    return Foo()


def test_an_assignment_inside_forward_lands_in_the_dict_given(T, nn, functional_call):
    foo = T.tensor([2.0])
    given = {"foo": foo}
    module = adds_one_to_its_buffer(T, nn, in_place=False)
    same(functional_call(module, given, T.tensor([0.5])), [3.5])
    same(module.foo, [0.0])
    same(given["foo"], [3.0])  # the dict now holds the new tensor; the one given is untouched
    same(foo, [2.0])
    assert given["foo"] is not foo


def test_an_in_place_write_inside_forward_writes_the_tensor_given(T, nn, functional_call):
    foo = T.tensor([2.0])
    given = {"foo": foo}
    module = adds_one_to_its_buffer(T, nn, in_place=True)
    same(functional_call(module, given, T.tensor([0.5])), [3.5])
    same(module.foo, [0.0])
    same(foo, [3.0])
    assert given["foo"] is foo


def test_a_new_attribute_lives_only_during_the_call(T, nn, functional_call):
    class Bar(nn.Module):
        def forward(self, x):
            return x + self.extra

    module = Bar()
    assert not hasattr(module, "extra")
    same(functional_call(module, {"extra": T.zeros(())}, T.ones(())), 1.0)
    assert not hasattr(module, "extra")
    raises(RuntimeError, re.escape("Unexpected key(s): 'extra'."), functional_call, module,
           {"extra": T.zeros(())}, T.ones(()), strict=True)
    assert not hasattr(module, "extra")
    for strict in (False, True):
        raises(AttributeError, re.escape("'Bar' object has no attribute 'extra'"), functional_call, module, {},
               T.ones(()), strict=strict)
        assert not hasattr(module, "extra")


def test_keyword_arguments(T, nn, functional_call):
    class Foo(nn.Module):
        def __init__(self, x):
            super().__init__()
            self.x = x

        def forward(self, inp, *, other_inp):
            return inp * self.x + other_inp

    rng = np.random.default_rng(0)
    module = Foo(T.tensor(rng.standard_normal((2, 3)).astype(np.float32)))
    inp, other = (T.tensor(rng.standard_normal((2, 3)).astype(np.float32)) for _ in range(2))
    given = {"x": T.zeros(2, 3)}
    raises(TypeError, "missing 1 required keyword-only argument: 'other_inp'", functional_call, module, given, inp)
    same(functional_call(module, given, inp, {"other_inp": other}), values(other))
    same(functional_call(module, given, (), {"inp": inp, "other_inp": other}), values(other))
    same(functional_call(module, given, kwargs={"inp": inp, "other_inp": other}), values(other))


def test_a_tuple_of_dicts(T, nn):
    func = importlib.import_module(T.__name__ + ".func")
    module = mock_module(T, nn)
    x = x11(T)
    parameters = {k: T.ones_like(v) for k, v in module.named_parameters()}
    buffers = {k: T.zeros_like(v) for k, v in module.named_buffers()}
    same(func.functional_call(module, (parameters, buffers), x), [[1.75]])
    same(func.functional_call(module, (), x), values(module(x)))
    three = ({"l1.weight": T.ones(1, 1)}, {"l1.bias": T.ones(1)}, {"buffer": T.zeros(1)})
    same(func.functional_call(module, three, x), [[1.75]])
    repeated = ({"l1.weight": T.zeros(1, 1), "l1.bias": T.zeros(1, 1)}, {"l1.weight": T.ones(1, 1)})
    raises(ValueError, re.escape("['l1.weight'] appeared in multiple dictionaries"), func.functional_call, module,
           repeated, x)


def test_parameters_and_buffers_inside_forward_are_the_tensors_given(T, nn, functional_call):
    class Module(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1 = nn.Linear(1, 1)
            self.register_buffer("buffer", T.ones(1))

        def forward(self, x):
            return self.l1(x) + self.buffer, tuple(self.parameters()), tuple(self.buffers())

    module = Module()
    weight, bias, buffer = T.tensor([[2.0]]), T.tensor([5.0]), T.tensor([3.0])
    extra, extra_p = T.tensor([1.0]), nn.Parameter(T.tensor([1.0]))
    own_bias, own_buffer = module.l1.bias, module.buffer
    x = x11(T)

    def check(given, expected_out, expected_parameters, expected_buffers):
        out, parameters, buffers = functional_call(module, given, x)
        close(out, expected_out)
        assert len(parameters) == len(expected_parameters) and len(buffers) == len(expected_buffers)
        assert all(a is b for a, b in zip(parameters, expected_parameters))
        assert all(a is b for a, b in zip(buffers, expected_buffers))

    check({"l1.weight": weight, "l1.bias": bias, "buffer": buffer}, [[1.5 + 5 + 3]], (weight, bias), (buffer,))
    check({"l1.weight": weight}, [[1.5 + values(own_bias)[0] + 1]], (weight, own_bias), (own_buffer,))
    # a plain tensor at a new name is an attribute; a Parameter at a new name is a parameter while the call lasts
    check({"l1.weight": weight, "l1.bias": bias, "buffer": buffer, "l1.extra": extra}, [[9.5]], (weight, bias),
          (buffer,))
    check({"l1.weight": weight, "l1.bias": bias, "buffer": buffer, "l1.extra": extra_p}, [[9.5]],
          (weight, bias, extra_p), (buffer,))
    check({"l1.weight": weight, "l1.extra": extra}, [[1.5 + values(own_bias)[0] + 1]], (weight, own_bias),
          (own_buffer,))
    check({"l1.weight": weight, "l1.extra": extra_p}, [[1.5 + values(own_bias)[0] + 1]],
          (weight, own_bias, extra_p), (own_buffer,))
    check({"l1.weight": weight, "l1.bias": None}, [[1.5 + 1]], (weight,), (own_buffer,))
    assert not hasattr(module.l1, "extra") and module.l1.bias is own_bias
